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
