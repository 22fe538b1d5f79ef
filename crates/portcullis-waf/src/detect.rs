//! `@detectSQLi` and `@detectXSS`.
//!
//! Interim: until the pure-Rust libinjection port lands these call the
//! SecLang crate's approximation.

/// The SQL injection fingerprint of `input`, if it reads as one.
#[must_use]
pub fn sqli(input: &[u8]) -> Option<String> {
    zentinel_modsec::libinjection::sqli_fingerprint(&String::from_utf8_lossy(input))
}

/// Whether `input` reads as cross-site scripting.
#[must_use]
pub fn xss(input: &[u8]) -> bool {
    zentinel_modsec::libinjection::is_xss(&String::from_utf8_lossy(input))
}
