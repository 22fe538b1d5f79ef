//! Who a request is from, as the defences learn it: request extensions one
//! layer sets and later layers read, kept here so that no defence has to
//! import another to know the caller.
//!
//! Rules:
//! - [`Caller`] is set only by the authentication layer, after a credential
//!   was verified; its absence means the request is unauthenticated (a
//!   public route), never "unknown yet".
//! - [`LoginAccount`] is set only by the login layer, on login routes, and
//!   holds a fingerprint, never the submitted name: it becomes a store key.

use std::sync::Arc;

use portcullis_policy::Principal;

/// The authenticated caller of a request: in the request's extensions for
/// inner layers, and in the response's for the access log and events.
#[derive(Debug, Clone)]
pub struct Caller(pub Arc<Principal>);

/// The fingerprint of the account name a login request submitted, in the
/// request's extensions for rate limits keyed by `account`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginAccount(pub String);
