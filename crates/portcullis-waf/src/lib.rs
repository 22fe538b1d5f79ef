//! Portcullis's own ModSecurity-compatible rule engine, built for the OWASP
//! Core Rule Set v4: as faithful as libmodsecurity 3 (the reference it is
//! differentially tested against), without its cost.
//!
//! Decision rules:
//! - Rules load from SecLang text (the parser of `zentinel-modsec`; the
//!   evaluation is ours) and compile once into a [`Waf`]: operators,
//!   phrase automata and data files built, transformation chains
//!   deduplicated, the first `@rx` of every rule grouped into one regex
//!   set per phase, transformation chain and `multiMatch`. A rule the
//!   engine cannot honour fully is a load error unless its id is allowed.
//! - A request runs through phase 1 (line, headers), then its body is
//!   read by the processor its content type or a rule selects, then
//!   phase 2. The outcome is the intervention (a disruptive action fired:
//!   CRS's 949110 once the anomaly score reaches the threshold), the rules
//!   that matched and the inbound anomaly score.
//! - Nothing is shared between requests but the compiled program and, per
//!   thread, what was worked out about recent short values' bytes (see
//!   `memo`: their transformed forms, which set members and byte-only
//!   operators match them): each verdict is what a fresh engine would
//!   give, and a `Waf` is `Send + Sync`.
//!
//! Deployment caveat: CRS matches patterns, it does not understand the
//! backend; see docs/waf.md for what it misses and how to tune it.

mod body;
mod data;
mod detect;
mod eval;
mod macros;
mod memo;
mod operator;
mod rules;
mod transform;

use std::fmt;

pub use data::{BodyProcessor, Request, Response};
pub use rules::EngineMode;
pub use transform::Transform;

/// A rule set compiled for inspection.
pub struct Waf {
    program: rules::Program,
}

impl fmt::Debug for Waf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Waf")
            .field("rules", &self.program.rules.len())
            .field("transformation_chains", &self.program.chains.len())
            .field("regex_sets", &self.program.sets.len())
            .finish_non_exhaustive()
    }
}

/// A rule that matched fully.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Match {
    /// Its id (0 if it has none).
    pub id: u32,
    /// The phase it ran in.
    pub phase: u8,
    /// Its `msg`, expanded (`None` for a `nolog` rule).
    pub msg: Option<String>,
    /// Where its first link first matched (`ARGS:q`, `REQUEST_HEADERS:User-Agent`;
    /// empty for a `nolog` rule).
    pub location: String,
    /// The value there, untransformed (empty for a `nolog` rule).
    pub value: Vec<u8>,
    /// Whether the rule logs its matches (not `nolog`): CRS's attack rules
    /// do, its bookkeeping rules do not.
    pub logged: bool,
}

/// A disruptive action that fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Intervention {
    /// The HTTP status it asks for.
    pub status: u16,
    /// The rule that fired it.
    pub rule: u32,
}

/// What inspecting a request found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Set when a disruptive action fired.
    pub intervention: Option<Intervention>,
    /// Every rule that matched fully, in evaluation order.
    pub matches: Vec<Match>,
    /// CRS's inbound anomaly score (`tx.blocking_inbound_anomaly_score`,
    /// else `tx.inbound_anomaly_score`), when set.
    pub inbound_score: Option<i64>,
    /// CRS's outbound anomaly score (`tx.blocking_outbound_anomaly_score`,
    /// else `tx.outbound_anomaly_score`), when set.
    pub outbound_score: Option<i64>,
    /// Why the body could not be read, when it could not.
    pub body_error: Option<String>,
}

/// A request's transaction, kept for its response (phases 3 and 4): the
/// request's variables and what its rules set. `Send`, so it can wait on
/// another thread while the upstream answers.
#[derive(Debug)]
pub struct Exchange {
    data: data::Data,
    carry: eval::Carry,
}

/// A rule the engine cannot run fully.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleError {
    /// Its id, when it has one.
    pub id: Option<u32>,
    /// `file:line`
    pub location: String,
    /// What the engine cannot do.
    pub problem: String,
}

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.id {
            Some(id) => write!(f, "rule {id} at {}: {}", self.location, self.problem),
            None => write!(f, "a rule at {}: {}", self.location, self.problem),
        }
    }
}

/// A rule set that does not load.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The text does not parse.
    #[error("the rules do not parse: {0}")]
    Parse(String),
    /// A directive the engine does not support.
    #[error("{0}")]
    Directive(String),
    /// Rules the engine cannot run fully.
    #[error("{} rule(s) cannot be run fully by this engine: {}", .0.len(), .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Rules(Vec<RuleError>),
}

impl Waf {
    /// Parses and compiles `text`; `allow` lists rule-id ranges whose
    /// problems are accepted (such a rule is left out).
    ///
    /// # Errors
    /// The text does not parse, uses a directive the engine lacks, or has
    /// rules the engine cannot run fully and that are not allowed.
    pub fn load(text: &str, allow: &[(u32, u32)]) -> Result<Self, LoadError> {
        let mut parser = zentinel_modsec::parser::Parser::new();
        parser.parse(text).map_err(|e| LoadError::Parse(e.to_string()))?;
        let program = rules::compile(parser.into_directives(), &rules::Options { allow: allow.to_vec() })?;
        Ok(Self { program })
    }

    /// How many rules (chains count once) are loaded.
    #[must_use]
    pub fn rule_count(&self) -> usize {
        self.program.rules.len()
    }

    /// Runs a request through phases 1 and 2.
    #[must_use]
    pub fn inspect(&self, request: &Request<'_>) -> Outcome {
        self.inspect_request(request).0
    }

    /// Whether any rule runs in phase 3 or 4: without one, responses need
    /// not be inspected (nor buffered).
    #[must_use]
    pub fn inspects_responses(&self) -> bool {
        self.program.phases.iter().skip(2).take(2).any(|items| items.iter().any(|i| matches!(i, rules::Item::Rule(_))))
    }

    /// Runs a request through phases 1 and 2 and keeps its transaction for
    /// [`inspect_response`](Self::inspect_response).
    #[must_use]
    pub fn inspect_request(&self, request: &Request<'_>) -> (Outcome, Exchange) {
        let mut data = data::Data::from_request(request);
        let content_type = data.header("content-type").map(<[u8]>::to_vec);
        let mut state = eval::State::new(self.program.engine);
        data.body_processor = data::default_processor(content_type.as_deref());
        eval::run_phase(&self.program, 1, &data, &mut state);
        if state.intervention.is_none() && !state.allowed && state.engine != EngineMode::Off {
            let processor = state
                .body_processor
                .or(data.body_processor)
                .filter(|p| request.body_complete || !matches!(p, BodyProcessor::Json | BodyProcessor::Xml));
            data.add_body(request.body, processor, content_type.as_deref());
            eval::run_phase(&self.program, 2, &data, &mut state);
        }
        let outcome = Outcome {
            intervention: state.intervention,
            matches: std::mem::take(&mut state.matches),
            inbound_score: score(&state, INBOUND),
            outbound_score: None,
            body_error: data.body_error.clone(),
        };
        state.remember();
        (outcome, Exchange { data, carry: state.carry() })
    }

    /// Runs the response of an inspected request through phases 3 (status
    /// and headers) and 4 (`RESPONSE_BODY` only when `response.body` is
    /// given; phase 4 runs either way, as CRS's outbound blocking rules are
    /// there). The outcome lists only what the response phases found; its
    /// inbound score is the request's.
    #[must_use]
    pub fn inspect_response(&self, exchange: Exchange, response: &Response<'_>) -> Outcome {
        let Exchange { mut data, carry } = exchange;
        data.add_response(response);
        let mut state = eval::State::resume(carry);
        eval::run_phase(&self.program, 3, &data, &mut state);
        eval::run_phase(&self.program, 4, &data, &mut state);
        state.remember();
        Outcome {
            intervention: state.intervention,
            inbound_score: score(&state, INBOUND),
            outbound_score: score(&state, OUTBOUND),
            matches: state.matches,
            body_error: None,
        }
    }
}

/// Where CRS keeps its inbound and outbound scores: the blocking score,
/// else the plain one.
const INBOUND: [&str; 2] = ["blocking_inbound_anomaly_score", "inbound_anomaly_score"];
const OUTBOUND: [&str; 2] = ["blocking_outbound_anomaly_score", "outbound_anomaly_score"];

/// The first of `keys` set in TX, as a number.
fn score(state: &eval::State, keys: [&str; 2]) -> Option<i64> {
    keys.iter().find_map(|k| state.tx.get(*k)).map(|v| operator::stoi(v))
}

#[cfg(test)]
mod tests;
