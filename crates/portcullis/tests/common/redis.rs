//! A real, throwaway Redis server: `redis-server` on a free loopback port,
//! no persistence, its working directory a temporary one; killed on drop.
//! It can be stopped and started again on the same port, to test outages.
//!
//! A missing `redis-server` fails the test: the end-to-end tests never skip
//! silently; `scripts/test` installs it (apt-get install redis-server).

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running (or deliberately stopped) server.
pub struct Redis {
    child: Option<Child>,
    pub port: u16,
    /// `redis://127.0.0.1:<port>`.
    pub url: String,
    dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Whether the server answers PING with PONG.
fn pong(port: u16) -> bool {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else { return false };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    let mut reply = [0u8; 7];
    stream.write_all(b"PING\r\n").is_ok() && stream.read_exact(&mut reply).is_ok() && &reply == b"+PONG\r\n"
}

impl Redis {
    /// Starts a server on a free port.
    pub fn start() -> Self {
        let dir = tempfile::Builder::new().prefix("portcullis-redis-").tempdir().unwrap();
        let mut redis = Self { child: None, port: 0, url: String::new(), dir };
        // The port is free when picked; another process could take it first,
        // so a failed start is retried on a new port.
        for _ in 0..3 {
            redis.port = free_port();
            redis.url = format!("redis://127.0.0.1:{}", redis.port);
            if redis.spawn() {
                return redis;
            }
        }
        panic!("redis-server did not start on three ports");
    }

    /// Spawns redis-server on `self.port`; true once it answers PING.
    fn spawn(&mut self) -> bool {
        let log = self.dir.path().join(format!("redis-{}.log", self.port));
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string(), "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(Stdio::null())
            .spawn();
        let child = child.unwrap_or_else(|e| {
            panic!("cannot run redis-server ({e}): run scripts/test, which installs it (apt-get install redis-server)")
        });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if pong(self.port) {
                return true;
            }
            let exited = self.child.as_mut().is_some_and(|c| c.try_wait().unwrap().is_some());
            if exited {
                let log = std::fs::read_to_string(&log).unwrap_or_default();
                assert!(log.contains("in use") || log.contains("bind"), "redis-server did not start:\n{log}");
                return false;
            }
            assert!(Instant::now() < deadline, "redis-server did not answer PING within 10 s");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the server (an outage: no graceful shutdown).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port, empty.
    pub fn restart(&mut self) {
        self.stop();
        assert!(self.spawn(), "redis-server did not restart on port {}", self.port);
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}
