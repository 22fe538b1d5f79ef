//! Automatic bans: which refusals count against a client, and when enough of
//! them within a time make it a temporary ban.
//!
//! Defends against clients that keep probing after being refused — password
//! sprayers, token guessers, scanners — by closing the door on their address
//! for a while instead of answering each attempt.
//!
//! Decision rules:
//! - A rule (`[[ban]]`) names the refusals it counts (`on`): exact reason
//!   codes (`jwt.bad_signature`), a defence's codes (`jwt.*`) or a group:
//!   `auth.failed` (every 401), `forbidden` (every 403), `ratelimit` (every
//!   429), `malformed` (every 400) and `waf.blocked` (the WAF's refusals).
//! - Only refusals the client caused count: an upstream or gateway failure
//!   (502, 503) never bans anyone, and neither does a refusal made because
//!   a ban is already in place, nor a CSRF refusal: a forged request comes
//!   from the victim's browser and address, so counting it would let any
//!   web page get its visitors banned.
//! - "`count` refusals `within` T" is a GCRA quota of `count` per T with a
//!   burst of `count − 1`: the `count`-th refusal in quick succession bans,
//!   and so does a steady stream faster than `count` per T. The same quota
//!   runs in every rate-limit store, so a fleet sharing Redis counts
//!   together.
//! - A ban lasts `duration`; the address's whole IPv6 /64 is banned.
//!
//! Deployment caveat: behind a proxy, list it in `trusted_proxies` — else
//! the proxy's own address collects every client's refusals and is banned.
//! Trusted proxies themselves are never banned.

use std::time::Duration;

use crate::deny::{Attribution, Reason};
use crate::rate_limit::Gcra;

/// What a rule counts.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Matcher {
    /// One reason code.
    Reason(Reason),
    /// Every code of a defence (`jwt.*`), including ones added later.
    Defence(String),
    /// Every client refusal answered with this status.
    Status(u16),
}

impl Matcher {
    fn matches(&self, reason: Reason) -> bool {
        match self {
            Self::Reason(r) => *r == reason,
            Self::Defence(d) => reason.defence() == d,
            Self::Status(s) => reason.status().as_u16() == *s,
        }
    }
}

/// The groups `on` accepts besides codes, with what they stand for.
pub const GROUPS: &[(&str, &str)] = &[
    ("auth.failed", "every 401 refusal"),
    ("forbidden", "every 403 refusal"),
    ("ratelimit", "every 429 refusal"),
    ("malformed", "every 400 refusal"),
    ("waf.blocked", "every WAF refusal (waf.*)"),
];

/// Parses one entry of `on`.
///
/// # Errors
/// A message naming what is accepted when `text` is no known code, defence
/// or group.
fn parse_matcher(text: &str) -> Result<Matcher, String> {
    let matcher = match text {
        "auth.failed" => Matcher::Status(401),
        "forbidden" => Matcher::Status(403),
        "ratelimit" => Matcher::Status(429),
        "malformed" => Matcher::Status(400),
        "waf.blocked" | "waf.*" => Matcher::Defence("waf".into()),
        other => {
            if let Some(defence) = other.strip_suffix(".*") {
                if !Reason::ALL.iter().any(|r| r.defence() == defence) {
                    return Err(format!("no reason codes start with {defence:?}"));
                }
                Matcher::Defence(defence.into())
            } else {
                match Reason::ALL.iter().find(|r| r.code() == other) {
                    Some(r) => Matcher::Reason(*r),
                    None => return Err(format!("unknown reason code {other:?}")),
                }
            }
        }
    };
    Ok(matcher)
}

/// Why a ban rule is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BanRuleError {
    /// An `on` entry names nothing known.
    #[error("{0}")]
    On(String),
    /// `on` is empty.
    #[error("`on` names no refusals")]
    NothingCounted,
    /// Zero count, window or duration.
    #[error("count, within and duration must be positive")]
    Zero,
}

/// One compiled `[[ban]]` rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BanRule {
    /// Its name, in events, metrics and the ban list.
    pub name: String,
    on: Vec<Matcher>,
    /// How many refusals ban.
    pub count: u32,
    /// Within how long.
    pub within: Duration,
    /// How long the ban lasts.
    pub duration: Duration,
    /// The refusal budget; `None` when a single refusal bans.
    pub quota: Option<Gcra>,
    /// Client networks the rule never bans.
    pub exempt_ips: Vec<ipnet::IpNet>,
}

impl BanRule {
    /// A rule banning for `duration` after `count` refusals matching `on`
    /// within `within`.
    ///
    /// # Errors
    /// [`BanRuleError`] for an unknown `on` entry or zero values.
    pub fn new(
        name: impl Into<String>,
        on: &[impl AsRef<str>],
        count: u32,
        within: Duration,
        duration: Duration,
    ) -> Result<Self, BanRuleError> {
        if count == 0 || within.is_zero() || duration.is_zero() {
            return Err(BanRuleError::Zero);
        }
        let on =
            on.iter().map(|s| parse_matcher(s.as_ref())).collect::<Result<Vec<_>, _>>().map_err(BanRuleError::On)?;
        if on.is_empty() {
            return Err(BanRuleError::NothingCounted);
        }
        let quota =
            if count == 1 { None } else { Some(Gcra::new(count, within, count - 1).map_err(|_| BanRuleError::Zero)?) };
        Ok(Self { name: name.into(), on, count, within, duration, quota, exempt_ips: Vec::new() })
    }

    /// Whether `client` is exempt from this rule.
    #[must_use]
    pub fn exempts(&self, client: std::net::IpAddr) -> bool {
        let client = crate::forwarded::canonical(client);
        self.exempt_ips.iter().any(|n| n.contains(&client))
    }

    /// Whether a refusal for `reason` counts toward this rule.
    #[must_use]
    pub fn counts(&self, reason: Reason) -> bool {
        reason.attribution() == Attribution::Client
            && !matches!(reason.defence(), "ban" | "csrf")
            && self.on.iter().any(|m| m.matches(reason))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(on: &[&str], count: u32) -> BanRule {
        BanRule::new("r", on, count, Duration::from_secs(60), Duration::from_secs(900)).unwrap()
    }

    #[test]
    fn groups_codes_and_defences_select_the_right_refusals() {
        let cases: &[(&[&str], Reason, bool)] = &[
            (&["auth.failed"], Reason::JwtExpired, true),
            (&["auth.failed"], Reason::ApiKeyUnknown, true),
            (&["auth.failed"], Reason::AuthzRole, false),
            (&["forbidden"], Reason::AuthzRole, true),
            (&["forbidden"], Reason::IpDenied, true),
            (&["ratelimit"], Reason::RateLimitExceeded, true),
            (&["ratelimit"], Reason::ConnPerIp, true),
            (&["malformed"], Reason::PathEncoding, true),
            (&["jwt.*"], Reason::JwtBadSignature, true),
            (&["jwt.*"], Reason::ApiKeyUnknown, false),
            (&["jwt.bad_signature"], Reason::JwtBadSignature, true),
            (&["jwt.bad_signature"], Reason::JwtExpired, false),
            (&["route.none", "auth.failed"], Reason::RouteNone, true),
            (&["waf.blocked"], Reason::JwtExpired, false),
            // Failures the client did not cause never count.
            (&["ratelimit.*"], Reason::RateLimitUnavailable, false),
            (&["jwt.*"], Reason::JwtKeysUnavailable, false),
            // Being refused for a ban does not extend it.
            (&["forbidden"], Reason::BanActive, false),
            // Forged requests come from their victims.
            (&["forbidden"], Reason::CsrfOrigin, false),
            (&["csrf.*"], Reason::CsrfTokenInvalid, false),
            (&["waf.blocked"], Reason::WafSqli, true),
            (&["forbidden"], Reason::WafXss, true),
        ];
        for (on, reason, expected) in cases {
            assert_eq!(rule(on, 5).counts(*reason), *expected, "{on:?} / {reason}");
        }
    }

    #[test]
    fn unknown_entries_and_zero_values_are_refused() {
        let err = |on: &[&str], count| BanRule::new("r", on, count, Duration::from_secs(1), Duration::from_secs(1));
        assert!(matches!(err(&["jwt.nope"], 3), Err(BanRuleError::On(m)) if m.contains("jwt.nope")));
        assert!(matches!(err(&["nope.*"], 3), Err(BanRuleError::On(_))));
        assert_eq!(err(&[], 3), Err(BanRuleError::NothingCounted));
        assert_eq!(err(&["auth.failed"], 0), Err(BanRuleError::Zero));
    }

    #[test]
    fn the_count_th_refusal_in_a_burst_bans() {
        let r = rule(&["auth.failed"], 3);
        let quota = r.quota.unwrap();
        let now = 1_000_000_000_000;
        let mut tat = None;
        let mut banned_at = None;
        for i in 1..=3 {
            match quota.apply(tat, now) {
                crate::rate_limit::Outcome::Allowed { tat: t, .. } => tat = Some(t),
                crate::rate_limit::Outcome::Limited { .. } => {
                    banned_at = Some(i);
                    break;
                }
            }
        }
        assert_eq!(banned_at, Some(3));
        // Refusals spread out slower than `count` per `within` never ban.
        let mut tat = None;
        for i in 0..100u64 {
            let at = now + i * 21_000_000_000; // one every 21 s: fewer than 3 a minute
            match quota.apply(tat, at) {
                crate::rate_limit::Outcome::Allowed { tat: t, .. } => tat = Some(t),
                crate::rate_limit::Outcome::Limited { .. } => panic!("banned at refusal {i}"),
            }
        }
        assert_eq!(rule(&["auth.failed"], 1).quota, None, "one refusal bans at once");
    }
}
