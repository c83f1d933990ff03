//! SQL store for SQLite and PostgreSQL through `sqlx`: the same queries
//! (`$N` placeholders work in both drivers) over either pool, with
//! migrations in `migrations/sqlite` and `migrations/postgres`.
//!
//! ```yaml
//! store: { url: "postgres://waybill@db/waybill" }   # default: SQLite at <data_dir>/waybill.db
//! ```
//!
//! Timestamps are stored as fixed-width RFC 3339 UTC text, so both backends
//! compare them as text in the same SQL. The statements are in `queries`,
//! their rows decoded in `rows`; `bookings` and `deliveries` run them, and
//! `writer` hands the frequent booking changes to the embedded bus writer.

use super::cod::{CodFilter, CodGauges, PaymentLease, RemitOutcome};
use super::shipments::{
    Applied, DueLease, HistoryEntry, NewShipment, ShipmentFilter, ShipmentRecord, ShipmentStore,
    StatusEvent, SyncOverview, UnknownStatus,
};
use super::sqlite::{self, Jobs, SqlitePools};
use super::write_backs::{WriteBackClaim, WriteBackStore, WriteBackTicket};
use super::{
    AuditEntry, BookedShipment, Booking, BookingStatus, Claim, Reservation, Store, StoreError,
};
use crate::model::cod::Remittance;
use crate::model::{BookingKey, BookingResult, CodState, Status};
use async_trait::async_trait;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool};
use std::str::FromStr;
use std::time::Duration;

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

// The columns of a shipment row, in `shipments::ShipmentRow` order.
macro_rules! shipment_columns {
    () => {
        "source, account, order_id, sequence, order_key, reference, courier, courier_account, \
         tracking_number, status, sub_status, raw_status, reason, booked_at, last_event_at, \
         updated_at, next_poll_at, poll_interval_ms, cod_amount, cod_currency, cod_state, \
         cod_collected_at, cod_remitted, cod_remitted_at, cod_remittance_ref, cod_fees, cod_note, version"
    };
}

mod bookings;
mod cod;
#[cfg(test)]
mod cod_tests;
mod deliveries;
mod notifications;
mod queries;
mod rows;
mod shipments;
#[cfg(test)]
mod tests;
mod write_backs;
mod writer;

fn db(error: sqlx::Error) -> StoreError {
    StoreError::Database(error)
}

/// Why a URL cannot be a store.
fn unsupported(url: &str) -> StoreError {
    let scheme = url.split(':').next().unwrap_or_default();
    StoreError::UnsupportedUrl(scheme.to_string())
}

impl SqlStore {
    /// Connects to `sqlite://PATH` (or `sqlite::memory:`, handy in tests) or
    /// `postgres://…` and runs the migrations.
    pub async fn connect(url: &str) -> Result<SqlStore, StoreError> {
        if url.starts_with("sqlite:") {
            let options = SqliteConnectOptions::from_str(url).map_err(db)?;
            let pools = sqlite::open(options).await.map_err(|e| match e {
                sqlite::OpenError::Connect(e) => StoreError::Database(e),
                sqlite::OpenError::Migrate(e) => StoreError::Migrate(e),
            })?;
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
                .map_err(StoreError::Migrate)?;
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
        deliveries::seen(self, source, account, delivery_id).await
    }

    async fn remember_delivery(
        &self,
        source: &str,
        account: &str,
        delivery_id: &str,
    ) -> Result<bool, StoreError> {
        deliveries::remember(self, source, account, delivery_id).await
    }

    async fn claim_booking(&self, claim: Claim<'_>) -> Result<Reservation, StoreError> {
        bookings::claim(self, claim).await
    }

    async fn mark_booked(
        &self,
        key: &BookingKey,
        result: &BookingResult,
        message_id: &str,
    ) -> Result<(), StoreError> {
        bookings::mark_booked(self, key, result, message_id).await
    }

    async fn mark_review(
        &self,
        key: &BookingKey,
        reason: &str,
        message_id: &str,
    ) -> Result<(), StoreError> {
        bookings::mark_review(self, key, reason, message_id).await
    }

    async fn release_reservation(&self, key: &BookingKey, owner: &str) -> Result<(), StoreError> {
        bookings::release(self, key, owner).await
    }

    async fn resolve_booked(
        &self,
        key: &BookingKey,
        result: &BookingResult,
    ) -> Result<(), StoreError> {
        bookings::resolve_booked(self, key, result).await
    }

    async fn resolve_release(&self, key: &BookingKey) -> Result<(), StoreError> {
        bookings::resolve_release(self, key).await
    }

    async fn booking(&self, key: &BookingKey) -> Result<Option<Booking>, StoreError> {
        bookings::booking(self, key).await
    }

    async fn bookings(
        &self,
        status: Option<BookingStatus>,
        limit: usize,
    ) -> Result<Vec<Booking>, StoreError> {
        bookings::bookings(self, status, limit).await
    }

    async fn audit(&self, key: &BookingKey) -> Result<Vec<AuditEntry>, StoreError> {
        bookings::audit(self, key).await
    }

    async fn order_bookings(
        &self,
        source: &str,
        account: &str,
        order_id: &str,
    ) -> Result<Vec<Booking>, StoreError> {
        bookings::order_bookings(self, source, account, order_id).await
    }

    async fn booked_shipment(
        &self,
        key: &BookingKey,
    ) -> Result<Option<BookedShipment>, StoreError> {
        bookings::booked_shipment(self, key).await
    }

    async fn note_change(
        &self,
        key: &BookingKey,
        change: &str,
        message_id: &str,
    ) -> Result<(), StoreError> {
        bookings::note_change(self, key, change, message_id).await
    }

    async fn expire_deliveries(&self, ttl: Duration) -> Result<u64, StoreError> {
        deliveries::expire(self, ttl).await
    }

    async fn check(&self) -> Result<(), StoreError> {
        with_write_pool!(self, pool => {
            sqlx::query("SELECT 1").execute(pool).await.map_err(db)?;
            Ok(())
        })
    }
}

#[async_trait]
impl WriteBackStore for SqlStore {
    async fn claim_write_back(
        &self,
        ticket: WriteBackTicket<'_>,
    ) -> Result<WriteBackClaim, StoreError> {
        write_backs::claim(self, ticket).await
    }

    async fn finish_write_back(
        &self,
        key: &BookingKey,
        operation: &str,
        remote_id: Option<&str>,
    ) -> Result<(), StoreError> {
        write_backs::finish(self, key, operation, remote_id).await
    }

    async fn release_write_back(
        &self,
        key: &BookingKey,
        operation: &str,
        owner: &str,
    ) -> Result<(), StoreError> {
        write_backs::release(self, key, operation, owner).await
    }

    async fn doubt_write_back(
        &self,
        key: &BookingKey,
        operation: &str,
        owner: &str,
    ) -> Result<(), StoreError> {
        write_backs::doubt(self, key, operation, owner).await
    }

    async fn write_back_id(
        &self,
        key: &BookingKey,
        operation: &str,
    ) -> Result<Option<String>, StoreError> {
        write_backs::remote_id(self, key, operation).await
    }
}

#[async_trait]
impl ShipmentStore for SqlStore {
    async fn create_shipment(&self, new: &NewShipment) -> Result<bool, StoreError> {
        shipments::create(self, new).await
    }

    async fn apply_status(&self, event: &StatusEvent) -> Result<Applied, StoreError> {
        shipments::apply(self, event).await
    }

    async fn mark_published(&self, id: i64) -> Result<(), StoreError> {
        shipments::mark_published(self, id).await
    }

    async fn correct_shipment(
        &self,
        key: &BookingKey,
        status: Status,
        reason: &str,
    ) -> Result<Option<HistoryEntry>, StoreError> {
        let forced = shipments::Forced {
            status,
            sub_status: None,
            raw: format!("corrected: {reason}"),
            reason,
            via: crate::model::Via::Store,
            stop_polling: false,
        };
        shipments::force(self, key, forced).await
    }

    async fn lease_due(&self, lease: DueLease<'_>) -> Result<Vec<ShipmentRecord>, StoreError> {
        shipments::lease_due(self, lease).await
    }

    async fn finish_poll(
        &self,
        key: &BookingKey,
        owner: &str,
        next_poll_at: Option<&str>,
        interval_ms: i64,
    ) -> Result<(), StoreError> {
        shipments::finish_poll(self, key, owner, next_poll_at, interval_ms).await
    }

    async fn cancel_shipment(
        &self,
        key: &BookingKey,
        reason: &str,
    ) -> Result<Option<HistoryEntry>, StoreError> {
        let forced = shipments::Forced {
            status: Status::Cancelled,
            sub_status: None,
            raw: "cancelled by the store".to_string(),
            reason,
            via: crate::model::Via::Store,
            stop_polling: true,
        };
        shipments::force(self, key, forced).await
    }

    async fn expire_shipment(
        &self,
        key: &BookingKey,
        reason: &str,
    ) -> Result<Option<HistoryEntry>, StoreError> {
        let forced = shipments::Forced {
            status: Status::Exception,
            sub_status: Some("tracking_expired"),
            raw: "tracking expired".to_string(),
            reason,
            via: crate::model::Via::Poll,
            stop_polling: true,
        };
        shipments::force(self, key, forced).await
    }

    async fn sync_overview(&self, now: &str) -> Result<Vec<SyncOverview>, StoreError> {
        shipments::sync_overview(self, now).await
    }

    async fn note_scheduler_run(&self, owner: &str, at: &str) -> Result<(), StoreError> {
        shipments::note_run(self, owner, at).await
    }

    async fn scheduler_runs(&self) -> Result<Vec<(String, String)>, StoreError> {
        shipments::runs(self).await
    }

    async fn shipments(&self, filter: &ShipmentFilter) -> Result<Vec<ShipmentRecord>, StoreError> {
        shipments::list(self, filter).await
    }

    async fn find_shipments(&self, needle: &str) -> Result<Vec<ShipmentRecord>, StoreError> {
        shipments::find(self, needle).await
    }

    async fn shipment_by_tracking(
        &self,
        courier_account: &str,
        tracking_number: &str,
    ) -> Result<Option<ShipmentRecord>, StoreError> {
        shipments::by_tracking(self, courier_account, tracking_number).await
    }

    async fn history(&self, key: &BookingKey) -> Result<Vec<HistoryEntry>, StoreError> {
        shipments::history(self, key).await
    }

    async fn record_unknown(&self, courier: &str, raw: &str, at: &str) -> Result<(), StoreError> {
        shipments::record_unknown(self, courier, raw, at).await
    }

    async fn unknown_statuses(&self) -> Result<Vec<UnknownStatus>, StoreError> {
        shipments::unknown(self).await
    }

    async fn shipment_counts(&self) -> Result<Vec<(String, Status, i64)>, StoreError> {
        shipments::counts(self).await
    }

    async fn lease_payment_checks(
        &self,
        lease: PaymentLease<'_>,
    ) -> Result<Vec<ShipmentRecord>, StoreError> {
        cod::lease_payments(self, lease).await
    }

    async fn record_remittances(
        &self,
        remittances: &[(BookingKey, Remittance)],
        tolerance: rust_decimal::Decimal,
        via: &str,
    ) -> Result<Vec<RemitOutcome>, StoreError> {
        cod::record_remittances(self, remittances, tolerance, via).await
    }

    async fn dispute_cod(
        &self,
        key: &BookingKey,
        reason: &str,
    ) -> Result<Option<CodState>, StoreError> {
        cod::dispute(self, key, reason).await
    }

    async fn cod_shipments(&self, filter: &CodFilter) -> Result<Vec<ShipmentRecord>, StoreError> {
        cod::list(self, filter).await
    }

    async fn shipments_by_courier_tracking(
        &self,
        courier: &str,
        tracking_number: &str,
    ) -> Result<Vec<ShipmentRecord>, StoreError> {
        cod::by_courier_tracking(self, courier, tracking_number).await
    }

    async fn cod_gauges(&self) -> Result<CodGauges, StoreError> {
        cod::gauges(self).await
    }
}
