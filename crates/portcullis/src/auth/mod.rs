//! Authentication at run time: builds the verifiers the authentication layer
//! calls (JWT issuers, API keys, OIDC sessions, client certificates) and the
//! signer of upstream identity tokens. The endpoints under `/.portcullis/`
//! that use them are listed in [`crate::gateway::endpoints`].
//!
//! Built once per start or reload, before the workers get the new stack:
//! it opens the store, fetches JWKS and runs OIDC discovery, which are
//! async and may fail — a failed reload keeps the running configuration.

pub mod jwt;
pub mod password;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use portcullis_layers::auth::{Authenticators, MtlsIdentity};
use portcullis_layers::identity::{SignIdentity, UpstreamIdentity};
use portcullis_policy::Principal;
use portcullis_policy::jwt::identity::{IdentitySigner, RetiredKey, SignerError};

use crate::config::{Config, IdentityMode};
use crate::oidc::OidcLogin;
use crate::shared::Revocations;
use crate::store::api_keys::ApiKeyVerifier;

/// Why authentication could not start.
#[derive(Debug, thiserror::Error)]
pub enum AuthStartError {
    /// A JWT issuer.
    #[error(transparent)]
    Jwt(#[from] jwt::JwtStartError),
    /// The API key store.
    #[error("store: {0}")]
    Store(#[from] crate::store::StoreError),
    /// OIDC discovery or the session key.
    #[error("[auth.oidc]: {0}")]
    Oidc(#[from] crate::oidc::OidcError),
    /// The built-in accounts.
    #[error("[auth.accounts]: {0}")]
    Accounts(#[from] crate::accounts::AccountsStartError),
    /// The identity signing key.
    #[error("identity signing key {path}: {reason}")]
    SigningKey {
        /// The key file.
        path: String,
        /// Cause.
        reason: String,
    },
}

/// Everything authentication needs at run time.
#[derive(Debug, Clone)]
pub struct AuthRuntime {
    /// The verifiers, for the layer.
    pub authenticators: Arc<Authenticators>,
    /// The identity signer, when an upstream uses `identity = "jwt"`.
    pub signer: Option<Arc<GatewaySigner>>,
    /// The OIDC login, when `[auth.oidc]` is configured (its endpoints are
    /// in [`crate::gateway::endpoints`]).
    pub login: Option<Arc<OidcLogin>>,
    /// The built-in accounts, when `[auth.accounts]` is configured (their
    /// endpoints are in [`crate::gateway::endpoints`]).
    pub accounts: Option<crate::accounts::AccountService>,
    /// The JWT verifier, when `[auth.jwt]` is configured (its key sets are
    /// part of the admin API's readiness).
    pub jwt: Option<Arc<jwt::JwtVerifier>>,
}

impl AuthRuntime {
    /// Builds the verifiers for `config`.
    ///
    /// # Errors
    /// [`AuthStartError`] naming the part that failed.
    pub async fn start(
        config: &Config,
        revocations: Arc<dyn Revocations>,
        logins: Arc<dyn portcullis_layers::login::LoginStore>,
    ) -> Result<Self, AuthStartError> {
        let auth = &config.auth;
        let mut authenticators = Authenticators::default();
        let mut login = None;
        if let Some(api_keys) = &auth.api_keys {
            let store = crate::store::Store::open(&config.state.store).await?;
            authenticators.api_key = Some(Arc::new(ApiKeyVerifier::new(store, api_keys.cache_ttl)));
            authenticators.api_key_header.clone_from(&api_keys.header);
        }
        if let Some(oidc) = &auth.oidc {
            let oidc = Arc::new(OidcLogin::start(oidc, &config.server.data_dir, revocations.clone()).await?);
            authenticators.session = Some(oidc.clone());
            login = Some(oidc);
        }
        let mut jwt_verifier = None;
        if !auth.jwt.is_empty() {
            let verifier = Arc::new(jwt::JwtVerifier::start(&auth.jwt).await?);
            authenticators.bearer = Some(Arc::new(jwt::Bearer(verifier.clone())));
            jwt_verifier = Some(verifier);
        }
        if let Some(mtls) = &auth.mtls {
            authenticators.mtls = Some(Arc::new(MtlsIdentity { roles: mtls.roles.clone() }));
        }
        // The accounts' access tokens are signed with the identity key too.
        let signer = if config.upstreams.iter().any(|u| u.identity == IdentityMode::Jwt) || auth.accounts.is_some() {
            Some(Arc::new(GatewaySigner::load(&config.server.data_dir, &auth.identity, SystemTime::now())?))
        } else {
            None
        };
        let mut accounts = None;
        if let (Some(settings), Some(signer)) = (&auth.accounts, &signer) {
            let service = crate::accounts::AccountService::start(
                settings,
                &config.state.store,
                &config.server.data_dir,
                signer.clone(),
                revocations,
                logins,
            )
            .await?;
            authenticators.account = Some(service.sessions());
            authenticators.account_token = Some(service.tokens());
            accounts = Some(service);
        }
        Ok(Self { authenticators: Arc::new(authenticators), signer, login, accounts, jwt: jwt_verifier })
    }

    /// How the upstream of `mode` learns identities.
    #[must_use]
    pub fn upstream_identity(&self, mode: IdentityMode) -> UpstreamIdentity {
        match (mode, &self.signer) {
            (IdentityMode::Headers, _) => UpstreamIdentity::Headers,
            (IdentityMode::Jwt, Some(signer)) => UpstreamIdentity::Jwt(signer.clone()),
            // `start` loads a signer whenever an upstream asks for one.
            (IdentityMode::Jwt, None) | (IdentityMode::None, _) => UpstreamIdentity::None,
        }
    }
}

/// The gateway's EdDSA key for upstream identity tokens, kept in the data
/// directory (`identity.key`, PKCS#8, mode 0600) so tokens stay verifiable
/// across restarts and upstreams can cache the JWKS.
///
/// Rotation: a start or reload that finds the key older (by its file's
/// modification time) than `[auth.identity] rotate_after` replaces it. The
/// replaced key's public half goes to `identity.retired.json` and stays in
/// the JWKS until the last token it signed has expired (its `ttl` plus
/// [`RETIRED_MARGIN`]); a start or reload drops retired keys past that.
#[derive(Debug)]
pub struct GatewaySigner {
    signer: IdentitySigner,
}

/// How long a retired key stays published after its last token expired:
/// room for clock skew between the gateway and its upstreams.
pub const RETIRED_MARGIN: Duration = Duration::from_secs(60);

impl GatewaySigner {
    /// Loads the key, generating it on first use and replacing it when it
    /// is due for rotation at `now`.
    ///
    /// # Errors
    /// When the key file or the retired keys cannot be read, written or
    /// parsed.
    pub fn load(
        data_dir: &Path,
        identity: &crate::config::auth::IdentityToken,
        now: SystemTime,
    ) -> Result<Self, AuthStartError> {
        let path = data_dir.join("identity.key");
        let retired_path = data_dir.join("identity.retired.json");
        let error =
            |path: &Path, reason: String| AuthStartError::SigningKey { path: path.display().to_string(), reason };
        let load = |der: &[u8]| {
            IdentitySigner::from_pkcs8(der, identity.issuer.clone(), identity.ttl)
                .map_err(|e| error(&path, e.to_string()))
        };
        let mut retired = read_retired(&retired_path).map_err(|reason| error(&retired_path, reason))?;
        let before = retired.len();
        let mut signer = match std::fs::read(&path) {
            Ok(der) => load(&der)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let der = IdentitySigner::generate_pkcs8().map_err(|e| error(&path, e.to_string()))?;
                std::fs::create_dir_all(data_dir).map_err(|e| error(&path, e.to_string()))?;
                write_private(&path, &der).map_err(|e| error(&path, e.to_string()))?;
                tracing::info!(path = %path.display(), "generated the identity signing key");
                load(&der)?
            }
            Err(e) => return Err(error(&path, e.to_string())),
        };
        let age = std::fs::metadata(&path)
            .and_then(|m| m.modified())
            .map(|modified| now.duration_since(modified).unwrap_or_default())
            .map_err(|e| error(&path, e.to_string()))?;
        if age >= identity.rotate_after {
            let der = IdentitySigner::generate_pkcs8().map_err(|e| error(&path, e.to_string()))?;
            let fresh = load(&der)?;
            retired.push(signer.retire(now, RETIRED_MARGIN));
            // The retired list first: a crash before the key is replaced
            // leaves the old key current and also listed, which is harmless.
            write_retired(&retired_path, &retired).map_err(|e| error(&retired_path, e.to_string()))?;
            replace_private(&path, &der).map_err(|e| error(&path, e.to_string()))?;
            tracing::info!(retired_kid = %signer.kid(), kid = %fresh.kid(), "rotated the identity signing key");
            signer = fresh;
        }
        let now_secs = portcullis_policy::clock::unix_secs(now);
        retired.retain(|r| r.publish_until > now_secs);
        if retired.len() != before {
            write_retired(&retired_path, &retired).map_err(|e| error(&retired_path, e.to_string()))?;
        }
        Ok(Self { signer: signer.with_retired(retired) })
    }

    /// The signer, for the accounts' access tokens.
    #[must_use]
    pub const fn signer(&self) -> &IdentitySigner {
        &self.signer
    }

    /// The public JWKS: the current key, then the retired ones still due.
    #[must_use]
    pub fn jwks(&self) -> serde_json::Value {
        self.signer.jwks(SystemTime::now())
    }
}

/// The retired keys recorded in `path`; none when it does not exist.
fn read_retired(path: &Path) -> Result<Vec<RetiredKey>, String> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| format!("not a list of retired keys: {e}")),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e.to_string()),
    }
}

fn write_retired(path: &Path, retired: &[RetiredKey]) -> std::io::Result<()> {
    let json = serde_json::to_vec_pretty(retired).map_err(std::io::Error::other)?;
    replace_private(path, &json)
}

/// Replaces `path` with `bytes` at once (a new owner-only file renamed over
/// it), so a crash leaves the old content or the new, never half of one.
fn replace_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".new");
    let temporary = path.with_file_name(name);
    match std::fs::remove_file(&temporary) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    write_private(&temporary, bytes)?;
    std::fs::rename(&temporary, path)
}

impl SignIdentity for GatewaySigner {
    fn sign(&self, principal: &Principal, audience: &str) -> Result<String, SignerError> {
        self.signer.sign(principal, audience, SystemTime::now())
    }
}

/// Writes a new file readable by the owner only.
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}
