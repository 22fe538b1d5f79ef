//! Login brute-force protection through the running gateway, in front of an
//! upstream that accepts the password "right" and refuses anything else:
//! credential stuffing and distributed attacks are both slowed and logged,
//! successes reset the account only, waits double, bodies reach the upstream
//! unchanged, and the state is shared through a real Redis.

use crate::common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::redis::Redis;
use common::*;
use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use portcullis::shared::RedisState;
use portcullis_layers::login::{LoginStore, MemoryLoginStore};
use portcullis_policy::Action;
use portcullis_policy::login::{Backoff, Standing};

/// The login upstream: 200 when the body or `x-password` says "right",
/// else 401. Counts calls and records every body it received.
struct Upstream {
    addr: SocketAddr,
    calls: Arc<AtomicUsize>,
    bodies: Arc<Mutex<Vec<Bytes>>>,
}

async fn login_upstream() -> Upstream {
    let calls = Arc::new(AtomicUsize::new(0));
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let (c, b) = (calls.clone(), bodies.clone());
    let addr = upstream(move |req: Request<Incoming>| {
        let (calls, bodies) = (c.clone(), b.clone());
        async move {
            calls.fetch_add(1, Ordering::SeqCst);
            let header_ok = req.headers().get("x-password").is_some_and(|v| v == "right");
            let body = req.into_body().collect().await.unwrap().to_bytes();
            let text = String::from_utf8_lossy(&body);
            let ok = header_ok || text.contains("\"password\":\"right\"") || text.contains("password=right");
            bodies.lock().unwrap().push(body);
            let mut resp = Response::new(portcullis_layers::full(if ok { "welcome" } else { "nope" }));
            if !ok {
                *resp.status_mut() = http::StatusCode::UNAUTHORIZED;
            }
            resp
        }
    })
    .await;
    Upstream { addr, calls, bodies }
}

fn config(up: SocketAddr, shared: &str, login: &str, extra: &str) -> String {
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
account_failures = 3
ip_failures = 5
backoff = "60s"
max_backoff = "1h"
{login}

[[route]]
name = "login"
match = {{ path = "/auth/login", methods = ["POST"] }}
upstream = "app"
auth = "public"
login = "api"

[[route]]
name = "other"
match = {{ path = "/**" }}
upstream = "app"
auth = "public"

{extra}
"#
    )
}

/// Two more logins for the tests that need every account source: a form
/// field `login` on `/auth/form` and the `X-Login` header on `/auth/header`,
/// each waiting after one failure.
const FORM_AND_HEADER_LOGINS: &str = r#"
[login.form]
account = "form:login"
account_failures = 1

[login.header]
account = "header:X-Login"
account_failures = 1

[[route]]
name = "form"
match = { path = "/auth/form" }
upstream = "app"
auth = "public"
login = "form"

[[route]]
name = "header"
match = { path = "/auth/header" }
upstream = "app"
auth = "public"
login = "header"
"#;

/// A login attempt from `ip`, as a trusted proxy would forward it.
async fn attempt(gw: &Gateway, path: &str, ip: &str, user: &str, password: &str) -> (http::response::Parts, Bytes) {
    let body = serde_json::json!({ "username": user, "password": password }).to_string();
    post(gw, path, ip, "application/json", body.into_bytes()).await
}

async fn post(gw: &Gateway, path: &str, ip: &str, content_type: &str, body: Vec<u8>) -> (http::response::Parts, Bytes) {
    let req = Request::post(gw.url(path))
        .header("x-forwarded-for", ip)
        .header("content-type", content_type)
        .body(full_body(body))
        .unwrap();
    send(req).await
}

fn retry_after(parts: &http::response::Parts) -> u64 {
    parts.headers["retry-after"].to_str().unwrap().parse().unwrap()
}

fn events_of(gw: &Gateway, reason: &str) -> Vec<portcullis_policy::SecurityEvent> {
    gw.events.0.lock().unwrap().iter().filter(|e| e.reason == reason).cloned().collect()
}

fn fp(name: &str) -> String {
    portcullis_policy::login::account_fingerprint(name).unwrap()
}

#[tokio::test]
async fn credential_stuffing_from_one_address_is_slowed_and_logged() {
    let up = login_upstream().await;
    let gw = gateway(&config(up.addr, "memory", "", "")).await;
    let attacker = "198.51.100.7";
    for i in 0..5 {
        let (parts, _) = attempt(&gw, "/auth/login", attacker, &format!("user{i}@example.com"), "guess").await;
        assert_eq!(parts.status, 401, "attempt {i} reaches the upstream");
    }
    assert_eq!(up.calls.load(Ordering::SeqCst), 5);
    // The address has used its free failures: the next attempt waits, whatever the account.
    for user in ["user5@example.com", "user0@example.com"] {
        let (parts, body) = attempt(&gw, "/auth/login", attacker, user, "right").await;
        assert_denied(&parts, &body, 429, "login.backoff");
        assert!((59..=60).contains(&retry_after(&parts)), "{:?}", parts.headers);
    }
    assert_eq!(up.calls.load(Ordering::SeqCst), 5, "refused attempts never reach the upstream");
    // Another client is not affected.
    assert_eq!(attempt(&gw, "/auth/login", "198.51.100.8", "user9@example.com", "right").await.0.status, 200);

    let failed = events_of(&gw, "login.failed");
    assert_eq!(failed.len(), 5);
    for (i, event) in failed.iter().enumerate() {
        assert_eq!((event.action, event.status, event.rule.as_deref()), (Action::Log, 401, Some("api")));
        assert_eq!(event.client_ip.to_string(), attacker);
        let detail = event.detail.as_deref().unwrap();
        assert!(detail.contains(&format!("account {}: 1 failure(s)", fp(&format!("user{i}@example.com")))), "{detail}");
        assert!(detail.contains(&format!("client: {} failure(s)", i + 1)), "{detail}");
        assert!(!detail.contains("example.com") && !detail.contains("guess"), "no names or passwords: {detail}");
    }
    assert!(failed[4].detail.as_deref().unwrap().contains("client: 5 failure(s), next attempt in 60s"));
    let backoff = events_of(&gw, "login.backoff");
    assert_eq!(backoff.len(), 2);
    assert_eq!((backoff[0].action, backoff[0].status, backoff[0].rule.as_deref()), (Action::Deny, 429, Some("api")));
    assert!(backoff[0].detail.as_deref().unwrap().starts_with("client: 5 failure(s)"), "{:?}", backoff[0].detail);
    // Other routes are not login routes.
    assert_eq!(attempt(&gw, "/elsewhere", attacker, "x", "guess").await.0.status, 401);
    assert_eq!(events_of(&gw, "login.failed").len(), 5);
}

#[tokio::test]
async fn a_distributed_attack_on_one_account_is_slowed_from_every_address() {
    let up = login_upstream().await;
    let gw = gateway(&config(up.addr, "memory", "", "")).await;
    for i in 1..=3 {
        let (parts, _) = attempt(&gw, "/auth/login", &format!("203.0.113.{i}"), "victim@example.com", "guess").await;
        assert_eq!(parts.status, 401);
    }
    // A fresh address, and the name spelled differently: still the same account.
    for (ip, name) in [("203.0.113.50", "victim@example.com"), ("203.0.113.51", "  Victim@Example.COM ")] {
        let (parts, body) = attempt(&gw, "/auth/login", ip, name, "right").await;
        assert_denied(&parts, &body, 429, "login.backoff");
        assert!((59..=60).contains(&retry_after(&parts)));
    }
    assert_eq!(up.calls.load(Ordering::SeqCst), 3);
    let event = events_of(&gw, "login.backoff").pop().unwrap();
    assert!(
        event.detail.as_deref().unwrap().starts_with(&format!("account {}: 3 failure(s)", fp("victim@example.com"))),
        "{:?}",
        event.detail
    );
    // Another account from a fresh address still reaches the upstream.
    assert_eq!(attempt(&gw, "/auth/login", "203.0.113.52", "bob@example.com", "right").await.0.status, 200);
    assert_eq!(up.calls.load(Ordering::SeqCst), 4);
}

/// Attempts until one is admitted (refused ones are not failures and do not
/// extend the wait); returns the admitted answer's status.
async fn admitted(gw: &Gateway, path: &str, ip: &str, user: &str, password: &str) -> u16 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (parts, _) = attempt(gw, path, ip, user, password).await;
        if parts.status != 429 {
            return parts.status.as_u16();
        }
        assert!(Instant::now() < deadline, "the wait did not end");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test]
async fn waits_double_and_a_success_resets_the_account_but_not_the_address() {
    let up = login_upstream().await;
    let login = "[login.fast]\naccount = \"json:username\"\naccount_failures = 1\nip_failures = 100\nbackoff = \"300ms\"\nmax_backoff = \"2s\"\n";
    let routes = "[[route]]\nname = \"fast\"\nmatch = { path = \"/auth/fast\" }\nupstream = \"app\"\nauth = \"public\"\nlogin = \"fast\"\n";
    let gw = gateway(&config(up.addr, "memory", "", &format!("{login}\n{routes}"))).await;
    let ip = "192.0.2.10";
    let call = |password: &'static str| admitted(&gw, "/auth/fast", ip, "carol", password);
    let detail = |n: usize| events_of(&gw, "login.failed")[n].detail.clone().unwrap();
    // 300 ms, 600 ms, 1.2 s: doubling, shown in whole seconds rounded up.
    for expected in ["next attempt in 1s", "next attempt in 1s", "next attempt in 2s"] {
        assert_eq!(call("guess").await, 401);
        let n = events_of(&gw, "login.failed").len() - 1;
        assert!(detail(n).contains(expected), "{}", detail(n));
    }
    let (parts, body) = attempt(&gw, "/auth/fast", ip, "carol", "guess").await;
    assert_denied(&parts, &body, 429, "login.backoff");
    assert_eq!(retry_after(&parts), 2);
    // The wait is not extended by refused attempts: it ends ~1.2 s after the failure.
    let start = Instant::now();
    assert_eq!(call("right").await, 200);
    assert!(start.elapsed() < Duration::from_millis(1500), "{:?}", start.elapsed());
    // The success reset the account (one failure again), not the address (four).
    assert_eq!(call("guess").await, 401);
    let last = detail(3);
    assert!(last.contains(&format!("account {}: 1 failure(s)", fp("carol"))), "{last}");
    assert!(last.contains("client: 4 failure(s)"), "{last}");
    assert_eq!(up.calls.load(Ordering::SeqCst), 5);
}

#[tokio::test]
async fn bodies_reach_the_upstream_unchanged_and_every_account_source_works() {
    let up = login_upstream().await;
    let extra = FORM_AND_HEADER_LOGINS.to_owned()
        + r#"
[login.small]
account = "json:username"
account_failures = 1
ip_failures = 3
max_body = 64

[[route]]
name = "small"
match = { path = "/auth/small" }
upstream = "app"
auth = "public"
login = "small"
"#;
    let gw = gateway(&config(up.addr, "memory", "", &extra)).await;
    let last_body = || up.bodies.lock().unwrap().last().cloned().unwrap();

    // JSON: the exact bytes, whitespace and Unicode included.
    let json = "{ \"username\" : \"Zoë\",\n  \"password\": \"guess\", \"extra\": [1, 2] }".as_bytes().to_vec();
    assert_eq!(post(&gw, "/auth/login", "192.0.2.1", "application/json", json.clone()).await.0.status, 401);
    assert_eq!(last_body().as_ref(), json.as_slice());
    let detail = events_of(&gw, "login.failed").pop().unwrap().detail.unwrap();
    assert!(detail.contains(&fp("zoë")), "{detail}");

    // Form fields, and a JSON body sent to a form route (Express accepts both).
    let form = b"password=guess&login=dave%40example.com".to_vec();
    let ct = "application/x-www-form-urlencoded";
    assert_eq!(post(&gw, "/auth/form", "192.0.2.2", ct, form.clone()).await.0.status, 401);
    assert_eq!(last_body().as_ref(), form.as_slice());
    let (parts, _) =
        post(&gw, "/auth/form", "192.0.2.3", "application/json", br#"{"login":"Dave@example.com"}"#.to_vec()).await;
    assert_eq!(parts.status, 429, "the same account, in JSON");

    // A header.
    let req = |ip: &str, login: &str| {
        Request::post(gw.url("/auth/header"))
            .header("x-forwarded-for", ip)
            .header("x-login", login)
            .header("x-password", "guess")
            .body(portcullis_layers::empty())
            .unwrap()
    };
    assert_eq!(send(req("192.0.2.4", "erin")).await.0.status, 401);
    assert_eq!(send(req("192.0.2.5", "ERIN")).await.0.status, 429);
    assert_eq!(send(req("192.0.2.5", "frank")).await.0.status, 401);

    // A body over max_body cannot be counted by account: refused before the
    // upstream, declared or streamed.
    let calls = up.calls.load(Ordering::SeqCst);
    let big = serde_json::json!({"username": "grace", "password": "guess", "pad": "x".repeat(5000)}).to_string();
    let (parts, body) = post(&gw, "/auth/small", "192.0.2.6", "application/json", big.clone().into_bytes()).await;
    assert_denied(&parts, &body, 413, "login.too_large");
    // Streamed (chunked, no length), written whole so that the early answer
    // cannot race the client's writes.
    let mut chunked = String::new();
    for chunk in big.as_bytes().chunks(100) {
        chunked += &format!("{:x}\r\n{}\r\n", chunk.len(), std::str::from_utf8(chunk).unwrap());
    }
    let request = format!(
        "POST /auth/small HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 192.0.2.6\r\nContent-Type: application/json\r\n\
         Transfer-Encoding: chunked\r\n\r\n{chunked}0\r\n\r\n"
    );
    let answer = common::raw::exchange(gw.addr, request.as_bytes()).await.unwrap();
    assert_eq!((answer.status, answer.reason().as_deref()), (413, Some("login.too_large")));
    assert_eq!(up.calls.load(Ordering::SeqCst), calls, "neither reached the upstream");
    let event = events_of(&gw, "login.too_large").pop().unwrap();
    assert_eq!(event.rule.as_deref(), Some("small"));
    assert!(!event.detail.unwrap_or_default().contains("grace"), "the name is not logged");
    // A small body for grace is counted as usual.
    let small = br#"{"username":"grace","password":"right"}"#.to_vec();
    assert_eq!(post(&gw, "/auth/small", "192.0.2.7", "application/json", small).await.0.status, 200);
}

/// Found while fuzzing the login extraction: a request whose account the
/// upstream reads but the gateway could not (a compressed body, another
/// charset, the field twice or as an array) was counted by address only,
/// so spreading such attempts over addresses guessed one account's password
/// without any backoff. Each is now refused before the upstream; look-alike
/// spellings of one name share its count.
#[tokio::test]
async fn logins_the_gateway_cannot_read_as_the_upstream_would_are_refused() {
    let up = login_upstream().await;
    let gw = gateway(&config(up.addr, "memory", "", FORM_AND_HEADER_LOGINS)).await;
    const JSON: (&str, &[u8]) = ("content-type", b"application/json");
    const FORM: (&str, &[u8]) = ("content-type", b"application/x-www-form-urlencoded");
    let alice = br#"{"username":"alice","password":"guess"}"#;
    // (path, headers, body, status, reason or "" when it reaches the upstream)
    type Row<'a> = (&'a str, &'a [(&'a str, &'a [u8])], &'a [u8], u16, &'a str);
    #[rustfmt::skip]
    let rows: &[Row<'_>] = &[
        ("/auth/login", &[JSON], alice, 401, ""),
        ("/auth/login", &[("content-type", b"application/json; charset=utf-8")], alice, 401, ""),
        ("/auth/login", &[JSON, ("content-encoding", b"gzip")], alice, 400, "login.unreadable"),
        ("/auth/login", &[JSON, ("content-encoding", b"identity, deflate")], alice, 400, "login.unreadable"),
        ("/auth/login", &[("content-type", b"application/json; charset=utf-16le")], alice, 400, "login.unreadable"),
        ("/auth/login", &[JSON], br#"{"username":["alice"],"password":"guess"}"#, 400, "login.unreadable"),
        ("/auth/login", &[JSON], br#"{"username":{"$ne":""},"password":"guess"}"#, 400, "login.unreadable"),
        ("/auth/form", &[FORM], b"login=alice&password=guess", 401, ""),
        ("/auth/form", &[FORM], b"login=bob&login=alice&password=guess", 400, "login.unreadable"),
        ("/auth/form", &[FORM], b"login[]=alice&password=guess", 400, "login.unreadable"),
        ("/auth/form", &[FORM], b"login%5B%24ne%5D=x&password=guess", 400, "login.unreadable"),
        ("/auth/form", &[("content-type", b"application/x-www-form-urlencoded; charset=windows-1252")], b"login=alice&password=guess", 400, "login.unreadable"),
        ("/auth/form", &[("content-type", b"application/x-www-form-urlencoded; charset=ISO-8859-1")], b"login=ren%E9&password=guess", 401, ""),
        ("/auth/form", &[FORM], b"[login]=bob&login=alice&password=guess", 400, "login.unreadable"),
        ("/auth/form", &[FORM], b"{&login=alice&password=guess", 400, "login.unreadable"),
        ("/auth/login", &[JSON], br#"{"username":"alice","password":"guess","x":"\ud800"}"#, 400, "login.unreadable"),
        ("/auth/login", &[JSON], br#"{"username":9007199254740993,"password":"guess"}"#, 400, "login.unreadable"),
        ("/auth/header", &[("x-login", b"alice"), ("x-password", b"guess")], b"", 401, ""),
        ("/auth/header", &[("x-login", b"alice"), ("x-login", b"bob"), ("x-password", b"guess")], b"", 400, "login.unreadable"),
        ("/auth/header", &[("x-login", b"\xe1lice"), ("x-password", b"guess")], b"", 400, "login.unreadable"),
    ];
    for (i, (path, headers, body, status, reason)) in rows.iter().enumerate() {
        let calls = up.calls.load(Ordering::SeqCst);
        let mut req = Request::post(gw.url(path)).header("x-forwarded-for", format!("192.0.2.{}", 10 + i));
        for (name, value) in *headers {
            req = req.header(*name, http::HeaderValue::from_bytes(value).unwrap());
        }
        let (parts, answer) = send(req.body(full_body(body.to_vec())).unwrap()).await;
        if reason.is_empty() {
            assert_eq!(parts.status, *status, "row {i}: {path} {headers:?}");
            assert_eq!(up.calls.load(Ordering::SeqCst), calls + 1, "row {i} reaches the upstream");
        } else {
            assert_denied(&parts, &answer, *status, reason);
            assert_eq!(up.calls.load(Ordering::SeqCst), calls, "row {i} never reaches the upstream");
            let login = if *path == "/auth/login" { "api" } else { path.trim_start_matches("/auth/") };
            let event = gw.events.last().unwrap();
            assert_eq!((event.reason, event.rule.as_deref()), (*reason, Some(login)), "row {i}");
        }
    }

    // Look-alike spellings are one account: full-width letters (NFKC), case
    // and Unicode spaces. alice has two failures from the rows above; the
    // third, in full width, starts her wait, which every spelling then meets.
    let (parts, _) = attempt(&gw, "/auth/login", "203.0.113.1", "ａｌｉｃｅ", "guess").await;
    assert_eq!(parts.status, 401);
    for (i, name) in ["ALICE", " alice\u{3000}", "Ａlice", "alice"].iter().enumerate() {
        let (parts, body) = attempt(&gw, "/auth/login", &format!("203.0.113.{}", 2 + i), name, "right").await;
        assert_denied(&parts, &body, 429, "login.backoff");
    }
}

#[tokio::test]
async fn a_rate_limit_keyed_by_account_counts_every_attempt() {
    let up = login_upstream().await;
    let extra = "[limits.per_account]\nkey = \"account\"\nrate = \"1/min\"\nburst = 2\n";
    let toml =
        config(up.addr, "memory", "", extra).replace("login = \"api\"", "login = \"api\"\nlimits = [\"per_account\"]");
    let gw = gateway(&toml).await;
    // Successes count too: the limit is about attempts, not failures.
    assert_eq!(attempt(&gw, "/auth/login", "192.0.2.1", "heidi", "right").await.0.status, 200);
    assert_eq!(attempt(&gw, "/auth/login", "192.0.2.2", "Heidi", "right").await.0.status, 200);
    let (parts, body) = attempt(&gw, "/auth/login", "192.0.2.3", "heidi", "right").await;
    assert_denied(&parts, &body, 429, "ratelimit.exceeded");
    assert_eq!(gw.events.last().unwrap().rule.as_deref(), Some("per_account"));
    assert_eq!(attempt(&gw, "/auth/login", "192.0.2.3", "ivan", "right").await.0.status, 200);
    // Without an account name there is nothing to count by.
    for _ in 0..3 {
        let (parts, _) = post(&gw, "/auth/login", "192.0.2.4", "application/json", b"{}".to_vec()).await;
        assert_eq!(parts.status, 401);
    }
}

/// The same scenario for every store: free failures, doubling waits up to
/// the cap, a failure during a wait, a reset, independent keys, forgetting.
async fn store_scenario(store: &dyn LoginStore, prefix: &str) {
    const S: u64 = 1_000_000_000;
    let slack = S / 2;
    let rules = Backoff { free: 2, window_nanos: 60 * S, backoff_nanos: 10 * S, max_backoff_nanos: 25 * S };
    let key = vec![(format!("{prefix}:a"), rules)];
    let near = |s: Standing, failures: u32, wait: u64| {
        assert_eq!(s.failures, failures, "{s:?}");
        assert!(s.wait_nanos <= wait && s.wait_nanos + slack > wait, "{s:?}, expected a wait of {wait}");
    };
    assert_eq!(store.check(&key, 0).await.unwrap(), [Standing::default()]);
    near(store.fail(&key, 0).await.unwrap()[0], 1, 0);
    near(store.fail(&key, 0).await.unwrap()[0], 2, 10 * S);
    near(store.check(&key, 0).await.unwrap()[0], 2, 10 * S);
    near(store.fail(&key, 0).await.unwrap()[0], 3, 20 * S);
    near(store.fail(&key, 0).await.unwrap()[0], 4, 25 * S);
    // Two keys in one call, the second independent.
    let both = vec![(format!("{prefix}:a"), rules), (format!("{prefix}:b"), rules)];
    let standings = store.check(&both, 0).await.unwrap();
    near(standings[0], 4, 25 * S);
    assert_eq!(standings[1], Standing::default());
    store.reset(&format!("{prefix}:a")).await.unwrap();
    assert_eq!(store.check(&both, 0).await.unwrap(), [Standing::default(), Standing::default()]);

    // A short window forgets.
    let brief = Backoff { free: 5, window_nanos: 200_000_000, backoff_nanos: S, max_backoff_nanos: S };
    let key = vec![(format!("{prefix}:brief"), brief)];
    assert_eq!(store.fail(&key, 0).await.unwrap()[0].failures, 1);
    let deadline = Instant::now() + Duration::from_secs(5);
    while store.check(&key, 0).await.unwrap()[0].failures != 0 {
        assert!(Instant::now() < deadline, "failures were not forgotten");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn the_redis_scripts_and_the_memory_store_agree() {
    store_scenario(&MemoryLoginStore::new(1_000), "m").await;
    let redis = Redis::start();
    let state = RedisState::connect(&redis.url).await.unwrap();
    store_scenario(&state, "r").await;
    // Keys expire with their window (after the wait).
    let rules = Backoff {
        free: 1,
        window_nanos: 60_000_000_000,
        backoff_nanos: 5_000_000_000,
        max_backoff_nanos: 5_000_000_000,
    };
    state.fail(&[("login:x:acct:k".to_owned(), rules)], 0).await.unwrap();
    let client = ::redis::Client::open(redis.url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let ttl: i64 = ::redis::cmd("PTTL").arg("login:x:acct:k").query_async(&mut conn).await.unwrap();
    assert!(ttl > 60_000 && ttl <= 65_000, "ttl {ttl}");
}

#[tokio::test]
async fn two_instances_share_failures_through_redis() {
    let redis = Redis::start();
    let up = login_upstream().await;
    let toml = config(up.addr, &redis.url, "", "");
    let a = gateway(&toml).await;
    let b = gateway(&toml).await;
    assert_eq!(attempt(&a, "/auth/login", "198.51.100.1", "judy", "guess").await.0.status, 401);
    assert_eq!(attempt(&b, "/auth/login", "198.51.100.2", "judy", "guess").await.0.status, 401);
    assert_eq!(attempt(&a, "/auth/login", "198.51.100.3", "judy", "guess").await.0.status, 401);
    for gw in [&a, &b] {
        let (parts, body) = attempt(gw, "/auth/login", "198.51.100.4", "JUDY", "right").await;
        assert_denied(&parts, &body, 429, "login.backoff");
        assert!((59..=60).contains(&retry_after(&parts)));
    }
    // Credential stuffing across both instances.
    for i in 0..5 {
        let gw = if i % 2 == 0 { &a } else { &b };
        assert_eq!(attempt(gw, "/auth/login", "198.51.100.9", &format!("u{i}"), "guess").await.0.status, 401);
    }
    assert_eq!(attempt(&b, "/auth/login", "198.51.100.9", "u9", "right").await.0.status, 429);
    assert_eq!(up.calls.load(Ordering::SeqCst), 8);
    // The state is in Redis under the documented keys, by fingerprint.
    let client = ::redis::Client::open(redis.url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = ::redis::cmd("KEYS").arg("login:*").query_async(&mut conn).await.unwrap();
    assert!(keys.contains(&format!("login:api:acct:{}", fp("judy"))), "{keys:?}");
    assert!(keys.contains(&"login:api:ip:198.51.100.9".to_owned()), "{keys:?}");
    assert!(keys.iter().all(|k| !k.contains("judy")));
}

#[tokio::test]
async fn a_redis_outage_fails_closed_by_default_or_open_when_configured() {
    let mut redis = Redis::start();
    let up = login_upstream().await;
    let extra = "[login.lenient]\naccount = \"json:username\"\non_store_failure = \"open\"\n\n[[route]]\nname = \"lenient\"\nmatch = { path = \"/auth/lenient\" }\nupstream = \"app\"\nauth = \"public\"\nlogin = \"lenient\"\n";
    let toml = config(up.addr, &redis.url, "", extra);
    let findings: Vec<&str> = portcullis::check::findings(&common::config(&toml).0).iter().map(|f| f.code).collect();
    assert!(findings.contains(&"ratelimit.login_fail_open"), "{findings:?}");
    let gw = gateway(&toml).await;
    assert_eq!(attempt(&gw, "/auth/login", "192.0.2.1", "kim", "guess").await.0.status, 401);

    redis.stop();
    let started = Instant::now();
    let (parts, body) = attempt(&gw, "/auth/login", "192.0.2.1", "kim", "right").await;
    assert_denied(&parts, &body, 503, "login.unavailable");
    let event = gw.events.last().unwrap();
    assert_eq!((event.action, event.rule.as_deref()), (Action::Deny, Some("api")));
    let calls = up.calls.load(Ordering::SeqCst);
    let (parts, _) = attempt(&gw, "/auth/lenient", "192.0.2.1", "kim", "guess").await;
    assert_eq!(parts.status, 401, "fail-open: the upstream answers");
    assert_eq!(up.calls.load(Ordering::SeqCst), calls + 1);
    let unavailable = events_of(&gw, "login.unavailable");
    let logged: Vec<_> = unavailable.iter().filter(|e| e.action == Action::Log).collect();
    assert!(!logged.is_empty(), "failing open is logged");
    assert!(logged.iter().all(|e| e.rule.as_deref() == Some("lenient") && e.status == 401));
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());

    redis.restart();
    // Enforcement resumes by itself (the restarted Redis is empty).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = attempt(&gw, "/auth/login", "192.0.2.1", "kim", "right").await.0.status.as_u16();
        if status == 200 {
            break;
        }
        assert_eq!(status, 503);
        assert!(Instant::now() < deadline, "login protection did not resume after Redis restarted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
