//! `[auth.api_key]`: how API keys are accepted (the keys themselves live in
//! the `[state] store`).
//!
//! Decision rules:
//! - The key header must be a valid header name that is not hop-by-hop
//!   (proxies would drop it), not `Authorization` (already read for
//!   `Bearer` keys), not `Cookie`/`Host`/`Proxy-Authorization`, and not an
//!   `X-Portcullis-*` header (stripped at ingress).
//! - `cache_ttl` bounds how long a revoked key keeps working on a running
//!   gateway, so it is capped at [`MAX_CACHE_TTL`].

use std::time::Duration;

use http::HeaderName;
use toml::Spanned;

use super::error::Collector;
use super::raw::RawConfig;

/// The default `cache_ttl`.
pub const DEFAULT_CACHE_TTL: Duration = Duration::from_secs(10);
/// The largest `cache_ttl`: revocation must take effect within minutes.
pub const MAX_CACHE_TTL: Duration = Duration::from_secs(600);

/// `[auth.api_key]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeys {
    /// A dedicated header carrying keys, besides `Authorization: Bearer`.
    pub header: Option<HeaderName>,
    /// How long a verified key is trusted without asking the store again.
    pub cache_ttl: Duration,
}

pub(super) fn build_api_keys(c: &mut Collector<'_>, raw: &RawConfig) -> Option<ApiKeys> {
    let api_key = raw.auth.api_key.as_ref()?.get_ref();
    let header = api_key.header.as_ref().and_then(|h| key_header(c, h));
    let cache_ttl = api_key.cache_ttl.as_ref().map_or(DEFAULT_CACHE_TTL, |ttl| cache_ttl(c, ttl));
    Some(ApiKeys { header, cache_ttl })
}

fn key_header(c: &mut Collector<'_>, value: &Spanned<String>) -> Option<HeaderName> {
    let expected = "a header name such as \"x-api-key\"";
    let Ok(name) = HeaderName::from_bytes(value.get_ref().trim().as_bytes()) else {
        c.error(value.span(), format!("invalid header name {:?}", value.get_ref())).expected(expected);
        return None;
    };
    const REFUSED: [&str; 13] = [
        "authorization",
        "proxy-authorization",
        "cookie",
        "host",
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
    ];
    let refused = REFUSED.contains(&name.as_str()) || name.as_str().starts_with("x-portcullis-");
    if refused {
        c.error(value.span(), format!("header {:?} cannot carry API keys", name.as_str())).expected(expected).help(
            "Authorization: Bearer is always accepted; pick a dedicated end-to-end header, not a hop-by-hop, \
                 cookie, host or X-Portcullis-* one",
        );
        return None;
    }
    Some(name)
}

fn cache_ttl(c: &mut Collector<'_>, value: &Spanned<String>) -> Duration {
    match humantime::parse_duration(value.get_ref()) {
        Ok(ttl) if ttl <= MAX_CACHE_TTL => ttl,
        Ok(_) => {
            c.error(value.span(), format!("cache_ttl {:?} is too long", value.get_ref()))
                .expected("at most \"10m\"")
                .help("a revoked key keeps working for up to cache_ttl; \"0s\" asks the store on every request");
            DEFAULT_CACHE_TTL
        }
        Err(e) => {
            c.error(value.span(), format!("invalid cache_ttl {:?}: {e}", value.get_ref()))
                .expected("a duration such as \"10s\", \"1m\", or \"0s\" for no cache");
            DEFAULT_CACHE_TTL
        }
    }
}
