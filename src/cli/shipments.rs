//! `waybill shipments`: where every booked parcel is, its status history,
//! and an operator's correction.
//!
//! ```sh
//! waybill shipments list --status in_transit --courier postex
//! waybill shipments show '#1001' --format json
//! waybill shipments correct shopify:shopify-main:820982911946154508:1 delivered --reason "signed POD"
//! ```

use super::output;
use crate::model::{BookingKey, Status};
use crate::store::shipments::{HistoryEntry, ShipmentFilter, ShipmentRecord};
use anyhow::Context;
use clap::ValueEnum;
use serde_json::{Value, json};

#[derive(Debug, Clone, Copy, Default, ValueEnum)]
pub enum Format {
    /// One line per record, fields separated by tabs, control characters escaped.
    #[default]
    Table,
    Json,
}

#[derive(Debug, clap::Subcommand)]
pub enum ShipmentsCommand {
    /// List shipments, most recently changed first.
    List {
        /// Only this canonical status (booked, in_transit, delivered, …).
        #[arg(long)]
        status: Option<String>,
        /// Only this courier connector.
        #[arg(long)]
        courier: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: usize,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// One shipment, by order reference, tracking number or booking key,
    /// with its whole history and audit trail.
    Show {
        /// Order reference (`#1001`), tracking number or booking key.
        needle: String,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Move a shipment to a status by hand, even out of a terminal one; the
    /// correction is recorded in its history with the reason.
    Correct {
        /// Booking key SOURCE:ACCOUNT:ORDER_ID:SEQUENCE.
        key: String,
        /// The canonical status it is really in.
        status: String,
        /// Why, as it will stand in the history.
        #[arg(long)]
        reason: String,
    },
}

/// A canonical status by name, or an error listing them.
pub fn parse_status(text: &str) -> anyhow::Result<Status> {
    serde_json::from_value(Value::String(text.to_string())).map_err(|_| {
        anyhow::anyhow!(
            "unknown status `{text}`: expected one of draft, booked, picked_up, in_transit, \
             out_for_delivery, delivery_failed, on_hold, delivered, returning, returned, \
             cancelled, exception, unknown"
        )
    })
}

/// Runs one `waybill shipments` command on backends the caller opened and closes.
pub async fn run(
    backends: &crate::runtime::Backends,
    command: ShipmentsCommand,
) -> anyhow::Result<i32> {
    match command {
        ShipmentsCommand::List {
            status,
            courier,
            limit,
            format,
        } => {
            let filter = ShipmentFilter {
                status: status.as_deref().map(parse_status).transpose()?,
                courier,
                limit,
            };
            let found = backends.shipments.shipments(&filter).await?;
            list(&found, format)?;
            Ok(0)
        }
        ShipmentsCommand::Show { needle, format } => show(backends, &needle, format).await,
        ShipmentsCommand::Correct {
            key,
            status,
            reason,
        } => {
            let key: BookingKey = key.parse().map_err(|e: String| anyhow::anyhow!(e))?;
            let status = parse_status(&status)?;
            let entry = backends
                .shipments
                .correct_shipment(&key, status, &reason)
                .await?
                .with_context(|| format!("no shipment has booking key `{key}`"))?;
            output::line(&format!(
                "corrected {} from {} to {}",
                output::escape(&key.to_string()),
                entry.previous.map(Status::as_str).unwrap_or("-"),
                entry.status.as_str()
            ))?;
            Ok(0)
        }
    }
}

fn list(found: &[ShipmentRecord], format: Format) -> anyhow::Result<()> {
    for shipment in found {
        match format {
            Format::Json => output::line(&summary(shipment).to_string())?,
            Format::Table => {
                let key = shipment.key.to_string();
                output::line(&output::record([
                    key.as_str(),
                    shipment.reference.as_deref().unwrap_or("-"),
                    shipment.courier.as_str(),
                    shipment.tracking_number.as_str(),
                    shipment.status.as_str(),
                    shipment.sub_status.as_deref().unwrap_or("-"),
                    shipment.updated_at.as_str(),
                ]))?;
            }
        }
    }
    Ok(())
}

async fn show(
    backends: &crate::runtime::Backends,
    needle: &str,
    format: Format,
) -> anyhow::Result<i32> {
    let found = backends.shipments.find_shipments(needle).await?;
    let shipment = match found.as_slice() {
        [] => anyhow::bail!(
            "no shipment has the reference, tracking number or booking key `{}`",
            output::escape(needle)
        ),
        [one] => one,
        several => {
            output::line(&format!(
                "{} shipments match `{}`; show one by its key:",
                several.len(),
                output::escape(needle)
            ))?;
            for shipment in several {
                output::line(&output::escape(&shipment.key.to_string()))?;
            }
            return Ok(1);
        }
    };
    let history = backends.shipments.history(&shipment.key).await?;
    let audit = backends.store.audit(&shipment.key).await?;
    let mut whole = summary(shipment);
    whole["history"] = history.iter().map(history_json).collect();
    whole["audit"] = audit
        .iter()
        .map(|a| json!({ "action": a.action, "message_id": a.message_id, "detail": a.detail, "at": a.at }))
        .collect();
    match format {
        Format::Json => output::line(&whole.to_string())?,
        Format::Table => {
            for (name, value) in whole.as_object().into_iter().flatten() {
                if matches!(value, Value::Array(_)) {
                    continue;
                }
                let shown = match value {
                    Value::String(text) => text.clone(),
                    Value::Null => "-".to_string(),
                    other => other.to_string(),
                };
                output::line(&output::record([name.as_str(), shown.as_str()]))?;
            }
            for entry in &history {
                output::line(&output::record([
                    "history",
                    entry.event_time.as_deref().unwrap_or(&entry.received_at),
                    entry.via.as_str(),
                    entry.outcome.as_str(),
                    entry.status.as_str(),
                    entry.raw.as_deref().unwrap_or("-"),
                    entry.reason.as_deref().unwrap_or("-"),
                ]))?;
            }
            for a in &audit {
                output::line(&output::record([
                    "audit",
                    a.at.as_str(),
                    a.action.as_str(),
                    a.detail.as_deref().unwrap_or("-"),
                ]))?;
            }
        }
    }
    Ok(0)
}

/// The shipment as `list --format json` and `show --format json` print it.
fn summary(shipment: &ShipmentRecord) -> Value {
    json!({
        "key": shipment.key.to_string(),
        "reference": shipment.reference,
        "order_id": shipment.key.order_id,
        "source": shipment.key.source,
        "courier": shipment.courier,
        "account": shipment.courier_account,
        "tracking_number": shipment.tracking_number,
        "status": shipment.status,
        "sub_status": shipment.sub_status,
        "raw_status": shipment.raw_status,
        "reason": shipment.reason,
        "booked_at": shipment.booked_at,
        "updated_at": shipment.updated_at,
        "last_event_at": shipment.last_event_at,
        "next_poll_at": shipment.next_poll_at,
        "cod_amount": shipment.cod_amount,
        "cod_currency": shipment.cod_currency,
        "cod_state": shipment.cod_state,
        "cod_collected_at": shipment.cod_collected_at,
        "cod_remitted": shipment.cod_remitted,
        "cod_remittance_ref": shipment.cod_remittance_ref,
    })
}

fn history_json(entry: &HistoryEntry) -> Value {
    json!({
        "raw": entry.raw,
        "code": entry.code,
        "status": entry.status,
        "sub_status": entry.sub_status,
        "reason": entry.reason,
        "event_time": entry.event_time,
        "received_at": entry.received_at,
        "via": entry.via,
        "outcome": entry.outcome.as_str(),
        "previous": entry.previous,
    })
}
