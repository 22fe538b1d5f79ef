//! The `oidc-provider` test server (`tests/oidc-provider/server.mjs`), started
//! on an ephemeral loopback port with one client registered, stopped on drop.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The registered client's credentials.
pub const CLIENT_ID: &str = "portcullis";
pub const CLIENT_SECRET: &str = "portcullis-test-secret";

/// A running provider.
pub struct Provider {
    child: Child,
    /// `http://127.0.0.1:<port>`.
    pub issuer: String,
    stderr: Arc<Mutex<Vec<String>>>,
}

/// Settings for one provider.
pub struct ProviderSettings<'a> {
    pub redirect_uris: &'a [&'a str],
    pub post_logout_redirect_uris: &'a [&'a str],
    /// Access token lifetime in seconds.
    pub access_token_ttl: u64,
}

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/oidc-provider")
}

impl Provider {
    /// Starts the provider. Panics with instructions when Node.js or the
    /// npm dependencies are missing: `scripts/test` installs both.
    pub fn start(settings: &ProviderSettings<'_>) -> Self {
        let dir = dir();
        let node = Command::new("node").arg("--version").output();
        assert!(
            node.is_ok_and(|o| o.status.success()),
            "Node.js (`node`) is not installed; the OIDC end-to-end tests need it. Run scripts/test, which installs the test prerequisites."
        );
        assert!(
            dir.join("node_modules/oidc-provider").is_dir(),
            "{}/node_modules is missing; run scripts/test (it runs `npm ci` there), or `npm ci` in that directory",
            dir.display()
        );
        let mut child = Command::new("node")
            .arg("server.mjs")
            .arg("0")
            .current_dir(&dir)
            .env("OIDC_CLIENT_ID", CLIENT_ID)
            .env("OIDC_CLIENT_SECRET", CLIENT_SECRET)
            .env("OIDC_REDIRECT_URIS", settings.redirect_uris.join(","))
            .env("OIDC_POST_LOGOUT_REDIRECT_URIS", settings.post_logout_redirect_uris.join(","))
            .env("OIDC_ACCESS_TOKEN_TTL", settings.access_token_ttl.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot start node");
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
                    && let Some(issuer) = v["issuer"].as_str()
                {
                    let _ = tx.send(issuer.to_owned());
                }
            }
        });
        let Ok(issuer) = rx.recv_timeout(Duration::from_secs(30)) else {
            let _ = child.kill();
            panic!("oidc-provider did not start: {:?}", stderr.lock().unwrap());
        };
        Self { child, issuer, stderr }
    }

    /// What the provider wrote on stderr (warnings, errors).
    /// Stops the provider (an outage), keeping the handle.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn stderr(&self) -> Vec<String> {
        self.stderr.lock().unwrap().clone()
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
