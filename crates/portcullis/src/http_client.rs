//! The gateway's own outbound HTTPS client: OIDC discovery, token and
//! refresh requests, JWKS fetches, webhook deliveries (event sinks, alerts).
//!
//! Defends against talking to an impostor or being stalled by one. Decision
//! rules:
//! - TLS with rustls on aws-lc-rs (the tree's one crypto provider), verified
//!   against the system roots or a configured CA bundle.
//! - Plain `http://` only to loopback hosts (`127.0.0.1`, `::1`,
//!   `localhost`), for local providers and tests; any other `http://` URL is
//!   refused before a connection is opened.
//! - Redirects are not followed: an OAuth client must not be redirected to
//!   another token endpoint.
//! - Every request has a deadline (connect, answer and body together) and a
//!   response body cap, so a slow or huge answer cannot hold a worker.
//!
//! Deployment caveat: the system roots are read once, when the client is
//! built; a changed CA bundle needs a restart.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::header::{ACCEPT, CONTENT_TYPE};
use http::{HeaderMap, HeaderValue, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// Why an outbound request failed. Never contains request bodies (they carry
/// client secrets and codes).
#[derive(Debug, thiserror::Error)]
pub enum HttpClientError {
    /// The URL is not an absolute `https://` (or loopback `http://`) URL.
    #[error("refused URL {url}: {reason}")]
    Url {
        /// The URL, without its query (which may carry secrets).
        url: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// TLS could not be set up (CA bundle unreadable, no system roots).
    #[error("TLS setup: {0}")]
    Tls(String),
    /// Connecting or exchanging the request failed.
    #[error("request to {url} failed: {reason}")]
    Request {
        /// The URL, without its query.
        url: String,
        /// Cause.
        reason: String,
    },
    /// No complete answer within the deadline.
    #[error("request to {0} timed out")]
    Timeout(String),
    /// The answer's body is larger than the cap.
    #[error("answer from {url} is larger than {max} bytes")]
    TooLarge {
        /// The URL, without its query.
        url: String,
        /// The cap.
        max: usize,
    },
}

/// Limits of an [`HttpClient`].
#[derive(Debug, Clone, Copy)]
pub struct HttpClientLimits {
    /// Deadline for connecting.
    pub connect_timeout: Duration,
    /// Deadline for the whole exchange, body included.
    pub timeout: Duration,
    /// Largest response body read.
    pub max_body: usize,
}

impl Default for HttpClientLimits {
    fn default() -> Self {
        Self { connect_timeout: Duration::from_secs(5), timeout: Duration::from_secs(10), max_body: 1024 * 1024 }
    }
}

/// See the module docs. Cheap to clone (the pool is shared).
#[derive(Clone)]
pub struct HttpClient {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    limits: HttpClientLimits,
}

impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpClient").field("limits", &self.limits).finish_non_exhaustive()
    }
}

impl HttpClient {
    /// A client trusting `ca` (a PEM bundle) or, when `None`, the system roots.
    ///
    /// # Errors
    /// [`HttpClientError::Tls`] when the bundle is unreadable or no system
    /// roots are found.
    pub fn new(ca: Option<&Path>, limits: HttpClientLimits) -> Result<Self, HttpClientError> {
        let upstream_tls = match ca {
            Some(ca) => Some(crate::config::UpstreamTls {
                ca: Some(crate::tls::load_chain(ca).map_err(|e| HttpClientError::Tls(e.to_string()))?),
                ..crate::config::UpstreamTls::default()
            }),
            None => None,
        };
        let tls = crate::tls::client_config(upstream_tls.as_ref()).map_err(|e| HttpClientError::Tls(e.to_string()))?;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(limits.connect_timeout));
        http.set_nodelay(true);
        let mut tls = (*tls).clone();
        // The builder sets ALPN itself (http/1.1) and refuses a preset list.
        tls.alpn_protocols.clear();
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(4)
            .build(connector);
        Ok(Self { client, limits })
    }

    /// `GET url`.
    ///
    /// # Errors
    /// [`HttpClientError`]; a non-2xx status is not an error.
    pub async fn get(&self, url: &str) -> Result<(StatusCode, HeaderMap, Bytes), HttpClientError> {
        let request = Request::get(checked(url)?)
            .header(ACCEPT, HeaderValue::from_static("application/json"))
            .body(Full::new(Bytes::new()))
            .map_err(|e| request_error(url, &e))?;
        self.send(request).await
    }

    /// `POST url` with an `application/x-www-form-urlencoded` body built from
    /// `form`, and extra `headers` (such as `Authorization`).
    ///
    /// # Errors
    /// [`HttpClientError`]; a non-2xx status is not an error.
    pub async fn post_form(
        &self,
        url: &str,
        headers: &HeaderMap,
        form: &[(&str, &str)],
    ) -> Result<(StatusCode, HeaderMap, Bytes), HttpClientError> {
        let body = form_urlencoded(form);
        let mut request = Request::post(checked(url)?)
            .header(CONTENT_TYPE, HeaderValue::from_static("application/x-www-form-urlencoded"))
            .header(ACCEPT, HeaderValue::from_static("application/json"))
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| request_error(url, &e))?;
        for (name, value) in headers {
            request.headers_mut().insert(name, value.clone());
        }
        self.send(request).await
    }

    /// `POST url` with a JSON `body` (already serialized) and extra
    /// `headers` (such as `Authorization`): webhook deliveries.
    ///
    /// # Errors
    /// [`HttpClientError`]; a non-2xx status is not an error.
    pub async fn post_json(
        &self,
        url: &str,
        headers: &HeaderMap,
        body: Bytes,
    ) -> Result<(StatusCode, HeaderMap, Bytes), HttpClientError> {
        let mut request = Request::post(checked(url)?)
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .body(Full::new(body))
            .map_err(|e| request_error(url, &e))?;
        for (name, value) in headers {
            request.headers_mut().insert(name, value.clone());
        }
        self.send(request).await
    }

    /// Sends any request whose URI passed [`checked`].
    async fn send(&self, request: Request<Full<Bytes>>) -> Result<(StatusCode, HeaderMap, Bytes), HttpClientError> {
        let url = without_query(request.uri());
        let max = self.limits.max_body;
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| HttpClientError::Request { url: url.clone(), reason: error_chain(&e) })?;
            let (parts, body) = response.into_parts();
            let bytes = match Limited::new(body, max).collect().await {
                Ok(collected) => collected.to_bytes(),
                Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                    return Err(HttpClientError::TooLarge { url: url.clone(), max });
                }
                Err(e) => return Err(HttpClientError::Request { url: url.clone(), reason: e.to_string() }),
            };
            Ok((parts.status, parts.headers, bytes))
        };
        match tokio::time::timeout(self.limits.timeout, exchange).await {
            Ok(result) => result,
            Err(_) => Err(HttpClientError::Timeout(url)),
        }
    }
}

/// Parses `url` and applies the scheme rule of the module docs.
fn checked(url: &str) -> Result<Uri, HttpClientError> {
    let refuse = |reason| HttpClientError::Url { url: url.split('?').next().unwrap_or_default().to_owned(), reason };
    let uri: Uri = url.parse().map_err(|_| refuse("not a valid URL"))?;
    let host = uri.host().ok_or_else(|| refuse("no host"))?;
    match uri.scheme_str() {
        Some("https") => Ok(uri),
        Some("http") if crate::config::is_loopback_host(host) => Ok(uri),
        Some("http") => Err(refuse("plain http is allowed only to loopback hosts")),
        _ => Err(refuse("the scheme must be https")),
    }
}

fn without_query(uri: &Uri) -> String {
    let mut url = String::new();
    if let Some(scheme) = uri.scheme_str() {
        url.push_str(scheme);
        url.push_str("://");
    }
    if let Some(authority) = uri.authority() {
        url.push_str(authority.as_str());
    }
    url.push_str(uri.path());
    url
}

fn request_error(url: &str, error: &http::Error) -> HttpClientError {
    HttpClientError::Request { url: url.split('?').next().unwrap_or_default().to_owned(), reason: error.to_string() }
}

/// The error and its causes ("client error (Connect): tcp connect error: …").
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// `application/x-www-form-urlencoded` (WHATWG URL §5.2).
fn form_urlencoded(pairs: &[(&str, &str)]) -> String {
    let mut out = String::new();
    for (i, (name, value)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        encode_component(&mut out, name);
        out.push('=');
        encode_component(&mut out, value);
    }
    out
}

fn encode_component(out: &mut String, text: &str) {
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'*' | b'-' | b'.' | b'_' => out.push(char::from(byte)),
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
}

impl<'c> openidconnect::AsyncHttpClient<'c> for HttpClient {
    type Error = HttpClientError;
    type Future = BoxFuture<'c, Result<openidconnect::HttpResponse, HttpClientError>>;

    fn call(&'c self, request: openidconnect::HttpRequest) -> Self::Future {
        Box::pin(async move {
            let (parts, body) = request.into_parts();
            let url = parts.uri.to_string();
            let uri = checked(&url)?;
            let mut outbound = Request::new(Full::new(Bytes::from(body)));
            *outbound.method_mut() = parts.method;
            *outbound.uri_mut() = uri;
            *outbound.headers_mut() = parts.headers;
            let (status, headers, bytes) = self.send(outbound).await?;
            let mut response = http::Response::new(bytes.to_vec());
            *response.status_mut() = status;
            *response.headers_mut() = headers;
            Ok(response)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scheme_rules() {
        for ok in ["https://id.example.com/x", "http://127.0.0.1:8080/x", "http://[::1]/", "http://localhost:1/"] {
            assert!(checked(ok).is_ok(), "{ok}");
        }
        for bad in ["http://id.example.com/", "ftp://127.0.0.1/", "/relative", "http://10.0.0.1/", "https:///nohost"] {
            assert!(checked(bad).is_err(), "{bad}");
        }
        let Err(HttpClientError::Url { url, .. }) = checked("http://example.com/t?secret=1") else { panic!() };
        assert_eq!(url, "http://example.com/t");
    }

    #[test]
    fn form_encoding() {
        assert_eq!(form_urlencoded(&[("a b", "c&d=e/é"), ("x", "")]), "a+b=c%26d%3De%2F%C3%A9&x=");
    }

    #[tokio::test]
    async fn body_cap_and_plain_http_to_loopback() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(|req: Request<hyper::body::Incoming>| async move {
                        let size = if req.uri().path() == "/big" { 4096 } else { 2 };
                        Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::from(vec![b'x'; size]))))
                    });
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
                });
            }
        });
        let limits = HttpClientLimits { max_body: 1024, ..HttpClientLimits::default() };
        let client = HttpClient::new(None, limits).unwrap();
        let (status, _, body) = client.get(&format!("http://{addr}/small")).await.unwrap();
        assert_eq!((status, body.as_ref()), (StatusCode::OK, b"xx".as_ref()));
        let big = client.get(&format!("http://{addr}/big")).await;
        assert!(matches!(big, Err(HttpClientError::TooLarge { max: 1024, .. })), "{big:?}");
    }
}
