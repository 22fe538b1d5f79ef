//! OpenAPI documents named by URL (NestJS serves its document at
//! `/api-json`), fetched with the gateway's HTTP client when the server
//! starts and on every reload; a failed fetch or a broken document stops the
//! start (the reload is refused). Files are read and compiled with the
//! configuration (`config::openapi`), so `portcullis check` reports them
//! with their position; a URL can only be judged by fetching it.

use std::collections::BTreeMap;
use std::sync::Arc;

use portcullis_policy::openapi::OpenApi;

use crate::config::openapi::{OpenApiDoc, Source};

/// Largest document fetched from a URL.
pub const MAX_DOCUMENT_BYTES: usize = 16 * 1024 * 1024;

/// Why a URL document could not be used at start or reload.
#[derive(Debug, thiserror::Error)]
#[error("[openapi.{name}] source {source_url}: {reason}")]
pub struct FetchError {
    /// The section's name.
    pub name: String,
    /// The URL, without its query.
    pub source_url: String,
    /// What went wrong.
    pub reason: String,
}

/// Fetches and compiles every document whose source is a URL.
///
/// # Errors
/// The first document that cannot be fetched (network error, non-2xx
/// answer, over 16 MiB) or compiled.
pub async fn fetch_remote(docs: &mut BTreeMap<String, OpenApiDoc>) -> Result<(), FetchError> {
    let mut client = None;
    for doc in docs.values_mut() {
        let Source::Url(url) = &doc.source else { continue };
        let error = |reason: String| FetchError { name: doc.name.clone(), source_url: doc.source.to_string(), reason };
        let client = match &client {
            Some(client) => client,
            None => {
                let limits = crate::http_client::HttpClientLimits {
                    max_body: MAX_DOCUMENT_BYTES,
                    ..crate::http_client::HttpClientLimits::default()
                };
                let made = crate::http_client::HttpClient::new(None, limits).map_err(|e| error(e.to_string()))?;
                client.insert(made)
            }
        };
        let (status, _, body) = client.get(url).await.map_err(|e| error(e.to_string()))?;
        if !status.is_success() {
            return Err(error(format!("answered {status}")));
        }
        let api = OpenApi::load(&doc.name, &body, doc.options.clone()).map_err(|e| error(e.to_string()))?;
        tracing::info!(openapi = %doc.name, source = %doc.source, paths = api.path_count(), "OpenAPI document loaded");
        doc.compiled = Some(Arc::new(api));
    }
    Ok(())
}
