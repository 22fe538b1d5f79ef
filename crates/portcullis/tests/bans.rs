//! Automatic bans through the running gateway (memory state): refusals
//! counted per client, the ban issued with an event, banned clients refused
//! at accept (direct) or per request (behind a trusted proxy), lifted bans
//! let through again; refusals the client did not cause never ban.

use crate::common;

use std::time::Duration;

use common::*;
use portcullis_policy::Action;

fn config(up: std::net::SocketAddr, extra: &str) -> String {
    format!(
        r#"
[[listener]]
name = "test"
bind = "127.0.0.1:0"

[[upstream]]
name = "app"
targets = ["http://{up}"]

[[upstream]]
name = "dead"
targets = ["http://127.0.0.1:9"]
connect_timeout = "200ms"

[[route]]
name = "keys"
match = {{ path = "/api/**" }}
upstream = "app"
auth = "api_key"

[[route]]
name = "dead"
match = {{ path = "/dead" }}
upstream = "dead"
auth = "public"

[[route]]
name = "open"
match = {{ path = "/**" }}
upstream = "app"
auth = "public"

[[ban]]
name = "guessers"
on = ["auth.failed"]
count = 3
within = "1m"
duration = "10m"

[[ban]]
name = "broken"
on = ["upstream.connect", "malformed"]
count = 1
within = "1m"
duration = "10m"
exempt_ips = ["198.51.100.0/24"]

[auth.api_key]
cache_ttl = "0s"

{extra}
"#
    )
}

const BAD_KEY: (&str, &str) =
    ("authorization", "Bearer pcl_0123456789abcdef_notasecretatallnotasecretatallnotasecretatal");

#[tokio::test]
async fn the_count_th_refusal_bans_and_the_next_connection_is_closed_at_accept() {
    let (up, _) = named_upstream("app").await;
    let gw = gateway(&config(up, "")).await;
    for i in 1..=2 {
        let (parts, body) = get_with(&gw.url("/api/x"), &[BAD_KEY]).await;
        assert_eq!(parts.status, 401, "attempt {i}: {body:?}");
        assert!(parts.headers.get("connection").is_none());
    }
    assert!(gw.server.bans().list().await.unwrap().is_empty(), "two refusals do not ban");
    let (parts, _) = get_with(&gw.url("/api/x"), &[BAD_KEY]).await;
    assert_eq!(parts.status, 401);
    assert_eq!(parts.headers["connection"], "close", "the banning answer ends the connection");
    let issued = gw.events.0.lock().unwrap().iter().find(|e| e.reason == "ban.issued").cloned().expect("ban event");
    assert_eq!(issued.action, Action::Ban);
    assert_eq!(issued.rule.as_deref(), Some("guessers"));
    assert_eq!(issued.client_ip.to_string(), "127.0.0.1");
    assert!(issued.detail.as_deref().unwrap().contains("after 3 refusals within 1m"), "{issued:?}");
    let bans = gw.server.bans().list().await.unwrap();
    assert_eq!(bans.len(), 1);
    assert_eq!((bans[0].target_text().as_str(), bans[0].rule.as_str()), ("127.0.0.1", "guessers"));

    // Now even a public page is out of reach: the socket is closed unanswered.
    let refused = client().get(gw.url("/hello").parse().unwrap()).await;
    assert!(refused.is_err(), "a banned client got an answer: {refused:?}");
    eventually("ban.active event", Duration::from_secs(5), || gw.events.reasons().contains(&"ban.active")).await;
    let active = gw.events.0.lock().unwrap().iter().filter(|e| e.reason == "ban.active").count();
    let _ = client().get(gw.url("/hello").parse().unwrap()).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        gw.events.0.lock().unwrap().iter().filter(|e| e.reason == "ban.active").count(),
        active,
        "one event per banned address per interval, not per connection"
    );

    assert!(gw.server.bans().lift("127.0.0.1".parse().unwrap()).await.unwrap());
    assert!(!gw.server.bans().lift("127.0.0.1".parse().unwrap()).await.unwrap(), "already lifted");
    assert_eq!(get(&gw.url("/hello")).await.0.status, 200);
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_client_is_banned_per_request_not_the_proxy() {
    let (up, seen) = named_upstream("app").await;
    let gw = gateway(&config(up, "[server]\ntrusted_proxies = [\"127.0.0.1/32\"]")).await;
    let from = |ip: &'static str| ("x-forwarded-for", ip);
    for _ in 0..3 {
        assert_eq!(get_with(&gw.url("/api/x"), &[BAD_KEY, from("2001:db8:7:7::1")]).await.0.status, 401);
    }
    let calls = seen.lock().unwrap().len();
    // Another address of the same /64 is banned too, with Retry-After.
    let (parts, body) = get_with(&gw.url("/hello"), &[from("2001:db8:7:7::beef")]).await;
    assert_denied(&parts, &body, 403, "ban.active");
    let retry: u64 = parts.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((590..=600).contains(&retry), "{retry}");
    assert_eq!(parts.headers["connection"], "close");
    assert_eq!(seen.lock().unwrap().len(), calls, "the upstream never saw the banned client");
    // The proxy and its other clients are unaffected.
    assert_eq!(get_with(&gw.url("/hello"), &[from("2001:db8:7:8::1")]).await.0.status, 200);
    assert_eq!(get(&gw.url("/hello")).await.0.status, 200);
}

#[tokio::test]
async fn refusals_the_client_did_not_cause_or_exempt_clients_never_ban() {
    let (up, _) = named_upstream("app").await;
    let gw = gateway(&config(up, "[server]\ntrusted_proxies = [\"127.0.0.1/32\"]")).await;
    // 502 from a dead upstream is not the client's doing, even though the
    // rule names it (and the config accepts the code).
    for _ in 0..3 {
        assert_eq!(get(&gw.url("/dead")).await.0.status, 502);
    }
    // A malformed path bans at once under `broken`, except for exempt clients.
    let (parts, _) = get_with(&gw.url("/a%zz"), &[("x-forwarded-for", "198.51.100.4")]).await;
    assert_eq!(parts.status, 400);
    assert!(gw.server.bans().list().await.unwrap().is_empty(), "{:?}", gw.server.bans().list().await);
    let (parts, _) = get_with(&gw.url("/a%zz"), &[("x-forwarded-for", "203.0.113.4")]).await;
    assert_eq!(parts.status, 400);
    let bans = gw.server.bans().list().await.unwrap();
    assert_eq!(bans.len(), 1);
    assert_eq!((bans[0].target_text().as_str(), bans[0].rule.as_str()), ("203.0.113.4", "broken"));
}

#[test]
fn unknown_reasons_and_bad_counts_are_config_errors() {
    for (rule, expected) in [
        ("on = [\"jwt.nope\"]\ncount = 3\nwithin = \"1m\"\nduration = \"1m\"", "unknown reason code \"jwt.nope\""),
        ("on = [\"auth.failed\"]\ncount = 0\nwithin = \"1m\"\nduration = \"1m\"", "count is out of range"),
        ("on = [\"auth.failed\"]\ncount = 3\nwithin = \"0s\"\nduration = \"1m\"", "within must be greater than zero"),
        ("on = [\"auth.failed\"]\ncount = 3\nwithin = \"1m\"", "missing field `duration`"),
    ] {
        let toml = simple_config("127.0.0.1:1".parse().unwrap(), &format!("[[ban]]\n{rule}\n"));
        let err = portcullis::config::parse(std::path::Path::new("p.toml"), &toml, |_| None).unwrap_err().to_string();
        assert!(err.contains(expected), "{rule}: {err}");
    }
}
