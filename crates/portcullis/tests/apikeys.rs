//! API keys end to end: create, use, expire, revoke and list, through the
//! store API, the verifier the gateway uses and the real `portcullis apikey`
//! command, each against a SQLite file and a real PostgreSQL server; then
//! the same keys through the real gateway in front of a recording upstream.

use crate::common;

use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use portcullis::store::{ApiKeyError, ApiKeyVerifier, Clock, Revoked, Store};
use portcullis_layers::verify::VerifyApiKey;
use portcullis_policy::principal::fingerprint;
use portcullis_policy::{AuthMethod, Denied, Reason};

/// Runs each scenario against a fresh SQLite file and a fresh PostgreSQL
/// database (one throwaway server per test).
macro_rules! against_both_stores {
    ($($scenario:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $scenario() {
                    let dir = tempfile::tempdir().unwrap();
                    super::$scenario(&format!("sqlite://{}", dir.path().join("keys.db").display())).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $scenario() {
                    let server = crate::common::postgres::Postgres::start().await;
                    super::$scenario(&server.url).await;
                }
            )*
        }
    };
}

against_both_stores!(
    created_keys_verify_into_principals_and_list_without_secrets,
    malformed_unknown_and_mismatched_keys_are_refused_distinctly,
    keys_expire_even_when_cached,
    revocation_takes_effect_within_cache_ttl,
    a_failing_store_is_unavailable_not_a_pass,
    the_cli_creates_lists_and_revokes,
    the_gateway_accepts_keys_and_keeps_them_from_the_upstream,
    the_gateway_refuses_each_bad_key_with_one_event,
    public_routes_neither_verify_nor_forward_keys,
);

/// A clock the test moves.
#[derive(Debug)]
struct FakeClock(Mutex<SystemTime>);

impl FakeClock {
    fn new() -> Arc<Self> {
        Arc::new(Self(Mutex::new(SystemTime::now())))
    }
    fn advance(&self, by: Duration) {
        *self.0.lock().unwrap() += by;
    }
}

impl Clock for FakeClock {
    fn now(&self) -> SystemTime {
        *self.0.lock().unwrap()
    }
}

fn roles(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| (*s).to_owned()).collect()
}

async fn refused(verifier: &ApiKeyVerifier, key: &str) -> Denied {
    let denied = verifier.verify(key).await.expect_err("the key should be refused");
    let detail = denied.detail.as_deref().unwrap_or_default();
    assert!(!detail.contains(key) || key.len() < 8, "the detail repeats the key: {detail}");
    denied
}

async fn created_keys_verify_into_principals_and_list_without_secrets(url: &str) {
    let store = Store::open(url).await.unwrap();
    let expires = SystemTime::now() + Duration::from_secs(3600);
    let (info, key) =
        store.create_api_key("ci deploy", &roles(&["ops", "billing:read", "ops"]), Some(expires)).await.unwrap();
    let key = key.expose().to_owned();
    assert!(key.starts_with(&format!("pcl_{}_", info.id)), "{key}");
    assert_eq!(key.len(), 4 + 16 + 1 + 43);
    assert_eq!(info.roles, ["ops", "billing:read"]);
    let (_, other) = store.create_api_key("reporting", &[], None).await.unwrap();
    assert_ne!(key, other.expose());

    let verifier = ApiKeyVerifier::new(store.clone(), Duration::from_secs(10));
    assert!(verifier.recognises(&key));
    assert!(!verifier.recognises("eyJhbGciOiJSUzI1NiJ9.e30.sig"));
    let principal = verifier.verify(&key).await.unwrap();
    assert_eq!(principal.subject, format!("apikey:{}", info.id));
    assert_eq!(principal.method, AuthMethod::ApiKey);
    assert_eq!(principal.issuer.as_deref(), Some("portcullis"));
    assert_eq!(principal.roles, ["ops", "billing:read"]);
    assert_eq!(principal.expires_at, info.expires_at);
    assert_eq!(principal.credential, fingerprint(key.as_bytes()));
    // A cached answer is the same principal.
    assert_eq!(verifier.verify(&key).await.unwrap(), principal);
    assert!(!format!("{verifier:?}").contains(&key));

    // A second handle (another gateway, a restart) migrates nothing twice and sees the keys.
    let reopened = Store::open(url).await.unwrap();
    let listed = reopened.list_api_keys().await.unwrap();
    assert_eq!(listed.len(), 2);
    let first = listed.iter().find(|k| k.id == info.id).unwrap();
    assert_eq!(
        (first.name.as_str(), first.roles.clone(), first.expires_at),
        ("ci deploy", info.roles.clone(), info.expires_at)
    );
    assert!(first.last_used_at.is_some(), "verification records the last use");
    // pcl_<id>_<secret>: the id has no `_`, the base64url secret may.
    let secret = key["pcl_".len()..].split_once('_').unwrap().1;
    let shown = format!("{listed:?}");
    assert!(!shown.contains(secret) && !shown.contains(&key), "{shown}");
}

async fn malformed_unknown_and_mismatched_keys_are_refused_distinctly(url: &str) {
    let store = Store::open(url).await.unwrap();
    let (info, key) = store.create_api_key("svc", &roles(&["reader"]), None).await.unwrap();
    let verifier = ApiKeyVerifier::new(store, Duration::from_secs(10));

    for malformed in ["pcl_", "pcl_nothex_AAAA", &format!("{}x", key.expose()), &key.expose()[..40]] {
        let denied = refused(&verifier, malformed).await;
        assert_eq!(denied.reason, Reason::ApiKeyMalformed, "{malformed}");
        assert_eq!(denied.status(), 401);
    }
    let unknown = format!("pcl_0123456789abcdef_{}", "A".repeat(43));
    let denied = refused(&verifier, &unknown).await;
    assert_eq!(denied.reason, Reason::ApiKeyUnknown);
    assert!(denied.detail.as_deref().unwrap().contains("no key with id 0123456789abcdef"));

    // The right id with another secret: a guess against a known id.
    let guessed = format!("pcl_{}_{}", info.id, "B".repeat(43));
    let denied = refused(&verifier, &guessed).await;
    assert_eq!(denied.reason, Reason::ApiKeyUnknown);
    assert!(denied.detail.as_deref().unwrap().contains("does not match"), "{denied:?}");
    assert!(verifier.verify(key.expose()).await.is_ok());
}

async fn keys_expire_even_when_cached(url: &str) {
    let store = Store::open(url).await.unwrap();
    let past = SystemTime::now() - Duration::from_secs(1);
    assert!(matches!(store.create_api_key("late", &[], Some(past)).await, Err(ApiKeyError::InvalidExpiry)));

    let (_, key) =
        store.create_api_key("short", &[], Some(SystemTime::now() + Duration::from_secs(3600))).await.unwrap();
    let clock = FakeClock::new();
    // A cache longer than the key's life must not extend it.
    let verifier = ApiKeyVerifier::with_clock(store, Duration::from_secs(600), clock.clone());
    assert!(verifier.verify(key.expose()).await.is_ok());
    // Expiry is stored in whole seconds, rounded down: the margins absorb that.
    clock.advance(Duration::from_secs(3590));
    assert!(verifier.verify(key.expose()).await.is_ok());
    clock.advance(Duration::from_secs(11));
    let denied = refused(&verifier, key.expose()).await;
    assert_eq!(denied.reason, Reason::ApiKeyExpired);
}

async fn revocation_takes_effect_within_cache_ttl(url: &str) {
    let store = Store::open(url).await.unwrap();
    let (info, key) = store.create_api_key("rotating", &roles(&["writer"]), None).await.unwrap();
    let (other_info, other) = store.create_api_key("uncached", &[], None).await.unwrap();
    let clock = FakeClock::new();
    let ttl = Duration::from_secs(10);
    let cached = ApiKeyVerifier::with_clock(store.clone(), ttl, clock.clone());
    let uncached = ApiKeyVerifier::with_clock(store.clone(), Duration::ZERO, clock.clone());
    assert!(cached.verify(key.expose()).await.is_ok());
    assert!(uncached.verify(other.expose()).await.is_ok());

    assert_eq!(store.revoke_api_key(&info.id).await.unwrap(), Revoked::Now);
    assert_eq!(store.revoke_api_key(&other_info.id).await.unwrap(), Revoked::Now);
    // The documented latency: the cached answer stands until cache_ttl has passed …
    clock.advance(ttl - Duration::from_secs(1));
    assert!(cached.verify(key.expose()).await.is_ok(), "still cached");
    // … and no longer.
    clock.advance(Duration::from_secs(1));
    assert_eq!(refused(&cached, key.expose()).await.reason, Reason::ApiKeyRevoked);
    // Without a cache, revocation is immediate.
    assert_eq!(refused(&uncached, other.expose()).await.reason, Reason::ApiKeyRevoked);
    // A fresh verifier (another instance, a restart) never saw it.
    let fresh = ApiKeyVerifier::new(store.clone(), ttl);
    assert_eq!(refused(&fresh, key.expose()).await.reason, Reason::ApiKeyRevoked);

    // Revoking is idempotent; an unknown id is an error.
    assert!(matches!(store.revoke_api_key(&info.id).await.unwrap(), Revoked::Already(_)));
    assert!(matches!(store.revoke_api_key("0123456789abcdef").await, Err(ApiKeyError::Unknown(_))));
    let listed = store.list_api_keys().await.unwrap();
    assert!(listed.iter().all(|k| k.revoked_at.is_some()));
}

async fn a_failing_store_is_unavailable_not_a_pass(url: &str) {
    let store = Store::open(url).await.unwrap();
    let (_, key) = store.create_api_key("svc", &[], None).await.unwrap();
    let verifier = ApiKeyVerifier::new(store.clone(), Duration::ZERO);
    store.close().await;
    let denied = refused(&verifier, key.expose()).await;
    assert_eq!(denied.reason, Reason::ApiKeyStoreUnavailable);
    assert_eq!(denied.status(), 503);
}

fn apikey(config: &std::path::Path, args: &[&str]) -> Output {
    let (command, rest) = args.split_first().unwrap();
    Command::new(common::binary()).args(["apikey", command, "--config"]).arg(config).args(rest).output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

async fn the_cli_creates_lists_and_revokes(url: &str) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("portcullis.toml");
    let toml = common::simple_config(
        "127.0.0.1:9".parse().unwrap(),
        &format!("[state]\nstore = \"{url}\"\n\n[auth.api_key]\ncache_ttl = \"5s\"\n"),
    );
    std::fs::write(&config, toml).unwrap();

    let out = apikey(
        &config,
        &["create", "--name", "nightly export", "--role", "reader", "--role", "export", "--expires", "90d"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let key = stdout.trim();
    assert_eq!(stdout.lines().count(), 1, "stdout is the key alone: {stdout}");
    assert!(key.starts_with("pcl_"), "{key}");
    assert!(text(&out.stderr).contains("will not be shown again"), "{}", text(&out.stderr));
    let id = key["pcl_".len()..].split_once('_').unwrap().0.to_owned();
    // pcl_<id>_<secret>: the id has no `_`, the base64url secret may.
    let secret = key["pcl_".len()..].split_once('_').unwrap().1;

    let out = apikey(&config, &["list"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    assert!(table.starts_with("ID"), "{table}");
    let row = table.lines().find(|l| l.contains(&id)).unwrap_or_else(|| panic!("{table}"));
    assert!(row.contains("nightly export") && row.contains("reader,export"), "{row}");
    assert!(!table.contains(secret), "{table}");

    // The key the CLI printed works in the gateway's verifier.
    let store = Store::open(url).await.unwrap();
    let principal = ApiKeyVerifier::new(store.clone(), Duration::from_secs(5)).verify(key).await.unwrap();
    assert_eq!(principal.roles, ["reader", "export"]);
    let expires = principal.expires_at.unwrap().duration_since(SystemTime::now()).unwrap();
    assert!(expires > Duration::from_secs(89 * 86400) && expires <= Duration::from_secs(90 * 86400), "{expires:?}");

    let out = apikey(&config, &["revoke", &id]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("up to 5s"), "{}", text(&out.stderr));
    let out = apikey(&config, &["revoke", &id]);
    assert_eq!(out.status.code(), Some(0), "revoking twice is fine: {}", text(&out.stderr));
    assert!(text(&out.stderr).contains("already revoked"), "{}", text(&out.stderr));
    let out = apikey(&config, &["revoke", "0123456789abcdef"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("no API key with id"), "{}", text(&out.stderr));
    let denied = ApiKeyVerifier::new(store, Duration::ZERO).verify(key).await.unwrap_err();
    assert_eq!(denied.reason, Reason::ApiKeyRevoked);

    let out = apikey(&config, &["list", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let entry = &listed.as_array().unwrap()[0];
    assert_eq!(entry["id"], id.as_str());
    assert_eq!(entry["roles"], serde_json::json!(["reader", "export"]));
    assert!(entry["revoked_at"].is_string() && entry["last_used_at"].is_string(), "{entry}");
    assert!(!text(&out.stdout).contains(secret));

    // Bad input is a failure with a message; a bad configuration is exit code 2.
    let out = apikey(&config, &["create", "--name", "bad", "--role", "a,b"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("invalid role"), "{}", text(&out.stderr));
    let out = apikey(&dir.path().join("missing.toml"), &["list"]);
    assert_eq!(out.status.code(), Some(2));
}

#[tokio::test]
async fn a_new_sqlite_store_is_private_and_in_wal_mode() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state").join("keys.db");
    let store = Store::open(&format!("sqlite://{}", path.display())).await.unwrap();
    store.create_api_key("svc", &[], None).await.unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    let wal = dir.path().join("state").join("keys.db-wal");
    assert!(wal.exists(), "WAL mode keeps a -wal file next to the database");
    assert_eq!(std::fs::metadata(&wal).unwrap().permissions().mode() & 0o777, 0o600);
}

#[tokio::test]
async fn a_postgres_server_that_goes_away_makes_keys_unavailable_not_accepted() {
    let server = common::postgres::Postgres::start().await;
    let store = Store::open(&server.url).await.unwrap();
    let (_, key) = store.create_api_key("svc", &[], None).await.unwrap();
    let verifier = ApiKeyVerifier::new(store, Duration::ZERO);
    assert!(verifier.verify(key.expose()).await.is_ok());
    drop(server);
    let started = std::time::Instant::now();
    let denied = refused(&verifier, key.expose()).await;
    assert_eq!(denied.reason, Reason::ApiKeyStoreUnavailable);
    assert!(started.elapsed() < Duration::from_secs(15), "answered within the acquire timeout");
}

// ---------------------------------------------------------------------------
// Through the gateway.

/// A gateway using the store at `url`, in front of an upstream recording the
/// headers it receives: `/api/**` takes API keys only, `/either/**` a JWT or
/// an API key, everything else is public. `cache_ttl = "0s"`, so revocation
/// needs no waiting.
async fn keyed_gateway(url: &str) -> (common::Gateway, Arc<Mutex<Vec<http::HeaderMap>>>) {
    let (upstream, seen) = common::named_upstream("app").await;
    let issuer_key = rcgen::KeyPair::generate().unwrap().public_key_pem();
    let toml = format!(
        r#"
[[listener]]
name = "test"
bind = "127.0.0.1:0"

[[upstream]]
name = "app"
targets = ["http://{upstream}"]

[[route]]
match = {{ path = "/api/**" }}
upstream = "app"
auth = "api_key"

[[route]]
match = {{ path = "/either/**" }}
upstream = "app"
auth = ["jwt", "api_key"]

[[route]]
match = {{ path = "/**" }}
upstream = "app"
auth = "public"

[state]
store = "{url}"

[auth.api_key]
header = "X-Api-Key"
cache_ttl = "0s"

[auth.jwt]
issuer = "https://issuer.test"
keys = [{{ pem = '''{issuer_key}''' }}]
"#
    );
    (common::gateway(&toml).await, seen)
}

fn last_seen(seen: &Mutex<Vec<http::HeaderMap>>) -> http::HeaderMap {
    seen.lock().unwrap().last().cloned().expect("the upstream saw no request")
}

fn header<'a>(headers: &'a http::HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).map(|v| v.to_str().unwrap())
}

/// Sends `headers` to `path`; asserts a `status`/`reason` denial and exactly
/// one security event for it, which never repeats `key`.
async fn denied_once(gw: &common::Gateway, path: &str, headers: &[(&str, &str)], reason: &str, key: &str) {
    let before = gw.events.0.lock().unwrap().len();
    let (parts, body) = common::get_with(&gw.url(path), headers).await;
    common::assert_denied(&parts, &body, 401, reason);
    let events = gw.events.0.lock().unwrap();
    assert_eq!(events.len(), before + 1, "one event per denial: {:?}", &events[before..]);
    let event = &events[before];
    assert_eq!(event.reason, reason);
    assert_eq!(event.request_id, parts.headers["x-request-id"].to_str().unwrap());
    let line = event.to_json_line();
    let secret = key.strip_prefix("pcl_").and_then(|rest| rest.split_once('_')).map_or(key, |(_, secret)| secret);
    assert!(!line.contains(key) && (secret.len() < 8 || !line.contains(secret)), "the event repeats the key: {line}");
    assert!(!String::from_utf8_lossy(&body).contains(key), "the answer repeats the key");
}

async fn the_gateway_accepts_keys_and_keeps_them_from_the_upstream(url: &str) {
    let store = Store::open(url).await.unwrap();
    let (info, key) = store.create_api_key("ci deploy", &roles(&["ops", "billing:read"]), None).await.unwrap();
    let key = key.expose().to_owned();
    let (gw, seen) = keyed_gateway(url).await;

    let bearer = format!("Bearer {key}");
    let presented: [(&str, &str); 2] = [("authorization", &bearer), ("x-api-key", &key)];
    for (name, value) in presented {
        for path in ["/api/orders", "/either/orders"] {
            let (parts, body) = common::get_with(&gw.url(path), &[(name, value)]).await;
            assert_eq!(parts.status, 200, "{name} on {path}: {}", String::from_utf8_lossy(&body));
            let headers = last_seen(&seen);
            assert_eq!(header(&headers, "x-portcullis-subject"), Some(format!("apikey:{}", info.id).as_str()));
            assert_eq!(header(&headers, "x-portcullis-auth"), Some("api_key"));
            assert_eq!(header(&headers, "x-portcullis-issuer"), Some("portcullis"));
            assert_eq!(header(&headers, "x-portcullis-roles"), Some("ops,billing:read"));
            assert_eq!(header(&headers, "x-portcullis-scopes"), None);
            // The key is the gateway's secret: neither carrier reaches the upstream.
            assert!(headers.get("authorization").is_none() && headers.get("x-api-key").is_none(), "{headers:?}");
            assert!(!format!("{headers:?}").contains(&key));
        }
    }
    // A bearer token the gateway did not verify does not travel next to the
    // identity it did verify.
    let forged = "Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJhZG1pbiJ9.";
    let (parts, _) = common::get_with(&gw.url("/api/orders"), &[("x-api-key", &key), ("authorization", forged)]).await;
    assert_eq!(parts.status, 200);
    assert!(last_seen(&seen).get("authorization").is_none());
    assert!(gw.events.0.lock().unwrap().is_empty(), "{:?}", gw.events.reasons());
}

async fn the_gateway_refuses_each_bad_key_with_one_event(url: &str) {
    let store = Store::open(url).await.unwrap();
    let (info, key) = store.create_api_key("rotating", &roles(&["writer"]), None).await.unwrap();
    let key = key.expose().to_owned();
    let (gw, seen) = keyed_gateway(url).await;

    // No credential: 401 with a challenge, so clients know to authenticate.
    let (parts, body) = common::get(&gw.url("/api/orders")).await;
    common::assert_denied(&parts, &body, 401, "auth.missing");
    assert!(parts.headers[http::header::WWW_AUTHENTICATE].to_str().unwrap().starts_with("Bearer"));
    assert_eq!(gw.events.reasons(), ["auth.missing"]);
    // A bearer value without the key prefix is not a key: on an API-key-only
    // route nothing was presented.
    denied_once(&gw, "/api/orders", &[("authorization", "Bearer opaque-token")], "auth.missing", "opaque-token").await;

    let unknown = format!("pcl_0123456789abcdef_{}", "A".repeat(43));
    denied_once(&gw, "/api/orders", &[("authorization", &format!("Bearer {unknown}"))], "apikey.unknown", &unknown)
        .await;
    let guessed = format!("pcl_{}_{}", info.id, "B".repeat(43));
    denied_once(&gw, "/api/orders", &[("x-api-key", &guessed)], "apikey.unknown", &guessed).await;
    let truncated = &key[..40];
    denied_once(&gw, "/api/orders", &[("x-api-key", truncated)], "apikey.malformed", truncated).await;
    // The dedicated header is always a key, with or without the prefix.
    denied_once(&gw, "/api/orders", &[("x-api-key", "hunter2-hunter2")], "apikey.malformed", "hunter2-hunter2").await;
    // The first credential present decides: a bad key is not rescued by
    // another method the route accepts.
    denied_once(&gw, "/either/orders", &[("x-api-key", &unknown)], "apikey.unknown", &unknown).await;

    // Revoked with the real CLI on the gateway's own configuration file.
    let (parts, _) = common::get_with(&gw.url("/api/orders"), &[("x-api-key", &key)]).await;
    assert_eq!(parts.status, 200);
    let config = gw.dir.path().join("portcullis.toml");
    let out = apikey(&config, &["revoke", &info.id]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let bearer = format!("Bearer {key}");
    denied_once(&gw, "/api/orders", &[("authorization", &bearer)], "apikey.revoked", &key).await;
    denied_once(&gw, "/either/orders", &[("x-api-key", &key)], "apikey.revoked", &key).await;

    // Expired: the store refuses a past expiry, so the key is made to expire
    // within a second and used until it does.
    let expires = SystemTime::now() + Duration::from_secs(1);
    let (_, short) = store.create_api_key("short-lived", &[], Some(expires)).await.unwrap();
    let short = short.expose().to_owned();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let before = gw.events.0.lock().unwrap().len();
        let sent = SystemTime::now();
        let (parts, body) = common::get_with(&gw.url("/api/orders"), &[("x-api-key", &short)]).await;
        if parts.status == 200 {
            assert!(sent < expires, "a key was accepted after its expiry");
            assert!(std::time::Instant::now() < deadline, "the key never expired");
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        common::assert_denied(&parts, &body, 401, "apikey.expired");
        let events = gw.events.0.lock().unwrap();
        assert_eq!(events.len(), before + 1);
        assert_eq!(events[before].reason, "apikey.expired");
        assert!(!events[before].to_json_line().contains(short["pcl_".len()..].split_once('_').unwrap().1));
        break;
    }
    denied_once(&gw, "/api/orders", &[("authorization", &format!("Bearer {short}"))], "apikey.expired", &short).await;

    // No denied request reached the upstream: the four accepted ones did.
    let forwarded = seen.lock().unwrap().len();
    assert!(forwarded >= 1, "{forwarded}");
    assert!(seen.lock().unwrap().iter().all(|h| h.get("x-portcullis-subject").is_some()));
}

/// A public route: the gateway does not authenticate, so a key sent there is
/// not verified — a revoked, expired or mistyped key must not break
/// `/health` or a login page for a client that sends its key everywhere
/// (most HTTP clients are configured with one default header), and no
/// identity is asserted to the upstream. But the key is still the gateway's
/// secret, useless to the upstream: it is removed as on an authenticated
/// route, so upstream access logs never collect keys from public traffic.
async fn public_routes_neither_verify_nor_forward_keys(url: &str) {
    let store = Store::open(url).await.unwrap();
    let (info, key) = store.create_api_key("svc", &roles(&["ops"]), None).await.unwrap();
    let key = key.expose().to_owned();
    store.revoke_api_key(&info.id).await.unwrap();
    let (gw, seen) = keyed_gateway(url).await;

    let bearer = format!("Bearer {key}");
    for headers in
        [vec![("authorization", bearer.as_str())], vec![("x-api-key", key.as_str())], vec![("x-api-key", "not-a-key")]]
    {
        let (parts, body) = common::get_with(&gw.url("/health"), &headers).await;
        assert_eq!(parts.status, 200, "{headers:?}: {}", String::from_utf8_lossy(&body));
        let received = last_seen(&seen);
        assert!(received.keys().all(|name| !name.as_str().starts_with("x-portcullis-")), "{received:?}");
        assert!(received.get("authorization").is_none() && received.get("x-api-key").is_none(), "{received:?}");
    }
    // Any other Authorization value is the upstream's business and passes.
    let (parts, _) = common::get_with(&gw.url("/health"), &[("authorization", "Basic dXNlcjpwYXNz")]).await;
    assert_eq!(parts.status, 200);
    assert_eq!(header(&last_seen(&seen), "authorization"), Some("Basic dXNlcjpwYXNz"));
    assert!(gw.events.0.lock().unwrap().is_empty(), "{:?}", gw.events.reasons());
}
