//! `[state]` and `[auth.api_key]`: where durable and shared state lives, and
//! how API keys are accepted.

use std::path::Path;
use std::time::Duration;

use http::HeaderName;

use super::error::Collector;
use super::raw::RawConfig;

/// `[state]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct State {
    /// The durable store's URL (`sqlite://…` or `postgres://…`): API keys,
    /// accounts, the audit log.
    pub store: String,
}

/// `[auth.api_key]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeys {
    /// A dedicated header carrying keys, besides `Authorization: Bearer`.
    pub header: Option<HeaderName>,
    /// How long a verified key is trusted without asking the store again.
    pub cache_ttl: Duration,
}

pub(super) fn build_state(_c: &mut Collector<'_>, raw: &RawConfig, data_dir: &Path) -> State {
    let store = raw
        .state
        .store
        .as_ref()
        .map_or_else(|| format!("sqlite://{}", data_dir.join("portcullis.db").display()), |s| s.get_ref().clone());
    State { store }
}

pub(super) fn build_api_keys(_c: &mut Collector<'_>, raw: &RawConfig) -> Option<ApiKeys> {
    raw.auth.api_key.as_ref().map(|_| ApiKeys { header: None, cache_ttl: Duration::from_secs(10) })
}
