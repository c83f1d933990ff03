//! `waybill statuses …`: how couriers' raw status strings land in the
//! canonical vocabulary.
//!
//! `waybill statuses map COURIER "RAW"` runs RAW through the status table of
//! the courier connector COURIER, as tracking does, and prints one JSON
//! object: `{"courier", "raw", "status", "sub_status", "reason"}`, `null`
//! where absent. The connector is one the configuration uses.
//!
//! ```yaml
//! # waybill statuses map postex "Attempt Made: Customer not home"
//! # {"courier":"postex","raw":"Attempt Made: Customer not home","status":"delivery_failed","sub_status":null,"reason":"Customer not home"}
//! statuses:
//!   table: { "Attempt Made:*": delivery_failed }
//! ```

use super::output;
use crate::config::Config;
use crate::connector::{Connector, ConnectorKind};
use clap::Subcommand;
use serde::Serialize;
use std::path::Path;

#[derive(Debug, Subcommand)]
pub enum StatusesCommand {
    /// Print what a courier's raw status means, as one JSON object.
    Map {
        /// The courier connector's name, e.g. `postex`.
        courier: String,
        /// The raw status exactly as the courier sends it.
        raw: String,
    },
    /// Raw statuses no table matched: one line per courier and raw string,
    /// with how often and when last seen. Add them to the courier's table.
    Unknown,
}

/// Runs a `statuses` subcommand; returns the exit code.
pub async fn run(config: &Path, command: StatusesCommand) -> anyhow::Result<i32> {
    match command {
        StatusesCommand::Map { courier, raw } => {
            let config = super::load_config(config)?;
            output::line(&map(&config, &courier, &raw)?)?;
            Ok(0)
        }
        StatusesCommand::Unknown => {
            super::with_backends(config, async |_, backends| {
                for unknown in backends.shipments.unknown_statuses().await? {
                    let count = unknown.count.to_string();
                    output::line(&output::record([
                        unknown.courier.as_str(),
                        unknown.raw.as_str(),
                        count.as_str(),
                        unknown.last_seen.as_str(),
                    ]))?;
                }
                Ok(0)
            })
            .await
        }
    }
}

/// What `statuses map` prints, in this key order.
#[derive(Debug, Serialize)]
struct Mapped<'a> {
    courier: &'a str,
    raw: &'a str,
    status: &'static str,
    sub_status: Option<String>,
    reason: Option<String>,
}

/// The JSON line for `raw` through `courier`'s status table.
fn map(config: &Config, courier: &str, raw: &str) -> anyhow::Result<String> {
    let connector = courier_connector(config, courier)?;
    let found = connector.status_of(raw);
    let mapped = Mapped {
        courier,
        raw,
        status: found.status.as_str(),
        sub_status: found.sub_status,
        reason: found.reason,
    };
    Ok(serde_json::to_string(&mapped)?)
}

/// The courier connector `name` among those the configuration uses.
fn courier_connector<'c>(config: &'c Config, name: &str) -> anyhow::Result<&'c Connector> {
    let couriers: Vec<&str> = config
        .connectors
        .iter()
        .filter(|(_, c)| c.kind == ConnectorKind::Courier)
        .map(|(name, _)| name.as_str())
        .collect();
    let known = if couriers.is_empty() {
        "none".to_string()
    } else {
        couriers.join(", ")
    };
    match config.connectors.get(name) {
        Some(connector) if connector.kind == ConnectorKind::Courier => Ok(connector),
        Some(_) => anyhow::bail!(
            "`{name}` is a store connector, not a courier; the configuration's couriers: {known}"
        ),
        None => anyhow::bail!(
            "unknown courier connector `{name}`; the configuration's couriers: {known}"
        ),
    }
}
