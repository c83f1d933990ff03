//! `waybill simulate SOURCE`: sign an order file as the account's store
//! connector declares under `webhook:` (path, signature header, algorithm
//! and encoding, topic and delivery-id headers), give it a fresh delivery
//! id, and post it to a running waybill, as the store would.
//!
//! ```sh
//! waybill simulate shopify --account shopify-main --file samples/shopify/order-cod.json
//! ```

use crate::sources::delivery;
use anyhow::Context;
use std::path::{Path, PathBuf};

#[derive(Debug, clap::Args)]
pub struct SimulateArgs {
    /// Source, as in `/webhooks/SOURCE/ACCOUNT`: the store connector's `webhook.source`.
    pub source: String,
    /// Store account (its connector's signing credential signs the body).
    #[arg(long)]
    pub account: String,
    /// Order JSON to send as the body.
    #[arg(long)]
    pub file: PathBuf,
    /// The store's event name, sent in the connector's topic header;
    /// defaults to the connector's `webhook.sample_topic`.
    #[arg(long)]
    pub topic: Option<String>,
    /// Base URL of the running waybill; defaults to `http.listen`.
    #[arg(long)]
    pub url: Option<String>,
}

pub async fn run(config_path: &Path, args: SimulateArgs) -> anyhow::Result<i32> {
    let SimulateArgs {
        source,
        account,
        file,
        topic,
        url,
    } = args;
    let config = super::load_config(config_path)?;
    let acct = config
        .accounts
        .get(&account)
        .with_context(|| format!("no account named `{account}` in {}", config_path.display()))?;
    let spec = config
        .connectors
        .get(&acct.connector)
        .and_then(|c| c.webhook.as_ref())
        .filter(|spec| spec.source == source)
        .with_context(|| {
            format!(
                "account `{account}` (connector `{}`) does not receive `{source}` webhooks",
                acct.connector
            )
        })?;
    let topic = topic
        .or_else(|| spec.sample_topic.clone())
        .with_context(|| {
            format!(
                "connector `{}` declares no `webhook.sample_topic`: name the event with --topic",
                acct.connector
            )
        })?;
    let body = std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
    let delivery_id = uuid::Uuid::new_v4().to_string();
    let signed = delivery::for_account(spec, acct, &body, &topic, &delivery_id)?;
    let base = url.unwrap_or_else(|| format!("http://{}", config.http.listen));
    let endpoint = format!("{}{}", base.trim_end_matches('/'), signed.path);
    let mut request = reqwest::Client::new().post(&endpoint);
    for (name, value) in &signed.headers {
        request = request.header(name.as_str(), value.as_str());
    }
    let response = request.body(body).send().await.with_context(|| {
        format!("cannot reach waybill at {endpoint}: is `waybill run` running?")
    })?;
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    super::output::line(&format!(
        "POST {} (topic {}, delivery id {delivery_id}) -> {} {}",
        super::output::escape(&endpoint),
        super::output::escape(&topic),
        status.as_u16(),
        super::output::escape(text.trim())
    ))?;
    Ok(if status.is_success() { 0 } else { 1 })
}
