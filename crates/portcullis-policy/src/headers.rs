//! Security response headers: helmet-equivalent defaults, per-route changes,
//! and removal of headers that leak the backend's software.
//!
//! Defends browsers talking to the backend against clickjacking, MIME
//! sniffing, referrer leaks, cross-origin embedding and protocol downgrade
//! (HSTS), and hides `X-Powered-By: Express` and friends from fingerprinting.
//!
//! Decision rules:
//! - A header in `defaults` is added when the upstream did not send one: the
//!   backend's own choice wins (a page that must be framed says so itself).
//! - A header in `overrides` always replaces the upstream's.
//! - Headers in `remove` are dropped from every response (leak headers by
//!   default).
//! - `Strict-Transport-Security` is sent only on HTTPS responses (RFC 6797
//!   §7.2: a browser ignores it over HTTP, and sending it there is a mistake).
//!
//! Deployment caveat: the default CSP (helmet's) suits an API and a simple
//! site; an application with inline scripts must set its own policy.

use http::header::{HeaderMap, HeaderName, HeaderValue};

/// helmet's default Content-Security-Policy.
pub const DEFAULT_CSP: &str = "default-src 'self';base-uri 'self';font-src 'self' https: data:;form-action 'self';frame-ancestors 'self';img-src 'self' data:;object-src 'none';script-src 'self';script-src-attr 'none';style-src 'self' https: 'unsafe-inline';upgrade-insecure-requests";

/// A conservative Permissions-Policy: powerful features off.
pub const DEFAULT_PERMISSIONS_POLICY: &str =
    "accelerometer=(), camera=(), geolocation=(), gyroscope=(), magnetometer=(), microphone=(), payment=(), usb=()";

/// Response headers that reveal the backend's software.
pub const LEAK_HEADERS: [&str; 4] = ["server", "x-powered-by", "x-aspnet-version", "x-aspnetmvc-version"];

/// The default set, without CSP and HSTS (configured separately).
#[must_use]
pub fn default_headers() -> Vec<(HeaderName, HeaderValue)> {
    [
        ("cross-origin-opener-policy", "same-origin"),
        ("cross-origin-resource-policy", "same-origin"),
        ("origin-agent-cluster", "?1"),
        ("referrer-policy", "no-referrer"),
        ("x-content-type-options", "nosniff"),
        ("x-dns-prefetch-control", "off"),
        ("x-download-options", "noopen"),
        ("x-frame-options", "SAMEORIGIN"),
        ("x-permitted-cross-domain-policies", "none"),
        ("x-xss-protection", "0"),
        ("permissions-policy", DEFAULT_PERMISSIONS_POLICY),
    ]
    .into_iter()
    .map(|(n, v)| (HeaderName::from_static(n), HeaderValue::from_static(v)))
    .collect()
}

/// HSTS settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hsts {
    /// `max-age` in seconds.
    pub max_age: u64,
    /// `includeSubDomains`.
    pub include_subdomains: bool,
    /// `preload`.
    pub preload: bool,
}

impl Default for Hsts {
    /// Two years with subdomains: the value hstspreload.org asks for, minus
    /// `preload`, which is a commitment the operator must make explicitly.
    fn default() -> Self {
        Self { max_age: 63_072_000, include_subdomains: true, preload: false }
    }
}

impl Hsts {
    /// The header value.
    #[must_use]
    pub fn value(&self) -> HeaderValue {
        let mut v = format!("max-age={}", self.max_age);
        if self.include_subdomains {
            v.push_str("; includeSubDomains");
        }
        if self.preload {
            v.push_str("; preload");
        }
        HeaderValue::from_str(&v).unwrap_or_else(|_| HeaderValue::from_static("max-age=63072000"))
    }
}

/// What to do to a response's headers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderPolicy {
    /// Added when the upstream sent none.
    pub defaults: Vec<(HeaderName, HeaderValue)>,
    /// Always set.
    pub overrides: Vec<(HeaderName, HeaderValue)>,
    /// Always removed.
    pub remove: Vec<HeaderName>,
    /// `Strict-Transport-Security` for HTTPS responses, if on.
    pub hsts: Option<HeaderValue>,
}

impl HeaderPolicy {
    /// The helmet-equivalent policy: defaults, helmet's CSP, HSTS, leak removal.
    #[must_use]
    pub fn strict() -> Self {
        let mut defaults = default_headers();
        defaults.push((http::header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(DEFAULT_CSP)));
        Self {
            defaults,
            overrides: Vec::new(),
            remove: LEAK_HEADERS.iter().map(|n| HeaderName::from_static(n)).collect(),
            hsts: Some(Hsts::default().value()),
        }
    }

    /// Applies the policy to a response's headers.
    pub fn apply(&self, headers: &mut HeaderMap, https: bool) {
        // Room for every header added below at once, not one growth at a time.
        headers.reserve(self.defaults.len() + self.overrides.len() + 1);
        // Most answers carry none of them: one pass over the few headers an
        // answer has costs less than a hashed lookup per name.
        if headers.keys().any(|name| self.remove.contains(name)) {
            for name in &self.remove {
                headers.remove(name);
            }
        }
        for (name, value) in &self.defaults {
            // One lookup: the upstream's value, if any, stays.
            if let http::header::Entry::Vacant(entry) = headers.entry(name) {
                entry.insert(value.clone());
            }
        }
        for (name, value) in &self.overrides {
            headers.insert(name.clone(), value.clone());
        }
        match (&self.hsts, https) {
            (Some(value), true) => {
                headers.insert(http::header::STRICT_TRANSPORT_SECURITY, value.clone());
            }
            // Never over plain HTTP, and never the upstream's when HSTS is
            // managed here: one place decides.
            _ => {
                headers.remove(http::header::STRICT_TRANSPORT_SECURITY);
            }
        }
    }

    /// This policy with a route's changes on top: its defaults and overrides
    /// replace same-named entries, its removals drop them.
    #[must_use]
    pub fn with(&self, route: &Self) -> Self {
        let mut out = self.clone();
        for name in &route.remove {
            out.defaults.retain(|(n, _)| n != name);
            out.overrides.retain(|(n, _)| n != name);
            if !out.remove.contains(name) {
                out.remove.push(name.clone());
            }
        }
        for (name, value) in &route.defaults {
            out.defaults.retain(|(n, _)| n != name);
            out.remove.retain(|n| n != name);
            out.defaults.push((name.clone(), value.clone()));
        }
        for (name, value) in &route.overrides {
            out.overrides.retain(|(n, _)| n != name);
            out.remove.retain(|n| n != name);
            out.overrides.push((name.clone(), value.clone()));
        }
        out
    }
}

/// Summarises a CSP violation report (the legacy `application/csp-report`
/// shape or the Reporting API's `application/reports+json` list) as one
/// secret-free line: query strings and fragments are cut from URLs, every
/// value is truncated. `None` when the body is not a report.
#[must_use]
pub fn summarize_csp_report(body: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let reports: Vec<&serde_json::Value> = match &value {
        serde_json::Value::Object(map) => vec![map.get("csp-report")?],
        serde_json::Value::Array(list) => list
            .iter()
            .filter(|r| r.get("type").and_then(serde_json::Value::as_str) == Some("csp-violation"))
            .filter_map(|r| r.get("body"))
            .collect(),
        _ => return None,
    };
    let first = reports.first()?;
    let field = |names: &[&str]| -> String {
        let text = names.iter().find_map(|n| first.get(*n).and_then(serde_json::Value::as_str)).unwrap_or("-");
        let cut = text.split(['?', '#']).next().unwrap_or("-");
        cut.chars().filter(|c| !c.is_control()).take(200).collect()
    };
    Some(format!(
        "directive={} blocked={} document={} ({} report(s))",
        field(&["effective-directive", "effectiveDirective", "violated-directive"]),
        field(&["blocked-uri", "blockedURL"]),
        field(&["document-uri", "documentURL"]),
        reports.len()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn strict_defaults_fill_gaps_and_keep_the_upstreams_values() {
        let mut h = map(&[("x-frame-options", "DENY"), ("x-powered-by", "Express"), ("server", "nginx")]);
        HeaderPolicy::strict().apply(&mut h, true);
        assert_eq!(h["x-frame-options"], "DENY", "the upstream's own value wins");
        assert!(!h.contains_key("x-powered-by") && !h.contains_key("server"));
        assert_eq!(h["x-content-type-options"], "nosniff");
        assert_eq!(h["referrer-policy"], "no-referrer");
        assert_eq!(h["strict-transport-security"], "max-age=63072000; includeSubDomains");
        assert_eq!(h["content-security-policy"], DEFAULT_CSP);
        assert_eq!(h["x-xss-protection"], "0");
    }

    #[test]
    fn csp_reports_are_summarized_without_queries() {
        let legacy = br#"{"csp-report":{"document-uri":"https://shop.example/cart?session=secret","violated-directive":"script-src","effective-directive":"script-src-elem","blocked-uri":"https://evil.example/x.js?token=abc"}}"#;
        assert_eq!(
            summarize_csp_report(legacy).unwrap(),
            "directive=script-src-elem blocked=https://evil.example/x.js document=https://shop.example/cart (1 report(s))"
        );
        let modern = br#"[{"type":"csp-violation","body":{"documentURL":"https://a.example/","effectiveDirective":"img-src","blockedURL":"data"}}]"#;
        assert!(summarize_csp_report(modern).unwrap().starts_with("directive=img-src blocked=data"));
        assert!(summarize_csp_report(b"not json").is_none());
        assert!(summarize_csp_report(br#"{"other":1}"#).is_none());
    }

    #[test]
    fn hsts_only_over_https() {
        let mut h = map(&[("strict-transport-security", "max-age=1")]);
        HeaderPolicy::strict().apply(&mut h, false);
        assert!(!h.contains_key("strict-transport-security"));
    }

    #[test]
    fn route_changes_replace_remove_and_override() {
        let route = HeaderPolicy {
            defaults: vec![(HeaderName::from_static("x-frame-options"), HeaderValue::from_static("DENY"))],
            overrides: vec![(HeaderName::from_static("referrer-policy"), HeaderValue::from_static("same-origin"))],
            remove: vec![HeaderName::from_static("content-security-policy")],
            hsts: None,
        };
        let merged = HeaderPolicy::strict().with(&route);
        let mut h = map(&[("referrer-policy", "unsafe-url"), ("content-security-policy", "default-src *")]);
        merged.apply(&mut h, true);
        assert_eq!(h["x-frame-options"], "DENY");
        assert_eq!(h["referrer-policy"], "same-origin", "override beats the upstream");
        assert!(!h.contains_key("content-security-policy"), "removed for this route, even the upstream's");
    }
}
