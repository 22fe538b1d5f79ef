//! The running server: start, reload and graceful shutdown.
//!
//! Stages, one file each (as linkerd2-proxy's inbound splits accept, detect
//! and serve): [`accept`] takes TCP connections, enforces the per-address
//! connection limit and bans, and hands each to the worker with the fewest
//! open connections; [`worker`] runs one thread and runtime per core with its
//! own copy of the gateway; [`connection`] serves one client connection
//! (TLS, HTTP/1.1, HTTP/2, its timeouts and flood bounds).
//!
//! Every request runs through the [`Gateway`] that is current when it
//! arrives: a reload builds a complete new gateway (routes, upstream pools,
//! limits) and swaps it in atomically, so a request never sees half of a
//! configuration. Settings read only at start are named in the reload's
//! warning ([`restart_only_changes`]).
//!
//! Shutdown: listeners stop accepting, every connection is asked to finish
//! (HTTP/1 closes after its current response, HTTP/2 sends GOAWAY), and the
//! process waits up to `shutdown_timeout` for in-flight requests and
//! WebSocket tunnels.

mod accept;
mod connection;
mod worker;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use arc_swap::ArcSwap;
use portcullis_layers::EventSink;
use portcullis_policy::event::RequestSummary;
use portcullis_policy::forwarded::canonical;
use portcullis_policy::{Denied, Reason, SecurityEvent};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::task::TaskTracker;

use crate::auth::AuthRuntime;
use crate::config::state::Shared;
use crate::config::{Config, Listener};
use crate::shared::{MemoryRevocations, RedisState, Revocations, SharedBans, SharedError};
use crate::tls::CertStore;
use portcullis_layers::ban::{BanStore, LocalBans};
use portcullis_layers::login::MemoryLoginStore;
use portcullis_layers::store::MemoryStore;
use portcullis_policy::waf::Engine;

pub use crate::gateway::{ConfigShared, Gateway, LoadError, OWN_ENDPOINTS_ROUTE, SharedStores, WafStartError};
use accept::{Acceptor, ListenerKind, ListenerSpec, PerIp, WorkerHandle};
use worker::WorkerContext;

/// Keys the in-memory login store holds (about 100 bytes each).
const MEMORY_LOGIN_KEYS: usize = 200_000;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A listener's TLS certificate could not be loaded.
    #[error("listener {name:?}: {source}")]
    Tls {
        /// Listener name.
        name: String,
        /// Cause.
        source: crate::tls::TlsError,
    },
    /// A worker thread could not start.
    #[error("cannot start a worker: {0}")]
    Worker(io::Error),
    /// Authentication could not start (JWKS client, signing key, store, OIDC).
    #[error("authentication: {0}")]
    Auth(#[from] crate::auth::AuthStartError),
    /// The WAF or an https upstream's TLS client could not start.
    #[error("{0}")]
    Load(#[from] LoadError),
    /// Shared state (`[state] shared`) could not be set up.
    #[error("shared state: {0}")]
    Shared(SharedError),
    /// An `[openapi.NAME]` document could not be fetched or compiled.
    #[error("{0}")]
    OpenApi(#[from] crate::gateway::openapi::FetchError),
    /// Alerts (`[alerts]`) could not start.
    #[error("{0}")]
    Alerts(#[from] crate::alerts::AlertsError),
    /// A listener could not bind.
    #[error("cannot bind listener {name:?} to {addr}: {source}")]
    Bind {
        /// Listener name.
        name: String,
        /// Address.
        addr: SocketAddr,
        /// Cause.
        source: io::Error,
    },
}

/// A reload that took effect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reloaded {
    /// Changed settings that are read once at start and keep their running
    /// values until a restart (`"[admin]"`, `"[server] workers"`, …), in file
    /// order; empty when everything changed was applied.
    pub not_applied: Vec<&'static str>,
}

/// The settings that differ between `old` and `new` and that a reload does
/// not apply: sockets, threads and stores opened at start. (Listeners are
/// refused instead, [`ReloadError::Listeners`].)
#[must_use]
pub fn restart_only_changes(old: &Config, new: &Config) -> Vec<&'static str> {
    let (was, now) = (&old.server, &new.server);
    [
        (was.data_dir != now.data_dir, "[server] data_dir"),
        (was.workers != now.workers, "[server] workers"),
        (was.max_connections_per_ip != now.max_connections_per_ip, "[server] max_connections_per_ip"),
        // The per-IP connection limit's exemption; forwarding headers follow the reload.
        (
            was.trusted_proxies != now.trusted_proxies,
            "[server] trusted_proxies (exemption from max_connections_per_ip)",
        ),
        // TLS listeners' ALPN is fixed at start; cleartext listeners follow the reload.
        (was.h2c != now.h2c && new.listeners.iter().any(|l| l.tls.is_some()), "[server] h2c (TLS listeners)"),
        (old.log.format != new.log.format, "[log] format"),
        (old.log.level != new.log.level, "[log] level"),
        (old.events != new.events, "[events]"),
        (old.state.shared != new.state.shared, "[state] shared"),
        (old.state.store != new.state.store, "[state] store (for the audit trail)"),
        (old.state.audit_key != new.state.audit_key, "[state] audit_key"),
        (old.admin != new.admin, "[admin]"),
        (old.alerts != new.alerts, "[alerts]"),
    ]
    .into_iter()
    .filter_map(|(changed, what)| changed.then_some(what))
    .collect()
}

/// Why a reload was refused (the old configuration keeps serving).
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The new file has errors.
    #[error("{0}")]
    Config(#[from] crate::config::ConfigErrors),
    /// Listeners differ; rebinding sockets needs a restart.
    #[error("listeners changed ({0}); restart Portcullis to change listeners")]
    Listeners(String),
    /// Authentication for the new configuration could not start.
    #[error("authentication: {0}")]
    Auth(#[from] crate::auth::AuthStartError),
    /// The new configuration's WAF or an https upstream's TLS client could
    /// not start.
    #[error("{0}")]
    Load(#[from] LoadError),
    /// An `[openapi.NAME]` document could not be fetched or compiled.
    #[error("{0}")]
    OpenApi(#[from] crate::gateway::openapi::FetchError),
}

/// A running gateway.
///
/// Requests are served by one worker thread per core, each with its own
/// single-threaded tokio runtime, its own copy of the compiled gateway and
/// its own upstream connection pools: a request and the upstream connection
/// it uses are handled on one thread, with no cross-thread wake-ups (the
/// thread-per-core design of nginx). Acceptor tasks on the caller's runtime
/// hand each new connection to the worker with the fewest open connections.
#[derive(Debug)]
pub struct Server {
    config: ArcSwap<Config>,
    cert_stores: Vec<(String, Arc<CertStore>)>,
    /// Revocations, limits and bans; kept across reloads.
    state: SharedStores,
    workers: Vec<Worker>,
    events: Arc<dyn EventSink>,
    shutdown: watch::Sender<bool>,
    exit: watch::Sender<bool>,
    tasks: TaskTracker,
    acceptors: TaskTracker,
    addrs: Vec<(String, SocketAddr)>,
    /// What the admin API's `GET /ready` checks.
    readiness: Arc<crate::admin::Readiness>,
    /// Reloads asked for through the admin API, until taken by the owner of
    /// the configuration file ([`Server::reload_requests`]).
    reload_requests: std::sync::Mutex<Option<tokio::sync::mpsc::Receiver<crate::admin::ReloadRequest>>>,
    /// The audit trail (admin actions, reloads, the start).
    audit: crate::audit::Recorder,
}

#[derive(Debug)]
struct Worker {
    current: Arc<ArcSwap<Gateway>>,
    /// Work to run on the worker's thread between connections.
    jobs: tokio::sync::mpsc::UnboundedSender<WorkerJob>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Work for a worker's thread.
type WorkerJob = Box<dyn FnOnce() + Send>;

/// Aborts a task when dropped, unless disarmed.
struct AbortOnDrop(Option<tokio::task::AbortHandle>);

impl AbortOnDrop {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(task) = self.0.take() {
            task.abort();
        }
    }
}

/// The upstreams' health as the admin API shows it: a target is healthy
/// unless some worker skips it after a failed connection.
fn upstream_health(gateways: Arc<std::sync::OnceLock<Vec<Arc<ArcSwap<Gateway>>>>>) -> crate::admin::UpstreamHealth {
    Arc::new(move || {
        let Some(gateways) = gateways.get() else { return Vec::new() };
        let mut targets: Vec<crate::admin::TargetHealth> = Vec::new();
        for (i, gateway) in gateways.iter().enumerate() {
            let gateway = gateway.load();
            let mut n = 0;
            for upstream in gateway.upstreams.iter() {
                for (label, down_for) in upstream.health() {
                    if i == 0 {
                        targets.push(crate::admin::TargetHealth {
                            upstream: upstream.config.name.clone(),
                            target: label.to_string(),
                            healthy: true,
                            retry_in_seconds: None,
                        });
                    }
                    if let (Some(down_for), Some(t)) = (down_for, targets.get_mut(n)) {
                        t.healthy = false;
                        let secs = down_for.as_secs().max(1);
                        t.retry_in_seconds = Some(t.retry_in_seconds.map_or(secs, |s| s.max(secs)));
                    }
                    n += 1;
                }
            }
        }
        targets
    })
}

/// Warms every worker's thread for inline WAF inspections by the engines
/// of `shared` (`WafPool::warm_here`: the canary set through each, a few
/// tens of milliseconds) and returns when all are done. Runs before the
/// workers serve the configuration: at start, and on reload while they
/// still serve the previous one, each pausing its connections meanwhile.
async fn warm_workers(workers: &[Worker], shared: &ConfigShared) {
    let Some(settings) = shared.waf_routes.iter().flatten().next().map(|w| w.settings.clone()) else { return };
    let mut engines: Vec<Arc<dyn Engine>> = Vec::new();
    for waf in shared.waf_routes.iter().flatten() {
        if !engines.iter().any(|e| Arc::ptr_eq(e, &waf.engine)) {
            engines.push(waf.engine.clone());
        }
    }
    let started = std::time::Instant::now();
    let mut done = Vec::with_capacity(workers.len());
    for worker in workers {
        let (settings, engines) = (settings.clone(), engines.clone());
        let (finished, finishing) = tokio::sync::oneshot::channel::<()>();
        let job: WorkerJob = Box::new(move || {
            settings.pool.warm_here(&engines);
            let _ = finished.send(());
        });
        if worker.jobs.send(job).is_ok() {
            done.push(finishing);
        }
    }
    for finishing in done {
        let _ = finishing.await;
    }
    tracing::info!(
        workers = workers.len(),
        elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        "worker threads warmed up for inline WAF inspections"
    );
}

impl Server {
    /// Binds every listener (all or none) and starts the workers.
    ///
    /// # Errors
    /// [`StartError::Bind`] for the first listener that cannot bind, or
    /// [`StartError::Worker`] when a worker thread cannot start.
    pub async fn start(mut config: Config, events: Arc<dyn EventSink>) -> Result<Self, StartError> {
        crate::gateway::openapi::fetch_remote(&mut config.openapi).await?;
        let mut bound: Vec<(Arc<ListenerSpec>, SocketAddr, TcpListener)> = Vec::new();
        let mut cert_stores = Vec::new();
        for listener in &config.listeners {
            let bind_error = |addr, source| StartError::Bind { name: listener.name.clone(), addr, source };
            let socket = TcpListener::bind(listener.bind).await.map_err(|e| bind_error(listener.bind, e))?;
            let addr = socket.local_addr().unwrap_or(listener.bind);
            let name: Arc<str> = Arc::from(listener.name.as_str());
            let kind = match &listener.tls {
                None => ListenerKind::Plain,
                Some(tls) => {
                    let tls_error = |source| StartError::Tls { name: listener.name.clone(), source };
                    let store =
                        CertStore::load_with_sni(&tls.source, &tls.sni, &config.server.data_dir).map_err(tls_error)?;
                    tracing::info!(listener = %name, fingerprint = %store.fingerprint(), "TLS certificate (SHA-256)");
                    let server_config =
                        crate::tls::server_config(tls, store.clone(), config.server.h2c).map_err(tls_error)?;
                    cert_stores.push((listener.name.clone(), store));
                    ListenerKind::Tls(tokio_rustls::TlsAcceptor::from(server_config))
                }
            };
            bound.push((Arc::new(ListenerSpec { name, kind }), addr, socket));
            if let Some(redirect) = listener.redirect_http {
                let socket = TcpListener::bind(redirect).await.map_err(|e| bind_error(redirect, e))?;
                let redirect_addr = socket.local_addr().unwrap_or(redirect);
                let spec = ListenerSpec {
                    name: Arc::from(format!("{}-redirect", listener.name)),
                    kind: ListenerKind::Redirect { https_port: addr.port() },
                };
                bound.push((Arc::new(spec), redirect_addr, socket));
            }
        }
        let admin_socket = match &config.admin {
            Some(admin) => Some(TcpListener::bind(admin.bind).await.map_err(|e| StartError::Bind {
                name: "admin".into(),
                addr: admin.bind,
                source: e,
            })?),
            None => None,
        };
        let metrics = crate::metrics::install();
        // Counted, remembered for the admin API and dashboard, then written.
        let recent = crate::admin::recent::Recent::new(crate::admin::answered_requests);
        let events: Arc<dyn EventSink> =
            Arc::new(crate::metrics::Metered(Arc::new(crate::admin::recent::Remembered {
                inner: events,
                recent: recent.clone(),
            })));
        let events = crate::alerts::Alerting::wrap(&config, events)?;
        let audit = crate::audit::Recorder::start(&config, events.clone());
        // Revoked sessions and limit state outlive reloads: they are the
        // server's, not the configuration's (changing `[state] shared` needs a restart).
        let (state, shared_bans, redis_readiness) = match &config.state.shared {
            Shared::Memory => {
                let state = SharedStores {
                    revocations: Arc::new(MemoryRevocations::default()),
                    limits: Arc::new(MemoryStore::new(1_000_000)),
                    bans: Arc::new(LocalBans::default()),
                    logins: Arc::new(MemoryLoginStore::new(MEMORY_LOGIN_KEYS)),
                };
                (state, None, None)
            }
            Shared::Redis(url) => {
                let redis = Arc::new(RedisState::connect(url.expose()).await.map_err(StartError::Shared)?);
                let redis_for_readiness = (*redis).clone();
                let bans = Arc::new(SharedBans::new(redis.clone()));
                // Bans made before this instance started apply from its first connection.
                if let Err(e) = bans.sync().await {
                    tracing::warn!(error = %e, "cannot read the shared ban list yet");
                }
                let state = SharedStores {
                    revocations: redis.clone(),
                    limits: redis.clone(),
                    bans: bans.clone(),
                    logins: redis,
                };
                (state, Some(bans), Some(redis_for_readiness))
            }
        };
        let readiness = Arc::new(crate::admin::Readiness {
            redis: redis_readiness,
            store_needed: std::sync::atomic::AtomicBool::new(
                config.auth.api_keys.is_some() || config.auth.accounts.is_some(),
            ),
            ..crate::admin::Readiness::default()
        });
        // The admin API answers while the rest starts (readiness false until
        // the WAF's canary, the stores and the JWKS are ready).
        let (reload_tx, reload_rx) = tokio::sync::mpsc::channel(4);
        let gateways: Arc<std::sync::OnceLock<Vec<Arc<ArcSwap<Gateway>>>>> = Arc::new(std::sync::OnceLock::new());
        let acceptors = TaskTracker::new();
        let (shutdown, _) = watch::channel(false);
        let mut admin_addr = None;
        // Stops the admin listener if the rest fails to start.
        let mut admin_task = None;
        if let (Some(socket), Some(admin)) = (admin_socket, &config.admin) {
            let admin_tls = match &admin.tls {
                None => None,
                Some(tls) => {
                    let tls_error = |source| StartError::Tls { name: "admin".into(), source };
                    let store =
                        CertStore::load_with_sni(&tls.source, &tls.sni, &config.server.data_dir).map_err(tls_error)?;
                    tracing::info!(listener = "admin", fingerprint = %store.fingerprint(), "TLS certificate (SHA-256)");
                    let server_config = crate::tls::server_config(tls, store, true).map_err(tls_error)?;
                    Some(tokio_rustls::TlsAcceptor::from(server_config))
                }
            };
            let addr = socket.local_addr().unwrap_or(admin.bind);
            tracing::info!(%addr, "admin API listening");
            admin_addr = Some(("admin".to_owned(), addr));
            let router = crate::admin::router(crate::admin::AdminState {
                bans: state.bans.clone(),
                metrics,
                token: admin.token.clone(),
                events: events.clone(),
                logins: state.logins.clone(),
                audit: audit.clone(),
                recent: recent.clone(),
                readiness: readiness.clone(),
                reload: Some(reload_tx),
                store: Arc::new(crate::admin::LazyStore::new(&config.state.store)),
                upstreams: upstream_health(gateways.clone()),
                sessions: Arc::new(crate::admin::dashboard::Sessions::default()),
                tls: admin_tls.is_some(),
                stop: shutdown.subscribe(),
            });
            let task = acceptors.spawn(crate::admin::serve::serve(socket, router, admin_tls, shutdown.subscribe()));
            let (ticking, mut stop) = (recent.clone(), shutdown.subscribe());
            acceptors.spawn(async move {
                let mut every = tokio::time::interval(crate::admin::recent::TICK);
                loop {
                    tokio::select! {
                        _ = stop.changed() => return,
                        _ = every.tick() => ticking.tick(std::time::SystemTime::now()),
                    }
                }
            });
            admin_task = Some(AbortOnDrop(Some(task.abort_handle())));
        }
        let auth = AuthRuntime::start(&config, state.revocations.clone(), state.logins.clone()).await?;
        readiness.jwt.store(auth.jwt.clone());
        let per_config = ConfigShared::load(&config, &state).await?;
        let config = Arc::new(config);
        let count = config.server.workers.max(1);
        let tasks = TaskTracker::new();
        let (exit, _) = watch::channel(false);
        let mut workers = Vec::with_capacity(count);
        let mut handles = Vec::with_capacity(count);
        for index in 0..count {
            let current = Arc::new(ArcSwap::from_pointee(Gateway::build(
                config.clone(),
                events.clone(),
                tasks.clone(),
                &auth,
                &state,
                &per_config,
            )));
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            let (jobs, jobs_rx) = tokio::sync::mpsc::unbounded_channel();
            let connections = Arc::new(AtomicUsize::new(0));
            let context = WorkerContext {
                current: current.clone(),
                shutdown: shutdown.subscribe(),
                exit: exit.subscribe(),
                tasks: tasks.clone(),
                events: events.clone(),
                connections: connections.clone(),
            };
            let thread = std::thread::Builder::new()
                .name(format!("portcullis-worker-{index}"))
                .spawn(move || context.run(rx, jobs_rx))
                .map_err(StartError::Worker)?;
            workers.push(Worker { current, jobs, thread: Some(thread) });
            handles.push(WorkerHandle { tx, connections });
        }
        warm_workers(&workers, &per_config).await;
        let handles: Arc<[WorkerHandle]> = handles.into();
        // Per-IP connection limits hold for the process's lifetime (changing
        // them needs a restart, like the listeners).
        let per_ip = Arc::new(PerIp {
            max: config.server.max_connections_per_ip,
            trusted: config.server.trusted_proxies.clone(),
            open: std::sync::Mutex::new(std::collections::HashMap::new()),
        });
        let _ = gateways.set(workers.iter().map(|w| w.current.clone()).collect());
        let mut addrs = Vec::new();
        for (spec, addr, socket) in bound {
            let scheme = match spec.kind {
                ListenerKind::Tls(_) => "https",
                ListenerKind::Plain | ListenerKind::Redirect { .. } => "http",
            };
            crate::metrics::register_gauge(crate::metrics::CONNECTIONS_OPEN, "listener", &spec.name);
            crate::metrics::register_gauge(crate::metrics::REQUESTS_IN_FLIGHT, "listener", &spec.name);
            if let ListenerKind::Tls(_) = spec.kind {
                crate::metrics::register_tls_listener(&spec.name);
            }
            tracing::info!(listener = %spec.name, %addr, scheme, workers = count, "listening");
            addrs.push((spec.name.to_string(), addr));
            let accept = Acceptor {
                spec,
                shutdown: shutdown.subscribe(),
                workers: handles.clone(),
                next: 0,
                per_ip: per_ip.clone(),
                bans: state.bans.clone(),
                events: events.clone(),
            };
            acceptors.spawn(accept.run(socket));
        }
        crate::metrics::config_started();
        if !cert_stores.is_empty() {
            acceptors.spawn(watch_certificates(cert_stores.clone(), shutdown.subscribe()));
        }
        addrs.extend(admin_addr);
        if let Some(task) = admin_task.take() {
            task.disarm();
        }
        readiness.serving.store(true, std::sync::atomic::Ordering::Release);
        if let Some(bans) = shared_bans {
            acceptors.spawn(bans.run_sync(shutdown.subscribe()));
        }
        Ok(Self {
            config: ArcSwap::new(config),
            workers,
            events,
            shutdown,
            exit,
            tasks,
            acceptors,
            addrs,
            cert_stores,
            state,
            readiness,
            reload_requests: std::sync::Mutex::new(Some(reload_rx)),
            audit,
        })
    }

    /// The audit trail's recorder (the store is opened on first use).
    #[must_use]
    pub fn audit(&self) -> &crate::audit::Recorder {
        &self.audit
    }

    /// The reloads asked for through the admin API (`POST /reload`), for the
    /// owner of the configuration file to carry out (`portcullis run`'s
    /// main loop); `None` after the first call.
    pub fn reload_requests(&self) -> Option<tokio::sync::mpsc::Receiver<crate::admin::ReloadRequest>> {
        self.reload_requests.lock().ok().and_then(|mut r| r.take())
    }

    /// The session revocation list (shared with other instances when
    /// `[state] shared` is Redis).
    #[must_use]
    pub fn revocations(&self) -> &Arc<dyn Revocations> {
        &self.state.revocations
    }

    /// The ban list (shared with other instances when `[state] shared` is
    /// Redis).
    #[must_use]
    pub fn bans(&self) -> &Arc<dyn BanStore> {
        &self.state.bans
    }

    /// The bound address of each listener, by name.
    #[must_use]
    pub fn addrs(&self) -> &[(String, SocketAddr)] {
        &self.addrs
    }

    /// The bound address of the named listener.
    #[must_use]
    pub fn addr(&self, name: &str) -> Option<SocketAddr> {
        self.addrs.iter().find(|(n, _)| n == name).map(|(_, a)| *a)
    }

    /// The configuration currently serving.
    #[must_use]
    pub fn config(&self) -> Arc<Config> {
        self.config.load_full()
    }

    /// Swaps in a new configuration atomically.
    ///
    /// # Errors
    /// [`ReloadError::Listeners`] when the listener set differs; the running
    /// configuration is kept.
    pub async fn reload(&self, config: Config) -> Result<Reloaded, ReloadError> {
        let reloaded = self.swap(config).await;
        crate::metrics::config_reloaded(reloaded.is_ok());
        reloaded
    }

    /// Counts a reload refused before it reached [`Server::reload`] (the
    /// new file did not parse or validate).
    pub fn reload_refused(&self) {
        crate::metrics::config_reloaded(false);
    }

    async fn swap(&self, mut config: Config) -> Result<Reloaded, ReloadError> {
        let old = self.config();
        let was: Vec<&Listener> = old.listeners.iter().collect();
        let now: Vec<&Listener> = config.listeners.iter().collect();
        if was != now {
            let describe =
                |ls: &[&Listener]| ls.iter().map(|l| format!("{}={}", l.name, l.bind)).collect::<Vec<_>>().join(" ");
            return Err(ReloadError::Listeners(format!("running: {}; new: {}", describe(&was), describe(&now))));
        }
        let not_applied = restart_only_changes(&old, &config);
        crate::gateway::openapi::fetch_remote(&mut config.openapi).await?;
        let auth = AuthRuntime::start(&config, self.state.revocations.clone(), self.state.logins.clone()).await?;
        let per_config = ConfigShared::load(&config, &self.state).await?;
        self.readiness.jwt.store(auth.jwt.clone());
        self.readiness.store_needed.store(
            config.auth.api_keys.is_some() || config.auth.accounts.is_some(),
            std::sync::atomic::Ordering::Release,
        );
        let config = Arc::new(config);
        warm_workers(&self.workers, &per_config).await;
        for worker in &self.workers {
            worker.current.store(Arc::new(Gateway::build(
                config.clone(),
                self.events.clone(),
                self.tasks.clone(),
                &auth,
                &self.state,
                &per_config,
            )));
        }
        self.config.store(config);
        Ok(Reloaded { not_applied })
    }

    /// Re-reads every listener's certificate files (SIGHUP). A file that fails
    /// leaves that listener's current certificate in place.
    pub fn reload_certificates(&self) {
        for (name, store) in &self.cert_stores {
            match store.reload() {
                Ok(()) => {
                    tracing::info!(listener = %name, fingerprint = %store.fingerprint(), "TLS certificate reloaded")
                }
                Err(e) => {
                    tracing::error!(listener = %name, error = %e, "TLS certificate reload refused; the current one stays")
                }
            }
        }
    }

    /// Stops accepting, asks every connection to finish, and waits up to the
    /// configured shutdown timeout. Returns whether everything finished.
    pub async fn shutdown(mut self) -> bool {
        let timeout = self.config().server.shutdown_timeout;
        let _ = self.shutdown.send(true);
        self.acceptors.close();
        self.acceptors.wait().await;
        self.tasks.close();
        let drained = tokio::time::timeout(timeout, self.tasks.wait()).await.is_ok();
        if drained {
            tracing::info!("all connections finished");
        } else {
            tracing::warn!(
                remaining = self.tasks.len(),
                ?timeout,
                "shutdown timeout reached; closing remaining connections"
            );
        }
        let _ = self.exit.send(true);
        // Rows queued by the last admin requests or the reload are written before exit.
        if !self.audit.flush(Duration::from_secs(5)).await {
            tracing::error!("audit rows still queued at shutdown were not written");
        }
        let threads: Vec<_> = self.workers.iter_mut().filter_map(|w| w.thread.take()).collect();
        let _ = tokio::task::spawn_blocking(move || {
            for thread in threads {
                let _ = thread.join();
            }
        })
        .await;
        drained
    }
}

impl Drop for Server {
    /// Stops the workers at once (their connections are dropped). Use
    /// [`Server::shutdown`] to drain first.
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
        let _ = self.exit.send(true);
    }
}

/// The event of a refusal made before any request exists (`conn.*`, `tls.*`).
fn emit_connection_event(events: &dyn EventSink, peer: SocketAddr, listener: &str, reason: Reason, detail: String) {
    let request_id = uuid::Uuid::new_v4().to_string();
    let summary = RequestSummary {
        request_id: &request_id,
        client_ip: canonical(peer.ip()),
        listener,
        method: "-",
        path: "-",
        route: None,
    };
    let denied = Denied::new(reason).with_detail(detail);
    events.emit(SecurityEvent::denied(&summary, &denied, std::time::SystemTime::now()));
}

/// Reloads certificates whose files changed, checking every two seconds.
async fn watch_certificates(stores: Vec<(String, Arc<CertStore>)>, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tick.tick() => {
                for (name, store) in &stores {
                    match store.reload_if_changed() {
                        Ok(true) => tracing::info!(listener = %name, fingerprint = %store.fingerprint(), "TLS certificate files changed; reloaded"),
                        Ok(false) => {}
                        Err(e) => tracing::error!(listener = %name, error = %e, "changed TLS certificate refused; the current one stays"),
                    }
                }
            }
        }
    }
}
