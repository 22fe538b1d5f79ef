//! A raw HTTP/2 client for hostile-input tests: every frame is written byte
//! by byte, so a test can send what no conforming client library would
//! (malformed header blocks, pseudo-header games, reset and CONTINUATION
//! floods) and see exactly how the gateway answers: a response, a
//! `RST_STREAM`, a `GOAWAY` or a closed connection.
//!
//! Requests are encoded with HPACK literals without indexing and without
//! Huffman coding, so any byte can be put in a name or value. Answers are
//! decoded with a complete HPACK decoder (static and dynamic table, Huffman),
//! because the gateway's encoder uses all of it.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The client connection preface (RFC 9113 §3.4).
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

pub const DATA: u8 = 0x0;
pub const HEADERS: u8 = 0x1;
pub const RST_STREAM: u8 = 0x3;
pub const SETTINGS: u8 = 0x4;
pub const PING: u8 = 0x6;
pub const GOAWAY: u8 = 0x7;
pub const WINDOW_UPDATE: u8 = 0x8;
pub const CONTINUATION: u8 = 0x9;

pub const END_STREAM: u8 = 0x1;
pub const ACK: u8 = 0x1;
pub const END_HEADERS: u8 = 0x4;

/// Error codes (RFC 9113 §7).
pub const PROTOCOL_ERROR: u32 = 0x1;
pub const CANCEL: u32 = 0x8;
pub const ENHANCE_YOUR_CALM: u32 = 0xb;

/// How long a read waits before the test fails (never a timing assertion).
const PATIENCE: Duration = Duration::from_secs(10);

/// One frame as it arrived; HEADERS (with their CONTINUATIONs) decoded.
#[derive(Debug, Clone)]
pub struct Frame {
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
    pub payload: Vec<u8>,
    /// The decoded header block of a HEADERS frame.
    pub headers: Vec<(String, Vec<u8>)>,
}

/// Decoded header fields: lower-case names, raw values.
pub type Fields = Vec<(String, Vec<u8>)>;

/// How a stream ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A response: status, headers (lower-case names) and body.
    Response { status: u16, headers: Vec<(String, Vec<u8>)>, body: Vec<u8> },
    /// The server reset the stream with this error code.
    Reset(u32),
    /// The server sent GOAWAY with this error code, not processing the stream.
    GoAway(u32),
    /// The connection closed before the stream ended.
    Closed,
}

impl Outcome {
    /// The `error` of a gateway refusal's JSON body.
    pub fn reason(&self) -> Option<String> {
        match self {
            Self::Response { body, .. } => {
                serde_json::from_slice::<serde_json::Value>(body).ok()?["error"].as_str().map(str::to_owned)
            }
            _ => None,
        }
    }

    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Response { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// An HPACK header block of literals without indexing, new names, no
/// Huffman: the bytes go on the wire exactly as given.
pub fn block(fields: &[(&[u8], &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in fields {
        out.push(0x00);
        integer(&mut out, 0, 7, name.len());
        out.extend_from_slice(name);
        integer(&mut out, 0, 7, value.len());
        out.extend_from_slice(value);
    }
    out
}

/// A header block for a GET of `path` with these extra fields.
pub fn get(authority: &str, path: &str, extra: &[(&[u8], &[u8])]) -> Vec<u8> {
    let mut fields: Vec<(&[u8], &[u8])> = vec![
        (b":method", b"GET"),
        (b":scheme", b"http"),
        (b":authority", authority.as_bytes()),
        (b":path", path.as_bytes()),
    ];
    fields.extend_from_slice(extra);
    block(&fields)
}

/// HPACK prefix integer (RFC 7541 §5.1) with `flags` in the first byte's
/// high bits.
fn integer(out: &mut Vec<u8>, flags: u8, prefix: u8, mut value: usize) {
    let max = (1usize << prefix) - 1;
    if value < max {
        out.push(flags | u8::try_from(value).unwrap());
        return;
    }
    out.push(flags | u8::try_from(max).unwrap());
    value -= max;
    while value >= 128 {
        out.push(u8::try_from(value % 128).unwrap() | 0x80);
        value /= 128;
    }
    out.push(u8::try_from(value).unwrap());
}

/// The bytes of one frame.
pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).unwrap();
    let mut out = Vec::with_capacity(9 + payload.len());
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// An HTTP/2 connection with prior knowledge.
pub struct H2 {
    stream: TcpStream,
    buf: Vec<u8>,
    decoder: Decoder,
    /// A HEADERS frame waiting for its CONTINUATIONs.
    partial: Option<Frame>,
    /// Frames read while waiting for something else.
    pub frames: Vec<Frame>,
    /// The GOAWAY the server sent: (last stream id, error code).
    pub goaway: Option<(u32, u32)>,
    pub eof: bool,
}

impl H2 {
    /// Connects, sends the preface and empty SETTINGS.
    pub async fn connect(addr: SocketAddr) -> Self {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.set_nodelay(true).unwrap();
        let mut hello = PREFACE.to_vec();
        hello.extend(frame(SETTINGS, 0, 0, &[]));
        stream.write_all(&hello).await.unwrap();
        Self {
            stream,
            buf: Vec::new(),
            decoder: Decoder::new(),
            partial: None,
            frames: Vec::new(),
            goaway: None,
            eof: false,
        }
    }

    /// Writes raw bytes; a server that already closed may refuse them.
    pub async fn send(&mut self, bytes: &[u8]) {
        let _ = self.stream.write_all(bytes).await;
    }

    pub async fn headers(&mut self, stream: u32, block: &[u8], end_stream: bool) {
        let flags = END_HEADERS | if end_stream { END_STREAM } else { 0 };
        self.send(&frame(HEADERS, flags, stream, block)).await;
    }

    pub async fn rst(&mut self, stream: u32, code: u32) {
        self.send(&frame(RST_STREAM, 0, stream, &code.to_be_bytes())).await;
    }

    /// Sends a PING and reads until its ACK: every frame sent before it has
    /// been processed by the server. `false` when the connection ended first.
    pub async fn ping(&mut self) -> bool {
        let payload = *b"portcull";
        self.send(&frame(PING, 0, 0, &payload)).await;
        while let Some(f) = self.next().await {
            if f.kind == PING && f.flags & ACK != 0 && f.payload == payload {
                return true;
            }
            self.frames.push(f);
        }
        false
    }

    /// The next frame (SETTINGS and PINGs from the server are acknowledged
    /// here); `None` when the connection closed.
    pub async fn next(&mut self) -> Option<Frame> {
        loop {
            if self.buf.len() >= 9 {
                let len = usize::from(self.buf[0]) << 16 | usize::from(self.buf[1]) << 8 | usize::from(self.buf[2]);
                if self.buf.len() >= 9 + len {
                    let head: Vec<u8> = self.buf.drain(..9).collect();
                    let payload: Vec<u8> = self.buf.drain(..len).collect();
                    let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
                    let f = Frame { kind: head[3], flags: head[4], stream, payload, headers: Vec::new() };
                    if let Some(f) = self.accept(f).await {
                        return Some(f);
                    }
                    continue;
                }
            }
            if self.eof {
                return None;
            }
            let mut chunk = [0u8; 16 * 1024];
            match tokio::time::timeout(PATIENCE, self.stream.read(&mut chunk)).await {
                Err(_) => panic!("no frame from the server within {PATIENCE:?}"),
                Ok(Ok(0) | Err(_)) => self.eof = true,
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Handles connection-level frames; returns the frames a test sees.
    async fn accept(&mut self, mut f: Frame) -> Option<Frame> {
        match f.kind {
            SETTINGS if f.flags & ACK == 0 => {
                self.send(&frame(SETTINGS, ACK, 0, &[])).await;
                None
            }
            PING if f.flags & ACK == 0 => {
                let payload = f.payload.clone();
                self.send(&frame(PING, ACK, 0, &payload)).await;
                None
            }
            GOAWAY => {
                let last = u32::from_be_bytes([f.payload[0], f.payload[1], f.payload[2], f.payload[3]]) & 0x7fff_ffff;
                let code = u32::from_be_bytes([f.payload[4], f.payload[5], f.payload[6], f.payload[7]]);
                self.goaway = Some((last, code));
                Some(f)
            }
            HEADERS => {
                let mut fragment = f.payload.clone();
                if f.flags & 0x8 != 0 {
                    // PADDED
                    let pad = usize::from(fragment[0]);
                    fragment = fragment[1..fragment.len() - pad].to_vec();
                }
                if f.flags & 0x20 != 0 {
                    // PRIORITY
                    fragment.drain(..5);
                }
                f.payload = fragment;
                if f.flags & END_HEADERS == 0 {
                    self.partial = Some(f);
                    return None;
                }
                f.headers = self.decoder.decode(&f.payload);
                Some(f)
            }
            CONTINUATION => {
                let mut partial = self.partial.take().expect("CONTINUATION without HEADERS");
                partial.payload.extend_from_slice(&f.payload);
                if f.flags & END_HEADERS == 0 {
                    self.partial = Some(partial);
                    return None;
                }
                partial.headers = self.decoder.decode(&partial.payload);
                Some(partial)
            }
            WINDOW_UPDATE | SETTINGS => None,
            _ => Some(f),
        }
    }

    /// Reads until `stream` ends: its response, its reset, a GOAWAY that
    /// leaves it unprocessed, or the end of the connection.
    pub async fn outcome(&mut self, stream: u32) -> Outcome {
        // Frames read earlier (while pinging) come first.
        let mut pending: VecDeque<Frame> = std::mem::take(&mut self.frames).into();
        let mut response: Option<(u16, Fields)> = None;
        let mut body = Vec::new();
        loop {
            let f = match pending.pop_front() {
                Some(f) => f,
                None => match self.next().await {
                    Some(f) => f,
                    None => {
                        return match self.goaway {
                            Some((last, code)) if last < stream => Outcome::GoAway(code),
                            _ => Outcome::Closed,
                        };
                    }
                },
            };
            if f.stream != stream {
                if f.kind == GOAWAY
                    && let Some((last, code)) = self.goaway
                    && last < stream
                {
                    return Outcome::GoAway(code);
                }
                if f.stream != 0 {
                    self.frames.push(f);
                }
                continue;
            }
            match f.kind {
                HEADERS if response.is_none() => {
                    let status = f
                        .headers
                        .iter()
                        .find(|(n, _)| n == ":status")
                        .map(|(_, v)| std::str::from_utf8(v).unwrap().parse().unwrap())
                        .expect("response without :status");
                    let headers = f.headers.iter().filter(|(n, _)| !n.starts_with(':')).cloned().collect();
                    response = Some((status, headers));
                }
                DATA => body.extend_from_slice(&f.payload),
                RST_STREAM => {
                    return Outcome::Reset(u32::from_be_bytes([
                        f.payload[0],
                        f.payload[1],
                        f.payload[2],
                        f.payload[3],
                    ]));
                }
                _ => {}
            }
            if f.flags & END_STREAM != 0
                && (f.kind == DATA || f.kind == HEADERS)
                && let Some((status, headers)) = response.take()
            {
                return Outcome::Response { status, headers, body };
            }
        }
    }

    /// Reads until the server closes the connection; the GOAWAY it sent, if any.
    pub async fn until_closed(&mut self) -> Option<(u32, u32)> {
        while let Some(f) = self.next().await {
            if f.stream != 0 {
                self.frames.push(f);
            }
        }
        self.goaway
    }
}

/// The HPACK static table (RFC 7541 Appendix A).
const STATIC: [(&str, &str); 61] = [
    (":authority", ""),
    (":method", "GET"),
    (":method", "POST"),
    (":path", "/"),
    (":path", "/index.html"),
    (":scheme", "http"),
    (":scheme", "https"),
    (":status", "200"),
    (":status", "204"),
    (":status", "206"),
    (":status", "304"),
    (":status", "400"),
    (":status", "404"),
    (":status", "500"),
    ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"),
    ("accept-language", ""),
    ("accept-ranges", ""),
    ("accept", ""),
    ("access-control-allow-origin", ""),
    ("age", ""),
    ("allow", ""),
    ("authorization", ""),
    ("cache-control", ""),
    ("content-disposition", ""),
    ("content-encoding", ""),
    ("content-language", ""),
    ("content-length", ""),
    ("content-location", ""),
    ("content-range", ""),
    ("content-type", ""),
    ("cookie", ""),
    ("date", ""),
    ("etag", ""),
    ("expect", ""),
    ("expires", ""),
    ("from", ""),
    ("host", ""),
    ("if-match", ""),
    ("if-modified-since", ""),
    ("if-none-match", ""),
    ("if-range", ""),
    ("if-unmodified-since", ""),
    ("last-modified", ""),
    ("link", ""),
    ("location", ""),
    ("max-forwards", ""),
    ("proxy-authenticate", ""),
    ("proxy-authorization", ""),
    ("range", ""),
    ("referer", ""),
    ("refresh", ""),
    ("retry-after", ""),
    ("server", ""),
    ("set-cookie", ""),
    ("strict-transport-security", ""),
    ("transfer-encoding", ""),
    ("user-agent", ""),
    ("vary", ""),
    ("via", ""),
    ("www-authenticate", ""),
];

/// Code lengths of the HPACK Huffman code (RFC 7541 Appendix B) for bytes
/// 0–255. The code is canonical, so the lengths determine the codes.
const HUFFMAN_LENGTHS: [u8; 256] = [
    13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 30, 28, 28, 28, 28, 28, 28,
    28, 28, 28, 6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6, 5, 5, 5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12,
    10, 13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6, 15, 5, 6,
    5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6, 6, 5, 6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28, 20, 22, 20, 20, 22, 22,
    22, 23, 22, 23, 23, 23, 23, 23, 24, 23, 24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24, 22, 21, 20,
    22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23, 21, 21, 22, 21, 23, 22, 23, 23, 20, 22, 22, 22, 23, 22, 22, 23,
    26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25, 19, 21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28,
    27, 27, 27, 20, 24, 20, 21, 22, 21, 21, 23, 22, 22, 25, 25, 24, 24, 26, 23, 26, 27, 26, 26, 27, 27, 27, 27, 27, 28,
    27, 27, 27, 27, 27, 26,
];

/// (length, code) → byte, built canonically from [`HUFFMAN_LENGTHS`].
fn huffman_codes() -> &'static HashMap<(u8, u32), u8> {
    static CODES: OnceLock<HashMap<(u8, u32), u8>> = OnceLock::new();
    CODES.get_or_init(|| {
        let mut symbols: Vec<(u8, u8)> = (0..=255u8).map(|b| (HUFFMAN_LENGTHS[usize::from(b)], b)).collect();
        symbols.sort_unstable();
        let mut codes = HashMap::new();
        let (mut code, mut len) = (0u32, symbols[0].0);
        for (i, &(l, b)) in symbols.iter().enumerate() {
            if i > 0 {
                code = (code + 1) << (l - len);
            }
            len = l;
            codes.insert((l, code), b);
        }
        codes
    })
}

fn huffman_decode(input: &[u8]) -> Vec<u8> {
    let codes = huffman_codes();
    let mut out = Vec::new();
    let (mut code, mut len) = (0u32, 0u8);
    for byte in input {
        for bit in (0..8).rev() {
            code = code << 1 | u32::from(byte >> bit & 1);
            len += 1;
            if let Some(&b) = codes.get(&(len, code)) {
                out.push(b);
                code = 0;
                len = 0;
            }
            assert!(len <= 30, "invalid Huffman code");
        }
    }
    // What remains is padding: fewer than 8 one bits.
    assert!(len < 8 && code == (1 << len) - 1, "invalid Huffman padding");
    out
}

/// An HPACK decoder (RFC 7541) for the server's answers.
struct Decoder {
    table: VecDeque<(String, Vec<u8>)>,
    size: usize,
    max: usize,
}

impl Decoder {
    fn new() -> Self {
        Self { table: VecDeque::new(), size: 0, max: 4096 }
    }

    fn entry(&self, index: usize) -> (String, Vec<u8>) {
        assert!(index > 0, "HPACK index 0");
        if index <= STATIC.len() {
            let (n, v) = STATIC[index - 1];
            (n.to_owned(), v.as_bytes().to_vec())
        } else {
            self.table[index - STATIC.len() - 1].clone()
        }
    }

    fn evict(&mut self) {
        while self.size > self.max {
            let (n, v) = self.table.pop_back().unwrap();
            self.size -= n.len() + v.len() + 32;
        }
    }

    fn decode(&mut self, mut src: &[u8]) -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::new();
        while let Some(&first) = src.first() {
            if first & 0x80 != 0 {
                let index = read_integer(&mut src, 7);
                out.push(self.entry(index));
            } else if first & 0x40 != 0 {
                let field = self.literal(&mut src, 6);
                self.size += field.0.len() + field.1.len() + 32;
                self.table.push_front(field.clone());
                self.evict();
                out.push(field);
            } else if first & 0x20 != 0 {
                self.max = read_integer(&mut src, 5);
                self.evict();
            } else {
                out.push(self.literal(&mut src, 4));
            }
        }
        out
    }

    fn literal(&self, src: &mut &[u8], prefix: u8) -> (String, Vec<u8>) {
        let index = read_integer(src, prefix);
        let name = if index == 0 { String::from_utf8(read_string(src)).unwrap() } else { self.entry(index).0 };
        (name, read_string(src))
    }
}

fn read_integer(src: &mut &[u8], prefix: u8) -> usize {
    let max = (1usize << prefix) - 1;
    let mut value = usize::from(src[0]) & max;
    *src = &src[1..];
    if value < max {
        return value;
    }
    let mut shift = 0;
    loop {
        let b = src[0];
        *src = &src[1..];
        value += (usize::from(b) & 0x7f) << shift;
        shift += 7;
        if b & 0x80 == 0 {
            return value;
        }
    }
}

fn read_string(src: &mut &[u8]) -> Vec<u8> {
    let huffman = src[0] & 0x80 != 0;
    let len = read_integer(src, 7);
    let raw = &src[..len];
    *src = &src[len..];
    if huffman { huffman_decode(raw) } else { raw.to_vec() }
}

#[test]
fn huffman_round_trip_of_rfc_examples() {
    // RFC 7541 C.4.1: "www.example.com".
    let encoded = [0xf1, 0xe3, 0xc2, 0xe5, 0xf2, 0x3a, 0x6b, 0xa0, 0xab, 0x90, 0xf4, 0xff];
    assert_eq!(huffman_decode(&encoded), b"www.example.com");
    // RFC 7541 C.6.1: "302" and "private".
    assert_eq!(huffman_decode(&[0x64, 0x02]), b"302");
    assert_eq!(huffman_decode(&[0xae, 0xc3, 0x77, 0x1a, 0x4b]), b"private");
}
