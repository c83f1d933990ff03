//! `waybill bookings`: list bookings and resolve review items by hand.
//!
//! ```sh
//! waybill bookings list --status review
//! waybill bookings resolve shopify:shopify-main:820982911946154508:0 --tracking CX-123
//! waybill bookings resolve shopify:shopify-main:820982911946154508:0 --release
//! ```

use super::output;
use crate::model::{BookingKey, BookingResult};
use crate::store::BookingStatus;
use anyhow::Context;

#[derive(Debug, clap::Subcommand)]
pub enum BookingsCommand {
    /// List bookings, newest first.
    List {
        /// Only this status: sent, booked, review.
        #[arg(long)]
        status: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Resolve a review item: it was booked (--tracking) or it was not (--release).
    Resolve {
        /// Booking key SOURCE:ACCOUNT:ORDER_ID:SEQUENCE.
        key: String,
        /// It was booked at the courier with this tracking number.
        #[arg(long, conflicts_with = "release", required_unless_present = "release")]
        tracking: Option<String>,
        /// Courier account it was booked on (for --tracking); defaults to the only courier account.
        #[arg(long)]
        courier_account: Option<String>,
        /// It was not booked: allow booking it again.
        #[arg(long)]
        release: bool,
    },
}

fn parse_status(s: &str) -> anyhow::Result<BookingStatus> {
    Ok(match s {
        "sent" => BookingStatus::Sent,
        "booked" => BookingStatus::Booked,
        "review" => BookingStatus::Review,
        other => {
            anyhow::bail!("unknown status `{other}`: expected sent, booked or review")
        }
    })
}

/// Runs one `waybill bookings` command on backends the caller opened and closes.
pub async fn run(
    config: &crate::config::Config,
    backends: &crate::runtime::Backends,
    command: BookingsCommand,
) -> anyhow::Result<i32> {
    match command {
        BookingsCommand::List { status, limit } => {
            let status = status.as_deref().map(parse_status).transpose()?;
            list(backends, status, limit).await?;
        }
        BookingsCommand::Resolve {
            key,
            tracking,
            courier_account,
            release,
        } => {
            let key: BookingKey = key.parse().map_err(|e: String| anyhow::anyhow!(e))?;
            if release {
                backends.store.resolve_release(&key).await?;
                output::line(&format!(
                    "released {}: the next delivery or `waybill dlq replay` books it again",
                    output::escape(&key.to_string())
                ))?;
            } else {
                let tracking = tracking.context("--tracking or --release is required")?;
                let booked = booked_by_hand(config, tracking, courier_account)?;
                backends.store.resolve_booked(&key, &booked).await?;
                output::line(&format!(
                    "resolved {} as booked with {}",
                    output::escape(&key.to_string()),
                    output::escape(&booked.tracking_number)
                ))?;
            }
        }
    }
    Ok(0)
}

/// One line per booking: key, status, order reference, tracking number,
/// last change and reason.
async fn list(
    backends: &crate::runtime::Backends,
    status: Option<BookingStatus>,
    limit: usize,
) -> anyhow::Result<()> {
    for b in backends.store.bookings(status, limit).await? {
        let tracking = b
            .result
            .as_ref()
            .map(|r| r.tracking_number.as_str())
            .unwrap_or("-");
        let reference = b.reference.as_deref().unwrap_or("-");
        let reason = b.reason.as_deref().unwrap_or("");
        let key = b.key.to_string();
        output::line(&output::record([
            key.as_str(),
            b.status.as_str(),
            reference,
            tracking,
            b.updated_at.as_str(),
            reason,
        ]))?;
    }
    Ok(())
}

/// What an operator says was booked: the tracking number on the courier
/// account named, or on the only courier account there is.
fn booked_by_hand(
    config: &crate::config::Config,
    tracking: String,
    courier_account: Option<String>,
) -> anyhow::Result<BookingResult> {
    let courier_account = match courier_account {
        Some(a) => a,
        None => {
            let couriers: Vec<&String> = config
                .accounts
                .iter()
                .filter(|(_, a)| {
                    config
                        .connectors
                        .get(&a.connector)
                        .is_some_and(|c| c.kind == crate::connector::ConnectorKind::Courier)
                })
                .map(|(name, _)| name)
                .collect();
            match couriers.as_slice() {
                [only] => (*only).clone(),
                _ => anyhow::bail!(
                    "several courier accounts are configured: say which with --courier-account"
                ),
            }
        }
    };
    let courier = config
        .accounts
        .get(&courier_account)
        .map(|a| a.connector.clone())
        .with_context(|| format!("no account named `{courier_account}`"))?;
    Ok(BookingResult {
        tracking_number: tracking,
        courier,
        account: courier_account,
        extracted: Default::default(),
    })
}
