use super::*;

const SECRET: &[u8] = b"a-csrf-secret-of-at-least-32-bytes!!";

fn policy(mode: Mode) -> CsrfPolicy {
    CsrfPolicy {
        mode,
        trusted_origins: vec!["https://admin.example.com".into(), "http://localhost:3000".into()],
        allow_same_site: false,
        missing_origin: MissingOrigin::Refuse,
        cookie: None,
        header: HeaderName::from_static(DEFAULT_HEADER),
        exempt: [AuthMethod::Jwt, AuthMethod::ApiKey].into_iter().collect(),
        key: CsrfKey::new(SECRET).unwrap(),
    }
}

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(HeaderName::from_bytes(name.as_bytes()).unwrap(), HeaderValue::from_str(value).unwrap());
    }
    map
}

/// Method, scheme, host, headers, expected reason code ("" passes).
type OriginCase<'a> = (&'a str, &'a str, Option<&'a str>, &'a [(&'a str, &'a str)], &'a str);
/// Cookie header, token header, session, expected reason code.
type TokenCase<'a> = (Option<String>, Option<&'a str>, Option<&'a str>, &'a str);

/// The reason code of a decision, "" when it passes.
fn outcome(result: Result<(), Denied>) -> &'static str {
    result.err().map_or("", |d| d.reason.code())
}

#[test]
fn origin_decisions() {
    let cases: &[OriginCase<'_>] = &[
        // Fetch metadata first.
        ("POST", "https", Some("app.example.com"), &[("sec-fetch-site", "same-origin")], ""),
        ("POST", "https", Some("app.example.com"), &[("sec-fetch-site", "none")], ""),
        ("POST", "https", Some("app.example.com"), &[("sec-fetch-site", "same-site")], "csrf.origin"),
        ("POST", "https", Some("app.example.com"), &[("sec-fetch-site", "cross-site")], "csrf.origin"),
        (
            "POST",
            "https",
            Some("app.example.com"),
            &[("sec-fetch-site", "cross-site"), ("origin", "https://evil.example")],
            "csrf.origin",
        ),
        // A trusted origin may be cross-site or same-site.
        (
            "POST",
            "https",
            Some("app.example.com"),
            &[("sec-fetch-site", "same-site"), ("origin", "https://admin.example.com")],
            "",
        ),
        (
            "DELETE",
            "https",
            Some("app.example.com"),
            &[("sec-fetch-site", "cross-site"), ("origin", "http://LOCALHOST:3000")],
            "",
        ),
        ("POST", "https", Some("app.example.com"), &[("sec-fetch-site", "Same-Origin")], "csrf.origin"),
        ("POST", "https", Some("app.example.com"), &[("sec-fetch-site", "bogus")], "csrf.origin"),
        (
            "POST",
            "https",
            Some("app.example.com"),
            &[("sec-fetch-site", "same-origin"), ("sec-fetch-site", "same-origin")],
            "csrf.origin",
        ),
        // Fetch metadata says same-origin but the origin is opaque.
        (
            "POST",
            "https",
            Some("app.example.com"),
            &[("sec-fetch-site", "same-origin"), ("origin", "null")],
            "csrf.origin",
        ),
        // Origin without fetch metadata: scheme, host and port must match.
        ("POST", "https", Some("app.example.com"), &[("origin", "https://app.example.com")], ""),
        ("POST", "https", Some("app.example.com:443"), &[("origin", "https://app.example.com")], ""),
        ("POST", "https", Some("App.Example.com"), &[("origin", "HTTPS://APP.EXAMPLE.COM:443")], ""),
        ("POST", "http", Some("127.0.0.1:8080"), &[("origin", "http://127.0.0.1:8080")], ""),
        ("POST", "http", Some("[::1]:8080"), &[("origin", "http://[::1]:8080")], ""),
        ("POST", "https", Some("app.example.com"), &[("origin", "http://app.example.com")], "csrf.origin"),
        ("POST", "http", Some("app.example.com"), &[("origin", "https://app.example.com")], "csrf.origin"),
        ("POST", "https", Some("app.example.com"), &[("origin", "https://app.example.com:8443")], "csrf.origin"),
        (
            "POST",
            "https",
            Some("app.example.com"),
            &[("origin", "https://app.example.com.evil.example")],
            "csrf.origin",
        ),
        ("POST", "https", Some("app.example.com"), &[("origin", "https://evil.example")], "csrf.origin"),
        ("POST", "https", Some("app.example.com"), &[("origin", "https://admin.example.com")], ""),
        ("POST", "https", Some("app.example.com"), &[("origin", "null")], "csrf.origin"),
        ("POST", "https", Some("app.example.com"), &[("origin", "https://app.example.com/path")], "csrf.origin"),
        ("POST", "https", Some("app.example.com"), &[("origin", "https://u@app.example.com")], "csrf.origin"),
        (
            "POST",
            "https",
            Some("app.example.com"),
            &[("origin", "https://app.example.com"), ("origin", "https://evil.example")],
            "csrf.origin",
        ),
        ("POST", "https", None, &[("origin", "https://app.example.com")], "csrf.origin"),
        // Neither header: refused by default; Referer only when configured.
        ("POST", "https", Some("app.example.com"), &[], "csrf.origin"),
        ("PUT", "https", Some("app.example.com"), &[("referer", "https://app.example.com/form")], "csrf.origin"),
        // Safe methods pass whatever their origin.
        ("GET", "https", Some("app.example.com"), &[("sec-fetch-site", "cross-site")], ""),
        ("HEAD", "https", Some("app.example.com"), &[("origin", "null")], ""),
        ("OPTIONS", "https", Some("app.example.com"), &[], ""),
        // Any other method is unsafe.
        ("PATCH", "https", Some("app.example.com"), &[("sec-fetch-site", "cross-site")], "csrf.origin"),
        ("PROPFIND", "https", Some("app.example.com"), &[], "csrf.origin"),
    ];
    let p = policy(Mode::Origin);
    for (method, scheme, host, pairs, expected) in cases {
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let h = headers(pairs);
        let req = CsrfRequest { method: &method, headers: &h, scheme, host: *host, session: None };
        assert_eq!(outcome(p.verify(&req)), *expected, "{method} {scheme} {host:?} {pairs:?}");
    }
}

#[test]
fn same_site_and_referer_are_configurable() {
    let mut p = policy(Mode::Origin);
    p.allow_same_site = true;
    p.missing_origin = MissingOrigin::Referer;
    let cases: &[(&[(&str, &str)], &str)] = &[
        (&[("sec-fetch-site", "same-site")], ""),
        (&[("sec-fetch-site", "cross-site")], "csrf.origin"),
        (&[("referer", "https://app.example.com/orders?page=2")], ""),
        (&[("referer", "https://admin.example.com/")], ""),
        (&[("referer", "https://evil.example/app.example.com")], "csrf.origin"),
        (&[("referer", "/relative")], "csrf.origin"),
        (&[("referer", "https://app.example.com@evil.example/")], "csrf.origin"),
        (&[], "csrf.origin"),
        // An Origin, when sent, is judged and the Referer is not.
        (&[("origin", "https://evil.example"), ("referer", "https://app.example.com/")], "csrf.origin"),
    ];
    for (pairs, expected) in cases {
        let h = headers(pairs);
        let req = CsrfRequest {
            method: &Method::POST,
            headers: &h,
            scheme: "https",
            host: Some("app.example.com"),
            session: None,
        };
        assert_eq!(outcome(p.verify(&req)), *expected, "{pairs:?}");
    }
}

#[test]
fn token_decisions() {
    let p = policy(Mode::OriginToken);
    let alice = p.key.issue(Some("session-alice")).unwrap();
    let alice2 = p.key.issue(Some("session-alice")).unwrap();
    let bob = p.key.issue(Some("session-bob")).unwrap();
    let unbound = p.key.issue(None).unwrap();
    let other_key =
        CsrfKey::new(b"another-secret-of-at-least-32-bytes!").unwrap().issue(Some("session-alice")).unwrap();
    let mut tampered = alice.clone().into_bytes();
    let last = tampered.len() - 2;
    tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    let garbage = "A".repeat(ENCODED_LEN);
    let cookie = |v: &str| format!("theme=dark; {COOKIE_HTTPS}={v}");
    let session = Some("session-alice");

    let cases: Vec<TokenCase<'_>> = vec![
        (Some(cookie(&alice)), Some(&alice), session, ""),
        (Some(cookie(&unbound)), Some(&unbound), None, ""),
        // Another session's token, or one bound differently.
        (Some(cookie(&bob)), Some(&bob), session, "csrf.token_invalid"),
        (Some(cookie(&unbound)), Some(&unbound), session, "csrf.token_invalid"),
        (Some(cookie(&alice)), Some(&alice), None, "csrf.token_invalid"),
        (Some(cookie(&alice)), Some(&alice), Some("session-alice2"), "csrf.token_invalid"),
        // Forged or tampered, consistently in cookie and header.
        (Some(cookie(&other_key)), Some(&other_key), session, "csrf.token_invalid"),
        (Some(cookie(&tampered)), Some(&tampered), session, "csrf.token_invalid"),
        (Some(cookie(&garbage)), Some(&garbage), session, "csrf.token_invalid"),
        (Some(cookie("short")), Some("short"), session, "csrf.token_invalid"),
        // Header and cookie differ, even when both are valid.
        (Some(cookie(&alice)), Some(&alice2), session, "csrf.token_invalid"),
        (Some(cookie(&alice)), Some(&tampered), session, "csrf.token_invalid"),
        // Missing parts.
        (None, Some(&alice), session, "csrf.token_missing"),
        (Some(cookie(&alice)), None, session, "csrf.token_missing"),
        (Some(cookie(&alice)), Some(""), session, "csrf.token_missing"),
        (Some(format!("{COOKIE_HTTP}={alice}")), Some(&alice), session, "csrf.token_missing"),
        // A tossed duplicate cookie does not hide the real one.
        (Some(format!("{COOKIE_HTTPS}={bob}; {COOKIE_HTTPS}={alice}")), Some(&alice), session, ""),
    ];
    for (cookie_header, token, session, expected) in cases {
        let mut pairs = vec![("sec-fetch-site", "same-origin")];
        if let Some(c) = &cookie_header {
            pairs.push(("cookie", c));
        }
        if let Some(t) = token {
            pairs.push((DEFAULT_HEADER, t));
        }
        let h = headers(&pairs);
        let req = CsrfRequest { method: &Method::POST, headers: &h, scheme: "https", host: Some("app"), session };
        let result = p.verify(&req);
        if let Err(denied) = &result {
            let detail = denied.detail.as_deref().unwrap_or("");
            for secret in [&alice, &bob, &unbound, &other_key] {
                assert!(!detail.contains(secret.as_str()), "detail leaks a token: {detail}");
            }
        }
        assert_eq!(outcome(result), expected, "{cookie_header:?} {token:?} {session:?}");
    }
}

#[test]
fn the_origin_is_checked_before_the_token_and_safe_methods_skip_both() {
    let p = policy(Mode::OriginToken);
    let h = headers(&[("sec-fetch-site", "cross-site")]);
    let post = CsrfRequest { method: &Method::POST, headers: &h, scheme: "https", host: Some("app"), session: None };
    assert_eq!(outcome(p.verify(&post)), "csrf.origin");
    let get = CsrfRequest { method: &Method::GET, ..post };
    assert_eq!(outcome(p.verify(&get)), "");
    let off = policy(Mode::Off);
    assert_eq!(outcome(off.verify(&post)), "");
}

#[test]
fn cookies_are_issued_readable_strict_and_secure_on_https() {
    let p = policy(Mode::OriginToken);
    let token = p.key.issue(Some("s")).unwrap();
    assert_eq!(token.len(), ENCODED_LEN);
    assert_ne!(token, p.key.issue(Some("s")).unwrap(), "fresh nonce each time");
    let https = p.set_cookie(&token, "https").unwrap();
    assert_eq!(https.to_str().unwrap(), format!("__Host-portcullis-csrf={token}; Path=/; SameSite=Strict; Secure"));
    let http = p.set_cookie(&token, "http").unwrap();
    assert_eq!(http.to_str().unwrap(), format!("portcullis-csrf={token}; Path=/; SameSite=Strict"));
    assert!(!https.to_str().unwrap().contains("HttpOnly"), "the page's script reads it");

    let valid = headers(&[("cookie", &format!("{COOKIE_HTTPS}={token}"))]);
    assert!(p.has_valid_cookie(&valid, "https", Some("s")));
    assert!(!p.has_valid_cookie(&valid, "https", Some("t")), "another session needs a new one");
    assert!(!p.has_valid_cookie(&valid, "http", Some("s")), "the plain-HTTP name differs");
    assert!(!p.has_valid_cookie(&HeaderMap::new(), "https", Some("s")));

    let mut named = policy(Mode::OriginToken);
    named.cookie = Some("XSRF-TOKEN".into());
    assert_eq!(named.cookie_name("https"), "XSRF-TOKEN");
    assert_eq!(named.cookie_name("http"), "XSRF-TOKEN");
}

#[test]
fn keys_need_32_bytes_and_never_print() {
    assert_eq!(CsrfKey::new(&[7; 31]).unwrap_err(), CsrfError::ShortSecret);
    let key = CsrfKey::generate().unwrap();
    assert_eq!(format!("{key:?}"), "CsrfKey([redacted])");
    let other = CsrfKey::generate().unwrap();
    assert!(!other.verifies(&key.issue(None).unwrap(), None));
}

#[test]
fn origins_normalize() {
    let cases: &[(&str, Option<&str>)] = &[
        ("https://App.Example.com", Some("https://app.example.com")),
        ("https://app.example.com/", Some("https://app.example.com")),
        ("https://app.example.com:443", Some("https://app.example.com")),
        ("http://app.example.com:80", Some("http://app.example.com")),
        ("http://app.example.com:443", Some("http://app.example.com:443")),
        ("https://[::1]:8443", Some("https://[::1]:8443")),
        ("https://app.example.com/path", None),
        ("https://app.example.com?q", None),
        ("https://user@app.example.com", None),
        ("https://app.example.com:", None),
        ("https://app.example.com:99999x", None),
        ("ftp://app.example.com", None),
        ("app.example.com", None),
        ("https://", None),
        ("null", None),
    ];
    for (input, expected) in cases {
        assert_eq!(normalize_origin(input).as_deref(), *expected, "{input}");
    }
}
