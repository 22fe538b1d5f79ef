//! A strict recording upstream: a raw TCP HTTP/1.1 server that parses every
//! request exactly as the bytes arrive (httparse for the head, its own strict
//! reader for bodies), records each request it parsed, and records every byte
//! it did not expect.
//!
//! Hostile-input tests send a request through the gateway and then assert two
//! things here: the upstream saw exactly the requests the gateway admitted
//! ([`Strict::seen`]), and nothing else arrived ([`Strict::unexpected`]):
//! no second request hidden in a body, no ambiguous framing, no bare LF, no
//! obs-fold, no chunk extensions, no bytes after a connection's last request.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// One request the upstream parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// Which accepted connection it came on (0, 1, …).
    pub conn: usize,
    pub method: String,
    /// The request target as sent.
    pub target: String,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub version: u8,
    /// Header names lower-cased, values as bytes, in order.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The body after de-chunking.
    pub body: Vec<u8>,
    /// Trailer fields of a chunked body.
    pub trailers: Vec<(String, Vec<u8>)>,
    /// Bytes received inside an upgraded tunnel after this request's 101.
    pub tunnel: Vec<u8>,
}

impl Seen {
    /// The values of header `name` (lower-case), in order.
    pub fn all(&self, name: &str) -> Vec<&[u8]> {
        self.headers.iter().filter(|(n, _)| n == name).map(|(_, v)| v.as_slice()).collect()
    }

    /// The one value of header `name`; panics when it appears more than once.
    pub fn header(&self, name: &str) -> Option<String> {
        let all = self.all(name);
        assert!(all.len() <= 1, "{name} reached the upstream {} times: {self:?}", all.len());
        all.first().map(|v| String::from_utf8_lossy(v).into_owned())
    }

    /// Whether header `name` reached the upstream at all.
    pub fn has(&self, name: &str) -> bool {
        self.headers.iter().any(|(n, _)| n == name)
    }
}

/// Something the upstream did not expect to receive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unexpected {
    pub conn: usize,
    pub what: String,
    /// Up to 256 bytes of what arrived, for the failure message.
    pub bytes: Vec<u8>,
}

/// How the upstream answers a request.
#[derive(Debug, Clone)]
pub enum Answer {
    /// `200` with body `ok`.
    Ok,
    /// A status, extra headers and a body (with `Content-Length`).
    Status(u16, Vec<(String, String)>, Vec<u8>),
    /// These exact bytes, then close the connection.
    RawClose(Vec<u8>),
    /// `101 Switching Protocols` with these headers; then every byte is
    /// echoed back and recorded in the request's [`Seen::tunnel`].
    Switch(Vec<(String, String)>),
    /// Close with a TCP reset, nothing written.
    Reset,
    /// These exact bytes (say, a head and part of a body), then a TCP reset.
    RawReset(Vec<u8>),
    /// Never answer; the connection stays open until the gateway closes it
    /// (then [`Strict::open_connections`] counts it closed).
    Stall,
    /// These exact bytes, then nothing more, as [`Answer::Stall`].
    RawStall(Vec<u8>),
}

type Handler = Arc<dyn Fn(&Seen) -> Answer + Send + Sync>;

#[derive(Debug, Default)]
struct State {
    seen: Vec<Seen>,
    unexpected: Vec<Unexpected>,
    connections: usize,
    open: usize,
}

/// A running strict upstream; stops accepting when dropped.
pub struct Strict {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Strict {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Strict {
    /// An upstream answering every request with `200 ok`.
    pub async fn start() -> Self {
        Self::with(|_| Answer::Ok).await
    }

    /// An upstream answering with `handler`.
    pub async fn with(handler: impl Fn(&Seen) -> Answer + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State::default()));
        let handler: Handler = Arc::new(handler);
        let shared = state.clone();
        let task = tokio::spawn(async move {
            // Connection tasks end with the upstream (the acceptor's drop
            // aborts this task, whose JoinSet aborts them).
            let mut connections = tokio::task::JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
                let conn = {
                    let mut s = shared.lock().unwrap();
                    s.connections += 1;
                    s.open += 1;
                    s.connections - 1
                };
                let state = shared.clone();
                let handler = handler.clone();
                connections.spawn(async move {
                    serve(conn, stream, &state, &handler).await;
                    state.lock().unwrap().open -= 1;
                });
                while connections.try_join_next().is_some() {}
            }
        });
        Self { addr, state, task }
    }

    /// Every request parsed so far, oldest first.
    pub fn seen(&self) -> Vec<Seen> {
        self.state.lock().unwrap().seen.clone()
    }

    /// Everything that arrived and was not a well-formed request.
    pub fn unexpected(&self) -> Vec<Unexpected> {
        self.state.lock().unwrap().unexpected.clone()
    }

    /// Connections currently open.
    pub fn open_connections(&self) -> usize {
        self.state.lock().unwrap().open
    }

    /// Forgets what was recorded (between the rows of a table-driven test).
    pub fn clear(&self) {
        let mut s = self.state.lock().unwrap();
        s.seen.clear();
        s.unexpected.clear();
    }

    /// Panics when anything unexpected arrived.
    pub fn assert_clean(&self, case: &str) {
        let unexpected = self.unexpected();
        assert!(
            unexpected.is_empty(),
            "{case}: the upstream received bytes it did not expect: {:#?}",
            unexpected
                .iter()
                .map(|u| format!("conn {}: {}: {:?}", u.conn, u.what, String::from_utf8_lossy(&u.bytes)))
                .collect::<Vec<_>>()
        );
    }

    /// Waits until `n` requests were parsed (or the deadline passes) and
    /// returns them.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Seen> {
        let deadline = Instant::now() + timeout;
        loop {
            let seen = self.seen();
            if seen.len() >= n || Instant::now() >= deadline {
                return seen;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

fn flag(state: &Mutex<State>, conn: usize, what: impl Into<String>, bytes: &[u8]) {
    let bytes = bytes[..bytes.len().min(256)].to_vec();
    state.lock().unwrap().unexpected.push(Unexpected { conn, what: what.into(), bytes });
}

/// Reads requests off one connection until it closes.
async fn serve(conn: usize, mut stream: TcpStream, state: &Mutex<State>, handler: &Handler) {
    let mut buf: Vec<u8> = Vec::new();
    loop {
        let head_len = loop {
            if let Some(end) = find(&buf, b"\r\n\r\n") {
                break end + 4;
            }
            if buf.len() > 64 * 1024 {
                flag(state, conn, "request head over 64 KiB", &buf);
                return;
            }
            if read_more(&mut stream, &mut buf).await == 0 {
                if !buf.is_empty() {
                    flag(state, conn, "connection closed inside a request head", &buf);
                }
                return;
            }
        };
        let head = buf[..head_len].to_vec();
        if let Err(what) = check_head_bytes(&head) {
            flag(state, conn, what, &head);
            return;
        }
        let mut headers = [httparse::EMPTY_HEADER; 128];
        let mut request = httparse::Request::new(&mut headers);
        match request.parse(&head) {
            Ok(httparse::Status::Complete(n)) if n == head_len => {}
            other => {
                flag(state, conn, format!("unparsable request head: {other:?}"), &head);
                return;
            }
        }
        let mut seen = Seen {
            conn,
            method: request.method.unwrap_or_default().to_owned(),
            target: request.path.unwrap_or_default().to_owned(),
            version: request.version.unwrap_or_default(),
            headers: request.headers.iter().map(|h| (h.name.to_ascii_lowercase(), h.value.to_vec())).collect(),
            body: Vec::new(),
            trailers: Vec::new(),
            tunnel: Vec::new(),
        };
        buf.drain(..head_len);
        if let Err(what) = check_framing(&seen) {
            flag(state, conn, what, &head);
            return;
        }
        let chunked = seen.all("transfer-encoding").first().is_some_and(|v| v.eq_ignore_ascii_case(b"chunked"));
        let body = if chunked {
            read_chunked(&mut stream, &mut buf, &mut seen.trailers).await
        } else {
            let len = seen.header("content-length").map_or(0, |v| v.parse::<usize>().unwrap_or(0));
            read_exact(&mut stream, &mut buf, len).await
        };
        match body {
            Ok(body) => seen.body = body,
            Err(what) => {
                flag(state, conn, what, &buf);
                return;
            }
        }
        let answer = handler(&seen);
        let index = {
            let mut s = state.lock().unwrap();
            s.seen.push(seen.clone());
            s.seen.len() - 1
        };
        let keep_alive = !seen.all("connection").iter().any(|v| v.eq_ignore_ascii_case(b"close"));
        match answer {
            Answer::Ok => write(&mut stream, 200, &[], b"ok", keep_alive).await,
            Answer::Status(status, headers, body) => write(&mut stream, status, &headers, &body, keep_alive).await,
            Answer::RawClose(bytes) => {
                let _ = stream.write_all(&bytes).await;
                let _ = stream.shutdown().await;
                return;
            }
            Answer::Switch(headers) => {
                let mut head = String::from("HTTP/1.1 101 Switching Protocols\r\n");
                for (name, value) in &headers {
                    head.push_str(&format!("{name}: {value}\r\n"));
                }
                head.push_str("\r\n");
                let _ = stream.write_all(head.as_bytes()).await;
                tunnel(&mut stream, buf, state, index).await;
                return;
            }
            Answer::Reset => {
                let _ = stream.set_zero_linger();
                return;
            }
            Answer::RawReset(bytes) => {
                let _ = stream.write_all(&bytes).await;
                let _ = stream.set_zero_linger();
                return;
            }
            Answer::Stall => {
                hold(conn, &mut stream, buf, state).await;
                return;
            }
            Answer::RawStall(bytes) => {
                let _ = stream.write_all(&bytes).await;
                hold(conn, &mut stream, buf, state).await;
                return;
            }
        }
        if !keep_alive {
            // Anything after a `Connection: close` request was not expected.
            let mut rest = buf;
            let _ = tokio::time::timeout(Duration::from_millis(50), read_more(&mut stream, &mut rest)).await;
            if !rest.is_empty() {
                flag(state, conn, "bytes after a Connection: close request", &rest);
            }
            return;
        }
    }
}

/// Keeps a stalled connection open until the gateway closes it; anything it
/// sends meanwhile (a request pipelined behind one never answered) is flagged.
async fn hold(conn: usize, stream: &mut TcpStream, mut pending: Vec<u8>, state: &Mutex<State>) {
    while read_more(stream, &mut pending).await > 0 {}
    if !pending.is_empty() {
        flag(state, conn, "bytes on a connection whose request was never answered", &pending);
    }
}

/// Raw head checks httparse is lenient about: bare LF, obs-fold, NUL.
fn check_head_bytes(head: &[u8]) -> Result<(), String> {
    for (i, &b) in head.iter().enumerate() {
        if b == b'\n' && (i == 0 || head[i - 1] != b'\r') {
            return Err("bare LF in the request head".into());
        }
        if b == b'\r' && head.get(i + 1) != Some(&b'\n') {
            return Err("bare CR in the request head".into());
        }
        if b == 0 {
            return Err("NUL in the request head".into());
        }
        if b == b'\n' && matches!(head.get(i + 1), Some(b' ' | b'\t')) {
            return Err("obs-fold (a header line starting with whitespace)".into());
        }
    }
    Ok(())
}

/// One unambiguous framing per request, as RFC 9112 §6 asks of a sender.
fn check_framing(seen: &Seen) -> Result<(), String> {
    let te = seen.all("transfer-encoding");
    let cl = seen.all("content-length");
    if !te.is_empty() && !cl.is_empty() {
        return Err("both Transfer-Encoding and Content-Length".into());
    }
    if te.len() > 1 || te.first().is_some_and(|v| !v.eq_ignore_ascii_case(b"chunked")) {
        return Err(format!("Transfer-Encoding other than one `chunked`: {te:?}"));
    }
    if cl.len() > 1 {
        return Err("more than one Content-Length".into());
    }
    if let Some(v) = cl.first()
        && (v.is_empty() || !v.iter().all(u8::is_ascii_digit) || (v.len() > 1 && v[0] == b'0'))
    {
        return Err(format!("Content-Length not plain digits: {:?}", String::from_utf8_lossy(v)));
    }
    if seen.all("host").len() != 1 {
        return Err(format!("{} Host headers", seen.all("host").len()));
    }
    Ok(())
}

async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> usize {
    let mut chunk = [0u8; 16 * 1024];
    match stream.read(&mut chunk).await {
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            n
        }
        Err(_) => 0,
    }
}

async fn read_exact(stream: &mut TcpStream, buf: &mut Vec<u8>, len: usize) -> Result<Vec<u8>, String> {
    while buf.len() < len {
        if read_more(stream, buf).await == 0 {
            return Err(format!("connection closed after {} of {len} body bytes", buf.len()));
        }
    }
    Ok(buf.drain(..len).collect())
}

async fn read_line(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Result<Vec<u8>, String> {
    loop {
        if let Some(end) = find(buf, b"\r\n") {
            let line = buf[..end].to_vec();
            buf.drain(..end + 2);
            if line.contains(&b'\n') || line.contains(&b'\r') {
                return Err("bare CR or LF in chunked framing".into());
            }
            return Ok(line);
        }
        if buf.len() > 8 * 1024 {
            return Err("chunk line over 8 KiB".into());
        }
        if read_more(stream, buf).await == 0 {
            return Err("connection closed inside chunked framing".into());
        }
    }
}

async fn read_chunked(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    trailers: &mut Vec<(String, Vec<u8>)>,
) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    loop {
        let line = read_line(stream, buf).await?;
        if line.is_empty() || line.len() > 16 || !line.iter().all(u8::is_ascii_hexdigit) {
            return Err(format!("chunk size line not plain hex: {:?}", String::from_utf8_lossy(&line)));
        }
        let size = usize::from_str_radix(std::str::from_utf8(&line).unwrap(), 16).map_err(|e| e.to_string())?;
        if size == 0 {
            break;
        }
        let data = read_exact(stream, buf, size + 2).await?;
        if !data.ends_with(b"\r\n") {
            return Err("chunk data not followed by CRLF".into());
        }
        body.extend_from_slice(&data[..size]);
    }
    loop {
        let line = read_line(stream, buf).await?;
        if line.is_empty() {
            return Ok(body);
        }
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            return Err("trailer line without a colon".into());
        };
        let name = String::from_utf8_lossy(&line[..colon]).to_ascii_lowercase();
        trailers.push((name, line[colon + 1..].trim_ascii().to_vec()));
    }
}

async fn write(stream: &mut TcpStream, status: u16, headers: &[(String, String)], body: &[u8], keep_alive: bool) {
    let mut head = format!("HTTP/1.1 {status} {}\r\ncontent-length: {}\r\n", reason(status), body.len());
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if !keep_alive {
        head.push_str("connection: close\r\n");
    }
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    out.extend_from_slice(body);
    let _ = stream.write_all(&out).await;
}

fn reason(status: u16) -> &'static str {
    http::StatusCode::from_u16(status).ok().and_then(|s| s.canonical_reason()).unwrap_or("Status")
}

/// Echoes the tunnel's bytes back and records them on request `index`.
async fn tunnel(stream: &mut TcpStream, mut pending: Vec<u8>, state: &Mutex<State>, index: usize) {
    loop {
        if !pending.is_empty() {
            state.lock().unwrap().seen[index].tunnel.extend_from_slice(&pending);
            if stream.write_all(&pending).await.is_err() {
                return;
            }
            pending.clear();
        }
        if read_more(stream, &mut pending).await == 0 {
            return;
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
