//! Workers: one thread per core, each with its own single-threaded tokio
//! runtime, its own copy of the compiled gateway and its own upstream
//! connection pools, so a request and the upstream connection it uses are
//! handled on one thread with no cross-thread wake-ups (the thread-per-core
//! design of nginx).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use arc_swap::ArcSwap;
use portcullis_layers::EventSink;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_util::task::TaskTracker;

use super::WorkerJob;
use super::accept::{Handoff, ListenerKind};
use super::connection::{Connection, Share};
use crate::gateway::Gateway;
use crate::proxy::ConnHold;

/// What a worker thread needs.
pub(super) struct WorkerContext {
    pub(super) current: Arc<ArcSwap<Gateway>>,
    pub(super) shutdown: watch::Receiver<bool>,
    pub(super) exit: watch::Receiver<bool>,
    pub(super) tasks: TaskTracker,
    pub(super) events: Arc<dyn EventSink>,
    pub(super) connections: Arc<AtomicUsize>,
}

impl WorkerContext {
    /// Serves the connections handed to this worker until the server exits.
    pub(super) fn run(
        mut self,
        mut rx: tokio::sync::mpsc::UnboundedReceiver<Handoff>,
        mut jobs: tokio::sync::mpsc::UnboundedReceiver<WorkerJob>,
    ) {
        let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(runtime) => runtime,
            Err(e) => {
                tracing::error!(error = %e, "cannot start a worker runtime");
                return;
            }
        };
        runtime.block_on(async move {
            // After the acceptors stop (their senders drop), keep serving the
            // open connections until the server says exit.
            let mut accepting = true;
            loop {
                tokio::select! {
                    _ = self.exit.wait_for(|exit| *exit) => break,
                    Some(job) = jobs.recv() => job(),
                    handoff = rx.recv(), if accepting => {
                        let Some((stream, peer, spec, ip_slot)) = handoff else {
                            accepting = false;
                            continue;
                        };
                        let stream = match TcpStream::from_std(stream) {
                            Ok(stream) => stream,
                            Err(e) => {
                                self.connections.fetch_sub(1, Ordering::Relaxed);
                                tracing::warn!(error = %e, "cannot register a connection");
                                continue;
                            }
                        };
                        let _ = stream.set_nodelay(true);
                        let conn = Connection {
                            peer,
                            listener: spec.name.clone(),
                            current: self.current.clone(),
                            shutdown: self.shutdown.clone(),
                            events: self.events.clone(),
                            client_cert: None,
                            hold: ConnHold::new(Arc::new(Share {
                                _open: OpenConnection(
                                    self.connections.clone(),
                                    crate::metrics::Held::new(
                                        crate::metrics::CONNECTIONS_OPEN,
                                        "listener",
                                        &spec.name,
                                    ),
                                ),
                                _ip_slot: ip_slot,
                            })),
                        };
                        match &spec.kind {
                            ListenerKind::Plain => {
                                self.tasks.spawn(conn.serve(stream, "http"));
                            }
                            ListenerKind::Tls(acceptor) => {
                                let acceptor = acceptor.clone();
                                self.tasks.spawn(conn.serve_tls(stream, acceptor));
                            }
                            ListenerKind::Redirect { https_port } => {
                                self.tasks.spawn(conn.serve_redirect(stream, *https_port));
                            }
                        }
                    }
                }
            }
        });
    }
}

/// Counts a connection as open on its worker (and in the
/// `portcullis_connections_open` gauge) until dropped.
pub(super) struct OpenConnection(Arc<AtomicUsize>, #[allow(dead_code)] crate::metrics::Held);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}
