//! Strict JSON for store bodies: one JSON value in which no object names a
//! member twice, at any depth.
//!
//! JSON leaves a repeated name undefined, and readers differ: one takes the
//! first, another the last. A body like `{"id": 1, …, "id": 2}` could then
//! be enqueued under one order id and booked under the other, so both
//! ingest and the pipeline runner read bodies through this module and
//! refuse such a body. Nesting is bounded by `serde_json`'s recursion limit
//! (128), which applies to every value read here.
//!
//! - [`parse`] builds the whole value (the runner, `try`).
//! - [`member`] reads one top-level member and checks the rest without
//!   building it (ingest's usual `$.id`).

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};
use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::HashSet;
use std::fmt;

/// Longest member name quoted in an error: the name is outside input.
const NAME_SHOWN: usize = 64;

/// Why a body is not strict JSON.
#[derive(Debug, thiserror::Error)]
pub enum JsonError {
    /// Not one JSON value (or not the shape asked for).
    #[error("{0}")]
    Invalid(#[source] serde_json::Error),
    /// An object names a member twice, so the body could be read two ways.
    #[error(
        "member name {name:?} appears twice in one object (line {line}, column {column}): the body could be read two ways"
    )]
    DuplicateKey {
        /// The name, cut to a bounded length.
        name: String,
        line: usize,
        column: usize,
    },
}

/// Parses `bytes` as one JSON value with no repeated member name.
pub fn parse(bytes: &[u8]) -> Result<Value, JsonError> {
    let repeated = RefCell::new(None);
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let result = Build(&repeated)
        .deserialize(&mut de)
        .and_then(|value| de.end().map(|()| value));
    result.map_err(|e| error(e, repeated))
}

/// The top-level member `name` of the JSON object in `text` (`None` when
/// it has none), having checked the whole body as [`parse`] does, in the
/// same single pass, but without building the other members (about half
/// the time of building them all, for a typical order).
pub fn member(text: &str, name: &str) -> Result<Option<Value>, JsonError> {
    let repeated = RefCell::new(None);
    let mut de = serde_json::Deserializer::from_str(text);
    let seed = Member {
        name,
        repeated: &repeated,
    };
    let result = seed
        .deserialize(&mut de)
        .and_then(|found| de.end().map(|()| found));
    result.map_err(|e| error(e, repeated))
}

/// The error to give: a repeated name recorded on the way, located where
/// `serde_json` stopped, or `serde_json`'s own.
fn error(e: serde_json::Error, repeated: RefCell<Option<String>>) -> JsonError {
    match repeated.into_inner() {
        Some(name) => JsonError::DuplicateKey {
            name: name.chars().take(NAME_SHOWN).collect(),
            line: e.line(),
            column: e.column(),
        },
        None => JsonError::Invalid(e),
    }
}

/// Where a repeated name is recorded: the error `serde_json` passes back
/// is a message, and this keeps it apart from a syntax error.
type Repeated<'a> = &'a RefCell<Option<String>>;

fn refuse<E: de::Error>(repeated: Repeated<'_>, name: &str) -> E {
    *repeated.borrow_mut() = Some(name.to_string());
    E::custom("duplicate member name")
}

/// Builds a [`Value`], refusing a repeated name.
#[derive(Clone, Copy)]
struct Build<'a>(Repeated<'a>);

impl<'de> DeserializeSeed<'de> for Build<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Build<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(item) = seq.next_element_seed(self)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut members = Map::new();
        while let Some(name) = map.next_key::<String>()? {
            if members.contains_key(&name) {
                return Err(refuse(self.0, &name));
            }
            let value = map.next_value_seed(self)?;
            members.insert(name, value);
        }
        Ok(Value::Object(members))
    }
}

/// The member names one object has used so far: a short list for the
/// usual small object, a set once it grows, so that an object of many
/// members costs no more than a set.
#[derive(Default)]
struct Names<'de> {
    few: Vec<Cow<'de, str>>,
    many: HashSet<Cow<'de, str>>,
}

impl<'de> Names<'de> {
    const FEW: usize = 16;

    /// Adds `name`; false when the object already used it.
    fn add(&mut self, name: Cow<'de, str>) -> bool {
        if self.many.is_empty() && self.few.len() < Self::FEW {
            if self.few.contains(&name) {
                return false;
            }
            self.few.push(name);
            return true;
        }
        if self.many.is_empty() {
            self.many.extend(self.few.drain(..));
        }
        self.many.insert(name)
    }
}

/// A member name, borrowed from the body when it holds no escapes.
struct Name;

impl<'de> DeserializeSeed<'de> for Name {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Name {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a member name")
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_string()))
    }
}

/// Reads a value through, building nothing, refusing a repeated name.
#[derive(Clone, Copy)]
struct Check<'a>(Repeated<'a>);

impl<'de> DeserializeSeed<'de> for Check<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Check<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(self)?.is_some() {}
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut names = Names::default();
        while let Some(name) = map.next_key_seed(Name)? {
            if !names.add(name.clone()) {
                return Err(refuse(self.0, &name));
            }
            map.next_value_seed(self)?;
        }
        Ok(())
    }
}

/// The top-level object: one member built, the others checked.
struct Member<'a> {
    name: &'a str,
    repeated: Repeated<'a>,
}

impl<'de> DeserializeSeed<'de> for Member<'_> {
    type Value = Option<Value>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Member<'_> {
    type Value = Option<Value>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut names = Names::default();
        let mut found = None;
        while let Some(name) = map.next_key_seed(Name)? {
            let wanted = name == self.name;
            if !names.add(name.clone()) {
                return Err(refuse(self.repeated, &name));
            }
            if wanted {
                found = Some(map.next_value_seed(Build(self.repeated))?);
            } else {
                map.next_value_seed(Check(self.repeated))?;
            }
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn duplicate(result: Result<impl fmt::Debug, JsonError>) -> String {
        match result {
            Err(JsonError::DuplicateKey { name, .. }) => name,
            other => panic!("expected a duplicate key, got {other:?}"),
        }
    }

    #[test]
    fn parses_what_serde_json_parses() {
        let text = r#"{"id": 820982911946154508, "a": [1, -2, 1.5, "x", null, true, {}], "b": {"c": "d"}}"#;
        let strict = parse(text.as_bytes()).unwrap();
        assert_eq!(strict, serde_json::from_str::<Value>(text).unwrap());
        assert_eq!(strict["id"], json!(820982911946154508u64));
        assert_eq!(
            member(text, "b").unwrap(),
            Some(json!({"c": "d"})),
            "one member, built"
        );
        assert_eq!(member(text, "zz").unwrap(), None);
    }

    #[test]
    fn a_repeated_name_at_any_depth_is_refused() {
        let bodies: [&[u8]; 5] = [
            br#"{"id":9100013,"x":1,"id":9100014}"#,
            br#"{"id":1,"shipping_address":{"city":"a","city":"b"}}"#,
            br#"{"id":1,"items":[{"sku":1},{"sku":2,"sku":3}]}"#,
            br#"{"\u0069d":7,"id":8}"#,
            br#"[[{"k":[{"a":1,"a":1}]}]]"#,
        ];
        for body in bodies {
            let name = duplicate(parse(body));
            assert!(
                ["id", "city", "sku", "a"].contains(&name.as_str()),
                "{name}"
            );
            if body.starts_with(b"{") {
                let text = std::str::from_utf8(body).unwrap();
                assert_eq!(duplicate(member(text, "id")), name);
            }
        }
        let many: String = (0..5000).map(|i| format!("\"k{i}\":{i},")).collect();
        let body = format!("{{{many}\"k4999\":0}}");
        assert_eq!(duplicate(member(&body, "id")), "k4999");
        assert!(parse(format!("{{{many}\"z\":0}}").as_bytes()).is_ok());
        let long = "n".repeat(1000);
        let name = duplicate(parse(format!("{{\"{long}\":1,\"{long}\":2}}").as_bytes()));
        assert_eq!(name.len(), NAME_SHOWN);
    }

    #[test]
    fn syntax_errors_and_hostile_nesting_are_invalid_not_a_stack_overflow() {
        for body in [&b"{\"id\":1,"[..], b"{\"id\":1} x", b"[1,2"] {
            assert!(matches!(parse(body), Err(JsonError::Invalid(_))));
        }
        assert!(matches!(member("[1]", "id"), Err(JsonError::Invalid(_))));
        let deep = format!("{{\"a\":{}1{}}}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(matches!(parse(deep.as_bytes()), Err(JsonError::Invalid(_))));
        assert!(matches!(member(&deep, "id"), Err(JsonError::Invalid(_))));
        assert!(matches!(member(&deep, "a"), Err(JsonError::Invalid(_))));
    }
}
