//! SQL store for SQLite and PostgreSQL through `sqlx`: the same queries
//! (`$N` placeholders work in both drivers) over either pool, with
//! migrations in `migrations/sqlite` and `migrations/postgres`.
//!
//! ```yaml
//! store: { url: "postgres://waybill@db/waybill" }   # default: SQLite at <data_dir>/waybill.db
//! ```
//!
//! Timestamps are stored as fixed-width RFC 3339 UTC text, so both backends
//! compare them as text in the same SQL.

use super::sqlite::{self, Jobs, SqlitePools};
use super::{AuditEntry, Booking, BookingStatus, Reservation, Store, StoreError};
use crate::clock::{earlier, later, now_timestamp, timestamp};
use crate::model::{BookingKey, BookingResult};
use async_trait::async_trait;
use rusqlite::ToSql;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool};
use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::Duration;
use time::OffsetDateTime;

/// How often `claim_booking` retries when the row changes between its
/// statements (a concurrent release or takeover); each retry makes progress.
const CLAIM_ATTEMPTS: usize = 8;

const PG_MAX_CONNECTIONS: u32 = 16;

/// The store over SQLite or PostgreSQL.
#[derive(Clone)]
pub struct SqlStore {
    backend: Backend,
}

#[derive(Clone)]
enum Backend {
    Sqlite {
        write: SqlitePool,
        read: SqlitePool,
        /// The embedded bus's writer, when there is one.
        jobs: Option<Jobs>,
    },
    Postgres(PgPool),
}

/// Runs `$body` with `$pool` bound to the pool for writes: the single writer
/// on SQLite. The body is compiled once per backend.
macro_rules! with_write_pool {
    ($store:expr, $pool:ident => $body:expr) => {
        match &$store.backend {
            Backend::Sqlite { write: $pool, .. } => $body,
            Backend::Postgres($pool) => $body,
        }
    };
}

/// Runs `$body` with `$pool` bound to the pool for reads.
macro_rules! with_read_pool {
    ($store:expr, $pool:ident => $body:expr) => {
        match &$store.backend {
            Backend::Sqlite { read: $pool, .. } => $body,
            Backend::Postgres($pool) => $body,
        }
    };
}

/// Binds a booking key to `$1`–`$4`, where every statement on one booking
/// names it.
macro_rules! bind_key {
    ($query:expr, $key:expr, $sequence:expr) => {
        $query
            .bind(&$key.source)
            .bind(&$key.account)
            .bind(&$key.order_id)
            .bind($sequence)
    };
}

/// Appends an audit row inside transaction `$tx`.
macro_rules! audit {
    ($tx:expr, $key:expr, $action:expr, $message_id:expr, $detail:expr, $at:expr) => {
        sqlx::query(INSERT_AUDIT)
            .bind($key)
            .bind($action)
            .bind($message_id)
            .bind($detail)
            .bind($at)
            .execute(&mut *$tx)
            .await
            .map_err(db)?
    };
}

/// The status of a booking key inside transaction `$tx`, to say why a
/// transition was refused.
macro_rules! current_status {
    ($tx:expr, $key:expr, $sequence:expr) => {
        bind_key!(
            sqlx::query_scalar::<_, String>(SELECT_STATUS),
            $key,
            $sequence
        )
        .fetch_optional(&mut *$tx)
        .await
        .map_err(db)?
    };
}

macro_rules! booking_columns {
    () => {
        "source, account, order_id, sequence, status, owner, lease_until, tracking_number, courier, \
         courier_account, extracted, reason, message_id, reference, updated_at"
    };
}

const SELECT_BOOKING: &str = concat!(
    "SELECT ",
    booking_columns!(),
    " FROM bookings WHERE source = $1 AND account = $2 AND order_id = $3 AND sequence = $4"
);

const SELECT_STATUS: &str = "SELECT status FROM bookings WHERE source = $1 AND account = $2 AND order_id = $3 AND sequence = $4";

/// Claims a key nobody has claimed before.
const CLAIM_NEW: &str = "INSERT INTO bookings (source, account, order_id, sequence, status, owner, lease_until, \
     message_id, reference, created_at, updated_at) \
     VALUES ($1, $2, $3, $4, 'sent', $5, $6, $7, $8, $9, $9) \
     ON CONFLICT (source, account, order_id, sequence) DO NOTHING";

/// Records the booking of a key that is `sent`.
const MARK_BOOKED: &str = "UPDATE bookings SET status = 'booked', tracking_number = $5, courier = $6, courier_account = $7, \
     extracted = $8, owner = NULL, lease_until = NULL, reason = NULL, updated_at = $9 \
     WHERE source = $1 AND account = $2 AND order_id = $3 AND sequence = $4 \
     AND status = 'sent'";

const INSERT_AUDIT: &str = "INSERT INTO booking_audit (booking_key, action, message_id, detail, at) VALUES ($1, $2, $3, $4, $5)";

type BookingRow = (
    String,
    String,
    String,
    i64,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    String,
);

/// A booking as read, with the lease that `claim_booking` compares and swaps.
struct StoredBooking {
    booking: Booking,
    lease_until: Option<String>,
}

fn db(error: sqlx::Error) -> StoreError {
    StoreError::Database(error.to_string())
}

/// A value bound to a statement that the bus writer runs through `rusqlite`.
type Param<'a> = dyn ToSql + Sync + 'a;

/// Runs `change` and, when it changed exactly one row, the audit row
/// `audit` (bound to [`INSERT_AUDIT`]), as one transaction in the embedded
/// bus writer's next group commit. `false` when it changed nothing, or when
/// the store has no writer (a SQLite store opened on its own, which only
/// tests do): the caller takes its general path.
async fn change_in_one_go(
    jobs: Option<&Jobs>,
    change: &'static str,
    values: &[&Param<'_>],
    audit: &[&Param<'_>],
) -> Result<bool, StoreError> {
    let Some(jobs) = jobs else {
        return Ok(false);
    };
    let (values, audit) = (owned(values)?, owned(audit)?);
    let changed = jobs
        .run(move |conn| change_and_audit(conn, change, &values, &audit))
        .await
        .map_err(StoreError::Database)?;
    Ok(changed.is_some())
}

fn change_and_audit<P: ToSql>(
    conn: &rusqlite::Connection,
    change: &str,
    values: &[P],
    audit: &[P],
) -> rusqlite::Result<Option<()>> {
    if execute_numbered(conn, change, values)? != 1 {
        return Ok(None);
    }
    execute_numbered(conn, INSERT_AUDIT, audit)?;
    Ok(Some(()))
}

/// `values` as owned SQLite values, to be bound on another thread.
fn owned(values: &[&Param<'_>]) -> Result<Vec<rusqlite::types::Value>, StoreError> {
    use rusqlite::types::{ToSqlOutput, Value, ValueRef};
    let unsupported = || StoreError::Database("a value SQLite cannot hold".into());
    values
        .iter()
        .map(|value| match value.to_sql() {
            Ok(ToSqlOutput::Borrowed(borrowed)) => Ok(match borrowed {
                ValueRef::Null => Value::Null,
                ValueRef::Integer(i) => Value::Integer(i),
                ValueRef::Real(f) => Value::Real(f),
                ValueRef::Text(text) => Value::Text(
                    std::str::from_utf8(text)
                        .map_err(|_| unsupported())?
                        .to_string(),
                ),
                ValueRef::Blob(blob) => Value::Blob(blob.to_vec()),
            }),
            Ok(ToSqlOutput::Owned(owned)) => Ok(owned),
            Ok(_) => Err(unsupported()),
            Err(e) => Err(StoreError::Database(e.to_string())),
        })
        .collect()
}

/// Runs `sql` with `values` bound to `$1`, `$2`, … by name. The statements
/// are shared with `sqlx`, which numbers them for PostgreSQL; SQLite would
/// number them in order of first appearance.
fn execute_numbered<P: ToSql>(
    conn: &rusqlite::Connection,
    sql: &str,
    values: &[P],
) -> rusqlite::Result<usize> {
    let mut statement = conn.prepare_cached(sql)?;
    for (number, value) in values.iter().enumerate() {
        let name = format!("${}", number + 1);
        let index = statement
            .parameter_index(&name)?
            .ok_or(rusqlite::Error::InvalidParameterName(name))?;
        statement.raw_bind_parameter(index, value)?;
    }
    statement.raw_execute()
}

fn parse_status(status: &str) -> Result<BookingStatus, StoreError> {
    match status {
        "sent" => Ok(BookingStatus::Sent),
        "booked" => Ok(BookingStatus::Booked),
        "review" => Ok(BookingStatus::Review),
        other => Err(StoreError::Database(format!(
            "unknown booking status `{other}` in the database"
        ))),
    }
}

fn stored_booking(row: BookingRow) -> Result<StoredBooking, StoreError> {
    let (
        source,
        account,
        order_id,
        sequence,
        status,
        owner,
        lease_until,
        tracking_number,
        courier,
        courier_account,
        extracted,
        reason,
        message_id,
        reference,
        updated_at,
    ) = row;
    let sequence = u32::try_from(sequence)
        .map_err(|_| StoreError::Database(format!("booking sequence {sequence} out of range")))?;
    let result = match (tracking_number, courier, courier_account) {
        (Some(tracking_number), Some(courier), Some(account)) => {
            let extracted: BTreeMap<String, serde_json::Value> = match extracted.as_deref() {
                Some(text) => serde_json::from_str(text).map_err(|e| {
                    StoreError::Database(format!("unreadable extracted values: {e}"))
                })?,
                None => BTreeMap::new(),
            };
            Some(BookingResult {
                tracking_number,
                courier,
                account,
                extracted,
            })
        }
        _ => None,
    };
    Ok(StoredBooking {
        booking: Booking {
            key: BookingKey {
                source,
                account,
                order_id,
                sequence,
            },
            status: parse_status(&status)?,
            result,
            reason,
            owner,
            message_id,
            reference,
            updated_at,
        },
        lease_until,
    })
}

/// The error for a transition that found the key absent or in another state.
fn wrong_state(key: &BookingKey, status: Option<String>, expected: &str) -> StoreError {
    match status {
        None => StoreError::NotFound(key.to_string()),
        Some(state) => StoreError::WrongState {
            key: key.to_string(),
            state,
            expected: expected.to_string(),
        },
    }
}

/// Why a URL cannot be a store.
fn unsupported(url: &str) -> StoreError {
    let scheme = url.split(':').next().unwrap_or_default();
    StoreError::Database(format!(
        "unsupported store URL scheme `{scheme}`: expected sqlite://… or postgres://…"
    ))
}

impl SqlStore {
    /// Connects to `sqlite://PATH` (or `sqlite::memory:`, handy in tests) or
    /// `postgres://…` and runs the migrations.
    pub async fn connect(url: &str) -> Result<SqlStore, StoreError> {
        if url.starts_with("sqlite:") {
            let options = SqliteConnectOptions::from_str(url).map_err(db)?;
            let pools = sqlite::open(options)
                .await
                .map_err(|e| StoreError::Database(e.to_string()))?;
            Ok(SqlStore::from_sqlite(&pools))
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            let pool = PgPoolOptions::new()
                .max_connections(PG_MAX_CONNECTIONS)
                .connect(url)
                .await
                .map_err(db)?;
            sqlx::migrate!("migrations/postgres")
                .run(&pool)
                .await
                .map_err(|e| {
                    StoreError::Database(format!("cannot migrate PostgreSQL database: {e}"))
                })?;
            Ok(SqlStore {
                backend: Backend::Postgres(pool),
            })
        } else {
            Err(unsupported(url))
        }
    }

    /// A store on an already opened and migrated SQLite file, sharing its writer.
    pub(crate) fn from_sqlite(pools: &SqlitePools) -> SqlStore {
        SqlStore {
            backend: Backend::Sqlite {
                write: pools.write.clone(),
                read: pools.read.clone(),
                jobs: None,
            },
        }
    }

    /// The writer this store's frequent changes go to, if any.
    #[cfg(test)]
    pub(crate) fn jobs(&self) -> Option<&Jobs> {
        match &self.backend {
            Backend::Sqlite { jobs, .. } => jobs.as_ref(),
            Backend::Postgres(_) => None,
        }
    }

    /// This store, with its frequent changes run by the writer behind `jobs`.
    pub(crate) fn with_jobs(mut self, writer: Jobs) -> SqlStore {
        if let Backend::Sqlite { jobs, .. } = &mut self.backend {
            *jobs = Some(writer);
        }
        self
    }

    /// Closes the connections, waiting for those in use to be returned.
    pub async fn close(&self) {
        match &self.backend {
            Backend::Sqlite { write, read, .. } => {
                read.close().await;
                write.close().await;
            }
            Backend::Postgres(pool) => pool.close().await,
        }
    }
}

#[async_trait]
impl Store for SqlStore {
    async fn delivery_seen(
        &self,
        source: &str,
        account: &str,
        delivery_id: &str,
    ) -> Result<bool, StoreError> {
        with_read_pool!(self, pool => {
            let found: Option<String> = sqlx::query_scalar(
                "SELECT delivery_id FROM webhook_deliveries WHERE source = $1 AND account = $2 AND delivery_id = $3",
            )
            .bind(source)
            .bind(account)
            .bind(delivery_id)
            .fetch_optional(pool)
            .await
            .map_err(db)?;
            Ok(found.is_some())
        })
    }

    async fn remember_delivery(
        &self,
        source: &str,
        account: &str,
        delivery_id: &str,
    ) -> Result<bool, StoreError> {
        let now = now_timestamp();
        with_write_pool!(self, pool => {
            let inserted = sqlx::query(
                "INSERT INTO webhook_deliveries (source, account, delivery_id, received_at) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (source, account, delivery_id) DO NOTHING",
            )
            .bind(source)
            .bind(account)
            .bind(delivery_id)
            .bind(now)
            .execute(pool)
            .await
            .map_err(db)?
            .rows_affected();
            Ok(inserted == 1)
        })
    }

    async fn claim_booking(
        &self,
        key: &BookingKey,
        owner: &str,
        lease: Duration,
        message_id: &str,
        reference: &str,
    ) -> Result<Reservation, StoreError> {
        let now_at = OffsetDateTime::now_utc();
        let now = timestamp(now_at);
        let lease_until = timestamp(later(now_at, lease));
        let key_text = key.to_string();
        let sequence = i64::from(key.sequence);
        let detail = format!("owner {owner}");
        if let Backend::Sqlite { jobs, .. } = &self.backend {
            // The usual case, a key never claimed, in one go; every other
            // case takes the general path below.
            let values: [&Param<'_>; 9] = [
                &key.source,
                &key.account,
                &key.order_id,
                &sequence,
                &owner,
                &lease_until,
                &message_id,
                &reference,
                &now,
            ];
            let audit: [&Param<'_>; 5] = [&key_text, &"sent", &message_id, &detail, &now];
            if change_in_one_go(jobs.as_ref(), CLAIM_NEW, &values, &audit).await? {
                return Ok(Reservation::Acquired);
            }
        }
        with_write_pool!(self, pool => {
            for _ in 0..CLAIM_ATTEMPTS {
                let mut tx = pool.begin().await.map_err(db)?;
                // The insert comes first so that on SQLite the transaction
                // holds the write lock from its first statement on.
                let inserted = bind_key!(sqlx::query(CLAIM_NEW), key, sequence)
                .bind(owner)
                .bind(&lease_until)
                .bind(message_id)
                .bind(reference)
                .bind(&now)
                .execute(&mut *tx)
                .await
                .map_err(db)?
                .rows_affected();
                if inserted == 1 {
                    audit!(tx, &key_text, "sent", message_id, Some(&detail), &now);
                    tx.commit().await.map_err(db)?;
                    return Ok(Reservation::Acquired);
                }
                let row: Option<BookingRow> = bind_key!(sqlx::query_as(SELECT_BOOKING), key, sequence)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(db)?;
                // Released between the two statements: try the insert again.
                let Some(row) = row else { continue };
                let stored = stored_booking(row)?;
                let booking = stored.booking;
                let previous_owner = booking.owner.unwrap_or_default();
                let previous_lease = stored.lease_until.unwrap_or_default();
                let held_by_other = previous_owner != owner && previous_lease.as_str() >= now.as_str();
                match booking.status {
                    BookingStatus::Booked => {
                        return match booking.result {
                            Some(result) => Ok(Reservation::Booked(result)),
                            None => Err(StoreError::Database(format!("booking {key_text} is booked without a result"))),
                        };
                    }
                    BookingStatus::Review => return Ok(Reservation::Review(booking.reason.unwrap_or_default())),
                    // A live owner's request may still be answered: only a
                    // lapsed lease (or our own earlier life) means nobody will.
                    BookingStatus::Sent if held_by_other => return Ok(Reservation::Busy { owner: previous_owner }),
                    BookingStatus::Sent => return Ok(Reservation::Sent),
                }
            }
            Err(StoreError::Database(format!("booking {key_text} kept changing while claiming it")))
        })
    }

    async fn mark_booked(
        &self,
        key: &BookingKey,
        result: &BookingResult,
        message_id: &str,
    ) -> Result<(), StoreError> {
        let now = now_timestamp();
        let key_text = key.to_string();
        let sequence = i64::from(key.sequence);
        let extracted = serde_json::to_string(&result.extracted)
            .map_err(|e| StoreError::Database(format!("cannot encode extracted values: {e}")))?;
        let detail = format!(
            "tracking number {} at {} ({})",
            result.tracking_number, result.courier, result.account
        );
        if let Backend::Sqlite { jobs, .. } = &self.backend {
            // The usual case, a `sent` key, in one go; anything else (a
            // repeated record, a refused transition) takes the general path.
            let values: [&Param<'_>; 9] = [
                &key.source,
                &key.account,
                &key.order_id,
                &sequence,
                &result.tracking_number,
                &result.courier,
                &result.account,
                &extracted,
                &now,
            ];
            let audit: [&Param<'_>; 5] = [&key_text, &"booked", &message_id, &detail, &now];
            if change_in_one_go(jobs.as_ref(), MARK_BOOKED, &values, &audit).await? {
                return Ok(());
            }
        }
        with_write_pool!(self, pool => {
            let mut tx = pool.begin().await.map_err(db)?;
            let updated = bind_key!(sqlx::query(MARK_BOOKED), key, sequence)
            .bind(&result.tracking_number)
            .bind(&result.courier)
            .bind(&result.account)
            .bind(&extracted)
            .bind(&now)
            .execute(&mut *tx)
            .await
            .map_err(db)?
            .rows_affected();
            if updated == 0 {
                let row: Option<BookingRow> = bind_key!(sqlx::query_as(SELECT_BOOKING), key, sequence)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(db)?;
                let stored = row.map(stored_booking).transpose()?;
                // Recording the same booking twice (a redelivered message) is fine.
                if let Some(stored) = &stored
                    && stored.booking.status == BookingStatus::Booked
                    && stored.booking.result.as_ref().map(|r| &r.tracking_number) == Some(&result.tracking_number)
                {
                    return Ok(());
                }
                let status = stored.map(|s| s.booking.status.as_str().to_string());
                return Err(wrong_state(key, status, "sent"));
            }
            audit!(tx, &key_text, "booked", message_id, Some(&detail), &now);
            tx.commit().await.map_err(db)
        })
    }

    async fn mark_review(
        &self,
        key: &BookingKey,
        reason: &str,
        message_id: &str,
    ) -> Result<(), StoreError> {
        let now = now_timestamp();
        let key_text = key.to_string();
        let sequence = i64::from(key.sequence);
        with_write_pool!(self, pool => {
            let mut tx = pool.begin().await.map_err(db)?;
            let updated = bind_key!(sqlx::query(
                "UPDATE bookings SET status = 'review', reason = $5, owner = NULL, lease_until = NULL, updated_at = $6 \
                 WHERE source = $1 AND account = $2 AND order_id = $3 AND sequence = $4 \
                 AND status = 'sent'",
            ), key, sequence)
            .bind(reason)
            .bind(&now)
            .execute(&mut *tx)
            .await
            .map_err(db)?
            .rows_affected();
            if updated == 0 {
                let status: Option<String> = current_status!(tx, key, sequence);
                // Already waiting for a person: a redelivered message changes nothing.
                if status.as_deref() == Some("review") {
                    return Ok(());
                }
                return Err(wrong_state(key, status, "sent"));
            }
            audit!(tx, &key_text, "review", message_id, Some(reason.to_string()), &now);
            tx.commit().await.map_err(db)
        })
    }

    async fn release_reservation(&self, key: &BookingKey, owner: &str) -> Result<(), StoreError> {
        let now = now_timestamp();
        let key_text = key.to_string();
        let sequence = i64::from(key.sequence);
        with_write_pool!(self, pool => {
            let mut tx = pool.begin().await.map_err(db)?;
            let deleted = bind_key!(sqlx::query(
                "DELETE FROM bookings WHERE source = $1 AND account = $2 AND order_id = $3 AND sequence = $4 \
                 AND status = 'sent' AND owner = $5",
            ), key, sequence)
            .bind(owner)
            .execute(&mut *tx)
            .await
            .map_err(db)?
            .rows_affected();
            if deleted == 0 {
                let status: Option<String> = current_status!(tx, key, sequence);
                let status = status.map(|s| if s == "sent" { "sent by another owner".to_string() } else { s });
                return Err(wrong_state(key, status, &format!("sent by {owner}")));
            }
            audit!(tx, &key_text, "released", None::<String>, Some(format!("owner {owner}")), &now);
            tx.commit().await.map_err(db)
        })
    }

    async fn resolve_booked(
        &self,
        key: &BookingKey,
        tracking_number: &str,
        courier: &str,
        account: &str,
    ) -> Result<(), StoreError> {
        let now = now_timestamp();
        let key_text = key.to_string();
        let sequence = i64::from(key.sequence);
        with_write_pool!(self, pool => {
            let mut tx = pool.begin().await.map_err(db)?;
            let updated = bind_key!(sqlx::query(
                "UPDATE bookings SET status = 'booked', tracking_number = $5, courier = $6, courier_account = $7, \
                 extracted = '{}', owner = NULL, lease_until = NULL, updated_at = $8 \
                 WHERE source = $1 AND account = $2 AND order_id = $3 AND sequence = $4 AND status = 'review'",
            ), key, sequence)
            .bind(tracking_number)
            .bind(courier)
            .bind(account)
            .bind(&now)
            .execute(&mut *tx)
            .await
            .map_err(db)?
            .rows_affected();
            if updated == 0 {
                let status: Option<String> = current_status!(tx, key, sequence);
                return Err(wrong_state(key, status, "review"));
            }
            let detail = format!("resolved by an operator: booked as {tracking_number} at {courier} ({account})");
            audit!(tx, &key_text, "resolved_booked", None::<String>, Some(detail), &now);
            tx.commit().await.map_err(db)
        })
    }

    async fn resolve_release(&self, key: &BookingKey) -> Result<(), StoreError> {
        let now = now_timestamp();
        let key_text = key.to_string();
        let sequence = i64::from(key.sequence);
        with_write_pool!(self, pool => {
            let mut tx = pool.begin().await.map_err(db)?;
            // Deleting the row lets the next reservation insert it afresh;
            // its history stays in the audit trail.
            let deleted = bind_key!(sqlx::query(
                "DELETE FROM bookings WHERE source = $1 AND account = $2 AND order_id = $3 AND sequence = $4 \
                 AND status = 'review'",
            ), key, sequence)
            .execute(&mut *tx)
            .await
            .map_err(db)?
            .rows_affected();
            if deleted == 0 {
                let status: Option<String> = current_status!(tx, key, sequence);
                return Err(wrong_state(key, status, "review"));
            }
            let detail = "resolved by an operator: not booked, released for booking again";
            audit!(tx, &key_text, "resolved_release", None::<String>, Some(detail), &now);
            tx.commit().await.map_err(db)
        })
    }

    async fn booking(&self, key: &BookingKey) -> Result<Option<Booking>, StoreError> {
        let sequence = i64::from(key.sequence);
        let row: Option<BookingRow> = with_read_pool!(self, pool => {
            bind_key!(sqlx::query_as(SELECT_BOOKING), key, sequence)
                .fetch_optional(pool)
                .await
                .map_err(db)?
        });
        row.map(|row| stored_booking(row).map(|s| s.booking))
            .transpose()
    }

    async fn bookings(
        &self,
        status: Option<BookingStatus>,
        limit: usize,
    ) -> Result<Vec<Booking>, StoreError> {
        let status = status.map(BookingStatus::as_str);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows: Vec<BookingRow> = with_read_pool!(self, pool => {
            sqlx::query_as(concat!(
                "SELECT ",
                booking_columns!(),
                " FROM bookings WHERE ($1 IS NULL OR status = $1) ORDER BY updated_at DESC LIMIT $2"
            ))
            .bind(status)
            .bind(limit)
            .fetch_all(pool)
            .await
            .map_err(db)?
        });
        rows.into_iter()
            .map(|row| stored_booking(row).map(|s| s.booking))
            .collect()
    }

    async fn audit(&self, key: &BookingKey) -> Result<Vec<AuditEntry>, StoreError> {
        let key_text = key.to_string();
        let rows: Vec<(String, String, Option<String>, Option<String>, String)> = with_read_pool!(self, pool => {
            sqlx::query_as(
                "SELECT booking_key, action, message_id, detail, at FROM booking_audit WHERE booking_key = $1 ORDER BY id",
            )
            .bind(&key_text)
            .fetch_all(pool)
            .await
            .map_err(db)?
        });
        Ok(rows
            .into_iter()
            .map(|(key, action, message_id, detail, at)| AuditEntry {
                key,
                action,
                message_id,
                detail,
                at,
            })
            .collect())
    }

    async fn expire_deliveries(&self, ttl: Duration) -> Result<u64, StoreError> {
        let cutoff = timestamp(earlier(OffsetDateTime::now_utc(), ttl));
        with_write_pool!(self, pool => {
            let deleted = sqlx::query("DELETE FROM webhook_deliveries WHERE received_at < $1")
                .bind(&cutoff)
                .execute(pool)
                .await
                .map_err(db)?
                .rows_affected();
            Ok(deleted)
        })
    }

    async fn check(&self) -> Result<(), StoreError> {
        with_write_pool!(self, pool => {
            sqlx::query("SELECT 1").execute(pool).await.map_err(db)?;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;
    use std::future::Future;
    use std::panic::AssertUnwindSafe;

    /// The server the PostgreSQL tests create their databases on.
    fn postgres_server() -> String {
        std::env::var("WAYBILL_TEST_POSTGRES")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
    }

    async fn on_sqlite<F, Fut>(test: F)
    where
        F: FnOnce(SqlStore) -> Fut,
        Fut: Future<Output = ()>,
    {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("store.db").display());
        let store = SqlStore::connect(&url).await.unwrap();
        test(store.clone()).await;
        store.close().await;
    }

    /// Runs `test` on the store the embedded bus opens beside it, whose
    /// usual claim and record go to the bus writer as jobs.
    async fn on_embedded<F, Fut>(test: F)
    where
        F: FnOnce(SqlStore) -> Fut,
        Fut: Future<Output = ()>,
    {
        let dir = tempfile::tempdir().unwrap();
        let (bus, store) = crate::bus::embedded::open_embedded(dir.path())
            .await
            .unwrap();
        assert!(store.jobs().is_some());
        test(store).await;
        bus.close().await;
    }

    /// Runs `test` on a fresh database `waybill_test_<random>`, dropped afterwards
    /// even when the test fails.
    async fn on_postgres<F, Fut>(test: F)
    where
        F: FnOnce(SqlStore) -> Fut,
        Fut: Future<Output = ()>,
    {
        let server = postgres_server();
        let admin = PgPoolOptions::new()
            .max_connections(1)
            .connect(&format!("{server}/postgres"))
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL at {server} is required for these tests: {e}"));
        let name = format!("waybill_test_{}", uuid::Uuid::new_v4().simple());
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&admin)
            .await
            .unwrap();
        let outcome = AssertUnwindSafe(async {
            let store = SqlStore::connect(&format!("{server}/{name}"))
                .await
                .unwrap();
            test(store.clone()).await;
            store.close().await;
        })
        .catch_unwind()
        .await;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
        )))
        .execute(&admin)
        .await
        .unwrap();
        if let Err(panic) = outcome {
            std::panic::resume_unwind(panic);
        }
    }

    /// Declares each scenario as one test per backend.
    macro_rules! on_every_backend {
        ($($scenario:ident),* $(,)?) => {
            mod sqlite {
                $(
                    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                    async fn $scenario() {
                        super::on_sqlite(super::$scenario).await;
                    }
                )*
            }
            mod embedded {
                $(
                    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                    async fn $scenario() {
                        super::on_embedded(super::$scenario).await;
                    }
                )*
            }
            mod postgres {
                $(
                    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                    async fn $scenario() {
                        super::on_postgres(super::$scenario).await;
                    }
                )*
            }
        };
    }

    on_every_backend!(
        claim_answers_for_every_state,
        a_lapsed_lease_on_a_sent_key_means_review_not_resend,
        concurrent_claims_acquire_once,
        review_is_resolved_booked_or_released,
        a_claim_can_be_given_back,
        deliveries_are_deduplicated_and_expire,
        bookings_are_listed_by_status,
    );

    const HOUR: Duration = Duration::from_secs(3600);

    fn key(order_id: &str) -> BookingKey {
        BookingKey {
            source: "shopify".into(),
            account: "shopify-main".into(),
            order_id: order_id.into(),
            sequence: 0,
        }
    }

    fn result(tracking_number: &str) -> BookingResult {
        let mut extracted = BTreeMap::new();
        extracted.insert(
            "slip".to_string(),
            serde_json::json!({"url": "https://example.test/slip.pdf"}),
        );
        BookingResult {
            tracking_number: tracking_number.into(),
            courier: "postex".into(),
            account: "courier-main".into(),
            extracted,
        }
    }

    async fn actions(store: &SqlStore, key: &BookingKey) -> Vec<String> {
        store
            .audit(key)
            .await
            .unwrap()
            .into_iter()
            .map(|entry| entry.action)
            .collect()
    }

    async fn claim_answers_for_every_state(store: SqlStore) {
        let order = key("820982911946154508");
        let claim =
            |owner: &'static str| store.claim_booking(&order, owner, HOUR, "msg-1", "#1001");
        assert_eq!(claim("a").await.unwrap(), Reservation::Acquired);
        // While a's lease lasts its answer may still come: others wait.
        assert_eq!(
            claim("b").await.unwrap(),
            Reservation::Busy { owner: "a".into() }
        );
        // The owner itself meeting its sent key again means it lost the answer.
        assert_eq!(claim("a").await.unwrap(), Reservation::Sent);
        store
            .mark_booked(&order, &result("CN-1"), "msg-1")
            .await
            .unwrap();
        assert_eq!(
            claim("b").await.unwrap(),
            Reservation::Booked(result("CN-1"))
        );
        // A redelivered success is accepted; a different one is not.
        store
            .mark_booked(&order, &result("CN-1"), "msg-2")
            .await
            .unwrap();
        assert!(matches!(
            store.mark_booked(&order, &result("CN-2"), "msg-2").await,
            Err(StoreError::WrongState { .. })
        ));
        assert!(matches!(
            store.mark_review(&order, "late", "msg-2").await,
            Err(StoreError::WrongState { .. })
        ));

        let booking = store.booking(&order).await.unwrap().unwrap();
        assert_eq!(booking.key, order);
        assert_eq!(booking.status, BookingStatus::Booked);
        assert_eq!(booking.result, Some(result("CN-1")));
        assert_eq!(booking.message_id.as_deref(), Some("msg-1"));
        assert_eq!(booking.reference.as_deref(), Some("#1001"));
        assert_eq!(booking.owner, None);
        assert_eq!(actions(&store, &order).await, ["sent", "booked"]);
        let audit = store.audit(&order).await.unwrap();
        assert_eq!(audit[0].key, order.to_string());
        assert_eq!(audit[0].detail.as_deref(), Some("owner a"));
        assert_eq!(audit[1].message_id.as_deref(), Some("msg-1"));
        assert!(audit[1].detail.as_deref().unwrap().contains("CN-1"));

        let missing = key("missing");
        assert_eq!(store.booking(&missing).await.unwrap(), None);
        assert!(matches!(
            store.mark_booked(&missing, &result("X"), "m").await,
            Err(StoreError::NotFound(_))
        ));
        store.check().await.unwrap();
    }

    async fn a_lapsed_lease_on_a_sent_key_means_review_not_resend(store: SqlStore) {
        let order = key("1");
        assert_eq!(
            store
                .claim_booking(&order, "a", Duration::ZERO, "m1", "#1")
                .await
                .unwrap(),
            Reservation::Acquired
        );
        // a died with its request out: nobody may send it again.
        assert_eq!(
            store
                .claim_booking(&order, "b", HOUR, "m2", "#1")
                .await
                .unwrap(),
            Reservation::Sent
        );
        let booking = store.booking(&order).await.unwrap().unwrap();
        assert_eq!(booking.status, BookingStatus::Sent);
        assert_eq!(booking.owner.as_deref(), Some("a"));
    }

    async fn concurrent_claims_acquire_once(store: SqlStore) {
        let order = key("race");
        let racers: Vec<_> = (0..20)
            .map(|i| {
                let store = store.clone();
                let order = order.clone();
                tokio::spawn(async move {
                    store
                        .claim_booking(&order, &format!("owner-{i}"), HOUR, "m", "#1")
                        .await
                })
            })
            .collect();
        let mut acquired = 0;
        for racer in racers {
            match racer.await.unwrap().unwrap() {
                Reservation::Acquired => acquired += 1,
                Reservation::Busy { owner } => assert!(owner.starts_with("owner-")),
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(acquired, 1);
        assert_eq!(actions(&store, &order).await, ["sent"]);
    }

    async fn review_is_resolved_booked_or_released(store: SqlStore) {
        let booked = key("booked-by-hand");
        store
            .claim_booking(&booked, "a", HOUR, "m", "#1")
            .await
            .unwrap();
        store
            .mark_review(&booked, "timeout after sending", "m")
            .await
            .unwrap();
        store.mark_review(&booked, "again", "m").await.unwrap();
        assert_eq!(
            store
                .claim_booking(&booked, "b", HOUR, "m", "#1")
                .await
                .unwrap(),
            Reservation::Review("timeout after sending".into())
        );
        store
            .resolve_booked(&booked, "CN-9", "postex", "courier-main")
            .await
            .unwrap();
        let expected = BookingResult {
            tracking_number: "CN-9".into(),
            courier: "postex".into(),
            account: "courier-main".into(),
            extracted: BTreeMap::new(),
        };
        assert_eq!(
            store
                .claim_booking(&booked, "b", HOUR, "m", "#1")
                .await
                .unwrap(),
            Reservation::Booked(expected)
        );
        assert!(matches!(
            store.resolve_booked(&booked, "CN-9", "postex", "c").await,
            Err(StoreError::WrongState { .. })
        ));
        assert_eq!(
            actions(&store, &booked).await,
            ["sent", "review", "resolved_booked"]
        );

        let released = key("never-booked");
        store
            .claim_booking(&released, "a", HOUR, "m", "#2")
            .await
            .unwrap();
        assert!(matches!(
            store.resolve_release(&released).await,
            Err(StoreError::WrongState { .. })
        ));
        store
            .mark_review(&released, "courier down", "m")
            .await
            .unwrap();
        store.resolve_release(&released).await.unwrap();
        assert_eq!(store.booking(&released).await.unwrap(), None);
        assert_eq!(
            store
                .claim_booking(&released, "b", HOUR, "m2", "#2")
                .await
                .unwrap(),
            Reservation::Acquired
        );
        assert_eq!(
            actions(&store, &released).await,
            ["sent", "review", "resolved_release", "sent"]
        );
        assert!(matches!(
            store.resolve_release(&key("nothing")).await,
            Err(StoreError::NotFound(_))
        ));
    }

    async fn a_claim_can_be_given_back(store: SqlStore) {
        let order = key("2");
        store
            .claim_booking(&order, "a", HOUR, "m", "#2")
            .await
            .unwrap();
        // Refused by the courier (a retryable answer): only its owner gives it back.
        assert!(matches!(
            store.release_reservation(&order, "b").await,
            Err(StoreError::WrongState { .. })
        ));
        store.release_reservation(&order, "a").await.unwrap();
        assert_eq!(
            store
                .claim_booking(&order, "b", HOUR, "m", "#2")
                .await
                .unwrap(),
            Reservation::Acquired
        );
        assert_eq!(actions(&store, &order).await, ["sent", "released", "sent"]);
    }

    async fn deliveries_are_deduplicated_and_expire(store: SqlStore) {
        assert!(!store.delivery_seen("shopify", "main", "d-1").await.unwrap());
        assert!(
            store
                .remember_delivery("shopify", "main", "d-1")
                .await
                .unwrap()
        );
        assert!(
            !store
                .remember_delivery("shopify", "main", "d-1")
                .await
                .unwrap()
        );
        assert!(store.delivery_seen("shopify", "main", "d-1").await.unwrap());
        assert!(
            !store
                .delivery_seen("shopify", "other", "d-1")
                .await
                .unwrap()
        );
        assert!(
            store
                .remember_delivery("woocommerce", "main", "d-1")
                .await
                .unwrap()
        );
        assert_eq!(store.expire_deliveries(HOUR).await.unwrap(), 0);
        assert_eq!(store.expire_deliveries(Duration::ZERO).await.unwrap(), 2);
        assert!(!store.delivery_seen("shopify", "main", "d-1").await.unwrap());
    }

    async fn bookings_are_listed_by_status(store: SqlStore) {
        for order in ["a", "b", "c"] {
            store
                .claim_booking(&key(order), "w", HOUR, "m", order)
                .await
                .unwrap();
        }
        store.mark_review(&key("b"), "why", "m").await.unwrap();
        let all = store.bookings(None, 10).await.unwrap();
        assert_eq!(all.len(), 3);
        let review = store
            .bookings(Some(BookingStatus::Review), 10)
            .await
            .unwrap();
        assert_eq!(
            review
                .iter()
                .map(|b| b.key.order_id.as_str())
                .collect::<Vec<_>>(),
            ["b"]
        );
        assert_eq!(review[0].reason.as_deref(), Some("why"));
        assert_eq!(
            store
                .bookings(Some(BookingStatus::Sent), 1)
                .await
                .unwrap()
                .len(),
            1
        );
        assert!(
            store
                .bookings(Some(BookingStatus::Booked), 10)
                .await
                .unwrap()
                .is_empty()
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_connections_to_one_sqlite_file_acquire_once() {
        // Two stores on one file behave like two processes: separate writers.
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("shared.db").display());
        let first = SqlStore::connect(&url).await.unwrap();
        let second = SqlStore::connect(&url).await.unwrap();
        let order = key("shared");
        let racers: Vec<_> = (0..20)
            .map(|i| {
                let store = if i % 2 == 0 {
                    first.clone()
                } else {
                    second.clone()
                };
                let order = order.clone();
                tokio::spawn(async move {
                    store
                        .claim_booking(&order, &format!("owner-{i}"), HOUR, "m", "#1")
                        .await
                })
            })
            .collect();
        let mut acquired = 0;
        for racer in racers {
            if racer.await.unwrap().unwrap() == Reservation::Acquired {
                acquired += 1;
            }
        }
        assert_eq!(acquired, 1);
    }

    #[tokio::test]
    async fn a_write_lock_held_elsewhere_is_waited_for_not_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("store.db");
        let store = SqlStore::connect(&format!("sqlite://{}", file.display()))
            .await
            .unwrap();
        // Another process (`waybill dlq replay`, say) holds the write lock.
        let other = rusqlite::Connection::open(&file).unwrap();
        other.execute_batch("BEGIN IMMEDIATE").unwrap();
        let claim = {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .claim_booking(&key("1"), "me", Duration::from_secs(30), "m1", "#1")
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!claim.is_finished(), "the claim must wait for the lock");
        other.execute_batch("COMMIT").unwrap();
        let claimed = tokio::time::timeout(Duration::from_secs(10), claim)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(claimed.unwrap(), Reservation::Acquired);
        store
            .mark_booked(&key("1"), &result("CN1"), "m1")
            .await
            .unwrap();
        let actions: Vec<String> = store
            .audit(&key("1"))
            .await
            .unwrap()
            .into_iter()
            .map(|entry| entry.action)
            .collect();
        assert_eq!(actions, ["sent", "booked"]);
        store.close().await;
    }

    #[tokio::test]
    async fn an_in_memory_store_reads_what_it_wrote() {
        // Reads and writes use different pools: they must share one memory database.
        let store = SqlStore::connect("sqlite::memory:").await.unwrap();
        assert!(
            store
                .remember_delivery("shopify", "main", "d")
                .await
                .unwrap()
        );
        assert!(store.delivery_seen("shopify", "main", "d").await.unwrap());
    }

    #[tokio::test]
    async fn unknown_url_schemes_are_rejected() {
        let error = SqlStore::connect("mysql://localhost/waybill")
            .await
            .err()
            .unwrap();
        assert!(error.to_string().contains("mysql"), "{error}");
    }
}
