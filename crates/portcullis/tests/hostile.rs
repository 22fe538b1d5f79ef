//! Hostile HTTP through the running gateway.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::strict::Strict;
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long a test waits for an answer before it fails (never a timing assertion).
const PATIENCE: Duration = Duration::from_secs(10);

/// One HTTP/1 response as the client read it.
#[derive(Debug)]
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn reason(&self) -> Option<String> {
        serde_json::from_slice::<serde_json::Value>(&self.body).ok()?["error"].as_str().map(str::to_owned)
    }
}

/// A raw HTTP/1 client: bytes in, responses parsed as they come back.
struct Raw {
    stream: TcpStream,
    buf: Vec<u8>,
    eof: bool,
}

impl Raw {
    async fn connect(addr: SocketAddr) -> Self {
        Self { stream: TcpStream::connect(addr).await.unwrap(), buf: Vec::new(), eof: false }
    }

    async fn send(&mut self, bytes: &[u8]) {
        // A gateway that closed early may refuse the rest: that is its answer.
        let _ = self.stream.write_all(bytes).await;
    }

    async fn more(&mut self) -> bool {
        if self.eof {
            return false;
        }
        let mut chunk = [0u8; 16 * 1024];
        let read = tokio::time::timeout(PATIENCE, self.stream.read(&mut chunk)).await;
        match read {
            Err(_) => panic!("no answer within {PATIENCE:?}; have {:?}", String::from_utf8_lossy(&self.buf)),
            Ok(Ok(0) | Err(_)) => {
                self.eof = true;
                false
            }
            Ok(Ok(n)) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
        }
    }

    /// The next response; `None` when the connection closed first.
    async fn response(&mut self) -> Option<Resp> {
        let (status, headers, head_len) = loop {
            let mut parsed = [httparse::EMPTY_HEADER; 64];
            let mut r = httparse::Response::new(&mut parsed);
            if let Ok(httparse::Status::Complete(n)) = r.parse(&self.buf) {
                let headers = r
                    .headers
                    .iter()
                    .map(|h| (h.name.to_ascii_lowercase(), String::from_utf8_lossy(h.value).into_owned()))
                    .collect::<Vec<_>>();
                break (r.code.unwrap(), headers, n);
            }
            if !self.more().await {
                assert!(
                    self.buf.is_empty(),
                    "connection closed inside a response: {:?}",
                    String::from_utf8_lossy(&self.buf)
                );
                return None;
            }
        };
        self.buf.drain(..head_len);
        let get = |name: &str| headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone());
        let body = if status == 101 || status == 204 || status == 304 {
            Vec::new()
        } else if let Some(len) = get("content-length") {
            let len: usize = len.parse().unwrap();
            while self.buf.len() < len {
                assert!(self.more().await, "connection closed inside a response body");
            }
            self.buf.drain(..len).collect()
        } else if get("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
            let mut body = Vec::new();
            loop {
                let line = loop {
                    if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                        let line = String::from_utf8_lossy(&self.buf[..i]).into_owned();
                        self.buf.drain(..i + 2);
                        break line;
                    }
                    assert!(self.more().await, "connection closed inside a chunked response");
                };
                let size = usize::from_str_radix(line.split(';').next().unwrap().trim(), 16).unwrap();
                while self.buf.len() < size + 2 {
                    assert!(self.more().await, "connection closed inside a chunk");
                }
                body.extend(self.buf.drain(..size));
                self.buf.drain(..2);
                if size == 0 {
                    break body;
                }
            }
        } else {
            while self.more().await {}
            std::mem::take(&mut self.buf)
        };
        Some(Resp { status, headers, body })
    }

    /// Whether the gateway closed the connection without sending anything more.
    async fn closed(&mut self) -> bool {
        while self.more().await {}
        self.buf.is_empty()
    }
}

fn config(upstream: SocketAddr) -> String {
    format!(
        r#"
[[listener]]
name = "test"
bind = "127.0.0.1:0"

[server]
max_body_bytes = "1KiB"

[[upstream]]
name = "app"
targets = ["http://{upstream}"]

[[route]]
match = {{ path = "/public/**" }}
upstream = "app"
auth = "public"

[[route]]
match = {{ path = "/small/**" }}
upstream = "app"
auth = "public"
max_body_bytes = "8B"

[[route]]
match = {{ host = "admin.test", path = "/**" }}
upstream = "app"
auth = "public"
allow_ips = ["10.0.0.0/8"]
"#
    )
}

/// What the gateway must do with one hostile HTTP/1 request.
#[derive(Debug, Clone, Copy)]
enum Verdict {
    /// Refused by hyper's parser before any layer: a bare 400, a
    /// `conn.malformed` event, the connection closed.
    Unparsable,
    /// Refused by a layer: this status, the JSON body with this reason, one
    /// event.
    Refused(u16, &'static str),
    /// Admitted and normalized: the upstream parses exactly one request, with
    /// this method, target and body, framed one way.
    Admitted(&'static str, &'static str, &'static [u8]),
    /// The head was admitted but the body broke while it streamed: 400
    /// `request.body`; the upstream never gets a complete request (at most a
    /// truncated one on a connection the gateway aborts).
    BrokenBody,
}
use Verdict::{Admitted, BrokenBody, Refused, Unparsable};

/// What the client connection is after the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum After {
    /// Closed by the gateway: nothing that followed was read as a request.
    Closed,
    /// Still usable: the next request is answered, and the upstream sees it
    /// as the one request after the case's.
    Open,
    /// Either of those (hyper drains an unread body it already holds, else
    /// closes): what matters is that nothing in the body became a request.
    Either,
}

/// A request with `head` lines (without the request line's CRLF) and a body
/// framed by a correct `Content-Length`.
fn with_body(request_line: &str, headers: &[&str], body: &[u8]) -> Vec<u8> {
    let mut out = format!("{request_line}\r\n").into_bytes();
    for h in headers {
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
    out.extend_from_slice(body);
    out
}

/// A complete request hidden in a body: if it is ever parsed as a request,
/// the upstream records `/public/smuggled`.
const SMUGGLED: &[u8] = b"GET /public/smuggled HTTP/1.1\r\nHost: x\r\n\r\n";

/// The request sent after an `After::Open` case.
const NEXT: &[u8] = b"GET /public/next HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";

/// Unexpected upstream records a body broken mid-stream may leave: the
/// gateway aborted the upstream connection inside the request.
fn is_truncation(what: &str) -> bool {
    what.starts_with("connection closed inside") || what.starts_with("connection closed after")
}

async fn check_h1(gw: &Gateway, strict: &Strict, name: &str, bytes: &[u8], verdict: Verdict, after: After) {
    strict.clear();
    let events_before = gw.events.reasons().len();
    let mut client = Raw::connect(gw.addr).await;
    client.send(bytes).await;
    let response = client.response().await.unwrap_or_else(|| panic!("{name}: closed without an answer"));
    let event = |reason: &'static str| {
        let reasons = gw.events.reasons();
        reasons.len() == events_before + 1 && reasons[events_before] == reason
    };
    match verdict {
        Unparsable => {
            assert_eq!(response.status, 400, "{name}: {response:?}");
            assert!(response.body.is_empty(), "{name}: a parser refusal has no body: {response:?}");
            eventually(&format!("{name}: conn.malformed"), PATIENCE, || event("conn.malformed")).await;
        }
        Refused(status, reason) => {
            assert_eq!((response.status, response.reason().as_deref()), (status, Some(reason)), "{name}: {response:?}");
            let id = response.headers.iter().find(|(n, _)| n == "x-request-id").map(|(_, v)| v.clone());
            let body: serde_json::Value = serde_json::from_slice(&response.body).unwrap();
            assert_eq!(body, serde_json::json!({"error": reason, "request_id": id}), "{name}");
            assert!(event(reason), "{name}: events {:?}", &gw.events.reasons()[events_before..]);
        }
        BrokenBody => {
            assert_eq!(
                (response.status, response.reason().as_deref()),
                (400, Some("request.body")),
                "{name}: {response:?}"
            );
            assert!(event("request.body"), "{name}: events {:?}", &gw.events.reasons()[events_before..]);
        }
        Admitted(..) => {
            assert_eq!(response.status, 200, "{name}: {response:?}");
            assert_eq!(
                gw.events.reasons().len(),
                events_before,
                "{name}: events {:?}",
                &gw.events.reasons()[events_before..]
            );
        }
    }
    match after {
        After::Closed => {
            assert!(client.closed().await, "{name}: the gateway sent more: {:?}", String::from_utf8_lossy(&client.buf))
        }
        After::Open | After::Either => {
            client.send(NEXT).await;
            match client.response().await {
                Some(next) => assert_eq!(next.status, 200, "{name}: the next request: {next:?}"),
                None if after == After::Either => {}
                None => panic!("{name}: closed before the next request"),
            }
            assert!(client.closed().await, "{name}: more after Connection: close");
        }
    }
    let mut seen = strict.seen();
    if after == After::Open || (after == After::Either && seen.last().is_some_and(|s| s.target == "/public/next")) {
        let next = seen.pop().unwrap_or_else(|| panic!("{name}: the next request never reached the upstream"));
        assert_eq!((next.method.as_str(), next.target.as_str()), ("GET", "/public/next"), "{name}");
    }
    match verdict {
        Admitted(method, target, body) => {
            assert_eq!(seen.len(), 1, "{name}: upstream saw {seen:#?}");
            let got = &seen[0];
            assert_eq!(
                (got.method.as_str(), got.target.as_str(), got.body.as_slice()),
                (method, target, body),
                "{name}: {got:#?}"
            );
            assert!(got.trailers.is_empty(), "{name}: trailers forwarded: {:?}", got.trailers);
            // Framing and connection headers in any spelling stay at the gateway.
            for (header, _) in &got.headers {
                let alias = header.replace('_', "-");
                assert!(
                    !["transfer-encoding", "content-length", "connection", "trailer", "te"].contains(&alias.as_str())
                        || alias == *header,
                    "{name}: {header} forwarded"
                );
            }
            strict.assert_clean(name);
        }
        BrokenBody => {
            assert!(seen.is_empty(), "{name}: upstream saw {seen:#?}");
            let unexpected = strict.unexpected();
            assert!(unexpected.iter().all(|u| is_truncation(&u.what)), "{name}: {unexpected:#?}");
        }
        Unparsable | Refused(..) => {
            assert!(seen.is_empty(), "{name}: upstream saw {seen:#?}");
            strict.assert_clean(name);
        }
    }
}

/// Request smuggling and framing games over HTTP/1.1: each request is refused
/// or reaches the upstream as one request, framed one way, and nothing after
/// it is read as a second request.
#[tokio::test]
async fn http1_smuggling_is_refused_or_normalized() {
    let strict = Strict::start().await;
    let gw = gateway(&config(strict.addr)).await;
    let post = "POST /public/a HTTP/1.1\r\nHost: x";
    let chunked_abc = "3\r\nabc\r\n0\r\n\r\n";
    let te = |value: &str| format!("{post}\r\nTransfer-Encoding: {value}\r\n\r\n{chunked_abc}").into_bytes();
    let cl = |value: &str| format!("{post}\r\nContent-Length: {value}\r\n\r\nabc").into_bytes();
    let chunks = |body: &str| format!("{post}\r\nTransfer-Encoding: chunked\r\n\r\n{body}").into_bytes();
    let smuggled = std::str::from_utf8(SMUGGLED).unwrap();
    let abc: &[u8] = b"abc";
    #[rustfmt::skip]
    let cases: Vec<(&str, Vec<u8>, Verdict, After)> = vec![
        // CL.TE and TE.CL: Transfer-Encoding wins, Content-Length is dropped,
        // the body is re-framed, and the connection is closed after the answer
        // (RFC 9112 §6.1), so the byte after the chunked body is never read.
        ("CL.TE", format!("{post}\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nG").into_bytes(), Admitted("POST", "/public/a", b""), After::Closed),
        ("TE.CL", format!("{post}\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n8\r\nSMUGGLED\r\n0\r\n\r\n").into_bytes(), Admitted("POST", "/public/a", b"SMUGGLED"), After::Closed),
        ("CL.TE with a request after the body", format!("{post}\r\nContent-Length: 50\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}").into_bytes(), Admitted("POST", "/public/a", b""), After::Closed),
        // TE.TE: every spelling either means chunked or is refused.
        ("TE `chunked ` (trailing space)", te("chunked "), Admitted("POST", "/public/a", abc), After::Open),
        ("TE tab before the value", format!("{post}\r\nTransfer-Encoding:\tchunked\r\n\r\n{chunked_abc}").into_bytes(), Admitted("POST", "/public/a", abc), After::Open),
        ("TE upper and mixed case", format!("{post}\r\ntRANSFER-eNCODING: CHUNKED\r\n\r\n{chunked_abc}").into_bytes(), Admitted("POST", "/public/a", abc), After::Open),
        ("TE `identity, chunked`", te("identity, chunked"), Admitted("POST", "/public/a", abc), After::Open),
        ("TE `xchunked` + CL", format!("{post}\r\nTransfer-Encoding: xchunked\r\nContent-Length: 3\r\n\r\nabc").into_bytes(), Unparsable, After::Closed),
        ("TE `chunked, identity`", te("chunked, identity"), Unparsable, After::Closed),
        ("TE `chunked;q=1`", te("chunked;q=1"), Unparsable, After::Closed),
        ("TE `Transfer-Encoding : chunked`", format!("{post}\r\nTransfer-Encoding : chunked\r\nContent-Length: 3\r\n\r\nabc").into_bytes(), Unparsable, After::Closed),
        ("TE twice, chunked last", format!("{post}\r\nTransfer-Encoding: identity\r\nTransfer-Encoding: chunked\r\n\r\n{chunked_abc}").into_bytes(), Admitted("POST", "/public/a", abc), After::Open),
        ("TE twice, chunked first", format!("{post}\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n{chunked_abc}").into_bytes(), Unparsable, After::Closed),
        ("TE obs-folded", format!("{post}\r\nTransfer-Encoding:\r\n chunked\r\nContent-Length: 3\r\n\r\nabc").into_bytes(), Unparsable, After::Closed),
        ("TE `Transfer_Encoding` (underscore)", format!("{post}\r\nTransfer_Encoding: chunked\r\nContent-Length: 3\r\n\r\nabc").into_bytes(), Admitted("POST", "/public/a", abc), After::Open),
        ("TE on HTTP/1.0", format!("POST /public/a HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n{chunked_abc}").into_bytes(), Unparsable, After::Closed),
        // Content-Length: one plain number, or refused.
        ("CL `3, 3`", cl("3, 3"), Unparsable, After::Closed),
        ("CL twice, equal", format!("{post}\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc").into_bytes(), Admitted("POST", "/public/a", abc), After::Open),
        ("CL twice, different", format!("{post}\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd").into_bytes(), Unparsable, After::Closed),
        ("CL `+3`", cl("+3"), Unparsable, After::Closed),
        ("CL `-1`", cl("-1"), Unparsable, After::Closed),
        ("CL `0x3`", cl("0x3"), Unparsable, After::Closed),
        ("CL `03`", cl("03"), Admitted("POST", "/public/a", abc), After::Open),
        ("CL over 64 bits", cl("99999999999999999999999"), Unparsable, After::Closed),
        // Line endings, NUL, obs-fold.
        ("bare LF line ends", b"GET /public/a HTTP/1.1\nHost: x\nX-A: 1\n\n".to_vec(), Admitted("GET", "/public/a", b""), After::Open),
        ("bare CR after the request line", b"GET /public/a HTTP/1.1\rHost: x\r\n\r\n".to_vec(), Unparsable, After::Closed),
        ("bare CR in a value", b"GET /public/a HTTP/1.1\r\nHost: x\r\nX-A: 1\rTransfer-Encoding: chunked\r\n\r\n".to_vec(), Unparsable, After::Closed),
        ("NUL in a value", b"GET /public/a HTTP/1.1\r\nHost: x\r\nX-A: 1\x002\r\n\r\n".to_vec(), Unparsable, After::Closed),
        ("NUL in the target", b"GET /public/a\x00b HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), Unparsable, After::Closed),
        ("NUL in a name", b"GET /public/a HTTP/1.1\r\nHost: x\r\nX-\x00A: 1\r\n\r\n".to_vec(), Unparsable, After::Closed),
        ("obs-fold", b"GET /public/a HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n 2\r\n\r\n".to_vec(), Unparsable, After::Closed),
        ("HTTP/2.0 in a request line", b"GET /public/a HTTP/2.0\r\nHost: x\r\n\r\n".to_vec(), Unparsable, After::Closed),
        // Chunked framing.
        ("chunk size over 64 bits", chunks("ffffffffffffffffff\r\nabc\r\n0\r\n\r\n"), BrokenBody, After::Closed),
        ("chunk size `0x3`", chunks("0x3\r\nabc\r\n0\r\n\r\n"), BrokenBody, After::Closed),
        ("chunk size `-3`", chunks("-3\r\nabc\r\n0\r\n\r\n"), BrokenBody, After::Closed),
        ("chunk data longer than its size", chunks("3\r\nabcXX\r\n0\r\n\r\n"), BrokenBody, After::Closed),
        ("chunk line ended by bare LF", chunks("3\nabc\r\n0\r\n\r\n"), BrokenBody, After::Closed),
        ("chunk extension", chunks("3;name=value\r\nabc\r\n0;last\r\n\r\n"), Admitted("POST", "/public/a", abc), After::Open),
        ("chunk extension, quoted", chunks("3;name=\"a;b\"\r\nabc\r\n0\r\n\r\n"), Admitted("POST", "/public/a", abc), After::Open),
        ("chunk extension hiding CRLF in quotes", chunks(&format!("3;a=\"x\r\n0\r\n\r\n{smuggled}\"\r\nabc\r\n0\r\n\r\n")), BrokenBody, After::Closed),
        ("chunk extension with bare LF", chunks("3;a\nabc\r\n0\r\n\r\n"), BrokenBody, After::Closed),
        ("trailers carrying CL and TE", format!("{post}\r\nTransfer-Encoding: chunked\r\nTrailer: Content-Length, Transfer-Encoding\r\n\r\n3\r\nabc\r\n0\r\nContent-Length: 50\r\nTransfer-Encoding: chunked\r\nX-T: 1\r\n\r\n").into_bytes(), Admitted("POST", "/public/a", abc), After::Open),
        // A body that holds a request is a body.
        ("a request inside a body", with_body("POST /public/a HTTP/1.1", &["Host: x"], SMUGGLED), Admitted("POST", "/public/a", SMUGGLED), After::Open),
        ("a request inside a GET body", with_body("GET /public/a HTTP/1.1", &["Host: x"], SMUGGLED), Admitted("GET", "/public/a", SMUGGLED), After::Open),
        // A refused request's unread body is never read as the next request.
        ("refused (404), a request in its body", with_body("POST /nope HTTP/1.1", &["Host: x"], SMUGGLED), Refused(404, "route.none"), After::Open),
        ("refused (413), a request in its body", with_body("POST /small/a HTTP/1.1", &["Host: x"], SMUGGLED), Refused(413, "limit.body"), After::Open),
        ("refused (403), a request in its chunked body", format!("POST /x HTTP/1.1\r\nHost: admin.test\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{smuggled}\r\n0\r\n\r\n", SMUGGLED.len()).into_bytes(), Refused(403, "ip.not_allowed"), After::Either),
        ("refused, Expect: 100-continue, the body sent anyway", with_body("POST /nope HTTP/1.1", &["Host: x", "Expect: 100-continue"], SMUGGLED), Refused(404, "route.none"), After::Open),
        // Absolute form: the target's authority routes and becomes the Host.
        ("absolute form, authority refused, Host allowed", b"GET http://admin.test/public/a HTTP/1.1\r\nHost: public.test\r\n\r\n".to_vec(), Refused(403, "ip.not_allowed"), After::Open),
        ("absolute form, authority allowed, Host refused", b"GET http://public.test/public/a HTTP/1.1\r\nHost: admin.test\r\n\r\n".to_vec(), Admitted("GET", "/public/a", b""), After::Open),
        ("absolute form with userinfo", b"GET http://u@admin.test/public/a HTTP/1.1\r\nHost: public.test\r\n\r\n".to_vec(), Refused(400, "request.malformed"), After::Open),
    ];
    for (name, bytes, verdict, after) in cases {
        check_h1(&gw, &strict, name, &bytes, verdict, after).await;
    }
}

/// CONNECT asks for a tunnel; no route serves it and no upstream sees it.
#[tokio::test]
async fn connect_is_never_forwarded() {
    let strict = Strict::start().await;
    let gw = gateway(&simple_config(strict.addr, "")).await;
    #[rustfmt::skip]
    let cases: &[(&str, &[u8], Verdict)] = &[
        ("authority form", b"CONNECT internal.test:22 HTTP/1.1\r\nHost: internal.test:22\r\n\r\n", Refused(404, "route.none")),
        ("origin form", b"CONNECT /x HTTP/1.1\r\nHost: x\r\n\r\n", Refused(405, "route.method")),
        ("origin form with a WebSocket upgrade", b"CONNECT /x HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n", Refused(405, "route.method")),
    ];
    for (name, bytes, verdict) in cases {
        check_h1(&gw, &strict, name, bytes, *verdict, After::Open).await;
    }
}

/// Pipelined requests after refused ones: answered in order, and only the
/// admitted ones reach the upstream.
#[tokio::test]
async fn pipelined_requests_after_refused_ones_are_answered_in_order() {
    let strict = Strict::start().await;
    let gw = gateway(&config(strict.addr)).await;
    let mut bytes = b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n".to_vec();
    bytes.extend(with_body("POST /small/a HTTP/1.1", &["Host: x"], SMUGGLED));
    bytes.extend_from_slice(b"GET /public/b HTTP/1.1\r\nHost: x\r\n\r\n");
    bytes.extend(with_body("POST /nope HTTP/1.1", &["Host: x"], SMUGGLED));
    bytes.extend_from_slice(NEXT);
    let mut client = Raw::connect(gw.addr).await;
    client.send(&bytes).await;
    let mut statuses = Vec::new();
    while let Some(response) = client.response().await {
        statuses.push((response.status, response.reason()));
    }
    let r = |s: &str| Some(s.to_owned());
    assert_eq!(
        statuses,
        [(404, r("route.none")), (413, r("limit.body")), (200, None), (404, r("route.none")), (200, None)]
    );
    let seen: Vec<String> = strict.seen().iter().map(|s| format!("{} {}", s.method, s.target)).collect();
    assert_eq!(seen, ["GET /public/b", "GET /public/next"]);
    strict.assert_clean("pipelined");
    assert_eq!(gw.events.reasons(), ["route.none", "limit.body", "route.none"]);
}
