//! Request ids: one id per request, returned to the client in `X-Request-Id`,
//! sent upstream, and carried by every log line and security event.
//!
//! An id supplied by the client is kept only when the peer is a trusted proxy
//! and the id is short and made of safe characters; otherwise a client could
//! inject log lines or collide its requests with someone else's.

use http::HeaderName;

/// `X-Request-Id`.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Longest accepted incoming id.
pub const MAX_LEN: usize = 128;

/// Whether an incoming id may be kept: 1 to 128 of `A-Z a-z 0-9 . _ - : /`.
#[must_use]
pub fn is_acceptable(id: &[u8]) -> bool {
    !id.is_empty()
        && id.len() <= MAX_LEN
        && id.iter().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':' | b'/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acceptable_ids() {
        assert!(is_acceptable(b"3f2b1c9e-aaaa-bbbb-cccc-0123456789ab"));
        assert!(is_acceptable(b"lb-7:42/1.2"));
        assert!(!is_acceptable(b""));
        assert!(!is_acceptable(b"a b"));
        assert!(!is_acceptable(b"x\r\ninjected: 1"));
        assert!(!is_acceptable(b"{\"json\":1}"));
        assert!(!is_acceptable(&[b'a'; MAX_LEN + 1]));
    }
}
