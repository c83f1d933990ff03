//! The bus: topics with keys, headers, per-key order and consumer groups
//! with committed offsets (DESIGN §1, §2).
//!
//! Backends implement [`Bus`]; the embedded default is a durable log in
//! SQLite ([`embedded`]). Pipelines only ever see the trait, so switching
//! `bus:` in `waybill.yaml` changes no pipeline.

pub mod dead_letter;
pub mod embedded;
mod error;
pub mod kafka;

pub use error::{BusError, Cause};

use crate::model::{Message, Record};
use async_trait::async_trait;

/// A place in a topic: an offset of one of its partitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopicOffset<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
}

/// A durable, ordered log of topics.
#[async_trait]
pub trait Bus: Send + Sync + 'static {
    /// Appends a message; when this returns `Ok` the message is durable.
    /// Returns the message's offset.
    async fn publish(&self, topic: &str, message: Message) -> Result<i64, BusError>;

    /// Opens a consumer of `topic` for consumer group `group`, positioned
    /// after the group's committed offset.
    async fn subscribe(&self, topic: &str, group: &str) -> Result<Box<dyn Consumer>, BusError>;

    /// Reads messages of a topic from `from` (inclusive) without a group,
    /// for inspection (`waybill dlq`).
    async fn read(&self, topic: &str, from: i64, limit: usize) -> Result<Vec<Record>, BusError>;

    /// Reads messages of one partition of a topic from an offset
    /// (inclusive), for inspection: a partition holds offsets of its own.
    async fn read_partition(
        &self,
        from: TopicOffset<'_>,
        limit: usize,
    ) -> Result<Vec<Record>, BusError>;

    /// The partitions of a topic, in order, for inspection.
    async fn partitions(&self, topic: &str) -> Result<Vec<i32>, BusError>;

    /// Topics that exist, for inspection.
    async fn topics(&self) -> Result<Vec<String>, BusError>;

    /// Whether the bus can take a write right now (`/readyz`).
    async fn check(&self) -> Result<(), BusError>;

    /// Releases the bus at shutdown, once nothing uses it any more.
    async fn close(&self) {}
}

/// One consumer-group member reading one topic.
#[async_trait]
pub trait Consumer: Send {
    /// Waits until at least one record is available (or `wait` elapses,
    /// returning an empty batch) and returns up to `max` records in offset order.
    async fn poll(
        &mut self,
        max: usize,
        wait: std::time::Duration,
    ) -> Result<Vec<Record>, BusError>;

    /// Commits `next_offset` for `partition`: everything below it is done.
    async fn commit(&mut self, partition: i32, next_offset: i64) -> Result<(), BusError>;

    /// Stops fetching for every assigned partition, now and after any
    /// rebalance, until `resume`: for a caller that cannot take more records
    /// for a while but must keep calling `poll` (a Kafka group member that
    /// stops polling is dropped from its group). Records fetched before the
    /// pause may still be returned; nothing is skipped, fetching resumes
    /// after the last record returned.
    ///
    /// Returns false when there is nothing to pause: the consumer only reads
    /// when polled, and the caller should simply stop polling meanwhile.
    fn pause(&mut self) -> Result<bool, BusError> {
        Ok(false)
    }

    /// Undoes `pause`.
    fn resume(&mut self) -> Result<(), BusError> {
        Ok(())
    }
}
