//! Why the store could not do what was asked, with the database's own error
//! kept as the source, and which failures are worth trying again.

use rusqlite::ErrorCode;

/// Why the store could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store database error: {0}")]
    Database(#[source] sqlx::Error),
    /// A statement the embedded bus writer ran for the store.
    #[error("store database error: {0}")]
    Writer(#[source] rusqlite::Error),
    /// The embedded bus writer could not commit its batch, or has stopped.
    #[error("store database error: {0}")]
    WriterBatch(String),
    #[error("cannot migrate the store database: {0}")]
    Migrate(#[source] sqlx::migrate::MigrateError),
    #[error("unreadable booking in the store: {0}")]
    Row(#[from] RowError),
    #[error("cannot encode extracted values: {0}")]
    Encode(#[source] serde_json::Error),
    /// The row kept being given back and claimed again between a claim's statements.
    #[error("booking {0} kept changing while claiming it")]
    Contended(String),
    #[error("unsupported store URL scheme `{0}`: expected sqlite://… or postgres://…")]
    UnsupportedUrl(String),
    #[error("booking {0} not found")]
    NotFound(String),
    #[error("booking {key} is {state}, not {expected}")]
    WrongState {
        key: String,
        state: String,
        expected: String,
    },
}

/// Why a stored booking row cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum RowError {
    #[error("unknown booking status `{0}`")]
    Status(String),
    #[error("booking sequence {0} out of range")]
    Sequence(i64),
    #[error("unreadable extracted values: {0}")]
    Extracted(#[source] serde_json::Error),
    #[error("booking {0} is booked without a result")]
    BookedWithoutResult(String),
    #[error("unknown shipment status `{0}`")]
    ShipmentStatus(String),
    #[error("unknown history `{0}`")]
    History(String),
    #[error("unknown notification state `{0}`")]
    NotificationState(String),
    #[error("unknown COD state `{0}`")]
    CodState(String),
}

impl StoreError {
    /// Whether the same call may succeed if tried again: the database was
    /// busy, unreachable or made the transaction give way. Constraint
    /// violations, unreadable rows and refused transitions are not: trying
    /// again would fail the same way.
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Database(error) => transient_sqlx(error),
            StoreError::Writer(error) => error.sqlite_error_code().is_some_and(transient_sqlite),
            // A batch fails as a whole (I/O, a busy lock), never for this
            // change's own statements, which report as `Writer`.
            StoreError::WriterBatch(_) | StoreError::Contended(_) => true,
            StoreError::Migrate(_)
            | StoreError::Row(_)
            | StoreError::Encode(_)
            | StoreError::UnsupportedUrl(_)
            | StoreError::NotFound(_)
            | StoreError::WrongState { .. } => false,
        }
    }
}

fn transient_sqlx(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) => true,
        sqlx::Error::Database(error) => {
            if let Some(error) = error.try_downcast_ref::<sqlx::sqlite::SqliteError>() {
                sqlite_code(error).is_some_and(transient_sqlite)
            } else if let Some(error) = error.try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
            {
                transient_sqlstate(error.code())
            } else {
                false
            }
        }
        _ => false,
    }
}

/// The primary result code of a SQLite error as `sqlx` reports it (the
/// extended code, as text).
fn sqlite_code(error: &sqlx::sqlite::SqliteError) -> Option<ErrorCode> {
    use sqlx::error::DatabaseError;
    let extended = error.code()?.parse().ok()?;
    Some(rusqlite::ffi::Error::new(extended).code)
}

fn transient_sqlite(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked | ErrorCode::SystemIoFailure
    )
}

/// PostgreSQL's SQLSTATEs for a connection lost or refused (class 08, a
/// server shutting down or starting, too many connections) and for a
/// transaction that lost a serialization or deadlock race.
fn transient_sqlstate(code: &str) -> bool {
    code.starts_with("08")
        || matches!(
            code,
            "40001" | "40P01" | "57P01" | "57P02" | "57P03" | "53300"
        )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_support::{create_database, drop_database};
    use sqlx::postgres::{PgConnection, PgPoolOptions};
    use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};
    use sqlx::{Connection, PgPool};
    use std::time::Duration;

    fn database(error: sqlx::Error) -> StoreError {
        StoreError::Database(error)
    }

    /// A SQLite file with table `t (id INTEGER PRIMARY KEY)`, and a pool on
    /// it that does not wait for a busy lock.
    async fn sqlite_file() -> (tempfile::TempDir, std::path::PathBuf, SqlitePool) {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("t.db");
        let options = SqliteConnectOptions::new()
            .filename(&file)
            .create_if_missing(true)
            .busy_timeout(Duration::ZERO);
        let pool = SqlitePool::connect_with(options).await.unwrap();
        sqlx::query("CREATE TABLE t (id INTEGER PRIMARY KEY)")
            .execute(&pool)
            .await
            .unwrap();
        (dir, file, pool)
    }

    #[tokio::test]
    async fn a_busy_sqlite_database_is_transient() {
        let (_dir, file, pool) = sqlite_file().await;
        let other = rusqlite::Connection::open(&file).unwrap();
        other.execute_batch("BEGIN IMMEDIATE").unwrap();
        let error = sqlx::query("INSERT INTO t VALUES (1)")
            .execute(&pool)
            .await
            .unwrap_err();
        assert!(database(error).is_transient());
        // The same on the connection the bus writer runs statements on.
        let writer = rusqlite::Connection::open(&file).unwrap();
        let error = writer.execute_batch("BEGIN IMMEDIATE").unwrap_err();
        assert_eq!(error.sqlite_error_code(), Some(ErrorCode::DatabaseBusy));
        assert!(StoreError::Writer(error).is_transient());
    }

    #[tokio::test]
    async fn sqlite_constraint_violations_and_decode_errors_are_not_transient() {
        let (_dir, file, pool) = sqlite_file().await;
        let insert = || sqlx::query("INSERT INTO t VALUES (1)").execute(&pool);
        insert().await.unwrap();
        let error = insert().await.unwrap_err();
        assert!(matches!(&error, sqlx::Error::Database(e) if e.is_unique_violation()));
        assert!(!database(error).is_transient());
        let error = sqlx::query_scalar::<_, i64>("SELECT 'not a number'")
            .fetch_one(&pool)
            .await
            .unwrap_err();
        assert!(matches!(error, sqlx::Error::ColumnDecode { .. }), "{error}");
        assert!(!database(error).is_transient());
        let writer = rusqlite::Connection::open(&file).unwrap();
        let error = writer
            .execute_batch("INSERT INTO t VALUES (1)")
            .unwrap_err();
        assert!(!StoreError::Writer(error).is_transient());
    }

    #[tokio::test]
    async fn waiting_too_long_for_a_connection_is_transient() {
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_millis(50))
            .connect("sqlite::memory:")
            .await
            .unwrap();
        let _held = pool.acquire().await.unwrap();
        let error = pool.acquire().await.unwrap_err();
        assert!(matches!(error, sqlx::Error::PoolTimedOut), "{error}");
        assert!(database(error).is_transient());
    }

    #[test]
    fn refused_transitions_and_unreadable_rows_are_not_transient() {
        assert!(!StoreError::NotFound("k".into()).is_transient());
        assert!(
            !StoreError::WrongState {
                key: "k".into(),
                state: "booked".into(),
                expected: "sent".into(),
            }
            .is_transient()
        );
        assert!(!StoreError::from(RowError::Status("reserved".into())).is_transient());
    }

    /// A fresh database with table `t (id INT PRIMARY KEY, v INT)` holding
    /// rows 1 and 2, its URL, and the server's admin pool to drop it with.
    async fn postgres_database() -> (String, String, PgPool) {
        let (name, url, admin) = create_database().await;
        let mut conn = PgConnection::connect(&url).await.unwrap();
        sqlx::raw_sql(
            "CREATE TABLE t (id INT PRIMARY KEY, v INT); INSERT INTO t VALUES (1, 0), (2, 0)",
        )
        .execute(&mut conn)
        .await
        .unwrap();
        conn.close().await.unwrap();
        (name, url, admin)
    }

    async fn run(conn: &mut PgConnection, sql: &'static str) -> Result<(), sqlx::Error> {
        sqlx::raw_sql(sql).execute(conn).await.map(|_| ())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_races_and_lost_connections_are_transient_violations_are_not() {
        let (name, url, admin) = postgres_database().await;
        let (mut a, mut b) = (
            PgConnection::connect(&url).await.unwrap(),
            PgConnection::connect(&url).await.unwrap(),
        );

        let error = run(&mut a, "INSERT INTO t VALUES (1, 0)")
            .await
            .unwrap_err();
        assert!(matches!(&error, sqlx::Error::Database(e) if e.is_unique_violation()));
        assert!(!database(error).is_transient());

        // a's snapshot predates b's update of the row a then updates.
        run(
            &mut a,
            "BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT v FROM t",
        )
        .await
        .unwrap();
        run(&mut b, "UPDATE t SET v = 1 WHERE id = 1")
            .await
            .unwrap();
        let error = run(&mut a, "UPDATE t SET v = 2 WHERE id = 1")
            .await
            .unwrap_err();
        assert_eq!(sqlstate(&error).as_deref(), Some("40001"));
        assert!(database(error).is_transient());
        run(&mut a, "ROLLBACK").await.unwrap();

        // Each holds one row and waits for the other's.
        run(&mut a, "BEGIN; UPDATE t SET v = 3 WHERE id = 1")
            .await
            .unwrap();
        run(&mut b, "BEGIN; UPDATE t SET v = 3 WHERE id = 2")
            .await
            .unwrap();
        let (first, second) = tokio::join!(
            run(&mut a, "UPDATE t SET v = 4 WHERE id = 2"),
            run(&mut b, "UPDATE t SET v = 4 WHERE id = 1"),
        );
        let error = first
            .err()
            .or(second.err())
            .expect("one of them is the victim");
        assert_eq!(sqlstate(&error).as_deref(), Some("40P01"));
        assert!(database(error).is_transient());
        run(&mut a, "ROLLBACK").await.unwrap();
        run(&mut b, "ROLLBACK").await.unwrap();

        // The server ends a's session, as on a failover or restart.
        let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(&mut a)
            .await
            .unwrap();
        sqlx::query("SELECT pg_terminate_backend($1)")
            .bind(pid)
            .execute(&admin)
            .await
            .unwrap();
        let error = run(&mut a, "SELECT 1").await.unwrap_err();
        assert!(database(error).is_transient());
        drop_database(&name, &admin).await;
    }

    #[tokio::test]
    async fn a_postgres_server_that_refuses_connections_is_transient() {
        let error = PgPoolOptions::new()
            .acquire_timeout(Duration::from_secs(5))
            .connect("postgres://postgres@127.0.0.1:1/postgres")
            .await
            .unwrap_err();
        assert!(database(error).is_transient());
    }

    fn sqlstate(error: &sqlx::Error) -> Option<String> {
        match error {
            sqlx::Error::Database(e) => e.code().map(|code| code.into_owned()),
            _ => None,
        }
    }
}
