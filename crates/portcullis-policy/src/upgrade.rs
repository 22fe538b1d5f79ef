//! Protocol upgrades: only WebSocket, only in RFC 6455's shape, only where a
//! route allows it.
//!
//! Defends against tunnels that skip the pipeline. Once an upstream answers
//! `101 Switching Protocols`, the gateway joins the two connections byte for
//! byte: nothing inside is HTTP the gateway has judged. An `Upgrade: h2c`
//! passed through would let a client speak HTTP/2 straight to the upstream
//! and send, inside the tunnel, requests for routes it could never reach
//! through the gateway (no authentication, WAF or limit). So:
//!
//! 1. A request whose `Upgrade` names anything but exactly one `websocket`
//!    token (`h2c`, `TLS/1.0`, `websocket, h2c`, two `Upgrade` headers) is
//!    refused: `upgrade.protocol` (400). RFC 9110 §7.8 lets a server ignore
//!    an upgrade; refusing makes the attempt visible as an event.
//! 2. A WebSocket upgrade must have RFC 6455 §4.2.1's shape: `GET`,
//!    HTTP/1.1, one `Sec-WebSocket-Version: 13`, one `Sec-WebSocket-Key`
//!    that is base64 of 16 bytes, and no request body (bytes after the head
//!    would land in the tunnel unjudged). Otherwise `upgrade.websocket` (400).
//! 3. The route decides whether WebSockets are allowed at all (route key
//!    `websocket`, off by default): `upgrade.not_allowed` (400) otherwise.
//! 4. The upstream's `101` must complete the handshake the client asked for:
//!    `Upgrade: websocket`, `Connection: upgrade` and the
//!    `Sec-WebSocket-Accept` derived from the client's key (§4.2.2), and a
//!    subprotocol only from those offered. A `101` that does not, or a `101`
//!    to a request that asked for no upgrade, is `upstream.protocol` (502)
//!    and no tunnel is opened.
//!
//! Deployment caveat: after the `101`, the WebSocket messages themselves are
//! not inspected (no WAF, no per-message limits); authentication and
//! authorization happen once, on the handshake.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use http::header::{CONNECTION, HeaderMap, HeaderValue, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, UPGRADE};
use http::{Method, Version};

use crate::deny::{Denied, Reason};

/// The GUID RFC 6455 §1.3 appends to the key to make the accept value.
const WEBSOCKET_GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// A WebSocket handshake the gateway admitted: what it needs to check the
/// upstream's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebSocketUpgrade {
    /// The client's `Sec-WebSocket-Key`.
    key: HeaderValue,
    /// The subprotocols the client offered (`Sec-WebSocket-Protocol`), lower-case.
    protocols: Vec<String>,
}

impl WebSocketUpgrade {
    /// The `Sec-WebSocket-Accept` value a server must answer this key with.
    #[must_use]
    pub fn expected_accept(&self) -> String {
        accept_for(self.key.as_bytes())
    }
}

/// The `Sec-WebSocket-Accept` value for a `Sec-WebSocket-Key` (RFC 6455 §4.2.2).
#[must_use]
pub fn accept_for(key: &[u8]) -> String {
    let mut context = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY);
    context.update(key);
    context.update(WEBSOCKET_GUID);
    STANDARD.encode(context.finish())
}

fn tokens<'h>(headers: &'h HeaderMap, name: &http::HeaderName) -> impl Iterator<Item = &'h [u8]> + 'h {
    headers
        .get_all(name)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
}

/// A printable, bounded copy of client-sent text for an event's detail.
fn shown(bytes: &[u8]) -> String {
    let text: String = String::from_utf8_lossy(bytes).chars().filter(|c| !c.is_control()).take(64).collect();
    format!("{text:?}")
}

/// Classifies a request's upgrade, after hop-by-hop removal (which keeps
/// `Upgrade` only when `Connection` names it).
///
/// `has_body` says whether a body follows the head.
///
/// # Errors
/// `upgrade.protocol` for any token but `websocket`, `upgrade.websocket` for
/// a WebSocket handshake of the wrong shape (rules 1 and 2 of the module docs).
pub fn classify(
    method: &Method,
    version: Version,
    headers: &HeaderMap,
    has_body: bool,
) -> Result<Option<WebSocketUpgrade>, Denied> {
    if !headers.contains_key(UPGRADE) {
        return Ok(None);
    }
    let offered: Vec<&[u8]> = tokens(headers, &UPGRADE).collect();
    if offered.len() != 1 || !offered[0].eq_ignore_ascii_case(b"websocket") {
        let list = offered.iter().map(|t| shown(t)).collect::<Vec<_>>().join(", ");
        return Err(Denied::new(Reason::UpgradeProtocol).with_detail(format!("upgrade to {list} refused")));
    }
    let malformed = |what: &str| Err(Denied::new(Reason::UpgradeWebSocket).with_detail(what.to_owned()));
    if method != Method::GET {
        return malformed("a WebSocket handshake must be a GET");
    }
    if version != Version::HTTP_11 {
        return malformed("a WebSocket handshake must be HTTP/1.1");
    }
    if has_body {
        return malformed("a WebSocket handshake has no body");
    }
    let mut versions = headers.get_all(http::header::SEC_WEBSOCKET_VERSION).iter();
    match (versions.next(), versions.next()) {
        (Some(v), None) if v == "13" => {}
        _ => return malformed("Sec-WebSocket-Version must be one 13"),
    }
    let mut keys = headers.get_all(SEC_WEBSOCKET_KEY).iter();
    let key = match (keys.next(), keys.next()) {
        (Some(key), None) => key,
        _ => return malformed("one Sec-WebSocket-Key is required"),
    };
    if STANDARD.decode(key.as_bytes()).map(|k| k.len()) != Ok(16) {
        return malformed("Sec-WebSocket-Key must be base64 of 16 bytes");
    }
    let protocols = tokens(headers, &http::header::SEC_WEBSOCKET_PROTOCOL)
        .map(|p| String::from_utf8_lossy(p).to_ascii_lowercase())
        .collect();
    Ok(Some(WebSocketUpgrade { key: key.clone(), protocols }))
}

/// Checks an upstream's `101` against the handshake the client asked for
/// (`None`: the client asked for no upgrade). Reads the response headers as
/// the upstream sent them, before hop-by-hop removal.
///
/// # Errors
/// `upstream.protocol` when the `101` does not complete the handshake (rule 4).
pub fn check_switch(asked: Option<&WebSocketUpgrade>, response: &HeaderMap) -> Result<(), Denied> {
    let refuse = |what: &str| Err(Denied::new(Reason::UpstreamProtocol).with_detail(format!("101 refused: {what}")));
    let Some(asked) = asked else {
        return refuse("the request asked for no upgrade");
    };
    let upgrade: Vec<&[u8]> = tokens(response, &UPGRADE).collect();
    if upgrade.len() != 1 || !upgrade[0].eq_ignore_ascii_case(b"websocket") {
        return refuse("Upgrade is not websocket");
    }
    if !tokens(response, &CONNECTION).any(|t| t.eq_ignore_ascii_case(b"upgrade")) {
        return refuse("Connection does not name upgrade");
    }
    let mut accepts = response.get_all(SEC_WEBSOCKET_ACCEPT).iter();
    match (accepts.next(), accepts.next()) {
        (Some(accept), None) if accept.as_bytes() == asked.expected_accept().as_bytes() => {}
        _ => return refuse("Sec-WebSocket-Accept does not answer the key"),
    }
    let chosen: Vec<&[u8]> = tokens(response, &http::header::SEC_WEBSOCKET_PROTOCOL).collect();
    match chosen.as_slice() {
        [] => Ok(()),
        [one] if asked.protocols.iter().any(|p| p.as_bytes().eq_ignore_ascii_case(one)) => Ok(()),
        _ => refuse("Sec-WebSocket-Protocol was not offered"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

    use crate::test_support::headers as map;

    fn ws(extra: &[(&str, &str)]) -> HeaderMap {
        let mut pairs = vec![("upgrade", "websocket"), ("connection", "upgrade"), ("sec-websocket-version", "13")];
        if !extra.iter().any(|(k, _)| *k == "sec-websocket-key") {
            pairs.push(("sec-websocket-key", KEY));
        }
        pairs.extend_from_slice(extra);
        map(&pairs)
    }

    #[test]
    fn the_rfc_example_accept_value() {
        // RFC 6455 §1.3.
        assert_eq!(accept_for(KEY.as_bytes()), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn requests_are_classified() {
        let v11 = Version::HTTP_11;
        let reason = |r: Result<Option<WebSocketUpgrade>, Denied>| r.map(|u| u.is_some()).map_err(|d| d.reason.code());
        type Case = (&'static str, Method, Version, HeaderMap, bool, Result<bool, &'static str>);
        let cases: &[Case] = &[
            ("no upgrade", Method::GET, v11, map(&[]), false, Ok(false)),
            ("websocket", Method::GET, v11, ws(&[]), false, Ok(true)),
            (
                "case",
                Method::GET,
                v11,
                ws(&[]).tap(|h| h.insert(UPGRADE, "WebSocket".parse().unwrap())),
                false,
                Ok(true),
            ),
            ("h2c", Method::GET, v11, map(&[("upgrade", "h2c")]), false, Err("upgrade.protocol")),
            ("tls", Method::GET, v11, map(&[("upgrade", "TLS/1.0")]), false, Err("upgrade.protocol")),
            ("list", Method::GET, v11, map(&[("upgrade", "websocket, h2c")]), false, Err("upgrade.protocol")),
            (
                "two headers",
                Method::GET,
                v11,
                map(&[("upgrade", "websocket"), ("upgrade", "websocket")]),
                false,
                Err("upgrade.protocol"),
            ),
            ("versioned token", Method::GET, v11, map(&[("upgrade", "websocket/13")]), false, Err("upgrade.protocol")),
            ("post", Method::POST, v11, ws(&[]), false, Err("upgrade.websocket")),
            ("http/1.0", Method::GET, Version::HTTP_10, ws(&[]), false, Err("upgrade.websocket")),
            ("body", Method::GET, v11, ws(&[]), true, Err("upgrade.websocket")),
            (
                "version 8",
                Method::GET,
                v11,
                ws(&[]).tap(|h| h.insert("sec-websocket-version", "8".parse().unwrap())),
                false,
                Err("upgrade.websocket"),
            ),
            ("two versions", Method::GET, v11, ws(&[("sec-websocket-version", "13")]), false, Err("upgrade.websocket")),
            ("no key", Method::GET, v11, ws(&[]).tap(|h| h.remove(SEC_WEBSOCKET_KEY)), false, Err("upgrade.websocket")),
            ("short key", Method::GET, v11, ws(&[("sec-websocket-key", "c2hvcnQ=")]), false, Err("upgrade.websocket")),
            (
                "two keys",
                Method::GET,
                v11,
                ws(&[("sec-websocket-key", KEY), ("sec-websocket-key", KEY)]),
                false,
                Err("upgrade.websocket"),
            ),
        ];
        for (name, method, version, headers, body, expected) in cases {
            assert_eq!(reason(classify(method, *version, headers, *body)), *expected, "{name}");
        }
    }

    #[test]
    fn switches_are_checked_against_the_handshake() {
        let asked = classify(&Method::GET, Version::HTTP_11, &ws(&[("sec-websocket-protocol", "chat, v2")]), false)
            .unwrap()
            .unwrap();
        let good = || {
            map(&[
                ("upgrade", "websocket"),
                ("connection", "Upgrade"),
                ("sec-websocket-accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
            ])
        };
        assert!(check_switch(Some(&asked), &good()).is_ok());
        assert!(
            check_switch(Some(&asked), &good().tap(|h| h.insert("sec-websocket-protocol", "V2".parse().unwrap())))
                .is_ok()
        );
        let bad: &[(&str, HeaderMap)] = &[
            ("unprompted", good()),
            ("h2c", good().tap(|h| h.insert(UPGRADE, "h2c".parse().unwrap()))),
            ("no connection", good().tap(|h| h.remove(CONNECTION))),
            ("wrong accept", good().tap(|h| h.insert(SEC_WEBSOCKET_ACCEPT, "AAAA".parse().unwrap()))),
            ("no accept", good().tap(|h| h.remove(SEC_WEBSOCKET_ACCEPT))),
            ("unoffered protocol", good().tap(|h| h.insert("sec-websocket-protocol", "admin".parse().unwrap()))),
        ];
        for (i, (name, headers)) in bad.iter().enumerate() {
            let asked = if i == 0 { None } else { Some(&asked) };
            let err = check_switch(asked, headers).unwrap_err();
            assert_eq!(err.reason, Reason::UpstreamProtocol, "{name}");
        }
    }

    trait Tap: Sized {
        fn tap<R>(mut self, f: impl FnOnce(&mut Self) -> R) -> Self {
            f(&mut self);
            self
        }
    }
    impl Tap for HeaderMap {}
}
