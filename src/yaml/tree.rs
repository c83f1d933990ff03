//! A YAML document parsed once into a tree of [`Node`]s that remember where
//! they were written, so every later check can point at a line and column.
//!
//! ```yaml
//! b:
//!   c: [x, y]     # the node of `c` is at 2:6, its key at 2:3
//! ```

use super::error::Error;
use crate::diagnostic::Position;
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer};
use std::fmt;

/// A parsed YAML value with its position (1-based line and column).
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub line: usize,
    pub column: usize,
    pub value: Value,
    /// Source text where it differs from the value: a plain scalar that YAML
    /// read as a bool or number, so `name: 123` or `token: yes` can still be
    /// read as strings; or a string before `${VAR}` substitution, so a
    /// diagnostic can quote it without the (possibly secret) expansion.
    pub text: Option<String>,
    /// The string came from `${VAR}` substitution, so it may be read as a
    /// number or bool where one is expected, and is quoted as written.
    pub interpolated: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<(Key, Node)>),
}

/// A mapping key with its position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key {
    pub name: String,
    pub line: usize,
    pub column: usize,
}

impl Key {
    pub fn position(&self) -> Position {
        Position::new(self.line, self.column)
    }
}

impl Node {
    /// A node whose value stands as written: no other source text, not
    /// from substitution.
    pub(super) fn written(line: usize, column: usize, value: Value) -> Node {
        Node {
            line,
            column,
            value,
            text: None,
            interpolated: false,
        }
    }

    pub fn position(&self) -> Position {
        Position::new(self.line, self.column)
    }

    /// The key `name` of a mapping node, with its position.
    pub fn key(&self, name: &str) -> Option<&Key> {
        self.entries()?
            .iter()
            .map(|(key, _)| key)
            .find(|key| key.name == name)
    }

    /// The value of key `name` of a mapping node.
    pub fn get(&self, name: &str) -> Option<&Node> {
        self.entries()?
            .iter()
            .find(|(key, _)| key.name == name)
            .map(|(_, node)| node)
    }

    /// Entries of a mapping node, `None` for any other node.
    pub fn entries(&self) -> Option<&[(Key, Node)]> {
        match &self.value {
            Value::Map(entries) => Some(entries),
            _ => None,
        }
    }

    /// What kind of YAML value this is, for messages.
    pub fn kind(&self) -> &'static str {
        match self.value {
            Value::Null => "null",
            Value::Bool(_) => "a bool",
            Value::Int(_) | Value::UInt(_) => "an integer",
            Value::Float(_) => "a number",
            Value::Str(_) => "a string",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a map",
        }
    }

    /// The node as JSON (keys lose their positions).
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match &self.value {
            Value::Null => J::Null,
            Value::Bool(b) => J::Bool(*b),
            Value::Int(i) => J::from(*i),
            Value::UInt(u) => J::from(*u),
            Value::Float(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
            Value::Str(s) => J::String(s.clone()),
            Value::Seq(items) => J::Array(items.iter().map(Node::to_json).collect()),
            Value::Map(entries) => J::Object(
                entries
                    .iter()
                    .map(|(k, v)| (k.name.clone(), v.to_json()))
                    .collect(),
            ),
        }
    }

    /// The scalar as text: strings as they are, bools and numbers as written.
    pub fn scalar_text(&self) -> Option<String> {
        match &self.value {
            Value::Str(s) => Some(s.clone()),
            Value::Bool(b) => Some(self.text.clone().unwrap_or_else(|| b.to_string())),
            Value::Int(i) => Some(self.text.clone().unwrap_or_else(|| i.to_string())),
            Value::UInt(u) => Some(self.text.clone().unwrap_or_else(|| u.to_string())),
            Value::Float(f) => Some(self.text.clone().unwrap_or_else(|| f.to_string())),
            Value::Null | Value::Seq(_) | Value::Map(_) => None,
        }
    }

    /// The value this string was substituted to and the text it was written
    /// as, when it came from `${VAR}` substitution.
    pub fn substituted(&self) -> Option<(&str, &str)> {
        match (&self.value, &self.text) {
            (Value::Str(value), Some(written)) if self.interpolated => Some((value, written)),
            _ => None,
        }
    }

    /// Every string scalar in the tree (not keys), for substitution.
    pub fn strings_mut(&mut self, f: &mut dyn FnMut(&mut Node)) {
        match &mut self.value {
            Value::Str(_) => f(self),
            Value::Seq(items) => items.iter_mut().for_each(|n| n.strings_mut(f)),
            Value::Map(entries) => entries.iter_mut().for_each(|(_, n)| n.strings_mut(f)),
            _ => {}
        }
    }

    /// Removes the mapping entry named by the last key of `path`, returning
    /// the path of the map it was in and the key.
    pub(super) fn remove_entry(&mut self, path: &[Seg]) -> Option<(Vec<Seg>, String)> {
        let last_key = path.iter().rposition(|s| matches!(s, Seg::Key(_)))?;
        let Seg::Key(key) = &path[last_key] else {
            return None;
        };
        let map = self.at_mut(&path[..last_key])?;
        let Value::Map(entries) = &mut map.value else {
            return None;
        };
        let index = entries.iter().position(|(k, _)| &k.name == key)?;
        entries.remove(index);
        Some((path[..last_key].to_vec(), key.clone()))
    }

    fn at_mut(&mut self, path: &[Seg]) -> Option<&mut Node> {
        let Some((first, rest)) = path.split_first() else {
            return Some(self);
        };
        let child = match (&mut self.value, first) {
            (Value::Map(entries), Seg::Key(key)) => entries
                .iter_mut()
                .find(|(k, _)| &k.name == key)
                .map(|(_, n)| n),
            (Value::Seq(items), Seg::Index(i)) => items.get_mut(*i),
            _ => None,
        }?;
        child.at_mut(rest)
    }
}

/// Parses one YAML document. An empty document is a null node.
pub fn parse(text: &str) -> Result<Node, Error> {
    match serde_saphyr::from_str::<serde_saphyr::Spanned<Tree>>(text) {
        Ok(tree) => Ok(into_node(tree, text)),
        Err(err) => {
            let (line, column) = err
                .location()
                .map_or((0, 0), |l| (l.line() as usize, l.column() as usize));
            let message = strip_position(&err.without_snippet().to_string());
            Err(Error::message(Position::new(line, column), message))
        }
    }
}

/// saphyr appends " at line L, column C"; the diagnostic prints the position itself.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}

/// The shape saphyr fills in; turned into a [`Node`] right after parsing.
enum Tree {
    Scalar(Value),
    Seq(Vec<serde_saphyr::Spanned<Tree>>),
    Map(Vec<(serde_saphyr::Spanned<String>, serde_saphyr::Spanned<Tree>)>),
}

/// What a YAML value is read into: a scalar as a [`Value`], a sequence or a
/// mapping from its items and entries, each read as `Item` (and `Key`).
pub(super) trait FromYaml<'de>: Deserialize<'de> {
    const EXPECTING: &'static str;
    type Key: Deserialize<'de>;
    type Item: Deserialize<'de>;
    fn scalar(value: Value) -> Self;
    fn seq(items: Vec<Self::Item>) -> Self;
    fn map(entries: Vec<(Self::Key, Self::Item)>) -> Self;
}

/// The one visitor behind every [`FromYaml`] type.
pub(super) struct YamlVisitor<T>(std::marker::PhantomData<T>);

impl<T> YamlVisitor<T> {
    pub(super) fn new() -> Self {
        YamlVisitor(std::marker::PhantomData)
    }
}

impl<'de, T: FromYaml<'de>> Visitor<'de> for YamlVisitor<T> {
    type Value = T;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(T::EXPECTING)
    }
    fn visit_bool<E>(self, v: bool) -> Result<T, E> {
        Ok(T::scalar(Value::Bool(v)))
    }
    fn visit_i64<E>(self, v: i64) -> Result<T, E> {
        Ok(T::scalar(Value::Int(v)))
    }
    fn visit_u64<E>(self, v: u64) -> Result<T, E> {
        Ok(T::scalar(Value::UInt(v)))
    }
    fn visit_f64<E>(self, v: f64) -> Result<T, E> {
        Ok(T::scalar(Value::Float(v)))
    }
    fn visit_str<E>(self, v: &str) -> Result<T, E> {
        Ok(T::scalar(Value::Str(v.to_string())))
    }
    fn visit_string<E>(self, v: String) -> Result<T, E> {
        Ok(T::scalar(Value::Str(v)))
    }
    fn visit_unit<E>(self) -> Result<T, E> {
        Ok(T::scalar(Value::Null))
    }
    fn visit_none<E>(self) -> Result<T, E> {
        Ok(T::scalar(Value::Null))
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<T, D::Error> {
        T::deserialize(d)
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<T, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(T::seq(items))
    }
    fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<T, A::Error> {
        let mut entries = Vec::new();
        while let Some(entry) = map.next_entry()? {
            entries.push(entry);
        }
        Ok(T::map(entries))
    }
}

impl<'de> FromYaml<'de> for Tree {
    const EXPECTING: &'static str = "any YAML value";
    type Key = serde_saphyr::Spanned<String>;
    type Item = serde_saphyr::Spanned<Tree>;
    fn scalar(value: Value) -> Self {
        Tree::Scalar(value)
    }
    fn seq(items: Vec<Self::Item>) -> Self {
        Tree::Seq(items)
    }
    fn map(entries: Vec<(Self::Key, Self::Item)>) -> Self {
        Tree::Map(entries)
    }
}

impl<'de> Deserialize<'de> for Tree {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(YamlVisitor::new())
    }
}

fn into_node(tree: serde_saphyr::Spanned<Tree>, source: &str) -> Node {
    let loc = tree.referenced;
    let text = || {
        let span = loc.span();
        let start = usize::try_from(span.byte_offset()?).ok()?;
        let len = usize::try_from(span.byte_len()?).ok()?;
        source.get(start..start + len).map(str::to_string)
    };
    let (value, text) = match tree.value {
        Tree::Scalar(
            value @ (Value::Bool(_) | Value::Int(_) | Value::UInt(_) | Value::Float(_)),
        ) => (value, text()),
        Tree::Scalar(value) => (value, None),
        Tree::Seq(items) => (
            Value::Seq(items.into_iter().map(|n| into_node(n, source)).collect()),
            None,
        ),
        Tree::Map(entries) => (
            Value::Map(
                entries
                    .into_iter()
                    .map(|(k, v)| {
                        let key = Key {
                            name: k.value,
                            line: k.referenced.line() as usize,
                            column: k.referenced.column() as usize,
                        };
                        (key, into_node(v, source))
                    })
                    .collect(),
            ),
            None,
        ),
    };
    Node {
        line: loc.line() as usize,
        column: loc.column() as usize,
        value,
        text,
        interpolated: false,
    }
}

/// One step of the way from the document root to a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seg {
    Key(String),
    Index(usize),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_keeps_positions() {
        let node = parse("a: 1\nb:\n  c: [x, y]\n").unwrap();
        let entries = node.entries().unwrap();
        assert_eq!((entries[1].0.line, entries[1].0.column), (2, 1));
        let c = &entries[1].1.entries().unwrap()[0].1;
        assert_eq!((c.line, c.column), (3, 6));
    }

    #[test]
    fn syntax_error_is_located() {
        let err = parse("a: 1\nb: [1, 2\nc: x\n").unwrap_err();
        assert_eq!(err.line, 3);
        assert!(!err.to_string().contains("at line"), "{err}");
    }
}
