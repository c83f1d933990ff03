//! The one minijinja configuration every template and expression runs with,
//! and the check that turns an undefined value reaching the output into a
//! precise "no such field" error.
//!
//! minijinja cannot tell "`order.shipping_address` is null" from "`order.nmae`
//! is a typo": both look up to undefined. Templates therefore run with
//! [`UndefinedBehavior::Chainable`] (lookups through null or undefined never
//! fail), and whenever an undefined value reaches the output (a whole-value
//! leaf, a printed `{{ … }}`, or a built-in filter's input) the attribute
//! paths the template reads (`order.shipping_address.phone`) are walked in the
//! context: a path that stops at a null is fine (the result is null), a path
//! that names a key a map does not have, or a variable not in the context, is
//! an error. `x | default(…)` and `x is defined` keep working for fields that
//! really are optional.

use minijinja::value::{Value, ValueKind};
use minijinja::{AutoEscape, Environment, Error, UndefinedBehavior, escape_formatter};
use std::cell::Cell;
use std::collections::BTreeSet;
use std::sync::LazyLock;

/// Instructions one evaluation may run before it is stopped.
const FUEL: u64 = 100_000;

thread_local! {
    /// Set when an undefined value reached the output during the current evaluation.
    static SAW_UNDEFINED: Cell<bool> = const { Cell::new(false) };
}

pub(crate) fn note_undefined() {
    SAW_UNDEFINED.with(|flag| flag.set(true));
}

/// Clears the flag before an evaluation and reads it after (evaluation is
/// synchronous, so the thread-local cannot mix two evaluations).
pub(crate) fn take_undefined() -> bool {
    SAW_UNDEFINED.with(|flag| flag.replace(false))
}

fn base_env() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_fuel(Some(FUEL));
    env.set_undefined_behavior(UndefinedBehavior::Chainable);
    // Output is data, not HTML: never escape (minijinja would JSON-escape `*.json` names).
    env.set_auto_escape_callback(|_| AutoEscape::None);
    env.set_formatter(|out, state, value| {
        if value.is_undefined() {
            note_undefined();
            return Ok(());
        }
        if value.is_none() {
            return Ok(());
        }
        escape_formatter(out, state, value)
    });
    super::filters::register(&mut env);
    env
}

/// The shared environment: expressions borrow it for `'static`, text templates clone it.
pub(crate) static ENV: LazyLock<Environment<'static>> = LazyLock::new(base_env);

/// The attribute paths a template reads that are worth checking: variables
/// minijinja knows as globals (functions such as `lookup`) are left out.
pub(crate) fn checked_paths(paths: impl IntoIterator<Item = String>) -> Vec<String> {
    let globals: BTreeSet<&str> = ENV.globals().map(|(name, _)| name).collect();
    let mut paths: Vec<String> = paths
        .into_iter()
        .filter(|path| !globals.contains(path.split('.').next().unwrap_or_default()))
        .collect();
    paths.sort();
    paths
}

/// Walks each path in `ctx`; describes the first one that names a missing
/// variable or a key its map does not have. Paths through null are fine.
pub(crate) fn missing_field(ctx: &Value, paths: &[String]) -> Option<String> {
    for path in paths {
        let mut current = ctx.clone();
        let mut walked = String::new();
        for segment in path.split('.') {
            match current.kind() {
                ValueKind::Map => {}
                // Through null (or into a scalar, list…): not a typo we can see.
                _ => break,
            }
            let next = current.get_attr(segment).unwrap_or_default();
            if next.is_undefined() {
                return Some(if walked.is_empty() {
                    format!("undefined variable `{segment}` (not in the input)")
                } else {
                    format!(
                        "`{walked}` has no field `{segment}` (use `| default(…)` if it is optional)"
                    )
                });
            }
            if !walked.is_empty() {
                walked.push('.');
            }
            walked.push_str(segment);
            current = next;
        }
    }
    None
}

/// Message of a minijinja error without the template-name suffix we report ourselves.
pub(crate) fn describe(err: &Error) -> String {
    match err.detail() {
        Some(detail) => format!("{}: {detail}", err.kind()),
        None => err.kind().to_string(),
    }
}

/// A JSON value as a minijinja value; integers keep their exact value.
pub(crate) fn from_json(json: &serde_json::Value) -> Value {
    use serde_json::Value as J;
    match json {
        J::Null => Value::from(()),
        J::Bool(b) => Value::from(*b),
        J::Number(n) => match (n.as_u64(), n.as_i64(), n.as_f64()) {
            (Some(u), _, _) => Value::from(u),
            (_, Some(i), _) => Value::from(i),
            (_, _, Some(f)) => Value::from(f),
            _ => Value::from(()),
        },
        J::String(s) => Value::from(s.as_str()),
        J::Array(items) => Value::from(items.iter().map(from_json).collect::<Vec<_>>()),
        J::Object(map) => Value::from(
            map.iter()
                .map(|(k, v)| (k.clone(), from_json(v)))
                .collect::<std::collections::BTreeMap<_, _>>(),
        ),
    }
}

/// A minijinja value as JSON; undefined becomes null.
pub(crate) fn to_json(value: &Value) -> Result<serde_json::Value, String> {
    use serde_json::Value as J;
    Ok(match value.kind() {
        ValueKind::Undefined | ValueKind::None => J::Null,
        ValueKind::Bool => J::Bool(value.is_true()),
        ValueKind::Number if value.is_integer() => {
            if let Ok(u) = u64::try_from(value.clone()) {
                J::from(u)
            } else if let Ok(i) = i64::try_from(value.clone()) {
                J::from(i)
            } else {
                return Err(format!("integer {value} is out of range for JSON"));
            }
        }
        ValueKind::Number => f64::try_from(value.clone())
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map(J::Number)
            .ok_or_else(|| format!("{value} is not a finite number"))?,
        ValueKind::String | ValueKind::Bytes => J::String(value.to_string()),
        ValueKind::Seq | ValueKind::Iterable => J::Array(
            value
                .try_iter()
                .map_err(|e| describe(&e))?
                .map(|item| to_json(&item))
                .collect::<Result<_, _>>()?,
        ),
        ValueKind::Map => {
            let mut out = serde_json::Map::new();
            for key in value.try_iter().map_err(|e| describe(&e))? {
                let item = value.get_item(&key).map_err(|e| describe(&e))?;
                let name = key
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| key.to_string());
                out.insert(name, to_json(&item)?);
            }
            J::Object(out)
        }
        other => return Err(format!("a {other} cannot be part of the output")),
    })
}
