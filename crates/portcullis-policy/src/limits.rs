//! Request size limits: URI length, header count and bytes, body size.
//!
//! Defends against resource exhaustion (huge headers and bodies held in
//! memory, hash-flooding header maps) and against backends with smaller
//! limits than the gateway behaving unpredictably. Limits are checked on the
//! request head before anything is read from the body; a body without a
//! `Content-Length` is counted as it streams (see the layers crate).

use http::header::{CONTENT_LENGTH, HeaderMap};

use crate::deny::{Denied, Reason};

/// Configured request limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestLimits {
    /// Longest request target (path and query), in bytes.
    pub max_uri_bytes: usize,
    /// Most header fields.
    pub max_header_count: usize,
    /// Most header bytes (names, values and the 4 bytes of `: ` and CRLF each).
    pub max_header_bytes: usize,
    /// Largest body, in bytes.
    pub max_body_bytes: u64,
}

impl Default for RequestLimits {
    /// Secure defaults: see `docs/defaults.md`.
    fn default() -> Self {
        Self {
            max_uri_bytes: 8 * 1024,
            max_header_count: 100,
            max_header_bytes: 32 * 1024,
            max_body_bytes: 10 * 1024 * 1024,
        }
    }
}

/// Header bytes as they would appear on the wire in HTTP/1.1.
#[must_use]
pub fn header_bytes(headers: &HeaderMap) -> usize {
    headers.iter().map(|(name, value)| name.as_str().len() + value.len() + 4).sum()
}

impl RequestLimits {
    /// Checks the request head.
    ///
    /// # Errors
    /// `limit.uri` (414), `limit.headers` (431) or `limit.body` (413, from a
    /// declared `Content-Length` over the limit), or `request.malformed`
    /// (400) for an unparsable `Content-Length`.
    pub fn check_head(&self, uri_len: usize, headers: &HeaderMap, max_body_bytes: u64) -> Result<(), Denied> {
        if uri_len > self.max_uri_bytes {
            return Err(Denied::new(Reason::LimitUri)
                .with_detail(format!("request target {uri_len} bytes > limit {}", self.max_uri_bytes)));
        }
        let count = headers.len();
        if count > self.max_header_count {
            return Err(Denied::new(Reason::LimitHeaders)
                .with_detail(format!("{count} header fields > limit {}", self.max_header_count)));
        }
        let bytes = header_bytes(headers);
        if bytes > self.max_header_bytes {
            return Err(Denied::new(Reason::LimitHeaders)
                .with_detail(format!("{bytes} header bytes > limit {}", self.max_header_bytes)));
        }
        if let Some(length) = content_length(headers)?
            && length > max_body_bytes
        {
            return Err(
                Denied::new(Reason::LimitBody).with_detail(format!("content-length {length} > limit {max_body_bytes}"))
            );
        }
        Ok(())
    }
}

/// The declared body length, if any.
///
/// # Errors
/// `request.malformed` when `Content-Length` is repeated with different
/// values or is not a plain decimal number (`+5`, `0x5` and `5, 5` are
/// refused, as RFC 9110 §8.6 has it: hyper already refuses most such requests;
/// this guards requests that arrive by other paths).
pub fn content_length(headers: &HeaderMap) -> Result<Option<u64>, Denied> {
    let mut found: Option<u64> = None;
    for value in headers.get_all(CONTENT_LENGTH) {
        let digits = value.as_bytes().trim_ascii();
        // `u64::from_str` alone would take a leading `+`.
        let parsed = (!digits.is_empty() && digits.iter().all(u8::is_ascii_digit))
            .then(|| std::str::from_utf8(digits).ok()?.parse::<u64>().ok())
            .flatten()
            .ok_or_else(|| Denied::new(Reason::RequestMalformed).with_detail("invalid content-length"))?;
        if found.is_some_and(|f| f != parsed) {
            return Err(Denied::new(Reason::RequestMalformed).with_detail("conflicting content-length"));
        }
        found = Some(parsed);
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use http::{HeaderName, HeaderValue};

    use super::*;

    fn limits() -> RequestLimits {
        RequestLimits { max_uri_bytes: 20, max_header_count: 3, max_header_bytes: 60, max_body_bytes: 100 }
    }

    fn headers(n: usize, value_len: usize) -> HeaderMap {
        let mut h = HeaderMap::new();
        for i in 0..n {
            h.insert(
                HeaderName::from_bytes(format!("x-{i}").as_bytes()).unwrap(),
                HeaderValue::from_str(&"v".repeat(value_len)).unwrap(),
            );
        }
        h
    }

    fn reason(r: Result<(), Denied>) -> Option<&'static str> {
        r.err().map(|d| d.reason.code())
    }

    #[test]
    fn head_limit_table() {
        let l = limits();
        assert_eq!(reason(l.check_head(20, &headers(3, 5), 100)), None);
        assert_eq!(reason(l.check_head(21, &headers(0, 0), 100)), Some("limit.uri"));
        assert_eq!(reason(l.check_head(1, &headers(4, 1), 100)), Some("limit.headers"));
        // 2 headers of "x-0: " + 30 bytes + CRLF = 3 + 30 + 4 = 37 each → 74 > 60
        assert_eq!(reason(l.check_head(1, &headers(2, 30), 100)), Some("limit.headers"));
        let mut h = HeaderMap::new();
        h.insert(CONTENT_LENGTH, HeaderValue::from_static("101"));
        assert_eq!(reason(l.check_head(1, &h, 100)), Some("limit.body"));
        assert_eq!(reason(l.check_head(1, &h, 101)), None);
        h.insert(CONTENT_LENGTH, HeaderValue::from_static("ten"));
        assert_eq!(reason(l.check_head(1, &h, 100)), Some("request.malformed"));
    }

    #[test]
    fn conflicting_content_lengths_are_malformed() {
        let mut h = HeaderMap::new();
        h.append(CONTENT_LENGTH, HeaderValue::from_static("5"));
        h.append(CONTENT_LENGTH, HeaderValue::from_static("5"));
        assert_eq!(content_length(&h).unwrap(), Some(5));
        h.append(CONTENT_LENGTH, HeaderValue::from_static("6"));
        assert!(content_length(&h).is_err());
    }

    #[test]
    fn content_length_is_plain_digits() {
        for (value, expected) in [
            ("5", Some(5)),
            (" 05 ", Some(5)),
            ("+5", None),
            ("-1", None),
            ("0x5", None),
            ("5, 5", None),
            ("", None),
            ("5 5", None),
            ("99999999999999999999999", None),
        ] {
            let mut h = HeaderMap::new();
            h.append(CONTENT_LENGTH, HeaderValue::from_str(value).unwrap());
            assert_eq!(content_length(&h).ok().flatten(), expected, "{value:?}");
        }
    }
}
