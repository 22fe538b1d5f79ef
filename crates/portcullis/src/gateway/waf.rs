//! The WAF of a configuration: one engine per profile the routes use,
//! loaded on a blocking thread and canary-checked, the inspection threads
//! started and warmed, and each route's [`WafRoute`].

use std::io;
use std::sync::Arc;

use portcullis_layers::waf::{WafPool, WafRoute, WafSettings};
use portcullis_policy::waf::VerdictCache;

use crate::config::Config;

/// Loads one engine per WAF profile the routes use, on a blocking thread
/// (CRS compiles in a fraction of a second, more in debug builds).
pub(super) async fn load(config: &Config) -> Result<Vec<Option<Arc<WafRoute>>>, WafStartError> {
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
            let metrics = portcullis_layers::waf::WafMetrics::new(&r.policy.name);
            let engine = engines.get(route.profile)?.clone();
            let cache = caches.get(route.profile).cloned().flatten();
            Some(Arc::new(WafRoute {
                engine,
                mode: route.mode,
                cache,
                responses: route.responses,
                settings: settings.clone(),
                metrics,
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
