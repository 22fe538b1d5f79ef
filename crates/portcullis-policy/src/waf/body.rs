//! The body as the rules see it: a JSON body is inspected only if the
//! engine reads all of it, the way the upstream does.
//!
//! Defends against a JSON body that the engine's parser gives up on while
//! Express parses it: with no parsed arguments the CRS argument rules have
//! nothing to match, and `' OR 1=1--` inside such a body reached the
//! application. A UTF-8 byte order mark (which body-parser skips), a lone
//! UTF-16 surrogate escape (`"\ud800"`, which `JSON.parse` keeps), a number
//! out of `f64` range (`1e400` is `Infinity` to Node), nesting deeper than
//! the engine descends or more values than it collects all did this with the
//! default engine. ModSecurity's answer is its rule 200002 ("Failed to parse
//! request body", status 400).
//!
//! Decision rules, for a body with a JSON media type (`application/json`,
//! `text/json`, `…+json`) that was read whole:
//! - A leading UTF-8 byte order mark is removed from the inspected copy (the
//!   upstream still receives it), as body-parser removes it.
//! - The rest must parse as JSON within [`MAX_DEPTH`] levels and
//!   [`MAX_VALUES`] scalars, the limits within which every engine inspects
//!   all of it; otherwise `waf.body_unparsable` (400), or a `log` event in
//!   detect mode. An empty or blank body is not JSON and passes.

use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, Error as _, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::{Denied, Reason};

/// Deepest nesting inspected whole (the default engine descends 64 levels).
pub const MAX_DEPTH: usize = 64;

/// Most scalars inspected (the default engine collects 4096 arguments).
pub const MAX_VALUES: usize = 4096;

/// Whether `content_type` names a JSON body, as the engines decide it.
#[must_use]
pub fn is_json(content_type: &str) -> bool {
    let media = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    media == "application/json" || media == "text/json" || media.ends_with("+json")
}

/// The inspected copy of a whole JSON body: without a leading byte order
/// mark, and refused if the engines could not read all of it.
///
/// # Errors
/// `waf.body_unparsable` naming what failed (never the body's content).
pub fn json_body(body: &[u8]) -> Result<&[u8], Denied> {
    let body = body.strip_prefix(b"\xef\xbb\xbf").unwrap_or(body);
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(body);
    }
    let mut values = 0;
    let mut parser = serde_json::Deserializer::from_slice(body);
    Walk { depth: 0, values: &mut values }.deserialize(&mut parser).and_then(|()| parser.end()).map_err(|e| {
        Denied::new(Reason::WafBodyUnparsable).with_detail(format!("the JSON body cannot be inspected whole: {e}"))
    })?;
    Ok(body)
}

/// Walks a JSON document as the engine flattens it, without building it:
/// every scalar counts, duplicate keys included, and a value deeper than
/// [`MAX_DEPTH`] (the root is at 0) is an error.
struct Walk<'a> {
    depth: usize,
    values: &'a mut usize,
}

impl Walk<'_> {
    fn scalar<E: serde::de::Error>(self) -> Result<(), E> {
        *self.values += 1;
        if *self.values > MAX_VALUES {
            return Err(E::custom(format_args!("more than {MAX_VALUES} values")));
        }
        Ok(())
    }
}

impl<'de> DeserializeSeed<'de> for Walk<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        if self.depth > MAX_DEPTH {
            return Err(D::Error::custom(format_args!("nested deeper than {MAX_DEPTH} levels")));
        }
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Walk<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<(), E> {
        self.scalar()
    }

    fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<(), E> {
        self.scalar()
    }

    fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<(), E> {
        self.scalar()
    }

    fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<(), E> {
        self.scalar()
    }

    fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<(), E> {
        self.scalar()
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<(), E> {
        self.scalar()
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(Walk { depth: self.depth + 1, values: &mut *self.values })?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while map.next_key::<IgnoredAny>()?.is_some() {
            map.next_value_seed(Walk { depth: self.depth + 1, values: &mut *self.values })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_media_types_are_recognized() {
        for (content_type, json) in [
            ("application/json", true),
            ("Application/JSON; charset=utf-8", true),
            ("text/json", true),
            ("application/merge-patch+json", true),
            ("application/x-www-form-urlencoded", false),
            ("text/plain", false),
            ("application/jsonp", false),
        ] {
            assert_eq!(is_json(content_type), json, "{content_type}");
        }
    }

    #[test]
    fn only_bodies_the_engine_reads_whole_are_inspected() {
        // The innermost value of 64 arrays is at depth 64.
        let deep = format!("{}1{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        let deeper = format!("{}1{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
        let many = format!("[{}]", vec!["1"; MAX_VALUES].join(","));
        let more = format!("[{}]", vec!["1"; MAX_VALUES + 1].join(","));
        // Repeated keys are values the engine inspects, each of them.
        let repeated = format!("{{{}}}", vec![r#""a":null"#; MAX_VALUES + 1].join(","));
        let cases: &[(&[u8], Option<&[u8]>)] = &[
            (br#"{"q":"x"}"#, Some(br#"{"q":"x"}"#)),
            (b"\xef\xbb\xbf{\"q\":\"' OR 1=1--\"}", Some(b"{\"q\":\"' OR 1=1--\"}")),
            (b"", Some(b"")),
            (b"  \n", Some(b"  \n")),
            (deep.as_bytes(), Some(deep.as_bytes())),
            (many.as_bytes(), Some(many.as_bytes())),
            (br#"{"q":"\ud800' OR 1=1--"}"#, None),
            (br#"{"n":1e400,"q":"' OR 1=1--"}"#, None),
            (b"{\"q\":\"\xff' OR 1=1--\"}", None),
            (b"\xef\xbb\xbf\xef\xbb\xbf{}", None),
            (deeper.as_bytes(), None),
            (more.as_bytes(), None),
            (repeated.as_bytes(), None),
            (b"{} {}", None),
            (b"{not json", None),
        ];
        for (body, inspected) in cases {
            let result = json_body(body);
            assert_eq!(result.as_ref().ok().copied(), *inspected, "{:?}", String::from_utf8_lossy(body));
            if let Err(denied) = result {
                assert_eq!(denied.reason, Reason::WafBodyUnparsable);
                assert!(!denied.detail.unwrap_or_default().contains("OR 1=1"), "no content in the detail");
            }
        }
    }
}
