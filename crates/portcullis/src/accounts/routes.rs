//! The account endpoints under `/.portcullis/account/`.
//!
//! | path | methods | answers |
//! |---|---|---|
//! | `/login` | GET, POST | the login page; the password step |
//! | `/login/mfa` | GET | the second-factor page of a login in progress |
//! | `/login/totp` | POST | the second step with a TOTP code |
//! | `/login/recovery` | POST | the second step with a recovery code |
//! | `/token` | POST | a refresh: new access and refresh tokens |
//! | `/logout` | POST | ends this session |
//! | `/logout-all` | POST | ends every session of the account |
//! | `/password` | POST | changes the password, ends the other sessions |
//! | `/register` | GET, POST | the registration page; registration |
//! | `` (and `/`) | GET | the account page (signed in) |
//! | `/totp/enrol` | POST | a new TOTP secret to confirm |
//! | `/totp/confirm` | POST | confirms it with a code; gives recovery codes |
//! | `/recovery-codes` | POST | replaces the recovery codes |
//! | `/passkeys/…` | POST | passkey registration and login: [`super::passkey_routes`] |
//! | `/assets/account.css`, `/assets/account.js`, `/assets/passkeys.js` | GET | the pages' style and scripts |
//!
//! Decision rules:
//! - A `POST` takes a JSON object of strings (`application/json`) or a form
//!   (`application/x-www-form-urlencoded`), at most [`MAX_BODY`] bytes; a
//!   field named twice, a value that is not a string, not UTF-8 once
//!   percent-decoded, or longer than its limit is `account.invalid` (400)
//!   and nothing is stored or counted.
//! - A form is a browser: it gets the cookie and a `303` to the next page,
//!   and on failure a `303` back to the page with an error code in the query
//!   (the refusal is still logged). JSON is an API client: tokens and errors
//!   in JSON; `"session": "cookie"` asks for the cookie instead (the pages'
//!   script).
//! - A `POST` whose `Origin` is not the gateway's own (`public_url`, else
//!   the request's scheme and `Host`), or whose `Sec-Fetch-Site` is neither
//!   `same-origin` nor `none` (browsers that send it are judged by it alone),
//!   is `account.origin` (403): no other site can
//!   log a browser in, out, or change its password.
//! - Who is signed in is read from the account cookie or an access token
//!   (`Authorization: Bearer`), checked exactly as on account routes.

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use axum::routing::{get, post};
use http::header::{CACHE_CONTROL, CONTENT_TYPE, LOCATION, SET_COOKIE};
use http::{HeaderMap, HeaderValue, StatusCode};
use http_body_util::BodyExt;
use portcullis_layers::RequestContext;
use portcullis_layers::refusal::record;
use portcullis_policy::session::unix;
use portcullis_policy::totp::{Checked, TotpSecret};
use portcullis_policy::{Denied, Principal, Reason};
use serde_json::{Map, Value, json};

use super::page;
use super::{
    ACCOUNT_COOKIE, AccountService, Issued, LOGIN_PATH, PENDING_COOKIE, PENDING_TTL, PREFIX, Pending, unavailable,
};
use crate::config::accounts::Registration;
use crate::store::accounts::{Account, AccountError, NewAccount};
use crate::store::sessions::{RevokeReason, Rotation};

/// The largest request body an account endpoint reads.
pub const MAX_BODY: usize = 64 * 1024;
/// Longest login name (an email is at most 254 characters).
const MAX_LOGIN: usize = 254;
/// Longest password accepted as input, in bytes: longer than any password
/// the policy allows (128 characters of up to 4 bytes), short enough that
/// normalizing it costs nothing.
const MAX_PASSWORD_BYTES: usize = 1024;
/// Longest code (TOTP, recovery, invite) or token field.
const MAX_CODE: usize = 128;
const MAX_TOKEN: usize = 4096;
/// The issuer name in authenticator apps.
const TOTP_ISSUER: &str = "Portcullis";

/// The routes, with their full paths.
pub fn router(service: AccountService) -> Router {
    let path = |p: &str| format!("{PREFIX}{p}");
    Router::new()
        .route(LOGIN_PATH, get(login_page).post(login))
        .route(&path("/login/mfa"), get(mfa_page))
        .route(&path("/login/totp"), post(login_totp))
        .route(&path("/login/recovery"), post(login_recovery))
        .route(&path("/token"), post(refresh))
        .route(&path("/logout"), post(logout))
        .route(&path("/logout-all"), post(logout_all))
        .route(&path("/password"), post(change_password))
        .route(&path("/register"), get(register_page).post(register))
        .route(PREFIX, get(home_page))
        .route(&path("/"), get(home_page))
        .route(&path("/totp/enrol"), post(totp_enrol))
        .route(&path("/totp/confirm"), post(totp_confirm))
        .route(&path("/recovery-codes"), post(recovery_codes))
        .route(&path("/assets/account.css"), get(|| async { asset(page::CSS, "text/css; charset=utf-8") }))
        .route(&path("/assets/account.js"), get(|| async { asset(page::JS, "text/javascript; charset=utf-8") }))
        .route(
            &path("/assets/passkeys.js"),
            get(|| async { asset(page::PASSKEYS_JS, "text/javascript; charset=utf-8") }),
        )
        .with_state(service.clone())
        .merge(super::passkey_routes::router(service))
}

fn asset(text: &'static str, content_type: &'static str) -> Response {
    let mut response = Response::new(Body::from(text));
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("public, max-age=300"));
    response
}

/// A parsed request: its fields, whether it came from a form, and facts
/// about the request the handlers need.
pub(super) struct Input {
    fields: Map<String, Value>,
    form: bool,
    pub(super) headers: HeaderMap,
    pub(super) ip: IpAddr,
    query: Option<String>,
}

impl Input {
    /// The string field `name`, at most `max` bytes; `None` when absent or
    /// empty.
    pub(super) fn field(&self, name: &str, max: usize) -> Result<Option<&str>, Denied> {
        match self.fields.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.len() > max => Err(invalid(format!("{name} is longer than {max} bytes"))),
            Some(Value::String(s)) if s.is_empty() => Ok(None),
            // No field has a use for NUL, and PostgreSQL text cannot hold it.
            Some(Value::String(s)) if s.contains('\0') => Err(invalid(format!("{name} contains a NUL character"))),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(invalid(format!("{name} is not a string"))),
        }
    }

    pub(super) fn required(&self, name: &str, max: usize) -> Result<&str, Denied> {
        self.field(name, max)?.ok_or_else(|| invalid(format!("{name} is missing")))
    }

    /// Whether the client wants the browser cookie rather than tokens.
    fn wants_cookie(&self) -> bool {
        self.form || matches!(self.fields.get("session"), Some(Value::String(s)) if s == "cookie")
    }
}

fn invalid(detail: String) -> Denied {
    Denied::new(Reason::AccountInvalid).with_detail(detail)
}

/// The client's address, as the reject layer resolved it.
fn client_ip(req: &Request) -> IpAddr {
    req.extensions().get::<RequestContext>().map_or(IpAddr::from([0, 0, 0, 0]), |c| c.client.ip)
}

/// Reads and checks a `POST`: origin, size, content type, fields.
pub(super) async fn input(service: &AccountService, req: Request) -> Result<Input, Denied> {
    let ip = client_ip(&req);
    let (parts, body) = req.into_parts();
    check_origin(service, &parts)?;
    let declared = parts.headers.get(http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return Err(invalid(format!("body larger than {MAX_BODY} bytes")));
    }
    let bytes = http_body_util::Limited::new(body, MAX_BODY)
        .collect()
        .await
        .map_err(|_| invalid(format!("body larger than {MAX_BODY} bytes, or cut short")))?
        .to_bytes();
    let content_type = parts
        .headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or_default().trim().to_ascii_lowercase());
    let (fields, form) = match content_type.as_deref() {
        Some("application/json") => (json_fields(&bytes)?, false),
        Some("application/x-www-form-urlencoded") => (form_fields(&bytes)?, true),
        // An empty body is allowed where no field is needed (logout).
        _ if bytes.is_empty() => (Map::new(), false),
        _ => return Err(invalid("the body must be application/json or application/x-www-form-urlencoded".into())),
    };
    Ok(Input { fields, form, headers: parts.headers, ip, query: parts.uri.query().map(str::to_owned) })
}

fn json_fields(bytes: &[u8]) -> Result<Map<String, Value>, Denied> {
    // serde_json keeps the last of a repeated key; a repeated key is refused
    // instead, so no two readers can disagree about a field.
    let value: Value = serde_json::from_slice(bytes).map_err(|e| invalid(format!("not JSON: {e}")))?;
    let Value::Object(map) = value else { return Err(invalid("the JSON body must be an object".into())) };
    let mut keys = 0_usize;
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let counted: Result<CountKeys, _> = serde::Deserialize::deserialize(&mut de);
    if let Ok(CountKeys(n)) = counted {
        keys = n;
    }
    if keys != map.len() {
        return Err(invalid("a field is given twice".into()));
    }
    Ok(map)
}

/// Counts the top-level keys of a JSON object (repeats included).
struct CountKeys(usize);

impl<'de> serde::Deserialize<'de> for CountKeys {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = CountKeys;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<CountKeys, A::Error> {
                let mut n = 0;
                while map.next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?.is_some() {
                    n += 1;
                }
                Ok(CountKeys(n))
            }
        }
        deserializer.deserialize_map(Visitor)
    }
}

fn form_fields(bytes: &[u8]) -> Result<Map<String, Value>, Denied> {
    let mut map = Map::new();
    for pair in bytes.split(|b| *b == b'&').filter(|p| !p.is_empty()) {
        let (name, value) = match pair.iter().position(|b| *b == b'=') {
            Some(i) => (&pair[..i], &pair[i + 1..]),
            None => (pair, &[][..]),
        };
        let decode = |raw: &[u8]| {
            let plus: Vec<u8> = raw.iter().map(|b| if *b == b'+' { b' ' } else { *b }).collect();
            let decoded: Vec<u8> = percent_encoding::percent_decode(&plus).collect();
            String::from_utf8(decoded).map_err(|_| invalid("a form field is not UTF-8".into()))
        };
        let (name, value) = (decode(name)?, decode(value)?);
        if map.insert(name.clone(), Value::String(value)).is_some() {
            return Err(invalid(format!("{name} is given twice")));
        }
    }
    Ok(map)
}

/// The origin state-changing requests must come from.
fn check_origin(service: &AccountService, parts: &http::request::Parts) -> Result<(), Denied> {
    let refused = |detail: String| Err(Denied::new(Reason::AccountOrigin).with_detail(detail));
    // Browsers that send Sec-Fetch-Site are judged by it alone: no page can
    // set it, and their Origin may be `null` (a `Referrer-Policy:
    // no-referrer` page's form post).
    if let Some(site) = parts.headers.get("sec-fetch-site") {
        let site = site.to_str().unwrap_or_default();
        return if matches!(site, "same-origin" | "none") {
            Ok(())
        } else {
            refused(format!("Sec-Fetch-Site: {}", site.chars().take(32).collect::<String>()))
        };
    }
    let Some(origin) = parts.headers.get(http::header::ORIGIN) else { return Ok(()) };
    let origin = origin.to_str().unwrap_or_default();
    let own = match &service.settings().public_url {
        Some(url) => url.clone(),
        None => {
            let scheme = parts.extensions.get::<portcullis_layers::ConnInfo>().map_or("https", |c| c.scheme);
            let host = parts.headers.get(http::header::HOST).and_then(|h| h.to_str().ok()).unwrap_or_default();
            format!("{scheme}://{}", host.to_ascii_lowercase())
        }
    };
    if origin.eq_ignore_ascii_case(&own) {
        Ok(())
    } else {
        refused(format!("Origin {} is not {own}", origin.chars().take(64).collect::<String>()))
    }
}

/// A refusal: JSON for API clients (rendered by the reject layer), a `303`
/// back to `page` with `?error=<code>` for forms (the event still logged).
pub(super) fn refuse(input_form: bool, page: &str, denied: Denied) -> Response {
    if !input_form || denied.reason == Reason::AccountOrigin {
        return portcullis_layers::deny(denied).map(Body::new);
    }
    let separator = if page.contains('?') { '&' } else { '?' };
    let mut response = see_other(&format!("{page}{separator}error={}", denied.reason.code()));
    for (name, value) in &denied.headers {
        if name == SET_COOKIE || name == http::header::RETRY_AFTER {
            response.headers_mut().append(name.clone(), value.clone());
        }
    }
    response.extensions_mut().insert(portcullis_layers::refusal::Redirected(denied));
    response
}

fn see_other(location: &str) -> Response {
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::SEE_OTHER;
    if let Ok(value) = HeaderValue::from_str(location) {
        response.headers_mut().insert(LOCATION, value);
    }
    response.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

pub(super) fn json_response(status: StatusCode, body: &Value) -> Response {
    let mut response = Response::new(Body::from(body.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn query_value(query: Option<&str>, name: &str) -> Option<String> {
    form_urlencoded::parse(query.unwrap_or_default().as_bytes()).find(|(k, _)| k == name).map(|(_, v)| v.into_owned())
}

fn cookie_max_age(end: SystemTime, now: SystemTime) -> Duration {
    end.duration_since(now).unwrap_or_default()
}

/// The answer to a completed login: the cookie and a redirect (or JSON
/// saying where to go) for browsers, tokens for API clients; the
/// `account.login` event either way.
pub(super) fn logged_in(
    service: &AccountService,
    input: &Input,
    account: &Account,
    issued: &Issued,
    amr: &[String],
    rd: &str,
) -> Response {
    let now = SystemTime::now();
    let rd = crate::oidc::safe_return_path(rd);
    let mut response = if input.form {
        see_other(rd)
    } else if input.wants_cookie() {
        json_response(StatusCode::OK, &json!({ "redirect": rd }))
    } else {
        json_response(
            StatusCode::OK,
            &json!({
                "access_token": issued.access_token,
                "token_type": "Bearer",
                "expires_in": service.access_ttl(),
                "refresh_token": issued.refresh_token.expose(),
                "session_expires_at": unix(issued.session.expires_at),
            }),
        )
    };
    if input.wants_cookie() {
        let max_age = cookie_max_age(issued.session.expires_at, now);
        response
            .headers_mut()
            .append(SET_COOKIE, AccountService::cookie_header(ACCOUNT_COOKIE, &issued.cookie, max_age));
    }
    response.headers_mut().append(SET_COOKIE, AccountService::cookie_header(PENDING_COOKIE, "", Duration::ZERO));
    record(
        &mut response,
        Denied::new(Reason::AccountLogin).with_detail(format!(
            "account {} ({}), factors: {}, session {}",
            account.id,
            account.username,
            amr.join("+"),
            portcullis_policy::principal::fingerprint(issued.session.id.as_bytes())
        )),
    );
    response
}

async fn login_page(State(service): State<AccountService>, req: Request) -> Response {
    let query = req.uri().query();
    let rd = query_value(query, "rd").unwrap_or_default();
    let error = query_value(query, "error");
    page::login(&service, crate::oidc::safe_return_path(&rd), error.as_deref())
}

async fn login(State(service): State<AccountService>, req: Request) -> Response {
    let mut notes = Vec::new();
    let form = is_form(&req);
    let rd = query_value(req.uri().query(), "rd").unwrap_or_default();
    let back = format!("{LOGIN_PATH}?rd={}", form_urlencoded::byte_serialize(rd.as_bytes()).collect::<String>());
    let mut response = match login_step(&service, req, &mut notes).await {
        Ok(response) => response,
        Err(denied) => refuse(form, &back, denied),
    };
    for note in notes {
        portcullis_layers::refusal::note(&mut response, note);
    }
    response
}

pub(super) fn is_form(req: &Request) -> bool {
    req.headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().starts_with("application/x-www-form-urlencoded"))
}

async fn login_step(service: &AccountService, req: Request, notes: &mut Vec<Denied>) -> Result<Response, Denied> {
    let input = input(service, req).await?;
    let login = input.required("username", MAX_LOGIN)?;
    let password = input.required("password", MAX_PASSWORD_BYTES)?;
    let rd = input
        .field("rd", 2048)?
        .map(str::to_owned)
        .or_else(|| query_value(input.query.as_deref(), "rd"))
        .unwrap_or_default();
    let account = service.check_password(login, password, input.ip, notes).await?;
    let now = SystemTime::now();
    let amr = vec!["pwd".to_owned()];
    let (needed, enrolled) = service.second_factor(&account).await?;
    if needed {
        let pending = Pending { acct: account.id.clone(), amr, enrol: !enrolled, rd: rd.clone() };
        let sealed = service.seal_pending(&pending, now)?;
        let next = if enrolled { format!("{PREFIX}/login/mfa") } else { format!("{PREFIX}/login/mfa?enrol=1") };
        let mut response = if input.form {
            see_other(&next)
        } else {
            json_response(
                StatusCode::OK,
                &json!({
                    "mfa_required": true,
                    "enrolment_required": !enrolled,
                    "mfa_token": sealed,
                    "methods": mfa_methods(service, &account).await?,
                    "expires_in": PENDING_TTL.as_secs(),
                }),
            )
        };
        response.headers_mut().append(SET_COOKIE, AccountService::cookie_header(PENDING_COOKIE, &sealed, PENDING_TTL));
        return Ok(response);
    }
    let issued = service.issue(&account, &amr, now).await?;
    Ok(logged_in(service, &input, &account, &issued, &amr, &rd))
}

/// The second factors `account` can use.
async fn mfa_methods(service: &AccountService, account: &Account) -> Result<Vec<&'static str>, Denied> {
    let store = service.store();
    let mut methods = Vec::new();
    if store.totp(&account.id).await.map_err(unavailable)?.is_some_and(|t| t.confirmed_at.is_some()) {
        methods.extend(["totp", "recovery"]);
    }
    if service.passkeys().is_some() && !store.passkeys(&account.id).await.map_err(unavailable)?.is_empty() {
        methods.push("passkey");
    }
    Ok(methods)
}

async fn mfa_page(State(service): State<AccountService>, req: Request) -> Response {
    let now = SystemTime::now();
    let pending =
        portcullis_policy::cookies::get(req.headers(), PENDING_COOKIE).and_then(|v| service.open_pending(v, now));
    let query = req.uri().query();
    let error = query_value(query, "error");
    match pending {
        Some(pending) => {
            let totp = match service.store().totp(&pending.acct).await {
                Ok(totp) => totp.is_some_and(|t| t.confirmed_at.is_some()),
                Err(e) => return portcullis_layers::deny(unavailable(e)).map(Body::new),
            };
            page::mfa(&service, pending.enrol, totp, error.as_deref())
        }
        None => see_other(&format!("{LOGIN_PATH}?error={}", Reason::AccountMfaFailed.code())),
    }
}

/// The pending login a second step continues: the cookie, or `mfa_token`.
pub(super) fn pending_of(service: &AccountService, input: &Input, now: SystemTime) -> Result<Pending, Denied> {
    let sealed = match input.field("mfa_token", MAX_TOKEN)? {
        Some(token) => Some(token),
        None => portcullis_policy::cookies::get(&input.headers, PENDING_COOKIE),
    };
    sealed
        .and_then(|s| service.open_pending(s, now))
        .ok_or_else(|| Denied::new(Reason::AccountMfaFailed).with_detail("no login in progress, or it expired"))
}

async fn login_totp(State(service): State<AccountService>, req: Request) -> Response {
    let form = is_form(&req);
    match second_step(&service, req, SecondFactor::Totp).await {
        Ok(response) => response,
        Err(denied) => refuse(form, &format!("{PREFIX}/login/mfa"), denied),
    }
}

async fn login_recovery(State(service): State<AccountService>, req: Request) -> Response {
    let form = is_form(&req);
    match second_step(&service, req, SecondFactor::Recovery).await {
        Ok(response) => response,
        Err(denied) => refuse(form, &format!("{PREFIX}/login/mfa"), denied),
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum SecondFactor {
    Totp,
    Recovery,
}

async fn second_step(service: &AccountService, req: Request, factor: SecondFactor) -> Result<Response, Denied> {
    let input = input(service, req).await?;
    let now = SystemTime::now();
    let pending = pending_of(service, &input, now)?;
    let code = input.required("code", MAX_CODE)?;
    let account = service
        .store()
        .account(&pending.acct)
        .await
        .map_err(unavailable)?
        .filter(|a| a.disabled_at.is_none())
        .ok_or_else(|| Denied::new(Reason::AccountMfaFailed).with_detail("account disabled or deleted"))?;
    // A second factor is guessable too: counted like passwords, per account.
    if let Some(note) = service.guard().before(Some(&account.username), input.ip).await? {
        tracing::warn!(detail = ?note.detail, "login guard store unavailable, failing open");
    }
    let mut amr = pending.amr.clone();
    match factor {
        SecondFactor::Totp => {
            let totp = service.store().totp(&account.id).await.map_err(unavailable)?;
            let Some(totp) = totp.filter(|t| t.confirmed_at.is_some()) else {
                return Err(Denied::new(Reason::AccountMfaFailed).with_detail("no TOTP enrolled"));
            };
            let secret = open_secret(service, &account.id, &totp.sealed_secret)?;
            match secret.check(code, unix(now), totp.last_step) {
                Checked::Accepted { step } => {
                    if !service.store().accept_totp_step(&account.id, step, now).await.map_err(unavailable)? {
                        return Err(Denied::new(Reason::AccountTotpReplay)
                            .with_detail(format!("account {}: step used concurrently", account.id)));
                    }
                }
                Checked::Replayed => {
                    return Err(Denied::new(Reason::AccountTotpReplay).with_detail(format!("account {}", account.id)));
                }
                Checked::Wrong => {
                    let counted = service.failed(Some(&account.username), input.ip, "wrong TOTP code").await;
                    return Err(Denied::new(Reason::AccountMfaFailed)
                        .with_detail(counted.detail.unwrap_or_default())
                        .with_rule(super::LOGIN_NAME));
                }
            }
            amr.push("otp".to_owned());
        }
        SecondFactor::Recovery => {
            if !service.store().use_recovery_code(&account.id, code, now).await.map_err(unavailable)? {
                let counted = service.failed(Some(&account.username), input.ip, "wrong or used recovery code").await;
                return Err(Denied::new(Reason::AccountMfaFailed)
                    .with_detail(counted.detail.unwrap_or_default())
                    .with_rule(super::LOGIN_NAME));
            }
            amr.push("rec".to_owned());
        }
    }
    if service
        .guard()
        .after(Some(&account.username), input.ip, portcullis_layers::login::Attempt::Succeeded)
        .await
        .is_some()
    {
        tracing::warn!("login guard could not reset the account's count");
    }
    let issued = service.issue(&account, &amr, now).await?;
    let mut response = logged_in(service, &input, &account, &issued, &amr, &pending.rd);
    if factor == SecondFactor::Recovery {
        let left = service.store().unused_recovery_codes(&account.id).await.unwrap_or_default();
        portcullis_layers::refusal::note(
            &mut response,
            Denied::new(Reason::AccountRecoveryUsed)
                .with_detail(format!("account {}: {left} recovery code(s) left", account.id)),
        );
    }
    Ok(response)
}

/// Opens a TOTP secret sealed for `account_id` (the account id is in the
/// associated data: a secret copied to another account's row does not open).
fn open_secret(service: &AccountService, account_id: &str, sealed: &str) -> Result<TotpSecret, Denied> {
    let internal =
        |what: &str| Denied::new(Reason::GatewayInternal).with_detail(format!("TOTP secret of {account_id}: {what}"));
    let encoded: String = service
        .key()
        .open_value(&totp_aad(account_id), sealed, SystemTime::now())
        .map_err(|_| internal("does not open with the gateway's key"))?;
    let bytes = base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, encoded)
        .map_err(|_| internal("not base64"))?;
    TotpSecret::from_bytes(bytes).map_err(|_| internal("unusable"))
}

fn totp_aad(account_id: &str) -> String {
    format!("totp:{account_id}")
}

/// Far enough ahead that a sealed secret never expires by itself.
fn never() -> SystemTime {
    portcullis_policy::session::from_unix(253_402_300_799)
}

/// Who is signed in: the account cookie or an access token.
pub(super) async fn signed_in(
    service: &AccountService,
    headers: &HeaderMap,
) -> Result<(Principal, Option<HeaderValue>), Denied> {
    if let Some(token) = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim())
    {
        return Ok((service.verify_token(token, SystemTime::now()).await?, None));
    }
    let Some(cookie) = portcullis_policy::cookies::get(headers, ACCOUNT_COOKIE) else {
        return Err(Denied::new(Reason::AccountUnauthenticated).with_detail("no account session"));
    };
    let outcome = service.verify_cookie(cookie, SystemTime::now()).await?;
    Ok((outcome.principal, outcome.set_cookie))
}

/// The account id of a principal (`account:<id>`).
pub(super) fn account_id(principal: &Principal) -> &str {
    principal.subject.strip_prefix("account:").unwrap_or(&principal.subject)
}

async fn refresh(State(service): State<AccountService>, req: Request) -> Response {
    match refresh_step(&service, req).await {
        Ok(response) => response,
        Err(denied) => portcullis_layers::deny(denied).map(Body::new),
    }
}

async fn refresh_step(service: &AccountService, req: Request) -> Result<Response, Denied> {
    let input = input(service, req).await?;
    if let Some(grant) = input.field("grant_type", 64)?
        && grant != "refresh_token"
    {
        return Err(invalid("grant_type must be refresh_token".into()));
    }
    let token = input.required("refresh_token", MAX_TOKEN)?;
    let now = SystemTime::now();
    let grace = service.settings().refresh_reuse_grace;
    let rotation = service.store().rotate_refresh_token(token, grace, now).await.map_err(super::account_error)?;
    let refused = |detail: String| Denied::new(Reason::AccountRefreshInvalid).with_detail(detail);
    match rotation {
        Rotation::Rotated { session, token } => {
            let (account, session) =
                service.live_session(&session.id, &session.account_id, now, Reason::AccountRefreshInvalid).await?;
            let access_token = service.access_token(&account, &session, &[], now)?;
            Ok(json_response(
                StatusCode::OK,
                &json!({
                    "access_token": access_token,
                    "token_type": "Bearer",
                    "expires_in": service.access_ttl(),
                    "refresh_token": token.expose(),
                    "session_expires_at": unix(session.expires_at),
                }),
            ))
        }
        Rotation::Reused { session, revoked_now } => {
            service.revoke_session(&session, RevokeReason::Reuse, now).await?;
            Err(Denied::new(Reason::AccountRefreshReuse).with_detail(format!(
                "account {}: a replaced refresh token of session {} was presented again; {}",
                session.account_id,
                portcullis_policy::principal::fingerprint(session.id.as_bytes()),
                if revoked_now { "the session is revoked" } else { "the session was already revoked" }
            )))
        }
        Rotation::Superseded { .. } => Err(refused("replaced moments ago by a concurrent refresh".into())),
        Rotation::Revoked { .. } => Err(refused("the session was revoked".into())),
        Rotation::Expired { .. } => Err(refused("the session has expired".into())),
        Rotation::Unknown => Err(refused("unknown refresh token".into())),
    }
}

async fn logout(State(service): State<AccountService>, req: Request) -> Response {
    end_sessions(&service, req, false).await
}

async fn logout_all(State(service): State<AccountService>, req: Request) -> Response {
    end_sessions(&service, req, true).await
}

async fn end_sessions(service: &AccountService, req: Request, everywhere: bool) -> Response {
    let form = is_form(&req);
    let result = async {
        let input = input(service, req).await?;
        let (principal, _) = signed_in(service, &input.headers).await?;
        let now = SystemTime::now();
        let account = account_id(&principal).to_owned();
        let sid = principal.session_id.clone().unwrap_or_default();
        let ended = if everywhere {
            service.revoke_sessions(&account, None, RevokeReason::LogoutEverywhere, now).await?
        } else {
            match service.store().session(&sid).await.map_err(unavailable)? {
                Some(session) if session.account_id == account => {
                    service.revoke_session(&session, RevokeReason::Logout, now).await?;
                    1
                }
                _ => 0,
            }
        };
        Ok::<_, Denied>((input, account, ended))
    }
    .await;
    match result {
        Ok((input, account, ended)) => {
            let mut response = if input.form {
                see_other(LOGIN_PATH)
            } else {
                json_response(StatusCode::OK, &json!({ "ended": ended }))
            };
            response
                .headers_mut()
                .append(SET_COOKIE, AccountService::cookie_header(ACCOUNT_COOKIE, "", Duration::ZERO));
            let what = if everywhere { "everywhere" } else { "this session" };
            record(
                &mut response,
                Denied::new(Reason::AccountLogout)
                    .with_detail(format!("account {account}: {what}, {ended} session(s) ended")),
            );
            response
        }
        Err(denied) => refuse(form, &format!("{PREFIX}/"), denied),
    }
}

async fn change_password(State(service): State<AccountService>, req: Request) -> Response {
    let form = is_form(&req);
    let result = async {
        let input = input(&service, req).await?;
        let (principal, _) = signed_in(&service, &input.headers).await?;
        let current = input.required("current_password", MAX_PASSWORD_BYTES)?;
        let new = input.required("new_password", MAX_PASSWORD_BYTES)?;
        let now = SystemTime::now();
        let account = service
            .store()
            .account(account_id(&principal))
            .await
            .map_err(unavailable)?
            .ok_or_else(|| Denied::new(Reason::AccountUnauthenticated).with_detail("account deleted"))?;
        // The current password is checked like a login (and counted), so a
        // stolen session cannot guess it or replace it unchecked.
        let mut notes = Vec::new();
        service.check_password(&account.username, current, input.ip, &mut notes).await?;
        let hash = service.hasher().hash_new(new).await.map_err(super::hashing)?;
        service.store().set_password_hash(&account.id, &hash, now).await.map_err(super::account_error)?;
        let ended = service
            .revoke_sessions(&account.id, principal.session_id.as_deref(), RevokeReason::PasswordChange, now)
            .await?;
        Ok::<_, Denied>((input.form, account, ended))
    }
    .await;
    match result {
        Ok((form, account, ended)) => {
            let mut response = if form {
                see_other(&format!("{PREFIX}/?done=password"))
            } else {
                json_response(StatusCode::OK, &json!({ "other_sessions_ended": ended }))
            };
            record(
                &mut response,
                Denied::new(Reason::AccountPasswordChanged)
                    .with_detail(format!("account {}: {ended} other session(s) ended", account.id)),
            );
            response
        }
        Err(denied) => refuse(form, &format!("{PREFIX}/"), denied),
    }
}

async fn register_page(State(service): State<AccountService>, req: Request) -> Response {
    let error = query_value(req.uri().query(), "error");
    page::register(&service, error.as_deref())
}

async fn register(State(service): State<AccountService>, req: Request) -> Response {
    let form = is_form(&req);
    let result = async {
        let input = input(&service, req).await?;
        let mode = service.settings().registration;
        if mode == Registration::Closed {
            return Err(Denied::new(Reason::AccountRegistrationRefused).with_detail("registration is closed"));
        }
        let username = input.required("username", MAX_LOGIN)?;
        let email = input.field("email", MAX_LOGIN)?;
        let password = input.required("password", MAX_PASSWORD_BYTES)?;
        let invite = input.field("invite", MAX_CODE)?;
        let now = SystemTime::now();
        // The cheap checks first: a taken or malformed name costs no hash.
        let fold = crate::store::accounts::fold_username(username);
        if service.store().account_for_login(&fold).await.map_err(unavailable)?.is_some() {
            return Err(Denied::new(Reason::AccountTaken).with_detail("the username is taken"));
        }
        let hash = service.hasher().hash_new(password).await.map_err(super::hashing)?;
        let new = NewAccount { username, email, password_hash: Some(&hash), roles: &[] };
        let created = match (mode, invite) {
            (Registration::Invite, Some(code)) => service.store().register_with_invite(code, &new, now).await,
            (Registration::Invite, None) => {
                return Err(Denied::new(Reason::AccountRegistrationRefused).with_detail("an invite code is required"));
            }
            _ => service.store().create_account(&new, now).await,
        };
        let account = created.map_err(|e| match e {
            AccountError::UsernameTaken | AccountError::EmailTaken => {
                Denied::new(Reason::AccountTaken).with_detail(e.to_string())
            }
            AccountError::InviteRefused => Denied::new(Reason::AccountRegistrationRefused).with_detail(e.to_string()),
            AccountError::InvalidUsername(_) | AccountError::InvalidEmail(_) | AccountError::InvalidRole(_) => {
                invalid(e.to_string())
            }
            AccountError::Store(e) => unavailable(e),
            other => Denied::new(Reason::GatewayInternal).with_detail(other.to_string()),
        })?;
        Ok::<_, Denied>((input.form, account))
    }
    .await;
    match result {
        Ok((form, account)) => {
            let mut response = if form {
                see_other(&format!("{LOGIN_PATH}?registered=1"))
            } else {
                json_response(
                    StatusCode::CREATED,
                    &json!({ "id": account.id, "username": account.username, "roles": account.roles }),
                )
            };
            record(
                &mut response,
                Denied::new(Reason::AccountRegistered).with_detail(format!(
                    "account {} ({}), roles: {}",
                    account.id,
                    account.username,
                    account.roles.join(",")
                )),
            );
            response
        }
        Err(denied) => refuse(form, &format!("{PREFIX}/register"), denied),
    }
}

async fn home_page(State(service): State<AccountService>, req: Request) -> Response {
    match signed_in(&service, req.headers()).await {
        Ok((principal, set_cookie)) => {
            let account = match service.store().account(account_id(&principal)).await {
                Ok(Some(account)) => account,
                Ok(None) => return AccountService::login_redirect(&format!("{PREFIX}/")).map(Body::new),
                Err(e) => return portcullis_layers::deny(unavailable(e)).map(Body::new),
            };
            let totp = service.store().totp(&account.id).await.ok().flatten().is_some_and(|t| t.confirmed_at.is_some());
            let codes = service.store().unused_recovery_codes(&account.id).await.unwrap_or_default();
            let query = req.uri().query();
            let mut response = page::home(
                &service,
                &account,
                totp,
                codes,
                query_value(query, "error").as_deref(),
                query_value(query, "done").as_deref(),
            );
            if let Some(cookie) = set_cookie {
                response.headers_mut().append(SET_COOKIE, cookie);
            }
            response
        }
        Err(_) => AccountService::login_redirect(&format!("{PREFIX}/")).map(Body::new),
    }
}

/// Who may enrol a second factor: a signed-in account, or a pending login
/// whose account must enrol one before it gets a session.
async fn enrolling_account(service: &AccountService, input: &Input) -> Result<(Account, Option<Pending>), Denied> {
    let now = SystemTime::now();
    let (id, pending) = match signed_in(service, &input.headers).await {
        Ok((principal, _)) => (account_id(&principal).to_owned(), None),
        Err(denied) => match pending_of(service, input, now) {
            Ok(pending) if pending.enrol => (pending.acct.clone(), Some(pending)),
            _ => return Err(denied),
        },
    };
    let account = service
        .store()
        .account(&id)
        .await
        .map_err(unavailable)?
        .filter(|a| a.disabled_at.is_none())
        .ok_or_else(|| Denied::new(Reason::AccountUnauthenticated).with_detail("account disabled or deleted"))?;
    Ok((account, pending))
}

async fn totp_enrol(State(service): State<AccountService>, req: Request) -> Response {
    let form = is_form(&req);
    let result = async {
        let input = input(&service, req).await?;
        let (account, _) = enrolling_account(&service, &input).await?;
        let internal = |e: String| Denied::new(Reason::GatewayInternal).with_detail(e);
        let secret = TotpSecret::generate().map_err(|e| internal(e.to_string()))?;
        let encoded = base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, secret.as_bytes());
        let sealed =
            service.key().seal_value(&totp_aad(&account.id), &encoded, never()).map_err(|e| internal(e.to_string()))?;
        service.store().set_totp_secret(&account.id, &sealed, SystemTime::now()).await.map_err(|e| match e {
            AccountError::Store(e) => unavailable(e),
            other => internal(other.to_string()),
        })?;
        let uri = secret.enrolment_uri(TOTP_ISSUER, &account.username).map_err(|e| internal(e.to_string()))?;
        Ok::<_, Denied>((input.form, secret.base32(), uri))
    }
    .await;
    match result {
        Ok((true, base32, uri)) => page::totp_enrol(&base32, &uri),
        Ok((false, base32, uri)) => json_response(StatusCode::OK, &json!({ "secret": base32, "uri": uri })),
        Err(denied) => refuse(form, &format!("{PREFIX}/"), denied),
    }
}

async fn totp_confirm(State(service): State<AccountService>, req: Request) -> Response {
    let form = is_form(&req);
    let result = async {
        let input = input(&service, req).await?;
        let (account, pending) = enrolling_account(&service, &input).await?;
        let code = input.required("code", MAX_CODE)?;
        let now = SystemTime::now();
        let totp = service
            .store()
            .totp(&account.id)
            .await
            .map_err(unavailable)?
            .ok_or_else(|| Denied::new(Reason::AccountMfaFailed).with_detail("no TOTP enrolment in progress"))?;
        let secret = open_secret(&service, &account.id, &totp.sealed_secret)?;
        match secret.check(code, unix(now), totp.last_step) {
            Checked::Accepted { step }
                if service.store().accept_totp_step(&account.id, step, now).await.map_err(unavailable)? => {}
            Checked::Accepted { .. } | Checked::Replayed => {
                return Err(Denied::new(Reason::AccountTotpReplay).with_detail(format!("account {}", account.id)));
            }
            Checked::Wrong => {
                let counted = service.failed(Some(&account.username), input.ip, "wrong TOTP code at enrolment").await;
                return Err(Denied::new(Reason::AccountMfaFailed).with_detail(counted.detail.unwrap_or_default()));
            }
        }
        let codes = service.store().replace_recovery_codes(&account.id, now).await.map_err(super::account_error)?;
        let codes: Vec<String> = codes.iter().map(|c| c.expose().to_owned()).collect();
        // A login that had to enrol first gets its session now.
        let issued = match &pending {
            Some(pending) => {
                let mut amr = pending.amr.clone();
                amr.push("otp".to_owned());
                Some((service.issue(&account, &amr, now).await?, amr))
            }
            None => None,
        };
        Ok::<_, Denied>((input, account, codes, issued))
    }
    .await;
    match result {
        Ok((input, account, codes, issued)) => {
            let mut response = if input.form {
                page::recovery_codes(&codes, issued.is_some())
            } else {
                let mut body = json!({ "recovery_codes": codes });
                if let Some((issued, _)) = &issued
                    && !input.wants_cookie()
                {
                    body["access_token"] = json!(issued.access_token);
                    body["refresh_token"] = json!(issued.refresh_token.expose());
                    body["expires_in"] = json!(service.access_ttl());
                    body["token_type"] = json!("Bearer");
                }
                json_response(StatusCode::OK, &body)
            };
            if let Some((issued, amr)) = &issued {
                if input.wants_cookie() {
                    let max_age = cookie_max_age(issued.session.expires_at, SystemTime::now());
                    response
                        .headers_mut()
                        .append(SET_COOKIE, AccountService::cookie_header(ACCOUNT_COOKIE, &issued.cookie, max_age));
                }
                response
                    .headers_mut()
                    .append(SET_COOKIE, AccountService::cookie_header(PENDING_COOKIE, "", Duration::ZERO));
                record(
                    &mut response,
                    Denied::new(Reason::AccountLogin).with_detail(format!(
                        "account {} ({}), factors: {}",
                        account.id,
                        account.username,
                        amr.join("+")
                    )),
                );
            }
            record(
                &mut response,
                Denied::new(Reason::AccountMfaEnrolled).with_detail(format!(
                    "account {}: TOTP, {} recovery codes",
                    account.id,
                    codes.len()
                )),
            );
            response
        }
        Err(denied) => refuse(form, &format!("{PREFIX}/"), denied),
    }
}

async fn recovery_codes(State(service): State<AccountService>, req: Request) -> Response {
    let form = is_form(&req);
    let result = async {
        let input = input(&service, req).await?;
        let (principal, _) = signed_in(&service, &input.headers).await?;
        let id = account_id(&principal).to_owned();
        let codes =
            service.store().replace_recovery_codes(&id, SystemTime::now()).await.map_err(super::account_error)?;
        Ok::<_, Denied>((input.form, id, codes.iter().map(|c| c.expose().to_owned()).collect::<Vec<_>>()))
    }
    .await;
    match result {
        Ok((form, id, codes)) => {
            let mut response = if form {
                page::recovery_codes(&codes, false)
            } else {
                json_response(StatusCode::OK, &json!({ "recovery_codes": codes }))
            };
            record(
                &mut response,
                Denied::new(Reason::AccountMfaEnrolled)
                    .with_detail(format!("account {id}: {} new recovery codes", codes.len())),
            );
            response
        }
        Err(denied) => refuse(form, &format!("{PREFIX}/"), denied),
    }
}
