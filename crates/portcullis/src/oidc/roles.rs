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

use std::collections::BTreeMap;

use serde_json::{Map, Value};

/// The caller's roles. See the module docs.
#[must_use]
pub fn roles(claims: &Map<String, Value>, paths: &[String], map: &BTreeMap<String, String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for path in paths {
        let Some(value) = lookup(claims, path) else { continue };
        let found: Vec<&str> = match value {
            Value::Array(items) => items.iter().filter_map(Value::as_str).collect(),
            Value::String(text) => text.split(|c: char| c.is_whitespace() || c == ',').collect(),
            _ => Vec::new(),
        };
        for role in found.into_iter().map(str::trim).filter(|r| !r.is_empty()) {
            let mapped = map.get(role).map_or(role, String::as_str);
            if !out.iter().any(|r| r == mapped) {
                out.push(mapped.to_owned());
            }
        }
    }
    out
}

fn lookup<'a>(claims: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    if let Some(value) = claims.get(path) {
        return Some(value);
    }
    let mut segments = path.split('.');
    let mut current = claims.get(segments.next()?)?;
    for segment in segments {
        current = current.as_object()?.get(segment)?;
    }
    Some(current)
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
        ];
        for (paths, expected) in cases {
            let paths: Vec<String> = paths.iter().map(|p| (*p).to_owned()).collect();
            assert_eq!(roles(claims, &paths, &map), *expected, "{paths:?}");
        }
    }
}
