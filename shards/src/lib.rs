//! guts-shards: the thread-per-core runtime.
//!
//! One glommio executor per shard core, each pinned to its CPU and
//! listening on the HTTP port with SO_REUSEPORT. Every repository is owned
//! by one shard; the owner runs its git services' writes and holds its
//! mutable state, other shards reach it through the owner's inbox. Ref
//! updates cross the consensus boundary ([`consensus`]) and come back as
//! finalized batches applied in order on the owning shard.

pub mod access_api;
pub mod auth;
pub mod blocks;
pub mod body;
pub mod bundle;
pub mod config;
pub mod conn;
pub mod consensus;
pub mod consensus_api;
pub mod git;
pub mod health;
pub mod http;
pub mod ingress;
pub mod maintenance;
pub mod memory;
pub mod metrics;
pub mod pack_cache;
pub mod redact;
pub mod rejection;
pub mod repo;
pub mod settings;
pub mod shard;
pub mod tls;
pub mod work;

use futures_lite::StreamExt;
use glommio::{LocalExecutorBuilder, Placement, PoolPlacement};
use std::sync::Arc;
use std::thread::JoinHandle;

pub use config::{Limits, ShardConfig};
pub use consensus::{
    batch_channel, split_block, BatchReceiver, BatchSender, FinalizedBatch, Op, Orderer,
    OrdererError, Transaction,
};
use ingress::{Inbox, Message};
use shard::Shard;

/// How long a task runs before `yield_if_needed` gives way to others.
pub const PREEMPT_TIMER_MS: u64 = 5;

/// Threads of each shard's blocking pool (walks, pack ingest resolution).
pub const BLOCKING_THREADS_PER_SHARD: usize = 2;

/// Errors starting the shards.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// glommio refused to build the executor (its source says why: a CPU
    /// that does not exist, io_uring unavailable, ...).
    #[error("shard {shard}: cannot start executor on cpu {cpu:?}")]
    Executor {
        shard: usize,
        cpu: Option<usize>,
        #[source]
        source: GlommioFailure,
    },
    /// The executor thread ended before its shard listened.
    #[error(
        "shard {shard}: cannot start executor on cpu None: executor thread exited during start"
    )]
    ExecutorExited { shard: usize },
    #[error("shard {shard}: cannot listen on {addr}")]
    Listen {
        shard: usize,
        addr: std::net::SocketAddr,
        #[source]
        source: GlommioFailure,
    },
    #[error("locked-memory limit (RLIMIT_MEMLOCK) is {found_kib} KiB, below the {needed_kib} KiB the io_uring executors need to start: raise it for the node (`ulimit -l 8192` in its shell, `LimitMEMLOCK=8M` in its systemd unit, `docker run --ulimit memlock=8388608`)")]
    Memlock { found_kib: u64, needed_kib: u64 },
    #[error("access table: {0}")]
    Access(#[from] auth::AccessFileError),
    #[error("expected {expected} batch receivers, got {got}")]
    Receivers { expected: usize, got: usize },
}

/// glommio's error, kept whole and made shareable between threads (it may
/// carry a panicked thread's payload, which is not `Sync`); its text is
/// glommio's own.
#[derive(Debug)]
pub struct GlommioFailure(std::sync::Mutex<glommio::GlommioError<()>>);

impl GlommioFailure {
    pub fn new(e: glommio::GlommioError<()>) -> GlommioFailure {
        GlommioFailure(std::sync::Mutex::new(e))
    }

    /// glommio's error, to match on.
    pub fn into_inner(self) -> glommio::GlommioError<()> {
        self.0.into_inner().unwrap_or_else(|e| e.into_inner())
    }
}

impl std::fmt::Display for GlommioFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.lock() {
            Ok(e) => e.fmt(f),
            Err(poisoned) => poisoned.get_ref().fmt(f),
        }
    }
}

impl std::error::Error for GlommioFailure {}

/// How often a stopping shard reports what it still has in flight.
pub(crate) const DRAIN_REPORT_EVERY_MS: u64 = 50;
/// After the drain time, how long orderings already submitted get to be
/// applied (so that a push in flight is either durable or not submitted).
pub const HALT_WAIT_MAX_MS: u64 = 5_000;

/// Running shards.
pub struct Shards {
    threads: Vec<JoinHandle<()>>,
    exited: crossbeam_channel::Receiver<usize>,
    inboxes: Vec<Inbox>,
}

/// What a stop left behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DrainReport {
    /// Client connections still open when the drain time was over.
    pub open_connections: usize,
    /// Transactions submitted and not applied when the node gave up waiting.
    pub pending_transactions: usize,
}

impl Shards {
    /// Receives the index of a shard whose thread ended (which only happens
    /// on a fatal error): the node should then exit.
    pub fn exited(&self) -> &crossbeam_channel::Receiver<usize> {
        &self.exited
    }

    /// Stop accepting connections and let the requests in flight finish,
    /// until none is left or `deadline` passes. Then no new transaction is
    /// submitted, and transactions already submitted get up to
    /// [`HALT_WAIT_MAX_MS`] to be applied: a push in flight either lands
    /// durably or is not ordered at all.
    pub fn drain(&self, deadline: std::time::Instant) -> DrainReport {
        let report = self.stop_shards(deadline, false);
        if report == DrainReport::default() {
            return report;
        }
        let halt_deadline =
            std::time::Instant::now() + std::time::Duration::from_millis(HALT_WAIT_MAX_MS);
        let after = self.stop_shards(halt_deadline, true);
        DrainReport {
            open_connections: after.open_connections.max(report.open_connections),
            pending_transactions: after.pending_transactions,
        }
    }

    /// Tell every shard to stop (and, with `halt`, to submit no more
    /// transactions), then wait until no shard has a connection (with
    /// `halt`: a transaction) in flight, or `deadline`.
    fn stop_shards(&self, deadline: std::time::Instant, halt: bool) -> DrainReport {
        let (tx, rx) = crossbeam_channel::unbounded::<(usize, usize, usize)>();
        for inbox in &self.inboxes {
            let report = tx.clone();
            ingress::post(inbox, Message::Stop { halt, report });
        }
        drop(tx);
        let mut state: Vec<Option<(usize, usize)>> = vec![None; self.inboxes.len()];
        loop {
            let all_known = state.iter().all(Option::is_some);
            let open: usize = state.iter().flatten().map(|s| s.0).sum();
            let pending: usize = state.iter().flatten().map(|s| s.1).sum();
            if all_known && pending == 0 && (open == 0 || halt) {
                return DrainReport {
                    open_connections: open,
                    pending_transactions: 0,
                };
            }
            match rx.recv_deadline(deadline) {
                Ok((id, open, pending)) => {
                    if let Some(slot) = state.get_mut(id) {
                        *slot = Some((open, pending));
                    }
                }
                // Past the deadline, or every shard is gone.
                Err(_) => {
                    return DrainReport {
                        open_connections: open,
                        pending_transactions: pending.max(usize::from(!all_known)),
                    }
                }
            }
        }
    }

    /// Serve new TLS connections with `config` (connections already open
    /// keep their session). Used on SIGHUP after the certificate changed.
    pub fn set_tls(&self, config: std::sync::Arc<futures_rustls::rustls::ServerConfig>) {
        for inbox in &self.inboxes {
            let config = config.clone();
            ingress::post(inbox, Message::SetTls { config });
        }
    }

    /// Block until a shard thread ends (which only happens on a fatal
    /// error) and return its index. The node should then exit: recovery on
    /// restart is automatic, and a node missing a shard would silently
    /// serve with less capacity.
    pub fn wait_any(self) -> Option<usize> {
        let first = self.exited.recv().ok();
        drop(self.threads);
        first
    }
}

/// The memlock limit in bytes (soft), if it can be read.
pub fn memlock_limit_bytes() -> Option<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) };
    (rc == 0).then_some(lim.rlim_cur)
}

/// Start `config.shards` executors. Returns once every shard listens.
pub fn start(
    config: ShardConfig,
    orderer: Arc<dyn Orderer>,
    batch_receivers: Vec<BatchReceiver>,
) -> Result<Shards, StartError> {
    let n = config.shards.max(1);
    if batch_receivers.len() != n {
        return Err(StartError::Receivers {
            expected: n,
            got: batch_receivers.len(),
        });
    }
    ensure_memlock(config.io_memory_bytes)?;
    let access = auth::AccessTable::load(&config.data_dir)?;
    let damaged = Arc::new(repo::check_ref_stores(&config.data_dir));
    metrics::init_shards(n);
    metrics::set_repositories_damaged(damaged.len());
    for d in damaged.iter() {
        tracing::error!(repo = %d.repo, reason = %d.reason, "repository damaged: it answers with this error until it is repaired (see docs/operations.md); the others are served");
    }
    redact::set_data_dir(&config.data_dir);
    sweep_stale_temp_packs(&config.data_dir);
    set_pack_file_budget(config.limits.pack_files_open_max);
    let mut inboxes = Vec::with_capacity(n);
    let mut inbox_rx = Vec::with_capacity(n);
    for _ in 0..n {
        let (tx, rx) = ingress::inbox();
        inboxes.push(tx);
        inbox_rx.push(rx);
    }
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<usize, StartError>>();
    let (exit_tx, exit_rx) = crossbeam_channel::unbounded::<usize>();
    let mut threads = Vec::with_capacity(n);
    for (id, (inbox, batches)) in inbox_rx.into_iter().zip(batch_receivers).enumerate() {
        let cpu = config.shard_cpus.get(id).copied();
        let placement = match cpu {
            Some(c) => Placement::Fixed(c),
            None => Placement::Unbound,
        };
        let config = config.clone();
        let orderer = orderer.clone();
        let peers = inboxes.clone();
        let ready = ready_tx.clone();
        let access = access.clone();
        let damaged = damaged.clone();
        let builder = LocalExecutorBuilder::new(placement)
            .name(&format!("shard-{id}"))
            .io_memory(config.io_memory_bytes)
            .ring_depth(128)
            // Long-running tasks give way at least this often
            // (`yield_if_needed`), so /health and small requests stay prompt
            // beside big ones.
            .preempt_timer(std::time::Duration::from_millis(PREEMPT_TIMER_MS))
            // CPU-heavy work (object walks, delta resolution) runs on a
            // blocking pool that is NOT pinned to the shard's core, so it can
            // use the other cores while the executor keeps serving requests.
            .blocking_thread_pool_placement(PoolPlacement::Unbound(BLOCKING_THREADS_PER_SHARD));
        let ready_err = ready_tx.clone();
        let spawned = builder.spawn(move || async move {
            let listener = match listen(config.api_addr) {
                Ok(l) => l,
                Err(e) => {
                    let _ = ready.send(Err(StartError::Listen {
                        shard: id,
                        addr: config.api_addr,
                        source: GlommioFailure::new(glommio::GlommioError::IoError(e)),
                    }));
                    return;
                }
            };
            let shard = Shard::new(id, config, orderer, peers, access, damaged);
            glommio::spawn_local(shard.clone().apply_batches(batches)).detach();
            let maintenance = glommio::executor().create_task_queue(
                glommio::Shares::Static(maintenance::MAINTENANCE_SHARES),
                glommio::Latency::NotImportant,
                "maintenance",
            );
            if let Ok(task) = glommio::spawn_local_into(maintenance::run(shard.clone()), maintenance) {
                task.detach();
            }
            let inbox_shard = shard.clone();
            glommio::spawn_local(async move {
                let mut inbox = inbox;
                while let Some(message) = inbox.next().await {
                    glommio::spawn_local(inbox_shard.clone().handle(message)).detach();
                }
            })
            .detach();
            tracing::info!(shard = id, cpu = ?cpu, addr = %shard.config.api_addr, "shard listening");
            let _ = ready.send(Ok(id));
            http::serve(shard, listener).await;
            // Stopping: the connections still in flight run on this
            // executor; the process ends it when the drain is over.
            futures_lite::future::pending::<()>().await;
        });
        match spawned {
            Ok(handle) => {
                let exit_tx = exit_tx.clone();
                threads.push(std::thread::spawn(move || {
                    if let Err(e) = handle.join() {
                        tracing::error!(shard = id, error = ?e, "shard executor failed");
                    }
                    let _ = exit_tx.send(id);
                }))
            }
            Err(e) => {
                let _ = ready_err.send(Err(StartError::Executor {
                    shard: id,
                    cpu,
                    source: GlommioFailure::new(e),
                }));
            }
        }
    }
    drop(ready_tx);
    let mut started = 0;
    while started < n {
        match ready_rx.recv() {
            Ok(Ok(_)) => started += 1,
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(StartError::ExecutorExited { shard: started }),
        }
    }
    Ok(Shards {
        threads,
        exited: exit_rx,
        inboxes,
    })
}

/// Below this much locked memory glommio's executors do not start at all.
pub const MEMLOCK_MIN_BYTES: u64 = 512 * 1024;

/// Make sure the executors can start: raise the soft memlock limit up to
/// the hard one when it is lower than the shards want, refuse with one
/// line saying what to do when even the hard limit is below
/// [`MEMLOCK_MIN_BYTES`], and warn when buffer registration will fall back
/// to unregistered buffers (slower, correct).
fn ensure_memlock(io_memory_bytes: usize) -> Result<(), StartError> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) } != 0 {
        return Ok(());
    }
    // io_uring registers each shard's I/O memory with its three rings.
    let wanted = (io_memory_bytes as u64)
        .saturating_mul(3)
        .max(MEMLOCK_MIN_BYTES);
    if lim.rlim_cur != libc::RLIM_INFINITY && lim.rlim_cur < wanted && lim.rlim_max > lim.rlim_cur {
        let old = lim.rlim_cur;
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max.min(wanted),
            rlim_max: lim.rlim_max,
        };
        // SAFETY: setrlimit with a struct we own; lowering nothing.
        if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &raised) } == 0 {
            tracing::info!(
                from_bytes = old,
                to_bytes = raised.rlim_cur,
                "raised the soft memlock limit towards the hard limit"
            );
            lim = raised;
        }
    }
    if lim.rlim_cur != libc::RLIM_INFINITY && lim.rlim_cur < MEMLOCK_MIN_BYTES {
        return Err(StartError::Memlock {
            found_kib: lim.rlim_cur / 1024,
            needed_kib: MEMLOCK_MIN_BYTES / 1024,
        });
    }
    if lim.rlim_cur != libc::RLIM_INFINITY && lim.rlim_cur < wanted && !is_root() {
        tracing::warn!(
            memlock_limit_bytes = lim.rlim_cur,
            needed_bytes = wanted,
            "io_uring buffer registration will fail: RLIMIT_MEMLOCK is below what the shards register; \
             storage I/O falls back to unregistered buffers (raise `ulimit -l` or lower --io-memory-bytes)"
        );
    }
    Ok(())
}

/// Remove, in the background, what pushes cut short by the last stop left
/// in pack directories.
fn sweep_stale_temp_packs(data_dir: &std::path::Path) {
    let dir = data_dir.to_path_buf();
    let started = std::time::SystemTime::now();
    let spawned = std::thread::Builder::new()
        .name("sweep".into())
        .spawn(move || {
            let removed = repo::remove_stale_temp_packs(&dir, started);
            if removed > 0 {
                tracing::info!(
                    files = removed,
                    "removed temporary pack files of pushes interrupted before this start"
                );
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "could not start the temporary pack sweep");
    }
}

/// Apply the open pack file budget, within a quarter of the open-file
/// limit (connections, pushes and logs need the rest).
fn set_pack_file_budget(wanted: usize) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    #[allow(clippy::unnecessary_cast)] // rlim_t is not u64 everywhere
    let nofile = (unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0)
        .then_some(lim.rlim_cur as u64);
    let mut budget = wanted.max(1);
    #[allow(clippy::unnecessary_cast)] // rlim_t is not u64 everywhere
    let infinity = libc::RLIM_INFINITY as u64;
    if let Some(n) = nofile.filter(|n| *n != infinity) {
        let quarter = (n / 4).max(16) as usize;
        if budget > quarter {
            tracing::warn!(
                pack_files_open_max = wanted,
                open_file_limit = n,
                using = quarter,
                "pack file budget lowered to a quarter of the open-file limit"
            );
            budget = quarter;
        }
    }
    guts_io::files::set_open_files_max(budget);
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// The API listener of one shard: SO_REUSEPORT so every shard binds the same
/// address (the kernel spreads connections over them), and SO_REUSEADDR so
/// a restart binds through connections still in TIME_WAIT. Without the
/// latter, a port whose earlier owner closed connections first (an HTTP
/// server that answered `Connection: close`, for one) cannot be bound for a
/// minute after that owner is gone.
fn listen(addr: std::net::SocketAddr) -> std::io::Result<glommio::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    use std::os::fd::{FromRawFd, IntoRawFd};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    // SAFETY: the descriptor is a bound, listening TCP socket that nothing
    // else owns once `into_raw_fd` gave it up.
    Ok(unsafe { glommio::net::TcpListener::from_raw_fd(socket.into_raw_fd()) })
}
