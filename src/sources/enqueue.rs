//! Putting a verified webhook event on the bus at most once per delivery id
//! (DESIGN §8), one interface over the two ways the backends allow:
//!
//! - [`Embedded`]: the bus shares its database with the store, so the append
//!   and the delivery id are one transaction and a concurrent redelivery
//!   cannot be enqueued twice;
//! - [`Separate`]: any [`Bus`] beside any [`Store`]: the id is looked up
//!   first and recorded once the event is durable.

use crate::bus::embedded::EmbeddedBus;
use crate::bus::{Bus, BusError};
use crate::model::Message;
use crate::store::{Store, StoreError};
use async_trait::async_trait;
use std::sync::Arc;
use std::time::Duration;

/// How long a webhook may wait for the bus before answering 503: well
/// inside the stores' 5 s delivery timeout, so they retry.
pub const ENQUEUE_TIMEOUT: Duration = Duration::from_secs(2);

/// What became of an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enqueued {
    /// Durably on the bus.
    Appended,
    /// Its delivery id was seen before: nothing was appended.
    Duplicate,
}

/// The store delivery an event came in, for deduplication.
#[derive(Debug, Clone, Copy)]
pub struct DeliveryId<'a> {
    pub source: &'a str,
    pub account: &'a str,
    pub id: &'a str,
}

/// Why an event could not be enqueued: the store should retry.
#[derive(Debug, thiserror::Error)]
pub enum EnqueueError {
    #[error("store unavailable: {0}")]
    Store(#[source] StoreError),
    #[error("bus unavailable: {0}")]
    Bus(#[source] BusError),
    #[error("bus did not take the event in time")]
    Timeout,
}

/// Waits at most [`ENQUEUE_TIMEOUT`] for the bus to take an event.
async fn in_time<T>(append: impl Future<Output = Result<T, BusError>>) -> Result<T, EnqueueError> {
    match tokio::time::timeout(ENQUEUE_TIMEOUT, append).await {
        Ok(taken) => taken.map_err(EnqueueError::Bus),
        Err(_) => Err(EnqueueError::Timeout),
    }
}

/// Enqueues webhook events once per delivery id.
#[async_trait]
pub trait Enqueue: Send + Sync {
    async fn enqueue(
        &self,
        topic: &str,
        message: Message,
        delivery: DeliveryId<'_>,
    ) -> Result<Enqueued, EnqueueError>;
}

/// The embedded bus and store in one database.
pub struct Embedded(pub EmbeddedBus);

#[async_trait]
impl Enqueue for Embedded {
    async fn enqueue(
        &self,
        topic: &str,
        message: Message,
        delivery: DeliveryId<'_>,
    ) -> Result<Enqueued, EnqueueError> {
        let append = self.0.publish_once(
            topic,
            message,
            delivery.source,
            delivery.account,
            delivery.id,
        );
        match in_time(append).await? {
            Some(_) => Ok(Enqueued::Appended),
            None => Ok(Enqueued::Duplicate),
        }
    }
}

/// A bus and a store apart (Kafka and PostgreSQL, or the embedded bus beside
/// PostgreSQL).
pub struct Separate {
    pub bus: Arc<dyn Bus>,
    pub store: Arc<dyn Store>,
}

#[async_trait]
impl Enqueue for Separate {
    async fn enqueue(
        &self,
        topic: &str,
        message: Message,
        delivery: DeliveryId<'_>,
    ) -> Result<Enqueued, EnqueueError> {
        let DeliveryId {
            source,
            account,
            id,
        } = delivery;
        if self
            .store
            .delivery_seen(source, account, id)
            .await
            .map_err(EnqueueError::Store)?
        {
            return Ok(Enqueued::Duplicate);
        }
        in_time(self.bus.publish(topic, message)).await?;
        // The event is durable; a failure to remember the delivery id only
        // risks a duplicate event, which booking idempotency absorbs.
        if let Err(e) = self.store.remember_delivery(source, account, id).await {
            tracing::warn!(source, account, error = %e, "could not record webhook delivery id");
        }
        Ok(Enqueued::Appended)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sql::SqlStore;

    fn message() -> Message {
        Message {
            key: "shop-main:7".into(),
            headers: Default::default(),
            payload: b"{}".to_vec(),
        }
    }

    const DELIVERY: DeliveryId<'static> = DeliveryId {
        source: "shop",
        account: "shop-main",
        id: "d-1",
    };

    /// Both ways answer a redelivery as a duplicate and append it once.
    async fn enqueues_once(enqueue: &dyn Enqueue, bus: &dyn Bus) {
        for expected in [Enqueued::Appended, Enqueued::Duplicate] {
            let answer = enqueue
                .enqueue("orders.shop", message(), DELIVERY)
                .await
                .expect("enqueued");
            assert_eq!(answer, expected);
        }
        let read = bus.read("orders.shop", 0, 10).await.expect("read");
        assert_eq!(read.len(), 1);
    }

    #[tokio::test]
    async fn the_embedded_way_enqueues_a_delivery_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (bus, _store) = crate::bus::embedded::open_embedded(dir.path())
            .await
            .expect("open");
        enqueues_once(&Embedded(bus.clone()), &bus).await;
        bus.close().await;
    }

    #[tokio::test]
    async fn the_separate_way_enqueues_a_delivery_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (bus, _) = crate::bus::embedded::open_embedded(dir.path())
            .await
            .expect("open");
        let store = SqlStore::connect("sqlite::memory:").await.expect("store");
        let separate = Separate {
            bus: Arc::new(bus.clone()),
            store: Arc::new(store),
        };
        enqueues_once(&separate, &bus).await;
        bus.close().await;
    }
}
