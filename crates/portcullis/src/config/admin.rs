//! `[admin]`: the admin API's listener and token.

use std::path::Path;

use super::error::Collector;
use super::secret::{Secret, resolve};
use super::sources::Sources;

/// `[admin]`: the admin API (metrics, bans, dashboard) on its own listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admin {
    /// Where it listens (loopback unless deliberately exposed).
    pub bind: std::net::SocketAddr,
    /// The bearer token every request must carry.
    pub token: Secret,
    /// HTTPS for the admin listener; required when `bind` is not loopback.
    pub tls: Option<super::Tls>,
}

/// Shortest admin token accepted: 128 bits as hex.
pub const MIN_ADMIN_TOKEN: usize = 32;

pub(super) fn build_admin(
    c: &mut Collector<'_>,
    raw: &super::raw::RawConfig,
    base: &Path,
    env: &Sources<'_>,
) -> Option<Admin> {
    let admin = raw.admin.as_ref()?.get_ref();
    let bind = match admin.bind.get_ref().parse() {
        Ok(addr) => addr,
        Err(_) => {
            c.error(admin.bind.span(), format!("invalid admin bind address {:?}", admin.bind.get_ref()))
                .expected("an address and port such as \"127.0.0.1:9901\"");
            return None;
        }
    };
    let token = match resolve(admin.token.get_ref(), base, env) {
        Ok(token) => token,
        Err(e) => {
            c.error(admin.token.span(), format!("admin token: {e}"))
                .help("use token = \"${PORTCULLIS_ADMIN_TOKEN}\" or token = \"file:/run/secrets/admin-token\"");
            return None;
        }
    };
    if token.expose().len() < MIN_ADMIN_TOKEN {
        c.error(admin.token.span(), format!("the admin token is shorter than {MIN_ADMIN_TOKEN} characters"))
            .help("generate one with: openssl rand -hex 32");
        return None;
    }
    let tls = admin.tls.as_ref().and_then(|t| super::build::build_tls(c, t, base));
    // The token and the dashboard's session cookie must not cross a network in clear.
    if tls.is_none() && admin.tls.is_none() && !std::net::SocketAddr::ip(&bind).is_loopback() {
        c.error(admin.bind.span(), format!("the admin API on {bind} (not loopback) must use TLS"))
            .help("add tls = { cert = \"admin.pem\", key = \"admin.key\" } (or tls = \"self-signed\") to [admin], or bind it to 127.0.0.1");
        return None;
    }
    Some(Admin { bind, token, tls })
}
