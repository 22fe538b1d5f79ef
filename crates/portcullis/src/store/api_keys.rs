//! API keys for machine clients: created by `portcullis apikey create`, shown
//! once, kept in the store only as a hash.
//!
//! Defends against: a leaked database or backup giving away usable keys (only
//! hashes are stored), guessing (256 random bits per key), a stolen key staying
//! usable (revocation and expiry), keys in logs (events carry a fingerprint
//! and the public id, never the key).
//!
//! Decision rules:
//! - A key reads `pcl_<id>_<secret>`: `pcl_` so the gateway (and secret
//!   scanners) recognise it, a 16-hex-digit random public `id` to find its row,
//!   and 32 random bytes of `secret` in unpadded URL-safe base64.
//! - Anything else carrying the prefix is `apikey.malformed`; an id not in the
//!   store, or a secret whose hash differs from the stored one, is
//!   `apikey.unknown`; then `apikey.revoked`, then `apikey.expired`. A store
//!   that cannot answer is `apikey.store_unavailable` (503), never a pass.
//! - The stored hash is SHA-256 of the whole key, compared in constant time.
//!   A fast hash is right here: the secret is 256 uniformly random bits, so
//!   there is no dictionary to try and brute force is 2^256 hashes whatever
//!   the hash costs. Slow, salted hashes (argon2) exist for passwords, which
//!   people choose from small guessable spaces; for a random key they would
//!   only make every request slower.
//! - Verified keys are cached in memory (bounded, keyed by the key's SHA-256)
//!   for `cache_ttl`, and never past the key's own expiry.
//!
//! Deployment caveat: a cached key stays usable for up to `cache_ttl` after it
//! is revoked (default 10 s), on each gateway instance. Set `cache_ttl = "0s"`
//! to ask the store on every request.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_lc_rs::{constant_time, digest, rand};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use portcullis_layers::verify::{AuthFuture, VerifyApiKey};
pub use portcullis_policy::clock::{Clock, SystemClock};
use portcullis_policy::{AuthMethod, Denied, Principal, Reason};

use super::{Store, StoreError, from_unix, hex, sha256_hex, unix, with_pool};

/// Every key starts with this.
pub const PREFIX: &str = "pcl_";
/// Random bytes in a key's public id (16 hex digits).
const ID_BYTES: usize = 8;
/// Random bytes in a key's secret (43 base64 characters).
const SECRET_BYTES: usize = 32;
const ID_LEN: usize = ID_BYTES * 2;
const SECRET_LEN: usize = (SECRET_BYTES * 4).div_ceil(3);
/// Verified keys kept in memory per gateway instance.
const CACHE_CAPACITY: usize = 10_000;
/// The issuer of API key principals.
const ISSUER: &str = "portcullis";
const MAX_NAME_CHARS: usize = 100;
const MAX_ROLE_CHARS: usize = 64;

/// A key in clear, as handed out once by [`Store::create_api_key`]. Its
/// `Debug` does not show it.
pub struct PlaintextKey(String);

impl PlaintextKey {
    /// The key, to show the operator once.
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for PlaintextKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PlaintextKey(***)")
    }
}

/// What the store knows about a key, minus its hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyInfo {
    /// The public id (the part after `pcl_`).
    pub id: String,
    /// The operator's label.
    pub name: String,
    /// Roles its callers get.
    pub roles: Vec<String>,
    /// When it was created (whole seconds).
    pub created_at: SystemTime,
    /// When it stops working, if ever.
    pub expires_at: Option<SystemTime>,
    /// When it was revoked, if it was.
    pub revoked_at: Option<SystemTime>,
    /// When the store last verified it (cache hits do not count).
    pub last_used_at: Option<SystemTime>,
}

impl ApiKeyInfo {
    /// The principal subject for this key: `apikey:<id>`.
    #[must_use]
    pub fn subject(&self) -> String {
        format!("apikey:{}", self.id)
    }
}

/// A failed key management operation.
#[derive(Debug, thiserror::Error)]
pub enum ApiKeyError {
    /// The name is empty, too long or has control characters.
    #[error("invalid key name: {0}")]
    InvalidName(&'static str),
    /// A role has characters outside `A-Z a-z 0-9 . _ : / -` or is too long.
    #[error("invalid role {0:?}: use 1 to 64 of A-Z a-z 0-9 . _ : / -")]
    InvalidRole(String),
    /// The expiry is not in the future.
    #[error("the expiry must be in the future")]
    InvalidExpiry,
    /// No key has this id.
    #[error("no API key with id {0:?}")]
    Unknown(String),
    /// The system's random generator failed.
    #[error("the system random generator failed")]
    Random,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why a presented key was refused.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// Has the prefix but not the shape of a key.
    #[error("malformed key: {0}")]
    Malformed(&'static str),
    /// Well formed, but no key has this id.
    #[error("no key with id {0}")]
    Unknown(String),
    /// The id exists but the secret does not match: a guess or a corrupted key.
    #[error("the secret does not match key {0}")]
    Mismatch(String),
    /// Revoked.
    #[error("key {0} is revoked")]
    Revoked(String),
    /// Past its expiry.
    #[error("key {0} has expired")]
    Expired(String),
    /// The store could not answer.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl VerifyError {
    /// The denial the client gets. Store failures are logged here (once per
    /// failed request) since the client only sees a 503.
    #[must_use]
    pub fn into_denied(self) -> Denied {
        let reason = match &self {
            Self::Malformed(_) => Reason::ApiKeyMalformed,
            Self::Unknown(_) | Self::Mismatch(_) => Reason::ApiKeyUnknown,
            Self::Revoked(_) => Reason::ApiKeyRevoked,
            Self::Expired(_) => Reason::ApiKeyExpired,
            Self::Store(e) => {
                tracing::error!(error = %e, "API key store unavailable");
                Reason::ApiKeyStoreUnavailable
            }
        };
        // Every message names at most the public id, never the key.
        Denied::new(reason).with_detail(self.to_string())
    }
}

/// The outcome of a revocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revoked {
    /// Revoked by this call.
    Now,
    /// Already revoked at that time; nothing changed.
    Already(SystemTime),
}

/// `(id, name, roles, created_at, expires_at, revoked_at, last_used_at)`.
type InfoRow = (String, String, String, i64, Option<i64>, Option<i64>, Option<i64>);
/// An [`InfoRow`] with the hash first.
type HashedRow = (String, String, String, String, i64, Option<i64>, Option<i64>, Option<i64>);

const INSERT: &str =
    "INSERT INTO api_keys (id, name, hash, roles, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6)";
const SELECT_ALL: &str = "SELECT id, name, roles, created_at, expires_at, revoked_at, last_used_at \
                          FROM api_keys ORDER BY created_at, id";
const SELECT_FOR_VERIFY: &str = "SELECT hash, id, name, roles, created_at, expires_at, revoked_at, last_used_at \
                                 FROM api_keys WHERE id = $1";
const REVOKE: &str = "UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL";
const SELECT_REVOKED_AT: &str = "SELECT revoked_at FROM api_keys WHERE id = $1";
const TOUCH: &str = "UPDATE api_keys SET last_used_at = $1 WHERE id = $2";

impl Store {
    /// Creates a key and returns it in clear: the only time it exists outside
    /// the caller's hands. Roles are deduplicated, in order.
    ///
    /// # Errors
    /// An invalid name, role or expiry, a random generator failure, or a store
    /// failure.
    pub async fn create_api_key(
        &self,
        name: &str,
        roles: &[String],
        expires_at: Option<SystemTime>,
    ) -> Result<(ApiKeyInfo, PlaintextKey), ApiKeyError> {
        validate_name(name)?;
        let roles = validate_roles(roles)?;
        let created_at = SystemTime::now();
        if expires_at.is_some_and(|at| at <= created_at) {
            return Err(ApiKeyError::InvalidExpiry);
        }
        let roles_json = serde_json::to_string(&roles).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        // Two 64-bit ids colliding is as likely as not only after four billion
        // keys; still, a collision is retried rather than reported.
        let mut attempts = 0;
        loop {
            attempts += 1;
            let id = hex(&random::<ID_BYTES>()?);
            let key = format!("{PREFIX}{id}_{}", URL_SAFE_NO_PAD.encode(random::<SECRET_BYTES>()?));
            let inserted = with_pool!(self, |pool| {
                sqlx::query(INSERT)
                    .bind(&id)
                    .bind(name)
                    .bind(hash(&key))
                    .bind(&roles_json)
                    .bind(unix(created_at))
                    .bind(expires_at.map(unix))
                    .execute(pool)
                    .await
                    .map(drop)
            });
            match inserted {
                Ok(_) => {
                    let info = ApiKeyInfo {
                        id,
                        name: name.to_owned(),
                        roles,
                        created_at: from_unix(unix(created_at)),
                        expires_at: expires_at.map(|at| from_unix(unix(at))),
                        revoked_at: None,
                        last_used_at: None,
                    };
                    return Ok((info, PlaintextKey(key)));
                }
                Err(sqlx::Error::Database(e)) if e.is_unique_violation() && attempts < 3 => {}
                Err(e) => return Err(StoreError::Query(e).into()),
            }
        }
    }

    /// Every key, oldest first: never a secret or a hash.
    ///
    /// # Errors
    /// A store failure.
    pub async fn list_api_keys(&self) -> Result<Vec<ApiKeyInfo>, StoreError> {
        let rows: Vec<InfoRow> =
            with_pool!(self, |pool| sqlx::query_as(SELECT_ALL).fetch_all(pool).await.map_err(StoreError::Query))?;
        rows.into_iter().map(info).collect()
    }

    /// Revokes the key `id`. Revoking a revoked key changes nothing and
    /// reports when it was revoked.
    ///
    /// # Errors
    /// [`ApiKeyError::Unknown`] when no key has this id, or a store failure.
    pub async fn revoke_api_key(&self, id: &str) -> Result<Revoked, ApiKeyError> {
        let now = unix(SystemTime::now());
        let changed = with_pool!(self, |pool| {
            sqlx::query(REVOKE).bind(now).bind(id).execute(pool).await.map(|r| r.rows_affected())
        })
        .map_err(StoreError::Query)?;
        if changed > 0 {
            return Ok(Revoked::Now);
        }
        let row: Option<(Option<i64>,)> = with_pool!(self, |pool| {
            sqlx::query_as(SELECT_REVOKED_AT).bind(id).fetch_optional(pool).await.map_err(StoreError::Query)
        })?;
        match row {
            Some((Some(at),)) => Ok(Revoked::Already(from_unix(at))),
            // Not revoked, yet the update matched nothing: the row went away in between.
            Some((None,)) | None => Err(ApiKeyError::Unknown(id.to_owned())),
        }
    }

    /// Checks a presented key against the store as of `now`.
    ///
    /// # Errors
    /// Why the key is refused, or a store failure.
    pub async fn verify_api_key(&self, key: &str, now: SystemTime) -> Result<ApiKeyInfo, VerifyError> {
        let key_id = parse(key)?;
        let row: Option<HashedRow> = with_pool!(self, |pool| {
            sqlx::query_as(SELECT_FOR_VERIFY).bind(key_id).fetch_optional(pool).await.map_err(StoreError::Query)
        })?;
        // An unknown id answers sooner than a wrong secret; the id is public,
        // so the timing tells an attacker nothing they did not send.
        let Some((stored, id, name, roles, created, expires, revoked, used)) = row else {
            return Err(VerifyError::Unknown(key_id.to_owned()));
        };
        if constant_time::verify_slices_are_equal(hash(key).as_bytes(), stored.as_bytes()).is_err() {
            return Err(VerifyError::Mismatch(id));
        }
        let info = info((id, name, roles, created, expires, revoked, used))?;
        if info.revoked_at.is_some() {
            return Err(VerifyError::Revoked(info.id));
        }
        if info.expires_at.is_some_and(|at| now >= at) {
            return Err(VerifyError::Expired(info.id));
        }
        Ok(info)
    }

    /// Records that `id` was just verified (for `apikey list`).
    async fn touch_api_key(&self, id: &str, now: SystemTime) -> Result<(), StoreError> {
        with_pool!(self, |pool| sqlx::query(TOUCH).bind(unix(now)).bind(id).execute(pool).await.map(drop))?;
        Ok(())
    }
}

/// The id of a well-formed key.
fn parse(key: &str) -> Result<&str, VerifyError> {
    let rest = key.strip_prefix(PREFIX).ok_or(VerifyError::Malformed("no pcl_ prefix"))?;
    // The id is hex, so the first `_` ends it; the secret may contain more.
    let (id, secret) = rest.split_once('_').ok_or(VerifyError::Malformed("no id"))?;
    if id.len() != ID_LEN || !id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(VerifyError::Malformed("the id is not 16 lowercase hex digits"));
    }
    if secret.len() != SECRET_LEN || !secret.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
        return Err(VerifyError::Malformed("the secret is not 43 URL-safe base64 characters"));
    }
    Ok(id)
}

fn validate_name(name: &str) -> Result<(), ApiKeyError> {
    if name.trim().is_empty() {
        return Err(ApiKeyError::InvalidName("it is empty"));
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(ApiKeyError::InvalidName("it is longer than 100 characters"));
    }
    if name.chars().any(char::is_control) {
        return Err(ApiKeyError::InvalidName("it has control characters"));
    }
    Ok(())
}

/// Roles travel upstream in a header and into events, so they are kept to a
/// plain alphabet with no separators.
fn validate_roles(roles: &[String]) -> Result<Vec<String>, ApiKeyError> {
    let mut out: Vec<String> = Vec::with_capacity(roles.len());
    for role in roles {
        let valid = role.len() <= MAX_ROLE_CHARS && portcullis_policy::principal::is_valid_name(role);
        if !valid {
            return Err(ApiKeyError::InvalidRole(role.clone()));
        }
        if !out.contains(role) {
            out.push(role.clone());
        }
    }
    Ok(out)
}

fn info(row: InfoRow) -> Result<ApiKeyInfo, StoreError> {
    let (id, name, roles, created, expires, revoked, used) = row;
    let roles = serde_json::from_str(&roles).map_err(|e| StoreError::Corrupt(format!("roles of key {id}: {e}")))?;
    Ok(ApiKeyInfo {
        id,
        name,
        roles,
        created_at: from_unix(created),
        expires_at: expires.map(from_unix),
        revoked_at: revoked.map(from_unix),
        last_used_at: used.map(from_unix),
    })
}

fn random<const N: usize>() -> Result<[u8; N], ApiKeyError> {
    let mut bytes = [0; N];
    rand::fill(&mut bytes).map_err(|_| ApiKeyError::Random)?;
    Ok(bytes)
}

/// The stored form of a key: SHA-256 of all of it, in lowercase hex.
fn hash(key: &str) -> String {
    sha256_hex(key)
}

/// Verifies API keys for the authentication layer, with a small cache of
/// positive answers in front of the store.
#[derive(Debug, Clone)]
pub struct ApiKeyVerifier {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    cache_ttl: Duration,
    /// Keyed by the key's SHA-256, so memory holds no usable key.
    cache: quick_cache::sync::Cache<[u8; 32], Cached>,
    clock: Arc<dyn Clock>,
}

impl fmt::Debug for Inner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKeyVerifier")
            .field("store", &self.store.kind())
            .field("cache_ttl", &self.cache_ttl)
            .field("cached", &self.cache.len())
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone)]
struct Cached {
    principal: Principal,
    verified_at: SystemTime,
}

impl ApiKeyVerifier {
    /// A verifier asking `store`, trusting each positive answer for
    /// `cache_ttl` (zero: ask on every request).
    #[must_use]
    pub fn new(store: Store, cache_ttl: Duration) -> Self {
        Self::with_clock(store, cache_ttl, Arc::new(SystemClock))
    }

    /// [`ApiKeyVerifier::new`] with another clock (tests).
    #[must_use]
    pub fn with_clock(store: Store, cache_ttl: Duration, clock: Arc<dyn Clock>) -> Self {
        let cache = quick_cache::sync::Cache::new(CACHE_CAPACITY);
        Self { inner: Arc::new(Inner { store, cache_ttl, cache, clock }) }
    }
}

impl Inner {
    async fn verify(&self, key: &str) -> Result<Principal, VerifyError> {
        let now = self.clock.now();
        let mut digest = [0; 32];
        digest.copy_from_slice(digest::digest(&digest::SHA256, key.as_bytes()).as_ref());
        if let Some(hit) = self.cache.get(&digest) {
            let fresh = now.duration_since(hit.verified_at).is_ok_and(|age| age < self.cache_ttl);
            let alive = hit.principal.expires_at.is_none_or(|at| now < at);
            if fresh && alive {
                return Ok(hit.principal);
            }
            self.cache.remove(&digest);
        }
        let info = self.store.verify_api_key(key, now).await?;
        if let Err(e) = self.store.touch_api_key(&info.id, now).await {
            // Only bookkeeping: the key was verified.
            tracing::warn!(error = %e, key_id = %info.id, "cannot record an API key's last use");
        }
        let mut principal = Principal::new(info.subject(), AuthMethod::ApiKey, key.as_bytes());
        principal.issuer = Some(ISSUER.to_owned());
        principal.roles = info.roles;
        principal.expires_at = info.expires_at;
        if !self.cache_ttl.is_zero() {
            self.cache.insert(digest, Cached { principal: principal.clone(), verified_at: now });
        }
        Ok(principal)
    }
}

impl VerifyApiKey for ApiKeyVerifier {
    fn recognises(&self, credential: &str) -> bool {
        credential.starts_with(PREFIX)
    }

    fn verify(&self, key: &str) -> AuthFuture {
        let inner = self.inner.clone();
        let key = key.to_owned();
        Box::pin(async move { inner.verify(&key).await.map_err(VerifyError::into_denied) })
    }
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use super::*;

    #[test]
    fn key_shapes() {
        let secret = "A".repeat(SECRET_LEN);
        let good = format!("pcl_0123456789abcdef_{secret}");
        assert_eq!(parse(&good).ok(), Some("0123456789abcdef"));
        let with_underscores = format!("pcl_0123456789abcdef__{}", "-".repeat(SECRET_LEN - 1));
        assert!(parse(&with_underscores).is_ok());
        for bad in [
            String::new(),
            "pcl_".into(),
            format!("pcx_0123456789abcdef_{secret}"),
            format!("pcl_0123456789ABCDEF_{secret}"),
            format!("pcl_0123456789abcde_{secret}"),
            format!("pcl_0123456789abcdef_{secret}A"),
            format!("pcl_0123456789abcdef_{}", "A+".repeat(SECRET_LEN / 2 + 1)[..SECRET_LEN].to_owned()),
            "pcl_0123456789abcdef".into(),
        ] {
            assert!(matches!(parse(&bad), Err(VerifyError::Malformed(_))), "{bad:?}");
        }
    }

    #[test]
    fn names_and_roles() {
        assert!(validate_name("ci deploy").is_ok());
        for bad in ["", "  ", "a\nb", &"x".repeat(101)] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
        let roles = |r: &[&str]| validate_roles(&r.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>());
        assert_eq!(roles(&["ops", "billing:read", "ops"]).ok(), Some(vec!["ops".into(), "billing:read".into()]));
        for bad in ["", "a b", "a,b", "ünï", &"r".repeat(65)] {
            assert!(roles(&[bad]).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn hashes_are_lowercase_hex_sha256() {
        assert_eq!(hash("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert_eq!(from_unix(unix(UNIX_EPOCH + Duration::from_secs(42))), UNIX_EPOCH + Duration::from_secs(42));
    }

    #[test]
    fn plaintext_keys_do_not_debug_print() {
        assert_eq!(format!("{:?}", PlaintextKey("pcl_secret".into())), "PlaintextKey(***)");
    }
}
