//! A courier's status table: its raw status strings mapped onto the canonical
//! vocabulary (DESIGN §9), matched trimmed, whitespace-collapsed and
//! case-insensitive; a key ending in `*` matches by prefix, the longest first.
//!
//! ```yaml
//! statuses:
//!   table:
//!     "Booked": booked
//!     "Attempt Made:*": { status: delivery_failed, sub_status: attempted }
//!   unknown: unknown
//! ```

use crate::model::Status;
use std::collections::BTreeMap;

/// What a raw courier status means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusMatch {
    pub status: Status,
    pub sub_status: Option<String>,
}

/// Raw courier status → canonical status.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusTable {
    exact: BTreeMap<String, StatusMatch>,
    prefixes: Vec<(String, StatusMatch)>,
    /// Written keys by their normalised form, so a repeat can name the first.
    written: BTreeMap<String, String>,
    /// Status given to anything not in the table.
    pub unknown: Status,
}

impl StatusTable {
    /// An empty table giving `unknown` to everything.
    pub fn new(unknown: Status) -> StatusTable {
        StatusTable {
            exact: BTreeMap::new(),
            prefixes: Vec::new(),
            written: BTreeMap::new(),
            unknown,
        }
    }

    /// Adds the entry written as `key`. When another key already stands for
    /// the same normalised status, the entry is not added and the error is
    /// that other key as it was written.
    pub fn insert(&mut self, key: &str, found: StatusMatch) -> Result<(), String> {
        let normalised = normalise_status(key);
        if let Some(first) = self.written.get(&normalised) {
            return Err(first.clone());
        }
        self.written.insert(normalised.clone(), key.to_string());
        match normalised.strip_suffix('*') {
            Some(prefix) => self.prefixes.push((prefix.to_string(), found)),
            None => {
                self.exact.insert(normalised, found);
            }
        }
        Ok(())
    }

    /// The entry for `raw`, if the table has one.
    pub fn find(&self, raw: &str) -> Option<&StatusMatch> {
        let key = normalise_status(raw);
        self.exact.get(&key).or_else(|| {
            self.prefixes
                .iter()
                .filter(|(prefix, _)| key.starts_with(prefix.as_str()))
                .max_by_key(|(prefix, _)| prefix.len())
                .map(|(_, found)| found)
        })
    }

    /// The entry for `raw`, or the table's `unknown` status.
    pub fn lookup(&self, raw: &str) -> StatusMatch {
        self.find(raw).cloned().unwrap_or(StatusMatch {
            status: self.unknown,
            sub_status: None,
        })
    }
}

/// Trimmed, inner whitespace collapsed to one space, lowercased.
pub fn normalise_status(raw: &str) -> String {
    raw.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(status: Status) -> StatusMatch {
        StatusMatch {
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
        assert_eq!(
            table.lookup(" attempt made: not home").status,
            Status::DeliveryFailed
        );
        assert_eq!(table.lookup("Attempted").status, Status::Exception);
        assert_eq!(
            table.insert("attempt made:*", entry(Status::Delivered)),
            Err("Attempt  Made:*".to_string())
        );
    }
}
