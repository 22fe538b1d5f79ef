//! `[alerts]` and `[[alerts.rule]]`: which security events, how many of them
//! within a sliding window, raise a webhook alert (the engine is
//! `crate::alerts`).
//!
//! Decision rules:
//! - `webhook` is required once a rule exists. It is a secret (a Slack or
//!   Mattermost incoming-webhook URL carries its token in the path), so it may
//!   be `${ENV}` or `file:/path` and is never printed whole: errors and logs
//!   show its scheme and host only. It must be `https://`, or `http://` to a
//!   loopback host, like every outbound request of the gateway.
//! - `headers` values are secrets too (`Authorization = "${ALERT_TOKEN}"`).
//! - A rule names the events it counts with `match`: every list given must
//!   match (reason codes or `defence.*`, defence names, actions, statuses);
//!   within a list any entry does. A rule with an empty `match` is refused: it
//!   would count every event, granted ones included.
//! - `kind = "count"` (default) counts matching events per group
//!   (`group_by = "none"`, `"client"` or `"route"`); `kind =
//!   "distinct_defences"` counts, per client, the different defences its
//!   matching events came from (one address probing many defences).
//! - `threshold` is 1–1 000 000; `window` 1 s–24 h; `cooldown` (default
//!   10 min) at least 1 s. At most 64 rules, names unique.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use portcullis_policy::{Action, Reason, SecurityEvent};
use serde::Deserialize;
use toml::Spanned;

use super::error::Collector;
use super::raw::RawConfig;
use super::secret::{Secret, SecretSource, resolve};
use super::sources::Sources;
use super::values::{choice, duration};

/// The default sliding window.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(60);
/// The default cool-down: at most one firing and one resolved message per
/// rule and group within it.
pub const DEFAULT_COOLDOWN: Duration = Duration::from_secs(600);
/// The most rules (the sink marks each event with a 64-bit rule mask).
pub const MAX_RULES: usize = 64;

/// `[alerts]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAlerts {
    /// Where alerts are posted (a secret: `${ENV}` or `file:/path`).
    pub webhook: Option<Spanned<String>>,
    /// Extra request headers, values as secrets.
    pub headers: Option<BTreeMap<String, Spanned<String>>>,
    /// This gateway's name in the alerts (default: the host name).
    pub instance: Option<Spanned<String>>,
    #[serde(default, rename = "rule")]
    pub rules: Vec<Spanned<RawAlertRule>>,
}

/// `[[alerts.rule]]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAlertRule {
    pub name: Spanned<String>,
    /// `count` (default) or `distinct_defences`.
    pub kind: Option<Spanned<String>>,
    #[serde(rename = "match")]
    pub matches: Option<Spanned<RawAlertMatch>>,
    pub threshold: Spanned<i64>,
    pub window: Option<Spanned<String>>,
    pub cooldown: Option<Spanned<String>>,
    /// `none` (default), `client` or `route`.
    pub group_by: Option<Spanned<String>>,
}

/// A rule's `match = { … }` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAlertMatch {
    pub reason: Option<Vec<Spanned<String>>>,
    pub defence: Option<Vec<Spanned<String>>>,
    pub action: Option<Vec<Spanned<String>>>,
    pub status: Option<Vec<Spanned<i64>>>,
}

/// `[alerts]`, built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alerts {
    /// The webhook URL (a secret).
    pub webhook: Secret,
    /// The webhook URL's scheme and host, for logs.
    pub webhook_shown: String,
    /// Extra headers sent with each alert (values are secrets).
    pub headers: Vec<(http::HeaderName, Secret)>,
    /// This gateway's name in the alerts.
    pub instance: String,
    /// The rules, in file order.
    pub rules: Vec<AlertRule>,
}

/// What a rule counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleKind {
    /// Matching events.
    Count,
    /// Different defences among a client's matching events.
    DistinctDefences,
}

/// How a rule's events are grouped into incidents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupBy {
    /// One incident for the whole rule.
    None,
    /// One incident per client address.
    Client,
    /// One incident per route (events without a route are not counted).
    Route,
}

impl GroupBy {
    /// The word used in the configuration and the payload.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Client => "client",
            Self::Route => "route",
        }
    }
}

/// One `[[alerts.rule]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertRule {
    /// Its name, in the alert, the metrics and Redis keys.
    pub name: String,
    /// What is counted.
    pub kind: RuleKind,
    /// Which events count.
    pub matcher: EventMatch,
    /// The count (or number of defences) that fires.
    pub threshold: u64,
    /// The sliding window.
    pub window: Duration,
    /// The least time between a firing and the next one of the same group.
    pub cooldown: Duration,
    /// The incidents' grouping.
    pub group_by: GroupBy,
}

/// One `reason` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
enum ReasonMatch {
    /// One code.
    Code(&'static str),
    /// Every code of a defence (`jwt.*`).
    Defence(&'static str),
}

/// Which events a rule counts: every non-empty list must match.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EventMatch {
    reasons: Vec<ReasonMatch>,
    defences: Vec<&'static str>,
    actions: Vec<Action>,
    statuses: Vec<u16>,
}

impl EventMatch {
    /// Whether `event` counts.
    #[must_use]
    pub fn matches(&self, event: &SecurityEvent) -> bool {
        let reason_ok = self.reasons.is_empty()
            || self.reasons.iter().any(|r| match r {
                ReasonMatch::Code(code) => event.reason == *code,
                ReasonMatch::Defence(defence) => event.defence == *defence,
            });
        reason_ok
            && (self.defences.is_empty() || self.defences.contains(&event.defence))
            && (self.actions.is_empty() || self.actions.contains(&event.action))
            && (self.statuses.is_empty() || self.statuses.contains(&event.status))
    }

    fn is_empty(&self) -> bool {
        self.reasons.is_empty() && self.defences.is_empty() && self.actions.is_empty() && self.statuses.is_empty()
    }
}

const WEBHOOK_EXPECTED: &str =
    "\"${ALERT_WEBHOOK_URL}\", \"file:alert-webhook.url\" or \"https://alerts.example.com/hook\"";

/// The defence names of the reason table (`jwt`, `waf`, `upstream`, …).
fn defence_name(name: &str) -> Option<&'static str> {
    Reason::ALL.iter().map(|r| r.defence()).find(|d| *d == name)
}

/// `[alerts]`, when present.
pub(super) fn build_alerts(c: &mut Collector<'_>, raw: &RawConfig, base: &Path, env: &Sources<'_>) -> Option<Alerts> {
    let spanned = raw.alerts.as_ref()?;
    let a = spanned.get_ref();
    let rules = build_rules(c, &a.rules);
    if a.rules.is_empty() {
        c.error(spanned.span(), "[alerts] has no rules")
            .help("add an [[alerts.rule]] (see docs/alerts.md) or remove [alerts]");
    }
    let Some(webhook) = &a.webhook else {
        c.error(spanned.span(), "[alerts] has no webhook").expected(WEBHOOK_EXPECTED);
        return None;
    };
    let (url, shown) = build_webhook(c, webhook, base, env)?;
    let mut headers = Vec::new();
    for (name, value) in a.headers.iter().flatten() {
        let Ok(header) = http::HeaderName::from_bytes(name.as_bytes()) else {
            c.error(value.span(), format!("invalid header name {name:?}"))
                .expected("a header name such as Authorization");
            continue;
        };
        match resolve(value.get_ref(), base, env) {
            Ok(secret) if http::HeaderValue::from_str(secret.expose()).is_ok() => headers.push((header, secret)),
            Ok(_) => {
                c.error(value.span(), format!("header {name}: the value is not a valid header value"))
                    .help("visible ASCII only; the value itself is never printed");
            }
            Err(e) => {
                c.error(value.span(), format!("header {name}: {e}"))
                    .expected("\"${ALERT_TOKEN}\" or \"file:alert-token\"");
            }
        }
    }
    let instance = match &a.instance {
        Some(name) if !name.get_ref().trim().is_empty() && name.get_ref().len() <= 128 => {
            name.get_ref().trim().to_owned()
        }
        Some(name) => {
            c.error(name.span(), "invalid instance name").expected("1 to 128 characters, such as \"gw-eu-1\"");
            String::new()
        }
        None => host_name(),
    };
    Some(Alerts { webhook: url, webhook_shown: shown, headers, instance, rules })
}

/// The host name (Linux), else `portcullis`.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "portcullis".to_owned())
}

fn build_webhook(
    c: &mut Collector<'_>,
    value: &Spanned<String>,
    base: &Path,
    env: &Sources<'_>,
) -> Option<(Secret, String)> {
    let secret = match resolve(value.get_ref().trim(), base, env) {
        Ok(secret) => secret,
        Err(e) => {
            c.error(value.span(), format!("webhook: {e}")).expected(WEBHOOK_EXPECTED);
            return None;
        }
    };
    let reference = match secret.source() {
        SecretSource::Literal => None,
        SecretSource::Env(name) => Some(format!("${{{name}}}")),
        SecretSource::File(path) => Some(format!("file:{path}")),
    };
    let parsed = secret.expose().trim().parse::<http::Uri>().ok();
    let scheme = parsed.as_ref().and_then(|u| u.scheme_str().map(str::to_owned));
    let host = parsed.as_ref().and_then(|u| u.host().map(str::to_owned));
    let (Some(scheme), Some(host)) = (scheme, host) else {
        let shown = reference.unwrap_or_else(|| "the value".to_owned());
        c.error(value.span(), format!("webhook: {shown} is not an absolute URL")).expected(WEBHOOK_EXPECTED);
        return None;
    };
    let shown = format!("{scheme}://{host}");
    let allowed = scheme == "https" || (scheme == "http" && super::is_loopback_host(&host));
    if !allowed {
        c.error(value.span(), format!("webhook {shown}: the scheme must be https"))
            .expected(WEBHOOK_EXPECTED)
            .help("plain http is allowed only to loopback hosts (a local relay)");
        return None;
    }
    Some((secret, shown))
}

fn build_rules(c: &mut Collector<'_>, raw: &[Spanned<RawAlertRule>]) -> Vec<AlertRule> {
    let mut out: Vec<AlertRule> = Vec::new();
    if raw.len() > MAX_RULES {
        if let Some(extra) = raw.get(MAX_RULES) {
            c.error(extra.span(), format!("more than {MAX_RULES} alert rules")).help("merge rules with `match` lists");
        }
        return out;
    }
    for spanned in raw {
        let r = spanned.get_ref();
        let name = r.name.get_ref().clone();
        if !portcullis_policy::principal::is_valid_name(&name) {
            c.error(r.name.span(), format!("invalid alert rule name {name:?}"))
                .expected("letters, digits and . _ : / -");
            continue;
        }
        if out.iter().any(|o| o.name == name) {
            c.error(r.name.span(), format!("two [[alerts.rule]] are named {name:?}"))
                .help("give each rule its own name");
            continue;
        }
        let kind = choice(
            c,
            r.kind.as_ref(),
            RuleKind::Count,
            "rule kind",
            &[("count", RuleKind::Count), ("distinct_defences", RuleKind::DistinctDefences)],
        );
        let default_group = if kind == RuleKind::DistinctDefences { GroupBy::Client } else { GroupBy::None };
        let group_by = choice(
            c,
            r.group_by.as_ref(),
            default_group,
            "group_by",
            &[("none", GroupBy::None), ("client", GroupBy::Client), ("route", GroupBy::Route)],
        );
        if kind == RuleKind::DistinctDefences
            && group_by != GroupBy::Client
            && let Some(value) = &r.group_by
        {
            c.error(value.span(), "a distinct_defences rule counts per client")
                .expected("group_by = \"client\" or no group_by");
        }
        let threshold = u64::try_from(*r.threshold.get_ref()).ok().filter(|n| (1..=1_000_000).contains(n));
        if threshold.is_none() {
            c.error(r.threshold.span(), "threshold is out of range").expected("between 1 and 1000000");
        }
        let window = duration(c, r.window.as_ref(), DEFAULT_WINDOW, "window");
        if let Some(value) = &r.window
            && !(Duration::from_secs(1)..=Duration::from_secs(86_400)).contains(&window)
        {
            c.error(value.span(), "window is out of range").expected("between \"1s\" and \"24h\"");
        }
        let cooldown = duration(c, r.cooldown.as_ref(), DEFAULT_COOLDOWN, "cooldown");
        if let Some(value) = &r.cooldown
            && cooldown < Duration::from_secs(1)
        {
            c.error(value.span(), "cooldown is shorter than one second").expected("a duration such as \"10m\"");
        }
        let matcher = build_match(c, spanned, r.matches.as_ref());
        let Some(threshold) = threshold else { continue };
        out.push(AlertRule { name, kind, matcher, threshold, window, cooldown, group_by });
    }
    out
}

fn build_match(
    c: &mut Collector<'_>,
    rule: &Spanned<RawAlertRule>,
    raw: Option<&Spanned<RawAlertMatch>>,
) -> EventMatch {
    let mut m = EventMatch::default();
    let Some(raw) = raw else {
        c.error(rule.span(), "alert rule has no match")
            .expected("match = { reason = [\"login.failed\"] } or match = { action = [\"deny\"] }");
        return m;
    };
    let r = raw.get_ref();
    for entry in r.reason.iter().flatten() {
        let text = entry.get_ref().as_str();
        if let Some(defence) = text.strip_suffix(".*") {
            match defence_name(defence) {
                Some(d) => m.reasons.push(ReasonMatch::Defence(d)),
                None => {
                    c.error(entry.span(), format!("no reason codes start with {defence:?}"))
                        .expected("a reason code or `defence.*` from docs/events.md");
                }
            }
        } else {
            match Reason::ALL.iter().find(|r| r.code() == text) {
                Some(reason) => m.reasons.push(ReasonMatch::Code(reason.code())),
                None => {
                    c.error(entry.span(), format!("unknown reason code {text:?}"))
                        .expected("a reason code or `defence.*` from docs/events.md");
                }
            }
        }
    }
    for entry in r.defence.iter().flatten() {
        match defence_name(entry.get_ref()) {
            Some(d) => m.defences.push(d),
            None => {
                c.error(entry.span(), format!("unknown defence {:?}", entry.get_ref()))
                    .expected("a defence from docs/events.md, such as \"jwt\", \"waf\" or \"upstream\"");
            }
        }
    }
    for entry in r.action.iter().flatten() {
        let options = [("deny", Action::Deny), ("log", Action::Log), ("allow", Action::Allow), ("ban", Action::Ban)];
        m.actions.push(choice(c, Some(entry), Action::Deny, "action", &options));
    }
    for entry in r.status.iter().flatten() {
        match u16::try_from(*entry.get_ref()) {
            Ok(s) if (100..=599).contains(&s) => m.statuses.push(s),
            _ => {
                c.error(entry.span(), "status is out of range").expected("an HTTP status such as 401");
            }
        }
    }
    let empty_lists = [
        r.reason.as_ref().is_some_and(Vec::is_empty),
        r.defence.as_ref().is_some_and(Vec::is_empty),
        r.action.as_ref().is_some_and(Vec::is_empty),
        r.status.as_ref().is_some_and(Vec::is_empty),
    ];
    if m.is_empty() || empty_lists.contains(&true) {
        c.error(raw.span(), "match names no events (or has an empty list)")
            .help("an empty match would count every event, granted ones included; match = { action = [\"deny\"] } counts every refusal");
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml: &str) -> Result<Option<Alerts>, String> {
        let env = |name: &str| (name == "HOOK").then(|| "https://hooks.example.com/services/T0/B0/s3cret".to_owned());
        super::super::parse(Path::new("/tmp/p.toml"), toml, env).map(|c| c.alerts).map_err(|e| e.to_string())
    }

    /// Put after the alerts, so their line numbers do not depend on it.
    const BASE: &str = "\n[[listener]]\nname = \"a\"\nbind = \"127.0.0.1:0\"\n[[upstream]]\nname = \"u\"\ntargets = [\"http://127.0.0.1:1\"]\n[[route]]\nmatch = { path = \"/**\" }\nupstream = \"u\"\nauth = \"public\"\n";

    #[test]
    fn a_full_section_builds() {
        let alerts = parse(&format!(
            "[alerts]\nwebhook = \"${{HOOK}}\"\ninstance = \"gw-1\"\nheaders = {{ Authorization = \"Bearer x\" }}\n\
             [[alerts.rule]]\nname = \"logins\"\nmatch = {{ reason = [\"login.failed\", \"jwt.*\"], action = [\"deny\"] }}\nthreshold = 20\nwindow = \"1m\"\n\
             [[alerts.rule]]\nname = \"prober\"\nkind = \"distinct_defences\"\nmatch = {{ action = [\"deny\", \"log\"] }}\nthreshold = 4\n\
             [[alerts.rule]]\nname = \"upstream\"\nmatch = {{ defence = [\"upstream\"] }}\ngroup_by = \"route\"\nthreshold = 10\ncooldown = \"5m\"\n{BASE}"
        ))
        .unwrap()
        .unwrap();
        assert_eq!(alerts.webhook_shown, "https://hooks.example.com");
        assert_eq!(alerts.instance, "gw-1");
        assert_eq!(alerts.rules.len(), 3);
        assert_eq!(alerts.rules[1].group_by, GroupBy::Client);
        assert_eq!(alerts.rules[2].cooldown, Duration::from_secs(300));
        assert_eq!(alerts.rules[0].window, DEFAULT_WINDOW);
        // The secret never reaches Debug output.
        assert!(!format!("{alerts:?}").contains("s3cret"));
    }

    #[test]
    fn mistakes_are_reported_with_their_place_and_never_the_secret() {
        let err = parse(&format!(
            "[alerts]\nwebhook = \"http://hooks.example.com/s3cret\"\n\
             [[alerts.rule]]\nname = \"a\"\nmatch = {{ reason = [\"nope.x\"], defence = [\"nope\"], action = [\"drop\"] }}\nthreshold = 0\n\
             [[alerts.rule]]\nname = \"b\"\nmatch = {{}}\nthreshold = 2\nwindow = \"48h\"\nkind = \"distinct_defences\"\ngroup_by = \"route\"\n{BASE}"
        ))
        .unwrap_err();
        for needle in [
            ":2:11: webhook http://hooks.example.com: the scheme must be https",
            "unknown reason code \"nope.x\"",
            "unknown defence \"nope\"",
            "unknown action \"drop\"",
            "threshold is out of range",
            "window is out of range",
            "counts per client",
            "match names no events",
        ] {
            assert!(err.contains(needle), "{needle:?} missing from:\n{err}");
        }
        assert!(!err.contains("s3cret"), "{err}");
        let err = parse(&format!("[alerts]\nwebhook = \"${{MISSING}}\"\n{BASE}")).unwrap_err();
        assert!(err.contains("environment variable MISSING is not set") && err.contains("has no rules"), "{err}");
        let err = parse(&format!("[alerts]\nhook = 1\n{BASE}")).unwrap_err();
        assert!(err.contains("unknown field"), "{err}");
    }
}
