//! `guts-node devnet`: a local network of validators in one command.
//!
//! `init` writes, under DIR, one key and one `config.toml` per node and a
//! `genesis.json` naming them all; node i listens for git on port P+10i,
//! metrics on P+10i+1 and peers on P+10i+2, and keeps its data in
//! `DIR/node-<i>/data`. `up` does the same if DIR has no genesis yet and
//! runs every node (`guts-node --config DIR/node-<i>/config.toml`) until
//! Ctrl-C, each node's log in `DIR/node-<i>/node.log`. One admin token,
//! in `DIR/admin.token`, is valid on every node (each node's data
//! directory holds a copy).

use anyhow::Context;
use std::path::{Path, PathBuf};

use crate::config::{Cli, DevnetCommand};
use crate::consensus::engine::SecretKey;
use crate::consensus::genesis::{ConsensusParams, GenesisFile, ValidatorEntry};
use crate::consensus::keys;

/// Most validators `devnet` starts on one machine.
pub const DEVNET_VALIDATORS_MAX: usize = 32;

pub fn run(_cli: &Cli, cmd: DevnetCommand) -> anyhow::Result<()> {
    match cmd {
        DevnetCommand::Init {
            validators,
            dir,
            base_port,
        } => {
            init(&dir, validators, base_port)?;
            print_summary(&dir, validators, base_port);
            Ok(())
        }
        DevnetCommand::Up {
            validators,
            dir,
            base_port,
        } => {
            if !dir.join("genesis.json").exists() {
                init(&dir, validators, base_port)?;
            }
            up(&dir, validators, base_port)
        }
    }
}

fn ports(base: u16, i: usize) -> anyhow::Result<(u16, u16, u16)> {
    let api = base as usize + 10 * i;
    if api + 2 > u16::MAX as usize {
        anyhow::bail!("--base-port {base} leaves no room for {} nodes", i + 1);
    }
    Ok((api as u16, api as u16 + 1, api as u16 + 2))
}

fn node_dir(dir: &Path, i: usize) -> PathBuf {
    dir.join(format!("node-{i}"))
}

/// Write the keys, the genesis and the node configurations.
pub fn init(dir: &Path, validators: usize, base_port: u16) -> anyhow::Result<()> {
    if validators == 0 || validators > DEVNET_VALIDATORS_MAX {
        anyhow::bail!("--validators must be 1 to {DEVNET_VALIDATORS_MAX}");
    }
    if dir.join("genesis.json").exists() {
        anyhow::bail!(
            "{} already holds a devnet (genesis.json); use another --dir or remove it",
            dir.display()
        );
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let dir = dir
        .canonicalize()
        .with_context(|| format!("resolving {}", dir.display()))?;
    // One admin token for the whole devnet: every node gets a copy in its
    // data directory, and the operator one in DIR/admin.token.
    let token = guts_shards::auth::new_token().context("making the devnet's admin token")?;
    guts_shards::auth::write_admin_token(&dir, &token)
        .with_context(|| format!("writing {}/admin.token", dir.display()))?;
    let mut entries = Vec::with_capacity(validators);
    for i in 0..validators {
        let (api, metrics, p2p) = ports(base_port, i)?;
        let nd = node_dir(&dir, i);
        std::fs::create_dir_all(nd.join("data"))
            .with_context(|| format!("creating {}", nd.display()))?;
        guts_shards::auth::write_admin_token(&nd.join("data"), &token)
            .with_context(|| format!("writing the admin token of node-{i}"))?;
        let key = SecretKey::generate();
        let key_path = nd.join("node.key");
        keys::save(&key, &key_path).with_context(|| format!("writing {}", key_path.display()))?;
        entries.push(ValidatorEntry {
            name: format!("node-{i}"),
            pubkey: key.public().to_hex(),
            addr: format!("127.0.0.1:{p2p}"),
            weight: None,
            api_url: Some(format!("http://127.0.0.1:{api}")),
        });
        let config = format!(
            "# node-{i} of the devnet in {dir}\n\
             data_dir = {data:?}\n\
             api_addr = \"127.0.0.1:{api}\"\n\
             metrics_addr = \"127.0.0.1:{metrics}\"\n\
             p2p_addr = \"127.0.0.1:{p2p}\"\n\
             shards = 1\n\
             genesis_file = {genesis:?}\n\
             private_key_file = {key:?}\n",
            dir = dir.display(),
            data = nd.join("data").display().to_string(),
            genesis = dir.join("genesis.json").display().to_string(),
            key = key_path.display().to_string(),
        );
        std::fs::write(nd.join("config.toml"), config)?;
    }
    let genesis = GenesisFile {
        chain_id: "guts-devnet".into(),
        validators: entries,
        followers: Vec::new(),
        consensus: ConsensusParams::default(),
    };
    let text = serde_json::to_string_pretty(&genesis)?;
    std::fs::write(dir.join("genesis.json"), text + "\n")?;
    Ok(())
}

fn print_summary(dir: &Path, validators: usize, base_port: u16) {
    println!("devnet in {}:", dir.display());
    println!(
        "  admin token (user admin, valid on every node): {}",
        dir.join("admin.token").display()
    );
    for i in 0..validators {
        if let Ok((api, _, p2p)) = ports(base_port, i) {
            println!(
                "  node-{i}: git http://127.0.0.1:{api}/git/OWNER/NAME.git  p2p 127.0.0.1:{p2p}  config {}",
                node_dir(dir, i).join("config.toml").display()
            );
        }
    }
}

fn up(dir: &Path, validators: usize, base_port: u16) -> anyhow::Result<()> {
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe().context("locating the guts-node binary")?;
    let mut children = Vec::with_capacity(validators);
    for i in 0..validators {
        let nd = node_dir(dir, i);
        let log = std::fs::File::create(nd.join("node.log"))
            .with_context(|| format!("creating {}", nd.join("node.log").display()))?;
        let mut cmd = std::process::Command::new(&exe);
        cmd.arg("--config")
            .arg(nd.join("config.toml"))
            .stdout(log.try_clone()?)
            .stderr(log);
        // SAFETY: prctl in the child before exec; async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                // The nodes stop when this process does, however it ends.
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        children.push(cmd.spawn().with_context(|| format!("starting node-{i}"))?);
    }
    print_summary(dir, validators, base_port);
    println!("running {validators} nodes; logs in node-<i>/node.log; Ctrl-C stops them");
    let mut first_exit = None;
    for (i, mut c) in children.into_iter().enumerate() {
        let status = c.wait()?;
        if first_exit.is_none() && !status.success() {
            first_exit = Some((i, status));
        }
    }
    match first_exit {
        Some((i, status)) => anyhow::bail!("node-{i} exited with {status}"),
        None => Ok(()),
    }
}
