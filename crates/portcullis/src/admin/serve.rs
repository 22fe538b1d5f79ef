//! Serving the admin router: plain HTTP on loopback (axum's server), or
//! HTTPS when `[admin] tls` is set (required off loopback), with the same
//! certificate handling as the proxy's listeners (files reloaded by SIGHUP
//! are not watched here: the admin listener keeps the certificate it
//! started with), client certificates too when `client_ca` is set.
//!
//! Defends the token and the dashboard's cookie on the wire; a handshake
//! that does not finish within [`HANDSHAKE_TIMEOUT`] is dropped, and on
//! shutdown open connections (event streams) are asked to close and given
//! [`DRAIN`] to do so.

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Longest TLS handshake accepted.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long open connections get to close at shutdown.
pub const DRAIN: Duration = Duration::from_secs(5);

/// Serves `router` on `socket` until `stop` turns true.
pub async fn serve(
    socket: TcpListener,
    router: axum::Router,
    tls: Option<tokio_rustls::TlsAcceptor>,
    mut stop: watch::Receiver<bool>,
) {
    let Some(tls) = tls else {
        let app = router.into_make_service_with_connect_info::<SocketAddr>();
        let served = axum::serve(socket, app).with_graceful_shutdown(async move {
            let _ = stop.changed().await;
        });
        if let Err(e) = served.await {
            tracing::warn!(error = %e, "admin API stopped");
        }
        return;
    };
    let graceful = GracefulShutdown::new();
    loop {
        let (stream, peer) = tokio::select! {
            _ = stop.changed() => break,
            accepted = socket.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "admin API: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let tls = tls.clone();
        let router = router.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.accept(stream)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "admin API: TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "admin API: TLS handshake timed out");
                    return;
                }
            };
            let service = tower::ServiceBuilder::new()
                .map_request(move |mut request: http::Request<hyper::body::Incoming>| {
                    request.extensions_mut().insert(ConnectInfo(peer));
                    request
                })
                .service(router);
            let builder = auto::Builder::new(TokioExecutor::new());
            let connection =
                builder.serve_connection_with_upgrades(TokioIo::new(stream), TowerToHyperService::new(service));
            if let Err(e) = watcher.watch(connection.into_owned()).await {
                tracing::debug!(%peer, error = %e, "admin API connection ended with an error");
            }
        });
    }
    if tokio::time::timeout(DRAIN, graceful.shutdown()).await.is_err() {
        tracing::warn!("admin API: connections still open after the drain time; closing them");
    }
}
