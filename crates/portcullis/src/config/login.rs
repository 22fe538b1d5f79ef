//! `[login.NAME]` and the routes' `login`: login brute-force protection.
//!
//! Decision rules:
//! - `account` is `json:<field or dotted.path>`, `form:<field>` or
//!   `header:<Name>`, and is required: counting only addresses misses
//!   distributed attacks on one account.
//! - Failure counts are between 1 and 10000; durations are positive and
//!   `max_backoff` is at least `backoff`; `failure_status` lists 4xx/5xx
//!   codes (a 2xx or 3xx is a successful login).
//! - Defaults are the secure choice: fail closed, 5 failures per account and
//!   20 per address, 1 s doubling up to 15 min, forgotten after 15 min.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use portcullis_layers::login::LoginSettings;
use portcullis_policy::login::{AccountSource, Backoff};
use toml::Spanned;

use super::error::Collector;
use super::raw::{RawConfig, RawLogin};
use super::values::{choice, duration, size};

/// Failures per account name before waits begin.
pub const DEFAULT_ACCOUNT_FAILURES: u32 = 5;
/// Failures per client address before waits begin.
pub const DEFAULT_IP_FAILURES: u32 = 20;
/// How long failures are remembered without a new one.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(15 * 60);
/// The first wait.
pub const DEFAULT_BACKOFF: Duration = Duration::from_secs(1);
/// The longest wait.
pub const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(15 * 60);
/// Body bytes read to find the account name.
pub const DEFAULT_MAX_BODY: u64 = 16 * 1024;

const ACCOUNT_EXPECTED: &str = "\"json:username\", \"json:user.email\", \"form:username\" or \"header:X-Login\"";

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn failures(c: &mut Collector<'_>, value: Option<&Spanned<i64>>, default: u32, what: &str) -> u32 {
    let Some(value) = value else { return default };
    match u32::try_from(*value.get_ref()) {
        Ok(n) if (1..=10_000).contains(&n) => n,
        _ => {
            c.error(value.span(), format!("{what} is out of range")).expected("between 1 and 10000");
            default
        }
    }
}

fn build_login(c: &mut Collector<'_>, name: &str, raw: &Spanned<RawLogin>) -> Option<Arc<LoginSettings>> {
    let l = raw.get_ref();
    if !portcullis_policy::principal::is_valid_name(name) {
        c.error(raw.span(), format!("invalid login name {name:?}")).expected("letters, digits and . _ : / -");
        return None;
    }
    let account = match AccountSource::parse(l.account.get_ref()) {
        Ok(source) => Some(source),
        Err(e) => {
            c.error(l.account.span(), e.to_string()).expected(ACCOUNT_EXPECTED);
            None
        }
    };
    let account_failures = failures(c, l.account_failures.as_ref(), DEFAULT_ACCOUNT_FAILURES, "account_failures");
    let ip_failures = failures(c, l.ip_failures.as_ref(), DEFAULT_IP_FAILURES, "ip_failures");
    let window = duration(c, l.window.as_ref(), DEFAULT_WINDOW, "window");
    let backoff = duration(c, l.backoff.as_ref(), DEFAULT_BACKOFF, "backoff");
    let max_backoff = duration(c, l.max_backoff.as_ref(), DEFAULT_MAX_BACKOFF.max(backoff), "max_backoff");
    if let Some(value) = &l.max_backoff
        && max_backoff < backoff
    {
        c.error(value.span(), "max_backoff is shorter than backoff").expected("max_backoff ≥ backoff");
    }
    let failure_status = match &l.failure_status {
        None => vec![StatusCode::UNAUTHORIZED, StatusCode::FORBIDDEN],
        Some(list) => {
            let mut out = Vec::new();
            for code in list.get_ref() {
                match u16::try_from(*code).ok().and_then(|n| StatusCode::from_u16(n).ok()) {
                    Some(status) if status.is_client_error() || status.is_server_error() => out.push(status),
                    _ => {
                        c.error(list.span(), format!("failure_status {code} is not a 4xx or 5xx status"))
                            .expected("e.g. failure_status = [401, 403]");
                    }
                }
            }
            if list.get_ref().is_empty() {
                c.error(list.span(), "failure_status is an empty list")
                    .help("a login protection that counts no failures protects nothing; omit it for [401, 403]");
            }
            out
        }
    };
    let fail_open =
        choice(c, l.on_store_failure.as_ref(), false, "on_store_failure", &[("closed", false), ("open", true)]);
    let max_body = size(c, l.max_body.as_ref(), DEFAULT_MAX_BODY, 1, 1 << 20, "max_body");
    let rules = |free| Backoff {
        free,
        window_nanos: nanos(window),
        backoff_nanos: nanos(backoff),
        max_backoff_nanos: nanos(max_backoff),
    };
    Some(Arc::new(LoginSettings {
        name: Arc::from(name),
        account: account?,
        account_backoff: rules(account_failures),
        ip_backoff: rules(ip_failures),
        failure_status,
        fail_open,
        max_body,
    }))
}

pub(super) fn build_logins(c: &mut Collector<'_>, raw: &RawConfig) -> BTreeMap<String, Arc<LoginSettings>> {
    raw.login.iter().filter_map(|(name, l)| build_login(c, name, l).map(|login| (name.clone(), login))).collect()
}

/// A route's `login`, by name (a `[login.NAME]` in the file that has
/// errors of its own is not reported again).
pub(super) fn route_login(
    c: &mut Collector<'_>,
    name: Option<&Spanned<String>>,
    logins: &BTreeMap<String, Arc<LoginSettings>>,
    raw: &RawConfig,
) -> Option<Arc<LoginSettings>> {
    let name = name?;
    if let Some(login) = logins.get(name.get_ref()) {
        return Some(login.clone());
    }
    if raw.login.contains_key(name.get_ref()) {
        return None;
    }
    let known = raw.login.keys().cloned().collect::<Vec<_>>().join(", ");
    c.error(name.span(), format!("unknown login {:?}", name.get_ref())).expected(if known.is_empty() {
        "a [login.NAME] section".into()
    } else {
        format!("one of: {known}")
    });
    None
}
