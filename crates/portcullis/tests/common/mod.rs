//! Test harness: in-process upstreams, the gateway in-process or as the real
//! binary, and small HTTP helpers. Everything binds ephemeral loopback ports.

use std::future::Future;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use portcullis::server::Server;
use portcullis_layers::{Body, EventSink};
use portcullis_policy::SecurityEvent;
use tokio::net::TcpListener;

/// Collects events in memory.
#[derive(Debug, Default)]
pub struct Events(pub Mutex<Vec<SecurityEvent>>);

impl EventSink for Events {
    fn emit(&self, event: SecurityEvent) {
        self.0.lock().unwrap().push(event);
    }
}

impl Events {
    pub fn reasons(&self) -> Vec<&'static str> {
        self.0.lock().unwrap().iter().map(|e| e.reason).collect()
    }
    pub fn last(&self) -> Option<SecurityEvent> {
        self.0.lock().unwrap().last().cloned()
    }
}

/// Starts an in-process HTTP/1.1 upstream running `handler` per request.
pub async fn upstream<F, Fut>(handler: F) -> SocketAddr
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            let handler = handler.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let handler = handler.clone();
                    async move { Ok::<_, std::convert::Infallible>(handler(req).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .with_upgrades()
                    .await;
            });
        }
    });
    addr
}

/// An upstream that answers `name` and records every request's headers.
pub async fn named_upstream(name: &'static str) -> (SocketAddr, Arc<Mutex<Vec<http::HeaderMap>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    let addr = upstream(move |req: Request<Incoming>| {
        let record = record.clone();
        async move {
            record.lock().unwrap().push(req.headers().clone());
            let path = req.uri().path().to_owned();
            // Read the whole body, as an upload endpoint would.
            let _ = req.into_body().collect().await;
            let body = format!("{name} {path}");
            let mut resp = Response::new(portcullis_layers::full(body));
            resp.headers_mut().insert("x-powered-by", http::HeaderValue::from_static("Express"));
            resp
        }
    })
    .await;
    (addr, seen)
}

/// The gateway, in process.
pub struct Gateway {
    pub server: Server,
    pub addr: SocketAddr,
    pub events: Arc<Events>,
    pub dir: tempfile::TempDir,
}

impl Gateway {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }
}

/// Parses `toml` as a configuration file in a temporary directory.
pub fn config(toml: &str) -> (portcullis::config::Config, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("portcullis.toml");
    std::fs::write(&path, toml).unwrap();
    let config = portcullis::config::parse(&path, toml, |_| None).unwrap_or_else(|e| panic!("config: {e}"));
    (config, dir)
}

/// Starts the gateway in process with `toml` (its first listener is used).
pub async fn gateway(toml: &str) -> Gateway {
    let (config, dir) = config(toml);
    let events = Arc::new(Events::default());
    let server = Server::start(config, events.clone()).await.unwrap();
    let addr = server.addrs()[0].1;
    Gateway { server, addr, events, dir }
}

/// A minimal config: one listener on an ephemeral port, one upstream, routes.
pub fn simple_config(upstream: SocketAddr, extra: &str) -> String {
    format!(
        r#"
[[listener]]
name = "test"
bind = "127.0.0.1:0"

[[upstream]]
name = "app"
targets = ["http://{upstream}"]

[[route]]
match = {{ path = "/**" }}
upstream = "app"
auth = "public"

{extra}
"#
    )
}

pub fn client() -> Client<HttpConnector, Body> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// Sends a request and collects the answer.
pub async fn send(req: Request<Body>) -> (http::response::Parts, Bytes) {
    let response = client().request(req).await.expect("request failed");
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.expect("body failed").to_bytes();
    (parts, bytes)
}

pub async fn get(url: &str) -> (http::response::Parts, Bytes) {
    get_with(url, &[]).await
}

/// A GET with extra request headers.
pub async fn get_with(url: &str, headers: &[(&str, &str)]) -> (http::response::Parts, Bytes) {
    let mut req = Request::get(url);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    send(req.body(portcullis_layers::empty()).unwrap()).await
}

pub fn json(bytes: &Bytes) -> serde_json::Value {
    serde_json::from_slice(bytes).unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(bytes)))
}

/// Asserts a gateway error answer: status, exact body shape, request id echo.
pub fn assert_denied(parts: &http::response::Parts, body: &Bytes, status: u16, reason: &str) {
    assert_eq!(parts.status.as_u16(), status, "body: {}", String::from_utf8_lossy(body));
    let value = json(body);
    let id = parts.headers["x-request-id"].to_str().unwrap();
    assert_eq!(value, serde_json::json!({"error": reason, "request_id": id}));
}

/// Waits for `condition` with a deadline.
pub async fn eventually(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The real `portcullis` binary, started on a config file.
pub struct Process {
    pub child: Child,
    pub addr: SocketAddr,
    pub stderr: Arc<Mutex<Vec<String>>>,
}

pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_portcullis")
}

impl Process {
    /// Starts `portcullis run --config <path>`; the config must log JSON and
    /// bind one listener (port 0 is fine: the address is read from the log).
    pub fn start(path: &Path) -> Self {
        let mut child = Command::new(binary())
            .args(["run", "--config"])
            .arg(path)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let lines = stderr.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        let pipe = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line)
                    && v["message"] == "listening"
                {
                    let _ = tx.send(v["addr"].as_str().unwrap_or_default().to_owned());
                }
                lines.lock().unwrap().push(line);
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("gateway did not start: {:?}", stderr.lock().unwrap()));
        Self { child, addr: addr.parse().unwrap(), stderr }
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill").args(["-s", signal, &self.child.id().to_string()]).status().unwrap();
        assert!(status.success());
    }

    pub fn log_contains(&self, needle: &str) -> bool {
        self.stderr.lock().unwrap().iter().any(|l| l.contains(needle))
    }

    /// Peak resident memory (VmHWM) in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        proc_status_kib(self.child.id(), "VmHWM:")
    }

    pub fn rss_kib(&self) -> u64 {
        proc_status_kib(self.child.id(), "VmRSS:")
    }

    /// Waits for the process to exit and returns its code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(Instant::now() < deadline, "process did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn proc_status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

pub fn full_body(data: impl Into<Bytes>) -> Body {
    Full::new(data.into()).map_err(|never| match never {}).boxed_unsync()
}
pub mod chromium;
pub mod express;
pub mod metrics;
pub mod node;
pub mod oidc_provider;
pub mod oidc_stub;
pub mod postgres;
pub mod raw;
pub mod redis;
pub mod strict;
pub mod tls;

/// Runs each scenario (an `async fn(url: &str)`) against a fresh SQLite file
/// and a fresh PostgreSQL server (one throwaway server per test).
macro_rules! against_both_stores {
    ($($scenario:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    let dir = tempfile::tempdir().unwrap();
                    super::$scenario(&format!("sqlite://{}", dir.path().join("accounts.db").display())).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    let server = crate::common::postgres::Postgres::start().await;
                    super::$scenario(&server.url).await;
                }
            )*
        }
    };
}
pub(crate) use against_both_stores;
