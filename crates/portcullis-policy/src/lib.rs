//! Pure security decisions for Portcullis.
//!
//! Nothing in this crate performs IO or depends on an async runtime, tower or
//! hyper: every function takes plain values (often `http` types) and returns a
//! decision. That keeps the riskiest logic cheap to table-test, fuzz and
//! benchmark; the `portcullis-layers` crate enforces these decisions on live
//! requests.

pub mod ban;
pub mod clock;
pub mod cookies;
pub mod cors;
pub mod csrf;
pub mod deny;
pub mod duplicates;
pub mod encoding;
pub mod event;
pub mod forwarded;
pub mod headers;
pub mod hop;
pub mod ip_rules;
pub mod jwt;
pub mod limits;
pub mod login;
pub mod normalize;
pub mod openapi;
pub mod overrides;
pub mod password;
pub mod principal;
pub mod rate_limit;
pub mod rbac;
pub mod request_id;
pub mod route;
pub mod session;
pub mod totp;
pub mod upgrade;
pub mod waf;

pub use deny::{Attribution, ClientDetail, Denied, Reason};
pub use event::{Action, SecurityEvent};
pub use principal::{AuthMethod, Methods, Principal};

/// Helpers shared by the unit tests.
#[cfg(test)]
pub(crate) mod test_support {
    use http::{HeaderMap, HeaderName, HeaderValue};

    /// Headers from `(name, value)` pairs, repeated names appended in order.
    pub(crate) fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
        }
        h
    }
}
