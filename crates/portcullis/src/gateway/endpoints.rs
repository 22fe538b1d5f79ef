//! The gateway's own endpoints, every one of them: what answers under
//! `/.portcullis/` instead of an upstream.
//!
//! | path | methods | present when | answers |
//! |---|---|---|---|
//! | `/.portcullis/login` | GET | `[auth.oidc]` | starts the login at the provider |
//! | `/.portcullis/callback` | GET | `[auth.oidc]` | the provider's redirect: sets the session |
//! | `/.portcullis/logout` | GET, POST | `[auth.oidc]` | a logout button; the POST ends the session |
//! | `/.portcullis/account/…` | GET, POST | `[auth.accounts]` | login, second factor, tokens, logout, password, registration, TOTP, the account page: [`crate::accounts::routes`] |
//! | `/.portcullis/jwks.json` | GET | an upstream with `identity = "jwt"`, or `[auth.accounts]` | the identity key's public JWKS |
//! | `/.portcullis/csrf` | GET | `[csrf] mode = "origin+token"` | a CSRF token for the caller |
//! | `/.portcullis/csp-report` | POST | `[headers] csp_report = true` | a CSP violation report: a `csp.violation` event, 204 |
//!
//! The router runs inside the layer stack (`portcullis_layers::endpoints`
//! dispatches to it after `[server] endpoint_limits`), so refusals are
//! rendered and logged like any other; a path under the prefix that no
//! endpoint serves is `route.none`, as an unrouted path is. A new endpoint is
//! one `route` here and one row above.

use std::convert::Infallible;
use std::sync::Arc;

use http::Request;
use http_body_util::BodyExt;
use portcullis_layers::{Body, EventSink, GatewayFuture, GatewayService, Handler};

use crate::auth::AuthRuntime;
use crate::config::Config;

/// The router of the endpoints `config` asks for; `None` when it asks for
/// none (every `/.portcullis/` path is then `route.none`).
#[must_use]
pub fn router(config: &Config, auth: &AuthRuntime, events: &Arc<dyn EventSink>) -> Option<GatewayService> {
    let mut router = axum::Router::new();
    let mut any = false;
    if let Some(path) = &config.csp_report_path {
        let events = events.clone();
        router = router.route(
            path,
            axum::routing::post(move |req: Request<axum::body::Body>| {
                let req = req.map(|body| body.map_err(Into::into).boxed_unsync());
                let answer = portcullis_layers::csp_report::receive(req, events.clone());
                async move { answer.await.map(axum::body::Body::new) }
            })
            .fallback(route_none),
        );
        any = true;
    }
    if let Some(login) = &auth.login {
        router = router.merge(crate::oidc::router(login.clone()));
        any = true;
    }
    if let Some(accounts) = &auth.accounts {
        router = router.merge(crate::accounts::routes::router(accounts.clone()));
        any = true;
    }
    if let Some(signer) = &auth.signer {
        let jwks = signer.jwks();
        router = router.route(
            "/.portcullis/jwks.json",
            axum::routing::get(move || {
                let jwks = jwks.clone();
                async move { ([(http::header::CACHE_CONTROL, "public, max-age=300")], axum::Json(jwks)) }
            }),
        );
        any = true;
    }
    if let Some(csrf) = config.csrf.as_ref().filter(|c| c.policy.mode == portcullis_policy::csrf::Mode::OriginToken) {
        let sessions: Vec<_> =
            [&auth.authenticators.session, &auth.authenticators.account].into_iter().flatten().cloned().collect();
        let policy = csrf.policy.clone();
        router = router.route(
            portcullis_layers::csrf::TOKEN_PATH,
            axum::routing::get(move |req: Request<axum::body::Body>| {
                let (parts, _) = req.into_parts();
                let answer = portcullis_layers::csrf::token_endpoint(policy.clone(), sessions.clone(), parts);
                async move { answer.await.map(axum::body::Body::new) }
            }),
        );
        any = true;
    }
    any.then(|| Arc::new(Endpoints(router.fallback(route_none))) as GatewayService)
}

/// What a path under the prefix that no endpoint serves (or a method an
/// endpoint does not take) gets: `route.none`, as an unrouted path.
async fn route_none() -> axum::response::Response {
    let denied = portcullis_layers::deny(portcullis_policy::Reason::RouteNone);
    let (parts, _) = denied.into_parts();
    axum::response::Response::from_parts(parts, axum::body::Body::empty())
}

/// The axum router as a stack handler.
#[derive(Debug, Clone)]
struct Endpoints(axum::Router);

impl Handler for Endpoints {
    fn handle(&self, req: Request<Body>) -> GatewayFuture {
        let router = self.0.clone();
        Box::pin(async move {
            let Ok(response) = tower::ServiceExt::oneshot(router, req.map(axum::body::Body::new)).await;
            Ok::<_, Infallible>(response.map(|body| body.map_err(Into::into).boxed_unsync()))
        })
    }
}
