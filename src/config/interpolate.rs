//! `${VAR}` substitution in parsed string values.
//!
//! Substitution happens after YAML parsing, in string values only, so a secret
//! containing `#` or `: ` can never change the shape of the file. `$$` is a
//! literal `$`; a `$` not followed by `{` or `$` is kept as it is.
//!
//! ```yaml
//! credentials: { webhook_secret: "${SHOPIFY_SECRET:-dev-secret}", token: "${POSTEX_TOKEN}" }
//! ```

use crate::diagnostic::Diagnostics;
use crate::yaml::{Node, Value};
use std::path::Path;

/// Where variables come from: the process environment, or a map in tests.
pub type Lookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// Substitutes every `${…}` in `input`. `Ok(None)` means nothing to substitute.
pub fn interpolate(input: &str, lookup: Lookup<'_>) -> Result<Option<String>, Vec<String>> {
    if !input.contains('$') {
        return Ok(None);
    }
    let mut out = String::with_capacity(input.len());
    let mut errors = Vec::new();
    let mut rest = input;
    while let Some(dollar) = rest.find('$') {
        out.push_str(&rest[..dollar]);
        let after = &rest[dollar + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('{') {
            let Some(close) = body.find('}') else {
                errors.push("`${` without a closing `}`".to_string());
                return Err(errors);
            };
            match expand(&body[..close], lookup) {
                Ok(value) => out.push_str(&value),
                Err(e) => errors.push(e),
            }
            rest = &body[close + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    if errors.is_empty() {
        Ok(Some(out))
    } else {
        Err(errors)
    }
}

/// One `NAME` or `NAME:-default` between the braces.
fn expand(inner: &str, lookup: Lookup<'_>) -> Result<String, String> {
    let (name, default) = match inner.split_once(":-") {
        Some((name, default)) => (name, Some(default)),
        None => (inner, None),
    };
    let valid = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        return Err(format!(
            "`${{{inner}}}` is not a variable reference: expected `${{NAME}}` or `${{NAME:-default}}` (write `$$` for a literal `$`)"
        ));
    }
    match (lookup(name).filter(|v| !v.is_empty()), default) {
        (Some(value), _) if value.contains(['\n', '\r']) => Err(format!(
            "environment variable `{name}` contains a line break, which is not allowed in configuration values"
        )),
        (Some(value), _) => Ok(value),
        (None, Some(default)) => Ok(default.to_string()),
        (None, None) => Err(format!(
            "environment variable `{name}` is not set; set it or give a default with `${{{name}:-default}}`"
        )),
    }
}

/// Substitutes in every string value of `node`, reporting problems at the value.
pub fn interpolate_node(
    node: &mut Node,
    file: &Path,
    lookup: Lookup<'_>,
    diagnostics: &mut Diagnostics,
) {
    node.strings_mut(&mut |n| {
        let Value::Str(s) = &n.value else { return };
        match interpolate(s, lookup) {
            Ok(None) => {}
            Ok(Some(value)) => {
                // Kept so that diagnostics quote the text as written: the
                // expansion may be a secret.
                n.text = Some(s.clone());
                n.value = Value::Str(value);
                n.interpolated = true;
            }
            Err(errors) => {
                for message in errors {
                    diagnostics.report(file, n.position(), message);
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "TOKEN" => Some("s3cr#t: x".to_string()),
            "EMPTY" => Some(String::new()),
            "MULTI" => Some("a\nb".to_string()),
            _ => None,
        }
    }

    fn run(input: &str) -> Result<Option<String>, Vec<String>> {
        interpolate(input, &env)
    }

    #[test]
    fn substitutes_and_defaults() {
        assert_eq!(run("plain"), Ok(None));
        assert_eq!(run("${TOKEN}"), Ok(Some("s3cr#t: x".to_string())));
        assert_eq!(run("a-${TOKEN}-b"), Ok(Some("a-s3cr#t: x-b".to_string())));
        assert_eq!(run("${NOPE:-dev}"), Ok(Some("dev".to_string())));
        assert_eq!(run("${NOPE:-}"), Ok(Some(String::new())));
        assert_eq!(run("${EMPTY:-fallback}"), Ok(Some("fallback".to_string())));
        assert_eq!(run("${TOKEN:-unused}"), Ok(Some("s3cr#t: x".to_string())));
    }

    #[test]
    fn dollar_escapes() {
        assert_eq!(run("$${TOKEN}"), Ok(Some("${TOKEN}".to_string())));
        assert_eq!(run("cost $5"), Ok(Some("cost $5".to_string())));
        assert_eq!(run("$$$$"), Ok(Some("$$".to_string())));
    }

    #[test]
    fn errors() {
        let missing = run("${NOPE}").unwrap_err();
        assert!(missing[0].contains("`NOPE` is not set"), "{missing:?}");
        assert!(run("${MULTI}").unwrap_err()[0].contains("line break"));
        assert!(run("${TOKEN").unwrap_err()[0].contains("closing"));
        assert!(run("${1X}").unwrap_err()[0].contains("not a variable reference"));
        assert_eq!(run("${A} ${B}").unwrap_err().len(), 2);
    }

    #[test]
    fn node_values_only_and_located() {
        let mut node = crate::yaml::parse("'${KEY}': x\nv: ${TOKEN}\nw: [1, '${NOPE}']\n").unwrap();
        let mut found = crate::diagnostic::Diagnostics::default();
        interpolate_node(&mut node, Path::new("f.yaml"), &env, &mut found);
        let diags = found.into_sorted();
        assert_eq!(
            node.to_json(),
            serde_json::json!({"${KEY}": "x", "v": "s3cr#t: x", "w": [1, "${NOPE}"]})
        );
        assert_eq!(diags.len(), 1);
        assert_eq!((diags[0].line, diags[0].column), (3, 8));
    }
}
