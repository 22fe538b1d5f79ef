//! Login-failure state in Redis (`[state] shared = "redis://…"`): every
//! instance counts the same failures and enforces the same waits.
//!
//! Decision rules:
//! - Each operation is one round trip: checking a request's keys and
//!   recording a failure are atomic Lua scripts running exactly the rules of
//!   [`Backoff::standing`] and [`Backoff::fail`]; a successful login is one
//!   `DEL`. The clock is Redis's `TIME`, so instances with skewed clocks
//!   agree; the `now` arguments of [`LoginStore`] are ignored.
//! - Times are kept in microseconds (`failures:last:blocked_until`), exact in
//!   a Lua number until the year 2255; durations are rounded up to a
//!   microsecond. A key expires when its window after the last failure or
//!   wait has passed, after which a missing key means the same as a forgotten
//!   one: idle accounts and addresses cost nothing.
//! - Every command has the [`COMMAND_TIMEOUT`] deadline; a Redis that cannot
//!   answer is [`StoreUnavailable`], and the protection fails open or closed
//!   as configured.
//!
//! Deployment caveat: keys hold account fingerprints, never names, but
//! anyone who can read Redis sees which fingerprints are failing; keep it on
//! a private network with a password.

use std::sync::LazyLock;

use futures_util::future::BoxFuture;
use portcullis_layers::login::LoginStore;
use portcullis_layers::store::StoreUnavailable;
use portcullis_policy::login::{Backoff, Standing};

use super::RedisState;

/// [`Backoff::standing`] for each key. KEYS[i]: a login key. ARGV[i]: its
/// window (µs). Returns {failures, wait µs} per key, flattened.
const CHECK_SCRIPT: &str = r"
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local out = {}
for i, key in ipairs(KEYS) do
  local window = tonumber(ARGV[i])
  local f, wait = 0, 0
  local stored = redis.call('GET', key)
  if stored then
    local sf, last, blocked = string.match(stored, '^(%d+):(%d+):(%d+)$')
    if sf then
      last = tonumber(last)
      blocked = tonumber(blocked)
      if now - math.max(last, blocked) <= window then
        f = tonumber(sf)
        if blocked > now then wait = blocked - now end
      end
    end
  end
  table.insert(out, f)
  table.insert(out, wait)
end
return out
";

/// [`Backoff::fail`] for each key. KEYS[i]: a login key. ARGV[4i-3..4i]:
/// free failures, window, backoff, max backoff (µs). Returns {failures,
/// wait µs} per key after the failure, flattened.
const FAIL_SCRIPT: &str = r"
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local out = {}
for i, key in ipairs(KEYS) do
  local free = tonumber(ARGV[4 * i - 3])
  local window = tonumber(ARGV[4 * i - 2])
  local backoff = tonumber(ARGV[4 * i - 1])
  local max = tonumber(ARGV[4 * i])
  local f, blocked = 0, 0
  local stored = redis.call('GET', key)
  if stored then
    local sf, last, sb = string.match(stored, '^(%d+):(%d+):(%d+)$')
    if sf and now - math.max(tonumber(last), tonumber(sb)) <= window then
      f = tonumber(sf)
      blocked = tonumber(sb)
    end
  end
  f = f + 1
  if f >= free then
    local delay = backoff
    local over = f - free
    while over > 0 and delay < max do
      delay = delay * 2
      over = over - 1
    end
    if delay > max then delay = max end
    if now + delay > blocked then blocked = now + delay end
  end
  local ttl = math.max(now, blocked) + window - now
  redis.call('SET', key, string.format('%d:%d:%d', f, now, blocked), 'PX', math.max(1, math.ceil(ttl / 1000)))
  local wait = 0
  if blocked > now then wait = blocked - now end
  table.insert(out, f)
  table.insert(out, wait)
end
return out
";

static CHECK: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(CHECK_SCRIPT));
static FAIL: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(FAIL_SCRIPT));

fn micros(nanos: u64) -> u64 {
    nanos.div_ceil(1000)
}

impl RedisState {
    async fn login_script(
        &self,
        script: &redis::Script,
        keys: &[(String, Backoff)],
        args: impl Fn(&Backoff) -> Vec<u64>,
    ) -> Result<Vec<Standing>, StoreUnavailable> {
        let mut invocation = script.prepare_invoke();
        for (key, rules) in keys {
            invocation.key(key);
            for arg in args(rules) {
                invocation.arg(arg);
            }
        }
        let reply: Vec<i64> = self.invoke(&invocation).await.map_err(StoreUnavailable::from)?;
        if reply.len() != keys.len() * 2 {
            return Err(StoreUnavailable(format!("Redis {}: malformed login reply", self.shown)));
        }
        Ok(reply
            .chunks(2)
            .map(|pair| Standing {
                failures: u32::try_from(pair[0]).unwrap_or(u32::MAX),
                wait_nanos: u64::try_from(pair[1]).unwrap_or(0).saturating_mul(1000),
            })
            .collect())
    }
}

impl LoginStore for RedisState {
    /// `now` is ignored: Redis's clock decides, so instances agree.
    fn check<'a>(
        &'a self,
        keys: &'a [(String, Backoff)],
        _now: u64,
    ) -> BoxFuture<'a, Result<Vec<Standing>, StoreUnavailable>> {
        Box::pin(self.login_script(&CHECK, keys, |r| vec![micros(r.window_nanos)]))
    }

    /// `now` is ignored: Redis's clock decides, so instances agree.
    fn fail<'a>(
        &'a self,
        keys: &'a [(String, Backoff)],
        _now: u64,
    ) -> BoxFuture<'a, Result<Vec<Standing>, StoreUnavailable>> {
        Box::pin(self.login_script(&FAIL, keys, |r| {
            vec![u64::from(r.free), micros(r.window_nanos), micros(r.backoff_nanos), micros(r.max_backoff_nanos)]
        }))
    }

    fn reset<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), StoreUnavailable>> {
        let mut cmd = redis::cmd("DEL");
        cmd.arg(key);
        Box::pin(async move { self.run::<()>(&cmd).await.map_err(StoreUnavailable::from) })
    }
}
