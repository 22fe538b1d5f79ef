//! The security event in Elastic Common Schema field names (`[events]
//! schema = "ecs"`), so events drop into SIEM pipelines built for ECS.
//!
//! Decision rules (the table is in docs/events.md, "Elastic Common Schema"):
//! - Standard ECS fields where one means the same thing (`source.ip`,
//!   `url.path`, `http.request.method`, …); every other field of the
//!   Portcullis event goes under `portcullis.*`, so nothing is lost.
//! - `event.kind` is `alert` for a refusal, a ban or a detection (`deny`,
//!   `ban`, `log`) and `event` for a record of something allowed;
//!   `event.outcome` is `failure` for the request when it was refused,
//!   `success` when allowed, `unknown` for a detection-only note.
//! - A field with no value (no route, no rule) is left out, as in the
//!   Portcullis form.

use portcullis_policy::{Action, SecurityEvent};
use serde_json::{Map, Value, json};

/// The ECS version the mapping follows.
pub const ECS_VERSION: &str = "8.11.0";

/// `event.category` by defence: what an ECS rule filters on.
fn category(defence: &str) -> &'static [&'static str] {
    match defence {
        "waf" => &["intrusion_detection", "web"],
        "jwt" | "oidc" | "apikey" | "auth" | "mtls" | "login" | "account" | "session" => &["authentication", "web"],
        "ip" | "ban" | "conn" | "tls" => &["network", "web"],
        _ => &["web"],
    }
}

/// The event as one ECS JSON line (without the newline).
#[must_use]
pub fn to_json_line(event: &SecurityEvent) -> String {
    let (kind, kind_type, outcome, action) = match event.action {
        Action::Deny => ("alert", "denied", "failure", "deny"),
        Action::Ban => ("alert", "denied", "failure", "ban"),
        Action::Log => ("alert", "info", "unknown", "log"),
        Action::Allow => ("event", "allowed", "success", "allow"),
    };
    let mut event_obj = json!({
        "kind": kind,
        "category": category(event.defence),
        "type": [kind_type],
        "action": event.reason,
        "outcome": outcome,
        "module": "portcullis",
        "dataset": "portcullis.security",
    });
    if let (Some(detail), Some(obj)) = (&event.detail, event_obj.as_object_mut()) {
        obj.insert("reason".into(), Value::String(detail.clone()));
    }
    let mut http = json!({ "request": { "method": event.method, "id": event.request_id } });
    if event.status != 0
        && let Some(obj) = http.as_object_mut()
    {
        obj.insert("response".into(), json!({ "status_code": event.status }));
    }
    let mut portcullis = Map::new();
    portcullis.insert("v".into(), json!(event.v));
    portcullis.insert("listener".into(), json!(event.listener));
    portcullis.insert("defence".into(), json!(event.defence));
    portcullis.insert("reason".into(), json!(event.reason));
    portcullis.insert("action".into(), json!(action));
    portcullis.insert("attribution".into(), json!(event.attribution.as_str()));
    if let Some(route) = &event.route {
        portcullis.insert("route".into(), json!(route));
    }
    if let Some(waf) = &event.waf {
        portcullis.insert("waf".into(), serde_json::to_value(waf).unwrap_or(Value::Null));
    }
    let mut out = Map::new();
    out.insert("@timestamp".into(), json!(humantime::format_rfc3339_millis(event.time).to_string()));
    out.insert("ecs".into(), json!({ "version": ECS_VERSION }));
    out.insert("event".into(), event_obj);
    out.insert("source".into(), json!({ "ip": event.client_ip }));
    out.insert("http".into(), http);
    out.insert("url".into(), json!({ "path": event.path }));
    if let Some(rule) = &event.rule {
        out.insert("rule".into(), json!({ "name": rule }));
    }
    out.insert("portcullis".into(), Value::Object(portcullis));
    Value::Object(out).to_string()
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use portcullis_policy::event::RequestSummary;
    use portcullis_policy::{Denied, Reason};

    use super::*;

    #[test]
    fn a_denial_in_ecs() {
        let summary = RequestSummary {
            request_id: "r-1",
            client_ip: "203.0.113.9".parse().unwrap(),
            listener: "public",
            method: "POST",
            path: "/api/x",
            route: Some("api"),
        };
        let denied = Denied::new(Reason::LimitUri).with_detail("uri 9000 bytes > 8192").with_rule("api");
        let time = SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        let event = SecurityEvent::denied(&summary, &denied, time);
        let value: Value = serde_json::from_str(&to_json_line(&event)).unwrap();
        assert_eq!(
            value,
            json!({
                "@timestamp": "2023-11-14T22:13:20.123Z",
                "ecs": {"version": ECS_VERSION},
                "event": {
                    "kind": "alert",
                    "category": ["web"],
                    "type": ["denied"],
                    "action": "limit.uri",
                    "outcome": "failure",
                    "reason": "uri 9000 bytes > 8192",
                    "module": "portcullis",
                    "dataset": "portcullis.security",
                },
                "source": {"ip": "203.0.113.9"},
                "http": {"request": {"method": "POST", "id": "r-1"}, "response": {"status_code": 414}},
                "url": {"path": "/api/x"},
                "rule": {"name": "api"},
                "portcullis": {
                    "v": 1,
                    "listener": "public",
                    "route": "api",
                    "defence": "limit",
                    "reason": "limit.uri",
                    "action": "deny",
                    "attribution": "client",
                },
            })
        );
    }

    #[test]
    fn an_allowed_command_event_in_ecs() {
        let time = SystemTime::UNIX_EPOCH;
        let event = SecurityEvent::command("r-2", "user add", "account", "account.registered", "alice".into(), time);
        let value: Value = serde_json::from_str(&to_json_line(&event)).unwrap();
        assert_eq!(value["event"]["kind"], "event");
        assert_eq!(value["event"]["outcome"], "success");
        assert_eq!(value["event"]["type"], json!(["allowed"]));
        assert_eq!(value["event"]["category"], json!(["authentication", "web"]));
        // A command answers no status.
        assert!(value["http"].get("response").is_none());
        assert!(value.get("rule").is_none());
    }
}
