//! The audit trail: an intact chain verifies; an edited, a deleted (with
//! and without renumbering) and an inserted row, rows cut off the end and
//! another key are each found and named; concurrent appenders through
//! separate pools keep one chain; the real CLI's actions, the admin API's
//! bans and unlocks (once, even when `portcullis ban` goes through the API),
//! the gateway's start and its reloads (with the configuration's SHA-256)
//! leave rows; `audit verify` exits 0 or 1 naming the row; a store that is
//! down never stops an admin action and is reported. SQLite and PostgreSQL.

use crate::common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant, SystemTime};

use portcullis::store::Store;
use portcullis::store::audit::{AuditKey, AuditLog, Entry, Filter, Page, Problem, Row};
use serde_json::{Value, json};
use sqlx::Connection;

common::against_both_stores!(
    tampering_is_found_and_the_row_named,
    concurrent_appenders_keep_one_chain,
    cli_actions_leave_rows_and_verify_exits_by_the_chain,
);

fn key() -> AuditKey {
    AuditKey::new(&[42; 32], "test").unwrap()
}

async fn sql(url: &str, statements: &[&str]) {
    sqlx::any::install_default_drivers();
    let mut db = sqlx::AnyConnection::connect(url).await.unwrap();
    for statement in statements {
        sqlx::raw_sql(statement).execute(&mut db).await.unwrap_or_else(|e| panic!("{statement}: {e}"));
    }
    db.close().await.unwrap();
}

async fn problems(log: &AuditLog, head: Option<&str>) -> Vec<Problem> {
    log.verify(head).await.unwrap().problems
}

async fn tampering_is_found_and_the_row_named(url: &str) {
    let log = AuditLog::new(Store::open(url).await.unwrap(), key());
    let empty = log.verify(None).await.unwrap();
    assert!(empty.intact() && empty.rows == 0 && empty.head.is_none());
    let mut rows = Vec::new();
    for n in 1..=6 {
        let entry = Entry::new("cli:root", "ban.add", format!("192.0.2.{n}"), json!({ "duration_s": n }));
        rows.push(log.append(&entry, SystemTime::now()).await.unwrap());
    }
    assert_eq!(rows.iter().map(|r| r.seq).collect::<Vec<_>>(), [1, 2, 3, 4, 5, 6]);
    assert_eq!(rows[0].prev_hash, portcullis::store::audit::GENESIS);
    assert!(rows.windows(2).all(|w| w[1].prev_hash == w[0].hash), "each row names the one before");
    let verified = log.verify(None).await.unwrap();
    assert!(verified.intact(), "{:?}", verified.problems);
    assert_eq!((verified.rows, verified.head.as_ref().map(|h| h.hash.as_str())), (6, Some(rows[5].hash.as_str())));

    // Edited: the row's own hash no longer matches.
    sql(url, &["UPDATE audit SET target = '198.51.100.1' WHERE seq = 2"]).await;
    assert_eq!(problems(&log, None).await, [Problem::Edited { seq: 2 }]);
    // Even with its hash recomputed without the key (a plain SHA-256).
    sql(url, &[&format!("UPDATE audit SET hash = '{}' WHERE seq = 2", "ab".repeat(32))]).await;
    assert_eq!(problems(&log, None).await, [Problem::Edited { seq: 2 }, Problem::Unlinked { seq: 3, after: Some(2) }]);
    sql(url, &[&format!("UPDATE audit SET target = '192.0.2.2', hash = '{}' WHERE seq = 2", rows[1].hash)]).await;
    assert!(problems(&log, None).await.is_empty(), "restored");

    // Deleted: a gap.
    sql(url, &["CREATE TABLE audit_hold AS SELECT * FROM audit WHERE seq = 4", "DELETE FROM audit WHERE seq = 4"])
        .await;
    assert_eq!(problems(&log, None).await, [Problem::Missing { first: 4, last: 4 }]);
    // Deleted and the rest renumbered: no gap, but the chain breaks there.
    sql(
        url,
        &["UPDATE audit SET seq = seq + 1000 WHERE seq > 4", "UPDATE audit SET seq = seq - 1001 WHERE seq > 1000"],
    )
    .await;
    assert_eq!(problems(&log, None).await, [Problem::Unlinked { seq: 4, after: Some(3) }]);
    sql(
        url,
        &[
            "UPDATE audit SET seq = seq + 1001 WHERE seq >= 4",
            "UPDATE audit SET seq = seq - 1000 WHERE seq > 1000",
            "INSERT INTO audit SELECT * FROM audit_hold",
            "DROP TABLE audit_hold",
        ],
    )
    .await;
    assert!(problems(&log, None).await.is_empty(), "restored");

    // Inserted between rows 2 and 3, the rest renumbered to make room.
    sql(
        url,
        &[
            "UPDATE audit SET seq = seq + 1000 WHERE seq >= 3",
            "UPDATE audit SET seq = seq - 999 WHERE seq > 1000",
            &format!(
                "INSERT INTO audit (seq, at_ms, actor, action, target, detail, outcome, key_id, prev_hash, hash) \
                 VALUES (3, 0, 'cli:mallory', 'ban.lift', '192.0.2.66', '{{}}', 'ok', '{}', '{}', '{}')",
                rows[0].key_id,
                rows[1].hash,
                "cd".repeat(32)
            ),
        ],
    )
    .await;
    assert_eq!(problems(&log, None).await, [Problem::Inserted { seq: 3 }]);
    let named = Problem::Inserted { seq: 3 }.to_string();
    assert!(named.starts_with("row 3:") && named.contains("inserted"), "{named}");
    sql(
        url,
        &[
            "DELETE FROM audit WHERE seq = 3",
            "UPDATE audit SET seq = seq + 1000 WHERE seq > 3",
            "UPDATE audit SET seq = seq - 1001 WHERE seq > 1000",
        ],
    )
    .await;
    assert!(problems(&log, None).await.is_empty(), "restored");

    // The newest row cut off: only a head recorded elsewhere shows it.
    let head = rows[5].hash.clone();
    assert!(problems(&log, Some(&head)).await.is_empty());
    sql(url, &["DELETE FROM audit WHERE seq = 6"]).await;
    assert!(problems(&log, None).await.is_empty(), "truncation alone leaves a valid chain");
    assert_eq!(problems(&log, Some(&head)).await, [Problem::HeadNotFound { hash: head.clone() }]);

    // Another key checks nothing and says so, row by row.
    let other = AuditLog::new(Store::open(url).await.unwrap(), AuditKey::new(&[1; 32], "other").unwrap());
    let found = problems(&other, None).await;
    assert_eq!(found.len(), 5);
    assert!(found.iter().all(|p| matches!(p, Problem::OtherKey { .. })), "{found:?}");
}

async fn concurrent_appenders_keep_one_chain(url: &str) {
    // Two pools stand for two instances (or the gateway and the CLI).
    let stores = [Store::open(url).await.unwrap(), Store::open(url).await.unwrap()];
    let mut tasks = tokio::task::JoinSet::new();
    for appender in 0..4 {
        let log = AuditLog::new(stores[appender % 2].clone(), key());
        tasks.spawn(async move {
            for n in 0..25 {
                let entry = Entry::new(format!("cli:t{appender}"), "ban.add", format!("192.0.2.{n}"), json!({}));
                log.append(&entry, SystemTime::now()).await.unwrap();
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    let log = AuditLog::new(stores[0].clone(), key());
    let verified = log.verify(None).await.unwrap();
    assert!(verified.intact(), "{:?}", verified.problems);
    assert_eq!(verified.rows, 100);
    assert_eq!(verified.head.map(|h| h.seq), Some(100));

    // Listing: newest first, paged, filtered exactly or by prefix.
    let first = log.list(&Filter::default(), Page { before: None, limit: 30 }).await.unwrap();
    assert_eq!(first.entries.len(), 30);
    assert_eq!(first.entries[0].seq, 100);
    assert_eq!(first.next_before, Some(71));
    let next = log.list(&Filter::default(), Page { before: first.next_before, limit: 30 }).await.unwrap();
    assert_eq!(next.entries[0].seq, 70);
    let mine = Filter { actor: Some("cli:t1".into()), action: None };
    let listed = log.list(&mine, Page { before: None, limit: 1000 }).await.unwrap();
    assert_eq!(listed.entries.len(), 25);
    assert_eq!(listed.next_before, None);
    let prefix = Filter { actor: Some("cli:*".into()), action: Some("ban.*".into()) };
    assert_eq!(log.list(&prefix, Page { before: None, limit: 1000 }).await.unwrap().entries.len(), 100);
    let none = Filter { actor: None, action: Some("ban".into()) };
    assert!(log.list(&none, Page::default()).await.unwrap().entries.is_empty(), "exact unless it ends in *");
}

fn run(config: &Path, args: &[&str]) -> Output {
    Command::new(common::binary()).args(args).arg("--config").arg(config).output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn ok(out: &Output) -> String {
    assert_eq!(out.status.code(), Some(0), "stdout: {}\nstderr: {}", text(&out.stdout), text(&out.stderr));
    text(&out.stdout)
}

fn listed(config: &Path, extra: &[&str]) -> Vec<Value> {
    let mut args = vec!["audit", "list", "--json", "--limit", "1000"];
    args.extend_from_slice(extra);
    serde_json::from_str(&ok(&run(config, &args))).unwrap()
}

async fn cli_actions_leave_rows_and_verify_exits_by_the_chain(url: &str) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("portcullis.toml");
    let events = dir.path().join("events.jsonl");
    let toml = common::simple_config(
        "127.0.0.1:9".parse().unwrap(),
        &format!(
            "[state]\nstore = \"{url}\"\n\n[events]\nsinks = [\"file:{}\"]\n\n[auth.accounts]\nregistration = \"invite\"\n",
            events.display()
        ),
    );
    std::fs::write(&config, toml).unwrap();

    let key = ok(&run(&config, &["apikey", "create", "--name", "ci", "--role", "deploy"]));
    let key_id = key.trim().strip_prefix("pcl_").unwrap()[..16].to_owned();
    ok(&run(&config, &["apikey", "revoke", &key_id]));
    ok(&run(&config, &["apikey", "revoke", &key_id])); // already revoked: no second row
    ok(&run(&config, &["user", "add", "alice", "--no-password", "--roles", "viewer"]));
    ok(&run(&config, &["user", "set-roles", "alice", "editor"]));
    ok(&run(&config, &["user", "disable", "alice"]));
    ok(&run(&config, &["user", "enable", "alice"]));
    ok(&run(&config, &["user", "reset-mfa", "alice"]));
    let code = ok(&run(&config, &["invite", "create", "--roles", "viewer"]));
    ok(&run(&config, &["user", "delete", "alice"]));
    assert_eq!(run(&config, &["user", "delete", "alice"]).status.code(), Some(1), "a failed command records nothing");

    let rows = listed(&config, &[]);
    let actions: Vec<&str> = rows.iter().rev().map(|r| r["action"].as_str().unwrap()).collect();
    assert_eq!(
        actions,
        [
            "apikey.create",
            "apikey.revoke",
            "user.add",
            "user.set_roles",
            "user.disable",
            "user.enable",
            "user.reset_mfa",
            "invite.create",
            "user.delete"
        ]
    );
    let actor = portcullis::audit::cli_actor();
    assert!(rows.iter().all(|r| r["actor"] == actor.as_str() && r["outcome"] == "ok"), "{rows:?}");
    assert_eq!(rows[8]["target"], key_id.as_str());
    assert_eq!(
        rows[5]["detail"],
        json!({ "username": "alice", "from": ["viewer"], "to": ["editor"], "sessions_revoked": 0 })
    );
    let all = serde_json::to_string(&rows).unwrap();
    assert!(!all.contains(key.trim()) && !all.contains(code.trim()), "no key or invite code in the trail");
    assert_eq!(listed(&config, &["--action", "user.*"]).len(), 6);
    assert_eq!(listed(&config, &["--action", "apikey.revoke"]).len(), 1);
    let table = ok(&run(&config, &["audit", "list"]));
    assert!(table.starts_with("SEQ") && table.contains("user.set_roles"), "{table}");

    // Every row is an event carrying its hash, for the SIEM.
    let appended: Vec<Value> = std::fs::read_to_string(&events)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| e["reason"] == "audit.appended")
        .collect();
    assert_eq!(appended.len(), 9);
    for row in &rows {
        let hash = row["hash"].as_str().unwrap();
        assert!(appended.iter().any(|e| e["detail"].as_str().unwrap().contains(hash)), "no event for {row}");
    }

    // verify: 0 and the head; 1 naming the row.
    let out = run(&config, &["audit", "verify"]);
    let head = ok(&out);
    assert_eq!(head.trim(), format!("head 9 {}", rows[0]["hash"].as_str().unwrap()));
    assert!(text(&out.stderr).contains("intact: 9 row(s)"), "{}", text(&out.stderr));
    sql(url, &["UPDATE audit SET detail = '{\"username\":\"bob\"}' WHERE seq = 3"]).await;
    let out = run(&config, &["audit", "verify"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("error: row 3: its contents do not match its hash"), "{}", text(&out.stderr));
    let out = run(&config, &["audit", "verify", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let result: Value = serde_json::from_str(&text(&out.stdout)).unwrap();
    assert_eq!(result["problems"], json!([{ "problem": "edited", "seq": 3 }]));
    sql(url, &["DELETE FROM audit WHERE seq = 3"]).await;
    let out = run(&config, &["audit", "verify"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("error: row 3: missing (deleted)"), "{}", text(&out.stderr));
    // A recorded head that was cut off.
    let recorded = rows[0]["hash"].as_str().unwrap();
    sql(url, &["DELETE FROM audit WHERE seq = 9"]).await;
    let out = run(&config, &["audit", "verify", "--head", recorded]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("is not in the log"), "{}", text(&out.stderr));
    // Bad configuration: 2.
    std::fs::write(&config, "[state]\nstore = \"mysql://x\"\n").unwrap();
    assert_eq!(run(&config, &["audit", "verify"]).status.code(), Some(2));
}

const TOKEN: &str = "0123456789abcdef0123456789abcdef-admin";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

async fn admin(gw: &common::Gateway, method: &str, path: &str, body: &str) -> (u16, Value) {
    let addr = gw.server.addr("admin").unwrap();
    let req = http::Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"))
        .header("authorization", format!("Bearer {TOKEN}"))
        .header("content-type", "application/json")
        .body(common::full_body(body.to_owned()))
        .unwrap();
    let (parts, body) = common::send(req).await;
    (parts.status.as_u16(), serde_json::from_slice(&body).unwrap_or(Value::Null))
}

/// The rows of `log`, oldest first, once there are at least `n`.
async fn rows_eventually(log: &AuditLog, n: usize) -> Vec<Row> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let mut rows = log.list(&Filter::default(), Page { before: None, limit: 1000 }).await.unwrap().entries;
        if rows.len() >= n {
            rows.reverse();
            return rows;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {n} audit rows, have {rows:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_api_actions_leave_one_row_each() {
    let (up, _) = common::named_upstream("app").await;
    let port = free_port();
    let gw = common::gateway(&common::simple_config(
        up,
        &format!("[admin]\nbind = \"127.0.0.1:{port}\"\ntoken = \"{TOKEN}\"\n"),
    ))
    .await;
    assert_eq!(admin(&gw, "POST", "/bans", r#"{"target": "203.0.113.7", "duration": "1h"}"#).await.0, 201);
    assert_eq!(admin(&gw, "DELETE", "/bans/203.0.113.7", "").await.0, 204);
    assert_eq!(admin(&gw, "DELETE", "/bans/203.0.113.7", "").await.0, 404, "nothing lifted: no row");
    assert_eq!(admin(&gw, "POST", "/logins/unlock", r#"{"login": "api", "account": "alice"}"#).await.0, 204);
    // `portcullis ban add` with memory state goes through the API: one row, the API's.
    let out = run(&gw.dir.path().join("portcullis.toml"), &["ban", "add", "--for", "30m", "203.0.113.8"]);
    ok(&out);

    let log = gw.server.audit().log().await.unwrap();
    let rows = rows_eventually(log, 4).await;
    let got: Vec<(&str, &str, &str)> =
        rows.iter().map(|r| (r.action.as_str(), r.target.as_str(), r.actor.as_str())).collect();
    let fingerprint = portcullis_policy::login::account_fingerprint("alice").unwrap();
    let unlocked = format!("api/{fingerprint}");
    assert_eq!(
        got,
        [
            ("ban.add", "203.0.113.7", "admin-api:127.0.0.1"),
            ("ban.lift", "203.0.113.7", "admin-api:127.0.0.1"),
            ("login.unlock", unlocked.as_str(), "admin-api:127.0.0.1"),
            ("ban.add", "203.0.113.8", "admin-api:127.0.0.1"),
        ]
    );
    assert_eq!(rows[0].detail, json!({ "rule": "manual", "duration_s": 3600 }));
    assert!(!serde_json::to_string(&rows).unwrap().contains("alice"), "the account only as a fingerprint");
    assert!(log.verify(None).await.unwrap().intact());
    // Each row is an event carrying its hash.
    common::eventually("four audit.appended events", Duration::from_secs(5), || {
        gw.events.reasons().iter().filter(|r| **r == "audit.appended").count() == 4
    })
    .await;
    let details: Vec<String> = gw
        .events
        .0
        .lock()
        .unwrap()
        .iter()
        .filter(|e| e.reason == "audit.appended")
        .map(|e| e.detail.clone().unwrap_or_default())
        .collect();
    for row in &rows {
        assert!(details.iter().any(|d| d.contains(&row.hash)), "no event for row {}", row.seq);
    }

    // GET /audit: newest first, paged, filtered.
    let (status, page) = admin(&gw, "GET", "/audit?action=ban.*&limit=2", "").await;
    assert_eq!(status, 200, "{page}");
    let seqs: Vec<i64> = page["entries"].as_array().unwrap().iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, [4, 2]);
    assert_eq!(page["next_before"], 2);
    let (_, rest) = admin(&gw, "GET", "/audit?action=ban.*&before=2", "").await;
    assert_eq!(rest["entries"][0]["seq"], 1);
    assert_eq!(rest["next_before"], Value::Null);
    assert_eq!(admin(&gw, "GET", "/audit?bogus=1", "").await.0, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_is_down_never_stops_an_admin_action_and_is_reported() {
    let (up, _) = common::named_upstream("app").await;
    let closed = free_port();
    let gw = common::gateway(&common::simple_config(
        up,
        &format!(
            "[admin]\nbind = \"127.0.0.1:0\"\ntoken = \"{TOKEN}\"\n\n[state]\nstore = \"postgres://portcullis@127.0.0.1:{closed}/audit\"\n"
        ),
    ))
    .await;
    let started = Instant::now();
    assert_eq!(admin(&gw, "POST", "/bans", r#"{"target": "203.0.113.9", "duration": "1h"}"#).await.0, 201);
    assert!(started.elapsed() < Duration::from_secs(2), "the request does not wait for the store");
    common::eventually("an audit.failed event", Duration::from_secs(30), || {
        gw.events.reasons().contains(&"audit.failed")
    })
    .await;
    let failed = gw.events.0.lock().unwrap().iter().find(|e| e.reason == "audit.failed").cloned().unwrap();
    let detail = failed.detail.unwrap();
    assert!(detail.starts_with("ban.add by admin-api:127.0.0.1 on 203.0.113.9 (ok) not recorded"), "{detail}");
    assert_eq!(admin(&gw, "GET", "/bans", "").await.1["bans"][0]["target"], "203.0.113.9", "the ban holds");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_start_and_each_reload_leave_a_row_with_the_configuration_hash() {
    let (a, _) = common::named_upstream("a").await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("portcullis.toml");
    let first = common::simple_config(a, "[log]\nformat = \"json\"\n");
    std::fs::write(&path, &first).unwrap();
    let gw = common::Process::start(&path);
    // The commands read a configuration of their own: the gateway's is broken below.
    let cli = dir.path().join("cli.toml");
    std::fs::write(&cli, &first).unwrap();
    let sha = |text: &str| portcullis::audit::sha256_hex(text.as_bytes());
    let rows_eventually = |n: usize| listed_eventually(&cli, n);
    let rows = rows_eventually(1).await;
    assert_eq!((rows[0]["action"].as_str(), rows[0]["actor"].as_str()), (Some("gateway.start"), Some("gateway")));
    assert_eq!(rows[0]["detail"]["config_sha256"], sha(&first));

    let second = format!("{first}\n[server]\nworkers = 3\n");
    std::fs::write(&path, &second).unwrap();
    gw.signal("HUP");
    let rows = rows_eventually(2).await;
    assert_eq!(rows[1]["action"], "config.reload");
    assert_eq!(rows[1]["outcome"], "ok");
    assert_eq!(rows[1]["detail"]["config_sha256"], sha(&second));
    assert_eq!(rows[1]["detail"]["not_applied"], json!(["[server] workers"]));

    let bad = first.replace("auth = \"public\"", "");
    std::fs::write(&path, &bad).unwrap();
    gw.signal("HUP");
    let rows = rows_eventually(3).await;
    assert_eq!((rows[2]["action"].as_str(), rows[2]["outcome"].as_str()), (Some("config.reload"), Some("refused")));
    assert_eq!(rows[2]["detail"]["config_sha256"], sha(&bad));
    ok(&run(&cli, &["audit", "verify"]));
}

/// `audit list --json` rows, oldest first, once there are at least `n`.
async fn listed_eventually(config: &Path, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let rows = listed(config, &[]);
        if rows.len() >= n {
            return rows.into_iter().rev().collect();
        }
        assert!(Instant::now() < deadline, "timed out waiting for {n} rows: {rows:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[test]
fn the_audit_key_is_a_reference_to_at_least_32_bytes() {
    let parse = |extra: &str| {
        let toml = common::simple_config("127.0.0.1:1".parse().unwrap(), &format!("[state]\n{extra}\n"));
        portcullis::config::parse(Path::new("p.toml"), &toml, |name| match name {
            "LONG" => Some("k".repeat(32)),
            "SHORT" => Some("tiny-key".into()),
            _ => None,
        })
    };
    let config = parse("audit_key = \"${LONG}\"").unwrap();
    assert_eq!(config.state.audit_key.as_ref().map(|k| k.expose().len()), Some(32));
    assert!(parse("").unwrap().state.audit_key.is_none(), "default: the generated key file");
    for (value, says) in [
        ("${SHORT}", "audit key: shorter than 32 bytes"),
        ("${NOPE}", "audit key: environment variable NOPE is not set"),
        ("literal-key-literal-key-literal-key-0", "audit key written in the configuration file"),
    ] {
        let err = parse(&format!("audit_key = \"{value}\"")).unwrap_err().to_string();
        assert!(err.contains(says), "{value}: {err}");
        assert!(!err.contains("tiny-key") && !err.contains("literal-key-literal"), "never printed: {err}");
    }
    // Several instances on PostgreSQL need one key.
    let codes = |extra: &str| -> Vec<&'static str> {
        portcullis::check::findings(&parse(extra).unwrap()).iter().map(|f| f.code).collect()
    };
    let shared = "store = \"postgres://portcullis@db.internal/portcullis\"";
    assert!(codes(shared).contains(&"audit.key_per_instance"));
    assert!(!codes(&format!("{shared}\naudit_key = \"${{LONG}}\"")).contains(&"audit.key_per_instance"));
    assert!(!codes("").contains(&"audit.key_per_instance"), "SQLite: one instance");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_the_ban_and_unlock_commands_record_themselves() {
    let redis = common::redis::Redis::start();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("portcullis.toml");
    let toml = common::simple_config(
        "127.0.0.1:9".parse().unwrap(),
        &format!(
            "[state]\nshared = \"{}\"\n\n[login.api]\naccount = \"json:username\"\n\n[auth.accounts]\n",
            redis.url
        ),
    );
    std::fs::write(&config, toml).unwrap();
    ok(&run(&config, &["ban", "add", "--for", "2h", "2001:db8:7:8::1"]));
    ok(&run(&config, &["ban", "lift", "2001:db8:7:8::/64"]));
    assert_eq!(run(&config, &["ban", "lift", "2001:db8:7:8::/64"]).status.code(), Some(1), "nothing lifted: no row");
    ok(&run(&config, &["user", "add", "heidi", "--no-password"]));
    ok(&run(&config, &["user", "unlock", "heidi"]));
    let rows = listed(&config, &[]);
    let got: Vec<(&str, &str)> =
        rows.iter().rev().map(|r| (r["action"].as_str().unwrap(), r["target"].as_str().unwrap())).collect();
    assert_eq!(got[..2], [("ban.add", "2001:db8:7:8::/64"), ("ban.lift", "2001:db8:7:8::/64")]);
    assert_eq!((got[2].0, got[3].0), ("user.add", "user.unlock"));
    assert_eq!(rows[0]["detail"]["logins"], json!(["api", "accounts"]));
    assert_eq!(rows[3]["detail"], json!({ "rule": "manual", "duration_s": 7200 }));
    let actor = portcullis::audit::cli_actor();
    assert!(rows.iter().all(|r| r["actor"] == actor.as_str()), "{rows:?}");
    ok(&run(&config, &["audit", "verify"]));
}

#[test]
fn processes_opening_a_new_sqlite_store_at_once_all_migrate_it() {
    for _ in 0..3 {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("portcullis.toml");
        std::fs::write(&config, common::simple_config("127.0.0.1:9".parse().unwrap(), "")).unwrap();
        let children: Vec<_> = (0..6)
            .map(|_| {
                Command::new(common::binary())
                    .args(["audit", "list", "--json", "--config"])
                    .arg(&config)
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for child in children {
            ok(&child.wait_with_output().unwrap());
        }
    }
}
