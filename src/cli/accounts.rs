//! `waybill accounts`: the configured store and courier accounts, and a
//! check that a courier account really works.
//!
//! - `list` prints each account's name, connector, kind, whether it is
//!   active, and which of its connector's credentials are set (never their
//!   values).
//! - `test NAME` makes the connector's `account_check` call and prints `ok`
//!   or the courier's own error message; exit 0 or 1.
//! - `test NAME --book [--file ORDER.json]` also books a test shipment made
//!   from a sample order by a pipeline's `map` step (a unique reference, so
//!   it is never mistaken for the order), prints its tracking number, fetches
//!   its label where the connector declares `label`, and cancels it where it
//!   declares `cancel`. Nothing is recorded in the store.
//!
//! Accounts on `waybill:` base URLs (the sandbox) are served in-process, or
//! by a running waybill with `--url`. Everything printed is redacted.
//!
//! ```sh
//! waybill accounts list --format json
//! waybill accounts test courier-main --book --file samples/shopify/order-cod.json
//! ```

use super::output;
use crate::config::{Config, Step};
use crate::connector::{Account, Connector, ConnectorKind, Engine};
use crate::model::{Failure, Headers};
use crate::stages::{self, Event};
use anyhow::Context;
use serde_json::{Map, Value, json};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, Default, clap::ValueEnum)]
pub enum Format {
    /// One line per account, fields separated by tabs, control characters escaped.
    #[default]
    Table,
    Json,
}

#[derive(Debug, clap::Subcommand)]
pub enum AccountsCommand {
    /// Every account: name, connector, kind, active, credentials set.
    List {
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Check that a courier account works with a harmless authenticated call.
    Test(TestArgs),
}

#[derive(Debug, clap::Args)]
pub struct TestArgs {
    /// Courier account name.
    pub name: String,
    /// Also book a test shipment (then fetch its label and cancel it, where
    /// the connector can).
    #[arg(long)]
    pub book: bool,
    /// Order JSON the test shipment is made from; default the first sample
    /// under `samples/<source>/` of the pipeline used.
    #[arg(long, requires = "book")]
    pub file: Option<PathBuf>,
    /// Pipeline whose `map` step makes the shipment; default the first with one.
    #[arg(long, requires = "book")]
    pub pipeline: Option<String>,
    /// Write the label here, where the connector declares `label`.
    #[arg(long, requires = "book")]
    pub label_file: Option<PathBuf>,
    /// A running waybill serving `waybill:` base URLs (the sandbox); default
    /// one served by this command.
    #[arg(long)]
    pub url: Option<String>,
}

pub async fn run(config_path: &Path, command: AccountsCommand) -> anyhow::Result<i32> {
    let config = super::load_config(config_path)?;
    match command {
        AccountsCommand::List { format } => {
            list(&config, format)?;
            Ok(0)
        }
        AccountsCommand::Test(args) => test(&config, args).await,
    }
}

/// What `list` shows of one account.
fn summary(account: &Account, connector: Option<&Connector>) -> Value {
    let credentials: Map<String, Value> = connector
        .map(|c| {
            c.credentials
                .keys()
                .map(|name| {
                    let set = account.credentials.get(name).is_some_and(|v| !v.is_empty());
                    (name.clone(), Value::Bool(set))
                })
                .collect()
        })
        .unwrap_or_default();
    json!({
        "name": account.name,
        "connector": account.connector,
        // The variant's own name, lower case: every kind there is, with no list to keep up.
        "kind": connector.map_or_else(|| "unknown".to_string(), |c| format!("{:?}", c.kind).to_lowercase()),
        "active": account.active,
        "credentials": credentials,
    })
}

fn list(config: &Config, format: Format) -> anyhow::Result<()> {
    for account in config.accounts.values() {
        let shown = summary(
            account,
            config.connectors.get(&account.connector).map(|c| &**c),
        );
        match format {
            Format::Json => output::line(&shown.to_string())?,
            Format::Table => {
                let credentials: Vec<String> = shown["credentials"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(name, set)| {
                        let state = if set == &Value::Bool(true) {
                            "set"
                        } else {
                            "unset"
                        };
                        format!("{name}={state}")
                    })
                    .collect();
                let credentials = if credentials.is_empty() {
                    "-".to_string()
                } else {
                    credentials.join(",")
                };
                let active = if account.active { "active" } else { "inactive" };
                output::line(&output::record([
                    account.name.as_str(),
                    account.connector.as_str(),
                    shown["kind"].as_str().unwrap_or("unknown"),
                    active,
                    credentials.as_str(),
                ]))?;
            }
        }
    }
    Ok(())
}

async fn test(config: &Config, args: TestArgs) -> anyhow::Result<i32> {
    let account = config
        .accounts
        .get(&args.name)
        .with_context(|| format!("no account named `{}`", args.name))?;
    let connector = config
        .connectors
        .get(&account.connector)
        .with_context(|| format!("account `{}` has no loaded connector", args.name))?;
    if connector.kind != ConnectorKind::Courier {
        anyhow::bail!(
            "`{}` is a store account; `accounts test` checks courier accounts",
            args.name
        );
    }
    let self_base = match &args.url {
        Some(url) => url.clone(),
        None if serves_itself(connector, account) => serve_sandbox().await?,
        None => format!("http://{}", config.http.listen),
    };
    let engine = Engine::new(Engine::client()?, self_base);
    if connector.account_check.is_none() && !args.book {
        say(&format!(
            "connector `{}` declares no `account_check`: add one, or try `--book`",
            connector.name
        ))?;
        return Ok(1);
    }
    if let Some(checked) = engine.check_account(connector, account).await {
        match checked {
            Ok(_) => say("ok")?,
            Err(failure) => return refused(&failure),
        }
    }
    if !args.book {
        return Ok(0);
    }
    let shipment = test_shipment(config, &args)?;
    book_and_undo(
        &engine,
        connector,
        account,
        shipment,
        args.label_file.as_deref(),
    )
    .await
}

/// Whether the account's requests go to waybill's own server.
fn serves_itself(connector: &Connector, account: &Account) -> bool {
    account
        .base_url
        .as_deref()
        .or(connector.base_url.as_deref())
        .is_some_and(|base| base.starts_with(crate::connector::target::SELF_PREFIX))
}

/// Serves the sandbox courier on a loopback port for this command.
async fn serve_sandbox() -> anyhow::Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    let app = axum::Router::new().nest("/sandbox", crate::connector::sandbox::router());
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(format!("http://{address}"))
}

fn say(text: &str) -> anyhow::Result<()> {
    output::line(&output::escape(text))?;
    Ok(())
}

/// Prints the courier's own words (already redacted) and fails.
fn refused(failure: &Failure) -> anyhow::Result<i32> {
    say(&format!("error: {} ({})", failure.message, failure.class))?;
    Ok(1)
}

/// The shipment a pipeline's `map` step makes of the sample order, with a
/// reference of its own so the courier never takes it for the real order.
fn test_shipment(config: &Config, args: &TestArgs) -> anyhow::Result<Value> {
    let pipeline = match &args.pipeline {
        Some(name) => config
            .pipelines
            .iter()
            .find(|p| &p.name == name)
            .with_context(|| format!("no pipeline named `{name}`"))?,
        None => config
            .pipelines
            .iter()
            .find(|p| p.steps.iter().any(|s| matches!(s, Step::Map(_))))
            .context(
                "no pipeline has a `map` step to make a shipment with; name one with --pipeline",
            )?,
    };
    let store_account = pipeline
        .accounts
        .first()
        .cloned()
        .or_else(|| super::try_pipeline::feeding_account(config, pipeline))
        .unwrap_or_default();
    let source = super::try_pipeline::source_of(config, &store_account);
    let file = match &args.file {
        Some(file) => file.clone(),
        None => first_sample(&config.base_dir.join("samples").join(&source))?,
    };
    let body = std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
    let order: Value = crate::sources::json::parse(&body)
        .with_context(|| format!("{} is not strict JSON", file.display()))?;
    // The event the store connector's `simulate` sends: the one its
    // pipelines expect an order in.
    let topic = config
        .accounts
        .get(&store_account)
        .and_then(|a| config.connectors.get(&a.connector))
        .and_then(|c| c.webhook.as_ref())
        .and_then(|spec| spec.sample_topic.clone())
        .unwrap_or_default();
    let event = Event {
        topic,
        source,
        account: store_account,
        headers: Headers::new(),
    };
    let planned = stages::plan(pipeline, &config.accounts, &event, order);
    let shipment = planned.shipment.with_context(|| {
        let why = planned
            .outcome
            .err()
            .map_or_else(String::new, |f| format!(": {}", f.message));
        format!(
            "pipeline `{}` made no shipment of {}{why}",
            pipeline.name,
            file.display()
        )
    })?;
    let mut shipment = serde_json::to_value(shipment)?;
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let reference = shipment["reference"]
        .as_str()
        .unwrap_or("order")
        .to_string();
    shipment["reference"] = Value::String(format!("{reference}-TEST-{}", &tag[..8]));
    Ok(shipment)
}

fn first_sample(dir: &Path) -> anyhow::Result<PathBuf> {
    let mut samples: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| {
            format!(
                "no sample orders in {}: name one with --file",
                dir.display()
            )
        })?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
        .collect();
    samples.sort();
    samples.into_iter().next().with_context(|| {
        format!(
            "no sample orders in {}: name one with --file",
            dir.display()
        )
    })
}

/// Books `shipment`, prints its tracking number, then its label and its
/// cancellation where the connector declares them.
async fn book_and_undo(
    engine: &Engine,
    connector: &Connector,
    account: &Account,
    shipment: Value,
    label_file: Option<&Path>,
) -> anyhow::Result<i32> {
    let booked = async {
        engine.warm(connector, account).await?;
        let request = engine.prepare_book(connector, account, &shipment)?;
        engine.book(connector, account, request).await
    };
    let booked = match booked.await {
        Ok(booked) => booked,
        Err(failure) => return refused(&failure),
    };
    say(&format!(
        "booked {} (reference {})",
        account.secrets.redact(&booked.tracking_number),
        shipment["reference"].as_str().unwrap_or_default()
    ))?;
    let mut code = 0;
    if connector.has_operation("label") {
        match engine
            .label(connector, account, &booked.tracking_number)
            .await
        {
            Ok(label) => {
                let bytes = label
                    .bytes
                    .unwrap_or_else(|| label.body.to_string().into_bytes());
                let kind = label.content_type.unwrap_or_else(|| "unknown type".into());
                match label_file {
                    Some(file) => {
                        std::fs::write(file, &bytes)
                            .with_context(|| format!("cannot write {}", file.display()))?;
                        say(&format!(
                            "label {kind}, {} bytes, written to {}",
                            bytes.len(),
                            file.display()
                        ))?;
                    }
                    None => say(&format!("label {kind}, {} bytes", bytes.len()))?,
                }
            }
            Err(failure) => {
                say(&format!(
                    "label error: {} ({})",
                    failure.message, failure.class
                ))?;
                code = 1;
            }
        }
    }
    if connector.has_operation("cancel") {
        let mut vars = Map::new();
        vars.insert(
            "tracking_number".into(),
            Value::String(booked.tracking_number.clone()),
        );
        vars.insert("reference".into(), shipment["reference"].clone());
        vars.insert("shipment".into(), shipment.clone());
        let ctx = Engine::context(account, vars);
        let cancelled = async {
            let request = engine.prepare(connector, "cancel", account, &ctx)?;
            engine.execute(connector, "cancel", account, request).await
        };
        match cancelled.await {
            Ok(_) => say("cancelled")?,
            Err(failure) => {
                say(&format!(
                    "cancel error: {} ({})",
                    failure.message, failure.class
                ))?;
                code = 1;
            }
        }
    } else {
        say(&format!(
            "connector `{}` cannot cancel: cancel the test shipment with the courier",
            connector.name
        ))?;
    }
    Ok(code)
}
