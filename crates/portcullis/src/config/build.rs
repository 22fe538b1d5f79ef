//! The build step: raw structs → typed [`Config`], collecting every error.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use http::uri::{Scheme, Uri};
use http::{HeaderName, HeaderValue, Method};

use portcullis_layers::pace::Pace;
use portcullis_layers::{AuthMode, RouteInfo};
use portcullis_policy::cors::{CorsPolicy, Origins};
use portcullis_policy::forwarded::TrustedProxies;
use portcullis_policy::headers::{HeaderPolicy, Hsts};
use portcullis_policy::limits::RequestLimits;
use portcullis_policy::route::{HostPattern, PathPattern};
use toml::Spanned;

use super::error::{Collector, ConfigErrors};
use super::raw::{
    OneOrMany, RawConfig, RawCors, RawHeaders, RawHsts, RawLog, RawRoute, RawServer, RawTls, RawUpstream,
    RawUpstreamTls,
};
use super::sources::Sources;
use super::values::{choice, duration, in_flight, ip_nets, rate, size, to_usize};
use super::{
    CertSource, ClientAuth, Config, HostHeader, Listener, Log, LogFormat, Route, Server, Target, Tls, TlsProfile,
    Upstream, UpstreamTls,
};

pub fn build(path: &Path, source: &str, env: &Sources<'_>) -> Result<Config, ConfigErrors> {
    let mut c = Collector::new(path, source);
    let raw: RawConfig = match toml::from_str(source) {
        Ok(raw) => raw,
        Err(e) => {
            let span = e.span().unwrap_or(0..0);
            let message = e.message().trim().to_owned();
            let help = if message.contains("unknown field") {
                "check the key's spelling against docs/configuration.md; unknown keys are refused so a typo never disables a defence"
            } else {
                "fix the TOML syntax or the value's type"
            };
            c.error(span, message).help(help);
            return Err(match c.finish() {
                Err(errors) => errors,
                Ok(()) => ConfigErrors(Vec::new()),
            });
        }
    };
    let base = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or_else(|| Path::new("."));

    let server = build_server(&mut c, &raw.server, base);
    let listeners = build_listeners(&mut c, &raw, base);
    let upstreams: Vec<Upstream> = raw.upstreams.iter().filter_map(|u| build_upstream(&mut c, u, base, env)).collect();
    check_unique_upstreams(&mut c, &raw.upstreams);
    let headers = build_headers(&mut c, &raw.headers);
    let cors = raw.cors.as_ref().and_then(|cors| build_cors(&mut c, cors));
    let paths = build_paths(&mut c, &raw.paths);
    let auth = super::auth::build_auth(&mut c, &raw, base, env);
    let roles = super::authz::build_roles(&mut c, &raw);
    let limits = super::limits::build_limits(&mut c, &raw);
    let logins = super::login::build_logins(&mut c, &raw);
    let access = super::authz::build_access(&mut c, &raw);
    let bans = super::bans::build_bans(&mut c, &raw);
    let endpoint_limits = super::limits::endpoint_limits(&mut c, &raw, &limits);
    if let Some(mtls) = &raw.auth.mtls
        && !listeners.iter().any(|l| l.tls.as_ref().is_some_and(|t| t.client_auth.is_some()))
    {
        c.error(mtls.span(), "[auth.mtls] is configured but no listener asks for client certificates")
            .help("add client_ca (and client_auth = \"optional\" or \"required\") to a listener's tls table");
    }
    let openapi = super::openapi::build_openapi(
        &mut c,
        &raw,
        base,
        paths.case == portcullis_policy::normalize::Case::Insensitive,
        env,
    );
    let mut waf = super::waf::build_waf(&mut c, &raw, base);
    check_route_paths(&mut c, &raw, &paths);
    let mut routes = build_routes(
        &mut c,
        &raw,
        &upstreams,
        &headers,
        &auth,
        &roles,
        &mut Named { limits: &limits, logins: &logins, openapi: &openapi, waf: waf.as_mut() },
    );
    let waf = waf.map(super::waf::WafBase::finish);
    if paths.case == portcullis_policy::normalize::Case::Insensitive {
        for route in &mut routes {
            route.path = route.path.folded();
        }
    }
    let log = build_log(&mut c, &raw.log);
    let events = super::events::build_events(&mut c, &raw.events, base, env);
    let state = super::state::build_state(&mut c, &raw, &server.data_dir, base, env);
    let admin = super::admin::build_admin(&mut c, &raw, base, env);
    let csrf = super::csrf::build_csrf(&mut c, &raw, base, env, &auth, &mut routes);
    let alerts = super::alerts::build_alerts(&mut c, &raw, base, env);

    c.finish()?;
    let csp_report_path = (raw.headers.csp_report == Some(true)).then(|| super::CSP_REPORT_PATH.to_owned());
    Ok(Config {
        path: path.to_path_buf(),
        server,
        listeners,
        upstreams,
        routes,
        log,
        events,
        headers,
        cors,
        csp_report_path,
        paths,
        roles,
        access,
        state,
        auth,
        bans,
        admin,
        endpoint_limits,
        logins,
        waf,
        csrf,
        openapi,
        alerts,
    })
}

fn build_paths(c: &mut Collector<'_>, raw: &super::raw::RawPaths) -> portcullis_policy::normalize::PathPolicy {
    use portcullis_policy::normalize::{
        Backslash, Case, EncodedPercent, EncodedSlash, PathPolicy, Semicolon, TrailingSlash,
    };
    let d = PathPolicy::default();
    PathPolicy {
        case: choice(
            c,
            raw.case.as_ref(),
            d.case,
            "case",
            &[("insensitive", Case::Insensitive), ("sensitive", Case::Sensitive)],
        ),
        trailing_slash: choice(
            c,
            raw.trailing_slash.as_ref(),
            d.trailing_slash,
            "trailing_slash",
            &[("strip", TrailingSlash::Strip), ("keep", TrailingSlash::Keep)],
        ),
        encoded_slash: choice(
            c,
            raw.encoded_slash.as_ref(),
            d.encoded_slash,
            "encoded_slash",
            &[("reject", EncodedSlash::Reject), ("keep", EncodedSlash::Keep)],
        ),
        encoded_percent: choice(
            c,
            raw.encoded_percent.as_ref(),
            d.encoded_percent,
            "encoded_percent",
            &[("reject", EncodedPercent::Reject), ("keep", EncodedPercent::Keep)],
        ),
        backslash: choice(
            c,
            raw.backslash.as_ref(),
            d.backslash,
            "backslash",
            &[("reject", Backslash::Reject), ("escape", Backslash::Escape)],
        ),
        semicolon: choice(
            c,
            raw.semicolon.as_ref(),
            d.semicolon,
            "semicolon",
            &[("strip", Semicolon::Strip), ("reject", Semicolon::Reject), ("keep", Semicolon::Keep)],
        ),
    }
}

fn build_server(c: &mut Collector<'_>, raw: &RawServer, base: &Path) -> Server {
    let defaults = RequestLimits::default();
    let nets = ip_nets(c, raw.trusted_proxies.as_ref(), "trusted proxy");
    let max_header_count = match &raw.max_header_count {
        None => defaults.max_header_count,
        Some(n) => match usize::try_from(*n.get_ref()) {
            Ok(v) if (1..=10_000).contains(&v) => v,
            _ => {
                c.error(n.span(), "max_header_count is out of range").expected("between 1 and 10000");
                defaults.max_header_count
            }
        },
    };
    let limits = RequestLimits {
        max_uri_bytes: to_usize(size(
            c,
            raw.max_uri_bytes.as_ref(),
            defaults.max_uri_bytes as u64,
            256,
            1 << 20,
            "max_uri_bytes",
        )),
        max_header_count,
        max_header_bytes: to_usize(size(
            c,
            raw.max_header_bytes.as_ref(),
            defaults.max_header_bytes as u64,
            1024,
            1 << 20,
            "max_header_bytes",
        )),
        max_body_bytes: size(c, raw.max_body_bytes.as_ref(), defaults.max_body_bytes, 0, u64::MAX, "max_body_bytes"),
    };
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let workers = match &raw.workers {
        None => cores,
        Some(n) => match usize::try_from(*n.get_ref()) {
            Ok(0) => cores,
            Ok(v) if v <= 256 => v,
            _ => {
                c.error(n.span(), "workers is out of range").expected("between 1 and 256, or 0 for one per core");
                cores
            }
        },
    };
    let data_dir = raw.data_dir.as_ref().map_or_else(|| base.join("data"), |d| base.join(d.get_ref()));
    Server {
        data_dir,
        trusted_proxies: TrustedProxies::new(nets),
        header_read_timeout: duration(
            c,
            raw.header_read_timeout.as_ref(),
            Duration::from_secs(10),
            "header_read_timeout",
        ),
        idle_timeout: duration(c, raw.idle_timeout.as_ref(), Duration::from_secs(60), "idle_timeout"),
        shutdown_timeout: duration(c, raw.shutdown_timeout.as_ref(), Duration::from_secs(30), "shutdown_timeout"),
        limits,
        h2c: raw.h2c.unwrap_or(true),
        workers,
        max_connections_per_ip: match &raw.max_connections_per_ip {
            None => 256,
            Some(n) => usize::try_from(*n.get_ref()).unwrap_or_else(|_| {
                c.error(n.span(), "max_connections_per_ip is negative").expected("0 (no limit) or a positive count");
                256
            }),
        },
        body_pace: Pace {
            timeout: duration(c, raw.body_timeout.as_ref(), Duration::from_secs(20), "body_timeout"),
            min_rate: rate(c, raw.min_body_rate.as_ref(), 500, "min_body_rate"),
        },
        send_pace: Pace {
            timeout: duration(c, raw.send_timeout.as_ref(), Duration::from_secs(20), "send_timeout"),
            min_rate: rate(c, raw.min_send_rate.as_ref(), 500, "min_send_rate"),
        },
    }
}

pub(super) fn build_tls(c: &mut Collector<'_>, raw: &Spanned<RawTls>, base: &Path) -> Option<Tls> {
    let expected =
        "tls = \"self-signed\" or tls = { cert = \"site.pem\", key = \"site.key\", profile = \"intermediate\" }";
    match raw.get_ref() {
        RawTls::Mode(mode) if mode == "self-signed" => Some(Tls {
            source: CertSource::SelfSigned,
            profile: TlsProfile::Intermediate,
            client_auth: None,
            sni: Vec::new(),
        }),
        RawTls::Mode(other) => {
            c.error(raw.span(), format!("unknown tls mode {other:?}")).expected(expected);
            None
        }
        RawTls::Files(files) => {
            let profile = match files.profile.as_deref() {
                None | Some("intermediate") => TlsProfile::Intermediate,
                Some("modern") => TlsProfile::Modern,
                Some(other) => {
                    c.error(raw.span(), format!("unknown TLS profile {other:?}"))
                        .expected("\"intermediate\" or \"modern\"");
                    TlsProfile::Intermediate
                }
            };
            let source = match (&files.cert, &files.key) {
                (Some(cert), Some(key)) => CertSource::Files { cert: base.join(cert), key: base.join(key) },
                (None, None) => CertSource::SelfSigned,
                _ => {
                    c.error(raw.span(), "tls needs both `cert` and `key`, or neither for a self-signed certificate")
                        .expected(expected);
                    return None;
                }
            };
            let client_auth = match (&files.client_ca, files.client_auth.as_deref()) {
                (None, None) => None,
                (Some(ca), None | Some("required")) => Some(ClientAuth { ca: base.join(ca), required: true }),
                (Some(ca), Some("optional")) => Some(ClientAuth { ca: base.join(ca), required: false }),
                (Some(_), Some(other)) => {
                    c.error(raw.span(), format!("unknown client_auth {other:?}"))
                        .expected("\"required\" or \"optional\"");
                    None
                }
                (None, Some(_)) => {
                    c.error(raw.span(), "client_auth needs client_ca, the CA bundle that signs client certificates");
                    None
                }
            };
            let sni = files.sni.iter().flatten().map(|pair| (base.join(&pair.cert), base.join(&pair.key))).collect();
            Some(Tls { source, profile, client_auth, sni })
        }
    }
}

fn build_listeners(c: &mut Collector<'_>, raw: &RawConfig, base: &Path) -> Vec<Listener> {
    if raw.listeners.is_empty() {
        c.file_error("no [[listener]] is configured")
            .help("add one, e.g.\n    [[listener]]\n    name = \"public\"\n    bind = \"127.0.0.1:8080\"");
    }
    let mut out = Vec::new();
    let mut names = HashSet::new();
    let mut binds = HashSet::new();
    for listener in &raw.listeners {
        let l = listener.get_ref();
        let Ok(bind) = l.bind.get_ref().parse::<SocketAddr>() else {
            c.error(l.bind.span(), format!("invalid bind address {:?}", l.bind.get_ref()))
                .expected("an IP and port such as \"127.0.0.1:8080\" or \"[::]:8443\"");
            continue;
        };
        let name = l.name.clone().unwrap_or_else(|| bind.to_string());
        if !names.insert(name.clone()) {
            c.error(listener.span(), format!("duplicate listener name {name:?}"))
                .help("give each listener its own name");
        }
        // Port 0 asks the kernel for a free port: never a clash.
        if bind.port() != 0 && !binds.insert(bind) {
            c.error(l.bind.span(), format!("address {bind} is bound by two listeners")).help("remove one of them");
        }
        let tls = l.tls.as_ref().and_then(|t| build_tls(c, t, base));
        let redirect_http = l.redirect_http.as_ref().and_then(|r| {
            let Ok(addr) = r.get_ref().parse::<SocketAddr>() else {
                c.error(r.span(), format!("invalid redirect_http address {:?}", r.get_ref()))
                    .expected("an IP and port such as \"0.0.0.0:80\"");
                return None;
            };
            if tls.is_none() {
                c.error(r.span(), "redirect_http needs a TLS listener to redirect to")
                    .help("add tls = \"self-signed\" or tls = { cert = \"…\", key = \"…\" } to this listener");
            }
            if addr.port() != 0 && !binds.insert(addr) {
                c.error(r.span(), format!("address {addr} is bound twice")).help("give the redirect its own port");
            }
            Some(addr)
        });
        out.push(Listener { name, bind, tls, redirect_http });
    }
    out
}

fn parse_target(c: &mut Collector<'_>, target: &Spanned<String>) -> Option<Target> {
    let text = target.get_ref().trim();
    if text == "builtin:demo" {
        return Some(Target::Demo);
    }
    let expected = "\"http://host:port\" or \"https://host:port\" (scheme, host and port only), or \"builtin:demo\"";
    let Ok(uri) = text.parse::<Uri>() else {
        c.error(target.span(), format!("invalid upstream target {text:?}")).expected(expected);
        return None;
    };
    let scheme = uri.scheme().cloned();
    let has_path = uri.path_and_query().is_some_and(|pq| pq.as_str() != "/" && !pq.as_str().is_empty());
    match (scheme, uri.authority()) {
        (Some(scheme), Some(authority))
            if (scheme == Scheme::HTTP || scheme == Scheme::HTTPS)
                && !has_path
                && !authority.as_str().contains('@') =>
        {
            let default_port = if scheme == Scheme::HTTPS { 443 } else { 80 };
            let authority = if authority.port().is_some() {
                authority.clone()
            } else {
                format!("{}:{default_port}", authority.host()).parse().ok()?
            };
            Some(Target::Http { scheme, authority })
        }
        _ => {
            c.error(target.span(), format!("invalid upstream target {text:?}")).expected(expected);
            None
        }
    }
}

fn build_upstream(
    c: &mut Collector<'_>,
    raw: &Spanned<RawUpstream>,
    base: &Path,
    files: &Sources<'_>,
) -> Option<Upstream> {
    let u = raw.get_ref();
    let name = u.name.get_ref().trim().to_owned();
    if name.is_empty() {
        c.error(u.name.span(), "upstream name is empty").help("name it, e.g. name = \"api\"");
    }
    if u.targets.get_ref().is_empty() {
        c.error(u.targets.span(), format!("upstream {name:?} has no targets"))
            .expected("targets = [\"http://127.0.0.1:3000\"]");
    }
    let targets: Vec<Target> = u.targets.get_ref().iter().filter_map(|t| parse_target(c, t)).collect();
    let pool_max_idle = match &u.pool_max_idle {
        None => 128,
        Some(n) => match usize::try_from(*n.get_ref()) {
            Ok(v) if v <= 100_000 => v,
            _ => {
                c.error(n.span(), "pool_max_idle is out of range").expected("between 0 and 100000");
                128
            }
        },
    };
    let host_header = match u.host_header.as_ref().map(|h| h.get_ref().as_str()) {
        None | Some("preserve") => HostHeader::Preserve,
        Some("target") => HostHeader::Target,
        Some(other) => {
            if let Some(h) = &u.host_header {
                c.error(h.span(), format!("unknown host_header {other:?}")).expected("\"preserve\" or \"target\"");
            }
            HostHeader::Preserve
        }
    };
    let tls = u.tls.as_ref().map(|t| upstream_tls(c, t, base, files));
    if tls.is_some() && !targets.iter().any(|t| matches!(t, Target::Http { scheme, .. } if *scheme == Scheme::HTTPS)) {
        c.error(u.targets.span(), format!("upstream {name:?} has `tls` but no https:// target"))
            .help("write the targets as https://host:port");
    }
    for target in &targets {
        if let Target::Http { scheme, authority } = target
            && *scheme == Scheme::HTTPS
        {
            let host = tls
                .as_ref()
                .and_then(|t| t.server_name.clone())
                .unwrap_or_else(|| authority.host().trim_start_matches('[').trim_end_matches(']').to_owned());
            if rustls::pki_types::ServerName::try_from(host.clone()).is_err() {
                c.error(raw.span(), format!("upstream {name:?}: {host:?} is not a valid TLS server name"))
                    .help("set tls.server_name to the name in the upstream's certificate");
            }
        }
    }
    let identity = choice(
        c,
        u.identity.as_ref(),
        super::IdentityMode::Headers,
        "identity",
        &[
            ("headers", super::IdentityMode::Headers),
            ("jwt", super::IdentityMode::Jwt),
            ("none", super::IdentityMode::None),
        ],
    );
    let max_in_flight = in_flight(c, u.max_in_flight.as_ref());
    let upstream = Upstream {
        max_in_flight,
        identity,
        tls,
        name,
        connect_timeout: duration(c, u.connect_timeout.as_ref(), Duration::from_secs(5), "connect_timeout"),
        response_timeout: duration(c, u.response_timeout.as_ref(), Duration::from_secs(30), "response_timeout"),
        read_timeout: duration(c, u.read_timeout.as_ref(), Duration::from_secs(60), "read_timeout"),
        failure_cooldown: duration(c, u.failure_cooldown.as_ref(), Duration::from_secs(10), "failure_cooldown"),
        pool_idle_timeout: duration(c, u.pool_idle_timeout.as_ref(), Duration::from_secs(4), "pool_idle_timeout"),
        pool_max_idle,
        host_header,
        targets,
    };
    Some(upstream)
}

/// An upstream's `tls = {…}`: the files it names read and parsed now, each
/// problem reported at the key naming the file.
fn upstream_tls(c: &mut Collector<'_>, raw: &Spanned<RawUpstreamTls>, base: &Path, files: &Sources<'_>) -> UpstreamTls {
    let t = raw.get_ref();
    if t.client_cert.is_some() != t.client_key.is_some() {
        c.error(raw.span(), "upstream tls needs both client_cert and client_key, or neither");
    }
    let ca = t.ca.as_ref().and_then(|path| {
        let certs = pem_certificates(c, path, base, files)?;
        let mut roots = rustls::RootCertStore::empty();
        for cert in &certs {
            if let Err(e) = roots.add(cert.clone()) {
                c.error(path.span(), format!("tls.ca {:?}: unusable CA certificate: {e}", path.get_ref()));
                return None;
            }
        }
        Some(certs)
    });
    let chain = t.client_cert.as_ref().and_then(|path| pem_certificates(c, path, base, files));
    let key = t.client_key.as_ref().and_then(|path| {
        use rustls::pki_types::pem::PemObject;
        let pem = read_named(c, path, base, files)?;
        match rustls::pki_types::PrivateKeyDer::from_pem_slice(&pem) {
            Ok(key) => Some(Arc::new(key)),
            Err(e) => {
                c.error(path.span(), format!("tls.client_key {:?}: no usable private key: {e}", path.get_ref()))
                    .expected("a PEM file with one PKCS#8, PKCS#1 or SEC1 private key");
                None
            }
        }
    });
    let client_cert = chain.zip(key).map(|(chain, key)| super::ClientCert { chain, key });
    UpstreamTls { ca, client_cert, server_name: t.server_name.clone() }
}

/// The certificates in the PEM file `path` names; at least one.
fn pem_certificates(
    c: &mut Collector<'_>,
    path: &Spanned<String>,
    base: &Path,
    files: &Sources<'_>,
) -> Option<Vec<rustls::pki_types::CertificateDer<'static>>> {
    use rustls::pki_types::pem::PemObject;
    let pem = read_named(c, path, base, files)?;
    match rustls::pki_types::CertificateDer::pem_slice_iter(&pem).collect::<Result<Vec<_>, _>>() {
        Ok(certs) if !certs.is_empty() => Some(certs),
        Ok(_) => {
            c.error(path.span(), format!("{:?} has no CERTIFICATE block", path.get_ref()))
                .expected("a PEM file with -----BEGIN CERTIFICATE----- blocks");
            None
        }
        Err(e) => {
            c.error(path.span(), format!("{:?} is not valid PEM: {e}", path.get_ref()))
                .expected("a PEM file with -----BEGIN CERTIFICATE----- blocks");
            None
        }
    }
}

/// The contents of the file `path` names, relative to the configuration.
fn read_named(c: &mut Collector<'_>, path: &Spanned<String>, base: &Path, files: &Sources<'_>) -> Option<Vec<u8>> {
    let full = base.join(path.get_ref());
    match files.read(&full) {
        Ok(bytes) => Some(bytes),
        Err(e) => {
            c.error(path.span(), format!("cannot read {}: {e}", full.display()))
                .help("paths are relative to the configuration file");
            None
        }
    }
}

fn check_unique_upstreams(c: &mut Collector<'_>, raw: &[Spanned<RawUpstream>]) {
    let mut names = HashSet::new();
    for u in raw {
        let name = u.get_ref().name.get_ref().trim();
        if !names.insert(name) {
            c.error(u.get_ref().name.span(), format!("duplicate upstream name {name:?}"))
                .help("upstream names must be unique; routes refer to them by name");
        }
    }
}

fn build_auth(
    c: &mut Collector<'_>,
    raw: &RawRoute,
    route_name: &str,
    route_span: std::ops::Range<usize>,
    configured: &super::auth::Auth,
) -> Option<AuthMode> {
    let Some(auth) = &raw.auth else {
        c.error(route_span, format!("route {route_name:?} does not state `auth`"))
            .expected("auth = \"public\"")
            .help("every route must say how callers authenticate, so nothing is public by accident; write auth = \"public\" if it really is");
        return None;
    };
    let methods = match auth.get_ref() {
        OneOrMany::One(_) | OneOrMany::Many(_) => auth.get_ref().to_vec(),
    };
    if methods.is_empty() {
        c.error(auth.span(), "auth is an empty list").expected("auth = \"public\"");
        return None;
    }
    if methods.iter().any(|m| m == "public") {
        if methods.len() == 1 {
            return Some(AuthMode::Public);
        }
        c.error(auth.span(), "\"public\" cannot be combined with other methods")
            .help("a route is either public or requires authentication");
        return None;
    }
    super::auth::route_methods(c, configured, &methods, auth.span()).map(AuthMode::Required)
}

type HeaderTable = Option<Spanned<std::collections::BTreeMap<String, String>>>;

fn header_pairs(c: &mut Collector<'_>, table: &HeaderTable, what: &str) -> Vec<(HeaderName, HeaderValue)> {
    let Some(table) = table else { return Vec::new() };
    let mut out = Vec::new();
    for (name, value) in table.get_ref() {
        match (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(value)) {
            (Ok(name), Ok(value)) => out.push((name, value)),
            _ => {
                c.error(table.span(), format!("invalid header in `{what}`: {name:?}"))
                    .expected("header names of letters, digits and '-', values of visible ASCII");
            }
        }
    }
    out
}

fn header_names(c: &mut Collector<'_>, list: Option<&Spanned<Vec<String>>>) -> Vec<HeaderName> {
    let Some(list) = list else { return Vec::new() };
    let mut out = Vec::new();
    for name in list.get_ref() {
        match HeaderName::from_bytes(name.as_bytes()) {
            Ok(name) => out.push(name),
            Err(_) => {
                c.error(list.span(), format!("invalid header name {name:?} in `remove`"));
            }
        }
    }
    out
}

fn build_cors(c: &mut Collector<'_>, raw: &Spanned<RawCors>) -> Option<CorsPolicy> {
    let r = raw.get_ref();
    let origins = if r.origins.get_ref().iter().any(|o| o == "*") {
        Origins::Any
    } else {
        Origins::List(r.origins.get_ref().iter().map(|o| o.trim_end_matches('/').to_ascii_lowercase()).collect())
    };
    let mut methods = Vec::new();
    for m in r.methods.clone().unwrap_or_else(|| vec!["GET".into(), "HEAD".into(), "POST".into()]) {
        match Method::from_bytes(m.as_bytes()) {
            Ok(method) if m.bytes().all(|b| b.is_ascii_uppercase()) => methods.push(method),
            _ => {
                c.error(raw.span(), format!("invalid CORS method {m:?}"))
                    .expected("upper-case methods such as [\"GET\", \"POST\"]");
            }
        }
    }
    let names = |c: &mut Collector<'_>, list: &Option<Vec<String>>, what: &str| -> Vec<HeaderName> {
        let mut out = Vec::new();
        for name in list.iter().flatten() {
            match HeaderName::from_bytes(name.as_bytes()) {
                Ok(n) => out.push(n),
                Err(_) => {
                    c.error(raw.span(), format!("invalid header name {name:?} in cors.{what}"));
                }
            }
        }
        out
    };
    let headers = if r.headers.is_some() { names(c, &r.headers, "headers") } else { vec![http::header::CONTENT_TYPE] };
    let expose = names(c, &r.expose, "expose");
    let max_age = match r.max_age.as_deref().map(humantime::parse_duration) {
        None => Some(600),
        Some(Ok(d)) => Some(d.as_secs()),
        Some(Err(e)) => {
            c.error(raw.span(), format!("invalid cors.max_age: {e}")).expected(super::values::DURATION_EXAMPLE);
            None
        }
    };
    let policy = CorsPolicy { origins, methods, headers, expose, credentials: r.credentials.unwrap_or(false), max_age };
    if let Err(e) = policy.validate() {
        c.error(r.origins.span(), e.to_string())
            .help("list the exact origins that may call the API with credentials, e.g. [\"https://app.example.com\"]");
        return None;
    }
    Some(policy)
}

/// `set`, `override` and `remove`, globally (`prefix` "") or per route ("headers.").
fn header_changes(
    c: &mut Collector<'_>,
    set: &HeaderTable,
    overrides: &HeaderTable,
    remove: Option<&Spanned<Vec<String>>>,
    prefix: &str,
) -> HeaderPolicy {
    HeaderPolicy {
        defaults: header_pairs(c, set, &format!("{prefix}set")),
        overrides: header_pairs(c, overrides, &format!("{prefix}override")),
        remove: header_names(c, remove),
        hsts: None,
    }
}

fn build_headers(c: &mut Collector<'_>, raw: &RawHeaders) -> HeaderPolicy {
    let mut policy = match raw.preset.as_ref().map(|p| (p.get_ref().as_str(), p.span())) {
        None | Some(("strict", _)) => HeaderPolicy::strict(),
        Some(("none", _)) => HeaderPolicy::default(),
        Some((other, span)) => {
            c.error(span, format!("unknown header preset {other:?}"))
                .expected("\"strict\" (helmet-equivalent) or \"none\"");
            HeaderPolicy::strict()
        }
    };
    let csp_name = http::header::CONTENT_SECURITY_POLICY;
    if let Some(csp) = &raw.csp {
        match HeaderValue::from_str(csp.get_ref()) {
            Ok(value) => {
                policy.defaults.retain(|(n, _)| *n != csp_name);
                policy.defaults.push((csp_name.clone(), value));
            }
            Err(_) => {
                c.error(csp.span(), "invalid Content-Security-Policy value").expected("visible ASCII on one line");
            }
        }
    }
    if raw.csp_report == Some(true) {
        // Tell browsers where to send violations.
        for (name, value) in &mut policy.defaults {
            if *name == csp_name {
                let with_report = format!("{}; report-uri {}", value.to_str().unwrap_or(""), super::CSP_REPORT_PATH);
                if let Ok(v) = HeaderValue::from_str(&with_report) {
                    *value = v;
                }
            }
        }
    }
    if raw.csp_report_only == Some(true) {
        let report_only = HeaderName::from_static("content-security-policy-report-only");
        for (name, _) in &mut policy.defaults {
            if *name == csp_name {
                *name = report_only.clone();
            }
        }
    }
    if let Some(hsts) = &raw.hsts {
        policy.hsts = match hsts.get_ref() {
            RawHsts::Enabled(false) => None,
            RawHsts::Enabled(true) => Some(Hsts::default().value()),
            RawHsts::Settings(settings) => {
                let defaults = Hsts::default();
                let max_age = match settings.max_age.as_deref().map(humantime::parse_duration) {
                    None => defaults.max_age,
                    Some(Ok(d)) => d.as_secs(),
                    Some(Err(e)) => {
                        c.error(hsts.span(), format!("invalid hsts.max_age: {e}"))
                            .expected("a duration such as \"730days\"");
                        defaults.max_age
                    }
                };
                Some(
                    Hsts {
                        max_age,
                        include_subdomains: settings.include_subdomains.unwrap_or(defaults.include_subdomains),
                        preload: settings.preload.unwrap_or(defaults.preload),
                    }
                    .value(),
                )
            }
        };
    }
    let changes = header_changes(c, &raw.set, &raw.overrides, raw.remove.as_ref(), "");
    let hsts = policy.hsts.clone();
    let mut merged = policy.with(&changes);
    merged.hsts = hsts;
    merged
}

/// The named sections routes refer to.
struct Named<'a> {
    limits: &'a std::collections::BTreeMap<String, std::sync::Arc<portcullis_layers::rate_limit::Limit>>,
    logins: &'a std::collections::BTreeMap<String, std::sync::Arc<portcullis_layers::login::LoginSettings>>,
    waf: Option<&'a mut super::waf::WafBase>,
    openapi: &'a std::collections::BTreeMap<String, super::openapi::OpenApiDoc>,
}

/// Route patterns that normalized request paths can reach: no request path
/// is spelled `/admin/` (trailing slashes stripped), `/%61dmin` or `/café`
/// once normalized, so such a route would silently never match and its
/// requests would fall through to a less specific route.
fn check_route_paths(c: &mut Collector<'_>, raw: &RawConfig, paths: &portcullis_policy::normalize::PathPolicy) {
    for route in &raw.routes {
        let m = route.get_ref().matcher.get_ref();
        if let Ok(pattern) = PathPattern::parse(m.path.get_ref())
            && let Err(e) = pattern.check_normal(paths)
        {
            c.error(m.path.span(), e.to_string())
                .help("write the pattern as normalized paths are spelled (docs/configuration.md, [paths])");
        }
    }
}

fn build_routes(
    c: &mut Collector<'_>,
    raw: &RawConfig,
    upstreams: &[Upstream],
    global: &HeaderPolicy,
    configured: &super::auth::Auth,
    roles: &portcullis_policy::rbac::Roles,
    named: &mut Named<'_>,
) -> Vec<Route> {
    let (limits, logins, openapi) = (named.limits, named.logins, named.openapi);
    if raw.routes.is_empty() {
        c.file_error("no [[route]] is configured")
            .help("every request must match a route; add one, e.g.\n    [[route]]\n    match = { path = \"/**\" }\n    upstream = \"api\"\n    auth = \"public\"");
    }
    let mut names = HashSet::new();
    let mut out = Vec::new();
    for (i, spanned) in raw.routes.iter().enumerate() {
        let r = spanned.get_ref();
        let m = r.matcher.get_ref();
        let path = match PathPattern::parse(m.path.get_ref()) {
            Ok(p) => Some(p),
            Err(e) => {
                c.error(m.path.span(), format!("invalid path pattern {:?}: {e}", m.path.get_ref()))
                    .expected("\"/exact\", \"/users/{id}\", \"/one/*/segment\" or \"/prefix/**\"");
                None
            }
        };
        let host = match &m.host {
            None => None,
            Some(h) => match HostPattern::parse(h.get_ref()) {
                Ok(p) => Some(p),
                Err(e) => {
                    c.error(h.span(), e.to_string());
                    None
                }
            },
        };
        let methods = m.methods.as_ref().map(|ms| {
            let mut parsed = Vec::new();
            for name in ms.get_ref() {
                match Method::from_bytes(name.as_bytes()) {
                    Ok(method) if name.bytes().all(|b| b.is_ascii_uppercase()) => parsed.push(method),
                    _ => {
                        c.error(ms.span(), format!("invalid method {name:?}"))
                            .expected("upper-case HTTP methods such as [\"GET\", \"POST\"]");
                    }
                }
            }
            if ms.get_ref().is_empty() {
                c.error(ms.span(), "methods is an empty list").help("omit `methods` to allow every method");
            }
            parsed
        });
        let default_name = match &m.host {
            Some(h) => format!("{}{}", h.get_ref(), m.path.get_ref()),
            None => m.path.get_ref().clone(),
        };
        let mut name = r.name.clone().unwrap_or(default_name);
        if !names.insert(name.clone()) {
            if r.name.is_some() {
                c.error(spanned.span(), format!("duplicate route name {name:?}")).help("route names must be unique");
            } else {
                name = format!("{name}#{}", i + 1);
                names.insert(name.clone());
            }
        }
        let upstream_name = r.upstream.get_ref();
        let upstream = upstreams.iter().position(|u| u.name == *upstream_name);
        // An upstream in the file with errors of its own is not reported again.
        if upstream.is_none() && !raw.upstreams.iter().any(|u| u.get_ref().name.get_ref() == upstream_name) {
            let known: Vec<&str> = raw.upstreams.iter().map(|u| u.get_ref().name.get_ref().as_str()).collect();
            c.error(r.upstream.span(), format!("route {name:?} names unknown upstream {upstream_name:?}")).expected(
                if known.is_empty() {
                    "an [[upstream]] name (none are defined)".to_owned()
                } else {
                    format!("one of: {}", known.join(", "))
                },
            );
        }
        let auth = build_auth(c, r, &name, spanned.span(), configured);
        let public = matches!(auth, Some(AuthMode::Public));
        let require = super::authz::route_require(c, r.require.as_ref(), &name, path.as_ref(), public, roles);
        let ips = super::authz::route_ips(c, r);
        let route_limits = super::limits::route_limits(c, r.limits.as_ref(), limits, raw);
        let login = super::login::route_login(c, r.login.as_ref(), logins, raw);
        let openapi = super::openapi::route_openapi(c, r.openapi.as_ref(), openapi, raw);
        if r.login.is_none()
            && let Some(names) = &r.limits
            && let Some(by_account) =
                route_limits.iter().find(|l| l.key == portcullis_layers::rate_limit::LimitKey::Account)
        {
            c.error(
                names.span(),
                format!("limit {:?} counts by account, but route {name:?} is not a login route", by_account.name),
            )
            .help("add login = \"NAME\" (a [login.NAME] section says where the account name is), or use a limit keyed by ip");
        }
        let waf = super::waf::route_waf(c, r, &name, named.waf.as_deref_mut());
        let max_in_flight = in_flight(c, r.max_in_flight.as_ref());
        let max_body_bytes = r.max_body_bytes.as_ref().map(|s| size(c, Some(s), 0, 0, u64::MAX, "max_body_bytes"));
        let headers = r.headers.as_ref().map(|changes| {
            let route_changes =
                header_changes(c, &changes.set, &changes.overrides, changes.remove.as_ref(), "headers.");
            global.with(&route_changes)
        });
        if let (Some(path), Some(upstream), Some(auth)) = (path, upstream, auth) {
            let policy = RouteInfo {
                name: Arc::from(name),
                upstream,
                upstream_name: Arc::from(upstreams[upstream].name.as_str()),
                auth,
                max_body_bytes,
                headers: headers.map(Arc::new),
                // Owner rules read path parameters.
                pattern: require.as_ref().and_then(|q| q.owner.as_ref()).map(|_| Arc::new(path.clone())),
                require: require.map(Arc::new),
                ips: ips.map(Arc::new),
                limits: route_limits,
                login,
                csrf: super::csrf::route_csrf(r.csrf.as_ref(), auth),
                websocket: r.websocket.unwrap_or(false),
                ..RouteInfo::default()
            };
            out.push(Route {
                host,
                path,
                methods: methods.filter(|m| !m.is_empty()),
                policy,
                max_in_flight,
                openapi,
                waf,
            });
        }
    }
    out
}

fn build_log(c: &mut Collector<'_>, raw: &RawLog) -> Log {
    let format = match raw.format.as_ref().map(|f| (f.get_ref().as_str(), f.span())) {
        None | Some(("json", _)) => LogFormat::Json,
        Some(("pretty", _)) => LogFormat::Pretty,
        Some((other, span)) => {
            c.error(span, format!("unknown log format {other:?}")).expected("\"json\" or \"pretty\"");
            LogFormat::Json
        }
    };
    let level = raw.level.as_ref().map_or_else(|| "info".to_owned(), |l| l.get_ref().clone());
    if let Some(l) = &raw.level
        && tracing_subscriber::EnvFilter::builder().parse(l.get_ref()).is_err()
    {
        c.error(l.span(), format!("invalid log level {:?}", l.get_ref()))
            .expected("\"error\", \"warn\", \"info\", \"debug\", \"trace\" or a filter like \"info,portcullis=debug\"");
    }
    Log { format, level, access: raw.access.unwrap_or(true) }
}
