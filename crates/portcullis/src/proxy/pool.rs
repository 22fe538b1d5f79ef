//! A pool of HTTP/1.1 connections to one upstream target.
//!
//! Each worker thread has its own pools (see `server/worker.rs`), so a request, its
//! upstream connection and the connection's driver task all run on one
//! thread. Connections are reused last-in first-out; a connection idle longer
//! than `pool_idle_timeout` is closed, so the gateway gives up an idle
//! connection before a backend with a longer keep-alive closes it under a
//! request, and holds no backend sockets after the traffic is gone: while a
//! pool has idle connections, a task of its worker closes each as it
//! expires (checkout also skips expired ones). A request that could not be
//! written on a reused connection (it was closed meanwhile) is retried once
//! on a new connection; nothing was sent, so that is always safe.
//!
//! A connection returns to the pool when its response body has been read to
//! the end; a response abandoned half way, or a `101` upgrade, takes the
//! connection with it.
//!
//! A response body that stalls (the upstream sends nothing for
//! `read_timeout` while the gateway waits for it) fails: the client sees a
//! truncated body and the connection is closed, so a hung backend cannot
//! hold client connections, tasks and upstream connections for ever. Every
//! open connection counts in `portcullis_upstream_connections_open`.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::uri::Authority;
use http::{Request, Response, StatusCode};
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use pin_project_lite::pin_project;
use portcullis_layers::Body;
use portcullis_layers::pace::{Pace, Pacer};
use tokio::net::TcpStream;

/// Why a request could not be sent.
#[derive(Debug)]
pub enum SendError {
    /// No connection could be opened (refused, unreachable, timed out).
    Connect(io::Error),
    /// The connection failed during the exchange.
    Http(hyper::Error),
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Connect(e) => write!(f, "connect: {e}"),
            Self::Http(e) => write!(f, "{e}"),
        }
    }
}

/// A TLS connector and the server name it verifies.
pub type TlsTarget = (tokio_rustls::TlsConnector, rustls::pki_types::ServerName<'static>);

struct Idle {
    sender: http1::SendRequest<Body>,
    since: Instant,
}

/// Connections to one target.
pub struct Pool {
    authority: Authority,
    /// TLS to the target (https targets): connector and the name to verify,
    /// or why TLS cannot be set up (every connection then fails).
    tls: Option<Result<TlsTarget, &'static str>>,
    /// Oldest first: connections are pushed and popped at the end.
    idle: Mutex<Vec<Idle>>,
    max_idle: usize,
    idle_timeout: Duration,
    connect_timeout: Duration,
    /// Whether a task is closing expired idle connections (changed under `idle`'s lock).
    reaping: AtomicBool,
    read_timeout: Duration,
    /// The upstream's name, for metrics and logs.
    upstream: Arc<str>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool").field("authority", &self.authority).finish_non_exhaustive()
    }
}

impl Pool {
    /// An empty pool for `authority` (`host:port`).
    #[must_use]
    pub fn new(
        authority: Authority,
        tls: Option<Result<TlsTarget, &'static str>>,
        max_idle: usize,
        idle_timeout: Duration,
        connect_timeout: Duration,
        read_timeout: Duration,
        upstream: Arc<str>,
    ) -> Arc<Self> {
        Arc::new(Self {
            authority,
            tls,
            idle: Mutex::new(Vec::new()),
            max_idle,
            idle_timeout,
            connect_timeout,
            reaping: AtomicBool::new(false),
            read_timeout,
            upstream,
        })
    }

    /// Sends `req` on a pooled or new connection.
    ///
    /// # Errors
    /// [`SendError`]; the request is consumed.
    pub async fn send(self: &Arc<Self>, mut req: Request<Body>) -> Result<Response<Body>, SendError> {
        let upgrade = portcullis_policy::hop::is_upgrade(req.headers());
        if let Some(mut sender) = self.checkout().await {
            match sender.try_send_request(req).await {
                Ok(response) => return Ok(self.wrap(sender, response, upgrade)),
                Err(mut e) => match e.take_message() {
                    // Not written: the pooled connection was closing. Retry below.
                    Some(unsent) => req = unsent,
                    None => return Err(SendError::Http(e.into_error())),
                },
            }
        }
        // Boxed: connecting (a TLS handshake among it) is a large future that
        // every request's future would otherwise carry, and copy, in place.
        let mut sender = Box::pin(self.connect()).await?;
        let response = sender.send_request(req).await.map_err(SendError::Http)?;
        Ok(self.wrap(sender, response, upgrade))
    }

    /// The most recently used idle connection that is still open and fresh.
    async fn checkout(&self) -> Option<http1::SendRequest<Body>> {
        loop {
            let idle = self.idle.lock().ok()?.pop()?;
            if idle.since.elapsed() >= self.idle_timeout || idle.sender.is_closed() {
                continue;
            }
            let mut sender = idle.sender;
            // Usually ready at once; a connection still finishing its last
            // exchange becomes ready shortly, a dead one errs.
            if sender.ready().await.is_ok() {
                return Some(sender);
            }
        }
    }

    async fn connect(&self) -> Result<http1::SendRequest<Body>, SendError> {
        let host = self.authority.host().trim_start_matches('[').trim_end_matches(']');
        let port = self.authority.port_u16().unwrap_or(80);
        let stream = tokio::time::timeout(self.connect_timeout, TcpStream::connect((host, port)))
            .await
            .map_err(|_| {
                SendError::Connect(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("connect timed out after {:?}", self.connect_timeout),
                ))
            })?
            .map_err(SendError::Connect)?;
        stream.set_nodelay(true).map_err(SendError::Connect)?;
        let keepalive = socket2::TcpKeepalive::new().with_time(Duration::from_secs(60));
        socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive).map_err(SendError::Connect)?;
        let held = crate::metrics::Held::new(crate::metrics::UPSTREAM_CONNECTIONS_OPEN, "upstream", &self.upstream);
        match &self.tls {
            None => handshake(stream, held).await,
            Some(Err(reason)) => Err(SendError::Connect(io::Error::other(*reason))),
            Some(Ok((connector, name))) => {
                // The TLS handshake is part of connecting: its failure (bad
                // certificate, no client certificate) cools the target down.
                let tls = tokio::time::timeout(self.connect_timeout, connector.connect(name.clone(), stream))
                    .await
                    .map_err(|_| {
                        SendError::Connect(io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out"))
                    })?
                    .map_err(|e| SendError::Connect(io::Error::new(e.kind(), format!("TLS handshake: {e}"))))?;
                handshake(tls, held).await
            }
        }
    }

    fn put(self: &Arc<Self>, sender: http1::SendRequest<Body>) {
        if sender.is_closed() {
            return;
        }
        let Ok(mut idle) = self.idle.lock() else { return };
        if idle.len() >= self.max_idle {
            return;
        }
        idle.push(Idle { sender, since: Instant::now() });
        if !self.reaping.swap(true, Ordering::AcqRel) {
            drop(idle);
            self.reap();
        }
    }

    /// Closes idle connections as they pass `idle_timeout`, on this worker,
    /// until the pool has none; then the next [`Pool::put`] starts it again.
    /// Holds the pool weakly: a pool replaced by a reload ends the task.
    fn reap(self: &Arc<Self>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            // Outside the worker (shutting down): nothing to keep alive.
            self.reaping.store(false, Ordering::Release);
            return;
        };
        let pool: Weak<Self> = Arc::downgrade(self);
        let mut wait = self.idle_timeout;
        runtime.spawn(async move {
            loop {
                tokio::time::sleep(wait).await;
                let Some(pool) = pool.upgrade() else { return };
                match pool.close_expired() {
                    Some(next) => wait = next,
                    None => return,
                }
            }
        });
    }

    /// Drops the idle connections past `idle_timeout` (dropping a sender
    /// closes its connection) and returns how long until the oldest left
    /// expires; `None`, and the reaper ends, when none is left.
    fn close_expired(&self) -> Option<Duration> {
        let Ok(mut idle) = self.idle.lock() else {
            self.reaping.store(false, Ordering::Release);
            return None;
        };
        let now = Instant::now();
        idle.retain(|i| now.duration_since(i.since) < self.idle_timeout && !i.sender.is_closed());
        match idle.first() {
            // A millisecond late rather than early, so the next wake-up finds it expired.
            Some(oldest) => {
                Some(self.idle_timeout.saturating_sub(now.duration_since(oldest.since)) + Duration::from_millis(1))
            }
            None => {
                self.reaping.store(false, Ordering::Release);
                None
            }
        }
    }

    fn wrap(
        self: &Arc<Self>,
        sender: http1::SendRequest<Body>,
        response: Response<Incoming>,
        upgrade: bool,
    ) -> Response<Body> {
        let reusable = !(upgrade || response.status() == StatusCode::SWITCHING_PROTOCOLS);
        let slot = reusable.then(|| (self.clone(), sender));
        let pacer = Pacer::new(Pace { timeout: self.read_timeout, min_rate: 0 });
        let upstream = self.upstream.clone();
        response
            .map(|inner| http_body_util::BodyExt::boxed_unsync(Pooled { inner, slot, ended: false, pacer, upstream }))
    }
}

/// Starts HTTP/1.1 on a connected stream; its driver runs as a task on this
/// worker and holds `held` (the open-connections gauge) until it ends.
async fn handshake<I>(io: I, held: crate::metrics::Held) -> Result<http1::SendRequest<Body>, SendError>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) =
        http1::Builder::new().max_buf_size(64 * 1024).handshake(TokioIo::new(io)).await.map_err(SendError::Http)?;
    tokio::spawn(async move {
        if let Err(e) = connection.with_upgrades().await {
            tracing::debug!(error = %e, "upstream connection ended with an error");
        }
        drop(held);
    });
    Ok(sender)
}

/// A response body that sent nothing for the upstream's `read_timeout`.
#[derive(Debug)]
pub struct UpstreamStalled {
    /// The upstream's name.
    pub upstream: Arc<str>,
    /// The timeout.
    pub timeout: Duration,
}

impl std::fmt::Display for UpstreamStalled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "upstream {:?} sent nothing of the response body for {:?}", self.upstream, self.timeout)
    }
}

impl std::error::Error for UpstreamStalled {}

pin_project! {
    /// A response body that gives its connection back to the pool once read
    /// to the end.
    struct Pooled {
        #[pin]
        inner: Incoming,
        slot: Option<(Arc<Pool>, http1::SendRequest<Body>)>,
        ended: bool,
        pacer: Pacer,
        upstream: Arc<str>,
    }

    impl PinnedDrop for Pooled {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            let done = *this.ended || this.inner.is_end_stream();
            if let (true, Some((pool, sender))) = (done, this.slot.take()) {
                pool.put(sender);
            }
        }
    }
}

impl HttpBody for Pooled {
    type Data = Bytes;
    type Error = portcullis_layers::BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.project();
        match this.inner.poll_frame(cx) {
            Poll::Ready(None) => {
                *this.ended = true;
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                // A broken connection never goes back.
                this.slot.take();
                Poll::Ready(Some(Err(Box::new(e))))
            }
            Poll::Ready(Some(Ok(frame))) => {
                this.pacer.progress(0);
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Pending => match this.pacer.poll_wait(cx) {
                Poll::Ready(()) => {
                    // Cut: the connection is dropped with the body, never reused.
                    this.slot.take();
                    let stalled =
                        UpstreamStalled { upstream: this.upstream.clone(), timeout: this.pacer.pace().timeout };
                    tracing::warn!(upstream = %this.upstream, timeout = ?stalled.timeout, "upstream response body stalled; cut");
                    Poll::Ready(Some(Err(Box::new(stalled))))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
