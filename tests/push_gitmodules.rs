//! Push-time checks of `.gitmodules` and `.gitattributes` contents through
//! the real server and the real git client: a malicious `.gitmodules`
//! (CVE-2018-17456 style `url = --upload-pack=...`) is refused, whether
//! its blob comes in the push or is already on the server under another
//! name; a benign one lands.

mod common;
use common::*;

fn commit_bytes(wt: &std::path::Path, file: &str, content: &[u8], msg: &str) -> String {
    std::fs::write(wt.join(file), content).unwrap();
    git_ok(wt, &["add", "--", file]);
    git_ok(wt, &["commit", "-q", "-m", msg]);
    rev_parse(wt, "HEAD")
}

/// Push `rev` to `branch`; Ok(()) if git reports success, else its stderr.
fn push(wt: &std::path::Path, rev: &str, branch: &str) -> Result<(), String> {
    let out = git_out(
        wt,
        &["push", "origin", &format!("{rev}:refs/heads/{branch}")],
    );
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn has_branch(t: &std::path::Path, url: &str, branch: &str) -> bool {
    let name = format!("refs/heads/{branch}");
    server_refs(t, url).iter().any(|(r, _)| *r == name)
}

#[test]
fn malicious_gitmodules_push_is_rejected_and_benign_accepted() {
    let node = Node::start();
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let url = node.create_repo("alice", "submodules");
    let wt = new_worktree(t, "wt");
    git_ok(&wt, &["remote", "add", "origin", &url]);
    git_ok(&wt, &["push", "--quiet", "origin", "main"]);
    let base = rev_parse(&wt, "main");
    let evil = b"[submodule \"evil\"]\n\tpath = evil\n\turl = --upload-pack=touch /tmp/pwned\n";

    // 1. the malicious .gitmodules comes in the push
    let bad = commit_bytes(&wt, ".gitmodules", evil, "evil submodule");
    let err = push(&wt, &bad, "evil").expect_err("push of a malicious .gitmodules succeeded");
    assert!(
        err.contains("gitmodulesUrl"),
        "rejected, but not for the .gitmodules: {err}"
    );
    assert!(!has_branch(t, &url, "evil"), "branch created");

    // other problems: name, path, update, a long .gitattributes line
    let cases: [(&str, &[u8], &str); 4] = [
        (
            ".gitmodules",
            b"[submodule \"../../modules/evil\"]\n\tpath = x\n",
            "gitmodulesName",
        ),
        (
            ".gitmodules",
            b"[submodule \"x\"]\n\tpath = -foo\n",
            "gitmodulesPath",
        ),
        (
            ".gitmodules",
            b"[submodule \"x\"]\n\tupdate = !rm -rf /\n",
            "gitmodulesUpdate",
        ),
        (".gitattributes", &[b'a'; 3000], "gitattributesLineLength"),
    ];
    for (i, (file, content, id)) in cases.iter().enumerate() {
        git_ok(&wt, &["reset", "-q", "--hard", &base]);
        let c = commit_bytes(&wt, file, content, id);
        let branch = format!("bad{i}");
        let err = push(&wt, &c, &branch).expect_err(id);
        assert!(err.contains(id), "{id}: {err}");
        assert!(!has_branch(t, &url, &branch), "{id}: branch created");
    }

    // 2. the blob is already on the server, pushed as an ordinary file;
    //    a later tree names it .gitmodules and the push carries no blob
    git_ok(&wt, &["reset", "-q", "--hard", &base]);
    let plain = commit_bytes(&wt, "notes.txt", evil, "just a file");
    push(&wt, &plain, "notes").expect("an ordinary file with that content is fine");
    git_ok(&wt, &["mv", "notes.txt", ".gitmodules"]);
    git_ok(&wt, &["commit", "-q", "-m", "now it is .gitmodules"]);
    let renamed = rev_parse(&wt, "HEAD");
    let err = push(&wt, &renamed, "notes")
        .expect_err("renaming a stored blob to .gitmodules was accepted");
    assert!(err.contains("gitmodulesUrl"), "{err}");
    let refs = server_refs(t, &url);
    assert!(
        refs.contains(&("refs/heads/notes".to_string(), plain.clone())),
        "{refs:?}"
    );

    // 3. a benign .gitmodules (and .gitattributes) lands
    git_ok(&wt, &["reset", "-q", "--hard", &base]);
    commit_bytes(&wt, ".gitattributes", b"*.png binary\n", "attributes");
    let good = commit_bytes(
        &wt,
        ".gitmodules",
        b"[submodule \"lib\"]\n\tpath = lib\n\turl = https://example.com/lib.git\n[submodule \"rel\"]\n\tpath = rel\n\turl = ../rel.git\n",
        "good submodules",
    );
    push(&wt, &good, "main").expect("benign .gitmodules rejected");
    assert!(server_refs(t, &url).contains(&("refs/heads/main".to_string(), good.clone())));
    let clone = t.join("clone");
    git_ok(t, &["clone", "-q", &url, clone.to_str().unwrap()]);
    fsck(&clone);
    assert_eq!(rev_parse(&clone, "HEAD"), good);
}
