//! The web application firewall: SQL injection, XSS, path traversal, command
//! injection, protocol anomalies and scanners, detected by the OWASP Core
//! Rule Set (CRS v4) running in a ModSecurity-compatible [`Engine`].
//!
//! Decision rules:
//! - An engine runs the request's line, headers and (inspected part of the)
//!   body through CRS phases 1 and 2 and returns a [`Verdict`]: whether CRS
//!   intervened (its inbound anomaly score reached the threshold, rule
//!   949110), the score, and the attack rules that matched.
//! - [`decide`] turns that into a denial with a stable reason code named after
//!   the attack class (`waf.sqli`, `waf.xss`, `waf.lfi`, …), carrying a
//!   [`WafReport`] (rule ids, score, where each matched and a short,
//!   secret-free snippet) for the event. The client sees the reason code and
//!   the request id only.
//! - In detection-only mode the same denial is logged and the request passes.
//! - Rule sets are assembled by [`crs`] and loaded fail-closed: a rule the
//!   engine cannot load fully is a start-up error unless its id is allowed,
//!   and every loaded engine must pass the [`canary`] set (obvious attacks
//!   detected, plain requests left alone) before it may serve.
//!
//! Deployment caveat: CRS matches patterns, it does not understand the
//! backend. It misses attacks it has no pattern for and flags unusual but
//! legitimate input; run new routes in `detect` mode first and add
//! exclusions for what it flags wrongly.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use bytes::Bytes;
use serde::Serialize;

use crate::{Denied, Reason};

pub mod body;
pub mod canary;
pub mod crs;
#[cfg(feature = "libmodsecurity")]
pub mod libmodsec;
pub mod native;
pub mod zentinel;

/// One request as the WAF sees it.
#[derive(Debug, Clone)]
pub struct WafRequest {
    /// `GET`, `POST`, …
    pub method: String,
    /// The request target as the client sent it: path and query.
    pub uri: String,
    /// `HTTP/1.1`, `HTTP/2.0`.
    pub version: &'static str,
    /// Headers in order, names as received (lower-case with HTTP/2).
    pub headers: Vec<(String, String)>,
    /// The body, or the part of it within the inspection limit.
    pub body: Bytes,
    /// Whether `body` is the whole body (false: a prefix, cut at the
    /// inspection limit with `over_limit = "pass"`).
    pub body_complete: bool,
    /// The client's address.
    pub client_ip: IpAddr,
    /// The client's port.
    pub client_port: u16,
}

impl WafRequest {
    /// The request as the engine sees it: `target` as the client sent it
    /// (before path normalization: CRS decodes on its own and looks for the
    /// traversal sequences normalization removes), a `Host` header from the
    /// target's authority when the request has none (HTTP/2, absolute-form),
    /// then every header in order, values as text with invalid UTF-8
    /// replaced (ASCII is never lost).
    #[must_use]
    pub fn new(
        method: &http::Method,
        target: &http::Uri,
        version: http::Version,
        headers: &http::HeaderMap,
        body: Bytes,
        client: std::net::SocketAddr,
    ) -> Self {
        let uri = target.path_and_query().map_or_else(|| target.path().to_owned(), |pq| pq.as_str().to_owned());
        let mut list: Vec<(String, String)> = Vec::with_capacity(headers.len() + 1);
        if !headers.contains_key(http::header::HOST)
            && let Some(authority) = target.authority()
        {
            list.push(("Host".to_owned(), authority.as_str().to_owned()));
        }
        for (name, value) in headers {
            list.push((name.as_str().to_owned(), String::from_utf8_lossy(value.as_bytes()).into_owned()));
        }
        Self {
            method: method.as_str().to_owned(),
            uri,
            version: version_name(version),
            headers: list,
            body,
            body_complete: true,
            client_ip: client.ip(),
            client_port: client.port(),
        }
    }
}

/// One response as the WAF sees it.
#[derive(Debug, Clone)]
pub struct WafResponse {
    /// The status code.
    pub status: u16,
    /// `HTTP/1.1`, `HTTP/2.0`.
    pub version: &'static str,
    /// Headers in order, values as text with invalid UTF-8 replaced.
    pub headers: Vec<(String, String)>,
    /// The body (or its first part, up to the inspection limit); `None`
    /// when the body is not inspected (its type is not one inspected, it is
    /// compressed, or there is none).
    pub body: Option<Bytes>,
}

impl WafResponse {
    /// The response head as the engine sees it, with `body`.
    #[must_use]
    pub fn new(
        status: http::StatusCode,
        version: http::Version,
        headers: &http::HeaderMap,
        body: Option<Bytes>,
    ) -> Self {
        Self {
            status: status.as_u16(),
            version: version_name(version),
            headers: headers
                .iter()
                .map(|(n, v)| (n.as_str().to_owned(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
                .collect(),
            body,
        }
    }
}

/// `HTTP/1.1` and its siblings, as ModSecurity spells them.
const fn version_name(version: http::Version) -> &'static str {
    match version {
        http::Version::HTTP_09 => "HTTP/0.9",
        http::Version::HTTP_10 => "HTTP/1.0",
        http::Version::HTTP_2 => "HTTP/2.0",
        http::Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/1.1",
    }
}

/// A request's inspection, kept by an engine that inspects responses so
/// that the response phases continue the same transaction (what the
/// request's rules set and removed). Opaque outside the engine.
pub struct Transaction(Box<dyn std::any::Any + Send>);

impl fmt::Debug for Transaction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Transaction")
    }
}

/// A rule that matched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuleMatch {
    /// The CRS rule id (942100 …).
    pub id: u32,
    /// Where it matched: `ARGS:id`, `REQUEST_HEADERS:User-Agent`, `REQUEST_FILENAME`.
    pub location: String,
    /// What it matched, truncated and with secrets withheld ([`snippet`]).
    pub snippet: String,
}

/// What an engine found in one request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verdict {
    /// The rule set intervened (the anomaly score reached the threshold).
    pub intervened: bool,
    /// The inbound anomaly score, when the engine exposes it.
    pub score: Option<i32>,
    /// The attack rules that matched, in evaluation order.
    pub matches: Vec<RuleMatch>,
}

impl Verdict {
    /// Whether anything looked like an attack, intervention or not.
    #[must_use]
    pub fn detected(&self) -> bool {
        self.intervened || self.score.is_some_and(|s| s > 0) || !self.matches.is_empty()
    }
}

/// An engine failed on a request (not a detection: a malfunction).
#[derive(Debug, thiserror::Error)]
#[error("WAF engine failed: {0}")]
pub struct EngineError(pub String);

/// A ModSecurity-compatible rule engine loaded with a rule set.
pub trait Engine: Send + Sync + fmt::Debug {
    /// The engine's name for logs and events (`zentinel`, `libmodsecurity`).
    fn name(&self) -> &'static str;

    /// Runs the request through request phases 1 and 2.
    ///
    /// # Errors
    /// The engine could not process the request.
    fn inspect(&self, request: &WafRequest) -> Result<Verdict, EngineError>;

    /// Whether the loaded rules inspect responses (phases 3 and 4).
    fn inspects_responses(&self) -> bool {
        false
    }

    /// Whether inspecting a small request costs tens of microseconds, not
    /// milliseconds, so the gateway may run it on the thread serving the
    /// connection rather than hand it to an inspection worker and back.
    fn runs_inline(&self) -> bool {
        false
    }

    /// Inspects the request and keeps its transaction for
    /// [`inspect_response`](Self::inspect_response).
    ///
    /// # Errors
    /// The engine could not process the request.
    fn begin(&self, request: &WafRequest) -> Result<(Verdict, Option<Transaction>), EngineError> {
        Ok((self.inspect(request)?, None))
    }

    /// Runs the response through phases 3 and 4, continuing `transaction`
    /// (without one, as when the request's verdict came from the cache, the
    /// request phases run again first). The verdict's score is the outbound
    /// anomaly score; its matches are the leak rules (950xxx–956xxx).
    ///
    /// # Errors
    /// The engine does not inspect responses, or failed on this one.
    fn inspect_response(
        &self,
        request: &WafRequest,
        transaction: Option<Transaction>,
        response: &WafResponse,
    ) -> Result<Verdict, EngineError> {
        let _ = (request, transaction, response);
        Err(EngineError(format!("the {} engine does not inspect responses", self.name())))
    }
}

/// Which engine runs the rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EngineKind {
    /// Portcullis's own engine (`portcullis-waf`): pure Rust, always built, the default.
    Portcullis,
    /// `zentinel-modsec`: pure Rust, always built.
    Zentinel,
    /// libmodsecurity 3 through the `modsecurity` crate (cargo feature `libmodsecurity`).
    Libmodsecurity,
}

impl EngineKind {
    /// The configuration spelling.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Portcullis => "portcullis",
            Self::Zentinel => "zentinel",
            Self::Libmodsecurity => "libmodsecurity",
        }
    }

    /// Whether this build includes the engine.
    #[must_use]
    pub const fn available(self) -> bool {
        match self {
            Self::Portcullis | Self::Zentinel => true,
            Self::Libmodsecurity => cfg!(feature = "libmodsecurity"),
        }
    }
}

/// A rule set could not be loaded, or loaded but failed its canary.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The rule directory is unusable.
    #[error("rule directory {path}: {reason}")]
    Directory {
        /// The directory.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The engine refused the rule set.
    #[error("the rule set does not load: {0}")]
    Engine(String),
    /// Rules the engine loaded only partly (they would silently not fire).
    #[error(
        "{} rule(s) do not load fully with this engine and would silently never fire: {}; allow them by id with `allow_load_errors` only if you accept that gap",
        .0.len(),
        .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
    )]
    Rules(Vec<RuleLoadError>),
    /// The engine is not in this build.
    #[error("engine `{0}` is not built in; rebuild with `--features libmodsecurity` (needs libmodsecurity 3)")]
    Unavailable(&'static str),
    /// The loaded rule set failed the canary requests.
    #[error(
        "the loaded rule set fails its canary (refusing to run a WAF that would silently let attacks through or block plain requests): {}",
        .0.join("; ")
    )]
    Canary(Vec<String>),
}

/// One rule the engine could not load fully.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleLoadError {
    /// The rule id, if it has one (chained continuations do not).
    pub id: Option<u32>,
    /// Where it is defined (`file:line`).
    pub location: String,
    /// What the engine cannot do.
    pub problem: String,
}

impl fmt::Display for RuleLoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.id {
            Some(id) => write!(f, "rule {id} at {}: {}", self.location, self.problem),
            None => write!(f, "a rule without id at {}: {}", self.location, self.problem),
        }
    }
}

/// An inclusive range of rule ids (`942100` or `942100-942199`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RuleRange {
    /// First id.
    pub first: u32,
    /// Last id (inclusive).
    pub last: u32,
}

impl RuleRange {
    /// Parses `942100` or `942100-942199`.
    ///
    /// # Errors
    /// Not a number or range, or a range whose end comes before its start.
    pub fn parse(text: &str) -> Result<Self, String> {
        let number = |s: &str| s.trim().parse::<u32>().map_err(|_| format!("`{text}` is not a rule id or id range"));
        let (first, last) = match text.split_once('-') {
            Some((a, b)) => (number(a)?, number(b)?),
            None => {
                let id = number(text)?;
                (id, id)
            }
        };
        if last < first {
            return Err(format!("rule range `{text}` ends before it starts"));
        }
        Ok(Self { first, last })
    }

    /// Whether `id` is in the range.
    #[must_use]
    pub const fn contains(&self, id: u32) -> bool {
        self.first <= id && id <= self.last
    }
}

impl fmt::Display for RuleRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last { write!(f, "{}", self.first) } else { write!(f, "{}-{}", self.first, self.last) }
    }
}

/// A rule exclusion: rules removed entirely, or only for some targets.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Exclusion {
    /// The rules it applies to.
    pub rules: Vec<RuleRange>,
    /// Targets to stop inspecting (`ARGS:comment`, `REQUEST_COOKIES:session`);
    /// empty removes the rules.
    pub targets: Vec<String>,
}

/// How a rule set is tuned: what makes two engines different.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Profile {
    /// CRS blocking paranoia level, 1–4.
    pub paranoia: u8,
    /// CRS inbound anomaly score threshold.
    pub inbound_threshold: u32,
    /// Exclusions applied after the rules load.
    pub exclusions: Vec<Exclusion>,
    /// Rule ids whose partial load is accepted.
    pub allow_load_errors: Vec<RuleRange>,
    /// Load CRS's response rules (`RESPONSE-950` … `RESPONSE-959`: data
    /// leakages and outbound blocking).
    pub responses: bool,
    /// CRS outbound anomaly score threshold (its default: 4, one critical
    /// leak).
    pub outbound_threshold: u32,
}

impl Default for Profile {
    fn default() -> Self {
        Self {
            paranoia: 1,
            inbound_threshold: 5,
            exclusions: Vec::new(),
            allow_load_errors: Vec::new(),
            responses: false,
            outbound_threshold: 4,
        }
    }
}

/// Loads a CRS directory into `kind` with `profile`, then runs the canary.
///
/// # Errors
/// The directory is unusable, a rule does not load fully (and is not
/// allowed), the engine is not built in, or the canary fails.
pub fn load(kind: EngineKind, rules: &std::path::Path, profile: &Profile) -> Result<Arc<dyn Engine>, LoadError> {
    let set = crs::RuleSet::assemble(rules, profile)?;
    let engine: Arc<dyn Engine> = match kind {
        EngineKind::Portcullis => Arc::new(native::Native::load(&set, profile)?),
        EngineKind::Zentinel => Arc::new(zentinel::Zentinel::load(&set, profile)?),
        #[cfg(feature = "libmodsecurity")]
        EngineKind::Libmodsecurity => Arc::new(libmodsec::Libmodsecurity::load(&set, profile)?),
        #[cfg(not(feature = "libmodsecurity"))]
        EngineKind::Libmodsecurity => return Err(LoadError::Unavailable(kind.as_str())),
    };
    canary::check(engine.as_ref())?;
    Ok(engine)
}

/// Verdicts of requests already inspected, keyed by a digest of everything
/// the engine saw (method, target, version, every header in order, the
/// inspected body and the client address).
///
/// The engine's verdict is a function of exactly those inputs (CRS v4 keeps
/// no state between requests), so an identical request — a health check, a
/// poller, a retried call — gets the same verdict without running several
/// hundred rules again. Anything that differs, down to one header byte, is a
/// new key. Keys are SHA-256 over a per-process random salt, so nobody can
/// aim a request at another one's entry.
pub struct VerdictCache {
    entries: quick_cache::sync::Cache<[u8; 32], Verdict>,
    salt: [u8; 16],
}

impl fmt::Debug for VerdictCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerdictCache").field("entries", &self.entries.len()).finish_non_exhaustive()
    }
}

impl VerdictCache {
    /// A cache of at most `capacity` verdicts.
    #[must_use]
    pub fn new(capacity: usize) -> Self {
        let mut salt = [0_u8; 16];
        // Without randomness the salt stays zero: keys remain SHA-256 over
        // the whole input, only predictable.
        let _ = aws_lc_rs::rand::fill(&mut salt);
        Self { entries: quick_cache::sync::Cache::new(capacity.max(1)), salt }
    }

    /// The key of `request`.
    #[must_use]
    pub fn key(&self, request: &WafRequest) -> [u8; 32] {
        let mut digest = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        let mut field = |bytes: &[u8]| {
            digest.update(&(bytes.len() as u64).to_be_bytes());
            digest.update(bytes);
        };
        field(&self.salt);
        field(request.method.as_bytes());
        field(request.uri.as_bytes());
        field(request.version.as_bytes());
        field(request.client_ip.to_string().as_bytes());
        for (name, value) in &request.headers {
            field(name.as_bytes());
            field(value.as_bytes());
        }
        field(b"body");
        field(&[u8::from(request.body_complete)]);
        field(&request.body);
        let mut key = [0_u8; 32];
        key.copy_from_slice(digest.finish().as_ref());
        key
    }

    /// The verdict for `key`, if cached.
    #[must_use]
    pub fn get(&self, key: &[u8; 32]) -> Option<Verdict> {
        self.entries.get(key)
    }

    /// Remembers a verdict.
    pub fn insert(&self, key: [u8; 32], verdict: Verdict) {
        self.entries.insert(key, verdict);
    }
}

/// What the WAF does with a detection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Refuse with 403.
    Block,
    /// Log the detection and let the request through.
    Detect,
}

/// What an event says about a WAF decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WafReport {
    /// The engine that decided.
    pub engine: &'static str,
    /// The inbound anomaly score, when the engine exposes it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub score: Option<i32>,
    /// The attack rules that matched.
    pub matches: Vec<RuleMatch>,
}

/// The decision for one inspected request.
#[derive(Debug)]
pub enum Decision {
    /// Nothing to act on.
    Pass,
    /// Refuse (block mode).
    Block(Denied),
    /// Log and pass (detect mode, or a detection below the threshold).
    Log(Denied),
}

/// Turns a verdict into a decision. A detection that did not reach the
/// threshold passes without an event: CRS scores every request, and one
/// low-scoring match is what the threshold is there to absorb.
#[must_use]
pub fn decide(engine: &'static str, verdict: Verdict, mode: Mode) -> Decision {
    if !verdict.intervened {
        return Decision::Pass;
    }
    let reason = reason_for(&verdict.matches);
    let ids: Vec<String> = verdict.matches.iter().map(|m| m.id.to_string()).collect();
    let detail = match verdict.score {
        Some(score) => format!("anomaly score {score}; rules {}", ids.join(",")),
        None => format!("rules {}", ids.join(",")),
    };
    let report = WafReport { engine, score: verdict.score, matches: verdict.matches };
    let denied = Denied::new(reason).with_detail(detail).with_rule(ids.join(",")).with_waf(report);
    match mode {
        Mode::Block => Decision::Block(denied),
        Mode::Detect => Decision::Log(denied),
    }
}

/// Turns a response verdict into a decision: an intervention is the
/// upstream leaking (`waf.leak`, 502: the response is withheld in block
/// mode, logged and delivered in detect mode).
#[must_use]
pub fn decide_response(engine: &'static str, verdict: Verdict, mode: Mode) -> Decision {
    if !verdict.intervened {
        return Decision::Pass;
    }
    let ids: Vec<String> = verdict.matches.iter().map(|m| m.id.to_string()).collect();
    let detail = match verdict.score {
        Some(score) => format!("response: outbound anomaly score {score}; rules {}", ids.join(",")),
        None => format!("response: rules {}", ids.join(",")),
    };
    let report = WafReport { engine, score: verdict.score, matches: verdict.matches };
    let denied = Denied::new(Reason::WafLeak).with_detail(detail).with_rule(ids.join(",")).with_waf(report);
    match mode {
        Mode::Block => Decision::Block(denied),
        Mode::Detect => Decision::Log(denied),
    }
}

/// The attack class CRS files its rules under, by id range.
#[must_use]
pub fn category(id: u32) -> Option<Reason> {
    Some(match id / 1000 {
        911 => Reason::WafMethod,
        913 => Reason::WafScanner,
        920..=922 => Reason::WafProtocol,
        930 => Reason::WafLfi,
        931 => Reason::WafRfi,
        932 => Reason::WafRce,
        933 => Reason::WafPhp,
        934 => Reason::WafGeneric,
        941 => Reason::WafXss,
        942 => Reason::WafSqli,
        943 => Reason::WafSessionFixation,
        944 => Reason::WafJava,
        950..=956 => Reason::WafLeak,
        // Portcullis's own leak rules (`crs::LEAK_RULES`).
        200 if id >= 200_100 => Reason::WafLeak,
        _ => return None,
    })
}

/// The reason for a set of matches: the most frequent attack class (an
/// injection outranks the protocol and scanner rules that often fire with
/// it), ties going to the first seen.
fn reason_for(matches: &[RuleMatch]) -> Reason {
    let mut counts: Vec<(Reason, usize, bool)> = Vec::new();
    for reason in matches.iter().filter_map(|m| category(m.id)) {
        let minor = matches!(reason, Reason::WafProtocol | Reason::WafScanner | Reason::WafMethod);
        match counts.iter_mut().find(|(r, _, _)| *r == reason) {
            Some(entry) => entry.1 += 1,
            None => counts.push((reason, 1, minor)),
        }
    }
    let mut best: Option<(Reason, usize, bool)> = None;
    for entry in counts {
        let better = match best {
            None => true,
            Some((_, n, minor)) => (minor && !entry.2) || (minor == entry.2 && entry.1 > n),
        };
        if better {
            best = Some(entry);
        }
    }
    best.map_or(Reason::WafAnomaly, |(r, _, _)| r)
}

/// Longest snippet kept, in characters.
pub const SNIPPET_CHARS: usize = 64;

/// What an event may show of a matched value: at most [`SNIPPET_CHARS`]
/// printable characters, and nothing at all from locations that carry
/// credentials (authorization headers, cookies, fields named like secrets).
#[must_use]
pub fn snippet(location: &str, value: &str) -> String {
    if is_secret_location(location) {
        return "[withheld]".to_owned();
    }
    let mut out: String = value.chars().filter(|c| !c.is_control()).take(SNIPPET_CHARS).collect();
    if value.chars().filter(|c| !c.is_control()).nth(SNIPPET_CHARS).is_some() {
        out.push('…');
    }
    out
}

/// Whether a ModSecurity location names a credential.
fn is_secret_location(location: &str) -> bool {
    let lower = location.to_ascii_lowercase();
    let (collection, name) = lower.split_once(':').unwrap_or((lower.as_str(), ""));
    if collection.starts_with("request_cookies") || collection == "request_headers_names" && name.is_empty() {
        return true;
    }
    // A leaking response may carry anything: what matched stays out of
    // events (the rule id and message say what kind of leak it was).
    if collection == "response_body"
        || collection == "response_headers" && matches!(name, "set-cookie" | "authorization")
    {
        return true;
    }
    if collection == "request_headers"
        && matches!(name, "authorization" | "proxy-authorization" | "cookie" | "x-api-key" | "x-csrf-token")
    {
        return true;
    }
    const SECRET_WORDS: [&str; 7] = ["pass", "secret", "token", "auth", "key", "session", "credential"];
    collection.starts_with("args") && SECRET_WORDS.iter().any(|w| name.contains(w))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hit(id: u32) -> RuleMatch {
        RuleMatch { id, location: "ARGS:q".into(), snippet: "x".into() }
    }

    #[test]
    fn reasons_follow_the_dominant_attack_class() {
        let cases: &[(&[u32], Reason)] = &[
            (&[942100], Reason::WafSqli),
            (&[920273, 941100, 941160], Reason::WafXss),
            (&[920350, 920273], Reason::WafProtocol),
            (&[913100, 942100], Reason::WafSqli),
            (&[932160, 930120, 930120], Reason::WafLfi),
            (&[932160, 930120], Reason::WafRce),
            (&[999999], Reason::WafAnomaly),
            (&[], Reason::WafAnomaly),
        ];
        for (ids, expected) in cases {
            let matches: Vec<RuleMatch> = ids.iter().map(|&id| hit(id)).collect();
            assert_eq!(reason_for(&matches), *expected, "{ids:?}");
        }
    }

    #[test]
    fn only_interventions_are_decisions() {
        let verdict = Verdict { intervened: false, score: Some(3), matches: vec![hit(942100)] };
        assert!(matches!(decide("t", verdict, Mode::Block), Decision::Pass));
        let verdict = Verdict { intervened: true, score: Some(10), matches: vec![hit(942100), hit(942190)] };
        let Decision::Block(denied) = decide("t", verdict.clone(), Mode::Block) else { panic!("blocks") };
        assert_eq!(denied.reason, Reason::WafSqli);
        assert_eq!(denied.rule.as_deref(), Some("942100,942190"));
        assert_eq!(denied.waf.as_ref().unwrap().score, Some(10));
        assert!(matches!(decide("t", verdict, Mode::Detect), Decision::Log(_)));
    }

    #[test]
    fn snippets_are_short_printable_and_never_secrets() {
        assert_eq!(snippet("ARGS:q", "1' OR '1'='1"), "1' OR '1'='1");
        assert_eq!(snippet("ARGS:q", "a\r\nb"), "ab");
        let long = "x".repeat(200);
        assert_eq!(snippet("ARGS:q", &long).chars().count(), SNIPPET_CHARS + 1);
        for location in [
            "REQUEST_HEADERS:Authorization",
            "REQUEST_COOKIES:sid",
            "REQUEST_COOKIES_NAMES:sid",
            "ARGS:password",
            "ARGS_POST:api_key",
            "ARGS:json.user.token",
        ] {
            assert_eq!(snippet(location, "hunter2' OR 1=1"), "[withheld]", "{location}");
        }
    }

    #[test]
    fn cache_keys_change_with_every_input() {
        let cache = VerdictCache::new(10);
        let base = WafRequest {
            method: "GET".into(),
            uri: "/a?x=1".into(),
            version: "HTTP/1.1",
            headers: vec![("Host".into(), "h".into()), ("Accept".into(), "*/*".into())],
            body: Bytes::new(),
            body_complete: true,
            client_ip: std::net::Ipv4Addr::LOCALHOST.into(),
            client_port: 1,
        };
        let key = cache.key(&base);
        assert_eq!(key, cache.key(&WafRequest { client_port: 2, ..base.clone() }), "the port is not an input");
        let variants = [
            WafRequest { method: "POST".into(), ..base.clone() },
            WafRequest { uri: "/a?x=2".into(), ..base.clone() },
            WafRequest { version: "HTTP/2.0", ..base.clone() },
            WafRequest { headers: vec![("Host".into(), "h".into())], ..base.clone() },
            WafRequest { headers: vec![("Accept".into(), "*/*".into()), ("Host".into(), "h".into())], ..base.clone() },
            WafRequest { headers: vec![("Host".into(), "hA".into()), ("ccept".into(), "*/*".into())], ..base.clone() },
            WafRequest { body: Bytes::from_static(b"x"), ..base.clone() },
            WafRequest { body_complete: false, ..base.clone() },
            WafRequest { client_ip: std::net::Ipv4Addr::new(10, 0, 0, 1).into(), ..base.clone() },
        ];
        for variant in variants {
            assert_ne!(cache.key(&variant), key, "{variant:?}");
        }
        assert_ne!(VerdictCache::new(1).key(&base), key, "salted per cache");
        cache.insert(key, Verdict { intervened: true, score: Some(5), matches: vec![] });
        assert!(cache.get(&key).unwrap().intervened);
    }

    #[test]
    fn rule_ranges_parse_and_refuse_nonsense() {
        assert_eq!(RuleRange::parse("942100").unwrap(), RuleRange { first: 942_100, last: 942_100 });
        let range = RuleRange::parse("942100-942199").unwrap();
        assert!(range.contains(942_150) && !range.contains(942_200));
        assert_eq!(range.to_string(), "942100-942199");
        for bad in ["", "abc", "942199-942100", "-5", "1-2-3"] {
            assert!(RuleRange::parse(bad).is_err(), "{bad}");
        }
    }
}
