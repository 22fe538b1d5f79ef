//! `portcullis ban list|add|lift`: the ban list of a running deployment.
//!
//! With `[state] shared = "redis://…"` the command works on the shared list
//! in Redis directly (every instance picks changes up within a second, and
//! no instance needs to be reachable). With in-memory state the list lives in
//! the running process, so the command goes through its admin API (`[admin]`,
//! bearer token from the same configuration file).
//!
//! Added and lifted bans are rows of the audit trail (`docs/audit.md`):
//! written here on Redis, by the admin API when the command goes through it.
//!
//! Exit codes: 0 done, 1 failed (unreachable state, no such ban), 2 bad
//! usage or configuration.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use portcullis_layers::ban::{Ban, BanHit, BanStore, unix_millis};
use portcullis_layers::store::StoreUnavailable;

use crate::app::{EXIT_CONFIG, EXIT_RUNTIME};
use crate::config::admin::Admin;
use crate::config::state::Shared;
use crate::config::{self, Config};
use crate::shared::{RedisState, SharedBans};
use crate::store::audit::Entry;

/// `ban list`: the bans in force, longest-lasting first.
#[must_use]
pub fn list(config: &Path, json: bool) -> ExitCode {
    with_bans(config, |bans| async move {
        let list = bans.list().await.map_err(|e| e.to_string())?;
        if json {
            let values: Vec<serde_json::Value> = list.iter().map(crate::admin::ban_json).collect();
            println!("{}", serde_json::Value::Array(values));
        } else if list.is_empty() {
            eprintln!("no bans in force");
        } else {
            println!("{:<28} {:<20} {:<22} UNTIL", "TARGET", "RULE", "SINCE");
            for ban in &list {
                let value = crate::admin::ban_json(ban);
                println!(
                    "{:<28} {:<20} {:<22} {}",
                    ban.target_text(),
                    ban.rule,
                    value["since"].as_str().unwrap_or("-"),
                    value["until"].as_str().unwrap_or("-")
                );
            }
        }
        Ok(None)
    })
}

/// `ban add`: bans `target` for `duration` by hand (rule `manual`).
#[must_use]
pub fn add(config: &Path, target: &str, duration: Duration) -> ExitCode {
    let Some(ip) = crate::admin::parse_target(target) else {
        eprintln!("error: {target:?} is not an IP address or an IPv6 /64");
        return ExitCode::from(EXIT_CONFIG);
    };
    with_bans(config, |bans| async move {
        let ban = Ban::new(ip, "manual", unix_millis(), duration);
        let text = ban.target_text();
        bans.add(ban).await.map_err(|e| e.to_string())?;
        eprintln!("banned {text} for {}", humantime::format_duration(duration));
        let detail = serde_json::json!({ "rule": "manual", "duration_s": duration.as_secs() });
        Ok(Some(Entry::new(crate::audit::cli_actor(), "ban.add", text, detail)))
    })
}

/// `ban lift`: lifts the ban on `target`.
#[must_use]
pub fn lift(config: &Path, target: &str) -> ExitCode {
    let Some(ip) = crate::admin::parse_target(target) else {
        eprintln!("error: {target:?} is not an IP address or an IPv6 /64");
        return ExitCode::from(EXIT_CONFIG);
    };
    with_bans(config, |bans| async move {
        if bans.lift(ip).await.map_err(|e| e.to_string())? {
            let text = portcullis_layers::store::ip_key(ip);
            eprintln!("lifted the ban on {text}");
            Ok(Some(Entry::new(crate::audit::cli_actor(), "ban.lift", text, serde_json::json!({}))))
        } else {
            Err(format!("no ban on {}", portcullis_layers::store::ip_key(ip)))
        }
    })
}

fn with_bans<F, Fut>(path: &Path, op: F) -> ExitCode
where
    F: FnOnce(Arc<dyn BanStore>) -> Fut,
    Fut: Future<Output = Result<Option<Entry>, String>>,
{
    let config = match config::load(path) {
        Ok(config) => config,
        Err(errors) => {
            eprintln!("{errors}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_RUNTIME);
        }
    };
    let outcome = runtime.block_on(async {
        let bans = open(&config).await?;
        let done = op(bans).await?;
        // Through the admin API, the API records the action; on Redis, this command does.
        if let (Some(entry), Shared::Redis(_)) = (done, &config.state.shared) {
            crate::audit::record_cli(&config, None, entry).await;
        }
        Ok::<_, String>(())
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}

async fn open(config: &Config) -> Result<Arc<dyn BanStore>, String> {
    match (&config.state.shared, &config.admin) {
        (Shared::Redis(url), _) => {
            let redis = RedisState::connect(url.expose()).await.map_err(|e| e.to_string())?;
            Ok(Arc::new(SharedBans::new(Arc::new(redis))))
        }
        (Shared::Memory, Some(admin)) => Ok(Arc::new(AdminBans::new(admin))),
        (Shared::Memory, None) => Err("with [state] shared = \"memory\" the bans live in the running gateway: \
             configure [admin] (bind and token) so this command can reach them, \
             or share state through Redis"
            .into()),
    }
}

/// The ban list of a running instance, through its admin API.
#[derive(Debug)]
struct AdminBans {
    base: String,
    token: String,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl AdminBans {
    fn new(admin: &Admin) -> Self {
        // A wildcard bind is reached on loopback.
        let addr = if admin.bind.ip().is_unspecified() {
            let loopback = if admin.bind.is_ipv4() {
                IpAddr::from([127, 0, 0, 1])
            } else {
                IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1])
            };
            SocketAddr::new(loopback, admin.bind.port())
        } else {
            admin.bind
        };
        Self {
            base: format!("http://{addr}"),
            token: admin.token.expose().to_owned(),
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    async fn call(
        &self,
        method: http::Method,
        path: &str,
        body: Option<String>,
    ) -> Result<(u16, Bytes), StoreUnavailable> {
        let request = http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header(http::header::AUTHORIZATION, format!("Bearer {}", self.token))
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| StoreUnavailable(e.to_string()))?;
        let unreachable = |e: &dyn std::fmt::Display| StoreUnavailable(format!("admin API at {}: {e}", self.base));
        let response = tokio::time::timeout(Duration::from_secs(10), self.client.request(request))
            .await
            .map_err(|_| unreachable(&"no answer within 10s"))?
            .map_err(|e| unreachable(&e))?;
        let status = response.status().as_u16();
        let bytes = response.into_body().collect().await.map_err(|e| unreachable(&e))?.to_bytes();
        if status == 401 {
            return Err(StoreUnavailable(format!(
                "admin API at {} refused the token of this configuration",
                self.base
            )));
        }
        Ok((status, bytes))
    }
}

fn unexpected(status: u16, body: &[u8]) -> StoreUnavailable {
    StoreUnavailable(format!("admin API answered {status}: {}", String::from_utf8_lossy(body)))
}

impl BanStore for AdminBans {
    fn banned(&self, _ip: IpAddr, _now_ms: u64) -> Option<BanHit> {
        None
    }

    fn add(&self, ban: Ban) -> BoxFuture<'_, Result<(), StoreUnavailable>> {
        Box::pin(async move {
            let millis = ban.until_ms.saturating_sub(ban.since_ms);
            let body = serde_json::json!({ "target": ban.target_text(), "duration": format!("{millis}ms") });
            match self.call(http::Method::POST, "/bans", Some(body.to_string())).await? {
                (201, _) => Ok(()),
                (status, body) => Err(unexpected(status, &body)),
            }
        })
    }

    fn lift(&self, ip: IpAddr) -> BoxFuture<'_, Result<bool, StoreUnavailable>> {
        Box::pin(async move {
            let target = portcullis_layers::store::ip_key(ip).replace('/', "%2F");
            match self.call(http::Method::DELETE, &format!("/bans/{target}"), None).await? {
                (204, _) => Ok(true),
                (404, _) => Ok(false),
                (status, body) => Err(unexpected(status, &body)),
            }
        })
    }

    fn list(&self) -> BoxFuture<'_, Result<Vec<Ban>, StoreUnavailable>> {
        Box::pin(async move {
            let (status, body) = self.call(http::Method::GET, "/bans", None).await?;
            if status != 200 {
                return Err(unexpected(status, &body));
            }
            let value: serde_json::Value = serde_json::from_slice(&body).map_err(|_| unexpected(status, &body))?;
            let parse_time = |v: &serde_json::Value| {
                v.as_str()
                    .and_then(|t| humantime::parse_rfc3339(t).ok())
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            };
            let bans = value["bans"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|b| {
                    Some(Ban {
                        target: crate::admin::parse_target(b["target"].as_str()?)?,
                        rule: b["rule"].as_str()?.to_owned(),
                        since_ms: parse_time(&b["since"])?,
                        until_ms: parse_time(&b["until"])?,
                    })
                })
                .collect();
            Ok(bans)
        })
    }
}
