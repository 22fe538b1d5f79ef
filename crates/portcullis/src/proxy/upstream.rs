//! An upstream at run time: its targets, their health and connection pools.
//!
//! Targets are used round robin. A target whose connection attempt fails is
//! skipped for the upstream's `failure_cooldown`; when every target is cooling
//! down, the one that failed longest ago is tried, so an upstream recovers by
//! itself when its targets come back.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use super::pool::Pool;
use crate::config::{self, Target};

/// One target and its health.
#[derive(Debug)]
pub struct TargetState {
    /// Where it is.
    pub target: Target,
    /// Its display name, shared with logs.
    pub label: Arc<str>,
    /// Pooled connections (HTTP targets).
    pub pool: Option<Arc<Pool>>,
    /// Milliseconds since `epoch` until which it is skipped; 0 = healthy.
    down_until_ms: AtomicU64,
}

/// A configured upstream, ready to take requests.
#[derive(Debug)]
pub struct UpstreamState {
    /// Configuration.
    pub config: config::Upstream,
    /// Targets.
    pub targets: Vec<TargetState>,
    /// Its error and retry counters.
    pub metrics: crate::metrics::UpstreamHandles,
    next: AtomicUsize,
    epoch: Instant,
}

/// The TLS connector and verified name for an https target.
fn tls_for(
    config: &config::Upstream,
    client: Option<&Arc<rustls::ClientConfig>>,
    authority: &http::uri::Authority,
) -> Option<(tokio_rustls::TlsConnector, rustls::pki_types::ServerName<'static>)> {
    let client = client?.clone();
    let host = config
        .tls
        .as_ref()
        .and_then(|t| t.server_name.clone())
        .unwrap_or_else(|| authority.host().trim_start_matches('[').trim_end_matches(']').to_owned());
    let name = rustls::pki_types::ServerName::try_from(host).ok()?;
    Some((tokio_rustls::TlsConnector::from(client), name))
}

impl UpstreamState {
    /// Builds the targets and their pools for `config`; `tls` is the client
    /// for its https targets (without one they refuse to connect).
    #[must_use]
    pub fn new(config: &config::Upstream, tls: Option<&Arc<rustls::ClientConfig>>) -> Self {
        let targets = config
            .targets
            .iter()
            .map(|t| TargetState {
                label: Arc::from(t.to_string()),
                pool: match t {
                    Target::Http { scheme, authority } => Some(Pool::new(
                        authority.clone(),
                        if *scheme == http::uri::Scheme::HTTPS {
                            // Fail closed: an https target never falls back to cleartext.
                            Some(tls_for(config, tls, authority).ok_or("no usable TLS settings for this https target"))
                        } else {
                            None
                        },
                        config.pool_max_idle,
                        config.pool_idle_timeout,
                        config.connect_timeout,
                        config.read_timeout,
                        Arc::from(config.name.as_str()),
                    )),
                    Target::Demo => None,
                },
                target: t.clone(),
                down_until_ms: AtomicU64::new(0),
            })
            .collect();
        Self {
            config: config.clone(),
            targets,
            metrics: crate::metrics::UpstreamHandles::new(&config.name),
            next: AtomicUsize::new(0),
            epoch: Instant::now(),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// The next target to try: round robin over healthy targets, else the one
    /// whose cooldown ends first.
    pub fn pick(&self) -> Option<&TargetState> {
        let n = self.targets.len();
        if n == 0 {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        if n == 1 {
            return self.targets.first();
        }
        let now = self.now_ms();
        for i in 0..n {
            let t = &self.targets[(start + i) % n];
            if t.down_until_ms.load(Ordering::Relaxed) <= now {
                return Some(t);
            }
        }
        self.targets.iter().min_by_key(|t| t.down_until_ms.load(Ordering::Relaxed))
    }

    /// Marks a target as failed for the cooldown.
    pub fn mark_failed(&self, target: &TargetState) {
        let until =
            self.now_ms().saturating_add(u64::try_from(self.config.failure_cooldown.as_millis()).unwrap_or(u64::MAX));
        target.down_until_ms.store(until.max(1), Ordering::Relaxed);
    }

    /// Each target's label and how long it stays skipped after a failed
    /// connection (`None`: healthy), for the admin dashboard.
    #[must_use]
    pub fn health(&self) -> Vec<(Arc<str>, Option<std::time::Duration>)> {
        let now = self.now_ms();
        self.targets
            .iter()
            .map(|t| {
                let until = t.down_until_ms.load(Ordering::Relaxed);
                (t.label.clone(), (until > now).then(|| std::time::Duration::from_millis(until - now)))
            })
            .collect()
    }

    /// Marks a target as healthy again.
    pub fn mark_ok(target: &TargetState) {
        if target.down_until_ms.load(Ordering::Relaxed) != 0 {
            target.down_until_ms.store(0, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn upstream(n: usize) -> UpstreamState {
        let targets = (0..n)
            .map(|i| Target::Http {
                scheme: http::uri::Scheme::HTTP,
                authority: format!("127.0.0.1:{}", 1000 + i).parse().unwrap(),
            })
            .collect();
        UpstreamState::new(
            &config::Upstream {
                name: "u".into(),
                targets,
                connect_timeout: Duration::from_secs(1),
                response_timeout: Duration::from_secs(1),
                read_timeout: Duration::from_secs(1),
                failure_cooldown: Duration::from_secs(60),
                pool_idle_timeout: Duration::from_secs(1),
                pool_max_idle: 1,
                host_header: config::HostHeader::Preserve,
                tls: None,
                identity: config::IdentityMode::Headers,
                max_in_flight: None,
            },
            None,
        )
    }

    #[tokio::test]
    async fn round_robin_skips_failed_targets() {
        let u = upstream(3);
        let picks: Vec<_> = (0..6).map(|_| u.pick().unwrap().label.to_string()).collect();
        assert_eq!(picks[0..3], picks[3..6]);
        assert_eq!(picks.iter().collect::<std::collections::HashSet<_>>().len(), 3);

        u.mark_failed(&u.targets[1]);
        for _ in 0..6 {
            assert_ne!(&*u.pick().unwrap().label, "http://127.0.0.1:1001");
        }
        // All down: the one that recovers first is tried.
        u.mark_failed(&u.targets[0]);
        u.mark_failed(&u.targets[2]);
        assert!(u.pick().is_some(), "an upstream whose targets all failed is still tried");
        UpstreamState::mark_ok(&u.targets[2]);
        assert_eq!(&*u.pick().unwrap().label, "http://127.0.0.1:1002");
    }
}
