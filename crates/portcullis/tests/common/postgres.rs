//! A real, throwaway PostgreSQL server: `initdb` in a temporary directory,
//! `postgres` on an ephemeral loopback port with its socket in that directory,
//! stopped and deleted on drop.
//!
//! The binaries are found on PATH or in `/usr/lib/postgresql/<version>/bin`
//! (Debian keeps them there). A missing PostgreSQL fails the test: the
//! end-to-end tests never skip silently; `scripts/test` installs it.
//!
//! PostgreSQL refuses to run as root, so as root (CI) the server runs as the
//! `postgres` user the Debian package creates.

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sqlx::Connection;

/// A running server; dropped, it stops and its files go away.
pub struct Postgres {
    child: Child,
    bin: PathBuf,
    user: Option<(u32, u32)>,
    /// `postgres://portcullis@127.0.0.1:<port>/<database>` for a database
    /// created for the test.
    pub url: String,
    port: u16,
    /// Data, socket and log; deleted after the server stops (fields drop in order).
    dir: tempfile::TempDir,
}

/// The uid and gid to run as: ours, or the `postgres` user's when we are root.
fn run_as() -> Option<(u32, u32)> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let euid = status.lines().find_map(|l| l.strip_prefix("Uid:")).and_then(|v| v.split_whitespace().nth(1));
    if euid != Some("0") {
        return None;
    }
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    let entry = passwd.lines().find(|l| l.starts_with("postgres:")).unwrap_or_else(|| {
        panic!("running as root needs the `postgres` user to start PostgreSQL; install it with scripts/test")
    });
    let fields: Vec<&str> = entry.split(':').collect();
    Some((fields[2].parse().unwrap(), fields[3].parse().unwrap()))
}

/// The directory holding `initdb` and `postgres`.
fn bin_dir() -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join("initdb"))
        .find(|p| p.is_file())
        // /usr/local/bin/initdb may be a symlink into the real bin directory.
        .and_then(|p| std::fs::canonicalize(p).ok())
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .filter(|dir| dir.join("postgres").is_file());
    if let Some(dir) = on_path {
        return dir;
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, bin)| bin.join("initdb").is_file() && bin.join("postgres").is_file())
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin).unwrap_or_else(|| {
        panic!(
            "PostgreSQL (initdb, postgres) not found on PATH or in /usr/lib/postgresql/*/bin: \
             run scripts/test, which installs it (apt-get install postgresql)"
        )
    })
}

fn command(program: PathBuf, user: Option<(u32, u32)>) -> Command {
    let mut cmd = Command::new(program);
    if let Some((uid, gid)) = user {
        cmd.uid(uid).gid(gid);
    }
    cmd.env("LC_ALL", "C");
    cmd
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl Postgres {
    /// Starts a server and creates the database `portcullis` in it.
    pub async fn start() -> Self {
        let bin = bin_dir();
        let user = run_as();
        let dir = tempfile::Builder::new().prefix("portcullis-pg-").tempdir().unwrap();
        if let Some((uid, gid)) = user {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).unwrap();
        }
        let data = dir.path().join("data");
        let out = command(bin.join("initdb"), user)
            .arg("-D")
            .arg(&data)
            .args(["-A", "trust", "-U", "portcullis", "--no-sync", "--locale=C", "-E", "UTF8"])
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "initdb failed: {}", String::from_utf8_lossy(&out.stderr));

        // The port is free when picked; another process could take it before
        // postgres binds it, so a failed start is retried on a new port.
        for _ in 0..3 {
            let port = free_port();
            let mut child = spawn(&bin, user, dir.path(), port);
            if wait_ready(&mut child, &admin_url(port), Duration::from_secs(30)).await {
                let url = create_database(port, "portcullis").await;
                return Self { child, bin, user, url, port, dir };
            }
            stop(&mut child);
            let log = std::fs::read_to_string(dir.path().join(format!("postgres-{port}.log"))).unwrap_or_default();
            assert!(log.contains("could not bind") || log.contains("in use"), "postgres did not start:\n{log}");
        }
        panic!("postgres did not start on three ports");
    }

    /// Stops the server (an outage); its data stays for [`Postgres::restart`].
    pub fn stop(&mut self) {
        stop(&mut self.child);
    }

    /// Starts it again on the same port with the same data.
    pub async fn restart(&mut self) {
        self.stop();
        self.child = spawn(&self.bin, self.user, self.dir.path(), self.port);
        assert!(
            wait_ready(&mut self.child, &admin_url(self.port), Duration::from_secs(30)).await,
            "postgres did not restart on port {}",
            self.port
        );
    }
}

/// Starts `postgres` on the data in `dir` (socket and log there too).
fn spawn(bin: &Path, user: Option<(u32, u32)>, dir: &Path, port: u16) -> Child {
    let log = dir.join(format!("postgres-{port}.log"));
    command(bin.join("postgres"), user)
        .arg("-D")
        .arg(dir.join("data"))
        .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-p", &port.to_string(), "-k"])
        .arg(dir)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(std::fs::OpenOptions::new().create(true).append(true).open(&log).unwrap())
        .spawn()
        .unwrap()
}

fn admin_url(port: u16) -> String {
    format!("postgres://portcullis@127.0.0.1:{port}/postgres")
}

/// Polls until the server accepts a connection; false if it exits first.
async fn wait_ready(child: &mut Child, url: &str, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        if let Ok(conn) = sqlx::PgConnection::connect(url).await {
            let _ = conn.close().await;
            return true;
        }
        assert!(Instant::now() < deadline, "postgres did not accept connections within {timeout:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn create_database(port: u16, name: &str) -> String {
    // Identifiers cannot be bound; the names are the tests' own constants.
    assert!(name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'), "{name}");
    let mut conn = sqlx::PgConnection::connect(&admin_url(port)).await.unwrap();
    sqlx::raw_sql(&format!("CREATE DATABASE {name}")).execute(&mut conn).await.unwrap();
    conn.close().await.unwrap();
    format!("postgres://portcullis@127.0.0.1:{port}/{name}")
}

/// Asks the server to shut down fast, then kills it if it lingers.
fn stop(child: &mut Child) {
    if child.try_wait().ok().flatten().is_some() {
        return;
    }
    // SIGINT is "fast shutdown", which also ends the server's backends.
    let _ = Command::new("kill").args(["-s", "INT", &child.id().to_string()]).status();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if child.try_wait().ok().flatten().is_some() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

impl Drop for Postgres {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}
