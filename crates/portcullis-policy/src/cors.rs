//! CORS: which web origins may call the API from a browser.
//!
//! CORS relaxes the browser's same-origin policy; it does not protect the
//! server. The risk it defends against is a misconfiguration that lets any
//! site read authenticated responses (`Access-Control-Allow-Origin` echoing
//! every origin together with credentials), so the rules are strict:
//! - Origins are an exact list (`https://app.example.com`) or one-label
//!   patterns (`https://*.example.com`); `*` allows any origin but never with
//!   credentials (refused at load).
//! - Preflights (`OPTIONS` with `Access-Control-Request-Method`) are answered
//!   by the gateway: 204 with the allowed methods and headers, or a refusal
//!   (`cors.origin`, `cors.method`, `cors.header`) and an event.
//! - Actual requests are not blocked (the browser enforces CORS); an allowed
//!   origin gets `Access-Control-Allow-Origin`, any other gets nothing.
//! - Every answer carries `Vary: Origin`, and the upstream's own
//!   `Access-Control-*` headers are replaced: one place decides.

use http::Method;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::deny::{Denied, Reason};

/// Allowed origins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origins {
    /// Any origin (`*`); never with credentials.
    Any,
    /// Exact origins and `scheme://*.suffix` patterns, lowercase.
    List(Vec<String>),
}

/// A CORS policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorsPolicy {
    /// Allowed origins.
    pub origins: Origins,
    /// Allowed methods.
    pub methods: Vec<Method>,
    /// Allowed request headers (lowercase).
    pub headers: Vec<HeaderName>,
    /// Response headers scripts may read.
    pub expose: Vec<HeaderName>,
    /// Whether cookies and `Authorization` may be sent.
    pub credentials: bool,
    /// How long a browser may cache a preflight, in seconds.
    pub max_age: Option<u64>,
}

/// Why a CORS policy is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CorsError {
    /// `*` with credentials.
    #[error("a wildcard origin cannot be combined with credentials: any site could read authenticated responses")]
    WildcardWithCredentials,
    /// An origin that is not `scheme://host[:port]`.
    #[error("invalid origin {0:?}: use \"https://app.example.com\", \"https://*.example.com\" or \"*\"")]
    BadOrigin(String),
}

impl CorsPolicy {
    /// Checks the policy's consistency.
    ///
    /// # Errors
    /// [`CorsError`].
    pub fn validate(&self) -> Result<(), CorsError> {
        match &self.origins {
            Origins::Any if self.credentials => Err(CorsError::WildcardWithCredentials),
            Origins::Any => Ok(()),
            Origins::List(list) => {
                for origin in list {
                    let Some((scheme, host)) = origin.split_once("://") else {
                        return Err(CorsError::BadOrigin(origin.clone()));
                    };
                    let host_ok = !host.is_empty()
                        && !host.contains('/')
                        && host
                            .trim_start_matches("*.")
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b));
                    if !(scheme == "https" || scheme == "http") || !host_ok || host.matches('*').count() > 1 {
                        return Err(CorsError::BadOrigin(origin.clone()));
                    }
                }
                Ok(())
            }
        }
    }

    /// Whether `origin` is allowed.
    #[must_use]
    pub fn allows(&self, origin: &str) -> bool {
        match &self.origins {
            Origins::Any => true,
            Origins::List(list) => {
                let origin = origin.to_ascii_lowercase();
                list.iter().any(|allowed| match allowed.split_once("://*.") {
                    Some((scheme, suffix)) => origin
                        .strip_prefix(scheme)
                        .and_then(|rest| rest.strip_prefix("://"))
                        .and_then(|host| host.strip_suffix(suffix))
                        .and_then(|label| label.strip_suffix('.'))
                        .is_some_and(|label| !label.is_empty() && !label.contains('.')),
                    None => *allowed == origin,
                })
            }
        }
    }

    fn allow_origin_value(&self, origin: &HeaderValue) -> HeaderValue {
        if self.origins == Origins::Any && !self.credentials { HeaderValue::from_static("*") } else { origin.clone() }
    }

    /// Answers a preflight: the headers of a 204, or the refusal.
    ///
    /// # Errors
    /// `cors.origin`, `cors.method` or `cors.header` (403).
    pub fn preflight(&self, request: &HeaderMap) -> Result<HeaderMap, Denied> {
        let origin = request.get(header::ORIGIN).ok_or_else(|| Denied::new(Reason::CorsOrigin))?;
        let origin_text = origin.to_str().map_err(|_| Denied::new(Reason::CorsOrigin))?;
        if !self.allows(origin_text) {
            return Err(Denied::new(Reason::CorsOrigin).with_detail(format!("origin {origin_text} not allowed")));
        }
        let method = request
            .get(header::ACCESS_CONTROL_REQUEST_METHOD)
            .and_then(|m| Method::from_bytes(m.as_bytes()).ok())
            .ok_or_else(|| Denied::new(Reason::CorsMethod))?;
        if !self.methods.contains(&method) {
            return Err(Denied::new(Reason::CorsMethod).with_detail(format!("method {method} not allowed")));
        }
        let requested: Vec<&str> = request
            .get_all(header::ACCESS_CONTROL_REQUEST_HEADERS)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .collect();
        for name in &requested {
            if !self.headers.iter().any(|h| h.as_str().eq_ignore_ascii_case(name)) {
                return Err(Denied::new(Reason::CorsHeader).with_detail(format!("header {name} not allowed")));
            }
        }
        let mut out = HeaderMap::new();
        out.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, self.allow_origin_value(origin));
        let methods = self.methods.iter().map(Method::as_str).collect::<Vec<_>>().join(", ");
        if let Ok(v) = HeaderValue::from_str(&methods) {
            out.insert(header::ACCESS_CONTROL_ALLOW_METHODS, v);
        }
        if !self.headers.is_empty() {
            let headers = self.headers.iter().map(HeaderName::as_str).collect::<Vec<_>>().join(", ");
            if let Ok(v) = HeaderValue::from_str(&headers) {
                out.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, v);
            }
        }
        if self.credentials {
            out.insert(header::ACCESS_CONTROL_ALLOW_CREDENTIALS, HeaderValue::from_static("true"));
        }
        if let Some(max_age) = self.max_age {
            out.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from(max_age));
        }
        out.insert(
            header::VARY,
            HeaderValue::from_static("Origin, Access-Control-Request-Method, Access-Control-Request-Headers"),
        );
        Ok(out)
    }

    /// Sets the CORS headers of an actual (non-preflight) answer.
    pub fn apply(&self, origin: Option<&HeaderValue>, response: &mut HeaderMap) {
        let upstream_cors: Vec<HeaderName> =
            response.keys().filter(|k| k.as_str().starts_with("access-control-")).cloned().collect();
        for name in upstream_cors {
            response.remove(name);
        }
        response.append(header::VARY, HeaderValue::from_static("Origin"));
        let Some(origin) = origin.filter(|o| o.to_str().is_ok_and(|o| self.allows(o))) else { return };
        response.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, self.allow_origin_value(origin));
        if self.credentials {
            response.insert(header::ACCESS_CONTROL_ALLOW_CREDENTIALS, HeaderValue::from_static("true"));
        }
        if !self.expose.is_empty() {
            let expose = self.expose.iter().map(HeaderName::as_str).collect::<Vec<_>>().join(", ");
            if let Ok(v) = HeaderValue::from_str(&expose) {
                response.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, v);
            }
        }
    }
}

/// Whether a request is a CORS preflight.
#[must_use]
pub fn is_preflight(method: &Method, headers: &HeaderMap) -> bool {
    method == Method::OPTIONS
        && headers.contains_key(header::ORIGIN)
        && headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(origins: Origins, credentials: bool) -> CorsPolicy {
        CorsPolicy {
            origins,
            methods: vec![Method::GET, Method::POST],
            headers: vec![header::CONTENT_TYPE, header::AUTHORIZATION],
            expose: vec![HeaderName::from_static("x-request-id")],
            credentials,
            max_age: Some(600),
        }
    }

    fn preflight(origin: &str, method: &str, headers: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ORIGIN, HeaderValue::from_str(origin).unwrap());
        h.insert(header::ACCESS_CONTROL_REQUEST_METHOD, HeaderValue::from_str(method).unwrap());
        if !headers.is_empty() {
            h.insert(header::ACCESS_CONTROL_REQUEST_HEADERS, HeaderValue::from_str(headers).unwrap());
        }
        h
    }

    #[test]
    fn origin_matching() {
        let p = policy(Origins::List(vec!["https://app.example.com".into(), "https://*.example.org".into()]), true);
        assert!(p.allows("https://app.example.com"));
        assert!(p.allows("HTTPS://APP.EXAMPLE.COM"));
        assert!(!p.allows("http://app.example.com"));
        assert!(!p.allows("https://app.example.com.evil.net"));
        assert!(p.allows("https://shop.example.org"));
        assert!(!p.allows("https://example.org"));
        assert!(!p.allows("https://a.b.example.org"), "one label only");
        assert!(!p.allows("https://evilexample.org"));
        assert!(!p.allows("null"));
    }

    #[test]
    fn wildcard_with_credentials_is_invalid() {
        assert_eq!(policy(Origins::Any, true).validate(), Err(CorsError::WildcardWithCredentials));
        assert!(policy(Origins::Any, false).validate().is_ok());
        assert!(policy(Origins::List(vec!["app.example.com".into()]), false).validate().is_err());
        assert!(policy(Origins::List(vec!["https://app.example.com/path".into()]), false).validate().is_err());
    }

    #[test]
    fn preflight_table() {
        let p = policy(Origins::List(vec!["https://app.example.com".into()]), true);
        let ok = p.preflight(&preflight("https://app.example.com", "POST", "Content-Type, authorization")).unwrap();
        assert_eq!(ok[header::ACCESS_CONTROL_ALLOW_ORIGIN], "https://app.example.com");
        assert_eq!(ok[header::ACCESS_CONTROL_ALLOW_CREDENTIALS], "true");
        assert_eq!(ok[header::ACCESS_CONTROL_MAX_AGE], "600");
        let code = |r: Result<HeaderMap, Denied>| r.err().map(|d| d.reason.code());
        assert_eq!(code(p.preflight(&preflight("https://evil.example", "POST", ""))), Some("cors.origin"));
        assert_eq!(code(p.preflight(&preflight("https://app.example.com", "DELETE", ""))), Some("cors.method"));
        assert_eq!(code(p.preflight(&preflight("https://app.example.com", "GET", "x-secret"))), Some("cors.header"));
    }

    #[test]
    fn actual_responses_get_headers_only_for_allowed_origins() {
        let p = policy(Origins::List(vec!["https://app.example.com".into()]), false);
        let mut h = HeaderMap::new();
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
        p.apply(Some(&HeaderValue::from_static("https://evil.example")), &mut h);
        assert!(!h.contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN), "the upstream's wildcard is removed");
        assert_eq!(h[header::VARY], "Origin");
        let mut h = HeaderMap::new();
        p.apply(Some(&HeaderValue::from_static("https://app.example.com")), &mut h);
        assert_eq!(h[header::ACCESS_CONTROL_ALLOW_ORIGIN], "https://app.example.com");
        assert_eq!(h[header::ACCESS_CONTROL_EXPOSE_HEADERS], "x-request-id");
    }
}
