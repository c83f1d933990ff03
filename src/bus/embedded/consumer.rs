//! A consumer-group member of the embedded bus: reads partition 0 of one
//! topic from its position on, waits for appends (woken by the writer, and
//! rechecking for appends by other processes), and commits through the writer.

use super::EmbeddedBus;
use super::codec::{BATCH_MESSAGES, read_records};
use super::writer::WriteOp;
use crate::bus::{BusError, Consumer};
use crate::model::Record;
use async_trait::async_trait;
use std::collections::VecDeque;
use std::time::Duration;
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

/// A consumer-group member reading partition 0 of one topic.
pub struct EmbeddedConsumer {
    bus: EmbeddedBus,
    appended: watch::Receiver<u64>,
    topic: String,
    group: String,
    /// The next offset to return; moves on poll, unlike the committed offset.
    position: i64,
    /// Records read from `position` on but not yet returned: the rest of a
    /// row that a poll took only part of, so that small polls do not decode
    /// the same row again and again.
    ahead: VecDeque<Record>,
}

impl EmbeddedConsumer {
    /// A member of `group` reading `topic` from `position` on.
    pub(super) fn new(bus: &EmbeddedBus, topic: &str, group: &str, position: i64) -> Self {
        EmbeddedConsumer {
            bus: bus.clone(),
            appended: bus.inner.appended.clone(),
            topic: topic.to_string(),
            group: group.to_string(),
            position,
            ahead: VecDeque::new(),
        }
    }
}

#[async_trait]
impl Consumer for EmbeddedConsumer {
    async fn poll(&mut self, max: usize, wait: Duration) -> Result<Vec<Record>, BusError> {
        // A wait too long to represent is as good as waiting forever.
        let deadline = Instant::now()
            .checked_add(wait)
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(365 * 24 * 3600));
        loop {
            if max > 0 && !self.ahead.is_empty() {
                let taken = max.min(self.ahead.len());
                let records: Vec<Record> = self.ahead.drain(..taken).collect();
                if let Some(last) = records.last() {
                    self.position = last.offset + 1;
                }
                return Ok(records);
            }
            // Marking the current version seen before reading means an append
            // that commits after the read still wakes the wait below.
            self.appended.borrow_and_update();
            let wanted = if max == 0 {
                0
            } else {
                max.saturating_add(BATCH_MESSAGES)
            };
            let mut records = read_records(
                &self.bus.inner.pools.read,
                &self.topic,
                self.position,
                wanted,
            )
            .await?;
            if records.len() > max {
                self.ahead.extend(records.drain(max..));
            }
            if let Some(last) = records.last() {
                self.position = last.offset + 1;
                return Ok(records);
            }
            let now = Instant::now();
            if max == 0 || now >= deadline {
                return Ok(Vec::new());
            }
            let recheck = deadline.min(now + self.bus.inner.recheck);
            tokio::select! {
                changed = self.appended.changed() => changed.map_err(|_| BusError::Closed)?,
                () = tokio::time::sleep_until(recheck) => {}
            }
        }
    }

    async fn commit(&mut self, partition: i32, next_offset: i64) -> Result<(), BusError> {
        // A commit for a partition that does not exist would hold back `trim` forever.
        if partition != 0 {
            return Err(BusError::invalid(format!(
                "topic {} has only partition 0, cannot commit partition {partition}",
                self.topic
            )));
        }
        let (done, answer) = oneshot::channel();
        self.bus
            .send(WriteOp::Commit {
                topic: self.topic.clone(),
                group: self.group.clone(),
                next_offset,
                done,
            })
            .await?;
        answer.await.map_err(|_| BusError::Closed)?
    }
}
