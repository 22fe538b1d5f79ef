//! Loading real rule sets into each WAF engine: stock CRS v4 loads and passes
//! the canary, broken rule sets and CRS 3.x are refused at start.
//!
//! CRS v4.28 comes from `../shared/crs`; CRS 3.3.4 from Debian's
//! `modsecurity-crs` package (`/usr/share/modsecurity-crs/rules`), which
//! `scripts/test` installs.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

use portcullis_policy::waf::{self, EngineKind, LoadError, Profile};

fn crs_v4() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/crs")
}

const CRS_3: &str = "/usr/share/modsecurity-crs/rules";

/// A copy of CRS v4's rules with `extra` appended to one rule file, in a
/// fresh temporary directory (removed when dropped).
struct BrokenCrs(PathBuf);

impl BrokenCrs {
    fn new(name: &str, extra: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("portcullis-broken-crs-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for entry in std::fs::read_dir(crs_v4().join("rules")).unwrap() {
            let path = entry.unwrap().path();
            std::fs::copy(&path, dir.join(path.file_name().unwrap())).unwrap();
        }
        let target = dir.join("REQUEST-942-APPLICATION-ATTACK-SQLI.conf");
        let mut text = std::fs::read_to_string(&target).unwrap();
        text.push('\n');
        text.push_str(extra);
        text.push('\n');
        std::fs::write(&target, text).unwrap();
        Self(dir)
    }
}

impl Drop for BrokenCrs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn load_error(kind: EngineKind, dir: &Path) -> LoadError {
    match waf::load(kind, dir, &Profile::default()) {
        Ok(engine) => panic!("{dir:?} loaded into {}; expected a refusal", engine.name()),
        Err(e) => e,
    }
}

/// CRS 3.x must not start under the pure-Rust engine: with it, zentinel-modsec
/// 0.5.0 loads and then silently lets nearly everything through. Stock 3.3.4
/// is refused for its rules the engine cannot load fully.
#[test]
fn crs_3_is_refused_by_zentinel() {
    assert!(Path::new(CRS_3).join("REQUEST-901-INITIALIZATION.conf").is_file(), "install Debian's modsecurity-crs");
    let err = load_error(EngineKind::Zentinel, Path::new(CRS_3));
    let LoadError::Rules(problems) = &err else { panic!("expected rule load errors, got: {err}") };
    let mut kinds: Vec<(String, usize)> = Vec::new();
    for problem in problems {
        let kind = problem.problem.split([':', '(', '=']).next().unwrap_or_default().trim().to_owned();
        match kinds.iter_mut().find(|(k, _)| *k == kind) {
            Some(entry) => entry.1 += 1,
            None => kinds.push((kind, 1)),
        }
    }
    println!("CRS 3.3.4 under zentinel: refused, {} rule load errors: {kinds:?}", problems.len());
    assert!(err.to_string().contains("allow_load_errors"), "{err}");
}

/// Even with every load error allowed, CRS 3.3.4 does not reach production:
/// the canary catches what the engine then fails to detect.
#[test]
fn crs_3_with_load_errors_allowed_fails_the_canary_under_zentinel() {
    let profile =
        Profile { allow_load_errors: vec![waf::RuleRange { first: 0, last: u32::MAX }], ..Profile::default() };
    let err = match waf::load(EngineKind::Zentinel, Path::new(CRS_3), &profile) {
        Ok(_) => panic!("CRS 3.3.4 passed the canary under zentinel"),
        Err(e) => e,
    };
    println!("CRS 3.3.4 under zentinel, load errors allowed: {err}");
    assert!(matches!(err, LoadError::Canary(_)), "{err}");
}

#[test]
fn a_rule_zentinel_cannot_compile_is_a_load_error() {
    let broken = BrokenCrs::new("zentinel-regex", r#"SecRule ARGS "@rx (unclosed[" "id:942999,phase:2,block,t:none""#);
    let err = load_error(EngineKind::Zentinel, &broken.0).to_string();
    assert!(err.contains("942999"), "{err}");
}

/// The default engine loads stock CRS v4 fully (only its listed known gaps
/// allowed) and passes the canary; a rule it cannot run is a load error
/// naming the rule.
#[test]
fn crs_v4_loads_into_portcullis_and_a_broken_rule_is_refused() {
    let engine = waf::load(EngineKind::Portcullis, &crs_v4(), &Profile::default()).unwrap();
    assert_eq!(engine.name(), "portcullis");
    let broken =
        BrokenCrs::new("portcullis-regex", r#"SecRule ARGS "@rx (unclosed[" "id:942998,phase:2,block,t:none""#);
    let err = load_error(EngineKind::Portcullis, &broken.0).to_string();
    assert!(err.contains("942998") && err.contains("allow_load_errors"), "{err}");
    let lookahead =
        BrokenCrs::new("portcullis-lookahead", r#"SecRule ARGS "@rx a(?=b)" "id:942997,phase:2,block,t:none""#);
    let err = load_error(EngineKind::Portcullis, &lookahead.0).to_string();
    assert!(err.contains("942997"), "a regex the engine cannot run is refused, not skipped: {err}");
}

#[cfg(feature = "libmodsecurity")]
mod libmodsecurity {
    use std::net::{IpAddr, Ipv4Addr};

    use super::*;
    use bytes::Bytes;
    use portcullis_policy::waf::WafRequest;

    fn sqli() -> WafRequest {
        WafRequest {
            method: "POST".into(),
            uri: "/login?next=%2Fhome".into(),
            version: "HTTP/1.1",
            headers: vec![
                ("Host".into(), "app.example.com".into()),
                ("User-Agent".into(), "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0".into()),
                ("Accept".into(), "text/html".into()),
                ("Content-Type".into(), "application/x-www-form-urlencoded".into()),
                ("Content-Length".into(), "46".into()),
            ],
            body: Bytes::from_static(b"user=admin' OR 1=1 UNION SELECT password FROM users--"),
            body_complete: true,
            client_ip: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7)),
            client_port: 40_000,
        }
    }

    #[test]
    fn stock_crs_v4_loads_and_passes_the_canary() {
        let engine = waf::load(EngineKind::Libmodsecurity, &crs_v4(), &Profile::default()).unwrap();
        assert_eq!(engine.name(), "libmodsecurity");
    }

    #[test]
    fn sql_injection_is_intervened_with_the_sqli_rules_named() {
        let engine = waf::load(EngineKind::Libmodsecurity, &crs_v4(), &Profile::default()).unwrap();
        let verdict = engine.inspect(&sqli()).unwrap();
        println!("{verdict:?}");
        assert!(verdict.intervened, "{verdict:?}");
        assert!(verdict.score.is_some_and(|s| s >= 5), "{verdict:?}");
        assert!(verdict.matches.iter().any(|m| m.id / 1000 == 942), "{verdict:?}");
        assert!(verdict.matches.iter().all(|m| !m.location.starts_with("TX")), "{verdict:?}");
    }

    #[test]
    fn a_syntax_error_is_a_load_error() {
        let broken =
            BrokenCrs::new("lms-syntax", r#"SecRule ARGS "@rx a" "id:942998,phase:2,block,t:none,nosuchaction""#);
        let err = load_error(EngineKind::Libmodsecurity, &broken.0);
        println!("{err}");
        assert!(matches!(err, LoadError::Engine(_)), "{err}");
    }

    #[test]
    fn a_bad_regex_is_a_load_error() {
        let broken = BrokenCrs::new("lms-regex", r#"SecRule ARGS "@rx (unclosed[" "id:942999,phase:2,block,t:none""#);
        let err = load_error(EngineKind::Libmodsecurity, &broken.0);
        println!("{err}");
        assert!(err.to_string().contains("942999"), "{err}");
    }

    #[test]
    fn bytes_that_are_not_utf8_do_not_crash_the_engine() {
        let engine = waf::load(EngineKind::Libmodsecurity, &crs_v4(), &Profile::default()).unwrap();
        let mut request = sqli();
        request.uri = "/%ff%fe/x?%ff%c3=1%27%20or%201=1--%ff&q=%e2%82".into();
        request.body = Bytes::from_static(b"\xff\xfe=1' or 1=1--\xc3&user=\xe2\x82 union select");
        let verdict = engine.inspect(&request).unwrap();
        assert!(verdict.intervened, "{verdict:?}");
        // The library cuts logged values at 200 bytes; a cut inside a UTF-8
        // sequence must not reach the crate's callback (it would abort).
        for cut in 195..=201 {
            let mut request = sqli();
            let long = format!("{}%C3%A9%E2%82%AC", "a".repeat(cut));
            request.uri =
                format!("/{long}?{long}=1%27%20union%20select%20password%20from%20users--&q={long}%27%20or%201=1--");
            request.body = Bytes::from(format!("{}é€=' union select 1-- {}é€", "b".repeat(cut), "c".repeat(cut)));
            let verdict = engine.inspect(&request).unwrap();
            assert!(verdict.intervened, "{verdict:?}");
        }
    }
}
