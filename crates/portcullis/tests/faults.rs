//! Faults in what the gateway depends on: upstreams that reset or stall
//! mid-response, Redis and PostgreSQL stopped and restarted under traffic,
//! certificate files replaced with garbage, an event sink that cannot write.
//!
//! Each test asserts what the client sees (a clean 502/504/503, or a body
//! visibly cut short, never a hang or a silent pass) and that nothing leaks:
//! the gateway's gauges on `/metrics` (open connections, requests in flight,
//! upstream connections, WebSocket tunnels) return to their idle values.

use crate::common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use common::metrics::{admin_section, process_admin_addr, scrape, settles, value};
use common::redis::Redis;
use common::strict::{Answer, Strict};
use common::*;
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

// ---------------------------------------------------------------------------
// Upstreams that reset or stall.

/// What the client should see.
#[derive(Debug, Clone, Copy)]
enum Seen {
    /// A gateway refusal with this status and reason.
    Denied(u16, &'static str),
    /// A 200 head, then a body that ends in an error (never a clean end).
    Truncated,
}

const CHUNKED_HEAD: &[u8] = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n400\r\n";

fn with_body(head: &[u8], body: usize) -> Vec<u8> {
    let mut out = head.to_vec();
    out.extend(std::iter::repeat_n(b'x', body));
    out
}

/// The fault cases, by path: how the upstream misbehaves and what the client
/// must get. `response_timeout` and `read_timeout` are 500 ms.
fn fault_cases() -> Vec<(&'static str, Answer, Seen)> {
    let sized = b"HTTP/1.1 200 OK\r\ncontent-length: 100000\r\n\r\n";
    vec![
        ("/reset-before-head", Answer::Reset, Seen::Denied(502, "upstream.protocol")),
        (
            "/close-inside-head",
            Answer::RawClose(b"HTTP/1.1 200 OK\r\ncontent-len".to_vec()),
            Seen::Denied(502, "upstream.protocol"),
        ),
        (
            "/garbage-head",
            Answer::RawClose(b"NOT HTTP AT ALL\r\n\r\n".to_vec()),
            Seen::Denied(502, "upstream.protocol"),
        ),
        ("/stall-before-head", Answer::Stall, Seen::Denied(504, "upstream.timeout")),
        ("/reset-mid-sized-body", Answer::RawReset(with_body(sized, 1000)), Seen::Truncated),
        ("/reset-mid-chunked-body", Answer::RawReset(with_body(CHUNKED_HEAD, 1024)), Seen::Truncated),
        ("/close-mid-sized-body", Answer::RawClose(with_body(sized, 1000)), Seen::Truncated),
        ("/stall-mid-sized-body", Answer::RawStall(with_body(sized, 1000)), Seen::Truncated),
        ("/stall-mid-chunked-body", Answer::RawStall(with_body(CHUNKED_HEAD, 1024)), Seen::Truncated),
    ]
}

/// A gateway with 500 ms upstream timeouts; `name` names its listener and,
/// with `-up`, its upstream (unique per test: metrics are per process).
fn fault_config(upstream: SocketAddr, name: &str) -> String {
    format!(
        r#"
[[listener]]
name = "{name}"
bind = "127.0.0.1:0"

[[upstream]]
name = "{name}-up"
targets = ["http://{upstream}"]
response_timeout = "500ms"
read_timeout = "500ms"
failure_cooldown = "1ms"

[[route]]
match = {{ path = "/**" }}
upstream = "{name}-up"
auth = "public"

{admin}
"#,
        admin = admin_section()
    )
}

/// Sends one GET over a fresh client (HTTP/1.1, or h2c with prior
/// knowledge) and returns the status, the headers and whether the body
/// ended cleanly; the client and its connections are gone when it returns.
async fn fetch(url: &str, h2: bool) -> (http::response::Parts, Result<bytes::Bytes, String>) {
    let client: Client<_, portcullis_layers::Body> = Client::builder(TokioExecutor::new()).http2_only(h2).build_http();
    let req = Request::get(url).body(portcullis_layers::empty()).unwrap();
    let response = tokio::time::timeout(Duration::from_secs(10), client.request(req))
        .await
        .expect("no response head within 10 s")
        .expect("request failed");
    let (parts, body) = response.into_parts();
    let body = tokio::time::timeout(Duration::from_secs(10), body.collect())
        .await
        .expect("the body neither ended nor failed within 10 s");
    (parts, body.map(http_body_util::Collected::to_bytes).map_err(|e| e.to_string()))
}

#[tokio::test]
async fn upstream_resets_and_stalls_end_cleanly_for_the_client_and_leak_nothing() {
    let cases = fault_cases();
    let answers: Vec<(&'static str, Answer)> = cases.iter().map(|(p, a, _)| (*p, a.clone())).collect();
    let up = Strict::with(move |seen| {
        answers.iter().find(|(p, _)| *p == seen.target).map_or(Answer::Ok, |(_, a)| a.clone())
    })
    .await;
    let gw = gateway(&fault_config(up.addr, "faults")).await;
    let admin = gw.server.addr("admin").unwrap();
    let idle = [
        ("portcullis_connections_open", ("listener", "faults")),
        ("portcullis_requests_in_flight", ("listener", "faults")),
        ("portcullis_upstream_connections_open", ("upstream", "faults-up")),
    ];
    let text = scrape(admin).await;
    for (name, label) in idle {
        assert!(text.contains(&format!("{name}{{{}=\"{}\"}} 0", label.0, label.1)), "{name} exported at 0:\n{text}");
    }

    for h2 in [false, true] {
        for (path, _, expected) in &cases {
            let case = format!("{path} over {}", if h2 { "h2c" } else { "HTTP/1.1" });
            let started = Instant::now();
            let (parts, body) = fetch(&gw.url(path), h2).await;
            match *expected {
                Seen::Denied(status, reason) => {
                    let body = body.unwrap_or_else(|e| panic!("{case}: the refusal's body failed: {e}"));
                    assert_denied(&parts, &body, status, reason);
                    let event = gw.events.last().unwrap();
                    assert_eq!((event.reason, event.path.as_str()), (reason, *path), "{case}");
                    assert_eq!(event.attribution, portcullis_policy::Attribution::Upstream, "{case}");
                }
                Seen::Truncated => {
                    assert_eq!(parts.status, 200, "{case}");
                    assert!(body.is_err(), "{case}: a cut body must not end cleanly: {body:?}");
                }
            }
            // Stalls end at the 500 ms timeouts, not at some later default.
            assert!(started.elapsed() < Duration::from_secs(5), "{case}: took {:?}", started.elapsed());
            for (name, (label, value)) in idle {
                settles(admin, name, &[(label, value)], 0.0, Duration::from_secs(5)).await;
            }
            eventually(&format!("{case}: the upstream's connections closed"), Duration::from_secs(5), || {
                up.open_connections() == 0
            })
            .await;
        }
    }
    // The upstream got each request once per protocol: no retry of a request
    // that may have been processed.
    assert_eq!(up.seen().len(), 2 * cases.len());
    up.assert_clean("faults");
}

#[tokio::test]
async fn a_websocket_tunnel_counts_while_open_and_not_after() {
    const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
    let up = Strict::with(|seen| {
        if seen.target != "/chat" {
            return Answer::Ok;
        }
        let key = seen.header("sec-websocket-key").unwrap_or_default();
        Answer::Switch(vec![
            ("upgrade".into(), "websocket".into()),
            ("connection".into(), "Upgrade".into()),
            ("sec-websocket-accept".into(), portcullis_policy::upgrade::accept_for(key.as_bytes())),
        ])
    })
    .await;
    // One connection per address: the tunnel must keep using its share.
    let toml = fault_config(up.addr, "tunnel").replace("auth = \"public\"", "auth = \"public\"\nwebsocket = true");
    let gw = gateway(&format!("{toml}\n[server]\nmax_connections_per_ip = 1\n")).await;
    let admin = gw.server.addr("admin").unwrap();
    let tunnels = [("upstream", "tunnel-up")];
    assert_eq!(value(&scrape(admin).await, "portcullis_websocket_tunnels_open", &tunnels), 0.0);

    let mut client = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let handshake = format!(
        "GET /chat HTTP/1.1\r\nhost: localhost\r\nconnection: Upgrade\r\nupgrade: websocket\r\n\
         sec-websocket-version: 13\r\nsec-websocket-key: {KEY}\r\n\r\n"
    );
    client.write_all(handshake.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        assert_eq!(client.read(&mut byte).await.unwrap(), 1, "closed inside the 101: {head:?}");
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"), "{} {:?}", String::from_utf8_lossy(&head), gw.events.last());
    client.write_all(b"ping").await.unwrap();
    let mut echo = [0u8; 4];
    client.read_exact(&mut echo).await.unwrap();
    assert_eq!(&echo, b"ping");
    settles(admin, "portcullis_websocket_tunnels_open", &tunnels, 1.0, Duration::from_secs(5)).await;
    settles(admin, "portcullis_connections_open", &[("listener", "tunnel")], 1.0, Duration::from_secs(5)).await;
    // hyper is done with the upgraded connection, but it is still open: a
    // second one from the same address is over the per-IP limit.
    let mut second = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let _ = second.write_all(b"GET / HTTP/1.1\r\nhost: localhost\r\n\r\n").await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), second.read_to_end(&mut answer)).await.unwrap();
    assert!(answer.is_empty(), "served beside an open tunnel: {}", String::from_utf8_lossy(&answer));
    assert_eq!(gw.events.last().unwrap().reason, "conn.per_ip");

    drop(client);
    settles(admin, "portcullis_websocket_tunnels_open", &tunnels, 0.0, Duration::from_secs(5)).await;
    settles(admin, "portcullis_connections_open", &[("listener", "tunnel")], 0.0, Duration::from_secs(5)).await;
    settles(admin, "portcullis_upstream_connections_open", &tunnels, 0.0, Duration::from_secs(5)).await;
    eventually("the upstream's tunnel closed", Duration::from_secs(5), || up.open_connections() == 0).await;
    assert_eq!(get(&gw.url("/after")).await.0.status, 200, "the address's share is free again");
}

// ---------------------------------------------------------------------------
// Redis stopped and restarted under traffic.

/// The upstream of the Redis test: `/auth/login` accepts the password
/// "right", everything else answers 200.
async fn app_upstream() -> SocketAddr {
    upstream(|req: Request<Incoming>| async move {
        let login = req.uri().path() == "/auth/login";
        let body = req.into_body().collect().await.unwrap().to_bytes();
        let mut resp = Response::new(portcullis_layers::full("ok"));
        if login && !String::from_utf8_lossy(&body).contains("\"password\":\"right\"") {
            *resp.status_mut() = StatusCode::UNAUTHORIZED;
        }
        resp
    })
    .await
}

fn redis_config(up: SocketAddr, url: &str) -> String {
    format!(
        r#"
[[listener]]
name = "test"
bind = "127.0.0.1:0"

[server]
trusted_proxies = ["127.0.0.1/32"]

[state]
shared = "{url}"

[[upstream]]
name = "app"
targets = ["http://{up}"]

[limits.lenient]
key = "ip"
rate = "1000/s"
burst = 1000
on_store_failure = "open"

[limits.strict]
key = "ip"
rate = "1000/s"
burst = 1000
on_store_failure = "closed"

[login.api]
account = "json:username"

[[route]]
name = "open"
match = {{ path = "/open" }}
upstream = "app"
auth = "public"
limits = ["lenient"]

[[route]]
name = "closed"
match = {{ path = "/closed" }}
upstream = "app"
auth = "public"
limits = ["strict"]

[[route]]
name = "login"
match = {{ path = "/auth/login", methods = ["POST"] }}
upstream = "app"
auth = "public"
login = "api"
"#
    )
}

/// One answered request of the traffic loops.
#[derive(Debug, Clone)]
struct Sample {
    path: &'static str,
    started: Instant,
    took: Duration,
    /// The status and reason code (empty for upstream answers).
    status: u16,
    reason: String,
}

/// Requests on `path` one after another until `stop`, each from its own
/// client address (so the address-keyed state never builds up).
async fn traffic(gw_url: String, path: &'static str, stop: Arc<AtomicBool>, log: Arc<Mutex<Vec<Sample>>>) {
    let mut n = 0u32;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let ip = format!("198.51.100.{}", n % 250 + 1);
        let mut req = Request::builder().uri(format!("{gw_url}{path}")).header("x-forwarded-for", ip.as_str());
        let body = if path == "/auth/login" {
            req = req.method("POST").header("content-type", "application/json");
            full_body(format!("{{\"username\":\"user{n}\",\"password\":\"wrong\"}}"))
        } else {
            portcullis_layers::empty()
        };
        let started = Instant::now();
        let (parts, body) = tokio::time::timeout(Duration::from_secs(10), send(req.body(body).unwrap()))
            .await
            .unwrap_or_else(|_| panic!("{path}: no answer within 10 s"));
        let reason = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_owned))
            .unwrap_or_default();
        log.lock().unwrap().push(Sample {
            path,
            started,
            took: started.elapsed(),
            status: parts.status.as_u16(),
            reason,
        });
        // Paces the loop (about 50 requests a second per path); nothing waits on it.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn redis_stopped_and_restarted_under_traffic_keeps_each_failure_mode_and_recovers() {
    let mut redis = Redis::start();
    let up = app_upstream().await;
    let gw = gateway(&redis_config(up, &redis.url)).await;
    let base = gw.url("");
    let stop = Arc::new(AtomicBool::new(false));
    let log = Arc::new(Mutex::new(Vec::new()));
    let loops: Vec<_> = ["/open", "/closed", "/auth/login"]
        .into_iter()
        .map(|path| tokio::spawn(traffic(base.clone(), path, stop.clone(), log.clone())))
        .collect();
    let count = |log: &Mutex<Vec<Sample>>, path: &str, from: Instant| {
        log.lock().unwrap().iter().filter(|s| s.path == path && s.started >= from).count()
    };
    let t0 = Instant::now();
    eventually("traffic before the outage", Duration::from_secs(10), || count(&log, "/auth/login", t0) >= 10).await;

    redis.stop();
    let down = Instant::now();
    eventually("traffic during the outage", Duration::from_secs(10), || {
        ["/open", "/closed", "/auth/login"].iter().all(|p| count(&log, p, down) >= 20)
    })
    .await;
    redis.restart();
    let up_again = Instant::now();
    // Recovery without restarting the gateway: every path answers as before.
    eventually("recovery after Redis restarted", Duration::from_secs(15), || {
        let samples = log.lock().unwrap();
        let recovered = |path: &str, status: u16| {
            samples.iter().filter(|s| s.path == path && s.started >= up_again).rev().take(5).all(|s| s.status == status)
                && samples.iter().any(|s| s.path == path && s.started >= up_again)
        };
        recovered("/closed", 200) && recovered("/auth/login", 401) && recovered("/open", 200)
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    for l in loops {
        l.await.unwrap();
    }

    let samples = log.lock().unwrap().clone();
    let phase = |s: &Sample| {
        if s.started + s.took < down {
            "before"
        } else if s.started >= down && s.started + s.took < up_again {
            "outage"
        } else {
            "edge"
        }
    };
    for s in &samples {
        // Redis's command timeout is 100 ms: nothing waits long on a dead store.
        assert!(s.took < Duration::from_secs(2), "{s:?} took {:?}", s.took);
        let allowed: &[(u16, &str)] = match (s.path, phase(s)) {
            ("/open", _) => &[(200, "")],
            ("/closed", "before") => &[(200, "")],
            ("/closed", "outage") => &[(503, "ratelimit.unavailable")],
            ("/closed", _) => &[(200, ""), (503, "ratelimit.unavailable")],
            ("/auth/login", "before") => &[(401, "")],
            ("/auth/login", "outage") => &[(503, "login.unavailable")],
            ("/auth/login", _) => &[(401, ""), (503, "login.unavailable")],
            _ => unreachable!(),
        };
        assert!(allowed.contains(&(s.status, s.reason.as_str())), "{} in phase {}: {s:?}", s.path, phase(s));
    }
    let events = gw.events.0.lock().unwrap();
    let of = |reason: &str, action| events.iter().filter(|e| e.reason == reason && e.action == action).count();
    assert!(of("ratelimit.unavailable", portcullis_policy::Action::Log) >= 20, "fail-open is logged");
    assert!(of("ratelimit.unavailable", portcullis_policy::Action::Deny) >= 20);
    assert!(of("login.unavailable", portcullis_policy::Action::Deny) >= 20);
}

#[tokio::test]
async fn sessions_fail_closed_while_redis_is_down_and_work_again_after() {
    use common::oidc_provider::{CLIENT_ID, CLIENT_SECRET, Provider, ProviderSettings};
    use portcullis_policy::session::{SESSION_COOKIE, SessionData, SessionKey, unix};
    const SECRET: &str = "faults-cookie-secret-of-more-than-32-bytes";
    let mut redis = Redis::start();
    let provider = Provider::start(&ProviderSettings {
        redirect_uris: &["https://localhost/.portcullis/callback"],
        post_logout_redirect_uris: &[],
        access_token_ttl: 300,
    });
    let (up, _) = named_upstream("app").await;
    let toml = format!(
        r#"
[[listener]]
name = "test"
bind = "127.0.0.1:0"

[state]
shared = "{redis}"

[[upstream]]
name = "app"
targets = ["http://{up}"]

[[route]]
match = {{ path = "/app/**" }}
upstream = "app"
auth = "session"

[auth.oidc]
issuer = "{issuer}"
client_id = "{CLIENT_ID}"
client_secret = "{CLIENT_SECRET}"
public_url = "https://localhost"

[auth.session]
cookie_secret = "{SECRET}"
"#,
        redis = redis.url,
        issuer = provider.issuer,
    );
    let gw = gateway(&toml).await;
    let now = unix(SystemTime::now());
    let session = |id: &str| SessionData {
        id: id.into(),
        subject: "erin".into(),
        roles: Vec::new(),
        scopes: Vec::new(),
        issuer: provider.issuer.clone(),
        issued_at: now,
        expires_at: now + 3600,
        access_expires_at: None,
        refresh_token: None,
    };
    let key = SessionKey::new(SECRET.as_bytes()).unwrap();
    let cookie = |id: &str| format!("{SESSION_COOKIE}={}", key.seal(&session(id), SystemTime::now()).unwrap());
    let ask = |id: &str| {
        let url = gw.url("/app/page");
        let cookie = cookie(id);
        async move { get_with(&url, &[("cookie", &cookie), ("accept", "application/json")]).await }
    };
    assert_eq!(ask("live").await.0.status, 200);
    let until = SystemTime::now() + Duration::from_secs(3600);
    gw.server.revocations().revoke("ended", until).await.unwrap();
    let (parts, body) = ask("ended").await;
    assert_denied(&parts, &body, 401, "session.revoked");

    redis.stop();
    for id in ["live", "ended"] {
        let started = Instant::now();
        let (parts, body) = ask(id).await;
        assert_denied(&parts, &body, 503, "session.unavailable");
        assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    }
    let event = gw.events.last().unwrap();
    assert_eq!((event.reason, event.attribution), ("session.unavailable", portcullis_policy::Attribution::Gateway));

    // A restarted Redis is empty: the revocation made before the outage is
    // lost (the documented failover caveat), and sessions work again.
    redis.restart();
    let deadline = Instant::now() + Duration::from_secs(10);
    while ask("live").await.0.status != 200 {
        assert!(Instant::now() < deadline, "sessions did not work again after Redis restarted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    gw.server.revocations().revoke("ended", until).await.unwrap();
    let (parts, body) = ask("ended").await;
    assert_denied(&parts, &body, 401, "session.revoked");
}

// ---------------------------------------------------------------------------
// PostgreSQL stopped and restarted under traffic.

#[tokio::test]
async fn postgres_stopped_and_restarted_under_traffic_makes_keys_unavailable_then_recovers() {
    let mut pg = common::postgres::Postgres::start().await;
    let store = portcullis::store::Store::open(&pg.url).await.unwrap();
    let (_, key) = store.create_api_key("svc", &[], None).await.unwrap();
    let key = key.expose().to_owned();
    drop(store);
    let (up, _) = named_upstream("app").await;
    let toml = simple_config(up, &format!("[state]\nstore = \"{}\"\n\n[auth.api_key]\ncache_ttl = \"0s\"\n", pg.url))
        .replace("auth = \"public\"", "auth = \"api_key\"");
    let gw = gateway(&toml).await;
    let bearer = format!("Bearer {key}");
    let ask = || {
        let url = gw.url("/orders");
        let bearer = bearer.clone();
        async move {
            let started = Instant::now();
            let (parts, body) = get_with(&url, &[("authorization", &bearer)]).await;
            (parts, body, started.elapsed())
        }
    };
    assert_eq!(ask().await.0.status, 200);

    pg.stop();
    // Never a pass and never a 401 that would make clients drop a good key:
    // 503 `apikey.store_unavailable`, within the store's acquire timeout.
    for _ in 0..2 {
        let (parts, body, took) = ask().await;
        assert_denied(&parts, &body, 503, "apikey.store_unavailable");
        assert!(took < Duration::from_secs(10), "{took:?}");
    }
    assert_eq!(gw.events.last().unwrap().attribution, portcullis_policy::Attribution::Gateway);

    pg.restart().await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (parts, body, _) = ask().await;
        if parts.status == 200 {
            break;
        }
        assert_denied(&parts, &body, 503, "apikey.store_unavailable");
        assert!(Instant::now() < deadline, "API keys did not work again after PostgreSQL restarted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for _ in 0..5 {
        assert_eq!(ask().await.0.status, 200);
    }
}

// ---------------------------------------------------------------------------
// Certificate files replaced with garbage (the real binary, for its log).

fn pem_pair(dir: &std::path::Path, stem: &str) -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap().self_signed(&key).unwrap();
    let (cert_path, key_path) = (dir.join(format!("{stem}.pem")), dir.join(format!("{stem}.key")));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    (cert.pem(), key.serialize_pem())
}

/// The leaf certificate the listener presents to a new connection.
async fn presented(addr: SocketAddr) -> Vec<u8> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = common::tls::any_certificate_client(&[]).connect(name, tcp).await.unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

fn der(pem: &str) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes()).unwrap().to_vec()
}

/// Log lines (JSON) at level ERROR whose text contains `needle`.
fn errors_mentioning(gw: &Process, needle: &str) -> Vec<String> {
    gw.stderr.lock().unwrap().iter().filter(|l| l.contains("\"ERROR\"") && l.contains(needle)).cloned().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_certificate_files_are_refused_and_the_old_certificate_keeps_serving() {
    let (up, _) = named_upstream("app").await;
    let dir = tempfile::tempdir().unwrap();
    let (good_cert, good_key) = pem_pair(dir.path(), "site");
    let (other_cert, other_key) = pem_pair(dir.path(), "other");
    let toml = simple_config(up, "[log]\nformat = \"json\"\n")
        .replace("bind = \"127.0.0.1:0\"", "bind = \"127.0.0.1:0\"\ntls = { cert = \"site.pem\", key = \"site.key\" }");
    let path = dir.path().join("portcullis.toml");
    std::fs::write(&path, toml).unwrap();
    let gw = Process::start(&path);
    assert_eq!(presented(gw.addr).await, der(&good_cert));

    // Replaced the way deploy tools do it: write aside, rename over.
    let replace = |name: &str, content: &[u8]| {
        let aside = dir.path().join(format!("{name}.new"));
        std::fs::write(&aside, content).unwrap();
        std::fs::rename(&aside, dir.path().join(name)).unwrap();
    };
    /// (case, files written, what the refusal names)
    type Case<'a> = (&'a str, &'a [(&'a str, &'a [u8])], &'a str);
    let cases: [Case<'_>; 4] = [
        ("garbage certificate", &[("site.pem", b"\x00\x01 not a certificate \xff")], "site.pem"),
        ("empty certificate", &[("site.pem", b"")], "site.pem"),
        (
            "garbage key",
            &[("site.pem", good_cert.as_bytes()), ("site.key", b"-----BEGIN PRIVATE KEY-----\nAAAA\n")],
            "site.key",
        ),
        // Both files valid, but not a pair: every handshake would fail.
        ("key of another certificate", &[("site.key", other_key.as_bytes())], "is not the key of"),
    ];
    for (case, writes, named) in cases {
        let before = errors_mentioning(&gw, named).len();
        for (name, content) in writes {
            replace(name, content);
        }
        eventually(&format!("{case}: the refusal is logged naming {named}"), Duration::from_secs(10), || {
            errors_mentioning(&gw, named).len() > before
        })
        .await;
        let line = errors_mentioning(&gw, named).pop().unwrap();
        assert!(line.contains("current one stays"), "{case}: {line}");
        assert_eq!(presented(gw.addr).await, der(&good_cert), "{case}: the old certificate keeps serving");
        assert_eq!(get_tls(gw.addr).await, 200, "{case}: requests keep flowing");
    }
    // The watcher reports a bad file state once, not every 2 s.
    let reports = errors_mentioning(&gw, "is not the key of").len();
    gw.signal("HUP");
    eventually("SIGHUP's reload refusal logged", Duration::from_secs(10), || {
        !errors_mentioning(&gw, "reload refused").is_empty()
    })
    .await;
    assert_eq!(presented(gw.addr).await, der(&good_cert), "SIGHUP keeps the old certificate too");
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(errors_mentioning(&gw, "is not the key of").len(), reports + 1, "only SIGHUP's refusal was added");

    // A good pair is picked up again.
    replace("site.key", other_key.as_bytes());
    replace("site.pem", other_cert.as_bytes());
    let deadline = Instant::now() + Duration::from_secs(10);
    while presented(gw.addr).await != der(&other_cert) {
        assert!(Instant::now() < deadline, "a good certificate after the bad ones was not picked up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(good_key);
}

/// `GET /` over TLS (certificate not checked), returning the status.
async fn get_tls(addr: SocketAddr) -> u16 {
    let port = addr.port();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("curl")
            .args(["-sk", "-o", "/dev/null", "-w", "%{http_code}", &format!("https://localhost:{port}/")])
            .args(["--resolve", &format!("localhost:{port}:127.0.0.1")])
            .output()
            .expect("curl (scripts/test installs it)")
    })
    .await
    .unwrap();
    String::from_utf8_lossy(&out.stdout).parse().unwrap_or(0)
}

// ---------------------------------------------------------------------------
// An event sink that cannot write.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_sink_that_cannot_write_counts_its_drops_while_requests_flow() {
    use std::os::unix::fs::PermissionsExt;
    let mode_before = std::fs::metadata("/dev/full").unwrap().permissions().mode();
    let (up, _) = named_upstream("app").await;
    let dir = tempfile::tempdir().unwrap();
    let toml = simple_config(
        up,
        &format!(
            "[log]\nformat = \"json\"\n\n[events]\nsinks = [\"file:/dev/full\", \"file:events.jsonl\"]\n\n{}",
            admin_section()
        ),
    )
    .replace("match = { path = \"/**\" }", "match = { path = \"/ok/**\" }");
    let path = dir.path().join("portcullis.toml");
    std::fs::write(&path, toml).unwrap();
    let gw = Process::start(&path);
    let admin = process_admin_addr(&gw).await;
    // Opening /dev/full must not chmod the device (it is every user's).
    assert_eq!(std::fs::metadata("/dev/full").unwrap().permissions().mode(), mode_before);
    let full = [("sink", "file:/dev/full"), ("cause", "write_error")];
    // The start's audit row is an event too (`audit.appended`): counted from there.
    let good = dir.path().join("events.jsonl");
    eventually("the start's audit event", Duration::from_secs(10), || {
        std::fs::read_to_string(&good).is_ok_and(|t| t.contains("audit.appended"))
    })
    .await;
    settles(admin, "portcullis_events_dropped_total", &full, 1.0, Duration::from_secs(10)).await;

    for i in 0..50 {
        let started = Instant::now();
        assert_eq!(get(&format!("http://{}/nope/{i}", gw.addr)).await.0.status, 404);
        assert_eq!(get(&format!("http://{}/ok/{i}", gw.addr)).await.0.status, 200);
        assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    }
    // Every one of the 50 refusals (after the start's event) is lost on /dev/full and counted; the
    // other sink has them all.
    settles(admin, "portcullis_events_dropped_total", &full, 51.0, Duration::from_secs(10)).await;
    let text = scrape(admin).await;
    let good_name = format!("file:{}", good.display());
    assert_eq!(value(&text, "portcullis_events_dropped_total", &[("sink", &good_name)]), 0.0);
    assert_eq!(value(&text, "portcullis_events_total", &[("reason", "route.none")]), 50.0);
    assert_eq!(std::fs::read_to_string(&good).unwrap().lines().count(), 51);
    eventually("the write failure is logged", Duration::from_secs(5), || {
        !errors_mentioning(&gw, "cannot write security events").is_empty()
    })
    .await;
    let logged = errors_mentioning(&gw, "cannot write security events");
    assert!(logged.len() <= 2, "logged at most every 10 s, not per event: {logged:?}");
    assert!(logged[0].contains("/dev/full"), "{logged:?}");
}
