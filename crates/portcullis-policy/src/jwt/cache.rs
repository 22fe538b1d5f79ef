//! A bounded cache of verified tokens, so a client repeating its token does
//! not pay for a signature check on every request.
//!
//! Keyed by the SHA-256 of the whole token (never the token itself), valid
//! until the token's `exp`. A token is only ever inserted after a full
//! verification, and a lookup re-checks expiry against the caller's clock,
//! so the cache can only answer "yes" for a token that verified and has not
//! expired. Deployment caveat: a key removed from the issuer's JWKS (a
//! compromised key) does not evict tokens already verified with it; they stay
//! valid until their `exp` or a configuration reload. Keep token lifetimes
//! short.

use std::time::SystemTime;

use aws_lc_rs::digest;

use crate::principal::Principal;

/// See the module docs.
#[derive(Debug)]
pub struct TokenCache {
    entries: quick_cache::sync::Cache<[u8; 32], (Principal, SystemTime)>,
}

impl TokenCache {
    /// A cache holding at most `capacity` tokens.
    #[must_use]
    pub fn new(capacity: usize) -> Self {
        Self { entries: quick_cache::sync::Cache::new(capacity.max(1)) }
    }

    /// The key of a token.
    #[must_use]
    pub fn key(token: &str) -> [u8; 32] {
        let mut key = [0u8; 32];
        key.copy_from_slice(digest::digest(&digest::SHA256, token.as_bytes()).as_ref());
        key
    }

    /// The principal of a cached, unexpired token.
    #[must_use]
    pub fn get(&self, key: &[u8; 32], now: SystemTime) -> Option<Principal> {
        match self.entries.get(key) {
            Some((principal, expires)) if now < expires => Some(principal),
            Some(_) => {
                self.entries.remove(key);
                None
            }
            None => None,
        }
    }

    /// Remembers a verified token until its expiry. Tokens without `exp`
    /// (only accepted when `exp` is not required) are not cached.
    pub fn insert(&self, key: [u8; 32], principal: &Principal) {
        if let Some(expires) = principal.expires_at {
            self.entries.insert(key, (principal.clone(), expires));
        }
    }

    /// Number of cached tokens.
    #[must_use]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the cache is empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::principal::AuthMethod;

    #[test]
    fn hits_until_expiry_then_forgets() {
        let cache = TokenCache::new(4);
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let mut p = Principal::new("alice", AuthMethod::Jwt, b"t1");
        p.expires_at = Some(now + Duration::from_secs(60));
        let key = TokenCache::key("t1");
        cache.insert(key, &p);
        assert_eq!(cache.get(&key, now).map(|p| p.subject), Some("alice".into()));
        assert!(cache.get(&TokenCache::key("t2"), now).is_none());
        assert!(cache.get(&key, now + Duration::from_secs(60)).is_none());
        assert!(cache.is_empty());
    }

    #[test]
    fn never_caches_tokens_without_expiry_and_stays_bounded() {
        let cache = TokenCache::new(8);
        let p = Principal::new("bob", AuthMethod::Jwt, b"x");
        cache.insert(TokenCache::key("x"), &p);
        assert!(cache.is_empty());
        let now = SystemTime::UNIX_EPOCH;
        for i in 0..100 {
            let mut p = Principal::new(format!("u{i}"), AuthMethod::Jwt, b"x");
            p.expires_at = Some(now + Duration::from_secs(60));
            cache.insert(TokenCache::key(&format!("tok{i}")), &p);
        }
        assert!(cache.len() <= 8, "{}", cache.len());
    }
}
