//! The `waybill` binary: parse the command line, run, map errors to exit codes.

use clap::Parser;
use waybill::cli::{self, Cli};

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    cli::init_logging(cli.log_format);
    let code = match cli::dispatch(cli).await {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            2
        }
    };
    std::process::exit(code);
}
