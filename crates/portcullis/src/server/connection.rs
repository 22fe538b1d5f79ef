//! One client connection: TLS handshake, HTTP/1.1 or HTTP/2 (hyper), and
//! the defences that belong to a connection rather than a request.
//!
//! Connection defences: a client must send a complete request head within
//! `header_read_timeout` (slowloris); a request body must keep up
//! `min_body_rate` or is cut after `body_timeout` of waiting (slow POST,
//! 408 `request.body_timeout`); a client that does not read its response
//! must keep up `min_send_rate` or its connection is closed after
//! `send_timeout` of waiting (slow read, `conn.send_timeout`); a connection
//! with no request in flight is closed after `idle_timeout`; hyper's read
//! buffer caps the head size above the configured limits, which answer
//! 414/431 themselves. hyper starts
//! the header timer as soon as an HTTP/1.1 connection waits for its next
//! request, so an idle HTTP/1.1 keep-alive connection is closed after the
//! shorter of the two timeouts; `idle_timeout` governs HTTP/2 connections.
//!
//! HTTP/2 abuse is bounded per connection (the constants below, reasons in
//! docs/defaults.md): concurrent streams, streams the client resets before
//! they are accepted, streams the HTTP/2 layer resets for protocol errors,
//! CONTINUATION frames per header block (h2's own bound, derived from the
//! header list size), and streams the client resets before their answer
//! ends (rapid reset, CVE-2023-44487): past a bound and more than half of
//! the connection's streams, the connection gets GOAWAY. Each of these
//! closings is one `conn.flood` event; a GOAWAY for any other protocol
//! error is `conn.malformed`. A single malformed HTTP/2 request is reset
//! (`RST_STREAM`) by the HTTP/2 layer without an event: no request exists
//! for the pipeline to see.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use http::Request;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use pin_project_lite::pin_project;
use portcullis_layers::body::Observed;
use portcullis_layers::pace::{BodyTimedOut, Pace, Paced, Pacer};
use portcullis_layers::{ConnInfo, EventSink};
use portcullis_policy::Reason;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::accept::IpSlot;
use super::emit_connection_event;
use super::worker::OpenConnection;
use crate::gateway::Gateway;
use crate::proxy::ConnHold;

/// Streams open at once on one HTTP/2 connection (RFC 9113 asks for at
/// least 100). Each can hold an upstream connection.
pub(super) const H2_MAX_CONCURRENT_STREAMS: u32 = 100;
/// Streams a client may reset before the gateway accepted them; past this,
/// GOAWAY (h2's default, set here so it cannot drift).
pub(super) const H2_MAX_PENDING_ACCEPT_RESETS: usize = 20;
/// Streams the HTTP/2 layer may reset for the client's protocol errors
/// (malformed headers, a wrong content-length, refused streams) over a
/// connection's life; past this, GOAWAY. A conforming client causes none.
pub(super) const H2_MAX_LOCAL_ERROR_RESETS: usize = 100;
/// Answer bytes buffered per stream ahead of the client's flow-control
/// window: a slow reader holds at most this per stream.
pub(super) const H2_MAX_SEND_BUF: usize = 64 * 1024;
/// Streams the client may reset before their answer ended (rapid reset)
/// before the connection gets GOAWAY, if they are also more than half of its
/// streams. A browser cancels a few; an attack, hundreds.
pub(super) const H2_MAX_PREMATURE_RESETS: u64 = 100;

pub(super) struct Connection {
    pub(super) peer: SocketAddr,
    pub(super) listener: Arc<str>,
    pub(super) current: Arc<ArcSwap<Gateway>>,
    pub(super) shutdown: watch::Receiver<bool>,
    pub(super) events: Arc<dyn EventSink>,
    pub(super) client_cert: Option<Arc<portcullis_layers::ClientCert>>,
    pub(super) hold: ConnHold,
}

/// What a client connection holds while it is open: its place in its
/// worker's count and the gauge, and its share of its address's
/// `max_connections_per_ip`. Each request carries it as a [`ConnHold`].
pub(super) struct Share {
    pub(super) _open: OpenConnection,
    pub(super) _ip_slot: Option<IpSlot>,
}

impl Connection {
    /// Completes the TLS handshake within the header read timeout, then serves.
    pub(super) async fn serve_tls(mut self, stream: TcpStream, acceptor: tokio_rustls::TlsAcceptor) {
        let timeout = self.current.load().config.server.header_read_timeout;
        match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
            Ok(Ok(tls)) => {
                crate::metrics::tls_handshake(&self.listener, "ok");
                let client_cert = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(<[_]>::first)
                    .and_then(crate::tls::client_identity)
                    .map(Arc::new);
                self.client_cert = client_cert;
                self.serve(tls, "https").await;
            }
            Ok(Err(e)) => {
                crate::metrics::tls_handshake(&self.listener, "error");
                self.emit_connection_event(Reason::TlsHandshake, e.to_string());
            }
            Err(_) => {
                crate::metrics::tls_handshake(&self.listener, "timeout");
                self.emit_connection_event(Reason::TlsHandshake, format!("no handshake within {timeout:?}"));
            }
        }
    }

    /// Answers every request with a 308 to the same host and path over HTTPS.
    pub(super) async fn serve_redirect(self, stream: TcpStream, https_port: u16) {
        let timeout = self.current.load().config.server.header_read_timeout;
        let service = hyper::service::service_fn(move |req: Request<Incoming>| async move {
            Ok::<_, Infallible>(redirect_response(&req, https_port))
        });
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder.timer(TokioTimer::new()).header_read_timeout(timeout).keep_alive(false);
        if let Err(e) = builder.serve_connection(TokioIo::new(stream), service).await {
            tracing::debug!(peer = %self.peer, error = %e, "redirect connection ended with an error");
        }
    }

    pub(super) async fn serve<I>(mut self, stream: I, scheme: &'static str)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let gateway = self.current.load_full();
        let server = &gateway.config.server;
        let idle_timeout = server.idle_timeout;
        let in_flight_gauge =
            metrics::gauge!(crate::metrics::REQUESTS_IN_FLIGHT, "listener" => self.listener.to_string());
        let activity = Arc::new(Activity::new(in_flight_gauge));
        let io =
            TokioIo::new(CountingIo { inner: stream, activity: activity.clone(), send: Pacer::new(server.send_pace) });

        let mut builder = auto::Builder::new(TokioExecutor::new());
        // hyper's buffer is a backstop above the configured limits, which
        // answer with their own status and event.
        let head_cap = (server.limits.max_header_bytes + server.limits.max_uri_bytes).saturating_mul(2).max(16 * 1024);
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(server.header_read_timeout)
            .keep_alive(true)
            .max_buf_size(head_cap)
            .max_headers(server.limits.max_header_count.saturating_mul(2).max(64));
        // The header list size also bounds CONTINUATION frames per block (h2
        // allows about list size / frame size + 25%, at least 5).
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(head_cap).unwrap_or(u32::MAX))
            .max_concurrent_streams(H2_MAX_CONCURRENT_STREAMS)
            .max_pending_accept_reset_streams(H2_MAX_PENDING_ACCEPT_RESETS)
            .max_local_error_reset_streams(H2_MAX_LOCAL_ERROR_RESETS)
            .max_send_buf_size(H2_MAX_SEND_BUF)
            .keep_alive_interval(Some(Duration::from_secs(30)));
        // On TLS the protocol was settled by ALPN at handshake time (offers
        // fixed at start); `h2c` governs cleartext listeners only.
        let builder = if server.h2c || scheme == "https" { builder } else { builder.http1_only() };

        // Listeners are fixed for the process's life (a reload that changes
        // them is refused), so the index holds across reloads.
        let listener_index =
            gateway.config.listeners.iter().position(|l| *l.name == *self.listener).unwrap_or(usize::MAX);
        let mut conn_info = ConnInfo::new(self.peer, self.listener.clone(), scheme);
        conn_info.client_cert = self.client_cert.take();
        let current = self.current.clone();
        let service_activity = activity.clone();
        let hold = self.hold.clone();
        let send_pace = server.send_pace;
        let service = hyper::service::service_fn(move |req: Request<Incoming>| {
            let started = Instant::now();
            let gateway = current.load_full();
            // Dropped when the response body ends or the request is abandoned.
            let in_flight = InFlight::begin(service_activity.clone());
            // An HTTP/2 stream abandoned before its answer ended was reset by
            // the client (or the connection ended): counted against rapid reset.
            let stream = (req.version() == http::Version::HTTP_2).then(|| StreamEnd::begin(service_activity.clone()));
            // Every request body is paced (slow POST); the flag tells the
            // proxy why an upstream write failed.
            let pace = gateway.config.server.body_pace;
            let timed_out = BodyTimedOut::default();
            let flag = timed_out.clone();
            let mut req = req.map(|b| Paced::new(b.map_err(Into::into), pace, flag).boxed_unsync());
            req.extensions_mut().insert(timed_out);
            req.extensions_mut().insert(conn_info.clone());
            req.extensions_mut().insert(hold.clone());
            let future = gateway.service.handle(req);
            let activity = service_activity.clone();
            async move {
                let Ok(response) = future.await;
                answered(&gateway, listener_index, &response, started.elapsed());
                Ok::<_, Infallible>(response.map(|body| match stream {
                    None => Sent::Plain { body, in_flight: Some(in_flight) },
                    Some(stream) => {
                        // hyper never polls an empty body: it ended at once.
                        let empty = http_body::Body::is_end_stream(&body);
                        let body = Observed::new(stream.watch(body), move |_, completed| {
                            stream.end(completed || empty);
                            drop(in_flight);
                        })
                        .boxed_unsync();
                        Sent::Drained(Drained::new(body, &activity, send_pace))
                    }
                }))
            }
        });

        let conn = builder.serve_connection_with_upgrades(io, service);
        tokio::pin!(conn);
        let mut closing = *self.shutdown.borrow();
        if closing {
            conn.as_mut().graceful_shutdown();
        }
        // One timer, re-armed where it fires: every STALL_CHECK while requests
        // are in flight (the stall check), else at the idle deadline. Requests
        // do not wake the loop, except the one that begins while the timer
        // waits for the idle deadline (the stall check must start within
        // STALL_CHECK of it). An idle timeout shorter than STALL_CHECK sets
        // the period, so no connection outlives it by a whole STALL_CHECK.
        let check_every = STALL_CHECK.min(idle_timeout).max(Duration::from_millis(1));
        activity.idle_armed.store(true, Ordering::Relaxed);
        let timer = tokio::time::sleep_until(activity.deadline(idle_timeout).into());
        tokio::pin!(timer);
        loop {
            tokio::select! {
                result = conn.as_mut() => {
                    if activity.send_timed_out.load(Ordering::Relaxed) {
                        let detail = format!("the client did not read its response ({})", server.send_pace);
                        self.emit_connection_event(Reason::ConnSendTimeout, detail);
                    } else if let Err(e) = result {
                        self.connection_error(e.as_ref(), activity.bytes_since_last_request() > 0);
                    }
                    break;
                }
                _ = self.shutdown.changed(), if !closing => {
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                }
                () = activity.began.notified() => {
                    timer.as_mut().reset((Instant::now() + check_every).into());
                }
                () = timer.as_mut() => {
                    let now = Instant::now();
                    if activity.in_flight.load(Ordering::Relaxed) > 0 {
                        // HTTP/2 flow control can stall a stream without filling the
                        // socket: check the responses the client must keep pulling.
                        for stalled in activity.cut_stalled() {
                            let detail = format!("the client did not read an HTTP/2 stream ({stalled})");
                            self.emit_connection_event(Reason::ConnSendTimeout, detail);
                        }
                        timer.as_mut().reset((now + check_every).into());
                    } else {
                        if !closing && activity.is_idle(idle_timeout) {
                            closing = true;
                            conn.as_mut().graceful_shutdown();
                        }
                        // Not idle long enough (or closing): wait for the idle
                        // deadline, or for the next request to begin.
                        activity.idle_armed.store(true, Ordering::Relaxed);
                        let at = if closing { now + STALL_CHECK } else { activity.deadline(idle_timeout) };
                        timer.as_mut().reset(at.max(now + Duration::from_millis(1)).into());
                    }
                }
                () = activity.flood.notified(), if !closing => {
                    closing = true;
                    let (premature, streams) = activity.resets();
                    self.emit_connection_event(
                        Reason::ConnFlood,
                        format!("HTTP/2 rapid reset: {premature} of {streams} streams reset by the client before their answer; GOAWAY"),
                    );
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

/// Counts an answered request on its route's handles (or the gateway's
/// for requests that matched no route).
fn answered(gateway: &Gateway, listener: usize, response: &http::Response<portcullis_layers::Body>, total: Duration) {
    let extensions = response.extensions();
    let upstream = match extensions.get::<portcullis_layers::ServedBy>() {
        Some(served) => Some(served.1),
        None => extensions.get::<crate::metrics::UpstreamTime>().map(|t| t.0),
    };
    let route = extensions.get::<Arc<portcullis_layers::RouteInfo>>().and_then(|r| r.metrics.as_deref());
    let handles: &dyn portcullis_layers::RouteMetrics = route.unwrap_or(&gateway.unmatched);
    handles.answered(listener, response.status(), total, upstream);
}

impl Connection {
    /// Turns a connection-level refusal by hyper (no request was formed, so
    /// no layer saw it) into a security event; other errors are only logged.
    ///
    /// A header timeout on a connection that sent nothing since its last
    /// request is an idle keep-alive (or preconnected) socket, not an attack.
    fn connection_error(&self, error: &(dyn std::error::Error + 'static), partial_head: bool) {
        let hyper_error =
            std::iter::successors(Some(error), |e| e.source()).find_map(|e| e.downcast_ref::<hyper::Error>());
        // An HTTP/2 protocol error the gateway's side detected (it sent
        // GOAWAY): a bound crossed is a flood, anything else malformed.
        let h2_error = std::iter::successors(Some(error), |e| e.source())
            .find_map(|e| e.downcast_ref::<h2::Error>())
            .filter(|e| e.is_go_away() && e.is_library());
        if let Some(e) = h2_error {
            let reason = if e.reason() == Some(h2::Reason::ENHANCE_YOUR_CALM) {
                Reason::ConnFlood
            } else {
                Reason::ConnMalformed
            };
            self.emit_connection_event(reason, format!("HTTP/2: {e}; GOAWAY"));
            return;
        }
        let reason = match hyper_error {
            Some(e) if e.is_timeout() && partial_head => Reason::ConnHeaderTimeout,
            Some(e) if e.is_timeout() => {
                tracing::debug!(peer = %self.peer, "idle connection closed at the header read timeout");
                return;
            }
            Some(e) if e.is_parse_too_large() => Reason::ConnHeadTooLarge,
            Some(e) if e.is_parse() => Reason::ConnMalformed,
            _ => {
                tracing::debug!(peer = %self.peer, error = %error, "connection ended with an error");
                return;
            }
        };
        self.emit_connection_event(reason, error.to_string());
    }

    /// One security event about the connection (no request was formed).
    fn emit_connection_event(&self, reason: Reason, detail: String) {
        emit_connection_event(self.events.as_ref(), self.peer, &self.listener, reason, detail);
    }
}

/// `308 Permanent Redirect` to `https://host[:port]/path?query`; `400` when
/// the request names no usable host (the redirect must not point elsewhere).
pub(super) fn redirect_response(req: &Request<Incoming>, https_port: u16) -> http::Response<portcullis_layers::Body> {
    let host = req
        .headers()
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .and_then(portcullis_policy::route::host_without_port);
    let Some(host) = host else {
        let mut response = http::Response::new(portcullis_layers::full(r#"{"error":"request.malformed"}"#));
        *response.status_mut() = http::StatusCode::BAD_REQUEST;
        response.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
        return response;
    };
    let host = if host.contains(':') { format!("[{host}]") } else { host.into_owned() };
    let port = if https_port == 443 { String::new() } else { format!(":{https_port}") };
    let path = req.uri().path_and_query().map_or("/", http::uri::PathAndQuery::as_str);
    let mut response = http::Response::new(portcullis_layers::empty());
    *response.status_mut() = http::StatusCode::PERMANENT_REDIRECT;
    if let Ok(location) = http::HeaderValue::from_str(&format!("https://{host}{port}{path}")) {
        response.headers_mut().insert(http::header::LOCATION, location);
    }
    response
}

/// Requests in flight on a connection, and when the last one ended. Idleness
/// is about requests, not bytes: HTTP/2 keep-alive pings move bytes on an
/// otherwise idle connection.
#[derive(Debug)]
pub(super) struct Activity {
    pub(super) epoch: Instant,
    pub(super) last_ms: AtomicU64,
    pub(super) in_flight: AtomicUsize,
    /// Bytes read from the client, and the count when a request last began or
    /// ended: the difference is a request head still being sent.
    pub(super) bytes_read: AtomicU64,
    pub(super) bytes_at_last_request: AtomicU64,
    /// The client stopped reading and the send pace cut the connection.
    pub(super) send_timed_out: std::sync::atomic::AtomicBool,
    /// Whether the connection's timer waits for the idle deadline: then the
    /// next request to begin signals `began` (and clears this).
    pub(super) idle_armed: AtomicBool,
    /// Signalled when a request begins while `idle_armed`.
    pub(super) began: tokio::sync::Notify,
    /// `portcullis_requests_in_flight` for this connection's listener.
    pub(super) in_flight_gauge: metrics::Gauge,
    /// The responses being sent, to cut one the client stopped pulling.
    pub(super) drains: std::sync::Mutex<Vec<std::sync::Weak<Drain>>>,
    /// HTTP/2 streams begun, and those abandoned before their answer ended.
    pub(super) h2_streams: AtomicU64,
    pub(super) h2_premature: AtomicU64,
    /// Signalled once when the abandoned streams cross the rapid-reset bound.
    pub(super) flood: tokio::sync::Notify,
}

impl Activity {
    fn new(in_flight_gauge: metrics::Gauge) -> Self {
        Self {
            epoch: Instant::now(),
            last_ms: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            bytes_read: AtomicU64::new(0),
            bytes_at_last_request: AtomicU64::new(0),
            send_timed_out: std::sync::atomic::AtomicBool::new(false),
            idle_armed: AtomicBool::new(false),
            began: tokio::sync::Notify::new(),
            in_flight_gauge,
            drains: std::sync::Mutex::new(Vec::new()),
            h2_streams: AtomicU64::new(0),
            h2_premature: AtomicU64::new(0),
            flood: tokio::sync::Notify::new(),
        }
    }

    /// (abandoned, begun) HTTP/2 streams.
    fn resets(&self) -> (u64, u64) {
        (self.h2_premature.load(Ordering::Relaxed), self.h2_streams.load(Ordering::Relaxed))
    }

    fn bytes_since_last_request(&self) -> u64 {
        self.bytes_read.load(Ordering::Relaxed).saturating_sub(self.bytes_at_last_request.load(Ordering::Relaxed))
    }

    fn mark_request_boundary(&self) {
        self.bytes_at_last_request.store(self.bytes_read.load(Ordering::Relaxed), Ordering::Relaxed);
    }

    fn touch(&self) {
        let ms = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn deadline(&self, idle: Duration) -> Instant {
        self.epoch + Duration::from_millis(self.last_ms.load(Ordering::Relaxed)) + idle
    }

    fn is_idle(&self, idle: Duration) -> bool {
        self.in_flight.load(Ordering::Relaxed) == 0 && Instant::now() >= self.deadline(idle)
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// When a client handed `bytes` must have asked for more: the pace's
    /// timeout plus the time those bytes take at its rate.
    fn due_ms(&self, pace: Pace, bytes: u64) -> u64 {
        let credit = bytes.saturating_mul(1000).checked_div(pace.min_rate).unwrap_or(0);
        let timeout = u64::try_from(pace.timeout.as_millis()).unwrap_or(u64::MAX);
        self.now_ms().saturating_add(timeout).saturating_add(credit).max(1)
    }

    /// Drops every response the client has left unpulled past its due time
    /// (with it the upstream connection and the in-flight count); returns
    /// the pace each one broke.
    fn cut_stalled(&self) -> Vec<Pace> {
        let now = self.now_ms();
        let overdue: Vec<Arc<Drain>> = {
            let mut drains = self.drains.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            drains.retain(|d| d.strong_count() > 0);
            drains.iter().filter_map(std::sync::Weak::upgrade).filter(|d| d.overdue(now)).collect()
        };
        overdue
            .iter()
            .filter_map(|d| {
                let body = d.body.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
                // Dropped outside the lock: its drop ends the request.
                body.map(|body| {
                    drop(body);
                    d.pace
                })
            })
            .collect()
    }
}

/// How often a connection with requests in flight checks for responses the
/// client stopped pulling.
pub(super) const STALL_CHECK: Duration = Duration::from_secs(1);

/// A response body being sent, as the stall check sees it.
pub(super) struct Drain {
    /// When (ms after the connection's epoch) the client must have pulled
    /// the next frame; 0 while the gateway is not waiting on the client.
    pub(super) due_ms: AtomicU64,
    /// The body; taken (dropped) to cut the response.
    pub(super) body: std::sync::Mutex<Option<portcullis_layers::Body>>,
    pub(super) pace: Pace,
}

impl Drain {
    fn overdue(&self, now_ms: u64) -> bool {
        let due = self.due_ms.load(Ordering::Relaxed);
        due != 0 && now_ms > due
    }
}

/// The response body hyper sends: after each frame it hands out, the
/// client has `send_timeout` plus the frame's size at `min_send_rate` to
/// pull the next one, or the stall check cuts the response. On HTTP/1 the
/// socket's send pace usually acts first; on HTTP/2 a client can withhold
/// flow-control window without filling the socket, and only this sees it.
pub(super) struct Drained {
    pub(super) state: Arc<Drain>,
    pub(super) activity: Arc<Activity>,
}

impl Drained {
    fn new(body: portcullis_layers::Body, activity: &Arc<Activity>, pace: Pace) -> Self {
        // The first frame is due too: HTTP/2 waits for window before it
        // asks for any.
        let due = if http_body::Body::is_end_stream(&body) { 0 } else { activity.due_ms(pace, 0) };
        let state = Arc::new(Drain { due_ms: AtomicU64::new(due), body: std::sync::Mutex::new(Some(body)), pace });
        let mut drains = activity.drains.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        // Finished responses leave dead entries; a busy keep-alive connection
        // must not pile them up between stall checks.
        if drains.len() >= 64 {
            drains.retain(|d| d.strong_count() > 0);
        }
        drains.push(Arc::downgrade(&state));
        drop(drains);
        Self { state, activity: activity.clone() }
    }
}

impl http_body::Body for Drained {
    type Data = bytes::Bytes;
    type Error = portcullis_layers::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<bytes::Bytes>, Self::Error>>> {
        let this = self.get_mut();
        this.state.due_ms.store(0, Ordering::Relaxed);
        let mut guard = this.state.body.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(body) = guard.as_mut() else {
            let cut = io::Error::new(io::ErrorKind::TimedOut, format!("client not reading ({})", this.state.pace));
            return Poll::Ready(Some(Err(Box::new(cut))));
        };
        let polled = Pin::new(&mut *body).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && !body.is_end_stream()
        {
            let bytes = frame.data_ref().map_or(0, |d| d.len() as u64);
            this.state.due_ms.store(this.activity.due_ms(this.state.pace, bytes), Ordering::Relaxed);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.state
            .body
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
            .is_some_and(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.state
            .body
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
            .map_or_else(http_body::SizeHint::default, http_body::Body::size_hint)
    }
}

/// The response body hyper sends. On HTTP/1 the socket's send pace
/// ([`CountingIo`]) cuts a client that stops reading, so the body only
/// counts its request in flight until it ends; HTTP/2 answers are also
/// watched by the stall check ([`Drained`]).
pub(super) enum Sent {
    /// An HTTP/1 answer: `in_flight` ends with the body (or when dropped).
    Plain { body: portcullis_layers::Body, in_flight: Option<InFlight> },
    /// An HTTP/2 answer.
    Drained(Drained),
}

impl http_body::Body for Sent {
    type Data = bytes::Bytes;
    type Error = portcullis_layers::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<bytes::Bytes>, Self::Error>>> {
        match self.get_mut() {
            Self::Plain { body, in_flight } => {
                let polled = Pin::new(&mut *body).poll_frame(cx);
                // hyper stops polling once a body reports its end.
                if !matches!(polled, Poll::Pending | Poll::Ready(Some(Ok(_)))) || body.is_end_stream() {
                    in_flight.take();
                }
                polled
            }
            Self::Drained(drained) => Pin::new(drained).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Plain { body, .. } => body.is_end_stream(),
            Self::Drained(drained) => drained.is_end_stream(),
        }
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match self {
            Self::Plain { body, .. } => body.size_hint(),
            Self::Drained(drained) => drained.size_hint(),
        }
    }
}

/// One request in flight; ends when dropped, however the request ends
/// (response sent, client gone, HTTP/2 stream reset).
pub(super) struct InFlight(Arc<Activity>, #[allow(dead_code)] crate::metrics::Held);

impl InFlight {
    fn begin(activity: Arc<Activity>) -> Self {
        activity.in_flight.fetch_add(1, Ordering::Relaxed);
        activity.touch();
        activity.mark_request_boundary();
        if activity.idle_armed.swap(false, Ordering::Relaxed) {
            activity.began.notify_one();
        }
        let held = crate::metrics::Held::on(&activity.in_flight_gauge);
        Self(activity, held)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.0.touch();
        self.0.mark_request_boundary();
    }
}

/// One HTTP/2 stream; reset by the client unless its answer ended, or
/// failed on the upstream's side (not the client's doing).
pub(super) struct StreamEnd {
    pub(super) activity: Arc<Activity>,
    pub(super) ended: bool,
    pub(super) failed: Arc<AtomicBool>,
}

impl StreamEnd {
    fn begin(activity: Arc<Activity>) -> Self {
        activity.h2_streams.fetch_add(1, Ordering::Relaxed);
        Self { activity, ended: false, failed: Arc::new(AtomicBool::new(false)) }
    }

    /// The answer's body, noting when it fails (an upstream reset mid-answer).
    fn watch(&self, body: portcullis_layers::Body) -> portcullis_layers::Body {
        let failed = self.failed.clone();
        body.map_err(move |e| {
            failed.store(true, Ordering::Relaxed);
            e
        })
        .boxed_unsync()
    }

    fn end(mut self, completed: bool) {
        self.ended = completed || self.failed.load(Ordering::Relaxed);
    }
}

impl Drop for StreamEnd {
    fn drop(&mut self) {
        if self.ended {
            return;
        }
        let premature = self.activity.h2_premature.fetch_add(1, Ordering::Relaxed) + 1;
        let streams = self.activity.h2_streams.load(Ordering::Relaxed);
        // Exactly once, at the crossing: the connection is closing after it.
        if premature == H2_MAX_PREMATURE_RESETS.max(streams / 2 + 1)
            || (premature > H2_MAX_PREMATURE_RESETS && premature * 2 == streams + 1)
        {
            self.activity.flood.notify_one();
        }
    }
}

pin_project! {
    /// A socket that counts the bytes it reads (to tell a slowloris head from
    /// an idle connection) and paces its writes: a client that keeps writes
    /// pending beyond the send pace (it does not read) fails them, which
    /// closes the connection and drops the response, and with it the
    /// upstream connection (slow read).
    struct CountingIo<I> {
        #[pin]
        pub(super) inner: I,
        pub(super) activity: Arc<Activity>,
        pub(super) send: Pacer,
    }
}

impl<I> CountingIo<I> {
    /// Accounts a write's outcome to the send pace.
    fn paced<T>(
        send: &mut Pacer,
        activity: &Activity,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<T>>,
        moved: impl Fn(&T) -> u64,
    ) -> Poll<io::Result<T>> {
        match polled {
            Poll::Ready(Ok(value)) => {
                send.progress(moved(&value));
                Poll::Ready(Ok(value))
            }
            Poll::Pending => match send.poll_wait(cx) {
                Poll::Ready(()) => {
                    activity.send_timed_out.store(true, Ordering::Relaxed);
                    Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("client not reading ({})", send.pace()),
                    )))
                }
                Poll::Pending => Poll::Pending,
            },
            other => other,
        }
    }
}

impl<I: AsyncRead> AsyncRead for CountingIo<I> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let polled = this.inner.poll_read(cx, buf);
        let read = buf.filled().len().saturating_sub(before);
        if read > 0 {
            this.activity.bytes_read.fetch_add(read as u64, Ordering::Relaxed);
        }
        polled
    }
}

impl<I: AsyncWrite> AsyncWrite for CountingIo<I> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.project();
        let polled = this.inner.poll_write(cx, data);
        Self::paced(this.send, this.activity, cx, polled, |n| *n as u64)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let polled = this.inner.poll_write_vectored(cx, bufs);
        Self::paced(this.send, this.activity, cx, polled, |n| *n as u64)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // TLS flushes buffered records: pending means the client is not reading.
        let this = self.project();
        let polled = this.inner.poll_flush(cx);
        Self::paced(this.send, this.activity, cx, polled, |()| 0)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}
