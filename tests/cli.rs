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

/// Runs `guts-node ARGS config show` with a configuration file holding `toml`.
fn config_show(toml: &str, args: &[&str], env: &[(&str, &str)]) -> (Output, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("guts.toml");
    std::fs::write(&file, toml).unwrap();
    let mut all = vec!["--config", file.to_str().unwrap()];
    all.extend_from_slice(args);
    all.extend_from_slice(&["config", "show"]);
    (guts_node(&all, env), dir)
}

#[test]
fn unknown_keys_and_bad_values_are_refused_naming_key_value_and_reason() {
    let cases: &[(&str, &[&str])] = &[
        ("colour = \"blue\"\n", &["unknown key", "colour"]),
        (
            "[limits]\nheader_max_bytez = 1\n",
            &["unknown key", "limits.header_max_bytez"],
        ),
        // A limit at the top level is named where it belongs.
        (
            "header_max_bytes = 1\n",
            &["unknown key", "header_max_bytes", "[limits]"],
        ),
        (
            "[limits]\nheader_max_bytes = -1\n",
            &["limits.header_max_bytes = -1", "whole number"],
        ),
        (
            "api_addr = \"nowhere\"\n",
            &["api_addr = \"nowhere\"", "address"],
        ),
        (
            "log_format = \"xml\"\n",
            &["log_format = \"xml\"", "text or json"],
        ),
        ("shards = [1]\n", &["shards = [1]", "expected"]),
    ];
    for (toml, wants) in cases {
        let (out, _dir) = config_show(toml, &[], &[]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{toml:?} accepted:\n{stderr}");
        for want in *wants {
            assert!(
                stderr.contains(want),
                "{toml:?}: {want:?} missing from:\n{stderr}"
            );
        }
    }
}

#[test]
fn a_bad_environment_variable_is_reported_under_its_own_name() {
    let out = guts_node(&["config", "show"], &[("GUTS_SHARDS", "many")]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "GUTS_SHARDS=many accepted:\n{stderr}"
    );
    assert!(
        stderr.contains("GUTS_SHARDS")
            && stderr.contains("many")
            && stderr.contains("whole number"),
        "{stderr}"
    );
    assert!(!stderr.contains("--shards"), "{stderr}");
    // And a bad flag under the flag's name.
    let out = guts_node(&["--shards", "many", "config", "show"], &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "--shards many accepted:\n{stderr}");
    assert!(
        stderr.contains("--shards") && stderr.contains("many"),
        "{stderr}"
    );
}

#[test]
fn config_show_prints_toml_with_each_value_s_source_and_no_secret() {
    let (out, dir) = config_show(
        "api_addr = \"127.0.0.1:7000\"\ngenesis_file = \"/nonexistent/genesis.json\"\n[limits]\nheader_max_bytes = 4321\napi_body_max_bytes = 1234\n",
        &["--header-max-bytes", "5555"],
        &[
            ("GUTS_PUSH_BODY_MAX_BYTES", "999"),
            ("GUTS_PRIVATE_KEY", "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"),
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let file = dir.path().join("guts.toml");
    for want in [
        format!("api_addr = \"127.0.0.1:7000\"  # file {}", file.display()),
        "metrics_addr = \"127.0.0.1:9090\"  # default".to_string(),
        "header_max_bytes = 5555  # flag --header-max-bytes".to_string(),
        format!("api_body_max_bytes = 1234  # file {}", file.display()),
        "push_body_max_bytes = 999  # env GUTS_PUSH_BODY_MAX_BYTES".to_string(),
        "private_key = \"<redacted>\"  # env GUTS_PRIVATE_KEY".to_string(),
        "[limits]".to_string(),
    ] {
        assert!(stdout.contains(&want), "{want:?} missing from:\n{stdout}");
    }
    assert!(
        !stdout.contains("00112233"),
        "the key is printed:\n{stdout}"
    );
    // What it prints is TOML.
    let parsed: toml::Table = toml::from_str(&stdout).expect("config show prints TOML");
    assert_eq!(
        parsed["limits"]["header_max_bytes"].as_integer(),
        Some(5555)
    );
}
