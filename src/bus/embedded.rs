//! The embedded bus: a durable log in SQLite (WAL) under the data directory,
//! in the same database file as the store.
//!
//! ```yaml
//! data_dir: ./data          # the log lives in <data_dir>/waybill.db
//! bus: { kind: embedded }
//! ```
//!
//! Every topic has one partition (0) whose offsets count up from 0. Appends,
//! offset commits and the store's frequent changes are queued to a writer
//! thread with a connection of its own, which commits everything pending in
//! one transaction (group commit) and then answers each caller, so many
//! concurrent publishers cost one fsync-free WAL commit per batch.
//!
//! The messages one commit appends to a topic are stored together, in one
//! row of `bus_batches`, compressed as one block; Kafka stores its record
//! batches the same way. Orders repeat most of their field names and much of
//! their text, which a block compressed alone cannot share, and many small
//! rows would each leave a part of their page empty.

use super::{Bus, BusError, Consumer};
use crate::clock::{earlier, now_timestamp, timestamp};
use crate::model::{Headers, Message, Record};
use crate::store::sql::SqlStore;
use crate::store::sqlite::{self, Job, Jobs, SqlitePools};
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

/// Batches at least this long are stored LZ4-compressed: orders' JSON
/// shrinks several times, and SQLite then writes (twice: WAL, then the
/// database) a fraction of the bytes. Shorter ones are not worth the work.
const COMPRESS_FROM: usize = 512;

/// `bus_batches.encoding` of one message whose payload is stored as
/// published, with its key and headers in their own columns. Rows written
/// before messages were batched are stored this way or as [`LZ4`].
const RAW: i64 = 0;

/// As [`RAW`], with the payload an LZ4 block with its decoded length first.
const LZ4: i64 = 1;

/// `bus_batches.encoding` of messages laid out one after another by [`frame`].
const BATCH: i64 = 2;

/// A [`BATCH`] as an LZ4 block with its decoded length first.
const BATCH_LZ4: i64 = 3;

/// Most messages stored in one row. A reader decodes a whole row for any of
/// its messages, and LZ4 finds nothing to share beyond 64 KiB back, so
/// longer rows cost reads and save nothing.
const BATCH_MESSAGES: usize = 32;

/// A row takes no more messages once its frame is this long.
const BATCH_BYTES: usize = 256 * 1024;

/// Largest decoded payload a stored length prefix is believed for.
const MAX_DECODED: usize = 256 * 1024 * 1024;

/// Dead-letter topics are kept until an operator deals with them.
const DEAD_LETTER_PREFIX: &str = "dlq.";

/// Opens the embedded bus and the store on `<data_dir>/waybill.db`, creating
/// the directory and the database and running migrations. The bus writer
/// owns a connection of its own, and the store's frequent changes go to it
/// too, so the two seldom wait for each other's write lock.
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
    let writer = sqlite::owned_writer(&file)
        .map_err(|e| BusError::Unavailable(format!("{}: {e}", file.display())))?;
    let (jobs, queued_jobs) = Jobs::new(QUEUE_DEPTH);
    let bus = EmbeddedBus::start(pools.clone(), recheck, writer, queued_jobs)?;
    Ok((bus, SqlStore::from_sqlite(&pools).with_jobs(jobs)))
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
    /// Tells the writer to finish what is queued and close its connection.
    stop: watch::Sender<bool>,
    /// Answered (by dropping) once the writer has closed its connection.
    stopped: tokio::sync::Mutex<Option<oneshot::Receiver<()>>>,
}

enum WriteOp {
    Append {
        topic: String,
        key: String,
        headers: String,
        payload: Vec<u8>,
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
    fn start(
        pools: SqlitePools,
        recheck: Duration,
        db: rusqlite::Connection,
        jobs: mpsc::Receiver<Box<dyn Job>>,
    ) -> Result<EmbeddedBus, BusError> {
        let (writer, queue) = mpsc::channel(QUEUE_DEPTH);
        let (appended_tx, appended) = watch::channel(0);
        let (stop, stopping) = watch::channel(false);
        let (stopped_tx, stopped) = oneshot::channel();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| BusError::Unavailable(format!("cannot start the bus writer: {e}")))?;
        // The writer gets a thread and a connection of its own: it works
        // synchronously on the database, and every publisher waits for it,
        // so it must neither block nor queue behind request handlers on a
        // runtime worker, nor hand a pooled connection back and forth.
        std::thread::Builder::new()
            .name("waybill-bus-writer".into())
            .spawn(move || {
                runtime.block_on(run_writer(db, queue, jobs, appended_tx, stopping));
                drop(stopped_tx);
            })
            .map_err(|e| BusError::Unavailable(format!("cannot start the bus writer: {e}")))?;
        Ok(EmbeddedBus {
            inner: Arc::new(Inner {
                writer,
                pools,
                appended,
                recheck,
                stop,
                stopped: tokio::sync::Mutex::new(Some(stopped)),
            }),
        })
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
             (SELECT MIN(b.seq) FROM bus_batches b WHERE b.topic = t.topic) \
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
                // A batch goes only whole: once every group is past its last message.
                let gone: Vec<(i64, i64)> = sqlx::query_as(
                    "DELETE FROM bus_batches WHERE topic = $1 AND seq >= $2 AND seq < $3 \
                     AND seq + messages <= $4 AND appended_at < $5 RETURNING seq + messages, messages",
                )
                .bind(&topic)
                .bind(from)
                .bind(to)
                .bind(below)
                .bind(&cutoff)
                .fetch_all(&self.inner.pools.write)
                .await
                .map_err(|e| storage_error(&e))?;
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
        }
        Ok(deleted)
    }

    /// Closes the database (bus and store), waiting for queries in flight.
    pub async fn close(&self) {
        self.inner.stop.send_replace(true);
        if let Some(stopped) = self.inner.stopped.lock().await.take() {
            let _ = stopped.await;
        }
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
        // A frame gives each part a 32-bit length.
        for (part, len) in [
            ("key", message.key.len()),
            ("headers", headers.len()),
            ("payload", message.payload.len()),
        ] {
            if u32::try_from(len).is_err() {
                return Err(BusError::Storage(format!(
                    "message {part} of {len} bytes is too large for the embedded bus"
                )));
            }
        }
        let (done, answer) = oneshot::channel();
        self.send(WriteOp::Append {
            topic: topic.to_string(),
            key: message.key,
            headers,
            payload: message.payload,
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

/// Lays out messages one after another, each as its key, its headers and
/// its payload, each of the three preceded by its length (u32, little-endian).
fn frame<'a>(messages: impl Iterator<Item = (&'a str, &'a str, &'a [u8])> + Clone) -> Vec<u8> {
    // Sized once: the writer lays out some 100 KB per row, and growing the
    // buffer would copy it over again.
    let len = messages
        .clone()
        .map(|(key, headers, payload)| 12 + key.len() + headers.len() + payload.len())
        .sum();
    let mut out = Vec::with_capacity(len);
    for (key, headers, payload) in messages {
        for part in [key.as_bytes(), headers.as_bytes(), payload] {
            // `append` turns away parts of 4 GiB or more.
            out.extend_from_slice(&u32::try_from(part.len()).unwrap_or(u32::MAX).to_le_bytes());
            out.extend_from_slice(part);
        }
    }
    out
}

/// A frame as stored, with its encoding: [`BATCH_LZ4`] when that is shorter.
fn pack(frame: Vec<u8>) -> (Vec<u8>, i64) {
    if frame.len() < COMPRESS_FROM {
        return (frame, BATCH);
    }
    let compressed = lz4_flex::compress_prepend_size(&frame);
    if compressed.len() < frame.len() {
        (compressed, BATCH_LZ4)
    } else {
        (frame, BATCH)
    }
}

/// An LZ4 block with its decoded length first, decoded.
fn inflate(block: &[u8]) -> Result<Vec<u8>, String> {
    let declared = block
        .first_chunk::<4>()
        .map(|len| u32::from_le_bytes(*len) as usize)
        .ok_or("no length prefix")?;
    if declared > MAX_DECODED {
        return Err(format!("declared length {declared} is implausible"));
    }
    lz4_flex::decompress_size_prepended(block).map_err(|e| e.to_string())
}

/// One `bus_batches` row: first offset, message count, key and headers (of
/// a single-message row), stored bytes and their encoding.
type Row = (i64, i64, String, String, Vec<u8>, i64);

/// Appends to `out` the messages of `row` at offsets from `from` on, up to
/// `limit` in all.
fn unpack(
    topic: &str,
    row: Row,
    from: i64,
    limit: usize,
    out: &mut Vec<Record>,
) -> Result<(), BusError> {
    let (first, count, key, headers, stored, encoding) = row;
    let unreadable =
        |why: &str| BusError::Storage(format!("unreadable batch at {topic}/{first}: {why}"));
    let push = |out: &mut Vec<Record>, offset: i64, key: String, headers: &[u8], payload| {
        let headers: Headers = serde_json::from_slice(headers).map_err(|e| {
            BusError::Storage(format!("unreadable headers at {topic}/{offset}: {e}"))
        })?;
        out.push(Record {
            topic: topic.to_string(),
            partition: 0,
            offset,
            message: Message {
                key,
                headers,
                payload,
            },
        });
        Ok::<_, BusError>(())
    };
    let frame = match encoding {
        RAW | LZ4 if count != 1 => return Err(unreadable("a single-message row counts more")),
        RAW if first >= from => return push(out, first, key, headers.as_bytes(), stored),
        LZ4 if first >= from => {
            let payload = inflate(&stored).map_err(|why| unreadable(&why))?;
            return push(out, first, key, headers.as_bytes(), payload);
        }
        RAW | LZ4 => return Ok(()),
        BATCH => stored,
        BATCH_LZ4 => inflate(&stored).map_err(|why| unreadable(&why))?,
        other => return Err(unreadable(&format!("unknown encoding {other}"))),
    };
    let mut rest = frame.as_slice();
    let mut part = || -> Result<&[u8], BusError> {
        let (len, tail) = rest
            .split_first_chunk::<4>()
            .ok_or_else(|| unreadable("frame cut short"))?;
        let len = u32::from_le_bytes(*len) as usize;
        if len > tail.len() {
            return Err(unreadable("frame cut short"));
        }
        let (part, tail) = tail.split_at(len);
        rest = tail;
        Ok(part)
    };
    for offset in first..first.saturating_add(count) {
        let key = part()?;
        let headers = part()?;
        let payload = part()?;
        if offset >= from && out.len() < limit {
            let key = std::str::from_utf8(key)
                .map_err(|_| unreadable("a key is not UTF-8"))?
                .to_string();
            push(out, offset, key, headers, payload.to_vec())?;
        }
    }
    if !rest.is_empty() {
        return Err(unreadable("frame holds more than its count"));
    }
    Ok(())
}

async fn read_records(
    pool: &SqlitePool,
    topic: &str,
    from: i64,
    limit: usize,
) -> Result<Vec<Record>, BusError> {
    use futures::TryStreamExt;
    let mut records = Vec::new();
    if limit == 0 {
        return Ok(records);
    }
    // The row holding `from` (it may hold nothing from `from` on), then rows
    // of at least one message each: `limit + 1` rows are always enough.
    let rows = i64::try_from(limit).unwrap_or(i64::MAX).saturating_add(1);
    let mut stream = sqlx::query_as::<_, Row>(
        "SELECT seq, messages, msg_key, headers, payload, encoding FROM bus_batches \
         WHERE topic = $1 AND seq >= COALESCE((SELECT MAX(seq) FROM bus_batches WHERE topic = $1 AND seq <= $2), $2) \
         ORDER BY seq LIMIT $3",
    )
    .bind(topic)
    .bind(from)
    .bind(rows)
    .fetch(pool);
    while records.len() < limit {
        let Some(row) = stream.try_next().await.map_err(|e| storage_error(&e))? else {
            break;
        };
        unpack(topic, row, from, limit, &mut records)?;
    }
    Ok(records)
}

#[async_trait]
impl Bus for EmbeddedBus {
    async fn publish(&self, topic: &str, message: Message) -> Result<i64, BusError> {
        self.append(topic, message, None)
            .await?
            .ok_or_else(|| BusError::Storage("append got no offset".into()))
    }

    async fn subscribe(&self, topic: &str, group: &str) -> Result<Box<dyn Consumer>, BusError> {
        let now = now_timestamp();
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
            ahead: std::collections::VecDeque::new(),
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

    /// Stops the writer after what it was given, and closes the
    /// database: the last connection to close checkpoints and removes the
    /// WAL, so a stopped waybill leaves one file.
    async fn close(&self) {
        EmbeddedBus::close(self).await;
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
    /// Records read from `position` on but not yet returned: the rest of a
    /// row that a poll took only part of, so that small polls do not decode
    /// the same row again and again.
    ahead: std::collections::VecDeque<Record>,
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

/// Owns the writes of the bus, and the store's jobs: takes everything
/// queued, commits it in one transaction, then answers each caller. Runs
/// until the bus and the store have both let go of their queues, or until
/// told to stop; then it finishes what was queued and closes the connection.
async fn run_writer(
    db: rusqlite::Connection,
    mut queue: mpsc::Receiver<WriteOp>,
    mut jobs: mpsc::Receiver<Box<dyn Job>>,
    appended: watch::Sender<u64>,
    mut stop: watch::Receiver<bool>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut work = Vec::new();
    let (mut bus_open, mut store_open, mut stopping) = (true, true, false);
    while bus_open || store_open {
        tokio::select! {
            taken = queue.recv_many(&mut batch, MAX_BATCH), if bus_open => bus_open = taken > 0,
            taken = jobs.recv_many(&mut work, MAX_BATCH), if store_open => store_open = taken > 0,
            told = stop.wait_for(|stop| *stop), if !stopping => {
                stopping = true;
                // Told to stop, later sends fail and what is queued is still
                // written. A bus dropped without closing leaves the store's
                // jobs running.
                if told.is_ok() {
                    queue.close();
                    jobs.close();
                }
            }
        }
        // Whatever else is waiting joins this commit.
        while batch.len() < MAX_BATCH
            && let Ok(op) = queue.try_recv()
        {
            batch.push(op);
        }
        while work.len() < MAX_BATCH
            && let Ok(job) = jobs.try_recv()
        {
            work.push(job);
        }
        if batch.is_empty() && work.is_empty() {
            continue;
        }
        let outcome = write_batch(&db, &mut batch, &mut work);
        let committed = outcome.as_ref().map(|_| ()).map_err(|e| e.to_string());
        for job in work.drain(..) {
            job.finish(committed.clone());
        }
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
fn batch_error(error: &rusqlite::Error) -> BusError {
    use rusqlite::ErrorCode;
    match error.sqlite_error_code() {
        Some(
            ErrorCode::DatabaseBusy
            | ErrorCode::SystemIoFailure
            | ErrorCode::DiskFull
            | ErrorCode::CannotOpen,
        ) => BusError::Unavailable(error.to_string()),
        _ => BusError::Storage(error.to_string()),
    }
}

/// Writes one batch of bus operations and store jobs in one transaction;
/// returns the offset given to each append, position for position with
/// `batch`. Each job runs under a savepoint, so one that fails or declines
/// undoes only its own statements.
fn write_batch(
    db: &rusqlite::Connection,
    batch: &mut [WriteOp],
    work: &mut [Box<dyn Job>],
) -> Result<Vec<Option<i64>>, rusqlite::Error> {
    let now = now_timestamp();
    let written = (|| {
        db.execute_batch("BEGIN IMMEDIATE")?;
        let offsets = append_all(db, batch, &now)?;
        for job in work.iter_mut() {
            db.execute_batch("SAVEPOINT job")?;
            let keep = job.run(db);
            db.execute_batch(if keep {
                "RELEASE job"
            } else {
                "ROLLBACK TO job; RELEASE job"
            })?;
        }
        db.execute_batch("COMMIT")?;
        Ok(offsets)
    })();
    if written.is_err() && !db.is_autocommit() {
        // The connection starts its next batch outside a transaction.
        let _ = db.execute_batch("ROLLBACK");
    }
    written
}

fn append_all(
    db: &rusqlite::Connection,
    batch: &mut [WriteOp],
    now: &str,
) -> Result<Vec<Option<i64>>, rusqlite::Error> {
    use rusqlite::params;
    // A commit of store jobs alone prepares nothing here.
    if batch.is_empty() {
        return Ok(Vec::new());
    }
    // Deliveries first: an append whose delivery id is already recorded
    // (before, or earlier in this batch) is dropped.
    let mut remember = db.prepare_cached(
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
    let mut reserve = db.prepare_cached(
        "INSERT INTO bus_topics (topic, next_offset) VALUES (?1, ?2) \
         ON CONFLICT (topic) DO UPDATE SET next_offset = bus_topics.next_offset + ?2 RETURNING next_offset",
    )?;
    let mut next: BTreeMap<String, i64> = BTreeMap::new();
    for (topic, count) in &counts {
        let end: i64 = reserve.query_row(params![topic, count], |row| row.get(0))?;
        next.insert((*topic).to_string(), end - count);
    }
    let mut commit = db.prepare_cached(
        "INSERT INTO bus_offsets (topic, group_name, partition, next_offset, updated_at) \
         VALUES (?1, ?2, 0, ?3, ?4) ON CONFLICT (topic, group_name, partition) \
         DO UPDATE SET next_offset = excluded.next_offset, updated_at = excluded.updated_at",
    )?;
    let mut offsets = vec![None; batch.len()];
    // Positions in `batch` of each topic's appends, in offset order.
    let mut appends: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (position, (op, keep)) in batch.iter().zip(kept).enumerate() {
        match op {
            WriteOp::Append { topic, .. } if keep => {
                let slot = next
                    .get_mut(topic.as_str())
                    .ok_or(rusqlite::Error::QueryReturnedNoRows)?;
                offsets[position] = Some(*slot);
                *slot += 1;
                appends.entry(topic.as_str()).or_default().push(position);
            }
            WriteOp::Append { .. } => {}
            WriteOp::Commit {
                topic,
                group,
                next_offset,
                ..
            } => {
                commit.execute(params![topic, group, next_offset, now])?;
            }
        }
    }
    let mut insert = db.prepare_cached(
        "INSERT INTO bus_batches (topic, seq, messages, msg_key, headers, payload, encoding, appended_at) \
         VALUES (?1, ?2, ?3, '', '', ?4, ?5, ?6)",
    )?;
    for (topic, positions) in appends {
        for row in rows(&positions, |position| match &batch[position] {
            WriteOp::Append { payload, .. } => payload.len(),
            WriteOp::Commit { .. } => 0,
        }) {
            let messages = row.iter().filter_map(|&position| match &batch[position] {
                WriteOp::Append {
                    key,
                    headers,
                    payload,
                    ..
                } => Some((key.as_str(), headers.as_str(), payload.as_slice())),
                WriteOp::Commit { .. } => None,
            });
            let (stored, encoding) = pack(frame(messages));
            let first = row.first().and_then(|&position| offsets[position]);
            let count = i64::try_from(row.len()).unwrap_or(i64::MAX);
            insert.execute(params![topic, first, count, stored, encoding, now])?;
        }
    }
    Ok(offsets)
}

/// Splits a topic's appends (positions in the batch) into rows of at most
/// [`BATCH_MESSAGES`], each closed once its payloads reach [`BATCH_BYTES`].
fn rows(positions: &[usize], size: impl Fn(usize) -> usize) -> Vec<&[usize]> {
    let mut rows = Vec::new();
    let mut start = 0;
    let mut bytes = 0;
    for (i, &position) in positions.iter().enumerate() {
        bytes += size(position);
        if i + 1 - start == BATCH_MESSAGES || bytes >= BATCH_BYTES {
            rows.push(&positions[start..=i]);
            start = i + 1;
            bytes = 0;
        }
    }
    if start < positions.len() {
        rows.push(&positions[start..]);
    }
    rows
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

    /// The keys of `topic`'s messages from offset `from` on.
    async fn keys(bus: &EmbeddedBus, topic: &str, from: i64) -> Vec<String> {
        let records = bus.read(topic, from, 1000).await.unwrap();
        records.into_iter().map(|r| r.message.key).collect()
    }

    fn sample_order() -> Vec<u8> {
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/shopify/order-cod.json"))
            .unwrap()
    }

    #[tokio::test]
    async fn large_payloads_are_stored_compressed_and_read_back_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let bus = open(dir.path()).await;
        let order = sample_order();
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
            "SELECT encoding, length(payload) FROM bus_batches WHERE topic = 't' ORDER BY seq",
        )
        .fetch_all(&bus.inner.pools.read)
        .await
        .unwrap();
        assert_eq!(stored[0].0, BATCH_LZ4);
        assert!(
            (stored[0].1 as usize) < order.len() / 2,
            "{} bytes stored for {}",
            stored[0].1,
            order.len()
        );
        assert_eq!(stored[1].0, BATCH);
        assert!(stored[1].1 > 4096);
        assert_eq!(stored[2].0, BATCH);
    }

    fn append(
        topic: &str,
        key: &str,
        payload: Vec<u8>,
    ) -> (WriteOp, oneshot::Receiver<Result<Option<i64>, BusError>>) {
        let (done, answer) = oneshot::channel();
        let headers = format!("{{\"n\":\"{key}\"}}");
        let op = WriteOp::Append {
            topic: topic.into(),
            key: key.into(),
            headers,
            payload,
            delivery: None,
            done,
        };
        (op, answer)
    }

    #[tokio::test]
    async fn one_commit_stores_a_topics_messages_in_shared_rows_read_back_from_any_offset() {
        let dir = tempfile::tempdir().unwrap();
        let bus = open(dir.path()).await;
        let order = sample_order();
        // Short enough that the count, not the size, closes the rows.
        let order = &order[..4000];
        // 70 orders and 3 other messages, interleaved, committed at once.
        let mut batch = Vec::new();
        for i in 0..73 {
            let (topic, payload) = match i % 25 {
                7 => ("other", format!("short {i}").into_bytes()),
                _ => ("orders", [order, i.to_string().as_bytes()].concat()),
            };
            batch.push(append(topic, &i.to_string(), payload).0);
        }
        let db = sqlite::owned_writer(&dir.path().join(DATABASE_FILE)).unwrap();
        let offsets = write_batch(&db, &mut batch, &mut []).unwrap();
        assert_eq!(offsets.iter().flatten().count(), 73);
        let rows: Vec<(String, i64, i64, i64)> = sqlx::query_as(
            "SELECT topic, seq, messages, encoding FROM bus_batches ORDER BY topic, seq",
        )
        .fetch_all(&bus.inner.pools.read)
        .await
        .unwrap();
        assert_eq!(
            rows,
            [
                ("orders".into(), 0, 32, BATCH_LZ4),
                ("orders".into(), 32, 32, BATCH_LZ4),
                ("orders".into(), 64, 6, BATCH_LZ4),
                ("other".into(), 0, 3, BATCH),
            ]
        );
        // Together, the 70 orders take much less than 70 compressed alone.
        let together: i64 = sqlx::query_scalar(
            "SELECT SUM(length(payload)) FROM bus_batches WHERE topic = 'orders'",
        )
        .fetch_one(&bus.inner.pools.read)
        .await
        .unwrap();
        let alone = lz4_flex::compress_prepend_size(order).len() * 70;
        assert!(
            (together as usize) < alone / 2,
            "{together} bytes against {alone}"
        );

        let expected = |offset: i64| -> (String, Vec<u8>) {
            let i = (0..73)
                .filter(|i| i % 25 != 7)
                .nth(offset as usize)
                .unwrap();
            (i.to_string(), [order, i.to_string().as_bytes()].concat())
        };
        for (from, limit) in [
            (0, 100),
            (5, 3),
            (31, 2),
            (32, 1),
            (63, 7),
            (69, 10),
            (70, 10),
        ] {
            let records = bus.read("orders", from, limit).await.unwrap();
            let want = (from..70).take(limit).collect::<Vec<_>>();
            assert_eq!(records.iter().map(|r| r.offset).collect::<Vec<_>>(), want);
            for record in &records {
                let (key, payload) = expected(record.offset);
                assert_eq!(record.message.key, key);
                assert_eq!(record.message.headers["n"], key);
                assert_eq!(record.message.payload, payload);
            }
        }
        assert_eq!(keys(&bus, "other", 1).await, ["32", "57"]);
    }

    #[tokio::test]
    async fn a_log_written_before_batches_is_migrated_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(DATABASE_FILE);
        // The schema as it was before batches: the first three migrations.
        let before = dir.path().join("before");
        std::fs::create_dir(&before).unwrap();
        let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/sqlite");
        for name in ["0001_store.sql", "0002_bus.sql", "0003_bus_log.sql"] {
            std::fs::copy(shipped.join(name), before.join(name)).unwrap();
        }
        let options = SqliteConnectOptions::new()
            .filename(&file)
            .create_if_missing(true);
        let old = SqlitePool::connect_with(options).await.unwrap();
        sqlx::migrate::Migrator::new(before.as_path())
            .await
            .unwrap()
            .run(&old)
            .await
            .unwrap();
        let payload = vec![b'x'; 2000];
        let compressed = lz4_flex::compress_prepend_size(&payload);
        for (seq, stored, encoding) in [(0, payload.clone(), RAW), (1, compressed, LZ4)] {
            sqlx::query(
                "INSERT INTO bus_messages (topic, seq, msg_key, headers, payload, encoding, appended_at) \
                 VALUES ('old', $1, $2, '{\"h\":\"v\"}', $3, $4, 'then')",
            )
            .bind(seq)
            .bind(format!("k{seq}"))
            .bind(stored)
            .bind(encoding)
            .execute(&old)
            .await
            .unwrap();
        }
        sqlx::query("INSERT INTO bus_topics VALUES ('old', 2)")
            .execute(&old)
            .await
            .unwrap();
        old.close().await;

        let bus = open(dir.path()).await;
        let records = bus.read("old", 0, 10).await.unwrap();
        assert_eq!(records.len(), 2);
        for (seq, record) in records.iter().enumerate() {
            assert_eq!(record.offset, seq as i64);
            assert_eq!(record.message.key, format!("k{seq}"));
            assert_eq!(record.message.headers["h"], "v");
            assert_eq!(record.message.payload, payload);
        }
        assert_eq!(bus.read("old", 1, 10).await.unwrap()[0].offset, 1);
        // New messages follow, in a batch row.
        assert_eq!(bus.publish("old", message("k2", b"new")).await.unwrap(), 2);
        assert_eq!(keys(&bus, "old", 0).await, ["k0", "k1", "k2"]);
    }

    #[test]
    fn a_damaged_batch_is_an_error_not_a_panic() {
        let messages = [
            ("k1", "{}", b"one".as_slice()),
            ("k2", "{}", b"two".as_slice()),
        ];
        let good = frame(messages.into_iter());
        let row = |stored: Vec<u8>, count: i64, encoding: i64| -> Row {
            (7, count, String::new(), String::new(), stored, encoding)
        };
        let read = |row: Row| {
            let mut out = Vec::new();
            unpack("t", row, 0, 10, &mut out).map(|()| out.len())
        };
        assert_eq!(read(row(good.clone(), 2, BATCH)).unwrap(), 2);
        let packed = lz4_flex::compress_prepend_size(&good);
        assert_eq!(read(row(packed.clone(), 2, BATCH_LZ4)).unwrap(), 2);

        let mut huge = packed.clone();
        huge[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        let error = read(row(huge, 2, BATCH_LZ4)).unwrap_err().to_string();
        assert!(
            error.contains("t/7") && error.contains("implausible"),
            "{error}"
        );
        for damaged in [
            row(good[..good.len() - 1].to_vec(), 2, BATCH),
            row(good.clone(), 3, BATCH),
            row(good.clone(), 1, BATCH),
            row(packed[..packed.len() - 3].to_vec(), 2, BATCH_LZ4),
            row(vec![1, 2], 2, BATCH_LZ4),
            row(good.clone(), 2, 9),
            row(b"x".to_vec(), 2, RAW),
        ] {
            assert!(read(damaged).is_err());
        }
        let mut bad_key = good.clone();
        bad_key[4] = 0xff;
        assert!(
            read(row(bad_key, 2, BATCH))
                .unwrap_err()
                .to_string()
                .contains("UTF-8")
        );
        let bad_headers = frame([("k", "{", b"".as_slice())].into_iter());
        assert!(
            read(row(bad_headers, 1, BATCH))
                .unwrap_err()
                .to_string()
                .contains("headers")
        );
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
    async fn a_job_that_fails_or_declines_undoes_only_its_own_statements() {
        let dir = tempfile::tempdir().unwrap();
        let bus = open(dir.path()).await;
        let (jobs, mut queued) = Jobs::new(8);
        let insert = |id: &'static str, then: &'static str| {
            let jobs = jobs.clone();
            tokio::spawn(async move {
                jobs.run(move |db| {
                    db.execute(
                        "INSERT INTO webhook_deliveries VALUES ('job', 'a', ?1, 'now')",
                        [id],
                    )?;
                    match then {
                        "keep" => Ok(Some(id)),
                        "decline" => Ok(None),
                        _ => db
                            .execute("INSERT INTO no_such_table VALUES (1)", [])
                            .map(|_| None),
                    }
                })
                .await
            })
        };
        let answers = [
            insert("kept", "keep"),
            insert("failed", "fail"),
            insert("declined", "decline"),
            insert("also kept", "keep"),
        ];
        let mut work = Vec::new();
        while work.len() < answers.len() {
            queued.recv_many(&mut work, 8).await;
        }
        // The four jobs and an append, in one transaction.
        let (op, _answer) = append("orders", "k", b"o".to_vec());
        let db = sqlite::owned_writer(&dir.path().join(DATABASE_FILE)).unwrap();
        let offsets = write_batch(&db, &mut [op], &mut work).unwrap();
        assert_eq!(offsets, [Some(0)]);
        for job in work {
            job.finish(Ok(()));
        }
        let mut outcomes = Vec::new();
        for answer in answers {
            outcomes.push(answer.await.unwrap());
        }
        assert_eq!(outcomes[0], Ok(Some("kept")));
        assert!(outcomes[1].as_ref().unwrap_err().contains("no_such_table"));
        assert_eq!(outcomes[2], Ok(None));
        assert_eq!(outcomes[3], Ok(Some("also kept")));
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT delivery_id FROM webhook_deliveries WHERE source = 'job' ORDER BY delivery_id",
        )
        .fetch_all(&bus.inner.pools.read)
        .await
        .unwrap();
        assert_eq!(ids, ["also kept", "kept"]);
        assert_eq!(bus.read("orders", 0, 10).await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn a_failed_commit_reaches_every_job_as_an_error() {
        let (jobs, mut queued) = Jobs::new(1);
        let answer = tokio::spawn(async move { jobs.run(|_| Ok(Some(()))).await });
        let job = queued.recv().await.unwrap();
        job.finish(Err("disk I/O error".into()));
        assert_eq!(answer.await.unwrap(), Err("disk I/O error".to_string()));
    }

    #[tokio::test]
    async fn small_polls_walk_a_batch_row_in_order_and_resume_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let bus = open(dir.path()).await;
        let mut batch: Vec<_> = (0..40)
            .map(|i| append("orders", &i.to_string(), vec![b'o'; 100]).0)
            .collect();
        let db = sqlite::owned_writer(&dir.path().join(DATABASE_FILE)).unwrap();
        write_batch(&db, &mut batch, &mut []).unwrap();
        let mut consumer = bus.subscribe("orders", "g").await.unwrap();
        let mut seen = Vec::new();
        for max in [1, 3, 0, 2, 30, 1] {
            let records = consumer.poll(max, Duration::ZERO).await.unwrap();
            assert!(records.len() <= max);
            seen.extend(records.iter().map(|r| (r.offset, r.message.key.clone())));
        }
        // Appended after the last poll began: still found once the rows read are used up.
        bus.publish("orders", message("40", b"o")).await.unwrap();
        while seen.len() < 41 {
            let records = consumer.poll(7, Duration::from_secs(5)).await.unwrap();
            assert!(!records.is_empty());
            seen.extend(records.iter().map(|r| (r.offset, r.message.key.clone())));
        }
        let expected: Vec<(i64, String)> = (0..41).map(|i| (i, i.to_string())).collect();
        assert_eq!(seen, expected);
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

    #[tokio::test]
    async fn a_full_disk_makes_the_bus_unavailable_until_space_returns() {
        let dir = tempfile::tempdir().unwrap();
        let (bus, store) = open_embedded(dir.path()).await.unwrap();
        bus.publish("orders", message("first", b"x")).await.unwrap();
        // Capping the file's size on the writer's connection is a full disk to SQLite.
        let pages: i64 = sqlx::query_scalar("PRAGMA page_count")
            .fetch_one(&bus.inner.pools.write)
            .await
            .unwrap();
        let writer = store.jobs().unwrap();
        let cap = |pages: i64| {
            writer.run(move |db| {
                db.query_row(&format!("PRAGMA max_page_count = {pages}"), [], |_| Ok(()))
                    .map(Some)
            })
        };
        cap(pages).await.unwrap();
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
        cap(1_073_741_823).await.unwrap();
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
