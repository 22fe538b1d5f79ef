//! The request as the client sent it, where the gateway has since changed it:
//! layers that rewrite the request leave here what a later defence still
//! needs to judge, so that defence need not import the rewriting layer.
//!
//! Rules:
//! - A marker is set only by the layer that made the change, and only when
//!   it changed something; absent, the request is as received.
//! - Defences that judge what the upstream will see read the request itself;
//!   those that judge what the client sent (the WAF, the duplicates guard)
//!   read these markers first.

/// The request target before path normalization, kept by the normalize
/// layer when it rewrites the path.
#[derive(Debug, Clone)]
pub struct OriginalUri(pub http::Uri);

/// A hop-by-hop credential header (`Proxy-Authorization`) the client sent
/// more than once; set by the reject layer before it strips hop-by-hop
/// headers, refused by the duplicates guard.
#[derive(Debug, Clone, Copy)]
pub struct RepeatedHopHeader(pub &'static str);
