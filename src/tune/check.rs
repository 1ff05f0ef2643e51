//! `guts-node tune check` and `tune apply`: the host settings that matter
//! to the node, each with the value found, the value wanted and why.
//!
//! `check` changes nothing and exits non-zero when a setting is wrong.
//! `apply` writes what can be written (sysctls under /proc/sys, sysfs
//! values; both need root) and says what it changed and what it could not.
//! Resource limits are the service manager's: `apply` says what to put in
//! the unit file instead of changing its own.
//!
//! The environment variable `GUTS_TUNE_SYSROOT` (default `/`) roots the
//! /proc/sys and /sys paths read and written, for tests.

use std::path::{Path, PathBuf};

/// Where a wrong setting can be put right.
#[derive(Debug, Clone)]
enum Fix {
    /// Write `value` to each file.
    Write { files: Vec<PathBuf>, value: String },
    /// Only the operator can: what to do.
    Manual(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Ok,
    Wrong,
    /// Not present on this host (no cpufreq, no block device, ...).
    NotApplicable,
}

/// One setting.
#[derive(Debug, Clone)]
struct Finding {
    name: &'static str,
    state: State,
    found: String,
    wanted: String,
    why: String,
    fix: Option<Fix>,
}

impl Finding {
    fn print(&self) {
        let tag = match self.state {
            State::Ok => "ok   ",
            State::Wrong => "WRONG",
            State::NotApplicable => "n/a  ",
        };
        println!(
            "{tag} {:<22} found: {}; wanted: {}; why: {}",
            self.name, self.found, self.wanted, self.why
        );
    }
}

fn sysroot() -> PathBuf {
    std::env::var_os("GUTS_TUNE_SYSROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/"))
}

fn host(path: &str) -> PathBuf {
    sysroot().join(path.trim_start_matches('/'))
}

fn read_trim(path: &Path) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

/// The bracketed choice of a sysfs selector ("always [madvise] never").
fn selected(s: &str) -> Option<String> {
    let start = s.find('[')?;
    let end = s[start..].find(']')? + start;
    Some(s[start + 1..end].to_string())
}

/// What the node's configuration implies for the limits.
pub struct Needs {
    pub shards: usize,
    pub io_memory_bytes: usize,
    pub connections_max: usize,
    pub pack_files_open_max: usize,
}

/// Memlock the unit file grants (tuning/guts-node.service).
const MEMLOCK_UNIT_BYTES: u64 = 64 * 1024 * 1024;
/// glommio listens with this backlog; the kernel caps it at somaxconn.
const LISTEN_BACKLOG: u64 = 1024;

/// glommio's oldest supported kernel.
const KERNEL_MIN: (u32, u32) = (5, 8);

fn kernel(findings: &mut Vec<Finding>) {
    let release = read_trim(&host("/proc/sys/kernel/osrelease"));
    let why =
        "the shards' io_uring runtime needs its probes and operations, present from this kernel on"
            .to_string();
    let wanted = format!(">= {}.{}", KERNEL_MIN.0, KERNEL_MIN.1);
    let version = release.as_deref().and_then(|r| {
        let mut parts = r.split(|c: char| !c.is_ascii_digit());
        Some((
            parts.next()?.parse::<u32>().ok()?,
            parts.next()?.parse::<u32>().ok()?,
        ))
    });
    findings.push(match version {
        None => Finding {
            name: "kernel",
            state: State::NotApplicable,
            found: release.unwrap_or_else(|| "unreadable".into()),
            wanted,
            why,
            fix: None,
        },
        Some(v) => Finding {
            name: "kernel",
            state: if v >= KERNEL_MIN {
                State::Ok
            } else {
                State::Wrong
            },
            found: release.unwrap_or_default(),
            wanted,
            why,
            fix: (v < KERNEL_MIN).then(|| Fix::Manual("upgrade the kernel".into())),
        },
    });
}

fn io_uring(findings: &mut Vec<Finding>) {
    let path = host("/proc/sys/kernel/io_uring_disabled");
    let sysctl = read_trim(&path);
    let setup = io_uring::IoUring::new(4).map(|_| ());
    let found = format!(
        "kernel.io_uring_disabled={}, ring setup {}",
        sysctl
            .as_deref()
            .unwrap_or("absent (kernel without the switch)"),
        match &setup {
            Ok(()) => "works".to_string(),
            Err(e) => format!("fails ({e})"),
        }
    );
    let wrong = sysctl.as_deref().is_some_and(|v| v != "0") || setup.is_err();
    findings.push(Finding {
        name: "io_uring",
        state: if wrong { State::Wrong } else { State::Ok },
        found,
        wanted: "kernel.io_uring_disabled=0 and a ring can be set up".into(),
        why: "every shard does its storage and network I/O on io_uring: without it the node does not start".into(),
        fix: match sysctl.as_deref() {
            Some(v) if v != "0" => Some(Fix::Write {
                files: vec![path],
                value: "0".into(),
            }),
            _ if setup.is_err() => Some(Fix::Manual(
                "io_uring is unavailable although not disabled by sysctl: a seccomp filter (container runtime) or a kernel built without it; allow io_uring_setup/io_uring_enter".into(),
            )),
            _ => None,
        },
    });
}

fn rlimit(resource: libc::__rlimit_resource_t) -> Option<(u64, u64)> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    if unsafe { libc::getrlimit(resource, &mut lim) } != 0 {
        return None;
    }
    Some((lim.rlim_cur, lim.rlim_max))
}

fn show_limit(v: u64) -> String {
    if v == libc::RLIM_INFINITY {
        "unlimited".into()
    } else {
        v.to_string()
    }
}

fn limits(findings: &mut Vec<Finding>, needs: &Needs) {
    let memlock_wanted =
        ((needs.io_memory_bytes as u64) * 3 * needs.shards as u64).max(MEMLOCK_UNIT_BYTES);
    if let Some((soft, hard)) = rlimit(libc::RLIMIT_MEMLOCK) {
        // The node raises its soft limit up to the hard one by itself.
        let ok = hard == libc::RLIM_INFINITY || hard >= memlock_wanted;
        findings.push(Finding {
            name: "memlock limit",
            state: if ok { State::Ok } else { State::Wrong },
            found: format!("soft {} hard {} bytes (of this process)", show_limit(soft), show_limit(hard)),
            wanted: format!("hard >= {memlock_wanted} bytes"),
            why: format!(
                "io_uring registers {} bytes per shard with three rings ({} shards); below it I/O falls back to unregistered buffers, below 512 KiB the node does not start",
                needs.io_memory_bytes, needs.shards
            ),
            fix: if ok {
                None
            } else {
                Some(Fix::Manual(format!(
                    "limits belong to the service: put LimitMEMLOCK={}M in the unit's [Service] (tuning/guts-node.service has it), or `ulimit -l` in the shell that starts the node",
                    memlock_wanted.div_ceil(1024 * 1024)
                )))
            },
        });
    }
    let nofile_wanted = (needs.connections_max as u64) * needs.shards as u64
        + needs.pack_files_open_max as u64
        + 1024;
    if let Some((soft, hard)) = rlimit(libc::RLIMIT_NOFILE) {
        let ok = hard == libc::RLIM_INFINITY || hard >= nofile_wanted;
        findings.push(Finding {
            name: "open-file limit",
            state: if ok { State::Ok } else { State::Wrong },
            found: format!("soft {} hard {} (of this process)", show_limit(soft), show_limit(hard)),
            wanted: format!("hard >= {nofile_wanted}"),
            why: format!(
                "{} connections per shard x {} shards + {} open pack files + 1024 for the rest; the node raises its soft limit to the hard one at start",
                needs.connections_max, needs.shards, needs.pack_files_open_max
            ),
            fix: if ok {
                None
            } else {
                Some(Fix::Manual(
                    "limits belong to the service: put LimitNOFILE=1048576 in the unit's [Service] (tuning/guts-node.service has it), or `ulimit -n` in the shell that starts the node".into(),
                ))
            },
        });
    }
}

fn governor(findings: &mut Vec<Finding>) {
    let cpu_dir = host("/sys/devices/system/cpu");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&cpu_dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter(|e| {
                    let n = e.file_name();
                    let n = n.to_string_lossy();
                    n.starts_with("cpu")
                        && n[3..].chars().all(|c| c.is_ascii_digit())
                        && n.len() > 3
                })
                .map(|e| e.path().join("cpufreq/scaling_governor"))
                .filter(|p| p.exists())
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    let why = "the shards poll their rings and sit on pinned cores: a power-saving governor adds latency to every request".to_string();
    if files.is_empty() {
        findings.push(Finding {
            name: "cpu governor",
            state: State::NotApplicable,
            found: "no cpufreq (a virtual machine, or frequency not under the kernel's control)"
                .into(),
            wanted: "performance".into(),
            why,
            fix: None,
        });
        return;
    }
    let mut values: Vec<String> = files.iter().filter_map(|f| read_trim(f)).collect();
    let wrong: Vec<PathBuf> = files
        .iter()
        .filter(|f| read_trim(f).as_deref() != Some("performance"))
        .cloned()
        .collect();
    values.sort();
    values.dedup();
    findings.push(Finding {
        name: "cpu governor",
        state: if wrong.is_empty() {
            State::Ok
        } else {
            State::Wrong
        },
        found: format!("{} ({} cpus)", values.join(","), files.len()),
        wanted: "performance".into(),
        why,
        fix: (!wrong.is_empty()).then(|| Fix::Write {
            files: wrong,
            value: "performance".into(),
        }),
    });
}

fn thp(findings: &mut Vec<Finding>) {
    let path = host("/sys/kernel/mm/transparent_hugepage/enabled");
    let why = "`always` makes the kernel compact memory and back small short-lived allocations with 2 MiB pages: latency spikes and memory bloat; the node does not ask for huge pages".to_string();
    match read_trim(&path).as_deref().and_then(selected) {
        None => findings.push(Finding {
            name: "transparent hugepages",
            state: State::NotApplicable,
            found: "absent (kernel without THP)".into(),
            wanted: "madvise or never".into(),
            why,
            fix: None,
        }),
        Some(v) => {
            let ok = v == "madvise" || v == "never";
            findings.push(Finding {
                name: "transparent hugepages",
                state: if ok { State::Ok } else { State::Wrong },
                found: v,
                wanted: "madvise or never".into(),
                why,
                fix: (!ok).then(|| Fix::Write {
                    files: vec![path],
                    value: "madvise".into(),
                }),
            })
        }
    }
}

fn somaxconn(findings: &mut Vec<Finding>) {
    let path = host("/proc/sys/net/core/somaxconn");
    let why = format!(
        "each shard listens with a backlog of {LISTEN_BACKLOG} and the kernel caps it at somaxconn: connections beyond it are dropped in bursts"
    );
    match read_trim(&path).and_then(|v| v.parse::<u64>().ok()) {
        None => findings.push(Finding {
            name: "net.core.somaxconn",
            state: State::NotApplicable,
            found: "unreadable".into(),
            wanted: format!(">= {LISTEN_BACKLOG}"),
            why,
            fix: None,
        }),
        Some(v) => {
            let ok = v >= LISTEN_BACKLOG;
            findings.push(Finding {
                name: "net.core.somaxconn",
                state: if ok { State::Ok } else { State::Wrong },
                found: v.to_string(),
                wanted: format!(">= {LISTEN_BACKLOG}"),
                why,
                fix: (!ok).then(|| Fix::Write {
                    files: vec![path],
                    value: "4096".into(),
                }),
            })
        }
    }
}

/// The `queue/scheduler` file of the block device holding `dir`.
fn scheduler_file(dir: &Path) -> Result<PathBuf, String> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let dev = meta.dev();
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    let node = host(&format!("/sys/dev/block/{major}:{minor}"));
    if !node.exists() {
        return Err(format!(
            "device {major}:{minor} is not a block device (overlay, btrfs subvolume, network or memory file system)"
        ));
    }
    let direct = node.join("queue/scheduler");
    if direct.exists() {
        return Ok(direct);
    }
    // A partition: the scheduler is its disk's.
    let real = std::fs::canonicalize(&node).map_err(|e| format!("{}: {e}", node.display()))?;
    let parent = real
        .parent()
        .map(|p| p.join("queue/scheduler"))
        .filter(|p| p.exists());
    parent.ok_or_else(|| format!("device {major}:{minor} has no I/O scheduler"))
}

fn scheduler(findings: &mut Vec<Finding>, data_dir: &Path) {
    let why = "the node keeps its own queue of direct I/O; `none` (NVMe) or `mq-deadline` add the least latency, `bfq` throttles and costs CPU per request".to_string();
    let wanted = "none or mq-deadline".to_string();
    // The data directory may not exist yet: its nearest existing ancestor is on the same device.
    let mut probe = data_dir.to_path_buf();
    while !probe.exists() {
        match probe.parent() {
            Some(p) if !p.as_os_str().is_empty() => probe = p.to_path_buf(),
            _ => {
                probe = PathBuf::from(".");
                break;
            }
        }
    }
    match scheduler_file(&probe) {
        Err(reason) => findings.push(Finding {
            name: "disk scheduler",
            state: State::NotApplicable,
            found: reason,
            wanted,
            why,
            fix: None,
        }),
        Ok(file) => {
            let text = read_trim(&file).unwrap_or_default();
            let current = selected(&text).unwrap_or_else(|| text.clone());
            let ok = current == "none" || current == "mq-deadline";
            let choice = if text
                .split_whitespace()
                .any(|w| w.trim_matches(['[', ']']) == "none")
            {
                "none"
            } else {
                "mq-deadline"
            };
            findings.push(Finding {
                name: "disk scheduler",
                state: if ok { State::Ok } else { State::Wrong },
                found: format!("{current} ({} of {})", file.display(), data_dir.display()),
                wanted,
                why,
                fix: (!ok).then(|| Fix::Write {
                    files: vec![file],
                    value: choice.into(),
                }),
            })
        }
    }
}

fn findings(data_dir: &Path, needs: &Needs) -> Vec<Finding> {
    let mut f = Vec::new();
    kernel(&mut f);
    io_uring(&mut f);
    limits(&mut f, needs);
    governor(&mut f);
    thp(&mut f);
    somaxconn(&mut f);
    scheduler(&mut f, data_dir);
    f
}

/// `tune check`: print every finding; Err when one is wrong.
pub fn check(data_dir: &Path, needs: &Needs) -> anyhow::Result<()> {
    let all = findings(data_dir, needs);
    for f in &all {
        f.print();
    }
    let wrong = all.iter().filter(|f| f.state == State::Wrong).count();
    if wrong > 0 {
        anyhow::bail!("{wrong} host setting(s) wrong (`guts-node tune apply` changes what it can)");
    }
    println!("all host settings are as wanted");
    Ok(())
}

/// `tune apply`: change what can be changed, say what changed and what not.
pub fn apply(data_dir: &Path, needs: &Needs) -> anyhow::Result<()> {
    let all = findings(data_dir, needs);
    for f in all.iter().filter(|f| f.state == State::Wrong) {
        match &f.fix {
            Some(Fix::Write { files, value }) => {
                for file in files {
                    let before = read_trim(file).unwrap_or_default();
                    match std::fs::write(file, value) {
                        Ok(()) => println!(
                            "changed {}: {} -> {value} ({}); not kept across a reboot: {}",
                            f.name,
                            selected(&before).unwrap_or(before.clone()),
                            file.display(),
                            if file.starts_with(host("/proc/sys")) {
                                "install tuning/99-guts-node.conf in /etc/sysctl.d"
                            } else {
                                "run `guts-node tune apply` at boot (see tuning/guts-node.service)"
                            }
                        ),
                        Err(e) => println!(
                            "could not change {}: writing {value} to {}: {e}{}",
                            f.name,
                            file.display(),
                            if e.kind() == std::io::ErrorKind::PermissionDenied {
                                " (run as root)"
                            } else {
                                ""
                            }
                        ),
                    }
                }
            }
            Some(Fix::Manual(what)) => println!("could not change {}: {what}", f.name),
            None => println!("could not change {}: nothing this command can do", f.name),
        }
    }
    // What holds now.
    let after = findings(data_dir, needs);
    let still: Vec<&str> = after
        .iter()
        .filter(|f| f.state == State::Wrong)
        .map(|f| f.name)
        .collect();
    if still.is_empty() {
        println!("all host settings are as wanted");
        Ok(())
    } else {
        anyhow::bail!("still wrong: {}", still.join(", "))
    }
}
