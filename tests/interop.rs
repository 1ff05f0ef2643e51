//! Other git implementations against a started node: dulwich (pure Python),
//! pygit2 (libgit2, as in IDEs and CI runners), and hand-made requests on
//! the paths git's protocol documents allow but C git never takes. The
//! clients are driven by the Python scripts in tests/interop/, which check
//! every result with the C git client (`git fsck --strict`, refs).
//!
//! Needs `python3`; when it lacks `dulwich` or `pygit2`, the tests install
//! them once into a virtual environment under the target directory
//! (`target/tmp/python-venv`, from the Python package index) and reuse it.
//! A module that cannot be had fails the test, it is never skipped.

mod common;
use common::*;
use std::path::Path;
use std::process::Command;

/// The Python modules the scripts import.
const PYTHON_MODULES: &[&str] = &["dulwich", "pygit2"];

/// Run `tests/interop/SCRIPT` against a fresh node; panic with its output (and the node's log) unless it succeeds.
fn run_script(script: &str, modules: &[&str]) {
    // one environment for the suite: the first test to need it installs all
    let python = guts_testkit::python_with(Path::new(env!("CARGO_TARGET_TMPDIR")), PYTHON_MODULES);
    debug_assert!(modules.iter().all(|m| PYTHON_MODULES.contains(m)));
    let node = Node::start();
    let tmp = tempfile::tempdir().unwrap();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let bundle = corpus_bundle("guts");
    assert!(
        bundle.exists(),
        "corpus bundle missing: {}",
        bundle.display()
    );
    let out = Command::new(&python)
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
