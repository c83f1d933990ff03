//! A courier's status table: its raw status strings mapped onto the canonical
//! vocabulary (DESIGN §9). A raw status is tried, in this order:
//!
//! 1. against the exact keys, trimmed, whitespace-collapsed and case-folded;
//! 2. against the keys ending in `*`, by prefix, the longest first; what
//!    follows the prefix (trimmed) is the courier's `reason`;
//! 3. against the `rules`, in the order written: a regex searched in the
//!    trimmed, whitespace-collapsed status, ignoring case; a capture named
//!    `reason` is the reason;
//! 4. otherwise it is `unknown` (or what `unknown:` names), and never moves a
//!    shipment.
//!
//! ```yaml
//! statuses:
//!   table:
//!     "Booked": booked
//!     "Delivery Under Review": { status: delivery_failed, sub_status: awaiting_shipper_advice }
//!     "Attempt Made:*": delivery_failed          # "Attempt Made: CNEE not home" → reason "CNEE not home"
//!   rules:
//!     - { regex: "^undelivered due to (?P<reason>.+)$", status: delivery_failed, sub_status: address_issue }
//!   unknown: unknown
//! ```

use crate::model::Status;
use regex::Regex;
use std::collections::BTreeMap;

/// What a table entry or rule maps a raw status onto.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusEntry {
    pub status: Status,
    pub sub_status: Option<String>,
}

/// Which step of the matcher recognised a raw status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchedBy {
    /// An exact key of the table.
    Exact,
    /// A key ending in `*`.
    Prefix,
    /// One of the `rules`.
    Rule,
    /// Nothing: the status is the table's `unknown` one, to be counted so
    /// the table can be fixed.
    Nothing,
}

/// What a raw courier status means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusMatch {
    pub status: Status,
    pub sub_status: Option<String>,
    /// The courier's own words after a prefix, or a rule's `reason` capture;
    /// never empty.
    pub reason: Option<String>,
    pub matched_by: MatchedBy,
}

impl StatusMatch {
    /// The courier's raw status was not recognised.
    pub fn is_unmatched(&self) -> bool {
        self.matched_by == MatchedBy::Nothing
    }
}

/// One declared regex rule.
#[derive(Debug, Clone)]
struct Rule {
    regex: Regex,
    entry: StatusEntry,
}

/// Raw courier status → canonical status.
#[derive(Debug, Clone)]
pub struct StatusTable {
    exact: BTreeMap<String, StatusEntry>,
    /// Normalised prefixes (without the `*`), longest first.
    prefixes: Vec<(String, StatusEntry)>,
    rules: Vec<Rule>,
    /// Written keys by their normalised form, so a repeat can name the first.
    written: BTreeMap<String, String>,
    /// Status given to anything the table does not recognise.
    pub unknown: Status,
}

impl StatusTable {
    /// An empty table giving `unknown` to everything.
    pub fn new(unknown: Status) -> StatusTable {
        StatusTable {
            exact: BTreeMap::new(),
            prefixes: Vec::new(),
            rules: Vec::new(),
            written: BTreeMap::new(),
            unknown,
        }
    }

    /// Adds the entry written as `key` (a prefix when it ends in `*`). When
    /// another key already stands for the same normalised status, the entry
    /// is not added and the error is that other key as it was written.
    pub fn insert(&mut self, key: &str, entry: StatusEntry) -> Result<(), String> {
        let mut normalised = normalise_status(key);
        if let Some(prefix) = normalised.strip_suffix('*') {
            // "Attempt Made: *" must still match "Attempt Made:Refused".
            normalised = format!("{}*", prefix.trim_end());
        }
        if let Some(first) = self.written.get(&normalised) {
            return Err(first.clone());
        }
        self.written.insert(normalised.clone(), key.to_string());
        match normalised.strip_suffix('*') {
            Some(prefix) => {
                let prefix = prefix.to_string();
                let at = self
                    .prefixes
                    .partition_point(|(p, _)| p.len() >= prefix.len());
                self.prefixes.insert(at, (prefix, entry));
            }
            None => {
                self.exact.insert(normalised, entry);
            }
        }
        Ok(())
    }

    /// Adds a rule after those already added; `pattern` is compiled ignoring
    /// case, and the error is the regex crate's own message.
    pub fn add_rule(&mut self, pattern: &str, entry: StatusEntry) -> Result<(), String> {
        let regex = regex::RegexBuilder::new(pattern)
            .case_insensitive(true)
            .build()
            .map_err(|e| regex_problem(&e))?;
        self.rules.push(Rule { regex, entry });
        Ok(())
    }

    /// What `raw` means, if the table recognises it.
    pub fn find(&self, raw: &str) -> Option<StatusMatch> {
        let collapsed = collapse_whitespace(raw);
        let folded = fold_case(&collapsed);
        if let Some(entry) = self.exact.get(&folded) {
            return Some(matched(entry, None, MatchedBy::Exact));
        }
        // Longest first, so the first prefix that fits is the most specific.
        for (prefix, entry) in &self.prefixes {
            if let Some(tail) = strip_prefix_folded(&collapsed, prefix) {
                return Some(matched(entry, non_empty(tail), MatchedBy::Prefix));
            }
        }
        self.rules.iter().find_map(|rule| {
            let captures = rule.regex.captures(&collapsed)?;
            let reason = captures
                .name("reason")
                .and_then(|reason| non_empty(reason.as_str()));
            Some(matched(&rule.entry, reason, MatchedBy::Rule))
        })
    }

    /// What `raw` means: its match, or the table's `unknown` status.
    pub fn lookup(&self, raw: &str) -> StatusMatch {
        self.find(raw).unwrap_or(StatusMatch {
            status: self.unknown,
            sub_status: None,
            reason: None,
            matched_by: MatchedBy::Nothing,
        })
    }
}

/// The regex crate's message on one line: a syntax error is written over
/// several (the pattern, a caret under the fault, then `error: …`), which
/// would break the one-problem-per-line output of `validate`.
fn regex_problem(error: &regex::Error) -> String {
    let text = error.to_string();
    match text
        .lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix("error: "))
    {
        Some(what) => what.to_string(),
        None => collapse_whitespace(&text),
    }
}

fn matched(entry: &StatusEntry, reason: Option<String>, by: MatchedBy) -> StatusMatch {
    StatusMatch {
        status: entry.status,
        sub_status: entry.sub_status.clone(),
        reason,
        matched_by: by,
    }
}

fn non_empty(text: &str) -> Option<String> {
    Some(text.trim())
        .filter(|t| !t.is_empty())
        .map(str::to_string)
}

/// Trimmed, inner whitespace collapsed to one space, lowercased.
pub fn normalise_status(raw: &str) -> String {
    fold_case(&collapse_whitespace(raw))
}

/// Lowercased char by char, exactly as [`strip_prefix_folded`] compares.
fn fold_case(text: &str) -> String {
    text.chars().flat_map(char::to_lowercase).collect()
}

fn collapse_whitespace(raw: &str) -> String {
    raw.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// What follows `prefix` (lowercase) in `text`, compared case-folded. The
/// tail keeps the courier's case; folding a char may change its length, so
/// the two are walked side by side rather than cut at `prefix.len()`.
fn strip_prefix_folded<'t>(text: &'t str, prefix: &str) -> Option<&'t str> {
    if prefix.is_empty() {
        return Some(text);
    }
    let mut folded = String::new();
    for (at, c) in text.char_indices() {
        folded.extend(c.to_lowercase());
        if !prefix.starts_with(folded.as_str()) {
            return None;
        }
        if folded.len() == prefix.len() {
            return Some(&text[at + c.len_utf8()..]);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(status: Status) -> StatusEntry {
        StatusEntry {
            status,
            sub_status: None,
        }
    }

    #[test]
    fn prefixes_match_longest_first_and_repeats_are_refused() {
        let mut table = StatusTable::new(Status::Unknown);
        table.insert("Attempt*", entry(Status::Exception)).unwrap();
        table
            .insert("Attempt  Made:*", entry(Status::DeliveryFailed))
            .unwrap();
        let found = table.lookup(" attempt made:  Not   Home ");
        assert_eq!(found.status, Status::DeliveryFailed);
        assert_eq!(found.reason.as_deref(), Some("Not Home"));
        assert_eq!(found.matched_by, MatchedBy::Prefix);
        assert_eq!(table.lookup("Attempted").status, Status::Exception);
        assert_eq!(table.lookup("Attempted").reason.as_deref(), Some("ed"));
        assert_eq!(table.lookup("Attempt Made:").reason, None);
        assert_eq!(
            table.insert("attempt made:*", entry(Status::Delivered)),
            Err("Attempt  Made:*".to_string())
        );
    }

    #[test]
    fn exact_keys_come_before_prefixes_and_prefixes_before_rules() {
        let mut table = StatusTable::new(Status::Unknown);
        table
            .add_rule("return", entry(Status::Returning))
            .expect("regex");
        table.insert("Return*", entry(Status::OnHold)).unwrap();
        table.insert("Returned", entry(Status::Returned)).unwrap();
        assert_eq!(table.lookup("RETURNED").status, Status::Returned);
        assert_eq!(table.lookup("RETURNED").matched_by, MatchedBy::Exact);
        assert_eq!(table.lookup("Return pending").status, Status::OnHold);
        assert_eq!(table.lookup("Being return").status, Status::Returning);
        assert_eq!(table.lookup("Being return").matched_by, MatchedBy::Rule);
        let nothing = table.lookup("Teleported");
        assert_eq!(nothing.status, Status::Unknown);
        assert!(nothing.is_unmatched());
    }

    #[test]
    fn rules_apply_in_order_and_capture_the_reason_in_the_couriers_case() {
        let mut table = StatusTable::new(Status::Unknown);
        let failed = StatusEntry {
            status: Status::DeliveryFailed,
            sub_status: Some("address_issue".into()),
        };
        table
            .add_rule(r"^undelivered due to (?P<reason>.+)$", failed)
            .unwrap();
        table
            .add_rule("^undelivered", entry(Status::Exception))
            .unwrap();
        let found = table.lookup("  Undelivered  Due To   Incorrect Address ");
        assert_eq!(found.status, Status::DeliveryFailed);
        assert_eq!(found.sub_status.as_deref(), Some("address_issue"));
        assert_eq!(found.reason.as_deref(), Some("Incorrect Address"));
        let found = table.lookup("UNDELIVERED");
        assert_eq!((found.status, found.reason), (Status::Exception, None));
        assert_eq!(
            table.add_rule("(unclosed", entry(Status::Booked)),
            Err("unclosed group".to_string())
        );
    }

    #[test]
    fn a_prefix_compares_case_folded_whatever_the_length_of_a_folded_char() {
        // 'İ' folds to two chars: the tail must still start after it.
        assert_eq!(strip_prefix_folded("İade: kapı", "i̇ade:"), Some(" kapı"));
        assert_eq!(strip_prefix_folded("Attempt", "attempt made:"), None);
        assert_eq!(strip_prefix_folded("Attempted", "attempt"), Some("ed"));
    }
}
