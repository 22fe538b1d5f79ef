//! `[auth.oidc]` and `[auth.session]`: browser login against an external
//! OpenID provider and the session cookie it results in.

use std::path::Path;

use super::error::Collector;
use super::raw::RawConfig;

/// `[auth.oidc]` with `[auth.session]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Oidc {
    /// The provider's issuer URL (discovery at `<issuer>/.well-known/openid-configuration`).
    pub issuer: String,
    /// The registered client id.
    pub client_id: String,
}

pub(super) fn build_oidc(
    _c: &mut Collector<'_>,
    raw: &RawConfig,
    _base: &Path,
    _env: &dyn Fn(&str) -> Option<String>,
) -> Option<Oidc> {
    raw.auth.oidc.as_ref().map(|o| Oidc {
        issuer: o.get_ref().issuer.get_ref().clone(),
        client_id: o.get_ref().client_id.get_ref().clone(),
    })
}
