//! A YAML document as a tree of nodes that remember where they were written.
//!
//! Files are parsed once into a [`Node`] tree; raw structs are then read from
//! the tree (or a part of it) with [`from_node`], whose errors carry the line
//! and column of the offending key or value. [`parse_lenient`] keeps reading
//! past bad keys so one pass reports all of them. [`Located`] keeps a value's
//! position for checks that happen after deserialization.
//!
//! ```yaml
//! http: { listen: "127.0.0.1:8080" }   # an error in `listen` points at 1:17
//! ```

use serde::de::{self, DeserializeOwned, DeserializeSeed, IntoDeserializer, Visitor};
use serde::{Deserialize, Deserializer};
use std::fmt;

/// Struct name that asks a [`NodeDeserializer`] for a node with its position.
const LOCATED: &str = "$waybill::located";
const LOCATED_FIELDS: &[&str] = &["line", "column", "interpolated", "text", "value"];

/// A parsed YAML value with its position (1-based line and column).
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub line: usize,
    pub column: usize,
    pub value: Value,
    /// Source text of a plain scalar that YAML read as a bool or number, so
    /// `name: 123` or `token: yes` can still be read as strings.
    pub text: Option<String>,
    /// The string came from `${VAR}` substitution, so it may be read as a
    /// number or bool where one is expected.
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

impl Node {
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
    fn remove_entry(&mut self, path: &[Seg]) -> Option<(Vec<Seg>, String)> {
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
            Err(Error {
                line,
                column,
                path: Vec::new(),
                kind: Kind::Message(message),
            })
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
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(String),
    Seq(Vec<serde_saphyr::Spanned<Tree>>),
    Map(Vec<(serde_saphyr::Spanned<String>, serde_saphyr::Spanned<Tree>)>),
}

impl<'de> Deserialize<'de> for Tree {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TreeVisitor;
        impl<'de> Visitor<'de> for TreeVisitor {
            type Value = Tree;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any YAML value")
            }
            fn visit_bool<E>(self, v: bool) -> Result<Tree, E> {
                Ok(Tree::Bool(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Tree, E> {
                Ok(Tree::Int(v))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Tree, E> {
                Ok(Tree::UInt(v))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Tree, E> {
                Ok(Tree::Float(v))
            }
            fn visit_str<E>(self, v: &str) -> Result<Tree, E> {
                Ok(Tree::Str(v.to_string()))
            }
            fn visit_string<E>(self, v: String) -> Result<Tree, E> {
                Ok(Tree::Str(v))
            }
            fn visit_unit<E>(self) -> Result<Tree, E> {
                Ok(Tree::Null)
            }
            fn visit_none<E>(self) -> Result<Tree, E> {
                Ok(Tree::Null)
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Tree, D::Error> {
                Tree::deserialize(d)
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Tree, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(Tree::Seq(items))
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Tree, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    entries.push(entry);
                }
                Ok(Tree::Map(entries))
            }
        }
        deserializer.deserialize_any(TreeVisitor)
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
        Tree::Null => (Value::Null, None),
        Tree::Bool(b) => (Value::Bool(b), text()),
        Tree::Int(i) => (Value::Int(i), text()),
        Tree::UInt(u) => (Value::UInt(u), text()),
        Tree::Float(f) => (Value::Float(f), text()),
        Tree::Str(s) => (Value::Str(s), None),
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

/// A problem found while reading a raw struct from a node.
#[derive(Debug, Clone, PartialEq)]
pub struct Error {
    /// 0 until the error is pinned to the node it came from.
    pub line: usize,
    pub column: usize,
    /// Where the error is, from the node deserialization started at.
    pub path: Vec<Seg>,
    kind: Kind,
}

#[derive(Debug, Clone, PartialEq)]
enum Kind {
    Message(String),
    UnknownField {
        field: String,
        expected: &'static [&'static str],
    },
    UnknownVariant {
        variant: String,
        expected: &'static [&'static str],
    },
    MissingField(&'static str),
}

impl Error {
    fn pin(mut self, line: usize, column: usize, path: &[Seg]) -> Self {
        if self.line == 0 {
            self.line = line;
            self.column = column;
            self.path = path.to_vec();
        }
        self
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Message(m) => f.write_str(m),
            Kind::UnknownField { field, expected } => {
                write!(f, "unknown key `{field}`")?;
                if let Some(s) = did_you_mean(field, expected.iter().copied()) {
                    write!(f, " (did you mean `{s}`?)")?;
                }
                write!(f, "; expected one of: {}", expected.join(", "))
            }
            Kind::UnknownVariant { variant, expected } => {
                write!(f, "unknown value `{variant}`")?;
                if let Some(s) = did_you_mean(variant, expected.iter().copied()) {
                    write!(f, " (did you mean `{s}`?)")?;
                }
                write!(f, "; expected one of: {}", expected.join(", "))
            }
            Kind::MissingField(field) => write!(f, "missing key `{field}`"),
        }
    }
}

impl std::error::Error for Error {}

impl de::Error for Error {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Error {
            line: 0,
            column: 0,
            path: Vec::new(),
            kind: Kind::Message(msg.to_string()),
        }
    }
    fn unknown_field(field: &str, expected: &'static [&'static str]) -> Self {
        Error {
            line: 0,
            column: 0,
            path: Vec::new(),
            kind: Kind::UnknownField {
                field: field.to_string(),
                expected,
            },
        }
    }
    fn unknown_variant(variant: &str, expected: &'static [&'static str]) -> Self {
        Error {
            line: 0,
            column: 0,
            path: Vec::new(),
            kind: Kind::UnknownVariant {
                variant: variant.to_string(),
                expected,
            },
        }
    }
    fn missing_field(field: &'static str) -> Self {
        Error {
            line: 0,
            column: 0,
            path: Vec::new(),
            kind: Kind::MissingField(field),
        }
    }
}

/// The closest candidate to a misspelt `word`, if one is close enough.
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let limit = (word.chars().count() / 3).max(1);
    candidates
        .into_iter()
        .map(|c| (edit_distance(word, c), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = diagonal + usize::from(ca != *cb);
            diagonal = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(diagonal + 1);
        }
    }
    row[b.len()]
}

/// Reads `T` from `node`; the error points at the key or value at fault.
pub fn from_node<T: DeserializeOwned>(node: &Node) -> Result<T, Error> {
    T::deserialize(NodeDeserializer {
        node,
        path: Vec::new(),
    })
}

/// Reads `T` from `node`, reporting every bad key: each error is recorded in
/// `errors`, the entry at fault is dropped and reading starts again. Returns
/// `None` when what is left cannot make a `T`.
pub fn parse_lenient<T: DeserializeOwned>(node: &Node, errors: &mut Vec<Error>) -> Option<T> {
    let mut node = node.clone();
    // Dropped entries: the map's path and the names the entry stood for (its
    // key, and the key it was probably meant to be).
    let mut dropped: Vec<(Vec<Seg>, Vec<String>)> = Vec::new();
    loop {
        let err = match from_node::<T>(&node) {
            Ok(value) => return Some(value),
            Err(err) => err,
        };
        // A key already reported (dropped, or misspelt) is not reported missing too.
        let already_reported = match &err.kind {
            Kind::MissingField(field) => dropped
                .iter()
                .any(|(p, names)| p == &err.path && names.iter().any(|n| n == field)),
            _ => false,
        };
        if !already_reported {
            errors.push(err.clone());
        }
        let (map, key) = node.remove_entry(&err.path)?;
        let mut names = vec![key];
        if let Kind::UnknownField { field, expected } = &err.kind {
            names.extend(did_you_mean(field, expected.iter().copied()).map(str::to_string));
        }
        dropped.push((map, names));
    }
}

/// A value with the position it was written at.
#[derive(Debug, Clone, PartialEq)]
pub struct Located<T> {
    pub value: T,
    pub line: usize,
    pub column: usize,
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Located<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct LocatedVisitor<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for LocatedVisitor<T> {
            type Value = Located<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a value read from a configuration node")
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Located<T>, A::Error> {
                let (mut line, mut column, mut value) = (0, 0, None);
                while let Some(key) = map.next_key::<&str>()? {
                    match key {
                        "line" => line = map.next_value()?,
                        "column" => column = map.next_value()?,
                        "value" => value = Some(map.next_value()?),
                        _ => {
                            map.next_value::<de::IgnoredAny>()?;
                        }
                    }
                }
                let value = value.ok_or_else(|| de::Error::missing_field("value"))?;
                Ok(Located {
                    value,
                    line,
                    column,
                })
            }
        }
        deserializer.deserialize_struct(
            LOCATED,
            LOCATED_FIELDS,
            LocatedVisitor(std::marker::PhantomData),
        )
    }
}

/// A node kept whole inside a raw struct, to be read on its own later.
impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct NodeVisitor;
        impl<'de> Visitor<'de> for NodeVisitor {
            type Value = Node;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a configuration node")
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
                let mut node = Node {
                    line: 0,
                    column: 0,
                    value: Value::Null,
                    text: None,
                    interpolated: false,
                };
                while let Some(key) = map.next_key::<&str>()? {
                    match key {
                        "line" => node.line = map.next_value()?,
                        "column" => node.column = map.next_value()?,
                        "interpolated" => node.interpolated = map.next_value()?,
                        "text" => node.text = map.next_value()?,
                        "value" => node.value = map.next_value::<NodeValue>()?.0,
                        _ => {
                            map.next_value::<de::IgnoredAny>()?;
                        }
                    }
                }
                Ok(node)
            }
        }
        deserializer.deserialize_struct(LOCATED, LOCATED_FIELDS, NodeVisitor)
    }
}

struct NodeValue(Value);

impl<'de> Deserialize<'de> for NodeValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ValueVisitor;
        impl<'de> Visitor<'de> for ValueVisitor {
            type Value = NodeValue;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any value")
            }
            fn visit_bool<E>(self, v: bool) -> Result<NodeValue, E> {
                Ok(NodeValue(Value::Bool(v)))
            }
            fn visit_i64<E>(self, v: i64) -> Result<NodeValue, E> {
                Ok(NodeValue(Value::Int(v)))
            }
            fn visit_u64<E>(self, v: u64) -> Result<NodeValue, E> {
                Ok(NodeValue(Value::UInt(v)))
            }
            fn visit_f64<E>(self, v: f64) -> Result<NodeValue, E> {
                Ok(NodeValue(Value::Float(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<NodeValue, E> {
                Ok(NodeValue(Value::Str(v.to_string())))
            }
            fn visit_unit<E>(self) -> Result<NodeValue, E> {
                Ok(NodeValue(Value::Null))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<NodeValue, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element::<Node>()? {
                    items.push(item);
                }
                Ok(NodeValue(Value::Seq(items)))
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<NodeValue, A::Error> {
                let mut entries = Vec::new();
                while let Some(key) = map.next_key::<Located<String>>()? {
                    let value = map.next_value::<Node>()?;
                    entries.push((
                        Key {
                            name: key.value,
                            line: key.line,
                            column: key.column,
                        },
                        value,
                    ));
                }
                Ok(NodeValue(Value::Map(entries)))
            }
        }
        deserializer.deserialize_any(ValueVisitor)
    }
}

/// Serde deserializer over a [`Node`]; every error is pinned to a position.
struct NodeDeserializer<'a> {
    node: &'a Node,
    path: Vec<Seg>,
}

impl<'a> NodeDeserializer<'a> {
    fn pin<T>(&self, result: Result<T, Error>) -> Result<T, Error> {
        result.map_err(|e| e.pin(self.node.line, self.node.column, &self.path))
    }

    fn child(&self, node: &'a Node, seg: Seg) -> NodeDeserializer<'a> {
        let mut path = self.path.clone();
        path.push(seg);
        NodeDeserializer { node, path }
    }

    /// An interpolated string read where a number or bool is expected.
    fn coerced(&self) -> Option<Value> {
        let Value::Str(s) = &self.node.value else {
            return None;
        };
        if !self.node.interpolated {
            return None;
        }
        let s = s.trim();
        if let Ok(u) = s.parse::<u64>() {
            Some(Value::UInt(u))
        } else if let Ok(i) = s.parse::<i64>() {
            Some(Value::Int(i))
        } else if let Ok(f) = s.parse::<f64>() {
            Some(Value::Float(f))
        } else {
            match s {
                "true" => Some(Value::Bool(true)),
                "false" => Some(Value::Bool(false)),
                _ => None,
            }
        }
    }

    fn visit_value<'de, V: Visitor<'de>>(&self, visitor: V) -> Result<V::Value, Error> {
        let result = match &self.node.value {
            Value::Seq(items) => visitor.visit_seq(SeqAccess {
                de: self,
                items: items.iter().enumerate(),
            }),
            Value::Map(entries) => visitor.visit_map(MapAccess {
                de: self,
                entries: entries.iter(),
                value: None,
            }),
            scalar => visit_scalar(scalar, visitor),
        };
        self.pin(result)
    }

    fn visit_number<'de, V: Visitor<'de>>(&self, visitor: V) -> Result<V::Value, Error> {
        match self.coerced() {
            Some(value) => self.pin(visit_scalar(&value, visitor)),
            None => self.visit_value(visitor),
        }
    }
}

fn visit_scalar<'de, V: Visitor<'de>>(value: &Value, visitor: V) -> Result<V::Value, Error> {
    match value {
        Value::Bool(b) => visitor.visit_bool(*b),
        Value::Int(i) => visitor.visit_i64(*i),
        Value::UInt(u) => visitor.visit_u64(*u),
        Value::Float(f) => visitor.visit_f64(*f),
        Value::Str(s) => visitor.visit_str(s),
        Value::Null | Value::Seq(_) | Value::Map(_) => visitor.visit_unit(),
    }
}

impl<'de, 'a> Deserializer<'de> for NodeDeserializer<'a> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.visit_value(visitor)
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.visit_number(visitor)
    }
    fn deserialize_i8<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.visit_number(visitor)
    }
    fn deserialize_i16<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.visit_number(visitor)
    }
    fn deserialize_i32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.visit_number(visitor)
    }
    fn deserialize_i64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.visit_number(visitor)
    }
    fn deserialize_u8<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.visit_number(visitor)
    }
    fn deserialize_u16<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.visit_number(visitor)
    }
    fn deserialize_u32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.visit_number(visitor)
    }
    fn deserialize_u64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.visit_number(visitor)
    }
    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.visit_number(visitor)
    }
    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.visit_number(visitor)
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match (&self.node.value, self.node.scalar_text()) {
            (Value::Str(_), _) | (_, None) => self.visit_value(visitor),
            (_, Some(text)) => self.pin(visitor.visit_string(text)),
        }
    }
    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_str(visitor)
    }
    fn deserialize_char<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_str(visitor)
    }
    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_str(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.node.value {
            Value::Null => self.pin(visitor.visit_none()),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        if name == LOCATED {
            let result = visitor.visit_map(LocatedAccess { de: &self, next: 0 });
            return self.pin(result);
        }
        match &self.node.value {
            Value::Map(_) => self.visit_value(visitor),
            _ => {
                let message = format!("expected a map, found {}", self.node.kind());
                self.pin(Err(de::Error::custom(message)))
            }
        }
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        let result = match &self.node.value {
            Value::Map(entries) if entries.len() == 1 => {
                let (key, value) = &entries[0];
                visitor.visit_enum(EnumAccess {
                    de: &self,
                    key,
                    value,
                })
            }
            Value::Map(entries) => {
                let keys: Vec<&str> = entries.iter().map(|(k, _)| k.name.as_str()).collect();
                Err(de::Error::custom(format!(
                    "expected a map with exactly one key, found keys: {}",
                    keys.join(", ")
                )))
            }
            _ => match self.node.scalar_text() {
                Some(text) => visitor.visit_enum(text.into_deserializer()),
                None => Err(de::Error::custom(format!(
                    "expected a name, found {}",
                    self.node.kind()
                ))),
            },
        };
        self.pin(result)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_unit()
    }

    serde::forward_to_deserialize_any! {
        bytes byte_buf unit unit_struct seq tuple tuple_struct map
    }
}

struct LocatedAccess<'b, 'a> {
    de: &'b NodeDeserializer<'a>,
    next: usize,
}

impl<'de> de::MapAccess<'de> for LocatedAccess<'_, '_> {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        let Some(field) = LOCATED_FIELDS.get(self.next) else {
            return Ok(None);
        };
        seed.deserialize(de::value::BorrowedStrDeserializer::new(field))
            .map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        let node = self.de.node;
        let field = LOCATED_FIELDS.get(self.next).copied();
        self.next += 1;
        match field {
            Some("line") => seed.deserialize(node.line.into_deserializer()),
            Some("column") => seed.deserialize(node.column.into_deserializer()),
            Some("interpolated") => seed.deserialize(node.interpolated.into_deserializer()),
            Some("text") => {
                let value = node.text.clone().map_or(Value::Null, Value::Str);
                let text = Node {
                    line: node.line,
                    column: node.column,
                    value,
                    text: None,
                    interpolated: false,
                };
                seed.deserialize(NodeDeserializer {
                    node: &text,
                    path: self.de.path.clone(),
                })
            }
            _ => seed.deserialize(NodeDeserializer {
                node,
                path: self.de.path.clone(),
            }),
        }
    }
}

struct SeqAccess<'b, 'a> {
    de: &'b NodeDeserializer<'a>,
    items: std::iter::Enumerate<std::slice::Iter<'a, Node>>,
}

impl<'de> de::SeqAccess<'de> for SeqAccess<'_, '_> {
    type Error = Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Error> {
        match self.items.next() {
            Some((i, node)) => seed
                .deserialize(self.de.child(node, Seg::Index(i)))
                .map(Some),
            None => Ok(None),
        }
    }
}

struct MapAccess<'b, 'a> {
    de: &'b NodeDeserializer<'a>,
    entries: std::slice::Iter<'a, (Key, Node)>,
    value: Option<(&'a Key, &'a Node)>,
}

impl<'de> de::MapAccess<'de> for MapAccess<'_, '_> {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        let Some((key, value)) = self.entries.next() else {
            return Ok(None);
        };
        self.value = Some((key, value));
        let key_de = KeyDeserializer {
            key,
            path: self.de.child(value, Seg::Key(key.name.clone())).path,
        };
        seed.deserialize(key_de).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        match self.value.take() {
            Some((key, value)) => {
                seed.deserialize(self.de.child(value, Seg::Key(key.name.clone())))
            }
            None => Err(de::Error::custom("value requested before key")),
        }
    }
}

struct EnumAccess<'b, 'a> {
    de: &'b NodeDeserializer<'a>,
    key: &'a Key,
    value: &'a Node,
}

impl<'de, 'b, 'a> de::EnumAccess<'de> for EnumAccess<'b, 'a> {
    type Error = Error;
    type Variant = NodeDeserializer<'a>;

    fn variant_seed<V: DeserializeSeed<'de>>(
        self,
        seed: V,
    ) -> Result<(V::Value, Self::Variant), Error> {
        let value_de = self.de.child(self.value, Seg::Key(self.key.name.clone()));
        let key_de = KeyDeserializer {
            key: self.key,
            path: value_de.path.clone(),
        };
        let variant = seed.deserialize(key_de)?;
        Ok((variant, value_de))
    }
}

impl<'de> de::VariantAccess<'de> for NodeDeserializer<'_> {
    type Error = Error;

    fn unit_variant(self) -> Result<(), Error> {
        match self.node.value {
            Value::Null => Ok(()),
            _ => self.pin(Err(de::Error::custom("expected nothing after this key"))),
        }
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, Error> {
        seed.deserialize(self)
    }

    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_any(visitor)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_struct("", fields, visitor)
    }
}

/// A mapping key: errors (an unknown key) point at the key itself.
struct KeyDeserializer<'a> {
    key: &'a Key,
    path: Vec<Seg>,
}

impl<'de> Deserializer<'de> for KeyDeserializer<'_> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let result = visitor.visit_str::<Error>(&self.key.name);
        result.map_err(|e| e.pin(self.key.line, self.key.column, &self.path))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        if name != LOCATED {
            return self.deserialize_any(visitor);
        }
        let node = Node {
            line: self.key.line,
            column: self.key.column,
            value: Value::Str(self.key.name.clone()),
            text: None,
            interpolated: false,
        };
        let de = NodeDeserializer {
            node: &node,
            path: self.path.clone(),
        };
        visitor.visit_map(LocatedAccess { de: &de, next: 0 })
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map enum identifier ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Inner {
        listen: String,
        port: Option<u16>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Outer {
        name: Located<String>,
        http: Option<Inner>,
        rest: Option<Node>,
    }

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

    #[test]
    fn unknown_key_points_at_key_and_suggests() {
        let node = parse("name: x\nhttp:\n  listn: a\n").unwrap();
        let err = from_node::<Outer>(&node).unwrap_err();
        assert_eq!((err.line, err.column), (3, 3));
        assert!(err.to_string().contains("did you mean `listen`"), "{err}");
    }

    #[test]
    fn type_error_points_at_value() {
        let node = parse("name: x\nhttp: { listen: a, port: [1] }\n").unwrap();
        let err = from_node::<Outer>(&node).unwrap_err();
        assert_eq!((err.line, err.column), (2, 26));
    }

    #[test]
    fn missing_key_points_at_its_map() {
        let node = parse("name: x\nhttp: { port: 1 }\n").unwrap();
        let err = from_node::<Outer>(&node).unwrap_err();
        assert_eq!(err.to_string(), "missing key `listen`");
        assert_eq!((err.line, err.column), (2, 7));
    }

    #[test]
    fn located_and_kept_nodes() {
        let node = parse("name: x\nrest: { a: [1, b] }\n").unwrap();
        let outer = from_node::<Outer>(&node).unwrap();
        assert_eq!(
            (
                outer.name.value.as_str(),
                outer.name.line,
                outer.name.column
            ),
            ("x", 1, 7)
        );
        let rest = outer.rest.unwrap();
        assert_eq!(rest.to_json(), serde_json::json!({"a": [1, "b"]}));
        let a = &rest.entries().unwrap()[0];
        assert_eq!((a.0.line, a.0.column, a.1.line, a.1.column), (2, 9, 2, 12));
    }

    #[test]
    fn plain_scalars_read_as_strings() {
        let node = parse("name: yes\nhttp: { listen: 8080 }\n").unwrap();
        let outer = from_node::<Outer>(&node).unwrap();
        assert_eq!(outer.name.value, "yes");
        assert_eq!(outer.http.unwrap().listen, "8080");
    }

    #[test]
    fn interpolated_strings_read_as_numbers() {
        let mut node = parse("name: x\nhttp: { listen: a, port: '80' }\n").unwrap();
        assert!(from_node::<Outer>(&node).is_err());
        node.strings_mut(&mut |n| n.interpolated = true);
        assert_eq!(
            from_node::<Outer>(&node).unwrap().http.unwrap().port,
            Some(80)
        );
    }

    #[test]
    fn lenient_reports_every_bad_key() {
        let node =
            parse("nam: x\nname: y\nhttp: { lisen: a, port: 1, extra: 2 }\nbogus: 1\n").unwrap();
        let mut errors = Vec::new();
        let outer = parse_lenient::<Outer>(&node, &mut errors).unwrap();
        let lines: Vec<_> = errors.iter().map(|e| (e.line, e.column)).collect();
        assert_eq!(lines, vec![(1, 1), (3, 9), (3, 28), (4, 1)], "{errors:?}");
        assert_eq!(outer.name.value, "y");
        assert!(outer.http.is_none());
    }

    #[test]
    fn lenient_does_not_report_a_dropped_key_as_missing() {
        let node = parse("name: [1]\n").unwrap();
        let mut errors = Vec::new();
        assert!(parse_lenient::<Outer>(&node, &mut errors).is_none());
        assert_eq!(errors.len(), 1, "{errors:?}");
    }

    #[test]
    fn suggestions() {
        assert_eq!(did_you_mean("postx", ["postex", "sandbox"]), Some("postex"));
        assert_eq!(did_you_mean("zzz", ["postex", "sandbox"]), None);
    }
}
