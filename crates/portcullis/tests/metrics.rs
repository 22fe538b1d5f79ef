//! The Prometheus metrics on the admin listener: each defence's refusal
//! moves its counters, the latency histograms observe real requests, label
//! sets stay bounded whatever paths and addresses clients use, TLS
//! handshakes and reloads are counted, and the Grafana dashboard in
//! `examples/` uses only metrics the gateway exports.

use crate::common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use common::metrics::{TOKEN, admin_section, scrape, value};
use common::*;
use futures_util::StreamExt;
use http::Request;

/// Signs the JWT route's tokens (HS256); only its length matters here.
const JWT_SECRET: &str = "metrics-test-secret-0123456789abcdef";

/// Routes for each defence under test, the WAF on `search` only.
fn config(up: SocketAddr, extra: &str) -> String {
    let crs = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/crs");
    format!(
        r#"
[[listener]]
name = "test"
bind = "127.0.0.1:0"

[server]
trusted_proxies = ["127.0.0.1/32"]

[[upstream]]
name = "app"
targets = ["http://{up}"]

[[upstream]]
name = "dead"
targets = ["http://127.0.0.1:9"]
connect_timeout = "200ms"

[[route]]
name = "open"
match = {{ path = "/open/**" }}
upstream = "app"
auth = "public"

[[route]]
name = "limited"
match = {{ path = "/limited" }}
upstream = "app"
auth = "public"
limits = ["one"]

[[route]]
name = "search"
match = {{ path = "/search" }}
upstream = "app"
auth = "public"
waf = "block"

[[route]]
name = "jwt"
match = {{ path = "/jwt" }}
upstream = "app"
auth = "jwt"

[[route]]
name = "contact"
match = {{ path = "/contact" }}
upstream = "app"
auth = "public"
csrf = true

[[route]]
name = "dead"
match = {{ path = "/dead" }}
upstream = "dead"
auth = "public"

[limits.one]
key = "ip"
rate = "1/min"
burst = 1

[auth.jwt]
issuer = "metrics-test"
algorithms = ["HS256"]
keys = [{{ kid = "k", secret = "{JWT_SECRET}", algorithm = "HS256" }}]

[csrf]
mode = "origin"

[waf]
mode = "off"
rules = "{crs}"

{admin}
{extra}
"#,
        admin = admin_section(),
    )
}

fn admin_addr(gw: &Gateway) -> SocketAddr {
    gw.server.addr("admin").unwrap()
}

/// One refusal, the metric samples it must move by exactly one.
struct Case {
    what: &'static str,
    method: &'static str,
    path: &'static str,
    headers: &'static [(&'static str, &'static str)],
    status: u16,
    reason: &'static str,
    route: &'static str,
    /// Further samples (name, labels) that must rise by one.
    moves: &'static [(&'static str, &'static [(&'static str, &'static str)])],
}

const CASES: &[Case] = &[
    Case {
        what: "no route",
        method: "GET",
        path: "/nowhere",
        headers: &[],
        status: 404,
        reason: "route.none",
        route: "(unmatched)",
        moves: &[],
    },
    Case {
        what: "rate limit",
        method: "GET",
        path: "/limited",
        headers: &[],
        status: 429,
        reason: "ratelimit.exceeded",
        route: "limited",
        moves: &[("portcullis_ratelimit_checks_total", &[("limit", "one"), ("result", "limited")])],
    },
    Case {
        what: "WAF",
        method: "GET",
        path: "/search?q=1%20or%201=1",
        headers: &[],
        status: 403,
        reason: "waf.sqli",
        route: "search",
        moves: &[
            ("portcullis_waf_inspections_total", &[("route", "search"), ("phase", "request")]),
            ("portcullis_waf_detections_total", &[("route", "search"), ("phase", "request"), ("action", "block")]),
            ("portcullis_waf_inspection_duration_seconds_count", &[("route", "search"), ("phase", "request")]),
        ],
    },
    Case {
        what: "JWT",
        method: "GET",
        path: "/jwt",
        headers: &[("authorization", "Bearer not-a-token")],
        status: 401,
        reason: "jwt.malformed",
        route: "jwt",
        moves: &[("portcullis_auth_failures_total", &[("method", "jwt"), ("reason", "jwt.malformed")])],
    },
    Case {
        what: "no credential",
        method: "GET",
        path: "/jwt",
        headers: &[],
        status: 401,
        reason: "auth.missing",
        route: "jwt",
        moves: &[("portcullis_auth_failures_total", &[("method", "none"), ("reason", "auth.missing")])],
    },
    Case {
        what: "CSRF",
        method: "POST",
        path: "/contact",
        headers: &[("sec-fetch-site", "cross-site"), ("origin", "https://evil.example")],
        status: 403,
        reason: "csrf.origin",
        route: "contact",
        moves: &[],
    },
    Case {
        what: "upstream down",
        method: "GET",
        path: "/dead",
        headers: &[],
        status: 502,
        reason: "upstream.connect",
        route: "dead",
        moves: &[("portcullis_upstream_errors_total", &[("upstream", "dead"), ("kind", "connect")])],
    },
    Case {
        what: "ban",
        method: "GET",
        path: "/open/x",
        headers: &[("x-forwarded-for", "203.0.113.50")],
        status: 403,
        reason: "ban.active",
        route: "(unmatched)",
        moves: &[],
    },
];

async fn request(
    gw: &Gateway,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (http::response::Parts, bytes::Bytes) {
    let mut req = Request::builder().method(method).uri(gw.url(path));
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    send(req.body(portcullis_layers::full("item=1")).unwrap()).await
}

async fn ban(gw: &Gateway, target: &str) {
    let req = Request::post(format!("http://{}/bans", admin_addr(gw)))
        .header("authorization", format!("Bearer {TOKEN}"))
        .header("content-type", "application/json")
        .body(portcullis_layers::full(format!(r#"{{"target": "{target}", "duration": "1h"}}"#)))
        .unwrap();
    assert_eq!(send(req).await.0.status, 201);
}

#[tokio::test]
async fn each_defences_refusal_moves_its_metrics() {
    let (up, _) = named_upstream("app").await;
    let gw = gateway(&config(up, "")).await;
    let admin = admin_addr(&gw);
    // The limit's one token, spent.
    assert_eq!(get(&gw.url("/limited")).await.0.status, 200);
    assert_eq!(value(&scrape(admin).await, "portcullis_bans_active", &[]), 0.0);
    ban(&gw, "203.0.113.50").await;

    for case in CASES {
        let before = scrape(admin).await;
        let (parts, body) = request(&gw, case.method, case.path, case.headers).await;
        assert_denied(&parts, &body, case.status, case.reason);
        let after = scrape(admin).await;
        let delta = |name: &str, labels: &[(&str, &str)]| value(&after, name, labels) - value(&before, name, labels);
        let class = format!("{}xx", case.status / 100);
        let mut moves = vec![
            ("portcullis_events_total", vec![("reason", case.reason), ("action", "deny")]),
            (
                "portcullis_requests_total",
                vec![("route", case.route), ("listener", "test"), ("status_class", class.as_str())],
            ),
            ("portcullis_request_duration_seconds_count", vec![("route", case.route)]),
            ("portcullis_gateway_duration_seconds_count", vec![("route", case.route)]),
        ];
        moves.extend(case.moves.iter().map(|(name, labels)| (*name, labels.to_vec())));
        for (name, labels) in &moves {
            assert_eq!(delta(name, labels), 1.0, "{}: {name}{labels:?}", case.what);
        }
        // Refused before the upstream answered: no upstream time observed,
        // except where the refusal is the upstream's.
        let upstream = delta("portcullis_upstream_duration_seconds_count", &[("route", case.route)]);
        assert_eq!(upstream, if case.route == "dead" { 1.0 } else { 0.0 }, "{}", case.what);
        assert_eq!(delta("portcullis_requests_total", &[]), 1.0, "{}: one request, one count", case.what);
    }
    let text = scrape(admin).await;
    assert_eq!(value(&text, "portcullis_bans_active", &[]), 1.0);
    let totals = portcullis::metrics::totals();
    assert!(totals.requests > CASES.len() as u64, "{totals:?}");
    assert!(totals.responses_4xx >= CASES.len() as u64 - 1 && totals.responses_5xx >= 1, "{totals:?}");
    // Auth successes are not failures.
    assert_eq!(value(&text, "portcullis_auth_failures_total", &[("method", "jwt")]), 1.0);
}

#[tokio::test]
async fn histograms_observe_real_requests() {
    let up = upstream(|_req| async {
        tokio::time::sleep(Duration::from_millis(40)).await;
        http::Response::new(portcullis_layers::full("slow"))
    })
    .await;
    let gw = gateway(&config(up, "")).await;
    let admin = admin_addr(&gw);
    let before = portcullis::metrics::totals();
    for _ in 0..5 {
        assert_eq!(get(&gw.url("/open/slow")).await.0.status, 200);
    }
    let text = scrape(admin).await;
    let open = [("route", "open")];
    let read = |name: &str| value(&text, name, &open);
    for name in [
        "portcullis_request_duration_seconds_count",
        "portcullis_upstream_duration_seconds_count",
        "portcullis_gateway_duration_seconds_count",
    ] {
        assert_eq!(read(name), 5.0, "{name}:\n{text}");
    }
    let (total, upstream, added) = (
        read("portcullis_request_duration_seconds_sum"),
        read("portcullis_upstream_duration_seconds_sum"),
        read("portcullis_gateway_duration_seconds_sum"),
    );
    assert!(upstream >= 5.0 * 0.040, "the upstream slept 40 ms each time: {upstream}");
    assert!(upstream <= total, "upstream {upstream} > total {total}");
    assert!((total - upstream - added).abs() < 1e-6, "added {added} != {total} - {upstream}");
    // Every sample is in the +Inf bucket, none in the 25 ms one.
    let bucket =
        |le: &str| value(&text, "portcullis_upstream_duration_seconds_bucket", &[("route", "open"), ("le", le)]);
    assert_eq!(bucket("+Inf"), 5.0);
    assert_eq!(bucket("0.025"), 0.0);
    assert_eq!(value(&text, "portcullis_requests_total", &[("route", "open"), ("status_class", "2xx")]), 5.0);
    let after = portcullis::metrics::totals();
    assert!(after.requests >= before.requests + 5, "{before:?} → {after:?}");
}

/// The names and label sets of every `portcullis_*` sample.
fn series(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| l.starts_with("portcullis_"))
        .filter_map(|l| l.rsplit_once(' ').map(|(series, _)| series.to_owned()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labels_stay_bounded_under_many_paths_and_addresses() {
    let (up, _) = named_upstream("app").await;
    let gw = gateway(&config(up, "")).await;
    let admin = admin_addr(&gw);
    let client = client();
    let url = gw.url("");
    let one = |i: u32| {
        let client = client.clone();
        // Alternately a routed and an unmatched path, each unique, from a
        // unique address (10.x.y.z, behind the trusted proxy).
        let path = if i.is_multiple_of(2) { format!("/open/item/{i}") } else { format!("/unknown/{i}") };
        let from = format!("10.{}.{}.{}", i >> 16 & 255, i >> 8 & 255, i & 255);
        let req = Request::get(format!("{url}{path}")).header("x-forwarded-for", from);
        async move {
            let response = client.request(req.body(portcullis_layers::empty()).unwrap()).await.unwrap();
            response.status().as_u16()
        }
    };
    // Every kind of answer once, then the series set is what it stays.
    for i in 0..2 {
        one(i).await;
    }
    let warm = series(&scrape(admin).await);
    let statuses: Vec<u16> = futures_util::stream::iter(2..20_002).map(one).buffer_unordered(16).collect().await;
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 10_000);
    assert_eq!(statuses.iter().filter(|s| **s == 404).count(), 10_000);
    let text = scrape(admin).await;
    let grown: Vec<_> = series(&text).difference(&warm).cloned().collect();
    assert!(grown.is_empty(), "new series after 10k paths and addresses: {grown:?}");
    assert_eq!(value(&text, "portcullis_requests_total", &[("route", "open")]), 10_001.0);
    assert_eq!(value(&text, "portcullis_requests_total", &[("route", "(unmatched)")]), 10_001.0);
    assert!(!text.contains("10.0.0.3") && !text.contains("/unknown/3"), "a client's address or path is a label");
}

#[tokio::test]
async fn tls_handshakes_and_their_failures_are_counted() {
    let (up, _) = named_upstream("app").await;
    let toml = simple_config(up, &admin_section()).replace(
        "bind = \"127.0.0.1:0\"\n\n[[upstream]]",
        "bind = \"127.0.0.1:0\"\ntls = \"self-signed\"\n\n[[upstream]]",
    );
    let gw = gateway(&toml).await;
    let admin = admin_addr(&gw);
    let text = scrape(admin).await;
    for result in ["ok", "error", "timeout"] {
        let labels = [("listener", "test"), ("result", result)];
        assert!(
            text.contains(&format!("portcullis_tls_handshakes_total{{listener=\"test\",result=\"{result}\"}} 0")),
            "{text}"
        );
        assert_eq!(value(&text, "portcullis_tls_handshakes_total", &labels), 0.0);
    }
    // A client speaking plain HTTP to the TLS port: a failed handshake.
    let mut plain = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut plain, b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
    let mut sink = Vec::new();
    let _ =
        tokio::time::timeout(Duration::from_secs(5), tokio::io::AsyncReadExt::read_to_end(&mut plain, &mut sink)).await;
    // And one that completes.
    let tcp = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let _tls = common::tls::any_certificate_client(&[b"http/1.1"]).connect(name, tcp).await.unwrap();
    let read = || async {
        let text = scrape(admin).await;
        let get = |result| value(&text, "portcullis_tls_handshakes_total", &[("listener", "test"), ("result", result)]);
        (get("ok"), get("error"))
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let counts = read().await;
        if counts == (1.0, 1.0) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "handshakes (ok, error) = {counts:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn reloads_are_counted_ok_and_refused() {
    let (up, _) = named_upstream("app").await;
    let toml = simple_config(up, &admin_section());
    let gw = gateway(&toml).await;
    let admin = admin_addr(&gw);
    let reloads = |text: &str, result| value(text, "portcullis_config_reloads_total", &[("result", result)]);
    let text = scrape(admin).await;
    assert_eq!((reloads(&text, "ok"), reloads(&text, "refused")), (0.0, 0.0));
    let started = value(&text, "portcullis_config_last_reload_success_timestamp_seconds", &[]);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    assert!(started > now - 600.0 && started <= now, "{started} vs {now}");

    gw.server.reload(common::config(&toml).0).await.unwrap();
    let other = toml.replace("name = \"test\"", "name = \"renamed\"");
    gw.server.reload(common::config(&other).0).await.unwrap_err();
    gw.server.reload_refused();
    let text = scrape(admin).await;
    assert_eq!((reloads(&text, "ok"), reloads(&text, "refused")), (1.0, 2.0));
    assert!(value(&text, "portcullis_config_last_reload_success_timestamp_seconds", &[]) >= started);
}

/// The `portcullis_*` metric names in a dashboard's PromQL expressions.
fn dashboard_metrics(dashboard: &serde_json::Value) -> BTreeSet<String> {
    fn exprs<'a>(value: &'a serde_json::Value, out: &mut Vec<&'a str>) {
        match value {
            serde_json::Value::Object(map) => {
                for (key, v) in map {
                    match (key.as_str(), v) {
                        ("expr" | "query" | "definition", serde_json::Value::String(s)) => out.push(s),
                        _ => exprs(v, out),
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| exprs(v, out)),
            _ => {}
        }
    }
    let mut all = Vec::new();
    exprs(dashboard, &mut all);
    let mut names = BTreeSet::new();
    for expr in all {
        let mut rest = expr;
        while let Some(at) = rest.find("portcullis_") {
            let tail = &rest[at..];
            let end = tail.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(tail.len());
            names.insert(tail[..end].to_owned());
            rest = &tail[end..];
        }
    }
    names
}

/// What a scrape exports: each `# TYPE` name, and for histograms its
/// `_bucket`, `_sum` and `_count` series.
fn exported(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else { continue };
        let Some((name, kind)) = rest.split_once(' ') else { continue };
        names.insert(name.to_owned());
        if kind == "histogram" || kind == "summary" {
            for suffix in ["_bucket", "_sum", "_count"] {
                names.insert(format!("{name}{suffix}"));
            }
        }
    }
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_grafana_dashboard_uses_only_exported_metrics() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/grafana-dashboard.json");
    let dashboard: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert!(dashboard["schemaVersion"].as_u64().unwrap() >= 36);
    let variables: Vec<&str> =
        dashboard["templating"]["list"].as_array().unwrap().iter().filter_map(|v| v["name"].as_str()).collect();
    assert!(variables.contains(&"DS_PROMETHEUS") && variables.contains(&"route"), "{variables:?}");
    let used = dashboard_metrics(&dashboard);
    assert!(used.len() >= 15, "the dashboard uses few metrics: {used:?}");

    // The real binary, with a JSON-lines event sink, a TLS listener, the WAF
    // and a limit, after one request of each kind.
    let (up, _) = named_upstream("app").await;
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("portcullis.toml");
    let toml = config(
        up,
        "[log]\nformat = \"json\"\n\n[[listener]]\nname = \"secure\"\nbind = \"127.0.0.1:0\"\ntls = \"self-signed\"\n",
    );
    std::fs::write(&config_path, toml).unwrap();
    let process = Process::start(&config_path);
    let admin = common::metrics::process_admin_addr(&process).await;
    let base = format!("http://{}", process.addr);
    for (path, headers) in [
        ("/open/x", &[][..]),
        ("/nowhere", &[]),
        ("/limited", &[]),
        ("/limited", &[]),
        ("/search?q=1%20or%201=1", &[]),
        ("/jwt", &[("authorization", "Bearer nope")]),
        ("/dead", &[]),
    ] {
        get_with(&format!("{base}{path}"), headers).await;
    }
    let text = scrape(admin).await;
    let exported = exported(&text);
    let missing: Vec<_> = used.difference(&exported).collect();
    assert!(missing.is_empty(), "the dashboard uses metrics the gateway does not export: {missing:?}\n{text}");
}
