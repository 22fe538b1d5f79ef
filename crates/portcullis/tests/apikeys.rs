//! API keys end to end: create, use, expire, revoke and list, through the
//! store API, the verifier the gateway uses and the real `portcullis apikey`
//! command, each against a SQLite file and a real PostgreSQL server.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use portcullis::store::{ApiKeyError, ApiKeyVerifier, Clock, Revoked, Store};
use portcullis_layers::auth::VerifyApiKey;
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
    let secret = key.rsplit_once('_').unwrap().1;
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
    let secret = key.rsplit_once('_').unwrap().1;

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
