//! `guts-node tune`: the disk probe writes io-properties.toml and the node
//! sizes its bulk pack reads from it; `tune check` reports host settings
//! without changing them and `tune apply` changes them (on a stand-in /proc
//! and /sys, so the machine running the tests is left alone); the files in
//! tuning/ are valid.

mod common;
use common::*;
use std::path::Path;
use std::process::{Command, Output};

fn guts_node(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_guts-node"));
    cmd.args(args)
        .env_remove("GUTS_LOG_FORMAT")
        .env_remove("GUTS_TUNE_SYSROOT")
        .env_remove("GUTS_DATA_DIR")
        .env_remove("GUTS_CONFIG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run guts-node")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn probe(data_dir: &Path) -> toml::Value {
    let out = guts_node(
        &[
            "tune",
            "probe",
            "--data-dir",
            data_dir.to_str().unwrap(),
            "--file-bytes",
            "4194304",
            "--duration-ms",
            "20",
        ],
        &[],
    );
    assert!(out.status.success(), "probe failed:\n{}", text(&out));
    let written = std::fs::read_to_string(data_dir.join("io-properties.toml"))
        .expect("io-properties.toml written");
    assert!(
        !data_dir.join(".io-probe.tmp").exists(),
        "the scratch file is removed"
    );
    toml::from_str(&written).expect("io-properties.toml is TOML")
}

#[test]
fn probe_measures_every_workload_and_derives_a_sizing_in_range() {
    let tmp = tempfile::tempdir().unwrap();
    let props = probe(tmp.path());
    let sizing = &props["sizing"];
    let buffer = sizing["dma_read_buffer_bytes"].as_integer().unwrap();
    let ahead = sizing["dma_read_ahead_buffers"].as_integer().unwrap();
    assert!(
        (4096..=8 * 1024 * 1024).contains(&buffer) && (buffer as u64).is_power_of_two(),
        "{buffer}"
    );
    assert!((1..=64).contains(&ahead), "{ahead}");
    let ms = props["measurement"].as_array().unwrap();
    for workload in [
        "seq_read",
        "seq_write",
        "rand_read",
        "rand_write",
        "seq_read_buffer_sweep",
    ] {
        let of: Vec<_> = ms
            .iter()
            .filter(|m| m["workload"].as_str() == Some(workload))
            .collect();
        assert!(
            of.len() >= 3,
            "{workload}: {} measurements (several queue depths or buffers)",
            of.len()
        );
        for m in of {
            assert!(m["ops"].as_integer().unwrap() > 0, "{m:?}");
            assert!(m["iops"].as_integer().unwrap() > 0, "{m:?}");
            assert!(m["bytes_per_sec"].as_integer().unwrap() > 0, "{m:?}");
        }
    }
    // The chosen read-ahead is one of the measured queue depths.
    assert!(ms.iter().any(|m| m["workload"].as_str() == Some("seq_read")
        && m["queue_depth"].as_integer() == Some(ahead)));
}

#[test]
fn probe_refuses_bad_bounds() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_str().unwrap();
    for (flag, value) in [
        ("--file-bytes", "0"),
        ("--file-bytes", "1000"),
        ("--file-bytes", "1099511627776000"),
        ("--duration-ms", "0"),
        ("--duration-ms", "999999999"),
    ] {
        let out = guts_node(&["tune", "probe", "--data-dir", dir, flag, value], &[]);
        assert!(!out.status.success(), "{flag} {value} accepted");
        assert!(text(&out).contains(flag), "{flag} {value}: {}", text(&out));
        assert!(!tmp.path().join("io-properties.toml").exists());
    }
    let out = guts_node(
        &["tune", "probe", "--data-dir", dir, "--file-bytes", "many"],
        &[],
    );
    assert!(!out.status.success());
}

/// The log without its colour codes.
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[test]
fn the_node_sizes_its_bulk_reads_from_io_properties() {
    // A first start creates the data directory; then the sizing is written
    // (by the probe, then by hand with the smallest values, so a clone
    // streams its pack in many small direct reads).
    let mut node = Node::start();
    node.kill9();
    probe(&node.data_dir);
    node.spawn();
    assert!(
        node.log_text().contains("bulk pack reads sized from"),
        "{}",
        node.log_text()
    );
    node.kill9();
    std::fs::write(
        node.data_dir.join("io-properties.toml"),
        "[sizing]\ndma_read_buffer_bytes = 4096\ndma_read_ahead_buffers = 1\n",
    )
    .unwrap();
    node.spawn();
    let log = strip_ansi(&node.log_text());
    assert!(
        log.contains("dma_read_buffer_bytes=4096") && log.contains("dma_read_ahead_buffers=1"),
        "{log}"
    );
    let tmp = tempfile::tempdir().unwrap();
    let src = corpus_mirror(tmp.path(), "guts");
    let url = node.create_repo("alice", "guts");
    git_ok(&src, &["push", "--quiet", "--mirror", &url]);
    let dst = tmp.path().join("clone.git");
    git_ok(
        tmp.path(),
        &["clone", "--quiet", "--bare", &url, dst.to_str().unwrap()],
    );
    fsck(&dst);
    assert_eq!(refs_of(&dst), refs_of(&src));
}

#[test]
fn a_bad_io_properties_file_stops_the_start_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    for body in [
        "[sizing]\ndma_read_buffer_bytes = 3000\ndma_read_ahead_buffers = 4\n",
        "[sizing]\ndma_read_buffer_bytes = 262144\ndma_read_ahead_buffers = 0\n",
        "[sizing]\ndma_read_buffer_bytes = 262144\n",
        "not toml at all [",
    ] {
        std::fs::write(data.join("io-properties.toml"), body).unwrap();
        let api = format!("127.0.0.1:{}", free_port());
        let metrics = format!("127.0.0.1:{}", free_port());
        let out = guts_node(
            &[
                "--data-dir",
                data.to_str().unwrap(),
                "--api-addr",
                &api,
                "--metrics-addr",
                &metrics,
            ],
            &[],
        );
        assert!(!out.status.success(), "started with {body:?}");
        assert!(
            text(&out).contains("io-properties.toml"),
            "{body:?}: {}",
            text(&out)
        );
    }
}

/// A stand-in /proc/sys and /sys with every setting wrong.
fn wrong_host(root: &Path, data_dir: &Path) -> std::path::PathBuf {
    use std::os::unix::fs::MetadataExt;
    let w = |p: &str, v: &str| {
        let path = root.join(p);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, v).unwrap();
    };
    w("proc/sys/kernel/io_uring_disabled", "2\n");
    w("proc/sys/kernel/osrelease", "5.4.0-200-generic\n");
    w("proc/sys/net/core/somaxconn", "128\n");
    w(
        "sys/kernel/mm/transparent_hugepage/enabled",
        "[always] madvise never\n",
    );
    w(
        "sys/devices/system/cpu/cpu0/cpufreq/scaling_governor",
        "powersave\n",
    );
    w(
        "sys/devices/system/cpu/cpu1/cpufreq/scaling_governor",
        "performance\n",
    );
    let dev = std::fs::metadata(data_dir).unwrap().dev();
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    let sched = format!("sys/dev/block/{major}:{minor}/queue/scheduler");
    w(&sched, "mq-deadline kyber [bfq] none\n");
    root.join(sched)
}

fn line<'a>(out: &'a str, name: &str) -> &'a str {
    out.lines()
        .find(|l| {
            // "TAG   NAME   found: ...": the tag is 5 wide, then a space.
            (l.starts_with("ok") || l.starts_with("WRONG") || l.starts_with("n/a"))
                && l.get(6..)
                    .is_some_and(|rest| rest.starts_with(&format!("{name} ")))
        })
        .unwrap_or_else(|| panic!("no line for {name}:\n{out}"))
}

#[test]
fn check_reports_without_changing_and_apply_changes_what_it_can() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let root = tmp.path().join("host");
    let sched = wrong_host(&root, &data);
    let snapshot = |root: &Path| {
        let mut files = Vec::new();
        let mut stack = vec![root.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    files.push((p.clone(), std::fs::read_to_string(&p).unwrap()));
                }
            }
        }
        files.sort();
        files
    };
    let before = snapshot(&root);
    let env = [("GUTS_TUNE_SYSROOT", root.to_str().unwrap())];
    let dd = data.to_str().unwrap();

    let out = guts_node(&["tune", "check", "--data-dir", dd], &env);
    let t = text(&out);
    assert!(!out.status.success(), "wrong settings pass:\n{t}");
    for (name, found) in [
        ("kernel", "5.4.0"),
        ("io_uring", "kernel.io_uring_disabled=2"),
        ("cpu governor", "powersave"),
        ("transparent hugepages", "always"),
        ("net.core.somaxconn", "128"),
        ("disk scheduler", "bfq"),
    ] {
        let l = line(&t, name);
        assert!(l.starts_with("WRONG"), "{l}");
        assert!(
            l.contains(found) && l.contains("wanted:") && l.contains("why:"),
            "{l}"
        );
    }
    for name in ["memlock limit", "open-file limit"] {
        let l = line(&t, name);
        assert!(
            l.contains("found:") && l.contains("wanted:") && l.contains("why:"),
            "{l}"
        );
    }
    assert_eq!(snapshot(&root), before, "check changed something");

    let out = guts_node(&["tune", "apply", "--data-dir", dd], &env);
    let t = text(&out);
    for name in [
        "io_uring",
        "cpu governor",
        "transparent hugepages",
        "net.core.somaxconn",
        "disk scheduler",
    ] {
        assert!(t.contains(&format!("changed {name}:")), "{name}:\n{t}");
    }
    let read = |p: &str| std::fs::read_to_string(root.join(p)).unwrap();
    assert_eq!(read("proc/sys/kernel/io_uring_disabled"), "0");
    assert_eq!(read("proc/sys/net/core/somaxconn"), "4096");
    assert_eq!(
        read("sys/kernel/mm/transparent_hugepage/enabled"),
        "madvise"
    );
    assert_eq!(
        read("sys/devices/system/cpu/cpu0/cpufreq/scaling_governor"),
        "performance"
    );
    assert_eq!(std::fs::read_to_string(&sched).unwrap(), "none");
    // Limits are the service manager's: apply says what to put in the unit.
    if line(
        &text(&guts_node(&["tune", "check", "--data-dir", dd], &env)),
        "memlock limit",
    )
    .starts_with("WRONG")
    {
        assert!(t.contains("LimitMEMLOCK="), "{t}");
        assert!(
            !out.status.success(),
            "apply with a limit still wrong exited 0:\n{t}"
        );
    }

    // A real sysfs shows the choice in brackets: make the stand-in do so
    // too, and check sees every applied setting as wanted.
    std::fs::write(
        root.join("sys/kernel/mm/transparent_hugepage/enabled"),
        "always [madvise] never\n",
    )
    .unwrap();
    std::fs::write(&sched, "mq-deadline kyber bfq [none]\n").unwrap();
    let t = text(&guts_node(&["tune", "check", "--data-dir", dd], &env));
    for name in [
        "io_uring",
        "cpu governor",
        "transparent hugepages",
        "net.core.somaxconn",
        "disk scheduler",
    ] {
        assert!(line(&t, name).starts_with("ok"), "{name}:\n{t}");
    }
}

#[test]
fn apply_without_permission_says_what_it_could_not_change() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let root = tmp.path().join("host");
    wrong_host(&root, &data);
    // A file no one can write (not even root) stands for a setting this
    // user may not change: cpu0's governor reads as something else and
    // refuses the write.
    let file = root.join("sys/devices/system/cpu/cpu0/cpufreq/scaling_governor");
    std::fs::remove_file(&file).unwrap();
    std::os::unix::fs::symlink("/proc/version", &file).unwrap();
    let env = [("GUTS_TUNE_SYSROOT", root.to_str().unwrap())];
    let out = guts_node(
        &["tune", "apply", "--data-dir", data.to_str().unwrap()],
        &env,
    );
    let t = text(&out);
    assert!(!out.status.success(), "{t}");
    assert!(t.contains("changed io_uring:"), "{t}");
    assert!(t.contains("could not change cpu governor"), "{t}");
    assert!(
        t.contains("could not change kernel: upgrade the kernel"),
        "{t}"
    );
    assert!(
        t.contains("still wrong:") && t.contains("cpu governor"),
        "{t}"
    );
}

#[test]
fn the_example_configuration_starts_a_node() {
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("tuning/guts-node.toml");
    // Flags override the file's addresses and data directory.
    let node = Node::start_with(&["--config", config.to_str().unwrap()]);
    let tmp = tempfile::tempdir().unwrap();
    let url = node.create_repo("alice", "example");
    let dst = tmp.path().join("clone.git");
    git_ok(
        tmp.path(),
        &["clone", "--quiet", "--bare", &url, dst.to_str().unwrap()],
    );
}

#[test]
fn the_sysctl_file_sets_what_check_reads() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("tuning/99-guts-node.conf");
    let conf = std::fs::read_to_string(&file).expect("tuning/99-guts-node.conf");
    let tmp = tempfile::tempdir().unwrap();
    let out = guts_node(
        &["tune", "check", "--data-dir", tmp.path().to_str().unwrap()],
        &[],
    );
    let t = text(&out);
    let mut keys = 0;
    for l in conf.lines().map(str::trim) {
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        let (key, value) = l.split_once('=').expect("key = value");
        let key = key.trim().trim_start_matches('-');
        assert!(!value.trim().is_empty(), "{l}");
        assert!(t.contains(key), "{key} is not what tune check reads:\n{t}");
        keys += 1;
    }
    assert!(keys >= 2, "{conf}");
}
