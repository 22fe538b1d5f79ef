//! Assembling an OWASP CRS v4 directory into one rule set text that any
//! ModSecurity-compatible engine loads.
//!
//! Decision rules:
//! - The directory is a CRS release (`DIR/rules/*.conf`, as unpacked from
//!   the release tarball) or its `rules/` folder itself. It must contain
//!   `REQUEST-901-INITIALIZATION.conf`; anything else is refused.
//! - Portcullis writes the setup itself instead of `crs-setup.conf`: the
//!   engine on, request bodies read, CRS's anomaly-scoring defaults, and the
//!   configured paranoia level and inbound threshold. `crs_setup_version`
//!   comes from the rules' own `ver:` tag, so the setup always matches them.
//! - Request rules load in file-name order (CRS numbers them for this), with
//!   the user's optional `REQUEST-900-…` and `RESPONSE-999-…` exclusion files
//!   when present. Response rules (`RESPONSE-950` … `RESPONSE-959`: data
//!   leakages and outbound blocking) load only for a profile that inspects
//!   responses; `RESPONSE-980` (phase 5 reporting) never does: the
//!   gateway's events do its work. Before the outbound blocking rules
//!   (`RESPONSE-959`) go Portcullis's own leak rules ([`LEAK_RULES`]) for
//!   what CRS's miss.
//! - Exclusions become `SecRuleRemoveById` / `SecRuleUpdateTargetById` after
//!   the rules. Their targets come from configuration, so they are checked
//!   against a strict grammar first: nothing from a config file reaches the
//!   rule text unless it is a plain `COLLECTION[:name]`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::{Exclusion, LoadError, Profile};

/// A CRS rule set ready to load: the complete rule text (absolute `Include`s).
#[derive(Debug, Clone)]
pub struct RuleSet {
    /// The rule text.
    pub text: String,
    /// The CRS version found (`4.28.0`), if the rules carry one.
    pub version: Option<String>,
    /// The rule files included, in order.
    pub files: Vec<PathBuf>,
}

impl RuleSet {
    /// Assembles the rule set for `profile` from a CRS directory.
    ///
    /// # Errors
    /// The directory is missing, unreadable or not a CRS rules directory, or
    /// an exclusion target is malformed.
    pub fn assemble(dir: &Path, profile: &Profile) -> Result<Self, LoadError> {
        let fail = |reason: String| LoadError::Directory { path: dir.display().to_string(), reason };
        let rules_dir = if dir.join("rules").is_dir() { dir.join("rules") } else { dir.to_path_buf() };
        let entries = std::fs::read_dir(&rules_dir).map_err(|e| fail(e.to_string()))?;
        let mut files: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "conf"))
            .filter(|p| {
                let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
                name.starts_with("REQUEST-")
                    || name.starts_with("RESPONSE-999-")
                    || profile.responses && name.starts_with("RESPONSE-95")
            })
            .collect();
        files.sort();
        let init = files.iter().find(|p| p.file_name().is_some_and(|n| n == "REQUEST-901-INITIALIZATION.conf"));
        let Some(init) = init else {
            return Err(fail(
                "no REQUEST-901-INITIALIZATION.conf: not an OWASP CRS rules directory (see docs/waf.md to install CRS v4)"
                    .into(),
            ));
        };
        let version = std::fs::read_to_string(init).ok().and_then(|text| crs_version(&text));
        let files: Vec<PathBuf> =
            files.iter().map(|f| std::fs::canonicalize(f).unwrap_or_else(|_| f.clone())).collect();

        let mut text = setup(profile, version.as_deref());
        let mut leak_rules = profile.responses;
        for file in &files {
            let path = file.to_str().ok_or_else(|| fail(format!("{} is not UTF-8", file.display())))?;
            if path.chars().any(|c| c.is_whitespace() || c == '"') {
                return Err(fail(format!("rule file path {path:?} contains spaces or quotes")));
            }
            let name = file.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            if leak_rules && (name.starts_with("RESPONSE-959") || name.starts_with("RESPONSE-999")) {
                text.push_str(LEAK_RULES);
                leak_rules = false;
            }
            let _ = writeln!(text, "Include {path}");
        }
        for exclusion in &profile.exclusions {
            text.push_str(&exclusion_directives(exclusion).map_err(&fail)?);
        }
        Ok(Self { text, version, files })
    }
}

/// ModSecurity's recommended body handling (`modsecurity.conf-recommended`,
/// rules 200000–200004), which CRS assumes is in place.
pub const BODY_SETUP: &str = r#"SecRule REQUEST_HEADERS:Content-Type "^(?:application(?:/soap\+|/)|text/)xml" "id:200000,phase:1,t:none,t:lowercase,pass,nolog,ctl:requestBodyProcessor=XML"
SecRule REQUEST_HEADERS:Content-Type "^application/(?:[a-z0-9.+-]+\+)?json" "id:200001,phase:1,t:none,t:lowercase,pass,nolog,ctl:requestBodyProcessor=JSON"
SecRule REQBODY_ERROR "!@eq 0" "id:200002,phase:2,t:none,log,deny,status:400,msg:'Failed to parse request body.',logdata:'%{reqbody_error_msg}',severity:2"
SecRule MULTIPART_STRICT_ERROR "!@eq 0" "id:200003,phase:2,t:none,log,deny,status:400,msg:'Multipart request body failed strict validation'"
SecRule MULTIPART_UNMATCHED_BOUNDARY "@eq 1" "id:200004,phase:2,t:none,log,deny,status:400,msg:'Multipart parser detected a possible unmatched boundary.'"
"#;

/// Portcullis's leak rules, for profiles that inspect responses: what an
/// application passing on a PostgreSQL error shows. CRS 4.28 knows the
/// server's messages only behind a driver's or a language's prefix
/// (`PG::SyntaxError`, `org.postgresql.util.PSQLException`, `pg_query()`)
/// or in PostgreSQL's pre-12 wording (`invalid input syntax for integer`);
/// an ORM's error (TypeORM's `QueryFailedError`, Prisma's, Sequelize's)
/// carries the bare message, which 951100 notices and no rule scores. An
/// error-level leak, as CRS scores 951220 (PL1); the quotes may be escaped
/// (`\"`), as in a JSON error body.
pub const LEAK_RULES: &str = r#"SecRule RESPONSE_BODY "@rx (?i)(?:syntax error at or near \x5c?\x22|invalid input syntax for type [a-z ]{1,40}: \x5c?\x22|(?:relation|column) \x5c?\x22[^\x22\x5c]{1,128}\x5c?\x22 (?:of relation \x5c?\x22[^\x22\x5c]{1,128}\x5c?\x22 )?does not exist|duplicate key value violates unique constraint \x5c?\x22|null value in column \x5c?\x22[^\x22\x5c]{1,128}\x5c?\x22|violates (?:foreign key|check|not-null) constraint \x5c?\x22|current transaction is aborted, commands ignored until end of transaction block)" "id:200100,phase:4,block,capture,t:none,msg:'PostgreSQL error message in the response',logdata:'Matched Data: %{TX.0} found within %{MATCHED_VAR_NAME}',tag:'platform-pgsql',tag:'attack-disclosure',tag:'portcullis',severity:'ERROR',setvar:'tx.outbound_anomaly_score_pl1=+%{tx.error_anomaly_score}'"
"#;

impl RuleSet {
    /// The rule text with [`BODY_SETUP`] between Portcullis's setup and the
    /// rules, as both engines load it.
    #[must_use]
    pub fn with_body_setup(&self) -> String {
        match self.text.find("\nInclude ") {
            Some(at) => format!("{}\n{BODY_SETUP}{}", &self.text[..at], &self.text[at + 1..]),
            None => format!("{BODY_SETUP}{}", self.text),
        }
    }
}

/// The CRS version in `ver:'OWASP_CRS/4.28.0'`.
fn crs_version(text: &str) -> Option<String> {
    let start = text.find("ver:'OWASP_CRS/")? + "ver:'OWASP_CRS/".len();
    let version: String = text[start..].chars().take_while(|c| c.is_ascii_digit() || *c == '.').collect();
    let version = version.trim_end_matches('.');
    (!version.is_empty()).then(|| version.to_owned())
}

/// CRS's numeric spelling of its version: `4.28.0` → `4280`, `3.3.4` → `334`.
fn numeric_version(version: &str) -> Option<u32> {
    let mut parts = version.split('.').map(|p| p.parse::<u32>().ok());
    let (major, minor, patch) =
        (parts.next()??, parts.next().flatten().unwrap_or(0), parts.next().flatten().unwrap_or(0));
    Some(if major >= 4 { major * 1000 } else { major * 100 } + minor * 10 + patch)
}

/// The methods CRS lets through (its rule 911100 scores any other method as
/// critical, which alone reaches the default threshold). CRS's default, `GET
/// HEAD POST OPTIONS`, refuses every REST update; the gateway's routes are
/// what restricts methods per path.
pub const ALLOWED_METHODS: &str = "GET HEAD POST OPTIONS PUT PATCH DELETE";

/// The body charsets CRS lets through (rule 920480): its default
/// (UTF-8, ISO-8859-1/15, Windows-1252) and US-ASCII, which the gateway
/// accepts after checking the body is ASCII (`encoding.rs`).
pub const ALLOWED_CHARSETS: &str = "|utf-8| |iso-8859-1| |iso-8859-15| |windows-1252| |us-ascii|";

/// The response media types libmodsecurity inspects (the gateway decides
/// for its own engine, from `response_types`): ModSecurity's recommended
/// ones and JSON.
pub const RESPONSE_BODY_TYPES: &str = "text/plain text/html text/xml application/json application/xml";

/// The setup Portcullis writes in place of `crs-setup.conf`.
fn setup(profile: &Profile, version: Option<&str>) -> String {
    let setup_version = version.and_then(numeric_version).unwrap_or(4000);
    format!(
        "SecRuleEngine On\n\
         SecRequestBodyAccess On\n\
         SecResponseBodyAccess {response_body}\n\
         {response_types}\
         SecDefaultAction \"phase:1,log,auditlog,pass\"\n\
         SecDefaultAction \"phase:2,log,auditlog,pass\"\n\
         SecDefaultAction \"phase:3,log,auditlog,pass\"\n\
         SecDefaultAction \"phase:4,log,auditlog,pass\"\n\
         SecAction \"id:900000,phase:1,pass,t:none,nolog,setvar:tx.blocking_paranoia_level={paranoia}\"\n\
         SecAction \"id:900110,phase:1,pass,t:none,nolog,setvar:tx.inbound_anomaly_score_threshold={threshold},setvar:tx.outbound_anomaly_score_threshold={outbound}\"\n\
         SecAction \"id:900200,phase:1,pass,t:none,nolog,setvar:'tx.allowed_methods={ALLOWED_METHODS}'\"\n\
         SecAction \"id:900280,phase:1,pass,t:none,nolog,setvar:'tx.allowed_request_content_type_charset={ALLOWED_CHARSETS}'\"\n\
         SecAction \"id:900990,phase:1,pass,t:none,nolog,setvar:tx.crs_setup_version={setup_version}\"\n",
        paranoia = profile.paranoia,
        threshold = profile.inbound_threshold,
        outbound = profile.outbound_threshold,
        response_body = if profile.responses { "On" } else { "Off" },
        response_types =
            if profile.responses { format!("SecResponseBodyMimeType {RESPONSE_BODY_TYPES}\n") } else { String::new() },
    )
}

/// The directives for one exclusion.
fn exclusion_directives(exclusion: &Exclusion) -> Result<String, String> {
    let mut out = String::new();
    if exclusion.targets.is_empty() {
        let ids: Vec<String> = exclusion.rules.iter().map(ToString::to_string).collect();
        let _ = writeln!(out, "SecRuleRemoveById {}", ids.join(" "));
        return Ok(out);
    }
    for target in &exclusion.targets {
        check_target(target)?;
        for range in &exclusion.rules {
            let _ = writeln!(out, "SecRuleUpdateTargetById {range} \"!{target}\"");
        }
    }
    Ok(out)
}

/// Collections an exclusion may name.
pub const TARGET_COLLECTIONS: &[&str] = &[
    "ARGS",
    "ARGS_GET",
    "ARGS_POST",
    "ARGS_NAMES",
    "ARGS_GET_NAMES",
    "ARGS_POST_NAMES",
    "REQUEST_COOKIES",
    "REQUEST_COOKIES_NAMES",
    "REQUEST_HEADERS",
    "REQUEST_HEADERS_NAMES",
    "REQUEST_FILENAME",
    "REQUEST_BASENAME",
    "REQUEST_URI",
    "REQUEST_BODY",
    "FILES",
    "FILES_NAMES",
    "XML",
];

/// Checks an exclusion target: `COLLECTION` or `COLLECTION:name`, where the
/// name is letters, digits and `_ - . [ ]`, or `/regex/` without quotes.
///
/// # Errors
/// An unknown collection, or characters that could escape the rule text.
pub fn check_target(target: &str) -> Result<(), String> {
    let (collection, name) = target.split_once(':').map_or((target, None), |(c, n)| (c, Some(n)));
    if !TARGET_COLLECTIONS.contains(&collection) {
        return Err(format!(
            "exclusion target `{target}`: unknown collection `{collection}` (one of {})",
            TARGET_COLLECTIONS.join(", ")
        ));
    }
    let Some(name) = name else { return Ok(()) };
    let plain =
        !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '[' | ']'));
    let regex = name.len() > 2
        && name.starts_with('/')
        && name.ends_with('/')
        && !name.chars().any(|c| c.is_control() || c == '"' || c == '\'' || c == ',' || c.is_whitespace());
    if plain || regex {
        Ok(())
    } else {
        Err(format!(
            "exclusion target `{target}`: the name after `:` must be letters, digits, `_-.[]`, or a /regex/ without quotes, commas or spaces"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::waf::RuleRange;

    fn crs_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/crs")
    }

    #[test]
    fn the_release_layout_assembles_with_our_setup() {
        let set = RuleSet::assemble(&crs_dir(), &Profile { paranoia: 2, inbound_threshold: 7, ..Profile::default() })
            .unwrap();
        assert_eq!(set.version.as_deref(), Some("4.28.0"));
        assert!(set.text.contains("setvar:tx.crs_setup_version=4280"));
        assert!(set.text.contains("blocking_paranoia_level=2"));
        assert!(set.text.contains("inbound_anomaly_score_threshold=7"));
        assert!(set.text.contains("tx.allowed_methods=GET HEAD POST OPTIONS PUT PATCH DELETE'"));
        let names: Vec<String> =
            set.files.iter().map(|f| f.file_name().unwrap().to_string_lossy().into_owned()).collect();
        assert_eq!(names.first().map(String::as_str), Some("REQUEST-901-INITIALIZATION.conf"));
        assert!(names.iter().any(|n| n == "REQUEST-942-APPLICATION-ATTACK-SQLI.conf"));
        assert!(!names.iter().any(|n| n.starts_with("RESPONSE-95") || n.ends_with(".example")));
        let rules_only = RuleSet::assemble(&crs_dir().join("rules"), &Profile::default()).unwrap();
        assert_eq!(rules_only.files, set.files);
    }

    #[test]
    fn directories_that_are_not_crs_are_refused() {
        let empty = std::env::temp_dir().join(format!("portcullis-crs-empty-{}", std::process::id()));
        std::fs::create_dir_all(&empty).unwrap();
        let err = RuleSet::assemble(&empty, &Profile::default()).unwrap_err().to_string();
        assert!(err.contains("REQUEST-901-INITIALIZATION.conf"), "{err}");
        let err = RuleSet::assemble(Path::new("/nonexistent/crs"), &Profile::default()).unwrap_err().to_string();
        assert!(err.contains("/nonexistent/crs"), "{err}");
    }

    #[test]
    fn exclusions_become_directives_and_targets_are_checked() {
        let remove = Exclusion { rules: vec![RuleRange::parse("942100").unwrap()], targets: vec![] };
        assert_eq!(exclusion_directives(&remove).unwrap(), "SecRuleRemoveById 942100\n");
        let narrow = Exclusion {
            rules: vec![RuleRange::parse("942100-942199").unwrap()],
            targets: vec!["ARGS:comment".into(), "REQUEST_COOKIES:/^sess/".into()],
        };
        assert_eq!(
            exclusion_directives(&narrow).unwrap(),
            "SecRuleUpdateTargetById 942100-942199 \"!ARGS:comment\"\nSecRuleUpdateTargetById 942100-942199 \"!REQUEST_COOKIES:/^sess/\"\n"
        );
        for good in ["ARGS", "ARGS:user.name", "REQUEST_HEADERS:User-Agent", "ARGS:/^f[0-9]+$/"] {
            assert!(check_target(good).is_ok(), "{good}");
        }
        for bad in [
            "args:x",
            "TX:score",
            "ARGS:a\"b",
            "ARGS:x\nSecRuleEngine Off",
            "ARGS:",
            "ARGS:a b",
            "ARGS:/x\"/",
            "ARGS:/a,b/",
        ] {
            assert!(check_target(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn versions_read_from_rules() {
        assert_eq!(crs_version("ver:'OWASP_CRS/4.28.0'").as_deref(), Some("4.28.0"));
        assert_eq!(numeric_version("4.28.0"), Some(4280));
        assert_eq!(numeric_version("3.3.4"), Some(334));
        assert_eq!(crs_version("# see OWASP_CRS/3.1.0. notes\nver:'OWASP_CRS/4.1.0'").as_deref(), Some("4.1.0"));
        assert_eq!(crs_version("no version"), None);
    }
}
