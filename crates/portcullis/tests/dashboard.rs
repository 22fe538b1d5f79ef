//! The admin API's operator side: health and readiness, recent events
//! (paged, filtered, live as server-sent events), chart data, upstream
//! health, API keys, reload through the real binary, and the dashboard's
//! sign-in (cookie session, CSRF) — over HTTP here; the page itself runs in
//! headless Chromium in `pages.rs`.

use crate::common;

use std::time::Duration;

use common::*;
use futures_util::StreamExt;
use http_body_util::BodyExt;

pub const TOKEN: &str = "0123456789abcdef0123456789abcdef-admin";

/// A gateway with an admin API and trusted proxies (so tests can speak for
/// many clients with `X-Forwarded-For`); `extra` is appended.
pub fn config(up: std::net::SocketAddr, extra: &str) -> String {
    simple_config(
        up,
        &format!(
            r#"
[server]
trusted_proxies = ["127.0.0.1/32"]

[admin]
bind = "127.0.0.1:0"
token = "{TOKEN}"
{extra}
"#
        ),
    )
}

pub async fn admin_request(
    gw: &Gateway,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (http::response::Parts, bytes::Bytes) {
    let addr = gw.server.addr("admin").unwrap();
    let mut req = http::Request::builder().method(method).uri(format!("http://{addr}{path}"));
    if !body.is_empty() && !headers.iter().any(|(name, _)| *name == "content-type") {
        req = req.header("content-type", "application/json");
    }
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    send(req.body(full_body(body.to_owned())).unwrap()).await
}

const BEARER: (&str, &str) = ("authorization", "Bearer 0123456789abcdef0123456789abcdef-admin");

/// A request the path defence refuses (400 `path.double_encoding`), from `client`.
pub async fn denied_from(gw: &Gateway, client: &str) {
    let (parts, _) = get_with(&gw.url("/x/%252e%252e/admin"), &[("x-forwarded-for", client)]).await;
    assert_eq!(parts.status, 400);
}

#[tokio::test]
async fn health_is_open_and_readiness_names_what_is_not_ready() {
    let (up, _) = named_upstream("app").await;
    let gw = gateway(&config(up, "")).await;
    let (parts, body) = admin_request(&gw, "GET", "/health", &[], "").await;
    assert_eq!(parts.status, 200);
    assert_eq!(json(&body)["status"], "ok");
    let (parts, body) = admin_request(&gw, "GET", "/ready", &[], "").await;
    assert_eq!(parts.status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(json(&body), serde_json::json!({"ready": true, "checks": {"serving": true}}));
    assert_eq!(parts.headers["cache-control"], "no-store");
    assert!(parts.headers["content-security-policy"].to_str().unwrap().contains("script-src 'self'"));

    // An issuer whose JWKS cannot be fetched: the gateway serves (its
    // tokens fail closed) but is not ready; it names the check, not the URL.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let jwt = format!(
        r#"
[[auth.jwt]]
issuer = "https://issuer.test"
audience = "api"
algorithms = ["RS256"]
jwks_url = "http://{dead}/jwks.json"
"#
    );
    let gw = gateway(&config(up, &jwt)).await;
    let (parts, body) = admin_request(&gw, "GET", "/ready", &[], "").await;
    assert_eq!(parts.status, 503);
    assert_eq!(json(&body), serde_json::json!({"ready": false, "checks": {"serving": true, "jwks": false}}));
    assert!(!String::from_utf8_lossy(&body).contains(&dead.to_string()));
}

#[tokio::test]
async fn readiness_follows_redis() {
    let redis = common::redis::Redis::start();
    let (up, _) = named_upstream("app").await;
    let gw = gateway(&config(up, &format!("[state]\nshared = \"{}\"\n", redis.url))).await;
    let (parts, body) = admin_request(&gw, "GET", "/ready", &[], "").await;
    assert_eq!(parts.status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(json(&body)["checks"]["redis"], true);
    drop(redis);
    let (parts, body) = admin_request(&gw, "GET", "/ready", &[], "").await;
    assert_eq!(parts.status, 503);
    assert_eq!(json(&body)["checks"]["redis"], false);
}

#[tokio::test]
async fn recent_events_are_paged_and_filtered() {
    let (up, _) = named_upstream("app").await;
    let gw = gateway(&config(up, "")).await;
    for i in 0..30 {
        denied_from(&gw, &format!("203.0.113.{}", i % 3)).await;
    }
    let (parts, _) = admin_request(&gw, "GET", "/events", &[], "").await;
    assert_eq!(parts.status, 401, "events need the token");

    let (parts, body) = admin_request(&gw, "GET", "/events?limit=10", &[BEARER], "").await;
    assert_eq!(parts.status, 200);
    let page = json(&body);
    let events = page["events"].as_array().unwrap();
    assert_eq!(events.len(), 10);
    // The request to /events without a token is the newest event.
    assert_eq!(events[0]["reason"], "admin.unauthorized");
    assert!(events.windows(2).all(|w| w[0]["id"].as_u64() > w[1]["id"].as_u64()), "newest first");
    let next = page["next"].as_u64().unwrap();
    let (_, body) = admin_request(&gw, "GET", &format!("/events?limit=10&before={next}"), &[BEARER], "").await;
    let second = json(&body);
    assert!(second["events"][0]["id"].as_u64().unwrap() < next);

    let (_, body) = admin_request(&gw, "GET", "/events?client=203.0.113.1&reason=path&limit=500", &[BEARER], "").await;
    let selected = json(&body);
    let selected = selected["events"].as_array().unwrap();
    assert_eq!(selected.len(), 10);
    assert!(selected.iter().all(|e| e["client_ip"] == "203.0.113.1" && e["reason"] == "path.double_encoding"));

    for bad in ["/events?client=not-an-ip", "/events?limit=many", "/events?color=red"] {
        let (parts, body) = admin_request(&gw, "GET", bad, &[BEARER], "").await;
        assert_eq!(parts.status, 400, "{bad}");
        assert_eq!(json(&body)["error"], "request.invalid");
    }

    // The chart data counts them by defence and client.
    let (_, body) = admin_request(&gw, "GET", "/stats", &[BEARER], "").await;
    let stats = json(&body);
    let path_denials: u64 =
        stats["minutes"].as_array().unwrap().iter().filter_map(|m| m["denials"]["path"].as_u64()).sum();
    assert_eq!(path_denials, 30);
    assert_eq!(stats["top_clients"].as_array().unwrap().len(), 4, "three clients and the admin caller: {stats}");
    assert_eq!(stats["top_clients"][0]["denials"], 10);
}

/// Reads server-sent events from `body` until `want` data lines arrived.
async fn read_events(body: hyper::body::Incoming, want: usize) -> Vec<serde_json::Value> {
    let mut stream = body.into_data_stream();
    let mut text = String::new();
    let mut found = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while found.len() < want {
        let chunk = tokio::time::timeout_at(deadline, stream.next()).await.expect("events arrive").unwrap().unwrap();
        text.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = text.find("\n\n") {
            let block: String = text.drain(..end + 2).collect();
            for line in block.lines() {
                if let Some(data) = line.strip_prefix("data: ").or_else(|| line.strip_prefix("data:")) {
                    found.push(serde_json::from_str(data).unwrap());
                }
            }
        }
    }
    found
}

#[tokio::test]
async fn the_event_stream_sends_matching_events_as_they_happen_and_resumes() {
    let (up, _) = named_upstream("app").await;
    let gw = gateway(&config(up, "")).await;
    let addr = gw.server.addr("admin").unwrap();
    let request = http::Request::get(format!("http://{addr}/events?client=198.51.100.7"))
        .header("accept", "text/event-stream")
        .header(BEARER.0, BEARER.1)
        .body(portcullis_layers::empty())
        .unwrap();
    let response = client().request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    // Another client's denial is not sent; this one's are, in order.
    denied_from(&gw, "198.51.100.8").await;
    denied_from(&gw, "198.51.100.7").await;
    denied_from(&gw, "198.51.100.7").await;
    let events = read_events(response.into_body(), 2).await;
    assert!(events.iter().all(|e| e["client_ip"] == "198.51.100.7" && e["reason"] == "path.double_encoding"));
    let first = events[0]["id"].as_u64().unwrap();
    assert!(events[1]["id"].as_u64().unwrap() > first);

    // A reconnecting EventSource names the last id it saw: what came after is replayed.
    let request = http::Request::get(format!("http://{addr}/events?client=198.51.100.7"))
        .header("accept", "text/event-stream")
        .header("last-event-id", first.to_string())
        .header(BEARER.0, BEARER.1)
        .body(portcullis_layers::empty())
        .unwrap();
    let response = client().request(request).await.unwrap();
    let replayed = read_events(response.into_body(), 1).await;
    assert_eq!(replayed[0]["id"], events[1]["id"]);
}

#[tokio::test]
async fn upstream_health_shows_a_failing_target() {
    let (up, _) = named_upstream("app").await;
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let extra = format!(
        r#"
[[upstream]]
name = "gone"
targets = ["http://{dead}"]

[[route]]
name = "gone"
match = {{ path = "/gone/**" }}
upstream = "gone"
auth = "public"
"#
    );
    let gw = gateway(&config(up, &extra)).await;
    let (_, body) = admin_request(&gw, "GET", "/upstreams", &[BEARER], "").await;
    assert!(json(&body)["targets"].as_array().unwrap().iter().all(|t| t["healthy"] == true), "{}", json(&body));
    let (parts, _) = get(&gw.url("/gone/x")).await;
    assert_eq!(parts.status, 502);
    let (_, body) = admin_request(&gw, "GET", "/upstreams", &[BEARER], "").await;
    let targets = json(&body);
    let gone = targets["targets"].as_array().unwrap().iter().find(|t| t["upstream"] == "gone").unwrap().clone();
    assert_eq!(gone["healthy"], false, "{targets}");
    assert!(gone["retry_in_seconds"].as_u64().unwrap() >= 1);
    let app = targets["targets"].as_array().unwrap().iter().find(|t| t["upstream"] == "app").unwrap().clone();
    assert_eq!(app["healthy"], true);
}

#[tokio::test]
async fn api_keys_are_created_listed_and_revoked_over_the_api() {
    let (up, _) = named_upstream("app").await;
    let dir = tempfile::tempdir().unwrap();
    let extra = format!(
        r#"
[state]
store = "sqlite://{}/store.db"

[auth.api_key]
header = "x-api-key"

[[route]]
name = "machines"
match = {{ path = "/machines/**" }}
upstream = "app"
auth = ["api_key"]
"#,
        dir.path().display()
    );
    let gw = gateway(&config(up, &extra)).await;
    let (_, body) = admin_request(&gw, "GET", "/ready", &[], "").await;
    assert_eq!(json(&body)["checks"]["store"], true);
    let (parts, body) =
        admin_request(&gw, "POST", "/api-keys", &[BEARER], r#"{"name": "billing", "roles": ["svc"], "expires": "1d"}"#)
            .await;
    assert_eq!(parts.status, 201, "{}", String::from_utf8_lossy(&body));
    let created = json(&body);
    let key = created["key"].as_str().unwrap().to_owned();
    let id = created["id"].as_str().unwrap().to_owned();
    assert!(key.starts_with("pcl_"));

    let (parts, _) = get_with(&gw.url("/machines/x"), &[("x-api-key", &key)]).await;
    assert_eq!(parts.status, 200, "the new key works at once");
    let (_, body) = admin_request(&gw, "GET", "/api-keys", &[BEARER], "").await;
    let listed = json(&body);
    assert_eq!(listed["keys"][0]["id"], id.as_str());
    assert!(!String::from_utf8_lossy(&body).contains(&key), "listings never show a key");

    let (parts, _) = admin_request(&gw, "DELETE", &format!("/api-keys/{id}"), &[BEARER], "").await;
    assert_eq!(parts.status, 204);
    let (parts, _) = admin_request(&gw, "DELETE", "/api-keys/0000000000000000", &[BEARER], "").await;
    assert_eq!(parts.status, 404);
    for bad in [r#"{"name": ""}"#, r#"{"name": "x", "expires": "soon"}"#, r#"{"name": "x", "roles": ["a b"]}"#, "[]"] {
        let (parts, _) = admin_request(&gw, "POST", "/api-keys", &[BEARER], bad).await;
        assert_eq!(parts.status, 400, "{bad}");
    }
}

/// The cookies an answer sets, as `name=value` pairs.
fn set_cookies(parts: &http::response::Parts) -> Vec<String> {
    parts
        .headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn the_dashboard_signs_in_with_the_token_into_a_cookie_session_guarded_against_csrf() {
    let (up, _) = named_upstream("app").await;
    let gw = gateway(&config(up, "")).await;
    let (parts, body) = admin_request(&gw, "GET", "/", &[], "").await;
    assert_eq!(parts.status, 200);
    let page = String::from_utf8_lossy(&body).into_owned();
    assert!(page.contains("<form method=\"post\" action=\"/login\">"), "{page}");
    let raw = parts.headers["set-cookie"].to_str().unwrap();
    assert!(raw.contains("HttpOnly") && raw.contains("SameSite=Strict"), "{raw}");
    let login_cookie = set_cookies(&parts).remove(0);
    let nonce = login_cookie.split_once('=').unwrap().1.to_owned();
    assert!(page.contains(&nonce), "the form carries the same token");

    let form = |token: &str, nonce: &str| format!("token={token}&form_token={nonce}");
    let form_type = ("content-type", "application/x-www-form-urlencoded");
    // No form token (a form posted from another site cannot read it).
    let (parts, _) = admin_request(&gw, "POST", "/login", &[form_type], &form(TOKEN, "")).await;
    assert_eq!(parts.status, 403);
    // The right form token, but the browser says it came from elsewhere.
    let cookie = ("cookie", login_cookie.as_str());
    let cross = ("sec-fetch-site", "cross-site");
    let (parts, _) = admin_request(&gw, "POST", "/login", &[form_type, cookie, cross], &form(TOKEN, &nonce)).await;
    assert_eq!(parts.status, 403);
    // A wrong token.
    let (parts, body) = admin_request(&gw, "POST", "/login", &[form_type, cookie], &form("guess", &nonce)).await;
    assert_eq!(parts.status, 401);
    assert!(String::from_utf8_lossy(&body).contains("role=\"alert\""));
    let reasons = gw.events.reasons();
    assert_eq!(reasons.iter().filter(|r| **r == "admin.csrf").count(), 2);
    assert!(reasons.contains(&"admin.unauthorized"));
    let logged =
        serde_json::to_string(&*gw.events.0.lock().unwrap().iter().map(|e| e.to_json_line()).collect::<Vec<_>>())
            .unwrap();
    assert!(!logged.contains(TOKEN) && !logged.contains("guess"), "no token in events");

    // The right token: a session cookie, HttpOnly, and a redirect to the dashboard.
    let (parts, _) = admin_request(&gw, "POST", "/login", &[form_type, cookie], &form(TOKEN, &nonce)).await;
    assert_eq!(parts.status, 303);
    assert_eq!(parts.headers["location"], "/");
    let session = set_cookies(&parts).into_iter().find(|c| c.starts_with("portcullis-admin=")).unwrap();
    assert!(!session.contains(TOKEN), "the cookie is not the token");
    let session_cookie = ("cookie", session.as_str());
    let (parts, body) = admin_request(&gw, "GET", "/", &[session_cookie], "").await;
    assert_eq!(parts.status, 200);
    let page = String::from_utf8_lossy(&body).into_owned();
    let csrf = page.split("name=\"csrf-token\" content=\"").nth(1).unwrap().split('"').next().unwrap().to_owned();
    assert!(page.contains("<script src=\"/assets/dashboard.js\" defer></script>"));
    assert!(!page.contains("<script>") && !page.contains("style="), "nothing inline");

    // The cookie reads; a change needs the CSRF token too.
    let (parts, _) = admin_request(&gw, "GET", "/stats", &[session_cookie], "").await;
    assert_eq!(parts.status, 200);
    gw.server
        .bans()
        .add(portcullis_layers::ban::Ban::new(
            "192.0.2.44".parse().unwrap(),
            "manual",
            portcullis_layers::ban::unix_millis(),
            Duration::from_secs(600),
        ))
        .await
        .unwrap();
    let (parts, body) = admin_request(&gw, "DELETE", "/bans/192.0.2.44", &[session_cookie], "").await;
    assert_eq!(parts.status, 403);
    assert_eq!(json(&body)["error"], "admin.csrf");
    let (parts, _) =
        admin_request(&gw, "DELETE", "/bans/192.0.2.44", &[session_cookie, ("x-csrf-token", "nope")], "").await;
    assert_eq!(parts.status, 403);
    let (parts, _) =
        admin_request(&gw, "DELETE", "/bans/192.0.2.44", &[session_cookie, ("x-csrf-token", &csrf)], "").await;
    assert_eq!(parts.status, 204);

    // Signing out ends the session on the server: the old cookie no longer works.
    let (parts, _) = admin_request(&gw, "POST", "/logout", &[session_cookie, ("x-csrf-token", &csrf)], "").await;
    assert_eq!(parts.status, 303);
    let (parts, _) = admin_request(&gw, "GET", "/stats", &[session_cookie], "").await;
    assert_eq!(parts.status, 401);
    let (parts, body) = admin_request(&gw, "GET", "/", &[session_cookie], "").await;
    assert_eq!(parts.status, 200);
    assert!(String::from_utf8_lossy(&body).contains("action=\"/login\""));
}

#[tokio::test]
async fn assets_are_served_and_nothing_else_is() {
    let (up, _) = named_upstream("app").await;
    let gw = gateway(&config(up, "")).await;
    let (parts, body) = admin_request(&gw, "GET", "/assets/dashboard.js", &[], "").await;
    assert_eq!(parts.status, 200);
    assert!(parts.headers["content-type"].to_str().unwrap().starts_with("text/javascript"));
    assert!(String::from_utf8_lossy(&body).contains("EventSource"));
    for missing in ["/assets/../admin/mod.rs", "/assets/x.js", "/assets/dashboard.js.map"] {
        let (parts, _) = admin_request(&gw, "GET", missing, &[], "").await;
        assert_eq!(parts.status, 404, "{missing}");
    }
}

#[test]
fn reload_through_the_admin_api_applies_a_good_file_and_refuses_a_bad_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("portcullis.toml");
    let admin_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let write = |body: &str| {
        std::fs::write(
            &path,
            format!(
                r#"
[log]
format = "json"

[[listener]]
name = "public"
bind = "127.0.0.1:0"

[admin]
bind = "127.0.0.1:{admin_port}"
token = "{TOKEN}"

[[upstream]]
name = "demo"
targets = ["builtin:demo"]

[[route]]
match = {{ path = "/open/**" }}
upstream = "demo"
auth = "public"
{body}
"#
            ),
        )
        .unwrap();
    };
    write("");
    let process = Process::start(&path);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let post = |path: &str| {
        runtime.block_on(async {
            let request = http::Request::post(format!("http://127.0.0.1:{admin_port}{path}"))
                .header(BEARER.0, BEARER.1)
                .body(portcullis_layers::empty())
                .unwrap();
            send(request).await
        })
    };
    let status_of =
        |path: &str| runtime.block_on(async { get(&format!("http://{}{path}", process.addr)).await.0.status.as_u16() });
    assert_eq!(status_of("/later"), 404);
    write("\n[[route]]\nmatch = { path = \"/later\" }\nupstream = \"demo\"\nauth = \"public\"\n");
    let (parts, body) = post("/reload");
    assert_eq!(parts.status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(json(&body)["reloaded"], true);
    assert_eq!(status_of("/later"), 200, "the new route serves");
    assert!(process.log_contains("admin-api:127.0.0.1"));

    write("\n[[route]]\nmatch = { path = \"/**\" }\nupstream = \"nowhere\"\n");
    let (parts, body) = post("/reload");
    assert_eq!(parts.status, 422);
    let refused = json(&body);
    assert_eq!(refused["error"], "reload.refused");
    assert!(refused["message"].as_str().unwrap().contains("nowhere"), "{refused}");
    assert_eq!(status_of("/later"), 200, "the previous configuration keeps serving");
}

#[tokio::test]
async fn the_admin_api_serves_https_when_configured_and_its_cookies_are_secure() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (up, _) = named_upstream("app").await;
    let toml = config(up, "")
        .replace(&format!("token = \"{TOKEN}\"\n"), &format!("token = \"{TOKEN}\"\ntls = \"self-signed\"\n"));
    assert!(toml.contains("tls = \"self-signed\""));
    let gw = gateway(&toml).await;
    let addr = gw.server.addr("admin").unwrap();
    // Plain HTTP to the TLS listener gets no answer.
    assert!(
        client()
            .request(http::Request::get(format!("http://{addr}/health")).body(portcullis_layers::empty()).unwrap())
            .await
            .is_err()
    );
    let connector = common::tls::any_certificate_client(&[b"http/1.1"]);
    let exchange = |request: String| {
        let connector = connector.clone();
        async move {
            let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            let mut tls =
                connector.connect(rustls::pki_types::ServerName::try_from("localhost").unwrap(), tcp).await.unwrap();
            tls.write_all(request.as_bytes()).await.unwrap();
            let mut answer = Vec::new();
            let _ = tls.read_to_end(&mut answer).await;
            String::from_utf8_lossy(&answer).into_owned()
        }
    };
    let answer = exchange(format!(
        "GET /bans HTTP/1.1\r\nHost: admin\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n"
    ))
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("{\"bans\":[]}"), "{answer}");
    let answer = exchange("GET / HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n".into()).await;
    let cookie = answer.lines().find(|l| l.to_ascii_lowercase().starts_with("set-cookie:")).unwrap();
    assert!(cookie.contains("; Secure") && cookie.contains("HttpOnly"), "{cookie}");
    // The refusal names the caller's address, carried over TLS too.
    let answer = exchange("GET /metrics HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n".into()).await;
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    let refused = gw.events.last().unwrap();
    assert_eq!((refused.reason, refused.client_ip.to_string()), ("admin.unauthorized", "127.0.0.1".to_owned()));
}
