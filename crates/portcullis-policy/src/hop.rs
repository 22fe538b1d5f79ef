//! Hop-by-hop header removal (RFC 9110 §7.6.1).
//!
//! Defends against request smuggling and header injection through connection
//! management: headers that describe one connection (and any header a client
//! names in `Connection`) must not cross the proxy, or a client could, for
//! example, make the gateway drop `X-Forwarded-For` on the way upstream by
//! listing it in `Connection`.
//!
//! The one exception is a protocol upgrade: `Upgrade` and
//! `Connection: upgrade` are kept for the upgrade guard
//! (`crate::upgrade`), which lets only WebSocket through to the upstream.

use http::HeaderName;
use http::header::{
    CONNECTION, HeaderMap, HeaderValue, PROXY_AUTHENTICATE, PROXY_AUTHORIZATION, TE, TRAILER, TRANSFER_ENCODING,
    UPGRADE,
};

/// Headers that are always hop-by-hop.
const HOP_BY_HOP: [HeaderName; 9] = [
    CONNECTION,
    HeaderName::from_static("keep-alive"),
    PROXY_AUTHENTICATE,
    PROXY_AUTHORIZATION,
    HeaderName::from_static("proxy-connection"),
    TE,
    TRAILER,
    TRANSFER_ENCODING,
    UPGRADE,
];

/// Framing and connection headers whose underscore spellings
/// (`Transfer_Encoding`) the gateway removes too: CGI-style servers (Rack,
/// uWSGI, PHP) read both spellings as one header.
pub const ALIASED: &[&str] = &[
    "transfer-encoding",
    "content-length",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "proxy-authenticate",
];

/// Whether the headers ask for a protocol upgrade: `Connection` lists
/// `upgrade` and an `Upgrade` header names the protocol.
#[must_use]
pub fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(UPGRADE) && connection_tokens(headers).any(|t| t.eq_ignore_ascii_case("upgrade"))
}

fn connection_tokens(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// Removes hop-by-hop headers and every header named in `Connection`.
///
/// With `keep_upgrade`, an upgrade request or `101` answer keeps its `Upgrade`
/// header and gets `Connection: upgrade` back.
pub fn strip(headers: &mut HeaderMap, keep_upgrade: bool) {
    // Most messages carry none: one pass over the names beats nine lookups.
    if !headers.keys().any(|name| HOP_BY_HOP.contains(name)) {
        return;
    }
    let upgrade = keep_upgrade && is_upgrade(headers);
    let named: Vec<HeaderName> =
        connection_tokens(headers).filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok()).collect();
    // Every `Upgrade` value is kept, so the upgrade guard judges what the
    // client really asked for (`websocket` and then `h2c` is refused).
    let upgrade_values: Vec<HeaderValue> =
        if upgrade { headers.get_all(UPGRADE).iter().cloned().collect() } else { Vec::new() };
    for name in named {
        headers.remove(name);
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
    if !upgrade_values.is_empty() {
        headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
        for value in upgrade_values {
            headers.append(UPGRADE, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::test_support::headers as map;

    #[test]
    fn strips_standard_and_connection_named_headers() {
        let mut h = map(&[
            ("connection", "keep-alive, X-Forwarded-For, x-secret"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("trailer", "x-sig"),
            ("transfer-encoding", "chunked"),
            ("proxy-authorization", "Basic Zm9vOmJhcg=="),
            ("proxy-connection", "keep-alive"),
            ("x-secret", "1"),
            ("x-forwarded-for", "1.2.3.4"),
            ("upgrade", "h2c"),
            ("accept", "*/*"),
        ]);
        strip(&mut h, true);
        let left: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        assert_eq!(left, ["accept"]);
    }

    #[test]
    fn keeps_websocket_upgrade_only_when_asked() {
        let ws = [("connection", "Upgrade"), ("upgrade", "websocket"), ("sec-websocket-key", "k")];
        let mut h = map(&ws);
        assert!(is_upgrade(&h));
        strip(&mut h, true);
        assert_eq!(h["connection"], "upgrade");
        assert_eq!(h["upgrade"], "websocket");
        assert_eq!(h["sec-websocket-key"], "k");

        let mut h = map(&ws);
        strip(&mut h, false);
        assert!(!h.contains_key("upgrade") && !h.contains_key("connection"));

        // Upgrade without Connection: upgrade is not an upgrade.
        let h = map(&[("upgrade", "websocket")]);
        assert!(!is_upgrade(&h));
    }
}
