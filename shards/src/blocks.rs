//! The block record: a bounded log, on disk, of the blocks this node
//! applied and a summary of their transactions, so that an operator can
//! ask what happened at a height (`GET /api/consensus/blocks/HEIGHT`) and
//! the node knows its height after a restart.
//!
//! `DATA/consensus/blocks.jsonl` holds one JSON object per line, oldest
//! first; when it reaches [`BLOCKS_PER_FILE`] lines it becomes
//! `blocks.1.jsonl` (replacing the previous one) and a new file starts, so
//! between [`BLOCKS_PER_FILE`] and twice as many recent blocks are kept.
//! A torn last line (a crash in the middle of a write) is cut off when the
//! log is opened. Token secrets never appear (only their user and scope).

use crate::consensus::{Op, Transaction};
use std::io::{BufRead, Read, Write};
use std::path::{Path, PathBuf};

/// Blocks in one file of the record.
pub const BLOCKS_PER_FILE: u64 = 4096;
/// Ref updates listed per transaction (the count is always given).
pub const REFS_LISTED_MAX: usize = 64;
/// Longest line read back (a line is at most a few dozen KiB).
const LINE_MAX_BYTES: usize = 4 * 1024 * 1024;
/// The current file, in the consensus directory.
pub const CURRENT_FILE: &str = "blocks.jsonl";
/// The previous file.
pub const PREVIOUS_FILE: &str = "blocks.1.jsonl";

/// The summary of one transaction as recorded.
pub fn summarize(tx: &Transaction) -> serde_json::Value {
    use serde_json::json;
    let id = format!("{}:{}", tx.id.origin, tx.id.nonce);
    match &tx.op {
        Op::CreateRepo => json!({"id": id, "type": "create_repository", "repo": tx.repo}),
        Op::Update {
            updates,
            atomic,
            pack,
        } => {
            let refs: Vec<serde_json::Value> = updates
                .iter()
                .take(REFS_LISTED_MAX)
                .map(|u| json!({"ref": u.name, "old": u.old.to_hex(), "new": u.new.to_hex()}))
                .collect();
            json!({"id": id, "type": "ref_update", "repo": tx.repo, "atomic": atomic,
                "ref_count": updates.len(), "refs": refs,
                "pack": pack.map(|p| p.file_stem())})
        }
        Op::TokenCreate {
            user,
            scope,
            write,
            admin,
            ..
        } => json!({"id": id, "type": "token_create", "user": user, "scope": scope,
                "write": write, "admin": admin}),
        Op::TokenRevoke { token_id } => {
            json!({"id": id, "type": "token_revoke", "token_id": token_id})
        }
        Op::SetVisibility { private } => {
            json!({"id": id, "type": "set_visibility", "repo": tx.repo, "private": private})
        }
    }
}

/// The record, open for appending (held by the one thread that orders or
/// applies blocks).
pub struct BlockLog {
    dir: PathBuf,
    file: std::fs::File,
    lines: u64,
    last_height: u64,
    /// fdatasync after each block (the record is the height's only
    /// durable copy on a standalone node).
    sync: bool,
}

/// Errors of the block record.
#[derive(Debug, thiserror::Error)]
pub enum BlockLogError {
    #[error("block record {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> BlockLogError + '_ {
    move |source| BlockLogError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Heights of the complete lines of `path` (in order), and the length of
/// the complete part.
fn scan(path: &Path) -> std::io::Result<(Vec<u64>, u64)> {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
        Err(e) => return Err(e),
    };
    let mut reader = std::io::BufReader::new(file);
    let mut heights = Vec::new();
    let mut good = 0u64;
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = reader.read_until(b'\n', &mut line)?;
        if n == 0 || line.last() != Some(&b'\n') {
            break;
        }
        if let Some(h) = height_of(&line) {
            heights.push(h);
        }
        good += n as u64;
    }
    Ok((heights, good))
}

fn height_of(line: &[u8]) -> Option<u64> {
    #[derive(serde::Deserialize)]
    struct Head {
        height: u64,
    }
    serde_json::from_slice::<Head>(line).ok().map(|h| h.height)
}

impl BlockLog {
    /// Open (or create) the record in `consensus_dir`, cutting a torn tail.
    pub fn open(consensus_dir: &Path, sync: bool) -> Result<BlockLog, BlockLogError> {
        std::fs::create_dir_all(consensus_dir).map_err(io_err(consensus_dir))?;
        let current = consensus_dir.join(CURRENT_FILE);
        let (heights, good) = scan(&current).map_err(io_err(&current))?;
        let (previous, _) = scan(&consensus_dir.join(PREVIOUS_FILE)).map_err(io_err(&current))?;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&current)
            .map_err(io_err(&current))?;
        let len = file.metadata().map_err(io_err(&current))?.len();
        if len != good {
            tracing::warn!(
                path = %current.display(),
                cut_bytes = len - good,
                "block record: torn last line cut"
            );
            file.set_len(good).map_err(io_err(&current))?;
        }
        let last_height = heights
            .iter()
            .chain(previous.iter())
            .copied()
            .max()
            .unwrap_or(0);
        Ok(BlockLog {
            dir: consensus_dir.to_path_buf(),
            file,
            lines: heights.len() as u64,
            last_height,
            sync,
        })
    }

    /// Height of the last block recorded (0 if none).
    pub fn last_height(&self) -> u64 {
        self.last_height
    }

    /// Record the block at `height` with its transactions' summaries.
    pub fn append(
        &mut self,
        height: u64,
        transactions: &[serde_json::Value],
    ) -> Result<(), BlockLogError> {
        let current = self.dir.join(CURRENT_FILE);
        if self.lines >= BLOCKS_PER_FILE {
            let previous = self.dir.join(PREVIOUS_FILE);
            std::fs::rename(&current, &previous).map_err(io_err(&current))?;
            self.file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&current)
                .map_err(io_err(&current))?;
            self.lines = 0;
        }
        let time_unix_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let mut line = serde_json::json!({
            "height": height,
            "time_unix_ms": time_unix_ms,
            "transaction_count": transactions.len(),
            "transactions": transactions,
        })
        .to_string();
        line.push('\n');
        self.file
            .write_all(line.as_bytes())
            .map_err(io_err(&current))?;
        if self.sync {
            self.file.sync_data().map_err(io_err(&current))?;
        }
        self.lines += 1;
        self.last_height = self.last_height.max(height);
        Ok(())
    }
}

/// What the record says of `height`: the block, or the range of heights
/// the record still holds (for the answer when it is not there).
pub fn find(consensus_dir: &Path, height: u64) -> std::io::Result<Found> {
    let mut oldest = None;
    let mut newest = None;
    for name in [PREVIOUS_FILE, CURRENT_FILE] {
        let file = match std::fs::File::open(consensus_dir.join(name)) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        let mut reader = std::io::BufReader::new(file);
        let mut line = Vec::new();
        loop {
            line.clear();
            let n = reader
                .by_ref()
                .take(LINE_MAX_BYTES as u64)
                .read_until(b'\n', &mut line)?;
            if n == 0 || line.last() != Some(&b'\n') {
                break;
            }
            let Some(h) = height_of(&line) else { continue };
            oldest = Some(oldest.map_or(h, |o: u64| o.min(h)));
            newest = Some(newest.map_or(h, |o: u64| o.max(h)));
            if h == height {
                if let Ok(v) = serde_json::from_slice(&line) {
                    return Ok(Found::Block(v));
                }
            }
        }
    }
    Ok(Found::Absent { oldest, newest })
}

/// The answer of [`find`].
#[derive(Debug)]
pub enum Found {
    Block(serde_json::Value),
    Absent {
        oldest: Option<u64>,
        newest: Option<u64>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_found_after_reopening_and_a_torn_tail_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = BlockLog::open(dir.path(), true).unwrap();
        for h in 1..=3 {
            log.append(h, &[serde_json::json!({"id": format!("0:{h}")})])
                .unwrap();
        }
        drop(log);
        let path = dir.path().join(CURRENT_FILE);
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(b"{\"height\": 4, \"tra").unwrap();
        let mut log = BlockLog::open(dir.path(), true).unwrap();
        assert_eq!(log.last_height(), 3);
        log.append(4, &[]).unwrap();
        match find(dir.path(), 2).unwrap() {
            Found::Block(v) => assert_eq!(v["transactions"][0]["id"], "0:2"),
            other => panic!("{other:?}"),
        }
        match find(dir.path(), 4).unwrap() {
            Found::Block(v) => assert_eq!(v["transaction_count"], 0),
            other => panic!("{other:?}"),
        }
        match find(dir.path(), 9).unwrap() {
            Found::Absent { oldest, newest } => {
                assert_eq!((oldest, newest), (Some(1), Some(4)))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_record_keeps_a_bounded_number_of_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = BlockLog::open(dir.path(), false).unwrap();
        for h in 1..=(2 * BLOCKS_PER_FILE + 5) {
            log.append(h, &[]).unwrap();
        }
        match find(dir.path(), 1).unwrap() {
            Found::Absent { oldest, newest } => {
                assert_eq!(oldest, Some(BLOCKS_PER_FILE + 1));
                assert_eq!(newest, Some(2 * BLOCKS_PER_FILE + 5));
            }
            other => panic!("{other:?}"),
        }
        drop(log);
        assert_eq!(
            BlockLog::open(dir.path(), false).unwrap().last_height(),
            2 * BLOCKS_PER_FILE + 5
        );
    }
}
