//! Alerts through the running gateway: failed logins against an upstream
//! that refuses every password, a local webhook receiver recording what the
//! gateway posts. One burst is one alert naming the top offender; the
//! cool-down keeps a flapping attack to one incident; quiet for a window
//! after it, the incident resolves; two instances sharing Redis cross the
//! threshold together and send one alert; with Redis down each instance
//! alerts on its own counts and a failing webhook is retried.

use crate::common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::redis::Redis;
use common::*;
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde_json::Value;

/// Each POST's JSON body and Authorization header.
type Posts = Arc<Mutex<Vec<(Value, Option<String>)>>>;

/// The webhook receiver: records each POST (body and Authorization header);
/// answers 500 to the first `fail_first` of them.
#[derive(Clone)]
struct Receiver {
    addr: SocketAddr,
    posts: Posts,
    attempts: Arc<AtomicUsize>,
}

impl Receiver {
    async fn start(fail_first: usize) -> Self {
        let posts: Posts = Arc::new(Mutex::new(Vec::new()));
        let attempts = Arc::new(AtomicUsize::new(0));
        let (p, a) = (posts.clone(), attempts.clone());
        let addr = upstream(move |req: Request<Incoming>| {
            let (posts, attempts) = (p.clone(), a.clone());
            async move {
                let auth = req.headers().get("authorization").and_then(|v| v.to_str().ok()).map(str::to_owned);
                let body = req.into_body().collect().await.unwrap().to_bytes();
                let mut resp = Response::new(portcullis_layers::full("ok"));
                if attempts.fetch_add(1, Ordering::SeqCst) < fail_first {
                    *resp.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
                } else {
                    posts.lock().unwrap().push((serde_json::from_slice(&body).unwrap(), auth));
                }
                resp
            }
        })
        .await;
        Self { addr, posts, attempts }
    }

    fn alerts(&self) -> Vec<Value> {
        self.posts.lock().unwrap().iter().map(|(v, _)| v.clone()).collect()
    }

    fn count(&self) -> usize {
        self.posts.lock().unwrap().len()
    }

    async fn wait_for(&self, n: usize, within: Duration) -> Vec<Value> {
        eventually(&format!("{n} alert(s)"), within, || self.count() >= n).await;
        self.alerts()
    }
}

/// An upstream that refuses every login.
async fn refusing_upstream() -> SocketAddr {
    upstream(|_req: Request<Incoming>| async {
        let mut resp = Response::new(portcullis_layers::full("nope"));
        *resp.status_mut() = StatusCode::UNAUTHORIZED;
        resp
    })
    .await
}

fn config(up: SocketAddr, hook: SocketAddr, shared: &str, instance: &str, rule: &str) -> String {
    format!(
        r#"
[[listener]]
name = "test"
bind = "127.0.0.1:0"

[server]
trusted_proxies = ["127.0.0.1/32"]

[state]
shared = "{shared}"

[[upstream]]
name = "app"
targets = ["http://{up}"]

[login.api]
account = "json:username"
account_failures = 10000
ip_failures = 10000
on_store_failure = "open"

[[route]]
name = "login"
match = {{ path = "/auth/login", methods = ["POST"] }}
upstream = "app"
auth = "public"
login = "api"

[alerts]
webhook = "http://{hook}/hooks/T0/s3cret"
instance = "{instance}"
headers = {{ Authorization = "Bearer alert-token" }}

[[alerts.rule]]
name = "login-failures"
match = {{ reason = ["login.failed"] }}
{rule}
"#
    )
}

/// `n` failed logins from `ip`, each answered 401.
async fn fail_logins(gw: &Gateway, ip: &str, n: usize) {
    for _ in 0..n {
        let req = Request::post(gw.url("/auth/login"))
            .header("x-forwarded-for", ip)
            .header("content-type", "application/json")
            .body(full_body(r#"{"username":"alice","password":"guess"}"#))
            .unwrap();
        let (parts, _) = send(req).await;
        assert_eq!(parts.status, StatusCode::UNAUTHORIZED);
    }
}

fn failures_seen(gw: &Gateway) -> usize {
    gw.events.reasons().iter().filter(|r| **r == "login.failed").count()
}

#[tokio::test]
async fn a_burst_fires_one_alert_the_cooldown_holds_and_quiet_resolves() {
    let hook = Receiver::start(0).await;
    let rule = "threshold = 10\nwindow = \"2s\"\ncooldown = \"4s\"\n";
    let gw = gateway(&config(refusing_upstream().await, hook.addr, "memory", "gw-a", rule)).await;

    // Under the threshold: nothing.
    fail_logins(&gw, "198.51.100.2", 3).await;
    // The burst: 9 more from the top offender.
    let started = Instant::now();
    fail_logins(&gw, "203.0.113.7", 9).await;
    let alerts = hook.wait_for(1, Duration::from_secs(5)).await;
    let fired = &alerts[0];
    assert_eq!(fired["alert"], "login-failures");
    assert_eq!(fired["status"], "firing");
    // The evaluation may run mid-burst: at least the threshold, at most all 12.
    let count = fired["count"].as_u64().unwrap();
    assert!((10..=12).contains(&count), "{fired}");
    assert_eq!(fired["total"], count);
    assert_eq!(fired["threshold"], 10);
    assert_eq!(fired["window_seconds"], 2.0);
    assert_eq!(fired["instance"], "gw-a");
    assert_eq!(fired["local_only"], false);
    assert_eq!(fired["top_clients"][0]["client_ip"], "203.0.113.7");
    assert_eq!(fired["top_clients"][0]["count"], count - 3);
    assert_eq!(fired["top_clients"][1], serde_json::json!({"client_ip": "198.51.100.2", "count": 3}));
    assert_eq!(fired["top_routes"][0], serde_json::json!({"route": "login", "count": count}));
    assert_eq!(fired["reasons"], serde_json::json!({"login.failed": count}));
    let text = fired["text"].as_str().unwrap();
    assert!(text.contains("login-failures firing") && text.contains("203.0.113.7 ("), "{text}");
    assert_eq!(fired["summary"], fired["text"]);
    assert_eq!(hook.posts.lock().unwrap()[0].1.as_deref(), Some("Bearer alert-token"));

    // More failures within the cool-down: the same incident, nothing sent.
    fail_logins(&gw, "203.0.113.7", 15).await;
    eventually("the failures to be recorded", Duration::from_secs(5), || failures_seen(&gw) == 27).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(hook.count(), 1, "{:#?}", hook.alerts());

    // Quiet: resolved once the cool-down (4 s) is over and the count has
    // stayed under the threshold for a window (2 s).
    let alerts = hook.wait_for(2, Duration::from_secs(12)).await;
    assert!(started.elapsed() >= Duration::from_secs(4), "resolved within the cool-down");
    let resolved = &alerts[1];
    assert_eq!(resolved["status"], "resolved");
    assert_eq!(resolved["alert"], "login-failures");
    assert_eq!(resolved["since"], fired["until"]);
    assert!(resolved["text"].as_str().unwrap().contains("resolved"), "{resolved}");

    // A new burst after the cool-down is a new incident.
    fail_logins(&gw, "192.0.2.55", 10).await;
    let alerts = hook.wait_for(3, Duration::from_secs(5)).await;
    assert_eq!(alerts[2]["status"], "firing");
    assert_eq!(alerts[2]["top_clients"][0], serde_json::json!({"client_ip": "192.0.2.55", "count": 10}));
    assert_eq!(alerts.len(), 3);
}

#[tokio::test]
async fn per_client_rules_name_the_client() {
    let hook = Receiver::start(0).await;
    let rule = "threshold = 5\nwindow = \"2s\"\ncooldown = \"10s\"\ngroup_by = \"client\"\n";
    let gw = gateway(&config(refusing_upstream().await, hook.addr, "memory", "gw-a", rule)).await;
    // Many addresses, each under the threshold, and one over it.
    for i in 1..=8 {
        fail_logins(&gw, &format!("198.51.100.{i}"), 2).await;
    }
    fail_logins(&gw, "203.0.113.9", 6).await;
    let alerts = hook.wait_for(1, Duration::from_secs(5)).await;
    assert_eq!(alerts[0]["group_by"], "client");
    assert_eq!(alerts[0]["group"], "203.0.113.9");
    assert!((5..=6).contains(&alerts[0]["count"].as_u64().unwrap()), "{}", alerts[0]);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(hook.count(), 1, "{:#?}", hook.alerts());
}

#[tokio::test]
async fn two_instances_sharing_redis_cross_the_threshold_together_and_send_one_alert() {
    let redis = Redis::start();
    let hook = Receiver::start(0).await;
    let up = refusing_upstream().await;
    let rule = "threshold = 10\nwindow = \"3s\"\ncooldown = \"3s\"\n";
    let a = gateway(&config(up, hook.addr, &redis.url, "gw-a", rule)).await;
    let b = gateway(&config(up, hook.addr, &redis.url, "gw-b", rule)).await;

    // Each alone stays under the threshold.
    fail_logins(&a, "203.0.113.7", 6).await;
    fail_logins(&b, "203.0.113.8", 6).await;
    let alerts = hook.wait_for(1, Duration::from_secs(5)).await;
    assert_eq!(alerts[0]["status"], "firing");
    assert!((10..=12).contains(&alerts[0]["count"].as_u64().unwrap()), "{}", alerts[0]);
    assert_eq!(alerts[0]["local_only"], false);
    let tops: Vec<&Value> = alerts[0]["top_clients"].as_array().unwrap().iter().collect();
    assert_eq!(tops.len(), 2, "{tops:?}");
    // Both instances evaluate every 100 ms: give the other one time to send a duplicate.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(hook.count(), 1, "{:#?}", hook.alerts());

    // One resolved message, from the instance that fired.
    let alerts = hook.wait_for(2, Duration::from_secs(12)).await;
    assert_eq!(alerts[1]["status"], "resolved");
    assert_eq!(alerts[1]["instance"], alerts[0]["instance"]);
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(hook.count(), 2, "{:#?}", hook.alerts());
}

#[tokio::test]
async fn with_redis_down_an_instance_alerts_on_its_own_counts_and_a_failing_webhook_is_retried() {
    // A port nobody listens on.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let hook = Receiver::start(2).await;
    let rule = "threshold = 5\nwindow = \"2s\"\ncooldown = \"1m\"\n";
    // With its store down, login protection lets the attempts through
    // (`on_store_failure = "open"`) and records `login.unavailable`.
    let toml = config(refusing_upstream().await, hook.addr, &format!("redis://{dead}"), "gw-a", rule)
        .replace(r#"reason = ["login.failed"]"#, r#"reason = ["login.unavailable"]"#);
    let gw = gateway(&toml).await;
    let started = Instant::now();
    fail_logins(&gw, "203.0.113.7", 5).await;
    // Requests are not held up by the unreachable Redis (each limit check
    // fails within its 100 ms deadline; the alert sink never waits).
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    // Two refused deliveries, retried after 1 s and 2 s: the third arrives.
    let alerts = hook.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(hook.attempts.load(Ordering::SeqCst), 3);
    assert_eq!(alerts[0]["status"], "firing");
    assert_eq!(alerts[0]["local_only"], true);
    assert!(alerts[0]["count"].as_u64().unwrap() >= 5, "{}", alerts[0]);
    assert!(alerts[0]["reasons"]["login.unavailable"].as_u64().unwrap() >= 5, "{}", alerts[0]);
}

#[test]
fn the_example_configuration_builds() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/alerts.toml");
    let source = std::fs::read_to_string(&path).unwrap();
    let env = |name: &str| (name == "ALERT_WEBHOOK_URL").then(|| "https://hooks.example.com/services/T/B/x".to_owned());
    let config = portcullis::config::parse(&path, &source, env).unwrap_or_else(|e| panic!("{e}"));
    let alerts = config.alerts.unwrap();
    let names: Vec<&str> = alerts.rules.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["login-failures", "waf-blocks", "auth-guessing", "prober", "upstream-errors"]);
}

/// `n` requests from `ip` for a path no route matches (404 `route.none`).
async fn probe(gw: &Gateway, ip: &str, n: usize) {
    for _ in 0..n {
        let (parts, _) = get_with(&gw.url("/wp-admin/setup.php"), &[("x-forwarded-for", ip)]).await;
        assert_eq!(parts.status, StatusCode::NOT_FOUND);
    }
}

#[tokio::test]
async fn one_address_tripping_several_defences_across_instances_is_one_prober_alert() {
    let redis = Redis::start();
    let hook = Receiver::start(0).await;
    let up = refusing_upstream().await;
    let rule = "kind = \"distinct_defences\"\nthreshold = 2\nwindow = \"3s\"\ncooldown = \"1m\"\n";
    let toml = |instance| {
        config(up, hook.addr, &redis.url, instance, rule)
            .replace(r#"match = { reason = ["login.failed"] }"#, r#"match = { action = ["deny", "log"] }"#)
    };
    let (a, b) = (gateway(&toml("gw-a")).await, gateway(&toml("gw-b")).await);
    // Many refusals of one kind from one address, on both instances: one defence.
    probe(&a, "198.51.100.7", 5).await;
    probe(&b, "198.51.100.7", 5).await;
    // The prober: a failed login (action `log`) on one instance, an unrouted
    // path (`deny`) on the other.
    fail_logins(&a, "203.0.113.66", 1).await;
    probe(&b, "203.0.113.66", 1).await;
    let alerts = hook.wait_for(1, Duration::from_secs(5)).await;
    assert_eq!(alerts[0]["kind"], "distinct_defences");
    assert_eq!(alerts[0]["group_by"], "client");
    assert_eq!(alerts[0]["group"], "203.0.113.66");
    assert_eq!(alerts[0]["count"], 2);
    assert_eq!(alerts[0]["top_clients"][0], serde_json::json!({"client_ip": "198.51.100.7", "count": 10}));
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(hook.count(), 1, "{:#?}", hook.alerts());
}

#[tokio::test]
async fn a_reload_that_changes_alerts_names_them_as_needing_a_restart() {
    let hook = Receiver::start(0).await;
    let up = refusing_upstream().await;
    let gw = gateway(&config(up, hook.addr, "memory", "gw-a", "threshold = 10\n")).await;
    // (Each parse has its own temporary directory, so `data_dir` differs too.)
    let (same, _dir) = common::config(&config(up, hook.addr, "memory", "gw-a", "threshold = 10\n"));
    let reloaded = gw.server.reload(same).await.unwrap();
    assert!(!reloaded.not_applied.contains(&"[alerts]"), "{reloaded:?}");
    let (changed, _dir) = common::config(&config(up, hook.addr, "memory", "gw-a", "threshold = 11\n"));
    let reloaded = gw.server.reload(changed).await.unwrap();
    assert!(reloaded.not_applied.contains(&"[alerts]"), "{reloaded:?}");
}
