//! The Express test upstream (`tests/express-app/server.js`), started on an
//! ephemeral loopback port, stopped on drop. Its `/admin` handler records
//! every call; [`Express::admin_calls`] reads them from `GET /__calls`.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A running Express app.
pub struct Express {
    child: Child,
    /// Held open: the app exits when its stdin closes, so it dies with the
    /// test process even when no destructor runs.
    _stdin: ChildStdin,
    pub addr: SocketAddr,
    stderr: Arc<Mutex<Vec<String>>>,
}

/// One call the `/admin` handler recorded.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Call {
    pub method: String,
    pub original_url: String,
}

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/express-app")
}

impl Express {
    /// Starts the app. Panics with instructions when Node.js or the npm
    /// dependencies are missing: `scripts/test` installs both.
    pub fn start() -> Self {
        let dir = dir();
        let node = Command::new("node").arg("--version").output();
        assert!(
            node.is_ok_and(|o| o.status.success()),
            "Node.js (`node`) is not installed; the Express bypass tests need it. Run scripts/test, which installs the test prerequisites."
        );
        assert!(
            dir.join("node_modules/express").is_dir(),
            "{}/node_modules is missing; run scripts/test (it runs `npm ci` there), or `npm ci` in that directory",
            dir.display()
        );
        let mut child = Command::new("node")
            .arg("server.js")
            .arg("0")
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot start node");
        let stdin = child.stdin.take().unwrap();
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let lines = stderr.clone();
        let pipe = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                lines.lock().unwrap().push(line);
            }
        });
        let (tx, rx) = std::sync::mpsc::channel();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line)
                    && let Some(url) = v["url"].as_str()
                {
                    let _ = tx.send(url.to_owned());
                }
            }
        });
        let Ok(url) = rx.recv_timeout(Duration::from_secs(30)) else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the Express app did not start: {:?}", stderr.lock().unwrap());
        };
        let addr = url.strip_prefix("http://").and_then(|a| a.parse().ok()).unwrap_or_else(|| panic!("bad url {url}"));
        Self { child, _stdin: stdin, addr, stderr }
    }

    /// Every call the `/admin` handler has recorded, oldest first (read
    /// directly, never through the gateway).
    pub fn admin_calls(&self) -> Vec<Call> {
        let mut stream = TcpStream::connect(self.addr).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        stream.write_all(b"GET /__calls HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").unwrap();
        let mut response = Vec::new();
        stream.read_to_end(&mut response).unwrap();
        let text = String::from_utf8(response).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        serde_json::from_str(body).unwrap_or_else(|e| panic!("/__calls is not a call list ({e}): {body}"))
    }

    /// What the app wrote on stderr.
    pub fn stderr(&self) -> Vec<String> {
        self.stderr.lock().unwrap().clone()
    }
}

impl Drop for Express {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
