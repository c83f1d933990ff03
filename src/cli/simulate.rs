//! `waybill simulate shopify`: sign an order file with the account's
//! webhook secret, give it a fresh webhook id, and post it to a running
//! waybill, as Shopify would.
//!
//! ```sh
//! waybill simulate shopify --account shopify-main --file samples/shopify/order-cod.json
//! ```

use crate::sources::shopify;
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
    let secret = acct
        .credentials
        .get("webhook_secret")
        .with_context(|| format!("account `{account}` has no webhook_secret"))?;
    let body = std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
    let base = url.unwrap_or_else(|| format!("http://{}", config.http.listen));
    let endpoint = format!("{}/webhooks/shopify/{account}", base.trim_end_matches('/'));
    let webhook_id = uuid::Uuid::new_v4().to_string();
    let response = reqwest::Client::new()
        .post(&endpoint)
        .header("content-type", "application/json")
        .header(
            "X-Shopify-Hmac-Sha256",
            shopify::sign(secret.as_bytes(), &body),
        )
        .header("X-Shopify-Topic", &topic)
        .header("X-Shopify-Webhook-Id", &webhook_id)
        .header(
            "X-Shopify-Shop-Domain",
            acct.credentials
                .get("shop_domain")
                .map(String::as_str)
                .unwrap_or("example.myshopify.com"),
        )
        .header("X-Shopify-API-Version", "2025-10")
        .body(body)
        .send()
        .await
        .with_context(|| {
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
