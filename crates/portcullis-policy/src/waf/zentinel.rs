//! The pure-Rust engine: `zentinel-modsec`, pinned to an exact version.
//!
//! Decision rules:
//! - The rule text is parsed first and every rule is checked before it is
//!   compiled: an operator that does not compile, a rule whose targets the
//!   engine does not implement, or a `ctl:` action it ignores would make the
//!   rule silently never fire (the engine only logs these), so each is a
//!   load error unless the rule's id is allowed — by the configuration, or
//!   by the short list of [`KNOWN_GAPS`] this version has with stock CRS v4,
//!   each of which only ever suppresses false positives or logging.
//! - Requests run through phase 1 and, unless phase 1 intervened, phase 2.
//!   The matches reported are the attack rules' (ids 911000–944999) that
//!   add to the anomaly score, with every link of their chain matched.
//!
//! Deployment caveat: measured against the CRS regression tests this engine
//! detects fewer attacks than libmodsecurity (chained rules on
//! `MATCHED_VARS` or captures miss); docs/waf.md has the figures.

use std::collections::HashMap;

use zentinel_modsec::engine::control::unsupported_controls;
use zentinel_modsec::parser::{Action, DataAction, Directive, FlowAction, MetadataAction, Parser};
use zentinel_modsec::variables::Collection as _;
use zentinel_modsec::{CompiledRuleset, ModSecurity};

use super::crs::RuleSet;
use super::{Engine, EngineError, LoadError, Profile, RuleLoadError, RuleMatch, Verdict, category, snippet};

/// Rules of stock CRS v4 this engine version cannot load fully, and why
/// that is acceptable: none of them detects an attack.
pub const KNOWN_GAPS: &[(u32, &str)] = &[
    (901_340, "ctl:forceRequestBodyVariable: this engine fills REQUEST_BODY for every body anyway"),
    (901_410, "sampling by UNIQUE_ID, which the engine lacks: sampling stays at 100% (every request inspected)"),
    (901_450, "ctl:ruleRemoveByTag for requests sampled out; with sampling at 100% none is"),
    (
        905_100,
        "ctl:auditEngine and ctl:ruleRemoveByTag for Apache's internal dummy connections: an exception, never a detection",
    ),
    (905_110, "the same exception for localhost: ignoring it inspects more, not less"),
    (
        920_410,
        "FILES_COMBINED_SIZE against tx.combined_file_sizes, unset by default; the body limits bound uploads instead",
    ),
    (920_480, "ctl:forceRequestBodyVariable in the charset check; REQUEST_BODY is filled anyway"),
    (
        941_010,
        "ctl:ruleRemoveTargetByTag removing REQUEST_FILENAME from XSS rules for speed: ignoring it inspects more",
    ),
];

/// A CRS rule set compiled by `zentinel-modsec`.
pub struct Zentinel {
    modsec: ModSecurity,
    /// The rules that add to an anomaly score, by id: how many rules their
    /// chain has (1 when unchained).
    scoring: HashMap<u32, usize>,
}

impl std::fmt::Debug for Zentinel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Zentinel").field("rules", &self.modsec.rule_count()).finish()
    }
}

impl Zentinel {
    /// Parses, checks and compiles a rule set.
    ///
    /// # Errors
    /// The text does not parse, or rules do not load fully and are not allowed.
    pub fn load(set: &RuleSet, profile: &Profile) -> Result<Self, LoadError> {
        let mut parser = Parser::new();
        parser.parse(&set.text).map_err(|e| LoadError::Engine(e.to_string()))?;
        let directives = parser.into_directives();
        let allowed = |id: Option<u32>| {
            id.is_some_and(|id| {
                profile.allow_load_errors.iter().any(|r| r.contains(id)) || KNOWN_GAPS.iter().any(|(gap, _)| *gap == id)
            })
        };
        let problems: Vec<RuleLoadError> = check(&directives).into_iter().filter(|p| !allowed(p.id)).collect();
        if !problems.is_empty() {
            return Err(LoadError::Rules(problems));
        }
        let scoring = scoring_rules(&directives);
        let ruleset = CompiledRuleset::compile(directives).map_err(|e| LoadError::Engine(e.to_string()))?;
        Ok(Self { modsec: ModSecurity::new(ruleset), scoring })
    }

    /// How many rules are loaded.
    #[must_use]
    pub fn rule_count(&self) -> usize {
        self.modsec.rule_count()
    }
}

/// The rules whose chain adds to an anomaly score, with their chain lengths.
///
/// The engine records a chain's first rule as matched even when a later
/// link fails, and marks every `pass` bookkeeping rule matched too; events
/// must name only the rules that scored.
fn scoring_rules(directives: &[Directive]) -> HashMap<u32, usize> {
    let mut out = HashMap::new();
    let mut current: Option<(Option<u32>, usize, bool)> = None;
    for directive in directives {
        let Directive::SecRule(rule) = directive else { continue };
        let id = rule.actions.iter().find_map(|a| match a {
            Action::Metadata(MetadataAction::Id(id)) => u32::try_from(*id).ok(),
            _ => None,
        });
        let scores = rule.actions.iter().any(|a| match a {
            Action::Data(DataAction::SetVar(var)) => {
                let key = var.key.to_ascii_lowercase();
                var.collection.eq_ignore_ascii_case("tx")
                    && (key.starts_with("inbound_anomaly_score") || key.starts_with("anomaly_score"))
            }
            _ => false,
        });
        let chains = rule.actions.iter().any(|a| matches!(a, Action::Flow(FlowAction::Chain)));
        let (head, links, scored) = match current.take() {
            Some((head, links, scored)) => (head, links + 1, scored || scores),
            None => (id, 1, scores),
        };
        if chains {
            current = Some((head, links, scored));
        } else if let (Some(head), true) = (head, scored) {
            out.insert(head, links);
        }
    }
    out
}

/// Every rule the engine would load only partly.
fn check(directives: &[Directive]) -> Vec<RuleLoadError> {
    let mut problems = Vec::new();
    // A chain's continuation rules carry no id: they belong to the head's.
    let mut chain_id: Option<u32> = None;
    for directive in directives {
        let (actions, location, rule) = match directive {
            Directive::SecRule(rule) => (&rule.actions, rule.location.to_string(), Some(rule)),
            Directive::SecAction(action) => (&action.actions, action.location.to_string(), None),
            Directive::Unknown(name) => {
                if !matches!(name.to_ascii_lowercase().as_str(), "seccomponentsignature" | "seccollectiontimeout") {
                    problems.push(RuleLoadError {
                        id: None,
                        location: "-".into(),
                        problem: format!("directive {name} is not supported"),
                    });
                }
                continue;
            }
            _ => continue,
        };
        let own_id = actions.iter().find_map(|a| match a {
            Action::Metadata(MetadataAction::Id(id)) => u32::try_from(*id).ok(),
            _ => None,
        });
        let id = own_id.or(chain_id);
        let mut problem = |text: String| problems.push(RuleLoadError { id, location: location.clone(), problem: text });
        if let Some(rule) = rule {
            if let Err(e) = zentinel_modsec::operators::compile_operator(&rule.operator) {
                problem(format!("operator does not compile: {e}"));
            }
            if !rule.variables.is_empty() && !rule.variables.iter().any(|v| v.name.is_implemented()) {
                let names: Vec<String> = rule.variables.iter().map(|v| format!("{:?}", v.name)).collect();
                problem(format!("targets only variables the engine does not implement ({})", names.join("|")));
            }
        }
        for (name, value, reason) in unsupported_controls(actions) {
            problem(format!("ctl:{name}={value} is ignored ({reason})"));
        }
        let chains = actions.iter().any(|a| matches!(a, Action::Flow(FlowAction::Chain)));
        chain_id = if chains { id } else { None };
    }
    problems
}

impl Engine for Zentinel {
    fn name(&self) -> &'static str {
        "zentinel"
    }

    fn inspect(&self, request: &super::WafRequest) -> Result<Verdict, EngineError> {
        let failed = |e: zentinel_modsec::Error| EngineError(e.to_string());
        let mut tx = self.modsec.new_transaction();
        tx.set_client_addr(&request.client_ip.to_string(), request.client_port);
        tx.process_uri(&request.uri, &request.method, request.version).map_err(failed)?;
        for (name, value) in &request.headers {
            tx.add_request_header(name, value).map_err(failed)?;
        }
        tx.process_request_headers().map_err(failed)?;
        if tx.intervention().is_none() {
            if !request.body.is_empty() {
                tx.append_request_body(&request.body).map_err(failed)?;
            }
            tx.process_request_body().map_err(failed)?;
        }
        let score = ["blocking_inbound_anomaly_score", "inbound_anomaly_score", "anomaly_score"]
            .iter()
            .find_map(|key| tx.tx().get(key).and_then(|v| v.first().and_then(|s| s.parse::<i32>().ok())));
        // A chain completed when its first rule's entry is followed by one
        // entry (without id) per further link.
        let data = tx.matched_data();
        let mut matches: Vec<RuleMatch> = Vec::new();
        for (i, entry) in data.iter().enumerate() {
            let Some(id) = entry.rule_id.as_deref().and_then(|id| id.parse::<u32>().ok()) else { continue };
            let Some(&links) = self.scoring.get(&id) else { continue };
            let followers = data[i + 1..].iter().take_while(|d| d.rule_id.is_none()).count();
            if followers + 1 < links || category(id).is_none() {
                continue;
            }
            if matches.iter().any(|m| m.id == id && m.location == entry.variable) {
                continue;
            }
            let value = entry.matched_portion.as_deref().unwrap_or(&entry.value);
            matches.push(RuleMatch { id, location: entry.variable.clone(), snippet: snippet(&entry.variable, value) });
        }
        Ok(Verdict { intervened: tx.intervention().is_some(), score, matches })
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::waf::{self, EngineKind};

    fn crs() -> &'static Path {
        Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/crs"))
    }

    #[test]
    fn stock_crs_v4_loads_and_passes_the_canary() {
        let engine = waf::load(EngineKind::Zentinel, crs(), &Profile::default()).unwrap();
        assert_eq!(engine.name(), "zentinel");
    }

    fn request(uri: &str, headers: &[(&str, &str)], body: &'static str) -> crate::waf::WafRequest {
        let mut all = vec![("Host".to_owned(), "example.com".to_owned()), ("Accept".to_owned(), "*/*".to_owned())];
        all.extend(headers.iter().map(|(n, v)| ((*n).to_owned(), (*v).to_owned())));
        crate::waf::WafRequest {
            method: if body.is_empty() { "GET".into() } else { "POST".into() },
            uri: uri.into(),
            version: "HTTP/1.1",
            headers: all,
            body: bytes::Bytes::from_static(body.as_bytes()),
            body_complete: true,
            client_ip: std::net::Ipv4Addr::new(192, 0, 2, 1).into(),
            client_port: 1234,
        }
    }

    #[test]
    fn only_rules_that_scored_are_reported() {
        let engine = waf::load(EngineKind::Zentinel, crs(), &Profile::default()).unwrap();
        let clean = engine.inspect(&request("/api/orders?page=2", &[], "")).unwrap();
        assert_eq!(clean, Verdict { intervened: false, score: Some(0), matches: vec![] });
        let sqli = engine.inspect(&request("/p?id=1%27%20UNION%20SELECT%20a%20FROM%20b--", &[], "")).unwrap();
        assert!(sqli.intervened);
        assert!(sqli.matches.iter().all(|m| m.id / 1000 == 942), "{sqli:?}");
        assert!(!sqli.matches.is_empty());
        // A chain (920170: GET with a body) reports only when every link matched.
        let get_with_body = engine.inspect(&request("/x", &[("Content-Length", "5")], "")).unwrap();
        assert!(get_with_body.matches.iter().any(|m| m.id == 920_170), "{get_with_body:?}");
    }
}
