//! The dashboard at `/` on the admin listener: a sign-in page that takes the
//! admin token, and one page that shows the gateway live (events as they
//! happen, requests and denials over the last hour, the clients denied most,
//! bans with a button to lift each, upstream health, recent audit entries).
//!
//! Defends the admin token and the controls it opens:
//! - The token is posted once, in a form, and never stored in the browser:
//!   the answer is an opaque session id in an `HttpOnly`, `SameSite=Strict`
//!   cookie (`Secure` when the admin listener is TLS). Only the id's SHA-256
//!   is kept, in memory, for [`SESSION_TTL`]; at most [`MAX_SESSIONS`] live
//!   (the oldest goes first); a restart signs everyone out.
//! - Sign-in is CSRF-protected by a double-submitted form token (a cookie
//!   and a hidden field that must match) and by `Sec-Fetch-Site`: a form
//!   posted from another site is refused (403 `admin.csrf`). A wrong token
//!   is 401 `admin.unauthorized`, as for the API.
//! - Every change the page makes (lift a ban, reload, sign out) sends the
//!   session's CSRF token in `X-CSRF-Token` (the middleware in
//!   [`super`] checks it); the page reads it from a `<meta>` tag.
//! - Plain HTML, CSS and JS bundled into the binary, served under the admin
//!   listener's CSP (`script-src 'self'`, no inline script or style).

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use portcullis_policy::{Denied, Reason};

use super::{AdminState, error, is_token, peer, refuse};

/// How long a dashboard session lasts.
pub const SESSION_TTL: Duration = Duration::from_secs(8 * 3600);
/// Most sessions kept.
pub const MAX_SESSIONS: usize = 64;
/// The session cookie.
pub const SESSION_COOKIE: &str = "portcullis-admin";
/// The sign-in form's double-submit cookie.
pub const LOGIN_COOKIE: &str = "portcullis-admin-login";

const CSS: &str = include_str!("assets/dashboard.css");
const JS: &str = include_str!("assets/dashboard.js");

#[derive(Debug, Clone)]
struct Session {
    csrf: String,
    expires: Instant,
}

/// A signed-in browser, as the middleware sees it.
#[derive(Debug, Clone)]
pub struct SessionView {
    csrf: String,
}

impl SessionView {
    /// Whether `presented` is this session's CSRF token (constant time).
    #[must_use]
    pub fn csrf_matches(&self, presented: &str) -> bool {
        !presented.is_empty()
            && aws_lc_rs::constant_time::verify_slices_are_equal(presented.as_bytes(), self.csrf.as_bytes()).is_ok()
    }
}

/// The dashboard's sessions, by the SHA-256 of their id.
#[derive(Debug, Default)]
pub struct Sessions {
    live: Mutex<HashMap<String, Session>>,
}

fn random_token() -> Option<String> {
    let mut bytes = [0u8; 32];
    aws_lc_rs::rand::fill(&mut bytes).ok()?;
    Some(crate::store::hex(&bytes))
}

fn digest(id: &str) -> String {
    crate::store::hex(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, id.as_bytes()).as_ref())
}

/// The value of cookie `name` in the request's `Cookie` headers.
fn cookie<'a>(headers: &'a HeaderMap, name: &'a str) -> Option<&'a str> {
    portcullis_policy::cookies::get(headers, name)
}

impl Sessions {
    /// Starts a session; returns its id (for the cookie) and CSRF token.
    fn start(&self) -> Option<(String, String)> {
        let (id, csrf) = (random_token()?, random_token()?);
        let mut live = self.live.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        live.retain(|_, s| s.expires > now);
        while live.len() >= MAX_SESSIONS {
            let oldest = live.iter().min_by_key(|(_, s)| s.expires).map(|(k, _)| k.clone());
            match oldest {
                Some(key) => live.remove(&key),
                None => break,
            };
        }
        live.insert(digest(&id), Session { csrf: csrf.clone(), expires: now + SESSION_TTL });
        Some((id, csrf))
    }

    /// The live session the request's cookie names.
    #[must_use]
    pub fn find(&self, headers: &HeaderMap) -> Option<SessionView> {
        let id = cookie(headers, SESSION_COOKIE)?;
        let live = self.live.lock().unwrap_or_else(PoisonError::into_inner);
        live.get(&digest(id)).filter(|s| s.expires > Instant::now()).map(|s| SessionView { csrf: s.csrf.clone() })
    }

    fn end(&self, headers: &HeaderMap) {
        if let Some(id) = cookie(headers, SESSION_COOKIE) {
            self.live.lock().unwrap_or_else(PoisonError::into_inner).remove(&digest(id));
        }
    }
}

fn cookie_header(state: &AdminState, name: &str, value: &str, max_age: u64) -> HeaderValue {
    let secure = if state.tls { "; Secure" } else { "" };
    HeaderValue::from_str(&format!("{name}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}"))
        .unwrap_or_else(|_| HeaderValue::from_static("portcullis-admin=; Max-Age=0"))
}

fn html(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "text/html; charset=utf-8")], body).into_response()
}

/// Escapes text for HTML element content and attribute values.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

fn page(title: &str, head: &str, body: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title}</title><link rel=\"stylesheet\" href=\"/assets/dashboard.css\">{head}</head>\
         <body>{body}</body></html>\n"
    )
}

/// The sign-in page, with a fresh form token in a cookie and a hidden field.
fn sign_in(state: &AdminState, status: StatusCode, message: Option<&str>) -> Response {
    let Some(nonce) = random_token() else {
        return error(StatusCode::SERVICE_UNAVAILABLE, "gateway.random", "the system random generator failed");
    };
    let alert = message
        .map(|m| format!("<p class=\"alert\" role=\"alert\" id=\"sign-in-error\">{}</p>", escape(m)))
        .unwrap_or_default();
    let described = if message.is_some() { " aria-describedby=\"sign-in-error\"" } else { "" };
    let body = format!(
        "<main class=\"sign-in\"><h1>Portcullis</h1><p>Sign in to the dashboard with the admin token \
         (<code>[admin] token</code>).</p>{alert}\
         <form method=\"post\" action=\"/login\">\
         <input type=\"hidden\" name=\"form_token\" value=\"{nonce}\">\
         <label for=\"token\">Admin token</label>\
         <input id=\"token\" name=\"token\" type=\"password\" autocomplete=\"current-password\" required autofocus{described}>\
         <button type=\"submit\">Sign in</button></form></main>"
    );
    let mut response = html(status, page("Sign in · Portcullis", "", &body));
    response.headers_mut().append(header::SET_COOKIE, cookie_header(state, LOGIN_COOKIE, &nonce, 600));
    response
}

/// `GET /`: the dashboard for a signed-in browser, else the sign-in page.
pub async fn index(State(state): State<AdminState>, headers: HeaderMap) -> Response {
    let Some(session) = state.sessions.find(&headers) else {
        return sign_in(&state, StatusCode::OK, None);
    };
    let head = format!(
        "<meta name=\"csrf-token\" content=\"{}\"><script src=\"/assets/dashboard.js\" defer></script>",
        session.csrf
    );
    html(StatusCode::OK, page("Portcullis dashboard", &head, DASHBOARD_BODY))
}

/// The dashboard's markup; `dashboard.js` fills it.
const DASHBOARD_BODY: &str = r#"<header class="top"><h1>Portcullis</h1>
<p id="readiness" class="status" role="status">Checking readiness…</p>
<form id="logout" method="post" action="/logout"><button type="submit">Sign out</button></form></header>
<main>
<section aria-labelledby="traffic-h" class="wide"><h2 id="traffic-h">Last hour</h2>
<div class="charts"><figure><figcaption>Requests per minute</figcaption><svg id="requests-chart" role="img" aria-label="Requests per minute over the last hour" viewBox="0 0 600 160" preserveAspectRatio="none"></svg></figure>
<figure><figcaption>Denials per minute by defence</figcaption><svg id="denials-chart" role="img" aria-label="Denials per minute by defence over the last hour" viewBox="0 0 600 160" preserveAspectRatio="none"></svg><ul id="denials-legend" class="legend"></ul></figure></div></section>
<section aria-labelledby="clients-h"><h2 id="clients-h">Top clients by denials</h2>
<table id="top-clients"><thead><tr><th scope="col">Client</th><th scope="col">Denials</th></tr></thead><tbody></tbody></table></section>
<section aria-labelledby="bans-h"><h2 id="bans-h">Active bans</h2>
<table id="bans"><thead><tr><th scope="col">Target</th><th scope="col">Rule</th><th scope="col">Until</th><th scope="col"><span class="visually-hidden">Action</span></th></tr></thead><tbody></tbody></table>
<p id="bans-status" role="status" class="note"></p></section>
<section aria-labelledby="upstreams-h"><h2 id="upstreams-h">Upstream health</h2>
<table id="upstreams"><thead><tr><th scope="col">Upstream</th><th scope="col">Target</th><th scope="col">State</th></tr></thead><tbody></tbody></table></section>
<section aria-labelledby="audit-h"><h2 id="audit-h">Recent audit entries</h2>
<table id="audit"><thead><tr><th scope="col">Time</th><th scope="col">Actor</th><th scope="col">Action</th><th scope="col">Target</th><th scope="col">Outcome</th></tr></thead><tbody></tbody></table>
<p id="audit-status" class="note"></p></section>
<section aria-labelledby="events-h" class="wide"><h2 id="events-h">Live events</h2>
<form id="event-filter" class="filter"><label for="f-reason">Reason</label><input id="f-reason" name="reason" placeholder="waf or waf.sqli">
<label for="f-client">Client</label><input id="f-client" name="client" placeholder="203.0.113.9">
<label for="f-route">Route</label><input id="f-route" name="route" placeholder="api">
<button type="submit">Filter</button></form>
<p id="stream-status" role="status" class="note">Connecting…</p>
<table id="events"><thead><tr><th scope="col">Time</th><th scope="col">Client</th><th scope="col">Reason</th><th scope="col">Action</th><th scope="col">Status</th><th scope="col">Route</th><th scope="col">Path</th></tr></thead><tbody></tbody></table></section>
</main>"#;

/// A form body's fields (`application/x-www-form-urlencoded`).
fn form_fields(body: &[u8]) -> HashMap<String, String> {
    // A repeated field keeps its first value.
    let mut fields = HashMap::new();
    for (name, value) in form_urlencoded::parse(body) {
        fields.entry(name.into_owned()).or_insert_with(|| value.into_owned());
    }
    fields
}

/// Whether the browser says the request came from another site.
fn cross_site(headers: &HeaderMap) -> bool {
    headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|site| !matches!(site, "same-origin" | "none"))
}

/// `POST /login`: the token from the sign-in form; a session cookie and a
/// redirect to `/` when it is right.
pub async fn login(State(state): State<AdminState>, request: Request) -> Response {
    let peer = peer(&request);
    let method = request.method().clone();
    let headers = request.headers().clone();
    let body = axum::body::to_bytes(request.into_body(), 8 * 1024).await.unwrap_or_default();
    let fields = form_fields(&body);
    let form_token = fields.get("form_token").map_or("", String::as_str);
    let expected = cookie(&headers, LOGIN_COOKIE).unwrap_or("");
    let same_form = !expected.is_empty()
        && aws_lc_rs::constant_time::verify_slices_are_equal(form_token.as_bytes(), expected.as_bytes()).is_ok();
    if cross_site(&headers) || !same_form {
        let detail =
            if cross_site(&headers) { "sign-in posted from another site" } else { "sign-in without its form token" };
        refuse(&state, peer, &method, "/login", &Denied::new(Reason::AdminCsrf).with_detail(detail));
        return sign_in(&state, StatusCode::FORBIDDEN, Some("The form expired or came from another site. Try again."));
    }
    let token = fields.get("token").map_or("", String::as_str);
    if !is_token(&state, token) {
        let detail =
            if token.is_empty() { "dashboard sign-in without a token" } else { "dashboard sign-in with a wrong token" };
        refuse(&state, peer, &method, "/login", &Denied::new(Reason::AdminUnauthorized).with_detail(detail));
        return sign_in(&state, StatusCode::UNAUTHORIZED, Some("That is not the admin token."));
    }
    let Some((id, _csrf)) = state.sessions.start() else {
        return error(StatusCode::SERVICE_UNAVAILABLE, "gateway.random", "the system random generator failed");
    };
    let mut response = (StatusCode::SEE_OTHER, [(header::LOCATION, "/")]).into_response();
    let headers = response.headers_mut();
    headers.append(header::SET_COOKIE, cookie_header(&state, SESSION_COOKIE, &id, SESSION_TTL.as_secs()));
    headers.append(header::SET_COOKIE, cookie_header(&state, LOGIN_COOKIE, "", 0));
    response
}

/// `POST /logout` (the middleware checked the session and its CSRF token,
/// sent by the page's script as a header or by the form as a field).
pub async fn logout(State(state): State<AdminState>, headers: HeaderMap) -> Response {
    state.sessions.end(&headers);
    let mut response = (StatusCode::SEE_OTHER, [(header::LOCATION, "/")]).into_response();
    response.headers_mut().append(header::SET_COOKIE, cookie_header(&state, SESSION_COOKIE, "", 0));
    response
}

/// `GET /assets/{file}`: the dashboard's stylesheet and script.
pub async fn asset(Path(file): Path<String>) -> Response {
    let (body, kind) = match file.as_str() {
        "dashboard.css" => (CSS, "text/css; charset=utf-8"),
        "dashboard.js" => (JS, "text/javascript; charset=utf-8"),
        _ => return error(StatusCode::NOT_FOUND, "admin.not_found", "no such file"),
    };
    ([(header::CONTENT_TYPE, kind), (header::CACHE_CONTROL, "no-cache")], body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_are_found_by_cookie_and_end() {
        let sessions = Sessions::default();
        let (id, csrf) = sessions.start().unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(header::COOKIE, format!("other=1; {SESSION_COOKIE}={id}").parse().unwrap());
        let view = sessions.find(&headers).unwrap();
        assert!(view.csrf_matches(&csrf));
        assert!(!view.csrf_matches(""));
        assert!(!view.csrf_matches(&id));
        sessions.end(&headers);
        assert!(sessions.find(&headers).is_none());
        headers.insert(header::COOKIE, format!("{SESSION_COOKIE}=forged").parse().unwrap());
        assert!(sessions.find(&headers).is_none());
    }

    #[test]
    fn sessions_are_capped() {
        let sessions = Sessions::default();
        for _ in 0..(MAX_SESSIONS + 5) {
            sessions.start().unwrap();
        }
        assert_eq!(sessions.live.lock().unwrap().len(), MAX_SESSIONS);
    }

    #[test]
    fn text_is_escaped() {
        assert_eq!(escape("<a href=\"x\">&'"), "&lt;a href=&quot;x&quot;&gt;&amp;&#39;");
    }
}
