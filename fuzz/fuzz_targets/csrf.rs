//! CSRF origin and token checks (`portcullis_policy::csrf`).
//!
//! Input: `METHOD SCHEME HOST` on the first line (`-` for no host), then
//! `Name: value` header lines. Trusted origin: `https://trusted.example`.
//! The session id is `s1` when a `X-Fuzz-Session: 1` header is present.
//!
//! Properties:
//! - an unsafe request passes the origin check only when a browser could
//!   have sent it from this site: `Sec-Fetch-Site` is `same-origin` or
//!   `none`, or the origin it names (`Origin`, else the `Referer` where
//!   allowed) is the trusted one or the request's own, compared by an
//!   independent parse of scheme, host and port; and never with two
//!   `Origin` or `Sec-Fetch-Site` fields or `Origin: null`;
//! - `normalize_origin` is idempotent;
//! - a token passes only when the header repeats one of the token cookies
//!   and was issued for the request's session; a freshly issued token
//!   verifies for its session and no other.

#![no_main]

use http::{HeaderMap, Method, Uri};
use libfuzzer_sys::fuzz_target;
use portcullis_policy::csrf::{
    CsrfKey, CsrfPolicy, CsrfRequest, DEFAULT_HEADER, MissingOrigin, Mode, SEC_FETCH_SITE, cookie_values,
    normalize_origin,
};
use portcullis_policy::principal::Methods;

const TRUSTED: &str = "https://trusted.example";

/// `(scheme, host, port)` of an origin, parsed independently of the gateway.
fn origin_parts(text: &str) -> Option<(String, String, u16)> {
    let uri: Uri = text.parse().ok()?;
    let scheme = uri.scheme_str()?.to_ascii_lowercase();
    let default = match scheme.as_str() {
        "http" => 80,
        "https" => 443,
        _ => return None,
    };
    let authority = uri.authority()?;
    if authority.as_str().contains('@') || !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return None;
    }
    Some((scheme, authority.host().to_ascii_lowercase(), authority.port_u16().unwrap_or(default)))
}

/// The request's own origin, from its scheme and `Host`.
fn own_parts(scheme: &str, host: &str) -> Option<(String, String, u16)> {
    origin_parts(&format!("{scheme}://{host}"))
}

fn one<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    let mut all = headers.get_all(name).iter();
    let first = all.next()?;
    if all.next().is_some() {
        return None;
    }
    first.to_str().ok().map(str::trim)
}

fuzz_target!(|data: &[u8]| {
    let mut lines = data.split(|b| *b == b'\n');
    let first = lines.next().and_then(|l| std::str::from_utf8(l).ok()).unwrap_or_default();
    let mut words = first.split(' ');
    let method = words.next().and_then(|m| Method::from_bytes(m.as_bytes()).ok()).unwrap_or(Method::POST);
    let scheme = if words.next() == Some("https") { "https" } else { "http" };
    let host = words.next().filter(|h| *h != "-");
    let headers = portcullis_fuzz::headers(lines);
    let session = headers.contains_key("x-fuzz-session").then_some("s1");

    let key = CsrfKey::new(&[7; 32]).unwrap();
    let mut policy = CsrfPolicy {
        mode: Mode::OriginToken,
        trusted_origins: vec![TRUSTED.to_owned()],
        allow_same_site: false,
        missing_origin: MissingOrigin::Refuse,
        cookie: None,
        header: http::HeaderName::from_static(DEFAULT_HEADER),
        exempt: Methods::NONE,
        key,
    };
    let req = CsrfRequest { method: &method, headers: &headers, scheme, host, session };

    for origin in headers.get_all("origin").iter().chain(headers.get_all("referer")) {
        if let Ok(text) = origin.to_str()
            && let Some(normal) = normalize_origin(text)
        {
            assert_eq!(normalize_origin(&normal).as_deref(), Some(normal.as_str()), "{text:?}");
        }
    }

    for missing in [MissingOrigin::Refuse, MissingOrigin::Referer] {
        policy.missing_origin = missing;
        if policy.check_origin(&req).is_err() {
            continue;
        }
        let site = one(&headers, SEC_FETCH_SITE.as_str());
        assert!(headers.get_all(SEC_FETCH_SITE.as_str()).iter().count() <= 1);
        assert!(headers.get_all("origin").iter().count() <= 1);
        if matches!(site, Some("same-origin" | "none")) {
            continue;
        }
        let origin = one(&headers, "origin");
        assert_ne!(origin, Some("null"));
        let claimed = match origin {
            Some(o) => o,
            None => {
                assert_eq!(missing, MissingOrigin::Referer, "passed without Origin or Sec-Fetch-Site");
                assert!(site.is_none());
                one(&headers, "referer").unwrap_or_else(|| panic!("passed without any origin: {headers:?}"))
            }
        };
        let claimed_parts = if origin.is_some() {
            origin_parts(claimed)
        } else {
            let uri: Uri = claimed.parse().unwrap();
            origin_parts(&format!("{}://{}", uri.scheme_str().unwrap(), uri.authority().unwrap()))
        };
        let claimed_parts = claimed_parts.unwrap_or_else(|| panic!("passed with unusable origin {claimed:?}"));
        let trusted = origin_parts(TRUSTED);
        let own = host.and_then(|h| own_parts(scheme, h));
        let cross_site_ok = site.is_some() && Some(&claimed_parts) == trusted.as_ref();
        let same_ok =
            site.is_none() && (Some(&claimed_parts) == own.as_ref() || Some(&claimed_parts) == trusted.as_ref());
        assert!(
            cross_site_ok || same_ok,
            "{method} {scheme}://{host:?} passed with {claimed:?} ({claimed_parts:?}), Sec-Fetch-Site {site:?}"
        );
    }

    if policy.check_token(&req).is_ok() {
        let header = one(&headers, DEFAULT_HEADER).unwrap();
        assert!(cookie_values(&headers, policy.cookie_name(scheme)).any(|c| c == header));
        assert!(policy.key.verifies(header, session));
        assert!(!policy.key.verifies(header, Some("another session")));
    }
    let binding = host;
    let token = policy.key.issue(binding).unwrap();
    assert!(policy.key.verifies(&token, binding));
    let other =
        binding.map_or_else(|| Some(String::new()), |b| if b.is_empty() { None } else { Some(format!("{b}x")) });
    assert!(!policy.key.verifies(&token, other.as_deref()));
});
