//! How the chain commands print: JSON under `-o json`, indented lines for people.

use serde_json::Value;

use pazar_types::KeyScheme;

use crate::{progress, Output};

pub(super) fn emit(out: Output, v: &Value, text: impl FnOnce(&Value) -> String) {
    match out {
        Output::Json => println!("{}", serde_json::to_string_pretty(v).unwrap_or_default()),
        Output::Text => println!("{}", text(v)),
    }
}

/// Indented `key: value` lines of a JSON value, for people.
pub(super) fn text_of(v: &Value) -> String {
    fn walk(v: &Value, indent: usize, out: &mut String) {
        let pad = " ".repeat(indent);
        match v {
            Value::Object(m) => {
                for (k, x) in m {
                    match x {
                        Value::Object(_) | Value::Array(_) if !is_empty(x) => {
                            out.push_str(&format!("{pad}{k}:\n"));
                            walk(x, indent + 2, out);
                        }
                        _ => out.push_str(&format!("{pad}{k}: {}\n", scalar(x))),
                    }
                }
            }
            Value::Array(a) => {
                for x in a {
                    match x {
                        Value::Object(_) | Value::Array(_) => {
                            out.push_str(&format!("{pad}-\n"));
                            walk(x, indent + 2, out);
                        }
                        _ => out.push_str(&format!("{pad}- {}\n", scalar(x))),
                    }
                }
            }
            x => out.push_str(&format!("{pad}{}\n", scalar(x))),
        }
    }
    fn is_empty(v: &Value) -> bool {
        match v {
            Value::Object(m) => m.is_empty(),
            Value::Array(a) => a.is_empty(),
            _ => false,
        }
    }
    fn scalar(v: &Value) -> String {
        match v {
            Value::String(s) => s.clone(),
            Value::Null => "-".into(),
            Value::Array(_) => "[]".into(),
            Value::Object(_) => "{}".into(),
            x => x.to_string(),
        }
    }
    let mut s = String::new();
    walk(v, 0, &mut s);
    s.trim_end().to_string()
}

/// A spinner on stderr while a closure runs (see `progress`: a line when stderr is no
/// terminal, nothing under `-o json`).
pub fn with_spinner<T>(msg: &str, f: impl FnOnce() -> T) -> T {
    progress::with_spinner(msg, f)
}

pub(super) fn scheme_name(s: KeyScheme) -> &'static str {
    match s {
        KeyScheme::Ed25519 => "ed25519",
        KeyScheme::Eth => "eth",
    }
}
