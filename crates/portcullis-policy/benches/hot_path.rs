//! Hot-path benchmarks: route matching and forwarding-header rewrite.
#![allow(clippy::unwrap_used, clippy::expect_used)] // benchmark set-up, like tests

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue, Method};
use portcullis_policy::forwarded::{self, Hop, TrustedProxies};
use portcullis_policy::route::{HostPattern, Match, PathPattern, RouteEntry, RouteTable};
use portcullis_policy::{hop, limits::RequestLimits};

fn table(n: usize) -> RouteTable<usize> {
    let mut entries = Vec::new();
    for i in 0..n {
        entries.push(RouteEntry {
            host: None,
            path: PathPattern::parse(&format!("/svc{i}/items/{{id}}")).unwrap(),
            methods: Some(vec![Method::GET]),
            value: i,
        });
        entries.push(RouteEntry {
            host: if i % 2 == 0 { Some(HostPattern::parse("api.example.com").unwrap()) } else { None },
            path: PathPattern::parse(&format!("/svc{i}/**")).unwrap(),
            methods: None,
            value: i,
        });
    }
    entries.push(RouteEntry { host: None, path: PathPattern::parse("/health").unwrap(), methods: None, value: n });
    RouteTable::new(entries)
}

fn route_match(c: &mut Criterion) {
    for n in [10, 100] {
        let t = table(n);
        c.bench_function(&format!("route_match/{}_routes", n * 2 + 1), |b| {
            b.iter(|| {
                let m = t.find(black_box(Some("api.example.com")), black_box("/svc7/items/42/x"), &Method::GET);
                assert!(matches!(m, Match::Found(_)));
            });
        });
    }
}

fn request_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in [
        ("host", "api.example.com"),
        ("user-agent", "wrk/4.2"),
        ("accept", "application/json"),
        ("accept-encoding", "gzip, br"),
        ("connection", "keep-alive"),
        ("x-forwarded-for", "1.2.3.4"),
        ("cookie", "session=abcdef0123456789"),
    ] {
        h.insert(k, HeaderValue::from_static(v));
    }
    h
}

fn header_rewrite(c: &mut Criterion) {
    let trusted = TrustedProxies::new(vec!["10.0.0.0/8".parse().unwrap()]);
    let limits = RequestLimits::default();
    let base = request_headers();
    let host = HeaderValue::from_static("api.example.com");
    c.bench_function("header_rewrite/untrusted_peer", |b| {
        b.iter(|| {
            let mut h = base.clone();
            limits.check_head(32, &h, limits.max_body_bytes).unwrap();
            hop::strip(&mut h, true);
            let client = forwarded::resolve_client("203.0.113.9".parse().unwrap(), &h, &trusted);
            forwarded::apply(&mut h, &Hop { client, scheme: "http", host: Some(&host), peer_value: None });
            black_box(h)
        });
    });
}

criterion_group!(benches, route_match, header_rewrite);
criterion_main!(benches);
