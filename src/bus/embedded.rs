//! The embedded bus: a durable log in SQLite (WAL) under the data directory,
//! in the same database file as the store.
//!
//! ```yaml
//! data_dir: ./data          # the log lives in <data_dir>/waybill.db
//! bus: { kind: embedded }
//! ```
//!
//! Every topic has one partition (0) whose offsets count up from 0. All
//! writes of the process go through one connection: appends and offset
//! commits are queued to a writer task that commits everything pending in
//! one transaction (group commit) and then answers each caller, so many
//! concurrent publishers cost one fsync-free WAL commit per batch.

use super::{Bus, BusError, Consumer};
use crate::model::{Headers, Message, Record};
use crate::store::sql::{SqlStore, earlier, timestamp};
use crate::store::sqlite::{self, SqlitePools};
use async_trait::async_trait;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool};
use sqlx::{QueryBuilder, Sqlite};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

/// Name of the database file under the data directory.
pub const DATABASE_FILE: &str = "waybill.db";

/// Most operations committed in one transaction.
const MAX_BATCH: usize = 2048;

/// Operations waiting for the writer; a full queue makes publishers wait.
const QUEUE_DEPTH: usize = 16 * 1024;

/// Rows per multi-row INSERT (6 parameters each, well under SQLite's limit).
const INSERT_CHUNK: usize = 64;

/// Consumers also look for new records this often, because another process
/// (such as `waybill dlq replay`) may append without waking this one.
const RECHECK: Duration = Duration::from_millis(250);

/// Messages deleted per statement when trimming, so the writer is never held long.
const TRIM_CHUNK: i64 = 10_000;

/// Dead-letter topics are kept until an operator deals with them.
const DEAD_LETTER_PREFIX: &str = "dlq.";

/// Opens the embedded bus and the store on `<data_dir>/waybill.db`, creating
/// the directory and the database and running migrations. Both share the one
/// writer connection, so their writes never fight over SQLite's write lock.
pub async fn open_embedded(data_dir: &Path) -> Result<(EmbeddedBus, SqlStore), BusError> {
    tokio::fs::create_dir_all(data_dir).await.map_err(|e| {
        BusError::Unavailable(format!(
            "cannot create data directory {}: {e}",
            data_dir.display()
        ))
    })?;
    let options = SqliteConnectOptions::new().filename(data_dir.join(DATABASE_FILE));
    let pools = sqlite::open(options).await.map_err(|e| {
        BusError::Unavailable(format!("{}: {e}", data_dir.join(DATABASE_FILE).display()))
    })?;
    let store = SqlStore::from_sqlite(&pools);
    Ok((EmbeddedBus::start(pools), store))
}

/// The embedded bus. Cheap to clone; clones share the writer.
#[derive(Clone)]
pub struct EmbeddedBus {
    inner: Arc<Inner>,
}

struct Inner {
    writer: mpsc::Sender<WriteOp>,
    pools: SqlitePools,
    /// Bumped after every commit that appended messages.
    appended: watch::Receiver<u64>,
}

enum WriteOp {
    Append {
        topic: String,
        key: String,
        headers: String,
        payload: Vec<u8>,
        done: oneshot::Sender<Result<i64, BusError>>,
    },
    Commit {
        topic: String,
        group: String,
        partition: i32,
        next_offset: i64,
        done: oneshot::Sender<Result<(), BusError>>,
    },
}

/// Maps a database error: a full disk or an unreachable file makes the bus
/// unavailable (ingest answers 503); anything else is a storage error.
fn storage_error(error: &sqlx::Error) -> BusError {
    const SQLITE_BUSY: &str = "5";
    const SQLITE_FULL: &str = "13";
    const SQLITE_CANTOPEN: &str = "14";
    match error {
        sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) => BusError::Unavailable(error.to_string()),
        sqlx::Error::PoolClosed | sqlx::Error::WorkerCrashed => BusError::Closed,
        sqlx::Error::Database(db) => {
            // Extended result codes keep the primary code in the low byte.
            let primary = db
                .code()
                .and_then(|code| code.parse::<i64>().ok())
                .map(|code| (code & 0xff).to_string());
            match primary.as_deref() {
                Some(SQLITE_BUSY | SQLITE_FULL | SQLITE_CANTOPEN) => {
                    BusError::Unavailable(error.to_string())
                }
                _ => BusError::Storage(error.to_string()),
            }
        }
        _ => BusError::Storage(error.to_string()),
    }
}

impl EmbeddedBus {
    fn start(pools: SqlitePools) -> EmbeddedBus {
        let (writer, queue) = mpsc::channel(QUEUE_DEPTH);
        let (appended_tx, appended) = watch::channel(0);
        tokio::spawn(run_writer(pools.write.clone(), queue, appended_tx));
        EmbeddedBus {
            inner: Arc::new(Inner {
                writer,
                pools,
                appended,
            }),
        }
    }

    /// Deletes messages that every consumer group of their topic has
    /// committed past and that are older than `retention` (DESIGN §8).
    /// Topics nobody consumes are trimmed by age alone; dead-letter topics
    /// (`dlq.*`) are never trimmed. Returns how many messages were deleted.
    pub async fn trim(&self, retention: Duration) -> Result<u64, BusError> {
        let cutoff = timestamp(earlier(OffsetDateTime::now_utc(), retention));
        let topics: Vec<(String, i64, Option<i64>, Option<i64>)> = sqlx::query_as(
            "SELECT t.topic, t.next_offset, \
             (SELECT MIN(o.next_offset) FROM bus_offsets o WHERE o.topic = t.topic), \
             (SELECT MIN(m.seq) FROM bus_messages m WHERE m.topic = t.topic) \
             FROM bus_topics t",
        )
        .fetch_all(&self.inner.pools.read)
        .await
        .map_err(|e| storage_error(&e))?;
        let mut deleted = 0;
        for (topic, next_offset, committed, first) in topics {
            if topic.starts_with(DEAD_LETTER_PREFIX) {
                continue;
            }
            let Some(mut from) = first else { continue };
            let below = committed.unwrap_or(next_offset);
            while from < below {
                let to = below.min(from.saturating_add(TRIM_CHUNK));
                let chunk = sqlx::query(
                    "DELETE FROM bus_messages WHERE topic = $1 AND seq >= $2 AND seq < $3 AND appended_at < $4",
                )
                .bind(&topic)
                .bind(from)
                .bind(to)
                .bind(&cutoff)
                .execute(&self.inner.pools.write)
                .await
                .map_err(|e| storage_error(&e))?
                .rows_affected();
                deleted += chunk;
                // Messages are appended in time order: once some in a chunk
                // are too young, all later ones are too.
                if i64::try_from(chunk).unwrap_or(i64::MAX) < to - from {
                    break;
                }
                from = to;
            }
        }
        Ok(deleted)
    }

    /// Closes the database (bus and store), waiting for queries in flight.
    pub async fn close(&self) {
        self.inner.pools.read.close().await;
        self.inner.pools.write.close().await;
    }

    async fn send(&self, op: WriteOp) -> Result<(), BusError> {
        self.inner
            .writer
            .send(op)
            .await
            .map_err(|_| BusError::Closed)
    }
}

/// Decodes one `bus_messages` row.
fn record(topic: &str, row: (i64, String, String, Vec<u8>)) -> Result<Record, BusError> {
    let (offset, key, headers, payload) = row;
    let headers: Headers = serde_json::from_str(&headers)
        .map_err(|e| BusError::Storage(format!("unreadable headers at {topic}/{offset}: {e}")))?;
    Ok(Record {
        topic: topic.to_string(),
        partition: 0,
        offset,
        message: Message {
            key,
            headers,
            payload,
        },
    })
}

async fn read_records(
    pool: &SqlitePool,
    topic: &str,
    from: i64,
    limit: usize,
) -> Result<Vec<Record>, BusError> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows: Vec<(i64, String, String, Vec<u8>)> = sqlx::query_as(
        "SELECT seq, msg_key, headers, payload FROM bus_messages WHERE topic = $1 AND seq >= $2 ORDER BY seq LIMIT $3",
    )
    .bind(topic)
    .bind(from)
    .bind(limit)
    .fetch_all(pool)
    .await
    .map_err(|e| storage_error(&e))?;
    rows.into_iter().map(|row| record(topic, row)).collect()
}

#[async_trait]
impl Bus for EmbeddedBus {
    async fn publish(&self, topic: &str, message: Message) -> Result<i64, BusError> {
        let headers = serde_json::to_string(&message.headers)
            .map_err(|e| BusError::Storage(format!("cannot encode headers: {e}")))?;
        let (done, answer) = oneshot::channel();
        self.send(WriteOp::Append {
            topic: topic.to_string(),
            key: message.key,
            headers,
            payload: message.payload,
            done,
        })
        .await?;
        answer.await.map_err(|_| BusError::Closed)?
    }

    async fn subscribe(&self, topic: &str, group: &str) -> Result<Box<dyn Consumer>, BusError> {
        let now = timestamp(OffsetDateTime::now_utc());
        // Registering the group at once makes `trim` keep what it has not read yet.
        sqlx::query(
            "INSERT INTO bus_offsets (topic, group_name, partition, next_offset, updated_at) VALUES ($1, $2, 0, 0, $3) \
             ON CONFLICT (topic, group_name, partition) DO NOTHING",
        )
        .bind(topic)
        .bind(group)
        .bind(&now)
        .execute(&self.inner.pools.write)
        .await
        .map_err(|e| storage_error(&e))?;
        let position: i64 = sqlx::query_scalar(
            "SELECT next_offset FROM bus_offsets WHERE topic = $1 AND group_name = $2 AND partition = 0",
        )
        .bind(topic)
        .bind(group)
        .fetch_optional(&self.inner.pools.write)
        .await
        .map_err(|e| storage_error(&e))?
        .unwrap_or(0);
        Ok(Box::new(EmbeddedConsumer {
            bus: self.clone(),
            appended: self.inner.appended.clone(),
            topic: topic.to_string(),
            group: group.to_string(),
            position,
        }))
    }

    async fn read(&self, topic: &str, from: i64, limit: usize) -> Result<Vec<Record>, BusError> {
        read_records(&self.inner.pools.read, topic, from, limit).await
    }

    async fn topics(&self) -> Result<Vec<String>, BusError> {
        sqlx::query_scalar("SELECT topic FROM bus_topics ORDER BY topic")
            .fetch_all(&self.inner.pools.read)
            .await
            .map_err(|e| storage_error(&e))
    }

    async fn check(&self) -> Result<(), BusError> {
        if self.inner.writer.is_closed() {
            return Err(BusError::Closed);
        }
        sqlx::query("SELECT 1")
            .execute(&self.inner.pools.write)
            .await
            .map_err(|e| storage_error(&e))?;
        Ok(())
    }
}

/// A consumer-group member reading partition 0 of one topic.
pub struct EmbeddedConsumer {
    bus: EmbeddedBus,
    appended: watch::Receiver<u64>,
    topic: String,
    group: String,
    /// The next offset to return; moves on poll, unlike the committed offset.
    position: i64,
}

#[async_trait]
impl Consumer for EmbeddedConsumer {
    async fn poll(&mut self, max: usize, wait: Duration) -> Result<Vec<Record>, BusError> {
        let deadline = Instant::now() + wait;
        loop {
            // Marking the current version seen before reading means an append
            // that commits after the read still wakes the wait below.
            self.appended.borrow_and_update();
            let records =
                read_records(&self.bus.inner.pools.read, &self.topic, self.position, max).await?;
            if let Some(last) = records.last() {
                self.position = last.offset + 1;
                return Ok(records);
            }
            let now = Instant::now();
            if max == 0 || now >= deadline {
                return Ok(Vec::new());
            }
            let recheck = deadline.min(now + RECHECK);
            tokio::select! {
                changed = self.appended.changed() => changed.map_err(|_| BusError::Closed)?,
                () = tokio::time::sleep_until(recheck) => {}
            }
        }
    }

    async fn commit(&mut self, partition: i32, next_offset: i64) -> Result<(), BusError> {
        let (done, answer) = oneshot::channel();
        self.bus
            .send(WriteOp::Commit {
                topic: self.topic.clone(),
                group: self.group.clone(),
                partition,
                next_offset,
                done,
            })
            .await?;
        answer.await.map_err(|_| BusError::Closed)?
    }
}

/// Owns the writes of the bus: takes everything queued, commits it in one
/// transaction, then answers each caller.
async fn run_writer(
    pool: SqlitePool,
    mut queue: mpsc::Receiver<WriteOp>,
    appended: watch::Sender<u64>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while queue.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let outcome = write_batch(&pool, &mut batch).await;
        let mut any_appended = false;
        // A caller that gave up waiting no longer needs its answer, so failed
        // sends on `done` are ignored.
        match outcome {
            Ok(offsets) => {
                for (op, offset) in batch.drain(..).zip(offsets) {
                    match op {
                        WriteOp::Append { done, .. } => {
                            any_appended = true;
                            let _ =
                                done.send(offset.ok_or_else(|| {
                                    BusError::Storage("append got no offset".into())
                                }));
                        }
                        WriteOp::Commit { done, .. } => {
                            let _ = done.send(Ok(()));
                        }
                    }
                }
            }
            Err(error) => {
                for op in batch.drain(..) {
                    match op {
                        WriteOp::Append { done, .. } => {
                            let _ = done.send(Err(storage_error(&error)));
                        }
                        WriteOp::Commit { done, .. } => {
                            let _ = done.send(Err(storage_error(&error)));
                        }
                    }
                }
            }
        }
        if any_appended {
            appended.send_modify(|version| *version += 1);
        }
    }
}

/// Writes one batch in one transaction; returns the offset given to each
/// append, position for position with `batch`.
async fn write_batch(
    pool: &SqlitePool,
    batch: &mut [WriteOp],
) -> Result<Vec<Option<i64>>, sqlx::Error> {
    let now = timestamp(OffsetDateTime::now_utc());
    let mut counts: BTreeMap<&str, i64> = BTreeMap::new();
    for op in batch.iter() {
        if let WriteOp::Append { topic, .. } = op {
            *counts.entry(topic.as_str()).or_default() += 1;
        }
    }
    let mut tx = pool.begin().await?;
    // Offsets are handed out from `bus_topics` inside the transaction (not
    // from memory), so another process appending to the same file stays in step.
    let mut next: BTreeMap<String, i64> = BTreeMap::new();
    for (topic, count) in &counts {
        let end: i64 = sqlx::query_scalar(
            "INSERT INTO bus_topics (topic, next_offset) VALUES ($1, $2) \
             ON CONFLICT (topic) DO UPDATE SET next_offset = bus_topics.next_offset + $2 RETURNING next_offset",
        )
        .bind(*topic)
        .bind(*count)
        .fetch_one(&mut *tx)
        .await?;
        next.insert((*topic).to_string(), end - count);
    }
    let mut offsets = Vec::with_capacity(batch.len());
    let mut rows = Vec::new();
    for op in batch.iter_mut() {
        match op {
            WriteOp::Append {
                topic,
                key,
                headers,
                payload,
                ..
            } => {
                let slot = next
                    .get_mut(topic.as_str())
                    .ok_or(sqlx::Error::RowNotFound)?;
                let offset = *slot;
                *slot += 1;
                offsets.push(Some(offset));
                rows.push((
                    topic.clone(),
                    offset,
                    std::mem::take(key),
                    std::mem::take(headers),
                    std::mem::take(payload),
                ));
            }
            WriteOp::Commit {
                topic,
                group,
                partition,
                next_offset,
                ..
            } => {
                offsets.push(None);
                sqlx::query(
                    "INSERT INTO bus_offsets (topic, group_name, partition, next_offset, updated_at) \
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (topic, group_name, partition) \
                     DO UPDATE SET next_offset = excluded.next_offset, updated_at = excluded.updated_at",
                )
                .bind(topic.as_str())
                .bind(group.as_str())
                .bind(*partition)
                .bind(*next_offset)
                .bind(&now)
                .execute(&mut *tx)
                .await?;
            }
        }
    }
    let mut rows = rows.into_iter().peekable();
    while rows.peek().is_some() {
        let mut insert = QueryBuilder::<Sqlite>::new(
            "INSERT INTO bus_messages (topic, seq, msg_key, headers, payload, appended_at) ",
        );
        insert.push_values(
            rows.by_ref().take(INSERT_CHUNK),
            |mut row, (topic, offset, key, headers, payload)| {
                row.push_bind(topic)
                    .push_bind(offset)
                    .push_bind(key)
                    .push_bind(headers)
                    .push_bind(payload)
                    .push_bind(now.clone());
            },
        );
        insert.build().execute(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(offsets)
}
