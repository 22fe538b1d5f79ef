//! OIDC browser login and the sessions it establishes.
//!
//! Defends the browser routes: only a user the provider authenticated, in a
//! login this gateway started, gets a session; a session cannot be forged,
//! altered, moved to another cookie, or replayed after logout or expiry.
//!
//! Decision rules:
//! - Login is the authorization code flow with PKCE (S256), `state` and
//!   `nonce`, all 256-bit random values from aws-lc-rs. They travel in a
//!   sealed, 10-minute `__Host-portcullis-login` cookie, never in server
//!   memory, so any instance can finish a login another one started.
//! - The callback refuses a `state` that does not match that cookie
//!   (`oidc.state`), a provider error or an ID token that does not verify
//!   (signature, issuer, audience, expiry, nonce) (`oidc.callback`), and an
//!   unreachable or misbehaving provider (`oidc.provider`).
//! - The session is a sealed `__Host-portcullis` cookie (`Secure`,
//!   `HttpOnly`, `SameSite=Lax`, `Path=/`, no `Domain`); see
//!   `portcullis_policy::session`. Its lifetime is absolute: refreshes never
//!   extend it.
//! - When the provider's access token has expired (or will within 30
//!   seconds) and a refresh token is held, the next request refreshes it
//!   with the provider; the new cookie is returned to the browser. A refused
//!   refresh ends the session (`session.expired`). Concurrent requests of one
//!   session share a single refresh.
//! - A refused session cookie (invalid, expired, revoked) is cleared with
//!   the 401, so the browser's next navigation goes to login.
//! - Logout revokes the session id until the session would have expired,
//!   clears the cookie, and sends the browser to the provider's
//!   `end_session_endpoint` when it has one (RP-initiated logout).
//! - The return path after login is a same-site relative path; anything
//!   else (`//evil.example`, `https://…`, backslashes) becomes `/`.
//!
//! Deployment caveat: every instance must share `[auth.session]
//! cookie_secret` (a generated key is per data directory), and, once the
//! Redis backend lands, `[state] shared` so a logout is seen by all of them.
//! The provider's signing keys are read at start; a provider key rotation
//! needs a restart.

mod roles;
mod routes;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use futures_util::future::BoxFuture;
use http::header::{CACHE_CONTROL, LOCATION, SET_COOKIE};
use http::{HeaderValue, Response, StatusCode};
use openidconnect::core::{
    CoreAuthDisplay, CoreAuthPrompt, CoreErrorResponseType, CoreGenderClaim, CoreJsonWebKey,
    CoreJweContentEncryptionAlgorithm, CoreJwsSigningAlgorithm, CoreRevocableToken, CoreRevocationErrorResponse,
    CoreTokenIntrospectionResponse, CoreTokenType,
};
use openidconnect::{
    AdditionalClaims, ClientId, ClientSecret, EmptyExtraTokenFields, EndpointMaybeSet, EndpointNotSet, EndpointSet,
    IdToken, IdTokenFields, IssuerUrl, Nonce, OAuth2TokenResponse, ProviderMetadataWithLogout, RedirectUrl,
    RefreshToken, RequestTokenError, StandardErrorResponse, StandardTokenResponse,
};
use portcullis_layers::verify::{SessionOutcome, VerifySession};
use portcullis_policy::session::{SESSION_COOKIE, SessionData, SessionError, SessionKey, from_unix, unix};
use portcullis_policy::{AuthMethod, Denied, Principal, Reason};
use serde::{Deserialize, Serialize};

pub use roles::roles;
pub use routes::{CALLBACK_PATH, LOGIN_PATH, LOGOUT_PATH, router, safe_return_path};

use crate::config::oidc::Oidc;
use crate::http_client::{HttpClient, HttpClientError, HttpClientLimits};
use crate::shared::Revocations;

/// The `WWW-Authenticate` challenge of session routes: the `Cookie` scheme
/// of draft-broyer-http-cookie-auth, since no registered scheme describes a
/// login form. Names [`LOGIN_PATH`] and [`SESSION_COOKIE`].
const CHALLENGE: &str =
    r#"Cookie realm="portcullis", form-action="/.portcullis/login", cookie-name="__Host-portcullis""#;

/// How long before the access token's expiry a refresh is made.
pub const REFRESH_MARGIN: Duration = Duration::from_secs(30);

/// How long a refresh result is shared with concurrent requests.
const REFRESH_SHARE: Duration = Duration::from_secs(30);

/// The file a generated cookie key is kept in, inside the data directory.
pub const KEY_FILE: &str = "session.key";

/// Why OIDC login could not start. Never contains secrets.
#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    /// The outbound client could not be built.
    #[error("OIDC HTTP client: {0}")]
    Http(#[from] HttpClientError),
    /// A configured URL was refused by the OIDC library.
    #[error("invalid {what}: {reason}")]
    Url {
        /// Which setting.
        what: &'static str,
        /// Why.
        reason: String,
    },
    /// Discovery failed (unreachable provider, bad document, issuer mismatch).
    #[error("OIDC discovery at {issuer} failed: {reason}")]
    Discovery {
        /// The configured issuer.
        issuer: String,
        /// Why.
        reason: String,
    },
    /// The provider has no token endpoint.
    #[error("the provider {0} publishes no token endpoint")]
    NoTokenEndpoint(String),
    /// The cookie key could not be read or generated.
    #[error("session key {path}: {reason}")]
    Key {
        /// The key file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

/// Every claim of the ID token, for the roles claim paths.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AllClaims {
    #[serde(flatten)]
    claims: serde_json::Map<String, serde_json::Value>,
}

impl AdditionalClaims for AllClaims {}

type Fields = IdTokenFields<
    AllClaims,
    EmptyExtraTokenFields,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJwsSigningAlgorithm,
>;
type Tokens = StandardTokenResponse<Fields, CoreTokenType>;
type OidcIdToken = IdToken<AllClaims, CoreGenderClaim, CoreJweContentEncryptionAlgorithm, CoreJwsSigningAlgorithm>;
type OidcClient = openidconnect::Client<
    AllClaims,
    CoreAuthDisplay,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJsonWebKey,
    CoreAuthPrompt,
    StandardErrorResponse<CoreErrorResponseType>,
    Tokens,
    CoreTokenIntrospectionResponse,
    CoreRevocableToken,
    CoreRevocationErrorResponse,
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;
type TokenError = RequestTokenError<HttpClientError, StandardErrorResponse<CoreErrorResponseType>>;

/// OIDC login and the session verifier. Cheap to clone.
#[derive(Clone)]
pub struct OidcLogin {
    inner: Arc<Inner>,
}

struct Inner {
    client: OidcClient,
    http: HttpClient,
    key: SessionKey,
    revocations: Arc<dyn Revocations>,
    issuer: String,
    client_id: String,
    scopes: Vec<String>,
    roles_claim: Vec<String>,
    role_map: std::collections::BTreeMap<String, String>,
    lifetime: Duration,
    end_session: Option<String>,
    post_logout_redirect: Option<String>,
    /// The gateway's origin (`https://app.example.com`), for same-origin checks.
    public_url: String,
    /// Refreshes in flight or just done, by refresh-token fingerprint.
    refreshing: Mutex<HashMap<String, (Instant, RefreshCell)>>,
}

type RefreshCell = Arc<tokio::sync::OnceCell<Result<SessionData, Denied>>>;

impl std::fmt::Debug for OidcLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcLogin")
            .field("issuer", &self.inner.issuer)
            .field("client_id", &self.inner.client_id)
            .field("end_session", &self.inner.end_session)
            .finish_non_exhaustive()
    }
}

impl OidcLogin {
    /// Discovers the provider and prepares login. The cookie key comes from
    /// `[auth.session] cookie_secret`, or from `data_dir/session.key`
    /// (generated, mode 0600, when absent).
    ///
    /// # Errors
    /// [`OidcError`] when the provider cannot be discovered or the key
    /// cannot be read or written.
    pub async fn start(config: &Oidc, data_dir: &Path, revocations: Arc<dyn Revocations>) -> Result<Self, OidcError> {
        let key = match &config.cookie_secret {
            Some(secret) => SessionKey::new(secret.expose().as_bytes())
                .map_err(|e| OidcError::Key { path: "cookie_secret".into(), reason: e.to_string() })?,
            None => session_key_from_file(&data_dir.join(KEY_FILE))?,
        };
        let http = HttpClient::new(config.ca.as_deref(), HttpClientLimits::default())?;
        let issuer_url = IssuerUrl::new(config.issuer.clone())
            .map_err(|e| OidcError::Url { what: "issuer", reason: e.to_string() })?;
        let metadata = ProviderMetadataWithLogout::discover_async(issuer_url, &http)
            .await
            .map_err(|e| OidcError::Discovery { issuer: config.issuer.clone(), reason: error_chain(&e) })?;
        if metadata.token_endpoint().is_none() {
            return Err(OidcError::NoTokenEndpoint(config.issuer.clone()));
        }
        let end_session = metadata.additional_metadata().end_session_endpoint.as_ref().map(|u| u.url().to_string());
        let redirect = RedirectUrl::new(config.redirect_url.clone())
            .map_err(|e| OidcError::Url { what: "public_url", reason: e.to_string() })?;
        let client = OidcClient::from_provider_metadata(
            metadata,
            ClientId::new(config.client_id.clone()),
            config.client_secret.as_ref().map(|s| ClientSecret::new(s.expose().to_owned())),
        )
        .set_redirect_uri(redirect);
        tracing::info!(issuer = %config.issuer, end_session = end_session.is_some(), "OIDC provider discovered");
        Ok(Self {
            inner: Arc::new(Inner {
                client,
                http,
                key,
                revocations,
                issuer: config.issuer.clone(),
                client_id: config.client_id.clone(),
                // openidconnect adds `openid` itself.
                scopes: config.scopes.iter().filter(|s| *s != "openid").cloned().collect(),
                roles_claim: config.roles_claim.clone(),
                role_map: config.role_map.clone(),
                lifetime: config.lifetime,
                end_session,
                post_logout_redirect: config.post_logout_redirect.clone(),
                public_url: config.public_url.clone(),
                refreshing: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The provider's `end_session_endpoint`, if it publishes one.
    #[must_use]
    pub fn end_session_endpoint(&self) -> Option<&str> {
        self.inner.end_session.as_deref()
    }

    /// Checks a session cookie value at `now`, refreshing it when due.
    ///
    /// # Errors
    /// `session.invalid`, `session.expired` or `session.revoked` denials.
    pub async fn verify_at(&self, cookie: &str, now: SystemTime) -> Result<SessionOutcome, Denied> {
        self.inner.verify(cookie, now).await
    }
}

impl VerifySession for OidcLogin {
    fn cookie_name(&self) -> &str {
        SESSION_COOKIE
    }

    fn verify(&self, cookie: &str) -> BoxFuture<'static, Result<SessionOutcome, Denied>> {
        let inner = self.inner.clone();
        let cookie = cookie.to_owned();
        Box::pin(async move { inner.verify(&cookie, SystemTime::now()).await })
    }

    fn login_redirect(&self, return_to: &str) -> Response<portcullis_layers::Body> {
        let rd: String =
            openidconnect::url::form_urlencoded::byte_serialize(safe_return_path(return_to).as_bytes()).collect();
        let mut response = Response::new(portcullis_layers::empty());
        *response.status_mut() = StatusCode::FOUND;
        if let Ok(location) = HeaderValue::from_str(&format!("{LOGIN_PATH}?rd={rd}")) {
            response.headers_mut().insert(LOCATION, location);
        }
        response.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        response
    }

    fn challenge(&self) -> HeaderValue {
        // The `Cookie` scheme of draft-broyer-http-cookie-auth: there is no
        // registered scheme for form login, and this one says where it is.
        HeaderValue::from_static(CHALLENGE)
    }
}

impl Inner {
    /// A refused session also clears its cookie: the browser would
    /// otherwise present the dead cookie, and be refused, until its
    /// `Max-Age` ran out, instead of being sent to login.
    async fn verify(&self, cookie: &str, now: SystemTime) -> Result<SessionOutcome, Denied> {
        self.check(cookie, now).await.map_err(|denied| match denied.reason {
            Reason::SessionInvalid | Reason::SessionExpired | Reason::SessionRevoked => {
                denied.with_header(SET_COOKIE, session_cookie("", now, now))
            }
            _ => denied,
        })
    }

    async fn check(&self, cookie: &str, now: SystemTime) -> Result<SessionOutcome, Denied> {
        let mut data = self.key.open(cookie, now).map_err(session_denied)?;
        if data.issuer != self.issuer {
            return Err(Denied::new(Reason::SessionInvalid).with_detail("session of another issuer"));
        }
        match self.revocations.is_revoked(&data.id).await {
            Ok(false) => {}
            Ok(true) => return Err(Denied::new(Reason::SessionRevoked)),
            Err(e) => {
                // Fail closed: a revoked session must not pass while the list is unreadable.
                return Err(Denied::new(Reason::SessionUnavailable).with_detail(format!("revocation list: {e}")));
            }
        }
        let mut set_cookie = None;
        if data.refresh_token.is_some() && data.access_due(now, REFRESH_MARGIN) {
            data = self.refresh_shared(&data, now).await?;
            let sealed = self.key.seal(&data, now).map_err(session_denied)?;
            set_cookie = Some(session_cookie(&sealed, data.expires(), now));
        }
        Ok(SessionOutcome { principal: principal(&data), set_cookie })
    }

    /// One refresh per refresh token, shared by concurrent requests: a
    /// provider rotating refresh tokens would refuse the second use.
    async fn refresh_shared(&self, data: &SessionData, now: SystemTime) -> Result<SessionData, Denied> {
        let token = data.refresh_token.as_deref().unwrap_or_default();
        // The session id and the whole token's digest: a shared result can
        // only ever go to the session it was refreshed for.
        let digest = portcullis_policy::jwt::cache::TokenCache::key(token);
        let id = format!("{}:{}", data.id, digest.iter().map(|b| format!("{b:02x}")).collect::<String>());
        let cell = {
            let mut map = self.refreshing.lock().unwrap_or_else(PoisonError::into_inner);
            map.retain(|_, (started, _)| started.elapsed() < REFRESH_SHARE);
            map.entry(id.clone()).or_insert_with(|| (Instant::now(), RefreshCell::default())).1.clone()
        };
        let result = cell.get_or_init(|| self.refresh(data.clone(), now)).await.clone();
        match result {
            Ok(refreshed) if refreshed.id != data.id => {
                Err(Denied::new(Reason::GatewayInternal).with_detail("a shared refresh answered another session"))
            }
            // The provider could not be reached: the next request tries again.
            Err(denied) if denied.reason == Reason::OidcProvider => {
                self.refreshing.lock().unwrap_or_else(PoisonError::into_inner).remove(&id);
                Err(denied)
            }
            other => other,
        }
    }

    async fn refresh(&self, mut data: SessionData, now: SystemTime) -> Result<SessionData, Denied> {
        let expired = |detail: String| Denied::new(Reason::SessionExpired).with_detail(detail);
        let token = RefreshToken::new(data.refresh_token.clone().unwrap_or_default());
        let request =
            self.client.exchange_refresh_token(&token).map_err(|e| expired(format!("refresh not possible: {e}")))?;
        let tokens = request.request_async(&self.http).await.map_err(|e| match e {
            // The provider refused the grant (revoked, expired, reused): the
            // session is over.
            RequestTokenError::ServerResponse(_) => expired(token_error("refresh", &e)),
            // It could not be asked: a provider outage must not log everyone
            // out; the session stays and the request gets 502.
            _ => Denied::new(Reason::OidcProvider).with_detail(token_error("refresh", &e)),
        })?;
        if let Some(id_token) = tokens.extra_fields().id_token() {
            // Refreshed ID tokens carry no nonce (OIDC Core §12.2).
            let verifier = self.client.id_token_verifier();
            let claims = id_token
                .claims(&verifier, |_: Option<&Nonce>| Ok(()))
                .map_err(|e| expired(format!("refreshed ID token: {e}")))?;
            if claims.subject().as_str() != data.subject {
                return Err(expired("refreshed ID token names another subject".into()));
            }
            data.roles = roles(&claims.additional_claims().claims, &self.roles_claim, &self.role_map);
        }
        data.access_expires_at = tokens.expires_in().and_then(|d| now.checked_add(d)).map(unix);
        if let Some(rotated) = tokens.refresh_token() {
            data.refresh_token = Some(rotated.secret().clone());
        }
        if let Some(scopes) = tokens.scopes() {
            data.scopes = scopes.iter().map(|s| s.to_string()).collect();
        }
        tracing::debug!(session = %portcullis_policy::principal::fingerprint(data.id.as_bytes()), "session refreshed");
        Ok(data)
    }

    /// A new session from a verified code exchange.
    fn new_session(
        &self,
        tokens: &Tokens,
        id_token: &OidcIdToken,
        nonce: &Nonce,
        now: SystemTime,
    ) -> Result<SessionData, Denied> {
        let callback = |detail: String| Denied::new(Reason::OidcCallback).with_detail(detail);
        let verifier = self.client.id_token_verifier();
        let claims = id_token.claims(&verifier, nonce).map_err(|e| callback(format!("ID token: {e}")))?;
        let id = portcullis_policy::session::new_session_id()
            .map_err(|e| Denied::new(Reason::GatewayInternal).with_detail(e.to_string()))?;
        let scopes = tokens.scopes().map_or_else(
            || std::iter::once("openid".to_owned()).chain(self.scopes.iter().cloned()).collect(),
            |s| s.iter().map(|s| s.to_string()).collect(),
        );
        Ok(SessionData {
            id,
            subject: claims.subject().as_str().to_owned(),
            roles: roles(&claims.additional_claims().claims, &self.roles_claim, &self.role_map),
            scopes,
            issuer: self.issuer.clone(),
            issued_at: unix(now),
            expires_at: unix(now + self.lifetime),
            access_expires_at: tokens.expires_in().and_then(|d| now.checked_add(d)).map(unix),
            refresh_token: tokens.refresh_token().map(|t| t.secret().clone()),
        })
    }
}

/// The principal of a verified session.
fn principal(data: &SessionData) -> Principal {
    let mut principal = Principal::new(data.subject.clone(), AuthMethod::Session, data.id.as_bytes());
    // Sessions are vouched for by this gateway (see `Principal::issuer`).
    principal.issuer = Some("portcullis".to_owned());
    principal.roles.clone_from(&data.roles);
    principal.scopes.clone_from(&data.scopes);
    principal.expires_at = Some(data.expires());
    principal.session_id = Some(data.id.clone());
    principal
}

fn session_denied(error: SessionError) -> Denied {
    match error {
        SessionError::Expired => Denied::new(Reason::SessionExpired),
        SessionError::Seal | SessionError::TooLarge(_) | SessionError::ShortSecret => {
            Denied::new(Reason::GatewayInternal).with_detail(format!("session cookie: {error}"))
        }
        SessionError::Invalid => Denied::new(Reason::SessionInvalid),
    }
}

/// A `Set-Cookie` value for a session cookie (or a clearing one when
/// `value` is empty and `expires` is `now`).
fn session_cookie(value: &str, expires: SystemTime, now: SystemTime) -> HeaderValue {
    cookie(SESSION_COOKIE, value, expires.duration_since(now).unwrap_or_default())
}

/// A `__Host-` cookie: `Secure`, `HttpOnly`, `SameSite=Lax`, `Path=/`, no
/// `Domain`. `Lax` (not `Strict`) so the cookie accompanies the top-level
/// navigation back from the provider.
fn cookie(name: &str, value: &str, max_age: Duration) -> HeaderValue {
    let text = format!("{name}={value}; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age={}", max_age.as_secs());
    // Sealed values are base64url: always a valid header value.
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static("__Host-invalid=; Path=/; Max-Age=0"))
}

fn token_error(what: &str, error: &TokenError) -> String {
    match error {
        RequestTokenError::ServerResponse(response) => {
            format!("{what} refused by the provider: {}", response.error().as_ref())
        }
        RequestTokenError::Request(e) => format!("{what}: {e}"),
        RequestTokenError::Parse(e, _) => format!("{what}: unparsable answer: {e}"),
        RequestTokenError::Other(e) => format!("{what}: {e}"),
    }
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Reads the generated cookie key, creating it (48 random bytes, base64url,
/// mode 0600) when absent.
pub fn session_key_from_file(path: &Path) -> Result<SessionKey, OidcError> {
    let fail = |reason: String| OidcError::Key { path: path.to_path_buf(), reason };
    let secret = match std::fs::read_to_string(path) {
        Ok(text) => text.trim().to_owned(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let secret =
                portcullis_policy::session::random_token(48).map_err(|e| fail(format!("cannot generate: {e}")))?;
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(|e| fail(e.to_string()))?;
            }
            write_new_private(path, secret.as_bytes()).map_err(|e| fail(e.to_string()))?;
            tracing::info!(path = %path.display(), "generated a session cookie key (one instance only; set [auth.session] cookie_secret for several)");
            secret
        }
        Err(e) => return Err(fail(e.to_string())),
    };
    SessionKey::new(secret.as_bytes()).map_err(|e| fail(e.to_string()))
}

fn write_new_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)?.write_all(bytes)
}

/// Seconds-precision expiry as a time (for the login cookie).
fn expiry(now: SystemTime, ttl: Duration) -> SystemTime {
    from_unix(unix(now + ttl))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_have_the_host_prefix_attributes() {
        let value = session_cookie("abc", SystemTime::UNIX_EPOCH + Duration::from_secs(100), SystemTime::UNIX_EPOCH);
        assert_eq!(value, "__Host-portcullis=abc; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=100");
        assert!(!value.to_str().unwrap().contains("Domain"));
    }

    #[test]
    fn challenge_names_the_login_path_and_the_cookie() {
        assert!(CHALLENGE.contains(&format!("form-action=\"{LOGIN_PATH}\"")));
        assert!(CHALLENGE.contains(&format!("cookie-name=\"{SESSION_COOKIE}\"")));
    }

    #[test]
    fn generated_key_is_private_and_stable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join(KEY_FILE);
        let first = session_key_from_file(&path).unwrap();
        let second = session_key_from_file(&path).unwrap();
        let data = SessionData {
            id: "id".into(),
            subject: "s".into(),
            roles: vec![],
            scopes: vec![],
            issuer: "i".into(),
            issued_at: 0,
            expires_at: unix(SystemTime::now()) + 3600,
            access_expires_at: None,
            refresh_token: None,
        };
        let sealed = first.seal(&data, SystemTime::now()).unwrap();
        assert_eq!(second.open(&sealed, SystemTime::now()).unwrap(), data);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
    }
}
