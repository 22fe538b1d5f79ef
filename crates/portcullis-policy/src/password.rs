//! Passwords of the built-in accounts: which ones are accepted, and how they
//! are hashed and checked.
//!
//! Defends against: guessable passwords (a length floor and a list of the
//! most common ones), a leaked store giving away passwords (argon2id, salted,
//! memory-hard), hashes made with yesterday's parameters staying weak
//! ([`needs_rehash`]), and look-alike spellings of one password counting as
//! different ones (Unicode normalization).
//!
//! Decision rules:
//! - A password is put in Unicode NFC before anything else, both when it is
//!   set and when it is presented, so `é` typed as one code point or as `e` +
//!   combining accent is the same password. NFC, not NFKC: compatibility
//!   folding would merge characters the user chose to tell apart (NIST SP
//!   800-63B §5.1.1.2 allows either).
//! - Its length is counted in characters (Unicode scalar values) after
//!   normalization: 12 to 128. Any character is allowed, spaces included;
//!   there are no composition rules (NIST SP 800-63B).
//! - A new password is refused when, lower-cased, it is on the bundled list
//!   of common passwords, or is a listed password with only ASCII digits,
//!   punctuation and spaces around it (`password123456`, `!!dragon2024!!`),
//!   or has nothing but those (`123456789012`, a date), or is one short or
//!   listed string repeated (`qwertyqwerty`, `abcabcabcabc`). The
//!   list (`password/common-passwords.txt`, 19,640 entries, BSD-3-Clause, see
//!   `password/common-passwords.LICENSE`) is Django's; most of its entries are
//!   shorter than 12 characters, which is why the padded and repeated forms
//!   are refused too.
//! - Hashes are argon2id v1.3 PHC strings with a 16-byte random salt and a
//!   32-byte output. [`HashParams::OWASP`] (m = 19 MiB, t = 2, p = 1) is the
//!   floor; stronger parameters are allowed, weaker ones refused.
//! - A stored hash whose algorithm, version or parameters differ from the
//!   current ones [`needs_rehash`]: the caller hashes the password again on
//!   the next successful login.
//!
//! Deployment caveat: hashing with the default parameters takes tens of
//! milliseconds of one core and 19 MiB of memory; the gateway runs it on a
//! bounded pool, and the login rate limits keep a flood from queueing there.

use std::collections::HashSet;
use std::sync::LazyLock;

use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use unicode_normalization::UnicodeNormalization;

/// The fewest characters a password may have.
pub const MIN_CHARS: usize = 12;
/// The most characters a password may have.
pub const MAX_CHARS: usize = 128;
/// Bytes of random salt in each hash.
pub const SALT_BYTES: usize = 16;
/// Bytes of argon2 output in each hash.
const OUTPUT_BYTES: usize = 32;
/// A string repeated to make a password counts as common when it is
/// shorter than this, listed or not.
const SHORT_UNIT_CHARS: usize = 4;

static COMMON_LIST: &str = include_str!("password/common-passwords.txt");

static COMMON: LazyLock<HashSet<&'static str>> =
    LazyLock::new(|| COMMON_LIST.lines().map(str::trim).filter(|l| !l.is_empty()).collect());

/// Why a new password is refused. The messages are meant for the user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    /// Fewer than [`MIN_CHARS`] characters.
    #[error("the password must have at least {MIN_CHARS} characters")]
    TooShort,
    /// More than [`MAX_CHARS`] characters.
    #[error("the password must have at most {MAX_CHARS} characters")]
    TooLong,
    /// On the list of common passwords, or a simple variation of one.
    #[error("the password is too common; choose another")]
    Common,
}

impl Rejected {
    /// A stable code for responses, events and metrics.
    #[must_use]
    pub const fn code(self) -> &'static str {
        match self {
            Self::TooShort => "password.too_short",
            Self::TooLong => "password.too_long",
            Self::Common => "password.common",
        }
    }
}

/// A hashing failure: parameters argon2 refuses, or a stored hash that is not
/// an argon2 PHC string.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HashError {
    /// The parameters are invalid or below [`HashParams::OWASP`].
    #[error("invalid argon2 parameters: {0}")]
    Params(String),
    /// The stored hash cannot be parsed or is not argon2.
    #[error("the stored password hash is not an argon2 PHC string: {0}")]
    Corrupt(String),
    /// argon2 failed while hashing (it only does on invalid input).
    #[error("argon2 failed: {0}")]
    Hash(String),
}

/// argon2id cost parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashParams {
    /// Memory in KiB.
    pub memory_kib: u32,
    /// Passes over the memory.
    pub iterations: u32,
    /// Lanes.
    pub parallelism: u32,
}

impl HashParams {
    /// OWASP's recommendation for argon2id, and the floor: m = 19 MiB, t = 2, p = 1.
    pub const OWASP: Self = Self { memory_kib: 19 * 1024, iterations: 2, parallelism: 1 };

    /// Whether these are at least as strong as [`HashParams::OWASP`] in each
    /// dimension (more lanes do not add cost, so only memory and passes count).
    #[must_use]
    pub const fn at_least_owasp(&self) -> bool {
        self.memory_kib >= Self::OWASP.memory_kib && self.iterations >= Self::OWASP.iterations
    }

    /// The argon2 context for these parameters.
    ///
    /// # Errors
    /// Parameters weaker than [`HashParams::OWASP`] or that argon2 refuses.
    pub fn argon2(&self) -> Result<Argon2<'static>, HashError> {
        if !self.at_least_owasp() {
            return Err(HashError::Params(format!(
                "m = {} KiB, t = {} is weaker than OWASP's m = {} KiB, t = {}",
                self.memory_kib,
                self.iterations,
                Self::OWASP.memory_kib,
                Self::OWASP.iterations
            )));
        }
        let params = Params::new(self.memory_kib, self.iterations, self.parallelism, Some(OUTPUT_BYTES))
            .map_err(|e| HashError::Params(e.to_string()))?;
        Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
    }
}

impl Default for HashParams {
    fn default() -> Self {
        Self::OWASP
    }
}

/// `password` in Unicode NFC: the form that is checked, hashed and verified.
#[must_use]
pub fn normalize(password: &str) -> String {
    password.nfc().collect()
}

/// Checks a new password and returns its normalized form, the one to hash.
///
/// # Errors
/// Why the password is refused.
pub fn check(password: &str) -> Result<String, Rejected> {
    let normalized = normalize(password);
    let chars = normalized.chars().count();
    if chars < MIN_CHARS {
        return Err(Rejected::TooShort);
    }
    if chars > MAX_CHARS {
        return Err(Rejected::TooLong);
    }
    if is_common(&normalized) {
        return Err(Rejected::Common);
    }
    Ok(normalized)
}

/// Whether `password` (normalized) is a common password or a simple
/// variation of one (see the module's rules).
#[must_use]
pub fn is_common(password: &str) -> bool {
    let lower = password.to_lowercase();
    if COMMON.contains(lower.as_str()) {
        return true;
    }
    let core = lower.trim_matches(|c: char| c.is_ascii_digit() || c.is_ascii_punctuation() || c.is_whitespace());
    if core.is_empty() || COMMON.contains(core) {
        return true;
    }
    repeated_unit(&lower).is_some_and(|unit| unit.chars().count() < SHORT_UNIT_CHARS || COMMON.contains(unit))
}

/// The shortest string that `s` is two or more copies of, if any.
fn repeated_unit(s: &str) -> Option<&str> {
    let len = s.len();
    (1..=len / 2)
        .filter(|&n| len.is_multiple_of(n) && s.is_char_boundary(n))
        .map(|n| &s[..n])
        .find(|unit| unit.repeat(len / unit.len()) == s)
}

/// Hashes `password` (already [`check`]ed or [`normalize`]d) with `salt`.
///
/// # Errors
/// Invalid parameters.
pub fn hash(password: &str, salt: &[u8; SALT_BYTES], params: &HashParams) -> Result<String, HashError> {
    let argon2 = params.argon2()?;
    let salt = SaltString::encode_b64(salt).map_err(|e| HashError::Hash(e.to_string()))?;
    argon2.hash_password(password.as_bytes(), &salt).map(|h| h.to_string()).map_err(|e| HashError::Hash(e.to_string()))
}

/// Whether `password` (normalized) matches `stored`, a PHC string made by
/// [`hash`]. The comparison is constant time; the cost is the stored hash's.
///
/// # Errors
/// `stored` is not an argon2id hash: never read as "no match", since it
/// means the store holds something this code did not write.
pub fn verify(password: &str, stored: &str) -> Result<bool, HashError> {
    let parsed = PasswordHash::new(stored).map_err(|e| HashError::Corrupt(e.to_string()))?;
    if parsed.algorithm != Algorithm::Argon2id.ident() {
        return Err(HashError::Corrupt(format!("algorithm {} is not argon2id", parsed.algorithm)));
    }
    match Argon2::default().verify_password(password.as_bytes(), &parsed) {
        Ok(()) => Ok(true),
        Err(argon2::password_hash::Error::Password) => Ok(false),
        Err(e) => Err(HashError::Corrupt(e.to_string())),
    }
}

/// Whether `stored` was made with other than argon2id v1.3 and `params`: the
/// password should be hashed again the next time it is presented. An
/// unparsable hash needs it too.
#[must_use]
pub fn needs_rehash(stored: &str, params: &HashParams) -> bool {
    let Ok(parsed) = PasswordHash::new(stored) else { return true };
    let Ok(have) = Params::try_from(&parsed) else { return true };
    parsed.algorithm != Algorithm::Argon2id.ident()
        || parsed.version != Some(Version::V0x13.into())
        || have.m_cost() != params.memory_kib
        || have.t_cost() != params.iterations
        || have.p_cost() != params.parallelism
        || parsed.hash.is_none_or(|h| h.len() != OUTPUT_BYTES)
}

#[cfg(test)]
mod tests;
