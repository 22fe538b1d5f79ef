//! `[auth]`: the authentication methods routes may name.

use std::path::Path;

use super::error::Collector;
use super::oidc::Oidc;
use super::raw::RawConfig;
use super::state::ApiKeys;

/// Every configured authentication method.
#[derive(Debug, Clone, Default)]
pub struct Auth {
    /// `[auth.oidc]`: browser sessions.
    pub oidc: Option<Oidc>,
    /// `[auth.api_key]`.
    pub api_keys: Option<ApiKeys>,
}

pub(super) fn build_auth(
    c: &mut Collector<'_>,
    raw: &RawConfig,
    base: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Auth {
    Auth { oidc: super::oidc::build_oidc(c, raw, base, env), api_keys: super::state::build_api_keys(c, raw) }
}
