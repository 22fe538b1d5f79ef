//! Path normalization before routing: the request's path is rewritten to its
//! one normal spelling (rules in `portcullis_policy::normalize`), so routes
//! and later rules see the path the upstream will receive, and a path that
//! cannot be normalized safely is refused with 400 (`path.*`).
//!
//! The query string is kept as sent. Events and the access log record the
//! path as the client sent it, which is the evidence of a bypass attempt.

use http::uri::PathAndQuery;
use http::{Request, Uri};
use portcullis_policy::normalize::{self, PathPolicy};
use portcullis_policy::{Denied, Reason};

use crate::Body;
use crate::guard::Guard;
use crate::received::OriginalUri;

/// See the module docs.
#[derive(Debug, Clone, Copy)]
pub struct Normalize(pub PathPolicy);

/// `uri` with its path replaced by `path` (query kept).
fn with_path(uri: &Uri, path: &str) -> Option<Uri> {
    let path_and_query = match uri.query() {
        Some(query) => format!("{path}?{query}"),
        None => path.to_owned(),
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(PathAndQuery::try_from(path_and_query).ok()?);
    Uri::from_parts(parts).ok()
}

impl Guard for Normalize {
    fn check(&self, req: &mut Request<Body>) -> Result<(), Denied> {
        // CONNECT and `OPTIONS *` have no origin-form path to normalize.
        if req.uri().path_and_query().is_none() || req.uri().path() == "*" {
            return Ok(());
        }
        let path = match normalize::normalize(req.uri().path(), &self.0) {
            Ok(std::borrow::Cow::Borrowed(_)) => return Ok(()),
            Ok(std::borrow::Cow::Owned(path)) => path,
            Err(error) => return Err(Denied::new(error.reason()).with_detail(error.to_string())),
        };
        let uri = with_path(req.uri(), &path)
            .ok_or_else(|| Denied::new(Reason::PathEncoding).with_detail("normalized path is not a valid URI"))?;
        let original = std::mem::replace(req.uri_mut(), uri);
        req.extensions_mut().insert(OriginalUri(original));
        Ok(())
    }
}
