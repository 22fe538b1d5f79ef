//! Layer tests: the composed stack driven through `Handler::handle`, no sockets.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use portcullis_layers::{
    AuthMode, Body, ConnInfo, EventSink, RequestContext, RouteInfo, StackConfig, deny, empty, full, stack,
};
use portcullis_policy::forwarded::TrustedProxies;
use portcullis_policy::limits::RequestLimits;
use portcullis_policy::route::{PathPattern, RouteEntry, RouteTable};
use portcullis_policy::{Reason, SecurityEvent};

#[derive(Debug, Default)]
struct Events(Mutex<Vec<SecurityEvent>>);

impl EventSink for Events {
    fn emit(&self, event: SecurityEvent) {
        self.0.lock().unwrap().push(event);
    }
}

fn config(events: Arc<Events>) -> StackConfig {
    let route = |path: &str, name: &str| RouteEntry {
        host: None,
        path: PathPattern::parse(path).unwrap(),
        methods: None,
        value: Arc::new(RouteInfo {
            name: Arc::from(name),
            upstream: 0,
            upstream_name: Arc::from("up"),
            auth: AuthMode::Public,
            identity: portcullis_layers::identity::UpstreamIdentity::Headers,
            ..RouteInfo::default()
        }),
    };
    StackConfig {
        trusted_proxies: TrustedProxies::default(),
        limits: RequestLimits { max_uri_bytes: 64, ..RequestLimits::default() },
        routes: Arc::new(RouteTable::new(vec![route("/api/**", "api"), route("/fail", "fail")])),
        events,
        access_log: true,
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

/// A proxy stand-in: echoes what the stack handed it, or fails on /fail.
#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<http::request::Parts>>>);

impl tower::Service<Request<Body>> for Recorder {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Response<Body>, Infallible>>;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Infallible>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let (parts, _) = req.into_parts();
        let fail = parts.uri.path() == "/fail";
        self.0.lock().unwrap().push(parts);
        std::future::ready(Ok(if fail { deny(Reason::UpstreamTimeout) } else { Response::new(full("proxied")) }))
    }
}

fn request(path: &str) -> Request<Body> {
    let mut req = Request::get(path).header("host", "gw.test").body(empty()).unwrap();
    req.extensions_mut().insert(ConnInfo::new("192.0.2.10:5555".parse().unwrap(), Arc::from("l"), "http"));
    req
}

async fn body(response: Response<Body>) -> String {
    String::from_utf8(response.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap()
}

#[tokio::test]
async fn allowed_requests_reach_the_proxy_with_context_and_come_back_untouched() {
    let events = Arc::new(Events::default());
    let recorder = Recorder::default();
    let service = stack(&config(events.clone()), recorder.clone());
    let response = service.handle(request("/api/x")).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let id = response.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(body(response).await, "proxied");
    let seen = recorder.0.lock().unwrap();
    let parts = &seen[0];
    assert_eq!(parts.headers["x-request-id"], id.as_str());
    assert_eq!(parts.headers["x-forwarded-for"], "192.0.2.10");
    assert_eq!(parts.extensions.get::<RequestContext>().unwrap().client.ip.to_string(), "192.0.2.10");
    assert_eq!(&*parts.extensions.get::<Arc<RouteInfo>>().unwrap().name, "api");
    assert!(events.0.lock().unwrap().is_empty(), "no event for an allowed request");
}

#[tokio::test]
async fn each_denial_is_rendered_once_with_one_event() {
    let events = Arc::new(Events::default());
    let recorder = Recorder::default();
    let service = stack(&config(events.clone()), recorder.clone());

    // Refused by a layer before the proxy.
    let response = service.handle(request(&format!("/api/{}", "x".repeat(80)))).await.unwrap();
    assert_eq!(response.status(), StatusCode::URI_TOO_LONG);
    let id = response.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(response.headers()["content-type"], "application/json");
    let text = body(response).await;
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&text).unwrap(),
        serde_json::json!({"error": "limit.uri", "request_id": id})
    );

    // Refused by the proxy itself: the route is named in the event.
    let response = service.handle(request("/fail")).await.unwrap();
    assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);

    let events = events.0.lock().unwrap();
    assert_eq!(events.len(), 2);
    assert_eq!((events[0].reason, events[0].route.as_deref()), ("limit.uri", None));
    assert_eq!((events[1].reason, events[1].route.as_deref()), ("upstream.timeout", Some("fail")));
    assert_eq!(events[1].attribution, portcullis_policy::Attribution::Upstream);
    assert_eq!(recorder.0.lock().unwrap().len(), 1, "the refused request never reached the proxy");
}

#[tokio::test]
async fn request_ids_are_unique_and_client_ids_from_untrusted_peers_are_replaced() {
    let events = Arc::new(Events::default());
    let service = stack(&config(events), Recorder::default());
    let mut ids = std::collections::HashSet::new();
    for _ in 0..50 {
        let mut req = request("/api/x");
        req.headers_mut().insert("x-request-id", "chosen-by-client".parse().unwrap());
        let response = service.handle(req).await.unwrap();
        let id = response.headers()["x-request-id"].to_str().unwrap().to_owned();
        assert_ne!(id, "chosen-by-client");
        assert!(ids.insert(id));
    }
}

#[tokio::test]
async fn head_denials_have_no_body() {
    let service = stack(&config(Arc::new(Events::default())), Recorder::default());
    let mut req = request("/nothing-here");
    *req.method_mut() = http::Method::HEAD;
    let response = service.handle(req).await.unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(body(response).await, "");
}
