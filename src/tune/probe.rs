//! `guts-node tune probe`: measure the data disk with io_uring and O_DIRECT
//! and write `DATA/io-properties.toml`, whose `[sizing]` the node reads at
//! start to size its bulk pack reads (see `guts_io::dma`).
//!
//! What is measured, on one scratch file of `--file-bytes` in the data
//! directory (removed afterwards), each workload for `--duration-ms`:
//! sequential writes and reads of 256 KiB (the node's default DMA read
//! size) at several queue depths, random 4 KiB reads and writes at several
//! queue depths, and sequential reads at several buffer sizes at the
//! chosen read-ahead depth.
//!
//! What is derived, and used: the read-ahead depth is the smallest queue
//! depth whose sequential read bandwidth is within 10% of the best one
//! measured; the read buffer is the smallest buffer size whose sequential
//! read bandwidth at that depth is within 10% of the best. Random-I/O
//! figures are recorded for the operator; nothing in the node is sized by
//! them (object reads for walks go through the page cache).

use anyhow::{bail, Context};
use io_uring::{opcode, types, IoUring};
use std::alloc::Layout;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Name of the results file in the data directory.
pub const IO_PROPERTIES_FILE_NAME: &str = "io-properties.toml";
/// Default size of the scratch file.
pub const FILE_BYTES_DEFAULT: u64 = 64 * 1024 * 1024;
/// Smallest and largest scratch file.
pub const FILE_BYTES_RANGE: (u64, u64) = (MIB, 1024 * 1024 * MIB);
/// Default time per workload.
pub const DURATION_MS_DEFAULT: u64 = 200;
/// Shortest and longest time per workload.
pub const DURATION_MS_RANGE: (u64, u64) = (1, 60_000);

const MIB: u64 = 1024 * 1024;
const ALIGN: usize = 4096;
const SEQ_BLOCK_BYTES: usize = 256 * 1024;
const RAND_BLOCK_BYTES: usize = 4096;
const FILL_BLOCK_BYTES: usize = 1024 * 1024;
const SEQ_QUEUE_DEPTHS: [usize; 5] = [1, 2, 4, 8, 16];
const RAND_QUEUE_DEPTHS: [usize; 4] = [1, 4, 16, 32];
const BUFFER_SWEEP_BYTES: [usize; 5] = [64 * 1024, 128 * 1024, 256 * 1024, 512 * 1024, 1024 * 1024];
/// Within this fraction of the best bandwidth counts as saturated.
const SATURATION: f64 = 0.9;

/// What `tune probe` was asked for.
pub struct ProbeOptions {
    pub data_dir: PathBuf,
    pub file_bytes: u64,
    pub duration_ms: u64,
    pub output: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Read,
    Write,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pattern {
    Sequential,
    Random,
}

/// One measured workload.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Measurement {
    pub workload: String,
    pub block_bytes: u64,
    pub queue_depth: u64,
    pub bytes_per_sec: u64,
    pub iops: u64,
    pub ops: u64,
}

/// What the node reads at start.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sizing {
    /// Bytes per bulk (DMA) pack read.
    pub dma_read_buffer_bytes: usize,
    /// Bulk reads in flight ahead of the consumer.
    pub dma_read_ahead_buffers: usize,
}

/// How the probe ran.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ProbeInfo {
    pub data_dir: String,
    pub file_bytes: u64,
    pub duration_ms: u64,
    pub unix_time: u64,
    pub version: String,
}

/// The whole `io-properties.toml`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct IoProperties {
    pub sizing: Sizing,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe: Option<ProbeInfo>,
    #[serde(default)]
    pub measurement: Vec<Measurement>,
}

/// Read `DATA/io-properties.toml` if there is one and apply its sizing to
/// this process; `Ok(None)` when there is no such file.
pub fn load_and_apply(data_dir: &Path) -> anyhow::Result<Option<Sizing>> {
    let path = data_dir.join(IO_PROPERTIES_FILE_NAME);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let props: IoProperties = toml::from_str(&text).with_context(|| {
        format!(
            "parsing {} (run `guts-node tune probe` again, or remove the file to use the built-in sizing)",
            path.display()
        )
    })?;
    guts_io::dma::set_sizing(
        props.sizing.dma_read_buffer_bytes,
        props.sizing.dma_read_ahead_buffers,
    )
    .map_err(|e| anyhow::anyhow!("{}: [sizing]: {e}", path.display()))?;
    Ok(Some(props.sizing))
}

/// An aligned buffer for O_DIRECT.
struct AlignedBuf {
    ptr: *mut u8,
    layout: Layout,
}

impl AlignedBuf {
    fn new(len: usize) -> AlignedBuf {
        let layout = Layout::from_size_align(len.max(ALIGN), ALIGN).expect("layout");
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        if ptr.is_null() {
            std::alloc::handle_alloc_error(layout);
        }
        // Something other than zeros, so that no layer can skip the writes.
        // SAFETY: ptr is valid for layout.size() bytes.
        let bytes = unsafe { std::slice::from_raw_parts_mut(ptr, layout.size()) };
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = (i.wrapping_mul(31) ^ (i >> 9)) as u8;
        }
        AlignedBuf { ptr, layout }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout.
        unsafe { std::alloc::dealloc(self.ptr, self.layout) };
    }
}

/// The scratch file, removed when dropped.
struct Scratch {
    file: std::fs::File,
    path: PathBuf,
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

enum Limit {
    Time(Duration),
    Ops(u64),
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

#[allow(clippy::too_many_arguments)]
fn run(
    ring: &mut IoUring,
    fd: i32,
    op: Op,
    pattern: Pattern,
    block: usize,
    depth: usize,
    file_bytes: u64,
    limit: Limit,
) -> anyhow::Result<Measurement> {
    let blocks = (file_bytes / block as u64).max(1);
    let buf = AlignedBuf::new(block * depth);
    let mut free: Vec<usize> = (0..depth).rev().collect();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (block as u64) << 7 ^ depth as u64);
    let mut next_seq = 0u64;
    let (mut submitted, mut ops, mut bytes, mut inflight) = (0u64, 0u64, 0u64, 0usize);
    let start = Instant::now();
    loop {
        let more = |submitted: u64| match limit {
            Limit::Time(d) => start.elapsed() < d,
            Limit::Ops(n) => submitted < n,
        };
        while let Some(slot) = free.last().copied() {
            if !more(submitted) {
                break;
            }
            let index = match pattern {
                Pattern::Sequential => {
                    let i = next_seq % blocks;
                    next_seq += 1;
                    i
                }
                Pattern::Random => rng.next() % blocks,
            };
            let offset = index * block as u64;
            // SAFETY: slot < depth, so the slot's range lies in `buf`.
            let ptr = unsafe { buf.ptr.add(slot * block) };
            let entry = match op {
                Op::Read => opcode::Read::new(types::Fd(fd), ptr, block as u32)
                    .offset(offset)
                    .build(),
                Op::Write => opcode::Write::new(types::Fd(fd), ptr, block as u32)
                    .offset(offset)
                    .build(),
            }
            .user_data(slot as u64);
            // SAFETY: the buffer outlives the operation: every submitted
            // operation is reaped below before `buf` is dropped.
            if unsafe { ring.submission().push(&entry) }.is_err() {
                break;
            }
            free.pop();
            submitted += 1;
            inflight += 1;
        }
        if inflight == 0 {
            break;
        }
        ring.submit_and_wait(1).context("io_uring_enter")?;
        let done: Vec<(u64, i32)> = ring
            .completion()
            .map(|c| (c.user_data(), c.result()))
            .collect();
        for (slot, res) in done {
            inflight -= 1;
            free.push(slot as usize);
            if res < 0 {
                // Reap what is still in flight before `buf` goes away.
                while inflight > 0 {
                    ring.submit_and_wait(1)?;
                    inflight -= ring.completion().count();
                }
                return Err(std::io::Error::from_raw_os_error(-res))
                    .with_context(|| format!("{op:?} of {block} bytes"));
            }
            if res as usize != block {
                while inflight > 0 {
                    ring.submit_and_wait(1)?;
                    inflight -= ring.completion().count();
                }
                bail!("short {op:?}: {res} of {block} bytes");
            }
            ops += 1;
            bytes += block as u64;
        }
    }
    let secs = start.elapsed().as_secs_f64().max(1e-9);
    let name = match (pattern, op) {
        (Pattern::Sequential, Op::Read) => "seq_read",
        (Pattern::Sequential, Op::Write) => "seq_write",
        (Pattern::Random, Op::Read) => "rand_read",
        (Pattern::Random, Op::Write) => "rand_write",
    };
    Ok(Measurement {
        workload: name.to_string(),
        block_bytes: block as u64,
        queue_depth: depth as u64,
        bytes_per_sec: (bytes as f64 / secs) as u64,
        iops: (ops as f64 / secs) as u64,
        ops,
    })
}

/// The smallest candidate within [`SATURATION`] of the best bandwidth.
fn saturating(results: &[Measurement], key: impl Fn(&Measurement) -> u64) -> u64 {
    let best = results.iter().map(|m| m.bytes_per_sec).max().unwrap_or(0);
    results
        .iter()
        .filter(|m| m.bytes_per_sec as f64 >= best as f64 * SATURATION)
        .map(key)
        .min()
        .unwrap_or(0)
}

/// Run the probe and write the results.
pub fn probe(opts: &ProbeOptions) -> anyhow::Result<()> {
    let (fmin, fmax) = FILE_BYTES_RANGE;
    if !(fmin..=fmax).contains(&opts.file_bytes) || !opts.file_bytes.is_multiple_of(MIB) {
        bail!(
            "--file-bytes {}: want a whole number of MiB from {fmin} to {fmax}",
            opts.file_bytes
        );
    }
    let (dmin, dmax) = DURATION_MS_RANGE;
    if !(dmin..=dmax).contains(&opts.duration_ms) {
        bail!("--duration-ms {}: want {dmin} to {dmax}", opts.duration_ms);
    }
    std::fs::create_dir_all(&opts.data_dir)
        .with_context(|| format!("creating {}", opts.data_dir.display()))?;
    let path = opts.data_dir.join(".io-probe.tmp");
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(libc::O_DIRECT)
        .open(&path)
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::EINVAL) {
                anyhow::anyhow!(
                    "the file system of {} does not support O_DIRECT (tmpfs?): the node's bulk reads fall back to the page cache there, and there is nothing to size",
                    opts.data_dir.display()
                )
            } else {
                anyhow::Error::new(e).context(format!("creating {}", path.display()))
            }
        })?;
    let scratch = Scratch { file, path };
    let fd = scratch.file.as_raw_fd();
    let mut ring = IoUring::new(64).context(
        "setting up io_uring (see `guts-node tune check`: kernel.io_uring_disabled, memlock limit)",
    )?;
    let dur = Duration::from_millis(opts.duration_ms);
    let fb = opts.file_bytes;
    eprintln!(
        "probing {} with a {} MiB file, {} ms per workload",
        opts.data_dir.display(),
        fb / MIB,
        opts.duration_ms
    );
    // Write the whole file first: reads of never-written blocks would not
    // touch the disk.
    run(
        &mut ring,
        fd,
        Op::Write,
        Pattern::Sequential,
        FILL_BLOCK_BYTES,
        4,
        fb,
        Limit::Ops(fb / FILL_BLOCK_BYTES as u64),
    )
    .context("filling the scratch file")?;
    // SAFETY: fdatasync on a descriptor we own.
    unsafe { libc::fdatasync(fd) };
    let mut all = Vec::new();
    let mut seq_reads = Vec::new();
    for &qd in &SEQ_QUEUE_DEPTHS {
        let m = run(
            &mut ring,
            fd,
            Op::Write,
            Pattern::Sequential,
            SEQ_BLOCK_BYTES,
            qd,
            fb,
            Limit::Time(dur),
        )?;
        all.push(m);
    }
    for &qd in &SEQ_QUEUE_DEPTHS {
        let m = run(
            &mut ring,
            fd,
            Op::Read,
            Pattern::Sequential,
            SEQ_BLOCK_BYTES,
            qd,
            fb,
            Limit::Time(dur),
        )?;
        seq_reads.push(m.clone());
        all.push(m);
    }
    for &qd in &RAND_QUEUE_DEPTHS {
        all.push(run(
            &mut ring,
            fd,
            Op::Read,
            Pattern::Random,
            RAND_BLOCK_BYTES,
            qd,
            fb,
            Limit::Time(dur),
        )?);
    }
    for &qd in &RAND_QUEUE_DEPTHS {
        all.push(run(
            &mut ring,
            fd,
            Op::Write,
            Pattern::Random,
            RAND_BLOCK_BYTES,
            qd,
            fb,
            Limit::Time(dur),
        )?);
    }
    let read_ahead = saturating(&seq_reads, |m| m.queue_depth) as usize;
    let mut sweep = Vec::new();
    for &b in &BUFFER_SWEEP_BYTES {
        let m = run(
            &mut ring,
            fd,
            Op::Read,
            Pattern::Sequential,
            b,
            read_ahead,
            fb,
            Limit::Time(dur),
        )?;
        let mut named = m.clone();
        named.workload = "seq_read_buffer_sweep".to_string();
        sweep.push(m);
        all.push(named);
    }
    let buffer = saturating(&sweep, |m| m.block_bytes) as usize;
    drop(scratch);

    let sizing = Sizing {
        dma_read_buffer_bytes: buffer,
        dma_read_ahead_buffers: read_ahead,
    };
    guts_io::dma::set_sizing(buffer, read_ahead)
        .map_err(|e| anyhow::anyhow!("derived sizing: {e}"))?;
    let props = IoProperties {
        sizing,
        probe: Some(ProbeInfo {
            data_dir: opts.data_dir.display().to_string(),
            file_bytes: fb,
            duration_ms: opts.duration_ms,
            unix_time: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            version: env!("CARGO_PKG_VERSION").to_string(),
        }),
        measurement: all.clone(),
    };
    let output = opts
        .output
        .clone()
        .unwrap_or_else(|| opts.data_dir.join(IO_PROPERTIES_FILE_NAME));
    let text = format!(
        "# Written by `guts-node tune probe`. The node reads [sizing] at start\n\
         # (bulk pack reads: bytes per read, reads ahead); [[measurement]] is\n\
         # for the operator.\n{}",
        toml::to_string(&props).context("encoding the results")?
    );
    write_atomically(&output, text.as_bytes())?;

    println!(
        "{:<22} {:>10} {:>5} {:>12} {:>10}",
        "workload", "block", "qd", "MiB/s", "IOPS"
    );
    for m in &all {
        println!(
            "{:<22} {:>10} {:>5} {:>12.1} {:>10}",
            m.workload,
            m.block_bytes,
            m.queue_depth,
            m.bytes_per_sec as f64 / MIB as f64,
            m.iops
        );
    }
    println!("sizing: dma_read_buffer_bytes = {buffer}, dma_read_ahead_buffers = {read_ahead}");
    println!(
        "written to {} (read by the node at its next start)",
        output.display()
    );
    Ok(())
}

fn write_atomically(path: &Path, data: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("toml.tmp");
    let mut f =
        std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    f.write_all(data)
        .and_then(|_| f.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
    if let Some(dir) = path.parent() {
        if let Ok(d) = std::fs::File::open(if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        }) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}
