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
//! commits are queued to a writer thread that commits everything pending in
//! one transaction (group commit) and then answers each caller, so many
//! concurrent publishers cost one fsync-free WAL commit per batch.

use super::{Bus, BusError, Consumer};
use crate::model::{Headers, Message, Record};
use crate::store::sql::{SqlStore, earlier, timestamp};
use crate::store::sqlite::{self, DirectError, LockWait, SqlitePools};
use async_trait::async_trait;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool};
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

/// Consumers also look for new records this often, because another process
/// (such as `waybill dlq replay`) may append without waking this one.
const RECHECK: Duration = Duration::from_millis(250);

/// Messages deleted per statement when trimming, so the writer is never held long.
const TRIM_CHUNK: i64 = 10_000;

/// Payloads at least this long are stored LZ4-compressed: an order's JSON
/// shrinks several times, and SQLite then writes (twice: WAL, then the
/// database) a fraction of the bytes. Shorter ones are not worth the work.
const COMPRESS_FROM: usize = 512;

/// `bus_messages.encoding` of a payload stored as published.
const RAW: i64 = 0;

/// `bus_messages.encoding` of an LZ4 block with its decoded length first.
const LZ4: i64 = 1;

/// Largest decoded payload a stored length prefix is believed for.
const MAX_DECODED: usize = 256 * 1024 * 1024;

/// Dead-letter topics are kept until an operator deals with them.
const DEAD_LETTER_PREFIX: &str = "dlq.";

/// Opens the embedded bus and the store on `<data_dir>/waybill.db`, creating
/// the directory and the database and running migrations. Both share the one
/// writer connection, so their writes never fight over SQLite's write lock.
pub async fn open_embedded(data_dir: &Path) -> Result<(EmbeddedBus, SqlStore), BusError> {
    open_with(data_dir, RECHECK).await
}

async fn open_with(
    data_dir: &Path,
    recheck: Duration,
) -> Result<(EmbeddedBus, SqlStore), BusError> {
    tokio::fs::create_dir_all(data_dir).await.map_err(|e| {
        BusError::Unavailable(format!(
            "cannot create data directory {}: {e}",
            data_dir.display()
        ))
    })?;
    let file = data_dir.join(DATABASE_FILE);
    let pools = sqlite::open(SqliteConnectOptions::new().filename(&file))
        .await
        .map_err(|e| BusError::Unavailable(format!("{}: {e}", file.display())))?;
    let store = SqlStore::from_sqlite(&pools);
    Ok((EmbeddedBus::start(pools, recheck), store))
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
    recheck: Duration,
}

enum WriteOp {
    Append {
        topic: String,
        key: String,
        headers: String,
        payload: Vec<u8>,
        /// [`RAW`] or [`LZ4`].
        encoding: i64,
        /// Appended only if this webhook delivery was not recorded before.
        delivery: Option<Delivery>,
        /// `None` when the delivery was a duplicate and nothing was appended.
        done: oneshot::Sender<Result<Option<i64>, BusError>>,
    },
    Commit {
        topic: String,
        group: String,
        next_offset: i64,
        done: oneshot::Sender<Result<(), BusError>>,
    },
}

/// A webhook delivery id, recorded in the store's `webhook_deliveries`.
struct Delivery {
    source: String,
    account: String,
    id: String,
}

/// Maps a database error: a full disk or an unreachable file makes the bus
/// unavailable (ingest answers 503); anything else is a storage error.
fn storage_error(error: &sqlx::Error) -> BusError {
    const SQLITE_BUSY: i64 = 5;
    const SQLITE_IOERR: i64 = 10;
    const SQLITE_FULL: i64 = 13;
    const SQLITE_CANTOPEN: i64 = 14;
    match error {
        sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) => BusError::Unavailable(error.to_string()),
        sqlx::Error::PoolClosed | sqlx::Error::WorkerCrashed => BusError::Closed,
        sqlx::Error::Database(db) => {
            // Extended result codes keep the primary code in the low byte.
            let primary = db
                .code()
                .and_then(|code| code.parse::<i64>().ok())
                .map(|code| code & 0xff);
            match primary {
                Some(SQLITE_BUSY | SQLITE_IOERR | SQLITE_FULL | SQLITE_CANTOPEN) => {
                    BusError::Unavailable(error.to_string())
                }
                _ => BusError::Storage(error.to_string()),
            }
        }
        _ => BusError::Storage(error.to_string()),
    }
}

impl EmbeddedBus {
    fn start(pools: SqlitePools, recheck: Duration) -> EmbeddedBus {
        let (writer, queue) = mpsc::channel(QUEUE_DEPTH);
        let (appended_tx, appended) = watch::channel(0);
        // The writer gets a thread of its own: it works synchronously on the
        // database, and every publisher waits for it, so it must neither
        // block nor queue behind request handlers on a runtime worker.
        let pool = pools.write.clone();
        let spawned = std::thread::Builder::new()
            .name("waybill-bus-writer".into())
            .spawn(move || {
                match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime.block_on(run_writer(pool, queue, appended_tx)),
                    // Dropping the queue closes the bus: publishers get `Closed`.
                    Err(error) => tracing::error!(%error, "cannot start the bus writer"),
                }
            });
        if let Err(error) = spawned {
            tracing::error!(%error, "cannot start the bus writer thread");
        }
        EmbeddedBus {
            inner: Arc::new(Inner {
                writer,
                pools,
                appended,
                recheck,
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

    /// Appends `message` and records the webhook delivery id in the same
    /// transaction, unless the id was recorded before (DESIGN §8: the id is
    /// recorded only once the event is durably on the bus, and concurrent
    /// redeliveries cannot both be enqueued). Returns the offset, or `None`
    /// for a duplicate delivery, which appends nothing.
    ///
    /// The id goes to this database's `webhook_deliveries`: use it only when
    /// the store is the one [`open_embedded`] returned, not PostgreSQL.
    pub async fn publish_once(
        &self,
        topic: &str,
        message: Message,
        source: &str,
        account: &str,
        delivery_id: &str,
    ) -> Result<Option<i64>, BusError> {
        let delivery = Delivery {
            source: source.to_string(),
            account: account.to_string(),
            id: delivery_id.to_string(),
        };
        self.append(topic, message, Some(delivery)).await
    }

    async fn append(
        &self,
        topic: &str,
        message: Message,
        delivery: Option<Delivery>,
    ) -> Result<Option<i64>, BusError> {
        let headers = serde_json::to_string(&message.headers)
            .map_err(|e| BusError::Storage(format!("cannot encode headers: {e}")))?;
        // Compressed here, in the caller's task, so the one writer only writes.
        let (payload, encoding) = encode(message.payload);
        let (done, answer) = oneshot::channel();
        self.send(WriteOp::Append {
            topic: topic.to_string(),
            key: message.key,
            headers,
            payload,
            encoding,
            delivery,
            done,
        })
        .await?;
        answer.await.map_err(|_| BusError::Closed)?
    }

    async fn send(&self, op: WriteOp) -> Result<(), BusError> {
        self.inner
            .writer
            .send(op)
            .await
            .map_err(|_| BusError::Closed)
    }
}

/// A payload as stored, with its encoding.
fn encode(payload: Vec<u8>) -> (Vec<u8>, i64) {
    if payload.len() < COMPRESS_FROM {
        return (payload, RAW);
    }
    let compressed = lz4_flex::compress_prepend_size(&payload);
    if compressed.len() < payload.len() {
        (compressed, LZ4)
    } else {
        (payload, RAW)
    }
}

/// A stored payload as it was published.
fn decode(topic: &str, offset: i64, payload: Vec<u8>, encoding: i64) -> Result<Vec<u8>, BusError> {
    let unreadable =
        |why: String| BusError::Storage(format!("unreadable payload at {topic}/{offset}: {why}"));
    match encoding {
        RAW => Ok(payload),
        LZ4 => {
            let declared = payload
                .first_chunk::<4>()
                .map(|len| u32::from_le_bytes(*len) as usize)
                .ok_or_else(|| unreadable("no length prefix".into()))?;
            if declared > MAX_DECODED {
                return Err(unreadable(format!(
                    "declared length {declared} is implausible"
                )));
            }
            lz4_flex::decompress_size_prepended(&payload).map_err(|e| unreadable(e.to_string()))
        }
        other => Err(unreadable(format!("unknown encoding {other}"))),
    }
}

/// Decodes one `bus_messages` row.
fn record(topic: &str, row: (i64, String, String, Vec<u8>, i64)) -> Result<Record, BusError> {
    let (offset, key, headers, payload, encoding) = row;
    let headers: Headers = serde_json::from_str(&headers)
        .map_err(|e| BusError::Storage(format!("unreadable headers at {topic}/{offset}: {e}")))?;
    let payload = decode(topic, offset, payload, encoding)?;
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
    let rows: Vec<(i64, String, String, Vec<u8>, i64)> = sqlx::query_as(
        "SELECT seq, msg_key, headers, payload, encoding FROM bus_messages WHERE topic = $1 AND seq >= $2 ORDER BY seq LIMIT $3",
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
        self.append(topic, message, None)
            .await?
            .ok_or_else(|| BusError::Storage("append got no offset".into()))
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
        // A wait too long to represent is as good as waiting forever.
        let deadline = Instant::now()
            .checked_add(wait)
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(365 * 24 * 3600));
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
            return Err(BusError::Storage(format!(
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
                            any_appended |= offset.is_some();
                            let _ = done.send(Ok(offset));
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
                            let _ = done.send(Err(batch_error(&error)));
                        }
                        WriteOp::Commit { done, .. } => {
                            let _ = done.send(Err(batch_error(&error)));
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

/// As [`storage_error`] says for `sqlx`: a full disk or an unreachable file
/// makes the bus unavailable, anything else is a storage error.
fn batch_error(error: &DirectError) -> BusError {
    use rusqlite::ErrorCode;
    match error {
        DirectError::Pool(error) => storage_error(error),
        DirectError::Sqlite(error) => match error.sqlite_error_code() {
            Some(
                ErrorCode::DatabaseBusy
                | ErrorCode::SystemIoFailure
                | ErrorCode::DiskFull
                | ErrorCode::CannotOpen,
            ) => BusError::Unavailable(error.to_string()),
            _ => BusError::Storage(error.to_string()),
        },
    }
}

/// Writes one batch in one transaction; returns the offset given to each
/// append, position for position with `batch`. The batch runs whole on this
/// thread (see [`sqlite::in_one_go`]), which is the writer's own.
async fn write_batch(
    pool: &SqlitePool,
    batch: &mut [WriteOp],
) -> Result<Vec<Option<i64>>, DirectError> {
    let now = timestamp(OffsetDateTime::now_utc());
    let written = sqlite::in_one_go(pool, LockWait::Wait, |db| {
        append_all(db, batch, &now).map(Some)
    });
    Ok(written.await?.unwrap_or_default())
}

fn append_all(
    db: &rusqlite::Connection,
    batch: &mut [WriteOp],
    now: &str,
) -> Result<Vec<Option<i64>>, rusqlite::Error> {
    use rusqlite::params;
    // Deliveries first: an append whose delivery id is already recorded
    // (before, or earlier in this batch) is dropped.
    let mut remember = db.prepare(
        "INSERT INTO webhook_deliveries (source, account, delivery_id, received_at) VALUES (?1, ?2, ?3, ?4) \
         ON CONFLICT (source, account, delivery_id) DO NOTHING",
    )?;
    let mut kept = Vec::with_capacity(batch.len());
    let mut counts: BTreeMap<&str, i64> = BTreeMap::new();
    for op in batch.iter() {
        let keep = match op {
            WriteOp::Append {
                delivery: Some(d), ..
            } => remember.execute(params![d.source, d.account, d.id, now])? == 1,
            _ => true,
        };
        if let (WriteOp::Append { topic, .. }, true) = (op, keep) {
            *counts.entry(topic.as_str()).or_default() += 1;
        }
        kept.push(keep);
    }
    // Offsets are handed out from `bus_topics` inside the transaction (not
    // from memory), so another process appending to the same file stays in step.
    let mut reserve = db.prepare(
        "INSERT INTO bus_topics (topic, next_offset) VALUES (?1, ?2) \
         ON CONFLICT (topic) DO UPDATE SET next_offset = bus_topics.next_offset + ?2 RETURNING next_offset",
    )?;
    let mut next: BTreeMap<String, i64> = BTreeMap::new();
    for (topic, count) in &counts {
        let end: i64 = reserve.query_row(params![topic, count], |row| row.get(0))?;
        next.insert((*topic).to_string(), end - count);
    }
    let mut insert = db.prepare(
        "INSERT INTO bus_messages (topic, seq, msg_key, headers, payload, encoding, appended_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?;
    let mut commit = db.prepare(
        "INSERT INTO bus_offsets (topic, group_name, partition, next_offset, updated_at) \
         VALUES (?1, ?2, 0, ?3, ?4) ON CONFLICT (topic, group_name, partition) \
         DO UPDATE SET next_offset = excluded.next_offset, updated_at = excluded.updated_at",
    )?;
    let mut offsets = Vec::with_capacity(batch.len());
    for (op, keep) in batch.iter().zip(kept) {
        match op {
            WriteOp::Append { .. } if !keep => offsets.push(None),
            WriteOp::Append {
                topic,
                key,
                headers,
                payload,
                encoding,
                ..
            } => {
                let slot = next
                    .get_mut(topic.as_str())
                    .ok_or(rusqlite::Error::QueryReturnedNoRows)?;
                let offset = *slot;
                *slot += 1;
                insert.execute(params![topic, offset, key, headers, payload, encoding, now])?;
                offsets.push(Some(offset));
            }
            WriteOp::Commit {
                topic,
                group,
                next_offset,
                ..
            } => {
                commit.execute(params![topic, group, next_offset, now])?;
                offsets.push(None);
            }
        }
    }
    Ok(offsets)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::header;
    use crate::store::Store;
    use std::collections::HashMap;

    fn message(key: &str, payload: &[u8]) -> Message {
        let mut headers = Headers::new();
        headers.insert(header::ID.into(), format!("id-{key}"));
        headers.insert(header::SOURCE.into(), "shopify".into());
        Message {
            key: key.into(),
            headers,
            payload: payload.to_vec(),
        }
    }

    async fn open(dir: &Path) -> EmbeddedBus {
        open_embedded(dir).await.unwrap().0
    }

    #[tokio::test]
    async fn large_payloads_are_stored_compressed_and_read_back_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let bus = open(dir.path()).await;
        let order = std::fs::read(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/shopify/order-cod.json"),
        )
        .unwrap();
        // Random bytes do not compress: they are kept as they are.
        let noise: Vec<u8> = (0..4096).map(|_| rand::random::<u8>()).collect();
        let short = b"{\"id\":1}".to_vec();
        for payload in [&order, &noise, &short] {
            bus.publish("t", message("k", payload)).await.unwrap();
        }
        let records = bus.read("t", 0, 10).await.unwrap();
        let payloads: Vec<&Vec<u8>> = records.iter().map(|r| &r.message.payload).collect();
        assert_eq!(payloads, [&order, &noise, &short]);
        let stored: Vec<(i64, i64)> = sqlx::query_as(
            "SELECT encoding, length(payload) FROM bus_messages WHERE topic = 't' ORDER BY seq",
        )
        .fetch_all(&bus.inner.pools.read)
        .await
        .unwrap();
        assert_eq!(stored[0].0, LZ4);
        assert!(
            (stored[0].1 as usize) < order.len() / 2,
            "{} bytes stored for {}",
            stored[0].1,
            order.len()
        );
        assert_eq!(stored[1], (RAW, 4096));
        assert_eq!(stored[2], (RAW, short.len() as i64));
    }

    #[test]
    fn a_damaged_compressed_payload_is_an_error_not_a_panic() {
        let (good, encoding) = encode(vec![b'a'; 2048]);
        assert_eq!(encoding, LZ4);
        assert_eq!(decode("t", 0, good.clone(), LZ4).unwrap(), vec![b'a'; 2048]);
        let mut huge = good.clone();
        huge[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        let error = decode("t", 7, huge, LZ4).unwrap_err().to_string();
        assert!(
            error.contains("t/7") && error.contains("implausible"),
            "{error}"
        );
        assert!(decode("t", 0, good[..good.len() - 3].to_vec(), LZ4).is_err());
        assert!(decode("t", 0, vec![1, 2], LZ4).is_err());
        assert!(decode("t", 0, good, 9).is_err());
    }

    #[tokio::test]
    async fn publish_poll_commit_and_resume_after_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let bus = open(dir.path()).await;
        for i in 0..5u8 {
            let offset = bus
                .publish("orders.shopify", message(&format!("k{i}"), &[i, 0, 255]))
                .await
                .unwrap();
            assert_eq!(offset, i64::from(i));
        }
        let mut consumer = bus
            .subscribe("orders.shopify", "waybill.orders")
            .await
            .unwrap();
        let records = consumer.poll(3, Duration::ZERO).await.unwrap();
        assert_eq!(
            records.iter().map(|r| r.offset).collect::<Vec<_>>(),
            [0, 1, 2]
        );
        assert_eq!(records[1].message, message("k1", &[1, 0, 255]));
        assert_eq!(
            (records[1].topic.as_str(), records[1].partition),
            ("orders.shopify", 0)
        );
        let records = consumer.poll(10, Duration::ZERO).await.unwrap();
        assert_eq!(records.iter().map(|r| r.offset).collect::<Vec<_>>(), [3, 4]);
        // The position moved past everything; nothing is returned twice.
        assert!(consumer.poll(10, Duration::ZERO).await.unwrap().is_empty());
        consumer.commit(0, 3).await.unwrap();
        drop(consumer);
        bus.close().await;
        drop(bus);

        let bus = open(dir.path()).await;
        let mut consumer = bus
            .subscribe("orders.shopify", "waybill.orders")
            .await
            .unwrap();
        let records = consumer.poll(10, Duration::ZERO).await.unwrap();
        assert_eq!(records.iter().map(|r| r.offset).collect::<Vec<_>>(), [3, 4]);
        assert_eq!(records[0].message, message("k3", &[3, 0, 255]));
        assert_eq!(
            bus.publish("orders.shopify", message("k5", b""))
                .await
                .unwrap(),
            5
        );
        assert_eq!(bus.topics().await.unwrap(), ["orders.shopify"]);
        assert_eq!(bus.read("orders.shopify", 4, 10).await.unwrap().len(), 2);
        bus.check().await.unwrap();
    }

    #[tokio::test]
    async fn groups_and_topics_are_independent() {
        let dir = tempfile::tempdir().unwrap();
        let bus = open(dir.path()).await;
        for i in 0..4 {
            bus.publish("a", message(&format!("a{i}"), b"a"))
                .await
                .unwrap();
        }
        assert_eq!(bus.publish("b", message("b0", b"b")).await.unwrap(), 0);
        let mut first = bus.subscribe("a", "one").await.unwrap();
        let mut second = bus.subscribe("a", "two").await.unwrap();
        assert_eq!(first.poll(10, Duration::ZERO).await.unwrap().len(), 4);
        first.commit(0, 4).await.unwrap();
        assert_eq!(second.poll(2, Duration::ZERO).await.unwrap().len(), 2);
        second.commit(0, 2).await.unwrap();

        let mut first = bus.subscribe("a", "one").await.unwrap();
        let mut second = bus.subscribe("a", "two").await.unwrap();
        assert!(first.poll(10, Duration::ZERO).await.unwrap().is_empty());
        let rest = second.poll(10, Duration::ZERO).await.unwrap();
        assert_eq!(
            rest.iter()
                .map(|r| r.message.key.as_str())
                .collect::<Vec<_>>(),
            ["a2", "a3"]
        );
        let mut other = bus.subscribe("b", "one").await.unwrap();
        assert_eq!(
            other.poll(10, Duration::ZERO).await.unwrap()[0].message.key,
            "b0"
        );
    }

    #[tokio::test]
    async fn poll_wakes_on_publish() {
        let dir = tempfile::tempdir().unwrap();
        // Rechecking only hourly: the poll below can only return through the wake-up.
        let (bus, _store) = open_with(dir.path(), Duration::from_secs(3600))
            .await
            .unwrap();
        let mut consumer = bus
            .subscribe("orders.shopify", "waybill.orders")
            .await
            .unwrap();
        let waiting =
            tokio::spawn(async move { consumer.poll(10, Duration::from_secs(3600)).await });
        // Let the consumer find nothing and start waiting before the publish.
        tokio::time::sleep(Duration::from_millis(50)).await;
        bus.publish("orders.shopify", message("k", b"x"))
            .await
            .unwrap();
        let records = tokio::time::timeout(Duration::from_secs(60), waiting)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].message.key, "k");
    }

    #[tokio::test]
    async fn poll_returns_empty_when_the_wait_elapses() {
        let dir = tempfile::tempdir().unwrap();
        let bus = open(dir.path()).await;
        bus.publish("other", message("k", b"x")).await.unwrap();
        let mut consumer = bus.subscribe("orders.shopify", "g").await.unwrap();
        assert!(
            consumer
                .poll(10, Duration::from_millis(20))
                .await
                .unwrap()
                .is_empty()
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_publishes_get_distinct_offsets() {
        let dir = tempfile::tempdir().unwrap();
        let bus = open(dir.path()).await;
        let publishers: Vec<_> = (0..1000u32)
            .map(|i| {
                let bus = bus.clone();
                tokio::spawn(async move {
                    let topic = if i % 4 == 0 { "b" } else { "a" };
                    let offset = bus
                        .publish(topic, message(&i.to_string(), &i.to_be_bytes()))
                        .await
                        .unwrap();
                    (topic, offset, i)
                })
            })
            .collect();
        let mut published = HashMap::new();
        for publisher in publishers {
            let (topic, offset, i) = publisher.await.unwrap();
            assert!(
                published.insert((topic, offset), i).is_none(),
                "offset {offset} of {topic} given twice"
            );
        }
        for (topic, count) in [("a", 750), ("b", 250)] {
            let records = bus.read(topic, 0, 2000).await.unwrap();
            let offsets: Vec<i64> = records.iter().map(|r| r.offset).collect();
            assert_eq!(offsets, (0..count).collect::<Vec<_>>());
            for record in records {
                let i = published[&(topic, record.offset)];
                assert_eq!(record.message.payload, i.to_be_bytes());
                assert_eq!(record.message.key, i.to_string());
            }
        }
    }

    #[tokio::test]
    async fn trim_keeps_what_a_group_has_not_committed_and_all_dead_letters() {
        let dir = tempfile::tempdir().unwrap();
        let bus = open(dir.path()).await;
        for i in 0..10 {
            bus.publish("orders", message(&i.to_string(), b"o"))
                .await
                .unwrap();
        }
        for topic in ["dlq.shopify-orders", "unread"] {
            for i in 0..3 {
                bus.publish(topic, message(&i.to_string(), b"d"))
                    .await
                    .unwrap();
            }
        }
        let mut fast = bus.subscribe("orders", "fast").await.unwrap();
        let mut slow = bus.subscribe("orders", "slow").await.unwrap();
        fast.commit(0, 8).await.unwrap();
        slow.commit(0, 4).await.unwrap();

        assert_eq!(bus.trim(Duration::from_secs(3600)).await.unwrap(), 0);
        assert_eq!(bus.trim(Duration::ZERO).await.unwrap(), 4 + 3);
        let left: Vec<i64> = bus
            .read("orders", 0, 100)
            .await
            .unwrap()
            .iter()
            .map(|r| r.offset)
            .collect();
        assert_eq!(left, (4..10).collect::<Vec<_>>());
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
    async fn a_full_disk_makes_the_bus_unavailable_until_space_returns() {
        let dir = tempfile::tempdir().unwrap();
        let bus = open(dir.path()).await;
        bus.publish("orders", message("first", b"x")).await.unwrap();
        // Capping the file's size on the one writer connection is a full disk to SQLite.
        let pages: i64 = sqlx::query_scalar("PRAGMA page_count")
            .fetch_one(&bus.inner.pools.write)
            .await
            .unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "PRAGMA max_page_count = {pages}"
        )))
        .execute(&bus.inner.pools.write)
        .await
        .unwrap();
        let mut full = None;
        for i in 0..100 {
            if let Err(error) = bus
                .publish("orders", message(&i.to_string(), &[7; 64 * 1024]))
                .await
            {
                full = Some(error);
                break;
            }
        }
        assert!(matches!(full, Some(BusError::Unavailable(_))), "{full:?}");
        sqlx::query("PRAGMA max_page_count = 1073741823")
            .execute(&bus.inner.pools.write)
            .await
            .unwrap();
        let offset = bus.publish("orders", message("after", b"y")).await.unwrap();
        let last = bus.read("orders", offset, 1).await.unwrap();
        assert_eq!(last[0].message.key, "after");
        // Nothing of the failed batch was half-written: offsets have no gaps.
        let offsets: Vec<i64> = bus
            .read("orders", 0, 1000)
            .await
            .unwrap()
            .iter()
            .map(|r| r.offset)
            .collect();
        assert_eq!(offsets, (0..=offset).collect::<Vec<_>>());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_processes_on_one_file_share_the_offsets() {
        let dir = tempfile::tempdir().unwrap();
        // Two opens of the same directory have separate writers, like two processes.
        let first = open(dir.path()).await;
        let second = open(dir.path()).await;
        let publishers: Vec<_> = (0..200u32)
            .map(|i| {
                let bus = if i % 2 == 0 {
                    first.clone()
                } else {
                    second.clone()
                };
                tokio::spawn(async move {
                    bus.publish("dlq.p", message(&i.to_string(), b""))
                        .await
                        .unwrap()
                })
            })
            .collect();
        let mut offsets = Vec::new();
        for publisher in publishers {
            offsets.push(publisher.await.unwrap());
        }
        offsets.sort_unstable();
        assert_eq!(offsets, (0..200).collect::<Vec<_>>());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn store_writes_share_the_writer_with_appends() {
        let dir = tempfile::tempdir().unwrap();
        let (bus, store) = open_embedded(dir.path()).await.unwrap();
        let ingests: Vec<_> = (0..300u32)
            .map(|i| {
                let (bus, store) = (bus.clone(), store.clone());
                tokio::spawn(async move {
                    bus.publish("orders.shopify", message(&i.to_string(), b"{}"))
                        .await
                        .unwrap();
                    store
                        .remember_delivery("shopify", "main", &i.to_string())
                        .await
                        .unwrap()
                })
            })
            .collect();
        for ingest in ingests {
            assert!(ingest.await.unwrap());
        }
        assert!(store.delivery_seen("shopify", "main", "299").await.unwrap());
        assert_eq!(
            bus.read("orders.shopify", 0, 1000).await.unwrap().len(),
            300
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_delivery_is_enqueued_once_with_its_id_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let (bus, store) = open_embedded(dir.path()).await.unwrap();
        let redeliveries: Vec<_> = (0..40u32)
            .map(|i| {
                let bus = bus.clone();
                // Half are redeliveries of one webhook, half are distinct ones.
                let id = if i % 2 == 0 {
                    "d-1".to_string()
                } else {
                    format!("e-{i}")
                };
                tokio::spawn(async move {
                    bus.publish_once(
                        "orders.shopify",
                        message(&i.to_string(), b"{}"),
                        "shopify",
                        "main",
                        &id,
                    )
                    .await
                    .unwrap()
                })
            })
            .collect();
        let mut appended = 0;
        for redelivery in redeliveries {
            appended += usize::from(redelivery.await.unwrap().is_some());
        }
        assert_eq!(appended, 1 + 20);
        assert_eq!(bus.read("orders.shopify", 0, 100).await.unwrap().len(), 21);
        assert!(store.delivery_seen("shopify", "main", "d-1").await.unwrap());
        let again = bus
            .publish_once(
                "orders.shopify",
                message("x", b"{}"),
                "shopify",
                "main",
                "e-3",
            )
            .await;
        assert_eq!(again.unwrap(), None);
        let other_account = bus
            .publish_once(
                "orders.shopify",
                message("x", b"{}"),
                "shopify",
                "second",
                "e-3",
            )
            .await;
        assert_eq!(other_account.unwrap(), Some(21));
    }

    #[tokio::test]
    async fn only_partition_zero_can_be_committed() {
        let dir = tempfile::tempdir().unwrap();
        let bus = open(dir.path()).await;
        let mut consumer = bus.subscribe("orders", "g").await.unwrap();
        assert!(consumer.commit(1, 0).await.is_err());
    }

    #[tokio::test]
    async fn a_closed_database_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let bus = open(dir.path()).await;
        bus.close().await;
        assert!(bus.publish("orders", message("k", b"")).await.is_err());
        assert!(bus.read("orders", 0, 1).await.is_err());
        assert!(bus.check().await.is_err());
    }
}
