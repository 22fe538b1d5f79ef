//! Rate limits through the running gateway (memory store): burst then 429
//! with Retry-After and RateLimit headers, keys by IP, subject and header,
//! exemptions, one event naming the limit.

use crate::common;

use std::time::SystemTime;

use common::*;
use jsonwebtoken::Algorithm;
use portcullis_policy::jwt::forge::TestKey;
use serde_json::json;

fn config(up: std::net::SocketAddr, key: &TestKey, extra: &str) -> String {
    format!(
        r#"
[[listener]]
name = "test"
bind = "127.0.0.1:0"

[[upstream]]
name = "app"
targets = ["http://{up}"]

[limits.per_ip]
key = "ip"
rate = "1/min"
burst = 3

[limits.per_user]
key = "subject"
rate = "1/min"
burst = 2

[limits.per_tenant]
key = "header:x-tenant"
rate = "1/min"
burst = 1

[[route]]
name = "open"
match = {{ path = "/open" }}
upstream = "app"
auth = "public"
limits = ["per_ip"]

[[route]]
name = "api"
match = {{ path = "/api/**" }}
upstream = "app"
auth = "jwt"
limits = ["per_user"]

[[route]]
name = "tenant"
match = {{ path = "/tenant" }}
upstream = "app"
auth = "public"
limits = ["per_tenant"]

[auth.jwt]
issuer = "https://idp.test/"
audience = "api"
keys = [{{ pem = """{pem}""" }}]

{extra}
"#,
        pem = key.public_pem.as_deref().unwrap()
    )
}

fn token(key: &TestKey, sub: &str) -> String {
    let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
    key.token(&json!({"iss": "https://idp.test/", "aud": "api", "sub": sub, "exp": now + 300, "roles": ["user"]}))
}

#[tokio::test]
async fn a_burst_passes_then_429_with_retry_after_and_ratelimit_headers() {
    let key = TestKey::generate(Algorithm::EdDSA, "k");
    let (up, seen) = named_upstream("app").await;
    let gw = gateway(&config(up, &key, "")).await;
    for remaining in ["2", "1", "0"] {
        let (parts, _) = get(&gw.url("/open")).await;
        assert_eq!(parts.status, 200);
        assert_eq!(parts.headers["ratelimit-policy"], "\"per_ip\";q=3;w=180");
        let rl = parts.headers["ratelimit"].to_str().unwrap();
        assert!(rl.starts_with(&format!("\"per_ip\";r={remaining};t=")), "{rl}");
    }
    let (parts, body) = get(&gw.url("/open")).await;
    assert_denied(&parts, &body, 429, "ratelimit.exceeded");
    let retry: u64 = parts.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((55..=60).contains(&retry), "{retry}");
    assert!(parts.headers["ratelimit"].to_str().unwrap().contains(";r=0;"));
    assert_eq!(seen.lock().unwrap().len(), 3, "the refused request never reached the upstream");
    let event = gw.events.last().unwrap();
    assert_eq!((event.reason, event.rule.as_deref(), event.status), ("ratelimit.exceeded", Some("per_ip"), 429));
}

#[tokio::test]
async fn subjects_have_their_own_budgets_and_headers_key_by_value() {
    let key = TestKey::generate(Algorithm::EdDSA, "k");
    let (up, _seen) = named_upstream("app").await;
    let gw = gateway(&config(up, &key, "")).await;
    let (alice, bob) = (token(&key, "alice"), token(&key, "bob"));
    let call = |t: &str| {
        let url = gw.url("/api/x");
        let header = format!("Bearer {t}");
        async move { get_with(&url, &[("authorization", &header)]).await.0.status.as_u16() }
    };
    assert_eq!([call(&alice).await, call(&alice).await, call(&alice).await], [200, 200, 429]);
    assert_eq!(call(&bob).await, 200, "bob's budget is his own");
    // Unauthenticated requests are refused by authentication, not counted.
    assert_eq!(get(&gw.url("/api/x")).await.0.status, 401);

    let tenant = |t: &'static str| {
        let url = gw.url("/tenant");
        async move { get_with(&url, &[("x-tenant", t)]).await.0.status.as_u16() }
    };
    assert_eq!([tenant("a").await, tenant("a").await, tenant("b").await], [200, 429, 200]);
    assert_eq!(get(&gw.url("/tenant")).await.0.status, 200, "no header: not counted");
}

#[tokio::test]
async fn exempt_networks_are_not_limited() {
    let key = TestKey::generate(Algorithm::EdDSA, "k");
    let (up, _seen) = named_upstream("app").await;
    let toml = config(up, &key, "").replace("burst = 3\n", "burst = 3\nexempt_ips = [\"127.0.0.0/8\"]\n");
    let gw = gateway(&toml).await;
    for _ in 0..10 {
        let (parts, _) = get(&gw.url("/open")).await;
        assert_eq!(parts.status, 200);
        assert!(!parts.headers.contains_key("ratelimit"));
    }
}

#[test]
fn limit_configuration_mistakes_are_refused() {
    let key = TestKey::generate(Algorithm::EdDSA, "k");
    let base = config("127.0.0.1:1".parse().unwrap(), &key, "");
    let cases = [
        (base.replace("rate = \"1/min\"\nburst = 3", "rate = \"fast\"\nburst = 3"), "invalid rate"),
        (base.replace("key = \"ip\"", "key = \"cookie\""), "unknown limit key"),
        (base.replace("limits = [\"per_ip\"]", "limits = [\"per_ipp\"]"), "unknown limit \"per_ipp\""),
        (base.replace("burst = 3", "burst = 0"), "burst must be a positive integer"),
        (base.replace("burst = 3", "burst = 3\non_store_failure = \"maybe\""), "unknown on_store_failure"),
    ];
    for (toml, message) in cases {
        let path = std::path::Path::new("/tmp/p.toml");
        let err = portcullis::config::parse(path, &toml, |_| None).unwrap_err();
        assert!(err.0.iter().any(|e| e.message.contains(message)), "{message}: {err}");
    }
}

/// A slow route fills its in-flight slots and gets 503 while another route
/// of the same upstream stays fast.
#[tokio::test]
async fn a_slow_route_is_capped_while_another_stays_fast() {
    // Slow requests wait for permits; released ones stay released.
    let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(0));
    let upstream_gate = gate.clone();
    let up = upstream(move |req| {
        let gate = upstream_gate.clone();
        async move {
            if req.uri().path().starts_with("/slow") {
                let _permit = gate.acquire().await;
            }
            http::Response::new(portcullis_layers::full("ok"))
        }
    })
    .await;
    let toml = simple_config(up, "").replace(
        "[[route]]\nmatch = { path = \"/**\" }",
        "[[route]]\nname = \"slow\"\nmatch = { path = \"/slow/**\" }\nupstream = \"app\"\nauth = \"public\"\nmax_in_flight = 2\n\n[[route]]\nmatch = { path = \"/**\" }",
    );
    assert!(toml.contains("max_in_flight"), "{toml}");
    let gw = gateway(&toml).await;
    // Three slow requests at once: two take the slots and wait, the third is
    // refused at once, whichever it is.
    let mut requests: Vec<_> = (0..3)
        .map(|_| {
            let url = gw.url("/slow/x");
            tokio::spawn(async move { get(&url).await })
        })
        .collect();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let refused = loop {
        assert!(std::time::Instant::now() < deadline, "no request was refused");
        if let Some(i) = requests.iter().position(tokio::task::JoinHandle::is_finished) {
            break requests.remove(i).await.unwrap();
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    };
    let (parts, body) = refused;
    assert_denied(&parts, &body, 503, "concurrency.route");
    assert_eq!(parts.headers["retry-after"], "1");
    assert_eq!(gw.events.last().unwrap().rule.as_deref(), Some("slow"));
    assert!(requests.iter().all(|r| !r.is_finished()), "the other two wait for the upstream");
    // The other route is unaffected.
    assert_eq!(get(&gw.url("/fast")).await.0.status, 200);
    gate.add_permits(1000);
    for request in requests {
        assert_eq!(request.await.unwrap().0.status, 200);
    }
    // The slots came back.
    assert_eq!(get(&gw.url("/slow/again")).await.0.status, 200);
}

/// One address cannot hold more than `max_connections_per_ip` connections;
/// closing one frees its slot.
#[tokio::test]
async fn connections_per_ip_are_capped_at_accept() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (up, _seen) = named_upstream("app").await;
    let gw =
        gateway(&simple_config(up, "").replace("[[listener]]", "[server]\nmax_connections_per_ip = 2\n\n[[listener]]"))
            .await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
        // A complete keep-alive request: the connection stays open after it.
        s.write_all(b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n").await.unwrap();
        let mut buf = [0u8; 512];
        let n = s.read(&mut buf).await.unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
        held.push(s);
    }
    let mut third = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let _ = third.write_all(b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n").await;
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(std::time::Duration::from_secs(5), third.read(&mut buf)).await.unwrap().unwrap_or(0);
    assert_eq!(n, 0, "the third connection is closed without an answer");
    eventually("conn.per_ip event", std::time::Duration::from_secs(5), || gw.events.reasons().contains(&"conn.per_ip"))
        .await;
    drop(held.pop());
    // The freed slot is taken by a new connection (once the gateway has seen
    // the close).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let mut s = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
        let _ = s.write_all(b"GET /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").await;
        let mut answer = Vec::new();
        let _ = s.read_to_end(&mut answer).await;
        if answer.starts_with(b"HTTP/1.1 200") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the slot was never freed");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn the_gateways_own_endpoints_have_a_per_ip_limit_by_default() {
    let (up, _) = named_upstream("app").await;
    let gw = gateway(&simple_config(up, "[headers]\ncsp_report = true\n")).await;
    let report = || {
        let body = r#"{"csp-report":{"document-uri":"https://a.test/","violated-directive":"script-src","blocked-uri":"https://x.test/a.js"}}"#;
        http::Request::post(gw.url("/.portcullis/csp-report"))
            .header("content-type", "application/csp-report")
            .body(full_body(body))
            .unwrap()
    };
    // A burst of 30, then refusals naming the built-in limit. The limit
    // refills at 10/s while the burst is sent, so a slow machine may pass a
    // few more: count the passes before the first refusal and allow what
    // the refill can explain.
    let start = std::time::Instant::now();
    let mut passed = 0u32;
    let (parts, body) = loop {
        let (parts, body) = send(report()).await;
        if parts.status != 204 {
            break (parts, body);
        }
        passed += 1;
        assert!(passed <= 1000, "no refusal after 1000 reports");
    };
    let refill = (start.elapsed().as_secs_f64() * 10.0).ceil() as u32;
    assert!((30..=30 + refill).contains(&passed), "{passed} reports passed; burst 30, refill allowance {refill}");
    assert_denied(&parts, &body, 429, "ratelimit.exceeded");
    assert_eq!(gw.events.last().unwrap().rule.as_deref(), Some("portcullis.endpoints"));
    // Proxied routes are not affected.
    assert_eq!(get(&gw.url("/x")).await.0.status, 200);

    let (up, _) = named_upstream("app").await;
    let tight = simple_config(
        up,
        "[server]\nendpoint_limits = [\"one\"]\n\n[limits.one]\nkey = \"ip\"\nrate = \"1/min\"\nburst = 1\n",
    );
    let gw = gateway(&tight).await;
    assert_eq!(get(&gw.url("/.portcullis/nothing")).await.0.status, 404);
    let (parts, body) = get(&gw.url("/.portcullis/nothing")).await;
    assert_denied(&parts, &body, 429, "ratelimit.exceeded");

    let (up, _) = named_upstream("app").await;
    let gw = gateway(&simple_config(up, "[server]\nendpoint_limits = []\n")).await;
    for _ in 0..40 {
        assert_eq!(get(&gw.url("/.portcullis/nothing")).await.0.status, 404);
    }
}
