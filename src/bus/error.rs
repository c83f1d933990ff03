//! Why the bus could not do what was asked. The variant says whether trying
//! again may help ([`BusError::is_transient`]); the [`Cause`] keeps the
//! backend's own error as the source.

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use std::sync::Arc;

/// A bus operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The bus cannot serve right now and may soon: a busy, locked or full
    /// database, I/O, unreachable brokers, a timeout. Ingest answers 503.
    #[error("bus is unavailable: {0}")]
    Unavailable(#[source] Cause),
    /// Refused or failed in a way that trying again repeats: a constraint
    /// violation, a corrupt row, a message the backend cannot take.
    #[error("bus storage error: {0}")]
    Storage(#[source] Cause),
    #[error("bus is shutting down")]
    Closed,
}

/// What a [`BusError`] comes from.
#[derive(Debug, thiserror::Error)]
pub enum Cause {
    /// The embedded bus's database, through `sqlx`.
    #[error(transparent)]
    Database(sqlx::Error),
    /// The embedded bus's writer connection. Shared: one failed commit is
    /// the answer of every operation in it.
    #[error(transparent)]
    Writer(Arc<rusqlite::Error>),
    #[error("{what}: {source}")]
    Kafka {
        what: String,
        #[source]
        source: KafkaError,
    },
    #[error("cannot migrate the database: {0}")]
    Migrate(sqlx::migrate::MigrateError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// A reason with no error value behind it: a corrupt row, a message too
    /// large, a partition that does not exist, a broker's fatal error.
    #[error("{0}")]
    Text(String),
}

impl BusError {
    /// Whether the same operation may succeed if tried again later: what
    /// retry decisions go by.
    pub fn is_transient(&self) -> bool {
        matches!(self, BusError::Unavailable(_))
    }

    /// A failure that trying again repeats, explained by `text`.
    pub(crate) fn invalid(text: impl Into<String>) -> BusError {
        BusError::Storage(Cause::Text(text.into()))
    }

    /// A broker error: unavailable unless the message or topic is at fault.
    pub(crate) fn kafka(what: impl Into<String>, source: KafkaError) -> BusError {
        let permanent = source.rdkafka_error_code().is_some_and(is_permanent);
        let cause = Cause::Kafka {
            what: what.into(),
            source,
        };
        if permanent {
            BusError::Storage(cause)
        } else {
            BusError::Unavailable(cause)
        }
    }

    /// An I/O failure, such as a data directory that cannot be created.
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> BusError {
        BusError::Unavailable(Cause::Io {
            what: what.into(),
            source,
        })
    }

    /// A failed commit of the writer, for one of the operations in it.
    pub(crate) fn writer(error: &Arc<rusqlite::Error>) -> BusError {
        use rusqlite::ErrorCode;
        let cause = Cause::Writer(error.clone());
        match error.sqlite_error_code() {
            Some(
                ErrorCode::DatabaseBusy
                | ErrorCode::DatabaseLocked
                | ErrorCode::SystemIoFailure
                | ErrorCode::DiskFull
                | ErrorCode::CannotOpen,
            ) => BusError::Unavailable(cause),
            _ => BusError::Storage(cause),
        }
    }
}

/// Whether a broker error will recur however often it is retried (the
/// message or topic is at fault, not the cluster's availability).
fn is_permanent(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::MessageSizeTooLarge
            | RDKafkaErrorCode::InvalidMessageSize
            | RDKafkaErrorCode::MessageBatchTooLarge
            | RDKafkaErrorCode::InvalidMessage
            | RDKafkaErrorCode::InvalidRecord
            | RDKafkaErrorCode::InvalidTopic
            | RDKafkaErrorCode::TopicAuthorizationFailed
    )
}

impl From<rusqlite::Error> for BusError {
    fn from(error: rusqlite::Error) -> Self {
        BusError::writer(&Arc::new(error))
    }
}

/// A full disk or an unreachable file makes the bus unavailable; a closed
/// pool means it is shutting down; anything else is a storage error.
impl From<sqlx::Error> for BusError {
    fn from(error: sqlx::Error) -> Self {
        const SQLITE_BUSY: i64 = 5;
        const SQLITE_LOCKED: i64 = 6;
        const SQLITE_IOERR: i64 = 10;
        const SQLITE_FULL: i64 = 13;
        const SQLITE_CANTOPEN: i64 = 14;
        let transient = match &error {
            sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) => true,
            sqlx::Error::PoolClosed | sqlx::Error::WorkerCrashed => return BusError::Closed,
            // Extended result codes keep the primary code in the low byte.
            sqlx::Error::Database(db) => db
                .code()
                .and_then(|code| code.parse::<i64>().ok())
                .map(|code| code & 0xff)
                .is_some_and(|primary| {
                    matches!(
                        primary,
                        SQLITE_BUSY | SQLITE_LOCKED | SQLITE_IOERR | SQLITE_FULL | SQLITE_CANTOPEN
                    )
                }),
            _ => false,
        };
        if transient {
            BusError::Unavailable(Cause::Database(error))
        } else {
            BusError::Storage(Cause::Database(error))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    const TABLE: &str = "CREATE TABLE t (id INTEGER PRIMARY KEY)";

    /// A database file of its own, with a table `t`.
    fn file() -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("t.db");
        rusqlite::Connection::open(&file)
            .unwrap()
            .execute_batch(TABLE)
            .unwrap();
        (dir, file)
    }

    /// A connection holding the write lock of `file` until dropped.
    fn holding_the_lock(file: &std::path::Path) -> rusqlite::Connection {
        let holder = rusqlite::Connection::open(file).unwrap();
        holder.execute_batch("BEGIN IMMEDIATE").unwrap();
        holder
    }

    #[test]
    fn a_constraint_violation_is_not_transient_and_a_busy_lock_is() {
        let (_dir, file) = file();
        let db = rusqlite::Connection::open(&file).unwrap();
        db.execute_batch("INSERT INTO t VALUES (1)").unwrap();
        let duplicate = BusError::from(db.execute_batch("INSERT INTO t VALUES (1)").unwrap_err());
        assert!(!duplicate.is_transient(), "{duplicate:?}");
        assert!(duplicate.source().is_some());

        let _holder = holding_the_lock(&file);
        db.busy_timeout(std::time::Duration::ZERO).unwrap();
        let busy = BusError::from(db.execute_batch("BEGIN IMMEDIATE").unwrap_err());
        assert!(busy.is_transient(), "{busy:?}");
    }

    #[tokio::test]
    async fn the_same_holds_through_sqlx() {
        use sqlx::Connection;
        let (_dir, file) = file();
        let options = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(&file)
            .busy_timeout(std::time::Duration::ZERO);
        let mut db = sqlx::SqliteConnection::connect_with(&options)
            .await
            .unwrap();
        sqlx::query("INSERT INTO t VALUES (1)")
            .execute(&mut db)
            .await
            .unwrap();
        let duplicate = sqlx::query("INSERT INTO t VALUES (1)")
            .execute(&mut db)
            .await
            .unwrap_err();
        let duplicate = BusError::from(duplicate);
        assert!(!duplicate.is_transient(), "{duplicate:?}");
        assert!(matches!(
            duplicate,
            BusError::Storage(Cause::Database(sqlx::Error::Database(_)))
        ));

        let _holder = holding_the_lock(&file);
        let busy = sqlx::query("INSERT INTO t VALUES (2)")
            .execute(&mut db)
            .await
            .unwrap_err();
        let busy = BusError::from(busy);
        assert!(busy.is_transient(), "{busy:?}");
        db.close().await.unwrap();
    }

    #[test]
    fn broker_errors_are_transient_unless_the_message_is_at_fault() {
        use rdkafka::error::KafkaError::MessageProduction;
        let timed_out = BusError::kafka(
            "publish",
            MessageProduction(RDKafkaErrorCode::MessageTimedOut),
        );
        assert!(timed_out.is_transient());
        let transport = BusError::kafka(
            "publish",
            MessageProduction(RDKafkaErrorCode::BrokerTransportFailure),
        );
        assert!(transport.is_transient());
        let too_large = BusError::kafka(
            "publish",
            MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge),
        );
        assert!(!too_large.is_transient());
        assert!(!BusError::Closed.is_transient());
        assert!(!BusError::invalid("unreadable batch").is_transient());
    }
}
