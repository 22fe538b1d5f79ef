//! Alert counts and incident ownership in Redis (`[state] shared =
//! "redis://…"`), so that N instances together cross a threshold and exactly
//! one of them sends each alert.
//!
//! Decision rules:
//! - Each instance adds the events it saw since its last evaluation to
//!   per-bucket sorted sets (`ZINCRBY portcullis:alert:<rule>:<bucket ms>:<index>:<c|r|x|d>`:
//!   per client, route, reason, client × defence), expiring once their bucket
//!   has left the window; then it sums the window's buckets (`ZUNIONSTORE`
//!   into keys of its own) and reads the top entries and the groups at or
//!   above the threshold. Both in one pipelined round trip per rule and
//!   evaluation. Bucket indexes come from each instance's wall clock: keep
//!   the clocks in sync (NTP); a skew of a bucket width shifts counts by one
//!   bucket.
//! - An incident belongs to the instance that creates its key with
//!   `SET portcullis:alert:<rule>:firing:<group> <instance token> NX PX …`:
//!   only that instance sends its firing and its resolved message. It keeps
//!   the key alive while the incident is open and deletes it (only if still
//!   its own) when the incident resolves. An owner that stops leaves the key
//!   to expire (cool-down + window + 30 s): no resolved message is sent then.
//! - Every exchange has a deadline ([`TIMEOUT`]). A failure is returned to
//!   the engine, which falls back to this instance's own counts; the events
//!   not yet written stay pending (those still within the window) and are
//!   written when Redis answers again.
//!
//! Deployment caveat: the commands span several keys (`ZUNIONSTORE`), so
//! Redis Cluster is not supported: use one Redis (with replicas) as for the
//! rest of `[state] shared`.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::window::{BUCKETS, Counts, TOP, Tally};
use crate::config::alerts::{AlertRule, GroupBy, RuleKind};

/// The deadline of one exchange with Redis (off the data path, so longer
/// than the limits' 100 ms).
pub const TIMEOUT: Duration = Duration::from_millis(500);
/// Members of the client × defence union read per evaluation.
const MAX_PAIRS: usize = 50_000;
/// Groups at or above the threshold read per evaluation.
const MAX_GROUPS: usize = 100;

/// Deletes the firing key only if this instance still owns it.
const RELEASE_SCRIPT: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// Why Redis could not be used. Never contains the password.
#[derive(Debug, thiserror::Error)]
#[error("Redis {server}: {reason}")]
pub struct StoreError {
    server: String,
    reason: String,
}

/// See the module docs.
#[derive(Clone)]
pub struct RedisCounts {
    conn: ConnectionManager,
    shown: String,
    /// This instance's random token: the value of the keys it owns and the
    /// name of its scratch keys.
    token: String,
    release: redis::Script,
}

impl fmt::Debug for RedisCounts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisCounts").field("url", &self.shown).finish_non_exhaustive()
    }
}

fn key(rule: &AlertRule, bucket_ms: u64, index: u64, part: char) -> String {
    format!("portcullis:alert:{}:{bucket_ms}:{index}:{part}", rule.name)
}

/// The firing key of `group` (empty for `group_by = "none"`).
fn firing_key(rule: &AlertRule, group: &str) -> String {
    format!("portcullis:alert:{}:firing:{group}", rule.name)
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl RedisCounts {
    /// Prepares a lazy connection to `url` (a separate connection from the
    /// limits', so alert traffic never queues ahead of a request's check).
    ///
    /// # Errors
    /// A URL the client cannot use.
    pub fn open(url: &str) -> Result<Self, StoreError> {
        let shown = crate::store::redact(url);
        let failed = |reason: String| StoreError { server: shown.clone(), reason };
        let client = redis::Client::open(url).map_err(|_| failed("invalid Redis URL".into()))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(TIMEOUT))
            .set_response_timeout(Some(TIMEOUT))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(10))
            .set_max_delay(Duration::from_millis(100));
        let conn = ConnectionManager::new_lazy_with_config(client, config).map_err(|e| failed(e.to_string()))?;
        Ok(Self {
            conn,
            token: uuid::Uuid::new_v4().simple().to_string(),
            release: redis::Script::new(RELEASE_SCRIPT),
            shown,
        })
    }

    /// The URL without its password, for logs.
    #[must_use]
    pub fn shown(&self) -> &str {
        &self.shown
    }

    async fn timed<T>(&self, reply: impl Future<Output = redis::RedisResult<T>>) -> Result<T, StoreError> {
        match tokio::time::timeout(TIMEOUT, reply).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(StoreError { server: self.shown.clone(), reason: e.to_string() }),
            Err(_) => Err(StoreError { server: self.shown.clone(), reason: format!("no answer within {TIMEOUT:?}") }),
        }
    }

    /// Writes `pending` (bucket index → counts) and reads the window's
    /// counts at `now_ms`; keeps the firing keys of `owned` groups alive for
    /// `keep`. One round trip.
    ///
    /// # Errors
    /// [`StoreError`] when Redis does not answer or refuses; nothing is
    /// known of what was written then (the caller keeps `pending`).
    pub async fn exchange(
        &self,
        rule: &AlertRule,
        pending: &BTreeMap<u64, Tally>,
        now_ms: u64,
        owned: &[String],
        keep: Duration,
    ) -> Result<Counts, StoreError> {
        let bucket_ms = super::window::bucket_ms(rule.window);
        let index = now_ms / bucket_ms;
        // A bucket is read for BUCKETS × bucket_ms after it starts; keep it a little longer.
        let expire = bucket_ms.saturating_mul(BUCKETS + 2).saturating_add(10_000);
        let mut pipe = redis::pipe();
        for (bucket, tally) in pending {
            let mut write = |part: char, entries: Vec<(String, u64)>| {
                if entries.is_empty() {
                    return;
                }
                let k = key(rule, bucket_ms, *bucket, part);
                for (member, n) in entries {
                    pipe.cmd("ZINCRBY").arg(&k).arg(n).arg(member).ignore();
                }
                pipe.cmd("PEXPIRE").arg(&k).arg(expire).ignore();
            };
            write('c', tally.clients.iter().map(|(c, n)| (c.to_string(), *n)).collect());
            write('r', tally.routes.iter().map(|(r, n)| (r.to_string(), *n)).collect());
            write('x', tally.reasons.iter().map(|(r, n)| ((*r).to_owned(), *n)).collect());
            write('d', tally.pairs.iter().map(|((c, d), n)| (format!("{c} {d}"), *n)).collect());
        }
        let scratch = |part: char| format!("portcullis:alert:scratch:{}:{}:{part}", self.token, rule.name);
        let first = index.saturating_sub(BUCKETS - 1);
        for part in ['c', 'r', 'x', 'd'] {
            let sources: Vec<String> = (first..=index).map(|i| key(rule, bucket_ms, i, part)).collect();
            pipe.cmd("ZUNIONSTORE").arg(scratch(part)).arg(sources.len()).arg(&sources).ignore();
        }
        let top = TOP.saturating_sub(1);
        pipe.cmd("ZREVRANGE").arg(scratch('c')).arg(0).arg(top).arg("WITHSCORES");
        pipe.cmd("ZREVRANGE").arg(scratch('r')).arg(0).arg(top).arg("WITHSCORES");
        pipe.cmd("ZRANGE").arg(scratch('x')).arg(0).arg(-1).arg("WITHSCORES");
        for part in ['c', 'r'] {
            pipe.cmd("ZREVRANGEBYSCORE")
                .arg(scratch(part))
                .arg("+inf")
                .arg(rule.threshold)
                .arg("WITHSCORES")
                .arg("LIMIT")
                .arg(0)
                .arg(MAX_GROUPS);
        }
        pipe.cmd("ZRANGE").arg(scratch('d')).arg(0).arg(MAX_PAIRS - 1);
        pipe.cmd("DEL").arg(scratch('c')).arg(scratch('r')).arg(scratch('x')).arg(scratch('d')).ignore();
        for group in owned {
            pipe.cmd("PEXPIRE").arg(firing_key(rule, group)).arg(millis(keep)).ignore();
        }
        type Reply = (
            Vec<(String, u64)>,
            Vec<(String, u64)>,
            Vec<(String, u64)>,
            Vec<(String, u64)>,
            Vec<(String, u64)>,
            Vec<String>,
        );
        let mut conn = self.conn.clone();
        let (top_clients, top_routes, reasons, clients_above, routes_above, pairs): Reply =
            self.timed(pipe.query_async(&mut conn)).await?;
        let total = reasons.iter().map(|(_, n)| n).sum();
        let groups = match (rule.kind, rule.group_by) {
            (RuleKind::DistinctDefences, _) => {
                let mut per_client: HashMap<&str, u64> = HashMap::new();
                for pair in &pairs {
                    if let Some((client, _)) = pair.split_once(' ') {
                        *per_client.entry(client).or_insert(0) += 1;
                    }
                }
                let mut above: Vec<(String, u64)> = per_client
                    .into_iter()
                    .filter(|(_, n)| *n >= rule.threshold)
                    .map(|(c, n)| (c.to_owned(), n))
                    .collect();
                above.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
                above
            }
            (RuleKind::Count, GroupBy::None) => {
                if total >= rule.threshold {
                    vec![(String::new(), total)]
                } else {
                    Vec::new()
                }
            }
            (RuleKind::Count, GroupBy::Client) => clients_above,
            (RuleKind::Count, GroupBy::Route) => routes_above,
        };
        let mut reasons = reasons;
        reasons.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        Ok(Counts { total, groups, top_clients, top_routes, reasons })
    }

    /// Claims the incident of `group`: true when this instance created its
    /// key (and so sends the alert), false when another instance owns it.
    ///
    /// # Errors
    /// [`StoreError`] when Redis does not answer.
    pub async fn claim(&self, rule: &AlertRule, group: &str, keep: Duration) -> Result<bool, StoreError> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(firing_key(rule, group)).arg(&self.token).arg("NX").arg("PX").arg(millis(keep).max(1));
        let mut conn = self.conn.clone();
        let reply: Option<String> = self.timed(cmd.query_async(&mut conn)).await?;
        Ok(reply.is_some())
    }

    /// Releases the incident of `group` if this instance still owns it.
    ///
    /// # Errors
    /// [`StoreError`] when Redis does not answer.
    pub async fn release(&self, rule: &AlertRule, group: &str) -> Result<(), StoreError> {
        let mut invocation = self.release.key(firing_key(rule, group));
        invocation.arg(&self.token);
        let mut conn = self.conn.clone();
        let _: i64 = self.timed(invocation.invoke_async(&mut conn)).await?;
        Ok(())
    }
}
