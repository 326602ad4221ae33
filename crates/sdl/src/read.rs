//! Reading the YAML tree into typed SDL sections, collecting every error with its position
//! instead of stopping at the first.

use std::collections::BTreeMap;

use crate::yaml::{Kind, Node, Pos};
use crate::Diagnostic;

/// Errors and warnings found so far.
#[derive(Default)]
pub struct Ctx {
    pub errors: Vec<Diagnostic>,
    pub warnings: Vec<Diagnostic>,
}

impl Ctx {
    pub fn error(&mut self, pos: Pos, path: &str, message: impl Into<String>) {
        self.errors.push(Diagnostic {
            pos,
            path: path.to_string(),
            message: message.into(),
        });
    }

    pub fn warn(&mut self, pos: Pos, path: &str, message: impl Into<String>) {
        self.warnings.push(Diagnostic {
            pos,
            path: path.to_string(),
            message: message.into(),
        });
    }

    /// Entries of a mapping with string keys, in file order; `null` is an empty mapping.
    pub fn map<'a>(&mut self, n: &'a Node, path: &str) -> Option<Vec<(&'a str, &'a Node)>> {
        match &n.kind {
            Kind::Null => Some(Vec::new()),
            Kind::Map(entries) => {
                let mut out = Vec::with_capacity(entries.len());
                for (k, v) in entries {
                    match k.scalar() {
                        Some(s) => out.push((s, v)),
                        None => self.error(k.pos, path, format!("keys must be names, not {}", k.describe())),
                    }
                }
                Some(out)
            }
            _ => {
                self.error(n.pos, path, format!("expected a mapping, found {}", n.describe()));
                None
            }
        }
    }

    /// The fields of a mapping below the top level, by name. A key not in `known` is ignored
    /// with a warning at the key, naming the known field it most likely means: Akash's reader
    /// ignores such keys at every depth, so a file it accepts is not refused here, and one rule
    /// holds everywhere so a misspelt key is never dropped unseen.
    pub fn fields<'a>(&mut self, n: &'a Node, path: &str, known: &[&str]) -> Option<Fields<'a>> {
        self.fields_with(n, path, known, Unknown::Warn)
    }

    /// The top-level keys of the file. Akash's schema refuses an unknown one
    /// (`additionalProperties: false`, "sdl: unexpected field"), so it is an error here too.
    pub fn top_level_fields<'a>(&mut self, n: &'a Node, known: &[&str]) -> Option<Fields<'a>> {
        self.fields_with(n, "", known, Unknown::Refuse)
    }

    fn fields_with<'a>(&mut self, n: &'a Node, path: &str, known: &[&str], unknown: Unknown) -> Option<Fields<'a>> {
        let entries = self.map(n, path)?;
        let mut out = BTreeMap::new();
        for (k, v) in entries {
            if !known.contains(&k) {
                let p = join(path, k);
                let kpos = key_pos(n, k).unwrap_or(v.pos);
                let hint = match suggest(k, known) {
                    Some(s) => format!("; did you mean {s:?}?"),
                    None => format!(" (expected one of: {})", known.join(", ")),
                };
                match unknown {
                    Unknown::Refuse => self.error(kpos, &p, format!("unknown field {k:?}{hint}")),
                    Unknown::Warn => self.warn(kpos, &p, format!("unknown field {k:?} is ignored{hint}")),
                }
                continue;
            }
            out.insert(k, v);
        }
        Some(Fields { node: n, map: out })
    }

    /// A scalar as text (numbers and booleans as written).
    pub fn string(&mut self, n: &Node, path: &str) -> Option<String> {
        match &n.kind {
            Kind::Scalar { text, .. } => Some(text.clone()),
            _ => {
                self.error(n.pos, path, format!("expected a string, found {}", n.describe()));
                None
            }
        }
    }

    pub fn boolean(&mut self, n: &Node, path: &str) -> Option<bool> {
        match n.scalar() {
            Some("true" | "True" | "TRUE") => Some(true),
            Some("false" | "False" | "FALSE") => Some(false),
            _ => {
                self.error(n.pos, path, format!("expected true or false, found {}", show(n)));
                None
            }
        }
    }

    /// A whole number in `min..=max`.
    pub fn uint(&mut self, n: &Node, path: &str, min: u64, max: u64) -> Option<u64> {
        let Some(text) = n.scalar() else {
            self.error(n.pos, path, format!("expected a whole number, found {}", n.describe()));
            return None;
        };
        let t = text.trim();
        let parsed = if t.bytes().all(|b| b.is_ascii_digit()) && !t.is_empty() {
            t.parse::<u64>().ok()
        } else if let Some(int) = t.strip_suffix(".0") {
            int.parse::<u64>().ok()
        } else {
            None
        };
        match parsed {
            Some(v) if (min..=max).contains(&v) => Some(v),
            Some(v) => {
                self.error(n.pos, path, format!("{v} is out of range: must be {min}-{max}"));
                None
            }
            None if t.bytes().all(|b| b.is_ascii_digit()) && !t.is_empty() => {
                self.error(n.pos, path, format!("{t} is out of range: must be {min}-{max}"));
                None
            }
            None => {
                self.error(n.pos, path, format!("expected a whole number, found {}", show(n)));
                None
            }
        }
    }

    /// A list of strings; `null` is empty. A single string is refused (as Akash does).
    pub fn strings(&mut self, n: &Node, path: &str) -> Option<Vec<String>> {
        match &n.kind {
            Kind::Null => Some(Vec::new()),
            Kind::Seq(items) => {
                let mut out = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    let p = format!("{path}[{i}]");
                    match &item.kind {
                        Kind::Scalar { text, .. } => out.push(text.clone()),
                        Kind::Null => out.push(String::new()),
                        _ => self.error(item.pos, &p, format!("expected a string, found {}", item.describe())),
                    }
                }
                Some(out)
            }
            _ => {
                self.error(
                    n.pos,
                    path,
                    format!("expected a list of strings, found {}", n.describe()),
                );
                None
            }
        }
    }

    /// Items of a list; `null` is empty.
    pub fn seq<'a>(&mut self, n: &'a Node, path: &str) -> Option<&'a [Node]> {
        match &n.kind {
            Kind::Null => Some(&[]),
            Kind::Seq(items) => Some(items),
            _ => {
                self.error(n.pos, path, format!("expected a list, found {}", n.describe()));
                None
            }
        }
    }
}

/// What an unknown key of a mapping is.
#[derive(Clone, Copy)]
enum Unknown {
    Warn,
    Refuse,
}

/// Position of key `k` in mapping `n`.
pub fn key_pos(n: &Node, k: &str) -> Option<Pos> {
    match &n.kind {
        Kind::Map(entries) => entries
            .iter()
            .find(|(key, _)| key.scalar() == Some(k))
            .map(|(key, _)| key.pos),
        _ => None,
    }
}

pub fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// A node's value for an error message.
pub fn show(n: &Node) -> String {
    match &n.kind {
        Kind::Scalar { text, .. } => {
            let t: String = text.chars().take(60).collect();
            format!("{t:?}")
        }
        _ => n.describe().to_string(),
    }
}

/// The known fields of one mapping.
pub struct Fields<'a> {
    pub node: &'a Node,
    map: BTreeMap<&'a str, &'a Node>,
}

impl<'a> Fields<'a> {
    /// A present, non-null field.
    pub fn get(&self, k: &str) -> Option<&'a Node> {
        self.map.get(k).copied().filter(|n| !n.is_null())
    }

    /// A field that must be there: reports it missing (at the mapping) otherwise.
    pub fn need(&self, cx: &mut Ctx, path: &str, k: &str) -> Option<&'a Node> {
        let v = self.get(k);
        if v.is_none() {
            cx.error(self.node.pos, &join(path, k), "is required");
        }
        v
    }

    pub fn pos_of(&self, k: &str) -> Pos {
        key_pos(self.node, k).unwrap_or(self.node.pos)
    }
}

/// The known field a misspelt or Compose-style key most likely means.
fn suggest<'k>(key: &str, known: &[&'k str]) -> Option<&'k str> {
    const ALIASES: &[(&str, &str)] = &[
        ("cmd", "command"),
        ("entrypoint", "command"),
        ("environment", "env"),
        ("depends_on", "dependencies"),
        ("depends-on", "dependencies"),
        ("ports", "expose"),
    ];
    if let Some((_, to)) = ALIASES.iter().find(|(from, _)| *from == key) {
        return known.iter().find(|k| *k == to).copied();
    }
    known
        .iter()
        .map(|k| (edit_distance(key, k), *k))
        .filter(|(d, k)| *d <= 2 && *d < k.len())
        .min()
        .map(|(_, k)| k)
}

/// Levenshtein distance between two short strings.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn misspelt_and_compose_style_keys_get_a_suggestion() {
        let known = ["service", "global", "ip"];
        assert_eq!(suggest("servcie", &known), Some("service"));
        assert_eq!(suggest("globl", &known), Some("global"));
        assert_eq!(suggest("zone", &known), None);
        let svc = ["image", "command", "args", "env", "expose", "dependencies"];
        assert_eq!(suggest("cmd", &svc), Some("command"));
        assert_eq!(suggest("depends_on", &svc), Some("dependencies"));
        assert_eq!(suggest("environment", &svc), Some("env"));
    }
}
