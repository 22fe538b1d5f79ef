//! Accepting: each listener's task takes TCP connections, refuses banned
//! addresses and addresses over `max_connections_per_ip` (trusted proxies
//! are exempt: they carry many clients), and hands each connection to the
//! worker with the fewest open ones.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use portcullis_layers::EventSink;
use portcullis_policy::Reason;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use portcullis_layers::ban::{BanStore, unix_millis};

use super::emit_connection_event;

/// A connection handed from an acceptor to a worker.
pub(super) type Handoff = (std::net::TcpStream, SocketAddr, Arc<ListenerSpec>, Option<IpSlot>);

/// Open connections per client address, shared by every listener: one client
/// cannot hold all the sockets and workers (slow-read or connection floods).
/// Trusted proxies are exempt — they carry many clients.
#[derive(Debug)]
pub(super) struct PerIp {
    pub(super) max: usize,
    pub(super) trusted: portcullis_policy::forwarded::TrustedProxies,
    pub(super) open: std::sync::Mutex<std::collections::HashMap<IpAddr, usize>>,
}

/// One connection's share of its address's count; released on drop.
#[derive(Debug)]
pub(super) struct IpSlot(Arc<PerIp>, IpAddr);

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut open = self.0.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = open.get_mut(&self.1) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.1);
            }
        }
    }
}

impl PerIp {
    /// A slot for `ip`: `Ok(None)` when unlimited, `Err(open)` when full.
    fn acquire(self: &Arc<Self>, ip: IpAddr) -> Result<Option<IpSlot>, usize> {
        if self.max == 0 || self.trusted.contains(ip) {
            return Ok(None);
        }
        let key = portcullis_policy::forwarded::client_group(ip);
        let mut open = self.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = open.entry(key).or_insert(0);
        if *n >= self.max {
            return Err(*n);
        }
        *n += 1;
        Ok(Some(IpSlot(self.clone(), key)))
    }
}

/// What a listening socket serves.
pub(super) struct ListenerSpec {
    pub(super) name: Arc<str>,
    pub(super) kind: ListenerKind,
}

pub(super) enum ListenerKind {
    /// The gateway over cleartext HTTP/1.1 and h2c.
    Plain,
    /// The gateway over TLS.
    Tls(tokio_rustls::TlsAcceptor),
    /// Plain HTTP answering every request with a 308 to the TLS listener.
    Redirect { https_port: u16 },
}

impl std::fmt::Debug for ListenerSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListenerSpec").field("name", &self.name).finish_non_exhaustive()
    }
}

/// An acceptor's view of a worker.
#[derive(Debug)]
pub(super) struct WorkerHandle {
    pub(super) tx: tokio::sync::mpsc::UnboundedSender<Handoff>,
    /// Open connections on the worker (the acceptor picks the least busy).
    pub(super) connections: Arc<AtomicUsize>,
}

pub(super) struct Acceptor {
    pub(super) spec: Arc<ListenerSpec>,
    pub(super) shutdown: watch::Receiver<bool>,
    pub(super) workers: Arc<[WorkerHandle]>,
    pub(super) next: usize,
    pub(super) per_ip: Arc<PerIp>,
    pub(super) bans: Arc<dyn BanStore>,
    pub(super) events: Arc<dyn EventSink>,
}

impl Acceptor {
    pub(super) async fn run(mut self, socket: TcpListener) {
        loop {
            tokio::select! {
                _ = self.shutdown.changed() => break,
                accepted = socket.accept() => match accepted {
                    Ok((stream, peer)) => self.hand_off(stream, peer),
                    Err(e) => {
                        // Out of file descriptors and similar: back off instead of spinning.
                        tracing::warn!(listener = %self.spec.name, error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
            }
        }
        tracing::info!(listener = %self.spec.name, "stopped accepting");
    }

    /// Gives the connection to the worker with the fewest open connections,
    /// starting the search round robin so ties spread evenly.
    fn hand_off(&mut self, stream: TcpStream, peer: SocketAddr) {
        // A banned client gets no TLS handshake and no worker. Clients behind
        // trusted proxies are checked per request instead.
        if !self.per_ip.trusted.contains(peer.ip())
            && let Some(hit) = self.bans.banned(peer.ip(), unix_millis())
        {
            drop(stream);
            if hit.log {
                let until = std::time::UNIX_EPOCH + Duration::from_millis(hit.until_ms);
                let detail = format!("banned until {}; connection closed", humantime::format_rfc3339_seconds(until));
                emit_connection_event(self.events.as_ref(), peer, &self.spec.name, Reason::BanActive, detail);
            }
            return;
        }
        let ip_slot = match self.per_ip.acquire(peer.ip()) {
            Ok(slot) => slot,
            Err(open) => {
                // Closed at once: the client already holds its share.
                drop(stream);
                let detail = format!("{open} connections open from this address (limit {})", self.per_ip.max);
                emit_connection_event(self.events.as_ref(), peer, &self.spec.name, Reason::ConnPerIp, detail);
                return;
            }
        };
        let n = self.workers.len();
        if n == 0 {
            return;
        }
        let start = self.next;
        self.next = (self.next + 1) % n;
        let Some(worker) =
            (0..n).map(|i| &self.workers[(start + i) % n]).min_by_key(|w| w.connections.load(Ordering::Relaxed))
        else {
            return;
        };
        let stream = match stream.into_std() {
            Ok(stream) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "cannot hand a connection to a worker");
                return;
            }
        };
        worker.connections.fetch_add(1, Ordering::Relaxed);
        if worker.tx.send((stream, peer, self.spec.clone(), ip_slot)).is_err() {
            worker.connections.fetch_sub(1, Ordering::Relaxed);
        }
    }
}
