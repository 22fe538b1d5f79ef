//! Reading the gateway's Prometheus metrics from its admin listener, to check
//! that gauges (connections, requests, upstream connections, tunnels) return
//! to their idle values and that counters rose.

use std::net::SocketAddr;
use std::time::Duration;

/// An admin token long enough for `[admin]`.
pub const TOKEN: &str = "0123456789abcdef0123456789abcdef-metrics";

/// The `[admin]` section for an ephemeral loopback port.
pub fn admin_section() -> String {
    format!("[admin]\nbind = \"127.0.0.1:0\"\ntoken = \"{TOKEN}\"\n")
}

/// The Prometheus text from `GET /metrics`.
pub async fn scrape(admin: SocketAddr) -> String {
    let req = http::Request::get(format!("http://{admin}/metrics"))
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(portcullis_layers::empty())
        .unwrap();
    let (parts, body) = tokio::time::timeout(Duration::from_secs(10), super::send(req)).await.expect("scrape");
    assert_eq!(parts.status, 200, "{}", String::from_utf8_lossy(&body));
    String::from_utf8(body.to_vec()).unwrap()
}

/// The sum of every sample of `name` whose labels include all of `labels`
/// (0 when there is none).
pub fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, number) = l.rsplit_once(' ')?;
            let (metric, rest) = series.split_once('{').unwrap_or((series, ""));
            (metric == name).then_some(())?;
            labels.iter().all(|(k, v)| rest.contains(&format!("{k}=\"{v}\""))).then(|| number.parse::<f64>().ok())?
        })
        .sum::<f64>()
        + 0.0 // an empty sum is -0.0
}

/// The admin listener's address, read from a real binary's JSON log (it is
/// logged just after the first listener's).
pub async fn process_admin_addr(process: &super::Process) -> SocketAddr {
    let find = || {
        process
            .stderr
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|v| v["message"] == "admin API listening")
            .and_then(|v| v["addr"].as_str().and_then(|a| a.parse().ok()))
    };
    super::eventually("the admin listener in the log", Duration::from_secs(10), || find().is_some()).await;
    find().unwrap()
}

/// Waits until `name{labels}` reads `expected` (gauges settle as tasks end).
pub async fn settles(admin: SocketAddr, name: &str, labels: &[(&str, &str)], expected: f64, timeout: Duration) {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let text = scrape(admin).await;
        let now = value(&text, name, labels);
        if (now - expected).abs() < f64::EPSILON {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{name}{labels:?} stayed at {now}, expected {expected}:\n{}",
            text.lines().filter(|l| l.starts_with("portcullis_")).collect::<Vec<_>>().join("\n")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
