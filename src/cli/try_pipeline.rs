//! `waybill try`: run a pipeline on one order file without side effects and
//! print one JSON object:
//! `{"triggered", "shipment", "errors", "route", "request"}` (secrets redacted).
//!
//! ```sh
//! waybill try --pipeline shopify-orders --input samples/shopify/order-cod.json --topic orders/create
//! ```

use crate::config::{Config, Pipeline};
use crate::connector::Engine;
use crate::model::{Headers, Shipment};
use crate::stages::{self, Event, Plan};
use anyhow::Context;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

#[derive(Debug, clap::Args)]
pub struct TryArgs {
    /// Pipeline name.
    #[arg(long)]
    pub pipeline: String,
    /// The store's order JSON (a webhook body).
    #[arg(long)]
    pub input: PathBuf,
    /// The store's event name.
    #[arg(long, default_value = "orders/paid")]
    pub topic: String,
    /// Store account; defaults to the pipeline's first input account.
    #[arg(long)]
    pub account: Option<String>,
}

pub fn run(config_path: &Path, args: TryArgs) -> anyhow::Result<i32> {
    let config = super::load_config(config_path)?;
    let pipeline = config
        .pipelines
        .iter()
        .find(|p| p.name == args.pipeline)
        .with_context(|| {
            let names: Vec<&str> = config.pipelines.iter().map(|p| p.name.as_str()).collect();
            format!(
                "no pipeline named `{}`; pipelines: {}",
                args.pipeline,
                names.join(", ")
            )
        })?;
    let body = std::fs::read(&args.input)
        .with_context(|| format!("cannot read {}", args.input.display()))?;
    // Read as ingest and the runner read it: a repeated member name is refused.
    let order: Value = crate::sources::json::parse(&body)
        .with_context(|| format!("{} is not strict JSON", args.input.display()))?;
    let account = args
        .account
        .or_else(|| pipeline.accounts.first().cloned())
        .or_else(|| feeding_account(&config, pipeline))
        .unwrap_or_default();
    let event = Event {
        topic: args.topic,
        source: source_of(&config, &account),
        account,
        headers: Headers::new(),
    };
    let planned = stages::plan(pipeline, &config.accounts, &event, order);

    let mut errors = Vec::new();
    let mut request = Value::Null;
    match &planned.outcome {
        Ok(Plan::Book { shipment, route }) => match prepare_book(&config, shipment, route) {
            Ok(prepared) => request = prepared,
            Err(e) => errors.push(e),
        },
        Ok(Plan::Skip { reason, .. }) => errors.push(reason.clone()),
        Ok(Plan::Emit { .. }) | Ok(Plan::WriteBack) => {}
        Err(e) => errors.push(format!("{} ({}): {}", e.stage, e.class, e.message)),
    }
    let out = json!({
        "triggered": planned.triggered,
        "shipment": planned.shipment,
        "errors": errors,
        "route": planned.route,
        "request": request,
    });
    super::output::line(&serde_json::to_string_pretty(&out)?)?;
    Ok(if planned.outcome.is_ok() { 0 } else { 1 })
}

/// The first store account whose webhooks land on the pipeline's input topic.
fn feeding_account(config: &Config, pipeline: &Pipeline) -> Option<String> {
    config
        .accounts
        .values()
        .find(|a| {
            config
                .connectors
                .get(&a.connector)
                .and_then(|c| c.webhook.as_ref())
                .is_some_and(|spec| pipeline.input == format!("orders.{}", spec.source))
        })
        .map(|a| a.name.clone())
}

/// The source an account's events carry: its store connector's
/// `webhook.source`, else the connector's name.
fn source_of(config: &Config, account: &str) -> String {
    let Some(connector) = config.accounts.get(account).map(|a| &a.connector) else {
        return String::new();
    };
    config
        .connectors
        .get(connector)
        .and_then(|c| c.webhook.as_ref())
        .map_or_else(|| connector.clone(), |spec| spec.source.clone())
}

/// The redacted `book` request for `shipment` on courier account `route`.
fn prepare_book(config: &Config, shipment: &Shipment, route: &str) -> Result<Value, String> {
    let engine = Engine::new(
        reqwest::Client::new(),
        format!("http://{}", config.http.listen),
    );
    let (account, connector) = config
        .accounts
        .get(route)
        .and_then(|a| config.connectors.get(&a.connector).map(|c| (a, c)))
        .ok_or_else(|| format!("route: courier account `{route}` is not configured"))?;
    let shipment = serde_json::to_value(shipment).map_err(|e| format!("book: {e}"))?;
    engine
        .prepare_book(connector, account, &shipment)
        .map(|prepared| prepared.redacted())
        .map_err(|e| format!("book: {}", e.message))
}
