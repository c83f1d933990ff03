//! The `waybill` command line: one file per subcommand.
//!
//! This is the binary's edge, so subcommands report errors with `anyhow`
//! and return the process exit code.

pub mod accounts;
pub mod bookings;
pub mod cod;
pub mod dlq;
pub mod output;
pub mod run;
pub mod shipments;
pub mod simulate;
pub mod statuses;
pub mod sync;
pub mod test;
pub mod try_pipeline;
pub mod validate;

use clap::{Parser, Subcommand, ValueEnum};
use std::path::{Path, PathBuf};

/// Declarative integration middleware for e-commerce shipping.
#[derive(Debug, Parser)]
#[command(name = "waybill", version, about)]
pub struct Cli {
    /// Main configuration file.
    #[arg(long, short = 'c', global = true, default_value = "waybill.yaml")]
    pub config: PathBuf,
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start the HTTP server and every pipeline.
    Run,
    /// Check the configuration and print every problem as FILE:LINE:COL: message.
    Validate,
    /// Run every mappings/**/*.test.yaml.
    Test,
    /// Run a pipeline on one order without side effects and print what it would do.
    Try(try_pipeline::TryArgs),
    /// List accounts, and check that a courier account works.
    #[command(subcommand)]
    Accounts(accounts::AccountsCommand),
    /// Inspect and replay dead letters.
    #[command(subcommand)]
    Dlq(dlq::DlqCommand),
    /// Inspect bookings and resolve review items.
    #[command(subcommand)]
    Bookings(bookings::BookingsCommand),
    /// Where every booked parcel is: list, show with history, correct.
    #[command(subcommand)]
    Shipments(shipments::ShipmentsCommand),
    /// The COD ledger: report, import settlement sheets, dispute.
    #[command(subcommand)]
    Cod(cod::CodCommand),
    /// How the tracking scheduler stands.
    #[command(subcommand)]
    Sync(sync::SyncCommand),
    /// Send a signed store webhook to a running waybill, as the store's connector declares.
    Simulate(simulate::SimulateArgs),
    /// See how couriers' raw statuses map onto the canonical vocabulary.
    #[command(subcommand)]
    Statuses(statuses::StatusesCommand),
}

/// Sets up logging; `RUST_LOG` overrides the default level.
pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Runs a parsed command line and returns the exit code.
pub async fn dispatch(cli: Cli) -> anyhow::Result<i32> {
    let config = cli.config.as_path();
    match cli.command {
        Command::Run => run::run(config).await,
        Command::Validate => Ok(validate::run(config)),
        Command::Test => test::run(config),
        Command::Try(args) => try_pipeline::run(config, args),
        Command::Accounts(cmd) => accounts::run(config, cmd).await,
        Command::Dlq(cmd) => with_backends(config, async |c, b| dlq::run(c, b, cmd).await).await,
        Command::Bookings(cmd) => {
            with_backends(config, async |c, b| bookings::run(c, b, cmd).await).await
        }
        Command::Shipments(cmd) => {
            with_backends(config, async |_, b| shipments::run(b, cmd).await).await
        }
        Command::Cod(cmd) => with_backends(config, async |c, b| cod::run(c, b, cmd).await).await,
        Command::Sync(cmd) => with_backends(config, async |c, b| sync::run(c, b, cmd).await).await,
        Command::Simulate(args) => simulate::run(config, args).await,
        Command::Statuses(cmd) => statuses::run(config, cmd).await,
    }
}

/// Loads the configuration or explains every problem.
pub fn load_config(path: &Path) -> anyhow::Result<crate::config::Config> {
    crate::config::load(path).map_err(|diagnostics| {
        let lines: Vec<String> = diagnostics.iter().map(ToString::to_string).collect();
        anyhow::anyhow!(
            "invalid configuration ({} problems; `waybill validate` lists them):\n{}",
            lines.len(),
            lines.join("\n")
        )
    })
}

/// Loads the config at `path`, opens its bus and store, runs `work` on them,
/// and closes the bus whatever `work` answered, so the embedded database is
/// left without its WAL.
async fn with_backends(
    path: &Path,
    work: impl AsyncFnOnce(&crate::config::Config, &crate::runtime::Backends) -> anyhow::Result<i32>,
) -> anyhow::Result<i32> {
    let config = load_config(path)?;
    let backends = crate::runtime::open_backends(&config).await?;
    let done = work(&config, &backends).await;
    backends.bus.close().await;
    done
}
