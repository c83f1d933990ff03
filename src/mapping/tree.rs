//! A mapping file read as a YAML tree with the position of every node, and
//! its compilation into templates and expressions.
//!
//! ```yaml
//! reference: "{{ order.name }}"
//! items:
//!   $each: "{{ order.line_items }}"
//!   $as: item
//!   $map: { name: "{{ item.title }}", quantity: "{{ item.quantity }}" }
//! ```

use super::{Expr, Template};
use crate::diagnostic::Diagnostic;
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;
use std::fmt;
use std::path::Path;

/// A YAML node exactly as written.
pub(crate) enum Raw {
    Null,
    Bool(bool),
    Number(serde_json::Number),
    String(String),
    Seq(Vec<Spanned<Raw>>),
    Map(Vec<(String, Spanned<Raw>)>),
}

impl<'de> Deserialize<'de> for Raw {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(RawVisitor)
    }
}

struct RawVisitor;

impl<'de> Visitor<'de> for RawVisitor {
    type Value = Raw;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a YAML value")
    }

    fn visit_unit<E>(self) -> Result<Raw, E> {
        Ok(Raw::Null)
    }

    fn visit_none<E>(self) -> Result<Raw, E> {
        Ok(Raw::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Raw, D::Error> {
        Raw::deserialize(deserializer)
    }

    fn visit_bool<E>(self, v: bool) -> Result<Raw, E> {
        Ok(Raw::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Raw, E> {
        Ok(Raw::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Raw, E> {
        Ok(Raw::Number(v.into()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Raw, E> {
        serde_json::Number::from_f64(v)
            .map(Raw::Number)
            .ok_or_else(|| E::custom(format!("{v} is not a finite number")))
    }

    fn visit_str<E>(self, v: &str) -> Result<Raw, E> {
        Ok(Raw::String(v.to_string()))
    }

    fn visit_string<E>(self, v: String) -> Result<Raw, E> {
        Ok(Raw::String(v))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Raw, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Spanned<Raw>>()? {
            items.push(item);
        }
        Ok(Raw::Seq(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Raw, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            entries.push((key, map.next_value::<Spanned<Raw>>()?));
        }
        Ok(Raw::Map(entries))
    }
}

/// Parses a mapping file's text.
pub(crate) fn parse(file: &Path, text: &str) -> Result<Spanned<Raw>, Diagnostic> {
    serde_saphyr::from_str::<Spanned<Raw>>(text).map_err(|err| {
        let (line, column) = err
            .location()
            .map(|l| (l.line() as usize, l.column() as usize))
            .unwrap_or((0, 0));
        Diagnostic::new(file, line, column, format!("invalid YAML: {err}"))
    })
}

/// A compiled template leaf, with where it came from.
pub(crate) struct Leaf {
    /// Key path in the output, e.g. `recipient.phone` or `items[].name`.
    pub key: String,
    pub line: usize,
    pub kind: LeafKind,
}

pub(crate) enum LeafKind {
    /// `"{{ expr }}"`: keeps the expression's type.
    Value(Expr),
    /// Any other text with template syntax: renders as a string.
    Text(Template),
}

/// The compiled tree.
pub(crate) enum Node {
    Const(serde_json::Value),
    Leaf(Leaf),
    List(Vec<Node>),
    /// Entries as (key, omitted when null, value).
    Map(Vec<(String, bool, Node)>),
    Each {
        source: Leaf,
        var: String,
        body: Box<Node>,
    },
}

/// Directives of a list built from a list.
const EACH: &str = "$each";
const AS: &str = "$as";
const MAP: &str = "$map";
/// Root-level lookup tables.
pub(crate) const TABLES: &str = "$tables";
/// Root-level named values, evaluated in order before the tree.
pub(crate) const LET: &str = "$let";

/// The expression inside a leaf that is exactly `{{ expr }}`.
fn whole_expression(text: &str) -> Option<&str> {
    let inner = text.strip_prefix("{{")?.strip_suffix("}}")?;
    let inner = inner.strip_prefix(['-', '+']).unwrap_or(inner);
    let inner = inner.strip_suffix(['-', '+']).unwrap_or(inner);
    let nested = ["{{", "}}", "{%", "%}", "{#"]
        .iter()
        .any(|t| inner.contains(t));
    (!nested).then_some(inner.trim())
}

fn has_template_syntax(text: &str) -> bool {
    ["{{", "{%", "{#"].iter().any(|t| text.contains(t))
}

pub(crate) struct Compiler<'a> {
    pub file: &'a Path,
    pub diagnostics: Vec<Diagnostic>,
}

impl Compiler<'_> {
    fn error(&mut self, line: usize, column: usize, message: String) {
        self.diagnostics
            .push(Diagnostic::new(self.file, line, column, message));
    }

    pub fn node(&mut self, raw: &Spanned<Raw>, key: &str) -> Node {
        let (line, column) = (
            raw.referenced.line() as usize,
            raw.referenced.column() as usize,
        );
        match &raw.value {
            Raw::Null => Node::Const(serde_json::Value::Null),
            Raw::Bool(b) => Node::Const((*b).into()),
            Raw::Number(n) => Node::Const(serde_json::Value::Number(n.clone())),
            Raw::String(text) if !has_template_syntax(text) => Node::Const(text.clone().into()),
            Raw::String(text) => match self.leaf(text, key, line, column) {
                Some(leaf) => Node::Leaf(leaf),
                None => Node::Const(serde_json::Value::Null),
            },
            Raw::Seq(items) => Node::List(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| self.node(item, &format!("{key}[{i}]")))
                    .collect(),
            ),
            Raw::Map(entries) if entries.iter().any(|(k, _)| k == EACH) => {
                self.each(entries, key, line, column)
            }
            Raw::Map(entries) => {
                let mut out = Vec::with_capacity(entries.len());
                for (name, value) in entries {
                    if (name == TABLES || name == LET) && key.is_empty() {
                        continue;
                    }
                    if name.starts_with('$') {
                        let l = &value.referenced;
                        self.error(
                            l.line() as usize,
                            l.column() as usize,
                            format!(
                                "unknown directive `{name}` at `{}`; expected `{EACH}` (with `{AS}` and `{MAP}`), or `{LET}` / `{TABLES}` at the top level",
                                join(key, name)
                            ),
                        );
                        continue;
                    }
                    let (name, optional) = match name.strip_suffix('?') {
                        Some(bare) => (bare, true),
                        None => (name.as_str(), false),
                    };
                    out.push((
                        name.to_string(),
                        optional,
                        self.node(value, &join(key, name)),
                    ));
                }
                Node::Map(out)
            }
        }
    }

    /// Compiles `$let`: a map of names to templates, in order.
    pub fn lets(&mut self, raw: &Spanned<Raw>) -> Vec<(String, Leaf)> {
        let Raw::Map(entries) = &raw.value else {
            let (line, column) = (
                raw.referenced.line() as usize,
                raw.referenced.column() as usize,
            );
            self.error(line, column, format!("`{LET}` must map names to templates"));
            return Vec::new();
        };
        let mut lets = Vec::new();
        for (name, value) in entries {
            let (line, column) = (
                value.referenced.line() as usize,
                value.referenced.column() as usize,
            );
            match &value.value {
                Raw::String(text) if is_identifier(name) => {
                    if let Some(leaf) = self.leaf(text, &join(LET, name), line, column) {
                        lets.push((name.clone(), leaf));
                    }
                }
                _ => self.error(
                    line,
                    column,
                    format!("`{LET}.{name}` must be a variable name with a template such as \"{{{{ order.shipping_address }}}}\""),
                ),
            }
        }
        lets
    }

    fn leaf(&mut self, text: &str, key: &str, line: usize, column: usize) -> Option<Leaf> {
        let key = if key.is_empty() {
            "(root)".to_string()
        } else {
            key.to_string()
        };
        let kind = match whole_expression(text) {
            Some(expr) => Expr::compile(expr).map(LeafKind::Value),
            None => Template::compile(text).map(LeafKind::Text),
        };
        match kind {
            Ok(kind) => Some(Leaf { key, line, kind }),
            Err(message) => {
                self.error(line, column, format!("template at `{key}`: {message}"));
                None
            }
        }
    }

    fn each(
        &mut self,
        entries: &[(String, Spanned<Raw>)],
        key: &str,
        line: usize,
        column: usize,
    ) -> Node {
        let mut source = None;
        let mut var = "item".to_string();
        let mut body = None;
        let each_key = format!("{key}[]");
        for (name, value) in entries {
            let (l, c) = (
                value.referenced.line() as usize,
                value.referenced.column() as usize,
            );
            match (name.as_str(), &value.value) {
                (EACH, Raw::String(text)) if whole_expression(text).is_some() => {
                    source = self.leaf(text, &join(key, EACH), l, c);
                }
                (EACH, _) => self.error(l, c, format!("`{EACH}` at `{key}` must be exactly \"{{{{ expression }}}}\" giving a list")),
                (AS, Raw::String(name)) if is_identifier(name) => var = name.clone(),
                (AS, _) => self.error(l, c, format!("`{AS}` at `{key}` must be a variable name such as `item`")),
                (MAP, _) => body = Some(self.node(value, &each_key)),
                (other, _) => self.error(l, c, format!("unexpected key `{other}` beside `{EACH}` at `{key}`; expected `{AS}` and `{MAP}`")),
            }
        }
        if body.is_none() {
            self.error(
                line,
                column,
                format!("`{EACH}` at `{key}` needs a `{MAP}` giving each element"),
            );
        }
        match (source, body) {
            (Some(source), Some(body)) => Node::Each {
                source,
                var,
                body: Box::new(body),
            },
            _ => Node::Const(serde_json::Value::Null),
        }
    }
}

/// Converts a constant subtree (e.g. `$tables`) to JSON, reporting templates in it.
pub(crate) fn constant(raw: &Spanned<Raw>) -> serde_json::Value {
    match &raw.value {
        Raw::Null => serde_json::Value::Null,
        Raw::Bool(b) => (*b).into(),
        Raw::Number(n) => serde_json::Value::Number(n.clone()),
        Raw::String(s) => s.clone().into(),
        Raw::Seq(items) => items.iter().map(constant).collect(),
        Raw::Map(entries) => entries
            .iter()
            .map(|(k, v)| (k.clone(), constant(v)))
            .collect(),
    }
}

fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}
