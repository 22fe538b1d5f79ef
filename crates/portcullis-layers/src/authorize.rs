//! Authorization on live requests: the route's IP lists, then its
//! requirement of the authenticated caller (rules in
//! `portcullis_policy::rbac` and `portcullis_policy::ip_rules`).
//!
//! Runs after authentication, so an unauthenticated request on a protected
//! route has already been answered 401; everything refused here is 403 and
//! its event names the route (`rule`) that decided. The global IP lists run
//! earlier, in [`IpRulesLayer`], before anything else looks at the request.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use portcullis_policy::ip_rules::IpRules;
use portcullis_policy::rbac::{self, Roles};
use portcullis_policy::{Denied, Reason};
use tower::{Layer, Service};

use crate::caller::Caller;
use crate::refusal::deny;
use crate::{Body, RequestContext, RouteInfo};

/// See the module docs.
#[derive(Debug, Clone)]
pub struct AuthorizeLayer {
    roles: Arc<Roles>,
}

impl AuthorizeLayer {
    /// Authorizes with the compiled `roles`.
    #[must_use]
    pub const fn new(roles: Arc<Roles>) -> Self {
        Self { roles }
    }
}

impl<S> Layer<S> for AuthorizeLayer {
    type Service = Authorize<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Authorize { inner, roles: self.roles.clone() }
    }
}

/// See the module docs.
#[derive(Debug, Clone)]
pub struct Authorize<S> {
    inner: S,
    roles: Arc<Roles>,
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

impl<S> Service<Request<Body>> for Authorize<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = crate::GatewayFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        if let Err(denied) = decide(&req, &self.roles) {
            return Box::pin(async move { Ok(deny(denied)) });
        }
        crate::call_boxed(&mut self.inner, req)
    }
}

/// The global IP lists, checked before path normalization and routing.
#[derive(Debug, Clone)]
pub struct IpRulesLayer {
    rules: Option<Arc<IpRules>>,
}

impl IpRulesLayer {
    /// Checks every request against `rules` (nothing when `None`).
    #[must_use]
    pub const fn new(rules: Option<Arc<IpRules>>) -> Self {
        Self { rules }
    }
}

impl<S> Layer<S> for IpRulesLayer {
    type Service = IpCheck<S>;
    fn layer(&self, inner: S) -> Self::Service {
        IpCheck { inner, rules: self.rules.clone() }
    }
}

/// See [`IpRulesLayer`].
#[derive(Debug, Clone)]
pub struct IpCheck<S> {
    inner: S,
    rules: Option<Arc<IpRules>>,
}

impl<S> Service<Request<Body>> for IpCheck<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = crate::GatewayFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        if let (Some(rules), Some(ctx)) = (&self.rules, req.extensions().get::<RequestContext>())
            && let Err(denied) = rules.check(ctx.client.ip)
        {
            return Box::pin(async move { Ok(deny(denied.with_rule("[access]"))) });
        }
        crate::call_boxed(&mut self.inner, req)
    }
}
