//! The `waybill` binary: parse the command line, run, map errors to exit codes.

use clap::Parser;
use waybill::cli::{self, Cli};

// glibc's allocator spent a fifth of the booking path's CPU in malloc and
// free across threads; mimalloc keeps per-thread heaps.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    cli::init_logging(cli.log_format);
    let code = match cli::dispatch(cli).await {
        Ok(code) => code,
        // `waybill dlq list | head -1`: the reader has what it wanted.
        Err(error) if cli::output::is_closed_pipe(&error) => 0,
        Err(error) => {
            eprintln!("error: {error:#}");
            2
        }
    };
    std::process::exit(code);
}
