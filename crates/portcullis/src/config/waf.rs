//! `[waf]`, `[[waf.exclusion]]` and the routes' `waf`: the web application
//! firewall on the OWASP Core Rule Set.
//!
//! Decision rules:
//! - `[waf]` needs `rules` (a CRS v4 directory, relative to the config file)
//!   unless `mode = "off"`. Its `mode` (default `block`) is every route's
//!   mode; a route may set its own (`waf = "detect"`, `waf = "off"`, or a
//!   table with `mode`, `paranoia`, `inbound_threshold`).
//! - A route's rule-set profile is the global paranoia and threshold with
//!   the route's changes, and the exclusions that name the route or no
//!   route. Routes with equal profiles share one loaded engine.
//! - Defaults are the secure choice: block, paranoia 1, threshold 5 (CRS's
//!   own), bodies over the inspection limit refused, overload fails closed.
//! - Responses are inspected only when asked (`responses = "detect"` or
//!   `"block"`, globally or per route): inspecting one means holding it
//!   until its body (up to `response_body_limit`) has arrived, which a
//!   streaming or long-polling route would not want unannounced. Only the
//!   `portcullis` engine inspects responses; asking another is an error.
//!
//! The engines are loaded (and canary-checked) when the server starts or
//! reloads, not here: parsing stays cheap for `check` and tests.

use std::path::PathBuf;

use portcullis_policy::waf::{EngineKind, Exclusion, Mode, Profile, RuleRange};
use toml::Spanned;

use super::error::Collector;
use super::raw::{RawConfig, RawRoute, RawRouteWaf};
use super::values::{choice, size};

/// Body bytes inspected by default.
pub const DEFAULT_BODY_LIMIT: u64 = 128 * 1024;
/// Verdicts remembered per rule set, by default (about 150 bytes each).
pub const DEFAULT_CACHE: usize = 10_000;
/// Requests waiting for an inspection worker, by default.
pub const DEFAULT_QUEUE: usize = 1024;

/// Requests (line, headers and inspected body) up to this many bytes are
/// inspected on the thread serving the connection: CRS on them costs tens
/// of microseconds, less than the hand-off to a worker and back.
pub const DEFAULT_INLINE_LIMIT: u64 = 16 * 1024;
/// Response body bytes inspected by default.
pub const DEFAULT_RESPONSE_BODY_LIMIT: u64 = 256 * 1024;
/// Media types whose response bodies are inspected by default: what
/// ModSecurity's recommended setup inspects, and JSON, where an API's
/// errors (and leaks) are.
pub const DEFAULT_RESPONSE_TYPES: &[&str] =
    &["text/html", "text/plain", "text/xml", "application/json", "application/xml", "application/problem+json"];

/// `[waf]`, compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waf {
    /// The engine.
    pub engine: EngineKind,
    /// The CRS directory.
    pub rules: PathBuf,
    /// The distinct rule-set profiles routes use (indexes in [`RouteWaf`]).
    pub profiles: Vec<Profile>,
    /// Body bytes inspected.
    pub body_limit: u64,
    /// Refuse bodies over the limit (else inspect their first part).
    pub refuse_over_limit: bool,
    /// Inspections at once.
    pub workers: usize,
    /// Requests waiting for a worker.
    pub queue: usize,
    /// Requests (and responses) up to this many bytes are inspected on the
    /// thread serving the connection (0: always on a worker).
    pub inline_limit: u64,
    /// Pass uninspected when the pool is full (else 503).
    pub fail_open: bool,
    /// Verdicts remembered per rule set (0: none).
    pub cache: usize,
    /// Response body bytes inspected (the rest is streamed uninspected).
    pub response_body_limit: u64,
    /// Media types (lower case, without parameters) whose bodies are inspected.
    pub response_types: Vec<String>,
}

/// A route's WAF.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteWaf {
    /// Block or detect.
    pub mode: Mode,
    /// Whether responses are inspected, and what a leak does.
    pub responses: Option<Mode>,
    /// Index into [`Waf::profiles`].
    pub profile: usize,
}

/// The global settings routes start from.
#[derive(Debug)]
pub(super) struct WafBase {
    mode: Option<Mode>,
    responses: Option<Mode>,
    profile: Profile,
    exclusions: Vec<(Exclusion, Option<Vec<String>>)>,
    waf: Waf,
}

const MODES: &[(&str, Option<Mode>)] = &[("block", Some(Mode::Block)), ("detect", Some(Mode::Detect)), ("off", None)];

fn paranoia(c: &mut Collector<'_>, value: Option<&Spanned<i64>>, default: u8) -> u8 {
    let Some(value) = value else { return default };
    match u8::try_from(*value.get_ref()) {
        Ok(n) if (1..=4).contains(&n) => n,
        _ => {
            c.error(value.span(), "paranoia is out of range").expected("1, 2, 3 or 4 (CRS paranoia levels)");
            default
        }
    }
}

/// An anomaly-score threshold (`key`), 1–10000; `usual` says CRS's default.
fn threshold(c: &mut Collector<'_>, value: Option<&Spanned<i64>>, default: u32, key: &str, usual: &str) -> u32 {
    let Some(value) = value else { return default };
    match u32::try_from(*value.get_ref()) {
        Ok(n) if (1..=10_000).contains(&n) => n,
        _ => {
            c.error(value.span(), format!("{key} is out of range")).expected(format!("between 1 and 10000 ({usual})"));
            default
        }
    }
}

const INBOUND_USUAL: &str = "CRS's default is 5: one critical match";

fn media_types(c: &mut Collector<'_>, list: Option<&Vec<Spanned<String>>>) -> Vec<String> {
    let Some(list) = list else { return DEFAULT_RESPONSE_TYPES.iter().map(|t| (*t).to_owned()).collect() };
    let mut out = Vec::new();
    for item in list {
        let text = item.get_ref().trim().to_ascii_lowercase();
        let valid = text.split_once('/').is_some_and(|(a, b)| {
            let token =
                |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$&^_.+-".contains(&b));
            token(a) && token(b)
        });
        if valid {
            out.push(text);
        } else {
            c.error(item.span(), format!("{:?} is not a media type", item.get_ref()))
                .expected("a type/subtype without parameters, such as \"application/json\"");
        }
    }
    out
}

fn count(c: &mut Collector<'_>, value: Option<&Spanned<i64>>, default: usize, max: usize, what: &str) -> usize {
    let Some(value) = value else { return default };
    match usize::try_from(*value.get_ref()) {
        Ok(n) if (1..=max).contains(&n) => n,
        _ => {
            c.error(value.span(), format!("{what} is out of range")).expected(format!("between 1 and {max}"));
            default
        }
    }
}

fn ranges(c: &mut Collector<'_>, list: &[Spanned<String>]) -> Vec<RuleRange> {
    list.iter()
        .filter_map(|id| match RuleRange::parse(id.get_ref()) {
            Ok(range) => Some(range),
            Err(e) => {
                c.error(id.span(), e).expected("a rule id such as \"942100\" or a range \"942100-942199\"");
                None
            }
        })
        .collect()
}

/// `[waf]`, or `None` when it is absent.
pub(super) fn build_waf(c: &mut Collector<'_>, raw: &RawConfig, base: &std::path::Path) -> Option<WafBase> {
    let spanned = raw.waf.as_ref()?;
    let w = spanned.get_ref();
    let mode = choice(c, w.mode.as_ref(), Some(Mode::Block), "mode", MODES);
    let engine = choice(
        c,
        w.engine.as_ref(),
        EngineKind::Portcullis,
        "engine",
        &[
            ("portcullis", EngineKind::Portcullis),
            ("zentinel", EngineKind::Zentinel),
            ("libmodsecurity", EngineKind::Libmodsecurity),
        ],
    );
    if let Some(value) = &w.engine
        && !engine.available()
    {
        c.error(value.span(), format!("engine {:?} is not built into this binary", engine.as_str()))
            .help("build with `cargo build --release --features libmodsecurity` (needs libmodsecurity 3), or use engine = \"portcullis\"");
    }
    let rules = match &w.rules {
        Some(dir) => base.join(dir.get_ref()),
        None => {
            if mode.is_some() || raw.routes.iter().any(|r| r.get_ref().waf.is_some()) {
                c.error(spanned.span(), "[waf] has no `rules` directory")
                    .help("point `rules` at an OWASP CRS v4 release (the directory with rules/ in it); docs/waf.md says how to install it");
            }
            PathBuf::new()
        }
    };
    let profile = Profile {
        paranoia: paranoia(c, w.paranoia.as_ref(), 1),
        inbound_threshold: threshold(c, w.inbound_threshold.as_ref(), 5, "inbound_threshold", INBOUND_USUAL),
        exclusions: Vec::new(),
        allow_load_errors: w.allow_load_errors.as_deref().map(|ids| ranges(c, ids)).unwrap_or_default(),
        responses: false,
        outbound_threshold: threshold(
            c,
            w.outbound_threshold.as_ref(),
            4,
            "outbound_threshold",
            "CRS's default is 4: one error-level leak",
        ),
    };
    let responses = choice(c, w.responses.as_ref(), None, "responses", MODES);
    let asks_responses = responses.is_some()
        || raw.routes.iter().any(|r| {
            matches!(&r.get_ref().waf, Some(w) if matches!(w.get_ref(), RawRouteWaf::Table(t) if t.responses.as_deref().is_some_and(|m| m != "off")))
        });
    if asks_responses && engine != EngineKind::Portcullis {
        c.error(spanned.span(), format!("engine {:?} does not inspect responses", engine.as_str()))
            .help("use engine = \"portcullis\" (the default), or responses = \"off\"");
    }
    let route_names: Vec<&str> = raw.routes.iter().filter_map(|r| r.get_ref().name.as_deref()).collect();
    let mut exclusions = Vec::new();
    for e in &w.exclusions {
        let x = e.get_ref();
        let rules = ranges(c, &x.rules);
        if x.rules.is_empty() {
            c.error(e.span(), "exclusion lists no rules").expected("rules = [\"942100\"] or [\"942100-942199\"]");
        }
        let mut targets = Vec::new();
        for target in x.targets.iter().flatten() {
            match portcullis_policy::waf::crs::check_target(target.get_ref()) {
                Ok(()) => targets.push(target.get_ref().clone()),
                Err(e) => {
                    c.error(target.span(), e);
                }
            }
        }
        if let Some(routes) = &x.routes {
            for route in routes {
                if !route_names.contains(&route.get_ref().as_str()) {
                    c.error(route.span(), format!("exclusion names unknown route {:?}", route.get_ref()))
                        .help("exclusions refer to routes by their `name`");
                }
            }
        }
        let routes = x.routes.as_ref().map(|r| r.iter().map(|n| n.get_ref().clone()).collect());
        exclusions.push((Exclusion { rules, targets }, routes));
    }
    let waf = Waf {
        engine,
        rules,
        profiles: Vec::new(),
        body_limit: size(c, w.body_limit.as_ref(), DEFAULT_BODY_LIMIT, 1, 64 << 20, "body_limit"),
        refuse_over_limit: choice(c, w.over_limit.as_ref(), true, "over_limit", &[("refuse", true), ("pass", false)]),
        workers: count(
            c,
            w.workers.as_ref(),
            std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get),
            1024,
            "workers",
        ),
        queue: count(c, w.queue.as_ref(), DEFAULT_QUEUE, 1_000_000, "queue"),
        inline_limit: size(c, w.inline_limit.as_ref(), DEFAULT_INLINE_LIMIT, 0, 1 << 20, "inline_limit"),
        fail_open: choice(c, w.on_overload.as_ref(), false, "on_overload", &[("closed", false), ("open", true)]),
        cache: match &w.cache {
            None => DEFAULT_CACHE,
            Some(v) if *v.get_ref() == 0 => 0,
            Some(v) => count(c, Some(v), DEFAULT_CACHE, 10_000_000, "cache"),
        },
        response_body_limit: size(
            c,
            w.response_body_limit.as_ref(),
            DEFAULT_RESPONSE_BODY_LIMIT,
            1,
            64 << 20,
            "response_body_limit",
        ),
        response_types: media_types(c, w.response_types.as_ref()),
    };
    Some(WafBase { mode, responses, profile, exclusions, waf })
}

/// A route's WAF: its mode and the index of its profile (added to `base`).
pub(super) fn route_waf(
    c: &mut Collector<'_>,
    route: &RawRoute,
    name: &str,
    base: Option<&mut WafBase>,
) -> Option<RouteWaf> {
    let Some(base) = base else {
        if let Some(value) = &route.waf {
            c.error(value.span(), format!("route {name:?} sets `waf` but there is no [waf] section"))
                .help("add [waf] with `rules` pointing at an OWASP CRS v4 directory (docs/waf.md)");
        }
        return None;
    };
    let mut profile = base.profile.clone();
    let mut responses = base.responses;
    let mode = match route.waf.as_ref().map(|w| (w.span(), w.get_ref())) {
        None => base.mode,
        Some((span, RawRouteWaf::Mode(word))) => {
            choice(c, Some(&Spanned::new(span, word.clone())), base.mode, "waf mode", MODES)
        }
        Some((span, RawRouteWaf::Table(t))) => {
            let spanned = |v: Option<i64>| v.map(|v| Spanned::new(span.clone(), v));
            profile.paranoia = paranoia(c, spanned(t.paranoia).as_ref(), profile.paranoia);
            profile.inbound_threshold = threshold(
                c,
                spanned(t.inbound_threshold).as_ref(),
                profile.inbound_threshold,
                "inbound_threshold",
                INBOUND_USUAL,
            );
            if let Some(word) = &t.responses {
                responses =
                    choice(c, Some(&Spanned::new(span.clone(), word.clone())), responses, "waf responses", MODES);
            }
            match &t.mode {
                Some(m) => choice(c, Some(&Spanned::new(span, m.clone())), base.mode, "waf mode", MODES),
                None => base.mode.or(Some(Mode::Block)),
            }
        }
    }?;
    profile.responses = responses.is_some();
    profile.exclusions = base
        .exclusions
        .iter()
        .filter(|(_, routes)| routes.as_ref().is_none_or(|r| r.iter().any(|n| n == name)))
        .map(|(e, _)| e.clone())
        .collect();
    let profiles = &mut base.waf.profiles;
    let index = profiles.iter().position(|p| *p == profile).unwrap_or_else(|| {
        profiles.push(profile);
        profiles.len() - 1
    });
    Some(RouteWaf { mode, responses, profile: index })
}

impl WafBase {
    /// The compiled `[waf]`, once every route has added its profile.
    pub(super) fn finish(self) -> Waf {
        self.waf
    }
}
