//! `guts-node verify --data-dir D`: check a data directory without
//! changing it. Every pack's checksum, every index against its pack, every
//! ref store (snapshot and log), and that every ref's objects are present
//! and connected ([`guts_io::verify`]); plus the node-wide files (access
//! table, applied height). Exit 0 when consistent, 1 with a report naming
//! each damaged file or ref, 2 when the check could not run.
//!
//! Safe while the node runs: the ref stores are read without their lock
//! and nothing is written.

use std::path::Path;

/// Exit status when damage was found.
pub const EXIT_DAMAGED: i32 = 1;
/// Exit status when the check could not run (bad arguments, not a data directory).
pub const EXIT_CANNOT_CHECK: i32 = 2;

/// What was found in a whole data directory.
#[derive(Debug, Default)]
pub struct DataReport {
    /// `(OWNER/NAME, report)` per repository, sorted.
    pub repos: Vec<(String, guts_io::verify::RepoReport)>,
    /// Damage outside the repositories: `(file, what)`.
    pub node_problems: Vec<(String, String)>,
    /// Entries under `repos/` that are not repositories.
    pub strays: Vec<String>,
}

impl DataReport {
    /// True when nothing is damaged.
    pub fn is_consistent(&self) -> bool {
        self.node_problems.is_empty() && self.repos.iter().all(|(_, r)| r.is_consistent())
    }
}

/// Refuse a path that is not a node's data directory, with the reason.
pub fn check_data_dir(dir: &Path) -> anyhow::Result<()> {
    let meta = std::fs::metadata(dir)
        .map_err(|e| anyhow::anyhow!("data directory {}: {e}", dir.display()))?;
    if !meta.is_dir() {
        anyhow::bail!("data directory {} is not a directory", dir.display());
    }
    if !dir.join("repos").is_dir() {
        anyhow::bail!(
            "{} is not a guts-node data directory (it has no repos/ directory)",
            dir.display()
        );
    }
    Ok(())
}

/// Check every repository and the node-wide files of `data_dir`.
pub fn verify_data_dir(data_dir: &Path) -> DataReport {
    let mut report = DataReport::default();
    for (owner, name) in guts_shards::repo::list_repos(data_dir) {
        let dir = guts_shards::repo::repo_dir(data_dir, &owner, &name);
        report.repos.push((
            format!("{owner}/{name}"),
            guts_io::verify::verify_repository(&dir),
        ));
    }
    report.strays = strays(data_dir);
    if data_dir.join(guts_shards::auth::ACCESS_FILE_NAME).exists() {
        if let Err(e) = guts_shards::auth::AccessTable::load(data_dir) {
            report.node_problems.push((
                data_dir
                    .join(guts_shards::auth::ACCESS_FILE_NAME)
                    .display()
                    .to_string(),
                e.to_string(),
            ));
        }
    }
    let applied = data_dir.join("consensus").join("applied-height");
    if let Ok(bytes) = std::fs::read(&applied) {
        if bytes.len() != 8 {
            report.node_problems.push((
                applied.display().to_string(),
                format!("{} bytes, expected an 8-byte height", bytes.len()),
            ));
        }
    }
    report
}

/// Names under `repos/` that the node does not take for repositories
/// (left out of every check, and of backups).
fn strays(data_dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(owners) = std::fs::read_dir(data_dir.join("repos")) else {
        return out;
    };
    for owner in owners.flatten() {
        let owner_name = owner.file_name().to_string_lossy().into_owned();
        if guts_shards::repo::check_name("owner", &owner_name).is_err() || !owner.path().is_dir() {
            out.push(format!("repos/{owner_name}"));
            continue;
        }
        let Ok(repos) = std::fs::read_dir(owner.path()) else {
            continue;
        };
        for repo in repos.flatten() {
            let file = repo.file_name().to_string_lossy().into_owned();
            let valid = file
                .strip_suffix(".git")
                .is_some_and(|n| guts_shards::repo::check_name("repository name", n).is_ok());
            // Repositories being created live under `.tmp-NAME-PID` for a moment.
            if !valid && !file.starts_with(".tmp-") {
                out.push(format!("repos/{owner_name}/{file}"));
            }
        }
    }
    out.sort();
    out
}

/// Print `report` for people: one line per healthy repository, every
/// problem of a damaged one, then a summary.
pub fn print(data_dir: &Path, report: &DataReport) {
    println!(
        "verify: {} ({} repositories)",
        data_dir.display(),
        report.repos.len()
    );
    for (key, r) in &report.repos {
        let counts = format!("{} refs, {} packs, {} objects", r.refs, r.packs, r.objects);
        if r.is_consistent() {
            println!("ok       {key} ({counts})");
        } else {
            println!("DAMAGED  {key} ({counts})");
            for p in &r.problems {
                println!("  damaged: {}: {}", p.subject, p.what);
            }
        }
        for n in &r.notes {
            println!("  note: {}: {}", n.subject, n.what);
        }
    }
    for (file, what) in &report.node_problems {
        println!("DAMAGED  {file}: {what}");
    }
    for stray in &report.strays {
        println!("note: {stray} is not a repository name the node serves; not checked");
    }
    let damaged = report
        .repos
        .iter()
        .filter(|(_, r)| !r.is_consistent())
        .count();
    if report.is_consistent() {
        println!("verify: consistent");
    } else {
        println!(
            "verify: DAMAGE FOUND in {damaged} of {} repositories{} (nothing was changed; see docs/operations.md, \"verify\")",
            report.repos.len(),
            if report.node_problems.is_empty() {
                ""
            } else {
                " and in node files"
            }
        );
    }
}

/// `guts-node verify`: returns the process exit status.
pub fn run(data_dir: &Path) -> i32 {
    if let Err(e) = check_data_dir(data_dir) {
        eprintln!("guts-node verify: {e:#}");
        return EXIT_CANNOT_CHECK;
    }
    let report = verify_data_dir(data_dir);
    print(data_dir, &report);
    if report.is_consistent() {
        0
    } else {
        EXIT_DAMAGED
    }
}
