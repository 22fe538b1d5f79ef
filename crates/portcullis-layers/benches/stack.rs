//! The whole layer stack per request (context, limits, route, forward, reject
//! path) in front of a no-op proxy: the gateway's own cost per request,
//! without sockets.
#![allow(clippy::unwrap_used, clippy::expect_used)] // benchmark set-up, like tests

use std::convert::Infallible;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use http::{Request, Response};
use portcullis_layers::{AuthMode, Body, ConnInfo, EventSink, RouteInfo, StackConfig, empty, stack};
use portcullis_policy::SecurityEvent;
use portcullis_policy::forwarded::TrustedProxies;
use portcullis_policy::limits::RequestLimits;
use portcullis_policy::route::{PathPattern, RouteEntry, RouteTable};

#[derive(Debug)]
struct Discard;

impl EventSink for Discard {
    fn emit(&self, event: SecurityEvent) {
        std::hint::black_box(event);
    }
}

fn config() -> StackConfig {
    let entries = (0..20)
        .map(|i| RouteEntry {
            host: None,
            path: PathPattern::parse(&format!("/svc{i}/**")).unwrap(),
            methods: None,
            value: Arc::new(RouteInfo {
                name: Arc::from(format!("svc{i}")),
                upstream: 0,
                upstream_name: Arc::from("up"),
                auth: AuthMode::Public,
                identity: portcullis_layers::identity::UpstreamIdentity::Headers,
                ..RouteInfo::default()
            }),
        })
        .collect();
    StackConfig {
        trusted_proxies: TrustedProxies::default(),
        limits: RequestLimits::default(),
        routes: Arc::new(RouteTable::new(entries)),
        events: Arc::new(Discard),
        access_log: false,
        sample_allowed_ppm: 0,
        headers: Arc::new(portcullis_policy::headers::HeaderPolicy::strict()),
        cors: None,
        auth: Default::default(),
        paths: portcullis_policy::normalize::PathPolicy::default(),
        roles: Default::default(),
        ip_rules: None,
        limit_store: None,
        login_store: None,
        endpoints: None,
        bans: None,
        banner: None,
        own_endpoints_route: None,
        csrf: None,
    }
}

fn request(path: &str) -> Request<Body> {
    let mut req = Request::get(path)
        .header("host", "api.example.com")
        .header("user-agent", "bench")
        .header("accept", "application/json")
        .body(empty())
        .unwrap();
    req.extensions_mut().insert(ConnInfo::new("192.0.2.1:40000".parse().unwrap(), Arc::from("bench"), "http"));
    req
}

fn bench_stack(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let proxy = tower::service_fn(|_req: Request<Body>| async { Ok::<_, Infallible>(Response::new(empty())) });
    let service = stack(&config(), proxy);
    c.bench_function("stack/allowed_request", |b| {
        b.iter(|| runtime.block_on(service.handle(request("/svc7/items/1"))).unwrap());
    });
    c.bench_function("stack/denied_request", |b| {
        b.iter(|| runtime.block_on(service.handle(request("/nowhere"))).unwrap());
    });
}

criterion_group!(benches, bench_stack);
criterion_main!(benches);
