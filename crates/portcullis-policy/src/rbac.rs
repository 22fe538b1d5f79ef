//! Authorization: what an authenticated caller may do on a route.
//!
//! Deny by default. Decision rules, checked in this order, the first that
//! fails deciding (each its own reason code, all 403):
//! 1. `roles`: the caller has at least one of them (`authz.role`).
//! 2. `permissions`: the caller's roles grant every one of them
//!    (`authz.permission`). A role grants its own permissions and those of
//!    every role it inherits, transitively; `*` grants everything and
//!    `orders:*` every permission starting with `orders:`.
//! 3. `scopes`: the credential carries every one of them (`authz.scope`).
//! 4. `subjects`: the caller's subject is one of them (`authz.subject`) —
//!    typically client-certificate subjects for service-to-service routes.
//! 5. `owner`: the path parameter it names equals the caller's subject
//!    (`authz.owner`), e.g. `/users/{id}/**` with `owner = "id"`: broken
//!    object-level authorization is the most common API flaw.
//!
//! A route with no requirement admits every authenticated caller. Roles that
//! the caller holds but the configuration does not define grant no
//! permissions (they still satisfy `roles`).

use std::collections::{HashMap, HashSet};

use crate::deny::{Denied, Reason};
use crate::principal::Principal;

/// Roles compiled to their effective permissions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Roles {
    permissions: HashMap<String, Vec<String>>,
}

/// Why a role table cannot be compiled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RolesError {
    /// A role inherits a role that is not defined.
    #[error("role {role:?} inherits undefined role {missing:?}")]
    UnknownParent {
        /// The inheriting role.
        role: String,
        /// The missing one.
        missing: String,
    },
    /// Inheritance loops back.
    #[error("role inheritance cycle: {0}")]
    Cycle(String),
}

/// A role as configured.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoleDef {
    /// Its own permissions.
    pub permissions: Vec<String>,
    /// Roles whose permissions it also has.
    pub inherits: Vec<String>,
}

impl Roles {
    /// Compiles role definitions, resolving inheritance.
    ///
    /// # Errors
    /// [`RolesError`] for undefined parents and cycles.
    pub fn compile(defs: &HashMap<String, RoleDef>) -> Result<Self, RolesError> {
        let mut permissions = HashMap::new();
        for role in defs.keys() {
            let mut seen: Vec<String> = Vec::new();
            let mut granted: Vec<String> = Vec::new();
            collect(defs, role, &mut seen, &mut granted)?;
            permissions.insert(role.clone(), granted);
        }
        Ok(Self { permissions })
    }

    /// The permissions `role` grants (empty for an undefined role).
    #[must_use]
    pub fn permissions(&self, role: &str) -> &[String] {
        self.permissions.get(role).map_or(&[], Vec::as_slice)
    }

    /// Whether any of `roles` grants `permission`.
    #[must_use]
    pub fn grants(&self, roles: &[String], permission: &str) -> bool {
        roles.iter().flat_map(|r| self.permissions(r)).any(|granted| covers(granted, permission))
    }

    /// The defined roles, in no particular order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.permissions.keys().map(String::as_str)
    }

    /// Whether the role is defined.
    #[must_use]
    pub fn is_defined(&self, role: &str) -> bool {
        self.permissions.contains_key(role)
    }
}

fn collect(
    defs: &HashMap<String, RoleDef>,
    role: &str,
    path: &mut Vec<String>,
    out: &mut Vec<String>,
) -> Result<(), RolesError> {
    if path.iter().any(|r| r == role) {
        path.push(role.to_owned());
        return Err(RolesError::Cycle(path.join(" → ")));
    }
    let Some(def) = defs.get(role) else {
        return Err(RolesError::UnknownParent { role: path.last().cloned().unwrap_or_default(), missing: role.into() });
    };
    path.push(role.to_owned());
    for permission in &def.permissions {
        if !out.contains(permission) {
            out.push(permission.clone());
        }
    }
    for parent in &def.inherits {
        collect(defs, parent, path, out)?;
    }
    path.pop();
    Ok(())
}

/// Whether a granted permission covers a required one: equal, `*`, or a
/// `prefix:*` wildcard.
#[must_use]
pub fn covers(granted: &str, required: &str) -> bool {
    granted == "*"
        || granted == required
        || granted.strip_suffix('*').is_some_and(|prefix| prefix.ends_with(':') && required.starts_with(prefix))
}

/// What a route requires of an authenticated caller.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Requirement {
    /// Any of these roles.
    pub roles: Vec<String>,
    /// All of these permissions.
    pub permissions: Vec<String>,
    /// All of these scopes.
    pub scopes: Vec<String>,
    /// The subject is one of these.
    pub subjects: Vec<String>,
    /// This path parameter must equal the subject.
    pub owner: Option<String>,
}

impl Requirement {
    /// Whether anything is required beyond authentication.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.roles.is_empty()
            && self.permissions.is_empty()
            && self.scopes.is_empty()
            && self.subjects.is_empty()
            && self.owner.is_none()
    }
}

/// Decides whether `principal` meets `requirement`; `param` looks up a path
/// parameter of the matched route in the request's (normalized) path.
///
/// # Errors
/// The [`Denied`] of the first rule that fails (see the module docs), with
/// a detail naming what was missing (never a credential).
pub fn authorize<'p>(
    principal: &Principal,
    requirement: &Requirement,
    roles: &Roles,
    param: impl Fn(&str) -> Option<&'p str>,
) -> Result<(), Denied> {
    if !requirement.roles.is_empty() && !requirement.roles.iter().any(|r| principal.has_role(r)) {
        return Err(Denied::new(Reason::AuthzRole).with_detail(format!(
            "needs one of roles [{}]; has [{}]",
            requirement.roles.join(", "),
            principal.roles.join(", ")
        )));
    }
    if let Some(missing) = requirement.permissions.iter().find(|p| !roles.grants(&principal.roles, p)) {
        return Err(Denied::new(Reason::AuthzPermission).with_detail(format!("missing permission {missing}")));
    }
    let scopes: HashSet<&str> = principal.scopes.iter().map(String::as_str).collect();
    if let Some(missing) = requirement.scopes.iter().find(|s| !scopes.contains(s.as_str())) {
        return Err(Denied::new(Reason::AuthzScope).with_detail(format!("missing scope {missing}")));
    }
    if !requirement.subjects.is_empty() && !requirement.subjects.contains(&principal.subject) {
        return Err(Denied::new(Reason::AuthzSubject).with_detail("subject not listed for this route"));
    }
    if let Some(name) = &requirement.owner {
        // Percent-escapes in the segment are compared as sent: a subject is
        // matched only by its exact normalized spelling.
        if param(name) != Some(principal.subject.as_str()) {
            return Err(Denied::new(Reason::AuthzOwner).with_detail(format!("{{{name}}} is not the caller's subject")));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::principal::AuthMethod;

    fn roles() -> Roles {
        let defs: HashMap<String, RoleDef> = [
            ("viewer", vec!["orders:read"], vec![]),
            ("editor", vec!["orders:write"], vec!["viewer"]),
            ("auditor", vec!["audit:*"], vec![]),
            ("admin", vec!["*"], vec![]),
        ]
        .into_iter()
        .map(|(name, perms, inherits)| {
            (
                name.to_owned(),
                RoleDef {
                    permissions: perms.into_iter().map(str::to_owned).collect(),
                    inherits: inherits.into_iter().map(str::to_owned).collect(),
                },
            )
        })
        .collect();
        Roles::compile(&defs).unwrap()
    }

    fn caller(subject: &str, roles: &[&str], scopes: &[&str]) -> Principal {
        let mut p = Principal::new(subject, AuthMethod::Jwt, b"t");
        p.roles = roles.iter().map(|r| (*r).to_owned()).collect();
        p.scopes = scopes.iter().map(|r| (*r).to_owned()).collect();
        p
    }

    fn req(roles: &[&str], permissions: &[&str], scopes: &[&str], owner: Option<&str>) -> Requirement {
        Requirement {
            roles: roles.iter().map(|r| (*r).to_owned()).collect(),
            permissions: permissions.iter().map(|r| (*r).to_owned()).collect(),
            scopes: scopes.iter().map(|r| (*r).to_owned()).collect(),
            subjects: Vec::new(),
            owner: owner.map(str::to_owned),
        }
    }

    #[test]
    fn decision_table() {
        let r = roles();
        let no_params = |_: &str| None;
        let cases: Vec<(&str, Principal, Requirement, Result<(), Reason>)> = vec![
            ("nothing required", caller("a", &[], &[]), Requirement::default(), Ok(())),
            ("any of roles", caller("a", &["viewer"], &[]), req(&["editor", "viewer"], &[], &[], None), Ok(())),
            ("no listed role", caller("a", &["viewer"], &[]), req(&["editor"], &[], &[], None), Err(Reason::AuthzRole)),
            ("own permission", caller("a", &["viewer"], &[]), req(&[], &["orders:read"], &[], None), Ok(())),
            (
                "inherited permission",
                caller("a", &["editor"], &[]),
                req(&[], &["orders:read", "orders:write"], &[], None),
                Ok(()),
            ),
            (
                "not inherited upward",
                caller("a", &["viewer"], &[]),
                req(&[], &["orders:write"], &[], None),
                Err(Reason::AuthzPermission),
            ),
            (
                "all of permissions",
                caller("a", &["viewer", "auditor"], &[]),
                req(&[], &["orders:read", "audit:log"], &[], None),
                Ok(()),
            ),
            ("prefix wildcard", caller("a", &["auditor"], &[]), req(&[], &["audit:export"], &[], None), Ok(())),
            (
                "prefix is not a substring",
                caller("a", &["auditor"], &[]),
                req(&[], &["auditing:x"], &[], None),
                Err(Reason::AuthzPermission),
            ),
            ("star", caller("a", &["admin"], &[]), req(&[], &["anything:at:all"], &[], None), Ok(())),
            (
                "undefined role grants nothing",
                caller("a", &["ghost"], &[]),
                req(&[], &["orders:read"], &[], None),
                Err(Reason::AuthzPermission),
            ),
            ("scopes", caller("a", &[], &["orders:read"]), req(&[], &[], &["orders:read"], None), Ok(())),
            (
                "missing scope",
                caller("a", &[], &["orders:read"]),
                req(&[], &[], &["orders:write"], None),
                Err(Reason::AuthzScope),
            ),
        ];
        for (name, principal, requirement, expected) in cases {
            let got = authorize(&principal, &requirement, &r, no_params).map_err(|d| d.reason);
            assert_eq!(got, expected, "{name}");
        }
    }

    #[test]
    fn owner_rules_compare_the_path_parameter_with_the_subject() {
        let pattern = crate::route::PathPattern::parse("/users/{id}/**").unwrap();
        let r = roles();
        let owner = req(&[], &[], &[], Some("id"));
        let check = |subject: &str, path: &str| {
            let param =
                |name: &str| pattern.matches(&path.to_ascii_lowercase()).then(|| pattern.param(path, name)).flatten();
            authorize(&caller(subject, &[], &[]), &owner, &r, param).map_err(|d| d.reason)
        };
        assert_eq!(check("alice", "/users/alice/orders"), Ok(()));
        assert_eq!(check("Alice", "/USERS/Alice/orders"), Ok(()), "the value keeps its case");
        assert_eq!(check("alice", "/users/Alice/orders"), Err(Reason::AuthzOwner), "subjects are case-sensitive");
        assert_eq!(check("alice", "/users/bob/orders"), Err(Reason::AuthzOwner));
        assert_eq!(check("alice", "/users/alicex/orders"), Err(Reason::AuthzOwner));
        assert_eq!(check("alice", "/other/alice"), Err(Reason::AuthzOwner));
    }

    #[test]
    fn subjects_and_role_table_errors() {
        let only_svc = Requirement { subjects: vec!["svc-a".into()], ..Requirement::default() };
        assert!(authorize(&caller("svc-a", &[], &[]), &only_svc, &roles(), |_| None).is_ok());
        assert_eq!(
            authorize(&caller("svc-b", &[], &[]), &only_svc, &roles(), |_| None).unwrap_err().reason,
            Reason::AuthzSubject
        );

        let cyc: HashMap<String, RoleDef> = [
            ("a".to_owned(), RoleDef { permissions: vec![], inherits: vec!["b".into()] }),
            ("b".to_owned(), RoleDef { permissions: vec![], inherits: vec!["a".into()] }),
        ]
        .into();
        assert!(matches!(Roles::compile(&cyc), Err(RolesError::Cycle(_))));
        let missing: HashMap<String, RoleDef> =
            [("a".to_owned(), RoleDef { permissions: vec![], inherits: vec!["nope".into()] })].into();
        assert_eq!(
            Roles::compile(&missing),
            Err(RolesError::UnknownParent { role: "a".into(), missing: "nope".into() })
        );
    }
}
