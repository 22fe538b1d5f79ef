//! Login brute-force protection on live requests: routes with `login = NAME`
//! count the upstream's refusals per submitted account name and per client
//! address and make further attempts wait, exponentially longer (rules in
//! `portcullis_policy::login`).
//!
//! Decision rules:
//! - Before the upstream: the account name is read from the route's source
//!   (a JSON or form body field, or a header). The body is read only on login
//!   routes, at most `max_body` bytes, and forwarded intact, like every body:
//!   the upstream receives exactly the bytes the client sent.
//! - A login request whose account the gateway cannot read as the upstream
//!   would is refused before the upstream, so no spelling of a request can
//!   escape the per-account count: 413 `login.too_large` for a body over
//!   `max_body` (declared or streamed), 400 `login.unreadable` for a
//!   compressed body, a charset other than UTF-8 or ISO-8859-1, JSON that
//!   does not parse, or the account field repeated or not a string
//!   (`portcullis_policy::login::Unreadable`;
//!   `rule` = the login's name).
//! - If the account or the address is in a wait, the attempt is refused with
//!   429 `login.backoff` (`rule` = the login's name) and `Retry-After`,
//!   without reaching the upstream.
//! - After the upstream: a status in `failure_status` is a failure for both
//!   keys, logged as `login.failed` (action `log`, the account only as a
//!   fingerprint); a 2xx or 3xx resets the account, not the address; anything
//!   else (400, 5xx) counts for nothing. Refusals by the gateway itself are
//!   not the upstream's answer and count for nothing either.
//! - A store that cannot answer (Redis down) refuses the attempt with 503
//!   `login.unavailable` when the protection fails closed (the default), or
//!   lets it through with a `login.unavailable` event (action `log`) when it
//!   fails open.
//! - The account's fingerprint goes into the request's extensions
//!   ([`LoginAccount`]) for rate limits keyed by `account`.
//!
//! [`LoginGuard`] holds the decisions without tower or HTTP bodies, so the
//! gateway's own login can use it directly.
//!
//! Deployment caveat: behind a proxy, list it in `trusted_proxies`, or every
//! client shares the proxy's address and its failures. Attempts admitted
//! together, before earlier failures are recorded, all reach the upstream:
//! pair login protection with a rate limit keyed by `account` or `ip`.

use futures_util::future::Either;
use std::convert::Infallible;
use std::fmt;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use futures_util::future::BoxFuture;
use http::{HeaderValue, Request, Response, StatusCode};
use portcullis_policy::clock::{Clock, SystemClock};
use portcullis_policy::login::{
    AccountSource, Backoff, Standing, State, Unreadable, account_fingerprint, readable_body,
};
use portcullis_policy::rate_limit::ceil_secs;
use portcullis_policy::{Denied, Reason};
use tower::{Layer, Service};

use crate::body::Prefix;
use crate::caller::LoginAccount;
use crate::refusal::{deny, note};
use crate::store::{StoreUnavailable, ip_key, shard_of, unix_nanos};
use crate::{Body, RequestContext, RouteInfo};

/// Where login-failure state lives: memory (one instance) or Redis (shared).
/// `now` is Unix nanoseconds; a shared store may use its own clock instead,
/// so instances agree.
pub trait LoginStore: Send + Sync + fmt::Debug {
    /// The standing of each key.
    fn check<'a>(
        &'a self,
        keys: &'a [(String, Backoff)],
        now: u64,
    ) -> BoxFuture<'a, Result<Vec<Standing>, StoreUnavailable>>;

    /// Records one failure on each key and returns the new standings.
    fn fail<'a>(
        &'a self,
        keys: &'a [(String, Backoff)],
        now: u64,
    ) -> BoxFuture<'a, Result<Vec<Standing>, StoreUnavailable>>;

    /// Forgets a key (a successful login).
    fn reset<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), StoreUnavailable>>;
}

/// One `[login.NAME]`.
#[derive(Debug, Clone)]
pub struct LoginSettings {
    /// Its name, in events, metrics and store keys.
    pub name: Arc<str>,
    /// Where the account name is read.
    pub account: AccountSource,
    /// Backoff per account name.
    pub account_backoff: Backoff,
    /// Backoff per client address.
    pub ip_backoff: Backoff,
    /// Upstream statuses that are failures.
    pub failure_status: Vec<StatusCode>,
    /// Whether attempts pass when the store is unavailable.
    pub fail_open: bool,
    /// Most body bytes read to find the account.
    pub max_body: u64,
}

/// Login protection for one `[login.NAME]` and a store: the decisions of
/// the module docs, without tower or HTTP bodies.
#[derive(Debug, Clone)]
pub struct LoginGuard {
    settings: Arc<LoginSettings>,
    store: Arc<dyn LoginStore>,
}

/// What the upstream's answer was, for [`LoginGuard::after`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    /// The login failed (a status in `failure_status`).
    Failed,
    /// The login succeeded (2xx, 3xx).
    Succeeded,
    /// Neither (a malformed request, an upstream error).
    Other,
}

impl LoginGuard {
    /// A guard for `settings` keeping its state in `store`.
    #[must_use]
    pub fn new(settings: Arc<LoginSettings>, store: Arc<dyn LoginStore>) -> Self {
        Self { settings, store }
    }

    /// The settings.
    #[must_use]
    pub fn settings(&self) -> &LoginSettings {
        &self.settings
    }

    /// What `status` from the upstream means for the login.
    #[must_use]
    pub fn classify(&self, status: StatusCode) -> Attempt {
        if self.settings.failure_status.contains(&status) {
            Attempt::Failed
        } else if status.is_success() || status.is_redirection() {
            Attempt::Succeeded
        } else {
            Attempt::Other
        }
    }

    fn account_key(&self, fingerprint: &str) -> String {
        account_key(&self.settings.name, fingerprint)
    }

    fn ip_key(&self, ip: IpAddr) -> String {
        format!("login:{}:ip:{}", self.settings.name, ip_key(ip))
    }

    fn keys(&self, account: Option<&str>, ip: IpAddr) -> (Vec<(String, Backoff)>, Option<String>) {
        let fingerprint = account.and_then(account_fingerprint);
        let mut keys = Vec::with_capacity(2);
        if let Some(fp) = &fingerprint {
            keys.push((self.account_key(fp), self.settings.account_backoff));
        }
        keys.push((self.ip_key(ip), self.settings.ip_backoff));
        (keys, fingerprint)
    }

    /// Whether an attempt for `account` (as submitted) from `ip` may go
    /// ahead. `Ok(Some(note))` lets it through with an event to log (the
    /// store is unavailable and the protection fails open).
    ///
    /// # Errors
    /// The refusal: `login.backoff` with `Retry-After`, or
    /// `login.unavailable` when the store is down and the protection fails
    /// closed.
    pub async fn before(&self, account: Option<&str>, ip: IpAddr) -> Result<Option<Denied>, Denied> {
        let (keys, fingerprint) = self.keys(account, ip);
        let standings = match self.store.check(&keys, unix_nanos()).await {
            Ok(standings) => standings,
            Err(e) => return self.unavailable(&e).map(Some),
        };
        let subject = |i: usize| if fingerprint.is_some() && i == 0 { "account" } else { "client" };
        let waiting = standings.iter().enumerate().filter(|(_, s)| !s.open()).max_by_key(|(_, s)| s.wait_nanos);
        let Some((i, standing)) = waiting else { return Ok(None) };
        let retry = ceil_secs(standing.wait_nanos).max(1);
        let who = match (subject(i), &fingerprint) {
            ("account", Some(fp)) => format!("account {fp}"),
            _ => "client".to_owned(),
        };
        let mut denied = Denied::new(Reason::LoginBackoff)
            .with_rule(self.settings.name.to_string())
            .with_detail(format!("{who}: {} failure(s), waits {retry}s more", standing.failures));
        if let Ok(v) = HeaderValue::from_str(&retry.to_string()) {
            denied = denied.with_header(http::header::RETRY_AFTER, v);
        }
        Err(denied)
    }

    /// Records the outcome of an attempt for `account` (as submitted) from
    /// `ip`. Returns the event to log: `login.failed` for a failure, or
    /// `login.unavailable` if the store could not record it.
    pub async fn after(&self, account: Option<&str>, ip: IpAddr, attempt: Attempt) -> Option<Denied> {
        let (keys, fingerprint) = self.keys(account, ip);
        match attempt {
            Attempt::Other => None,
            Attempt::Succeeded => {
                let fp = fingerprint?;
                let key = self.account_key(&fp);
                match self.store.reset(&key).await {
                    Ok(()) => None,
                    Err(e) => Some(self.unrecorded(&e)),
                }
            }
            Attempt::Failed => {
                let standings = match self.store.fail(&keys, unix_nanos()).await {
                    Ok(standings) => standings,
                    Err(e) => return Some(self.unrecorded(&e)),
                };
                let describe = |s: &Standing| {
                    if s.open() {
                        format!("{} failure(s)", s.failures)
                    } else {
                        format!("{} failure(s), next attempt in {}s", s.failures, ceil_secs(s.wait_nanos).max(1))
                    }
                };
                let mut parts = Vec::with_capacity(2);
                let mut rest = standings.iter();
                if let Some(fp) = &fingerprint
                    && let Some(s) = rest.next()
                {
                    parts.push(format!("account {fp}: {}", describe(s)));
                }
                if let Some(s) = rest.next() {
                    parts.push(format!("client: {}", describe(s)));
                }
                if fingerprint.is_none() {
                    parts.push("no account name found".to_owned());
                }
                Some(
                    Denied::new(Reason::LoginFailed)
                        .with_rule(self.settings.name.to_string())
                        .with_detail(parts.join("; ")),
                )
            }
        }
    }

    fn unavailable(&self, e: &StoreUnavailable) -> Result<Denied, Denied> {
        tracing::warn!(login = %self.settings.name, error = %e, "login-protection store unavailable");
        let denied = Denied::new(Reason::LoginUnavailable).with_rule(self.settings.name.to_string());
        if self.settings.fail_open {
            Ok(denied.with_detail(format!("{e}; failing open")))
        } else {
            Err(denied.with_detail(format!("{e}; failing closed")))
        }
    }

    fn unrecorded(&self, e: &StoreUnavailable) -> Denied {
        tracing::warn!(login = %self.settings.name, error = %e, "login outcome not recorded");
        Denied::new(Reason::LoginUnavailable)
            .with_rule(self.settings.name.to_string())
            .with_detail(format!("{e}; outcome not recorded"))
    }
}

fn account_key(login: &str, fingerprint: &str) -> String {
    format!("login:{login}:acct:{fingerprint}")
}

/// Forgets the failures counted for `account` (as a user would submit it)
/// under the `[login.NAME]` named `login`: an administrator's unlock. The
/// client addresses' counts are left alone. Whether the name could be
/// counted at all (a name that folds to nothing never is).
///
/// # Errors
/// The store cannot be reached.
pub async fn unlock_account(store: &dyn LoginStore, login: &str, account: &str) -> Result<bool, StoreUnavailable> {
    let Some(fingerprint) = account_fingerprint(account) else { return Ok(false) };
    store.reset(&account_key(login, &fingerprint)).await?;
    Ok(true)
}

/// See the module docs.
#[derive(Debug, Clone)]
pub struct LoginLayer {
    store: Option<Arc<dyn LoginStore>>,
}

impl LoginLayer {
    /// Protects login routes with `store` (nothing is protected without one).
    #[must_use]
    pub fn new(store: Option<Arc<dyn LoginStore>>) -> Self {
        Self { store }
    }
}

impl<S> Layer<S> for LoginLayer {
    type Service = Login<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Login { inner, store: self.store.clone() }
    }
}

/// See the module docs.
#[derive(Debug, Clone)]
pub struct Login<S> {
    inner: S,
    store: Option<Arc<dyn LoginStore>>,
}

impl<S> Service<Request<Body>> for Login<S>
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
        let settings = req.extensions().get::<Arc<RouteInfo>>().and_then(|r| r.login.clone());
        let ip = req.extensions().get::<RequestContext>().map(|c| c.client.ip);
        let (Some(store), Some(settings), Some(ip)) = (self.store.clone(), settings, ip) else {
            return Either::Left(self.inner.call(req));
        };
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Either::Right(Box::pin(async move {
            let guard = LoginGuard::new(settings, store);
            let (mut req, account) = match read_account(guard.settings(), req).await {
                Ok(read) => read,
                Err(denied) => return Ok(deny(denied)),
            };
            if let Some(fp) = account.as_deref().and_then(account_fingerprint) {
                req.extensions_mut().insert(LoginAccount(fp));
            }
            let mut notes = Vec::new();
            match guard.before(account.as_deref(), ip).await {
                Ok(note) => notes.extend(note),
                Err(denied) => return Ok(deny(denied)),
            }
            let Ok(mut response) = crate::call_boxed(&mut inner, req).await;
            // Only the upstream's answers say anything about the password.
            if crate::denial_of(&response).is_none() {
                let attempt = guard.classify(response.status());
                notes.extend(guard.after(account.as_deref(), ip, attempt).await);
            }
            for noted in notes {
                note(&mut response, noted);
            }
            Ok(response)
        }))
    }
}

/// Reads the account name from `req`, returning the request with its body
/// intact. The body is buffered only up to `max_body`; a client too slow to
/// send it is refused (408), a larger body or one the gateway cannot read as
/// the upstream would is refused (see the module docs).
async fn read_account(settings: &LoginSettings, req: Request<Body>) -> Result<(Request<Body>, Option<String>), Denied> {
    let unreadable = |e: Unreadable| {
        let reason = if matches!(e, Unreadable::TooLarge(_)) { Reason::LoginTooLarge } else { Reason::LoginUnreadable };
        Denied::new(reason).with_rule(settings.name.to_string()).with_detail(e.to_string())
    };
    if !settings.account.reads_body() {
        let account = settings.account.extract(req.headers(), None).map_err(unreadable)?;
        return Ok((req, account));
    }
    readable_body(req.headers()).map_err(unreadable)?;
    let declared = req
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > settings.max_body) {
        return Err(unreadable(Unreadable::TooLarge(settings.max_body)));
    }
    let (parts, body) = req.into_parts();
    let prefix = Prefix::read(body, settings.max_body).await;
    if let Some(denied) = prefix.timed_out() {
        return Err(denied);
    }
    if prefix.truncated() {
        return Err(unreadable(Unreadable::TooLarge(settings.max_body)));
    }
    // A body that failed for another reason (the client went away) is
    // forwarded as it is and fails upstream; there is no account to count.
    let account = if prefix.complete() {
        settings.account.extract(&parts.headers, Some(&prefix.bytes)).map_err(unreadable)?
    } else {
        None
    };
    Ok((Request::from_parts(parts, prefix.into_body()), account))
}

/// Login state in memory, for one instance: sharded maps of [`State`],
/// pruned of forgotten keys when a shard grows past its share of
/// `capacity`. A shard still full after pruning forgets a key that is not in
/// a wait first, so a flood of one-off names cannot push out the keys that
/// are being slowed down.
#[derive(Debug)]
pub struct MemoryLoginStore {
    shards: Vec<Mutex<hashbrown::HashMap<String, (State, Backoff)>>>,
    per_shard: usize,
    clock: Arc<dyn Clock>,
}

const SHARDS: usize = 16;

impl MemoryLoginStore {
    /// A store for about `capacity` keys.
    #[must_use]
    pub fn new(capacity: usize) -> Self {
        Self::with_clock(capacity, Arc::new(SystemClock))
    }

    /// With another clock (tests).
    #[must_use]
    pub fn with_clock(capacity: usize, clock: Arc<dyn Clock>) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(hashbrown::HashMap::new())).collect(),
            per_shard: (capacity / SHARDS).max(16),
            clock,
        }
    }

    fn shard(&self, key: &str) -> &Mutex<hashbrown::HashMap<String, (State, Backoff)>> {
        &self.shards[shard_of(key) % SHARDS]
    }

    /// The standing of `key` at `now`.
    pub fn check_now(&self, key: &str, rules: Backoff, now: u64) -> Standing {
        let map = self.shard(key).lock().unwrap_or_else(PoisonError::into_inner);
        rules.standing(map.get(key).map(|(s, _)| s), now)
    }

    /// Records a failure on `key` at `now`.
    pub fn fail_now(&self, key: &str, rules: Backoff, now: u64) -> Standing {
        let mut map = self.shard(key).lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(slot) = map.get_mut(key) {
            slot.0 = rules.fail(Some(&slot.0), now);
            slot.1 = rules;
            return rules.standing(Some(&slot.0), now);
        }
        if map.len() >= self.per_shard {
            map.retain(|_, (s, r)| r.ttl(s, now) > 0);
            if map.len() >= self.per_shard {
                let victim = map
                    .iter()
                    .find(|(_, (s, r))| r.standing(Some(s), now).open())
                    .or_else(|| map.iter().next())
                    .map(|(k, _)| k.clone());
                if let Some(victim) = victim {
                    map.remove(&victim);
                }
            }
        }
        let state = rules.fail(None, now);
        map.insert(key.to_owned(), (state, rules));
        rules.standing(Some(&state), now)
    }

    /// Forgets `key`.
    pub fn reset_now(&self, key: &str) {
        self.shard(key).lock().unwrap_or_else(PoisonError::into_inner).remove(key);
    }

    /// Keys held, forgotten ones included until the next prune.
    #[must_use]
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().unwrap_or_else(PoisonError::into_inner).len()).sum()
    }

    /// Whether no key is held.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl LoginStore for MemoryLoginStore {
    fn check<'a>(
        &'a self,
        keys: &'a [(String, Backoff)],
        _now: u64,
    ) -> BoxFuture<'a, Result<Vec<Standing>, StoreUnavailable>> {
        let now = self.clock.unix_nanos();
        let out = keys.iter().map(|(key, rules)| self.check_now(key, *rules, now)).collect();
        Box::pin(async move { Ok(out) })
    }

    fn fail<'a>(
        &'a self,
        keys: &'a [(String, Backoff)],
        _now: u64,
    ) -> BoxFuture<'a, Result<Vec<Standing>, StoreUnavailable>> {
        let now = self.clock.unix_nanos();
        let out = keys.iter().map(|(key, rules)| self.fail_now(key, *rules, now)).collect();
        Box::pin(async move { Ok(out) })
    }

    fn reset<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), StoreUnavailable>> {
        self.reset_now(key);
        Box::pin(async move { Ok(()) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;
    const T0: u64 = 1_700_000_000 * S;

    fn rules(free: u32) -> Backoff {
        Backoff { free, window_nanos: 900 * S, backoff_nanos: S, max_backoff_nanos: 900 * S }
    }

    #[test]
    fn memory_store_counts_resets_and_stays_bounded() {
        let store = MemoryLoginStore::with_clock(
            16 * SHARDS,
            Arc::new(portcullis_policy::clock::FixedClock(std::time::UNIX_EPOCH)),
        );
        let r = rules(2);
        assert_eq!(store.fail_now("a", r, T0).wait_nanos, 0);
        assert_eq!(store.fail_now("a", r, T0).wait_nanos, S);
        assert_eq!(store.check_now("a", r, T0), Standing { failures: 2, wait_nanos: S });
        assert!(store.check_now("b", r, T0).open());
        store.reset_now("a");
        assert_eq!(store.check_now("a", r, T0), Standing::default());
        // A blocked key survives a flood of one-off keys.
        store.fail_now("target", r, T0);
        store.fail_now("target", r, T0);
        for i in 0..10_000u64 {
            store.fail_now(&format!("k{i}"), r, T0 + i);
        }
        assert!(store.len() <= 16 * SHARDS, "{}", store.len());
        assert!(!store.check_now("target", r, T0 + 10_000).open());
        // Forgotten keys are pruned first.
        let later = T0 + 10_000 * S;
        for i in 0..100u64 {
            store.fail_now(&format!("late{i}"), r, later);
        }
        assert!(store.check_now("late0", r, later).failures == 1);
    }

    #[test]
    fn upstream_answers_are_classified() {
        let settings = LoginSettings {
            name: Arc::from("api"),
            account: AccountSource::Json(vec!["username".into()]),
            account_backoff: rules(5),
            ip_backoff: rules(20),
            failure_status: vec![StatusCode::UNAUTHORIZED, StatusCode::FORBIDDEN],
            fail_open: false,
            max_body: 1024,
        };
        let guard = LoginGuard::new(Arc::new(settings), Arc::new(MemoryLoginStore::new(100)));
        let cases = [
            (200, Attempt::Succeeded),
            (204, Attempt::Succeeded),
            (302, Attempt::Succeeded),
            (401, Attempt::Failed),
            (403, Attempt::Failed),
            (400, Attempt::Other),
            (429, Attempt::Other),
            (500, Attempt::Other),
            (502, Attempt::Other),
        ];
        for (status, expected) in cases {
            assert_eq!(guard.classify(StatusCode::from_u16(status).unwrap()), expected, "{status}");
        }
    }
}
