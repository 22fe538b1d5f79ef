//! The soak's mix, short: the same configuration, requests and client as
//! `bench/soak` (`support/soak.rs`), 3 000 requests against the gateway in
//! process. Every answer must be the one its kind expects (status, reason
//! code, a 2xx from the upstream), exactly the admitted requests must reach
//! the upstream, and the admin listener's event counters must match the
//! refusals the client counted, reason by reason. No memory figures here:
//! those are the soak's (bench/README.md, "Soak").

use crate::common;
use crate::support::soak;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use portcullis::server::Server;

/// Three whole rounds of the mix: each kind is sent exactly 3 × its weight.
const ROUNDS: u64 = 3;

fn crs() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/crs")
}

#[test]
fn the_mix_covers_every_kind_by_its_weight() {
    assert_eq!(soak::MIX.iter().map(|k| k.weight).sum::<u32>(), soak::MIX_WEIGHT);
    let schedule = soak::schedule();
    assert_eq!(schedule.len(), soak::MIX_WEIGHT as usize);
    for (index, kind) in soak::MIX.iter().enumerate() {
        assert!(kind.weight > 0, "{} is never sent", kind.name);
        assert_eq!(schedule.iter().filter(|&&i| i == index).count(), kind.weight as usize, "{}", kind.name);
        assert_eq!(kind.reason.is_none(), (200..300).contains(&kind.status), "{}: a refusal has a reason", kind.name);
    }
    // Both sides of each defence are in the mix.
    for reason in [
        "route.none",
        "route.method",
        "path.encoded_slash",
        "auth.missing",
        "jwt.expired",
        "jwt.bad_signature",
        "apikey.unknown",
        "ratelimit.exceeded",
        "waf.sqli",
        "csrf.origin",
        "openapi.invalid",
        "limit.body",
        "ip.denied",
    ] {
        assert!(soak::MIX.iter().any(|k| k.reason == Some(reason)), "no {reason} in the mix");
    }
}

#[test]
fn metrics_labels_holding_commas_and_escapes_are_read_whole() {
    let metrics = soak::Metrics::parse(concat!(
        "# TYPE portcullis_events_total counter\n",
        "portcullis_events_total{defence=\"waf\",reason=\"waf.sqli\",action=\"deny\",rule=\"920350,942100\"} 3\n",
        "portcullis_events_total{defence=\"waf\",reason=\"waf.sqli\",action=\"deny\",rule=\"a\\\"b\"} 2\n",
        "portcullis_events_total{defence=\"route\",reason=\"route.none\",action=\"deny\",rule=\"\"} 1\n",
        "portcullis_ratelimit_checks_total{limit=\"closed\",result=\"limited\"} 9\n",
    ));
    assert_eq!(metrics.event_series, 3);
    assert_eq!(metrics.events[&("waf.sqli".to_owned(), "deny".to_owned())], 5);
    assert_eq!(metrics.events[&("route.none".to_owned(), "deny".to_owned())], 1);
    let rules: Vec<&str> = metrics.rules.iter().map(String::as_str).collect();
    assert_eq!(rules, ["", "920350,942100", "a\"b"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_soak_gets_exactly_the_expected_answers_and_events() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = soak::Upstream::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let any = "127.0.0.1:0".parse().unwrap();
    let addrs = soak::Addresses { upstream: upstream.addr, listen: any, admin: any };
    let files = soak::Files::write(dir.path(), &addrs, &crs()).unwrap();

    let store = portcullis::store::Store::open(&files.store_url()).await.unwrap();
    let (_, key) = store.create_api_key("soak", &[], None).await.unwrap();
    drop(store);
    let path = files.config();
    let toml = std::fs::read_to_string(&path).unwrap();
    let config = portcullis::config::parse(&path, &toml, |_| None).unwrap_or_else(|e| panic!("config: {e}"));
    let events = Arc::new(common::Events::default());
    let server = Server::start(config, events.clone()).await.unwrap();
    let gateway = server.addr("public").unwrap();
    let admin = server.addr("admin").unwrap();

    let credentials = soak::Credentials::new(&files, gateway, key.expose().to_owned()).await.unwrap();
    soak::prime(&credentials, gateway).await.unwrap();
    let metrics_before = soak::Metrics::fetch(admin).await.unwrap();
    let upstream_before = upstream.seen();
    let events_before = events.0.lock().unwrap().len();

    let options =
        soak::Options { gateway, requests: ROUNDS * u64::from(soak::MIX_WEIGHT), connections: 8, fresh_every: 19 };
    let tally = soak::drive(options, soak::schedule(), Arc::new(credentials), Arc::new(AtomicU64::new(0))).await;
    let metrics_after = soak::Metrics::fetch(admin).await.unwrap();
    let counted = metrics_after.since(&metrics_before);

    println!("{}", soak::mix_table(&tally));
    for line in &tally.samples {
        println!("  {line}");
    }
    assert_eq!((tally.unexpected, tally.transport_errors), (0, 0), "unexpected answers: {:#?}", tally.samples);
    assert_eq!(tally.sent(), options.requests);
    for (kind, counts) in soak::MIX.iter().zip(&tally.kinds) {
        assert_eq!(counts.sent, ROUNDS * u64::from(kind.weight), "{}", kind.name);
    }
    let fresh = options.requests / options.fresh_every;
    assert!(tally.connections_opened > fresh, "{} connections for {fresh} fresh requests", tally.connections_opened);

    assert_eq!(upstream.seen() - upstream_before, tally.admitted, "the upstream saw exactly the admitted requests");
    let problems = soak::compare_events(&tally, &counted, &metrics_after);
    assert!(problems.is_empty(), "metrics disagree with the client: {problems:#?}");
    let refusals: u64 = tally.reasons.values().sum();
    assert_eq!(refusals + tally.admitted, options.requests);
    assert_eq!(
        (events.0.lock().unwrap().len() - events_before) as u64,
        refusals,
        "one event per refusal reached the sink"
    );
    assert!(server.shutdown().await, "in-flight requests finished");
}
