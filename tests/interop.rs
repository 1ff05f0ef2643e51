//! Other git implementations against a started node: dulwich (pure Python),
//! pygit2 (libgit2, as in IDEs and CI runners), and hand-made requests on
//! the paths git's protocol documents allow but C git never takes. The
//! clients are driven by the Python scripts in tests/interop/, which check
//! every result with the C git client (`git fsck --strict`, refs).
//!
//! Needs `python3` with `dulwich` and `pygit2` (`pip install dulwich pygit2`,
//! done by .ci/run); a missing module fails the test, it is never skipped.

mod common;
use common::*;
use std::path::Path;
use std::process::Command;

fn require_python_modules(modules: &[&str]) {
    for m in modules {
        let out = Command::new("python3")
            .args(["-c", &format!("import {m}")])
            .output();
        match out {
            Ok(o) if o.status.success() => {}
            Ok(o) => panic!(
                "interop test needs the Python module `{m}` (pip install dulwich pygit2; .ci/run installs them):\n{}",
                String::from_utf8_lossy(&o.stderr)
            ),
            Err(e) => panic!("interop test needs python3 on PATH: {e}"),
        }
    }
}

/// Run `tests/interop/SCRIPT` against a fresh node; panic with its output (and the node's log) unless it succeeds.
fn run_script(script: &str, modules: &[&str]) {
    require_python_modules(modules);
    let node = Node::start();
    let tmp = tempfile::tempdir().unwrap();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let bundle = dir.join("../shared/corpus/guts.bundle");
    assert!(
        bundle.exists(),
        "corpus bundle missing: {}",
        bundle.display()
    );
    let out = Command::new("python3")
        .arg(dir.join("tests/interop").join(script))
        .arg("--api")
        .arg(format!("http://admin:{}@{}", node.admin_token, node.api))
        .arg("--work")
        .arg(tmp.path())
        .arg("--corpus")
        .arg(&bundle)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("PYTHONUNBUFFERED", "1")
        .output()
        .expect("run python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{script} failed ({}):\nstdout:\n{stdout}\nstderr:\n{stderr}\nnode log (tail):\n{}",
        out.status,
        tail(&node.log_text(), 4000)
    );
    println!("{stdout}");
}

fn tail(s: &str, n: usize) -> &str {
    let mut start = s.len().saturating_sub(n);
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

#[test]
fn dulwich_clone_fetch_ls_remote_push() {
    run_script("dulwich_client.py", &["dulwich"]);
}

#[test]
fn pygit2_clone_fetch_list_heads_push() {
    run_script("pygit2_client.py", &["pygit2"]);
}

#[test]
fn raw_protocol_paths_other_clients_take() {
    run_script("raw_protocol.py", &[]);
}
