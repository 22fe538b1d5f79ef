//! Tests of the real `portcullis` binary: signals, memory while streaming,
//! the event file sink and exit codes.

use crate::common;

use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http::{Request, Response};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};

fn write_config(dir: &std::path::Path, toml: &str) -> std::path::PathBuf {
    let path = dir.join("portcullis.toml");
    std::fs::write(&path, toml).unwrap();
    path
}

fn binary_config(upstream: std::net::SocketAddr, extra: &str) -> String {
    simple_config(upstream, &format!("[log]\nformat = \"json\"\n{extra}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_200_mb_each_way_with_rss_far_below_the_body_size() {
    const MB: u64 = 1024 * 1024;
    const TOTAL: u64 = 200 * MB;
    let up = upstream(|req: Request<Incoming>| async move {
        if req.uri().path() == "/download" {
            let chunks = futures_util::stream::iter(
                (0..TOTAL / (256 * 1024))
                    .map(|_| Ok::<_, portcullis_layers::BoxError>(Frame::data(Bytes::from(vec![9u8; 256 * 1024])))),
            );
            return Response::new(StreamBody::new(chunks).boxed_unsync());
        }
        let mut body = req.into_body();
        let mut received = 0u64;
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame.unwrap().into_data() {
                received += data.len() as u64;
            }
        }
        Response::new(portcullis_layers::full(received.to_string()))
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(
        dir.path(),
        &binary_config(up, "[server]\nmax_body_bytes = \"1GiB\"\n[events]\nsinks = [\"stderr\"]"),
    );
    let gw = Process::start(&path);
    let idle_kib = gw.rss_kib();

    let chunks = futures_util::stream::iter(
        (0..TOTAL / (256 * 1024))
            .map(|_| Ok::<_, portcullis_layers::BoxError>(Frame::data(Bytes::from(vec![1u8; 256 * 1024])))),
    );
    let req = Request::post(format!("http://{}/upload", gw.addr)).body(StreamBody::new(chunks).boxed_unsync()).unwrap();
    let (parts, body) = send(req).await;
    assert_eq!(parts.status, 200);
    assert_eq!(body, TOTAL.to_string());

    let response = client()
        .request(Request::get(format!("http://{}/download", gw.addr)).body(portcullis_layers::empty()).unwrap())
        .await
        .unwrap();
    let mut body = response.into_body();
    let mut received = 0u64;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            received += data.len() as u64;
        }
    }
    assert_eq!(received, TOTAL);

    let peak_kib = gw.peak_rss_kib();
    eprintln!("gateway RSS: idle {idle_kib} KiB, peak {peak_kib} KiB while streaming 2 x {} MiB", TOTAL / MB);
    // Far below the body size: a buffering proxy would need > 200 MiB. The
    // growth is what streaming costs; the idle figure is mostly mimalloc's
    // per-thread heaps (one per worker and blocking thread).
    let growth_kib = peak_kib.saturating_sub(idle_kib);
    assert!(growth_kib < 48 * 1024, "RSS grew {growth_kib} KiB while streaming {} MiB", TOTAL / MB);
    assert!(peak_kib < 128 * 1024, "peak RSS {peak_kib} KiB while streaming {} MiB", TOTAL / MB);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_a_good_config_and_keeps_the_old_one_on_a_bad_config() {
    let (a, _) = named_upstream("a").await;
    let (b, _) = named_upstream("b").await;
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), &binary_config(a, ""));
    let gw = Process::start(&path);
    let url = format!("http://{}/x", gw.addr);
    assert_eq!(get(&url).await.1, "a /x");

    // Good config: same listener (as configured), another upstream.
    let good = binary_config(b, "");
    std::fs::write(&path, &good).unwrap();
    gw.signal("HUP");
    let mut ok = false;
    for _ in 0..100 {
        if get(&url).await.1 == "b /x" {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ok, "reload did not take effect: {:?}", gw.stderr.lock().unwrap());
    eventually("reload logged", Duration::from_secs(10), || gw.log_contains("configuration reloaded")).await;
    assert!(!gw.log_contains("read only at start"), "nothing restart-only changed: {:?}", gw.stderr.lock().unwrap());

    // Settings read only at start change too: the rest is applied, and the
    // warning names each one that waits for a restart (and nothing else).
    let partly =
        binary_config(a, "[server]\nworkers = 3\nmax_body_bytes = \"2MiB\"\n[events]\nsinks = [\"file:events.jsonl\"]");
    std::fs::write(&path, &partly).unwrap();
    gw.signal("HUP");
    eventually("partial reload logged", Duration::from_secs(10), || gw.log_contains("read only at start")).await;
    assert_eq!(get(&url).await.1, "a /x", "what can be applied was applied");
    let warning = gw.stderr.lock().unwrap().iter().find(|l| l.contains("read only at start")).cloned().unwrap();
    assert!(warning.contains("\"not_applied\":\"[server] workers, [events]\""), "{warning}");
    assert!(warning.contains("restart Portcullis to apply them"), "{warning}");

    // Bad config: refused with an error log; the previous one keeps serving.
    std::fs::write(&path, partly.replace("auth = \"public\"", "")).unwrap();
    gw.signal("HUP");
    eventually("reload refusal logged", Duration::from_secs(10), || gw.log_contains("reload refused")).await;
    assert!(gw.log_contains("does not state `auth`"));
    assert_eq!(get(&url).await.1, "a /x");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_an_in_flight_slow_request_then_exits() {
    let up = upstream(|_req: Request<Incoming>| async {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        Response::new(portcullis_layers::full("finished"))
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), &binary_config(up, ""));
    let mut gw = Process::start(&path);
    let url = format!("http://{}/slow", gw.addr);
    let in_flight = tokio::spawn(async move { get(&url).await });
    // Wait until the request is in flight at the gateway (the access log line
    // is written at the end, so watch the upstream side: give it a moment).
    tokio::time::sleep(Duration::from_millis(300)).await;
    gw.signal("TERM");
    eventually("stop accepting", Duration::from_secs(5), || gw.log_contains("stopped accepting")).await;
    // New connections are refused once the listener is closed.
    assert!(std::net::TcpStream::connect(gw.addr).is_err());
    let (parts, body) = in_flight.await.unwrap();
    assert_eq!(parts.status, 200);
    assert_eq!(body, "finished");
    assert_eq!(gw.wait_exit(Duration::from_secs(10)), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_go_to_the_configured_file_as_json_lines() {
    let (a, _) = named_upstream("a").await;
    let dir = tempfile::tempdir().unwrap();
    let toml = binary_config(a, "[events]\nsinks = [\"file:logs/events.jsonl\"]")
        .replace("match = { path = \"/**\" }", "match = { path = \"/only\" }");
    let path = write_config(dir.path(), &toml);
    let gw = Process::start(&path);
    let (parts, _) = get(&format!("http://{}/nope?api_key=hunter2", gw.addr)).await;
    assert_eq!(parts.status, 404);
    let file = dir.path().join("logs/events.jsonl");
    eventually("event written", Duration::from_secs(5), || {
        std::fs::read_to_string(&file).is_ok_and(|s| s.ends_with('\n') && s.contains("route.none"))
    })
    .await;
    let text = std::fs::read_to_string(&file).unwrap();
    // The start's audit row is an event too (`audit.appended`).
    let event: serde_json::Value = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|e| e["reason"] == "route.none")
        .unwrap();
    assert_eq!(event["request_id"], parts.headers["x-request-id"].to_str().unwrap());
    assert!(!text.contains("hunter2"));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
}

#[test]
fn exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let good = write_config(dir.path(), &simple_config("127.0.0.1:9".parse().unwrap(), ""));
    let run = |args: &[&str]| Command::new(binary()).args(args).output().unwrap();

    let out = run(&["check", "--config", good.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));

    let out = run(&["--version"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("portcullis "));

    let out = run(&["run"]);
    assert_eq!(out.status.code(), Some(2), "missing --config is bad usage");
    let out = run(&["frobnicate"]);
    assert_eq!(out.status.code(), Some(2));

    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[[listener]]\nbind = \"127.0.0.1:0\"\nbnid = 1\n").unwrap();
    for cmd in ["check", "run"] {
        let out = run(&[cmd, "--config", bad.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(2), "{cmd}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("bad.toml:3:1"), "{stderr}");
        assert!(stderr.contains("unknown field `bnid`"), "{stderr}");
    }

    let out = run(&["check", "--config", dir.path().join("missing.toml").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));

    // check also loads certificates: a broken one is a configuration error.
    std::fs::write(dir.path().join("broken.pem"), "not a certificate").unwrap();
    std::fs::write(dir.path().join("broken.key"), "not a key").unwrap();
    let tls = write_config(
        dir.path(),
        &simple_config("127.0.0.1:9".parse().unwrap(), "").replace(
            "bind = \"127.0.0.1:0\"",
            "bind = \"127.0.0.1:0\"\ntls = { cert = \"broken.pem\", key = \"broken.key\" }",
        ),
    );
    let out = run(&["check", "--config", tls.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("broken.pem"));

    // A runtime failure (port already taken) is exit code 1.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = write_config(
        dir.path(),
        &simple_config("127.0.0.1:9".parse().unwrap(), "")
            .replace("127.0.0.1:0", &taken.local_addr().unwrap().to_string()),
    );
    let out = run(&["run", "--config", busy.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
}

/// The quickstart as a user runs it (ports made ephemeral, data in a temp
/// directory, JSON logs so the harness can read the address): an API key
/// created with the CLI opens /private/**, nothing else does.
#[tokio::test]
async fn quickstart_serves_private_routes_to_a_key_from_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let quickstart =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/quickstart.toml")).unwrap();
    let toml = quickstart
        .replace("bind = \"127.0.0.1:8443\"", "bind = \"127.0.0.1:0\"")
        .replace("redirect_http = \"127.0.0.1:8080\"", "redirect_http = \"127.0.0.1:0\"")
        .replace("data_dir = \"../data\"", "data_dir = \"data\"")
        .replace("format = \"pretty\"", "format = \"json\"");
    assert_ne!(toml, quickstart);
    let path = write_config(dir.path(), &toml);
    let created = Command::new(binary())
        .args(["apikey", "create", "--config"])
        .arg(&path)
        .args(["--name", "quickstart", "--role", "viewer"])
        .output()
        .unwrap();
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));
    let key = String::from_utf8(created.stdout).unwrap().trim().to_owned();
    assert!(key.starts_with("pcl_"), "{key}");
    assert!(dir.path().join("data/portcullis.db").exists());

    let gw = Process::start(&path);
    let curl = |headers: &[&str], path: &str| {
        let mut cmd = Command::new("curl");
        cmd.args(["-sk", "-o", "-", "-w", "\n%{http_code}"]);
        for h in headers {
            cmd.args(["-H", h]);
        }
        let out = cmd.arg(format!("https://{}{path}", gw.addr)).output().expect("curl (scripts/test installs it)");
        let text = String::from_utf8(out.stdout).unwrap();
        let (body, code) = text.rsplit_once('\n').unwrap();
        (code.to_owned(), body.to_owned())
    };
    let (code, body) = curl(&[], "/private/hello");
    assert_eq!(code, "401", "{body}");
    assert!(body.contains("auth.missing"));
    let (code, body) = curl(&[&format!("Authorization: Bearer {key}")], "/private/hello");
    assert_eq!(code, "200", "{body}");
    let echoed: serde_json::Value = serde_json::from_str(&body).unwrap();
    let headers = &echoed["headers"];
    assert!(headers["x-portcullis-subject"].as_str().unwrap().starts_with("apikey:"), "{headers}");
    assert_eq!(headers["x-portcullis-roles"], "viewer");
    assert!(headers.get("authorization").is_none(), "the key is not forwarded: {headers}");
    assert!(!body.contains(&key));
    let (code, _) = curl(&[], "/api/hello");
    assert_eq!(code, "200", "public routes stay public");
}

/// `portcullis policy test` on the sample policy passes; a wrong expectation
/// fails with exit code 1 and says what was expected and what happened.
#[test]
fn policy_test_passes_the_sample_and_reports_a_failing_case_readably() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples");
    let config = format!("{root}/orders-api.toml");
    let run = |cases: &std::path::Path| {
        Command::new(binary()).args(["policy", "test", "--config", &config]).arg(cases).output().unwrap()
    };
    let ok = run(std::path::Path::new(&format!("{root}/policy/orders-api.cases.toml")));
    let stdout = String::from_utf8_lossy(&ok.stdout);
    assert_eq!(ok.status.code(), Some(0), "{stdout}{}", String::from_utf8_lossy(&ok.stderr));
    assert!(stdout.contains("0 failed"), "{stdout}");

    let dir = tempfile::tempdir().unwrap();
    let wrong = dir.path().join("wrong.toml");
    std::fs::write(
        &wrong,
        "[[case]]\nname = \"viewers may delete (wrong)\"\nmethod = \"DELETE\"\npath = \"/orders/7\"\nidentity = { subject = \"alice\", roles = [\"viewer\"] }\nexpect = \"allow\"\n\n[[case]]\npath = \"/health\"\nexpect = \"allow\"\n",
    )
    .unwrap();
    let failed = run(&wrong);
    let stdout = String::from_utf8_lossy(&failed.stdout);
    assert_eq!(failed.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("FAIL  viewers may delete (wrong)"), "{stdout}");
    assert!(stdout.contains("expected: allow"), "{stdout}");
    assert!(stdout.contains("got:      deny 403 authz.permission (route \"orders-write\")"), "{stdout}");
    assert!(stdout.contains("missing permission orders:write"), "{stdout}");
    assert!(stdout.contains("1 passed, 1 failed, 2 cases"), "{stdout}");

    let explain = Command::new(binary())
        .args(["policy", "explain", "--config", &config, "GET", "/users/alice/../bob/x", "--subject", "alice"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&explain.stdout);
    assert_eq!(explain.status.code(), Some(1));
    assert!(
        stdout.contains("path /users/alice/../bob/x → /users/bob/x") && stdout.contains("=> deny 403 authz.owner"),
        "{stdout}"
    );

    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[[case]]\npath = \"/x\"\nexpekt = \"allow\"\n").unwrap();
    let code = run(&bad).status.code();
    assert_eq!(code, Some(2), "an unusable cases file is a usage error");
}
