//! Route matching: which configured route a request belongs to.
//!
//! Every request must match a route; a request that matches none is refused
//! (`route.none`), so nothing is reachable by accident.
//!
//! Decision rules (most specific wins, independent of configuration order):
//! 1. Host: an exact host beats a `*.suffix` wildcard (longer suffix first),
//!    which beats a route with no host.
//! 2. Path, segment by segment from the left: a literal segment beats `{param}`
//!    or `*` (one segment), which beat `**` (the rest, including nothing). A
//!    pattern that ends exactly beats one that continues with `**`.
//! 3. Methods are part of the match: a request whose host and path match a
//!    route but whose method does not falls through to less specific routes;
//!    if none takes it, the answer is `route.method` (405) with `Allow`.
//! 4. Equal specificity: the route listed first wins (`portcullis check`
//!    reports the shadowed one).
//!
//! Matching is on the path as the gateway will forward it. Deployment caveat:
//! until path normalization lands, `/a/../b` is matched literally; do not rely
//! on path rules for authorization yet.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::collections::HashMap;

use http::Method;

/// One path segment of a pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    /// `{name}`: one segment, captured by name.
    Param(String),
    /// `*`: one segment.
    Star,
    /// `**`: any number of segments, including none; only last.
    Rest,
}

/// An error in a path or host pattern.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    /// The path does not start with `/`.
    #[error("a path pattern must start with '/'")]
    NoLeadingSlash,
    /// `**` somewhere other than the last segment.
    #[error("'**' may only be the last segment")]
    RestNotLast,
    /// An empty segment (`//`) in the middle.
    #[error("empty segment ('//') in path pattern")]
    EmptySegment,
    /// A bad `{param}` or a stray brace or wildcard.
    #[error("bad segment {0:?}: use a literal, '{{name}}', '*' or '**'")]
    BadSegment(String),
    /// A host pattern that is not a hostname or `*.suffix`.
    #[error("bad host pattern {0:?}: use 'api.example.com' or '*.example.com'")]
    BadHost(String),
    /// A literal segment that no normalized request path has, so the route
    /// could never match.
    #[error("{}", not_normal_message(.pattern, .suggestion.as_deref()))]
    NotNormal {
        /// The pattern as written.
        pattern: String,
        /// The spelling normalized paths have, when there is one.
        suggestion: Option<String>,
    },
}

fn not_normal_message(pattern: &str, suggestion: Option<&str>) -> String {
    match suggestion {
        Some(s) => format!("{pattern:?} never matches: request paths are normalized first; write {s:?}"),
        None => format!("{pattern:?} never matches: no request path is normalized to it (see [paths])"),
    }
}

/// A compiled path pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathPattern {
    source: String,
    segments: Vec<Segment>,
}

impl PathPattern {
    /// Compiles a pattern such as `/api/orders/{id}` or `/static/**`.
    ///
    /// # Errors
    /// [`PatternError`] naming what is wrong.
    pub fn parse(pattern: &str) -> Result<Self, PatternError> {
        let rest = pattern.strip_prefix('/').ok_or(PatternError::NoLeadingSlash)?;
        let mut segments = Vec::new();
        if !rest.is_empty() {
            let parts: Vec<&str> = rest.split('/').collect();
            let last = parts.len() - 1;
            for (i, part) in parts.iter().enumerate() {
                let segment = match *part {
                    "**" if i == last => Segment::Rest,
                    "**" => return Err(PatternError::RestNotLast),
                    "*" => Segment::Star,
                    "" if i == last => Segment::Literal(String::new()),
                    "" => return Err(PatternError::EmptySegment),
                    p if p.starts_with('{') && p.ends_with('}') => {
                        let name = &p[1..p.len() - 1];
                        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                            return Err(PatternError::BadSegment((*part).to_owned()));
                        }
                        Segment::Param(name.to_owned())
                    }
                    p if p.contains(['{', '}', '*']) => return Err(PatternError::BadSegment(p.to_owned())),
                    p => Segment::Literal(p.to_owned()),
                };
                segments.push(segment);
            }
        }
        Ok(Self { source: pattern.to_owned(), segments })
    }

    /// The pattern for case-insensitive matching: literal segments lower-cased
    /// (escapes such as `%2F` keep their upper-case hex, as normalized paths do).
    #[must_use]
    pub fn folded(&self) -> Self {
        let segments = self
            .segments
            .iter()
            .map(|s| match s {
                Segment::Literal(lit) => Segment::Literal(crate::normalize::fold(lit)),
                other => other.clone(),
            })
            .collect();
        Self { source: self.source.clone(), segments }
    }

    /// The pattern as written.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Whether `path` (starting with `/`, no query) matches.
    #[must_use]
    pub fn matches(&self, path: &str) -> bool {
        let Some(rest) = path.strip_prefix('/') else { return false };
        let mut parts = if rest.is_empty() { None } else { Some(rest.split('/')) };
        for segment in &self.segments {
            if *segment == Segment::Rest {
                return true;
            }
            let Some(part) = parts.as_mut().and_then(Iterator::next) else { return false };
            let ok = match segment {
                Segment::Literal(lit) => lit == part,
                Segment::Param(_) | Segment::Star => !part.is_empty(),
                Segment::Rest => true,
            };
            if !ok {
                return false;
            }
        }
        parts.is_none_or(|mut p| p.next().is_none())
    }

    /// The value of the `{name}` segment in `path`, if the pattern has that
    /// parameter. `path` must be one this pattern matched (possibly in its
    /// case-folded form): the value is taken from `path` as given, so
    /// parameters keep their case when matching is case-insensitive.
    #[must_use]
    pub fn param<'p>(&self, path: &'p str, name: &str) -> Option<&'p str> {
        let index = self.segments.iter().position(|s| matches!(s, Segment::Param(n) if n == name))?;
        path.strip_prefix('/')?.split('/').nth(index)
    }

    /// Checks that requests normalized under `policy` can match the pattern:
    /// every literal segment must be in normal form (no `.` or `..`, escapes
    /// only where normalization keeps them, upper-case, non-ASCII escaped),
    /// and a trailing slash only when trailing slashes are kept. Patterns are
    /// compared with normalized paths, so `/Admin/` (trailing slashes
    /// stripped), `/%61dmin` or `/café` would silently never match and their
    /// requests would fall through to a less specific route.
    ///
    /// # Errors
    /// [`PatternError::NotNormal`], with the spelling to use when there is one.
    pub fn check_normal(&self, policy: &crate::normalize::PathPolicy) -> Result<(), PatternError> {
        use crate::normalize::{TrailingSlash, normalize};
        let mut suggestion = Some(String::new());
        let mut normal = true;
        let last = self.segments.len().saturating_sub(1);
        for (i, segment) in self.segments.iter().enumerate() {
            let spelled = match segment {
                Segment::Literal(lit) if lit.is_empty() && i == last => {
                    let keep = policy.trailing_slash == TrailingSlash::Keep;
                    normal &= keep;
                    Some(if keep { "/" } else { "" }.to_owned())
                }
                Segment::Literal(lit) => {
                    let one = format!("/{lit}");
                    match normalize(&one, policy) {
                        Ok(n) if n == one => Some(one),
                        Ok(n) => {
                            normal = false;
                            // A spelling with pattern syntax in it (`%2A` is
                            // normalized to `*`) cannot be written as a literal.
                            (n.len() > 1 && !n[1..].contains(['/', '{', '}', '*'])).then(|| n.into_owned())
                        }
                        Err(_) => {
                            normal = false;
                            None
                        }
                    }
                }
                Segment::Param(name) => Some(format!("/{{{name}}}")),
                Segment::Star => Some("/*".to_owned()),
                Segment::Rest => Some("/**".to_owned()),
            };
            suggestion = suggestion.zip(spelled).map(|(mut s, one)| {
                s.push_str(&one);
                s
            });
        }
        if normal {
            return Ok(());
        }
        let suggestion = suggestion.filter(|s| !s.is_empty() && *s != self.source && !s.ends_with("//"));
        Err(PatternError::NotNormal { pattern: self.source.clone(), suggestion })
    }

    /// Whether the pattern has a `{name}` parameter.
    #[must_use]
    pub fn has_param(&self, name: &str) -> bool {
        self.segments.iter().any(|s| matches!(s, Segment::Param(n) if n == name))
    }

    /// Specificity rank per segment, ending with a terminator that ranks an
    /// exact end above `**`.
    fn rank(&self) -> Vec<u8> {
        let mut rank: Vec<u8> = self
            .segments
            .iter()
            .map(|s| match s {
                Segment::Literal(_) => 3,
                Segment::Param(_) | Segment::Star => 2,
                Segment::Rest => 1,
            })
            .collect();
        if self.segments.last() != Some(&Segment::Rest) {
            rank.push(4);
        }
        rank
    }
}

/// A compiled host pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    /// Exactly this host (lowercase, no port).
    Exact(String),
    /// Any subdomain of this suffix (stored with its leading dot).
    Suffix(String),
}

impl HostPattern {
    /// Compiles `api.example.com` or `*.example.com`.
    ///
    /// # Errors
    /// [`PatternError::BadHost`].
    pub fn parse(pattern: &str) -> Result<Self, PatternError> {
        let lower = pattern.to_ascii_lowercase();
        let (suffix, host) = match lower.strip_prefix("*.") {
            Some(rest) => (true, rest.to_owned()),
            None => (false, lower.clone()),
        };
        let valid = !host.is_empty()
            && host
                .split('.')
                .all(|label| !label.is_empty() && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
        let is_ip = host.parse::<std::net::IpAddr>().is_ok();
        if !(valid || (is_ip && !suffix)) {
            return Err(PatternError::BadHost(pattern.to_owned()));
        }
        Ok(if suffix { Self::Suffix(format!(".{host}")) } else { Self::Exact(host) })
    }

    /// Whether `host` (lowercase, without port) matches.
    #[must_use]
    pub fn matches(&self, host: &str) -> bool {
        match self {
            Self::Exact(exact) => exact == host,
            Self::Suffix(suffix) => host.len() > suffix.len() && host.ends_with(suffix.as_str()),
        }
    }

    fn rank(pattern: Option<&Self>) -> (u8, usize) {
        match pattern {
            Some(Self::Exact(_)) => (2, 0),
            Some(Self::Suffix(suffix)) => (1, suffix.len()),
            None => (0, 0),
        }
    }
}

/// Strips the port from a `Host` value and lowercases it. Returns `None` for
/// an empty or invalid host. Borrows when the host is already canonical.
#[must_use]
pub fn host_without_port(host: &str) -> Option<Cow<'_, str>> {
    let host = host.trim();
    let bare = if let Some(rest) = host.strip_prefix('[') {
        // [v6]:port
        let end = rest.find(']')?;
        &rest[..end]
    } else {
        match host.rsplit_once(':') {
            Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => host,
        }
    };
    if bare.is_empty()
        || bare.bytes().any(|b| b.is_ascii_whitespace() || b.is_ascii_control() || b == b'/' || b == b'@')
    {
        return None;
    }
    let bare = bare.trim_end_matches('.');
    if bare.bytes().any(|b| b.is_ascii_uppercase()) {
        Some(Cow::Owned(bare.to_ascii_lowercase()))
    } else {
        Some(Cow::Borrowed(bare))
    }
}

/// One route of a table; `T` is what the caller attaches (the compiled route).
#[derive(Debug, Clone)]
pub struct RouteEntry<T> {
    /// Host pattern; `None` matches every host.
    pub host: Option<HostPattern>,
    /// Path pattern.
    pub path: PathPattern,
    /// Allowed methods; `None` allows all.
    pub methods: Option<Vec<Method>>,
    /// The caller's payload.
    pub value: T,
}

/// The outcome of a lookup.
#[derive(Debug)]
pub enum Match<'a, T> {
    /// The most specific route whose host, path and method match.
    Found(&'a T),
    /// Routes match host and path but none the method; the methods they allow.
    MethodNotAllowed(Vec<Method>),
    /// Nothing matches.
    None,
}

/// Routes ordered by specificity, indexed by their first path segment.
#[derive(Debug, Clone)]
pub struct RouteTable<T> {
    entries: Vec<RouteEntry<T>>,
    /// Entries whose pattern starts with a literal segment, by that segment
    /// (indices ascending, i.e. in match order).
    by_first: HashMap<String, Vec<usize>>,
    /// Every other entry (`/`, `/{x}…`, `/*…`, `/**`), in match order.
    other: Vec<usize>,
}

impl<T> RouteTable<T> {
    /// Orders the entries by specificity; ties keep configuration order.
    #[must_use]
    pub fn new(mut entries: Vec<RouteEntry<T>>) -> Self {
        // sort_by is stable: equal specificity keeps config order.
        entries.sort_by(|a, b| Self::specificity_cmp(b, a));
        let mut by_first: HashMap<String, Vec<usize>> = HashMap::new();
        let mut other = Vec::new();
        for (i, entry) in entries.iter().enumerate() {
            match entry.path.segments.first() {
                Some(Segment::Literal(first)) => by_first.entry(first.clone()).or_default().push(i),
                _ => other.push(i),
            }
        }
        Self { entries, by_first, other }
    }

    /// Indices of the entries that can match `path`, in match order: those
    /// whose first literal segment equals the path's, merged with the rest.
    fn candidates<'a>(&'a self, path: &str) -> impl Iterator<Item = usize> + 'a {
        let first = path.strip_prefix('/').and_then(|rest| rest.split('/').next()).unwrap_or("");
        let literal: &[usize] = self.by_first.get(first).map_or(&[], Vec::as_slice);
        let (mut a, mut b) = (literal.iter().copied().peekable(), self.other.iter().copied().peekable());
        std::iter::from_fn(move || match (a.peek(), b.peek()) {
            (Some(&x), Some(&y)) => {
                if x < y {
                    a.next()
                } else {
                    b.next()
                }
            }
            (Some(_), None) => a.next(),
            (None, _) => b.next(),
        })
    }

    fn specificity_cmp(a: &RouteEntry<T>, b: &RouteEntry<T>) -> Ordering {
        HostPattern::rank(a.host.as_ref())
            .cmp(&HostPattern::rank(b.host.as_ref()))
            .then_with(|| a.path.rank().cmp(&b.path.rank()))
            .then_with(|| a.methods.is_some().cmp(&b.methods.is_some()))
    }

    /// Entries in match order.
    #[must_use]
    pub fn entries(&self) -> &[RouteEntry<T>] {
        &self.entries
    }

    /// Pairs `(earlier, later)` of entries with the same host, path and an
    /// overlapping method set, where the later one can never match.
    #[must_use]
    pub fn shadowed(&self) -> Vec<(&RouteEntry<T>, &RouteEntry<T>)> {
        let mut out = Vec::new();
        for (i, later) in self.entries.iter().enumerate() {
            for earlier in &self.entries[..i] {
                let same = earlier.host == later.host && earlier.path.segments == later.path.segments;
                let covers = match (&earlier.methods, &later.methods) {
                    (None, _) => true,
                    (Some(_), None) => false,
                    (Some(e), Some(l)) => l.iter().all(|m| e.contains(m)),
                };
                if same && covers {
                    out.push((earlier, later));
                    break;
                }
            }
        }
        out
    }

    /// Finds the route for a request. `host` is lowercase without port.
    #[must_use]
    pub fn find(&self, host: Option<&str>, path: &str, method: &Method) -> Match<'_, T> {
        let mut allowed: Vec<Method> = Vec::new();
        let mut path_matched = false;
        for entry in self.candidates(path).map(|i| &self.entries[i]) {
            let host_ok = match (&entry.host, host) {
                (None, _) => true,
                (Some(pattern), Some(h)) => pattern.matches(h),
                (Some(_), None) => false,
            };
            if !host_ok || !entry.path.matches(path) {
                continue;
            }
            match &entry.methods {
                None => return Match::Found(&entry.value),
                Some(methods) if methods.contains(method) => return Match::Found(&entry.value),
                // HEAD is served wherever GET is.
                Some(methods) if *method == Method::HEAD && methods.contains(&Method::GET) => {
                    return Match::Found(&entry.value);
                }
                Some(methods) => {
                    path_matched = true;
                    for m in methods {
                        if !allowed.contains(m) {
                            allowed.push(m.clone());
                        }
                    }
                }
            }
        }
        if path_matched { Match::MethodNotAllowed(allowed) } else { Match::None }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(host: Option<&str>, path: &str, methods: Option<&[&str]>, name: &'static str) -> RouteEntry<&'static str> {
        RouteEntry {
            host: host.map(|h| HostPattern::parse(h).unwrap()),
            path: PathPattern::parse(path).unwrap(),
            methods: methods.map(|ms| ms.iter().map(|m| m.parse().unwrap()).collect()),
            value: name,
        }
    }

    /// Found by the `route` fuzz target: a route whose pattern is not in
    /// normal form never matched, and its requests fell through to a less
    /// specific route (`/admin/` behind `auth = "jwt"` served by a public
    /// `/**`).
    #[test]
    fn patterns_must_be_in_normal_form() {
        use crate::normalize::{PathPolicy, TrailingSlash};
        let strip = PathPolicy::default();
        let keep = PathPolicy { trailing_slash: TrailingSlash::Keep, ..strip };
        type Case<'a> = (&'a str, &'a PathPolicy, Result<(), Option<&'a str>>);
        let cases: &[Case<'_>] = &[
            ("/", &strip, Ok(())),
            ("/admin/users/{id}/**", &strip, Ok(())),
            ("/Admin/*", &strip, Ok(())),
            ("/caf%C3%A9", &strip, Ok(())),
            ("/admin/", &keep, Ok(())),
            ("/admin/", &strip, Err(Some("/admin"))),
            ("/%61dmin/{id}", &strip, Err(Some("/admin/{id}"))),
            ("/café", &strip, Err(Some("/caf%C3%A9"))),
            ("/caf%c3%a9", &strip, Err(Some("/caf%C3%A9"))),
            ("/a/../b", &strip, Err(None)),
            ("/./b", &strip, Err(None)),
            ("/a%2Fb", &strip, Err(None)),
            ("/a;v=1/b", &strip, Err(Some("/a/b"))),
            // Found by the `route` fuzz target: the suggestion must parse.
            ("/[%2A/a.", &strip, Err(None)),
        ];
        for (pattern, policy, expected) in cases {
            let got = PathPattern::parse(pattern).unwrap().check_normal(policy).map_err(|e| match e {
                PatternError::NotNormal { suggestion, .. } => suggestion,
                other => panic!("{other}"),
            });
            assert_eq!(got.as_ref().map_err(Option::as_deref), expected.as_ref().map_err(|e| *e), "{pattern}");
        }
    }

    #[test]
    fn path_pattern_table() {
        let cases: &[(&str, &str, bool)] = &[
            ("/", "/", true),
            ("/", "/x", false),
            ("/health", "/health", true),
            ("/health", "/health/", false),
            ("/health", "/healthz", false),
            ("/health", "/health/x", false),
            ("/api/**", "/api", true),
            ("/api/**", "/api/", true),
            ("/api/**", "/api/a/b/c", true),
            ("/api/**", "/apis", false),
            ("/**", "/", true),
            ("/**", "/anything/at/all", true),
            ("/users/{id}", "/users/42", true),
            ("/users/{id}", "/users/", false),
            ("/users/{id}", "/users/42/x", false),
            ("/users/*/posts", "/users/7/posts", true),
            ("/users/*/posts", "/users//posts", false),
            ("/dir/", "/dir/", true),
            ("/dir/", "/dir", false),
            ("/a", "a", false),
        ];
        for (pattern, path, want) in cases {
            assert_eq!(PathPattern::parse(pattern).unwrap().matches(path), *want, "{pattern} vs {path}");
        }
    }

    #[test]
    fn bad_patterns_are_refused() {
        assert_eq!(PathPattern::parse("api"), Err(PatternError::NoLeadingSlash));
        assert_eq!(PathPattern::parse("/a/**/b"), Err(PatternError::RestNotLast));
        assert_eq!(PathPattern::parse("/a//b"), Err(PatternError::EmptySegment));
        assert!(matches!(PathPattern::parse("/a/{}"), Err(PatternError::BadSegment(_))));
        assert!(matches!(PathPattern::parse("/a/x*"), Err(PatternError::BadSegment(_))));
        assert!(matches!(HostPattern::parse("a b"), Err(PatternError::BadHost(_))));
        assert!(HostPattern::parse("*.1.2.3.4").is_ok());
        assert!(HostPattern::parse("127.0.0.1").is_ok());
    }

    #[test]
    fn most_specific_route_wins_regardless_of_order() {
        let table = RouteTable::new(vec![
            entry(None, "/**", None, "fallback"),
            entry(None, "/api/**", None, "api"),
            entry(None, "/api/orders/**", None, "orders"),
            entry(None, "/api/orders/{id}", None, "order"),
            entry(None, "/api/orders", None, "orders-exact"),
            entry(Some("*.example.com"), "/api/**", None, "wild-host"),
            entry(Some("admin.example.com"), "/**", None, "admin-host"),
        ]);
        let find = |host: Option<&str>, path: &str| match table.find(host, path, &Method::GET) {
            Match::Found(v) => *v,
            other => panic!("{path}: {other:?}"),
        };
        assert_eq!(find(None, "/"), "fallback");
        assert_eq!(find(None, "/api/x"), "api");
        assert_eq!(find(None, "/api/orders/1/items"), "orders");
        assert_eq!(find(None, "/api/orders/1"), "order");
        assert_eq!(find(None, "/api/orders"), "orders-exact");
        assert_eq!(find(Some("shop.example.com"), "/api/orders/1"), "wild-host");
        assert_eq!(find(Some("example.com"), "/api/orders/1"), "order");
        assert_eq!(find(Some("admin.example.com"), "/api/orders/1"), "admin-host");
    }

    #[test]
    fn methods_fall_through_then_405() {
        let table = RouteTable::new(vec![
            entry(None, "/api/orders/**", Some(&["GET"]), "read"),
            entry(None, "/api/orders/**", Some(&["POST", "PUT"]), "write"),
            entry(None, "/other", Some(&["GET"]), "other"),
        ]);
        assert!(matches!(table.find(None, "/api/orders/1", &Method::POST), Match::Found(&"write")));
        assert!(matches!(table.find(None, "/api/orders/1", &Method::HEAD), Match::Found(&"read")));
        match table.find(None, "/api/orders/1", &Method::DELETE) {
            Match::MethodNotAllowed(allowed) => assert_eq!(allowed, vec![Method::GET, Method::POST, Method::PUT]),
            other => panic!("{other:?}"),
        }
        assert!(matches!(table.find(None, "/nope", &Method::GET), Match::None));
    }

    #[test]
    fn shadowed_routes_are_found() {
        let table = RouteTable::new(vec![
            entry(None, "/a/**", None, "first"),
            entry(None, "/a/**", Some(&["GET"]), "methods"),
            entry(None, "/a/**", None, "dup"),
        ]);
        let shadowed: Vec<_> = table.shadowed().iter().map(|(e, l)| (e.value, l.value)).collect();
        // The method-restricted route sorts first; the duplicate catch-all is shadowed.
        assert_eq!(shadowed, vec![("first", "dup")]);
    }

    #[test]
    fn the_first_segment_index_agrees_with_a_linear_scan() {
        let patterns = ["/", "/**", "/a", "/a/**", "/a/{id}", "/a/b", "/*/b", "/{x}/**", "/b/**", "/b/c/", "/a/*/c"];
        let mut entries = Vec::new();
        for (i, p) in patterns.iter().enumerate() {
            entries.push(entry(None, p, None, patterns[i]));
            entries.push(entry(Some("h.example"), p, Some(&["POST"]), patterns[i]));
        }
        let table = RouteTable::new(entries);
        let paths = ["/", "/a", "/a/", "/a/1", "/a/b", "/x/b", "/b", "/b/c/", "/a/z/c", "/zzz/y/z", "/b/c"];
        for path in paths {
            for (host, method) in [(None, Method::GET), (Some("h.example"), Method::POST)] {
                let linear = table.entries().iter().find(|e| {
                    e.path.matches(path)
                        && e.host.as_ref().is_none_or(|h| host.is_some_and(|x| h.matches(x)))
                        && e.methods.as_ref().is_none_or(|m| m.contains(&method))
                });
                let indexed = match table.find(host, path, &method) {
                    Match::Found(v) => Some(*v),
                    _ => None,
                };
                assert_eq!(indexed, linear.map(|e| e.value), "{host:?} {method} {path}");
            }
        }
    }

    #[test]
    fn host_normalization() {
        assert_eq!(host_without_port("API.Example.com:8443").as_deref(), Some("api.example.com"));
        assert_eq!(host_without_port("example.com.").as_deref(), Some("example.com"));
        assert_eq!(host_without_port("[::1]:80").as_deref(), Some("::1"));
        assert_eq!(host_without_port("127.0.0.1").as_deref(), Some("127.0.0.1"));
        assert_eq!(host_without_port(""), None);
        assert_eq!(host_without_port("a/b"), None);
        assert_eq!(host_without_port("user@host"), None);
    }
}
