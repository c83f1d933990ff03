//! Secret redaction in every form a secret can take on its way back.
//!
//! A courier that echoes a token rarely echoes it as written: JSON escapes
//! `"` and `\`, PHP also turns `/` into `\/`, an encoder may write any
//! character as `\u00XX` (or a surrogate pair), a URL or form percent-encodes
//! it, an HTML error page writes `&#47;`, a Basic `Authorization` header
//! carries it base64-encoded, and a proxy may fold it to lower case. So a
//! secret is not searched as one string: each of its characters matches any
//! of its encodings, mixed freely, case-insensitively, and the stable middle
//! of its base64 encodings at all three alignments is searched the same way.
//!
//! Credentials marked `secret: true` in a connector's schema are redacted
//! with this in dead letters, failure messages, logs and `waybill try`:
//!
//! ```yaml
//! credentials:
//!   token: { type: string, secret: true, required: true, description: "Merchant API token" }
//! ```

use base64::Engine as _;
use regex::Regex;
use serde_json::Value;
use std::borrow::Cow;
use std::fmt::Write as _;

/// What a secret is replaced with.
pub const MASK: &str = "***";

/// One whole base64 group: the shortest run that carries secret bytes alone.
const MIN_BASE64_RUN: usize = 4;

/// The secrets of one account, compiled into one pattern.
#[derive(Clone, Default)]
pub struct Secrets {
    /// The secrets as configured, for equality only: never shown.
    values: Vec<String>,
    pattern: Option<Regex>,
}

impl Secrets {
    /// Secrets matching every value of `values` (empty ones are ignored).
    pub fn new<I, S>(values: I) -> Secrets
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut values: Vec<String> = values
            .into_iter()
            .map(Into::into)
            .filter(|v| !v.is_empty())
            .collect();
        values.sort();
        values.dedup();
        let pattern = compile(&values);
        Secrets { values, pattern }
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// These secrets and `extra` (a token fetched at run time, a Basic header).
    pub fn with<I, S>(&self, extra: I) -> Secrets
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Secrets::new(
            self.values
                .iter()
                .cloned()
                .chain(extra.into_iter().map(Into::into)),
        )
    }

    /// `text` with every encoding of every secret replaced by [`MASK`].
    pub fn redact<'t>(&self, text: &'t str) -> Cow<'t, str> {
        match &self.pattern {
            Some(pattern) => pattern.replace_all(text, MASK),
            None => Cow::Borrowed(text),
        }
    }

    /// Redacts every string, and every object key, inside `value`.
    pub fn redact_value(&self, value: &mut Value) {
        if self.pattern.is_none() {
            return;
        }
        match value {
            Value::String(text) => {
                if let Cow::Owned(redacted) = self.redact(text) {
                    *text = redacted;
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|item| self.redact_value(item)),
            Value::Object(fields) => {
                // Keys can carry data too (a body keyed by a secret is odd, but possible).
                let taken = std::mem::take(fields);
                for (key, mut item) in taken {
                    self.redact_value(&mut item);
                    fields.insert(self.redact(&key).into_owned(), item);
                }
            }
            Value::Null | Value::Bool(_) | Value::Number(_) => {}
        }
    }
}

impl PartialEq for Secrets {
    fn eq(&self, other: &Secrets) -> bool {
        self.values == other.values
    }
}

/// Never the values: a `{:?}` of an account must not print its secrets.
impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secrets({} redacted)", self.values.len())
    }
}

/// One alternation of every form of every secret, longest forms first so
/// that a whole secret is masked before any base64 run inside it.
fn compile(values: &[String]) -> Option<Regex> {
    let mut forms: Vec<String> = values.iter().flat_map(|v| forms_of(v)).collect();
    forms.sort_by_key(|form| std::cmp::Reverse(form.chars().count()));
    forms.dedup();
    if forms.is_empty() {
        return None;
    }
    let alternatives: Vec<String> = forms.iter().map(|form| encoded(form)).collect();
    let source = format!("(?i:{})", alternatives.join("|"));
    // Secrets come from the operator's own config; a pattern too large to
    // compile is a secret of many kilobytes, and losing redaction silently
    // would be worse than masking it as written.
    match regex::RegexBuilder::new(&source)
        .size_limit(64 << 20)
        .build()
    {
        Ok(pattern) => Some(pattern),
        Err(_) => Regex::new(&format!(
            "(?i:{})",
            values
                .iter()
                .map(|v| regex::escape(v))
                .collect::<Vec<_>>()
                .join("|")
        ))
        .ok(),
    }
}

/// The secret itself, and the base64 runs that any base64 text carrying it
/// must contain, in the standard and URL-safe alphabets.
fn forms_of(secret: &str) -> Vec<String> {
    let mut forms = vec![secret.to_string()];
    let bytes = secret.as_bytes();
    // Whole-value encodings, padded, for secrets too short for stable runs.
    for engine in [
        &base64::engine::general_purpose::STANDARD,
        &base64::engine::general_purpose::URL_SAFE,
    ] {
        let whole = engine.encode(bytes);
        if whole.len() >= MIN_BASE64_RUN {
            forms.push(whole);
        }
    }
    // A secret `skip` bytes past a 3-byte boundary: only whole 3-byte groups
    // inside it encode to characters that do not depend on its neighbours.
    for skip in 0..3 {
        let Some(rest) = bytes.get(skip..) else {
            continue;
        };
        let whole_groups = &rest[..rest.len() / 3 * 3];
        let run = base64::engine::general_purpose::STANDARD_NO_PAD.encode(whole_groups);
        if run.len() >= MIN_BASE64_RUN {
            forms.push(run.replace('+', "-").replace('/', "_"));
            forms.push(run);
        }
    }
    forms
}

/// A pattern matching `form` with each character in any of its encodings.
fn encoded(form: &str) -> String {
    let mut pattern = String::new();
    for c in form.chars() {
        pattern.push_str("(?:");
        pattern.push_str(&char_forms(c).join("|"));
        pattern.push(')');
    }
    pattern
}

/// Every way `c` can be written in JSON, URLs, forms and HTML.
fn char_forms(c: char) -> Vec<String> {
    let code = u32::from(c);
    let mut forms = vec![
        regex::escape(&c.to_string()),
        // `\/`, `\"`, `\\`, and the same escaped once more inside an
        // escaped string.
        format!(r"\\+{}", regex::escape(&c.to_string())),
        // `&#47;`, `&#x2F;`.
        format!("&#0*{code};"),
        format!("&#x0*{code:x};"),
    ];
    forms.push(json_unicode_escape(c));
    forms.push(percent_encoded(c));
    if let Some(short) = json_short_escape(c) {
        forms.push(format!(r"\\+{short}"));
    }
    if let Some(entity) = html_entity(c) {
        forms.push(entity.to_string());
    }
    if c == ' ' {
        forms.push(r"\+".to_string());
    }
    forms
}

/// `\u002f`, or a surrogate pair beyond the BMP, behind one or more `\`.
fn json_unicode_escape(c: char) -> String {
    let mut units = [0u16; 2];
    let mut out = String::new();
    for unit in c.encode_utf16(&mut units).iter() {
        let _ = write!(out, r"\\+u{unit:04x}");
    }
    out
}

/// `%2F`, one `%XX` per UTF-8 byte (matched case-insensitively).
fn percent_encoded(c: char) -> String {
    let mut buf = [0u8; 4];
    c.encode_utf8(&mut buf)
        .bytes()
        .fold(String::new(), |mut out, byte| {
            let _ = write!(out, "%{byte:02x}");
            out
        })
}

/// The letter after `\` in JSON's short escapes.
fn json_short_escape(c: char) -> Option<char> {
    Some(match c {
        '\n' => 'n',
        '\t' => 't',
        '\r' => 'r',
        '\u{8}' => 'b',
        '\u{c}' => 'f',
        _ => return None,
    })
}

fn html_entity(c: char) -> Option<&'static str> {
    Some(match c {
        '"' => "&quot;",
        '&' => "&amp;",
        '<' => "&lt;",
        '>' => "&gt;",
        '\'' => "&apos;",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};

    /// Characters that every encoding treats differently.
    const AWKWARD: &[char] = &[
        '/', '+', '=', '"', '\\', '\'', '<', '>', '&', '%', ' ', '#', '?', ':', ',', '\t', '\n',
        'é', '€', '😀', '\u{7f}', '{', '}',
    ];

    /// Deterministic secrets mixing letters, digits and awkward characters.
    fn awkward_secrets() -> Vec<String> {
        let mut secrets = vec!["Zm9vYmFyLzEy/K3+q9==".to_string()];
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        for length in [6usize, 9, 12, 17, 24, 33] {
            for _ in 0..6 {
                let secret: String = (0..length)
                    .map(|_| {
                        state ^= state << 13;
                        state ^= state >> 7;
                        state ^= state << 17;
                        if state.is_multiple_of(3) {
                            AWKWARD[(state / 3) as usize % AWKWARD.len()]
                        } else {
                            let alnum = b"AbCdEfGhIjKlMnOpQrStUvWxYz0123456789";
                            char::from(alnum[(state / 3) as usize % alnum.len()])
                        }
                    })
                    .collect();
                secrets.push(secret);
            }
        }
        secrets
    }

    /// Every form the secret can come back in.
    pub(crate) fn encodings(secret: &str) -> Vec<(&'static str, String)> {
        let json = serde_json::to_string(secret).expect("json");
        let json = json[1..json.len() - 1].to_string();
        let ascii_json: String = secret
            .encode_utf16()
            .map(|unit| format!("\\u{unit:04X}"))
            .collect();
        let form: String = url::form_urlencoded::byte_serialize(secret.as_bytes()).collect();
        let html: String = secret
            .chars()
            .map(|c| format!("&#{};", u32::from(c)))
            .collect();
        vec![
            ("as written", secret.to_string()),
            ("json", json.clone()),
            ("php json", json.replace('/', "\\/")),
            ("json twice", {
                let twice = serde_json::to_string(&json).expect("json");
                twice[1..twice.len() - 1].to_string()
            }),
            ("json \\u upper", ascii_json.clone()),
            ("json \\u lower", ascii_json.to_lowercase()),
            ("form", form),
            ("percent", percent(secret)),
            ("percent lower", percent(secret).to_lowercase()),
            ("html", html),
            ("basic", STANDARD.encode(format!("merchant:{secret}"))),
            (
                "basic, 2-byte user",
                STANDARD.encode(format!("ab:{secret}")),
            ),
            (
                "basic, 3-byte user",
                STANDARD.encode(format!("abc:{secret}")),
            ),
            ("base64url", URL_SAFE_NO_PAD.encode(secret)),
            ("lower case", secret.to_lowercase()),
            ("upper case", secret.to_uppercase()),
        ]
    }

    fn percent(text: &str) -> String {
        text.bytes()
            .map(|byte| {
                if byte.is_ascii_alphanumeric() {
                    char::from(byte).to_string()
                } else {
                    format!("%{byte:02X}")
                }
            })
            .collect()
    }

    /// The name of the first encoding of `secret` that survives in `shown`.
    fn leaked(secret: &str, shown: &str) -> Option<String> {
        encodings(secret)
            .into_iter()
            .filter(|(_, form)| shown.contains(form.as_str()))
            .map(|(name, _)| name.to_string())
            .next()
    }

    #[test]
    fn no_encoding_of_an_awkward_secret_survives() {
        for secret in awkward_secrets() {
            let secrets = Secrets::new([secret.clone()]);
            for (name, form) in encodings(&secret) {
                let text = format!("{{\"message\":\"invalid token {form} for merchant\"}}");
                let shown = secrets.redact(&text);
                assert_eq!(
                    leaked(&secret, &shown),
                    None,
                    "{name} of {secret:?} survives in {shown}"
                );
                assert!(shown.contains(MASK), "{name} of {secret:?}: {shown}");
                assert!(shown.contains("invalid token"), "{shown}");
            }
        }
    }

    #[test]
    fn the_reported_php_escape_is_masked() {
        let secrets = Secrets::new(["Zm9vYmFyLzEy/K3+q9=="]);
        assert_eq!(
            secrets.redact(r#""invalid token Zm9vYmFyLzEy\/K3+q9==""#),
            r#""invalid token ***""#
        );
    }

    #[test]
    fn text_without_secrets_is_untouched_and_borrowed() {
        let secrets = Secrets::new(["s3cret-token"]);
        let text = "nothing to see, a token-like s3cret-tokem word";
        assert!(matches!(secrets.redact(text), Cow::Borrowed(_)));
        assert!(matches!(Secrets::default().redact(text), Cow::Borrowed(_)));
    }

    #[test]
    fn values_and_keys_are_redacted_and_debug_never_shows_a_secret() {
        let secrets = Secrets::new(["k/ey", ""]);
        let mut value = serde_json::json!({"k\\/ey": ["a k%2Fey", 1, {"x": "K/EY"}]});
        secrets.redact_value(&mut value);
        assert_eq!(
            value,
            serde_json::json!({"***": ["a ***", 1, {"x": "***"}]})
        );
        assert_eq!(format!("{secrets:?}"), "Secrets(1 redacted)");
    }
}
