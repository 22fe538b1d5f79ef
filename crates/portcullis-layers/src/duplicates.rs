//! Duplicate credentials and override headers on live requests (rules in
//! `portcullis_policy::duplicates` and `portcullis_policy::overrides`): a
//! request that carries a credential, an identity cookie or `Host` twice, or
//! a header a backend would read to change its method or path, is refused
//! before anything reads it.
//!
//! `Proxy-Authorization` is hop-by-hop and already gone when this runs; the
//! reject layer counts it before removing it and leaves a
//! [`RepeatedHopHeader`] for this guard.

use std::sync::Arc;

use http::Request;
use portcullis_policy::duplicates::Singletons;
use portcullis_policy::{Denied, Reason};

use crate::Body;
use crate::guard::Guard;
use crate::received::RepeatedHopHeader;

/// See the module docs.
#[derive(Debug, Clone)]
pub struct Duplicates(pub Arc<Singletons>);

impl Guard for Duplicates {
    fn check(&self, req: &mut Request<Body>) -> Result<(), Denied> {
        if let Some(RepeatedHopHeader(name)) = req.extensions().get::<RepeatedHopHeader>() {
            return Err(Denied::new(Reason::RequestDuplicate)
                .with_rule(*name)
                .with_detail(format!("{name} appears more than once")));
        }
        self.0.check(req.headers())?;
        portcullis_policy::overrides::check(req.headers(), req.uri().query())
    }
}
