//! Requests that would mean one thing to the gateway and another to the
//! upstream — the bypasses an outside review found (issue 13), each as a
//! class, through the running gateway in front of the strict recording
//! upstream (`common::strict`), sent as raw bytes:
//!
//! 1. Upgrade tunnels: only RFC 6455 WebSocket handshakes, only on routes
//!    with `websocket = true`, and only when the upstream's `101` completes
//!    the handshake; `h2c` and every other token refused.
//! 2. Duplicate credentials: every header or cookie that carries a
//!    credential or identity, and `Host` and `Content-Type`, at most once.
//! 3. Paths a backend would read differently: `%25XX` (double decoding) and
//!    segments backends treat as dot segments.
//! 4. Headers that make a backend act on another method or path
//!    (`X-HTTP-Method-Override`, `X-Original-URL`).
//!
//! Each refusal is checked for its status, reason code and event, and the
//! upstream for having seen exactly the requests the gateway admitted.

use crate::common;

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::oidc_stub::stub_provider;
use common::raw::Conn;
use common::strict::{Answer, Seen, Strict};
use common::*;
use jsonwebtoken::Algorithm;
use portcullis_policy::jwt::forge::TestKey;
use portcullis_policy::session::SESSION_COOKIE;
use portcullis_policy::upgrade::accept_for;
use serde_json::json;

const ISS: &str = "https://idp.test/";
const COOKIE_SECRET: &str = "ambiguity-test-cookie-secret-of-more-than-32-bytes";
const WS_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

/// How the strict upstream answers, by path: a well-behaved WebSocket
/// server on `/ws/ok`, and every way a careless or hostile one could answer.
fn answer(seen: &Seen) -> Answer {
    let key = seen.header("sec-websocket-key").unwrap_or_default();
    let switch = |upgrade: &str, accept: String| {
        Answer::Switch(vec![
            ("upgrade".into(), upgrade.into()),
            ("connection".into(), "Upgrade".into()),
            ("sec-websocket-accept".into(), accept),
        ])
    };
    match seen.target.as_str() {
        "/ws/ok" => switch("websocket", accept_for(key.as_bytes())),
        "/ws/wrong-accept" => switch("websocket", accept_for(b"another key")),
        "/ws/h2c" => switch("h2c", accept_for(key.as_bytes())),
        "/ws/426" => Answer::Status(426, vec![("sec-websocket-version".into(), "13".into())], b"no".to_vec()),
        "/ws/200" => Answer::Ok,
        // A naive upstream that switches whatever it is asked.
        "/public/switch" => switch("websocket", accept_for(key.as_bytes())),
        _ if seen.has("upgrade") => switch("h2c", String::new()),
        _ => Answer::Ok,
    }
}

struct Setup {
    gw: Gateway,
    strict: Strict,
    key: TestKey,
    idp: SocketAddr,
}

impl Setup {
    async fn start(paths: &str) -> Self {
        let strict = Strict::with(answer).await;
        let idp = stub_provider().await;
        let key = TestKey::generate(Algorithm::EdDSA, "k");
        let toml = format!(
            r#"
[[listener]]
name = "test"
bind = "127.0.0.1:0"

[[upstream]]
name = "app"
targets = ["http://{up}"]

{auth}
[auth.api_key]
header = "X-Api-Key"

[[route]]
name = "ws"
match = {{ path = "/ws/**" }}
upstream = "app"
auth = "public"
websocket = true

[[route]]
name = "app"
match = {{ path = "/app/**" }}
upstream = "app"
auth = ["session", "jwt", "api_key"]

[[route]]
name = "public"
match = {{ path = "/**" }}
upstream = "app"
auth = "public"

{paths}
"#,
            up = strict.addr,
            auth = common::oidc_stub::auth_sections(idp, COOKIE_SECRET, ISS, key.public_pem.as_deref().unwrap())
        );
        Self { gw: gateway(&toml).await, strict, key, idp }
    }

    fn token(&self, sub: &str) -> String {
        let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
        self.key.token(&json!({"iss": ISS, "aud": "api", "sub": sub, "exp": now + 300}))
    }

    fn session(&self) -> String {
        common::oidc_stub::sealed_session(self.idp, COOKIE_SECRET, "1")
    }

    /// Sends `request` on a fresh connection; asserts the refusal, its one
    /// event, and that the upstream saw nothing.
    async fn assert_refused(&self, case: &str, request: &str, status: u16, reason: &str) {
        self.strict.clear();
        let events = self.gw.events.0.lock().unwrap().len();
        let response =
            raw::exchange(self.gw.addr, request.as_bytes()).await.unwrap_or_else(|| panic!("{case}: no response"));
        assert_eq!(response.status, status, "{case}: {}", String::from_utf8_lossy(&response.body));
        assert_eq!(response.reason().as_deref(), Some(reason), "{case}");
        let new: Vec<_> = self.gw.events.0.lock().unwrap()[events..].to_vec();
        assert_eq!(new.len(), 1, "{case}: one event, got {new:?}");
        assert_eq!(new[0].reason, reason, "{case}");
        assert!(self.strict.seen().is_empty(), "{case}: reached the upstream: {:?}", self.strict.seen());
        self.strict.assert_clean(case);
    }
}

fn forged_admin_token() -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let claims = URL_SAFE_NO_PAD.encode(br#"{"iss":"https://idp.test/","aud":"api","sub":"admin","roles":["admin"]}"#);
    format!("{header}.{claims}.")
}

fn ws_request(path: &str, extra: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: gw\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {WS_KEY}\r\n{extra}\r\n"
    )
}

#[tokio::test]
async fn only_websocket_upgrades_cross_and_only_where_a_route_allows_them() {
    let s = Setup::start("").await;
    let h2c = "GET /public/x HTTP/1.1\r\nHost: gw\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n\
               HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n";
    let other =
        |token: &str| format!("GET /public/x HTTP/1.1\r\nHost: gw\r\nConnection: upgrade\r\nUpgrade: {token}\r\n\r\n");
    let refused: Vec<(&str, String, u16, &str)> = vec![
        ("h2c upgrade (the reported tunnel)", h2c.to_owned(), 400, "upgrade.protocol"),
        ("h2c to a websocket route", h2c.replace("/public/x", "/ws/ok"), 400, "upgrade.protocol"),
        ("TLS/1.0", other("TLS/1.0"), 400, "upgrade.protocol"),
        ("unknown token", other("foo"), 400, "upgrade.protocol"),
        ("a list with websocket", other("websocket, h2c"), 400, "upgrade.protocol"),
        ("versioned token", other("websocket/13"), 400, "upgrade.protocol"),
        ("two Upgrade headers", ws_request("/ws/ok", "Upgrade: h2c\r\n"), 400, "upgrade.protocol"),
        (
            "websocket version 8",
            ws_request("/ws/ok", "").replace("Version: 13", "Version: 8"),
            400,
            "upgrade.websocket",
        ),
        (
            "no key",
            ws_request("/ws/ok", "").replace(&format!("Sec-WebSocket-Key: {WS_KEY}\r\n"), ""),
            400,
            "upgrade.websocket",
        ),
        ("short key", ws_request("/ws/ok", "").replace(WS_KEY, "c2hvcnQ="), 400, "upgrade.websocket"),
        ("POST", ws_request("/ws/ok", "").replacen("GET", "POST", 1), 400, "upgrade.websocket"),
        ("HTTP/1.0", ws_request("/ws/ok", "").replacen("HTTP/1.1", "HTTP/1.0", 1), 400, "upgrade.websocket"),
        (
            "a body after the handshake (bytes for the tunnel)",
            ws_request("/ws/ok", "Content-Length: 5\r\n") + "hello",
            400,
            "upgrade.websocket",
        ),
        ("websocket on a route without websocket = true", ws_request("/public/switch", ""), 400, "upgrade.not_allowed"),
        ("websocket on a protected route", ws_request("/app/x", ""), 400, "upgrade.not_allowed"),
        ("upstream answers 101 with a wrong accept", ws_request("/ws/wrong-accept", ""), 502, "upstream.protocol"),
        ("upstream switches to h2c", ws_request("/ws/h2c", ""), 502, "upstream.protocol"),
    ];
    for (case, request, status, reason) in &refused {
        s.strict.clear();
        let events = s.gw.events.0.lock().unwrap().len();
        let mut conn = Conn::open(s.gw.addr).await;
        let response = conn.exchange(request.as_bytes()).await.unwrap_or_else(|| panic!("{case}: no response"));
        assert_eq!(response.status, *status, "{case}: {}", String::from_utf8_lossy(&response.body));
        assert_eq!(response.reason().as_deref(), Some(*reason), "{case}");
        let new: Vec<_> = s.gw.events.0.lock().unwrap()[events..].iter().map(|e| e.reason).collect();
        assert_eq!(new, vec![*reason], "{case}");
        // The upstream saw the handshake only where the gateway let it
        // through to be answered; no tunnel was opened either way.
        let seen = s.strict.seen();
        if *status == 502 {
            assert_eq!(seen.len(), 1, "{case}");
        } else {
            assert!(seen.is_empty(), "{case}: reached the upstream: {seen:?}");
        }
        assert!(seen.iter().all(|r| r.tunnel.is_empty()), "{case}: bytes crossed a tunnel");
        s.strict.assert_clean(case);
        // The connection is still HTTP: a request for the protected route
        // sent on it now is judged like any other (401, not tunnelled).
        if *status == 400 {
            let next = conn.exchange(b"GET /app/x HTTP/1.1\r\nHost: gw\r\n\r\n").await;
            if let Some(next) = next {
                assert_eq!(next.status, 401, "{case}: the next request on the connection");
            }
            assert!(s.strict.seen().iter().all(|r| r.target != "/app/x"), "{case}");
        }
    }
}

#[tokio::test]
async fn a_101_to_a_request_that_asked_for_no_upgrade_is_refused() {
    let s = Setup::start("").await;
    // The naive upstream switches /public/switch whatever it is sent.
    s.assert_refused_upstream("GET /public/switch HTTP/1.1\r\nHost: gw\r\n\r\n").await;
}

impl Setup {
    async fn assert_refused_upstream(&self, request: &str) {
        self.strict.clear();
        let mut conn = Conn::open(self.gw.addr).await;
        let response = conn.exchange(request.as_bytes()).await.unwrap();
        assert_eq!(response.status, 502);
        assert_eq!(response.reason().as_deref(), Some("upstream.protocol"));
        assert_eq!(self.strict.seen().len(), 1);
        // Nothing was joined: bytes sent now are HTTP to the gateway.
        let next = conn.exchange(b"GET /app/x HTTP/1.1\r\nHost: gw\r\n\r\n").await.unwrap();
        assert_eq!(next.status, 401);
        assert!(self.strict.seen().iter().all(|r| r.tunnel.is_empty()));
    }
}

#[tokio::test]
async fn a_websocket_route_tunnels_after_a_complete_handshake_and_non_101_answers_stay_http() {
    let s = Setup::start("").await;
    let mut conn = Conn::open(s.gw.addr).await;
    let response = conn.exchange(ws_request("/ws/ok", "Sec-WebSocket-Protocol: chat\r\n").as_bytes()).await.unwrap();
    assert_eq!(response.status, 101);
    assert_eq!(response.header("sec-websocket-accept"), Some(accept_for(WS_KEY.as_bytes()).as_str()));
    assert_eq!(response.header("upgrade").map(str::to_ascii_lowercase).as_deref(), Some("websocket"));
    conn.write(b"frame bytes").await;
    let echoed = conn.read_for(Duration::from_millis(500)).await;
    assert_eq!(echoed, b"frame bytes");
    let seen = s.strict.wait_for(1, Duration::from_secs(5)).await;
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].tunnel, b"frame bytes");
    assert_eq!(seen[0].header("upgrade").as_deref(), Some("websocket"));
    assert_eq!(seen[0].header("sec-websocket-key").as_deref(), Some(WS_KEY));
    s.strict.assert_clean("websocket");

    // Refusing answers: relayed as they are, and the connection stays HTTP.
    for (path, status) in [("/ws/426", 426), ("/ws/200", 200)] {
        s.strict.clear();
        let mut conn = Conn::open(s.gw.addr).await;
        let response = conn.exchange(ws_request(path, "").as_bytes()).await.unwrap();
        assert_eq!(response.status, status, "{path}");
        assert!(response.header("upgrade").is_none(), "{path}");
        // What a client would send next if it believed in a tunnel: HTTP
        // for a protected route, judged by the gateway.
        if let Some(next) = conn.exchange(b"GET /app/secret HTTP/1.1\r\nHost: gw\r\n\r\n").await {
            assert_eq!(next.status, 401, "{path}");
        }
        let seen = s.strict.seen();
        assert_eq!(seen.len(), 1, "{path}: {seen:?}");
        assert!(seen[0].tunnel.is_empty(), "{path}");
        s.strict.assert_clean(path);
    }
}

#[tokio::test]
async fn credentials_and_identity_headers_may_appear_once() {
    let s = Setup::start("").await;
    let valid = s.token("alice");
    let forged = forged_admin_token();
    let session = s.session();
    let head = |path: &str, lines: &str| format!("GET {path} HTTP/1.1\r\nHost: gw\r\n{lines}\r\n");
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "valid token then forged admin token",
            head("/app/x", &format!("Authorization: Bearer {valid}\r\nAuthorization: Bearer {forged}\r\n")),
            "authorization",
        ),
        (
            "forged admin token then valid token",
            head("/app/x", &format!("Authorization: Bearer {forged}\r\nAuthorization: Bearer {valid}\r\n")),
            "authorization",
        ),
        (
            "one header name in two cases",
            head("/app/x", &format!("Authorization: Bearer {valid}\r\nauthorization: Bearer {forged}\r\n")),
            "authorization",
        ),
        ("two Host headers", "GET /public/x HTTP/1.1\r\nHost: gw\r\nHost: admin.internal\r\n\r\n".to_owned(), "host"),
        (
            "two Proxy-Authorization headers",
            head("/public/x", "Proxy-Authorization: Basic YTpi\r\nProxy-Authorization: Basic Yzpk\r\n"),
            "proxy-authorization",
        ),
        (
            "two Content-Type headers",
            "POST /public/x HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\nContent-Type: text/plain\r\n\
             Content-Length: 2\r\n\r\n{}"
                .to_owned(),
            "content-type",
        ),
        ("two API keys", head("/app/x", "X-Api-Key: pcl_aaaa_one\r\nX-Api-Key: pcl_bbbb_two\r\n"), "x-api-key"),
        (
            "an API key and its underscore spelling",
            head("/app/x", "X-Api-Key: pcl_aaaa_one\r\nX_Api_Key: pcl_bbbb_two\r\n"),
            "x-api-key",
        ),
        (
            "the session cookie twice in one Cookie",
            head("/app/x", &format!("Cookie: {session}; theme=dark; {SESSION_COOKIE}=forged\r\n")),
            "cookie:__Host-portcullis",
        ),
        (
            "the session cookie in two Cookie headers",
            head("/app/x", &format!("Cookie: {session}\r\nCookie: {SESSION_COOKIE}=forged\r\n")),
            "cookie:__Host-portcullis",
        ),
        ("the CSRF header twice", head("/app/x", "X-CSRF-Token: a\r\nX-CSRF-Token: b\r\n"), "x-csrf-token"),
        (
            "the CSRF cookie twice",
            head("/public/x", "Cookie: portcullis-csrf=a; portcullis-csrf=b\r\n"),
            "cookie:portcullis-csrf",
        ),
    ];
    for (case, request, rule) in &cases {
        s.assert_refused(case, request, 400, "request.duplicate").await;
        let event = s.gw.events.last().unwrap();
        assert_eq!(event.rule.as_deref(), Some(*rule), "{case}");
        // The event names the header, never its values.
        let text = serde_json::to_string(&event).unwrap();
        for secret in [&valid, &forged, &session] {
            assert!(!text.contains(secret.as_str()), "{case}: a credential leaked into the event");
        }
    }

    // The same credentials once each pass, and reach the upstream once.
    s.strict.clear();
    let ok = raw::exchange(s.gw.addr, head("/app/x", &format!("Authorization: Bearer {valid}\r\n")).as_bytes())
        .await
        .unwrap();
    assert_eq!(ok.status, 200);
    let seen = s.strict.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].all("authorization").len(), 1);
    let ok = raw::exchange(
        s.gw.addr,
        head("/app/x", &format!("Cookie: {session}\r\nCookie: theme=dark; theme=light\r\n")).as_bytes(),
    )
    .await
    .unwrap();
    assert_eq!(ok.status, 200, "other cookies may repeat: {}", String::from_utf8_lossy(&ok.body));
    s.strict.assert_clean("once each");
}

#[tokio::test]
async fn method_and_path_overrides_are_refused() {
    let s = Setup::start("").await;
    for header in [
        "X-HTTP-Method-Override: DELETE",
        "X-HTTP-Method: DELETE",
        "X-Method-Override: PUT",
        "X_HTTP_Method_Override: DELETE",
        "X-Original-URL: /admin/users",
        "X-Rewrite-URL: /admin/users",
    ] {
        let request = format!("POST /public/x HTTP/1.1\r\nHost: gw\r\n{header}\r\nContent-Length: 0\r\n\r\n");
        s.assert_refused(header, &request, 400, "request.override").await;
    }
    // Express's methodOverride('_method') and Laravel read the query.
    for query in ["_method=DELETE", "a=1&_method=PUT", "%5Fmethod=DELETE", "_method%5B%5D=DELETE"] {
        let request = format!("POST /public/x?{query} HTTP/1.1\r\nHost: gw\r\nContent-Length: 0\r\n\r\n");
        s.assert_refused(query, &request, 400, "request.override").await;
    }
    let request = b"POST /public/x?method=DELETE&x_method=PUT HTTP/1.1\r\nHost: gw\r\nContent-Length: 0\r\n\r\n";
    let ok = raw::exchange(s.gw.addr, request).await.unwrap();
    assert_eq!(ok.status, 200, "other parameters pass: {}", String::from_utf8_lossy(&ok.body));
}

#[tokio::test]
async fn paths_a_backend_would_decode_again_or_trim_are_refused() {
    let s = Setup::start("").await;
    let refused = [
        ("/public/%252e%252e/admin/users", "path.double_encoding"),
        ("/public/%25%32%65%25%32%65/admin/users", "path.double_encoding"),
        ("/public/%252f", "path.double_encoding"),
        ("/public/%25252e", "path.double_encoding"),
        ("/public/..%20/admin", "path.dot_segment"),
        ("/public/%20../admin", "path.dot_segment"),
        ("/public/.../admin", "path.dot_segment"),
        ("/public/..%2e/admin", "path.dot_segment"),
        ("/public/..%C2%A0/admin", "path.dot_segment"),
        ("/public/%EF%BC%8E%EF%BC%8E/admin", "path.dot_segment"),
        ("/public/%E2%80%A5/admin", "path.dot_segment"),
        ("/public/..%09/admin", "path.control"),
    ];
    for (path, reason) in refused {
        s.assert_refused(path, &format!("GET {path} HTTP/1.1\r\nHost: gw\r\n\r\n"), 400, reason).await;
    }
    // Look-alikes that are plain names pass, forwarded as normalized.
    for (path, forwarded) in [
        ("/public/100%25", "/public/100%25"),
        ("/public/50%25-off", "/public/50%25-off"),
        ("/public/..a/b", "/public/..a/b"),
        ("/public/.well-known", "/public/.well-known"),
        ("/public/x/..;x=1/y", "/public/y"),
    ] {
        s.strict.clear();
        let response =
            raw::exchange(s.gw.addr, format!("GET {path} HTTP/1.1\r\nHost: gw\r\n\r\n").as_bytes()).await.unwrap();
        assert_eq!(response.status, 200, "{path}: {}", String::from_utf8_lossy(&response.body));
        let seen = s.strict.seen();
        assert_eq!(seen.len(), 1, "{path}");
        assert_eq!(seen[0].target, forwarded, "{path}");
        s.strict.assert_clean(path);
    }

    // `encoded_percent = "keep"` forwards the escape as sent, for backends
    // known to decode once; dot look-alikes stay refused.
    let keep = Setup::start("[paths]\nencoded_percent = \"keep\"").await;
    let path = "/public/%252e%252e/admin/users";
    let response =
        raw::exchange(keep.gw.addr, format!("GET {path} HTTP/1.1\r\nHost: gw\r\n\r\n").as_bytes()).await.unwrap();
    assert_eq!(response.status, 200);
    assert_eq!(keep.strict.seen()[0].target, path);
    keep.assert_refused(
        "dot look-alike with keep",
        "GET /public/..%20/x HTTP/1.1\r\nHost: gw\r\n\r\n",
        400,
        "path.dot_segment",
    )
    .await;
}
