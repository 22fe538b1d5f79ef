//! The WAF's detection floor, measured on the OWASP CRS regression corpus
//! (CRS v4.28, `../shared/crs`) through the running gateway with the
//! default engine (Portcullis's own, `portcullis-waf`) at paranoia level 1
//! and inbound threshold 5, blocking:
//!
//! - at least 98% of the PL1 attack tests blocked (98.1%, 2 173 of 2 216,
//!   measured: two tests fewer breaks the build),
//! - at most 17.5% of the benign tests blocked (16.8% measured; the
//!   gateway's own refusals add to the engine's 15.1%; libmodsecurity 3.0.9
//!   blocks 16.1% in process, 17.3% through nginx),
//! - none of a few hundred ordinary JSON API requests blocked.
//!
//! A WAF that silently fails open (rules loaded but not evaluated, the
//! engine erroring on every request, the layer not in the pipeline) drops
//! far below the first floor, so the build breaks. Each corpus request is
//! sent byte for byte on its own connection (as go-ftw does) to the gateway
//! in front of an upstream that answers 200 to everything, so any 4xx is the
//! gateway's refusal and counts as blocked (mostly the WAF's 403; hyper's
//! 400 for malformed requests). `bench/waf-corpus` replays the same corpus
//! through both engines and nginx + libmodsecurity (bench/README.md).

use crate::common;
use crate::support::ftw;

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::Instant;

use bytes::Bytes;
use portcullis_policy::waf::WafRequest;

/// Today's figures through the gateway (issue 14: 98.1% / 16.8%), as floors
/// a change must keep. 98.0 sits between 2 172 and 2 171 tests of 2 216: an
/// engine change that loses two PL1 detections (as a wrong key-regex
/// prefilter lost 921250's two once) fails here.
const MIN_PL1_ATTACKS_BLOCKED: f64 = 98.0;
const MAX_BENIGN_BLOCKED: f64 = 17.5;
/// Concurrent connections of the replay.
const CONNECTIONS: usize = 8;

fn crs() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/crs")
}

/// A gateway with one public catch-all route to `up` and CRS with `waf`'s
/// settings.
fn corpus_gateway(up: std::net::SocketAddr, waf: &str) -> String {
    format!(
        r#"
[[listener]]
name = "test"
bind = "127.0.0.1:0"

[[upstream]]
name = "app"
targets = ["http://{up}"]

[[route]]
name = "all"
match = {{ path = "/**" }}
upstream = "app"
auth = "public"

[waf]
rules = "{crs}"
{waf}
"#,
        crs = crs().display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_crs_corpus_is_blocked_and_clean_traffic_is_not() {
    let corpus = ftw::Corpus::load(&crs().join("regression"), &crs().join("rules"));
    let up = common::upstream(|_req| async { http::Response::new(portcullis_layers::full("ok")) }).await;
    let started = Instant::now();
    let gw = common::gateway(&corpus_gateway(
        up,
        "engine = \"portcullis\"\nmode = \"block\"\nparanoia = 1\ninbound_threshold = 5\nbody_limit = \"128 KiB\"",
    ))
    .await;
    let loaded = started.elapsed();
    let addr = gw.addr.to_string();

    let replay = Instant::now();
    let (outcomes, statuses) = ftw::replay_http(&corpus.tests, &addr, CONNECTIONS).await;
    let replay = replay.elapsed();
    let mut tally = ftw::Tally::default();
    for (test, outcome) in corpus.tests.iter().zip(outcomes) {
        tally.record(test, outcome);
    }
    let waf_denials = gw.events.0.lock().unwrap().iter().filter(|e| e.defence == "waf" && e.status == 403).count();

    let clean = clean_rest_workload();
    let mut clean_blocked = Vec::new();
    for request in &clean {
        let status = ftw::send(&addr, &ftw::raw_of(request)).await;
        if status != Some(200) {
            clean_blocked.push(format!("{} {} -> {status:?}", request.method, request.uri));
        }
    }
    let events = gw.events.0.lock().unwrap();
    let clean_events: Vec<String> =
        events.iter().rev().take(clean_blocked.len()).map(|e| format!("{} {:?}", e.reason, e.rule)).collect();
    drop(events);

    println!("gateway + portcullis-waf, CRS v4 PL1, threshold 5: {}", tally.summary());
    println!(
        "replayed {} tests ({} requests, {CONNECTIONS} connections) in {:.1}s; answers {statuses:?}; {waf_denials} WAF denials (403) in the events; gateway started in {:.1}s",
        corpus.tests.len(),
        tally.requests,
        replay.as_secs_f64(),
        loaded.as_secs_f64()
    );
    for (reason, count) in &corpus.skipped {
        println!("skipped {count} tests: {reason}");
    }
    println!("clean REST workload: {} of {} requests not answered 200", clean_blocked.len(), clean.len());
    for (line, event) in clean_blocked.iter().zip(&clean_events).take(40) {
        println!("  {line} ({event})");
    }
    println!("benign tests blocked: {}", tally.false_positives.join(" "));

    assert!(tally.pl1_attacks > 2_000 && tally.benign > 800, "the corpus did not load fully: {}", tally.summary());
    assert!(waf_denials > 2_000, "only {waf_denials} WAF denials: are the refusals the WAF's? {}", tally.summary());
    assert!(
        tally.pl1_pct() >= MIN_PL1_ATTACKS_BLOCKED,
        "PL1 attack tests blocked fell below {MIN_PL1_ATTACKS_BLOCKED}%: {}",
        tally.summary()
    );
    assert!(
        tally.benign_pct() <= MAX_BENIGN_BLOCKED,
        "benign tests blocked rose above {MAX_BENIGN_BLOCKED}%: {}",
        tally.summary()
    );
    assert!(clean_blocked.is_empty(), "clean requests refused: {clean_blocked:#?}");
}

/// CRS's response-rule tests (`RESPONSE-95x`) through the running gateway,
/// in front of an upstream that answers as go-ftw's backend does (albedo's
/// `/reflect`: the status, headers and body the request asks for). Requests
/// are not blocked (threshold 10000, as in CRS's own test setup: many ask
/// for their leak with an attack) and every outbound match intervenes
/// (outbound threshold 1), so each leak's rule ids are in its `waf.leak`
/// event. Every PL1 test must do what it expects (67 leaks, 14 clean;
/// libmodsecurity 3.0.9 does the same, `bench/waf-corpus`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_crs_response_tests_are_detected_through_the_gateway() {
    let corpus = ftw::Corpus::load(&crs().join("regression"), &crs().join("rules"));
    let up = common::upstream(|req: http::Request<hyper::body::Incoming>| async move {
        use http_body_util::BodyExt;
        let uri = req.uri().to_string();
        let body = req.into_body().collect().await.unwrap().to_bytes();
        let mut request = ftw::to_waf_request(b"GET / HTTP/1.1\r\n\r\n").unwrap();
        (request.uri, request.body) = (uri, body);
        let reflected = ftw::reflected(&request);
        let mut response = http::Response::new(portcullis_layers::full(reflected.body.unwrap_or_default()));
        *response.status_mut() = http::StatusCode::from_u16(reflected.status).unwrap();
        for (name, value) in &reflected.headers {
            if !name.eq_ignore_ascii_case("content-length") {
                response.headers_mut().append(
                    http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                    http::HeaderValue::from_str(value).unwrap(),
                );
            }
        }
        response
    })
    .await;
    let gw = common::gateway(&corpus_gateway(
        up,
        "mode = \"block\"\ninbound_threshold = 10000\nresponses = \"detect\"\noutbound_threshold = 1",
    ))
    .await;
    let addr = gw.addr.to_string();
    let (mut leaks, mut detected, mut benign, mut clean) = (0, 0, 0, 0);
    let mut failed = Vec::new();
    for test in corpus.responses.iter().filter(|t| t.paranoia == 1) {
        let before = gw.events.0.lock().unwrap().len();
        for stage in &test.stages {
            let status = ftw::send(&addr, stage).await;
            assert!(
                status.is_some_and(|s| !(400..500).contains(&s)),
                "{}: the request was refused ({status:?})",
                test.name
            );
        }
        let reported: Vec<u32> = gw.events.0.lock().unwrap()[before..]
            .iter()
            .filter(|e| e.reason == "waf.leak")
            .flat_map(|e| e.waf.iter().flat_map(|w| w.matches.iter().map(|m| m.id)).chain([959_100]))
            .collect();
        let ok = ftw::as_expected(test, &reported);
        match test.class {
            ftw::Class::Attack => (leaks, detected) = (leaks + 1, detected + usize::from(ok)),
            ftw::Class::Benign => (benign, clean) = (benign + 1, clean + usize::from(ok)),
        }
        if !ok {
            failed.push(format!("{} {:?} reported {reported:?}", test.name, test.ids));
        }
    }
    println!(
        "gateway + portcullis-waf, CRS v4 response rules at PL1: {detected}/{leaks} leak tests detected, {clean}/{benign} benign tests clean"
    );
    assert!(leaks >= 60 && benign >= 10, "the response tests did not load: {leaks} leak, {benign} benign");
    assert!(failed.is_empty(), "{failed:#?}");
}

/// The response tests through both engines in process, libmodsecurity as
/// the oracle: the same rule ids reported on every one of them (91 on
/// 2026-12-03), at PL1 with requests not blocked.
#[cfg(feature = "libmodsecurity")]
#[test]
fn responses_report_the_same_rules_as_libmodsecurity() {
    use portcullis_policy::waf::{EngineKind, Profile};
    let corpus = ftw::Corpus::load(&crs().join("regression"), &crs().join("rules"));
    let profile = Profile { responses: true, inbound_threshold: 10_000, ..Profile::default() };
    let ours = portcullis_policy::waf::load(EngineKind::Portcullis, &crs(), &profile).unwrap();
    let oracle = portcullis_policy::waf::load(EngineKind::Libmodsecurity, &crs(), &profile).unwrap();
    let mut differ = Vec::new();
    let mut reported = 0;
    for test in &corpus.responses {
        let (a, b) = (ftw::inspect_response(ours.as_ref(), test), ftw::inspect_response(oracle.as_ref(), test));
        reported += usize::from(a.as_ref().is_some_and(|ids| !ids.is_empty()));
        if a != b {
            differ.push(format!("{}: portcullis {a:?}, libmodsecurity {b:?}", test.name));
        }
    }
    assert!(corpus.responses.len() >= 80 && reported >= 60, "{} tests, {reported} with rules", corpus.responses.len());
    assert!(differ.is_empty(), "{differ:#?}");
}

/// A few hundred ordinary requests of a JSON orders API, as a browser app or
/// a service client sends them: ids, pagination, names with accents and
/// apostrophes, emails, street addresses, free-text notes, dates, prices.
fn clean_rest_workload() -> Vec<WafRequest> {
    const NAMES: &[&str] = &[
        "Alice Martin",
        "Bob O'Neill",
        "Chloé Dubois",
        "Dmitri Ivanov",
        "Emma Johnson-Smith",
        "François Lefèvre",
        "Grace Lee",
        "Hiro Tanaka",
        "Ingrid Müller",
        "José García",
        "Kwame Mensah",
        "Laura D'Angelo",
    ];
    const STREETS: &[&str] = &[
        "12 Rue de la Paix",
        "221B Baker Street",
        "1600 Amphitheatre Pkwy, Suite 400",
        "Flat 3, 45 Queen's Road",
        "Hauptstraße 5",
        "742 Evergreen Terrace",
        "Calle Mayor 10, 2º izq.",
    ];
    const COUNTRIES: &[&str] = &["FR", "GB", "US", "DE", "ES", "JP"];
    const CITIES: &[&str] = &["Paris", "London", "Mountain View", "Berlin", "Springfield", "Madrid", "Osaka"];
    const NOTES: &[&str] = &[
        "Please leave the parcel with the neighbour if I'm not home.",
        "Gift wrap, and no invoice in the box please",
        "Call before delivery: the bell doesn't work",
        "Deliver after 6pm on weekdays",
        "Second attempt, the first one was returned to sender.",
        "Can you combine this with order 1042? Thanks!",
        "Fragile - glassware inside",
        "Back entrance, code 4512",
        "",
    ];
    const ITEMS: &[&str] =
        &["Blue mug (350 ml)", "USB-C cable, 2 m", "Notebook A5 - dotted", "Coffee beans 1 kg", "T-shirt size M"];
    const AGENTS: &[&str] = &[
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36",
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Safari/605.1.15",
        "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
        "orders-sync/2.3.1 (+https://example.com/bot)",
        "okhttp/4.12.0",
    ];

    let mut requests = Vec::new();
    for i in 0..320usize {
        let id = 1000 + i * 7;
        let name = NAMES[i % NAMES.len()];
        let email = format!("{}.{}@example.com", name.split(' ').next().unwrap_or("user").to_lowercase(), i % 97)
            .replace('\'', "");
        let body = serde_json::json!({
            "customer": { "name": name, "email": email, "phone": format!("+44 20 7946 {:04}", i * 13 % 10_000) },
            "shipping": {
                "street": STREETS[i % STREETS.len()],
                "city": CITIES[i % CITIES.len()],
                "postcode": format!("{:05}", 10_000 + i * 37),
                "country": COUNTRIES[i % COUNTRIES.len()],
            },
            "items": [
                { "sku": format!("SKU-{:05}", i * 11), "name": ITEMS[i % ITEMS.len()], "quantity": 1 + i % 3, "price": 4.5 + (i % 40) as f64 },
                { "sku": format!("SKU-{:05}", i * 17 + 3), "name": ITEMS[(i + 2) % ITEMS.len()], "quantity": 1, "price": 12.99 },
            ],
            "note": NOTES[i % NOTES.len()],
            "deliver_on": format!("2026-{:02}-{:02}", 1 + i % 12, 1 + i % 28),
            "created_at": format!("2026-03-{:02}T{:02}:{:02}:00Z", 1 + i % 28, i % 24, i % 60),
            "gift": i % 5 == 0,
        })
        .to_string();
        let agent = AGENTS[i % AGENTS.len()];
        let (method, uri, body) = match i % 8 {
            0 => ("GET", format!("/api/orders/{id}"), String::new()),
            1 => (
                "GET",
                format!("/api/orders?page={}&per_page=20&sort=-created_at&status=shipped", i % 9 + 1),
                String::new(),
            ),
            2 => ("POST", "/api/orders".to_owned(), body),
            3 => ("PUT", format!("/api/orders/{id}"), body),
            4 => ("DELETE", format!("/api/orders/{id}"), String::new()),
            5 => (
                "GET",
                format!("/api/orders?customer_email={}&from=2026-01-01&to=2026-03-31", email.replace('@', "%40")),
                String::new(),
            ),
            6 => (
                "PATCH",
                format!("/api/orders/{id}"),
                serde_json::json!({ "status": "cancelled", "reason": NOTES[i % NOTES.len()] }).to_string(),
            ),
            _ => ("GET", format!("/api/orders/{id}/items?fields=sku,name,quantity"), String::new()),
        };
        let mut headers = vec![
            ("Host".to_owned(), "shop.example.com".to_owned()),
            ("User-Agent".to_owned(), agent.to_owned()),
            ("Accept".to_owned(), "application/json".to_owned()),
            ("Accept-Language".to_owned(), "en-GB,en;q=0.9,fr;q=0.8".to_owned()),
            ("Accept-Encoding".to_owned(), "gzip, deflate, br".to_owned()),
            (
                "Authorization".to_owned(),
                format!("Bearer eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ1c2VyLXtpfSJ9.c2lnbmF0dXJl{i}"),
            ),
            ("X-Request-Id".to_owned(), format!("7f3c9a2e-{i:04x}-4b1d-9e7a-2c5d8f0b1a6e")),
        ];
        if i % 3 == 0 {
            headers.push(("Referer".to_owned(), "https://shop.example.com/account/orders".to_owned()));
            headers
                .push(("Cookie".to_owned(), format!("theme=dark; locale=en-GB; _ga=GA1.2.{}.1711000000", 100_000 + i)));
        }
        if !body.is_empty() {
            headers.push(("Content-Type".to_owned(), "application/json".to_owned()));
            headers.push(("Content-Length".to_owned(), body.len().to_string()));
        }
        requests.push(WafRequest {
            method: method.to_owned(),
            uri,
            version: "HTTP/1.1",
            headers,
            body: Bytes::from(body),
            body_complete: true,
            client_ip: IpAddr::V4(Ipv4Addr::new(198, 51, 100, (i % 250) as u8 + 1)),
            client_port: 50_000 + i as u16,
        });
    }
    requests
}
