//! A mapping file's YAML tree (read by [`crate::yaml`], every node with its
//! position) compiled into templates and expressions.
//!
//! ```yaml
//! reference: "{{ order.name }}"
//! items:
//!   $each: "{{ order.line_items }}"
//!   $as: item
//!   $map: { name: "{{ item.title }}", quantity: "{{ item.quantity }}" }
//! ```

use super::{Expr, Template};
use crate::diagnostic::{Diagnostics, Position};
use crate::yaml::{Key, Node as Yaml, Value as YamlValue};
use std::path::Path;

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

/// Compiles one mapping file, collecting every problem.
pub(crate) struct Compiler<'a> {
    pub file: &'a Path,
    pub diagnostics: Diagnostics,
}

impl Compiler<'_> {
    fn report(&mut self, at: Position, message: String) {
        self.diagnostics.report(self.file, at, message);
    }

    pub fn node(&mut self, raw: &Yaml, key: &str) -> Node {
        let at = raw.position();
        match &raw.value {
            YamlValue::Null => Node::Const(serde_json::Value::Null),
            YamlValue::Bool(b) => Node::Const((*b).into()),
            YamlValue::Int(_) | YamlValue::UInt(_) => Node::Const(raw.to_json()),
            YamlValue::Float(f) => match serde_json::Number::from_f64(*f) {
                Some(n) => Node::Const(serde_json::Value::Number(n)),
                None => {
                    self.report(at, format!("{f} is not a finite number"));
                    Node::Const(serde_json::Value::Null)
                }
            },
            YamlValue::Str(text) if !has_template_syntax(text) => Node::Const(text.clone().into()),
            YamlValue::Str(text) => match self.leaf(text, key, at) {
                Some(leaf) => Node::Leaf(leaf),
                None => Node::Const(serde_json::Value::Null),
            },
            YamlValue::Seq(items) => Node::List(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| self.node(item, &format!("{key}[{i}]")))
                    .collect(),
            ),
            YamlValue::Map(entries) if entries.iter().any(|(k, _)| k.name == EACH) => {
                self.each(entries, key, at)
            }
            YamlValue::Map(entries) => {
                let mut out = Vec::with_capacity(entries.len());
                for (Key { name, .. }, value) in entries {
                    if (name == TABLES || name == LET) && key.is_empty() {
                        continue;
                    }
                    if name.starts_with('$') {
                        self.report(
                            value.position(),
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
    pub fn lets(&mut self, raw: &Yaml) -> Vec<(String, Leaf)> {
        let YamlValue::Map(entries) = &raw.value else {
            self.report(
                raw.position(),
                format!("`{LET}` must map names to templates"),
            );
            return Vec::new();
        };
        let mut lets = Vec::new();
        for (Key { name, .. }, value) in entries {
            let at = value.position();
            match &value.value {
                YamlValue::Str(text) if is_identifier(name) => {
                    if let Some(leaf) = self.leaf(text, &join(LET, name), at) {
                        lets.push((name.clone(), leaf));
                    }
                }
                _ => self.report(
                    at,
                    format!("`{LET}.{name}` must be a variable name with a template such as \"{{{{ order.shipping_address }}}}\""),
                ),
            }
        }
        lets
    }

    fn leaf(&mut self, text: &str, key: &str, at: Position) -> Option<Leaf> {
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
            Ok(kind) => Some(Leaf {
                key,
                line: at.line,
                kind,
            }),
            Err(message) => {
                self.report(at, format!("template at `{key}`: {message}"));
                None
            }
        }
    }

    fn each(&mut self, entries: &[(Key, Yaml)], key: &str, at: Position) -> Node {
        let mut source = None;
        let mut var = "item".to_string();
        let mut body = None;
        let each_key = format!("{key}[]");
        for (Key { name, .. }, value) in entries {
            let here = value.position();
            match (name.as_str(), &value.value) {
                (EACH, YamlValue::Str(text)) if whole_expression(text).is_some() => {
                    source = self.leaf(text, &join(key, EACH), here);
                }
                (EACH, _) => self.report(here, format!("`{EACH}` at `{key}` must be exactly \"{{{{ expression }}}}\" giving a list")),
                (AS, YamlValue::Str(name)) if is_identifier(name) => var = name.clone(),
                (AS, _) => self.report(here, format!("`{AS}` at `{key}` must be a variable name such as `item`")),
                (MAP, _) => body = Some(self.node(value, &each_key)),
                (other, _) => self.report(here, format!("unexpected key `{other}` beside `{EACH}` at `{key}`; expected `{AS}` and `{MAP}`")),
            }
        }
        if body.is_none() {
            self.report(
                at,
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
