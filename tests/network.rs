//! Networks of real guts-node processes on loopback: validators agree on
//! every ref update with Simplex BFT, packs travel between them, crashed
//! validators catch up, a full node follows and refuses pushes. Every
//! check goes through the real git client.

mod common;

use common::*;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The tests of this file run one at a time: each starts a network of up
/// to five nodes, and ports picked free by one test (the devnet's fixed
/// range above all) could otherwise be taken by another's nodes meanwhile.
static ONE_NETWORK_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_network_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_NETWORK_AT_A_TIME
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

/// Longest a network may take to agree on something in these tests.
const AGREE_TIMEOUT: Duration = Duration::from_secs(60);

struct Net {
    nodes: Vec<Node>,
    _dir: tempfile::TempDir,
}

fn keygen(path: &Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_guts-node"))
        .args(["keygen", "--output"])
        .arg(path)
        .output()
        .expect("keygen");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

/// `validators` validators plus `followers` full nodes, all started.
fn network(validators: usize, followers: usize, extra: &[&str]) -> Net {
    network_with_blocks_of(validators, followers, extra, 4096)
}

/// [`network`] with at most `max_batch_updates` ref updates in a block.
fn network_with_blocks_of(
    validators: usize,
    followers: usize,
    extra: &[&str],
    max_batch_updates: usize,
) -> Net {
    let dir = tempfile::tempdir().unwrap();
    let mut plans = Vec::new();
    let mut v_entries = Vec::new();
    let mut f_entries = Vec::new();
    for i in 0..validators + followers {
        let key = dir.path().join(format!("node-{i}.key"));
        let public = keygen(&key);
        let (api, metrics, p2p) = (addr(), addr(), addr());
        let entry = serde_json::json!({
            "name": format!("node-{i}"),
            "pubkey": public,
            "addr": p2p.to_string(),
        });
        if i < validators {
            let mut e = entry;
            e["api_url"] = serde_json::json!(format!("http://{api}"));
            v_entries.push(e);
        } else {
            f_entries.push(entry);
        }
        plans.push((key, api, metrics, p2p));
    }
    let genesis = serde_json::json!({
        "chain_id": "test-net",
        "validators": v_entries,
        "followers": f_entries,
        "consensus": {"leader_timeout_ms": 500, "notarization_timeout_ms": 1000,
                      "nullify_retry_ms": 500, "max_batch_updates": max_batch_updates,
                      "max_batch_delay_ms": 0},
    });
    let genesis_path = dir.path().join("genesis.json");
    std::fs::write(&genesis_path, genesis.to_string()).unwrap();
    let mut nodes = Vec::new();
    for (i, (key, api, metrics, p2p)) in plans.into_iter().enumerate() {
        let mut args = vec![
            "--genesis-file".to_string(),
            genesis_path.display().to_string(),
            "--private-key-file".to_string(),
            key.display().to_string(),
            "--shards".to_string(),
            "1".to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut node = Node {
            child: None,
            data_dir: dir.path().join(format!("node-{i}")),
            api,
            metrics,
            p2p,
            extra_args: args,
            log: dir.path().join(format!("node-{i}.log")),
            extra_env: Vec::new(),
            admin_token: String::new(),
            _tmp: None,
        };
        node.spawn();
        nodes.push(node);
    }
    Net { nodes, _dir: dir }
}

impl Net {
    fn logs(&self) -> String {
        self.nodes
            .iter()
            .enumerate()
            .map(|(i, n)| format!("=== node-{i}\n{}", tail(&n.log_text(), 40)))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

fn tail(s: &str, lines: usize) -> String {
    let v: Vec<&str> = s.lines().collect();
    v[v.len().saturating_sub(lines)..].join("\n")
}

/// Create `owner/name` through node `i` and wait until every running node has it.
fn create_everywhere(net: &mut Net, i: usize, owner: &str, name: &str) {
    net.nodes[i].create_repo(owner, name);
    let path = format!("/api/repos/{owner}/{name}");
    for (k, n) in net.nodes.iter_mut().enumerate() {
        if !n.alive() {
            continue;
        }
        let api = n.api;
        let ok = wait_until(AGREE_TIMEOUT, || {
            matches!(http(api, "GET", &path, &[], b""), Ok((200, _)))
        });
        assert!(ok, "node-{k} never saw {owner}/{name}\n{}", net.logs());
    }
}

/// Refs of `url` as the server advertises them.
fn remote_refs(scratch: &Path, url: &str) -> Vec<(String, String)> {
    server_refs(scratch, url)
}

fn wait_refs(
    net: &Net,
    scratch: &Path,
    nodes: &[usize],
    owner: &str,
    name: &str,
    want: &[(String, String)],
) {
    for &k in nodes {
        let url = net.nodes[k].url(owner, name);
        let ok = wait_until(AGREE_TIMEOUT, || remote_refs(scratch, &url) == want);
        assert!(
            ok,
            "node-{k} refs {:?} != {:?}\n{}",
            remote_refs(scratch, &url),
            want,
            net.logs()
        );
    }
}

fn clone_and_fsck(scratch: &Path, url: &str, to: &str) -> PathBuf {
    let dest = scratch.join(to);
    git_ok(
        scratch,
        &["clone", "--mirror", "-q", url, dest.to_str().unwrap()],
    );
    fsck(&dest);
    dest
}

#[test]
fn four_validators_replicate_survive_a_crash_and_catch_up() {
    let _serial = one_network_at_a_time();
    let mut net = network(4, 0, &[]);
    let scratch = tempfile::tempdir().unwrap();
    let s = scratch.path();
    create_everywhere(&mut net, 0, "alice", "hello");

    // A push to node 1 lands everywhere.
    let wt = new_worktree(s, "wt");
    let c1 = commit_file(&wt, "README", "hello\n", "first");
    git_ok(
        &wt,
        &[
            "push",
            "-q",
            &net.nodes[1].url("alice", "hello"),
            "HEAD:refs/heads/main",
        ],
    );
    let want = vec![("refs/heads/main".to_string(), c1.clone())];
    wait_refs(&net, s, &[0, 1, 2, 3], "alice", "hello", &want);
    for k in [0, 2, 3] {
        clone_and_fsck(
            s,
            &net.nodes[k].url("alice", "hello"),
            &format!("clone-{k}"),
        );
    }

    // A real repository's history travels too (packs of many objects).
    create_everywhere(&mut net, 2, "corp", "guts");
    let mirror = corpus_mirror(s, "guts");
    git_ok(
        &mirror,
        &["push", "-q", "--mirror", &net.nodes[2].url("corp", "guts")],
    );
    let corpus_refs = refs_of(&mirror);
    wait_refs(&net, s, &[0, 1, 3], "corp", "guts", &corpus_refs);
    clone_and_fsck(s, &net.nodes[3].url("corp", "guts"), "corpus-3");

    // One of four validators killed: pushes still finalize.
    net.nodes[3].kill9();
    let c2 = commit_file(&wt, "README", "two\n", "second");
    git_ok(
        &wt,
        &[
            "push",
            "-q",
            &net.nodes[0].url("alice", "hello"),
            "HEAD:refs/heads/main",
        ],
    );
    let want = vec![("refs/heads/main".to_string(), c2.clone())];
    wait_refs(&net, s, &[0, 1, 2], "alice", "hello", &want);

    // The killed validator restarts and catches up, packs included.
    net.nodes[3].spawn();
    wait_refs(&net, s, &[3], "alice", "hello", &want);
    clone_and_fsck(s, &net.nodes[3].url("alice", "hello"), "caught-up");
}

#[test]
fn concurrent_pushes_to_one_branch_have_exactly_one_winner() {
    let _serial = one_network_at_a_time();
    let mut net = network(4, 0, &[]);
    let scratch = tempfile::tempdir().unwrap();
    let s = scratch.path();
    create_everywhere(&mut net, 0, "race", "r");
    let mut handles = Vec::new();
    for k in 0..4 {
        let wt = new_worktree(s, &format!("wt{k}"));
        commit_file(&wt, "f", &format!("writer {k}\n"), &format!("from {k}"));
        let url = net.nodes[k].url("race", "r");
        handles.push(std::thread::spawn(move || {
            let out = git(&wt)
                .args(["push", "--porcelain", &url, "HEAD:refs/heads/main"])
                .output()
                .unwrap();
            (
                out.status.success(),
                String::from_utf8_lossy(&out.stdout).to_string(),
            )
        }));
    }
    let results: Vec<(bool, String)> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let winners = results.iter().filter(|(ok, _)| *ok).count();
    assert_eq!(winners, 1, "exactly one push wins: {results:?}");
    for (ok, out) in &results {
        if !ok {
            assert!(
                out.contains("!") || out.contains("rejected") || out.contains("stale"),
                "{out}"
            );
        }
    }
    let url0 = net.nodes[0].url("race", "r");
    let want = remote_refs(s, &url0);
    assert_eq!(want.len(), 1);
    wait_refs(&net, s, &[0, 1, 2, 3], "race", "r", &want);
}

#[test]
fn no_quorum_fails_cleanly_and_resumes() {
    let _serial = one_network_at_a_time();
    let mut net = network(4, 0, &["--finalize-wait-ms", "4000"]);
    let scratch = tempfile::tempdir().unwrap();
    let s = scratch.path();
    create_everywhere(&mut net, 0, "q", "r");
    net.nodes[2].kill9();
    net.nodes[3].kill9();
    let wt = new_worktree(s, "wt");
    let c1 = commit_file(&wt, "f", "1\n", "one");
    let started = Instant::now();
    let out = git(&wt)
        .args(["push", &net.nodes[0].url("q", "r"), "HEAD:refs/heads/main"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        !out.status.success(),
        "push without quorum must fail: {stderr}"
    );
    assert!(
        stderr.contains("not finalized") || stderr.contains("quorum"),
        "{stderr}"
    );
    assert!(started.elapsed() < Duration::from_secs(60));
    // Nothing half-applied on the nodes that are up.
    for k in [0, 1] {
        let refs = remote_refs(s, &net.nodes[k].url("q", "r"));
        assert!(
            refs.is_empty() || refs == vec![("refs/heads/main".to_string(), c1.clone())],
            "{refs:?}"
        );
    }
    // One validator returns: the network finalizes again.
    net.nodes[2].spawn();
    let c2 = commit_file(&wt, "f", "2\n", "two");
    let ok = wait_until(AGREE_TIMEOUT, || {
        git(&wt)
            .args([
                "push",
                "-f",
                "-q",
                &net.nodes[1].url("q", "r"),
                "HEAD:refs/heads/main",
            ])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    });
    assert!(ok, "push after a validator returned\n{}", net.logs());
    let want = vec![("refs/heads/main".to_string(), c2)];
    wait_refs(&net, s, &[0, 1, 2], "q", "r", &want);
}

/// A push of more refs than one block may hold: cut into several
/// transactions when it is not atomic (every ref lands everywhere), refused
/// whole with a clear reason when it is atomic (nothing lands).
#[test]
fn a_push_larger_than_a_block_is_cut_and_an_atomic_one_refused() {
    let _serial = one_network_at_a_time();
    let mut net = network_with_blocks_of(4, 0, &[], 50);
    let scratch = tempfile::tempdir().unwrap();
    let s = scratch.path();
    create_everywhere(&mut net, 0, "big", "b");
    let wt = new_worktree(s, "wt");
    let c = commit_file(&wt, "f", "1\n", "one");
    let branches = |prefix: &str, n: usize| -> String {
        (0..n)
            .map(|k| format!("create refs/heads/{prefix}-{k} HEAD\n"))
            .collect()
    };
    let feed = |input: String| {
        git_with_input(&wt, &["update-ref", "--stdin"], input.as_bytes());
    };
    feed(branches("many", 300));
    let url = net.nodes[1].url("big", "b");
    let out = git(&wt)
        .args(["push", &url, "refs/heads/*:refs/heads/*"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        net.logs()
    );
    let want = refs_of(&wt);
    assert_eq!(want.len(), 301);
    wait_refs(&net, s, &[0, 1, 2, 3], "big", "b", &want);
    clone_and_fsck(s, &net.nodes[3].url("big", "b"), "clone-3");

    // Atomic and larger than a block: refused before anything is ordered.
    feed(branches("atomic", 120));
    let out = git(&wt)
        .args([
            "push",
            "--atomic",
            &url,
            "refs/heads/atomic-*:refs/heads/atomic-*",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("does not fit one transaction"), "{stderr}");
    // A later push is ordered after anything the refused one could have
    // caused: once it is everywhere, no node holds an `atomic-` branch.
    let c2 = commit_file(&wt, "f", "2\n", "two");
    git_ok(&wt, &["push", "-q", &url, "HEAD:refs/heads/main"]);
    let mut want: Vec<(String, String)> = want
        .into_iter()
        .map(|(n, o)| {
            if n == "refs/heads/main" {
                (n, c2.clone())
            } else {
                (n, o)
            }
        })
        .collect();
    want.sort();
    assert_ne!(c, c2);
    wait_refs(&net, s, &[0, 1, 2, 3], "big", "b", &want);
}

#[test]
fn a_full_node_follows_serves_clones_and_refuses_pushes() {
    let _serial = one_network_at_a_time();
    let mut net = network(4, 1, &[]);
    let scratch = tempfile::tempdir().unwrap();
    let s = scratch.path();
    create_everywhere(&mut net, 0, "f", "r");
    let wt = new_worktree(s, "wt");
    let c1 = commit_file(&wt, "f", "1\n", "one");
    git_ok(
        &wt,
        &[
            "push",
            "-q",
            &net.nodes[0].url("f", "r"),
            "HEAD:refs/heads/main",
        ],
    );
    let want = vec![("refs/heads/main".to_string(), c1.clone())];
    wait_refs(&net, s, &[4], "f", "r", &want);
    clone_and_fsck(s, &net.nodes[4].url("f", "r"), "from-replica");
    consensus_is_reported(&net, &c1);

    let c2 = commit_file(&wt, "f", "2\n", "two");
    let out = git(&wt)
        .args(["push", &net.nodes[4].url("f", "r"), "HEAD:refs/heads/main"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("read replica"), "{stderr}");
    assert!(
        stderr.contains(&net.nodes[0].api.to_string()),
        "names a validator: {stderr}"
    );
    assert_ne!(rev_parse(&wt, "HEAD"), "", "{c2}");
    let (status, body) = http(
        net.nodes[4].api,
        "POST",
        "/api/repos",
        &[("Content-Type", "application/json")],
        br#"{"owner":"x","name":"y"}"#,
    )
    .unwrap();
    assert_eq!(status, 403, "{}", String::from_utf8_lossy(&body));
}

/// The ref log sequence and applied height of `owner/name` on node `i`.
fn ref_log_position(net: &Net, i: usize, owner: &str, name: &str) -> (u64, u64) {
    let dir = guts_shards::repo::repo_dir(&net.nodes[i].data_dir, owner, name);
    let state = guts_io::refs::read_state(&dir).unwrap();
    (state.seq, state.height)
}

#[test]
fn blocks_delivered_again_are_skipped_by_repositories_that_hold_them() {
    let _serial = one_network_at_a_time();
    let mut net = network(4, 1, &[]);
    let scratch = tempfile::tempdir().unwrap();
    let s = scratch.path();
    create_everywhere(&mut net, 0, "f", "r");
    let wt = new_worktree(s, "wt");
    let a = commit_file(&wt, "f", "1\n", "one");
    let url = net.nodes[0].url("f", "r");
    git_ok(&wt, &["push", "-q", &url, "HEAD:refs/heads/main"]);
    let want = vec![("refs/heads/main".to_string(), a.clone())];
    wait_refs(&net, s, &[4], "f", "r", &want);

    // The full node's consensus state at this point (it votes on nothing,
    // so going back in time is safe for the network).
    let follower = 4;
    net.nodes[follower].kill9();
    let consensus = net.nodes[follower].data_dir.join("consensus");
    let saved = scratch.path().join("consensus-then");
    copy_dir(&consensus, &saved);
    net.nodes[follower].spawn();

    // main goes A -> B -> A, then a marker branch shows all of it arrived.
    let b = commit_file(&wt, "f", "2\n", "two");
    git_ok(&wt, &["push", "-q", &url, "HEAD:refs/heads/main"]);
    git_ok(
        &wt,
        &[
            "push",
            "-q",
            "--force",
            &url,
            &format!("{a}:refs/heads/main"),
        ],
    );
    git_ok(
        &wt,
        &["push", "-q", &url, &format!("{b}:refs/heads/marker")],
    );
    let want = vec![
        ("refs/heads/main".to_string(), a.clone()),
        ("refs/heads/marker".to_string(), b.clone()),
    ];
    wait_refs(&net, s, &[0, follower], "f", "r", &want);
    let (seq, height) = ref_log_position(&net, follower, "f", "r");
    assert!(height > 0, "the follower recorded no height");

    // The full node restarts with consensus state from before those blocks,
    // as after a crash between applying blocks and recording them: they are
    // delivered again.
    net.nodes[follower].kill9();
    std::fs::remove_dir_all(&consensus).unwrap();
    copy_dir(&saved, &consensus);
    net.nodes[follower].spawn();
    create_everywhere(&mut net, 0, "f", "after");
    wait_refs(&net, s, &[follower], "f", "r", &want);
    // Nothing was applied twice: main never went back to B on the way.
    assert_eq!(
        ref_log_position(&net, follower, "f", "r"),
        (seq, height),
        "the repository replayed blocks it held\n{}",
        net.logs()
    );
    clone_and_fsck(s, &net.nodes[follower].url("f", "r"), "replica");
}

/// A base port with the 3 ports of each of `nodes` devnet nodes free.
fn devnet_base_port(nodes: usize) -> u16 {
    for _ in 0..200 {
        let base = free_port();
        if base as usize + 10 * nodes + 2 > u16::MAX as usize {
            continue;
        }
        let all_free = (0..nodes).all(|i| {
            (0..3).all(|k| {
                std::net::TcpListener::bind(("127.0.0.1", base + 10 * i as u16 + k)).is_ok()
            })
        });
        if all_free {
            return base;
        }
    }
    panic!("no free port range for a devnet");
}

#[test]
fn devnet_init_makes_a_network_with_one_admin_token() {
    let _serial = one_network_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("net");
    let base = devnet_base_port(4);
    let out = Command::new(env!("CARGO_BIN_EXE_guts-node"))
        .args(["devnet", "init", "--validators", "4", "--base-port"])
        .arg(base.to_string())
        .arg("--dir")
        .arg(&d)
        .output()
        .expect("devnet init");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = std::fs::read_to_string(d.join("admin.token")).unwrap();
    let token = token.trim().to_string();
    assert!(token.len() >= 32, "admin token {token:?}");
    // A second init over the same directory is refused, not merged.
    let again = Command::new(env!("CARGO_BIN_EXE_guts-node"))
        .args(["devnet", "init", "--validators", "4", "--dir"])
        .arg(&d)
        .output()
        .unwrap();
    assert!(!again.status.success());

    let at = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
    let nodes: Vec<Node> = (0..4)
        .map(|i| {
            let nd = d.join(format!("node-{i}"));
            let api = base + 10 * i as u16;
            let mut node = Node {
                child: None,
                data_dir: nd.join("data"),
                api: at(api),
                metrics: at(api + 1),
                p2p: at(api + 2),
                extra_args: vec![
                    "--config".into(),
                    nd.join("config.toml").display().to_string(),
                ],
                log: nd.join("node.log"),
                extra_env: Vec::new(),
                admin_token: String::new(),
                _tmp: None,
            };
            node.spawn();
            node
        })
        .collect();
    for n in &nodes {
        assert_eq!(n.admin_token, token, "every node takes the devnet's token");
    }

    // Create through node 2, push through node 3 with the one token, clone
    // from node 0.
    let scratch = tempfile::tempdir().unwrap();
    let s = scratch.path();
    nodes[2].create_repo("dev", "net");
    // Node 3 (pushed to) and node 0 (cloned from) apply the creation in
    // their own time.
    for k in [3, 0] {
        let api = nodes[k].api;
        assert!(
            wait_until(AGREE_TIMEOUT, || {
                matches!(
                    http(api, "GET", "/api/repos/dev/net", &[], b""),
                    Ok((200, _))
                )
            }),
            "node-{k} never saw dev/net"
        );
    }
    let wt = new_worktree(s, "wt");
    let c = commit_file(&wt, "f", "devnet\n", "first");
    let push_url = format!("http://admin:{token}@{}/git/dev/net.git", nodes[3].api);
    git_ok(&wt, &["push", "-q", &push_url, "HEAD:refs/heads/main"]);
    let url0 = format!("http://{}/git/dev/net.git", nodes[0].api);
    let want = vec![("refs/heads/main".to_string(), c)];
    assert!(wait_until(AGREE_TIMEOUT, || server_refs(s, &url0) == want));
    clone_and_fsck(s, &url0, "clone-0");
}

/// One scrape of node `i`: series to value.
fn scrape(net: &Net, i: usize) -> std::collections::HashMap<String, f64> {
    let (_, body) = http_anonymous(net.nodes[i].metrics, "GET", "/metrics", &[], b"").unwrap();
    String::from_utf8_lossy(&body)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

fn get_json(net: &Net, i: usize, path: &str) -> serde_json::Value {
    let (status, body) = http_anonymous(net.nodes[i].api, "GET", path, &[], b"").unwrap();
    assert_eq!(status, 200, "{path}: {}", String::from_utf8_lossy(&body));
    serde_json::from_slice(&body).unwrap()
}

/// Metrics, the consensus API and `status` of a network of 4 validators
/// (nodes 0-3) and a full node (4), after `pushed` was pushed to node 0
/// and finalized.
fn consensus_is_reported(net: &Net, pushed: &str) {
    let get = |m: &std::collections::HashMap<String, f64>, k: &str| m.get(k).copied();
    // Node 0 accepted the push: it measured the wait for its finalization.
    let m0 = scrape(net, 0);
    assert!(
        get(&m0, "guts_consensus_finalization_seconds_count") >= Some(1.0)
            && get(&m0, "guts_consensus_finalization_seconds_sum") > Some(0.0),
        "{m0:?}"
    );
    // Every validator (and the full node) applied the block carrying it.
    for i in 0..5 {
        let applied = wait_until(AGREE_TIMEOUT, || {
            let m = scrape(net, i);
            get(&m, "guts_consensus_batch_updates_count") >= Some(1.0)
                && get(&m, "guts_consensus_batch_updates_sum") >= Some(1.0)
        });
        assert!(
            applied,
            "node-{i}: no block of ref updates observed\n{:?}",
            scrape(net, i)
        );
    }
    // Bytes crossed the p2p network both ways (the counters start at 0):
    // on the full node, the blocks it followed in and the pack it asked a
    // peer for out; on a validator, votes both ways, which go on as long
    // as views move.
    let sent = "guts_p2p_bytes_total{direction=\"sent\"}";
    let received = "guts_p2p_bytes_total{direction=\"received\"}";
    for i in [0, 4] {
        let m = scrape(net, i);
        assert!(
            get(&m, sent) > Some(0.0) && get(&m, received) > Some(0.0),
            "node-{i}: {m:?}"
        );
    }
    let before = scrape(net, 0);
    let grew = wait_until(AGREE_TIMEOUT, || {
        let m = scrape(net, 0);
        get(&m, sent) > get(&before, sent) && get(&m, received) > get(&before, received)
    });
    assert!(grew, "p2p bytes stopped moving\n{:?}", scrape(net, 0));

    // Views move and peers connect on every node.
    let moved = wait_until(AGREE_TIMEOUT, || {
        let (a, b) = (scrape(net, 0), scrape(net, 4));
        get(&a, "guts_consensus_view") > Some(0.0)
            && get(&a, "guts_p2p_peers_connected") >= Some(3.0)
            && get(&b, "guts_p2p_peers_connected") >= Some(1.0)
            && get(&a, "guts_replication_lag_blocks").is_some()
    });
    assert!(moved, "view or peers never moved\n{:?}", scrape(net, 0));
    // The replica applied what the validators finalized: no lag left.
    let caught_up = wait_until(AGREE_TIMEOUT, || {
        scrape(net, 4).get("guts_replication_lag_blocks") == Some(&0.0)
    });
    assert!(caught_up, "{:?}", scrape(net, 4));
    let v0 = scrape(net, 0)["guts_consensus_view"];
    assert!(
        wait_until(AGREE_TIMEOUT, || scrape(net, 0)["guts_consensus_view"] > v0),
        "the view stopped moving"
    );

    let st = get_json(net, 0, "/api/consensus/status");
    assert_eq!(st["role"], "validator", "{st}");
    assert_eq!(st["chain_id"], "test-net");
    assert_eq!(st["validators"], 4);
    assert_eq!(st["quorum"], 3);
    assert!(st["public_key"].as_str().map(str::len) == Some(64), "{st}");
    let replica = get_json(net, 4, "/api/consensus/status");
    assert_eq!(replica["role"], "full", "{replica}");
    let vals = get_json(net, 0, "/api/consensus/validators");
    let list = vals["validators"].as_array().unwrap();
    assert_eq!(list.len(), 4, "{vals}");
    assert_eq!(list.iter().filter(|v| v["self"] == true).count(), 1);
    assert_eq!(vals["followers"].as_array().map(Vec::len), Some(1));

    // The replica's record holds the block that carried the push.
    let height = replica["height"].as_u64().unwrap();
    let found = (1..=height).rev().any(|h| {
        let b = get_json(net, 4, &format!("/api/consensus/blocks/{h}"));
        b["transactions"]
            .as_array()
            .map(|txs| txs.iter().any(|t| t["refs"][0]["new"] == pushed))
            .unwrap_or(false)
    });
    assert!(found, "no recorded block carries {pushed}");

    let out = Command::new(env!("CARGO_BIN_EXE_guts-node"))
        .args([
            "--api-addr",
            &net.nodes[4].api.to_string(),
            "status",
            "--json",
        ])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(out.status.code(), Some(0), "{v}");
    assert_eq!(v["role"], "full");
    assert!(v["peers"]["connected"].as_u64() >= Some(1), "{v}");
}
