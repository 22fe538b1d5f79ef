//! One compiled configuration, ready to serve: the [`Gateway`] every
//! request of a worker runs through, and what a configuration's workers
//! share ([`ConfigShared`]: in-flight counters, ban rules, the WAF engines,
//! loaded and canary-checked before the configuration serves), over the
//! state that outlives reloads ([`SharedStores`]).
//!
//! Built at start and again on every reload; a reload swaps complete
//! gateways, so a request never sees half of a configuration. What needs IO
//! to become runnable is done here too: the WAF's rule sets ([`waf`]),
//! OpenAPI documents named by URL ([`openapi`]) and the https upstreams' TLS
//! clients (with the system's CA roots where `tls.ca` is not set).

use std::sync::Arc;

use portcullis_layers::{EventSink, GatewayService, RouteInfo, StackConfig};
use portcullis_policy::route::{RouteEntry, RouteTable};
use tokio_util::task::TaskTracker;

pub mod endpoints;
pub mod openapi;
mod waf;

pub use waf::WafStartError;

use crate::auth::AuthRuntime;
use crate::config::{Config, IdentityMode};
use crate::proxy::Proxy;
use crate::proxy::upstream::UpstreamState;
use crate::shared::Revocations;
use portcullis_layers::ban::{BanStore, Banner};
use portcullis_layers::concurrency::InFlight as InFlightLimit;
use portcullis_layers::login::LoginStore;
use portcullis_layers::store::LimitStore;
use portcullis_layers::waf::WafRoute;

/// One compiled configuration, ready to serve.
#[derive(Debug)]
pub struct Gateway {
    /// The configuration it was built from.
    pub config: Arc<Config>,
    pub(crate) service: GatewayService,
    /// The upstreams' targets and their passive health (this worker's view).
    pub upstreams: Arc<Vec<UpstreamState>>,
    /// Where requests that matched no route are counted.
    pub(crate) unmatched: crate::metrics::RouteHandles,
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
        let listeners = || config.listeners.iter().map(|l| l.name.as_str());
        let upstreams: Arc<Vec<UpstreamState>> = Arc::new(
            config
                .upstreams
                .iter()
                .enumerate()
                .map(|(i, u)| UpstreamState::new(u, per_config.upstream_tls.get(i).and_then(Option::as_ref)))
                .collect(),
        );
        let entries = config
            .routes
            .iter()
            .enumerate()
            .map(|(i, r)| RouteEntry {
                host: r.host.clone(),
                path: r.path.clone(),
                methods: r.methods.clone(),
                // The file's policy, with what needs the running process.
                value: Arc::new(RouteInfo {
                    identity: auth.upstream_identity(
                        config.upstreams.get(r.policy.upstream).map_or(IdentityMode::None, |u| u.identity),
                    ),
                    in_flight: per_config.routes.get(i).cloned().flatten(),
                    upstream_in_flight: per_config.upstreams.get(r.policy.upstream).cloned().flatten(),
                    waf: per_config.waf_routes.get(i).cloned().flatten(),
                    // Server::start and reload fetch URL documents before building.
                    openapi: r.openapi.as_ref().and_then(|n| config.openapi.get(n)).and_then(|d| d.compiled.clone()),
                    metrics: Some(Arc::new(crate::metrics::RouteHandles::new(&r.policy.name, listeners()))),
                    ..r.policy.clone()
                }),
            })
            .collect();
        let endpoints = endpoints::router(&config, auth, &events);
        let stack = StackConfig {
            trusted_proxies: config.server.trusted_proxies.clone(),
            limits: config.server.limits,
            routes: Arc::new(RouteTable::new(entries)),
            events,
            access_log: config.log.access,
            sample_allowed_ppm: config.events.sample_allowed_ppm,
            headers: Arc::new(config.headers.clone()),
            cors: config.cors.clone().map(Arc::new),
            auth: auth.authenticators.clone(),
            paths: config.paths,
            roles: Arc::new(config.roles.clone()),
            ip_rules: config.access.clone().map(Arc::new),
            // Only routes with limits touch the store.
            limit_store: (config.routes.iter().any(|r| !r.policy.limits.is_empty())
                || !config.endpoint_limits.is_empty())
            .then(|| limit_store.clone()),
            login_store: config.routes.iter().any(|r| r.policy.login.is_some()).then(|| state.logins.clone()),
            endpoints,
            bans: Some(state.bans.clone()),
            banner: per_config.banner.clone(),
            own_endpoints_route: (!config.endpoint_limits.is_empty()).then(|| {
                // Only its name and limits are read: the endpoints answer
                // before routing and authentication.
                Arc::new(RouteInfo {
                    name: Arc::from(OWN_ENDPOINTS_ROUTE),
                    auth: portcullis_layers::AuthMode::Public,
                    limits: config.endpoint_limits.clone(),
                    metrics: Some(Arc::new(crate::metrics::RouteHandles::new(OWN_ENDPOINTS_ROUTE, listeners()))),
                    ..RouteInfo::default()
                })
            }),
            csrf: config.csrf.as_ref().map(|c| c.policy.clone()),
        };
        let service = portcullis_layers::stack(&stack, Proxy::new(upstreams.clone(), tasks));
        let unmatched = crate::metrics::RouteHandles::new(crate::metrics::UNMATCHED_ROUTE, listeners());
        Self { config, service, upstreams, unmatched }
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
    /// The TLS client by upstream index (upstreams with https targets).
    pub upstream_tls: Vec<Option<Arc<rustls::ClientConfig>>>,
}

/// Why a configuration's shared parts could not be built (at start or on
/// reload).
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The WAF could not start.
    #[error("waf: {0}")]
    Waf(#[from] WafStartError),
    /// An https upstream's TLS client could not be built.
    #[error("upstream {upstream:?}: {source}")]
    UpstreamTls {
        /// The upstream's name.
        upstream: String,
        /// Cause.
        source: crate::tls::TlsError,
    },
}

impl ConfigShared {
    /// The counters, rules and WAF engines `config` asks for, over `stores`.
    ///
    /// # Errors
    /// A WAF rule set does not load or fails its canary, the inspection
    /// threads cannot start, or an https upstream's TLS client cannot be
    /// built (no system CA roots, a client key rustls cannot use).
    pub async fn load(config: &Config, stores: &SharedStores) -> Result<Self, LoadError> {
        let upstream_tls = upstream_clients(config)?;
        let waf_routes = waf::load(config).await?;
        Ok(Self { waf_routes, upstream_tls, ..Self::of(config, stores) })
    }

    /// The counters and rules `config` asks for, over `stores` (no WAF, no
    /// TLS clients: https upstreams refuse to connect).
    #[must_use]
    pub fn of(config: &Config, stores: &SharedStores) -> Self {
        Self {
            waf_routes: Vec::new(),
            upstream_tls: Vec::new(),
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

/// The TLS client of each upstream with https targets, by upstream index.
fn upstream_clients(config: &Config) -> Result<Vec<Option<Arc<rustls::ClientConfig>>>, LoadError> {
    config
        .upstreams
        .iter()
        .map(|u| {
            let https = u.targets.iter().any(
                |t| matches!(t, crate::config::Target::Http { scheme, .. } if *scheme == http::uri::Scheme::HTTPS),
            );
            https
                .then(|| crate::tls::client_config(u.tls.as_ref()))
                .transpose()
                .map_err(|source| LoadError::UpstreamTls { upstream: u.name.clone(), source })
        })
        .collect()
}
