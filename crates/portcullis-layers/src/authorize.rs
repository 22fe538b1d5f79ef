//! Authorization on live requests: the route's IP lists, then its
//! requirement of the authenticated caller (rules in
//! `portcullis_policy::rbac` and `portcullis_policy::ip_rules`).
//!
//! Runs after authentication, so an unauthenticated request on a protected
//! route has already been answered 401; everything refused here is 403 and
//! its event names the route (`rule`) that decided. The global IP lists run
//! earlier, in [`GlobalIpRules`], before anything else looks at the request.
//!
//! Both only decide, so both are [`Guard`]s.

use std::sync::Arc;

use http::Request;
use portcullis_policy::rbac::{self, Roles};
use portcullis_policy::{Denied, Reason};

use crate::caller::Caller;
use crate::guard::Guard;
use crate::{Body, RequestContext, RouteInfo};

/// The route's IP lists and requirement, with the compiled roles. See the
/// module docs.
#[derive(Debug, Clone)]
pub struct Authorize(pub Arc<Roles>);

impl Guard for Authorize {
    fn check(&self, req: &mut Request<Body>) -> Result<(), Denied> {
        decide(req, &self.0)
    }
}

fn decide(req: &Request<Body>, roles: &Roles) -> Result<(), Denied> {
    let Some(route) = req.extensions().get::<Arc<RouteInfo>>() else {
        return Err(Denied::new(Reason::GatewayInternal).with_detail("authorization reached without a route"));
    };
    let rule = |denied: Denied| denied.with_rule(route.name.to_string());
    if let Some(ips) = &route.ips
        && let Some(ctx) = req.extensions().get::<RequestContext>()
    {
        ips.check(ctx.client.ip).map_err(rule)?;
    }
    let Some(requirement) = &route.require else { return Ok(()) };
    let Some(Caller(principal)) = req.extensions().get::<Caller>() else {
        // Configuration refuses requirements on public routes; if one got
        // here anyway, nobody is authorized.
        return Err(rule(Denied::new(Reason::AuthMissing)));
    };
    let path = req.uri().path();
    let param = |name: &str| route.pattern.as_ref().and_then(|p| p.param(path, name));
    rbac::authorize(principal, requirement, roles, param).map_err(rule)
}

/// The global IP lists (`[access]`; none: everyone passes), checked before
/// path normalization and routing.
#[derive(Debug, Clone)]
pub struct GlobalIpRules(pub Option<Arc<portcullis_policy::ip_rules::IpRules>>);

impl Guard for GlobalIpRules {
    fn check(&self, req: &mut Request<Body>) -> Result<(), Denied> {
        if let (Some(rules), Some(ctx)) = (&self.0, req.extensions().get::<RequestContext>()) {
            rules.check(ctx.client.ip).map_err(|denied| denied.with_rule("[access]"))?;
        }
        Ok(())
    }
}
