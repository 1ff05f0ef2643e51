//! The node's monitor: a thread that measures what the health endpoints
//! and the metrics report but no request should wait for — whether the
//! data directory takes writes, how full its disk is, how many bytes and
//! repositories it holds, and (on a network node) whether consensus moves
//! and how many peers are connected.

use guts_shards::health::{NodeChecks, Role};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How often the monitor measures.
pub const MONITOR_INTERVAL_MS: u64 = 500;
/// How often the data directory's size is summed (a walk of every file)
/// and its repositories counted.
pub const USED_BYTES_INTERVAL_MS: u64 = 5_000;
/// The file written and removed to check that the data directory takes
/// writes (in `DATA/repos`, where pushes and new repositories write).
pub const WRITE_PROBE_FILE: &str = ".write-probe";

/// The consensus core of a network node, as the monitor reads it.
pub struct NetworkProbe {
    pub status: crate::consensus::engine::Status,
    pub ledger: std::sync::Arc<crate::consensus::ledger::Ledger>,
    /// Peers this node needs connected for the network to make progress.
    pub peers_needed: u64,
}

/// Whether `DATA/repos` takes a small write; the error otherwise.
pub fn probe_writable(data_dir: &Path) -> Result<(), String> {
    use std::io::Write;
    let path = data_dir.join("repos").join(WRITE_PROBE_FILE);
    let result = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&path)
        .and_then(|mut f| f.write_all(b"probe"));
    let _ = std::fs::remove_file(&path);
    result.map_err(|e| e.to_string())
}

/// Free and total bytes of the file system holding `dir`.
pub fn disk_space(dir: &Path) -> Option<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs writes into the zeroed struct we own; path is NUL-terminated.
    unsafe {
        let mut st: libc::statvfs = std::mem::zeroed();
        (libc::statvfs(path.as_ptr(), &mut st) == 0).then(|| {
            (
                st.f_bavail as u64 * st.f_frsize as u64,
                st.f_blocks as u64 * st.f_frsize as u64,
            )
        })
    }
}

/// Bytes of the files under `dir` (symbolic links not followed).
pub fn used_bytes(dir: &Path) -> u64 {
    let mut total = 0u64;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(meta) = e.metadata() else { continue };
            if meta.is_dir() {
                stack.push(e.path());
            } else if meta.is_file() {
                total += meta.len();
            }
        }
    }
    total
}

/// Take one measurement of the data directory (storage checks only).
pub fn measure_storage(data_dir: &Path, used: u64, repositories: u64) -> NodeChecks {
    let writable = probe_writable(data_dir);
    let (available, capacity) = disk_space(data_dir).unwrap_or((0, 0));
    NodeChecks {
        measured: true,
        storage_writable: writable.is_ok(),
        storage_error: writable.err(),
        available_bytes: available,
        capacity_bytes: capacity,
        used_bytes: used,
        repositories,
        ..NodeChecks::default()
    }
}

/// Measure once now (so the first answers are real), then keep measuring
/// on a thread for the life of the process.
pub fn start(data_dir: PathBuf, role: Role, network: Option<NetworkProbe>) -> std::io::Result<()> {
    let mut monitor = Monitor {
        data_dir,
        role,
        network,
        used: 0,
        repositories: 0,
        used_at: None,
        last_view: 0,
        view_moved: Instant::now(),
    };
    monitor.tick();
    std::thread::Builder::new()
        .name("monitor".into())
        .spawn(move || loop {
            std::thread::sleep(Duration::from_millis(MONITOR_INTERVAL_MS));
            monitor.tick();
        })?;
    Ok(())
}

struct Monitor {
    data_dir: PathBuf,
    role: Role,
    network: Option<NetworkProbe>,
    used: u64,
    repositories: u64,
    used_at: Option<Instant>,
    last_view: u64,
    view_moved: Instant,
}

impl Monitor {
    fn tick(&mut self) {
        let now = Instant::now();
        if self.used_at.is_none_or(|at| {
            now.duration_since(at) >= Duration::from_millis(USED_BYTES_INTERVAL_MS)
        }) {
            self.used = used_bytes(&self.data_dir);
            self.repositories = guts_shards::repo::list_repos(&self.data_dir).len() as u64;
            self.used_at = Some(now);
        }
        let mut checks = measure_storage(&self.data_dir, self.used, self.repositories);
        checks.role = self.role;
        if let Some(net) = &self.network {
            let applied = net.ledger.applied_height();
            let view = net.status.current_view();
            let lag = net.status.finalized_height().saturating_sub(applied);
            let peers = net.status.connected_peers() as u64;
            guts_shards::metrics::record_network(view, peers, lag);
            if view != self.last_view {
                self.last_view = view;
                self.view_moved = now;
            }
            checks.view = view;
            checks.lag_blocks = lag;
            checks.peers_connected = peers;
            checks.peers_needed = net.peers_needed;
            checks.view_still_ms = now.duration_since(self.view_moved).as_millis() as u64;
        }
        checks.height = guts_shards::metrics::block_height();
        guts_shards::metrics::set_storage(&guts_shards::metrics::StorageFacts {
            available_bytes: checks.available_bytes,
            capacity_bytes: checks.capacity_bytes,
            used_bytes: checks.used_bytes,
            writable: checks.storage_writable,
            repositories: checks.repositories,
        });
        guts_shards::health::publish(checks);
    }
}
