//! A full disk, for real: the node's data directory on a small tmpfs.
//! Pushes that do not fit fail with an error git shows (never a 5xx, never
//! half-applied), clones keep working, readiness says the disk is full,
//! and once space returns pushes succeed again without a restart.
//!
//! Mounting needs root (CAP_SYS_ADMIN), as in CI; elsewhere the test says
//! SKIPPED and checks nothing.

mod common;
use common::*;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Size of the file system the data directory lives on.
const FS_BYTES: u64 = 160 << 20;
/// A file taking room that the test gives back later (the node is ready
/// with 64 MiB free: it starts with more than that, and gets it back).
const BALLAST_BYTES: usize = 80 << 20;
/// Hex noise pushed per filling push (about half of it on disk).
const FILL_BLOB_BYTES: usize = 8 << 20;

/// A tmpfs mounted for the test's life.
struct Mounted(PathBuf);

impl Mounted {
    fn new(dir: &Path) -> Option<Mounted> {
        std::fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o"])
            .arg(format!("size={FS_BYTES}"))
            .arg("tmpfs")
            .arg(dir)
            .output()
            .ok()?;
        if !out.status.success() {
            eprintln!(
                "SKIPPED: cannot mount a small tmpfs here (needs root): {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            return None;
        }
        Some(Mounted(dir.to_path_buf()))
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn noise(seed: u64, bytes: usize) -> String {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..bytes / 16)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            format!("{x:016x}")
        })
        .collect()
}

fn ready_status(node: &Node) -> u16 {
    http_anonymous(node.api, "GET", "/health/ready", &[], b"")
        .map(|(s, _)| s)
        .unwrap_or(0)
}

#[test]
fn a_full_disk_fails_pushes_cleanly_keeps_clones_and_recovers() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(fs) = Mounted::new(&tmp.path().join("fs")) else {
        return;
    };
    let at = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
    let mut node = Node {
        child: None,
        data_dir: fs.0.join("data"),
        api: at(free_port()),
        metrics: at(free_port()),
        p2p: at(free_port()),
        extra_args: Vec::new(),
        extra_env: Vec::new(),
        // The log stays off the full file system.
        log: tmp.path().join("node.log"),
        admin_token: String::new(),
        _tmp: None,
    };
    node.spawn();
    let ballast = fs.0.join("ballast");
    std::fs::write(&ballast, noise(7, BALLAST_BYTES)).unwrap();

    let s = tmp.path();
    let url = node.create_repo("alice", "full");
    let wt = new_worktree(s, "wt");
    let main = commit_file(&wt, "readme", "kept\n", "first");
    git_ok(&wt, &["push", "-q", &url, "HEAD:refs/heads/main"]);
    assert_eq!(ready_status(&node), 200);

    // Fill the disk with pushes of a branch until one does not fit.
    git_ok(&wt, &["checkout", "-q", "-b", "fill"]);
    let mut refused = None;
    let mut landed = None;
    for i in 0..(2 * FS_BYTES as usize / FILL_BLOB_BYTES + 2) {
        let tip = commit_file(
            &wt,
            &format!("fill{i}"),
            &noise(i as u64 + 100, FILL_BLOB_BYTES),
            &format!("fill {i}"),
        );
        let out = git_out(&wt, &["push", &url, "fill"]);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        if out.status.success() {
            landed = Some(tip);
        } else {
            refused = Some(stderr);
            break;
        }
    }
    let refused = refused.expect("the disk never filled");
    assert!(
        !refused.contains("HTTP 5") && !refused.contains("RPC failed"),
        "a full disk must not look like a server fault to git:\n{refused}"
    );
    assert!(
        refused.contains("space") || refused.contains("full"),
        "git should say the server is out of space:\n{refused}"
    );

    // Reads go on while the disk is full: clone and check everything.
    let want_main = ("refs/heads/main".to_string(), main.clone());
    let refs = server_refs(s, &url);
    assert!(refs.contains(&want_main), "{refs:?}");
    let clone = s.join("clone-full");
    git_ok(
        s,
        &["clone", "-q", "--mirror", &url, clone.to_str().unwrap()],
    );
    fsck(&clone);
    // Nothing half-applied: the branch is where the last acknowledged push
    // left it (or absent if none was).
    let fill = refs
        .iter()
        .find(|(r, _)| r == "refs/heads/fill")
        .map(|(_, o)| o.clone());
    assert_eq!(fill, landed, "{refs:?}");
    assert!(
        wait_until(Duration::from_secs(30), || ready_status(&node) == 503),
        "readiness did not report the full disk"
    );

    // Space returns: pushes succeed again, no restart.
    std::fs::remove_file(&ballast).unwrap();
    git_ok(&wt, &["checkout", "-q", "main"]);
    let after = commit_file(&wt, "after", "after the disk was full\n", "after");
    git_ok(&wt, &["push", "-q", &url, "main"]);
    assert!(
        wait_until(Duration::from_secs(30), || ready_status(&node) == 200),
        "readiness did not recover"
    );
    let refs = server_refs(s, &url);
    assert!(
        refs.contains(&("refs/heads/main".to_string(), after)),
        "{refs:?}"
    );
    let clone = s.join("clone-after");
    git_ok(
        s,
        &["clone", "-q", "--mirror", &url, clone.to_str().unwrap()],
    );
    fsck(&clone);
    // And the data directory is one C git accepts.
    git_ok(
        &node.data_dir.join("repos/alice/full.git"),
        &["fsck", "--strict", "--no-dangling"],
    );
    node.kill9();
}
