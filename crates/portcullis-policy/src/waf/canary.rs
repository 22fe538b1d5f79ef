//! The canary: obvious attacks and plain requests every loaded rule set must
//! classify correctly before it may serve.
//!
//! A rule set can load without a single error and still detect nothing (an
//! engine that stops evaluating after a `skipAfter` it mishandles, CRS 3
//! rules in an engine that only runs CRS 4 correctly, a setup that never
//! sets the paranoia level). Start-up and every reload therefore send these
//! requests through the freshly loaded engine: each attack must be detected
//! (a rule matched or the score rose) and each plain request must pass
//! without intervention, or the WAF refuses to start.

use std::net::{IpAddr, Ipv4Addr};

use bytes::Bytes;

use super::{Engine, LoadError, WafRequest};

/// An attack or plain request of the canary set.
#[derive(Debug, Clone, Copy)]
struct Canary {
    name: &'static str,
    method: &'static str,
    uri: &'static str,
    content_type: Option<&'static str>,
    body: &'static str,
    attack: bool,
}

const CANARIES: &[Canary] = &[
    Canary {
        name: "SQL injection in the query",
        method: "GET",
        uri: "/products?id=1%27%20UNION%20SELECT%20username,password%20FROM%20users--",
        content_type: None,
        body: "",
        attack: true,
    },
    Canary {
        name: "XSS in the query",
        method: "GET",
        uri: "/search?q=%3Cscript%3Ealert(document.cookie)%3C/script%3E",
        content_type: None,
        body: "",
        attack: true,
    },
    Canary {
        name: "path traversal",
        method: "GET",
        uri: "/download?file=../../../../etc/passwd",
        content_type: None,
        body: "",
        attack: true,
    },
    Canary {
        name: "command injection in a JSON body",
        method: "POST",
        uri: "/api/ping",
        content_type: Some("application/json"),
        body: r#"{"host":"127.0.0.1; cat /etc/passwd"}"#,
        attack: true,
    },
    Canary {
        name: "SQL injection in a form body",
        method: "POST",
        uri: "/login",
        content_type: Some("application/x-www-form-urlencoded"),
        body: "user=admin%27%20OR%201%3D1--&note=x",
        attack: true,
    },
    Canary {
        name: "a plain GET",
        method: "GET",
        uri: "/api/orders?page=2&sort=created",
        content_type: None,
        body: "",
        attack: false,
    },
    Canary {
        name: "a plain JSON POST",
        method: "POST",
        uri: "/api/orders",
        content_type: Some("application/json"),
        body: r#"{"item":"widget","quantity":3,"note":"Leave at the door"}"#,
        attack: false,
    },
    Canary {
        name: "a plain form POST",
        method: "POST",
        uri: "/profile",
        content_type: Some("application/x-www-form-urlencoded"),
        body: "name=Alice+Smith&city=Paris",
        attack: false,
    },
];

fn request(canary: &Canary) -> WafRequest {
    let mut headers = vec![
        ("Host".to_owned(), "app.example.com".to_owned()),
        ("User-Agent".to_owned(), "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0".to_owned()),
        ("Accept".to_owned(), "application/json, text/html;q=0.9".to_owned()),
        ("Accept-Language".to_owned(), "en-GB,en;q=0.8".to_owned()),
        ("Accept-Encoding".to_owned(), "gzip, deflate".to_owned()),
    ];
    if let Some(content_type) = canary.content_type {
        headers.push(("Content-Type".to_owned(), content_type.to_owned()));
        headers.push(("Content-Length".to_owned(), canary.body.len().to_string()));
    }
    WafRequest {
        method: canary.method.to_owned(),
        uri: canary.uri.to_owned(),
        version: "HTTP/1.1",
        headers,
        body: Bytes::from_static(canary.body.as_bytes()),
        body_complete: true,
        client_ip: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10)),
        client_port: 50_000,
    }
}

/// Runs the canary set through `engine`.
///
/// # Errors
/// An attack went undetected, a plain request was blocked, or the engine failed.
pub fn check(engine: &dyn Engine) -> Result<(), LoadError> {
    let mut failures = Vec::new();
    for canary in CANARIES {
        match engine.inspect(&request(canary)) {
            Err(e) => failures.push(format!("{}: {e}", canary.name)),
            Ok(verdict) if canary.attack && !verdict.detected() => {
                failures.push(format!("{} was not detected", canary.name));
            }
            Ok(verdict) if !canary.attack && verdict.intervened => {
                let ids: Vec<String> = verdict.matches.iter().map(|m| m.id.to_string()).collect();
                failures.push(format!("{} was blocked (rules {})", canary.name, ids.join(",")));
            }
            Ok(_) => {}
        }
    }
    if failures.is_empty() { Ok(()) } else { Err(LoadError::Canary(failures)) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::waf::{EngineError, Verdict};

    #[derive(Debug)]
    struct Fixed(Verdict);

    impl Engine for Fixed {
        fn name(&self) -> &'static str {
            "fixed"
        }
        fn inspect(&self, _: &WafRequest) -> Result<Verdict, EngineError> {
            Ok(self.0.clone())
        }
    }

    #[test]
    fn an_engine_that_sees_nothing_fails() {
        let err = check(&Fixed(Verdict::default())).unwrap_err().to_string();
        assert!(err.contains("SQL injection in the query was not detected"), "{err}");
        assert!(!err.contains("was blocked"), "{err}");
    }

    #[test]
    fn an_engine_that_blocks_everything_fails() {
        let err = check(&Fixed(Verdict { intervened: true, score: Some(5), matches: vec![] })).unwrap_err().to_string();
        assert!(err.contains("a plain GET was blocked"), "{err}");
        assert!(!err.contains("not detected"), "{err}");
    }
}
