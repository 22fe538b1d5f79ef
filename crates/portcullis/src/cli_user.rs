//! `portcullis user add|list|set-roles|disable|enable|reset-mfa|unlock|delete`
//! and `portcullis invite create`: the built-in accounts, administered on
//! the store named by the configuration's `[state] store`.
//!
//! Defends against: passwords in shell history and process lists (a
//! password is read from stdin when it is not a terminal, or from a prompt
//! without echo, never from an argument), weak passwords (the policy of
//! `portcullis_policy::password` refuses them before anything is stored),
//! access outliving a decision (disabling, deleting and changing roles
//! revoke the account's sessions), and changes nobody can trace (every
//! change is a security event, `listener` `"cli"`, in the configuration's
//! `[events]` sinks; a `stdout` sink is written to stderr here, and a row of
//! the audit trail, `docs/audit.md`).
//!
//! Nothing prints a password, hash, token or recovery code; `invite create`
//! prints its code once, alone on stdout, so it can be piped. Exit codes: 0
//! done, 1 failed (store, unknown account, refused password, invalid input),
//! 2 bad usage or configuration.
//!
//! Deployment caveat: `user unlock` clears login-failure counts where they
//! live: in Redis with `[state] shared = "redis://…"`, else in the running
//! gateway's memory, reached through its admin API (`[admin]`); with neither,
//! the counts are the running gateway's alone and expire after their
//! `[login.NAME] window`.

use std::future::Future;
use std::io::{BufRead, IsTerminal};
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use portcullis_layers::login::{LoginStore, unlock_account};
use portcullis_policy::SecurityEvent;

use crate::auth::password::{PasswordError, PasswordHasher};
use crate::cli_apikey::{aligned, audit, roles_text, time_text, with_store};
use crate::config::Config;
use crate::config::accounts::{Accounts, Registration};
use crate::config::state::Shared;
use crate::store::Store;
use crate::store::accounts::{Account, AccountError, NewAccount};
use crate::store::sessions::RevokeReason;

/// The reason codes of the events these commands emit (defence `account`).
pub const EVENT_CODES: &[&str] = &[
    "account.created",
    "account.roles_changed",
    "account.disabled",
    "account.enabled",
    "account.mfa_reset",
    "account.unlocked",
    "account.deleted",
    "account.invite_created",
];

/// The longest password line read from stdin: the policy's 128 characters
/// of up to 4 bytes, and room for a line ending.
const MAX_PASSWORD_LINE: u64 = 1024;

/// `user add`: creates an account, with a password read from stdin or a
/// prompt unless `no_password` (an account that cannot log in with a
/// password until one is set).
#[must_use]
pub fn add(config: &Path, name: &str, email: Option<&str>, roles: &[String], no_password: bool) -> ExitCode {
    with_store(config, |store, config| async move {
        // A taken name is told before the password is asked for (the
        // store's unique constraint still decides a race).
        if !name.contains('@') && store.account_for_login(name).await.map_err(|e| e.to_string())?.is_some() {
            return Err(AccountError::UsernameTaken.to_string());
        }
        // Asked once the configuration and the store are known good. Reading
        // stdin blocks this command's only thread, which has nothing else to do.
        let password = if no_password { None } else { Some(read_password(name)?) };
        let settings = accounts_settings(&config);
        let hash = match &password {
            Some(password) => Some(hasher(&settings).await?.hash_new(password).await.map_err(|e| refused(&e))?),
            None => None,
        };
        let new = NewAccount { username: name, email, password_hash: hash.as_deref(), roles };
        let account = store.create_account(&new, SystemTime::now()).await.map_err(|e| e.to_string())?;
        let detail = format!(
            "account {} ({}) created, roles: {}, password: {}",
            account.id,
            account.username,
            roles_text(&account.roles),
            if account.has_password { "set" } else { "none" }
        );
        event(&config, "user add", "account.created", detail.clone())?;
        let audited = serde_json::json!({
            "username": account.username,
            "roles": account.roles,
            "password": account.has_password,
        });
        audit(&store, &config, "user.add", &account.id, audited).await;
        eprintln!("{detail}");
        Ok(())
    })
}

/// `user list`: every account as a table (or JSON), never a hash.
#[must_use]
pub fn list(config: &Path, json: bool) -> ExitCode {
    with_store(config, |store, _| async move {
        let accounts = store.list_accounts().await.map_err(|e| e.to_string())?;
        let mut rows = Vec::with_capacity(accounts.len());
        for account in accounts {
            let mfa = second_factors(&store, &account.id).await?;
            rows.push((account, mfa));
        }
        if json {
            let values: Vec<serde_json::Value> = rows.iter().map(|(a, mfa)| json_value(a, mfa)).collect();
            println!("{}", serde_json::Value::Array(values));
        } else {
            print!("{}", table(&rows));
        }
        Ok(())
    })
}

/// `user set-roles`: replaces the account's roles and ends its sessions, so
/// the new roles apply from its next login.
#[must_use]
pub fn set_roles(config: &Path, name: &str, roles: &[String]) -> ExitCode {
    with_account(config, name, |store, config, account| async move {
        let now = SystemTime::now();
        store.set_account_roles(&account.id, roles, now).await.map_err(|e| e.to_string())?;
        let ended = revoke(&store, &account.id, RevokeReason::Admin).await?;
        let detail = format!(
            "account {} ({}) roles: {} -> {}, {ended} session(s) revoked",
            account.id,
            account.username,
            roles_text(&account.roles),
            roles_text(roles)
        );
        event(&config, "user set-roles", "account.roles_changed", detail.clone())?;
        let audited = serde_json::json!({
            "username": account.username,
            "from": account.roles,
            "to": roles,
            "sessions_revoked": ended,
        });
        audit(&store, &config, "user.set_roles", &account.id, audited).await;
        eprintln!("{detail}");
        Ok(())
    })
}

/// `user disable`: the account can no longer log in; its sessions end.
#[must_use]
pub fn disable(config: &Path, name: &str) -> ExitCode {
    with_account(config, name, |store, config, account| async move {
        store.set_account_disabled(&account.id, true, SystemTime::now()).await.map_err(|e| e.to_string())?;
        let ended = revoke(&store, &account.id, RevokeReason::Disabled).await?;
        let detail = format!("account {} ({}) disabled, {ended} session(s) revoked", account.id, account.username);
        event(&config, "user disable", "account.disabled", detail.clone())?;
        let audited = serde_json::json!({ "username": account.username, "sessions_revoked": ended });
        audit(&store, &config, "user.disable", &account.id, audited).await;
        eprintln!("{detail}");
        Ok(())
    })
}

/// `user enable`: the account may log in again (its old sessions stay ended).
#[must_use]
pub fn enable(config: &Path, name: &str) -> ExitCode {
    with_account(config, name, |store, config, account| async move {
        store.set_account_disabled(&account.id, false, SystemTime::now()).await.map_err(|e| e.to_string())?;
        let detail = format!("account {} ({}) enabled", account.id, account.username);
        event(&config, "user enable", "account.enabled", detail.clone())?;
        audit(&store, &config, "user.enable", &account.id, serde_json::json!({ "username": account.username })).await;
        eprintln!("{detail}");
        Ok(())
    })
}

/// `user reset-mfa`: removes every second factor (TOTP, recovery codes,
/// passkeys) and ends the account's sessions: whoever holds them may be the
/// one who took the lost device.
#[must_use]
pub fn reset_mfa(config: &Path, name: &str) -> ExitCode {
    with_account(config, name, |store, config, account| async move {
        store.reset_mfa(&account.id).await.map_err(|e| e.to_string())?;
        let ended = revoke(&store, &account.id, RevokeReason::Admin).await?;
        let detail =
            format!("account {} ({}) second factors removed, {ended} session(s) revoked", account.id, account.username);
        event(&config, "user reset-mfa", "account.mfa_reset", detail.clone())?;
        let audited = serde_json::json!({ "username": account.username, "sessions_revoked": ended });
        audit(&store, &config, "user.reset_mfa", &account.id, audited).await;
        eprintln!("{detail}");
        Ok(())
    })
}

/// `user unlock`: forgets the login failures counted for the account's
/// username and email under every `[login.NAME]` of the configuration (see
/// the module's deployment caveat for where they live).
#[must_use]
pub fn unlock(config: &Path, name: &str) -> ExitCode {
    with_account(config, name, |accounts, config, account| async move {
        // Every [login.NAME], and the gateway's own account login.
        let logins: Vec<String> = config
            .logins
            .keys()
            .cloned()
            .chain(config.auth.accounts.is_some().then(|| crate::accounts::LOGIN_NAME.to_owned()))
            .collect();
        if logins.is_empty() {
            eprintln!("no [login.NAME] section is configured: there are no login-failure counts to clear");
            return Ok(());
        }
        let names: Vec<&str> = std::iter::once(account.username.as_str()).chain(account.email.as_deref()).collect();
        let cleared = match (&config.state.shared, &config.admin) {
            (Shared::Redis(url), _) => {
                let redis = crate::shared::RedisState::connect(url.expose()).await.map_err(|e| e.to_string())?;
                let store: Arc<dyn LoginStore> = Arc::new(redis);
                for login in &logins {
                    for account in &names {
                        unlock_account(store.as_ref(), login, account).await.map_err(|e| e.to_string())?;
                    }
                }
                "in Redis"
            }
            (Shared::Memory, Some(admin)) => {
                for login in &logins {
                    for account in &names {
                        admin_unlock(admin, login, account).await?;
                    }
                }
                "in the running gateway (admin API)"
            }
            (Shared::Memory, None) => {
                return Err("with [state] shared = \"memory\" login-failure counts live in the running gateway's \
                            memory: configure [admin] (bind and token) so this command can reach it, or share \
                            state through Redis; the counts also expire after their [login.NAME] window"
                    .into());
            }
        };
        let audited = serde_json::json!({ "username": account.username, "logins": logins });
        let logins = logins.join(", ");
        let detail = format!(
            "account {} ({}) login failures cleared {cleared} under [login.{logins}]",
            account.id, account.username
        );
        event(&config, "user unlock", "account.unlocked", detail.clone())?;
        // Through the admin API, the API records it (`login.unlock`).
        if matches!(config.state.shared, Shared::Redis(_)) {
            audit(&accounts, &config, "user.unlock", &account.id, audited).await;
        }
        eprintln!("{detail}");
        Ok(())
    })
}

/// `user delete`: removes the account, its sessions and second factors.
#[must_use]
pub fn delete(config: &Path, name: &str) -> ExitCode {
    with_account(config, name, |store, config, account| async move {
        // Revoked first, so the sessions end even if the delete fails.
        let ended = revoke(&store, &account.id, RevokeReason::Admin).await?;
        store.delete_account(&account.id).await.map_err(|e| e.to_string())?;
        let detail = format!("account {} ({}) deleted, {ended} session(s) revoked", account.id, account.username);
        event(&config, "user delete", "account.deleted", detail.clone())?;
        let audited = serde_json::json!({ "username": account.username, "sessions_revoked": ended });
        audit(&store, &config, "user.delete", &account.id, audited).await;
        eprintln!("{detail}");
        Ok(())
    })
}

/// `invite create`: a single-use invite giving `roles`, printed once on
/// stdout and nothing else there.
#[must_use]
pub fn create_invite(config: &Path, roles: &[String], expires_in: Duration) -> ExitCode {
    with_store(config, |store, config| async move {
        let registration = config.auth.accounts.as_ref().map(|a| a.registration);
        if registration != Some(Registration::Invite) {
            let shown = registration.map_or("no [auth.accounts]", Registration::as_str);
            eprintln!(
                "note: registration is {shown:?}: the code works with the store's invite registration, \
                 and the gateway takes invites only with registration = \"invite\""
            );
        }
        let now = SystemTime::now();
        let (invite, code) = store.create_invite(roles, now + expires_in, now).await.map_err(|e| e.to_string())?;
        let detail = format!(
            "invite {} created, roles: {}, expires: {}",
            invite.id,
            roles_text(&invite.roles),
            humantime::format_rfc3339_seconds(invite.expires_at)
        );
        event(&config, "invite create", "account.invite_created", detail.clone())?;
        let audited = serde_json::json!({
            "roles": invite.roles,
            "expires_at": humantime::format_rfc3339_seconds(invite.expires_at).to_string(),
        });
        audit(&store, &config, "invite.create", &invite.id, audited).await;
        println!("{}", code.expose());
        eprintln!("{detail}; copy the code now: it will not be shown again");
        Ok(())
    })
}

/// The password for `name`: a prompt without echo, asked twice, when stdin
/// is a terminal; else the first line of stdin (without its line ending).
fn read_password(name: &str) -> Result<String, String> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        let first = rpassword::prompt_password(format!("Password for {name}: ")).map_err(|e| e.to_string())?;
        let again = rpassword::prompt_password("The same password again: ").map_err(|e| e.to_string())?;
        if first != again {
            return Err("the two passwords differ; nothing was changed".into());
        }
        return Ok(first);
    }
    let mut line = Vec::new();
    std::io::Read::take(stdin.lock(), MAX_PASSWORD_LINE)
        .read_until(b'\n', &mut line)
        .map_err(|e| format!("cannot read the password from stdin: {e}"))?;
    if line.last() == Some(&b'\n') {
        line.pop();
        if line.last() == Some(&b'\r') {
            line.pop();
        }
    } else if line.len() as u64 >= MAX_PASSWORD_LINE {
        return Err("the password on stdin is too long (at most 128 characters)".into());
    }
    String::from_utf8(line).map_err(|_| "the password on stdin is not UTF-8".into())
}

/// The configured `[auth.accounts]`, or its defaults.
fn accounts_settings(config: &Config) -> Accounts {
    config.auth.accounts.clone().unwrap_or_default()
}

async fn hasher(settings: &Accounts) -> Result<PasswordHasher, String> {
    PasswordHasher::new(settings.hash, settings.hash_slots(), settings.hash_queue_timeout)
        .await
        .map_err(|e| format!("cannot start password hashing: {e}"))
}

fn refused(e: &PasswordError) -> String {
    match e {
        PasswordError::Rejected(why) => format!("password refused: {why}; nothing was changed"),
        other => other.to_string(),
    }
}

async fn revoke(store: &Store, account_id: &str, reason: RevokeReason) -> Result<u64, String> {
    store.revoke_account_sessions(account_id, None, reason, SystemTime::now()).await.map_err(|e| e.to_string())
}

/// Writes the command's event to the configured sinks now.
fn event(config: &Config, command: &str, reason: &'static str, detail: String) -> Result<(), String> {
    let id = uuid::Uuid::new_v4().to_string();
    let event = SecurityEvent::command(&id, command, "account", reason, detail, SystemTime::now());
    crate::events::write_now(&config.events, &event).map_err(|e| format!("the change is made, but its event: {e}"))
}

/// Asks the running gateway's admin API to forget `account`'s failures.
async fn admin_unlock(admin: &crate::config::admin::Admin, login: &str, account: &str) -> Result<(), String> {
    let addr = if admin.bind.ip().is_unspecified() {
        let loopback =
            if admin.bind.is_ipv4() { IpAddr::from([127, 0, 0, 1]) } else { IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1]) };
        SocketAddr::new(loopback, admin.bind.port())
    } else {
        admin.bind
    };
    let body = serde_json::json!({ "login": login, "account": account }).to_string();
    let request = http::Request::post(format!("http://{addr}/logins/unlock"))
        .header(http::header::AUTHORIZATION, format!("Bearer {}", admin.token.expose()))
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    let client = Client::builder(TokioExecutor::new()).build_http();
    let unreachable = |e: &dyn std::fmt::Display| format!("admin API at {addr}: {e}");
    let response = tokio::time::timeout(Duration::from_secs(10), client.request(request))
        .await
        .map_err(|_| unreachable(&"no answer within 10s"))?
        .map_err(|e| unreachable(&e))?;
    let status = response.status();
    if status == http::StatusCode::NO_CONTENT {
        return Ok(());
    }
    let body = response.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    Err(format!("admin API at {addr} answered {status}: {}", String::from_utf8_lossy(&body)))
}

/// Which second factors the account has: `totp` (`totp(pending)` before
/// its first code), `passkey`.
async fn second_factors(store: &Store, account_id: &str) -> Result<Vec<&'static str>, String> {
    let mut out = Vec::new();
    match store.totp(account_id).await.map_err(|e| e.to_string())? {
        Some(totp) if totp.confirmed_at.is_some() => out.push("totp"),
        Some(_) => out.push("totp(pending)"),
        None => {}
    }
    if !store.passkeys(account_id).await.map_err(|e| e.to_string())?.is_empty() {
        out.push("passkey");
    }
    Ok(out)
}

/// Loads the configuration, opens its store, finds the account `name`
/// (a username, or an email when it has an `@`) and runs `op` on it.
fn with_account<F, Fut>(path: &Path, name: &str, op: F) -> ExitCode
where
    F: FnOnce(Store, Config, Account) -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    with_store(path, |store, config| async move {
        let record = store.account_for_login(name).await.map_err(|e| e.to_string())?;
        let Some(record) = record else {
            return Err(format!("no account named {:?}", crate::store::accounts::fold_username(name)));
        };
        op(store, config, record.account).await
    })
}

fn json_value(account: &Account, mfa: &[&str]) -> serde_json::Value {
    let time = |at: Option<SystemTime>| at.map(|at| humantime::format_rfc3339_seconds(at).to_string());
    serde_json::json!({
        "id": account.id,
        "username": account.username,
        "email": account.email,
        "roles": account.roles,
        "password": account.has_password,
        "mfa": mfa,
        "created_at": time(Some(account.created_at)),
        "disabled_at": time(account.disabled_at),
    })
}

/// An aligned text table with a header row.
fn table(rows: &[(Account, Vec<&str>)]) -> String {
    let header = ["ID", "USERNAME", "EMAIL", "ROLES", "PASSWORD", "MFA", "CREATED", "DISABLED"];
    let cells: Vec<[String; 8]> = rows
        .iter()
        .map(|(a, mfa)| {
            [
                a.id.clone(),
                a.username.clone(),
                a.email.clone().unwrap_or_else(|| "-".into()),
                roles_text(&a.roles),
                if a.has_password { "set" } else { "none" }.to_owned(),
                if mfa.is_empty() { "-".to_owned() } else { mfa.join(",") },
                time_text(Some(a.created_at), "-"),
                time_text(a.disabled_at, "-"),
            ]
        })
        .collect();
    aligned(&header, &cells)
}
