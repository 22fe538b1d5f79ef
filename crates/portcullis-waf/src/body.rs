//! Body processors: JSON, XML and multipart bodies turned into the values
//! rules inspect.
//!
//! Decision rules:
//! - JSON: every scalar becomes an argument named by its path as
//!   libmodsecurity names it (`json.user.name`, `json.tags.array_0`), in
//!   document order, duplicates kept; numbers as written, `true`/`false`,
//!   `null` as an empty value. Nesting deeper than
//!   [`JSON_MAX_DEPTH`](crate::data::JSON_MAX_DEPTH) or more than
//!   [`MAX_VALUES`](crate::data::MAX_VALUES) values, or a body that is not
//!   JSON, is a body error: never a body passed on half-inspected.
//! - XML: `XML:/*` is the text of the whole document (the string value of
//!   its root, as XPath gives it), `XML://@*` every attribute value. A body
//!   that is not well-formed XML, or declares a DTD, is a body error.
//! - Multipart: parts split at the declared boundary, each with its
//!   headers; a part with a `filename` is a file (`FILES`,
//!   `FILES_NAMES`), the others arguments. Deviations attackers use to
//!   confuse parsers set the `MULTIPART_*` flags that CRS and the
//!   recommended rules refuse: data before the first or after the last
//!   boundary, LF-only lines, header folding, bad quoting, a missing
//!   semicolon, a part without a name, a boundary that never closes.

use crate::data::{JSON_MAX_DEPTH, MAX_VALUES};

/// A `(name, value)` pair.
pub type Pair = (Vec<u8>, Vec<u8>);

/// The `(name, value)` pairs of a JSON body.
///
/// # Errors
/// The body is not JSON, nests too deep or has too many values.
pub fn json(body: &[u8]) -> Result<Vec<Pair>, String> {
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|e| format!("JSON parsing error: {e}"))?;
    let mut out = Vec::new();
    walk(&value, b"json", 0, &mut out)?;
    Ok(out)
}

fn walk(value: &serde_json::Value, path: &[u8], depth: usize, out: &mut Vec<(Vec<u8>, Vec<u8>)>) -> Result<(), String> {
    if depth > JSON_MAX_DEPTH {
        return Err(format!("JSON parsing error: nested deeper than {JSON_MAX_DEPTH} levels"));
    }
    let mut push = |value: Vec<u8>| {
        if out.len() >= MAX_VALUES {
            return Err(format!("JSON parsing error: more than {MAX_VALUES} values"));
        }
        out.push((path.to_vec(), value));
        Ok(())
    };
    match value {
        serde_json::Value::Null => push(Vec::new()),
        serde_json::Value::Bool(b) => push(if *b { b"true".to_vec() } else { b"false".to_vec() }),
        serde_json::Value::Number(n) => push(n.to_string().into_bytes()),
        serde_json::Value::String(s) => push(s.as_bytes().to_vec()),
        serde_json::Value::Array(items) => {
            for (k, item) in items.iter().enumerate() {
                let mut name = path.to_vec();
                name.extend_from_slice(format!(".array_{k}").as_bytes());
                walk(item, &name, depth + 1, out)?;
            }
            Ok(())
        }
        serde_json::Value::Object(map) => {
            for (key, item) in map {
                let mut name = path.to_vec();
                name.push(b'.');
                name.extend_from_slice(key.as_bytes());
                walk(item, &name, depth + 1, out)?;
            }
            Ok(())
        }
    }
}

/// What an XML body yields.
#[derive(Debug, Default)]
pub struct XmlDocument {
    /// All text and CDATA, in document order.
    pub text: Vec<u8>,
    /// Every attribute value.
    pub attributes: Vec<Vec<u8>>,
}

/// Reads an XML body.
///
/// # Errors
/// Not well-formed, a DTD, or too many values.
pub fn xml(body: &[u8]) -> Result<XmlDocument, String> {
    use quick_xml::events::Event;
    let fail = |e: &dyn std::fmt::Display| format!("XML parsing error: {e}");
    let mut reader = quick_xml::Reader::from_reader(body);
    reader.config_mut().check_end_names = true;
    let mut doc = XmlDocument::default();
    let mut buf = Vec::new();
    let mut depth = 0usize;
    let mut roots = 0usize;
    loop {
        match reader.read_event_into(&mut buf).map_err(|e| fail(&e))? {
            Event::Start(start) => {
                if depth == 0 {
                    roots += 1;
                }
                depth += 1;
                if depth > JSON_MAX_DEPTH {
                    return Err(fail(&format!("nested deeper than {JSON_MAX_DEPTH} levels")));
                }
                attributes(&start, &mut doc)?;
            }
            Event::Empty(start) => {
                if depth == 0 {
                    roots += 1;
                }
                attributes(&start, &mut doc)?;
            }
            Event::End(_) => depth = depth.saturating_sub(1),
            Event::Text(text) => {
                let decoded = text.decode().map_err(|e| fail(&e))?;
                if depth == 0 {
                    if !decoded.trim().is_empty() {
                        return Err(fail(&"text outside the root element"));
                    }
                } else {
                    let unescaped = quick_xml::escape::unescape(&decoded).map_err(|e| fail(&e))?;
                    doc.text.extend_from_slice(unescaped.as_bytes());
                }
            }
            Event::GeneralRef(reference) => {
                let name = reference.decode().map_err(|e| fail(&e))?;
                let resolved = match &*name {
                    "lt" => "<".to_owned(),
                    "gt" => ">".to_owned(),
                    "amp" => "&".to_owned(),
                    "apos" => "'".to_owned(),
                    "quot" => "\"".to_owned(),
                    other => match reference.resolve_char_ref().map_err(|e| fail(&e))? {
                        Some(c) => c.to_string(),
                        None => return Err(fail(&format!("undefined entity `&{other};`"))),
                    },
                };
                doc.text.extend_from_slice(resolved.as_bytes());
            }
            Event::CData(data) => doc.text.extend_from_slice(&data),
            Event::DocType(_) => return Err(fail(&"document type declarations are refused")),
            Event::Eof => break,
            Event::Comment(_) | Event::Decl(_) | Event::PI(_) => {}
        }
        buf.clear();
    }
    if depth != 0 || roots != 1 {
        return Err(fail(&"not exactly one complete root element"));
    }
    Ok(doc)
}

fn attributes(start: &quick_xml::events::BytesStart<'_>, doc: &mut XmlDocument) -> Result<(), String> {
    for attribute in start.attributes() {
        let attribute = attribute.map_err(|e| format!("XML parsing error: {e}"))?;
        let value = attribute
            .normalized_value(quick_xml::XmlVersion::Implicit1_0)
            .map_err(|e| format!("XML parsing error: {e}"))?;
        if doc.attributes.len() >= MAX_VALUES {
            return Err(format!("XML parsing error: more than {MAX_VALUES} attributes"));
        }
        doc.attributes.push(value.as_bytes().to_vec());
    }
    Ok(())
}

/// A multipart boundary as declared in `Content-Type`.
#[derive(Debug, Clone)]
pub struct Boundary {
    /// The boundary.
    pub value: Vec<u8>,
    /// It was quoted.
    pub quoted: bool,
    /// White space around it or its `=`.
    pub whitespace: bool,
}

/// The boundary of a `multipart/form-data` content type.
#[must_use]
pub fn boundary(content_type: &[u8]) -> Option<Boundary> {
    let lower = content_type.to_ascii_lowercase();
    let at = memchr::memmem::find(&lower, b"boundary")?;
    let mut rest = &content_type[at + b"boundary".len()..];
    let mut whitespace = false;
    while let Some((&b, tail)) = rest.split_first() {
        if b == b' ' || b == b'\t' {
            whitespace = true;
            rest = tail;
        } else {
            break;
        }
    }
    rest = rest.strip_prefix(b"=")?;
    while let Some((&b, tail)) = rest.split_first() {
        if b == b' ' || b == b'\t' {
            whitespace = true;
            rest = tail;
        } else {
            break;
        }
    }
    let (value, quoted) = if let Some(inner) = rest.strip_prefix(b"\"") {
        let end = memchr::memchr(b'"', inner)?;
        (inner[..end].to_vec(), true)
    } else {
        let end = rest.iter().position(|&b| b == b';' || b == b',' || b == b' ' || b == b'\t').unwrap_or(rest.len());
        if end < rest.len() && (rest[end] == b' ' || rest[end] == b'\t') {
            whitespace = true;
        }
        (rest[..end].to_vec(), false)
    };
    (!value.is_empty()).then_some(Boundary { value, quoted, whitespace })
}

/// One part of a multipart body.
#[derive(Debug, Default)]
pub struct Part {
    /// The `name` of its `Content-Disposition`.
    pub name: Vec<u8>,
    /// The `filename`, for a file.
    pub filename: Option<Vec<u8>>,
    /// Its header lines.
    pub headers: Vec<Vec<u8>>,
    /// Its content.
    pub value: Vec<u8>,
}

/// A multipart body, read.
#[derive(Debug, Default)]
pub struct Multipart {
    /// The parts.
    pub parts: Vec<Part>,
    /// `MULTIPART_*` flags found.
    pub flags: Vec<(&'static str, bool)>,
    /// Why it could not be read at all.
    pub error: Option<String>,
}

/// Reads a multipart body.
#[must_use]
pub fn multipart(body: &[u8], boundary: Option<&[u8]>) -> Multipart {
    let mut out = Multipart::default();
    let Some(boundary) = boundary else {
        out.error = Some("Multipart: boundary not found in the Content-Type".into());
        return out;
    };
    let flag = |out: &mut Multipart, name: &'static str| {
        if !out.flags.iter().any(|(n, _)| *n == name) {
            out.flags.push((name, true));
        }
    };
    let mut delimiter = b"--".to_vec();
    delimiter.extend_from_slice(boundary);
    // Lines, remembering whether each ended in CRLF.
    let mut lines: Vec<(&[u8], bool)> = Vec::new();
    let mut start = 0;
    for at in memchr::memchr_iter(b'\n', body) {
        let line = &body[start..at];
        let crlf = line.last() == Some(&b'\r');
        lines.push((if crlf { &line[..line.len() - 1] } else { line }, crlf));
        start = at + 1;
    }
    let tail = &body[start..];
    if !tail.is_empty() {
        lines.push((tail, true));
    }
    let mut index = 0;
    // Preamble.
    while index < lines.len() && !lines[index].0.starts_with(&delimiter) {
        if !lines[index].0.is_empty() {
            flag(&mut out, "MULTIPART_DATA_BEFORE");
        }
        index += 1;
    }
    let mut closed = false;
    let mut saw_unmatched = false;
    while index < lines.len() {
        let (line, crlf) = lines[index];
        if !crlf {
            flag(&mut out, "MULTIPART_LF_LINE");
        }
        let rest = &line[delimiter.len()..];
        if rest.starts_with(b"--") {
            closed = true;
            index += 1;
            break;
        }
        if !rest.iter().all(|&b| b == b' ' || b == b'\t') {
            flag(&mut out, "MULTIPART_INVALID_PART");
        }
        index += 1;
        let mut part = Part::default();
        // Headers.
        let mut disposition: Option<Vec<u8>> = None;
        while index < lines.len() {
            let (line, crlf) = lines[index];
            index += 1;
            if !crlf {
                flag(&mut out, "MULTIPART_LF_LINE");
            }
            if line.is_empty() {
                break;
            }
            if line[0] == b' ' || line[0] == b'\t' {
                flag(&mut out, "MULTIPART_HEADER_FOLDING");
                if let Some(last) = part.headers.last_mut() {
                    last.extend_from_slice(line);
                } else {
                    flag(&mut out, "MULTIPART_INVALID_HEADER_FOLDING");
                }
                continue;
            }
            if memchr::memchr(b':', line).is_none() {
                flag(&mut out, "MULTIPART_INVALID_PART");
            }
            if line.len() > 19 && line[..20].eq_ignore_ascii_case(b"content-disposition:") {
                disposition = Some(line[20..].to_vec());
            }
            part.headers.push(line.to_vec());
        }
        match disposition {
            Some(d) => read_disposition(&d, &mut part, &mut |name| flag(&mut out, name)),
            None => flag(&mut out, "MULTIPART_INVALID_PART"),
        }
        // Content, up to the next delimiter line; the line break before it
        // belongs to the delimiter.
        let mut content: Vec<u8> = Vec::new();
        let mut first = true;
        while index < lines.len() && !lines[index].0.starts_with(&delimiter) {
            let (line, crlf) = lines[index];
            if memchr::memmem::find(line, boundary).is_some() {
                saw_unmatched = true;
            }
            if !first {
                content.extend_from_slice(if lines[index - 1].1 { b"\r\n" } else { b"\n" });
            }
            content.extend_from_slice(line);
            if !crlf && index + 1 < lines.len() {
                flag(&mut out, "MULTIPART_LF_LINE");
            }
            first = false;
            index += 1;
        }
        part.value = content;
        if out.parts.len() >= MAX_VALUES {
            out.error = Some(format!("Multipart: more than {MAX_VALUES} parts"));
            return out;
        }
        out.parts.push(part);
    }
    if !closed {
        out.error = Some("Multipart: final boundary missing".into());
        saw_unmatched = true;
    }
    if lines[index.min(lines.len())..].iter().any(|(l, _)| !l.is_empty()) {
        flag(&mut out, "MULTIPART_DATA_AFTER");
    }
    out.flags.push(("MULTIPART_UNMATCHED_BOUNDARY", saw_unmatched));
    out
}

/// `form-data; name="a"; filename="b"`.
fn read_disposition(value: &[u8], part: &mut Part, flag: &mut dyn FnMut(&'static str)) {
    let mut rest = trim(value);
    if rest.len() < 9 || !rest[..9].eq_ignore_ascii_case(b"form-data") {
        flag("MULTIPART_INVALID_PART");
        return;
    }
    rest = trim(&rest[9..]);
    let mut named = false;
    while !rest.is_empty() {
        match rest.strip_prefix(b";") {
            Some(r) => rest = trim(r),
            None => {
                flag("MULTIPART_MISSING_SEMICOLON");
            }
        }
        let Some(eq) = memchr::memchr(b'=', rest) else {
            if !rest.is_empty() {
                flag("MULTIPART_INVALID_PART");
            }
            break;
        };
        let key = trim(&rest[..eq]).to_ascii_lowercase();
        rest = trim(&rest[eq + 1..]);
        let value = if let Some(inner) = rest.strip_prefix(b"\"") {
            let mut value = Vec::new();
            let mut i = 0;
            let mut ended = false;
            while i < inner.len() {
                match inner[i] {
                    b'\\' if i + 1 < inner.len() && matches!(inner[i + 1], b'"' | b'\\') => {
                        value.push(inner[i + 1]);
                        i += 2;
                    }
                    b'"' => {
                        ended = true;
                        i += 1;
                        break;
                    }
                    b => {
                        value.push(b);
                        i += 1;
                    }
                }
            }
            if !ended {
                flag("MULTIPART_INVALID_QUOTING");
            }
            rest = trim(&inner[i..]);
            value
        } else {
            let end = memchr::memchr(b';', rest).unwrap_or(rest.len());
            let value = trim(&rest[..end]).to_vec();
            if value.contains(&b'"') || value.contains(&b'\'') {
                flag("MULTIPART_INVALID_QUOTING");
            }
            rest = &rest[end..];
            value
        };
        match key.as_slice() {
            b"name" => {
                if named {
                    flag("MULTIPART_INVALID_PART");
                }
                named = true;
                part.name = value;
            }
            b"filename" | b"filename*" => {
                if part.filename.is_some() && key == b"filename" {
                    flag("MULTIPART_INVALID_PART");
                }
                part.filename = Some(value);
            }
            _ => flag("MULTIPART_INVALID_PART"),
        }
    }
    if !named || part.name.is_empty() {
        flag("MULTIPART_INVALID_PART");
    }
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let Some((&b, r)) = s.split_first() {
        if b == b' ' || b == b'\t' {
            s = r;
        } else {
            break;
        }
    }
    while let Some((&b, r)) = s.split_last() {
        if b == b' ' || b == b'\t' {
            s = r;
        } else {
            break;
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_paths_follow_modsecurity() {
        let pairs = json(br#"{"a":{"b":1,"c":[true,null,"x"]},"d":"e"}"#).unwrap();
        let names: Vec<String> = pairs
            .iter()
            .map(|(k, v)| format!("{}={}", String::from_utf8_lossy(k), String::from_utf8_lossy(v)))
            .collect();
        assert_eq!(
            names,
            ["json.a.b=1", "json.a.c.array_0=true", "json.a.c.array_1=", "json.a.c.array_2=x", "json.d=e"]
        );
        assert!(json(b"{").is_err());
        let deep = format!("{}{}", "[".repeat(100), "]".repeat(100));
        assert!(json(deep.as_bytes()).is_err());
    }

    #[test]
    fn xml_yields_text_and_attributes_and_refuses_the_malformed() {
        let doc = xml(br#"<?xml version="1.0"?><a x="1&amp;2"><b>hi</b><![CDATA[<s>]]>&lt;</a>"#).unwrap();
        assert_eq!(doc.text, b"hi<s><");
        assert_eq!(doc.attributes, [b"1&2".to_vec()]);
        for bad in [&b"<a><b></a>"[..], b"<a>", b"text", b"<a/><b/>", b"<!DOCTYPE a [<!ENTITY x \"y\">]><a>&x;</a>"] {
            assert!(xml(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn multipart_parts_files_and_flags() {
        let body = b"--XyZ\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nvalue 1\r\n--XyZ\r\nContent-Disposition: form-data; name=\"f\"; filename=\"x.php\"\r\nContent-Type: text/plain\r\n\r\n<?php\r\n--XyZ--\r\n";
        let parsed = multipart(body, Some(b"XyZ"));
        assert!(parsed.error.is_none(), "{:?}", parsed.error);
        assert!(parsed.flags.iter().all(|(_, set)| !set), "{:?}", parsed.flags);
        assert_eq!(parsed.parts.len(), 2);
        assert_eq!(parsed.parts[0].value, b"value 1");
        assert_eq!(parsed.parts[1].filename.as_deref(), Some(&b"x.php"[..]));
        assert_eq!(parsed.parts[1].headers.len(), 2);
        let sloppy = b"junk\r\n--XyZ\nContent-Disposition: form-data; name=a\"\r\n\r\nv\r\n--XyZ--\r\nafter";
        let parsed = multipart(sloppy, Some(b"XyZ"));
        let set: Vec<&str> = parsed.flags.iter().filter(|(_, s)| *s).map(|(n, _)| *n).collect();
        for expected in
            ["MULTIPART_DATA_BEFORE", "MULTIPART_LF_LINE", "MULTIPART_INVALID_QUOTING", "MULTIPART_DATA_AFTER"]
        {
            assert!(set.contains(&expected), "{expected} in {set:?}");
        }
        assert!(multipart(b"--XyZ\r\nContent-Disposition: form-data; name=a\r\n\r\nv", Some(b"XyZ")).error.is_some());
        let b = boundary(b"multipart/form-data; boundary=\"abc\"").unwrap();
        assert!(b.quoted && b.value == b"abc");
        assert!(boundary(b"multipart/form-data; boundary = abc").unwrap().whitespace);
    }
}
