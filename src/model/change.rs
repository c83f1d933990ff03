//! What changed in an order after it was booked: the field-by-field
//! difference between the canonical shipment that was booked and the one
//! the order maps to now (DESIGN §8).
//!
//! Both sides are canonical shipment JSON, so the comparison knows no store
//! or courier. `sequence` (which booking of the order it is) and
//! `cancelled` (handled as a cancellation, not an edit) are not compared.

use serde_json::Value;
use std::fmt;

/// Top-level fields that are not part of what the parcel carries.
const NOT_COMPARED: &[&str] = &["sequence", "cancelled"];

/// One field that differs, by its path (`recipient.address1`, `items[0].quantity`).
#[derive(Debug, Clone, PartialEq)]
pub struct Difference {
    pub field: String,
    /// As booked; `null` when the field was absent.
    pub booked: Value,
    /// As the order stands now; `null` when the field is absent.
    pub now: Value,
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} → {}", self.field, self.booked, self.now)
    }
}

/// Every field of `now` that differs from `booked`, by path in name order. Objects
/// are compared member by member and lists item by item, so an edited item
/// is named by its place; a longer or shorter list names the items added
/// or gone.
pub fn differences(booked: &Value, now: &Value) -> Vec<Difference> {
    let mut found = Vec::new();
    match (booked, now) {
        (Value::Object(old), Value::Object(new)) => {
            for name in member_names(old, new) {
                if NOT_COMPARED.contains(&name.as_str()) {
                    continue;
                }
                walk(&name, member(old, &name), member(new, &name), &mut found);
            }
        }
        _ => walk("", booked, now, &mut found),
    }
    found
}

/// The differences as one line each, for a dead letter.
pub fn describe(differences: &[Difference]) -> String {
    differences
        .iter()
        .map(Difference::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

fn member<'a>(map: &'a serde_json::Map<String, Value>, name: &str) -> &'a Value {
    map.get(name).unwrap_or(&Value::Null)
}

/// The member names of both objects, each once, in name order.
fn member_names(
    old: &serde_json::Map<String, Value>,
    new: &serde_json::Map<String, Value>,
) -> Vec<String> {
    let names: std::collections::BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    names.into_iter().cloned().collect()
}

fn walk(path: &str, old: &Value, new: &Value, found: &mut Vec<Difference>) {
    match (old, new) {
        (Value::Object(a), Value::Object(b)) => {
            for name in member_names(a, b) {
                let inner = format!("{path}.{name}");
                walk(&inner, member(a, &name), member(b, &name), found);
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            for index in 0..a.len().max(b.len()) {
                let inner = format!("{path}[{index}]");
                let at = |list: &Vec<Value>| list.get(index).cloned().unwrap_or(Value::Null);
                walk(&inner, &at(a), &at(b), found);
            }
        }
        _ if same(old, new) => {}
        _ => found.push(Difference {
            field: path.to_string(),
            booked: old.clone(),
            now: new.clone(),
        }),
    }
}

/// Equal values, and amounts equal in value however written: `1500` and
/// `"1500.00"`, `"1500.0"` and `"1500.00"`. Only numbers and strings with a
/// decimal point count as amounts, so a phone losing its `+` still differs.
fn same(old: &Value, new: &Value) -> bool {
    if old == new {
        return true;
    }
    let amount = |v: &Value| v.is_number() || v.as_str().is_some_and(|t| t.contains('.'));
    if !(amount(old) && amount(new)) {
        return false;
    }
    match (decimal(old), decimal(new)) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

fn decimal(value: &Value) -> Option<rust_decimal::Decimal> {
    use std::str::FromStr;
    match value {
        Value::String(text) => rust_decimal::Decimal::from_str(text.trim()).ok(),
        Value::Number(number) => rust_decimal::Decimal::from_str(&number.to_string()).ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn booked() -> Value {
        json!({
            "order_id": "820982911946154508",
            "reference": "#1001",
            "sequence": 0,
            "recipient": { "name": "Ayesha", "phone": "+923001234567", "address1": "1 Main", "city": "Karachi" },
            "payment": "cod",
            "cod_amount": "1500.00",
            "items": [{ "name": "Kurta", "quantity": 1, "price": "1500.00" }],
            "notes": null
        })
    }

    #[test]
    fn the_same_shipment_has_no_difference() {
        assert!(differences(&booked(), &booked()).is_empty());
    }

    #[test]
    fn sequence_and_cancellation_are_not_edits() {
        let mut now = booked();
        now["sequence"] = json!(1);
        now["cancelled"] = json!(true);
        assert!(differences(&booked(), &now).is_empty());
    }

    #[test]
    fn address_phone_and_cod_amount_are_named_field_by_field() {
        let mut now = booked();
        now["recipient"]["address1"] = json!("22 Side Street");
        now["recipient"]["phone"] = json!("+923217654321");
        now["cod_amount"] = json!("1800.00");
        let found = differences(&booked(), &now);
        let fields: Vec<&str> = found.iter().map(|d| d.field.as_str()).collect();
        assert_eq!(
            fields,
            ["cod_amount", "recipient.address1", "recipient.phone"]
        );
        assert_eq!(
            found[1].to_string(),
            r#"recipient.address1: "1 Main" → "22 Side Street""#
        );
        assert_eq!(found[0].booked, json!("1500.00"));
        assert_eq!(found[0].now, json!("1800.00"));
    }

    #[test]
    fn items_are_compared_by_place_and_added_items_are_named() {
        let mut now = booked();
        now["items"][0]["quantity"] = json!(2);
        now["items"]
            .as_array_mut()
            .unwrap()
            .push(json!({ "name": "Shawl", "quantity": 1 }));
        let found = differences(&booked(), &now);
        assert_eq!(found[0].field, "items[0].quantity");
        assert_eq!(
            (found[0].booked.clone(), found[0].now.clone()),
            (json!(1), json!(2))
        );
        assert_eq!(found[1].field, "items[1]");
        assert_eq!(found[1].booked, Value::Null);
        assert_eq!(found.len(), 2);
        let mut fewer = booked();
        fewer["items"] = json!([]);
        let gone = differences(&booked(), &fewer);
        assert_eq!(gone.len(), 1);
        assert_eq!(gone[0].field, "items[0]");
        assert_eq!(gone[0].now, Value::Null);
    }

    #[test]
    fn a_field_added_or_dropped_differs_and_amounts_compare_by_value() {
        let mut now = booked();
        now["recipient"]["address2"] = json!("Flat 3");
        now["recipient"].as_object_mut().unwrap().remove("city");
        now["cod_amount"] = json!("1500.0");
        let found = differences(&booked(), &now);
        let fields: Vec<&str> = found.iter().map(|d| d.field.as_str()).collect();
        assert_eq!(fields, ["recipient.address2", "recipient.city"]);
        assert_eq!(
            describe(&found),
            r#"recipient.address2: null → "Flat 3"; recipient.city: "Karachi" → null"#
        );
        // An absent field and a null one are the same.
        let mut null_notes = booked();
        null_notes.as_object_mut().unwrap().remove("notes");
        assert!(differences(&booked(), &null_notes).is_empty());
        let mut phone = booked();
        phone["recipient"]["phone"] = json!("923001234567");
        assert_eq!(differences(&booked(), &phone).len(), 1);
    }
}
