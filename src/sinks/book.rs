//! The `book` step's side effect: an idempotent courier booking (DESIGN §8).
//!
//! The booking key is reserved in the store before the courier is called,
//! marked `sent` just before the request goes out and `booked` with the
//! result. A replay returns the stored result without calling the courier; a
//! key found `sent` (crash mid-request, or an ambiguous answer) goes to
//! review and is never blindly sent again.
//!
//! ```yaml
//! - book: {}
//! ```

use crate::config::{Account, Config};
use crate::connector::{CourierError, Engine};
use crate::model::{BookingKey, BookingResult, ErrorClass, Shipment};
use crate::store::{Reservation, Store};
use crate::telemetry::Metrics;
use crate::telemetry::events::{CourierRequestCompleted, DuplicateSuppressed};
use prometheus_client::metrics::gauge::Gauge;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// How long a reservation is held before another instance may take it over.
/// It only guards the moment between reserving a key and marking it `sent`
/// (a sent key is never taken over: it goes to review), so it is short: a
/// key left reserved by an instance that died is free again well inside the
/// pipeline's retry budget.
pub const RESERVATION_LEASE: Duration = Duration::from_secs(20);

/// In-flight slots of one pipeline: they bound its concurrent requests at
/// couriers (`max_in_flight`).
pub struct Slots {
    pub permits: Semaphore,
    /// `waybill_in_flight_messages{pipeline}`.
    pub gauge: Gauge,
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

impl From<CourierError> for BookError {
    fn from(e: CourierError) -> Self {
        BookError {
            class: e.class,
            message: e.message,
            retry_after: e.retry_after,
            request: e.request,
            response: e.response,
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
        let reservation = self
            .store
            .reserve_booking(
                &key,
                &self.owner,
                RESERVATION_LEASE,
                message_id,
                &shipment.reference,
            )
            .await
            .map_err(|e| BookError::new(ErrorClass::Retryable, format!("store: {e}")))?;
        match reservation {
            Reservation::Acquired => {}
            Reservation::Booked(result) => {
                DuplicateSuppressed {
                    kind: "booking",
                    source,
                    key: &key_text,
                }
                .emit(&self.metrics);
                return Ok(Booked {
                    result,
                    replayed: true,
                });
            }
            Reservation::Sent => {
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

        let shipment_json = serde_json::to_value(shipment)
            .map_err(|e| BookError::new(ErrorClass::Permanent, e.to_string()))?;
        let request = match self.engine.prepare_book(connector, account, &shipment_json) {
            Ok(request) => request,
            Err(e) => {
                self.release(&key).await;
                return Err(e.into());
            }
        };
        // A slot is taken before the key is marked sent (a sent key never
        // waits for one) and given back as soon as the courier answered.
        let Ok(slot) = slots.permits.acquire().await else {
            self.release(&key).await;
            return Err(BookError::new(
                ErrorClass::Retryable,
                "the pipeline is closing",
            ));
        };
        slots.gauge.inc();
        let sent = self.store.mark_sent(&key, &self.owner).await;
        let started = Instant::now();
        let outcome = match sent {
            Ok(()) => Some(self.engine.book(connector, account, request).await),
            Err(_) => None,
        };
        let elapsed = started.elapsed();
        slots.gauge.dec();
        drop(slot);
        let Some(outcome) = outcome else {
            let problem = sent.err().map(|e| e.to_string()).unwrap_or_default();
            return Err(BookError::new(
                ErrorClass::Retryable,
                format!("store: {problem}"),
            ));
        };
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
                // The courier booked: keep retrying the record until it sticks,
                // or the key stays `sent` and a restart sends it to review.
                self.store
                    .mark_booked(&key, &result, message_id)
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
