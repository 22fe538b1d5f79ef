//! One compiled configuration, ready to serve: the [`Gateway`] every
//! request of a worker runs through, and what a configuration's workers
//! share ([`ConfigShared`]: in-flight counters, ban rules, the WAF engines,
//! loaded and canary-checked before the configuration serves), over the
//! state that outlives reloads ([`SharedStores`]).
//!
//! Built at start and again on every reload; a reload swaps complete
//! gateways, so a request never sees half of a configuration.

use std::io;
use std::sync::Arc;

use portcullis_layers::{EventSink, GatewayService, RouteInfo, StackConfig};
use portcullis_policy::route::{RouteEntry, RouteTable};
use tokio_util::task::TaskTracker;

use crate::auth::AuthRuntime;
use crate::config::{Config, IdentityMode};
use crate::proxy::Proxy;
use crate::proxy::upstream::UpstreamState;
use crate::shared::Revocations;
use portcullis_layers::ban::{BanStore, Banner};
use portcullis_layers::concurrency::InFlight as InFlightLimit;
use portcullis_layers::login::LoginStore;
use portcullis_layers::rate_limit::LimitStore;
use portcullis_layers::waf::{WafPool, WafRoute, WafSettings};
use portcullis_policy::waf::VerdictCache;

/// One compiled configuration, ready to serve.
#[derive(Debug)]
pub struct Gateway {
    /// The configuration it was built from.
    pub config: Arc<Config>,
    pub(crate) service: GatewayService,
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
    /// A WAF rule set does not load or fails its canary, or the inspection
    /// threads cannot start.
    pub async fn load(config: &Config, stores: &SharedStores) -> Result<Self, WafStartError> {
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
async fn load_waf(config: &Config) -> Result<Vec<Option<Arc<WafRoute>>>, WafStartError> {
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
    let engines = tokio::task::spawn_blocking(load).await.map_err(WafStartError::Loader)??;
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
        pool: WafPool::new(waf.workers, waf.queue, waf.inline_limit).map_err(WafStartError::Pool)?,
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

/// Why the WAF of a configuration could not start (at start or on reload).
#[derive(Debug, thiserror::Error)]
pub enum WafStartError {
    /// A rule set does not load, or fails its canary.
    #[error(transparent)]
    Rules(#[from] portcullis_policy::waf::LoadError),
    /// The thread loading the rule sets panicked or was cancelled.
    #[error("the thread loading the rule sets failed: {0}")]
    Loader(tokio::task::JoinError),
    /// The inspection threads could not start.
    #[error("cannot start the inspection threads: {0}")]
    Pool(io::Error),
}
