//! Integration tests: the gateway in process, in front of real HTTP servers
//! on loopback.

use crate::common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use futures_util::StreamExt;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test]
async fn routes_by_host_and_longest_path_and_refuses_the_rest() {
    let (a, _) = named_upstream("a").await;
    let (b, _) = named_upstream("b").await;
    let (c, _) = named_upstream("c").await;
    let gw = gateway(&format!(
        r#"
[[listener]]
bind = "127.0.0.1:0"
[[upstream]]
name = "a"
targets = ["http://{a}"]
[[upstream]]
name = "b"
targets = ["http://{b}"]
[[upstream]]
name = "c"
targets = ["http://{c}"]
[[route]]
name = "api"
match = {{ path = "/api/**" }}
upstream = "a"
auth = "public"
[[route]]
name = "special"
match = {{ path = "/api/special/**", methods = ["GET"] }}
upstream = "b"
auth = "public"
[[route]]
name = "admin-host"
match = {{ host = "admin.example.com", path = "/api/**" }}
upstream = "c"
auth = "public"
"#
    ))
    .await;

    let (_, body) = get(&gw.url("/api/x")).await;
    assert_eq!(body, "a /api/x");
    let (_, body) = get(&gw.url("/api/special/1")).await;
    assert_eq!(body, "b /api/special/1");
    // Methods are part of the match: POST falls through to the less specific route.
    let (_, body) = send(Request::post(gw.url("/api/special/1")).body(portcullis_layers::empty()).unwrap()).await;
    assert_eq!(body, "a /api/special/1");
    let req = Request::get(gw.url("/api/special/1"))
        .header("host", "Admin.Example.com:8443")
        .body(portcullis_layers::empty())
        .unwrap();
    let (_, body) = send(req).await;
    assert_eq!(body, "c /api/special/1");

    let (parts, body) = get(&gw.url("/other")).await;
    assert_denied(&parts, &body, 404, "route.none");
    let event = gw.events.last().unwrap();
    assert_eq!((event.reason, event.defence, event.status), ("route.none", "route", 404));
    assert_eq!(event.request_id, parts.headers["x-request-id"].to_str().unwrap());
    assert_eq!(event.path, "/other");
}

#[tokio::test]
async fn method_not_allowed_names_the_allowed_methods() {
    let (a, _) = named_upstream("a").await;
    let gw = gateway(&format!(
        r#"
[[listener]]
bind = "127.0.0.1:0"
[[upstream]]
name = "a"
targets = ["http://{a}"]
[[route]]
match = {{ path = "/orders/**", methods = ["GET", "POST"] }}
upstream = "a"
auth = "public"
"#
    ))
    .await;
    let (parts, body) = send(Request::delete(gw.url("/orders/1")).body(portcullis_layers::empty()).unwrap()).await;
    assert_denied(&parts, &body, 405, "route.method");
    assert_eq!(parts.headers["allow"], "GET, POST");
}

#[tokio::test]
async fn hop_by_hop_headers_are_stripped_both_ways() {
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = seen.clone();
    let up = upstream(move |req: Request<Incoming>| {
        let record = record.clone();
        async move {
            record.lock().unwrap().push(req.headers().clone());
            Response::builder()
                .header("connection", "x-upstream-private")
                .header("x-upstream-private", "1")
                .header("keep-alive", "timeout=5")
                .header("proxy-authenticate", "Basic")
                .body(portcullis_layers::full("ok"))
                .unwrap()
        }
    })
    .await;
    let gw = gateway(&simple_config(up, "")).await;
    let req = Request::get(gw.url("/x"))
        .header("connection", "keep-alive, x-private, x-forwarded-for")
        .header("x-private", "secret")
        .header("keep-alive", "timeout=5")
        .header("te", "trailers")
        .header("proxy-authorization", "Basic dXNlcjpwYXNz")
        .header("proxy-connection", "keep-alive")
        .header("upgrade", "h2c")
        .header("x-kept", "yes")
        .body(portcullis_layers::empty())
        .unwrap();
    let (parts, body) = send(req).await;
    assert_eq!(body, "ok");
    let headers = seen.lock().unwrap()[0].clone();
    for gone in ["x-private", "keep-alive", "te", "proxy-authorization", "proxy-connection", "upgrade"] {
        assert!(!headers.contains_key(gone), "{gone} reached the upstream: {headers:?}");
    }
    assert_eq!(headers["x-kept"], "yes");
    // Naming X-Forwarded-For in Connection must not remove the gateway's own.
    assert_eq!(headers["x-forwarded-for"], "127.0.0.1");
    for gone in ["x-upstream-private", "keep-alive", "proxy-authenticate"] {
        assert!(!parts.headers.contains_key(gone), "{gone} reached the client");
    }
}

#[tokio::test]
async fn forwarding_headers_from_an_untrusted_peer_are_replaced() {
    let (up, seen) = named_upstream("a").await;
    let gw = gateway(&simple_config(up, "")).await;
    let (parts, _) = get_with(
        &gw.url("/x"),
        &[
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "evil.example"),
            ("forwarded", "for=6.6.6.6"),
            ("x-real-ip", "6.6.6.6"),
            ("x-request-id", "client-chosen-id"),
        ],
    )
    .await;
    let h = seen.lock().unwrap()[0].clone();
    assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], gw.addr.to_string());
    assert_eq!(h["forwarded"], format!("for=127.0.0.1;host=\"{}\";proto=http", gw.addr));
    assert_eq!(h["x-real-ip"], "127.0.0.1");
    let id = h["x-request-id"].to_str().unwrap();
    assert_ne!(id, "client-chosen-id");
    assert_eq!(parts.headers["x-request-id"], id);
}

#[tokio::test]
async fn forwarding_headers_from_a_trusted_proxy_are_kept_and_extended() {
    let (up, seen) = named_upstream("a").await;
    let gw = gateway(&simple_config(up, "[server]\ntrusted_proxies = [\"127.0.0.1/32\"]")).await;
    let (parts, _) = get_with(
        &gw.url("/x"),
        &[
            ("x-forwarded-for", "198.51.100.7"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "shop.example"),
            ("x-request-id", "lb-1234"),
        ],
    )
    .await;
    let h = seen.lock().unwrap()[0].clone();
    assert_eq!(h["x-forwarded-for"], "198.51.100.7, 127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "https");
    assert_eq!(h["x-forwarded-host"], "shop.example");
    assert_eq!(h["x-real-ip"], "198.51.100.7");
    assert_eq!(h["x-request-id"], "lb-1234");
    assert_eq!(parts.headers["x-request-id"], "lb-1234");
}

#[tokio::test]
async fn events_record_the_client_resolved_through_trusted_proxies() {
    let (up, _) = named_upstream("a").await;
    let gw = gateway(&format!(
        r#"
[server]
trusted_proxies = ["127.0.0.1"]
[[listener]]
bind = "127.0.0.1:0"
[[upstream]]
name = "app"
targets = ["http://{up}"]
[[route]]
match = {{ path = "/only" }}
upstream = "app"
auth = "public"
"#
    ))
    .await;
    let (parts, _) = get_with(&gw.url("/elsewhere?token=secret"), &[("x-forwarded-for", "203.0.113.50")]).await;
    assert_eq!(parts.status, 404);
    let event = gw.events.last().unwrap();
    assert_eq!(event.client_ip.to_string(), "203.0.113.50");
    let line = event.to_json_line();
    assert!(!line.contains("secret"), "query string leaked into the event: {line}");
}

#[tokio::test]
async fn unreachable_upstream_is_502_without_internals() {
    // A port that was just free: connection refused.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let gw = gateway(&simple_config(closed, "")).await;
    let started = std::time::Instant::now();
    let (parts, body) = get(&gw.url("/x")).await;
    assert_denied(&parts, &body, 502, "upstream.connect");
    assert!(!String::from_utf8_lossy(&body).contains("127.0.0.1"));
    // Well within the 5 s connect timeout (refusal is immediate); generous bound.
    assert!(started.elapsed() < Duration::from_secs(5));
    let event = gw.events.last().unwrap();
    assert_eq!(event.attribution, portcullis_policy::Attribution::Upstream);
    assert!(event.detail.unwrap().contains("127.0.0.1"), "the event keeps the detail for operators");
}

#[tokio::test]
async fn slow_upstream_is_504() {
    let up = upstream(|_req: Request<Incoming>| async {
        tokio::time::sleep(Duration::from_secs(5)).await;
        Response::new(portcullis_layers::full("late"))
    })
    .await;
    let toml = simple_config(up, "").replace("targets = [", "response_timeout = \"300ms\"\ntargets = [");
    let gw = gateway(&toml).await;
    let (parts, body) = get(&gw.url("/x")).await;
    assert_denied(&parts, &body, 504, "upstream.timeout");
}

#[tokio::test]
async fn failed_target_is_skipped_and_bodyless_requests_retried() {
    let (live, seen) = named_upstream("live").await;
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let toml = simple_config(live, "").replace(
        &format!("targets = [\"http://{live}\"]"),
        &format!("targets = [\"http://{dead}\", \"http://{live}\"]"),
    );
    let gw = gateway(&toml).await;
    for _ in 0..6 {
        let (parts, body) = get(&gw.url("/x")).await;
        assert_eq!(parts.status, 200, "{body:?}");
        assert_eq!(body, "live /x");
    }
    assert_eq!(seen.lock().unwrap().len(), 6);
}

#[tokio::test]
async fn size_limits_answer_413_414_431() {
    let (up, seen) = named_upstream("a").await;
    let extra =
        "[server]\nmax_body_bytes = 1000\nmax_uri_bytes = 300\nmax_header_count = 20\nmax_header_bytes = \"2KiB\"";
    let gw = gateway(&simple_config(up, extra)).await;

    let req = Request::post(gw.url("/x")).body(full_body(vec![b'a'; 1001])).unwrap();
    let (parts, body) = send(req).await;
    assert_denied(&parts, &body, 413, "limit.body");

    // Chunked (no Content-Length): refused when the stream crosses the limit.
    let chunks = futures_util::stream::iter(
        (0..20).map(|_| Ok::<_, portcullis_layers::BoxError>(Frame::data(Bytes::from(vec![b'b'; 100])))),
    );
    let req = Request::post(gw.url("/x")).body(StreamBody::new(chunks).boxed_unsync()).unwrap();
    let (parts, body) = send(req).await;
    assert_denied(&parts, &body, 413, "limit.body");

    let req = Request::post(gw.url("/x")).body(full_body(vec![b'a'; 1000])).unwrap();
    let (parts, _) = send(req).await;
    assert_eq!(parts.status, 200);

    let (parts, body) = get(&gw.url(&format!("/{}", "u".repeat(400)))).await;
    assert_denied(&parts, &body, 414, "limit.uri");

    let mut req = Request::get(gw.url("/x"));
    for i in 0..30 {
        req = req.header(format!("x-h{i}"), "v");
    }
    let (parts, body) = send(req.body(portcullis_layers::empty()).unwrap()).await;
    assert_denied(&parts, &body, 431, "limit.headers");

    let req = Request::get(gw.url("/x")).header("x-big", "v".repeat(3000)).body(portcullis_layers::empty()).unwrap();
    let (parts, body) = send(req).await;
    assert_denied(&parts, &body, 431, "limit.headers");

    // The declared-too-large body never reached the upstream; the chunked one
    // started streaming (nothing can know its size in advance) and was cut at
    // the limit; the one within the limit went through.
    assert_eq!(seen.lock().unwrap().len(), 2);
    let reasons = gw.events.reasons();
    assert_eq!(reasons, ["limit.body", "limit.body", "limit.uri", "limit.headers", "limit.headers"]);
}

#[tokio::test]
async fn per_route_body_limit_overrides_the_global_one() {
    let (up, _) = named_upstream("a").await;
    let toml = format!(
        r#"
[server]
max_body_bytes = 100
[[listener]]
bind = "127.0.0.1:0"
[[upstream]]
name = "app"
targets = ["http://{up}"]
[[route]]
match = {{ path = "/upload" }}
upstream = "app"
auth = "public"
max_body_bytes = "1MiB"
[[route]]
match = {{ path = "/**" }}
upstream = "app"
auth = "public"
"#
    );
    let gw = gateway(&toml).await;
    let (parts, _) = send(Request::post(gw.url("/upload")).body(full_body(vec![0u8; 50_000])).unwrap()).await;
    assert_eq!(parts.status, 200);
    let (parts, body) = send(Request::post(gw.url("/other")).body(full_body(vec![0u8; 101])).unwrap()).await;
    assert_denied(&parts, &body, 413, "limit.body");
}

#[tokio::test]
async fn slowloris_client_is_cut_at_the_header_timeout() {
    let (up, seen) = named_upstream("a").await;
    let gw = gateway(&simple_config(up, "[server]\nheader_read_timeout = \"1s\"")).await;
    let mut stream = TcpStream::connect(gw.addr).await.unwrap();
    let head = b"GET /x HTTP/1.1\r\nHost: a\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    // One byte every 250 ms: the whole head would take ~17 s.
    let mut closed = false;
    for byte in head {
        if stream.write_all(&[*byte]).await.is_err() {
            closed = true;
            break;
        }
        let mut buf = [0u8; 512];
        match tokio::time::timeout(Duration::from_millis(250), stream.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => {
                closed = true;
                break;
            }
            Ok(Ok(_)) => {
                // hyper may answer 408 before closing; keep reading until EOF.
                let mut rest = Vec::new();
                let _ = tokio::time::timeout(Duration::from_secs(2), stream.read_to_end(&mut rest)).await;
                closed = true;
                break;
            }
            Err(_) => {}
        }
    }
    assert!(closed, "the gateway kept a slowloris connection open past the header timeout");
    assert!(seen.lock().unwrap().is_empty());
    eventually("slowloris event", Duration::from_secs(5), || gw.events.reasons().contains(&"conn.header_timeout"))
        .await;
    let event = gw.events.last().unwrap();
    assert_eq!((event.status, event.client_ip.to_string().as_str()), (408, "127.0.0.1"));
}

#[tokio::test]
async fn bytes_that_are_not_http_are_refused_with_an_event() {
    let (up, seen) = named_upstream("a").await;
    let gw = gateway(&simple_config(up, "")).await;
    let mut stream = TcpStream::connect(gw.addr).await.unwrap();
    stream.write_all(b"GET /x HTTP/1.1\r\nHost a-without-colon\r\n\r\n").await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut out)).await;
    assert!(String::from_utf8_lossy(&out).starts_with("HTTP/1.1 400"), "{}", String::from_utf8_lossy(&out));
    eventually("malformed event", Duration::from_secs(5), || gw.events.reasons().contains(&"conn.malformed")).await;
    assert!(seen.lock().unwrap().is_empty());
}

#[tokio::test]
async fn idle_keep_alive_connection_is_closed() {
    let (up, _) = named_upstream("a").await;
    let gw = gateway(&simple_config(up, "[server]\nidle_timeout = \"500ms\"\nheader_read_timeout = \"30s\"")).await;
    let mut stream = TcpStream::connect(gw.addr).await.unwrap();
    stream.write_all(b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n").await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = stream.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    // Then stay idle: the gateway closes the connection (EOF) on its own.
    let eof = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return true,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert_eq!(eof, Ok(true));
}

#[tokio::test]
async fn idle_connections_closed_by_the_header_timer_are_not_security_events() {
    let (up, _) = named_upstream("a").await;
    let gw = gateway(&simple_config(up, "[server]\nheader_read_timeout = \"300ms\"\nidle_timeout = \"1s\"")).await;
    // A preconnected socket that never sends, and a keep-alive one after a request.
    let mut silent = TcpStream::connect(gw.addr).await.unwrap();
    let mut used = TcpStream::connect(gw.addr).await.unwrap();
    used.write_all(b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n").await.unwrap();
    let mut buf = vec![0u8; 4096];
    assert!(used.read(&mut buf).await.unwrap() > 0);
    for stream in [&mut silent, &mut used] {
        let mut rest = Vec::new();
        let closed = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut rest)).await;
        assert!(closed.is_ok(), "connection was not closed");
    }
    assert!(gw.events.reasons().is_empty(), "{:?}", gw.events.reasons());
}

#[tokio::test]
async fn http2_cleartext_is_served_and_forwarded_as_http1() {
    let (up, seen) = named_upstream("a").await;
    let gw = gateway(&simple_config(up, "")).await;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<portcullis_layers::Body>();
    let response = client.request(Request::get(gw.url("/h2")).body(portcullis_layers::empty()).unwrap()).await.unwrap();
    assert_eq!(response.version(), http::Version::HTTP_2);
    assert_eq!(response.status(), StatusCode::OK);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "a /h2");
    // The client's :authority becomes the upstream's Host.
    assert_eq!(seen.lock().unwrap()[0]["host"], gw.addr.to_string());
}

#[tokio::test]
async fn leak_free_response_passes_upstream_headers_and_adds_request_id() {
    let (up, _) = named_upstream("a").await;
    let gw = gateway(&simple_config(up, "")).await;
    let (parts, _) = get(&gw.url("/x")).await;
    assert!(parts.headers.contains_key("x-request-id"));
}

#[tokio::test]
async fn websocket_upgrade_is_passed_through() {
    use tokio_tungstenite::tungstenite::Message;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else { return };
                while let Some(Ok(msg)) = ws.next().await {
                    if msg.is_text() || msg.is_binary() {
                        let _ = futures_util::SinkExt::send(&mut ws, msg).await;
                    }
                }
            });
        }
    });
    // A real WebSocket client, refused on a route without `websocket = true`…
    let closed = gateway(&simple_config(up, "")).await;
    match tokio_tungstenite::connect_async(format!("ws://{}/ws", closed.addr)).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => assert_eq!(response.status(), 400),
        other => panic!("expected a 400 answer, got {:?}", other.map(|(_, r)| r.status())),
    }
    assert_eq!(closed.events.reasons(), ["upgrade.not_allowed"]);
    // …and tunnelled on one with it.
    let config = simple_config(up, "").replace("auth = \"public\"", "auth = \"public\"\nwebsocket = true");
    let gw = gateway(&config).await;
    let (mut ws, response) = tokio_tungstenite::connect_async(format!("ws://{}/ws", gw.addr)).await.unwrap();
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    for i in 0..3 {
        futures_util::SinkExt::send(&mut ws, Message::text(format!("hello {i}"))).await.unwrap();
        let echo = tokio::time::timeout(Duration::from_secs(5), ws.next()).await.unwrap().unwrap().unwrap();
        assert_eq!(echo.into_text().unwrap().as_str(), format!("hello {i}"));
    }
}

#[tokio::test]
async fn reload_swaps_routes_atomically_and_refuses_listener_changes() {
    let (a, _) = named_upstream("a").await;
    let (b, _) = named_upstream("b").await;
    let gw = gateway(&simple_config(a, "")).await;
    assert_eq!(get(&gw.url("/x")).await.1, "a /x");

    let (new, _dir) = config(&simple_config(b, ""));
    gw.server.reload(new).await.unwrap();
    assert_eq!(get(&gw.url("/x")).await.1, "b /x");

    let (other_listener, _dir) = config(&simple_config(a, "").replace("127.0.0.1:0", "127.0.0.1:1"));
    let err = gw.server.reload(other_listener).await.unwrap_err();
    assert!(err.to_string().contains("listeners changed"), "{err}");
    assert_eq!(get(&gw.url("/x")).await.1, "b /x");
}

#[tokio::test]
async fn large_bodies_stream_in_both_directions() {
    // 20 MB each way in process (the 200 MB RSS check runs against the binary).
    let up = upstream(|req: Request<Incoming>| async move {
        let mut body = req.into_body();
        let mut received = 0u64;
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame.unwrap().into_data() {
                received += data.len() as u64;
            }
        }
        let chunks = futures_util::stream::iter(
            (0..320).map(|_| Ok::<_, portcullis_layers::BoxError>(Frame::data(Bytes::from(vec![7u8; 64 * 1024])))),
        );
        Response::builder()
            .header("x-received", received.to_string())
            .body(StreamBody::new(chunks).boxed_unsync())
            .unwrap()
    })
    .await;
    let gw = gateway(&simple_config(up, "[server]\nmax_body_bytes = \"1GiB\"")).await;
    let chunks = futures_util::stream::iter(
        (0..320).map(|_| Ok::<_, portcullis_layers::BoxError>(Frame::data(Bytes::from(vec![1u8; 64 * 1024])))),
    );
    let req = Request::post(gw.url("/up")).body(StreamBody::new(chunks).boxed_unsync()).unwrap();
    let (parts, body) = send(req).await;
    assert_eq!(parts.status, 200);
    assert_eq!(parts.headers["x-received"], (320 * 64 * 1024).to_string());
    assert_eq!(body.len(), 320 * 64 * 1024);
}

#[tokio::test]
async fn upstream_that_never_accepts_is_502_at_the_connect_timeout() {
    // A listener with a full accept queue: the kernel drops further SYNs, so
    // the gateway's connection attempt hangs until its connect timeout.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(0).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..4 {
        if let Ok(Ok(s)) = tokio::time::timeout(Duration::from_millis(200), TcpStream::connect(addr)).await {
            fillers.push(s);
        }
    }
    let toml = simple_config(addr, "")
        .replace("targets = [", "connect_timeout = \"300ms\"\nresponse_timeout = \"20s\"\ntargets = [");
    let gw = gateway(&toml).await;
    let started = std::time::Instant::now();
    let (parts, body) = get(&gw.url("/x")).await;
    assert_denied(&parts, &body, 502, "upstream.connect");
    // Answered by the connect timeout, not the 20 s response timeout.
    assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
    let detail = gw.events.last().unwrap().detail.unwrap();
    assert!(detail.contains("connect timed out"), "a connect timeout, not a refusal: {detail}");
    drop(listener);
}

#[tokio::test]
async fn idle_http2_connection_is_closed() {
    let (up, _) = named_upstream("a").await;
    let gw = gateway(&simple_config(up, "[server]\nidle_timeout = \"500ms\"")).await;
    let stream = TcpStream::connect(gw.addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    let conn = tokio::spawn(conn);
    let response =
        sender.send_request(Request::get(gw.url("/x")).body(portcullis_layers::empty()).unwrap()).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    drop(response);
    // The gateway sends GOAWAY and closes once no stream has been open for the idle timeout.
    let ended = tokio::time::timeout(Duration::from_secs(10), conn).await;
    assert!(ended.is_ok(), "idle HTTP/2 connection was kept open");
}

#[tokio::test]
async fn the_gateways_request_id_does_not_count_against_the_header_limit() {
    let (up, seen) = named_upstream("a").await;
    let gw = gateway(&simple_config(up, "[server]\nmax_header_count = 5")).await;
    let exchange = |head: &'static str| async move {
        let mut stream = TcpStream::connect(gw.addr).await.unwrap();
        stream.write_all(head.as_bytes()).await.unwrap();
        let mut out = vec![0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut out)).await.unwrap().unwrap();
        String::from_utf8_lossy(&out[..n]).into_owned()
    };
    let five = exchange("GET /x HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 1\r\nC: 1\r\nD: 1\r\n\r\n").await;
    assert!(five.starts_with("HTTP/1.1 200"), "{five}");
    let six = exchange("GET /x HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 1\r\nC: 1\r\nD: 1\r\nE: 1\r\n\r\n").await;
    assert!(six.starts_with("HTTP/1.1 431"), "{six}");
    assert!(seen.lock().unwrap()[0].contains_key("x-request-id"));
}

#[tokio::test]
async fn headers_named_in_connection_cannot_sway_client_resolution() {
    let (up, seen) = named_upstream("a").await;
    let gw = gateway(&simple_config(up, "[server]\ntrusted_proxies = [\"127.0.0.1\"]")).await;
    let req = Request::get(gw.url("/x"))
        .header("connection", "x-forwarded-for")
        .header("x-forwarded-for", "198.51.100.7")
        .body(portcullis_layers::empty())
        .unwrap();
    let _ = send(req).await;
    let h = seen.lock().unwrap()[0].clone();
    // The chain was connection-scoped, so it is gone before anything reads it.
    assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    assert_eq!(h["x-real-ip"], "127.0.0.1");
}

#[tokio::test]
async fn upstream_connections_are_reused() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = listener.local_addr().unwrap();
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|_req: Request<Incoming>| async {
                    Ok::<_, std::convert::Infallible>(Response::new(portcullis_layers::full("pooled")))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    let gw = gateway(&simple_config(up, "[server]\nworkers = 1")).await;
    for _ in 0..20 {
        let (parts, body) = get(&gw.url("/x")).await;
        assert_eq!((parts.status.as_u16(), &body[..]), (200, &b"pooled"[..]));
    }
    assert_eq!(
        accepted.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "20 sequential requests, one upstream connection"
    );
}

#[tokio::test]
async fn idle_upstream_connections_are_closed_after_the_pool_idle_timeout() {
    // A backend that never closes a keep-alive connection itself: only the
    // gateway's pool_idle_timeout can give its sockets back.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = listener.local_addr().unwrap();
    let open = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = open.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let count = count.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|_req: Request<Incoming>| async {
                    Ok::<_, std::convert::Infallible>(Response::new(portcullis_layers::full("ok")))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
                count.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
            });
        }
    });
    let gw = gateway(&format!(
        r#"
[server]
workers = 1

[[listener]]
name = "test"
bind = "127.0.0.1:0"

[[upstream]]
name = "app"
targets = ["http://{up}"]
pool_idle_timeout = "200ms"

[[route]]
match = {{ path = "/**" }}
upstream = "app"
auth = "public"
"#
    ))
    .await;
    // Requests at once take several connections; afterwards all are idle.
    let url = gw.url("/x");
    let answers = futures_util::future::join_all((0..4).map(|_| get(&url))).await;
    assert!(answers.iter().all(|(parts, _)| parts.status == 200));
    // (That the pool keeps them between requests is upstream_connections_are_reused.)
    eventually("the idle upstream connections to close", Duration::from_secs(10), || {
        open.load(std::sync::atomic::Ordering::SeqCst) == 0
    })
    .await;
    // The pool still works, and lets go again.
    assert_eq!(get(&gw.url("/x")).await.0.status, 200);
    eventually("the second idle connection to close", Duration::from_secs(10), || {
        open.load(std::sync::atomic::Ordering::SeqCst) == 0
    })
    .await;
}

#[tokio::test]
async fn an_upstream_closing_idle_connections_causes_no_errors() {
    // Answers one request per connection, keep-alive in words only, then
    // closes the socket shortly after: the pooled connection dies while idle.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                if stream.read(&mut buf).await.unwrap_or(0) == 0 {
                    return;
                }
                let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").await;
                tokio::time::sleep(Duration::from_millis(30)).await;
            });
        }
    });
    let gw = gateway(&simple_config(up, "[server]\nworkers = 1")).await;
    for _ in 0..10 {
        let (parts, body) = get(&gw.url("/x")).await;
        assert_eq!((parts.status.as_u16(), &body[..]), (200, &b"ok"[..]), "{:?}", gw.events.reasons());
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    // An upstream that announces `Connection: close` is never reused, however fast the requests come.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let closing = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                if stream.read(&mut buf).await.unwrap_or(0) > 0 {
                    let _ =
                        stream.write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok").await;
                }
            });
        }
    });
    let gw = gateway(&simple_config(closing, "[server]\nworkers = 1")).await;
    for _ in 0..20 {
        let (parts, _) = get(&gw.url("/x")).await;
        assert_eq!(parts.status, 200, "{:?}", gw.events.reasons());
    }
}

#[tokio::test]
async fn upstream_gets_origin_form_and_a_host_even_from_http10_clients() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = listener.local_addr().unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let n = stream.read(&mut buf).await.unwrap_or(0);
                let _ = tx.send(String::from_utf8_lossy(&buf[..n]).into_owned());
                let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok").await;
            });
        }
    });
    let gw = gateway(&simple_config(up, "")).await;
    let mut stream = TcpStream::connect(gw.addr).await.unwrap();
    stream.write_all(b"GET /x?y=1 HTTP/1.0\r\n\r\n").await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut out)).await;
    assert!(String::from_utf8_lossy(&out).starts_with("HTTP/1.0 200"), "{}", String::from_utf8_lossy(&out));
    let head = rx.recv().await.unwrap();
    assert!(head.starts_with("GET /x?y=1 HTTP/1.1\r\n"), "{head}");
    assert!(head.to_ascii_lowercase().contains(&format!("\r\nhost: {up}\r\n")), "{head}");
}
