//! guts-node: a git host node.
//!
//! `guts-node` with no arguments runs a single-validator node with
//! embedded defaults. Configuration precedence: flags > `GUTS_*`
//! environment > TOML file (`--config`) > embedded defaults.

mod config;
mod consensus;
mod devnet;
mod metrics;
mod sequencer;

use anyhow::Context;
use clap::Parser;
use std::sync::Arc;

use config::{Cli, Command, NodeConfig};

fn main() {
    let cli = Cli::parse();
    init_logging(cli.log_format.as_deref());
    let result = match cli.command.clone() {
        None => run(&cli),
        Some(Command::Run) => run(&cli),
        Some(Command::Config) => show_config(&cli),
        Some(Command::Keygen { output }) => keygen(&output),
        Some(Command::Devnet(cmd)) => devnet::run(&cli, cmd),
    };
    if let Err(e) = result {
        tracing::error!("{e:#}");
        eprintln!("guts-node: error: {e:#}");
        std::process::exit(1);
    }
}

fn init_logging(format: Option<&str>) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("GUTS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if format == Some("json") {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn show_config(cli: &Cli) -> anyhow::Result<()> {
    let cfg = NodeConfig::resolve(cli)?;
    println!("{cfg:#?}");
    Ok(())
}

fn keygen(output: &std::path::Path) -> anyhow::Result<()> {
    let key = consensus::engine::SecretKey::generate();
    consensus::keys::save(&key, output).with_context(|| {
        format!(
            "writing {} (an existing file is never overwritten)",
            output.display()
        )
    })?;
    println!("{}", key.public());
    eprintln!(
        "private key written to {} (mode 0600); public key above",
        output.display()
    );
    Ok(())
}

/// This node's key, from the flag, the environment or a file.
fn node_key(cfg: &NodeConfig) -> anyhow::Result<Option<consensus::engine::SecretKey>> {
    Ok(match &cfg.key {
        config::KeySource::None => None,
        config::KeySource::Hex(hex) => {
            if std::env::var_os("GUTS_PRIVATE_KEY").is_none() {
                tracing::warn!("a private key on the command line is visible to other local users (ps, /proc); prefer --private-key-file");
            }
            Some(consensus::keys::from_hex(hex)?)
        }
        config::KeySource::File(path) => Some(consensus::keys::load(path)?),
    })
}

fn run(cli: &Cli) -> anyhow::Result<()> {
    let cfg = NodeConfig::resolve(cli)?;
    raise_fd_limit();
    std::fs::create_dir_all(cfg.data_dir.join("repos"))
        .with_context(|| format!("creating data directory {}", cfg.data_dir.display()))?;
    let lock = lock_data_dir(&cfg.data_dir)?;

    // Packs being received when the node last stopped are leftovers now.
    for (owner, name) in guts_shards::repo::list_repos(&cfg.data_dir) {
        let objects = guts_shards::repo::repo_dir(&cfg.data_dir, &owner, &name).join("objects");
        match guts_io::store::ObjectStore::remove_leftovers(&objects) {
            Ok(0) => {}
            Ok(n) => {
                tracing::info!(repo = %format!("{owner}/{name}"), files = n, "removed temporary pack files left by an earlier run")
            }
            Err(e) => {
                tracing::warn!(repo = %format!("{owner}/{name}"), error = %e, "could not remove temporary pack files")
            }
        }
    }
    let cores = available_cores();
    let (shard_count, shard_cpus, consensus_cpu) = plan_cores(&cores, cfg.shards);
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        data_dir = %cfg.data_dir.display(),
        api = %cfg.api_addr,
        metrics = %cfg.metrics_addr,
        p2p = %cfg.p2p_addr,
        shards = shard_count,
        ?shard_cpus,
        ?consensus_cpu,
        mode = if cfg.genesis_file.is_some() { "network (Simplex BFT)" } else { "standalone (single validator, local sequencer)" },
        "starting guts-node"
    );

    let mut senders = Vec::with_capacity(shard_count);
    let mut receivers = Vec::with_capacity(shard_count);
    for _ in 0..shard_count {
        let (tx, rx) = guts_shards::batch_channel();
        senders.push(tx);
        receivers.push(rx);
    }
    // The consensus core: Simplex BFT among the genesis validators, or the
    // local sequencer of a standalone node; on its own pinned OS thread.
    let mut network = None;
    let orderer: Arc<dyn guts_shards::Orderer> = match &cfg.genesis_file {
        Some(path) => {
            let genesis = consensus::genesis::Genesis::load(path)?;
            let key = match node_key(&cfg)? {
                Some(k) => k,
                None => consensus::keys::load_or_create(&cfg.data_dir.join("node.key"))?,
            };
            let net = consensus::start(
                consensus::NetworkSetup {
                    genesis,
                    key,
                    data_dir: cfg.data_dir.clone(),
                    p2p_addr: cfg.p2p_addr,
                    shards: senders,
                },
                consensus_cpu,
            )?;
            tracing::info!(role = ?net.role, key = %net.key, p2p = %cfg.p2p_addr, applied = net.ledger.applied_height(), "consensus started");
            guts_shards::metrics::record_block(net.ledger.applied_height(), 0);
            let (status, ledger) = (net.status.clone(), net.ledger.clone());
            std::thread::Builder::new()
                .name("consensus-metrics".into())
                .spawn(move || loop {
                    let applied = ledger.applied_height();
                    let lag = status.finalized_height().saturating_sub(applied);
                    guts_shards::metrics::record_network(
                        status.current_view(),
                        status.connected_peers() as u64,
                        lag,
                    );
                    std::thread::sleep(std::time::Duration::from_millis(500));
                })
                .context("starting the consensus metrics thread")?;
            let orderer = net.orderer.clone();
            network = Some(net);
            orderer
        }
        None => {
            let (handle, queue) = sequencer::queue();
            std::thread::Builder::new()
                .name("consensus".into())
                .spawn(move || {
                    if let Some(cpu) = consensus_cpu {
                        pin_current_thread(cpu);
                    }
                    sequencer::run(queue, senders);
                })
                .context("starting the consensus thread")?;
            Arc::new(handle)
        }
    };

    metrics::start(cfg.metrics_addr, cfg.data_dir.clone(), shard_count)
        .with_context(|| format!("metrics endpoint on {}", cfg.metrics_addr))?;

    let shard_config = guts_shards::ShardConfig {
        data_dir: cfg.data_dir.clone(),
        api_addr: cfg.api_addr,
        shards: shard_count,
        shard_cpus,
        io_memory_bytes: cfg.io_memory_bytes,
        limits: cfg.limits.clone(),
        agent: format!("guts/{}", env!("CARGO_PKG_VERSION")),
        finalize_wait_ms: cfg.finalize_wait_ms,
    };
    let shards = guts_shards::start(shard_config, orderer, receivers).context("starting shards")?;
    tracing::info!(api = %cfg.api_addr, "ready: git over HTTP at http://{}/git/OWNER/NAME.git", cfg.api_addr);
    let stopped = shards.wait_any();
    drop(network);
    drop(lock);
    anyhow::bail!("shard {stopped:?} stopped unexpectedly; exiting so the node restarts clean (recovery is automatic)")
}

/// CPUs this process may run on.
fn available_cores() -> Vec<usize> {
    // SAFETY: cpu_set_t is plain data; sched_getaffinity fills it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) == 0 {
            let cores: Vec<usize> = (0..libc::CPU_SETSIZE as usize)
                .filter(|c| libc::CPU_ISSET(*c, &set))
                .collect();
            if !cores.is_empty() {
                return cores;
            }
        }
    }
    (0..std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1))
        .collect()
}

/// Decide shard count and pinning: by default every core but one runs a
/// shard and the last core runs consensus; never more shards than cores.
fn plan_cores(cores: &[usize], requested: Option<usize>) -> (usize, Vec<usize>, Option<usize>) {
    let n = cores.len().max(1);
    let wanted = requested.unwrap_or(if n > 1 { n - 1 } else { 1 }).max(1);
    if wanted > n {
        tracing::warn!(
            requested = wanted,
            cores = n,
            "more shards requested than cores; using one shard per core"
        );
    }
    let shards = wanted.min(n);
    if n == 1 {
        return (1, vec![], None);
    }
    let shard_cpus = cores[..shards].to_vec();
    let consensus = cores.last().copied();
    (shards, shard_cpus, consensus)
}

pub(crate) fn pin_current_thread(cpu: usize) {
    // SAFETY: plain libc call on a zeroed cpu set we own.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            tracing::warn!(cpu, "could not pin the consensus thread");
        }
    }
}

/// Raise the open-file limit to its hard maximum (connections are files).
fn raise_fd_limit() {
    // SAFETY: plain libc calls on a struct we own.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            let old = lim.rlim_cur;
            lim.rlim_cur = lim.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) == 0 {
                tracing::debug!(from = old, to = lim.rlim_max, "raised open-file limit");
            }
        }
    }
}

/// Hold an exclusive lock on the data directory for the life of the process.
fn lock_data_dir(dir: &std::path::Path) -> anyhow::Result<std::fs::File> {
    use std::os::unix::io::AsRawFd;
    let path = dir.join("node.lock");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    // SAFETY: flock on a descriptor we own.
    let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        anyhow::bail!(
            "data directory {} is in use by another guts-node process",
            dir.display()
        );
    }
    Ok(f)
}
