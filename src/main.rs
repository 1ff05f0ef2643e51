//! guts-node: a git host node.
//!
//! `guts-node` with no arguments runs a single-validator node with
//! embedded defaults. Configuration precedence: flags > `GUTS_*`
//! environment > TOML file (`--config`) > embedded defaults.

mod admin;
mod backup;
mod config;
mod consensus;
mod devnet;
mod diagnostics;
mod lifecycle;
mod metrics;
mod monitor;
mod sequencer;
mod tune;
mod verify;

use anyhow::Context;
use clap::Parser;
use std::sync::Arc;

use config::{Cli, Command, NodeConfig};

fn main() {
    // Before any thread starts, so that every thread inherits the mask and
    // only the signal thread takes SIGTERM/SIGINT/SIGHUP.
    lifecycle::block_signals();
    let cli = Cli::parse();
    // Every setting is read (and a bad one refused) before anything starts.
    let settings = match config::Effective::load(&cli) {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("guts-node: error: {e:#}");
            std::process::exit(1);
        }
    };
    init_logging(settings.node.log_format);
    let result = match cli.command.clone() {
        None => run(&cli),
        Some(Command::Run) => run(&cli),
        Some(Command::Config { action: None })
        | Some(Command::Config {
            action: Some(config::ConfigCommand::Show),
        }) => show_config(&cli, &settings),
        Some(Command::Version) => {
            println!("guts-node {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        Some(Command::Status { json }) => {
            match NodeConfig::resolve(&cli).and_then(|cfg| admin::status(&cfg, json)) {
                Ok(true) => Ok(()),
                Ok(false) => std::process::exit(admin::STATUS_NOT_READY_EXIT),
                Err(e) => Err(e),
            }
        }
        Some(Command::Keygen { output }) => keygen(&output),
        Some(Command::Devnet(cmd)) => devnet::run(&cli, cmd),
        Some(Command::Token { action }) => {
            NodeConfig::resolve(&cli).and_then(|cfg| admin::token(&cfg, &action))
        }
        Some(Command::Tune(cmd)) => tune::run(&cli, &cmd),
        Some(Command::Verify) => match data_dir_of(&settings) {
            Ok(dir) => std::process::exit(verify::run(&dir)),
            Err(e) => {
                eprintln!("guts-node verify: {e:#}");
                std::process::exit(verify::EXIT_CANNOT_CHECK)
            }
        },
        Some(Command::Backup {
            output,
            include_secrets,
        }) => data_dir_of(&settings).and_then(|dir| backup::backup(&dir, &output, include_secrets)),
        Some(Command::Restore { input }) => match settings.source("data_dir") {
            config::Source::Default => Err(anyhow::anyhow!(
                "restore needs --data-dir naming the new (empty or absent) data directory"
            )),
            _ => backup::restore(&input, &settings.node.data_dir),
        },
        Some(Command::Diagnostics { output, log_file }) => {
            diagnostics(&cli, &output, log_file.as_deref())
        }
    };
    if let Err(e) = result {
        tracing::error!("{e:#}");
        eprintln!("guts-node: error: {e:#}");
        std::process::exit(1);
    }
}

fn init_logging(format: config::LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("GUTS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if format == config::LogFormat::Json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// The data directory an offline command works on: `--data-dir`
/// (`GUTS_DATA_DIR`, the file's `data_dir`), else the default.
fn data_dir_of(settings: &config::Effective) -> anyhow::Result<std::path::PathBuf> {
    Ok(settings.node.data_dir.clone())
}

fn diagnostics(
    cli: &Cli,
    output: &std::path::Path,
    log_file: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    let cfg = NodeConfig::resolve(cli)?;
    diagnostics::run(
        &diagnostics::Target {
            data_dir: &cfg.data_dir,
            api_addr: cfg.api_addr,
            metrics_addr: cfg.metrics_addr,
            config_text: format!("{cfg:#?}\n"),
            config_file: cli.config.as_deref(),
            log_file,
        },
        output,
    )
}

fn show_config(cli: &Cli, settings: &config::Effective) -> anyhow::Result<()> {
    // The settings must fit together too (a TLS key without a certificate
    // is refused here as at start).
    NodeConfig::from_effective(settings)?;
    print!("{}", settings.to_toml(cli.config.as_deref()));
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
    match tune::probe::load_and_apply(&cfg.data_dir)? {
        Some(sizing) => tracing::info!(
            dma_read_buffer_bytes = sizing.dma_read_buffer_bytes,
            dma_read_ahead_buffers = sizing.dma_read_ahead_buffers,
            "bulk pack reads sized from {}",
            cfg.data_dir
                .join(tune::probe::IO_PROPERTIES_FILE_NAME)
                .display()
        ),
        None => {
            let (buffer, ahead) = guts_io::dma::sizing();
            tracing::info!(
                dma_read_buffer_bytes = buffer,
                dma_read_ahead_buffers = ahead,
                "bulk pack reads use the built-in sizing (no io-properties.toml: `guts-node tune probe` measures the disk)"
            )
        }
    }
    lifecycle::check_address_free(cfg.api_addr)?;
    let (admin_token_sha256, created) =
        guts_shards::auth::load_or_create_admin_token(&cfg.data_dir).context("the admin token")?;
    let admin_token_path = cfg.data_dir.join(guts_shards::auth::ADMIN_TOKEN_FILE_NAME);
    if created {
        tracing::info!(
            path = %admin_token_path.display(),
            "created the admin token (user admin; mode 0600): use it as the HTTP Basic password for pushes and the admin API"
        );
    }

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
    let mut monitor_probe = None;
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
            monitor_probe = Some(monitor::NetworkProbe {
                status: net.status.clone(),
                ledger: net.ledger.clone(),
                peers_needed: net.peers_needed,
            });
            let orderer = net.orderer.clone();
            network = Some(net);
            orderer
        }
        None => {
            let consensus_dir = cfg.data_dir.join("consensus");
            let record = guts_shards::blocks::BlockLog::open(&consensus_dir, true)
                .context("the block record")?;
            guts_shards::metrics::record_block(record.last_height(), 0);
            guts_shards::consensus_api::set_node_info(guts_shards::consensus_api::NodeInfo {
                consensus_dir,
                ..Default::default()
            });
            let (handle, queue) = sequencer::queue();
            std::thread::Builder::new()
                .name("consensus".into())
                .spawn(move || {
                    if let Some(cpu) = consensus_cpu {
                        pin_current_thread(cpu);
                    }
                    sequencer::run(queue, senders, record);
                })
                .context("starting the consensus thread")?;
            Arc::new(handle)
        }
    };

    let role = match network.as_ref().map(|n: &consensus::Network| n.role) {
        None => guts_shards::health::Role::Standalone,
        Some(consensus::engine::Role::Validator) => guts_shards::health::Role::Validator,
        Some(consensus::engine::Role::Follower) => guts_shards::health::Role::Full,
    };
    monitor::start(cfg.data_dir.clone(), role, monitor_probe)
        .context("starting the monitor thread")?;
    metrics::start(cfg.metrics_addr)
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
        // In a network, peers catching up fetch the packs named by
        // finalized transactions by their checksum; a pack merged away by a
        // repack can no longer be served under its name, so a validator
        // that was down for longer than the quiet period could never catch
        // up. Repacking stays off in a network until packs can be served
        // by content (see docs/network.md).
        repack_quiet_ms: if cfg.genesis_file.is_some() {
            if cfg.repack_quiet_ms != 0 {
                tracing::info!(
                    "background repacking is off in a network (peers fetch finalized packs by name)"
                );
            }
            0
        } else {
            cfg.repack_quiet_ms
        },
        prune_unreachable_after_ms: cfg.prune_unreachable_after_ms,
        bundles: cfg.bundles,
        admin_token_sha256,
        tls: match &cfg.tls {
            Some(paths) => Some(
                guts_shards::tls::load_server_config(&paths.cert, &paths.key)
                    .context("--tls-cert/--tls-key")?,
            ),
            None => None,
        },
    };
    let shards = guts_shards::start(shard_config, orderer, receivers).context("starting shards")?;
    let (signal_tx, signals) = crossbeam_channel::bounded(16);
    lifecycle::forward_signals(signal_tx).context("starting the signal thread")?;
    let scheme = if cfg.tls.is_some() { "https" } else { "http" };
    tracing::info!(api = %cfg.api_addr, "ready: git over HTTP at {scheme}://{}/git/OWNER/NAME.git", cfg.api_addr);
    lifecycle::sd_notify("READY=1");

    let first = loop {
        crossbeam_channel::select! {
            recv(shards.exited()) -> stopped => {
                drop(lock);
                anyhow::bail!("shard {:?} stopped unexpectedly; exiting so the node restarts clean (recovery is automatic)", stopped.ok())
            }
            recv(signals) -> signal => match signal {
                Ok(lifecycle::Signal::Stop(sig)) => break sig,
                Ok(lifecycle::Signal::Reload) => reload_tls(&cfg, &shards),
                Err(_) => anyhow::bail!("the signal thread stopped"),
            },
        }
    };

    // Stop: no new connections, requests in flight get the drain time.
    let drain = std::time::Duration::from_millis(cfg.shutdown_drain_ms);
    tracing::info!(
        signal = lifecycle::signal_name(first),
        drain_ms = cfg.shutdown_drain_ms,
        "stopping: no new connections; requests in flight may finish (a second signal stops at once)"
    );
    lifecycle::sd_notify("STOPPING=1");
    std::thread::Builder::new()
        .name("second-signal".into())
        .spawn(move || {
            for signal in signals {
                if let lifecycle::Signal::Stop(sig) = signal {
                    tracing::warn!(
                        signal = lifecycle::signal_name(sig),
                        "second signal: stopping at once"
                    );
                    std::process::exit(128 + sig);
                }
            }
        })
        .context("starting the signal thread")?;
    let report = shards.drain(std::time::Instant::now() + drain);
    if report.open_connections > 0 || report.pending_transactions > 0 {
        tracing::warn!(
            open_connections = report.open_connections,
            pending_transactions = report.pending_transactions,
            "drain time over: closing the connections still open (their pushes were not ordered, or landed durably)"
        );
    }
    drop(network);
    // Everything acknowledged is already durable (ref logs, packs and the
    // access table are synced before an answer); nothing is buffered.
    drop(lock);
    tracing::info!("stopped");
    std::process::exit(0)
}

/// SIGHUP: read the TLS certificate and key again and serve new
/// connections with them; on any error keep the ones in use.
fn reload_tls(cfg: &NodeConfig, shards: &guts_shards::Shards) {
    let Some(paths) = &cfg.tls else {
        tracing::info!("SIGHUP: no TLS configured, nothing to reload");
        return;
    };
    match guts_shards::tls::load_server_config(&paths.cert, &paths.key) {
        Ok(config) => {
            shards.set_tls(config);
            tracing::info!(cert = %paths.cert.display(), "SIGHUP: TLS certificate reloaded; new connections use it");
        }
        Err(e) => {
            tracing::error!(error = %e, "SIGHUP: TLS certificate not reloaded; the one in use stays");
        }
    }
}

/// CPUs this process may run on.
pub(crate) fn available_cores() -> Vec<usize> {
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
pub(crate) fn plan_cores(
    cores: &[usize],
    requested: Option<usize>,
) -> (usize, Vec<usize>, Option<usize>) {
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
