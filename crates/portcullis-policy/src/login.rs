//! Login brute-force protection: exponential backoff after repeated failed
//! logins, counted separately per submitted account name and per client.
//!
//! Defends against password guessing on one account (from one address or
//! spread over many: a distributed attack) and against credential stuffing
//! (many account names tried from one address). A failure is what the
//! upstream answers for a wrong password (401/403 by default), so the
//! gateway needs no knowledge of the backend's accounts.
//!
//! Decision rules:
//! - Each key (one account name, one client address) keeps
//!   `(failures, last failure, blocked until)`. Failures are forgotten once
//!   `window` has passed without a new one, counted from the end of the last
//!   wait (so sitting out a long wait does not also wipe the count).
//! - After the n-th failure within the window, when `n ≥ free`, the next
//!   attempt must wait `min(max_backoff, backoff · 2^(n − free))`: with
//!   `free = 5` five failures pass undelayed, then 1 s, 2 s, 4 s, …
//! - Attempts during a wait are refused without reaching the upstream; they
//!   are not failures and do not extend the wait. A failure recorded during a
//!   wait (an attempt admitted before it began) never shortens it.
//! - A successful login resets the account's key, never the address's: one
//!   valid account must not let an attacker clear their address.
//! - Account names are trimmed and lower-cased (Unicode) before they are
//!   counted, then kept only as a fingerprint ([`account_fingerprint`]): the
//!   name itself is never stored or logged.
//! - Where the account name is read ([`AccountSource`]): a JSON body field
//!   (dotted path), a form field or a header. A body field is looked for in
//!   both encodings, JSON and `application/x-www-form-urlencoded`, because
//!   Express/NestJS accept either on the same route; a body that is neither,
//!   or lacks the field, has no account (the address still counts). A UTF-8
//!   byte order mark before the body is skipped, as Express does.
//!
//! Deployment caveat: attempts admitted concurrently, before the failures of
//! earlier ones are recorded, all reach the upstream; pair this with a rate
//! limit keyed by `account` or `ip` on the route, which counts at request
//! time. Behind a proxy, list it in `trusted_proxies`, or every client shares
//! the proxy's address and its failures.

use http::{HeaderMap, HeaderName};

/// The backoff rules of one kind of key (account names or addresses).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Failures within the window that pass without any wait.
    pub free: u32,
    /// Failures are forgotten after this long without a new one (ns).
    pub window_nanos: u64,
    /// The first wait (ns); doubles with each further failure.
    pub backoff_nanos: u64,
    /// The longest wait (ns).
    pub max_backoff_nanos: u64,
}

/// What a key remembers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct State {
    /// Failures counted in the current window.
    pub failures: u32,
    /// When the last failure was recorded (Unix ns).
    pub last_failure: u64,
    /// Attempts before this (Unix ns) are refused; 0 when none are.
    pub blocked_until: u64,
}

/// A key's standing at some instant: what a store reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Standing {
    /// Failures counted in the current window.
    pub failures: u32,
    /// How long attempts must still wait (ns); 0 when they may proceed.
    pub wait_nanos: u64,
}

impl Standing {
    /// Whether an attempt may proceed now.
    #[must_use]
    pub const fn open(&self) -> bool {
        self.wait_nanos == 0
    }
}

impl Backoff {
    /// The wait after `over` failures beyond the free ones (0: the first).
    #[must_use]
    pub fn delay(&self, over: u32) -> u64 {
        let factor = 1u64.checked_shl(over.min(63)).unwrap_or(u64::MAX);
        self.backoff_nanos.saturating_mul(factor).min(self.max_backoff_nanos)
    }

    /// Whether `state` is forgotten at `now`.
    #[must_use]
    pub fn expired(&self, state: &State, now: u64) -> bool {
        now.saturating_sub(state.last_failure.max(state.blocked_until)) > self.window_nanos
    }

    /// The standing of a key in `state` at `now`.
    #[must_use]
    pub fn standing(&self, state: Option<&State>, now: u64) -> Standing {
        match state {
            Some(s) if !self.expired(s, now) => {
                Standing { failures: s.failures, wait_nanos: s.blocked_until.saturating_sub(now) }
            }
            _ => Standing::default(),
        }
    }

    /// The state after a failure at `now`.
    #[must_use]
    pub fn fail(&self, state: Option<&State>, now: u64) -> State {
        let (failures, blocked) = match state {
            Some(s) if !self.expired(s, now) => (s.failures.saturating_add(1), s.blocked_until),
            _ => (1, 0),
        };
        let blocked_until = if failures >= self.free {
            blocked.max(now.saturating_add(self.delay(failures - self.free)))
        } else {
            blocked
        };
        State { failures, last_failure: now, blocked_until }
    }

    /// How long a store must keep `state` after `now` (ns): until the window
    /// after its last failure or wait has passed.
    #[must_use]
    pub fn ttl(&self, state: &State, now: u64) -> u64 {
        state.last_failure.max(state.blocked_until).saturating_add(self.window_nanos).saturating_sub(now)
    }
}

/// Normalizes a submitted account name (trimmed, Unicode lower case) and
/// returns its fingerprint, the only form in which it is stored or logged;
/// `None` for an empty name.
#[must_use]
pub fn account_fingerprint(raw: &str) -> Option<String> {
    let name = raw.trim().to_lowercase();
    (!name.is_empty()).then(|| crate::principal::fingerprint(name.as_bytes()))
}

/// Where a login request carries the account name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccountSource {
    /// A JSON body field: `json:username`, `json:user.email`.
    Json(Vec<String>),
    /// A form body field: `form:username`.
    Form(String),
    /// A request header: `header:X-Login`.
    Header(HeaderName),
}

/// Why an account source does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccountSourceError {
    /// Not `json:`, `form:` or `header:`.
    #[error("unknown account source {0:?}")]
    Unknown(String),
    /// An empty field or path segment.
    #[error("empty field name in {0:?}")]
    EmptyField(String),
    /// Not a valid header name.
    #[error("invalid header name in {0:?}")]
    Header(String),
}

impl AccountSource {
    /// Parses `json:<field or dotted.path>`, `form:<field>` or `header:<Name>`.
    ///
    /// # Errors
    /// [`AccountSourceError`] when the text is none of those.
    pub fn parse(text: &str) -> Result<Self, AccountSourceError> {
        let text = text.trim();
        let (kind, rest) = text.split_once(':').ok_or_else(|| AccountSourceError::Unknown(text.to_owned()))?;
        let rest = rest.trim();
        match kind.trim() {
            "json" => {
                let path: Vec<String> = rest.split('.').map(str::to_owned).collect();
                if path.iter().any(String::is_empty) {
                    return Err(AccountSourceError::EmptyField(text.to_owned()));
                }
                Ok(Self::Json(path))
            }
            "form" if rest.is_empty() => Err(AccountSourceError::EmptyField(text.to_owned())),
            "form" => Ok(Self::Form(rest.to_owned())),
            "header" => HeaderName::from_bytes(rest.as_bytes())
                .map(Self::Header)
                .map_err(|_| AccountSourceError::Header(text.to_owned())),
            _ => Err(AccountSourceError::Unknown(text.to_owned())),
        }
    }

    /// Whether the account is in the body (which must then be read).
    #[must_use]
    pub const fn reads_body(&self) -> bool {
        !matches!(self, Self::Header(_))
    }

    /// The submitted account name, if the request carries one. `body` is the
    /// whole body, or `None` when it was not read (too large).
    #[must_use]
    pub fn extract(&self, headers: &HeaderMap, body: Option<&[u8]>) -> Option<String> {
        // Express's body parsers skip a UTF-8 byte order mark; so must we,
        // or a BOM hides the account from counting but not from the login.
        let body = body.map(|b| b.strip_prefix(b"\xef\xbb\xbf").unwrap_or(b));
        match self {
            Self::Header(name) => headers.get(name)?.to_str().ok().map(str::to_owned),
            Self::Json(path) => {
                let body = body?;
                json_field(body, path).or_else(|| match path.as_slice() {
                    [field] => form_field(body, field),
                    _ => None,
                })
            }
            Self::Form(field) => {
                let body = body?;
                form_field(body, field).or_else(|| json_field(body, std::slice::from_ref(field)))
            }
        }
    }
}

fn json_field(body: &[u8], path: &[String]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let mut at = &value;
    for segment in path {
        at = at.as_object()?.get(segment)?;
    }
    match at {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn form_field(body: &[u8], field: &str) -> Option<String> {
    // A JSON document is not a form, whatever it happens to contain.
    if body.iter().find(|b| !b.is_ascii_whitespace()).is_some_and(|b| matches!(b, b'{' | b'[')) {
        return None;
    }
    form_urlencoded::parse(body).find(|(name, _)| name == field).map(|(_, value)| value.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;
    const T0: u64 = 1_700_000_000 * S;

    fn rules() -> Backoff {
        Backoff { free: 5, window_nanos: 900 * S, backoff_nanos: S, max_backoff_nanos: 900 * S }
    }

    /// Applies failures at the given offsets (seconds after T0) and returns
    /// the standing after each.
    fn run(rules: Backoff, at: &[u64]) -> Vec<Standing> {
        let mut state: Option<State> = None;
        at.iter()
            .map(|t| {
                let now = T0 + t * S;
                let next = rules.fail(state.as_ref(), now);
                state = Some(next);
                rules.standing(Some(&next), now)
            })
            .collect()
    }

    #[test]
    fn free_failures_then_doubling_waits() {
        let waits: Vec<u64> = run(rules(), &[0, 1, 2, 3, 4, 5, 7, 11, 19]).iter().map(|s| s.wait_nanos / S).collect();
        assert_eq!(waits, [0, 0, 0, 0, 1, 2, 4, 8, 16]);
        let counts: Vec<u32> = run(rules(), &[0, 1, 2]).iter().map(|s| s.failures).collect();
        assert_eq!(counts, [1, 2, 3]);
    }

    #[test]
    fn waits_are_capped() {
        let small = Backoff { free: 1, window_nanos: 3600 * S, backoff_nanos: S, max_backoff_nanos: 10 * S };
        let waits: Vec<u64> = run(small, &[0, 1, 3, 7, 15, 25, 35]).iter().map(|s| s.wait_nanos / S).collect();
        assert_eq!(waits, [1, 2, 4, 8, 10, 10, 10]);
        assert_eq!(small.delay(u32::MAX), 10 * S, "no overflow");
    }

    #[test]
    fn standing_over_time() {
        let r = rules();
        let blocked = State { failures: 6, last_failure: T0, blocked_until: T0 + 2 * S };
        let cases: &[(u64, Standing)] = &[
            (T0, Standing { failures: 6, wait_nanos: 2 * S }),
            (T0 + S, Standing { failures: 6, wait_nanos: S }),
            (T0 + 2 * S, Standing { failures: 6, wait_nanos: 0 }),
            // The window counts from the end of the wait.
            (T0 + 2 * S + 900 * S, Standing { failures: 6, wait_nanos: 0 }),
            (T0 + 2 * S + 900 * S + 1, Standing::default()),
        ];
        for (now, expected) in cases {
            assert_eq!(r.standing(Some(&blocked), *now), *expected, "at {}", now - T0);
        }
        assert_eq!(r.standing(None, T0), Standing::default());
        assert_eq!(r.ttl(&blocked, T0), 902 * S);
        assert_eq!(r.ttl(&blocked, T0 + 903 * S), 0);
    }

    #[test]
    fn failures_are_forgotten_after_the_window() {
        let r = rules();
        let old = State { failures: 9, last_failure: T0, blocked_until: T0 + 16 * S };
        let next = r.fail(Some(&old), T0 + 16 * S + 901 * S);
        assert_eq!((next.failures, next.blocked_until), (1, 0));
        let within = r.fail(Some(&old), T0 + 16 * S + 899 * S);
        assert_eq!(within.failures, 10);
    }

    #[test]
    fn a_failure_during_a_wait_never_shortens_it() {
        let r = Backoff { max_backoff_nanos: 4 * S, ..rules() };
        let long = State { failures: 9, last_failure: T0, blocked_until: T0 + 100 * S };
        let next = r.fail(Some(&long), T0 + S);
        assert_eq!(next.blocked_until, T0 + 100 * S);
        assert_eq!(next.failures, 10);
    }

    #[test]
    fn account_names_are_normalized_then_fingerprinted() {
        let a = account_fingerprint("  Alice@Example.COM ").unwrap();
        assert_eq!(Some(a.clone()), account_fingerprint("alice@example.com"));
        assert_eq!(account_fingerprint("ÄLICE"), account_fingerprint("älice"), "Unicode lower case");
        assert_ne!(Some(a.clone()), account_fingerprint("bob@example.com"));
        assert_eq!(a.len(), 12);
        assert!(!a.contains("alice"));
        assert_eq!(account_fingerprint("   "), None);
    }

    #[test]
    fn account_sources_parse() {
        let cases: &[(&str, Result<AccountSource, AccountSourceError>)] = &[
            ("json:username", Ok(AccountSource::Json(vec!["username".into()]))),
            ("json:user.email", Ok(AccountSource::Json(vec!["user".into(), "email".into()]))),
            ("form:login", Ok(AccountSource::Form("login".into()))),
            ("header:X-Login", Ok(AccountSource::Header(HeaderName::from_static("x-login")))),
            ("json:", Err(AccountSourceError::EmptyField("json:".into()))),
            ("json:a..b", Err(AccountSourceError::EmptyField("json:a..b".into()))),
            ("form:", Err(AccountSourceError::EmptyField("form:".into()))),
            ("header:bad header", Err(AccountSourceError::Header("header:bad header".into()))),
            ("username", Err(AccountSourceError::Unknown("username".into()))),
            ("xml:user", Err(AccountSourceError::Unknown("xml:user".into()))),
        ];
        for (text, expected) in cases {
            assert_eq!(&AccountSource::parse(text), expected, "{text}");
        }
    }

    #[test]
    fn accounts_are_extracted_from_either_body_encoding() {
        let json = AccountSource::parse("json:username").unwrap();
        let nested = AccountSource::parse("json:user.email").unwrap();
        let form = AccountSource::parse("form:username").unwrap();
        let header = AccountSource::parse("header:x-login").unwrap();
        let mut headers = HeaderMap::new();
        headers.insert("x-login", "carol".parse().unwrap());
        type Case<'a> = (&'a AccountSource, Option<&'a [u8]>, Option<&'a str>);
        let cases: &[Case<'_>] = &[
            (&json, Some(br#"{"username":"alice","password":"x"}"#), Some("alice")),
            (&json, Some(br#"{"username":42}"#), Some("42")),
            (&json, Some(br#"{"username":["a"]}"#), None),
            (&json, Some(br#"{"user":"alice"}"#), None),
            (&json, Some(b"{not json"), None),
            (&json, Some(b"username=bob&password=x"), Some("bob")),
            (&json, None, None),
            (&nested, Some(br#"{"user":{"email":"a@b.c"}}"#), Some("a@b.c")),
            (&nested, Some(br#"{"user":"a@b.c"}"#), None),
            (&nested, Some(b"user.email=x"), None),
            (&form, Some(b"password=x&username=b%C3%B6b"), Some("böb")),
            (&form, Some(b"username=a+b"), Some("a b")),
            (&form, Some(br#"{"username":"dave"}"#), Some("dave")),
            (&form, Some(br#"{"x":"username=eve"}"#), None),
            (&form, Some(b""), None),
            (&header, None, Some("carol")),
        ];
        for (source, body, expected) in cases {
            assert_eq!(
                source.extract(&headers, *body).as_deref(),
                *expected,
                "{source:?} {:?}",
                body.map(String::from_utf8_lossy)
            );
        }
    }

    /// Found by the `login` fuzz target: a UTF-8 byte order mark before a
    /// JSON body hid the account from counting while Express's body parser
    /// skips it and logs the attempt in; per-account backoff was bypassed.
    #[test]
    fn a_byte_order_mark_does_not_hide_the_account() {
        let json = AccountSource::parse("json:username").unwrap();
        let form = AccountSource::parse("form:username").unwrap();
        let headers = HeaderMap::new();
        assert_eq!(json.extract(&headers, Some(b"\xef\xbb\xbf{\"username\":\"alice\"}")).as_deref(), Some("alice"));
        assert_eq!(form.extract(&headers, Some(b"\xef\xbb\xbfusername=bob")).as_deref(), Some("bob"));
        assert_eq!(form.extract(&headers, Some(b"\xef\xbb\xbf{\"username\":\"eve\"}")).as_deref(), Some("eve"));
    }
}
