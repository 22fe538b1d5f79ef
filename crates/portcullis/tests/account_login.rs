//! Built-in accounts through the running gateway: password login for API
//! clients (tokens) and browsers (the cookie), routes with `auth =
//! ["account"]`, refresh rotation with reuse detection and the concurrent
//! race, logout and logout everywhere, password change, TOTP enrolment,
//! second step, replay and recovery codes, lockout and its expiry,
//! registration, the rehash on login, and hostile input. Against SQLite and
//! a real PostgreSQL where the store does the deciding.

use crate::common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, Request};
use portcullis::auth::password::PasswordHasher;
use portcullis::store::Store;
use portcullis::store::accounts::NewAccount;
use portcullis_policy::password::HashParams;
use portcullis_policy::totp::TotpSecret;
use serde_json::{Value, json};

const PASSWORD: &str = "correct horse battery staple";
const NEW_PASSWORD: &str = "a different long passphrase";

common::against_both_stores!(
    password_login_gives_tokens_that_open_account_routes,
    refresh_rotates_and_a_replaced_token_revokes_its_session,
    of_concurrent_refreshes_exactly_one_wins,
    password_change_and_logout_everywhere_end_sessions,
    totp_enrolment_second_step_replay_and_recovery_codes,
    hostile_input_is_refused_or_stored_as_data,
);

struct Fixture {
    gateway: common::Gateway,
    store: Store,
    seen: Arc<Mutex<Vec<HeaderMap>>>,
    _dir: tempfile::TempDir,
}

/// The gateway with `[auth.accounts]` (plus `accounts`) on `url`, a public
/// route and `/api/**` for accounts, and `alice` (roles `editor`).
async fn fixture(url: &str, accounts: &str) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let (upstream, seen) = common::named_upstream("app").await;
    let toml = format!(
        r#"
[server]
data_dir = "{data}"

[[listener]]
name = "test"
bind = "127.0.0.1:0"

[[upstream]]
name = "app"
targets = ["http://{upstream}"]

[[route]]
match = {{ path = "/api/**" }}
upstream = "app"
auth = ["account"]
csrf = false

[[route]]
match = {{ path = "/**" }}
upstream = "app"
auth = "public"

[state]
store = "{url}"

[auth.accounts]
{accounts}
"#,
        data = dir.path().display(),
        // Every late copy of a refresh token is reuse, unless a test says otherwise.
        accounts = if accounts.contains("refresh_reuse_grace") {
            accounts.to_owned()
        } else {
            format!("refresh_reuse_grace = \"0s\"\n{accounts}")
        },
    );
    let gateway = common::gateway(&toml).await;
    let store = Store::open(url).await.unwrap();
    add_account(&store, "alice", &["editor"]).await;
    Fixture { gateway, store, seen, _dir: dir }
}

async fn add_account(store: &Store, name: &str, roles: &[&str]) -> String {
    let hasher = PasswordHasher::new(HashParams::OWASP, 1, Duration::from_secs(5)).await.unwrap();
    let hash = hasher.hash_new(PASSWORD).await.unwrap();
    let roles: Vec<String> = roles.iter().map(|r| (*r).to_owned()).collect();
    let new = NewAccount { username: name, email: None, password_hash: Some(&hash), roles: &roles };
    store.create_account(&new, SystemTime::now()).await.unwrap().id
}

async fn post_json(
    gateway: &common::Gateway,
    path: &str,
    body: &Value,
    headers: &[(&str, &str)],
) -> (http::response::Parts, Bytes) {
    let mut req = Request::post(gateway.url(path)).header("content-type", "application/json");
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    common::send(req.body(common::full_body(body.to_string())).unwrap()).await
}

async fn post_form(
    gateway: &common::Gateway,
    path: &str,
    body: &str,
    headers: &[(&str, &str)],
) -> (http::response::Parts, Bytes) {
    let mut req = Request::post(gateway.url(path)).header("content-type", "application/x-www-form-urlencoded");
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    common::send(req.body(common::full_body(body.to_owned())).unwrap()).await
}

async fn login(gateway: &common::Gateway, user: &str, password: &str) -> (http::response::Parts, Value) {
    let (parts, body) =
        post_json(gateway, "/.portcullis/account/login", &json!({"username": user, "password": password}), &[]).await;
    let value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    (parts, value)
}

async fn tokens(gateway: &common::Gateway, user: &str) -> (String, String) {
    let (parts, body) = login(gateway, user, PASSWORD).await;
    assert_eq!(parts.status, 200, "{body}");
    (body["access_token"].as_str().unwrap().to_owned(), body["refresh_token"].as_str().unwrap().to_owned())
}

async fn api(gateway: &common::Gateway, access: &str) -> (http::response::Parts, Bytes) {
    common::get_with(&gateway.url("/api/orders"), &[("authorization", &format!("Bearer {access}"))]).await
}

async fn refresh(gateway: &common::Gateway, token: &str) -> (http::response::Parts, Value) {
    let (parts, body) = post_json(
        gateway,
        "/.portcullis/account/token",
        &json!({"grant_type": "refresh_token", "refresh_token": token}),
        &[],
    )
    .await;
    (parts, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

fn reason(body: &Value) -> &str {
    body["error"].as_str().unwrap_or_default()
}

/// The `Set-Cookie` value (before the first `;`) of cookie `name`.
fn set_cookie(parts: &http::response::Parts, name: &str) -> Option<String> {
    parts
        .headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(|v| v.split(';').next().unwrap().to_owned())
}

async fn password_login_gives_tokens_that_open_account_routes(url: &str) {
    let f = fixture(url, "").await;
    let g = &f.gateway;
    let id = f.store.account_for_login("alice").await.unwrap().unwrap().account.id;

    // No credential: a 401 naming both ways in; a browser is sent to login.
    let (parts, body) = common::get(&g.url("/api/orders")).await;
    common::assert_denied(&parts, &body, 401, "auth.missing");
    let challenges: Vec<_> =
        parts.headers.get_all("www-authenticate").iter().map(|v| v.to_str().unwrap().to_owned()).collect();
    assert!(challenges.iter().any(|c| c.starts_with("Bearer")), "{challenges:?}");
    assert!(challenges.iter().any(|c| c.contains("/.portcullis/account/login")), "{challenges:?}");
    let (parts, _) = common::get_with(&g.url("/api/orders?x=1"), &[("accept", "text/html")]).await;
    assert_eq!(parts.status, 302);
    assert_eq!(parts.headers["location"], "/.portcullis/account/login?rd=%2Fapi%2Forders%3Fx%3D1");

    // A wrong password and an unknown user: the same answer.
    let (wrong, wrong_body) = login(g, "alice", "not the password at all").await;
    let (unknown, unknown_body) = login(g, "mallory", "not the password at all").await;
    assert_eq!((wrong.status.as_u16(), reason(&wrong_body)), (401, "login.failed"));
    assert_eq!((unknown.status.as_u16(), reason(&unknown_body)), (401, "login.failed"));
    assert_eq!(wrong_body.as_object().unwrap().len(), unknown_body.as_object().unwrap().len());

    // The right one, by username or in another case: tokens.
    let (access, refresh_token) = tokens(g, "ALICE").await;
    assert!(refresh_token.starts_with("pcr_"));
    let (parts, body) = api(g, &access).await;
    assert_eq!(parts.status, 200, "{}", String::from_utf8_lossy(&body));
    let seen = f.seen.lock().unwrap().last().cloned().unwrap();
    assert_eq!(seen["x-portcullis-subject"], format!("account:{id}").as_str());
    assert_eq!(seen["x-portcullis-roles"], "editor");
    assert!(seen.get("authorization").is_none(), "the gateway's access token must not reach the upstream");

    // A tampered token, and the identity key's token for another audience.
    let mut tampered = access.clone();
    tampered.replace_range(tampered.len() - 4.., "AAAA");
    let (parts, body) = api(g, &tampered).await;
    assert_eq!(parts.status, 401);
    assert_eq!(reason(&common::json(&body)), "account.token_invalid");

    // The JWKS publishes the key the tokens verify with.
    let (parts, body) = common::get(&g.url("/.portcullis/jwks.json")).await;
    assert_eq!(parts.status, 200);
    assert_eq!(common::json(&body)["keys"][0]["alg"], "EdDSA");

    let reasons = g.events.reasons();
    assert!(reasons.contains(&"account.login"), "{reasons:?}");
    assert_eq!(reasons.iter().filter(|r| **r == "login.failed").count(), 2, "{reasons:?}");
    let all = format!("{:?}", g.events.0.lock().unwrap());
    assert!(!all.contains(PASSWORD) && !all.contains(&access) && !all.contains(&refresh_token), "a secret in an event");
}

async fn refresh_rotates_and_a_replaced_token_revokes_its_session(url: &str) {
    let f = fixture(url, "").await;
    let g = &f.gateway;
    let (access, first) = tokens(g, "alice").await;
    let (parts, body) = refresh(g, &first).await;
    assert_eq!(parts.status, 200, "{body}");
    let second = body["refresh_token"].as_str().unwrap().to_owned();
    let access2 = body["access_token"].as_str().unwrap().to_owned();
    assert_ne!(second, first);
    assert_eq!(api(g, &access2).await.0.status, 200);

    // The replaced token again: reuse, the whole session revoked.
    let (parts, body) = refresh(g, &first).await;
    assert_eq!((parts.status.as_u16(), reason(&body)), (401, "account.refresh_reuse"));
    let (parts, body) = refresh(g, &second).await;
    assert_eq!((parts.status.as_u16(), reason(&body)), (401, "account.refresh_invalid"));
    for token in [&access, &access2] {
        let (parts, body) = api(g, token).await;
        assert_eq!(parts.status, 401);
        assert_eq!(reason(&common::json(&body)), "account.token_invalid");
    }
    assert!(g.events.reasons().contains(&"account.refresh_reuse"));

    // Junk is refused as such.
    let (parts, body) = refresh(g, "pcr_not-a-token").await;
    assert_eq!((parts.status.as_u16(), reason(&body)), (401, "account.refresh_invalid"));
}

async fn of_concurrent_refreshes_exactly_one_wins(url: &str) {
    // With a grace, the losers are only refused (with none, they would be
    // reuse and end the winner's session too).
    let f = fixture(url, "refresh_reuse_grace = \"10s\"").await;
    let g = &f.gateway;
    let (_, token) = tokens(g, "alice").await;
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (url, token) = (g.url("/.portcullis/account/token"), token.clone());
        tasks.push(tokio::spawn(async move {
            let req = Request::post(url)
                .header("content-type", "application/json")
                .body(common::full_body(json!({"refresh_token": token}).to_string()))
                .unwrap();
            common::send(req).await.0.status.as_u16()
        }));
    }
    let mut statuses = Vec::new();
    for task in tasks {
        statuses.push(task.await.unwrap());
    }
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 1, "{statuses:?}");
    assert!(statuses.iter().all(|s| *s == 200 || *s == 401), "{statuses:?}");
    assert!(!g.events.reasons().contains(&"account.refresh_reuse"), "a race is not theft");
}

async fn password_change_and_logout_everywhere_end_sessions(url: &str) {
    let f = fixture(url, "").await;
    let g = &f.gateway;
    let (a, _) = tokens(g, "alice").await;
    let (b, b_refresh) = tokens(g, "alice").await;
    let bearer = format!("Bearer {a}");

    // A weak new password is refused and changes nothing.
    let (parts, body) = post_json(
        g,
        "/.portcullis/account/password",
        &json!({"current_password": PASSWORD, "new_password": "password1234"}),
        &[("authorization", &bearer)],
    )
    .await;
    assert_eq!((parts.status.as_u16(), reason(&common::json(&body))), (400, "account.password_rejected"));
    // The wrong current password is a counted failure.
    let (parts, body) = post_json(
        g,
        "/.portcullis/account/password",
        &json!({"current_password": "wrong wrong wrong", "new_password": NEW_PASSWORD}),
        &[("authorization", &bearer)],
    )
    .await;
    assert_eq!((parts.status.as_u16(), reason(&common::json(&body))), (401, "login.failed"));

    let (parts, body) = post_json(
        g,
        "/.portcullis/account/password",
        &json!({"current_password": PASSWORD, "new_password": NEW_PASSWORD}),
        &[("authorization", &bearer)],
    )
    .await;
    assert_eq!(parts.status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(common::json(&body)["other_sessions_ended"], 1);
    assert_eq!(api(g, &a).await.0.status, 200, "the session that changed it stays");
    assert_eq!(api(g, &b).await.0.status, 401, "the other session ends at once");
    assert_eq!(refresh(g, &b_refresh).await.0.status, 401);
    assert_eq!(login(g, "alice", PASSWORD).await.0.status, 401);
    let (parts, body) = login(g, "alice", NEW_PASSWORD).await;
    assert_eq!(parts.status, 200);
    let c = body["access_token"].as_str().unwrap().to_owned();

    // Logout everywhere from one session ends both.
    let (parts, body) =
        post_json(g, "/.portcullis/account/logout-all", &json!({}), &[("authorization", &bearer)]).await;
    assert_eq!(parts.status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(api(g, &a).await.0.status, 401);
    assert_eq!(api(g, &c).await.0.status, 401);
    let reasons = g.events.reasons();
    assert!(reasons.contains(&"account.password_changed") && reasons.contains(&"account.logout"), "{reasons:?}");
}

/// Decodes RFC 4648 base32 (no padding), as authenticator apps do.
fn base32(text: &str) -> Vec<u8> {
    let (mut bits, mut value, mut out) = (0_u32, 0_u64, Vec::new());
    for c in text.bytes().filter(|c| *c != b'=') {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'2'..=b'7' => c - b'2' + 26,
            _ => panic!("not base32: {c}"),
        };
        value = (value << 5) | u64::from(v);
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((value >> bits) as u8);
        }
    }
    out
}

fn now() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs()
}

async fn totp_enrolment_second_step_replay_and_recovery_codes(url: &str) {
    let f = fixture(url, "").await;
    let g = &f.gateway;
    let (access, _) = tokens(g, "alice").await;
    let bearer = format!("Bearer {access}");
    let (parts, body) =
        post_json(g, "/.portcullis/account/totp/enrol", &json!({}), &[("authorization", &bearer)]).await;
    assert_eq!(parts.status, 200, "{}", String::from_utf8_lossy(&body));
    let enrol = common::json(&body);
    assert!(enrol["uri"].as_str().unwrap().starts_with("otpauth://totp/"));
    let secret = TotpSecret::from_bytes(base32(enrol["secret"].as_str().unwrap())).unwrap();
    // Stored sealed: the store does not hold the key.
    let stored =
        f.store.totp(&f.store.account_for_login("alice").await.unwrap().unwrap().account.id).await.unwrap().unwrap();
    assert!(!stored.sealed_secret.contains(enrol["secret"].as_str().unwrap()));

    let confirm = |code: String| {
        let bearer = bearer.clone();
        async move {
            post_json(g, "/.portcullis/account/totp/confirm", &json!({"code": code}), &[("authorization", &bearer)])
                .await
        }
    };
    let (parts, _) = confirm(secret.code_at(now() - 600)).await;
    assert_eq!(parts.status, 401, "a stale code does not confirm");
    let (parts, body) = confirm(secret.code_at(now())).await;
    assert_eq!(parts.status, 200, "{}", String::from_utf8_lossy(&body));
    let codes: Vec<String> = common::json(&body)["recovery_codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect();
    assert!(codes.len() >= 8);

    // The password alone now opens only the second step.
    let (parts, body) = login(g, "alice", PASSWORD).await;
    assert_eq!(parts.status, 200);
    assert_eq!(body["mfa_required"], true);
    assert!(body.get("access_token").is_none());
    let mfa_token = body["mfa_token"].as_str().unwrap().to_owned();
    let step = |path: &'static str, code: String, token: String| async move {
        let (parts, body) = post_json(g, path, &json!({"mfa_token": token, "code": code}), &[]).await;
        (parts.status.as_u16(), serde_json::from_slice::<Value>(&body).unwrap_or(Value::Null))
    };
    let (status, body) = step("/.portcullis/account/login/totp", secret.code_at(now() - 600), mfa_token.clone()).await;
    assert_eq!((status, reason(&body)), (401, "account.mfa_failed"), "a stale code");
    let (status, body) = step("/.portcullis/account/login/totp", "12345x".into(), mfa_token.clone()).await;
    assert_eq!((status, reason(&body)), (401, "account.mfa_failed"), "not a code");
    // The enrolment used the current step; the next step's code logs in
    // (±1 step), and the same code again is a replay.
    let code = secret.code_at(now() + 30);
    let (status, body) = step("/.portcullis/account/login/totp", code.clone(), mfa_token.clone()).await;
    assert_eq!(status, 200, "{body}");
    let access = body["access_token"].as_str().unwrap().to_owned();
    let (parts, _) = api(g, &access).await;
    assert_eq!(parts.status, 200);
    let (_, body) = login(g, "alice", PASSWORD).await;
    let token = body["mfa_token"].as_str().unwrap().to_owned();
    let (status, body) = step("/.portcullis/account/login/totp", code, token.clone()).await;
    assert_eq!((status, reason(&body)), (401, "account.totp_replay"));

    // A recovery code logs in once.
    let (status, body) = step("/.portcullis/account/login/recovery", codes[0].clone(), token.clone()).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = step("/.portcullis/account/login/recovery", codes[0].clone(), token).await;
    assert_eq!((status, reason(&body)), (401, "account.mfa_failed"));
    // A forged mfa_token opens nothing.
    let (status, body) = step("/.portcullis/account/login/recovery", codes[1].clone(), "forged".into()).await;
    assert_eq!((status, reason(&body)), (401, "account.mfa_failed"));

    let reasons = g.events.reasons();
    for expected in ["account.mfa_enrolled", "account.mfa_failed", "account.totp_replay", "account.recovery_code_used"]
    {
        assert!(reasons.contains(&expected), "{expected} missing from {reasons:?}");
    }
    let all = format!("{:?}", g.events.0.lock().unwrap());
    assert!(!all.contains(&codes[1]) && !all.contains(enrol["secret"].as_str().unwrap()), "a secret in an event");
}

async fn hostile_input_is_refused_or_stored_as_data(url: &str) {
    let f = fixture(url, "registration = \"open\"").await;
    let g = &f.gateway;
    let before = f.store.list_accounts().await.unwrap();
    let long = "a".repeat(10_000);
    let sql =
        ["' OR '1'='1", "alice'--", "x\"); DROP TABLE accounts; --", "%' OR 1=1 #", "\\'; SELECT pg_sleep(5); --"];
    for name in sql {
        let (parts, body) = login(g, name, "' OR '1'='1' OR ''='").await;
        assert_eq!((parts.status.as_u16(), reason(&body)), (401, "login.failed"), "{name}");
    }
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("application/json", json!({"username": long, "password": "x"}).to_string().into_bytes(), "long username"),
        (
            "application/json",
            json!({"username": "alice", "password": "p".repeat(5000)}).to_string().into_bytes(),
            "long password",
        ),
        ("application/json", b"[\"alice\", \"pw\"]".to_vec(), "an array"),
        (
            "application/json",
            b"{\"username\": \"alice\", \"username\": \"bob\", \"password\": \"x\"}".to_vec(),
            "a repeated field",
        ),
        ("application/json", b"{\"username\": 1, \"password\": \"x\"}".to_vec(), "a number"),
        ("application/json", b"{\"username\": \"al\xffice\", \"password\": \"x\"}".to_vec(), "non-UTF-8 JSON"),
        ("application/x-www-form-urlencoded", b"username=al%FFice&password=x".to_vec(), "non-UTF-8 form"),
        ("application/x-www-form-urlencoded", b"username=a&username=b&password=x".to_vec(), "a repeated form field"),
        ("text/plain", b"username=alice".to_vec(), "another content type"),
        ("application/json", vec![b' '; 20_000], "a body over the limit"),
    ];
    for (content_type, body, what) in cases {
        let req = Request::post(g.url("/.portcullis/account/login"))
            .header("content-type", content_type)
            .body(common::full_body(body))
            .unwrap();
        let (parts, body) = common::send(req).await;
        if content_type.starts_with("application/x-www") {
            // A form is a browser: sent back to the page with the code.
            assert_eq!(parts.status, 303, "{what}");
            assert!(parts.headers["location"].to_str().unwrap().contains("error=account.invalid"), "{what}");
        } else {
            assert_eq!((parts.status.as_u16(), reason(&common::json(&body))), (400, "account.invalid"), "{what}");
        }
    }
    // Registration stores a metacharacter-laden name as data, or refuses it
    // as invalid; never a 500.
    for name in ["robert');DROP_TABLE_accounts;--", "o'brien", "x\u{0}y", "名前", &long] {
        let (parts, body) =
            post_json(g, "/.portcullis/account/register", &json!({"username": name, "password": NEW_PASSWORD}), &[])
                .await;
        let status = parts.status.as_u16();
        assert!(status == 201 || status == 400, "{name:?}: {status} {}", String::from_utf8_lossy(&body));
    }
    let after = f.store.list_accounts().await.unwrap();
    assert!(after.iter().any(|a| a.username == "robert');drop_table_accounts;--"), "{after:?}");
    assert!(before.iter().all(|a| after.contains(a)), "an existing account changed");
    assert_eq!(login(g, "robert');DROP_TABLE_accounts;--", NEW_PASSWORD).await.0.status, 200);
    // Another site cannot post the login form.
    let (parts, body) = post_json(
        g,
        "/.portcullis/account/login",
        &json!({"username": "alice", "password": PASSWORD}),
        &[("origin", "https://evil.example")],
    )
    .await;
    assert_eq!((parts.status.as_u16(), reason(&common::json(&body))), (403, "account.origin"));
    let (parts, _) = post_json(
        g,
        "/.portcullis/account/login",
        &json!({"username": "alice", "password": PASSWORD}),
        &[("sec-fetch-site", "cross-site")],
    )
    .await;
    assert_eq!(parts.status, 403);
    // Every field of every endpoint (last: its failures lock the address and
    // meet the own endpoints' rate limit, 4xx both): too long, not UTF-8, SQL metacharacters,
    // signed in or not. Refused as data (4xx), never a 5xx, nothing changed.
    let (access, _) = tokens(g, "alice").await;
    let alice_before = f.store.account_for_login("alice").await.unwrap().unwrap();
    let endpoints: &[(&str, &[&str])] = &[
        ("login", &["username", "password", "rd"]),
        ("login/totp", &["code", "mfa_token"]),
        ("login/recovery", &["code", "mfa_token"]),
        ("token", &["refresh_token", "grant_type"]),
        ("password", &["current_password", "new_password"]),
        ("register", &["username", "email", "password", "invite"]),
        ("totp/confirm", &["code"]),
        ("passkeys/register/finish", &["ceremony", "credential", "name"]),
        ("passkeys/login/finish", &["ceremony", "credential"]),
    ];
    let hostile = ["x".repeat(20_000), "' OR 1=1; DROP TABLE sessions; --".to_owned(), "\u{202e}\u{0}".to_owned()];
    for (path, fields) in endpoints {
        for field in *fields {
            for value in &hostile {
                for bearer in [None, Some(access.as_str())] {
                    let mut body = serde_json::Map::new();
                    for other in *fields {
                        body.insert(
                            (*other).to_owned(),
                            json!(if other == field { value.as_str() } else { "ok-value-123456" }),
                        );
                    }
                    let auth = bearer.map(|t| format!("Bearer {t}"));
                    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("authorization", a.as_str())).collect();
                    let (parts, answer) =
                        post_json(g, &format!("/.portcullis/account/{path}"), &Value::Object(body), &headers).await;
                    assert!(
                        parts.status.is_client_error() || parts.status == 201,
                        "{path} {field}={:?}: {} {}",
                        value.chars().take(20).collect::<String>(),
                        parts.status,
                        String::from_utf8_lossy(&answer)
                    );
                }
            }
            let form = format!(
                "{field}=%FF%FE&{}",
                fields.iter().filter(|f| *f != field).map(|f| format!("{f}=x")).collect::<Vec<_>>().join("&")
            );
            let (parts, _) = post_form(g, &format!("/.portcullis/account/{path}"), &form, &[]).await;
            assert!(
                parts.status == 303 || parts.status.is_client_error(),
                "{path} {field} not UTF-8: {}",
                parts.status
            );
        }
    }
    let alice_after = f.store.account_for_login("alice").await.unwrap().unwrap();
    assert_eq!(alice_before.password_hash, alice_after.password_hash, "alice's password changed");
    assert_eq!(alice_before.account, alice_after.account);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_logs_in_with_the_form_and_out_again() {
    let dir = tempfile::tempdir().unwrap();
    let f = fixture(&format!("sqlite://{}", dir.path().join("a.db").display()), "").await;
    let g = &f.gateway;
    let (parts, body) = common::get(&g.url("/.portcullis/account/login?rd=/api/orders")).await;
    assert_eq!(parts.status, 200);
    let page = String::from_utf8_lossy(&body);
    assert!(
        page.contains("<label for=\"username\">")
            && page.contains("action=\"/.portcullis/account/login?rd=%2Fapi%2Forders\"")
    );

    let (parts, _) = post_form(
        g,
        "/.portcullis/account/login?rd=%2Fapi%2Forders",
        "username=alice&password=wrong+password+here",
        &[],
    )
    .await;
    assert_eq!(parts.status, 303);
    assert!(parts.headers["location"].to_str().unwrap().contains("error=login.failed"));
    assert!(set_cookie(&parts, "__Host-portcullis-account").is_none());

    let body = format!("username=alice&password={}", PASSWORD.replace(' ', "+"));
    let (parts, _) = post_form(
        g,
        "/.portcullis/account/login?rd=%2Fapi%2Forders",
        &body,
        &[("origin", &format!("http://{}", g.addr))],
    )
    .await;
    assert_eq!(parts.status, 303);
    assert_eq!(parts.headers["location"], "/api/orders");
    let cookie = set_cookie(&parts, "__Host-portcullis-account").unwrap();
    let header = parts
        .headers
        .get_all("set-cookie")
        .iter()
        .find(|v| v.to_str().unwrap().starts_with("__Host-portcullis-account="))
        .unwrap();
    for attribute in ["Secure", "HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(header.to_str().unwrap().contains(attribute), "{header:?}");
    }
    let (parts, _) = common::get_with(&g.url("/api/orders"), &[("cookie", &cookie)]).await;
    assert_eq!(parts.status, 200);
    assert!(
        f.seen.lock().unwrap().last().unwrap().get("cookie").is_none(),
        "the session cookie must not reach the upstream"
    );
    let (parts, body) = common::get_with(&g.url("/.portcullis/account/"), &[("cookie", &cookie)]).await;
    assert_eq!(parts.status, 200);
    assert!(String::from_utf8_lossy(&body).contains("Signed in as <strong>alice</strong>"));

    let (parts, _) = post_form(g, "/.portcullis/account/logout", "", &[("cookie", &cookie)]).await;
    assert_eq!(parts.status, 303);
    assert_eq!(set_cookie(&parts, "__Host-portcullis-account").as_deref(), Some("__Host-portcullis-account="));
    let (parts, body) = common::get_with(&g.url("/api/orders"), &[("cookie", &cookie)]).await;
    common::assert_denied(&parts, &body, 401, "session.revoked");
    let (parts, _) = common::get_with(&g.url("/api/orders"), &[("cookie", &cookie), ("accept", "text/html")]).await;
    assert_eq!(parts.status, 302, "a browser whose session ended goes to login");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_failures_lock_the_account_until_the_wait_passes() {
    let dir = tempfile::tempdir().unwrap();
    let f = fixture(&format!("sqlite://{}", dir.path().join("a.db").display()), "").await;
    let g = &f.gateway;
    // Five failures are free; then every attempt waits, a second at first.
    for _ in 0..5 {
        assert_eq!(login(g, "alice", "wrong password again").await.0.status, 401);
    }
    let (parts, body) = login(g, "alice", PASSWORD).await;
    assert_eq!((parts.status.as_u16(), reason(&body)), (429, "login.backoff"), "the right password waits too");
    assert!(parts.headers.contains_key("retry-after"));
    assert_eq!(g.events.last().unwrap().rule.as_deref(), Some("accounts"));
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(login(g, "alice", PASSWORD).await.0.status, 200, "the wait is over");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_administrator_unlocks_a_locked_account() {
    const TOKEN: &str = "an-admin-token-of-enough-length-0123456789";
    let dir = tempfile::tempdir().unwrap();
    let admin = format!("\n[admin]\nbind = \"127.0.0.1:0\"\ntoken = \"{TOKEN}\"\n");
    let f = fixture(&format!("sqlite://{}", dir.path().join("a.db").display()), &admin).await;
    let g = &f.gateway;
    for _ in 0..8 {
        login(g, "alice", "wrong password again").await;
    }
    assert_eq!(login(g, "alice", PASSWORD).await.0.status, 429, "locked for seconds now");
    let addr = g.server.addr("admin").unwrap();
    let req = Request::post(format!("http://{addr}/logins/unlock"))
        .header("authorization", format!("Bearer {TOKEN}"))
        .header("content-type", "application/json")
        .body(common::full_body(json!({"login": "accounts", "account": "alice"}).to_string()))
        .unwrap();
    assert_eq!(common::send(req).await.0.status, 204);
    assert_eq!(login(g, "alice", PASSWORD).await.0.status, 200, "unlocked at once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_follows_its_mode() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("a.db").display());
    let closed = fixture(&url, "").await;
    let (parts, body) = post_json(
        &closed.gateway,
        "/.portcullis/account/register",
        &json!({"username": "bob", "password": NEW_PASSWORD}),
        &[],
    )
    .await;
    assert_eq!((parts.status.as_u16(), reason(&common::json(&body))), (403, "account.registration_refused"));
    drop(closed);

    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("b.db").display());
    let f = fixture(&url, "registration = \"open\"").await;
    let g = &f.gateway;
    let register = |name: &'static str, password: &'static str| async move {
        let (parts, body) =
            post_json(g, "/.portcullis/account/register", &json!({"username": name, "password": password}), &[]).await;
        (parts.status.as_u16(), common::json(&body))
    };
    assert_eq!(register("bob", "password1234").await.1["error"], "account.password_rejected");
    let (status, body) = register("bob", NEW_PASSWORD).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["roles"], json!([]));
    assert_eq!(register("Bob", NEW_PASSWORD).await.1["error"], "account.taken");
    assert_eq!(login(g, "bob", NEW_PASSWORD).await.0.status, 200);
    assert!(g.events.reasons().contains(&"account.registered"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_that_needs_a_second_factor_must_enrol_one_first() {
    let dir = tempfile::tempdir().unwrap();
    let f =
        fixture(&format!("sqlite://{}", dir.path().join("a.db").display()), "mfa_required_roles = [\"admin\"]").await;
    let g = &f.gateway;
    add_account(&f.store, "root", &["admin"]).await;
    let (parts, body) = login(g, "root", PASSWORD).await;
    assert_eq!(parts.status, 200);
    assert_eq!((body["mfa_required"].clone(), body["enrolment_required"].clone()), (json!(true), json!(true)));
    let token = body["mfa_token"].as_str().unwrap().to_owned();
    // The pending login may enrol, and gets its session once it has.
    let (parts, body) = post_json(g, "/.portcullis/account/totp/enrol", &json!({"mfa_token": token}), &[]).await;
    assert_eq!(parts.status, 200, "{}", String::from_utf8_lossy(&body));
    let secret = TotpSecret::from_bytes(base32(common::json(&body)["secret"].as_str().unwrap())).unwrap();
    let (parts, body) = post_json(
        g,
        "/.portcullis/account/totp/confirm",
        &json!({"mfa_token": token, "code": secret.code_at(now())}),
        &[],
    )
    .await;
    assert_eq!(parts.status, 200, "{}", String::from_utf8_lossy(&body));
    let access = common::json(&body)["access_token"].as_str().unwrap().to_owned();
    assert_eq!(api(g, &access).await.0.status, 200);
    let events = g.events.0.lock().unwrap().clone();
    for reason in ["account.mfa_enrolled", "account.login"] {
        let event = events.iter().find(|e| e.reason == reason).unwrap_or_else(|| panic!("no {reason}"));
        assert_eq!(event.action, portcullis_policy::event::Action::Allow, "{reason}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hash_with_old_parameters_is_upgraded_at_login() {
    let dir = tempfile::tempdir().unwrap();
    let f = fixture(&format!("sqlite://{}", dir.path().join("a.db").display()), "hash_iterations = 3").await;
    let before = f.store.account_for_login("alice").await.unwrap().unwrap().password_hash.unwrap();
    assert!(before.contains("t=2"), "{before}");
    assert_eq!(login(&f.gateway, "alice", PASSWORD).await.0.status, 200);
    let after = f.store.account_for_login("alice").await.unwrap().unwrap().password_hash.unwrap();
    assert!(after.contains("t=3"), "{after}");
    assert_eq!(login(&f.gateway, "alice", PASSWORD).await.0.status, 200, "the new hash verifies");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_keeps_at_most_fifty_live_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let f = fixture(&format!("sqlite://{}", dir.path().join("a.db").display()), "").await;
    let store = &f.store;
    let id = store.account_for_login("alice").await.unwrap().unwrap().account.id;
    // Forty-nine sessions straight in the store, then two logins.
    for _ in 0..portcullis::accounts::MAX_SESSIONS - 1 {
        store.create_session(&id, SystemTime::now() + Duration::from_secs(3600), SystemTime::now()).await.unwrap();
    }
    let (first, first_refresh) = tokens(&f.gateway, "alice").await;
    let (_, _) = tokens(&f.gateway, "alice").await;
    let live = |s: &Vec<portcullis::store::sessions::Session>| s.iter().filter(|s| s.revoked_at.is_none()).count();
    let sessions = store.account_sessions(&id).await.unwrap();
    assert_eq!(live(&sessions), portcullis::accounts::MAX_SESSIONS);
    assert_eq!(sessions.iter().filter(|s| s.revoked_reason.as_deref() == Some("too_many")).count(), 1);
    // The oldest (made in the store) ended, not the logins'.
    assert_eq!(api(&f.gateway, &first).await.0.status, 200);
    assert_eq!(refresh(&f.gateway, &first_refresh).await.0.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invite_registers_one_account_with_its_roles() {
    let dir = tempfile::tempdir().unwrap();
    let f = fixture(&format!("sqlite://{}", dir.path().join("a.db").display()), "registration = \"invite\"").await;
    let g = &f.gateway;
    let now = SystemTime::now();
    let (_, code) = f.store.create_invite(&["viewer".to_owned()], now + Duration::from_secs(3600), now).await.unwrap();
    let register = |body: Value| async move {
        let (parts, body) = post_json(g, "/.portcullis/account/register", &body, &[]).await;
        (parts.status.as_u16(), common::json(&body))
    };
    let (status, body) = register(json!({"username": "carol", "password": NEW_PASSWORD})).await;
    assert_eq!((status, body["error"].as_str().unwrap()), (403, "account.registration_refused"), "no code");
    let (status, body) = register(json!({"username": "carol", "password": NEW_PASSWORD, "invite": "pci_forged"})).await;
    assert_eq!((status, body["error"].as_str().unwrap()), (403, "account.registration_refused"), "a forged code");
    let (status, body) =
        register(json!({"username": "carol", "password": NEW_PASSWORD, "invite": code.expose()})).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["roles"], json!(["viewer"]));
    let (status, _) = register(json!({"username": "dave", "password": NEW_PASSWORD, "invite": code.expose()})).await;
    assert_eq!(status, 403, "the code works once");
    let (parts, body) = login(g, "carol", NEW_PASSWORD).await;
    assert_eq!(parts.status, 200);
    let seen = api(g, body["access_token"].as_str().unwrap()).await;
    assert_eq!(seen.0.status, 200);
    assert_eq!(f.seen.lock().unwrap().last().unwrap()["x-portcullis-roles"], "viewer");
}
