//! The replay tool of `bench/waf-corpus`: the OWASP CRS regression corpus
//! (go-ftw YAML) through WAF engines in process and through HTTP targets
//! (the gateway, nginx + libmodsecurity), with the same classification as
//! the CI test `tests/waf_corpus.rs` (both use `tests/support/ftw.rs`).
//!
//! ```text
//! waf_corpus --crs DIR [--engine zentinel|libmodsecurity]... [--target NAME=HOST:PORT]...
//!            [--paranoia 1] [--threshold 5] [--connections 8] [--json FILE]
//! waf_corpus --crs DIR --print-rules     # the assembled CRS rule text (for nginx)
//! waf_corpus --crs DIR --engine E... --benign bench/benign-values.txt
//! waf_corpus --crs DIR --engine E... --explain 942100-3   # each engine's verdict, stage by stage
//! ```
//!
//! In process, each engine replays the corpus on one thread (requests/s is
//! one core's). Over HTTP, `--connections` workers replay it concurrently,
//! one connection per request as go-ftw does, and a stage counts as blocked
//! when the target answers 4xx (the upstream behind it answers 200 to
//! everything); no answer within 5 s or a 5xx is an error, not a block.
//!
//! With two or more engines, the first is compared with the second test by
//! test (the second is the reference: libmodsecurity): the share of tests
//! with the same block decision, and every test where they differ, by class
//! (printed, and under `"differential"` in the JSON).
//!
//! Each engine that inspects responses also replays CRS's response tests
//! (`RESPONSE-95x`, albedo's `/reflect` answered in process) with the
//! response rules loaded and requests not blocked: leak tests detected and
//! benign ones clean at the paranoia level (`"responses"` in the JSON), and
//! with two engines, the tests where the rule ids differ
//! (`"responses_differential"`).
//!
//! `--benign FILE` also sends each engine every value of FILE (one per
//! line; ordinary text with quotes, SQL words, prices, addresses, code) as a
//! query parameter, a form field and a JSON field of browser-like requests,
//! and reports how many it blocks (`"benign_values"` in the JSON).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../tests/support/ftw.rs"]
mod ftw;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use clap::Parser;
use portcullis_policy::waf::{self, EngineKind, Profile};

#[derive(Parser, Debug)]
struct Args {
    /// CRS release directory: rules/ and regression/.
    #[arg(long)]
    crs: PathBuf,
    /// Engines to run in process.
    #[arg(long = "engine")]
    engines: Vec<String>,
    /// HTTP targets, NAME=HOST:PORT.
    #[arg(long = "target")]
    targets: Vec<String>,
    #[arg(long, default_value_t = 1)]
    paranoia: u8,
    #[arg(long, default_value_t = 5)]
    threshold: u32,
    /// Concurrent connections per HTTP target.
    #[arg(long, default_value_t = 8)]
    connections: usize,
    /// Write the results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Print the assembled rule text (Portcullis's CRS setup + Includes) and exit.
    #[arg(long)]
    print_rules: bool,
    /// Ordinary values, one per line, to send to each engine in process.
    #[arg(long)]
    benign: Option<PathBuf>,
    /// Print what each engine found in these tests (`942100-3`), stage by stage.
    #[arg(long = "explain")]
    explain: Vec<String>,
}

fn main() {
    let args = Args::parse();
    let profile = Profile { paranoia: args.paranoia, inbound_threshold: args.threshold, ..Profile::default() };
    if args.print_rules {
        let set = waf::crs::RuleSet::assemble(&args.crs, &profile).expect("CRS assembles");
        print!("{}", set.text);
        return;
    }
    let corpus = ftw::Corpus::load(&args.crs.join("regression"), &args.crs.join("rules"));
    let requests: usize = corpus.tests.iter().map(|t| t.stages.len()).sum();
    eprintln!("corpus: {} tests, {requests} requests", corpus.tests.len());
    for (reason, count) in &corpus.skipped {
        eprintln!("skipped {count} tests: {reason}");
    }
    let mut results: Vec<serde_json::Value> = Vec::new();
    let mut decisions: Vec<(String, Vec<bool>)> = Vec::new();
    // Per engine and test: the attack rules reported (all stages) and the last score.
    let mut findings: Vec<Vec<Finding>> = Vec::new();
    let values = args.benign.as_ref().map(|path| benign_values(path));
    let mut benign_reports = Vec::new();
    let mut response_reports = Vec::new();
    let mut response_rules: Vec<(String, Vec<Option<Vec<u32>>>)> = Vec::new();
    for name in &args.engines {
        let kind = match name.as_str() {
            "zentinel" => EngineKind::Zentinel,
            "portcullis" => EngineKind::Portcullis,
            "libmodsecurity" => EngineKind::Libmodsecurity,
            other => panic!("unknown engine {other}"),
        };
        let loaded = Instant::now();
        let engine = waf::load(kind, &args.crs, &profile).unwrap_or_else(|e| panic!("{name}: {e}"));
        let loaded = loaded.elapsed();
        let started = Instant::now();
        let mut tally = ftw::Tally::default();
        let mut blocked = Vec::with_capacity(corpus.tests.len());
        for test in &corpus.tests {
            let outcome = ftw::inspect(engine.as_ref(), test);
            blocked.push(outcome.blocked());
            tally.record(test, outcome);
        }
        let secs = started.elapsed().as_secs_f64();
        if !args.engines.is_empty() && findings.len() < 2 {
            findings.push(corpus.tests.iter().map(|test| finding(engine.as_ref(), test)).collect());
        }
        for test in corpus.tests.iter().filter(|t| args.explain.contains(&t.name)) {
            for (k, stage) in test.stages.iter().enumerate() {
                let verdict = ftw::to_waf_request(stage).map(|r| engine.inspect(&r));
                println!("{name} {} stage {k}: {verdict:?}", test.name);
            }
        }
        decisions.push((name.clone(), blocked));
        if let Some((report, reported)) = response_report(name, kind, &args.crs, &profile, &corpus, &args.explain) {
            response_reports.push(report);
            response_rules.push((name.clone(), reported));
        }
        if let Some(values) = &values {
            benign_reports.push(benign_report(name, engine.as_ref(), values));
        }
        let label = format!("{name} (in process, 1 thread)");
        results.push(report(&label, &tally, secs, &BTreeMap::new(), Some(loaded.as_secs_f64())));
    }
    let differential = match decisions.as_slice() {
        [(a, a_blocked), (b, b_blocked), ..] => {
            let mut report = differential(&corpus, (a, a_blocked), (b, b_blocked));
            if let [fa, fb] = findings.as_slice() {
                report["rules_and_scores"] = compare_findings(&corpus, a_blocked, b_blocked, fa, fb);
            }
            Some(report)
        }
        _ => None,
    };
    let response_differential = match response_rules.as_slice() {
        [(a, x), (b, y), ..] => {
            let differ: Vec<&str> = corpus
                .responses
                .iter()
                .zip(x.iter().zip(y))
                .filter(|(_, (x, y))| x != y)
                .map(|(t, _)| t.name.as_str())
                .collect();
            let total = corpus.responses.len();
            println!(
                "{a} vs {b} on responses: the same rule ids on {} of {total} tests; differ: {}",
                total - differ.len(),
                differ.join(" ")
            );
            Some(
                serde_json::json!({ "engines": [a, b], "tests": total, "same_rules": total - differ.len(), "differ": differ }),
            )
        }
        _ => None,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    for target in &args.targets {
        let (name, addr) = target.split_once('=').expect("--target NAME=HOST:PORT");
        let (tally, secs, statuses) = runtime.block_on(replay(&corpus, addr, args.connections));
        let label = format!("{name} (HTTP, {} connections)", args.connections);
        results.push(report(&label, &tally, secs, &statuses, None));
    }
    let skipped: BTreeMap<&str, usize> = corpus.skipped.iter().map(|(r, n)| (r.as_str(), *n)).collect();
    let json = serde_json::json!({
        "crs": args.crs.display().to_string(),
        "paranoia": args.paranoia,
        "inbound_threshold": args.threshold,
        "tests": corpus.tests.len(),
        "requests": requests,
        "skipped": skipped,
        "results": results,
        "differential": differential,
        "benign_values": benign_reports,
        "responses": response_reports,
        "responses_differential": response_differential,
    });
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&json).unwrap()).unwrap();
    }
}

/// The response-rule tests (`RESPONSE-95x`) through `kind` loaded with the
/// response rules: how many do what go-ftw expects. `None` for an engine
/// that does not inspect responses.
fn response_report(
    name: &str,
    kind: EngineKind,
    crs: &std::path::Path,
    profile: &Profile,
    corpus: &ftw::Corpus,
    explain: &[String],
) -> Option<(serde_json::Value, Vec<Option<Vec<u32>>>)> {
    // Many leak tests ask for their leak in a request that is itself an
    // attack (`<?php …` in the JSON): as in CRS's own test setup, requests
    // are not blocked here, so every response is inspected.
    let profile = Profile { responses: true, inbound_threshold: 10_000, ..profile.clone() };
    let engine = waf::load(kind, crs, &profile).ok().filter(|e| e.inspects_responses())?;
    for test in corpus.responses.iter().filter(|t| explain.contains(&t.name)) {
        for (k, stage) in test.stages.iter().enumerate() {
            let Ok(request) = ftw::to_waf_request(stage) else { continue };
            let response = ftw::reflected(&request);
            let verdict = engine.inspect_response(&request, None, &response);
            println!("{name} {} stage {k}: response {response:?}\n  verdict {verdict:?}", test.name);
        }
    }
    let (mut attack, mut attack_ok, mut benign, mut benign_ok) = (0, 0, 0, 0);
    let mut failed: Vec<&str> = Vec::new();
    let mut above = 0;
    let mut all_reported = Vec::with_capacity(corpus.responses.len());
    for test in &corpus.responses {
        let reported = ftw::inspect_response(engine.as_ref(), test);
        all_reported.push(reported.clone());
        if test.paranoia > profile.paranoia {
            above += 1;
            continue;
        }
        let ok = reported.is_some_and(|r| ftw::as_expected(test, &r));
        match test.class {
            ftw::Class::Attack => (attack, attack_ok) = (attack + 1, attack_ok + usize::from(ok)),
            ftw::Class::Benign => (benign, benign_ok) = (benign + 1, benign_ok + usize::from(ok)),
        }
        if !ok {
            failed.push(&test.name);
        }
    }
    println!(
        "{name} responses at PL{}: leak tests detected {attack_ok}/{attack}, benign tests clean {benign_ok}/{benign} ({above} tests of higher paranoia levels left out); failed: {}",
        profile.paranoia,
        failed.join(" ")
    );
    let report = serde_json::json!({
        "engine": name,
        "attack_tests": attack,
        "attack_detected": attack_ok,
        "benign_tests": benign,
        "benign_clean": benign_ok,
        "above_paranoia": above,
        "failed": failed,
    });
    Some((report, all_reported))
}

fn report(
    label: &str,
    tally: &ftw::Tally,
    secs: f64,
    statuses: &BTreeMap<String, usize>,
    load_secs: Option<f64>,
) -> serde_json::Value {
    let rate = tally.requests as f64 / secs;
    println!("{label}: {}", tally.summary());
    println!("{label}: {} requests in {secs:.1}s = {rate:.0} req/s; statuses {statuses:?}", tally.requests);
    serde_json::json!({
        "target": label,
        "attack_tests": tally.attacks,
        "attack_blocked": tally.attacks_blocked,
        "attack_blocked_pct": round1(tally.attacks_pct()),
        "pl1_attack_tests": tally.pl1_attacks,
        "pl1_attack_blocked": tally.pl1_blocked,
        "pl1_attack_blocked_pct": round1(tally.pl1_pct()),
        "benign_tests": tally.benign,
        "benign_blocked": tally.benign_blocked,
        "benign_blocked_pct": round1(tally.benign_pct()),
        "malformed": tally.malformed,
        "errors": tally.errors,
        "requests": tally.requests,
        "seconds": round1(secs),
        "requests_per_second": rate.round(),
        "load_seconds": load_secs.map(round1),
        "statuses": statuses,
        "pl1_attacks_passed": tally.missed,
        "benign_blocked_tests": tally.false_positives,
    })
}

/// Compares two engines' block decisions test by test; prints and returns
/// the agreement and the tests where they differ.
fn differential(
    corpus: &ftw::Corpus,
    (a, a_blocked): (&str, &[bool]),
    (b, b_blocked): (&str, &[bool]),
) -> serde_json::Value {
    let mut only_a: Vec<&str> = Vec::new();
    let mut only_b: Vec<&str> = Vec::new();
    for ((test, x), y) in corpus.tests.iter().zip(a_blocked).zip(b_blocked) {
        match (x, y) {
            (true, false) => only_a.push(&test.name),
            (false, true) => only_b.push(&test.name),
            _ => {}
        }
    }
    let total = corpus.tests.len();
    let same = total - only_a.len() - only_b.len();
    let pct = round1(ftw::Tally::pct(same, total));
    println!("{a} vs {b}: the same block decision on {pct}% of tests ({same} of {total})");
    println!("blocked by {a} only ({}): {}", only_a.len(), only_a.join(" "));
    println!("blocked by {b} only ({}): {}", only_b.len(), only_b.join(" "));
    serde_json::json!({
        "engines": [a, b],
        "tests": total,
        "same_decision": same,
        "same_decision_pct": pct,
        "blocked_only_by_first": only_a,
        "blocked_only_by_second": only_b,
    })
}

/// What an engine reported for one test: the attack rules and the score.
struct Finding {
    rules: std::collections::BTreeSet<u32>,
    score: Option<i32>,
}

fn finding(engine: &dyn waf::Engine, test: &ftw::Test) -> Finding {
    let mut rules = std::collections::BTreeSet::new();
    let mut score = None;
    for stage in &test.stages {
        if let Ok(Ok(verdict)) = ftw::to_waf_request(stage).map(|r| engine.inspect(&r)) {
            rules.extend(verdict.matches.iter().map(|m| m.id));
            if verdict.intervened {
                score = verdict.score;
            }
        }
    }
    Finding { rules, score }
}

/// Among the tests both engines blocked: how often they name the same
/// attack rules, and the same anomaly score (the reference only reports a
/// score when it intervenes).
fn compare_findings(
    corpus: &ftw::Corpus,
    a_blocked: &[bool],
    b_blocked: &[bool],
    a: &[Finding],
    b: &[Finding],
) -> serde_json::Value {
    let mut both = 0;
    let mut same_rules = 0;
    let mut same_score = 0;
    let mut differing: Vec<String> = Vec::new();
    for (k, test) in corpus.tests.iter().enumerate() {
        if !(a_blocked[k] && b_blocked[k]) {
            continue;
        }
        both += 1;
        let rules = a[k].rules == b[k].rules;
        // The reference reports no score when a rule other than the scoring
        // one intervened (a body it could not read): as good as 0.
        let score = a[k].score.unwrap_or(0) == b[k].score.unwrap_or(0);
        same_rules += usize::from(rules);
        same_score += usize::from(score);
        if !(rules && score) && differing.len() < 400 {
            differing
                .push(format!("{}: {:?}/{:?} vs {:?}/{:?}", test.name, a[k].rules, a[k].score, b[k].rules, b[k].score));
        }
    }
    let rules_pct = round1(ftw::Tally::pct(same_rules, both));
    let score_pct = round1(ftw::Tally::pct(same_score, both));
    println!(
        "of the {both} tests both engines block: the same attack rules in {rules_pct}% ({same_rules}), the same anomaly score in {score_pct}% ({same_score})"
    );
    for line in differing.iter().take(12) {
        println!("  {line}");
    }
    serde_json::json!({
        "blocked_by_both": both,
        "same_rules": same_rules,
        "same_rules_pct": rules_pct,
        "same_score": same_score,
        "same_score_pct": score_pct,
        "first_differences": differing,
    })
}

/// The values of a benign-values file (blank and `#` lines skipped).
fn benign_values(path: &std::path::Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines().filter(|l| !l.trim().is_empty() && !l.starts_with('#')).map(str::to_owned).collect()
}

/// Each value as a query parameter, a form field and a JSON field of a
/// browser-like request, through `engine`; prints and returns what it blocked.
fn benign_report(name: &str, engine: &dyn waf::Engine, values: &[String]) -> serde_json::Value {
    let client = std::net::SocketAddr::from(([192, 0, 2, 10], 40_000));
    let mut headers = http::HeaderMap::new();
    headers.insert(http::header::HOST, http::HeaderValue::from_static("shop.example.com"));
    headers.insert(
        http::header::USER_AGENT,
        http::HeaderValue::from_static("Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"),
    );
    headers.insert(http::header::ACCEPT, http::HeaderValue::from_static("application/json, text/plain, */*"));
    headers.insert(http::header::ACCEPT_LANGUAGE, http::HeaderValue::from_static("en-US,en;q=0.5"));
    headers.insert(
        http::header::COOKIE,
        http::HeaderValue::from_static("theme=dark; session=8f14e45fceea167a5a36dedd4bea2543"),
    );
    let blocked = |method: &http::Method, uri: &str, content_type: Option<&'static str>, body: Vec<u8>| {
        let mut headers = headers.clone();
        if let Some(content_type) = content_type {
            headers.insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static(content_type));
            headers.insert(http::header::CONTENT_LENGTH, http::HeaderValue::from(body.len()));
        }
        let uri: http::Uri = uri.parse().expect("an encoded target parses");
        let request = waf::WafRequest::new(method, &uri, http::Version::HTTP_11, &headers, body.into(), client);
        engine.inspect(&request).is_ok_and(|verdict| verdict.intervened)
    };
    let mut shapes: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for value in values {
        let encoded: String = form_urlencoded::byte_serialize(value.as_bytes()).collect();
        if blocked(&http::Method::GET, &format!("/api/search?q={encoded}"), None, Vec::new()) {
            shapes.entry("query").or_default().push(value);
        }
        let form = format!("comment={encoded}&rating=5").into_bytes();
        if blocked(&http::Method::POST, "/api/reviews", Some("application/x-www-form-urlencoded"), form) {
            shapes.entry("form").or_default().push(value);
        }
        let json = serde_json::to_vec(&serde_json::json!({ "comment": value, "rating": 5 })).unwrap_or_default();
        if blocked(&http::Method::POST, "/api/reviews", Some("application/json"), json) {
            shapes.entry("json").or_default().push(value);
        }
    }
    let requests = values.len() * 3;
    let total: usize = shapes.values().map(Vec::len).sum();
    println!(
        "{name}: benign values blocked in {total} of {requests} requests ({:.1}%): query {}, form {}, json {} of {} values each",
        ftw::Tally::pct(total, requests),
        shapes.get("query").map_or(0, Vec::len),
        shapes.get("form").map_or(0, Vec::len),
        shapes.get("json").map_or(0, Vec::len),
        values.len()
    );
    for (shape, list) in &shapes {
        println!(
            "  {name} blocked as {shape}: {}",
            list.iter().map(|v| format!("{v:?}")).collect::<Vec<_>>().join(", ")
        );
    }
    serde_json::json!({ "engine": name, "values": values.len(), "requests": requests, "blocked": total, "by_shape": shapes })
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// Replays the corpus against `addr`; the tally, seconds and status counts.
async fn replay(corpus: &ftw::Corpus, addr: &str, connections: usize) -> (ftw::Tally, f64, BTreeMap<String, usize>) {
    let started = Instant::now();
    let (outcomes, statuses) = ftw::replay_http(&corpus.tests, addr, connections).await;
    let secs = started.elapsed().as_secs_f64();
    let mut tally = ftw::Tally::default();
    for (test, outcome) in corpus.tests.iter().zip(outcomes) {
        tally.record(test, outcome);
    }
    (tally, secs, statuses)
}
