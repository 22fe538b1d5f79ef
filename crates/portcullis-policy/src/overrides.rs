//! Method and path overrides: headers and query parameters some backends
//! read to change the request's method or path after the gateway has decided
//! on it.
//!
//! Defends against a request that is one thing to the gateway and another to
//! the upstream. The gateway routes, authorizes and limits `POST /public`;
//! an Express app with `method-override`, an ASP.NET Web API or a Symfony
//! app with `http_method_override` reads `X-HTTP-Method-Override: DELETE`
//! and runs `DELETE /public`; Symfony and IIS URL Rewrite read
//! `X-Original-URL: /admin` (or `X-Rewrite-URL`) and serve `/admin`.
//! Express's `methodOverride('_method')` and Laravel read the method from a
//! `_method` query parameter: `POST /orders/7?_method=DELETE`.
//!
//! Decision rules:
//! - A request carrying any of [`OVERRIDE_HEADERS`] (or its `_` spelling,
//!   which CGI-style servers read as the same header) is refused with
//!   `request.override` (400), the header named in `rule`.
//! - So is a query string with a `_method` parameter, however it is
//!   percent-encoded or bracketed (`_method[]`, which `qs` makes an array
//!   that `method-override` reads too); `rule` is `query:_method`.
//!
//! A client that needs another method can send it: the gateway speaks every
//! method.
//!
//! Deployment caveat: an override in a form body (`_method=DELETE` in Rails,
//! Laravel and Symfony forms) is not read here; restrict such routes by
//! method on the upstream too, or do not enable body method overrides there.

use http::header::HeaderMap;

use crate::deny::{Denied, Reason};

/// Headers that change the method or path a backend acts on.
pub const OVERRIDE_HEADERS: [&str; 5] =
    ["x-http-method-override", "x-http-method", "x-method-override", "x-original-url", "x-rewrite-url"];

/// The query parameter backends read as the method.
pub const OVERRIDE_PARAMETER: &str = "_method";

/// Whether a query parameter name is `_method` to some backend: as sent,
/// with brackets after it (`qs` makes `_method[]` an array that
/// `method-override` reads too), or in a spelling PHP turns into `_method`
/// (a leading space, dot or unclosed `[`: ` method`, `.method`, `[method`).
fn is_override_parameter(name: &str) -> bool {
    let Some(rest) = name.strip_prefix([' ', '.', '[', '_']).and_then(|r| r.strip_prefix("method")) else {
        return false;
    };
    rest.is_empty() || rest.starts_with('[')
}

/// Refuses a request carrying an override header or query parameter.
///
/// # Errors
/// `request.override` naming the header or `query:_method`.
pub fn check(headers: &HeaderMap, query: Option<&str>) -> Result<(), Denied> {
    if let Some(query) = query
        && (query.contains("method") || query.contains('%'))
        && form_urlencoded::parse(query.as_bytes()).any(|(name, _)| is_override_parameter(&name))
    {
        return Err(Denied::new(Reason::RequestOverride)
            .with_rule(format!("query:{OVERRIDE_PARAMETER}"))
            .with_detail("the _method query parameter would change the method the upstream acts on"));
    }
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
            let result = check(&headers, None);
            assert_eq!(result.as_ref().err().and_then(|d| d.rule.as_deref()), refused, "{name}");
        }
    }

    #[test]
    fn the_method_query_parameter_is_refused_however_it_is_spelled() {
        let headers = HeaderMap::new();
        for (query, refused) in [
            ("_method=DELETE", true),
            ("a=1&_method=put", true),
            ("%5Fmethod=DELETE", true),
            ("_%6Dethod=DELETE", true),
            ("_method[]=DELETE", true),
            ("_method%5B0%5D=DELETE", true),
            ("_method", true),
            ("+method=DELETE", true),
            ("%20method=DELETE", true),
            (".method=DELETE", true),
            ("[method=DELETE", true),
            ("-method=DELETE", false),
            ("method_=DELETE", false),
            ("method=DELETE", false),
            ("x_method=DELETE", false),
            ("_methods=DELETE", false),
            ("q=_method%3DDELETE", false),
            ("", false),
        ] {
            let result = check(&headers, Some(query));
            assert_eq!(result.is_err(), refused, "{query}");
            if refused {
                assert_eq!(result.unwrap_err().rule.as_deref(), Some("query:_method"));
            }
        }
        assert!(check(&headers, None).is_ok());
    }
}
