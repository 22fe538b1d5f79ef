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

use super::{Engine, LoadError, WafRequest, WafResponse};

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

/// More plain requests for [`warm_up`]: the shapes of ordinary traffic
/// (ids and words in paths and queries, nested JSON, dates, prices).
const WARM_UP: &[Canary] = &[
    Canary {
        name: "a browser GET",
        method: "GET",
        uri: "/api/customers/8812/orders?from=2026-01-01&to=2026-12-31&status=shipped&q=Blue+Shoes+42",
        content_type: None,
        body: "",
        attack: false,
    },
    Canary {
        name: "a nested JSON POST",
        method: "POST",
        uri: "/api/carts/77/items",
        content_type: Some("application/json"),
        body: r#"{"customer":{"name":"Zoë O'Brien","email":"zoe@example.org","address":{"street":"12 Rue de la Paix","zip":"75002"}},"items":[{"sku":"SKU-1042","qty":2,"price":19.99},{"sku":"SKU-7","qty":1,"price":5}],"note":"Ring twice, then leave it by the door (thanks!)"}"#,
        attack: false,
    },
    Canary {
        name: "a PUT with a form body",
        method: "PUT",
        uri: "/account/settings",
        content_type: Some("application/x-www-form-urlencoded"),
        body: "display_name=Jean-Luc+Picard&timezone=Europe%2FParis&newsletter=on&bio=Captain%2C+USS+Enterprise",
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

/// Responses for an engine that inspects them: a leak that must be found
/// and a plain page that must pass.
const RESPONSES: &[(&str, &str, bool)] = &[
    (
        "a MySQL error in a response",
        "<html><body>You have an error in your SQL syntax; check the manual that corresponds to your MySQL server version for the right syntax to use near '1'' at line 1</body></html>",
        true,
    ),
    ("a plain HTML response", "<html><body><h1>Orders</h1><p>2 orders, shipped on Monday.</p></body></html>", false),
];

fn response(body: &'static str) -> WafResponse {
    WafResponse {
        status: 200,
        version: "HTTP/1.1",
        headers: vec![
            ("Content-Type".to_owned(), "text/html; charset=utf-8".to_owned()),
            ("Content-Length".to_owned(), body.len().to_string()),
        ],
        body: Some(Bytes::from_static(body.as_bytes())),
    }
}

/// Runs the canary set (requests, and responses when the engine inspects
/// them) through `engine` on this thread, ignoring the verdicts: each
/// inspection thread does this once before serving, so the regex engines'
/// per-thread caches are built before the first real request needs them
/// (a cold thread's first request costs milliseconds, not microseconds).
pub fn warm_up(engine: &dyn Engine) {
    for canary in CANARIES.iter().chain(WARM_UP) {
        let mut request = request(canary);
        if !canary.attack {
            // What browsers add: every header's rules see a value.
            request.headers.extend([
                ("Cookie".to_owned(), "session=3f9a1c27e8b4d605; theme=dark; consent=1".to_owned()),
                ("Referer".to_owned(), "https://app.example.com/orders?page=1".to_owned()),
                ("Cache-Control".to_owned(), "no-cache".to_owned()),
                ("Sec-Fetch-Site".to_owned(), "same-origin".to_owned()),
            ]);
        }
        let _ = engine.inspect(&request);
        if engine.inspects_responses() {
            for (_, body, _) in RESPONSES {
                let _ = engine.inspect_response(&request, None, &response(body));
            }
        }
    }
}

/// Runs the canary set through `engine`.
///
/// # Errors
/// An attack (or, for an engine that inspects responses, a leak) went
/// undetected, a plain request (or response) was blocked, or the engine
/// failed.
pub fn check(engine: &dyn Engine) -> Result<(), LoadError> {
    let mut failures = Vec::new();
    if engine.inspects_responses() {
        let plain = CANARIES.iter().find(|c| !c.attack).map_or_else(|| request(&CANARIES[0]), request);
        for (name, body, leak) in RESPONSES {
            match engine.inspect_response(&plain, None, &response(body)) {
                Err(e) => failures.push(format!("{name}: {e}")),
                Ok(verdict) if *leak && !verdict.intervened => failures.push(format!("{name} was not detected")),
                Ok(verdict) if !*leak && verdict.intervened => failures.push(format!("{name} was withheld")),
                Ok(_) => {}
            }
        }
    }
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

    /// Detects what a good engine detects in requests, nothing in responses.
    #[derive(Debug)]
    struct BlindToResponses;

    impl Engine for BlindToResponses {
        fn name(&self) -> &'static str {
            "blind"
        }
        fn inspect(&self, request: &WafRequest) -> Result<Verdict, EngineError> {
            let attack = CANARIES.iter().any(|c| c.attack && c.uri == request.uri && c.body == request.body);
            Ok(Verdict { intervened: attack, score: Some(if attack { 5 } else { 0 }), matches: vec![] })
        }
        fn inspects_responses(&self) -> bool {
            true
        }
        fn inspect_response(
            &self,
            _: &WafRequest,
            _: Option<crate::waf::Transaction>,
            _: &WafResponse,
        ) -> Result<Verdict, EngineError> {
            Ok(Verdict::default())
        }
    }

    #[test]
    fn an_engine_that_inspects_responses_must_find_the_leak() {
        let err = check(&BlindToResponses).unwrap_err().to_string();
        assert!(err.contains("a MySQL error in a response was not detected"), "{err}");
        assert!(!err.contains("SQL injection in the query"), "{err}");
    }

    #[test]
    fn an_engine_that_blocks_everything_fails() {
        let err = check(&Fixed(Verdict { intervened: true, score: Some(5), matches: vec![] })).unwrap_err().to_string();
        assert!(err.contains("a plain GET was blocked"), "{err}");
        assert!(!err.contains("not detected"), "{err}");
    }
}
