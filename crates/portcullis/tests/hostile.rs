//! Hostile HTTP through the running gateway, in front of the strict recording
//! upstream (`common/strict.rs`). Each case goes out as raw bytes (HTTP/1.1)
//! or hand-written frames (HTTP/2, `support/h2raw.rs`) and checks two things:
//! the gateway refuses it (status and reason, one event, the connection
//! closed where it must be) or normalizes it; and the upstream parsed exactly
//! the requests the gateway admitted, framed one way, with no byte left over.
//!
//! Classes: request smuggling over HTTP/1.1 (CL.TE, TE.CL, obfuscated
//! Transfer-Encoding, Content-Length games, bare CR/LF, NUL, obs-fold, chunked
//! framing and extensions, trailers, TE on HTTP/1.0, absolute form, CONNECT,
//! pipelining after refusals); HTTP/2 to HTTP/1.1 downgrade (content-length
//! against DATA, connection-specific fields, pseudo-header abuse, bytes that
//! HTTP/1.1 would read as framing); HTTP/2 floods (rapid reset, CONTINUATION,
//! malformed requests, the stream cap); upgrade abuse (h2c and other tokens,
//! WebSocket handshakes, upstream answers that do not complete one).

use crate::common;
use crate::support::h2raw;

use std::net::SocketAddr;
use std::time::Duration;

use common::strict::{Answer, Strict};
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

/// Nothing unexpected reached the upstream, except requests cut off on
/// connections that carried none of this case's requests: the gateway
/// aborted those in an earlier case (a body that broke mid-stream), and the
/// upstream may notice the abort only now.
fn assert_clean_beside_aborts(strict: &Strict, name: &str) {
    let ours: Vec<usize> = strict.seen().iter().map(|s| s.conn).collect();
    let unexpected: Vec<_> =
        strict.unexpected().into_iter().filter(|u| !is_truncation(&u.what) || ours.contains(&u.conn)).collect();
    assert!(unexpected.is_empty(), "{name}: the upstream received bytes it did not expect: {unexpected:#?}");
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
            assert_clean_beside_aborts(strict, name);
        }
        BrokenBody => {
            assert!(seen.is_empty(), "{name}: upstream saw {seen:#?}");
            let unexpected = strict.unexpected();
            assert!(unexpected.iter().all(|u| is_truncation(&u.what)), "{name}: {unexpected:#?}");
        }
        Unparsable | Refused(..) => {
            assert!(seen.is_empty(), "{name}: upstream saw {seen:#?}");
            assert_clean_beside_aborts(strict, name);
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
        ("origin form with a WebSocket upgrade", b"CONNECT /x HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n", Refused(400, "upgrade.websocket")),
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

/// What the gateway must do with one hostile HTTP/2 request.
#[derive(Debug, Clone, Copy)]
enum H2Verdict {
    /// The HTTP/2 layer resets the stream (`RST_STREAM` with this code); the
    /// connection stays usable. No request exists, so no event.
    Reset(u32),
    /// A connection error: GOAWAY with this code, the connection closed, a
    /// `conn.malformed` event.
    GoAway(u32),
    /// Refused by a layer: status, reason, one event.
    Refused(u16, &'static str),
    /// Admitted: the upstream gets one HTTP/1.1 request with this method,
    /// target and body, carrying these headers exactly once.
    Admitted(&'static str, &'static str, &'static [u8], &'static [(&'static str, &'static str)]),
}

/// A name, a header block, DATA frames, the verdict.
type H2Case<'a> = (&'a str, Vec<u8>, &'a [&'a [u8]], H2Verdict);

/// Sends one request as raw frames (all in one write) and checks the verdict
/// and what the upstream saw; then, unless the connection was closed, a
/// well-formed request on the same connection must still be answered.
async fn check_h2(gw: &Gateway, strict: &Strict, name: &str, fields: &[u8], data: &[&[u8]], verdict: H2Verdict) {
    use h2raw::*;
    strict.clear();
    let events_before = gw.events.reasons().len();
    let mut client = H2::connect(gw.addr).await;
    let mut frames = frame(HEADERS, END_HEADERS | if data.is_empty() { END_STREAM } else { 0 }, 1, fields);
    for (i, chunk) in data.iter().enumerate() {
        frames.extend(frame(DATA, if i + 1 == data.len() { END_STREAM } else { 0 }, 1, chunk));
    }
    client.send(&frames).await;
    let outcome = client.outcome(1).await;
    let new_events = || gw.events.reasons()[events_before..].to_vec();
    match verdict {
        H2Verdict::Reset(code) => {
            assert_eq!(outcome, Outcome::Reset(code), "{name}");
            assert!(new_events().is_empty(), "{name}: events {:?}", new_events());
        }
        H2Verdict::GoAway(code) => {
            assert_eq!(outcome, Outcome::GoAway(code), "{name}");
            assert_eq!(client.until_closed().await.map(|(_, code)| code), Some(code), "{name}: closed");
            eventually(&format!("{name}: conn.malformed"), PATIENCE, || new_events() == ["conn.malformed"]).await;
        }
        H2Verdict::Refused(status, reason) => {
            assert_eq!(
                (outcome.status(), outcome.reason().as_deref()),
                (Some(status), Some(reason)),
                "{name}: {outcome:?}"
            );
            assert_eq!(new_events(), [reason], "{name}");
        }
        H2Verdict::Admitted(..) => {
            assert_eq!(outcome.status(), Some(200), "{name}: {outcome:?}");
            assert!(new_events().is_empty(), "{name}: events {:?}", new_events());
        }
    }
    let open = !matches!(verdict, H2Verdict::GoAway(_));
    if open {
        client.headers(3, &get("public.test", "/public/next", &[]), true).await;
        assert_eq!(client.outcome(3).await.status(), Some(200), "{name}: the next stream");
    }
    let mut seen = strict.seen();
    if open {
        let next = seen.pop().unwrap_or_else(|| panic!("{name}: the next request never reached the upstream"));
        assert_eq!(next.target, "/public/next", "{name}");
    }
    match verdict {
        H2Verdict::Admitted(method, target, body, headers) => {
            assert_eq!(seen.len(), 1, "{name}: upstream saw {seen:#?}");
            let got = &seen[0];
            assert_eq!(
                (got.method.as_str(), got.target.as_str(), got.body.as_slice()),
                (method, target, body),
                "{name}: {got:#?}"
            );
            for (header, value) in headers {
                assert_eq!(got.header(header).as_deref(), Some(*value), "{name}: {header}: {got:#?}");
            }
            for connection_specific in ["connection", "keep-alive", "proxy-connection", "te", "upgrade", "trailer"] {
                assert!(!got.has(connection_specific), "{name}: {connection_specific} forwarded");
            }
            assert_clean_beside_aborts(strict, name);
        }
        _ => {
            assert!(seen.is_empty(), "{name}: upstream saw {seen:#?}");
            // A stream reset while its head was already on the way up leaves
            // at most a truncated request on a connection the gateway aborted.
            let unexpected = strict.unexpected();
            assert!(unexpected.iter().all(|u| is_truncation(&u.what)), "{name}: {unexpected:#?}");
        }
    }
}

/// HTTP/2 requests the gateway turns into HTTP/1.1: malformed ones are reset
/// or close the connection, and what is forwarded is one well-framed
/// HTTP/1.1 request.
#[tokio::test]
async fn http2_downgrade_is_refused_or_normalized() {
    use H2Verdict::{Admitted, GoAway, Refused, Reset};
    use h2raw::{PROTOCOL_ERROR, block};
    type Fields<'a> = &'a [(&'a [u8], &'a [u8])];
    let strict = Strict::start().await;
    let gw = gateway(&config(strict.addr)).await;
    let req = |method: &[u8], authority: &[u8], path: &[u8], extra: Fields<'_>| {
        let mut fields: Vec<(&[u8], &[u8])> =
            vec![(b":method", method), (b":scheme", b"http"), (b":authority", authority), (b":path", path)];
        fields.extend_from_slice(extra);
        block(&fields)
    };
    let post = |extra: Fields<'_>| req(b"POST", b"public.test", b"/public/a", extra);
    let get = |extra: Fields<'_>| req(b"GET", b"public.test", b"/public/a", extra);
    let abc: &[&[u8]] = &[b"abc"];
    let none: &[&[u8]] = &[];
    #[rustfmt::skip]
    let cases: Vec<H2Case<'_>> = vec![
        ("control: a POST", post(&[]), abc, Admitted("POST", "/public/a", b"abc", &[("host", "public.test")])),
        // content-length against the DATA frames.
        ("content-length above the DATA", post(&[(b"content-length", b"10")]), abc, Reset(PROTOCOL_ERROR)),
        ("content-length below the DATA", post(&[(b"content-length", b"2")]), abc, Reset(PROTOCOL_ERROR)),
        ("content-length on a GET without DATA", get(&[(b"content-length", b"3")]), none, Reset(PROTOCOL_ERROR)),
        ("content-length twice, different", post(&[(b"content-length", b"3"), (b"content-length", b"4")]), abc, Reset(PROTOCOL_ERROR)),
        ("content-length `+3`", post(&[(b"content-length", b"+3")]), abc, Reset(PROTOCOL_ERROR)),
        ("content-length `03`", post(&[(b"content-length", b"03")]), abc, Admitted("POST", "/public/a", b"abc", &[("content-length", "3")])),
        ("content-length twice, equal", post(&[(b"content-length", b"3"), (b"content-length", b"3")]), abc, Admitted("POST", "/public/a", b"abc", &[("content-length", "3")])),
        // Connection-specific fields are malformed in HTTP/2 (RFC 9113 §8.2.2).
        ("connection", post(&[(b"connection", b"keep-alive")]), abc, Reset(PROTOCOL_ERROR)),
        ("transfer-encoding", post(&[(b"transfer-encoding", b"chunked")]), abc, Reset(PROTOCOL_ERROR)),
        ("keep-alive", post(&[(b"keep-alive", b"timeout=5")]), abc, Reset(PROTOCOL_ERROR)),
        ("upgrade", get(&[(b"upgrade", b"websocket")]), none, Reset(PROTOCOL_ERROR)),
        ("proxy-connection", post(&[(b"proxy-connection", b"keep-alive")]), abc, Reset(PROTOCOL_ERROR)),
        ("te: gzip", post(&[(b"te", b"gzip")]), abc, Reset(PROTOCOL_ERROR)),
        ("te: trailers (allowed, not forwarded)", post(&[(b"te", b"trailers")]), abc, Admitted("POST", "/public/a", b"abc", &[])),
        // Pseudo-header abuse.
        ("duplicate :path", get(&[(b":path", b"/admin")]), none, Reset(PROTOCOL_ERROR)),
        (":path without a leading /", req(b"GET", b"public.test", b"public/a", &[]), none, Reset(PROTOCOL_ERROR)),
        ("empty :path", req(b"GET", b"public.test", b"", &[]), none, Reset(PROTOCOL_ERROR)),
        (":path in absolute form", req(b"GET", b"public.test", b"http://admin.test/public/a", &[]), none, Reset(PROTOCOL_ERROR)),
        (":path with CRLF and a request", req(b"GET", b"public.test", b"/public/a HTTP/1.1\r\nHost: x\r\n\r\nGET /public/smuggled", &[]), none, Reset(PROTOCOL_ERROR)),
        ("missing :method", block(&[(b":scheme", b"http"), (b":authority", b"public.test"), (b":path", b"/public/a")]), none, Reset(PROTOCOL_ERROR)),
        ("missing :scheme", block(&[(b":method", b"GET"), (b":authority", b"public.test"), (b":path", b"/public/a")]), none, Reset(PROTOCOL_ERROR)),
        ("missing :path", block(&[(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"public.test")]), none, Reset(PROTOCOL_ERROR)),
        ("pseudo-header after a regular one", block(&[(b":method", b"GET"), (b":scheme", b"http"), (b"x-a", b"1"), (b":authority", b"public.test"), (b":path", b"/public/a")]), none, Reset(PROTOCOL_ERROR)),
        ("unknown pseudo-header", get(&[(b":foo", b"x")]), none, GoAway(PROTOCOL_ERROR)),
        (":method with CRLF", req(b"GET /public/smuggled HTTP/1.1\r\n", b"public.test", b"/public/a", &[]), none, GoAway(PROTOCOL_ERROR)),
        // :authority and host: one answer, the same for routing and upstream.
        (":authority and host disagree", get(&[(b"host", b"admin.test")]), none, Refused(400, "request.malformed")),
        (":authority and host agree", get(&[(b"host", b"PUBLIC.test:80")]), none, Admitted("GET", "/public/a", b"", &[("host", "public.test")])),
        (":authority refused", req(b"GET", b"admin.test", b"/public/a", &[]), none, Refused(403, "ip.not_allowed")),
        ("host without :authority", block(&[(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/public/a"), (b"host", b"public.test")]), none, Admitted("GET", "/public/a", b"", &[("host", "public.test")])),
        ("host refused, without :authority", block(&[(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/public/a"), (b"host", b"admin.test")]), none, Refused(403, "ip.not_allowed")),
        // Bytes HTTP/1.1 would read as framing.
        ("CR LF in a value", post(&[(b"x-a", b"1\r\nx-b: 2")]), abc, GoAway(PROTOCOL_ERROR)),
        ("LF in a value", post(&[(b"x-a", b"1\nTransfer-Encoding: chunked")]), abc, GoAway(PROTOCOL_ERROR)),
        ("NUL in a value", post(&[(b"x-a", b"1\x002")]), abc, GoAway(PROTOCOL_ERROR)),
        ("colon in a name", post(&[(b"x-a:b", b"1")]), abc, GoAway(PROTOCOL_ERROR)),
        ("space in a name", post(&[(b"transfer-encoding ", b"chunked")]), abc, GoAway(PROTOCOL_ERROR)),
        ("upper-case name", post(&[(b"Transfer-Encoding", b"chunked")]), abc, GoAway(PROTOCOL_ERROR)),
        // Fields HTTP/2 splits that HTTP/1.1 keeps on one line.
        ("cookies in separate fields", get(&[(b"cookie", b"a=1"), (b"cookie", b"b=2")]), none, Admitted("GET", "/public/a", b"", &[("cookie", "a=1; b=2")])),
        // CONNECT asks for a tunnel.
        ("CONNECT", block(&[(b":method", b"CONNECT"), (b":authority", b"internal.test:22")]), none, Refused(404, "route.none")),
    ];
    for (name, block, data, verdict) in cases {
        check_h2(&gw, &strict, name, &block, data, verdict).await;
    }
}

/// A gateway where `/public/slow/*` never answers (a slow backend: what
/// makes a reset flood expensive) and everything else does.
async fn slow_upstream() -> Strict {
    Strict::with(|seen| if seen.target.starts_with("/public/slow/") { Answer::Stall } else { Answer::Ok }).await
}

/// A well-behaved client, over HTTP/2 and HTTP/1.1, still gets answers.
async fn still_served(gw: &Gateway, what: &str) {
    let mut h2 = h2raw::H2::connect(gw.addr).await;
    h2.headers(1, &h2raw::get("public.test", "/public/ok", &[]), true).await;
    assert_eq!(h2.outcome(1).await.status(), Some(200), "{what}: an HTTP/2 client");
    let (parts, _) = get(&gw.url("/public/ok")).await;
    assert_eq!(parts.status, 200, "{what}: an HTTP/1.1 client");
}

/// HTTP/2 rapid reset (CVE-2023-44487): HEADERS then RST_STREAM, again and
/// again. Sent in one burst, the streams are reset before the gateway
/// accepts them; paced (each HEADERS processed before its reset), each
/// reaches the pipeline. Either way the connection gets GOAWAY after a
/// bounded number, with a `conn.flood` event, and the upstream sees at most
/// that many requests.
#[tokio::test]
async fn http2_rapid_reset_is_bounded() {
    use h2raw::*;
    const ATTEMPTS: u32 = 1000;
    // The gateway's bounds: 20 resets before acceptance, 100 after.
    const BOUND: usize = 100;
    let strict = slow_upstream().await;
    let gw = gateway(&config(strict.addr)).await;

    let mut burst = Vec::new();
    for i in 0..ATTEMPTS {
        let id = 2 * i + 1;
        burst.extend(frame(
            HEADERS,
            END_HEADERS | END_STREAM,
            id,
            &get("public.test", &format!("/public/slow/{id}"), &[]),
        ));
        burst.extend(frame(RST_STREAM, 0, id, &CANCEL.to_be_bytes()));
    }
    let mut client = H2::connect(gw.addr).await;
    client.send(&burst).await;
    let goaway = client.until_closed().await;
    let (last, code) = goaway.expect("burst: no GOAWAY");
    assert_eq!(code, ENHANCE_YOUR_CALM, "burst");
    assert!(last < 2 * ATTEMPTS, "burst: every stream was processed (last {last})");
    eventually("burst: conn.flood", PATIENCE, || gw.events.reasons() == ["conn.flood"]).await;
    assert!(strict.seen().len() <= BOUND, "burst: upstream saw {}", strict.seen().len());
    still_served(&gw, "after the burst").await;
    strict.clear();

    let mut client = H2::connect(gw.addr).await;
    let mut sent = 0;
    for i in 0..ATTEMPTS {
        let id = 2 * i + 1;
        client.headers(id, &get("public.test", &format!("/public/slow/{id}"), &[]), true).await;
        // The PING's answer proves the HEADERS were processed first.
        if !client.ping().await {
            break;
        }
        client.rst(id, CANCEL).await;
        sent += 1;
    }
    let goaway = client.until_closed().await;
    assert!(goaway.is_some(), "paced: no GOAWAY after {sent} resets");
    assert!(sent <= BOUND + 10, "paced: {sent} streams reset before the connection closed");
    eventually("paced: conn.flood", PATIENCE, || gw.events.reasons() == ["conn.flood", "conn.flood"]).await;
    assert!(strict.seen().len() <= BOUND + 10, "paced: upstream saw {}", strict.seen().len());
    still_served(&gw, "after the paced resets").await;
    strict.assert_clean("rapid reset");
}

/// Streams a client cancels now and then (a browser leaving a page) do not
/// close its connection: the bound needs resets to be most of its streams.
#[tokio::test]
async fn http2_occasional_resets_are_not_a_flood() {
    use h2raw::*;
    let strict = slow_upstream().await;
    let gw = gateway(&config(strict.addr)).await;
    let mut client = H2::connect(gw.addr).await;
    // 150 answered streams, 120 reset ones: past the count, under half.
    let mut id = 1;
    for i in 0..270u32 {
        if i % 9 < 4 {
            client.headers(id, &get("public.test", &format!("/public/slow/{id}"), &[]), true).await;
            assert!(client.ping().await, "closed after {i} streams");
            client.rst(id, CANCEL).await;
        } else {
            client.headers(id, &get("public.test", "/public/ok", &[]), true).await;
            assert_eq!(client.outcome(id).await.status(), Some(200), "stream {id}");
        }
        id += 2;
    }
    assert!(client.ping().await && client.goaway.is_none(), "the connection was closed: {:?}", client.goaway);
    assert!(gw.events.reasons().is_empty(), "{:?}", gw.events.reasons());
}

/// CONTINUATION floods: a header block that never ends, in frames with or
/// without fields. The connection gets GOAWAY after a few frames, with a
/// `conn.flood` event; nothing reaches the upstream.
#[tokio::test]
async fn http2_continuation_flood_is_bounded() {
    use h2raw::*;
    let strict = slow_upstream().await;
    let gw = gateway(&config(strict.addr)).await;
    let filler = block(&[(b"x-filler", &[b'a'; 100])]);
    for (i, payload) in [Vec::new(), filler].into_iter().enumerate() {
        let mut client = H2::connect(gw.addr).await;
        let mut flood = frame(HEADERS, 0, 1, &get("public.test", "/public/a", &[]));
        for _ in 0..10_000 {
            flood.extend(frame(CONTINUATION, 0, 1, &payload));
        }
        client.send(&flood).await;
        let goaway = client.until_closed().await;
        assert_eq!(goaway, Some((0, ENHANCE_YOUR_CALM)), "flood {i}");
        eventually("conn.flood", PATIENCE, || gw.events.reasons().len() == i + 1).await;
        assert!(gw.events.reasons().iter().all(|r| *r == "conn.flood"), "{:?}", gw.events.reasons());
    }
    assert!(strict.seen().is_empty(), "upstream saw {:?}", strict.seen());
    still_served(&gw, "after the floods").await;
    strict.assert_clean("continuation flood");
}

/// Malformed requests, one after the other on one connection: each stream is
/// reset, and after a bounded number the connection gets GOAWAY.
#[tokio::test]
async fn http2_malformed_request_flood_is_bounded() {
    use h2raw::*;
    let strict = slow_upstream().await;
    let gw = gateway(&config(strict.addr)).await;
    let malformed = get("public.test", "/public/a", &[(b"connection", b"close")]);
    let mut client = H2::connect(gw.addr).await;
    // Ten at a time, each batch processed (PING) before the next.
    let mut sent = 0;
    for batch in 0..50u32 {
        let mut frames = Vec::new();
        for i in 0..10 {
            frames.extend(frame(HEADERS, END_HEADERS | END_STREAM, 2 * (batch * 10 + i) + 1, &malformed));
        }
        client.send(&frames).await;
        sent += 10;
        if !client.ping().await {
            break;
        }
    }
    let goaway = client.until_closed().await;
    assert_eq!(goaway.map(|(_, code)| code), Some(ENHANCE_YOUR_CALM), "after {sent} malformed streams");
    assert!(sent <= 110, "{sent} malformed streams before GOAWAY");
    let resets = client.frames.iter().filter(|f| f.kind == RST_STREAM).count();
    assert!((90..=100).contains(&resets), "{resets} streams reset");
    eventually("conn.flood", PATIENCE, || gw.events.reasons() == ["conn.flood"]).await;
    assert!(strict.seen().is_empty());
    still_served(&gw, "after the flood").await;
}

/// At most 100 streams at once per connection: more are refused, and the
/// upstream never sees them.
#[tokio::test]
async fn http2_concurrent_streams_are_capped() {
    use h2raw::*;
    let strict = slow_upstream().await;
    let gw = gateway(&config(strict.addr)).await;
    let mut client = H2::connect(gw.addr).await;
    // The server's SETTINGS announce the cap; wait for them to be acknowledged.
    assert!(client.ping().await);
    let mut streams = Vec::new();
    for i in 0..120u32 {
        streams.extend(frame(
            HEADERS,
            END_HEADERS | END_STREAM,
            2 * i + 1,
            &get("public.test", &format!("/public/slow/{i}"), &[]),
        ));
    }
    client.send(&streams).await;
    assert!(client.ping().await);
    let refused = client.frames.iter().filter(|f| f.kind == RST_STREAM).count();
    assert_eq!(refused, 20, "{:?}", client.frames.iter().map(|f| (f.kind, f.stream)).collect::<Vec<_>>());
    let seen = strict.wait_for(100, PATIENCE).await;
    assert_eq!(seen.len(), 100);
    still_served(&gw, "beside the full connection").await;
    assert_eq!(strict.seen().iter().filter(|s| s.target.starts_with("/public/slow/")).count(), 100);
}

/// The sample key of RFC 6455 §1.3.
const WS_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

/// A request with these header lines and no body.
fn head(request_line: &str, headers: &[&str]) -> Vec<u8> {
    let mut out = format!("{request_line}\r\nHost: x\r\n");
    for h in headers {
        out.push_str(h);
        out.push_str("\r\n");
    }
    out.push_str("\r\n");
    out.into_bytes()
}

/// The header lines of a well-formed WebSocket handshake (RFC 6455 §4.1).
const WS: [&str; 4] = [
    "Connection: Upgrade",
    "Upgrade: websocket",
    "Sec-WebSocket-Version: 13",
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
];

/// `/ws/**` allows WebSocket; `/public/**` does not.
fn ws_config(upstream: SocketAddr) -> String {
    format!(
        r#"{}
[[route]]
match = {{ path = "/ws/**" }}
upstream = "app"
auth = "public"
websocket = true
"#,
        config(upstream)
    )
}

/// An upstream that answers each `/ws/*` path its own way, and every other
/// request with 101 when its path says so.
async fn upgrade_upstream() -> Strict {
    use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
    Strict::with(|seen| {
        let key = seen.header("sec-websocket-key").unwrap_or_default();
        let switch = |upgrade: &str, accept: Option<String>| {
            let mut headers =
                vec![("Connection".to_owned(), "Upgrade".to_owned()), ("Upgrade".to_owned(), upgrade.to_owned())];
            headers.extend(accept.map(|a| ("Sec-WebSocket-Accept".to_owned(), a)));
            Answer::Switch(headers)
        };
        match seen.target.as_str() {
            "/ws/accept" | "/public/accept" => switch("websocket", Some(derive_accept_key(key.as_bytes()))),
            "/ws/426" => {
                Answer::Status(426, vec![("Upgrade".into(), "websocket".into())], b"upgrade required".to_vec())
            }
            "/ws/200" => Answer::Status(200, Vec::new(), b"not a websocket".to_vec()),
            "/ws/wrong-accept" => switch("websocket", Some(derive_accept_key(b"another key"))),
            "/ws/no-accept" => switch("websocket", None),
            "/ws/h2c" => switch("h2c", Some(derive_accept_key(key.as_bytes()))),
            "/public/unprompted" => switch("websocket", Some(derive_accept_key(WS_KEY.as_bytes()))),
            _ => Answer::Ok,
        }
    })
    .await
}

/// Upgrade tokens other than `websocket` (`h2c` with `HTTP2-Settings` first
/// of all) are refused before the upstream: an upstream accepting h2c would
/// otherwise open a tunnel whose requests no defence sees.
#[tokio::test]
async fn upgrades_other_than_websocket_are_refused() {
    let strict = upgrade_upstream().await;
    let gw = gateway(&ws_config(strict.addr)).await;
    let h2c = ["Connection: Upgrade, HTTP2-Settings", "Upgrade: h2c", "HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA"];
    #[rustfmt::skip]
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("h2c with HTTP2-Settings", head("GET /public/accept HTTP/1.1", &h2c)),
        ("h2c on a WebSocket route", head("GET /ws/accept HTTP/1.1", &h2c)),
        ("h2c, POST with a body", with_body("POST /public/accept HTTP/1.1", &["Host: x", "Connection: Upgrade, HTTP2-Settings", "Upgrade: h2c", "HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA"], b"abc")),
        ("TLS/1.0", head("GET /public/accept HTTP/1.1", &["Connection: Upgrade", "Upgrade: TLS/1.0"])),
        ("foo", head("GET /ws/accept HTTP/1.1", &["Connection: Upgrade", "Upgrade: foo"])),
        ("websocket, h2c", head("GET /ws/accept HTTP/1.1", &["Connection: Upgrade", "Upgrade: websocket, h2c", WS[2], WS[3]])),
        ("h2c, websocket", head("GET /ws/accept HTTP/1.1", &["Connection: Upgrade", "Upgrade: h2c, websocket", WS[2], WS[3]])),
        ("websocket/13", head("GET /ws/accept HTTP/1.1", &["Connection: Upgrade", "Upgrade: websocket/13", WS[2], WS[3]])),
    ];
    for (name, bytes) in cases {
        check_h1(&gw, &strict, name, &bytes, Refused(400, "upgrade.protocol"), After::Open).await;
    }
}

/// WebSocket handshakes must have the RFC 6455 shape, and only routes with
/// `websocket = true` take them.
#[tokio::test]
async fn websocket_handshakes_are_checked() {
    let strict = upgrade_upstream().await;
    let gw = gateway(&ws_config(strict.addr)).await;
    let get = "GET /ws/accept HTTP/1.1";
    #[rustfmt::skip]
    let cases: Vec<(&str, Vec<u8>, Verdict)> = vec![
        ("no Sec-WebSocket-Key", head(get, &WS[..3]), Refused(400, "upgrade.websocket")),
        ("a key that is not 16 bytes", head(get, &[WS[0], WS[1], WS[2], "Sec-WebSocket-Key: c2hvcnQ="]), Refused(400, "upgrade.websocket")),
        ("a key that is not base64", head(get, &[WS[0], WS[1], WS[2], "Sec-WebSocket-Key: !!!!!!!!!!!!!!!!!!!!!!!!"]), Refused(400, "upgrade.websocket")),
        ("two keys", head(get, &[WS[0], WS[1], WS[2], WS[3], "Sec-WebSocket-Key: AQIDBAUGBwgJCgsMDQ4PEA=="]), Refused(400, "upgrade.websocket")),
        ("version 8", head(get, &[WS[0], WS[1], "Sec-WebSocket-Version: 8", WS[3]]), Refused(400, "upgrade.websocket")),
        ("no version", head(get, &[WS[0], WS[1], WS[3]]), Refused(400, "upgrade.websocket")),
        ("POST", with_body("POST /ws/accept HTTP/1.1", &["Host: x", WS[0], WS[1], WS[2], WS[3]], b"abc"), Refused(400, "upgrade.websocket")),
        ("a route without websocket = true", head("GET /public/accept HTTP/1.1", &WS), Refused(400, "upgrade.not_allowed")),
    ];
    for (name, bytes, verdict) in cases {
        check_h1(&gw, &strict, name, &bytes, verdict, After::Open).await;
    }
}

/// A name, a path (which says how the upstream answers), the request's
/// header lines, the status and reason the client gets.
type AnswerCase = (&'static str, &'static str, &'static [&'static str], u16, Option<&'static str>);

/// A WebSocket upgrade becomes a tunnel only when the upstream completes the
/// RFC 6455 handshake. Any other answer leaves the client connection HTTP:
/// the requests the client pipelined behind the upgrade (a request "inside
/// the tunnel") are parsed by the gateway and run through the whole pipeline.
#[tokio::test]
async fn websocket_tunnels_open_only_on_a_complete_handshake() {
    let strict = upgrade_upstream().await;
    let gw = gateway(&ws_config(strict.addr)).await;
    // Pipelined behind the upgrade: a refused request, then an admitted one.
    let mut behind = b"GET /x HTTP/1.1\r\nHost: admin.test\r\n\r\n".to_vec();
    behind.extend_from_slice(NEXT);
    #[rustfmt::skip]
    let cases: &[AnswerCase] = &[
        ("upstream answers 426", "/ws/426", &WS, 426, None),
        ("upstream answers 200", "/ws/200", &WS, 200, None),
        ("101 with the wrong Sec-WebSocket-Accept", "/ws/wrong-accept", &WS, 502, Some("upstream.protocol")),
        ("101 without Sec-WebSocket-Accept", "/ws/no-accept", &WS, 502, Some("upstream.protocol")),
        ("101 switching to h2c", "/ws/h2c", &WS, 502, Some("upstream.protocol")),
        ("101 to a request that asked for no upgrade", "/public/unprompted", &[], 502, Some("upstream.protocol")),
    ];
    for (name, path, headers, status, reason) in cases {
        strict.clear();
        let events_before = gw.events.reasons().len();
        let mut client = Raw::connect(gw.addr).await;
        let mut bytes = head(&format!("GET {path} HTTP/1.1"), headers);
        bytes.extend_from_slice(&behind);
        client.send(&bytes).await;
        let first = client.response().await.unwrap_or_else(|| panic!("{name}: no answer"));
        assert_eq!((first.status, first.reason().as_deref()), (*status, *reason), "{name}: {first:?}");
        let refused = client.response().await.unwrap_or_else(|| panic!("{name}: the connection did not stay HTTP"));
        assert_eq!((refused.status, refused.reason().as_deref()), (403, Some("ip.not_allowed")), "{name}");
        let next = client.response().await.unwrap_or_else(|| panic!("{name}: the last request was not answered"));
        assert_eq!(next.status, 200, "{name}");
        assert!(client.closed().await, "{name}");
        let mut expected = vec!["ip.not_allowed"];
        expected.extend(*reason);
        let mut got = gw.events.reasons()[events_before..].to_vec();
        got.sort_unstable();
        expected.sort_unstable();
        assert_eq!(got, expected, "{name}");
        let seen: Vec<(String, Vec<u8>)> = strict.seen().into_iter().map(|s| (s.target, s.tunnel)).collect();
        assert_eq!(seen, [(path.to_string(), Vec::new()), ("/public/next".to_owned(), Vec::new())], "{name}");
        strict.assert_clean(name);
    }

    // The complete handshake: a tunnel. What follows is WebSocket data the
    // gateway passes on unjudged (docs/threat-model.md); it reaches the
    // upstream only as tunnel bytes, never as a request the upstream parses.
    strict.clear();
    let mut client = Raw::connect(gw.addr).await;
    let mut bytes = head("GET /ws/accept HTTP/1.1", &WS);
    bytes.extend_from_slice(&behind);
    client.send(&bytes).await;
    let switched = client.response().await.unwrap();
    assert_eq!(switched.status, 101);
    let header = |name: &str| switched.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.to_ascii_lowercase());
    assert_eq!(header("upgrade").as_deref(), Some("websocket"));
    assert_eq!(header("sec-websocket-accept").as_deref(), Some("s3pplmbitxaq9kygzzhzrbk+xoo="));
    // The upstream echoes the tunnel: the pipelined bytes come back verbatim.
    while client.buf.len() < behind.len() {
        assert!(client.more().await, "tunnel closed early");
    }
    assert_eq!(client.buf, behind);
    let seen = strict.seen();
    assert_eq!(seen.len(), 1, "{seen:#?}");
    assert_eq!((seen[0].target.as_str(), seen[0].header("upgrade").as_deref()), ("/ws/accept", Some("websocket")));
    assert_eq!(seen[0].tunnel, behind);
    strict.assert_clean("tunnel");
}

/// Answers the upstream breaks off half way are not the client's resets: a
/// flaky upstream does not get its clients' connections closed as floods.
#[tokio::test]
async fn http2_upstream_failures_are_not_a_flood() {
    use h2raw::*;
    let strict = Strict::with(|seen| {
        if seen.target.starts_with("/public/broken/") {
            Answer::RawClose(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly part".to_vec())
        } else {
            Answer::Ok
        }
    })
    .await;
    let gw = gateway(&config(strict.addr)).await;
    let mut client = H2::connect(gw.addr).await;
    for i in 0..150u32 {
        let id = 2 * i + 1;
        client.headers(id, &get("public.test", &format!("/public/broken/{id}"), &[]), true).await;
        let outcome = client.outcome(id).await;
        assert!(matches!(outcome, Outcome::Reset(_)), "stream {id}: {outcome:?}");
    }
    client.headers(301, &get("public.test", "/public/ok", &[]), true).await;
    assert_eq!(client.outcome(301).await.status(), Some(200));
    assert!(client.goaway.is_none(), "{:?}", client.goaway);
    assert!(gw.events.reasons().iter().all(|r| *r != "conn.flood"), "{:?}", gw.events.reasons());
}
