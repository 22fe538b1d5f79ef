//! Roles from ID token claims: configured claim paths, then the role map.
//!
//! Decision rules:
//! - A path is dotted (`realm_access.roles`) and walks JSON objects; a key
//!   that itself contains dots (`https://example.com/roles`) is tried whole
//!   first.
//! - An array contributes its strings; a string is split on whitespace (and
//!   commas), as `scope`-style claims are; anything else contributes nothing.
//! - Every path is read, in order; each role is mapped through the role map
//!   (roles not in the map pass through) and duplicates are dropped.
//! - Values that are not valid role names (`A–Z a–z 0–9 . _ : / -`) are
//!   dropped, so no claim can smuggle a separator into `X-Portcullis-Roles`.
//!
//! The rules are `portcullis_policy::jwt::ClaimMapping`'s, shared with
//! bearer JWTs.

use std::collections::BTreeMap;

use portcullis_policy::jwt::ClaimMapping;
use serde_json::{Map, Value};

/// The caller's roles. See the module docs.
#[must_use]
pub fn roles(claims: &Map<String, Value>, paths: &[String], map: &BTreeMap<String, String>) -> Vec<String> {
    let mapping = ClaimMapping {
        roles: paths.to_vec(),
        scope: String::new(),
        rename: map.iter().map(|(from, to)| (from.clone(), to.clone())).collect(),
    };
    mapping.roles(claims)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn claim_shapes() {
        let claims = json!({
            "roles": ["editor", "viewer", "editor"],
            "realm_access": {"roles": ["app-admin"]},
            "scope_roles": "a b,c",
            "https://example.com/roles": ["dotted-key"],
            "number": 7,
            "sneaky": ["viewer,admin", "ok", "with space", ""],
        });
        let claims = claims.as_object().unwrap();
        let map: BTreeMap<String, String> = [("app-admin".to_owned(), "admin".to_owned())].into();
        let cases: &[(&[&str], &[&str])] = &[
            (&["roles"], &["editor", "viewer"]),
            (&["realm_access.roles"], &["admin"]),
            (&["scope_roles"], &["a", "b", "c"]),
            (&["https://example.com/roles"], &["dotted-key"]),
            (&["missing", "realm_access.missing", "number", "roles.nested"], &[]),
            (&["roles", "realm_access.roles"], &["editor", "viewer", "admin"]),
            (&["sneaky"], &["ok"]),
        ];
        for (paths, expected) in cases {
            let paths: Vec<String> = paths.iter().map(|p| (*p).to_owned()).collect();
            assert_eq!(roles(claims, &paths, &map), *expected, "{paths:?}");
        }
    }
}
