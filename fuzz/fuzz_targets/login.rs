//! Login-body account extraction (`portcullis_policy::login`).
//!
//! Input: an account source (`json:user.email`, `form:username`,
//! `header:X-Login`) on the first line, then `Name: value` header lines, an
//! empty line and the body.
//!
//! Properties:
//! - parsing a source and extracting never panic;
//! - a body field is read as the upstream reads it: for a JSON body that
//!   Express's JSON parser accepts (a UTF-8 byte order mark is skipped, as
//!   body-parser does), the gateway finds the same string at the path, or
//!   refuses the request for its headers (compressed, not UTF-8);
//! - a value the fuzzer chooses, put into a JSON body or a form body by a
//!   real encoder, comes back unchanged;
//! - fingerprints ignore surrounding whitespace and case, and only a name
//!   without letters or digits (spaces, invisible characters) can have none.

#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis_policy::login::{AccountSource, Unreadable, account_fingerprint, readable_body};
use serde_json::Value;

/// The string at `path` as Node's `JSON.parse` after body-parser reads it.
fn node_json(body: &[u8], path: &[String]) -> Option<String> {
    let body = body.strip_prefix(b"\xef\xbb\xbf").unwrap_or(body);
    let value: Value = serde_json::from_slice(body).ok()?;
    let mut at = &value;
    for segment in path {
        at = at.as_object()?.get(segment)?;
    }
    at.as_str().map(str::to_owned)
}

fuzz_target!(|data: &[u8]| {
    let (head, body) = match portcullis_fuzz::find(data, b"\n\n") {
        Some(at) => (&data[..at], &data[at + 2..]),
        None => (data, &data[data.len()..]),
    };
    let mut lines = head.split(|b| *b == b'\n');
    let Some(spec) = lines.next().and_then(|l| std::str::from_utf8(l).ok()) else { return };
    let headers = portcullis_fuzz::headers(lines);
    let Ok(source) = AccountSource::parse(spec) else { return };
    let found = source.extract(&headers, Some(body));
    let _ = source.extract(&headers, None);
    if let Ok(Some(name)) = &found {
        let fingerprint = account_fingerprint(name);
        // Only a name of spaces and invisible characters (soft hyphens,
        // zero-width spaces, byte order marks: dropped) has no fingerprint.
        if name.trim().is_empty() {
            assert_eq!(fingerprint, None);
        }
        if fingerprint.is_none() {
            assert!(!name.chars().any(char::is_alphanumeric), "{name:?} has no fingerprint");
        }
        assert_eq!(account_fingerprint(&format!(" {name}\t")), fingerprint);
        assert_eq!(account_fingerprint(&name.to_lowercase()), fingerprint);
    }
    let AccountSource::Json(path) = &source else { return };
    let readable = readable_body(&headers).is_ok();
    if let Some(expected) = node_json(body, path) {
        match &found {
            Ok(found) => assert_eq!(
                found.as_deref(),
                Some(expected.as_str()),
                "the upstream reads another account from {body:?}"
            ),
            Err(Unreadable::Encoded(_) | Unreadable::Charset(_)) => assert!(!readable),
            Err(e) => panic!("{e} for a body the upstream reads as {expected:?}"),
        }
    }

    // Round trips through real encoders, with the body as the value (for
    // paths within serde_json's nesting limit of 128).
    let Ok(value) = std::str::from_utf8(body) else { return };
    if path.len() > 100 || !readable {
        return;
    }
    let mut json = Value::String(value.to_owned());
    for segment in path.iter().rev() {
        json = Value::Object([(segment.clone(), json)].into_iter().collect());
    }
    let encoded = serde_json::to_vec(&json).unwrap();
    assert_eq!(source.extract(&headers, Some(&encoded)), Ok(Some(value.to_owned())), "JSON round trip");
    if let [field] = path.as_slice() {
        let form = form_urlencoded::Serializer::new(String::new()).append_pair(field, value).finish();
        let form_source = AccountSource::Form(field.clone());
        assert_eq!(form_source.extract(&headers, Some(form.as_bytes())), Ok(Some(value.to_owned())), "form round trip");
    }
});
