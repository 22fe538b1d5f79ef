//! Running a program over one transaction, with libmodsecurity 3's
//! semantics.
//!
//! Decision rules:
//! - Rules run in file order within a phase. A rule matches when its
//!   operator matches at least one of its (transformed) target values;
//!   every matching value updates `MATCHED_VAR(S)` and runs the link's
//!   `setvar`s (so a rule that matches three arguments scores three
//!   times, as in ModSecurity). A chain matches when every link does, in
//!   order, each seeing what the previous one matched and captured.
//! - When the whole chain matched, each link's `ctl`, `skip` and
//!   `skipAfter` run (innermost first), then the head's disruptive action:
//!   in `DetectionOnly` none acts. A rule that did not match clears
//!   `MATCHED_VAR(S)`.
//! - Each value is transformed once per distinct transformation chain, and
//!   each transformed value runs once through each regex set of its chain
//!   (a multiMatch set: each candidate); a rule whose member no value of
//!   its targets (exclusions aside) matches ends there, and its own regex
//!   runs only on the values the set says it matches and only when
//!   captures are wanted.
//! - What is worked out about a value (forms, set matches, byte-only
//!   operators that did not match) is kept by value id — short values with
//!   the same bytes share one — and left to the thread's memo at the end.

use std::borrow::Cow;
use std::rc::Rc;

use hashbrown::HashMap;
use regex_automata::{Input, PatternSet};

use crate::data::{BodyProcessor, Data, Entry, ResponseScalar};
use crate::macros::{Reference, Resolve};
use crate::memo;
use crate::operator::{self, Operator};
use crate::rules::{Ctl, Disruptive, EngineMode, Item, Key, Link, Program, Rule, SetOp, Target, Var};
use crate::{Intervention, Match};

/// The mutable state of a transaction.
#[derive(Debug, Default)]
pub struct State {
    pub(crate) tx: HashMap<String, Vec<u8>>,
    matched_vars: MatchedVars,
    removed_ids: Vec<(u32, u32)>,
    /// By tag id ([`Program::tags`]).
    removed_tags: Vec<u32>,
    removed_targets_by_id: Vec<((u32, u32), String)>,
    removed_targets_by_tag: Vec<(u32, String)>,
    pub(crate) engine: EngineMode,
    pub(crate) body_processor: Option<BodyProcessor>,
    /// What is known of each value with an id, by [`slot`].
    known: Vec<Known>,
    /// The program `known` was worked out for.
    program: u64,
    /// The pattern set searches fill, emptied after each.
    scratch: Option<PatternSet>,
    /// The thread's search caches of the regex sets, by set, with the id of
    /// their program; taken at the first search, given back by `remember`.
    caches: Option<(u64, Vec<regex_automata::meta::Cache>)>,
    /// No pattern matched (shared: most searches).
    none_found: Found,
    pub(crate) matches: Vec<Match>,
    pub(crate) intervention: Option<Intervention>,
    /// `allow:request` (or `allow`) fired: the request phases are over.
    pub(crate) allowed: bool,
    /// `allow` fired: the response phases are skipped too.
    allowed_response: bool,
}

/// What a transaction keeps from its request phases for its response
/// phases: TX variables, runtime exclusions, the engine mode and a full
/// `allow`. It holds no borrowed or thread-bound data, so the embedding
/// server can keep it while the upstream answers.
#[derive(Debug, Default)]
pub struct Carry {
    tx: HashMap<String, Vec<u8>>,
    removed_ids: Vec<(u32, u32)>,
    /// By tag id ([`Program::tags`]).
    removed_tags: Vec<u32>,
    removed_targets_by_id: Vec<((u32, u32), String)>,
    removed_targets_by_tag: Vec<(u32, String)>,
    engine: EngineMode,
    allowed_response: bool,
}

impl State {
    /// A fresh transaction in `engine` mode.
    #[must_use]
    pub fn new(engine: EngineMode) -> Self {
        // Sized for CRS v4 at PL1 on an ordinary request (about 70 TX
        // variables, a few hundred transformed values and set passes), so
        // the maps do not grow rule by rule.
        Self {
            engine,
            tx: HashMap::with_capacity(128),
            known: Vec::with_capacity(128),
            matches: Vec::with_capacity(64),
            ..Self::default()
        }
    }
}

impl State {
    /// Keeps what the response phases need. A request intervention is not
    /// kept: the response phases run only for a request that went on to
    /// the upstream (in detection mode, despite it).
    #[must_use]
    pub fn carry(self) -> Carry {
        Carry {
            tx: self.tx,
            removed_ids: self.removed_ids,
            removed_tags: self.removed_tags,
            removed_targets_by_id: self.removed_targets_by_id,
            removed_targets_by_tag: self.removed_targets_by_tag,
            engine: self.engine,
            allowed_response: self.allowed_response,
        }
    }

    /// Resumes a transaction for its response phases.
    #[must_use]
    pub fn resume(carry: Carry) -> Self {
        Self {
            tx: carry.tx,
            removed_ids: carry.removed_ids,
            removed_tags: carry.removed_tags,
            removed_targets_by_id: carry.removed_targets_by_id,
            removed_targets_by_tag: carry.removed_targets_by_tag,
            allowed_response: carry.allowed_response,
            ..Self::new(carry.engine)
        }
    }
}

/// One value to inspect.
#[derive(Clone)]
struct Value<'d> {
    var: Var,
    key: Cow<'d, [u8]>,
    value: Cow<'d, [u8]>,
    /// For the caches; `None` for values that change (TX, MATCHED_*).
    id: Option<u32>,
}

impl Value<'_> {
    /// Writes its name (`ARGS:id`; a whole variable: `REQUEST_URI`) to `out`.
    fn write_name(&self, out: &mut String) {
        out.push_str(self.var.name());
        if !self.key.is_empty() {
            out.push(':');
            out.push_str(&String::from_utf8_lossy(&self.key));
        }
    }
}

/// `MATCHED_VARS` (names and values), the last of them `MATCHED_VAR` and
/// `MATCHED_VAR_NAME`. Cleared often and refilled: the entries' buffers
/// are kept and written over, so recording a match allocates nothing in
/// the steady state.
#[derive(Debug, Default)]
struct MatchedVars {
    entries: Vec<(String, Vec<u8>)>,
    len: usize,
}

impl MatchedVars {
    fn clear(&mut self) {
        self.len = 0;
    }

    /// Records a match: `name` writes its name, `value` is its value.
    fn push(&mut self, name: impl FnOnce(&mut String), value: &[u8]) {
        if self.len == self.entries.len() {
            self.entries.push((String::new(), Vec::new()));
        }
        let (n, v) = &mut self.entries[self.len];
        n.clear();
        name(n);
        v.clear();
        v.extend_from_slice(value);
        self.len += 1;
    }

    fn last(&self) -> Option<&(String, Vec<u8>)> {
        self.entries[..self.len].last()
    }

    fn iter(&self) -> std::slice::Iter<'_, (String, Vec<u8>)> {
        self.entries[..self.len].iter()
    }
}

/// Runs `phase` (1–5).
pub fn run_phase<'a>(program: &'a Program, phase: u8, data: &'a Data, state: &mut State) {
    let allowed = if phase <= 2 { state.allowed } else { state.allowed_response };
    if state.engine == EngineMode::Off || allowed || state.intervention.is_some() {
        return;
    }
    let Some(items) = program.phases.get(usize::from(phase).wrapping_sub(1)) else { return };
    let mut skip_to: Option<usize> = None;
    let mut skip_next: u32 = 0;
    // Sized for CRS v4 at PL1 (about 70 target and regex set pairs per
    // request), so the maps do not grow rule by rule.
    let mut cache = PhaseCache {
        values: vec![None; program.target_sets],
        targets: vec![None; program.target_slots],
        removed_values: HashMap::with_capacity(16),
        signatures: Vec::new(),
        any_hit: HashMap::with_capacity(96),
    };
    for item in items {
        let index = match *item {
            Item::Marker(m) => {
                if skip_to == Some(m) {
                    skip_to = None;
                }
                continue;
            }
            Item::Rule(index) => index,
        };
        if skip_to.is_some() {
            continue;
        }
        if skip_next > 0 {
            skip_next -= 1;
            continue;
        }
        let rule = &program.rules[index];
        if rule.id != 0 && state.removed_ids.iter().any(|(a, z)| (*a..=*z).contains(&rule.id)) {
            continue;
        }
        if state.removed_tags.iter().any(|t| rule.tag_ids.contains(t)) {
            continue;
        }
        let mut first: Option<(String, Vec<u8>)> = None;
        if !eval_link(program, rule, 0, data, state, &mut cache, &mut first) {
            continue;
        }
        // The whole chain matched: innermost link's actions first.
        for link in rule.links.iter().rev() {
            for ctl in &link.ctls {
                apply_ctl(program, ctl, state);
            }
            if let Some(marker) = link.skip_after {
                skip_to = Some(marker);
            }
            if link.skip > 0 {
                skip_next = link.skip;
            }
        }
        // What a `nolog` rule matched is never reported: no message, no
        // location (CRS's bookkeeping rules match dozens of times per request).
        let ctx = Ctx { data, state, rule };
        let msg = rule.msg.as_ref().filter(|_| rule.log).map(|m| String::from_utf8_lossy(&m.expand(&ctx)).into_owned());
        let (location, value) = first.unwrap_or_default();
        state.matches.push(Match { id: rule.id, phase, msg, location, value, logged: rule.log });
        if state.engine != EngineMode::On {
            continue;
        }
        match &rule.disruptive {
            Disruptive::Pass => {}
            Disruptive::Deny | Disruptive::Drop | Disruptive::Redirect(_) => {
                state.intervention = Some(Intervention { status: rule.status.unwrap_or(403), rule: rule.id });
                return;
            }
            Disruptive::Allow => {
                state.allowed = true;
                state.allowed_response = true;
                return;
            }
            Disruptive::AllowRequest => {
                state.allowed = phase <= 2;
                return;
            }
            Disruptive::AllowPhase => return,
        }
    }
}

fn apply_ctl(program: &Program, ctl: &Ctl, state: &mut State) {
    match ctl {
        Ctl::RemoveById(ranges) => state.removed_ids.extend(ranges.iter().copied()),
        // A tag no rule has removes nothing.
        Ctl::RemoveByTag(tag) => state.removed_tags.extend(program.tags.get(tag)),
        Ctl::RemoveTargetById(ranges, target) => {
            state.removed_targets_by_id.extend(ranges.iter().map(|r| (*r, target.clone())));
        }
        Ctl::RemoveTargetByTag(tag, target) => {
            if let Some(&tag) = program.tags.get(tag) {
                state.removed_targets_by_tag.push((tag, target.clone()));
            }
        }
        Ctl::Engine(mode) => state.engine = *mode,
        Ctl::BodyProcessor(p) => state.body_processor = Some(*p),
        Ctl::Ignored => {}
    }
}

/// What a phase resolves once and every rule shares: the values of each
/// target of request data and of each fixed target set, and per (target
/// set, regex set) which members of the set match any value of the set's
/// targets. That last is taken before exclusions, so it can only say too
/// much: a rule it lets through checks its own values one by one.
///
/// A rule that `ctl:ruleRemoveTarget…` touched (CRS's 941010 does it to
/// every XSS rule on nearly every request) sees its target set minus the
/// removals that apply to it; rules with the same removals share that too,
/// under the removals' signature (0: none).
struct PhaseCache<'d> {
    values: Vec<Option<Rc<Vec<Value<'d>>>>>,
    /// Values of each target with a slot (target sets share targets:
    /// `REQUEST_COOKIES`, `ARGS_NAMES`, … are in most of CRS's).
    targets: Vec<Option<Rc<[Value<'d>]>>>,
    /// Values of (target set, signature) for signatures other than 0.
    removed_values: HashMap<(u32, u32), Rc<Vec<Value<'d>>>>,
    /// Signatures seen: the indices of the removals that apply (ids first,
    /// then tags offset by the id list's length), numbered from 1.
    signatures: Vec<Vec<u32>>,
    /// Per (target set, regex set): the members some value of the set's
    /// targets (exclusions aside) matches, one bit each.
    any_hit: HashMap<(u32, usize), Box<[u64]>>,
}

impl PhaseCache<'_> {
    /// The signature of the runtime removals that apply to `rule` (0: none).
    fn signature(&mut self, rule: &Rule, state: &State) -> u32 {
        if state.removed_targets_by_id.is_empty() && state.removed_targets_by_tag.is_empty() {
            return 0;
        }
        let by_id = state
            .removed_targets_by_id
            .iter()
            .enumerate()
            .filter(|(_, ((a, z), _))| rule.id != 0 && (*a..=*z).contains(&rule.id))
            .map(|(i, _)| i);
        let offset = state.removed_targets_by_id.len();
        let by_tag = state
            .removed_targets_by_tag
            .iter()
            .enumerate()
            .filter(|(_, (tag, _))| rule.tag_ids.contains(tag))
            .map(|(i, _)| i + offset);
        let applying: Vec<u32> = by_id.chain(by_tag).filter_map(|i| u32::try_from(i).ok()).collect();
        if applying.is_empty() {
            return 0;
        }
        match self.signatures.iter().position(|s| *s == applying) {
            Some(at) => u32::try_from(at + 1).unwrap_or(u32::MAX),
            None => {
                self.signatures.push(applying);
                u32::try_from(self.signatures.len()).unwrap_or(u32::MAX)
            }
        }
    }
}

/// What a transaction worked out about one value, kept for every rule
/// that looks at it.
#[derive(Debug, Default)]
pub struct Known {
    /// Its bytes, when it is short enough to be remembered across
    /// transactions ([`crate::memo`]).
    key: Option<Box<[u8]>>,
    /// Its forms, by transformation chain (empty until first needed).
    forms: Box<[Form]>,
    /// Which members of each set match it where the set looks (through
    /// the set's chain; a multiMatch set: through any candidate), by set.
    sets: Box<[Option<Found>]>,
    /// Which byte-only operators (by `Link::pure`) it, through their
    /// link's chain (a multiMatch link: any candidate), does not match.
    no_match: Box<[u64]>,
}

/// The members of a set that matched, by index in the set, in ascending
/// order (a few at most on ordinary values).
type Found = Rc<[u32]>;

/// A value through one transformation chain.
#[derive(Debug, Clone, Default)]
enum Form {
    #[default]
    Unknown,
    /// The chain left it as it was.
    Same,
    Changed(Rc<[u8]>),
}

/// The index in [`State::known`] of value `id`.
fn slot(id: u32) -> usize {
    usize::try_from(id).unwrap_or(usize::MAX)
}

impl State {
    /// What is known of value `id` (whose bytes are `bytes`): what this
    /// thread remembers of those bytes, else fresh tables sized for
    /// `program`.
    #[inline]
    fn known(&mut self, program: &Program, id: u32, bytes: &[u8]) -> &mut Known {
        let at = slot(id);
        if at >= self.known.len() {
            self.known.resize_with(at + 1, Known::default);
        }
        if self.known[at].forms.is_empty() {
            self.program = program.id;
            self.known[at] = match memo::recall(program.id, bytes) {
                Some((key, known)) => Known { key: Some(key), ..known },
                None => Known {
                    key: (bytes.len() <= memo::LONGEST).then(|| bytes.into()),
                    forms: vec![Form::Unknown; program.chains.len()].into_boxed_slice(),
                    sets: vec![None; program.sets.len()].into_boxed_slice(),
                    no_match: vec![0; program.pure_ops.div_ceil(64)].into_boxed_slice(),
                },
            };
        }
        &mut self.known[at]
    }

    /// Leaves what this transaction worked out about its short values to
    /// the next transactions on this thread.
    pub fn remember(&mut self) {
        if let Some((id, caches)) = self.caches.take() {
            memo::keep_caches(id, caches);
        }
        for mut known in self.known.drain(..) {
            if let Some(key) = known.key.take() {
                memo::keep(self.program, key, known);
            }
        }
    }
}

/// A transformed value: the original, a cached copy, or a fresh one.
enum Transformed<'v> {
    Borrowed(&'v [u8]),
    Shared(Rc<[u8]>),
    Owned(Vec<u8>),
}

impl AsRef<[u8]> for Transformed<'_> {
    fn as_ref(&self) -> &[u8] {
        match self {
            Self::Borrowed(b) => b,
            Self::Shared(s) => s,
            Self::Owned(o) => o,
        }
    }
}

/// Evaluates link `at` of `rule` and, when it matches, the rest of the chain.
fn eval_link<'d>(
    program: &'d Program,
    rule: &'d Rule,
    at: usize,
    data: &'d Data,
    state: &mut State,
    cache: &mut PhaseCache<'d>,
    first: &mut Option<(String, Vec<u8>)>,
) -> bool {
    let link = &rule.links[at];
    if link.targets.is_empty() {
        // `SecAction`: no targets, the actions run unconditionally.
        for setvar in &link.setvars {
            run_setvar(setvar, rule, data, state);
        }
        return at + 1 >= rule.links.len() || eval_link(program, rule, at + 1, data, state, cache, first);
    }
    // The commonest rules of all, CRS's bookkeeping on one TX variable
    // (`TX:DETECTION_PARANOIA_LEVEL "@lt 2"`) or on whether it is set
    // (`&TX:inbound_anomaly_score_threshold "@eq 0"`): decided, and when
    // they match recorded as `on_value` would, without building values.
    if let [Target { var: Var::Tx, key: Key::Name(name), count, .. }] = link.targets.as_slice()
        && link.chain == 0
        && !link.multi_match
        && link.exclusions.is_empty()
        && let Operator::Num(cmp, param) = &link.operator
        && !(at == 0 && has_runtime_removals(rule, state))
    {
        let found = state.tx.get(name.as_str());
        let value: Option<&[u8]> = match (count, found) {
            (true, found) => Some(if found.is_some() { b"1" } else { b"0" }),
            (false, found) => found.map(Vec::as_slice),
        };
        let hit = value.is_some_and(|value| {
            let param = operator::stoi(&param.expand(&Ctx { data, state, rule }));
            operator::compare(*cmp, operator::stoi(value), param) != link.negated
        });
        // A count is named after its collection, as `Value::write_name`
        // names it.
        let (true, Some(value)) = (hit, value) else {
            state.matched_vars.clear();
            return false;
        };
        state.matched_vars.push(
            |n| {
                n.push_str("TX");
                if !count {
                    n.push(':');
                    n.push_str(name);
                }
            },
            value,
        );
        if rule.log
            && first.is_none()
            && let Some((name, value)) = state.matched_vars.last()
        {
            *first = Some((name.clone(), value.clone()));
        }
        for setvar in &link.setvars {
            run_setvar(setvar, rule, data, state);
        }
        return at + 1 >= rule.links.len() || eval_link(program, rule, at + 1, data, state, cache, first);
    }
    // Whether any value of the link's targets can match its pattern, from
    // each target's values (resolved and searched once per phase, in
    // whatever target sets it appears) before exclusions: a superset, which
    // at worst lets a rule through to the value-by-value check below. Most
    // rules end here without their values being listed.
    let set = match &link.operator {
        Operator::Rx { set: Some((set_id, index)), .. } => Some((*set_id, *index)),
        _ => None,
    };
    if let (Some(ts), Some((set_id, index))) = (link.target_set, set)
        && !link.negated
    {
        let hit = match cache.any_hit.get(&(ts, set_id)) {
            Some(hits) => has_bit(hits, index),
            None => {
                let hits = target_set_hits(program, rule, link, set_id, data, state, cache);
                let hit = has_bit(&hits, index);
                cache.any_hit.insert((ts, set_id), hits);
                hit
            }
        };
        if !hit {
            state.matched_vars.clear();
            return false;
        }
    }
    let signature = if at == 0 { cache.signature(rule, state) } else { 0 };
    let values: Rc<Vec<Value<'d>>> = match (link.target_set, signature) {
        (Some(set), 0) => {
            if let Some(values) = &cache.values[set as usize] {
                Rc::clone(values)
            } else {
                let values = Rc::new(resolve_targets(rule, link, false, data, state, &mut cache.targets));
                cache.values[set as usize] = Some(Rc::clone(&values));
                values
            }
        }
        (Some(set), signature) => match cache.removed_values.get(&(set, signature)) {
            Some(values) => Rc::clone(values),
            None => {
                let values = Rc::new(resolve_targets(rule, link, true, data, state, &mut cache.targets));
                cache.removed_values.insert((set, signature), Rc::clone(&values));
                values
            }
        },
        (None, _) => Rc::new(resolve_targets(rule, link, at == 0, data, state, &mut cache.targets)),
    };
    let mut matched = false;
    for value in values.iter() {
        // The values the set ruled out cost nothing more.
        if let Some((set_id, index)) = set
            && !link.negated
            && value.id.is_some()
            && !with_set_matches(program, set_id, value, state, |found| has_member(found, index))
        {
            continue;
        }
        // A byte-only operator that did not match these bytes before.
        let pure = link.pure.zip(value.id).map(|(op, id)| (usize::from(op), id));
        if let Some((op, id)) = pure
            && state.known(program, id, &value.value).no_match[op / 64] & (1 << (op % 64)) != 0
        {
            continue;
        }
        let mut hit = false;
        if link.multi_match {
            for candidate in candidates(program, link.chain, value, state) {
                hit |= on_value(program, rule, link, value, candidate.as_ref(), data, state, first);
            }
        } else {
            let candidate = transformed_one(program, link, value, state);
            hit = on_value(program, rule, link, value, candidate.as_ref(), data, state, first);
        }
        if let Some((op, id)) = pure
            && !hit
        {
            state.known(program, id, &value.value).no_match[op / 64] |= 1 << (op % 64);
        }
        matched |= hit;
    }
    if !matched {
        state.matched_vars.clear();
        return false;
    }
    if at + 1 < rule.links.len() {
        return eval_link(program, rule, at + 1, data, state, cache, first);
    }
    true
}

/// Runs the operator on one (transformed) value; on a match, records it and
/// runs the link's `setvar`s.
#[allow(clippy::too_many_arguments)]
fn on_value(
    program: &Program,
    rule: &Rule,
    link: &Link,
    value: &Value<'_>,
    candidate: &[u8],
    data: &Data,
    state: &mut State,
    first: &mut Option<(String, Vec<u8>)>,
) -> bool {
    if !operate(program, rule, link, value, candidate, data, state) {
        return false;
    }
    // MATCHED_VAR and MATCHED_VAR_NAME are the last of MATCHED_VARS: both
    // are set on every match and cleared together.
    state.matched_vars.push(|n| value.write_name(n), candidate);
    if rule.log
        && first.is_none()
        && let Some((name, _)) = state.matched_vars.last()
    {
        *first = Some((name.clone(), value.value.to_vec()));
    }
    for setvar in &link.setvars {
        run_setvar(setvar, rule, data, state);
    }
    true
}

/// Whether `ctl:ruleRemoveTarget…` has touched this rule in this transaction.
fn has_runtime_removals(rule: &Rule, state: &State) -> bool {
    (!state.removed_targets_by_id.is_empty()
        && state.removed_targets_by_id.iter().any(|((a, z), _)| rule.id != 0 && (*a..=*z).contains(&rule.id)))
        || (!state.removed_targets_by_tag.is_empty()
            && state.removed_targets_by_tag.iter().any(|(tag, _)| rule.tag_ids.contains(tag)))
}

/// The values a link inspects, minus its exclusions.
fn resolve_targets<'d>(
    rule: &Rule,
    link: &'d Link,
    head: bool,
    data: &'d Data,
    state: &State,
    resolved: &mut [Option<Rc<[Value<'d>]>>],
) -> Vec<Value<'d>> {
    let mut out = Vec::with_capacity(link.targets.iter().map(|t| most_values(t, data)).sum());
    for target in &link.targets {
        if head && target_removed(rule, target.var, None, state) {
            continue;
        }
        let before = out.len();
        match target.slot {
            Some(slot) => out.extend_from_slice(&slot_values(target, slot, data, state, resolved)),
            None => resolve(target, data, state, &mut out),
        }
        if target.count {
            let count = out.len() - before;
            out.truncate(before);
            out.push(Value {
                var: target.var,
                key: Cow::Borrowed(b""),
                value: Cow::Owned(count.to_string().into_bytes()),
                id: None,
            });
            continue;
        }
        if link.exclusions.is_empty() && !head {
            continue;
        }
        let mut kept = before;
        for k in before..out.len() {
            let v = &out[k];
            let excluded = link.exclusions.iter().any(|e| e.var == v.var && e.key.selects(&v.key))
                || (head && target_removed(rule, v.var, Some(&v.key), state));
            if !excluded {
                out.swap(kept, k);
                kept += 1;
            }
        }
        out.truncate(kept);
    }
    out
}

/// The values of `target`, whose slot is `slot`: resolved once per phase.
fn slot_values<'d>(
    target: &'d Target,
    slot: u32,
    data: &'d Data,
    state: &State,
    resolved: &mut [Option<Rc<[Value<'d>]>>],
) -> Rc<[Value<'d>]> {
    let at = slot as usize;
    if let Some(Some(values)) = resolved.get(at) {
        return Rc::clone(values);
    }
    let mut out = Vec::new();
    resolve(target, data, state, &mut out);
    let values: Rc<[Value<'d>]> = out.into();
    if let Some(cell) = resolved.get_mut(at) {
        *cell = Some(Rc::clone(&values));
    }
    values
}

/// The members of set `set_id` that some value of `link`'s targets
/// matches, exclusions (static and runtime) aside; one bit each.
fn target_set_hits<'d>(
    program: &Program,
    rule: &'d Rule,
    link: &'d Link,
    set_id: usize,
    data: &'d Data,
    state: &mut State,
    cache: &mut PhaseCache<'d>,
) -> Box<[u64]> {
    let words = program.sets[set_id].len.div_ceil(64);
    let mut hits = vec![0_u64; words];
    let mark = |hits: &mut [u64], found: &[u32]| {
        for &member in found {
            if let Some(word) = hits.get_mut(member as usize / 64) {
                *word |= 1 << (member % 64);
            }
        }
    };
    if link.targets.iter().any(|t| t.slot.is_none()) {
        // A count among them: the values as listed.
        for value in &resolve_targets(rule, link, false, data, state, &mut cache.targets) {
            with_set_matches(program, set_id, value, state, |found| mark(&mut hits, found));
        }
        return hits.into_boxed_slice();
    }
    for target in &link.targets {
        let Some(slot) = target.slot else { continue };
        for value in slot_values(target, slot, data, state, &mut cache.targets).iter() {
            with_set_matches(program, set_id, value, state, |found| mark(&mut hits, found));
        }
    }
    hits.into_boxed_slice()
}

/// At most how many values `target` resolves to (so the list is
/// allocated once).
fn most_values(target: &Target, data: &Data) -> usize {
    let of = |entries: &[Entry]| if matches!(target.key, Key::Name(_)) { entries.len().min(1) } else { entries.len() };
    match target.var {
        _ if target.count => 1,
        Var::Args | Var::ArgsNames => of(&data.args_get) + of(&data.args_post),
        Var::ArgsGet | Var::ArgsGetNames => of(&data.args_get),
        Var::ArgsPost | Var::ArgsPostNames => of(&data.args_post),
        Var::RequestHeaders | Var::RequestHeadersNames => of(&data.headers),
        Var::RequestCookies | Var::RequestCookiesNames => of(&data.cookies),
        Var::Files | Var::FilesNames => of(&data.files),
        Var::FilesSizes => of(&data.files_sizes),
        Var::MultipartPartHeaders => of(&data.part_headers),
        Var::Xml => 1 + data.xml_attributes.len(),
        _ => 1,
    }
}

/// `ctl:ruleRemoveTarget…` for this rule and variable (`key`: a value's key,
/// `None`: the whole variable).
fn target_removed(rule: &Rule, var: Var, key: Option<&[u8]>, state: &State) -> bool {
    let hit = |target: &str| {
        let (name, sel) = target.split_once(':').map_or((target, None), |(n, k)| (n, Some(k)));
        if !name.eq_ignore_ascii_case(var.name()) {
            return false;
        }
        match (sel, key) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(sel), Some(key)) => sel.as_bytes().eq_ignore_ascii_case(key),
        }
    };
    state.removed_targets_by_id.iter().any(|((a, z), t)| rule.id != 0 && (*a..=*z).contains(&rule.id) && hit(t))
        || state.removed_targets_by_tag.iter().any(|(tag, t)| rule.tag_ids.contains(tag) && hit(t))
}

fn entries<'d>(var: Var, entries: &'d [Entry], key: &Key, names: bool, out: &mut Vec<Value<'d>>) {
    for e in entries.iter().filter(|e| key.selects(&e.key)) {
        out.push(Value {
            var,
            key: Cow::Borrowed(&e.key),
            value: Cow::Borrowed(if names { &e.key } else { &e.value }),
            id: Some(if names { e.key_id } else { e.id }),
        });
    }
}

fn scalar<'d>(var: Var, value: Option<&'d Entry>, out: &mut Vec<Value<'d>>) {
    if let Some(e) = value {
        out.push(Value { var, key: Cow::Borrowed(b""), value: Cow::Borrowed(&e.value), id: Some(e.id) });
    }
}

fn owned<'d>(var: Var, key: &[u8], value: Vec<u8>, out: &mut Vec<Value<'d>>) {
    out.push(Value { var, key: Cow::Owned(key.to_vec()), value: Cow::Owned(value), id: None });
}

fn resolve<'d>(target: &'d Target, data: &'d Data, state: &State, out: &mut Vec<Value<'d>>) {
    let key = &target.key;
    match target.var {
        Var::Args => {
            entries(Var::Args, &data.args_get, key, false, out);
            entries(Var::Args, &data.args_post, key, false, out);
        }
        Var::ArgsGet => entries(Var::ArgsGet, &data.args_get, key, false, out),
        Var::ArgsPost => entries(Var::ArgsPost, &data.args_post, key, false, out),
        Var::ArgsNames => {
            entries(Var::ArgsNames, &data.args_get, key, true, out);
            entries(Var::ArgsNames, &data.args_post, key, true, out);
        }
        Var::ArgsGetNames => entries(Var::ArgsGetNames, &data.args_get, key, true, out),
        Var::ArgsPostNames => entries(Var::ArgsPostNames, &data.args_post, key, true, out),
        Var::ArgsCombinedSize => {
            let size: usize = data.args_get.iter().chain(&data.args_post).map(|e| e.key.len() + e.value.len()).sum();
            owned(Var::ArgsCombinedSize, b"", size.to_string().into_bytes(), out);
        }
        Var::RequestHeaders => entries(Var::RequestHeaders, &data.headers, key, false, out),
        Var::RequestHeadersNames => entries(Var::RequestHeadersNames, &data.headers, key, true, out),
        Var::RequestCookies => entries(Var::RequestCookies, &data.cookies, key, false, out),
        Var::RequestCookiesNames => entries(Var::RequestCookiesNames, &data.cookies, key, true, out),
        Var::Scalar(s) => scalar(target.var, data.get(s), out),
        Var::Files => entries(Var::Files, &data.files, key, false, out),
        Var::FilesNames => entries(Var::FilesNames, &data.files, key, true, out),
        Var::FilesSizes => entries(Var::FilesSizes, &data.files_sizes, key, false, out),
        Var::FilesCombinedSize => {
            let size: i64 = data.files_sizes.iter().map(|e| operator::stoi(&e.value)).sum();
            owned(Var::FilesCombinedSize, b"", size.to_string().into_bytes(), out);
        }
        Var::MultipartPartHeaders => entries(Var::MultipartPartHeaders, &data.part_headers, key, false, out),
        Var::Multipart(name) => {
            if data.body_processor == Some(BodyProcessor::Multipart) {
                let set = data.multipart_flag(name);
                owned(target.var, b"", if set { b"1".to_vec() } else { b"0".to_vec() }, out);
            }
        }
        Var::Xml => {
            if let Some(text) = &data.xml_text
                && key.selects(b"/*")
            {
                out.push(Value {
                    var: Var::Xml,
                    key: Cow::Borrowed(b"/*"),
                    value: Cow::Borrowed(&text.value),
                    id: Some(text.id),
                });
            }
            if key.selects(b"//@*") {
                for a in &data.xml_attributes {
                    out.push(Value {
                        var: Var::Xml,
                        key: Cow::Borrowed(b"//@*"),
                        value: Cow::Borrowed(&a.value),
                        id: Some(a.id),
                    });
                }
            }
        }
        Var::Tx => {
            if let Key::Name(name) = key {
                // Keys are stored lower-case, as selectors are.
                if let Some(value) = state.tx.get(name.as_str()) {
                    out.push(Value {
                        var: Var::Tx,
                        key: Cow::Borrowed(name.as_bytes()),
                        value: Cow::Owned(value.clone()),
                        id: None,
                    });
                }
                return;
            }
            let mut found: Vec<(&String, &Vec<u8>)> =
                state.tx.iter().filter(|(k, _)| key.selects(k.as_bytes())).collect();
            found.sort_by(|a, b| a.0.cmp(b.0));
            for (k, v) in found {
                owned(Var::Tx, k.as_bytes(), v.clone(), out);
            }
        }
        Var::MatchedVar => {
            if let Some((_, v)) = state.matched_vars.last() {
                owned(Var::MatchedVar, b"", v.clone(), out);
            }
        }
        Var::MatchedVarName => {
            if let Some((n, _)) = state.matched_vars.last() {
                owned(Var::MatchedVarName, b"", n.clone().into_bytes(), out);
            }
        }
        Var::MatchedVars => {
            for (n, v) in state.matched_vars.iter() {
                if key.selects(n.as_bytes()) {
                    owned(Var::MatchedVars, n.as_bytes(), v.clone(), out);
                }
            }
        }
        Var::MatchedVarsNames => {
            for (n, _) in state.matched_vars.iter() {
                if key.selects(n.as_bytes()) {
                    owned(Var::MatchedVarsNames, n.as_bytes(), n.clone().into_bytes(), out);
                }
            }
        }
        Var::ReqbodyProcessor => {
            if let Some(p) = state.body_processor.or(data.body_processor) {
                owned(Var::ReqbodyProcessor, b"", p.name().as_bytes().to_vec(), out);
            }
        }
        Var::ReqbodyError => {
            if data.get(crate::data::Scalar::Body).is_some() {
                owned(
                    Var::ReqbodyError,
                    b"",
                    if data.body_error.is_some() { b"1".to_vec() } else { b"0".to_vec() },
                    out,
                );
            }
        }
        Var::ReqbodyErrorMsg => {
            if let Some(message) = &data.body_error {
                owned(Var::ReqbodyErrorMsg, b"", message.as_bytes().to_vec(), out);
            }
        }
        Var::UniqueId => owned(Var::UniqueId, b"", b"portcullis".to_vec(), out),
        Var::Duration => owned(Var::Duration, b"", b"0".to_vec(), out),
        Var::ResponseStatus => scalar(target.var, data.response(ResponseScalar::Status), out),
        Var::ResponseProtocol => scalar(target.var, data.response(ResponseScalar::Protocol), out),
        Var::ResponseBody => scalar(target.var, data.response(ResponseScalar::Body), out),
        Var::ResponseContentType => scalar(target.var, data.response(ResponseScalar::ContentType), out),
        Var::ResponseContentLength => scalar(target.var, data.response(ResponseScalar::ContentLength), out),
        Var::ResponseHeaders => entries(Var::ResponseHeaders, &data.response_headers, key, false, out),
        Var::ResponseHeadersNames => entries(Var::ResponseHeadersNames, &data.response_headers, key, true, out),
    }
}

/// What a `multiMatch` rule sees of a value: the value itself, then the
/// result of each transformation of the chain that changed it (each a
/// cached chain prefix).
fn candidates<'v>(program: &Program, chain: u16, value: &'v Value<'_>, state: &mut State) -> Vec<Transformed<'v>> {
    let prefixes = &program.prefixes[usize::from(chain)];
    let mut out = Vec::with_capacity(prefixes.len() + 1);
    out.push(Transformed::Borrowed(&value.value));
    // The whole chain once, which leaves every prefix known.
    let last = along_chain(program, chain, value, state);
    for &prefix in &prefixes[..prefixes.len().saturating_sub(1)] {
        let next = match value.id {
            Some(id) => match &state.known(program, id, &value.value).forms[usize::from(prefix)] {
                Form::Changed(shared) => Transformed::Shared(Rc::clone(shared)),
                Form::Same | Form::Unknown => Transformed::Borrowed(&value.value),
            },
            None => along_chain(program, prefix, value, state),
        };
        push_changed(&mut out, next);
    }
    if !prefixes.is_empty() {
        push_changed(&mut out, last);
    }
    out
}

/// Adds `next` unless it is what the last candidate already is.
fn push_changed<'v>(out: &mut Vec<Transformed<'v>>, next: Transformed<'v>) {
    let same = out.last().is_some_and(|last| {
        let (a, b) = (last.as_ref(), next.as_ref());
        std::ptr::eq(a, b) || a == b
    });
    if !same {
        out.push(next);
    }
}

/// Whether member `index` of a set is among `found`.
fn has_member(found: &[u32], index: usize) -> bool {
    u32::try_from(index).is_ok_and(|index| found.contains(&index))
}

/// Whether bit `index` of `bits` is set.
fn has_bit(bits: &[u64], index: usize) -> bool {
    bits.get(index / 64).is_some_and(|word| word & (1 << (index % 64)) != 0)
}

/// `f` of the members of set `set_id` that match `value` (see
/// [`set_matches`]); what this transaction knows already is read in place.
#[inline]
fn with_set_matches<R>(
    program: &Program,
    set_id: usize,
    value: &Value<'_>,
    state: &mut State,
    f: impl FnOnce(&[u32]) -> R,
) -> R {
    if let Some(id) = value.id
        && let Some(known) = state.known.get(slot(id))
        && !known.forms.is_empty()
        && let Some(Some(found)) = known.sets.get(set_id)
    {
        return f(found);
    }
    f(&set_matches(program, set_id, value, state))
}

/// Which members of set `set_id` match `value`
/// through the set's chain (for a multiMatch set, through any of the
/// value's candidates); searched once per value and set.
fn set_matches(program: &Program, set_id: usize, value: &Value<'_>, state: &mut State) -> Found {
    if let Some(id) = value.id
        && let Some(done) = &state.known(program, id, &value.value).sets[set_id]
    {
        return Rc::clone(done);
    }
    let set = &program.sets[set_id];
    let mut scratch = match state.scratch.take() {
        Some(scratch) if scratch.capacity() >= set.len => scratch,
        _ => PatternSet::new(set.len),
    };
    let mut caches = match state.caches.take() {
        Some((id, caches)) if id == program.id => caches,
        _ => memo::take_caches(program),
    };
    let cache = &mut caches[set_id];
    if set.multi_match {
        for candidate in candidates(program, set.chain, value, state) {
            set.regex.which_overlapping_matches_with(cache, &Input::new(candidate.as_ref()), &mut scratch);
        }
    } else {
        let input = along_chain(program, set.chain, value, state);
        set.regex.which_overlapping_matches_with(cache, &Input::new(input.as_ref()), &mut scratch);
    }
    state.caches = Some((program.id, caches));
    let found: Found = if scratch.is_empty() {
        Rc::clone(&state.none_found)
    } else {
        scratch.iter().filter_map(|p| u32::try_from(p.as_usize()).ok()).collect()
    };
    scratch.clear();
    state.scratch = Some(scratch);
    if let Some(id) = value.id {
        state.known(program, id, &value.value).sets[set_id] = Some(Rc::clone(&found));
    }
    found
}

/// The fully transformed value, computed once per value and chain.
fn transformed_one<'v>(program: &Program, link: &Link, value: &'v Value<'_>, state: &mut State) -> Transformed<'v> {
    along_chain(program, link.chain, value, state)
}

/// `value` through chain `chain`: its prefix first (cached like every
/// chain), then the chain's last transformation.
fn along_chain<'v>(program: &Program, chain: u16, value: &'v Value<'_>, state: &mut State) -> Transformed<'v> {
    let Some((parent, last)) = program.parents[usize::from(chain)] else {
        return Transformed::Borrowed(&value.value);
    };
    if let Some(id) = value.id {
        match &state.known(program, id, &value.value).forms[usize::from(chain)] {
            Form::Unknown => {}
            Form::Same => return Transformed::Borrowed(&value.value),
            Form::Changed(shared) => return Transformed::Shared(Rc::clone(shared)),
        }
    }
    let base = along_chain(program, parent, value, state);
    let changed = match last.apply(base.as_ref()) {
        Cow::Owned(o) if o != base.as_ref() => Some(o),
        Cow::Owned(_) => None,
        // `trim` borrows a shorter slice of its input.
        Cow::Borrowed(b) if b.len() != base.as_ref().len() => Some(b.to_vec()),
        Cow::Borrowed(_) => None,
    };
    match (changed, value.id) {
        (None, id) => {
            if let Some(id) = id {
                state.known(program, id, &value.value).forms[usize::from(chain)] = match &base {
                    Transformed::Shared(shared) => Form::Changed(Rc::clone(shared)),
                    _ => Form::Same,
                };
            }
            base
        }
        (Some(o), Some(id)) => {
            let shared: Rc<[u8]> = Rc::from(o);
            state.known(program, id, &value.value).forms[usize::from(chain)] = Form::Changed(Rc::clone(&shared));
            Transformed::Shared(shared)
        }
        (Some(o), None) => Transformed::Owned(o),
    }
}

/// Whether the link's operator matches `input` (negation applied), setting
/// captures when the rule asks for them.
fn operate(
    program: &Program,
    rule: &Rule,
    link: &Link,
    value: &Value<'_>,
    input: &[u8],
    data: &Data,
    state: &mut State,
) -> bool {
    let hit = match &link.operator {
        Operator::Rx { regex, set, .. } => {
            // The set searched the value (each multiMatch candidate of it)
            // already: the rule's own regex runs only for the captures, or
            // to tell which candidate matched.
            let prefiltered = match (set, value.id) {
                (Some((set_id, index)), Some(_)) => {
                    Some(with_set_matches(program, *set_id, value, state, |found| has_member(found, *index)))
                }
                _ => None,
            };
            match prefiltered {
                Some(false) => false,
                Some(true) if !link.capture && !link.multi_match => true,
                _ => rx(regex, input, link.capture, state),
            }
        }
        Operator::RxMacro(template) => {
            let pattern = template.expand(&Ctx { data, state, rule }).into_owned();
            match operator::compile_regex(&String::from_utf8_lossy(&pattern)) {
                Ok(regex) => rx(&regex, input, link.capture, state),
                Err(_) => false,
            }
        }
        Operator::Pm(ac) => ac.is_match(input),
        Operator::StrEq(t) => *t.expand(&Ctx { data, state, rule }) == *input,
        Operator::Contains(t) => {
            let needle = t.expand(&Ctx { data, state, rule });
            memchr::memmem::find(input, &needle).is_some()
        }
        Operator::ContainsWord(t) => operator::contains_word(input, &t.expand(&Ctx { data, state, rule })),
        Operator::BeginsWith(t) => input.starts_with(&t.expand(&Ctx { data, state, rule })),
        Operator::EndsWith(t) => input.ends_with(&t.expand(&Ctx { data, state, rule })),
        Operator::Within(t) => {
            let hay = t.expand(&Ctx { data, state, rule });
            input.is_empty() || memchr::memmem::find(&hay, input).is_some()
        }
        Operator::StrMatch(t) => {
            let needle = t.expand(&Ctx { data, state, rule });
            memchr::memmem::find(input, &needle).is_some()
        }
        Operator::Num(cmp, t) => {
            let param = operator::stoi(&t.expand(&Ctx { data, state, rule }));
            operator::compare(*cmp, operator::stoi(input), param)
        }
        Operator::DetectSqli => match crate::detect::sqli(input) {
            Some(fingerprint) => {
                if link.capture {
                    state.tx.insert("0".into(), fingerprint.into_bytes());
                }
                true
            }
            None => false,
        },
        Operator::DetectXss => crate::detect::xss(input),
        Operator::ValidateByteRange(allowed) => input.iter().any(|&b| !allowed[usize::from(b)]),
        Operator::ValidateUrlEncoding => operator::invalid_url_encoding(input),
        Operator::ValidateUtf8Encoding => operator::invalid_utf8(input),
        Operator::IpMatch(nets) => std::str::from_utf8(input)
            .ok()
            .and_then(|s| s.trim().parse::<std::net::IpAddr>().ok())
            .is_some_and(|ip| nets.iter().any(|n| n.contains(&ip))),
        Operator::Unconditional => true,
        Operator::NoMatch => false,
    };
    let _ = value;
    hit != link.negated
}

fn rx(regex: &regex::bytes::Regex, input: &[u8], capture: bool, state: &mut State) -> bool {
    if !capture {
        return regex.is_match(input);
    }
    let Some(caps) = regex.captures(input) else { return false };
    for (i, group) in caps.iter().enumerate().take(10) {
        if let Some(m) = group {
            state.tx.insert(i.to_string(), m.as_bytes().to_vec());
        }
    }
    true
}

fn run_setvar(setvar: &crate::rules::SetVar, rule: &Rule, data: &Data, state: &mut State) {
    let ctx = Ctx { data, state, rule };
    // A literal key (nearly all) is lower-case already, and an existing
    // variable is overwritten in place: no allocation for either.
    let key: Cow<'_, str> = match setvar.key.literal() {
        Some(key) => Cow::Borrowed(key),
        None => Cow::Owned(String::from_utf8_lossy(&setvar.key.expand(&ctx)).to_ascii_lowercase()),
    };
    let value = match &setvar.op {
        SetOp::Delete => {
            state.tx.remove(key.as_ref());
            return;
        }
        SetOp::Set(t) => t.expand(&ctx),
        SetOp::Add(t) | SetOp::Sub(t) => {
            let amount = operator::stoi(&t.expand(&ctx));
            let current = state.tx.get(key.as_ref()).map_or(0, |v| operator::stoi(v));
            let next = if matches!(setvar.op, SetOp::Add(_)) { current + amount } else { current - amount };
            Cow::Owned(next.to_string().into_bytes())
        }
    };
    match state.tx.get_mut(key.as_ref()) {
        Some(slot) => {
            slot.clear();
            slot.extend_from_slice(&value);
        }
        None => {
            let value = value.into_owned();
            state.tx.insert(key.into_owned(), value);
        }
    }
}

/// What macros see: the request, the transaction state and the running rule.
struct Ctx<'a> {
    data: &'a Data,
    state: &'a State,
    rule: &'a Rule,
}

impl Resolve for Ctx<'_> {
    fn resolve(&self, reference: &Reference) -> Vec<u8> {
        let key = reference.key.as_deref();
        match (reference.name.as_str(), key) {
            ("RULE", Some("id")) => self.rule.id.to_string().into_bytes(),
            ("RULE", Some("msg")) => self.rule.msg.as_ref().map(|m| m.expand(self).into_owned()).unwrap_or_default(),
            ("RULE", Some("logdata")) => {
                self.rule.logdata.as_ref().map(|m| m.expand(self).into_owned()).unwrap_or_default()
            }
            ("RULE", Some("severity")) => self.rule.severity.map(|s| s.to_string().into_bytes()).unwrap_or_default(),
            ("RULE", _) => Vec::new(),
            ("TX", Some(k)) => self.state.tx.get(k).cloned().unwrap_or_default(),
            ("MATCHED_VAR", None) => self.state.matched_vars.last().map(|(_, v)| v.clone()).unwrap_or_default(),
            ("MATCHED_VAR_NAME", None) => {
                self.state.matched_vars.last().map(|(n, _)| n.clone().into_bytes()).unwrap_or_default()
            }
            (name, key) => {
                let Some(parsed) = zentinel_modsec::parser::VariableName::from_str(name) else { return Vec::new() };
                let Some(var) = crate::rules::var_from_parsed(parsed) else { return Vec::new() };
                let key = match key {
                    Some(k) => Key::Name(k.to_owned()),
                    None => Key::All,
                };
                let mut out = Vec::new();
                let target = Target { var, key, count: false, slot: None };
                resolve(&target, self.data, self.state, &mut out);
                out.into_iter().next().map(|v| v.value.into_owned()).unwrap_or_default()
            }
        }
    }
}
