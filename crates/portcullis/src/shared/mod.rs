//! State shared by every instance of the gateway: the session revocation
//! list here, and with [`RedisState`] the rate-limit and login-protection
//! stores too.
//!
//! Defends against a logged-out (or administratively ended) session cookie
//! being replayed: the cookie itself stays valid until it expires, so its
//! session id is kept here until then and every session check asks.
//!
//! Decision rules:
//! - An entry lives until the session it revokes would have expired anyway;
//!   expired entries are pruned, so the list is bounded by the sessions ended
//!   within one session lifetime.
//! - The in-memory list holds at most its capacity of entries. When it is
//!   full of unexpired entries, a revocation is refused with an error (and
//!   logout still clears the cookie) rather than forgetting an older one.
//! - A lookup that fails is a failure for the caller to fail closed on.
//!
//! Deployment caveat: [`MemoryRevocations`] is per process. With several
//! instances, a session revoked on one is still accepted by the others:
//! configure `[state] shared = "redis://…"` ([`RedisState`]) so every
//! instance sees every revocation.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::Mutex;
use std::time::SystemTime;

use futures_util::future::BoxFuture;

mod redis_bans;
mod redis_login;
mod redis_state;

pub use redis_bans::{SYNC_INTERVAL, SharedBans};
pub use redis_state::{COMMAND_TIMEOUT, RedisState};

/// Why shared state could not be read or written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SharedError {
    /// The store is full of entries that have not expired.
    #[error("the revocation list is full ({0} entries)")]
    Full(usize),
    /// The store could not be reached.
    #[error("shared state unavailable: {0}")]
    Unavailable(String),
}

/// The session revocation list.
pub trait Revocations: Send + Sync + Debug {
    /// Revokes `session_id` until `until` (the session's own expiry).
    fn revoke(&self, session_id: &str, until: SystemTime) -> BoxFuture<'_, Result<(), SharedError>>;
    /// Whether `session_id` is revoked.
    fn is_revoked(&self, session_id: &str) -> BoxFuture<'_, Result<bool, SharedError>>;
}

/// Revocations in this process's memory. See the module docs.
#[derive(Debug)]
pub struct MemoryRevocations {
    capacity: usize,
    entries: Mutex<HashMap<String, SystemTime>>,
}

impl MemoryRevocations {
    /// Default capacity: far more logouts than a single instance sees within
    /// one session lifetime, at about 100 bytes each.
    pub const DEFAULT_CAPACITY: usize = 100_000;

    /// An empty list holding at most `capacity` entries.
    #[must_use]
    pub fn new(capacity: usize) -> Self {
        Self { capacity, entries: Mutex::new(HashMap::new()) }
    }

    /// Revokes `session_id` until `until`, as of `now`.
    ///
    /// # Errors
    /// [`SharedError::Full`] when the list is full of unexpired entries.
    pub fn revoke_at(&self, session_id: &str, until: SystemTime, now: SystemTime) -> Result<(), SharedError> {
        let mut entries = self.entries.lock().map_err(|_| SharedError::Unavailable("poisoned lock".into()))?;
        if until <= now {
            return Ok(());
        }
        if !entries.contains_key(session_id) && entries.len() >= self.capacity {
            entries.retain(|_, expiry| *expiry > now);
            if entries.len() >= self.capacity {
                tracing::warn!(capacity = self.capacity, "session revocation list is full");
                return Err(SharedError::Full(self.capacity));
            }
        }
        let expiry = entries.entry(session_id.to_owned()).or_insert(until);
        *expiry = (*expiry).max(until);
        Ok(())
    }

    /// Whether `session_id` is revoked at `now`.
    ///
    /// # Errors
    /// [`SharedError::Unavailable`] if the lock was poisoned.
    pub fn is_revoked_at(&self, session_id: &str, now: SystemTime) -> Result<bool, SharedError> {
        let entries = self.entries.lock().map_err(|_| SharedError::Unavailable("poisoned lock".into()))?;
        Ok(entries.get(session_id).is_some_and(|expiry| *expiry > now))
    }

    /// Entries held, expired ones included until the next prune.
    #[must_use]
    pub fn len(&self) -> usize {
        self.entries.lock().map_or(0, |e| e.len())
    }

    /// Whether no entry is held.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Default for MemoryRevocations {
    fn default() -> Self {
        Self::new(Self::DEFAULT_CAPACITY)
    }
}

impl Revocations for MemoryRevocations {
    fn revoke(&self, session_id: &str, until: SystemTime) -> BoxFuture<'_, Result<(), SharedError>> {
        let result = self.revoke_at(session_id, until, SystemTime::now());
        Box::pin(async move { result })
    }

    fn is_revoked(&self, session_id: &str) -> BoxFuture<'_, Result<bool, SharedError>> {
        let result = self.is_revoked_at(session_id, SystemTime::now());
        Box::pin(async move { result })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
    }

    #[test]
    fn revoked_until_expiry() {
        let list = MemoryRevocations::new(10);
        list.revoke_at("a", at(100), at(0)).unwrap();
        assert!(list.is_revoked_at("a", at(99)).unwrap());
        assert!(!list.is_revoked_at("a", at(100)).unwrap());
        assert!(!list.is_revoked_at("b", at(0)).unwrap());
        // A later revocation of the same id extends it, an earlier one does not shorten it.
        list.revoke_at("a", at(200), at(0)).unwrap();
        list.revoke_at("a", at(50), at(0)).unwrap();
        assert!(list.is_revoked_at("a", at(150)).unwrap());
        // Already expired: nothing to keep.
        list.revoke_at("old", at(5), at(10)).unwrap();
        assert_eq!(list.len(), 1);
    }

    #[test]
    fn bounded_and_pruned() {
        let list = MemoryRevocations::new(2);
        list.revoke_at("a", at(10), at(0)).unwrap();
        list.revoke_at("b", at(100), at(0)).unwrap();
        assert_eq!(list.revoke_at("c", at(100), at(5)), Err(SharedError::Full(2)));
        // Once "a" has expired it is pruned to make room.
        list.revoke_at("c", at(100), at(20)).unwrap();
        assert_eq!(list.len(), 2);
        assert!(list.is_revoked_at("b", at(20)).unwrap() && list.is_revoked_at("c", at(20)).unwrap());
    }

    #[tokio::test]
    async fn through_the_trait() {
        let list: std::sync::Arc<dyn Revocations> = std::sync::Arc::new(MemoryRevocations::default());
        list.revoke("s", SystemTime::now() + Duration::from_secs(60)).await.unwrap();
        assert!(list.is_revoked("s").await.unwrap());
        assert!(!list.is_revoked("t").await.unwrap());
    }
}
