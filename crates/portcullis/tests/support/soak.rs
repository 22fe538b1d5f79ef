//! The soak's traffic, shared by `bench/soak` (through `examples/soak.rs`: a
//! million requests against the release binary) and `tests/soak.rs` (a few
//! thousand against the gateway in process), so the mix and the client the
//! soak relies on are exercised by every test run and cannot rot.
//!
//! - [`Files::write`] writes a gateway configuration with every defence on
//!   (IP lists, path normalization, routing, body limit, rate limits, JWT, API
//!   keys, CSRF, the WAF on OWASP CRS, OpenAPI validation), its OpenAPI
//!   document and a fresh ES256 issuer key.
//! - [`MIX`] is the traffic: each kind of request with the status and reason
//!   code it must get and its share; every defence gets requests it must let
//!   through and requests it must refuse.
//! - [`drive`] sends the mix over keep-alive connections, with every
//!   [`Options::fresh_every`]-th request on a fresh connection, and counts
//!   every answer that is not the expected one: another status, another
//!   reason in the error body, a 2xx that did not come from the upstream, or
//!   no answer at all.
//! - [`Upstream`] answers 200 after reading the whole body and counts the
//!   requests it saw, so the run can check that exactly the admitted requests
//!   reached it; [`Metrics`] reads the admin listener's event counters, which
//!   must match the refusals the client counted, reason by reason.
//!
//! Deployment caveat: test and benchmark tooling. The tokens come from the
//! test-only forge (`portcullis_policy` feature `testing`), the admin token
//! and CSRF secret are constants, and the client trusts the gateway to be on
//! loopback.

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use jsonwebtoken::{Algorithm, EncodingKey};
use portcullis_policy::jwt::forge::{TestKey, sign_with};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};

/// Errors of the tooling (never of the gateway: those are counted).
pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// The admin listener's bearer token.
pub const ADMIN_TOKEN: &str = "soak-admin-token-not-a-secret-0123456789abcdef";
/// The JWT issuer and audience of the configuration.
pub const ISSUER: &str = "https://issuer.soak.test/";
pub const AUDIENCE: &str = "soak";
const KID: &str = "soak";
/// Refused by `[access] deny_ips` (reached through `X-Forwarded-For` from the
/// trusted loopback client).
const DENIED_EVERYWHERE: &str = "203.0.113.7";
/// Refused by the `partner` route's `deny_ips`.
const DENIED_PARTNER: &str = "198.51.100.9";
/// The `upload` route's body limit, and a body over it.
const UPLOAD_LIMIT: usize = 1024;
/// A header the upstream sets: a 2xx without it was not proxied.
const UPSTREAM_MARK: &str = "x-soak-upstream";
/// How long one request may take before it counts as unanswered.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Unexpected answers kept for the report, per run.
const SAMPLES: usize = 20;

/// Where the pieces listen.
#[derive(Debug, Clone, Copy)]
pub struct Addresses {
    pub upstream: SocketAddr,
    pub listen: SocketAddr,
    pub admin: SocketAddr,
}

/// The files of one soak setup, in one directory (absolute paths).
#[derive(Debug, Clone)]
pub struct Files {
    pub dir: PathBuf,
}

impl Files {
    /// Writes `portcullis.toml`, `openapi.json` and a fresh ES256 key pair
    /// (`jwt-public.pem`, `jwt-private.pem`) into `dir`, which must exist.
    ///
    /// # Errors
    /// When `dir` or `crs` cannot be resolved or a file cannot be written.
    pub fn write(dir: &Path, addrs: &Addresses, crs: &Path) -> Result<Self, Error> {
        let files = Self { dir: std::fs::canonicalize(dir)? };
        let crs = std::fs::canonicalize(crs).map_err(|e| format!("CRS directory {}: {e}", crs.display()))?;
        let key = TestKey::generate(Algorithm::ES256, KID);
        let public = key.public_pem.as_deref().ok_or("the ES256 key has no public PEM")?;
        std::fs::write(files.path("jwt-public.pem"), public)?;
        std::fs::write(files.path("jwt-private.pem"), &key.private)?;
        std::fs::write(files.path("openapi.json"), serde_json::to_vec_pretty(&openapi_document())?)?;
        std::fs::write(files.config(), config(&files, addrs, &crs))?;
        Ok(files)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The configuration file.
    #[must_use]
    pub fn config(&self) -> PathBuf {
        self.path("portcullis.toml")
    }

    /// The API-key store, as `[state] store` names it.
    #[must_use]
    pub fn store_url(&self) -> String {
        format!("sqlite://{}", self.path("keys.db").display())
    }

    /// The issuer's signing key written by [`Files::write`].
    ///
    /// # Errors
    /// When the key file is missing or is not an EC private key.
    pub fn signing_key(&self) -> Result<EncodingKey, Error> {
        let pem = std::fs::read(self.path("jwt-private.pem"))?;
        Ok(EncodingKey::from_ec_pem(&pem)?)
    }
}

/// The OpenAPI document of the `orders` route (NestJS-shaped).
fn openapi_document() -> Value {
    json!({
        "openapi": "3.0.0",
        "info": { "title": "Soak orders", "version": "1.0" },
        "paths": {
            "/orders": {
                "post": {
                    "requestBody": {
                        "required": true,
                        "content": { "application/json": { "schema": { "$ref": "#/components/schemas/CreateOrderDto" } } }
                    },
                    "responses": { "201": { "description": "" } }
                }
            },
            "/orders/{id}": {
                "get": {
                    "parameters": [ { "name": "id", "required": true, "in": "path", "schema": { "type": "integer", "minimum": 1 } } ],
                    "responses": { "200": { "description": "" } }
                }
            }
        },
        "components": {
            "schemas": {
                "CreateOrderDto": {
                    "type": "object",
                    "additionalProperties": false,
                    "properties": {
                        "customer": { "type": "string", "maxLength": 64 },
                        "quantity": { "type": "integer", "minimum": 1 },
                        "lines": { "type": "array", "items": { "type": "object", "properties": { "sku": { "type": "string" } } } }
                    },
                    "required": ["customer", "quantity"]
                }
            }
        }
    })
}

fn config(files: &Files, addrs: &Addresses, crs: &Path) -> String {
    let dir = files.dir.display();
    let crs = crs.display();
    let store = files.store_url();
    let Addresses { upstream, listen, admin } = addrs;
    format!(
        r#"# Written by the soak (crates/portcullis/tests/support/soak.rs): every defence on,
# each with routes the mix must get through and requests it must refuse.
[server]
data_dir = "{dir}/data"
# The soak client is the trusted proxy: X-Forwarded-For picks the client address
# the IP lists judge (and exempts it from max_connections_per_ip).
trusted_proxies = ["127.0.0.1/32"]
shutdown_timeout = "5s"

[[listener]]
name = "public"
bind = "{listen}"

[admin]
bind = "{admin}"
token = "{ADMIN_TOKEN}"

[[upstream]]
name = "app"
targets = ["http://{upstream}"]

[log]
format = "json"
level = "warn"
access = false

[events]
sinks = ["file:{dir}/events.jsonl"]

[state]
store = "{store}"

[auth.jwt]
issuer = "{ISSUER}"
audience = "{AUDIENCE}"
algorithms = ["ES256"]
keys = [{{ kid = "{KID}", pem_file = "{dir}/jwt-public.pem" }}]

[auth.api_key]

[access]
deny_ips = ["203.0.113.0/24"]

[limits.per_ip]
key = "ip"
rate = "100000000/s"

[limits.closed]
key = "route"
rate = "1/hour"
burst = 1

[csrf]
mode = "origin+token"
secret = "soak-csrf-secret-not-a-secret-0123456789abcdef"

[waf]
rules = "{crs}"
mode = "off"

[openapi.orders]
source = "{dir}/openapi.json"
base_path = "/api"

[[route]]
name = "public"
match = {{ path = "/public/**", methods = ["GET", "POST"] }}
upstream = "app"
auth = "public"
limits = ["per_ip"]

[[route]]
name = "jwt"
match = {{ path = "/jwt/**" }}
upstream = "app"
auth = "jwt"

[[route]]
name = "keys"
match = {{ path = "/keys/**" }}
upstream = "app"
auth = "api_key"

[[route]]
name = "closed"
match = {{ path = "/closed" }}
upstream = "app"
auth = "public"
limits = ["closed"]

[[route]]
name = "search"
match = {{ path = "/search" }}
upstream = "app"
auth = "public"
waf = "block"

[[route]]
name = "contact"
match = {{ path = "/contact", methods = ["POST"] }}
upstream = "app"
auth = "public"
csrf = true

[[route]]
name = "orders"
match = {{ path = "/api/**" }}
upstream = "app"
auth = "public"
openapi = "orders"

[[route]]
name = "upload"
match = {{ path = "/upload", methods = ["POST"] }}
upstream = "app"
auth = "public"
max_body_bytes = "{UPLOAD_LIMIT}"

[[route]]
name = "partner"
match = {{ path = "/partner/**" }}
upstream = "app"
auth = "public"
deny_ips = ["198.51.100.0/24"]
"#
    )
}

/// What the client needs besides the gateway's address: credentials made
/// once, before the run.
pub struct Credentials {
    /// The issuer's key, for tokens made per request.
    signing: EncodingKey,
    /// A valid token every `jwt_cached` request repeats.
    jwt: String,
    jwt_expired: String,
    /// Signed by another key under the issuer's `kid`.
    jwt_forged: String,
    api_key: String,
    /// A CSRF token from `GET /.portcullis/csrf` (no session: bound to no one).
    csrf: String,
    /// `http://HOST:PORT` as the client addresses the gateway.
    origin: String,
    host: HeaderValue,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials").field("origin", &self.origin).finish_non_exhaustive()
    }
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl Credentials {
    /// Makes the tokens, and asks the gateway for a CSRF token.
    ///
    /// # Errors
    /// When the gateway does not hand out a CSRF token.
    pub async fn new(files: &Files, gateway: SocketAddr, api_key: String) -> Result<Self, Error> {
        let signing = files.signing_key()?;
        let now = unix_now();
        let claims = |sub: &str, exp: u64| json!({"iss": ISSUER, "aud": AUDIENCE, "sub": sub, "iat": now, "exp": exp});
        let header = json!({"alg": "ES256", "typ": "JWT", "kid": KID});
        let jwt = sign_with(&signing, Algorithm::ES256, &header, &claims("soak-cached", now + 24 * 3600));
        // Expired an hour ago: far beyond the 30 s leeway.
        let jwt_expired = sign_with(&signing, Algorithm::ES256, &header, &claims("soak-expired", now - 3600));
        let other = TestKey::generate(Algorithm::ES256, KID);
        let jwt_forged = other.sign(&header, &claims("soak-admin", now + 24 * 3600));
        let host = HeaderValue::from_str(&gateway.to_string())?;
        let answer = send_once(gateway, get(&host, "/.portcullis/csrf")).await?;
        let (status, body) = answer;
        let token = serde_json::from_slice::<Value>(&body).ok().and_then(|v| v["token"].as_str().map(str::to_owned));
        let csrf = match (status, token) {
            (StatusCode::OK, Some(token)) => token,
            _ => {
                return Err(
                    format!("GET /.portcullis/csrf answered {status}: {}", String::from_utf8_lossy(&body)).into()
                );
            }
        };
        Ok(Self { signing, jwt, jwt_expired, jwt_forged, api_key, csrf, origin: format!("http://{gateway}"), host })
    }

    /// A valid token nobody sent before (full verification, then cached).
    fn fresh_jwt(&self, seq: u64) -> String {
        let now = unix_now();
        let header = json!({"alg": "ES256", "typ": "JWT", "kid": KID});
        let claims = json!({"iss": ISSUER, "aud": AUDIENCE, "sub": format!("user-{}", seq % 997), "jti": seq, "iat": now, "exp": now + 600});
        sign_with(&self.signing, Algorithm::ES256, &header, &claims)
    }
}

/// A request of the mix, before it becomes an `http::Request`.
#[derive(Debug)]
pub struct Outgoing {
    method: Method,
    path: String,
    headers: Vec<(&'static str, String)>,
    body: Payload,
}

#[derive(Debug)]
enum Payload {
    Empty,
    /// Sent with `Content-Length`.
    Sized(Bytes),
    /// Sent chunked, in pieces of this many bytes.
    Chunked(Bytes, usize),
}

impl Outgoing {
    fn new(method: Method, path: impl Into<String>) -> Self {
        Self { method, path: path.into(), headers: Vec::new(), body: Payload::Empty }
    }
    fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }
    fn bearer(self, credential: &str) -> Self {
        self.header("authorization", format!("Bearer {credential}"))
    }
    fn json(mut self, body: impl Into<Bytes>) -> Self {
        self.body = Payload::Sized(body.into());
        self.header("content-type", "application/json")
    }
    fn chunked(mut self, body: impl Into<Bytes>, piece: usize) -> Self {
        self.body = Payload::Chunked(body.into(), piece);
        self.header("content-type", "application/octet-stream")
    }
}

type Body = BoxBody<Bytes, Infallible>;

fn into_request(outgoing: Outgoing, host: &HeaderValue, close: bool) -> Result<Request<Body>, Error> {
    let mut builder = Request::builder().method(outgoing.method).uri(outgoing.path).header("host", host.clone());
    for (name, value) in outgoing.headers {
        builder = builder.header(name, value);
    }
    if close {
        builder = builder.header("connection", "close");
    }
    let body = match outgoing.body {
        Payload::Empty => Full::new(Bytes::new()).boxed(),
        Payload::Sized(bytes) => Full::new(bytes).boxed(),
        Payload::Chunked(bytes, piece) => {
            let frames: Vec<Result<Frame<Bytes>, Infallible>> = (0..bytes.len())
                .step_by(piece.max(1))
                .map(|at| Ok(Frame::data(bytes.slice(at..(at + piece).min(bytes.len())))))
                .collect();
            StreamBody::new(futures_util::stream::iter(frames)).boxed()
        }
    };
    Ok(builder.body(body)?)
}

fn get(host: &HeaderValue, path: &str) -> Request<Body> {
    let mut request = Request::new(Full::new(Bytes::new()).boxed());
    *request.uri_mut() = http::Uri::try_from(path).unwrap_or_default();
    request.headers_mut().insert("host", host.clone());
    request
}

/// One kind of request: what it sends, what it must get, its share.
pub struct Kind {
    pub name: &'static str,
    /// Requests of this kind per [`MIX_WEIGHT`] requests.
    pub weight: u32,
    pub status: u16,
    /// The reason code of the error body (and of the one event); `None` for
    /// answers that must come from the upstream.
    pub reason: Option<&'static str>,
    /// What the request is, for the report.
    pub what: &'static str,
    build: fn(&Credentials, u64) -> Outgoing,
}

impl std::fmt::Debug for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kind").field("name", &self.name).field("status", &self.status).finish_non_exhaustive()
    }
}

/// SQL injections CRS refuses, each matching some rules of its own.
const SQL_INJECTIONS: [&str; 10] = [
    "1%20or%201=1",
    "1%20AND%20SLEEP(5)",
    "x'%20or%20'a'='a",
    "1)%20union%20select%201,2,3--",
    "1%20union%20all%20select%20null,version()",
    "admin'--",
    "1;%20select%20pg_sleep(5)",
    "1'%20having%201=1--",
    "1%20order%20by%201--",
    "benchmark(1000000,md5(1))",
];

const ORDER: &str = r#"{"customer":"Ann Example","quantity":3,"lines":[{"sku":"abc-1"},{"sku":"xyz-22"}]}"#;

/// The traffic. Weights add up to [`MIX_WEIGHT`]; a third are refusals.
pub const MIX: &[Kind] = &[
    // --- let through ---
    Kind {
        name: "public_get",
        weight: 210,
        status: 200,
        reason: None,
        what: "GET /public/items/{n}?page=2 (rate limit checked, passes)",
        build: |_, seq| Outgoing::new(Method::GET, format!("/public/items/{}?page=2", seq % 5000)),
    },
    Kind {
        name: "public_post",
        weight: 70,
        status: 200,
        reason: None,
        what: "POST /public/items, 80-byte JSON body",
        build: |_, _| Outgoing::new(Method::POST, "/public/items").json(ORDER),
    },
    Kind {
        name: "public_post_chunked",
        weight: 20,
        status: 200,
        reason: None,
        what: "POST /public/blobs, 16 KiB chunked body",
        build: |_, _| Outgoing::new(Method::POST, "/public/blobs").chunked(Bytes::from(vec![b'x'; 16 * 1024]), 4096),
    },
    Kind {
        name: "jwt_cached",
        weight: 90,
        status: 200,
        reason: None,
        what: "GET /jwt/profile, the same valid ES256 token (verified-token cache)",
        build: |c, _| Outgoing::new(Method::GET, "/jwt/profile").bearer(&c.jwt),
    },
    Kind {
        name: "jwt_fresh",
        weight: 40,
        status: 200,
        reason: None,
        what: "GET /jwt/profile, a valid token never sent before (full verification)",
        build: |c, seq| Outgoing::new(Method::GET, "/jwt/profile").bearer(&c.fresh_jwt(seq)),
    },
    Kind {
        name: "apikey_valid",
        weight: 70,
        status: 200,
        reason: None,
        what: "GET /keys/report, a key from `portcullis apikey create`",
        build: |c, _| Outgoing::new(Method::GET, "/keys/report").bearer(&c.api_key),
    },
    Kind {
        name: "waf_pass_repeat",
        weight: 30,
        status: 200,
        reason: None,
        what: "GET /search?q=blue+garden+chairs (WAF verdict cache)",
        build: |_, _| Outgoing::new(Method::GET, "/search?q=blue+garden+chairs&page=1"),
    },
    Kind {
        name: "waf_pass_unique",
        weight: 30,
        status: 200,
        reason: None,
        what: "GET /search?q=item-{n} (every one inspected by CRS)",
        build: |_, seq| Outgoing::new(Method::GET, format!("/search?q=item-{seq}&sort=price")),
    },
    Kind {
        name: "waf_pass_post",
        weight: 10,
        status: 200,
        reason: None,
        what: "POST /search, JSON body inspected by CRS",
        build: |_, seq| {
            Outgoing::new(Method::POST, "/search").json(format!(r#"{{"q":"garden chairs","page":{}}}"#, seq % 50))
        },
    },
    Kind {
        name: "csrf_pass",
        weight: 20,
        status: 200,
        reason: None,
        what: "POST /contact, same origin with the CSRF cookie and header",
        build: |c, _| {
            Outgoing::new(Method::POST, "/contact")
                .header("origin", c.origin.clone())
                .header("cookie", format!("portcullis-csrf={}", c.csrf))
                .header("x-csrf-token", c.csrf.clone())
                .json(r#"{"message":"hello"}"#)
        },
    },
    Kind {
        name: "openapi_valid",
        weight: 30,
        status: 200,
        reason: None,
        what: "POST /api/orders, a body the OpenAPI schema accepts",
        build: |_, _| Outgoing::new(Method::POST, "/api/orders").json(ORDER),
    },
    Kind {
        name: "openapi_get",
        weight: 10,
        status: 200,
        reason: None,
        what: "GET /api/orders/{id}, a valid path parameter",
        build: |_, seq| Outgoing::new(Method::GET, format!("/api/orders/{}", seq % 900 + 1)),
    },
    Kind {
        name: "partner_allowed",
        weight: 10,
        status: 200,
        reason: None,
        what: "GET /partner/status from an address the route does not deny",
        build: |_, _| Outgoing::new(Method::GET, "/partner/status"),
    },
    Kind {
        name: "upload_small",
        weight: 10,
        status: 200,
        reason: None,
        what: "POST /upload, 512 bytes (under the route's 1 KiB limit)",
        build: |_, _| Outgoing::new(Method::POST, "/upload").json(Bytes::from(vec![b' '; UPLOAD_LIMIT / 2])),
    },
    // --- refused ---
    Kind {
        name: "route_none",
        weight: 40,
        status: 404,
        reason: Some("route.none"),
        what: "GET /nowhere/{n}",
        build: |_, seq| Outgoing::new(Method::GET, format!("/nowhere/{}", seq % 1000)),
    },
    Kind {
        name: "route_method",
        weight: 25,
        status: 405,
        reason: Some("route.method"),
        what: "DELETE /public/items/1",
        build: |_, _| Outgoing::new(Method::DELETE, "/public/items/1"),
    },
    Kind {
        name: "path_encoded_slash",
        weight: 10,
        status: 400,
        reason: Some("path.encoded_slash"),
        what: "GET /public/a%2Fb",
        build: |_, _| Outgoing::new(Method::GET, "/public/a%2Fb"),
    },
    Kind {
        name: "path_control",
        weight: 10,
        status: 400,
        reason: Some("path.control"),
        what: "GET /public/a%00b",
        build: |_, _| Outgoing::new(Method::GET, "/public/a%00b"),
    },
    Kind {
        name: "path_unicode",
        weight: 10,
        status: 400,
        reason: Some("path.unicode"),
        what: "GET /public/%C0%AE%C0%AE/x (overlong UTF-8)",
        build: |_, _| Outgoing::new(Method::GET, "/public/%C0%AE%C0%AE/x"),
    },
    Kind {
        name: "path_encoding",
        weight: 5,
        status: 400,
        reason: Some("path.encoding"),
        what: "GET /public/a%zzb (malformed escape)",
        build: |_, _| Outgoing::new(Method::GET, "/public/a%zzb"),
    },
    Kind {
        name: "auth_missing",
        weight: 15,
        status: 401,
        reason: Some("auth.missing"),
        what: "GET /jwt/profile without a credential",
        build: |_, _| Outgoing::new(Method::GET, "/jwt/profile"),
    },
    Kind {
        name: "jwt_expired",
        weight: 20,
        status: 401,
        reason: Some("jwt.expired"),
        what: "GET /jwt/profile, a token expired an hour ago",
        build: |c, _| Outgoing::new(Method::GET, "/jwt/profile").bearer(&c.jwt_expired),
    },
    Kind {
        name: "jwt_forged",
        weight: 20,
        status: 401,
        reason: Some("jwt.bad_signature"),
        what: "GET /jwt/profile, a token signed by another key under the issuer's kid",
        build: |c, _| Outgoing::new(Method::GET, "/jwt/profile").bearer(&c.jwt_forged),
    },
    Kind {
        name: "jwt_malformed",
        weight: 10,
        status: 401,
        reason: Some("jwt.malformed"),
        what: "GET /jwt/profile, Bearer of three non-JSON parts",
        build: |_, seq| Outgoing::new(Method::GET, "/jwt/profile").bearer(&format!("abc.def{seq}.ghi")),
    },
    Kind {
        name: "apikey_unknown",
        weight: 20,
        status: 401,
        reason: Some("apikey.unknown"),
        what: "GET /keys/report, a well-formed key with an id not in the store (store queried)",
        build: |_, seq| {
            Outgoing::new(Method::GET, "/keys/report").bearer(&format!("pcl_{:016x}_{}", mix64(seq), "A".repeat(43)))
        },
    },
    Kind {
        name: "apikey_malformed",
        weight: 10,
        status: 401,
        reason: Some("apikey.malformed"),
        what: "GET /keys/report, Bearer pcl_ with a short id",
        build: |_, _| Outgoing::new(Method::GET, "/keys/report").bearer("pcl_1234_short"),
    },
    Kind {
        name: "ratelimit",
        weight: 30,
        status: 429,
        reason: Some("ratelimit.exceeded"),
        what: "GET /closed (route limit 1/hour, spent before the run)",
        build: |_, _| Outgoing::new(Method::GET, "/closed"),
    },
    Kind {
        name: "waf_sqli",
        weight: 15,
        status: 403,
        reason: Some("waf.sqli"),
        what: "GET /search?q=1' UNION SELECT password FROM users--",
        build: |_, _| Outgoing::new(Method::GET, "/search?q=1%27%20UNION%20SELECT%20password%20FROM%20users--"),
    },
    Kind {
        name: "waf_sqli_varied",
        weight: 10,
        status: 403,
        reason: Some("waf.sqli"),
        what: "GET /search with 1 to 10 of 10 SQL injections, a different set per request (different CRS rules match)",
        build: |_, seq| {
            let pick = mix64(seq) % 1023 + 1;
            let mut path = String::from("/search?");
            for (bit, injection) in SQL_INJECTIONS.iter().enumerate() {
                if pick & (1 << bit) != 0 {
                    let _ = write!(path, "p{bit}={injection}&");
                }
            }
            path.push_str("page=1");
            Outgoing::new(Method::GET, path)
        },
    },
    Kind {
        name: "waf_xss",
        weight: 10,
        status: 403,
        reason: Some("waf.xss"),
        what: "POST /search, JSON body with <script>",
        build: |_, seq| {
            Outgoing::new(Method::POST, "/search")
                .json(format!(r#"{{"q":"<script>alert(document.cookie)</script>","n":{}}}"#, seq % 100))
        },
    },
    Kind {
        name: "csrf_origin",
        weight: 15,
        status: 403,
        reason: Some("csrf.origin"),
        what: "POST /contact from Origin: https://evil.example",
        build: |_, _| {
            Outgoing::new(Method::POST, "/contact").header("origin", "https://evil.example").json(r#"{"message":"x"}"#)
        },
    },
    Kind {
        name: "csrf_token_missing",
        weight: 10,
        status: 403,
        reason: Some("csrf.token_missing"),
        what: "POST /contact, same origin, no token",
        build: |c, _| {
            Outgoing::new(Method::POST, "/contact").header("origin", c.origin.clone()).json(r#"{"message":"x"}"#)
        },
    },
    Kind {
        name: "openapi_invalid",
        weight: 20,
        status: 400,
        reason: Some("openapi.invalid"),
        what: r#"POST /api/orders {"customer":"ann","quantity":"two"}"#,
        build: |_, _| Outgoing::new(Method::POST, "/api/orders").json(r#"{"customer":"ann","quantity":"two"}"#),
    },
    Kind {
        name: "openapi_unknown",
        weight: 5,
        status: 404,
        reason: Some("openapi.unknown_path"),
        what: "GET /api/refunds (not in the document)",
        build: |_, _| Outgoing::new(Method::GET, "/api/refunds"),
    },
    Kind {
        name: "body_limit",
        weight: 15,
        status: 413,
        reason: Some("limit.body"),
        what: "POST /upload, 2 KiB with Content-Length (route limit 1 KiB)",
        build: |_, _| Outgoing::new(Method::POST, "/upload").json(Bytes::from(vec![b' '; UPLOAD_LIMIT * 2])),
    },
    Kind {
        name: "ip_denied",
        weight: 15,
        status: 403,
        reason: Some("ip.denied"),
        what: "GET /public/items/1 from 203.0.113.7 ([access] deny_ips)",
        build: |_, _| Outgoing::new(Method::GET, "/public/items/1").header("x-forwarded-for", DENIED_EVERYWHERE),
    },
    Kind {
        name: "ip_denied_route",
        weight: 10,
        status: 403,
        reason: Some("ip.denied"),
        what: "GET /partner/status from 198.51.100.9 (the route's deny_ips)",
        build: |_, _| Outgoing::new(Method::GET, "/partner/status").header("x-forwarded-for", DENIED_PARTNER),
    },
];

/// The sum of the weights in [`MIX`]: shares are weight / `MIX_WEIGHT`.
pub const MIX_WEIGHT: u32 = 1000;

/// A fixed mixing function (splitmix64): deterministic spread without a
/// random number generator.
fn mix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Indices into [`MIX`], each kind as often as its weight, in a fixed
/// shuffled order: request `n` is of kind `schedule[n % len]`.
#[must_use]
pub fn schedule() -> Vec<usize> {
    let mut order: Vec<usize> =
        MIX.iter().enumerate().flat_map(|(i, k)| std::iter::repeat_n(i, k.weight as usize)).collect();
    for i in (1..order.len()).rev() {
        let j = usize::try_from(mix64(i as u64) % (i as u64 + 1)).unwrap_or(0);
        order.swap(i, j);
    }
    order
}

/// How to drive the mix.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    pub gateway: SocketAddr,
    pub requests: u64,
    /// Keep-alive connections (one request at a time on each).
    pub connections: usize,
    /// Every this-many-th request goes on a new connection with
    /// `Connection: close` (0: none). Pick it prime to [`MIX_WEIGHT`] so
    /// every kind gets some.
    pub fresh_every: u64,
}

/// What one kind got.
#[derive(Debug, Default, Clone)]
pub struct KindTally {
    pub sent: u64,
    pub unexpected: u64,
}

/// What the client saw.
#[derive(Debug, Default)]
pub struct Tally {
    pub kinds: Vec<KindTally>,
    /// Answers by reason code (from the error body), expected or not.
    pub reasons: BTreeMap<String, u64>,
    /// 2xx answers (each must have reached the upstream).
    pub admitted: u64,
    pub unexpected: u64,
    /// Requests that got no answer (connection error, timeout).
    pub transport_errors: u64,
    /// Connections the client opened.
    pub connections_opened: u64,
    /// The first few unexpected answers and errors.
    pub samples: Vec<String>,
}

impl Tally {
    fn merge(&mut self, other: Self) {
        if self.kinds.is_empty() {
            self.kinds = vec![KindTally::default(); MIX.len()];
        }
        for (mine, theirs) in self.kinds.iter_mut().zip(other.kinds) {
            mine.sent += theirs.sent;
            mine.unexpected += theirs.unexpected;
        }
        for (reason, n) in other.reasons {
            *self.reasons.entry(reason).or_default() += n;
        }
        self.admitted += other.admitted;
        self.unexpected += other.unexpected;
        self.transport_errors += other.transport_errors;
        self.connections_opened += other.connections_opened;
        let room = SAMPLES.saturating_sub(self.samples.len());
        self.samples.extend(other.samples.into_iter().take(room));
    }

    fn sample(&mut self, line: String) {
        if self.samples.len() < SAMPLES {
            self.samples.push(line);
        }
    }

    /// Requests sent.
    #[must_use]
    pub fn sent(&self) -> u64 {
        self.kinds.iter().map(|k| k.sent).sum()
    }
}

async fn connect(gateway: SocketAddr) -> Result<SendRequest<Body>, Error> {
    let stream = TcpStream::connect(gateway).await?;
    stream.set_nodelay(true)?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        // The gateway closing the connection is how fresh connections end.
        let _ = connection.await;
    });
    Ok(sender)
}

async fn exchange(sender: &mut SendRequest<Body>, request: Request<Body>) -> Result<(StatusCode, bool, Bytes), Error> {
    sender.ready().await?;
    let response: Response<Incoming> = sender.send_request(request).await?;
    let status = response.status();
    let proxied = response.headers().contains_key(UPSTREAM_MARK);
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, proxied, body))
}

/// Sends one request on its own connection.
async fn send_once(gateway: SocketAddr, request: Request<Body>) -> Result<(StatusCode, Bytes), Error> {
    let mut sender = connect(gateway).await?;
    let (status, _, body) = exchange(&mut sender, request).await?;
    Ok((status, body))
}

/// Sends `options.requests` requests of the mix in `schedule`'s order
/// (normally [`schedule`]) and counts what came back. `done` counts finished
/// requests as they finish (for progress and samples).
pub async fn drive(
    options: Options,
    schedule: Vec<usize>,
    credentials: Arc<Credentials>,
    done: Arc<AtomicU64>,
) -> Tally {
    let schedule = Arc::new(schedule);
    let next = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::with_capacity(options.connections);
    for _ in 0..options.connections.max(1) {
        let (schedule, next, credentials, done) = (schedule.clone(), next.clone(), credentials.clone(), done.clone());
        workers.push(tokio::spawn(async move { worker(options, &schedule, &next, &credentials, &done).await }));
    }
    let mut tally = Tally { kinds: vec![KindTally::default(); MIX.len()], ..Tally::default() };
    for worker in workers {
        match worker.await {
            Ok(part) => tally.merge(part),
            Err(e) => {
                tally.transport_errors += 1;
                tally.sample(format!("client worker failed: {e}"));
            }
        }
    }
    tally
}

async fn worker(
    options: Options,
    schedule: &[usize],
    next: &AtomicU64,
    credentials: &Credentials,
    done: &AtomicU64,
) -> Tally {
    let mut tally = Tally { kinds: vec![KindTally::default(); MIX.len()], ..Tally::default() };
    let mut kept: Option<SendRequest<Body>> = None;
    loop {
        let seq = next.fetch_add(1, Ordering::Relaxed);
        if seq >= options.requests {
            return tally;
        }
        let index = schedule[usize::try_from(seq % schedule.len() as u64).unwrap_or(0)];
        let kind = &MIX[index];
        let fresh = options.fresh_every > 0 && seq % options.fresh_every == options.fresh_every / 2;
        tally.kinds[index].sent += 1;
        let outcome = tokio::time::timeout(REQUEST_TIMEOUT, async {
            let request = into_request((kind.build)(credentials, seq), &credentials.host, fresh)?;
            if fresh {
                tally.connections_opened += 1;
                let mut sender = connect(options.gateway).await?;
                return exchange(&mut sender, request).await;
            }
            // A connection the gateway closed (after a refusal it answered
            // without reading the body) is replaced, not counted.
            let reusable = match kept.as_mut() {
                Some(sender) => sender.ready().await.is_ok(),
                None => false,
            };
            if !reusable {
                tally.connections_opened += 1;
                kept = Some(connect(options.gateway).await?);
            }
            match kept.as_mut() {
                Some(sender) => exchange(sender, request).await,
                None => Err("no connection".into()),
            }
        })
        .await;
        done.fetch_add(1, Ordering::Relaxed);
        let (status, proxied, body) = match outcome {
            Ok(Ok(answer)) => answer,
            Ok(Err(e)) => {
                kept = None;
                tally.transport_errors += 1;
                tally.sample(format!("#{seq} {}: no answer: {e}", kind.name));
                continue;
            }
            Err(_) => {
                kept = None;
                tally.transport_errors += 1;
                tally.sample(format!("#{seq} {}: no answer within {REQUEST_TIMEOUT:?}", kind.name));
                continue;
            }
        };
        let reason = if status.is_success() {
            tally.admitted += 1;
            None
        } else {
            let reason = serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_owned))
                .unwrap_or_else(|| "(no reason)".to_owned());
            *tally.reasons.entry(reason.clone()).or_default() += 1;
            Some(reason)
        };
        let expected =
            status.as_u16() == kind.status && reason.as_deref() == kind.reason && (!status.is_success() || proxied);
        if !expected {
            tally.kinds[index].unexpected += 1;
            tally.unexpected += 1;
            let mut line = format!("#{seq} {}{}: got {status}", kind.name, if fresh { " (fresh)" } else { "" });
            if let Some(reason) = &reason {
                let _ = write!(line, " {reason}");
            }
            if status.is_success() && !proxied {
                line.push_str(" not from the upstream");
            }
            let _ = write!(line, ", expected {} {}", kind.status, kind.reason.unwrap_or("from the upstream"));
            let snippet: String = String::from_utf8_lossy(&body).chars().take(160).collect();
            let _ = write!(line, ": {snippet}");
            tally.sample(line);
        }
    }
}

/// Primes the run: spends the `closed` route's only request, so every
/// `ratelimit` request of the mix is refused.
///
/// # Errors
/// When the gateway does not answer the priming request with 200.
pub async fn prime(credentials: &Credentials, gateway: SocketAddr) -> Result<(), Error> {
    let (status, body) = send_once(gateway, get(&credentials.host, "/closed")).await?;
    if status != StatusCode::OK {
        return Err(format!("GET /closed (priming) answered {status}: {}", String::from_utf8_lossy(&body)).into());
    }
    Ok(())
}

/// The upstream behind the gateway: reads each request's body, counts the
/// request and answers 200 with [`UPSTREAM_MARK`].
#[derive(Debug, Clone)]
pub struct Upstream {
    pub addr: SocketAddr,
    seen: Arc<AtomicU64>,
}

impl Upstream {
    /// Binds `bind` and serves on the current runtime until it ends.
    ///
    /// # Errors
    /// When `bind` cannot be bound.
    pub async fn start(bind: SocketAddr) -> Result<Self, Error> {
        let listener = TcpListener::bind(bind).await?;
        let addr = listener.local_addr()?;
        let seen = Arc::new(AtomicU64::new(0));
        let counter = seen.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    // Out of descriptors and the like: the gateway sees 502s, which the client counts.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let counter = counter.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                        let counter = counter.clone();
                        async move {
                            counter.fetch_add(1, Ordering::Relaxed);
                            // Read the whole body, as an application would.
                            let _ = request.into_body().collect().await;
                            let mut response = Response::new(Full::new(Bytes::from_static(br#"{"ok":true}"#)));
                            response.headers_mut().insert("content-type", HeaderValue::from_static("application/json"));
                            response.headers_mut().insert(UPSTREAM_MARK, HeaderValue::from_static("1"));
                            Ok::<_, Infallible>(response)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(Self { addr, seen })
    }

    /// Requests received so far.
    #[must_use]
    pub fn seen(&self) -> u64 {
        self.seen.load(Ordering::Relaxed)
    }
}

/// The admin listener's counters that the soak checks.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Metrics {
    /// `portcullis_events_total`, summed over `rule` and `defence`, by
    /// `(reason, action)`.
    pub events: BTreeMap<(String, String), u64>,
    /// Number of `portcullis_events_total` series (label sets).
    pub event_series: usize,
    /// The `rule` label values of those series.
    pub rules: BTreeSet<String>,
}

impl Metrics {
    /// Reads `GET /metrics` from the admin listener.
    ///
    /// # Errors
    /// When the admin listener does not answer 200.
    pub async fn fetch(admin: SocketAddr) -> Result<Self, Error> {
        let host = HeaderValue::from_str(&admin.to_string())?;
        let mut request = get(&host, "/metrics");
        request.headers_mut().insert("authorization", HeaderValue::from_str(&format!("Bearer {ADMIN_TOKEN}"))?);
        let (status, body) = send_once(admin, request).await?;
        if status != StatusCode::OK {
            return Err(format!("GET /metrics answered {status}").into());
        }
        Ok(Self::parse(&String::from_utf8_lossy(&body)))
    }

    /// Parses Prometheus text.
    #[must_use]
    pub fn parse(text: &str) -> Self {
        let mut metrics = Self::default();
        for line in text.lines() {
            let Some(rest) = line.strip_prefix("portcullis_events_total{") else { continue };
            let Some((labels, value)) = rest.rsplit_once("} ") else { continue };
            let Ok(value) = value.trim().parse::<f64>() else { continue };
            let labels = parse_labels(labels);
            let label = |name: &str| labels.iter().find(|(key, _)| key == name).map(|(_, value)| value.clone());
            let key = (label("reason").unwrap_or_default(), label("action").unwrap_or_default());
            metrics.rules.insert(label("rule").unwrap_or_default());
            // Counters are integers; Prometheus text writes them as floats.
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let value = value as u64;
            *metrics.events.entry(key).or_default() += value;
            metrics.event_series += 1;
        }
        metrics
    }

    /// Events counted since `before`, by `(reason, action)`.
    #[must_use]
    pub fn since(&self, before: &Self) -> BTreeMap<(String, String), u64> {
        self.events
            .iter()
            .map(|(key, n)| (key.clone(), n - before.events.get(key).copied().unwrap_or(0).min(*n)))
            .filter(|(_, n)| *n > 0)
            .collect()
    }
}

/// `key="value",key="value"` as Prometheus writes labels (values escape `"`,
/// `\\` and newlines with a backslash, and may hold commas).
fn parse_labels(text: &str) -> Vec<(String, String)> {
    let mut labels = Vec::new();
    let mut rest = text;
    while let Some((key, after)) = rest.split_once("=\"") {
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut end = after.len();
        while let Some((at, c)) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, other)) => value.push(other),
                    None => {}
                },
                '"' => {
                    end = at + 1;
                    break;
                }
                c => value.push(c),
            }
        }
        labels.push((key.trim_start_matches(',').to_owned(), value));
        rest = &after[end..];
    }
    labels
}

/// What the `rule` label of an event series may be: a name from the
/// configuration ([`Files::write`]: routes, limits, the OpenAPI document,
/// `[access]`) or nothing. Never anything the request chose.
pub const CONFIGURED_RULES: &[&str] =
    &["", "[access]", "public", "jwt", "keys", "closed", "search", "contact", "orders", "upload", "partner", "per_ip"];

/// Differences between the refusals the client counted and the events the
/// gateway counted: every refusal is one `deny` event with its reason, and
/// nothing else happened (no `log` or `ban` events, no refusals the client
/// did not see); and every series' `rule` label is a configured name, so the
/// series stay bounded whatever the traffic. Empty when all holds.
#[must_use]
pub fn compare_events(tally: &Tally, events: &BTreeMap<(String, String), u64>, after: &Metrics) -> Vec<String> {
    let mut problems = Vec::new();
    for (reason, &client) in &tally.reasons {
        let gateway = events.get(&(reason.clone(), "deny".to_owned())).copied().unwrap_or(0);
        if gateway != client {
            problems
                .push(format!("{reason}: the client got {client} refusals, the gateway counted {gateway} deny events"));
        }
    }
    for ((reason, action), &n) in events {
        if action != "deny" || !tally.reasons.contains_key(reason) {
            problems.push(format!("{reason} ({action}): {n} events the client did not see as refusals"));
        }
    }
    let foreign: Vec<&String> = after.rules.iter().filter(|r| !CONFIGURED_RULES.contains(&r.as_str())).collect();
    if !foreign.is_empty() {
        let shown: Vec<&&String> = foreign.iter().take(5).collect();
        problems.push(format!(
            "{} event series carry a rule label that is no configured name (request-chosen labels grow without bound), e.g. {shown:?}",
            foreign.len()
        ));
    }
    problems
}

/// The report's lines about the mix: per kind, its share, what it expects
/// and what happened.
#[must_use]
pub fn mix_table(tally: &Tally) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "  {:<20} {:>6} {:>4} {:<20} {:>9} {:>10}  request",
        "kind", "share", "st", "reason", "sent", "unexpected"
    );
    for (kind, counts) in MIX.iter().zip(&tally.kinds) {
        let share = f64::from(kind.weight) * 100.0 / f64::from(MIX_WEIGHT);
        let _ = writeln!(
            out,
            "  {:<20} {:>5.1}% {:>4} {:<20} {:>9} {:>10}  {}",
            kind.name,
            share,
            kind.status,
            kind.reason.unwrap_or("-"),
            counts.sent,
            counts.unexpected,
            kind.what
        );
    }
    out
}
