//! Errors of the YAML reader: a syntax error, or a raw struct that could not
//! be read from a node, each pinned to the line and column at fault.

use super::tree::Seg;
use crate::diagnostic::{Position, did_you_mean};
use serde::de;
use std::fmt;

/// A problem found while reading a raw struct from a node.
#[derive(Debug, Clone, PartialEq)]
pub struct Error {
    /// 0 until the error is pinned to the node it came from.
    pub line: usize,
    pub column: usize,
    /// Where the error is, from the node deserialization started at.
    pub path: Vec<Seg>,
    pub(super) kind: Kind,
}

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Kind {
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
    /// serde's `invalid type` / `invalid value`, kept in parts so that a
    /// value from `${VAR}` substitution can be quoted as written.
    Invalid {
        /// `type` or `value`.
        what: &'static str,
        /// What was found, e.g. `string "x"`.
        unexpected: String,
        expected: String,
    },
}

impl Error {
    /// A problem with a message of its own at `at`.
    pub(super) fn message(at: Position, message: String) -> Error {
        Error {
            line: at.line,
            column: at.column,
            path: Vec::new(),
            kind: Kind::Message(message),
        }
    }

    pub fn position(&self) -> Position {
        Position::new(self.line, self.column)
    }

    /// The error with `value`, which came from `${VAR}` substitution, quoted
    /// as `written` instead: the expansion may be a secret.
    pub(super) fn quoting_as_written(mut self, value: &str, written: &str) -> Self {
        self.kind = match self.kind {
            Kind::Message(m) => Kind::Message(quote_as_written(&m, value, written)),
            Kind::UnknownVariant { expected, .. } => Kind::UnknownVariant {
                variant: written.to_string(),
                expected,
            },
            Kind::Invalid {
                what,
                unexpected,
                expected,
            } => Kind::Invalid {
                what,
                unexpected: format!("`{written}` ({})", found_kind(&unexpected)),
                expected,
            },
            kind @ (Kind::UnknownField { .. } | Kind::MissingField(_)) => kind,
        };
        self
    }

    pub(super) fn pin(mut self, line: usize, column: usize, path: &[Seg]) -> Self {
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
            Kind::Invalid {
                what,
                unexpected,
                expected,
            } => write!(f, "invalid {what}: {unexpected}, expected {expected}"),
        }
    }
}

impl std::error::Error for Error {}

impl Error {
    fn invalid(
        what: &'static str,
        unexpected: de::Unexpected<'_>,
        expected: &dyn de::Expected,
    ) -> Self {
        Error {
            line: 0,
            column: 0,
            path: Vec::new(),
            kind: Kind::Invalid {
                what,
                unexpected: unexpected.to_string(),
                expected: expected.to_string(),
            },
        }
    }
}

/// What kind of value serde's rendering of an unexpected value names,
/// without the value: `string "x"` is `a string`.
fn found_kind(unexpected: &str) -> &'static str {
    let kinds = [
        ("boolean", "a bool"),
        ("integer", "an integer"),
        ("floating point", "a number"),
        ("string", "a string"),
        ("character", "a string"),
    ];
    kinds
        .iter()
        .find(|(prefix, _)| unexpected.starts_with(prefix))
        .map_or("a value", |(_, kind)| kind)
}

/// `message` with every occurrence of `value` (which came from `${VAR}`
/// substitution) replaced by `written`, the text before substitution: the
/// one way a diagnostic quotes such a value, so a secret never reaches it.
/// A value of one or two characters is replaced only where it is quoted,
/// so as not to rewrite the words of the message around it.
pub fn quote_as_written(message: &str, value: &str, written: &str) -> String {
    if value.is_empty() {
        return message.to_string();
    }
    // serde quotes a string in its `Debug` form, escapes included.
    let message = message.replace(&format!("{value:?}"), &format!("{written:?}"));
    if value.chars().count() > 2 {
        return message.replace(value, written);
    }
    ["`", "\"", "'"].iter().fold(message, |m, q| {
        m.replace(&format!("{q}{value}{q}"), &format!("{q}{written}{q}"))
    })
}

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
    fn invalid_type(unexpected: de::Unexpected<'_>, expected: &dyn de::Expected) -> Self {
        Error::invalid("type", unexpected, expected)
    }
    fn invalid_value(unexpected: de::Unexpected<'_>, expected: &dyn de::Expected) -> Self {
        Error::invalid("value", unexpected, expected)
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
