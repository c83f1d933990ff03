//! Offset bookkeeping of one pipeline: per partition, the lowest offset not
//! yet finished is what may be committed (DESIGN §8). Records finish out of
//! order (different keys proceed concurrently), so a finished record above an
//! unfinished one is not committed until everything below it is done.

use std::collections::{BTreeSet, HashMap};

/// Which records were received and which finished, per partition.
#[derive(Debug, Default)]
pub struct Progress {
    /// Received and not yet finished.
    outstanding: HashMap<i32, BTreeSet<i64>>,
    /// One past the latest record received.
    polled_up_to: HashMap<i32, i64>,
    /// What was last handed out to commit.
    committed: HashMap<i32, i64>,
}

impl Progress {
    /// A record was taken for processing.
    pub fn received(&mut self, partition: i32, offset: i64) {
        self.outstanding
            .entry(partition)
            .or_default()
            .insert(offset);
        // The latest position, not the highest ever: after a rebalance a
        // partition can come back at a lower offset, and nothing past what
        // was received since may be committed.
        self.polled_up_to.insert(partition, offset + 1);
    }

    /// A record is done (processed, skipped or dead-lettered).
    pub fn finished(&mut self, partition: i32, offset: i64) {
        if let Some(set) = self.outstanding.get_mut(&partition) {
            set.remove(&offset);
        }
    }

    /// The commits due since the last call, as `(partition, next offset)`:
    /// below the latest record received, everything not outstanding is done.
    pub fn due(&mut self) -> Vec<(i32, i64)> {
        let mut due = Vec::new();
        for (&partition, &up_to) in &self.polled_up_to {
            let next = self
                .outstanding
                .get(&partition)
                .and_then(|s| s.first().copied())
                .map_or(up_to, |first| first.min(up_to));
            // `!=`, not `>`: after a rebalance the position may be lower than
            // what this instance committed before; going back only redelivers.
            if self.committed.get(&partition) != Some(&next) {
                self.committed.insert(partition, next);
                due.push((partition, next));
            }
        }
        due.sort_unstable();
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_is_due_before_anything_is_received() {
        assert!(Progress::default().due().is_empty());
    }

    #[test]
    fn an_unfinished_record_holds_back_those_finished_after_it() {
        let mut progress = Progress::default();
        for offset in 10..13 {
            progress.received(0, offset);
        }
        assert_eq!(progress.due(), [(0, 10)]);
        progress.finished(0, 11);
        progress.finished(0, 12);
        assert!(progress.due().is_empty(), "10 is still in flight");
        progress.finished(0, 10);
        assert_eq!(progress.due(), [(0, 13)]);
        assert!(progress.due().is_empty(), "a commit is handed out once");
    }

    #[test]
    fn partitions_are_counted_apart() {
        let mut progress = Progress::default();
        progress.received(0, 5);
        progress.received(1, 7);
        progress.finished(1, 7);
        assert_eq!(progress.due(), [(0, 5), (1, 8)]);
    }

    #[test]
    fn a_partition_that_comes_back_lower_commits_lower() {
        let mut progress = Progress::default();
        progress.received(0, 20);
        progress.finished(0, 20);
        assert_eq!(progress.due(), [(0, 21)]);
        // After a rebalance the partition is read again from 15.
        progress.received(0, 15);
        assert_eq!(progress.due(), [(0, 15)]);
        progress.finished(0, 15);
        assert_eq!(progress.due(), [(0, 16)]);
    }
}
