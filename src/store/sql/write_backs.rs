//! Write-back rows in SQL, the same statements on SQLite and PostgreSQL.
//! A claim inserts the row, or takes a `sent` one over with an update
//! guarded by the owner and lease it read, so two claimers never both win.

use super::{Backend, SqlStore, db};
use crate::clock::{now_timestamp, timestamp};
use crate::model::BookingKey;
use crate::store::StoreError;
use crate::store::write_backs::{WriteBackClaim, WriteBackTicket};

const INSERT: &str = "INSERT INTO write_backs (booking_key, operation, state, owner, lease_until, updated_at) \
     VALUES ($1, $2, 'sent', $3, $4, $5) ON CONFLICT (booking_key, operation) DO NOTHING";

const SELECT: &str = "SELECT state, remote_id, owner, lease_until FROM write_backs \
     WHERE booking_key = $1 AND operation = $2";

const TAKE_OVER: &str = "UPDATE write_backs SET owner = $3, lease_until = $4, updated_at = $5 \
     WHERE booking_key = $1 AND operation = $2 AND state = 'sent' \
     AND owner = $6 AND lease_until = $7";

const FINISH: &str = "UPDATE write_backs SET state = 'done', remote_id = $3, owner = NULL, \
     lease_until = NULL, updated_at = $4 WHERE booking_key = $1 AND operation = $2";

const RELEASE: &str = "DELETE FROM write_backs \
     WHERE booking_key = $1 AND operation = $2 AND state = 'sent' AND owner = $3";

const DOUBT: &str = "UPDATE write_backs SET lease_until = $4, updated_at = $4 \
     WHERE booking_key = $1 AND operation = $2 AND state = 'sent' AND owner = $3";

type Row = (String, Option<String>, Option<String>, Option<String>);

pub(super) async fn claim(
    store: &SqlStore,
    ticket: WriteBackTicket<'_>,
) -> Result<WriteBackClaim, StoreError> {
    let key = ticket.key.to_string();
    let now = now_timestamp();
    let until = timestamp(time::OffsetDateTime::now_utc() + ticket.lease);
    with_write_pool!(store, pool => {
        let inserted = sqlx::query(INSERT)
            .bind(&key)
            .bind(ticket.operation)
            .bind(ticket.owner)
            .bind(&until)
            .bind(&now)
            .execute(pool)
            .await
            .map_err(db)?
            .rows_affected();
        if inserted == 1 {
            return Ok(WriteBackClaim::Acquired { checked: true });
        }
        let row: Option<Row> = sqlx::query_as(SELECT)
            .bind(&key)
            .bind(ticket.operation)
            .fetch_optional(pool)
            .await
            .map_err(db)?;
        let Some((state, remote_id, owner, lease_until)) = row else {
            // Released between the insert and the read: try again later.
            return Ok(WriteBackClaim::Busy);
        };
        if state == "done" {
            return Ok(WriteBackClaim::Done(remote_id));
        }
        let lapsed = lease_until.as_deref().is_none_or(|until| until <= now.as_str());
        if owner.as_deref() != Some(ticket.owner) && !lapsed {
            return Ok(WriteBackClaim::Busy);
        }
        let taken = sqlx::query(TAKE_OVER)
            .bind(&key)
            .bind(ticket.operation)
            .bind(ticket.owner)
            .bind(&until)
            .bind(&now)
            .bind(&owner)
            .bind(&lease_until)
            .execute(pool)
            .await
            .map_err(db)?
            .rows_affected();
        Ok(if taken == 1 {
            WriteBackClaim::Acquired { checked: false }
        } else {
            WriteBackClaim::Busy
        })
    })
}

pub(super) async fn finish(
    store: &SqlStore,
    key: &BookingKey,
    operation: &str,
    remote_id: Option<&str>,
) -> Result<(), StoreError> {
    with_write_pool!(store, pool => {
        sqlx::query(FINISH)
            .bind(key.to_string())
            .bind(operation)
            .bind(remote_id)
            .bind(now_timestamp())
            .execute(pool)
            .await
            .map_err(db)?;
        Ok(())
    })
}

pub(super) async fn release(
    store: &SqlStore,
    key: &BookingKey,
    operation: &str,
    owner: &str,
) -> Result<(), StoreError> {
    with_write_pool!(store, pool => {
        sqlx::query(RELEASE)
            .bind(key.to_string())
            .bind(operation)
            .bind(owner)
            .execute(pool)
            .await
            .map_err(db)?;
        Ok(())
    })
}

pub(super) async fn doubt(
    store: &SqlStore,
    key: &BookingKey,
    operation: &str,
    owner: &str,
) -> Result<(), StoreError> {
    with_write_pool!(store, pool => {
        sqlx::query(DOUBT)
            .bind(key.to_string())
            .bind(operation)
            .bind(owner)
            .bind(now_timestamp())
            .execute(pool)
            .await
            .map_err(db)?;
        Ok(())
    })
}

pub(super) async fn remote_id(
    store: &SqlStore,
    key: &BookingKey,
    operation: &str,
) -> Result<Option<String>, StoreError> {
    let row: Option<Row> = with_read_pool!(store, pool => {
        sqlx::query_as(SELECT)
            .bind(key.to_string())
            .bind(operation)
            .fetch_optional(pool)
            .await
            .map_err(db)?
    });
    Ok(row.and_then(|(state, id, _, _)| if state == "done" { id } else { None }))
}
