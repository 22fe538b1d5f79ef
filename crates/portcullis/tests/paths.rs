//! Path normalization through the running gateway: spellings of `/admin`
//! reach the upstream only as `/admin` and only for authenticated callers;
//! unsafe paths are refused with 400 and an event.

use crate::common;

use std::sync::{Arc, Mutex};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// An upstream that records every path it receives.
async fn recording_upstream() -> (std::net::SocketAddr, Arc<Mutex<Vec<String>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let addr = upstream(move |req| {
        let log = log.clone();
        async move {
            log.lock().unwrap().push(req.uri().to_string());
            http::Response::new(portcullis_layers::full("ok"))
        }
    })
    .await;
    (addr, seen)
}

fn config(up: std::net::SocketAddr) -> String {
    format!(
        r#"
[[listener]]
name = "test"
bind = "127.0.0.1:0"

[[upstream]]
name = "app"
targets = ["http://{up}"]

[[route]]
name = "admin"
match = {{ path = "/admin/**" }}
upstream = "app"
auth = "jwt"

[[route]]
name = "public"
match = {{ path = "/**" }}
upstream = "app"
auth = "public"

[auth.jwt]
issuer = "https://idp.test/"
audience = "api"
keys = [{{ pem = """{pem}""" }}]
"#,
        pem = portcullis_policy::jwt::forge::TestKey::generate(jsonwebtoken::Algorithm::EdDSA, "k").public_pem.unwrap()
    )
}

/// Sends a raw HTTP/1.1 request line (clients would normalize some of these
/// themselves) and returns the status code.
async fn raw_get(addr: std::net::SocketAddr, target: &str) -> u16 {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let text = String::from_utf8_lossy(&response);
    text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
}

#[tokio::test]
async fn no_spelling_of_admin_reaches_the_upstream_without_authentication() {
    let (up, seen) = recording_upstream().await;
    let gw = gateway(&config(up)).await;
    let corpus = [
        ("/admin", 401),
        ("/admin/users", 401),
        ("/admin/../admin", 401),
        ("/%61dmin", 401),
        ("//admin", 401),
        ("/ADMIN", 401),
        ("/Admin/", 401),
        ("/admin;x=1", 401),
        ("/./admin", 401),
        ("/%2e%2e/admin", 401),
        ("/x/..%2Fadmin", 400),
        ("/admin%2f", 400),
        ("/admin%2Fusers", 400),
        ("/admin%00", 400),
        // An escaped "%" before two hex digits: a backend decoding twice would
        // read "/admin/" or "../admin".
        ("/admin%252f", 400),
        ("/x/%252e%252e/admin", 400),
        // Segments Windows trims to "..".
        ("/x/..%20/admin", 400),
        ("/x/.../admin", 400),
        ("/admin.", 200), // not /admin/**: the public route, as the upstream sees it
        ("/admin\\", 400),
        ("/%5cadmin", 400),
        ("/%c0%afadmin", 400),
        ("/%c0%ae%c0%ae/admin", 400),
        ("/%zz/admin", 400),
    ];
    let mut failures = Vec::new();
    for (target, expected) in corpus {
        let status = raw_get(gw.addr, target).await;
        if status != expected {
            failures.push(format!("{target}: {status}, expected {expected}"));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
    let reached: Vec<String> = seen.lock().unwrap().clone();
    assert!(reached.iter().all(|p| !p.to_ascii_lowercase().starts_with("/admin/") && p != "/admin"), "{reached:?}");
    assert_eq!(reached, ["/admin."], "only the one public path reached the upstream");
    // Refusals are events with the path as sent.
    let events = gw.events.0.lock().unwrap().clone();
    let control = events.iter().find(|e| e.reason == "path.control").unwrap();
    assert_eq!(control.path, "/admin%00");
    assert!(events.iter().any(|e| e.reason == "path.unicode"));
    assert!(events.iter().any(|e| e.reason == "path.encoded_slash"));
}

#[tokio::test]
async fn the_upstream_receives_the_normalized_path_and_the_query_as_sent() {
    let (up, seen) = recording_upstream().await;
    let gw = gateway(&config(up)).await;
    assert_eq!(raw_get(gw.addr, "/a//b/./c/../d;v=1/%7Euser?x=%2F..&y=1").await, 200);
    assert_eq!(seen.lock().unwrap().last().unwrap(), "/a/b/d/~user?x=%2F..&y=1");
}

#[tokio::test]
async fn alternatives_are_configurable() {
    let (up, seen) = recording_upstream().await;
    let toml = config(up).replace(
        "[auth.jwt]",
        "[paths]\ncase = \"sensitive\"\nencoded_slash = \"keep\"\ntrailing_slash = \"keep\"\n\n[auth.jwt]",
    );
    let gw = gateway(&toml).await;
    // Case-sensitive: /ADMIN is another path (the public route).
    assert_eq!(raw_get(gw.addr, "/ADMIN").await, 200);
    assert_eq!(raw_get(gw.addr, "/files/a%2fb/").await, 200);
    assert_eq!(seen.lock().unwrap().clone(), ["/ADMIN", "/files/a%2Fb/"]);
    assert_eq!(raw_get(gw.addr, "/admin/x").await, 401);
}
