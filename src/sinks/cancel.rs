//! Cancelling a booking at its courier: the connector's `cancel`
//! operation, sent once per store cancellation of a booked order (see
//! `runtime::changes` for when). Its templates see `tracking_number`,
//! `reference`, `booking` (the book operation's extracted values) and
//! `shipment` (the canonical shipment booked).
//!
//! ```yaml
//! operations:
//!   cancel:
//!     request: { method: PUT, path: /order/v1/cancel-order, body: mappings/postex/cancel.yaml }
//!     success: "response.status == 200 and body.statusCode == '200'"
//! ```

use super::book::Booker;
use crate::connector::Engine;
use crate::model::{BookingResult, Failure};
use crate::telemetry::events::CourierRequestCompleted;
use serde_json::{Map, Value};
use std::time::Instant;

/// The operation a connector declares to cancel.
pub const OPERATION: &str = "cancel";

/// One booking to cancel.
pub struct Cancellation<'a> {
    pub booking: &'a BookingResult,
    pub reference: &'a str,
    /// The canonical shipment as booked; `null` when it was not kept.
    pub shipment: &'a Value,
}

impl Booker {
    /// Whether courier account `courier_account` can cancel a booking.
    pub fn can_cancel(&self, courier_account: &str) -> bool {
        self.config
            .accounts
            .get(courier_account)
            .and_then(|account| self.config.connectors.get(&account.connector))
            .is_some_and(|connector| connector.has_operation(OPERATION))
    }

    /// Asks the booking's courier to cancel it. The failure is the
    /// connector's, classified as for any operation: only a retryable one
    /// means the courier certainly did not act.
    pub async fn cancel(&self, cancellation: &Cancellation<'_>) -> Result<(), Failure> {
        let booking = cancellation.booking;
        let account = self.config.accounts.get(&booking.account).ok_or_else(|| {
            Failure::permanent(
                OPERATION,
                format!("courier account `{}` is not configured", booking.account),
            )
        })?;
        let connector = self
            .config
            .connectors
            .get(&account.connector)
            .ok_or_else(|| {
                Failure::permanent(
                    OPERATION,
                    format!("connector `{}` is not loaded", account.connector),
                )
            })?;
        let mut vars = Map::new();
        vars.insert(
            "tracking_number".into(),
            Value::String(booking.tracking_number.clone()),
        );
        vars.insert(
            "reference".into(),
            Value::String(cancellation.reference.to_string()),
        );
        vars.insert(
            "booking".into(),
            Value::Object(booking.extracted.clone().into_iter().collect()),
        );
        vars.insert("shipment".into(), cancellation.shipment.clone());
        let ctx = Engine::context(account, vars);
        let request = self.engine.prepare(connector, OPERATION, account, &ctx)?;
        let wait = self.engine.pace(connector, account);
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        let started = Instant::now();
        let outcome = self
            .engine
            .execute(connector, OPERATION, account, request)
            .await;
        let (label, detail) = match &outcome {
            Ok(_) => ("success", ""),
            Err(error) => (error.class.as_str(), error.message.as_str()),
        };
        CourierRequestCompleted {
            courier: &connector.name,
            account: &account.name,
            operation: OPERATION,
            outcome: label,
            elapsed: started.elapsed(),
            detail,
        }
        .emit(&self.metrics);
        outcome.map(|_| ())
    }
}
