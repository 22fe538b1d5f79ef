//! Shared state in a real Redis: the GCRA script agrees with the memory
//! store, two gateway instances share one budget and one revocation list,
//! and a Redis outage fails open or closed per limit, then heals by itself.

use crate::common;

use std::time::{Duration, Instant, SystemTime};

use common::redis::Redis;
use common::*;
use portcullis::shared::RedisState;
use portcullis_layers::store::{LimitStore, MemoryStore};
use portcullis_policy::rate_limit::{Gcra, Outcome};

const S: u64 = 1_000_000_000;
/// Slack for the time that passes between calls (the clock is real).
const SLACK: u64 = S;

/// The same scenario for every store: burst, refusal with exact-ish
/// retry/reset values, then recovery after one emission interval.
async fn gcra_scenario(store: &dyn LimitStore) {
    // One per minute, burst 3: the values barely move while the test runs.
    let slow = Gcra::new(1, Duration::from_secs(60), 3).unwrap();
    let t = slow.emission_nanos;
    let mut resets = Vec::new();
    for expected in [2, 1, 0] {
        let Outcome::Allowed { remaining, reset_nanos, .. } = store.check("rl:slow:a", slow, 0).await.unwrap() else {
            panic!("refused within the burst");
        };
        assert_eq!(remaining, expected);
        resets.push(reset_nanos);
    }
    assert_eq!(resets[0], t, "first request: the quota is full again after one interval");
    for (i, reset) in resets.iter().enumerate() {
        let full = t * (i as u64 + 1);
        assert!(*reset <= full && *reset + SLACK > full, "reset {reset} after {} requests", i + 1);
    }
    let Outcome::Limited { retry_after_nanos, reset_nanos, .. } = store.check("rl:slow:a", slow, 0).await.unwrap()
    else {
        panic!("admitted over the burst");
    };
    assert!(retry_after_nanos <= t && retry_after_nanos + SLACK > t, "retry after {retry_after_nanos}");
    assert!(reset_nanos <= 3 * t && reset_nanos + SLACK > 3 * t, "reset {reset_nanos}");
    // Another key is untouched.
    assert!(store.check("rl:slow:b", slow, 0).await.unwrap().allowed());

    // Ten per second, burst 2: the refusal lifts after at most 100 ms.
    let fast = Gcra::new(10, Duration::from_secs(1), 2).unwrap();
    assert!(store.check("rl:fast", fast, 0).await.unwrap().allowed());
    assert!(store.check("rl:fast", fast, 0).await.unwrap().allowed());
    let Outcome::Limited { retry_after_nanos, .. } = store.check("rl:fast", fast, 0).await.unwrap() else {
        panic!("admitted over the burst");
    };
    assert!(retry_after_nanos <= fast.emission_nanos);
    let refused_at = Instant::now();
    let deadline = refused_at + Duration::from_secs(2);
    while !store.check("rl:fast", fast, 0).await.unwrap().allowed() {
        assert!(Instant::now() < deadline, "the quota did not recover");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Recovery took about one interval, not less.
    assert!(refused_at.elapsed() + Duration::from_millis(5) >= Duration::from_nanos(retry_after_nanos));
}

#[tokio::test]
async fn the_redis_script_and_the_memory_store_agree() {
    gcra_scenario(&MemoryStore::new(1_000)).await;
    let redis = Redis::start();
    let state = RedisState::connect(&redis.url).await.unwrap();
    gcra_scenario(&state).await;
    // Idle keys expire: the TAT is at most burst·T ahead.
    let client = ::redis::Client::open(redis.url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let ttl: i64 = ::redis::cmd("PTTL").arg("rl:slow:a").query_async(&mut conn).await.unwrap();
    assert!(ttl > 0 && ttl <= 180_000, "ttl {ttl}");
}

/// Several limits of a request: checked in order, stopping at the first
/// limited one — in one Redis round trip, with the memory store's semantics.
async fn batch_scenario(store: &dyn LimitStore, prefix: &str) {
    let loose = Gcra::new(100, Duration::from_secs(60), 100).unwrap();
    let tight = Gcra::new(1, Duration::from_secs(60), 1).unwrap();
    let items = vec![
        (format!("{prefix}:loose"), loose),
        (format!("{prefix}:tight"), tight),
        (format!("{prefix}:never"), tight),
    ];
    let first = store.check_all(&items, 0).await.unwrap();
    assert_eq!(first.len(), 3);
    assert!(first.iter().all(Outcome::allowed));
    let second = store.check_all(&items, 0).await.unwrap();
    assert_eq!(second.len(), 2, "stops at the tight limit");
    assert!(second[0].allowed() && !second[1].allowed());
    // The loose limit counted both requests; the one after the refusal none.
    let Outcome::Allowed { remaining, .. } = store.check(&format!("{prefix}:loose"), loose, 0).await.unwrap() else {
        panic!()
    };
    assert_eq!(remaining, 97);
}

#[tokio::test]
async fn batched_checks_agree_between_memory_and_redis() {
    let memory = MemoryStore::new(1_000);
    batch_scenario(&memory, "m").await;
    let redis = Redis::start();
    let state = RedisState::connect(&redis.url).await.unwrap();
    batch_scenario(&state, "r").await;
}

fn shared_config(up: std::net::SocketAddr, url: &str) -> String {
    format!(
        r#"
[[listener]]
name = "test"
bind = "127.0.0.1:0"

[state]
shared = "{url}"

[[upstream]]
name = "app"
targets = ["http://{up}"]

[limits.per_ip]
key = "ip"
rate = "1/min"
burst = 5
on_store_failure = "open"

[limits.strict]
key = "ip"
rate = "1/min"
burst = 2
on_store_failure = "closed"

[[route]]
name = "open"
match = {{ path = "/open" }}
upstream = "app"
auth = "public"
limits = ["per_ip"]

[[route]]
name = "closed"
match = {{ path = "/closed" }}
upstream = "app"
auth = "public"
limits = ["strict"]
"#
    )
}

#[tokio::test]
async fn two_instances_share_one_budget_and_one_revocation_list() {
    let redis = Redis::start();
    let (up, _) = named_upstream("app").await;
    let config = shared_config(up, &redis.url);
    let a = gateway(&config).await;
    let b = gateway(&config).await;
    // Twelve concurrent requests, six to each instance: exactly the burst passes.
    let requests = (0..12).map(|i| {
        let url = if i % 2 == 0 { a.url("/open") } else { b.url("/open") };
        async move { get(&url).await.0.status.as_u16() }
    });
    let statuses = futures_util::future::join_all(requests).await;
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 5, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 7, "{statuses:?}");

    let until = SystemTime::now() + Duration::from_secs(60);
    assert!(!b.server.revocations().is_revoked("session-1").await.unwrap());
    a.server.revocations().revoke("session-1", until).await.unwrap();
    assert!(b.server.revocations().is_revoked("session-1").await.unwrap());
    // An earlier revocation of the same session does not shorten it.
    a.server.revocations().revoke("session-1", SystemTime::now() + Duration::from_millis(1)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(b.server.revocations().is_revoked("session-1").await.unwrap());
    assert!(!a.server.revocations().is_revoked("session-2").await.unwrap());
}

#[tokio::test]
async fn a_redis_outage_fails_open_or_closed_per_limit_then_heals() {
    let mut redis = Redis::start();
    let (up, _) = named_upstream("app").await;
    let gw = gateway(&shared_config(up, &redis.url)).await;
    assert_eq!(get(&gw.url("/closed")).await.0.status, 200);

    redis.stop();
    let started = Instant::now();
    let (parts, _) = get(&gw.url("/open")).await;
    assert_eq!(parts.status, 200, "fail-open limit");
    let event = gw.events.last().expect("an event for failing open");
    assert_eq!(event.reason, "ratelimit.unavailable");
    assert_eq!(event.action, portcullis_policy::Action::Log);
    let (parts, body) = get(&gw.url("/closed")).await;
    assert_denied(&parts, &body, 503, "ratelimit.unavailable");
    assert_eq!(gw.events.last().unwrap().action, portcullis_policy::Action::Deny);
    // Both answered quickly although Redis is gone.
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());

    redis.restart();
    // The connection comes back by itself; the restarted Redis is empty, so
    // the strict limit's burst of two is whole again, then enforced.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = get(&gw.url("/closed")).await.0.status.as_u16();
        if status == 200 {
            break;
        }
        assert_eq!(status, 503);
        assert!(Instant::now() < deadline, "enforcement did not resume after Redis restarted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(get(&gw.url("/closed")).await.0.status, 200);
    let (parts, body) = get(&gw.url("/closed")).await;
    assert_denied(&parts, &body, 429, "ratelimit.exceeded");
}

#[tokio::test]
async fn a_ban_made_by_one_instance_is_enforced_and_lifted_by_the_other() {
    let mut redis = Redis::start();
    let (up, _) = named_upstream("app").await;
    let config = format!(
        "{}\n[server]\ntrusted_proxies = [\"127.0.0.1/32\"]\n\n[[ban]]\nname = \"scanners\"\non = [\"route.none\", \"malformed\"]\ncount = 4\nwithin = \"1m\"\nduration = \"10m\"\n\n[[route]]\nname = \"free\"\nmatch = {{ path = \"/free\" }}\nupstream = \"app\"\nauth = \"public\"\n",
        shared_config(up, &redis.url)
    );
    let a = gateway(&config).await;
    let b = gateway(&config).await;
    let from = ("x-forwarded-for", "203.0.113.50");
    // Refusals on both instances count together: 2 + 2 reach the count of 4.
    for gw in [&a, &b, &a] {
        assert_eq!(get_with(&gw.url("/nope"), &[from]).await.0.status, 404);
    }
    assert!(b.server.bans().list().await.unwrap().is_empty(), "three refusals do not ban");
    assert_eq!(get_with(&b.url("/nope"), &[from]).await.0.status, 404);
    assert!(b.events.reasons().contains(&"ban.issued"));
    // `a` sees the ban made by `b` after its next sync.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (parts, body) = get_with(&a.url("/free"), &[from]).await;
        if parts.status == 403 {
            assert_denied(&parts, &body, 403, "ban.active");
            break;
        }
        assert!(Instant::now() < deadline, "instance a never enforced b's ban");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let listed = a.server.bans().list().await.unwrap();
    assert_eq!((listed[0].target_text().as_str(), listed[0].rule.as_str()), ("203.0.113.50", "scanners"));

    // Lifted on `a`, it is lifted on `b` too.
    assert!(a.server.bans().lift("203.0.113.50".parse().unwrap()).await.unwrap());
    let deadline = Instant::now() + Duration::from_secs(5);
    while get_with(&b.url("/free"), &[from]).await.0.status != 200 {
        assert!(
            Instant::now() < deadline,
            "instance b kept a lifted ban: {:?} {:?}",
            b.events.reasons(),
            b.server.bans().list().await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // With Redis down, a new ban still holds where it was made, and reaches
    // the other instance once Redis is back.
    redis.stop();
    let other = ("x-forwarded-for", "203.0.113.51");
    for _ in 0..4 {
        assert_eq!(get_with(&a.url("/a%zz"), &[other]).await.0.status, 400);
    }
    assert_eq!(get_with(&a.url("/free"), &[other]).await.0.status, 403, "enforced locally without Redis");
    assert!(a.server.bans().list().await.is_err(), "the shared list cannot be read without Redis");
    redis.restart();
    let deadline = Instant::now() + Duration::from_secs(10);
    while get_with(&b.url("/free"), &[other]).await.0.status != 403 {
        assert!(Instant::now() < deadline, "a ban made during the outage never reached the other instance");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn the_ban_command_works_on_the_shared_list_in_redis() {
    let redis = Redis::start();
    let (up, _) = named_upstream("app").await;
    let config = format!(
        "{}\n[server]\ntrusted_proxies = [\"127.0.0.1/32\"]\n\n[[route]]\nname = \"free\"\nmatch = {{ path = \"/free\" }}\nupstream = \"app\"\nauth = \"public\"\n",
        shared_config(up, &redis.url)
    );
    let gw = gateway(&config).await;
    let path = gw.dir.path().join("portcullis.toml");
    let ban = |args: &[&str]| {
        let out =
            std::process::Command::new(binary()).arg("ban").args(args).arg("--config").arg(&path).output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, _, err) = ban(&["add", "--for", "30m", "198.51.100.23"]);
    assert_eq!(code, Some(0), "{err}");
    let from = [("x-forwarded-for", "198.51.100.23")];
    let deadline = Instant::now() + Duration::from_secs(5);
    while get_with(&gw.url("/free"), &from).await.0.status != 403 {
        assert!(Instant::now() < deadline, "the running gateway never saw the ban added in Redis");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (code, out, _) = ban(&["list", "--json"]);
    assert_eq!(code, Some(0));
    let listed: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!((listed[0]["target"].as_str(), listed[0]["rule"].as_str()), (Some("198.51.100.23"), Some("manual")));
    let (code, _, err) = ban(&["lift", "198.51.100.23"]);
    assert_eq!(code, Some(0), "{err}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while get_with(&gw.url("/free"), &from).await.0.status != 200 {
        assert!(Instant::now() < deadline, "the running gateway kept a ban lifted in Redis");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
