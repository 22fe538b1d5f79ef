//! State the defences count in, shared by rate limits, ban rules and login
//! protection: the GCRA store ([`LimitStore`], in memory as [`MemoryStore`]
//! or in Redis in the binary crate), the error of a store that cannot answer,
//! and the key, shard and clock helpers every store uses.
//!
//! Rules:
//! - A client is keyed by its address group ([`ip_key`]): an IPv4 address,
//!   or an IPv6 /64 (one host usually owns a whole /64).
//! - Time is Unix nanoseconds from the caller; a shared store may use its own
//!   clock instead, so instances agree.
//! - A store that cannot answer says so ([`StoreUnavailable`]); each caller
//!   decides whether that fails open or closed.

use portcullis_policy::clock::{Clock, SystemClock};
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::{Mutex, PoisonError};

use futures_util::future::BoxFuture;
use portcullis_policy::rate_limit::{Gcra, Outcome};

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

/// Unix nanoseconds now, from the system clock (`portcullis_policy::clock`).
#[must_use]
pub fn unix_nanos() -> u64 {
    SystemClock.unix_nanos()
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
    clock: Arc<dyn Clock>,
}

/// Shards of the in-memory stores.
pub(crate) const SHARDS: usize = 16;

impl MemoryStore {
    /// A store for about `capacity` active keys.
    #[must_use]
    pub fn new(capacity: usize) -> Self {
        Self::with_clock(capacity, Arc::new(SystemClock))
    }

    /// With another clock (tests).
    #[must_use]
    pub fn with_clock(capacity: usize, clock: Arc<dyn Clock>) -> Self {
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

/// The shard of `key` among [`SHARDS`]: the in-memory stores (limits and
/// login standings) lock one shard at a time.
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
        let now = self.clock.unix_nanos();
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
        let store =
            MemoryStore::with_clock(64 * SHARDS, Arc::new(portcullis_policy::clock::FixedClock(std::time::UNIX_EPOCH)));
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
