//! The documentation cannot drift from the code unnoticed.
//!
//! - Every key the configuration parser accepts is in a table of
//!   docs/configuration.md under its section's heading, and every key those
//!   tables list is accepted. The accepted keys are read from the parser
//!   itself: each raw table refuses unknown keys, and its error lists the
//!   ones it knows.
//! - No page says a feature is missing ("not implemented", "not yet",
//!   "later", "until … lands", …) outside the threat model's "Not defended
//!   yet" list, except the few sentences allowed below with a reason; and
//!   no such sentence names a section the parser accepts.
//! - Every reason code in docs/events.md exists (the other direction is a
//!   unit test of `portcullis_policy::deny`).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use portcullis::config::raw::RawCsrf;
use portcullis::config::raw::*;
use serde::de::DeserializeOwned;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The keys a raw table accepts, from its own unknown-key error.
fn keys<T: DeserializeOwned>() -> BTreeSet<String> {
    let err = match toml::from_str::<T>("__probe__ = 1") {
        Ok(_) => panic!("{} accepted an unknown key", std::any::type_name::<T>()),
        Err(e) => e.message().to_owned(),
    };
    let list = err
        .split_once("expected one of ")
        .or_else(|| err.split_once("expected "))
        .map(|(_, list)| list)
        .unwrap_or_else(|| panic!("{}: no key list in {err:?}", std::any::type_name::<T>()));
    // "expected one of `a`, `b`, `c`" or "expected `a` or `b`".
    list.split(", ").flat_map(|k| k.split(" or ")).map(|k| k.trim().trim_matches('`').to_owned()).collect()
}

/// The keys documented under `heading` (up to the next heading): the first
/// cells of every table whose header's first cell is `key`.
fn documented(doc: &str, heading: &str) -> BTreeSet<String> {
    let mut lines = doc.lines().skip_while(|l| l.trim() != heading);
    assert!(lines.next().is_some(), "docs/configuration.md has no heading {heading:?}");
    let mut out = BTreeSet::new();
    let mut in_key_table = false;
    for line in lines.take_while(|l| !l.starts_with('#')) {
        if !line.starts_with('|') {
            in_key_table = false;
            continue;
        }
        let first = line.trim_start_matches('|').split('|').next().unwrap_or_default().trim();
        if first == "key" {
            in_key_table = true;
        } else if in_key_table && first.starts_with('`') {
            out.insert(first.trim_matches('`').to_owned());
        }
    }
    out
}

#[test]
fn every_accepted_key_is_documented_and_every_documented_key_is_accepted() {
    let doc = read("docs/configuration.md");
    // (heading, the raw tables whose keys it documents).
    type Tables = Vec<(&'static str, BTreeSet<String>)>;
    let sections: Vec<(&str, Tables)> = vec![
        ("## `[server]`", vec![("RawServer", keys::<RawServer>())]),
        ("## `[[listener]]`", vec![("RawListener", keys::<RawListener>())]),
        ("### TLS", vec![("RawTlsFiles", keys::<RawTlsFiles>())]),
        ("### Several certificates (SNI)", vec![("RawCertPair", keys::<RawCertPair>())]),
        ("## `[[upstream]]`", vec![("RawUpstream", keys::<RawUpstream>())]),
        ("### Upstream TLS", vec![("RawUpstreamTls", keys::<RawUpstreamTls>())]),
        ("## `[[route]]`", vec![("RawRoute", keys::<RawRoute>()), ("RawMatch", keys::<RawMatch>())]),
        ("## Rate limits: `[limits.NAME]` and route `limits`", vec![("RawLimit", keys::<RawLimit>())]),
        ("## Automatic bans: `[[ban]]`", vec![("RawBan", keys::<RawBan>())]),
        ("## The admin API: `[admin]`", vec![("RawAdmin", keys::<RawAdmin>())]),
        (
            "## Alerts: `[alerts]`",
            vec![
                ("RawAlerts", keys::<portcullis::config::alerts::RawAlerts>()),
                ("RawAlertRule", keys::<portcullis::config::alerts::RawAlertRule>()),
                ("RawAlertMatch", keys::<portcullis::config::alerts::RawAlertMatch>()),
            ],
        ),
        ("## Login protection: `[login.NAME]` and route `login`", vec![("RawLogin", keys::<RawLogin>())]),
        ("## OpenAPI validation: `[openapi.NAME]` and route `openapi`", vec![("RawOpenApi", keys::<RawOpenApi>())]),
        (
            "## Authorization: `[roles]`, `require`, `[access]`",
            vec![
                ("RawRole", keys::<RawRole>()),
                ("RawRequire", keys::<RawRequire>()),
                ("RawAccess", keys::<RawAccess>()),
            ],
        ),
        (
            "## The WAF: `[waf]`",
            vec![
                ("RawWaf", keys::<RawWaf>()),
                ("RawWafExclusion", keys::<RawWafExclusion>()),
                ("RawRouteWafTable", keys::<RawRouteWafTable>()),
            ],
        ),
        ("## `[paths]`", vec![("RawPaths", keys::<RawPaths>())]),
        ("## `[headers]`", vec![("RawHeaders", keys::<RawHeaders>()), ("RawHstsSettings", keys::<RawHstsSettings>())]),
        ("### Per-route headers", vec![("RawHeaderChanges", keys::<RawHeaderChanges>())]),
        ("## `[cors]`", vec![("RawCors", keys::<RawCors>())]),
        ("## `[csrf]`", vec![("RawCsrf", keys::<RawCsrf>())]),
        ("## `[log]`", vec![("RawLog", keys::<RawLog>())]),
        ("## `[events]`", vec![("RawEvents", keys::<RawEvents>()), ("RawSink", keys::<RawSink>())]),
        ("### `[auth.jwt]`", vec![("RawJwt", keys::<RawJwt>()), ("RawJwtKey", keys::<RawJwtKey>())]),
        ("### `[auth.mtls]`", vec![("RawMtls", keys::<RawMtls>())]),
        ("### `[auth.identity]`", vec![("RawIdentity", keys::<RawIdentity>())]),
        ("### `[state]`", vec![("RawState", keys::<RawState>())]),
        ("### `[auth.api_key]`", vec![("RawApiKeys", keys::<RawApiKeys>())]),
        ("## Built-in accounts: `[auth.accounts]`", vec![("RawAccounts", keys::<RawAccounts>())]),
        (
            "## OIDC login and sessions (`[auth.oidc]`, `[auth.session]`)",
            vec![("RawOidc", keys::<RawOidc>()), ("RawSession", keys::<RawSession>())],
        ),
    ];
    let mut failures = Vec::new();
    for (heading, tables) in &sections {
        let documented = documented(&doc, heading);
        let accepted: BTreeSet<String> = tables.iter().flat_map(|(_, k)| k.iter().cloned()).collect();
        for (table, keys) in tables {
            for key in keys.difference(&documented) {
                failures.push(format!("{heading}: `{key}` ({table}) is accepted but not in a key table"));
            }
        }
        for key in documented.difference(&accepted) {
            failures.push(format!("{heading}: `{key}` is documented but the parser refuses it"));
        }
    }
    // Every top-level section is somewhere in the reference.
    for section in accepted_sections() {
        let forms = [format!("`[{section}]`"), format!("`[[{section}]]`"), format!("`[{section}.NAME]`")];
        if !forms.iter().any(|f| doc.contains(f)) {
            failures.push(format!("section [{section}] is accepted but never named in docs/configuration.md"));
        }
    }
    assert!(failures.is_empty(), "docs/configuration.md and the parser disagree:\n{}", failures.join("\n"));
}

/// Every section name the parser accepts: the top-level tables and `auth.*`
/// (`[auth]` itself only holds those).
fn accepted_sections() -> BTreeSet<String> {
    keys::<RawConfig>()
        .into_iter()
        .filter(|k| k != "auth")
        .chain(keys::<RawAuth>().into_iter().map(|k| format!("auth.{k}")))
        .collect()
}

/// Words that say something is missing or coming.
const ROADMAP: &[&str] = &[
    "not implemented",
    "not yet",
    "not supported yet",
    " yet.",
    " yet,",
    " yet:",
    " yet ",
    "later",
    "in the future",
    "future ",
    "planned",
    "coming soon",
    "for now",
    " lands",
    "will be added",
    "todo",
];

/// Sentences where one of those words means something else, with why.
const ALLOWED: &[(&str, &str)] = &[
    ("Redis 7 or later", "a version requirement"),
    ("nobody is authenticated yet", "the order of the pipeline"),
    ("not yet valid", "a JWT claim check (nbf)"),
    ("jwt.not_yet_valid", "a reason code"),
    ("A later ban never shortens an earlier one", "ordering of bans"),
    ("adding a role later", "advice about a future change by the operator"),
    ("is added later, on the", "the order of the pipeline"),
    ("in the future beyond", "a time comparison (nbf, iat)"),
];

#[test]
fn no_page_announces_as_missing_what_exists() {
    let accepted = accepted_sections();
    let mut pages: Vec<PathBuf> = std::fs::read_dir(repo().join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    pages.push(repo().join("README.md"));
    pages.sort();
    let mut failures = Vec::new();
    for page in &pages {
        let name = page.strip_prefix(repo()).unwrap().display().to_string();
        let text = std::fs::read_to_string(page).unwrap();
        let mut heading = String::new();
        for (n, line) in text.lines().enumerate() {
            if line.starts_with('#') {
                heading = line.to_owned();
            }
            let lower = line.to_ascii_lowercase();
            let Some(word) = ROADMAP.iter().find(|w| lower.contains(*w)) else { continue };
            if ALLOWED.iter().any(|(s, _)| line.contains(s)) {
                continue;
            }
            let roadmap_section = name == "docs/threat-model.md" && heading == "## Not defended yet";
            // Even there, it must not call missing what the parser accepts.
            let names_section =
                accepted.iter().find(|s| line.contains(&format!("`[{s}]`")) || line.contains(&format!("`[[{s}]]`")));
            if let Some(section) = names_section {
                failures.push(format!(
                    "{name}:{}: says {word:?} about [{section}], which the parser accepts: {line}",
                    n + 1
                ));
            } else if !roadmap_section {
                failures.push(format!(
                    "{name}:{}: {word:?} outside the threat model's \"Not defended yet\": {line}",
                    n + 1
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "pages announce as missing what may exist (move roadmap to docs/threat-model.md \"Not defended yet\", \
         or add the sentence to ALLOWED with a reason):\n{}",
        failures.join("\n")
    );
}

#[test]
fn every_reason_code_in_the_events_page_exists() {
    let doc = read("docs/events.md");
    // Plus the codes of events that are not refusals.
    let known: BTreeSet<&str> = portcullis_policy::Reason::ALL
        .iter()
        .map(|r| r.code())
        .chain(["csp.violation"])
        .chain(portcullis::cli_user::EVENT_CODES.iter().copied())
        .chain(portcullis::store::audit::EVENT_CODES.iter().copied())
        .collect();
    let mut unknown = Vec::new();
    for line in doc.lines().filter(|l| l.starts_with("| `")) {
        let code = line.trim_start_matches("| `").split('`').next().unwrap_or_default();
        if code.contains('.') && !known.contains(code) {
            unknown.push(code.to_owned());
        }
    }
    assert!(unknown.is_empty(), "docs/events.md lists reason codes that do not exist: {unknown:?}");
}
