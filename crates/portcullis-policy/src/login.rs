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
//! - Account names are put in Unicode compatibility form (NFKC: `ａｄｍｉｎ`
//!   is `admin`), trimmed and lower-cased before they are counted, then kept
//!   only as a fingerprint ([`account_fingerprint`]): the name itself is
//!   never stored or logged. A backend that folds less than this shares a
//!   count between look-alike names; one that folds more would let each
//!   spelling count apart, so the gateway folds generously.
//! - Where the account name is read ([`AccountSource`]): a JSON body field
//!   (dotted path), a form field or a header. A body field is looked for in
//!   both encodings, JSON and `application/x-www-form-urlencoded`, because
//!   Express/NestJS accept either on the same route; a body that is neither,
//!   or lacks the field, has no account (the address still counts). A UTF-8
//!   byte order mark before the body is skipped, as Express does.
//! - A request whose account the gateway cannot read the way the upstream
//!   would is [`Unreadable`] and refused rather than counted by address
//!   only: a compressed body (Express inflates gzip, deflate and br), a
//!   charset other than UTF-8 or ISO-8859-1 (a Latin-1 form is decoded as
//!   Latin-1, as body-parser does), a body that starts like JSON but does
//!   not parse (Node reads `"\ud800"` and `1e400`; Express's form parser
//!   reads `{&username=a`), the field given twice (`username=a&username=b`
//!   reaches the backend as an array) or as something other than a string
//!   or a whole number JavaScript reads exactly (`username[$ne]=x`,
//!   `{"username":["admin"]}`, `9007199254740993`), a header given twice or
//!   not in UTF-8. Legitimate login forms send none of these.
//! - Form keys are read as `qs` (NestJS's form parser) reads them: the part
//!   before the first `[…]` group, then each group (`user[email]` is the
//!   account of `json:user.email`, `[username]` is `username`).
//!
//! Deployment caveat: attempts admitted concurrently, before the failures of
//! earlier ones are recorded, all reach the upstream; pair this with a rate
//! limit keyed by `account` or `ip` on the route, which counts at request
//! time. Behind a proxy, list it in `trusted_proxies`, or every client shares
//! the proxy's address and its failures.

use http::{HeaderMap, HeaderName};
use unicode_normalization::UnicodeNormalization;

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

/// Normalizes a submitted account name (caseless and compatibility form,
/// trimmed) and returns its fingerprint, the only form in which it is stored
/// or logged; `None` for an empty name.
///
/// The form follows Unicode's compatibility caseless match (§3.13, D146)
/// with stringprep's tables (RFC 3454): characters commonly mapped to
/// nothing are dropped (soft hyphen, zero-width spaces and joiners,
/// variation selectors, which databases' collations ignore too), case is
/// folded (lower case character by character, then table B.2: `ß` is `ss`,
/// final sigma is `σ`), NFKC, and the folding repeated once, as NFKC can
/// produce capitals (`ᴬ` is `A`). Found by the `login` fuzz target: `Ϲ` and
/// its lower case fingerprinted apart.
#[must_use]
pub fn account_fingerprint(raw: &str) -> Option<String> {
    let name = fold_account_name(raw);
    (!name.is_empty()).then(|| crate::principal::fingerprint(name.as_bytes()))
}

/// An account name in the form [`account_fingerprint`] hashes (and the
/// built-in accounts store): folded as described there, trimmed.
#[must_use]
pub fn fold_account_name(raw: &str) -> String {
    fn fold(s: &str) -> String {
        s.chars()
            .filter(|c| !stringprep::tables::commonly_mapped_to_nothing(*c))
            .flat_map(char::to_lowercase)
            .flat_map(stringprep::tables::case_fold_for_nfkc)
            .map(|c| if c == 'ς' { 'σ' } else { c })
            .collect()
    }
    let once: String = fold(raw).nfkc().collect();
    let twice: String = fold(&once).nfkc().collect();
    twice.trim().to_owned()
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
    /// A field name with brackets, which Express's form parser reads as a
    /// path (`user[email]` is `user.email`: write `json:user.email`).
    #[error("brackets in {0:?}: Express reads them as a path; name nested fields as json:a.b")]
    Brackets(String),
}

/// Why the account name in a login request cannot be read the way the
/// upstream would read it (the request is refused: `login.unreadable`). The
/// messages never contain the submitted name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unreadable {
    /// A `Content-Encoding` other than `identity`.
    #[error("the body is sent with Content-Encoding {0:?}; a login body must not be compressed")]
    Encoded(String),
    /// A `charset` parameter other than UTF-8 or ISO-8859-1.
    #[error("the body's charset is {0:?}; a login body must be UTF-8 or ISO-8859-1")]
    Charset(String),
    /// A body that starts like JSON but does not parse as JSON (Node may
    /// still read it: a lone surrogate escape, `1e400`; or it is a form
    /// starting with `{`, which Express's form parser reads).
    #[error("the body starts like JSON but does not parse: {0}")]
    Malformed(String),
    /// The account field or header appears more than once.
    #[error("the account {0} appears more than once")]
    Repeated(&'static str),
    /// The account is neither a string nor a safe integer (an array, an
    /// object, a bracketed form key, a boolean, a number JavaScript would
    /// round, a header that is not UTF-8).
    #[error("the account {0} is not a string")]
    NotText(&'static str),
    /// The body is larger than the login's `max_body`.
    #[error("the body is larger than the login's max_body ({0} bytes)")]
    TooLarge(u64),
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
            _ if rest.contains(['[', ']']) => Err(AccountSourceError::Brackets(text.to_owned())),
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
    /// whole body, or `None` when it was not read.
    ///
    /// # Errors
    /// [`Unreadable`] when the upstream could read an account the gateway
    /// cannot: see the module docs.
    pub fn extract(&self, headers: &HeaderMap, body: Option<&[u8]>) -> Result<Option<String>, Unreadable> {
        let path = match self {
            Self::Header(name) => return header_account(headers, name),
            Self::Json(path) => path.as_slice(),
            Self::Form(field) => std::slice::from_ref(field),
        };
        let charset = readable_body(headers)?;
        // Express's body parsers skip a UTF-8 byte order mark; so must we,
        // or a BOM hides the account from counting but not from the login.
        let Some(body) = body.map(|b| b.strip_prefix(b"\xef\xbb\xbf").unwrap_or(b)) else { return Ok(None) };
        match json_field(body, path)? {
            Some(found) => Ok(Some(found)),
            None => form_field(body, path, charset),
        }
    }
}

/// The account in a header, which must be there once and in UTF-8.
fn header_account(headers: &HeaderMap, name: &HeaderName) -> Result<Option<String>, Unreadable> {
    let mut values = headers.get_all(name).iter();
    let Some(value) = values.next() else { return Ok(None) };
    if values.next().is_some() {
        return Err(Unreadable::Repeated("header"));
    }
    value.to_str().map(|v| Some(v.to_owned())).map_err(|_| Unreadable::NotText("header"))
}

/// How a login form body's bytes become text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Charset {
    /// UTF-8, the default.
    Utf8,
    /// ISO-8859-1 (Latin-1), which body-parser also decodes (Apache
    /// HttpClient's form entities declare it by default).
    Latin1,
}

/// Whether a login body can be read as sent: not compressed, and UTF-8 or
/// ISO-8859-1 if it names a charset.
///
/// # Errors
/// [`Unreadable::Encoded`] or [`Unreadable::Charset`].
pub fn readable_body(headers: &HeaderMap) -> Result<Charset, Unreadable> {
    if let Some(coding) = crate::encoding::content_coding(headers) {
        return Err(Unreadable::Encoded(coding));
    }
    let mut charset = Charset::Utf8;
    for name in crate::encoding::charsets(headers) {
        charset = match name.to_ascii_lowercase().as_str() {
            "utf-8" | "utf8" => Charset::Utf8,
            "iso-8859-1" | "latin1" => Charset::Latin1,
            _ => return Err(Unreadable::Charset(name)),
        };
    }
    Ok(charset)
}

/// The account at `path` in a JSON body, as Node's `JSON.parse` reads it
/// (a repeated key: the last one wins). `Ok(None)` for a body that is not
/// JSON (it does not start with `{` or `[`) or has nothing (or `null`) at
/// `path`.
fn json_field(body: &[u8], path: &[String]) -> Result<Option<String>, Unreadable> {
    if !body.iter().find(|b| !b.is_ascii_whitespace()).is_some_and(|b| matches!(b, b'{' | b'[')) {
        return Ok(None);
    }
    let value = serde_json::from_slice::<serde_json::Value>(body).map_err(|e| Unreadable::Malformed(e.to_string()))?;
    let mut at = &value;
    for segment in path {
        let Some(next) = at.as_object().and_then(|o| o.get(segment)) else { return Ok(None) };
        at = next;
    }
    match at {
        serde_json::Value::Null => Ok(None),
        serde_json::Value::String(s) => Ok(Some(s.clone())),
        serde_json::Value::Number(n) => safe_integer(n).map(Some).ok_or(Unreadable::NotText("field")),
        _ => Err(Unreadable::NotText("field")),
    }
}

/// A JSON number that JavaScript reads exactly, as `String(n)` writes it:
/// an integer within ±2^53 (`1e2` and `100.0` are `100`). Anything else
/// (`0.1`, `9007199254740993`, which Node reads as …992) is not an account
/// name the gateway can count the way the upstream does.
fn safe_integer(n: &serde_json::Number) -> Option<String> {
    const SAFE: u64 = 1 << 53;
    if let Some(i) = n.as_i64() {
        return (i.unsigned_abs() <= SAFE).then(|| i.to_string());
    }
    if n.is_u64() {
        return None;
    }
    let f = n.as_f64()?;
    #[allow(clippy::cast_precision_loss)] // 2^53 is exact in an f64
    let safe = SAFE as f64;
    if f.fract() != 0.0 || f.abs() > safe {
        return None;
    }
    #[allow(clippy::cast_possible_truncation)] // integral and within 2^53: exact
    Some((f as i64).to_string())
}

/// The account in a form body, as Express's extended (`qs`) parser, which
/// NestJS uses, builds `req.body`: a key's path is its part before the first
/// `[…]` group and then each group (`user[email]` is `user.email`,
/// `[username]` is `username`). A key whose path is the account's is an
/// occurrence (twice is [`Unreadable::Repeated`]); one that goes deeper
/// (`username[]`, `username[$ne]`) makes the account an array or object.
fn form_field(body: &[u8], path: &[String], charset: Charset) -> Result<Option<String>, Unreadable> {
    let mut found = None;
    for (name, value) in form_pairs(body, charset) {
        let key = qs_path(&name);
        if key.len() < path.len() || key.iter().zip(path).any(|(k, p)| k != p) {
            continue;
        }
        if key.len() > path.len() {
            return Err(Unreadable::NotText("field"));
        }
        if found.replace(value).is_some() {
            return Err(Unreadable::Repeated("field"));
        }
    }
    Ok(found)
}

/// The decoded name–value pairs of a form body.
fn form_pairs(body: &[u8], charset: Charset) -> Vec<(String, String)> {
    match charset {
        Charset::Utf8 => form_urlencoded::parse(body).map(|(n, v)| (n.into_owned(), v.into_owned())).collect(),
        Charset::Latin1 => {
            let decode = |part: &[u8]| {
                let spaced: Vec<u8> = part.iter().map(|&b| if b == b'+' { b' ' } else { b }).collect();
                percent_encoding::percent_decode(&spaced).map(char::from).collect::<String>()
            };
            body.split(|&b| b == b'&')
                .filter(|pair| !pair.is_empty())
                .map(|pair| {
                    let at = pair.iter().position(|&b| b == b'=').unwrap_or(pair.len());
                    (decode(&pair[..at]), decode(pair.get(at + 1..).unwrap_or_default()))
                })
                .collect()
        }
    }
}

/// The path `qs` gives a form key: the part before the first `[…]` group
/// (when not empty), then the inside of each group, as in `qs`'s
/// `parseKeys` (groups hold no brackets; text between groups is dropped).
fn qs_path(key: &str) -> Vec<&str> {
    let mut groups: Vec<(usize, &str)> = Vec::new();
    let mut at = 0;
    while let Some(open) = key[at..].find('[').map(|i| at + i) {
        match key[open + 1..].find(['[', ']']).map(|i| open + 1 + i) {
            Some(close) if key.as_bytes()[close] == b']' => {
                groups.push((open, &key[open + 1..close]));
                at = close + 1;
            }
            Some(next) => at = next,
            None => break,
        }
    }
    let parent = groups.first().map_or(key, |(open, _)| &key[..*open]);
    let mut path = Vec::with_capacity(groups.len() + 1);
    if !parent.is_empty() || groups.is_empty() {
        path.push(parent);
    }
    path.extend(groups.into_iter().map(|(_, inner)| inner));
    path
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
        assert_eq!(account_fingerprint("ａｄｍｉｎ"), account_fingerprint("admin"), "full-width forms");
        assert_eq!(account_fingerprint("ǅ"), account_fingerprint("dž"), "compatibility ligature");
        assert_eq!(account_fingerprint("e\u{301}"), account_fingerprint("é"), "combining accent");
        assert_eq!(account_fingerprint("\u{2003}bob\u{3000}"), account_fingerprint("bob"), "Unicode spaces");
        assert_eq!(account_fingerprint("\u{1d2c}li"), account_fingerprint("ali"), "a modifier capital");
        assert_eq!(
            account_fingerprint("ad\u{ad}mi\u{200b}n\u{fe0f}"),
            account_fingerprint("admin"),
            "invisible characters"
        );
        assert_eq!(account_fingerprint("STRASSE"), account_fingerprint("stra\u{df}e"), "full case folding");
        // Found by the `login` fuzz target: the lunate capital sigma and its
        // lower case fingerprinted apart (NFKC makes one a capital sigma,
        // whose lower case depends on where it stands).
        for sigma in ["aϹ", "aϲ", "aΣ", "aς", "aΣb", "aϹb"] {
            let plain = sigma.replace(['Ϲ', 'ϲ', 'Σ', 'ς'], "σ");
            assert_eq!(account_fingerprint(sigma), account_fingerprint(&plain), "{sigma}");
        }
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
            ("form:user[email]", Err(AccountSourceError::Brackets("form:user[email]".into()))),
            ("json:a[0]", Err(AccountSourceError::Brackets("json:a[0]".into()))),
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
        let field = Unreadable::NotText("field");
        type Case<'a> = (&'a AccountSource, Option<&'a [u8]>, Result<Option<&'a str>, Unreadable>);
        let cases: &[Case<'_>] = &[
            (&json, Some(br#"{"username":"alice","password":"x"}"#), Ok(Some("alice"))),
            (&json, Some(br#"{"username":42}"#), Ok(Some("42"))),
            (&json, Some(br#"{"username":1e2}"#), Ok(Some("100"))),
            (&json, Some(br#"{"username":100.0}"#), Ok(Some("100"))),
            (&json, Some(br#"{"username":1.5}"#), Err(field.clone())),
            (&json, Some(br#"{"username":9007199254740992}"#), Ok(Some("9007199254740992"))),
            (&json, Some(br#"{"username":9007199254740993}"#), Err(field.clone())),
            (&json, Some(br#"{"username":-0}"#), Ok(Some("0"))),
            (&json, Some(br#"{"username":"admin","p":"\ud800"}"#), Err(Unreadable::Malformed(String::new()))),
            (&json, Some(br#"{"username":"admin","n":1e400}"#), Err(Unreadable::Malformed(String::new()))),
            (&json, Some(b"{&username=admin"), Err(Unreadable::Malformed(String::new()))),
            (&json, Some(b"[username]=admin"), Err(Unreadable::Malformed(String::new()))),
            (&json, Some(br#"{"username":"a","username":"admin"}"#), Ok(Some("admin"))),
            (&json, Some(br#"{"username":null}"#), Ok(None)),
            (&json, Some(br#"{"username":["a"]}"#), Err(field.clone())),
            (&json, Some(br#"{"username":{"$ne":"x"}}"#), Err(field.clone())),
            (&json, Some(br#"{"username":true}"#), Err(field.clone())),
            (&json, Some(br#"{"user":"alice"}"#), Ok(None)),
            (&json, Some(b"{not json"), Err(Unreadable::Malformed(String::new()))),
            (&json, Some(b"not json"), Ok(None)),
            (&json, Some(b"username=bob&password=x"), Ok(Some("bob"))),
            (&json, None, Ok(None)),
            (&nested, Some(br#"{"user":{"email":"a@b.c"}}"#), Ok(Some("a@b.c"))),
            (&nested, Some(br#"{"user":"a@b.c"}"#), Ok(None)),
            (&nested, Some(br#"{"user":{"email":["a@b.c"]}}"#), Err(field.clone())),
            (&nested, Some(b"user.email=x"), Ok(None)),
            (&nested, Some(b"user[email]=carl&password=x"), Ok(Some("carl"))),
            (&nested, Some(b"user[email][]=carl"), Err(field.clone())),
            (&nested, Some(b"user[email]=a&user[email]=b"), Err(Unreadable::Repeated("field"))),
            (&nested, Some(b"user=x"), Ok(None)),
            (&form, Some(b"password=x&username=b%C3%B6b"), Ok(Some("böb"))),
            (&form, Some(b"username=a+b"), Ok(Some("a b"))),
            (&form, Some(b"user%6Eame=frank"), Ok(Some("frank"))),
            (&form, Some(b"usernames=x&username=grace"), Ok(Some("grace"))),
            (&form, Some(b"username=a&username=admin"), Err(Unreadable::Repeated("field"))),
            (&form, Some(b"username[]=admin"), Err(field.clone())),
            (&form, Some(b"username%5B%24ne%5D=x"), Err(field.clone())),
            (&form, Some(b"%5Busername%5D=ivan"), Ok(Some("ivan"))),
            (&form, Some(b"username=a&[username]=b"), Err(Unreadable::Repeated("field"))),
            (&form, Some(b"a[b[username]=x&username=judy"), Ok(Some("judy"))),
            (&form, Some(b"username]=x&username=judy"), Ok(Some("judy"))),
            (&form, Some(b"username[x=1"), Ok(None)),
            (&form, Some(b"username[a]x[b]=1"), Err(field)),
            (&form, Some(br#"{"username":"dave"}"#), Ok(Some("dave"))),
            (&form, Some(br#"{"x":"username=eve"}"#), Ok(None)),
            (&form, Some(b""), Ok(None)),
            (&header, None, Ok(Some("carol"))),
        ];
        let blur = |r: Result<Option<String>, Unreadable>| match r {
            Err(Unreadable::Malformed(_)) => Err(Unreadable::Malformed(String::new())),
            other => other,
        };
        for (source, body, expected) in cases {
            assert_eq!(
                blur(source.extract(&headers, *body)).as_ref().map(Option::as_deref),
                expected.as_ref().map(|e| *e),
                "{source:?} {:?}",
                body.map(String::from_utf8_lossy)
            );
        }
    }

    #[test]
    fn bodies_and_headers_the_upstream_reads_differently_are_unreadable() {
        let json = AccountSource::parse("json:username").unwrap();
        let header = AccountSource::parse("header:x-login").unwrap();
        let body: &[u8] = br#"{"username":"alice"}"#;
        let with = |pairs: &[(&'static str, &[u8])]| {
            let mut headers = HeaderMap::new();
            for (name, value) in pairs {
                headers.append(*name, http::HeaderValue::from_bytes(value).unwrap());
            }
            headers
        };
        type Case<'a> = (&'a [(&'static str, &'a [u8])], Result<Option<&'a str>, Unreadable>);
        let cases: &[Case<'_>] = &[
            (&[("content-type", b"application/json")], Ok(Some("alice"))),
            (&[("content-type", b"application/json; charset=UTF-8")], Ok(Some("alice"))),
            (&[("content-type", b"application/json;charset=\"utf-8\"")], Ok(Some("alice"))),
            (&[("content-encoding", b"identity")], Ok(Some("alice"))),
            (&[("content-encoding", b"gzip")], Err(Unreadable::Encoded("gzip".into()))),
            (&[("content-encoding", b"identity, br")], Err(Unreadable::Encoded("identity, br".into()))),
            (
                &[("content-encoding", b"identity"), ("content-encoding", b"deflate")],
                Err(Unreadable::Encoded("deflate".into())),
            ),
            (
                &[("content-type", b"application/x-www-form-urlencoded; charset=utf-16le")],
                Err(Unreadable::Charset("utf-16le".into())),
            ),
            (&[("content-type", b"application/json; charset=us-ascii")], Err(Unreadable::Charset("us-ascii".into()))),
            (&[("content-type", b"text/plain; Charset=\"latin1\"")], Ok(Some("alice"))),
            (&[("content-type", b"text/plain; charset=windows-1252")], Err(Unreadable::Charset("windows-1252".into()))),
        ];
        for (pairs, expected) in cases {
            let headers = with(pairs);
            assert_eq!(
                json.extract(&headers, Some(body)).as_ref().map(Option::as_deref),
                expected.as_ref().map(|e| *e),
                "{pairs:?}"
            );
        }
        // Unread bodies are refused for their headers too, before any read.
        assert_eq!(
            json.extract(&with(&[("content-encoding", b"gzip")]), None),
            Err(Unreadable::Encoded("gzip".into()))
        );
        // A header account: once, in UTF-8; the body's headers do not matter.
        assert_eq!(
            header.extract(&with(&[("x-login", b"a"), ("content-encoding", b"gzip")]), None),
            Ok(Some("a".into()))
        );
        assert_eq!(
            header.extract(&with(&[("x-login", b"a"), ("x-login", b"b")]), None),
            Err(Unreadable::Repeated("header"))
        );
        assert_eq!(header.extract(&with(&[("x-login", b"\xe1dmin")]), None), Err(Unreadable::NotText("header")));
        assert_eq!(header.extract(&with(&[]), None), Ok(None));
    }

    /// Found by the `login` fuzz target: a UTF-8 byte order mark before a
    /// JSON body hid the account from counting while Express's body parser
    /// skips it and logs the attempt in; per-account backoff was bypassed.
    #[test]
    fn a_byte_order_mark_does_not_hide_the_account() {
        let json = AccountSource::parse("json:username").unwrap();
        let form = AccountSource::parse("form:username").unwrap();
        let headers = HeaderMap::new();
        assert_eq!(json.extract(&headers, Some(b"\xef\xbb\xbf{\"username\":\"alice\"}")), Ok(Some("alice".into())));
        assert_eq!(form.extract(&headers, Some(b"\xef\xbb\xbfusername=bob")), Ok(Some("bob".into())));
        assert_eq!(form.extract(&headers, Some(b"\xef\xbb\xbf{\"username\":\"eve\"}")), Ok(Some("eve".into())));
    }

    /// Apache HttpClient's form entities declare ISO-8859-1, which
    /// body-parser decodes: such a body is read byte for character.
    #[test]
    fn latin1_forms_are_read_as_latin1() {
        let form = AccountSource::parse("form:username").unwrap();
        let mut headers = HeaderMap::new();
        headers.insert("content-type", "application/x-www-form-urlencoded; charset=ISO-8859-1".parse().unwrap());
        assert_eq!(form.extract(&headers, Some(b"username=ren%E9&password=x")), Ok(Some("ren\u{e9}".into())));
        assert_eq!(form.extract(&headers, Some(b"username=a+b")), Ok(Some("a b".into())));
        assert_eq!(form.extract(&headers, Some(b"username=%C3%A9")), Ok(Some("\u{c3}\u{a9}".into())));
        assert_eq!(form.extract(&headers, Some(b"username=x&username=y")), Err(Unreadable::Repeated("field")));
    }
}
