//! How a defence reports what it decided, without rendering anything: the
//! response extensions the reject layer turns into error bodies and events.
//!
//! Rules:
//! - A refusal is [`deny`]: a placeholder response carrying the typed
//!   [`Denied`]; the reject layer renders it and emits exactly one event.
//! - A refusal answered otherwise (a redirect to login) is the real answer
//!   carrying [`Redirected`]: an event, no rendering.
//! - Something worth an event that let the request through is a [`note`]
//!   (action `log`); a response may carry several, and a note never replaces
//!   another.
//! - A refusal whose event is throttled (a banned client's repeats) also
//!   carries [`Quiet`]: rendered as any other, without an event.
//! - A ban the request's refusals triggered is an [`IssuedBan`], emitted
//!   (action `ban`) after the request's other events.
//!
//! Defences import this module, never the reject layer, so that adding a
//! defence does not add an edge to the renderer.

use http::Response;
use portcullis_policy::Denied;

use crate::{Body, empty};

/// A response that denies the request. The reject layer renders it.
#[must_use]
pub fn deny(denied: impl Into<Denied>) -> Response<Body> {
    let denied = denied.into();
    let mut response = Response::new(empty());
    *response.status_mut() = denied.status();
    response.extensions_mut().insert(denied);
    response
}

/// Something worth an event that did not refuse the request (a limit store
/// unavailable while its limit fails open). The reject layer emits it with
/// action `log` and the status actually sent.
#[derive(Debug, Clone)]
pub struct Noted(pub Denied);

/// More notes on one response, after the first ([`Noted`]).
#[derive(Debug, Clone, Default)]
pub struct MoreNoted(pub Vec<Denied>);

/// Adds a note to `response` without replacing one an inner layer made.
pub fn note<B>(response: &mut Response<B>, denied: Denied) {
    let extensions = response.extensions_mut();
    if extensions.get::<Noted>().is_none() {
        extensions.insert(Noted(denied));
    } else if let Some(more) = extensions.get_mut::<MoreNoted>() {
        more.0.push(denied);
    } else {
        extensions.insert(MoreNoted(vec![denied]));
    }
}

/// A decision worth an event that granted what was asked (an account
/// logged in, a password changed): the reject layer emits it with action
/// `allow` and the status actually sent.
#[derive(Debug, Clone, Default)]
pub struct Recorded(pub Vec<Denied>);

/// Records `event` on `response` (see [`Recorded`]), after any recorded
/// before.
pub fn record<B>(response: &mut Response<B>, event: Denied) {
    let extensions = response.extensions_mut();
    match extensions.get_mut::<Recorded>() {
        Some(recorded) => recorded.0.push(event),
        None => {
            extensions.insert(Recorded(vec![event]));
        }
    }
}

/// A refusal answered with a redirect rather than an error body (a browser
/// whose session is no longer valid, sent to login). The reject layer emits
/// its event and leaves the response as it is.
#[derive(Debug, Clone)]
pub struct Redirected(pub Denied);

/// A refusal to render without an event: the reject layer answers it as any
/// other denial but emits nothing (a banned client's events are throttled).
#[derive(Debug, Clone, Copy)]
pub struct Quiet;

/// A ban this request's refusals triggered, under a `[[ban]]` rule. The
/// reject layer emits it with action `ban` and the status actually sent,
/// after the request's own events.
#[derive(Debug, Clone)]
pub struct IssuedBan(pub Denied);
