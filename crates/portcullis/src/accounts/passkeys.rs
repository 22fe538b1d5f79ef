//! Passkeys (WebAuthn) for built-in accounts: registering them and logging in
//! with them, on `webauthn-rs` (pure Rust, RustCrypto; no OpenSSL).
//!
//! Defends against: phished logins (a passkey signs the page's origin, so a
//! look-alike site gets nothing usable), replayed or forged assertions (each
//! ceremony has a fresh challenge; webauthn-rs checks the origin, the relying
//! party id hash, user verification, the signature and a non-decreasing
//! signature counter), one account's passkey logging into another (an
//! assertion must come from a credential the caller passed as the account's),
//! a ceremony's state reused for another kind of ceremony (states are tagged
//! and a tag mismatch is refused), and oversized or malformed browser answers
//! (refused before parsing above [`MAX_RESPONSE_BYTES`]; every parse failure is
//! a typed [`PasskeyError`], never a panic).
//!
//! Decision rules:
//! - The relying party id is the host of the gateway's public origin, which
//!   must be `https://host[:port]` (or `http://localhost[:port]`, which
//!   browsers treat as secure, for tests). IP addresses are refused: WebAuthn
//!   relying party ids are domains. Changing the host later orphans every
//!   registered passkey.
//! - User verification (PIN, biometrics) is required, so a passkey is a whole
//!   second factor on its own and can also replace the password.
//! - The WebAuthn user handle is the account id (16 random bytes, the 32 hex
//!   digits of the store); a username-less login names its account only
//!   through it, and the stored credential must belong to that same account.
//! - Registration asks for a discoverable credential ("preferred") unless
//!   [`Passkeys::prefer_discoverable`] turns that off: without one, a
//!   username-less login cannot find the credential.
//! - Errors never carry credential ids, public keys, signatures or client
//!   data: only fixed texts ([`Rejection`]) that are safe to log.
//!
//! Deployment caveats:
//! - The ceremony state is handed to the caller as a string to keep in a
//!   cookie (webauthn-rs's `danger-allow-state-serialisation`). It must be
//!   sealed with authenticated encryption (or at least a MAC): it holds the
//!   challenge and, for a login, the credentials allowed to answer, so a
//!   client that could edit it could choose both and log in as anyone.
//! - Sealing stops forgery, not replay: a captured (state, answer) pair stays
//!   valid until the seal expires (pinned by a test below). Give the seal a
//!   short lifetime (the browser prompt times out after 5 minutes) and make
//!   it single-use where the caller can (e.g. remember the challenge,
//!   `publicKey.challenge` in the options, as used until then).
//! - webauthn-rs logs whole responses and states at `debug`/`trace` level:
//!   keep `webauthn_rs_core` at `info` or above in production log filters.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use webauthn_rs::prelude::{
    DiscoverableAuthentication, DiscoverableKey, Passkey, PasskeyAuthentication, PasskeyRegistration,
    PublicKeyCredential, RegisterPublicKeyCredential, Url, Uuid, Webauthn, WebauthnBuilder, WebauthnError,
};

use crate::store::mfa::Passkey as StoredPasskey;

/// The largest browser answer accepted; real ones are a few KiB (an
/// attestation with a certificate chain stays well under this).
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024;
/// The largest ceremony state accepted. States come back sealed by the
/// caller, but an authentication state copies every allowed credential.
pub const MAX_STATE_BYTES: usize = 256 * 1024;
/// WebAuthn credential ids are at most 1023 bytes (the store's limit too).
const MAX_CREDENTIAL_ID_BYTES: usize = 1023;

/// A configured relying party: the one place WebAuthn ceremonies start and finish.
#[derive(Debug, Clone)]
pub struct Passkeys {
    webauthn: Webauthn,
    prefer_discoverable: bool,
}

/// Why a passkey operation failed.
#[derive(Debug, thiserror::Error)]
pub enum PasskeyError {
    /// The relying party cannot be configured (the gateway's fault).
    #[error("passkey configuration: {0}")]
    Config(&'static str),
    /// The browser's answer was refused (the client's fault). Safe to log.
    #[error("passkey refused: {0}")]
    Rejected(#[from] Rejection),
    /// The ceremony state is unreadable or belongs to another kind of ceremony
    /// (the client replaying a cookie, or a caller bug).
    #[error("passkey ceremony state is missing, unreadable or from another ceremony")]
    State,
    /// A passkey from the store cannot be read (the gateway's fault: a
    /// corrupt row, or a row from an incompatible webauthn-rs version).
    #[error("stored passkey unreadable: {0}")]
    Stored(&'static str),
}

/// Why a browser's answer was refused. Texts are fixed: never credential
/// material, so they can go into logs and security events as they are.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// Larger than [`MAX_RESPONSE_BYTES`].
    #[error("response larger than 64 KiB")]
    TooLarge,
    /// Not the JSON of a WebAuthn credential.
    #[error("response is not a WebAuthn credential")]
    Malformed,
    /// Signed by a credential that is not one of those the login allowed.
    #[error("credential is not one of the account's passkeys")]
    UnknownCredential,
    /// A username-less login without a user handle, or one that is not an
    /// account id, or that names another account than the credential's.
    #[error("user handle missing or not the credential's account")]
    UserHandle,
    /// webauthn-rs's verification failed; its error text (fixed strings).
    #[error("verification failed: {0}")]
    Verification(String),
}

impl Rejection {
    /// A stable reason code for responses, events and metric labels.
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            Self::TooLarge => "passkey.too_large",
            Self::Malformed => "passkey.malformed",
            Self::UnknownCredential => "passkey.unknown_credential",
            Self::UserHandle => "passkey.user_handle",
            Self::Verification(_) => "passkey.verification",
        }
    }
}

/// A passkey just registered, to give to `Store::add_passkey`.
#[derive(Clone, PartialEq, Eq)]
pub struct NewPasskey {
    /// The credential id, base64url without padding.
    pub credential_id: String,
    /// The serialized webauthn-rs `Passkey` (JSON).
    pub passkey: String,
}

impl std::fmt::Debug for NewPasskey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewPasskey").finish_non_exhaustive()
    }
}

/// The stored passkey that signed a login.
#[derive(Clone, PartialEq, Eq)]
pub struct UsedPasskey {
    /// Its credential id (the store's key).
    pub credential_id: String,
    /// Whose it is.
    pub account_id: String,
    /// The passkey to store with `Store::update_passkey` when its counter or
    /// backup state changed; `None` when the stored one is still current.
    pub updated_passkey: Option<String>,
}

impl std::fmt::Debug for UsedPasskey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UsedPasskey")
            .field("account_id", &self.account_id)
            .field("updated", &self.updated_passkey.is_some())
            .finish_non_exhaustive()
    }
}

/// Who a username-less login claims to be, read from the answer before it is
/// verified: look the credential up (`Store::passkey`), then call
/// [`Passkeys::finish_discoverable`] with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discovered {
    /// The account id from the user handle (32 lowercase hex digits).
    pub account_id: String,
    /// The credential id, base64url without padding.
    pub credential_id: String,
}

/// The state of a ceremony between its two requests, tagged with its kind so
/// that one kind's state never passes for another's (a passkey and a
/// discoverable authentication state have the same shape in webauthn-rs).
#[derive(Serialize, Deserialize)]
#[serde(tag = "ceremony", content = "state", rename_all = "snake_case", deny_unknown_fields)]
enum Ceremony {
    Registration(PasskeyRegistration),
    Authentication(PasskeyAuthentication),
    Discoverable(DiscoverableAuthentication),
}

impl Passkeys {
    /// A relying party for `public_origin` (the gateway's origin as browsers
    /// see it, e.g. `https://app.example.com`); `rp_name` is what browsers
    /// show. The relying party id is the origin's host.
    ///
    /// # Errors
    /// [`PasskeyError::Config`] when `public_origin` is not an origin
    /// (`scheme://host[:port]` with nothing after it), not https (except
    /// `http://localhost`), or has an IP address for a host; or `rp_name` is
    /// empty.
    pub fn new(public_origin: &str, rp_name: &str) -> Result<Self, PasskeyError> {
        let origin = Url::parse(public_origin).map_err(|_| PasskeyError::Config("public_origin is not a URL"))?;
        let Some(host) = origin.domain() else {
            return Err(PasskeyError::Config("public_origin's host must be a domain name, not an IP address"));
        };
        let secure = match origin.scheme() {
            "https" => true,
            "http" => host == "localhost",
            _ => false,
        };
        if !secure {
            return Err(PasskeyError::Config("public_origin must be https:// (or http://localhost for tests)"));
        }
        let bare = origin.username().is_empty()
            && origin.password().is_none()
            && origin.path() == "/"
            && origin.query().is_none()
            && origin.fragment().is_none();
        if !bare {
            return Err(PasskeyError::Config(
                "public_origin must be scheme://host[:port] without a path, query or credentials",
            ));
        }
        if rp_name.trim().is_empty() {
            return Err(PasskeyError::Config("the relying party name is empty"));
        }
        let webauthn = WebauthnBuilder::new(host, &origin)
            .map(|builder| builder.rp_name(rp_name))
            .and_then(WebauthnBuilder::build)
            .map_err(|_| PasskeyError::Config("webauthn-rs refused the relying party"))?;
        Ok(Self { webauthn, prefer_discoverable: true })
    }

    /// Whether registration asks authenticators for a discoverable credential
    /// (default: yes). Username-less login needs one; small security keys
    /// have few slots for them (the reason webauthn-rs does not ask).
    #[must_use]
    pub fn prefer_discoverable(mut self, prefer: bool) -> Self {
        self.prefer_discoverable = prefer;
        self
    }

    /// Starts registering a passkey for an account: the options for
    /// `navigator.credentials.create()` (webauthn-rs's
    /// `CreationChallengeResponse` as JSON) and the state to keep until
    /// [`finish_registration`](Self::finish_registration). The account's
    /// `existing` passkeys are excluded, so an authenticator that already has
    /// one says so instead of making a second.
    ///
    /// # Errors
    /// [`PasskeyError::Config`] for an account id that is not 32 hex digits,
    /// [`PasskeyError::Stored`] for an unreadable existing passkey.
    pub fn start_registration(
        &self,
        account_id: &str,
        username: &str,
        existing: &[StoredPasskey],
    ) -> Result<(serde_json::Value, String), PasskeyError> {
        let user_id = user_handle(account_id).ok_or(PasskeyError::Config("the account id is not 32 hex digits"))?;
        let exclude = existing
            .iter()
            .map(|stored| stored_passkey(stored).map(|pk| pk.cred_id().clone()))
            .collect::<Result<Vec<_>, _>>()?;
        let exclude = (!exclude.is_empty()).then_some(exclude);
        let (options, state) = self
            .webauthn
            .start_passkey_registration(user_id, username, username, exclude)
            .map_err(|_| PasskeyError::Config("webauthn-rs could not start a registration"))?;
        let mut options =
            serde_json::to_value(options).map_err(|_| PasskeyError::Config("registration options serialization"))?;
        if self.prefer_discoverable {
            prefer_resident_key(&mut options);
        }
        Ok((options, seal(&Ceremony::Registration(state))?))
    }

    /// Checks the browser's answer to the registration options against the
    /// state; on success, what to store.
    ///
    /// # Errors
    /// [`PasskeyError::State`] for a state that is not a registration's,
    /// [`PasskeyError::Rejected`] for an answer that is too large, malformed,
    /// or fails verification.
    pub fn finish_registration(&self, state: &str, response: &[u8]) -> Result<NewPasskey, PasskeyError> {
        let Ceremony::Registration(state) = unseal(state)? else {
            return Err(PasskeyError::State);
        };
        let response: RegisterPublicKeyCredential = parse_response(response)?;
        let passkey = self.webauthn.finish_passkey_registration(&response, &state).map_err(|e| verification(&e))?;
        if passkey.cred_id().len() > MAX_CREDENTIAL_ID_BYTES {
            return Err(Rejection::Malformed.into());
        }
        let serialized = serde_json::to_string(&passkey).map_err(|_| PasskeyError::Config("passkey serialization"))?;
        Ok(NewPasskey { credential_id: URL_SAFE_NO_PAD.encode(passkey.cred_id()), passkey: serialized })
    }

    /// Starts a login with one of an account's passkeys (second factor, or
    /// passwordless once the username is known): the options for
    /// `navigator.credentials.get()` (webauthn-rs's `RequestChallengeResponse`
    /// as JSON) and the state.
    ///
    /// # Errors
    /// [`PasskeyError::Stored`] for an unreadable stored passkey,
    /// [`PasskeyError::Config`] when `stored` is empty (nothing could answer).
    pub fn start_authentication(&self, stored: &[StoredPasskey]) -> Result<(serde_json::Value, String), PasskeyError> {
        let passkeys = stored.iter().map(stored_passkey).collect::<Result<Vec<_>, _>>()?;
        if passkeys.is_empty() {
            return Err(PasskeyError::Config("the account has no passkey to log in with"));
        }
        let (options, state) = self
            .webauthn
            .start_passkey_authentication(&passkeys)
            .map_err(|_| PasskeyError::Config("webauthn-rs could not start an authentication"))?;
        let options =
            serde_json::to_value(options).map_err(|_| PasskeyError::Config("authentication options serialization"))?;
        Ok((options, seal(&Ceremony::Authentication(state))?))
    }

    /// Checks an assertion against the state and the account's `stored`
    /// passkeys (the same list the login started with, freshly read): which
    /// one signed it, and its new serialized form when it must be updated.
    ///
    /// # Errors
    /// [`PasskeyError::State`] for a state that is not this kind of login's,
    /// [`PasskeyError::Rejected`] for an answer that is too large, malformed,
    /// from a credential not in `stored`, or fails verification (including a
    /// signature counter that went backwards: a possibly cloned key),
    /// [`PasskeyError::Stored`] for an unreadable stored passkey.
    pub fn finish_authentication(
        &self,
        state: &str,
        response: &[u8],
        stored: &[StoredPasskey],
    ) -> Result<UsedPasskey, PasskeyError> {
        let Ceremony::Authentication(state) = unseal(state)? else {
            return Err(PasskeyError::State);
        };
        let response: PublicKeyCredential = parse_response(response)?;
        let credential_id = URL_SAFE_NO_PAD.encode(response.get_credential_id());
        let row = stored.iter().find(|row| row.credential_id == credential_id).ok_or(Rejection::UnknownCredential)?;
        let passkey = stored_passkey(row)?;
        let result = self.webauthn.finish_passkey_authentication(&response, &state).map_err(|e| verification(&e))?;
        used(row, passkey, &result)
    }

    /// Starts a username-less login: the options for
    /// `navigator.credentials.get()` with no allowed credentials (the
    /// authenticator offers its discoverable ones) and the state. With
    /// `conditional`, the options ask for conditional mediation (the browser
    /// offers passkeys in the autofill of an `autocomplete="username webauthn"`
    /// field); without, a modal prompt (a "Sign in with a passkey" button).
    ///
    /// # Errors
    /// [`PasskeyError::Config`] if webauthn-rs cannot make a challenge.
    pub fn start_discoverable(&self, conditional: bool) -> Result<(serde_json::Value, String), PasskeyError> {
        let (options, state) = self
            .webauthn
            .start_discoverable_authentication()
            .map_err(|_| PasskeyError::Config("webauthn-rs could not start an authentication"))?;
        let mut options =
            serde_json::to_value(options).map_err(|_| PasskeyError::Config("authentication options serialization"))?;
        if !conditional && let Some(options) = options.as_object_mut() {
            options.remove("mediation");
        }
        Ok((options, seal(&Ceremony::Discoverable(state))?))
    }

    /// Reads who a username-less answer claims to be, without verifying it:
    /// the caller looks the credential up by id and passes the row to
    /// [`finish_discoverable`](Self::finish_discoverable), which verifies.
    ///
    /// # Errors
    /// [`PasskeyError::Rejected`] for an answer that is too large, malformed,
    /// or without a user handle that is an account id.
    pub fn discovered(&self, response: &[u8]) -> Result<Discovered, PasskeyError> {
        let response: PublicKeyCredential = parse_response(response)?;
        discovered(&response)
    }

    /// Checks a username-less assertion against the state and the stored
    /// passkey its credential id names; the user handle must be that
    /// passkey's account.
    ///
    /// # Errors
    /// As [`finish_authentication`](Self::finish_authentication), and
    /// [`Rejection::UserHandle`] when the user handle names another account.
    pub fn finish_discoverable(
        &self,
        state: &str,
        response: &[u8],
        stored: &StoredPasskey,
    ) -> Result<UsedPasskey, PasskeyError> {
        let Ceremony::Discoverable(state) = unseal(state)? else {
            return Err(PasskeyError::State);
        };
        let response: PublicKeyCredential = parse_response(response)?;
        let claimed = discovered(&response)?;
        if claimed.credential_id != stored.credential_id {
            return Err(Rejection::UnknownCredential.into());
        }
        if claimed.account_id != stored.account_id {
            return Err(Rejection::UserHandle.into());
        }
        let passkey = stored_passkey(stored)?;
        let key = DiscoverableKey::from(&passkey);
        let result = self
            .webauthn
            .finish_discoverable_authentication_v2(&response, state, &key)
            .map_err(|e| verification(&e))?;
        used(stored, passkey, &result)
    }
}

/// The account id as a WebAuthn user handle: its 16 bytes.
fn user_handle(account_id: &str) -> Option<Uuid> {
    let hex_digits = account_id.len() == 32 && account_id.bytes().all(|b| b.is_ascii_hexdigit());
    hex_digits.then(|| Uuid::try_parse(account_id).ok()).flatten()
}

fn discovered(response: &PublicKeyCredential) -> Result<Discovered, PasskeyError> {
    let handle = response.get_user_unique_id().ok_or(Rejection::UserHandle)?;
    let account = Uuid::from_slice(handle).map_err(|_| Rejection::UserHandle)?;
    Ok(Discovered {
        account_id: account.simple().to_string(),
        credential_id: URL_SAFE_NO_PAD.encode(response.get_credential_id()),
    })
}

fn used(
    row: &StoredPasskey,
    mut passkey: Passkey,
    result: &webauthn_rs::prelude::AuthenticationResult,
) -> Result<UsedPasskey, PasskeyError> {
    let changed = passkey.update_credential(result).ok_or(Rejection::UnknownCredential)?;
    let updated_passkey = if changed {
        Some(serde_json::to_string(&passkey).map_err(|_| PasskeyError::Config("passkey serialization"))?)
    } else {
        None
    };
    Ok(UsedPasskey { credential_id: row.credential_id.clone(), account_id: row.account_id.clone(), updated_passkey })
}

/// The stored row's passkey, which must be the credential the row is keyed by.
fn stored_passkey(row: &StoredPasskey) -> Result<Passkey, PasskeyError> {
    let passkey: Passkey =
        serde_json::from_str(&row.passkey).map_err(|_| PasskeyError::Stored("not a serialized webauthn-rs passkey"))?;
    if URL_SAFE_NO_PAD.encode(passkey.cred_id()) != row.credential_id {
        return Err(PasskeyError::Stored("the passkey's credential id is not the row's"));
    }
    Ok(passkey)
}

fn parse_response<T: serde::de::DeserializeOwned>(response: &[u8]) -> Result<T, Rejection> {
    if response.len() > MAX_RESPONSE_BYTES {
        return Err(Rejection::TooLarge);
    }
    // serde_json's messages can quote the input: only the fixed text is kept.
    serde_json::from_slice(response).map_err(|_| Rejection::Malformed)
}

fn verification(error: &WebauthnError) -> PasskeyError {
    // webauthn-rs's error texts are fixed strings; their sources (parser
    // errors) are dropped as they may quote the input.
    Rejection::Verification(error.to_string()).into()
}

fn seal(ceremony: &Ceremony) -> Result<String, PasskeyError> {
    serde_json::to_string(ceremony).map_err(|_| PasskeyError::Config("ceremony state serialization"))
}

fn unseal(state: &str) -> Result<Ceremony, PasskeyError> {
    if state.len() > MAX_STATE_BYTES {
        return Err(PasskeyError::State);
    }
    serde_json::from_str(state).map_err(|_| PasskeyError::State)
}

/// Asks for a discoverable credential without requiring one: webauthn-rs
/// sends `residentKey: "discouraged"`. The registration state does not depend
/// on it, so this changes only what the browser is asked.
fn prefer_resident_key(options: &mut serde_json::Value) {
    if let Some(selection) = options
        .get_mut("publicKey")
        .and_then(|pk| pk.get_mut("authenticatorSelection"))
        .and_then(serde_json::Value::as_object_mut)
    {
        selection.insert("residentKey".into(), "preferred".into());
        selection.insert("requireResidentKey".into(), false.into());
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use serde_json::{Value, json};
    use webauthn_authenticator_rs::WebauthnAuthenticator as _;
    use webauthn_authenticator_rs::softpasskey::SoftPasskey;
    use webauthn_rs::prelude::{CreationChallengeResponse, RequestChallengeResponse};

    use super::*;

    const ORIGIN: &str = "https://app.example.com";
    const ALICE: &str = "0123456789abcdef0123456789abcdef";
    const BOB: &str = "fedcba9876543210fedcba9876543210";

    fn passkeys() -> Passkeys {
        Passkeys::new(ORIGIN, "Portcullis").unwrap()
    }

    /// A software authenticator that claims user verification (as a
    /// platform authenticator after a PIN or fingerprint would).
    fn authenticator() -> SoftPasskey {
        SoftPasskey::new(true)
    }

    /// What the browser would do with the options: `navigator.credentials.create()`.
    fn create(soft: &mut SoftPasskey, at: &str, options: &Value) -> Vec<u8> {
        let options: CreationChallengeResponse = serde_json::from_value(options.clone()).unwrap();
        let response = soft.do_registration(Url::parse(at).unwrap(), options).unwrap();
        serde_json::to_vec(&response).unwrap()
    }

    /// What the browser would do with the options: `navigator.credentials.get()`.
    fn get(soft: &mut SoftPasskey, at: &str, options: &Value) -> Vec<u8> {
        let options: RequestChallengeResponse = serde_json::from_value(options.clone()).unwrap();
        let response = soft.do_authentication(Url::parse(at).unwrap(), options).unwrap();
        serde_json::to_vec(&response).unwrap()
    }

    fn row(account_id: &str, new: NewPasskey) -> StoredPasskey {
        StoredPasskey {
            credential_id: new.credential_id,
            account_id: account_id.into(),
            name: "laptop".into(),
            passkey: new.passkey,
            created_at: SystemTime::UNIX_EPOCH,
            last_used_at: None,
        }
    }

    /// Registers a passkey for the account on `soft`; the row the store would hold.
    fn register(pk: &Passkeys, soft: &mut SoftPasskey, account_id: &str) -> StoredPasskey {
        let (options, state) = pk.start_registration(account_id, "alice", &[]).unwrap();
        let response = create(soft, ORIGIN, &options);
        row(account_id, pk.finish_registration(&state, &response).unwrap())
    }

    fn rejected(result: Result<impl std::fmt::Debug, PasskeyError>) -> Rejection {
        match result {
            Err(PasskeyError::Rejected(rejection)) => rejection,
            other => panic!("expected a rejection, got {other:?}"),
        }
    }

    #[test]
    fn construction_refuses_what_is_not_a_secure_origin() {
        for (origin, name) in [
            ("not a url", "Portcullis"),
            ("app.example.com", "Portcullis"),
            ("http://app.example.com", "Portcullis"),
            ("ftp://app.example.com", "Portcullis"),
            ("https://127.0.0.1", "Portcullis"),
            ("https://[::1]:8443", "Portcullis"),
            ("http://127.0.0.1:3000", "Portcullis"),
            ("https://app.example.com/login", "Portcullis"),
            ("https://app.example.com/?next=/", "Portcullis"),
            ("https://user:pw@app.example.com", "Portcullis"),
            ("https://app.example.com#x", "Portcullis"),
            (ORIGIN, " "),
        ] {
            assert!(
                matches!(Passkeys::new(origin, name), Err(PasskeyError::Config(_))),
                "{origin:?} / {name:?} was accepted"
            );
        }
        for origin in [ORIGIN, "https://app.example.com/", "https://app.example.com:8443", "http://localhost:3000"] {
            assert!(Passkeys::new(origin, "Portcullis").is_ok(), "{origin} was refused");
        }
    }

    #[test]
    fn registration_options_name_the_relying_party_and_the_account() {
        let (options, _) = Passkeys::new("https://app.example.com:8443", "Portcullis")
            .unwrap()
            .start_registration(ALICE, "alice", &[])
            .unwrap();
        let pk = &options["publicKey"];
        assert_eq!(pk["rp"], json!({"id": "app.example.com", "name": "Portcullis"}));
        assert_eq!(pk["user"]["id"], json!(URL_SAFE_NO_PAD.encode(Uuid::try_parse(ALICE).unwrap().as_bytes())));
        assert_eq!(pk["user"]["name"], json!("alice"));
        assert_eq!(pk["authenticatorSelection"]["residentKey"], json!("preferred"));
        assert_eq!(pk["authenticatorSelection"]["userVerification"], json!("required"));
        assert!(pk.get("excludeCredentials").is_none());

        let (options, _) = passkeys().prefer_discoverable(false).start_registration(ALICE, "alice", &[]).unwrap();
        assert_eq!(options["publicKey"]["authenticatorSelection"]["residentKey"], json!("discouraged"));
    }

    #[test]
    fn registration_refuses_an_account_id_that_is_not_32_hex_digits() {
        for id in [
            "",
            "alice",
            "0123456789abcdef",
            "0123456789abcdef0123456789abcdeg",
            "01234567-89ab-cdef-0123-456789abcdef",
        ] {
            assert!(matches!(passkeys().start_registration(id, "alice", &[]), Err(PasskeyError::Config(_))), "{id}");
        }
    }

    #[test]
    fn registration_excludes_the_accounts_existing_passkeys() {
        let pk = passkeys();
        let mut soft = authenticator();
        let first = register(&pk, &mut soft, ALICE);
        let second = register(&pk, &mut authenticator(), ALICE);
        let (options, _) = pk.start_registration(ALICE, "alice", &[first.clone(), second.clone()]).unwrap();
        let excluded: Vec<&str> = options["publicKey"]["excludeCredentials"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["id"].as_str().unwrap())
            .collect();
        assert_eq!(excluded, [first.credential_id.as_str(), second.credential_id.as_str()]);
    }

    #[test]
    fn a_passkey_registers_and_logs_in() {
        let pk = passkeys();
        let mut soft = authenticator();
        let stored = register(&pk, &mut soft, ALICE);
        assert!(!stored.credential_id.is_empty());

        let (options, state) = pk.start_authentication(std::slice::from_ref(&stored)).unwrap();
        let allowed = &options["publicKey"]["allowCredentials"];
        assert_eq!(allowed[0]["id"], json!(stored.credential_id));
        let response = get(&mut soft, ORIGIN, &options);
        let used = pk.finish_authentication(&state, &response, std::slice::from_ref(&stored)).unwrap();
        assert_eq!(used.credential_id, stored.credential_id);
        assert_eq!(used.account_id, ALICE);
        // The soft authenticator counts its signatures: the new counter must be stored.
        let updated = used.updated_passkey.unwrap();

        // The next login starts from the updated passkey and still passes.
        let stored = StoredPasskey { passkey: updated, ..stored };
        let (options, state) = pk.start_authentication(std::slice::from_ref(&stored)).unwrap();
        let response = get(&mut soft, ORIGIN, &options);
        assert!(pk.finish_authentication(&state, &response, &[stored]).is_ok());
    }

    #[test]
    fn an_answer_from_another_origin_is_refused() {
        // A subdomain may use the relying party id (the authenticator signs),
        // but its origin is not the gateway's.
        let pk = passkeys();
        let mut soft = authenticator();
        let (options, state) = pk.start_registration(ALICE, "alice", &[]).unwrap();
        let response = create(&mut soft, "https://evil.app.example.com", &options);
        assert!(matches!(rejected(pk.finish_registration(&state, &response)), Rejection::Verification(_)));

        let stored = register(&pk, &mut soft, ALICE);
        let (options, state) = pk.start_authentication(std::slice::from_ref(&stored)).unwrap();
        let response = get(&mut soft, "https://evil.app.example.com", &options);
        let rejection = rejected(pk.finish_authentication(&state, &response, &[stored]));
        assert!(matches!(rejection, Rejection::Verification(_)));
        assert_eq!(rejection.code(), "passkey.verification");
    }

    #[test]
    fn a_credential_that_is_not_among_the_stored_ones_is_refused() {
        let pk = passkeys();
        let mut alice_key = authenticator();
        let alice = register(&pk, &mut alice_key, ALICE);
        let bob = register(&pk, &mut authenticator(), BOB);
        let (options, state) = pk.start_authentication(std::slice::from_ref(&alice)).unwrap();
        let response = get(&mut alice_key, ORIGIN, &options);
        // Bob's login handed Alice's state and answer: Alice's credential is not Bob's.
        assert_eq!(rejected(pk.finish_authentication(&state, &response, &[bob])), Rejection::UnknownCredential);
    }

    #[test]
    fn an_answer_to_another_challenge_is_refused() {
        let pk = passkeys();
        let mut soft = authenticator();
        let stored = register(&pk, &mut soft, ALICE);
        let (options, _) = pk.start_authentication(std::slice::from_ref(&stored)).unwrap();
        let old_answer = get(&mut soft, ORIGIN, &options);
        let (_, state) = pk.start_authentication(std::slice::from_ref(&stored)).unwrap();
        let rejection = rejected(pk.finish_authentication(&state, &old_answer, &[stored]));
        assert!(matches!(rejection, Rejection::Verification(_)), "{rejection:?}");
    }

    #[test]
    fn replaying_a_state_with_its_answer_is_accepted_so_the_caller_must_make_states_single_use() {
        // The module doc's deployment caveat, pinned: nothing here can know a
        // state was already used; the caller's seal has to.
        let pk = passkeys();
        let mut soft = authenticator();
        let stored = register(&pk, &mut soft, ALICE);
        let (options, state) = pk.start_authentication(std::slice::from_ref(&stored)).unwrap();
        let response = get(&mut soft, ORIGIN, &options);
        assert!(pk.finish_authentication(&state, &response, std::slice::from_ref(&stored)).is_ok());
        assert!(pk.finish_authentication(&state, &response, &[stored]).is_ok());
    }

    #[test]
    fn garbage_oversized_and_truncated_answers_are_refused_with_a_typed_error() {
        let pk = passkeys();
        let mut soft = authenticator();
        let (options, reg_state) = pk.start_registration(ALICE, "alice", &[]).unwrap();
        let registration = create(&mut soft, ORIGIN, &options);
        let stored = register(&pk, &mut soft, ALICE);
        let (options, auth_state) = pk.start_authentication(std::slice::from_ref(&stored)).unwrap();
        let assertion = get(&mut soft, ORIGIN, &options);
        let (_, disc_state) = pk.start_discoverable(false).unwrap();

        let mut oversized = registration.clone();
        oversized.resize(MAX_RESPONSE_BYTES + 1, b' ');
        let cases: Vec<(&str, Vec<u8>, Rejection)> = vec![
            ("empty", Vec::new(), Rejection::Malformed),
            ("not json", b"hello".to_vec(), Rejection::Malformed),
            ("invalid utf-8", vec![0xff, 0xfe, b'{'], Rejection::Malformed),
            ("empty object", b"{}".to_vec(), Rejection::Malformed),
            ("array", b"[1,2,3]".to_vec(), Rejection::Malformed),
            ("deeply nested", [vec![b'['; 10_000], vec![b']'; 10_000]].concat(), Rejection::Malformed),
            ("truncated registration", registration[..registration.len() / 2].to_vec(), Rejection::Malformed),
            ("truncated assertion", assertion[..assertion.len() / 2].to_vec(), Rejection::Malformed),
            ("oversized", oversized, Rejection::TooLarge),
        ];
        for (what, response, expected) in cases {
            assert_eq!(rejected(pk.finish_registration(&reg_state, &response)), expected, "registration: {what}");
            let result = pk.finish_authentication(&auth_state, &response, std::slice::from_ref(&stored));
            assert_eq!(rejected(result), expected, "authentication: {what}");
            assert_eq!(rejected(pk.discovered(&response)), expected, "discovered: {what}");
            let result = pk.finish_discoverable(&disc_state, &response, &stored);
            assert_eq!(rejected(result), expected, "discoverable: {what}");
        }

        // Well-formed JSON whose binary fields are not what they claim.
        let mut broken: Value = serde_json::from_slice(&registration).unwrap();
        broken["response"]["attestationObject"] = json!("AAAA");
        let broken = serde_json::to_vec(&broken).unwrap();
        assert!(matches!(rejected(pk.finish_registration(&reg_state, &broken)), Rejection::Verification(_)));
        let mut broken: Value = serde_json::from_slice(&assertion).unwrap();
        broken["response"]["signature"] = json!("AAAA");
        let broken = serde_json::to_vec(&broken).unwrap();
        let result = pk.finish_authentication(&auth_state, &broken, &[stored]);
        assert!(matches!(rejected(result), Rejection::Verification(_)));
    }

    #[test]
    fn a_state_from_one_ceremony_is_refused_by_another() {
        let pk = passkeys();
        let mut soft = authenticator();
        let stored = register(&pk, &mut soft, ALICE);
        let (reg_options, reg_state) = pk.start_registration(BOB, "bob", &[]).unwrap();
        let registration = create(&mut authenticator(), ORIGIN, &reg_options);
        let (options, auth_state) = pk.start_authentication(std::slice::from_ref(&stored)).unwrap();
        let assertion = get(&mut soft, ORIGIN, &options);
        let (_, disc_state) = pk.start_discoverable(true).unwrap();
        let rows = std::slice::from_ref(&stored);

        fn state<T>(result: &Result<T, PasskeyError>) -> bool {
            matches!(result, Err(PasskeyError::State))
        }
        assert!(state(&pk.finish_registration(&auth_state, &registration)));
        assert!(state(&pk.finish_registration(&disc_state, &registration)));
        assert!(state(&pk.finish_authentication(&reg_state, &assertion, rows)));
        assert!(state(&pk.finish_authentication(&disc_state, &assertion, rows)));
        assert!(state(&pk.finish_discoverable(&auth_state, &assertion, &stored)));
        assert!(state(&pk.finish_discoverable(&reg_state, &assertion, &stored)));
        // An untagged webauthn-rs state (the shape is the same for both logins).
        let untagged = serde_json::from_str::<Value>(&auth_state).unwrap()["state"].to_string();
        assert!(state(&pk.finish_authentication(&untagged, &assertion, rows)));
        for garbage in [String::new(), "{}".into(), "null".into(), "x".repeat(MAX_STATE_BYTES + 1)] {
            assert!(state(&pk.finish_registration(&garbage, &registration)));
            assert!(state(&pk.finish_authentication(&garbage, &assertion, rows)));
        }
        // The right state still works afterwards.
        assert!(pk.finish_registration(&reg_state, &registration).is_ok());
        assert!(pk.finish_authentication(&auth_state, &assertion, rows).is_ok());
    }

    #[test]
    fn unreadable_stored_passkeys_are_the_stores_fault() {
        let pk = passkeys();
        let stored = register(&pk, &mut authenticator(), ALICE);
        let other = register(&pk, &mut authenticator(), ALICE);
        let corrupt = StoredPasskey { passkey: "{\"not\":\"a passkey\"}".into(), ..stored.clone() };
        let swapped = StoredPasskey { passkey: other.passkey, ..stored };
        for row in [corrupt, swapped] {
            assert!(matches!(
                pk.start_registration(ALICE, "alice", std::slice::from_ref(&row)),
                Err(PasskeyError::Stored(_))
            ));
            assert!(matches!(pk.start_authentication(&[row]), Err(PasskeyError::Stored(_))));
        }
        assert!(matches!(pk.start_authentication(&[]), Err(PasskeyError::Config(_))));
    }

    #[test]
    fn discoverable_options_ask_for_any_credential_with_or_without_autofill() {
        let pk = passkeys();
        let (conditional, _) = pk.start_discoverable(true).unwrap();
        assert_eq!(conditional["mediation"], json!("conditional"));
        assert_eq!(conditional["publicKey"]["allowCredentials"], json!([]));
        assert_eq!(conditional["publicKey"]["rpId"], json!("app.example.com"));
        let (modal, _) = pk.start_discoverable(false).unwrap();
        assert!(modal.get("mediation").is_none());
    }

    /// A username-less login. The soft authenticator keeps no discoverable
    /// credentials, so it is told which one to use and the user handle (not
    /// covered by the signature) is added to its answer, as a browser's
    /// discoverable credential would return it.
    fn discoverable_answer(
        pk: &Passkeys,
        soft: &mut SoftPasskey,
        stored: &StoredPasskey,
        handle: Option<&str>,
    ) -> (String, Vec<u8>) {
        let (mut options, state) = pk.start_discoverable(false).unwrap();
        options["publicKey"]["allowCredentials"] = json!([{"type": "public-key", "id": stored.credential_id}]);
        let mut response: Value = serde_json::from_slice(&get(soft, ORIGIN, &options)).unwrap();
        response["response"]["userHandle"] =
            handle.map_or(Value::Null, |h| json!(URL_SAFE_NO_PAD.encode(Uuid::try_parse(h).unwrap().as_bytes())));
        (state, serde_json::to_vec(&response).unwrap())
    }

    #[test]
    fn a_discoverable_passkey_names_its_account_and_logs_in() {
        let pk = passkeys();
        let mut soft = authenticator();
        let stored = register(&pk, &mut soft, ALICE);
        let (state, response) = discoverable_answer(&pk, &mut soft, &stored, Some(ALICE));
        let found = pk.discovered(&response).unwrap();
        assert_eq!(found, Discovered { account_id: ALICE.into(), credential_id: stored.credential_id.clone() });
        let used = pk.finish_discoverable(&state, &response, &stored).unwrap();
        assert_eq!(used.account_id, ALICE);
        assert!(used.updated_passkey.is_some());
    }

    #[test]
    fn a_discoverable_answer_must_name_the_credentials_own_account() {
        let pk = passkeys();
        let mut soft = authenticator();
        let stored = register(&pk, &mut soft, ALICE);
        let (state, response) = discoverable_answer(&pk, &mut soft, &stored, Some(BOB));
        assert_eq!(rejected(pk.finish_discoverable(&state, &response, &stored)), Rejection::UserHandle);
        let (state, response) = discoverable_answer(&pk, &mut soft, &stored, None);
        assert_eq!(rejected(pk.discovered(&response)), Rejection::UserHandle);
        assert_eq!(rejected(pk.finish_discoverable(&state, &response, &stored)), Rejection::UserHandle);
        // The caller looked up another credential than the one that signed.
        let other = register(&pk, &mut authenticator(), ALICE);
        let (state, response) = discoverable_answer(&pk, &mut soft, &stored, Some(ALICE));
        assert_eq!(rejected(pk.finish_discoverable(&state, &response, &other)), Rejection::UnknownCredential);
    }

    #[test]
    fn errors_never_quote_the_answer() {
        let pk = passkeys();
        let (_, state) = pk.start_registration(ALICE, "alice", &[]).unwrap();
        let secret = br#"{"id":"SECRET-CREDENTIAL","rawId":"SECRET","response":{"attestationObject":"SECRET!","clientDataJSON":"x"},"type":"public-key"}"#;
        let error = pk.finish_registration(&state, secret).unwrap_err();
        assert!(!format!("{error} {error:?}").contains("SECRET"), "{error:?}");
    }

    /// The answers `assets/passkeys.js` posts: transports from
    /// `getTransports()` (including ones webauthn-rs does not know), only the
    /// `credProps`/`appid` extension outputs, `userHandle` null or base64url.
    #[test]
    fn browser_shaped_answers_are_accepted() {
        let pk = passkeys();
        let mut soft = authenticator();
        let (options, state) = pk.start_registration(ALICE, "alice", &[]).unwrap();
        let mut response: Value = serde_json::from_slice(&create(&mut soft, ORIGIN, &options)).unwrap();
        response["response"]["transports"] = json!(["internal", "hybrid", "smart-card"]);
        response["extensions"] = json!({"credProps": {"rk": true}});
        let stored = row(ALICE, pk.finish_registration(&state, &serde_json::to_vec(&response).unwrap()).unwrap());

        let (options, state) = pk.start_authentication(std::slice::from_ref(&stored)).unwrap();
        let mut response: Value = serde_json::from_slice(&get(&mut soft, ORIGIN, &options)).unwrap();
        response["extensions"] = json!({});
        response["response"]["userHandle"] = Value::Null;
        assert!(pk.finish_authentication(&state, &serde_json::to_vec(&response).unwrap(), &[stored]).is_ok());
    }
}
