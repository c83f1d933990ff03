//! `waybill simulate shopify`: sign an order file with the account's
//! webhook secret, give it a fresh webhook id, and post it to a running
//! waybill, as Shopify would.
//!
//! ```sh
//! waybill simulate shopify --account shopify-main --file samples/shopify/order-cod.json
//! ```

use crate::sources::webhook;
use anyhow::Context;
use std::path::{Path, PathBuf};

#[derive(Debug, clap::Subcommand)]
pub enum SimulateCommand {
    /// Post a signed Shopify order webhook.
    Shopify {
        /// Store account (its `webhook_secret` signs the body).
        #[arg(long)]
        account: String,
        /// Order JSON to send as the body.
        #[arg(long)]
        file: PathBuf,
        /// Shopify topic.
        #[arg(long, default_value = "orders/create")]
        topic: String,
        /// Base URL of the running waybill; defaults to `http.listen`.
        #[arg(long)]
        url: Option<String>,
    },
}

pub async fn run(config_path: &Path, command: SimulateCommand) -> anyhow::Result<i32> {
    let SimulateCommand::Shopify {
        account,
        file,
        topic,
        url,
    } = command;
    let config = super::load_config(config_path)?;
    let acct = config
        .accounts
        .get(&account)
        .with_context(|| format!("no account named `{account}` in {}", config_path.display()))?;
    // Sign and name the delivery as the account's store connector declares.
    let spec = config
        .connectors
        .get(&acct.connector)
        .and_then(|c| c.webhook.as_ref())
        .filter(|spec| spec.source == "shopify")
        .with_context(|| format!("account `{account}` is not a Shopify store"))?;
    let body = std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
    let base = url.unwrap_or_else(|| format!("http://{}", config.http.listen));
    let endpoint = format!("{}/webhooks/shopify/{account}", base.trim_end_matches('/'));
    let webhook_id = uuid::Uuid::new_v4().to_string();
    let mut request = reqwest::Client::new()
        .post(&endpoint)
        .header("content-type", "application/json")
        .header("X-Shopify-API-Version", "2025-10");
    if let Some(signature) = &spec.signature {
        let secret = acct
            .credentials
            .get(&signature.secret)
            .with_context(|| format!("account `{account}` has no {}", signature.secret))?;
        request = request.header(
            signature.header.as_str(),
            webhook::sign(signature, secret.as_bytes(), &body),
        );
    }
    if let Some(name) = &spec.topic_header {
        request = request.header(name.as_str(), &topic);
    }
    if let Some(name) = &spec.delivery_id_header {
        request = request.header(name.as_str(), &webhook_id);
    }
    if let Some(domain) = acct.credentials.get("shop_domain") {
        request = request.header("X-Shopify-Shop-Domain", domain);
    }
    let response = request.body(body).send().await.with_context(|| {
        format!("cannot reach waybill at {endpoint}: is `waybill run` running?")
    })?;
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    println!(
        "POST {endpoint} (topic {topic}, webhook id {webhook_id}) -> {} {}",
        status.as_u16(),
        text.trim()
    );
    Ok(if status.is_success() { 0 } else { 1 })
}
