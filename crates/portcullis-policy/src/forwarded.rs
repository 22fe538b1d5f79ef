//! Client address resolution and the forwarding headers sent upstream.
//!
//! Defends against IP spoofing through `X-Forwarded-For` and friends: a
//! backend (and every per-IP defence in Portcullis) must see the address of the
//! real client, not one the client made up.
//!
//! Decision rules:
//! - The TCP peer is the client unless it is a configured trusted proxy.
//! - When the peer is trusted, `X-Forwarded-For` is read right to left and the
//!   first address that is not itself a trusted proxy is the client. A
//!   malformed entry stops the walk: the last good address is used.
//! - Forwarding headers (`X-Forwarded-For/-Proto/-Host`, `Forwarded`,
//!   `X-Real-IP`) from an untrusted peer are discarded and rewritten; from a
//!   trusted peer the chain is kept and extended with the peer. A
//!   `Forwarded` field that leaves a quoted string open is dropped from the
//!   chain: it would swallow the element the gateway appends, and a proxy
//!   that passes the client's `Forwarded` through unchanged would let the
//!   client make its own element the last one.
//!
//! Deployment caveat: list only the proxies that really sit in front of
//! Portcullis (a load balancer's subnet). Trusting a range that clients can
//! connect from lets them choose their address.

use std::net::IpAddr;

use bytes::Bytes;
use http::header::{FORWARDED, HeaderMap, HeaderName, HeaderValue};
use ipnet::IpNet;

/// `X-Forwarded-For`.
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// `X-Forwarded-Proto`.
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// `X-Forwarded-Host`.
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
/// `X-Real-IP`.
pub const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

/// The configured trusted proxies.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    nets: Vec<IpNet>,
}

impl TrustedProxies {
    /// Trust the given networks.
    #[must_use]
    pub fn new(nets: Vec<IpNet>) -> Self {
        Self { nets }
    }

    /// Whether `ip` is a trusted proxy. IPv4-mapped IPv6 addresses are
    /// compared as IPv4.
    #[must_use]
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.nets.iter().any(|net| net.contains(&ip))
    }

    /// Whether no proxy is trusted.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.nets.is_empty()
    }
}

/// Maps IPv4-mapped IPv6 (`::ffff:a.b.c.d`, seen on dual-stack sockets) to IPv4.
#[must_use]
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

/// The unit one client is counted by (limits, connection caps, bans): an
/// IPv4 address as is, an IPv6 address by its /64 (one host usually owns a
/// whole /64, so counting single addresses would be trivially evaded).
#[must_use]
pub fn client_group(ip: IpAddr) -> IpAddr {
    match canonical(ip) {
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
        v4 @ IpAddr::V4(_) => v4,
    }
}

/// Who the client is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr {
    /// The resolved client address.
    pub ip: IpAddr,
    /// The TCP peer.
    pub peer: IpAddr,
    /// Whether the peer is a trusted proxy (its forwarding headers are kept).
    pub peer_trusted: bool,
}

/// Resolves the client address from the peer and, if the peer is trusted, its
/// `X-Forwarded-For` chain.
#[must_use]
pub fn resolve_client(peer: IpAddr, headers: &HeaderMap, trusted: &TrustedProxies) -> ClientAddr {
    let peer = canonical(peer);
    if !trusted.contains(peer) {
        return ClientAddr { ip: peer, peer, peer_trusted: false };
    }
    let mut client = peer;
    // Several X-Forwarded-For fields form one list, in order.
    let entries: Vec<&str> =
        headers.get_all(&X_FORWARDED_FOR).iter().flat_map(|value| value.to_str().unwrap_or("").split(',')).collect();
    for entry in entries.iter().rev() {
        let Some(ip) = parse_forwarded_ip(entry) else { break };
        client = ip;
        if !trusted.contains(ip) {
            break;
        }
    }
    ClientAddr { ip: client, peer, peer_trusted: true }
}

/// Parses one `X-Forwarded-For` element: an IP, optionally bracketed IPv6 or
/// with a port (`1.2.3.4:5678`, `[::1]:80`).
fn parse_forwarded_ip(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    entry.parse::<std::net::SocketAddr>().ok().map(|sa| canonical(sa.ip()))
}

/// What the gateway knows about the hop it is adding.
#[derive(Debug, Clone)]
pub struct Hop<'a> {
    /// The resolved client.
    pub client: ClientAddr,
    /// `http` or `https`: how the client reached the gateway.
    pub scheme: &'static str,
    /// The host the client asked for (from `Host` or the URI authority).
    pub host: Option<&'a HeaderValue>,
    /// The peer address as a header value, if the caller keeps one per
    /// connection (saves formatting it for every request).
    pub peer_value: Option<&'a HeaderValue>,
}

/// A header value holding an IP address. Allocates once; clones share it.
#[must_use]
pub fn ip_value(ip: IpAddr) -> HeaderValue {
    HeaderValue::from_maybe_shared(Bytes::from(ip.to_string())).unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

/// A header value from a string built here (one allocation, no copy).
fn owned_value(text: String) -> Option<HeaderValue> {
    HeaderValue::from_maybe_shared(Bytes::from(text)).ok()
}

/// Rewrites the forwarding headers of a request about to go upstream.
pub fn apply(headers: &mut HeaderMap, hop: &Hop<'_>) {
    let peer = hop.client.peer;
    let trusted = hop.client.peer_trusted;
    headers.reserve(5);
    let peer_value = hop.peer_value.cloned().unwrap_or_else(|| ip_value(peer));

    // X-Forwarded-For: the chain, ending with our peer.
    let xff = if trusted && headers.contains_key(&X_FORWARDED_FOR) {
        let existing: Vec<&str> = headers
            .get_all(&X_FORWARDED_FOR)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .collect();
        if existing.is_empty() { None } else { owned_value(format!("{}, {peer}", existing.join(", "))) }
    } else {
        None
    };
    headers.insert(X_FORWARDED_FOR, xff.unwrap_or_else(|| peer_value.clone()));

    // A kept value is kept once: the first, the one the gateway itself acts
    // on, so an upstream reading the last field cannot see another.
    let kept_proto = headers
        .get(&X_FORWARDED_PROTO)
        .filter(|v| {
            trusted && (v.as_bytes().eq_ignore_ascii_case(b"https") || v.as_bytes().eq_ignore_ascii_case(b"http"))
        })
        .cloned();
    headers.insert(X_FORWARDED_PROTO, kept_proto.unwrap_or_else(|| HeaderValue::from_static(hop.scheme)));

    let kept_host = headers.get(&X_FORWARDED_HOST).filter(|_| trusted).cloned();
    match kept_host.or_else(|| hop.host.cloned()) {
        Some(host) => {
            headers.insert(X_FORWARDED_HOST, host);
        }
        None => {
            headers.remove(&X_FORWARDED_HOST);
        }
    }

    // RFC 7239 Forwarded: append our element to a trusted chain, else replace.
    let host = hop.host.and_then(|h| h.to_str().ok());
    let mut element = String::with_capacity(64);
    element.push_str("for=");
    push_forwarded_node(&mut element, peer);
    if let Some(host) = host {
        if is_token(host) {
            element.push_str(";host=");
            element.push_str(host);
        } else {
            element.push_str(";host=\"");
            element.push_str(&host.replace(['"', '\\'], ""));
            element.push('"');
        }
    }
    element.push_str(";proto=");
    element.push_str(hop.scheme);
    let forwarded = if trusted && headers.contains_key(FORWARDED) {
        let existing: Vec<&str> =
            headers.get_all(FORWARDED).iter().filter_map(|v| v.to_str().ok()).filter(|v| quotes_closed(v)).collect();
        if existing.is_empty() { element } else { format!("{}, {element}", existing.join(", ")) }
    } else {
        element
    };
    match owned_value(forwarded) {
        Some(value) => {
            headers.insert(FORWARDED, value);
        }
        None => {
            headers.remove(FORWARDED);
        }
    }

    let real_ip = if hop.client.ip == peer { peer_value } else { ip_value(hop.client.ip) };
    headers.insert(X_REAL_IP, real_ip);
}

/// An RFC 7239 node: IPv6 addresses are bracketed and quoted.
fn push_forwarded_node(out: &mut String, ip: IpAddr) {
    use std::fmt::Write as _;
    // Writing to a String cannot fail.
    let _ = match ip {
        IpAddr::V4(v4) => write!(out, "{v4}"),
        IpAddr::V6(v6) => write!(out, "\"[{v6}]\""),
    };
}

/// Whether every quoted string in a `Forwarded` value ends (RFC 7230
/// quoted-string, `\` escaping the next character).
fn quotes_closed(value: &str) -> bool {
    let mut quoted = false;
    let mut escaped = false;
    for b in value.bytes() {
        match (quoted, escaped, b) {
            (true, true, _) => escaped = false,
            (true, false, b'\\') => escaped = true,
            (_, false, b'"') => quoted = !quoted,
            _ => {}
        }
    }
    !quoted
}

/// RFC 7230 token characters (a host with a port is not a token: `:`).
fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trusted() -> TrustedProxies {
        TrustedProxies::new(vec!["10.0.0.0/8".parse().unwrap(), "fd00::/8".parse().unwrap()])
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
        }
        map
    }

    #[test]
    fn client_resolution_table() {
        let t = trusted();
        type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);
        let cases: &[Case<'_>] = &[
            // untrusted peer: its claims are ignored
            ("203.0.113.5", &[("x-forwarded-for", "1.1.1.1")], "203.0.113.5"),
            // trusted peer, no header: the peer
            ("10.0.0.1", &[], "10.0.0.1"),
            // trusted peer: rightmost untrusted entry
            ("10.0.0.1", &[("x-forwarded-for", "6.6.6.6, 198.51.100.7")], "198.51.100.7"),
            // trusted chain inside XFF is skipped
            ("10.0.0.1", &[("x-forwarded-for", "198.51.100.7, 10.1.1.1")], "198.51.100.7"),
            // several header fields are one list
            ("10.0.0.1", &[("x-forwarded-for", "198.51.100.7"), ("x-forwarded-for", "10.2.2.2")], "198.51.100.7"),
            // garbage stops the walk at the last good address
            ("10.0.0.1", &[("x-forwarded-for", "198.51.100.7, nonsense")], "10.0.0.1"),
            // ports and brackets
            ("10.0.0.1", &[("x-forwarded-for", "[2001:db8::1]:443")], "2001:db8::1"),
            ("10.0.0.1", &[("x-forwarded-for", "198.51.100.7:5555")], "198.51.100.7"),
            // v4-mapped peer counts as v4
            ("::ffff:10.0.0.1", &[("x-forwarded-for", "198.51.100.7")], "198.51.100.7"),
            // all trusted: the leftmost
            ("10.0.0.1", &[("x-forwarded-for", "10.9.9.9, 10.8.8.8")], "10.9.9.9"),
        ];
        for (peer, hdrs, want) in cases {
            let got = resolve_client(peer.parse().unwrap(), &headers(hdrs), &t);
            assert_eq!(got.ip, want.parse::<IpAddr>().unwrap(), "peer {peer} headers {hdrs:?}");
        }
    }

    #[test]
    fn untrusted_peer_headers_are_replaced() {
        let t = trusted();
        let mut h = headers(&[
            ("x-forwarded-for", "1.1.1.1"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "evil.example"),
            ("forwarded", "for=1.1.1.1"),
            ("x-real-ip", "1.1.1.1"),
        ]);
        let client = resolve_client("203.0.113.5".parse().unwrap(), &h, &t);
        let host = HeaderValue::from_static("api.example.com");
        apply(&mut h, &Hop { client, scheme: "http", host: Some(&host), peer_value: None });
        assert_eq!(h["x-forwarded-for"], "203.0.113.5");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "api.example.com");
        assert_eq!(h["forwarded"], "for=203.0.113.5;host=api.example.com;proto=http");
        assert_eq!(h["x-real-ip"], "203.0.113.5");
        assert_eq!(h.get_all("x-forwarded-for").iter().count(), 1);
    }

    #[test]
    fn trusted_peer_chain_is_extended() {
        let t = trusted();
        let mut h = headers(&[
            ("x-forwarded-for", "198.51.100.7"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "shop.example"),
            ("forwarded", "for=198.51.100.7;proto=https"),
        ]);
        let client = resolve_client("10.0.0.1".parse().unwrap(), &h, &t);
        let host = HeaderValue::from_static("127.0.0.1:8080");
        apply(&mut h, &Hop { client, scheme: "http", host: Some(&host), peer_value: None });
        assert_eq!(h["x-forwarded-for"], "198.51.100.7, 10.0.0.1");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-host"], "shop.example");
        assert_eq!(h["forwarded"], "for=198.51.100.7;proto=https, for=10.0.0.1;host=\"127.0.0.1:8080\";proto=http");
        assert_eq!(h["x-real-ip"], "198.51.100.7");
    }

    #[test]
    fn ipv6_forwarded_node_is_quoted() {
        let t = TrustedProxies::default();
        let mut h = HeaderMap::new();
        let client = resolve_client("2001:db8::5".parse().unwrap(), &h, &t);
        apply(&mut h, &Hop { client, scheme: "https", host: None, peer_value: None });
        assert_eq!(h["forwarded"], "for=\"[2001:db8::5]\";proto=https");
        assert!(!h.contains_key("x-forwarded-host"));
    }

    /// Found by the `forwarded` fuzz target: from a trusted peer, a second
    /// `X-Forwarded-Proto` (or `-Host`) field was forwarded beside the first,
    /// which the gateway acted on; an upstream reading the last saw another.
    #[test]
    fn kept_forwarding_headers_are_kept_once() {
        let t = trusted();
        let mut h = headers(&[
            ("x-forwarded-proto", "https"),
            ("x-forwarded-proto", "ht;proto=https"),
            ("x-forwarded-host", "shop.example"),
            ("x-forwarded-host", "evil.example"),
        ]);
        let client = resolve_client("10.1.2.3".parse().unwrap(), &h, &t);
        apply(&mut h, &Hop { client, scheme: "http", host: None, peer_value: None });
        let all =
            |name: &HeaderName| h.get_all(name).iter().map(|v| v.to_str().unwrap().to_owned()).collect::<Vec<_>>();
        assert_eq!(all(&X_FORWARDED_PROTO), ["https"]);
        assert_eq!(all(&X_FORWARDED_HOST), ["shop.example"]);
    }

    /// Found by the `forwarded` fuzz target: a client behind a trusted proxy
    /// that passes `Forwarded` through sent one with an open quoted string,
    /// which swallowed the gateway's element, so the last element a backend
    /// read was the client's forged one.
    #[test]
    fn an_open_quoted_string_cannot_swallow_the_gateways_element() {
        let t = trusted();
        let mut h = headers(&[
            ("forwarded", "for=\"6.6.6.6;proto=https, for=1.2.3.4"),
            ("forwarded", "for=198.51.100.7;host=\"a\\\"b\""),
        ]);
        let client = resolve_client("10.0.0.5".parse().unwrap(), &h, &t);
        apply(&mut h, &Hop { client, scheme: "http", host: None, peer_value: None });
        assert_eq!(h["forwarded"], "for=198.51.100.7;host=\"a\\\"b\", for=10.0.0.5;proto=http");
    }
}
