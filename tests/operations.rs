//! Operator tools against real data: the data directory as C git reads it
//! (`packed-refs` and `HEAD` kept current), `verify` on healthy and damaged
//! data, `backup`/`restore` while pushes land, `diagnostics`, and every
//! command's refusal of bad arguments.

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

/// Longest the node may take to export refs after acknowledging a push.
const EXPORT_WAIT_MS: u64 = 20_000;

fn guts(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_guts-node"))
        .args(args)
        .env("GUTS_LOG", "warn")
        .output()
        .expect("run guts-node")
}

fn text(out: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `git --git-dir DIR for-each-ref`, as `(ref, oid)` sorted.
fn git_dir_refs(scratch: &Path, git_dir: &Path) -> Vec<(String, String)> {
    let arg = format!("--git-dir={}", git_dir.display());
    let out = git_ok(
        scratch,
        &[&arg, "for-each-ref", "--format=%(refname) %(objectname)"],
    );
    let mut v: Vec<(String, String)> = out
        .lines()
        .filter_map(|l| {
            l.split_once(' ')
                .map(|(a, b)| (a.to_string(), b.to_string()))
        })
        .collect();
    v.sort();
    v
}

/// A node with `o/r` holding `main`, `feature` and tag `v1`; returns the
/// work tree.
fn seeded(node: &Node, scratch: &Path) -> PathBuf {
    let url = node.create_repo("o", "r");
    let wt = new_worktree(scratch, "wt");
    commit_file(&wt, "a.txt", "one\n", "second");
    git_ok(&wt, &["branch", "feature"]);
    git_ok(&wt, &["tag", "-a", "-m", "release", "v1"]);
    git_ok(&wt, &["push", "-q", &url, "main", "feature", "v1"]);
    wt
}

fn repo_dir(node: &Node) -> PathBuf {
    node.data_dir.join("repos").join("o").join("r.git")
}

#[test]
fn c_git_reads_the_data_directory_and_a_copy_of_it() {
    let scratch = tempfile::tempdir().unwrap();
    let t = scratch.path();
    let node = Node::start();
    let wt = seeded(&node, t);
    let url = node.url("o", "r");
    let dir = repo_dir(&node);
    let served = server_refs(t, &url);
    let served: Vec<(String, String)> = served
        .into_iter()
        .filter(|(name, _)| name.starts_with("refs/"))
        .collect();
    assert_eq!(served.len(), 3, "{served:?}");
    assert!(
        wait_until(Duration::from_millis(EXPORT_WAIT_MS), || git_dir_refs(
            t, &dir
        ) == served),
        "C git sees {:?}, the node serves {served:?}",
        git_dir_refs(t, &dir)
    );
    let arg = format!("--git-dir={}", dir.display());
    assert_eq!(
        git_ok(t, &[&arg, "log", "-1", "--format=%H", "main"]).trim(),
        rev_parse(&wt, "main")
    );
    assert_eq!(
        git_ok(t, &[&arg, "symbolic-ref", "HEAD"]).trim(),
        "refs/heads/main"
    );

    // A later push moves main and deletes feature; the export follows.
    let next = commit_file(&wt, "b.txt", "two\n", "third");
    git_ok(&wt, &["push", "-q", &url, "main", ":feature"]);
    assert!(
        wait_until(Duration::from_millis(EXPORT_WAIT_MS), || {
            let refs = git_dir_refs(t, &dir);
            refs.iter()
                .any(|(n, o)| n == "refs/heads/main" && *o == next)
                && !refs.iter().any(|(n, _)| n == "refs/heads/feature")
        }),
        "export did not follow: {:?}",
        git_dir_refs(t, &dir)
    );

    // A copy of the directory clones with the real refs and passes fsck.
    let copy = t.join("copy.git");
    copy_dir(&dir, &copy);
    fsck(&copy);
    let clone = t.join("clone");
    git_ok(
        t,
        &[
            "clone",
            "-q",
            copy.to_str().unwrap(),
            clone.to_str().unwrap(),
        ],
    );
    assert_eq!(rev_parse(&clone, "HEAD"), next);
    assert_eq!(rev_parse(&clone, "v1^{}"), rev_parse(&wt, "v1^{}"));
    fsck(&clone);
}

#[test]
fn recovery_trusts_the_ref_log_not_packed_refs() {
    let scratch = tempfile::tempdir().unwrap();
    let t = scratch.path();
    let mut node = Node::start();
    let wt = seeded(&node, t);
    let url = node.url("o", "r");
    let before = server_refs(t, &url);
    let dir = repo_dir(&node);
    node.kill9();
    // Someone (or a crash) leaves packed-refs naming other values.
    let first = git_ok(&wt, &["rev-list", "--max-parents=0", "main"]);
    let forged = format!(
        "# pack-refs with: sorted \n{} refs/heads/main\n{} refs/heads/forged\n",
        first.trim(),
        first.trim()
    );
    std::fs::write(dir.join("packed-refs"), forged).unwrap();
    std::fs::write(dir.join("HEAD"), "ref: refs/heads/forged\n").unwrap();
    node.spawn();
    assert_eq!(server_refs(t, &url), before);
    // And the export is brought back in line with the log.
    let served: Vec<(String, String)> = before
        .into_iter()
        .filter(|(name, _)| name.starts_with("refs/"))
        .collect();
    assert!(
        wait_until(Duration::from_millis(EXPORT_WAIT_MS), || git_dir_refs(
            t, &dir
        ) == served),
        "export not repaired: {:?}",
        git_dir_refs(t, &dir)
    );
    let arg = format!("--git-dir={}", dir.display());
    assert_eq!(
        git_ok(t, &[&arg, "symbolic-ref", "HEAD"]).trim(),
        "refs/heads/main"
    );
}

/// `verify` and its exit status, stdout and stderr together.
fn verify(data_dir: &Path) -> (i32, String) {
    let out = guts(&["verify", "--data-dir", data_dir.to_str().unwrap()]);
    (out.status.code().unwrap_or(-1), text(&out))
}

/// The pack (path of its `.pack`) whose index holds `oid`.
fn pack_holding(repo: &Path, oid: &str) -> PathBuf {
    let dir = repo.join("objects").join("pack");
    for entry in std::fs::read_dir(&dir).unwrap().flatten() {
        let path = entry.path();
        if path.extension().and_then(|e| e.to_str()) != Some("idx") {
            continue;
        }
        let out = Command::new("git")
            .args(["show-index"])
            .stdin(std::fs::File::open(&path).unwrap())
            .output()
            .unwrap();
        if String::from_utf8_lossy(&out.stdout).contains(oid) {
            return path.with_extension("pack");
        }
    }
    panic!("no pack holds {oid}");
}

#[test]
fn verify_names_each_kind_of_damage_and_changes_nothing() {
    let scratch = tempfile::tempdir().unwrap();
    let t = scratch.path();
    let mut node = Node::start();
    let wt = seeded(&node, t);
    let url = node.url("o", "r");
    let tip = commit_file(&wt, "c.txt", "three\n", "fourth");
    git_ok(&wt, &["push", "-q", &url, "main"]);
    // A healthy data directory, checked while the node runs.
    let (code, out) = verify(&node.data_dir);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("ok       o/r") && out.contains("verify: consistent"),
        "{out}"
    );
    node.kill9();
    let (code, out) = verify(&node.data_dir);
    assert_eq!(code, 0, "{out}");

    let damaged = |label: &str, damage: &dyn Fn(&Path)| -> (String, PathBuf) {
        let copy = t.join(label);
        copy_dir(&node.data_dir, &copy);
        let repo = copy.join("repos/o/r.git");
        damage(&repo);
        let before = snapshot_files(&copy);
        let (code, out) = verify(&copy);
        assert_eq!(code, 1, "{label}: {out}");
        assert!(out.contains("DAMAGED  o/r"), "{label}: {out}");
        assert_eq!(
            snapshot_files(&copy),
            before,
            "{label}: verify changed files"
        );
        (out, repo)
    };

    // A flipped byte inside a pack: its checksum (and the entry) no longer match.
    let (out, repo) = damaged("flipped", &|repo| {
        let pack = pack_holding(repo, &tip);
        let mut bytes = std::fs::read(&pack).unwrap();
        let at = bytes.len() / 2;
        bytes[at] ^= 0x40;
        std::fs::write(&pack, bytes).unwrap();
    });
    let pack = pack_holding(&repo, &tip);
    assert!(
        out.contains(&format!("damaged: {}: checksum mismatch", pack.display())),
        "{out}"
    );

    // A truncated index.
    let (out, repo) = damaged("truncated", &|repo| {
        let idx = pack_holding(repo, &tip).with_extension("idx");
        let f = std::fs::OpenOptions::new().write(true).open(&idx).unwrap();
        let len = f.metadata().unwrap().len();
        f.set_len(len / 2).unwrap();
    });
    let idx = std::fs::read_dir(repo.join("objects/pack"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.extension().and_then(|e| e.to_str()) == Some("idx")
                && out.contains(&format!("damaged: {}: bad pack index", p.display()))
        });
    assert!(idx.is_some(), "truncated index not named: {out}");
    // The ref whose objects lived only there is named too.
    assert!(out.contains("damaged: refs/heads/main:"), "{out}");

    // A damaged last record of the ref log.
    let (out, repo) = damaged("torn", &|repo| {
        let log = repo.join("refs.log");
        let mut bytes = std::fs::read(&log).unwrap();
        assert!(!bytes.is_empty());
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(&log, bytes).unwrap();
    });
    assert!(
        out.contains(&format!(
            "damaged: {}: the last",
            repo.join("refs.log").display()
        )),
        "{out}"
    );

    // A pack a ref needs, gone.
    let (out, _) = damaged("deleted", &|repo| {
        let pack = pack_holding(repo, &tip);
        std::fs::remove_file(pack.with_extension("idx")).unwrap();
        std::fs::remove_file(&pack).unwrap();
    });
    assert!(
        out.contains(&format!("damaged: refs/heads/main: want {tip} is missing")),
        "{out}"
    );
    assert!(
        !out.contains("damaged: refs/tags/v1"),
        "v1 is intact: {out}"
    );
}

/// Every file under `dir` with its contents (to show nothing changed).
fn snapshot_files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push((p.clone(), std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn backup_while_pushing_restores_to_a_node_serving_the_same_refs() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    let scratch = tempfile::tempdir().unwrap();
    let t = scratch.path();
    let node = Node::start();
    seeded(&node, t);
    let url_r = node.url("o", "r");
    let url_busy = node.create_repo("o", "busy");
    let busy_wt = new_worktree(t, "busy-wt");
    git_ok(&busy_wt, &["push", "-q", &url_busy, "main"]);

    // Pushes to o/busy go on while the backup runs.
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicUsize::new(0));
    let attempted = Arc::new(Mutex::new(vec![rev_parse(&busy_wt, "main")]));
    let pusher = {
        let (stop, acked, attempted) = (stop.clone(), acked.clone(), attempted.clone());
        let (wt, url) = (busy_wt.clone(), url_busy.clone());
        std::thread::spawn(move || {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let c = commit_file(&wt, "n.txt", &format!("{i}\n"), &format!("n{i}"));
                attempted.lock().unwrap().push(c);
                if git_out(&wt, &["push", "-q", &url, "main"]).status.success() {
                    acked.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
    assert!(wait_until(Duration::from_secs(60), || acked
        .load(Ordering::Relaxed)
        >= 1));
    let backup = t.join("node.tar.zst");
    let out = guts(&[
        "backup",
        "--data-dir",
        node.data_dir.to_str().unwrap(),
        "--output",
        backup.to_str().unwrap(),
    ]);
    let acked_during = acked.load(Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    pusher.join().unwrap();
    assert!(out.status.success(), "backup: {}", text(&out));
    assert!(acked_during >= 1);
    // No staging left behind, no secrets inside.
    assert!(!std::fs::read_dir(&node.data_dir)
        .unwrap()
        .flatten()
        .any(|e| e
            .file_name()
            .to_string_lossy()
            .starts_with(".backup-staging")));
    let mut listing = String::new();
    let mut archive =
        tar::Archive::new(zstd::Decoder::new(std::fs::File::open(&backup).unwrap()).unwrap());
    for entry in archive.entries().unwrap() {
        listing.push_str(&entry.unwrap().path().unwrap().to_string_lossy());
        listing.push('\n');
    }
    assert!(listing.starts_with("BACKUP.json\n"), "{listing}");
    assert!(
        listing.contains("data/repos/o/r.git/refs.snapshot"),
        "{listing}"
    );
    assert!(!listing.contains("admin.token"), "{listing}");

    // The backup file is not overwritten.
    let again = guts(&[
        "backup",
        "--data-dir",
        node.data_dir.to_str().unwrap(),
        "--output",
        backup.to_str().unwrap(),
    ]);
    assert!(!again.status.success());
    assert!(
        text(&again).contains("never overwrites"),
        "{}",
        text(&again)
    );

    let restored = t.join("restored");
    let out = guts(&[
        "restore",
        "--input",
        backup.to_str().unwrap(),
        "--data-dir",
        restored.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "restore: {}", text(&out));
    let (code, report) = verify(&restored);
    assert_eq!(code, 0, "{report}");

    let mut second = Node::start();
    second.kill9();
    second.data_dir = restored.clone();
    second.spawn();
    assert_eq!(
        server_refs(t, &second.url("o", "r")),
        server_refs(t, &url_r),
        "o/r differs after restore"
    );
    let busy_refs = server_refs(t, &second.url("o", "busy"));
    let main = busy_refs
        .iter()
        .find(|(n, _)| n == "refs/heads/main")
        .map(|(_, o)| o.clone())
        .expect("o/busy main restored");
    assert!(
        attempted.lock().unwrap().contains(&main),
        "restored o/busy main {main} was never pushed"
    );
    for name in ["r", "busy"] {
        let clone = t.join(format!("clone-{name}"));
        git_ok(
            t,
            &[
                "clone",
                "-q",
                "--mirror",
                &second.url_anonymous("o", name),
                clone.to_str().unwrap(),
            ],
        );
        fsck(&clone);
    }
    // The restored node takes pushes.
    let url2 = second.url("o", "busy");
    let wt2 = t.join("wt2");
    git_ok(t, &["clone", "-q", &url2, wt2.to_str().unwrap()]);
    let c = commit_file(&wt2, "after.txt", "after\n", "after restore");
    git_ok(&wt2, &["push", "-q", &url2, "main"]);
    assert!(server_refs(t, &url2).contains(&("refs/heads/main".to_string(), c)));
}

#[test]
fn diagnostics_collects_status_and_keeps_secrets_out() {
    let scratch = tempfile::tempdir().unwrap();
    let t = scratch.path();
    let node = Node::start();
    seeded(&node, t);
    let token = node.admin_token.clone();
    assert!(token.starts_with("guts_"));
    let out_path = t.join("diag-test.tar.gz");
    let out = Command::new(env!("CARGO_BIN_EXE_guts-node"))
        .args([
            "diagnostics",
            "--data-dir",
            node.data_dir.to_str().unwrap(),
            "--api-addr",
            &node.api.to_string(),
            "--metrics-addr",
            &node.metrics.to_string(),
            "--log-file",
            node.log.to_str().unwrap(),
            "--output",
            out_path.to_str().unwrap(),
        ])
        .env("GUTS_TOKEN", &token)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let listing = Command::new("tar")
        .arg("-tzf")
        .arg(&out_path)
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout).into_owned();
    let extracted = t.join("x");
    std::fs::create_dir(&extracted).unwrap();
    let status = Command::new("tar")
        .arg("-xzf")
        .arg(&out_path)
        .arg("-C")
        .arg(&extracted)
        .status()
        .unwrap();
    assert!(status.success());
    let manifest =
        std::fs::read_to_string(extracted.join("diagnostics/MANIFEST.txt")).unwrap_or_default();
    for name in [
        "diagnostics/MANIFEST.txt",
        "diagnostics/config/resolved.txt",
        "diagnostics/config/environment.txt",
        "diagnostics/status/health.json",
        "diagnostics/metrics.txt",
        "diagnostics/logs/node.log",
        "diagnostics/data-dir.txt",
        "diagnostics/host/meminfo.txt",
        "diagnostics/host/df.txt",
        "diagnostics/host/summary.txt",
    ] {
        assert!(
            listing.contains(name),
            "{name} missing from {listing}\nMANIFEST.txt:\n{manifest}"
        );
    }
    let all: Vec<u8> = snapshot_files(&extracted)
        .into_iter()
        .flat_map(|(_, b)| b)
        .collect();
    let all = String::from_utf8_lossy(&all);
    assert!(!all.contains(&token), "the admin token leaked");
    assert!(
        !all.contains(&token["guts_".len()..]),
        "the admin token leaked"
    );
    assert!(all.contains("GUTS_TOKEN=<redacted>"));
    assert!(
        all.contains("node API") && all.contains(": answered"),
        "{all}"
    );
    assert!(all.contains("MemTotal"));

    // Without a node: the archive still comes, saying what is missing.
    let none = t.join("diag-none.tar.gz");
    let port = free_port();
    let out = guts(&[
        "diagnostics",
        "--data-dir",
        node.data_dir.to_str().unwrap(),
        "--api-addr",
        &format!("127.0.0.1:{port}"),
        "--metrics-addr",
        &format!("127.0.0.1:{port}"),
        "--output",
        none.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("did not answer"), "{}", text(&out));
}

#[test]
fn every_command_refuses_bad_arguments() {
    let scratch = tempfile::tempdir().unwrap();
    let t = scratch.path();
    let file = t.join("plain-file");
    std::fs::write(&file, "x").unwrap();
    let missing = t.join("missing");
    let nonempty = t.join("nonempty");
    std::fs::create_dir(&nonempty).unwrap();
    std::fs::write(nonempty.join("keep"), "keep").unwrap();
    let data = t.join("data");
    std::fs::create_dir_all(data.join("repos")).unwrap();
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec!["verify".into(), "--data-dir".into(), s(&missing)],
            "missing",
        ),
        (
            vec!["verify".into(), "--data-dir".into(), s(&file)],
            "not a directory",
        ),
        (
            vec!["verify".into(), "--data-dir".into(), s(&nonempty)],
            "not a guts-node data directory",
        ),
        (vec!["verify".into(), "--bogus".into()], "--bogus"),
        (
            vec!["backup".into(), "--data-dir".into(), s(&data)],
            "--output",
        ),
        (
            vec![
                "backup".into(),
                "--data-dir".into(),
                s(&missing),
                "--output".into(),
                s(&t.join("b")),
            ],
            "missing",
        ),
        (
            vec![
                "backup".into(),
                "--data-dir".into(),
                s(&data),
                "--output".into(),
                s(&file),
            ],
            "never overwrites",
        ),
        (
            vec!["restore".into(), "--input".into(), s(&file)],
            "--data-dir",
        ),
        (
            vec![
                "restore".into(),
                "--input".into(),
                s(&file),
                "--data-dir".into(),
                s(&nonempty),
            ],
            "not empty",
        ),
        (
            vec![
                "restore".into(),
                "--input".into(),
                s(&file),
                "--data-dir".into(),
                s(&t.join("new")),
            ],
            "not a backup",
        ),
        (
            vec![
                "restore".into(),
                "--input".into(),
                s(&missing),
                "--data-dir".into(),
                s(&t.join("new")),
            ],
            "missing",
        ),
        (
            vec!["diagnostics".into(), "--data-dir".into(), s(&data)],
            "--output",
        ),
        (
            vec![
                "diagnostics".into(),
                "--data-dir".into(),
                s(&data),
                "--output".into(),
                s(&file),
            ],
            "never overwrite",
        ),
    ];
    for (args, expected) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = guts(&args);
        assert!(!out.status.success(), "{args:?} succeeded: {}", text(&out));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(expected),
            "{args:?}: expected {expected:?} in the message: {}",
            text(&out)
        );
    }
    // Nothing was created or changed by the refusals.
    assert!(!t.join("new").exists());
    assert!(!t.join("b").exists());
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "x");
    assert_eq!(
        std::fs::read_to_string(nonempty.join("keep")).unwrap(),
        "keep"
    );
}
