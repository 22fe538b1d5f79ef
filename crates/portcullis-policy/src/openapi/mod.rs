//! Positive request validation against the upstream's OpenAPI 3 document
//! (3.0 and 3.1): a request is checked against what the API says it
//! accepts, so malformed and unexpected input (wrong types, unknown fields,
//! undeclared endpoints, oversized JSON) never reaches the upstream.
//!
//! Decision rules, in order:
//! 1. The path (the normalized one the gateway routes on, less the
//!    document's base path) is matched against the document's path
//!    templates, literal segments before templated ones. No match:
//!    `openapi.unknown_path` (404) when `deny_unknown`, else the request
//!    passes unvalidated. A match without the request's method:
//!    `openapi.method` (405, `Allow` lists the document's methods) when
//!    `deny_unknown`, else it passes. `HEAD` uses `GET` when the document
//!    has no `HEAD`.
//! 2. Path, query and header parameters (each if enabled) are converted
//!    from strings to their schema's type (`integer`, `number`, `boolean`,
//!    arrays: `form` style with `explode` by default for queries, `simple`
//!    for paths and headers) and validated; a missing required parameter,
//!    a scalar sent twice and `name[key]` forms of a declared query
//!    parameter are refused. Undeclared query parameters and headers pass.
//!    `Accept`, `Content-Type` and `Authorization` parameters are ignored,
//!    as OpenAPI says.
//! 3. The body (if enabled, and the operation declares a request body): a
//!    missing required body is refused; a `Content-Type` the operation does
//!    not list is `openapi.content_type` (415). A JSON body (`application/json`,
//!    `*+json`) is checked against the JSON limits before parsing
//!    (`openapi.json_limits`), parsed (`openapi.malformed_json`) and
//!    validated against its schema. Other media types pass unvalidated.
//! 4. A failure is `openapi.invalid` (400); the answer names the field
//!    (`path.id`, `query.limit`, `header.x-tenant`, `body.items[0].sku`)
//!    and says why in a few words built from the schema, never from the
//!    client's value. The event's detail adds the schema keyword.
//!
//! OpenAPI 3.0 schemas are JSON Schema draft 4 with `nullable`, which is
//! turned into a `null` type at load; 3.1 schemas are draft 2020-12. Only
//! local references (`#/components/...`) are resolved; anything else is a
//! load error. Patterns run on a linear-time regex engine (no ReDoS from a
//! document's `pattern`).
//!
//! Deployment caveat: the document describes what the upstream accepts only
//! if it is the upstream's own, current document; a stale one refuses new
//! endpoints (with `deny_unknown`) or lets removed fields through.
//! `readOnly` properties are not exempted from `required` in requests.

mod document;
mod json;
mod params;
mod template;
#[cfg(test)]
mod tests;

use std::borrow::Cow;

use http::{HeaderMap, HeaderValue, Method};
use serde_json::Value;

use crate::deny::{ClientDetail, Denied, Reason};

pub use document::LoadError;
pub use json::JsonLimits;

use params::Shape;
use template::Template;

/// Which parts of a request are validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(clippy::struct_excessive_bools)]
pub struct Parts {
    /// Path parameters.
    pub path: bool,
    /// Query parameters.
    pub query: bool,
    /// Header parameters.
    pub headers: bool,
    /// JSON bodies.
    pub body: bool,
}

impl Parts {
    /// Everything (the default).
    pub const ALL: Self = Self { path: true, query: true, headers: true, body: true };
    /// Nothing (only the path and method are checked).
    pub const NONE: Self = Self { path: false, query: false, headers: false, body: false };
}

/// How one document is enforced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// Refuse paths and methods the document does not have.
    pub deny_unknown: bool,
    /// What is validated.
    pub validate: Parts,
    /// JSON body limits.
    pub limits: JsonLimits,
    /// Largest body read for validation, in bytes.
    pub max_body: u64,
    /// The path prefix the document's paths are relative to (`/api`).
    /// `None`: the path of the document's first `servers` URL, if any.
    pub base_path: Option<String>,
    /// Compare literal path segments ignoring ASCII case (the gateway's
    /// `[paths] case = "insensitive"`).
    pub case_insensitive: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            deny_unknown: true,
            validate: Parts::ALL,
            limits: JsonLimits::default(),
            max_body: 1024 * 1024,
            base_path: None,
            case_insensitive: true,
        }
    }
}

/// The request, as far as validation reads it.
#[derive(Debug, Clone, Copy)]
pub struct RequestParts<'a> {
    /// The method.
    pub method: &'a Method,
    /// The normalized path, without the query.
    pub path: &'a str,
    /// The raw query string, without `?`.
    pub query: Option<&'a str>,
    /// The headers.
    pub headers: &'a HeaderMap,
    /// Whether the request has a body (not known to be empty).
    pub has_body: bool,
}

/// A compiled document: path templates and a validator per schema.
pub struct OpenApi {
    name: String,
    options: Options,
    base_path: String,
    paths: Vec<PathItem>,
}

impl std::fmt::Debug for OpenApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenApi")
            .field("name", &self.name)
            .field("base_path", &self.base_path)
            .field("paths", &self.paths.len())
            .finish_non_exhaustive()
    }
}

struct PathItem {
    template: Template,
    operations: Vec<(Method, Operation)>,
    allow: HeaderValue,
}

struct Operation {
    params: Vec<Param>,
    body: Option<RequestBody>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum In {
    Path,
    Query,
    Header,
}

struct Param {
    name: String,
    location: In,
    required: bool,
    shape: Shape,
    /// One occurrence holds a comma-separated list.
    split: bool,
    validator: Option<jsonschema::Validator>,
}

struct RequestBody {
    required: bool,
    media: Vec<Media>,
}

struct Media {
    /// `application/json`, `application/*`, `*/*`: lower case, no parameters.
    range: String,
    json: bool,
    validator: Option<jsonschema::Validator>,
}

/// A request matched to an operation of the document.
pub struct Matched<'a> {
    api: &'a OpenApi,
    template: &'a str,
    operation: &'a Operation,
    path_params: Vec<(&'a str, String)>,
}

impl std::fmt::Debug for Matched<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Matched").field("api", &self.api.name).field("path_params", &self.path_params).finish()
    }
}

impl OpenApi {
    /// Compiles a document (JSON bytes) named `name` (the config section's
    /// name, used as the events' `rule`).
    ///
    /// # Errors
    /// [`LoadError`]: not JSON, not OpenAPI 3.0/3.1, a bad path template, an
    /// unresolvable reference or a schema that does not compile.
    pub fn load(name: &str, bytes: &[u8], options: Options) -> Result<Self, LoadError> {
        document::load(name, bytes, options)
    }

    /// The name given at load.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The options it enforces.
    #[must_use]
    pub fn options(&self) -> &Options {
        &self.options
    }

    /// The base path in use (empty for none).
    #[must_use]
    pub fn base_path(&self) -> &str {
        &self.base_path
    }

    /// How many path templates the document has.
    #[must_use]
    pub fn path_count(&self) -> usize {
        self.paths.len()
    }

    /// Validates a whole request: [`OpenApi::find`], then [`Matched::check`].
    ///
    /// # Errors
    /// The refusal (see the module docs).
    pub fn validate(&self, request: &RequestParts<'_>, body: Option<&[u8]>) -> Result<(), Denied> {
        match self.find(request.method, request.path)? {
            Some(matched) => matched.check(request, body),
            None => Ok(()),
        }
    }

    /// The operation for `method` and `path` (rule 1). `Ok(None)`: not in
    /// the document and `deny_unknown` is off.
    ///
    /// # Errors
    /// `openapi.unknown_path` or `openapi.method` when `deny_unknown` is on.
    pub fn find<'a>(&'a self, method: &Method, path: &str) -> Result<Option<Matched<'a>>, Denied> {
        let Some(rest) = self.strip_base(path) else { return self.unknown(path) };
        let folded: Cow<'_, str> =
            if self.options.case_insensitive { Cow::Owned(crate::normalize::fold(rest)) } else { Cow::Borrowed(rest) };
        for item in &self.paths {
            let Some(path_params) = item.template.matches(rest, &folded) else { continue };
            let find = |m: &Method| item.operations.iter().find(|(om, _)| om == m).map(|(_, op)| op);
            let operation = find(method).or_else(|| if method == Method::HEAD { find(&Method::GET) } else { None });
            return match operation {
                Some(operation) => {
                    Ok(Some(Matched { api: self, template: &item.template.raw, operation, path_params }))
                }
                None if self.options.deny_unknown => Err(Denied::new(Reason::OpenapiMethod)
                    .with_rule(self.name.clone())
                    .with_detail(format!("{method} is not an operation of {}", item.template.raw))
                    .with_header(http::header::ALLOW, item.allow.clone())),
                None => Ok(None),
            };
        }
        self.unknown(path)
    }

    fn unknown<T>(&self, path: &str) -> Result<Option<T>, Denied> {
        if !self.options.deny_unknown {
            return Ok(None);
        }
        let shown: String = path.chars().take(200).collect();
        Err(Denied::new(Reason::OpenapiUnknownPath)
            .with_rule(self.name.clone())
            .with_detail(format!("{shown} matches no path of the document")))
    }

    /// `path` less the base path, if it is under it.
    fn strip_base<'p>(&self, path: &'p str) -> Option<&'p str> {
        if self.base_path.is_empty() {
            return Some(path);
        }
        let head = path.get(..self.base_path.len())?;
        let same = if self.options.case_insensitive {
            head.eq_ignore_ascii_case(&self.base_path)
        } else {
            head == self.base_path
        };
        let rest = &path[self.base_path.len()..];
        (same && (rest.is_empty() || rest.starts_with('/'))).then_some(rest)
    }

    fn invalid(&self, field: &str, message: &str, keyword: &str) -> Denied {
        self.refuse(Reason::OpenapiInvalid, field, message, keyword)
    }

    fn refuse(&self, reason: Reason, field: &str, message: &str, keyword: &str) -> Denied {
        let client = ClientDetail::new(field, message);
        Denied::new(reason)
            .with_rule(self.name.clone())
            .with_detail(format!("field {} ({keyword}): {}", client.field, client.message))
            .with_client(field, message)
    }
}

/// Header parameters OpenAPI says to ignore.
const IGNORED_HEADERS: [&str; 3] = ["accept", "content-type", "authorization"];

impl Matched<'_> {
    /// Whether [`Matched::check`] needs the body: JSON bodies are validated,
    /// the request has one, and its `Content-Type` is a JSON type the
    /// operation has a schema for.
    #[must_use]
    pub fn needs_body(&self, request: &RequestParts<'_>) -> bool {
        self.api.options.validate.body
            && request.has_body
            && self.media(request.headers).ok().flatten().is_some_and(|m| m.json && m.validator.is_some())
    }

    /// The document's path template that matched (`/orders/{id}`).
    #[must_use]
    pub fn template(&self) -> &str {
        self.template
    }

    /// The path parameters, as matched and percent-decoded.
    #[must_use]
    pub fn path_params(&self) -> &[(&str, String)] {
        &self.path_params
    }

    /// Validates parameters and body (rules 2 and 3). `body` is the whole
    /// body when [`Matched::needs_body`] said so (`None` reads as empty).
    ///
    /// # Errors
    /// `openapi.invalid`, `openapi.content_type`, `openapi.json_limits` or
    /// `openapi.malformed_json`.
    pub fn check(&self, request: &RequestParts<'_>, body: Option<&[u8]>) -> Result<(), Denied> {
        let validate = self.api.options.validate;
        let mut query: Option<Vec<(Cow<'_, str>, Cow<'_, str>)>> = None;
        for param in &self.operation.params {
            match param.location {
                In::Path if validate.path => {
                    let value = self.path_params.iter().find(|(n, _)| *n == param.name).map(|(_, v)| v.as_str());
                    self.param(param, "path", value.as_slice())?;
                }
                In::Query if validate.query => {
                    let pairs = query.get_or_insert_with(|| {
                        form_urlencoded::parse(request.query.unwrap_or("").as_bytes()).collect()
                    });
                    let nested = pairs
                        .iter()
                        .any(|(k, _)| k.strip_prefix(param.name.as_str()).is_some_and(|rest| rest.starts_with('[')));
                    if nested && !matches!(param.shape, Shape::Other) {
                        return Err(self.api.invalid(
                            &format!("query.{}", param.name),
                            "unexpected nested form",
                            "type",
                        ));
                    }
                    let values: Vec<&str> =
                        pairs.iter().filter(|(k, _)| *k == param.name).map(|(_, v)| v.as_ref()).collect();
                    self.param(param, "query", &values)?;
                }
                In::Header if validate.headers => {
                    let lower = param.name.to_ascii_lowercase();
                    if IGNORED_HEADERS.contains(&lower.as_str()) {
                        continue;
                    }
                    let values: Vec<&str> = request
                        .headers
                        .get_all(lower.as_str())
                        .iter()
                        .map(|v| v.to_str().unwrap_or("\u{fffd}"))
                        .collect();
                    let joined = values.join(",");
                    let values: Vec<&str> = if values.is_empty() { Vec::new() } else { vec![joined.as_str()] };
                    self.param(param, "header", &values)?;
                }
                _ => {}
            }
        }
        if validate.body {
            self.check_body(request, body)?;
        }
        Ok(())
    }

    fn param(&self, param: &Param, prefix: &str, values: &[&str]) -> Result<(), Denied> {
        let field = if param.location == In::Header {
            format!("{prefix}.{}", param.name.to_ascii_lowercase())
        } else {
            format!("{prefix}.{}", param.name)
        };
        if values.is_empty() {
            return if param.required { Err(self.api.invalid(&field, "is required", "required")) } else { Ok(()) };
        }
        let Some(validator) = &param.validator else { return Ok(()) };
        let value = params::coerce(&param.shape, values, param.split);
        self.schema(validator, &value, &field)
    }

    /// The operation's media entry for the request's `Content-Type`:
    /// `Ok(None)` when the operation declares no body.
    fn media(&self, headers: &HeaderMap) -> Result<Option<&Media>, &'static str> {
        let Some(body) = &self.operation.body else { return Ok(None) };
        let Some(content_type) = headers.get(http::header::CONTENT_TYPE) else { return Err("is missing") };
        let essence = content_type.to_str().unwrap_or("").split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        let (kind, _) = essence.split_once('/').unwrap_or((essence.as_str(), ""));
        let found = body.media.iter().find(|m| m.range == essence).or_else(|| {
            body.media.iter().find(|m| m.range.strip_suffix("/*").is_some_and(|k| k == kind) || m.range == "*/*")
        });
        found.map(Some).ok_or("is not a type the operation accepts")
    }

    fn check_body(&self, request: &RequestParts<'_>, body: Option<&[u8]>) -> Result<(), Denied> {
        let Some(declared) = &self.operation.body else { return Ok(()) };
        if !request.has_body {
            return if declared.required { Err(self.api.invalid("body", "is required", "required")) } else { Ok(()) };
        }
        let media = match self.media(request.headers) {
            Ok(Some(media)) => media,
            Ok(None) => return Ok(()),
            Err(why) => {
                return Err(self.api.refuse(Reason::OpenapiContentType, "header.content-type", why, "content"));
            }
        };
        let (true, Some(validator)) = (media.json, &media.validator) else { return Ok(()) };
        // body-parser skips a UTF-8 byte order mark; the upstream reads the
        // document after it, so that is what is validated.
        let bytes = body.unwrap_or_default();
        let bytes = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes);
        let limits = &self.api.options.limits;
        if let Err(broken) = limits.scan(bytes) {
            return Err(self.api.refuse(Reason::OpenapiJsonLimits, "body", &limits.message(broken), "limits"));
        }
        let value: Value = serde_json::from_slice(bytes).map_err(|e| {
            let message = format!("not valid JSON (line {}, column {})", e.line(), e.column());
            self.api.refuse(Reason::OpenapiMalformedJson, "body", &message, "json")
        })?;
        self.schema(validator, &value, "body")
    }

    fn schema(&self, validator: &jsonschema::Validator, value: &Value, field: &str) -> Result<(), Denied> {
        let Err(error) = validator.validate(value) else { return Ok(()) };
        let error = narrowed(&error);
        let (field, message) = describe(field, error.instance_path().as_str(), error.kind());
        Err(self.api.invalid(&field, &message, error.kind().keyword()))
    }
}

/// The error to report for an `anyOf`/`oneOf` failure: when all branches
/// but one fail only on their type at the same place (`nullable` becomes
/// `anyOf: [{type: null}, …]`), the remaining branch's first error says
/// more than "matches none".
fn narrowed<'e>(error: &'e jsonschema::ValidationError<'e>) -> &'e jsonschema::ValidationError<'e> {
    use jsonschema::error::ValidationErrorKind as K;
    let mut current = error;
    for _ in 0..8 {
        let (K::AnyOf { context } | K::OneOfNotValid { context }) = current.kind() else { break };
        let here = current.instance_path();
        let mut left = context.iter().filter(|branch| {
            !(branch.len() == 1 && matches!(branch[0].kind(), K::Type { .. }) && branch[0].instance_path() == here)
        });
        match (left.next().and_then(|b| b.first()), left.next()) {
            (Some(only), None) => current = only,
            _ => break,
        }
    }
    current
}

/// The field (`body` + the JSON pointer as `.key` / `[i]`) and a short
/// message for a schema failure, from the schema's terms only.
fn describe(prefix: &str, pointer: &str, kind: &jsonschema::error::ValidationErrorKind) -> (String, String) {
    use jsonschema::error::{TypeKind, ValidationErrorKind as K};
    let mut field = prefix.to_owned();
    let mut push = |segment: &str| {
        if !segment.is_empty() && segment.bytes().all(|b| b.is_ascii_digit()) {
            field.push('[');
            field.push_str(segment);
            field.push(']');
        } else {
            field.push('.');
            field.push_str(segment);
        }
    };
    for segment in pointer.split('/').skip(1) {
        push(&segment.replace("~1", "/").replace("~0", "~"));
    }
    let message = match kind {
        K::Type { kind } => {
            let names: Vec<&str> = match kind {
                TypeKind::Single(t) => vec![t.as_str()],
                TypeKind::Multiple(set) => set.iter().map(jsonschema::JsonType::as_str).collect(),
            };
            format!("expected {}", names.join(" or "))
        }
        K::Required { property } => {
            push(property.as_str().unwrap_or("?"));
            "is required".to_owned()
        }
        K::AdditionalProperties { unexpected } | K::UnevaluatedProperties { unexpected } => {
            push(unexpected.first().map_or("?", String::as_str));
            "is not allowed".to_owned()
        }
        K::Enum { .. } => "is not one of the allowed values".to_owned(),
        K::Constant { .. } => "is not the required value".to_owned(),
        K::Minimum { limit } => format!("must be at least {limit}"),
        K::Maximum { limit } => format!("must be at most {limit}"),
        K::ExclusiveMinimum { limit } => format!("must be greater than {limit}"),
        K::ExclusiveMaximum { limit } => format!("must be less than {limit}"),
        K::MinLength { limit } => format!("must be at least {limit} characters long"),
        K::MaxLength { limit } => format!("must be at most {limit} characters long"),
        K::MinItems { limit } => format!("must have at least {limit} items"),
        K::MaxItems { limit } => format!("must have at most {limit} items"),
        K::MinProperties { limit } => format!("must have at least {limit} properties"),
        K::MaxProperties { limit } => format!("must have at most {limit} properties"),
        K::AdditionalItems { limit } => format!("must have at most {limit} items"),
        K::UniqueItems => "must not contain duplicates".to_owned(),
        K::MultipleOf { multiple_of } => format!("must be a multiple of {multiple_of}"),
        K::Pattern { .. } | K::BacktrackLimitExceeded { .. } | K::RegexEngineFailure { .. } => {
            "does not match the required pattern".to_owned()
        }
        K::Format { format } => format!("is not a valid {format}"),
        K::AnyOf { .. } | K::OneOfNotValid { .. } => "matches none of the allowed schemas".to_owned(),
        K::OneOfMultipleValid { .. } => "matches more than one of the allowed schemas".to_owned(),
        K::Not { .. } | K::FalseSchema => "is not allowed".to_owned(),
        _ => "is invalid".to_owned(),
    };
    (field, message)
}
