//! How a body mapping's output is sent when it is not JSON: as an
//! `application/x-www-form-urlencoded` body, or as query parameters. Either
//! way the output must be a map of scalars, and every name and value is
//! percent-encoded by `url`'s form serializer, never spliced into the text.
//!
//! ```yaml
//! request: { method: GET, path: /API/CallCourier/SaveBooking, body: mappings/callcourier/book.yaml, encoding: query }
//! ```

use serde_json::Value;

/// The body's fields as name/value pairs: text as written, numbers and
/// booleans as JSON writes them, null fields left out.
pub fn pairs(body: &Value) -> Result<Vec<(String, String)>, String> {
    let Value::Object(fields) = body else {
        return Err(format!(
            "a form or query body must be a map of fields, not {}",
            kind(body)
        ));
    };
    let mut pairs = Vec::with_capacity(fields.len());
    for (name, value) in fields {
        let text = match value {
            Value::Null => continue,
            Value::String(text) => text.clone(),
            Value::Number(number) => number.to_string(),
            Value::Bool(flag) => flag.to_string(),
            other => {
                return Err(format!(
                    "field `{name}` is {}; a form or query body holds text, numbers and booleans only",
                    kind(other)
                ));
            }
        };
        pairs.push((name.clone(), text));
    }
    Ok(pairs)
}

/// `application/x-www-form-urlencoded` text of `pairs`.
pub fn form(pairs: &[(String, String)]) -> String {
    let mut serializer = url::form_urlencoded::Serializer::new(String::new());
    for (name, value) in pairs {
        serializer.append_pair(name, value);
    }
    serializer.finish()
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "text",
        Value::Array(_) => "a list",
        Value::Object(_) => "a map",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn values_are_encoded_not_spliced() {
        let pairs = pairs(&json!({ "name": "Ali & Sons=1", "city": "کراچی", "cod": 1500, "fragile": false, "x": null })).unwrap();
        let text = form(&pairs);
        let decoded: Vec<(String, String)> = url::form_urlencoded::parse(text.as_bytes())
            .into_owned()
            .collect();
        assert_eq!(decoded.len(), 4, "{text}");
        assert!(decoded.contains(&("name".into(), "Ali & Sons=1".into())));
        assert!(decoded.contains(&("city".into(), "کراچی".into())));
        assert!(decoded.contains(&("cod".into(), "1500".into())));
        assert!(!text.contains('&') || text.matches('&').count() == 3);
    }

    #[test]
    fn nested_values_are_refused_with_their_field() {
        let err = pairs(&json!({ "items": [1, 2] })).unwrap_err();
        assert!(err.contains("`items`"), "{err}");
        assert!(pairs(&json!([1])).is_err());
    }
}
