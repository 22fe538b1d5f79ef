//! Protocol upgrades on live requests (rules in `portcullis_policy::upgrade`):
//! anything but an RFC 6455 WebSocket handshake is refused before routing.
//!
//! An admitted handshake travels inward as a
//! [`WebSocketUpgrade`](portcullis_policy::upgrade::WebSocketUpgrade) in the
//! request's extensions: the route layer refuses it on routes without
//! `websocket = true`, and the proxy checks the upstream's `101` against it
//! before joining the connections.
//!
//! Deployment caveat: after the `101`, frames are not inspected.

use http::Request;
use http_body::Body as _;
use portcullis_policy::Denied;
use portcullis_policy::upgrade::classify;

use crate::Body;
use crate::guard::Guard;

/// See the module docs.
#[derive(Debug, Clone, Copy, Default)]
pub struct Upgrades;

impl Guard for Upgrades {
    fn check(&self, req: &mut Request<Body>) -> Result<(), Denied> {
        let has_body = !req.body().is_end_stream();
        if let Some(websocket) = classify(req.method(), req.version(), req.headers(), has_body)? {
            req.extensions_mut().insert(websocket);
        }
        Ok(())
    }
}
