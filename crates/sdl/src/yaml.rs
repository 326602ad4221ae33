//! A YAML document as a tree whose every node knows its line and column, built from
//! `saphyr-parser` events with bounded work: input size, nesting depth and the number of nodes
//! after alias expansion are all capped, so a "billion laughs" file fails fast with a clear error
//! instead of exhausting memory.

use std::collections::BTreeMap;

use saphyr_parser::{Event, Parser, ScalarStyle, Span};

/// A position in the source, both 1-based (as editors show them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, serde::Serialize)]
pub struct Pos {
    pub line: usize,
    pub col: usize,
}

impl Pos {
    fn of(span: &Span) -> Pos {
        Pos {
            line: span.start.line(),
            col: span.start.col() + 1,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// `~`, `null`, or an empty value.
    Null,
    /// Any other scalar, with whether it was written plain (unquoted).
    Scalar {
        text: String,
        plain: bool,
    },
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub kind: Kind,
    pub pos: Pos,
    /// Nodes in this subtree, itself included (what an alias to it costs).
    pub size: usize,
}

impl Node {
    pub fn scalar(&self) -> Option<&str> {
        match &self.kind {
            Kind::Scalar { text, .. } => Some(text),
            _ => None,
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self.kind, Kind::Null)
    }

    /// What the node is, for error messages.
    pub fn describe(&self) -> &'static str {
        match &self.kind {
            Kind::Null => "null",
            Kind::Scalar { .. } => "a scalar",
            Kind::Seq(_) => "a list",
            Kind::Map(_) => "a mapping",
        }
    }
}

/// Bounds on the work a document may cause.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_bytes: usize,
    pub max_depth: usize,
    /// Nodes after alias expansion.
    pub max_nodes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bytes: 1 << 20,
            max_depth: 64,
            max_nodes: 100_000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct YamlError {
    pub pos: Pos,
    pub message: String,
}

fn err(pos: Pos, message: impl Into<String>) -> YamlError {
    YamlError {
        pos,
        message: message.into(),
    }
}

/// The position of byte `offset` in `bytes`.
pub fn pos_of_offset(bytes: &[u8], offset: usize) -> Pos {
    let before = &bytes[..offset.min(bytes.len())];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let line_start = before.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let col = String::from_utf8_lossy(&before[line_start..]).chars().count() + 1;
    Pos { line, col }
}

/// Checks size and encoding, then parses.
pub fn parse_bytes(bytes: &[u8], limits: Limits) -> Result<Option<Node>, YamlError> {
    if bytes.len() > limits.max_bytes {
        return Err(err(
            Pos { line: 1, col: 1 },
            format!(
                "file is {} bytes; an SDL file may have at most {} bytes",
                bytes.len(),
                limits.max_bytes
            ),
        ));
    }
    let text = std::str::from_utf8(bytes).map_err(|e| {
        err(
            pos_of_offset(bytes, e.valid_up_to()),
            "file is not valid UTF-8 (YAML files must be text)",
        )
    })?;
    parse(text, limits)
}

enum Frame {
    Seq {
        items: Vec<Node>,
        pos: Pos,
        anchor: usize,
        size: usize,
    },
    Map {
        entries: Vec<(Node, Node)>,
        key: Option<Node>,
        pos: Pos,
        anchor: usize,
        size: usize,
    },
}

/// Parses the first document of `text` into a tree. `Ok(None)` for an empty document.
pub fn parse(text: &str, limits: Limits) -> Result<Option<Node>, YamlError> {
    if text.len() > limits.max_bytes {
        return Err(err(
            Pos { line: 1, col: 1 },
            format!("file is larger than {} bytes", limits.max_bytes),
        ));
    }
    let mut parser = Parser::new_from_str(text);
    let mut stack: Vec<Frame> = Vec::new();
    let mut anchors: BTreeMap<usize, Node> = BTreeMap::new();
    let mut root: Option<Node> = None;
    let mut total = 0usize;
    let mut documents = 0usize;

    while let Some(next) = parser.next_event() {
        let (event, span) = next.map_err(|e| {
            err(
                Pos {
                    line: e.marker().line(),
                    col: e.marker().col() + 1,
                },
                e.info().to_string(),
            )
        })?;
        let pos = Pos::of(&span);
        let (value, anchor) = match event {
            Event::StreamEnd => break,
            Event::DocumentStart(_) => {
                documents += 1;
                if documents > 1 {
                    return Err(err(pos, "more than one YAML document; an SDL file holds exactly one"));
                }
                continue;
            }
            Event::Nothing | Event::StreamStart | Event::DocumentEnd => continue,
            Event::Alias(id) => {
                let target = anchors
                    .get(&id)
                    .ok_or_else(|| err(pos, "alias refers to an unknown anchor"))?;
                let mut n = target.clone();
                n.pos = pos;
                // An alias costs its whole subtree: this is what bounds expansion.
                total = total.saturating_add(n.size);
                (n, 0)
            }
            Event::Scalar(text, style, anchor, _tag) => {
                let plain = style == ScalarStyle::Plain;
                let kind = if plain && matches!(text.as_ref(), "" | "~" | "null" | "Null" | "NULL") {
                    Kind::Null
                } else {
                    Kind::Scalar {
                        text: text.into_owned(),
                        plain,
                    }
                };
                total += 1;
                (Node { kind, pos, size: 1 }, anchor)
            }
            Event::SequenceStart(anchor, _) | Event::MappingStart(anchor, _) => {
                if stack.len() >= limits.max_depth {
                    return Err(err(pos, format!("nesting deeper than {} levels", limits.max_depth)));
                }
                total += 1;
                if total > limits.max_nodes {
                    return Err(too_many(pos, limits));
                }
                stack.push(if matches!(event, Event::SequenceStart(..)) {
                    Frame::Seq {
                        items: Vec::new(),
                        pos,
                        anchor,
                        size: 1,
                    }
                } else {
                    Frame::Map {
                        entries: Vec::new(),
                        key: None,
                        pos,
                        anchor,
                        size: 1,
                    }
                });
                continue;
            }
            Event::SequenceEnd => match stack.pop() {
                Some(Frame::Seq {
                    items,
                    pos,
                    anchor,
                    size,
                }) => (
                    Node {
                        kind: Kind::Seq(items),
                        pos,
                        size,
                    },
                    anchor,
                ),
                _ => return Err(err(pos, "unbalanced sequence end")),
            },
            Event::MappingEnd => match stack.pop() {
                Some(Frame::Map {
                    entries,
                    key,
                    pos,
                    anchor,
                    size,
                }) => {
                    if let Some(k) = key {
                        return Err(err(k.pos, "mapping key without a value"));
                    }
                    let node = Node {
                        kind: Kind::Map(merge_and_check(entries)?),
                        pos,
                        size,
                    };
                    (node, anchor)
                }
                _ => return Err(err(pos, "unbalanced mapping end")),
            },
        };
        if anchor > 0 {
            anchors.insert(anchor, value.clone());
        }
        if total > limits.max_nodes {
            return Err(too_many(pos, limits));
        }
        match stack.last_mut() {
            None => {
                if root.is_none() {
                    root = Some(value);
                }
            }
            Some(Frame::Seq { items, size, .. }) => {
                *size += value.size;
                items.push(value);
            }
            Some(Frame::Map { entries, key, size, .. }) => {
                *size += value.size;
                match key.take() {
                    None => *key = Some(value),
                    Some(k) => entries.push((k, value)),
                }
            }
        }
    }
    Ok(root)
}

fn too_many(pos: Pos, limits: Limits) -> YamlError {
    err(
        pos,
        format!(
            "document expands to more than {} nodes (aliases are expanded; is this a YAML bomb?)",
            limits.max_nodes
        ),
    )
}

/// Applies merge keys (`<<: *anchor`, explicit keys win) and refuses duplicate keys, as Go's
/// yaml.v3 (which Akash uses) does.
fn merge_and_check(entries: Vec<(Node, Node)>) -> Result<Vec<(Node, Node)>, YamlError> {
    let mut own = Vec::with_capacity(entries.len());
    let mut merged = Vec::new();
    for (k, v) in entries {
        let is_merge = matches!(&k.kind, Kind::Scalar { text, plain: true } if text == "<<");
        if !is_merge {
            own.push((k, v));
            continue;
        }
        match v.kind {
            Kind::Map(m) => merged.extend(m),
            Kind::Seq(items) => {
                for item in items {
                    match item.kind {
                        Kind::Map(m) => merged.extend(m),
                        _ => return Err(err(item.pos, "merge key `<<` takes mappings only")),
                    }
                }
            }
            _ => return Err(err(v.pos, "merge key `<<` takes a mapping or a list of mappings")),
        }
    }
    let mut seen: BTreeMap<String, Pos> = BTreeMap::new();
    for (k, _) in &own {
        let name = key_text(k);
        if let Some(first) = seen.insert(name.clone(), k.pos) {
            return Err(err(
                k.pos,
                format!("duplicate key {name:?} (first at line {})", first.line),
            ));
        }
    }
    for (k, v) in merged {
        if let std::collections::btree_map::Entry::Vacant(e) = seen.entry(key_text(&k)) {
            e.insert(k.pos);
            own.push((k, v));
        }
    }
    Ok(own)
}

fn key_text(k: &Node) -> String {
    match &k.kind {
        Kind::Scalar { text, .. } => text.clone(),
        Kind::Null => "null".into(),
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<Option<Node>, YamlError> {
        parse(s, Limits::default())
    }

    #[test]
    fn nodes_carry_one_based_lines_and_columns() {
        let root = p("a:\n  b: 1\n  c: [x, y]\n").expect("parses").expect("doc");
        let Kind::Map(top) = &root.kind else { panic!("map") };
        let Kind::Map(inner) = &top[0].1.kind else {
            panic!("map")
        };
        assert_eq!(inner[0].0.pos, Pos { line: 2, col: 3 });
        assert_eq!(inner[0].1.pos, Pos { line: 2, col: 6 });
        let Kind::Seq(items) = &inner[1].1.kind else {
            panic!("seq")
        };
        assert_eq!(items[1].pos, Pos { line: 3, col: 10 });
    }

    #[test]
    fn a_billion_laughs_file_is_refused_quickly() {
        let mut s = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
        let names = ["b", "c", "d", "e", "f", "g", "h", "i", "j"];
        let mut prev = "a";
        for n in names {
            s.push_str(&format!("{n}: &{n} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]\n"));
            prev = n;
        }
        let e = p(&s).expect_err("bomb");
        assert!(e.message.contains("YAML bomb"), "{e}");
    }

    #[test]
    fn merge_keys_apply_and_explicit_keys_win() {
        let root = p("base: &b {x: 1, y: 2}\nuse:\n  <<: *b\n  y: 3\n")
            .expect("parses")
            .expect("doc");
        let Kind::Map(top) = &root.kind else { panic!("map") };
        let Kind::Map(u) = &top[1].1.kind else { panic!("map") };
        let got: Vec<(&str, &str)> = u
            .iter()
            .map(|(k, v)| (k.scalar().expect("k"), v.scalar().expect("v")))
            .collect();
        assert_eq!(got, vec![("y", "3"), ("x", "1")]);
    }

    #[test]
    fn duplicate_keys_point_at_the_second_one() {
        let e = p("a: 1\nb: 2\na: 3\n").expect_err("dup");
        assert_eq!(e.pos, Pos { line: 3, col: 1 });
        assert!(e.message.contains("duplicate key \"a\""), "{e}");
    }

    #[test]
    fn deep_nesting_and_invalid_utf8_are_errors() {
        let deep = "[".repeat(200) + &"]".repeat(200);
        assert!(p(&deep).expect_err("deep").message.contains("nesting"));
        let e = parse_bytes(b"a: 1\nb: \xff\n", Limits::default()).expect_err("utf8");
        assert_eq!(e.pos, Pos { line: 2, col: 4 });
    }

    #[test]
    fn syntax_errors_have_positions() {
        let e = p("a: [1, 2\nb: 3\n").expect_err("unclosed");
        assert!(e.pos.line >= 1, "{e:?}");
    }
}
