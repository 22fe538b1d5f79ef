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

use std::convert::Infallible;
use std::fmt;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::task::{Context, Poll};
use std::time::{SystemTime, UNIX_EPOCH};

use futures_util::future::BoxFuture;
use http::{HeaderName, HeaderValue, Request, Response};
use ipnet::IpNet;
use portcullis_policy::rate_limit::{Gcra, Outcome, ceil_secs};
use portcullis_policy::{AuthMethod, Denied, Reason};
use tower::{Layer, Service};

use crate::auth::Caller;
use crate::{Body, RequestContext, RouteInfo, deny};

/// The store could not be asked.
#[derive(Debug, Clone, thiserror::Error)]
#[error("limit store unavailable: {0}")]
pub struct StoreUnavailable(pub String);

/// Where GCRA state lives: memory (one instance) or Redis (shared).
pub trait LimitStore: Send + Sync + fmt::Debug {
    /// Applies one request to `key`'s state under `quota` and returns the
    /// outcome. `now` is Unix nanoseconds (a shared store may use its own
    /// clock instead, so instances agree).
    fn check<'a>(&'a self, key: &'a str, quota: Gcra, now: u64) -> BoxFuture<'a, Result<Outcome, StoreUnavailable>>;

    /// Checks several limits of one request in order, stopping at the first
    /// limited one (earlier admitted ones keep their update, later ones are
    /// untouched); returns the outcomes of the limits checked. A shared store
    /// overrides this to use one round trip.
    fn check_all<'a>(
        &'a self,
        items: &'a [(String, Gcra)],
        now: u64,
    ) -> BoxFuture<'a, Result<Vec<Outcome>, StoreUnavailable>> {
        Box::pin(async move {
            let mut out = Vec::with_capacity(items.len());
            for (key, quota) in items {
                let outcome = self.check(key, *quota, now).await?;
                let stop = !outcome.allowed();
                out.push(outcome);
                if stop {
                    break;
                }
            }
            Ok(out)
        })
    }
}

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

/// The store key part for a client: its [`client_group`], IPv6 written
/// with its `/64`.
///
/// [`client_group`]: portcullis_policy::forwarded::client_group
#[must_use]
pub fn ip_key(ip: IpAddr) -> String {
    match portcullis_policy::forwarded::client_group(ip) {
        v6 @ IpAddr::V6(_) => format!("{v6}/64"),
        v4 @ IpAddr::V4(_) => v4.to_string(),
    }
}

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
        LimitKey::Account => req.extensions().get::<crate::login::LoginAccount>()?.0.clone(),
    };
    Some(format!("rl:{}:{value}", limit.name))
}

pub(crate) fn unix_nanos() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
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

/// See the module docs. `after_auth` selects which of a route's limits this
/// instance checks (the stack has one before and one after authentication).
#[derive(Debug, Clone)]
pub struct RateLimitLayer {
    store: Option<Arc<dyn LimitStore>>,
    after_auth: bool,
}

impl RateLimitLayer {
    /// Limits with `store` (nothing is limited without one).
    #[must_use]
    pub fn new(store: Option<Arc<dyn LimitStore>>, after_auth: bool) -> Self {
        Self { store, after_auth }
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimit<S>;
    fn layer(&self, inner: S) -> Self::Service {
        RateLimit { inner, store: self.store.clone(), after_auth: self.after_auth }
    }
}

/// See the module docs.
#[derive(Debug, Clone)]
pub struct RateLimit<S> {
    inner: S,
    store: Option<Arc<dyn LimitStore>>,
    after_auth: bool,
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
    type Future = crate::GatewayFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let (Some(store), Some(route)) = (self.store.clone(), req.extensions().get::<Arc<RouteInfo>>().cloned()) else {
            return crate::call_boxed(&mut self.inner, req);
        };
        let keys: Vec<(usize, String)> = route
            .limits
            .iter()
            .enumerate()
            .filter(|(_, l)| l.key.after_auth() == self.after_auth)
            .filter_map(|(i, l)| key_for(l, &req, &route).map(|k| (i, k)))
            .collect();
        if keys.is_empty() {
            return crate::call_boxed(&mut self.inner, req);
        }
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
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
                        crate::reject::note(&mut response, noted);
                    }
                    Ok(response)
                }
            }
        })
    }
}

/// Gives requests to the gateway's own endpoints (`/.portcullis/*`: login,
/// callback, CSP reports) a route of their own, so the rate-limit layer
/// after it applies that route's limits (`[server] endpoint_limits`) before
/// any of them runs.
#[derive(Debug, Clone)]
pub struct OwnEndpointsRouteLayer {
    route: Option<Arc<RouteInfo>>,
}

impl OwnEndpointsRouteLayer {
    /// Marks own-endpoint requests with `route` (none: no limits).
    #[must_use]
    pub const fn new(route: Option<Arc<RouteInfo>>) -> Self {
        Self { route }
    }
}

impl<S> Layer<S> for OwnEndpointsRouteLayer {
    type Service = OwnEndpointsRoute<S>;
    fn layer(&self, inner: S) -> Self::Service {
        OwnEndpointsRoute { inner, route: self.route.clone() }
    }
}

/// See [`OwnEndpointsRouteLayer`].
#[derive(Debug, Clone)]
pub struct OwnEndpointsRoute<S> {
    inner: S,
    route: Option<Arc<RouteInfo>>,
}

impl<S> Service<Request<Body>> for OwnEndpointsRoute<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<Body>) -> Self::Future {
        if let Some(route) = &self.route
            && req.uri().path().starts_with(crate::endpoints::PREFIX)
        {
            req.extensions_mut().insert(route.clone());
        }
        self.inner.call(req)
    }
}

/// GCRA state in memory, for one instance: sharded maps of TATs, pruned of
/// keys whose TAT has passed (their state equals "never seen") when a shard
/// grows past its share of `capacity`.
#[derive(Debug)]
pub struct MemoryStore {
    // hashbrown with its default, randomly seeded foldhash: SipHash was half
    // of the check's cost. Keys are bounded by the shard prune, and the
    // attacker-chosen parts (header values) are fingerprinted first.
    shards: Vec<Mutex<hashbrown::HashMap<String, u64>>>,
    per_shard: usize,
    clock: fn() -> u64,
}

const SHARDS: usize = 16;

impl MemoryStore {
    /// A store for about `capacity` active keys.
    #[must_use]
    pub fn new(capacity: usize) -> Self {
        Self::with_clock(capacity, unix_nanos)
    }

    /// With a clock returning Unix nanoseconds (tests).
    #[must_use]
    pub fn with_clock(capacity: usize, clock: fn() -> u64) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(hashbrown::HashMap::new())).collect(),
            per_shard: (capacity / SHARDS).max(64),
            clock,
        }
    }

    /// Applies one request synchronously (the whole check is a map lookup
    /// and a few additions).
    pub fn check_now(&self, key: &str, quota: Gcra, now: u64) -> Outcome {
        let shard = &self.shards[shard_of(key)];
        let mut map = shard.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(slot) = map.get_mut(key) {
            let outcome = quota.apply(Some(*slot), now);
            if let Outcome::Allowed { tat, .. } = outcome {
                *slot = tat;
            }
            return outcome;
        }
        let outcome = quota.apply(None, now);
        if let Outcome::Allowed { tat, .. } = outcome {
            if map.len() >= self.per_shard {
                map.retain(|_, t| *t > now);
            }
            map.insert(key.to_owned(), tat);
        }
        outcome
    }
}

pub(crate) fn shard_of(key: &str) -> usize {
    // FNV-1a: cheap and good enough to spread keys over 16 shards.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.bytes() {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    usize::try_from(hash % SHARDS as u64).unwrap_or(0)
}

impl LimitStore for MemoryStore {
    fn check<'a>(&'a self, key: &'a str, quota: Gcra, _now: u64) -> BoxFuture<'a, Result<Outcome, StoreUnavailable>> {
        let now = (self.clock)();
        let outcome = self.check_now(key, quota, now);
        Box::pin(async move { Ok(outcome) })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn memory_store_follows_gcra_and_stays_bounded() {
        let store = MemoryStore::with_clock(64 * SHARDS, || 0);
        let quota = Gcra::new(1, Duration::from_secs(1), 2).unwrap();
        let now = 1_000_000_000_000;
        assert!(store.check_now("a", quota, now).allowed());
        assert!(store.check_now("a", quota, now).allowed());
        assert!(!store.check_now("a", quota, now).allowed());
        assert!(store.check_now("b", quota, now).allowed(), "keys are independent");
        assert!(store.check_now("a", quota, now + 1_000_000_000).allowed(), "one emission interval later");
        // Thousands of one-off keys whose state has expired are pruned.
        for i in 0..10_000u64 {
            store.check_now(&format!("k{i}"), quota, now + 10_000_000_000 + i * 10_000_000_000);
        }
        let total: usize = store.shards.iter().map(|s| s.lock().unwrap().len()).sum();
        assert!(total <= 64 * SHARDS + SHARDS, "{total}");
    }

    #[test]
    fn ipv6_clients_share_their_64() {
        assert_eq!(ip_key("2001:db8:1:2:aaaa::1".parse().unwrap()), ip_key("2001:db8:1:2:ffff::9".parse().unwrap()));
        assert_ne!(ip_key("2001:db8:1:2::1".parse().unwrap()), ip_key("2001:db8:1:3::1".parse().unwrap()));
        assert_eq!(ip_key("::ffff:10.0.0.1".parse().unwrap()), "10.0.0.1");
    }
}
