//! `[openapi.NAME]` and the routes' `openapi`: request validation against
//! the upstream's OpenAPI 3 document (rules in `portcullis_policy::openapi`).
//!
//! Decision rules:
//! - `source` is a file (relative to the configuration file) or an
//!   `http(s)://` URL. A file is read and compiled while the configuration
//!   is built, so `portcullis check` reports a broken document with the
//!   line of its `source`; a URL (NestJS serves its document at
//!   `/api-json`) is fetched by the gateway (`gateway::openapi`) when the
//!   server starts and on every reload, and a failed fetch or a broken document
//!   stops the start (the reload is refused). Plain `http://` is allowed
//!   to loopback hosts only.
//! - JSON documents only: no maintained serde YAML crate is in the tree.
//! - Defaults are the secure choice: `deny_unknown = true`, everything
//!   validated, `max_body` 1 MiB, `max_depth` 32, `max_keys` 1000,
//!   `max_string` 64 KiB.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use portcullis_policy::openapi::{JsonLimits, OpenApi, Options, Parts};
use toml::Spanned;

use super::error::Collector;
use super::raw::{RawConfig, RawOpenApi};
use super::sources::Sources;
use super::values::size;

/// Where a document comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A file, read when the configuration is built.
    File(PathBuf),
    /// A URL, fetched when the server starts or reloads.
    Url(String),
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::File(path) => write!(f, "{}", path.display()),
            Self::Url(url) => f.write_str(url.split('?').next().unwrap_or_default()),
        }
    }
}

/// One `[openapi.NAME]`.
#[derive(Debug, Clone)]
pub struct OpenApiDoc {
    /// Its name (the events' `rule`).
    pub name: String,
    /// Where the document comes from.
    pub source: Source,
    /// How it is enforced.
    pub options: Options,
    /// The compiled document: set at build for files, by
    /// [`crate::gateway::openapi::fetch_remote`] for URLs.
    pub compiled: Option<Arc<OpenApi>>,
}

fn bounded(c: &mut Collector<'_>, value: Option<&Spanned<i64>>, default: usize, max: usize, what: &str) -> usize {
    let Some(value) = value else { return default };
    match usize::try_from(*value.get_ref()) {
        Ok(n) if (1..=max).contains(&n) => n,
        _ => {
            c.error(value.span(), format!("{what} is out of range")).expected(format!("between 1 and {max}"));
            default
        }
    }
}

fn build_one(
    c: &mut Collector<'_>,
    name: &str,
    raw: &Spanned<RawOpenApi>,
    base: &Path,
    fold: bool,
    sources: &Sources<'_>,
) -> Option<OpenApiDoc> {
    let r = raw.get_ref();
    if !portcullis_policy::principal::is_valid_name(name) {
        c.error(raw.span(), format!("invalid openapi name {name:?}")).expected("letters, digits and . _ : / -");
        return None;
    }
    let mut validate = Parts::ALL;
    if let Some(list) = &r.validate {
        validate = Parts::NONE;
        for part in list.get_ref() {
            match part.as_str() {
                "path" => validate.path = true,
                "query" => validate.query = true,
                "headers" => validate.headers = true,
                "body" => validate.body = true,
                other => {
                    c.error(list.span(), format!("unknown validate part {other:?}"))
                        .expected("a list of \"path\", \"query\", \"headers\", \"body\"");
                }
            }
        }
    }
    let defaults = JsonLimits::default();
    let limits = JsonLimits {
        max_depth: bounded(c, r.max_depth.as_ref(), defaults.max_depth, 128, "max_depth"),
        max_keys: bounded(c, r.max_keys.as_ref(), defaults.max_keys, 1_000_000, "max_keys"),
        max_string: usize::try_from(size(
            c,
            r.max_string.as_ref(),
            defaults.max_string as u64,
            1,
            64 << 20,
            "max_string",
        ))
        .unwrap_or(usize::MAX),
    };
    let base_path = match &r.base_path {
        None => None,
        Some(p)
            if p.get_ref().is_empty() || (p.get_ref().starts_with('/') && !p.get_ref().contains(['?', '#', '{'])) =>
        {
            Some(p.get_ref().trim_end_matches('/').to_owned())
        }
        Some(p) => {
            c.error(p.span(), format!("invalid base_path {:?}", p.get_ref()))
                .expected("a path such as \"/api\", or \"\" for none");
            None
        }
    };
    let options = Options {
        deny_unknown: r.deny_unknown.unwrap_or(true),
        validate,
        limits,
        max_body: size(c, r.max_body.as_ref(), Options::default().max_body, 1, 1 << 30, "max_body"),
        base_path,
        case_insensitive: fold,
    };
    let text = r.source.get_ref().trim();
    let source = if text.starts_with("http://") || text.starts_with("https://") {
        if text.parse::<http::Uri>().is_err() {
            c.error(r.source.span(), format!("invalid OpenAPI source URL {text:?}"))
                .expected("\"http://127.0.0.1:3000/api-json\" or a file path");
            return None;
        }
        Source::Url(text.to_owned())
    } else if text.is_empty() || text.contains("://") {
        c.error(r.source.span(), format!("invalid OpenAPI source {text:?}"))
            .expected("a JSON file path (relative to this file) or an http(s):// URL");
        return None;
    } else {
        Source::File(base.join(text))
    };
    let compiled = match &source {
        Source::Url(_) => None,
        Source::File(path) => {
            let bytes = match sources.read(path) {
                Ok(bytes) => bytes,
                Err(e) => {
                    c.error(r.source.span(), format!("cannot read OpenAPI document {}: {e}", path.display())).help(
                        "point source at the upstream's JSON document, or at its URL (NestJS: http://HOST/api-json)",
                    );
                    return None;
                }
            };
            match OpenApi::load(name, &bytes, options.clone()) {
                Ok(api) => Some(Arc::new(api)),
                Err(e) => {
                    c.error(r.source.span(), format!("OpenAPI document {}: {e}", path.display()));
                    return None;
                }
            }
        }
    };
    Some(OpenApiDoc { name: name.to_owned(), source, options, compiled })
}

pub(super) fn build_openapi(
    c: &mut Collector<'_>,
    raw: &RawConfig,
    base: &Path,
    fold: bool,
    sources: &Sources<'_>,
) -> BTreeMap<String, OpenApiDoc> {
    raw.openapi
        .iter()
        .filter_map(|(name, d)| build_one(c, name, d, base, fold, sources).map(|doc| (name.clone(), doc)))
        .collect()
}

/// A route's `openapi`, by name (an `[openapi.NAME]` in the file that has
/// errors of its own is not reported again).
pub(super) fn route_openapi(
    c: &mut Collector<'_>,
    name: Option<&Spanned<String>>,
    docs: &BTreeMap<String, OpenApiDoc>,
    raw: &RawConfig,
) -> Option<String> {
    let name = name?;
    if docs.contains_key(name.get_ref()) {
        return Some(name.get_ref().clone());
    }
    if raw.openapi.contains_key(name.get_ref()) {
        return None;
    }
    let known = raw.openapi.keys().cloned().collect::<Vec<_>>().join(", ");
    c.error(name.span(), format!("unknown openapi document {:?}", name.get_ref())).expected(if known.is_empty() {
        "an [openapi.NAME] section".into()
    } else {
        format!("one of: {known}")
    });
    None
}
