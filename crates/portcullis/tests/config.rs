//! Configuration loading: every example loads; errors are collected, each
//! with file, line, column, expectation and fix.

use std::path::Path;

use portcullis::config::{self, ConfigErrors, Sink, Target};

fn parse(toml: &str) -> Result<config::Config, ConfigErrors> {
    config::parse(Path::new("/etc/portcullis/test.toml"), toml, |name| (name == "SET").then(|| "value".to_owned()))
}

fn errors(toml: &str) -> Vec<config::ConfigError> {
    parse(toml).expect_err("config should be refused").0
}

const MINIMAL: &str = r#"
[[listener]]
bind = "127.0.0.1:8080"

[[upstream]]
name = "api"
targets = ["http://127.0.0.1:3000"]

[[route]]
match = { path = "/api/**" }
upstream = "api"
auth = "public"
"#;

#[test]
fn every_example_config_loads() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let mut count = 0;
    for entry in std::fs::read_dir(&root).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            config::load(&path).unwrap_or_else(|e| panic!("{}:\n{e}", path.display()));
            count += 1;
        }
    }
    assert!(count >= 1, "no example configs found in {}", root.display());
}

#[test]
fn minimal_config_gets_secure_defaults() {
    let c = parse(MINIMAL).unwrap();
    assert_eq!(c.server.header_read_timeout.as_secs(), 10);
    assert_eq!(c.server.idle_timeout.as_secs(), 60);
    assert_eq!(c.server.limits.max_body_bytes, 10 * 1024 * 1024);
    assert!(c.server.trusted_proxies.is_empty());
    assert_eq!(c.upstreams[0].connect_timeout.as_secs(), 5);
    assert_eq!(
        c.upstreams[0].targets,
        vec![Target::Http { scheme: http::uri::Scheme::HTTP, authority: "127.0.0.1:3000".parse().unwrap() }]
    );
    assert_eq!(c.events.sinks, vec![Sink::Stdout]);
    assert_eq!(c.routes[0].name(), "/api/**");
    // Relative paths are relative to the config file.
    assert_eq!(c.server.data_dir, Path::new("/etc/portcullis/data"));
}

#[test]
fn a_route_without_auth_is_refused_with_position_and_fix() {
    let errs = errors(&MINIMAL.replace("auth = \"public\"\n", ""));
    assert_eq!(errs.len(), 1);
    let e = &errs[0];
    assert_eq!((e.line, e.column), (9, 1), "points at the [[route]] header");
    assert!(e.message.contains("does not state `auth`"), "{}", e.message);
    assert_eq!(e.expected.as_deref(), Some("auth = \"public\""));
    assert!(e.help.as_deref().unwrap().contains("nothing is public by accident"));
    let shown = e.to_string();
    assert!(shown.starts_with("/etc/portcullis/test.toml:9:1: "), "{shown}");
}

#[test]
fn unknown_keys_are_refused_at_their_position() {
    let errs =
        errors(&MINIMAL.replace("upstream = \"api\"\n", "upstream = \"api\"\nrequre = { roles = [\"admin\"] }\n"));
    assert_eq!(errs.len(), 1);
    assert!(errs[0].message.contains("unknown field `requre`"), "{}", errs[0].message);
    assert_eq!(errs[0].line, 12);
}

#[test]
fn all_errors_are_collected_in_one_pass() {
    let toml = r#"
[server]
idle_timeout = "soon"
max_body_bytes = "lots"
trusted_proxies = ["10.0.0.0/8", "not-an-ip"]

[[listener]]
bind = "localhost"

[[upstream]]
name = "api"
targets = ["ftp://x", "https://secure:443"]

[[route]]
match = { path = "no-slash", methods = ["get"] }
upstream = "apii"
auth = ["jwt"]

[log]
format = "xml"

[events]
sinks = ["syslog"]
"#;
    let errs = errors(toml);
    let messages: Vec<String> = errs.iter().map(|e| format!("{}:{} {}", e.line, e.column, e.message)).collect();
    let expect = [
        "invalid idle_timeout",
        "invalid max_body_bytes",
        "invalid trusted proxy \"not-an-ip\"",
        "invalid bind address \"localhost\"",
        "invalid upstream target \"ftp://x\"",
        "invalid path pattern \"no-slash\"",
        "invalid method \"get\"",
        "unknown upstream \"apii\"",
        "authentication method \"jwt\" is not configured",
        "unknown log format \"xml\"",
        "unknown event sink \"syslog\"",
    ];
    for needle in expect {
        assert!(messages.iter().any(|m| m.contains(needle)), "missing {needle:?} in {messages:#?}");
    }
    assert_eq!(errs.len(), expect.len(), "{messages:#?}");
    // Each points at its own line.
    let idle = errs.iter().find(|e| e.message.contains("idle_timeout")).unwrap();
    assert_eq!(idle.line, 3);
    let upstream = errs.iter().find(|e| e.message.contains("apii")).unwrap();
    assert_eq!(upstream.line, 16);
    assert_eq!(upstream.expected.as_deref(), Some("one of: api"));
}

#[test]
fn duplicates_and_empty_sections_are_refused() {
    let errs = errors("");
    assert!(errs.iter().any(|e| e.message.contains("no [[listener]]")));
    assert!(errs.iter().any(|e| e.message.contains("no [[route]]")));

    let dup = format!(
        "{MINIMAL}\n[[upstream]]\nname = \"api\"\ntargets = [\"builtin:demo\"]\n[[listener]]\nbind = \"127.0.0.1:8080\"\n"
    );
    let errs = errors(&dup);
    assert!(errs.iter().any(|e| e.message.contains("duplicate upstream name \"api\"")), "{errs:?}");
    assert!(errs.iter().any(|e| e.message.contains("bound by two listeners")), "{errs:?}");
}

#[test]
fn sizes_and_durations_accept_units_and_reject_nonsense() {
    let c = parse(&MINIMAL.replace(
        "[[listener]]",
        "[server]\nmax_body_bytes = \"1MiB\"\nmax_header_bytes = 4096\nshutdown_timeout = \"1m 30s\"\n\n[[listener]]",
    ))
    .unwrap();
    assert_eq!(c.server.limits.max_body_bytes, 1024 * 1024);
    assert_eq!(c.server.limits.max_header_bytes, 4096);
    assert_eq!(c.server.shutdown_timeout.as_secs(), 90);

    let errs = errors(
        &MINIMAL.replace("[[listener]]", "[server]\nmax_header_bytes = 10\nidle_timeout = \"0s\"\n\n[[listener]]"),
    );
    assert!(errs.iter().any(|e| e.message.contains("max_header_bytes 10 is out of range")), "{errs:?}");
    assert!(errs.iter().any(|e| e.message.contains("idle_timeout must be greater than zero")), "{errs:?}");
}

#[test]
fn public_cannot_be_mixed_with_other_methods() {
    let errs = errors(&MINIMAL.replace("auth = \"public\"", "auth = [\"public\", \"jwt\"]"));
    assert!(errs.iter().any(|e| e.message.contains("cannot be combined")), "{errs:?}");
}

#[test]
fn check_reports_shadowed_routes() {
    let toml = format!(
        "{MINIMAL}\n[[route]]\nname = \"twin\"\nmatch = {{ path = \"/api/**\" }}\nupstream = \"api\"\nauth = \"public\"\n"
    );
    let c = parse(&toml).unwrap();
    let findings = portcullis::check::findings(&c);
    assert_eq!(findings.len(), 1, "{findings:?}");
    assert_eq!(findings[0].code, "route.shadowed");
    assert!(findings[0].message.contains("\"twin\" can never match"), "{}", findings[0].message);
    assert!(portcullis::check::findings(&parse(MINIMAL).unwrap()).is_empty());
}

#[test]
fn cors_wildcard_with_credentials_is_refused_at_load() {
    let errs = errors(&format!("{MINIMAL}\n[cors]\norigins = [\"*\"]\ncredentials = true\n"));
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(errs[0].message.contains("wildcard origin cannot be combined with credentials"), "{}", errs[0].message);
    assert!(parse(&format!("{MINIMAL}\n[cors]\norigins = [\"*\"]\n")).is_ok());
}

#[test]
fn check_reports_plaintext_listeners_hsts_off_and_weak_csp() {
    let codes = |toml: &str| -> Vec<&'static str> {
        portcullis::check::findings(&parse(toml).unwrap())
            .iter()
            .map(|f| f.code)
            .filter(|c| !c.starts_with("ratelimit.") && !c.starts_with("waf."))
            .collect()
    };
    assert!(codes(MINIMAL).is_empty(), "loopback plain HTTP with default headers is fine");
    assert_eq!(codes(&MINIMAL.replace("127.0.0.1:8080", "0.0.0.0:8080")), ["tls.plaintext_listener"]);
    let tls = MINIMAL.replace("bind = \"127.0.0.1:8080\"", "bind = \"0.0.0.0:8443\"\ntls = \"self-signed\"");
    assert!(codes(&tls).is_empty());
    assert_eq!(codes(&format!("{tls}\n[headers]\nhsts = false\n")), ["headers.hsts_off"]);
    assert_eq!(codes(&format!("{MINIMAL}\n[headers]\npreset = \"none\"\n")), ["headers.no_csp"]);
    assert_eq!(
        codes(&format!(
            "{MINIMAL}\n[headers]\ncsp = \"default-src 'self'; script-src 'self' 'unsafe-inline' 'unsafe-eval'\"\n"
        )),
        ["headers.weak_csp", "headers.weak_csp"]
    );
    // An override is what browsers get, even with the strict default in place.
    assert_eq!(
        codes(&format!(
            "{MINIMAL}\n[headers]\noverride = {{ \"content-security-policy\" = \"script-src 'unsafe-eval'\" }}\n"
        )),
        ["headers.weak_csp"]
    );
    // unsafe-inline for styles only is not a script weakness.
    assert!(
        codes(&format!("{MINIMAL}\n[headers]\ncsp = \"default-src 'self'; style-src 'unsafe-inline'\"\n")).is_empty()
    );
}

#[test]
fn state_store_defaults_to_sqlite_in_the_data_dir_and_resolves_relative_paths_there() {
    let store = |extra: &str| parse(&format!("{MINIMAL}\n{extra}")).unwrap().state.store;
    assert_eq!(store(""), "sqlite:///etc/portcullis/data/portcullis.db");
    assert_eq!(store("[state]\nstore = \"sqlite://keys.db\"\n"), "sqlite:///etc/portcullis/data/keys.db");
    assert_eq!(store("[state]\nstore = \"sqlite:///var/lib/p/keys.db\"\n"), "sqlite:///var/lib/p/keys.db");
    let pg = "postgresql://portcullis@db.internal:5432/portcullis?sslmode=disable";
    assert_eq!(store(&format!("[state]\nstore = \"{pg}\"\n")), pg);
}

#[test]
fn state_store_refuses_other_schemes_without_repeating_passwords() {
    for (url, message) in [
        ("mysql://app:hunter2@db/keys", "unsupported store \"mysql://app:***@db/keys\""),
        ("/var/lib/keys.db", "unsupported store"),
        ("sqlite://", "it must name a file"),
        ("sqlite://keys.db?mode=ro", "it must name a file"),
        ("sqlite://:memory:", "it must name a file"),
    ] {
        let toml = format!("{MINIMAL}\n[state]\nstore = \"{url}\"\n");
        let errs = errors(&toml);
        assert_eq!(errs.len(), 1, "{url}: {errs:?}");
        assert!(errs[0].message.contains(message), "{url}: {}", errs[0].message);
        assert!(!errs[0].message.contains("hunter2"));
        assert!(errs[0].expected.as_deref().unwrap().contains("postgres://"), "{errs:?}");
        assert_eq!(errs[0].line, toml.lines().position(|l| l.starts_with("store")).unwrap() + 1, "{url}");
    }
}

#[test]
fn api_key_header_and_cache_ttl() {
    let api_keys = |body: &str| parse(&format!("{MINIMAL}\n[auth.api_key]\n{body}")).unwrap().auth.api_keys.unwrap();
    assert!(parse(MINIMAL).unwrap().auth.api_keys.is_none());
    let defaults = api_keys("");
    assert_eq!((defaults.header, defaults.cache_ttl), (None, std::time::Duration::from_secs(10)));
    let set = api_keys("header = \"X-Api-Key\"\ncache_ttl = \"1m\"\n");
    assert_eq!(set.header.unwrap().as_str(), "x-api-key");
    assert_eq!(set.cache_ttl, std::time::Duration::from_secs(60));
    assert_eq!(api_keys("cache_ttl = \"0s\"\n").cache_ttl, std::time::Duration::ZERO, "0s: ask the store every time");

    for (body, message) in [
        ("header = \"Authorization\"", "cannot carry API keys"),
        ("header = \"cookie\"", "cannot carry API keys"),
        ("header = \"Connection\"", "cannot carry API keys"),
        ("header = \"transfer-encoding\"", "cannot carry API keys"),
        ("header = \"x-portcullis-key\"", "cannot carry API keys"),
        ("header = \"x api key\"", "invalid header name"),
        ("cache_ttl = \"1h\"", "cache_ttl \"1h\" is too long"),
        ("cache_ttl = \"soon\"", "invalid cache_ttl"),
        ("ttl = \"10s\"", "unknown field `ttl`"),
    ] {
        let errs = errors(&format!("{MINIMAL}\n[auth.api_key]\n{body}\n"));
        assert_eq!(errs.len(), 1, "{body}: {errs:?}");
        assert!(errs[0].message.contains(message), "{body}: {}", errs[0].message);
        assert!(errs[0].expected.is_some() || errs[0].help.is_some(), "{body}: {errs:?}");
    }
}

// --- [auth.oidc] and [auth.session] -------------------------------------------------------

const OIDC: &str = r#"
[auth.oidc]
issuer = "https://id.example.com/realms/main/"
client_id = "portcullis"
client_secret = "${SET}"
public_url = "https://app.example.com/"
"#;

#[test]
fn oidc_defaults() {
    let c = parse(&format!("{MINIMAL}{OIDC}")).unwrap();
    let oidc = c.auth.oidc.unwrap();
    assert_eq!(oidc.issuer, "https://id.example.com/realms/main/", "the issuer is kept as written");
    assert_eq!(oidc.public_url, "https://app.example.com");
    assert_eq!(oidc.redirect_url, "https://app.example.com/.portcullis/callback");
    assert_eq!(oidc.scopes, ["openid", "profile", "email"]);
    assert_eq!(oidc.roles_claim, ["roles"]);
    assert_eq!(oidc.lifetime, std::time::Duration::from_secs(8 * 3600));
    assert!(oidc.cookie_secret.is_none() && oidc.ca.is_none() && oidc.post_logout_redirect.is_none());
    assert_eq!(oidc.client_secret.as_ref().map(|s| s.expose()), Some("value"));
    // Secrets never print.
    assert!(!format!("{oidc:?}").contains("\"value\""), "{oidc:?}");
}

#[test]
fn oidc_full_section() {
    let toml = format!(
        r#"{MINIMAL}{OIDC}scopes = ["email", "offline_access"]
roles_claim = ["realm_access.roles", "groups"]
role_map = {{ "app-admin" = "admin" }}
post_logout_redirect = "https://app.example.com/bye"

[auth.session]
cookie_secret = "0123456789abcdef0123456789abcdef-long"
lifetime = "1h"
"#
    );
    let oidc = parse(&toml).unwrap().auth.oidc.unwrap();
    assert_eq!(oidc.scopes, ["openid", "email", "offline_access"], "openid is added");
    assert_eq!(oidc.roles_claim, ["realm_access.roles", "groups"]);
    assert_eq!(oidc.role_map["app-admin"], "admin");
    assert_eq!(oidc.post_logout_redirect.as_deref(), Some("https://app.example.com/bye"));
    assert_eq!(oidc.lifetime, std::time::Duration::from_secs(3600));
    assert!(oidc.cookie_secret.is_some());
}

#[test]
fn oidc_allows_plain_http_only_on_loopback() {
    let local = OIDC
        .replace("https://id.example.com/realms/main/", "http://127.0.0.1:9000")
        .replace("https://app.example.com/", "http://localhost:8080");
    assert!(parse(&format!("{MINIMAL}{local}")).is_ok());
    let errs = errors(&format!("{MINIMAL}{}", OIDC.replace("https://id.example.com", "http://id.example.com")));
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(errs[0].message.contains("issuer must use https"), "{}", errs[0]);
    assert!(errs[0].help.as_deref().unwrap_or_default().contains("loopback"));
}

#[test]
fn oidc_errors_are_collected_with_positions() {
    let toml = format!(
        r#"{MINIMAL}
[auth.oidc]
issuer = "not a url"
client_id = ""
client_secret = "${{UNSET}}"
public_url = "https://app.example.com/app"
ca = "missing-ca.pem"
roles_claim = "realm_access..roles"

[auth.session]
cookie_secret = "too-short"
lifetime = "soon"
"#
    );
    let errs = errors(&toml);
    let messages: Vec<&str> = errs.iter().map(|e| e.message.as_str()).collect();
    for needle in [
        "issuer is not a valid URL",
        "client_id is empty",
        "client_secret: environment variable UNSET is not set",
        "public_url must be an origin",
        "CA bundle",
        "invalid roles_claim",
        "cookie_secret is too short",
        "invalid session lifetime",
    ] {
        assert!(messages.iter().any(|m| m.contains(needle)), "missing {needle:?} in {messages:?}");
    }
    assert!(errs.iter().all(|e| e.line > 0), "{errs:?}");
    // The short secret is reported without its value.
    assert!(errs.iter().all(|e| !e.to_string().contains("too-short")), "{errs:?}");
}

#[test]
fn session_without_oidc_is_refused() {
    let errs = errors(&format!("{MINIMAL}\n[auth.session]\nlifetime = \"1h\"\n"));
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(errs[0].message.contains("[auth.session] without [auth.oidc]"), "{}", errs[0]);
}

#[test]
fn shared_state_is_memory_or_a_redis_url_never_printed_with_its_password() {
    use config::state::Shared;
    let shared = |value: &str| parse(&format!("{MINIMAL}\n[state]\nshared = \"{value}\"\n")).map(|c| c.state.shared);
    assert_eq!(shared("memory").unwrap(), Shared::Memory);
    assert_eq!(parse(MINIMAL).unwrap().state.shared, Shared::Memory);
    for url in ["redis://127.0.0.1:6379", "redis://redis.internal/2", "redis://user@127.0.0.1:6379/0"] {
        let Shared::Redis(secret) = shared(url).unwrap() else { panic!("{url}") };
        assert_eq!(secret.expose(), url);
    }
    // Secret forms: the environment variable's value is used, and never printed.
    let env_config = format!("{MINIMAL}\n[state]\nshared = \"${{REDIS_URL}}\"\n");
    let env = |name: &str| (name == "REDIS_URL").then(|| "redis://:hunter2@10.0.0.5:6379/1".to_owned());
    let parsed = config::parse(Path::new("/etc/portcullis/test.toml"), &env_config, env).unwrap();
    let Shared::Redis(secret) = &parsed.state.shared else { panic!("not redis") };
    assert_eq!(secret.expose(), "redis://:hunter2@10.0.0.5:6379/1");
    assert!(!format!("{parsed:?}").contains("hunter2"));
    // Refused, each with one error that names the problem and not the password.
    for (value, message) in [
        ("redis://:hunter2@127.0.0.1:6379", "password written in the file"),
        ("rediss://127.0.0.1:6379", "TLS is not supported yet"),
        ("mysql://u:hunter2@db", "invalid shared state"),
        ("redis://u:hunter2@127.0.0.1:notaport", "invalid shared state"),
        ("${UNSET}", "UNSET is not set"),
        ("${SET}", "invalid shared state \"${SET}\""),
    ] {
        let errs = errors(&format!("{MINIMAL}\n[state]\nshared = \"{value}\"\n"));
        assert_eq!(errs.len(), 1, "{value}: {errs:?}");
        assert!(errs[0].message.contains(message), "{value}: {}", errs[0]);
        assert!(!errs[0].to_string().contains("hunter2"), "{}", errs[0]);
    }
}

#[test]
fn jwt_issuers_are_validated_with_positions_and_fixes() {
    let ok = parse(&format!(
        "{MINIMAL}\n[auth.jwt]\nissuer = \"https://idp/\"\naudience = [\"a\", \"b\"]\njwks_url = \"https://idp/jwks\"\nroles_claim = [\"roles\", \"realm_access.roles\"]\nrole_map = {{ \"idp-admins\" = \"admin\" }}\nleeway = \"0s\"\n"
    ))
    .unwrap();
    let issuer = &ok.auth.jwt[0];
    assert_eq!(issuer.policy.audiences, ["a", "b"]);
    assert_eq!(issuer.policy.leeway, std::time::Duration::ZERO);
    assert_eq!(issuer.policy.required_claims, ["exp"]);
    assert!(!issuer.algorithms.contains(&jsonwebtoken::Algorithm::HS256), "HMAC is never a default");

    for (body, message) in [
        ("issuer = \"x\"\njwks_url = \"http://idp.example.com/jwks\"", "is not https"),
        ("issuer = \"x\"", "has no keys"),
        (
            "issuer = \"x\"\njwks_url = \"https://x/j\"\nalgorithms = [\"none\"]",
            "unknown or forbidden algorithm \"none\"",
        ),
        ("issuer = \"x\"\njwks_url = \"https://x/j\"\nalgorithms = [\"HS256\"]", "no HMAC secret is configured"),
        (
            "issuer = \"x\"\nkeys = [{ secret = \"short\", algorithm = \"HS256\" }]\nalgorithms = [\"HS256\"]",
            "at least 32 are required",
        ),
        (
            "issuer = \"x\"\nkeys = [{ secret = \"0123456789abcdef0123456789abcdef\" }]\nalgorithms = [\"HS256\"]",
            "needs algorithm",
        ),
        ("issuer = \"x\"\njwks_url = \"https://x/j\"\nleeway = \"1h\"", "longer than 5 minutes"),
        ("issuer = \"x\"\njwks_url = \"https://x/j\"\naudiance = \"a\"", "unknown field `audiance`"),
    ] {
        let errs = errors(&format!("{MINIMAL}\n[auth.jwt]\n{body}\n"));
        assert!(errs.iter().any(|e| e.message.contains(message)), "{body}: {errs:?}");
        assert!(errs.iter().all(|e| !e.message.contains("0123456789abcdef")), "secrets never in errors");
    }
}

#[test]
fn routes_may_only_name_configured_methods() {
    let toml = MINIMAL.replace("auth = \"public\"", "auth = [\"jwt\", \"mtls\"]");
    let errs = errors(&toml);
    assert_eq!(errs.len(), 2, "{errs:?}");
    assert!(
        errs[0].message.contains("\"jwt\" is not configured")
            && errs[0].help.as_deref().unwrap().contains("[auth.jwt]")
    );
    assert!(errs[1].message.contains("\"mtls\" is not configured"));
    let errs = errors(&MINIMAL.replace("auth = \"public\"", "auth = [\"public\", \"jwt\"]"));
    assert!(errs[0].message.contains("cannot be combined"), "{errs:?}");
    let errs = errors(&MINIMAL.replace("auth = \"public\"", "auth = \"kerberos\""));
    assert!(errs[0].message.contains("unknown authentication method"), "{errs:?}");
    let mtls_route = MINIMAL.replace("auth = \"public\"", "auth = \"mtls\"");
    let errs = errors(&format!("{mtls_route}\n[auth.mtls]\n"));
    assert!(errs[0].message.contains("no listener asks for client certificates"), "{errs:?}");
    let with_ca = mtls_route.replace(
        "bind = \"127.0.0.1:8080\"",
        "bind = \"127.0.0.1:8443\"\ntls = { cert = \"c.pem\", key = \"k.pem\", client_ca = \"ca.pem\", client_auth = \"optional\" }",
    );
    let ok = parse(&format!("{with_ca}\n[auth.mtls]\nroles = {{ \"svc\" = [\"service\"] }}\n")).unwrap();
    assert_eq!(
        ok.routes[0].policy.auth,
        portcullis_layers::AuthMode::Required(
            portcullis_policy::Methods::NONE.with(portcullis_policy::AuthMethod::Mtls)
        )
    );
    let errs = errors(&MINIMAL.replace(
        "[[route]]",
        "[[upstream]]\nname = \"x\"\ntargets = [\"http://127.0.0.1:1\"]\nidentity = \"cookies\"\n\n[[route]]",
    ));
    assert!(errs.iter().any(|e| e.message.contains("unknown identity")), "{errs:?}");
}

#[test]
fn check_warns_about_forgeable_identity_headers_and_audience_less_issuers() {
    let codes = |toml: &str| -> Vec<&'static str> {
        portcullis::check::findings(&parse(toml).unwrap()).iter().map(|f| f.code).collect()
    };
    let jwt = "[auth.jwt]\nissuer = \"https://idp/\"\naudience = \"api\"\njwks_url = \"https://idp/jwks\"\n";
    let authenticated = MINIMAL.replace("auth = \"public\"", "auth = \"jwt\"");
    assert!(codes(&format!("{authenticated}\n{jwt}")).is_empty(), "loopback upstream with headers is fine");
    let remote = authenticated.replace("127.0.0.1:3000", "10.0.0.7:3000");
    assert_eq!(codes(&format!("{remote}\n{jwt}")), ["auth.identity_headers_remote"]);
    let signed = remote.replace("targets = [", "identity = \"jwt\"\ntargets = [");
    assert!(codes(&format!("{signed}\n{jwt}")).is_empty(), "a signed identity cannot be forged");
    // Public routes send no identity, so nothing to forge.
    assert!(codes(&MINIMAL.replace("127.0.0.1:3000", "10.0.0.7:3000")).is_empty());
    assert_eq!(
        codes(&format!("{authenticated}\n{}", jwt.replace("audience = \"api\"\n", ""))),
        ["auth.jwt_no_audience"]
    );
}

#[test]
fn check_warns_when_admin_looking_paths_are_public() {
    let codes = |toml: &str| -> Vec<String> {
        portcullis::check::findings(&parse(toml).unwrap())
            .iter()
            .filter(|f| f.code == "authz.admin_public")
            .map(|f| f.message.clone())
            .collect()
    };
    assert!(codes(MINIMAL).is_empty(), "/api/** serves no admin path");
    let catch_all = MINIMAL.replace("/api/**", "/**");
    let found = codes(&catch_all);
    assert_eq!(found.len(), 1);
    assert!(
        found[0].contains("/admin (route") && found[0].contains("/actuator") && found[0].contains("/.env"),
        "{found:?}"
    );
    // A more specific authenticated route takes /admin away from the catch-all.
    let protected = format!(
        "{catch_all}\n[[route]]\nname = \"admin\"\nmatch = {{ path = \"/ADMIN/**\" }}\nupstream = \"api\"\nauth = \"jwt\"\n\n[auth.jwt]\nissuer = \"x\"\naudience = \"a\"\njwks_url = \"https://x/j\"\n"
    );
    let found = codes(&protected);
    assert!(!found[0].contains("/admin (route"), "{found:?}");
    assert!(found[0].contains("/metrics"), "other admin paths are still public: {found:?}");
}

#[test]
fn check_warns_about_unlimited_logins_and_public_listeners_without_ip_limits() {
    let codes = |toml: &str| -> Vec<&'static str> {
        portcullis::check::findings(&parse(toml).unwrap())
            .iter()
            .map(|f| f.code)
            .filter(|c| c.starts_with("ratelimit."))
            .collect()
    };
    let login = MINIMAL.replace("/api/**", "/auth/login");
    assert_eq!(codes(&login), ["ratelimit.login_unlimited"]);
    let limited = format!(
        "{}\n[limits.login]\nkey = \"ip\"\nrate = \"5/min\"\n",
        login.replace("auth = \"public\"", "auth = \"public\"\nlimits = [\"login\"]")
    );
    assert!(codes(&limited).is_empty(), "{:?}", codes(&limited));
    let public = MINIMAL.replace("127.0.0.1:8080", "0.0.0.0:8080");
    assert_eq!(codes(&public), ["ratelimit.no_ip_limit"]);
    assert!(codes(MINIMAL).is_empty(), "loopback listeners are not exposed");
}

#[test]
fn an_admin_api_off_loopback_needs_tls_and_is_still_a_finding() {
    let toml =
        |bind: &str, tls: &str| format!("{MINIMAL}\n[admin]\nbind = \"{bind}\"\ntoken = \"{}\"\n{tls}", "t".repeat(40));
    let admin = |bind: &str, tls: &str| {
        portcullis::check::findings(&parse(&toml(bind, tls)).unwrap())
            .iter()
            .map(|f| f.code)
            .filter(|c| c.starts_with("admin."))
            .collect::<Vec<_>>()
    };
    // In clear off loopback: refused, with the fix.
    let error = parse(&toml("0.0.0.0:9901", "")).unwrap_err().to_string();
    assert!(error.contains("must use TLS") && error.contains("tls = "), "{error}");
    let error = parse(&toml("[::]:9901", "")).unwrap_err().to_string();
    assert!(error.contains("must use TLS"), "{error}");
    // Over TLS it starts, and `check` still points at the exposure.
    assert_eq!(admin("0.0.0.0:9901", "tls = \"self-signed\"\n"), ["admin.remote"]);
    assert!(admin("127.0.0.1:9901", "").is_empty());
    assert!(admin("[::1]:9901", "").is_empty());
    let bad = parse(&toml("0.0.0.0:9901", "tls = \"homemade\"\n")).unwrap_err().to_string();
    assert!(bad.contains("unknown tls mode"), "{bad}");
}

const LOGIN: &str = r#"
[login.api]
account = "json:username"
"#;

fn login_route(extra: &str) -> String {
    format!(
        "{MINIMAL}\n[[route]]\nname = \"login\"\nmatch = {{ path = \"/auth/login\", methods = [\"POST\"] }}\nupstream = \"api\"\nauth = \"public\"\n{extra}\n"
    )
}

#[test]
fn login_sections_get_secure_defaults_and_routes_refer_to_them() {
    let c = parse(&format!("{}\n{LOGIN}", login_route("login = \"api\""))).unwrap();
    let login = c.routes[1].policy.login.as_ref().unwrap();
    assert_eq!(login.name.as_ref(), "api");
    assert_eq!(login.account, portcullis_policy::login::AccountSource::Json(vec!["username".into()]));
    assert_eq!((login.account_backoff.free, login.ip_backoff.free), (5, 20));
    assert_eq!(login.account_backoff.window_nanos, 15 * 60 * 1_000_000_000);
    assert_eq!(login.account_backoff.backoff_nanos, 1_000_000_000);
    assert_eq!(login.account_backoff.max_backoff_nanos, 15 * 60 * 1_000_000_000);
    assert_eq!(login.failure_status, [http::StatusCode::UNAUTHORIZED, http::StatusCode::FORBIDDEN]);
    assert!(!login.fail_open, "fails closed by default");
    assert_eq!(login.max_body, 16 * 1024);
    assert!(c.routes[0].policy.login.is_none());
}

#[test]
fn login_mistakes_are_refused_with_their_position() {
    // An unknown login name on a route.
    let errs = errors(&format!("{}\n{LOGIN}", login_route("login = \"apj\"")));
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(errs[0].message.contains("unknown login \"apj\""), "{}", errs[0].message);
    assert_eq!(errs[0].expected.as_deref(), Some("one of: api"));
    assert_eq!(errs[0].line, 19, "points at the route's login");
    // A bad account source and bad values.
    let bad = "[login.api]\naccount = \"xml:user\"\naccount_failures = 0\nbackoff = \"10m\"\nmax_backoff = \"1m\"\nfailure_status = [200]\non_store_failure = \"maybe\"\nmax_body = \"2MiB\"\n";
    let errs = errors(&format!("{}\n{bad}", login_route("login = \"api\"")));
    let messages: Vec<&str> = errs.iter().map(|e| e.message.as_str()).collect();
    for needle in [
        "unknown account source \"xml:user\"",
        "account_failures is out of range",
        "max_backoff is shorter than backoff",
        "failure_status 200 is not a 4xx or 5xx status",
        "unknown on_store_failure \"maybe\"",
        "max_body 2097152 is out of range",
    ] {
        assert!(messages.iter().any(|m| m.contains(needle)), "{needle}: {messages:?}");
    }
    let source = errs.iter().find(|e| e.message.contains("xml:user")).unwrap();
    assert!(source.expected.as_deref().unwrap().contains("json:username"));
    // A mistyped key.
    let errs = errors(&format!("{}\n{LOGIN}acount_failures = 3\n", login_route("login = \"api\"")));
    assert!(errs[0].message.contains("unknown field `acount_failures`"), "{}", errs[0].message);
    // A rate limit keyed by account on a route that is not a login route.
    let limit = "[limits.per_account]\nkey = \"account\"\nrate = \"5/min\"\n";
    let errs = errors(&format!("{}\n{limit}", login_route("limits = [\"per_account\"]")));
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(
        errs[0].message.contains("counts by account, but route \"login\" is not a login route"),
        "{}",
        errs[0].message
    );
    let ok =
        parse(&format!("{}\n{limit}\n{LOGIN}", login_route("limits = [\"per_account\"]\nlogin = \"api\""))).unwrap();
    assert_eq!(ok.routes[1].policy.limits[0].key, portcullis_layers::rate_limit::LimitKey::Account);
}

#[test]
fn check_counts_login_protection_and_flags_it_failing_open_on_redis() {
    let codes = |toml: &str| -> Vec<&'static str> {
        portcullis::check::findings(&parse(toml).unwrap())
            .iter()
            .map(|f| f.code)
            .filter(|c| c.starts_with("ratelimit."))
            .collect()
    };
    assert_eq!(codes(&login_route("")), ["ratelimit.login_unlimited"]);
    let protected = format!("{}\n{LOGIN}", login_route("login = \"api\""));
    assert!(codes(&protected).is_empty(), "a login route is protected");
    let open = format!("{protected}on_store_failure = \"open\"\n");
    assert!(codes(&open).is_empty(), "fail-open is harmless with the memory store");
    let redis = format!("{open}\n[state]\nshared = \"redis://127.0.0.1:6379\"\n");
    assert_eq!(codes(&redis), ["ratelimit.login_fail_open"]);
    let finding = portcullis::check::findings(&parse(&redis).unwrap()).pop().unwrap();
    assert!(finding.message.starts_with("Redis configured fail-open on login protection"), "{}", finding.message);
    assert!(codes(&redis.replace("on_store_failure = \"open\"\n", "")).is_empty(), "closed is the default");
}

#[test]
fn check_reports_waf_gaps() {
    let codes = |toml: &str| -> Vec<&'static str> {
        portcullis::check::findings(&parse(toml).unwrap())
            .iter()
            .map(|f| f.code)
            .filter(|c| c.starts_with("waf."))
            .collect()
    };
    let exposed = MINIMAL.replace("127.0.0.1:8080", "0.0.0.0:8080");
    assert!(codes(MINIMAL).is_empty(), "a loopback-only gateway is not told to add a WAF");
    assert_eq!(codes(&exposed), ["waf.off"]);
    let waf = format!("{exposed}\n[waf]\nrules = \"/opt/crs\"\n");
    assert!(codes(&waf).is_empty());
    assert_eq!(codes(&waf.replace("[waf]", "[waf]\nmode = \"detect\"")), ["waf.detect_only"]);
    assert_eq!(
        codes(&waf.replace("[waf]", "[waf]\non_overload = \"open\"\nover_limit = \"pass\"")),
        ["waf.fail_open", "waf.partial_bodies"]
    );
}

/// Found by the `route` fuzz target: a pattern that no normalized path is
/// spelled like never matched, and its requests fell through to a less
/// specific route (a protected `/admin/` served by a public `/**`).
#[test]
fn route_patterns_that_normalized_paths_never_match_are_refused() {
    let cases: &[(&str, &str)] = &[
        ("/admin/", "write \"/admin\""),
        ("/%61dmin/**", "write \"/admin/**\""),
        ("/caf\u{e9}", "write \"/caf%C3%A9\""),
        ("/a/../b", "no request path is normalized to it"),
    ];
    for (pattern, expected) in cases {
        let toml = format!(
            "{MINIMAL}\n[[route]]\nmatch = {{ path = \"{pattern}\" }}\nupstream = \"api\"\nauth = \"public\"\n"
        );
        let errors = errors(&toml);
        assert_eq!(errors.len(), 1, "{pattern}: {errors:?}");
        assert!(errors[0].message.contains("never matches") && errors[0].message.contains(expected), "{errors:?}");
    }
    let keep = format!(
        "{MINIMAL}\n[paths]\ntrailing_slash = \"keep\"\n\n[[route]]\nmatch = {{ path = \"/admin/\" }}\nupstream = \"api\"\nauth = \"public\"\n"
    );
    assert!(parse(&keep).is_ok(), "a trailing slash is a spelling when trailing slashes are kept");
}

#[test]
fn path_settings_parse_and_keeping_double_encoding_is_a_finding() {
    let codes = |toml: &str| -> Vec<&'static str> {
        portcullis::check::findings(&parse(toml).unwrap())
            .iter()
            .map(|f| f.code)
            .filter(|c| c.starts_with("paths."))
            .collect()
    };
    assert!(codes(MINIMAL).is_empty());
    let keep = format!("{MINIMAL}\n[paths]\nencoded_percent = \"keep\"\n");
    assert_eq!(parse(&keep).unwrap().paths.encoded_percent, portcullis_policy::normalize::EncodedPercent::Keep);
    assert_eq!(codes(&keep), ["paths.encoded_percent"]);
    let err = parse(&format!("{MINIMAL}\n[paths]\nencoded_percent = \"decode\"\n")).unwrap_err().to_string();
    assert!(err.contains("unknown encoded_percent \"decode\""), "{err}");
    assert!(err.contains("\"reject\", \"keep\""), "{err}");
}

#[test]
fn route_websocket_is_a_bool_and_off_by_default() {
    let config = parse(MINIMAL).unwrap();
    assert!(config.routes.iter().all(|r| !r.policy.websocket));
    let on = MINIMAL.replacen("auth = \"public\"", "auth = \"public\"\nwebsocket = true", 1);
    assert!(parse(&on).unwrap().routes[0].policy.websocket);
    let err = parse(&MINIMAL.replacen("auth = \"public\"", "auth = \"public\"\nwebsocket = \"yes\"", 1))
        .unwrap_err()
        .to_string();
    assert!(err.contains("invalid type"), "{err}");
}

/// Mistakes a new user made writing a config for a NestJS app: each gets one
/// message that names the key, what it takes, and where, and a value that
/// is wrong once is reported once (not again at every place that names it).
/// Compared whole.
#[test]
fn newcomer_mistakes_get_one_actionable_message_each() {
    const TYPO: &str = "  help: check the key's spelling against docs/configuration.md; unknown keys are refused so a typo never disables a defence";
    const TYPE: &str = "  help: fix the TOML syntax or the value's type";
    let at = "error: /etc/portcullis/test.toml";
    let tls = |value: &str| {
        MINIMAL.replace("bind = \"127.0.0.1:8080\"", &format!("bind = \"127.0.0.1:8443\"\ntls = {value}"))
    };
    let hsts = |value: &str| format!("{MINIMAL}\n[headers]\nhsts = {value}\n");
    let two_routes_and_endpoints = format!(
        "{}\n[[route]]\nmatch = {{ path = \"/b/**\" }}\nupstream = \"api\"\nauth = \"public\"\nlimits = [\"per_ip\"]\n\n\
         [limits.per_ip]\nkey = \"ip\"\nrate = \"20 per second\"\n\n[server]\nendpoint_limits = [\"per_ip\"]\n",
        MINIMAL.replace("auth = \"public\"", "auth = \"public\"\nlimits = [\"per_ip\"]")
    );
    let cases: Vec<(&str, String, String)> = vec![
        (
            "a misspelt key inside tls = { … }",
            tls("{ cert = \"c.pem\", keyy = \"k.pem\" }"),
            format!(
                "{at}:4:25: unknown field `keyy`, expected one of `cert`, `key`, `profile`, `client_ca`, `client_auth`, `sni`\n{TYPO}"
            ),
        ),
        (
            "tls of the wrong type",
            tls("true"),
            format!(
                "{at}:4:7: invalid type: boolean `true`, expected \"self-signed\" or a table {{ cert, key, profile, client_ca, client_auth, sni }}\n{TYPE}"
            ),
        ),
        (
            "a misspelt key inside hsts = { … }",
            hsts("{ max_age = \"365d\", preloaded = true }"),
            format!(
                "{at}:15:28: unknown field `preloaded`, expected one of `max_age`, `include_subdomains`, `preload`\n{TYPO}"
            ),
        ),
        (
            "hsts of the wrong type",
            hsts("\"on\""),
            format!(
                "{at}:15:8: invalid type: string \"on\", expected true, false or a table {{ max_age, include_subdomains, preload }}\n{TYPE}"
            ),
        ),
        (
            "a misspelt key inside a route's waf = { … }",
            MINIMAL.replace("auth = \"public\"", "auth = \"public\"\nwaf = { mode = \"block\", paranoya = 2 }"),
            format!(
                "{at}:13:25: unknown field `paranoya`, expected one of `mode`, `responses`, `paranoia`, `inbound_threshold`\n{TYPO}"
            ),
        ),
        (
            "a size of the wrong type",
            format!("{MINIMAL}\n[server]\nmax_body_bytes = true\n"),
            format!(
                "{at}:15:18: invalid type: boolean `true`, expected a number of bytes or a size with a unit such as \"16KiB\" or \"10MB\"\n{TYPE}"
            ),
        ),
        (
            "auth of the wrong type",
            MINIMAL.replace("auth = \"public\"", "auth = 5"),
            format!("{at}:12:8: invalid type: integer `5`, expected a string or a list of strings\n{TYPE}"),
        ),
        (
            "auth listing something other than a method name",
            MINIMAL.replace("auth = \"public\"", "auth = [\"jwt\", true]"),
            format!("{at}:12:16: invalid type: boolean `true`, expected a string\n{TYPE}"),
        ),
        (
            "a bad rate in a limit that two routes and the endpoints use",
            two_routes_and_endpoints,
            format!(
                "{at}:23:8: invalid rate \"20 per second\"\n  expected: \"50/s\", \"300/min\", \"2000/hour\", \"10000/day\" or \"100/10s\""
            ),
        ),
        (
            "a bad account in a login a route uses",
            format!("{}\n[login.nest]\naccount = \"body:email\"\n", login_route("login = \"nest\"")),
            format!(
                "{at}:22:11: unknown account source \"body:email\"\n  expected: \"json:username\", \"json:user.email\", \"form:username\" or \"header:X-Login\""
            ),
        ),
        (
            "a bad target in the upstream a route uses",
            MINIMAL.replace("targets = [\"http://127.0.0.1:3000\"]", "targets = [\"127.0.0.1:3000\"]"),
            format!(
                "{at}:7:12: invalid upstream target \"127.0.0.1:3000\"\n  expected: \"http://host:port\" or \"https://host:port\" (scheme, host and port only), or \"builtin:demo\""
            ),
        ),
    ];
    for (what, toml, expected) in cases {
        let shown = parse(&toml).expect_err(what).to_string();
        assert_eq!(shown, expected, "{what}");
    }
    // A name that is nowhere in the file is still reported, with what is.
    let unknown = errors(&format!("{}\n[login.nest]\naccount = \"json:email\"\n", login_route("login = \"nestjs\"")));
    assert_eq!(unknown.len(), 1, "{unknown:?}");
    assert_eq!(unknown[0].message, "unknown login \"nestjs\"");
    assert_eq!(unknown[0].expected.as_deref(), Some("one of: nest"));
}

/// Building reads the files a configuration names only through its
/// `Sources`: the same file builds from memory and fails from a disk where
/// those files do not exist, each error at the key naming the file.
#[test]
fn named_files_are_read_only_through_sources() {
    let toml = format!(
        "{MINIMAL}\n[admin]\nbind = \"127.0.0.1:9901\"\ntoken = \"file:secrets/admin\"\n\n\
         [openapi.orders]\nsource = \"docs/orders.json\"\n"
    );
    let document = br#"{"openapi": "3.0.3", "info": {"title": "t", "version": "1"}, "paths": {"/api/orders": {"get": {"responses": {"200": {"description": "ok"}}}}}}"#;
    let read = |path: &Path| -> std::io::Result<Vec<u8>> {
        match path.to_str() {
            Some("/etc/portcullis/secrets/admin") => Ok(b"0123456789abcdef0123456789abcdef\n".to_vec()),
            Some("/etc/portcullis/docs/orders.json") => Ok(document.to_vec()),
            _ => Err(std::io::ErrorKind::NotFound.into()),
        }
    };
    let path = Path::new("/etc/portcullis/test.toml");
    let sources = config::sources::Sources::new(&|_| None, &read);
    let c = config::parse_with(path, &toml, &sources).unwrap_or_else(|e| panic!("from memory: {e}"));
    assert_eq!(c.admin.as_ref().map(|a| a.token.expose()), Some("0123456789abcdef0123456789abcdef"));
    assert!(c.openapi.get("orders").and_then(|d| d.compiled.as_ref()).is_some(), "the document was compiled");

    let mut errs = errors(&toml);
    errs.sort_by_key(|e| e.line);
    let at: Vec<(usize, usize)> = errs.iter().map(|e| (e.line, e.column)).collect();
    assert_eq!(at, [(16, 9), (19, 10)], "{errs:?}");
    assert!(errs[0].message.starts_with("admin token: cannot read secret file secrets/admin"), "{errs:?}");
    assert!(errs[1].message.starts_with("cannot read OpenAPI document /etc/portcullis/docs/orders.json"), "{errs:?}");
}

/// An https upstream's `tls` files are read and parsed while the
/// configuration is built: a missing, malformed or key-less file is an
/// error at the key that names it; good files end up as certificates and a
/// key whose `Debug` shows no key material.
#[test]
fn upstream_tls_files_are_checked_at_their_keys() {
    let rcgen::CertifiedKey { cert, signing_key } =
        rcgen::generate_simple_self_signed(vec!["upstream.internal".to_owned()]).unwrap();
    let (cert_pem, key_pem) = (cert.pem(), signing_key.serialize_pem());
    let read = |path: &Path| -> std::io::Result<Vec<u8>> {
        match path.file_name().and_then(|n| n.to_str()) {
            Some("ca.pem" | "gw.pem") => Ok(cert_pem.clone().into_bytes()),
            Some("gw.key") => Ok(key_pem.clone().into_bytes()),
            Some("notes.txt") => Ok(b"not a certificate".to_vec()),
            _ => Err(std::io::ErrorKind::NotFound.into()),
        }
    };
    let sources = config::sources::Sources::new(&|_| None, &read);
    let with_tls = |tls: &str| {
        MINIMAL.replace(
            "targets = [\"http://127.0.0.1:3000\"]",
            &format!("targets = [\"https://127.0.0.1:3000\"]\ntls = {tls}"),
        )
    };
    let path = Path::new("/etc/portcullis/test.toml");

    let good = with_tls(r#"{ ca = "ca.pem", client_cert = "gw.pem", client_key = "gw.key" }"#);
    let c = config::parse_with(path, &good, &sources).unwrap_or_else(|e| panic!("{e}"));
    let tls = c.upstreams[0].tls.as_ref().expect("tls");
    assert_eq!(tls.ca.as_ref().map(Vec::len), Some(1));
    assert_eq!(tls.client_cert.as_ref().map(|c| c.chain.len()), Some(1));
    let shown = format!("{tls:?}");
    let key_body: String = key_pem.lines().filter(|l| !l.starts_with("-----")).collect();
    assert!(!shown.contains(&key_body[..24]) && shown.contains("secret key elided"), "{shown}");

    let bad = with_tls(r#"{ ca = "missing.pem", client_cert = "notes.txt", client_key = "ca.pem" }"#);
    let mut errs = config::parse_with(path, &bad, &sources).expect_err("refused").0;
    errs.sort_by_key(|e| e.column);
    let found: Vec<(usize, usize, &str)> = errs.iter().map(|e| (e.line, e.column, e.message.as_str())).collect();
    assert_eq!(
        found,
        [
            (8, 14, "cannot read /etc/portcullis/missing.pem: entity not found"),
            (8, 43, "\"notes.txt\" has no CERTIFICATE block"),
            (8, 69, "tls.client_key \"ca.pem\": no usable private key: no items found"),
        ],
        "{errs:?}"
    );
}

#[test]
fn identity_key_rotation_age() {
    // Default: 90 days.
    let config = parse(MINIMAL).unwrap();
    assert_eq!(config.auth.identity.rotate_after, std::time::Duration::from_secs(90 * 86_400));
    let config = parse(&format!("{MINIMAL}\n[auth.identity]\nrotate_after = \"30d\"\n")).unwrap();
    assert_eq!(config.auth.identity.rotate_after, std::time::Duration::from_secs(30 * 86_400));
    for (value, message) in [
        ("\"10m\"", "rotate_after is shorter than an hour"),
        ("\"0s\"", "rotate_after must be greater than zero"),
        ("\"monthly\"", "invalid rotate_after \"monthly\""),
    ] {
        let errs = errors(&format!("{MINIMAL}\n[auth.identity]\nrotate_after = {value}\n"));
        assert_eq!(errs.len(), 1, "{value}: {errs:?}");
        assert!(errs[0].message.contains(message), "{value}: {}", errs[0].message);
        assert_eq!((errs[0].line, errs[0].column), (15, 16), "{value}: at the value");
    }
}

// --- [auth.accounts] ----------------------------------------------------------------------

#[test]
fn accounts_defaults_are_closed_owasp_and_short_lived() {
    use portcullis::config::accounts::Registration;
    use portcullis_policy::password::HashParams;
    use std::time::Duration;
    assert!(parse(MINIMAL).unwrap().auth.accounts.is_none());
    let a = parse(&format!("{MINIMAL}\n[auth.accounts]\n")).unwrap().auth.accounts.unwrap();
    assert_eq!(a.registration, Registration::Closed);
    assert_eq!(a.hash, HashParams::OWASP);
    assert_eq!(a.hash_concurrency, None);
    assert!(a.hash_slots() >= 1);
    assert_eq!(a.hash_queue_timeout, Duration::from_secs(2));
    assert_eq!(a.access_token_ttl, Duration::from_secs(300));
    assert_eq!(a.refresh_token_ttl, Duration::from_secs(7 * 86_400));
    assert_eq!(a.refresh_reuse_grace, Duration::from_secs(10));
    assert!(a.mfa_required_roles.is_empty());

    let set = parse(&format!(
        "{MINIMAL}\n[auth.accounts]\nregistration = \"invite\"\nhash_memory = \"64MiB\"\nhash_iterations = 3\n\
         hash_parallelism = 4\nhash_concurrency = 2\nhash_queue_timeout = \"0s\"\naccess_token_ttl = \"15m\"\n\
         refresh_token_ttl = \"30d\"\nrefresh_reuse_grace = \"0s\"\nmfa_required_roles = [\"admin\", \"ops\", \"admin\"]\n"
    ))
    .unwrap()
    .auth
    .accounts
    .unwrap();
    assert_eq!(set.registration, Registration::Invite);
    assert_eq!(set.hash, HashParams { memory_kib: 64 * 1024, iterations: 3, parallelism: 4 });
    assert_eq!((set.hash_concurrency, set.hash_slots()), (Some(2), 2));
    assert_eq!(set.hash_queue_timeout, Duration::ZERO);
    assert_eq!(set.access_token_ttl, Duration::from_secs(900));
    assert_eq!(set.refresh_token_ttl, Duration::from_secs(30 * 86_400));
    assert_eq!(set.refresh_reuse_grace, Duration::ZERO);
    assert_eq!(set.mfa_required_roles, ["admin", "ops"]);
    let open = parse(&format!("{MINIMAL}\n[auth.accounts]\nregistration = \"open\"\n")).unwrap();
    assert_eq!(open.auth.accounts.unwrap().registration, Registration::Open);
}

#[test]
fn weak_hashing_and_odd_lifetimes_are_refused_at_their_key() {
    for (body, message) in [
        ("registration = \"anyone\"", "unknown registration \"anyone\""),
        ("hash_memory = \"16MiB\"", "hash_memory 16384 KiB is weaker than OWASP's floor of 19 MiB"),
        ("hash_memory = 1048576", "is weaker than OWASP's floor"),
        ("hash_memory = \"2GiB\"", "is too large"),
        ("hash_memory = \"lots\"", "invalid hash_memory"),
        ("hash_iterations = 1", "hash_iterations 1 is weaker than OWASP's floor of 2"),
        ("hash_iterations = 1000", "hash_iterations is out of range"),
        ("hash_parallelism = 0", "hash_parallelism 0 is weaker than OWASP's floor of 1"),
        ("hash_concurrency = 0", "hash_concurrency is out of range"),
        ("hash_queue_timeout = \"5m\"", "hash_queue_timeout \"5m\" is too long"),
        ("access_token_ttl = \"10s\"", "access_token_ttl \"10s\" is shorter than a minute"),
        ("access_token_ttl = \"1d\"", "access_token_ttl \"1d\" is too long"),
        ("access_token_ttl = \"0s\"", "access_token_ttl must be greater than zero"),
        ("refresh_token_ttl = \"1y\"", "refresh_token_ttl \"1y\" is too long"),
        ("refresh_token_ttl = \"2m\"", "refresh_token_ttl is not longer than access_token_ttl"),
        ("refresh_reuse_grace = \"5m\"", "refresh_reuse_grace \"5m\" is too long"),
        ("refresh_reuse_grace = \"soon\"", "invalid refresh_reuse_grace"),
        ("mfa_required_roles = [\"a b\"]", "invalid role \"a b\""),
        ("mfa = \"required\"", "unknown field `mfa`"),
    ] {
        let toml = format!("{MINIMAL}\n[auth.accounts]\n{body}\n");
        let errs = errors(&toml);
        assert_eq!(errs.len(), 1, "{body}: {errs:?}");
        assert!(errs[0].message.contains(message), "{body}: {}", errs[0].message);
        assert!(errs[0].expected.is_some() || errs[0].help.is_some(), "{body}: {errs:?}");
        // The error points at the key's line (the line after the section header).
        let line = toml.lines().position(|l| l == body).unwrap() + 1;
        assert_eq!(errs[0].line, line, "{body}: {errs:?}");
        assert!(errs[0].to_string().starts_with(&format!("/etc/portcullis/test.toml:{line}:")), "{}", errs[0]);
    }
}

#[test]
fn account_routes_need_auth_accounts() {
    let route = MINIMAL.replace("auth = \"public\"", "auth = [\"account\"]");
    let errs = errors(&route);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(errs[0].message.contains("authentication method \"account\" is not configured"), "{}", errs[0].message);
    assert!(errs[0].help.as_deref().unwrap_or_default().contains("[auth.accounts]"), "{errs:?}");
    // With [auth.accounts], `account` is the cookie and the access token;
    // `account_token` the token alone. Both ask for CSRF checks only when
    // the cookie is accepted.
    let config = parse(&format!("{route}\n[auth.accounts]\n")).unwrap();
    let portcullis_layers::AuthMode::Required(methods) = config.routes[0].policy.auth else { panic!() };
    assert!(methods.contains(portcullis_policy::AuthMethod::Account));
    assert!(methods.contains(portcullis_policy::AuthMethod::AccountToken));
    assert!(config.routes[0].policy.csrf);
    let config =
        parse(&format!("{}\n[auth.accounts]\n", route.replace("[\"account\"]", "[\"account_token\"]"))).unwrap();
    let portcullis_layers::AuthMode::Required(methods) = config.routes[0].policy.auth else { panic!() };
    assert!(!methods.contains(portcullis_policy::AuthMethod::Account));
    assert!(!config.routes[0].policy.csrf);
    // Passkeys are bound to an origin.
    let errs = errors(&format!("{MINIMAL}\n[auth.accounts]\npasskeys = \"passwordless\"\n"));
    assert!(errs.iter().any(|e| e.message.contains("passkeys need public_url")), "{errs:?}");
    let errs = errors(&format!("{MINIMAL}\n[auth.accounts]\npublic_url = \"http://app.example.com\"\n"));
    assert!(errs.iter().any(|e| e.message.contains("public_url must use https")), "{errs:?}");
}

#[test]
fn check_reports_open_registration_and_admin_roles_without_mfa() {
    let codes = |toml: &str| -> Vec<&'static str> {
        portcullis::check::findings(&parse(toml).unwrap())
            .iter()
            .map(|f| f.code)
            .filter(|c| c.starts_with("accounts."))
            .collect()
    };
    let roles = "[roles]\nviewer = { permissions = [\"orders:read\"] }\nroot = { permissions = [\"*\"] }\n\
                 admin = { permissions = [\"orders:write\"] }\n";
    assert!(codes(&format!("{MINIMAL}\n{roles}")).is_empty(), "no accounts, no account findings");
    assert!(codes(&format!("{MINIMAL}\n[auth.accounts]\n")).is_empty(), "closed, no admin roles");
    assert_eq!(
        codes(&format!("{MINIMAL}\n{roles}\n[auth.accounts]\nregistration = \"open\"\n")),
        ["accounts.open_registration", "accounts.admin_without_mfa"]
    );
    let finding = portcullis::check::findings(&parse(&format!("{MINIMAL}\n{roles}\n[auth.accounts]\n")).unwrap())
        .into_iter()
        .find(|f| f.code == "accounts.admin_without_mfa")
        .unwrap();
    assert!(finding.message.contains("admin, root"), "{}", finding.message);
    let partly = format!("{MINIMAL}\n{roles}\n[auth.accounts]\nmfa_required_roles = [\"root\"]\n");
    let finding = portcullis::check::findings(&parse(&partly).unwrap()).pop().unwrap();
    assert!(finding.message.contains("role(s) admin ("), "{}", finding.message);
    let covered = format!("{MINIMAL}\n{roles}\n[auth.accounts]\nmfa_required_roles = [\"root\", \"admin\"]\n");
    assert!(codes(&covered).is_empty());
    assert!(codes(&format!("{covered}registration = \"invite\"\n")).is_empty(), "invite is not open");
}
