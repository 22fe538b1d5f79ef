#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::type_complexity)]

use http::{HeaderMap, Method};
use serde_json::{Value, json};

use super::params::{Shape, coerce, scalar};
use super::{JsonLimits, LoadError, OpenApi, Options, Parts, RequestParts};
use crate::deny::Reason;

fn document() -> Value {
    json!({
        "openapi": "3.0.3",
        "info": {"title": "orders", "version": "1"},
        "servers": [{"url": "https://api.example.com/api/"}],
        "paths": {
            "/orders": {
                "get": {"parameters": [
                    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 100}},
                    {"name": "status", "in": "query", "schema": {"type": "array", "items": {"type": "string", "enum": ["open", "closed"]}}},
                    {"name": "X-Tenant", "in": "header", "required": true, "schema": {"type": "string", "pattern": "^[a-z]+$"}},
                    {"name": "session", "in": "cookie", "required": true, "schema": {"type": "string"}}
                ]},
                "post": {"requestBody": {"required": true, "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/CreateOrder"}},
                    "text/plain": {}
                }}}
            },
            "/orders/{id}": {"parameters": [{"$ref": "#/components/parameters/OrderId"}], "get": {}, "delete": {}},
            "/orders/mine": {"get": {}},
            "/reports/{name}.csv": {"get": {"parameters": [
                {"name": "name", "in": "path", "required": true, "schema": {"type": "string", "maxLength": 8}}
            ]}},
            "/flags": {"get": {"parameters": [
                {"name": "on", "in": "query", "required": true, "schema": {"type": "boolean"}},
                {"name": "ids", "in": "query", "style": "form", "explode": false, "schema": {"type": "array", "items": {"type": "integer"}}},
                {"name": "ratio", "in": "query", "schema": {"$ref": "#/components/schemas/Ratio"}}
            ]}}
        },
        "components": {
            "parameters": {"OrderId": {"name": "id", "in": "path", "required": true, "schema": {"type": "integer", "minimum": 1}}},
            "schemas": {
                "Ratio": {"type": "number", "exclusiveMinimum": true, "minimum": 0},
                "CreateOrder": {
                    "type": "object", "additionalProperties": false, "required": ["sku", "quantity"],
                    "properties": {
                        "sku": {"type": "string", "minLength": 3},
                        "quantity": {"type": "integer", "minimum": 1},
                        "note": {"type": "string", "nullable": true},
                        "kind": {"type": "string", "enum": ["a", "b"], "nullable": true},
                        "address": {"$ref": "#/components/schemas/Address"},
                        "billing": {"nullable": true, "allOf": [{"$ref": "#/components/schemas/Item"}]},
                        "items": {"type": "array", "items": {"$ref": "#/components/schemas/Item"}}
                    }
                },
                "Address": {"type": "object", "nullable": true, "required": ["city"], "properties": {"city": {"type": "string"}}},
                "Item": {"type": "object", "required": ["sku"], "properties": {"sku": {"type": "string"}}}
            }
        }
    })
}

fn api(options: Options) -> OpenApi {
    OpenApi::load("orders", document().to_string().as_bytes(), options).unwrap()
}

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (k, v) in pairs {
        map.append(http::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
    }
    map
}

/// Runs one request; `Ok(())` or `(code, field, message)`.
fn run(
    api: &OpenApi,
    method: &Method,
    target: &str,
    hdrs: &[(&str, &str)],
    body: Option<&str>,
) -> Result<(), (String, String, String)> {
    let (path, query) = target.split_once('?').map_or((target, None), |(p, q)| (p, Some(q)));
    let map = headers(hdrs);
    let parts = RequestParts { method, path, query, headers: &map, has_body: body.is_some() };
    api.validate(&parts, body.map(str::as_bytes)).map_err(|d| {
        let c = d.client.clone().map_or_else(|| crate::ClientDetail::new("", ""), |c| *c);
        (d.reason.code().to_owned(), c.field, c.message)
    })
}

#[test]
fn templates_prefer_literals_and_strip_the_base_path() {
    let api = api(Options::default());
    assert_eq!(api.base_path(), "/api");
    let cases: &[(&str, Option<&str>, &[(&str, &str)])] = &[
        ("/api/orders/mine", Some("/orders/mine"), &[]),
        ("/api/orders/7", Some("/orders/{id}"), &[("id", "7")]),
        ("/api/orders/a%2Fb", Some("/orders/{id}"), &[("id", "a/b")]),
        ("/api/ORDERS/Mine", Some("/orders/mine"), &[]),
        ("/api/orders/", Some("/orders"), &[]),
        ("/api/reports/q1.csv", Some("/reports/{name}.csv"), &[("name", "q1")]),
        ("/api/reports/.csv", None, &[]),
        ("/api/orders/7/extra", None, &[]),
        ("/orders", None, &[]),
        ("/apiorders", None, &[]),
        ("/api", None, &[]),
    ];
    for (path, template, params) in cases {
        match api.find(&Method::GET, path) {
            Ok(Some(m)) => {
                assert_eq!(Some(m.template()), *template, "{path}");
                let got: Vec<(&str, &str)> = m.path_params().iter().map(|(n, v)| (*n, v.as_str())).collect();
                assert_eq!(got, *params, "{path}");
            }
            Ok(None) => panic!("{path}: passed without deny_unknown"),
            Err(d) => {
                assert_eq!(*template, None, "{path}: {d:?}");
                assert_eq!(d.reason, Reason::OpenapiUnknownPath);
            }
        }
    }
    let sensitive = self::api(Options { case_insensitive: false, ..Options::default() });
    assert!(sensitive.find(&Method::GET, "/api/ORDERS/mine").is_err());
    let explicit = self::api(Options { base_path: Some(String::new()), ..Options::default() });
    assert!(explicit.find(&Method::GET, "/orders/mine").unwrap().is_some());
}

#[test]
fn unknown_methods_are_405_with_allow_and_pass_without_deny_unknown() {
    let api = api(Options::default());
    let denied = api.find(&Method::PATCH, "/api/orders").unwrap_err();
    assert_eq!(denied.reason, Reason::OpenapiMethod);
    assert_eq!(denied.headers, vec![(http::header::ALLOW, "GET, POST".parse().unwrap())]);
    assert!(api.find(&Method::HEAD, "/api/orders/mine").unwrap().is_some(), "HEAD falls back to GET");
    let open = self::api(Options { deny_unknown: false, ..Options::default() });
    assert!(open.find(&Method::PATCH, "/api/orders").unwrap().is_none());
    assert!(open.find(&Method::GET, "/api/nothing").unwrap().is_none());
}

#[test]
fn parameters_are_coerced_to_their_schema_type() {
    let int_array = Shape::Array(Box::new(Shape::Integer));
    let cases: &[(&Shape, &[&str], bool, Value)] = &[
        (&Shape::Integer, &["10"], false, json!(10)),
        (&Shape::Integer, &["-3"], false, json!(-3)),
        (&Shape::Integer, &["18446744073709551615"], false, json!(18_446_744_073_709_551_615_u64)),
        (&Shape::Integer, &["ten"], false, json!("ten")),
        (&Shape::Integer, &["1", "2"], false, json!([1, 2])),
        (&Shape::Number, &["1.5"], false, json!(1.5)),
        (&Shape::Number, &["1e3"], false, json!(1000.0)),
        (&Shape::Number, &["inf"], false, json!("inf")),
        (&Shape::Number, &["NaN"], false, json!("NaN")),
        (&Shape::Boolean, &["true"], false, json!(true)),
        (&Shape::Boolean, &["1"], false, json!("1")),
        (&Shape::String, &["10"], false, json!("10")),
        (&int_array, &["1,2,x"], true, json!([1, 2, "x"])),
        (&int_array, &["1", "2"], false, json!([1, 2])),
        (&int_array, &["1,2"], false, json!(["1,2"])),
    ];
    for (shape, values, split, expected) in cases {
        assert_eq!(coerce(shape, values, *split), *expected, "{shape:?} {values:?}");
    }
    assert_eq!(scalar(&Shape::Other, "x"), json!("x"));
}

#[test]
fn requests_are_validated_field_by_field() {
    let api = api(Options::default());
    let json_ct = [("content-type", "application/json")];
    let tenant = [("x-tenant", "acme")];
    type Case<'a> = (Method, &'a str, &'a [(&'a str, &'a str)], Option<&'a str>, Option<(&'a str, &'a str, &'a str)>);
    let cases: Vec<Case<'_>> = vec![
        (Method::GET, "/api/orders?limit=10&status=open&status=closed", &tenant, None, None),
        (
            Method::GET,
            "/api/orders?limit=ten",
            &tenant,
            None,
            Some(("openapi.invalid", "query.limit", "expected integer")),
        ),
        (
            Method::GET,
            "/api/orders?limit=0",
            &tenant,
            None,
            Some(("openapi.invalid", "query.limit", "must be at least 1")),
        ),
        (
            Method::GET,
            "/api/orders?limit=1&limit=2",
            &tenant,
            None,
            Some(("openapi.invalid", "query.limit", "expected integer")),
        ),
        (
            Method::GET,
            "/api/orders?limit[gt]=1",
            &tenant,
            None,
            Some(("openapi.invalid", "query.limit", "unexpected nested form")),
        ),
        (
            Method::GET,
            "/api/orders?status=lost",
            &tenant,
            None,
            Some(("openapi.invalid", "query.status[0]", "is not one of the allowed values")),
        ),
        (Method::GET, "/api/orders?other=1", &tenant, None, None),
        (Method::GET, "/api/orders", &[], None, Some(("openapi.invalid", "header.x-tenant", "is required"))),
        (
            Method::GET,
            "/api/orders",
            &[("x-tenant", "ACME")],
            None,
            Some(("openapi.invalid", "header.x-tenant", "does not match the required pattern")),
        ),
        (Method::GET, "/api/orders/7", &[], None, None),
        (Method::GET, "/api/orders/x", &[], None, Some(("openapi.invalid", "path.id", "expected integer"))),
        (Method::GET, "/api/orders/0", &[], None, Some(("openapi.invalid", "path.id", "must be at least 1"))),
        (
            Method::GET,
            "/api/reports/toolongname.csv",
            &[],
            None,
            Some(("openapi.invalid", "path.name", "must be at most 8 characters long")),
        ),
        (Method::GET, "/api/flags?on=true&ids=1,2", &[], None, None),
        (Method::GET, "/api/flags?on=yes", &[], None, Some(("openapi.invalid", "query.on", "expected boolean"))),
        (Method::GET, "/api/flags", &[], None, Some(("openapi.invalid", "query.on", "is required"))),
        (
            Method::GET,
            "/api/flags?on=false&ids=1,b",
            &[],
            None,
            Some(("openapi.invalid", "query.ids[1]", "expected integer")),
        ),
        (
            Method::GET,
            "/api/flags?on=false&ratio=0",
            &[],
            None,
            Some(("openapi.invalid", "query.ratio", "must be greater than 0")),
        ),
        (Method::GET, "/api/flags?on=false&ratio=0.5", &[], None, None),
        (Method::POST, "/api/orders", &json_ct, Some(r#"{"sku":"abc","quantity":2}"#), None),
        // OpenAPI 3.0 integers are draft 4's: no fraction or exponent written,
        // except past i64, where the parsed float has lost its spelling.
        (Method::POST, "/api/orders", &json_ct, Some(r#"{"sku":"abc","quantity":1e30}"#), None),
        (
            Method::POST,
            "/api/orders",
            &json_ct,
            Some(r#"{"sku":"abc","quantity":2.0}"#),
            Some(("openapi.invalid", "body.quantity", "expected integer")),
        ),
        (
            Method::POST,
            "/api/orders",
            &json_ct,
            Some(r#"{"sku":"abc","quantity":1.5}"#),
            Some(("openapi.invalid", "body.quantity", "expected integer")),
        ),
        (
            Method::POST,
            "/api/orders",
            &json_ct,
            Some(r#"{"sku":"abc","quantity":"2"}"#),
            Some(("openapi.invalid", "body.quantity", "expected integer")),
        ),
        (
            Method::POST,
            "/api/orders",
            &json_ct,
            Some(r#"{"sku":"abc"}"#),
            Some(("openapi.invalid", "body.quantity", "is required")),
        ),
        (
            Method::POST,
            "/api/orders",
            &json_ct,
            Some(r#"{"sku":"abc","quantity":1,"admin":true}"#),
            Some(("openapi.invalid", "body.admin", "is not allowed")),
        ),
        (
            Method::POST,
            "/api/orders",
            &json_ct,
            Some(r#"{"sku":"abc","quantity":1,"note":null,"kind":null,"address":null}"#),
            None,
        ),
        (
            Method::POST,
            "/api/orders",
            &json_ct,
            Some(r#"{"sku":"abc","quantity":1,"kind":"c"}"#),
            Some(("openapi.invalid", "body.kind", "is not one of the allowed values")),
        ),
        (
            Method::POST,
            "/api/orders",
            &json_ct,
            Some(r#"{"sku":"abc","quantity":1,"address":{"city":5}}"#),
            Some(("openapi.invalid", "body.address.city", "expected string")),
        ),
        (
            Method::POST,
            "/api/orders",
            &json_ct,
            Some(r#"{"sku":"abc","quantity":1,"items":[{"sku":"x"},{}]}"#),
            Some(("openapi.invalid", "body.items[1].sku", "is required")),
        ),
        (
            Method::POST,
            "/api/orders",
            &json_ct,
            Some(r#"{"sku":"ab","quantity":1}"#),
            Some(("openapi.invalid", "body.sku", "must be at least 3 characters long")),
        ),
        (
            Method::POST,
            "/api/orders",
            &json_ct,
            Some(r#"{"sku":"abc","#),
            Some(("openapi.malformed_json", "body", "not valid JSON (line 1, column 13)")),
        ),
        (Method::POST, "/api/orders", &json_ct, None, Some(("openapi.invalid", "body", "is required"))),
        (
            Method::POST,
            "/api/orders",
            &[("content-type", "application/xml")],
            Some("<a/>"),
            Some(("openapi.content_type", "header.content-type", "is not a type the operation accepts")),
        ),
        (
            Method::POST,
            "/api/orders",
            &[],
            Some("x"),
            Some(("openapi.content_type", "header.content-type", "is missing")),
        ),
        (Method::POST, "/api/orders", &[("content-type", "text/plain; charset=utf-8")], Some("anything"), None),
        (
            Method::POST,
            "/api/orders",
            &[("content-type", "application/json; charset=utf-8")],
            Some("[]"),
            Some(("openapi.invalid", "body", "expected object")),
        ),
    ];
    for (method, target, hdrs, body, expected) in cases {
        let got = run(&api, &method, target, hdrs, body);
        let expected = expected.map(|(a, b, c)| (a.to_owned(), b.to_owned(), c.to_owned()));
        assert_eq!(got, expected.map_or(Ok(()), Err), "{method} {target} {body:?}");
    }
}

#[test]
fn parts_can_be_switched_off() {
    let api = api(Options { validate: Parts { query: false, body: false, ..Parts::ALL }, ..Options::default() });
    assert_eq!(run(&api, &Method::GET, "/api/orders?limit=ten", &[("x-tenant", "a")], None), Ok(()));
    assert_eq!(run(&api, &Method::POST, "/api/orders", &[("content-type", "application/json")], Some("{")), Ok(()));
    assert!(run(&api, &Method::GET, "/api/orders/x", &[], None).is_err(), "path parameters still checked");
}

#[test]
fn json_limits_are_enforced_before_parsing() {
    let limits = JsonLimits { max_depth: 3, max_keys: 4, max_string: 8 };
    let cases: &[(&str, Option<&str>)] = &[
        (r#"{"a":[{"b":1}]}"#, None),
        (r#"{"a":[{"b":[1]}]}"#, Some("nested deeper than 3 levels")),
        (r#"[[[[]]]]"#, Some("nested deeper than 3 levels")),
        (r#"{"a":1,"b":2,"c":3,"d":4}"#, None),
        (r#"{"a":1,"b":2,"c":3,"d":4,"e":5}"#, Some("more than 4 object keys")),
        (r#"[{"a":1},{"a":1},{"a":1},{"a":1},{"a":1}]"#, Some("more than 4 object keys")),
        (r#"{"a":"12345678"}"#, None),
        (r#"{"a":"123456789"}"#, Some("a string longer than 8 bytes")),
        (r#"{"123456789":1}"#, Some("a string longer than 8 bytes")),
        (r#"{"a":"1234567\"x"}"#, Some("a string longer than 8 bytes")),
        (r#"{"a":"{{{{[[[[::::"}"#, Some("a string longer than 8 bytes")),
        (r#"{"a":"{[:"}"#, None),
        (r#""1234567890"#, Some("a string longer than 8 bytes")),
    ];
    for (body, expected) in cases {
        let got = limits.scan(body.as_bytes()).err().map(|b| limits.message(b));
        assert_eq!(got.as_deref(), *expected, "{body}");
    }
    let api = api(Options { limits, ..Options::default() });
    let got = run(
        &api,
        &Method::POST,
        "/api/orders",
        &[("content-type", "application/json")],
        Some(r#"{"sku":"abcdefghijk","quantity":1}"#),
    );
    assert_eq!(got, Err(("openapi.json_limits".into(), "body".into(), "a string longer than 8 bytes".into())));
}

#[test]
fn openapi_3_1_uses_json_schema_2020_12() {
    let doc = json!({
        "openapi": "3.1.0",
        "info": {"title": "t", "version": "1"},
        "paths": {"/things": {"post": {"requestBody": {"content": {"application/vnd.api+json": {"schema": {
            "type": "object",
            "properties": {"n": {"type": ["integer", "null"]}, "c": {"const": "x"}},
            "unevaluatedProperties": false
        }}}}}}}
    });
    let api = OpenApi::load("t", doc.to_string().as_bytes(), Options::default()).unwrap();
    let ct = [("content-type", "application/vnd.api+json")];
    assert_eq!(run(&api, &Method::POST, "/things", &ct, Some(r#"{"n":null,"c":"x"}"#)), Ok(()));
    assert_eq!(
        run(&api, &Method::POST, "/things", &ct, Some(r#"{"n":"1"}"#)),
        Err(("openapi.invalid".into(), "body.n".into(), "expected null or integer".into()))
    );
    assert_eq!(
        run(&api, &Method::POST, "/things", &ct, Some(r#"{"zzz":1}"#)),
        Err(("openapi.invalid".into(), "body.zzz".into(), "is not allowed".into()))
    );
}

#[test]
fn client_supplied_names_are_cleaned_and_cut_in_the_answer() {
    let api = api(Options::default());
    let long = "k".repeat(500);
    let body = format!(r#"{{"sku":"abc","quantity":1,"{long}\u0007":1}}"#);
    let Err((_, field, _)) =
        run(&api, &Method::POST, "/api/orders", &[("content-type", "application/json")], Some(&body))
    else {
        panic!("accepted")
    };
    assert!(field.starts_with("body.kkk") && field.len() <= crate::ClientDetail::MAX_FIELD, "{field}");
}

#[test]
fn broken_documents_are_load_errors() {
    let load = |text: &str| OpenApi::load("x", text.as_bytes(), Options::default()).map(|_| ()).unwrap_err();
    assert!(matches!(load("openapi: 3.0.0\npaths: {}\n"), LoadError::NotJson(_)));
    assert!(load(r#"{"swagger":"2.0"}"#).to_string().contains("Swagger 2.0"));
    assert!(load(r#"{"openapi":"4.0.0"}"#).to_string().contains("4.0.0"));
    assert!(load(r#"{"info":{}}"#).to_string().contains("not an OpenAPI document"));
    let bad = |paths: Value| {
        load(&json!({"openapi": "3.0.0", "info": {"title": "t", "version": "1"}, "paths": paths}).to_string())
            .to_string()
    };
    let e = bad(json!({"orders": {}}));
    assert!(e.contains("/paths/orders") && e.contains("must start with '/'"), "{e}");
    let e = bad(json!({"/o/{a}{b}": {}}));
    assert!(e.contains("one named parameter"), "{e}");
    let e = bad(json!({"/o": {"get": {"parameters": [{"$ref": "#/components/parameters/Nope"}]}}}));
    assert!(e.contains("points at nothing"), "{e}");
    let e = bad(json!({"/o": {"get": {"parameters": [{"$ref": "other.json#/P"}]}}}));
    assert!(e.contains("external reference"), "{e}");
    let e = bad(
        json!({"/o": {"post": {"requestBody": {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Missing"}}}}}}}),
    );
    assert!(e.contains("/paths/~1o/post/requestBody/content/application~1json"), "{e}");
    let e = bad(
        json!({"/o": {"post": {"requestBody": {"content": {"application/json": {"schema": {"$ref": "https://example.com/s.json"}}}}}}}),
    );
    assert!(e.contains("/paths/~1o/post"), "{e}");
}
