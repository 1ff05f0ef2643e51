//! The command line refuses values it does not know, naming them, before
//! the node starts.

use std::process::{Command, Output};

fn guts_node(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_guts-node"));
    cmd.args(args).env_remove("GUTS_LOG_FORMAT");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run guts-node")
}

#[test]
fn an_unknown_log_format_is_refused() {
    let out = guts_node(&["--log-format", "xml", "config"], &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "xml accepted:\n{stderr}");
    assert!(
        stderr.contains("xml") && stderr.contains("--log-format"),
        "{stderr}"
    );
    let out = guts_node(&["config"], &[("GUTS_LOG_FORMAT", "xml")]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "GUTS_LOG_FORMAT=xml accepted:\n{stderr}"
    );
    assert!(stderr.contains("xml"), "{stderr}");
    for format in ["text", "json"] {
        let out = guts_node(&["--log-format", format, "config"], &[]);
        assert!(
            out.status.success(),
            "{format}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
