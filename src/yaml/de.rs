//! Serde over a [`Node`] tree: raw structs are read from a node (or a part
//! of it) with [`from_node`], whose errors carry the line and column of the
//! offending key or value. [`parse_lenient`] keeps reading past bad keys so
//! one pass reports all of them. [`Located`] keeps a value's position for
//! checks that happen after deserialization, and a [`Node`] field keeps a
//! part whole, to be read on its own later.
//!
//! ```yaml
//! http: { listen: "127.0.0.1:8080" }   # an error in `listen` points at 1:17
//! ```

use super::error::{Error, Kind};
use super::tree::{FromYaml, Key, Node, Seg, Value, YamlVisitor};
use crate::diagnostic::{Position, did_you_mean};
use serde::de::{self, DeserializeOwned, DeserializeSeed, IntoDeserializer, Visitor};
use serde::{Deserialize, Deserializer};
use std::fmt;

/// Struct name that asks a [`NodeDeserializer`] for a node with its position.
const LOCATED: &str = "$waybill::located";
const LOCATED_FIELDS: &[&str] = &["line", "column", "interpolated", "text", "value"];

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
    /// The text as written when the value came from `${VAR}` substitution.
    pub written: Option<String>,
}

impl<T> Located<T> {
    pub fn position(&self) -> Position {
        Position::new(self.line, self.column)
    }
}

impl Located<String> {
    /// The value as a diagnostic may quote it: as written, so a `${VAR}`
    /// is shown as `${VAR}` and never as what it expanded to.
    pub fn shown(&self) -> &str {
        self.written.as_deref().unwrap_or(&self.value)
    }

    /// `message`, which may quote the value (an error from a parser given
    /// it), with the value quoted as written.
    pub fn quote_as_written(&self, message: &str) -> String {
        match &self.written {
            Some(written) => super::quote_as_written(message, &self.value, written),
            None => message.to_string(),
        }
    }
}

/// The fields a [`NodeDeserializer`] hands out for a node with its position.
struct Parts<V> {
    line: usize,
    column: usize,
    interpolated: bool,
    text: Option<String>,
    value: Option<V>,
}

impl<'de, V: Deserialize<'de>> Parts<V> {
    fn deserialize<D: Deserializer<'de>>(
        deserializer: D,
        expecting: &'static str,
    ) -> Result<Self, D::Error> {
        struct PartsVisitor<V> {
            expecting: &'static str,
            value: std::marker::PhantomData<V>,
        }
        impl<'de, V: Deserialize<'de>> Visitor<'de> for PartsVisitor<V> {
            type Value = Parts<V>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(self.expecting)
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Parts<V>, A::Error> {
                let mut parts = Parts {
                    line: 0,
                    column: 0,
                    interpolated: false,
                    text: None,
                    value: None,
                };
                while let Some(key) = map.next_key::<&str>()? {
                    match key {
                        "line" => parts.line = map.next_value()?,
                        "column" => parts.column = map.next_value()?,
                        "interpolated" => parts.interpolated = map.next_value()?,
                        "text" => parts.text = map.next_value()?,
                        "value" => parts.value = Some(map.next_value()?),
                        _ => {
                            map.next_value::<de::IgnoredAny>()?;
                        }
                    }
                }
                Ok(parts)
            }
        }
        deserializer.deserialize_struct(
            LOCATED,
            LOCATED_FIELDS,
            PartsVisitor {
                expecting,
                value: std::marker::PhantomData,
            },
        )
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Located<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let parts =
            Parts::<T>::deserialize(deserializer, "a value read from a configuration node")?;
        let value = parts
            .value
            .ok_or_else(|| de::Error::missing_field("value"))?;
        Ok(Located {
            value,
            line: parts.line,
            column: parts.column,
            written: parts.text.filter(|_| parts.interpolated),
        })
    }
}

/// A node kept whole inside a raw struct, to be read on its own later.
impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let parts = Parts::<NodeValue>::deserialize(deserializer, "a configuration node")?;
        Ok(Node {
            line: parts.line,
            column: parts.column,
            value: parts.value.map_or(Value::Null, |v| v.0),
            text: parts.text,
            interpolated: parts.interpolated,
        })
    }
}

struct NodeValue(Value);

impl<'de> FromYaml<'de> for NodeValue {
    const EXPECTING: &'static str = "any value";
    type Key = Located<String>;
    type Item = Node;
    fn scalar(value: Value) -> Self {
        NodeValue(value)
    }
    fn seq(items: Vec<Node>) -> Self {
        NodeValue(Value::Seq(items))
    }
    fn map(entries: Vec<(Located<String>, Node)>) -> Self {
        let entries = entries
            .into_iter()
            .map(|(key, value)| {
                let key = Key {
                    name: key.value,
                    line: key.line,
                    column: key.column,
                };
                (key, value)
            })
            .collect();
        NodeValue(Value::Map(entries))
    }
}

impl<'de> Deserialize<'de> for NodeValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(YamlVisitor::new())
    }
}

/// Serde deserializer over a [`Node`]; every error is pinned to a position.
struct NodeDeserializer<'a> {
    node: &'a Node,
    path: Vec<Seg>,
}

impl<'a> NodeDeserializer<'a> {
    /// Pins an error not pinned yet to this node; one about a value from
    /// `${VAR}` substitution quotes it as written.
    fn pin<T>(&self, result: Result<T, Error>) -> Result<T, Error> {
        result.map_err(|e| {
            let e = match self.node.substituted() {
                Some((value, written)) if e.line == 0 => e.quoting_as_written(value, written),
                _ => e,
            };
            e.pin(self.node.line, self.node.column, &self.path)
        })
    }

    /// `seed` read from this node, with whatever error it makes pinned here,
    /// including one a `Deserialize` impl makes after reading the value.
    fn read<'de, S: DeserializeSeed<'de>>(self, seed: S) -> Result<S::Value, Error> {
        let at = NodeDeserializer {
            node: self.node,
            path: self.path.clone(),
        };
        at.pin(seed.deserialize(self))
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
                let text = Node::written(node.line, node.column, value);
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
            Some((i, node)) => self.de.child(node, Seg::Index(i)).read(seed).map(Some),
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
            Some((key, value)) => self.de.child(value, Seg::Key(key.name.clone())).read(seed),
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
        self.read(seed)
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
        let node = Node::written(
            self.key.line,
            self.key.column,
            Value::Str(self.key.name.clone()),
        );
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
    use super::super::tree::parse;
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
}
