//! `guts-node tune`: measure the data disk (`probe`), report the host
//! settings that matter (`check`) and change what can be changed (`apply`).

pub mod check;
pub mod probe;

use crate::config::{Cli, NodeConfig};
use clap::Subcommand;
use std::path::PathBuf;

/// `guts-node tune ...`
#[derive(Debug, Clone, Subcommand)]
pub enum TuneCommand {
    /// Measure the data disk with io_uring and O_DIRECT (sequential and
    /// random reads and writes at several queue depths) and write
    /// DATA/io-properties.toml, whose [sizing] the node reads at start.
    Probe {
        /// Size of the scratch file in the data directory, in bytes (whole MiB).
        #[arg(long, default_value_t = probe::FILE_BYTES_DEFAULT)]
        file_bytes: u64,
        /// Milliseconds each workload runs.
        #[arg(long, default_value_t = probe::DURATION_MS_DEFAULT)]
        duration_ms: u64,
        /// Where to write the results (default: DATA/io-properties.toml).
        #[arg(long)]
        output: Option<PathBuf>,
    },
    /// Report the host settings that matter, changing nothing; exit non-zero
    /// when one is wrong.
    Check,
    /// Change the host settings that can be changed (sysctls and sysfs
    /// values, as root) and say what changed and what could not.
    Apply,
}

/// Run `guts-node tune ...`.
pub fn run(cli: &Cli, cmd: &TuneCommand) -> anyhow::Result<()> {
    let cfg = NodeConfig::resolve(cli)?;
    match cmd {
        TuneCommand::Probe {
            file_bytes,
            duration_ms,
            output,
        } => probe::probe(&probe::ProbeOptions {
            data_dir: cfg.data_dir.clone(),
            file_bytes: *file_bytes,
            duration_ms: *duration_ms,
            output: output.clone(),
        }),
        TuneCommand::Check => check::check(&cfg.data_dir, &needs(&cfg)),
        TuneCommand::Apply => check::apply(&cfg.data_dir, &needs(&cfg)),
    }
}

fn needs(cfg: &NodeConfig) -> check::Needs {
    let (shards, _, _) = crate::plan_cores(&crate::available_cores(), cfg.shards);
    check::Needs {
        shards,
        io_memory_bytes: cfg.io_memory_bytes,
        connections_max: cfg.limits.connections_max,
        pack_files_open_max: cfg.limits.pack_files_open_max,
    }
}
