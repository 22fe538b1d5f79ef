//! Starting a Node.js test app from `tests/<app>/`: checks that node and the
//! app's `npm ci` are there (failing with instructions, never skipping),
//! collects its stderr, and waits for the JSON line on stdout that names
//! where it listens.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A started app.
pub struct Started {
    pub child: Child,
    /// The value of the announced key (`url`, `issuer`).
    pub announced: String,
    pub stderr: Arc<Mutex<Vec<String>>>,
    /// The app's stdin, when `keep_stdin` asked for it.
    pub stdin: Option<ChildStdin>,
}

/// Runs `node <script> 0` in `tests/<app>`, after `configure` adds its
/// environment, and waits up to 30 s for a stdout line `{"<key>": "…"}`.
/// `module` is a dependency whose presence proves `npm ci` ran.
pub fn start(
    app: &str,
    script: &str,
    module: &str,
    key: &str,
    keep_stdin: bool,
    configure: impl FnOnce(&mut Command),
) -> Started {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests").join(app);
    let node = Command::new("node").arg("--version").output();
    assert!(
        node.is_ok_and(|o| o.status.success()),
        "Node.js (`node`) is not installed; the {app} tests need it. Run scripts/test, which installs the test prerequisites."
    );
    assert!(
        dir.join("node_modules").join(module).is_dir(),
        "{}/node_modules is missing; run scripts/test (it runs `npm ci` there), or `npm ci` in that directory",
        dir.display()
    );
    let mut command = Command::new("node");
    command
        .arg(script)
        .arg("0")
        .current_dir(&dir)
        .stdin(if keep_stdin { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    configure(&mut command);
    let mut child = command.spawn().expect("cannot start node");
    let stdin = child.stdin.take();
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
    let key = key.to_owned();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line)
                && let Some(value) = v[&key].as_str()
            {
                let _ = tx.send(value.to_owned());
            }
        }
    });
    let Ok(announced) = rx.recv_timeout(Duration::from_secs(30)) else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("{app} did not start: {:?}", stderr.lock().unwrap());
    };
    Started { child, announced, stderr, stdin }
}
