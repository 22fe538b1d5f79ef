//! `@detectSQLi` and `@detectXSS`: libinjection, as libmodsecurity 3.0.9
//! embeds it (3.9.2), through Portcullis's pure-Rust port
//! (`portcullis-libinjection`, differentially tested against the C library).

/// The SQL injection fingerprint of `input` (`s&1c`), if it reads as one.
#[must_use]
pub fn sqli(input: &[u8]) -> Option<String> {
    portcullis_libinjection::sqli(input).map(|f| f.as_str().to_owned())
}

/// Whether `input` reads as cross-site scripting in any HTML context.
#[must_use]
pub fn xss(input: &[u8]) -> bool {
    portcullis_libinjection::xss(input)
}
