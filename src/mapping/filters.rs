//! Built-in filters and functions for mapping templates and expressions.
//!
//! ```yaml
//! phone: "{{ order.shipping_address.phone | phone('e164') }}"   # +923001234567, or null
//! cod_amount: "{{ order.total_outstanding | money }}"          # "1500.00"
//! invoicePayment: "{{ shipment.cod_amount | money_number }}"   # 1500
//! weight_grams: "{{ order.total_weight | grams }}"             # 1200; grams('kg') converts kg
//! weight: "{{ shipment.weight_grams | kg }}"                   # 1.2
//! name: "{{ order.shipping_address.name | clean }}"            # trimmed, spaces collapsed
//! order_id: "{{ order.id | id }}"                              # "820982911946154508", exact
//! total: "{{ jsonpath(order, '$.total_price_set.shop_money.amount') }}"
//! city: "{{ lookup('cities', order.shipping_address.city, order.shipping_address.city) }}"
//! destination_city: "{{ shipment.recipient.city | city_id }}"       # the connector's `cities` lookup
//! service_type_id: "{{ shipment.service | lookup_id('services') }}" # any lookup the connector declares
//! ```
//!
//! `city_id` and `lookup_id` read the connector's `lookups:` (the engine puts
//! them in the variable `lookups`, names normalised; a mapping test gives
//! them as input, e.g. `lookups: { cities: { karachi: 789 } }`). A name not
//! in the list is an error naming it: a guessed id would book the wrong city.
//!
//! Filters that receive an undefined value (a lookup that found nothing) return
//! none and flag it, so a typo in a field name is reported like any other
//! undefined value reaching the output (see the module docs of `mapping`).
//! Unusable input data (a phone with letters, an empty amount) gives none, not
//! an error, so the `validate` step can say what is missing.

use super::env::{from_json, note_undefined, to_json};
use minijinja::value::{Value, ValueKind};
use minijinja::{Environment, Error, ErrorKind, State};
use rust_decimal::{Decimal, RoundingStrategy};
use serde_json_path::JsonPath;
use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{LazyLock, Mutex};

/// Pakistan's country calling code: the default country for local numbers.
const PK_CODE: &str = "92";

/// Registers every built-in filter and function on `env`.
pub(crate) fn register(env: &mut Environment<'static>) {
    env.add_filter("phone", phone_filter);
    env.add_filter("money", money_filter);
    env.add_filter("money_number", money_number_filter);
    env.add_filter("grams", grams_filter);
    env.add_filter("kg", kg_filter);
    env.add_filter("clean", clean_filter);
    env.add_filter("id", id_filter);
    env.add_filter("jsonpath", jsonpath_fn);
    env.add_function("jsonpath", jsonpath_fn);
    env.add_function("lookup", lookup_fn);
    env.add_filter("lookup_id", lookup_id_filter);
    env.add_filter("city_id", city_id_filter);
}

/// How a normalised phone number is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PhoneFormat {
    /// `+923001234567`
    E164,
    /// `03001234567`, the format Pakistani couriers ask for.
    LocalPk,
    /// `923001234567`: E.164 without the plus.
    Digits,
}

impl FromStr for PhoneFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "e164" => Ok(PhoneFormat::E164),
            "local_pk" => Ok(PhoneFormat::LocalPk),
            "digits" => Ok(PhoneFormat::Digits),
            other => Err(format!(
                "unknown phone format `{other}`; expected one of e164, local_pk, digits"
            )),
        }
    }
}

/// Normalises a phone number written in any of the usual ways (`+92 300 1234567`,
/// `0300-1234567`, `923001234567`, `3001234567`, `(0300) 123 4567`), Pakistan being
/// the default country. Returns `None` when the text cannot be a phone number.
pub fn normalize_phone(raw: &str, format: PhoneFormat) -> Option<String> {
    let raw = raw.trim();
    let (plus, rest) = match raw.strip_prefix('+') {
        Some(rest) => (true, rest),
        None => (false, raw),
    };
    if !rest
        .chars()
        .all(|c| c.is_ascii_digit() || matches!(c, ' ' | '-' | '(' | ')' | '.' | '/'))
    {
        return None;
    }
    let digits: String = rest.chars().filter(char::is_ascii_digit).collect();
    let pk_national = |national: &str| {
        // Pakistani national numbers: 10 digits for mobiles (3XX…), 9 or 10 for landlines.
        let usable = (9..=10).contains(&national.len()) && !national.starts_with('0');
        usable.then(|| national.to_string())
    };
    let national = if plus {
        match digits.strip_prefix(PK_CODE) {
            Some(national) => pk_national(national)?,
            None => {
                // Another country: only E.164 output makes sense.
                let valid = (8..=15).contains(&digits.len()) && !digits.starts_with('0');
                return match format {
                    PhoneFormat::E164 if valid => Some(format!("+{digits}")),
                    PhoneFormat::Digits if valid => Some(digits),
                    _ => None,
                };
            }
        }
    } else if let Some(national) = digits.strip_prefix("0092") {
        pk_national(national)?
    } else if digits.len() == 12 && digits.starts_with(PK_CODE) {
        pk_national(&digits[2..])?
    } else if let Some(national) = digits.strip_prefix('0') {
        pk_national(national)?
    } else if digits.len() == 10 && digits.starts_with('3') {
        digits
    } else {
        return None;
    };
    Some(match format {
        PhoneFormat::E164 => format!("+{PK_CODE}{national}"),
        PhoneFormat::LocalPk => format!("0{national}"),
        PhoneFormat::Digits => format!("{PK_CODE}{national}"),
    })
}

/// Parses an amount (string, integer or float) as an exact decimal.
pub fn parse_decimal(text: &str) -> Option<Decimal> {
    let text = text.trim();
    Decimal::from_str(text)
        .or_else(|_| Decimal::from_scientific(text))
        .ok()
}

/// Rounds half away from zero to two places, as money is printed.
pub fn money_string(amount: Decimal) -> String {
    let mut rounded = amount.round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero);
    rounded.rescale(2);
    rounded.to_string()
}

fn invalid(message: impl Into<String>) -> Error {
    Error::new(ErrorKind::InvalidOperation, message.into())
}

/// Text of a scalar without loss: integers print exactly (ids beyond 2^53),
/// floats print in their shortest round-trip form.
fn scalar_text(value: &Value) -> Option<String> {
    match value.kind() {
        ValueKind::String => value.as_str().map(str::to_string),
        ValueKind::Number if value.is_integer() => Some(value.to_string()),
        ValueKind::Number => f64::try_from(value.clone()).ok().map(|f| f.to_string()),
        _ => None,
    }
}

/// None for a missing value (flagging undefined ones), else the value.
fn present(value: Value) -> Option<Value> {
    if value.is_undefined() {
        note_undefined();
        return None;
    }
    (!value.is_none()).then_some(value)
}

fn phone_filter(value: Value, format: Option<String>) -> Result<Value, Error> {
    let format: PhoneFormat = format
        .as_deref()
        .unwrap_or("e164")
        .parse()
        .map_err(invalid)?;
    let Some(value) = present(value) else {
        return Ok(Value::from(()));
    };
    Ok(scalar_text(&value)
        .and_then(|text| normalize_phone(&text, format))
        .map(Value::from)
        .unwrap_or_else(|| Value::from(())))
}

/// The number in `value` for the filter `what`; `None` when the value is
/// missing, none or blank.
fn decimal_of(value: Value, what: &str) -> Result<Option<Decimal>, Error> {
    let Some(value) = present(value) else {
        return Ok(None);
    };
    let Some(text) = scalar_text(&value) else {
        return Err(invalid(format!(
            "{what} expects a number or a string, got {}",
            value.kind()
        )));
    };
    if text.trim().is_empty() {
        return Ok(None);
    }
    parse_decimal(&text)
        .map(Some)
        .ok_or_else(|| invalid(format!("{what}: `{text}` is not a number")))
}

fn money_filter(value: Value) -> Result<Value, Error> {
    Ok(decimal_of(value, "money")?
        .map(|amount| Value::from(money_string(amount)))
        .unwrap_or_else(|| Value::from(())))
}

/// A decimal as a JSON-friendly number that prints back as the decimal does.
fn decimal_number(amount: Decimal) -> Result<Value, Error> {
    let amount = amount.normalize();
    if amount.is_integer() {
        let whole =
            i128::try_from(amount).map_err(|_| invalid(format!("{amount} is out of range")))?;
        return Ok(Value::from(whole));
    }
    // The shortest f64 for a decimal with few places prints back as the same digits.
    f64::from_str(&amount.to_string())
        .map(Value::from)
        .map_err(|_| invalid(format!("{amount} is not representable as a number")))
}

fn money_number_filter(value: Value) -> Result<Value, Error> {
    match decimal_of(value, "money_number")? {
        Some(amount) => {
            decimal_number(amount.round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero))
        }
        None => Ok(Value::from(())),
    }
}

fn unit_factor(unit: Option<&str>) -> Result<Decimal, Error> {
    match unit.unwrap_or("g") {
        "g" => Ok(Decimal::ONE),
        "kg" => Ok(Decimal::from(1000)),
        "lb" => Ok(Decimal::new(45_359_237, 5)),
        "oz" => Ok(Decimal::new(28_349_523_125, 9)),
        other => Err(invalid(format!(
            "unknown weight unit `{other}`; expected g, kg, lb or oz"
        ))),
    }
}

/// A weight in `unit` (grams by default) as whole grams.
fn grams_filter(value: Value, unit: Option<String>) -> Result<Value, Error> {
    let factor = unit_factor(unit.as_deref())?;
    let Some(weight) = decimal_of(value, "grams")? else {
        return Ok(Value::from(()));
    };
    let grams = (weight * factor).round_dp_with_strategy(0, RoundingStrategy::MidpointAwayFromZero);
    if grams.is_sign_negative() {
        return Err(invalid(format!("grams: negative weight {weight}")));
    }
    u64::try_from(grams)
        .map(Value::from)
        .map_err(|_| invalid(format!("grams: weight {weight} is out of range")))
}

/// Grams as kilograms (a number, up to three places).
fn kg_filter(value: Value) -> Result<Value, Error> {
    match decimal_of(value, "kg")? {
        Some(grams) => decimal_number(grams / Decimal::from(1000)),
        None => Ok(Value::from(())),
    }
}

/// Trims and collapses runs of whitespace; empty text becomes none.
fn clean_filter(value: Value) -> Value {
    let Some(value) = present(value) else {
        return Value::from(());
    };
    let Some(text) = scalar_text(&value) else {
        return value;
    };
    let cleaned = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if cleaned.is_empty() {
        Value::from(())
    } else {
        Value::from(cleaned)
    }
}

/// An identifier as an exact string (numbers beyond 2^53 included).
fn id_filter(value: Value) -> Result<Value, Error> {
    let Some(value) = present(value) else {
        return Ok(Value::from(()));
    };
    if value.kind() == ValueKind::Number && !value.is_integer() {
        return Err(invalid(format!(
            "id: {value} is not a whole number (ids must not pass through floating point)"
        )));
    }
    scalar_text(&value)
        .map(|text| Value::from(text.trim().to_string()))
        .ok_or_else(|| {
            invalid(format!(
                "id expects a number or a string, got {}",
                value.kind()
            ))
        })
}

/// Compiled paths, keyed by their text: templates use few distinct paths.
static PATHS: LazyLock<Mutex<HashMap<String, JsonPath>>> = LazyLock::new(Default::default);
const MAX_CACHED_PATHS: usize = 512;

fn compiled_path(path: &str) -> Result<JsonPath, Error> {
    let mut cache = PATHS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(compiled) = cache.get(path) {
        return Ok(compiled.clone());
    }
    let compiled =
        JsonPath::parse(path).map_err(|e| invalid(format!("invalid JSONPath `{path}`: {e}")))?;
    if cache.len() < MAX_CACHED_PATHS {
        cache.insert(path.to_string(), compiled.clone());
    }
    Ok(compiled)
}

/// `jsonpath(value, "$.a.b")`: the single match, none when nothing matches,
/// or a list when the path matches several nodes.
fn jsonpath_fn(value: Value, path: String) -> Result<Value, Error> {
    let path = compiled_path(&path)?;
    let Some(value) = present(value) else {
        return Ok(Value::from(()));
    };
    let json = to_json(&value).map_err(|e| invalid(format!("jsonpath: {e}")))?;
    let nodes = path.query(&json).all();
    Ok(match nodes.as_slice() {
        [] => Value::from(()),
        [one] => from_json(one),
        many => Value::from(many.iter().map(|node| from_json(node)).collect::<Vec<_>>()),
    })
}

/// How lookup names compare: trimmed, whitespace collapsed, lower case.
pub fn normalize_key(text: &str) -> String {
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

/// The variable the connector engine puts its `lookups:` in: lookup name →
/// (normalised name → id).
pub const LOOKUPS_VAR: &str = "lookups";

/// `value | lookup_id('services')`: the id the connector's lookup `name`
/// gives `value`; none for none; an error naming `value` when it is not
/// in the list, since sending a guess would book the wrong thing.
fn lookup_id_filter(state: &State, value: Value, name: String) -> Result<Value, Error> {
    find_id(state, value, &name, None)
}

/// `value | city_id`: `lookup_id('cities')`.
fn city_id_filter(state: &State, value: Value) -> Result<Value, Error> {
    find_id(state, value, "cities", Some("city"))
}

/// The id `value` has in lookup `name`; `noun` names what it is in the error.
fn find_id(state: &State, value: Value, name: &str, noun: Option<&str>) -> Result<Value, Error> {
    let Some(key) = present(value).and_then(|k| scalar_text(&k)) else {
        return Ok(Value::from(()));
    };
    let list = state
        .lookup(LOOKUPS_VAR)
        .and_then(|lookups| lookups.get_attr(name).ok())
        .filter(|list| list.kind() == ValueKind::Map)
        .ok_or_else(|| {
            invalid(format!(
                "the connector's lookup `{name}` is not available (declare it under `lookups:`; a fetched list must load first)"
            ))
        })?;
    match list.get_item(&Value::from(normalize_key(&key))) {
        Ok(found) if !found.is_undefined() && !found.is_none() => Ok(found),
        _ => Err(invalid(match noun {
            Some(noun) => {
                format!("unknown {noun} `{key}`: the courier's `{name}` list has no such {noun}")
            }
            None => format!("`{key}` is not in the connector's `{name}` lookup"),
        })),
    }
}

/// `lookup(table, key, default)`: `table` is a map or the name of a table under
/// the mapping's `$tables`. Keys match exactly, then ignoring case and spacing.
fn lookup_fn(
    state: &State,
    table: Value,
    key: Value,
    default: Option<Value>,
) -> Result<Value, Error> {
    let default = default.unwrap_or_else(|| Value::from(()));
    let table = match table.as_str() {
        Some(name) => state
            .lookup("tables")
            .and_then(|tables| tables.get_attr(name).ok())
            .filter(|t| t.kind() == ValueKind::Map)
            .ok_or_else(|| invalid(format!("lookup: no table named `{name}` under $tables")))?,
        None if table.kind() == ValueKind::Map => table,
        None => {
            return Err(invalid(format!(
                "lookup expects a map or a table name, got {}",
                table.kind()
            )));
        }
    };
    let Some(key) = present(key).and_then(|k| scalar_text(&k)) else {
        return Ok(default);
    };
    if let Ok(found) = table.get_item(&Value::from(key.as_str()))
        && !found.is_undefined()
    {
        return Ok(found);
    }
    let wanted = normalize_key(&key);
    for candidate in table.try_iter()? {
        if let Some(text) = candidate.as_str()
            && normalize_key(text) == wanted
        {
            return table.get_item(&candidate);
        }
    }
    Ok(default)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phones_in_every_usual_shape_normalise() {
        for raw in [
            "+92 300 1234567",
            "0300-1234567",
            "923001234567",
            "3001234567",
            "(0300) 123 4567",
            "0092 300 1234567",
        ] {
            assert_eq!(
                normalize_phone(raw, PhoneFormat::E164).as_deref(),
                Some("+923001234567"),
                "{raw}"
            );
            assert_eq!(
                normalize_phone(raw, PhoneFormat::LocalPk).as_deref(),
                Some("03001234567"),
                "{raw}"
            );
        }
        assert_eq!(
            normalize_phone("021-35123456", PhoneFormat::E164).as_deref(),
            Some("+922135123456")
        );
    }

    #[test]
    fn unusable_phones_give_none() {
        for raw in [
            "555-555-SHIP",
            "555-625-1199",
            "12345",
            "0300123456789",
            "",
            "+",
            "03001234567 ext 5",
        ] {
            assert_eq!(normalize_phone(raw, PhoneFormat::E164), None, "{raw}");
        }
        assert_eq!(
            normalize_phone("+1(502)-459-2181", PhoneFormat::E164).as_deref(),
            Some("+15024592181")
        );
        assert_eq!(
            normalize_phone("+1(502)-459-2181", PhoneFormat::LocalPk),
            None
        );
    }

    #[test]
    fn money_is_exact_and_rounded_half_away_from_zero() {
        assert_eq!(money_string(parse_decimal("1500").unwrap()), "1500.00");
        assert_eq!(money_string(parse_decimal("0.125").unwrap()), "0.13");
        assert_eq!(money_string(parse_decimal("-0.125").unwrap()), "-0.13");
        assert_eq!(money_string(parse_decimal("199.65").unwrap()), "199.65");
        assert_eq!(parse_decimal("abc"), None);
    }

    #[test]
    fn decimal_numbers_print_back_identically() {
        let as_json = |d: &str| {
            to_json(&decimal_number(parse_decimal(d).unwrap()).unwrap())
                .unwrap()
                .to_string()
        };
        assert_eq!(as_json("1500.00"), "1500");
        assert_eq!(as_json("598.94"), "598.94");
        assert_eq!(as_json("0.10"), "0.1");
        assert_eq!(as_json("820982911946154508"), "820982911946154508");
    }
}
