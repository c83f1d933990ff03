//! `waybill sync status`: how the tracking scheduler stands, per courier
//! account: shipments tracked, due now, the oldest overdue, and when a
//! scheduler last ran.
//!
//! ```sh
//! waybill sync status
//! ```

use super::output;
use crate::clock::{earlier, timestamp};
use std::time::Duration;
use time::OffsetDateTime;

#[derive(Debug, clap::Subcommand)]
pub enum SyncCommand {
    /// Per polled courier account: account, connector, shipments tracked,
    /// due now, oldest overdue; then when the scheduler last ran.
    Status,
}

/// A scheduler that has not noted a tick for this long is not running.
const SILENT_AFTER: Duration = Duration::from_secs(60);

pub async fn run(
    config: &crate::config::Config,
    backends: &crate::runtime::Backends,
    command: SyncCommand,
) -> anyhow::Result<i32> {
    let SyncCommand::Status = command;
    let now = OffsetDateTime::now_utc();
    let overview = backends.shipments.sync_overview(&timestamp(now)).await?;
    if config.polled_accounts.is_empty() {
        output::line("no courier account is polled: no account's connector declares `track`")?;
    }
    for name in config.polled_accounts.keys() {
        let connector = config
            .accounts
            .get(name)
            .map_or("-", |a| a.connector.as_str());
        let found = overview.iter().find(|o| &o.courier_account == name);
        let tracked = found.map_or(0, |o| o.tracked).to_string();
        let due = found.map_or(0, |o| o.due).to_string();
        let oldest = found.and_then(|o| o.oldest_due.as_deref()).unwrap_or("-");
        output::line(&output::record([
            name.as_str(),
            connector,
            tracked.as_str(),
            due.as_str(),
            oldest,
        ]))?;
    }
    let runs = backends.shipments.scheduler_runs().await?;
    let silent = timestamp(earlier(now, SILENT_AFTER));
    match runs.first() {
        None => output::line("no scheduler has run yet: `waybill run` starts one")?,
        Some((owner, at)) if at.as_str() < silent.as_str() => output::line(&format!(
            "no scheduler is running: one last ran at {at} ({})",
            output::escape(owner)
        ))?,
        Some((owner, at)) => output::line(&format!(
            "scheduler last ran at {at} ({})",
            output::escape(owner)
        ))?,
    }
    Ok(0)
}
