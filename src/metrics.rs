//! The Prometheus metrics endpoint (`GET /metrics` on the metrics address).
//!
//! A small blocking server on its own threads: scrapes are rare and must
//! not compete with the shards' executors. Each connection gets a thread
//! (up to [`SCRAPE_CONNECTIONS_MAX`] at once), so a client that connects
//! and sends nothing delays nobody but itself.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Bytes of a scrape request read before answering.
const SCRAPE_REQUEST_MAX_BYTES: usize = 8192;
/// Time a scraper has to send its request.
const SCRAPE_TIMEOUT_MS: u64 = 5000;
/// Connections served at once; more are closed at once.
pub const SCRAPE_CONNECTIONS_MAX: usize = 256;
/// Stack of a connection thread (it only formats text).
const SCRAPE_THREAD_STACK_BYTES: usize = 128 * 1024;

/// Bind the metrics endpoint and serve it on a background thread.
pub fn start(addr: SocketAddr) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr)?;
    let started = Instant::now();
    let busy = Arc::new(AtomicUsize::new(0));
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            for stream in listener.incoming() {
                let stream = match stream {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::debug!(error = %e, "metrics accept failed");
                        std::thread::sleep(Duration::from_millis(10));
                        continue;
                    }
                };
                if busy.fetch_add(1, Ordering::Relaxed) >= SCRAPE_CONNECTIONS_MAX {
                    busy.fetch_sub(1, Ordering::Relaxed);
                    continue; // dropped: closed at once
                }
                let done = busy.clone();
                let spawned = std::thread::Builder::new()
                    .name("metrics-conn".into())
                    .stack_size(SCRAPE_THREAD_STACK_BYTES)
                    .spawn(move || {
                        serve_one(stream, started);
                        done.fetch_sub(1, Ordering::Relaxed);
                    });
                if spawned.is_err() {
                    busy.fetch_sub(1, Ordering::Relaxed);
                }
            }
        })?;
    Ok(())
}

fn serve_one(mut stream: TcpStream, started: Instant) {
    let _ = stream.set_read_timeout(Some(Duration::from_millis(SCRAPE_TIMEOUT_MS)));
    let _ = stream.set_write_timeout(Some(Duration::from_millis(SCRAPE_TIMEOUT_MS)));
    // The request head may come in several segments: read to its end (or
    // the buffer's, or the timeout).
    let mut buf = [0u8; SCRAPE_REQUEST_MAX_BYTES];
    let mut n = 0;
    while n < buf.len() && !buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf[n..]) {
            Ok(0) | Err(_) => break,
            Ok(got) => n += got,
        }
    }
    let head = String::from_utf8_lossy(&buf[..n]);
    let (status, content_type, body) = if head.starts_with("GET /metrics") {
        guts_shards::metrics::set_process(&process_facts(), started.elapsed().as_secs());
        (
            "200 OK",
            guts_shards::metrics::CONTENT_TYPE,
            guts_shards::metrics::render(),
        )
    } else if head.starts_with("GET /health") {
        ("200 OK", "text/plain; charset=utf-8", "ok\n".to_string())
    } else {
        (
            "404 Not Found",
            "text/plain; charset=utf-8",
            "not found: GET /metrics\n".to_string(),
        )
    };
    let answer = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(answer.as_bytes());
}

/// Clock ticks per second of /proc/self/stat's CPU times.
fn ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// The process's own measurements, from /proc/self.
pub fn process_facts() -> guts_shards::metrics::ProcessFacts {
    let mut p = guts_shards::metrics::ProcessFacts::default();
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as u64;
    if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
        // Fields after the command name (which may hold spaces), from field 3.
        if let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) {
            let f: Vec<&str> = rest.split_whitespace().collect();
            let num = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            // rest[0] is field 3 (state): utime 14, stime 15, threads 20,
            // starttime 22, vsize 23, rss 24.
            let ticks = ticks_per_second();
            p.cpu_seconds = (num(11) + num(12)) as f64 / ticks;
            p.threads = num(17);
            p.virtual_bytes = num(20);
            p.resident_bytes = num(21) * page;
            let boot = std::fs::read_to_string("/proc/stat")
                .ok()
                .and_then(|s| {
                    s.lines()
                        .find_map(|l| l.strip_prefix("btime ")?.trim().parse::<u64>().ok())
                })
                .unwrap_or(0);
            p.start_time_unix_s = boot + (num(19) as f64 / ticks) as u64;
        }
    }
    p.open_fds = std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count().saturating_sub(1) as u64) // the directory's own descriptor
        .unwrap_or(0);
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 {
        p.max_fds = lim.rlim_cur;
    }
    p
}
