//! Crash test for the ref store with real processes.
//!
//! The test binary re-executes itself as a writer child (selected by the
//! `GUTS_REFS_CRASH_CHILD` environment variable): the child applies ref
//! updates in a loop and prints `ack <seq> <name> <oid>` after each `apply`
//! returns. The parent kills it with SIGKILL at a pseudo-random moment,
//! reopens the store and checks that every acknowledged update survived.
//! Every fourth round also leaves a partial record at the end of the log,
//! as a kill inside `write` (or a power cut) would, before reopening.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use guts_io::refs::{RefStore, RefUpdate, LOG_FILE_NAME};
use guts_io::ObjectId;

const CHILD_ENV: &str = "GUTS_REFS_CRASH_CHILD";
const TEST_NAME: &str = "acked_ref_updates_survive_sigkill";
const ROUNDS: usize = 20;
const KILL_AFTER_MIN_MS: u64 = 5;
const KILL_AFTER_MAX_MS: u64 = 200;
const BRANCHES: u64 = 50;
/// The child compacts on demand every this many records (on top of the
/// store's own periodic compaction).
const CHILD_COMPACT_EVERY: u64 = 97;

/// The ref the update with sequence number `seq` moves.
fn ref_for_seq(seq: u64) -> String {
    format!("refs/heads/b{}", seq % BRANCHES)
}

/// The object id written by the update with sequence number `seq`: the
/// sequence number in the first 8 bytes (so the parent can tell which update
/// a value came from), mixed bits after.
fn oid_for_seq(seq: u64) -> ObjectId {
    let mut bytes = [0u8; 20];
    bytes[..8].copy_from_slice(&seq.to_be_bytes());
    let mut x = seq.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    for chunk in bytes[8..].chunks_mut(4) {
        x = xorshift(x);
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    ObjectId::from_sha1(bytes)
}

fn seq_of_oid(oid: &ObjectId) -> u64 {
    let mut seq = [0u8; 8];
    seq.copy_from_slice(&oid.as_bytes()[..8]);
    u64::from_be_bytes(seq)
}

fn xorshift(mut x: u64) -> u64 {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    x
}

/// The writer: runs until killed.
fn child(dir: &Path) -> ! {
    let mut store = RefStore::open(dir).unwrap();
    let stdout = std::io::stdout();
    // The harness has printed "test <name> ... " without a newline; start
    // the acks on a line of their own.
    writeln!(stdout.lock()).unwrap();
    loop {
        let seq = store.sequence() + 1;
        let name = ref_for_seq(seq);
        let new = oid_for_seq(seq);
        let old = store.get(&name).unwrap_or(ObjectId::NULL_SHA1);
        store
            .apply(&[RefUpdate {
                name: name.clone(),
                old,
                new,
            }])
            .unwrap();
        assert_eq!(store.sequence(), seq);
        {
            let mut out = stdout.lock();
            writeln!(out, "ack {seq} {name} {new}").unwrap();
            out.flush().unwrap();
        }
        if seq.checked_rem(CHILD_COMPACT_EVERY) == Some(0) {
            store.compact().unwrap();
        }
    }
}

#[test]
fn acked_ref_updates_survive_sigkill() {
    if let Some(dir) = std::env::var_os(CHILD_ENV) {
        child(Path::new(&dir));
    }

    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let exe = std::env::current_exe().unwrap();
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    // Per ref: the sequence number of its last acknowledged (or observed
    // durable) update; `max_acked` is the highest over all refs.
    let mut last_acked: HashMap<String, u64> = HashMap::new();
    let mut max_acked = 0u64;
    let mut total_acks = 0usize;

    for round in 0..ROUNDS {
        rng = xorshift(rng);
        let kill_after = Duration::from_millis(
            KILL_AFTER_MIN_MS + rng % (KILL_AFTER_MAX_MS - KILL_AFTER_MIN_MS + 1),
        );

        let mut child = Command::new(&exe)
            .args(["--exact", TEST_NAME, "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut stderr = child.stderr.take().unwrap();
        let (lines_tx, lines_rx) = mpsc::channel::<String>();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if lines_tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr_reader = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            text
        });

        let deadline = Instant::now() + kill_after;
        let mut lines = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match lines_rx.recv_timeout(left) {
                Ok(line) => lines.push(line),
                Err(_) => break,
            }
        }
        let exited_early = child.try_wait().unwrap();
        child.kill().unwrap(); // SIGKILL on unix
        child.wait().unwrap();
        // Everything the child printed before it died is in the pipe.
        reader.join().unwrap();
        lines.extend(lines_rx.try_iter());
        let child_stderr = stderr_reader.join().unwrap();
        assert!(
            exited_early.is_none(),
            "round {round}: writer exited by itself ({exited_early:?}):\n{child_stderr}"
        );

        let mut round_acks = 0;
        for line in &lines {
            // The test harness prints its own lines too.
            let Some(ack) = line.strip_prefix("ack ") else {
                continue;
            };
            let fields: Vec<&str> = ack.split(' ').collect();
            assert_eq!(fields.len(), 3, "bad ack line {line:?}");
            let seq: u64 = fields[0].parse().unwrap();
            assert_eq!(fields[1], ref_for_seq(seq));
            assert_eq!(fields[2], oid_for_seq(seq).to_hex());
            assert_eq!(seq, max_acked + 1, "acks must follow the store's sequence");
            max_acked = seq;
            last_acked.insert(fields[1].to_owned(), seq);
            round_acks += 1;
        }
        total_acks += round_acks;

        if round % 4 == 3 {
            // As if the kill had landed inside a record's write: a partial
            // record at the end of the log, which recovery must cut off.
            rng = xorshift(rng);
            let mut torn = b"GRL1".to_vec();
            torn.extend_from_slice(&rng.to_le_bytes()[..(rng % 9) as usize]);
            let mut log = std::fs::OpenOptions::new()
                .append(true)
                .open(dir.join(LOG_FILE_NAME))
                .unwrap();
            log.write_all(&torn).unwrap();
        }

        let store = RefStore::open(dir)
            .unwrap_or_else(|e| panic!("round {round}: reopen after SIGKILL failed: {e}"));
        // Acked updates are durable; at most one more (applied, then killed
        // before its ack was printed) may exist.
        let seq = store.sequence();
        assert!(
            seq == max_acked || seq == max_acked + 1,
            "round {round}: store at sequence {seq}, last ack {max_acked}"
        );
        for (name, &acked_seq) in &last_acked {
            let value = store
                .get(name)
                .unwrap_or_else(|| panic!("round {round}: acked ref {name} is missing"));
            let value_seq = seq_of_oid(&value);
            assert_eq!(
                value,
                oid_for_seq(value_seq),
                "round {round}: {name} has a foreign value"
            );
            assert_eq!(ref_for_seq(value_seq), *name);
            assert!(
                value_seq == acked_seq || (value_seq > acked_seq && value_seq == seq),
                "round {round}: {name} is at the update of seq {value_seq}, acked {acked_seq}"
            );
        }
        // Every ref in the store came from an update at or below `seq`.
        for (name, value) in store.refs() {
            let value_seq = seq_of_oid(value);
            assert!(
                value_seq <= seq && ref_for_seq(value_seq) == *name,
                "{name} = {value}"
            );
        }
        // An update that was durable but unacknowledged is now observed
        // durable: from here on it must survive like an acked one, and the
        // next writer continues after it.
        if seq > max_acked {
            last_acked.insert(ref_for_seq(seq), seq);
            max_acked = seq;
        }
        eprintln!("round {round}: killed after {kill_after:?}, {round_acks} acks, store at {seq}");
    }
    assert!(total_acks > 0, "the writer never acknowledged anything");
}
