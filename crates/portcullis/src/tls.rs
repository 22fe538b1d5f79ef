//! TLS termination with rustls on the aws-lc-rs provider (the tree's only
//! crypto provider; `ring` is banned in deny.toml).
//!
//! Defends against eavesdropping and tampering between clients and the
//! gateway. Decision rules:
//! - TLS 1.3 and 1.2 only (the `intermediate` profile, Mozilla's), or TLS 1.3
//!   only (`modern`). rustls implements no CBC, RC4, 3DES, RSA key exchange
//!   or renegotiation, so every TLS 1.2 suite offered is forward-secret AEAD.
//! - ALPN offers `h2` (unless disabled) and `http/1.1`.
//! - Certificates come from PEM files, or are generated for localhost and kept
//!   in the data directory (`tls = "self-signed"`, for local use; browsers will
//!   warn). The SHA-256 fingerprint is logged at start so a client can pin it.
//! - Certificates are re-read on SIGHUP and when their files change; a new
//!   certificate serves the next handshake, open connections keep theirs, and
//!   a broken file is refused with an error while the old certificate stays.
//!
//! Deployment caveat: the private key file should be readable only by the
//! user Portcullis runs as.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ServerConfig, version};

use crate::config::{CertSource, Tls, TlsProfile};

/// Why TLS could not be set up. Never contains key material.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Cause.
        source: io::Error,
    },
    /// A file is not valid PEM of the expected kind.
    #[error("{path}: {reason}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The key does not suit rustls (unsupported algorithm, or not the key of the certificate).
    #[error("{0}")]
    Key(String),
    /// Generating the self-signed certificate failed.
    #[error("cannot generate a self-signed certificate: {0}")]
    Generate(String),
}

/// The process-wide crypto provider: aws-lc-rs.
#[must_use]
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// The certificates a listener serves, swappable at run time.
#[derive(Debug)]
pub struct CertStore {
    source: CertSource,
    sni: Vec<(PathBuf, PathBuf)>,
    data_dir: PathBuf,
    current: ArcSwap<CertSet>,
    modified: std::sync::Mutex<Vec<Option<(FileStamp, FileStamp)>>>,
}

/// The default certificate and the SNI ones with their DNS names.
#[derive(Debug)]
struct CertSet {
    default: Arc<CertifiedKey>,
    by_name: Vec<(String, Arc<CertifiedKey>)>,
}

impl CertSet {
    fn for_name(&self, name: Option<&str>) -> Arc<CertifiedKey> {
        let Some(name) = name.map(str::to_ascii_lowercase) else { return self.default.clone() };
        let exact = self.by_name.iter().find(|(n, _)| *n == name);
        let wildcard = || {
            self.by_name.iter().find(|(n, _)| {
                n.strip_prefix("*.").is_some_and(|suffix| {
                    name.strip_suffix(suffix)
                        .and_then(|l| l.strip_suffix('.'))
                        .is_some_and(|l| !l.is_empty() && !l.contains('.'))
                })
            })
        };
        exact.or_else(wildcard).map_or_else(|| self.default.clone(), |(_, key)| key.clone())
    }
}

impl CertStore {
    /// Loads (or generates) the certificate.
    ///
    /// # Errors
    /// [`TlsError`] for unreadable or invalid files.
    pub fn load(source: &CertSource, data_dir: &Path) -> Result<Arc<Self>, TlsError> {
        Self::load_with_sni(source, &[], data_dir)
    }

    /// Loads the default certificate and the SNI ones.
    ///
    /// # Errors
    /// [`TlsError`] for unreadable or invalid files.
    pub fn load_with_sni(
        source: &CertSource,
        sni: &[(PathBuf, PathBuf)],
        data_dir: &Path,
    ) -> Result<Arc<Self>, TlsError> {
        let store = Self {
            source: source.clone(),
            sni: sni.to_vec(),
            data_dir: data_dir.to_path_buf(),
            current: ArcSwap::from_pointee(CertSet {
                default: Arc::new(load_certified_key(source, data_dir)?),
                by_name: Vec::new(),
            }),
            modified: std::sync::Mutex::new(Vec::new()),
        };
        store.reload()?;
        Ok(Arc::new(store))
    }

    fn stamps(&self) -> Vec<Option<(FileStamp, FileStamp)>> {
        std::iter::once(modified_time(&self.source))
            .chain(
                self.sni
                    .iter()
                    .map(|(cert, key)| modified_time(&CertSource::Files { cert: cert.clone(), key: key.clone() })),
            )
            .collect()
    }

    /// Re-reads the certificate; on error the current one stays.
    ///
    /// # Errors
    /// [`TlsError`] describing the file that failed.
    pub fn reload(&self) -> Result<(), TlsError> {
        let stamps = self.stamps();
        let default = Arc::new(load_certified_key(&self.source, &self.data_dir)?);
        let mut by_name = Vec::new();
        for (cert, key) in &self.sni {
            let certified = Arc::new(load_certified_key(
                &CertSource::Files { cert: cert.clone(), key: key.clone() },
                &self.data_dir,
            )?);
            let names = certified.cert.first().map(dns_names).unwrap_or_default();
            if names.is_empty() {
                return Err(TlsError::Pem {
                    path: cert.clone(),
                    reason: "no DNS names in the certificate to select it by".into(),
                });
            }
            for name in names {
                by_name.push((name, certified.clone()));
            }
        }
        self.current.store(Arc::new(CertSet { default, by_name }));
        if let Ok(mut modified) = self.modified.lock() {
            *modified = stamps;
        }
        Ok(())
    }

    /// Reloads if the files changed since the last load. Returns whether it did.
    ///
    /// # Errors
    /// [`TlsError`] when the changed files are refused; the current
    /// certificate stays, and the same files are not tried (nor reported)
    /// again until they change once more.
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        let now = self.stamps();
        let changed = self.modified.lock().map(|m| *m != now).unwrap_or(false);
        if changed && let Err(e) = self.reload() {
            if let Ok(mut modified) = self.modified.lock() {
                *modified = now;
            }
            return Err(e);
        }
        Ok(changed)
    }

    /// SHA-256 fingerprint of the leaf certificate, `AB:CD:…`.
    #[must_use]
    pub fn fingerprint(&self) -> String {
        self.current.load().default.cert.first().map_or_else(String::new, |leaf| fingerprint(leaf))
    }

    /// Where the certificate comes from.
    #[must_use]
    pub const fn source(&self) -> &CertSource {
        &self.source
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load().for_name(hello.server_name()))
    }
}

/// The rustls configuration of a listener.
///
/// # Errors
/// [`TlsError::Key`] when rustls refuses the protocol set (never for the
/// built-in profiles).
pub fn server_config(tls: &Tls, store: Arc<CertStore>, h2: bool) -> Result<Arc<ServerConfig>, TlsError> {
    let versions: &[&rustls::SupportedProtocolVersion] = match tls.profile {
        TlsProfile::Intermediate => &[&version::TLS13, &version::TLS12],
        TlsProfile::Modern => &[&version::TLS13],
    };
    let builder = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)
        .map_err(|e| TlsError::Key(e.to_string()))?;
    let builder = match &tls.client_auth {
        None => builder.with_no_client_auth(),
        Some(auth) => {
            let roots = load_roots(&auth.ca)?;
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider());
            let verifier = if auth.required { verifier } else { verifier.allow_unauthenticated() };
            let verifier = verifier.build().map_err(|e| TlsError::Key(format!("client_ca: {e}")))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_cert_resolver(store);
    // The server's suite order (strongest first) wins over the client's.
    config.ignore_client_order = true;
    config.alpn_protocols = if h2 { vec![b"h2".to_vec(), b"http/1.1".to_vec()] } else { vec![b"http/1.1".to_vec()] };
    Ok(Arc::new(config))
}

/// What identifies a version of a file: a replaced file (renamed over, the
/// way certificate tools write) has a new inode even when the clock's
/// granularity gives it the old modification time.
type FileStamp = (SystemTime, u64, u64);

fn stamp(path: &Path) -> Option<FileStamp> {
    use std::os::unix::fs::MetadataExt as _;
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len(), meta.ino()))
}

fn modified_time(source: &CertSource) -> Option<(FileStamp, FileStamp)> {
    match source {
        CertSource::SelfSigned => None,
        CertSource::Files { cert, key } => Some((stamp(cert)?, stamp(key)?)),
    }
}

fn load_certified_key(source: &CertSource, data_dir: &Path) -> Result<CertifiedKey, TlsError> {
    let (cert, key) = match source {
        CertSource::Files { cert, key } => (cert.clone(), key.clone()),
        CertSource::SelfSigned => self_signed(data_dir)?,
    };
    let chain = load_chain(&cert)?;
    let private = PrivateKeyDer::from_pem_file(&key).map_err(|e| pem_error(&key, &e))?;
    let signing = provider()
        .key_provider
        .load_private_key(private)
        .map_err(|e| TlsError::Key(format!("{}: unsupported private key: {e}", key.display())))?;
    let certified = CertifiedKey::new(chain, signing);
    certified
        .keys_match()
        .map_err(|e| TlsError::Key(format!("{} is not the key of {}: {e}", key.display(), cert.display())))?;
    Ok(certified)
}

/// A PEM certificate chain, leaf first; at least one certificate.
pub(crate) fn load_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = std::fs::read(path).map_err(|source| TlsError::Read { path: path.to_path_buf(), source })?;
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(&pem).collect::<Result<_, _>>().map_err(|e| pem_error(path, &e))?;
    if chain.is_empty() {
        return Err(TlsError::Pem { path: path.to_path_buf(), reason: "no CERTIFICATE block found".into() });
    }
    Ok(chain)
}

/// A PEM bundle of trusted CA certificates, from a file.
fn load_roots(path: &Path) -> Result<rustls::RootCertStore, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for ca in load_chain(path)? {
        roots.add(ca).map_err(|e| TlsError::Pem { path: path.to_path_buf(), reason: e.to_string() })?;
    }
    Ok(roots)
}

fn pem_error(path: &Path, error: &rustls::pki_types::pem::Error) -> TlsError {
    let reason = match error {
        rustls::pki_types::pem::Error::Io(e) => {
            return TlsError::Read { path: path.to_path_buf(), source: io::Error::new(e.kind(), e.to_string()) };
        }
        rustls::pki_types::pem::Error::NoItemsFound => "no PEM block of the expected kind found".to_owned(),
        other => format!("invalid PEM: {other:?}"),
    };
    TlsError::Pem { path: path.to_path_buf(), reason }
}

/// The self-signed certificate's files, generated when missing or expiring
/// within 30 days. Valid for `localhost`, `127.0.0.1` and `::1`, one year.
fn self_signed(data_dir: &Path) -> Result<(PathBuf, PathBuf), TlsError> {
    let dir = data_dir.join("tls");
    let cert = dir.join("self-signed.pem");
    let key = dir.join("self-signed.key");
    if cert.exists() && key.exists() && !expires_soon(&cert) {
        return Ok((cert, key));
    }
    std::fs::create_dir_all(&dir).map_err(|source| TlsError::Read { path: dir.clone(), source })?;
    let mut params =
        rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned(), "::1".to_owned()])
            .map_err(|e| TlsError::Generate(e.to_string()))?;
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(365);
    params.distinguished_name.push(rcgen::DnType::CommonName, "Portcullis self-signed (localhost)");
    let signing = rcgen::KeyPair::generate().map_err(|e| TlsError::Generate(e.to_string()))?;
    let generated = params.self_signed(&signing).map_err(|e| TlsError::Generate(e.to_string()))?;
    write_private(&key, signing.serialize_pem().as_bytes())?;
    std::fs::write(&cert, generated.pem()).map_err(|source| TlsError::Read { path: cert.clone(), source })?;
    tracing::info!(cert = %cert.display(), "generated a self-signed certificate for localhost");
    Ok((cert, key))
}

fn expires_soon(cert: &Path) -> bool {
    // The file's age stands in for parsing the certificate: it was written
    // with a one-year validity.
    std::fs::metadata(cert)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|m| m.elapsed().ok())
        .is_none_or(|age| age.as_secs() > 335 * 24 * 3600)
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), TlsError> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).map_err(|source| TlsError::Read { path: path.to_path_buf(), source })?;
    file.write_all(bytes).map_err(|source| TlsError::Read { path: path.to_path_buf(), source })
}

/// The client side of TLS to an https upstream: its CA (or the system roots),
/// the gateway's client certificate for mTLS to the upstream, ALPN http/1.1.
/// The configuration has read and parsed the files; only the system roots
/// are loaded here.
///
/// # Errors
/// [`TlsError`] when no system roots are found, or rustls cannot use a
/// certificate or the client key.
pub fn client_config(tls: Option<&crate::config::UpstreamTls>) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    match tls.and_then(|t| t.ca.as_ref()) {
        Some(ca) => {
            for cert in ca {
                roots.add(cert.clone()).map_err(|e| TlsError::Key(format!("unusable CA certificate: {e}")))?;
            }
        }
        None => {
            let (added, _) = roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
            if added == 0 {
                return Err(TlsError::Key("no system CA certificates found; set tls.ca on the upstream".into()));
            }
        }
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&version::TLS13, &version::TLS12])
        .map_err(|e| TlsError::Key(e.to_string()))?
        .with_root_certificates(roots);
    let mut config = match tls.and_then(|t| t.client_cert.as_ref()) {
        Some(auth) => builder
            .with_client_auth_cert(auth.chain.clone(), auth.key.clone_key())
            .map_err(|e| TlsError::Key(format!("client certificate: {e}")))?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The subject and subject alternative names of a verified client
/// certificate, for authorization and the upstream.
#[must_use]
pub fn client_identity(cert: &CertificateDer<'_>) -> Option<portcullis_layers::ClientCert> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let subject = subject_text(parsed.subject());
    let mut names = parsed.subject().iter_common_name().map(x509_parser::x509::AttributeTypeAndValue::as_str);
    let common_name = match (names.next(), names.next()) {
        (Some(Ok(name)), None) => Some(name.to_owned()),
        _ => None,
    };
    let mut sans = Vec::new();
    if let Ok(Some(ext)) = parsed.subject_alternative_name() {
        for name in &ext.value.general_names {
            match name {
                x509_parser::extensions::GeneralName::DNSName(d) => sans.push(format!("DNS:{d}")),
                x509_parser::extensions::GeneralName::RFC822Name(e) => sans.push(format!("email:{e}")),
                x509_parser::extensions::GeneralName::URI(u) => sans.push(format!("URI:{u}")),
                x509_parser::extensions::GeneralName::IPAddress(bytes) => {
                    let ip = match bytes.len() {
                        4 => <[u8; 4]>::try_from(*bytes).ok().map(|b| std::net::IpAddr::from(b).to_string()),
                        16 => <[u8; 16]>::try_from(*bytes).ok().map(|b| std::net::IpAddr::from(b).to_string()),
                        _ => None,
                    };
                    if let Some(ip) = ip {
                        sans.push(format!("IP:{ip}"));
                    }
                }
                _ => {}
            }
        }
    }
    Some(portcullis_layers::ClientCert { subject, common_name, sans, fingerprint: fingerprint(cert) })
}

/// A distinguished name as text (`CN=svc-a, O=Example`), with RFC 4514
/// escaping in values: x509-parser's `Display` does not escape, so a value
/// such as `O=Ops, CN=svc-a` would read as two attributes and a DN could be
/// made to look like another one. Values that are not strings are `#hex`.
fn subject_text(name: &x509_parser::x509::X509Name<'_>) -> String {
    let registry = x509_parser::objects::oid_registry();
    name.iter()
        .map(|rdn| {
            rdn.iter()
                .map(|attr| {
                    let key = x509_parser::objects::oid2abbrev(attr.attr_type(), registry)
                        .map_or_else(|_| attr.attr_type().to_id_string(), str::to_owned);
                    let value = attr.as_str().map_or_else(
                        |_| format!("#{}", attr.as_slice().iter().map(|b| format!("{b:02x}")).collect::<String>()),
                        escape_dn_value,
                    );
                    format!("{key}={value}")
                })
                .collect::<Vec<_>>()
                .join(" + ")
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// RFC 4514 section 2.4: `"+,;<>\`, NUL, a leading `#` or space and a
/// trailing space are escaped.
fn escape_dn_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        match c {
            '"' | '+' | ',' | ';' | '<' | '>' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '\0' => out.push_str("\\00"),
            '#' if i == 0 => out.push_str("\\#"),
            ' ' if i == 0 || i == last => out.push_str("\\ "),
            _ => out.push(c),
        }
    }
    out
}

/// The DNS names in a certificate's subject alternative names, lowercase.
fn dns_names(cert: &CertificateDer<'_>) -> Vec<String> {
    let Ok((_, parsed)) = x509_parser::parse_x509_certificate(cert.as_ref()) else { return Vec::new() };
    let Ok(Some(ext)) = parsed.subject_alternative_name() else { return Vec::new() };
    ext.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            x509_parser::extensions::GeneralName::DNSName(d) => Some(d.to_ascii_lowercase()),
            _ => None,
        })
        .collect()
}

/// SHA-256 of a certificate, as colon-separated upper-case hex.
#[must_use]
pub fn fingerprint(cert: &CertificateDer<'_>) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, cert.as_ref());
    digest.as_ref().iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(":")
}

#[cfg(test)]
mod tests {
    #[test]
    fn dn_values_are_escaped_as_rfc_4514_says() {
        for (value, escaped) in [
            ("svc-a", "svc-a"),
            ("Ops, CN=svc-a", "Ops\\, CN=svc-a"),
            ("a+b;c<d>e\"f\\g", "a\\+b\\;c\\<d\\>e\\\"f\\\\g"),
            ("#1 team ", "\\#1 team\\ "),
            (" lead", "\\ lead"),
            ("nul\0", "nul\\00"),
            ("", ""),
        ] {
            assert_eq!(super::escape_dn_value(value), escaped, "{value:?}");
        }
    }
}
