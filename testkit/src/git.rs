//! Running C git in tests.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// A `git` command run in `dir` with an isolated configuration: no system
/// or user config (`HOME` is `dir`), no terminal prompts, git's own test
/// identities (`A U Thor`, `C O Mitter`), a fixed date, and HTTP transfers
/// that give up after 120 s without a byte. Otherwise git's
/// defaults (so a mirror of a corpus bundle gets the bundle's `master` as
/// its HEAD); end-to-end tests add their client configuration to it.
pub fn git(dir: &Path) -> Command {
    let mut c = Command::new("git");
    c.current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("HOME", dir)
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_AUTHOR_NAME", "A U Thor")
        .env("GIT_AUTHOR_EMAIL", "author@example.com")
        .env("GIT_AUTHOR_DATE", "1700000000 +0000")
        .env("GIT_COMMITTER_NAME", "C O Mitter")
        .env("GIT_COMMITTER_EMAIL", "committer@example.com")
        .env("GIT_COMMITTER_DATE", "1700000000 +0000")
        // A server that stops answering fails the test after two minutes
        // instead of hanging it (and CI) for good.
        .env("GIT_HTTP_LOW_SPEED_LIMIT", "1")
        .env("GIT_HTTP_LOW_SPEED_TIME", "120");
    c
}

/// Run a git command (from [`git`], with its arguments), feeding `input`
/// on stdin; whatever the outcome.
pub fn run(cmd: &mut Command, input: Option<&[u8]>) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn git");
    let mut stdin = child.stdin.take().expect("stdin");
    let input = input.map(<[u8]>::to_vec);
    // a separate writer: git may fill its stdout before it reads all input
    let writer = std::thread::spawn(move || {
        if let Some(i) = input {
            let _ = stdin.write_all(&i);
        }
    });
    let out = child.wait_with_output().expect("git output");
    let _ = writer.join();
    out
}

/// [`run`]; panic with the output unless it succeeds; returns stdout.
pub fn run_ok(cmd: &mut Command, input: Option<&[u8]>) -> Vec<u8> {
    let out = run(cmd, input);
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Run git in `dir` with `args`, feeding `input` on stdin; whatever the
/// outcome.
pub fn git_run(dir: &Path, args: &[&str], input: Option<&[u8]>) -> Output {
    run(git(dir).args(args), input)
}

/// Run git; panic with its output unless it succeeds; returns stdout.
pub fn git_bytes(dir: &Path, args: &[&str], input: Option<&[u8]>) -> Vec<u8> {
    run_ok(git(dir).args(args), input)
}

/// Run git; panic with its output unless it succeeds; returns stdout as text.
pub fn git_ok(dir: &Path, args: &[&str]) -> String {
    String::from_utf8_lossy(&git_bytes(dir, args, None)).into_owned()
}

/// Run git and return its output whatever happens.
pub fn git_out(dir: &Path, args: &[&str]) -> Output {
    git_run(dir, args, None)
}

/// Stage everything in `repo`'s work tree and commit it as `msg` (a fixed
/// test identity).
pub fn commit_all(repo: &Path, msg: &str) {
    git_ok(repo, &["add", "-A"]);
    git_ok(
        repo,
        &[
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "commit",
            "-q",
            "-m",
            msg,
        ],
    );
}

/// A corpus bundle (`guts`, `ripgrep`, `tokio`) in `../shared/corpus`
/// beside the checkout.
pub fn corpus_bundle(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/corpus")
        .join(format!("{name}.bundle"))
}
