//! `portcullis user …` and `portcullis invite create` end to end: the real
//! binary against a SQLite file and a real PostgreSQL server, checked
//! through the store API the gateway uses. Passwords go in on stdin and are
//! refused by the policy; role changes, disabling and deleting revoke
//! sessions; an invite code works once; nothing secret is printed; every
//! change is an event.

use crate::common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use portcullis::auth::password::{PasswordHasher, Verified};
use portcullis::store::Store;
use portcullis::store::accounts::{AccountError, NewAccount};
use portcullis::store::sessions::Rotation;
use portcullis_policy::password::HashParams;

const PASSWORD: &str = "correct horse battery staple";

common::against_both_stores!(
    users_are_added_with_a_password_from_stdin_and_listed_without_secrets,
    weak_passwords_on_stdin_are_refused_and_nothing_is_stored,
    role_changes_disabling_and_deleting_revoke_sessions,
    an_invite_code_is_printed_once_and_registers_once,
);

struct Setup {
    _dir: tempfile::TempDir,
    config: PathBuf,
    events: PathBuf,
}

fn setup(url: &str, extra: &str) -> Setup {
    setup_shared(url, "memory", extra)
}

/// A configuration with the store at `url`, `[state] shared`, `[auth.accounts]`
/// with invite registration, events in a file, and `extra`.
fn setup_shared(url: &str, shared: &str, extra: &str) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("portcullis.toml");
    let events = dir.path().join("events.jsonl");
    let toml = common::simple_config(
        "127.0.0.1:9".parse().unwrap(),
        &format!(
            "[state]\nstore = \"{url}\"\nshared = \"{shared}\"\n\n[events]\nsinks = [\"file:{}\"]\n\n\
             [auth.accounts]\nregistration = \"invite\"\n{extra}",
            events.display()
        ),
    );
    std::fs::write(&config, toml).unwrap();
    Setup { _dir: dir, config, events }
}

/// `portcullis <args> --config <config>`, with `stdin` piped in.
fn run(config: &Path, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(common::binary())
        .args(args)
        .arg("--config")
        .arg(config)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn ok(out: &Output) -> String {
    assert_eq!(out.status.code(), Some(0), "stdout: {}\nstderr: {}", text(&out.stdout), text(&out.stderr));
    text(&out.stdout)
}

fn events(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path).unwrap_or_default().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// The commands' own events; each change's `audit.appended` is tests/audit.rs's.
fn reasons(path: &Path) -> Vec<String> {
    events(path).iter().filter(|e| e["defence"] != "audit").map(|e| e["reason"].as_str().unwrap().to_owned()).collect()
}

async fn hasher() -> PasswordHasher {
    PasswordHasher::new(HashParams::OWASP, 2, Duration::from_secs(10)).await.unwrap()
}

async fn users_are_added_with_a_password_from_stdin_and_listed_without_secrets(url: &str) {
    let s = setup(url, "");
    let out = run(
        &s.config,
        &["user", "add", "Alice", "--email", "Alice@Example.org", "--roles", "editor,viewer"],
        &format!("{PASSWORD}\n"),
    );
    assert_eq!(ok(&out), "", "nothing on stdout");
    assert!(text(&out.stderr).contains("(alice) created, roles: editor,viewer"), "{}", text(&out.stderr));
    // A CRLF line ending is not part of the password.
    ok(&run(&s.config, &["user", "add", "bob", "--roles", "viewer"], &format!("{PASSWORD}\r\n")));
    ok(&run(&s.config, &["user", "add", "carol", "--no-password"], ""));

    // The password typed is the one stored, as an argon2id hash.
    let store = Store::open(url).await.unwrap();
    let h = hasher().await;
    for login in ["alice", "ALICE", "alice@example.org", "bob"] {
        let record = store.account_for_login(login).await.unwrap().unwrap_or_else(|| panic!("{login}"));
        let hash = record.password_hash.unwrap();
        assert!(hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{hash}");
        assert_eq!(h.verify(PASSWORD, Some(&hash)).await.unwrap(), Verified::Match { rehash: false }, "{login}");
    }
    assert!(store.account_for_login("carol").await.unwrap().unwrap().password_hash.is_none());

    let table = ok(&run(&s.config, &["user", "list"], ""));
    assert!(table.starts_with("ID"), "{table}");
    let row = table.lines().find(|l| l.contains("alice")).unwrap();
    assert!(row.contains("alice@example.org") && row.contains("editor,viewer") && row.contains("set"), "{row}");
    let row = table.lines().find(|l| l.contains("carol")).unwrap();
    assert!(row.contains("none"), "{row}");
    let listed: serde_json::Value =
        serde_json::from_str(&ok(&run(&s.config, &["user", "list", "--json"], ""))).unwrap();
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), 3);
    assert_eq!(listed[0]["username"], "alice");
    assert_eq!(listed[0]["roles"], serde_json::json!(["editor", "viewer"]));
    assert_eq!(listed[2]["password"], false);

    // A taken name is refused; so is an unknown one.
    let out = run(&s.config, &["user", "add", "ALICE"], &format!("{PASSWORD}\n"));
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("the username is taken"), "{}", text(&out.stderr));
    let out = run(&s.config, &["user", "disable", "nobody"], "");
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("no account named \"nobody\""), "{}", text(&out.stderr));

    // Every change is an event, and no output or event holds the password or a hash.
    assert_eq!(reasons(&s.events), ["account.created"; 3]);
    let all = std::fs::read_to_string(&s.events).unwrap() + &table;
    assert!(!all.contains(PASSWORD) && !all.contains("argon2"), "{all}");
    let first = &events(&s.events)[0];
    assert_eq!((first["listener"].as_str(), first["path"].as_str()), (Some("cli"), Some("user add")));
}

async fn weak_passwords_on_stdin_are_refused_and_nothing_is_stored(url: &str) {
    let s = setup(url, "");
    for (password, why) in
        [("short pass", "at least 12 characters"), ("password123456", "too common"), ("", "at least 12 characters")]
    {
        let out = run(&s.config, &["user", "add", "dave"], &format!("{password}\n"));
        assert_eq!(out.status.code(), Some(1), "{password:?}");
        let stderr = text(&out.stderr);
        assert!(stderr.contains("password refused") && stderr.contains(why), "{password:?}: {stderr}");
        assert!(!stderr.contains(password) || password.is_empty(), "the refusal does not echo the password: {stderr}");
    }
    let out = run(&s.config, &["user", "add", "dave"], &"x".repeat(2000));
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("too long"), "{}", text(&out.stderr));
    let store = Store::open(url).await.unwrap();
    assert!(store.list_accounts().await.unwrap().is_empty());
    assert!(reasons(&s.events).is_empty(), "a refused command changes nothing and logs no change");
    // A password is never an argument.
    let out = run(&s.config, &["user", "add", "dave", "--password", PASSWORD], "");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
}

async fn role_changes_disabling_and_deleting_revoke_sessions(url: &str) {
    let s = setup(url, "");
    ok(&run(&s.config, &["user", "add", "erin", "--roles", "viewer"], &format!("{PASSWORD}\n")));
    let store = Store::open(url).await.unwrap();
    let id = store.account_for_login("erin").await.unwrap().unwrap().account.id;
    let now = SystemTime::now();
    let week = now + Duration::from_secs(7 * 86_400);
    let session =
        |store: Store, id: String| async move { store.create_session(&id, week, SystemTime::now()).await.unwrap() };

    let (first, token) = session(store.clone(), id.clone()).await;
    let out = run(&s.config, &["user", "set-roles", "erin", "editor,billing"], "");
    ok(&out);
    assert!(text(&out.stderr).contains("viewer -> editor,billing, 1 session(s) revoked"), "{}", text(&out.stderr));
    let account = store.account(&id).await.unwrap().unwrap();
    assert_eq!(account.roles, ["editor", "billing"]);
    assert!(store.session(&first.id).await.unwrap().unwrap().revoked_at.is_some());
    assert!(!matches!(
        store.rotate_refresh_token(token.expose(), Duration::ZERO, SystemTime::now()).await.unwrap(),
        Rotation::Rotated { .. }
    ));
    let out = run(&s.config, &["user", "set-roles", "erin", "bad role"], "");
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("invalid role"), "{}", text(&out.stderr));
    ok(&run(&s.config, &["user", "set-roles", "erin", ""], ""));
    assert!(store.account(&id).await.unwrap().unwrap().roles.is_empty(), "\"\" clears the roles");

    let (second, _) = session(store.clone(), id.clone()).await;
    let out = run(&s.config, &["user", "disable", "erin"], "");
    ok(&out);
    assert!(text(&out.stderr).contains("disabled, 1 session(s) revoked"), "{}", text(&out.stderr));
    let revoked = store.session(&second.id).await.unwrap().unwrap();
    assert_eq!(revoked.revoked_reason.as_deref(), Some("disabled"));
    assert!(store.account(&id).await.unwrap().unwrap().disabled_at.is_some());
    ok(&run(&s.config, &["user", "enable", "erin"], ""));
    assert!(store.account(&id).await.unwrap().unwrap().disabled_at.is_none());
    assert!(store.session(&second.id).await.unwrap().unwrap().revoked_at.is_some(), "enabling revives nothing");

    store.set_totp_secret(&id, "sealed-secret", SystemTime::now()).await.unwrap();
    let list = ok(&run(&s.config, &["user", "list"], ""));
    assert!(list.lines().find(|l| l.contains("erin")).unwrap().contains("totp(pending)"), "{list}");
    assert!(store.accept_totp_step(&id, 1_000, SystemTime::now()).await.unwrap());
    let (third, _) = session(store.clone(), id.clone()).await;
    let list = ok(&run(&s.config, &["user", "list"], ""));
    let row = list.lines().find(|l| l.contains("erin")).unwrap();
    assert!(row.contains("totp") && !row.contains("pending") && !row.contains("sealed"), "{list}");
    ok(&run(&s.config, &["user", "reset-mfa", "erin"], ""));
    assert!(store.totp(&id).await.unwrap().is_none());
    assert!(store.session(&third.id).await.unwrap().unwrap().revoked_at.is_some());

    let (_fourth, _) = session(store.clone(), id.clone()).await;
    let out = run(&s.config, &["user", "delete", "erin"], "");
    ok(&out);
    assert!(text(&out.stderr).contains("deleted, 1 session(s) revoked"), "{}", text(&out.stderr));
    assert!(store.account(&id).await.unwrap().is_none());
    assert!(store.account_sessions(&id).await.unwrap().is_empty());

    assert_eq!(
        reasons(&s.events),
        [
            "account.created",
            "account.roles_changed",
            "account.roles_changed",
            "account.disabled",
            "account.enabled",
            "account.mfa_reset",
            "account.deleted"
        ]
    );
}

async fn an_invite_code_is_printed_once_and_registers_once(url: &str) {
    let s = setup(url, "");
    let out = run(&s.config, &["invite", "create", "--roles", "viewer", "--expires", "2d"], "");
    let stdout = ok(&out);
    assert_eq!(stdout.lines().count(), 1, "stdout is the code alone: {stdout}");
    let code = stdout.trim().to_owned();
    assert!(code.starts_with("pci_"), "{code}");
    assert!(text(&out.stderr).contains("will not be shown again"), "{}", text(&out.stderr));
    let all_events = std::fs::read_to_string(&s.events).unwrap();
    assert!(!all_events.contains(&code) && !all_events.contains(&code[4..]), "{all_events}");
    assert_eq!(reasons(&s.events), ["account.invite_created"]);

    let store = Store::open(url).await.unwrap();
    let new = |name: &'static str| NewAccount { username: name, email: None, password_hash: None, roles: &[] };
    let account = store.register_with_invite(&code, &new("frank"), SystemTime::now()).await.unwrap();
    assert_eq!(account.roles, ["viewer"], "the invite's roles, not the caller's");
    let again = store.register_with_invite(&code, &new("grace"), SystemTime::now()).await;
    assert!(matches!(again, Err(AccountError::InviteRefused)), "{again:?}");
    let expires = {
        let out = run(&s.config, &["invite", "create", "--expires", "0s"], "");
        assert_eq!(out.status.code(), Some(1));
        text(&out.stderr)
    };
    assert!(expires.contains("expiry must be in the future"), "{expires}");

    // With registration other than "invite" the command says so.
    let other = setup(url, "");
    let closed = &other.config;
    let toml =
        std::fs::read_to_string(closed).unwrap().replace("registration = \"invite\"", "registration = \"closed\"");
    std::fs::write(closed, toml).unwrap();
    let out = run(closed, &["invite", "create"], "");
    ok(&out);
    assert!(text(&out.stderr).contains("registration is \"closed\""), "{}", text(&out.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unlock_clears_an_accounts_login_failures_in_redis() {
    use portcullis_layers::login::{Attempt, LoginGuard};
    let redis = common::redis::Redis::start();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("accounts.db").display());
    let s = setup_shared(&url, &redis.url, "\n[login.api]\naccount = \"json:username\"\nip_failures = 8\n");
    ok(&run(&s.config, &["user", "add", "heidi", "--email", "heidi@example.org"], &format!("{PASSWORD}\n")));

    let config = portcullis::config::load(&s.config).unwrap();
    let settings = config.logins["api"].clone();
    let state = Arc::new(portcullis::shared::RedisState::connect(&redis.url).await.unwrap());
    let guard = LoginGuard::new(settings, state);
    let attacker = "192.0.2.1".parse().unwrap();
    for name in ["Heidi", "heidi@example.org"] {
        for _ in 0..5 {
            guard.after(Some(name), attacker, Attempt::Failed).await;
        }
    }
    let owner = "198.51.100.7".parse().unwrap();
    assert!(guard.before(Some("heidi"), owner).await.is_err(), "the account is locked");
    assert!(guard.before(Some("heidi@example.org"), owner).await.is_err(), "by its email too");

    let out = run(&s.config, &["user", "unlock", "heidi"], "");
    ok(&out);
    assert!(text(&out.stderr).contains("cleared in Redis under [login.api, accounts]"), "{}", text(&out.stderr));
    assert!(guard.before(Some("heidi"), owner).await.unwrap().is_none(), "unlocked");
    assert!(guard.before(Some("heidi@example.org"), owner).await.unwrap().is_none(), "unlocked by email too");
    assert!(guard.before(Some("heidi"), attacker).await.is_err(), "the attacking address keeps its count");
    assert_eq!(reasons(&s.events), ["account.created", "account.unlocked"]);
}

#[tokio::test]
async fn unlock_without_redis_or_admin_says_where_the_counts_live() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("accounts.db").display());
    let s = setup(&url, "\n[login.api]\naccount = \"json:username\"\n");
    ok(&run(&s.config, &["user", "add", "ivan", "--no-password"], ""));
    let out = run(&s.config, &["user", "unlock", "ivan"], "");
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("live in the running gateway's memory") && stderr.contains("[admin]"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unlock_reaches_a_running_gateways_memory_through_the_admin_api() {
    const TOKEN: &str = "0123456789abcdef0123456789abcdef-admin";
    // Every login fails at the upstream.
    let up =
        common::upstream(|_req| async { http::Response::builder().status(401).body(common::full_body("")).unwrap() })
            .await;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("accounts.db").display());
    let extra = |admin_port: u16| {
        format!(
            "[admin]\nbind = \"127.0.0.1:{admin_port}\"\ntoken = \"{TOKEN}\"\n\n\
             [login.api]\naccount = \"json:username\"\naccount_failures = 3\n\n\
             [[route]]\nname = \"login\"\nmatch = {{ path = \"/login\" }}\nupstream = \"app\"\nauth = \"public\"\n\
             login = \"api\"\n"
        )
    };
    let gw = common::gateway(&common::simple_config(up, &extra(0))).await;
    let admin = gw.server.addr("admin").unwrap();
    let s = setup_shared(&url, "memory", &extra(admin.port()));
    ok(&run(&s.config, &["user", "add", "judy", "--no-password"], ""));

    let attempt = || async {
        let req = http::Request::post(gw.url("/login"))
            .header("content-type", "application/json")
            .body(common::full_body(r#"{"username": "Judy", "password": "wrong"}"#.to_owned()))
            .unwrap();
        common::send(req).await.0.status.as_u16()
    };
    for _ in 0..3 {
        assert_eq!(attempt().await, 401);
    }
    assert_eq!(attempt().await, 429, "locked after 3 failures");

    let out = run(&s.config, &["user", "unlock", "judy"], "");
    ok(&out);
    assert!(text(&out.stderr).contains("in the running gateway (admin API)"), "{}", text(&out.stderr));
    assert_eq!(attempt().await, 401, "unlocked: the attempt reaches the upstream again");
    assert_eq!(reasons(&s.events), ["account.created", "account.unlocked"]);
    // The gateway records the unlock too, with the account as a fingerprint.
    let fingerprint = portcullis_policy::login::account_fingerprint("judy").unwrap();
    let logged = gw.events.0.lock().unwrap().clone();
    let unlocked = logged.iter().find(|e| e.reason == "account.unlocked").unwrap();
    assert_eq!(unlocked.listener, "admin");
    let detail = unlocked.detail.as_deref().unwrap();
    assert!(detail.contains(&fingerprint) && !detail.contains("judy"), "{detail}");

    // A wrong token is refused, and the command says so.
    let toml = std::fs::read_to_string(&s.config).unwrap().replace(TOKEN, "another-token-another-token-12345");
    std::fs::write(&s.config, toml).unwrap();
    let out = run(&s.config, &["user", "unlock", "judy"], "");
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("401"), "{}", text(&out.stderr));
}
