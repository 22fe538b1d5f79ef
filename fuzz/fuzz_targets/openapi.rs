//! OpenAPI parameter coercion and validation (`portcullis_policy::openapi`).
//!
//! Input: a request in the format of `portcullis_fuzz::Request`, checked
//! against a fixed document (the unit tests' orders API, base path `/api`)
//! after the gateway's path normalization.
//!
//! Properties, for a request the document's validation lets through:
//! - `GET /api/orders`: `limit` is sent at most once (as any spelling the
//!   query decoder reads as `limit`, nested forms included) and is an
//!   integer from 1 to 100; `X-Tenant` is sent once and is lower-case
//!   letters;
//! - `GET|DELETE /api/orders/{id}`: `id` (decoded) is an integer of at
//!   least 1;
//! - `POST /api/orders` with a JSON body: the body is JSON within the
//!   limits (depth 32), an object with only the declared keys, a `sku`
//!   string of at least 3 characters and a `quantity` integer of at least 1;
//! - nothing panics, whatever the document is asked.

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use portcullis_fuzz::Request;
use portcullis_policy::normalize::{PathPolicy, normalize};
use portcullis_policy::openapi::{OpenApi, Options, RequestParts};
use serde_json::Value;

const DOCUMENT: &str = include_str!("../src/orders-openapi.json");

fn api() -> &'static OpenApi {
    static API: OnceLock<OpenApi> = OnceLock::new();
    API.get_or_init(|| OpenApi::load("orders", DOCUMENT.as_bytes(), Options::default()).unwrap())
}

fn depth(value: &Value) -> usize {
    match value {
        Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        Value::Object(map) => 1 + map.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

fn is_json(content_type: Option<&str>) -> bool {
    content_type.is_some_and(|c| c.split(';').next().unwrap_or("").trim().eq_ignore_ascii_case("application/json"))
}

fuzz_target!(|data: &[u8]| {
    let request = Request::parse(data);
    let Ok(path) = normalize(request.uri.path(), &PathPolicy::default()) else { return };
    let query = request.uri.query();
    let has_body = !request.body.is_empty();
    let parts = RequestParts { method: &request.method, path: &path, query, headers: &request.headers, has_body };
    let body = has_body.then_some(request.body);
    if api().validate(&parts, body).is_err() {
        return;
    }
    let key = PathPolicy::default().match_key(&path).into_owned();
    let segments: Vec<&str> = key.split('/').skip(1).collect();
    match (request.method.as_str(), segments.as_slice()) {
        ("GET" | "HEAD", ["api", "orders"]) => {
            let pairs: Vec<(String, String)> =
                form_urlencoded::parse(query.unwrap_or("").as_bytes()).into_owned().collect();
            let limits: Vec<&String> =
                pairs.iter().filter(|(k, _)| k == "limit" || k.starts_with("limit[")).map(|(_, v)| v).collect();
            assert!(limits.len() <= 1, "limit sent {} times: {query:?}", limits.len());
            if let Some(limit) = limits.first() {
                let n: i64 = limit.parse().unwrap_or_else(|_| panic!("limit {limit:?} is not an integer"));
                assert!((1..=100).contains(&n), "limit {n}");
            }
            let tenants: Vec<&[u8]> = request.headers.get_all("x-tenant").iter().map(|v| v.as_bytes()).collect();
            assert_eq!(tenants.len(), 1, "X-Tenant {tenants:?}");
            assert!(!tenants[0].is_empty() && tenants[0].iter().all(u8::is_ascii_lowercase), "X-Tenant {tenants:?}");
        }
        ("GET" | "HEAD" | "DELETE", ["api", "orders", id]) if *id != "mine" => {
            let raw = path.rsplit('/').next().unwrap_or_default();
            let decoded = String::from_utf8(portcullis_fuzz::percent_decode(raw)).unwrap();
            // The schema is `integer, minimum 1` without a format: any size.
            let digits = decoded.strip_prefix('+').unwrap_or(&decoded);
            if digits.len() > 18 && digits.bytes().all(|b| b.is_ascii_digit()) {
                assert!(digits.bytes().any(|b| b != b'0'), "id {decoded:?}");
                return;
            }
            let n: i64 = decoded.parse().unwrap_or_else(|_| panic!("id {decoded:?} is not an integer"));
            assert!(n >= 1, "id {n}");
        }
        ("POST", ["api", "orders"]) if has_body => {
            let content_type = request.headers.get("content-type").and_then(|v| v.to_str().ok());
            if !is_json(content_type) {
                return;
            }
            let value: Value = serde_json::from_slice(request.body).unwrap_or_else(|e| panic!("passed bad JSON: {e}"));
            assert!(depth(&value) <= 32);
            let object = value.as_object().unwrap_or_else(|| panic!("not an object: {value}"));
            let declared = ["sku", "quantity", "note", "kind", "address", "billing", "items"];
            assert!(object.keys().all(|k| declared.contains(&k.as_str())), "undeclared key in {value}");
            let sku = object.get("sku").and_then(Value::as_str).unwrap_or_else(|| panic!("sku in {value}"));
            assert!(sku.chars().count() >= 3, "sku {sku:?}");
            let quantity = object.get("quantity").unwrap_or_else(|| panic!("quantity in {value}"));
            // OpenAPI 3.0 is JSON Schema draft 4: an integer is written without
            // a fraction or exponent (`2.0` is refused), but one past i64 parses
            // as a float whose spelling is lost (`1e30`, 24 digits): admitted.
            let integral = quantity.as_u64().is_some_and(|q| q >= 1)
                || quantity.as_f64().is_some_and(|q| q >= 9_223_372_036_854_775_808.0);
            assert!(integral, "quantity {quantity}");
        }
        _ => {}
    }
});
