//! How upstreams learn the caller, through the real gateway: plain headers,
//! a gateway-signed token verified with the gateway's own JWKS, or nothing;
//! and identity headers forged by clients never getting through. The caller
//! is an API key from a SQLite store (the cheapest principal to set up).

use crate::common;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use common::*;
use jsonwebtoken::Algorithm;
use portcullis::store::Store;
use portcullis_policy::jwt::{JwtError, JwtPolicy, KeySet, verify};

type Seen = Arc<Mutex<Vec<http::HeaderMap>>>;

/// Three upstreams, one per identity mode, each behind an API-key route and
/// a public route.
struct Upstreams {
    orders: (std::net::SocketAddr, Seen),
    plain: (std::net::SocketAddr, Seen),
    app: (std::net::SocketAddr, Seen),
}

async fn upstreams() -> Upstreams {
    Upstreams {
        orders: named_upstream("orders").await,
        plain: named_upstream("plain").await,
        app: named_upstream("app").await,
    }
}

fn identity_config(up: &Upstreams, data_dir: &Path) -> String {
    let (orders, plain, app) = (up.orders.0, up.plain.0, up.app.0);
    let data_dir = data_dir.display();
    format!(
        r#"
[server]
data_dir = "{data_dir}"

[[listener]]
name = "test"
bind = "127.0.0.1:0"

[[upstream]]
name = "orders"
targets = ["http://{orders}"]
identity = "jwt"

[[upstream]]
name = "plain"
targets = ["http://{plain}"]
identity = "none"

[[upstream]]
name = "app"
targets = ["http://{app}"]

[[route]]
match = {{ path = "/orders/**" }}
upstream = "orders"
auth = "api_key"

[[route]]
match = {{ path = "/plain/**" }}
upstream = "plain"
auth = "api_key"

[[route]]
match = {{ path = "/app/**" }}
upstream = "app"
auth = "api_key"

[[route]]
match = {{ path = "/public/orders/**" }}
upstream = "orders"
auth = "public"

[[route]]
match = {{ path = "/public/plain/**" }}
upstream = "plain"
auth = "public"

[[route]]
match = {{ path = "/**" }}
upstream = "app"
auth = "public"

[state]
store = "sqlite://keys.db"

[auth.api_key]
cache_ttl = "0s"
"#
    )
}

/// A key with roles `reader` and `export`, created in the data directory's store.
async fn create_key(data_dir: &Path) -> (String, String) {
    let store = Store::open(&format!("sqlite://{}", data_dir.join("keys.db").display())).await.unwrap();
    let roles = vec!["reader".to_owned(), "export".to_owned()];
    let (info, key) = store.create_api_key("identity test", &roles, None).await.unwrap();
    store.close().await;
    (info.id, key.expose().to_owned())
}

fn last(seen: &Seen) -> http::HeaderMap {
    seen.lock().unwrap().last().cloned().expect("the upstream saw no request")
}

fn identity_headers(headers: &http::HeaderMap) -> Vec<String> {
    headers.keys().map(|n| n.as_str().to_owned()).filter(|n| n.starts_with("x-portcullis-")).collect()
}

async fn jwks(gw: &Gateway) -> (serde_json::Value, KeySet) {
    let (parts, body) = get(&gw.url("/.portcullis/jwks.json")).await;
    assert_eq!(parts.status, 200, "{}", String::from_utf8_lossy(&body));
    let (keys, skipped) = KeySet::from_jwks(&body, &[Algorithm::EdDSA]).unwrap();
    assert!(skipped.is_empty() && keys.len() == 1, "{skipped:?}");
    (json(&body), keys)
}

fn policy_for(audience: &str) -> JwtPolicy {
    let mut policy = JwtPolicy::new("portcullis");
    policy.audiences = vec![audience.to_owned()];
    policy
}

/// What a client might send to pose as someone else.
const FORGED: [(&str, &str); 6] = [
    ("X-Portcullis-Subject", "admin"),
    ("X-Portcullis-Auth", "mtls"),
    ("X-Portcullis-Issuer", "portcullis"),
    ("X-Portcullis-Roles", "admin"),
    ("X-Portcullis-Scopes", "everything"),
    ("X-Portcullis-Identity", "eyJhbGciOiJub25lIn0.eyJzdWIiOiJhZG1pbiJ9."),
];

#[tokio::test]
async fn jwt_mode_sends_a_token_that_verifies_with_the_gateway_jwks_for_that_upstream_only() {
    let up = upstreams().await;
    let data = tempfile::tempdir().unwrap();
    let (id, key) = create_key(data.path()).await;
    let gw = gateway(&identity_config(&up, data.path())).await;

    let (parts, body) = get_with(&gw.url("/orders/1"), &[("authorization", &format!("Bearer {key}"))]).await;
    assert_eq!(parts.status, 200, "{}", String::from_utf8_lossy(&body));
    let received = last(&up.orders.1);
    assert_eq!(identity_headers(&received), ["x-portcullis-identity"], "{received:?}");
    assert!(received.get("authorization").is_none());
    let token = received["x-portcullis-identity"].to_str().unwrap().to_owned();

    // An upstream verifies it the documented way: the gateway's JWKS, its own
    // name as audience, issuer `portcullis`.
    let (document, keys) = jwks(&gw).await;
    let verified = verify(&token, &policy_for("orders"), &keys, SystemTime::now()).unwrap();
    assert_eq!(verified.principal.subject, format!("apikey:{id}"));
    assert_eq!(verified.principal.roles, ["reader", "export"]);
    assert_eq!(verified.claims["amr"], serde_json::json!(["api_key"]));
    assert_eq!(verified.claims["idp"], "portcullis");
    let lifetime = verified.claims["exp"].as_u64().unwrap() - verified.claims["iat"].as_u64().unwrap();
    assert_eq!(lifetime, 60, "the default identity ttl");
    let header: serde_json::Value = serde_json::from_slice(
        &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, token.split('.').next().unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(header["alg"], "EdDSA");
    assert_eq!(header["kid"], document["keys"][0]["kid"]);

    // A token for one upstream is no good at another (or at an upstream
    // expecting another issuer), and it expires.
    assert!(matches!(verify(&token, &policy_for("plain"), &keys, SystemTime::now()), Err(JwtError::WrongAudience)));
    let mut other_issuer = policy_for("orders");
    other_issuer.issuer = "https://login.example".into();
    assert!(matches!(verify(&token, &other_issuer, &keys, SystemTime::now()), Err(JwtError::WrongIssuer)));
    let later = SystemTime::now() + Duration::from_secs(120);
    assert!(matches!(verify(&token, &policy_for("orders"), &keys, later), Err(JwtError::Expired(_))));

    // Forged identity headers are replaced by the gateway's token, never
    // forwarded beside it.
    let mut headers = FORGED.to_vec();
    let bearer = format!("Bearer {key}");
    headers.push(("authorization", &bearer));
    let (parts, _) = get_with(&gw.url("/orders/2"), &headers).await;
    assert_eq!(parts.status, 200);
    let received = last(&up.orders.1);
    assert_eq!(identity_headers(&received), ["x-portcullis-identity"], "{received:?}");
    assert_eq!(received.get_all("x-portcullis-identity").iter().count(), 1);
    let token = received["x-portcullis-identity"].to_str().unwrap();
    assert_eq!(
        verify(token, &policy_for("orders"), &keys, SystemTime::now()).unwrap().principal.subject,
        format!("apikey:{id}")
    );
    assert!(gw.events.0.lock().unwrap().is_empty(), "{:?}", gw.events.reasons());
}

#[tokio::test]
async fn none_mode_sends_no_identity_and_forged_headers_never_reach_any_upstream() {
    let up = upstreams().await;
    let data = tempfile::tempdir().unwrap();
    let (id, key) = create_key(data.path()).await;
    let gw = gateway(&identity_config(&up, data.path())).await;
    let bearer = format!("Bearer {key}");
    let with_key: Vec<(&str, &str)> = FORGED.iter().copied().chain([("authorization", bearer.as_str())]).collect();

    // identity = "none": authenticated, yet the upstream hears nothing.
    let (parts, _) = get_with(&gw.url("/plain/1"), &with_key).await;
    assert_eq!(parts.status, 200);
    let received = last(&up.plain.1);
    assert!(identity_headers(&received).is_empty(), "{received:?}");
    assert!(received.get("authorization").is_none());

    // identity = "headers" (the default): the gateway's values, not the client's.
    let (parts, _) = get_with(&gw.url("/app/1"), &with_key).await;
    assert_eq!(parts.status, 200);
    let received = last(&up.app.1);
    let subject = format!("apikey:{id}");
    let expected = [
        ("x-portcullis-subject", subject.as_str()),
        ("x-portcullis-auth", "api_key"),
        ("x-portcullis-issuer", "portcullis"),
        ("x-portcullis-roles", "reader,export"),
    ];
    for (name, value) in expected {
        let values: Vec<_> = received.get_all(name).iter().map(|v| v.to_str().unwrap()).collect();
        assert_eq!(values, [value], "{name}");
    }
    assert_eq!(identity_headers(&received).len(), expected.len(), "no scopes, no token: {received:?}");

    // Public routes, whatever the upstream's mode: no caller, and nothing forged.
    for (path, seen) in [("/public/orders/1", &up.orders.1), ("/public/plain/1", &up.plain.1), ("/home", &up.app.1)] {
        let (parts, _) = get_with(&gw.url(path), &FORGED).await;
        assert_eq!(parts.status, 200, "{path}");
        let received = last(seen);
        assert!(identity_headers(&received).is_empty(), "{path}: {received:?}");
    }
    // A request that is refused reaches no upstream, forged headers or not.
    let counts = |up: &Upstreams| [&up.orders.1, &up.plain.1, &up.app.1].map(|s| s.lock().unwrap().len());
    let before = counts(&up);
    let (parts, body) = get_with(&gw.url("/app/1"), &FORGED).await;
    assert_denied(&parts, &body, 401, "auth.missing");
    assert_eq!(counts(&up), before);
}

#[tokio::test]
async fn the_signing_key_is_private_and_survives_restarts() {
    let up = upstreams().await;
    let data = tempfile::tempdir().unwrap();
    let (_, key) = create_key(data.path()).await;
    let toml = identity_config(&up, data.path());
    let bearer = format!("Bearer {key}");

    let gw = gateway(&toml).await;
    let (first_jwks, _) = jwks(&gw).await;
    let (parts, _) = get_with(&gw.url("/orders/1"), &[("authorization", &bearer)]).await;
    assert_eq!(parts.status, 200);
    let token = last(&up.orders.1)["x-portcullis-identity"].to_str().unwrap().to_owned();
    let path = data.path().join("identity.key");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    let bytes = std::fs::read(&path).unwrap();
    assert!(gw.server.shutdown().await);

    // Restarted on the same data directory: same key, same kid, so upstreams'
    // cached JWKS and tokens in flight stay valid.
    let gw = gateway(&toml).await;
    let (second_jwks, keys) = jwks(&gw).await;
    assert_eq!(second_jwks, first_jwks);
    assert_eq!(std::fs::read(&path).unwrap(), bytes, "the key file was not rewritten");
    assert!(verify(&token, &policy_for("orders"), &keys, SystemTime::now()).is_ok());

    // A new data directory is a new key.
    let other = tempfile::tempdir().unwrap();
    let gw2 = gateway(&identity_config(&up, other.path())).await;
    let (third_jwks, _) = jwks(&gw2).await;
    assert_ne!(third_jwks["keys"][0]["kid"], first_jwks["keys"][0]["kid"]);
}

/// The JWKS's key ids, in order, and its keys.
async fn published(gw: &Gateway) -> (Vec<String>, KeySet) {
    let (parts, body) = get(&gw.url("/.portcullis/jwks.json")).await;
    assert_eq!(parts.status, 200, "{}", String::from_utf8_lossy(&body));
    let kids = json(&body)["keys"].as_array().unwrap().iter().map(|k| k["kid"].as_str().unwrap().to_owned()).collect();
    (kids, KeySet::from_jwks(&body, &[Algorithm::EdDSA]).unwrap().0)
}

#[tokio::test]
async fn an_old_signing_key_is_rotated_and_published_until_its_tokens_expire() {
    let up = upstreams().await;
    let data = tempfile::tempdir().unwrap();
    let (_, key) = create_key(data.path()).await;
    let toml = identity_config(&up, data.path());
    let bearer = format!("Bearer {key}");
    let token_for = |seen: &Seen| last(seen)["x-portcullis-identity"].to_str().unwrap().to_owned();

    let gw = gateway(&toml).await;
    let (old_kids, _) = published(&gw).await;
    let (parts, _) = get_with(&gw.url("/orders/1"), &[("authorization", &bearer)]).await;
    assert_eq!(parts.status, 200);
    let old_token = token_for(&up.orders.1);
    assert!(gw.server.shutdown().await);

    // The key file turns 91 days old (`rotate_after` is 90 days by default):
    // the next start replaces it and keeps the old public key published.
    let path = data.path().join("identity.key");
    let aged = SystemTime::now() - Duration::from_secs(91 * 86_400);
    std::fs::File::options().write(true).open(&path).unwrap().set_modified(aged).unwrap();
    let old_der = std::fs::read(&path).unwrap();
    let gw = gateway(&toml).await;
    let (kids, keys) = published(&gw).await;
    assert_eq!(kids.len(), 2, "{kids:?}");
    assert_ne!(kids[0], old_kids[0], "a new current key");
    assert_eq!(kids[1], old_kids[0], "the retired key after it");
    assert_ne!(std::fs::read(&path).unwrap(), old_der);
    assert!(verify(&old_token, &policy_for("orders"), &keys, SystemTime::now()).is_ok(), "a token in flight");
    let (parts, _) = get_with(&gw.url("/orders/1"), &[("authorization", &bearer)]).await;
    assert_eq!(parts.status, 200);
    let new_token = token_for(&up.orders.1);
    assert_eq!(jsonwebtoken::decode_header(&new_token).unwrap().kid.as_deref(), Some(kids[0].as_str()));
    assert!(verify(&new_token, &policy_for("orders"), &keys, SystemTime::now()).is_ok());

    let retired_path = data.path().join("identity.retired.json");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&retired_path).unwrap().permissions().mode() & 0o777, 0o600);
    let retired = json(&std::fs::read(&retired_path).unwrap().into());
    assert_eq!(retired[0]["kid"], old_kids[0].as_str());
    let until = retired[0]["publish_until"].as_u64().unwrap();
    let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
    assert!((now + 60..=now + 60 + 60).contains(&until), "ttl 60 s + 60 s margin from the rotation: {until} vs {now}");
    assert!(gw.server.shutdown().await);

    // Restarted within `rotate_after`: the key stays. Past its time, the
    // retired key is no longer published, and no longer recorded.
    let mut record = retired.clone();
    record[0]["publish_until"] = serde_json::json!(now - 1);
    std::fs::write(&retired_path, serde_json::to_vec(&record).unwrap()).unwrap();
    let gw = gateway(&toml).await;
    let (after, keys) = published(&gw).await;
    assert_eq!(after, [kids[0].clone()]);
    assert!(verify(&old_token, &policy_for("orders"), &keys, SystemTime::now()).is_err());
    assert_eq!(json(&std::fs::read(&retired_path).unwrap().into()), serde_json::json!([]));

    // A damaged record is a start error naming the file, not a silent reset.
    assert!(gw.server.shutdown().await);
    std::fs::write(&retired_path, b"{not json").unwrap();
    let (config, _dir) = config(&toml);
    let error = match portcullis::server::Server::start(config, Arc::new(Events::default())).await {
        Ok(_) => panic!("started with a damaged identity.retired.json"),
        Err(e) => e.to_string(),
    };
    assert!(error.contains("identity.retired.json") && error.contains("not a list of retired keys"), "{error}");
}
