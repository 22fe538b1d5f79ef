//! Portcullis's own engine (`portcullis-waf`): the default.
//!
//! Decision rules:
//! - The assembled CRS text is loaded with ModSecurity's recommended body
//!   handling in front of the rules (the same [`BODY_SETUP`](super::crs::BODY_SETUP) the
//!   libmodsecurity engine uses), so both engines read JSON and XML bodies
//!   and refuse unreadable ones alike.
//! - A body prefix (cut at the inspection limit, `over_limit = "pass"`) is
//!   inspected as raw `REQUEST_BODY` and URL-encoded arguments, never
//!   parsed as a JSON or XML document it cannot be.
//! - A rule the engine cannot run fully is a load error unless its id is
//!   allowed by the configuration.
//! - The verdict is the engine's intervention; the matches reported are the
//!   attack rules (ids 911000–944999; for a response, the leak rules
//!   950000–956999 and Portcullis's own from 200100) that matched and log (CRS's bookkeeping rules are
//!   `nolog`), with where their first link matched; the score is CRS's
//!   inbound anomaly score (for a response, the outbound one).
//! - A response continues its request's transaction (kept by
//!   [`Engine::begin`]); when there is none (the request's verdict came
//!   from the cache), the request phases run again first.

use super::crs::RuleSet;
use super::{
    Engine, EngineError, LoadError, Profile, RuleLoadError, RuleMatch, Transaction, Verdict, WafRequest, WafResponse,
    category, snippet,
};

/// Rules of stock CRS v4 this engine does not run, and why that is
/// acceptable: none of them detects an attack.
pub const KNOWN_GAPS: &[(u32, &str)] = &[(
    901_320,
    "initcol of the persistent IP and GLOBAL collections, only when tx.enable_default_collections is set, which Portcullis's setup never does",
)];

/// A CRS rule set compiled by `portcullis-waf`.
pub struct Native {
    waf: portcullis_waf::Waf,
}

impl std::fmt::Debug for Native {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Native").field("waf", &self.waf).finish()
    }
}

impl Native {
    /// Compiles a rule set.
    ///
    /// # Errors
    /// The text does not parse, or rules cannot be run fully and are not allowed.
    pub fn load(set: &RuleSet, profile: &Profile) -> Result<Self, LoadError> {
        let allow: Vec<(u32, u32)> = profile
            .allow_load_errors
            .iter()
            .map(|r| (r.first, r.last))
            .chain(KNOWN_GAPS.iter().map(|(id, _)| (*id, *id)))
            .collect();
        // The SecLang parser does not know MULTIPART_UNMATCHED_BOUNDARY; the
        // engine counts an unmatched boundary as a strict multipart error,
        // which rule 200003 refuses with the same 400.
        let text: String = set
            .with_body_setup()
            .lines()
            .filter(|line| !line.contains("MULTIPART_UNMATCHED_BOUNDARY"))
            .flat_map(|line| [line, "\n"])
            .collect();
        let waf = portcullis_waf::Waf::load(&text, &allow).map_err(|e| match e {
            portcullis_waf::LoadError::Rules(rules) => LoadError::Rules(
                rules
                    .into_iter()
                    .map(|r| RuleLoadError { id: r.id, location: r.location, problem: r.problem })
                    .collect(),
            ),
            other => LoadError::Engine(other.to_string()),
        })?;
        Ok(Self { waf })
    }
}

impl Engine for Native {
    fn name(&self) -> &'static str {
        "portcullis"
    }

    fn runs_inline(&self) -> bool {
        true
    }

    fn inspect(&self, request: &WafRequest) -> Result<Verdict, EngineError> {
        Ok(verdict(&self.run_request(request).0, false))
    }

    fn inspects_responses(&self) -> bool {
        self.waf.inspects_responses()
    }

    fn begin(&self, request: &WafRequest) -> Result<(Verdict, Option<Transaction>), EngineError> {
        let (outcome, exchange) = self.run_request(request);
        Ok((verdict(&outcome, false), Some(Transaction(Box::new(exchange)))))
    }

    fn inspect_response(
        &self,
        request: &WafRequest,
        transaction: Option<Transaction>,
        response: &WafResponse,
    ) -> Result<Verdict, EngineError> {
        let exchange = match transaction.map(|t| t.0.downcast::<portcullis_waf::Exchange>()) {
            Some(Ok(exchange)) => *exchange,
            Some(Err(_)) => return Err(EngineError("a transaction of another engine".into())),
            None => self.run_request(request).1,
        };
        let headers: Vec<(&str, &[u8])> =
            response.headers.iter().map(|(name, value)| (name.as_str(), value.as_bytes())).collect();
        let outcome = self.waf.inspect_response(
            exchange,
            &portcullis_waf::Response {
                status: response.status,
                protocol: response.version,
                headers: &headers,
                body: response.body.as_deref(),
            },
        );
        Ok(verdict(&outcome, true))
    }
}

impl Native {
    fn run_request(&self, request: &WafRequest) -> (portcullis_waf::Outcome, portcullis_waf::Exchange) {
        let headers: Vec<(&str, &[u8])> =
            request.headers.iter().map(|(name, value)| (name.as_str(), value.as_bytes())).collect();
        self.waf.inspect_request(&portcullis_waf::Request {
            method: &request.method,
            uri: &request.uri,
            protocol: request.version,
            headers: &headers,
            body: &request.body,
            body_complete: request.body_complete,
            client_ip: request.client_ip,
            client_port: request.client_port,
        })
    }
}

/// The verdict of a request's (or, `outbound`, a response's) outcome.
fn verdict(outcome: &portcullis_waf::Outcome, outbound: bool) -> Verdict {
    let mut matches: Vec<RuleMatch> = Vec::new();
    for found in &outcome.matches {
        if !found.logged || category(found.id).is_none() {
            continue;
        }
        if matches.iter().any(|m| m.id == found.id && m.location == found.location) {
            continue;
        }
        let value = String::from_utf8_lossy(&found.value);
        matches.push(RuleMatch {
            id: found.id,
            snippet: snippet(&found.location, &value),
            location: found.location.clone(),
        });
    }
    let score = if outbound { outcome.outbound_score } else { outcome.inbound_score };
    let score = score.and_then(|s| i32::try_from(s).ok());
    Verdict { intervened: outcome.intervention.is_some(), score, matches }
}
