//! The admin API on its own listener (`[admin]`): Prometheus metrics and the
//! ban list.
//!
//! Defends the gateway's controls from its clients: the admin API never
//! shares a port with proxied traffic, binds to loopback in the examples
//! (`portcullis check` flags any other address), and every request must
//! carry `Authorization: Bearer <token>`, compared in constant time. A wrong
//! or missing token is a 401 `admin.unauthorized` event.
//!
//! Endpoints:
//! - `GET /metrics`: Prometheus text format.
//! - `GET /bans`: `{"bans": [{"target", "rule", "since", "until"}]}`.
//! - `POST /bans` with `{"target": "203.0.113.9", "duration": "1h"}`: bans
//!   by hand (rule `manual`); 201.
//! - `DELETE /bans/{target}`: lifts a ban (an address, or an IPv6 /64 as
//!   `2001:db8:1:2::` or `2001:db8:1:2::%2F64`); 204, or 404 when there was
//!   none.
//!
//! - `POST /logins/unlock` with `{"login": "api", "account": "alice"}`:
//!   forgets the failures counted for that account name under
//!   `[login.api]` (`portcullis user unlock`); 204, and an
//!   `account.unlocked` event naming the account by fingerprint only.
//!
//! With `[state] shared = "redis://…"`, bans added or lifted here reach every
//! instance.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use metrics_exporter_prometheus::PrometheusHandle;
use portcullis_layers::EventSink;
use portcullis_layers::ban::{Ban, BanStore, unix_millis};
use portcullis_policy::event::RequestSummary;
use portcullis_policy::{Denied, Reason, SecurityEvent};
use serde::Deserialize;

use crate::config::secret::Secret;

/// What the admin endpoints work on.
#[derive(Debug, Clone)]
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
}

/// The admin router.
pub fn router(state: AdminState) -> axum::Router {
    axum::Router::new()
        .route("/metrics", get(metrics))
        .route("/bans", get(list_bans).post(add_ban))
        .route("/bans/{target}", delete(lift_ban))
        .route("/logins/unlock", axum::routing::post(unlock_login))
        .layer(middleware::from_fn_with_state(state.clone(), require_token))
        .with_state(state)
}

fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (status, Json(serde_json::json!({ "error": code, "message": message.into() }))).into_response()
}

async fn require_token(State(state): State<AdminState>, request: Request, next: Next) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if aws_lc_rs::constant_time::verify_slices_are_equal(presented.as_bytes(), state.token.expose().as_bytes()).is_ok()
    {
        return next.run(request).await;
    }
    let peer = request.extensions().get::<axum::extract::ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
    let request_id = uuid::Uuid::new_v4().to_string();
    let summary = RequestSummary {
        request_id: &request_id,
        client_ip: peer.unwrap_or(IpAddr::from([0, 0, 0, 0])),
        listener: "admin",
        method: request.method().as_str(),
        path: request.uri().path(),
        route: None,
    };
    let detail = if presented.is_empty() { "no bearer token" } else { "wrong bearer token" };
    let denied = Denied::new(Reason::AdminUnauthorized).with_detail(detail);
    state.events.emit(SecurityEvent::denied(&summary, &denied, std::time::SystemTime::now()));
    let mut response =
        error(StatusCode::UNAUTHORIZED, Reason::AdminUnauthorized.code(), "a valid admin token is required");
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"portcullis-admin\""));
    response
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
    let peer = request.extensions().get::<axum::extract::ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
    let body = axum::body::to_bytes(request.into_body(), 4096).await.unwrap_or_default();
    let Ok(request) = serde_json::from_slice::<UnlockRequest>(&body) else {
        return error(StatusCode::BAD_REQUEST, "request.invalid", "expected {\"login\": NAME, \"account\": NAME}");
    };
    match portcullis_layers::login::unlock_account(state.logins.as_ref(), &request.login, &request.account).await {
        Ok(true) => {
            let request_id = uuid::Uuid::new_v4().to_string();
            let summary = RequestSummary {
                request_id: &request_id,
                client_ip: peer.unwrap_or(IpAddr::from([0, 0, 0, 0])),
                listener: "admin",
                method: "POST",
                path: "/logins/unlock",
                route: None,
            };
            let fingerprint = portcullis_policy::login::account_fingerprint(&request.account).unwrap_or_default();
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

async fn metrics(State(state): State<AdminState>) -> Response {
    crate::metrics::refresh_bans(state.bans.as_ref()).await;
    let body = state.metrics.map(|h| h.render()).unwrap_or_default();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
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
    match state.bans.add(ban).await {
        Ok(()) => (StatusCode::CREATED, Json(json)).into_response(),
        Err(e) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "bans.unavailable",
            format!("{e}; enforced by this instance now, by the others once Redis answers"),
        ),
    }
}

async fn lift_ban(State(state): State<AdminState>, Path(target): Path<String>) -> Response {
    let Some(target) = parse_target(&target) else {
        return error(StatusCode::BAD_REQUEST, "request.invalid", "target must be an IP address or an IPv6 /64");
    };
    match state.bans.lift(target).await {
        Ok(true) => StatusCode::NO_CONTENT.into_response(),
        Ok(false) => error(StatusCode::NOT_FOUND, "ban.none", "no ban on that address"),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, "bans.unavailable", e.to_string()),
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
}
