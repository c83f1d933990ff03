//! Payment checks: the scheduler asks couriers' `payment` operations
//! whether they paid the merchant the COD of collected shipments, and
//! records what they say in the COD ledger (`remitted`, or `short_paid`
//! when the amount falls short of expected less fees beyond
//! `cod.tolerance`).
//!
//! A collected shipment is first asked about `cod.payment_interval` after
//! its delivery, then every `payment_interval` until it is remitted. The
//! check is leased in the store (on PostgreSQL `FOR UPDATE SKIP LOCKED`),
//! so instances never ask about one shipment at once.
//!
//! ```yaml
//! operations:
//!   payment:
//!     request: { method: GET, path: "/order/v1/payment-status/{{ tracking_number }}" }
//!     success: "response.status == 200 and body.statusCode == '200'"
//!     extract: { settled: "$.dist.settle", remitted_at: "$.dist.settlementDate" }
//! cod: { tolerance: "1.00", payment_interval: 6h }   # in waybill.yaml
//! ```

use crate::clock::timestamp;
use crate::config::Config;
use crate::connector::{Account, Connector, Engine, OperationOutput};
use crate::model::Failure;
use crate::model::cod::{Remittance, parse_amount};
use crate::store::ShipmentStore;
use crate::store::cod::{PaymentLease, RemitOutcome};
use crate::store::shipments::ShipmentRecord;
use crate::telemetry::Metrics;
use crate::telemetry::events::{CodMeasured, CodRemitted, PaymentChecked};
use rust_decimal::Decimal;
use serde_json::{Map, Value};
use std::sync::Arc;
use time::OffsetDateTime;

/// The operation asked.
pub const OPERATION: &str = "payment";

/// Shipments asked about per round.
const BATCH: usize = 64;

/// Asks couriers about collected shipments' payments.
pub struct PaymentChecks {
    pub config: Arc<Config>,
    pub store: Arc<dyn ShipmentStore>,
    pub engine: Engine,
    pub metrics: Arc<Metrics>,
}

impl PaymentChecks {
    /// Whether any account's connector declares `payment`.
    pub fn has_work(config: &Config) -> bool {
        config.accounts.values().any(|account| {
            config
                .connectors
                .get(&account.connector)
                .is_some_and(|c| c.has_operation(OPERATION))
        })
    }

    /// One round: the shipments due, each asked about in turn until `stop`
    /// turns true (the rest are asked about after their next interval).
    pub async fn round(&self, stop: &tokio::sync::watch::Receiver<bool>) -> Result<(), String> {
        let now_at = OffsetDateTime::now_utc();
        let interval = self.config.cod.payment_interval;
        let now = timestamp(now_at);
        let collected_before = timestamp(now_at - interval);
        let next = timestamp(crate::clock::later(now_at, interval));
        let due = self
            .store
            .lease_payment_checks(PaymentLease {
                now: &now,
                collected_before: &collected_before,
                next_check_at: &next,
                limit: BATCH,
            })
            .await
            .map_err(|e| format!("store: {e}"))?;
        let mut recorded = false;
        for shipment in due {
            if *stop.borrow() {
                break;
            }
            recorded |= self.check(&shipment).await;
        }
        if recorded {
            // Money moved: the gauges show it now rather than at their next refresh.
            match self.store.cod_gauges().await {
                Ok(gauges) => CodMeasured { gauges: &gauges }.emit(&self.metrics),
                Err(e) => tracing::debug!(error = %e, "cannot sum COD"),
            }
        }
        Ok(())
    }

    /// Asks about one shipment; whether a remittance was recorded.
    async fn check(&self, shipment: &ShipmentRecord) -> bool {
        let Some(account) = self.config.accounts.get(&shipment.courier_account) else {
            return false;
        };
        let Some(connector) = self.config.connectors.get(&account.connector) else {
            return false;
        };
        if !connector.has_operation(OPERATION) {
            return false;
        }
        let wait = self.engine.pace(connector, account);
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        let asked = self.ask(connector, account, shipment).await;
        PaymentChecked {
            courier: &connector.name,
            account: &account.name,
            outcome: match &asked {
                Ok(Some(_)) => "settled",
                Ok(None) => "unsettled",
                Err(failure) => failure.class.as_str(),
            },
            detail: asked.as_ref().err().map_or("", |f| f.message.as_str()),
        }
        .emit(&self.metrics);
        let Ok(Some(remittance)) = asked else {
            return false;
        };
        let recorded = self
            .store
            .record_remittances(
                &[(shipment.key.clone(), remittance)],
                self.config.cod.tolerance,
                OPERATION,
            )
            .await;
        match recorded.as_deref() {
            Ok([RemitOutcome::Recorded { key, to, .. }]) => {
                CodRemitted {
                    courier: &connector.name,
                    key: &key.to_string(),
                    via: OPERATION,
                    state: to.as_str(),
                }
                .emit(&self.metrics);
                true
            }
            Ok(other) => {
                tracing::debug!(key = %shipment.key, outcome = ?other, "payment answer recorded nothing");
                false
            }
            Err(e) => {
                tracing::warn!(key = %shipment.key, error = %e, "cannot record a remittance; asking again next interval");
                false
            }
        }
    }

    /// The courier's answer; `None` while it has not paid.
    async fn ask(
        &self,
        connector: &Connector,
        account: &Account,
        shipment: &ShipmentRecord,
    ) -> Result<Option<Remittance>, Failure> {
        let mut vars = Map::new();
        let text = |v: &Option<String>| v.clone().map_or(Value::Null, Value::String);
        vars.insert(
            "tracking_number".into(),
            Value::String(shipment.tracking_number.clone()),
        );
        vars.insert("reference".into(), text(&shipment.reference));
        vars.insert("cod_amount".into(), text(&shipment.cod_amount));
        let ctx = Engine::context(account, vars);
        let request = self.engine.prepare(connector, OPERATION, account, &ctx)?;
        let output = self
            .engine
            .execute(connector, OPERATION, account, request)
            .await?;
        remittance_of(connector, &output)
    }
}

/// What a `payment` answer says: `None` when not settled.
pub fn remittance_of(
    connector: &Connector,
    output: &OperationOutput,
) -> Result<Option<Remittance>, Failure> {
    let Some(op) = connector.operation(OPERATION) else {
        return Ok(None);
    };
    let bad = |what: String| {
        Failure::permanent(
            "payment",
            format!("payment answer of connector `{}`: {what}", connector.name),
        )
    };
    // Every match of a field's path: one courier's `$..settle` is another's
    // `$.dist.settle`, and a path that may match several gives a list.
    let all = |name: &str| -> Vec<Value> {
        op.extract.get(name).map_or_else(Vec::new, |path| {
            path.query(&output.body)
                .all()
                .into_iter()
                .cloned()
                .collect()
        })
    };
    let first = |name: &str| all(name).into_iter().next();
    if !first("settled").as_ref().is_some_and(truthy) {
        return Ok(None);
    }
    let amount = |value: &Value, name: &str| -> Result<Option<Decimal>, Failure> {
        match value {
            Value::Null => Ok(None),
            Value::String(s) if s.trim().is_empty() => Ok(None),
            Value::String(s) => parse_amount(s)
                .map(Some)
                .map_err(|e| bad(format!("`{name}` {e}"))),
            Value::Number(n) => parse_amount(&n.to_string())
                .map(Some)
                .map_err(|e| bad(format!("`{name}` {e}"))),
            other => Err(bad(format!("`{name}` is not an amount: {other}"))),
        }
    };
    let remitted = match first("remitted") {
        Some(value) => amount(&value, "remitted")?,
        None => None,
    };
    let mut fees: Option<Decimal> = None;
    for value in all("fees") {
        if let Some(fee) = amount(&value, "fees")? {
            fees = Some(fees.unwrap_or(Decimal::ZERO).saturating_add(fee));
        }
    }
    let references: Vec<String> = all("reference").iter().filter_map(text_of).collect();
    Ok(Some(Remittance {
        amount: remitted,
        at: first("remitted_at").as_ref().and_then(text_of),
        reference: (!references.is_empty()).then(|| references.join(" / ")),
        fees,
    }))
}

/// Whether a `settled` value says yes.
fn truthy(value: &Value) -> bool {
    match value {
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_i64().is_some_and(|n| n != 0),
        Value::String(s) => matches!(
            s.trim().to_ascii_lowercase().as_str(),
            "true" | "yes" | "y" | "1" | "settled" | "paid"
        ),
        _ => false,
    }
}

fn text_of(value: &Value) -> Option<String> {
    match value {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn connector(extract: &str) -> Connector {
        let dir = tempfile::tempdir().unwrap();
        let yaml = format!(
            "name: c\nkind: courier\nbase_url: http://unused.example.com\noperations:\n  book:\n    request: {{ method: POST, path: /b }}\n    success: \"response.status == 200\"\n    extract: {{ tracking_number: \"$.t\" }}\n  payment:\n    request: {{ method: GET, path: \"/p/{{{{ tracking_number }}}}\" }}\n    success: \"response.status == 200\"\n    extract: {extract}\n"
        );
        Connector::parse(&yaml, &dir.path().join("c.yaml"), dir.path()).unwrap()
    }

    fn answered(connector: &Connector, body: Value) -> Result<Option<Remittance>, Failure> {
        let op = connector.operation(OPERATION).unwrap();
        let extracted = op
            .extract
            .iter()
            .filter_map(|(k, p)| p.query(&body).first().map(|v| (k.clone(), v.clone())))
            .collect();
        let output = OperationOutput {
            status: 200,
            body,
            extracted,
            items: Vec::new(),
            bytes: None,
            content_type: None,
        };
        remittance_of(connector, &output)
    }

    #[test]
    fn an_unsettled_answer_is_no_remittance() {
        let c = connector("{ settled: \"$.settle\" }");
        assert_eq!(answered(&c, json!({ "settle": false })).unwrap(), None);
        assert_eq!(answered(&c, json!({ "settle": "no" })).unwrap(), None);
        assert_eq!(answered(&c, json!({})).unwrap(), None);
    }

    #[test]
    fn references_are_all_kept_and_fees_added_up() {
        let c = connector(
            "{ settled: \"$.settle\", remitted: \"$.paid\", remitted_at: \"$.date\", reference: \"$['cpr1','cpr2']\", fees: \"$.fees[*]\" }",
        );
        let got = answered(
            &c,
            json!({ "settle": true, "paid": "1,350.50", "date": "2026-12-02", "cpr1": "CPR-1", "cpr2": "CPR-2", "fees": [100, "49.50"] }),
        )
        .unwrap()
        .unwrap();
        assert_eq!(got.amount.unwrap().to_string(), "1350.50");
        assert_eq!(got.at.as_deref(), Some("2026-12-02"));
        assert_eq!(got.reference.as_deref(), Some("CPR-1 / CPR-2"));
        assert_eq!(got.fees.unwrap().to_string(), "149.50");
        let bare = answered(&c, json!({ "settle": "TRUE", "cpr2": null }))
            .unwrap()
            .unwrap();
        assert_eq!(bare, Remittance::default());
    }

    #[test]
    fn a_bad_amount_is_a_clear_failure_not_a_guess() {
        let c = connector("{ settled: \"$.settle\", remitted: \"$.paid\" }");
        let failure = answered(&c, json!({ "settle": true, "paid": "lots" })).unwrap_err();
        assert!(
            failure.message.contains("`remitted`"),
            "{}",
            failure.message
        );
        assert!(answered(&c, json!({ "settle": true, "paid": [1] })).is_err());
    }

    #[test]
    fn payment_must_extract_settled_and_only_what_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let yaml = "name: c\nkind: courier\nbase_url: http://unused.example.com\noperations:\n  book:\n    request: { method: POST, path: /b }\n    success: \"response.status == 200\"\n    extract: { tracking_number: \"$.t\" }\n  payment:\n    request: { method: GET, path: /p }\n    success: \"response.status == 200\"\n    extract: { paid: \"$.paid\" }\n";
        let errors = Connector::parse(yaml, &dir.path().join("c.yaml"), dir.path()).unwrap_err();
        let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert!(
            text.iter().any(|e| e.contains("must extract `settled`")),
            "{text:?}"
        );
        assert!(text.iter().any(|e| e.contains("extract.paid")), "{text:?}");
    }
}
