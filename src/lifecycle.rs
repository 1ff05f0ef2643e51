//! The node's life as the operating system sees it: signals, systemd
//! readiness, and the checks that make a node refuse to start wrong rather
//! than run wrong.
//!
//! Signals: SIGTERM, SIGINT and SIGHUP are blocked in every thread (the
//! mask is set before any other thread starts, and threads inherit it) and
//! taken by one thread with `sigwait`, which turns them into messages.
//! Readiness: `READY=1` and `STOPPING=1` go to `$NOTIFY_SOCKET` (systemd's
//! `Type=notify`), a datagram socket, as `sd_notify(3)` does.

use std::net::SocketAddr;

/// A signal the node acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGTERM or SIGINT: drain and stop (a second one: stop at once).
    Stop(i32),
    /// SIGHUP: reload what can be reloaded (the TLS certificate).
    Reload,
}

fn signal_set() -> libc::sigset_t {
    // SAFETY: sigemptyset/sigaddset initialise and fill the set we own.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGHUP);
        set
    }
}

/// Block the node's signals in this thread and every thread it starts
/// later. Call first thing in `main`, before any thread exists.
pub fn block_signals() {
    let set = signal_set();
    // SAFETY: pthread_sigmask with a valid set; the old mask is not needed.
    unsafe {
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

/// Start the thread that takes the blocked signals and sends them to `to`.
pub fn forward_signals(to: crossbeam_channel::Sender<Signal>) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let set = signal_set();
            loop {
                let mut sig: libc::c_int = 0;
                // SAFETY: sigwait on a valid set, writing into our integer.
                let rc = unsafe { libc::sigwait(&set, &mut sig) };
                if rc != 0 {
                    continue;
                }
                let msg = if sig == libc::SIGHUP {
                    Signal::Reload
                } else {
                    Signal::Stop(sig)
                };
                if to.send(msg).is_err() {
                    return;
                }
            }
        })?;
    Ok(())
}

/// The name of a stop signal, for logs.
pub fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGTERM => "SIGTERM",
        libc::SIGINT => "SIGINT",
        libc::SIGHUP => "SIGHUP",
        _ => "signal",
    }
}

/// Tell systemd (or whatever set `$NOTIFY_SOCKET`) about the node's state,
/// e.g. `READY=1`. Without `$NOTIFY_SOCKET` this does nothing.
pub fn sd_notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    if let Err(e) = notify_to(&path, state) {
        tracing::warn!(socket = ?path, error = %e, "could not notify the service manager");
    }
}

fn notify_to(path: &std::ffi::OsStr, state: &str) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::net::UnixDatagram;
    let sock = UnixDatagram::unbound()?;
    let bytes = path.as_bytes();
    if let Some(name) = bytes.strip_prefix(b"@") {
        // An abstract socket name.
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
        sock.send_to_addr(state.as_bytes(), &addr)?;
    } else {
        sock.send_to(state.as_bytes(), std::path::Path::new(path))?;
    }
    Ok(())
}

/// Refuse an address another process listens on. Every shard binds the API
/// address with SO_REUSEPORT, which would let a second node (or anything
/// else listening with SO_REUSEPORT) share the port and split the requests
/// with it. So before the shards bind, a TCP listener on an overlapping
/// address that a process holds is someone else's. The kernel's socket
/// tables are read rather than a probe bound: connections of an earlier run
/// still in TIME_WAIT would make a probe fail, and so would the listener of
/// a node just killed, which the kernel closes a moment after the process
/// is gone (io_uring tears down asynchronously) and which no process holds.
pub fn check_address_free(addr: SocketAddr) -> anyhow::Result<()> {
    if addr.port() == 0 {
        return Ok(());
    }
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for (listener, inode) in listeners(&text) {
            if listener.port() != addr.port() || !overlaps(listener.ip(), addr.ip()) {
                continue;
            }
            if let Some(pid) = socket_holder(inode) {
                anyhow::bail!(
                    "--api-addr {addr} is in use by another process (pid {pid} listens on {listener}; another guts-node?): stop it or choose another address"
                );
            }
        }
    }
    Ok(())
}

/// The process that has socket `inode` open, if one can be seen.
fn socket_holder(inode: u64) -> Option<u32> {
    let target = format!("socket:[{inode}]");
    for proc_entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = proc_entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(proc_entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if std::fs::read_link(fd.path()).is_ok_and(|l| l.as_os_str() == target.as_str()) {
                return Some(pid);
            }
        }
    }
    None
}

/// Listening sockets in a `/proc/net/tcp{,6}` table, with their inodes.
fn listeners(table: &str) -> Vec<(SocketAddr, u64)> {
    const TCP_LISTEN: &str = "0A";
    let mut out = Vec::new();
    for line in table.lines().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 10 || fields[3] != TCP_LISTEN {
            continue;
        }
        let Ok(inode) = fields[9].parse::<u64>() else {
            continue;
        };
        let Some((ip, port)) = fields[1].split_once(':') else {
            continue;
        };
        let (Some(ip), Ok(port)) = (proc_ip(ip), u16::from_str_radix(port, 16)) else {
            continue;
        };
        out.push((SocketAddr::new(ip, port), inode));
    }
    out
}

/// An address as the kernel prints it: 32-bit words in hex, each in the
/// machine's byte order.
fn proc_ip(hex: &str) -> Option<std::net::IpAddr> {
    let mut bytes = Vec::with_capacity(16);
    for word in hex.as_bytes().chunks(8) {
        let word = u32::from_str_radix(std::str::from_utf8(word).ok()?, 16).ok()?;
        bytes.extend_from_slice(&word.to_ne_bytes());
    }
    match bytes.len() {
        4 => Some(std::net::IpAddr::from(<[u8; 4]>::try_from(bytes).ok()?)),
        16 => Some(std::net::IpAddr::from(<[u8; 16]>::try_from(bytes).ok()?)),
        _ => None,
    }
}

/// Whether a listener on `a` keeps a bind to `b` (same port) from being ours alone.
fn overlaps(a: std::net::IpAddr, b: std::net::IpAddr) -> bool {
    use std::net::IpAddr;
    let v6_any = |ip: IpAddr| matches!(ip, IpAddr::V6(v6) if v6.is_unspecified());
    if v6_any(a) || v6_any(b) {
        return true;
    }
    a.is_ipv4() == b.is_ipv4() && (a == b || a.is_unspecified() || b.is_unspecified())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_listeners_from_the_kernel_tables() {
        let v4 = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0\n   1: 0100007F:1F91 0100007F:9C40 06 00000000:00000000 00:00000000 00000000     0        0 0 1 0 100 0 0 10 0\n";
        let found = listeners(v4);
        let expect: Vec<(SocketAddr, u64)> = vec![("127.0.0.1:8080".parse().unwrap(), 1)];
        // Only the LISTEN row (state 0A); the TIME_WAIT one (06) is not a holder.
        assert_eq!(found, expect);
        let v6 = "  sl  local_address                         remote_address                        st\n   0: 00000000000000000000000000000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 77 1\n";
        assert_eq!(
            listeners(v6),
            vec![("[::]:8080".parse::<SocketAddr>().unwrap(), 77)]
        );
        let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
        assert!(overlaps(ip("127.0.0.1"), ip("127.0.0.1")));
        assert!(overlaps(ip("0.0.0.0"), ip("127.0.0.1")));
        assert!(overlaps(ip("::"), ip("127.0.0.1")));
        assert!(!overlaps(ip("127.0.0.2"), ip("127.0.0.1")));
        assert!(!overlaps(ip("::1"), ip("127.0.0.1")));
    }

    #[test]
    fn finds_the_process_holding_a_listener() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let err = check_address_free(addr).unwrap_err().to_string();
        assert!(
            err.contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
        drop(l);
        check_address_free(addr).unwrap();
    }
}
