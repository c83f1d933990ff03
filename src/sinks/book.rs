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
use crate::connector::{Connector, Engine, PreparedRequest};
use crate::model::{BookingKey, BookingResult, ErrorClass, Failure, Shipment};
use crate::store::{BookingStatus, Claim, Reservation, Store, StoreError};
use crate::telemetry::Metrics;
use crate::telemetry::events::{CourierRequestCompleted, DuplicateSuppressed, RateLimitWaited};
use backon::{ExponentialBuilder, Retryable};
use prometheus_client::metrics::gauge::Gauge;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{Semaphore, SemaphorePermit};

/// The step every failure of a booking is attributed to.
const STAGE: &str = "book";

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
pub(crate) struct InFlight<'a> {
    _permit: SemaphorePermit<'a>,
    gauge: &'a Gauge,
}

impl<'a> InFlight<'a> {
    /// Waits for a slot; `None` once the pipeline closed its slots.
    pub(crate) async fn enter(slots: &'a Slots) -> Option<InFlight<'a>> {
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

/// A store error before anything was sent: trying again later is safe.
fn store_failure(e: StoreError) -> Failure {
    Failure::new(STAGE, ErrorClass::Retryable, format!("store: {e}"))
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

/// One shipment to book, with the courier account it goes to.
struct Order<'a> {
    source: &'a str,
    key: BookingKey,
    key_text: String,
    reference: &'a str,
    message_id: &'a str,
    account: &'a Account,
    connector: &'a Connector,
    /// The claim's lease: it must outlast the request, so that while the
    /// request runs another instance meeting this key waits instead of
    /// sending it to review.
    lease: Duration,
}

/// What a claim let the caller do.
enum Claimed<'s> {
    /// Send the request, in this slot.
    Send(InFlight<'s>),
    /// Nothing: the key was booked already.
    Booked(BookingResult),
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
    ) -> Result<Booked, Failure> {
        let (account, connector) = self
            .courier(route)
            .map_err(|why| Failure::permanent(STAGE, why))?;
        let key = BookingKey {
            source: source.to_string(),
            account: store_account.to_string(),
            order_id: shipment.order_id.clone(),
            sequence: shipment.sequence,
        };
        let order = Order {
            source,
            key_text: key.to_string(),
            key,
            reference: &shipment.reference,
            message_id,
            account,
            connector,
            lease: RESERVATION_LEASE
                + connector
                    .operation("book")
                    .map_or(Duration::ZERO, |op| op.timeout),
        };
        let shipment_json =
            serde_json::to_value(shipment).map_err(|e| Failure::permanent(STAGE, e.to_string()))?;
        let request = self
            .engine
            .prepare_book(connector, account, &shipment_json)?;
        if let Some(result) = self.replay(&order).await? {
            return Ok(self.replayed(&order, result));
        }
        let in_flight = self.enter(&order, slots).await?;
        match self.claim(&order, in_flight).await? {
            Claimed::Send(in_flight) => self.send_and_record(&order, request, in_flight).await,
            Claimed::Booked(result) => Ok(self.replayed(&order, result)),
        }
    }

    /// A rate-limited account's slots are for requests: a replay of a key
    /// already booked is answered from the store without one. The claim
    /// still decides every other case.
    async fn replay(&self, order: &Order<'_>) -> Result<Option<BookingResult>, Failure> {
        if order.connector.rate_limit.is_none() {
            return Ok(None);
        }
        let booking = self
            .store
            .booking(&order.key)
            .await
            .map_err(store_failure)?;
        Ok(booking
            .filter(|booking| booking.status == BookingStatus::Booked)
            .and_then(|booking| booking.result))
    }

    fn replayed(&self, order: &Order<'_>, result: BookingResult) -> Booked {
        DuplicateSuppressed {
            kind: "booking",
            source: order.source,
            key: &order.key_text,
        }
        .emit(&self.metrics);
        Booked {
            result,
            replayed: true,
        }
    }

    /// Takes an in-flight slot, then waits for the account's rate limit.
    /// Both come before the claim, so a key is never `sent` while it waits,
    /// and the slot goes back as soon as the courier answered.
    async fn enter<'s>(
        &self,
        order: &Order<'_>,
        slots: &'s Slots,
    ) -> Result<InFlight<'s>, Failure> {
        let Some(in_flight) = InFlight::enter(slots).await else {
            return Err(Failure::new(
                STAGE,
                ErrorClass::Retryable,
                "the pipeline is closing",
            ));
        };
        let wait = self.engine.pace(order.connector, order.account);
        if !wait.is_zero() {
            RateLimitWaited {
                courier: &order.connector.name,
                account: &order.account.name,
                wait,
            }
            .emit(&self.metrics);
            tokio::time::sleep(wait).await;
        }
        Ok(in_flight)
    }

    /// Claims the key for this instance; any answer but a fresh claim or a
    /// booking already made is a failure to retry or to review.
    async fn claim<'s>(
        &self,
        order: &Order<'_>,
        in_flight: InFlight<'s>,
    ) -> Result<Claimed<'s>, Failure> {
        let reservation = self
            .store
            .claim_booking(Claim {
                key: &order.key,
                owner: &self.owner,
                lease: order.lease,
                message_id: order.message_id,
                reference: order.reference,
            })
            .await
            .map_err(store_failure)?;
        let key = &order.key_text;
        match reservation {
            Reservation::Acquired => Ok(Claimed::Send(in_flight)),
            Reservation::Booked(result) => Ok(Claimed::Booked(result)),
            Reservation::Sent => {
                drop(in_flight);
                let reason = "a booking request was sent before and its outcome was never recorded; \
                              check the courier portal, then run `waybill bookings resolve` with --tracking or --release";
                self.store
                    .mark_review(&order.key, reason, order.message_id)
                    .await
                    .map_err(store_failure)?;
                Err(Failure::new(
                    STAGE,
                    ErrorClass::NeedsReview,
                    format!("booking {key}: {reason}"),
                ))
            }
            Reservation::Review(reason) => Err(Failure::new(
                STAGE,
                ErrorClass::NeedsReview,
                format!("booking {key} is waiting for review: {reason}"),
            )),
            Reservation::Busy { owner } => Err(Failure::new(
                STAGE,
                ErrorClass::Retryable,
                format!("booking {key} is being worked on by {owner}"),
            )),
        }
    }

    /// Sends the claimed request and records the courier's answer: the
    /// booking, or (see [`Booker::settle`]) what its failure means for the key.
    async fn send_and_record(
        &self,
        order: &Order<'_>,
        request: PreparedRequest,
        in_flight: InFlight<'_>,
    ) -> Result<Booked, Failure> {
        let started = Instant::now();
        let outcome = self
            .engine
            .book(order.connector, order.account, request)
            .await;
        let elapsed = started.elapsed();
        drop(in_flight);
        let (label, detail) = match &outcome {
            Ok(_) => ("success", ""),
            Err(error) => (error.class.as_str(), error.message.as_str()),
        };
        CourierRequestCompleted {
            courier: &order.connector.name,
            account: &order.account.name,
            operation: "book",
            outcome: label,
            elapsed,
            detail,
        }
        .emit(&self.metrics);
        match outcome {
            Ok(result) => {
                self.record(order, &result).await?;
                Ok(Booked {
                    result,
                    replayed: false,
                })
            }
            Err(error) => Err(self.settle(order, error).await),
        }
    }

    /// The courier booked: a store that is briefly unreachable must not turn
    /// a booking into review work, so recording is retried for a while, but
    /// only on errors that may pass. If it never sticks the key stays
    /// `sent`, and the failure says what was booked.
    async fn record(&self, order: &Order<'_>, result: &BookingResult) -> Result<(), Failure> {
        let record = || self.store.mark_booked(&order.key, result, order.message_id);
        record
            .retry(record_backoff())
            .when(StoreError::is_transient)
            .await
            .map_err(|e| {
                Failure::new(
                    STAGE,
                    ErrorClass::NeedsReview,
                    format!("booked as {} but not recorded: {e}", result.tracking_number),
                )
            })
    }

    /// What a courier's failure means for the key: given back when the
    /// courier certainly did not act, sent to review when it may have.
    async fn settle(&self, order: &Order<'_>, error: Failure) -> Failure {
        match error.class {
            ErrorClass::Retryable | ErrorClass::Permanent => self.release(&order.key).await,
            ErrorClass::Ambiguous | ErrorClass::NeedsReview => {
                let reason = format!(
                    "courier outcome unknown ({}): {}",
                    error.class, error.message
                );
                if let Err(e) = self
                    .store
                    .mark_review(&order.key, &reason, order.message_id)
                    .await
                {
                    tracing::error!(key = %order.key_text, error = %e, "could not mark booking for review");
                }
            }
        }
        let mut failure = error.at(STAGE);
        if failure.class == ErrorClass::Ambiguous {
            failure.class = ErrorClass::NeedsReview;
        }
        failure
    }

    /// The courier account `route` and its connector, or why there are none.
    fn courier(&self, route: &str) -> Result<(&Account, &Connector), String> {
        let account = self
            .config
            .accounts
            .get(route)
            .ok_or_else(|| format!("courier account `{route}` is not configured"))?;
        let connector = self
            .config
            .connectors
            .get(&account.connector)
            .ok_or_else(|| {
                format!(
                    "connector `{}` of account `{route}` is not loaded",
                    account.connector
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

    /// The SQLite store, whose `mark_booked` fails with `fault` while
    /// `outage` lasts.
    struct Flaky {
        inner: SqlStore,
        outage: AtomicU32,
        fault: Fault,
        /// Calls of `mark_booked`.
        records: AtomicU32,
    }

    #[derive(Clone, Copy)]
    enum Fault {
        ConnectionRefused,
        UniqueViolation,
    }

    impl Fault {
        async fn error(self) -> StoreError {
            StoreError::Database(match self {
                Fault::ConnectionRefused => {
                    sqlx::Error::Io(std::io::ErrorKind::ConnectionRefused.into())
                }
                Fault::UniqueViolation => unique_violation().await,
            })
        }
    }

    /// A real constraint violation, from a second insert of one primary key.
    async fn unique_violation() -> sqlx::Error {
        let pool = sqlx::SqlitePool::connect("sqlite::memory:").await.unwrap();
        sqlx::query("CREATE TABLE t (id INTEGER PRIMARY KEY)")
            .execute(&pool)
            .await
            .unwrap();
        let insert = || sqlx::query("INSERT INTO t VALUES (1)").execute(&pool);
        insert().await.unwrap();
        insert().await.unwrap_err()
    }

    #[async_trait]
    impl Store for Flaky {
        async fn delivery_seen(&self, s: &str, a: &str, d: &str) -> Result<bool, StoreError> {
            self.inner.delivery_seen(s, a, d).await
        }
        async fn remember_delivery(&self, s: &str, a: &str, d: &str) -> Result<bool, StoreError> {
            self.inner.remember_delivery(s, a, d).await
        }
        async fn claim_booking(&self, claim: Claim<'_>) -> Result<Reservation, StoreError> {
            self.inner.claim_booking(claim).await
        }
        async fn mark_booked(
            &self,
            key: &BookingKey,
            result: &BookingResult,
            message_id: &str,
        ) -> Result<(), StoreError> {
            self.records.fetch_add(1, Ordering::SeqCst);
            let left = self.outage.load(Ordering::SeqCst);
            if left > 0 {
                self.outage.store(left - 1, Ordering::SeqCst);
                return Err(self.fault.error().await);
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
            r: &BookingResult,
        ) -> Result<(), StoreError> {
            self.inner.resolve_booked(k, r).await
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
        failing_with(Fault::ConnectionRefused, outage).await
    }

    /// A booker whose store fails to record the first `outage` bookings with `fault`.
    async fn failing_with(fault: Fault, outage: u32) -> (Booker, Arc<Flaky>, Sandbox) {
        let sandbox = Sandbox::new();
        let self_base = serve(&sandbox).await;
        let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let config = crate::config::load(&repo.join("waybill.yaml")).unwrap();
        let store = Arc::new(Flaky {
            inner: SqlStore::connect("sqlite::memory:").await.unwrap(),
            outage: AtomicU32::new(outage),
            fault,
            records: AtomicU32::new(0),
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
    async fn book(booker: &Booker) -> Result<Booked, Failure> {
        book_order(booker, shipment()).await
    }

    async fn book_order(booker: &Booker, shipment: Shipment) -> Result<Booked, Failure> {
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
    /// A booker whose courier allows `requests` per `per`, and that courier.
    async fn rate_limited(requests: u32, per: Duration) -> (Booker, Sandbox, String) {
        let (mut booker, _store, sandbox) = booker(0).await;
        let config = Arc::get_mut(&mut booker.config).expect("the only handle");
        let courier = config.accounts["courier-main"].connector.clone();
        let connector = config.connectors.get_mut(&courier).expect("connector");
        Arc::get_mut(connector).expect("the only handle").rate_limit =
            Some(RateLimit { requests, per });
        (booker, sandbox, courier)
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
        let (booker, sandbox, courier) = rate_limited(2, Duration::from_millis(600)).await;
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
        let (booker, sandbox, courier) = rate_limited(1, Duration::from_secs(60)).await;
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
        booked_but_not_recorded(&error, &store, &sandbox).await;
    }

    /// The courier booked once, the store never took it: the key stays
    /// `sent` and the failure, for review, names the tracking number.
    async fn booked_but_not_recorded(error: &Failure, store: &Flaky, sandbox: &Sandbox) {
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

    #[tokio::test]
    async fn a_constraint_violation_recording_a_booking_is_not_retried() {
        let (booker, store, sandbox) = failing_with(Fault::UniqueViolation, u32::MAX).await;
        let error = book(&booker).await.err().unwrap();
        booked_but_not_recorded(&error, &store, &sandbox).await;
        assert_eq!(store.records.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_transient_error_recording_a_booking_is_retried() {
        let (booker, store, _sandbox) = failing_with(Fault::ConnectionRefused, 2).await;
        assert!(!book(&booker).await.unwrap().replayed);
        assert_eq!(store.records.load(Ordering::SeqCst), 3);
    }
}
