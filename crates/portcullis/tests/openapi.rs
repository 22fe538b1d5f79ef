//! OpenAPI request validation through the running gateway: unknown paths
//! and methods, parameters and JSON bodies checked against the upstream's
//! document (from a file or from a URL), JSON limits, 400 answers naming the
//! field, bodies forwarded byte for byte, one event per refusal.

use crate::common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http::Request;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde_json::json;

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/openapi/orders.json");

/// What the upstream received: method, path and query, body.
type Seen = Arc<Mutex<Vec<(String, String, Bytes)>>>;

async fn recording_upstream() -> (SocketAddr, Seen) {
    let seen: Seen = Arc::default();
    let record = seen.clone();
    let addr = upstream(move |req: Request<Incoming>| {
        let record = record.clone();
        async move {
            let method = req.method().to_string();
            let target = req.uri().path_and_query().map(ToString::to_string).unwrap_or_default();
            let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
            record.lock().unwrap().push((method, target, body));
            http::Response::new(portcullis_layers::full("upstream"))
        }
    })
    .await;
    (addr, seen)
}

/// One document, validated on `/api/**`; `/open/**` uses the same document
/// without `deny_unknown`; `/plain/**` validates nothing.
fn config(up: SocketAddr, source: &str, extra: &str) -> String {
    format!(
        r#"
[[listener]]
name = "test"
bind = "127.0.0.1:0"

[[upstream]]
name = "app"
targets = ["http://{up}"]

[[route]]
name = "api"
match = {{ path = "/api/**" }}
upstream = "app"
auth = "public"
openapi = "orders"

[[route]]
name = "open"
match = {{ path = "/open/**" }}
upstream = "app"
auth = "public"
openapi = "lenient"

[[route]]
name = "plain"
match = {{ path = "/plain/**" }}
upstream = "app"
auth = "public"

[openapi.orders]
source = "{source}"
base_path = "/api"
{extra}

[openapi.lenient]
source = "{FIXTURE}"
base_path = "/open"
deny_unknown = false
"#
    )
}

async fn send_json(gw: &Gateway, method: &str, path: &str, body: &str) -> (http::response::Parts, Bytes) {
    let req = Request::builder()
        .method(method)
        .uri(gw.url(path))
        .header("content-type", "application/json")
        .body(portcullis_layers::full(body.to_owned()))
        .unwrap();
    send(req).await
}

/// Asserts an OpenAPI refusal: status, body with field and message, event.
fn assert_refused(
    gw: &Gateway,
    answer: &(http::response::Parts, Bytes),
    status: u16,
    reason: &str,
    field: &str,
    message: &str,
) {
    let (parts, body) = answer;
    assert_eq!(parts.status.as_u16(), status, "{}", String::from_utf8_lossy(body));
    let id = parts.headers["x-request-id"].to_str().unwrap();
    assert_eq!(json(body), json!({"error": reason, "request_id": id, "field": field, "message": message}));
    let event = gw.events.last().unwrap();
    assert_eq!((event.reason, event.request_id.as_str(), event.rule.as_deref()), (reason, id, Some("orders")));
    let detail = event.detail.unwrap_or_default();
    assert!(detail.contains(field), "event detail {detail:?} lacks {field}");
}

#[tokio::test]
async fn unknown_paths_and_methods_are_refused_only_with_deny_unknown() {
    let (up, seen) = recording_upstream().await;
    let gw = gateway(&config(up, FIXTURE, "")).await;

    let (parts, body) = get(&gw.url("/api/nothing")).await;
    assert_denied(&parts, &body, 404, "openapi.unknown_path");
    assert_eq!(gw.events.last().unwrap().rule.as_deref(), Some("orders"));

    let req = Request::put(gw.url("/api/orders")).body(portcullis_layers::empty()).unwrap();
    let (parts, body) = send(req).await;
    assert_denied(&parts, &body, 405, "openapi.method");
    assert_eq!(parts.headers["allow"], "GET, POST");
    assert!(seen.lock().unwrap().is_empty(), "the upstream was reached");
    assert_eq!(gw.events.reasons(), ["openapi.unknown_path", "openapi.method"]);

    // The same document without deny_unknown lets both through, unvalidated.
    let (parts, _) = get(&gw.url("/open/nothing")).await;
    assert_eq!(parts.status, 200);
    let (parts, _) = send(Request::put(gw.url("/open/orders")).body(portcullis_layers::empty()).unwrap()).await;
    assert_eq!(parts.status, 200);
    // Literal segments win over templates; HEAD uses GET.
    let (parts, _) = get(&gw.url("/api/orders/recent")).await;
    assert_eq!(parts.status, 200);
    let (parts, _) = send(Request::head(gw.url("/api/orders/7")).body(portcullis_layers::empty()).unwrap()).await;
    assert_eq!(parts.status, 200);
    // Routes without a document are not validated.
    let (parts, _) = get(&gw.url("/plain/anything?limit=x")).await;
    assert_eq!(parts.status, 200);
    assert_eq!(seen.lock().unwrap().len(), 5);
}

#[tokio::test]
async fn invalid_bodies_get_400_naming_the_field_and_never_reach_the_upstream() {
    let (up, seen) = recording_upstream().await;
    let gw = gateway(&config(up, FIXTURE, "")).await;
    let cases = [
        (r#"{"customer":"ann","quantity":"two"}"#, "body.quantity", "expected integer"),
        (r#"{"quantity":2}"#, "body.customer", "is required"),
        (r#"{"customer":"ann","quantity":2,"isAdmin":true}"#, "body.isAdmin", "is not allowed"),
        (
            r#"{"customer":"ann","quantity":2,"lines":[{"sku":"abc","quantity":0}]}"#,
            "body.lines[0].quantity",
            "must be at least 1",
        ),
        (r#"{"customer":"ann","quantity":2,"address":{"zip":"12345"}}"#, "body.address.city", "is required"),
        (
            r#"{"customer":"ann","quantity":2,"address":{"city":"X","zip":"1234x"}}"#,
            "body.address.zip",
            "does not match the required pattern",
        ),
    ];
    for (body, field, message) in cases {
        let answer = send_json(&gw, "POST", "/api/orders", body).await;
        assert_refused(&gw, &answer, 400, "openapi.invalid", field, message);
    }
    // The event names the schema keyword too.
    assert!(gw.events.last().unwrap().detail.unwrap().contains("(pattern)"));
    // A huge unknown property name is cut, never echoed whole.
    let long = "x".repeat(10_000);
    let (parts, body) =
        send_json(&gw, "POST", "/api/orders", &format!(r#"{{"customer":"a","quantity":1,"{long}":1}}"#)).await;
    assert_eq!(parts.status, 400);
    assert!(body.len() < 400, "{} bytes", body.len());

    let (parts, body) = send_json(&gw, "POST", "/api/orders", r#"{"customer":"#).await;
    assert_eq!(parts.status, 400);
    assert_eq!(json(&body)["error"], "openapi.malformed_json");
    let req = Request::post(gw.url("/api/orders"))
        .header("content-type", "text/xml")
        .body(portcullis_layers::full("<order/>"))
        .unwrap();
    let answer = send(req).await;
    assert_refused(
        &gw,
        &answer,
        415,
        "openapi.content_type",
        "header.content-type",
        "is not a type the operation accepts",
    );
    let answer = send(Request::post(gw.url("/api/orders")).body(portcullis_layers::empty()).unwrap()).await;
    assert_refused(&gw, &answer, 400, "openapi.invalid", "body", "is required");

    assert!(seen.lock().unwrap().is_empty(), "the upstream was reached");
    assert_eq!(gw.events.reasons().len(), 10, "one event per refusal: {:?}", gw.events.reasons());
}

#[tokio::test]
async fn valid_requests_reach_the_upstream_byte_for_byte() {
    let (up, seen) = recording_upstream().await;
    let gw = gateway(&config(up, FIXTURE, "")).await;
    // Odd spacing, escapes, a duplicate-free nested body, a null where nullable.
    let body = "{ \"customer\" : \"Zo\\u00eb \\\"Z\\\"\",\n\t\"quantity\":3, \"note\": null, \"address\": null,\n \"lines\":[{\"sku\":\"abc\",\"quantity\":1}], \"meta\": {\"k\": [1,2,{}]} }  ";
    // Sent as a stream of small chunks (no Content-Length).
    let chunks: Vec<Result<http_body::Frame<Bytes>, portcullis_layers::BoxError>> =
        body.as_bytes().chunks(7).map(|c| Ok(http_body::Frame::data(Bytes::copy_from_slice(c)))).collect();
    let streamed = http_body_util::StreamBody::new(futures_util::stream::iter(chunks));
    let req = Request::post(gw.url("/api/orders"))
        .header("content-type", "application/json; charset=utf-8")
        .body(streamed.boxed_unsync())
        .unwrap();
    let (parts, answer) = send(req).await;
    assert_eq!(parts.status, 200, "{}", String::from_utf8_lossy(&answer));
    let got = seen.lock().unwrap().clone();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0, "POST");
    assert_eq!(got[0].2.as_ref(), body.as_bytes(), "the upstream got different bytes");
    assert!(gw.events.reasons().is_empty(), "{:?}", gw.events.reasons());
}

#[tokio::test]
async fn path_and_query_parameters_are_validated() {
    let (up, seen) = recording_upstream().await;
    let gw = gateway(&config(up, FIXTURE, "")).await;
    let answer = get(&gw.url("/api/orders/abc")).await;
    assert_refused(&gw, &answer, 400, "openapi.invalid", "path.id", "expected integer");
    let answer = get(&gw.url("/api/orders/0")).await;
    assert_refused(&gw, &answer, 400, "openapi.invalid", "path.id", "must be at least 1");
    let answer = get(&gw.url("/api/orders?limit=500")).await;
    assert_refused(&gw, &answer, 400, "openapi.invalid", "query.limit", "must be at most 100");
    let answer = get(&gw.url("/api/orders?limit=1&limit=2")).await;
    assert_refused(&gw, &answer, 400, "openapi.invalid", "query.limit", "expected integer");
    let answer = get(&gw.url("/api/orders?status=open&status=lost")).await;
    assert_refused(&gw, &answer, 400, "openapi.invalid", "query.status[1]", "is not one of the allowed values");
    assert!(seen.lock().unwrap().is_empty());

    for ok in ["/api/orders/42", "/api/orders?limit=10&status=open&status=shipped", "/api/ORDERS?limit=1"] {
        let (parts, _) = get(&gw.url(ok)).await;
        assert_eq!(parts.status, 200, "{ok}");
    }
    let targets: Vec<String> = seen.lock().unwrap().iter().map(|(_, t, _)| t.clone()).collect();
    assert_eq!(targets, ["/api/orders/42", "/api/orders?limit=10&status=open&status=shipped", "/api/ORDERS?limit=1"]);
}

#[tokio::test]
async fn json_limits_and_the_body_limit_are_enforced() {
    let (up, seen) = recording_upstream().await;
    let extra = "max_depth = 4\nmax_keys = 6\nmax_string = 16\nmax_body = 256";
    let gw = gateway(&config(up, FIXTURE, extra)).await;
    let cases = [
        (r#"{"customer":"a","quantity":1,"meta":{"a":{"b":[{"c":1}]}}}"#, "nested deeper than 4 levels"),
        (r#"{"customer":"a","quantity":1,"meta":{"a":1,"b":2,"c":3,"d":4,"e":5}}"#, "more than 6 object keys"),
        (r#"{"customer":"aaaaaaaaaaaaaaaaaaaa","quantity":1}"#, "a string longer than 16 bytes"),
    ];
    for (body, message) in cases {
        let answer = send_json(&gw, "POST", "/api/orders", body).await;
        assert_refused(&gw, &answer, 400, "openapi.json_limits", "body", message);
    }
    let big = format!(r#"{{"customer":"a","quantity":1,"note":"{}"}}"#, "n".repeat(300));
    let answer = send_json(&gw, "POST", "/api/orders", &big).await;
    assert_refused(&gw, &answer, 413, "openapi.body_too_large", "body", "larger than 256 bytes");
    // A body the validator cannot read as the upstream does (Express inflates
    // it, or decodes its charset) is refused for that, not parsed as noise.
    for (content_type, encoding, rule) in [
        ("application/json", "gzip", "content-encoding"),
        ("application/json; charset=utf-16le", "identity", "charset"),
    ] {
        let req = Request::post(gw.url("/api/orders"))
            .header("content-type", content_type)
            .header("content-encoding", encoding)
            .body(portcullis_layers::full(r#"{"customer":"a","quantity":1}"#))
            .unwrap();
        let (parts, body) = send(req).await;
        assert_denied(&parts, &body, 415, "request.encoding");
        assert_eq!(gw.events.last().unwrap().rule.as_deref(), Some(rule));
    }
    assert!(seen.lock().unwrap().is_empty());
    let (parts, _) =
        send_json(&gw, "POST", "/api/orders", r#"{"customer":"a","quantity":1,"meta":{"a":{"b":1}}}"#).await;
    assert_eq!(parts.status, 200);
}

/// Serves `document` at `/api-json` (as NestJS does), or `status` for
/// everything else.
async fn document_server(document: &'static str) -> SocketAddr {
    upstream(move |req: Request<Incoming>| async move {
        if req.uri().path() == "/api-json" {
            let mut response = http::Response::new(portcullis_layers::full(document));
            response.headers_mut().insert("content-type", http::HeaderValue::from_static("application/json"));
            response
        } else {
            let mut response = http::Response::new(portcullis_layers::empty());
            *response.status_mut() = http::StatusCode::NOT_FOUND;
            response
        }
    })
    .await
}

#[tokio::test]
async fn the_document_can_come_from_a_url() {
    static DOCUMENT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let document = DOCUMENT.get_or_init(|| std::fs::read_to_string(FIXTURE).unwrap());
    let docs = document_server(document.as_str()).await;
    let (up, seen) = recording_upstream().await;
    let gw = gateway(&config(up, &format!("http://{docs}/api-json"), "")).await;
    let answer = send_json(&gw, "POST", "/api/orders", r#"{"customer":"a","quantity":"1"}"#).await;
    assert_refused(&gw, &answer, 400, "openapi.invalid", "body.quantity", "expected integer");
    let (parts, _) = send_json(&gw, "POST", "/api/orders", r#"{"customer":"a","quantity":1}"#).await;
    assert_eq!(parts.status, 200);
    assert_eq!(seen.lock().unwrap().len(), 1);
    let (parts, _) = get(&gw.url("/api/elsewhere")).await;
    assert_eq!(parts.status, 404);
}

#[tokio::test]
async fn a_bad_url_or_document_stops_the_start_with_a_clear_error() {
    let (up, _) = recording_upstream().await;
    // Nothing listens on a port just released.
    let closed = {
        let socket = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        socket.local_addr().unwrap()
    };
    let docs = document_server("{\"swagger\": \"2.0\"}").await;
    let cases = [
        (format!("http://{closed}/api-json"), "request to"),
        (format!("http://{docs}/missing"), "answered 404"),
        (format!("http://{docs}/api-json"), "Swagger 2.0 is not supported"),
    ];
    for (source, why) in cases {
        let (config, _dir) = common::config(&config(up, &source, ""));
        let events = Arc::new(Events::default());
        let err = tokio::time::timeout(Duration::from_secs(20), portcullis::server::Server::start(config, events))
            .await
            .expect("start hangs")
            .expect_err("started with a bad document")
            .to_string();
        assert!(err.contains("[openapi.orders]") && err.contains(&source) && err.contains(why), "{err}");
    }
}

fn config_error(toml: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.toml");
    portcullis::config::parse(&path, toml, |_| None).unwrap_err().to_string()
}

#[tokio::test]
async fn bad_configuration_names_the_key_and_line() {
    let up: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let yaml = dir.path().join("doc.yaml");
    std::fs::write(&yaml, "openapi: 3.0.0\npaths: {}\n").unwrap();
    let missing = dir.path().join("nope.json");
    let cases: [(String, &str, &[&str]); 9] = [
        (config(up, FIXTURE, "deny_unkown = true"), "", &["unknown field `deny_unkown`"]),
        (config(up, FIXTURE, "max_depth = 0"), "", &["max_depth is out of range", "between 1 and 128"]),
        (config(up, FIXTURE, "max_keys = -1"), "", &["max_keys is out of range"]),
        (config(up, FIXTURE, "max_string = \"lots\""), "", &["invalid max_string"]),
        (config(up, FIXTURE, "validate = [\"bodies\"]"), "", &["unknown validate part \"bodies\""]),
        (
            config(up, FIXTURE, "").replace("base_path = \"/api\"", "base_path = \"api\""),
            "",
            &["invalid base_path \"api\""],
        ),
        (config(up, missing.to_str().unwrap(), ""), "", &["cannot read OpenAPI document", "nope.json"]),
        (config(up, yaml.to_str().unwrap(), ""), "", &["doc.yaml", "YAML is not supported"]),
        (
            config(up, FIXTURE, "").replace("openapi = \"orders\"", "openapi = \"order\""),
            "",
            &["unknown openapi document \"order\"", "one of: lenient, orders"],
        ),
    ];
    for (toml, _, needles) in cases {
        let err = config_error(&toml);
        for needle in needles {
            assert!(err.contains(needle), "{needle:?} not in:\n{err}");
        }
        assert!(err.contains("p.toml:"), "no file and line in:\n{err}");
    }
}
