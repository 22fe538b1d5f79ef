//! The passkey endpoints under `/.portcullis/account/passkeys/`:
//!
//! | path | answers |
//! |---|---|
//! | `POST /passkeys/register/start` | signed in: options for `navigator.credentials.create()` and a ceremony |
//! | `POST /passkeys/register/finish` | the browser's answer: the passkey is stored |
//! | `POST /passkeys/login/start` | options for `navigator.credentials.get()`: the pending login's account's passkeys (second factor), else any passkey (passwordless) |
//! | `POST /passkeys/login/finish` | the browser's answer: the session |
//!
//! Decision rules:
//! - The ceremony (webauthn-rs's state, the account, what it is for) is
//!   sealed with the cookie key for five minutes and given to the page as
//!   `ceremony`; it comes back with the answer. It is single use: a finish
//!   puts it on the revocation list, so a captured answer cannot be replayed
//!   with it.
//! - A passwordless login (`passkeys = "passwordless"`, no login pending)
//!   asks for any discoverable passkey: the passkey names its account, so no
//!   username is asked and none can be probed.
//! - A refused answer is `account.passkey_failed` and counts as a failed
//!   login for the account (second factor) or the address (passwordless).

use std::time::{Duration, SystemTime};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use axum::routing::post;
use http::StatusCode;
use portcullis_layers::refusal::record;
use portcullis_policy::{Denied, Reason};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::routes::{Input, account_id, input, is_form, json_response, logged_in, pending_of, refuse, signed_in};
use super::{AccountService, PREFIX, unavailable};
use crate::store::accounts::{Account, AccountError};

/// The sealed ceremony's name (the AEAD's associated data).
const CEREMONY: &str = "portcullis-passkey-ceremony";
/// How long a ceremony may take (the browsers' prompt timeout).
const CEREMONY_TTL: Duration = Duration::from_secs(300);
/// Longest passkey name.
const MAX_NAME: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Purpose {
    Register,
    SecondFactor,
    Passwordless,
}

#[derive(Debug, Serialize, Deserialize)]
struct Ceremony {
    purpose: Purpose,
    /// The account (none for a passwordless login).
    acct: Option<String>,
    /// webauthn-rs's state.
    state: String,
    /// Factors done before (a second factor's password).
    #[serde(default)]
    amr: Vec<String>,
    #[serde(default)]
    rd: String,
}

/// The routes, with their full paths.
pub fn router(service: AccountService) -> Router {
    let path = |p: &str| format!("{PREFIX}/passkeys{p}");
    Router::new()
        .route(&path("/register/start"), post(register_start))
        .route(&path("/register/finish"), post(register_finish))
        .route(&path("/login/start"), post(login_start))
        .route(&path("/login/finish"), post(login_finish))
        .with_state(service)
}

fn failed(detail: impl Into<String>) -> Denied {
    Denied::new(Reason::AccountPasskeyFailed).with_detail(detail.into())
}

fn passkeys(service: &AccountService) -> Result<&super::passkeys::Passkeys, Denied> {
    service.passkeys().ok_or_else(|| failed("passkeys are off ([auth.accounts] passkeys)"))
}

fn internal(e: impl std::fmt::Display) -> Denied {
    Denied::new(Reason::GatewayInternal).with_detail(e.to_string())
}

/// The options and the sealed ceremony, as the page receives them.
fn started(service: &AccountService, options: &serde_json::Value, ceremony: &Ceremony) -> Result<Response, Denied> {
    let sealed = service.key().seal_value(CEREMONY, ceremony, SystemTime::now() + CEREMONY_TTL).map_err(internal)?;
    Ok(json_response(StatusCode::OK, &json!({ "options": options, "ceremony": sealed })))
}

/// Opens the ceremony the answer comes with and spends it.
async fn spend(service: &AccountService, input: &Input, purpose: Purpose) -> Result<Ceremony, Denied> {
    let sealed = input.required("ceremony", 256 * 1024)?;
    let ceremony: Ceremony = service
        .key()
        .open_value(CEREMONY, sealed, SystemTime::now())
        .map_err(|_| failed("no passkey ceremony in progress, or it expired"))?;
    if ceremony.purpose != purpose {
        return Err(failed("a ceremony of another kind"));
    }
    let id = portcullis_policy::principal::fingerprint(sealed.as_bytes());
    let revocations = service.revocations();
    match revocations.is_revoked(&format!("passkey:{id}")).await {
        Ok(false) => {}
        Ok(true) => return Err(failed("the ceremony was already used")),
        Err(e) => return Err(Denied::new(Reason::SessionUnavailable).with_detail(format!("revocation list: {e}"))),
    }
    revocations
        .revoke(&format!("passkey:{id}"), SystemTime::now() + CEREMONY_TTL)
        .await
        .map_err(|e| Denied::new(Reason::SessionUnavailable).with_detail(format!("revocation list: {e}")))?;
    Ok(ceremony)
}

/// The browser's answer, as the JSON text the page posts.
fn answer(input: &Input) -> Result<&str, Denied> {
    input.required("credential", super::passkeys::MAX_RESPONSE_BYTES)
}

async fn enabled_account(service: &AccountService, id: &str) -> Result<Account, Denied> {
    service
        .store()
        .account(id)
        .await
        .map_err(unavailable)?
        .filter(|a| a.disabled_at.is_none())
        .ok_or_else(|| failed("account disabled or deleted"))
}

async fn register_start(State(service): State<AccountService>, req: Request) -> Response {
    let result = async {
        let input = input(&service, req).await?;
        let (principal, _) = signed_in(&service, &input.headers).await?;
        let account = enabled_account(&service, account_id(&principal)).await?;
        let existing = service.store().passkeys(&account.id).await.map_err(unavailable)?;
        let (options, state) =
            passkeys(&service)?.start_registration(&account.id, &account.username, &existing).map_err(internal)?;
        let ceremony =
            Ceremony { purpose: Purpose::Register, acct: Some(account.id), state, amr: Vec::new(), rd: String::new() };
        started(&service, &options, &ceremony)
    }
    .await;
    result.unwrap_or_else(|denied| portcullis_layers::deny(denied).map(Body::new))
}

async fn register_finish(State(service): State<AccountService>, req: Request) -> Response {
    let result = async {
        let input = input(&service, req).await?;
        let (principal, _) = signed_in(&service, &input.headers).await?;
        let ceremony = spend(&service, &input, Purpose::Register).await?;
        let id = account_id(&principal).to_owned();
        if ceremony.acct.as_deref() != Some(id.as_str()) {
            return Err(failed("the ceremony was started by another account"));
        }
        let name = input.field("name", MAX_NAME)?.unwrap_or("passkey").to_owned();
        let new = passkeys(&service)?
            .finish_registration(&ceremony.state, answer(&input)?.as_bytes())
            .map_err(|e| failed(e.to_string()))?;
        service.store().add_passkey(&id, &new.credential_id, &name, &new.passkey, SystemTime::now()).await.map_err(
            |e| match e {
                AccountError::PasskeyTaken => failed("the passkey is already registered"),
                AccountError::InvalidPasskey(why) => Denied::new(Reason::AccountInvalid).with_detail(why),
                AccountError::Store(e) => unavailable(e),
                other => internal(other),
            },
        )?;
        let mut response = json_response(StatusCode::OK, &json!({ "registered": true, "name": name }));
        record(
            &mut response,
            Denied::new(Reason::AccountPasskeyRegistered).with_detail(format!(
                "account {id}: passkey {} ({name})",
                portcullis_policy::principal::fingerprint(new.credential_id.as_bytes())
            )),
        );
        Ok::<_, Denied>(response)
    }
    .await;
    result.unwrap_or_else(|denied| portcullis_layers::deny(denied).map(Body::new))
}

async fn login_start(State(service): State<AccountService>, req: Request) -> Response {
    let result = async {
        let input = input(&service, req).await?;
        let keys = passkeys(&service)?;
        let now = SystemTime::now();
        if let Ok(pending) = pending_of(&service, &input, now) {
            let stored = service.store().passkeys(&pending.acct).await.map_err(unavailable)?;
            if stored.is_empty() {
                return Err(failed("the account has no passkey"));
            }
            let (options, state) = keys.start_authentication(&stored).map_err(internal)?;
            let ceremony = Ceremony {
                purpose: Purpose::SecondFactor,
                acct: Some(pending.acct),
                state,
                amr: pending.amr,
                rd: pending.rd,
            };
            return started(&service, &options, &ceremony);
        }
        if service.settings().passkeys != crate::config::accounts::Passkeys::Passwordless {
            return Err(failed("passkeys are a second factor here: log in with the password first"));
        }
        let rd = input.field("rd", 2048)?.unwrap_or_default().to_owned();
        let (options, state) = keys.start_discoverable(false).map_err(internal)?;
        started(
            &service,
            &options,
            &Ceremony { purpose: Purpose::Passwordless, acct: None, state, amr: Vec::new(), rd },
        )
    }
    .await;
    result.unwrap_or_else(|denied| portcullis_layers::deny(denied).map(Body::new))
}

async fn login_finish(State(service): State<AccountService>, req: Request) -> Response {
    let form = is_form(&req);
    let result = async {
        let input = input(&service, req).await?;
        let keys = passkeys(&service)?;
        let now = SystemTime::now();
        let sealed = input.required("ceremony", 256 * 1024)?;
        let purpose = service
            .key()
            .open_value::<Ceremony>(CEREMONY, sealed, now)
            .map(|c| c.purpose)
            .map_err(|_| failed("no passkey ceremony in progress, or it expired"))?;
        let ceremony = spend(&service, &input, purpose).await?;
        let credential = answer(&input)?;
        let (account, used) = match (ceremony.purpose, &ceremony.acct) {
            (Purpose::SecondFactor, Some(id)) => {
                let account = enabled_account(&service, id).await?;
                let stored = service.store().passkeys(id).await.map_err(unavailable)?;
                match keys.finish_authentication(&ceremony.state, credential.as_bytes(), &stored) {
                    Ok(used) => (account, used),
                    Err(e) => {
                        let counted = service.failed(Some(&account.username), input.ip, "passkey refused").await;
                        return Err(failed(format!("{e}; {}", counted.detail.unwrap_or_default())));
                    }
                }
            }
            (Purpose::Passwordless, None) => {
                let (service, ip) = (&service, input.ip);
                let refused = |e: String| async move {
                    let counted = service.failed(None, ip, "passkey refused").await;
                    failed(format!("{e}; {}", counted.detail.unwrap_or_default()))
                };
                let discovered = match keys.discovered(credential.as_bytes()) {
                    Ok(d) => d,
                    Err(e) => return Err(refused(e.to_string()).await),
                };
                let Some(stored) = service.store().passkey(&discovered.credential_id).await.map_err(unavailable)?
                else {
                    return Err(refused("an unknown passkey".to_owned()).await);
                };
                let used = match keys.finish_discoverable(&ceremony.state, credential.as_bytes(), &stored) {
                    Ok(used) => used,
                    Err(e) => return Err(refused(e.to_string()).await),
                };
                (enabled_account(service, &used.account_id).await?, used)
            }
            _ => return Err(failed("a ceremony of another kind")),
        };
        if let Some(updated) = &used.updated_passkey {
            service.store().update_passkey(&used.credential_id, updated, now).await.map_err(unavailable)?;
        }
        let mut amr = ceremony.amr.clone();
        amr.push("hwk".to_owned());
        let issued = service.issue(&account, &amr, now).await?;
        Ok::<_, Denied>(logged_in(&service, &input, &account, &issued, &amr, &ceremony.rd))
    }
    .await;
    result.unwrap_or_else(|denied| refuse(form, super::LOGIN_PATH, denied))
}
