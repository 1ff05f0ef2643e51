//! The Prometheus metrics endpoint (`GET /metrics` on the metrics address).
//!
//! A small blocking server on its own thread: scrapes are rare and must
//! not compete with the shards' executors.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};

/// Bytes of a scrape request read before answering.
const SCRAPE_REQUEST_MAX_BYTES: usize = 8192;
/// Time a scraper has to send its request.
const SCRAPE_TIMEOUT_MS: u64 = 5000;

/// Bind the metrics endpoint and serve it on a background thread.
pub fn start(addr: SocketAddr, data_dir: std::path::PathBuf, shards: usize) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr)?;
    let started = Instant::now();
    std::thread::Builder::new().name("metrics".into()).spawn(move || {
        for stream in listener.incoming().flatten() {
            let _ = stream.set_read_timeout(Some(Duration::from_millis(SCRAPE_TIMEOUT_MS)));
            let _ = stream.set_write_timeout(Some(Duration::from_millis(SCRAPE_TIMEOUT_MS)));
            let mut stream = stream;
            let mut buf = [0u8; SCRAPE_REQUEST_MAX_BYTES];
            let n = stream.read(&mut buf).unwrap_or(0);
            let head = String::from_utf8_lossy(&buf[..n]);
            let (status, body) = if head.starts_with("GET /metrics") {
                ("200 OK", guts_shards::metrics::render(shards, available_bytes(&data_dir), started.elapsed().as_secs()))
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
    })?;
    Ok(())
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
