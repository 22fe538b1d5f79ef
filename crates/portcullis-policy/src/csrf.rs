//! CSRF: a browser must not be made to send an unsafe request, with its
//! cookies, from another site.
//!
//! Defends cookie-authenticated routes against cross-site request forgery:
//! a form post, `fetch()` or `<img>` on a foreign page that rides on the
//! victim's session cookie.
//!
//! Decision rules ([`CsrfPolicy::verify`]):
//! - Safe methods (`GET`, `HEAD`, `OPTIONS`, `TRACE`) are never refused: they
//!   must not change state, and refusing them would break navigation.
//! - An unsafe method must come from this site:
//!   - `Sec-Fetch-Site: same-origin` or `none` (the user typed the URL or
//!     used a bookmark; no page can make a browser send `none`) passes.
//!     `same-site` is refused unless `allow_same_site`, `cross-site` is
//!     refused; either passes when its `Origin` is a trusted origin.
//!   - Without `Sec-Fetch-Site` (older browsers, non-browser clients), the
//!     `Origin` must equal the request's own origin (the effective scheme
//!     and `Host`) or a trusted origin. `Origin: null` (sandboxed frames,
//!     `data:` pages, some redirects) is refused.
//!   - With neither header the request is refused, unless
//!     [`MissingOrigin::Referer`] allows the `Referer`'s origin in its place.
//!     Every current browser sends `Origin` with unsafe requests.
//!   - Two `Sec-Fetch-Site` or `Origin` headers, or unknown values, refuse.
//! - In [`Mode::OriginToken`] it must also carry the double-submit token: the
//!   value of the token cookie repeated in the token header. The token is
//!   `base64url(version ‖ nonce ‖ HMAC-SHA256(key, binding ‖ nonce))`; the
//!   binding is the caller's session id when it has a session, so a token
//!   planted by a sibling subdomain (cookie tossing) or taken from another
//!   session does not verify. The MAC and the header/cookie comparison are
//!   constant time. No header or no cookie is `csrf.token_missing`; anything
//!   else wrong is `csrf.token_invalid`.
//! - Tokens never appear in denials or events: details say which check
//!   failed, never the value.
//!
//! Deployment caveats:
//! - The request's own origin is built from the `Host` header and the
//!   scheme of the listener, or `X-Forwarded-Proto` from a trusted proxy. A
//!   proxy that rewrites `Host` must be given the public origin in
//!   `trusted_origins`.
//! - Tokens of requests without a session (public routes with `csrf =
//!   true`) are not bound to anyone: the origin check carries those routes.
//! - A generated key lives in one process: tokens break on restart and
//!   between instances (`portcullis check` says so).

use std::borrow::Cow;

use aws_lc_rs::{constant_time, hkdf, hmac, rand};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Uri};

use crate::deny::{Denied, Reason};
use crate::principal::{AuthMethod, Methods};

/// The token header's default name.
pub const DEFAULT_HEADER: &str = "x-csrf-token";
/// The token cookie on HTTPS: `__Host-` makes browsers require `Secure`,
/// `Path=/` and no `Domain`, so no subdomain can plant it.
pub const COOKIE_HTTPS: &str = "__Host-portcullis-csrf";
/// The token cookie on plain HTTP, where `__Host-` cookies cannot be set.
pub const COOKIE_HTTP: &str = "portcullis-csrf";
/// Least secret length, in bytes.
pub const MIN_SECRET_LEN: usize = 32;

const VERSION: u8 = 1;
const NONCE_LEN: usize = 16;
const TAG_LEN: usize = 32;
const TOKEN_LEN: usize = 1 + NONCE_LEN + TAG_LEN;
/// Characters of an encoded token (base64url without padding).
pub const ENCODED_LEN: usize = (TOKEN_LEN * 4).div_ceil(3);
const HKDF_SALT: &[u8] = b"portcullis csrf token";
const HKDF_INFO: &[u8] = b"portcullis csrf hmac v1";
/// Longest origin quoted in an event detail.
const MAX_QUOTED: usize = 100;

/// What the defence checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Nothing.
    Off,
    /// Same-origin only.
    Origin,
    /// Same-origin and the double-submit token.
    OriginToken,
}

/// What to do with an unsafe request that has neither `Sec-Fetch-Site` nor
/// `Origin`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MissingOrigin {
    /// Refuse it (`csrf.origin`).
    Refuse,
    /// Judge the `Referer`'s origin instead; refuse without one.
    Referer,
}

/// Why a key could not be made or a token issued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CsrfError {
    /// The secret is shorter than [`MIN_SECRET_LEN`] bytes.
    #[error("the CSRF secret must be at least {MIN_SECRET_LEN} bytes")]
    ShortSecret,
    /// The system's random source failed.
    #[error("the random source failed")]
    Random,
}

/// The HMAC key signing tokens, derived with HKDF-SHA256 from a secret, so
/// a secret shared with another use (the session `cookie_secret`) gives an
/// independent key.
pub struct CsrfKey {
    key: hmac::Key,
}

impl std::fmt::Debug for CsrfKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CsrfKey([redacted])")
    }
}

impl CsrfKey {
    /// A key derived from `secret`.
    ///
    /// # Errors
    /// [`CsrfError::ShortSecret`] below [`MIN_SECRET_LEN`] bytes.
    pub fn new(secret: &[u8]) -> Result<Self, CsrfError> {
        if secret.len() < MIN_SECRET_LEN {
            return Err(CsrfError::ShortSecret);
        }
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, HKDF_SALT).extract(secret);
        let okm = prk.expand(&[HKDF_INFO], hmac::HMAC_SHA256).map_err(|_| CsrfError::Random)?;
        Ok(Self { key: hmac::Key::from(okm) })
    }

    /// A key from 32 fresh random bytes.
    ///
    /// # Errors
    /// [`CsrfError::Random`] if the random source fails.
    pub fn generate() -> Result<Self, CsrfError> {
        let mut secret = [0_u8; MIN_SECRET_LEN];
        rand::fill(&mut secret).map_err(|_| CsrfError::Random)?;
        Self::new(&secret)
    }

    fn tag(&self, binding: Option<&str>, nonce: &[u8]) -> hmac::Tag {
        let mut ctx = hmac::Context::with_key(&self.key);
        ctx.update(&[VERSION]);
        // Length-prefixed, and "no session" distinct from an empty id.
        match binding {
            None => ctx.update(&[0]),
            Some(id) => {
                ctx.update(&[1]);
                ctx.update(&u64::try_from(id.len()).unwrap_or(u64::MAX).to_be_bytes());
                ctx.update(id.as_bytes());
            }
        }
        ctx.update(nonce);
        ctx.sign()
    }

    /// A new token for `binding` (the session id, if any).
    ///
    /// # Errors
    /// [`CsrfError::Random`] if the random source fails.
    pub fn issue(&self, binding: Option<&str>) -> Result<String, CsrfError> {
        let mut raw = [0_u8; TOKEN_LEN];
        raw[0] = VERSION;
        rand::fill(&mut raw[1..=NONCE_LEN]).map_err(|_| CsrfError::Random)?;
        let tag = self.tag(binding, &raw[1..=NONCE_LEN]);
        raw[1 + NONCE_LEN..].copy_from_slice(tag.as_ref());
        Ok(URL_SAFE_NO_PAD.encode(raw))
    }

    /// Whether `token` was issued by this key for `binding`.
    #[must_use]
    pub fn verifies(&self, token: &str, binding: Option<&str>) -> bool {
        if token.len() != ENCODED_LEN {
            return false;
        }
        let Ok(raw) = URL_SAFE_NO_PAD.decode(token) else { return false };
        if raw.len() != TOKEN_LEN || raw[0] != VERSION {
            return false;
        }
        let (nonce, tag) = raw[1..].split_at(NONCE_LEN);
        constant_time::verify_slices_are_equal(self.tag(binding, nonce).as_ref(), tag).is_ok()
    }
}

/// The compiled `[csrf]` section.
#[derive(Debug)]
pub struct CsrfPolicy {
    /// What is checked.
    pub mode: Mode,
    /// Origins allowed besides the request's own (`scheme://host[:port]`,
    /// lowercase, default port omitted; see [`normalize_origin`]).
    pub trusted_origins: Vec<String>,
    /// Whether `Sec-Fetch-Site: same-site` passes.
    pub allow_same_site: bool,
    /// Requests with neither `Sec-Fetch-Site` nor `Origin`.
    pub missing_origin: MissingOrigin,
    /// The token cookie's name, when configured; else [`COOKIE_HTTPS`] or
    /// [`COOKIE_HTTP`] by scheme.
    pub cookie: Option<String>,
    /// The token header.
    pub header: HeaderName,
    /// Authentication methods whose requests are not checked (no ambient
    /// credential a browser would attach to a forged request).
    pub exempt: Methods,
    /// The signing key.
    pub key: CsrfKey,
}

/// What [`CsrfPolicy::verify`] reads from a request.
#[derive(Debug, Clone, Copy)]
pub struct CsrfRequest<'a> {
    /// The method.
    pub method: &'a Method,
    /// The headers.
    pub headers: &'a HeaderMap,
    /// The effective scheme (`https` on a TLS listener or when a trusted
    /// proxy says so), lowercase.
    pub scheme: &'a str,
    /// The request's host with port as sent (URI authority or `Host`).
    pub host: Option<&'a str>,
    /// The caller's session id, when authenticated by a session.
    pub session: Option<&'a str>,
}

/// Whether `method` is safe (RFC 9110 §9.2.1) and needs no CSRF check.
#[must_use]
pub fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE)
}

/// `scheme://host[:port]`, lowercase, without the scheme's default port,
/// or `None` if `text` is not an http(s) origin (a path, user info, query
/// or anything but a host and port is refused).
#[must_use]
pub fn normalize_origin(text: &str) -> Option<String> {
    let (scheme, authority) = text.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "https" => "443",
        "http" => "80",
        _ => return None,
    };
    let authority = authority.strip_suffix('/').unwrap_or(authority);
    host_port(authority, default_port).map(|host| format!("{scheme}://{host}"))
}

/// `host[:port]` lowercase without the default port, if well formed.
fn host_port(authority: &str, default_port: &str) -> Option<String> {
    if authority.is_empty() || !authority.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._:[]".contains(&b)) {
        return None;
    }
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (v6, after) = rest.split_once(']')?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':')?),
        };
        (format!("[{v6}]"), port)
    } else {
        match authority.split_once(':') {
            Some((host, port)) => (host.to_owned(), Some(port)),
            None => (authority.to_owned(), None),
        }
    };
    if host.is_empty() || host == "[]" || (!host.starts_with('[') && host.contains(['[', ']'])) {
        return None;
    }
    let host = host.to_ascii_lowercase();
    match port {
        None => Some(host),
        Some(p) if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) || p.len() > 5 => None,
        Some(p) if p == default_port => Some(host),
        Some(p) => Some(format!("{host}:{p}")),
    }
}

/// The one value of header `name`, `Err` if it is sent twice or is not text.
fn single<'h>(headers: &'h HeaderMap, name: &HeaderName) -> Result<Option<&'h str>, ()> {
    let mut values = headers.get_all(name).iter();
    let Some(first) = values.next() else { return Ok(None) };
    if values.next().is_some() {
        return Err(());
    }
    first.to_str().map(|v| Some(v.trim())).map_err(|_| ())
}

fn quoted(text: &str) -> Cow<'_, str> {
    if text.len() <= MAX_QUOTED && text.chars().all(|c| c.is_ascii_graphic()) {
        return Cow::Borrowed(text);
    }
    Cow::Owned(text.chars().filter(char::is_ascii_graphic).take(MAX_QUOTED).collect::<String>() + "…")
}

fn origin_denied(detail: String) -> Denied {
    Denied::new(Reason::CsrfOrigin).with_detail(detail)
}

impl CsrfPolicy {
    /// The token cookie's name for a request of `scheme`.
    #[must_use]
    pub fn cookie_name(&self, scheme: &str) -> &str {
        match &self.cookie {
            Some(name) => name,
            None if scheme == "https" => COOKIE_HTTPS,
            None => COOKIE_HTTP,
        }
    }

    /// Whether a request authenticated by `method` is exempt.
    #[must_use]
    pub const fn exempts(&self, method: AuthMethod) -> bool {
        self.exempt.contains(method)
    }

    /// Checks an unsafe request; safe ones always pass.
    ///
    /// # Errors
    /// `csrf.origin`, `csrf.token_missing` or `csrf.token_invalid` (403),
    /// with a detail naming the failed check (never a token).
    pub fn verify(&self, req: &CsrfRequest<'_>) -> Result<(), Denied> {
        if self.mode == Mode::Off || is_safe(req.method) {
            return Ok(());
        }
        self.check_origin(req)?;
        if self.mode == Mode::OriginToken {
            self.check_token(req)?;
        }
        Ok(())
    }

    fn trusted(&self, origin: &str) -> bool {
        normalize_origin(origin).is_some_and(|o| self.trusted_origins.contains(&o))
    }

    fn own_origin(req: &CsrfRequest<'_>) -> Option<String> {
        let default_port = if req.scheme == "https" { "443" } else { "80" };
        let host = host_port(req.host?, default_port)?;
        Some(format!("{}://{host}", req.scheme))
    }

    /// The same-origin check.
    ///
    /// # Errors
    /// `csrf.origin`.
    pub fn check_origin(&self, req: &CsrfRequest<'_>) -> Result<(), Denied> {
        let fetch_site = single(req.headers, &SEC_FETCH_SITE)
            .map_err(|()| origin_denied("Sec-Fetch-Site sent twice or not text".into()))?;
        let origin =
            single(req.headers, &header::ORIGIN).map_err(|()| origin_denied("Origin sent twice or not text".into()))?;
        if origin == Some("null") {
            return Err(origin_denied("Origin: null (sandboxed or opaque origin)".into()));
        }
        if let Some(site) = fetch_site {
            return match site {
                "same-origin" | "none" => Ok(()),
                "same-site" if self.allow_same_site => Ok(()),
                "same-site" | "cross-site" => match origin {
                    Some(o) if self.trusted(o) => Ok(()),
                    Some(o) => {
                        Err(origin_denied(format!("Sec-Fetch-Site: {site} from untrusted origin {}", quoted(o))))
                    }
                    None => Err(origin_denied(format!("Sec-Fetch-Site: {site}"))),
                },
                other => Err(origin_denied(format!("unknown Sec-Fetch-Site {}", quoted(other)))),
            };
        }
        let (claimed, what) = match origin {
            Some(o) => (o.to_owned(), "Origin"),
            None => match self.missing_origin {
                MissingOrigin::Refuse => {
                    return Err(origin_denied("neither Sec-Fetch-Site nor Origin".into()));
                }
                MissingOrigin::Referer => {
                    let referer = single(req.headers, &header::REFERER)
                        .ok()
                        .flatten()
                        .ok_or_else(|| origin_denied("neither Sec-Fetch-Site, Origin nor Referer".into()))?;
                    let origin = referer_origin(referer)
                        .ok_or_else(|| origin_denied(format!("unusable Referer {}", quoted(referer))))?;
                    (origin, "Referer")
                }
            },
        };
        let normalized = normalize_origin(&claimed);
        let own = Self::own_origin(req);
        match normalized {
            Some(n) if own.as_ref() == Some(&n) || self.trusted_origins.contains(&n) => Ok(()),
            _ => Err(origin_denied(format!(
                "{what} {} is neither this site ({}) nor trusted",
                quoted(&claimed),
                own.as_deref().unwrap_or("unknown: no usable Host")
            ))),
        }
    }

    /// Whether the request carries a token cookie valid for its binding (a
    /// safe request without one gets a new cookie).
    #[must_use]
    pub fn has_valid_cookie(&self, headers: &HeaderMap, scheme: &str, session: Option<&str>) -> bool {
        cookie_values(headers, self.cookie_name(scheme)).any(|v| self.key.verifies(v, session))
    }

    /// The double-submit check.
    ///
    /// # Errors
    /// `csrf.token_missing` or `csrf.token_invalid`.
    pub fn check_token(&self, req: &CsrfRequest<'_>) -> Result<(), Denied> {
        let name = self.cookie_name(req.scheme);
        let header = single(req.headers, &self.header)
            .map_err(|()| Denied::new(Reason::CsrfTokenInvalid).with_detail("token header sent twice or not text"))?
            .filter(|v| !v.is_empty());
        let mut cookies = cookie_values(req.headers, name).peekable();
        let Some(header) = header else {
            return Err(Denied::new(Reason::CsrfTokenMissing).with_detail(format!("no {} header", self.header)));
        };
        if cookies.peek().is_none() {
            return Err(Denied::new(Reason::CsrfTokenMissing).with_detail(format!("no {name} cookie")));
        }
        // A tossed duplicate cookie must not hide the real one: any cookie of
        // the name may match. Each comparison is constant time; which one
        // matched says nothing about the secret.
        let matched =
            cookies.any(|value| constant_time::verify_slices_are_equal(value.as_bytes(), header.as_bytes()).is_ok());
        if !matched {
            return Err(
                Denied::new(Reason::CsrfTokenInvalid).with_detail(format!("header does not match the {name} cookie"))
            );
        }
        if !self.key.verifies(header, req.session) {
            let detail = if req.session.is_some() {
                "token not signed by the gateway for this session"
            } else {
                "token not signed by the gateway"
            };
            return Err(Denied::new(Reason::CsrfTokenInvalid).with_detail(detail));
        }
        Ok(())
    }

    /// The `Set-Cookie` value carrying `token` to a client on `scheme`:
    /// readable by the page's scripts (it must copy it into the header),
    /// `SameSite=Strict`, `Path=/`, `Secure` on HTTPS.
    #[must_use]
    pub fn set_cookie(&self, token: &str, scheme: &str) -> Option<HeaderValue> {
        let secure = if scheme == "https" { "; Secure" } else { "" };
        HeaderValue::from_str(&format!("{}={token}; Path=/; SameSite=Strict{secure}", self.cookie_name(scheme))).ok()
    }
}

/// `Sec-Fetch-Site` (Fetch Metadata).
pub static SEC_FETCH_SITE: HeaderName = HeaderName::from_static("sec-fetch-site");

/// The origin of a `Referer` URL.
fn referer_origin(referer: &str) -> Option<String> {
    let uri: Uri = referer.parse().ok()?;
    let scheme = uri.scheme_str()?;
    let authority = uri.authority()?;
    if authority.as_str().contains('@') {
        return None;
    }
    normalize_origin(&format!("{scheme}://{authority}"))
}

/// Every value of the cookie `name` in the request's `Cookie` headers
/// (parsed by [`crate::cookies`]).
pub fn cookie_values<'h>(headers: &'h HeaderMap, name: &'h str) -> impl Iterator<Item = &'h str> + 'h {
    crate::cookies::values(headers, name)
}

#[cfg(test)]
mod tests;
