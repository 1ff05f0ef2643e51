//! docs/cli.md cannot drift from the binary: every subcommand's `--help`
//! appears in it verbatim (between `<!-- help: SUBCOMMAND -->` and
//! `<!-- end help -->`, the node-wide options shown once, under the
//! top-level `guts-node --help`), and it shows no subcommand the binary
//! does not have.
//!
//! After changing the command line, `GUTS_BLESS_CLI_DOC=1 cargo test
//! --test cli_doc` rewrites the blocks (a new subcommand's block is added at
//! the end, to be moved and described), then review the diff.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

fn help(path: &[String]) -> String {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_guts-node"));
    // The help shows the values of GUTS_* variables: show none.
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("GUTS_") {
            cmd.env_remove(k);
        }
    }
    let out = cmd
        .args(path)
        .arg("--help")
        .output()
        .expect("run guts-node");
    assert!(out.status.success(), "{path:?} --help failed");
    String::from_utf8(out.stdout).expect("utf-8 help")
}

/// The subcommands listed under `Commands:` (but `help`).
fn subcommands(help: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut inside = false;
    for line in help.lines() {
        if line == "Commands:" {
            inside = true;
            continue;
        }
        if inside {
            if !line.starts_with("  ") {
                if line.is_empty() {
                    break;
                }
                continue;
            }
            if line.starts_with("   ") {
                continue; // a wrapped description
            }
            let name = line.split_whitespace().next().unwrap_or("");
            if !name.is_empty() && name != "help" {
                out.push(name.to_string());
            }
        }
    }
    out
}

fn long_flag(entry: &str) -> Option<String> {
    entry
        .split([' ', ','])
        .find(|w| w.starts_with("--"))
        .map(|w| w.to_string())
}

/// The long flags of a help text's options.
fn long_flags(help: &str) -> Vec<String> {
    help.lines()
        .filter_map(|line| {
            let t = line.trim_start();
            let indent = line.len() - t.len();
            ((indent == 2 || indent == 6) && t.starts_with('-'))
                .then(|| long_flag(t))
                .flatten()
        })
        .collect()
}

/// A subcommand's help without the node-wide options (shown once, at the top).
fn without_globals(help: &str, globals: &BTreeSet<String>) -> String {
    let mut out = String::new();
    let mut skipping = false;
    for line in help.lines() {
        let t = line.trim_start();
        let indent = line.len() - t.len();
        if (indent == 2 || indent == 6) && t.starts_with('-') {
            skipping = long_flag(t).is_some_and(|l| globals.contains(&l));
        } else if indent <= 6 && !t.is_empty() {
            skipping = false;
        }
        if !skipping {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// Every subcommand path, depth first, with its help text as documented.
fn all_helps() -> Vec<(String, String)> {
    let top = help(&[]);
    let globals: BTreeSet<String> = long_flags(&top)
        .into_iter()
        .filter(|l| l != "--help" && l != "--version")
        .collect();
    let mut out = vec![("guts-node".to_string(), top.clone())];
    let mut stack: Vec<Vec<String>> = subcommands(&top)
        .into_iter()
        .rev()
        .map(|s| vec![s])
        .collect();
    while let Some(path) = stack.pop() {
        let h = help(&path);
        for sub in subcommands(&h).into_iter().rev() {
            let mut p = path.clone();
            p.push(sub);
            stack.push(p);
        }
        out.push((path.join(" "), without_globals(&h, &globals)));
    }
    out
}

const BEGIN: &str = "<!-- help: ";
const END: &str = "<!-- end help -->";

fn block(name: &str, help: &str) -> String {
    format!("{BEGIN}{name} -->\n```text\n{}```\n{END}", help)
}

/// (name, text) of the blocks in the document.
fn doc_blocks(doc: &str) -> Vec<(String, String, std::ops::Range<usize>)> {
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(i) = doc[at..].find(BEGIN) {
        let start = at + i;
        let name_end = start + doc[start..].find(" -->").expect("block name ends");
        let name = doc[start + BEGIN.len()..name_end].to_string();
        let end = start + doc[start..].find(END).expect("block ends") + END.len();
        let inner = &doc[name_end + " -->\n```text\n".len()..end - END.len() - "```\n".len()];
        out.push((name, inner.to_string(), start..end));
        at = end;
    }
    out
}

#[test]
fn the_cli_reference_shows_every_subcommand_as_the_binary_does() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/cli.md");
    let doc = std::fs::read_to_string(&path).expect("docs/cli.md");
    let helps = all_helps();
    if std::env::var_os("GUTS_BLESS_CLI_DOC").is_some() {
        let mut new = doc.clone();
        for (name, _, range) in doc_blocks(&doc).into_iter().rev() {
            match helps.iter().find(|(n, _)| *n == name) {
                Some((_, h)) => new.replace_range(range, &block(&name, h)),
                None => new.replace_range(range, ""),
            }
        }
        let documented: BTreeSet<String> = doc_blocks(&new).into_iter().map(|b| b.0).collect();
        for (name, h) in &helps {
            if !documented.contains(name) {
                new.push_str(&format!("\n## `{name}`\n\n{}\n", block(name, h)));
            }
        }
        std::fs::write(&path, new).expect("write docs/cli.md");
    }
    let doc = std::fs::read_to_string(&path).expect("docs/cli.md");
    let blocks = doc_blocks(&doc);
    let mut problems = Vec::new();
    for (name, h) in &helps {
        match blocks.iter().find(|b| b.0 == *name) {
            None => problems.push(format!("`{name}` is not documented")),
            Some(b) if b.1 != *h => problems.push(format!(
                "`{name}` differs:\n--- docs/cli.md\n{}\n--- the binary\n{h}",
                b.1
            )),
            Some(_) => {}
        }
    }
    for b in &blocks {
        if !helps.iter().any(|(n, _)| *n == b.0) {
            problems.push(format!(
                "docs/cli.md shows `{}`, which the binary does not have",
                b.0
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "{}\n(GUTS_BLESS_CLI_DOC=1 cargo test --test cli_doc rewrites the blocks)",
        problems.join("\n")
    );
}
