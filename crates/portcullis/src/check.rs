//! `portcullis check` findings: configurations that load but are likely
//! mistakes or weaken a defence. Each later defence adds its own checks here.

use std::fmt;

use portcullis_policy::route::{RouteEntry, RouteTable};

use crate::config::Config;

/// How serious a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Worth a look.
    Warning,
}

/// One finding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// Severity.
    pub severity: Severity,
    /// Stable identifier, e.g. `route.shadowed`.
    pub code: &'static str,
    /// What is wrong.
    pub message: String,
    /// How to fix it.
    pub help: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let level = match self.severity {
            Severity::Warning => "warning",
        };
        write!(f, "{level}[{}]: {}\n  help: {}", self.code, self.message, self.help)
    }
}

/// Everything `check` reports about a loaded configuration.
#[must_use]
pub fn findings(config: &Config) -> Vec<Finding> {
    let mut out = Vec::new();
    shadowed_routes(config, &mut out);
    out
}

fn shadowed_routes(config: &Config, out: &mut Vec<Finding>) {
    let entries = config
        .routes
        .iter()
        .map(|r| RouteEntry { host: r.host.clone(), path: r.path.clone(), methods: r.methods.clone(), value: &r.name })
        .collect();
    let table = RouteTable::new(entries);
    for (winner, shadowed) in table.shadowed() {
        out.push(Finding {
            severity: Severity::Warning,
            code: "route.shadowed",
            message: format!(
                "route {:?} can never match: route {:?} has the same host and path and takes the same methods",
                shadowed.value, winner.value
            ),
            help: "remove one of the routes, or make them differ by host, path or methods".to_owned(),
        });
    }
}
