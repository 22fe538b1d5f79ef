//! `[limits.NAME]` and the routes' `limits`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue};
use portcullis_layers::rate_limit::{Limit, LimitKey};
use portcullis_policy::rate_limit::{Gcra, ceil_secs};
use toml::Spanned;

use super::error::Collector;
use super::raw::{RawConfig, RawLimit};

const RATE_EXAMPLE: &str = "\"50/s\", \"300/min\", \"2000/hour\", \"10000/day\" or \"100/10s\"";

/// Parses `N/unit` or `N/duration`.
fn parse_rate(text: &str) -> Option<(u32, Duration)> {
    let (n, per) = text.split_once('/')?;
    let n: u32 = n.trim().parse().ok()?;
    let period = match per.trim() {
        "s" | "sec" | "second" => Duration::from_secs(1),
        "m" | "min" | "minute" => Duration::from_secs(60),
        "h" | "hour" => Duration::from_secs(3600),
        "d" | "day" => Duration::from_secs(86_400),
        other => humantime::parse_duration(other).ok()?,
    };
    Some((n, period))
}

fn build_limit(c: &mut Collector<'_>, name: &str, raw: &Spanned<RawLimit>) -> Option<Arc<Limit>> {
    let l = raw.get_ref();
    if !portcullis_policy::principal::is_valid_name(name) {
        c.error(raw.span(), format!("invalid limit name {name:?}")).expected("letters, digits and . _ : / -");
        return None;
    }
    let key = match l.key.get_ref().as_str() {
        "ip" => LimitKey::Ip,
        "subject" => LimitKey::Subject,
        "api_key" => LimitKey::ApiKey,
        "route" => LimitKey::Route,
        "account" => LimitKey::Account,
        other => match other.strip_prefix("header:").map(|h| HeaderName::from_bytes(h.trim().as_bytes())) {
            Some(Ok(header)) => LimitKey::Header(header),
            _ => {
                c.error(l.key.span(), format!("unknown limit key {other:?}"))
                    .expected("\"ip\", \"subject\", \"api_key\", \"route\", \"account\" or \"header:X-Name\"");
                return None;
            }
        },
    };
    let Some((rate, period)) = parse_rate(l.rate.get_ref()) else {
        c.error(l.rate.span(), format!("invalid rate {:?}", l.rate.get_ref())).expected(RATE_EXAMPLE);
        return None;
    };
    let burst = match &l.burst {
        None => rate,
        Some(b) => match u32::try_from(*b.get_ref()) {
            Ok(b) if b > 0 => b,
            _ => {
                c.error(b.span(), "burst must be a positive integer").expected("e.g. burst = 100");
                return None;
            }
        },
    };
    let quota = match Gcra::new(rate, period, burst) {
        Ok(q) => q,
        Err(e) => {
            c.error(l.rate.span(), format!("unusable rate: {e}")).expected(RATE_EXAMPLE);
            return None;
        }
    };
    let fail_open = super::values::choice(
        c,
        l.on_store_failure.as_ref(),
        true,
        "on_store_failure",
        &[("open", true), ("closed", false)],
    );
    let exempt_ips = super::values::ip_nets(c, l.exempt_ips.as_ref(), "address");
    let window = ceil_secs(quota.window_nanos()).max(1);
    let policy_header = HeaderValue::from_str(&format!("\"{name}\";q={burst};w={window}")).ok()?;
    Some(Arc::new(Limit {
        name: Arc::from(name),
        key,
        quota,
        policy_header,
        exempt_ips,
        exempt_roles: l.exempt_roles.clone().unwrap_or_default(),
        fail_open,
        metrics: portcullis_layers::rate_limit::LimitMetrics::default(),
    }))
}

pub(super) fn build_limits(c: &mut Collector<'_>, raw: &RawConfig) -> BTreeMap<String, Arc<Limit>> {
    raw.limits.iter().filter_map(|(name, l)| build_limit(c, name, l).map(|limit| (name.clone(), limit))).collect()
}

/// A route's `limits`, by name. A name whose `[limits.NAME]` is in the
/// file but has errors is not reported again here: its own error is the
/// root cause.
pub(super) fn route_limits(
    c: &mut Collector<'_>,
    names: Option<&Spanned<Vec<String>>>,
    limits: &BTreeMap<String, Arc<Limit>>,
    raw: &RawConfig,
) -> Vec<Arc<Limit>> {
    let Some(names) = names else { return Vec::new() };
    let mut out = Vec::new();
    for name in names.get_ref() {
        match limits.get(name) {
            Some(limit) => out.push(limit.clone()),
            None if raw.limits.contains_key(name) => {}
            None => {
                let known = raw.limits.keys().cloned().collect::<Vec<_>>().join(", ");
                c.error(names.span(), format!("unknown limit {name:?}")).expected(if known.is_empty() {
                    "a [limits.NAME] section".into()
                } else {
                    format!("one of: {known}")
                });
            }
        }
    }
    out
}

/// The built-in limit on the gateway's own endpoints: generous for people
/// (a login is a handful of requests), tight for a flood of forged callbacks
/// or CSP reports.
pub const ENDPOINT_LIMIT: &str = "portcullis.endpoints";

/// `[server] endpoint_limits`, or the built-in per-IP limit when absent.
pub(super) fn endpoint_limits(
    c: &mut Collector<'_>,
    raw: &RawConfig,
    limits: &BTreeMap<String, Arc<Limit>>,
) -> Vec<Arc<Limit>> {
    if raw.server.endpoint_limits.is_some() {
        return route_limits(c, raw.server.endpoint_limits.as_ref(), limits, raw);
    }
    let quota = Gcra::new(10, Duration::from_secs(1), 30);
    let policy_header = HeaderValue::from_str(&format!("\"{ENDPOINT_LIMIT}\";q=30;w=3"));
    match (quota, policy_header) {
        (Ok(quota), Ok(policy_header)) => vec![Arc::new(Limit {
            name: Arc::from(ENDPOINT_LIMIT),
            key: LimitKey::Ip,
            quota,
            policy_header,
            exempt_ips: Vec::new(),
            exempt_roles: Vec::new(),
            fail_open: true,
            metrics: portcullis_layers::rate_limit::LimitMetrics::default(),
        })],
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates() {
        assert_eq!(parse_rate("50/s"), Some((50, Duration::from_secs(1))));
        assert_eq!(parse_rate("2000/hour"), Some((2000, Duration::from_secs(3600))));
        assert_eq!(parse_rate("5 / min"), Some((5, Duration::from_secs(60))));
        assert_eq!(parse_rate("100/10s"), Some((100, Duration::from_secs(10))));
        assert_eq!(parse_rate("fast"), None);
        assert_eq!(parse_rate("-1/s"), None);
    }
}
