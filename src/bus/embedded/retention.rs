//! Retention of the embedded bus: what every consumer group has committed
//! past and is older than the retention is deleted, a whole row at a time;
//! dead letters stay until an operator deals with them (DESIGN §8).

use super::EmbeddedBus;
use crate::bus::BusError;
use crate::clock::{earlier, timestamp};
use std::time::Duration;
use time::OffsetDateTime;

/// Messages deleted per statement when trimming, so the writer is never held long.
const TRIM_CHUNK: i64 = 10_000;

/// Dead-letter topics are kept until an operator deals with them.
const DEAD_LETTER_PREFIX: &str = "dlq.";

impl EmbeddedBus {
    /// Deletes messages that every consumer group of their topic has
    /// committed past and that are older than `retention` (DESIGN §8).
    /// Topics nobody consumes are trimmed by age alone; dead-letter topics
    /// (`dlq.*`) are never trimmed. Returns how many messages were deleted.
    pub async fn trim(&self, retention: Duration) -> Result<u64, BusError> {
        let cutoff = timestamp(earlier(OffsetDateTime::now_utc(), retention));
        let topics: Vec<(String, i64, Option<i64>, Option<i64>)> = sqlx::query_as(
            "SELECT t.topic, t.next_offset, \
             (SELECT MIN(o.next_offset) FROM bus_offsets o WHERE o.topic = t.topic), \
             (SELECT MIN(b.seq) FROM bus_batches b WHERE b.topic = t.topic) \
             FROM bus_topics t",
        )
        .fetch_all(&self.inner.pools.read)
        .await
        .map_err(BusError::from)?;
        let mut deleted = 0;
        for (topic, next_offset, committed, first) in topics {
            if topic.starts_with(DEAD_LETTER_PREFIX) {
                continue;
            }
            let Some(from) = first else { continue };
            let below = committed.unwrap_or(next_offset);
            deleted += self.trim_topic(&topic, from, below, &cutoff).await?;
        }
        Ok(deleted)
    }

    /// Deletes the rows of `topic` from offset `from` that lie wholly below
    /// `below` and were appended before `cutoff`, chunk by chunk.
    async fn trim_topic(
        &self,
        topic: &str,
        mut from: i64,
        below: i64,
        cutoff: &str,
    ) -> Result<u64, BusError> {
        let mut deleted = 0;
        while from < below {
            let to = below.min(from.saturating_add(TRIM_CHUNK));
            // A batch goes only whole: once every group is past its last message.
            let gone: Vec<(i64, i64)> = sqlx::query_as(
                "DELETE FROM bus_batches WHERE topic = $1 AND seq >= $2 AND seq < $3 \
                 AND seq + messages <= $4 AND appended_at < $5 RETURNING seq + messages, messages",
            )
            .bind(topic)
            .bind(from)
            .bind(to)
            .bind(below)
            .bind(cutoff)
            .fetch_all(&self.inner.pools.write)
            .await
            .map_err(BusError::from)?;
            deleted += gone
                .iter()
                .map(|(_, messages)| u64::try_from(*messages).unwrap_or(0))
                .sum::<u64>();
            // Batches follow each other without gaps, in time order: one
            // that stays (too young, or not read through) keeps all later
            // ones, so what went is a run from `from`, and it ends short
            // of `to` only where a batch stayed.
            let Some(end) = gone.iter().map(|(end, _)| *end).max() else {
                break;
            };
            if end < to {
                break;
            }
            from = end;
        }
        Ok(deleted)
    }
}

#[cfg(test)]
mod tests {
    use super::super::DATABASE_FILE;
    use super::super::tests::{append, keys, message, offsets, open, publish_numbered};
    use super::super::writer::write_batch;
    use crate::bus::Bus;
    use crate::store::sqlite;
    use std::time::Duration;

    #[tokio::test]
    async fn trim_keeps_what_a_group_has_not_committed_and_all_dead_letters() {
        let dir = tempfile::tempdir().unwrap();
        let bus = open(dir.path()).await;
        publish_numbered(&bus, "orders", 10, b"o").await;
        for topic in ["dlq.shopify-orders", "unread"] {
            publish_numbered(&bus, topic, 3, b"d").await;
        }
        let mut fast = bus.subscribe("orders", "fast").await.unwrap();
        let mut slow = bus.subscribe("orders", "slow").await.unwrap();
        fast.commit(0, 8).await.unwrap();
        slow.commit(0, 4).await.unwrap();

        assert_eq!(bus.trim(Duration::from_secs(3600)).await.unwrap(), 0);
        assert_eq!(bus.trim(Duration::ZERO).await.unwrap(), 4 + 3);
        assert_eq!(
            offsets(&bus, "orders", 0).await,
            (4..10).collect::<Vec<_>>()
        );
        assert_eq!(
            bus.read("dlq.shopify-orders", 0, 100).await.unwrap().len(),
            3
        );
        assert!(bus.read("unread", 0, 100).await.unwrap().is_empty());
        // Offsets keep counting after trimming, even for an emptied topic.
        assert_eq!(bus.publish("unread", message("k", b"")).await.unwrap(), 3);
        assert_eq!(slow.poll(100, Duration::ZERO).await.unwrap()[0].offset, 4);
    }

    #[tokio::test]
    async fn trim_removes_a_batch_only_once_every_group_is_past_all_of_it() {
        let dir = tempfile::tempdir().unwrap();
        let bus = open(dir.path()).await;
        let mut batch: Vec<_> = (0..10)
            .map(|i| append("orders", &i.to_string(), b"o".to_vec()).0)
            .collect();
        let db = sqlite::owned_writer(&dir.path().join(DATABASE_FILE)).unwrap();
        write_batch(&db, &mut batch, &mut []).unwrap();
        for i in 10..13 {
            bus.publish("orders", message(&i.to_string(), b"o"))
                .await
                .unwrap();
        }
        let mut group = bus.subscribe("orders", "g").await.unwrap();
        group.commit(0, 9).await.unwrap();
        assert_eq!(bus.trim(Duration::ZERO).await.unwrap(), 0);
        group.commit(0, 12).await.unwrap();
        assert_eq!(bus.trim(Duration::ZERO).await.unwrap(), 12);
        assert_eq!(keys(&bus, "orders", 0).await, ["12"]);
    }
}
