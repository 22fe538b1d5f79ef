//! The libmodsecurity engine: ModSecurity v3 (C++, Debian `libmodsecurity3`)
//! through the workspace's FFI crate `portcullis-modsec`, behind the cargo
//! feature `libmodsecurity`.
//!
//! Decision rules:
//! - The assembled rule text is loaded with `msc_rules_add`; anything the
//!   library refuses (an unknown directive, action or operator, a syntax
//!   error, a missing data file) is a load error with the library's own
//!   message. libmodsecurity 3.0.9 accepts an `@rx` pattern PCRE2 cannot
//!   compile (the rule then silently never matches), so every `@rx` is
//!   compiled with PCRE2 first and a failure is a load error naming the rule,
//!   unless its id is allowed.
//! - ModSecurity only parses JSON and XML bodies into `ARGS` when a rule
//!   selects the body processor; CRS leaves that to ModSecurity's recommended
//!   configuration (rules 200000–200004), which this engine prepends: JSON
//!   and XML processors by content type, and a body that fails to parse
//!   (or a multipart body failing strict validation) is refused with 400
//!   rather than passed uninspected.
//! - One transaction per request: connection, URI, headers, phase 1, and
//!   unless phase 1 intervened, body and phase 2. The verdict is the
//!   library's intervention (a disruptive action: CRS's 949110 denies with
//!   403 once the inbound anomaly score reaches the threshold).
//! - The rules that matched come from the library's per-transaction log
//!   messages (`[id "942100"]`, ``against variable `ARGS:q'``, `[data
//!   "Matched Data: …"]`); as with the other engines only attack rules (ids
//!   911000–944999) are reported (CRS's bookkeeping is `nolog` and logs no
//!   message); a chain whose last link reads `TX` reports that location.
//!   The anomaly score is read from 949110's message (`Total Score: N`)
//!   and is only known when it intervened.
//! - Responses (a rule set loaded with the response rules) run in a new
//!   transaction that replays the request first: the library's transaction
//!   cannot wait for an upstream here. The gateway's own engine keeps its
//!   transaction; this path is the differential oracle's.
//!
//! Thread safety: the library's rule set and engine instance are shared by
//! every worker (ModSecurity v3 only reads them during transactions;
//! `portcullis-modsec` serializes the parser and clean-up, which are not
//! thread-safe); each request gets its own transaction on the calling
//! thread. `inspect` blocks for the whole
//! evaluation, so the caller runs it off the async runtime.
//!
//! Deployment caveat: this engine needs libmodsecurity 3 at run time as well
//! as at build time (`libmodsecurity3`); a gateway built with the feature
//! does not start on a machine without it.

use portcullis_modsec::{Request, Rules};
use zentinel_modsec::parser::{Action, Directive, FlowAction, MetadataAction, OperatorName, Parser};

use super::crs::RuleSet;
use super::{
    Engine, EngineError, LoadError, Profile, RuleLoadError, RuleMatch, Transaction, Verdict, WafRequest, WafResponse,
    category, snippet,
};

/// Longest location name kept from a log message, in characters.
const LOCATION_CHARS: usize = 128;

/// A CRS rule set loaded into libmodsecurity.
pub struct Libmodsecurity {
    rules: Rules,
    version: String,
    /// Loaded with the response rules.
    responses: bool,
}

impl std::fmt::Debug for Libmodsecurity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Libmodsecurity").field("library", &self.version).finish_non_exhaustive()
    }
}

impl Libmodsecurity {
    /// Loads a rule set into a new libmodsecurity instance.
    ///
    /// # Errors
    /// The library refuses the rule text ([`LoadError::Engine`] with its
    /// message), or an `@rx` pattern does not compile with PCRE2 and the
    /// rule's id is not allowed ([`LoadError::Rules`]).
    pub fn load(set: &RuleSet, profile: &Profile) -> Result<Self, LoadError> {
        let rules = Rules::load(&set.with_body_setup()).map_err(|e| LoadError::Engine(e.0))?;
        let allowed = |id: Option<u32>| id.is_some_and(|id| profile.allow_load_errors.iter().any(|r| r.contains(id)));
        let problems: Vec<RuleLoadError> = check_regexes(&set.text)?.into_iter().filter(|p| !allowed(p.id)).collect();
        if !problems.is_empty() {
            return Err(LoadError::Rules(problems));
        }
        let version = rules.version();
        Ok(Self { rules, version, responses: profile.responses })
    }

    /// The library's own name and version (`ModSecurity v3.0.9 (Linux)`).
    #[must_use]
    pub fn library_version(&self) -> &str {
        &self.version
    }
}

/// Every `@rx` of the rule set whose pattern PCRE2 does not compile (our
/// fixed body handling (`crs::BODY_SETUP`) is not checked). Patterns with macros
/// (`%{…}`) are compiled per request by the library and are not checked.
fn check_regexes(text: &str) -> Result<Vec<RuleLoadError>, LoadError> {
    let mut parser = Parser::new();
    parser.parse(text).map_err(|e| {
        LoadError::Engine(format!("the rules' regexes cannot be checked, the rule text does not parse: {e}"))
    })?;
    let mut problems = Vec::new();
    let mut chain_id: Option<u32> = None;
    for directive in parser.directives() {
        let Directive::SecRule(rule) = directive else { continue };
        let own_id = rule.actions.iter().find_map(|a| match a {
            Action::Metadata(MetadataAction::Id(id)) => u32::try_from(*id).ok(),
            _ => None,
        });
        let id = own_id.or(chain_id);
        chain_id = rule.actions.iter().any(|a| matches!(a, Action::Flow(FlowAction::Chain))).then_some(id).flatten();
        if rule.operator.name != OperatorName::Rx || rule.operator.argument.contains("%{") {
            continue;
        }
        if let Err(e) = pcre2::bytes::RegexBuilder::new().build(&rule.operator.argument) {
            problems.push(RuleLoadError {
                id,
                location: rule.location.to_string(),
                problem: format!(
                    "PCRE2 cannot compile the @rx pattern ({e}); libmodsecurity would load it and never match"
                ),
            });
        }
    }
    Ok(problems)
}

impl Engine for Libmodsecurity {
    fn name(&self) -> &'static str {
        "libmodsecurity"
    }

    fn inspect(&self, request: &WafRequest) -> Result<Verdict, EngineError> {
        let client = request.client_ip.to_string();
        let headers: Vec<(&[u8], &[u8])> =
            request.headers.iter().map(|(name, value)| (name.as_bytes(), value.as_bytes())).collect();
        let outcome = self.rules.inspect(&library_request(request, &client, &headers)).map_err(|e| EngineError(e.0))?;
        Ok(verdict(&outcome))
    }

    fn inspects_responses(&self) -> bool {
        self.responses
    }

    /// The library's transaction cannot wait for the upstream here, so the
    /// request phases run again with the response (as a differential
    /// oracle; the gateway's engine keeps its transaction).
    fn inspect_response(
        &self,
        request: &WafRequest,
        _transaction: Option<Transaction>,
        response: &WafResponse,
    ) -> Result<Verdict, EngineError> {
        if !self.responses {
            return Err(EngineError("the rule set was loaded without the response rules".into()));
        }
        let client = request.client_ip.to_string();
        let headers: Vec<(&[u8], &[u8])> =
            request.headers.iter().map(|(name, value)| (name.as_bytes(), value.as_bytes())).collect();
        let response_headers: Vec<(&[u8], &[u8])> =
            response.headers.iter().map(|(name, value)| (name.as_bytes(), value.as_bytes())).collect();
        let protocol = response.version.replace('/', " ");
        let (_, outcome) = self
            .rules
            .inspect_exchange(
                &library_request(request, &client, &headers),
                &portcullis_modsec::Response {
                    status: response.status,
                    protocol: &protocol,
                    headers: &response_headers,
                    body: response.body.as_deref().unwrap_or_default(),
                },
            )
            .map_err(|e| EngineError(e.0))?;
        Ok(verdict(&outcome))
    }
}

fn library_request<'a>(request: &'a WafRequest, client: &'a str, headers: &'a [(&'a [u8], &'a [u8])]) -> Request<'a> {
    Request {
        client_ip: client,
        client_port: request.client_port,
        uri: &request.uri,
        method: &request.method,
        version: request.version.strip_prefix("HTTP/").unwrap_or(request.version),
        headers,
        body: &request.body,
    }
}

/// The verdict of the library's outcome: its intervention, the attack (or
/// leak) rules its messages name, the score its blocking rule reports.
fn verdict(outcome: &portcullis_modsec::Outcome) -> Verdict {
    let score = outcome.intervention.as_ref().and_then(|i| i.log.as_deref()).and_then(total_score);
    let mut matches: Vec<RuleMatch> = Vec::new();
    for message in &outcome.messages {
        let Some(found) = parse_message(message) else { continue };
        if matches.iter().any(|m| m.id == found.id && m.location == found.location) {
            continue;
        }
        matches.push(found);
    }
    Verdict { intervened: outcome.intervention.is_some(), score, matches }
}

/// The attack rule a log message reports, if it is one.
fn parse_message(message: &str) -> Option<RuleMatch> {
    let id = between(message, "[id \"", "\"]")?.parse::<u32>().ok()?;
    category(id)?;
    // Operators like @detectSQLi report no "against variable"; their data does.
    let location: String = between(message, "' against variable `", "' (Value: `")
        .or_else(|| between(message, " found within ", ": "))
        .unwrap_or_default()
        .chars()
        .filter(|c| !c.is_control())
        .take(LOCATION_CHARS)
        .collect();
    let value = between(message, "[data \"Matched Data: ", " found within ")
        .or_else(|| between(message, "' (Value: `", "' )"))
        .unwrap_or_default();
    Some(RuleMatch { id, snippet: snippet(&location, value), location })
}

/// The anomaly score in 949110's message: `(Total Score: 10)`.
fn total_score(log: &str) -> Option<i32> {
    let digits: String = log.split("Total Score: ").nth(1)?.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// The text between the first `start` and the next `end` after it.
fn between<'a>(text: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let from = text.find(start)? + start.len();
    let len = text[from..].find(end)?;
    Some(&text[from..from + len])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_messages_become_matches() {
        let message = "ModSecurity: Warning. detected SQLi using libinjection. [file \"/crs/rules/REQUEST-942-APPLICATION-ATTACK-SQLI.conf\"] [line \"46\"] [id \"942100\"] [rev \"\"] [msg \"SQL Injection Attack Detected via libinjection\"] [data \"Matched Data: s&1 found within ARGS:var: 1234 OR 1=1\"] [severity \"2\"] [ver \"OWASP_CRS/4.28.0\"]";
        assert_eq!(
            parse_message(message),
            Some(RuleMatch { id: 942_100, location: "ARGS:var".into(), snippet: "s&1".into() })
        );
        let message = "ModSecurity: Warning. Matched \"Operator `Rx' with parameter `(?i)union' against variable `ARGS:q' (Value: `1 union select' ) [file \"x\"] [line \"1\"] [id \"942190\"] [data \"Matched Data: union found within ARGS:q: 1 union select\"]";
        let found = parse_message(message).unwrap();
        assert_eq!((found.id, found.location.as_str(), found.snippet.as_str()), (942_190, "ARGS:q", "union"));
        let bookkeeping = "ModSecurity: Warning. Matched \"Operator `Ge' with parameter `5' against variable `TX:BLOCKING_INBOUND_ANOMALY_SCORE' (Value: `10' ) [id \"949110\"] [msg \"Inbound Anomaly Score Exceeded (Total Score: 10)\"]";
        assert_eq!(parse_message(bookkeeping), None);
        assert_eq!(total_score(bookkeeping), Some(10));
        let secret = "Matched \"Operator `Rx' with parameter `x' against variable `ARGS:password' (Value: `' or 1=1' ) [id \"942100\"]";
        assert_eq!(parse_message(secret).unwrap().snippet, "[withheld]");
    }
}
