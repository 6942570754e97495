//! A bare TCP relay built from croupier's own runtime: the floor of the
//! benchmark.
//!
//! It accepts on `--listen`, dials `--upstream` for each connection, and
//! copies bytes both ways, one read and one write per chunk, with no HTTP at
//! all. It runs on the same driver and ring flags as croupier, so the
//! difference between the two in `tools/bench` is what croupier's HTTP work
//! (parsing, routing, pooling, framing) costs.

use std::net::SocketAddr;

use clap::Parser;
use croupier::config::DriverChoice;
use croupier::listener;
use croupier::runtime::{self, Driver};
use monoio::io::{AsyncReadRent, AsyncWriteRentExt, Splitable};
use monoio::net::{TcpListener, TcpStream};

/// Bytes moved per read: the same as croupier's buffers.
const CHUNK_BYTES: usize = 16 * 1024;

/// Relays TCP connections to one upstream, for benchmarks.
#[derive(Parser)]
#[command(name = "l4-relay")]
struct Options {
    /// Address to listen on.
    #[arg(long)]
    listen: SocketAddr,
    /// Address to relay each connection to.
    #[arg(long)]
    upstream: SocketAddr,
    /// Worker threads, each with its own runtime and listener.
    #[arg(long, default_value_t = 1)]
    cores: usize,
    /// The io driver.
    #[arg(long, value_enum, default_value_t = DriverChoice::Auto)]
    driver: DriverChoice,
}

fn main() {
    let options = Options::parse();
    let driver = match runtime::choose_driver(options.driver) {
        Ok(driver) => driver,
        Err(error) => {
            eprintln!("l4-relay: {error}");
            std::process::exit(1);
        }
    };
    let listeners = match listener::bind_all(options.listen, options.cores) {
        Ok(listeners) => listeners,
        Err(error) => {
            eprintln!("l4-relay: {error}");
            std::process::exit(1);
        }
    };
    eprintln!("l4-relay: {} -> {} on {driver}", options.listen, options.upstream);
    let upstream = options.upstream;
    let threads: Vec<_> = listeners
        .into_iter()
        .map(|std_listener| std::thread::spawn(move || serve(driver, std_listener, upstream)))
        .collect();
    for thread in threads {
        let _ = thread.join();
    }
}

fn serve(driver: Driver, std_listener: std::net::TcpListener, upstream: SocketAddr) {
    let result = runtime::block_on(driver, async move {
        let listener = TcpListener::from_std(std_listener).expect("listener registers");
        loop {
            let Ok((client, _)) = listener.accept().await else {
                continue;
            };
            monoio::spawn(relay(client, upstream));
        }
    });
    // The serving loop never ends, so only the error can come back.
    let Err(error) = result;
    eprintln!("l4-relay: cannot start a runtime: {error}");
}

async fn relay(client: TcpStream, upstream: SocketAddr) {
    let Ok(provider) = TcpStream::connect_addr(upstream).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = provider.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (provider_read, provider_write) = provider.into_split();
    monoio::spawn(copy(client_read, provider_write));
    copy(provider_read, client_write).await;
}

/// Copies until either side closes, reusing one buffer: read, then write the
/// same buffer out.
async fn copy(mut from: impl AsyncReadRent, mut to: impl AsyncWriteRentExt) {
    let mut buf = Vec::with_capacity(CHUNK_BYTES);
    loop {
        let (result, read) = from.read(buf).await;
        buf = read;
        match result {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let (result, written) = to.write_all(buf).await;
        buf = written;
        if result.is_err() {
            return;
        }
        buf.clear();
    }
}
