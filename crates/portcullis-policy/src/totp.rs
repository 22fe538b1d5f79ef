//! Time-based one-time passwords (RFC 6238), the built-in accounts' second
//! factor: the secret an account enrols, the `otpauth://` URI an
//! authenticator app reads, and the check of a code.
//!
//! Defends against: a stolen password alone opening an account, and a code
//! seen once (over a shoulder, in a phishing proxy's log) opening it again.
//!
//! Decision rules:
//! - HMAC-SHA-1, 6 digits, 30-second steps: what every authenticator app
//!   reads without asking (RFC 6238 §5.2 recommends the step; apps that are
//!   offered SHA-256 or 8 digits often ignore them silently).
//! - Secrets are 160 random bits (RFC 4226 §4 recommends 160, requires 128).
//! - A code is accepted for its step and one step on either side (clock
//!   drift and typing time), never more.
//! - A code is accepted once: a code whose step is not later than the last
//!   step accepted for the account is [`Checked::Replayed`], as RFC 6238
//!   §5.2 requires. The store records the accepted step atomically
//!   (`store::mfa`), so two requests racing with one code cannot both pass.
//! - Codes are compared in constant time (totp-rs); spaces and a dash inside
//!   a code (`123 456`, `123-456`) are ignored, as apps display them.
//!
//! Deployment caveat: the gateway's clock decides; a host whose clock drifts
//! by more than a step refuses good codes (keep NTP running).

use std::fmt;

use totp_rs::{Algorithm, Secret, Totp};

/// Digits in a code.
pub const DIGITS: u8 = 6;
/// Seconds in a step.
pub const STEP_SECONDS: u64 = 30;
/// Steps accepted on either side of the current one.
pub const SKEW_STEPS: u16 = 1;
/// Bytes of a generated secret (160 bits).
pub const SECRET_BYTES: usize = 20;
/// The fewest bytes a secret may have (128 bits, RFC 4226 §4).
pub const MIN_SECRET_BYTES: usize = 16;

/// Why a secret or an enrolment URI cannot be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TotpError {
    /// The random generator failed.
    #[error("the random generator failed")]
    Random,
    /// A stored secret shorter than [`MIN_SECRET_BYTES`].
    #[error("a TOTP secret needs at least {MIN_SECRET_BYTES} bytes, this one has {0}")]
    ShortSecret(usize),
    /// The issuer or account name cannot go into an `otpauth://` URI (a
    /// colon separates them there).
    #[error("the issuer and the account name must not contain ':'")]
    Label,
}

/// An account's TOTP secret. Its `Debug` shows no byte of it.
#[derive(Clone, PartialEq, Eq)]
pub struct TotpSecret(Vec<u8>);

impl fmt::Debug for TotpSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TotpSecret(…)")
    }
}

impl TotpSecret {
    /// A new random secret of [`SECRET_BYTES`].
    ///
    /// # Errors
    /// [`TotpError::Random`] when the system's generator fails.
    pub fn generate() -> Result<Self, TotpError> {
        let mut bytes = vec![0u8; SECRET_BYTES];
        aws_lc_rs::rand::fill(&mut bytes).map_err(|_| TotpError::Random)?;
        Ok(Self(bytes))
    }

    /// A secret read back from the store.
    ///
    /// # Errors
    /// [`TotpError::ShortSecret`] below [`MIN_SECRET_BYTES`].
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self, TotpError> {
        if bytes.len() < MIN_SECRET_BYTES {
            return Err(TotpError::ShortSecret(bytes.len()));
        }
        Ok(Self(bytes))
    }

    /// The raw bytes, to seal and store.
    #[must_use]
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The secret in base32 without padding, for typing into an app by hand.
    #[must_use]
    pub fn base32(&self) -> String {
        Secret::from(self.0.clone()).to_base32()
    }

    /// The `otpauth://totp/…` URI an authenticator app reads (usually from a
    /// QR code): the label `issuer:account`, the secret and the issuer. The
    /// parameters above are the format's defaults, so it names none of them.
    ///
    /// # Errors
    /// [`TotpError::Label`] when `issuer` or `account` contains a colon.
    pub fn enrolment_uri(&self, issuer: &str, account: &str) -> Result<String, TotpError> {
        if issuer.contains(':') || account.contains(':') {
            return Err(TotpError::Label);
        }
        self.totp(Some((issuer, account))).to_url().map_err(|_| TotpError::Label)
    }

    fn totp(&self, label: Option<(&str, &str)>) -> Totp {
        let builder = totp_rs::Builder::new()
            .with_algorithm(Algorithm::SHA1)
            .with_digits(DIGITS)
            .with_skew(SKEW_STEPS)
            .with_step_duration(STEP_SECONDS)
            .with_secret(self.0.clone());
        let builder = match label {
            Some((issuer, account)) => builder.with_issuer(Some(issuer)).with_account_name(account),
            None => builder,
        };
        // The parameters are fixed and the secret's length checked at
        // construction: only what a compliant build would refuse differs.
        builder.build_noncompliant()
    }

    /// The code for the step holding `unix_seconds` (for tests and for the
    /// enrolment page's "your app should now show" hint).
    #[must_use]
    pub fn code_at(&self, unix_seconds: u64) -> String {
        self.totp(None).generate(unix_seconds).to_string()
    }

    /// Checks `code` at `unix_seconds`, given the last step accepted for the
    /// account.
    #[must_use]
    pub fn check(&self, code: &str, unix_seconds: u64, last_step: Option<u64>) -> Checked {
        let digits: String = code.chars().filter(|c| !matches!(c, ' ' | '-')).collect();
        if digits.len() != usize::from(DIGITS) || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Checked::Wrong;
        }
        match self.totp(None).check(&digits, unix_seconds) {
            None => Checked::Wrong,
            Some(step) if last_step.is_some_and(|last| step <= last) => Checked::Replayed,
            Some(step) => Checked::Accepted { step },
        }
    }
}

/// The outcome of checking a code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checked {
    /// Right, for `step`: record it as the account's last accepted step.
    Accepted {
        /// The step the code belongs to (Unix time / [`STEP_SECONDS`]).
        step: u64,
    },
    /// Not a code of the current step or one beside it.
    Wrong,
    /// Right, but its step was already accepted (or an earlier one was
    /// accepted after it): refused, and worth an event.
    Replayed,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238 Appendix B's SHA-1 secret.
    fn rfc_secret() -> TotpSecret {
        TotpSecret::from_bytes(b"12345678901234567890".to_vec()).unwrap()
    }

    #[test]
    fn codes_match_rfc_6238_test_vectors() {
        // Appendix B gives 8 digits; 6-digit codes are their last six.
        let vectors = [
            (59, "94287082"),
            (1_111_111_109, "07081804"),
            (1_111_111_111, "14050471"),
            (1_234_567_890, "89005924"),
            (2_000_000_000, "69279037"),
            (20_000_000_000, "65353130"),
        ];
        let secret = rfc_secret();
        for (time, eight) in vectors {
            assert_eq!(secret.code_at(time), eight[2..], "t = {time}");
        }
    }

    #[test]
    fn a_code_passes_for_its_step_and_one_on_either_side_only() {
        let secret = rfc_secret();
        let now = 1_111_111_111;
        let step = now / STEP_SECONDS;
        let code = secret.code_at(now);
        assert_eq!(secret.check(&code, now, None), Checked::Accepted { step });
        assert_eq!(secret.check(&code, now + STEP_SECONDS, None), Checked::Accepted { step });
        assert_eq!(secret.check(&code, now - STEP_SECONDS, None), Checked::Accepted { step });
        assert_eq!(secret.check(&code, now + 2 * STEP_SECONDS, None), Checked::Wrong);
        assert_eq!(secret.check(&code, now - 2 * STEP_SECONDS, None), Checked::Wrong);
    }

    #[test]
    fn a_code_is_accepted_once_and_older_codes_after_it_are_replays() {
        let secret = rfc_secret();
        let now = 1_234_567_890;
        let step = now / STEP_SECONDS;
        let code = secret.code_at(now);
        assert_eq!(secret.check(&code, now, Some(step - 1)), Checked::Accepted { step });
        assert_eq!(secret.check(&code, now, Some(step)), Checked::Replayed);
        // The previous step's code, still inside the window, comes too late.
        let previous = secret.code_at(now - STEP_SECONDS);
        assert_eq!(secret.check(&previous, now, Some(step)), Checked::Replayed);
        // The next step's code is new.
        let next = secret.code_at(now + STEP_SECONDS);
        assert_eq!(secret.check(&next, now + STEP_SECONDS, Some(step)), Checked::Accepted { step: step + 1 });
    }

    #[test]
    fn malformed_codes_are_wrong_and_display_spacing_is_ignored() {
        let secret = rfc_secret();
        let now = 59;
        let code = secret.code_at(now);
        let spaced = format!("{} {}", &code[..3], &code[3..]);
        let dashed = format!("{}-{}", &code[..3], &code[3..]);
        assert_eq!(secret.check(&spaced, now, None), Checked::Accepted { step: 1 });
        assert_eq!(secret.check(&dashed, now, None), Checked::Accepted { step: 1 });
        for bad in ["", "12345", "1234567", "12345a", "２８７０８２", "287082\0", "' OR 1=1 --"] {
            assert_eq!(secret.check(bad, now, None), Checked::Wrong, "{bad:?}");
        }
    }

    #[test]
    fn secrets_are_random_long_enough_and_never_printed() {
        let a = TotpSecret::generate().unwrap();
        let b = TotpSecret::generate().unwrap();
        assert_eq!(a.as_bytes().len(), SECRET_BYTES);
        assert_ne!(a, b);
        assert_eq!(format!("{a:?}"), "TotpSecret(…)");
        assert_eq!(a.base32().len(), 32, "160 bits in base32 without padding");
        assert_eq!(TotpSecret::from_bytes(vec![0; 15]), Err(TotpError::ShortSecret(15)));
    }

    #[test]
    fn the_enrolment_uri_names_issuer_account_and_parameters() {
        let secret = rfc_secret();
        let uri = secret.enrolment_uri("Example API", "alice@example.com").unwrap();
        assert!(uri.starts_with("otpauth://totp/Example%20API:alice%40example.com?"), "{uri}");
        for part in [format!("secret={}", secret.base32()), "issuer=Example%20API".to_owned()] {
            assert!(uri.contains(&part), "{part} missing from {uri}");
        }
        // An app reading it with the format's defaults computes our codes.
        let read = Totp::from_url(&uri).unwrap();
        assert_eq!((read.digits(), read.step(), read.algorithm()), (DIGITS, STEP_SECONDS, Algorithm::SHA1));
        assert_eq!(read.generate(59).to_string(), secret.code_at(59));
        assert_eq!(secret.enrolment_uri("a:b", "alice"), Err(TotpError::Label));
        assert_eq!(secret.enrolment_uri("Example", "ali:ce"), Err(TotpError::Label));
    }
}
