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
pub fn start(addr: SocketAddr, data_dir: std::path::PathBuf, shards: usize) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr)?;
    let started = Instant::now();
    let data_dir = Arc::new(data_dir);
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
                let (done, data_dir) = (busy.clone(), data_dir.clone());
                let spawned = std::thread::Builder::new()
                    .name("metrics-conn".into())
                    .stack_size(SCRAPE_THREAD_STACK_BYTES)
                    .spawn(move || {
                        serve_one(stream, &data_dir, shards, started);
                        done.fetch_sub(1, Ordering::Relaxed);
                    });
                if spawned.is_err() {
                    busy.fetch_sub(1, Ordering::Relaxed);
                }
            }
        })?;
    Ok(())
}

fn serve_one(mut stream: TcpStream, data_dir: &std::path::Path, shards: usize, started: Instant) {
    let _ = stream.set_read_timeout(Some(Duration::from_millis(SCRAPE_TIMEOUT_MS)));
    let _ = stream.set_write_timeout(Some(Duration::from_millis(SCRAPE_TIMEOUT_MS)));
    let mut buf = [0u8; SCRAPE_REQUEST_MAX_BYTES];
    let n = stream.read(&mut buf).unwrap_or(0);
    let head = String::from_utf8_lossy(&buf[..n]);
    let (status, body) = if head.starts_with("GET /metrics") {
        (
            "200 OK",
            guts_shards::metrics::render(
                shards,
                available_bytes(data_dir),
                started.elapsed().as_secs(),
            ),
        )
    } else if head.starts_with("GET /health") {
        ("200 OK", "ok\n".to_string())
    } else {
        ("404 Not Found", "not found\n".to_string())
    };
    let _ = write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

/// Free bytes on the file system holding `dir`.
fn available_bytes(dir: &std::path::Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs writes into the zeroed struct we own; path is NUL-terminated.
    unsafe {
        let mut st: libc::statvfs = std::mem::zeroed();
        (libc::statvfs(path.as_ptr(), &mut st) == 0)
            .then(|| st.f_bavail as u64 * st.f_frsize as u64)
    }
}
