//! Body encodings: a body the gateway inspects must read the same to the
//! gateway as to the upstream.
//!
//! Defends against inspection bypass by encoding. Express's body parsers
//! inflate `Content-Encoding: gzip`, `deflate` and `br` request bodies by
//! default and decode a form in any charset iconv knows (`utf-7`,
//! `utf-16le`, `us-ascii`, which drops each byte's high bit so `\xbc` is
//! `<`). A WAF reading the bytes as sent sees compressed noise or another
//! alphabet; the application sees `' OR 1=1--`. ModSecurity with the CRS
//! has the same gap for compression (it inspects the bytes on the wire).
//!
//! Decision rules, for a request with a body on a route that inspects
//! bodies (a WAF, OpenAPI body validation):
//! - A `Content-Encoding` other than `identity` is refused: 415
//!   `request.encoding`, `rule` = `content-encoding`.
//! - A `charset` parameter on `Content-Type` other than [`INSPECTABLE_CHARSETS`]
//!   (the CRS's own `allowed_request_content_type_charset`) is refused the
//!   same way, `rule` = `charset`; so is a body declared `us-ascii` that
//!   holds a byte outside ASCII ([`inspectable_bytes`], once it is read).
//!   An empty `Content-Encoding` is no coding.
//!
//! A client that compresses uploads can send them to a route without body
//! inspection. The gateway does not inflate bodies itself: a small request
//! would grow into an unbounded one (a decompression bomb) on the way to
//! inspection.

use http::HeaderMap;

use crate::deny::{Denied, Reason};

/// Charsets whose bytes mean to the gateway what they mean to the upstream
/// for the characters attacks are made of (ASCII in the same place).
pub const INSPECTABLE_CHARSETS: [&str; 5] = ["utf-8", "utf8", "iso-8859-1", "iso-8859-15", "windows-1252"];

/// Charsets whose bytes mean the same to everyone only while every byte is
/// ASCII: Node decodes them by dropping each byte's high bit (`\xbc` is `<`,
/// `\xa7` is `'`), other decoders replace or keep such bytes.
pub const ASCII_CHARSETS: [&str; 2] = ["us-ascii", "ascii"];

/// The body's content codings other than `identity`, as sent, if any. An
/// empty header is no coding (body-parser reads it as `identity`).
#[must_use]
pub fn content_coding(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(http::header::CONTENT_ENCODING)
        .iter()
        .map(|value| String::from_utf8_lossy(value.as_bytes()))
        .filter(|text| !text.trim().is_empty())
        .find(|text| text.split(',').any(|coding| !coding.trim().eq_ignore_ascii_case("identity")))
        .map(|text| text.chars().take(40).collect())
}

/// Every `charset` parameter of `Content-Type`, unquoted (double or single
/// quotes, as CRS unquotes them) and as sent.
pub fn charsets(headers: &HeaderMap) -> impl Iterator<Item = String> + '_ {
    headers.get_all(http::header::CONTENT_TYPE).iter().flat_map(|value| {
        let text = String::from_utf8_lossy(value.as_bytes()).into_owned();
        text.split(';')
            .skip(1)
            .filter_map(|param| {
                let (name, value) = param.split_once('=')?;
                name.trim()
                    .eq_ignore_ascii_case("charset")
                    .then(|| value.trim().trim_matches(['"', '\'']).chars().take(40).collect())
            })
            .collect::<Vec<String>>()
    })
}

/// Refuses a body the gateway could not inspect as the upstream reads it.
///
/// # Errors
/// `request.encoding` (415) naming `content-encoding` or `charset`.
pub fn inspectable(headers: &HeaderMap) -> Result<(), Denied> {
    if let Some(coding) = content_coding(headers) {
        return Err(Denied::new(Reason::RequestEncoding)
            .with_rule("content-encoding")
            .with_detail(format!("Content-Encoding {coding:?}: the body is inspected, so it must not be compressed")));
    }
    if let Some(charset) = charsets(headers)
        .find(|c| !INSPECTABLE_CHARSETS.iter().chain(&ASCII_CHARSETS).any(|allowed| c.eq_ignore_ascii_case(allowed)))
    {
        return Err(Denied::new(Reason::RequestEncoding)
            .with_rule("charset")
            .with_detail(format!("charset {charset:?}: the body is inspected, so it must be UTF-8 or Latin-1")));
    }
    Ok(())
}

/// Refuses a body declared ASCII ([`ASCII_CHARSETS`]) that holds a byte
/// outside ASCII: what it means depends on who decodes it. `body` is the
/// part read.
///
/// # Errors
/// `request.encoding` naming `charset`.
pub fn inspectable_bytes(headers: &HeaderMap, body: &[u8]) -> Result<(), Denied> {
    if body.is_ascii() {
        return Ok(());
    }
    match charsets(headers).find(|c| ASCII_CHARSETS.iter().any(|ascii| c.eq_ignore_ascii_case(ascii))) {
        Some(charset) => Err(Denied::new(Reason::RequestEncoding).with_rule("charset").with_detail(format!(
            "charset {charset:?} with bytes outside ASCII: the upstream may read them as other characters"
        ))),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(*name, value.parse().unwrap());
        }
        headers
    }

    #[test]
    fn only_plain_bodies_in_a_known_charset_are_inspectable() {
        type Case<'a> = (&'a [(&'static str, &'a str)], Option<&'a str>);
        let cases: &[Case<'_>] = &[
            (&[], None),
            (&[("content-type", "application/json")], None),
            (&[("content-type", "application/json; charset=UTF-8")], None),
            (&[("content-type", "application/x-www-form-urlencoded; charset=\"iso-8859-1\"")], None),
            (&[("content-type", "text/plain; format=flowed; charset=windows-1252")], None),
            (&[("content-encoding", "identity")], None),
            (&[("content-encoding", "IDENTITY"), ("content-encoding", " identity ")], None),
            (&[("content-encoding", "gzip")], Some("content-encoding")),
            (&[("content-encoding", "x-gzip")], Some("content-encoding")),
            (&[("content-encoding", "br")], Some("content-encoding")),
            (&[("content-encoding", "identity, deflate")], Some("content-encoding")),
            (&[("content-encoding", "identity"), ("content-encoding", "zstd")], Some("content-encoding")),
            (&[("content-encoding", "")], None),
            (&[("content-encoding", " "), ("content-encoding", "gzip")], Some("content-encoding")),
            (&[("content-type", "application/x-www-form-urlencoded; charset='utf-8'")], None),
            (&[("content-type", "application/x-www-form-urlencoded; charset=US-ASCII")], None),
            (&[("content-type", "application/x-www-form-urlencoded; charset=utf-7")], Some("charset")),
            (&[("content-type", "application/json; charset=utf-16le")], Some("charset")),
            (&[("content-type", "application/x-www-form-urlencoded; charset=us-ascii7")], Some("charset")),
            (&[("content-type", "text/plain; CHARSET=\"ibm037\"")], Some("charset")),
            (&[("content-type", "application/json; charset=utf-8; charset=utf-16")], Some("charset")),
        ];
        for (pairs, rule) in cases {
            let result = inspectable(&headers(pairs));
            assert_eq!(result.as_ref().err().and_then(|d| d.rule.as_deref()), *rule, "{pairs:?}");
            if let Err(denied) = result {
                assert_eq!(denied.reason, Reason::RequestEncoding);
            }
        }
    }

    #[test]
    fn ascii_bodies_must_be_ascii() {
        let ascii = headers(&[("content-type", "application/x-www-form-urlencoded; charset=us-ascii")]);
        let utf8 = headers(&[("content-type", "application/x-www-form-urlencoded; charset=utf-8")]);
        assert!(inspectable_bytes(&ascii, b"q=plain").is_ok());
        assert_eq!(inspectable_bytes(&ascii, b"q=\xbcscript\xbe").unwrap_err().rule.as_deref(), Some("charset"));
        assert!(inspectable_bytes(&utf8, "q=caf\u{e9}".as_bytes()).is_ok());
        assert!(inspectable_bytes(&HeaderMap::new(), b"q=\xbc").is_ok());
    }
}
