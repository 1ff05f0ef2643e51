//! Clone storms computed once: identical clones arriving together join
//! one response being produced, later ones are answered from the recent
//! responses kept in memory, a push makes them stale, and every client
//! gets a correct clone whatever its pace, whatever happens to the
//! client that started the response, and whatever the cache's bounds
//! (down to none at all).

mod common;
use common::*;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The counters of the shared response table, by event.
fn cache_events(node: &Node) -> HashMap<String, u64> {
    let (status, body) = http_anonymous(node.metrics, "GET", "/metrics", &[], b"").unwrap();
    assert_eq!(status, 200);
    String::from_utf8(body)
        .unwrap()
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("guts_git_pack_cache_total{event=\"")?;
            let (event, value) = rest.split_once("\"} ")?;
            Some((event.to_string(), value.trim().parse().ok()?))
        })
        .collect()
}

fn event(m: &HashMap<String, u64>, name: &str) -> u64 {
    m.get(name).copied().unwrap_or(0)
}

/// A new repository on `node` holding corpus `name`.
fn seeded(node: &Node, tmp: &Path, owner: &str, name: &str) -> (PathBuf, String) {
    let src = corpus_mirror(tmp, name);
    let url = node.create_repo(owner, name);
    git_ok(&src, &["push", "--quiet", "--mirror", &url]);
    (src, url)
}

/// `n` clones of `url` at once (with `extra` arguments), each checked with
/// fsck and against `src`'s refs (for full clones).
fn concurrent_clones(tmp: &Path, url: &str, n: usize, tag: &str, extra: &[&str], src: &Path) {
    let threads: Vec<_> = (0..n)
        .map(|i| {
            let dir = tmp.join(format!("{tag}-{i}.git"));
            let url = url.to_string();
            let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
            std::thread::spawn(move || {
                let mut args = vec!["clone", "--quiet", "--bare", "--no-local"];
                args.extend(extra.iter().map(String::as_str));
                args.push(&url);
                args.push(dir.to_str().unwrap());
                let out = git_out(Path::new("/"), &args);
                (dir, out)
            })
        })
        .collect();
    for t in threads {
        let (dir, out) = t.join().unwrap();
        assert!(
            out.status.success(),
            "clone {}: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        fsck(&dir);
        if extra.is_empty() {
            assert_eq!(refs_of(&dir), refs_of(src), "refs of {}", dir.display());
        } else {
            let head = git_ok(tmp, &["ls-remote", url, "HEAD"]);
            let head = head.split_whitespace().next().expect("HEAD").to_string();
            assert_eq!(rev_parse(&dir, "HEAD"), head);
            assert!(shallow_of(&dir).contains(&head), "{}", dir.display());
        }
    }
}

#[test]
fn concurrent_identical_clones_are_computed_once() {
    let tmp = tempfile::tempdir().unwrap();
    let node = Node::start();
    let (src, url) = seeded(&node, tmp.path(), "storm", "ripgrep");
    for (tag, extra) in [("full", &[][..]), ("shallow", &["--depth", "1"][..])] {
        let before = cache_events(&node);
        concurrent_clones(tmp.path(), &url, 8, tag, extra, &src);
        let after = cache_events(&node);
        let d = |e: &str| event(&after, e) - event(&before, e);
        // One clone computed the response; the seven others joined it or
        // were answered from it.
        assert_eq!(d("miss"), 1, "{tag}: {after:?}");
        assert_eq!(d("join") + d("hit"), 7, "{tag}: {after:?}");
        assert_eq!(d("fallback"), 0, "{tag}: {after:?}");
    }
}

#[test]
fn a_push_makes_kept_responses_stale() {
    let tmp = tempfile::tempdir().unwrap();
    let node = Node::start();
    let (_src, url) = seeded(&node, tmp.path(), "storm", "guts");
    let first = tmp.path().join("first.git");
    git_ok(
        tmp.path(),
        &["clone", "--quiet", "--bare", &url, first.to_str().unwrap()],
    );
    let again = tmp.path().join("again.git");
    git_ok(
        tmp.path(),
        &["clone", "--quiet", "--bare", &url, again.to_str().unwrap()],
    );
    assert_eq!(event(&cache_events(&node), "hit"), 1);
    // A new branch.
    let wt = new_worktree(tmp.path(), "wt");
    let new = commit_file(&wt, "storm.txt", "after the first clones\n", "storm");
    git_ok(&wt, &["push", "--quiet", &url, "HEAD:refs/heads/storm"]);
    let second = tmp.path().join("second.git");
    git_ok(
        tmp.path(),
        &["clone", "--quiet", "--bare", &url, second.to_str().unwrap()],
    );
    fsck(&second);
    assert_eq!(rev_parse(&second, "refs/heads/storm"), new);
    let m = cache_events(&node);
    assert_eq!(event(&m, "miss"), 2, "{m:?}");
    assert_eq!(event(&m, "hit"), 1, "{m:?}");
}

/// A protocol v2 clone request for every ref tip of `url` (as a raw body).
fn clone_request(tmp: &Path, url: &str) -> Vec<u8> {
    let mut body = pkt(b"command=fetch\n");
    body.extend_from_slice(b"0001");
    body.extend_from_slice(&pkt(b"ofs-delta\n"));
    let mut oids: Vec<String> = server_refs(tmp, url).into_iter().map(|(_, o)| o).collect();
    oids.sort();
    oids.dedup();
    for oid in oids {
        body.extend_from_slice(&pkt(format!("want {oid}\n").as_bytes()));
    }
    body.extend_from_slice(&pkt(b"done\n"));
    body.extend_from_slice(b"0000");
    body
}

/// Send a v2 fetch of `owner/name` and return the open connection.
fn start_fetch(node: &Node, owner: &str, name: &str, body: &[u8]) -> TcpStream {
    let mut s = TcpStream::connect(node.api).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    let head = format!(
        "POST /git/{owner}/{name}.git/git-upload-pack HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/x-git-upload-pack-request\r\nGit-Protocol: version=2\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    s
}

/// Read `n` bytes (or up to the end) of a response.
fn read_some(s: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut out = vec![0; n];
    let mut got = 0;
    while got < n {
        match s.read(&mut out[got..]).unwrap() {
            0 => break,
            k => got += k,
        }
    }
    out.truncate(got);
    out
}

/// The pack of a complete raw v2 fetch response.
fn pack_of(raw: &[u8]) -> Vec<u8> {
    let (status, body) = parse_response(raw).unwrap();
    assert_eq!(status, 200);
    assert!(body.ends_with(b"0000"), "the response ends with a flush");
    let pkts = decode_pkts(&body, false);
    let start = pkts
        .iter()
        .position(|p| p == b"packfile\n")
        .expect("packfile section");
    let mut pack = Vec::new();
    for p in &pkts[start + 1..] {
        assert_ne!(p.first(), Some(&3), "error: {}", String::from_utf8_lossy(p));
        if p.first() == Some(&1) {
            pack.extend_from_slice(&p[1..]);
        }
    }
    pack
}

/// Every object of `src` (a mirror).
fn all_objects(src: &Path) -> Vec<String> {
    let out = git_ok(
        src,
        &[
            "cat-file",
            "--batch-all-objects",
            "--batch-check=%(objectname)",
        ],
    );
    let mut v: Vec<String> = out.lines().map(str::to_string).collect();
    v.sort();
    v
}

#[test]
fn a_slow_reader_and_a_leader_that_leaves_do_not_hurt_the_others() {
    let tmp = tempfile::tempdir().unwrap();
    let node = Node::start();
    let (src, url) = seeded(&node, tmp.path(), "storm", "ripgrep");
    let body = clone_request(tmp.path(), &url);
    let scratch = tmp.path().join("scratch.git");
    git_ok(
        tmp.path(),
        &["init", "--quiet", "--bare", scratch.to_str().unwrap()],
    );
    let objects = all_objects(&src);

    // The leader reads a little and hangs up; a slow reader and a fast
    // one joined before it left.
    let mut leader = start_fetch(&node, "storm", "ripgrep", &body);
    let mut slow = start_fetch(&node, "storm", "ripgrep", &body);
    let mut fast = start_fetch(&node, "storm", "ripgrep", &body);
    let first = read_some(&mut leader, 4096);
    assert!(
        first.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&first)
    );
    let mut slow_raw = read_some(&mut slow, 4096);
    drop(leader);
    let mut fast_raw = Vec::new();
    fast.read_to_end(&mut fast_raw).unwrap();
    // The slow one reads in small steps, pausing between them.
    loop {
        let step = read_some(&mut slow, 16 * 1024);
        if step.is_empty() {
            break;
        }
        slow_raw.extend_from_slice(&step);
        std::thread::sleep(Duration::from_millis(2));
    }
    let fast_pack = pack_of(&fast_raw);
    assert_eq!(pack_oids(&scratch, &fast_pack), objects);
    assert_eq!(
        pack_of(&slow_raw),
        fast_pack,
        "the same bytes for every reader"
    );
    let m = cache_events(&node);
    assert_eq!(event(&m, "miss"), 1, "{m:?}");
    assert_eq!(event(&m, "join") + event(&m, "hit"), 2, "{m:?}");
    assert_eq!(event(&m, "fallback"), 0, "{m:?}");
}

#[test]
fn responses_larger_than_their_bound_are_finished_by_each_reader() {
    let tmp = tempfile::tempdir().unwrap();
    // One response may hold 512 KiB; ripgrep's pack is several MiB.
    let node = Node::start_with(&["--pack-cache-bytes", "2097152"]);
    let (src, url) = seeded(&node, tmp.path(), "storm", "ripgrep");
    concurrent_clones(tmp.path(), &url, 4, "bounded", &[], &src);
    let m = cache_events(&node);
    assert!(event(&m, "overflow") >= 1, "{m:?}");
    assert!(event(&m, "fallback") >= 1, "{m:?}");
    // Nothing oversized is kept: the next clone computes again.
    let before = event(&m, "miss");
    concurrent_clones(tmp.path(), &url, 1, "after", &[], &src);
    assert_eq!(event(&cache_events(&node), "miss"), before + 1);
}

#[test]
fn with_the_cache_off_clones_work_and_nothing_is_shared() {
    let tmp = tempfile::tempdir().unwrap();
    let node = Node::start_with(&["--pack-cache-bytes", "0"]);
    let (src, url) = seeded(&node, tmp.path(), "storm", "guts");
    concurrent_clones(tmp.path(), &url, 4, "full", &[], &src);
    concurrent_clones(tmp.path(), &url, 4, "shallow", &["--depth", "1"], &src);
    let m = cache_events(&node);
    assert_eq!(m.len(), 7, "every event is exported: {m:?}");
    assert!(m.values().all(|v| *v == 0), "{m:?}");
}
