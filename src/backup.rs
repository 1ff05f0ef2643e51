//! `guts-node backup` and `guts-node restore`.
//!
//! A backup is a zstd-compressed tar (format `guts-backup/1`):
//!
//! ```text
//! BACKUP.json                      manifest: format, node version, time,
//!                                  applied height, repositories, secrets?
//! data/access.json                 the access table (hashed tokens)
//! data/consensus/...               consensus state (network mode), with
//!                                  applied-height as read first
//! data/repos/O/N.git/config, HEAD, packed-refs
//! data/repos/O/N.git/refs.snapshot the refs at one ref-log sequence
//! data/repos/O/N.git/refs.log      empty
//! data/repos/O/N.git/objects/pack/pack-*.pack, pack-*.idx
//! data/node.key, data/admin.token  only with --include-secrets
//! ```
//!
//! It is taken while the node runs. Order matters, and is what makes the
//! state consistent: the applied height is read first, then the consensus
//! files are copied, then each repository is captured: its packs are
//! hard-linked into a staging directory under the data directory (packs
//! are immutable; a link keeps a pack a later repack deletes), its ref log
//! is read up to its last complete record, and every ref's objects are
//! checked present and connected in the linked packs (a pack that landed
//! after the links were made is linked and the check repeated). So every
//! repository's refs are at or after the recorded applied height, and
//! every block after it is re-delivered to a restored node and applies as
//! a no-op where the refs already have it.

use anyhow::{bail, Context};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The manifest's format name; `restore` refuses others.
pub const BACKUP_FORMAT: &str = "guts-backup/1";
/// Name of the manifest inside the archive.
const MANIFEST_NAME: &str = "BACKUP.json";
/// Prefix of the data directory's files inside the archive.
const DATA_PREFIX: &str = "data";
/// Rounds of "link the packs, read the refs, check them" per repository
/// before a backup gives up on it (each round only follows new pushes).
const CAPTURE_ROUNDS_MAX: usize = 8;
/// zstd compression level (the library's default: fast, decent ratio).
const ZSTD_LEVEL: i32 = 3;
/// Staging directories are named this plus the process id.
const STAGING_PREFIX: &str = ".backup-staging-";

/// The manifest written first in every backup.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Manifest {
    /// [`BACKUP_FORMAT`].
    pub format: String,
    /// Version of the node that wrote it.
    pub node_version: String,
    /// Seconds since the Unix epoch when the backup started.
    pub created_unix_secs: u64,
    /// The applied height recorded (network mode), read before anything else.
    pub applied_height: Option<u64>,
    /// Whether the node key and admin token are inside.
    pub secrets_included: bool,
    /// Each repository and the ref-log sequence its refs are at.
    pub repositories: Vec<RepoEntry>,
}

/// One repository in a backup.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct RepoEntry {
    /// `OWNER/NAME`.
    pub repo: String,
    /// Ref-log sequence number of the captured refs.
    pub ref_sequence: u64,
    /// Number of refs.
    pub refs: usize,
    /// Pack files (`pack-<hex>.pack`) included.
    pub packs: Vec<String>,
}

/// Removes the staging directory however the backup ends.
struct Staging(PathBuf);

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `guts-node backup`.
pub fn backup(data_dir: &Path, output: &Path, include_secrets: bool) -> anyhow::Result<()> {
    crate::verify::check_data_dir(data_dir)?;
    if output.exists() {
        bail!(
            "{} exists; a backup never overwrites a file (choose a new name)",
            output.display()
        );
    }
    if output.starts_with(data_dir) {
        bail!("the backup file must not be inside the data directory");
    }
    remove_stale_staging(data_dir);
    let staging = Staging(data_dir.join(format!("{STAGING_PREFIX}{}", std::process::id())));
    std::fs::create_dir_all(&staging.0)
        .with_context(|| format!("creating the staging directory {}", staging.0.display()))?;

    // 1. The applied height, before anything it could be ahead of.
    let consensus = data_dir.join("consensus");
    let applied_path = consensus.join("applied-height");
    let applied_height = match std::fs::read(&applied_path) {
        Ok(bytes) => Some(u64::from_le_bytes(bytes.as_slice().try_into().map_err(
            |_| anyhow::anyhow!("{} is damaged (not 8 bytes)", applied_path.display()),
        )?)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).context(format!("reading {}", applied_path.display())),
    };

    let tmp_output = tmp_name(output);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp_output)
        .with_context(|| format!("creating {}", tmp_output.display()))?;
    let written = (|| -> anyhow::Result<Manifest> {
        let encoder = zstd::Encoder::new(file, ZSTD_LEVEL)?;
        let mut tar = tar::Builder::new(encoder);

        // 2. Consensus state (copied into the staging directory first, so
        //    what goes into the archive is one read of each file).
        let mut stage_files: Vec<(PathBuf, String)> = Vec::new();
        if consensus.is_dir() {
            let copy = staging.0.join("consensus");
            copy_tree(&consensus, &copy)?;
            if let Some(h) = applied_height {
                std::fs::write(copy.join("applied-height"), h.to_le_bytes())?;
            }
            for path in files_under(&copy)? {
                let rel = path
                    .strip_prefix(&staging.0)?
                    .to_string_lossy()
                    .into_owned();
                if rel.ends_with(".tmp") {
                    continue;
                }
                stage_files.push((path, format!("{DATA_PREFIX}/{rel}")));
            }
        }
        let name = guts_shards::auth::ACCESS_FILE_NAME;
        let path = data_dir.join(name);
        if path.exists() {
            let copy = staging.0.join(name);
            std::fs::copy(&path, &copy).with_context(|| format!("copying {}", path.display()))?;
            stage_files.push((copy, format!("{DATA_PREFIX}/{name}")));
        }
        if include_secrets {
            for name in [guts_shards::auth::ADMIN_TOKEN_FILE_NAME, "node.key"] {
                let path = data_dir.join(name);
                if path.exists() {
                    let copy = staging.0.join(name);
                    std::fs::copy(&path, &copy)
                        .with_context(|| format!("copying {}", path.display()))?;
                    stage_files.push((copy, format!("{DATA_PREFIX}/{name}")));
                }
            }
        }

        // 3. Every repository at one ref-log position with the packs it needs.
        let mut repositories = Vec::new();
        let mut repo_files = Vec::new();
        for (owner, name) in guts_shards::repo::list_repos(data_dir) {
            let (entry, files) = capture_repo(data_dir, &staging.0, &owner, &name)
                .with_context(|| format!("repository {owner}/{name}"))?;
            repositories.push(entry);
            repo_files.extend(files);
        }
        let manifest = Manifest {
            format: BACKUP_FORMAT.to_string(),
            node_version: env!("CARGO_PKG_VERSION").to_string(),
            created_unix_secs: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            applied_height,
            secrets_included: include_secrets,
            repositories,
        };
        let json = serde_json::to_vec_pretty(&manifest)?;
        append_bytes(&mut tar, MANIFEST_NAME, &json, 0o644)?;
        for (path, name) in stage_files.iter().chain(repo_files.iter()) {
            append_file(&mut tar, path, name)
                .with_context(|| format!("archiving {}", path.display()))?;
        }
        let encoder = tar.into_inner()?;
        let file = encoder.finish()?;
        file.sync_all()?;
        Ok(manifest)
    })();
    let manifest = match written {
        Ok(m) => m,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp_output);
            return Err(e);
        }
    };
    if let Err(e) = std::fs::hard_link(&tmp_output, output) {
        let _ = std::fs::remove_file(&tmp_output);
        return Err(e).context(format!("creating {}", output.display()));
    }
    let _ = std::fs::remove_file(&tmp_output);
    if let Some(parent) = output.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::File::open(parent)?.sync_all()?;
    }
    let size = std::fs::metadata(output).map(|m| m.len()).unwrap_or(0);
    println!(
        "backup: {} ({} repositories, applied height {}, {} bytes, secrets {})",
        output.display(),
        manifest.repositories.len(),
        manifest
            .applied_height
            .map(|h| h.to_string())
            .unwrap_or_else(|| "none (standalone node)".into()),
        size,
        if include_secrets {
            "INCLUDED: store this file as you store the node key"
        } else {
            "left out (node key, admin token)"
        }
    );
    Ok(())
}

/// Capture one repository into the staging directory: returns its
/// manifest entry and `(staged file, name in the archive)` pairs.
fn capture_repo(
    data_dir: &Path,
    staging: &Path,
    owner: &str,
    name: &str,
) -> anyhow::Result<(RepoEntry, Vec<(PathBuf, String)>)> {
    let src = guts_shards::repo::repo_dir(data_dir, owner, name);
    let rel = format!("repos/{owner}/{name}.git");
    let stage = staging.join(&rel);
    let stage_packs = stage.join("objects").join("pack");
    std::fs::create_dir_all(&stage_packs)?;
    let src_packs = src.join("objects").join("pack");
    let mut last_error = String::new();
    for _ in 0..CAPTURE_ROUNDS_MAX {
        link_packs(&src_packs, &stage_packs)?;
        let state = guts_io::refs::read_state(&src)
            .map_err(|e| anyhow::anyhow!("reading its ref store: {e}"))?;
        let store = guts_io::store::ObjectStore::open(&stage.join("objects"))
            .map_err(|e| anyhow::anyhow!("opening its packs: {e}"))?;
        let tips: Vec<guts_io::ObjectId> = state.refs.values().copied().collect();
        if !tips.is_empty() {
            if let Err(e) = guts_io::verify::walk_complete(&store, tips) {
                // A push landed (or a repack ran) after the packs were
                // linked: link again and re-read.
                last_error = e;
                continue;
            }
        }
        let snapshot = guts_io::refs::snapshot_file_bytes(&state);
        std::fs::write(stage.join(guts_io::refs::SNAPSHOT_FILE_NAME), snapshot)?;
        std::fs::write(stage.join(guts_io::refs::LOG_FILE_NAME), b"")?;
        std::fs::write(
            stage.join("packed-refs"),
            guts_io::refs::packed_refs_text(&state.refs),
        )?;
        std::fs::write(stage.join("HEAD"), format!("ref: {}\n", state.head))?;
        let config = std::fs::read(src.join("config")).unwrap_or_else(|_| {
            b"[core]\n\trepositoryformatversion = 0\n\tfilemode = true\n\tbare = true\n".to_vec()
        });
        std::fs::write(stage.join("config"), config)?;
        let mut files = Vec::new();
        let mut packs = Vec::new();
        for name in ["config", "HEAD", "packed-refs", "refs.snapshot", "refs.log"] {
            files.push((stage.join(name), format!("{DATA_PREFIX}/{rel}/{name}")));
        }
        // Only the packs that were checked (the store opened them all).
        for pack in store.packs() {
            let pack_path = pack.path().to_path_buf();
            let idx_path = pack_path.with_extension("idx");
            for p in [&pack_path, &idx_path] {
                let file = p
                    .file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned();
                files.push((
                    p.clone(),
                    format!("{DATA_PREFIX}/{rel}/objects/pack/{file}"),
                ));
            }
            packs.push(
                pack_path
                    .file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned(),
            );
        }
        return Ok((
            RepoEntry {
                repo: format!("{owner}/{name}"),
                ref_sequence: state.seq,
                refs: state.refs.len(),
                packs,
            },
            files,
        ));
    }
    bail!(
        "its refs kept naming objects missing from its packs after {CAPTURE_ROUNDS_MAX} rounds ({last_error}); run `guts-node verify` on the data directory"
    )
}

/// Hard-link (or, across file systems, copy) every complete pack of `from`
/// not yet in `to`: the index first, then the pack, so a pair whose pack
/// vanished meanwhile (a repack) is dropped rather than left half.
fn link_packs(from: &Path, to: &Path) -> anyhow::Result<()> {
    for (stem, has_pack, has_idx) in guts_io::verify::list_packs(from)? {
        if !(has_pack && has_idx) {
            continue;
        }
        let idx = format!("pack-{stem}.idx");
        let pack = format!("pack-{stem}.pack");
        if to.join(&pack).exists() {
            continue;
        }
        let linked = link_or_copy(&from.join(&idx), &to.join(&idx))
            .and_then(|()| link_or_copy(&from.join(&pack), &to.join(&pack)));
        if let Err(e) = linked {
            let _ = std::fs::remove_file(to.join(&idx));
            let _ = std::fs::remove_file(to.join(&pack));
            if e.kind() != std::io::ErrorKind::NotFound {
                return Err(e).context(format!("linking {}", from.join(&pack).display()));
            }
        }
    }
    Ok(())
}

fn link_or_copy(from: &Path, to: &Path) -> std::io::Result<()> {
    match std::fs::hard_link(from, to) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(e),
        Err(_) => std::fs::copy(from, to).map(|_| ()),
    }
}

/// Copy a directory tree (regular files and directories; nothing else).
fn copy_tree(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let entry = entry?;
        let kind = entry.file_type()?;
        let target = to.join(entry.file_name());
        if kind.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else if kind.is_file() {
            match std::fs::copy(entry.path(), &target) {
                Ok(_) => {}
                // Replaced (renamed over) while we listed: skip; its new
                // version is not needed for a consistent state.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e).context(format!("copying {}", entry.path().display())),
            }
        }
    }
    Ok(())
}

/// Regular files under `dir`, sorted.
fn files_under(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d)? {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                stack.push(entry.path());
            } else {
                out.push(entry.path());
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Append the file at `path` as `name`, keeping its permission bits (a
/// key stays 0600) and its modification time.
fn append_file<W: Write>(tar: &mut tar::Builder<W>, path: &Path, name: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let file = std::fs::File::open(path)?;
    let meta = file.metadata()?;
    let mut header = tar::Header::new_gnu();
    header.set_size(meta.len());
    header.set_mode(meta.mode() & 0o777);
    header.set_mtime(meta.mtime().max(0) as u64);
    header.set_entry_type(tar::EntryType::Regular);
    header.set_cksum();
    tar.append_data(&mut header, name, file)?;
    Ok(())
}

fn append_bytes<W: Write>(
    tar: &mut tar::Builder<W>,
    name: &str,
    data: &[u8],
    mode: u32,
) -> anyhow::Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_size(data.len() as u64);
    header.set_mode(mode);
    header.set_entry_type(tar::EntryType::Regular);
    header.set_cksum();
    tar.append_data(&mut header, name, data)?;
    Ok(())
}

/// `FILE.tmp-PID` next to `path`.
fn tmp_name(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp-{}", std::process::id()));
    path.with_file_name(name)
}

/// Staging directories of backups whose process is gone.
fn remove_stale_staging(data_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(data_dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix(STAGING_PREFIX) else {
            continue;
        };
        let Ok(pid) = pid.parse::<u32>() else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// `guts-node restore`: unpack into a temporary directory next to the
/// target, check it, then rename it into place.
pub fn restore(input: &Path, data_dir: &Path) -> anyhow::Result<()> {
    match std::fs::read_dir(data_dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                bail!(
                    "{} is not empty: restore only into a new or empty directory (nothing was changed)",
                    data_dir.display()
                );
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).context(format!("reading {}", data_dir.display())),
    }
    let file =
        std::fs::File::open(input).with_context(|| format!("opening {}", input.display()))?;
    let parent = match data_dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent)?;
    // Entries unpack to `container/data/...`; `container/data` becomes
    // the data directory once it verifies.
    let container = tmp_name(data_dir);
    let _ = std::fs::remove_dir_all(&container);
    std::fs::create_dir_all(&container)?;
    let cleanup = Staging(container.clone());
    let tmp = container.join(DATA_PREFIX);
    let decoder = zstd::Decoder::new(file)
        .with_context(|| format!("{} is not a backup (not zstd-compressed)", input.display()))?;
    let mut archive = tar::Archive::new(decoder);
    let mut manifest: Option<Manifest> = None;
    let entries = archive
        .entries()
        .with_context(|| format!("{} is not a backup (not a tar)", input.display()))?;
    for entry in entries {
        let mut entry = entry.with_context(|| {
            format!(
                "{} is not a backup, or is damaged or truncated",
                input.display()
            )
        })?;
        let path = entry.path()?.into_owned();
        if path == Path::new(MANIFEST_NAME) {
            let mut json = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut json)?;
            let m: Manifest = serde_json::from_slice(&json)
                .with_context(|| format!("{MANIFEST_NAME} in {}", input.display()))?;
            if m.format != BACKUP_FORMAT {
                bail!(
                    "{} has format {:?}; this node restores {BACKUP_FORMAT}",
                    input.display(),
                    m.format
                );
            }
            manifest = Some(m);
            continue;
        }
        if manifest.is_none() {
            bail!(
                "{} is not a guts-node backup (no {MANIFEST_NAME} first)",
                input.display()
            );
        }
        if !path.starts_with(DATA_PREFIX) {
            bail!("{}: unexpected entry {}", input.display(), path.display());
        }
        // `unpack_in` refuses entries that would land outside `container`.
        if !entry.unpack_in(&container)? {
            bail!("{}: unsafe entry {}", input.display(), path.display());
        }
    }
    let Some(manifest) = manifest else {
        bail!("{} is empty: not a guts-node backup", input.display());
    };
    // Shape the directory as the node makes it.
    for entry in &manifest.repositories {
        let Some((owner, name)) = entry.repo.split_once('/') else {
            bail!("manifest names repository {:?}", entry.repo);
        };
        let dir = guts_shards::repo::repo_dir(&tmp, owner, name);
        for sub in ["refs/heads", "refs/tags", "objects/info", "objects/pack"] {
            std::fs::create_dir_all(dir.join(sub))?;
        }
    }
    std::fs::create_dir_all(tmp.join("repos"))?;
    let report = crate::verify::verify_data_dir(&tmp);
    if !report.is_consistent() {
        crate::verify::print(&tmp, &report);
        bail!(
            "the restored data does not verify (see above); {} was not created",
            data_dir.display()
        );
    }
    // Durable before it gets its name: every file, then every directory.
    for path in files_under(&tmp)? {
        std::fs::File::open(&path)?.sync_all()?;
    }
    let mut dirs = vec![tmp.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir)?.flatten() {
            if entry.file_type()?.is_dir() {
                dirs.push(entry.path());
            }
        }
        std::fs::File::open(&dir)?.sync_all()?;
    }
    if data_dir.exists() {
        std::fs::remove_dir(data_dir)
            .with_context(|| format!("replacing the empty {}", data_dir.display()))?;
    }
    std::fs::rename(&tmp, data_dir)
        .with_context(|| format!("moving the restored data to {}", data_dir.display()))?;
    drop(cleanup);
    std::fs::File::open(&parent)?.sync_all()?;
    println!(
        "restore: {} ({} repositories, applied height {}, secrets {}) into {}",
        input.display(),
        manifest.repositories.len(),
        manifest
            .applied_height
            .map(|h| h.to_string())
            .unwrap_or_else(|| "none".into()),
        if manifest.secrets_included {
            "restored"
        } else {
            "not in the backup: a new admin token is created at start; give the node its key (--private-key-file) if it is a validator"
        },
        data_dir.display()
    );
    Ok(())
}
