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
