//! Reading a Kafka topic for inspection (`waybill dlq`): partition by
//! partition, with a consumer that belongs to no group and commits nothing.
//!
//! A partition is read until the consumer is told it reached the end (a
//! partition-EOF event), not up to the high watermark the broker reports:
//! some Kafka-protocol brokers report a watermark short of the last offset
//! once the producer sends several records in one batch, and reading up to
//! it would silently leave records out.

use super::{METADATA_TIMEOUT, to_record};
use crate::bus::BusError;
use crate::model::Record;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::error::KafkaError;
use rdkafka::message::Message as _;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use std::time::{Duration, Instant};

/// How long `read` may spend on one partition, so a stuck fetch cannot hang
/// `waybill dlq`.
const READ_PARTITION_TIMEOUT: Duration = Duration::from_secs(10);

/// A reader on the brokers: one consumer for one inspection, dropped after.
pub(super) struct Reader {
    consumer: BaseConsumer,
    /// The topic's name on the brokers.
    topic: String,
    /// What is taken off topic names on the way back.
    prefix: String,
}

impl Reader {
    /// A reader of `topic` (its name on the brokers) with `config`, which
    /// must ask for partition-EOF events.
    pub(super) fn new(config: &ClientConfig, topic: &str, prefix: &str) -> Result<Self, BusError> {
        let consumer = config
            .create()
            .map_err(|e| BusError::kafka(format!("cannot create a reader for `{topic}`"), e))?;
        Ok(Reader {
            consumer,
            topic: topic.to_string(),
            prefix: prefix.to_string(),
        })
    }

    fn failed(&self, what: &str, error: KafkaError) -> BusError {
        BusError::kafka(format!("{what} `{}`", self.topic), error)
    }

    /// The topic's partitions in order; none when it does not exist.
    pub(super) fn partitions(&self) -> Result<Vec<i32>, BusError> {
        let metadata = self
            .consumer
            .fetch_metadata(Some(&self.topic), METADATA_TIMEOUT)
            .map_err(|e| self.failed("cannot fetch metadata of", e))?;
        let mut partitions: Vec<i32> = metadata
            .topics()
            .iter()
            .filter(|t| t.name() == self.topic && t.error().is_none())
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .collect();
        partitions.sort_unstable();
        Ok(partitions)
    }

    /// Up to `limit` records from offset `from` of each partition in turn.
    pub(super) fn read_topic(&self, from: i64, limit: usize) -> Result<Vec<Record>, BusError> {
        let mut records = Vec::new();
        for partition in self.partitions()? {
            if records.len() >= limit {
                break;
            }
            let left = limit - records.len();
            records.extend(self.read_partition(partition, from, left)?);
        }
        Ok(records)
    }

    /// Up to `limit` records of `partition` from offset `from` on, stopping
    /// at the partition's end as the consumer receives it.
    pub(super) fn read_partition(
        &self,
        partition: i32,
        from: i64,
        limit: usize,
    ) -> Result<Vec<Record>, BusError> {
        let mut records = Vec::new();
        if limit == 0 {
            return Ok(records);
        }
        self.assign(partition, from)?;
        let deadline = Instant::now() + READ_PARTITION_TIMEOUT;
        while records.len() < limit {
            if Instant::now() >= deadline {
                tracing::warn!(topic = %self.topic, partition, "reading the partition timed out; returning what was read");
                break;
            }
            match self.consumer.poll(Duration::from_millis(200)) {
                Some(Ok(message)) if message.partition() == partition => {
                    records.push(to_record(&message, &self.prefix));
                }
                // Transaction markers take offsets but are never returned:
                // the end event comes after them too.
                Some(Err(KafkaError::PartitionEOF(at))) if at == partition => break,
                Some(Ok(_)) | Some(Err(KafkaError::PartitionEOF(_))) | None => {}
                Some(Err(e)) => return Err(self.failed("cannot read", e)),
            }
        }
        Ok(records)
    }

    /// Positions the reader on `partition` at `from`, or at its first
    /// record still kept when `from` is older: positioned below that, the
    /// consumer would jump to the end.
    fn assign(&self, partition: i32, from: i64) -> Result<(), BusError> {
        let (low, _) = self
            .consumer
            .fetch_watermarks(&self.topic, partition, METADATA_TIMEOUT)
            .map_err(|e| self.failed("cannot fetch offsets of", e))?;
        let mut assignment = TopicPartitionList::new();
        assignment
            .add_partition_offset(&self.topic, partition, Offset::Offset(from.max(low)))
            .map_err(|e| self.failed("cannot position a reader on", e))?;
        self.consumer
            .assign(&assignment)
            .map_err(|e| self.failed("cannot assign", e))
    }
}
