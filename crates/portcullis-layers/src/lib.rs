//! Tower layers that enforce Portcullis policy on live requests.
//!
//! Each defence is a module that asks the pure `portcullis_policy` crate for
//! a decision and dispatches on it: a [`guard::Guard`] when it only decides
//! (looks at the request, passes or refuses), a [`guard::Exchange`] when it
//! also finishes the response of a request it passes (both applied by
//! [`guard::GuardLayer`]), a function for `ServiceBuilder::map_request` when
//! it only rewrites the request, else a `Layer` + `Service` (a defence that
//! waits: for a store, a verifier, the body, or the response to count it).
//! Defences import the shared modules ([`caller`], [`store`], [`refusal`],
//! [`events`], [`received`], [`verify`], [`guard`]), never each other. A
//! refusal is never rendered here: the layer returns [`refusal::deny`], a
//! response carrying the typed [`Denied`] in its extensions, and the outermost
//! [`reject`] layer turns it into the JSON error body and exactly one security
//! event.
//!
//! [`stack`] composes the layers in the documented order (`docs/pipeline.md`):
//!
//! ```text
//! reject/context → bans → response headers → CORS → head limits → upgrades → duplicates
//!   → IP rules → normalize
//!   → rate limit (own endpoints) → CSP reports → own endpoints → route → body limit
//!   → rate limit (ip, route, header) → authenticate → login protection
//!   → rate limit (subject, key, account) → authorize → CSRF → WAF → OpenAPI validation
//!   → concurrency → identity → forward → proxy
//! ```
//!
//! Where a new defence goes, and what else it touches:
//! `docs/architecture.md` ("Adding a defence").

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::{Request, Response};
use http_body_util::{BodyExt, Empty, Full, combinators::UnsyncBoxBody};
use portcullis_policy::Denied;
use portcullis_policy::forwarded::{ClientAddr, TrustedProxies};
use portcullis_policy::limits::RequestLimits;
use portcullis_policy::route::RouteTable;
use tower::ServiceBuilder;

use crate::guard::GuardLayer;
use crate::rate_limit::LimitStage;

pub mod auth;
pub mod authorize;
pub mod ban;
pub mod body;
pub mod caller;
pub mod concurrency;
pub mod cors;
pub mod csp_report;
pub mod csrf;
pub mod duplicates;
pub mod endpoints;
pub mod events;
pub mod forward;
pub mod guard;
pub mod headers;
pub mod identity;
pub mod limits;
pub mod login;
pub mod normalize;
pub mod openapi;
pub mod pace;
pub mod rate_limit;
pub mod received;
pub mod refusal;
pub mod reject;
pub mod route;
pub mod store;
pub mod upgrade;
pub mod verify;
pub mod waf;

pub use events::EventSink;
pub use refusal::deny;

/// Errors carried by bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The body type every layer speaks: any streaming body, boxed once.
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

/// The future of a composed stack (the reject layer's).
pub type GatewayFuture = BoxFuture<'static, Result<Response<Body>, Infallible>>;

/// A composed stack, shared by every connection: each request runs on a clone
/// of the concrete layer stack (reference-count increments, no allocation).
pub trait Handler: Send + Sync + std::fmt::Debug {
    /// Runs one request through the stack.
    fn handle(&self, req: Request<Body>) -> GatewayFuture;
}

/// A composed stack behind a pointer.
pub type GatewayService = Arc<dyn Handler>;

struct Stack<S> {
    service: S,
}

impl<S> std::fmt::Debug for Stack<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stack").finish_non_exhaustive()
    }
}

impl<S> Handler for Stack<S>
where
    S: tower::Service<Request<Body>, Response = Response<Body>, Error = Infallible, Future = GatewayFuture>
        + Clone
        + Send
        + Sync
        + 'static,
{
    fn handle(&self, req: Request<Body>) -> GatewayFuture {
        let mut service = self.service.clone();
        // No layer applies backpressure today, so the stack is ready at once;
        // should one start to, wait for it properly.
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match service.poll_ready(&mut cx) {
            std::task::Poll::Ready(Ok(())) => service.call(req),
            std::task::Poll::Pending => Box::pin(tower::ServiceExt::oneshot(service, req)),
        }
    }
}

/// An empty body.
#[must_use]
pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

/// A body of known bytes.
#[must_use]
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).map_err(|never| match never {}).boxed_unsync()
}

/// How the connection was accepted; inserted into each request's extensions
/// by the server before the stack sees it.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// The TCP peer.
    pub peer: SocketAddr,
    /// The listener's configured name.
    pub listener: Arc<str>,
    /// `http` or `https`.
    pub scheme: &'static str,
    /// The peer's IP as a header value, formatted once per connection.
    pub peer_ip: http::HeaderValue,
    /// The verified client certificate (mTLS listeners).
    pub client_cert: Option<Arc<ClientCert>>,
}

/// A client certificate verified during the TLS handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCert {
    /// The subject distinguished name (`CN=svc-a, O=Example`), values
    /// escaped as RFC 4514 says (`O=Ops\, Inc.`), so it is unambiguous.
    pub subject: String,
    /// The subject's common name when it has exactly one, read from the
    /// certificate's structure: never parse it out of `subject`.
    pub common_name: Option<String>,
    /// Subject alternative names (`DNS:…`, `email:…`, `URI:…`).
    pub sans: Vec<String>,
    /// SHA-256 fingerprint of the certificate.
    pub fingerprint: String,
}

impl ConnInfo {
    /// Connection facts for a peer on a listener.
    #[must_use]
    pub fn new(peer: SocketAddr, listener: Arc<str>, scheme: &'static str) -> Self {
        let peer_ip = portcullis_policy::forwarded::ip_value(portcullis_policy::forwarded::canonical(peer.ip()));
        Self { peer, listener, scheme, peer_ip, client_cert: None }
    }
}

/// Who sent the request; inserted by the reject layer for every inner layer.
#[derive(Debug, Clone)]
pub struct RequestContext {
    /// The request id, sent upstream as `X-Request-Id` by the forward layer
    /// (so it does not count against the client's header limits).
    pub request_id: http::HeaderValue,
    /// The client after trusted-proxy resolution.
    pub client: ClientAddr,
}

impl RequestContext {
    /// The request id as text.
    #[must_use]
    pub fn request_id(&self) -> &str {
        self.request_id.to_str().unwrap_or("-")
    }
}

/// Authentication a route requires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    /// No authentication: anyone may call the route.
    Public,
    /// One of these methods.
    Required(portcullis_policy::Methods),
}

/// What the layers need to know about a matched route. The route layer puts
/// an `Arc<RouteInfo>` into the request's extensions (for inner layers and the
/// proxy) and into the response's (for the access log and events).
#[derive(Debug, Clone)]
pub struct RouteInfo {
    /// The route's name, used in events, logs and metrics.
    pub name: Arc<str>,
    /// Index of the route's upstream in the proxy's upstream list.
    pub upstream: usize,
    /// The upstream's name (for logs).
    pub upstream_name: Arc<str>,
    /// Body size limit for this route, overriding the global one.
    pub max_body_bytes: Option<u64>,
    /// Accepted authentication.
    pub auth: AuthMode,
    /// The route's response-header policy (global policy with the route's
    /// changes), if it has changes.
    pub headers: Option<Arc<portcullis_policy::headers::HeaderPolicy>>,
    /// How the upstream learns the caller's identity.
    pub identity: identity::UpstreamIdentity,
    /// What an authenticated caller must have, if anything.
    pub require: Option<Arc<portcullis_policy::rbac::Requirement>>,
    /// The route's IP lists, if any.
    pub ips: Option<Arc<portcullis_policy::ip_rules::IpRules>>,
    /// The route's path pattern, when a rule reads its parameters (`owner`).
    pub pattern: Option<Arc<portcullis_policy::route::PathPattern>>,
    /// The route's rate limits, in the order configured.
    pub limits: Vec<Arc<rate_limit::Limit>>,
    /// The route's login protection, if it is a login route.
    pub login: Option<Arc<login::LoginSettings>>,
    /// The route's in-flight limit (shared by every worker), if any.
    pub in_flight: Option<Arc<concurrency::InFlight>>,
    /// The upstream's in-flight limit (shared by every route and worker).
    pub upstream_in_flight: Option<Arc<concurrency::InFlight>>,
    /// The route's WAF, if it has one.
    pub waf: Option<Arc<waf::WafRoute>>,
    /// Whether unsafe requests need the CSRF checks (`[csrf]`, route `csrf`).
    pub csrf: bool,
    /// The OpenAPI document requests are validated against (`openapi = NAME`).
    pub openapi: Option<Arc<portcullis_policy::openapi::OpenApi>>,
    /// Whether WebSocket upgrades may pass (`websocket = true`).
    pub websocket: bool,
    /// Where the server records the route's answered requests (its
    /// metrics handles, looked up once per configuration), if anywhere.
    pub metrics: Option<Arc<dyn RouteMetrics>>,
}

/// Records the requests a route answered. The layers only carry it (in
/// [`RouteInfo`], which travels out in the response's extensions); the
/// server calls it once per answered request, so what it holds must be
/// ready-made handles, not a registry lookup by label.
pub trait RouteMetrics: Send + Sync + std::fmt::Debug {
    /// One answered request: the index of its listener in the
    /// configuration, its status, the time until its response head was
    /// ready, and the upstream's share of that time if it was proxied.
    fn answered(
        &self,
        listener: usize,
        status: http::StatusCode,
        total: std::time::Duration,
        upstream: Option<std::time::Duration>,
    );
}

impl Default for RouteInfo {
    /// A route that refuses every request and sets nothing else: no caller
    /// is accepted (`auth` allows no method), no limits, no WAF. A builder
    /// states what it needs over this (`RouteInfo { auth, limits,
    /// ..RouteInfo::default() }`), so a new per-route setting is added in
    /// the places that set it, not in every literal.
    fn default() -> Self {
        Self {
            name: Arc::from(""),
            upstream: usize::MAX,
            upstream_name: Arc::from(""),
            max_body_bytes: None,
            auth: AuthMode::Required(portcullis_policy::Methods::NONE),
            headers: None,
            identity: identity::UpstreamIdentity::None,
            require: None,
            ips: None,
            pattern: None,
            limits: Vec::new(),
            login: None,
            in_flight: None,
            upstream_in_flight: None,
            waf: None,
            csrf: false,
            openapi: None,
            websocket: false,
            metrics: None,
        }
    }
}

/// The upstream target that served a response, and how long the proxy
/// waited for its response head (connecting and retries on other targets
/// included); put into the response's extensions by the proxy for the
/// access log and the latency metrics (one extension, not two: each insert
/// costs a hash-map insertion per request).
#[derive(Debug, Clone)]
pub struct ServedBy(pub Arc<str>, pub std::time::Duration);

/// Everything the stack needs, compiled from configuration.
#[derive(Debug, Clone)]
pub struct StackConfig {
    /// Trusted proxies for client address and request id resolution.
    pub trusted_proxies: TrustedProxies,
    /// Request size limits.
    pub limits: RequestLimits,
    /// The route table.
    pub routes: Arc<RouteTable<Arc<RouteInfo>>>,
    /// Where security events go.
    pub events: Arc<dyn EventSink>,
    /// Whether to write an access-log line per request.
    pub access_log: bool,
    /// Allowed requests in a million that get a `request.allowed` event
    /// (`[events] sample_allowed`; 0: none).
    pub sample_allowed_ppm: u32,
    /// The global response-header policy.
    pub headers: Arc<portcullis_policy::headers::HeaderPolicy>,
    /// The CORS policy, if any.
    pub cors: Option<Arc<portcullis_policy::cors::CorsPolicy>>,
    /// The configured authentication methods.
    pub auth: Arc<auth::Authenticators>,
    /// How paths are normalized and compared.
    pub paths: portcullis_policy::normalize::PathPolicy,
    /// Roles compiled to their permissions.
    pub roles: Arc<portcullis_policy::rbac::Roles>,
    /// The global IP lists (`[access]`), if any.
    pub ip_rules: Option<Arc<portcullis_policy::ip_rules::IpRules>>,
    /// Where rate-limit state lives (none: no route has limits).
    pub limit_store: Option<Arc<dyn store::LimitStore>>,
    /// Where login-failure state lives (none: no route is a login route).
    pub login_store: Option<Arc<dyn login::LoginStore>>,
    /// The gateway's own endpoints under `/.portcullis/` (login, callback,
    /// logout, JWKS), if any are enabled.
    pub endpoints: Option<GatewayService>,
    /// The ban list consulted per request (clients behind trusted proxies,
    /// connections older than their ban), if bans are enabled.
    pub bans: Option<Arc<dyn ban::BanStore>>,
    /// The `[[ban]]` rules counting refusals, if any.
    pub banner: Option<Arc<ban::Banner>>,
    /// The route (with `[server] endpoint_limits`) that requests to the
    /// gateway's own endpoints are limited by, if any.
    pub own_endpoints_route: Option<Arc<RouteInfo>>,
    /// The CSRF policy (`[csrf]`), if any route is protected.
    pub csrf: Option<Arc<portcullis_policy::csrf::CsrfPolicy>>,
}

/// Composes the defences around `proxy` in the documented order.
pub fn stack<S>(config: &StackConfig, proxy: S) -> GatewayService
where
    S: tower::Service<Request<Body>, Response = Response<Body>, Error = Infallible> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
{
    let service = ServiceBuilder::new()
        .layer(reject::RejectLayer::new(
            config.trusted_proxies.clone(),
            config.events.clone(),
            config.access_log,
            config.sample_allowed_ppm,
        ))
        .layer(ban::BansLayer::new(config.bans.clone(), config.banner.clone()))
        .layer(GuardLayer::new(headers::ResponseHeaders(config.headers.clone())))
        .layer(GuardLayer::new(cors::Cors(config.cors.clone())))
        .layer(GuardLayer::new(limits::HeadLimits(config.limits)))
        .layer(GuardLayer::new(upgrade::Upgrades))
        .layer(GuardLayer::new(duplicates::Duplicates(Arc::new(singletons(config)))))
        .layer(GuardLayer::new(authorize::GlobalIpRules(config.ip_rules.clone())))
        .layer(GuardLayer::new(normalize::Normalize(config.paths)))
        .map_request(endpoints::own_endpoints_route(config.own_endpoints_route.clone()))
        .layer(rate_limit::RateLimitLayer::new(config.limit_store.clone(), LimitStage::OwnEndpoints))
        .layer(endpoints::EndpointsLayer::new(config.endpoints.clone()))
        .layer(GuardLayer::new(route::Route::new(config.routes.clone(), config.paths.case)))
        .layer(GuardLayer::new(limits::BodyLimit(config.limits.max_body_bytes)))
        .layer(rate_limit::RateLimitLayer::new(config.limit_store.clone(), LimitStage::BeforeAuth))
        .layer(auth::AuthLayer::new(config.auth.clone()))
        .layer(login::LoginLayer::new(config.login_store.clone()))
        .layer(rate_limit::RateLimitLayer::new(config.limit_store.clone(), LimitStage::AfterAuth))
        .layer(GuardLayer::new(authorize::Authorize(config.roles.clone())))
        .layer(GuardLayer::new(csrf::Csrf(config.csrf.clone())))
        .layer(waf::WafLayer)
        .layer(openapi::OpenApiLayer)
        .layer(GuardLayer::new(concurrency::Concurrency))
        .layer(GuardLayer::new(identity::Identity))
        .map_request(forward::forward)
        .service(proxy);
    Arc::new(Stack { service })
}

/// The headers and cookies that may appear only once: the fixed ones, the
/// API-key header, the session cookie, and the CSRF cookie and header.
fn singletons(config: &StackConfig) -> portcullis_policy::duplicates::Singletons {
    let mut rules = portcullis_policy::duplicates::Singletons::default();
    if let Some(header) = &config.auth.api_key_header {
        rules = rules.with_header(header.clone());
    }
    for session in [&config.auth.session, &config.auth.account].into_iter().flatten() {
        rules = rules.with_cookie(session.cookie_name());
    }
    if let Some(csrf) = &config.csrf {
        rules = rules
            .with_header(csrf.header.clone())
            .with_cookie(csrf.cookie_name("https"))
            .with_cookie(csrf.cookie_name("http"));
    }
    rules
}

/// Calls `inner` and boxes its future. Layers that work on the response use
/// this before their `async` block: holding the inner service's associated
/// future type inside an async block trips a rustc limitation in proving
/// `Send` (the boxed error type's lifetime), while a `BoxFuture` is concrete.
pub(crate) fn call_boxed<S>(inner: &mut S, req: Request<Body>) -> GatewayFuture
where
    S: tower::Service<Request<Body>, Response = Response<Body>, Error = Infallible>,
    S::Future: Send + 'static,
{
    Box::pin(inner.call(req))
}

/// Whether header `name` starts with `prefix` when `_` is read as `-`.
/// CGI-style servers (Rack, uWSGI, PHP) map both `X-Foo-Bar` and `X_Foo_Bar`
/// to `HTTP_X_FOO_BAR`, so a header the gateway strips must be stripped in
/// its underscore spelling too. `name` and `prefix` are lower-case.
#[must_use]
pub fn header_alias_prefix(name: &str, prefix: &str) -> bool {
    name.len() >= prefix.len() && name.bytes().zip(prefix.bytes()).all(|(n, p)| n == p || (n == b'_' && p == b'-'))
}

/// Removes every header `name` equals (reading `_` as `-`) one of `names`
/// in its underscore spelling; the exact spellings are handled by callers.
pub fn strip_underscore_aliases(headers: &mut http::HeaderMap, names: &[&str]) {
    let aliases: Vec<http::HeaderName> = headers
        .keys()
        .filter(|k| k.as_str().contains('_'))
        .filter(|k| names.iter().any(|n| k.as_str().len() == n.len() && header_alias_prefix(k.as_str(), n)))
        .cloned()
        .collect();
    for name in aliases {
        headers.remove(name);
    }
}

/// Returns the typed denial of a response, if it is one.
#[must_use]
pub fn denial_of<B>(response: &Response<B>) -> Option<&Denied> {
    response.extensions().get::<Denied>()
}
