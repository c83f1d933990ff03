//! The SQLite database file shared by the embedded bus and the store: one
//! writer connection and a small pool of readers, both on the same file.
//!
//! ```yaml
//! data_dir: ./data        # the database is <data_dir>/waybill.db
//! ```

use sqlx::migrate::MigrateError;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use std::time::Duration;

/// How long a statement waits for SQLite's write lock (another process, such
/// as `waybill dlq replay`, may hold it) before failing with SQLITE_BUSY.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a caller waits for the one writer connection.
const WRITE_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

/// Readers never block the writer under WAL, so a few are enough.
const READERS: u32 = 4;

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
    /// Exactly one connection: every write in the process goes through it, so
    /// writers queue in the pool instead of fighting over SQLite's lock.
    pub write: SqlitePool,
    pub read: SqlitePool,
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
        .busy_timeout(BUSY_TIMEOUT);
    let write = SqlitePoolOptions::new()
        .max_connections(1)
        .acquire_timeout(WRITE_ACQUIRE_TIMEOUT)
        .connect_with(options.clone())
        .await?;
    sqlx::migrate!("migrations/sqlite").run(&write).await?;
    let read = SqlitePoolOptions::new()
        .max_connections(READERS)
        .connect_with(options)
        .await?;
    Ok(SqlitePools { write, read })
}
