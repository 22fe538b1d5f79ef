//! Cross-site scripting detection: libinjection 3.9.2's `libinjection_xss`.
//!
//! The input is tokenized as HTML5 five times, as if pasted into text and
//! into an unquoted, `'`, `"` and `` ` `` attribute value; it is XSS if any
//! reading finds one of:
//! - a `<!DOCTYPE`, or a start tag named in the tag table (`data.rs`) or starting with
//!   `svg` or `xsl` (ASCII case-insensitive, NUL bytes ignored);
//! - an attribute named `on*` (5+ bytes: every event handler), `xmlns*` or
//!   `xlink*`, or one of the attribute table (`data.rs`) that is dangerous whatever its value
//!   (`style`, `datasrc`...) — if it has a value;
//! - a URL attribute (`href`, `src`, `action`...) whose value, after leading
//!   control bytes and HTML entity decoding, starts with `data`, `javascript`
//!   (`java`), `vbscript` or `view-source`;
//! - SVG's `attributeName` whose value names a dangerous attribute;
//! - a comment holding a `` ` ``, an IE conditional comment (`[if`), `xml`,
//!   `import` or `entity`.

use crate::data::{BLACK_ATTRS, BLACK_TAGS, URL_SCHEMES};
use crate::html5::{Html5Kind, Html5Start, html5_tokenize};

/// What makes an attribute XSS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AttrKind {
    /// Any value (libinjection's black and style attributes).
    Black,
    /// A value that is a dangerous URL.
    Url,
    /// A value that names a dangerous attribute (SVG `attributeName`).
    Indirect,
}

/// Whether libinjection reads `input` as cross-site scripting in any of the
/// five HTML contexts (C `libinjection_xss`).
#[must_use]
pub fn xss(input: &[u8]) -> bool {
    [
        Html5Start::Data,
        Html5Start::ValueNoQuote,
        Html5Start::ValueSingleQuote,
        Html5Start::ValueDoubleQuote,
        Html5Start::ValueBackQuote,
    ]
    .into_iter()
    .any(|start| is_xss(input, start))
}

/// C `libinjection_is_xss`: one reading of `input`.
#[must_use]
pub fn is_xss(input: &[u8], start: Html5Start) -> bool {
    let mut attr: Option<AttrKind> = None;
    for token in html5_tokenize(input, start) {
        if token.kind != Html5Kind::AttrValue {
            attr = None;
        }
        match token.kind {
            Html5Kind::Doctype => return true,
            Html5Kind::TagNameOpen if is_black_tag(token.value) => return true,
            Html5Kind::AttrName => attr = black_attr(input, token.pos, token.value.len()),
            Html5Kind::AttrValue => {
                let flagged = match attr {
                    None => false,
                    Some(AttrKind::Black) => true,
                    Some(AttrKind::Url) => is_black_url(input, token.pos, token.value.len()),
                    Some(AttrKind::Indirect) => black_attr(input, token.pos, token.value.len()).is_some(),
                };
                if flagged {
                    return true;
                }
                attr = None;
            }
            Html5Kind::TagComment if is_black_comment(token.value) => return true,
            _ => {}
        }
    }
    false
}

fn upper(b: u8) -> u8 {
    if b.is_ascii_lowercase() { b - 0x20 } else { b }
}

/// C `cstrcasecmp_with_null(word, s, len) == 0`: `s` without its NUL bytes,
/// upper-cased, is `word`.
fn equals_ignoring_nul(word: &[u8], s: &[u8]) -> bool {
    let mut word = word.iter();
    for b in s.iter().filter(|b| **b != 0) {
        if word.next() != Some(&upper(*b)) {
            return false;
        }
    }
    word.next().is_none()
}

fn is_black_tag(name: &[u8]) -> bool {
    if name.len() < 3 {
        return false;
    }
    if BLACK_TAGS.iter().any(|tag| equals_ignoring_nul(tag, name)) {
        return true;
    }
    let prefix = [upper(name[0]), upper(name[1]), upper(name[2])];
    &prefix == b"SVG" || &prefix == b"XSL"
}

/// C `is_black_attr` over `input[pos..pos + len]`.
fn black_attr(input: &[u8], pos: usize, len: usize) -> Option<AttrKind> {
    let name = input.get(pos..pos + len).unwrap_or(&[]);
    if name.len() < 2 {
        return None;
    }
    if name.len() >= 5 {
        // Every `on*` event handler.
        if upper(name[0]) == b'O' && upper(name[1]) == b'N' {
            return Some(AttrKind::Black);
        }
        // XML namespaces and links can create arbitrary tags.
        if equals_ignoring_nul(b"XMLNS", &name[..5]) || equals_ignoring_nul(b"XLINK", &name[..5]) {
            return Some(AttrKind::Black);
        }
    }
    BLACK_ATTRS.iter().find(|(attr, _)| equals_ignoring_nul(attr, name)).map(|(_, kind)| *kind)
}

/// C `html_decode_char_at`: the character at `src` (an HTML entity
/// `&#...;` decoded) and how many bytes it took. `src` is the rest of the
/// value; like the C code, `&#` and `&#x` look one or two bytes past it
/// (`after` is the input from the value's end, NUL past the input).
fn decode_char(src: &[u8], after: &[u8]) -> (u32, usize) {
    let byte =
        |i: usize| -> u8 { src.get(i).copied().unwrap_or_else(|| after.get(i - src.len()).copied().unwrap_or(0)) };
    let len = src.len();
    if len == 0 {
        return (u32::MAX, 0);
    }
    if src[0] != b'&' || len < 2 {
        return (u32::from(src[0]), 1);
    }
    if src[1] != b'#' {
        return (u32::from(b'&'), 1);
    }
    let hex = |b: u8| char::from(b).to_digit(16);
    if byte(2) == b'x' || byte(2) == b'X' {
        let Some(mut val) = hex(byte(3)) else {
            return (u32::from(b'&'), 1);
        };
        let mut i = 4;
        while i < len {
            let ch = src[i];
            if ch == b';' {
                return (val, i + 1);
            }
            let Some(digit) = hex(ch) else {
                return (val, i);
            };
            val = val * 16 + digit;
            if val > 0x0010_00FF {
                return (u32::from(b'&'), 1);
            }
            i += 1;
        }
        (val, i)
    } else {
        let ch = byte(2);
        if !ch.is_ascii_digit() {
            return (u32::from(b'&'), 1);
        }
        let mut val = u32::from(ch - b'0');
        let mut i = 3;
        while i < len {
            let ch = src[i];
            if ch == b';' {
                return (val, i + 1);
            }
            if !ch.is_ascii_digit() {
                return (val, i);
            }
            val = val * 10 + u32::from(ch - b'0');
            if val > 0x0010_00FF {
                return (u32::from(b'&'), 1);
            }
            i += 1;
        }
        (val, i)
    }
}

/// C `htmlencode_startswith(prefix, src, len)`: the HTML-decoded value
/// starts with `prefix` (upper case), ignoring leading control bytes and
/// any NUL or newline.
fn html_starts_with(prefix: &[u8], input: &[u8], mut pos: usize, end: usize) -> bool {
    let mut prefix = prefix.iter().peekable();
    let mut first = true;
    while pos < end {
        if prefix.peek().is_none() {
            return true;
        }
        let (cb, consumed) = decode_char(&input[pos..end], &input[end..]);
        // Where the C code would step past the value (`&#` at its very end
        // followed by digits), its length wraps around; this cannot happen
        // when the value is followed by its delimiter or NUL.
        if consumed == 0 || consumed > end - pos {
            return false;
        }
        pos += consumed;
        if first && cb <= 32 {
            continue;
        }
        first = false;
        if cb == 0 || cb == 10 {
            continue;
        }
        let cb = if (u32::from(b'a')..=u32::from(b'z')).contains(&cb) { cb - 0x20 } else { cb };
        // C compares `(char)cb`: only the low byte counts.
        if prefix.next().copied() != Some(cb.to_le_bytes()[0]) {
            return false;
        }
    }
    prefix.peek().is_none()
}

/// C `is_black_url` over `input[pos..pos + len]`.
fn is_black_url(input: &[u8], pos: usize, len: usize) -> bool {
    let end = (pos + len).min(input.len());
    let mut pos = pos.min(end);
    // Leading white space, control bytes and bytes above 126 (Opera's
    // UTF-8 white space, EUC-JP's ignored bytes).
    while pos < end && (input[pos] <= 32 || input[pos] >= 127) {
        pos += 1;
    }
    URL_SCHEMES.iter().any(|scheme| html_starts_with(scheme, input, pos, end))
}

fn is_black_comment(comment: &[u8]) -> bool {
    // IE reads a backtick as the end of a tag.
    if comment.contains(&b'`') {
        return true;
    }
    if comment.len() > 3 {
        let prefix = [comment[0], upper(comment[1]), upper(comment[2])];
        // IE conditional comments and XML processing instructions.
        if &prefix == b"[IF" || [upper(comment[0]), prefix[1], prefix[2]] == *b"XML" {
            return true;
        }
    }
    // IE's <?import pseudo-tag and XML entity definitions.
    comment.len() > 5
        && (equals_ignoring_nul(b"IMPORT", &comment[..6]) || equals_ignoring_nul(b"ENTITY", &comment[..6]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classic_vectors() {
        assert!(xss(b"<script>alert(1)</script>"));
        assert!(xss(b"<a href=\"&#106;avascript:alert(1)\">"));
        assert!(xss(b"\" onmouseover=alert(1) x=\""));
        assert!(xss(b"<svg/onload=alert(1)>"));
        assert!(!xss(b"<b>bold</b>"));
        assert!(!xss(b"plain text & more"));
        assert!(!xss(b""));
    }
}
