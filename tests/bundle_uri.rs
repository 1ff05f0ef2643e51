//! Bundle URIs against the real node and the real git client (git >= 2.38
//! with `transfer.bundleURI`): a repository cloned often gets a bundle in
//! idle time; a clone that asks downloads it as a static file and then
//! fetches only what is newer; private bundles need a clone's credentials;
//! a broken or missing bundle file does not break clones; with the feature
//! off nothing is offered.

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

/// Clones before a repository gets a bundle, in these tests.
const CLONES: usize = 3;

/// Flags of a node that bundles every repository after [`CLONES`] clones.
const BUNDLING: &[&str] = &[
    "--bundle-uri-enabled",
    "--bundle-uri-clones",
    "3",
    "--bundle-uri-min-bytes",
    "0",
    "--repack-quiet-ms",
    "200",
];

/// The value of one sample of the node's metrics (0 if absent).
fn metric(node: &Node, series: &str) -> f64 {
    let (status, body) = http_anonymous(node.metrics, "GET", "/metrics", &[], b"").expect("scrape");
    assert_eq!(status, 200);
    String::from_utf8_lossy(&body)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            (name == series).then(|| value.parse().ok())?
        })
        .unwrap_or(0.0)
}

/// The bundle files of `owner/name` on disk.
fn bundles(node: &Node, owner: &str, name: &str) -> Vec<PathBuf> {
    let dir = node
        .data_dir
        .join("repos")
        .join(owner)
        .join(format!("{name}.git/bundles"));
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "bundle"))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// The protocol v2 capability advertisement of `owner/name`, as the admin.
fn v2_capabilities(node: &Node, owner: &str, name: &str) -> String {
    let (status, body) = http(
        node.api,
        "GET",
        &format!("/git/{owner}/{name}.git/info/refs?service=git-upload-pack"),
        &[("Git-Protocol", "version=2")],
        b"",
    )
    .expect("info/refs");
    assert_eq!(status, 200);
    String::from_utf8_lossy(&body).into_owned()
}

/// POST a v2 request made of `lines` ("|" a delim, "" a flush).
fn v2_request(node: &Node, owner: &str, name: &str, lines: &[&str]) -> (u16, String) {
    let mut body = Vec::new();
    for l in lines {
        match *l {
            "" => body.extend_from_slice(b"0000"),
            "|" => body.extend_from_slice(b"0001"),
            l => body.extend_from_slice(&pkt(format!("{l}\n").as_bytes())),
        }
    }
    let (status, resp) = http(
        node.api,
        "POST",
        &format!("/git/{owner}/{name}.git/git-upload-pack"),
        &[
            ("Content-Type", "application/x-git-upload-pack-request"),
            ("Git-Protocol", "version=2"),
        ],
        &body,
    )
    .expect("v2 request");
    (status, String::from_utf8_lossy(&resp).into_owned())
}

/// A clone into `dir/tag`, fsck'd strictly; with `bundle_uri` the client
/// asks for bundles. Returns the clone's path.
fn clone(dir: &Path, url: &str, tag: &str, bundle_uri: bool) -> PathBuf {
    let target = dir.join(tag);
    let flag = format!("transfer.bundleURI={bundle_uri}");
    git_ok(
        dir,
        &[
            "-c",
            &flag,
            "clone",
            "--quiet",
            url,
            target.to_str().unwrap(),
        ],
    );
    fsck(&target);
    target
}

/// A repository with some history, pushed to `url`; returns the work tree.
fn populate(dir: &Path, url: &str) -> PathBuf {
    let wt = new_worktree(dir, "wt");
    for i in 0..5 {
        commit_file(
            &wt,
            &format!("dir{}/f{i}.txt", i % 2),
            &format!("content {i}\n").repeat(50),
            &format!("commit {i}"),
        );
    }
    git_ok(&wt, &["tag", "-a", "v1", "-m", "release 1"]);
    git_ok(&wt, &["push", "--quiet", url, "main", "v1"]);
    wt
}

/// Clone until the node has written a bundle of `owner/name`; returns it.
fn make_busy(node: &Node, dir: &Path, url: &str, owner: &str, name: &str) -> PathBuf {
    for i in 0..CLONES {
        clone(dir, url, &format!("warm-{name}-{i}"), false);
    }
    // Offered once the file is in place.
    assert!(
        wait_until(WAIT, || v2_capabilities(node, owner, name)
            .contains("bundle-uri")),
        "no bundle written for {owner}/{name}; log:\n{}",
        node.log_text()
    );
    bundles(node, owner, name).pop().unwrap()
}

/// `git bundle verify` accepts `file` (run in a scratch repository).
fn bundle_verify(dir: &Path, file: &Path) -> String {
    let scratch = dir.join("verify");
    if !scratch.exists() {
        git_ok(
            dir,
            &["init", "--quiet", "--bare", scratch.to_str().unwrap()],
        );
    }
    let out = git_out(&scratch, &["bundle", "verify", file.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "git bundle verify: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

#[test]
fn a_busy_repository_is_cloned_from_its_bundle_and_then_fetches_only_what_is_newer() {
    let node = Node::start_with(BUNDLING);
    let scratch = tempfile::tempdir().unwrap();
    let s = scratch.path();
    let url = node.create_repo("alice", "busy");
    let wt = populate(s, &url);

    // No bundle yet: nothing offered, and the command answers an empty
    // list (a client asking counts as a clone).
    assert!(!v2_capabilities(&node, "alice", "busy").contains("bundle-uri"));
    let (status, body) = v2_request(&node, "alice", "busy", &["command=bundle-uri", "|", ""]);
    assert_eq!((status, body.as_str()), (200, "0000"));

    let written_before = metric(&node, "guts_git_bundles_written_total");
    let file = make_busy(&node, s, &url, "alice", "busy");
    assert!(metric(&node, "guts_git_bundles_written_total") > written_before);
    assert!(metric(&node, "guts_git_bundle_bytes_total{direction=\"written\"}") > 0.0);
    let verified = bundle_verify(s, &file);
    assert!(verified.contains("okay"), "{verified}");
    let head_then = rev_parse(&wt, "HEAD");
    let header = std::fs::read(&file).unwrap();
    assert!(header.starts_with(b"# v2 git bundle\n"));
    let header = String::from_utf8_lossy(&header[..header.len().min(4096)]).into_owned();
    assert!(
        header.contains(&format!("{head_then} refs/heads/main\n")),
        "{header}"
    );
    assert!(header.contains(" refs/tags/v1\n"), "{header}");

    // Offered now, under a URI relative to the repository's URL.
    assert!(v2_capabilities(&node, "alice", "busy").contains("bundle-uri\n"));
    let (status, list) = v2_request(&node, "alice", "busy", &["command=bundle-uri", "|", ""]);
    assert_eq!(status, 200);
    let file_name = file.file_name().unwrap().to_str().unwrap();
    assert!(list.contains("bundle.version=1\n"), "{list}");
    assert!(list.contains("bundle.mode=all\n"), "{list}");
    assert!(
        list.contains(&format!(".uri=bundles/{file_name}\n")),
        "{list}"
    );

    // A malformed request gets a clear refusal.
    let (status, body) = v2_request(
        &node,
        "alice",
        "busy",
        &["command=bundle-uri", "|", "want-everything", ""],
    );
    assert_eq!(status, 400);
    assert!(body.contains("unknown argument for bundle-uri"), "{body}");

    // Something newer than the bundle. From here, clones are counted
    // again: the list above, the plain clone below, and the bundled
    // clone's request for the list make the [`CLONES`] after which the
    // next bundle is written — only once that clone was told of this one.
    let newer = commit_file(&wt, "new.txt", "after the bundle\n", "after the bundle");
    git_ok(&wt, &["push", "--quiet", &url, "main"]);

    // A full clone without bundles, for comparison.
    let objects = "guts_git_pack_sent_objects_total";
    let before = metric(&node, objects);
    let plain = clone(s, &url, "plain", false);
    let full_objects = metric(&node, objects) - before;
    assert_eq!(rev_parse(&plain, "HEAD"), newer);
    assert!(
        full_objects >= 10.0,
        "a full clone sent {full_objects} objects"
    );

    // The clone that asks downloads the bundle, then fetches the rest.
    let served = metric(&node, "guts_git_bundles_served_total");
    let sent_bytes = metric(&node, "guts_git_bundle_bytes_total{direction=\"sent\"}");
    let before = metric(&node, objects);
    let bundled = clone(s, &url, "bundled", true);
    let fetched_objects = metric(&node, objects) - before;
    assert_eq!(rev_parse(&bundled, "HEAD"), newer);
    assert_eq!(rev_parse(&bundled, "refs/bundles/main"), head_then);
    assert_eq!(metric(&node, "guts_git_bundles_served_total"), served + 1.0);
    assert_eq!(
        metric(&node, "guts_git_bundle_bytes_total{direction=\"sent\"}") - sent_bytes,
        std::fs::metadata(&file).unwrap().len() as f64
    );
    // Only the new commit, its trees and its blob came over the fetch.
    assert!(
        fetched_objects > 0.0 && fetched_objects <= 4.0,
        "the fetch after the bundle sent {fetched_objects} objects (a full clone {full_objects})"
    );
    assert_eq!(rev_parse(&bundled, "v1"), rev_parse(&plain, "v1"));

    // Clones counted and the refs changed: a new bundle; the old one is
    // kept beside it, and no more than two stay.
    clone(s, &url, "again", false);
    assert!(
        wait_until(WAIT, || bundles(&node, "alice", "busy")
            .iter()
            .any(|b| b != &file)),
        "no second bundle"
    );
    let now = bundles(&node, "alice", "busy");
    assert!(now.len() <= 2, "{now:?}");
    let newest = now.iter().find(|b| *b != &file).unwrap().clone();
    bundle_verify(s, &newest);
    let latest = clone(s, &url, "latest", true);
    assert_eq!(rev_parse(&latest, "refs/bundles/main"), newer);
}

#[test]
fn bundles_are_served_with_the_repositorys_read_permission_and_ranges() {
    let node = Node::start_with(BUNDLING);
    let scratch = tempfile::tempdir().unwrap();
    let s = scratch.path();
    let (status, body) = http(
        node.api,
        "POST",
        "/api/repos",
        &[("Content-Type", "application/json")],
        br#"{"owner": "alice", "name": "secret", "private": true}"#,
    )
    .unwrap();
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
    let url = node.url("alice", "secret");
    populate(s, &url);
    let file = make_busy(&node, s, &url, "alice", "secret");
    let bytes = std::fs::read(&file).unwrap();
    let path = format!(
        "/git/alice/secret.git/bundles/{}",
        file.file_name().unwrap().to_str().unwrap()
    );

    // Anonymous: asked for credentials, as a clone is.
    let (status, _) = http_anonymous(node.api, "GET", &path, &[], b"").unwrap();
    assert_eq!(status, 401);
    // With the clone's credentials: the file, whole or in part.
    let (status, body) = http(node.api, "GET", &path, &[], b"").unwrap();
    assert_eq!(status, 200);
    assert!(body == bytes, "the served bundle differs from the file");
    let (status, body) = http(node.api, "GET", &path, &[("Range", "bytes=0-15")], b"").unwrap();
    assert_eq!((status, body.as_slice()), (206, &b"# v2 git bundle\n"[..]));
    let tail = format!("bytes={}-", bytes.len() - 20);
    let (status, body) = http(node.api, "GET", &path, &[("Range", &tail)], b"").unwrap();
    assert_eq!((status, body.as_slice()), (206, &bytes[bytes.len() - 20..]));
    let past = format!("bytes={}-", bytes.len());
    let (status, _) = http(node.api, "GET", &path, &[("Range", &past)], b"").unwrap();
    assert_eq!(status, 416);
    // Names that are not bundles, and bundles that do not exist.
    for bad in [
        "/git/alice/secret.git/bundles/../config",
        "/git/alice/secret.git/bundles/x.bundle",
        "/git/alice/secret.git/bundles/1-0000000000000000000000000000000000000000.bundle",
        "/git/alice/nothing.git/bundles/1-0000000000000000000000000000000000000000.bundle",
    ] {
        let (status, _) = http(node.api, "GET", bad, &[], b"").unwrap();
        assert_eq!(status, 404, "{bad}");
    }

    // A clone with credentials downloads the private bundle.
    let served = metric(&node, "guts_git_bundles_served_total");
    let c = clone(s, &url, "private-clone", true);
    assert!(git_ok(&c, &["for-each-ref", "refs/bundles/"]).contains("refs/bundles/main"));
    assert_eq!(metric(&node, "guts_git_bundles_served_total"), served + 1.0);
    // Without them, nothing at all.
    let anon = node.url_anonymous("alice", "secret");
    let out = git_out(
        s,
        &[
            "-c",
            "transfer.bundleURI=true",
            "-c",
            "credential.helper=",
            "clone",
            "--quiet",
            &anon,
            s.join("anon").to_str().unwrap(),
        ],
    );
    assert!(
        !out.status.success(),
        "an anonymous clone of a private repository"
    );
}

#[test]
fn a_corrupt_or_missing_bundle_does_not_break_clones() {
    let node = Node::start_with(BUNDLING);
    let scratch = tempfile::tempdir().unwrap();
    let s = scratch.path();
    let url = node.create_repo("alice", "fragile");
    let wt = populate(s, &url);
    let file = make_busy(&node, s, &url, "alice", "fragile");
    let head = rev_parse(&wt, "HEAD");

    // Garbage under the bundle's name: the client warns and fetches.
    let mut garbage = b"# v2 git bundle\n".to_vec();
    garbage.extend_from_slice(b"this is not a ref line\n\nnot a pack");
    std::fs::write(&file, &garbage).unwrap();
    let c = clone(s, &url, "after-corruption", true);
    assert_eq!(rev_parse(&c, "HEAD"), head);

    // A truncated pack.
    let mut broken = std::fs::read(&file).unwrap();
    broken.truncate(broken.len() / 2);
    std::fs::write(&file, &broken).unwrap();
    let c = clone(s, &url, "after-truncation", true);
    assert_eq!(rev_parse(&c, "HEAD"), head);

    // No file at all.
    std::fs::remove_file(&file).unwrap();
    let c = clone(s, &url, "after-removal", true);
    assert_eq!(rev_parse(&c, "HEAD"), head);
}

#[test]
fn with_the_feature_off_nothing_is_offered() {
    let node = Node::start_with(&["--repack-quiet-ms", "200"]);
    let scratch = tempfile::tempdir().unwrap();
    let s = scratch.path();
    let url = node.create_repo("alice", "plain");
    let wt = populate(s, &url);
    for i in 0..3 {
        let c = clone(s, &url, &format!("c{i}"), true);
        assert_eq!(rev_parse(&c, "HEAD"), rev_parse(&wt, "HEAD"));
        assert_eq!(git_ok(&c, &["for-each-ref", "refs/bundles/"]), "");
    }
    assert!(!v2_capabilities(&node, "alice", "plain").contains("bundle-uri"));
    let (status, body) = v2_request(&node, "alice", "plain", &["command=bundle-uri", "|", ""]);
    assert_eq!(status, 400);
    assert!(body.contains("unknown command"), "{body}");
    // Given time, still no bundle on disk.
    std::thread::sleep(Duration::from_millis(1500));
    assert!(bundles(&node, "alice", "plain").is_empty());
    let (status, _) = http(
        node.api,
        "GET",
        "/git/alice/plain.git/bundles/1-0000000000000000000000000000000000000000.bundle",
        &[],
        b"",
    )
    .unwrap();
    assert_eq!(status, 404);
}
