//! Starting croupier: the driver, the listeners, the control plane, and one
//! pinned thread per core, each running its own monoio runtime.

pub mod drain;
pub mod signals;
pub mod worker;

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use monoio::{IoUringDriver, LegacyDriver, RuntimeBuilder};

use crate::config::{Config, DriverChoice};
use crate::control::CoreMsg;
use crate::control::plane::{self, Policy};
use crate::listener;
use worker::Worker;

/// Submission queue entries per ring: room for the operations of a few
/// hundred busy connections per core between two submissions.
const RING_ENTRIES: u32 = 1024;

/// The driver the cores will use, as probed at start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Driver {
    /// io_uring; `tuned` when the kernel took the flags that cut its cost
    /// (cooperative task running, one issuer, deferred task running).
    IoUring {
        tuned: bool,
    },
    Legacy,
}

impl std::fmt::Display for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Driver::IoUring { tuned: true } => {
                f.write_str("io_uring (coop_taskrun, single_issuer, defer_taskrun)")
            }
            Driver::IoUring { tuned: false } => f.write_str("io_uring"),
            Driver::Legacy => f.write_str("epoll"),
        }
    }
}

/// A start-up failure, with the one message croupier prints for it.
#[derive(Debug)]
pub struct StartError(pub String);

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StartError {}

fn uring_builder(tuned: bool) -> io_uring::Builder {
    let mut builder = io_uring::IoUring::builder();
    if tuned {
        builder.setup_coop_taskrun().setup_single_issuer().setup_defer_taskrun();
    }
    builder
}

/// Chooses the driver by building a small ring the way the cores will.
/// Where the kernel refuses io_uring (old kernels, seccomp filters in some
/// containers) `auto` falls back to epoll, and says so once.
pub fn choose_driver(choice: DriverChoice) -> Result<Driver, StartError> {
    if choice == DriverChoice::Legacy {
        return Ok(Driver::Legacy);
    }
    if uring_builder(true).build(8).is_ok() {
        return Ok(Driver::IoUring { tuned: true });
    }
    match uring_builder(false).build(8) {
        Ok(_) => Ok(Driver::IoUring { tuned: false }),
        Err(error) if choice == DriverChoice::Auto => {
            tracing::warn!(%error, "io_uring is not available here; falling back to epoll");
            Ok(Driver::Legacy)
        }
        Err(error) => Err(StartError(format!("io_uring is not available here: {error}"))),
    }
}

/// Builds a runtime on this thread with `driver` (and a timer) and runs
/// `future` on it to completion.
pub fn block_on<F: std::future::Future>(driver: Driver, future: F) -> std::io::Result<F::Output> {
    match driver {
        Driver::IoUring { tuned } => RuntimeBuilder::<IoUringDriver>::new()
            .uring_builder(uring_builder(tuned))
            .with_entries(RING_ENTRIES)
            .enable_timer()
            .build()
            .map(|mut runtime| runtime.block_on(future)),
        Driver::Legacy => RuntimeBuilder::<LegacyDriver>::new()
            .enable_timer()
            .build()
            .map(|mut runtime| runtime.block_on(future)),
    }
}

/// The running cores, as the main thread holds them.
pub struct Running {
    cores: Vec<flume::Sender<CoreMsg>>,
    drained: flume::Receiver<usize>,
}

/// How a drain ended.
#[derive(Debug, PartialEq, Eq)]
pub enum DrainEnd {
    /// Every core finished its connections.
    Clean,
    /// The drain timeout passed first.
    TimedOut,
    /// Another stop signal came first.
    Signalled,
}

impl Running {
    /// Tells every core to drain, then waits for all of them, the timeout,
    /// or another signal, whichever comes first.
    pub fn drain(&self, signals: &signals::StopSignals, timeout: Duration) -> DrainEnd {
        for core in &self.cores {
            let _ = core.send(CoreMsg::Drain);
        }
        let deadline = Instant::now() + timeout;
        // A core may report more than once (its last connection and its
        // accept loop can both see it empty); count each core once.
        let mut drained = std::collections::HashSet::new();
        loop {
            while let Ok(core) = self.drained.try_recv() {
                drained.insert(core);
            }
            if drained.len() == self.cores.len() {
                return DrainEnd::Clean;
            }
            if Instant::now() >= deadline {
                return DrainEnd::TimedOut;
            }
            // Short waits: the signal wait is also how the drained reports
            // get looked at.
            if signals.wait_for(Duration::from_millis(20)).is_some() {
                return DrainEnd::Signalled;
            }
        }
    }
}

/// Starts croupier. Returns once every core is serving; the threads keep
/// running after that.
pub fn start(config: Config) -> Result<Running, StartError> {
    let config = Arc::new(config);
    let cores = match config.cores {
        Some(cores) => usize::from(cores),
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    let driver = choose_driver(config.driver)?;
    let addr = SocketAddr::new(config.host, config.port);
    let listeners = listener::bind_all(addr, cores).map_err(|e| StartError(e.to_string()))?;

    let cpus = core_affinity::get_core_ids().unwrap_or_default();
    if cores > cpus.len() && !cpus.is_empty() {
        tracing::warn!(cores, cpus = cpus.len(), "more cores than CPUs: some CPUs run two workers");
    }

    // The sequencer and one inbox per core.
    let (control_tx, control_rx) = flume::unbounded();
    let (core_txs, core_rxs): (Vec<_>, Vec<_>) = (0..cores).map(|_| flume::unbounded()).unzip();
    let policy = Policy {
        allow_provider: config.allow_provider.clone(),
        max_inflight_per_provider: config.max_inflight_per_provider,
        topics_max: config.topics_max,
        providers_per_topic_max: config.providers_per_topic_max,
    };
    plane::spawn(policy, control_rx, core_txs.clone())
        .map_err(|e| StartError(format!("cannot start the control plane: {e}")))?;

    let access_log = match &config.access_log {
        Some(destination) => Some(
            crate::metrics::access_log::start(destination)
                .map_err(|e| StartError(format!("cannot open the access log: {e}")))?,
        ),
        None => None,
    };

    let (ready_tx, ready_rx) = flume::unbounded::<Result<(), String>>();
    let (drained_tx, drained_rx) = flume::unbounded();
    for (id, (listener, inbox)) in listeners.into_iter().zip(core_rxs).enumerate() {
        let config = config.clone();
        let control = control_tx.clone();
        let ready = ready_tx.clone();
        let drained = drained_tx.clone();
        let access_log = access_log.clone();
        let cpu = if cpus.is_empty() { None } else { Some(cpus[id % cpus.len()]) };
        std::thread::Builder::new()
            .name(format!("croupier-core-{id}"))
            .spawn(move || {
                if let Some(cpu) = cpu {
                    core_affinity::set_for_current(cpu);
                }
                let worker = Rc::new(Worker::new(id, config, control, cores, drained, access_log));
                let ready_on_error = ready.clone();
                let serve = async move {
                    let listener = match monoio::net::TcpListener::from_std(listener) {
                        Ok(listener) => listener,
                        Err(e) => {
                            let _ = ready
                                .send(Err(format!("core {id}: cannot register listener: {e}")));
                            return;
                        }
                    };
                    let _ = ready.send(Ok(()));
                    worker.run(listener, inbox).await;
                };
                if let Err(error) = block_on(driver, serve) {
                    let _ = ready_on_error
                        .send(Err(format!("core {id}: cannot start its runtime: {error}")));
                }
            })
            .map_err(|e| StartError(format!("cannot start core {id}: {e}")))?;
    }
    drop(ready_tx);
    for _ in 0..cores {
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(message)) => return Err(StartError(message)),
            Err(_) => return Err(StartError("a core stopped during start-up".into())),
        }
    }
    if config.token.is_none() && !config.host.is_loopback() {
        tracing::warn!(listen = %addr, "no --token: anyone who can reach this port can announce \
            a provider and receive its traffic");
    }
    tracing::info!(version = env!("CARGO_PKG_VERSION"), cores, driver = %driver, listen = %addr,
        "croupier is serving");
    Ok(Running { cores: core_txs, drained: drained_rx })
}
