//! One core: its runtime's state and the tasks it runs.
//!
//! A worker owns everything its requests touch (the table replica, the
//! upstream pool, buffers, counters) behind `RefCell`s and `Cell`s: one
//! thread, no locks. It runs three kinds of task: the accept loop, one task
//! per client connection, and the task that applies the control plane's
//! changes to the table.

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use monoio::net::TcpListener;

use crate::config::Config;
use crate::control::plane::{ControlSender, EJECT_BASE};
use crate::control::{ControlMsg, CoreMsg, ProviderStats};
use crate::http1::head::HeadLimits;
use crate::metrics::access_log::CoreLog;
use crate::metrics::{CoreMetrics, CoreSnapshot, bump};
use crate::proxy::buffer::BufPool;
use crate::proxy::connection::{self, Conn};
use crate::router::budget::RetryBudget;
use crate::router::table::{InflightLimit, Table};
use crate::runtime::drain::{Drain, or_drain};
use crate::upstream::pool::Pool;

/// How often idle upstream connections past their timeout are closed, and
/// idle client connections past theirs are woken to close.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

pub struct Worker {
    pub id: usize,
    pub config: Arc<Config>,
    pub limits: HeadLimits,
    pub table: RefCell<Table>,
    pub pool: RefCell<Pool>,
    pub retry_budget: RefCell<RetryBudget>,
    pub bufs: BufPool,
    pub control: ControlSender,
    pub metrics: CoreMetrics,
    /// Open client connections on this core, and this core's share of
    /// `--max-connections`.
    pub connections: Cell<usize>,
    pub connections_max: usize,
    /// Raised when the process is stopping.
    /// The core's drain signal and coarse clock ([`Drain::current`]).
    pub drain: Rc<Drain>,
    /// Where this core reports, once draining, that its last connection
    /// closed.
    drained: flume::Sender<usize>,
    /// This core's side of `--access-log`.
    pub access_log: Option<CoreLog>,
}

impl Worker {
    pub fn new(
        id: usize,
        config: Arc<Config>,
        control: ControlSender,
        cores: usize,
        drained: flume::Sender<usize>,
        access_log: Option<flume::Sender<Vec<u8>>>,
    ) -> Self {
        let connections_max = config.max_connections.div_ceil(cores).max(1);
        Worker {
            id,
            limits: config.head_limits(),
            pool: RefCell::new(Pool::new(config.pool_idle_timeout())),
            retry_budget: RefCell::new(RetryBudget::new(Instant::now())),
            config,
            table: RefCell::new(Table::new()),
            bufs: BufPool::default(),
            control,
            metrics: CoreMetrics::default(),
            connections: Cell::new(0),
            connections_max,
            drain: Drain::current(),
            drained,
            access_log: access_log.map(CoreLog::new),
        }
    }

    /// Runs this core until the process exits.
    pub async fn run(self: Rc<Self>, listener: TcpListener, inbox: flume::Receiver<CoreMsg>) {
        monoio::spawn(self.clone().apply_changes(inbox));
        monoio::spawn(self.clone().sweep());
        self.accept_loop(listener).await;
        // Draining: the runtime must outlive the accept loop, or the
        // requests still in flight would be dropped with it. The main thread
        // ends the process.
        std::future::pending::<()>().await;
    }

    async fn accept_loop(self: Rc<Self>, listener: TcpListener) {
        loop {
            let Some(accepted) = or_drain(&self.drain, listener.accept()).await else {
                // Draining: closing the listener makes new connections fail
                // fast instead of queueing for a core that will not serve.
                drop(listener);
                self.report_if_drained();
                return;
            };
            let (stream, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of descriptors, typically: back off briefly rather
                    // than spin, and keep serving the connections we have.
                    tracing::warn!(core = self.id, %error, "accept failed");
                    monoio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            bump(&self.metrics.connections_accepted);
            if self.connections.get() >= self.connections_max {
                // Closed at once, so the client learns now rather than
                // hanging; counted so an operator can see it happen.
                bump(&self.metrics.connections_refused);
                drop(stream);
                continue;
            }
            self.connections.set(self.connections.get() + 1);
            let worker = self.clone();
            // The task is the connection's own future, with nothing wrapped
            // around it: every byte of it is held for as long as the client
            // stays connected, idle or not.
            monoio::spawn(connection::serve(Conn::new(stream, peer), worker));
        }
    }

    /// Applies the sequencer's changes in the order it sent them, and
    /// acknowledges each so the request that caused it can be answered.
    async fn apply_changes(self: Rc<Self>, inbox: flume::Receiver<CoreMsg>) {
        while let Ok(message) = inbox.recv_async().await {
            match message {
                CoreMsg::Apply { seq, change } => {
                    self.table.borrow_mut().apply(&change);
                    if let crate::router::table::TableChange::Remove { provider, .. } = &change {
                        self.pool.borrow_mut().forget(*provider);
                    }
                    let _ = self.control.send(ControlMsg::Applied { seq });
                }
                CoreMsg::Report { seq } => {
                    let rows = self.stats();
                    let _ = self.control.send(ControlMsg::Stats { seq, rows });
                }
                CoreMsg::Metrics { seq } => {
                    let snapshot = Box::new(self.metrics_snapshot());
                    let _ = self.control.send(ControlMsg::Metrics { seq, snapshot });
                }
                CoreMsg::Drain => self.drain.raise(),
            }
        }
    }

    fn report_if_drained(&self) {
        if self.drain.is_raised() && self.connections.get() == 0 {
            let _ = self.drained.send(self.id);
        }
    }

    async fn sweep(self: Rc<Self>) {
        loop {
            monoio::time::sleep(SWEEP_INTERVAL).await;
            let now = Instant::now();
            self.pool.borrow_mut().sweep(now);
            self.bufs.trim();
            self.drain.wake_expired(now);
            if let Some(log) = &self.access_log {
                log.flush();
            }
            // A burst of requests leaves freed buffers in the allocator's
            // arenas; hand them back to the kernel so resident memory
            // follows the load down, not only up.
            // SAFETY: malloc_trim only releases free memory; it has no
            // preconditions.
            unsafe {
                libc::malloc_trim(0);
            }
        }
    }

    fn stats(&self) -> Vec<ProviderStats> {
        let table = self.table.borrow();
        table
            .topics()
            .flat_map(|topic| {
                topic.providers.iter().map(|p| ProviderStats {
                    topic: Box::from(&*topic.name),
                    provider: p.addr,
                    requests: p.requests,
                    inflight: p.inflight,
                })
            })
            .collect()
    }

    /// A provider could not be reached: stop choosing it on this core at
    /// once, and have the sequencer eject it on every core.
    pub fn provider_failed(&self, topic: &str, provider: SocketAddr) {
        if let Some(p) = self.table.borrow_mut().provider_mut(topic, provider) {
            p.down_until = Some(Instant::now() + EJECT_BASE);
        }
        self.pool.borrow_mut().forget(provider);
        let _ = self.control.send(ControlMsg::Failed { topic: topic.into(), provider });
    }

    /// A request was sent to `provider`. Returns the provider's limit of
    /// requests in flight, whose place [`Table::choose`] reserved; the
    /// caller releases it when the attempt ends (holding its own handle, so
    /// a provider that left and came back meanwhile is not confused).
    ///
    /// [`Table::choose`]: crate::router::table::Table::choose
    pub fn request_started(&self, topic: &str, provider: SocketAddr) -> Option<InflightLimit> {
        let mut table = self.table.borrow_mut();
        let p = table.provider_mut(topic, provider)?;
        p.requests += 1;
        p.inflight += 1;
        p.limit.clone()
    }

    /// An attempt on `provider` ended; `latency` is how long it took to
    /// answer, when it did.
    pub fn request_finished(
        &self,
        topic: &str,
        provider: SocketAddr,
        latency: Option<(Duration, Instant)>,
    ) {
        let mut table = self.table.borrow_mut();
        let Some(p) = table.provider_mut(topic, provider) else { return };
        p.inflight = p.inflight.saturating_sub(1);
        let Some((latency, at)) = latency else { return };
        p.observe(latency, at);
        if p.half_open {
            // Its trial request after an ejection succeeded: it is back, and
            // the next ejection starts from the base back-off again.
            p.half_open = false;
            p.down_until = None;
            let _ = self.control.send(ControlMsg::Recovered { topic: topic.into(), provider });
        }
    }

    /// croupier answered a request itself.
    /// A client connection closed.
    pub fn connection_closed(&self) {
        self.connections.set(self.connections.get() - 1);
        bump(&self.metrics.connections_closed);
        self.report_if_drained();
    }

    pub fn count_status(&self, status: u16) {
        self.metrics.local_response(status);
    }

    /// This core's counters and gauges, for a scrape.
    fn metrics_snapshot(&self) -> CoreSnapshot {
        let mut snapshot = self.metrics.snapshot();
        snapshot.open_connections = self.connections.get() as u64;
        snapshot.pooled_connections = self.pool.borrow().len() as u64;
        let table = self.table.borrow();
        for topic in table.topics() {
            for p in topic.providers.iter().filter(|p| p.inflight > 0) {
                snapshot.inflight.push((
                    Box::from(&*topic.name),
                    p.addr.to_string(),
                    u64::from(p.inflight),
                ));
            }
        }
        snapshot
    }
}
