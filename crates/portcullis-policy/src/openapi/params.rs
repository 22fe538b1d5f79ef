//! Parameters arrive as strings; their schemas speak of integers, numbers,
//! booleans and arrays. Each value is turned into the JSON its schema's
//! type asks for before validation, so `?limit=10` validates against
//! `{"type":"integer"}` and `?limit=ten` fails it with "expected integer".
//! A value that does not convert stays a string and fails validation.

use serde_json::{Number, Value};

/// What a parameter's schema says its value is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Shape {
    String,
    Integer,
    Number,
    Boolean,
    Array(Box<Shape>),
    /// Objects and schemas without a type: passed as strings.
    Other,
}

/// Follows local `$ref`s (`#/components/...`) from `schema`, at most 32 hops.
pub(super) fn resolve<'d>(doc: &'d Value, mut schema: &'d Value) -> &'d Value {
    for _ in 0..32 {
        match schema.get("$ref").and_then(Value::as_str).and_then(|r| r.strip_prefix('#')) {
            Some(pointer) => match doc.pointer(&super::document::unescape_fragment(pointer)) {
                Some(target) => schema = target,
                None => return schema,
            },
            None => return schema,
        }
    }
    schema
}

/// The shape of `schema` (resolved against `doc`): its `type`, the first
/// non-null one of a type list (OpenAPI 3.1), or that of the first branch of
/// `allOf`/`anyOf`/`oneOf` that has one.
pub(super) fn shape_of(doc: &Value, schema: &Value) -> Shape {
    shape_at(doc, schema, 0)
}

fn shape_at(doc: &Value, schema: &Value, depth: usize) -> Shape {
    if depth > 8 {
        return Shape::Other;
    }
    let schema = resolve(doc, schema);
    let named = match schema.get("type") {
        Some(Value::String(t)) => Some(t.as_str()),
        Some(Value::Array(types)) => types.iter().filter_map(Value::as_str).find(|t| *t != "null"),
        _ => None,
    };
    match named {
        Some("string") => Shape::String,
        Some("integer") => Shape::Integer,
        Some("number") => Shape::Number,
        Some("boolean") => Shape::Boolean,
        Some("array") => {
            Shape::Array(Box::new(schema.get("items").map_or(Shape::Other, |items| shape_at(doc, items, depth + 1))))
        }
        Some(_) => Shape::Other,
        None => ["allOf", "anyOf", "oneOf"]
            .iter()
            .filter_map(|k| schema.get(*k).and_then(Value::as_array))
            .flatten()
            .map(|branch| shape_at(doc, branch, depth + 1))
            .find(|s| *s != Shape::Other)
            .unwrap_or(Shape::Other),
    }
}

/// One string as the JSON value `shape` asks for (a string when it does
/// not convert).
pub(super) fn scalar(shape: &Shape, text: &str) -> Value {
    let converted = match shape {
        Shape::Integer => {
            text.parse::<i64>().map(Number::from).ok().or_else(|| text.parse::<u64>().ok().map(Number::from))
        }
        Shape::Number => text.parse::<f64>().ok().and_then(Number::from_f64).filter(|_| is_json_number(text)),
        Shape::Boolean => {
            return match text {
                "true" => Value::Bool(true),
                "false" => Value::Bool(false),
                _ => Value::String(text.to_owned()),
            };
        }
        Shape::String | Shape::Array(_) | Shape::Other => None,
    };
    converted.map_or_else(|| Value::String(text.to_owned()), Value::Number)
}

/// Rust's float parser also takes `inf`, `NaN` and `+1`; JSON numbers do not.
fn is_json_number(text: &str) -> bool {
    let body = text.strip_prefix('-').unwrap_or(text);
    body.starts_with(|c: char| c.is_ascii_digit()) && body.bytes().all(|b| b.is_ascii_digit() || b".eE+-".contains(&b))
}

/// The values sent for one parameter as the JSON its schema asks for.
/// `values` holds every occurrence (query strings can repeat a name);
/// `split` says whether one occurrence holds a comma-separated list
/// (styles `simple`, and `form` without `explode`).
pub(super) fn coerce(shape: &Shape, values: &[&str], split: bool) -> Value {
    match shape {
        Shape::Array(item) => {
            let parts: Vec<&str> =
                if split { values.iter().flat_map(|v| v.split(',')).collect() } else { values.to_vec() };
            Value::Array(parts.iter().map(|p| scalar(item, p)).collect())
        }
        // A scalar sent twice (`?limit=1&limit=2`) is refused as the array it
        // is: frameworks disagree on which one they would use.
        _ if values.len() > 1 => Value::Array(values.iter().map(|v| scalar(shape, v)).collect()),
        _ => values.first().map_or(Value::Null, |v| scalar(shape, v)),
    }
}
