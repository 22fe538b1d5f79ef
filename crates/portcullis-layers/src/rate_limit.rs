//! Rate limiting on live requests: named GCRA quotas (rules in
//! `portcullis_policy::rate_limit`) keyed by client IP, subject, API key,
//! route, a request header or a login's account name, several per route.
//!
//! Decision rules:
//! - Every limit the route names is checked; the first one exceeded refuses
//!   the request with 429 `ratelimit.exceeded` (`rule` = the limit's name),
//!   `Retry-After`, and the IETF `RateLimit-Policy` / `RateLimit` headers.
//!   Admitted requests get the headers of the tightest limit too.
//! - Limits keyed by IP, route or header run before authentication (so a
//!   flood costs no signature checks); limits keyed by subject or API key run
//!   after it, and skip unauthenticated requests (IP limits cover those).
//!   Limits keyed by account run after the login layer has read the account
//!   name (login routes only), and skip requests without one.
//! - IPv6 clients are grouped by /64 (one host usually owns a whole /64).
//! - Exempt client networks and roles skip the limit.
//! - A store that cannot answer (Redis down) fails open or closed per limit,
//!   with a `ratelimit.unavailable` event either way.
//!
//! Deployment caveat: behind a proxy, list it in `trusted_proxies`, or every
//! client shares the proxy's address and its IP quota.

use futures_util::future::Either;
use std::convert::Infallible;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use http::{HeaderName, HeaderValue, Request, Response};
use ipnet::IpNet;
use portcullis_policy::rate_limit::{Gcra, Outcome, ceil_secs};
use portcullis_policy::{AuthMethod, Denied, Reason};
use tower::{Layer, Service};

use crate::caller::{Caller, LoginAccount};
use crate::refusal::{deny, note};
use crate::store::{LimitStore, ip_key, unix_nanos};
use crate::{Body, RequestContext, RouteInfo};

/// What a limit counts by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LimitKey {
    /// The client address (IPv6 by /64).
    Ip,
    /// The authenticated subject.
    Subject,
    /// The API key (its subject), only for API-key callers.
    ApiKey,
    /// The route: one budget shared by all callers.
    Route,
    /// A request header's value (absent header: not counted).
    Header(HeaderName),
    /// The account name a login route's request submitted (read by the
    /// login layer; absent: not counted).
    Account,
}

impl LimitKey {
    /// Whether the key is known only after authentication.
    #[must_use]
    pub const fn after_auth(&self) -> bool {
        matches!(self, Self::Subject | Self::ApiKey | Self::Account)
    }
}

/// One named limit.
#[derive(Debug, Clone)]
pub struct Limit {
    /// Its name (`[limits.NAME]`), in events, metrics and store keys.
    pub name: Arc<str>,
    /// What it counts by.
    pub key: LimitKey,
    /// The quota.
    pub quota: Gcra,
    /// The quota as `RateLimit-Policy` shows it: `q` requests per `w` seconds.
    pub policy_header: HeaderValue,
    /// Client networks it does not apply to.
    pub exempt_ips: Vec<IpNet>,
    /// Roles it does not apply to.
    pub exempt_roles: Vec<String>,
    /// Whether requests pass when the store is unavailable.
    pub fail_open: bool,
    /// Its `portcullis_ratelimit_checks_total` counters.
    pub metrics: LimitMetrics,
}

/// A limit's counters, registered on first use (after the process's metrics
/// recorder is installed) so the hot path only increments.
#[derive(Debug, Default, Clone)]
pub struct LimitMetrics {
    allowed: OnceLock<metrics::Counter>,
    limited: OnceLock<metrics::Counter>,
}

impl LimitMetrics {
    fn record(&self, limit: &Arc<str>, allowed: bool) {
        let (slot, result) = if allowed { (&self.allowed, "allowed") } else { (&self.limited, "limited") };
        slot.get_or_init(
            || metrics::counter!("portcullis_ratelimit_checks_total", "limit" => limit.to_string(), "result" => result),
        )
        .increment(1);
    }
}

/// `RateLimit-Policy`.
pub const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
/// `RateLimit`.
pub const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// The store key of `limit` for this request, or `None` when it does not
/// apply (exempt, or its key is absent).
fn key_for(limit: &Limit, req: &Request<Body>, route: &RouteInfo) -> Option<String> {
    let client = req.extensions().get::<RequestContext>().map(|c| c.client.ip);
    if let Some(ip) = client
        && limit.exempt_ips.iter().any(|n| n.contains(&portcullis_policy::forwarded::canonical(ip)))
    {
        return None;
    }
    let caller = req.extensions().get::<Caller>().map(|c| c.0.clone());
    if let Some(p) = &caller
        && p.roles.iter().any(|r| limit.exempt_roles.contains(r))
    {
        return None;
    }
    let value = match &limit.key {
        LimitKey::Ip => ip_key(client?),
        LimitKey::Subject => caller?.subject.clone(),
        LimitKey::ApiKey => caller.filter(|p| p.method == AuthMethod::ApiKey)?.subject.clone(),
        LimitKey::Route => route.name.to_string(),
        LimitKey::Header(name) => {
            let v = req.headers().get(name)?.to_str().ok()?;
            // Keep store keys bounded whatever the client sends.
            portcullis_policy::principal::fingerprint(v.as_bytes())
        }
        // Already a fingerprint of the normalized name.
        LimitKey::Account => req.extensions().get::<LoginAccount>()?.0.clone(),
    };
    Some(format!("rl:{}:{value}", limit.name))
}

/// The headers describing `outcome` under `limit`.
fn headers_for(limit: &Limit, outcome: &Outcome) -> [(HeaderName, HeaderValue); 2] {
    let (remaining, reset) = match outcome {
        Outcome::Allowed { remaining, reset_nanos, .. } => (*remaining, *reset_nanos),
        Outcome::Limited { reset_nanos, .. } => (0, *reset_nanos),
    };
    let name = &limit.name;
    let value = HeaderValue::from_str(&format!("\"{name}\";r={remaining};t={}", ceil_secs(reset)))
        .unwrap_or_else(|_| HeaderValue::from_static("\"limit\""));
    let policy = limit.policy_header.clone();
    [(RATELIMIT_POLICY, policy), (RATELIMIT, value)]
}

/// Where in the stack a [`RateLimitLayer`] sits, which decides the limits
/// it counts: a limit's key must be known there, and each limit is counted
/// at exactly one position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitStage {
    /// Before the gateway's own endpoints answer: the limits of the route
    /// the own-endpoints layer gave `/.portcullis/*` requests (`[server]
    /// endpoint_limits`). Other requests have no route yet and pass.
    OwnEndpoints,
    /// After routing, before authentication: a route's limits keyed by IP,
    /// route or header, so a flood costs no signature checks.
    BeforeAuth,
    /// After authentication and the login layer: a route's limits keyed by
    /// subject, API key or account.
    AfterAuth,
}

impl LimitStage {
    /// Whether a limit keyed by `key` is counted at this position. Own
    /// endpoints are answered before the route layer, so their requests never
    /// reach [`Self::BeforeAuth`]: the two share a rule without counting twice.
    #[must_use]
    pub const fn counts(self, key: &LimitKey) -> bool {
        match self {
            Self::OwnEndpoints | Self::BeforeAuth => !key.after_auth(),
            Self::AfterAuth => key.after_auth(),
        }
    }
}

/// See the module docs. Its [`LimitStage`] selects which of a route's limits
/// this instance checks.
#[derive(Debug, Clone)]
pub struct RateLimitLayer {
    store: Option<Arc<dyn LimitStore>>,
    stage: LimitStage,
}

impl RateLimitLayer {
    /// Limits with `store` (nothing is limited without one) at `stage`.
    #[must_use]
    pub fn new(store: Option<Arc<dyn LimitStore>>, stage: LimitStage) -> Self {
        Self { store, stage }
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimit<S>;
    fn layer(&self, inner: S) -> Self::Service {
        RateLimit { inner, store: self.store.clone(), stage: self.stage }
    }
}

/// See the module docs.
#[derive(Debug, Clone)]
pub struct RateLimit<S> {
    inner: S,
    store: Option<Arc<dyn LimitStore>>,
    stage: LimitStage,
}

enum Verdict {
    Pass(Vec<(HeaderName, HeaderValue)>),
    Refuse(Denied),
}

async fn decide(
    store: &dyn LimitStore,
    limits: &[Arc<Limit>],
    keys: Vec<(usize, String)>,
    now: u64,
) -> (Verdict, Vec<String>) {
    let items: Vec<(String, Gcra)> = keys.iter().map(|(i, key)| (key.clone(), limits[*i].quota)).collect();
    let outcomes = match store.check_all(&items, now).await {
        Ok(outcomes) => outcomes,
        Err(e) => {
            let checked: Vec<&Arc<Limit>> = keys.iter().map(|(i, _)| &limits[*i]).collect();
            let unavailable =
                vec![format!("{}: {e}", checked.iter().map(|l| l.name.as_ref()).collect::<Vec<_>>().join(", "))];
            // One failed round trip covers every limit of the request: any
            // limit failing closed refuses it.
            if let Some(closed) = checked.iter().find(|l| !l.fail_open) {
                let denied = Denied::new(Reason::RateLimitUnavailable)
                    .with_rule(closed.name.to_string())
                    .with_detail(format!("{e}; failing closed"));
                return (Verdict::Refuse(denied), unavailable);
            }
            return (Verdict::Pass(Vec::new()), unavailable);
        }
    };
    let mut tightest: Option<(u32, [(HeaderName, HeaderValue); 2])> = None;
    for ((i, _), outcome) in keys.iter().zip(&outcomes) {
        let limit = &limits[*i];
        limit.metrics.record(&limit.name, outcome.allowed());
        match *outcome {
            Outcome::Limited { retry_after_nanos, .. } => {
                let mut denied = Denied::new(Reason::RateLimitExceeded)
                    .with_rule(limit.name.to_string())
                    .with_detail(format!("limit {} exceeded", limit.name));
                if let Ok(v) = HeaderValue::from_str(&ceil_secs(retry_after_nanos).max(1).to_string()) {
                    denied = denied.with_header(http::header::RETRY_AFTER, v);
                }
                for (name, value) in headers_for(limit, outcome) {
                    denied = denied.with_header(name, value);
                }
                return (Verdict::Refuse(denied), Vec::new());
            }
            Outcome::Allowed { remaining, .. } => {
                if tightest.as_ref().is_none_or(|(r, _)| remaining < *r) {
                    tightest = Some((remaining, headers_for(limit, outcome)));
                }
            }
        }
    }
    (Verdict::Pass(tightest.map(|(_, h)| h.to_vec()).unwrap_or_default()), Vec::new())
}

impl<S> Service<Request<Body>> for RateLimit<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Either<S::Future, crate::GatewayFuture>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let (Some(store), Some(route)) = (self.store.clone(), req.extensions().get::<Arc<RouteInfo>>().cloned()) else {
            return Either::Left(self.inner.call(req));
        };
        let keys: Vec<(usize, String)> = route
            .limits
            .iter()
            .enumerate()
            .filter(|(_, l)| self.stage.counts(&l.key))
            .filter_map(|(i, l)| key_for(l, &req, &route).map(|k| (i, k)))
            .collect();
        if keys.is_empty() {
            return Either::Left(self.inner.call(req));
        }
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Either::Right(Box::pin(async move {
            let (verdict, unavailable) = decide(store.as_ref(), &route.limits, keys, unix_nanos()).await;
            if !unavailable.is_empty() {
                tracing::warn!(limits = ?unavailable, "rate-limit store unavailable");
            }
            match verdict {
                Verdict::Refuse(denied) => Ok(deny(denied)),
                Verdict::Pass(headers) => {
                    let Ok(mut response) = crate::call_boxed(&mut inner, req).await;
                    for (name, value) in headers {
                        response.headers_mut().insert(name, value);
                    }
                    if !unavailable.is_empty() {
                        // Failing open is still worth an event.
                        let noted = Denied::new(Reason::RateLimitUnavailable)
                            .with_detail(format!("failing open: {}", unavailable.join("; ")));
                        note(&mut response, noted);
                    }
                    Ok(response)
                }
            }
        }))
    }
}
