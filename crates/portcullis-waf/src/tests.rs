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
    let quiet = waf.inspect(&get("/a.x?ok=worse"));
    assert!(quiet.intervention.is_none());
    // A `nolog` rule's match is counted, not described.
    let five = quiet.matches.iter().find(|m| m.id == 5).unwrap();
    assert!(five.location.is_empty() && five.value.is_empty() && !five.logged, "{five:?}");
}

/// Whether a regex-set rule can match is first worked out from every value
/// of its targets, exclusions aside (shared by the rules whose targets
/// overlap); a value excluded statically or at runtime must still not match.
#[test]
fn excluded_values_do_not_match_though_their_targets_are_searched_whole() {
    let rules = r#"
SecRule ARGS|!ARGS:ok "@rx evil" "id:20,phase:2,deny,status:401"
SecRule REQUEST_FILENAME "@endsWith .x" "id:21,phase:1,pass,nolog,ctl:ruleRemoveTargetByTag=quiet;ARGS:soft,ctl:ruleRemoveTargetByTag=nowhere;ARGS"
SecRule ARGS|REQUEST_HEADERS "@rx worse" "id:22,phase:2,deny,status:406,tag:quiet"
SecRule ARGS "@rx worst|evil" "id:23,phase:2,deny,status:409"
"#;
    let waf = Waf::load(rules, &[]).unwrap();
    let status = |uri: &str| waf.inspect(&get(uri)).intervention.map(|i| i.status);
    assert_eq!(status("/a?ok=evil"), Some(409), "rule 20 excludes ARGS:ok, rule 23 does not");
    assert_eq!(status("/a?ok=evil&x=evil"), Some(401));
    assert_eq!(status("/a.x?soft=worse"), None, "removed at runtime by tag");
    assert_eq!(status("/a.x?hard=worse"), Some(406));
    assert_eq!(status("/a?soft=worse"), Some(406), "no removal without .x");
    assert_eq!(status("/a?ok=worst"), Some(409));
    assert_eq!(status("/a?ok=fine"), None);
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

fn response<'a>(status: u16, headers: &'a [(&'a str, &'a [u8])], body: Option<&'a [u8]>) -> Response<'a> {
    Response { status, protocol: "HTTP/1.1", headers, body }
}

#[test]
fn responses_run_with_what_their_request_left() {
    let rules = r#"
SecRuleEngine On
SecAction "id:1,phase:1,pass,nolog,setvar:tx.leak_score=0"
SecRule REQUEST_FILENAME "@beginsWith /quiet" "id:2,phase:1,pass,nolog,ctl:ruleRemoveById=30"
SecRule REQUEST_FILENAME "@beginsWith /trusted" "id:3,phase:1,allow"
SecRule ARGS "@contains evil" "id:5,phase:2,deny"
SecRule RESPONSE_STATUS "@rx ^5" "id:20,phase:3,pass,setvar:tx.leak_score=+1"
SecRule RESPONSE_HEADERS:X-Powered-By "@contains PHP" "id:21,phase:3,pass,setvar:tx.leak_score=+2"
SecRule RESPONSE_BODY "@rx (?i)you have an error in your sql syntax" "id:30,phase:4,pass,setvar:tx.leak_score=+4"
SecRule TX:leak_score "@ge 4" "id:40,phase:4,deny,status:502"
"#;
    let waf = Waf::load(rules, &[]).unwrap();
    assert!(waf.inspects_responses());
    let leak: &[u8] = b"<p>You have an error in your SQL syntax near 'x'</p>";
    let html: &[(&str, &[u8])] = &[("Content-Type", b"text/html"), ("X-Powered-By", b"PHP/8.3")];
    let through = |uri: &str, status, body| {
        let (request, exchange) = waf.inspect_request(&get(uri));
        (request, waf.inspect_response(exchange, &response(status, html, body)))
    };
    let (_, clean) = through("/a", 200, Some(b"<p>hello</p>"));
    assert_eq!(clean.intervention, None);
    assert_eq!(clean.matches.iter().map(|m| m.id).collect::<Vec<_>>(), [21]);
    assert_eq!(clean.matches[0].location, "RESPONSE_HEADERS:X-Powered-By");
    let (_, leaked) = through("/a", 200, Some(leak));
    assert_eq!(leaked.intervention, Some(Intervention { status: 502, rule: 40 }), "{leaked:?}");
    assert_eq!(leaked.matches.iter().map(|m| (m.id, m.phase)).collect::<Vec<_>>(), [(21, 3), (30, 4), (40, 4)]);
    // A body not inspected is no RESPONSE_BODY; status and headers still count.
    let (_, unread) = through("/a", 503, None);
    assert_eq!(unread.matches.iter().map(|m| m.id).collect::<Vec<_>>(), [20, 21]);
    // What the request's rules did holds for the response.
    assert_eq!(through("/quiet", 200, Some(leak)).1.intervention, None);
    let (_, trusted) = through("/trusted", 500, Some(leak));
    assert!(trusted.matches.is_empty(), "{trusted:?}");
    // A request intervention (which detection mode lets through) does not
    // stop the response phases.
    let (request, response) = through("/a?q=evil", 200, Some(leak));
    assert_eq!(request.intervention.map(|i| i.rule), Some(5));
    assert_eq!(response.intervention.map(|i| i.rule), Some(40));
}

#[test]
fn an_exchange_can_wait_on_another_thread() {
    fn send<T: Send + 'static>(_: &T) {}
    let waf = Waf::load(r#"SecRule RESPONSE_BODY "@contains x" "id:1,phase:4,deny""#, &[]).unwrap();
    let (_, exchange) = waf.inspect_request(&get("/"));
    send(&exchange);
    let outcome =
        std::thread::spawn(move || waf.inspect_response(exchange, &response(200, &[], Some(b"x")))).join().unwrap();
    assert_eq!(outcome.intervention.map(|i| i.rule), Some(1));
}

#[test]
fn a_value_seen_before_is_decided_as_a_new_one() {
    // Two programs whose only set has one member each: what one thread
    // remembers of "secret" under the first must not answer for the second.
    let first = Waf::load(r#"SecRule ARGS "@rx ^secret$" "id:1,phase:2,deny,t:lowercase""#, &[]).unwrap();
    let second = Waf::load(r#"SecRule ARGS "@rx ^public$" "id:2,phase:2,deny,t:lowercase""#, &[]).unwrap();
    for _ in 0..3 {
        assert_eq!(first.inspect(&get("/a?q=Secret")).intervention.map(|i| i.rule), Some(1));
        assert_eq!(second.inspect(&get("/a?q=Secret")).intervention, None);
        assert_eq!(second.inspect(&get("/a?q=PUBLIC")).intervention.map(|i| i.rule), Some(2));
    }
    // A byte-only operator's "no match" is remembered per link: the same
    // bytes under another link (another phrase list) are still looked at.
    let phrases = Waf::load(
        r#"SecRule ARGS "@pm alpha" "id:4,phase:2,pass,t:lowercase,setvar:tx.a=+1"
SecRule ARGS "@pm beta" "id:5,phase:2,deny,t:lowercase""#,
        &[],
    )
    .unwrap();
    for _ in 0..3 {
        assert_eq!(phrases.inspect(&get("/a?q=BETA")).intervention.map(|i| i.rule), Some(5));
        assert_eq!(phrases.inspect(&get("/a?q=ALPHA")).intervention, None);
    }
    // A remembered multiMatch value still reports the candidate that
    // matched, the same every time.
    let multi = Waf::load(
        r#"SecRule ARGS "@rx ^<b>$" "id:3,phase:2,deny,capture,multiMatch,t:none,t:urlDecodeUni,t:lowercase,logdata:%{TX.0}""#,
        &[],
    )
    .unwrap();
    for _ in 0..3 {
        let outcome = multi.inspect(&get("/a?q=%253Cb%253E"));
        assert_eq!(outcome.intervention.map(|i| i.rule), Some(3), "{outcome:?}");
        assert_eq!(outcome.matches[0].location, "ARGS:q");
        assert!(multi.inspect(&get("/a?q=%253Cc%253E")).intervention.is_none());
    }
}

#[test]
fn key_regexes_select_by_their_literal_start_and_the_rest_of_the_pattern() {
    let rules = r#"
SecAction "id:1,phase:1,pass,nolog,setvar:tx.ac=1,setvar:tx.header_name_x=1,setvar:tx.other=1"
SecRule TX:/^ab?c/ "@eq 1" "id:2,phase:1,pass,log"
SecRule TX:/^HEADER_NAME_/ "@eq 1" "id:3,phase:1,pass,log"
SecRule TX:/^other$/ "@eq 1" "id:4,phase:1,pass,log"
SecRule TX:/^othe$/ "@eq 1" "id:5,phase:1,pass,log"
SecRule TX:/^(?:oth)er/ "@eq 1" "id:6,phase:1,pass,log"
SecRule TX:/NAME_*X/ "@eq 1" "id:7,phase:1,pass,log"
SecRule TX:/name_z/ "@eq 1" "id:8,phase:1,pass,log"
SecRule TX:/(?:zz)?e_x/ "@eq 1" "id:9,phase:1,pass,log"
SecRule TX:/\x68eader_n/ "@eq 1" "id:10,phase:1,pass,log"
"#;
    let waf = Waf::load(rules, &[]).unwrap();
    let ids: Vec<u32> = waf.inspect(&get("/")).matches.iter().map(|m| m.id).collect();
    // `^ab?c` selects `ac` (the `b` is optional), the case of the pattern
    // does not matter, `^othe$` is not a prefix test, a literal inside a
    // group is not required, nor the digits of an escape.
    assert_eq!(ids, [1, 2, 3, 4, 6, 7, 9, 10]);
}
