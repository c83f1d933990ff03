//! What subcommands print on stdout: records as one line of tab-separated
//! fields, text from outside made safe for a terminal, and a quiet end when
//! the reader has gone (`waybill dlq list | head -1`).
//!
//! Order names, keys, reasons and courier messages come from stores and
//! couriers. Printed raw, an ESC would drive the operator's terminal and a
//! tab or newline would break the one-record-per-line format, so every field
//! goes through [`escape`]. JSON output needs nothing: serde escapes control
//! characters itself.

use std::borrow::Cow;
use std::io::Write;

/// Prints one line on stdout. A reader that has gone is an error the binary
/// ends on quietly (see [`is_closed_pipe`]); `println!` would panic instead.
pub fn line(text: &str) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}")?;
    out.flush()
}

/// One record: its fields escaped and joined by tabs.
pub fn record<'a>(fields: impl IntoIterator<Item = &'a str>) -> String {
    fields
        .into_iter()
        .map(escape)
        .collect::<Vec<_>>()
        .join("\t")
}

/// `text` with every control character, bidirectional override and
/// backslash written as an escape (`\t`, `\n`, `\r`, `\\`, `\u{1b}`), so the
/// line shows what the text holds and the terminal does nothing it says.
pub fn escape(text: &str) -> Cow<'_, str> {
    if !text.chars().any(needs_escape) {
        return Cow::Borrowed(text);
    }
    let mut escaped = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\t' => escaped.push_str("\\t"),
            '\n' => escaped.push_str("\\n"),
            '\r' => escaped.push_str("\\r"),
            '\\' => escaped.push_str("\\\\"),
            c if needs_escape(c) => escaped.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => escaped.push(c),
        }
    }
    Cow::Owned(escaped)
}

fn needs_escape(c: char) -> bool {
    // C0, DEL and C1 controls, then the marks and overrides that reorder
    // what a terminal shows (the "Trojan Source" characters).
    c == '\\'
        || c.is_control()
        || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// Whether `error` is stdout's reader having gone, which ends a listing
/// normally rather than as a failure.
pub fn is_closed_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_borrowed_unchanged() {
        assert!(matches!(escape("#1001 Ali Khan"), Cow::Borrowed(_)));
        assert_eq!(escape("کراچی"), "کراچی");
    }

    #[test]
    fn controls_and_overrides_are_escaped() {
        assert_eq!(escape("a\tb\nc\rd"), "a\\tb\\nc\\rd");
        assert_eq!(
            escape("\u{1b}[2J\u{1b}]0;x\u{7}"),
            "\\u{1b}[2J\\u{1b}]0;x\\u{7}"
        );
        assert_eq!(escape("\u{9b}31m\u{7f}"), "\\u{9b}31m\\u{7f}");
        assert_eq!(escape("abc\u{202e}fed"), "abc\\u{202e}fed");
        assert_eq!(escape(r"C:\orders"), r"C:\\orders");
    }

    #[test]
    fn a_record_stays_one_line_of_its_fields() {
        let line = record(["k:1", "#10\t01\nX", "-"]);
        assert_eq!(line.split('\t').count(), 3);
        assert!(!line.contains('\n'));
    }

    #[test]
    fn a_closed_pipe_is_recognised_through_context() {
        let error = anyhow::Error::from(std::io::Error::from(std::io::ErrorKind::BrokenPipe))
            .context("printing");
        assert!(is_closed_pipe(&error));
        assert!(!is_closed_pipe(&anyhow::anyhow!("other")));
    }
}
