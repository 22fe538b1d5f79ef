//! OIDC login end to end, through the real gateway, against a real provider
//! (`oidc-provider`, started on a loopback port): the browser flow driven by
//! an HTTP client that keeps cookies like a browser and submits the
//! provider's login and consent forms, the protected route reached with a
//! session, refresh, logout, and refused callbacks and cookies.
//!
//! The gateway runs in process with an HTTPS listener (`tls =
//! "self-signed"`): the session cookie is `__Host-`, hence `Secure`, and the
//! test browser honours that (it neither stores nor sends `Secure` cookies
//! over plain HTTP). Its `public_url` is `https://localhost`, the origin the
//! browser uses; the browser connects that origin to the listener's
//! ephemeral port (as `curl --connect-to` would, or a port mapping in front
//! of a deployment), so the provider's registered redirect URI is known
//! before anything starts. The upstream echoes the headers it receives.

use crate::common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use common::oidc_provider::{CLIENT_ID, CLIENT_SECRET, Provider, ProviderSettings};
use http::header::{CACHE_CONTROL, COOKIE, LOCATION, SET_COOKIE, WWW_AUTHENTICATE};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use openidconnect::url::Url;
use portcullis_policy::session::{LOGIN_COOKIE, SESSION_COOKIE, SessionKey, unix};

const COOKIE_SECRET: &str = "test-cookie-secret-of-more-than-32-bytes";

/// The gateway's public origin, as the browser and the provider know it.
const PUBLIC_URL: &str = "https://localhost";
const PUBLIC_HOST: &str = "localhost";

/// What a browser sends on a navigation.
const HTML: &str = "text/html,application/xhtml+xml,*/*;q=0.8";
/// What an API client sends.
const JSON: &str = "application/json";

fn url(path: &str) -> String {
    format!("{PUBLIC_URL}{path}")
}

/// A cookie in the browser's jar.
#[derive(Debug, Clone)]
struct StoredCookie {
    host: String,
    name: String,
    value: String,
    secure: bool,
}

type Connect = tower::util::BoxCloneSyncService<http::Uri, TokioIo<tokio::net::TcpStream>, std::io::Error>;

/// A minimal browser: cookies per host (not port, as browsers do) with
/// `Secure` and the `__Host-` prefix rules honoured, redirects followed,
/// forms submitted. It reaches `https://localhost` at the gateway's
/// listener, which presents the certificate the browser trusts.
struct Browser {
    client: Client<HttpsConnector<Connect>, Full<Bytes>>,
    jar: Vec<StoredCookie>,
    /// Every `Set-Cookie` the browser was sent, as sent.
    set_cookies: Vec<String>,
}

struct Page {
    url: Url,
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Page {
    /// The upstream's echo of the request it received.
    fn echo(&self) -> Echo {
        assert_eq!(self.status, StatusCode::OK, "{}: {}", self.url, self.body);
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not an echo ({e}): {}", self.body))
    }

    /// Asserts a gateway refusal: status and the exact JSON body.
    fn assert_denied(&self, status: StatusCode, reason: &str) {
        assert_eq!(self.status, status, "{}: {}", self.url, self.body);
        let id = self.headers["x-request-id"].to_str().unwrap();
        let body: serde_json::Value = serde_json::from_str(&self.body).unwrap();
        assert_eq!(body, serde_json::json!({"error": reason, "request_id": id}));
    }

    /// The session `Set-Cookie` of this answer, if any.
    fn session_set_cookie(&self) -> Option<String> {
        self.headers
            .get_all(SET_COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .find(|c| c.starts_with(&format!("{SESSION_COOKIE}=")))
    }
}

/// What the echo upstream saw.
#[derive(Debug, serde::Deserialize)]
struct Echo {
    path: String,
    headers: HashMap<String, Vec<String>>,
}

impl Echo {
    fn one(&self, name: &str) -> &str {
        match self.headers.get(name).map(Vec::as_slice) {
            Some([value]) => value,
            other => panic!("{name}: expected one value, got {other:?}"),
        }
    }
}

impl Browser {
    fn new(gateway: SocketAddr, cert: &std::path::Path) -> Self {
        let mut roots = rustls::RootCertStore::empty();
        for der in rustls::pki_types::pem::PemObject::pem_file_iter(cert).unwrap() {
            roots.add(der.unwrap()).unwrap();
        }
        let tls = rustls::ClientConfig::builder_with_provider(portcullis::tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        // The public origin goes to the gateway; anything else (the provider)
        // must be a loopback address. Nothing leaves the machine.
        let connect = tower::service_fn(move |uri: http::Uri| async move {
            let host = uri.host().unwrap_or_default();
            let addr = if host == PUBLIC_HOST && uri.port_u16().is_none_or(|p| p == 443) {
                gateway
            } else {
                let addr: SocketAddr =
                    uri.authority().map(|a| a.as_str()).unwrap_or_default().parse().map_err(|_| {
                        std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("not a loopback address: {uri}"))
                    })?;
                assert!(addr.ip().is_loopback(), "{uri}");
                addr
            };
            tokio::net::TcpStream::connect(addr).await.map(TokioIo::new)
        });
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(Connect::new(connect));
        Self {
            client: Client::builder(TokioExecutor::new()).build(connector),
            jar: Vec::new(),
            set_cookies: Vec::new(),
        }
    }

    fn cookie(&self, host: &str, name: &str) -> Option<String> {
        self.jar.iter().find(|c| c.host == host && c.name == name).map(|c| c.value.clone())
    }

    fn set_cookie(&mut self, host: &str, name: &str, value: &str, secure: bool) {
        self.jar.retain(|c| !(c.host == host && c.name == name));
        self.jar.push(StoredCookie { host: host.into(), name: name.into(), value: value.into(), secure });
    }

    /// Stores a `Set-Cookie` received from `url` as a browser would.
    fn store(&mut self, url: &Url, header: &str) {
        let mut parts = header.split(';').map(str::trim);
        let (name, value) = parts.next().unwrap().split_once('=').unwrap();
        let attributes: Vec<(String, String)> = parts
            .map(|a| {
                a.split_once('=')
                    .map_or((a.to_ascii_lowercase(), String::new()), |(k, v)| (k.to_ascii_lowercase(), v.into()))
            })
            .collect();
        let has = |key: &str| attributes.iter().any(|(k, _)| k == key);
        let get = |key: &str| attributes.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
        let https = url.scheme() == "https";
        let secure = has("secure");
        if secure && !https {
            return; // a Secure cookie from an insecure origin is ignored
        }
        if name.starts_with("__Host-") && !(secure && get("path") == Some("/") && !has("domain")) {
            return; // the __Host- prefix rules
        }
        let host = url.host_str().unwrap();
        self.jar.retain(|c| !(c.host == host && c.name == name));
        let expired = get("max-age").is_some_and(|age| age.parse::<i64>().unwrap() <= 0);
        if !expired {
            self.jar.push(StoredCookie { host: host.into(), name: name.into(), value: value.into(), secure });
        }
    }

    /// One request, no redirect following.
    async fn send(
        &mut self,
        method: Method,
        url: &Url,
        headers: &[(&str, &str)],
        form: Option<&[(&str, &str)]>,
    ) -> Page {
        let mut request = Request::builder().method(method).uri(url.as_str());
        let https = url.scheme() == "https";
        let cookies: Vec<String> = self
            .jar
            .iter()
            .filter(|c| Some(c.host.as_str()) == url.host_str() && (https || !c.secure))
            .map(|c| format!("{}={}", c.name, c.value))
            .collect();
        if !cookies.is_empty() {
            request = request.header(COOKIE, cookies.join("; "));
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
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
            self.store(url, &text);
            self.set_cookies.push(text);
        }
        Page { url: url.clone(), status: parts.status, headers: parts.headers, body }
    }

    /// A GET as an API client or a page's script would send it.
    async fn get(&mut self, path: &str, headers: &[(&str, &str)]) -> Page {
        let mut all = vec![("accept", JSON)];
        all.extend_from_slice(headers);
        self.send(Method::GET, &Url::parse(&url(path)).unwrap(), &all, None).await
    }

    /// A navigation, then redirects followed to the first non-redirect answer.
    async fn follow(&mut self, method: Method, url: &str, form: Option<&[(&str, &str)]>) -> (Page, Vec<Url>) {
        let mut url = Url::parse(url).unwrap();
        let mut page = self.send(method, &url, &[("accept", HTML)], form).await;
        let mut visited = vec![url.clone()];
        for _ in 0..20 {
            if !page.status.is_redirection() {
                return (page, visited);
            }
            url = url.join(page.headers[LOCATION].to_str().unwrap()).unwrap();
            visited.push(url.clone());
            page = self.send(Method::GET, &url, &[("accept", HTML)], None).await;
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

/// An upstream answering with the path and headers it received, as JSON.
async fn echo_upstream() -> (SocketAddr, Arc<Mutex<usize>>) {
    let calls = Arc::new(Mutex::new(0));
    let count = calls.clone();
    let addr = common::upstream(move |req: Request<Incoming>| {
        let count = count.clone();
        async move {
            *count.lock().unwrap() += 1;
            let mut headers: HashMap<String, Vec<String>> = HashMap::new();
            for (name, value) in req.headers() {
                headers.entry(name.to_string()).or_default().push(value.to_str().unwrap_or("<binary>").to_owned());
            }
            let path = req.uri().path_and_query().map(ToString::to_string).unwrap_or_default();
            let body = serde_json::json!({ "path": path, "headers": headers }).to_string();
            let mut response = Response::new(portcullis_layers::full(body));
            response.headers_mut().insert("content-type", http::HeaderValue::from_static("application/json"));
            response
        }
    })
    .await;
    (addr, calls)
}

/// The provider, the gateway in front of the echo upstream, and a browser
/// trusting the gateway's certificate.
struct Setup {
    provider: Provider,
    gateway: common::Gateway,
    upstream_calls: Arc<Mutex<usize>>,
}

impl Setup {
    async fn start() -> Self {
        let provider = Provider::start(&ProviderSettings {
            redirect_uris: &[&url("/.portcullis/callback")],
            post_logout_redirect_uris: &[&url("/bye")],
            access_token_ttl: 300,
        });
        let (upstream, upstream_calls) = echo_upstream().await;
        let toml = format!(
            r#"
[[listener]]
name = "web"
bind = "127.0.0.1:0"
tls = "self-signed"

[[upstream]]
name = "app"
targets = ["http://{upstream}"]

[[route]]
match = {{ path = "/app/**" }}
upstream = "app"
auth = "session"

[auth.oidc]
issuer = "{issuer}"
client_id = "{CLIENT_ID}"
client_secret = "{CLIENT_SECRET}"
public_url = "{PUBLIC_URL}"
post_logout_redirect = "{bye}"

[auth.session]
cookie_secret = "{COOKIE_SECRET}"
lifetime = "1h"
"#,
            issuer = provider.issuer,
            bye = url("/bye"),
        );
        let (config, dir) = common::config(&toml);
        let events = Arc::new(common::Events::default());
        let server = portcullis::server::Server::start(config, events.clone())
            .await
            .unwrap_or_else(|e| panic!("gateway start: {e}; provider: {:?}", provider.stderr()));
        let addr = server.addrs()[0].1;
        Self { provider, gateway: common::Gateway { server, addr, events, dir }, upstream_calls }
    }

    fn browser(&self) -> Browser {
        Browser::new(self.gateway.addr, &self.gateway.dir.path().join("data/tls/self-signed.pem"))
    }

    fn upstream_calls(&self) -> usize {
        *self.upstream_calls.lock().unwrap()
    }

    /// The security event with `reason`, waited for.
    async fn event(&self, reason: &str) -> portcullis_policy::SecurityEvent {
        let events = &self.gateway.events;
        common::eventually(reason, Duration::from_secs(5), || events.reasons().contains(&reason)).await;
        events.0.lock().unwrap().iter().rev().find(|e| e.reason == reason).cloned().unwrap()
    }
}

/// A browser asks for `/app/page?tab=1`, is sent through the provider's
/// login and consent forms as `user`, and lands back on the page. Returns
/// the landing page.
async fn browser_login(setup: &Setup, browser: &mut Browser, user: &str) -> Page {
    let (page, visited) = browser.follow(Method::GET, &url("/app/page?tab=1"), None).await;
    assert_eq!(page.status, StatusCode::OK, "{visited:?}\n{}", page.body);
    assert_eq!(visited[1].as_str(), url("/.portcullis/login?rd=%2Fapp%2Fpage%3Ftab%3D1"), "sent to login: {visited:?}");
    assert!(visited[2].as_str().starts_with(&setup.provider.issuer), "then to the provider: {visited:?}");
    let auth: HashMap<_, _> = visited[2].query_pairs().into_owned().collect();
    assert_eq!(auth["code_challenge_method"], "S256");
    assert_eq!(auth["redirect_uri"], url("/.portcullis/callback"));
    assert!(auth.contains_key("code_challenge") && auth.contains_key("state") && auth.contains_key("nonce"));
    assert!(browser.cookie(PUBLIC_HOST, LOGIN_COOKIE).is_some(), "a login in progress");
    assert!(page.body.contains("name=\"login\""), "the provider's login form: {}", page.body);

    let (mut page, mut visited) =
        browser.submit(&page, &[("prompt", "login"), ("login", user), ("password", "any")]).await;
    if page.body.contains("value=\"consent\"") {
        (page, visited) = browser.submit(&page, &[("prompt", "consent")]).await;
    }
    assert_eq!(page.status, StatusCode::OK, "{visited:?}\n{}", page.body);
    assert!(visited.iter().any(|u| u.as_str().starts_with(&url("/.portcullis/callback?"))), "{visited:?}");
    assert_eq!(visited.last().unwrap().as_str(), url("/app/page?tab=1"), "back where it was going: {visited:?}");
    assert!(browser.cookie(PUBLIC_HOST, LOGIN_COOKIE).is_none(), "the login cookie is cleared");
    assert!(browser.cookie(PUBLIC_HOST, SESSION_COOKIE).is_some(), "a session cookie");
    page
}

fn session_key() -> SessionKey {
    SessionKey::new(COOKIE_SECRET.as_bytes()).unwrap()
}

#[tokio::test]
async fn gateway_browser_login_lands_on_the_protected_route() {
    let setup = Setup::start().await;
    let mut browser = setup.browser();
    // A cookie of the application's own, which the upstream must still get.
    browser.set_cookie(PUBLIC_HOST, "theme", "dark", false);

    // The first navigation is answered by the gateway, not the upstream.
    let first =
        browser.send(Method::GET, &Url::parse(&url("/app/page?tab=1")).unwrap(), &[("accept", HTML)], None).await;
    assert_eq!(first.status, StatusCode::FOUND);
    assert_eq!(first.headers[CACHE_CONTROL], "no-store");
    assert_eq!(setup.upstream_calls(), 0);

    let page = browser_login(&setup, &mut browser, "alice").await;
    let echo = page.echo();
    assert_eq!(echo.path, "/app/page?tab=1");
    assert_eq!(echo.one("x-portcullis-subject"), "alice");
    assert_eq!(echo.one("x-portcullis-auth"), "session");
    assert_eq!(echo.one("x-portcullis-issuer"), "portcullis");
    assert!(echo.one("x-portcullis-roles").split(',').any(|r| r == "editor"), "{echo:?}");
    assert!(echo.one("x-portcullis-scopes").split(' ').any(|s| s == "openid"), "{echo:?}");
    assert_eq!(echo.one("cookie"), "theme=dark", "the session cookie stays at the gateway, the others pass");
    assert!(page.session_set_cookie().is_none(), "no refresh while the access token is fresh");

    // The session cookie as set at the callback.
    let attributes = browser.set_cookies.iter().find(|c| c.starts_with("__Host-portcullis=")).unwrap();
    for attribute in ["Path=/", "Secure", "HttpOnly", "SameSite=Lax"] {
        assert!(attributes.contains(attribute), "{attributes}");
    }
    assert!(!attributes.contains("Domain"), "{attributes}");
    let cookie = browser.cookie(PUBLIC_HOST, SESSION_COOKIE).unwrap();
    let data = session_key().open(&cookie, SystemTime::now()).unwrap();
    assert_eq!((data.subject.as_str(), data.roles.as_slice()), ("alice", &["editor".to_owned()][..]));
    assert!(data.refresh_token.is_some(), "the provider issued a refresh token");

    // Identity headers a client makes up are replaced by the gateway's.
    let page = browser
        .get(
            "/app/other",
            &[("x-portcullis-subject", "admin"), ("x-portcullis-roles", "admin"), ("X-Portcullis-Auth", "jwt")],
        )
        .await;
    let echo = page.echo();
    assert_eq!(echo.one("x-portcullis-subject"), "alice");
    assert_eq!(echo.one("x-portcullis-roles"), "editor");
    assert_eq!(echo.one("x-portcullis-auth"), "session");
    assert_eq!(setup.upstream_calls(), 2);
    assert!(setup.gateway.events.reasons().is_empty(), "{:?}", setup.gateway.events.reasons());

    // The same browser over plain HTTP would not send the cookie at all.
    assert!(browser.jar.iter().any(|c| c.name == SESSION_COOKIE && c.secure));
}

#[tokio::test]
async fn gateway_request_without_session_is_401_unless_a_browser_navigates() {
    let setup = Setup::start().await;
    let mut browser = setup.browser();

    let page = browser.get("/app/data", &[]).await;
    page.assert_denied(StatusCode::UNAUTHORIZED, "auth.missing");
    let challenge = page.headers.get(WWW_AUTHENTICATE).expect("a 401 names how to authenticate");
    assert!(challenge.to_str().unwrap().contains("/.portcullis/login"), "{challenge:?}");
    let event = setup.event("auth.missing").await;
    assert_eq!((event.path.as_str(), event.status, event.route.is_some()), ("/app/data", 401, true));

    // Only a GET or HEAD navigation is sent to login: a form post is refused.
    let post =
        browser.send(Method::POST, &Url::parse(&url("/app/data")).unwrap(), &[("accept", HTML)], Some(&[])).await;
    post.assert_denied(StatusCode::UNAUTHORIZED, "auth.missing");
    assert_eq!(setup.upstream_calls(), 0);
}

#[tokio::test]
async fn gateway_refreshes_a_session_whose_access_token_expired() {
    let setup = Setup::start().await;
    let mut browser = setup.browser();
    browser_login(&setup, &mut browser, "carol").await;
    let key = session_key();
    let cookie = browser.cookie(PUBLIC_HOST, SESSION_COOKIE).unwrap();
    let data = key.open(&cookie, SystemTime::now()).unwrap();

    // The provider's access token has expired (rewritten in the sealed
    // cookie rather than waited for): the next request refreshes it with the
    // provider's refresh token.
    let mut due = data.clone();
    due.access_expires_at = Some(unix(SystemTime::now()) - 1);
    browser.set_cookie(PUBLIC_HOST, SESSION_COOKIE, &key.seal(&due, SystemTime::now()).unwrap(), true);
    let page = browser.get("/app/page", &[]).await;
    let echo = page.echo();
    assert_eq!(echo.one("x-portcullis-subject"), "carol");
    assert_eq!(echo.one("x-portcullis-roles"), "editor");
    assert!(!echo.headers.contains_key("cookie"), "{echo:?}");

    let set_cookie = page.session_set_cookie().expect("a refreshed session cookie");
    for attribute in ["Path=/", "Secure", "HttpOnly", "SameSite=Lax"] {
        assert!(set_cookie.contains(attribute), "{set_cookie}");
    }
    let refreshed = browser.cookie(PUBLIC_HOST, SESSION_COOKIE).unwrap();
    let new_data = key.open(&refreshed, SystemTime::now()).unwrap();
    assert_eq!((new_data.id.as_str(), new_data.subject.as_str()), (data.id.as_str(), "carol"));
    assert_eq!(new_data.expires_at, data.expires_at, "refresh does not extend the session");
    assert!(new_data.access_expires_at.unwrap() > unix(SystemTime::now()) + 60, "a new access token from the provider");

    // The refreshed cookie is good as it is.
    let page = browser.get("/app/page", &[]).await;
    assert_eq!(page.echo().one("x-portcullis-subject"), "carol");
    assert!(page.session_set_cookie().is_none());
    assert!(setup.gateway.events.reasons().is_empty(), "{:?}", setup.gateway.events.reasons());

    // A refresh the provider refuses ends the session.
    let calls = setup.upstream_calls();
    let mut refused = due.clone();
    refused.refresh_token = Some("a-refresh-token-the-provider-never-issued".into());
    browser.set_cookie(PUBLIC_HOST, SESSION_COOKIE, &key.seal(&refused, SystemTime::now()).unwrap(), true);
    let page = browser.get("/app/page", &[]).await;
    page.assert_denied(StatusCode::UNAUTHORIZED, "session.expired");
    assert!(browser.cookie(PUBLIC_HOST, SESSION_COOKIE).is_none(), "the dead cookie is cleared");
    let event = setup.event("session.expired").await;
    let detail = event.detail.clone().unwrap();
    assert!(detail.contains("refused by the provider"), "{detail}");
    assert!(!event.to_json_line().contains("never-issued"), "the refresh token stays out of the event");
    assert_eq!(setup.upstream_calls(), calls);

    // A provider outage is not a logout: 502 oidc.provider, the cookie stays,
    // and the refresh is tried again on the next request.
    let mut setup = setup;
    setup.provider.stop();
    let mut outage = due.clone();
    outage.refresh_token = Some("a-refresh-token-nobody-can-check-now".into());
    let sealed = key.seal(&outage, SystemTime::now()).unwrap();
    for _ in 0..2 {
        browser.set_cookie(PUBLIC_HOST, SESSION_COOKIE, &sealed, true);
        let page = browser.get("/app/page", &[]).await;
        page.assert_denied(StatusCode::BAD_GATEWAY, "oidc.provider");
        assert!(page.session_set_cookie().is_none(), "the session is kept");
    }
    let outages = setup.gateway.events.0.lock().unwrap().iter().filter(|e| e.reason == "oidc.provider").count();
    assert_eq!(outages, 2, "each request tried again (no cached failure)");
}

#[tokio::test]
async fn gateway_logout_clears_and_revokes_the_session() {
    let setup = Setup::start().await;
    let mut browser = setup.browser();
    browser_login(&setup, &mut browser, "dave").await;
    let cookie = browser.cookie(PUBLIC_HOST, SESSION_COOKIE).unwrap();

    // GET changes nothing: it only offers the button.
    let (page, _) = browser.follow(Method::GET, &url("/.portcullis/logout"), None).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("method=\"post\""), "{}", page.body);
    assert_eq!(browser.get("/app/page", &[]).await.echo().one("x-portcullis-subject"), "dave");

    // Another site auto-posting the logout form changes nothing (logout CSRF).
    let logout = Url::parse(&url("/.portcullis/logout")).unwrap();
    for forged in
        [[("accept", HTML), ("sec-fetch-site", "cross-site")], [("accept", HTML), ("origin", "https://evil.example")]]
    {
        let page = browser.send(Method::POST, &logout, &forged, Some(&[])).await;
        assert!(page.status.is_redirection() && page.headers[LOCATION] == "/", "{:?}", page.headers);
        assert!(page.session_set_cookie().is_none());
        assert_eq!(browser.get("/app/page", &[]).await.echo().one("x-portcullis-subject"), "dave");
    }

    // POST: cookie cleared, session revoked, browser sent to the provider's
    // end_session_endpoint (RP-initiated logout).
    let page = browser.send(Method::POST, &logout, &[("accept", HTML)], Some(&[])).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    let location = Url::parse(page.headers[LOCATION].to_str().unwrap()).unwrap();
    assert!(location.as_str().starts_with(&setup.provider.issuer), "{location}");
    let query: HashMap<_, _> = location.query_pairs().into_owned().collect();
    assert_eq!(query["client_id"], CLIENT_ID);
    assert_eq!(query["post_logout_redirect_uri"], url("/bye"));
    let cleared = page.session_set_cookie().expect("a clearing cookie");
    assert!(cleared.starts_with("__Host-portcullis=;") && cleared.contains("Max-Age=0"), "{cleared}");
    assert!(browser.cookie(PUBLIC_HOST, SESSION_COOKIE).is_none());
    // The provider accepts the logout request (its confirmation page).
    let (page, _) = browser.follow(Method::GET, location.as_str(), None).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);

    // Without a cookie the browser is sent to login again.
    let (page, visited) = browser.follow(Method::GET, &url("/app/page"), None).await;
    assert!(visited[1].as_str().starts_with(&url("/.portcullis/login?")), "{visited:?}");
    assert_eq!(page.status, StatusCode::OK);

    // The old cookie, replayed, is refused.
    let calls = setup.upstream_calls();
    browser.set_cookie(PUBLIC_HOST, SESSION_COOKIE, &cookie, true);
    let page = browser.get("/app/page", &[]).await;
    page.assert_denied(StatusCode::UNAUTHORIZED, "session.revoked");
    let event = setup.event("session.revoked").await;
    assert_eq!((event.path.as_str(), event.status), ("/app/page", 401));
    assert_eq!(setup.upstream_calls(), calls);
    // The refusal clears the dead cookie, so the browser is not stuck with
    // it: its next navigation goes to login.
    let cleared = page.session_set_cookie().expect("a clearing cookie");
    assert!(cleared.starts_with("__Host-portcullis=;") && cleared.contains("Max-Age=0"), "{cleared}");
    assert!(browser.cookie(PUBLIC_HOST, SESSION_COOKIE).is_none());
    let (_, visited) = browser.follow(Method::GET, &url("/app/page"), None).await;
    assert!(visited[1].as_str().starts_with(&url("/.portcullis/login?")), "{visited:?}");

    // A browser navigation with the dead cookie goes straight to login (no
    // JSON error page), the cookie is cleared, and the refusal is an event
    // with the status really sent.
    let calls = setup.upstream_calls();
    browser.set_cookie(PUBLIC_HOST, SESSION_COOKIE, &cookie, true);
    let page = browser.send(Method::GET, &Url::parse(&url("/app/other")).unwrap(), &[("accept", HTML)], None).await;
    assert_eq!(page.status, StatusCode::FOUND, "{}", page.body);
    assert!(page.headers["location"].to_str().unwrap().starts_with("/.portcullis/login?"), "{:?}", page.headers);
    assert!(page.session_set_cookie().is_some_and(|c| c.contains("Max-Age=0")));
    common::eventually("redirect event", Duration::from_secs(5), || {
        setup
            .gateway
            .events
            .0
            .lock()
            .unwrap()
            .iter()
            .any(|e| e.reason == "session.revoked" && e.status == 302 && e.path == "/app/other")
    })
    .await;
    assert_eq!(setup.upstream_calls(), calls);
}

#[tokio::test]
async fn gateway_refuses_tampered_or_foreign_session_cookies() {
    let setup = Setup::start().await;
    let mut browser = setup.browser();
    browser_login(&setup, &mut browser, "bob").await;
    let cookie = browser.cookie(PUBLIC_HOST, SESSION_COOKIE).unwrap();
    let calls = setup.upstream_calls();

    let mut tampered = cookie.clone().into_bytes();
    let middle = tampered.len() / 2;
    tampered[middle] = if tampered[middle] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    let mut data = session_key().open(&cookie, SystemTime::now()).unwrap();
    data.roles = vec!["admin".into()];
    let other_key = SessionKey::new(b"a different secret, also 32 bytes long").unwrap();
    let forged = other_key.seal(&data, SystemTime::now()).unwrap();

    for (name, value) in [("tampered", tampered.as_str()), ("forged", forged.as_str()), ("garbage", "not-a-cookie")] {
        browser.set_cookie(PUBLIC_HOST, SESSION_COOKIE, value, true);
        let page = browser.get("/app/page", &[]).await;
        page.assert_denied(StatusCode::UNAUTHORIZED, "session.invalid");
        let event = setup.gateway.events.last().unwrap();
        assert_eq!(event.reason, "session.invalid", "{name}");
        let line = event.to_json_line();
        assert!(!line.contains(value), "{name}: the event does not carry the cookie: {line}");
        assert!(page.session_set_cookie().is_some_and(|c| c.contains("Max-Age=0")), "{name}: the cookie is cleared");
        assert!(browser.cookie(PUBLIC_HOST, SESSION_COOKIE).is_none(), "{name}");
    }
    assert_eq!(setup.gateway.events.reasons(), ["session.invalid"; 3]);
    assert_eq!(setup.upstream_calls(), calls, "nothing reached the upstream");
}

#[tokio::test]
async fn gateway_refuses_callbacks_with_a_wrong_state_or_code() {
    let setup = Setup::start().await;
    let mut browser = setup.browser();
    let callback = |query: &str| Url::parse(&url(&format!("/.portcullis/callback?{query}"))).unwrap();
    let page = browser.send(Method::GET, &Url::parse(&url("/.portcullis/login?rd=/app")).unwrap(), &[], None).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert!(browser.cookie(PUBLIC_HOST, LOGIN_COOKIE).is_some());

    let page = browser.send(Method::GET, &callback("code=abc&state=forged"), &[], None).await;
    page.assert_denied(StatusCode::BAD_REQUEST, "oidc.state");
    assert!(browser.cookie(PUBLIC_HOST, LOGIN_COOKIE).is_none(), "a failed callback ends the login");
    setup.event("oidc.state").await;

    // No login in progress at all (a forged or replayed callback).
    let page = setup.browser().send(Method::GET, &callback("code=abc&state=x"), &[], None).await;
    page.assert_denied(StatusCode::BAD_REQUEST, "oidc.state");

    // The right state with a code the provider never issued: the exchange fails.
    let page = browser.send(Method::GET, &Url::parse(&url("/.portcullis/login?rd=/app")).unwrap(), &[], None).await;
    let to_provider = Url::parse(page.headers[LOCATION].to_str().unwrap()).unwrap();
    let state = to_provider.query_pairs().find(|(k, _)| k == "state").unwrap().1.into_owned();
    let page = browser.send(Method::GET, &callback(&format!("code=not-a-code&state={state}")), &[], None).await;
    page.assert_denied(StatusCode::BAD_REQUEST, "oidc.callback");
    let event = setup.event("oidc.callback").await;
    assert!(event.detail.unwrap().contains("refused by the provider"));
    assert!(browser.cookie(PUBLIC_HOST, SESSION_COOKIE).is_none());
    assert_eq!(setup.upstream_calls(), 0);
}
