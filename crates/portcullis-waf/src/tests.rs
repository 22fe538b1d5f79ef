//! Engine tests on small rule sets written for the case, and CRS loading.

use super::*;

fn get(uri: &str) -> Request<'_> {
    Request {
        method: "GET",
        uri,
        protocol: "HTTP/1.1",
        headers: &[],
        body: b"",
        body_complete: true,
        client_ip: std::net::Ipv4Addr::LOCALHOST.into(),
        client_port: 4000,
    }
}

const SCORING: &str = r#"
SecRuleEngine On
SecAction "id:1,phase:1,pass,nolog,setvar:tx.score=0,setvar:tx.threshold=5"
SecRule ARGS "@rx (?i)union\s+select" "id:10,phase:2,pass,t:none,t:urlDecodeUni,setvar:'tx.score=+%{tx.threshold}'"
SecRule ARGS_NAMES "@pm passwd shadow" "id:11,phase:2,pass,t:lowercase,setvar:tx.score=+1"
SecRule ARGS:id "@rx ^(\d+)x$" "id:12,phase:2,pass,capture,chain"
    SecRule TX:1 "@gt 100" "setvar:tx.score=+2"
SecRule TX:score "@ge %{tx.threshold}" "id:99,phase:2,deny,status:403"
"#;

#[test]
fn scoring_chains_captures_and_macros() {
    let waf = Waf::load(SCORING, &[]).unwrap();
    let clean = waf.inspect(&get("/a?q=hello"));
    assert_eq!(clean.intervention, None);
    let attack = waf.inspect(&get("/a?q=1%20UNION%20%20select%201"));
    assert_eq!(attack.intervention, Some(Intervention { status: 403, rule: 99 }));
    assert_eq!(attack.matches.iter().map(|m| m.id).collect::<Vec<_>>(), [1, 10, 99]);
    assert_eq!(attack.matches[1].location, "ARGS:q");
    // Two matching arguments score twice.
    let twice = waf.inspect(&get("/a?PASSWD=1&Shadow=2"));
    assert_eq!(twice.intervention, None, "{twice:?}");
    let chained = waf.inspect(&get("/a?id=500x&passwd=1&shadow=1&etc_passwd=1"));
    assert_eq!(chained.intervention.map(|i| i.rule), Some(99), "{chained:?}");
    let small = waf.inspect(&get("/a?id=50x"));
    assert_eq!(small.matches.len(), 1, "{small:?}");
}

#[test]
fn markers_skip_and_ctl_remove() {
    let rules = r#"
SecRule REQUEST_FILENAME "@streq /skip" "id:1,phase:1,pass,nolog,skipAfter:END"
SecRule ARGS "@contains bad" "id:2,phase:1,deny"
SecMarker END
SecRule REQUEST_FILENAME "@beginsWith /quiet" "id:3,phase:1,pass,nolog,ctl:ruleRemoveById=4"
SecRule ARGS "@contains evil" "id:4,phase:2,deny"
SecRule REQUEST_FILENAME "@endsWith .x" "id:5,phase:1,pass,nolog,ctl:ruleRemoveTargetById=6;ARGS:ok"
SecRule ARGS "@contains worse" "id:6,phase:2,deny,status:406"
"#;
    let waf = Waf::load(rules, &[]).unwrap();
    assert!(waf.inspect(&get("/a?x=bad")).intervention.is_some());
    assert!(waf.inspect(&get("/skip?x=bad")).intervention.is_none());
    assert!(waf.inspect(&get("/a?x=evil")).intervention.is_some());
    assert!(waf.inspect(&get("/quiet?x=evil")).intervention.is_none());
    assert_eq!(waf.inspect(&get("/a.x?y=worse")).intervention.map(|i| i.status), Some(406));
    assert!(waf.inspect(&get("/a.x?ok=worse")).intervention.is_none());
}

#[test]
fn what_the_engine_cannot_run_is_a_load_error_unless_allowed() {
    let rules = r#"SecRule ARGS "@rx a(?=b)" "id:7,phase:2,deny""#;
    let err = Waf::load(rules, &[]).unwrap_err().to_string();
    assert!(err.contains("rule 7"), "{err}");
    assert!(Waf::load(rules, &[(7, 7)]).is_ok());
    let err = Waf::load(r#"SecRule ARGS "@rbl x" "id:8,phase:2,deny""#, &[]).unwrap_err().to_string();
    assert!(err.contains("rule 8"), "{err}");
}
