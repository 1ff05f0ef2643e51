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
pub mod body;
pub mod config;
pub mod conn;
pub mod consensus;
pub mod git;
pub mod http;
pub mod metrics;
pub mod repo;
pub mod shard;

use futures_channel::mpsc;
use futures_lite::StreamExt;
use glommio::{LocalExecutorBuilder, Placement, PoolPlacement};
use std::sync::Arc;
use std::thread::JoinHandle;

pub use config::{Limits, ShardConfig};
pub use consensus::{
    batch_channel, split_block, BatchReceiver, BatchSender, FinalizedBatch, Op, Orderer,
    OrdererError, Transaction,
};
use shard::{Shard, ShardJob, SHARD_INBOX_MAX};

/// Threads of each shard's blocking pool (walks, pack ingest resolution).
pub const BLOCKING_THREADS_PER_SHARD: usize = 2;

/// Errors starting the shards.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("shard {shard}: cannot start executor on cpu {cpu:?}: {reason}")]
    Executor {
        shard: usize,
        cpu: Option<usize>,
        reason: String,
    },
    #[error("shard {shard}: cannot listen on {addr}: {reason}")]
    Listen {
        shard: usize,
        addr: std::net::SocketAddr,
        reason: String,
    },
    #[error("access table: {0}")]
    Access(#[from] auth::AccessFileError),
    #[error("expected {expected} batch receivers, got {got}")]
    Receivers { expected: usize, got: usize },
}

/// Running shards.
pub struct Shards {
    threads: Vec<JoinHandle<()>>,
    exited: std::sync::mpsc::Receiver<usize>,
}

impl Shards {
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
    // io_uring registers each shard's I/O memory with its rings; say so
    // clearly when the memlock limit will not allow it.
    if let Some(limit) = memlock_limit_bytes() {
        let need = (config.io_memory_bytes as u64) * 3;
        if limit != libc::RLIM_INFINITY && limit < need && !is_root() {
            tracing::warn!(
                memlock_limit_bytes = limit,
                needed_bytes = need,
                "io_uring buffer registration will fail: RLIMIT_MEMLOCK is below what the shards register; \
                 storage I/O falls back to unregistered buffers (raise `ulimit -l` or lower --io-memory-bytes)"
            );
        }
    }
    let access = auth::AccessTable::load(&config.data_dir)?;
    let mut inboxes = Vec::with_capacity(n);
    let mut inbox_rx = Vec::with_capacity(n);
    for _ in 0..n {
        let (tx, rx) = mpsc::channel::<ShardJob>(SHARD_INBOX_MAX);
        inboxes.push(tx);
        inbox_rx.push(rx);
    }
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<usize, StartError>>();
    let (exit_tx, exit_rx) = std::sync::mpsc::channel::<usize>();
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
        let builder = LocalExecutorBuilder::new(placement)
            .name(&format!("shard-{id}"))
            .io_memory(config.io_memory_bytes)
            .ring_depth(128)
            // CPU-heavy work (object walks, delta resolution) runs on a
            // blocking pool that is NOT pinned to the shard's core, so it can
            // use the other cores while the executor keeps serving requests.
            .blocking_thread_pool_placement(PoolPlacement::Unbound(BLOCKING_THREADS_PER_SHARD));
        let ready_err = ready_tx.clone();
        let spawned = builder.spawn(move || async move {
            let listener = match glommio::net::TcpListener::bind(config.api_addr) {
                Ok(l) => l,
                Err(e) => {
                    let _ = ready.send(Err(StartError::Listen {
                        shard: id,
                        addr: config.api_addr,
                        reason: e.to_string(),
                    }));
                    return;
                }
            };
            let shard = Shard::new(id, config, orderer, peers, access);
            glommio::spawn_local(shard.clone().apply_batches(batches)).detach();
            let inbox_shard = shard.clone();
            glommio::spawn_local(async move {
                let mut inbox = inbox;
                while let Some(job) = inbox.next().await {
                    glommio::spawn_local(job(inbox_shard.clone())).detach();
                }
            })
            .detach();
            tracing::info!(shard = id, cpu = ?cpu, addr = %shard.config.api_addr, "shard listening");
            let _ = ready.send(Ok(id));
            http::serve(shard, listener).await;
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
                    reason: e.to_string(),
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
            Err(_) => {
                return Err(StartError::Executor {
                    shard: started,
                    cpu: None,
                    reason: "executor thread exited during start".into(),
                })
            }
        }
    }
    Ok(Shards {
        threads,
        exited: exit_rx,
    })
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}
