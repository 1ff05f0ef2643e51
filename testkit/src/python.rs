//! A Python interpreter with the modules a test needs.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Why `python` cannot import `modules`, if it cannot.
fn missing(python: &Path, modules: &[&str]) -> Option<String> {
    let script = if modules.is_empty() {
        "pass".to_string()
    } else {
        format!("import {}", modules.join(", "))
    };
    match Command::new(python).args(["-c", &script]).output() {
        Ok(out) if out.status.success() => None,
        Ok(out) => Some(String::from_utf8_lossy(&out.stderr).into_owned()),
        Err(e) => Some(format!("cannot run {}: {e}", python.display())),
    }
}

fn run(what: &str, cmd: &mut Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot start: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A Python interpreter that imports every module in `modules` (each also
/// the name of its package on the Python package index): the system's
/// `python3` if it can, otherwise a virtual environment in
/// `scratch/python-venv`, created on first use and reused afterwards; pip
/// adds the modules it lacks (never removing any, since other tests may be
/// using it; a lock file keeps concurrent tests from installing at once).
/// Panics, saying what is missing, if neither works.
pub fn python_with(scratch: &Path, modules: &[&str]) -> PathBuf {
    let system = PathBuf::from("python3");
    let Some(why) = missing(&system, modules) else {
        return system;
    };
    if let Some(e) = missing(&system, &[]) {
        panic!("the tests need python3 on PATH: {e}");
    }
    std::fs::create_dir_all(scratch).expect("create the scratch directory");
    let venv = scratch.join("python-venv");
    let lock = File::create(scratch.join("python-venv.lock")).expect("create the venv lock");
    // SAFETY: flock on a descriptor this function owns; released when
    // `lock` is closed at the end of the function.
    let locked = unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) };
    assert_eq!(locked, 0, "lock {}", venv.display());
    let python = venv.join("bin/python");
    if missing(&python, modules).is_none() {
        return python;
    }
    eprintln!(
        "python3 lacks {modules:?} ({}); installing them into {}",
        why.trim(),
        venv.display()
    );
    run(
        "python3 -m venv (on Debian: apt-get install python3-venv)",
        Command::new(&system)
            .arg("-m")
            .arg("venv")
            .arg("--clear")
            .arg(&venv),
    );
    run(
        "pip install",
        Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
            ])
            .args(modules),
    );
    if let Some(e) = missing(&python, modules) {
        panic!("{} still lacks {modules:?}: {e}", python.display());
    }
    python
}
