//! Helpers shared by the fuzz targets: turning fuzz input into requests,
//! and small reference models the targets compare the gateway against.

use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};
use portcullis_policy::normalize::{Case, fold};
use portcullis_policy::route::{HostPattern, PathPattern, RouteEntry, RouteTable};

/// Whether a configuration text could name a device or pseudo file (reading
/// `/dev/zero` as a certificate would hang the fuzzer, not find a bug), or
/// spell a path with escapes.
#[must_use]
pub fn touches_special_files(source: &str) -> bool {
    ["/dev", "/proc", "/sys", "/usr", "/run", "/var", "\\u", "\\U"].iter().any(|s| source.contains(s))
}

/// A route of the fixed table, by name.
pub type Route = &'static str;

/// A route table like a typical configuration's, folded for
/// case-insensitive matching when `fold` is set.
#[must_use]
pub fn route_table(fold: bool) -> RouteTable<Route> {
    let patterns = [
        "/",
        "/admin",
        "/admin/**",
        "/admin/users/{id}",
        "/api/**",
        "/api/v1/orders/{id}",
        "/api/*/health",
        "/public/**",
        "/Static/**",
        "/caf%C3%A9",
        "/a;b",
        "/a%2Fb",
        "/a%252e",
        "/api/users:batch",
        "/files/a+b(1)",
        "/**",
    ];
    let entries = patterns
        .iter()
        .filter_map(|p| {
            let path = PathPattern::parse(p).ok()?;
            Some(RouteEntry { host: None, path: if fold { path.folded() } else { path }, methods: None, value: *p })
        })
        .collect();
    RouteTable::new(entries)
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex(b: u8) -> Option<u8> {
    char::from(b).to_digit(16).and_then(|d| u8::try_from(d).ok())
}

/// Percent-decodes `text` once (malformed escapes stay as they are).
#[must_use]
pub fn percent_decode(text: &str) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let (Some(hi), Some(lo)) =
                (bytes.get(i + 1).copied().and_then(hex), bytes.get(i + 2).copied().and_then(hex))
        {
            out.push(hi << 4 | lo);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    out
}

/// The path as an upstream that decodes each segment once before routing
/// sees it (Go's `net/http`, Spring, ASP.NET Core, Rails), written back
/// canonically: characters allowed raw in a segment (unreserved,
/// sub-delimiters, `:` and `@`) raw, everything else as upper-case escapes;
/// lower-cased when matching is case-insensitive. Escaped delimiters that
/// backends disagree on (`%2F`, `%5C`, `%3B`, `%25`) stay escaped: the
/// gateway refuses or keeps them by policy, not by this model.
#[must_use]
pub fn upstream_view(path: &str, case: Case) -> String {
    let mut out = String::with_capacity(path.len());
    for (i, segment) in path.split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        let bytes = segment.as_bytes();
        let mut j = 0;
        while j < bytes.len() {
            let (mut b, escaped) = match (bytes[j], bytes.get(j + 1..j + 3)) {
                (b'%', Some(h)) if h.iter().all(u8::is_ascii_hexdigit) => {
                    j += 3;
                    (hex(h[0]).unwrap_or(0) << 4 | hex(h[1]).unwrap_or(0), true)
                }
                (b, _) => {
                    j += 1;
                    (b, false)
                }
            };
            if case == Case::Insensitive {
                b = b.to_ascii_lowercase();
            }
            let raw = is_unreserved(b) || b"!$&'()*+,=:@".contains(&b) || (b == b';' && !escaped);
            if raw {
                out.push(char::from(b));
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
        }
    }
    if case == Case::Insensitive { fold(&out) } else { out }
}

/// A request read from fuzz input in a small text format, one item per line:
///
/// ```text
/// POST /path?query HTTP/1.1
/// Name: value
/// Name: value
///
/// body
/// ```
///
/// Lines end with `\n`; header lines without `:` and values that are not
/// valid header values are skipped, so most inputs give a request.
#[derive(Debug)]
pub struct Request<'a> {
    /// The method (GET when the first line has none that parses).
    pub method: Method,
    /// The request target (`/` when it does not parse).
    pub uri: Uri,
    /// The target as written.
    pub target: &'a [u8],
    /// The version token as written.
    pub version: &'a [u8],
    /// The headers, in order.
    pub headers: HeaderMap,
    /// Everything after the first empty line.
    pub body: &'a [u8],
}

impl<'a> Request<'a> {
    /// Reads `data` (see the type's docs).
    #[must_use]
    pub fn parse(data: &'a [u8]) -> Self {
        let (head, body) = match find(data, b"\n\n") {
            Some(at) => (&data[..at], &data[at + 2..]),
            None => (data, &data[data.len()..]),
        };
        let mut lines = head.split(|b| *b == b'\n');
        let first = lines.next().unwrap_or_default();
        let mut words = first.split(|b| *b == b' ');
        let method = words.next().and_then(|m| Method::from_bytes(m).ok()).unwrap_or(Method::GET);
        let target = words.next().unwrap_or(b"/");
        let version = words.next().unwrap_or(b"HTTP/1.1");
        let uri = Uri::try_from(target).unwrap_or_else(|_| Uri::from_static("/"));
        Self { method, uri, target, version, headers: headers(lines), body }
    }
}

/// Headers from `Name: value` lines (bad lines skipped).
pub fn headers<'a>(lines: impl Iterator<Item = &'a [u8]>) -> HeaderMap {
    let mut map = HeaderMap::new();
    for line in lines {
        let Some(colon) = line.iter().position(|b| *b == b':') else { continue };
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        let value = value.strip_prefix(b" ").unwrap_or(value);
        if let (Ok(name), Ok(value)) = (HeaderName::from_bytes(name), HeaderValue::from_bytes(value)) {
            map.append(name, value);
        }
    }
    map
}

/// The position of `needle` in `haystack`.
#[must_use]
pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// A host pattern for tests of host routing.
#[must_use]
pub fn host(pattern: &str) -> Option<HostPattern> {
    HostPattern::parse(pattern).ok()
}
