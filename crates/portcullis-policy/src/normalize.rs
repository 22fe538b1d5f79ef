//! Path normalization: one spelling per path, so no rule can be walked
//! around by writing a path differently, and the upstream receives exactly
//! the path the rules were checked against.
//!
//! Decision rules, in order (RFC 3986 §6.2.2 plus what backends disagree on):
//! 1. Percent-encoding must be well formed (`%` + two hex digits) or the
//!    request is refused (`path.encoding`).
//! 2. Escapes of unreserved characters (`A–Z a–z 0–9 - . _ ~`) are decoded
//!    (`/%61dmin` → `/admin`, `/%2e%2e/` → `/../`), and so are escapes of
//!    the characters a segment may hold raw that no common server treats as
//!    a delimiter inside one (`! $ & ' ( ) * + , = : @`): a server that
//!    decodes before routing (Go, Spring, ASP.NET Core, Rails) reads
//!    `/users%3Abatch` as `/users:batch`, so both must match the same
//!    route. Every other escape is kept (`%2F`, `%3B`, `%3F`, `%25`, spaces,
//!    non-ASCII), with upper-case hex. Decoding happens once.
//! 3. An escaped `%` followed by two hex digits once decoded (`%252e`,
//!    `%25%32%65`) is refused (`path.double_encoding`): the gateway reads
//!    `%2e` literally, but a backend or framework that decodes twice reads
//!    `.`, so `/public/%252e%252e/admin` would reach `/admin`. `%25` before
//!    anything else (`/100%25`) is fine. Configurable to keep.
//! 4. Escaped or raw control characters (NUL, `%00`–`%1F`, `%7F`) are
//!    refused (`path.control`); so is a path whose escapes decode to invalid
//!    UTF-8, overlong forms included (`%C0%AE`) (`path.unicode`).
//! 5. An encoded slash `%2F` (or encoded backslash `%5C`) is refused
//!    (`path.encoded_slash`) or kept opaque, as configured: backends differ on
//!    whether it separates segments. `%5C` is kept when raw backslashes are
//!    (rule 6 forwards them as `%5C`, so both spellings are one path).
//! 6. A raw backslash is refused (`path.backslash`) or kept as `%5C`: some
//!    servers treat it as `/`.
//! 7. `;` parameters are stripped from each segment (`/admin;x=1` →
//!    `/admin`), refused (`path.semicolon`), or kept, as configured.
//! 8. Empty segments collapse (`//admin` → `/admin`), `.` segments go, `..`
//!    removes the previous segment and never climbs above the root.
//! 9. A segment that is not `.` or `..` but is made only of dots, spaces
//!    and dot look-alikes is refused (`path.dot_segment`): Windows (IIS)
//!    trims trailing dots and spaces from names, so `..%20` and `...` are
//!    `..` there; NFKC and "best fit" mappings turn `%EF%BC%8E` (full-width
//!    full stop) and `%E2%80%A5` (two-dot leader) into dots. With `;`
//!    parameters kept, a segment whose part before `;` is a dot segment
//!    (`..;x`) is refused too: Tomcat strips the parameter and walks up.
//! 10. A trailing slash is kept or stripped, as configured.
//!
//! Case is not changed here; [`PathPolicy::match_key`] gives the
//! case-folded form routes are matched against when the upstream matches
//! case-insensitively (Express and NestJS do by default).

use std::borrow::Cow;

use crate::deny::Reason;

/// What to do with `%2F` and `%5C`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncodedSlash {
    /// Refuse the request.
    Reject,
    /// Keep it as an opaque escape inside its segment.
    Keep,
}

/// What to do with an escaped `%` followed by two hex digits (`%252e`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncodedPercent {
    /// Refuse the request.
    Reject,
    /// Keep it: only for backends known to decode exactly once.
    Keep,
}

/// What to do with a raw `\`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backslash {
    /// Refuse the request.
    Reject,
    /// Keep it, escaped as `%5C`, inside its segment.
    Escape,
}

/// What to do with `;` parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Semicolon {
    /// Remove `;…` from each segment.
    Strip,
    /// Refuse the request.
    Reject,
    /// Keep them as part of the segment.
    Keep,
}

/// What to do with a trailing slash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrailingSlash {
    /// `/admin/` becomes `/admin` (Express's default, non-strict routing).
    Strip,
    /// `/admin/` stays distinct from `/admin`.
    Keep,
}

/// How routes compare paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Case {
    /// `/Admin` and `/admin` are different paths.
    Sensitive,
    /// They are the same path (Express, NestJS by default).
    Insensitive,
}

/// The normalization settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathPolicy {
    /// `%2F`, `%5C`.
    pub encoded_slash: EncodedSlash,
    /// `%25` followed by two hex digits.
    pub encoded_percent: EncodedPercent,
    /// Raw `\`.
    pub backslash: Backslash,
    /// `;` parameters.
    pub semicolon: Semicolon,
    /// Trailing `/`.
    pub trailing_slash: TrailingSlash,
    /// Route matching.
    pub case: Case,
}

impl Default for PathPolicy {
    /// Refuse what backends disagree on, match like Express.
    fn default() -> Self {
        Self {
            encoded_slash: EncodedSlash::Reject,
            encoded_percent: EncodedPercent::Reject,
            backslash: Backslash::Reject,
            semicolon: Semicolon::Strip,
            trailing_slash: TrailingSlash::Strip,
            case: Case::Insensitive,
        }
    }
}

/// Why a path was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// `%` not followed by two hex digits.
    #[error("malformed percent-encoding")]
    Encoding,
    /// NUL or another control character.
    #[error("control character in the path")]
    Control,
    /// Escapes that decode to invalid UTF-8.
    #[error("escapes decode to invalid UTF-8")]
    Utf8,
    /// `%2F` or `%5C` while refused.
    #[error("encoded slash or backslash")]
    EncodedSlash,
    /// A raw `\` while refused.
    #[error("backslash in the path")]
    Backslash,
    /// A `;` while refused.
    #[error("semicolon in the path")]
    Semicolon,
    /// `%25` followed by two hex digits while refused.
    #[error("double percent-encoding")]
    DoubleEncoding,
    /// A segment backends may read as `.` or `..`.
    #[error("segment that backends may read as a dot segment")]
    DotSegment,
    /// Not an origin-form path.
    #[error("path does not start with /")]
    NotAbsolute,
}

impl PathError {
    /// The reason code.
    #[must_use]
    pub const fn reason(self) -> Reason {
        match self {
            Self::Encoding | Self::NotAbsolute => Reason::PathEncoding,
            Self::Control => Reason::PathControl,
            Self::Utf8 => Reason::PathUnicode,
            Self::EncodedSlash => Reason::PathEncodedSlash,
            Self::Backslash => Reason::PathBackslash,
            Self::Semicolon => Reason::PathSemicolon,
            Self::DoubleEncoding => Reason::PathDoubleEncoding,
            Self::DotSegment => Reason::PathDotSegment,
        }
    }
}

const fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Sub-delimiters, `:` and `@` but `;` (Tomcat's parameters): allowed raw in
/// a segment and read the same escaped or not by every common server.
const fn is_plain_sub_delim(b: u8) -> bool {
    matches!(b, b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b'=' | b':' | b'@')
}

const fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

fn push_escape(out: &mut String, b: u8) {
    out.push('%');
    out.push(char::from(HEX_UPPER[usize::from(b >> 4)]));
    out.push(char::from(HEX_UPPER[usize::from(b & 15)]));
}

/// Whether `path` is already in normal form under `policy` (the common
/// case, answered without allocating).
fn is_normal(path: &str, policy: &PathPolicy) -> bool {
    let bytes = path.as_bytes();
    if bytes.first() != Some(&b'/') {
        return false;
    }
    if policy.trailing_slash == TrailingSlash::Strip && bytes.len() > 1 && bytes.ends_with(b"/") {
        return false;
    }
    let mut previous = b'/';
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'%' | b'\\' | b';' => return false,
            b'/' if previous == b'/' && i > 0 => return false,
            b'.' | b' ' if previous == b'/' => {
                // A segment of ".", "..", or dots and spaces (rule 9).
                let rest = &bytes[i..];
                let segment = rest.split(|c| *c == b'/').next().unwrap_or_default();
                if segment.iter().all(|c| matches!(c, b'.' | b' ')) {
                    return false;
                }
            }
            _ if b.is_ascii_control() || !b.is_ascii() => return false,
            _ => {}
        }
        previous = b;
    }
    true
}

/// Normalizes an origin-form path (no query) under `policy`.
///
/// # Errors
/// [`PathError`] when the path is refused; see the module docs.
pub fn normalize<'a>(path: &'a str, policy: &PathPolicy) -> Result<Cow<'a, str>, PathError> {
    if is_normal(path, policy) {
        return Ok(Cow::Borrowed(path));
    }
    if !path.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    // Pass 1: escapes. `decoded` holds every byte as the upstream would
    // decode it, to check UTF-8; `out` the path with only unreserved
    // characters decoded.
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut decoded: Vec<u8> = Vec::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let (Some(hi), Some(lo)) =
                (bytes.get(i + 1).copied().and_then(hex), bytes.get(i + 2).copied().and_then(hex))
            else {
                return Err(PathError::Encoding);
            };
            let value = hi << 4 | lo;
            decoded.push(value);
            if value < 0x20 || value == 0x7f {
                return Err(PathError::Control);
            }
            if is_unreserved(value) || is_plain_sub_delim(value) {
                out.push(char::from(value));
            } else if policy.encoded_slash == EncodedSlash::Reject
                && (value == b'/' || (value == b'\\' && policy.backslash == Backslash::Reject))
            {
                return Err(PathError::EncodedSlash);
            } else {
                push_escape(&mut out, value);
            }
            i += 3;
            continue;
        }
        if b.is_ascii_control() {
            return Err(PathError::Control);
        }
        if b == b'\\' {
            match policy.backslash {
                Backslash::Reject => return Err(PathError::Backslash),
                Backslash::Escape => push_escape(&mut out, b),
            }
            decoded.push(b);
            i += 1;
            continue;
        }
        if !b.is_ascii() {
            // Raw non-ASCII bytes never come from a valid request target;
            // escape them so they are checked like escaped ones.
            push_escape(&mut out, b);
        } else {
            out.push(char::from(b));
        }
        decoded.push(b);
        i += 1;
    }
    if std::str::from_utf8(&decoded).is_err() {
        return Err(PathError::Utf8);
    }
    // A raw `%` never survives pass 1, so every `%` in `decoded` was `%25`.
    if policy.encoded_percent == EncodedPercent::Reject
        && decoded.windows(3).any(|w| w[0] == b'%' && hex(w[1]).is_some() && hex(w[2]).is_some())
    {
        return Err(PathError::DoubleEncoding);
    }

    // Pass 2: segments.
    let trailing = out.len() > 1 && out.ends_with('/');
    let mut segments: Vec<&str> = Vec::new();
    for raw in out.split('/') {
        let segment = match (raw.find(';'), policy.semicolon) {
            (None, _) => raw,
            (Some(at), Semicolon::Keep) => {
                if matches!(&raw[..at], "." | "..") || is_dot_like(&raw[..at]) {
                    return Err(PathError::DotSegment);
                }
                raw
            }
            (Some(at), Semicolon::Strip) => &raw[..at],
            (Some(_), Semicolon::Reject) => return Err(PathError::Semicolon),
        };
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            other if is_dot_like(other) => return Err(PathError::DotSegment),
            other => segments.push(other),
        }
    }
    let mut normal = String::with_capacity(out.len());
    for segment in &segments {
        normal.push('/');
        normal.push_str(segment);
    }
    if normal.is_empty() || (trailing && policy.trailing_slash == TrailingSlash::Keep) {
        normal.push('/');
    }
    Ok(Cow::Owned(normal))
}

/// Whether a segment (unreserved characters decoded, others escaped) is made
/// only of dots, whitespace and characters that fold to dots, with at least
/// one dot: rule 9. `.` and `..` themselves are resolved before this.
fn is_dot_like(segment: &str) -> bool {
    // Only a dot, an escape or a space can start such a segment.
    if !matches!(segment.as_bytes().first(), Some(b'.' | b'%' | b' ')) {
        return false;
    }
    let mut bytes = Vec::with_capacity(segment.len());
    let raw = segment.as_bytes();
    let mut i = 0;
    while i < raw.len() {
        match (raw[i], raw.get(i + 1).copied().and_then(hex), raw.get(i + 2).copied().and_then(hex)) {
            (b'%', Some(hi), Some(lo)) => {
                bytes.push(hi << 4 | lo);
                i += 3;
            }
            (b, _, _) => {
                bytes.push(b);
                i += 1;
            }
        }
    }
    let Ok(text) = std::str::from_utf8(&bytes) else { return false };
    let mut dots = 0;
    for c in text.chars() {
        match c {
            // Full stop and the characters NFKC or Windows "best fit" map to it.
            '.' | '\u{2024}' | '\u{FE52}' | '\u{FF0E}' => dots += 1,
            // Two-dot leader and ellipsis fold to ".." and "...".
            '\u{2025}' | '\u{2026}' => dots += 2,
            // Zero-width characters vanish under many normalizations.
            '\u{200B}' | '\u{200C}' | '\u{200D}' | '\u{2060}' | '\u{FEFF}' => {}
            c if c.is_whitespace() => {}
            _ => return false,
        }
    }
    dots > 0
}

impl PathPolicy {
    /// The form of a normalized path that routes are matched against:
    /// lower-cased when matching is case-insensitive.
    #[must_use]
    pub fn match_key<'a>(&self, normalized: &'a str) -> Cow<'a, str> {
        match self.case {
            Case::Insensitive if normalized.bytes().any(|b| b.is_ascii_uppercase() || b == b'%') => {
                // Escapes keep their upper-case hex (`%2F`); only the rest folds.
                Cow::Owned(fold(normalized))
            }
            _ => Cow::Borrowed(normalized),
        }
    }
}

/// Lower-cases ASCII letters outside `%XX` escapes; everything else,
/// non-ASCII characters included, is kept.
#[must_use]
pub fn fold(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut escape = 0;
    for (i, c) in path.char_indices() {
        if escape > 0 {
            escape -= 1;
            out.push(c);
            continue;
        }
        if c == '%' && bytes.get(i + 1..i + 3).is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) {
            escape = 2;
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(path: &str) -> Result<String, PathError> {
        normalize(path, &PathPolicy::default()).map(Cow::into_owned)
    }

    #[test]
    fn normal_paths_are_borrowed_unchanged() {
        for path in ["/", "/admin", "/api/v1/orders/42", "/a.b/c-d_e~f", "/.well-known/x", "/a/..b/c."] {
            assert!(matches!(normalize(path, &PathPolicy::default()), Ok(Cow::Borrowed(p)) if p == path), "{path}");
        }
    }

    #[test]
    fn the_bypass_corpus_normalizes_to_one_spelling_or_is_refused() {
        let cases: &[(&str, Result<&str, PathError>)] = &[
            ("/admin/../admin", Ok("/admin")),
            ("/%61dmin", Ok("/admin")),
            ("//admin", Ok("/admin")),
            ("/admin/", Ok("/admin")),
            ("/admin;x=1", Ok("/admin")),
            ("/admin;x=1/users;jsessionid=2", Ok("/admin/users")),
            ("/./admin", Ok("/admin")),
            ("/%2e%2e/admin", Ok("/admin")),
            ("/%2E./admin", Ok("/admin")),
            ("/x/%2e%2e/%2e/admin", Ok("/admin")),
            ("/../../../admin", Ok("/admin")),
            ("/admin%2f", Err(PathError::EncodedSlash)),
            ("/admin%2Fusers", Err(PathError::EncodedSlash)),
            ("/admin%5c", Err(PathError::EncodedSlash)),
            ("/admin%00", Err(PathError::Control)),
            ("/admin%0a", Err(PathError::Control)),
            ("/admin%7F", Err(PathError::Control)),
            ("/admin%252f", Err(PathError::DoubleEncoding)),
            ("/admin%252F", Err(PathError::DoubleEncoding)),
            ("/public/%252e%252e/admin/users", Err(PathError::DoubleEncoding)),
            ("/public/%25%32%65%25%32%65/admin", Err(PathError::DoubleEncoding)),
            ("/%2525", Err(PathError::DoubleEncoding)),
            ("/discount/100%25", Ok("/discount/100%25")),
            ("/100%25off", Ok("/100%25off")),
            ("/a%25zz", Ok("/a%25zz")),
            ("/a%25/2e", Ok("/a%25/2e")),
            ("/x/..%20/admin", Err(PathError::DotSegment)),
            ("/x/.. /admin", Err(PathError::DotSegment)),
            ("/x/%20../admin", Err(PathError::DotSegment)),
            ("/x/.../admin", Err(PathError::DotSegment)),
            ("/x/....", Err(PathError::DotSegment)),
            ("/x/.%20", Err(PathError::DotSegment)),
            ("/x/%2e%2e%2e/admin", Err(PathError::DotSegment)),
            ("/x/..%C2%A0/admin", Err(PathError::DotSegment)),
            ("/x/..%E3%80%80/admin", Err(PathError::DotSegment)),
            ("/x/..%E2%80%8B/admin", Err(PathError::DotSegment)),
            ("/x/%EF%BC%8E%EF%BC%8E/admin", Err(PathError::DotSegment)),
            ("/x/%E2%80%A5/admin", Err(PathError::DotSegment)),
            ("/x/%E2%80%A6", Err(PathError::DotSegment)),
            ("/x/..;x=1/admin", Ok("/admin")),
            ("/x/..%09/admin", Err(PathError::Control)),
            ("/x/..a/b", Ok("/x/..a/b")),
            ("/x/a../b", Ok("/x/a../b")),
            ("/x/.well-known", Ok("/x/.well-known")),
            ("/x/%20", Ok("/x/%20")),
            ("/x/%E2%80%A5a", Ok("/x/%E2%80%A5a")),
            ("/admin\\", Err(PathError::Backslash)),
            ("/%c0%ae%c0%ae/admin", Err(PathError::Utf8)),
            ("/%c0%afadmin", Err(PathError::Utf8)),
            ("/%e2%80", Err(PathError::Utf8)),
            ("/%zz", Err(PathError::Encoding)),
            ("/admin%2", Err(PathError::Encoding)),
            ("/caf%C3%A9", Ok("/caf%C3%A9")),
            ("/caf%c3%a9", Ok("/caf%C3%A9")),
            ("/%EF%BD%81dmin", Ok("/%EF%BD%81dmin")),
            ("/a/b/../../..", Ok("/")),
            ("/a//b///c/", Ok("/a/b/c")),
            ("/a/./b/.", Ok("/a/b")),
            ("admin", Err(PathError::NotAbsolute)),
        ];
        for (input, expected) in cases {
            assert_eq!(n(input).as_deref().map_err(|e| *e), expected.map(|s| s), "{input}");
        }
    }

    #[test]
    fn configured_alternatives() {
        let keep = PathPolicy {
            encoded_slash: EncodedSlash::Keep,
            encoded_percent: EncodedPercent::Keep,
            backslash: Backslash::Escape,
            semicolon: Semicolon::Keep,
            trailing_slash: TrailingSlash::Keep,
            case: Case::Sensitive,
        };
        let k = |p: &str| normalize(p, &keep).map(Cow::into_owned);
        assert_eq!(k("/admin%2fusers").unwrap(), "/admin%2Fusers", "one opaque segment");
        assert_eq!(k("/a\\b").unwrap(), "/a%5Cb");
        assert_eq!(k("/admin;x=1").unwrap(), "/admin;x=1");
        assert_eq!(k("/admin%252f").unwrap(), "/admin%252f");
        assert_eq!(k("/x/..;x/admin"), Err(PathError::DotSegment), "Tomcat reads ..;x as ..");
        assert_eq!(k("/x/.;x/admin"), Err(PathError::DotSegment));
        assert_eq!(k("/x/..%20;x/admin"), Err(PathError::DotSegment));
        assert_eq!(k("/x/a;..").unwrap(), "/x/a;..");
        assert_eq!(k("/admin/").unwrap(), "/admin/");
        assert_eq!(k("//").unwrap(), "/");
        assert_eq!(k("/admin%00"), Err(PathError::Control), "never configurable");
        let reject = PathPolicy { semicolon: Semicolon::Reject, ..PathPolicy::default() };
        assert_eq!(normalize("/a;b", &reject), Err(PathError::Semicolon));
    }

    /// Found by the `normalize` fuzz target: `/api/users%3Abatch` matched
    /// `/api/**` while a server that decodes before routing ran the
    /// `/api/users:batch` route, whose rules the gateway never applied.
    #[test]
    fn escaped_sub_delimiters_are_decoded() {
        let cases: &[(&str, &str)] = &[
            ("/api/users%3Abatch", "/api/users:batch"),
            ("/a%40b%21%24%26%27%28%29%2A%2B%2C%3D", "/a@b!$&'()*+,="),
            ("/a%3Bb", "/a%3Bb"),
            ("/a%3Fb%23c%20d%22", "/a%3Fb%23c%20d%22"),
        ];
        for (input, expected) in cases {
            assert_eq!(n(input).as_deref(), Ok(*expected), "{input}");
            assert_eq!(n(expected).as_deref(), Ok(*expected), "{input}: not idempotent");
        }
    }

    /// Found by the `normalize` fuzz target: with `backslash = "escape"`
    /// and `encoded_slash = "reject"`, `/a\b` was forwarded as `/a%5Cb`, a
    /// spelling the same policy refuses (not idempotent: the same path
    /// accepted in one spelling and refused in the other).
    #[test]
    fn escaped_backslashes_are_accepted_where_raw_ones_are() {
        let escape = PathPolicy { backslash: Backslash::Escape, ..PathPolicy::default() };
        for input in ["/public/x\\y/admin", "/a\\b", "/a%5cb", "/a%5Cb"] {
            let once = normalize(input, &escape).map(Cow::into_owned);
            assert!(once.is_ok(), "{input}: {once:?}");
            let once = once.unwrap();
            assert_eq!(normalize(&once, &escape).as_deref(), Ok(once.as_str()), "{input}");
        }
        assert_eq!(normalize("/a%5Cb", &PathPolicy::default()), Err(PathError::EncodedSlash), "refused by default");
        assert_eq!(normalize("/a%2Fb", &escape), Err(PathError::EncodedSlash), "%2F is still refused");
    }

    #[test]
    fn match_keys_fold_case_but_not_escapes() {
        let p = PathPolicy::default();
        assert_eq!(p.match_key("/ADMIN/Users"), "/admin/users");
        assert_eq!(p.match_key("/a%2Fb"), "/a%2Fb");
        assert_eq!(p.match_key("/X%C3%A9Y"), "/x%C3%A9y");
        assert!(matches!(p.match_key("/admin"), Cow::Borrowed(_)));
        let sensitive = PathPolicy { case: Case::Sensitive, ..p };
        assert_eq!(sensitive.match_key("/ADMIN"), "/ADMIN");
    }

    /// Found writing the `route` fuzz target (it folds every pattern it
    /// parses): folding a route pattern such as
    /// `/%xé` (a `%` not starting an escape, then a non-ASCII character)
    /// sliced the text inside a character and panicked, so a configuration
    /// holding one crashed `portcullis check`, start-up and reload; and
    /// non-ASCII characters were folded byte by byte into other characters.
    #[test]
    fn folding_keeps_characters_and_never_splits_them() {
        assert_eq!(fold("/%xé"), "/%xé");
        assert_eq!(fold("/Café/%C3%A9X"), "/café/%C3%A9x");
        assert_eq!(fold("/A%2"), "/a%2");
        assert_eq!(fold("%4A%4a%zZ"), "%4A%4a%zz");
    }

    #[test]
    fn normalizing_twice_changes_nothing() {
        for input in ["/admin/../x", "/%61/b/", "/a;b/c", "/100%25", "/caf%c3%a9/./z"] {
            let once = n(input).unwrap();
            assert_eq!(n(&once).unwrap(), once, "{input}");
        }
    }
}
