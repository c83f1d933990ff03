//! Located problems found while compiling configuration, connectors and
//! mappings, printed as `FILE:LINE:COL: message` (a leaf: it imports nothing
//! from the crate, so every part that reports problems can use it).
//!
//! A compile pass collects every problem into [`Diagnostics`] rather than
//! stopping at the first, then hands back either its result or all of them.

use std::fmt;
use std::path::{Path, PathBuf};

/// Where something was written in a file: 1-based line and column; `0:0`
/// when there is no position (e.g. a file that cannot be read at all).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    pub line: usize,
    pub column: usize,
}

impl Position {
    pub const fn new(line: usize, column: usize) -> Position {
        Position { line, column }
    }

    /// The start of a file, for problems that concern the whole of it.
    pub const START: Position = Position { line: 1, column: 1 };
}

/// One located problem, printed as `FILE:LINE:COL: message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: PathBuf,
    /// 1-based; 0 when the problem has no position (e.g. a missing file).
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl Diagnostic {
    pub fn new(
        file: impl Into<PathBuf>,
        line: usize,
        column: usize,
        message: impl Into<String>,
    ) -> Self {
        Diagnostic {
            file: file.into(),
            line,
            column,
            message: message.into(),
        }
    }

    /// A problem at `at` in `file`.
    pub fn at(file: impl Into<PathBuf>, at: Position, message: impl Into<String>) -> Self {
        Diagnostic::new(file, at.line, at.column, message)
    }

    pub fn position(&self) -> Position {
        Position::new(self.line, self.column)
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file.display(),
            self.line,
            self.column,
            self.message
        )
    }
}

/// Every problem a compile pass found so far.
#[derive(Debug, Default)]
pub struct Diagnostics {
    found: Vec<Diagnostic>,
}

impl Diagnostics {
    /// Records a problem at `at` in `file`.
    pub fn report(&mut self, file: &Path, at: Position, message: impl Into<String>) {
        self.found.push(Diagnostic::at(file, at, message));
    }

    /// Records problems found by another pass (a mapping a connector uses, …).
    pub fn extend(&mut self, found: impl IntoIterator<Item = Diagnostic>) {
        self.found.extend(found);
    }

    /// How many problems are recorded; a step compares it before and after
    /// to tell whether it found any.
    pub fn count(&self) -> usize {
        self.found.len()
    }

    pub fn is_empty(&self) -> bool {
        self.found.is_empty()
    }

    /// `value` when nothing was reported, otherwise every problem, sorted.
    /// A pass that gives no value without reporting why still fails, with
    /// `fallback` as its message.
    pub fn finish<T>(
        self,
        value: Option<T>,
        file: &Path,
        fallback: &str,
    ) -> Result<T, Vec<Diagnostic>> {
        match value {
            Some(value) if self.found.is_empty() => Ok(value),
            _ if self.found.is_empty() => {
                Err(vec![Diagnostic::at(file, Position::START, fallback)])
            }
            _ => Err(self.into_sorted()),
        }
    }

    /// Problems grouped by file in the order files were first reported, then
    /// by position; exact repeats are dropped.
    pub fn into_sorted(self) -> Vec<Diagnostic> {
        let mut order: Vec<PathBuf> = Vec::new();
        for d in &self.found {
            if !order.contains(&d.file) {
                order.push(d.file.clone());
            }
        }
        let rank = |d: &Diagnostic| order.iter().position(|f| *f == d.file);
        let mut sorted = self.found;
        sorted.sort_by_key(|d| (rank(d), d.line, d.column));
        sorted.dedup();
        sorted
    }
}

/// The closest candidate to a misspelt `word`, if one is close enough.
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let limit = (word.chars().count() / 3).max(1);
    candidates
        .into_iter()
        .map(|c| (edit_distance(word, c), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// What follows an unknown `word` in a message: its [`suggestion`] among
/// `known`, then `; ` and `none` when nothing is known, or the known names
/// after `label`, as in ` (did you mean `a`?); available: a, b`.
pub fn alternatives(word: &str, known: &[&str], none: &str, label: &str) -> String {
    let mut text = suggestion(word, known.iter().copied());
    if known.is_empty() {
        text.push_str(&format!("; {none}"));
    } else {
        text.push_str(&format!("; {label}: {}", known.join(", ")));
    }
    text
}

/// ` (did you mean `x`?)` for a misspelt `word`, or nothing.
pub fn suggestion<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    did_you_mean(word, candidates)
        .map(|s| format!(" (did you mean `{s}`?)"))
        .unwrap_or_default()
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = diagonal + usize::from(ca != *cb);
            diagonal = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(diagonal + 1);
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions() {
        assert_eq!(did_you_mean("postx", ["postex", "sandbox"]), Some("postex"));
        assert_eq!(did_you_mean("zzz", ["postex", "sandbox"]), None);
    }

    #[test]
    fn sorted_by_file_first_reported_then_position() {
        let mut found = Diagnostics::default();
        found.report(Path::new("b.yaml"), Position::new(3, 1), "late");
        found.report(Path::new("a.yaml"), Position::new(1, 1), "other file");
        found.report(Path::new("b.yaml"), Position::new(1, 2), "early");
        found.report(Path::new("b.yaml"), Position::new(1, 2), "early");
        let messages: Vec<String> = found.into_sorted().into_iter().map(|d| d.message).collect();
        assert_eq!(messages, ["early", "late", "other file"]);
    }
}
