//! Test support (feature `test-support`): holds an OpenAPI document generated from this crate's
//! types to the OpenAPI Initiative's schema and to our own rules, and checks a service's real
//! answers against it. The validator is the `jsonschema` crate, not the generator (utoipa), so
//! a generator bug cannot vouch for itself. Every Pazar service with an OpenAPI document calls
//! [`check_document`] on it and [`check_answer`] on the answers its tests receive.
//!
//! Our rules, beyond the official schema:
//! - every response of every operation has `content`, and each content's schema is typed: a
//!   `$ref` to a component, or a schema with a `type` (an `object` with its properties, or a
//!   map with `additionalProperties`), or a composition (`allOf`, `oneOf`, `anyOf`) of typed
//!   schemas; the same holds inside every component, so no field is an undescribed `{}` or a
//!   bare `{"type": "object"}`;
//! - every error response (4xx, 5xx) is `application/json` with the [`ErrorEnvelope`] schema;
//! - every component schema is a valid JSON Schema (draft 2020-12, OpenAPI 3.1's dialect);
//! - every local `$ref` resolves.
//!
//! [`ErrorEnvelope`]: crate::ErrorEnvelope

use serde_json::{json, Map, Value};

/// The OpenAPI Initiative's schema of OpenAPI 3.1 documents (iteration 2022-10-07), vendored;
/// see `openapi/NOTICE.md` in this crate.
pub const OAS_3_1_SCHEMA: &str = include_str!("../openapi/oas-3.1-schema.json");

/// Where an error response's schema must point.
pub const ERROR_ENVELOPE_REF: &str = "#/components/schemas/ErrorEnvelope";

const DRAFT_2020_12: &str = "https://json-schema.org/draft/2020-12/schema";

/// Every way `doc` breaks the official schema or our rules (empty: none), one sentence each.
pub fn check_document(doc: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    official_schema(doc, &mut problems);
    let schemas = doc
        .pointer("/components/schemas")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    for (name, schema) in &schemas {
        if let Err(e) = jsonschema::meta::validate(&with_dialect(schema)) {
            problems.push(format!("component {name} is not a valid JSON Schema: {e}"));
        }
        typed(schema, &format!("#/components/schemas/{name}"), &mut problems);
    }
    let paths = doc.get("paths").and_then(Value::as_object).cloned().unwrap_or_default();
    if paths.is_empty() {
        problems.push("the document has no paths".into());
    }
    for (path, item) in &paths {
        let Some(item) = item.as_object() else {
            problems.push(format!("{path} is not a path item"));
            continue;
        };
        for (method, op) in item {
            let at = format!("{} {path}", method.to_uppercase());
            let responses = op.get("responses").and_then(Value::as_object);
            let Some(responses) = responses.filter(|r| !r.is_empty()) else {
                problems.push(format!("{at} has no responses"));
                continue;
            };
            for (status, response) in responses {
                response_rules(&format!("{at} {status}"), status, response, &mut problems);
            }
        }
    }
    refs_resolve(doc, doc, "#", &mut problems);
    problems
}

/// Whether `body`, answered by `method path` with `status`, is what the document says that
/// response carries (its `application/json` schema); the problems if not.
pub fn check_answer(doc: &Value, method: &str, path: &str, status: u16, body: &Value) -> Vec<String> {
    let at = format!("{} {path} {status}", method.to_uppercase());
    // `~1` is how a JSON pointer spells `/`.
    let pointer = format!(
        "/paths/{}/{}/responses/{status}/content/application~1json/schema",
        path.replace('~', "~0").replace('/', "~1"),
        method.to_lowercase()
    );
    let Some(schema) = doc.pointer(&pointer) else {
        return vec![format!("{at}: the document describes no JSON answer for it")];
    };
    validate_with_components(doc, schema, body, &at)
}

/// Whether `value` is what the document's component schema `name` describes (for payloads no
/// response names directly, such as the event stream's); the problems if not.
pub fn check_component(doc: &Value, name: &str, value: &Value) -> Vec<String> {
    let schema = json!({ "$ref": format!("#/components/schemas/{name}") });
    if doc.pointer(&format!("/components/schemas/{name}")).is_none() {
        return vec![format!("the document has no component {name}")];
    }
    validate_with_components(doc, &schema, value, &format!("component {name}"))
}

/// `body` checked against `schema`, with the document's components beside it so its `$ref`s
/// resolve.
fn validate_with_components(doc: &Value, schema: &Value, body: &Value, at: &str) -> Vec<String> {
    let root = json!({
        "$schema": DRAFT_2020_12,
        "components": doc.get("components").cloned().unwrap_or(Value::Null),
        "allOf": [schema],
    });
    let validator = match jsonschema::validator_for(&root) {
        Ok(v) => v,
        Err(e) => return vec![format!("{at}: its schema does not compile: {e}")],
    };
    validator
        .iter_errors(body)
        .map(|e| format!("{at}: at {:?}: {e}", e.instance_path().to_string()))
        .collect()
}

fn official_schema(doc: &Value, problems: &mut Vec<String>) {
    let schema: Value = match serde_json::from_str(OAS_3_1_SCHEMA) {
        Ok(s) => s,
        Err(e) => {
            problems.push(format!("the vendored OpenAPI schema is not JSON: {e}"));
            return;
        }
    };
    match jsonschema::validator_for(&schema) {
        Ok(v) => problems.extend(
            v.iter_errors(doc)
                .map(|e| format!("not OpenAPI 3.1: at {:?}: {e}", e.instance_path().to_string())),
        ),
        Err(e) => problems.push(format!("the vendored OpenAPI schema does not compile: {e}")),
    }
}

/// A component schema as a standalone JSON Schema of OpenAPI 3.1's default dialect.
fn with_dialect(schema: &Value) -> Value {
    match schema {
        Value::Object(m) => {
            let mut m = m.clone();
            m.entry("$schema")
                .or_insert_with(|| Value::String(DRAFT_2020_12.into()));
            Value::Object(m)
        }
        other => other.clone(),
    }
}

fn response_rules(at: &str, status: &str, response: &Value, problems: &mut Vec<String>) {
    let content = response.get("content").and_then(Value::as_object);
    let Some(content) = content.filter(|c| !c.is_empty()) else {
        problems.push(format!("{at} has no content"));
        return;
    };
    let is_error = status.starts_with('4') || status.starts_with('5') || status == "default";
    if is_error {
        let envelope = content
            .get("application/json")
            .and_then(|c| c.pointer("/schema/$ref"))
            .and_then(Value::as_str);
        if content.len() != 1 || envelope != Some(ERROR_ENVELOPE_REF) {
            problems.push(format!(
                "{at} is an error answer but not `application/json` with {ERROR_ENVELOPE_REF}"
            ));
        }
    }
    for (media, c) in content {
        match c.get("schema") {
            None => problems.push(format!("{at} {media} has no schema")),
            Some(schema) => typed(schema, &format!("{at} {media}"), problems),
        }
    }
}

/// Checks that `schema` and everything inside it is typed (see the module docs).
fn typed(schema: &Value, at: &str, problems: &mut Vec<String>) {
    let Some(s) = schema.as_object() else {
        problems.push(format!("{at}: a schema must be an object, not {schema}"));
        return;
    };
    if s.contains_key("$ref") {
        // The target is checked where it is defined (every component is walked).
        return;
    }
    let mut composed = false;
    for key in ["allOf", "oneOf", "anyOf"] {
        if let Some(list) = s.get(key) {
            composed = true;
            match list.as_array().filter(|l| !l.is_empty()) {
                None => problems.push(format!("{at}: `{key}` must list schemas")),
                Some(l) => {
                    for (i, sub) in l.iter().enumerate() {
                        typed(sub, &format!("{at}/{key}/{i}"), problems);
                    }
                }
            }
        }
    }
    let types: Vec<&str> = match s.get("type") {
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    if types.is_empty() && !composed {
        problems.push(format!("{at}: untyped schema {}", Value::Object(s.clone())));
        return;
    }
    if types.contains(&"object") {
        let props = s.get("properties").and_then(Value::as_object);
        // A map says what its values are; `true` is a deliberately free-form map.
        let map = s
            .get("additionalProperties")
            .filter(|a| a.is_object() || a == &&Value::Bool(true));
        if props.is_none() && map.is_none() && !composed {
            problems.push(format!("{at}: an object with no described properties"));
        }
        let extra = map.filter(|a| a.is_object());
        for (name, p) in props.into_iter().flatten() {
            typed(p, &format!("{at}/properties/{name}"), problems);
        }
        if let Some(a) = extra {
            typed(a, &format!("{at}/additionalProperties"), problems);
        }
    }
    if types.contains(&"array") {
        match s.get("items") {
            Some(items) => typed(items, &format!("{at}/items"), problems),
            None => problems.push(format!("{at}: an array with no `items`")),
        }
    }
}

/// Every local `$ref` under `v` points into `doc`.
fn refs_resolve(doc: &Value, v: &Value, at: &str, problems: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            if let Some(Value::String(r)) = m.get("$ref") {
                resolve(doc, r, at, problems);
            }
            for (k, sub) in m {
                refs_resolve(doc, sub, &format!("{at}/{k}"), problems);
            }
        }
        Value::Array(a) => {
            for (i, sub) in a.iter().enumerate() {
                refs_resolve(doc, sub, &format!("{at}/{i}"), problems);
            }
        }
        _ => {}
    }
}

fn resolve(doc: &Value, r: &str, at: &str, problems: &mut Vec<String>) {
    match r.strip_prefix('#') {
        Some(pointer) if doc.pointer(pointer).is_some() => {}
        Some(_) => problems.push(format!("{at}: `$ref` {r} resolves to nothing")),
        None => problems.push(format!("{at}: `$ref` {r} leaves the document")),
    }
}

/// A copy of `doc` with `f` applied to the object at `pointer`: for tests that show a check
/// refuses a broken document.
pub fn edited(doc: &Value, pointer: &str, f: impl FnOnce(&mut Map<String, Value>)) -> Value {
    let mut copy = doc.clone();
    match copy.pointer_mut(pointer) {
        Some(Value::Object(m)) => f(m),
        _ => panic!("the document has no object at {pointer}"),
    }
    copy
}
