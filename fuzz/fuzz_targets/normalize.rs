//! Path normalization (`portcullis_policy::normalize`) under every policy.
//!
//! Properties, for each of the 96 policies:
//! - normalizing is idempotent: `normalize(normalize(p)) == normalize(p)`;
//! - a normalized path is in normal form: absolute, ASCII, no control
//!   characters, no empty, `.` or `..` segments, escapes upper-case and only
//!   for characters that are neither unreserved nor plain sub-delimiters
//!   (`! $ & ' ( ) * + , = : @`), and none of what the policy
//!   refuses or strips (`%2F`, `%25XX`, `\`, `;`, a trailing slash, a
//!   segment of dots and spaces);
//! - it survives being put back into the request URI unchanged (the
//!   normalize layer forwards it that way);
//! - it is routed to the same route as the forwarded path is by an upstream
//!   that decodes each segment once and compares like the policy says, and
//!   as its own normalization is (a second gateway in front).

#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis_fuzz::{Route, route_table, upstream_view};
use portcullis_policy::normalize::{
    Backslash, Case, EncodedPercent, EncodedSlash, PathPolicy, Semicolon, TrailingSlash, normalize,
};
use portcullis_policy::route::Match;

fn policies() -> impl Iterator<Item = PathPolicy> {
    let mut all = Vec::new();
    for encoded_slash in [EncodedSlash::Reject, EncodedSlash::Keep] {
        for encoded_percent in [EncodedPercent::Reject, EncodedPercent::Keep] {
            for backslash in [Backslash::Reject, Backslash::Escape] {
                for semicolon in [Semicolon::Strip, Semicolon::Reject, Semicolon::Keep] {
                    for trailing_slash in [TrailingSlash::Strip, TrailingSlash::Keep] {
                        for case in [Case::Sensitive, Case::Insensitive] {
                            all.push(PathPolicy {
                                encoded_slash,
                                encoded_percent,
                                backslash,
                                semicolon,
                                trailing_slash,
                                case,
                            });
                        }
                    }
                }
            }
        }
    }
    all.into_iter()
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn check_normal_form(path: &str, normal: &str, policy: &PathPolicy) {
    let bytes = normal.as_bytes();
    assert!(normal.starts_with('/'), "{path:?} -> {normal:?}: not absolute");
    assert!(bytes.iter().all(|b| b.is_ascii() && !b.is_ascii_control()), "{path:?} -> {normal:?}: raw byte");
    assert!(!bytes.contains(&b'\\'), "{path:?} -> {normal:?}: raw backslash");
    let body = &normal[1..];
    if !body.is_empty() {
        let trailing = body.ends_with('/');
        assert!(
            !trailing || policy.trailing_slash == TrailingSlash::Keep,
            "{path:?} -> {normal:?}: trailing slash kept"
        );
        let segments: Vec<&str> = body.strip_suffix('/').unwrap_or(body).split('/').collect();
        for segment in segments {
            assert!(!matches!(segment, "" | "." | ".."), "{path:?} -> {normal:?}: segment {segment:?}");
            let trimmed = segment.split(';').next().unwrap_or_default().replace("%20", "");
            assert!(
                trimmed.is_empty() || !trimmed.bytes().all(|b| b == b'.'),
                "{path:?} -> {normal:?}: dot-like segment {segment:?}"
            );
            if policy.semicolon != Semicolon::Keep {
                assert!(!segment.contains(';'), "{path:?} -> {normal:?}: ';' left");
            }
        }
    }
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let (Some(hi), Some(lo)) =
                (bytes.get(i + 1).copied().and_then(hex), bytes.get(i + 2).copied().and_then(hex))
            else {
                panic!("{path:?} -> {normal:?}: escape at {i} is not upper-case hex");
            };
            let value = hi << 4 | lo;
            assert!(!is_unreserved(value), "{path:?} -> {normal:?}: escaped unreserved {value:#x}");
            assert!(!b"!$&'()*+,=:@".contains(&value), "{path:?} -> {normal:?}: escaped sub-delimiter {value:#x}");
            if value == b'%' && policy.encoded_percent == EncodedPercent::Reject {
                let next = bytes.get(i + 3..i + 5).unwrap_or_default();
                assert!(
                    !(next.len() == 2 && next.iter().all(u8::is_ascii_hexdigit)),
                    "{path:?} -> {normal:?}: double encoding kept"
                );
            }
            assert!(value >= 0x20 && value != 0x7f, "{path:?} -> {normal:?}: escaped control {value:#x}");
            if policy.encoded_slash == EncodedSlash::Reject {
                assert_ne!(value, b'/', "{path:?} -> {normal:?}: encoded slash kept");
                if policy.backslash == Backslash::Reject {
                    assert_ne!(value, b'\\', "{path:?} -> {normal:?}: encoded backslash kept");
                }
            }
            i += 3;
        } else {
            i += 1;
        }
    }
}

fn route_name(found: Match<'_, Route>) -> Option<Route> {
    match found {
        Match::Found(route) => Some(*route),
        Match::MethodNotAllowed(_) | Match::None => None,
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    // Any text may be normalized (`portcullis policy explain` takes paths
    // from the command line); the properties are for paths as requests
    // carry them.
    let _ = normalize(text, &PathPolicy::default());
    let Ok(target) = http::uri::PathAndQuery::try_from(data) else { return };
    let path = target.path();
    let sensitive = route_table(false);
    let insensitive = route_table(true);
    for policy in policies() {
        let Ok(normal) = normalize(path, &policy) else { continue };
        let normal = normal.into_owned();
        check_normal_form(path, &normal, &policy);
        let again = normalize(&normal, &policy);
        assert_eq!(again.as_deref(), Ok(normal.as_str()), "{path:?} under {policy:?}: not idempotent");

        let rebuilt = http::uri::PathAndQuery::try_from(normal.as_str())
            .unwrap_or_else(|e| panic!("{path:?} -> {normal:?}: not a valid URI path: {e}"));
        assert_eq!(rebuilt.path(), normal, "{path:?}: URI changed the normalized path");

        let table = if policy.case == Case::Insensitive { &insensitive } else { &sensitive };
        let method = http::Method::GET;
        let gateway = route_name(table.find(None, &policy.match_key(&normal), &method));
        let upstream = route_name(table.find(None, &upstream_view(&normal, policy.case), &method));
        assert_eq!(gateway, upstream, "{path:?} -> {normal:?} under {policy:?}: the upstream routes elsewhere");
    }
});
