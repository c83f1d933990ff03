//! Webhook delivery ids: remembered so that a store's redelivery of a
//! webhook is acknowledged without being enqueued again, and expired after
//! the stores' redelivery window.

use super::queries::{EXPIRE_DELIVERIES, INSERT_DELIVERY, SELECT_DELIVERY};
use super::{Backend, SqlStore, db};
use crate::clock::{earlier, now_timestamp, timestamp};
use crate::store::StoreError;
use std::time::Duration;
use time::OffsetDateTime;

pub(super) async fn seen(
    store: &SqlStore,
    source: &str,
    account: &str,
    delivery_id: &str,
) -> Result<bool, StoreError> {
    with_read_pool!(store, pool => {
        let found: Option<String> = sqlx::query_scalar(SELECT_DELIVERY)
            .bind(source)
            .bind(account)
            .bind(delivery_id)
            .fetch_optional(pool)
            .await
            .map_err(db)?;
        Ok(found.is_some())
    })
}

pub(super) async fn remember(
    store: &SqlStore,
    source: &str,
    account: &str,
    delivery_id: &str,
) -> Result<bool, StoreError> {
    let now = now_timestamp();
    with_write_pool!(store, pool => {
        let inserted = sqlx::query(INSERT_DELIVERY)
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

pub(super) async fn expire(store: &SqlStore, ttl: Duration) -> Result<u64, StoreError> {
    let cutoff = timestamp(earlier(OffsetDateTime::now_utc(), ttl));
    with_write_pool!(store, pool => {
        let deleted = sqlx::query(EXPIRE_DELIVERIES)
            .bind(&cutoff)
            .execute(pool)
            .await
            .map_err(db)?
            .rows_affected();
        Ok(deleted)
    })
}
