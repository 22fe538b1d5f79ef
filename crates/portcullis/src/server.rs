//! Listeners, connections, reload and graceful shutdown.
//!
//! Each listener accepts TCP connections and serves HTTP/1.1 and, unless
//! disabled, HTTP/2 over cleartext (prior knowledge) with hyper. Every request
//! runs through the [`Gateway`] that is current when it arrives: a reload
//! builds a complete new gateway (routes, upstream pools, limits) and swaps it
//! in atomically, so a request never sees half of a configuration.
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
//!
//! Shutdown: listeners stop accepting, every connection is asked to finish
//! (HTTP/1 closes after its current response, HTTP/2 sends GOAWAY), and the
//! process waits up to `shutdown_timeout` for in-flight requests and
//! WebSocket tunnels.

use std::convert::Infallible;
use std::io;
use std::net::{IpAddr, SocketAddr};
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
use portcullis_layers::{ConnInfo, EventSink, GatewayService, RouteInfo, StackConfig};
use portcullis_policy::event::RequestSummary;
use portcullis_policy::forwarded::canonical;
use portcullis_policy::route::{RouteEntry, RouteTable};
use portcullis_policy::{Denied, Reason, SecurityEvent};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::task::TaskTracker;

use crate::auth::AuthRuntime;

/// Streams open at once on one HTTP/2 connection (RFC 9113 asks for at
/// least 100). Each can hold an upstream connection.
const H2_MAX_CONCURRENT_STREAMS: u32 = 100;
/// Streams a client may reset before the gateway accepted them; past this,
/// GOAWAY (h2's default, set here so it cannot drift).
const H2_MAX_PENDING_ACCEPT_RESETS: usize = 20;
/// Streams the HTTP/2 layer may reset for the client's protocol errors
/// (malformed headers, a wrong content-length, refused streams) over a
/// connection's life; past this, GOAWAY. A conforming client causes none.
const H2_MAX_LOCAL_ERROR_RESETS: usize = 100;
/// Answer bytes buffered per stream ahead of the client's flow-control
/// window: a slow reader holds at most this per stream.
const H2_MAX_SEND_BUF: usize = 64 * 1024;
/// Streams the client may reset before their answer ended (rapid reset)
/// before the connection gets GOAWAY, if they are also more than half of its
/// streams. A browser cancels a few; an attack, hundreds.
const H2_MAX_PREMATURE_RESETS: u64 = 100;
use crate::config::state::Shared;
use crate::config::{Config, IdentityMode, Listener};
use crate::proxy::Proxy;
use crate::proxy::upstream::UpstreamState;
use crate::shared::{MemoryRevocations, RedisState, Revocations, SharedBans, SharedError};
use crate::tls::CertStore;
use portcullis_layers::ban::{BanStore, Banner, LocalBans, unix_millis};
use portcullis_layers::concurrency::InFlight as InFlightLimit;
use portcullis_layers::login::{LoginStore, MemoryLoginStore};
use portcullis_layers::store::{LimitStore, MemoryStore};
use portcullis_layers::waf::{WafPool, WafRoute, WafSettings};
use portcullis_policy::waf::{Engine, VerdictCache};

/// Keys the in-memory login store holds (about 100 bytes each).
const MEMORY_LOGIN_KEYS: usize = 200_000;

/// One compiled configuration, ready to serve.
#[derive(Debug)]
pub struct Gateway {
    /// The configuration it was built from.
    pub config: Arc<Config>,
    service: GatewayService,
}

impl Gateway {
    /// Builds routes, upstream pools and the layer stack.
    #[must_use]
    pub fn build(
        config: Arc<Config>,
        events: Arc<dyn EventSink>,
        tasks: TaskTracker,
        auth: &AuthRuntime,
        state: &SharedStores,
        per_config: &ConfigShared,
    ) -> Self {
        let limit_store = &state.limits;
        for u in &config.upstreams {
            crate::metrics::register_gauge(crate::metrics::UPSTREAM_CONNECTIONS_OPEN, "upstream", &u.name);
            crate::metrics::register_gauge(crate::metrics::WEBSOCKET_TUNNELS_OPEN, "upstream", &u.name);
        }
        let upstreams: Arc<Vec<UpstreamState>> = Arc::new(config.upstreams.iter().map(UpstreamState::new).collect());
        let entries = config
            .routes
            .iter()
            .enumerate()
            .map(|(i, r)| RouteEntry {
                host: r.host.clone(),
                path: r.path.clone(),
                methods: r.methods.clone(),
                value: Arc::new(RouteInfo {
                    name: Arc::from(r.name.as_str()),
                    upstream: r.upstream,
                    upstream_name: Arc::from(config.upstreams.get(r.upstream).map_or("", |u| u.name.as_str())),
                    max_body_bytes: r.max_body_bytes,
                    auth: r.auth,
                    headers: r.headers.clone().map(Arc::new),
                    identity: auth
                        .upstream_identity(config.upstreams.get(r.upstream).map_or(IdentityMode::None, |u| u.identity)),
                    require: r.require.clone().map(Arc::new),
                    ips: r.ips.clone().map(Arc::new),
                    // Owner rules read path parameters.
                    pattern: r.require.as_ref().and_then(|q| q.owner.as_ref()).map(|_| Arc::new(r.path.clone())),
                    limits: r.limits.clone(),
                    login: r.login.clone(),
                    in_flight: per_config.routes.get(i).cloned().flatten(),
                    upstream_in_flight: per_config.upstreams.get(r.upstream).cloned().flatten(),
                    waf: per_config.waf_routes.get(i).cloned().flatten(),
                    csrf: r.csrf,
                    // Server::start and reload fetch URL documents before building.
                    openapi: r.openapi.as_ref().and_then(|n| config.openapi.get(n)).and_then(|d| d.compiled.clone()),
                    websocket: r.websocket,
                }),
            })
            .collect();
        let stack = StackConfig {
            trusted_proxies: config.server.trusted_proxies.clone(),
            limits: config.server.limits,
            routes: Arc::new(RouteTable::new(entries)),
            events,
            access_log: config.log.access,
            headers: Arc::new(config.headers.clone()),
            cors: config.cors.clone().map(Arc::new),
            csp_report_path: config.csp_report_path.as_deref().map(Arc::from),
            auth: auth.authenticators.clone(),
            paths: config.paths,
            roles: Arc::new(config.roles.clone()),
            ip_rules: config.access.clone().map(Arc::new),
            // Only routes with limits touch the store.
            limit_store: (config.routes.iter().any(|r| !r.limits.is_empty()) || !config.endpoint_limits.is_empty())
                .then(|| limit_store.clone()),
            login_store: config.routes.iter().any(|r| r.login.is_some()).then(|| state.logins.clone()),
            endpoints: auth.endpoints.clone(),
            bans: Some(state.bans.clone()),
            banner: per_config.banner.clone(),
            own_endpoints_route: (!config.endpoint_limits.is_empty()).then(|| {
                Arc::new(RouteInfo {
                    name: Arc::from(OWN_ENDPOINTS_ROUTE),
                    upstream: usize::MAX,
                    upstream_name: Arc::from(""),
                    max_body_bytes: None,
                    auth: portcullis_layers::AuthMode::Public,
                    headers: None,
                    identity: portcullis_layers::identity::UpstreamIdentity::None,
                    require: None,
                    ips: None,
                    pattern: None,
                    limits: config.endpoint_limits.clone(),
                    login: None,
                    in_flight: None,
                    upstream_in_flight: None,
                    waf: None,
                    csrf: false,
                    openapi: None,
                    websocket: false,
                })
            }),
            csrf: config.csrf.as_ref().map(|c| c.policy.clone()),
        };
        let service = portcullis_layers::stack(&stack, Proxy::new(upstreams, tasks));
        Self { config, service }
    }
}

/// The route name requests to `/.portcullis/*` are limited under.
pub const OWN_ENDPOINTS_ROUTE: &str = ".portcullis";

/// State that outlives reloads and, with Redis, is shared by every instance:
/// session revocations, rate-limit counters and the ban list.
#[derive(Debug, Clone)]
pub struct SharedStores {
    /// Ended sessions.
    pub revocations: Arc<dyn Revocations>,
    /// Rate-limit (and ban-counting) state.
    pub limits: Arc<dyn LimitStore>,
    /// The ban list.
    pub bans: Arc<dyn BanStore>,
    /// Login-failure state.
    pub logins: Arc<dyn LoginStore>,
}

/// What one configuration's workers share: in-flight counters, and the
/// ban rules (whose fallback counts must see every worker's refusals).
#[derive(Debug, Default)]
pub struct ConfigShared {
    /// In-flight counters by route index.
    pub routes: Vec<Option<Arc<InFlightLimit>>>,
    /// In-flight counters by upstream index.
    pub upstreams: Vec<Option<Arc<InFlightLimit>>>,
    /// The `[[ban]]` rules, if any.
    pub banner: Option<Arc<Banner>>,
    /// The WAF by route index, its engines loaded and canary-checked.
    pub waf_routes: Vec<Option<Arc<WafRoute>>>,
}

impl ConfigShared {
    /// The counters, rules and WAF engines `config` asks for, over `stores`.
    ///
    /// # Errors
    /// A WAF rule set does not load or fails its canary.
    pub async fn load(config: &Config, stores: &SharedStores) -> Result<Self, StartError> {
        let waf_routes = load_waf(config).await?;
        Ok(Self { waf_routes, ..Self::of(config, stores) })
    }

    /// The counters and rules `config` asks for, over `stores` (no WAF).
    #[must_use]
    pub fn of(config: &Config, stores: &SharedStores) -> Self {
        Self {
            waf_routes: Vec::new(),
            banner: (!config.bans.is_empty()).then(|| {
                Arc::new(Banner::new(
                    config.bans.clone(),
                    stores.limits.clone(),
                    stores.bans.clone(),
                    config.server.trusted_proxies.clone(),
                ))
            }),
            routes: config.routes.iter().map(|r| r.max_in_flight.map(|n| Arc::new(InFlightLimit::new(n)))).collect(),
            upstreams: config
                .upstreams
                .iter()
                .map(|u| u.max_in_flight.map(|n| Arc::new(InFlightLimit::new(n))))
                .collect(),
        }
    }
}

/// Loads one engine per WAF profile the routes use, on a blocking thread
/// (CRS compiles in a fraction of a second, more in debug builds).
async fn load_waf(config: &Config) -> Result<Vec<Option<Arc<WafRoute>>>, StartError> {
    let none = || vec![None; config.routes.len()];
    let Some(waf) = config.waf.clone() else { return Ok(none()) };
    if config.routes.iter().all(|r| r.waf.is_none()) {
        return Ok(none());
    }
    let started = std::time::Instant::now();
    let load = {
        let waf = waf.clone();
        move || {
            waf.profiles
                .iter()
                .map(|profile| portcullis_policy::waf::load(waf.engine, &waf.rules, profile))
                .collect::<Result<Vec<_>, _>>()
        }
    };
    let engines = tokio::task::spawn_blocking(load)
        .await
        .map_err(|e| StartError::Waf(format!("loading the rules failed: {e}")))?
        .map_err(|e| StartError::Waf(e.to_string()))?;
    tracing::info!(
        engine = waf.engine.as_str(),
        rules = %waf.rules.display(),
        profiles = engines.len(),
        elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        "WAF rule sets loaded and canary-checked"
    );
    let settings = Arc::new(WafSettings {
        body_limit: waf.body_limit,
        refuse_over_limit: waf.refuse_over_limit,
        fail_open: waf.fail_open,
        response_body_limit: waf.response_body_limit,
        response_types: waf.response_types.clone(),
        pool: WafPool::new(waf.workers, waf.queue, waf.inline_limit)
            .map_err(|e| StartError::Waf(format!("cannot start the inspection threads: {e}")))?,
    });
    let warming = std::time::Instant::now();
    settings.pool.warm_up(&engines).await;
    tracing::info!(
        workers = waf.workers,
        elapsed_ms = u64::try_from(warming.elapsed().as_millis()).unwrap_or(u64::MAX),
        "WAF inspection threads warmed up"
    );
    let caches: Vec<Option<Arc<VerdictCache>>> =
        engines.iter().map(|_| (waf.cache > 0).then(|| Arc::new(VerdictCache::new(waf.cache)))).collect();
    Ok(config
        .routes
        .iter()
        .map(|r| {
            let route = r.waf?;
            let engine = engines.get(route.profile)?.clone();
            let cache = caches.get(route.profile).cloned().flatten();
            Some(Arc::new(WafRoute {
                engine,
                mode: route.mode,
                cache,
                responses: route.responses,
                settings: settings.clone(),
            }))
        })
        .collect())
}

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
    /// A WAF rule set does not load or fails its canary.
    #[error("waf: {0}")]
    Waf(String),
    /// Shared state (`[state] shared`) could not be set up.
    #[error("shared state: {0}")]
    Shared(SharedError),
    /// An `[openapi.NAME]` document could not be fetched or compiled.
    #[error("{0}")]
    OpenApi(#[from] crate::config::openapi::FetchError),
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
        (old.admin != new.admin, "[admin]"),
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
    /// A WAF rule set of the new configuration does not load or fails its canary.
    #[error("waf: {0}")]
    Waf(String),
    /// An `[openapi.NAME]` document could not be fetched or compiled.
    #[error("{0}")]
    OpenApi(#[from] crate::config::openapi::FetchError),
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
        crate::config::openapi::fetch_remote(&mut config.openapi).await?;
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
        let events: Arc<dyn EventSink> = Arc::new(crate::metrics::Metered(events));
        // Revoked sessions and limit state outlive reloads: they are the
        // server's, not the configuration's (changing `[state] shared` needs a restart).
        let (state, shared_bans) = match &config.state.shared {
            Shared::Memory => {
                let state = SharedStores {
                    revocations: Arc::new(MemoryRevocations::default()),
                    limits: Arc::new(MemoryStore::new(1_000_000)),
                    bans: Arc::new(LocalBans::default()),
                    logins: Arc::new(MemoryLoginStore::new(MEMORY_LOGIN_KEYS)),
                };
                (state, None)
            }
            Shared::Redis(url) => {
                let redis = Arc::new(RedisState::connect(url.expose()).await.map_err(StartError::Shared)?);
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
                (state, Some(bans))
            }
        };
        let auth = AuthRuntime::start(&config, state.revocations.clone()).await?;
        let per_config = ConfigShared::load(&config, &state).await?;
        let config = Arc::new(config);
        let count = config.server.workers.max(1);
        let tasks = TaskTracker::new();
        let acceptors = TaskTracker::new();
        let (shutdown, _) = watch::channel(false);
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
        let mut addrs = Vec::new();
        for (spec, addr, socket) in bound {
            let scheme = match spec.kind {
                ListenerKind::Tls(_) => "https",
                ListenerKind::Plain | ListenerKind::Redirect { .. } => "http",
            };
            crate::metrics::register_gauge(crate::metrics::CONNECTIONS_OPEN, "listener", &spec.name);
            crate::metrics::register_gauge(crate::metrics::REQUESTS_IN_FLIGHT, "listener", &spec.name);
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
        if !cert_stores.is_empty() {
            acceptors.spawn(watch_certificates(cert_stores.clone(), shutdown.subscribe()));
        }
        if let (Some(socket), Some(admin)) = (admin_socket, &config.admin) {
            let addr = socket.local_addr().unwrap_or(admin.bind);
            tracing::info!(%addr, "admin API listening");
            addrs.push(("admin".to_owned(), addr));
            let router = crate::admin::router(crate::admin::AdminState {
                bans: state.bans.clone(),
                metrics,
                token: admin.token.clone(),
                events: events.clone(),
            });
            let mut stop = shutdown.subscribe();
            acceptors.spawn(async move {
                let app = router.into_make_service_with_connect_info::<SocketAddr>();
                let served = axum::serve(socket, app).with_graceful_shutdown(async move {
                    let _ = stop.changed().await;
                });
                if let Err(e) = served.await {
                    tracing::warn!(error = %e, "admin API stopped");
                }
            });
        }
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
        })
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
    pub async fn reload(&self, mut config: Config) -> Result<Reloaded, ReloadError> {
        let old = self.config();
        let was: Vec<&Listener> = old.listeners.iter().collect();
        let now: Vec<&Listener> = config.listeners.iter().collect();
        if was != now {
            let describe =
                |ls: &[&Listener]| ls.iter().map(|l| format!("{}={}", l.name, l.bind)).collect::<Vec<_>>().join(" ");
            return Err(ReloadError::Listeners(format!("running: {}; new: {}", describe(&was), describe(&now))));
        }
        let not_applied = restart_only_changes(&old, &config);
        crate::config::openapi::fetch_remote(&mut config.openapi).await?;
        let auth = AuthRuntime::start(&config, self.state.revocations.clone()).await?;
        let per_config = ConfigShared::load(&config, &self.state).await.map_err(|e| match e {
            StartError::Waf(e) => ReloadError::Waf(e),
            other => ReloadError::Waf(other.to_string()),
        })?;
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

/// A connection handed from an acceptor to a worker.
type Handoff = (std::net::TcpStream, SocketAddr, Arc<ListenerSpec>, Option<IpSlot>);

/// Open connections per client address, shared by every listener: one client
/// cannot hold all the sockets and workers (slow-read or connection floods).
/// Trusted proxies are exempt — they carry many clients.
#[derive(Debug)]
struct PerIp {
    max: usize,
    trusted: portcullis_policy::forwarded::TrustedProxies,
    open: std::sync::Mutex<std::collections::HashMap<IpAddr, usize>>,
}

/// One connection's share of its address's count; released on drop.
#[derive(Debug)]
struct IpSlot(Arc<PerIp>, IpAddr);

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
struct ListenerSpec {
    name: Arc<str>,
    kind: ListenerKind,
}

enum ListenerKind {
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
struct WorkerHandle {
    tx: tokio::sync::mpsc::UnboundedSender<Handoff>,
    /// Open connections on the worker (the acceptor picks the least busy).
    connections: Arc<AtomicUsize>,
}

/// What a worker thread needs.
struct WorkerContext {
    current: Arc<ArcSwap<Gateway>>,
    shutdown: watch::Receiver<bool>,
    exit: watch::Receiver<bool>,
    tasks: TaskTracker,
    events: Arc<dyn EventSink>,
    connections: Arc<AtomicUsize>,
}

impl WorkerContext {
    /// Serves the connections handed to this worker until the server exits.
    fn run(
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
                            hold: ConnHold(Arc::new(Share {
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
struct OpenConnection(Arc<AtomicUsize>, #[allow(dead_code)] crate::metrics::Held);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

struct Acceptor {
    spec: Arc<ListenerSpec>,
    shutdown: watch::Receiver<bool>,
    workers: Arc<[WorkerHandle]>,
    next: usize,
    per_ip: Arc<PerIp>,
    bans: Arc<dyn BanStore>,
    events: Arc<dyn EventSink>,
}

impl Acceptor {
    async fn run(mut self, socket: TcpListener) {
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

struct Connection {
    peer: SocketAddr,
    listener: Arc<str>,
    current: Arc<ArcSwap<Gateway>>,
    shutdown: watch::Receiver<bool>,
    events: Arc<dyn EventSink>,
    client_cert: Option<Arc<portcullis_layers::ClientCert>>,
    hold: ConnHold,
}

/// What a client connection holds while it is open: its place in its
/// worker's count and the gauge, and its share of its address's
/// `max_connections_per_ip`. Each request carries a clone, and a WebSocket
/// tunnel keeps one until it closes: an upgraded connection outlives hyper's
/// connection task, and must still count.
#[derive(Clone)]
pub(crate) struct ConnHold(#[allow(dead_code)] Arc<Share>);

struct Share {
    _open: OpenConnection,
    _ip_slot: Option<IpSlot>,
}

impl Connection {
    /// Completes the TLS handshake within the header read timeout, then serves.
    async fn serve_tls(mut self, stream: TcpStream, acceptor: tokio_rustls::TlsAcceptor) {
        let timeout = self.current.load().config.server.header_read_timeout;
        match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
            Ok(Ok(tls)) => {
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
            Ok(Err(e)) => self.emit_connection_event(Reason::TlsHandshake, e.to_string()),
            Err(_) => self.emit_connection_event(Reason::TlsHandshake, format!("no handshake within {timeout:?}")),
        }
    }

    /// Answers every request with a 308 to the same host and path over HTTPS.
    async fn serve_redirect(self, stream: TcpStream, https_port: u16) {
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

    async fn serve<I>(mut self, stream: I, scheme: &'static str)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let gateway = self.current.load_full();
        let server = &gateway.config.server;
        let idle_timeout = server.idle_timeout;
        let activity = Arc::new(Activity::new());
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

        let mut conn_info = ConnInfo::new(self.peer, self.listener.clone(), scheme);
        conn_info.client_cert = self.client_cert.take();
        let current = self.current.clone();
        let service_activity = activity.clone();
        let listener = self.listener.clone();
        let hold = self.hold.clone();
        let send_pace = server.send_pace;
        let service = hyper::service::service_fn(move |req: Request<Incoming>| {
            let gateway = current.load_full();
            // Dropped when the response body ends or the request is abandoned.
            let in_flight = InFlight::begin(service_activity.clone(), &listener);
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
                Ok::<_, Infallible>(response.map(|body| {
                    // hyper never polls an empty body: it ended at once.
                    let empty = http_body::Body::is_end_stream(&body);
                    let body = match &stream {
                        Some(stream) => stream.watch(body),
                        None => body,
                    };
                    let body = Observed::new(body, move |_, completed| {
                        if let Some(stream) = stream {
                            stream.end(completed || empty);
                        }
                        drop(in_flight);
                    })
                    .boxed_unsync();
                    Drained::new(body, &activity, send_pace)
                }))
            }
        });

        let conn = builder.serve_connection_with_upgrades(io, service);
        tokio::pin!(conn);
        let mut closing = *self.shutdown.borrow();
        if closing {
            conn.as_mut().graceful_shutdown();
        }
        // Kept across iterations: requests ending often must not postpone it.
        let mut next_check = Instant::now() + STALL_CHECK;
        loop {
            // While requests are in flight the idle timer is off (its deadline
            // would be in the past, and re-arming it would spin the worker)
            // and the stall check is on; a request beginning or ending wakes
            // the loop to switch.
            let busy = activity.in_flight.load(Ordering::Relaxed) > 0;
            let idle_deadline = activity.deadline(idle_timeout);
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
                () = activity.changed.notified() => {}
                // HTTP/2 flow control can stall a stream without filling the
                // socket: check the responses the client must keep pulling.
                () = tokio::time::sleep_until(next_check.into()), if busy => {
                    next_check = Instant::now() + STALL_CHECK;
                    for stalled in activity.cut_stalled() {
                        let detail = format!("the client did not read an HTTP/2 stream ({stalled})");
                        self.emit_connection_event(Reason::ConnSendTimeout, detail);
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
                () = tokio::time::sleep_until(idle_deadline.into()), if !busy && !closing => {
                    if activity.is_idle(idle_timeout) {
                        closing = true;
                        conn.as_mut().graceful_shutdown();
                    }
                }
            }
        }
    }
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

/// `308 Permanent Redirect` to `https://host[:port]/path?query`; `400` when
/// the request names no usable host (the redirect must not point elsewhere).
fn redirect_response(req: &Request<Incoming>, https_port: u16) -> http::Response<portcullis_layers::Body> {
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
struct Activity {
    epoch: Instant,
    last_ms: AtomicU64,
    in_flight: AtomicUsize,
    /// Bytes read from the client, and the count when a request last began or
    /// ended: the difference is a request head still being sent.
    bytes_read: AtomicU64,
    bytes_at_last_request: AtomicU64,
    /// The client stopped reading and the send pace cut the connection.
    send_timed_out: std::sync::atomic::AtomicBool,
    /// Signalled when a request begins or ends.
    changed: tokio::sync::Notify,
    /// The responses being sent, to cut one the client stopped pulling.
    drains: std::sync::Mutex<Vec<std::sync::Weak<Drain>>>,
    /// HTTP/2 streams begun, and those abandoned before their answer ended.
    h2_streams: AtomicU64,
    h2_premature: AtomicU64,
    /// Signalled once when the abandoned streams cross the rapid-reset bound.
    flood: tokio::sync::Notify,
}

impl Activity {
    fn new() -> Self {
        Self {
            epoch: Instant::now(),
            last_ms: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            bytes_read: AtomicU64::new(0),
            bytes_at_last_request: AtomicU64::new(0),
            send_timed_out: std::sync::atomic::AtomicBool::new(false),
            changed: tokio::sync::Notify::new(),
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
const STALL_CHECK: Duration = Duration::from_secs(1);

/// A response body being sent, as the stall check sees it.
struct Drain {
    /// When (ms after the connection's epoch) the client must have pulled
    /// the next frame; 0 while the gateway is not waiting on the client.
    due_ms: AtomicU64,
    /// The body; taken (dropped) to cut the response.
    body: std::sync::Mutex<Option<portcullis_layers::Body>>,
    pace: Pace,
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
struct Drained {
    state: Arc<Drain>,
    activity: Arc<Activity>,
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

/// One request in flight; ends when dropped, however the request ends
/// (response sent, client gone, HTTP/2 stream reset).
struct InFlight(Arc<Activity>, #[allow(dead_code)] crate::metrics::Held);

impl InFlight {
    fn begin(activity: Arc<Activity>, listener: &str) -> Self {
        activity.in_flight.fetch_add(1, Ordering::Relaxed);
        activity.touch();
        activity.mark_request_boundary();
        activity.changed.notify_one();
        Self(activity, crate::metrics::Held::new(crate::metrics::REQUESTS_IN_FLIGHT, "listener", listener))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.0.touch();
        self.0.mark_request_boundary();
        self.0.changed.notify_one();
    }
}

/// One HTTP/2 stream; reset by the client unless its answer ended, or
/// failed on the upstream's side (not the client's doing).
struct StreamEnd {
    activity: Arc<Activity>,
    ended: bool,
    failed: Arc<AtomicBool>,
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
        inner: I,
        activity: Arc<Activity>,
        send: Pacer,
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
