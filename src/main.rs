//! The `croupier` binary: parse the command line, set up logging, start the
//! cores, and wait for a signal to stop.

use std::process::ExitCode;

use std::time::Duration;

use clap::Parser;
use croupier::config::{Command, Config};
use croupier::runtime::DrainEnd;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    // clap exits with 2 on a bad command line and 0 for --help/--version.
    let mut config = Config::parse();
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.log_level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();

    let signals = match croupier::runtime::signals::block() {
        Ok(signals) => signals,
        Err(error) => {
            eprintln!("croupier: cannot set up signal handling: {error}");
            return ExitCode::from(1);
        }
    };
    // `croupier announce` runs the provider sidecar instead, on the signals just blocked.
    if let Some(Command::Announce(args)) = config.command.take() {
        return croupier::sidecar::run(args);
    }
    let drain_timeout = Duration::from_millis(config.drain_timeout_ms);
    let running = match croupier::runtime::start(config) {
        Ok(running) => running,
        Err(error) => {
            eprintln!("croupier: {error}");
            return ExitCode::from(1);
        }
    };
    let signal = signals.wait();
    tracing::info!(signal, "stopping: finishing in-flight requests");
    match running.drain(&signals, drain_timeout) {
        DrainEnd::Clean => tracing::info!("stopped"),
        DrainEnd::TimedOut => {
            tracing::warn!("drain timeout passed; stopping with requests in flight")
        }
        DrainEnd::Signalled => tracing::warn!("second signal; stopping at once"),
    }
    ExitCode::SUCCESS
}
