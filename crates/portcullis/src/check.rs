//! `portcullis check` findings: configurations that load but are likely
//! mistakes or weaken a defence. Each later defence adds its own checks here.

use std::fmt;

use portcullis_policy::route::{RouteEntry, RouteTable};

use crate::config::{Config, IdentityMode, Target};

/// How serious a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Worth a look.
    Warning,
}

/// One finding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// Severity.
    pub severity: Severity,
    /// Stable identifier, e.g. `route.shadowed`.
    pub code: &'static str,
    /// What is wrong.
    pub message: String,
    /// How to fix it.
    pub help: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let level = match self.severity {
            Severity::Warning => "warning",
        };
        write!(f, "{level}[{}]: {}\n  help: {}", self.code, self.message, self.help)
    }
}

/// Everything `check` reports about a loaded configuration.
#[must_use]
pub fn findings(config: &Config) -> Vec<Finding> {
    let mut out = Vec::new();
    shadowed_routes(config, &mut out);
    listeners_without_tls(config, &mut out);
    hsts_and_csp(config, &mut out);
    identity_headers_off_host(config, &mut out);
    admin_paths_public(config, &mut out);
    rate_limit_gaps(config, &mut out);
    jwt_without_audience(config, &mut out);
    admin_exposed(config, &mut out);
    csrf_gaps(config, &mut out);
    waf_gaps(config, &mut out);
    path_ambiguity(config, &mut out);
    account_gaps(config, &mut out);
    audit_key_per_instance(config, &mut out);
    out
}

/// A PostgreSQL store is there to be shared by instances; without
/// `[state] audit_key` each generates its own key file, and the audit trail
/// they write together does not verify.
fn audit_key_per_instance(config: &Config, out: &mut Vec<Finding>) {
    if config.state.store.starts_with("postgres") && config.state.audit_key.is_none() {
        out.push(warning(
            "audit.key_per_instance",
            "the store is PostgreSQL but [state] audit_key is not set: each instance generates its own audit key".into(),
            "set [state] audit_key = \"${PORTCULLIS_AUDIT_KEY}\" to the same key on every instance, or copy data_dir/audit.key to each",
        ));
    }
}

/// `[auth.accounts]` settings that let strangers in or leave the most
/// powerful accounts on a password alone. Weak hashing parameters are not a
/// finding: anything below OWASP's floor is refused when the file loads.
fn account_gaps(config: &Config, out: &mut Vec<Finding>) {
    use crate::config::accounts::Registration;
    let Some(accounts) = &config.auth.accounts else { return };
    if accounts.registration == Registration::Open {
        out.push(warning(
            "accounts.open_registration",
            "[auth.accounts] registration = \"open\": anyone who reaches the gateway can create an account".into(),
            "use \"invite\" (portcullis invite create) or \"closed\" (portcullis user add) unless strangers \
             are meant to sign up; give new accounts no role that reaches private data",
        ));
    }
    // An admin role: one named "admin", or one granting every permission.
    let mut admins: Vec<&str> = config
        .roles
        .names()
        .filter(|role| *role == "admin" || config.roles.permissions(role).iter().any(|p| p == "*"))
        .filter(|role| !accounts.mfa_required_roles.iter().any(|r| r == role))
        .collect();
    admins.sort_unstable();
    if !admins.is_empty() {
        out.push(warning(
            "accounts.admin_without_mfa",
            format!(
                "admin role(s) {} (named \"admin\" or granting \"*\") are not in [auth.accounts] mfa_required_roles",
                admins.join(", ")
            ),
            "add them to mfa_required_roles: a phished or reused password alone would open an admin account",
        ));
    }
}

/// Path settings that let a spelling through which a backend may read as
/// another path.
fn path_ambiguity(config: &Config, out: &mut Vec<Finding>) {
    use portcullis_policy::normalize::EncodedPercent;
    if config.paths.encoded_percent == EncodedPercent::Keep {
        out.push(warning(
            "paths.encoded_percent",
            "[paths] encoded_percent = \"keep\": `%252e%252e` passes as a name, and a backend that decodes twice reads `..`"
                .into(),
            "keep the default \"reject\" unless every upstream is known to decode the path exactly once",
        ));
    }
}

/// Defence 3: public-facing routes without a blocking WAF, and WAF settings
/// that let requests through uninspected.
fn waf_gaps(config: &Config, out: &mut Vec<Finding>) {
    use portcullis_policy::waf::Mode;
    let exposed = config.listeners.iter().any(|l| !l.bind.ip().is_loopback());
    let Some(waf) = &config.waf else {
        if exposed {
            out.push(warning(
                "waf.off",
                "no [waf] section: SQL injection, XSS and other injection attacks reach the upstream uninspected".into(),
                "add [waf] with `rules` pointing at an OWASP CRS v4 directory (docs/waf.md); start with mode = \"detect\" to see what it would block",
            ));
        }
        return;
    };
    let detect: Vec<&str> =
        config.routes.iter().filter(|r| r.waf.is_some_and(|w| w.mode == Mode::Detect)).map(|r| r.name()).collect();
    if !detect.is_empty() {
        out.push(warning(
            "waf.detect_only",
            format!("the WAF only logs on route(s) {}", detect.join(", ")),
            "once the events show no false positives (or exclusions cover them), switch to mode = \"block\"",
        ));
    }
    if waf.fail_open {
        out.push(warning(
            "waf.fail_open",
            "[waf] on_overload = \"open\": under load, requests pass uninspected".into(),
            "keep the default \"closed\" and size `workers` for the load; an attacker can create the overload",
        ));
    }
    if !waf.refuse_over_limit {
        out.push(warning(
            "waf.partial_bodies",
            format!("[waf] over_limit = \"pass\": bodies over {} bytes are inspected only in part", waf.body_limit),
            "keep over_limit = \"refuse\" and raise body_limit (or the route's max_body_bytes) to what uploads really need",
        ));
    }
}

/// The admin API controls bans and exposes metrics: it belongs on loopback
/// or a management network behind its own firewall.
fn admin_exposed(config: &Config, out: &mut Vec<Finding>) {
    if let Some(admin) = config.admin.as_ref().filter(|a| !a.bind.ip().is_loopback()) {
        out.push(warning(
            "admin.remote",
            format!("the admin API listens on {}, not on loopback", admin.bind),
            "bind [admin] to 127.0.0.1 (reach it over SSH or a sidecar), or make sure only a management network can reach that address",
        ));
    }
}

/// `identity = "headers"` is only as trustworthy as the upstream's isolation:
/// anyone who reaches a non-loopback upstream directly can send the headers.
fn identity_headers_off_host(config: &Config, out: &mut Vec<Finding>) {
    let authenticated: std::collections::HashSet<usize> = config
        .routes
        .iter()
        .filter(|r| matches!(r.policy.auth, portcullis_layers::AuthMode::Required(_)))
        .map(|r| r.policy.upstream)
        .collect();
    for (index, upstream) in config.upstreams.iter().enumerate() {
        if upstream.identity != IdentityMode::Headers || !authenticated.contains(&index) {
            continue;
        }
        let remote = upstream.targets.iter().find(|t| match t {
            Target::Http { authority, .. } => !crate::config::is_loopback_host(authority.host()),
            Target::Demo => false,
        });
        if let Some(target) = remote {
            out.push(warning(
                "auth.identity_headers_remote",
                format!(
                    "upstream {:?} ({target}) learns identities from X-Portcullis-* headers, which anyone reaching it directly can forge",
                    upstream.name
                ),
                "set identity = \"jwt\" on the upstream (it verifies the gateway's signature), or make sure only the gateway can reach it (firewall, private network, mTLS)",
            ));
        }
    }
}

/// Paths where frameworks and tools put administration and diagnostics.
const ADMIN_PATHS: &[&str] = &[
    "/admin",
    "/administrator",
    "/internal",
    "/actuator",
    "/actuator/env",
    "/metrics",
    "/debug",
    "/management",
    "/manage",
    "/console",
    "/graphql",
    "/swagger",
    "/swagger-ui",
    "/api-docs",
    "/server-status",
    "/.env",
    "/.git/config",
    "/phpmyadmin",
];

/// Admin-looking paths that a public route would serve (the route that wins
/// for them, as the gateway routes, is public).
fn admin_paths_public(config: &Config, out: &mut Vec<Finding>) {
    let table = config.route_index();
    let mut flagged: Vec<(&str, &str)> = Vec::new();
    for path in ADMIN_PATHS {
        let key = config.paths.match_key(path);
        if let portcullis_policy::route::Match::Found(i) = table.find(None, &key, &http::Method::GET)
            && let Some(route) = config.routes.get(*i)
            && route.policy.auth == portcullis_layers::AuthMode::Public
        {
            flagged.push((path, route.name()));
        }
    }
    if flagged.is_empty() {
        return;
    }
    let list = flagged.iter().map(|(p, r)| format!("{p} (route {r:?})")).collect::<Vec<_>>().join(", ");
    out.push(warning(
        "authz.admin_public",
        format!("administrative paths are served by public routes: {list}"),
        "add a route for them with auth and require (e.g. match = { path = \"/admin/**\" }, auth = \"jwt\", require = { roles = [\"admin\"] }), or make the catch-all route authenticated",
    ));
}

/// Path segments that name a login endpoint (NestJS/Passport, Express,
/// Rails/Devise, OAuth token endpoints).
const LOGIN_SEGMENTS: &[&str] = &["login", "signin", "sign-in", "sign_in", "token", "session", "sessions"];

/// Login routes without a rate limit, and public listeners without any
/// per-IP limit.
fn rate_limit_gaps(config: &Config, out: &mut Vec<Finding>) {
    // A route written for a login endpoint names it literally; catch-alls
    // (`/api/**`) are judged by the per-IP check below instead.
    let unlimited: Vec<String> = config
        .routes
        .iter()
        .filter(|r| {
            r.policy.limits.is_empty()
                && r.policy.login.is_none()
                && r.methods.as_ref().is_none_or(|m| m.contains(&http::Method::POST))
        })
        .filter(|r| r.path.as_str().split('/').any(|seg| LOGIN_SEGMENTS.contains(&seg.to_ascii_lowercase().as_str())))
        .map(|r| format!("{:?} ({})", r.name(), r.path.as_str()))
        .collect();
    if !unlimited.is_empty() {
        out.push(warning(
            "ratelimit.login_unlimited",
            format!("login routes have no rate limit: {}", unlimited.join(", ")),
            "protect login routes with login = \"NAME\" and a [login.NAME] section (backoff per account and per IP), or at least a tight per-IP limit (e.g. [limits.login] key = \"ip\", rate = \"5/min\", burst = 10), so passwords cannot be guessed at line rate",
        ));
    }
    if matches!(config.state.shared, crate::config::state::Shared::Redis(_)) {
        let open: Vec<&str> = config.logins.values().filter(|l| l.fail_open).map(|l| l.name.as_ref()).collect();
        if !open.is_empty() {
            out.push(warning(
                "ratelimit.login_fail_open",
                format!(
                    "Redis configured fail-open on login protection: while Redis is unreachable, [login.{}] lets every attempt through uncounted",
                    open.join("], [login.")
                ),
                "remove on_store_failure = \"open\" (the default is \"closed\"): a login refused with 503 during an outage is better than unlimited password guessing",
            ));
        }
    }
    let public_listener = config.listeners.iter().any(|l| !l.bind.ip().is_loopback());
    let ip_limited = config
        .routes
        .iter()
        .any(|r| r.policy.limits.iter().any(|l| l.key == portcullis_layers::rate_limit::LimitKey::Ip));
    if public_listener && !ip_limited && !config.routes.is_empty() {
        out.push(warning(
            "ratelimit.no_ip_limit",
            "a listener accepts connections from the network but no route has a per-IP rate limit".into(),
            "add [limits.per_ip] key = \"ip\" with a rate your clients never reach, and list it on the routes (limits = [\"per_ip\"])",
        ));
    }
}

/// A JWT issuer without an audience accepts tokens it minted for any service.
fn jwt_without_audience(config: &Config, out: &mut Vec<Finding>) {
    for issuer in config.auth.jwt.iter().filter(|i| i.policy.audiences.is_empty()) {
        out.push(warning(
            "auth.jwt_no_audience",
            format!(
                "[auth.jwt] issuer {:?} has no audience: tokens it issued for other services are accepted",
                issuer.policy.issuer
            ),
            "set audience = \"<this API's identifier>\" as registered with the issuer",
        ));
    }
}

fn warning(code: &'static str, message: String, help: &str) -> Finding {
    Finding { severity: Severity::Warning, code, message, help: help.to_owned() }
}

fn listeners_without_tls(config: &Config, out: &mut Vec<Finding>) {
    for listener in &config.listeners {
        if listener.tls.is_none() && !listener.bind.ip().is_loopback() {
            out.push(warning(
                "tls.plaintext_listener",
                format!("listener {:?} on {} serves plain HTTP on a non-loopback address", listener.name, listener.bind),
                "add tls = { cert = \"…\", key = \"…\" } (and redirect_http for port 80), or bind to 127.0.0.1 behind a TLS-terminating proxy",
            ));
        }
    }
}

fn hsts_and_csp(config: &Config, out: &mut Vec<Finding>) {
    let tls = config.listeners.iter().any(|l| l.tls.is_some());
    if tls && config.headers.hsts.is_none() {
        out.push(warning(
            "headers.hsts_off",
            "HSTS is off: browsers may be downgraded to plain HTTP".to_owned(),
            "remove `hsts = false` from [headers]",
        ));
    }
    let policies = std::iter::once(("[headers]".to_owned(), &config.headers)).chain(
        config.routes.iter().filter_map(|r| r.policy.headers.as_deref().map(|h| (format!("route {:?}", r.name()), h))),
    );
    for (place, policy) in policies {
        // An override is what browsers get; a default only when the upstream sends none.
        let csp = policy
            .overrides
            .iter()
            .chain(&policy.defaults)
            .find(|(name, _)| name == http::header::CONTENT_SECURITY_POLICY)
            .and_then(|(_, value)| value.to_str().ok());
        match csp {
            None => out.push(warning(
                "headers.no_csp",
                format!("{place} sends no Content-Security-Policy (report-only does not protect)"),
                "keep the default CSP or set csp = \"default-src 'self'\" in [headers]",
            )),
            Some(csp) => {
                for (weakness, needle) in
                    [("'unsafe-inline' scripts", "'unsafe-inline'"), ("'unsafe-eval'", "'unsafe-eval'")]
                {
                    if csp_script_sources(csp).any(|source| source == needle) {
                        out.push(warning(
                            "headers.weak_csp",
                            format!(
                                "{place}: the Content-Security-Policy allows {weakness}, which defeats XSS protection"
                            ),
                            "use nonces or hashes for inline scripts instead",
                        ));
                    }
                }
            }
        }
    }
}

/// The sources that govern scripts: `script-src`, else `default-src`.
fn csp_script_sources(csp: &str) -> impl Iterator<Item = &str> {
    let directives: Vec<(&str, &str)> =
        csp.split(';').filter_map(|d| d.trim().split_once(' ').or(Some((d.trim(), "")))).collect();
    let pick = directives
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case("script-src"))
        .or_else(|| directives.iter().find(|(name, _)| name.eq_ignore_ascii_case("default-src")))
        .map_or("", |(_, sources)| *sources);
    pick.split_whitespace()
}

fn shadowed_routes(config: &Config, out: &mut Vec<Finding>) {
    let entries = config
        .routes
        .iter()
        .map(|r| RouteEntry { host: r.host.clone(), path: r.path.clone(), methods: r.methods.clone(), value: r.name() })
        .collect();
    let table = RouteTable::new(entries);
    for (winner, shadowed) in table.shadowed() {
        out.push(Finding {
            severity: Severity::Warning,
            code: "route.shadowed",
            message: format!(
                "route {:?} can never match: route {:?} has the same host and path and takes the same methods",
                shadowed.value, winner.value
            ),
            help: "remove one of the routes, or make them differ by host, path or methods".to_owned(),
        });
    }
}

/// Session routes without CSRF checks accept forged browser requests; a
/// generated token key does not survive a restart or reach other instances.
fn csrf_gaps(config: &Config, out: &mut Vec<Finding>) {
    let unprotected: Vec<&str> = config
        .routes
        .iter()
        .filter(|r| !r.policy.csrf && matches!(r.policy.auth, portcullis_layers::AuthMode::Required(m) if m.contains(portcullis_policy::AuthMethod::Session) || m.contains(portcullis_policy::AuthMethod::Account)))
        .map(|r| r.name())
        .collect();
    if !unprotected.is_empty() {
        out.push(warning(
            "csrf.off",
            format!("route(s) {} accept browser sessions without CSRF checks", unprotected.join(", ")),
            "remove csrf = false from the route(s), or set [csrf] mode = \"origin+token\" (the default)",
        ));
    }
    if config.csrf.as_ref().is_some_and(|c| c.key_source == crate::config::csrf::KeySource::Generated) {
        out.push(warning(
            "csrf.key_generated",
            "the CSRF token key is generated per process: tokens break at every restart and between instances".to_owned(),
            "set [csrf] secret = \"${CSRF_SECRET}\" (or [auth.session] cookie_secret) to 32+ random bytes shared by every instance",
        ));
    }
}
