//! Operators (`@rx`, `@pm`, `@eq`, …): compiled once at load.
//!
//! Decision rules:
//! - `@rx` patterns are PCRE as ModSecurity writes them, run as byte
//!   regexes without Unicode (`.` is one byte, `\w` and `(?i)` are ASCII,
//!   as with PCRE outside UTF mode). `\x{HH}` escapes PCRE accepts are
//!   rewritten to `\xHH`; a pattern the regex engine cannot express
//!   (lookaround, backreferences) is a load error, never a rule that
//!   silently never matches.
//! - Numeric operators read both sides as C++'s `std::stoi` does (leading
//!   white space, a sign, digits; anything else is 0).
//! - Operator arguments with macros (`%{tx.allowed_methods}`) are expanded
//!   per transaction; an `@rx` whose pattern has macros is compiled on use.

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use regex::bytes::{Regex, RegexBuilder};

use crate::macros::Template;

/// A compiled operator.
#[derive(Debug)]
pub enum Operator {
    /// `@rx`, with its regex set and place in it when it has one.
    Rx {
        /// The pattern, compiled.
        regex: Regex,
        /// The pattern as written.
        pattern: Box<str>,
        /// `(set, index)` in the program's regex sets.
        set: Option<(usize, usize)>,
    },
    /// `@rx` whose pattern has macros.
    RxMacro(Template),
    /// `@pm` / `@pmFromFile`: case-insensitive phrases.
    Pm(AhoCorasick),
    /// `@streq`
    StrEq(Template),
    /// `@contains`
    Contains(Template),
    /// `@containsWord`
    ContainsWord(Template),
    /// `@beginsWith`
    BeginsWith(Template),
    /// `@endsWith`
    EndsWith(Template),
    /// `@within`
    Within(Template),
    /// `@strmatch`
    StrMatch(Template),
    /// Numeric comparisons.
    Num(Cmp, Template),
    /// `@detectSQLi`
    DetectSqli,
    /// `@detectXSS`
    DetectXss,
    /// `@validateByteRange`: the allowed bytes.
    ValidateByteRange(Box<[bool; 256]>),
    /// `@validateUrlEncoding`
    ValidateUrlEncoding,
    /// `@validateUtf8Encoding`
    ValidateUtf8Encoding,
    /// `@ipMatch`
    IpMatch(Vec<ipnet::IpNet>),
    /// `@unconditionalMatch`
    Unconditional,
    /// `@noMatch`
    NoMatch,
}

/// A numeric comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmp {
    /// `@eq`
    Eq,
    /// `@ne`
    Ne,
    /// `@gt`
    Gt,
    /// `@ge`
    Ge,
    /// `@lt`
    Lt,
    /// `@le`
    Le,
}

/// Builds a byte regex from a PCRE pattern.
///
/// # Errors
/// The pattern uses something the regex engine cannot do.
pub fn compile_regex(pattern: &str) -> Result<Regex, String> {
    let rewritten = rewrite_pcre(pattern);
    RegexBuilder::new(&rewritten)
        .unicode(false)
        .size_limit(64 << 20)
        .build()
        .map_err(|e| format!("the @rx operator does not compile: {}", first_line(&e.to_string())))
}

fn first_line(text: &str) -> String {
    text.lines().rfind(|l| !l.trim().is_empty()).unwrap_or(text).trim().to_owned()
}

/// PCRE spellings the regex crate reads differently: `\x{HH}` (≤ 0xff)
/// becomes `\xHH`, and outside multi-line mode a `$` outside a character
/// class becomes `\n?\z`, because PCRE's `$` also matches before a final
/// newline (`who$` matches `time who\n`) and the regex crate's does not.
#[must_use]
pub fn rewrite_pcre(pattern: &str) -> String {
    let multiline = pattern.contains("(?m") || pattern.contains("(?im") || pattern.contains("(?sm");
    let bytes = pattern.as_bytes();
    let mut out = String::with_capacity(pattern.len() + 8);
    let mut in_class = false;
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 1 < bytes.len() {
            if bytes[i + 1] == b'x'
                && bytes.get(i + 2) == Some(&b'{')
                && let Some(close) = pattern[i + 3..].find('}')
                && let Ok(v) = u32::from_str_radix(&pattern[i + 3..i + 3 + close], 16)
                && v <= 0xff
            {
                out.push_str(&format!("\\x{v:02X}"));
                i += 4 + close;
                continue;
            }
            let len = pattern[i + 1..].chars().next().map_or(1, char::len_utf8);
            out.push_str(&pattern[i..i + 1 + len]);
            i += 1 + len;
            continue;
        }
        match bytes[i] {
            b'[' if !in_class => {
                in_class = true;
                out.push('[');
                i += 1;
                // A `]` (after an optional `^`) right at the start is a literal.
                if bytes.get(i) == Some(&b'^') {
                    out.push('^');
                    i += 1;
                }
                if bytes.get(i) == Some(&b']') {
                    out.push(']');
                    i += 1;
                }
                continue;
            }
            b']' if in_class => in_class = false,
            b'$' if !in_class && !multiline => {
                out.push_str(r"\n?\z");
                i += 1;
                continue;
            }
            _ => {}
        }
        let ch_len = pattern[i..].chars().next().map_or(1, char::len_utf8);
        out.push_str(&pattern[i..i + ch_len]);
        i += ch_len;
    }
    out
}

/// An Aho-Corasick automaton over `phrases`, ASCII case-insensitive.
///
/// # Errors
/// The automaton could not be built (too large).
pub fn phrase_matcher<I, P>(phrases: I) -> Result<AhoCorasick, String>
where
    I: IntoIterator<Item = P>,
    P: AsRef<[u8]>,
{
    AhoCorasickBuilder::new()
        .ascii_case_insensitive(true)
        .match_kind(MatchKind::Standard)
        .build(phrases)
        .map_err(|e| format!("phrase list does not build: {e}"))
}

/// `std::stoi` as ModSecurity's numeric operators use it: 0 when there is
/// no number or it is out of range.
#[must_use]
pub fn stoi(text: &[u8]) -> i64 {
    let mut i = 0;
    while i < text.len() && crate::transform::is_space(text[i]) {
        i += 1;
    }
    let mut negative = false;
    if i < text.len() && (text[i] == b'+' || text[i] == b'-') {
        negative = text[i] == b'-';
        i += 1;
    }
    let start = i;
    let mut value: i64 = 0;
    while i < text.len() && text[i].is_ascii_digit() {
        value = value * 10 + i64::from(text[i] - b'0');
        if value > i64::from(i32::MAX) + 1 {
            return 0;
        }
        i += 1;
    }
    if i == start {
        return 0;
    }
    let value = if negative { -value } else { value };
    if value > i64::from(i32::MAX) || value < i64::from(i32::MIN) { 0 } else { value }
}

/// Compares per [`Cmp`].
#[must_use]
pub const fn compare(cmp: Cmp, input: i64, param: i64) -> bool {
    match cmp {
        Cmp::Eq => input == param,
        Cmp::Ne => input != param,
        Cmp::Gt => input > param,
        Cmp::Ge => input >= param,
        Cmp::Lt => input < param,
        Cmp::Le => input <= param,
    }
}

/// `@validateByteRange` argument: `9,10,13,32-126`.
///
/// # Errors
/// Not a list of bytes and byte ranges.
pub fn byte_ranges(spec: &str) -> Result<Box<[bool; 256]>, String> {
    let mut allowed = Box::new([false; 256]);
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let bad = || format!("@validateByteRange: `{part}` is not a byte or byte range");
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (a.trim().parse::<u8>().map_err(|_| bad())?, b.trim().parse::<u8>().map_err(|_| bad())?),
            None => {
                let v = part.parse::<u8>().map_err(|_| bad())?;
                (v, v)
            }
        };
        if b < a {
            return Err(bad());
        }
        for v in a..=b {
            allowed[usize::from(v)] = true;
        }
    }
    Ok(allowed)
}

/// `@validateUrlEncoding`: a `%` not followed by two hex digits.
#[must_use]
pub fn invalid_url_encoding(input: &[u8]) -> bool {
    let mut i = 0;
    while i < input.len() {
        if input[i] == b'%' {
            if i + 2 >= input.len() || !input[i + 1].is_ascii_hexdigit() || !input[i + 2].is_ascii_hexdigit() {
                return true;
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    false
}

/// `@validateUtf8Encoding`: not valid UTF-8 (truncated, malformed,
/// overlong, surrogates or beyond U+10FFFF).
#[must_use]
pub fn invalid_utf8(input: &[u8]) -> bool {
    std::str::from_utf8(input).is_err()
}

/// `@containsWord`: `word` in `input` bounded by non-word characters.
#[must_use]
pub fn contains_word(input: &[u8], word: &[u8]) -> bool {
    if word.is_empty() {
        return true;
    }
    let is_word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    memchr::memmem::find_iter(input, word).any(|at| {
        let before = at == 0 || !is_word(input[at - 1]);
        let end = at + word.len();
        let after = end == input.len() || !is_word(input[end]);
        before && after
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_like_stoi() {
        for (text, n) in [
            (&b"42"[..], 42),
            (b"  -7x", -7),
            (b"+3", 3),
            (b"abc", 0),
            (b"", 0),
            (b"99999999999", 0),
            (b"2147483647", 2_147_483_647),
        ] {
            assert_eq!(stoi(text), n, "{}", String::from_utf8_lossy(text));
        }
    }

    #[test]
    fn pcre_spellings_are_rewritten_and_bytes_match_as_bytes() {
        assert_eq!(rewrite_pcre(r"[\x{0}-\x{1f}\x{7f}]"), r"[\x00-\x1F\x7F]");
        assert_eq!(rewrite_pcre(r"^a$|[$]\$"), r"^a\n?\z|[$]\$");
        assert!(compile_regex(r"who$").unwrap().is_match(b"time who\n"));
        assert!(!compile_regex(r"who$").unwrap().is_match(b"who\nx"));
        assert!(compile_regex(r"(?m)^b$").unwrap().is_match(b"a\nb\nc"));
        let re = compile_regex(r"(?i)[\x{80}-\x{ff}]|sel.ct").unwrap();
        assert!(re.is_match(b"\xe9"));
        assert!(re.is_match(b"SEL\xffCT"));
        assert!(!re.is_match(b"plain"));
        assert!(compile_regex(r"a(?=b)").is_err());
    }

    #[test]
    fn validators() {
        let allowed = byte_ranges("9,10,13,32-126").unwrap();
        assert!(allowed[32] && allowed[126] && !allowed[127] && !allowed[0]);
        assert!(byte_ranges("5-1").is_err());
        assert!(invalid_url_encoding(b"a%2"));
        assert!(invalid_url_encoding(b"%zz"));
        assert!(!invalid_url_encoding(b"a%20b"));
        assert!(invalid_utf8(b"\xc0\xaf"));
        assert!(!invalid_utf8("é".as_bytes()));
        assert!(contains_word(b"a select b", b"select"));
        assert!(!contains_word(b"selected", b"select"));
    }
}
