//! The built-in accounts at run time: logging in, the sessions and tokens a
//! login gives, and checking them on every request of a route with
//! `auth = ["account"]`. The endpoints are in [`routes`], the pages in
//! [`page`]; the store is `crate::store::{accounts, sessions, mfa}`.
//!
//! Defends against: password guessing (every failed password or second
//! factor counts in the login guard, per account name and per address, with
//! exponential backoff; the hashing pool is bounded, so a login flood cannot
//! take the cores proxying needs), telling which accounts exist (an unknown
//! name is checked against a dummy hash and answered exactly like a wrong
//! password), stolen refresh tokens (rotation with reuse detection, in the
//! store), sessions outliving a logout (revoked sessions are refused at
//! once through the revocation list; a disabled account or changed roles
//! within `access_token_ttl`), and forged cookies or tokens.
//!
//! Decision rules:
//! - A login is a username or email and a password; when the account has a
//!   second factor (TOTP, a passkey), or one of its roles is in
//!   `mfa_required_roles`, the password only opens a five-minute second step
//!   (a sealed `__Host-portcullis-account-mfa` cookie for browsers, the same
//!   value as `mfa_token` for API clients). A role that needs a second
//!   factor on an account without one allows only enrolling one.
//! - A completed login is a session in the store (one refresh-token family,
//!   ending `refresh_token_ttl` after login). Browsers get the sealed
//!   `__Host-portcullis-account` cookie (`Secure`, `HttpOnly`,
//!   `SameSite=Lax`); API clients get an access token (an EdDSA JWT signed
//!   with the gateway's identity key, `typ` `at+jwt`, audience
//!   [`ACCESS_AUDIENCE`], living `access_token_ttl`) and a refresh token.
//! - Every request on an account route checks that its session is not on
//!   the revocation list (logout, logout everywhere, password change and
//!   refresh-token reuse put it there until the session's end). A cookie is
//!   re-checked against the store (session alive, account enabled, its
//!   current roles) once per `access_token_ttl` and resealed; an access
//!   token carries the roles it was issued with until it expires.
//! - The principal is `account:<id>` with the account's roles, issuer
//!   `portcullis`, method `account` (cookie) or `account_token` (bearer).
//!
//! Deployment caveat: several instances need the same `cookie_secret`, the
//! same identity key (`[server] data_dir` shared, or the key file copied)
//! and `[state] shared = "redis://…"` for the revocation list and the login
//! guard; without Redis, a logout on one instance reaches the others only
//! when they next re-check the store (within `access_token_ttl`).

pub mod page;
pub mod passkey_routes;
pub mod passkeys;
pub mod routes;

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures_util::future::BoxFuture;
use http::header::{CACHE_CONTROL, LOCATION};
use http::{HeaderValue, Response, StatusCode};
use portcullis_layers::login::{Attempt, LoginGuard, LoginSettings, LoginStore};
use portcullis_layers::verify::{AuthFuture, SessionOutcome, VerifyAccessToken, VerifySession};
use portcullis_policy::jwt::{JwtError, JwtPolicy, KeySet};
use portcullis_policy::session::{SessionError, SessionKey, from_unix, unix};
use portcullis_policy::{AuthMethod, Denied, Principal, Reason};
use serde::{Deserialize, Serialize};

use crate::auth::GatewaySigner;
use crate::auth::password::{PasswordError, PasswordHasher, Verified};
use crate::config::accounts::Accounts as Settings;
use crate::shared::Revocations;
use crate::store::accounts::{Account, Token};
use crate::store::sessions::{RevokeReason, Session};
use crate::store::{Store, StoreError};

/// The account session cookie.
pub const ACCOUNT_COOKIE: &str = "__Host-portcullis-account";
/// The cookie of a login waiting for its second factor.
pub const PENDING_COOKIE: &str = "__Host-portcullis-account-mfa";
/// Where every account endpoint lives.
pub const PREFIX: &str = "/.portcullis/account";
/// The login page and form: `GET`, `POST` `/.portcullis/account/login`.
pub const LOGIN_PATH: &str = "/.portcullis/account/login";
/// The audience of the accounts' access tokens.
pub const ACCESS_AUDIENCE: &str = "portcullis:account";
/// The `[login.NAME]` name account logins are counted under (in events'
/// `rule`, store keys and `portcullis user unlock`).
pub const LOGIN_NAME: &str = "accounts";
/// How long the second step of a login may take.
pub const PENDING_TTL: Duration = Duration::from_secs(300);
/// The `WWW-Authenticate` challenge of account routes.
const CHALLENGE: &str =
    r#"Cookie realm="portcullis", form-action="/.portcullis/account/login", cookie-name="__Host-portcullis-account""#;
/// Clock skew tolerated on access tokens.
const TOKEN_LEEWAY: Duration = Duration::from_secs(5);
/// Access tokens' `token_use`: keeps every other token the identity key
/// signs (the upstream identity tokens) from passing as one.
const TOKEN_USE: &str = "access";
/// The most live sessions one account may have: a login beyond it ends the
/// oldest, so one known password cannot grow the store without bound.
pub const MAX_SESSIONS: usize = 50;
/// How often ended sessions are removed from the store.
const PURGE_EVERY: Duration = Duration::from_secs(3600);
/// How long an ended session is kept: a refresh token of a session ended a
/// moment ago is still recognised (and logged) as reuse.
const KEEP_ENDED: Duration = Duration::from_secs(86_400);

/// The account session inside [`ACCOUNT_COOKIE`].
#[derive(Debug, Clone, Serialize, Deserialize)]
struct CookieSession {
    /// The session (refresh-token family) id.
    sid: String,
    /// The account id.
    acct: String,
    /// Roles, as of the last check.
    #[serde(default)]
    ro: Vec<String>,
    /// The session's end (Unix seconds).
    end: u64,
    /// When to check the store again (Unix seconds).
    chk: u64,
    /// Factors used at login (`pwd`, `otp`, `hwk`, `rec`).
    #[serde(default)]
    amr: Vec<String>,
}

/// A login between its password and its second factor ([`PENDING_COOKIE`],
/// or `mfa_token`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Pending {
    /// The account id.
    pub acct: String,
    /// Factors done so far.
    pub amr: Vec<String>,
    /// The account has no second factor but must have one: only enrolling
    /// is allowed.
    #[serde(default)]
    pub enrol: bool,
    /// Where the browser returns after login.
    #[serde(default)]
    pub rd: String,
}

/// The access token's claims.
#[derive(Debug, Serialize, Deserialize)]
struct AccessClaims {
    iss: String,
    aud: String,
    sub: String,
    sid: String,
    iat: u64,
    exp: u64,
    #[serde(default)]
    roles: Vec<String>,
    #[serde(default)]
    amr: Vec<String>,
    token_use: String,
}

/// What a completed login hands out.
#[derive(Debug)]
pub struct Issued {
    /// The session.
    pub session: Session,
    /// Its first refresh token (API clients).
    pub refresh_token: Token,
    /// An access token (API clients).
    pub access_token: String,
    /// The sealed cookie value (browsers).
    pub cookie: String,
}

/// Why the accounts could not start.
#[derive(Debug, thiserror::Error)]
pub enum AccountsStartError {
    /// The store.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// The hashing pool (parameters, random source).
    #[error("password hashing: {0}")]
    Hasher(#[from] PasswordError),
    /// The cookie key.
    #[error("cookie key: {0}")]
    Key(String),
    /// The passkeys' relying party.
    #[error("passkeys: {0}")]
    Passkeys(#[from] passkeys::PasskeyError),
}

/// The built-in accounts at run time. Cheap to clone.
#[derive(Clone)]
pub struct AccountService {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    hasher: PasswordHasher,
    settings: Settings,
    key: SessionKey,
    signer: Arc<GatewaySigner>,
    token_keys: KeySet,
    token_policy: JwtPolicy,
    revocations: Arc<dyn Revocations>,
    guard: LoginGuard,
    passkeys: Option<passkeys::Passkeys>,
}

impl std::fmt::Debug for AccountService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccountService")
            .field("registration", &self.inner.settings.registration)
            .finish_non_exhaustive()
    }
}

/// The login guard's settings for account logins: the `[login]` defaults
/// (5 free failures per account, 20 per address, then waits doubling from a
/// second up to 15 minutes), failing closed.
#[must_use]
pub fn login_settings() -> LoginSettings {
    use crate::config::login::{
        DEFAULT_ACCOUNT_FAILURES, DEFAULT_BACKOFF, DEFAULT_IP_FAILURES, DEFAULT_MAX_BACKOFF, DEFAULT_MAX_BODY,
        DEFAULT_WINDOW,
    };
    let nanos = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
    let rules = |free| portcullis_policy::login::Backoff {
        free,
        window_nanos: nanos(DEFAULT_WINDOW),
        backoff_nanos: nanos(DEFAULT_BACKOFF),
        max_backoff_nanos: nanos(DEFAULT_MAX_BACKOFF),
    };
    LoginSettings {
        name: Arc::from(LOGIN_NAME),
        // Not read: the endpoints give the guard the name themselves.
        account: portcullis_policy::login::AccountSource::Header(http::header::AUTHORIZATION),
        account_backoff: rules(DEFAULT_ACCOUNT_FAILURES),
        ip_backoff: rules(DEFAULT_IP_FAILURES),
        failure_status: vec![StatusCode::UNAUTHORIZED],
        fail_open: false,
        max_body: DEFAULT_MAX_BODY,
    }
}

impl AccountService {
    /// Opens the store, starts the hashing pool and builds the verifiers.
    ///
    /// # Errors
    /// [`AccountsStartError`] naming the part that failed.
    pub async fn start(
        settings: &Settings,
        store_url: &str,
        data_dir: &Path,
        signer: Arc<GatewaySigner>,
        revocations: Arc<dyn Revocations>,
        logins: Arc<dyn LoginStore>,
    ) -> Result<Self, AccountsStartError> {
        let store = Store::open(store_url).await?;
        let hasher = PasswordHasher::new(settings.hash, settings.hash_slots(), settings.hash_queue_timeout).await?;
        let key = match &settings.cookie_secret {
            Some(secret) => {
                SessionKey::new(secret.expose().as_bytes()).map_err(|e| AccountsStartError::Key(e.to_string()))?
            }
            None => crate::oidc::session_key_from_file(&data_dir.join(crate::oidc::KEY_FILE))
                .map_err(|e| AccountsStartError::Key(e.to_string()))?,
        };
        let jwks = serde_json::to_vec(&signer.jwks()).map_err(|e| AccountsStartError::Key(e.to_string()))?;
        let (token_keys, _) = KeySet::from_jwks(&jwks, &[jsonwebtoken::Algorithm::EdDSA])
            .map_err(|e| AccountsStartError::Key(format!("identity keys: {e}")))?;
        let mut token_policy = JwtPolicy::new(signer.signer().issuer());
        token_policy.audiences = vec![ACCESS_AUDIENCE.to_owned()];
        token_policy.leeway = TOKEN_LEEWAY;
        token_policy.required_claims = ["exp", "iat", "sid", "sub"].map(str::to_owned).to_vec();
        let guard = LoginGuard::new(Arc::new(login_settings()), logins);
        let passkeys = match (&settings.passkeys, &settings.public_url) {
            (crate::config::accounts::Passkeys::Off, _) | (_, None) => None,
            (_, Some(origin)) => Some(passkeys::Passkeys::new(origin, "Portcullis")?),
        };
        let inner = Arc::new(Inner {
            store,
            hasher,
            settings: settings.clone(),
            key,
            signer,
            token_keys,
            token_policy,
            revocations,
            guard,
            passkeys,
        });
        tokio::spawn(housekeeping(Arc::downgrade(&inner)));
        Ok(Self { inner })
    }

    /// The settings.
    #[must_use]
    pub fn settings(&self) -> &Settings {
        &self.inner.settings
    }

    pub(crate) fn store(&self) -> &Store {
        &self.inner.store
    }

    pub(crate) fn hasher(&self) -> &PasswordHasher {
        &self.inner.hasher
    }

    pub(crate) fn key(&self) -> &SessionKey {
        &self.inner.key
    }

    pub(crate) fn guard(&self) -> &LoginGuard {
        &self.inner.guard
    }

    pub(crate) fn passkeys(&self) -> Option<&passkeys::Passkeys> {
        self.inner.passkeys.as_ref()
    }

    pub(crate) fn revocations(&self) -> &Arc<dyn Revocations> {
        &self.inner.revocations
    }

    /// The verifier of account cookies, for the authentication layer.
    #[must_use]
    pub fn sessions(&self) -> Arc<dyn VerifySession> {
        Arc::new(CookieVerifier(self.clone()))
    }

    /// The verifier of access tokens, for the authentication layer.
    #[must_use]
    pub fn tokens(&self) -> Arc<dyn VerifyAccessToken> {
        Arc::new(TokenVerifier(self.clone()))
    }

    /// Checks a password login for `login` (a username or an email) from
    /// `ip`: the account when the password is right and the account enabled.
    ///
    /// # Errors
    /// `login.backoff` while the name or address must wait, `login.failed`
    /// (counted) for a wrong name or password or a disabled account — one
    /// answer for the three — `account.busy` when no hashing slot frees in
    /// time, `account.unavailable` when the store cannot be read.
    pub(crate) async fn check_password(
        &self,
        login: &str,
        password: &str,
        ip: IpAddr,
        notes: &mut Vec<Denied>,
    ) -> Result<Account, Denied> {
        let inner = &self.inner;
        if let Some(note) = inner.guard.before(Some(login), ip).await? {
            notes.push(note);
        }
        let record = inner.store.account_for_login(login).await.map_err(unavailable)?;
        let stored = record.as_ref().and_then(|r| r.password_hash.as_deref());
        let verified = inner.hasher.verify(password, stored).await.map_err(hashing)?;
        match (record, verified) {
            (Some(record), Verified::Match { rehash }) if record.account.disabled_at.is_none() => {
                if let Some(note) = inner.guard.after(Some(login), ip, Attempt::Succeeded).await {
                    notes.push(note);
                }
                if rehash && let Some(old) = &record.password_hash {
                    self.rehash(&record.account, password, old).await;
                }
                Ok(record.account)
            }
            (record, verified) => {
                let why = match (&record, verified) {
                    (None, _) => "no such account",
                    (Some(_), Verified::Match { .. }) => "account disabled",
                    (Some(r), _) if r.password_hash.is_none() => "account has no password",
                    (Some(_), _) => "wrong password",
                };
                Err(self.failed(Some(login), ip, why).await)
            }
        }
    }

    /// Counts a failed attempt for `login` from `ip` and returns its refusal
    /// (`login.failed`, with the guard's counts in the detail).
    pub(crate) async fn failed(&self, login: Option<&str>, ip: IpAddr, why: &str) -> Denied {
        let counted = self.inner.guard.after(login, ip, Attempt::Failed).await;
        let denied = counted.unwrap_or_else(|| Denied::new(Reason::LoginFailed).with_rule(LOGIN_NAME));
        let detail = match &denied.detail {
            Some(counts) => format!("{why}; {counts}"),
            None => why.to_owned(),
        };
        denied.with_detail(detail)
    }

    /// Replaces an old-parameter hash after a successful login; a failure
    /// only delays the upgrade to the next login.
    async fn rehash(&self, account: &Account, password: &str, old: &str) {
        match self.inner.hasher.rehash(password).await {
            Ok(new) => match self.inner.store.rehash_password(&account.id, old, &new).await {
                Ok(_) => tracing::info!(account = %account.id, "password hash upgraded to the current parameters"),
                Err(e) => tracing::warn!(account = %account.id, error = %e, "password rehash not stored"),
            },
            Err(e) => tracing::warn!(account = %account.id, error = %e, "password rehash failed"),
        }
    }

    /// Whether a login of `account` with a password must also pass a second
    /// factor, and whether it has one to pass: `(needed, enrolled)`.
    pub(crate) async fn second_factor(&self, account: &Account) -> Result<(bool, bool), Denied> {
        let store = &self.inner.store;
        let totp = store.totp(&account.id).await.map_err(unavailable)?.is_some_and(|t| t.confirmed_at.is_some());
        let passkeys =
            self.inner.passkeys.is_some() && !store.passkeys(&account.id).await.map_err(unavailable)?.is_empty();
        let enrolled = totp || passkeys;
        let required = account.roles.iter().any(|r| self.inner.settings.mfa_required_roles.contains(r));
        Ok((enrolled || required, enrolled))
    }

    /// Seals a pending login (cookie value and `mfa_token`).
    pub(crate) fn seal_pending(&self, pending: &Pending, now: SystemTime) -> Result<String, Denied> {
        self.inner.key.seal_value(PENDING_COOKIE, pending, now + PENDING_TTL).map_err(sealing)
    }

    /// Opens a pending login.
    pub(crate) fn open_pending(&self, sealed: &str, now: SystemTime) -> Option<Pending> {
        self.inner.key.open_value(PENDING_COOKIE, sealed, now).ok()
    }

    /// Starts a session for `account` after a login with the factors `amr`.
    ///
    /// # Errors
    /// `account.unavailable` when the store fails, `gateway.internal` when
    /// signing or sealing does.
    pub(crate) async fn issue(&self, account: &Account, amr: &[String], now: SystemTime) -> Result<Issued, Denied> {
        let inner = &self.inner;
        let end = now + inner.settings.refresh_token_ttl;
        let (session, refresh_token) =
            inner.store.create_session(&account.id, end, now).await.map_err(account_error)?;
        self.end_oldest_sessions(&account.id, now).await?;
        let access_token = self.access_token(account, &session, amr, now)?;
        let cookie = self.seal_cookie(&CookieSession {
            sid: session.id.clone(),
            acct: account.id.clone(),
            ro: account.roles.clone(),
            end: unix(session.expires_at),
            chk: unix(now + inner.settings.access_token_ttl),
            amr: amr.to_vec(),
        })?;
        Ok(Issued { session, refresh_token, access_token, cookie })
    }

    /// Ends the oldest live sessions of `account_id` beyond [`MAX_SESSIONS`].
    async fn end_oldest_sessions(&self, account_id: &str, now: SystemTime) -> Result<(), Denied> {
        let mut live: Vec<Session> = self
            .inner
            .store
            .account_sessions(account_id)
            .await
            .map_err(unavailable)?
            .into_iter()
            .filter(|s| s.revoked_at.is_none() && s.expires_at > now)
            .collect();
        if live.len() <= MAX_SESSIONS {
            return Ok(());
        }
        live.sort_by_key(|s| (s.created_at, s.id.clone()));
        let excess = live.len() - MAX_SESSIONS;
        for session in &live[..excess] {
            self.revoke_session(session, RevokeReason::TooMany, now).await?;
        }
        Ok(())
    }

    /// A new access token for `account`'s `session`.
    pub(crate) fn access_token(
        &self,
        account: &Account,
        session: &Session,
        amr: &[String],
        now: SystemTime,
    ) -> Result<String, Denied> {
        let inner = &self.inner;
        let iat = unix(now);
        // Never past the session's own end.
        let exp = (iat + inner.settings.access_token_ttl.as_secs()).min(unix(session.expires_at));
        let claims = AccessClaims {
            iss: inner.signer.signer().issuer().to_owned(),
            aud: ACCESS_AUDIENCE.to_owned(),
            sub: account.subject(),
            sid: session.id.clone(),
            iat,
            exp,
            roles: account.roles.clone(),
            amr: amr.to_vec(),
            token_use: TOKEN_USE.to_owned(),
        };
        inner
            .signer
            .signer()
            .sign_claims(&claims, "at+jwt")
            .map_err(|e| Denied::new(Reason::GatewayInternal).with_detail(e.to_string()))
    }

    fn seal_cookie(&self, session: &CookieSession) -> Result<String, Denied> {
        self.inner.key.seal_value(ACCOUNT_COOKIE, session, from_unix(session.end)).map_err(sealing)
    }

    /// The access-token lifetime, in seconds.
    pub(crate) fn access_ttl(&self) -> u64 {
        self.inner.settings.access_token_ttl.as_secs()
    }

    /// Ends sessions: in the store (their refresh tokens stop working) and
    /// on the revocation list (their cookies and access tokens stop at
    /// once). `keep` is spared (the session changing the password).
    pub(crate) async fn revoke_sessions(
        &self,
        account_id: &str,
        keep: Option<&str>,
        reason: RevokeReason,
        now: SystemTime,
    ) -> Result<u64, Denied> {
        let store = &self.inner.store;
        let live: Vec<Session> = store
            .account_sessions(account_id)
            .await
            .map_err(unavailable)?
            .into_iter()
            .filter(|s| s.revoked_at.is_none() && s.expires_at > now && Some(s.id.as_str()) != keep)
            .collect();
        store.revoke_account_sessions(account_id, keep, reason, now).await.map_err(unavailable)?;
        for session in &live {
            self.revoke_listed(session).await?;
        }
        Ok(live.len() as u64)
    }

    /// Ends one session, in the store and on the revocation list.
    pub(crate) async fn revoke_session(
        &self,
        session: &Session,
        reason: RevokeReason,
        now: SystemTime,
    ) -> Result<(), Denied> {
        self.inner.store.revoke_session(&session.id, reason, now).await.map_err(unavailable)?;
        self.revoke_listed(session).await
    }

    async fn revoke_listed(&self, session: &Session) -> Result<(), Denied> {
        self.inner
            .revocations
            .revoke(&session.id, session.expires_at)
            .await
            .map_err(|e| Denied::new(Reason::SessionUnavailable).with_detail(format!("revocation list: {e}")))
    }

    /// The set-cookie value of a session cookie (empty `value`: clearing).
    #[must_use]
    pub fn cookie_header(name: &str, value: &str, max_age: Duration) -> HeaderValue {
        let text = format!("{name}={value}; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age={}", max_age.as_secs());
        HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static("__Host-invalid=; Path=/; Max-Age=0"))
    }

    /// Checks an account cookie at `now`: the caller's principal, and a
    /// resealed cookie when the store was asked again.
    ///
    /// # Errors
    /// `session.invalid`, `session.expired`, `session.revoked` (with the
    /// cookie cleared), `session.unavailable`.
    pub async fn verify_cookie(&self, value: &str, now: SystemTime) -> Result<SessionOutcome, Denied> {
        self.check_cookie(value, now).await.map_err(|denied| match denied.reason {
            Reason::SessionInvalid | Reason::SessionExpired | Reason::SessionRevoked => {
                denied.with_header(http::header::SET_COOKIE, Self::cookie_header(ACCOUNT_COOKIE, "", Duration::ZERO))
            }
            _ => denied,
        })
    }

    async fn check_cookie(&self, value: &str, now: SystemTime) -> Result<SessionOutcome, Denied> {
        let inner = &self.inner;
        let mut session: CookieSession = inner.key.open_value(ACCOUNT_COOKIE, value, now).map_err(|e| match e {
            SessionError::Expired => Denied::new(Reason::SessionExpired),
            _ => Denied::new(Reason::SessionInvalid),
        })?;
        if session.end <= unix(now) {
            return Err(Denied::new(Reason::SessionExpired));
        }
        self.check_revoked(&session.sid, Reason::SessionRevoked).await?;
        let mut set_cookie = None;
        if session.chk <= unix(now) {
            let (account, _) = self.live_session(&session.sid, &session.acct, now, Reason::SessionRevoked).await?;
            session.ro = account.roles;
            session.chk = unix(now + inner.settings.access_token_ttl).min(session.end);
            let sealed = self.seal_cookie(&session)?;
            set_cookie = Some(Self::cookie_header(
                ACCOUNT_COOKIE,
                &sealed,
                from_unix(session.end).duration_since(now).unwrap_or_default(),
            ));
        }
        let mut principal =
            Principal::new(format!("account:{}", session.acct), AuthMethod::Account, session.sid.as_bytes());
        principal.issuer = Some("portcullis".to_owned());
        principal.roles = session.ro;
        principal.expires_at = Some(from_unix(session.end));
        principal.session_id = Some(session.sid);
        Ok(SessionOutcome { principal, set_cookie })
    }

    /// Refuses a session on the revocation list with `reason`.
    async fn check_revoked(&self, sid: &str, reason: Reason) -> Result<(), Denied> {
        match self.inner.revocations.is_revoked(sid).await {
            Ok(false) => Ok(()),
            Ok(true) => Err(Denied::new(reason).with_detail("session ended")),
            // Fail closed: a revoked session must not pass while the list is unreadable.
            Err(e) => Err(Denied::new(Reason::SessionUnavailable).with_detail(format!("revocation list: {e}"))),
        }
    }

    /// The account of a session that is alive in the store and belongs to
    /// `account_id`, the account enabled; else `reason`.
    pub(crate) async fn live_session(
        &self,
        sid: &str,
        account_id: &str,
        now: SystemTime,
        reason: Reason,
    ) -> Result<(Account, Session), Denied> {
        let store = &self.inner.store;
        let session = store.session(sid).await.map_err(unavailable)?;
        let Some(session) = session.filter(|s| s.account_id == account_id) else {
            return Err(Denied::new(reason).with_detail("no such session"));
        };
        if session.revoked_at.is_some() {
            return Err(Denied::new(reason)
                .with_detail(format!("session revoked ({})", session.revoked_reason.as_deref().unwrap_or("unknown"))));
        }
        if session.expires_at <= now {
            return Err(Denied::new(Reason::SessionExpired));
        }
        let account = store.account(account_id).await.map_err(unavailable)?;
        match account {
            Some(account) if account.disabled_at.is_none() => Ok((account, session)),
            Some(_) => Err(Denied::new(reason).with_detail("account disabled")),
            None => Err(Denied::new(reason).with_detail("account deleted")),
        }
    }

    /// Whether `token` names one of the gateway's keys.
    fn recognises(&self, token: &str) -> bool {
        portcullis_policy::jwt::parse(token, self.inner.token_policy.max_token_bytes)
            .ok()
            .and_then(|parts| parts.kid)
            .is_some_and(|kid| self.inner.token_keys.has_kid(&kid))
    }

    /// Verifies an access token at `now`.
    ///
    /// # Errors
    /// `account.token_expired`, `account.token_invalid` (also for a revoked
    /// session), `session.unavailable`.
    pub async fn verify_token(&self, token: &str, now: SystemTime) -> Result<Principal, Denied> {
        let inner = &self.inner;
        let challenge = |error: &'static str| portcullis_policy::jwt::challenge(Some(error));
        let invalid = |detail: String| {
            Denied::new(Reason::AccountTokenInvalid)
                .with_detail(detail)
                .with_header(http::header::WWW_AUTHENTICATE, challenge("invalid_token"))
        };
        let verified = portcullis_policy::jwt::verify(token, &inner.token_policy, &inner.token_keys, now).map_err(
            |e| match e {
                JwtError::Expired(_) => Denied::new(Reason::AccountTokenExpired)
                    .with_header(http::header::WWW_AUTHENTICATE, challenge("invalid_token")),
                other => invalid(other.to_string()),
            },
        )?;
        let claims: AccessClaims = serde_json::from_value(serde_json::Value::Object(verified.claims))
            .map_err(|e| invalid(format!("claims: {e}")))?;
        if claims.token_use != TOKEN_USE || claims.aud != ACCESS_AUDIENCE {
            return Err(invalid("not an access token".to_owned()));
        }
        self.check_revoked(&claims.sid, Reason::AccountTokenInvalid).await.map_err(|d| {
            if d.reason == Reason::AccountTokenInvalid { invalid("session ended".to_owned()) } else { d }
        })?;
        let mut principal = Principal::new(claims.sub, AuthMethod::AccountToken, token.as_bytes());
        principal.issuer = Some("portcullis".to_owned());
        principal.roles = claims.roles;
        principal.expires_at = Some(from_unix(claims.exp));
        principal.session_id = Some(claims.sid);
        Ok(principal)
    }

    /// The redirect sending a browser to the login page, back to
    /// `return_to` afterwards.
    #[must_use]
    pub fn login_redirect(return_to: &str) -> Response<portcullis_layers::Body> {
        let rd: String = form_urlencoded::byte_serialize(crate::oidc::safe_return_path(return_to).as_bytes()).collect();
        let mut response = Response::new(portcullis_layers::empty());
        *response.status_mut() = StatusCode::FOUND;
        if let Ok(location) = HeaderValue::from_str(&format!("{LOGIN_PATH}?rd={rd}")) {
            response.headers_mut().insert(LOCATION, location);
        }
        response.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        response
    }
}

/// Removes ended sessions from the store every [`PURGE_EVERY`], for as
/// long as the accounts it serves are in use (a reload drops them, and the
/// task ends at its next turn).
async fn housekeeping(inner: std::sync::Weak<Inner>) {
    let mut tick = tokio::time::interval(PURGE_EVERY);
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        let before = SystemTime::now() - KEEP_ENDED;
        match inner.store.purge_sessions(before).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(sessions = n, "ended account sessions removed from the store"),
            Err(e) => tracing::warn!(error = %e, "ended account sessions could not be removed"),
        }
    }
}

/// The store could not be asked.
pub(crate) fn unavailable(e: impl std::fmt::Display) -> Denied {
    Denied::new(Reason::AccountUnavailable).with_detail(e.to_string())
}

/// A store operation's failure: `account.unavailable` when the store could
/// not be reached, else the gateway's fault.
pub(crate) fn account_error(e: crate::store::accounts::AccountError) -> Denied {
    use crate::store::accounts::AccountError;
    match e {
        AccountError::Store(e) => unavailable(e),
        other => Denied::new(Reason::GatewayInternal).with_detail(other.to_string()),
    }
}

/// A hashing failure as a refusal: `account.busy` (retry in a second) when
/// the pool is saturated.
pub(crate) fn hashing(e: PasswordError) -> Denied {
    match e {
        PasswordError::Busy => Denied::new(Reason::AccountBusy)
            .with_detail("every password-hashing slot stayed busy")
            .with_header(http::header::RETRY_AFTER, HeaderValue::from_static("1")),
        PasswordError::Rejected(rejected) => {
            Denied::new(Reason::AccountPasswordRejected).with_detail(format!("{}: {rejected}", rejected.code()))
        }
        other => Denied::new(Reason::GatewayInternal).with_detail(other.to_string()),
    }
}

fn sealing(e: SessionError) -> Denied {
    Denied::new(Reason::GatewayInternal).with_detail(format!("account cookie: {e}"))
}

#[derive(Debug)]
struct CookieVerifier(AccountService);

impl VerifySession for CookieVerifier {
    fn cookie_name(&self) -> &str {
        ACCOUNT_COOKIE
    }

    fn verify(&self, cookie: &str) -> BoxFuture<'static, Result<SessionOutcome, Denied>> {
        let service = self.0.clone();
        let cookie = cookie.to_owned();
        Box::pin(async move { service.verify_cookie(&cookie, SystemTime::now()).await })
    }

    fn login_redirect(&self, return_to: &str) -> Response<portcullis_layers::Body> {
        AccountService::login_redirect(return_to)
    }

    fn challenge(&self) -> HeaderValue {
        HeaderValue::from_static(CHALLENGE)
    }
}

#[derive(Debug)]
struct TokenVerifier(AccountService);

impl VerifyAccessToken for TokenVerifier {
    fn recognises(&self, token: &str) -> bool {
        self.0.recognises(token)
    }

    fn verify(&self, token: &str) -> AuthFuture {
        let service = self.0.clone();
        let token = token.to_owned();
        Box::pin(async move { service.verify_token(&token, SystemTime::now()).await })
    }
}
