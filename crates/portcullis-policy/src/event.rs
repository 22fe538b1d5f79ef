//! The security event: one JSON line per decision, the same shape for every
//! defence (documented in `docs/events.md`).
//!
//! Events are evidence. They carry the request id to join them with access
//! logs and the client's answer, the client address as resolved through
//! trusted proxies, and the defence, reason and attribution of the decision.
//! They never carry secrets: no query strings, no header values, no bodies;
//! a defence that needs to refer to a token records a fingerprint.

use std::net::IpAddr;
use std::time::SystemTime;

use serde::{Serialize, Serializer};

use crate::deny::{Attribution, Denied};

/// What the gateway did about the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Refused with an error answer.
    Deny,
    /// Noticed but let through (detection-only modes).
    Log,
    /// Let through after a decision worth recording.
    Allow,
    /// The client was banned (`ban.issued`).
    Ban,
}

/// The version of the event schema; bumped only for incompatible changes.
pub const SCHEMA_VERSION: u32 = 1;

/// One security event.
#[derive(Debug, Clone, Serialize)]
pub struct SecurityEvent {
    /// Schema version ([`SCHEMA_VERSION`]).
    pub v: u32,
    /// When the decision was made (RFC 3339, UTC, milliseconds).
    #[serde(serialize_with = "rfc3339")]
    pub time: SystemTime,
    /// The request id, as returned to the client in `X-Request-Id`.
    pub request_id: String,
    /// The client address after trusted-proxy resolution.
    pub client_ip: IpAddr,
    /// The listener that accepted the connection.
    pub listener: String,
    /// The request method.
    pub method: String,
    /// The request path, without the query string (which may carry secrets).
    pub path: String,
    /// The route that matched, if routing happened.
    pub route: Option<String>,
    /// The defence that decided (`route`, `limit`, `upstream`, `jwt`, …).
    pub defence: &'static str,
    /// The stable reason code.
    pub reason: &'static str,
    /// What was done.
    pub action: Action,
    /// Who caused it.
    pub attribution: Attribution,
    /// The status answered.
    pub status: u16,
    /// The configured rule that decided, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// What the WAF matched (WAF decisions only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waf: Option<crate::waf::WafReport>,
    /// Secret-free internal detail.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// Where a request came from and what it asked for: the part of an event
/// that does not depend on the decision.
#[derive(Debug, Clone)]
pub struct RequestSummary<'a> {
    /// The request id.
    pub request_id: &'a str,
    /// The resolved client address.
    pub client_ip: IpAddr,
    /// The listener name.
    pub listener: &'a str,
    /// The method.
    pub method: &'a str,
    /// The path without query.
    pub path: &'a str,
    /// The matched route's name.
    pub route: Option<&'a str>,
}

impl SecurityEvent {
    /// The event for a denial.
    #[must_use]
    pub fn denied(request: &RequestSummary<'_>, denied: &Denied, time: SystemTime) -> Self {
        Self {
            defence: denied.reason.defence(),
            reason: denied.reason.code(),
            action: Action::Deny,
            attribution: denied.reason.attribution(),
            status: denied.status().as_u16(),
            rule: denied.rule.clone(),
            waf: denied.waf.as_deref().cloned(),
            detail: denied.detail.as_deref().map(str::to_owned),
            ..Self::about(request, time)
        }
    }

    /// The request-related fields; the decision fields are filled by the callers.
    fn about(request: &RequestSummary<'_>, time: SystemTime) -> Self {
        Self {
            v: SCHEMA_VERSION,
            time,
            request_id: request.request_id.to_owned(),
            client_ip: request.client_ip,
            listener: request.listener.to_owned(),
            method: request.method.to_owned(),
            path: request.path.to_owned(),
            route: request.route.map(str::to_owned),
            defence: "",
            reason: "",
            action: Action::Log,
            attribution: Attribution::Client,
            status: 0,
            rule: None,
            waf: None,
            detail: None,
        }
    }

    /// An event recording something noticed and let through (a browser's CSP
    /// violation report, a detection-only match).
    #[must_use]
    pub fn logged(
        request: &RequestSummary<'_>,
        defence: &'static str,
        reason: &'static str,
        status: u16,
        detail: String,
        time: SystemTime,
    ) -> Self {
        Self {
            defence,
            reason,
            action: Action::Log,
            attribution: Attribution::Client,
            status,
            rule: None,
            detail: Some(detail),
            ..Self::about(request, time)
        }
    }

    /// An event recording an administrator's command (`portcullis user …`):
    /// no request, so `listener` is `"cli"`, `method` `"CLI"`, `path` the
    /// command (`"user disable"`), `client_ip` the loopback address, the
    /// request id a fresh one and `status` 0.
    #[must_use]
    pub fn command(
        request_id: &str,
        command: &str,
        defence: &'static str,
        reason: &'static str,
        detail: String,
        time: SystemTime,
    ) -> Self {
        let request = RequestSummary {
            request_id,
            client_ip: IpAddr::from([127, 0, 0, 1]),
            listener: "cli",
            method: "CLI",
            path: command,
            route: None,
        };
        Self { action: Action::Allow, status: 0, detail: Some(detail), defence, reason, ..Self::about(&request, time) }
    }

    /// The event as one JSON line (without the newline).
    #[must_use]
    pub fn to_json_line(&self) -> String {
        // Serializing plain strings, numbers and enums cannot fail.
        serde_json::to_string(self).unwrap_or_else(|_| String::from("{}"))
    }
}

fn rfc3339<S: Serializer>(time: &SystemTime, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(&humantime::format_rfc3339_millis(*time))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::deny::Reason;

    #[test]
    fn denial_event_has_the_documented_shape() {
        let summary = RequestSummary {
            request_id: "r-1",
            client_ip: "203.0.113.9".parse().unwrap(),
            listener: "public",
            method: "GET",
            path: "/api/x",
            route: Some("api"),
        };
        let denied = Denied::new(Reason::LimitUri).with_detail("uri 9000 bytes > 8192");
        let time = SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        let event = SecurityEvent::denied(&summary, &denied, time);
        let value: serde_json::Value = serde_json::from_str(&event.to_json_line()).unwrap();
        assert_eq!(
            value,
            serde_json::json!({
                "v": 1,
                "time": "2023-11-14T22:13:20.123Z",
                "request_id": "r-1",
                "client_ip": "203.0.113.9",
                "listener": "public",
                "method": "GET",
                "path": "/api/x",
                "route": "api",
                "defence": "limit",
                "reason": "limit.uri",
                "action": "deny",
                "attribution": "client",
                "status": 414,
                "detail": "uri 9000 bytes > 8192",
            })
        );
    }
}
