//! Event sinks through the real gateway: webhook batching, retries and the
//! drop counter against a local receiver, latency with a dead webhook, syslog
//! over UDP and TCP checked by an RFC 5424 parser, file rotation, sampled
//! allowed requests, ECS field names, and the configuration errors.
//!
//! Every request below goes to a path no route matches (`/none/…` with a
//! route only for `/ok/**`), so each one is a `route.none` denial: one event.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use portcullis::config::{self, ConfigErrors};
use portcullis::events::JsonLines;
use portcullis::server::Server;
use portcullis_layers::EventSink;
use serde_json::Value;
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;

use crate::common::{eventually, get, upstream};

/// One POST: the status answered, its events, its `Authorization` header.
type Post = (u16, Vec<Value>, Option<String>);

/// What a webhook receiver saw: each POST's body and the answer given.
#[derive(Default)]
struct Received {
    posts: Mutex<Vec<Post>>,
    /// Status to answer with.
    status: AtomicU16,
}

impl Received {
    /// Request ids of the events in the POSTs answered 2xx.
    fn delivered(&self) -> Vec<String> {
        let posts = self.posts.lock().unwrap();
        posts
            .iter()
            .filter(|(status, _, _)| (200..300).contains(status))
            .flat_map(|(_, events, _)| events.iter().map(|e| e["request_id"].as_str().unwrap().to_owned()))
            .collect()
    }
    fn post_count(&self) -> usize {
        self.posts.lock().unwrap().len()
    }
}

/// A webhook receiver on 127.0.0.1 answering `status` (changeable).
async fn receiver(status: u16) -> (SocketAddr, Arc<Received>) {
    let received = Arc::new(Received { status: AtomicU16::new(status), ..Received::default() });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = received.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let seen = seen.clone();
                    async move {
                        let auth = req.headers().get("authorization").map(|v| v.to_str().unwrap().to_owned());
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        let events: Vec<Value> = serde_json::from_slice(&body).unwrap();
                        let status = seen.status.load(Ordering::SeqCst);
                        seen.posts.lock().unwrap().push((status, events, auth));
                        let mut response = Response::new(Full::new(Bytes::new()));
                        *response.status_mut() = http::StatusCode::from_u16(status).unwrap();
                        Ok::<_, std::convert::Infallible>(response)
                    }
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
            });
        }
    });
    (addr, received)
}

/// A gateway with real sinks (`[events]` written by the test).
struct Gate {
    server: Server,
    addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl Gate {
    fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }
}

fn gateway_toml(upstream: SocketAddr, events: &str) -> String {
    format!(
        r#"
[[listener]]
name = "test"
bind = "127.0.0.1:0"

[[upstream]]
name = "app"
targets = ["http://{upstream}"]

[[route]]
name = "ok"
match = {{ path = "/ok/**" }}
upstream = "app"
auth = "public"

{events}
"#
    )
}

/// Starts the gateway with JSON-line sinks built from `events` (a TOML
/// `[events]` section); files it names are in the returned directory.
async fn gate(events: &str, files: &[(&str, &str)]) -> Gate {
    let upstream = upstream(|_| async { Response::new(portcullis_layers::full("ok")) }).await;
    let dir = tempfile::tempdir().unwrap();
    for (name, contents) in files {
        std::fs::write(dir.path().join(name), contents).unwrap();
    }
    let toml = gateway_toml(upstream, events);
    let path = dir.path().join("portcullis.toml");
    std::fs::write(&path, &toml).unwrap();
    let config = config::parse(&path, &toml, |_| None).unwrap_or_else(|e| panic!("config: {e}"));
    let sinks = JsonLines::start(&config.events).unwrap();
    let server = Server::start(config, sinks as Arc<dyn EventSink>).await.unwrap();
    let addr = server.addrs()[0].1;
    Gate { server, addr, dir }
}

/// Sends `n` denied requests one after the other; their request ids.
async fn denials(gate: &Gate, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..n {
        let (parts, _) = get(&gate.url(&format!("/none/{i}"))).await;
        assert_eq!(parts.status, 404);
        ids.push(parts.headers["x-request-id"].to_str().unwrap().to_owned());
    }
    ids
}

/// A sample's value on /metrics (0 when absent).
fn metric(name: &str, labels: &str) -> f64 {
    let text = portcullis::metrics::install().unwrap().render();
    let wanted = format!("{name}{{{labels}}} ");
    text.lines().find_map(|l| l.strip_prefix(&wanted)).map_or(0.0, |v| v.trim().parse().unwrap())
}

#[tokio::test]
async fn webhook_batches_events_into_one_post_with_its_auth_header() {
    let (addr, received) = receiver(200).await;
    let gate = gate(
        &format!(
            r#"
[[events.sink]]
type = "webhook"
url = "http://{addr}/hook"
auth = "file:token"
batch_size = 5
flush_interval = "30s"
"#
        ),
        &[("token", "Bearer s3cret-token\n")],
    )
    .await;
    let ids = denials(&gate, 5).await;
    eventually("one POST", Duration::from_secs(10), || received.post_count() >= 1).await;
    {
        let posts = received.posts.lock().unwrap();
        assert_eq!(posts.len(), 1, "five events fill one batch: one POST");
        let (_, events, auth) = &posts[0];
        assert_eq!(auth.as_deref(), Some("Bearer s3cret-token"));
        let got: Vec<&str> = events.iter().map(|e| e["request_id"].as_str().unwrap()).collect();
        assert_eq!(got, ids, "in order, each once");
        assert!(events.iter().all(|e| e["reason"] == "route.none" && e["action"] == "deny"));
    }
    // A partial batch goes after flush_interval, not before: nothing yet.
    denials(&gate, 1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(received.post_count(), 1);
    drop(gate.server);
}

#[tokio::test]
async fn webhook_retries_while_the_receiver_fails_and_delivers_each_event_once() {
    let (addr, received) = receiver(503).await;
    let gate = gate(
        &format!(
            r#"
[[events.sink]]
type = "webhook"
name = "hook"
url = "http://{addr}/hook"
batch_size = 4
flush_interval = "50ms"
backoff_min = "20ms"
backoff_max = "100ms"
max_attempts = 50
"#
        ),
        &[],
    )
    .await;
    let ids = denials(&gate, 10).await;
    eventually("three refused POSTs", Duration::from_secs(10), || received.post_count() >= 3).await;
    received.status.store(200, Ordering::SeqCst);
    eventually("every event delivered", Duration::from_secs(10), || received.delivered().len() >= 10).await;
    // A little longer: a duplicate would show now.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let delivered = received.delivered();
    assert_eq!(delivered.len(), 10, "each event once: {delivered:?}");
    assert_eq!(delivered.iter().collect::<HashSet<_>>(), ids.iter().collect::<HashSet<_>>());
    let refused = received.posts.lock().unwrap().iter().filter(|p| p.0 == 503).count();
    assert!(refused >= 3, "the receiver's 503s were retried");
    assert_eq!(metric("portcullis_events_dropped_total", r#"sink="hook",cause="retries_exhausted""#), 0.0);
    assert_eq!(metric("portcullis_events_dropped_total", r#"sink="hook",cause="queue_full""#), 0.0);
    drop(gate.server);
}

#[tokio::test]
async fn a_webhook_down_drops_the_oldest_queued_events_and_counts_them() {
    let (addr, received) = receiver(503).await;
    let gate = gate(
        &format!(
            r#"
[[events.sink]]
type = "webhook"
name = "hook"
url = "http://{addr}/hook"
batch_size = 5
queue = 5
flush_interval = "30s"
backoff_min = "100ms"
backoff_max = "100ms"
max_attempts = 100
"#
        ),
        &[],
    )
    .await;
    let ids = denials(&gate, 5).await;
    // The first batch is out and being retried; the queue is empty again.
    eventually("the first batch refused", Duration::from_secs(10), || received.post_count() >= 1).await;
    let more = denials(&gate, 15).await;
    eventually("the queue full", Duration::from_secs(5), || {
        metric("portcullis_event_queue_depth", r#"sink="hook""#) == 5.0
    })
    .await;
    assert_eq!(metric("portcullis_events_dropped_total", r#"sink="hook",cause="queue_full""#), 10.0);
    received.status.store(200, Ordering::SeqCst);
    eventually("the kept events delivered", Duration::from_secs(10), || received.delivered().len() >= 10).await;
    let delivered: HashSet<String> = received.delivered().into_iter().collect();
    // The batch in flight and the five newest: the oldest queued ones went.
    let expected: HashSet<String> = ids.iter().chain(&more[10..]).cloned().collect();
    assert_eq!(delivered, expected);
    assert_eq!(metric("portcullis_event_queue_depth", r#"sink="hook""#), 0.0);
    drop(gate.server);
}

/// Per-request latency of `n` denied requests, sorted.
async fn latencies(gate: &Gate, n: usize) -> Vec<Duration> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let start = Instant::now();
        let (parts, _) = get(&gate.url(&format!("/none/{i}"))).await;
        out.push(start.elapsed());
        assert_eq!(parts.status, 404);
    }
    out.sort();
    out
}

fn percentile(sorted: &[Duration], p: usize) -> Duration {
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)]
}

#[tokio::test]
async fn a_dead_webhook_slows_no_request() {
    // Accepts connections and never answers: each POST waits for its timeout.
    let blackhole = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead = blackhole.local_addr().unwrap();
    let held = Arc::new(Mutex::new(Vec::new()));
    let accepted = Arc::new(AtomicUsize::new(0));
    let (h, a) = (held.clone(), accepted.clone());
    tokio::spawn(async move {
        while let Ok((stream, _)) = blackhole.accept().await {
            a.fetch_add(1, Ordering::SeqCst);
            h.lock().unwrap().push(stream);
        }
    });
    let n = 300;
    let base = gate("[events]\nsinks = [\"file:events.jsonl\"]\n", &[]).await;
    latencies(&base, 50).await; // warm-up
    let without = latencies(&base, n).await;
    let with_dead = gate(
        &format!(
            r#"
[events]
sinks = ["file:events.jsonl"]

[[events.sink]]
type = "webhook"
url = "http://{dead}/hook"
batch_size = 10
flush_interval = "10ms"
timeout = "5s"
"#
        ),
        &[],
    )
    .await;
    latencies(&with_dead, 50).await;
    let with = latencies(&with_dead, n).await;
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    eprintln!(
        "latency over {n} denied requests: without webhook p50 {:.2} ms p99 {:.2} ms max {:.2} ms; \
         with a dead webhook p50 {:.2} ms p99 {:.2} ms max {:.2} ms",
        ms(percentile(&without, 50)),
        ms(percentile(&without, 99)),
        ms(*without.last().unwrap()),
        ms(percentile(&with, 50)),
        ms(percentile(&with, 99)),
        ms(*with.last().unwrap()),
    );
    assert!(accepted.load(Ordering::SeqCst) >= 1, "the webhook was tried");
    // The webhook's POST waits 5 s for its timeout; no request waits with it.
    assert!(*with.last().unwrap() < Duration::from_secs(1), "a request waited for the webhook");
    drop((base.server, with_dead.server));
}

fn parse_syslog(text: &str) -> syslog_loose::Message<&str> {
    let message = syslog_loose::parse_message_with_year_exact(text, |_| 2026, syslog_loose::Variant::RFC5424)
        .unwrap_or_else(|e| panic!("{e}: {text}"));
    assert_eq!(message.protocol, syslog_loose::Protocol::RFC5424(1), "{text}");
    message
}

#[tokio::test]
async fn syslog_over_udp_is_rfc5424_with_the_event_as_message() {
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    let gate = gate(
        &format!(
            r#"
[[events.sink]]
type = "syslog"
address = "udp://{addr}"
facility = "local3"
app_name = "gate"
"#
        ),
        &[],
    )
    .await;
    let ids = denials(&gate, 1).await;
    let mut buffer = vec![0u8; 65536];
    let (n, _) = tokio::time::timeout(Duration::from_secs(10), socket.recv_from(&mut buffer))
        .await
        .expect("no datagram")
        .unwrap();
    let text = std::str::from_utf8(&buffer[..n]).unwrap();
    let message = parse_syslog(text);
    assert_eq!(message.facility, Some(syslog_loose::SyslogFacility::LOG_LOCAL3));
    assert_eq!(message.severity, Some(syslog_loose::SyslogSeverity::SEV_WARNING));
    assert_eq!(message.appname, Some("gate"));
    assert_eq!(message.msgid, Some("route.none"));
    let event: Value = serde_json::from_str(message.msg).unwrap();
    assert_eq!(event["request_id"], ids[0].as_str());
    assert_eq!(event["reason"], "route.none");
    drop(gate.server);
}

/// Reads one RFC 6587 octet-counted frame.
async fn frame(stream: &mut tokio::net::TcpStream) -> String {
    let mut len = Vec::new();
    loop {
        let byte = stream.read_u8().await.unwrap();
        if byte == b' ' {
            break;
        }
        assert!(byte.is_ascii_digit(), "octet count expected, got {byte}");
        len.push(byte);
    }
    let len: usize = std::str::from_utf8(&len).unwrap().parse().unwrap();
    let mut message = vec![0u8; len];
    stream.read_exact(&mut message).await.unwrap();
    String::from_utf8(message).unwrap()
}

#[tokio::test]
async fn syslog_over_tcp_uses_octet_counting_and_ecs_when_asked() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let gate = gate(
        &format!(
            r#"
[events]
schema = "ecs"

[[events.sink]]
type = "syslog"
address = "tcp://{addr}"
"#
        ),
        &[],
    )
    .await;
    let ids = denials(&gate, 3).await;
    let (mut stream, _) = tokio::time::timeout(Duration::from_secs(10), listener.accept()).await.unwrap().unwrap();
    for id in &ids {
        let text = tokio::time::timeout(Duration::from_secs(10), frame(&mut stream)).await.unwrap();
        let message = parse_syslog(&text);
        assert_eq!(message.facility, Some(syslog_loose::SyslogFacility::LOG_AUTH), "the default facility");
        assert_eq!(message.appname, Some("portcullis"));
        let event: Value = serde_json::from_str(message.msg).unwrap();
        assert_eq!(event["http"]["request"]["id"], id.as_str());
        assert_eq!(event["event"]["action"], "route.none");
        assert_eq!(event["event"]["outcome"], "failure");
        assert_eq!(event["http"]["response"]["status_code"], 404);
        assert_eq!(event["ecs"]["version"], portcullis::events::ECS_VERSION);
        assert!(event["source"]["ip"].is_string());
    }
    drop(gate.server);
}

fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

#[tokio::test]
async fn the_file_sink_rotates_by_size_and_keeps_n_files() {
    let gate = gate(
        r#"
[[events.sink]]
type = "file"
path = "events.jsonl"
max_size = "2KiB"
keep = 2
"#,
        &[],
    )
    .await;
    let path = gate.dir.path().join("events.jsonl");
    let ids = denials(&gate, 40).await;
    let last = ids.last().unwrap().clone();
    eventually("the last event written", Duration::from_secs(10), || {
        lines(&path).last().is_some_and(|e| e["request_id"] == last.as_str())
    })
    .await;
    let rotated = |n: usize| gate.dir.path().join(format!("events.jsonl.{n}"));
    assert!(rotated(1).exists() && rotated(2).exists(), "rotated twice at least");
    assert!(!rotated(3).exists(), "keep = 2");
    let mut seen = Vec::new();
    for file in [rotated(2), rotated(1), path.clone()] {
        let size = std::fs::metadata(&file).unwrap().len();
        assert!(size <= 2048, "{} is {size} bytes", file.display());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
        }
        seen.extend(lines(&file).into_iter().map(|e| e["request_id"].as_str().unwrap().to_owned()));
    }
    // What is kept is the newest events, in order, none split or repeated.
    assert!(seen.len() < ids.len(), "the oldest file was deleted");
    assert_eq!(seen, ids[ids.len() - seen.len()..]);
    drop(gate.server);
}

#[tokio::test]
async fn allowed_requests_are_sampled_only_when_asked_and_denials_always() {
    // Alert rules wrap the event sink: the sampling must not depend on the wrapping.
    let alerts = "[alerts]\nwebhook = \"http://127.0.0.1:9/alerts\"\n\n[[alerts.rule]]\nname = \"misses\"\nmatch = { reason = [\"route.none\"] }\nthreshold = 100\n";
    for (sample, extra, expect_allowed) in [("0", "", 0), ("1.0", "", 5), ("1.0", alerts, 5)] {
        let gate =
            gate(&format!("[events]\nsinks = [\"file:events.jsonl\"]\nsample_allowed = {sample}\n\n{extra}"), &[])
                .await;
        for i in 0..5 {
            let (parts, _) = get(&gate.url(&format!("/ok/{i}"))).await;
            assert_eq!(parts.status, 200);
        }
        let denied = denials(&gate, 1).await;
        let path = gate.dir.path().join("events.jsonl");
        eventually("the denial written", Duration::from_secs(10), || {
            lines(&path).iter().any(|e| e["request_id"] == denied[0].as_str())
        })
        .await;
        let events = lines(&path);
        let allowed: Vec<&Value> = events.iter().filter(|e| e["reason"] == "request.allowed").collect();
        assert_eq!(allowed.len(), expect_allowed, "sample_allowed = {sample} {extra}");
        for e in &allowed {
            assert_eq!(e["action"], "allow");
            assert_eq!(e["status"], 200);
            assert_eq!(e["route"], "ok");
            assert_eq!(e["defence"], "request");
        }
        assert_eq!(events.iter().filter(|e| e["reason"] == "route.none").count(), 1, "denials always");
        drop(gate.server);
    }
}

#[test]
fn write_now_rotates_files_and_sends_syslog() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    receiver.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let toml = format!(
        r#"{MINIMAL}
[[events.sink]]
type = "file"
path = "cli.jsonl"
max_size = 1024
keep = 1

[[events.sink]]
type = "syslog"
address = "udp://{}"
"#,
        receiver.local_addr().unwrap()
    );
    let path = dir.path().join("portcullis.toml");
    let config = config::parse(&path, &toml, |_| None).unwrap();
    let event = portcullis_policy::SecurityEvent::command(
        "r-1",
        "user disable",
        "account",
        "account.logout",
        "x".repeat(300),
        std::time::SystemTime::now(),
    );
    for _ in 0..5 {
        portcullis::events::write_now(&config.events, &event).unwrap();
    }
    let current = std::fs::metadata(dir.path().join("cli.jsonl")).unwrap().len();
    assert!(current <= 1024 && dir.path().join("cli.jsonl.1").exists() && !dir.path().join("cli.jsonl.2").exists());
    let mut buffer = [0u8; 4096];
    let n = receiver.recv(&mut buffer).unwrap();
    let message = parse_syslog(std::str::from_utf8(&buffer[..n]).unwrap());
    assert_eq!(message.severity, Some(syslog_loose::SyslogSeverity::SEV_INFO));
    assert_eq!(message.msgid, Some("account.logout"));
}

fn errors(toml: &str) -> Vec<config::ConfigError> {
    let env = |name: &str| (name == "HOOK_AUTH").then(|| "Bearer x".to_owned());
    config::parse(Path::new("/etc/portcullis/test.toml"), toml, env)
        .map(|_| ())
        .expect_err("config should be refused")
        .0
}

fn parse(toml: &str) -> Result<config::Config, ConfigErrors> {
    let env = |name: &str| (name == "HOOK_AUTH").then(|| "Bearer x".to_owned());
    config::parse(Path::new("/etc/portcullis/test.toml"), toml, env)
}

const MINIMAL: &str = r#"
[[listener]]
bind = "127.0.0.1:8080"

[[upstream]]
name = "api"
targets = ["http://127.0.0.1:3000"]

[[route]]
match = { path = "/api/**" }
upstream = "api"
auth = "public"
"#;

#[test]
fn sink_tables_are_built_with_their_defaults() {
    let c = parse(&format!(
        r#"{MINIMAL}
[events]
sinks = ["stderr"]
schema = "ecs"
sample_allowed = 0.25

[[events.sink]]
type = "file"
path = "events.jsonl"
max_size = "100MiB"

[[events.sink]]
type = "webhook"
url = "https://siem.example.com/ingest?token=abc"
auth = "${{HOOK_AUTH}}"

[[events.sink]]
type = "syslog"
address = "unix:/dev/log"
"#
    ))
    .unwrap();
    let e = &c.events;
    assert_eq!(e.schema, config::Schema::Ecs);
    assert_eq!(e.sample_allowed_ppm, 250_000);
    assert_eq!(e.sinks.len(), 4);
    let config::Sink::File(f) = &e.sinks[1] else { panic!("{:?}", e.sinks[1]) };
    assert_eq!((f.path.as_path(), f.max_size, f.keep), (Path::new("/etc/portcullis/events.jsonl"), Some(100 << 20), 5));
    let config::Sink::Webhook(w) = &e.sinks[2] else { panic!() };
    // The label has no path or query: they may hold a token.
    assert_eq!(w.name, "webhook:https://siem.example.com");
    assert_eq!((w.batch_size, w.queue, w.max_attempts), (100, 10_000, 8));
    assert_eq!((w.flush_interval, w.timeout), (Duration::from_secs(1), Duration::from_secs(10)));
    assert_eq!((w.backoff_min, w.backoff_max), (Duration::from_secs(1), Duration::from_secs(60)));
    assert_eq!(w.auth.as_ref().unwrap().0, http::header::AUTHORIZATION);
    assert!(!format!("{:?}", e).contains("Bearer x"), "secrets are never printed");
    let config::Sink::Syslog(s) = &e.sinks[3] else { panic!() };
    assert_eq!((s.facility, s.app_name.as_str()), (4, "portcullis"));
    assert_eq!(s.transport, config::SyslogTransport::Unix("/dev/log".into()));
    // Tables alone replace the default stdout.
    let c = parse(&format!("{MINIMAL}\n[[events.sink]]\ntype = \"file\"\npath = \"e.jsonl\"\n")).unwrap();
    assert_eq!(c.events.sinks.len(), 1);
    assert_eq!(parse(MINIMAL).unwrap().events.sinks, vec![config::Sink::Stdout]);
}

#[test]
fn sink_configuration_errors_point_at_the_value_and_say_how_to_fix_it() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "[[events.sink]]\ntype = \"webhook\"\nurl = \"http://siem.example.com/x\"",
            "plain http is allowed only to loopback hosts",
            "url",
        ),
        ("[[events.sink]]\ntype = \"webhook\"\nurl = \"not a url\"", "invalid webhook url", "url"),
        ("[[events.sink]]\ntype = \"webhook\"\nurl = \"ftp://127.0.0.1/x\"", "the scheme must be https", "url"),
        ("[[events.sink]]\ntype = \"webhook\"", "a webhook sink needs url", "type"),
        (
            "[[events.sink]]\ntype = \"webhook\"\nurl = \"https://h/x\"\nauth = \"Bearer literal\"",
            "written in the file",
            "auth",
        ),
        ("[[events.sink]]\ntype = \"webhook\"\nurl = \"https://h/x\"\nauth = \"${NOPE}\"", "NOPE is not set", "auth"),
        ("[[events.sink]]\ntype = \"webhook\"\nurl = \"https://h/x\"\nbatch_size = 0", "batch_size 0", "batch_size"),
        (
            "[[events.sink]]\ntype = \"webhook\"\nurl = \"https://h/x\"\nkeep = 3",
            "keep is not an option of a webhook sink",
            "keep",
        ),
        (
            "[[events.sink]]\ntype = \"file\"\npath = \"e\"\nmax_size = \"1MiB\"\nkeep = 0",
            "keep 0 is out of range",
            "keep",
        ),
        ("[[events.sink]]\ntype = \"file\"\npath = \"e\"\nkeep = 3", "keep without max_size", "keep"),
        ("[[events.sink]]\ntype = \"file\"\npath = \"e\"\nmax_size = 10", "max_size 10 is out of range", "max_size"),
        ("[[events.sink]]\ntype = \"kafka\"", "unknown event sink type", "type"),
        ("[[events.sink]]\ntype = \"syslog\"\naddress = \"udp://h\"", "invalid syslog address", "address"),
        (
            "[[events.sink]]\ntype = \"syslog\"\naddress = \"udp://h:514\"\nfacility = \"local9\"",
            "unknown syslog facility",
            "facility",
        ),
        ("[events]\nsample_allowed = 1.5", "sample_allowed 1.5 is out of range", "sample_allowed"),
        ("[events]\nschema = \"cef\"", "unknown events.schema", "schema"),
        (
            "[[events.sink]]\ntype = \"file\"\npath = \"a\"\n[[events.sink]]\ntype = \"file\"\npath = \"b\"\nname = \"file:/etc/portcullis/a\"",
            "two event sinks are named",
            "",
        ),
    ];
    for (events, message, at) in cases {
        let toml = format!("{MINIMAL}\n{events}\n");
        let errors = errors(&toml);
        assert!(errors.iter().any(|e| e.message.contains(message)), "{events}: {errors:?}");
        let error = errors.iter().find(|e| e.message.contains(message)).unwrap();
        // The error points at the line of the offending key.
        let line = toml.lines().nth(error.line - 1).unwrap_or_default();
        assert!(line.trim_start().starts_with(at) || line.contains(at), "{events}: points at {line:?}");
        assert!(error.expected.is_some() || error.help.is_some(), "{events}: no fix given");
        assert!(!error.to_string().contains("Bearer literal"), "a secret printed");
    }
}
