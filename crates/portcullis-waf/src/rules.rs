//! Compiling SecLang directives into a program: rules per phase, markers
//! resolved, exclusions applied, every operator and transformation chain
//! built once.
//!
//! Decision rules:
//! - Everything a rule needs at request time is built here: regexes,
//!   phrase automata, data files, byte ranges, IP lists. Nothing is
//!   compiled lazily except an `@rx` whose pattern has macros.
//! - Each distinct transformation chain gets one id: every rule with the
//!   same `t:` list shares one cached transformed copy of each value.
//! - The first `@rx` of every rule (no macros) joins one regex set per
//!   (phase, transformation chain, `multiMatch`): one pass over a value
//!   (over each of its multiMatch candidates) tells every such rule
//!   whether it can match. A set may have a single member: the pass is
//!   still shared by every target set and every rule that sees the value.
//! - Anything the engine would not honour — an unknown variable, operator,
//!   transformation, `ctl` or action, a regex the engine cannot run, a
//!   missing data file — is a load error naming the rule, unless the
//!   caller allows that rule's id.
//! - `SecRuleRemoveById` drops rules; `SecRuleUpdateTargetById` adds
//!   exclusions (or targets) to the rule's first link, as libmodsecurity
//!   applies them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use regex::bytes::Regex;
use regex_automata::meta;
use regex_automata::util::syntax;
use zentinel_modsec::parser::{
    Action, ControlAction, DataAction, Directive, DisruptiveAction, FlowAction, LoggingAction, MetadataAction,
    OperatorName, SecRule, Selection, SetVarSpec, SetVarValue, VariableName, VariableSpec,
};

use crate::macros::Template;
use crate::operator::{self, Cmp, Operator};
use crate::transform::Transform;
use crate::{LoadError, RuleError};

/// A compiled rule set.
#[derive(Debug)]
pub struct Program {
    /// Unique to this load: what a thread remembers of values (see
    /// `memo`) belongs to one program.
    pub id: u64,
    /// Per phase (index 0 = phase 1): rules and markers in order.
    pub phases: [Vec<Item>; 5],
    /// The rules.
    pub rules: Vec<Rule>,
    /// Transformation chains by id (0: none); every prefix of a chain is
    /// a chain too.
    pub chains: Vec<Vec<Transform>>,
    /// Each chain's longest proper prefix and its last transformation
    /// (`None` for chain 0): a value is transformed along the prefix tree,
    /// sharing every common prefix.
    pub parents: Vec<Option<(u16, Transform)>>,
    /// Each chain's non-empty prefixes, shortest first, itself last.
    pub prefixes: Vec<Vec<u16>>,
    /// Regex sets by id.
    pub sets: Vec<Set>,
    /// How many links have a `pure` index.
    pub pure_ops: usize,
    /// `SecRuleEngine`
    pub engine: EngineMode,
    /// How many distinct fixed target sets links have.
    pub target_sets: usize,
    /// How many distinct targets have a [`Target::slot`].
    pub target_slots: usize,
    /// Every tag a rule has, by id.
    pub tags: HashMap<String, u32>,
}

/// The first-link `@rx` patterns of the rules of one (phase, chain,
/// multiMatch): every member that can match a value, in one pass.
#[derive(Debug)]
pub struct Set {
    /// Its members, each carried to the end of the haystack (see
    /// [`compile`]): all matches, no captures, byte mode.
    pub regex: meta::Regex,
    /// How many members it has.
    pub len: usize,
    /// The transformation chain its members apply.
    pub chain: u16,
    /// The members are `multiMatch`: a value's every candidate is searched.
    pub multi_match: bool,
}

/// One step of a phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Item {
    /// A rule, by index into [`Program::rules`].
    Rule(usize),
    /// A `SecMarker`, by id.
    Marker(usize),
}

/// `SecRuleEngine` / `ctl:ruleEngine`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EngineMode {
    /// Rules run and act.
    #[default]
    On,
    /// Rules run; disruptive actions do not.
    DetectionOnly,
    /// Nothing runs.
    Off,
}

/// A rule and its chain.
#[derive(Debug)]
pub struct Rule {
    /// Its id (0 when it has none).
    pub id: u32,
    /// 1–5.
    pub phase: u8,
    /// The head first, then each chained rule.
    pub links: Vec<Link>,
    /// `tag:` values, as ids of [`Program::tags`]: runtime exclusions by
    /// tag are checked on every rule.
    pub tag_ids: Vec<u32>,
    /// `msg:`
    pub msg: Option<Template>,
    /// `logdata:`
    pub logdata: Option<Template>,
    /// `severity:`
    pub severity: Option<u8>,
    /// The disruptive action.
    pub disruptive: Disruptive,
    /// `status:`
    pub status: Option<u16>,
    /// Whether it logs when it matches (`log`, the default, or `nolog`).
    pub log: bool,
    /// `file:line`
    pub location: String,
}

/// What a rule does when its chain matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disruptive {
    /// `pass` (and `block` under a `pass` default).
    Pass,
    /// `deny`
    Deny,
    /// `drop`
    Drop,
    /// `redirect:URL`
    Redirect(String),
    /// `allow` (the rest of the transaction).
    Allow,
    /// `allow:phase`
    AllowPhase,
    /// `allow:request`
    AllowRequest,
}

/// One rule of a chain.
#[derive(Debug)]
pub struct Link {
    /// What it inspects.
    pub targets: Vec<Target>,
    /// What it does not (`!ARGS:x`, exclusions from configuration).
    pub exclusions: Vec<Selector>,
    /// The operator.
    pub operator: Operator,
    /// `!@…`
    pub negated: bool,
    /// Its transformation chain.
    pub chain: u16,
    /// `multiMatch`
    pub multi_match: bool,
    /// `capture`
    pub capture: bool,
    /// `setvar:` run on every match.
    pub setvars: Vec<SetVar>,
    /// `ctl:` run when the whole chain matched.
    pub ctls: Vec<Ctl>,
    /// `skipAfter:` marker id.
    pub skip_after: Option<usize>,
    /// `skip:N`
    pub skip: u32,
    /// When every target is request data fixed for a phase, or a count of
    /// such data (no `TX`, `MATCHED_*`): an id shared by every link with
    /// the same targets and exclusions, under which a transaction resolves
    /// them once.
    pub target_set: Option<u32>,
    /// When the operator's verdict depends on the value's bytes alone (`@pm`
    /// and its file form, `@detectXSS`, `@detectSQLi`, `@validate…`): its
    /// index among such links, under which a value it did not match is
    /// remembered (see `eval::Known`).
    pub pure: Option<u16>,
}

/// A target variable, possibly narrowed to keys.
#[derive(Debug)]
pub struct Target {
    /// Which variable.
    pub var: Var,
    /// Which keys of it.
    pub key: Key,
    /// `&VAR`: the number of values instead of the values.
    pub count: bool,
    /// For a variable of the request (not a count): its index among the
    /// program's distinct such targets, under which a phase resolves it
    /// once for every target set that has it.
    pub slot: Option<u32>,
}

/// A variable, possibly narrowed, as excluded.
#[derive(Debug)]
pub struct Selector {
    /// Which variable.
    pub var: Var,
    /// Which keys.
    pub key: Key,
}

/// Which keys of a collection.
#[derive(Debug)]
pub enum Key {
    /// All of them.
    All,
    /// One name, lower-case (names compare case-insensitively).
    Name(String),
    /// Names matching a regex (case-insensitive).
    Regex {
        /// The regex.
        regex: Regex,
        /// Text every selected name holds (lower-case; see
        /// [`required_literal`]): CRS's `TX:/^header_name_920450_/` and
        /// `TX:/MULTIPART_HEADERS_CONTENT_TYPES_*/` look at every TX
        /// variable, and nearly all lack it.
        literal: Vec<u8>,
        /// The names start with `literal`.
        anchored: bool,
    },
}

impl Key {
    /// Whether `key` is selected.
    #[must_use]
    pub fn selects(&self, key: &[u8]) -> bool {
        match self {
            Self::All => true,
            Self::Name(name) => name.as_bytes().eq_ignore_ascii_case(key),
            Self::Regex { regex, literal, anchored } => {
                let holds = if *anchored {
                    key.get(..literal.len()).is_some_and(|start| start.eq_ignore_ascii_case(literal))
                } else {
                    literal.is_empty() || key.windows(literal.len()).any(|w| w.eq_ignore_ascii_case(literal))
                };
                holds && regex.is_match(key)
            }
        }
    }
}

/// The longest run of plain characters that every match of `pattern`
/// holds, lower-case, and whether matches start with it: outside any
/// group, ended by any character with a meaning in a regex (one fewer
/// when a quantifier that allows none follows); nothing when the pattern
/// has an alternation or an escape (`\x22?` is one optional character, not
/// the text `22`: CRS's 921250 selects cookies by `/\x22?\x24Version/`).
fn required_literal(pattern: &str) -> (Vec<u8>, bool) {
    let bytes = pattern.as_bytes();
    if bytes.contains(&b'|') || bytes.contains(&b'\\') {
        return (Vec::new(), false);
    }
    let (mut best, mut best_at) = (&bytes[..0], usize::MAX);
    let (mut depth, mut class, mut at) = (0_usize, false, 0);
    while at < bytes.len() {
        let b = bytes[at];
        match b {
            b'[' => {
                class = true;
                at += 1;
            }
            b']' => {
                class = false;
                at += 1;
            }
            b'(' if !class => {
                depth += 1;
                at += 1;
            }
            b')' if !class => {
                depth = depth.saturating_sub(1);
                at += 1;
            }
            _ if class || depth > 0 || b".^$?*+{}".contains(&b) => at += 1,
            _ => {
                let start = at;
                while at < bytes.len() && !b".^$|?*+()[]{}".contains(&bytes[at]) {
                    at += 1;
                }
                let end = match bytes.get(at) {
                    Some(b'?' | b'*' | b'{') => at - 1,
                    _ => at,
                };
                if end - start > best.len() {
                    (best, best_at) = (&bytes[start..end], start);
                }
            }
        }
    }
    (best.to_ascii_lowercase(), best_at == 1 && bytes.first() == Some(&b'^'))
}

/// The variables the engine resolves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(missing_docs, clippy::enum_variant_names)]
pub enum Var {
    Args,
    ArgsGet,
    ArgsPost,
    ArgsNames,
    ArgsGetNames,
    ArgsPostNames,
    ArgsCombinedSize,
    RequestHeaders,
    RequestHeadersNames,
    RequestCookies,
    RequestCookiesNames,
    Scalar(crate::data::Scalar),
    Files,
    FilesNames,
    FilesSizes,
    FilesCombinedSize,
    MultipartPartHeaders,
    Multipart(&'static str),
    Xml,
    Tx,
    MatchedVar,
    MatchedVars,
    MatchedVarName,
    MatchedVarsNames,
    ReqbodyProcessor,
    ReqbodyError,
    ReqbodyErrorMsg,
    UniqueId,
    Duration,
    ResponseStatus,
    ResponseProtocol,
    ResponseHeaders,
    ResponseHeadersNames,
    ResponseBody,
    ResponseContentType,
    ResponseContentLength,
}

impl Var {
    /// The name ModSecurity reports (`ARGS`, `REQUEST_HEADERS`).
    #[must_use]
    pub const fn name(self) -> &'static str {
        use crate::data::Scalar as S;
        match self {
            Self::Args => "ARGS",
            Self::ArgsGet => "ARGS_GET",
            Self::ArgsPost => "ARGS_POST",
            Self::ArgsNames => "ARGS_NAMES",
            Self::ArgsGetNames => "ARGS_GET_NAMES",
            Self::ArgsPostNames => "ARGS_POST_NAMES",
            Self::ArgsCombinedSize => "ARGS_COMBINED_SIZE",
            Self::RequestHeaders => "REQUEST_HEADERS",
            Self::RequestHeadersNames => "REQUEST_HEADERS_NAMES",
            Self::RequestCookies => "REQUEST_COOKIES",
            Self::RequestCookiesNames => "REQUEST_COOKIES_NAMES",
            Self::Scalar(S::Method) => "REQUEST_METHOD",
            Self::Scalar(S::Protocol) => "REQUEST_PROTOCOL",
            Self::Scalar(S::Line) => "REQUEST_LINE",
            Self::Scalar(S::Uri) => "REQUEST_URI",
            Self::Scalar(S::UriRaw) => "REQUEST_URI_RAW",
            Self::Scalar(S::Filename) => "REQUEST_FILENAME",
            Self::Scalar(S::Basename) => "REQUEST_BASENAME",
            Self::Scalar(S::QueryString) => "QUERY_STRING",
            Self::Scalar(S::Body) => "REQUEST_BODY",
            Self::Scalar(S::BodyLength) => "REQUEST_BODY_LENGTH",
            Self::Scalar(S::RemoteAddr) => "REMOTE_ADDR",
            Self::Scalar(S::RemotePort) => "REMOTE_PORT",
            Self::Files => "FILES",
            Self::FilesNames => "FILES_NAMES",
            Self::FilesSizes => "FILES_SIZES",
            Self::FilesCombinedSize => "FILES_COMBINED_SIZE",
            Self::MultipartPartHeaders => "MULTIPART_PART_HEADERS",
            Self::Multipart(name) => name,
            Self::Xml => "XML",
            Self::Tx => "TX",
            Self::MatchedVar => "MATCHED_VAR",
            Self::MatchedVars => "MATCHED_VARS",
            Self::MatchedVarName => "MATCHED_VAR_NAME",
            Self::MatchedVarsNames => "MATCHED_VARS_NAMES",
            Self::ReqbodyProcessor => "REQBODY_PROCESSOR",
            Self::ReqbodyError => "REQBODY_ERROR",
            Self::ReqbodyErrorMsg => "REQBODY_ERROR_MSG",
            Self::UniqueId => "UNIQUE_ID",
            Self::Duration => "DURATION",
            Self::ResponseStatus => "RESPONSE_STATUS",
            Self::ResponseProtocol => "RESPONSE_PROTOCOL",
            Self::ResponseHeaders => "RESPONSE_HEADERS",
            Self::ResponseHeadersNames => "RESPONSE_HEADERS_NAMES",
            Self::ResponseBody => "RESPONSE_BODY",
            Self::ResponseContentType => "RESPONSE_CONTENT_TYPE",
            Self::ResponseContentLength => "RESPONSE_CONTENT_LENGTH",
        }
    }

    fn from_parsed(name: VariableName) -> Option<Self> {
        use crate::data::Scalar as S;
        use VariableName as V;
        Some(match name {
            V::Args => Self::Args,
            V::ArgsGet => Self::ArgsGet,
            V::ArgsPost => Self::ArgsPost,
            V::ArgsNames => Self::ArgsNames,
            V::ArgsGetNames => Self::ArgsGetNames,
            V::ArgsPostNames => Self::ArgsPostNames,
            V::ArgsCombinedSize => Self::ArgsCombinedSize,
            V::RequestUri => Self::Scalar(S::Uri),
            V::RequestUriRaw => Self::Scalar(S::UriRaw),
            V::RequestFilename => Self::Scalar(S::Filename),
            V::RequestBasename => Self::Scalar(S::Basename),
            V::RequestLine => Self::Scalar(S::Line),
            V::RequestMethod => Self::Scalar(S::Method),
            V::RequestProtocol => Self::Scalar(S::Protocol),
            V::RequestHeaders => Self::RequestHeaders,
            V::RequestHeadersNames => Self::RequestHeadersNames,
            V::RequestCookies => Self::RequestCookies,
            V::RequestCookiesNames => Self::RequestCookiesNames,
            V::RequestBody => Self::Scalar(S::Body),
            V::RequestBodyLength => Self::Scalar(S::BodyLength),
            V::QueryString => Self::Scalar(S::QueryString),
            V::RemoteAddr => Self::Scalar(S::RemoteAddr),
            V::RemotePort => Self::Scalar(S::RemotePort),
            V::Tx => Self::Tx,
            V::MatchedVar => Self::MatchedVar,
            V::MatchedVars => Self::MatchedVars,
            V::MatchedVarName => Self::MatchedVarName,
            V::MatchedVarsNames => Self::MatchedVarsNames,
            V::Files => Self::Files,
            V::FilesNames => Self::FilesNames,
            V::FilesSizes => Self::FilesSizes,
            V::FilesCombinedSize => Self::FilesCombinedSize,
            V::MultipartPartHeaders => Self::MultipartPartHeaders,
            V::MultipartBoundaryQuoted => Self::Multipart("MULTIPART_BOUNDARY_QUOTED"),
            V::MultipartBoundaryWhitespace => Self::Multipart("MULTIPART_BOUNDARY_WHITESPACE"),
            V::MultipartDataAfter => Self::Multipart("MULTIPART_DATA_AFTER"),
            V::MultipartDataBefore => Self::Multipart("MULTIPART_DATA_BEFORE"),
            V::MultipartFileLimitExceeded => Self::Multipart("MULTIPART_FILE_LIMIT_EXCEEDED"),
            V::MultipartHeaderFolding => Self::Multipart("MULTIPART_HEADER_FOLDING"),
            V::MultipartInvalidHeaderFolding => Self::Multipart("MULTIPART_INVALID_HEADER_FOLDING"),
            V::MultipartInvalidPart => Self::Multipart("MULTIPART_INVALID_PART"),
            V::MultipartInvalidQuoting => Self::Multipart("MULTIPART_INVALID_QUOTING"),
            V::MultipartLfLine => Self::Multipart("MULTIPART_LF_LINE"),
            V::MultipartMissingSemicolon => Self::Multipart("MULTIPART_MISSING_SEMICOLON"),
            V::MultipartStrictError | V::MultipartStrictCheck => Self::Multipart("MULTIPART_STRICT_ERROR"),
            V::MultipartUnmatchedBoundary => Self::Multipart("MULTIPART_UNMATCHED_BOUNDARY"),
            V::Xml => Self::Xml,
            V::ReqBodyProcessor => Self::ReqbodyProcessor,
            V::ReqBodyError | V::ReqBodyProcessorError => Self::ReqbodyError,
            V::ReqBodyErrorMsg | V::ReqBodyProcessorErrorMsg => Self::ReqbodyErrorMsg,
            V::UniqueId => Self::UniqueId,
            V::Duration => Self::Duration,
            V::ResponseStatus => Self::ResponseStatus,
            V::ResponseProtocol => Self::ResponseProtocol,
            V::ResponseHeaders => Self::ResponseHeaders,
            V::ResponseHeadersNames => Self::ResponseHeadersNames,
            V::ResponseBody => Self::ResponseBody,
            V::ResponseContentType => Self::ResponseContentType,
            V::ResponseContentLength => Self::ResponseContentLength,
            _ => return None,
        })
    }

    /// Whether the variable's values are fixed for a phase: request data,
    /// not transaction state.
    const fn is_fixed(self) -> bool {
        matches!(
            self,
            Self::Args
                | Self::ArgsGet
                | Self::ArgsPost
                | Self::ArgsNames
                | Self::ArgsGetNames
                | Self::ArgsPostNames
                | Self::ArgsCombinedSize
                | Self::RequestHeaders
                | Self::RequestHeadersNames
                | Self::RequestCookies
                | Self::RequestCookiesNames
                | Self::Scalar(_)
                | Self::Files
                | Self::FilesNames
                | Self::FilesSizes
                | Self::FilesCombinedSize
                | Self::MultipartPartHeaders
                | Self::Xml
        )
    }

    /// Collections take keys; the others are single values.
    const fn is_collection(self) -> bool {
        matches!(
            self,
            Self::Args
                | Self::ArgsGet
                | Self::ArgsPost
                | Self::ArgsNames
                | Self::ArgsGetNames
                | Self::ArgsPostNames
                | Self::RequestHeaders
                | Self::RequestHeadersNames
                | Self::RequestCookies
                | Self::RequestCookiesNames
                | Self::Files
                | Self::FilesNames
                | Self::FilesSizes
                | Self::MultipartPartHeaders
                | Self::Tx
                | Self::MatchedVars
                | Self::MatchedVarsNames
                | Self::ResponseHeaders
                | Self::ResponseHeadersNames
                | Self::Xml
        )
    }
}

/// The engine's variable for a parsed name, if it resolves it.
#[must_use]
pub fn var_from_parsed(name: VariableName) -> Option<Var> {
    Var::from_parsed(name)
}

/// `setvar:`
#[derive(Debug)]
pub struct SetVar {
    /// The TX key, lower-case (may hold macros).
    pub key: Template,
    /// What to do.
    pub op: SetOp,
}

/// What a `setvar` does.
#[derive(Debug)]
pub enum SetOp {
    /// `=value`
    Set(Template),
    /// `=+value`
    Add(Template),
    /// `=-value`
    Sub(Template),
    /// `!key`
    Delete,
}

/// `ctl:` actions the engine honours.
#[derive(Debug, Clone)]
pub enum Ctl {
    /// `ruleRemoveById=…`
    RemoveById(Vec<(u32, u32)>),
    /// `ruleRemoveByTag=…`
    RemoveByTag(String),
    /// `ruleRemoveTargetById=id;TARGET`
    RemoveTargetById(Vec<(u32, u32)>, String),
    /// `ruleRemoveTargetByTag=tag;TARGET`
    RemoveTargetByTag(String, String),
    /// `ruleEngine=…`
    Engine(EngineMode),
    /// `requestBodyProcessor=…`
    BodyProcessor(crate::data::BodyProcessor),
    /// Accepted and without effect here (`auditEngine`, `auditLogParts`,
    /// `forceRequestBodyVariable`: `REQUEST_BODY` is always filled).
    Ignored,
}

/// Options for compiling.
#[derive(Debug, Default, Clone)]
pub struct Options {
    /// Rule ids whose problems are accepted (the rule is then dropped or
    /// runs without what it could not use, as reported).
    pub allow: Vec<(u32, u32)>,
}

/// Directives that only name, log or tune what this engine does not have.
const HARMLESS_DIRECTIVES: &[&str] = &[
    "SecComponentSignature",
    "SecCollectionTimeout",
    "SecAuditEngine",
    "SecAuditLog",
    "SecAuditLogParts",
    "SecAuditLogType",
    "SecAuditLogStorageDir",
    "SecAuditLogRelevantStatus",
    "SecDebugLog",
    "SecDebugLogLevel",
    "SecTmpDir",
    "SecDataDir",
    // Which response bodies are inspected is the embedding server's choice.
    "SecResponseBodyMimeType",
    "SecStatusEngine",
    "SecPcreMatchLimit",
    "SecPcreMatchLimitRecursion",
];

struct Builder<'a> {
    options: &'a Options,
    chains: Vec<Vec<Transform>>,
    parents: Vec<Option<(u16, Transform)>>,
    markers: Vec<String>,
    problems: Vec<RuleError>,
    target_sets: HashMap<String, u32>,
    data_files: HashMap<PathBuf, Vec<String>>,
    tags: HashMap<String, u32>,
}

/// Compiles parsed directives.
///
/// # Errors
/// Rules the engine cannot run fully (and not allowed by id).
pub fn compile(directives: Vec<Directive>, options: &Options) -> Result<Program, LoadError> {
    let mut b = Builder {
        options,
        chains: vec![Vec::new()],
        parents: vec![None],
        markers: Vec::new(),
        problems: Vec::new(),
        target_sets: HashMap::new(),
        data_files: HashMap::new(),
        tags: HashMap::new(),
    };
    let mut rules: Vec<Rule> = Vec::new();
    let mut order: Vec<Item> = Vec::new();
    let mut engine = EngineMode::On;
    let mut pending: Option<Rule> = None;
    let mut removals: Vec<(u64, u64)> = Vec::new();
    let mut updates = Vec::new();
    for directive in directives {
        match directive {
            Directive::SecRule(rule) => {
                let chained = rule.is_chained();
                match pending.take() {
                    Some(mut head) => {
                        let allowed = b.allowed(head.id);
                        match b.link(&rule) {
                            Ok(link) => head.links.push(link),
                            Err(problem) => b.problem(head.id, &rule, problem, allowed),
                        }
                        if chained {
                            pending = Some(head);
                        } else {
                            order.push(Item::Rule(rules.len()));
                            rules.push(head);
                        }
                    }
                    None => {
                        if let Some(head) = b.head(&rule) {
                            if chained {
                                pending = Some(head);
                            } else {
                                order.push(Item::Rule(rules.len()));
                                rules.push(head);
                            }
                        }
                    }
                }
            }
            Directive::SecAction(action) => {
                let rule = SecRule {
                    variables: Vec::new(),
                    operator: zentinel_modsec::parser::OperatorSpec {
                        negated: false,
                        name: OperatorName::UnconditionalMatch,
                        argument: String::new(),
                    },
                    actions: action.actions,
                    location: action.location,
                };
                if let Some(head) = b.head(&rule) {
                    order.push(Item::Rule(rules.len()));
                    rules.push(head);
                }
            }
            Directive::SecMarker(marker) => {
                let id = b.marker(&marker.name);
                order.push(Item::Marker(id));
            }
            Directive::SecRuleEngine(mode) => {
                engine = match mode {
                    zentinel_modsec::parser::RuleEngineMode::On => EngineMode::On,
                    zentinel_modsec::parser::RuleEngineMode::Off => EngineMode::Off,
                    zentinel_modsec::parser::RuleEngineMode::DetectionOnly => EngineMode::DetectionOnly,
                };
            }
            Directive::SecRuleRemoveById(ids) => {
                for id in ids {
                    removals.push(match id {
                        zentinel_modsec::parser::RuleIdSelector::Single(s) => (s, s),
                        zentinel_modsec::parser::RuleIdSelector::Range(a, z) => (a, z),
                    });
                }
            }
            Directive::SecRuleUpdateTargetById(update) => updates.push(update),
            Directive::SecRuleUpdateActionById { id, .. } => {
                return Err(LoadError::Directive(format!(
                    "SecRuleUpdateActionById {id}: not supported by this engine"
                )));
            }
            Directive::Unknown(text) => {
                let name = text.split_whitespace().next().unwrap_or_default();
                if !HARMLESS_DIRECTIVES.iter().any(|d| d.eq_ignore_ascii_case(name)) {
                    return Err(LoadError::Directive(format!("directive {name} is not supported by this engine")));
                }
            }
            Directive::SecDefaultAction(_)
            | Directive::SecRequestBodyAccess(_)
            | Directive::SecResponseBodyAccess(_)
            | Directive::SecRequestBodyLimit(_)
            | Directive::SecResponseBodyLimit(_)
            | Directive::Include(_) => {}
        }
    }
    if let Some(head) = pending {
        return Err(LoadError::Directive(format!(
            "rule {} at {} ends its chain without a chained rule",
            head.id, head.location
        )));
    }
    // Configuration-time exclusions.
    for update in updates {
        for rule in rules.iter_mut().filter(|r| update.ids.iter().any(|s| s.matches(u64::from(r.id)))) {
            let Some(head) = rule.links.first_mut() else { continue };
            for text in &update.exclusions {
                head.exclusions
                    .push(b.selector(text).map_err(|e| LoadError::Directive(format!("SecRuleUpdateTargetById: {e}")))?);
            }
            for spec in &update.additions {
                head.targets
                    .push(b.target(spec).map_err(|e| LoadError::Directive(format!("SecRuleUpdateTargetById: {e}")))?);
            }
        }
    }
    // Fixed target sets, now that every exclusion is in place; and the
    // links whose "no match" on a value can be remembered.
    let mut pure_ops: u16 = 0;
    let mut target_slots: HashMap<String, u32> = HashMap::new();
    for link in rules.iter_mut().flat_map(|r| r.links.iter_mut()) {
        if !link.negated
            && matches!(
                link.operator,
                Operator::Pm(_)
                    | Operator::DetectXss
                    | Operator::DetectSqli
                    | Operator::ValidateByteRange(_)
                    | Operator::ValidateUrlEncoding
                    | Operator::ValidateUtf8Encoding
            )
        {
            link.pure = Some(pure_ops);
            pure_ops = pure_ops
                .checked_add(1)
                .ok_or_else(|| LoadError::Directive("too many rules with byte-only operators".into()))?;
        }
        for target in link.targets.iter_mut().filter(|t| t.var.is_fixed() && !t.count) {
            let next = u32::try_from(target_slots.len())
                .map_err(|_| LoadError::Directive("too many distinct targets".into()))?;
            target.slot = Some(*target_slots.entry(format!("{:?}{:?}", target.var, target.key)).or_insert(next));
        }
        if link.targets.iter().all(|t| t.var.is_fixed()) {
            let signature = format!("{:?}{:?}", link.targets, link.exclusions);
            let next = u32::try_from(b.target_sets.len())
                .map_err(|_| LoadError::Directive("too many distinct target sets".into()))?;
            link.target_set = Some(*b.target_sets.entry(signature).or_insert(next));
        }
    }
    let removed: Vec<bool> =
        rules.iter().map(|r| r.id != 0 && removals.iter().any(|(a, z)| (*a..=*z).contains(&u64::from(r.id)))).collect();
    if !b.problems.is_empty() {
        return Err(LoadError::Rules(b.problems));
    }
    // Phases, in file order.
    let mut phases: [Vec<Item>; 5] = Default::default();
    for item in order {
        match item {
            Item::Rule(index) => {
                if removed[index] {
                    continue;
                }
                let phase = usize::from(rules[index].phase.clamp(1, 5)) - 1;
                phases[phase].push(item);
            }
            Item::Marker(_) => {
                for phase in &mut phases {
                    phase.push(item);
                }
            }
        }
    }
    // Regex sets: the first link's @rx of every live rule, by (phase,
    // chain, multiMatch).
    let mut groups: HashMap<(u8, u16, bool), Vec<usize>> = HashMap::new();
    for (index, rule) in rules.iter().enumerate() {
        if removed[index] {
            continue;
        }
        if let Some(link) = rule.links.first()
            && matches!(link.operator, Operator::Rx { .. })
        {
            groups.entry((rule.phase, link.chain, link.multi_match)).or_default().push(index);
        }
    }
    let mut groups: Vec<((u8, u16, bool), Vec<usize>)> = groups.into_iter().collect();
    groups.sort_by_key(|(k, _)| *k);
    let mut sets = Vec::new();
    for ((_, chain, multi_match), members) in groups {
        let patterns: Vec<String> = members
            .iter()
            .filter_map(|&r| match &rules[r].links[0].operator {
                // Whether a member matches, not where: carried to the end
                // of the value, each member is reported once per search
                // rather than at every position it matches (`.`,
                // `^[^;\s]+`).
                Operator::Rx { pattern, .. } => Some(format!("(?:{})(?s-u:.*)\\z", operator::rewrite_pcre(pattern))),
                _ => None,
            })
            .collect();
        let regex = meta::Builder::new()
            .configure(
                meta::Config::new()
                    .match_kind(regex_automata::MatchKind::All)
                    .utf8_empty(false)
                    .which_captures(regex_automata::nfa::thompson::WhichCaptures::None)
                    .nfa_size_limit(Some(256 << 20))
                    // The lazy DFA's cache per search thread: enough that
                    // a set of a hundred patterns does not thrash.
                    .hybrid_cache_capacity(8 << 20),
            )
            .syntax(syntax::Config::new().unicode(false).utf8(false))
            .build_many(&patterns)
            .map_err(|e| LoadError::Directive(format!("regex set does not build: {e}")))?;
        let set_id = sets.len();
        sets.push(Set { regex, len: members.len(), chain, multi_match });
        for (index, &rule) in members.iter().enumerate() {
            if let Operator::Rx { set, .. } = &mut rules[rule].links[0].operator {
                *set = Some((set_id, index));
            }
        }
    }
    let prefixes = (0..b.parents.len())
        .map(|chain| {
            let mut prefixes = Vec::new();
            let mut at = chain;
            while let Some((parent, _)) = b.parents[at] {
                prefixes.extend(u16::try_from(at));
                at = usize::from(parent);
            }
            prefixes.reverse();
            prefixes
        })
        .collect();
    static LOADS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    Ok(Program {
        id: LOADS.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        phases,
        rules,
        chains: b.chains,
        parents: b.parents,
        prefixes,
        sets,
        pure_ops: usize::from(pure_ops),
        engine,
        target_sets: b.target_sets.len(),
        target_slots: target_slots.len(),
        tags: b.tags,
    })
}

impl Builder<'_> {
    fn allowed(&self, id: u32) -> bool {
        id != 0 && self.options.allow.iter().any(|(a, z)| (*a..=*z).contains(&id))
    }

    fn problem(&mut self, id: u32, rule: &SecRule, problem: String, allowed: bool) {
        if !allowed {
            self.problems.push(RuleError { id: (id != 0).then_some(id), location: rule.location.to_string(), problem });
        }
    }

    /// A chain's first rule, or `None` with its problem recorded.
    fn head(&mut self, rule: &SecRule) -> Option<Rule> {
        match self.rule(rule) {
            Ok(head) => Some(head),
            Err(problem) => {
                let id = rule.id().and_then(|i| u32::try_from(i).ok()).unwrap_or(0);
                let allowed = self.allowed(id);
                self.problem(id, rule, problem, allowed);
                None
            }
        }
    }

    fn marker(&mut self, name: &str) -> usize {
        let name = name.trim_matches(|c| c == '\'' || c == '"');
        if let Some(at) = self.markers.iter().position(|m| m == name) {
            return at;
        }
        self.markers.push(name.to_owned());
        self.markers.len() - 1
    }

    fn rule(&mut self, rule: &SecRule) -> Result<Rule, String> {
        let id = rule
            .id()
            .map(|i| u32::try_from(i).map_err(|_| format!("id {i} is out of range")))
            .transpose()?
            .unwrap_or(0);
        let phase = rule.phase();
        if !(1..=5).contains(&phase) {
            return Err(format!("phase {phase} does not exist"));
        }
        let mut head = Rule {
            id,
            phase,
            links: Vec::new(),
            tag_ids: Vec::new(),
            msg: None,
            logdata: None,
            severity: None,
            disruptive: Disruptive::Pass,
            status: None,
            log: true,
            location: rule.location.to_string(),
        };
        for action in &rule.actions {
            match action {
                Action::Metadata(MetadataAction::Tag(tag)) => {
                    let next = u32::try_from(self.tags.len()).map_err(|_| "too many distinct tags".to_owned())?;
                    head.tag_ids.push(*self.tags.entry(tag.clone()).or_insert(next));
                }
                Action::Metadata(MetadataAction::Msg(msg)) => head.msg = Some(Template::parse(msg)),
                Action::Metadata(MetadataAction::LogData(data)) => head.logdata = Some(Template::parse(data)),
                Action::Metadata(MetadataAction::Severity(s)) => head.severity = Some(*s),
                Action::Metadata(MetadataAction::Status(s)) => head.status = Some(*s),
                Action::Logging(LoggingAction::NoLog) => head.log = false,
                Action::Logging(LoggingAction::Log) => head.log = true,
                Action::Disruptive(d) => {
                    head.disruptive = match d {
                        DisruptiveAction::Deny => Disruptive::Deny,
                        DisruptiveAction::Drop => Disruptive::Drop,
                        DisruptiveAction::Redirect(url) => Disruptive::Redirect(url.clone()),
                        DisruptiveAction::Allow => Disruptive::Allow,
                        DisruptiveAction::AllowPhase => Disruptive::AllowPhase,
                        DisruptiveAction::AllowRequest => Disruptive::AllowRequest,
                        // The parser has already resolved `block` against
                        // the phase's default; one left is a block with no
                        // default, which CRS's anomaly scoring reads as pass.
                        DisruptiveAction::Block | DisruptiveAction::Pass => Disruptive::Pass,
                    };
                }
                _ => {}
            }
        }
        let link = self.link_for(rule)?;
        head.links.push(link);
        Ok(head)
    }

    fn link(&mut self, rule: &SecRule) -> Result<Link, String> {
        for action in &rule.actions {
            if let Action::Metadata(MetadataAction::Id(_)) = action {
                return Err("a chained rule may not have an id".into());
            }
        }
        self.link_for(rule)
    }

    fn link_for(&mut self, rule: &SecRule) -> Result<Link, String> {
        let mut targets = Vec::new();
        let mut exclusions = Vec::new();
        for spec in &rule.variables {
            targets.push(self.target(spec)?);
            for excluded in &spec.exclusions {
                let selector = self.selector(excluded)?;
                if !exclusions.iter().any(|e: &Selector| format!("{e:?}") == format!("{selector:?}")) {
                    exclusions.push(selector);
                }
            }
        }
        let mut transforms: Vec<Transform> = Vec::new();
        let mut multi_match = false;
        let mut capture = false;
        let mut setvars = Vec::new();
        let mut ctls = Vec::new();
        let mut skip_after = None;
        let mut skip = 0;
        for action in &rule.actions {
            match action {
                Action::Transformation(name) => match Transform::parse(name)? {
                    Some(t) => transforms.push(t),
                    None => transforms.clear(),
                },
                Action::Flow(FlowAction::MultiMatch) => multi_match = true,
                Action::Flow(FlowAction::SkipAfter(marker)) => skip_after = Some(self.marker(marker)),
                Action::Flow(FlowAction::Skip(n)) => skip = *n,
                Action::Flow(FlowAction::Chain) => {}
                Action::Data(DataAction::Capture) => capture = true,
                Action::Data(DataAction::SetVar(spec)) => setvars.push(setvar(spec)?),
                Action::Data(other) => return Err(format!("action {other:?} is not supported by this engine")),
                Action::Control(ctl) => ctls.push(control(ctl)?),
                Action::Logging(
                    LoggingAction::SanitiseArg(_) | LoggingAction::SanitiseMatched | LoggingAction::SanitizeMatched,
                )
                | Action::Logging(_)
                | Action::Metadata(_)
                | Action::Disruptive(_) => {}
            }
        }
        let chain = self.chain(&transforms)?;
        let negated = rule.operator.negated;
        let operator = self.operator(rule)?;
        Ok(Link {
            targets,
            exclusions,
            operator,
            negated,
            chain,
            multi_match,
            capture,
            setvars,
            ctls,
            skip_after,
            skip,
            // Assigned once exclusions from configuration are in (`compile`).
            target_set: None,
            pure: None,
        })
    }

    /// The id of a transformation chain, registering it and its prefixes.
    fn chain(&mut self, transforms: &[Transform]) -> Result<u16, String> {
        if let Some(at) = self.chains.iter().position(|c| c == transforms) {
            return u16::try_from(at).map_err(|_| "too many distinct transformation chains".to_owned());
        }
        let Some((last, prefix)) = transforms.split_last() else { return Ok(0) };
        let parent = self.chain(prefix)?;
        self.chains.push(transforms.to_vec());
        self.parents.push(Some((parent, *last)));
        u16::try_from(self.chains.len() - 1).map_err(|_| "too many distinct transformation chains".to_owned())
    }

    fn target(&mut self, spec: &VariableSpec) -> Result<Target, String> {
        let var = Var::from_parsed(spec.name).ok_or_else(|| format!("variable {:?} is not supported", spec.name))?;
        let key = self.key(var, spec.selection.as_ref())?;
        Ok(Target { var, key, count: spec.count_mode, slot: None })
    }

    fn key(&mut self, var: Var, selection: Option<&Selection>) -> Result<Key, String> {
        if var == Var::Xml {
            return match selection {
                None => Ok(Key::All),
                Some(Selection::Key(path)) if path.trim() == "/*" => Ok(Key::Name("/*".to_owned())),
                Some(Selection::Key(path)) if path.trim() == "//@*" => Ok(Key::Name("//@*".to_owned())),
                Some(other) => Err(format!("XML selector {other:?}: only XML:/* and XML://@* are supported")),
            };
        }
        match selection {
            None => Ok(Key::All),
            Some(_) if !var.is_collection() => Err(format!("{} takes no key", var.name())),
            Some(Selection::Key(name)) => Ok(Key::Name(name.trim_matches('\'').to_ascii_lowercase())),
            Some(Selection::Regex(pattern)) => {
                let re = regex::bytes::RegexBuilder::new(&operator::rewrite_pcre(pattern))
                    .case_insensitive(true)
                    .unicode(false)
                    .build()
                    .map_err(|e| format!("key regex /{pattern}/ does not compile: {e}"))?;
                let (literal, anchored) = required_literal(pattern);
                Ok(Key::Regex { regex: re, literal, anchored })
            }
        }
    }

    fn selector(&mut self, text: &str) -> Result<Selector, String> {
        let text = text.trim().trim_start_matches('!');
        let (name, selection) = match text.split_once(':') {
            Some((name, sel)) if sel.len() > 2 && sel.starts_with('/') && sel.ends_with('/') => {
                (name, Some(Selection::Regex(sel[1..sel.len() - 1].to_owned())))
            }
            Some((name, sel)) => (name, Some(Selection::Key(sel.to_owned()))),
            None => (text, None),
        };
        let parsed = VariableName::from_str(name).ok_or_else(|| format!("unknown variable `{name}`"))?;
        let var = Var::from_parsed(parsed).ok_or_else(|| format!("variable `{name}` is not supported"))?;
        let key = self.key(var, selection.as_ref())?;
        Ok(Selector { var, key })
    }

    fn operator(&mut self, rule: &SecRule) -> Result<Operator, String> {
        let arg = rule.operator.argument.as_str();
        let template = || Template::parse(arg);
        Ok(match rule.operator.name {
            OperatorName::Rx => {
                if arg.contains("%{") {
                    Operator::RxMacro(template())
                } else {
                    let regex = operator::compile_regex(arg)?;
                    Operator::Rx { regex, pattern: arg.into(), set: None }
                }
            }
            OperatorName::Pm => {
                let phrases: Vec<&str> = arg.split_whitespace().collect();
                Operator::Pm(operator::phrase_matcher(phrases)?)
            }
            OperatorName::PmFromFile | OperatorName::Pmf => {
                let mut phrases = Vec::new();
                for file in arg.split_whitespace() {
                    phrases.extend(self.data_file(rule, file)?);
                }
                Operator::Pm(operator::phrase_matcher(phrases)?)
            }
            OperatorName::StreQ => Operator::StrEq(template()),
            OperatorName::Contains => Operator::Contains(template()),
            OperatorName::ContainsWord => Operator::ContainsWord(template()),
            OperatorName::BeginsWith => Operator::BeginsWith(template()),
            OperatorName::EndsWith => Operator::EndsWith(template()),
            OperatorName::Within => Operator::Within(template()),
            OperatorName::StrMatch => Operator::StrMatch(template()),
            OperatorName::Eq => Operator::Num(Cmp::Eq, template()),
            OperatorName::Ne => Operator::Num(Cmp::Ne, template()),
            OperatorName::Gt => Operator::Num(Cmp::Gt, template()),
            OperatorName::Ge => Operator::Num(Cmp::Ge, template()),
            OperatorName::Lt => Operator::Num(Cmp::Lt, template()),
            OperatorName::Le => Operator::Num(Cmp::Le, template()),
            OperatorName::DetectSqli => Operator::DetectSqli,
            OperatorName::DetectXss => Operator::DetectXss,
            OperatorName::ValidateByteRange => Operator::ValidateByteRange(operator::byte_ranges(arg)?),
            OperatorName::ValidateUrlEncoding => Operator::ValidateUrlEncoding,
            OperatorName::ValidateUtf8Encoding => Operator::ValidateUtf8Encoding,
            OperatorName::IpMatch => {
                let mut nets = Vec::new();
                for item in arg.split([',', ' ']).map(str::trim).filter(|s| !s.is_empty()) {
                    let net = item
                        .parse::<ipnet::IpNet>()
                        .or_else(|_| item.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                        .map_err(|_| format!("@ipMatch: `{item}` is not an address or network"))?;
                    nets.push(net);
                }
                Operator::IpMatch(nets)
            }
            OperatorName::UnconditionalMatch => Operator::Unconditional,
            OperatorName::NoMatch => Operator::NoMatch,
            other => return Err(format!("operator {other:?} is not supported by this engine")),
        })
    }

    /// A `@pmFromFile` data file: one phrase per line, `#` comments, relative
    /// to the rule's file.
    fn data_file(&mut self, rule: &SecRule, file: &str) -> Result<Vec<String>, String> {
        let base: PathBuf =
            rule.location.file.as_deref().and_then(Path::parent).map_or_else(PathBuf::new, Path::to_path_buf);
        let path = if Path::new(file).is_absolute() { PathBuf::from(file) } else { base.join(file) };
        if let Some(cached) = self.data_files.get(&path) {
            return Ok(cached.clone());
        }
        let text = std::fs::read_to_string(&path).map_err(|e| format!("data file {}: {e}", path.display()))?;
        let phrases: Vec<String> =
            text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(str::to_owned).collect();
        self.data_files.insert(path, phrases.clone());
        Ok(phrases)
    }
}

fn setvar(spec: &SetVarSpec) -> Result<SetVar, String> {
    if !spec.collection.eq_ignore_ascii_case("tx") {
        return Err(format!("setvar on collection `{}`: only TX is supported", spec.collection));
    }
    let key = Template::parse(&spec.key.to_ascii_lowercase());
    let op = match &spec.value {
        SetVarValue::String(s) => SetOp::Set(Template::parse(s)),
        SetVarValue::Int(n) => SetOp::Set(Template::parse(&n.to_string())),
        SetVarValue::Increment(n) => SetOp::Add(Template::parse(&n.to_string())),
        SetVarValue::Decrement(n) => SetOp::Sub(Template::parse(&n.to_string())),
        SetVarValue::Delete => SetOp::Delete,
        SetVarValue::Macro(raw) => {
            if let Some(rest) = raw.strip_prefix('+') {
                SetOp::Add(Template::parse(rest))
            } else if let Some(rest) = raw.strip_prefix('-') {
                SetOp::Sub(Template::parse(rest))
            } else {
                SetOp::Set(Template::parse(raw))
            }
        }
    };
    Ok(SetVar { key, op })
}

fn ranges(text: &str) -> Result<Vec<(u32, u32)>, String> {
    let mut out = Vec::new();
    for item in text.split([' ', ',']).map(str::trim).filter(|s| !s.is_empty()) {
        let bad = || format!("`{item}` is not a rule id or range");
        let (a, z) = match item.split_once('-') {
            Some((a, z)) => (a.parse().map_err(|_| bad())?, z.parse().map_err(|_| bad())?),
            None => {
                let v = item.parse().map_err(|_| bad())?;
                (v, v)
            }
        };
        out.push((a, z));
    }
    Ok(out)
}

fn control(ctl: &ControlAction) -> Result<Ctl, String> {
    let value = ctl.value.trim();
    Ok(match ctl.directive.to_ascii_lowercase().as_str() {
        "ruleremovebyid" => Ctl::RemoveById(ranges(value)?),
        "ruleremovebytag" => Ctl::RemoveByTag(value.to_owned()),
        "ruleremovetargetbyid" => {
            let (ids, target) =
                value.split_once(';').ok_or_else(|| format!("ctl:ruleRemoveTargetById={value}: no target"))?;
            Ctl::RemoveTargetById(ranges(ids)?, target.to_owned())
        }
        "ruleremovetargetbytag" => {
            let (tag, target) =
                value.split_once(';').ok_or_else(|| format!("ctl:ruleRemoveTargetByTag={value}: no target"))?;
            Ctl::RemoveTargetByTag(tag.to_owned(), target.to_owned())
        }
        "ruleengine" => Ctl::Engine(match value.to_ascii_lowercase().as_str() {
            "on" => EngineMode::On,
            "off" => EngineMode::Off,
            "detectiononly" => EngineMode::DetectionOnly,
            _ => return Err(format!("ctl:ruleEngine={value}")),
        }),
        "requestbodyprocessor" => Ctl::BodyProcessor(
            crate::data::BodyProcessor::parse(value).ok_or_else(|| format!("ctl:requestBodyProcessor={value}"))?,
        ),
        "auditengine" | "auditlogparts" | "forcerequestbodyvariable" | "requestbodyaccess" => Ctl::Ignored,
        other => return Err(format!("ctl:{other} is not supported by this engine")),
    })
}
