//! The admin listener: bearer token required (refusals are events), metrics
//! labelled by limit and reason, bans added, listed and lifted over the API
//! and with `portcullis ban` through the real binary.

use crate::common;

use std::process::Command;

use common::*;

const TOKEN: &str = "0123456789abcdef0123456789abcdef-admin";

fn config(up: std::net::SocketAddr, admin_port: u16) -> String {
    simple_config(
        up,
        &format!(
            r#"
[server]
trusted_proxies = ["127.0.0.1/32"]

[admin]
bind = "127.0.0.1:{admin_port}"
token = "{TOKEN}"

[limits.admin_test_limit]
key = "ip"
rate = "1/min"
burst = 1

[[route]]
name = "limited"
match = {{ path = "/limited" }}
upstream = "app"
auth = "public"
limits = ["admin_test_limit"]
"#
        ),
    )
}

async fn admin(
    gw: &Gateway,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (http::response::Parts, bytes::Bytes) {
    let addr = gw.server.addr("admin").unwrap();
    let mut req = http::Request::builder().method(method).uri(format!("http://{addr}{path}"));
    if let Some(token) = token {
        req = req.header("authorization", format!("Bearer {token}"));
    }
    send(req.header("content-type", "application/json").body(full_body(body.to_owned())).unwrap()).await
}

#[tokio::test]
async fn the_token_is_required_and_a_wrong_one_is_an_event_without_the_token() {
    let (up, _) = named_upstream("app").await;
    let gw = gateway(&config(up, 0)).await;
    for token in [None, Some("wrong-token"), Some(&TOKEN[..TOKEN.len() - 1])] {
        let (parts, body) = admin(&gw, "GET", "/bans", token, "").await;
        assert_eq!(parts.status, 401, "{token:?}");
        assert_eq!(json(&body)["error"], "admin.unauthorized");
        assert!(parts.headers["www-authenticate"].to_str().unwrap().starts_with("Bearer"));
    }
    let events = gw.events.0.lock().unwrap().clone();
    let refused: Vec<_> = events.iter().filter(|e| e.reason == "admin.unauthorized").collect();
    assert_eq!(refused.len(), 3);
    assert_eq!(refused[0].listener, "admin");
    assert!(events.iter().all(|e| !e.to_json_line().contains("wrong-token")));
    assert_eq!(admin(&gw, "GET", "/bans", Some(TOKEN), "").await.0.status, 200);
}

#[tokio::test]
async fn metrics_count_limit_checks_and_events_by_name() {
    let (up, _) = named_upstream("app").await;
    let gw = gateway(&config(up, 0)).await;
    assert_eq!(get(&gw.url("/limited")).await.0.status, 200);
    for _ in 0..2 {
        assert_eq!(get(&gw.url("/limited")).await.0.status, 429);
    }
    let (parts, body) = admin(&gw, "GET", "/metrics", Some(TOKEN), "").await;
    assert_eq!(parts.status, 200);
    assert!(parts.headers["content-type"].to_str().unwrap().starts_with("text/plain"));
    let text = String::from_utf8(body.to_vec()).unwrap();
    let value = |prefix: &str, labels: &[&str]| -> u64 {
        text.lines()
            .find(|l| l.starts_with(prefix) && labels.iter().all(|label| l.contains(label)))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or_else(|| panic!("no {prefix} {labels:?} in:\n{text}"))
    };
    let checks = "portcullis_ratelimit_checks_total{";
    assert_eq!(value(checks, &["limit=\"admin_test_limit\"", "result=\"allowed\""]), 1);
    assert_eq!(value(checks, &["limit=\"admin_test_limit\"", "result=\"limited\""]), 2);
    let events = "portcullis_events_total{";
    assert_eq!(value(events, &["reason=\"ratelimit.exceeded\"", "rule=\"admin_test_limit\"", "action=\"deny\""]), 2);
}

#[tokio::test]
async fn waf_events_are_counted_by_route_not_by_the_rule_ids_the_request_matched() {
    let (up, _) = named_upstream("app").await;
    let crs = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/crs");
    let gw = gateway(&format!(
        r#"
[[listener]]
name = "test"
bind = "127.0.0.1:0"

[[upstream]]
name = "app"
targets = ["http://{up}"]

[[route]]
name = "search"
match = {{ path = "/search" }}
upstream = "app"
auth = "public"

[admin]
bind = "127.0.0.1:0"
token = "{TOKEN}"

[waf]
rules = "{crs}"
"#
    ))
    .await;
    // SQL injections that match different sets of CRS rules: each set was a
    // label value of its own, so a client could add series without bound.
    let attacks = ["1%20or%201=1", "1)%20union%20select%201,2,3--", "1%20AND%20SLEEP(5)", "admin'--"];
    for attack in attacks {
        let (parts, body) = get(&gw.url(&format!("/search?q={attack}"))).await;
        assert_denied(&parts, &body, 403, "waf.sqli");
    }
    let rules: std::collections::BTreeSet<_> =
        gw.events.0.lock().unwrap().iter().map(|e| e.rule.clone().unwrap()).collect();
    assert!(rules.len() > 1, "the attacks should match different rule sets: {rules:?}");

    let (_, body) = admin(&gw, "GET", "/metrics", Some(TOKEN), "").await;
    let text = String::from_utf8(body.to_vec()).unwrap();
    let series: Vec<&str> = text.lines().filter(|l| l.starts_with("portcullis_events_total{defence=\"waf\"")).collect();
    assert_eq!(
        series,
        [r#"portcullis_events_total{defence="waf",reason="waf.sqli",action="deny",rule="search"} 4"#],
        "{text}"
    );
}

#[tokio::test]
async fn bans_are_added_listed_and_lifted_over_the_api() {
    let (up, seen) = named_upstream("app").await;
    let gw = gateway(&config(up, 0)).await;
    let from = [("x-forwarded-for", "203.0.113.77")];
    let (parts, body) =
        admin(&gw, "POST", "/bans", Some(TOKEN), r#"{"target": "203.0.113.77", "duration": "1h"}"#).await;
    assert_eq!(parts.status, 201, "{body:?}");
    assert_eq!(json(&body)["rule"], "manual");
    let calls = seen.lock().unwrap().len();
    let (parts, body) = get_with(&gw.url("/x"), &from).await;
    assert_denied(&parts, &body, 403, "ban.active");
    assert_eq!(seen.lock().unwrap().len(), calls);

    let (_, body) = admin(&gw, "GET", "/bans", Some(TOKEN), "").await;
    let listed = json(&body);
    assert_eq!(listed["bans"][0]["target"], "203.0.113.77");
    assert_eq!(listed["bans"].as_array().unwrap().len(), 1);

    for bad in [r#"{"target": "nope", "duration": "1h"}"#, r#"{"target": "10.0.0.1", "duration": "0s"}"#, "{"] {
        assert_eq!(admin(&gw, "POST", "/bans", Some(TOKEN), bad).await.0.status, 400, "{bad}");
    }
    assert_eq!(admin(&gw, "DELETE", "/bans/203.0.113.77", Some(TOKEN), "").await.0.status, 204);
    assert_eq!(admin(&gw, "DELETE", "/bans/203.0.113.77", Some(TOKEN), "").await.0.status, 404);
    assert_eq!(get_with(&gw.url("/x"), &from).await.0.status, 200);
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ban_command_works_against_a_running_gateway() {
    let (up, _) = named_upstream("app").await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("portcullis.toml");
    std::fs::write(&path, format!("{}\n[log]\nformat = \"json\"\n", config(up, free_port()))).unwrap();
    let gw = Process::start(&path);
    let ban = |args: &[&str]| {
        let out = Command::new(binary()).arg("ban").args(args).arg("--config").arg(&path).output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, _, err) = ban(&["add", "--for", "2h", "2001:db8:5:6::1"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("banned 2001:db8:5:6::/64 for 2h"), "{err}");
    let from = [("x-forwarded-for", "2001:db8:5:6::99")];
    let (parts, body) = get_with(&format!("http://{}/x", gw.addr), &from).await;
    assert_denied(&parts, &body, 403, "ban.active");

    let (code, out, err) = ban(&["list", "--json"]);
    assert_eq!(code, Some(0), "{err}");
    let listed: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(listed[0]["target"], "2001:db8:5:6::/64");
    assert_eq!(listed[0]["rule"], "manual");
    let (_, table, _) = ban(&["list"]);
    assert!(table.starts_with("TARGET") && table.contains("2001:db8:5:6::/64"), "{table}");

    let (code, _, err) = ban(&["lift", "2001:db8:5:6::/64"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(get_with(&format!("http://{}/x", gw.addr), &from).await.0.status, 200);
    let (code, _, err) = ban(&["lift", "2001:db8:5:6::/64"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("no ban on 2001:db8:5:6::/64"), "{err}");
    let (code, _, err) = ban(&["lift", "not-an-ip"]);
    assert_eq!(code, Some(2), "{err}");
}

#[test]
fn memory_state_without_an_admin_api_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("portcullis.toml");
    std::fs::write(&path, simple_config("127.0.0.1:1".parse().unwrap(), "")).unwrap();
    let out = Command::new(binary()).args(["ban", "list", "--config"]).arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("configure [admin]"));
}

#[test]
fn short_admin_tokens_are_refused() {
    let toml = simple_config("127.0.0.1:1".parse().unwrap(), "[admin]\nbind = \"127.0.0.1:0\"\ntoken = \"short\"\n");
    let err = portcullis::config::parse(std::path::Path::new("p.toml"), &toml, |_| None).unwrap_err().to_string();
    assert!(err.contains("shorter than 32") && !err.contains("\"short\""), "{err}");
}
