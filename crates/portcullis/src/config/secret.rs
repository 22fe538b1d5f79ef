//! Secret values in configuration: `${ENV_VAR}` or `file:/path` references,
//! resolved at load, held in a type that never prints its contents.
//!
//! Literal secrets in the file are accepted (for tests and local use); the
//! value itself never reaches a log, an event, an error message or `Debug`
//! output. No section uses secrets yet: the admin token, OIDC client secret
//! and signing keys of later issues will.

use std::fmt;
use std::path::Path;

/// A resolved secret. `Debug` and `Display` print `[redacted]`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret {
    value: String,
    source: SecretSource,
}

/// Where a secret came from (safe to print).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// Written in the configuration file.
    Literal,
    /// `${NAME}`.
    Env(String),
    /// `file:/path`.
    File(String),
}

impl Secret {
    /// The secret bytes. Call only where the secret is used.
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.value
    }

    /// Where it came from.
    #[must_use]
    pub const fn source(&self) -> &SecretSource {
        &self.source
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret([redacted], from {:?})", self.source)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Why a secret reference could not be resolved. Never contains the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// `${NAME}` is not set.
    #[error("environment variable {0} is not set")]
    EnvMissing(String),
    /// `${NAME}` is set but empty.
    #[error("environment variable {0} is empty")]
    EnvEmpty(String),
    /// `${…}` with an invalid name.
    #[error("invalid environment variable name {0:?}")]
    BadName(String),
    /// The file could not be read.
    #[error("cannot read secret file {path}: {reason}")]
    File { path: String, reason: String },
    /// The file is empty.
    #[error("secret file {0} is empty")]
    FileEmpty(String),
}

/// Resolves a configured secret. `file:` paths are relative to `base_dir`; one
/// trailing newline is removed from file contents.
///
/// # Errors
/// [`SecretError`] describing the reference, never the value.
pub fn resolve(raw: &str, base_dir: &Path, env: impl Fn(&str) -> Option<String>) -> Result<Secret, SecretError> {
    if let Some(name) = raw.strip_prefix("${").and_then(|r| r.strip_suffix('}')) {
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(SecretError::BadName(name.to_owned()));
        }
        let value = env(name).ok_or_else(|| SecretError::EnvMissing(name.to_owned()))?;
        if value.is_empty() {
            return Err(SecretError::EnvEmpty(name.to_owned()));
        }
        return Ok(Secret { value, source: SecretSource::Env(name.to_owned()) });
    }
    if let Some(path) = raw.strip_prefix("file:") {
        let full = base_dir.join(path);
        let mut value = std::fs::read_to_string(&full)
            .map_err(|e| SecretError::File { path: path.to_owned(), reason: e.kind().to_string() })?;
        if value.ends_with('\n') {
            value.pop();
            if value.ends_with('\r') {
                value.pop();
            }
        }
        if value.is_empty() {
            return Err(SecretError::FileEmpty(path.to_owned()));
        }
        return Ok(Secret { value, source: SecretSource::File(path.to_owned()) });
    }
    Ok(Secret { value: raw.to_owned(), source: SecretSource::Literal })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "TOKEN" => Some("s3cr3t-value".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn env_file_and_literal() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("key"), "from-file\n").unwrap();
        std::fs::write(dir.path().join("empty"), "\n").unwrap();

        let s = resolve("${TOKEN}", dir.path(), env).unwrap();
        assert_eq!(s.expose(), "s3cr3t-value");
        assert_eq!(s.source(), &SecretSource::Env("TOKEN".into()));
        let s = resolve("file:key", dir.path(), env).unwrap();
        assert_eq!(s.expose(), "from-file");
        let s = resolve("plain", dir.path(), env).unwrap();
        assert_eq!(s.source(), &SecretSource::Literal);

        assert_eq!(resolve("${NOPE}", dir.path(), env), Err(SecretError::EnvMissing("NOPE".into())));
        assert_eq!(resolve("${EMPTY}", dir.path(), env), Err(SecretError::EnvEmpty("EMPTY".into())));
        assert!(matches!(resolve("${A-B}", dir.path(), env), Err(SecretError::BadName(_))));
        assert!(matches!(resolve("file:missing", dir.path(), env), Err(SecretError::File { .. })));
        assert_eq!(resolve("file:empty", dir.path(), env), Err(SecretError::FileEmpty("empty".into())));
    }

    #[test]
    fn never_printed() {
        let s = resolve("${TOKEN}", Path::new("."), env).unwrap();
        assert!(!format!("{s:?}").contains("s3cr3t"));
        assert!(!format!("{s}").contains("s3cr3t"));
    }
}
