//! TCP connections to upstream targets for the pooled client.
//!
//! hyper-util's `HttpConnector` attaches connection details to every
//! response (an allocation per request the gateway never reads); this one
//! connects with a timeout, sets `TCP_NODELAY` and keep-alive probes, and
//! reports nothing extra.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::future::BoxFuture;
use http::Uri;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::TokioIo;
use pin_project_lite::pin_project;
use tokio::net::TcpStream;

/// Opens plain TCP connections to `http://host:port` targets.
#[derive(Debug, Clone)]
pub struct Connector {
    connect_timeout: Duration,
}

impl Connector {
    /// A connector giving up after `connect_timeout`.
    #[must_use]
    pub const fn new(connect_timeout: Duration) -> Self {
        Self { connect_timeout }
    }
}

impl tower::Service<Uri> for Connector {
    type Response = TcpConnection;
    type Error = io::Error;
    type Future = BoxFuture<'static, io::Result<TcpConnection>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let timeout = self.connect_timeout;
        Box::pin(async move {
            let host = uri.host().ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "target has no host"))?;
            let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
            let port = uri.port_u16().unwrap_or(80);
            let stream =
                tokio::time::timeout(timeout, TcpStream::connect((host.as_str(), port))).await.map_err(|_| {
                    io::Error::new(io::ErrorKind::TimedOut, format!("connect timed out after {timeout:?}"))
                })??;
            stream.set_nodelay(true)?;
            let keepalive = socket2::TcpKeepalive::new().with_time(Duration::from_secs(60));
            socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive)?;
            Ok(TcpConnection { inner: TokioIo::new(stream) })
        })
    }
}

pin_project! {
    /// A connection to a target.
    #[derive(Debug)]
    pub struct TcpConnection {
        #[pin]
        inner: TokioIo<TcpStream>,
    }
}

impl Connection for TcpConnection {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

impl Read for TcpConnection {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: ReadBufCursor<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_read(cx, buf)
    }
}

impl Write for TcpConnection {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write_vectored(cx, bufs)
    }
}
