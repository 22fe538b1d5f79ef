//! The Express test upstream (`tests/express-app/server.js`), started on an
//! ephemeral loopback port, stopped on drop. Its `/admin` handler records
//! every call; [`Express::admin_calls`] reads them from `GET /__calls`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, ChildStdin};
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

impl Express {
    /// Starts the app. Panics with instructions when Node.js or the npm
    /// dependencies are missing: `scripts/test` installs both.
    pub fn start() -> Self {
        let started = super::node::start("express-app", "server.js", "express", "url", true, |_| {});
        let url = started.announced;
        let addr = url.strip_prefix("http://").and_then(|a| a.parse().ok()).unwrap_or_else(|| panic!("bad url {url}"));
        Self { child: started.child, _stdin: started.stdin.unwrap(), addr, stderr: started.stderr }
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
