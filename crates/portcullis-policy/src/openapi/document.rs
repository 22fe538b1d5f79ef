//! Loading: JSON bytes → a compiled [`OpenApi`]. Every problem is a load
//! error naming where in the document it is (a JSON pointer), so a broken
//! document fails at start, never per request.

use http::{HeaderValue, Method};
use jsonschema::{Draft, PatternOptions, Registry};
use serde_json::Value;

use super::params::{self, Shape};
use super::template::Template;
use super::{In, Media, OpenApi, Operation, Options, Param, PathItem, RequestBody};

/// The URI the document is registered under, so schemas refer into it.
const DOC_URI: &str = "urn:portcullis:openapi";

/// Why a document cannot be used.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LoadError {
    /// Not parsable JSON.
    #[error("not a JSON document ({0}); YAML is not supported: serve or save the document as JSON")]
    NotJson(String),
    /// Not OpenAPI 3.0 or 3.1.
    #[error("{0}")]
    Version(String),
    /// A part of the document is not what OpenAPI says it is.
    #[error("at {pointer}: {reason}")]
    Invalid {
        /// JSON pointer into the document.
        pointer: String,
        /// What is wrong.
        reason: String,
    },
}

fn invalid(pointer: &str, reason: impl Into<String>) -> LoadError {
    LoadError::Invalid {
        pointer: if pointer.is_empty() { "/".into() } else { pointer.to_owned() },
        reason: reason.into(),
    }
}

/// A JSON pointer segment (`/` → `~1`, `~` → `~0`).
fn escape(segment: &str) -> String {
    segment.replace('~', "~0").replace('/', "~1")
}

/// A JSON pointer as a URI fragment: bytes outside the unreserved set and
/// `/` are percent-encoded (`{id}` → `%7Bid%7D`).
fn fragment(pointer: &str) -> String {
    let mut out = String::with_capacity(pointer.len());
    for b in pointer.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A URI fragment back to a JSON pointer (percent-decoded).
pub(super) fn unescape_fragment(fragment: &str) -> String {
    super::template::percent_decode(fragment).into_owned()
}

/// OpenAPI 3.0's `nullable: true` as JSON Schema: `null` joins the type
/// (and the enum), or, without a single type, the schema becomes
/// `anyOf: [{type: null}, schema]`.
fn nullable_to_type(value: &mut Value) {
    match value {
        Value::Array(items) => items.iter_mut().for_each(nullable_to_type),
        Value::Object(map) => {
            map.values_mut().for_each(nullable_to_type);
            match map.get("nullable") {
                Some(Value::Bool(true)) => {}
                Some(Value::Bool(false)) => {
                    map.remove("nullable");
                    return;
                }
                _ => return,
            }
            map.remove("nullable");
            if let Some(Value::String(t)) = map.get("type") {
                let both = Value::Array(vec![Value::String(t.clone()), Value::String("null".into())]);
                map.insert("type".into(), both);
                if let Some(Value::Array(options)) = map.get_mut("enum")
                    && !options.contains(&Value::Null)
                {
                    options.push(Value::Null);
                }
            } else {
                let rest = std::mem::take(map);
                let null = serde_json::json!({ "type": "null" });
                map.insert("anyOf".into(), Value::Array(vec![null, Value::Object(rest)]));
            }
        }
        _ => {}
    }
}

/// The path of a `servers` URL (`https://api.example.com/v1` → `/v1`);
/// empty for none, `/`, or a URL with `{variables}`.
fn server_path(url: &str) -> String {
    let path = match url.split_once("://") {
        Some((_, rest)) => rest.find('/').map_or("", |i| &rest[i..]),
        None => url,
    };
    if path.contains('{') || !path.starts_with('/') {
        return String::new();
    }
    path.trim_end_matches('/').to_owned()
}

const METHODS: [(&str, Method); 8] = [
    ("get", Method::GET),
    ("put", Method::PUT),
    ("post", Method::POST),
    ("delete", Method::DELETE),
    ("options", Method::OPTIONS),
    ("head", Method::HEAD),
    ("patch", Method::PATCH),
    ("trace", Method::TRACE),
];

struct Compiler<'d> {
    doc: &'d Value,
    draft: Draft,
    registry: Registry<'d>,
}

impl Compiler<'_> {
    /// Follows a local `$ref` on an object (a parameter, a request body).
    fn deref(&self, pointer: String, value: &Value) -> Result<(String, Value), LoadError> {
        let mut pointer = pointer;
        let mut value = value.clone();
        for _ in 0..32 {
            let Some(reference) = value.get("$ref").and_then(Value::as_str) else { return Ok((pointer, value)) };
            let Some(target) = reference.strip_prefix('#') else {
                return Err(invalid(&pointer, format!("external reference {reference:?} is not supported")));
            };
            let target = unescape_fragment(target);
            let Some(found) = self.doc.pointer(&target) else {
                return Err(invalid(&pointer, format!("reference {reference:?} points at nothing")));
            };
            value = found.clone();
            pointer = target;
        }
        Err(invalid(&pointer, "reference chain longer than 32"))
    }

    fn validator(&self, pointer: &str) -> Result<jsonschema::Validator, LoadError> {
        let schema = serde_json::json!({ "$ref": format!("{DOC_URI}#{}", fragment(pointer)) });
        jsonschema::options()
            .with_draft(self.draft)
            .with_registry(&self.registry)
            .should_validate_formats(true)
            .with_pattern_options(PatternOptions::regex())
            .build(&schema)
            .map_err(|e| invalid(pointer, format!("schema does not compile: {e}")))
    }

    /// A parameter; `None` for a cookie parameter (not validated).
    fn param(&self, pointer: String, raw: &Value) -> Result<Option<Param>, LoadError> {
        let (pointer, param) = self.deref(pointer, raw)?;
        let name =
            param.get("name").and_then(Value::as_str).ok_or_else(|| invalid(&pointer, "parameter without a name"))?;
        let location = match param.get("in").and_then(Value::as_str) {
            Some("path") => In::Path,
            Some("query") => In::Query,
            Some("header") => In::Header,
            Some("cookie") => return Ok(None),
            other => return Err(invalid(&pointer, format!("parameter `in` is {other:?}"))),
        };
        let style = param.get("style").and_then(Value::as_str);
        let explode = param.get("explode").and_then(Value::as_bool).unwrap_or(style.is_none_or(|s| s == "form"));
        // Parameters described by `content` instead of `schema` are not validated.
        let (shape, validator) = match param.get("schema") {
            Some(schema) => (params::shape_of(self.doc, schema), Some(self.validator(&format!("{pointer}/schema"))?)),
            None => (Shape::Other, None),
        };
        Ok(Some(Param {
            name: name.to_owned(),
            location,
            required: location == In::Path || param.get("required").and_then(Value::as_bool).unwrap_or(false),
            // `form` with `explode` repeats the name; every other style lists with commas.
            split: location != In::Query || !explode,
            shape,
            validator,
        }))
    }

    fn body(&self, pointer: String, raw: &Value) -> Result<RequestBody, LoadError> {
        let (pointer, body) = self.deref(pointer, raw)?;
        let mut media = Vec::new();
        if let Some(content) = body.get("content").and_then(Value::as_object) {
            for (range, entry) in content {
                let range = range.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
                let json = range == "application/json" || range.ends_with("+json");
                let here = format!("{pointer}/content/{}", escape(&range));
                let validator = if json && entry.get("schema").is_some() {
                    Some(self.validator(&format!("{here}/schema"))?)
                } else {
                    None
                };
                media.push(Media { range, json, validator });
            }
        }
        Ok(RequestBody { required: body.get("required").and_then(Value::as_bool).unwrap_or(false), media })
    }

    fn path_item(&self, key: &str, raw: &Value, fold: bool) -> Result<PathItem, LoadError> {
        let pointer = format!("/paths/{}", escape(key));
        let template = Template::parse(key, fold).map_err(|e| invalid(&pointer, e))?;
        let (pointer, item) = self.deref(pointer, raw)?;
        let shared: Vec<(String, Value)> = item
            .get("parameters")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
            .map(|(i, p)| (format!("{pointer}/parameters/{i}"), p.clone()))
            .collect();
        let mut operations = Vec::new();
        for (key, method) in &METHODS {
            let Some(op) = item.get(*key) else { continue };
            let here = format!("{pointer}/{key}");
            let mut params: Vec<Param> = Vec::new();
            let own = op.get("parameters").and_then(Value::as_array).into_iter().flatten().enumerate();
            for (i, raw) in own {
                params.extend(self.param(format!("{here}/parameters/{i}"), raw)?);
            }
            // Path-level parameters apply unless the operation redefines them.
            for (p, raw) in &shared {
                if let Some(param) = self.param(p.clone(), raw)?
                    && !params.iter().any(|q| q.name == param.name && q.location == param.location)
                {
                    params.push(param);
                }
            }
            let body = match op.get("requestBody") {
                Some(raw) => Some(self.body(format!("{here}/requestBody"), raw)?),
                None => None,
            };
            operations.push((method.clone(), Operation { params, body }));
        }
        let allow = operations.iter().map(|(m, _)| m.as_str()).collect::<Vec<_>>().join(", ");
        let allow = HeaderValue::from_str(&allow).map_err(|_| invalid(&pointer, "bad method list"))?;
        Ok(PathItem { template, operations, allow })
    }
}

pub(super) fn load(name: &str, bytes: &[u8], options: Options) -> Result<OpenApi, LoadError> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let mut doc: Value = serde_json::from_slice(bytes).map_err(|e| LoadError::NotJson(e.to_string()))?;
    if !doc.is_object() {
        return Err(LoadError::NotJson("the top level is not an object".into()));
    }
    let draft = match (doc.get("openapi").and_then(Value::as_str), doc.get("swagger")) {
        (Some(v), _) if v.starts_with("3.0.") || v == "3.0" => Draft::Draft4,
        (Some(v), _) if v.starts_with("3.1.") || v == "3.1" => Draft::Draft202012,
        (Some(v), _) => return Err(LoadError::Version(format!("OpenAPI {v} is not supported; use 3.0 or 3.1"))),
        (None, Some(_)) => {
            return Err(LoadError::Version("Swagger 2.0 is not supported; convert the document to OpenAPI 3".into()));
        }
        (None, None) => return Err(LoadError::Version("no `openapi` version field: not an OpenAPI document".into())),
    };
    if draft == Draft::Draft4 {
        nullable_to_type(&mut doc);
    }
    let base_path = match &options.base_path {
        Some(base) => base.trim_end_matches('/').to_owned(),
        None => doc
            .get("servers")
            .and_then(Value::as_array)
            .and_then(|s| s.first())
            .and_then(|s| s.get("url"))
            .and_then(Value::as_str)
            .map(server_path)
            .unwrap_or_default(),
    };
    let registry = Registry::new()
        .draft(draft)
        .add(DOC_URI, &doc)
        .and_then(jsonschema::RegistryBuilder::prepare)
        .map_err(|e| invalid("", format!("references do not resolve: {e}")))?;
    let compiler = Compiler { doc: &doc, draft, registry };
    let mut paths = Vec::new();
    if let Some(map) = doc.get("paths") {
        let Some(map) = map.as_object() else { return Err(invalid("/paths", "not an object")) };
        for (key, item) in map {
            paths.push(compiler.path_item(key, item, options.case_insensitive)?);
        }
    }
    paths.sort_by(|a: &PathItem, b: &PathItem| b.template.specificity().cmp(a.template.specificity()));
    Ok(OpenApi { name: name.to_owned(), options, base_path, paths })
}
