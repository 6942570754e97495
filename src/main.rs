//! The `croupier` binary: parse the command line, set up logging, start the
//! cores, and wait for a signal to stop.

use std::process::ExitCode;

use clap::Parser;
use croupier::config::Config;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    // clap exits with 2 on a bad command line and 0 for --help/--version.
    let config = Config::parse();
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.log_level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();

    let signals = match croupier::runtime::signals::block() {
        Ok(signals) => signals,
        Err(error) => {
            eprintln!("croupier: cannot set up signal handling: {error}");
            return ExitCode::from(1);
        }
    };
    if let Err(error) = croupier::runtime::start(config) {
        eprintln!("croupier: {error}");
        return ExitCode::from(1);
    }
    let signal = signals.wait();
    tracing::info!(signal, "stopping");
    ExitCode::SUCCESS
}
