//! The embedded bus's group-commit writer: a thread with a connection of
//! its own takes every append, offset commit and store job queued, writes
//! them in one transaction, and only then answers each caller.

use super::codec::{BATCH_BYTES, BATCH_MESSAGES, frame, pack};
use crate::bus::BusError;
use crate::clock::now_timestamp;
use crate::store::sqlite::Job;
use rusqlite::params;
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot, watch};

/// Most operations committed in one transaction.
const MAX_BATCH: usize = 2048;

/// A write for the writer thread.
pub(super) enum WriteOp {
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
    /// Rewrites the probe row: whether the database takes a write.
    Probe {
        done: oneshot::Sender<Result<(), BusError>>,
    },
}

/// What the writer's last commit left: the error of one that failed, kept
/// until a commit with bus operations in it succeeds. Readiness reads it: a
/// full disk fails every commit, and the bus should not call itself ready
/// meanwhile.
#[derive(Debug, Default)]
pub(super) struct LastCommit(std::sync::Mutex<Option<Arc<rusqlite::Error>>>);

impl LastCommit {
    fn record(&self, failure: Option<Arc<rusqlite::Error>>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = failure;
    }

    /// The error of the last commit, if it failed.
    pub(super) fn failure(&self) -> Option<Arc<rusqlite::Error>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// A webhook delivery id, recorded in the store's `webhook_deliveries`.
pub(super) struct Delivery {
    pub(super) source: String,
    pub(super) account: String,
    pub(super) id: String,
}

/// The writer's two queues and what tells it to stop.
pub(super) struct Queues {
    pub(super) ops: mpsc::Receiver<WriteOp>,
    pub(super) jobs: mpsc::Receiver<Box<dyn Job>>,
    pub(super) stop: watch::Receiver<bool>,
}

/// Owns the writes of the bus, and the store's jobs: takes everything
/// queued, commits it in one transaction, then answers each caller. Runs
/// until the bus and the store have both let go of their queues, or until
/// told to stop; then it finishes what was queued and closes the connection.
pub(super) async fn run_writer(
    db: rusqlite::Connection,
    mut queues: Queues,
    appended: watch::Sender<u64>,
    last: Arc<LastCommit>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut work = Vec::new();
    let (mut bus_open, mut store_open, mut stopping) = (true, true, false);
    while bus_open || store_open {
        tokio::select! {
            taken = queues.ops.recv_many(&mut batch, MAX_BATCH), if bus_open => bus_open = taken > 0,
            taken = queues.jobs.recv_many(&mut work, MAX_BATCH), if store_open => store_open = taken > 0,
            told = queues.stop.wait_for(|stop| *stop), if !stopping => {
                stopping = true;
                // Told to stop, later sends fail and what is queued is still
                // written. A bus dropped without closing leaves the store's
                // jobs running.
                if told.is_ok() {
                    queues.ops.close();
                    queues.jobs.close();
                }
            }
        }
        take_waiting(&mut queues, &mut batch, &mut work);
        if batch.is_empty() && work.is_empty() {
            continue;
        }
        let outcome = write_batch(&db, &mut batch, &mut work).map_err(Arc::new);
        // A commit of store jobs alone may have changed nothing, so only
        // one with bus operations in it proves that writes succeed again.
        if outcome.is_err() || !batch.is_empty() {
            last.record(outcome.as_ref().err().cloned());
        }
        let committed = outcome.as_ref().map(|_| ()).map_err(|e| e.to_string());
        for job in work.drain(..) {
            job.finish(committed.clone());
        }
        if answer(batch.drain(..), outcome) {
            appended.send_modify(|version| *version += 1);
        }
    }
}

/// Moves whatever else is waiting into this commit.
fn take_waiting(queues: &mut Queues, batch: &mut Vec<WriteOp>, work: &mut Vec<Box<dyn Job>>) {
    while batch.len() < MAX_BATCH
        && let Ok(op) = queues.ops.try_recv()
    {
        batch.push(op);
    }
    while work.len() < MAX_BATCH
        && let Ok(job) = queues.jobs.try_recv()
    {
        work.push(job);
    }
}

/// Tells each operation of a written batch its outcome; answers whether
/// anything was appended.
fn answer(
    batch: impl Iterator<Item = WriteOp>,
    outcome: Result<Vec<Option<i64>>, Arc<rusqlite::Error>>,
) -> bool {
    // A caller that gave up waiting no longer needs its answer, so failed
    // sends on `done` are ignored.
    match outcome {
        Ok(offsets) => {
            let mut any_appended = false;
            for (op, offset) in batch.zip(offsets) {
                match op {
                    WriteOp::Append { done, .. } => {
                        any_appended |= offset.is_some();
                        let _ = done.send(Ok(offset));
                    }
                    WriteOp::Commit { done, .. } | WriteOp::Probe { done } => {
                        let _ = done.send(Ok(()));
                    }
                }
            }
            any_appended
        }
        Err(error) => {
            for op in batch {
                match op {
                    WriteOp::Append { done, .. } => {
                        let _ = done.send(Err(BusError::writer(&error)));
                    }
                    WriteOp::Commit { done, .. } | WriteOp::Probe { done } => {
                        let _ = done.send(Err(BusError::writer(&error)));
                    }
                }
            }
            false
        }
    }
}

/// Writes one batch of bus operations and store jobs in one transaction;
/// returns the offset given to each append, position for position with
/// `batch`. Each job runs under a savepoint, so one that fails or declines
/// undoes only its own statements.
pub(super) fn write_batch(
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

/// Runs the bus operations of a batch: records delivery ids, hands out
/// offsets, stores commits and appends the messages kept.
fn append_all(
    db: &rusqlite::Connection,
    batch: &[WriteOp],
    now: &str,
) -> Result<Vec<Option<i64>>, rusqlite::Error> {
    // A commit of store jobs alone prepares nothing here.
    if batch.is_empty() {
        return Ok(Vec::new());
    }
    let kept = remember_deliveries(db, batch, now)?;
    let next = reserve_offsets(db, batch, &kept)?;
    let (offsets, appends) = assign_offsets(batch, &kept, next)?;
    store_commits(db, batch, now)?;
    insert_rows(db, batch, &offsets, appends, now)?;
    write_probes(db, batch, now)?;
    Ok(offsets)
}

/// Bytes a probe makes room for: about one commit of webhooks.
const PROBE_BYTES: i64 = 64 * 1024;

/// Rewrites the probe row once if the batch holds a probe: with
/// [`PROBE_BYTES`] of padding, cleared again before the commit.
fn write_probes(
    db: &rusqlite::Connection,
    batch: &[WriteOp],
    now: &str,
) -> Result<(), rusqlite::Error> {
    if batch.iter().any(|op| matches!(op, WriteOp::Probe { .. })) {
        db.prepare_cached(
            "INSERT INTO bus_write_probe (id, written_at, padding) VALUES (1, ?1, zeroblob(?2)) \
             ON CONFLICT (id) DO UPDATE SET written_at = excluded.written_at, padding = excluded.padding",
        )?
        .execute(params![now, PROBE_BYTES])?;
        db.prepare_cached("UPDATE bus_write_probe SET padding = NULL WHERE id = 1")?
            .execute([])?;
    }
    Ok(())
}

/// Records the delivery ids of the batch's appends; answers, position for
/// position, whether each operation is kept: an append whose delivery id is
/// already recorded (before, or earlier in this batch) is dropped.
fn remember_deliveries(
    db: &rusqlite::Connection,
    batch: &[WriteOp],
    now: &str,
) -> Result<Vec<bool>, rusqlite::Error> {
    let mut remember = db.prepare_cached(
        "INSERT INTO webhook_deliveries (source, account, delivery_id, received_at) VALUES (?1, ?2, ?3, ?4) \
         ON CONFLICT (source, account, delivery_id) DO NOTHING",
    )?;
    let mut kept = Vec::with_capacity(batch.len());
    for op in batch {
        let keep = match op {
            WriteOp::Append {
                delivery: Some(d), ..
            } => remember.execute(params![d.source, d.account, d.id, now])? == 1,
            _ => true,
        };
        kept.push(keep);
    }
    Ok(kept)
}

/// Reserves offsets for the appends kept, topic by topic; answers each
/// topic's first reserved offset.
fn reserve_offsets(
    db: &rusqlite::Connection,
    batch: &[WriteOp],
    kept: &[bool],
) -> Result<BTreeMap<String, i64>, rusqlite::Error> {
    let mut counts: BTreeMap<&str, i64> = BTreeMap::new();
    for (op, keep) in batch.iter().zip(kept) {
        if let (WriteOp::Append { topic, .. }, true) = (op, keep) {
            *counts.entry(topic.as_str()).or_default() += 1;
        }
    }
    // Offsets are handed out from `bus_topics` inside the transaction (not
    // from memory), so another process appending to the same file stays in step.
    let mut reserve = db.prepare_cached(
        "INSERT INTO bus_topics (topic, next_offset) VALUES (?1, ?2) \
         ON CONFLICT (topic) DO UPDATE SET next_offset = bus_topics.next_offset + ?2 RETURNING next_offset",
    )?;
    let mut next = BTreeMap::new();
    for (topic, count) in counts {
        let end: i64 = reserve.query_row(params![topic, count], |row| row.get(0))?;
        next.insert(topic.to_string(), end - count);
    }
    Ok(next)
}

/// Positions in the batch of each topic's appends, in offset order.
type Appends<'a> = BTreeMap<&'a str, Vec<usize>>;

/// Gives each kept append the next offset of its topic, from `next`.
fn assign_offsets<'a>(
    batch: &'a [WriteOp],
    kept: &[bool],
    mut next: BTreeMap<String, i64>,
) -> Result<(Vec<Option<i64>>, Appends<'a>), rusqlite::Error> {
    let mut offsets = vec![None; batch.len()];
    let mut appends = Appends::new();
    for (position, (op, keep)) in batch.iter().zip(kept).enumerate() {
        if let (WriteOp::Append { topic, .. }, true) = (op, keep) {
            let slot = next
                .get_mut(topic.as_str())
                .ok_or(rusqlite::Error::QueryReturnedNoRows)?;
            offsets[position] = Some(*slot);
            *slot += 1;
            appends.entry(topic.as_str()).or_default().push(position);
        }
    }
    Ok((offsets, appends))
}

/// Stores the batch's offset commits.
fn store_commits(
    db: &rusqlite::Connection,
    batch: &[WriteOp],
    now: &str,
) -> Result<(), rusqlite::Error> {
    let mut commit = db.prepare_cached(
        "INSERT INTO bus_offsets (topic, group_name, partition, next_offset, updated_at) \
         VALUES (?1, ?2, 0, ?3, ?4) ON CONFLICT (topic, group_name, partition) \
         DO UPDATE SET next_offset = excluded.next_offset, updated_at = excluded.updated_at",
    )?;
    for op in batch {
        if let WriteOp::Commit {
            topic,
            group,
            next_offset,
            ..
        } = op
        {
            commit.execute(params![topic, group, next_offset, now])?;
        }
    }
    Ok(())
}

/// Stores each topic's appends in rows of [`BATCH_MESSAGES`] at most.
fn insert_rows(
    db: &rusqlite::Connection,
    batch: &[WriteOp],
    offsets: &[Option<i64>],
    appends: Appends<'_>,
    now: &str,
) -> Result<(), rusqlite::Error> {
    let mut insert = db.prepare_cached(
        "INSERT INTO bus_batches (topic, seq, messages, payload, encoding, appended_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?;
    let message = |position: usize| match &batch[position] {
        WriteOp::Append {
            key,
            headers,
            payload,
            ..
        } => Some((key.as_str(), headers.as_str(), payload.as_slice())),
        WriteOp::Commit { .. } | WriteOp::Probe { .. } => None,
    };
    for (topic, positions) in appends {
        let size = |position| message(position).map_or(0, |(_, _, payload)| payload.len());
        for row in rows(&positions, size) {
            let (stored, encoding) = pack(frame(row.iter().filter_map(|&p| message(p))));
            let first = row.first().and_then(|&position| offsets[position]);
            let count = i64::try_from(row.len()).unwrap_or(i64::MAX);
            insert.execute(params![topic, first, count, stored, encoding, now])?;
        }
    }
    Ok(())
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
    use super::super::DATABASE_FILE;
    use super::super::tests::{append, open};
    use super::*;
    use crate::bus::Bus;
    use crate::store::sqlite::{self, Jobs};

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
    async fn a_failed_commit_makes_the_bus_unready_until_a_write_succeeds_again() {
        let dir = tempfile::tempdir().unwrap();
        let (bus, store) = super::super::open_embedded(dir.path()).await.unwrap();
        bus.publish("orders", message_of(b"first")).await.unwrap();
        bus.check().await.expect("ready while commits succeed");
        // A file that may not grow is a full disk to SQLite.
        let writer = store.jobs().unwrap();
        let cap = |pages: &'static str| {
            writer.run(move |db| {
                let pages: i64 = if pages == "now" {
                    db.query_row("PRAGMA page_count", [], |row| row.get(0))?
                } else {
                    1_073_741_823
                };
                db.query_row(&format!("PRAGMA max_page_count = {pages}"), [], |_| Ok(()))
                    .map(Some)
            })
        };
        cap("now").await.unwrap();
        let mut failed = false;
        for _ in 0..100 {
            if bus
                .publish("orders", message_of(&[7; 64 * 1024]))
                .await
                .is_err()
            {
                failed = true;
                break;
            }
        }
        assert!(failed, "the capped file filled up");
        let unready = bus
            .check()
            .await
            .expect_err("not ready while the disk is full");
        assert!(unready.to_string().contains("full"), "{unready}");
        assert!(bus.check().await.is_err(), "the probe fails as well");
        // Room again: the next check's own write succeeds, with no append to try.
        cap("unlimited").await.unwrap();
        assert!(
            bus.inner.last_commit.failure().is_some(),
            "a commit of jobs alone proves nothing"
        );
        bus.check().await.expect("ready once a write succeeds");
        let probes: i64 =
            sqlx::query_scalar("SELECT count(*) FROM bus_write_probe WHERE padding IS NULL")
                .fetch_one(&bus.inner.pools.read)
                .await
                .unwrap();
        assert_eq!(probes, 1, "the check wrote, and cleared, its probe");
        bus.publish("orders", message_of(b"after")).await.unwrap();
        bus.check().await.expect("still ready");
    }

    fn message_of(payload: &[u8]) -> crate::model::Message {
        crate::model::Message {
            key: "k".into(),
            headers: Default::default(),
            payload: payload.to_vec(),
        }
    }

    #[tokio::test]
    async fn a_failed_commit_reaches_every_job_as_an_error() {
        let (jobs, mut queued) = Jobs::new(1);
        let answer = tokio::spawn(async move { jobs.run(|_| Ok(Some(()))).await });
        let job = queued.recv().await.unwrap();
        job.finish(Err("disk I/O error".into()));
        assert_eq!(answer.await.unwrap(), Err("disk I/O error".to_string()));
    }
}
