//! OpenAPI request validation per request: a typical JSON order body (about
//! 600 bytes, nested lines, `$ref`s, `nullable`) against the fixture
//! document the integration tests use, and a GET with path and query
//! parameters. `cargo bench -p portcullis-policy --bench openapi`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // benchmark set-up, like tests

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue, Method};
use portcullis_policy::openapi::{OpenApi, Options, RequestParts};

const DOCUMENT: &str = include_str!("../../portcullis/tests/fixtures/openapi/orders.json");

fn body() -> String {
    let lines: Vec<String> = (0..8).map(|i| format!(r#"{{"sku":"SKU-{i:04}","quantity":{}}}"#, i + 1)).collect();
    format!(
        r#"{{"customer":"Ada Lovelace","quantity":3,"note":null,"address":{{"city":"London","zip":"12345"}},"lines":[{}],"meta":{{"channel":"web","campaign":"spring"}}}}"#,
        lines.join(",")
    )
}

fn validate(c: &mut Criterion) {
    let api =
        OpenApi::load("orders", DOCUMENT.as_bytes(), Options { base_path: Some("/api".into()), ..Options::default() })
            .unwrap();
    let body = body();
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    let post =
        RequestParts { method: &Method::POST, path: "/api/orders", query: None, headers: &headers, has_body: true };
    api.validate(&post, Some(body.as_bytes())).unwrap();
    let mut group = c.benchmark_group("openapi");
    group.throughput(Throughput::Bytes(body.len() as u64));
    group.bench_function("json_body", |b| b.iter(|| api.validate(black_box(&post), Some(black_box(body.as_bytes())))));
    group.finish();
    let empty = HeaderMap::new();
    let get = RequestParts {
        method: &Method::GET,
        path: "/api/orders",
        query: Some("limit=20&status=open&status=shipped"),
        headers: &empty,
        has_body: false,
    };
    api.validate(&get, None).unwrap();
    c.bench_function("openapi/query_params", |b| b.iter(|| api.validate(black_box(&get), None)));
    let by_id =
        RequestParts { method: &Method::GET, path: "/api/orders/42", query: None, headers: &empty, has_body: false };
    c.bench_function("openapi/path_param", |b| b.iter(|| api.validate(black_box(&by_id), None)));
}

criterion_group!(benches, validate);
criterion_main!(benches);
