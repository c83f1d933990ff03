//! The `book` step's side effect: an idempotent courier booking (DESIGN §8).
//!
//! Just before the request goes out, the booking key is reserved in the
//! store and marked `sent` (one transaction); it is marked `booked` with the
//! result. A replay returns the stored result without calling the courier; a
//! key found `sent` whose owner's lease has lapsed (crash mid-request) or
//! whose answer was ambiguous goes to review and is never blindly sent again.
//!
//! ```yaml
//! - book: {}
//! ```

use crate::config::{Account, Config};
use crate::connector::Engine;
use crate::model::{BookingKey, BookingResult, ErrorClass, Failure, Shipment};
use crate::store::{BookingStatus, Reservation, Store, StoreError};
use crate::telemetry::Metrics;
use crate::telemetry::events::{CourierRequestCompleted, DuplicateSuppressed, RateLimitWaited};
use backon::{ExponentialBuilder, Retryable};
use prometheus_client::metrics::gauge::Gauge;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{Semaphore, SemaphorePermit};

/// How long a claim outlives the `book` operation's timeout. While it lasts,
/// another instance meeting the key waits (its owner's answer may still
/// come); after it, a key still `sent` goes to review. Short, so that a key
/// whose instance died is decided well inside the pipeline's retry budget.
pub const RESERVATION_LEASE: Duration = Duration::from_secs(20);

/// Retries of recording a booking the courier made: about 11 s in all,
/// well inside the claim's lease, so no other instance takes the key meanwhile.
fn record_backoff() -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(2))
        .with_max_times(8)
        .with_jitter()
}

/// In-flight slots of one pipeline: they bound its concurrent requests at
/// couriers (`max_in_flight`).
pub struct Slots {
    pub permits: Semaphore,
    /// `waybill_in_flight_messages{pipeline}`.
    pub gauge: Gauge,
}

/// A held in-flight slot; leaving it gives the slot back.
struct InFlight<'a> {
    _permit: SemaphorePermit<'a>,
    gauge: &'a Gauge,
}

impl<'a> InFlight<'a> {
    /// Waits for a slot; `None` once the pipeline closed its slots.
    async fn enter(slots: &'a Slots) -> Option<InFlight<'a>> {
        let permit = slots.permits.acquire().await.ok()?;
        slots.gauge.inc();
        Some(InFlight {
            _permit: permit,
            gauge: &slots.gauge,
        })
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

/// Why a booking did not happen.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{class}: {message}")]
pub struct BookError {
    pub class: ErrorClass,
    pub message: String,
    pub retry_after: Option<Duration>,
    pub request: Option<serde_json::Value>,
    pub response: Option<String>,
}

impl BookError {
    fn new(class: ErrorClass, message: impl Into<String>) -> Self {
        BookError {
            class,
            message: message.into(),
            retry_after: None,
            request: None,
            response: None,
        }
    }
}

impl From<Failure> for BookError {
    fn from(e: Failure) -> Self {
        let exchange = e.exchange.map(|e| *e).unwrap_or_default();
        BookError {
            class: e.class,
            message: e.message,
            retry_after: e.retry_after,
            request: exchange.request,
            response: exchange.response,
        }
    }
}

/// The booking outcome the pipeline acts on.
#[derive(Debug, Clone, PartialEq)]
pub struct Booked {
    pub result: BookingResult,
    /// True when the key was booked before and the courier was not called.
    pub replayed: bool,
}

/// Books shipments idempotently.
pub struct Booker {
    pub config: Arc<Config>,
    pub store: Arc<dyn Store>,
    pub engine: Engine,
    pub metrics: Arc<Metrics>,
    /// Owner of reservations made by this instance.
    pub owner: String,
}

impl Booker {
    /// Books `shipment` for store account `store_account` of `source` on
    /// courier account `route`, at most once per booking key.
    pub async fn book(
        &self,
        source: &str,
        store_account: &str,
        shipment: &Shipment,
        route: &str,
        message_id: &str,
        slots: &Slots,
    ) -> Result<Booked, BookError> {
        let key = BookingKey {
            source: source.to_string(),
            account: store_account.to_string(),
            order_id: shipment.order_id.clone(),
            sequence: shipment.sequence,
        };
        let key_text = key.to_string();
        let (account, connector) = self.courier(route)?;
        let shipment_json = serde_json::to_value(shipment)
            .map_err(|e| BookError::new(ErrorClass::Permanent, e.to_string()))?;
        let request = self
            .engine
            .prepare_book(connector, account, &shipment_json)?;
        // The lease must outlast the request: while it runs, another
        // instance that meets this key must wait, not send it to review.
        let lease = RESERVATION_LEASE
            + connector
                .operation("book")
                .map_or(Duration::ZERO, |op| op.timeout);
        let replayed = |result: BookingResult| {
            DuplicateSuppressed {
                kind: "booking",
                source,
                key: &key_text,
            }
            .emit(&self.metrics);
            Ok(Booked {
                result,
                replayed: true,
            })
        };
        // A rate-limited account's slots are for requests: a replay of a key
        // already booked is answered from the store without one. The claim
        // below still decides every other case.
        if connector.rate_limit.is_some()
            && let Some(booking) = self
                .store
                .booking(&key)
                .await
                .map_err(|e| BookError::new(ErrorClass::Retryable, format!("store: {e}")))?
            && booking.status == BookingStatus::Booked
            && let Some(result) = booking.result
        {
            return replayed(result);
        }
        // The slot comes before the claim, so a key is never `sent` while it
        // waits for one, and goes back as soon as the courier answered.
        let Some(in_flight) = InFlight::enter(slots).await else {
            return Err(BookError::new(
                ErrorClass::Retryable,
                "the pipeline is closing",
            ));
        };
        // Paced before the claim too: a key is never `sent` while it waits.
        let wait = self.engine.pace(connector, account);
        if !wait.is_zero() {
            RateLimitWaited {
                courier: &connector.name,
                account: &account.name,
                wait,
            }
            .emit(&self.metrics);
            tokio::time::sleep(wait).await;
        }
        let reservation = self
            .store
            .claim_booking(&key, &self.owner, lease, message_id, &shipment.reference)
            .await
            .map_err(|e| BookError::new(ErrorClass::Retryable, format!("store: {e}")))?;
        match reservation {
            Reservation::Acquired => {}
            Reservation::Booked(result) => return replayed(result),
            Reservation::Sent => {
                drop(in_flight);
                let reason = "a booking request was sent before and its outcome was never recorded; \
                              check the courier portal, then run `waybill bookings resolve` with --tracking or --release";
                self.store
                    .mark_review(&key, reason, message_id)
                    .await
                    .map_err(|e| BookError::new(ErrorClass::Retryable, format!("store: {e}")))?;
                return Err(BookError::new(
                    ErrorClass::NeedsReview,
                    format!("booking {key_text}: {reason}"),
                ));
            }
            Reservation::Review(reason) => {
                return Err(BookError::new(
                    ErrorClass::NeedsReview,
                    format!("booking {key_text} is waiting for review: {reason}"),
                ));
            }
            Reservation::Busy { owner } => {
                return Err(BookError::new(
                    ErrorClass::Retryable,
                    format!("booking {key_text} is being worked on by {owner}"),
                ));
            }
        }
        let started = Instant::now();
        let outcome = self.engine.book(connector, account, request).await;
        let elapsed = started.elapsed();
        drop(in_flight);
        match outcome {
            Ok(result) => {
                CourierRequestCompleted {
                    courier: &connector.name,
                    account: &account.name,
                    operation: "book",
                    outcome: "success",
                    elapsed,
                    detail: "",
                }
                .emit(&self.metrics);
                // The courier booked: a store that is briefly unreachable
                // must not turn a booking into review work, so recording is
                // retried for a while. If it never sticks the key stays
                // `sent`, and the dead letter says what was booked.
                let record = || self.store.mark_booked(&key, &result, message_id);
                record
                    .retry(record_backoff())
                    .when(|e| matches!(e, StoreError::Database(_)))
                    .await
                    .map_err(|e| {
                        BookError::new(
                            ErrorClass::NeedsReview,
                            format!("booked as {} but not recorded: {e}", result.tracking_number),
                        )
                    })?;
                Ok(Booked {
                    result,
                    replayed: false,
                })
            }
            Err(error) => {
                CourierRequestCompleted {
                    courier: &connector.name,
                    account: &account.name,
                    operation: "book",
                    outcome: error.class.as_str(),
                    elapsed,
                    detail: &error.message,
                }
                .emit(&self.metrics);
                match error.class {
                    // The courier certainly did not act: the key may be sent again.
                    ErrorClass::Retryable | ErrorClass::Permanent => self.release(&key).await,
                    ErrorClass::Ambiguous | ErrorClass::NeedsReview => {
                        let reason = format!(
                            "courier outcome unknown ({}): {}",
                            error.class, error.message
                        );
                        if let Err(e) = self.store.mark_review(&key, &reason, message_id).await {
                            tracing::error!(key = %key_text, error = %e, "could not mark booking for review");
                        }
                    }
                }
                let mut error = BookError::from(error);
                if error.class == ErrorClass::Ambiguous {
                    error.class = ErrorClass::NeedsReview;
                }
                Err(error)
            }
        }
    }

    fn courier(&self, route: &str) -> Result<(&Account, &crate::connector::Connector), BookError> {
        let account = self.config.accounts.get(route).ok_or_else(|| {
            BookError::new(
                ErrorClass::Permanent,
                format!("courier account `{route}` is not configured"),
            )
        })?;
        let connector = self
            .config
            .connectors
            .get(&account.connector)
            .ok_or_else(|| {
                BookError::new(
                    ErrorClass::Permanent,
                    format!(
                        "connector `{}` of account `{route}` is not loaded",
                        account.connector
                    ),
                )
            })?;
        Ok((account, connector))
    }

    async fn release(&self, key: &BookingKey) {
        if let Err(e) = self.store.release_reservation(key, &self.owner).await {
            tracing::warn!(key = %key, error = %e, "could not release booking reservation; it frees itself when the lease ends");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connector::RateLimit;
    use crate::connector::sandbox::{Sandbox, tests::serve};
    use crate::store::sql::SqlStore;
    use crate::store::{AuditEntry, Booking};
    use async_trait::async_trait;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// The SQLite store, whose `mark_booked` fails while `outage` lasts.
    struct Flaky {
        inner: SqlStore,
        outage: AtomicU32,
    }

    #[async_trait]
    impl Store for Flaky {
        async fn delivery_seen(&self, s: &str, a: &str, d: &str) -> Result<bool, StoreError> {
            self.inner.delivery_seen(s, a, d).await
        }
        async fn remember_delivery(&self, s: &str, a: &str, d: &str) -> Result<bool, StoreError> {
            self.inner.remember_delivery(s, a, d).await
        }
        async fn claim_booking(
            &self,
            key: &BookingKey,
            owner: &str,
            lease: Duration,
            message_id: &str,
            reference: &str,
        ) -> Result<Reservation, StoreError> {
            self.inner
                .claim_booking(key, owner, lease, message_id, reference)
                .await
        }
        async fn mark_booked(
            &self,
            key: &BookingKey,
            result: &BookingResult,
            message_id: &str,
        ) -> Result<(), StoreError> {
            let left = self.outage.load(Ordering::SeqCst);
            if left > 0 {
                self.outage.store(left - 1, Ordering::SeqCst);
                return Err(StoreError::Database("connection refused".into()));
            }
            self.inner.mark_booked(key, result, message_id).await
        }
        async fn mark_review(&self, k: &BookingKey, r: &str, m: &str) -> Result<(), StoreError> {
            self.inner.mark_review(k, r, m).await
        }
        async fn release_reservation(&self, k: &BookingKey, o: &str) -> Result<(), StoreError> {
            self.inner.release_reservation(k, o).await
        }
        async fn resolve_booked(
            &self,
            k: &BookingKey,
            t: &str,
            c: &str,
            a: &str,
        ) -> Result<(), StoreError> {
            self.inner.resolve_booked(k, t, c, a).await
        }
        async fn resolve_release(&self, k: &BookingKey) -> Result<(), StoreError> {
            self.inner.resolve_release(k).await
        }
        async fn booking(&self, k: &BookingKey) -> Result<Option<Booking>, StoreError> {
            self.inner.booking(k).await
        }
        async fn bookings(
            &self,
            s: Option<BookingStatus>,
            l: usize,
        ) -> Result<Vec<Booking>, StoreError> {
            self.inner.bookings(s, l).await
        }
        async fn audit(&self, k: &BookingKey) -> Result<Vec<AuditEntry>, StoreError> {
            self.inner.audit(k).await
        }
        async fn expire_deliveries(&self, ttl: Duration) -> Result<u64, StoreError> {
            self.inner.expire_deliveries(ttl).await
        }
        async fn check(&self) -> Result<(), StoreError> {
            self.inner.check().await
        }
    }

    async fn booker(outage: u32) -> (Booker, Arc<Flaky>, Sandbox) {
        let sandbox = Sandbox::new();
        let self_base = serve(&sandbox).await;
        let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let config = crate::config::load(&repo.join("waybill.yaml")).unwrap();
        let store = Arc::new(Flaky {
            inner: SqlStore::connect("sqlite::memory:").await.unwrap(),
            outage: AtomicU32::new(outage),
        });
        let booker = Booker {
            config: Arc::new(config),
            store: store.clone(),
            engine: Engine::new(Engine::client().unwrap(), self_base),
            metrics: Arc::new(Metrics::default()),
            owner: "test".into(),
        };
        (booker, store, sandbox)
    }

    fn shipment() -> Shipment {
        serde_json::from_value(serde_json::json!({
            "order_id": "820982911946154508",
            "reference": "#1001",
            "recipient": { "name": "Ayesha", "phone": "03001234567", "address1": "1 Main", "city": "Karachi" },
            "payment": "cod",
            "cod_amount": "1500.00",
            "currency": "PKR",
            "weight_grams": 500,
            "notes": null
        }))
        .unwrap()
    }

    fn key() -> BookingKey {
        BookingKey {
            source: "shopify".into(),
            account: "shopify-main".into(),
            order_id: "820982911946154508".into(),
            sequence: 0,
        }
    }

    /// Books the sample shipment of one order on the shipped courier account.
    async fn book(booker: &Booker) -> Result<Booked, BookError> {
        book_order(booker, shipment()).await
    }

    async fn book_order(booker: &Booker, shipment: Shipment) -> Result<Booked, BookError> {
        let slots = Slots {
            permits: Semaphore::new(1),
            gauge: Gauge::default(),
        };
        booker
            .book(
                "shopify",
                "shopify-main",
                &shipment,
                "courier-main",
                "m1",
                &slots,
            )
            .await
    }

    /// The sample shipment as order `n`, with a reference of its own.
    fn order(n: u32) -> Shipment {
        let mut shipment = shipment();
        shipment.order_id = format!("82098291194615450{n}");
        shipment.reference = format!("#100{n}");
        shipment
    }

    /// Limits the shipped courier account to `requests` every `per`.
    fn limit(booker: &mut Booker, requests: u32, per: Duration) -> String {
        let config = Arc::get_mut(&mut booker.config).expect("the only handle");
        let courier = config.accounts["courier-main"].connector.clone();
        let connector = config.connectors.get_mut(&courier).expect("connector");
        Arc::get_mut(connector).expect("the only handle").rate_limit =
            Some(RateLimit { requests, per });
        courier
    }

    fn rate_limit_waits(booker: &Booker, courier: String) -> u64 {
        booker
            .metrics
            .rate_limit_waits
            .get_or_create(&crate::telemetry::CourierAccountLabels {
                courier,
                account: "courier-main".into(),
            })
            .get()
    }

    #[tokio::test]
    async fn requests_beyond_the_rate_limit_wait_for_their_slot() {
        let (mut booker, _store, sandbox) = booker(0).await;
        let courier = limit(&mut booker, 2, Duration::from_millis(600));
        let started = Instant::now();
        for n in 1..=3 {
            book_order(&booker, order(n)).await.unwrap();
        }
        assert!(
            started.elapsed() >= Duration::from_millis(290),
            "the third request waited for its slot: {:?}",
            started.elapsed()
        );
        assert_eq!(sandbox.bookings(), 3);
        assert_eq!(rate_limit_waits(&booker, courier), 1);
    }

    #[tokio::test]
    async fn replays_of_a_booked_key_take_no_rate_limit_slot() {
        let (mut booker, _store, sandbox) = booker(0).await;
        let courier = limit(&mut booker, 1, Duration::from_secs(60));
        let first = book(&booker).await.unwrap();
        let started = Instant::now();
        for _ in 0..2 {
            let again = book(&booker).await.unwrap();
            assert!(again.replayed);
            assert_eq!(again.result.tracking_number, first.result.tracking_number);
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "replays waited for a slot: {:?}",
            started.elapsed()
        );
        assert_eq!(sandbox.bookings(), 1);
        assert_eq!(rate_limit_waits(&booker, courier), 0);
    }

    #[tokio::test]
    async fn a_booking_is_recorded_once_the_store_is_back() {
        let (booker, store, sandbox) = booker(3).await;
        let booked = book(&booker).await.unwrap();
        assert_eq!(sandbox.bookings(), 1);
        let row = store.booking(&key()).await.unwrap().unwrap();
        assert_eq!(row.status, BookingStatus::Booked);
        assert_eq!(
            row.result.unwrap().tracking_number,
            booked.result.tracking_number
        );
    }

    #[tokio::test]
    async fn a_store_that_stays_down_leaves_the_key_sent_and_says_what_was_booked() {
        let (booker, store, sandbox) = booker(u32::MAX).await;
        let error = book(&booker).await.err().unwrap();
        assert_eq!(error.class, ErrorClass::NeedsReview);
        assert!(
            error.message.contains("booked as SBX-"),
            "{}",
            error.message
        );
        assert_eq!(sandbox.bookings(), 1);
        let row = store.inner.booking(&key()).await.unwrap().unwrap();
        assert_eq!(row.status, BookingStatus::Sent);
    }
}
