//! guts-net: the server side of git's wire formats, sans-IO.
//!
//! Everything here is a pure function or a small state machine over byte
//! slices: no sockets, no HTTP, no async. The HTTP layer reads a request
//! body, hands it to a parser here, and writes the bytes the builders here
//! return. Every parser error is typed and names the value that was wrong
//! and the limit it broke, so the caller can answer with a 4xx status, a
//! git `ERR` pkt-line, or an `ng` line.
//!
//! Modules follow git's own documents (`gitprotocol-common`,
//! `gitprotocol-pack`, `gitprotocol-v2`, `gitprotocol-http`,
//! `gitprotocol-capabilities`):
//!
//! - [`pktline`]: pkt-line framing, flush/delim/response-end, `ERR` pkts.
//! - [`sideband`]: side-band and side-band-64k multiplexing, zero-copy
//!   framing for vectored writes.
//! - [`upload`]: `git-upload-pack` requests, protocol v0/v1 and v2
//!   (`ls-refs`, `fetch`), and `filter` specs.
//! - [`advertise`]: ref and capability advertisements, v2 `ls-refs`
//!   output, the `Git-Protocol` header.
//! - [`negotiate`]: ACK/NAK generation for stateless negotiation, v0 and v2,
//!   and shallow-info lines.
//! - [`receive`]: `git-receive-pack` requests (incremental, so the pack that
//!   follows can be streamed) and report-status v1/v2.

#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod advertise;
pub mod negotiate;
pub mod pktline;
pub mod receive;
pub mod sideband;
pub mod upload;

mod text;

pub use advertise::{
    AdvertisedRef, LsRefsEntry, ProtocolVersion, Service, V0RefsWriter, V2Capabilities,
    DEFAULT_AGENT,
};
pub use negotiate::{AckMode, V0Negotiation, V2Acknowledgments};
pub use pktline::{
    Pkt, PktError, PktFeed, PktReader, PKT_DATA_MAX_BYTES, PKT_MAX_BYTES, REQUEST_PKTS_MAX,
};
pub use receive::{
    PushCaps, PushLimits, PushParser, PushRequest, PushStep, ReceiveError, RefReport, RefUpdate,
    ReportStatusVersion,
};
pub use sideband::{Band, SidebandError, SidebandMode};
pub use upload::{
    ClientCaps, Deepen, FetchRequest, FilterError, FilterSpec, LsRefsRequest, RefPrefixes,
    RequestEnd, UploadError, UploadRequest, UploadRequestParser, V2Common, V2Request,
    V2RequestParser,
};
