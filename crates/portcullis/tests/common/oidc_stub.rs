//! A stand-in OIDC provider that only answers discovery (with its own
//! address as issuer) and an empty JWKS, and sealed session cookies made
//! with a known `cookie_secret`: enough for the gateway to start with
//! `[auth.oidc]` and accept sessions without a login round trip.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use http::{Request, Response};
use hyper::body::Incoming;
use portcullis_policy::session::{SESSION_COOKIE, SessionData, SessionKey, unix};
use serde_json::json;

/// The `[auth.oidc]`, `[auth.session]` and `[auth.jwt]` sections of a
/// gateway that trusts the stub at `idp` for sessions (sealed with
/// `cookie_secret`) and JWTs from `issuer` for audience `api` signed by the
/// key in `pem`.
pub fn auth_sections(idp: SocketAddr, cookie_secret: &str, issuer: &str, pem: &str) -> String {
    format!(
        r#"
[auth.oidc]
issuer = "http://{idp}"
client_id = "portcullis"
client_secret = "secret"
public_url = "http://localhost"

[auth.session]
cookie_secret = "{cookie_secret}"

[auth.jwt]
issuer = "{issuer}"
audience = "api"
keys = [{{ pem = """{pem}""" }}]
"#
    )
}

/// Starts the provider on a loopback port.
pub async fn stub_provider() -> SocketAddr {
    super::upstream(|req: Request<Incoming>| async move {
        let host = req.headers()["host"].to_str().unwrap().to_owned();
        let issuer = format!("http://{host}");
        let body = match req.uri().path() {
            "/.well-known/openid-configuration" => json!({
                "issuer": issuer,
                "authorization_endpoint": format!("{issuer}/auth"),
                "token_endpoint": format!("{issuer}/token"),
                "jwks_uri": format!("{issuer}/jwks"),
                "response_types_supported": ["code"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["RS256"],
            }),
            "/jwks" => json!({"keys": []}),
            _ => json!({}),
        };
        let mut response = Response::new(portcullis_layers::full(body.to_string()));
        response.headers_mut().insert("content-type", http::HeaderValue::from_static("application/json"));
        response
    })
    .await
}

/// A session cookie pair (`name=value`) for session `id` of `user-{id}`,
/// issued by the provider at `idp`, sealed with `cookie_secret`, valid for
/// an hour.
pub fn sealed_session(idp: SocketAddr, cookie_secret: &str, id: &str) -> String {
    let now = SystemTime::now();
    let data = SessionData {
        id: id.to_owned(),
        subject: format!("user-{id}"),
        roles: Vec::new(),
        scopes: Vec::new(),
        issuer: format!("http://{idp}"),
        issued_at: unix(now),
        expires_at: unix(now + Duration::from_secs(3600)),
        access_expires_at: None,
        refresh_token: None,
    };
    let sealed = SessionKey::new(cookie_secret.as_bytes()).unwrap().seal(&data, now).unwrap();
    format!("{SESSION_COOKIE}={sealed}")
}
