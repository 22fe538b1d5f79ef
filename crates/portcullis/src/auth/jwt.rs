//! Bearer JWT verification on live requests: the policy crate's verifier
//! with each issuer's keys, JWKS fetching and the verified-token cache.
//!
//! Decision rules beyond `portcullis_policy::jwt`:
//! - A cached token (by SHA-256, until its `exp`) skips verification.
//! - With several issuers, the token's unverified `iss` picks whose keys and
//!   policy to use; the verification then checks `iss` properly.
//! - JWKS keys are fetched at start, again when their `Cache-Control:
//!   max-age` (or `jwks_max_age`) runs out, and when a token names an unknown
//!   `kid` — but then at most once per `jwks_min_refresh`, so random `kid`s
//!   cannot make the gateway hammer the issuer. A failed fetch keeps the
//!   previous keys.
//! - HMAC keys are never taken from a JWKS.
//!
//! Deployment caveat: the JWKS URL is trusted to publish the issuer's keys;
//! serve it over HTTPS (enforced except on loopback).

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use headers::{CacheControl, HeaderMapExt};
use jsonwebtoken::Algorithm;
use portcullis_layers::verify::{AuthFuture, VerifyBearer};
use portcullis_policy::clock::{Clock, SystemClock};
use portcullis_policy::jwt::cache::TokenCache;
use portcullis_policy::jwt::{self, JwtError, JwtPolicy, KeySet, VerificationKey};
use portcullis_policy::principal::fingerprint;
use portcullis_policy::{Denied, Principal, Reason};

use crate::config::auth::{Jwks, JwtIssuer};
use crate::http_client::{HttpClient, HttpClientLimits};

/// Verified tokens remembered across requests.
const CACHE_CAPACITY: usize = 10_000;

/// Longest `max-age` honoured from a JWKS response.
const MAX_JWKS_AGE: Duration = Duration::from_secs(24 * 3600);

/// See the module docs.
#[derive(Debug)]
pub struct JwtVerifier {
    issuers: Vec<Issuer>,
    cache: TokenCache,
    clock: Arc<dyn Clock>,
}

#[derive(Debug)]
struct Issuer {
    policy: JwtPolicy,
    keys: ArcSwap<KeySet>,
    jwks: Option<JwksSource>,
}

#[derive(Debug)]
struct JwksSource {
    config: Jwks,
    client: HttpClient,
    configured: Vec<VerificationKey>,
    /// Asymmetric algorithms only.
    allowed: Vec<Algorithm>,
    state: tokio::sync::Mutex<FetchState>,
}

#[derive(Debug, Default)]
struct FetchState {
    /// The last fetch of any cause (successful or not).
    last_attempt: Option<Instant>,
    /// The last fetch caused by an unknown `kid`.
    last_for_kid: Option<Instant>,
    fresh_until: Option<Instant>,
}

/// Why the verifier could not start.
#[derive(Debug, thiserror::Error)]
#[error("[auth.jwt] {issuer}: {reason}")]
pub struct JwtStartError {
    issuer: String,
    reason: String,
}

impl JwtVerifier {
    /// Builds the verifier and fetches every issuer's JWKS once. An issuer
    /// whose JWKS cannot be fetched yet starts with its configured keys only
    /// (its tokens fail with `jwt.keys_unavailable` until a fetch works).
    ///
    /// # Errors
    /// When an HTTPS client cannot be built (unreadable CA bundle).
    pub async fn start(issuers: &[JwtIssuer]) -> Result<Self, JwtStartError> {
        let mut built = Vec::with_capacity(issuers.len());
        for issuer in issuers {
            let jwks = match &issuer.jwks {
                None => None,
                Some(config) => {
                    let client = HttpClient::new(config.ca.as_deref(), HttpClientLimits::default())
                        .map_err(|e| JwtStartError { issuer: issuer.policy.issuer.clone(), reason: e.to_string() })?;
                    Some(JwksSource {
                        config: config.clone(),
                        client,
                        configured: issuer.keys.clone(),
                        allowed: issuer
                            .algorithms
                            .iter()
                            .copied()
                            .filter(|a| !matches!(a, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512))
                            .collect(),
                        state: tokio::sync::Mutex::new(FetchState::default()),
                    })
                }
            };
            let issuer = Issuer {
                policy: issuer.policy.clone(),
                keys: ArcSwap::from_pointee(KeySet::new(issuer.keys.clone())),
                jwks,
            };
            issuer.refresh(true).await;
            built.push(issuer);
        }
        Ok(Self { issuers: built, cache: TokenCache::new(CACHE_CAPACITY), clock: Arc::new(SystemClock) })
    }

    /// The issuers that have no key to verify with (their JWKS has not been
    /// fetched and none is configured): the admin API's readiness.
    #[must_use]
    pub fn issuers_without_keys(&self) -> Vec<String> {
        self.issuers.iter().filter(|i| i.keys.load().is_empty()).map(|i| i.policy.issuer.clone()).collect()
    }

    /// Replaces the clock (tests).
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Verifies a token; see the module docs.
    ///
    /// # Errors
    /// The denial for the client, carrying the token's fingerprint only.
    pub async fn verify_token(&self, token: &str) -> Result<Principal, Denied> {
        let now = self.clock.now();
        let cache_key = TokenCache::key(token);
        if let Some(principal) = self.cache.get(&cache_key, now) {
            return Ok(principal);
        }
        let print = fingerprint(token.as_bytes());
        let issuer = match self.issuers.as_slice() {
            [only] => only,
            many => {
                let iss = jwt::peek_issuer(token);
                match many.iter().find(|i| Some(&i.policy.issuer) == iss.as_ref()) {
                    Some(issuer) => issuer,
                    None => {
                        // Run the structural checks first so a garbage token
                        // is reported as malformed, not as a wrong issuer.
                        let max = many.iter().map(|i| i.policy.max_token_bytes).max().unwrap_or(0);
                        let error = jwt::parse(token, max).err().unwrap_or(JwtError::WrongIssuer);
                        return Err(error.denied(&print));
                    }
                }
            }
        };
        issuer.refresh(false).await;
        let keys = issuer.keys.load_full();
        let result = match jwt::verify(token, &issuer.policy, &keys, now) {
            // An unknown kid, or a kid no key carries that only a key without
            // id could have matched: the issuer may have rotated.
            Err(error @ (JwtError::UnknownKid | JwtError::BadSignature))
                if issuer.jwks.is_some() && names_unpublished_kid(token, &keys, &issuer.policy, &error) =>
            {
                if issuer.refresh_for_unknown_kid().await {
                    jwt::verify(token, &issuer.policy, &issuer.keys.load_full(), now)
                } else {
                    Err(error)
                }
            }
            other => other,
        };
        match result {
            Ok(verified) => {
                self.cache.insert(cache_key, &verified.principal);
                Ok(verified.principal)
            }
            Err(JwtError::UnknownKid) if keys.is_empty() => Err(Denied::new(Reason::JwtKeysUnavailable)
                .with_detail(format!("no keys for issuer {} (token {print})", issuer.policy.issuer))),
            Err(error) => Err(error.denied(&print)),
        }
    }
}

/// Whether a failed token names a `kid` that no key in `keys` carries.
fn names_unpublished_kid(token: &str, keys: &KeySet, policy: &JwtPolicy, error: &JwtError) -> bool {
    if *error == JwtError::UnknownKid {
        return true;
    }
    jwt::parse(token, policy.max_token_bytes).ok().and_then(|parts| parts.kid).is_some_and(|kid| !keys.has_kid(&kid))
}

impl Issuer {
    /// Refetches the JWKS when its keys are stale (or always, at start).
    async fn refresh(&self, initial: bool) {
        let Some(source) = &self.jwks else { return };
        // A fetch in progress is not waited for while there are keys to use:
        // a slow issuer must not stall every request.
        let mut state = match source.state.try_lock() {
            Ok(state) => state,
            Err(_) if !initial && !self.keys.load().is_empty() => return,
            Err(_) => source.state.lock().await,
        };
        let stale = state.fresh_until.is_none_or(|until| Instant::now() >= until);
        // A stale set is refetched at most once per min_refresh too.
        let throttled = state.last_attempt.is_some_and(|at| at.elapsed() < source.config.min_refresh);
        if initial || (stale && !throttled) {
            self.fetch(source, &mut state).await;
        }
    }

    /// A token named an unknown `kid`: refetch unless one happened recently.
    /// Returns whether new keys were loaded.
    async fn refresh_for_unknown_kid(&self) -> bool {
        let Some(source) = &self.jwks else { return false };
        let mut state = match source.state.try_lock() {
            Ok(state) => state,
            Err(_) if !self.keys.load().is_empty() => return false,
            Err(_) => source.state.lock().await,
        };
        // Throttled against earlier kid-caused fetches only: a rotation right
        // after start must still be picked up.
        if state.last_for_kid.is_some_and(|at| at.elapsed() < source.config.min_refresh) {
            return false;
        }
        state.last_for_kid = Some(Instant::now());
        self.fetch(source, &mut state).await
    }

    async fn fetch(&self, source: &JwksSource, state: &mut FetchState) -> bool {
        state.last_attempt = Some(Instant::now());
        let url = &source.config.url;
        let (status, headers, body) = match source.client.get(url).await {
            Ok(answer) => answer,
            Err(e) => {
                tracing::warn!(issuer = %self.policy.issuer, error = %e, "JWKS fetch failed; keeping the previous keys");
                return false;
            }
        };
        if !status.is_success() {
            tracing::warn!(issuer = %self.policy.issuer, %url, %status, "JWKS fetch answered an error; keeping the previous keys");
            return false;
        }
        match KeySet::from_jwks(&body, &source.allowed) {
            Ok((mut keys, skipped)) => {
                for reason in skipped {
                    tracing::debug!(issuer = %self.policy.issuer, key = %reason, "JWKS key not used");
                }
                let fetched = keys.len();
                keys.extend(source.configured.iter().cloned());
                self.keys.store(Arc::new(keys));
                let max_age = headers
                    .typed_get::<CacheControl>()
                    .and_then(|cc| if cc.no_store() || cc.no_cache() { Some(Duration::ZERO) } else { cc.max_age() })
                    .unwrap_or(source.config.max_age)
                    .max(source.config.min_refresh)
                    .min(MAX_JWKS_AGE);
                state.fresh_until = Some(Instant::now() + max_age);
                tracing::info!(issuer = %self.policy.issuer, keys = fetched, max_age = ?max_age, "JWKS loaded");
                true
            }
            Err(e) => {
                tracing::warn!(issuer = %self.policy.issuer, error = %e, "JWKS unusable; keeping the previous keys");
                false
            }
        }
    }
}

/// The verifier as the authentication layer uses it.
#[derive(Debug, Clone)]
pub struct Bearer(pub Arc<JwtVerifier>);

impl VerifyBearer for Bearer {
    fn verify(&self, token: &str) -> AuthFuture {
        let verifier = self.0.clone();
        let token = token.to_owned();
        Box::pin(async move { verifier.verify_token(&token).await })
    }
}
