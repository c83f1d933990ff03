//! A consumer-group member of the Kafka bus: polls what the group assigns
//! it, commits explicitly, and pauses its partitions (also those assigned
//! while paused) when the runner cannot take more.

use super::config::consumer_config;
use super::{Health, to_record};
use crate::bus::{BusError, Cause, Consumer};
use crate::model::Record;
use async_trait::async_trait;
use futures::{FutureExt, StreamExt};
use rdkafka::client::ClientContext;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer as _, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Client context of a group consumer: logs rebalances and failed commits,
/// and pauses the partitions it is assigned while the consumer is paused.
struct GroupContext {
    topic: String,
    group: String,
    health: Arc<Health>,
    /// Set while the owner of the consumer cannot take records.
    paused: Arc<AtomicBool>,
}

impl ClientContext for GroupContext {
    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(topic = %self.topic, group = %self.group, error = %error, reason, "kafka consumer error");
        self.health.record(format!("{error} ({reason})"));
    }
}

impl ConsumerContext for GroupContext {
    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(list) => {
                tracing::info!(topic = %self.topic, group = %self.group, partitions = ?partition_ids(list), "partitions assigned");
                // A partition assigned while the runner is saturated would
                // otherwise start fetching into a queue nobody drains.
                if self.paused.load(Ordering::Relaxed)
                    && let Err(error) = consumer.pause(list)
                {
                    tracing::warn!(topic = %self.topic, group = %self.group, error = %error, "cannot pause newly assigned partitions");
                }
            }
            Rebalance::Revoke(list) => {
                // Records of these partitions still being processed here are
                // redelivered to the new owner; bookings are idempotent.
                tracing::info!(topic = %self.topic, group = %self.group, partitions = ?partition_ids(list), "partitions revoked");
            }
            Rebalance::Error(error) => {
                tracing::warn!(topic = %self.topic, group = %self.group, error = %error, "rebalance failed");
            }
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        if let Err(error) = result {
            let offsets: Vec<(i32, Offset)> = offsets
                .elements()
                .iter()
                .map(|e| (e.partition(), e.offset()))
                .collect();
            tracing::warn!(topic = %self.topic, group = %self.group, error = %error, ?offsets, "offset commit failed");
        }
    }
}

fn partition_ids(list: &TopicPartitionList) -> Vec<i32> {
    list.elements().iter().map(|e| e.partition()).collect()
}

/// A consumer-group member reading one topic.
pub struct KafkaConsumer {
    consumer: StreamConsumer<GroupContext>,
    /// The topic's name on the brokers, prefix included.
    topic: String,
    prefix: String,
    /// Shared with the context, which pauses partitions assigned meanwhile.
    paused: Arc<AtomicBool>,
    /// An error met after some records of a poll were taken: reported by
    /// the next poll, so those records are not dropped with it.
    deferred: Option<BusError>,
}

impl KafkaConsumer {
    /// Joins `group` (its name on the brokers) and subscribes it to `topic`
    /// (also the name on the brokers).
    pub(super) fn join(
        brokers: &str,
        properties: &BTreeMap<String, String>,
        topic: &str,
        group: &str,
        prefix: &str,
        health: Arc<Health>,
    ) -> Result<KafkaConsumer, BusError> {
        let paused = Arc::new(AtomicBool::new(false));
        let context = GroupContext {
            topic: topic.to_string(),
            group: group.to_string(),
            health,
            paused: paused.clone(),
        };
        let consumer: StreamConsumer<GroupContext> = consumer_config(brokers, properties, group)
            .create_with_context(context)
            .map_err(|e| {
                BusError::kafka(
                    format!("cannot create the kafka consumer for group `{group}`"),
                    e,
                )
            })?;
        consumer.subscribe(&[topic]).map_err(|e| {
            BusError::kafka(format!("cannot subscribe group `{group}` to `{topic}`"), e)
        })?;
        Ok(KafkaConsumer {
            consumer,
            topic: topic.to_string(),
            prefix: prefix.to_string(),
            paused,
            deferred: None,
        })
    }

    /// Pauses or resumes fetching the partitions assigned now. The flag is
    /// set first: a rebalance between the two steps then pauses or resumes
    /// what it assigns itself.
    fn set_paused(&self, paused: bool) -> Result<(), BusError> {
        self.paused.store(paused, Ordering::Relaxed);
        let assignment = self.assignment()?;
        if assignment.count() == 0 {
            return Ok(());
        }
        let (done, action) = if paused {
            (self.consumer.pause(&assignment), "pause")
        } else {
            (self.consumer.resume(&assignment), "resume")
        };
        done.map_err(|e| BusError::kafka(format!("cannot {action} `{}`", self.topic), e))
    }

    fn assignment(&self) -> Result<TopicPartitionList, BusError> {
        self.consumer.assignment().map_err(|e| {
            BusError::kafka(format!("cannot read the assignment of `{}`", self.topic), e)
        })
    }
}

#[async_trait]
impl Consumer for KafkaConsumer {
    async fn poll(&mut self, max: usize, wait: Duration) -> Result<Vec<Record>, BusError> {
        if let Some(error) = self.deferred.take() {
            return Err(error);
        }
        let unavailable =
            |topic: &str, e: KafkaError| BusError::kafka(format!("cannot consume `{topic}`"), e);
        let mut stream = self.consumer.stream();
        let first = match tokio::time::timeout(wait, stream.next()).await {
            Err(_) | Ok(None) => return Ok(Vec::new()),
            Ok(Some(first)) => first,
        };
        let first = first.map_err(|e| unavailable(&self.topic, e))?;
        let mut records = vec![to_record(&first, &self.prefix)];
        // Take what is already fetched without waiting again.
        while records.len() < max {
            match stream.next().now_or_never() {
                Some(Some(Ok(message))) => records.push(to_record(&message, &self.prefix)),
                Some(Some(Err(e))) => {
                    self.deferred = Some(unavailable(&self.topic, e));
                    break;
                }
                _ => break,
            }
        }
        Ok(records)
    }

    async fn commit(&mut self, partition: i32, next_offset: i64) -> Result<(), BusError> {
        let assignment = self.assignment()?;
        if assignment.find_partition(&self.topic, partition).is_none() {
            // Revoked: the new owner resumes from the last commit, and a late
            // commit from here could move its position.
            tracing::debug!(topic = %self.topic, partition, next_offset, "not committing a partition no longer assigned");
            return Ok(());
        }
        let mut offsets = TopicPartitionList::new();
        offsets
            .add_partition_offset(&self.topic, partition, Offset::Offset(next_offset))
            .map_err(|e| {
                BusError::Storage(Cause::Kafka {
                    what: format!(
                        "invalid offset {next_offset} for `{}`/{partition}",
                        self.topic
                    ),
                    source: e,
                })
            })?;
        // Asynchronous: failures reach `GroupContext::commit_callback`, and the
        // next commit carries a later offset anyway.
        self.consumer
            .commit(&offsets, CommitMode::Async)
            .map_err(|e| BusError::kafka(format!("cannot commit `{}`/{partition}", self.topic), e))
    }

    fn pause(&mut self) -> Result<bool, BusError> {
        self.set_paused(true)?;
        Ok(true)
    }

    fn resume(&mut self) -> Result<(), BusError> {
        self.set_paused(false)
    }
}
