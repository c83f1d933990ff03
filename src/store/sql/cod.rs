//! The COD ledger in SQL, the same statements on SQLite and PostgreSQL:
//! payment checks leased like tracking polls, remittances judged and
//! written in one transaction with their audit rows, disputes, the report's
//! listing and the gauges' sums.

use super::queries::INSERT_AUDIT;
use super::shipments::{SELECT_BY_KEY, ShipmentRow, records};
use super::{Backend, SqlStore, db};
use crate::clock::now_timestamp;
use crate::model::cod::{self, Remittance};
use crate::model::{BookingKey, CodState};
use crate::store::cod::{CodFilter, CodGauges, PaymentLease, RemitOutcome};
use crate::store::shipments::ShipmentRecord;
use crate::store::{RowError, StoreError};
use rust_decimal::Decimal;
use std::str::FromStr;

/// Collected shipments due a payment check, oldest collection first; a
/// shipment never checked is first checked once collected long enough.
macro_rules! lease_payments {
    ($lock:literal) => {
        concat!(
            "UPDATE shipments SET cod_next_check_at = $1 WHERE booking_key IN (\
             SELECT booking_key FROM shipments WHERE cod_state = 'collected' AND \
             ((cod_next_check_at IS NULL AND COALESCE(cod_collected_at, updated_at) <= $2) \
             OR cod_next_check_at <= $3) ORDER BY cod_collected_at LIMIT $4",
            $lock,
            ") RETURNING ",
            shipment_columns!()
        )
    };
}

const LEASE_PAYMENTS_SQLITE: &str = lease_payments!("");
const LEASE_PAYMENTS_POSTGRES: &str = lease_payments!(" FOR UPDATE SKIP LOCKED");

/// Guarded by the state read, so a concurrent status write or remittance
/// makes it miss rather than be overwritten.
const REMIT: &str = "UPDATE shipments SET cod_state = $2, cod_remitted = $3, \
     cod_remitted_at = COALESCE($4, cod_remitted_at), cod_remittance_ref = COALESCE($5, cod_remittance_ref), \
     cod_fees = COALESCE($6, cod_fees), cod_note = $7, updated_at = $8, \
     version = version + 1 WHERE booking_key = $1 AND cod_state = $9 AND version = $10";

const DISPUTE: &str = "UPDATE shipments SET cod_state = 'disputed', cod_note = $2, updated_at = $3, \
     version = version + 1 WHERE booking_key = $1 AND version = $4";

const SELECT_COD: &str = concat!(
    "SELECT ",
    shipment_columns!(),
    " FROM shipments WHERE cod_state <> 'not_applicable' AND ($1 IS NULL OR booked_at >= $1) \
     AND ($2 IS NULL OR booked_at < $2) AND ($3 IS NULL OR courier = $3) \
     ORDER BY booked_at, booking_key"
);

const SELECT_BY_COURIER_TRACKING: &str = concat!(
    "SELECT ",
    shipment_columns!(),
    " FROM shipments WHERE courier = $1 AND tracking_number = $2"
);

/// `DOUBLE PRECISION` is a float on PostgreSQL and has REAL affinity on
/// SQLite; the gauges are floats anyway, the ledger itself stays decimal.
const SUM_AMOUNTS: &str = "SELECT courier, COALESCE(cod_currency, ''), cod_state, \
     SUM(CAST(cod_amount AS DOUBLE PRECISION)) FROM shipments WHERE cod_state <> 'not_applicable' \
     GROUP BY courier, COALESCE(cod_currency, ''), cod_state ORDER BY 1, 2, 3";

/// A remittance matched when it is `remitted` with an amount: without one
/// (the courier named none) nothing was checked.
const RECONCILED: &str = "SELECT courier, \
     SUM(CASE WHEN cod_state IN ('collected', 'remitted', 'short_paid', 'disputed') THEN 1 ELSE 0 END), \
     SUM(CASE WHEN cod_state = 'remitted' AND cod_remitted IS NOT NULL THEN 1 ELSE 0 END) \
     FROM shipments WHERE cod_state <> 'not_applicable' GROUP BY courier ORDER BY courier";

pub(super) async fn lease_payments(
    store: &SqlStore,
    lease: PaymentLease<'_>,
) -> Result<Vec<ShipmentRecord>, StoreError> {
    let limit = i64::try_from(lease.limit).unwrap_or(i64::MAX);
    let statement = match &store.backend {
        Backend::Sqlite { .. } => LEASE_PAYMENTS_SQLITE,
        Backend::Postgres(_) => LEASE_PAYMENTS_POSTGRES,
    };
    let rows: Vec<ShipmentRow> = with_write_pool!(store, pool => {
        sqlx::query_as(statement)
            .bind(lease.next_check_at)
            .bind(lease.collected_before)
            .bind(lease.now)
            .bind(limit)
            .fetch_all(pool)
            .await
            .map_err(db)?
    });
    records(rows)
}

/// What one remittance should do to `current`: the new state and how it
/// was judged, or an outcome that writes nothing.
fn decide(
    key: &BookingKey,
    current: &ShipmentRecord,
    remittance: &Remittance,
    tolerance: Decimal,
) -> Result<(CodState, cod::Judgement), RemitOutcome> {
    let refused = |why: String| RemitOutcome::Refused {
        key: key.clone(),
        why,
    };
    let same = current
        .cod_remitted
        .as_deref()
        .map(Decimal::from_str)
        .transpose()
        .ok()
        .flatten()
        == remittance.amount
        && current.cod_remittance_ref == remittance.reference;
    // A remittance the courier named no amount for is checked by the first
    // one that names it (a settlement sheet after the payment status).
    let unchecked = current.cod_remitted.is_none() && remittance.amount.is_some();
    match current.cod_state {
        CodState::Pending | CodState::Collected | CodState::ShortPaid => {}
        CodState::Remitted if unchecked => {}
        CodState::Remitted if same => {
            return Err(RemitOutcome::Already {
                key: key.clone(),
                state: current.cod_state,
            });
        }
        CodState::Remitted => {
            return Err(refused(format!(
                "already remitted ({} ref {}): `waybill cod dispute` it if the courier paid twice or differently",
                current
                    .cod_remitted
                    .as_deref()
                    .unwrap_or("amount not reported"),
                current.cod_remittance_ref.as_deref().unwrap_or("-")
            )));
        }
        other => {
            return Err(refused(format!(
                "its COD is {}: nothing is owed for it",
                other.as_str()
            )));
        }
    }
    let expected = current
        .cod_amount
        .as_deref()
        .and_then(|a| Decimal::from_str(a).ok())
        .ok_or_else(|| refused("it has no expected COD amount".into()))?;
    let judgement = cod::judge(expected, remittance, tolerance);
    Ok((judgement.state(), judgement))
}

fn note_of(judgement: cod::Judgement, current: &ShipmentRecord, r: &Remittance) -> String {
    let expected = current.cod_amount.as_deref().unwrap_or("?");
    let fees = r.fees.map_or("none".to_string(), |f| f.to_string());
    match (judgement, r.amount) {
        (cod::Judgement::Unchecked, _) | (_, None) => {
            format!("settled; the courier named no amount (expected {expected})")
        }
        (_, Some(paid)) => format!("paid {paid} of expected {expected}, fees {fees}"),
    }
}

pub(super) async fn record_remittances(
    store: &SqlStore,
    remittances: &[(BookingKey, Remittance)],
    tolerance: Decimal,
    via: &str,
) -> Result<Vec<RemitOutcome>, StoreError> {
    with_write_pool!(store, pool => {
        let mut tx = pool.begin().await.map_err(db)?;
        let mut outcomes = Vec::with_capacity(remittances.len());
        let now = now_timestamp();
        for (key, remittance) in remittances {
            let text = key.to_string();
            let row: Option<ShipmentRow> = sqlx::query_as(SELECT_BY_KEY)
                .bind(&text)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db)?;
            let Some(row) = row else {
                outcomes.push(RemitOutcome::Refused { key: key.clone(), why: "no such shipment".into() });
                continue;
            };
            let (current, version) = row.record()?;
            let (state, judgement) = match decide(key, &current, remittance, tolerance) {
                Ok(decided) => decided,
                Err(outcome) => {
                    outcomes.push(outcome);
                    continue;
                }
            };
            let note = note_of(judgement, &current, remittance);
            let moved = sqlx::query(REMIT)
                .bind(&text)
                .bind(state.as_str())
                .bind(remittance.amount.map(|a| a.to_string()))
                .bind(&remittance.at)
                .bind(&remittance.reference)
                .bind(remittance.fees.map(|f| f.to_string()))
                .bind(&note)
                .bind(&now)
                .bind(current.cod_state.as_str())
                .bind(version)
                .execute(&mut *tx)
                .await
                .map_err(db)?
                .rows_affected();
            if moved == 0 {
                return Err(StoreError::Contended(text));
            }
            let detail = format!("{} via {via}: {note}, ref {}", state.as_str(), remittance.reference.as_deref().unwrap_or("-"));
            sqlx::query(INSERT_AUDIT)
                .bind(&text)
                .bind(format!("cod_{}", state.as_str()))
                .bind(None::<String>)
                .bind(detail)
                .bind(&now)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
            outcomes.push(RemitOutcome::Recorded { key: key.clone(), from: current.cod_state, to: state, judgement });
        }
        if outcomes.iter().any(RemitOutcome::is_refused) {
            tx.rollback().await.map_err(db)?;
        } else {
            tx.commit().await.map_err(db)?;
        }
        Ok(outcomes)
    })
}

pub(super) async fn dispute(
    store: &SqlStore,
    key: &BookingKey,
    reason: &str,
) -> Result<Option<CodState>, StoreError> {
    let text = key.to_string();
    with_write_pool!(store, pool => {
        let mut tx = pool.begin().await.map_err(db)?;
        let row: Option<ShipmentRow> = sqlx::query_as(SELECT_BY_KEY)
            .bind(&text)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db)?;
        let Some(row) = row else {
            return Ok(None);
        };
        let (current, version) = row.record()?;
        if current.cod_state == CodState::NotApplicable {
            // Nothing to dispute: left as it is, and the caller says so.
            return Ok(Some(current.cod_state));
        }
        let now = now_timestamp();
        let moved = sqlx::query(DISPUTE)
            .bind(&text)
            .bind(reason)
            .bind(&now)
            .bind(version)
            .execute(&mut *tx)
            .await
            .map_err(db)?
            .rows_affected();
        if moved == 0 {
            return Err(StoreError::Contended(text));
        }
        sqlx::query(INSERT_AUDIT)
            .bind(&text)
            .bind("cod_disputed")
            .bind(None::<String>)
            .bind(format!("from {}: {reason}", current.cod_state.as_str()))
            .bind(&now)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(Some(current.cod_state))
    })
}

pub(super) async fn list(
    store: &SqlStore,
    filter: &CodFilter,
) -> Result<Vec<ShipmentRecord>, StoreError> {
    let rows: Vec<ShipmentRow> = with_read_pool!(store, pool => {
        sqlx::query_as(SELECT_COD)
            .bind(&filter.from)
            .bind(&filter.to)
            .bind(&filter.courier)
            .fetch_all(pool)
            .await
            .map_err(db)?
    });
    records(rows)
}

pub(super) async fn by_courier_tracking(
    store: &SqlStore,
    courier: &str,
    tracking_number: &str,
) -> Result<Vec<ShipmentRecord>, StoreError> {
    let rows: Vec<ShipmentRow> = with_read_pool!(store, pool => {
        sqlx::query_as(SELECT_BY_COURIER_TRACKING)
            .bind(courier)
            .bind(tracking_number)
            .fetch_all(pool)
            .await
            .map_err(db)?
    });
    records(rows)
}

/// (courier, currency, state, sum) of [`SUM_AMOUNTS`].
type AmountRow = (String, String, String, Option<f64>);

/// (courier, collected, matched) of [`RECONCILED`].
type ReconciledRow = (String, Option<i64>, Option<i64>);

pub(super) async fn gauges(store: &SqlStore) -> Result<CodGauges, StoreError> {
    let (amounts, reconciled): (Vec<AmountRow>, Vec<ReconciledRow>) = with_read_pool!(store, pool => {
        let amounts = sqlx::query_as(SUM_AMOUNTS).fetch_all(pool).await.map_err(db)?;
        let reconciled = sqlx::query_as(RECONCILED).fetch_all(pool).await.map_err(db)?;
        (amounts, reconciled)
    });
    let amounts = amounts
        .into_iter()
        .map(|(courier, currency, state, sum)| {
            let state = CodState::parse(&state).ok_or_else(|| RowError::CodState(state.clone()))?;
            Ok((courier, currency, state, sum.unwrap_or(0.0)))
        })
        .collect::<Result<Vec<_>, RowError>>()?;
    let reconciled = reconciled
        .into_iter()
        .map(|(courier, collected, matched)| {
            (courier, collected.unwrap_or(0), matched.unwrap_or(0))
        })
        .collect();
    Ok(CodGauges {
        amounts,
        reconciled,
    })
}
