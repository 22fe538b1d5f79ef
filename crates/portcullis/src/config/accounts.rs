//! `[auth.accounts]`: the built-in accounts kept in the `[state] store` — who
//! may register, how passwords are hashed, how long tokens live, and which
//! roles must have a second factor.
//!
//! Decision rules:
//! - `registration` is `closed` (the default: accounts come from
//!   `portcullis user add` only), `invite` (single-use codes from
//!   `portcullis invite create`) or `open`.
//! - Hashing is argon2id; a `hash_memory` or `hash_iterations` below OWASP's
//!   floor (m = 19 MiB, t = 2, p = 1) is refused at the key, not raised: a
//!   configuration that asks for weak hashes is a mistake to show, not to
//!   repair silently. The caps keep one hash from taking a second or more
//!   and a gigabyte of memory.
//! - `access_token_ttl` is 1 minute to 1 hour (an access token cannot be
//!   revoked before it expires); `refresh_token_ttl` is longer than it and at
//!   most 90 days; `refresh_reuse_grace` is at most 1 minute.
//! - `mfa_required_roles` names roles in the accounts' alphabet; whether the
//!   admin roles are among them is a `portcullis check` finding.
//!
//! Deployment caveat: `hash_concurrency` cores can be busy hashing at once;
//! the default (half the cores) leaves the rest to proxying.

use std::time::Duration;

use portcullis_policy::password::HashParams;
use toml::Spanned;

use super::error::Collector;
use super::raw::{RawConfig, Size};
use super::values::{DURATION_EXAMPLE, choice, duration, duration_or_zero};

/// How long a caller waits for a hashing slot by default.
pub const DEFAULT_HASH_QUEUE_TIMEOUT: Duration = crate::auth::password::DEFAULT_QUEUE_TIMEOUT;
/// The longest `hash_queue_timeout`: a login waiting longer has been abandoned.
pub const MAX_HASH_QUEUE_TIMEOUT: Duration = Duration::from_secs(30);
/// Access tokens live 5 minutes: the longest a disabled account or a revoked
/// session keeps working through a token already issued.
pub const DEFAULT_ACCESS_TOKEN_TTL: Duration = Duration::from_secs(5 * 60);
/// Sessions (refresh tokens) live 7 days from login, not extended by use.
pub const DEFAULT_REFRESH_TOKEN_TTL: Duration = Duration::from_secs(7 * 86_400);
/// A replaced refresh token presented within 10 s of its rotation is refused
/// without revoking its family (two tabs refreshing at once).
pub const DEFAULT_REFRESH_REUSE_GRACE: Duration = Duration::from_secs(10);

const MIN_ACCESS_TOKEN_TTL: Duration = Duration::from_secs(60);
const MAX_ACCESS_TOKEN_TTL: Duration = Duration::from_secs(3600);
const MAX_REFRESH_TOKEN_TTL: Duration = Duration::from_secs(90 * 86_400);
const MAX_REFRESH_REUSE_GRACE: Duration = Duration::from_secs(60);
const MAX_HASH_MEMORY_KIB: u32 = 1024 * 1024;
const MAX_HASH_ITERATIONS: u32 = 64;
const MAX_HASH_PARALLELISM: u32 = 64;
const MAX_HASH_CONCURRENCY: usize = 1024;

/// `[auth.accounts] registration`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Registration {
    /// Only an administrator creates accounts (`portcullis user add`).
    #[default]
    Closed,
    /// Anyone holding a single-use invite code may register.
    Invite,
    /// Anyone may register.
    Open,
}

impl Registration {
    /// The configuration's word for it.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Invite => "invite",
            Self::Open => "open",
        }
    }
}

/// `[auth.accounts]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accounts {
    /// Who may create an account.
    pub registration: Registration,
    /// argon2id parameters of new hashes (never weaker than OWASP's).
    pub hash: HashParams,
    /// Hashes running at once; `None`: half the machine's cores.
    pub hash_concurrency: Option<usize>,
    /// Longest wait for a hashing slot before a login is told to retry.
    pub hash_queue_timeout: Duration,
    /// Lifetime of an access token.
    pub access_token_ttl: Duration,
    /// Lifetime of a session and its refresh tokens, from login.
    pub refresh_token_ttl: Duration,
    /// How long a replaced refresh token is refused without revoking its family.
    pub refresh_reuse_grace: Duration,
    /// Roles whose accounts must have a second factor.
    pub mfa_required_roles: Vec<String>,
    /// The origin users reach the gateway at (`https://app.example.com`):
    /// passkeys are bound to its host, and state-changing account requests
    /// must come from it. `None`: the request's own `Host`.
    pub public_url: Option<String>,
    /// `cookie_secret`; `None`: the key generated into the data directory
    /// (`session.key`, shared with OIDC sessions).
    pub cookie_secret: Option<super::secret::Secret>,
    /// Whether and how passkeys log in.
    pub passkeys: Passkeys,
}

/// `[auth.accounts] passkeys`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Passkeys {
    /// No passkeys.
    #[default]
    Off,
    /// A passkey is a second factor after the password.
    SecondFactor,
    /// A passkey is a second factor, or logs in alone (username, then passkey).
    Passwordless,
}

impl Default for Accounts {
    fn default() -> Self {
        Self {
            registration: Registration::Closed,
            hash: HashParams::OWASP,
            hash_concurrency: None,
            hash_queue_timeout: DEFAULT_HASH_QUEUE_TIMEOUT,
            access_token_ttl: DEFAULT_ACCESS_TOKEN_TTL,
            refresh_token_ttl: DEFAULT_REFRESH_TOKEN_TTL,
            refresh_reuse_grace: DEFAULT_REFRESH_REUSE_GRACE,
            mfa_required_roles: Vec::new(),
            public_url: None,
            cookie_secret: None,
            passkeys: Passkeys::Off,
        }
    }
}

impl Accounts {
    /// The hashing pool's size: `hash_concurrency`, or half the cores.
    #[must_use]
    pub fn hash_slots(&self) -> usize {
        self.hash_concurrency.unwrap_or_else(crate::auth::password::PasswordHasher::default_concurrency)
    }
}

pub(super) fn build_accounts(
    c: &mut Collector<'_>,
    raw: &RawConfig,
    base: &std::path::Path,
    env: &super::sources::Sources<'_>,
) -> Option<Accounts> {
    let a = raw.auth.accounts.as_ref()?.get_ref();
    let defaults = Accounts::default();
    let registration = choice(
        c,
        a.registration.as_ref(),
        Registration::Closed,
        "registration",
        &[("closed", Registration::Closed), ("invite", Registration::Invite), ("open", Registration::Open)],
    );
    let hash = HashParams {
        memory_kib: hash_memory(c, a.hash_memory.as_ref()),
        iterations: count(
            c,
            a.hash_iterations.as_ref(),
            HashParams::OWASP.iterations,
            MAX_HASH_ITERATIONS,
            "hash_iterations",
        ),
        parallelism: count(c, a.hash_parallelism.as_ref(), 1, MAX_HASH_PARALLELISM, "hash_parallelism"),
    };
    let hash_concurrency = a.hash_concurrency.as_ref().and_then(|value| match usize::try_from(*value.get_ref()) {
        Ok(n) if (1..=MAX_HASH_CONCURRENCY).contains(&n) => Some(n),
        _ => {
            c.error(value.span(), "hash_concurrency is out of range")
                .expected(format!("between 1 and {MAX_HASH_CONCURRENCY}"))
                .help("omit it for half the machine's cores");
            None
        }
    });
    let parsed = duration_or_zero(c, a.hash_queue_timeout.as_ref(), defaults.hash_queue_timeout, "hash_queue_timeout");
    let hash_queue_timeout = capped(
        c,
        a.hash_queue_timeout.as_ref(),
        parsed,
        MAX_HASH_QUEUE_TIMEOUT,
        "hash_queue_timeout",
        "a login that waits longer for a hashing slot has been given up by its user; \"0s\" never waits",
    );
    let access_token_ttl = duration(c, a.access_token_ttl.as_ref(), defaults.access_token_ttl, "access_token_ttl");
    let access_token_ttl = if access_token_ttl < MIN_ACCESS_TOKEN_TTL {
        if let Some(value) = &a.access_token_ttl {
            c.error(value.span(), format!("access_token_ttl {:?} is shorter than a minute", value.get_ref()))
                .expected("between \"1m\" and \"1h\"")
                .help("clients would refresh on nearly every request");
        }
        defaults.access_token_ttl
    } else {
        capped(
            c,
            a.access_token_ttl.as_ref(),
            access_token_ttl,
            MAX_ACCESS_TOKEN_TTL,
            "access_token_ttl",
            "an access token cannot be revoked before it expires; keep it short and let clients refresh",
        )
    };
    let parsed = duration(c, a.refresh_token_ttl.as_ref(), defaults.refresh_token_ttl, "refresh_token_ttl");
    let refresh_token_ttl = capped(
        c,
        a.refresh_token_ttl.as_ref(),
        parsed,
        MAX_REFRESH_TOKEN_TTL,
        "refresh_token_ttl",
        "a session ends this long after login, however often it is refreshed",
    );
    if refresh_token_ttl <= access_token_ttl
        && let Some(value) = a.refresh_token_ttl.as_ref().or(a.access_token_ttl.as_ref())
    {
        c.error(value.span(), "refresh_token_ttl is not longer than access_token_ttl")
            .help("a refresh token exists to outlive the access tokens it renews");
    }
    let parsed =
        duration_or_zero(c, a.refresh_reuse_grace.as_ref(), defaults.refresh_reuse_grace, "refresh_reuse_grace");
    let refresh_reuse_grace = capped(
        c,
        a.refresh_reuse_grace.as_ref(),
        parsed,
        MAX_REFRESH_REUSE_GRACE,
        "refresh_reuse_grace",
        "the grace only absorbs two refreshes sent at once; a replaced token is refused either way",
    );
    let mut mfa_required_roles: Vec<String> = Vec::new();
    for role in a.mfa_required_roles.iter().flat_map(|list| list.get_ref()) {
        let name = role.get_ref();
        if !portcullis_policy::principal::is_valid_name(name) {
            c.error(role.span(), format!("invalid role {name:?}")).expected("1 to 64 of A-Z a-z 0-9 . _ : / -");
        } else if !mfa_required_roles.contains(name) {
            mfa_required_roles.push(name.clone());
        }
    }
    let public_url = a.public_url.as_ref().and_then(|v| super::oidc::url(c, v, "public_url", true));
    let cookie_secret = a.cookie_secret.as_ref().and_then(|value| super::oidc::cookie_secret(c, value, base, env));
    let passkeys = choice(
        c,
        a.passkeys.as_ref(),
        Passkeys::Off,
        "passkeys",
        &[("off", Passkeys::Off), ("second_factor", Passkeys::SecondFactor), ("passwordless", Passkeys::Passwordless)],
    );
    if passkeys != Passkeys::Off
        && public_url.is_none()
        && let Some(value) = &a.passkeys
    {
        c.error(value.span(), "passkeys need public_url").help(
            "passkeys are bound to the site's origin: set public_url = \"https://app.example.com\" in [auth.accounts]",
        );
    }
    Some(Accounts {
        registration,
        hash,
        hash_concurrency,
        hash_queue_timeout,
        access_token_ttl,
        refresh_token_ttl,
        refresh_reuse_grace,
        mfa_required_roles,
        public_url,
        cookie_secret,
        passkeys,
    })
}

/// `hash_memory` in KiB: at least OWASP's 19 MiB, at most 1 GiB.
fn hash_memory(c: &mut Collector<'_>, value: Option<&Spanned<Size>>) -> u32 {
    let floor = HashParams::OWASP.memory_kib;
    let Some(value) = value else { return floor };
    let bytes = match value.get_ref() {
        Size::Bytes(n) => u64::try_from(*n).ok(),
        Size::Text(text) => text.trim().parse::<bytesize::ByteSize>().ok().map(|b| b.as_u64()),
    };
    let Some(kib) = bytes.map(|b| b / 1024) else {
        c.error(value.span(), "invalid hash_memory").expected("a size such as \"19MiB\" or \"64MiB\"");
        return floor;
    };
    if kib < u64::from(floor) {
        c.error(value.span(), format!("hash_memory {kib} KiB is weaker than OWASP's floor of 19 MiB"))
            .expected("at least \"19MiB\"")
            .help("argon2id with less memory is cheaper to attack with GPUs; omit hash_memory for 19 MiB");
        return floor;
    }
    match u32::try_from(kib) {
        Ok(kib) if kib <= MAX_HASH_MEMORY_KIB => kib,
        _ => {
            c.error(value.span(), format!("hash_memory {kib} KiB is too large"))
                .expected("at most \"1GiB\"")
                .help("every hash in flight holds this much memory: hash_concurrency times hash_memory in all");
            floor
        }
    }
}

/// `hash_iterations` or `hash_parallelism`: from `floor` (OWASP's) to `max`.
fn count(c: &mut Collector<'_>, value: Option<&Spanned<i64>>, floor: u32, max: u32, what: &str) -> u32 {
    let Some(value) = value else { return floor };
    match u32::try_from(*value.get_ref()) {
        Ok(n) if n < floor => {
            c.error(value.span(), format!("{what} {n} is weaker than OWASP's floor of {floor}"))
                .expected(format!("between {floor} and {max}"))
                .help(format!("omit {what} for OWASP's {floor}"));
            floor
        }
        Ok(n) if n <= max => n,
        _ => {
            c.error(value.span(), format!("{what} is out of range")).expected(format!("between {floor} and {max}"));
            floor
        }
    }
}

/// `parsed`, or the maximum with an error at the key when it is longer.
fn capped(
    c: &mut Collector<'_>,
    value: Option<&Spanned<String>>,
    parsed: Duration,
    max: Duration,
    what: &str,
    help: &str,
) -> Duration {
    match value {
        Some(value) if parsed > max => {
            c.error(value.span(), format!("{what} {:?} is too long", value.get_ref()))
                .expected(format!("at most {:?} ({DURATION_EXAMPLE})", humantime::format_duration(max).to_string()))
                .help(help.to_owned());
            max
        }
        _ => parsed,
    }
}
