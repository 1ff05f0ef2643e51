//! Crash and restart: kill -9 the node at random moments while pushes
//! stream in, start it again on the same data directory, and check that
//! every acknowledged push (git push exited 0) is there and that a clone
//! passes `git fsck --strict`.

mod common;
use common::*;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A small deterministic generator for kill moments.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

struct Attempt {
    branch: String,
    commit: String,
    acked: bool,
}

fn check_state(t: &Path, url: &str, attempts: &[Attempt], label: &str) {
    let refs: std::collections::BTreeMap<String, String> =
        server_refs(t, url).into_iter().collect();
    for a in attempts
        .iter()
        .filter(|a| a.acked && a.branch != "refs/heads/main")
    {
        assert_eq!(
            refs.get(&a.branch),
            Some(&a.commit),
            "{label}: acknowledged push of {} lost",
            a.branch
        );
    }
    // An unacknowledged push may or may not have landed, but never partly.
    for a in attempts
        .iter()
        .filter(|a| !a.acked && a.branch != "refs/heads/main")
    {
        if let Some(oid) = refs.get(&a.branch) {
            assert_eq!(
                oid, &a.commit,
                "{label}: {} has a commit nobody pushed to it",
                a.branch
            );
        }
    }
    // main is at the last acknowledged push or a later attempt.
    let main = refs.get("refs/heads/main").expect("main exists");
    let last_acked = attempts
        .iter()
        .rposition(|a| a.acked)
        .expect("some push acknowledged");
    assert!(
        attempts[last_acked..].iter().any(|a| &a.commit == main),
        "{label}: main is at {main}, before the last acknowledged push"
    );
    let dst = t.join(format!("check-{label}"));
    git_ok(
        t,
        &["clone", "--quiet", "--mirror", url, dst.to_str().unwrap()],
    );
    fsck(&dst);
    let cloned: std::collections::BTreeMap<String, String> = refs_of(&dst).into_iter().collect();
    assert_eq!(cloned, refs, "{label}: clone refs vs ls-remote");
    std::fs::remove_dir_all(&dst).unwrap();
}

#[test]
fn kill9_during_pushes_keeps_every_acknowledged_push() {
    let mut node = Node::start();
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path().to_path_buf();
    let url = node.create_repo("alice", "crash");
    let wt = new_worktree(&t, "wt");
    git_ok(&wt, &["remote", "add", "origin", &url]);
    git_ok(&wt, &["push", "--quiet", "origin", "main"]);
    let mut attempts = vec![Attempt {
        branch: "refs/heads/main".into(),
        commit: rev_parse(&wt, "main"),
        acked: true,
    }];
    let mut rng = Rng(0x2545_F491_4F6C_DD1D);
    for round in 0..10 {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(AtomicUsize::new(0));
        let handle = {
            let (wt, stop, acked) = (wt.clone(), stop.clone(), acked.clone());
            std::thread::spawn(move || {
                let mut log = Vec::new();
                for i in 0..200 {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let commit = commit_file(
                        &wt,
                        &format!("f{}", i % 7),
                        &format!("round {round} push {i}\n"),
                        &format!("r{round} p{i}"),
                    );
                    let branch = format!("refs/heads/r{round}-{i}");
                    let out = git_out(
                        &wt,
                        &[
                            "push",
                            "--quiet",
                            "origin",
                            "main",
                            &format!("HEAD:{branch}"),
                        ],
                    );
                    let ok = out.status.success();
                    log.push(Attempt {
                        branch,
                        commit,
                        acked: ok,
                    });
                    if !ok {
                        break;
                    }
                    acked.fetch_add(1, Ordering::SeqCst);
                }
                log
            })
        };
        // Let 1..=3 pushes be acknowledged, then kill at a random moment
        // (0..120 ms later: inside the next push or between two).
        let target = 1 + (rng.next() % 3) as usize;
        let reached = wait_until(Duration::from_secs(60), || {
            acked.load(Ordering::SeqCst) >= target || handle.is_finished()
        });
        assert!(reached, "round {round}: pushes did not progress");
        std::thread::sleep(Duration::from_millis(rng.next() % 120));
        node.kill9();
        stop.store(true, Ordering::SeqCst);
        let log = handle.join().expect("pusher thread");
        assert!(
            log.iter().filter(|a| a.acked).count() >= target,
            "round {round}: a push failed before the kill"
        );
        attempts.extend(log);
        node.spawn();
        check_state(&t, &url, &attempts, &format!("round{round}"));
    }
    let acked = attempts.iter().filter(|a| a.acked).count();
    eprintln!(
        "{acked} pushes acknowledged, {} cut off by a kill",
        attempts.len() - acked
    );
    assert!(acked >= 10, "only {acked} pushes acknowledged");
    // Still serving pushes after all that.
    commit_file(&wt, "final", "final\n", "final");
    git_ok(&wt, &["push", "--quiet", "origin", "main"]);
    assert_eq!(
        server_refs(&t, &url)
            .into_iter()
            .find(|(r, _)| r == "refs/heads/main")
            .map(|(_, o)| o),
        Some(rev_parse(&wt, "main"))
    );
}

#[test]
fn kill9_during_a_large_push_leaves_a_clean_repository() {
    let mut node = Node::start();
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path().to_path_buf();
    let url = node.create_repo("alice", "bigcrash");
    let src = corpus_mirror(&t, "guts");
    git_ok(&src, &["push", "--quiet", "--mirror", &url]);
    let before = server_refs(&t, &url);
    let wt = t.join("wt");
    git_ok(&t, &["clone", "--quiet", &url, wt.to_str().unwrap()]);
    // 24 MiB of incompressible bytes so the upload takes a while.
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let mut data = Vec::with_capacity(24 << 20);
    while data.len() < 24 << 20 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        data.extend_from_slice(&seed.to_le_bytes());
    }
    std::fs::write(wt.join("big.bin"), &data).unwrap();
    git_ok(&wt, &["add", "big.bin"]);
    git_ok(&wt, &["commit", "-q", "-m", "big"]);
    let mut child = git(&wt)
        .args(["push", "--quiet", "origin", "main:refs/heads/big"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Kill once the pack has started to arrive (a temporary pack file
    // appears under the data directory), or after 2 s at the latest.
    let data_dir = node.data_dir.clone();
    wait_until(Duration::from_secs(2), || tmp_pack_bytes(&data_dir) > 0);
    node.kill9();
    let status = child.wait().unwrap();
    eprintln!(
        "large push killed after {} bytes arrived; git push success: {}",
        tmp_pack_bytes(&data_dir),
        status.success()
    );
    node.spawn();
    let after = server_refs(&t, &url);
    if status.success() {
        // The push finished before the kill: it must be there.
        assert!(after
            .iter()
            .any(|(r, o)| r == "refs/heads/big" && *o == rev_parse(&wt, "main")));
    } else {
        assert!(
            after == before
                || after
                    .iter()
                    .any(|(r, o)| r == "refs/heads/big" && *o == rev_parse(&wt, "main"))
        );
    }
    let dst = t.join("after");
    git_ok(
        &t,
        &["clone", "--quiet", "--mirror", &url, dst.to_str().unwrap()],
    );
    fsck(&dst);
    assert_eq!(
        tmp_pack_bytes(&data_dir),
        0,
        "temporary pack files of the killed push left behind"
    );
    // The push can be repeated.
    git_ok(&wt, &["push", "--quiet", "origin", "main:refs/heads/big"]);
    let dst2 = t.join("after2");
    git_ok(
        &t,
        &["clone", "--quiet", "--mirror", &url, dst2.to_str().unwrap()],
    );
    fsck(&dst2);
    assert_eq!(rev_parse(&dst2, "refs/heads/big"), rev_parse(&wt, "main"));
}

/// Bytes in temporary pack files (`tmp_pack_*`, `tmp_idx_*`) under `dir`.
fn tmp_pack_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let name = e.file_name().to_string_lossy().to_string();
                if name.starts_with("tmp_pack_") || name.starts_with("tmp_idx_") {
                    total += e.metadata().map(|m| m.len()).unwrap_or(0);
                }
            }
        }
    }
    total
}
