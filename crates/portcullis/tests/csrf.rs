//! CSRF through the running gateway: browser sessions (a real sealed session
//! cookie, opened by the gateway's own OIDC session code) on a route that
//! accepts `session` and `jwt`; cross-site posts refused before the
//! upstream; the token cookie issued on safe requests and by
//! `GET /.portcullis/csrf`; missing, forged and foreign tokens refused with
//! their codes; bearer requests exempt; one event per refusal, without the
//! token.
//!
//! The OIDC provider is a stub on a loopback port that serves only
//! discovery and an empty JWKS: sessions are sealed here with the
//! configured `cookie_secret`, so no login round trip is needed.

use crate::common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use common::oidc_stub::stub_provider;
use common::*;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use jsonwebtoken::Algorithm;
use portcullis_policy::jwt::forge::TestKey;

use serde_json::json;

const COOKIE_SECRET: &str = "csrf-test-cookie-secret-of-more-than-32-bytes";
const ISS: &str = "https://idp.test/";
const TOKEN_COOKIE: &str = "portcullis-csrf";

/// An upstream that counts the requests reaching it.
async fn counting_upstream() -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    let addr = upstream(move |req: Request<Incoming>| {
        let record = record.clone();
        async move {
            // The token stays at the gateway: mark any request carrying it.
            let cookie = req.headers().get("cookie").map(|c| c.to_str().unwrap().to_owned()).unwrap_or_default();
            let leak = req.headers().contains_key("x-csrf-token") || cookie.contains("portcullis-csrf");
            let mark = if leak { " TOKEN-LEAKED" } else { "" };
            record.lock().unwrap().push(format!("{} {}{mark}", req.method(), req.uri().path()));
            Response::new(portcullis_layers::full("upstream"))
        }
    })
    .await;
    (addr, seen)
}

struct Setup {
    gw: Gateway,
    idp: SocketAddr,
    key: TestKey,
    seen: Arc<Mutex<Vec<String>>>,
}

impl Setup {
    async fn start(extra: &str) -> Self {
        let idp = stub_provider().await;
        let (up, seen) = counting_upstream().await;
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
[[route]]
name = "app"
match = {{ path = "/app/**" }}
upstream = "app"
auth = ["session", "jwt"]

[[route]]
name = "contact"
match = {{ path = "/contact" }}
upstream = "app"
auth = "public"
csrf = true

[[route]]
name = "open"
match = {{ path = "/**" }}
upstream = "app"
auth = "public"

{extra}
"#,
            auth = common::oidc_stub::auth_sections(idp, COOKIE_SECRET, ISS, key.public_pem.as_deref().unwrap())
        );
        let gw = gateway(&toml).await;
        Self { gw, idp, key, seen }
    }

    /// A sealed session cookie pair (`name=value`) for session `id`.
    fn session(&self, id: &str) -> String {
        common::oidc_stub::sealed_session(self.idp, COOKIE_SECRET, id)
    }

    fn bearer(&self) -> String {
        let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
        self.key.token(&json!({"iss": ISS, "aud": "api", "sub": "svc", "exp": now + 300}))
    }

    /// `http://127.0.0.1:PORT`: the gateway's own origin as clients reach it.
    fn origin(&self) -> String {
        format!("http://{}", self.gw.addr)
    }

    fn upstream_calls(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    async fn send(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> (http::response::Parts, Bytes) {
        let mut req = Request::builder().method(method).uri(self.gw.url(path));
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        send(req.body(portcullis_layers::full("item=1")).unwrap()).await
    }

    /// A safe `GET` with session `cookie`: the token cookie it was given.
    async fn token_from_get(&self, cookie: &str) -> String {
        let (parts, _) = self.send("GET", "/app/page", &[("cookie", cookie)]).await;
        assert_eq!(parts.status, StatusCode::OK);
        token_cookie(&parts).expect("a token cookie on a safe request")
    }
}

/// The value of the token cookie the answer sets, if any.
fn token_cookie(parts: &http::response::Parts) -> Option<String> {
    parts
        .headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap())
        .find_map(|c| c.strip_prefix(&format!("{TOKEN_COOKIE}=")))
        .map(|rest| rest.split(';').next().unwrap().to_owned())
}

impl Setup {
    /// Sends a request and asserts one refusal with `reason`: the JSON
    /// answer, the upstream not called, exactly one event naming the route
    /// and carrying none of `secrets`.
    async fn refused(
        &self,
        (method, path, headers): (&str, &str, &[(&str, &str)]),
        reason: &str,
        route: &str,
        secrets: &[&str],
    ) {
        let before = self.upstream_calls();
        let (parts, body) = self.send(method, path, headers).await;
        assert_denied(&parts, &body, 403, reason);
        assert_eq!(self.upstream_calls(), before, "refused before the upstream");
        let id = parts.headers["x-request-id"].to_str().unwrap().to_owned();
        let events = self.gw.events.clone();
        eventually("the refusal's event", Duration::from_secs(5), || {
            events.0.lock().unwrap().iter().any(|e| e.request_id == id)
        })
        .await;
        let mine: Vec<_> = events.0.lock().unwrap().iter().filter(|e| e.request_id == id).cloned().collect();
        assert_eq!(mine.len(), 1, "exactly one event per refusal: {mine:?}");
        let event = &mine[0];
        assert_eq!((event.reason, event.defence, event.status), (reason, "csrf", 403));
        assert_eq!(event.rule.as_deref(), Some(route));
        let text = serde_json::to_string(event).unwrap();
        for secret in secrets {
            assert!(!text.contains(secret), "event leaks a secret: {text}");
        }
    }
}

#[tokio::test]
async fn cross_site_posts_with_a_session_are_refused_before_the_upstream() {
    let setup = Setup::start("").await;
    let session = setup.session("alice");
    let token = setup.token_from_get(&session).await;
    let cookies = format!("{session}; {TOKEN_COOKIE}={token}");
    let secrets = [token.as_str(), session.as_str()];

    // A form auto-submitted by another site: the browser says cross-site.
    // Even a stolen valid token does not help.
    setup
        .refused(
            (
                "POST",
                "/app/orders",
                &[
                    ("sec-fetch-site", "cross-site"),
                    ("origin", "https://evil.example"),
                    ("content-type", "application/x-www-form-urlencoded"),
                    ("cookie", &cookies),
                    ("x-csrf-token", &token),
                ],
            ),
            "csrf.origin",
            "app",
            &secrets,
        )
        .await;

    // Older browsers: only Origin; opaque origins; no origin at all.
    for headers in [
        vec![("origin", "https://evil.example")],
        vec![("origin", "null")],
        vec![("sec-fetch-site", "same-site")],
        vec![],
    ] {
        let mut headers = headers;
        headers.push(("cookie", &cookies));
        headers.push(("x-csrf-token", &token));
        setup.refused(("DELETE", "/app/orders/1", &headers), "csrf.origin", "app", &secrets).await;
    }
    assert!(setup.seen.lock().unwrap().iter().all(|r| r.starts_with("GET ")), "{:?}", setup.seen);
}

#[tokio::test]
async fn a_safe_get_issues_the_token_and_a_same_origin_post_with_it_passes() {
    let setup = Setup::start("").await;
    let session = setup.session("alice");
    let (parts, _) = setup.send("GET", "/app/page", &[("cookie", &session)]).await;
    assert_eq!(parts.status, StatusCode::OK);
    let set_cookie = parts
        .headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|c| c.starts_with(TOKEN_COOKIE))
        .expect("token cookie issued");
    assert!(set_cookie.ends_with("; Path=/; SameSite=Strict"), "plain HTTP: no Secure, no HttpOnly: {set_cookie}");
    let token = token_cookie(&parts).unwrap();
    let cookies = format!("{session}; {TOKEN_COOKIE}={token}");

    // Holding a valid cookie, the next GET gets none.
    let (parts, _) = setup.send("GET", "/app/page", &[("cookie", &cookies)]).await;
    assert!(token_cookie(&parts).is_none());

    let origin = setup.origin();
    for headers in [
        vec![("sec-fetch-site", "same-origin"), ("origin", origin.as_str())],
        vec![("origin", origin.as_str())],
        vec![("sec-fetch-site", "same-origin")],
    ] {
        let mut headers = headers;
        headers.extend([("cookie", cookies.as_str()), ("x-csrf-token", token.as_str())]);
        let before = setup.upstream_calls();
        let (parts, body) = setup.send("POST", "/app/orders", &headers).await;
        assert_eq!(parts.status, StatusCode::OK, "{headers:?}: {}", String::from_utf8_lossy(&body));
        assert_eq!(&body[..], b"upstream");
        assert_eq!(setup.upstream_calls(), before + 1);
    }
    assert!(setup.gw.events.0.lock().unwrap().is_empty(), "{:?}", setup.gw.events.reasons());
    let seen = setup.seen.lock().unwrap().clone();
    assert!(seen.iter().all(|r| !r.contains("TOKEN-LEAKED")), "{seen:?}");
}

#[tokio::test]
async fn same_site_requests_pass_with_a_token_only_when_configured() {
    let setup = Setup::start("[csrf]\nallow_same_site = true\n").await;
    let session = setup.session("alice");
    let token = setup.token_from_get(&session).await;
    let cookies = format!("{session}; {TOKEN_COOKIE}={token}");
    let (parts, _) = setup
        .send(
            "PUT",
            "/app/orders/1",
            &[("sec-fetch-site", "same-site"), ("cookie", &cookies), ("x-csrf-token", &token)],
        )
        .await;
    assert_eq!(parts.status, StatusCode::OK);
    // The token is still required.
    setup
        .refused(
            ("PUT", "/app/orders/1", &[("sec-fetch-site", "same-site"), ("cookie", &session)]),
            "csrf.token_missing",
            "app",
            &[&session],
        )
        .await;
}

#[tokio::test]
async fn missing_forged_and_foreign_tokens_are_refused_with_their_codes() {
    let setup = Setup::start("").await;
    let alice = setup.session("alice");
    let bob = setup.session("bob");
    let token = setup.token_from_get(&alice).await;
    let bobs_token = setup.token_from_get(&bob).await;
    let same_origin = ("sec-fetch-site", "same-origin");
    let forged = "A".repeat(token.len());
    let with_cookie = |t: &str| format!("{alice}; {TOKEN_COOKIE}={t}");
    let secrets = [token.as_str(), bobs_token.as_str(), alice.as_str()];

    // No header; no cookie.
    let cookies = with_cookie(&token);
    setup
        .refused(("POST", "/app/orders", &[same_origin, ("cookie", &cookies)]), "csrf.token_missing", "app", &secrets)
        .await;
    setup
        .refused(
            ("POST", "/app/orders", &[same_origin, ("cookie", &alice), ("x-csrf-token", &token)]),
            "csrf.token_missing",
            "app",
            &secrets,
        )
        .await;

    // Forged consistently (the attacker controls both in a cookie-tossing
    // attack), header and cookie differing, another session's token.
    let cases = [
        (with_cookie(&forged), forged.clone()),
        (with_cookie(&token), forged.clone()),
        (with_cookie(&token), bobs_token.clone()),
        (with_cookie(&bobs_token), bobs_token.clone()),
    ];
    for (cookies, header) in &cases {
        setup
            .refused(
                ("POST", "/app/orders", &[same_origin, ("cookie", cookies), ("x-csrf-token", header)]),
                "csrf.token_invalid",
                "app",
                &secrets,
            )
            .await;
    }
    assert_eq!(setup.upstream_calls(), 2, "only the two GETs reached it: {:?}", setup.seen);
    // The real one still works.
    let cookies = with_cookie(&token);
    let (parts, _) =
        setup.send("POST", "/app/orders", &[same_origin, ("cookie", &cookies), ("x-csrf-token", &token)]).await;
    assert_eq!(parts.status, StatusCode::OK);
}

#[tokio::test]
async fn bearer_requests_are_exempt_unless_the_exemption_is_removed() {
    let setup = Setup::start("").await;
    let auth = format!("Bearer {}", setup.bearer());
    let before = setup.upstream_calls();
    let (parts, _) =
        setup.send("POST", "/app/orders", &[("authorization", &auth), ("origin", "https://evil.example")]).await;
    assert_eq!(parts.status, StatusCode::OK);
    assert_eq!(setup.upstream_calls(), before + 1);
    let (parts, _) = setup.send("GET", "/app/page", &[("authorization", &auth)]).await;
    assert!(token_cookie(&parts).is_none(), "exempt callers need no token");

    let strict = Setup::start("[csrf]\nexempt = []\n").await;
    let auth = format!("Bearer {}", strict.bearer());
    strict.refused(("POST", "/app/orders", &[("authorization", &auth)]), "csrf.origin", "app", &[&auth]).await;
}

#[tokio::test]
async fn the_token_endpoint_binds_to_the_session_and_public_routes_opt_in() {
    let setup = Setup::start("").await;
    let alice = setup.session("alice");
    let (parts, body) = setup.send("GET", "/.portcullis/csrf", &[("cookie", &alice)]).await;
    assert_eq!(parts.status, StatusCode::OK);
    assert_eq!(parts.headers["cache-control"], "no-store");
    let token = json(&body)["token"].as_str().unwrap().to_owned();
    assert_eq!(token_cookie(&parts).as_deref(), Some(token.as_str()), "cookie and body carry one token");
    let cookies = format!("{alice}; {TOKEN_COOKIE}={token}");
    let origin = setup.origin();
    let (parts, _) =
        setup.send("POST", "/app/orders", &[("origin", &origin), ("cookie", &cookies), ("x-csrf-token", &token)]).await;
    assert_eq!(parts.status, StatusCode::OK);

    // Without a session the token is bound to no one: it does not open a
    // session route, but serves a public route that opted in.
    let (_, body) = setup.send("GET", "/.portcullis/csrf", &[]).await;
    let anonymous = json(&body)["token"].as_str().unwrap().to_owned();
    let cookies = format!("{alice}; {TOKEN_COOKIE}={anonymous}");
    setup
        .refused(
            ("POST", "/app/orders", &[("origin", &origin), ("cookie", &cookies), ("x-csrf-token", &anonymous)]),
            "csrf.token_invalid",
            "app",
            &[&anonymous],
        )
        .await;

    setup.refused(("POST", "/contact", &[("origin", "https://evil.example")]), "csrf.origin", "contact", &[]).await;
    setup.refused(("POST", "/contact", &[("origin", &origin)]), "csrf.token_missing", "contact", &[]).await;
    let cookies = format!("{TOKEN_COOKIE}={anonymous}");
    let (parts, _) = setup
        .send("POST", "/contact", &[("origin", &origin), ("cookie", &cookies), ("x-csrf-token", &anonymous)])
        .await;
    assert_eq!(parts.status, StatusCode::OK);
    // A public route that did not opt in is not checked.
    let (parts, _) = setup.send("POST", "/elsewhere", &[("origin", "https://evil.example")]).await;
    assert_eq!(parts.status, StatusCode::OK);
}

#[tokio::test]
async fn behind_a_trusted_tls_proxy_the_cookie_is_host_prefixed_and_https_is_the_origin() {
    let setup = Setup::start("[server]\ntrusted_proxies = [\"127.0.0.1\"]\n").await;
    let alice = setup.session("alice");
    let (parts, _) = setup.send("GET", "/app/page", &[("cookie", &alice), ("x-forwarded-proto", "https")]).await;
    let set_cookie = parts
        .headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|c| c.starts_with("__Host-portcullis-csrf="))
        .expect("__Host- token cookie");
    assert!(set_cookie.ends_with("; Path=/; SameSite=Strict; Secure"), "{set_cookie}");
    let token = set_cookie.split(';').next().unwrap().split_once('=').unwrap().1.to_owned();
    let cookies = format!("{alice}; __Host-portcullis-csrf={token}");
    let https_origin = format!("https://{}", setup.gw.addr);
    let headers = [("x-forwarded-proto", "https"), ("cookie", cookies.as_str()), ("x-csrf-token", token.as_str())];
    let mut with_origin = headers.to_vec();
    with_origin.push(("origin", &https_origin));
    let (parts, _) = setup.send("POST", "/app/orders", &with_origin).await;
    assert_eq!(parts.status, StatusCode::OK);
    // The plain-HTTP origin is another origin.
    let plain = setup.origin();
    let mut with_plain = headers.to_vec();
    with_plain.push(("origin", &plain));
    setup.refused(("POST", "/app/orders", &with_plain), "csrf.origin", "app", &[&token]).await;
}
