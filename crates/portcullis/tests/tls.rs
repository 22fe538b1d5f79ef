//! Real TLS handshakes against the gateway: rustls clients and the openssl
//! command line.

use crate::common;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use http::Request;
use http_body_util::BodyExt;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;

struct Pki {
    ca: rcgen::Certificate,
    ca_params: rcgen::CertificateParams,
    ca_key: rcgen::KeyPair,
}

impl Pki {
    fn new(name: &str) -> Self {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, name);
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let ca = params.self_signed(&ca_key).unwrap();
        Self { ca, ca_params: params, ca_key }
    }

    /// Writes a leaf for `localhost` signed by this CA to `dir/<stem>.pem|.key`.
    fn leaf(&self, dir: &Path, stem: &str) -> CertificateDer<'static> {
        self.leaf_for(dir, stem, &["localhost", "127.0.0.1"])
    }

    /// Writes a leaf for `names` signed by this CA to `dir/<stem>.pem|.key`.
    fn leaf_for(&self, dir: &Path, stem: &str, names: &[&str]) -> CertificateDer<'static> {
        let params = rcgen::CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>()).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let issuer = rcgen::Issuer::from_params(&self.ca_params, &self.ca_key);
        let cert = params.signed_by(&key, &issuer).unwrap();
        std::fs::write(dir.join(format!("{stem}.pem")), cert.pem()).unwrap();
        std::fs::write(dir.join(format!("{stem}.key")), key.serialize_pem()).unwrap();
        cert.der().clone()
    }

    fn client(
        &self,
        versions: &[&'static rustls::SupportedProtocolVersion],
        alpn: &[&[u8]],
    ) -> tokio_rustls::TlsConnector {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca.der().clone()).unwrap();
        let mut config = rustls::ClientConfig::builder_with_provider(portcullis::tls::provider())
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        tokio_rustls::TlsConnector::from(Arc::new(config))
    }
}

async fn handshake(
    connector: &tokio_rustls::TlsConnector,
    addr: std::net::SocketAddr,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    connector.connect(ServerName::try_from("localhost").unwrap(), tcp).await
}

fn tls_config(up: std::net::SocketAddr, tls: &str, extra: &str) -> String {
    simple_config(up, extra).replace("bind = \"127.0.0.1:0\"", &format!("bind = \"127.0.0.1:0\"\ntls = {tls}"))
}

async fn http1_get(tls: tokio_rustls::client::TlsStream<TcpStream>, path: &str) -> (u16, String, http::HeaderMap) {
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls)).await.unwrap();
    tokio::spawn(conn);
    let response = sender
        .send_request(Request::get(path).header("host", "localhost").body(portcullis_layers::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned(), headers)
}

#[tokio::test]
async fn tls13_and_tls12_with_alpn_are_served() {
    let (up, _) = named_upstream("a").await;
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new("test CA");
    pki.leaf(dir.path(), "site");
    let cert = dir.path().join("site.pem");
    let key = dir.path().join("site.key");
    let gw = gateway(&tls_config(up, &format!("{{ cert = {cert:?}, key = {key:?} }}"), "")).await;

    // TLS 1.3 with h2 by ALPN.
    let tls = handshake(&pki.client(&[&rustls::version::TLS13], &[b"h2", b"http/1.1"]), gw.addr).await.unwrap();
    assert_eq!(tls.get_ref().1.protocol_version(), Some(rustls::ProtocolVersion::TLSv1_3));
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), hyper_util::rt::TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    let response = sender
        .send_request(Request::get("https://localhost/h2").body(portcullis_layers::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.into_body().collect().await.unwrap().to_bytes(), "a /h2");

    // TLS 1.2 with HTTP/1.1; the upstream learns the client used https.
    let tls = handshake(&pki.client(&[&rustls::version::TLS12], &[b"http/1.1"]), gw.addr).await.unwrap();
    assert_eq!(tls.get_ref().1.protocol_version(), Some(rustls::ProtocolVersion::TLSv1_2));
    let (status, body, _) = http1_get(tls, "/one").await;
    assert_eq!((status, body.as_str()), (200, "a /one"));
}

fn openssl(addr: std::net::SocketAddr, args: &[&str]) -> (bool, String) {
    let out = Command::new("openssl")
        .args(["s_client", "-connect", &addr.to_string(), "-servername", "localhost"])
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("openssl is installed by scripts/test");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let ok = text.contains("Cipher is ") && !text.contains("Cipher is (NONE)");
    (ok, text)
}

#[tokio::test]
async fn old_protocols_and_non_forward_secret_suites_are_refused() {
    let (up, _) = named_upstream("a").await;
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new("test CA");
    pki.leaf(dir.path(), "site");
    let (cert, key) = (dir.path().join("site.pem"), dir.path().join("site.key"));
    let gw = gateway(&tls_config(up, &format!("{{ cert = {cert:?}, key = {key:?} }}"), "")).await;
    let addr = gw.addr;
    let run = |args: &'static [&'static str]| tokio::task::spawn_blocking(move || openssl(addr, args));

    let (ok, text) = run(&["-tls1_2"]).await.unwrap();
    assert!(ok, "TLS 1.2 with default suites must work: {text}");
    let (ok, text) = run(&["-tls1_3"]).await.unwrap();
    assert!(ok, "TLS 1.3 must work: {text}");
    for args in [
        &["-tls1_1", "-cipher", "DEFAULT:@SECLEVEL=0"][..],
        &["-tls1", "-cipher", "DEFAULT:@SECLEVEL=0"][..],
        &["-tls1_2", "-cipher", "AES128-GCM-SHA256"][..], // RSA key exchange: no forward secrecy
        &["-tls1_2", "-cipher", "AES256-SHA256"][..],
    ] {
        let args: &'static [&'static str] = Box::leak(args.to_vec().into_boxed_slice());
        let (ok, text) = run(args).await.unwrap();
        assert!(!ok, "{args:?} was accepted: {text}");
    }
    eventually("handshake events", Duration::from_secs(5), || {
        gw.events.reasons().iter().filter(|r| **r == "tls.handshake").count() >= 4
    })
    .await;
}

#[tokio::test]
async fn modern_profile_refuses_tls12() {
    let (up, _) = named_upstream("a").await;
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new("test CA");
    pki.leaf(dir.path(), "site");
    let (cert, key) = (dir.path().join("site.pem"), dir.path().join("site.key"));
    let gw = gateway(&tls_config(up, &format!("{{ cert = {cert:?}, key = {key:?}, profile = \"modern\" }}"), "")).await;
    assert!(handshake(&pki.client(&[&rustls::version::TLS12], &[]), gw.addr).await.is_err());
    assert!(handshake(&pki.client(&[&rustls::version::TLS13], &[]), gw.addr).await.is_ok());
}

#[tokio::test]
async fn a_replaced_certificate_serves_new_connections_while_open_ones_keep_working() {
    let (up, _) = named_upstream("a").await;
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new("test CA");
    let first = pki.leaf(dir.path(), "site");
    let (cert, key) = (dir.path().join("site.pem"), dir.path().join("site.key"));
    let gw = gateway(&tls_config(up, &format!("{{ cert = {cert:?}, key = {key:?} }}"), "")).await;
    let client = pki.client(&[&rustls::version::TLS13], &[b"http/1.1"]);

    let open = handshake(&client, gw.addr).await.unwrap();
    assert_eq!(open.get_ref().1.peer_certificates().unwrap()[0], first);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(open)).await.unwrap();
    tokio::spawn(conn);

    // Replace the files (write aside, rename over: what certbot and friends do).
    let staging = tempfile::tempdir_in(dir.path()).unwrap();
    let second = pki.leaf(staging.path(), "site");
    std::fs::rename(staging.path().join("site.key"), &key).unwrap();
    std::fs::rename(staging.path().join("site.pem"), &cert).unwrap();
    assert_ne!(first, second);

    let mut served_new = false;
    for _ in 0..100 {
        let tls = handshake(&client, gw.addr).await.unwrap();
        if tls.get_ref().1.peer_certificates().unwrap()[0] == second {
            served_new = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(served_new, "the new certificate was not picked up");

    // The connection opened before the change still works.
    let response = sender
        .send_request(Request::get("/still").header("host", "localhost").body(portcullis_layers::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn redirect_listener_sends_308_to_the_https_listener() {
    let (up, seen) = named_upstream("a").await;
    let toml = tls_config(up, "\"self-signed\"", "")
        .replace("tls = \"self-signed\"", "tls = \"self-signed\"\nredirect_http = \"127.0.0.1:0\"");
    let gw = gateway(&toml).await;
    let https = gw.server.addr("test").unwrap();
    let redirect = gw.server.addr("test-redirect").unwrap();
    let (parts, _) = get_with(&format!("http://{redirect}/api/x?q=1"), &[("host", "shop.example:8080")]).await;
    assert_eq!(parts.status, 308);
    assert_eq!(parts.headers["location"], format!("https://shop.example:{}/api/x?q=1", https.port()));
    let (parts, _) = get_with(&format!("http://{redirect}/"), &[("host", "bad host")]).await;
    assert_eq!(parts.status, 400);
    assert!(seen.lock().unwrap().is_empty(), "the redirect listener never proxies");
}

#[tokio::test]
async fn self_signed_certificate_is_generated_once_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    let store = portcullis::tls::CertStore::load(&portcullis::config::CertSource::SelfSigned, dir.path()).unwrap();
    let key = dir.path().join("tls/self-signed.key");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
    let again = portcullis::tls::CertStore::load(&portcullis::config::CertSource::SelfSigned, dir.path()).unwrap();
    assert_eq!(store.fingerprint(), again.fingerprint(), "a restart keeps the certificate (and its fingerprint)");
    assert_eq!(store.fingerprint().len(), 32 * 3 - 1);
}

#[tokio::test]
async fn a_broken_certificate_is_refused_at_start_with_the_file_named() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bad.pem"), "not a certificate").unwrap();
    std::fs::write(dir.path().join("bad.key"), "not a key").unwrap();
    let source =
        portcullis::config::CertSource::Files { cert: dir.path().join("bad.pem"), key: dir.path().join("bad.key") };
    let err = portcullis::tls::CertStore::load(&source, dir.path()).unwrap_err().to_string();
    assert!(err.contains("bad.pem"), "{err}");
}

impl Pki {
    /// A client certificate signed by this CA, as (chain, key).
    fn client_cert(
        &self,
        cn: &str,
        san: &str,
    ) -> (Vec<CertificateDer<'static>>, rustls::pki_types::PrivateKeyDer<'static>) {
        let (cert, key) = self.client_cert_pem(cn, san);
        let der = rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
        (vec![cert.der().clone()], der)
    }

    fn client_cert_pem(&self, cn: &str, san: &str) -> (rcgen::Certificate, rcgen::KeyPair) {
        let mut params = rcgen::CertificateParams::new(vec![san.to_owned()]).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, cn);
        let key = rcgen::KeyPair::generate().unwrap();
        let issuer = rcgen::Issuer::from_params(&self.ca_params, &self.ca_key);
        let cert = params.signed_by(&key, &issuer).unwrap();
        (cert, key)
    }

    /// A client presenting a certificate from this CA with exactly `subject`.
    fn mtls_client_as(&self, server_ca: &Pki, subject: &[(rcgen::DnType, &str)]) -> tokio_rustls::TlsConnector {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        for (kind, value) in subject {
            params.distinguished_name.push(kind.clone(), *value);
        }
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &rcgen::Issuer::from_params(&self.ca_params, &self.ca_key)).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(server_ca.ca.der().clone()).unwrap();
        let mut config = rustls::ClientConfig::builder_with_provider(portcullis::tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_client_auth_cert(
                vec![cert.der().clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
            )
            .unwrap();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        tokio_rustls::TlsConnector::from(Arc::new(config))
    }

    fn mtls_client(&self, server_ca: &Pki, identity: Option<(&Pki, &str)>) -> tokio_rustls::TlsConnector {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(server_ca.ca.der().clone()).unwrap();
        let builder = rustls::ClientConfig::builder_with_provider(portcullis::tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
        let mut config = match identity {
            Some((ca, cn)) => {
                let (chain, key) = ca.client_cert(cn, &format!("{cn}.internal"));
                builder.with_client_auth_cert(chain, key).unwrap()
            }
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        tokio_rustls::TlsConnector::from(Arc::new(config))
    }
}

#[tokio::test]
async fn client_certificates_are_required_verified_and_exposed() {
    let dir = tempfile::tempdir().unwrap();
    let server_pki = Pki::new("server CA");
    server_pki.leaf(dir.path(), "site");
    let clients = Pki::new("clients CA");
    let strangers = Pki::new("another CA");
    std::fs::write(dir.path().join("clients.pem"), clients.ca.pem()).unwrap();
    let toml = r#"
[[listener]]
name = "mtls"
bind = "127.0.0.1:0"
tls = { cert = "site.pem", key = "site.key", client_ca = "clients.pem" }
[[upstream]]
name = "demo"
targets = ["builtin:demo"]
[[route]]
match = { path = "/**" }
upstream = "demo"
auth = "public"
"#;
    let path = dir.path().join("portcullis.toml");
    std::fs::write(&path, toml).unwrap();
    let config = portcullis::config::load(&path).unwrap();
    let events = Arc::new(Events::default());
    let server = portcullis::server::Server::start(config, events.clone()).await.unwrap();
    let addr = server.addrs()[0].1;

    // A certificate from the clients' CA: accepted, identity passed on.
    let tls = handshake(&clients.mtls_client(&server_pki, Some((&clients, "svc-a"))), addr).await.unwrap();
    let (status, body, _) = http1_get(tls, "/who").await;
    assert_eq!(status, 200, "{body}");
    let echo: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(echo["client_cert"]["subject"], "CN=svc-a");
    assert_eq!(echo["client_cert"]["sans"][0], "DNS:svc-a.internal");

    // No certificate, or one from another CA: the handshake fails.
    for client in
        [clients.mtls_client(&server_pki, None), clients.mtls_client(&server_pki, Some((&strangers, "mallory")))]
    {
        assert!(refused(&client, addr).await, "a connection without a valid client certificate was served");
    }
    eventually("handshake events", Duration::from_secs(5), || {
        events.reasons().iter().filter(|r| **r == "tls.handshake").count() >= 2
    })
    .await;
}

/// Whether `client` is refused: at the handshake, or (TLS 1.3 reports a
/// client-auth failure on first use) at the first request.
async fn refused(client: &tokio_rustls::TlsConnector, addr: std::net::SocketAddr) -> bool {
    match handshake(client, addr).await {
        Err(_) => true,
        Ok(tls) => {
            let io = hyper_util::rt::TokioIo::new(tls);
            match hyper::client::conn::http1::handshake::<_, portcullis_layers::Body>(io).await {
                Err(_) => true,
                Ok((mut sender, conn)) => {
                    tokio::spawn(conn);
                    let req = Request::get("/").header("host", "localhost").body(portcullis_layers::empty()).unwrap();
                    sender.send_request(req).await.is_err()
                }
            }
        }
    }
}

/// One HTTP/1.1 request with `headers` on a TLS connection.
async fn http1_request(
    tls: tokio_rustls::client::TlsStream<TcpStream>,
    path: &str,
    headers: &[(&str, &str)],
) -> (http::response::Parts, bytes::Bytes) {
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls)).await.unwrap();
    tokio::spawn(conn);
    let mut req = Request::get(path).header("host", "localhost");
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let response = sender.send_request(req.body(portcullis_layers::empty()).unwrap()).await.unwrap();
    let (parts, body) = response.into_parts();
    (parts, body.collect().await.unwrap().to_bytes())
}

/// A verified client certificate as the caller: `auth = "mtls"` routes on a
/// listener where certificates are optional.
#[tokio::test]
async fn a_client_certificate_is_the_principal_on_mtls_routes() {
    let (up, seen) = named_upstream("app").await;
    let dir = tempfile::tempdir().unwrap();
    let server_pki = Pki::new("server CA");
    server_pki.leaf(dir.path(), "site");
    let clients = Pki::new("clients CA");
    let strangers = Pki::new("another CA");
    std::fs::write(dir.path().join("clients.pem"), clients.ca.pem()).unwrap();
    let toml = format!(
        r#"
[[listener]]
name = "mtls"
bind = "127.0.0.1:0"
tls = {{ cert = "site.pem", key = "site.key", client_ca = "clients.pem", client_auth = "optional" }}

[[upstream]]
name = "app"
targets = ["http://{up}"]

[[route]]
match = {{ path = "/svc/**" }}
upstream = "app"
auth = "mtls"

[[route]]
match = {{ path = "/**" }}
upstream = "app"
auth = "public"

[auth.mtls]
roles = {{ "svc-a" = ["service"], "CN=batch, O=Prod" = ["batch"] }}
"#
    );
    let path = dir.path().join("portcullis.toml");
    std::fs::write(&path, toml).unwrap();
    let config = portcullis::config::load(&path).unwrap();
    let events = Arc::new(Events::default());
    let server = portcullis::server::Server::start(config, events.clone()).await.unwrap();
    let addr = server.addrs()[0].1;
    let last = || seen.lock().unwrap().last().cloned().unwrap();
    let get = |headers: &http::HeaderMap, name: &str| headers.get(name).map(|v| v.to_str().unwrap().to_owned());

    // With a certificate: the subject CN is the caller, roles from [auth.mtls];
    // what the client claims in X-Portcullis-* is replaced.
    let tls = handshake(&clients.mtls_client(&server_pki, Some((&clients, "svc-a"))), addr).await.unwrap();
    let forged = [("x-portcullis-subject", "admin"), ("x-portcullis-roles", "admin")];
    let (parts, body) = http1_request(tls, "/svc/jobs", &forged).await;
    assert_eq!(parts.status, 200, "{}", String::from_utf8_lossy(&body));
    let received = last();
    assert_eq!(get(&received, "x-portcullis-subject").as_deref(), Some("svc-a"));
    assert_eq!(get(&received, "x-portcullis-auth").as_deref(), Some("mtls"));
    assert_eq!(get(&received, "x-portcullis-issuer").as_deref(), Some("client-certificate"));
    assert_eq!(get(&received, "x-portcullis-roles").as_deref(), Some("service"));
    assert_eq!(received.get_all("x-portcullis-roles").iter().count(), 1);

    // Another certificate from the same CA: authenticated, without roles.
    let tls = handshake(&clients.mtls_client(&server_pki, Some((&clients, "svc-b"))), addr).await.unwrap();
    let (parts, _) = http1_request(tls, "/svc/jobs", &[]).await;
    assert_eq!(parts.status, 200);
    let received = last();
    assert_eq!(get(&received, "x-portcullis-subject").as_deref(), Some("svc-b"));
    assert_eq!(get(&received, "x-portcullis-roles").as_deref(), Some(""));

    // Without one: the listener lets the connection in (optional), the mTLS
    // route refuses it, public routes serve it without identity.
    let tls = handshake(&clients.mtls_client(&server_pki, None), addr).await.unwrap();
    let (parts, body) = http1_request(tls, "/svc/jobs", &forged).await;
    assert_denied(&parts, &body, 401, "auth.missing");
    assert_eq!(events.reasons(), ["auth.missing"]);
    let before = seen.lock().unwrap().len();
    let tls = handshake(&clients.mtls_client(&server_pki, None), addr).await.unwrap();
    let (parts, _) = http1_request(tls, "/status", &forged).await;
    assert_eq!(parts.status, 200);
    assert_eq!(seen.lock().unwrap().len(), before + 1);
    assert!(last().keys().all(|n| !n.as_str().starts_with("x-portcullis-")), "{:?}", last());

    // Optional is not "anything goes": a certificate from another CA is
    // still refused at the handshake.
    assert!(refused(&clients.mtls_client(&server_pki, Some((&strangers, "svc-a"))), addr).await);

    // A subject is matched by its structure, not by splitting its text: the
    // client CA may sign names whose other attributes the requester chose.
    use rcgen::DnType::{CommonName, OrganizationName};
    type Subject<'a> = &'a [(rcgen::DnType, &'a str)];
    let cases: [(Subject<'_>, &str, &str); 4] = [
        // Mapped by full DN.
        (&[(CommonName, "batch"), (OrganizationName, "Prod")], "batch", "batch"),
        // An organization smuggling a CN in front of the real one.
        (&[(OrganizationName, "Ops, CN=svc-a"), (CommonName, "mallory")], "mallory", ""),
        // A CN that renders like the mapped DN.
        (&[(CommonName, "batch, O=Prod")], "batch, O=Prod", ""),
        // A CN that is a mapped DN key.
        (&[(CommonName, "CN=batch, O=Prod")], "CN=batch, O=Prod", ""),
    ];
    for (subject, expected_subject, expected_roles) in cases {
        let tls = handshake(&clients.mtls_client_as(&server_pki, subject), addr).await.unwrap();
        let (parts, _) = http1_request(tls, "/svc/jobs", &[]).await;
        assert_eq!(parts.status, 200, "{subject:?}");
        let received = last();
        assert_eq!(get(&received, "x-portcullis-subject").as_deref(), Some(expected_subject), "{subject:?}");
        assert_eq!(get(&received, "x-portcullis-roles").as_deref(), Some(expected_roles), "{subject:?}");
    }
}

/// An HTTPS upstream presenting a `localhost` certificate from `server`, and
/// requiring a client certificate from `clients`.
async fn mtls_upstream(dir: &Path, server: &Pki, clients: &Pki) -> std::net::SocketAddr {
    server.leaf(dir, "upstream");
    let chain: Vec<CertificateDer<'static>> =
        rustls::pki_types::pem::PemObject::pem_file_iter(dir.join("upstream.pem"))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
    let key = <rustls::pki_types::PrivateKeyDer<'static> as rustls::pki_types::pem::PemObject>::from_pem_file(
        dir.join("upstream.key"),
    )
    .unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(clients.ca.der().clone()).unwrap();
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), portcullis::tls::provider())
            .build()
            .unwrap();
    let config = rustls::ServerConfig::builder_with_provider(portcullis::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else { return };
                let subject = tls.get_ref().1.peer_certificates().map(|c| c.len()).unwrap_or(0);
                let service = hyper::service::service_fn(move |_req: Request<hyper::body::Incoming>| async move {
                    Ok::<_, std::convert::Infallible>(http::Response::new(portcullis_layers::full(format!(
                        "secure upstream, client chain of {subject}"
                    ))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn https_upstream_with_mtls_from_the_gateway() {
    let dir = tempfile::tempdir().unwrap();
    let upstream_ca = Pki::new("upstream CA");
    let gateway_clients = Pki::new("gateway clients CA");
    let up = mtls_upstream(dir.path(), &upstream_ca, &gateway_clients).await;
    std::fs::write(dir.path().join("upstream-ca.pem"), upstream_ca.ca.pem()).unwrap();
    // The gateway's client certificate.
    let (cert, key) = gateway_clients.client_cert_pem("portcullis", "gateway.internal");
    std::fs::write(dir.path().join("gw.pem"), cert.pem()).unwrap();
    std::fs::write(dir.path().join("gw.key"), key.serialize_pem()).unwrap();
    let port = up.port();
    let config = |tls: &str| {
        format!(
            r#"
[[listener]]
bind = "127.0.0.1:0"
[[upstream]]
name = "secure"
targets = ["https://localhost:{port}"]
tls = {tls}
[[route]]
match = {{ path = "/**" }}
upstream = "secure"
auth = "public"
"#
        )
    };
    let write = |name: &str, text: String| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        portcullis::config::load(&path).unwrap()
    };
    let start = |config| async move {
        let events = Arc::new(Events::default());
        let server = portcullis::server::Server::start(config, events.clone()).await.unwrap();
        let addr = server.addrs()[0].1;
        (server, addr, events)
    };

    let (_server, addr, _) = start(write(
        "good.toml",
        config(r#"{ ca = "upstream-ca.pem", client_cert = "gw.pem", client_key = "gw.key" }"#),
    ))
    .await;
    let (parts, body) = get(&format!("http://{addr}/x")).await;
    assert_eq!((parts.status.as_u16(), &body[..]), (200, &b"secure upstream, client chain of 1"[..]));

    // Without the client certificate the upstream refuses the gateway.
    // (TLS 1.3 reports that after the client's handshake, on the first request.)
    let (_server, addr, events) = start(write("nocert.toml", config(r#"{ ca = "upstream-ca.pem" }"#))).await;
    let (parts, body) = get(&format!("http://{addr}/x")).await;
    assert_eq!(parts.status, 502, "{body:?}");
    let event = events.last().unwrap();
    assert!(["upstream.connect", "upstream.protocol"].contains(&event.reason), "{event:?}");
    assert!(event.detail.unwrap().to_lowercase().contains("certificate"), "the detail says why");

    // Verified against the system roots, the upstream's private CA is not trusted.
    let (_server, addr, _) =
        start(write("roots.toml", config(r#"{ client_cert = "gw.pem", client_key = "gw.key" }"#))).await;
    let (parts, body) = get(&format!("http://{addr}/x")).await;
    assert_denied(&parts, &body, 502, "upstream.connect");
}

#[tokio::test]
async fn sni_picks_the_certificate_for_the_requested_name() {
    let (up, _) = named_upstream("a").await;
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new("test CA");
    let default = pki.leaf(dir.path(), "site");
    let api = pki.leaf_for(dir.path(), "api", &["api.example.test"]);
    let apps = pki.leaf_for(dir.path(), "apps", &["*.apps.example.test"]);
    let d = dir.path();
    let tls = format!(
        "{{ cert = {:?}, key = {:?}, sni = [{{ cert = {:?}, key = {:?} }}, {{ cert = {:?}, key = {:?} }}] }}",
        d.join("site.pem"),
        d.join("site.key"),
        d.join("api.pem"),
        d.join("api.key"),
        d.join("apps.pem"),
        d.join("apps.key")
    );
    let gw = gateway(&tls_config(up, &tls, "")).await;
    let client = pki.client(&[&rustls::version::TLS13], &[]);
    for (name, want) in [("api.example.test", &api), ("shop.apps.example.test", &apps), ("localhost", &default)] {
        let tcp = TcpStream::connect(gw.addr).await.unwrap();
        let tls = client.connect(ServerName::try_from(name.to_owned()).unwrap(), tcp).await.unwrap();
        assert_eq!(&tls.get_ref().1.peer_certificates().unwrap()[0], want, "{name}");
    }
}
