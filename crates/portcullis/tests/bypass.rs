//! The bypass corpus through the running gateway in front of a REAL Express
//! upstream (`tests/express-app`, Express 5, default routing: case-insensitive,
//! non-strict, matched against the raw percent-encoded path) whose `/admin`
//! handler records every call.
//!
//! Every spelling is sent as a raw request line (no client library tidies it
//! first) three times — anonymous, with a valid JWT without the `admin` role,
//! with an admin JWT — and once directly to Express. The verdict: Express's
//! `/admin` handler is called by no anonymous or role-less request, and by
//! the admin token exactly once per spelling the gateway routes to `/admin/**`.

use crate::common;

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use common::express::{Call, Express};
use common::*;
use jsonwebtoken::Algorithm;
use portcullis_policy::jwt::forge::TestKey;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ISS: &str = "https://idp.test/";

/// What the gateway does with a spelling, the same for every caller except
/// where the caller decides.
#[derive(Debug, Clone, Copy)]
enum Outcome {
    /// Routed to `/admin/**`: 401 anonymous, 403 without the role; the admin
    /// reaches Express's `/admin` handler, which sees this path (and query).
    Admin(&'static str),
    /// Refused with 400 and this reason for everyone.
    Refused(&'static str),
    /// Refused by the HTTP parser itself (400 before any layer, no JSON body).
    Unparsable,
    /// Not `/admin` at all: the public route, for everyone; Express answers
    /// with its catch-all, which sees this path.
    Public(&'static str),
}
use Outcome::{Admin, Public, Refused, Unparsable};

/// `(request target, what the gateway does, whether Express ITSELF routes the
/// target to its /admin handler when called directly)`.
///
/// The `true`s in the last column are the spellings the gateway must treat as
/// `/admin` (or refuse); a `false` next to `Admin(..)` is one the gateway
/// routes to `/admin/**` although Express would not have: stricter than
/// needed, never a bypass. The one row where Express says `/admin` and the
/// gateway says public (`/admin/%2e%2e`) is safe because the gateway forwards
/// the path it decided on (`/`), not the one Express would have routed.
const CORPUS: &[(&str, Outcome, bool)] = &[
    ("/admin", Admin("/admin"), true),
    ("/admin/users", Admin("/admin/users"), true),
    ("/admin/", Admin("/admin"), true),
    ("/admin//", Admin("/admin"), true),
    ("/admin?x", Admin("/admin?x"), true),
    ("/admin#frag", Admin("/admin"), true),
    ("http://localhost/admin", Admin("/admin"), true), // absolute-form
    // Case: Express matches case-insensitively; so must the gateway.
    ("/ADMIN", Admin("/ADMIN"), true),
    ("/Admin/", Admin("/Admin"), true),
    ("/%41DMIN", Admin("/ADMIN"), false),
    // Dot segments: Express does not resolve them, but a path-walking
    // upstream or a second proxy would; the gateway resolves them first.
    ("/admin/../admin", Admin("/admin"), true),
    ("/./admin", Admin("/admin"), false),
    ("/%2e%2e/admin", Admin("/admin"), false),
    ("/x/../admin", Admin("/admin"), false),
    ("/admin/%2e%2e", Public("/"), true),
    // Escaped unreserved characters, decoded once.
    ("/%61dmin", Admin("/admin"), false),
    ("/ad%6din", Admin("/admin"), false),
    // An escaped `%` before two hex digits: one decode gives another
    // escape, which a backend or framework decoding twice would act on.
    ("/%2561dmin", Refused("path.double_encoding"), false),
    ("/admin%252f", Refused("path.double_encoding"), false),
    ("/x/%252e%252e/admin", Refused("path.double_encoding"), false),
    // Dot segments after trimming (Windows/IIS trims trailing dots and
    // spaces) and dot look-alikes (NFKC): Express reads none as `..`.
    ("/x/..%20/admin", Refused("path.dot_segment"), false),
    ("/x/.../admin", Refused("path.dot_segment"), false),
    ("/x/%EF%BC%8E%EF%BC%8E/admin", Refused("path.dot_segment"), false),
    // Empty segments and `;` parameters (Tomcat/Spring `..;/`).
    ("//admin", Admin("/admin"), false),
    ("/admin;x=1", Admin("/admin"), false),
    ("/..;/admin", Admin("/admin"), false),
    ("/x/..;/admin", Admin("/admin"), false),
    // Encoded slashes and backslashes.
    ("/admin%2f", Refused("path.encoded_slash"), false),
    ("/admin%2Fusers", Refused("path.encoded_slash"), false),
    ("/%2e%2e%2fadmin", Refused("path.encoded_slash"), false),
    ("/admin/x%2f..%2f..", Refused("path.encoded_slash"), true),
    ("/%5cadmin", Refused("path.encoded_slash"), false),
    ("/admin\\", Refused("path.backslash"), false),
    ("/\\admin", Refused("path.backslash"), false),
    ("/a\\..\\admin", Refused("path.backslash"), false),
    // NUL and control characters.
    ("/admin%00", Refused("path.control"), false),
    ("/admin%09", Refused("path.control"), false),
    ("/admin\0", Unparsable, false), // raw NUL: both HTTP parsers refuse it
    // Overlong UTF-8 (`/` and `.` in two bytes).
    ("/%c0%afadmin", Refused("path.unicode"), false),
    ("/%c0%ae%c0%ae/admin", Refused("path.unicode"), false),
    // Unicode look-alikes: not `/admin` for Express (it matches the raw,
    // escaped path, and its case-insensitive regex has no `u` flag, so no
    // non-ASCII letter folds to an ASCII one), not for the gateway either.
    ("/%EF%BD%81dmin", Public("/%EF%BD%81dmin"), false), // fullwidth a
    ("/adm%C4%B1n", Public("/adm%C4%B1n"), false),       // dotless ı
    ("/ADM%C4%B0N", Public("/ADM%C4%B0N"), false),       // İ, whose lower case is i + U+0307
    ("/adm%E2%85%B0n", Public("/adm%E2%85%B0n"), false), // small roman numeral one
    // The same as raw UTF-8: Node's parser refuses it (400); the gateway
    // escapes it and forwards `/adm%C4%B1n`, the public path above.
    ("/admın", Public("/adm%C4%B1n"), false),
    // Trailing junk Express does not ignore.
    ("/admin%20", Public("/admin%20"), false),
    ("/admin.", Public("/admin."), false),
];

fn config(express: SocketAddr, key: &TestKey) -> String {
    format!(
        r#"
[[listener]]
name = "test"
bind = "127.0.0.1:0"

[[upstream]]
name = "express"
targets = ["http://{express}"]

[roles]
admin = {{ permissions = ["*"] }}
user = {{ permissions = ["profile:read"] }}

# The app's call log is for the test, which reads it directly: refused to
# every client of the gateway.
[[route]]
name = "calls"
match = {{ path = "/__calls/**" }}
upstream = "express"
auth = "public"
deny_ips = ["0.0.0.0/0", "::/0"]

[[route]]
name = "admin"
match = {{ path = "/admin/**" }}
upstream = "express"
auth = "jwt"
require = {{ roles = ["admin"] }}

[[route]]
name = "public"
match = {{ path = "/**" }}
upstream = "express"
auth = "public"

[auth.jwt]
issuer = "{ISS}"
audience = "api"
keys = [{{ pem = """{pem}""" }}]
"#,
        pem = key.public_pem.as_deref().unwrap()
    )
}

fn token(key: &TestKey, sub: &str, roles: &[&str]) -> String {
    let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
    key.token(&json!({"iss": ISS, "aud": "api", "sub": sub, "exp": now + 300, "roles": roles}))
}

/// Sends `GET <target> HTTP/1.1` as raw bytes and returns the status and the
/// (de-chunked) body.
async fn raw_get(addr: SocketAddr, target: &str, bearer: Option<&str>) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let auth = bearer.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    let request = format!("GET {target} HTTP/1.1\r\nHost: localhost\r\n{auth}Connection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response))
        .await
        .unwrap_or_else(|_| panic!("{target}: no complete answer within 10 s"))
        .unwrap();
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let chunked = head.lines().any(|l| l.eq_ignore_ascii_case("transfer-encoding: chunked"));
    (status, if chunked { dechunk(body) } else { body.to_owned() })
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap();
        if size == 0 {
            break;
        }
        out.push_str(&rest[..size]);
        body = &rest[size + 2..];
    }
    out
}

fn reason(body: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// The caller of one pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Caller {
    Anonymous,
    NoRole,
    Admin,
}

/// What the gateway must answer `caller` for `outcome`: status, and either the
/// gateway's reason code or the start of Express's body.
fn expected(outcome: Outcome, caller: Caller) -> (u16, String) {
    match (outcome, caller) {
        (Admin(_), Caller::Anonymous) => (401, "auth.missing".into()),
        (Admin(_), Caller::NoRole) => (403, "authz.role".into()),
        (Admin(path), Caller::Admin) => (200, format!("admin {path}")),
        (Refused(reason), _) => (400, reason.into()),
        (Unparsable, _) => (400, String::new()),
        (Public(path), _) => (200, format!("echo {path}")),
    }
}

#[tokio::test]
async fn no_spelling_of_admin_reaches_the_express_admin_handler_without_the_role() {
    let express = Express::start();
    let key = TestKey::generate(Algorithm::EdDSA, "k");
    let gw = gateway(&config(express.addr, &key)).await;
    let no_role = token(&key, "alice", &["user"]);
    let admin = token(&key, "root", &["admin"]);
    let mut failures = Vec::new();

    // 1. Express on its own: which spellings reach its /admin handler.
    for &(target, _, routes_to_admin) in CORPUS {
        let (status, body) = raw_get(express.addr, target, None).await;
        let reached = status == 200 && body.starts_with("admin ");
        if reached != routes_to_admin {
            failures.push(format!(
                "direct {target}: Express answered {status} {body:?}; routes to /admin expected {routes_to_admin}"
            ));
        }
    }
    let direct = express.admin_calls();
    let expected_direct = CORPUS.iter().filter(|c| c.2).count();
    assert_eq!(direct.len(), expected_direct, "direct calls: {direct:#?}");

    // 2. Through the gateway, three callers.
    let mut calls_before = direct.len();
    for (caller, bearer) in [(Caller::Anonymous, None), (Caller::NoRole, Some(&no_role)), (Caller::Admin, Some(&admin))]
    {
        for &(target, outcome, _) in CORPUS {
            let (status, body) = raw_get(gw.addr, target, bearer.map(String::as_str)).await;
            let (want_status, want) = expected(outcome, caller);
            let got = if status == 200 { body.clone() } else { reason(&body) };
            let ok = status == want_status && if status == 200 { got.starts_with(&want) } else { got == want };
            if !ok {
                failures.push(format!("{caller:?} {target}: {status} {got:?}, expected {want_status} {want:?}"));
            }
        }
        let calls = express.admin_calls();
        let new: Vec<Call> = calls[calls_before..].to_vec();
        calls_before = calls.len();
        let want: Vec<Call> = match caller {
            Caller::Anonymous | Caller::NoRole => vec![],
            Caller::Admin => CORPUS
                .iter()
                .filter_map(|c| match c.1 {
                    Admin(path) => Some(Call { method: "GET".into(), original_url: path.into() }),
                    _ => None,
                })
                .collect(),
        };
        if new != want {
            failures.push(format!("{caller:?}: Express's /admin handler recorded {new:#?}, expected {want:#?}"));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}\nexpress stderr: {:?}", express.stderr());

    // The call log itself is not reachable through the gateway, in any spelling.
    for target in ["/__calls", "/__CALLS/", "/%5f_calls"] {
        let (status, body) = raw_get(gw.addr, target, Some(&admin)).await;
        assert_eq!((status, reason(&body)), (403, "ip.denied".to_owned()), "{target}");
    }
    // Every refusal became an event naming the path as sent.
    let events = gw.events.0.lock().unwrap().clone();
    assert!(events.iter().any(|e| e.reason == "path.unicode" && e.path == "/%c0%afadmin"));
    assert!(events.iter().any(|e| e.reason == "authz.role" && e.path == "/..;/admin"));
}

/// Why `[paths] case` defaults to `"insensitive"`: a gateway matching
/// case-sensitively in front of Express lets an anonymous `/ADMIN` through to
/// the `/admin` handler. Also shows the harness catches a real bypass.
#[tokio::test]
async fn case_sensitive_matching_in_front_of_express_is_a_bypass() {
    let express = Express::start();
    let key = TestKey::generate(Algorithm::EdDSA, "k");
    let toml = config(express.addr, &key).replace("[auth.jwt]", "[paths]\ncase = \"sensitive\"\n\n[auth.jwt]");
    let gw = gateway(&toml).await;
    assert_eq!(raw_get(gw.addr, "/admin", None).await.0, 401);
    assert_eq!(raw_get(gw.addr, "/ADMIN", None).await, (200, "admin /ADMIN".to_owned()));
    assert_eq!(express.admin_calls(), [Call { method: "GET".into(), original_url: "/ADMIN".into() }]);
}
