//! Secret values in configuration: `${ENV_VAR}` or `file:/path` references,
//! resolved at load, held in a type that never prints its contents.
//!
//! Literal secrets in the file are accepted (for tests and local use); the
//! value itself never reaches a log, an event, an error message or `Debug`
//! output. No section uses secrets yet: the admin token, OIDC client secret
//! and signing keys of later issues will.

use std::fmt;
use std::path::Path;

use super::sources::Sources;

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
pub fn resolve(raw: &str, base_dir: &Path, env: &Sources<'_>) -> Result<Secret, SecretError> {
    if let Some(name) = raw.strip_prefix("${").and_then(|r| r.strip_suffix('}')) {
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(SecretError::BadName(name.to_owned()));
        }
        let value = env.var(name).ok_or_else(|| SecretError::EnvMissing(name.to_owned()))?;
        if value.is_empty() {
            return Err(SecretError::EnvEmpty(name.to_owned()));
        }
        return Ok(Secret { value, source: SecretSource::Env(name.to_owned()) });
    }
    if let Some(path) = raw.strip_prefix("file:") {
        let full = base_dir.join(path);
        let mut value = env
            .read_to_string(&full)
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

    fn var(name: &str) -> Option<String> {
        match name {
            "TOKEN" => Some("s3cr3t-value".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    /// Files from memory: nothing on disk is read.
    fn file(path: &Path) -> std::io::Result<Vec<u8>> {
        match path.to_str() {
            Some("/conf/key") => Ok(b"from-file\n".to_vec()),
            Some("/conf/crlf") => Ok(b"windows\r\n".to_vec()),
            Some("/conf/empty") => Ok(b"\n".to_vec()),
            _ => Err(std::io::ErrorKind::NotFound.into()),
        }
    }

    #[test]
    fn env_file_and_literal() {
        let env = &Sources::new(&var, &file);
        let dir = Path::new("/conf");
        let s = resolve("${TOKEN}", dir, env).unwrap();
        assert_eq!(s.expose(), "s3cr3t-value");
        assert_eq!(s.source(), &SecretSource::Env("TOKEN".into()));
        let s = resolve("file:key", dir, env).unwrap();
        assert_eq!(s.expose(), "from-file");
        assert_eq!(resolve("file:crlf", dir, env).unwrap().expose(), "windows");
        let s = resolve("plain", dir, env).unwrap();
        assert_eq!(s.source(), &SecretSource::Literal);

        assert_eq!(resolve("${NOPE}", dir, env), Err(SecretError::EnvMissing("NOPE".into())));
        assert_eq!(resolve("${EMPTY}", dir, env), Err(SecretError::EnvEmpty("EMPTY".into())));
        assert!(matches!(resolve("${A-B}", dir, env), Err(SecretError::BadName(_))));
        assert!(matches!(resolve("file:missing", dir, env), Err(SecretError::File { .. })));
        assert_eq!(resolve("file:empty", dir, env), Err(SecretError::FileEmpty("empty".into())));
    }

    #[test]
    fn never_printed() {
        let s = resolve("${TOKEN}", Path::new("."), &Sources::new(&var, &file)).unwrap();
        assert!(!format!("{s:?}").contains("s3cr3t"));
        assert!(!format!("{s}").contains("s3cr3t"));
    }
}
