//! Bulk pack reads on io_uring: glommio DMA files (O_DIRECT) read with
//! read-ahead, handed out as `Bytes` that borrow the aligned DMA buffers
//! without copying.
//!
//! Used where a clone streams whole stored packs (the verbatim path of
//! [`crate::pack::write`]): large sequential reads with no parsing. Random
//! object reads for walks stay on positional reads through the page cache
//! (they run on the blocking pool, outside any executor).
//!
//! Must be called on a glommio executor thread.

use bytes::Bytes;
use glommio::io::{DmaFile, DmaStreamReader, DmaStreamReaderBuilder, ReadResult};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::ThreadId;

/// Bytes each DMA read fetches, unless the node was sized otherwise
/// ([`set_sizing`], from `DATA/io-properties.toml` written by
/// `guts-node tune probe`).
pub const DMA_READ_BUFFER_BYTES: usize = 256 * 1024;
/// Reads issued ahead of the consumer, unless sized otherwise.
pub const DMA_READ_AHEAD_BUFFERS: usize = 4;
/// Smallest and largest DMA read buffer [`set_sizing`] accepts.
pub const DMA_READ_BUFFER_BYTES_RANGE: (usize, usize) = (4096, 8 * 1024 * 1024);
/// Smallest and largest read-ahead depth [`set_sizing`] accepts.
pub const DMA_READ_AHEAD_BUFFERS_RANGE: (usize, usize) = (1, 64);

static READ_BUFFER_BYTES: AtomicUsize = AtomicUsize::new(DMA_READ_BUFFER_BYTES);
static READ_AHEAD_BUFFERS: AtomicUsize = AtomicUsize::new(DMA_READ_AHEAD_BUFFERS);

/// Size the bulk pack reads of this process: bytes per read (a power of
/// two within [`DMA_READ_BUFFER_BYTES_RANGE`]) and reads in flight ahead of
/// the consumer (within [`DMA_READ_AHEAD_BUFFERS_RANGE`]). Set once at
/// start, before any executor reads.
pub fn set_sizing(buffer_bytes: usize, read_ahead_buffers: usize) -> Result<(), String> {
    let (bmin, bmax) = DMA_READ_BUFFER_BYTES_RANGE;
    if !buffer_bytes.is_power_of_two() || !(bmin..=bmax).contains(&buffer_bytes) {
        return Err(format!(
            "read buffer of {buffer_bytes} bytes: want a power of two from {bmin} to {bmax}"
        ));
    }
    let (amin, amax) = DMA_READ_AHEAD_BUFFERS_RANGE;
    if !(amin..=amax).contains(&read_ahead_buffers) {
        return Err(format!(
            "read-ahead of {read_ahead_buffers} buffers: want {amin} to {amax}"
        ));
    }
    READ_BUFFER_BYTES.store(buffer_bytes, Ordering::Relaxed);
    READ_AHEAD_BUFFERS.store(read_ahead_buffers, Ordering::Relaxed);
    Ok(())
}

/// The sizing in force: (bytes per read, reads ahead).
pub fn sizing() -> (usize, usize) {
    (
        READ_BUFFER_BYTES.load(Ordering::Relaxed),
        READ_AHEAD_BUFFERS.load(Ordering::Relaxed),
    )
}

/// A DMA buffer owned by a `Bytes`. glommio's buffers are tied to the
/// executor thread that read them; the `Bytes` built here are consumed on
/// that same thread (the response body of a connection served by that
/// executor). Should one ever be dropped elsewhere, the buffer is leaked
/// rather than released from the wrong thread.
struct DmaOwned {
    result: Option<ReadResult>,
    thread: ThreadId,
}

// SAFETY: the only non-Send part is the executor-local buffer handle inside
// `ReadResult`; it is only touched (dereferenced or dropped) on the thread
// that created it: `Drop` leaks it on any other thread, and the bytes are
// read-only once the read completed, so shared reads from elsewhere see
// initialized, immutable memory that stays alive until the drop.
unsafe impl Send for DmaOwned {}
// SAFETY: as above; the bytes are immutable after the read.
unsafe impl Sync for DmaOwned {}

impl AsRef<[u8]> for DmaOwned {
    fn as_ref(&self) -> &[u8] {
        self.result.as_deref().unwrap_or(&[])
    }
}

impl Drop for DmaOwned {
    fn drop(&mut self) {
        if std::thread::current().id() != self.thread {
            debug_assert!(false, "DMA buffer dropped off its executor thread");
            std::mem::forget(self.result.take());
        }
    }
}

fn into_bytes(result: ReadResult) -> Bytes {
    if result.is_empty() {
        return Bytes::new();
    }
    Bytes::from_owner(DmaOwned {
        result: Some(result),
        thread: std::thread::current().id(),
    })
}

/// Errors of DMA reads.
#[derive(Debug, thiserror::Error)]
pub enum DmaError {
    #[error("opening {path} for direct I/O: {reason}")]
    Open { path: String, reason: String },
    #[error("reading {path} at {offset}: {reason}")]
    Read {
        path: String,
        offset: u64,
        reason: String,
    },
    #[error("{path} ended at {offset}, before the expected end {end}")]
    ShortRead { path: String, offset: u64, end: u64 },
}

/// Sequential reader of `[start, end)` of one file.
pub struct DmaRangeReader {
    reader: DmaStreamReader,
    path: String,
    pos: u64,
    end: u64,
}

impl DmaRangeReader {
    /// Open `path` with O_DIRECT and prepare to read `[start, end)`.
    pub async fn open(path: &Path, start: u64, end: u64) -> Result<DmaRangeReader, DmaError> {
        let shown = path.display().to_string();
        let file = DmaFile::open(path).await.map_err(|e| DmaError::Open {
            path: shown.clone(),
            reason: e.to_string(),
        })?;
        let (buffer_bytes, read_ahead) = sizing();
        let reader = DmaStreamReaderBuilder::new(file)
            .with_start_pos(start)
            .with_end_pos(end)
            .with_buffer_size(buffer_bytes)
            .with_read_ahead(read_ahead)
            .build();
        Ok(DmaRangeReader {
            reader,
            path: shown,
            pos: start,
            end,
        })
    }

    /// The next chunk (at most `max` bytes), or None at the end of the range.
    pub async fn next_chunk(&mut self, max: usize) -> Option<Result<Bytes, DmaError>> {
        if self.pos >= self.end {
            return None;
        }
        let want = (self.end - self.pos).min(max as u64);
        match self.reader.get_buffer_aligned(want).await {
            Ok(result) if result.is_empty() => Some(Err(DmaError::ShortRead {
                path: self.path.clone(),
                offset: self.pos,
                end: self.end,
            })),
            Ok(result) => {
                self.pos += result.len() as u64;
                Some(Ok(into_bytes(result)))
            }
            Err(e) => Some(Err(DmaError::Read {
                path: self.path.clone(),
                offset: self.pos,
                reason: e.to_string(),
            })),
        }
    }

    /// Close the underlying file.
    pub async fn close(self) {
        let _ = self.reader.close().await;
    }
}
