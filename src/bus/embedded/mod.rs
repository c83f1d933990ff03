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

mod codec;
mod consumer;
mod retention;
mod writer;

pub use consumer::EmbeddedConsumer;

use super::{Bus, BusError, Cause, Consumer, TopicOffset};
use crate::clock::now_timestamp;
use crate::model::{Message, Record};
use crate::store::sql::SqlStore;
use crate::store::sqlite::{self, Job, Jobs, OpenError, SqlitePools};
use async_trait::async_trait;
use codec::read_records;
use sqlx::sqlite::SqliteConnectOptions;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use writer::{Delivery, LastCommit, Queues, WriteOp, run_writer};

/// Name of the database file under the data directory.
pub const DATABASE_FILE: &str = "waybill.db";

/// Operations waiting for the writer; a full queue makes publishers wait.
const QUEUE_DEPTH: usize = 16 * 1024;

/// Consumers also look for new records this often, because another process
/// (such as `waybill dlq replay`) may append without waking this one.
const RECHECK: Duration = Duration::from_millis(250);

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
        BusError::io(
            format!("cannot create data directory {}", data_dir.display()),
            e,
        )
    })?;
    let file = data_dir.join(DATABASE_FILE);
    let pools = sqlite::open(SqliteConnectOptions::new().filename(&file))
        .await
        .map_err(|e| match e {
            OpenError::Connect(e) => BusError::from(e),
            OpenError::Migrate(e) => BusError::Storage(Cause::Migrate(e)),
        })?;
    let writer = sqlite::owned_writer(&file)?;
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
    /// Whether the writer's last commit failed, for [`Bus::check`].
    last_commit: Arc<LastCommit>,
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
        let last_commit = Arc::new(LastCommit::default());
        let last = last_commit.clone();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| BusError::io("cannot start the bus writer", e))?;
        // The writer gets a thread and a connection of its own: it works
        // synchronously on the database, and every publisher waits for it,
        // so it must neither block nor queue behind request handlers on a
        // runtime worker, nor hand a pooled connection back and forth.
        std::thread::Builder::new()
            .name("waybill-bus-writer".into())
            .spawn(move || {
                let queues = Queues {
                    ops: queue,
                    jobs,
                    stop: stopping,
                };
                runtime.block_on(run_writer(db, queues, appended_tx, last));
                drop(stopped_tx);
            })
            .map_err(|e| BusError::io("cannot start the bus writer", e))?;
        Ok(EmbeddedBus {
            inner: Arc::new(Inner {
                writer,
                pools,
                appended,
                recheck,
                stop,
                stopped: tokio::sync::Mutex::new(Some(stopped)),
                last_commit,
            }),
        })
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
            .map_err(|e| BusError::invalid(format!("cannot encode headers: {e}")))?;
        // A frame gives each part a 32-bit length.
        for (part, len) in [
            ("key", message.key.len()),
            ("headers", headers.len()),
            ("payload", message.payload.len()),
        ] {
            if u32::try_from(len).is_err() {
                return Err(BusError::invalid(format!(
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

#[async_trait]
impl Bus for EmbeddedBus {
    async fn publish(&self, topic: &str, message: Message) -> Result<i64, BusError> {
        self.append(topic, message, None)
            .await?
            .ok_or_else(|| BusError::invalid("append got no offset"))
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
        .map_err(BusError::from)?;
        let position: i64 = sqlx::query_scalar(
            "SELECT next_offset FROM bus_offsets WHERE topic = $1 AND group_name = $2 AND partition = 0",
        )
        .bind(topic)
        .bind(group)
        .fetch_optional(&self.inner.pools.write)
        .await
        .map_err(BusError::from)?
        .unwrap_or(0);
        Ok(Box::new(EmbeddedConsumer::new(
            self, topic, group, position,
        )))
    }

    async fn read(&self, topic: &str, from: i64, limit: usize) -> Result<Vec<Record>, BusError> {
        read_records(&self.inner.pools.read, topic, from, limit).await
    }

    async fn read_partition(
        &self,
        from: TopicOffset<'_>,
        limit: usize,
    ) -> Result<Vec<Record>, BusError> {
        if from.partition != 0 {
            return Ok(Vec::new());
        }
        read_records(&self.inner.pools.read, from.topic, from.offset, limit).await
    }

    async fn partitions(&self, _topic: &str) -> Result<Vec<i32>, BusError> {
        Ok(vec![0])
    }

    async fn topics(&self) -> Result<Vec<String>, BusError> {
        sqlx::query_scalar("SELECT topic FROM bus_topics ORDER BY topic")
            .fetch_all(&self.inner.pools.read)
            .await
            .map_err(BusError::from)
    }

    /// Stops the writer after what it was given, and closes the
    /// database: the last connection to close checkpoints and removes the
    /// WAL, so a stopped waybill leaves one file.
    async fn close(&self) {
        EmbeddedBus::close(self).await;
    }

    /// Not ready while the writer's last commit failed (a full disk fails
    /// every commit, so every webhook would get 503). Cheap while writes
    /// succeed: a flag. After a failure, each check commits one small write
    /// of its own through the writer, so readiness returns once the disk
    /// takes writes again, even if no webhook comes to try.
    async fn check(&self) -> Result<(), BusError> {
        if self.inner.writer.is_closed() {
            return Err(BusError::Closed);
        }
        if self.inner.last_commit.failure().is_some() {
            let (done, answer) = oneshot::channel();
            self.send(WriteOp::Probe { done }).await?;
            answer.await.map_err(|_| BusError::Closed)??;
        }
        sqlx::query("SELECT 1")
            .execute(&self.inner.pools.write)
            .await
            .map_err(BusError::from)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::codec::{BATCH, BATCH_LZ4};
    use super::writer::write_batch;
    use super::*;
    use crate::model::{Headers, header};
    use crate::store::Store;
    use std::collections::HashMap;

    pub(super) fn message(key: &str, payload: &[u8]) -> Message {
        let mut headers = Headers::new();
        headers.insert(header::ID.into(), format!("id-{key}"));
        headers.insert(header::SOURCE.into(), "shopify".into());
        Message {
            key: key.into(),
            headers,
            payload: payload.to_vec(),
        }
    }

    pub(super) async fn open(dir: &Path) -> EmbeddedBus {
        open_embedded(dir).await.unwrap().0
    }

    /// Publishes `count` messages of `payload` to `topic`, keyed `0`, `1`, ….
    pub(super) async fn publish_numbered(
        bus: &EmbeddedBus,
        topic: &str,
        count: u32,
        payload: &[u8],
    ) {
        for i in 0..count {
            bus.publish(topic, message(&i.to_string(), payload))
                .await
                .unwrap();
        }
    }

    /// The keys of `topic`'s messages from offset `from` on.
    pub(super) async fn keys(bus: &EmbeddedBus, topic: &str, from: i64) -> Vec<String> {
        let records = bus.read(topic, from, 1000).await.unwrap();
        records.into_iter().map(|r| r.message.key).collect()
    }

    /// The offsets of `topic`'s messages from offset `from` on.
    pub(super) async fn offsets(bus: &EmbeddedBus, topic: &str, from: i64) -> Vec<i64> {
        let records = bus.read(topic, from, 1000).await.unwrap();
        records.into_iter().map(|r| r.offset).collect()
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

    pub(super) fn append(
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
        assert_eq!(
            offsets(&bus, "orders", 0).await,
            (0..=offset).collect::<Vec<_>>()
        );
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
    async fn partition_zero_is_the_whole_topic() {
        let dir = tempfile::tempdir().unwrap();
        let bus = open(dir.path()).await;
        publish_numbered(&bus, "dlq.p", 5, b"d").await;
        assert_eq!(bus.partitions("dlq.p").await.unwrap(), [0]);
        let at = |partition, offset| TopicOffset {
            topic: "dlq.p",
            partition,
            offset,
        };
        let read = bus.read_partition(at(0, 2), 2).await.unwrap();
        assert_eq!(read.iter().map(|r| r.offset).collect::<Vec<_>>(), [2, 3]);
        assert!(bus.read_partition(at(1, 0), 10).await.unwrap().is_empty());
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
