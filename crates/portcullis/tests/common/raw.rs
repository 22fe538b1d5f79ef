//! A raw HTTP/1.1 client: requests written as the exact bytes given (no
//! client library tidies them), responses read one at a time off the same
//! connection, so a test can send a second request after a refusal and see
//! what the gateway did with it.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One response as read off the wire.
#[derive(Debug, Clone)]
pub struct RawResponse {
    pub status: u16,
    /// Header names lower-cased, in order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// The reason code of a gateway refusal (`error` in the JSON body).
    pub fn reason(&self) -> Option<String> {
        let value: serde_json::Value = serde_json::from_slice(&self.body).ok()?;
        value["error"].as_str().map(str::to_owned)
    }
}

/// A connection to the gateway.
pub struct Conn {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    pub async fn open(addr: SocketAddr) -> Self {
        Self { stream: TcpStream::connect(addr).await.unwrap(), buf: Vec::new() }
    }

    pub async fn write(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    /// Reads one response (`Content-Length`, chunked, or none for 1xx, 204,
    /// 304 and HEAD answers when `bodyless`); `None` when the connection
    /// closed (or stayed silent for 10 s) before a whole head arrived.
    pub async fn read_response(&mut self, bodyless: bool) -> Option<RawResponse> {
        let head_end = loop {
            if let Some(end) = find(&self.buf, b"\r\n\r\n") {
                break end + 4;
            }
            if !self.fill().await {
                return None;
            }
        };
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut parsed = httparse::Response::new(&mut headers);
        parsed.parse(&self.buf[..head_end]).unwrap();
        let status = parsed.code.unwrap();
        let headers: Vec<(String, String)> = parsed
            .headers
            .iter()
            .map(|h| (h.name.to_ascii_lowercase(), String::from_utf8_lossy(h.value).into_owned()))
            .collect();
        self.buf.drain(..head_end);
        let mut response = RawResponse { status, headers, body: Vec::new() };
        if bodyless || status < 200 || status == 204 || status == 304 {
            return Some(response);
        }
        if response.header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
            response.body = self.read_chunked().await?;
        } else if let Some(len) = response.header("content-length") {
            let len: usize = len.parse().unwrap();
            while self.buf.len() < len {
                if !self.fill().await {
                    return None;
                }
            }
            response.body = self.buf.drain(..len).collect();
        } else {
            // Delimited by close.
            while self.fill().await {}
            response.body = std::mem::take(&mut self.buf);
        }
        Some(response)
    }

    /// Writes `request` and reads its response.
    pub async fn exchange(&mut self, request: &[u8]) -> Option<RawResponse> {
        self.write(request).await;
        self.read_response(request.starts_with(b"HEAD ")).await
    }

    /// Reads whatever arrives within `wait` into the buffer.
    pub async fn read_for(&mut self, wait: Duration) -> Vec<u8> {
        let _ = tokio::time::timeout(wait, async { while self.fill().await {} }).await;
        std::mem::take(&mut self.buf)
    }

    async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 16 * 1024];
        match tokio::time::timeout(Duration::from_secs(10), self.stream.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
            _ => false,
        }
    }

    async fn read_chunked(&mut self) -> Option<Vec<u8>> {
        let mut body = Vec::new();
        loop {
            let line_end = loop {
                if let Some(end) = find(&self.buf, b"\r\n") {
                    break end;
                }
                if !self.fill().await {
                    return None;
                }
            };
            let size_text = String::from_utf8_lossy(&self.buf[..line_end]).into_owned();
            let size = usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16).unwrap();
            self.buf.drain(..line_end + 2);
            while self.buf.len() < size + 2 {
                if !self.fill().await {
                    return None;
                }
            }
            body.extend(self.buf.drain(..size));
            self.buf.drain(..2);
            if size == 0 {
                return Some(body);
            }
        }
    }
}

/// Opens a connection, writes `request` and reads one response.
pub async fn exchange(addr: SocketAddr, request: &[u8]) -> Option<RawResponse> {
    Conn::open(addr).await.exchange(request).await
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
