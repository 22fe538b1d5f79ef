//! Duplicate credentials: a header or cookie that carries a credential or
//! decides who the caller is must appear at most once.
//!
//! Defends against parser differentials. The gateway checks one value; an
//! upstream framework may read the first, the last, or all of them joined.
//! Two `Authorization` headers — a valid token, then a forged `alg: none`
//! admin token — would be verified as one identity and used as another. The
//! same holds for the API-key header, the session and CSRF cookies and the
//! CSRF header, for `Host` (routing versus the upstream's virtual host), and
//! for `Content-Type` (the WAF and schema validation parse the body as one
//! type while the upstream parses it as another).
//!
//! Decision rules:
//! 1. Each singleton header appears at most once. A spelling with `_` for
//!    `-` (`X_API_Key`) counts as the same header: CGI-style servers (Rack,
//!    PHP, uWSGI) map both to one variable.
//! 2. Each singleton cookie appears at most once across every `Cookie`
//!    header; names compare case-insensitively (frameworks differ).
//! 3. Otherwise `request.duplicate` (400), naming the header or cookie in
//!    the event's `rule`, never its values. Nothing is forwarded.

use http::header::{AUTHORIZATION, CONTENT_TYPE, COOKIE, HOST, HeaderMap, HeaderName, PROXY_AUTHORIZATION};

use crate::deny::{Denied, Reason};

/// The headers and cookies that must not repeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Singletons {
    headers: Vec<HeaderName>,
    cookies: Vec<String>,
}

impl Default for Singletons {
    /// The headers every gateway has: `Host`, `Authorization`,
    /// `Proxy-Authorization`, `Content-Type`.
    fn default() -> Self {
        Self { headers: vec![HOST, AUTHORIZATION, PROXY_AUTHORIZATION, CONTENT_TYPE], cookies: Vec::new() }
    }
}

impl Singletons {
    /// Adds a header that must not repeat (an API-key or CSRF header).
    #[must_use]
    pub fn with_header(mut self, name: HeaderName) -> Self {
        if !self.headers.contains(&name) {
            self.headers.push(name);
        }
        self
    }

    /// Adds a cookie that must not repeat (the session or CSRF cookie).
    #[must_use]
    pub fn with_cookie(mut self, name: &str) -> Self {
        if !self.cookies.iter().any(|c| c.eq_ignore_ascii_case(name)) {
            self.cookies.push(name.to_owned());
        }
        self
    }

    /// Checks a request's headers.
    ///
    /// # Errors
    /// `request.duplicate` naming the first repeated header or cookie.
    pub fn check(&self, headers: &HeaderMap) -> Result<(), Denied> {
        // Some name repeats at all (more values than names): look which.
        if headers.len() > headers.keys_len() {
            for name in &self.headers {
                if headers.get_all(name).iter().nth(1).is_some() {
                    return Err(duplicate(name.as_str()));
                }
            }
        }
        // Underscore spellings: one pass over the names, only when some
        // name has an underscore (almost never).
        if headers.keys().any(|k| k.as_str().contains('_')) {
            for name in &self.headers {
                let aliases = headers
                    .keys()
                    .filter(|k| k.as_str().len() == name.as_str().len() && same_alias(k.as_str(), name.as_str()))
                    .map(|k| headers.get_all(k).iter().count())
                    .sum::<usize>();
                if aliases > 1 {
                    return Err(duplicate(name.as_str()));
                }
            }
        }
        if !self.cookies.is_empty() && headers.contains_key(COOKIE) {
            for wanted in &self.cookies {
                let count = cookie_names(headers).filter(|n| n.eq_ignore_ascii_case(wanted.as_bytes())).count();
                if count > 1 {
                    return Err(duplicate(&format!("cookie:{wanted}")));
                }
            }
        }
        Ok(())
    }
}

/// Whether two lower-case header names are the same when `_` reads as `-`.
fn same_alias(a: &str, b: &str) -> bool {
    a.bytes().zip(b.bytes()).all(|(x, y)| x == y || (x == b'_' && y == b'-') || (x == b'-' && y == b'_'))
}

/// The names of every cookie in every `Cookie` header, read by the one
/// cookie parser ([`crate::cookies`]): fields with non-ASCII bytes count too.
fn cookie_names(headers: &HeaderMap) -> impl Iterator<Item = &[u8]> {
    crate::cookies::pairs(headers).map(|(name, _)| name).filter(|name| !name.is_empty())
}

fn duplicate(what: &str) -> Denied {
    Denied::new(Reason::RequestDuplicate)
        .with_rule(what.to_owned())
        .with_detail(format!("{what} appears more than once"))
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::test_support::headers as map;
    use http::HeaderValue;

    #[test]
    fn repeated_credentials_are_refused() {
        let rules = Singletons::default()
            .with_header(HeaderName::from_static("x-api-key"))
            .with_header(HeaderName::from_static("x-csrf-token"))
            .with_cookie("__Host-portcullis-session")
            .with_cookie("__Host-portcullis-csrf");
        type Case = (&'static str, &'static [(&'static str, &'static str)], Option<&'static str>);
        let cases: &[Case] = &[
            ("plain", &[("host", "a"), ("authorization", "Bearer x"), ("cookie", "a=1; b=2")], None),
            (
                "two authorization",
                &[("authorization", "Bearer good"), ("authorization", "Bearer forged")],
                Some("authorization"),
            ),
            (
                "two proxy-authorization",
                &[("proxy-authorization", "a"), ("proxy-authorization", "b")],
                Some("proxy-authorization"),
            ),
            ("two hosts", &[("host", "a"), ("host", "b")], Some("host")),
            (
                "two content types",
                &[("content-type", "application/json"), ("content-type", "text/plain")],
                Some("content-type"),
            ),
            ("two api keys", &[("x-api-key", "a"), ("x-api-key", "b")], Some("x-api-key")),
            ("api key and its underscore spelling", &[("x-api-key", "a"), ("x_api_key", "b")], Some("x-api-key")),
            ("two underscore spellings", &[("x_api-key", "a"), ("x-api_key", "b")], Some("x-api-key")),
            ("one underscore spelling", &[("x_api_key", "a")], None),
            ("two csrf headers", &[("x-csrf-token", "a"), ("x-csrf-token", "b")], Some("x-csrf-token")),
            (
                "session cookie twice in one header",
                &[("cookie", "__Host-portcullis-session=a; x=1; __Host-portcullis-session=b")],
                Some("cookie:__Host-portcullis-session"),
            ),
            (
                "session cookie in two headers",
                &[("cookie", "__Host-portcullis-session=a"), ("cookie", " __Host-portcullis-session =b")],
                Some("cookie:__Host-portcullis-session"),
            ),
            (
                "session cookie in another case",
                &[("cookie", "__Host-portcullis-session=a; __host-portcullis-SESSION=b")],
                Some("cookie:__Host-portcullis-session"),
            ),
            (
                "csrf cookie twice",
                &[("cookie", "__Host-portcullis-csrf=a;__Host-portcullis-csrf=b")],
                Some("cookie:__Host-portcullis-csrf"),
            ),
            ("other cookies repeat freely", &[("cookie", "a=1; a=2"), ("cookie", "a=3")], None),
            ("other headers repeat freely", &[("accept", "a"), ("accept", "b"), ("x-forwarded-for", "1.2.3.4")], None),
        ];
        for (name, pairs, expected) in cases {
            let result = rules.check(&map(pairs));
            match expected {
                None => assert!(result.is_ok(), "{name}: {result:?}"),
                Some(rule) => {
                    let denied = result.unwrap_err();
                    assert_eq!(denied.reason, Reason::RequestDuplicate, "{name}");
                    assert_eq!(denied.rule.as_deref(), Some(*rule), "{name}");
                }
            }
        }
    }

    /// Found merging the `cookies` fuzz target: a `Cookie` field with
    /// non-ASCII bytes (browsers send UTF-8 cookie values raw) was skipped,
    /// so the session cookie repeated there was not counted.
    #[test]
    fn cookies_in_non_ascii_fields_count() {
        let rules = Singletons::default().with_cookie("sid");
        let mut h = HeaderMap::new();
        h.append(COOKIE, HeaderValue::from_static("sid=a"));
        h.append(COOKIE, HeaderValue::from_bytes(b"name=Jos\xc3\xa9; sid=b").unwrap());
        assert_eq!(rules.check(&h).unwrap_err().rule.as_deref(), Some("cookie:sid"));
    }
}
