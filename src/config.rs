//! Command line and configuration: flags > `GUTS_*` environment > TOML
//! file > embedded defaults. Every setting is declared once (the node's
//! below in [`NodeSettings`], the request limits in [`Limits`]); the flags,
//! the environment variables, the TOML keys, `config show` and
//! docs/configuration.md all come from those declarations.

use anyhow::Context;
use clap::{Parser, Subcommand};
use guts_shards::settings::{Secret, SettingInfo, SettingValue, Settings};
use guts_shards::Limits;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Default data directory.
pub const DEFAULT_DATA_DIR: &str = "./guts-data";
/// Default time requests in flight get to finish after SIGTERM/SIGINT
/// (below systemd's default stop timeout of 90 s and the unit's 30 s).
pub const DEFAULT_SHUTDOWN_DRAIN_MS: u64 = 20_000;

guts_shards::declare_settings! {
    /// The node's own settings (the top level of the TOML file).
    #[section = ""]
    pub struct NodeSettings {
        /// Data directory: repositories (`repos/OWNER/NAME.git`), ref logs,
        /// consensus state.
        data_dir: PathBuf = PathBuf::from(DEFAULT_DATA_DIR),
        /// Address of the git smart-HTTP and REST API server.
        api_addr: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 8080)),
        /// Address of the Prometheus `/metrics` endpoint.
        metrics_addr: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 9090)),
        /// Address for peer-to-peer connections (a standalone node has no peers).
        p2p_addr: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 9000)),
        /// Number of shard executors; never more than the cores that exist.
        #[default_doc = "all cores but the consensus core, at least 1"]
        shards: Option<usize> = None,
        /// Bytes of io_uring registered memory per shard.
        io_memory_bytes: usize = 1024 * 1024,
        /// Milliseconds requests in flight get to finish after SIGTERM/SIGINT
        /// before the node exits.
        shutdown_drain_ms: u64 = DEFAULT_SHUTDOWN_DRAIN_MS,
        /// Longest a push waits for its update to be finalized before the
        /// client is told the network has no quorum, in milliseconds.
        finalize_wait_ms: u64 = guts_shards::shard::FINALIZE_WAIT_MS,
        /// Background repacking: a repository whose refs have not changed
        /// for this many milliseconds (or that holds 64 packs, quiet or not)
        /// gets its small packs merged, geometrically (as C git's geometric
        /// repack with factor 2). 0: never repack; always off on a node of
        /// a network.
        repack_quiet_ms: u64 = guts_shards::maintenance::REPACK_QUIET_MS,
        /// Objects no ref reaches (packs of losing concurrent pushes,
        /// deleted or rewound branches) are dropped by background repacking
        /// once their pack is this old; what a ref or a newer object
        /// reaches is always kept. At least the request timeout, so that no
        /// push still being checked depends on what is dropped. 0: never
        /// prune.
        prune_unreachable_after_ms: u64 = guts_shards::maintenance::PRUNE_UNREACHABLE_AFTER_MS,
        /// Bundle URIs (git's `transfer.bundleURI`): the node keeps a git
        /// bundle of each repository that is cloned often, written in idle
        /// time, and offers it to cloning clients with protocol v2's
        /// `bundle-uri` command; such a clone downloads the bundle as a
        /// static file and then fetches only what is newer.
        bundle_uri_enabled: bool = false,
        /// A repository's bundle is (re)written once this many clones have
        /// been served since its last bundle and its refs have changed.
        bundle_uri_clones: u64 = guts_shards::bundle::BUNDLE_CLONES,
        /// Repositories whose packs hold fewer bytes than this get no
        /// bundle (a clone of them is cheap anyway).
        bundle_uri_min_bytes: u64 = guts_shards::bundle::BUNDLE_MIN_BYTES,
        /// PEM certificate chain (leaf first) for TLS (rustls) on the API
        /// address; needs `tls_key`. Reloaded on SIGHUP.
        #[default_doc = "none (plain HTTP)"]
        tls_cert: Option<PathBuf> = None,
        /// PEM private key for `tls_cert`.
        #[default_doc = "none"]
        tls_key: Option<PathBuf> = None,
        /// Genesis file naming the validator set: present on a node of a network.
        #[default_doc = "none (a standalone single validator)"]
        genesis_file: Option<PathBuf> = None,
        /// File holding this node's ed25519 private key (written by
        /// `keygen`, mode 0600).
        #[default_doc = "none"]
        private_key_file: Option<PathBuf> = None,
        /// Hex-encoded ed25519 private key of this validator (on the command
        /// line it is visible to other local users: prefer `private_key_file`).
        #[default_doc = "none"]
        #[secret = true]
        private_key: Option<Secret> = None,
        /// Take part in consensus (needs `genesis_file`).
        consensus_enabled: bool = false,
        /// Use Simplex BFT for consensus (needs `genesis_file`).
        consensus_use_simplex_bft: bool = false,
        /// Log format on stderr: `text` or `json` (one JSON event per line).
        /// The filter is `GUTS_LOG` (`info` by default; `debug`,
        /// `guts_shards=debug`, ...).
        log_format: LogFormat = LogFormat::Text,
    }
}

/// guts-node: a git host node (smart HTTP, consensus-ordered ref updates).
#[derive(Debug, Clone, Parser)]
#[command(name = "guts-node", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// TOML configuration file.
    #[arg(long, env = "GUTS_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// Every setting's flag (see [`NodeSettings`] and [`Limits`]).
    #[command(flatten)]
    pub flags: SettingFlags,
}

/// How log events are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per event and line.
    Json,
}

impl SettingValue for LogFormat {
    fn parse_setting(text: &str) -> Result<Self, String> {
        match text {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err("expected text or json".into()),
        }
    }
    fn to_toml(&self) -> Option<String> {
        Some(match self {
            LogFormat::Text => "\"text\"".into(),
            LogFormat::Json => "\"json\"".into(),
        })
    }
}

/// Subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Run the node (the default).
    Run,
    /// Print the effective configuration and exit (`config show`, the default).
    Config {
        #[command(subcommand)]
        action: Option<ConfigCommand>,
    },
    /// Ask a running node (at --api-addr) how it is: version, role, key,
    /// height, peers, repositories, disk use and health. Exit 0 when it is
    /// ready, 3 when it answers but is not ready, 1 when it cannot be asked.
    Status {
        /// One JSON object instead of lines of text.
        #[arg(long)]
        json: bool,
    },
    /// Print this binary's version.
    Version,
    /// Write a new ed25519 private key (mode 0600) and print its public key.
    Keygen {
        /// File to write the private key to (never overwritten).
        #[arg(long)]
        output: PathBuf,
    },
    /// A local network of validators on this machine.
    #[command(subcommand)]
    Devnet(DevnetCommand),
    /// Check a data directory (packs, indexes, ref logs, connectivity)
    /// without changing it: exit 0 when consistent, 1 naming each damaged
    /// file or ref, 2 when it cannot check. Safe while the node runs.
    Verify,
    /// Write a consistent backup of a data directory (while the node runs
    /// or not): zstd-compressed tar of every repository's refs and the
    /// packs they need, the access table and the consensus state.
    Backup {
        /// The backup file to write (never overwritten).
        #[arg(long)]
        output: PathBuf,
        /// Also copy the node's private key and admin token (left out by
        /// default: a backup is then safe to store where secrets may not go).
        #[arg(long)]
        include_secrets: bool,
    },
    /// Restore a backup into a new, empty data directory (--data-dir).
    Restore {
        /// The backup file (written by `backup`).
        #[arg(long)]
        input: PathBuf,
    },
    /// Collect configuration (secrets redacted), status, metrics, logs and
    /// host facts into one tar.gz for a support request.
    Diagnostics {
        /// The archive to write, e.g. /tmp/diag-$(date +%Y%m%d-%H%M%S).tar.gz.
        #[arg(long)]
        output: PathBuf,
        /// A log file of the node to include (the last part of it).
        #[arg(long)]
        log_file: Option<PathBuf>,
    },
    /// Manage API tokens on a running node (with its admin token, from
    /// `DATA/admin.token` or `GUTS_TOKEN`).
    Token {
        #[command(subcommand)]
        action: TokenCommand,
    },
    /// Measure the data disk, check the host settings that matter, change
    /// what can be changed.
    #[command(subcommand)]
    Tune(crate::tune::TuneCommand),
}

/// `guts-node config ...`
#[derive(Debug, Clone, Subcommand)]
pub enum ConfigCommand {
    /// Print the effective configuration as TOML (secrets redacted), each
    /// value followed by where it came from: default, file, env or flag.
    Show,
}

/// `guts-node devnet ...`
#[derive(Debug, Clone, Subcommand)]
pub enum DevnetCommand {
    /// Write keys, DIR/genesis.json and DIR/node-<i>/config.toml.
    Init {
        #[arg(long, default_value_t = 4)]
        validators: usize,
        #[arg(long)]
        dir: PathBuf,
        /// Node i uses API port P+10i, metrics P+10i+1, p2p P+10i+2.
        #[arg(long, default_value_t = 18000)]
        base_port: u16,
    },
    /// Init (if DIR has no genesis yet) and run every node until Ctrl-C.
    Up {
        #[arg(long, default_value_t = 4)]
        validators: usize,
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value_t = 18000)]
        base_port: u16,
    },
}

/// `guts-node token ...`.
#[derive(Debug, Clone, Subcommand)]
pub enum TokenCommand {
    /// Create a token and print it (it is shown only once).
    Create {
        /// The user the token belongs to (the HTTP Basic user name).
        #[arg(long)]
        user: String,
        /// Limit the token to one repository, OWNER/NAME.
        #[arg(long)]
        repo: Option<String>,
        /// Allow pushes (and creating repositories within its scope).
        #[arg(long)]
        write: bool,
        /// Allow everything, the admin API included.
        #[arg(long)]
        admin: bool,
    },
    /// List tokens (never their secrets).
    List,
    /// Revoke a token by id.
    Revoke {
        /// The token's id (see `token list`).
        id: u64,
    },
}

/// Where the TLS certificate chain and key are.
#[derive(Debug, Clone)]
pub struct TlsPaths {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The resolved configuration of a node.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub data_dir: PathBuf,
    pub api_addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    pub p2p_addr: SocketAddr,
    pub shards: Option<usize>,
    pub io_memory_bytes: usize,
    pub shutdown_drain_ms: u64,
    pub tls: Option<TlsPaths>,
    pub limits: Limits,
    /// Genesis file: present on a node of a network.
    pub genesis_file: Option<PathBuf>,
    /// Where this node's key comes from.
    pub key: KeySource,
    pub finalize_wait_ms: u64,
    /// Quiet time before a repository is repacked (0: never).
    pub repack_quiet_ms: u64,
    /// Age of a pack before its unreachable objects are dropped (0: never).
    pub prune_unreachable_after_ms: u64,
    /// Bundle URIs: on, and when a repository gets a bundle.
    pub bundles: guts_shards::bundle::BundleSettings,
}

/// Where a node's private key comes from.
#[derive(Clone, Default)]
pub enum KeySource {
    #[default]
    None,
    Hex(String),
    File(PathBuf),
}

impl std::fmt::Debug for KeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeySource::None => f.write_str("none"),
            KeySource::Hex(_) => f.write_str("<redacted>"),
            KeySource::File(p) => write!(f, "file {}", p.display()),
        }
    }
}

impl NodeConfig {
    /// Merge flags over the environment over the file over defaults, and
    /// check that the settings fit together.
    pub fn resolve(cli: &Cli) -> anyhow::Result<NodeConfig> {
        NodeConfig::from_effective(&Effective::load(cli)?)
    }

    /// Check that the settings fit together and arrange them for the node.
    pub fn from_effective(e: &Effective) -> anyhow::Result<NodeConfig> {
        let n = &e.node;
        let key = match (&n.private_key, &n.private_key_file) {
            (Some(hex), Some(path)) => {
                // A key given on the command line or in the environment
                // overrides a key file named in the configuration file.
                match (e.source("private_key"), e.source("private_key_file")) {
                    (Source::File, Source::File) | (Source::Env | Source::Flag, Source::Env | Source::Flag) => anyhow::bail!(
                        "give the key once: --private-key (GUTS_PRIVATE_KEY) or --private-key-file, not both"
                    ),
                    (Source::File, _) => KeySource::File(path.clone()),
                    _ => KeySource::Hex(hex.0.clone()),
                }
            }
            (Some(hex), None) => KeySource::Hex(hex.0.clone()),
            (None, Some(p)) => KeySource::File(p.clone()),
            (None, None) => KeySource::None,
        };
        if n.genesis_file.is_none() {
            if n.consensus_enabled || n.consensus_use_simplex_bft {
                anyhow::bail!("--consensus-enabled and --consensus-use-simplex-bft need --genesis-file naming the validators; without them the node is a standalone single validator");
            }
            if !matches!(key, KeySource::None) {
                anyhow::bail!("a private key needs --genesis-file: a standalone node has no validator set to sign for");
            }
        }
        let tls = match (n.tls_cert.clone(), n.tls_key.clone()) {
            (Some(cert), Some(key)) => Some(TlsPaths { cert, key }),
            (None, None) => None,
            (Some(_), None) => anyhow::bail!("--tls-cert needs --tls-key"),
            (None, Some(_)) => anyhow::bail!("--tls-key needs --tls-cert"),
        };
        Ok(NodeConfig {
            data_dir: n.data_dir.clone(),
            api_addr: n.api_addr,
            metrics_addr: n.metrics_addr,
            p2p_addr: n.p2p_addr,
            shards: n.shards,
            io_memory_bytes: n.io_memory_bytes,
            shutdown_drain_ms: n.shutdown_drain_ms,
            tls,
            limits: e.limits.clone(),
            genesis_file: n.genesis_file.clone(),
            key,
            finalize_wait_ms: n.finalize_wait_ms,
            repack_quiet_ms: n.repack_quiet_ms,
            prune_unreachable_after_ms: n.prune_unreachable_after_ms,
            bundles: guts_shards::bundle::BundleSettings {
                enabled: n.bundle_uri_enabled,
                clones: n.bundle_uri_clones.max(1),
                min_bytes: n.bundle_uri_min_bytes,
            },
        })
    }
}

/// Every declared setting with the TOML section it lives in.
pub fn all_settings() -> impl Iterator<Item = (&'static str, &'static SettingInfo)> {
    NodeSettings::INFO
        .iter()
        .map(|i| (NodeSettings::SECTION, i))
        .chain(Limits::INFO.iter().map(|i| (Limits::SECTION, i)))
}

/// `limits.header_max_bytes`, or `data_dir` at the top level.
fn qualified(section: &str, key: &str) -> String {
    if section.is_empty() {
        key.to_string()
    } else {
        format!("{section}.{key}")
    }
}

/// The flags of every declared setting (`--header-max-bytes`), all
/// global, each checked by clap with the setting's own reader. Their
/// environment variables are read by [`Effective::load`], so that a bad
/// value is reported under the name it was given by.
#[derive(Debug, Clone, Default)]
pub struct SettingFlags {
    /// (section, key, text) of each flag given.
    pub given: Vec<(&'static str, &'static str, String)>,
}

impl clap::FromArgMatches for SettingFlags {
    fn from_arg_matches(m: &clap::ArgMatches) -> Result<Self, clap::Error> {
        let mut given = Vec::new();
        for (section, info) in all_settings() {
            if m.value_source(info.key) != Some(clap::parser::ValueSource::CommandLine) {
                continue;
            }
            let text = if info.is_switch {
                "true".to_string()
            } else {
                m.get_one::<String>(info.key).cloned().unwrap_or_default()
            };
            given.push((section, info.key, text));
        }
        Ok(SettingFlags { given })
    }

    fn update_from_arg_matches(&mut self, m: &clap::ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(m)?;
        Ok(())
    }
}

impl clap::Args for SettingFlags {
    fn augment_args(mut cmd: clap::Command) -> clap::Command {
        for (_, info) in all_settings() {
            // clap keeps names as `&'static str`: the few flag names are
            // made once per parse and live as long as the process.
            let leak = |s: String| -> &'static str { Box::leak(s.into_boxed_str()) };
            let mut arg = clap::Arg::new(info.key)
                .long(leak(info.flag()))
                .global(true)
                .help(format!("{} [env: {}]", info.summary(), info.env()));
            if info.is_switch {
                arg = arg.action(clap::ArgAction::SetTrue);
            } else {
                let check = info.check;
                arg = arg
                    .value_name(leak(info.key.to_ascii_uppercase()))
                    .value_parser(move |text: &str| check(text).map(|()| text.to_string()));
            }
            cmd = cmd.arg(arg);
        }
        cmd
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        Self::augment_args(cmd)
    }
}

/// Where a setting's value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Default,
    File,
    Env,
    Flag,
}

/// The effective settings and where each came from.
#[derive(Debug, Clone)]
pub struct Effective {
    pub node: NodeSettings,
    pub limits: Limits,
    /// By qualified key (`limits.header_max_bytes`); absent: default.
    pub sources: BTreeMap<String, Source>,
}

impl Effective {
    /// Defaults, then the TOML file, then the environment, then the
    /// flags. An unknown key or a value that does not read is refused,
    /// naming the key (or variable, or flag), the value and the reason.
    pub fn load(cli: &Cli) -> anyhow::Result<Effective> {
        let mut e = Effective {
            node: NodeSettings::default(),
            limits: Limits::default(),
            sources: BTreeMap::new(),
        };
        if let Some(path) = &cli.config {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            let table: toml::Table =
                toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
            e.apply_file(path, table)?;
        }
        for (section, info) in all_settings() {
            let var = info.env();
            let text = match std::env::var(&var) {
                Ok(text) if text.is_empty() => continue,
                Ok(text) => text,
                Err(std::env::VarError::NotPresent) => continue,
                Err(std::env::VarError::NotUnicode(_)) => {
                    anyhow::bail!("{var}: the value is not valid UTF-8")
                }
            };
            if let Err(reason) = e.set(section, info.key, &text, Source::Env) {
                let shown = if info.secret { "<redacted>" } else { &text };
                anyhow::bail!("{var}={shown:?}: {reason}");
            }
        }
        for (section, key, text) in &cli.flags.given {
            if let Err(reason) = e.set(section, key, text, Source::Flag) {
                anyhow::bail!("--{}: {reason}", key.replace('_', "-"));
            }
        }
        Ok(e)
    }

    fn set(&mut self, section: &str, key: &str, text: &str, source: Source) -> Result<(), String> {
        let set = if section == Limits::SECTION {
            self.limits.set(key, text)
        } else {
            self.node.set(key, text)
        };
        set.unwrap_or_else(|| Err("no such setting".into()))?;
        self.sources.insert(qualified(section, key), source);
        Ok(())
    }

    fn apply_file(&mut self, path: &Path, table: toml::Table) -> anyhow::Result<()> {
        for (key, value) in table {
            if key == Limits::SECTION {
                let toml::Value::Table(limits) = value else {
                    anyhow::bail!("{}: `{key}` must be a table ([{key}])", path.display());
                };
                for (key, value) in limits {
                    self.apply_file_value(path, Limits::SECTION, &key, &value)?;
                }
            } else {
                self.apply_file_value(path, NodeSettings::SECTION, &key, &value)?;
            }
        }
        Ok(())
    }

    fn apply_file_value(
        &mut self,
        path: &Path,
        section: &'static str,
        key: &str,
        value: &toml::Value,
    ) -> anyhow::Result<()> {
        let name = qualified(section, key);
        let Some((_, info)) = all_settings().find(|(s, i)| *s == section && i.key == key) else {
            let hint = match all_settings().find(|(_, i)| i.key == key) {
                Some(("", _)) => " (it belongs at the top level)".to_string(),
                Some((s, _)) => format!(" (it belongs in [{s}])"),
                None => String::new(),
            };
            anyhow::bail!(
                "{}: unknown key `{name}`{hint}; `guts-node config show` lists every setting",
                path.display()
            );
        };
        let text = match value {
            toml::Value::String(s) => s.clone(),
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            other => anyhow::bail!(
                "{}: `{name} = {other}`: expected a string, a whole number or true/false",
                path.display()
            ),
        };
        if let Err(reason) = self.set(section, key, &text, Source::File) {
            let shown = if info.secret {
                "<redacted>".to_string()
            } else {
                value.to_string()
            };
            anyhow::bail!("{}: `{name} = {shown}`: {reason}", path.display());
        }
        Ok(())
    }

    /// Where the setting `qualified` came from.
    pub fn source(&self, qualified: &str) -> Source {
        self.sources
            .get(qualified)
            .copied()
            .unwrap_or(Source::Default)
    }

    /// The effective configuration as TOML, secrets redacted, each value
    /// followed by a comment saying where it came from.
    pub fn to_toml(&self, file: Option<&Path>) -> String {
        let mut out = String::from(
            "# guts-node effective configuration: each value is followed by where it\n\
             # came from (default, file, env or flag).\n",
        );
        let mut section = "";
        for (s, info) in all_settings() {
            if s != section {
                section = s;
                out.push_str(&format!("\n[{s}]\n"));
            }
            let value = if s == Limits::SECTION {
                self.limits.get(info.key)
            } else {
                self.node.get(info.key)
            }
            .flatten();
            let from = match self.source(&qualified(s, info.key)) {
                Source::Default => "default".to_string(),
                Source::File => match file {
                    Some(f) => format!("file {}", f.display()),
                    None => "file".to_string(),
                },
                Source::Env => format!("env {}", info.env()),
                Source::Flag => format!("flag --{}", info.flag()),
            };
            match value {
                Some(_) if info.secret => {
                    out.push_str(&format!("{} = \"<redacted>\"  # {from}\n", info.key))
                }
                Some(v) => out.push_str(&format!("{} = {v}  # {from}\n", info.key)),
                None => out.push_str(&format!(
                    "# {} is unset: {}  # {from}\n",
                    info.key,
                    default_text(info, None)
                )),
            }
        }
        out
    }
}

/// A setting's default in words for the docs (`65536 (64 KiB)`).
fn default_text(info: &SettingInfo, value: Option<String>) -> String {
    if !info.default_doc.is_empty() {
        return info.default_doc.to_string();
    }
    let Some(v) = value else {
        return "none".to_string();
    };
    if info.key.ends_with("_bytes") {
        if let Ok(n) = v.parse::<u64>() {
            for (shift, unit) in [(30, "GiB"), (20, "MiB"), (10, "KiB")] {
                if n >= 1 << shift && n % (1 << shift) == 0 {
                    return format!("{n} ({} {unit})", n >> shift);
                }
            }
        }
    }
    v
}

/// The tables of docs/configuration.md, written from the declarations.
#[cfg(test)]
pub fn docs_tables() -> String {
    let mut out = String::new();
    let defaults = (NodeSettings::default(), Limits::default());
    for (section, title) in [
        (
            NodeSettings::SECTION,
            "## Node settings (top level of the TOML file)",
        ),
        (
            Limits::SECTION,
            "## Request limits (`[limits]` in the TOML file)",
        ),
    ] {
        out.push_str(&format!(
            "{title}\n\n| flag | environment | TOML key | default | meaning |\n| --- | --- | --- | --- | --- |\n"
        ));
        for (s, info) in all_settings().filter(|(s, _)| *s == section) {
            let value = if s == Limits::SECTION {
                defaults.1.get(info.key)
            } else {
                defaults.0.get(info.key)
            }
            .flatten();
            out.push_str(&format!(
                "| `--{}` | `{}` | `{}` | {} | {} |\n",
                info.flag(),
                info.env(),
                info.key,
                default_text(info, value),
                info.doc_line()
            ));
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    const DOC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/configuration.md");
    const BEGIN: &str = "<!-- settings: written from the declarations in src/config.rs and shards/src/config.rs; `UPDATE_DOCS=1 cargo test -p guts-node --bin guts-node docs` rewrites it -->\n";
    const END: &str = "<!-- settings end -->\n";

    /// docs/configuration.md lists every declared setting with its flag,
    /// variable, key and default, and names no flag or variable that does
    /// not exist.
    #[test]
    fn docs_configuration_matches_the_declarations() {
        let doc = std::fs::read_to_string(DOC).unwrap();
        let (Some(b), Some(e)) = (doc.find(BEGIN), doc.find(END)) else {
            panic!("{DOC} has no settings block");
        };
        let want = docs_tables();
        let have = &doc[b + BEGIN.len()..e];
        if have != want {
            if std::env::var_os("UPDATE_DOCS").is_some() {
                let new = format!("{}{want}{}", &doc[..b + BEGIN.len()], &doc[e..]);
                std::fs::write(DOC, new).unwrap();
            } else {
                panic!("{DOC} is out of date: run `UPDATE_DOCS=1 cargo test -p guts-node --bin guts-node docs`");
            }
        }
        // Every flag and variable the doc names exists.
        let mut flags = std::collections::BTreeSet::new();
        let mut envs: std::collections::BTreeSet<String> =
            ["GUTS_LOG", "GUTS_TOKEN"].map(String::from).into();
        fn walk(
            cmd: &clap::Command,
            flags: &mut std::collections::BTreeSet<String>,
            envs: &mut std::collections::BTreeSet<String>,
        ) {
            for arg in cmd.get_arguments() {
                if let Some(l) = arg.get_long() {
                    flags.insert(format!("--{l}"));
                }
                if let Some(e) = arg.get_env() {
                    envs.insert(e.to_string_lossy().into_owned());
                }
            }
            for sub in cmd.get_subcommands() {
                walk(sub, flags, envs);
            }
        }
        walk(&Cli::command(), &mut flags, &mut envs);
        for (_, info) in all_settings() {
            envs.insert(info.env());
        }
        // The generated section's marker comments name cargo's flags.
        let prose: String = doc
            .lines()
            .filter(|l| !l.trim_start().starts_with("<!--"))
            .collect::<Vec<_>>()
            .join("\n");
        let words = prose.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'));
        for word in words {
            if word
                .strip_prefix("--")
                .is_some_and(|f| f.starts_with(|c: char| c.is_ascii_alphabetic()))
            {
                assert!(flags.contains(word), "{DOC} names {word}, which is no flag");
            }
            // `GUTS_*` (the prefix alone) names no one variable.
            if word.starts_with("GUTS_") && word.len() > "GUTS_".len() {
                assert!(
                    envs.contains(word),
                    "{DOC} names {word}, which is read nowhere"
                );
            }
        }
    }

    #[test]
    fn every_setting_has_a_flag_a_variable_and_a_key() {
        let mut seen = std::collections::BTreeSet::new();
        for (_, info) in all_settings() {
            assert!(seen.insert(info.key), "{} declared twice", info.key);
            assert!(!info.summary().is_empty(), "{} has no doc", info.key);
        }
        let cmd = Cli::command();
        for (_, info) in all_settings() {
            assert!(
                cmd.get_arguments()
                    .any(|a| a.get_long() == Some(info.flag().as_str())),
                "--{} missing",
                info.flag()
            );
        }
    }
}
