//! Security response headers on proxied and refused answers.

use crate::common;

use common::*;
use http::{Request, Response};
use hyper::body::Incoming;

async fn leaky_upstream() -> std::net::SocketAddr {
    upstream(|req: Request<Incoming>| async move {
        let html = req.uri().path().ends_with(".html");
        let mut builder = Response::builder()
            .header("x-powered-by", "Express")
            .header("server", "Node")
            .header("x-aspnet-version", "4.0");
        builder = if html {
            builder.header("content-type", "text/html").header("x-frame-options", "DENY")
        } else {
            builder.header("content-type", "application/json")
        };
        builder.body(portcullis_layers::full(if html { "<p>hi</p>" } else { "{}" })).unwrap()
    })
    .await
}

#[tokio::test]
async fn defaults_on_json_and_html_keep_upstream_choices_and_drop_leaks() {
    let up = leaky_upstream().await;
    let gw = gateway(&simple_config(up, "")).await;
    for path in ["/data.json", "/page.html"] {
        let (parts, _) = get(&gw.url(path)).await;
        let h = &parts.headers;
        for leak in ["x-powered-by", "server", "x-aspnet-version"] {
            assert!(!h.contains_key(leak), "{leak} leaked on {path}");
        }
        assert_eq!(h["x-content-type-options"], "nosniff");
        assert_eq!(h["referrer-policy"], "no-referrer");
        assert_eq!(h["cross-origin-opener-policy"], "same-origin");
        assert_eq!(h["cross-origin-resource-policy"], "same-origin");
        assert_eq!(h["origin-agent-cluster"], "?1");
        assert_eq!(h["x-dns-prefetch-control"], "off");
        assert_eq!(h["x-permitted-cross-domain-policies"], "none");
        assert_eq!(h["x-xss-protection"], "0");
        assert!(h["content-security-policy"].to_str().unwrap().contains("object-src 'none'"));
        assert!(h.contains_key("permissions-policy"));
        assert!(!h.contains_key("strict-transport-security"), "no HSTS over plain HTTP");
    }
    let (parts, _) = get(&gw.url("/page.html")).await;
    assert_eq!(parts.headers["x-frame-options"], "DENY", "the upstream's own value is kept");
    let (parts, _) = get(&gw.url("/data.json")).await;
    assert_eq!(parts.headers["x-frame-options"], "SAMEORIGIN");
}

#[tokio::test]
async fn refusals_carry_the_headers_too() {
    let up = leaky_upstream().await;
    let toml = simple_config(up, "").replace("path = \"/**\"", "path = \"/only\"");
    let gw = gateway(&toml).await;
    let (parts, body) = get(&gw.url("/elsewhere")).await;
    assert_denied(&parts, &body, 404, "route.none");
    assert_eq!(parts.headers["x-content-type-options"], "nosniff");
    assert_eq!(parts.headers["content-type"], "application/json");
}

#[tokio::test]
async fn global_and_per_route_changes() {
    let up = leaky_upstream().await;
    let toml = format!(
        r#"
[[listener]]
bind = "127.0.0.1:0"
[[upstream]]
name = "app"
targets = ["http://{up}"]
[[route]]
match = {{ path = "/embed/**" }}
upstream = "app"
auth = "public"
headers = {{ remove = ["x-frame-options"], override = {{ "content-security-policy" = "frame-ancestors https://partner.example" }} }}
[[route]]
match = {{ path = "/**" }}
upstream = "app"
auth = "public"
[headers]
csp = "default-src 'none'"
set = {{ "x-custom-policy" = "on" }}
override = {{ "x-frame-options" = "DENY" }}
remove = ["x-request-trace"]
"#
    );
    let gw = gateway(&toml).await;
    let (parts, _) = get(&gw.url("/page.html")).await;
    assert_eq!(parts.headers["content-security-policy"], "default-src 'none'");
    assert_eq!(parts.headers["x-custom-policy"], "on");
    assert_eq!(parts.headers["x-frame-options"], "DENY");
    let (parts, _) = get(&gw.url("/embed/page.html")).await;
    assert!(!parts.headers.contains_key("x-frame-options"), "removed on this route, even the upstream's");
    assert_eq!(parts.headers["content-security-policy"], "frame-ancestors https://partner.example");
    assert_eq!(parts.headers["x-custom-policy"], "on", "global additions still apply");
}

#[tokio::test]
async fn csp_report_only_and_hsts_settings() {
    let up = leaky_upstream().await;
    let extra = "[headers]\ncsp_report_only = true\nhsts = { max_age = \"365days\", include_subdomains = false, preload = true }";
    let toml =
        simple_config(up, extra).replace("bind = \"127.0.0.1:0\"", "bind = \"127.0.0.1:0\"\ntls = \"self-signed\"");
    let gw = gateway(&toml).await;
    let client = common::tls::any_certificate_client(&[b"http/1.1"]);
    let tcp = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let tls = client.connect(rustls::pki_types::ServerName::try_from("localhost").unwrap(), tcp).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls)).await.unwrap();
    tokio::spawn(conn);
    let response = sender
        .send_request(Request::get("/x").header("host", "localhost").body(portcullis_layers::empty()).unwrap())
        .await
        .unwrap();
    let h = response.headers();
    assert_eq!(h["strict-transport-security"], "max-age=31536000; preload");
    assert!(h.contains_key("content-security-policy-report-only"));
    assert!(!h.contains_key("content-security-policy"));
}

#[tokio::test]
async fn cors_preflights_are_answered_by_the_gateway() {
    let (up, seen) = named_upstream("a").await;
    let extra = "[cors]\norigins = [\"https://app.example.com\", \"https://*.example.org\"]\nmethods = [\"GET\", \"POST\"]\nheaders = [\"content-type\", \"authorization\"]\nexpose = [\"x-request-id\"]\ncredentials = true\nmax_age = \"10m\"";
    let gw = gateway(&simple_config(up, extra)).await;
    let preflight = |origin: &'static str, method: &'static str, headers: &'static str| {
        let url = gw.url("/api/orders");
        async move {
            let mut req = Request::builder()
                .method("OPTIONS")
                .uri(url)
                .header("origin", origin)
                .header("access-control-request-method", method);
            if !headers.is_empty() {
                req = req.header("access-control-request-headers", headers);
            }
            send(req.body(portcullis_layers::empty()).unwrap()).await
        }
    };
    let (parts, _) = preflight("https://app.example.com", "POST", "content-type").await;
    assert_eq!(parts.status, 204);
    assert_eq!(parts.headers["access-control-allow-origin"], "https://app.example.com");
    assert_eq!(parts.headers["access-control-allow-credentials"], "true");
    assert_eq!(parts.headers["access-control-max-age"], "600");
    assert!(parts.headers["vary"].to_str().unwrap().contains("Origin"));
    let (parts, _) = preflight("https://shop.example.org", "GET", "").await;
    assert_eq!(parts.status, 204);

    let (parts, body) = preflight("https://evil.example", "POST", "").await;
    assert_denied(&parts, &body, 403, "cors.origin");
    let (parts, body) = preflight("https://app.example.com", "DELETE", "").await;
    assert_denied(&parts, &body, 403, "cors.method");
    let (parts, body) = preflight("https://app.example.com", "POST", "x-internal-debug").await;
    assert_denied(&parts, &body, 403, "cors.header");
    assert!(seen.lock().unwrap().is_empty(), "preflights never reach the upstream");
    assert_eq!(gw.events.reasons(), ["cors.origin", "cors.method", "cors.header"]);

    let (parts, _) = get_with(&gw.url("/api/orders"), &[("origin", "https://app.example.com")]).await;
    assert_eq!(parts.headers["access-control-allow-origin"], "https://app.example.com");
    assert_eq!(parts.headers["access-control-expose-headers"], "x-request-id");
    let (parts, _) = get_with(&gw.url("/api/orders"), &[("origin", "https://evil.example")]).await;
    assert_eq!(parts.status, 200, "actual requests are not blocked: the browser enforces CORS");
    assert!(!parts.headers.contains_key("access-control-allow-origin"));
    assert_eq!(parts.headers["vary"], "Origin");
}

#[tokio::test]
async fn csp_violation_reports_become_events() {
    let (up, seen) = named_upstream("a").await;
    let gw = gateway(&simple_config(up, "[headers]\ncsp_report = true")).await;
    let (parts, _) = get(&gw.url("/page")).await;
    let csp = parts.headers["content-security-policy"].to_str().unwrap();
    assert!(csp.ends_with("; report-uri /.portcullis/csp-report"), "{csp}");

    let report = r#"{"csp-report":{"document-uri":"https://shop.example/cart?session=s3cret","effective-directive":"script-src-elem","blocked-uri":"https://evil.example/x.js?t=1"}}"#;
    let req = Request::post(gw.url("/.portcullis/csp-report"))
        .header("content-type", "application/csp-report")
        .body(full_body(report))
        .unwrap();
    let (parts, _) = send(req).await;
    assert_eq!(parts.status, 204);
    let event = gw.events.last().unwrap();
    assert_eq!((event.reason, event.defence), ("csp.violation", "csp"));
    assert_eq!(event.action, portcullis_policy::Action::Log);
    let detail = event.detail.unwrap();
    assert!(detail.contains("directive=script-src-elem blocked=https://evil.example/x.js"), "{detail}");
    assert!(!detail.contains("s3cret"), "query strings never reach events");

    let req = Request::post(gw.url("/.portcullis/csp-report")).body(full_body("hello")).unwrap();
    let (parts, body) = send(req).await;
    assert_denied(&parts, &body, 400, "request.malformed");
    let req = Request::post(gw.url("/.portcullis/csp-report")).body(full_body(vec![b' '; 70_000])).unwrap();
    let (parts, body) = send(req).await;
    assert_denied(&parts, &body, 413, "limit.body");
    // Only POST is served; another method is an unrouted path.
    let (parts, body) = get(&gw.url("/.portcullis/csp-report")).await;
    assert_denied(&parts, &body, 404, "route.none");
    assert_eq!(seen.lock().unwrap().len(), 1, "reports never reach the upstream");
}

#[tokio::test]
async fn hsts_behind_a_trusted_tls_terminating_proxy() {
    let up = leaky_upstream().await;
    let gw = gateway(&simple_config(up, "[server]\ntrusted_proxies = [\"127.0.0.1\"]")).await;
    let (parts, _) = get_with(&gw.url("/x"), &[("x-forwarded-proto", "https")]).await;
    assert_eq!(parts.headers["strict-transport-security"], "max-age=63072000; includeSubDomains");
    let (parts, _) = get(&gw.url("/x")).await;
    assert!(!parts.headers.contains_key("strict-transport-security"));
}

#[tokio::test]
async fn head_requests_to_the_demo_work_over_http2() {
    let toml = "[[listener]]\nbind = \"127.0.0.1:0\"\n[[upstream]]\nname = \"demo\"\ntargets = [\"builtin:demo\"]\n[[route]]\nmatch = { path = \"/**\" }\nupstream = \"demo\"\nauth = \"public\"\n";
    let gw = gateway(toml).await;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<portcullis_layers::Body>();
    let req = Request::head(gw.url("/health")).body(portcullis_layers::empty()).unwrap();
    let response = client.request(req).await.unwrap();
    assert_eq!(response.status(), 200);
    let body = http_body_util::BodyExt::collect(response.into_body()).await.unwrap().to_bytes();
    assert!(body.is_empty());
}
