//! The operator documentation's commands work: every ```sh block of
//! docs/operator-guide.md and docs/runbooks/*.md is run with bash against
//! a started node, with the variables the guide's conventions define
//! (`API`, `METRICS`, `DATA`, and `GUTS_DATA_DIR`/`GUTS_API_ADDR` in place
//! of `GUTS_CONFIG`), `guts-node` on the PATH, and must exit 0. Blocks
//! marked `bash` change the host or stop the node and are not run.

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;

fn sh_blocks(doc: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current: Option<String> = None;
    for line in doc.lines() {
        let t = line.trim_start();
        match &mut current {
            None if t == "```sh" => current = Some(String::new()),
            Some(block) if t == "```" => {
                out.push(std::mem::take(block));
                current = None;
            }
            Some(block) => {
                block.push_str(line);
                block.push('\n');
            }
            None => {}
        }
    }
    out
}

fn documents() -> Vec<PathBuf> {
    let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs");
    let mut files = vec![docs.join("operator-guide.md")];
    let mut runbooks: Vec<PathBuf> = std::fs::read_dir(docs.join("runbooks"))
        .expect("docs/runbooks")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    runbooks.sort();
    files.extend(runbooks);
    files
}

#[test]
fn the_runbook_index_lists_every_runbook_of_the_seed_index() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/runbooks");
    let index = std::fs::read_to_string(dir.join("README.md")).unwrap();
    for name in [
        "node-not-syncing",
        "high-memory",
        "disk-full",
        "high-cpu",
        "consensus-stuck",
        "validator-down",
        "network-partition",
        "low-peers",
        "data-corruption",
        "backup-failed",
        "key-rotation",
        "security-incident",
        "emergency-shutdown",
        "upgrade-rollback",
    ] {
        let file = dir.join(format!("{name}.md"));
        let text = std::fs::read_to_string(&file).unwrap_or_else(|_| panic!("{}", file.display()));
        assert!(
            index.contains(&format!("({name}.md)")),
            "index lacks {name}"
        );
        for section in [
            "Severity",
            "Symptoms",
            "Detection",
            "Diagnosis",
            "Resolution",
        ] {
            if name == "key-rotation" || name == "emergency-shutdown" {
                break; // procedures, not incidents
            }
            assert!(text.contains(section), "{name} lacks {section}");
        }
    }
}

#[test]
fn the_documented_commands_run_against_a_node() {
    let node = Node::start();
    let work = tempfile::tempdir().unwrap();
    let home = work.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_guts-node"))
        .parent()
        .unwrap()
        .to_path_buf();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut failures = Vec::new();
    let mut ran = 0;
    for doc in documents() {
        let text = std::fs::read_to_string(&doc).unwrap();
        for block in sh_blocks(&text) {
            ran += 1;
            let mut cmd = Command::new("bash");
            for (k, _) in std::env::vars_os() {
                if k.to_string_lossy().starts_with("GUTS_") {
                    cmd.env_remove(k);
                }
            }
            let out = cmd
                .arg("-c")
                .arg(format!("set -euo pipefail\n{block}"))
                .current_dir(work.path())
                .env("PATH", &path)
                .env("HOME", &home)
                .env("GIT_CONFIG_NOSYSTEM", "1")
                .env("GIT_AUTHOR_NAME", "Docs")
                .env("GIT_AUTHOR_EMAIL", "docs@example.com")
                .env("GIT_COMMITTER_NAME", "Docs")
                .env("GIT_COMMITTER_EMAIL", "docs@example.com")
                .env("GIT_TERMINAL_PROMPT", "0")
                .env("API", format!("http://{}", node.api))
                .env("METRICS", format!("http://{}", node.metrics))
                .env("DATA", &node.data_dir)
                .env("GUTS_DATA_DIR", &node.data_dir)
                .env("GUTS_API_ADDR", node.api.to_string())
                .env("GUTS_METRICS_ADDR", node.metrics.to_string())
                .env("GUTS_LOG", "warn")
                .output()
                .expect("run bash");
            if !out.status.success() {
                failures.push(format!(
                    "{}:\n{block}exit {}\nstdout: {}\nstderr: {}",
                    doc.display(),
                    out.status,
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
        }
    }
    assert!(ran >= 20, "only {ran} sh blocks found");
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    // The guide's walk-through really pushed: the repository serves its commit.
    let out = Command::new("git")
        .args([
            "ls-remote",
            &format!("http://{}/git/docs/guide-hello.git", node.api),
        ])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("refs/heads/main"));
}
