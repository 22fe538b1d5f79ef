//! Bearer JWTs through the running gateway: the attack suite answered with
//! 401 and one event each, keys fetched from a JWKS over real TLS, key
//! rotation with a throttled refresh, an unreachable JWKS, configured PEM
//! and HMAC keys.

use crate::common;

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use common::*;
use jsonwebtoken::Algorithm;
use portcullis_policy::jwt::forge::{TestKey, attacks};
use serde_json::{Value, json};

const ISS: &str = "https://idp.test/";

fn now() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs()
}

fn claims() -> Value {
    let now = now();
    json!({"iss": ISS, "aud": "api", "sub": "alice", "exp": now + 300, "iat": now - 5, "roles": ["editor"], "scope": "orders:read"})
}

/// A JWKS endpoint over TLS with its own CA: serves whatever `jwks` holds and
/// counts fetches.
struct JwksServer {
    url: String,
    ca_file: std::path::PathBuf,
    jwks: Arc<Mutex<Value>>,
    fetches: Arc<AtomicUsize>,
}

async fn jwks_server(dir: &Path, jwks: Value, cache_control: &'static str) -> JwksServer {
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "test IdP CA");
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let ca_file = dir.join("idp-ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&leaf_key, &rcgen::Issuer::from_params(&ca_params, &ca_key))
        .unwrap();
    let config = rustls::ServerConfig::builder_with_provider(portcullis::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone()],
            rustls::pki_types::PrivateKeyDer::try_from(leaf_key.serialize_der()).unwrap(),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let jwks = Arc::new(Mutex::new(jwks));
    let fetches = Arc::new(AtomicUsize::new(0));
    let (served, counter) = (jwks.clone(), fetches.clone());
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (acceptor, served, counter) = (acceptor.clone(), served.clone(), counter.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else { return };
                let service = hyper::service::service_fn(move |_req| {
                    counter.fetch_add(1, Ordering::SeqCst);
                    let body = served.lock().unwrap().to_string();
                    async move {
                        let mut response = http::Response::new(portcullis_layers::full(body));
                        response.headers_mut().insert("cache-control", http::HeaderValue::from_static(cache_control));
                        Ok::<_, std::convert::Infallible>(response)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    JwksServer { url: format!("https://127.0.0.1:{}/jwks.json", addr.port()), ca_file, jwks, fetches }
}

fn jwt_config(upstream: std::net::SocketAddr, auth: &str) -> String {
    format!(
        r#"
[[listener]]
name = "test"
bind = "127.0.0.1:0"

[[upstream]]
name = "app"
targets = ["http://{upstream}"]

[[route]]
name = "api"
match = {{ path = "/api/**" }}
upstream = "app"
auth = "jwt"

[[route]]
name = "open"
match = {{ path = "/open" }}
upstream = "app"
auth = "public"

{auth}
"#
    )
}

fn issuer_with_jwks(server: &JwksServer, extra: &str) -> String {
    format!(
        "[auth.jwt]\nissuer = \"{ISS}\"\naudience = \"api\"\njwks_url = \"{}\"\njwks_ca = \"{}\"\nmax_token_bytes = 4096\n{extra}\n",
        server.url,
        server.ca_file.display()
    )
}

async fn call(gw: &Gateway, token: &str) -> (http::response::Parts, bytes::Bytes) {
    get_with(&gw.url("/api/orders"), &[("authorization", &format!("Bearer {token}"))]).await
}

#[tokio::test]
async fn honest_tokens_pass_and_every_attack_is_refused_with_401_and_one_event() {
    let keys_dir = tempfile::tempdir().unwrap();
    let rsa = TestKey::generate(Algorithm::RS256, "rsa-1");
    let ec = TestKey::generate(Algorithm::ES256, "ec-1");
    let ed = TestKey::generate(Algorithm::EdDSA, "ed-1");
    let attacker = TestKey::generate(Algorithm::RS256, "rsa-1");
    let server = jwks_server(keys_dir.path(), TestKey::jwks(&[&rsa, &ec, &ed]), "max-age=600").await;
    let (up, seen) = named_upstream("app").await;
    let gw = gateway(&jwt_config(up, &issuer_with_jwks(&server, ""))).await;

    for key in [&rsa, &ec, &ed] {
        let (parts, body) = call(&gw, &key.token(&claims())).await;
        assert_eq!(parts.status, 200, "{:?}: {}", key.alg, String::from_utf8_lossy(&body));
    }
    let headers = seen.lock().unwrap().last().cloned().unwrap();
    assert_eq!(headers["x-portcullis-subject"], "alice");
    assert_eq!(headers["x-portcullis-auth"], "jwt");
    assert_eq!(headers["x-portcullis-roles"], "editor");
    assert_eq!(headers["x-portcullis-issuer"], ISS);
    assert!(headers.contains_key("authorization"), "bearer JWTs are forwarded for the upstream's own use");
    assert!(gw.events.reasons().is_empty(), "{:?}", gw.events.reasons());

    let suite = attacks(&rsa, &ec, &attacker, &claims(), now(), 4096);
    assert!(suite.len() >= 30);
    // An empty bearer value is no credential at all (`auth.missing`, below).
    for (name, token, reason) in suite.iter().filter(|(_, token, _)| !token.is_empty()) {
        let before = gw.events.0.lock().unwrap().len();
        let (parts, body) = call(&gw, token).await;
        assert_denied(&parts, &body, 401, reason.code());
        let challenge = parts.headers.get("www-authenticate").map(|v| v.to_str().unwrap().to_owned());
        assert!(challenge.is_some_and(|c| c.starts_with("Bearer")), "{name}: no challenge");
        let events = gw.events.0.lock().unwrap().clone();
        assert_eq!(events.len(), before + 1, "{name}: one event per refusal");
        let event = events.last().unwrap();
        assert_eq!(event.reason, reason.code(), "{name}");
        assert_eq!(event.route.as_deref(), Some("api"));
        let line = event.to_json_line();
        if token.len() > 40 {
            for piece in token.split('.').filter(|p| p.len() > 20) {
                assert!(!line.contains(piece), "{name}: token contents in the event: {line}");
            }
        }
    }
    // Only the honest calls reached the upstream.
    assert_eq!(seen.lock().unwrap().len(), 3);
    // The JWKS was fetched at start and again for the unknown kids (once,
    // throttled by jwks_min_refresh), not once per attack.
    assert!(server.fetches.load(Ordering::SeqCst) <= 2, "{} fetches", server.fetches.load(Ordering::SeqCst));
}

#[tokio::test]
async fn rotated_keys_are_fetched_once_for_an_unknown_kid_and_refresh_is_throttled() {
    let dir = tempfile::tempdir().unwrap();
    let old = TestKey::generate(Algorithm::ES256, "2026-01");
    let server = jwks_server(dir.path(), TestKey::jwks(&[&old]), "max-age=3600").await;
    let (up, _seen) = named_upstream("app").await;
    let gw = gateway(&jwt_config(up, &issuer_with_jwks(&server, "jwks_min_refresh = \"1h\""))).await;
    assert_eq!(server.fetches.load(Ordering::SeqCst), 1, "fetched at start");
    assert_eq!(call(&gw, &old.token(&claims())).await.0.status, 200);

    // The issuer rotates: the new key is published, tokens carry its kid.
    let new = TestKey::generate(Algorithm::ES256, "2026-02");
    *server.jwks.lock().unwrap() = TestKey::jwks(&[&old, &new]);
    assert_eq!(call(&gw, &new.token(&claims())).await.0.status, 200);
    assert_eq!(server.fetches.load(Ordering::SeqCst), 2, "one refresh for the unknown kid");

    // Random kids cannot make the gateway hammer the issuer.
    for i in 0..5 {
        let header = json!({"alg": "ES256", "kid": format!("random-{i}")});
        let (parts, body) = call(&gw, &new.sign(&header, &claims())).await;
        assert_denied(&parts, &body, 401, "jwt.unknown_kid");
    }
    assert_eq!(server.fetches.load(Ordering::SeqCst), 2, "throttled by jwks_min_refresh");
    // Cached and fresh keys keep working.
    assert_eq!(call(&gw, &old.token(&claims())).await.0.status, 200);
}

#[tokio::test]
async fn an_unreachable_jwks_answers_503_and_public_routes_keep_working() {
    let unused = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = unused.local_addr().unwrap().port();
    drop(unused);
    let (up, _seen) = named_upstream("app").await;
    let auth = format!("[auth.jwt]\nissuer = \"{ISS}\"\njwks_url = \"http://127.0.0.1:{port}/jwks.json\"\n");
    let gw = gateway(&jwt_config(up, &auth)).await;
    let key = TestKey::generate(Algorithm::ES256, "k");
    let (parts, body) = call(&gw, &key.token(&claims())).await;
    assert_denied(&parts, &body, 503, "jwt.keys_unavailable");
    assert_eq!(gw.events.last().unwrap().attribution, portcullis_policy::Attribution::Upstream);
    assert_eq!(get(&gw.url("/open")).await.0.status, 200);
}

#[tokio::test]
async fn configured_pem_and_hmac_keys_verify_and_their_algorithms_are_pinned() {
    let dir = tempfile::tempdir().unwrap();
    let rsa = TestKey::generate(Algorithm::PS256, "pem");
    let pem_file = dir.path().join("issuer.pem");
    std::fs::write(&pem_file, rsa.public_pem.as_deref().unwrap()).unwrap();
    let secret = "a-shared-secret-of-at-least-32-bytes!!";
    let (up, _seen) = named_upstream("app").await;
    let auth = format!(
        "[auth.jwt]\nissuer = \"{ISS}\"\nalgorithms = [\"PS256\", \"HS256\"]\nkeys = [{{ pem_file = \"{}\" }}, {{ kid = \"hs\", secret = \"{secret}\", algorithm = \"HS256\" }}]\n",
        pem_file.display()
    );
    let gw = gateway(&jwt_config(up, &auth)).await;
    assert_eq!(call(&gw, &rsa.token(&claims())).await.0.status, 200);
    let hmac = jsonwebtoken::EncodingKey::from_secret(secret.as_bytes());
    let token = portcullis_policy::jwt::forge::sign_with(
        &hmac,
        Algorithm::HS256,
        &json!({"alg": "HS256", "kid": "hs"}),
        &claims(),
    );
    assert_eq!(call(&gw, &token).await.0.status, 200);
    // RS256 with the PS256-pinned key is refused before any signature check.
    let rs = portcullis_policy::jwt::forge::sign_with(
        &rsa.encoding_key(),
        Algorithm::RS256,
        &json!({"alg": "RS256"}),
        &claims(),
    );
    let (parts, body) = call(&gw, &rs).await;
    assert_denied(&parts, &body, 401, "jwt.alg_not_allowed");
    // The HMAC secret is not usable under another HMAC algorithm either.
    let hs384 = portcullis_policy::jwt::forge::sign_with(
        &hmac,
        Algorithm::HS384,
        &json!({"alg": "HS384", "kid": "hs"}),
        &claims(),
    );
    let (parts, body) = call(&gw, &hs384).await;
    assert_denied(&parts, &body, 401, "jwt.alg_not_allowed");
}

#[tokio::test]
async fn missing_or_non_bearer_credentials_get_a_challenge() {
    let dir = tempfile::tempdir().unwrap();
    let key = TestKey::generate(Algorithm::EdDSA, "k");
    let server = jwks_server(dir.path(), TestKey::jwks(&[&key]), "max-age=60").await;
    let (up, _seen) = named_upstream("app").await;
    let gw = gateway(&jwt_config(up, &issuer_with_jwks(&server, ""))).await;
    for headers in [vec![], vec![("authorization", "Basic YWxpY2U6cHc=")], vec![("authorization", "Bearer ")]] {
        let (parts, body) = get_with(&gw.url("/api/x"), &headers).await;
        assert_denied(&parts, &body, 401, "auth.missing");
        assert_eq!(parts.headers["www-authenticate"], "Bearer realm=\"portcullis\"");
    }
    // A bearer scheme in any case is accepted (RFC 7235: case-insensitive).
    let token = key.token(&claims());
    let (parts, _) = get_with(&gw.url("/api/x"), &[("authorization", &format!("bEaReR {token}"))]).await;
    assert_eq!(parts.status, 200);
}
