//! Helpers shared by the io integration tests: the corpus location
//! (`../shared/corpus` beside the checkout) and running C git, the oracle,
//! with an isolated configuration and fixed identities and dates.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// A corpus bundle, e.g. `corpus_bundle("guts")`.
pub fn corpus_bundle(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/corpus")
        .join(format!("{name}.bundle"))
}

/// Run git in `dir`, feeding `input` on stdin; whatever the outcome.
pub fn git_run(dir: &Path, args: &[&str], input: Option<&[u8]>) -> Output {
    let mut child = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_AUTHOR_NAME", "A U Thor")
        .env("GIT_AUTHOR_EMAIL", "author@example.com")
        .env("GIT_AUTHOR_DATE", "1700000000 +0000")
        .env("GIT_COMMITTER_NAME", "C O Mitter")
        .env("GIT_COMMITTER_EMAIL", "committer@example.com")
        .env("GIT_COMMITTER_DATE", "1700000000 +0000")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn git");
    let mut stdin = child.stdin.take().expect("stdin");
    let input = input.map(<[u8]>::to_vec);
    let writer = std::thread::spawn(move || {
        if let Some(i) = input {
            let _ = stdin.write_all(&i);
        }
    });
    let out = child.wait_with_output().expect("git output");
    let _ = writer.join();
    out
}

/// Run git; panic with its stderr unless it succeeds; return stdout.
pub fn git_bytes(dir: &Path, args: &[&str], input: Option<&[u8]>) -> Vec<u8> {
    let out = git_run(dir, args, input);
    assert!(
        out.status.success(),
        "git {args:?} in {} failed: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}
