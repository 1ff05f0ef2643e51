//! `git-upload-pack` requests: protocol v0/v1 over stateless HTTP
//! (gitprotocol-pack, gitprotocol-http) and protocol v2 `ls-refs` and
//! `fetch` (gitprotocol-v2), plus `filter` specs.
//!
//! A v0 stateless request body is
//!
//! ```text
//! want <oid> <caps>\n        (capabilities on the first want)
//! want <oid>\n ...
//! shallow <oid>\n ...         deepen <n> | deepen-since <t> | deepen-not <ref>
//! filter <spec>\n
//! 0000
//! have <oid>\n ...            zero or more
//! 0000 | done\n | <end>      a negotiation round, the last one, or only the
//!                            shallow update (depth requests, first round)
//! ```
//!
//! A v2 request is `command=<name>`, capability lines, an optional delim and
//! the command's arguments, then a flush.

use guts_io::ObjectId;

use crate::pktline::{self, Pkt, PktError, PktFeed};
use crate::text::show;

/// Largest `deepen <n>` git accepts (`INFINITE_DEPTH`, used by
/// `--unshallow`).
pub const DEPTH_MAX: u32 = i32::MAX as u32;

/// `ls-refs` prefixes kept; past this git ignores prefixes altogether (and
/// so do we: the reply is all refs, which is what the client then filters).
pub const REF_PREFIXES_MAX: usize = 65536;

/// Errors from parsing `filter` specs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    /// A filter git knows but this server does not implement
    /// (`sparse:oid=`, `object:type=`, `combine:`, ...).
    #[error("unsupported filter spec {spec:?}")]
    Unsupported {
        /// The spec as sent.
        spec: String,
    },
    /// A `blob:limit=` or `tree:` value that is not a number (with an
    /// optional k/m/g unit for `blob:limit`) or overflows.
    #[error("invalid value in filter spec {spec:?}")]
    BadValue {
        /// The spec as sent.
        spec: String,
    },
}

/// A partial-clone object filter (`git rev-list --filter`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FilterSpec {
    /// `blob:none`: omit all blobs.
    BlobNone,
    /// `blob:limit=<n>[kmg]`: omit blobs of at least this many bytes.
    BlobLimit(u64),
    /// `tree:<depth>`: omit trees and blobs deeper than this (0 = no trees).
    TreeDepth(u64),
}

impl FilterSpec {
    /// Parse a spec as sent on a `filter` line.
    pub fn parse(spec: &[u8]) -> Result<FilterSpec, FilterError> {
        let spec_text = || show(spec);
        if spec == b"blob:none" {
            return Ok(FilterSpec::BlobNone);
        }
        if let Some(value) = spec.strip_prefix(b"blob:limit=") {
            return parse_size_with_unit(value)
                .map(FilterSpec::BlobLimit)
                .ok_or_else(|| FilterError::BadValue { spec: spec_text() });
        }
        if let Some(value) = spec.strip_prefix(b"tree:") {
            return parse_decimal_u64(value)
                .map(FilterSpec::TreeDepth)
                .ok_or_else(|| FilterError::BadValue { spec: spec_text() });
        }
        Err(FilterError::Unsupported { spec: spec_text() })
    }
}

/// `git_parse_ulong`: decimal with an optional k, m or g (either case).
fn parse_size_with_unit(value: &[u8]) -> Option<u64> {
    let (digits, factor) = match value.last().map(u8::to_ascii_lowercase) {
        Some(b'k') => (&value[..value.len() - 1], 1u64 << 10),
        Some(b'm') => (&value[..value.len() - 1], 1u64 << 20),
        Some(b'g') => (&value[..value.len() - 1], 1u64 << 30),
        _ => (value, 1),
    };
    parse_decimal_u64(digits)?.checked_mul(factor)
}

fn parse_decimal_u64(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 20 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// Errors from parsing upload-pack requests (v0/v1 and v2).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UploadError {
    /// The pkt-line framing is broken or over a limit.
    #[error(transparent)]
    Pkt(#[from] PktError),
    /// An object id that is not 40 hex digits.
    #[error("invalid object id in {keyword:?} line: {value:?}")]
    InvalidOid {
        /// The line's keyword (`want`, `have`, `shallow`).
        keyword: &'static str,
        /// The text that should have been an id.
        value: String,
    },
    /// A line that does not belong where it is.
    #[error("unexpected line in {section}: {line:?}")]
    UnexpectedLine {
        /// Where the parser was (`wants`, `haves`, ...).
        section: &'static str,
        /// The line received.
        line: String,
    },
    /// A special pkt (delim, response-end) where git sends none.
    #[error("unexpected {pkt} pkt in {section}")]
    UnexpectedPkt {
        /// Which pkt (`delim`, `response-end`, `flush`).
        pkt: &'static str,
        /// Where the parser was.
        section: &'static str,
    },
    /// The body ended before the flush that closes a section.
    #[error("request ended inside {section}, before its flush")]
    MissingFlush {
        /// Which section.
        section: &'static str,
    },
    /// Bytes after the end of the request.
    #[error("{len} bytes after the end of the request")]
    TrailingData {
        /// How many bytes.
        len: usize,
    },
    /// `deepen` with a value that is not a number in 1..=[`DEPTH_MAX`].
    #[error("invalid deepen value {value:?} (must be 1..={max})")]
    InvalidDepth {
        /// The value received.
        value: String,
        /// The limit, [`DEPTH_MAX`].
        max: u32,
    },
    /// `deepen-since` with a value that is not a positive timestamp.
    #[error("invalid deepen-since value {value:?}")]
    InvalidDeepenSince {
        /// The value received.
        value: String,
    },
    /// `deepen <n>` together with `deepen-since` or `deepen-not`.
    #[error("deepen and deepen-since (or deepen-not) cannot be used together")]
    DeepenConflict,
    /// The `filter` line has a spec we refuse.
    #[error(transparent)]
    Filter(#[from] FilterError),
    /// A v0 `filter` line without the `filter` capability.
    #[error("filtering capability not negotiated")]
    FilterNotNegotiated,
    /// `object-format=` other than `sha1`.
    #[error("unsupported object format {format:?}")]
    UnsupportedObjectFormat {
        /// The format asked for.
        format: String,
    },
    /// A text field that must be UTF-8 is not.
    #[error("{what} is not valid UTF-8: {value:?}")]
    NotUtf8 {
        /// Which field.
        what: &'static str,
        /// The bytes received (lossy).
        value: String,
    },
    /// A v2 request without `command=`.
    #[error("protocol v2 request has no command")]
    NoCommand,
    /// A v2 request with two `command=` lines.
    #[error("protocol v2 request names a command twice: {command:?}")]
    DuplicateCommand {
        /// The second command.
        command: String,
    },
    /// A v2 command the server does not offer.
    #[error("unknown command {command:?}")]
    UnknownCommand {
        /// The command received.
        command: String,
    },
    /// A v2 capability line the server does not know.
    #[error("unknown capability {capability:?}")]
    UnknownCapability {
        /// The line received.
        capability: String,
    },
    /// An argument the command does not take.
    #[error("unknown argument for {command}: {argument:?}")]
    UnknownArgument {
        /// `ls-refs`, `fetch` or `bundle-uri`.
        command: &'static str,
        /// The line received.
        argument: String,
    },
    /// A ref name (or ref prefix) longer than any ref can be.
    #[error("{what} of {len} bytes is longer than the limit of {max} bytes")]
    RefNameTooLong {
        /// `want-ref`, `deepen-not` or `ref-prefix`.
        what: &'static str,
        /// Its length in bytes.
        len: usize,
        /// The limit, [`guts_io::refname::REF_NAME_MAX_BYTES`].
        max: usize,
    },
    /// An argument the server does not support (not advertised).
    #[error("unsupported argument for {command}: {argument:?}")]
    UnsupportedArgument {
        /// `ls-refs` or `fetch`.
        command: &'static str,
        /// The argument's keyword.
        argument: String,
    },
}

/// Capabilities a client asked for on its first `want` line (v0/v1).
/// Unknown capabilities are ignored, as git does.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientCaps {
    /// `multi_ack`.
    pub multi_ack: bool,
    /// `multi_ack_detailed`.
    pub multi_ack_detailed: bool,
    /// `no-done`: the server may send the pack right after `ACK ... ready`.
    pub no_done: bool,
    /// `thin-pack`: deltas against objects the client has are allowed.
    pub thin_pack: bool,
    /// `ofs-delta`.
    pub ofs_delta: bool,
    /// `side-band` (1000-byte frames).
    pub side_band: bool,
    /// `side-band-64k`.
    pub side_band_64k: bool,
    /// `no-progress`: send nothing on band 2.
    pub no_progress: bool,
    /// `include-tag`: send annotated tags pointing at sent objects.
    pub include_tag: bool,
    /// `shallow`.
    pub shallow: bool,
    /// `deepen-since`.
    pub deepen_since: bool,
    /// `deepen-not`.
    pub deepen_not: bool,
    /// `deepen-relative`: depth counts from the client's shallow boundary.
    pub deepen_relative: bool,
    /// `filter`.
    pub filter: bool,
    /// `allow-tip-sha1-in-want`.
    pub allow_tip_sha1_in_want: bool,
    /// `allow-reachable-sha1-in-want`.
    pub allow_reachable_sha1_in_want: bool,
    /// `agent=<value>`.
    pub agent: Option<String>,
    /// `session-id=<value>`.
    pub session_id: Option<String>,
    /// `object-format=<value>` (only `sha1` is accepted).
    pub object_format: Option<String>,
}

impl ClientCaps {
    /// Parse a space-separated capability list.
    pub fn parse(list: &[u8]) -> Result<ClientCaps, UploadError> {
        let mut caps = ClientCaps::default();
        caps.merge(list)?;
        Ok(caps)
    }

    fn merge(&mut self, list: &[u8]) -> Result<(), UploadError> {
        for cap in list.split(|b| *b == b' ').filter(|c| !c.is_empty()) {
            match cap {
                b"multi_ack" => self.multi_ack = true,
                b"multi_ack_detailed" => self.multi_ack_detailed = true,
                b"no-done" => self.no_done = true,
                b"thin-pack" => self.thin_pack = true,
                b"ofs-delta" => self.ofs_delta = true,
                b"side-band" => self.side_band = true,
                b"side-band-64k" => self.side_band_64k = true,
                b"no-progress" => self.no_progress = true,
                b"include-tag" => self.include_tag = true,
                b"shallow" => self.shallow = true,
                b"deepen-since" => self.deepen_since = true,
                b"deepen-not" => self.deepen_not = true,
                b"deepen-relative" => self.deepen_relative = true,
                b"filter" => self.filter = true,
                b"allow-tip-sha1-in-want" => self.allow_tip_sha1_in_want = true,
                b"allow-reachable-sha1-in-want" => self.allow_reachable_sha1_in_want = true,
                _ => {
                    if let Some(v) = cap.strip_prefix(b"agent=") {
                        self.agent = Some(show(v));
                    } else if let Some(v) = cap.strip_prefix(b"session-id=") {
                        self.session_id = Some(show(v));
                    } else if let Some(v) = cap.strip_prefix(b"object-format=") {
                        check_object_format(v)?;
                        self.object_format = Some(show(v));
                    }
                }
            }
        }
        Ok(())
    }

    /// The ACK style the client asked for (detailed wins over plain).
    pub fn ack_mode(&self) -> crate::negotiate::AckMode {
        use crate::negotiate::AckMode;
        if self.multi_ack_detailed {
            AckMode::MultiAckDetailed
        } else if self.multi_ack {
            AckMode::MultiAck
        } else {
            AckMode::Single
        }
    }

    /// The side-band mode for the response, if any (64k wins).
    pub fn sideband_mode(&self) -> Option<crate::sideband::SidebandMode> {
        use crate::sideband::SidebandMode;
        if self.side_band_64k {
            Some(SidebandMode::SideBand64k)
        } else if self.side_band {
            Some(SidebandMode::SideBand)
        } else {
            None
        }
    }
}

fn check_object_format(value: &[u8]) -> Result<(), UploadError> {
    if value == b"sha1" {
        Ok(())
    } else {
        Err(UploadError::UnsupportedObjectFormat {
            format: show(value),
        })
    }
}

/// How far a shallow clone may go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Deepen {
    /// `deepen <n>`: at most this many commits from each want.
    Depth(u32),
    /// `deepen-since` and/or `deepen-not`: stop at commits older than
    /// `since` (seconds since the epoch) or reachable from one of `not`.
    Revs {
        /// `deepen-since <timestamp>`.
        since: Option<u64>,
        /// `deepen-not <ref>` lines, in order.
        not: Vec<String>,
    },
}

/// How a v0/v1 stateless request ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestEnd {
    /// The body ended right after the wants' flush: the client only wants
    /// the shallow update (first round of a depth-limited fetch).
    AfterWants,
    /// The haves ended with a flush: a negotiation round; more may follow.
    Flush,
    /// `done`: the client wants the pack now.
    Done,
}

/// A parsed v0/v1 `git-upload-pack` request body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UploadRequest {
    /// `want` ids, in order (duplicates kept).
    pub wants: Vec<ObjectId>,
    /// `have` ids, in order.
    pub haves: Vec<ObjectId>,
    /// `shallow` ids: the client's current shallow boundary.
    pub shallows: Vec<ObjectId>,
    /// Depth limit, if any.
    pub depth: Option<Deepen>,
    /// Object filter, if any.
    pub filter: Option<FilterSpec>,
    /// How the body ended.
    pub end: RequestEnd,
    /// The client's capabilities.
    pub caps: ClientCaps,
}

impl UploadRequest {
    /// True if the client sent `done`.
    pub fn done(&self) -> bool {
        self.end == RequestEnd::Done
    }

    /// Parse a request body with the default pkt limit.
    pub fn parse(body: &[u8]) -> Result<UploadRequest, UploadError> {
        Self::parse_with_limit(body, pktline::REQUEST_PKTS_MAX)
    }

    /// Parse a request body, refusing more than `pkts_max` pkts.
    pub fn parse_with_limit(body: &[u8], pkts_max: usize) -> Result<UploadRequest, UploadError> {
        let mut parser = UploadRequestParser::new(pkts_max);
        let used = parser.advance(body)?;
        parser.finish(&body[used..])
    }
}

/// Where a v0/v1 request parser is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum V0Section {
    /// Wants, shallows, deepen and filter lines, up to a flush.
    Wants,
    /// Haves, up to a flush or `done`.
    Haves,
    /// After `done`: only one stray flush may follow.
    AfterDone,
    /// Complete: nothing may follow.
    End,
}

/// Incremental parser of a v0/v1 `git-upload-pack` request body: feed it
/// the body as it arrives ([`UploadRequestParser::advance`]), then call
/// [`UploadRequestParser::finish`]. It holds the parsed request, never the
/// body; the caller holds at most one partial pkt.
#[derive(Clone, Debug)]
pub struct UploadRequestParser {
    feed: PktFeed,
    section: V0Section,
    request: UploadRequest,
    deepen: DeepenBuilder,
    filter_line: bool,
    retained: usize,
}

impl UploadRequestParser {
    /// A parser refusing more than `pkts_max` pkts.
    pub fn new(pkts_max: usize) -> Self {
        UploadRequestParser {
            feed: PktFeed::new(pkts_max),
            section: V0Section::Wants,
            request: UploadRequest {
                wants: Vec::new(),
                haves: Vec::new(),
                shallows: Vec::new(),
                depth: None,
                filter: None,
                end: RequestEnd::AfterWants,
                caps: ClientCaps::default(),
            },
            deepen: DeepenBuilder::default(),
            filter_line: false,
            retained: 0,
        }
    }

    /// Consume the whole pkts at the front of `input`; returns how many
    /// bytes were used. Pass the rest (part of one pkt) again, followed by
    /// more of the body.
    pub fn advance(&mut self, input: &[u8]) -> Result<usize, UploadError> {
        let mut used = 0;
        loop {
            let rest = &input[used..];
            match self.section {
                V0Section::End if rest.is_empty() => return Ok(used),
                V0Section::End => return Err(UploadError::TrailingData { len: rest.len() }),
                V0Section::AfterDone => {
                    if rest.starts_with(pktline::FLUSH_PKT) {
                        self.feed.consume(pktline::FLUSH_PKT.len())?;
                        used += pktline::FLUSH_PKT.len();
                        self.section = V0Section::End;
                        continue;
                    }
                    if pktline::FLUSH_PKT.starts_with(rest) {
                        return Ok(used); // empty, or perhaps the start of a flush
                    }
                    return Err(UploadError::TrailingData { len: rest.len() });
                }
                V0Section::Wants | V0Section::Haves => {}
            }
            let Some((pkt, n)) = self.feed.next(rest)? else {
                return Ok(used);
            };
            used += n;
            self.pkt(pkt)?;
        }
    }

    /// Bytes of parsed state held (ids and text), for memory accounting.
    pub fn retained_bytes(&self) -> usize {
        self.retained
    }

    /// The body ended with `rest` not consumed: the request, or why not.
    pub fn finish(mut self, rest: &[u8]) -> Result<UploadRequest, UploadError> {
        match self.section {
            V0Section::End => Ok(self.request),
            V0Section::AfterDone if rest.is_empty() => Ok(self.request),
            V0Section::AfterDone => Err(UploadError::TrailingData { len: rest.len() }),
            _ if !rest.is_empty() => Err(self.feed.truncated(rest).into()),
            V0Section::Wants => Err(UploadError::MissingFlush { section: "wants" }),
            V0Section::Haves if self.request.haves.is_empty() => {
                self.request.end = RequestEnd::AfterWants;
                Ok(self.request)
            }
            V0Section::Haves => Err(UploadError::MissingFlush { section: "haves" }),
        }
    }

    fn pkt(&mut self, pkt: Pkt<'_>) -> Result<(), UploadError> {
        let oid_bytes = std::mem::size_of::<ObjectId>();
        if self.section == V0Section::Wants {
            // Wants, shallows, deepen and filter lines, in any order (as
            // git's receive_needs accepts them), up to a flush.
            let line = match pkt {
                Pkt::Data(data) => pktline::strip_lf(data),
                Pkt::Flush => {
                    if self.filter_line && !self.request.caps.filter {
                        return Err(UploadError::FilterNotNegotiated);
                    }
                    self.request.depth = std::mem::take(&mut self.deepen).finish()?;
                    self.section = V0Section::Haves;
                    return Ok(());
                }
                other => return Err(unexpected_pkt(other, "wants")),
            };
            if let Some(rest) = line.strip_prefix(b"want ") {
                let (hex, caps) = split_oid(rest);
                self.request.wants.push(parse_oid("want", hex)?);
                self.retained += oid_bytes;
                if let Some(caps) = caps {
                    self.request.caps.merge(caps)?;
                }
            } else if let Some(hex) = line.strip_prefix(b"shallow ") {
                self.request.shallows.push(parse_oid("shallow", hex)?);
                self.retained += oid_bytes;
            } else if self.deepen.line(line)? {
                self.retained += line.len();
            } else if let Some(spec) = line.strip_prefix(b"filter ") {
                self.request.filter = Some(FilterSpec::parse(spec)?);
                self.filter_line = true;
            } else {
                return Err(UploadError::UnexpectedLine {
                    section: "wants",
                    line: show(line),
                });
            }
            return Ok(());
        }
        // Haves, then flush or done.
        let line = match pkt {
            Pkt::Data(data) => pktline::strip_lf(data),
            Pkt::Flush => {
                self.request.end = RequestEnd::Flush;
                self.section = V0Section::End;
                return Ok(());
            }
            other => return Err(unexpected_pkt(other, "haves")),
        };
        if let Some(hex) = line.strip_prefix(b"have ") {
            self.request.haves.push(parse_oid("have", hex)?);
            self.retained += oid_bytes;
        } else if line == b"done" {
            self.request.end = RequestEnd::Done;
            self.section = V0Section::AfterDone;
        } else {
            return Err(UploadError::UnexpectedLine {
                section: "haves",
                line: show(line),
            });
        }
        Ok(())
    }
}

/// Collects `deepen`, `deepen-since` and `deepen-not` lines (shared by v0
/// and v2).
#[derive(Clone, Debug, Default)]
struct DeepenBuilder {
    depth: Option<u32>,
    since: Option<u64>,
    not: Vec<String>,
}

impl DeepenBuilder {
    /// Consume `line` if it is a deepen line; false if it is something else.
    fn line(&mut self, line: &[u8]) -> Result<bool, UploadError> {
        if let Some(value) = line.strip_prefix(b"deepen ") {
            let depth = parse_decimal_u64(value)
                .filter(|d| (1..=u64::from(DEPTH_MAX)).contains(d))
                .ok_or_else(|| UploadError::InvalidDepth {
                    value: show(value),
                    max: DEPTH_MAX,
                })?;
            self.depth = Some(depth as u32);
        } else if let Some(value) = line.strip_prefix(b"deepen-since ") {
            let since = parse_decimal_u64(value)
                .filter(|t| *t > 0)
                .ok_or_else(|| UploadError::InvalidDeepenSince { value: show(value) })?;
            self.since = Some(since);
        } else if let Some(value) = line.strip_prefix(b"deepen-not ") {
            check_ref_len("deepen-not", value)?;
            self.not.push(utf8("deepen-not ref", value)?);
        } else {
            return Ok(false);
        }
        Ok(true)
    }

    fn finish(self) -> Result<Option<Deepen>, UploadError> {
        match (self.depth, self.since.is_some() || !self.not.is_empty()) {
            (Some(_), true) => Err(UploadError::DeepenConflict),
            (Some(depth), false) => Ok(Some(Deepen::Depth(depth))),
            (None, true) => Ok(Some(Deepen::Revs {
                since: self.since,
                not: self.not,
            })),
            (None, false) => Ok(None),
        }
    }
}

/// Split `<oid>[ <rest>]`.
fn split_oid(rest: &[u8]) -> (&[u8], Option<&[u8]>) {
    match rest.iter().position(|b| *b == b' ') {
        Some(i) => (&rest[..i], Some(&rest[i + 1..])),
        None => (rest, None),
    }
}

fn parse_oid(keyword: &'static str, hex: &[u8]) -> Result<ObjectId, UploadError> {
    ObjectId::from_hex(hex).map_err(|_| UploadError::InvalidOid {
        keyword,
        value: show(hex),
    })
}

/// Refuse a ref name no ref can have (C git's files backend cannot store
/// one longer than `PATH_MAX` either).
fn check_ref_len(what: &'static str, name: &[u8]) -> Result<(), UploadError> {
    let max = guts_io::refname::REF_NAME_MAX_BYTES;
    if name.len() > max {
        return Err(UploadError::RefNameTooLong {
            what,
            len: name.len(),
            max,
        });
    }
    Ok(())
}

fn utf8(what: &'static str, value: &[u8]) -> Result<String, UploadError> {
    std::str::from_utf8(value)
        .map(str::to_owned)
        .map_err(|_| UploadError::NotUtf8 {
            what,
            value: show(value),
        })
}

fn unexpected_pkt(pkt: Pkt<'_>, section: &'static str) -> UploadError {
    let pkt = match pkt {
        Pkt::Flush => "flush",
        Pkt::Delim => "delim",
        Pkt::ResponseEnd => "response-end",
        Pkt::Data(_) => "data",
    };
    UploadError::UnexpectedPkt { pkt, section }
}

/// Capability lines common to every v2 command.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct V2Common {
    /// `agent=<value>`.
    pub agent: Option<String>,
    /// `object-format=<value>` (only `sha1` is accepted).
    pub object_format: Option<String>,
    /// `session-id=<value>`.
    pub session_id: Option<String>,
    /// `server-option=<value>` lines, in order.
    pub server_options: Vec<String>,
}

/// A v2 `ls-refs` request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LsRefsRequest {
    /// Capability lines.
    pub common: V2Common,
    /// `peel`: show `peeled:<oid>` for annotated tags.
    pub peel: bool,
    /// `symrefs`: show `symref-target:<ref>` for symbolic refs.
    pub symrefs: bool,
    /// `unborn`: show an unborn HEAD as `unborn HEAD`.
    pub unborn: bool,
    /// `ref-prefix` values; empty means every ref. Cleared (every ref) when
    /// more than [`REF_PREFIXES_MAX`] arrive, as git does.
    pub ref_prefixes: Vec<String>,
}

impl LsRefsRequest {
    /// Whether a ref of this name should be listed. One call scans every
    /// prefix; to match many names, build [`LsRefsRequest::prefixes`] once.
    pub fn matches(&self, name: &str) -> bool {
        self.ref_prefixes.is_empty()
            || self
                .ref_prefixes
                .iter()
                .any(|p| name.starts_with(p.as_str()))
    }

    /// The request's prefixes arranged for matching many names, each in
    /// O(log prefixes).
    pub fn prefixes(&self) -> RefPrefixes {
        RefPrefixes::new(&self.ref_prefixes)
    }
}

/// `ref-prefix` values arranged for matching: sorted, without duplicates
/// and without any prefix that a shorter one already covers. In such a
/// set the only prefix that can match a name is the greatest one not
/// above it, so one binary search answers (65,536 prefixes against
/// 30,000 refs is half a million comparisons, not two billion).
#[derive(Clone, Debug, Default)]
pub struct RefPrefixes {
    /// Sorted and prefix-free; empty means every name matches.
    sorted: Vec<String>,
}

impl RefPrefixes {
    /// Arrange `prefixes` (empty: everything matches).
    pub fn new(prefixes: &[String]) -> Self {
        let mut all: Vec<&str> = prefixes.iter().map(String::as_str).collect();
        all.sort_unstable();
        all.dedup();
        let mut sorted: Vec<String> = Vec::with_capacity(all.len());
        for p in all {
            // Sorted order puts every name a kept prefix covers right
            // after it, so comparing with the last kept one is enough.
            if sorted
                .last()
                .is_some_and(|kept| p.starts_with(kept.as_str()))
            {
                continue;
            }
            sorted.push(p.to_owned());
        }
        RefPrefixes { sorted }
    }

    /// The positions in `names` (sorted bytewise, as a ref store keeps
    /// them) of the names that match, as ranges in ascending order: one
    /// binary search per prefix, so a prefix that matches a few refs of
    /// 100,000 costs those few, not a pass over all of them. Ranges are
    /// disjoint because the prefixes are prefix-free.
    pub fn ranges<T>(&self, names: &[T], name: impl Fn(&T) -> &str) -> Vec<std::ops::Range<usize>> {
        let mut out = Vec::new();
        if self.sorted.is_empty() {
            out.push(0..names.len());
            return out;
        }
        for p in &self.sorted {
            let start = names.partition_point(|n| name(n) < p.as_str());
            let len = names[start..].partition_point(|n| name(n).starts_with(p.as_str()));
            if len > 0 {
                out.push(start..start + len);
            }
        }
        out
    }

    /// Whether `name` starts with one of the prefixes (or there are none).
    pub fn matches(&self, name: &str) -> bool {
        if self.sorted.is_empty() {
            return true;
        }
        match self.sorted.partition_point(|p| p.as_str() <= name) {
            0 => false,
            i => name.starts_with(self.sorted[i - 1].as_str()),
        }
    }
}

/// A v2 `fetch` request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FetchRequest {
    /// Capability lines.
    pub common: V2Common,
    /// `want <oid>` lines.
    pub wants: Vec<ObjectId>,
    /// `want-ref <ref>` lines.
    pub want_refs: Vec<String>,
    /// `have <oid>` lines.
    pub haves: Vec<ObjectId>,
    /// `done`.
    pub done: bool,
    /// `thin-pack`.
    pub thin_pack: bool,
    /// `no-progress`.
    pub no_progress: bool,
    /// `include-tag`.
    pub include_tag: bool,
    /// `ofs-delta`.
    pub ofs_delta: bool,
    /// `shallow <oid>` lines.
    pub shallows: Vec<ObjectId>,
    /// `deepen`, `deepen-since`, `deepen-not`.
    pub depth: Option<Deepen>,
    /// `deepen-relative`.
    pub deepen_relative: bool,
    /// `filter <spec>`.
    pub filter: Option<FilterSpec>,
    /// `sideband-all`: every section, not only the pack, is multiplexed.
    pub sideband_all: bool,
    /// `wait-for-done`: never send `ready`; wait for `done`.
    pub wait_for_done: bool,
}

/// A v2 `bundle-uri` request (gitprotocol-v2 "bundle-uri"): capability
/// lines only; the command takes no arguments.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BundleUriRequest {
    /// Capability lines.
    pub common: V2Common,
}

/// A parsed protocol v2 request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum V2Request {
    /// `command=ls-refs`.
    LsRefs(LsRefsRequest),
    /// `command=fetch`.
    Fetch(FetchRequest),
    /// `command=bundle-uri`.
    BundleUri(BundleUriRequest),
}

impl V2Request {
    /// Parse a v2 request body with the default pkt limit.
    pub fn parse(body: &[u8]) -> Result<V2Request, UploadError> {
        Self::parse_with_limit(body, pktline::REQUEST_PKTS_MAX)
    }

    /// Parse a v2 request body, refusing more than `pkts_max` pkts.
    pub fn parse_with_limit(body: &[u8], pkts_max: usize) -> Result<V2Request, UploadError> {
        let mut parser = V2RequestParser::new(pkts_max);
        let used = parser.advance(body)?;
        parser.finish(&body[used..])
    }
}

/// The v2 commands served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum V2Command {
    LsRefs,
    Fetch,
    BundleUri,
}

impl V2Command {
    fn section(self) -> &'static str {
        match self {
            V2Command::LsRefs => "ls-refs arguments",
            V2Command::Fetch => "fetch arguments",
            V2Command::BundleUri => "bundle-uri arguments",
        }
    }
}

/// Where a v2 request parser is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum V2Section {
    /// Capability lines, up to a delim (arguments follow) or a flush.
    Capabilities,
    /// The command's arguments, up to a flush.
    Arguments(V2Command),
    /// Complete: nothing may follow.
    End,
}

/// Incremental parser of a protocol v2 `git-upload-pack` request body:
/// the streaming form of [`V2Request::parse_with_limit`], used like
/// [`UploadRequestParser`].
#[derive(Clone, Debug)]
pub struct V2RequestParser {
    feed: PktFeed,
    section: V2Section,
    command: Option<Vec<u8>>,
    common: V2Common,
    ls_refs: LsRefsRequest,
    too_many_prefixes: bool,
    fetch: FetchRequest,
    deepen: DeepenBuilder,
    done: Option<V2Command>,
    retained: usize,
}

impl V2RequestParser {
    /// A parser refusing more than `pkts_max` pkts.
    pub fn new(pkts_max: usize) -> Self {
        V2RequestParser {
            feed: PktFeed::new(pkts_max),
            section: V2Section::Capabilities,
            command: None,
            common: V2Common::default(),
            ls_refs: LsRefsRequest::default(),
            too_many_prefixes: false,
            fetch: FetchRequest::default(),
            deepen: DeepenBuilder::default(),
            done: None,
            retained: 0,
        }
    }

    /// Consume the whole pkts at the front of `input`; returns how many
    /// bytes were used (see [`UploadRequestParser::advance`]).
    pub fn advance(&mut self, input: &[u8]) -> Result<usize, UploadError> {
        let mut used = 0;
        loop {
            let rest = &input[used..];
            if self.section == V2Section::End {
                if rest.is_empty() {
                    return Ok(used);
                }
                return Err(UploadError::TrailingData { len: rest.len() });
            }
            let Some((pkt, n)) = self.feed.next(rest)? else {
                return Ok(used);
            };
            used += n;
            self.pkt(pkt)?;
        }
    }

    /// Bytes of parsed state held (ids and text), for memory accounting.
    pub fn retained_bytes(&self) -> usize {
        self.retained
    }

    /// The body ended with `rest` not consumed: the request, or why not.
    pub fn finish(mut self, rest: &[u8]) -> Result<V2Request, UploadError> {
        match (self.section, self.done) {
            (V2Section::End, Some(command)) => self.complete(command),
            (_, _) if !rest.is_empty() => Err(self.feed.truncated(rest).into()),
            (V2Section::Arguments(command), _) => Err(UploadError::MissingFlush {
                section: command.section(),
            }),
            _ => Err(UploadError::MissingFlush {
                section: "capabilities",
            }),
        }
    }

    fn complete(&mut self, command: V2Command) -> Result<V2Request, UploadError> {
        Ok(match command {
            V2Command::LsRefs => {
                let mut request = std::mem::take(&mut self.ls_refs);
                request.common = std::mem::take(&mut self.common);
                if self.too_many_prefixes {
                    request.ref_prefixes.clear();
                }
                V2Request::LsRefs(request)
            }
            V2Command::Fetch => {
                let mut request = std::mem::take(&mut self.fetch);
                request.common = std::mem::take(&mut self.common);
                request.depth = std::mem::take(&mut self.deepen).finish()?;
                V2Request::Fetch(request)
            }
            V2Command::BundleUri => V2Request::BundleUri(BundleUriRequest {
                common: std::mem::take(&mut self.common),
            }),
        })
    }

    fn pkt(&mut self, pkt: Pkt<'_>) -> Result<(), UploadError> {
        match self.section {
            V2Section::Capabilities => self.capability(pkt),
            V2Section::Arguments(command) => match pkt {
                Pkt::Data(data) => {
                    let arg = pktline::strip_lf(data);
                    match command {
                        V2Command::LsRefs => self.ls_refs_arg(arg),
                        V2Command::Fetch => self.fetch_arg(arg),
                        // git's own server dies on any argument here.
                        V2Command::BundleUri => Err(UploadError::UnknownArgument {
                            command: "bundle-uri",
                            argument: show(arg),
                        }),
                    }
                }
                Pkt::Flush => {
                    self.end(command);
                    Ok(())
                }
                other => Err(unexpected_pkt(other, command.section())),
            },
            V2Section::End => Err(UploadError::TrailingData { len: 1 }),
        }
    }

    fn end(&mut self, command: V2Command) {
        self.section = V2Section::End;
        self.done = Some(command);
    }

    fn capability(&mut self, pkt: Pkt<'_>) -> Result<(), UploadError> {
        let line = match pkt {
            Pkt::Data(data) => pktline::strip_lf(data),
            Pkt::Delim | Pkt::Flush => {
                let command = match self
                    .command
                    .take()
                    .ok_or(UploadError::NoCommand)?
                    .as_slice()
                {
                    b"ls-refs" => V2Command::LsRefs,
                    b"fetch" => V2Command::Fetch,
                    b"bundle-uri" => V2Command::BundleUri,
                    other => {
                        return Err(UploadError::UnknownCommand {
                            command: show(other),
                        })
                    }
                };
                if pkt == Pkt::Delim {
                    self.section = V2Section::Arguments(command);
                } else {
                    self.end(command);
                }
                return Ok(());
            }
            Pkt::ResponseEnd => return Err(unexpected_pkt(Pkt::ResponseEnd, "capabilities")),
        };
        self.retained += line.len();
        if let Some(name) = line.strip_prefix(b"command=") {
            if self.command.is_some() {
                return Err(UploadError::DuplicateCommand {
                    command: show(name),
                });
            }
            self.command = Some(name.to_vec());
        } else if let Some(v) = line.strip_prefix(b"agent=") {
            self.common.agent = Some(show(v));
        } else if let Some(v) = line.strip_prefix(b"object-format=") {
            check_object_format(v)?;
            self.common.object_format = Some(show(v));
        } else if let Some(v) = line.strip_prefix(b"session-id=") {
            self.common.session_id = Some(show(v));
        } else if let Some(v) = line.strip_prefix(b"server-option=") {
            self.common.server_options.push(utf8("server-option", v)?);
        } else {
            return Err(UploadError::UnknownCapability {
                capability: show(line),
            });
        }
        Ok(())
    }

    fn ls_refs_arg(&mut self, arg: &[u8]) -> Result<(), UploadError> {
        let request = &mut self.ls_refs;
        match arg {
            b"peel" => request.peel = true,
            b"symrefs" => request.symrefs = true,
            b"unborn" => request.unborn = true,
            _ => {
                if let Some(prefix) = arg.strip_prefix(b"ref-prefix ") {
                    check_ref_len("ref-prefix", prefix)?;
                    if request.ref_prefixes.len() < REF_PREFIXES_MAX {
                        request.ref_prefixes.push(utf8("ref-prefix", prefix)?);
                        self.retained += prefix.len() + std::mem::size_of::<String>();
                    } else {
                        self.too_many_prefixes = true;
                    }
                } else {
                    return Err(UploadError::UnknownArgument {
                        command: "ls-refs",
                        argument: show(arg),
                    });
                }
            }
        }
        Ok(())
    }

    fn fetch_arg(&mut self, arg: &[u8]) -> Result<(), UploadError> {
        let oid_bytes = std::mem::size_of::<ObjectId>();
        let request = &mut self.fetch;
        match arg {
            b"done" => request.done = true,
            b"thin-pack" => request.thin_pack = true,
            b"no-progress" => request.no_progress = true,
            b"include-tag" => request.include_tag = true,
            b"ofs-delta" => request.ofs_delta = true,
            b"deepen-relative" => request.deepen_relative = true,
            b"sideband-all" => request.sideband_all = true,
            b"wait-for-done" => request.wait_for_done = true,
            _ => {
                if let Some(hex) = arg.strip_prefix(b"want ") {
                    request.wants.push(parse_oid("want", hex)?);
                    self.retained += oid_bytes;
                } else if let Some(hex) = arg.strip_prefix(b"have ") {
                    request.haves.push(parse_oid("have", hex)?);
                    self.retained += oid_bytes;
                } else if let Some(hex) = arg.strip_prefix(b"shallow ") {
                    request.shallows.push(parse_oid("shallow", hex)?);
                    self.retained += oid_bytes;
                } else if let Some(name) = arg.strip_prefix(b"want-ref ") {
                    check_ref_len("want-ref", name)?;
                    request.want_refs.push(utf8("want-ref", name)?);
                    self.retained += name.len() + std::mem::size_of::<String>();
                } else if let Some(spec) = arg.strip_prefix(b"filter ") {
                    request.filter = Some(FilterSpec::parse(spec)?);
                } else if arg.starts_with(b"packfile-uris ") {
                    return Err(UploadError::UnsupportedArgument {
                        command: "fetch",
                        argument: "packfile-uris".to_owned(),
                    });
                } else if self.deepen.line(arg)? {
                    self.retained += arg.len();
                } else {
                    return Err(UploadError::UnknownArgument {
                        command: "fetch",
                        argument: show(arg),
                    });
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pktline::{write_data, write_delim, write_flush};

    const A: &str = "eaaaea727c972a53998f902348cb6ecaf4493fc9";
    const B: &str = "928fa81bcc41446864558bbd59f3a63ae6335c71";

    fn oid(hex: &str) -> ObjectId {
        ObjectId::from_hex(hex.as_bytes()).unwrap()
    }

    /// Build a body: "" is a flush, "|" a delim, anything else a line + LF.
    fn body(lines: &[&str]) -> Vec<u8> {
        let mut out = Vec::new();
        for line in lines {
            match *line {
                "" => write_flush(&mut out),
                "|" => write_delim(&mut out),
                l => write_data(&mut out, format!("{l}\n").as_bytes()).unwrap(),
            }
        }
        out
    }

    #[test]
    fn filter_specs() {
        assert_eq!(FilterSpec::parse(b"blob:none"), Ok(FilterSpec::BlobNone));
        assert_eq!(
            FilterSpec::parse(b"blob:limit=0"),
            Ok(FilterSpec::BlobLimit(0))
        );
        assert_eq!(
            FilterSpec::parse(b"blob:limit=10"),
            Ok(FilterSpec::BlobLimit(10))
        );
        assert_eq!(
            FilterSpec::parse(b"blob:limit=2k"),
            Ok(FilterSpec::BlobLimit(2048))
        );
        assert_eq!(
            FilterSpec::parse(b"blob:limit=3M"),
            Ok(FilterSpec::BlobLimit(3 << 20))
        );
        assert_eq!(
            FilterSpec::parse(b"blob:limit=1g"),
            Ok(FilterSpec::BlobLimit(1 << 30))
        );
        assert_eq!(FilterSpec::parse(b"tree:0"), Ok(FilterSpec::TreeDepth(0)));
        assert_eq!(FilterSpec::parse(b"tree:3"), Ok(FilterSpec::TreeDepth(3)));
        for bad in [
            &b"blob:limit="[..],
            b"blob:limit=k",
            b"blob:limit=1t",
            b"blob:limit=-1",
            b"blob:limit=99999999999999999999g",
            b"tree:",
            b"tree:x",
            b"tree:1k",
        ] {
            assert!(
                matches!(FilterSpec::parse(bad), Err(FilterError::BadValue { .. })),
                "{}",
                show(bad)
            );
        }
        for unsupported in [
            &b"sparse:oid=abc"[..],
            b"object:type=blob",
            b"combine:blob:none+tree:0",
            b"",
            b"blob:nonex",
        ] {
            assert!(matches!(
                FilterSpec::parse(unsupported),
                Err(FilterError::Unsupported { .. })
            ));
        }
    }

    #[test]
    fn v0_clone_request() {
        let req = UploadRequest::parse(&body(&[
            &format!("want {A} multi_ack_detailed no-done side-band-64k thin-pack ofs-delta agent=git/2.47.3 object-format=sha1"),
            &format!("want {B}"),
            "",
            "done",
        ]))
        .unwrap();
        assert_eq!(req.wants, vec![oid(A), oid(B)]);
        assert!(req.haves.is_empty());
        assert!(req.done());
        assert!(req.caps.multi_ack_detailed && req.caps.no_done && req.caps.side_band_64k);
        assert!(req.caps.thin_pack && req.caps.ofs_delta && !req.caps.multi_ack);
        assert_eq!(req.caps.agent.as_deref(), Some("git/2.47.3"));
        assert_eq!(
            req.caps.ack_mode(),
            crate::negotiate::AckMode::MultiAckDetailed
        );
        assert_eq!(
            req.caps.sideband_mode(),
            Some(crate::sideband::SidebandMode::SideBand64k)
        );
    }

    #[test]
    fn v0_haves_and_shallow() {
        let req = UploadRequest::parse(&body(&[
            &format!("want {A} shallow"),
            &format!("shallow {B}"),
            "deepen 3",
            "",
            &format!("have {B}"),
            &format!("have {A}"),
            "",
        ]))
        .unwrap();
        assert_eq!(req.shallows, vec![oid(B)]);
        assert_eq!(req.depth, Some(Deepen::Depth(3)));
        assert_eq!(req.haves, vec![oid(B), oid(A)]);
        assert_eq!(req.end, RequestEnd::Flush);
    }

    #[test]
    fn v0_deepen_revs_and_conflict() {
        let req = UploadRequest::parse(&body(&[
            &format!("want {A}"),
            "deepen-since 1577836800",
            "deepen-not refs/heads/old",
            "deepen-not refs/tags/v1",
            "",
        ]))
        .unwrap();
        assert_eq!(
            req.depth,
            Some(Deepen::Revs {
                since: Some(1577836800),
                not: vec!["refs/heads/old".into(), "refs/tags/v1".into()]
            })
        );
        assert_eq!(req.end, RequestEnd::AfterWants);
        let err = UploadRequest::parse(&body(&[
            &format!("want {A}"),
            "deepen 1",
            "deepen-not x",
            "",
        ]));
        assert_eq!(err, Err(UploadError::DeepenConflict));
        for bad in [
            "deepen 0",
            "deepen -1",
            "deepen x",
            "deepen 2147483648",
            "deepen ",
        ] {
            assert!(matches!(
                UploadRequest::parse(&body(&[&format!("want {A}"), bad, ""])),
                Err(UploadError::InvalidDepth { .. })
            ));
        }
        assert!(
            UploadRequest::parse(&body(&[&format!("want {A}"), "deepen 2147483647", ""])).is_ok()
        );
        assert!(matches!(
            UploadRequest::parse(&body(&[&format!("want {A}"), "deepen-since 0", ""])),
            Err(UploadError::InvalidDeepenSince { .. })
        ));
    }

    #[test]
    fn v0_filter_needs_capability() {
        let ok = UploadRequest::parse(&body(&[
            &format!("want {A} filter"),
            "filter blob:limit=1k",
            "",
        ]))
        .unwrap();
        assert_eq!(ok.filter, Some(FilterSpec::BlobLimit(1024)));
        assert_eq!(
            UploadRequest::parse(&body(&[&format!("want {A}"), "filter blob:none", ""])),
            Err(UploadError::FilterNotNegotiated)
        );
        assert!(matches!(
            UploadRequest::parse(&body(&[
                &format!("want {A} filter"),
                "filter sparse:oid=x",
                ""
            ])),
            Err(UploadError::Filter(FilterError::Unsupported { .. }))
        ));
    }

    #[test]
    fn v0_malformed() {
        assert_eq!(
            UploadRequest::parse(&body(&["want 12345", ""])),
            Err(UploadError::InvalidOid {
                keyword: "want",
                value: "12345".into()
            })
        );
        let nonhex = "g".repeat(40);
        assert!(matches!(
            UploadRequest::parse(&body(&[&format!("want {A}"), "", &format!("have {nonhex}"), ""])),
            Err(UploadError::InvalidOid { keyword: "have", value }) if value == nonhex
        ));
        assert!(matches!(
            UploadRequest::parse(&body(&["wants x", ""])),
            Err(UploadError::UnexpectedLine {
                section: "wants",
                ..
            })
        ));
        assert_eq!(
            UploadRequest::parse(&body(&[&format!("want {A}")])),
            Err(UploadError::MissingFlush { section: "wants" })
        );
        assert_eq!(
            UploadRequest::parse(b""),
            Err(UploadError::MissingFlush { section: "wants" })
        );
        assert_eq!(
            UploadRequest::parse(&body(&[&format!("want {A}"), "", &format!("have {A}")])),
            Err(UploadError::MissingFlush { section: "haves" })
        );
        assert!(matches!(
            UploadRequest::parse(&body(&[&format!("want {A}"), "", "done", "done"])),
            Err(UploadError::TrailingData { .. })
        ));
        assert!(matches!(
            UploadRequest::parse(&body(&[&format!("want {A}"), "|", ""])),
            Err(UploadError::UnexpectedPkt { pkt: "delim", .. })
        ));
        assert!(matches!(
            UploadRequest::parse(&body(&[&format!("want {A} object-format=sha256"), ""])),
            Err(UploadError::UnsupportedObjectFormat { format }) if format == "sha256"
        ));
        assert!(matches!(
            UploadRequest::parse(&body(&[&format!("want {A}"), "", "have"])),
            Err(UploadError::UnexpectedLine {
                section: "haves",
                ..
            })
        ));
        let mut truncated = body(&[&format!("want {A}"), ""]);
        truncated.extend_from_slice(b"0032have ");
        assert!(matches!(
            UploadRequest::parse(&truncated),
            Err(UploadError::Pkt(PktError::Truncated { .. }))
        ));
        assert!(matches!(
            UploadRequest::parse_with_limit(
                &body(&[&format!("want {A}"), &format!("want {A}"), ""]),
                2
            ),
            Err(UploadError::Pkt(PktError::TooManyPkts { max: 2 }))
        ));
    }

    #[test]
    fn v0_done_then_flush_and_empty_wants() {
        let req = UploadRequest::parse(&body(&[&format!("want {A}"), "", "done", ""])).unwrap();
        assert!(req.done());
        let empty = UploadRequest::parse(b"0000").unwrap();
        assert!(empty.wants.is_empty());
        assert_eq!(empty.end, RequestEnd::AfterWants);
    }

    #[test]
    fn v0_unknown_caps_ignored_lines_without_lf() {
        let mut raw = Vec::new();
        write_data(
            &mut raw,
            format!("want {A} frobnicate multi_ack").as_bytes(),
        )
        .unwrap();
        write_flush(&mut raw);
        write_data(&mut raw, b"done").unwrap();
        let req = UploadRequest::parse(&raw).unwrap();
        assert!(req.caps.multi_ack && req.done());
    }

    #[test]
    fn ref_prefixes_match_as_a_scan_does() {
        let names = [
            "HEAD",
            "refs/heads/main",
            "refs/heads/mainline",
            "refs/heads/m",
            "refs/tags/v1",
            "refs/tags/v1.0",
            "refs/notes/x",
            "refs/head",
            "",
        ];
        let sets: [&[&str]; 6] = [
            &[],
            &["refs/heads/"],
            &["refs/heads/main", "refs/heads/m", "refs/heads/main"],
            &[
                "refs/tags/v1",
                "HEAD",
                "refs/tags/v1.0",
                "refs/heads/mainline",
            ],
            &["", "refs/x"],
            &["refs/heads/mz", "refs/heads/ma", "zzz", "refs/head"],
        ];
        for set in sets {
            let req = LsRefsRequest {
                ref_prefixes: set.iter().map(|s| s.to_string()).collect(),
                ..LsRefsRequest::default()
            };
            let fast = req.prefixes();
            for name in names {
                assert_eq!(fast.matches(name), req.matches(name), "{set:?} {name:?}");
            }
            // The ranges over the sorted names pick exactly what a scan does.
            let mut sorted = names.to_vec();
            sorted.sort_unstable();
            let picked: Vec<&str> = fast
                .ranges(&sorted, |n| n)
                .into_iter()
                .flat_map(|r| sorted[r].iter().copied())
                .collect();
            let scanned: Vec<&str> = sorted.iter().copied().filter(|n| req.matches(n)).collect();
            assert_eq!(picked, scanned, "{set:?}");
        }
    }

    #[test]
    fn v2_ls_refs() {
        let req = V2Request::parse(&body(&[
            "command=ls-refs",
            "agent=git/2.47.3",
            "object-format=sha1",
            "server-option=ci.skip",
            "|",
            "peel",
            "symrefs",
            "unborn",
            "ref-prefix HEAD",
            "ref-prefix refs/heads/",
            "",
        ]))
        .unwrap();
        let V2Request::LsRefs(ls) = req else { panic!() };
        assert!(ls.peel && ls.symrefs && ls.unborn);
        assert_eq!(ls.ref_prefixes, vec!["HEAD", "refs/heads/"]);
        assert_eq!(ls.common.server_options, vec!["ci.skip"]);
        assert!(ls.matches("refs/heads/main") && ls.matches("HEAD") && !ls.matches("refs/tags/v1"));
        // No delim, no arguments.
        let V2Request::LsRefs(bare) = V2Request::parse(&body(&["command=ls-refs", ""])).unwrap()
        else {
            panic!()
        };
        assert!(bare.matches("anything") && !bare.peel);
    }

    #[test]
    fn v2_too_many_prefixes_means_all() {
        let mut lines = vec!["command=ls-refs".to_owned(), "|".to_owned()];
        for i in 0..=REF_PREFIXES_MAX {
            lines.push(format!("ref-prefix refs/heads/{i}"));
        }
        lines.push(String::new());
        let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
        let V2Request::LsRefs(ls) = V2Request::parse(&body(&refs)).unwrap() else {
            panic!()
        };
        assert!(ls.ref_prefixes.is_empty());
    }

    #[test]
    fn v2_fetch() {
        let req = V2Request::parse(&body(&[
            "command=fetch",
            "agent=git/2.47.3",
            "|",
            "thin-pack",
            "no-progress",
            "include-tag",
            "ofs-delta",
            "deepen 1",
            "deepen-relative",
            "filter tree:0",
            "wait-for-done",
            "sideband-all",
            &format!("want {A}"),
            "want-ref refs/heads/main",
            &format!("have {B}"),
            &format!("shallow {B}"),
            "done",
            "",
        ]))
        .unwrap();
        let V2Request::Fetch(f) = req else { panic!() };
        assert_eq!(f.wants, vec![oid(A)]);
        assert_eq!(f.want_refs, vec!["refs/heads/main"]);
        assert_eq!(f.haves, vec![oid(B)]);
        assert_eq!(f.shallows, vec![oid(B)]);
        assert_eq!(f.depth, Some(Deepen::Depth(1)));
        assert_eq!(f.filter, Some(FilterSpec::TreeDepth(0)));
        assert!(f.done && f.thin_pack && f.no_progress && f.include_tag && f.ofs_delta);
        assert!(f.deepen_relative && f.wait_for_done && f.sideband_all);
    }

    /// Feed `body` in pieces of `step` bytes, keeping the unconsumed rest
    /// as a server does; return what the parser's `finish` says.
    fn in_pieces<P, T>(
        body: &[u8],
        step: usize,
        mut parser: P,
        advance: impl Fn(&mut P, &[u8]) -> Result<usize, UploadError>,
        finish: impl Fn(P, &[u8]) -> Result<T, UploadError>,
    ) -> Result<T, UploadError> {
        let mut pending = Vec::new();
        for piece in body.chunks(step) {
            pending.extend_from_slice(piece);
            let used = advance(&mut parser, &pending)?;
            pending.drain(..used);
            assert!(pending.len() < crate::pktline::PKT_MAX_BYTES);
        }
        finish(parser, &pending)
    }

    /// The parser fed piece by piece agrees with the one-shot parse (same
    /// request, or the same kind of error).
    #[test]
    fn incremental_parsers_agree_with_whole_body_parses() {
        let wants = format!("want {A} multi_ack_detailed side-band-64k filter");
        let v0: Vec<Vec<u8>> = vec![
            body(&[
                &wants,
                &format!("shallow {B}"),
                "deepen 3",
                "",
                &format!("have {B}"),
                "done",
            ]),
            body(&[&wants, "", &format!("have {B}"), "done", ""]),
            body(&[&wants, "", &format!("have {B}"), ""]),
            body(&[&wants, ""]),
            body(&[&wants, "filter blob:none", "", "done", "", ""]),
            body(&[&wants, "", "done", "x"]),
            body(&[&wants, "", &format!("have {B}")]),
            body(&[&wants]),
            body(&[&wants, "|"]),
            [body(&[&wants, ""]), b"00".to_vec()].concat(),
            [body(&[&wants, "", "done"]), b"00".to_vec()].concat(),
            [body(&[&wants, "", "done"]), b"zz".to_vec()].concat(),
            b"0000".to_vec(),
            b"zzzz".to_vec(),
        ];
        for (i, b) in v0.iter().enumerate() {
            let whole = UploadRequest::parse(b);
            for step in [1, 2, 3, 7, 64, b.len().max(1)] {
                let parsed = in_pieces(
                    b,
                    step,
                    UploadRequestParser::new(REQUEST_PKTS_MAX_FOR_TESTS),
                    |p, x| p.advance(x),
                    |p, rest| p.finish(rest),
                );
                match (&whole, &parsed) {
                    (Ok(a), Ok(b)) => assert_eq!(a, b, "v0 body {i} step {step}"),
                    (Err(a), Err(b)) => assert_eq!(
                        std::mem::discriminant(a),
                        std::mem::discriminant(b),
                        "v0 body {i} step {step}: {a} / {b}"
                    ),
                    _ => panic!("v0 body {i} step {step}: {whole:?} / {parsed:?}"),
                }
            }
        }
        let v2: Vec<Vec<u8>> = vec![
            body(&[
                "command=ls-refs",
                "agent=x",
                "|",
                "peel",
                "ref-prefix refs/heads/",
                "",
            ]),
            body(&["command=ls-refs", ""]),
            body(&[
                "command=fetch",
                "|",
                &format!("want {A}"),
                "want-ref refs/heads/main",
                "deepen-not refs/x",
                "done",
                "",
            ]),
            body(&["command=fetch", "|", "done", "", "done"]),
            body(&["command=fetch", "|", "done"]),
            body(&["command=fetch"]),
            body(&["command=frob", ""]),
            body(&["agent=x", ""]),
            [body(&["command=fetch", "|", "done"]), b"001".to_vec()].concat(),
        ];
        for (i, b) in v2.iter().enumerate() {
            let whole = V2Request::parse(b);
            for step in [1, 2, 5, 64, b.len().max(1)] {
                let parsed = in_pieces(
                    b,
                    step,
                    V2RequestParser::new(REQUEST_PKTS_MAX_FOR_TESTS),
                    |p, x| p.advance(x),
                    |p, rest| p.finish(rest),
                );
                match (&whole, &parsed) {
                    (Ok(a), Ok(b)) => assert_eq!(a, b, "v2 body {i} step {step}"),
                    (Err(a), Err(b)) => assert_eq!(
                        std::mem::discriminant(a),
                        std::mem::discriminant(b),
                        "v2 body {i} step {step}: {a} / {b}"
                    ),
                    _ => panic!("v2 body {i} step {step}: {whole:?} / {parsed:?}"),
                }
            }
        }
        // The pkt limit holds across pieces.
        let many = body(&[&wants, &wants, &wants, ""]);
        let limited = in_pieces(
            &many,
            3,
            UploadRequestParser::new(2),
            |p, x| p.advance(x),
            |p, rest| p.finish(rest),
        );
        assert_eq!(
            limited,
            Err(UploadError::Pkt(PktError::TooManyPkts { max: 2 }))
        );
        // A want-ref no ref can have is refused.
        let long = format!("want-ref refs/heads/{}", "x".repeat(5000));
        assert!(matches!(
            V2Request::parse(&body(&["command=fetch", "|", &long, ""])),
            Err(UploadError::RefNameTooLong {
                what: "want-ref",
                ..
            })
        ));
    }

    #[test]
    fn v2_bundle_uri() {
        // What git sends: capabilities, a delim, no arguments, a flush.
        let req = V2Request::parse(&body(&[
            "command=bundle-uri",
            "agent=git/2.47.3",
            "object-format=sha1",
            "|",
            "",
        ]))
        .unwrap();
        let V2Request::BundleUri(req) = req else {
            panic!("not bundle-uri: {req:?}")
        };
        assert_eq!(req.common.agent.as_deref(), Some("git/2.47.3"));
        // No delim at all is the same request.
        assert!(matches!(
            V2Request::parse(&body(&["command=bundle-uri", ""])),
            Ok(V2Request::BundleUri(_))
        ));
        assert!(matches!(
            V2Request::parse(&body(&["command=bundle-uri", "|", "want-all", ""])),
            Err(UploadError::UnknownArgument {
                command: "bundle-uri",
                argument,
            }) if argument == "want-all"
        ));
        assert!(matches!(
            V2Request::parse(&body(&["command=bundle-uri", "|"])),
            Err(UploadError::MissingFlush {
                section: "bundle-uri arguments"
            })
        ));
        assert!(matches!(
            V2Request::parse(&body(&["command=bundle-uri", "|", "", "0000"])),
            Err(UploadError::TrailingData { .. })
        ));
    }

    const REQUEST_PKTS_MAX_FOR_TESTS: usize = 1000;

    #[test]
    fn v2_errors() {
        assert!(matches!(
            V2Request::parse(&body(&["command=object-info", ""])),
            Err(UploadError::UnknownCommand { command }) if command == "object-info"
        ));
        assert_eq!(
            V2Request::parse(&body(&["agent=x", ""])),
            Err(UploadError::NoCommand)
        );
        assert_eq!(V2Request::parse(b"0000"), Err(UploadError::NoCommand));
        assert!(matches!(
            V2Request::parse(&body(&["command=fetch", "command=ls-refs", ""])),
            Err(UploadError::DuplicateCommand { .. })
        ));
        assert!(matches!(
            V2Request::parse(&body(&["command=fetch", "bogus=1", ""])),
            Err(UploadError::UnknownCapability { .. })
        ));
        assert!(matches!(
            V2Request::parse(&body(&["command=fetch", "object-format=sha256", ""])),
            Err(UploadError::UnsupportedObjectFormat { format }) if format == "sha256"
        ));
        assert!(matches!(
            V2Request::parse(&body(&["command=ls-refs", "|", "frob", ""])),
            Err(UploadError::UnknownArgument {
                command: "ls-refs",
                ..
            })
        ));
        assert!(matches!(
            V2Request::parse(&body(&["command=fetch", "|", "frob", ""])),
            Err(UploadError::UnknownArgument {
                command: "fetch",
                ..
            })
        ));
        assert!(matches!(
            V2Request::parse(&body(&["command=fetch", "|", "packfile-uris https", ""])),
            Err(UploadError::UnsupportedArgument { .. })
        ));
        assert!(matches!(
            V2Request::parse(&body(&["command=fetch", "|", "want nothex", ""])),
            Err(UploadError::InvalidOid {
                keyword: "want",
                ..
            })
        ));
        assert!(matches!(
            V2Request::parse(&body(&[
                "command=fetch",
                "|",
                "deepen 1",
                "deepen-since 5",
                ""
            ])),
            Err(UploadError::DeepenConflict)
        ));
        assert!(matches!(
            V2Request::parse(&body(&["command=fetch", "|", "done"])),
            Err(UploadError::MissingFlush { .. })
        ));
        assert!(matches!(
            V2Request::parse(&body(&["command=fetch", "|", "done", "", "done"])),
            Err(UploadError::TrailingData { .. })
        ));
        assert!(matches!(
            V2Request::parse(&body(&["command=fetch", "|", "|", ""])),
            Err(UploadError::UnexpectedPkt { pkt: "delim", .. })
        ));
        assert!(matches!(
            V2Request::parse(b"0003"),
            Err(UploadError::Pkt(_))
        ));
    }
}
