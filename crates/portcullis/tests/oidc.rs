//! OIDC login end to end against a real provider (`oidc-provider`, started on
//! a loopback port): the browser flow driven by an HTTP client that keeps
//! cookies and submits the provider's login and consent forms, refresh,
//! logout, and refused callbacks and cookies.
//!
//! The gateway's authentication layer does not mount the login router or
//! call the session verifier yet, so these tests serve `oidc::router` on its
//! own loopback listener (plain HTTP: `public_url` may be `http://` on
//! loopback; the test client's cookie jar does not enforce `Secure`) and call
//! `OidcLogin::verify` directly. The names say `via_router`; once the layer is
//! wired, the same flows can go through the gateway.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use common::oidc_provider::{CLIENT_ID, CLIENT_SECRET, Provider, ProviderSettings};
use http::header::{COOKIE, LOCATION, SET_COOKIE};
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use openidconnect::url::Url;
use portcullis::oidc::{OidcLogin, router};
use portcullis::shared::MemoryRevocations;
use portcullis_layers::auth::VerifySession;
use portcullis_policy::session::{LOGIN_COOKIE, SESSION_COOKIE, SessionKey};
use portcullis_policy::{AuthMethod, Denied};

const COOKIE_SECRET: &str = "test-cookie-secret-of-more-than-32-bytes";

/// A minimal browser: keeps cookies per host and port, follows redirects,
/// submits forms.
struct Browser {
    client: Client<HttpConnector, Full<Bytes>>,
    jar: HashMap<String, Vec<(String, String)>>,
    /// Every `Set-Cookie` seen, as sent.
    set_cookies: Vec<String>,
}

struct Page {
    url: Url,
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Browser {
    fn new() -> Self {
        Self {
            client: Client::builder(TokioExecutor::new()).build_http(),
            jar: HashMap::new(),
            set_cookies: Vec::new(),
        }
    }

    fn origin(url: &Url) -> String {
        format!("{}:{}", url.host_str().unwrap(), url.port_or_known_default().unwrap())
    }

    fn cookie(&self, url: &str, name: &str) -> Option<String> {
        let url = Url::parse(url).unwrap();
        self.jar.get(&Self::origin(&url))?.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone())
    }

    /// One request, no redirect following.
    async fn send(&mut self, method: Method, url: &Url, form: Option<&[(&str, &str)]>) -> Page {
        let mut request = Request::builder().method(method).uri(url.as_str());
        let cookies = self.jar.get(&Self::origin(url)).cloned().unwrap_or_default();
        if !cookies.is_empty() {
            let header = cookies.iter().map(|(n, v)| format!("{n}={v}")).collect::<Vec<_>>().join("; ");
            request = request.header(COOKIE, header);
        }
        let body = match form {
            Some(pairs) => {
                request = request.header("content-type", "application/x-www-form-urlencoded");
                let mut encoded = openidconnect::url::form_urlencoded::Serializer::new(String::new());
                encoded.extend_pairs(pairs.iter());
                Bytes::from(encoded.finish())
            }
            None => Bytes::new(),
        };
        let response = self.client.request(request.body(Full::new(body)).unwrap()).await.unwrap();
        let (parts, body) = response.into_parts();
        let body = String::from_utf8_lossy(&body.collect().await.unwrap().to_bytes()).into_owned();
        for value in parts.headers.get_all(SET_COOKIE) {
            let text = value.to_str().unwrap().to_owned();
            let (pair, _) = text.split_once(';').unwrap_or((&text, ""));
            let (name, value) = pair.split_once('=').unwrap();
            let jar = self.jar.entry(Self::origin(url)).or_default();
            jar.retain(|(n, _)| n != name);
            if !value.is_empty() && !text.contains("Max-Age=0") {
                jar.push((name.to_owned(), value.to_owned()));
            }
            self.set_cookies.push(text);
        }
        Page { url: url.clone(), status: parts.status, headers: parts.headers, body }
    }

    /// A request, then redirects followed to the first non-redirect answer.
    async fn follow(&mut self, method: Method, url: &str, form: Option<&[(&str, &str)]>) -> (Page, Vec<Url>) {
        let mut url = Url::parse(url).unwrap();
        let mut page = self.send(method, &url, form).await;
        let mut visited = vec![url.clone()];
        for _ in 0..20 {
            if !page.status.is_redirection() {
                return (page, visited);
            }
            url = url.join(page.headers[LOCATION].to_str().unwrap()).unwrap();
            visited.push(url.clone());
            page = self.send(Method::GET, &url, None).await;
        }
        panic!("too many redirects: {visited:?}");
    }

    /// Submits the page's (first) form with `fields`.
    async fn submit(&mut self, page: &Page, fields: &[(&str, &str)]) -> (Page, Vec<Url>) {
        let start = page.body.find("action=\"").unwrap_or_else(|| panic!("no form in {}", page.body)) + 8;
        let end = start + page.body[start..].find('"').unwrap();
        let action = page.url.join(&page.body[start..end]).unwrap();
        self.follow(Method::POST, action.as_str(), Some(fields)).await
    }
}

/// The provider, the login router on its own listener, and the verifier.
struct Setup {
    provider: Provider,
    login: OidcLogin,
    public_url: String,
    _dir: tempfile::TempDir,
}

async fn setup(access_token_ttl: u64) -> Setup {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let public_url = format!("http://{}", listener.local_addr().unwrap());
    let callback = format!("{public_url}/.portcullis/callback");
    let bye = format!("{public_url}/bye");
    let provider = Provider::start(&ProviderSettings {
        redirect_uris: &[&callback],
        post_logout_redirect_uris: &[&bye],
        access_token_ttl,
    });

    let toml = common::simple_config(
        "127.0.0.1:9".parse().unwrap(),
        &format!(
            r#"
[auth.oidc]
issuer = "{issuer}"
client_id = "{CLIENT_ID}"
client_secret = "{CLIENT_SECRET}"
public_url = "{public_url}"
post_logout_redirect = "{bye}"

[auth.session]
cookie_secret = "{COOKIE_SECRET}"
lifetime = "1h"
"#,
            issuer = provider.issuer
        ),
    );
    let (config, dir) = common::config(&toml);
    let oidc = config.auth.oidc.clone().expect("[auth.oidc] configured");
    let login = OidcLogin::start(&oidc, dir.path(), Arc::new(MemoryRevocations::default()))
        .await
        .unwrap_or_else(|e| panic!("OidcLogin::start: {e}; provider: {:?}", provider.stderr()));

    // Stands in for the reject layer: renders a denial's body and headers.
    let app = router(Arc::new(login.clone())).fallback(|| async { "protected app" }).layer(
        axum::middleware::map_response(|response: axum::response::Response| async move {
            match response.extensions().get::<Denied>() {
                Some(denied) => {
                    let mut rendered = axum::response::Response::new(axum::body::Body::from(denied.body("test")));
                    *rendered.status_mut() = denied.status();
                    *rendered.headers_mut() = response.headers().clone();
                    for (name, value) in &denied.headers {
                        rendered.headers_mut().append(name.clone(), value.clone());
                    }
                    rendered
                }
                None => response,
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    Setup { provider, login, public_url, _dir: dir }
}

/// Logs in as `user` through the provider's forms; returns the session
/// cookie's value.
async fn browser_login(setup: &Setup, browser: &mut Browser, user: &str) -> String {
    let start = format!("{}/.portcullis/login?rd=%2Fapp%3Fx%3D1", setup.public_url);
    let (page, visited) = browser.follow(Method::GET, &start, None).await;
    assert_eq!(page.status, StatusCode::OK, "{visited:?}\n{}", page.body);
    assert!(visited[1].as_str().starts_with(&setup.provider.issuer), "redirected to the provider: {visited:?}");
    let auth: HashMap<_, _> = visited[1].query_pairs().into_owned().collect();
    assert_eq!(auth["code_challenge_method"], "S256");
    assert!(auth.contains_key("code_challenge") && auth.contains_key("state") && auth.contains_key("nonce"));
    assert!(page.body.contains("name=\"login\""), "the login form: {}", page.body);

    let (mut page, mut visited) =
        browser.submit(&page, &[("prompt", "login"), ("login", user), ("password", "any")]).await;
    if page.body.contains("value=\"consent\"") {
        (page, visited) = browser.submit(&page, &[("prompt", "consent")]).await;
    }
    assert_eq!(page.status, StatusCode::OK, "{visited:?}\n{}", page.body);
    assert_eq!(page.body, "protected app");
    let last = visited.last().unwrap();
    assert_eq!((last.path(), last.query()), ("/app", Some("x=1")), "back at the return path: {visited:?}");
    assert!(visited.iter().any(|u| u.path() == "/.portcullis/callback"), "{visited:?}");
    assert!(browser.cookie(&setup.public_url, LOGIN_COOKIE).is_none(), "the login cookie is cleared");
    browser.cookie(&setup.public_url, SESSION_COOKIE).expect("a session cookie")
}

#[tokio::test]
async fn via_router_browser_login_refresh_and_logout() {
    let setup = setup(300).await;
    let mut browser = Browser::new();
    let cookie = browser_login(&setup, &mut browser, "alice").await;

    let attributes = browser.set_cookies.iter().find(|c| c.starts_with("__Host-portcullis=")).unwrap();
    for attribute in ["Path=/", "Secure", "HttpOnly", "SameSite=Lax"] {
        assert!(attributes.contains(attribute), "{attributes}");
    }
    assert!(!attributes.contains("Domain"), "{attributes}");

    // The session verifies: subject and roles from the ID token.
    assert_eq!(setup.login.cookie_name(), "__Host-portcullis");
    let outcome = setup.login.verify(&cookie).await.unwrap();
    assert_eq!(outcome.principal.subject, "alice");
    assert_eq!(outcome.principal.roles, ["editor"]);
    assert_eq!(outcome.principal.method, AuthMethod::Session);
    assert!(outcome.principal.scopes.iter().any(|s| s == "openid"));
    assert!(outcome.set_cookie.is_none(), "no refresh while the access token is fresh");

    // Refresh: the access token has expired (rewritten in the sealed cookie,
    // instead of waiting for it), so verify refreshes it with the provider.
    let key = SessionKey::new(COOKIE_SECRET.as_bytes()).unwrap();
    let mut data = key.open(&cookie, SystemTime::now()).unwrap();
    assert!(data.refresh_token.is_some(), "the provider issued a refresh token");
    data.access_expires_at = Some(portcullis_policy::session::unix(SystemTime::now()) - 1);
    let due = key.seal(&data, SystemTime::now()).unwrap();
    let refreshed = setup.login.verify(&due).await.unwrap();
    let set_cookie = refreshed.set_cookie.expect("a refreshed cookie").to_str().unwrap().to_owned();
    assert!(set_cookie.starts_with("__Host-portcullis=") && set_cookie.contains("HttpOnly"), "{set_cookie}");
    let new_value = set_cookie.trim_start_matches("__Host-portcullis=").split(';').next().unwrap();
    let new_data = key.open(new_value, SystemTime::now()).unwrap();
    assert_eq!((new_data.id.as_str(), new_data.subject.as_str()), (data.id.as_str(), "alice"));
    assert_eq!(new_data.expires_at, data.expires_at, "refresh does not extend the session");
    assert!(new_data.access_expires_at.unwrap() > portcullis_policy::session::unix(SystemTime::now()));
    assert_eq!(refreshed.principal.roles, ["editor"]);
    assert!(setup.login.verify(new_value).await.unwrap().set_cookie.is_none());

    // Logout: the cookie is cleared, the id revoked, the browser sent to the
    // provider's end_session_endpoint.
    let logout = Url::parse(&format!("{}/.portcullis/logout", setup.public_url)).unwrap();
    let page = browser.send(Method::POST, &logout, Some(&[])).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    let location = Url::parse(page.headers[LOCATION].to_str().unwrap()).unwrap();
    assert_eq!(Some(location.as_str()).map(|l| l.starts_with(&setup.provider.issuer)), Some(true), "{location}");
    assert_eq!(Some(location.as_str().split('?').next().unwrap()), setup.login.end_session_endpoint());
    let query: HashMap<_, _> = location.query_pairs().into_owned().collect();
    assert_eq!(query["client_id"], CLIENT_ID);
    assert_eq!(query["post_logout_redirect_uri"], format!("{}/bye", setup.public_url));
    let cleared = browser.set_cookies.last().unwrap();
    assert!(cleared.starts_with("__Host-portcullis=;") && cleared.contains("Max-Age=0"), "{cleared}");
    assert!(browser.cookie(&setup.public_url, SESSION_COOKIE).is_none());
    for old in [&cookie, &new_value.to_owned()] {
        let denied = setup.login.verify(old).await.unwrap_err();
        assert_eq!(denied.reason.code(), "session.revoked");
    }
    // The provider accepts the logout request (its confirmation page).
    let (page, _) = browser.follow(Method::GET, location.as_str(), None).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);

    // GET on logout changes nothing: it only offers the button.
    let mut other = Browser::new();
    let (page, _) = other.follow(Method::GET, logout.as_str(), None).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("method=\"post\""), "{}", page.body);
}

#[tokio::test]
async fn via_router_callback_with_wrong_state_is_refused() {
    let setup = setup(300).await;
    let mut browser = Browser::new();
    let login = Url::parse(&format!("{}/.portcullis/login?rd=/app", setup.public_url)).unwrap();
    let page = browser.send(Method::GET, &login, None).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert!(browser.cookie(&setup.public_url, LOGIN_COOKIE).is_some());

    let callback = |query: &str| Url::parse(&format!("{}/.portcullis/callback?{query}", setup.public_url)).unwrap();
    let page = browser.send(Method::GET, &callback("code=abc&state=forged"), None).await;
    assert_eq!(
        (page.status, page.body.as_str()),
        (StatusCode::BAD_REQUEST, r#"{"error":"oidc.state","request_id":"test"}"#)
    );
    assert!(browser.cookie(&setup.public_url, LOGIN_COOKIE).is_none(), "a failed callback ends the login");

    // No login in progress at all (a forged or replayed callback).
    let page = Browser::new().send(Method::GET, &callback("code=abc&state=x"), None).await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    assert!(page.body.contains("oidc.state"), "{}", page.body);

    // The right state with a code the provider never issued: the exchange fails.
    let mut browser = Browser::new();
    let page = browser.send(Method::GET, &login, None).await;
    let to_provider = Url::parse(page.headers[LOCATION].to_str().unwrap()).unwrap();
    let state = to_provider.query_pairs().find(|(k, _)| k == "state").unwrap().1.into_owned();
    let page = browser.send(Method::GET, &callback(&format!("code=not-a-code&state={state}")), None).await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    assert!(page.body.contains("oidc.callback"), "{}", page.body);
}

#[tokio::test]
async fn via_router_tampered_or_foreign_session_cookie_is_invalid() {
    let setup = setup(300).await;
    let mut browser = Browser::new();
    let cookie = browser_login(&setup, &mut browser, "bob").await;
    assert_eq!(setup.login.verify(&cookie).await.unwrap().principal.subject, "bob");

    let mut tampered = cookie.clone().into_bytes();
    let middle = tampered.len() / 2;
    tampered[middle] = if tampered[middle] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    let other_key = SessionKey::new(b"a different secret, also 32 bytes long").unwrap();
    let mut data = SessionKey::new(COOKIE_SECRET.as_bytes()).unwrap().open(&cookie, SystemTime::now()).unwrap();
    data.roles = vec!["admin".into()];
    let forged = other_key.seal(&data, SystemTime::now()).unwrap();

    for (name, value) in [("tampered", tampered.as_str()), ("forged", forged.as_str()), ("garbage", "not-a-cookie")] {
        let denied = setup.login.verify(value).await.unwrap_err();
        assert_eq!(denied.reason.code(), "session.invalid", "{name}");
    }

    // An unauthenticated browser is sent to login, keeping where it was going.
    let response = setup.login.login_redirect("/app?x=1");
    assert_eq!(response.status(), StatusCode::FOUND);
    assert_eq!(response.headers()[LOCATION], "/.portcullis/login?rd=%2Fapp%3Fx%3D1");
    let response = setup.login.login_redirect("//evil.example/");
    assert_eq!(response.headers()[LOCATION], "/.portcullis/login?rd=%2F");
}
