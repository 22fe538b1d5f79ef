//! The admin API and dashboard on their own listener (`[admin]`).
//!
//! Defends the gateway's controls from its clients: the admin API never
//! shares a port with proxied traffic, binds to loopback unless it is served
//! over TLS (`[admin] tls`; `portcullis check` flags any other address), and
//! every request must carry `Authorization: Bearer <token>`, compared in
//! constant time, or the dashboard's session cookie. A wrong or missing
//! token is a 401 `admin.unauthorized` event.
//!
//! Decision rules:
//! - Open without credentials: `GET /health` (liveness), `GET /ready`
//!   (readiness: which checks pass, never why one fails — that is logged),
//!   the dashboard's sign-in page (`GET /`, `POST /login`) and its static
//!   files (`/assets/*`, and an empty `/favicon.ico` so browsers do not
//!   fill the event log with refusals).
//! - Everything else needs the bearer token or a dashboard session
//!   ([`dashboard`]); a request authenticated by the session cookie that
//!   changes something (any method but GET/HEAD) must also carry the
//!   session's CSRF token in `X-CSRF-Token`, else 403 `admin.csrf`.
//! - Every answer carries a strict Content-Security-Policy (`script-src
//!   'self'`, no inline script or style), `nosniff`, `no-referrer`,
//!   `frame-ancestors 'none'` and `Cache-Control: no-store`.
//!
//! Endpoints (docs/configuration.md "The admin API" has the bodies):
//! `GET /metrics`, `GET /health`, `GET /ready`, `GET /events` (JSON page, or
//! server-sent events with `Accept: text/event-stream`), `GET /stats`,
//! `GET /upstreams`, `POST /reload`, `GET|POST /bans`, `DELETE
//! /bans/{target}`, `POST /logins/unlock`, `GET|POST /api-keys`, `DELETE
//! /api-keys/{id}`, `GET /audit`.
//!
//! With `[state] shared = "redis://…"`, bans added or lifted here reach every
//! instance. What changes something here (bans, unlocks, API keys) is a row
//! of the audit trail, its actor `admin-api:<peer>` or `dashboard:<peer>`;
//! reloads are recorded by whoever carries them out.

pub mod dashboard;
pub mod recent;
pub mod serve;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::SystemTime;

use axum::Json;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use futures_util::Stream;
use metrics_exporter_prometheus::PrometheusHandle;
use portcullis_layers::EventSink;
use portcullis_layers::ban::{Ban, BanStore, unix_millis};
use portcullis_policy::event::RequestSummary;
use portcullis_policy::{Denied, Reason, SecurityEvent};
use serde::Deserialize;
use tokio::sync::{OnceCell, broadcast, mpsc, oneshot, watch};

use self::recent::{Filter, Numbered, Recent, event_json};
use crate::config::secret::Secret;
use crate::store::Store;
use crate::store::audit::{Entry, Filter as AuditFilter, Outcome, Page};
use axum::http::Extensions;

/// The process's count of answered requests (the dashboard's requests chart).
#[must_use]
pub fn answered_requests() -> u64 {
    crate::metrics::totals().requests
}

/// A reload asked for through `POST /reload`, answered by whoever owns the
/// configuration file (`portcullis run`'s main loop).
#[derive(Debug)]
pub struct ReloadRequest {
    /// Who asked (`admin-api:127.0.0.1`, `dashboard:127.0.0.1`).
    pub actor: String,
    /// The outcome: the settings read only at start that changed, or why
    /// the reload was refused.
    pub reply: oneshot::Sender<Result<Vec<String>, String>>,
}

/// What readiness looks at; see [`ready`].
#[derive(Debug, Default)]
pub struct Readiness {
    /// Set once the WAF rule sets passed their canary, every worker is warm
    /// and the listeners accept.
    pub serving: AtomicBool,
    /// The JWT verifier of the configuration serving (its key sets).
    pub jwt: arc_swap::ArcSwapOption<crate::auth::jwt::JwtVerifier>,
    /// The shared state, when it is Redis.
    pub redis: Option<crate::shared::RedisState>,
    /// Whether the configuration uses the `[state] store` (API keys,
    /// accounts), so it must answer.
    pub store_needed: AtomicBool,
}

/// The store, opened on first use (most admin requests never need it).
pub struct LazyStore {
    url: String,
    store: OnceCell<Store>,
}

impl std::fmt::Debug for LazyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LazyStore").field("url", &crate::store::redact(&self.url)).finish_non_exhaustive()
    }
}

impl LazyStore {
    /// A store at `url`, not opened yet.
    #[must_use]
    pub fn new(url: &str) -> Self {
        Self { url: url.to_owned(), store: OnceCell::new() }
    }

    /// The store, opened (and migrated) on the first call that succeeds.
    ///
    /// # Errors
    /// The store cannot be opened.
    pub async fn get(&self) -> Result<&Store, crate::store::StoreError> {
        self.store.get_or_try_init(|| Store::open(&self.url)).await
    }
}

/// One upstream target's health as the workers see it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TargetHealth {
    /// The upstream's name.
    pub upstream: String,
    /// The target (`http://127.0.0.1:3000`).
    pub target: String,
    /// False while a worker skips it after a failed connection.
    pub healthy: bool,
    /// Seconds until it is tried again, when unhealthy.
    pub retry_in_seconds: Option<u64>,
}

/// Reads the upstreams' health from the running gateway.
pub type UpstreamHealth = Arc<dyn Fn() -> Vec<TargetHealth> + Send + Sync>;

/// What the admin endpoints work on.
#[derive(Clone)]
pub struct AdminState {
    /// The ban list.
    pub bans: Arc<dyn BanStore>,
    /// The metrics recorder's handle, if this process's recorder is ours.
    pub metrics: Option<&'static PrometheusHandle>,
    /// The bearer token.
    pub token: Secret,
    /// Where refused admin requests are reported.
    pub events: Arc<dyn EventSink>,
    /// Login-failure counts (`[login.NAME]`).
    pub logins: Arc<dyn portcullis_layers::login::LoginStore>,
    /// The audit trail.
    pub audit: crate::audit::Recorder,
    /// Recent events, live feed and chart counts.
    pub recent: Arc<Recent>,
    /// What `GET /ready` checks.
    pub readiness: Arc<Readiness>,
    /// Where `POST /reload` sends its request (none: reloads are not served).
    pub reload: Option<mpsc::Sender<ReloadRequest>>,
    /// API keys (and the store's readiness).
    pub store: Arc<LazyStore>,
    /// The upstreams' health.
    pub upstreams: UpstreamHealth,
    /// The dashboard's sessions.
    pub sessions: Arc<dashboard::Sessions>,
    /// Whether the listener is TLS (cookies get `Secure`).
    pub tls: bool,
    /// Ends event streams when the gateway shuts down.
    pub stop: watch::Receiver<bool>,
}

impl std::fmt::Debug for AdminState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminState").field("tls", &self.tls).finish_non_exhaustive()
    }
}

/// Who made an admin request, put in the request's extensions by the
/// authentication middleware.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// A client with the bearer token.
    Token(IpAddr),
    /// A browser signed in to the dashboard.
    Dashboard(IpAddr),
}

impl Caller {
    /// The actor name audit rows and events use (`admin-api:127.0.0.1`).
    #[must_use]
    pub fn actor(&self) -> String {
        match self {
            Self::Token(ip) => format!("admin-api:{ip}"),
            Self::Dashboard(ip) => format!("dashboard:{ip}"),
        }
    }
}

/// The admin router.
pub fn router(state: AdminState) -> axum::Router {
    axum::Router::new()
        .route("/", get(dashboard::index))
        .route("/login", post(dashboard::login))
        .route("/logout", post(dashboard::logout))
        .route("/assets/{file}", get(dashboard::asset))
        .route("/favicon.ico", get(|| async { StatusCode::NO_CONTENT }))
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/events", get(events))
        .route("/stats", get(stats))
        .route("/upstreams", get(upstreams))
        .route("/reload", post(reload))
        .route("/bans", get(list_bans).post(add_ban))
        .route("/bans/{target}", delete(lift_ban))
        .route("/logins/unlock", post(unlock_login))
        .route("/api-keys", get(list_api_keys).post(create_api_key))
        .route("/api-keys/{id}", delete(revoke_api_key))
        .route("/audit", get(list_audit))
        .layer(middleware::from_fn_with_state(state.clone(), authenticate))
        .layer(middleware::map_response(security_headers))
        .with_state(state)
}

/// A JSON error body: `{"error": code, "message": text}`.
pub(crate) fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (status, Json(serde_json::json!({ "error": code, "message": message.into() }))).into_response()
}

/// The dashboard's policy: its own files only, nothing inline, no framing.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; \
                   form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert("cross-origin-opener-policy", HeaderValue::from_static("same-origin"));
    headers.insert("cross-origin-resource-policy", HeaderValue::from_static("same-origin"));
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

/// The peer's address (the admin listener sees clients directly).
pub(crate) fn peer(request: &Request) -> IpAddr {
    request
        .extensions()
        .get::<axum::extract::ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::from([0, 0, 0, 0]), |c| c.0.ip())
}

/// Reports a refused admin request.
pub(crate) fn refuse(state: &AdminState, peer: IpAddr, method: &Method, path: &str, denied: &Denied) {
    let request_id = uuid::Uuid::new_v4().to_string();
    let summary = RequestSummary {
        request_id: &request_id,
        client_ip: peer,
        listener: "admin",
        method: method.as_str(),
        path,
        route: None,
    };
    state.events.emit(SecurityEvent::denied(&summary, denied, SystemTime::now()));
}

/// Whether `presented` is the admin token (constant time).
pub(crate) fn is_token(state: &AdminState, presented: &str) -> bool {
    aws_lc_rs::constant_time::verify_slices_are_equal(presented.as_bytes(), state.token.expose().as_bytes()).is_ok()
}

fn is_open(method: &Method, path: &str) -> bool {
    matches!(
        (method, path),
        (&Method::GET | &Method::HEAD, "/" | "/health" | "/ready" | "/favicon.ico") | (&Method::POST, "/login")
    ) || (matches!(*method, Method::GET | Method::HEAD) && path.starts_with("/assets/"))
}

async fn authenticate(State(state): State<AdminState>, mut request: Request, next: Next) -> Response {
    let peer = peer(&request);
    if is_open(request.method(), request.uri().path()) {
        return next.run(request).await;
    }
    let bearer = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if let Some(presented) = bearer
        && is_token(&state, presented)
    {
        request.extensions_mut().insert(Caller::Token(peer));
        return next.run(request).await;
    }
    if bearer.is_none()
        && let Some(session) = state.sessions.find(request.headers())
    {
        let safe = matches!(*request.method(), Method::GET | Method::HEAD);
        let presented = request.headers().get("x-csrf-token").and_then(|v| v.to_str().ok()).unwrap_or("");
        if safe || session.csrf_matches(presented) {
            request.extensions_mut().insert(Caller::Dashboard(peer));
            return next.run(request).await;
        }
        let detail = if presented.is_empty() { "no X-CSRF-Token" } else { "wrong X-CSRF-Token" };
        let denied = Denied::new(Reason::AdminCsrf).with_detail(detail);
        refuse(&state, peer, request.method(), request.uri().path(), &denied);
        return error(
            StatusCode::FORBIDDEN,
            Reason::AdminCsrf.code(),
            "the dashboard's CSRF token is missing or wrong",
        );
    }
    let detail = match bearer {
        None => "no bearer token or dashboard session",
        Some("") => "an empty bearer token",
        Some(_) => "wrong bearer token",
    };
    let denied = Denied::new(Reason::AdminUnauthorized).with_detail(detail);
    refuse(&state, peer, request.method(), request.uri().path(), &denied);
    let mut response =
        error(StatusCode::UNAUTHORIZED, Reason::AdminUnauthorized.code(), "a valid admin token is required");
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"portcullis-admin\""));
    response
}

/// Liveness: the process answers.
async fn health() -> Response {
    Json(serde_json::json!({ "status": "ok" })).into_response()
}

/// Readiness: 200 when the gateway serves its configuration and what it
/// depends on answers, else 503; each check by name, `true` or `false`.
async fn ready(State(state): State<AdminState>) -> Response {
    let readiness = &state.readiness;
    let mut checks = serde_json::Map::new();
    // The WAF's canary and the workers' warm-up finish before the listeners accept.
    checks.insert("serving".into(), readiness.serving.load(Ordering::Acquire).into());
    if let Some(jwt) = readiness.jwt.load_full() {
        let missing = jwt.issuers_without_keys();
        if !missing.is_empty() {
            tracing::warn!(issuers = ?missing, "not ready: JWT issuers without keys (JWKS not fetched)");
        }
        checks.insert("jwks".into(), missing.is_empty().into());
    }
    if let Some(redis) = &readiness.redis {
        let answer = redis.ping().await;
        if let Err(e) = &answer {
            tracing::warn!(error = %e, "not ready: Redis does not answer");
        }
        checks.insert("redis".into(), answer.is_ok().into());
    }
    if readiness.store_needed.load(Ordering::Acquire) {
        let answer = match state.store.get().await {
            Ok(store) => store.ping().await,
            Err(e) => Err(e),
        };
        if let Err(e) = &answer {
            tracing::warn!(error = %e, "not ready: the store does not answer");
        }
        checks.insert("store".into(), answer.is_ok().into());
    }
    let ok = checks.values().all(|v| v.as_bool() == Some(true));
    let status = if ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(serde_json::json!({ "ready": ok, "checks": checks }))).into_response()
}

async fn metrics(State(state): State<AdminState>) -> Response {
    crate::metrics::refresh_bans(state.bans.as_ref()).await;
    let body = state.metrics.map(|h| h.render()).unwrap_or_default();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}

/// The query of `GET /events`: the filter, and `after` for a stream that
/// resumes.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct EventsQuery {
    reason: Option<String>,
    client: Option<String>,
    route: Option<String>,
    before: Option<u64>,
    limit: Option<usize>,
    after: Option<u64>,
}

async fn events(
    State(state): State<AdminState>,
    headers: HeaderMap,
    query: Result<Query<EventsQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(query)) = query else {
        return error(
            StatusCode::BAD_REQUEST,
            "request.invalid",
            "parameters: reason, client, route, before, limit (numbers for before, limit and after)",
        );
    };
    if query.client.as_deref().is_some_and(|c| !c.is_empty() && c.parse::<IpAddr>().is_err()) {
        return error(StatusCode::BAD_REQUEST, "request.invalid", "client must be an IP address");
    }
    let filter = Filter {
        reason: query.reason,
        client: query.client,
        route: query.route,
        before: query.before,
        limit: query.limit,
    };
    let wants_stream = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("text/event-stream"));
    if wants_stream {
        // A reconnecting EventSource sends the last id it saw.
        let after = headers
            .get("last-event-id")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .or(query.after)
            .unwrap_or(u64::MAX);
        return Sse::new(stream(&state, filter, after)).keep_alive(KeepAlive::default()).into_response();
    }
    let (page, next) = state.recent.page(&filter);
    Json(serde_json::json!({
        "events": page.iter().map(event_json).collect::<Vec<_>>(),
        "next": next,
    }))
    .into_response()
}

/// The live events matching `filter`, after replaying those remembered with
/// an id above `after`; ends when the gateway shuts down. A reader too slow
/// for the feed gets a `lagged` event saying how many it missed.
fn stream(
    state: &AdminState,
    filter: Filter,
    after: u64,
) -> impl Stream<Item = Result<Event, std::convert::Infallible>> + use<> {
    let live = state.recent.subscribe();
    let backlog: std::collections::VecDeque<Numbered> =
        if after == u64::MAX { Default::default() } else { state.recent.since(after, &filter).into() };
    let last = backlog.back().map_or(after, |n| n.id);
    let stop = state.stop.clone();
    futures_util::stream::unfold(
        (live, backlog, stop, filter, if after == u64::MAX { 0 } else { last }),
        |(mut live, mut backlog, mut stop, filter, mut last)| async move {
            if let Some(n) = backlog.pop_front() {
                let event = sse_event(&n);
                return Some((Ok(event), (live, backlog, stop, filter, n.id)));
            }
            loop {
                if *stop.borrow() {
                    return None;
                }
                tokio::select! {
                    _ = stop.changed() => return None,
                    received = live.recv() => match received {
                        Ok(n) if n.id > last && filter.matches(&n.event) => {
                            last = n.id;
                            let event = sse_event(&n);
                            return Some((Ok(event), (live, backlog, stop, filter, last)));
                        }
                        Ok(_) => {}
                        Err(broadcast::error::RecvError::Lagged(missed)) => {
                            let event = Event::default().event("lagged").data(missed.to_string());
                            return Some((Ok(event), (live, backlog, stop, filter, last)));
                        }
                        Err(broadcast::error::RecvError::Closed) => return None,
                    },
                }
            }
        },
    )
}

fn sse_event(numbered: &Numbered) -> Event {
    Event::default().id(numbered.id.to_string()).data(event_json(numbered).to_string())
}

/// The dashboard's charts: requests and denials by defence per minute over
/// the last hour, and the clients denied most.
async fn stats(State(state): State<AdminState>) -> Response {
    Json(state.recent.stats(SystemTime::now())).into_response()
}

async fn upstreams(State(state): State<AdminState>) -> Response {
    Json(serde_json::json!({ "targets": (state.upstreams)() })).into_response()
}

async fn reload(State(state): State<AdminState>, request: Request) -> Response {
    let actor = request.extensions().get::<Caller>().map_or_else(|| "admin-api".to_owned(), Caller::actor);
    let Some(reload) = &state.reload else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "reload.unavailable",
            "this process does not reload from a file (it was not started by `portcullis run`)",
        );
    };
    let (reply, answer) = oneshot::channel();
    if reload.send(ReloadRequest { actor, reply }).await.is_err() {
        return error(StatusCode::SERVICE_UNAVAILABLE, "reload.unavailable", "the gateway is shutting down");
    }
    match answer.await {
        Ok(Ok(not_applied)) => {
            Json(serde_json::json!({ "reloaded": true, "not_applied": not_applied })).into_response()
        }
        Ok(Err(why)) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(serde_json::json!({ "reloaded": false, "error": "reload.refused", "message": why })),
        )
            .into_response(),
        Err(_) => error(StatusCode::SERVICE_UNAVAILABLE, "reload.unavailable", "the gateway is shutting down"),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UnlockRequest {
    login: String,
    account: String,
}

/// Forgets an account's login failures; an `account.unlocked` event
/// (action `log`, listener `admin`) names the login and the account's
/// fingerprint, as the login protection's own events do.
async fn unlock_login(State(state): State<AdminState>, request: Request) -> Response {
    let peer = peer(&request);
    let actor = actor_of(request.extensions());
    let body = axum::body::to_bytes(request.into_body(), 4096).await.unwrap_or_default();
    let Ok(request) = serde_json::from_slice::<UnlockRequest>(&body) else {
        return error(StatusCode::BAD_REQUEST, "request.invalid", "expected {\"login\": NAME, \"account\": NAME}");
    };
    match portcullis_layers::login::unlock_account(state.logins.as_ref(), &request.login, &request.account).await {
        Ok(true) => {
            let request_id = uuid::Uuid::new_v4().to_string();
            let summary = RequestSummary {
                request_id: &request_id,
                client_ip: peer,
                listener: "admin",
                method: "POST",
                path: "/logins/unlock",
                route: None,
            };
            let fingerprint = portcullis_policy::login::account_fingerprint(&request.account).unwrap_or_default();
            let audited = serde_json::json!({ "login": request.login, "account_fingerprint": fingerprint });
            let target = format!("{}/{fingerprint}", request.login);
            state.audit.record(Entry::new(actor, "login.unlock", target, audited));
            let detail = format!("login {}: account {fingerprint} failures cleared", request.login);
            state.events.emit(SecurityEvent::logged(
                &summary,
                "account",
                "account.unlocked",
                204,
                detail,
                std::time::SystemTime::now(),
            ));
            StatusCode::NO_CONTENT.into_response()
        }
        Ok(false) => error(StatusCode::BAD_REQUEST, "request.invalid", "the account name is empty"),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, "login.unavailable", e.to_string()),
    }
}

/// A ban as the API and `portcullis ban list --json` show it.
#[must_use]
pub fn ban_json(ban: &Ban) -> serde_json::Value {
    let time = |ms: u64| {
        humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms)).to_string()
    };
    serde_json::json!({
        "target": ban.target_text(),
        "rule": ban.rule,
        "since": time(ban.since_ms),
        "until": time(ban.until_ms),
    })
}

async fn list_bans(State(state): State<AdminState>) -> Response {
    match state.bans.list().await {
        Ok(bans) => Json(serde_json::json!({ "bans": bans.iter().map(ban_json).collect::<Vec<_>>() })).into_response(),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, "bans.unavailable", e.to_string()),
    }
}

/// An address, or an IPv6 /64 written with or without its `/64`.
#[must_use]
pub fn parse_target(text: &str) -> Option<IpAddr> {
    let text = text.trim();
    text.strip_suffix("/64").filter(|t| t.contains(':')).unwrap_or(text).parse().ok()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewBan {
    target: String,
    duration: String,
}

async fn add_ban(
    State(state): State<AdminState>,
    extensions: Extensions,
    body: Result<Json<NewBan>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Ok(Json(new)) = body else {
        return error(
            StatusCode::BAD_REQUEST,
            "request.invalid",
            "expected {\"target\": \"IP\", \"duration\": \"1h\"}",
        );
    };
    let Some(target) = parse_target(&new.target) else {
        return error(StatusCode::BAD_REQUEST, "request.invalid", "target must be an IP address or an IPv6 /64");
    };
    let duration = match humantime::parse_duration(&new.duration) {
        Ok(d) if !d.is_zero() => d,
        _ => return error(StatusCode::BAD_REQUEST, "request.invalid", "duration must be like \"30m\" or \"24h\""),
    };
    let ban = Ban::new(target, "manual", unix_millis(), duration);
    let json = ban_json(&ban);
    let added = state.bans.add(ban).await;
    let detail = serde_json::json!({ "rule": "manual", "duration_s": duration.as_secs() });
    let outcome = if added.is_ok() { Outcome::Ok } else { Outcome::Failed };
    audit(&state, &extensions, "ban.add", portcullis_layers::store::ip_key(target), detail, outcome);
    match added {
        Ok(()) => (StatusCode::CREATED, Json(json)).into_response(),
        Err(e) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "bans.unavailable",
            format!("{e}; enforced by this instance now, by the others once Redis answers"),
        ),
    }
}

async fn lift_ban(State(state): State<AdminState>, extensions: Extensions, Path(target): Path<String>) -> Response {
    let Some(target) = parse_target(&target) else {
        return error(StatusCode::BAD_REQUEST, "request.invalid", "target must be an IP address or an IPv6 /64");
    };
    let lifted = state.bans.lift(target).await;
    // Lifting nothing changes nothing: no row.
    let outcome = match lifted {
        Ok(true) => Some(Outcome::Ok),
        Ok(false) => None,
        Err(_) => Some(Outcome::Failed),
    };
    if let Some(outcome) = outcome {
        let text = portcullis_layers::store::ip_key(target);
        audit(&state, &extensions, "ban.lift", text, serde_json::json!({}), outcome);
    }
    match lifted {
        Ok(true) => StatusCode::NO_CONTENT.into_response(),
        Ok(false) => error(StatusCode::NOT_FOUND, "ban.none", "no ban on that address"),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, "bans.unavailable", e.to_string()),
    }
}

/// The audit actor of an authenticated admin request.
fn actor_of(extensions: &Extensions) -> String {
    extensions.get::<Caller>().map_or_else(
        || {
            let peer = extensions.get::<axum::extract::ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
            crate::audit::admin_actor(peer)
        },
        Caller::actor,
    )
}

/// Queues an audit row for an action taken through this API.
fn audit(
    state: &AdminState,
    extensions: &Extensions,
    action: &str,
    target: String,
    detail: serde_json::Value,
    outcome: Outcome,
) {
    state.audit.record(Entry::new(actor_of(extensions), action, target, detail).with_outcome(outcome));
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    action: Option<String>,
    actor: Option<String>,
    before: Option<i64>,
    limit: Option<u32>,
}

/// `GET /audit`: a page of the audit trail, newest first.
async fn list_audit(
    State(state): State<AdminState>,
    query: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(query)) = query else {
        return error(StatusCode::BAD_REQUEST, "request.invalid", "query: action, actor, before (a seq), limit");
    };
    let filter = AuditFilter { action: query.action, actor: query.actor };
    let page = Page { before: query.before, limit: query.limit.unwrap_or(Page::default().limit) };
    let listed = match state.audit.log().await {
        Ok(log) => log.list(&filter, page).await,
        Err(e) => Err(e),
    };
    match listed {
        Ok(listing) => Json(listing).into_response(),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, "audit.unavailable", e.to_string()),
    }
}

fn store_unavailable(e: &dyn std::fmt::Display) -> Response {
    error(StatusCode::SERVICE_UNAVAILABLE, "store.unavailable", e.to_string())
}

async fn list_api_keys(State(state): State<AdminState>) -> Response {
    let store = match state.store.get().await {
        Ok(store) => store,
        Err(e) => return store_unavailable(&e),
    };
    match store.list_api_keys().await {
        Ok(keys) => Json(serde_json::json!({
            "keys": keys.iter().map(crate::cli_apikey::json_value).collect::<Vec<_>>()
        }))
        .into_response(),
        Err(e) => store_unavailable(&e),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewApiKey {
    name: String,
    #[serde(default)]
    roles: Vec<String>,
    /// Lifetime such as `90d`; none: no expiry.
    expires: Option<String>,
}

/// Creates a key; the answer holds it, once (`key`), with its listing.
async fn create_api_key(
    State(state): State<AdminState>,
    extensions: Extensions,
    body: Result<Json<NewApiKey>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let invalid = |message: &str| error(StatusCode::BAD_REQUEST, "request.invalid", message);
    let Ok(Json(new)) = body else {
        return invalid("expected {\"name\": \"billing\", \"roles\": [\"…\"], \"expires\": \"90d\"}");
    };
    let expires_at = match new.expires.as_deref().map(humantime::parse_duration) {
        None => None,
        Some(Ok(d)) if !d.is_zero() => SystemTime::now().checked_add(d),
        Some(_) => return invalid("expires must be like \"90d\" or \"12h\""),
    };
    let store = match state.store.get().await {
        Ok(store) => store,
        Err(e) => return store_unavailable(&e),
    };
    match store.create_api_key(&new.name, &new.roles, expires_at).await {
        Ok((info, key)) => {
            let detail = serde_json::json!({ "name": info.name, "roles": info.roles, "expires": new.expires });
            audit(&state, &extensions, "apikey.create", info.id.clone(), detail, Outcome::Ok);
            let mut json = crate::cli_apikey::json_value(&info);
            if let Some(object) = json.as_object_mut() {
                object.insert("key".into(), key.expose().into());
            }
            (StatusCode::CREATED, Json(json)).into_response()
        }
        Err(crate::store::ApiKeyError::Store(e)) => store_unavailable(&e),
        Err(e) => invalid(&e.to_string()),
    }
}

async fn revoke_api_key(State(state): State<AdminState>, extensions: Extensions, Path(id): Path<String>) -> Response {
    let store = match state.store.get().await {
        Ok(store) => store,
        Err(e) => return store_unavailable(&e),
    };
    match store.revoke_api_key(&id).await {
        Ok(crate::store::Revoked::Now) => {
            audit(&state, &extensions, "apikey.revoke", id, serde_json::json!({}), Outcome::Ok);
            StatusCode::NO_CONTENT.into_response()
        }
        Ok(crate::store::Revoked::Already(_)) => StatusCode::NO_CONTENT.into_response(),
        Err(crate::store::ApiKeyError::Store(e)) => store_unavailable(&e),
        Err(crate::store::ApiKeyError::Unknown(_)) => error(StatusCode::NOT_FOUND, "apikey.none", "no such key"),
        Err(e) => error(StatusCode::BAD_REQUEST, "request.invalid", e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_as_addresses_or_v6_64s() {
        assert_eq!(parse_target("203.0.113.9"), Some("203.0.113.9".parse().unwrap()));
        assert_eq!(parse_target("2001:db8:1:2::/64"), Some("2001:db8:1:2::".parse().unwrap()));
        assert_eq!(parse_target("10.0.0.0/64"), None);
        assert_eq!(parse_target("example.com"), None);
    }

    #[test]
    fn only_the_probes_and_the_sign_in_page_are_open() {
        assert!(is_open(&Method::GET, "/health"));
        assert!(is_open(&Method::GET, "/ready"));
        assert!(is_open(&Method::GET, "/"));
        assert!(is_open(&Method::POST, "/login"));
        assert!(is_open(&Method::GET, "/assets/dashboard.js"));
        assert!(!is_open(&Method::POST, "/assets/dashboard.js"));
        assert!(!is_open(&Method::POST, "/"));
        assert!(!is_open(&Method::GET, "/metrics"));
        assert!(!is_open(&Method::GET, "/events"));
        assert!(!is_open(&Method::POST, "/logout"));
        assert!(!is_open(&Method::DELETE, "/bans/1.2.3.4"));
    }
}
