//! A glommio TCP stream adapted to hyper's I/O traits, with the per-
//! connection bookkeeping the watchdog uses to close slow or idle clients.
//!
//! hyper is runtime-agnostic: it needs `hyper::rt::Read`/`Write`, which we
//! implement over glommio's `futures-lite` traits. The adapter also records
//! when bytes arrive so that a connection stuck in a request head, crawling
//! through a body below the minimum rate, or idle past the keep-alive
//! limit is closed without costing other clients anything.

use futures_channel::oneshot;
use futures_lite::{AsyncRead, AsyncWrite};
use glommio::net::TcpStream;
use std::cell::{Cell, RefCell};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use crate::config::Limits;

/// What a connection is doing, for timeout purposes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Between requests (keep-alive).
    Idle,
    /// Receiving a request head.
    Head,
    /// The handler is reading the request body.
    Body,
    /// The handler is producing the response.
    Responding,
}

/// Per-connection state shared by the I/O adapter, the handler and the watchdog.
#[derive(Debug)]
pub struct ConnState {
    phase: Cell<Phase>,
    phase_since: Cell<Instant>,
    bytes_read: Cell<u64>,
    /// `bytes_read` when the current phase began.
    phase_bytes_start: Cell<u64>,
    window_start: Cell<Instant>,
    window_bytes_start: Cell<u64>,
    /// The client's address, if the socket knows it.
    pub peer: Option<SocketAddr>,
    /// Who the request in flight authenticated as (for logs): `-`,
    /// `admin` or `USER#TOKEN_ID`. One request at a time per connection.
    pub caller: RefCell<String>,
    /// Fired to close the connection at once (eviction).
    close: RefCell<Option<oneshot::Sender<()>>>,
}

impl ConnState {
    /// A fresh connection from `peer`, waiting for its first request head
    /// since now: one that sends nothing is closed after the header
    /// timeout, not the (longer) keep-alive idle timeout.
    pub fn new(peer: Option<SocketAddr>) -> Rc<ConnState> {
        let now = Instant::now();
        Rc::new(ConnState {
            phase: Cell::new(Phase::Head),
            phase_since: Cell::new(now),
            bytes_read: Cell::new(0),
            phase_bytes_start: Cell::new(0),
            window_start: Cell::new(now),
            window_bytes_start: Cell::new(0),
            peer,
            caller: RefCell::new("-".into()),
            close: RefCell::new(None),
        })
    }

    /// The client's address (its /64 for IPv6), if known.
    pub fn client(&self) -> Option<ClientKey> {
        self.peer.map(|a| ClientKey::of(a.ip()))
    }

    /// A receiver that fires when [`ConnState::close_now`] is called.
    pub fn on_close(&self) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        *self.close.borrow_mut() = Some(tx);
        rx
    }

    /// Close the connection at once (it is being evicted).
    pub fn close_now(&self) {
        if let Some(tx) = self.close.borrow_mut().take() {
            let _ = tx.send(());
        }
    }

    /// If the connection is doing nothing (between requests, or waiting
    /// for a request head it has not begun to send), since when.
    pub fn idle_since(&self) -> Option<Instant> {
        match self.phase.get() {
            Phase::Idle => Some(self.phase_since.get()),
            Phase::Head if self.bytes_read.get() == self.phase_bytes_start.get() => {
                Some(self.phase_since.get())
            }
            _ => None,
        }
    }

    /// Enter `phase` now.
    pub fn set_phase(&self, phase: Phase) {
        let now = Instant::now();
        self.phase.set(phase);
        self.phase_since.set(now);
        self.phase_bytes_start.set(self.bytes_read.get());
        self.window_start.set(now);
        self.window_bytes_start.set(self.bytes_read.get());
    }

    fn on_read(&self, n: usize) {
        if n > 0 && self.phase.get() == Phase::Idle {
            self.set_phase(Phase::Head);
        }
        self.bytes_read.set(self.bytes_read.get() + n as u64);
    }

    /// Why the connection should be closed now, if it should.
    pub fn verdict(&self, limits: &Limits, now: Instant) -> Option<&'static str> {
        let since = now.saturating_duration_since(self.phase_since.get());
        match self.phase.get() {
            Phase::Idle if since > Duration::from_millis(limits.idle_timeout_ms) => {
                Some("idle timeout")
            }
            Phase::Head if since > Duration::from_millis(limits.header_timeout_ms) => {
                Some("request head not received in time")
            }
            Phase::Body => {
                let window = now.saturating_duration_since(self.window_start.get());
                let window_limit = Duration::from_millis(limits.body_rate_window_ms);
                if window >= window_limit {
                    let got = self.bytes_read.get() - self.window_bytes_start.get();
                    let need = limits.body_min_bytes_per_sec * limits.body_rate_window_ms / 1000;
                    if got < need {
                        return Some("request body below the minimum rate");
                    }
                    self.window_start.set(now);
                    self.window_bytes_start.set(self.bytes_read.get());
                }
                if since > Duration::from_millis(limits.request_timeout_ms) {
                    return Some("request timeout");
                }
                None
            }
            Phase::Responding if since > Duration::from_millis(limits.request_timeout_ms) => {
                Some("request timeout")
            }
            _ => None,
        }
    }
}

/// Longest request path written to the request log.
pub const LOGGED_PATH_MAX_BYTES: usize = 256;

/// The request log line of one request, written when its response is done
/// (or abandoned): method, path, status, bytes, duration, client address.
#[derive(Debug)]
pub struct RequestLog {
    pub method: http::Method,
    pub path: String,
    pub status: u16,
    pub client: Option<SocketAddr>,
    pub caller: String,
    pub started: Instant,
    /// Response body bytes sent so far.
    pub bytes: u64,
    /// Whether the whole body was produced.
    pub complete: bool,
}

impl RequestLog {
    fn emit(&self) {
        let mut path = self.path.as_str();
        if path.len() > LOGGED_PATH_MAX_BYTES {
            let mut end = LOGGED_PATH_MAX_BYTES;
            while !path.is_char_boundary(end) {
                end -= 1;
            }
            path = &path[..end];
        }
        let client = self
            .client
            .map(|c| c.to_string())
            .unwrap_or_else(|| "-".into());
        tracing::info!(
            target: "guts::request",
            method = %self.method,
            path = %path,
            status = self.status,
            bytes = self.bytes,
            duration_ms = self.started.elapsed().as_millis() as u64,
            client = %client,
            user = %self.caller,
            complete = self.complete,
            "request"
        );
    }
}

/// The request log line of a request not yet answered: if the handler is
/// dropped before it answers (the client went away, or a limit closed the
/// connection), the line is still written, with status 0.
pub struct UnansweredRequest {
    log: Option<RequestLog>,
    state: Rc<ConnState>,
}

impl UnansweredRequest {
    /// Track `log` for the request in flight on `state`.
    pub fn new(log: RequestLog, state: Rc<ConnState>) -> Self {
        UnansweredRequest {
            log: Some(log),
            state,
        }
    }

    /// The request is answered with `status`: the log line is now the
    /// response body's to write.
    pub fn answered(mut self, status: u16) -> Option<RequestLog> {
        let mut log = self.log.take()?;
        log.status = status;
        log.caller = self.state.caller.borrow().clone();
        Some(log)
    }
}

impl Drop for UnansweredRequest {
    fn drop(&mut self) {
        if let Some(log) = &mut self.log {
            log.caller = self.state.caller.borrow().clone();
            log.emit();
        }
    }
}

/// Resets the connection to idle when the response is done (dropped), and
/// writes the request log line.
pub struct PhaseGuard {
    state: Rc<ConnState>,
    log: Option<RequestLog>,
}

impl PhaseGuard {
    /// A guard for the response in flight on `state`.
    pub fn new(state: Rc<ConnState>, log: Option<RequestLog>) -> Self {
        PhaseGuard { state, log }
    }

    /// Count response body bytes handed to the connection.
    pub fn sent(&mut self, bytes: usize) {
        if let Some(log) = &mut self.log {
            log.bytes += bytes as u64;
        }
    }

    /// The whole body was produced.
    pub fn complete(&mut self) {
        if let Some(log) = &mut self.log {
            log.complete = true;
        }
    }
}

impl Drop for PhaseGuard {
    fn drop(&mut self) {
        self.state.set_phase(Phase::Idle);
        if let Some(log) = &self.log {
            log.emit();
        }
    }
}

/// A glommio TCP stream (or a TLS session over one) usable by hyper.
pub struct HyperStream<S = TcpStream> {
    inner: S,
    state: Rc<ConnState>,
}

impl<S> HyperStream<S> {
    /// Wrap an accepted stream.
    pub fn new(inner: S, state: Rc<ConnState>) -> Self {
        HyperStream { inner, state }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> hyper::rt::Read for HyperStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        // SAFETY: the uninitialized tail is zeroed before it is handed out as
        // `&mut [u8]`, and `advance` is only told about bytes the read wrote.
        let n = unsafe {
            let uninit = buf.as_mut();
            std::ptr::write_bytes(uninit.as_mut_ptr(), 0, uninit.len());
            let slice = &mut *(uninit as *mut [std::mem::MaybeUninit<u8>] as *mut [u8]);
            match Pin::new(&mut self.inner).poll_read(cx, slice) {
                Poll::Ready(Ok(n)) => n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        };
        self.state.on_read(n);
        unsafe { buf.advance(n) };
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> hyper::rt::Write for HyperStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }
}

/// The key a client's connections are counted under: its address, or for
/// IPv6 its /64 (one subscriber's usual allocation, so that an attacker
/// cannot dodge the limit by rotating through its own addresses).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientKey(std::net::IpAddr);

impl ClientKey {
    /// The key of a peer address.
    pub fn of(ip: std::net::IpAddr) -> ClientKey {
        match ip {
            std::net::IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => ClientKey(v4.into()),
                None => {
                    let mut o = v6.octets();
                    o[8..].fill(0);
                    ClientKey(std::net::Ipv6Addr::from(o).into())
                }
            },
            v4 => ClientKey(v4),
        }
    }
}

impl std::fmt::Display for ClientKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// One shard's open connections: counted per client for the per-client
/// limit, and kept so that the idlest can be closed to make room when the
/// shard's connection cap is reached.
#[derive(Default)]
pub struct Registry {
    next_id: Cell<u64>,
    open: RefCell<std::collections::HashMap<u64, Rc<ConnState>>>,
    per_client: RefCell<std::collections::HashMap<ClientKey, usize>>,
}

impl Registry {
    /// Open connections of `client`.
    pub fn client_count(&self, client: ClientKey) -> usize {
        self.per_client.borrow().get(&client).copied().unwrap_or(0)
    }

    /// Register a connection; returns its id for [`Registry::remove`].
    pub fn add(&self, client: Option<ClientKey>, state: Rc<ConnState>) -> u64 {
        let id = self.next_id.get() + 1;
        self.next_id.set(id);
        self.open.borrow_mut().insert(id, state);
        if let Some(c) = client {
            *self.per_client.borrow_mut().entry(c).or_insert(0) += 1;
        }
        id
    }

    /// Forget a closed connection.
    pub fn remove(&self, id: u64, client: Option<ClientKey>) {
        self.open.borrow_mut().remove(&id);
        if let Some(c) = client {
            let mut per = self.per_client.borrow_mut();
            if let Some(n) = per.get_mut(&c) {
                *n -= 1;
                if *n == 0 {
                    per.remove(&c);
                }
            }
        }
    }

    /// Close the connection that has been doing nothing the longest;
    /// false if every connection is busy.
    pub fn evict_idlest(&self) -> bool {
        let open = self.open.borrow();
        let victim = open
            .values()
            .filter_map(|s| s.idle_since().map(|t| (t, s)))
            .min_by_key(|(t, _)| *t)
            .map(|(_, s)| s.clone());
        drop(open);
        match victim {
            Some(s) => {
                s.close_now();
                true
            }
            None => false,
        }
    }
}
