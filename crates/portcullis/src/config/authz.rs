//! `[roles]`, `[access]` and the routes' `require`, `allow_ips`, `deny_ips`.

use std::collections::HashMap;

use ipnet::IpNet;
use portcullis_policy::ip_rules::IpRules;
use portcullis_policy::principal::is_valid_name;
use portcullis_policy::rbac::{Requirement, RoleDef, Roles};
use portcullis_policy::route::PathPattern;
use toml::Spanned;

use super::error::Collector;
use super::raw::{RawConfig, RawRequire, RawRoute};

pub(super) fn build_roles(c: &mut Collector<'_>, raw: &RawConfig) -> Roles {
    let mut defs = HashMap::new();
    for (name, role) in &raw.roles {
        if !is_valid_name(name) {
            c.error(role.span(), format!("invalid role name {name:?}")).expected("letters, digits and . _ : / -");
        }
        for permission in &role.get_ref().permissions {
            let valid = permission == "*" || is_valid_name(permission.trim_end_matches('*'));
            if !valid || (permission.ends_with('*') && permission != "*" && !permission.ends_with(":*")) {
                c.error(role.span(), format!("invalid permission {permission:?} in role {name:?}"))
                    .expected("\"orders:read\", \"orders:*\" or \"*\"");
            }
        }
        defs.insert(
            name.clone(),
            RoleDef { permissions: role.get_ref().permissions.clone(), inherits: role.get_ref().inherits.clone() },
        );
    }
    match Roles::compile(&defs) {
        Ok(roles) => roles,
        Err(e) => {
            let span = raw.roles.values().next().map_or(0..0, Spanned::span);
            c.error(span, format!("[roles]: {e}")).help("every inherited role must be defined, without cycles");
            Roles::default()
        }
    }
}

fn nets(c: &mut Collector<'_>, list: Option<&Vec<Spanned<String>>>) -> Vec<IpNet> {
    super::values::ip_nets(c, list, "address")
}

fn ip_rules(
    c: &mut Collector<'_>,
    allow: Option<&Vec<Spanned<String>>>,
    deny: Option<&Vec<Spanned<String>>>,
) -> Option<IpRules> {
    let rules = IpRules { allow: nets(c, allow), deny: nets(c, deny) };
    if let Some(list) = allow
        && list.is_empty()
    {
        c.error(0..0, "an empty allow_ips would refuse everyone").help("omit allow_ips to allow any address");
    }
    (!rules.is_empty()).then_some(rules)
}

pub(super) fn build_access(c: &mut Collector<'_>, raw: &RawConfig) -> Option<IpRules> {
    let access = raw.access.as_ref()?;
    ip_rules(c, access.get_ref().allow_ips.as_ref(), access.get_ref().deny_ips.as_ref())
}

/// A route's IP lists.
pub(super) fn route_ips(c: &mut Collector<'_>, raw: &RawRoute) -> Option<IpRules> {
    ip_rules(c, raw.allow_ips.as_ref(), raw.deny_ips.as_ref())
}

/// A route's `require`, checked against its pattern, its authentication and
/// the defined roles.
pub(super) fn route_require(
    c: &mut Collector<'_>,
    raw: Option<&Spanned<RawRequire>>,
    route_name: &str,
    pattern: Option<&PathPattern>,
    public: bool,
    roles: &Roles,
) -> Option<Requirement> {
    let spanned = raw?;
    let r = spanned.get_ref();
    let requirement = Requirement {
        roles: r.roles.clone().unwrap_or_default(),
        permissions: r.permissions.clone().unwrap_or_default(),
        scopes: r.scopes.clone().unwrap_or_default(),
        subjects: r.subjects.clone().unwrap_or_default(),
        owner: r.owner.as_ref().map(|o| o.get_ref().clone()),
    };
    if public {
        c.error(spanned.span(), format!("route {route_name:?} is public but has `require`"))
            .help("requirements apply to authenticated callers: set auth to the methods callers use, or drop require");
        return None;
    }
    if requirement.is_empty() {
        c.error(spanned.span(), "require is empty").help("omit it to admit every authenticated caller");
    }
    for role in &requirement.roles {
        if !roles.is_defined(role) && !is_valid_name(role) {
            c.error(spanned.span(), format!("invalid role name {role:?}"));
        }
    }
    for permission in &requirement.permissions {
        if permission.contains('*') {
            c.error(spanned.span(), format!("required permission {permission:?} has a wildcard"))
                .help("wildcards grant permissions in [roles]; a route requires concrete ones");
        }
    }
    if let (Some(owner), Some(pattern)) = (&r.owner, pattern)
        && !pattern.has_param(owner.get_ref())
    {
        c.error(owner.span(), format!("owner names {{{}}}, which the route's path does not have", owner.get_ref()))
            .expected(format!("a parameter of {:?}", pattern.as_str()));
    }
    Some(requirement)
}
