//! Override headers: headers some backends read to change the request's
//! method or path after the gateway has decided on it.
//!
//! Defends against a request that is one thing to the gateway and another to
//! the upstream. The gateway routes, authorizes and limits `POST /public`;
//! an Express app with `method-override`, an ASP.NET Web API or a Symfony
//! app with `http_method_override` reads `X-HTTP-Method-Override: DELETE`
//! and runs `DELETE /public`; Symfony and IIS URL Rewrite read
//! `X-Original-URL: /admin` (or `X-Rewrite-URL`) and serve `/admin`.
//!
//! Decision rule: a request carrying any of [`OVERRIDE_HEADERS`] (or its
//! `_` spelling, which CGI-style servers read as the same header) is refused
//! with `request.override` (400), the header named in `rule`. A client that
//! needs another method can send it: the gateway speaks every method.
//!
//! Deployment caveat: overrides in the body or query (`_method=DELETE`,
//! Rails and Laravel forms) are not visible here; restrict such routes by
//! method on the upstream too, or do not enable method overrides there.

use http::header::HeaderMap;

use crate::deny::{Denied, Reason};

/// Headers that change the method or path a backend acts on.
pub const OVERRIDE_HEADERS: [&str; 5] =
    ["x-http-method-override", "x-http-method", "x-method-override", "x-original-url", "x-rewrite-url"];

/// Refuses a request carrying an override header.
///
/// # Errors
/// `request.override` naming the header.
pub fn check(headers: &HeaderMap) -> Result<(), Denied> {
    for name in headers.keys() {
        let name = name.as_str();
        if !name.starts_with('x') {
            continue;
        }
        if let Some(known) = OVERRIDE_HEADERS.iter().find(|h| {
            h.len() == name.len() && h.bytes().zip(name.bytes()).all(|(a, b)| a == b || (a == b'-' && b == b'_'))
        }) {
            return Err(Denied::new(Reason::RequestOverride)
                .with_rule(*known)
                .with_detail(format!("{name} would change the method or path the upstream acts on")));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderName, HeaderValue};

    #[test]
    fn override_headers_are_refused_in_every_spelling() {
        for (name, refused) in [
            ("x-http-method-override", Some("x-http-method-override")),
            ("X-HTTP-Method", Some("x-http-method")),
            ("x-method-override", Some("x-method-override")),
            ("x-original-url", Some("x-original-url")),
            ("x-rewrite-url", Some("x-rewrite-url")),
            ("x_http_method_override", Some("x-http-method-override")),
            ("x_original-url", Some("x-original-url")),
            ("x-http-method-overrides", None),
            ("x-forwarded-for", None),
            ("accept", None),
        ] {
            let mut headers = HeaderMap::new();
            headers.insert(HeaderName::from_bytes(name.as_bytes()).unwrap(), HeaderValue::from_static("DELETE"));
            let result = check(&headers);
            assert_eq!(result.as_ref().err().and_then(|d| d.rule.as_deref()), refused, "{name}");
        }
    }
}
