//! The built-in demo upstream (`targets = ["builtin:demo"]`): answers every
//! request with a small JSON description of what it received, so the
//! quickstart needs nothing else and shows what a backend behind Portcullis
//! sees (forwarding headers, request id, later the caller's identity).
//!
//! Credentials are never echoed: `Authorization`, `Cookie` and
//! `Proxy-Authorization` values are replaced by their length.

use http::header::{AUTHORIZATION, CONTENT_TYPE, COOKIE, PROXY_AUTHORIZATION};
use http::{HeaderValue, Request, Response};
use http_body_util::BodyExt;
use portcullis_layers::{Body, full};
use serde_json::{Map, Value, json};

/// How much of the body is echoed back.
const ECHO_BYTES: usize = 1024;

/// Answers one request.
pub async fn handle(req: Request<Body>) -> Response<Body> {
    let (parts, mut body) = req.into_parts();
    let mut received: u64 = 0;
    let mut head = Vec::new();
    let mut body_error = None;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                if let Some(data) = frame.data_ref() {
                    received += data.len() as u64;
                    let room = ECHO_BYTES.saturating_sub(head.len());
                    head.extend_from_slice(&data[..data.len().min(room)]);
                }
            }
            Err(e) => {
                body_error = Some(e);
                break;
            }
        }
    }
    if let Some(e) = body_error {
        if portcullis_layers::body::is_body_too_large(e.as_ref()) {
            return portcullis_layers::deny(portcullis_policy::Reason::LimitBody);
        }
        return portcullis_layers::deny(portcullis_policy::Reason::RequestBody);
    }

    let mut headers = Map::new();
    for (name, value) in &parts.headers {
        let shown = if name == AUTHORIZATION || name == COOKIE || name == PROXY_AUTHORIZATION {
            Value::String(format!("[redacted, {} bytes]", value.len()))
        } else {
            Value::String(String::from_utf8_lossy(value.as_bytes()).into_owned())
        };
        match headers.get_mut(name.as_str()) {
            Some(Value::Array(list)) => list.push(shown),
            Some(existing) => *existing = Value::Array(vec![existing.take(), shown]),
            None => {
                headers.insert(name.as_str().to_owned(), shown);
            }
        }
    }
    let client_cert = parts
        .extensions
        .get::<portcullis_layers::ConnInfo>()
        .and_then(|c| c.client_cert.as_deref())
        .map(|cert| json!({ "subject": cert.subject, "sans": cert.sans, "fingerprint": cert.fingerprint }));
    let echo = json!({
        "client_cert": client_cert,
        "upstream": "portcullis builtin:demo",
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "query": parts.uri.query(),
        "headers": headers,
        "body_bytes": received,
        "body": String::from_utf8_lossy(&head),
    });
    // HEAD gets the headers only: a body would be a protocol error (HTTP/2).
    let body = if parts.method == http::Method::HEAD { portcullis_layers::empty() } else { full(echo.to_string()) };
    let mut response = Response::new(body);
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}
