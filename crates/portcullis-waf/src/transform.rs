//! Transformations (`t:…`): byte for byte what libmodsecurity 3 does to a
//! value before an operator sees it.
//!
//! Decision rules:
//! - Values are bytes, never text: a transformation sees and produces
//!   whatever bytes the request carried, invalid UTF-8 included.
//! - Each function follows ModSecurity v3's own edge cases (what an
//!   incomplete escape leaves behind, which bytes count as white space,
//!   `%uHHHH` keeping only its low byte with the full-width ASCII
//!   adjustment), because an attack that decodes differently here than in
//!   the reference engine is an attack one of them misses.
//! - An unknown transformation name is a load error ([`Transform::parse`]).

use std::borrow::Cow;

/// One transformation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transform {
    /// `base64Decode`
    Base64Decode,
    /// `base64DecodeExt`
    Base64DecodeExt,
    /// `cmdLine`
    CmdLine,
    /// `compressWhitespace`
    CompressWhitespace,
    /// `cssDecode`
    CssDecode,
    /// `escapeSeqDecode`
    EscapeSeqDecode,
    /// `hexDecode`
    HexDecode,
    /// `hexEncode`
    HexEncode,
    /// `htmlEntityDecode`
    HtmlEntityDecode,
    /// `jsDecode`
    JsDecode,
    /// `length`
    Length,
    /// `lowercase`
    Lowercase,
    /// `uppercase`
    Uppercase,
    /// `normalizePath` (`normalisePath`)
    NormalizePath,
    /// `normalizePathWin` (`normalisePathWin`)
    NormalizePathWin,
    /// `removeComments`
    RemoveComments,
    /// `removeCommentsChar`
    RemoveCommentsChar,
    /// `removeNulls`
    RemoveNulls,
    /// `removeWhitespace`
    RemoveWhitespace,
    /// `replaceComments`
    ReplaceComments,
    /// `replaceNulls`
    ReplaceNulls,
    /// `sha1`
    Sha1,
    /// `trim`
    Trim,
    /// `trimLeft`
    TrimLeft,
    /// `trimRight`
    TrimRight,
    /// `urlDecode`
    UrlDecode,
    /// `urlDecodeUni`
    UrlDecodeUni,
    /// `urlEncode`
    UrlEncode,
    /// `utf8toUnicode`
    Utf8ToUnicode,
}

impl Transform {
    /// The transformation called `name` (case-insensitive), `None` for `none`.
    ///
    /// # Errors
    /// The name is not a transformation this engine implements.
    pub fn parse(name: &str) -> Result<Option<Self>, String> {
        Ok(Some(match name.to_ascii_lowercase().as_str() {
            "none" => return Ok(None),
            "base64decode" => Self::Base64Decode,
            "base64decodeext" => Self::Base64DecodeExt,
            "cmdline" => Self::CmdLine,
            "compresswhitespace" => Self::CompressWhitespace,
            "cssdecode" => Self::CssDecode,
            "escapeseqdecode" => Self::EscapeSeqDecode,
            "hexdecode" => Self::HexDecode,
            "hexencode" => Self::HexEncode,
            "htmlentitydecode" => Self::HtmlEntityDecode,
            "jsdecode" => Self::JsDecode,
            "length" => Self::Length,
            "lowercase" => Self::Lowercase,
            "uppercase" => Self::Uppercase,
            "normalizepath" | "normalisepath" => Self::NormalizePath,
            "normalizepathwin" | "normalisepathwin" => Self::NormalizePathWin,
            "removecomments" => Self::RemoveComments,
            "removecommentschar" => Self::RemoveCommentsChar,
            "removenulls" => Self::RemoveNulls,
            "removewhitespace" => Self::RemoveWhitespace,
            "replacecomments" => Self::ReplaceComments,
            "replacenulls" => Self::ReplaceNulls,
            "sha1" => Self::Sha1,
            "trim" => Self::Trim,
            "trimleft" => Self::TrimLeft,
            "trimright" => Self::TrimRight,
            "urldecode" => Self::UrlDecode,
            "urldecodeuni" => Self::UrlDecodeUni,
            "urlencode" => Self::UrlEncode,
            "utf8tounicode" => Self::Utf8ToUnicode,
            _ => return Err(format!("transformation `{name}` is not supported")),
        }))
    }

    /// Applies the transformation.
    #[must_use]
    pub fn apply<'a>(self, input: &'a [u8]) -> Cow<'a, [u8]> {
        match self {
            Self::Base64Decode => Cow::Owned(base64_decode(input, false)),
            Self::Base64DecodeExt => Cow::Owned(base64_decode(input, true)),
            Self::CmdLine => Cow::Owned(cmd_line(input)),
            Self::CompressWhitespace => compress_whitespace(input),
            Self::CssDecode => when_has(input, b'\\', css_decode),
            Self::EscapeSeqDecode => when_has(input, b'\\', escape_seq_decode),
            Self::HexDecode => Cow::Owned(hex_decode(input)),
            Self::HexEncode => Cow::Owned(hex_encode(input)),
            Self::HtmlEntityDecode => when_has(input, b'&', html_entity_decode),
            Self::JsDecode => when_has(input, b'\\', js_decode),
            Self::Length => Cow::Owned(input.len().to_string().into_bytes()),
            Self::Lowercase => {
                if input.iter().any(u8::is_ascii_uppercase) {
                    Cow::Owned(input.to_ascii_lowercase())
                } else {
                    Cow::Borrowed(input)
                }
            }
            Self::Uppercase => Cow::Owned(input.to_ascii_uppercase()),
            Self::NormalizePath => normalize_path(input, false),
            Self::NormalizePathWin => normalize_path(input, true),
            Self::RemoveComments => Cow::Owned(remove_comments(input)),
            Self::RemoveCommentsChar => Cow::Owned(remove_comments_char(input)),
            Self::RemoveNulls => remove_bytes(input, |b| b == 0),
            Self::RemoveWhitespace => remove_bytes(input, |b| is_space(b) || b == 0xa0),
            Self::ReplaceComments => when_has(input, b'/', replace_comments),
            Self::ReplaceNulls => {
                if input.contains(&0) {
                    Cow::Owned(input.iter().map(|&b| if b == 0 { b' ' } else { b }).collect())
                } else {
                    Cow::Borrowed(input)
                }
            }
            Self::Sha1 => Cow::Owned(
                aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, input).as_ref().to_vec(),
            ),
            Self::Trim => trim(input, true, true),
            Self::TrimLeft => trim(input, true, false),
            Self::TrimRight => trim(input, false, true),
            Self::UrlDecode => when_has2(input, b'%', b'+', |i| url_decode(i, false)),
            Self::UrlDecodeUni => when_has2(input, b'%', b'+', |i| url_decode(i, true)),
            Self::UrlEncode => Cow::Owned(url_encode(input)),
            Self::Utf8ToUnicode => {
                if input.is_ascii() {
                    Cow::Borrowed(input)
                } else {
                    Cow::Owned(utf8_to_unicode(input))
                }
            }
        }
    }
}

fn when_has<'a>(input: &'a [u8], byte: u8, f: impl Fn(&[u8]) -> Vec<u8>) -> Cow<'a, [u8]> {
    if memchr::memchr(byte, input).is_some() { Cow::Owned(f(input)) } else { Cow::Borrowed(input) }
}

fn when_has2<'a>(input: &'a [u8], a: u8, b: u8, f: impl Fn(&[u8]) -> Vec<u8>) -> Cow<'a, [u8]> {
    if memchr::memchr2(a, b, input).is_some() { Cow::Owned(f(input)) } else { Cow::Borrowed(input) }
}

/// C's `isspace` in the C locale.
#[must_use]
pub const fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

pub(crate) const fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Two hex digits (both checked by the caller) as a byte.
fn x2c(hi: u8, lo: u8) -> u8 {
    (hex_value(hi).unwrap_or(0) << 4) | hex_value(lo).unwrap_or(0)
}

const fn is_odigit(b: u8) -> bool {
    matches!(b, b'0'..=b'7')
}

/// `%uHHHH` → its low byte, plus 0x20 for full-width ASCII (`%uFF01`–`%uFF5E`).
fn unicode_low_byte(h: &[u8]) -> u8 {
    let mut c = x2c(h[2], h[3]);
    if c > 0 && c < 0x5f && matches!(h[0], b'f' | b'F') && matches!(h[1], b'f' | b'F') {
        c += 0x20;
    }
    c
}

/// `%XX` (and with `uni` `%uHHHH`) decoded, `+` as a space, a malformed
/// `%` kept.
pub(crate) fn url_decode(input: &[u8], uni: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        match input[i] {
            b'%' => {
                if uni && matches!(input.get(i + 1), Some(b'u' | b'U')) {
                    if i + 5 < input.len() && input[i + 2..i + 6].iter().all(u8::is_ascii_hexdigit) {
                        out.push(unicode_low_byte(&input[i + 2..i + 6]));
                        i += 6;
                    } else {
                        out.extend_from_slice(&input[i..i + 2]);
                        i += 2;
                    }
                } else if i + 2 < input.len() && input[i + 1].is_ascii_hexdigit() && input[i + 2].is_ascii_hexdigit() {
                    out.push(x2c(input[i + 1], input[i + 2]));
                    i += 3;
                } else {
                    out.push(b'%');
                    i += 1;
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

/// `urlEncode`: everything but alphanumerics and `*-._` percent-encoded, space as `+`.
fn url_encode(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len() * 3);
    for &b in input {
        if b == b' ' {
            out.push(b'+');
        } else if b.is_ascii_alphanumeric() || matches!(b, b'*' | b'-' | b'.' | b'_') {
            out.push(b);
        } else {
            out.extend_from_slice(format!("%{b:02x}").as_bytes());
        }
    }
    out
}

/// `strtol` of a run of digits, saturating like C's `LONG_MAX`, cast to a byte.
fn strtol_byte(digits: &[u8], radix: u32) -> u8 {
    let mut value: i64 = 0;
    for &d in digits {
        let v = i64::from(hex_value(d).unwrap_or(0));
        value = match value.checked_mul(i64::from(radix)).and_then(|x| x.checked_add(v)) {
            Some(x) => x,
            None => return 0xff,
        };
    }
    (value & 0xff) as u8
}

fn html_entity_decode(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let n = input.len();
    let mut i = 0;
    while i < n {
        let mut copy = 1;
        if input[i] == b'&' && i + 1 < n {
            if input[i + 1] == b'#' {
                copy += 1;
                if i + 2 < n {
                    if matches!(input[i + 2], b'x' | b'X') {
                        copy += 1;
                        if i + 3 < n {
                            let k = i + 3;
                            let mut j = k;
                            while j < n && input[j].is_ascii_hexdigit() {
                                j += 1;
                            }
                            if j > k {
                                out.push(strtol_byte(&input[k..j], 16));
                                i = if j < n && input[j] == b';' { j + 1 } else { j };
                                continue;
                            }
                        }
                    } else {
                        let k = i + 2;
                        let mut j = k;
                        while j < n && input[j].is_ascii_digit() {
                            j += 1;
                        }
                        if j > k {
                            out.push(strtol_byte(&input[k..j], 10));
                            i = if j < n && input[j] == b';' { j + 1 } else { j };
                            continue;
                        }
                    }
                }
            } else {
                let k = i + 1;
                let mut j = k;
                while j < n && input[j].is_ascii_alphanumeric() {
                    j += 1;
                }
                if j > k {
                    let name = input[k..j].to_ascii_lowercase();
                    let decoded = match name.as_slice() {
                        b"quot" => Some(b'"'),
                        b"amp" => Some(b'&'),
                        b"lt" => Some(b'<'),
                        b"gt" => Some(b'>'),
                        b"nbsp" => Some(0xa0),
                        _ => None,
                    };
                    if let Some(b) = decoded {
                        out.push(b);
                        i = if j < n && input[j] == b';' { j + 1 } else { j };
                        continue;
                    }
                    copy = j - k + 1;
                }
            }
        }
        let end = (i + copy).min(n);
        out.extend_from_slice(&input[i..end]);
        i = end;
    }
    out
}

fn js_decode(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let n = input.len();
    let mut i = 0;
    while i < n {
        if input[i] != b'\\' {
            out.push(input[i]);
            i += 1;
            continue;
        }
        if i + 5 < n && input[i + 1] == b'u' && input[i + 2..i + 6].iter().all(u8::is_ascii_hexdigit) {
            out.push(unicode_low_byte(&input[i + 2..i + 6]));
            i += 6;
        } else if i + 3 < n
            && input[i + 1] == b'x'
            && input[i + 2].is_ascii_hexdigit()
            && input[i + 3].is_ascii_hexdigit()
        {
            out.push(x2c(input[i + 2], input[i + 3]));
            i += 4;
        } else if i + 1 < n && is_odigit(input[i + 1]) {
            let mut j = 0;
            while i + 1 + j < n && j < 3 && is_odigit(input[i + 1 + j]) {
                j += 1;
            }
            if j == 3 && input[i + 1] > b'3' {
                j = 2;
            }
            out.push(strtol_byte(&input[i + 1..i + 1 + j], 8));
            i += 1 + j;
        } else if i + 1 < n {
            out.push(match input[i + 1] {
                b'a' => 0x07,
                b'b' => 0x08,
                b'f' => 0x0c,
                b'n' => b'\n',
                b'r' => b'\r',
                b't' => b'\t',
                b'v' => 0x0b,
                c => c,
            });
            i += 2;
        } else {
            out.extend_from_slice(&input[i..]);
            i = n;
        }
    }
    out
}

fn css_decode(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let n = input.len();
    let mut i = 0;
    while i < n {
        if input[i] != b'\\' {
            out.push(input[i]);
            i += 1;
            continue;
        }
        if i + 1 >= n {
            // A trailing backslash continues to nothing.
            i += 1;
            continue;
        }
        i += 1;
        let mut j = 0;
        while j < 6 && i + j < n && input[i + j].is_ascii_hexdigit() {
            j += 1;
        }
        if j > 0 {
            let h = &input[i..i + j];
            let mut full_check = false;
            let mut c = match j {
                1 => hex_value(h[0]).unwrap_or(0),
                _ => x2c(h[j - 2], h[j - 1]),
            };
            match j {
                4 => full_check = true,
                5 => full_check = h[0] == b'0',
                6 => full_check = h[0] == b'0' && h[1] == b'0',
                _ => {}
            }
            if full_check && c > 0 && c < 0x5f && matches!(h[j - 3], b'f' | b'F') && matches!(h[j - 4], b'f' | b'F') {
                c += 0x20;
            }
            out.push(c);
            if i + j < n && is_space(input[i + j]) {
                j += 1;
            }
            i += j;
        } else if input[i] == b'\n' {
            i += 1;
        } else {
            out.push(input[i]);
            i += 1;
        }
    }
    out
}

fn escape_seq_decode(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let n = input.len();
    let mut i = 0;
    while i < n {
        if input[i] != b'\\' || i + 1 >= n {
            out.push(input[i]);
            i += 1;
            continue;
        }
        let simple = match input[i + 1] {
            b'a' => Some(0x07),
            b'b' => Some(0x08),
            b'f' => Some(0x0c),
            b'n' => Some(b'\n'),
            b'r' => Some(b'\r'),
            b't' => Some(b'\t'),
            b'v' => Some(0x0b),
            b'\\' => Some(b'\\'),
            b'?' => Some(b'?'),
            b'\'' => Some(b'\''),
            b'"' => Some(b'"'),
            _ => None,
        };
        if let Some(c) = simple {
            out.push(c);
            i += 2;
            continue;
        }
        if matches!(input[i + 1], b'x' | b'X') {
            if i + 3 < n && input[i + 2].is_ascii_hexdigit() && input[i + 3].is_ascii_hexdigit() {
                out.push(x2c(input[i + 2], input[i + 3]));
                i += 4;
                continue;
            }
        } else if is_odigit(input[i + 1]) {
            let mut j = 0;
            while i + 1 + j < n && j < 3 && is_odigit(input[i + 1 + j]) {
                j += 1;
            }
            out.push(strtol_byte(&input[i + 1..i + 1 + j], 8));
            i += 1 + j;
            continue;
        }
        // Not an escape it knows: the backslash goes, the character stays.
        out.push(input[i + 1]);
        i += 2;
    }
    out
}

fn cmd_line(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut space = false;
    for &a in input {
        match a {
            b'"' | b'\'' | b'\\' | b'^' => {}
            b' ' | b',' | b';' | b'\t' | b'\r' | b'\n' => {
                if !space {
                    out.push(b' ');
                    space = true;
                }
            }
            b'/' | b'(' => {
                if space {
                    out.pop();
                }
                space = false;
                out.push(a);
            }
            _ => {
                out.push(a.to_ascii_lowercase());
                space = false;
            }
        }
    }
    out
}

fn compress_whitespace(input: &[u8]) -> Cow<'_, [u8]> {
    let is_ws = |b: u8| is_space(b) || b == 0xa0;
    let needs = input.iter().any(|&b| is_ws(b) && b != b' ') || input.windows(2).any(|w| is_ws(w[0]) && is_ws(w[1]));
    if !needs {
        return Cow::Borrowed(input);
    }
    let mut out = Vec::with_capacity(input.len());
    let mut in_space = false;
    for &b in input {
        if is_ws(b) {
            if !in_space {
                out.push(b' ');
                in_space = true;
            }
        } else {
            out.push(b);
            in_space = false;
        }
    }
    Cow::Owned(out)
}

fn remove_bytes(input: &[u8], drop: impl Fn(u8) -> bool) -> Cow<'_, [u8]> {
    if input.iter().any(|&b| drop(b)) {
        Cow::Owned(input.iter().copied().filter(|&b| !drop(b)).collect())
    } else {
        Cow::Borrowed(input)
    }
}

fn trim(input: &[u8], left: bool, right: bool) -> Cow<'_, [u8]> {
    let mut start = 0;
    let mut end = input.len();
    if left {
        while start < end && is_space(input[start]) {
            start += 1;
        }
    }
    if right {
        while end > start && is_space(input[end - 1]) {
            end -= 1;
        }
    }
    Cow::Borrowed(&input[start..end])
}

/// `replaceComments`: each `/* … */` (an unterminated one runs to the end)
/// becomes one space.
fn replace_comments(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let n = input.len();
    let mut i = 0;
    let mut incomment = false;
    while i < n {
        if incomment {
            if input[i] == b'*' && i + 1 < n && input[i + 1] == b'/' {
                incomment = false;
                i += 2;
                out.push(b' ');
            } else {
                i += 1;
            }
        } else if input[i] == b'/' && i + 1 < n && input[i + 1] == b'*' {
            incomment = true;
            i += 2;
        } else {
            out.push(input[i]);
            i += 1;
        }
    }
    if incomment {
        out.push(b' ');
    }
    out
}

/// `removeComments`: `/* … */`, `<!-- … -->`, and from `--` or `#` to the end.
fn remove_comments(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let n = input.len();
    let mut i = 0;
    let mut incomment = false;
    while i < n {
        if incomment {
            if (input[i] == b'*' && i + 1 < n && input[i + 1] == b'/')
                || (input[i] == b'-' && i + 2 < n && input[i + 1] == b'-' && input[i + 2] == b'>')
            {
                incomment = false;
                i += if input[i] == b'*' { 2 } else { 3 };
            } else {
                i += 1;
            }
        } else if input[i] == b'/' && i + 1 < n && input[i + 1] == b'*' {
            incomment = true;
            i += 2;
        } else if input[i] == b'<' && input[i..].starts_with(b"<!--") {
            incomment = true;
            i += 4;
        } else if (input[i] == b'-' && i + 1 < n && input[i + 1] == b'-') || input[i] == b'#' {
            break;
        } else {
            out.push(input[i]);
            i += 1;
        }
    }
    out
}

/// `removeCommentsChar`: drops `/*`, `*/`, `<!--`, `-->`, `--` and `#`.
fn remove_comments_char(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        let rest = &input[i..];
        if rest.starts_with(b"/*") || rest.starts_with(b"*/") || rest.starts_with(b"--") {
            i += 2;
        } else if rest.starts_with(b"<!--") {
            i += 4;
        } else if rest.starts_with(b"-->") {
            i += 3;
        } else if rest[0] == b'#' {
            i += 1;
        } else {
            out.push(rest[0]);
            i += 1;
        }
    }
    out
}

fn hex_decode(input: &[u8]) -> Vec<u8> {
    input.chunks_exact(2).map(|p| x2c(p[0], p[1])).collect()
}

fn hex_encode(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len() * 2);
    for b in input {
        out.extend_from_slice(format!("{b:02x}").as_bytes());
    }
    out
}

/// `base64Decode`: the decodable prefix (`Ext`: skipping characters outside
/// the alphabet).
fn base64_decode(input: &[u8], ext: bool) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::with_capacity(input.len() * 3 / 4);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for &b in input {
        if b == b'=' {
            break;
        }
        let Some(v) = ALPHABET.iter().position(|&a| a == b) else {
            if ext {
                continue;
            }
            break;
        };
        acc = (acc << 6) | v as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

/// `normalizePath` (`win`: backslashes become slashes first): removes `./`
/// and `x/../` segments and collapses repeated slashes.
fn normalize_path(input: &[u8], win: bool) -> Cow<'_, [u8]> {
    let needs = input.windows(2).any(|w| w == b"//" || w == b"/." || w == b"./")
        || input == b"."
        || input == b".."
        || (win && input.contains(&b'\\'));
    if !needs {
        return Cow::Borrowed(input);
    }
    let src: Vec<u8> =
        if win { input.iter().map(|&b| if b == b'\\' { b'/' } else { b }).collect() } else { input.to_vec() };
    let absolute = src.first() == Some(&b'/');
    let trailing =
        src.last() == Some(&b'/') || src.ends_with(b"/.") || src.ends_with(b"/..") || src == b"." || src == b"..";
    let mut parts: Vec<&[u8]> = Vec::new();
    let mut leading_up = 0usize;
    for seg in src.split(|&b| b == b'/') {
        match seg {
            b"" | b"." => {}
            b".." => {
                if parts.pop().is_none() && !absolute {
                    leading_up += 1;
                }
            }
            s => parts.push(s),
        }
    }
    let mut out = Vec::with_capacity(src.len());
    if absolute {
        out.push(b'/');
    }
    for _ in 0..leading_up {
        out.extend_from_slice(b"../");
    }
    for (k, p) in parts.iter().enumerate() {
        if k > 0 {
            out.push(b'/');
        }
        out.extend_from_slice(p);
    }
    if trailing && !parts.is_empty() {
        out.push(b'/');
    }
    Cow::Owned(out)
}

/// `utf8toUnicode`: every valid multi-byte UTF-8 sequence becomes `%uHHHH`
/// (lower-case hex, at least four digits); other bytes are copied, the lead
/// byte of a truncated or malformed sequence dropped, as ModSecurity does.
fn utf8_to_unicode(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len() * 2);
    let n = input.len();
    let mut i = 0;
    while i < n {
        let c = input[i];
        let left = n - i;
        let cont = |k: usize| input.get(i + k).is_some_and(|&b| b & 0xc0 == 0x80);
        let (len, code): (usize, u32) = if c & 0x80 == 0 {
            out.push(c);
            i += 1;
            continue;
        } else if c & 0xe0 == 0xc0 {
            if left < 2 || !cont(1) { (0, 0) } else { (2, (u32::from(c & 0x1f) << 6) | u32::from(input[i + 1] & 0x3f)) }
        } else if c & 0xf0 == 0xe0 {
            if left < 3 || !cont(1) || !cont(2) {
                (0, 0)
            } else {
                (
                    3,
                    (u32::from(c & 0x0f) << 12)
                        | (u32::from(input[i + 1] & 0x3f) << 6)
                        | u32::from(input[i + 2] & 0x3f),
                )
            }
        } else if c & 0xf8 == 0xf0 {
            if left < 4 || !cont(1) || !cont(2) || !cont(3) {
                (0, 0)
            } else {
                (
                    4,
                    (u32::from(c & 0x07) << 18)
                        | (u32::from(input[i + 1] & 0x3f) << 12)
                        | (u32::from(input[i + 2] & 0x3f) << 6)
                        | u32::from(input[i + 3] & 0x3f),
                )
            }
        } else {
            out.push(c);
            i += 1;
            continue;
        };
        if len == 0 {
            i += 1;
            continue;
        }
        let overlong = (len == 2 && code < 0x80) || (len == 3 && code < 0x800) || (len == 4 && code < 0x10000);
        if (0xd800..=0xdfff).contains(&code) || overlong {
            out.push(c);
        } else {
            out.extend_from_slice(format!("%u{code:04x}").as_bytes());
        }
        i += len;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(name: &str, input: &[u8]) -> Vec<u8> {
        Transform::parse(name).unwrap().unwrap().apply(input).into_owned()
    }

    #[test]
    fn decoders_follow_modsecurity_edge_cases() {
        let cases: &[(&str, &[u8], &[u8])] = &[
            ("urlDecodeUni", b"a%27b+c%2", b"a'b c%2"),
            ("urlDecodeUni", b"%u0027%uff1c%u12", b"'<%u12"),
            ("urlDecodeUni", b"%zz%", b"%zz%"),
            ("urlDecode", b"%u0027", b"%u0027"),
            ("htmlEntityDecode", b"&lt;script&gt;&#x41;&#66&quot;&foo;", b"<script>AB\"&foo;"),
            ("htmlEntityDecode", b"&#x;&#;&", b"&#x;&#;&"),
            ("jsDecode", b"\\x41\\u0042\\103\\n\\q\\", b"ABC\nq\\"),
            ("jsDecode", b"\\uff1c\\477", b"<'7"),
            ("cssDecode", b"\\3c script\\\n\\z\\", b"<scriptz"),
            ("cssDecode", b"j\\61vascript", b"javascript"),
            ("escapeSeqDecode", b"\\x41\\101\\n\\q", b"AA\nq"),
            ("cmdLine", b"C:\\> DiR ;\t/w  (x),\"a'^b", b"c:> dir/w(x) ab"),
            ("compressWhitespace", b"a \t\n b", b"a b"),
            ("removeWhitespace", b" a \tb\xa0", b"ab"),
            ("replaceComments", b"a/*x*/b/*c", b"a b "),
            ("removeCommentsChar", b"a/*b*/c--d#e", b"abcde"),
            ("normalizePath", b"/a/./b/../../c//d", b"/c/d"),
            ("normalizePathWin", b"a\\..\\..\\b", b"../b"),
            ("utf8toUnicode", "aé€\u{1F600}".as_bytes(), b"a%u00e9%u20ac%u1f600"),
            ("length", b"abcd", b"4"),
            ("hexEncode", b"A\xff", b"41ff"),
            ("base64Decode", b"YWJj", b"abc"),
            ("trim", b" \tx \n", b"x"),
            ("lowercase", b"AbC\xc9", b"abc\xc9"),
        ];
        for (name, input, expected) in cases {
            assert_eq!(t(name, input), expected.to_vec(), "{name}({:?})", String::from_utf8_lossy(input));
        }
        assert!(Transform::parse("none").unwrap().is_none());
        assert!(Transform::parse("t:bogus").is_err());
    }
}
