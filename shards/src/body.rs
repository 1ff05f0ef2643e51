//! Request and response bodies: bounded, optionally gzip-decoded request
//! bodies read chunk by chunk, and response bodies that are either a
//! single buffer or a stream fed by a producer task through a bounded
//! channel (backpressure: a slow client stalls the producer, not memory).

use bytes::Bytes;
use futures_channel::mpsc;
use futures_lite::StreamExt;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use std::convert::Infallible;
use std::io::Write;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use crate::conn::{ConnState, Phase, PhaseGuard};

/// Frames a streaming response may have queued before its producer waits.
pub const RESPONSE_QUEUE_FRAMES: usize = 16;
/// Compressed bytes fed to the gzip decoder at a time (at most ~1 MiB out).
pub const GZIP_INPUT_STEP_BYTES: usize = 1024;
/// Decoded bytes gathered before a gzip chunk is handed out.
pub const GZIP_OUTPUT_CHUNK_BYTES: usize = 64 * 1024;
/// Decoded bytes of a gzip body allowed before its inflation ratio is
/// checked (small bodies of repeated lines may inflate a lot, harmlessly).
pub const GZIP_INFLATION_FREE_BYTES: u64 = 1024 * 1024;

/// A response body.
pub enum ResponseBody {
    /// One buffer (or nothing).
    Full(Option<Bytes>, Option<PhaseGuard>),
    /// Chunks produced by another task.
    Stream(mpsc::Receiver<Bytes>, Option<PhaseGuard>),
}

impl ResponseBody {
    /// A body of one buffer.
    pub fn full(data: impl Into<Bytes>) -> Self {
        let data = data.into();
        ResponseBody::Full(if data.is_empty() { None } else { Some(data) }, None)
    }

    /// An empty body.
    pub fn empty() -> Self {
        ResponseBody::Full(None, None)
    }

    /// A streamed body and the sender its producer writes to.
    pub fn channel() -> (mpsc::Sender<Bytes>, Self) {
        let (tx, rx) = mpsc::channel(RESPONSE_QUEUE_FRAMES);
        (tx, ResponseBody::Stream(rx, None))
    }

    /// Attach the guard that marks the connection idle once the body is done.
    pub fn with_guard(mut self, mut guard: PhaseGuard) -> Self {
        match &mut self {
            ResponseBody::Full(data, g) => {
                // One frame (or none): hyper may never poll again after it.
                guard.sent(data.as_ref().map_or(0, Bytes::len));
                guard.complete();
                *g = Some(guard)
            }
            ResponseBody::Stream(_, g) => *g = Some(guard),
        }
        self
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            ResponseBody::Full(data, guard) => {
                let out = data.take();
                if out.is_none() {
                    guard.take();
                }
                Poll::Ready(out.map(|d| Ok(Frame::data(d))))
            }
            ResponseBody::Stream(rx, guard) => match rx.poll_next(cx) {
                Poll::Ready(Some(chunk)) => {
                    if let Some(g) = guard.as_mut() {
                        g.sent(chunk.len());
                    }
                    Poll::Ready(Some(Ok(Frame::data(chunk))))
                }
                Poll::Ready(None) => {
                    if let Some(g) = guard.as_mut() {
                        g.complete();
                    }
                    guard.take();
                    Poll::Ready(None)
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, ResponseBody::Full(None, _))
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ResponseBody::Full(Some(d), _) => SizeHint::with_exact(d.len() as u64),
            ResponseBody::Full(None, _) => SizeHint::with_exact(0),
            ResponseBody::Stream(..) => SizeHint::default(),
        }
    }
}

/// Errors reading a request body.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("request body exceeds {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("request body is not valid gzip: {0}")]
    BadGzip(String),
    #[error("gzip request body inflates more than {ratio_max} times")]
    InflationTooHigh { ratio_max: u64 },
    #[error("unsupported Content-Encoding {0:?}")]
    UnsupportedEncoding(String),
    #[error("error reading request body: {0}")]
    Transport(String),
}

enum Decoder {
    Identity,
    Gzip(Box<flate2::write::GzDecoder<Vec<u8>>>),
}

/// A request body read chunk by chunk, decoded and bounded.
pub struct RequestBody {
    incoming: Incoming,
    decoder: Decoder,
    limit: u64,
    seen: u64,
    done: bool,
    /// Compressed input received but not yet fed to the gzip decoder.
    pending: Bytes,
    /// Compressed bytes fed to the gzip decoder so far.
    compressed: u64,
    /// Most decoded bytes per compressed byte (past the first
    /// [`GZIP_INFLATION_FREE_BYTES`]); 0: no limit.
    inflation_ratio_max: u64,
    state: Rc<ConnState>,
}

impl RequestBody {
    /// Wrap `incoming`, decoding `content_encoding` (none or gzip) and
    /// refusing more than `limit` decoded bytes.
    pub fn new(
        incoming: Incoming,
        content_encoding: Option<&str>,
        limit: u64,
        state: Rc<ConnState>,
    ) -> Result<Self, BodyError> {
        let decoder = match content_encoding.map(|s| s.trim().to_ascii_lowercase()) {
            None => Decoder::Identity,
            Some(e) if e.is_empty() || e == "identity" => Decoder::Identity,
            Some(e) if e == "gzip" || e == "x-gzip" => {
                Decoder::Gzip(Box::new(flate2::write::GzDecoder::new(Vec::new())))
            }
            Some(e) => return Err(BodyError::UnsupportedEncoding(e)),
        };
        state.set_phase(Phase::Body);
        Ok(RequestBody {
            incoming,
            decoder,
            limit,
            seen: 0,
            done: false,
            pending: Bytes::new(),
            compressed: 0,
            inflation_ratio_max: 0,
            state,
        })
    }

    /// Refuse a gzip body that decodes to more than `ratio_max` times its
    /// compressed size (0: no limit): a "gzip bomb" then costs its sender
    /// as much as it costs the node.
    pub fn with_inflation_limit(mut self, ratio_max: u64) -> Self {
        self.inflation_ratio_max = ratio_max;
        self
    }

    fn check_inflation(ratio_max: u64, compressed: u64, decoded: u64) -> Result<(), BodyError> {
        if ratio_max > 0
            && decoded > GZIP_INFLATION_FREE_BYTES
            && decoded > compressed.saturating_mul(ratio_max)
        {
            return Err(BodyError::InflationTooHigh { ratio_max });
        }
        Ok(())
    }

    /// The next decoded chunk, or None at the end of the body.
    ///
    /// gzip input is fed to the decoder in steps of
    /// [`GZIP_INPUT_STEP_BYTES`] and a chunk is handed out once it reaches
    /// [`GZIP_OUTPUT_CHUNK_BYTES`], with the limit checked after every
    /// step: a "gzip bomb" (deflate inflates up to ~1032x) costs at most
    /// about one step's output beyond the limit, never a whole received
    /// frame's worth.
    pub async fn next_chunk(&mut self) -> Result<Option<Bytes>, BodyError> {
        loop {
            if let Decoder::Gzip(d) = &mut self.decoder {
                if !self.pending.is_empty() {
                    while !self.pending.is_empty() && d.get_ref().len() < GZIP_OUTPUT_CHUNK_BYTES {
                        let step = self
                            .pending
                            .split_to(self.pending.len().min(GZIP_INPUT_STEP_BYTES));
                        d.write_all(&step)
                            .map_err(|e| BodyError::BadGzip(e.to_string()))?;
                        self.compressed += step.len() as u64;
                        let decoded = self.seen + d.get_ref().len() as u64;
                        if decoded > self.limit {
                            return Err(BodyError::TooLarge { limit: self.limit });
                        }
                        Self::check_inflation(self.inflation_ratio_max, self.compressed, decoded)?;
                    }
                    let out = std::mem::take(d.get_mut());
                    if out.is_empty() {
                        continue;
                    }
                    return self.account(Bytes::from(out)).map(Some);
                }
            }
            if self.done {
                return Ok(None);
            }
            let frame = match self.incoming.frame().await {
                None => {
                    self.done = true;
                    self.state.set_phase(Phase::Responding);
                    if let Decoder::Gzip(d) = &mut self.decoder {
                        d.try_finish()
                            .map_err(|e| BodyError::BadGzip(e.to_string()))?;
                        let rest = std::mem::take(d.get_mut());
                        if !rest.is_empty() {
                            return self.account(Bytes::from(rest)).map(Some);
                        }
                    }
                    return Ok(None);
                }
                Some(Err(e)) => return Err(BodyError::Transport(e.to_string())),
                Some(Ok(frame)) => frame,
            };
            let Ok(data) = frame.into_data() else {
                continue;
            };
            if data.is_empty() {
                continue;
            }
            match &self.decoder {
                Decoder::Identity => return self.account(data).map(Some),
                Decoder::Gzip(_) => self.pending = data,
            }
        }
    }

    fn account(&mut self, chunk: Bytes) -> Result<Bytes, BodyError> {
        self.seen += chunk.len() as u64;
        if self.seen > self.limit {
            return Err(BodyError::TooLarge { limit: self.limit });
        }
        Ok(chunk)
    }

    /// Read the whole (bounded) body into one buffer.
    pub async fn collect(mut self) -> Result<Bytes, BodyError> {
        let mut out = Vec::new();
        while let Some(chunk) = self.next_chunk().await? {
            out.extend_from_slice(&chunk);
        }
        Ok(Bytes::from(out))
    }
}
