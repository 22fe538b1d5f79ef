//! `portcullis policy test` and `portcullis policy explain`: the routing and
//! authorization decisions of a configuration, evaluated without traffic, so
//! teams can keep their policy under CI and see why a request is (or is not)
//! allowed.
//!
//! The evaluation follows the gateway's pipeline exactly: global IP lists →
//! path normalization → routing → authentication requirement → the route's
//! IP lists → `require`. The identity is given, not verified: the question
//! is what the policy does with a caller, not whether a token is valid.

use std::net::IpAddr;
use std::path::Path;
use std::process::ExitCode;

use http::Method;
use portcullis_layers::AuthMode;
use portcullis_policy::route::Match;
use portcullis_policy::{AuthMethod, Principal, Reason, normalize, rbac};
use serde::Deserialize;

use crate::app::{EXIT_CONFIG, EXIT_RUNTIME};
use crate::config::{self, Config};

/// A caller for evaluation.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Identity {
    /// `jwt`, `session`, `api_key` or `mtls` (default `jwt`).
    #[serde(default = "default_method")]
    pub method: String,
    /// The subject.
    #[serde(default = "default_subject")]
    pub subject: String,
    /// Roles.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Scopes.
    #[serde(default)]
    pub scopes: Vec<String>,
}

fn default_method() -> String {
    "jwt".into()
}

fn default_subject() -> String {
    "test-subject".into()
}

/// The outcome of one evaluation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Whether the request would reach the upstream.
    pub allowed: bool,
    /// The status the client would get (200 stands for "proxied").
    pub status: u16,
    /// The refusal's reason code.
    pub reason: Option<&'static str>,
    /// The route that matched.
    pub route: Option<String>,
    /// The path after normalization.
    pub path: String,
    /// Each step and what it decided, for `explain`.
    pub steps: Vec<String>,
}

impl Decision {
    fn deny(mut self, reason: Reason, step: String) -> Self {
        self.allowed = false;
        self.status = reason.status().as_u16();
        self.reason = Some(reason.code());
        self.steps.push(step);
        self
    }
}

/// Evaluates one request against `config`.
#[must_use]
pub fn evaluate(
    config: &Config,
    method: &Method,
    host: Option<&str>,
    raw_path: &str,
    identity: Option<&Identity>,
    ip: IpAddr,
) -> Decision {
    let mut d =
        Decision { allowed: true, status: 200, reason: None, route: None, path: raw_path.into(), steps: vec![] };
    if let Some(access) = &config.access
        && let Err(denied) = access.check(ip)
    {
        return d.deny(denied.reason, format!("[access]: {}", denied.detail.unwrap_or_default()));
    }
    let path = match normalize::normalize(raw_path, &config.paths) {
        Ok(path) => path.into_owned(),
        Err(e) => return d.deny(e.reason(), format!("normalize: {e}")),
    };
    d.steps.push(if path == raw_path {
        format!("path {path} (already normal)")
    } else {
        format!("path {raw_path} → {path}")
    });
    d.path.clone_from(&path);
    let table = config.route_index();
    let key = config.paths.match_key(&path);
    let route = match table.find(host, &key, method) {
        Match::Found(i) => &config.routes[*i],
        Match::MethodNotAllowed(allowed) => {
            let list: Vec<&str> = allowed.iter().map(Method::as_str).collect();
            return d
                .deny(Reason::RouteMethod, format!("route: path matches, method allowed only: {}", list.join(", ")));
        }
        Match::None => return d.deny(Reason::RouteNone, "route: no route matches".into()),
    };
    d.route = Some(route.name().to_owned());
    d.steps.push(format!(
        "route {:?} ({} {})",
        route.name(),
        route.path.as_str(),
        describe_methods(route.methods.as_deref())
    ));
    let principal = match route.policy.auth {
        AuthMode::Public => {
            d.steps.push("auth: public".into());
            None
        }
        AuthMode::Required(methods) => {
            let accepted: Vec<&str> = methods.iter().map(AuthMethod::as_str).collect();
            let Some(identity) = identity else {
                return d.deny(Reason::AuthMissing, format!("auth: anonymous; route accepts {}", accepted.join(", ")));
            };
            let method = AuthMethod::parse(&identity.method);
            if !method.is_some_and(|m| methods.contains(m)) {
                return d.deny(
                    Reason::AuthMissing,
                    format!(
                        "auth: credential {:?} not accepted; route accepts {}",
                        identity.method,
                        accepted.join(", ")
                    ),
                );
            }
            let mut p = Principal::new(identity.subject.clone(), method.unwrap_or(AuthMethod::Jwt), b"policy");
            p.roles.clone_from(&identity.roles);
            p.scopes.clone_from(&identity.scopes);
            d.steps.push(format!(
                "auth: {} as {:?} roles [{}]",
                identity.method,
                identity.subject,
                identity.roles.join(", ")
            ));
            Some(p)
        }
    };
    if let Some(ips) = &route.policy.ips
        && let Err(denied) = ips.check(ip)
    {
        return d.deny(denied.reason, format!("route ips: {}", denied.detail.unwrap_or_default()));
    }
    if let (Some(requirement), Some(principal)) = (&route.policy.require, &principal) {
        let param = |name: &str| route.path.param(&path, name);
        if let Err(denied) = rbac::authorize(principal, requirement, &config.roles, param) {
            return d.deny(denied.reason, format!("require: {}", denied.detail.unwrap_or_default()));
        }
        d.steps.push("require: met".into());
    }
    d.steps.push("allow: proxied to the upstream".into());
    d
}

fn describe_methods(methods: Option<&[Method]>) -> String {
    methods.map_or_else(|| "any method".into(), |m| m.iter().map(Method::as_str).collect::<Vec<_>>().join("|"))
}

/// `CASES.toml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Cases {
    #[serde(rename = "case")]
    cases: Vec<Case>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: Option<String>,
    #[serde(default = "default_http_method")]
    method: String,
    path: String,
    host: Option<String>,
    identity: Option<Identity>,
    ip: Option<IpAddr>,
    /// `allow`, `deny`, or a reason code (`authz.role`).
    expect: String,
}

fn default_http_method() -> String {
    "GET".into()
}

/// The client address used when a case gives none (TEST-NET-1).
const DEFAULT_IP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));

/// Whether `decision` meets `expect`.
fn meets(decision: &Decision, expect: &str) -> bool {
    match expect {
        "allow" => decision.allowed,
        "deny" => !decision.allowed,
        code => decision.reason == Some(code),
    }
}

fn outcome(decision: &Decision) -> String {
    match (decision.allowed, decision.reason, &decision.route) {
        (true, _, Some(route)) => format!("allow (route {route:?})"),
        (true, _, None) => "allow".into(),
        (false, Some(reason), Some(route)) => format!("deny {} {reason} (route {route:?})", decision.status),
        (false, Some(reason), None) => format!("deny {} {reason}", decision.status),
        (false, None, _) => "deny".into(),
    }
}

/// `portcullis policy test`: runs every case; exit 0 when all pass, 1 when
/// any fails (with what was expected and what happened), 2 for unusable
/// files.
#[must_use]
pub fn test(config_path: &Path, cases_path: &Path) -> ExitCode {
    let config = match config::load(config_path) {
        Ok(config) => config,
        Err(errors) => {
            eprintln!("{errors}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let cases: Cases = match std::fs::read_to_string(cases_path)
        .map_err(|e| e.to_string())
        .and_then(|text| toml::from_str(&text).map_err(|e| e.to_string()))
    {
        Ok(cases) => cases,
        Err(e) => {
            eprintln!("error: {}: {e}", cases_path.display());
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let mut failed = 0;
    for (i, case) in cases.cases.iter().enumerate() {
        let Ok(method) = case.method.parse::<Method>() else {
            eprintln!("error: case {}: invalid method {:?}", i + 1, case.method);
            return ExitCode::from(EXIT_CONFIG);
        };
        let label = case.name.clone().unwrap_or_else(|| format!("{} {}", case.method, case.path));
        let who = case.identity.as_ref().map_or_else(
            || "anonymous".to_owned(),
            |id| format!("{} {:?} [{}]", id.method, id.subject, id.roles.join(", ")),
        );
        let decision = evaluate(
            &config,
            &method,
            case.host.as_deref(),
            &case.path,
            case.identity.as_ref(),
            case.ip.unwrap_or(DEFAULT_IP),
        );
        if meets(&decision, &case.expect) {
            println!("ok    {label}  ({who}: {})", outcome(&decision));
        } else {
            failed += 1;
            println!("FAIL  {label}  ({who})");
            println!("        expected: {}", case.expect);
            println!("        got:      {}", outcome(&decision));
            for step in &decision.steps {
                println!("          {step}");
            }
        }
    }
    let total = cases.cases.len();
    println!("\n{} passed, {failed} failed, {total} cases", total - failed);
    if failed == 0 { ExitCode::SUCCESS } else { ExitCode::from(EXIT_RUNTIME) }
}

/// `portcullis policy explain`: one request, step by step.
#[must_use]
pub fn explain(
    config_path: &Path,
    method: &str,
    path: &str,
    host: Option<&str>,
    identity: Option<&Identity>,
    ip: Option<IpAddr>,
) -> ExitCode {
    let config = match config::load(config_path) {
        Ok(config) => config,
        Err(errors) => {
            eprintln!("{errors}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let Ok(method) = method.parse::<Method>() else {
        eprintln!("error: invalid method {method:?}");
        return ExitCode::from(EXIT_CONFIG);
    };
    let decision = evaluate(&config, &method, host, path, identity, ip.unwrap_or(DEFAULT_IP));
    for (i, step) in decision.steps.iter().enumerate() {
        println!("{}. {step}", i + 1);
    }
    println!("=> {}", outcome(&decision));
    if decision.allowed { ExitCode::SUCCESS } else { ExitCode::from(EXIT_RUNTIME) }
}
