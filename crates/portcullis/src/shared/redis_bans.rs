//! The ban list shared through Redis: every instance refuses every banned
//! client, whichever instance banned it, and `portcullis ban lift` on any
//! instance lifts it everywhere.
//!
//! Decision rules:
//! - Lookups never wait on Redis: each instance keeps the list in memory
//!   ([`LocalBans`]) and refreshes it every [`SYNC_INTERVAL`] when the
//!   list's version counter has moved — so a ban or lift made elsewhere takes
//!   effect here within about a second, and an idle fleet costs one `GET` per
//!   instance per second.
//! - A ban made here applies here at once, even when Redis is down; it
//!   reaches Redis (and the other instances) at the first sync that can
//!   write it. A lift made while Redis is down fails with an error rather
//!   than pretending.
//! - Bans are one hash (`bans`: target → `rule|since_ms|until_ms`) plus a
//!   version counter (`bans:v`); expired entries are removed by whichever
//!   instance reads them first.

use std::net::IpAddr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::future::BoxFuture;
use portcullis_layers::ban::{Ban, BanHit, BanStore, LocalBans, unix_millis};
use portcullis_layers::store::StoreUnavailable;
use tokio::sync::watch;

use super::RedisState;

/// How often each instance looks for bans made or lifted elsewhere.
pub const SYNC_INTERVAL: Duration = Duration::from_secs(1);

const BANS: &str = "bans";
const VERSION: &str = "bans:v";

/// Adds a ban unless a longer one is in place; bumps the version.
const ADD_SCRIPT: &str = r"
local current = redis.call('HGET', KEYS[1], ARGV[1])
if current then
  local until_ms = tonumber(string.match(current, '|(%d+)$'))
  if until_ms and until_ms >= tonumber(ARGV[3]) then return 0 end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. '|' .. ARGV[4] .. '|' .. ARGV[3])
redis.call('INCR', KEYS[2])
return 1
";

/// See the module docs.
#[derive(Debug)]
pub struct SharedBans {
    local: LocalBans,
    redis: Arc<RedisState>,
    add: redis::Script,
    /// The version of the list `local` holds; -1 before the first sync.
    version: AtomicI64,
    /// Bans made here that have not reached Redis yet.
    pending: Mutex<Vec<Ban>>,
}

/// The field and value `ADD_SCRIPT` writes.
#[cfg(test)]
fn encode(ban: &Ban) -> (String, String) {
    (ban.target_text(), format!("{}|{}|{}", ban.rule, ban.since_ms, ban.until_ms))
}

fn decode(target: &str, value: &str) -> Option<Ban> {
    let mut parts = value.rsplitn(3, '|');
    let until_ms = parts.next()?.parse().ok()?;
    let since_ms = parts.next()?.parse().ok()?;
    let rule = parts.next()?.to_owned();
    let ip: IpAddr = target.strip_suffix("/64").unwrap_or(target).parse().ok()?;
    Some(Ban { target: portcullis_policy::forwarded::client_group(ip), rule, since_ms, until_ms })
}

impl SharedBans {
    /// Bans kept in `redis`, with an empty local view until [`Self::sync`].
    #[must_use]
    pub fn new(redis: Arc<RedisState>) -> Self {
        Self {
            local: LocalBans::default(),
            redis,
            add: redis::Script::new(ADD_SCRIPT),
            version: AtomicI64::new(-1),
            pending: Mutex::new(Vec::new()),
        }
    }

    /// Reads the whole list, removing expired entries from Redis.
    async fn read(&self) -> Result<Vec<Ban>, StoreUnavailable> {
        let entries: Vec<(String, String)> =
            self.redis.run(redis::cmd("HGETALL").arg(BANS)).await.map_err(StoreUnavailable::from)?;
        let now = unix_millis();
        let mut live = Vec::with_capacity(entries.len());
        let mut dead = Vec::new();
        for (target, value) in entries {
            match decode(&target, &value) {
                Some(ban) if ban.until_ms > now => live.push(ban),
                _ => dead.push(target),
            }
        }
        if !dead.is_empty() {
            // Another instance may have just re-banned one of these: only a
            // field still holding the dead value would matter, and it expired.
            let _: Result<i64, _> = self.redis.run(redis::cmd("HDEL").arg(BANS).arg(&dead)).await;
        }
        Ok(live)
    }

    /// Refreshes the local view if the shared list changed.
    ///
    /// # Errors
    /// [`StoreUnavailable`] when Redis does not answer (the local view stays).
    pub async fn sync(&self) -> Result<(), StoreUnavailable> {
        // Bans made while Redis was down go first, so the read below keeps them.
        let pending = std::mem::take(&mut *self.pending.lock().unwrap_or_else(PoisonError::into_inner));
        let now = unix_millis();
        for (i, ban) in pending.iter().enumerate() {
            if ban.until_ms > now
                && let Err(e) = self.share(ban).await
            {
                self.pending.lock().unwrap_or_else(PoisonError::into_inner).extend(pending[i..].iter().cloned());
                return Err(e);
            }
        }
        let version: Option<i64> =
            self.redis.run(redis::cmd("GET").arg(VERSION)).await.map_err(StoreUnavailable::from)?;
        let version = version.unwrap_or(0);
        if version == self.version.load(Ordering::Relaxed) {
            return Ok(());
        }
        let bans = self.read().await?;
        self.local.replace(&bans);
        self.version.store(version, Ordering::Relaxed);
        Ok(())
    }

    /// Writes one ban to Redis.
    async fn share(&self, ban: &Ban) -> Result<(), StoreUnavailable> {
        let mut invocation = self.add.key(BANS);
        invocation.key(VERSION).arg(ban.target_text()).arg(ban.rule.as_str()).arg(ban.until_ms).arg(ban.since_ms);
        self.redis.invoke::<i64>(&invocation).await.map(drop).map_err(StoreUnavailable::from)
    }

    /// Syncs every [`SYNC_INTERVAL`] until `shutdown` fires.
    pub async fn run_sync(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut failing = false;
        loop {
            match self.sync().await {
                Ok(()) if failing => {
                    tracing::info!("ban list synchronised with Redis again");
                    failing = false;
                }
                Ok(()) => {}
                Err(e) if !failing => {
                    tracing::warn!(error = %e, "cannot read the shared ban list; enforcing the last one read");
                    failing = true;
                }
                Err(_) => {}
            }
            tokio::select! {
                _ = shutdown.changed() => return,
                () = tokio::time::sleep(SYNC_INTERVAL) => {}
            }
        }
    }
}

impl BanStore for SharedBans {
    fn banned(&self, ip: IpAddr, now_ms: u64) -> Option<BanHit> {
        self.local.lookup(ip, now_ms)
    }

    fn add(&self, ban: Ban) -> BoxFuture<'_, Result<(), StoreUnavailable>> {
        Box::pin(async move {
            self.local.insert(&ban, unix_millis());
            let shared = self.share(&ban).await;
            if shared.is_err() {
                // Enforced here already; shared at the next sync that reaches Redis.
                self.pending.lock().unwrap_or_else(PoisonError::into_inner).push(ban);
            }
            shared
        })
    }

    fn lift(&self, ip: IpAddr) -> BoxFuture<'_, Result<bool, StoreUnavailable>> {
        Box::pin(async move {
            let target = portcullis_layers::store::ip_key(ip);
            let mut pipe = redis::pipe();
            pipe.atomic().cmd("HDEL").arg(BANS).arg(&target).cmd("INCR").arg(VERSION).ignore();
            let (removed,): (i64,) = self.redis.run_pipe(&pipe).await.map_err(StoreUnavailable::from)?;
            let here = self.local.remove(ip);
            Ok(removed > 0 || here)
        })
    }

    fn list(&self) -> BoxFuture<'_, Result<Vec<Ban>, StoreUnavailable>> {
        Box::pin(async move {
            let mut bans = self.read().await?;
            bans.sort_by(|a, b| b.until_ms.cmp(&a.until_ms).then(a.target.cmp(&b.target)));
            Ok(bans)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip() {
        let ban = Ban { target: "2001:db8:1:2::".parse().unwrap(), rule: "a|b".into(), since_ms: 5, until_ms: 9 };
        let (target, value) = encode(&ban);
        assert_eq!(target, "2001:db8:1:2::/64");
        assert_eq!(decode(&target, &value), Some(ban));
        assert_eq!(decode("10.0.0.1", "r|1"), None);
        assert_eq!(decode("nonsense", "r|1|2"), None);
    }
}
