//! Shared state in Redis (`[state] shared = "redis://…"`): the rate-limit
//! store and the session revocation list, seen alike by every instance (the
//! login-protection store is in `redis_login.rs`).
//!
//! Decision rules:
//! - A limit check is one round trip: an atomic Lua script (EVALSHA, loaded
//!   on first use or after a Redis restart) runs exactly the arithmetic of
//!   [`Gcra::apply`] on the key's stored TAT. The clock is Redis's `TIME`, so
//!   instances with skewed clocks still agree; the `now` argument of
//!   [`LimitStore::check`] is ignored.
//! - The TAT is stored as `seconds:nanoseconds` (absolute nanoseconds exceed
//!   the 53 exact bits of a Lua number) and expires when it falls behind the
//!   clock (at most `burst·T` ahead), after which a missing key means the same
//!   as a stale one: idle keys cost nothing. Differences from `now` are exact
//!   up to 2^53 ns (104 days); a longer window is refused as unavailable.
//! - Every command has a short deadline ([`COMMAND_TIMEOUT`]): a hung or
//!   unreachable Redis answers [`StoreUnavailable`] / [`SharedError::Unavailable`]
//!   quickly, and each limit then fails open or closed as configured (a
//!   revocation lookup that fails is failed closed by its caller).
//! - The connection is lazy and reconnects by itself: a gateway whose Redis
//!   is down at start still starts (with a warning), and enforcement resumes
//!   when Redis comes back, without a restart or reload.
//! - Revocations are `rev:<session id>` keys expiring with the session; a
//!   later revocation of the same id extends it, an earlier one never shortens it.
//!
//! Deployment caveat: Redis holds the limits and revocations of every instance.
//! Keep it on a private network (no TLS yet) with a password; failover to a
//! replica may lose the last writes (a few requests over quota, a revocation
//! forgotten until the session's own expiry).

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::future::BoxFuture;
use portcullis_layers::store::{LimitStore, StoreUnavailable};
use portcullis_policy::rate_limit::{Gcra, Outcome};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::{Revocations, SharedError};

/// The deadline of every Redis command, connection included: far above a
/// healthy round trip on a private network, short enough that a hung Redis
/// adds little latency before limits fail open or closed.
pub const COMMAND_TIMEOUT: Duration = Duration::from_millis(100);

/// A Redis command that did not succeed. Names the server as shown in logs
/// (its URL without the password), never the password.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The server answered with an error, or the connection failed.
    #[error("Redis {server}: {source}")]
    Failed {
        /// The server, redacted.
        server: String,
        /// Cause.
        source: redis::RedisError,
    },
    /// No answer within [`COMMAND_TIMEOUT`].
    #[error("Redis {server} did not answer within {COMMAND_TIMEOUT:?}")]
    Timeout {
        /// The server, redacted.
        server: String,
    },
}

impl From<CommandError> for SharedError {
    fn from(e: CommandError) -> Self {
        Self::Unavailable(e.to_string())
    }
}

impl From<CommandError> for StoreUnavailable {
    fn from(e: CommandError) -> Self {
        Self(e.to_string())
    }
}

/// The largest window the script computes exactly (2^53 ns).
const MAX_EXACT_NANOS: u64 = 1 << 53;

/// GCRA, as in `portcullis_policy::rate_limit::Gcra::apply`, on Redis's clock.
/// KEYS[1]: the limit key. ARGV[1]: T (ns). ARGV[2]: burst·T (ns).
/// Returns {allowed, remaining, reset ns, retry-after ns, "s:ns" TAT}.
const GCRA_SCRIPT: &str = r"
local t = tonumber(ARGV[1])
local w = tonumber(ARGV[2])
local clock = redis.call('TIME')
local now_s = tonumber(clock[1])
local now_ns = tonumber(clock[2]) * 1000
-- d: the stored TAT minus now (0 when absent or past), exact in a double.
local d = 0
local stored = redis.call('GET', KEYS[1])
if stored then
  local s, ns = string.match(stored, '^(%d+):(%d+)$')
  if s then
    d = (tonumber(s) - now_s) * 1000000000 + (tonumber(ns) - now_ns)
    if d < 0 then d = 0 end
  end
end
local function at(rel)
  local ns = now_ns + rel
  local carry = math.floor(ns / 1000000000)
  return string.format('%d:%09d', now_s + carry, ns - carry * 1000000000)
end
local new_d = d + t
local allow_in = new_d - w
if allow_in > 0 then
  return {0, 0, d, allow_in, at(d)}
end
redis.call('SET', KEYS[1], at(new_d), 'PX', math.max(1, math.ceil(new_d / 1000000)))
return {1, math.floor((w - new_d) / t), new_d, 0, at(new_d)}
";

/// Several limits of one request in one round trip, with the same semantics
/// as checking them one after the other: each key in order is applied like
/// `GCRA_SCRIPT`; the first one limited ends the script (earlier admitted
/// ones keep their update, later ones are not touched).
/// KEYS[i]: the limit keys. ARGV[2i-1]: T (ns). ARGV[2i]: burst·T (ns).
/// Returns the flattened 5-tuples of the keys processed.
const GCRA_MANY_SCRIPT: &str = r"
local clock = redis.call('TIME')
local now_s = tonumber(clock[1])
local now_ns = tonumber(clock[2]) * 1000
local function at(rel)
  local ns = now_ns + rel
  local carry = math.floor(ns / 1000000000)
  return string.format('%d:%09d', now_s + carry, ns - carry * 1000000000)
end
local out = {}
for i, key in ipairs(KEYS) do
  local t = tonumber(ARGV[2 * i - 1])
  local w = tonumber(ARGV[2 * i])
  local d = 0
  local stored = redis.call('GET', key)
  if stored then
    local s, ns = string.match(stored, '^(%d+):(%d+)$')
    if s then
      d = (tonumber(s) - now_s) * 1000000000 + (tonumber(ns) - now_ns)
      if d < 0 then d = 0 end
    end
  end
  local new_d = d + t
  local allow_in = new_d - w
  if allow_in > 0 then
    for _, v in ipairs({0, 0, d, allow_in, at(d)}) do table.insert(out, v) end
    return out
  end
  redis.call('SET', key, at(new_d), 'PX', math.max(1, math.ceil(new_d / 1000000)))
  for _, v in ipairs({1, math.floor((w - new_d) / t), new_d, 0, at(new_d)}) do table.insert(out, v) end
end
return out
";

/// Limits and revocations in Redis. See the module docs.
#[derive(Clone)]
pub struct RedisState {
    pub(super) conn: ConnectionManager,
    gcra: redis::Script,
    gcra_many: redis::Script,
    /// The URL with its password hidden, for logs.
    pub(super) shown: String,
}

impl fmt::Debug for RedisState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisState").field("url", &self.shown).finish_non_exhaustive()
    }
}

impl RedisState {
    /// Prepares the connection to `url` and tries it once. An unreachable
    /// Redis is only a warning: the gateway starts, limits fail open or closed
    /// per configuration, and the connection is retried on use.
    ///
    /// Must be called within a Tokio runtime.
    ///
    /// # Errors
    /// [`SharedError::Unavailable`] for a URL the client cannot use (the
    /// message never contains the password).
    pub async fn connect(url: &str) -> Result<Self, SharedError> {
        let shown = crate::store::redact(url);
        let client =
            redis::Client::open(url).map_err(|_| SharedError::Unavailable(format!("invalid Redis URL {shown:?}")))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(COMMAND_TIMEOUT))
            .set_response_timeout(Some(COMMAND_TIMEOUT))
            // Fail a reconnection quickly; the next command starts another.
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(10))
            .set_max_delay(Duration::from_millis(100));
        let conn = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|e| SharedError::Unavailable(format!("Redis {shown}: {e}")))?;
        let state = Self {
            conn,
            gcra: redis::Script::new(GCRA_SCRIPT),
            gcra_many: redis::Script::new(GCRA_MANY_SCRIPT),
            shown,
        };
        match state.run::<String>(&redis::cmd("PING")).await {
            Ok(_) => tracing::info!(url = %state.shown, "shared state in Redis"),
            Err(e) => tracing::warn!(
                url = %state.shown,
                error = %e,
                "Redis is unreachable at start; limits fail open or closed as configured until it answers"
            ),
        }
        Ok(state)
    }

    /// Whether Redis answers a `PING` now (the admin API's readiness).
    ///
    /// # Errors
    /// The failure, naming the server but never its password.
    pub async fn ping(&self) -> Result<(), String> {
        self.run::<String>(&redis::cmd("PING")).await.map(drop).map_err(|e| e.to_string())
    }

    /// Awaits one Redis reply under [`COMMAND_TIMEOUT`], with errors that
    /// name the server but never its password.
    async fn timed<T>(&self, reply: impl Future<Output = redis::RedisResult<T>>) -> Result<T, CommandError> {
        match tokio::time::timeout(COMMAND_TIMEOUT, reply).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(source)) => Err(CommandError::Failed { server: self.shown.clone(), source }),
            Err(_) => Err(CommandError::Timeout { server: self.shown.clone() }),
        }
    }

    /// Runs one command under [`COMMAND_TIMEOUT`].
    pub(super) async fn run<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, CommandError> {
        let mut conn = self.conn.clone();
        self.timed(cmd.query_async(&mut conn)).await
    }

    /// Runs a transaction under [`COMMAND_TIMEOUT`].
    pub(super) async fn run_pipe<T: redis::FromRedisValue>(&self, pipe: &redis::Pipeline) -> Result<T, CommandError> {
        let mut conn = self.conn.clone();
        self.timed(pipe.query_async(&mut conn)).await
    }

    /// Runs a Lua script under [`COMMAND_TIMEOUT`].
    pub(super) async fn invoke<T: redis::FromRedisValue>(
        &self,
        invocation: &redis::ScriptInvocation<'_>,
    ) -> Result<T, CommandError> {
        let mut conn = self.conn.clone();
        self.timed(invocation.invoke_async(&mut conn)).await
    }

    async fn gcra(&self, key: &str, quota: Gcra) -> Result<Outcome, StoreUnavailable> {
        let window = quota.window_nanos();
        if window >= MAX_EXACT_NANOS {
            return Err(StoreUnavailable(format!("a window of {window} ns is too long for the Redis store")));
        }
        let mut invocation = self.gcra.key(key);
        invocation.arg(quota.emission_nanos).arg(window);
        let reply: (u8, u32, u64, u64, String) = self.invoke(&invocation).await.map_err(StoreUnavailable::from)?;
        decode(reply).ok_or_else(|| StoreUnavailable(format!("Redis {}: malformed GCRA reply", self.shown)))
    }
}

impl RedisState {
    async fn gcra_many(&self, items: &[(String, Gcra)]) -> Result<Vec<Outcome>, StoreUnavailable> {
        let mut invocation = self.gcra_many.prepare_invoke();
        for (key, quota) in items {
            let window = quota.window_nanos();
            if window >= MAX_EXACT_NANOS {
                return Err(StoreUnavailable(format!("a window of {window} ns is too long for the Redis store")));
            }
            invocation.key(key).arg(quota.emission_nanos).arg(window);
        }
        let reply: Vec<redis::Value> = self.invoke(&invocation).await.map_err(StoreUnavailable::from)?;
        let malformed = || StoreUnavailable(format!("Redis {}: malformed GCRA reply", self.shown));
        reply
            .chunks(5)
            .map(|chunk| {
                let tuple: (u8, u32, u64, u64, String) =
                    redis::FromRedisValue::from_redis_value(redis::Value::Array(chunk.to_vec()))
                        .map_err(|_| malformed())?;
                decode(tuple).ok_or_else(malformed)
            })
            .collect()
    }
}

/// The script's reply as an [`Outcome`].
fn decode((allowed, remaining, reset_nanos, retry_after_nanos, tat): (u8, u32, u64, u64, String)) -> Option<Outcome> {
    let (secs, nanos) = tat.split_once(':')?;
    let tat = secs.parse::<u64>().ok()?.checked_mul(1_000_000_000)?.checked_add(nanos.parse().ok()?)?;
    Some(if allowed == 1 {
        Outcome::Allowed { remaining, reset_nanos, tat }
    } else {
        Outcome::Limited { retry_after_nanos, reset_nanos, tat }
    })
}

impl LimitStore for RedisState {
    /// `now` is ignored: Redis's clock decides, so instances agree.
    fn check<'a>(&'a self, key: &'a str, quota: Gcra, _now: u64) -> BoxFuture<'a, Result<Outcome, StoreUnavailable>> {
        Box::pin(self.gcra(key, quota))
    }

    /// One round trip for all of a request's limits.
    fn check_all<'a>(
        &'a self,
        items: &'a [(String, Gcra)],
        _now: u64,
    ) -> BoxFuture<'a, Result<Vec<Outcome>, StoreUnavailable>> {
        Box::pin(self.gcra_many(items))
    }
}

fn revocation_key(session_id: &str) -> String {
    format!("rev:{session_id}")
}

impl Revocations for RedisState {
    fn revoke(&self, session_id: &str, until: SystemTime) -> BoxFuture<'_, Result<(), SharedError>> {
        let key = revocation_key(session_id);
        Box::pin(async move {
            let Ok(at) = until.duration_since(UNIX_EPOCH) else { return Ok(()) };
            if until <= SystemTime::now() {
                return Ok(());
            }
            let millis = u64::try_from(at.as_millis()).unwrap_or(u64::MAX);
            // Create it, or extend it if it ends earlier: never shorten a revocation.
            let mut pipe = redis::pipe();
            pipe.atomic()
                .cmd("SET")
                .arg(&key)
                .arg(1)
                .arg("NX")
                .arg("PXAT")
                .arg(millis)
                .ignore()
                .cmd("PEXPIREAT")
                .arg(&key)
                .arg(millis)
                .arg("GT")
                .ignore();
            self.run_pipe::<()>(&pipe).await.map_err(SharedError::from)
        })
    }

    fn is_revoked(&self, session_id: &str) -> BoxFuture<'_, Result<bool, SharedError>> {
        let mut cmd = redis::cmd("EXISTS");
        cmd.arg(revocation_key(session_id));
        Box::pin(async move { self.run::<bool>(&cmd).await.map_err(SharedError::from) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_decode() {
        assert_eq!(
            decode((1, 2, 100, 0, "1700000000:000000005".into())),
            Some(Outcome::Allowed { remaining: 2, reset_nanos: 100, tat: 1_700_000_000_000_000_005 })
        );
        assert_eq!(
            decode((0, 0, 300, 50, "1:5".into())),
            Some(Outcome::Limited { retry_after_nanos: 50, reset_nanos: 300, tat: 1_000_000_005 })
        );
        assert_eq!(decode((1, 0, 0, 0, "garbage".into())), None);
    }

    #[tokio::test]
    async fn an_unusable_url_is_refused_without_its_password() {
        let err = RedisState::connect("redis://u:hunter2@127.0.0.1:notaport/0").await.unwrap_err().to_string();
        assert!(err.contains("invalid Redis URL") && !err.contains("hunter2"), "{err}");
    }
}
