//! Notifications in SQL, the same statements on SQLite and PostgreSQL.

use super::{Backend, SqlStore, db};
use crate::clock::now_timestamp;
use crate::store::notifications::{NotificationKey, NotificationState, NotificationStore};
use crate::store::{RowError, StoreError};
use async_trait::async_trait;

const SELECT_STATE: &str =
    "SELECT state FROM notifications WHERE pipeline = $1 AND booking_key = $2 AND status = $3";

/// An attempt of a notification not sent yet; a sent one is left alone.
const BEGIN: &str = "INSERT INTO notifications (pipeline, booking_key, status, state, attempts, created_at, updated_at) \
     VALUES ($1, $2, $3, 'sending', 1, $4, $4) \
     ON CONFLICT (pipeline, booking_key, status) DO UPDATE \
     SET attempts = notifications.attempts + 1, updated_at = $4 WHERE notifications.state = 'sending'";

const MARK_SENT: &str = "UPDATE notifications SET state = 'sent', sent_at = $4, updated_at = $4 \
     WHERE pipeline = $1 AND booking_key = $2 AND status = $3";

fn state(text: Option<String>) -> Result<Option<NotificationState>, StoreError> {
    match text {
        None => Ok(None),
        Some(text) => NotificationState::parse(&text)
            .map(Some)
            .ok_or(StoreError::Row(RowError::NotificationState(text))),
    }
}

#[async_trait]
impl NotificationStore for SqlStore {
    async fn notification(
        &self,
        key: NotificationKey<'_>,
    ) -> Result<Option<NotificationState>, StoreError> {
        let found: Option<String> = with_read_pool!(self, pool => {
            sqlx::query_scalar(SELECT_STATE)
                .bind(key.pipeline)
                .bind(key.booking_key)
                .bind(key.status)
                .fetch_optional(pool)
                .await
                .map_err(db)?
        });
        state(found)
    }

    async fn begin_notification(
        &self,
        key: NotificationKey<'_>,
    ) -> Result<Option<NotificationState>, StoreError> {
        let before = self.notification(key).await?;
        if before == Some(NotificationState::Sent) {
            return Ok(before);
        }
        with_write_pool!(self, pool => {
            sqlx::query(BEGIN)
                .bind(key.pipeline)
                .bind(key.booking_key)
                .bind(key.status)
                .bind(now_timestamp())
                .execute(pool)
                .await
                .map_err(db)?;
        });
        Ok(before)
    }

    async fn mark_notified(&self, key: NotificationKey<'_>) -> Result<(), StoreError> {
        with_write_pool!(self, pool => {
            sqlx::query(MARK_SENT)
                .bind(key.pipeline)
                .bind(key.booking_key)
                .bind(key.status)
                .bind(now_timestamp())
                .execute(pool)
                .await
                .map_err(db)?;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_notification_is_sending_until_sent_and_then_stays_sent() {
        let store = SqlStore::connect("sqlite::memory:").await.unwrap();
        let key = NotificationKey {
            pipeline: "notify",
            booking_key: "shopify:shop:1:1",
            status: "delivered",
        };
        assert_eq!(store.notification(key).await.unwrap(), None);
        assert_eq!(store.begin_notification(key).await.unwrap(), None);
        assert_eq!(
            store.begin_notification(key).await.unwrap(),
            Some(NotificationState::Sending)
        );
        store.mark_notified(key).await.unwrap();
        assert_eq!(
            store.begin_notification(key).await.unwrap(),
            Some(NotificationState::Sent)
        );
        let other = NotificationKey {
            status: "out_for_delivery",
            ..key
        };
        assert_eq!(store.notification(other).await.unwrap(), None);
    }
}
