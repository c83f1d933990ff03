//! The SQLite database file shared by the embedded bus and the store: one
//! writer connection and a small pool of readers, both on the same file.
//! With the embedded bus, its writer thread owns a second writing connection
//! and also runs the store's frequent changes as [`Job`]s, so they share its
//! group commits.
//!
//! ```yaml
//! data_dir: ./data        # the database is <data_dir>/waybill.db
//! ```

use sqlx::migrate::MigrateError;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// How long a statement waits for SQLite's write lock (another process, such
/// as `waybill dlq replay`, may hold it) before failing with SQLITE_BUSY.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a caller waits for the one writer connection.
const WRITE_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

/// Readers never block the writer under WAL, so a few are enough.
const READERS: u32 = 4;

/// How often the WAL is copied back into the database file.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

/// WAL size (in pages, 4 KiB by default) past which a checkpoint restarts it.
const WAL_RESTART_PAGES: i64 = 64 * 1024;

/// A restart holds every writer while it copies what the WAL has beyond the
/// last checkpoint, so passive passes first bring that down to this many
/// pages (or run out of passes: under a steady load each pass leaves less).
const RESTART_TAIL_PAGES: i64 = 1024;

/// Passive passes at most before a restart.
const CATCH_UP_PASSES: usize = 4;

/// Why the database could not be opened.
#[derive(Debug, thiserror::Error)]
pub(crate) enum OpenError {
    #[error("cannot open SQLite database: {0}")]
    Connect(#[from] sqlx::Error),
    #[error("cannot migrate SQLite database: {0}")]
    Migrate(#[from] MigrateError),
}

/// The connections to one SQLite file.
#[derive(Clone)]
pub(crate) struct SqlitePools {
    /// Exactly one connection, so writers queue in the pool instead of
    /// fighting over SQLite's lock. With the embedded bus, the frequent
    /// writes go to its writer's own connection instead, and this one takes
    /// the rest (first statements that write, so a busy lock is waited for).
    pub write: SqlitePool,
    pub read: SqlitePool,
}

/// Opens a connection on the already created and migrated database `file`,
/// set up as [`open`] sets up the pools' connections, for a thread to own.
pub(crate) fn owned_writer(file: &Path) -> rusqlite::Result<rusqlite::Connection> {
    let db =
        rusqlite::Connection::open_with_flags(file, rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE)?;
    db.busy_handler(Some(wait_briefly))?;
    // The same choices as `open`, which explains them; all are per connection.
    db.execute_batch(
        "PRAGMA synchronous = NORMAL; PRAGMA wal_autocheckpoint = 0; PRAGMA foreign_keys = ON;",
    )?;
    Ok(db)
}

/// How long the writer's connection sleeps before it tries a busy lock
/// again. SQLite's own busy timeout sleeps longer and longer (up to 100 ms),
/// so a lock held for a few milliseconds, as by a WAL restart, would stall
/// every publisher for tens of them.
const BUSY_RETRY: Duration = Duration::from_micros(250);

/// The writer's busy handler: retries every [`BUSY_RETRY`] until
/// [`BUSY_TIMEOUT`] has passed, then gives up with SQLITE_BUSY.
fn wait_briefly(retries: i32) -> bool {
    let waited = BUSY_RETRY * u32::try_from(retries).unwrap_or(u32::MAX);
    if waited >= BUSY_TIMEOUT {
        return false;
    }
    std::thread::sleep(BUSY_RETRY);
    true
}

/// A change that the thread owning the write connection runs inside the
/// transaction it commits next, under a savepoint of its own.
pub(crate) trait Job: Send {
    /// Runs the change's statements; answers whether to keep them.
    fn run(&mut self, db: &rusqlite::Connection) -> bool;
    /// Tells the caller the change's outcome once the transaction has
    /// committed, or why it failed.
    fn finish(self: Box<Self>, committed: Result<(), String>);
}

/// The queue of the thread that owns the write connection and runs [`Job`]s.
#[derive(Clone)]
pub(crate) struct Jobs(mpsc::Sender<Box<dyn Job>>);

impl Jobs {
    /// A queue of `depth` jobs, and its receiving end for the owning thread.
    pub(crate) fn new(depth: usize) -> (Jobs, mpsc::Receiver<Box<dyn Job>>) {
        let (sender, receiver) = mpsc::channel(depth);
        (Jobs(sender), receiver)
    }

    /// Runs `work` in the owning thread's next transaction. `work` answers
    /// `None` to undo its statements and decline. Errors are the database's.
    pub(crate) async fn run<T, F>(&self, work: F) -> Result<Option<T>, String>
    where
        T: Send + 'static,
        F: FnOnce(&rusqlite::Connection) -> rusqlite::Result<Option<T>> + Send + 'static,
    {
        const STOPPED: &str = "the database writer has stopped";
        let (done, answer) = oneshot::channel();
        let change = Change {
            work: Some(work),
            outcome: None,
            done,
        };
        self.0
            .send(Box::new(change))
            .await
            .map_err(|_| STOPPED.to_string())?;
        answer.await.map_err(|_| STOPPED.to_string())?
    }
}

/// A [`Job`] made of a closure and the channel its outcome goes back on.
struct Change<F, T> {
    work: Option<F>,
    outcome: Option<rusqlite::Result<Option<T>>>,
    done: oneshot::Sender<Result<Option<T>, String>>,
}

impl<F, T> Job for Change<F, T>
where
    T: Send,
    F: FnOnce(&rusqlite::Connection) -> rusqlite::Result<Option<T>> + Send,
{
    fn run(&mut self, db: &rusqlite::Connection) -> bool {
        let outcome = self.work.take().map(|work| work(db));
        let keep = matches!(outcome, Some(Ok(Some(_))));
        self.outcome = outcome;
        keep
    }

    fn finish(self: Box<Self>, committed: Result<(), String>) {
        let answer = match (committed, self.outcome) {
            (Err(why), _) => Err(why),
            (Ok(()), Some(outcome)) => outcome.map_err(|e| e.to_string()),
            (Ok(()), None) => Err("the change was never run".to_string()),
        };
        // A caller that stopped waiting no longer needs the answer.
        let _ = self.done.send(answer);
    }
}

/// Opens (creating if missing) and migrates the database described by `options`.
pub(crate) async fn open(options: SqliteConnectOptions) -> Result<SqlitePools, OpenError> {
    // WAL with synchronous=NORMAL: a committed transaction is in the WAL file
    // before commit returns, so it survives the process being killed (kill -9);
    // only a power loss or OS crash can drop the last commits. That is the
    // durability the embedded bus promises, at a fraction of FULL's fsyncs.
    let options = options
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(BUSY_TIMEOUT)
        // SQLite would checkpoint on the committing connection, stalling the
        // one writer (and every publisher queued behind it) for the length of
        // a checkpoint and its fsync; a background task checkpoints instead.
        .pragma("wal_autocheckpoint", "0");
    // A pool pings a connection before lending it out by default: for a
    // file on this machine that proves nothing a statement would not, yet it
    // is one more round trip to the connection's thread per transaction, and
    // on the one write connection those round trips are what bookings queue on.
    let write = SqlitePoolOptions::new()
        .test_before_acquire(false)
        .max_connections(1)
        .acquire_timeout(WRITE_ACQUIRE_TIMEOUT)
        .connect_with(options.clone())
        .await?;
    sqlx::migrate!("migrations/sqlite").run(&write).await?;
    let read = SqlitePoolOptions::new()
        .test_before_acquire(false)
        .max_connections(READERS)
        .connect_with(options.clone())
        .await?;
    tokio::spawn(checkpoint(
        read.clone(),
        options.get_filename().to_path_buf(),
    ));
    Ok(SqlitePools { write, read })
}

/// Checkpoints the WAL in the background until the database is closed.
async fn checkpoint(pool: SqlitePool, file: PathBuf) {
    let mut tick = tokio::time::interval(CHECKPOINT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if pool.is_closed() {
            return;
        }
        match checkpoint_once(&pool, WAL_RESTART_PAGES, &file).await {
            Ok(None) => {}
            Ok(Some(left)) => tracing::debug!(pages_left = left, "WAL restarted"),
            Err(_) if pool.is_closed() => return,
            Err(error) => tracing::warn!(%error, "WAL checkpoint failed; retrying"),
        }
    }
}

/// Copies the WAL into the database file without blocking the writer
/// (PASSIVE). Readers that never pause could keep the WAL from being reused,
/// so past `restart_pages` ([`WAL_RESTART_PAGES`]) it restarts the WAL,
/// briefly holding writers. `file` is the database file. Returns how many
/// pages the restart had still to copy, if it ran.
async fn checkpoint_once(
    pool: &SqlitePool,
    restart_pages: i64,
    file: &Path,
) -> Result<Option<i64>, sqlx::Error> {
    let passive = || async {
        sqlx::query_as::<_, (i64, i64, i64)>("PRAGMA wal_checkpoint(PASSIVE)")
            .fetch_one(pool)
            .await
            .map(|(_busy, pages, copied)| (pages, pages - copied))
    };
    let (pages, mut left) = passive().await?;
    if pages <= restart_pages {
        return Ok(None);
    }
    // What the writer appended while the first pass ran is copied by more
    // passes, without holding it, so the restart has only the last of it.
    for _ in 0..CATCH_UP_PASSES {
        if left <= RESTART_TAIL_PAGES {
            break;
        }
        left = passive().await?.1;
    }
    // The restart syncs the database file while it holds the writers, and
    // that sync would flush all that the passes above wrote. Flushed here,
    // outside any lock, it leaves the restart only its own last pages.
    let mut wal = file.as_os_str().to_owned();
    wal.push("-wal");
    let files = [file.to_path_buf(), wal.into()];
    let _ = tokio::task::spawn_blocking(move || {
        // Only a head start: the restart syncs again whatever this missed.
        for file in files {
            if let Ok(file) = std::fs::File::open(file) {
                let _ = file.sync_data();
            }
        }
    })
    .await;
    sqlx::query("PRAGMA wal_checkpoint(RESTART)")
        .execute(pool)
        .await?;
    Ok(Some(left))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_writer_retries_a_busy_lock_often_until_the_timeout() {
        assert!(wait_briefly(0));
        assert!(wait_briefly(1000));
        let last = i32::try_from(BUSY_TIMEOUT.as_micros() / BUSY_RETRY.as_micros()).unwrap();
        assert!(wait_briefly(last - 1));
        assert!(!wait_briefly(last));
        assert!(!wait_briefly(i32::MAX));
    }

    /// A new database `w.db` with `rows` delivery ids of `width` characters.
    async fn filled(rows: usize, width: usize) -> (tempfile::TempDir, PathBuf, SqlitePools) {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("w.db");
        let pools = open(SqliteConnectOptions::new().filename(&file))
            .await
            .unwrap();
        for i in 0..rows {
            sqlx::query("INSERT INTO webhook_deliveries VALUES ('s', 'a', $1, 'now')")
                .bind(format!("{i:0>width$}"))
                .execute(&pools.write)
                .await
                .unwrap();
        }
        (dir, file, pools)
    }

    #[tokio::test]
    async fn a_long_wal_is_caught_up_then_restarted() {
        let (_dir, file, pools) = filled(300, 3000).await;
        let restart = |pages| checkpoint_once(&pools.read, pages, &file);
        assert_eq!(restart(i64::MAX).await.unwrap(), None);
        let left = restart(10).await.unwrap();
        assert!(
            left.is_some_and(|left| left <= RESTART_TAIL_PAGES),
            "{left:?}"
        );
        // Restarted: the next write starts the WAL over from its beginning.
        sqlx::query("INSERT INTO webhook_deliveries VALUES ('s', 'a', 'after', 'now')")
            .execute(&pools.write)
            .await
            .unwrap();
        let (_, pages, _): (i64, i64, i64) = sqlx::query_as("PRAGMA wal_checkpoint(PASSIVE)")
            .fetch_one(&pools.read)
            .await
            .unwrap();
        assert!(pages < 10, "the WAL holds {pages} pages after its restart");
    }

    #[tokio::test]
    async fn the_background_task_checkpoints_the_wal() {
        let (_dir, file, pools) = filled(200, 500).await;
        let automatic: i64 = sqlx::query_scalar("PRAGMA wal_autocheckpoint")
            .fetch_one(&pools.write)
            .await
            .unwrap();
        assert_eq!(automatic, 0);
        let pages: i64 = sqlx::query_scalar("PRAGMA page_count")
            .fetch_one(&pools.read)
            .await
            .unwrap();
        let page_size: i64 = sqlx::query_scalar("PRAGMA page_size")
            .fetch_one(&pools.read)
            .await
            .unwrap();
        let expected = u64::try_from(pages * page_size).unwrap();
        // Only a checkpoint grows the database file; the wait is a safety net.
        let grown = async {
            while std::fs::metadata(&file).unwrap().len() < expected {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(30), grown)
            .await
            .unwrap();
    }
}
