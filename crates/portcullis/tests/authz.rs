//! Authorization through the running gateway: roles with inheritance and
//! permissions, scopes, owner rules, IP lists; 401 before 403; every refusal
//! an event naming the route that decided.

use crate::common;

use std::time::SystemTime;

use common::*;
use jsonwebtoken::Algorithm;
use portcullis_policy::jwt::forge::TestKey;
use serde_json::json;

const ISS: &str = "https://idp.test/";

fn config(up: std::net::SocketAddr, key: &TestKey, extra: &str) -> String {
    format!(
        r#"
[[listener]]
name = "test"
bind = "127.0.0.1:0"

[[upstream]]
name = "app"
targets = ["http://{up}"]

[roles]
viewer = {{ permissions = ["orders:read"] }}
editor = {{ permissions = ["orders:write"], inherits = ["viewer"] }}
admin = {{ permissions = ["*"] }}

[[route]]
name = "orders-read"
match = {{ path = "/orders/**", methods = ["GET"] }}
upstream = "app"
auth = "jwt"
require = {{ permissions = ["orders:read"] }}

[[route]]
name = "orders-write"
match = {{ path = "/orders/**", methods = ["POST", "DELETE"] }}
upstream = "app"
auth = "jwt"
require = {{ permissions = ["orders:write"], scopes = ["orders"] }}

[[route]]
name = "own-profile"
match = {{ path = "/users/{{id}}/**" }}
upstream = "app"
auth = "jwt"
require = {{ owner = "id" }}

[[route]]
name = "admin"
match = {{ path = "/admin/**" }}
upstream = "app"
auth = "jwt"
require = {{ roles = ["admin"] }}

[[route]]
name = "internal"
match = {{ path = "/internal/**" }}
upstream = "app"
auth = "jwt"
allow_ips = ["10.0.0.0/8"]

[[route]]
name = "health"
match = {{ path = "/health" }}
upstream = "app"
auth = "public"

[auth.jwt]
issuer = "{ISS}"
audience = "api"
keys = [{{ pem = """{pem}""" }}]

{extra}
"#,
        pem = key.public_pem.as_deref().unwrap()
    )
}

fn token(key: &TestKey, sub: &str, roles: &[&str], scope: &str) -> String {
    let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
    key.token(&json!({"iss": ISS, "aud": "api", "sub": sub, "exp": now + 300, "roles": roles, "scope": scope}))
}

async fn call(gw: &Gateway, method: &str, path: &str, token: Option<&str>) -> (u16, String) {
    let mut req = http::Request::builder().method(method).uri(gw.url(path));
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let (parts, body) = send(req.body(portcullis_layers::empty()).unwrap()).await;
    let reason = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_owned))
        .unwrap_or_default();
    (parts.status.as_u16(), reason)
}

#[tokio::test]
async fn roles_permissions_scopes_owners_and_ips_decide_with_401_before_403() {
    let key = TestKey::generate(Algorithm::EdDSA, "k");
    let (up, seen) = named_upstream("app").await;
    let gw = gateway(&config(up, &key, "")).await;
    let viewer = token(&key, "alice", &["viewer"], "");
    let editor = token(&key, "bob", &["editor"], "orders");
    let editor_no_scope = token(&key, "bob", &["editor"], "");
    let admin = token(&key, "root", &["admin"], "");

    let cases: &[(&str, &str, Option<&str>, u16, &str)] = &[
        ("GET", "/orders/1", None, 401, "auth.missing"),
        ("GET", "/orders/1", Some(&viewer), 200, ""),
        ("POST", "/orders/1", Some(&viewer), 403, "authz.permission"),
        ("POST", "/orders/1", Some(&editor), 200, ""),
        ("POST", "/orders/1", Some(&editor_no_scope), 403, "authz.scope"),
        ("GET", "/orders/1", Some(&editor), 200, ""),
        ("DELETE", "/ORDERS/1", Some(&viewer), 403, "authz.permission"),
        ("GET", "/users/alice/settings", Some(&viewer), 200, ""),
        ("GET", "/USERS/alice/settings", Some(&viewer), 200, ""),
        ("GET", "/users/ALICE/settings", Some(&viewer), 403, "authz.owner"),
        ("GET", "/users/bob/settings", Some(&viewer), 403, "authz.owner"),
        ("GET", "/users/alice/../bob/settings", Some(&viewer), 403, "authz.owner"),
        ("GET", "/admin/panel", Some(&viewer), 403, "authz.role"),
        ("GET", "/Admin/panel", Some(&editor), 403, "authz.role"),
        ("GET", "/admin/panel", Some(&admin), 200, ""),
        ("GET", "/admin/panel", None, 401, "auth.missing"),
        ("GET", "/internal/x", Some(&admin), 403, "ip.not_allowed"),
        ("GET", "/health", None, 200, ""),
    ];
    let mut failures = Vec::new();
    for (method, path, tok, status, reason) in cases {
        let before = seen.lock().unwrap().len();
        let got = call(&gw, method, path, *tok).await;
        if got != (*status, (*reason).to_owned()) {
            failures.push(format!("{method} {path}: {got:?}, expected ({status}, {reason:?})"));
        }
        let reached = seen.lock().unwrap().len() > before;
        if reached != (*status == 200) {
            failures.push(format!("{method} {path}: upstream reached = {reached}"));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
    let events = gw.events.0.lock().unwrap().clone();
    let owner = events.iter().find(|e| e.reason == "authz.owner").unwrap();
    assert_eq!((owner.rule.as_deref(), owner.status), (Some("own-profile"), 403));
    let permission = events.iter().find(|e| e.reason == "authz.permission").unwrap();
    assert_eq!(permission.rule.as_deref(), Some("orders-write"));
    assert!(permission.detail.as_deref().unwrap().contains("orders:write"));
}

#[tokio::test]
async fn global_ip_lists_refuse_before_anything_else() {
    let key = TestKey::generate(Algorithm::EdDSA, "k");
    let (up, seen) = named_upstream("app").await;
    let gw = gateway(&config(up, &key, "[access]\ndeny_ips = [\"127.0.0.0/8\"]\n")).await;
    assert_eq!(call(&gw, "GET", "/health", None).await, (403, "ip.denied".to_owned()));
    assert_eq!(gw.events.last().unwrap().rule.as_deref(), Some("[access]"));
    assert!(seen.lock().unwrap().is_empty());
}

#[test]
fn configuration_mistakes_are_refused() {
    let key = TestKey::generate(Algorithm::EdDSA, "k");
    let base = config("127.0.0.1:1".parse().unwrap(), &key, "");
    let cases = [
        (
            base.replace(
                "require = {{ owner = \"id\" }}".replace("{{", "{").replace("}}", "}").as_str(),
                "require = { owner = \"user\" }",
            ),
            "which the route's path does not have",
        ),
        (base.replace("inherits = [\"viewer\"]", "inherits = [\"ghost\"]"), "undefined role"),
        (
            base.replace("auth = \"public\"", "auth = \"public\"\nrequire = { roles = [\"admin\"] }"),
            "is public but has `require`",
        ),
        (base.replace("allow_ips = [\"10.0.0.0/8\"]", "allow_ips = [\"10.0.0.300\"]"), "invalid address"),
        (
            base.replace("require = { roles = [\"admin\"] }", "require = { permissions = [\"orders:*\"] }"),
            "has a wildcard",
        ),
    ];
    for (toml, message) in cases {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.toml");
        let err = portcullis::config::parse(&path, &toml, |_| None).unwrap_err();
        assert!(err.0.iter().any(|e| e.message.contains(message)), "{message}: {err}");
    }
}
