//! Forwarded-header parsing and rewriting (`portcullis_policy::forwarded`).
//!
//! Input: the peer address on the first line, then `Name: value` header
//! lines. Trusted proxies: 10.0.0.0/8 and fd00::/8.
//!
//! Properties:
//! - an untrusted peer is the client, whatever its headers say;
//! - a client address other than the peer comes from `X-Forwarded-For`,
//!   and every address right of it there is a trusted proxy;
//! - after `apply`, each forwarding header is there exactly once,
//!   `X-Real-IP` is the client, `X-Forwarded-Proto` is `http` or `https`,
//!   and the last `Forwarded` element (read as RFC 7239 does, quoted strings
//!   included) is the gateway's own: `for=` the peer, `proto=` the scheme;
//! - from an untrusted peer, `X-Forwarded-For` is the peer alone.

#![no_main]

use std::net::IpAddr;

use http::HeaderValue;
use http::header::FORWARDED;
use libfuzzer_sys::fuzz_target;
use portcullis_policy::forwarded::{
    Hop, TrustedProxies, X_FORWARDED_FOR, X_FORWARDED_HOST, X_FORWARDED_PROTO, X_REAL_IP, apply, canonical,
    resolve_client,
};

/// `Forwarded` split into elements and pairs the way RFC 7239 reads it:
/// commas and semicolons inside quoted strings do not separate.
fn forwarded_elements(value: &str) -> Vec<Vec<(String, String)>> {
    let mut elements = vec![Vec::new()];
    let mut pair = String::new();
    let mut quoted = false;
    let mut escaped = false;
    let finish = |pair: &mut String, element: &mut Vec<(String, String)>| {
        let text = std::mem::take(pair);
        let text = text.trim();
        if let Some((name, value)) = text.split_once('=') {
            let value = value.trim();
            let value = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')).unwrap_or(value);
            element.push((name.trim().to_ascii_lowercase(), value.replace('\\', "")));
        }
    };
    for c in value.chars() {
        if quoted {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                quoted = false;
            }
            pair.push(c);
            continue;
        }
        match c {
            '"' => {
                quoted = true;
                pair.push(c);
            }
            ';' => finish(&mut pair, elements.last_mut().unwrap_or(&mut Vec::new())),
            ',' => {
                if let Some(element) = elements.last_mut() {
                    finish(&mut pair, element);
                }
                elements.push(Vec::new());
            }
            _ => pair.push(c),
        }
    }
    if let Some(element) = elements.last_mut() {
        finish(&mut pair, element);
    }
    elements
}

fuzz_target!(|data: &[u8]| {
    let mut lines = data.split(|b| *b == b'\n');
    let Some(peer) =
        lines.next().and_then(|l| std::str::from_utf8(l).ok()).and_then(|l| l.trim().parse::<IpAddr>().ok())
    else {
        return;
    };
    let headers = portcullis_fuzz::headers(lines);
    let trusted = TrustedProxies::new(vec!["10.0.0.0/8".parse().unwrap(), "fd00::/8".parse().unwrap()]);
    let client = resolve_client(peer, &headers, &trusted);
    let peer = canonical(peer);
    assert_eq!(client.peer, peer);
    assert_eq!(client.peer_trusted, trusted.contains(peer));
    if !client.peer_trusted {
        assert_eq!(client.ip, peer, "untrusted peer's headers were believed");
    } else if client.ip != peer {
        let entries: Vec<String> = headers
            .get_all(&X_FORWARDED_FOR)
            .iter()
            .flat_map(|v| v.to_str().unwrap_or("").split(',').map(|e| e.trim().to_owned()).collect::<Vec<_>>())
            .collect();
        let parsed: Vec<Option<IpAddr>> = entries
            .iter()
            .map(|e| {
                e.parse::<IpAddr>()
                    .ok()
                    .or_else(|| e.parse::<std::net::SocketAddr>().ok().map(|s| s.ip()))
                    .map(canonical)
            })
            .collect();
        let at = parsed.iter().rposition(|ip| *ip == Some(client.ip));
        let Some(at) = at else { panic!("client {} is not in X-Forwarded-For {entries:?}", client.ip) };
        for right in &parsed[at + 1..] {
            assert!(right.is_some_and(|ip| trusted.contains(ip)), "an untrusted hop right of the client: {entries:?}");
        }
    }

    let host = headers.get(http::header::HOST).cloned();
    for scheme in ["http", "https"] {
        let mut out = headers.clone();
        apply(&mut out, &Hop { client, scheme, host: host.as_ref(), peer_value: None });
        for name in [&X_FORWARDED_FOR, &X_FORWARDED_PROTO, &X_REAL_IP, &FORWARDED] {
            assert_eq!(out.get_all(name).iter().count(), 1, "{name} not exactly once: {out:?}");
        }
        assert!(out.get_all(&X_FORWARDED_HOST).iter().count() <= 1);
        let real_ip = out.get(&X_REAL_IP).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<IpAddr>().ok());
        assert_eq!(real_ip, Some(client.ip));
        let proto = out.get(&X_FORWARDED_PROTO).map(HeaderValue::as_bytes).unwrap_or_default();
        assert!(proto.eq_ignore_ascii_case(b"http") || proto.eq_ignore_ascii_case(b"https"));
        if !client.peer_trusted {
            assert_eq!(out.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()), Some(peer.to_string().as_str()));
            assert_eq!(proto, scheme.as_bytes());
        }
        let forwarded = out.get(&FORWARDED).and_then(|v| v.to_str().ok()).unwrap_or_else(|| panic!("{out:?}"));
        let elements = forwarded_elements(forwarded);
        let last = elements.last().unwrap();
        let get = |name: &str| last.iter().filter(|(n, _)| n == name).map(|(_, v)| v.as_str()).collect::<Vec<_>>();
        let node = match peer {
            IpAddr::V4(v4) => v4.to_string(),
            IpAddr::V6(v6) => format!("[{v6}]"),
        };
        assert_eq!(get("for"), [node.as_str()], "last Forwarded element {last:?} of {forwarded:?}");
        assert_eq!(get("proto"), [scheme], "last Forwarded element {last:?} of {forwarded:?}");
    }
});
