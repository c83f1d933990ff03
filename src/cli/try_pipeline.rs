//! `waybill try`: run a pipeline on one order file (or, for a notify
//! pipeline, one status change) without side effects and print one JSON
//! object: `{"triggered", "shipment", "errors", "route", "request"}`
//! (secrets redacted).
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
    /// The store's order JSON (a webhook body); for a notify pipeline, a
    /// status change (a `shipments.status` payload).
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
        Ok(Plan::Notify { change }) => match prepare_notify(&config, pipeline, &event, change) {
            Ok(prepared) => request = prepared,
            Err(e) => errors.push(e),
        },
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
pub(crate) fn feeding_account(config: &Config, pipeline: &Pipeline) -> Option<String> {
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
pub(crate) fn source_of(config: &Config, account: &str) -> String {
    let Some(connector) = config.accounts.get(account).map(|a| &a.connector) else {
        return String::new();
    };
    config
        .connectors
        .get(connector)
        .and_then(|c| c.webhook.as_ref())
        .map_or_else(|| connector.clone(), |spec| spec.source.clone())
}

/// The notification a notify pipeline would post for the status change
/// `change`, its signature masked. `try` reads no store, so the mapping
/// sees `shipment: null`, as for a shipment booked before notifications
/// were configured.
fn prepare_notify(
    config: &Config,
    pipeline: &Pipeline,
    event: &Event,
    change: &Value,
) -> Result<Value, String> {
    use crate::sinks::notify;
    let step = pipeline
        .notify()
        .ok_or_else(|| "notify: the pipeline has no `notify` step".to_string())?;
    let body = notify::render(step, config, event, change, &Value::Null)
        .map_err(|e| format!("{} ({}): {}", e.stage, e.class, e.message))?;
    let url = notify::shown_url(&step.url);
    Ok(json!({
        "method": "POST",
        "url": url,
        "headers": { (step.signature_header.clone()): crate::redact::MASK, notify::ID_HEADER: "<pipeline>/<key>/<status>" },
        "body": body,
    }))
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
