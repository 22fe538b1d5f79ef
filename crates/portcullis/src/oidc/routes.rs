//! The gateway's login endpoints: `/.portcullis/login`, `/.portcullis/callback`
//! and `/.portcullis/logout`.
//!
//! Refusals are answered with `portcullis_layers::deny`: the router runs
//! inside the layer stack, whose reject layer renders the JSON error and
//! emits the security event.
//!
//! `GET /.portcullis/logout` changes nothing: it shows a button posting to
//! the same path, so a cross-site `<img src>` cannot log anyone out. The
//! `POST` is protected from cross-site forgery by the cookie's
//! `SameSite=Lax` (the session cookie is not sent with a cross-site POST, so
//! there is nothing to revoke).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::response::Response;
use axum::routing::get;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, LOCATION, SET_COOKIE};
use http::{HeaderMap, HeaderValue, StatusCode};
use openidconnect::core::CoreAuthenticationFlow;
use openidconnect::url::form_urlencoded;
use openidconnect::{AuthorizationCode, CsrfToken, Nonce, PkceCodeChallenge, PkceCodeVerifier, Scope};
use portcullis_policy::session::{LOGIN_COOKIE, SESSION_COOKIE, random_token};
use portcullis_policy::{Denied, Reason};
use serde::{Deserialize, Serialize};

use super::{OidcLogin, cookie, expiry, session_cookie, token_error};

/// Starts a login: `GET /.portcullis/login?rd=<path>`.
pub const LOGIN_PATH: &str = "/.portcullis/login";
/// The provider's redirect back: `GET /.portcullis/callback`.
pub const CALLBACK_PATH: &str = crate::config::oidc::CALLBACK_PATH;
/// Ends the session: `POST /.portcullis/logout` (`GET` shows a button).
pub const LOGOUT_PATH: &str = "/.portcullis/logout";

/// How long a login may take at the provider.
const LOGIN_TTL: Duration = Duration::from_secs(600);

/// The sealed state of a login in progress.
#[derive(Serialize, Deserialize)]
struct LoginState {
    state: String,
    nonce: String,
    verifier: String,
    rd: String,
}

/// The login routes, with their full paths (`/.portcullis/…`).
pub fn router(login: Arc<OidcLogin>) -> Router {
    Router::new()
        .route(LOGIN_PATH, get(start_login))
        .route(CALLBACK_PATH, get(callback))
        .route(LOGOUT_PATH, get(logout_page).post(logout))
        .with_state(login)
}

/// `rd` if it is a same-site relative path, else `/`: no scheme, no host,
/// no `//` or `/\` (which browsers read as a host), no backslash or control
/// character, not one of the gateway's own endpoints.
#[must_use]
pub fn safe_return_path(rd: &str) -> &str {
    let acceptable = rd.starts_with('/')
        && !rd.starts_with("//")
        && !rd.starts_with("/.portcullis/")
        && rd.len() <= 2048
        && !rd.chars().any(|c| c == '\\' || c.is_control() || c.is_whitespace());
    if acceptable { rd } else { "/" }
}

fn query(raw: Option<&str>, name: &str) -> Option<String> {
    form_urlencoded::parse(raw.unwrap_or_default().as_bytes()).find(|(k, _)| k == name).map(|(_, v)| v.into_owned())
}

/// The first cookie called `name` in the request.
fn request_cookie<'a>(headers: &'a HeaderMap, name: &'a str) -> Option<&'a str> {
    portcullis_policy::cookies::get(headers, name)
}

fn redirect(location: &str) -> Response {
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::SEE_OTHER;
    match HeaderValue::from_str(location) {
        Ok(value) => {
            response.headers_mut().insert(LOCATION, value);
        }
        Err(_) => return denied(Denied::new(Reason::GatewayInternal).with_detail("unencodable redirect")),
    }
    response.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn denied(denied: Denied) -> Response {
    portcullis_layers::deny(denied).map(Body::new)
}

fn internal(detail: impl std::fmt::Display) -> Denied {
    Denied::new(Reason::GatewayInternal).with_detail(detail.to_string())
}

fn clear_login() -> HeaderValue {
    cookie(LOGIN_COOKIE, "", Duration::ZERO)
}

async fn start_login(State(login): State<Arc<OidcLogin>>, RawQuery(raw): RawQuery) -> Response {
    let inner = &login.inner;
    let rd = query(raw.as_deref(), "rd").unwrap_or_default();
    let tokens = (random_token(32), random_token(32), random_token(32));
    let (Ok(state), Ok(nonce), Ok(verifier)) = tokens else { return denied(internal("random source failed")) };
    let challenge = PkceCodeChallenge::from_code_verifier_sha256(&PkceCodeVerifier::new(verifier.clone()));
    let (state_for_url, nonce_for_url) = (state.clone(), nonce.clone());
    let (url, _, _) = inner
        .client
        .authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            move || CsrfToken::new(state_for_url),
            move || Nonce::new(nonce_for_url),
        )
        .add_scopes(inner.scopes.iter().map(|s| Scope::new(s.clone())))
        .set_pkce_challenge(challenge)
        .url();
    let now = SystemTime::now();
    let pending = LoginState { state, nonce, verifier, rd: safe_return_path(&rd).to_owned() };
    let sealed = match inner.key.seal_value(LOGIN_COOKIE, &pending, expiry(now, LOGIN_TTL)) {
        Ok(sealed) => sealed,
        Err(e) => return denied(internal(format!("login cookie: {e}"))),
    };
    let mut response = redirect(url.as_str());
    response.headers_mut().append(SET_COOKIE, cookie(LOGIN_COOKIE, &sealed, LOGIN_TTL));
    response
}

async fn callback(State(login): State<Arc<OidcLogin>>, RawQuery(raw): RawQuery, headers: HeaderMap) -> Response {
    match finish_login(&login, raw.as_deref(), &headers).await {
        Ok(response) => response,
        // The login attempt is over either way.
        Err(denial) => denied(denial.with_header(SET_COOKIE, clear_login())),
    }
}

async fn finish_login(login: &OidcLogin, raw: Option<&str>, headers: &HeaderMap) -> Result<Response, Denied> {
    let inner = &login.inner;
    let now = SystemTime::now();
    let state_denied = |detail: &'static str| Denied::new(Reason::OidcState).with_detail(detail);
    let sealed = request_cookie(headers, LOGIN_COOKIE).ok_or_else(|| state_denied("no login in progress"))?;
    let pending: LoginState =
        inner.key.open_value(LOGIN_COOKIE, sealed, now).map_err(|_| state_denied("login cookie invalid or expired"))?;
    let state = query(raw, "state").ok_or_else(|| state_denied("callback without state"))?;
    if aws_lc_rs::constant_time::verify_slices_are_equal(state.as_bytes(), pending.state.as_bytes()).is_err() {
        return Err(state_denied("state does not match the login in progress"));
    }
    if let Some(error) = query(raw, "error") {
        let error: String = error.chars().filter(char::is_ascii_graphic).take(64).collect();
        return Err(Denied::new(Reason::OidcCallback).with_detail(format!("provider answered error {error}")));
    }
    let code = query(raw, "code").ok_or_else(|| Denied::new(Reason::OidcCallback).with_detail("no code"))?;

    let request = inner.client.exchange_code(AuthorizationCode::new(code)).map_err(internal)?;
    let tokens =
        request.set_pkce_verifier(PkceCodeVerifier::new(pending.verifier)).request_async(&inner.http).await.map_err(
            |e| {
                let reason = if matches!(e, openidconnect::RequestTokenError::ServerResponse(_)) {
                    Reason::OidcCallback
                } else {
                    Reason::OidcProvider
                };
                Denied::new(reason).with_detail(token_error("code exchange", &e))
            },
        )?;
    let id_token = openidconnect::TokenResponse::id_token(&tokens)
        .ok_or_else(|| Denied::new(Reason::OidcProvider).with_detail("token answer without an ID token"))?;
    let session = inner.new_session(&tokens, id_token, &Nonce::new(pending.nonce), now)?;
    let sealed = inner.key.seal(&session, now).map_err(internal)?;
    tracing::info!(
        subject = %session.subject,
        session = %portcullis_policy::principal::fingerprint(session.id.as_bytes()),
        "OIDC login"
    );
    let mut response = redirect(safe_return_path(&pending.rd));
    response.headers_mut().append(SET_COOKIE, session_cookie(&sealed, session.expires(), now));
    response.headers_mut().append(SET_COOKIE, clear_login());
    Ok(response)
}

async fn logout_page() -> Response {
    let html = format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>Sign out</title></head>\n\
         <body><main><h1>Sign out</h1>\
         <form method=\"post\" action=\"{LOGOUT_PATH}\"><button type=\"submit\">Sign out</button></form>\
         </main></body></html>\n"
    );
    let mut response = Response::new(Body::from(html));
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    response.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Whether a request comes from another site (logout CSRF: a page elsewhere
/// auto-posting the logout form). Browsers send `Sec-Fetch-Site`; older ones
/// at least `Origin` on a POST.
fn cross_site(headers: &HeaderMap, public_url: &str) -> bool {
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        return !matches!(site, "same-origin" | "none");
    }
    headers.get(http::header::ORIGIN).and_then(|v| v.to_str().ok()).is_some_and(|origin| origin != public_url)
}

async fn logout(State(login): State<Arc<OidcLogin>>, headers: HeaderMap) -> Response {
    let inner = &login.inner;
    let now = SystemTime::now();
    if cross_site(&headers, &inner.public_url) {
        // Nothing happens: another site cannot log the user out.
        tracing::info!("logout from another site ignored");
        return redirect("/");
    }
    if let Some(value) = request_cookie(&headers, SESSION_COOKIE)
        && let Ok(session) = inner.key.open(value, now)
    {
        let id = portcullis_policy::principal::fingerprint(session.id.as_bytes());
        match inner.revocations.revoke(&session.id, session.expires()).await {
            Ok(()) => tracing::info!(subject = %session.subject, session = %id, "logout"),
            // The cookie is still cleared; the event says the id stays valid.
            Err(e) => tracing::warn!(session = %id, error = %e, "logout: the session could not be revoked"),
        }
    }
    let location = match (&inner.end_session, &inner.post_logout_redirect) {
        (Some(end_session), after) => {
            let mut url = openidconnect::url::Url::parse(end_session).ok();
            if let Some(url) = url.as_mut() {
                let mut pairs = url.query_pairs_mut();
                pairs.append_pair("client_id", &inner.client_id);
                if let Some(after) = after {
                    pairs.append_pair("post_logout_redirect_uri", after);
                }
            }
            url.map_or_else(|| "/".to_owned(), String::from)
        }
        (None, _) => "/".to_owned(),
    };
    let mut response = redirect(&location);
    response.headers_mut().append(SET_COOKIE, session_cookie("", now, now));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn return_paths() {
        let cases = [
            ("/app?x=1#top", "/app?x=1#top"),
            ("/", "/"),
            ("", "/"),
            ("app", "/"),
            ("//evil.example/x", "/"),
            ("/\\evil.example", "/"),
            ("https://evil.example/", "/"),
            ("/ok\r\nSet-Cookie: x", "/"),
            ("/a b", "/"),
            ("/.portcullis/logout", "/"),
            ("javascript:alert(1)", "/"),
        ];
        for (input, expected) in cases {
            assert_eq!(safe_return_path(input), expected, "{input:?}");
        }
    }

    #[test]
    fn cookie_lookup() {
        let mut headers = HeaderMap::new();
        headers.append(http::header::COOKIE, HeaderValue::from_static("a=1; __Host-portcullis=abc"));
        headers.append(http::header::COOKIE, HeaderValue::from_static("__Host-portcullis=second"));
        assert_eq!(request_cookie(&headers, SESSION_COOKIE), Some("abc"));
        assert_eq!(request_cookie(&headers, "a"), Some("1"));
        assert_eq!(request_cookie(&headers, LOGIN_COOKIE), None);
    }
}
