//! `Cookie` request headers: finding the gateway's own cookies (session,
//! login, CSRF token) and removing them before a request is forwarded.
//!
//! Defends against the gateway's credentials leaking to the upstream, and
//! against parser differentials: one parser, used by every defence, reads
//! cookies the way the common upstream parsers do (Node's `cookie`, used by
//! Express and NestJS), so a cookie the upstream would see is one the
//! gateway sees too.
//!
//! Decision rules:
//! - Every `Cookie` field counts (HTTP/2 clients send one per cookie). Each
//!   is split on `;`; each pair is trimmed of spaces and tabs and split at
//!   its first `=`; the name, trimmed again, is compared exactly
//!   (case-sensitive), and the value is the rest, trimmed.
//! - Fields are read as bytes: a field holding non-ASCII bytes (browsers
//!   send UTF-8 cookie values raw) is parsed like any other, never skipped,
//!   so one foreign cookie cannot hide the session cookie from removal.
//! - Removing a cookie removes every pair with its name from every field
//!   and keeps every other pair, in order, in one field; pairs without `=`
//!   are kept (no parser gives them a name).

use http::HeaderValue;
use http::header::{COOKIE, HeaderMap};

/// Spaces and tabs, the only whitespace a header value can hold.
fn trim(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|b| !matches!(b, b' ' | b'\t')).unwrap_or(bytes.len());
    let end = bytes.iter().rposition(|b| !matches!(b, b' ' | b'\t')).map_or(start, |i| i + 1);
    &bytes[start..end.max(start)]
}

/// Every `(name, value)` pair of the request's `Cookie` fields, in order.
/// Pairs without `=` are left out.
pub fn pairs(headers: &HeaderMap) -> impl Iterator<Item = (&[u8], &[u8])> {
    headers.get_all(COOKIE).iter().flat_map(|value| value.as_bytes().split(|b| *b == b';')).filter_map(|pair| {
        let at = pair.iter().position(|b| *b == b'=')?;
        Some((trim(&pair[..at]), trim(&pair[at + 1..])))
    })
}

/// Every value of the cookie `name`, in order; values that are not text
/// (non-ASCII bytes) are left out, as none of the gateway's cookies has one.
pub fn values<'h>(headers: &'h HeaderMap, name: &'h str) -> impl Iterator<Item = &'h str> + 'h {
    pairs(headers).filter(move |(n, _)| *n == name.as_bytes()).filter_map(|(_, v)| std::str::from_utf8(v).ok())
}

/// The first value of the cookie `name`.
#[must_use]
pub fn get<'h>(headers: &'h HeaderMap, name: &'h str) -> Option<&'h str> {
    values(headers, name).next()
}

/// Removes every cookie called `name` from the request's `Cookie` fields,
/// keeping the others (in one field). Returns whether one was removed.
pub fn remove(headers: &mut HeaderMap, name: &str) -> bool {
    if !pairs(headers).any(|(n, _)| n == name.as_bytes()) {
        return false;
    }
    let mut kept: Vec<u8> = Vec::new();
    for value in headers.get_all(COOKIE) {
        for pair in value.as_bytes().split(|b| *b == b';') {
            let pair = trim(pair);
            let named = pair.iter().position(|b| *b == b'=').is_some_and(|at| trim(&pair[..at]) == name.as_bytes());
            if pair.is_empty() || named {
                continue;
            }
            if !kept.is_empty() {
                kept.extend_from_slice(b"; ");
            }
            kept.extend_from_slice(pair);
        }
    }
    headers.remove(COOKIE);
    // The pairs come from valid header values and are trimmed, so they
    // still form one.
    if !kept.is_empty()
        && let Ok(value) = HeaderValue::from_bytes(&kept)
    {
        headers.insert(COOKIE, value);
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&[u8]]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for value in values {
            map.append(COOKIE, HeaderValue::from_bytes(value).unwrap());
        }
        map
    }

    #[test]
    fn cookies_are_found_in_every_field_trimmed() {
        let h = headers(&[b"a=1; sid = x ;b=2", b"sid=y", b"c"]);
        assert_eq!(values(&h, "sid").collect::<Vec<_>>(), ["x", "y"]);
        assert_eq!(get(&h, "b"), Some("2"));
        assert_eq!(get(&h, "c"), None, "a pair without '=' has no name");
        assert_eq!(get(&h, "SID"), None, "names are case-sensitive");
        assert_eq!(get(&h, "a=1"), None);
        assert_eq!(get(&headers(&[b"sid=a=b"]), "sid"), Some("a=b"), "split at the first '='");
    }

    #[test]
    fn removal_keeps_every_other_pair_in_order() {
        type Case = (&'static [&'static [u8]], Option<&'static [u8]>);
        let cases: &[Case] = &[
            (&[b"a=1; sid=x; b=2"], Some(b"a=1; b=2")),
            (&[b"sid=x"], None),
            (&[b"sid=x; sid=y", b" sid =z"], None),
            (&[b"a=1", b"sid=x", b"b"], Some(b"a=1; b")),
            (&[b"a=1;;  ; sid=x;"], Some(b"a=1")),
            (&[b"sidx=1; xsid=2; sid=3"], Some(b"sidx=1; xsid=2")),
        ];
        for (input, expected) in cases {
            let mut h = headers(input);
            assert!(remove(&mut h, "sid"), "{input:?}");
            assert_eq!(h.get(COOKIE).map(HeaderValue::as_bytes), *expected, "{input:?}");
            assert!(h.get_all(COOKIE).iter().count() <= 1);
        }
        let mut untouched = headers(&[b"a=1;b=2", b"c=3"]);
        assert!(!remove(&mut untouched, "sid"));
        assert_eq!(untouched.get_all(COOKIE).iter().count(), 2, "nothing to remove: fields left as sent");
    }

    /// Found writing the `cookies` fuzz target: fields that were not ASCII
    /// were skipped, so a browser holding one cookie with a UTF-8 value had
    /// its session cookie forwarded to the upstream (and lost its other
    /// cookies whenever one was removed).
    #[test]
    fn non_ascii_fields_are_parsed_not_skipped() {
        let mut h = headers(&[b"name=Jos\xc3\xa9; __Host-portcullis=sealed; theme=dark"]);
        assert_eq!(get(&h, "__Host-portcullis"), Some("sealed"));
        assert!(remove(&mut h, "__Host-portcullis"));
        assert_eq!(h.get(COOKIE).map(HeaderValue::as_bytes), Some(&b"name=Jos\xc3\xa9; theme=dark"[..]));
    }
}
