//! `git-receive-pack` requests and report-status answers
//! (gitprotocol-pack "Reference Update Request and Packfile Transfer",
//! "Report Status").
//!
//! A push body is
//!
//! ```text
//! shallow <oid>\n ...                    optional
//! <old> <new> <ref>\0<caps>              the first command carries caps
//! <old> <new> <ref> ...
//! 0000
//! <push option> ... 0000                 only with the push-options cap
//! PACK...                                absent when every command deletes
//! ```
//!
//! The pack can be gigabytes and must be streamed, so the header is parsed
//! incrementally by [`PushParser`]: feed it what has arrived, it consumes
//! whole pkts and says when the header is complete; the bytes after it are
//! the pack.

use guts_io::ObjectId;

use crate::pktline::{self, Pkt, PktError};
use crate::sideband::{self, Band, SidebandMode};
use crate::text::show;

/// Default limit on ref update commands in one push.
pub const PUSH_COMMANDS_MAX: usize = 100_000;

/// Default limit on push options in one push.
pub const PUSH_OPTIONS_MAX: usize = 1_000;

/// Default limit on the total bytes of push options in one push.
pub const PUSH_OPTIONS_MAX_BYTES: usize = 64 * 1024;

/// Default limit on `shallow` lines in one push.
pub const PUSH_SHALLOWS_MAX: usize = 100_000;

/// Default limit on the bytes of all command lines of one push (names and
/// ids): what the parsed commands may hold in memory. 100,000 updates of
/// 200-byte names fit.
pub const PUSH_COMMANDS_MAX_BYTES: usize = 32 << 20;

/// Default longest ref name in a command: C git's files backend cannot
/// store a ref whose path exceeds `PATH_MAX` (4096), so no real client
/// sends a longer one.
pub const PUSH_REF_NAME_MAX_BYTES: usize = guts_io::refname::REF_NAME_MAX_BYTES;

/// Limits enforced while parsing a push header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PushLimits {
    /// Most ref update commands.
    pub commands_max: usize,
    /// Most push options.
    pub push_options_max: usize,
    /// Most bytes of push options, summed.
    pub push_options_max_bytes: usize,
    /// Most `shallow` lines.
    pub shallows_max: usize,
    /// Most bytes of command lines, summed.
    pub commands_max_bytes: usize,
    /// Longest ref name in a command.
    pub ref_name_max_bytes: usize,
}

impl Default for PushLimits {
    fn default() -> Self {
        PushLimits {
            commands_max: PUSH_COMMANDS_MAX,
            push_options_max: PUSH_OPTIONS_MAX,
            push_options_max_bytes: PUSH_OPTIONS_MAX_BYTES,
            shallows_max: PUSH_SHALLOWS_MAX,
            commands_max_bytes: PUSH_COMMANDS_MAX_BYTES,
            ref_name_max_bytes: PUSH_REF_NAME_MAX_BYTES,
        }
    }
}

/// Errors from parsing a push header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReceiveError {
    /// Broken pkt-line framing.
    #[error(transparent)]
    Pkt(#[from] PktError),
    /// A command line that is not `<old> <new> <ref>`.
    #[error("malformed ref update command: {line:?}")]
    MalformedCommand {
        /// The line received.
        line: String,
    },
    /// An old or new id that is not 40 hex digits.
    #[error("invalid object id in ref update command: {value:?}")]
    InvalidOid {
        /// The text that should have been an id.
        value: String,
    },
    /// A `shallow` line with a bad id.
    #[error("invalid object id in shallow line: {value:?}")]
    InvalidShallow {
        /// The text that should have been an id.
        value: String,
    },
    /// A ref name or push option that is not UTF-8.
    #[error("{what} is not valid UTF-8: {value:?}")]
    NotUtf8 {
        /// Which field.
        what: &'static str,
        /// The bytes received (lossy).
        value: String,
    },
    /// More commands than allowed.
    #[error("push has more than {max} ref update commands")]
    TooManyCommands {
        /// The limit in force.
        max: usize,
    },
    /// More `shallow` lines than allowed.
    #[error("push has more than {max} shallow lines")]
    TooManyShallows {
        /// The limit in force.
        max: usize,
    },
    /// Command lines larger than allowed, summed.
    #[error("push commands total more than {max} bytes")]
    CommandsTooLarge {
        /// The limit in force.
        max: usize,
    },
    /// A ref name longer than allowed.
    #[error("ref name of {len} bytes is longer than the limit of {max} bytes")]
    RefNameTooLong {
        /// Its length.
        len: usize,
        /// The limit in force.
        max: usize,
    },
    /// More push options than allowed.
    #[error("push has more than {max} push options")]
    TooManyPushOptions {
        /// The limit in force.
        max: usize,
    },
    /// Push options larger than allowed.
    #[error("push options total {bytes} bytes, more than {max}")]
    PushOptionsTooLarge {
        /// Bytes seen so far.
        bytes: usize,
        /// The limit in force.
        max: usize,
    },
    /// A signed push (`push-cert`), which this server does not advertise.
    #[error("signed pushes (push-cert) are not supported")]
    PushCertUnsupported,
    /// `object-format=` other than `sha1`.
    #[error("unsupported object format {format:?}")]
    UnsupportedObjectFormat {
        /// The format asked for.
        format: String,
    },
    /// A special pkt where none belongs.
    #[error("unexpected {pkt} pkt in {section}")]
    UnexpectedPkt {
        /// Which pkt.
        pkt: &'static str,
        /// Where the parser was.
        section: &'static str,
    },
    /// The body ended before the header was complete.
    #[error("push request ended inside {section}")]
    Truncated {
        /// Where the parser was.
        section: &'static str,
    },
    /// [`PushParser::advance`] called after it returned the request.
    #[error("push header already parsed")]
    AlreadyDone,
}

/// Capabilities a pushing client asked for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PushCaps {
    /// `report-status`.
    pub report_status: bool,
    /// `report-status-v2`.
    pub report_status_v2: bool,
    /// `side-band-64k`: wrap report-status and progress in side-band.
    pub side_band_64k: bool,
    /// `quiet`: send no progress.
    pub quiet: bool,
    /// `atomic`: all updates succeed or none.
    pub atomic: bool,
    /// `delete-refs`.
    pub delete_refs: bool,
    /// `ofs-delta`.
    pub ofs_delta: bool,
    /// `push-options`: option pkts follow the commands.
    pub push_options: bool,
    /// `agent=<value>`.
    pub agent: Option<String>,
    /// `session-id=<value>`.
    pub session_id: Option<String>,
    /// `object-format=<value>` (only `sha1` is accepted).
    pub object_format: Option<String>,
}

impl PushCaps {
    /// Parse a space-separated capability list (unknown ones are ignored).
    pub fn parse(list: &[u8]) -> Result<PushCaps, ReceiveError> {
        let mut caps = PushCaps::default();
        for cap in list.split(|b| *b == b' ').filter(|c| !c.is_empty()) {
            match cap {
                b"report-status" => caps.report_status = true,
                b"report-status-v2" => caps.report_status_v2 = true,
                b"side-band-64k" => caps.side_band_64k = true,
                b"quiet" => caps.quiet = true,
                b"atomic" => caps.atomic = true,
                b"delete-refs" => caps.delete_refs = true,
                b"ofs-delta" => caps.ofs_delta = true,
                b"push-options" => caps.push_options = true,
                _ => {
                    if let Some(v) = cap.strip_prefix(b"agent=") {
                        caps.agent = Some(show(v));
                    } else if let Some(v) = cap.strip_prefix(b"session-id=") {
                        caps.session_id = Some(show(v));
                    } else if let Some(v) = cap.strip_prefix(b"object-format=") {
                        if v != b"sha1" {
                            return Err(ReceiveError::UnsupportedObjectFormat { format: show(v) });
                        }
                        caps.object_format = Some(show(v));
                    }
                }
            }
        }
        Ok(caps)
    }

    /// Which report-status the client wants, if any (v2 wins).
    pub fn report_status_version(&self) -> Option<ReportStatusVersion> {
        if self.report_status_v2 {
            Some(ReportStatusVersion::V2)
        } else if self.report_status {
            Some(ReportStatusVersion::V1)
        } else {
            None
        }
    }

    /// The side-band mode for the answer, if any.
    pub fn sideband_mode(&self) -> Option<SidebandMode> {
        self.side_band_64k.then_some(SidebandMode::SideBand64k)
    }
}

/// One ref update command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefUpdate {
    /// The value the client believes the ref has (null: create).
    pub old: ObjectId,
    /// The value to set (null: delete).
    pub new: ObjectId,
    /// The full ref name, unvalidated (check it with git's ref-name rules).
    pub name: String,
}

impl RefUpdate {
    /// True for a creation (old is null).
    pub fn is_create(&self) -> bool {
        self.old.is_null()
    }

    /// True for a deletion (new is null).
    pub fn is_delete(&self) -> bool {
        self.new.is_null()
    }
}

/// A parsed push header.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PushRequest {
    /// `shallow` lines: the client's shallow boundary.
    pub shallows: Vec<ObjectId>,
    /// Ref update commands, in order.
    pub commands: Vec<RefUpdate>,
    /// Capabilities from the first command.
    pub caps: PushCaps,
    /// Push options, in order.
    pub push_options: Vec<String>,
}

impl PushRequest {
    /// True if a pack must follow: git sends none when every command is a
    /// deletion (or there are no commands).
    pub fn expects_pack(&self) -> bool {
        self.commands.iter().any(|c| !c.is_delete())
    }
}

/// Result of one [`PushParser::advance`] call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PushStep {
    /// The header is not complete; drop `consumed` bytes from the front of
    /// the input and call again with more.
    NeedMore {
        /// Bytes of whole pkts used from this input.
        consumed: usize,
    },
    /// The header is complete after `consumed` bytes of this input; what
    /// follows is the pack (if [`PushRequest::expects_pack`]).
    Done {
        /// Bytes used from this input.
        consumed: usize,
        /// The header.
        request: PushRequest,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Section {
    Commands,
    Options,
    Done,
}

/// Incremental push header parser. Holds at most the parsed header; the
/// caller buffers at most one partial pkt (under 64 KiB).
#[derive(Clone, Debug)]
pub struct PushParser {
    limits: PushLimits,
    section: Section,
    request: PushRequest,
    options_bytes: usize,
    commands_bytes: usize,
}

impl Default for PushParser {
    fn default() -> Self {
        PushParser::new(PushLimits::default())
    }
}

impl PushParser {
    /// A parser enforcing `limits`.
    pub fn new(limits: PushLimits) -> Self {
        PushParser {
            limits,
            section: Section::Commands,
            request: PushRequest::default(),
            options_bytes: 0,
            commands_bytes: 0,
        }
    }

    /// Bytes of parsed header held (commands, shallows, options), for
    /// memory accounting.
    pub fn retained_bytes(&self) -> usize {
        self.commands_bytes
            + self.options_bytes
            + self.request.shallows.len() * std::mem::size_of::<ObjectId>()
            + self.request.commands.len() * std::mem::size_of::<RefUpdate>()
    }

    /// Consume as many whole pkts of `input` (the bytes not consumed by
    /// earlier calls, plus new ones) as possible.
    pub fn advance(&mut self, input: &[u8]) -> Result<PushStep, ReceiveError> {
        if self.section == Section::Done {
            return Err(ReceiveError::AlreadyDone);
        }
        let mut consumed = 0;
        while let Some((pkt, used)) = pktline::decode_pkt(&input[consumed..], consumed)? {
            consumed += used;
            if self.pkt(pkt)? {
                self.section = Section::Done;
                return Ok(PushStep::Done {
                    consumed,
                    request: std::mem::take(&mut self.request),
                });
            }
        }
        Ok(PushStep::NeedMore { consumed })
    }

    /// What has been parsed so far (commands, capabilities, options):
    /// enough to answer a request refused part way with a report in the
    /// form the client asked for.
    pub fn request_so_far(&self) -> &PushRequest {
        &self.request
    }

    /// Call when the body ended: an error unless the header was complete.
    pub fn finish(&self) -> Result<(), ReceiveError> {
        match self.section {
            Section::Done => Ok(()),
            Section::Commands => Err(ReceiveError::Truncated {
                section: "commands",
            }),
            Section::Options => Err(ReceiveError::Truncated {
                section: "push options",
            }),
        }
    }

    /// Handle one pkt; true when the header is complete.
    fn pkt(&mut self, pkt: Pkt<'_>) -> Result<bool, ReceiveError> {
        let section_name = match self.section {
            Section::Options => "push options",
            _ => "commands",
        };
        let data = match pkt {
            Pkt::Data(data) => pktline::strip_lf(data),
            Pkt::Flush => {
                if self.section == Section::Commands
                    && self.request.caps.push_options
                    && !self.request.commands.is_empty()
                {
                    self.section = Section::Options;
                    return Ok(false);
                }
                return Ok(true);
            }
            Pkt::Delim => {
                return Err(ReceiveError::UnexpectedPkt {
                    pkt: "delim",
                    section: section_name,
                })
            }
            Pkt::ResponseEnd => {
                return Err(ReceiveError::UnexpectedPkt {
                    pkt: "response-end",
                    section: section_name,
                })
            }
        };
        match self.section {
            Section::Commands => self.command_line(data)?,
            Section::Options => self.option_line(data)?,
            Section::Done => return Err(ReceiveError::AlreadyDone),
        }
        Ok(false)
    }

    fn command_line(&mut self, line: &[u8]) -> Result<(), ReceiveError> {
        if let Some(hex) = line.strip_prefix(b"shallow ") {
            if !self.request.commands.is_empty() {
                return Err(ReceiveError::MalformedCommand { line: show(line) });
            }
            if self.request.shallows.len() >= self.limits.shallows_max {
                return Err(ReceiveError::TooManyShallows {
                    max: self.limits.shallows_max,
                });
            }
            let oid = ObjectId::from_hex(hex)
                .map_err(|_| ReceiveError::InvalidShallow { value: show(hex) })?;
            self.request.shallows.push(oid);
            return Ok(());
        }
        if line.starts_with(b"push-cert\0") || line == b"push-cert" {
            return Err(ReceiveError::PushCertUnsupported);
        }
        if self.request.commands.len() >= self.limits.commands_max {
            return Err(ReceiveError::TooManyCommands {
                max: self.limits.commands_max,
            });
        }
        let (command, caps) = match line.iter().position(|b| *b == 0) {
            Some(nul) => (&line[..nul], Some(&line[nul + 1..])),
            None => (line, None),
        };
        if let Some(caps) = caps {
            // Only the first command carries capabilities; git ignores a
            // NUL on later lines' caps, we take the first only.
            if self.request.commands.is_empty() {
                self.request.caps = PushCaps::parse(caps)?;
            }
        }
        let malformed = || ReceiveError::MalformedCommand { line: show(line) };
        if command.len() < 83 || command[40] != b' ' || command[81] != b' ' {
            return Err(malformed());
        }
        let parse = |hex: &[u8]| {
            ObjectId::from_hex(hex).map_err(|_| ReceiveError::InvalidOid { value: show(hex) })
        };
        let old = parse(&command[..40])?;
        let new = parse(&command[41..81])?;
        let name_len = command.len() - 82;
        if name_len > self.limits.ref_name_max_bytes {
            return Err(ReceiveError::RefNameTooLong {
                len: name_len,
                max: self.limits.ref_name_max_bytes,
            });
        }
        self.commands_bytes += name_len;
        if self.commands_bytes > self.limits.commands_max_bytes {
            return Err(ReceiveError::CommandsTooLarge {
                max: self.limits.commands_max_bytes,
            });
        }
        let name = std::str::from_utf8(&command[82..]).map_err(|_| ReceiveError::NotUtf8 {
            what: "ref name",
            value: show(&command[82..]),
        })?;
        self.request.commands.push(RefUpdate {
            old,
            new,
            name: name.to_owned(),
        });
        Ok(())
    }

    fn option_line(&mut self, line: &[u8]) -> Result<(), ReceiveError> {
        if self.request.push_options.len() >= self.limits.push_options_max {
            return Err(ReceiveError::TooManyPushOptions {
                max: self.limits.push_options_max,
            });
        }
        self.options_bytes += line.len();
        if self.options_bytes > self.limits.push_options_max_bytes {
            return Err(ReceiveError::PushOptionsTooLarge {
                bytes: self.options_bytes,
                max: self.limits.push_options_max_bytes,
            });
        }
        let option = std::str::from_utf8(line).map_err(|_| ReceiveError::NotUtf8 {
            what: "push option",
            value: show(line),
        })?;
        self.request.push_options.push(option.to_owned());
        Ok(())
    }
}

/// Parse the header at the front of a push body in one call: `Ok(None)` if
/// `body` is only a prefix of the header, else the header and the offset
/// where the pack starts.
pub fn parse_push_request(
    body: &[u8],
    limits: PushLimits,
) -> Result<Option<(PushRequest, usize)>, ReceiveError> {
    match PushParser::new(limits).advance(body)? {
        PushStep::Done { consumed, request } => Ok(Some((request, consumed))),
        PushStep::NeedMore { .. } => Ok(None),
    }
}

/// Which report-status format to write.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReportStatusVersion {
    /// `report-status`.
    V1,
    /// `report-status-v2` (same lines when no `option` lines are needed,
    /// which is the case for every update this server applies: it never
    /// rewrites the ref a client named).
    V2,
}

/// The outcome for one ref in a report-status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RefReport<'a> {
    /// Ref name as the client sent it.
    pub name: &'a str,
    /// `Ok(())` for `ok <ref>`, `Err(reason)` for `ng <ref> <reason>`.
    pub result: Result<(), &'a str>,
}

/// Append a report-status: `unpack ok` or `unpack <error>`, one `ok`/`ng`
/// line per ref, a flush. With a side-band mode the whole report goes on
/// band 1 and a final flush follows, as git's receive-pack does. LFs in
/// reasons are replaced by spaces; overlong lines are cut.
pub fn write_report_status(
    out: &mut Vec<u8>,
    version: ReportStatusVersion,
    unpack: Result<(), &str>,
    refs: &[RefReport<'_>],
    sideband: Option<SidebandMode>,
) {
    // Both versions have the same ok/ng lines; v2 adds only `option` lines,
    // which this server never needs.
    let _ = version;
    let mut report = Vec::with_capacity(32 + refs.len() * 48);
    match unpack {
        Ok(()) => pktline::write_line(&mut report, &[b"unpack ok\n"]),
        Err(reason) => write_bounded_line(&mut report, &[b"unpack ", reason.as_bytes()]),
    }
    for r in refs {
        match r.result {
            Ok(()) => write_bounded_line(&mut report, &[b"ok ", r.name.as_bytes()]),
            Err(reason) => write_bounded_line(
                &mut report,
                &[b"ng ", r.name.as_bytes(), b" ", reason.as_bytes()],
            ),
        }
    }
    pktline::write_flush(&mut report);
    match sideband {
        Some(mode) => {
            sideband::write_frames(out, mode, Band::Data, &report);
            pktline::write_flush(out);
        }
        None => out.extend_from_slice(&report),
    }
}

/// A line from untrusted pieces: LF becomes space, the whole is cut to one
/// pkt, and one LF ends it.
fn write_bounded_line(out: &mut Vec<u8>, parts: &[&[u8]]) {
    let mut line: Vec<u8> = parts
        .iter()
        .flat_map(|p| p.iter())
        .map(|b| if *b == b'\n' { b' ' } else { *b })
        .take(pktline::PKT_DATA_MAX_BYTES - 1)
        .collect();
    line.push(b'\n');
    pktline::write_line(out, &[&line]);
}

/// Append a progress message for a push on band 2 (skip it if the client
/// asked for `quiet` or has no side-band).
pub fn write_push_progress(out: &mut Vec<u8>, mode: SidebandMode, msg: &str) {
    sideband::write_progress(out, mode, msg);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pktline::write_data;

    const OLD: &str = "d0866fc0007be5b80a17342b2ba7ecae69961b1c";
    const NEW: &str = "7e67dea971c2417c47ed0cec56e7f245cc9cf23e";
    const NULL: &str = "0000000000000000000000000000000000000000";

    fn push_body(lines: &[&[u8]], tail: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        for line in lines {
            if line.is_empty() {
                pktline::write_flush(&mut out);
            } else {
                write_data(&mut out, line).unwrap();
            }
        }
        out.extend_from_slice(tail);
        out
    }

    fn first(old: &str, new: &str, name: &str, caps: &str) -> Vec<u8> {
        format!("{old} {new} {name}\0{caps}").into_bytes()
    }

    #[test]
    fn update_with_pack() {
        let body = push_body(
            &[
                &first(
                    OLD,
                    NEW,
                    "refs/heads/main",
                    " report-status-v2 side-band-64k quiet object-format=sha1 agent=git/2.47.3",
                ),
                b"",
            ],
            b"PACK\0\0\0\x02",
        );
        let (req, offset) = parse_push_request(&body, PushLimits::default())
            .unwrap()
            .unwrap();
        assert_eq!(&body[offset..], b"PACK\0\0\0\x02");
        assert_eq!(req.commands.len(), 1);
        assert_eq!(req.commands[0].name, "refs/heads/main");
        assert!(!req.commands[0].is_create() && !req.commands[0].is_delete());
        assert!(req.caps.report_status_v2 && req.caps.side_band_64k && req.caps.quiet);
        assert_eq!(req.caps.agent.as_deref(), Some("git/2.47.3"));
        assert_eq!(
            req.caps.report_status_version(),
            Some(ReportStatusVersion::V2)
        );
        assert!(req.expects_pack());
    }

    #[test]
    fn options_and_shallow() {
        let shallow = format!("shallow {OLD}\n");
        let body = push_body(
            &[
                shallow.as_bytes(),
                &first(NULL, NEW, "refs/heads/topic", "report-status push-options"),
                format!("{NEW} {NULL} refs/heads/gone").as_bytes(),
                b"",
                b"ci.skip",
                b"merge_request.create",
                b"",
            ],
            b"PACK",
        );
        let (req, offset) = parse_push_request(&body, PushLimits::default())
            .unwrap()
            .unwrap();
        assert_eq!(&body[offset..], b"PACK");
        assert_eq!(req.shallows.len(), 1);
        assert_eq!(req.push_options, vec!["ci.skip", "merge_request.create"]);
        assert!(req.commands[0].is_create() && req.commands[1].is_delete());
    }

    #[test]
    fn incremental_byte_by_byte() {
        let body = push_body(
            &[
                &first(NULL, NEW, "refs/heads/a", "atomic push-options"),
                format!("{NULL} {NEW} refs/heads/b").as_bytes(),
                b"",
                b"opt",
                b"",
            ],
            b"PACKrest",
        );
        let mut parser = PushParser::default();
        let mut buffered: Vec<u8> = Vec::new();
        let mut fed = 0;
        let (request, pack_start) = loop {
            buffered.push(body[fed]);
            fed += 1;
            match parser.advance(&buffered).unwrap() {
                PushStep::NeedMore { consumed } => {
                    buffered.drain(..consumed);
                    assert!(parser.finish().is_err());
                }
                PushStep::Done { consumed, request } => {
                    break (request, fed - buffered.len() + consumed)
                }
            }
        };
        assert_eq!(&body[pack_start..], b"PACKrest");
        assert!(parser.finish().is_ok());
        assert_eq!(request.commands.len(), 2);
        assert!(request.caps.atomic);
        assert_eq!(request.push_options, vec!["opt"]);
        assert_eq!(parser.advance(b"x"), Err(ReceiveError::AlreadyDone));
    }

    #[test]
    fn empty_and_delete_only() {
        let (req, offset) = parse_push_request(b"0000", PushLimits::default())
            .unwrap()
            .unwrap();
        assert!(req.commands.is_empty() && !req.expects_pack());
        assert_eq!(offset, 4);
        let body = push_body(
            &[
                &first(NEW, NULL, "refs/heads/x", "report-status delete-refs"),
                b"",
            ],
            b"",
        );
        let (req, offset) = parse_push_request(&body, PushLimits::default())
            .unwrap()
            .unwrap();
        assert!(!req.expects_pack());
        assert_eq!(offset, body.len());
        assert_eq!(
            parse_push_request(&body[..body.len() - 1], PushLimits::default()),
            Ok(None)
        );
    }

    #[test]
    fn malformed_commands() {
        let limits = PushLimits::default();
        let parse = |line: &[u8]| parse_push_request(&push_body(&[line, b""], b""), limits);
        assert!(matches!(
            parse(b"short"),
            Err(ReceiveError::MalformedCommand { .. })
        ));
        assert!(matches!(
            parse(format!("{OLD} {NEW} ").as_bytes()),
            Err(ReceiveError::MalformedCommand { .. })
        ));
        assert!(matches!(
            parse(format!("{OLD}x{NEW} refs/heads/a").as_bytes()),
            Err(ReceiveError::MalformedCommand { .. })
        ));
        let bad = "z".repeat(40);
        assert!(matches!(
            parse(format!("{bad} {NEW} refs/heads/a").as_bytes()),
            Err(ReceiveError::InvalidOid { value }) if value == bad
        ));
        assert!(matches!(
            parse(b"shallow 1234"),
            Err(ReceiveError::InvalidShallow { .. })
        ));
        assert!(matches!(
            parse(&[format!("{OLD} {NEW} refs/heads/").as_bytes(), &[0xff]].concat()),
            Err(ReceiveError::NotUtf8 {
                what: "ref name",
                ..
            })
        ));
        assert!(matches!(
            parse(b"push-cert\0caps"),
            Err(ReceiveError::PushCertUnsupported)
        ));
        assert!(matches!(
            parse(&first(OLD, NEW, "refs/heads/a", "object-format=sha256")),
            Err(ReceiveError::UnsupportedObjectFormat { .. })
        ));
        assert!(matches!(
            parse_push_request(b"0001", limits),
            Err(ReceiveError::UnexpectedPkt { pkt: "delim", .. })
        ));
        assert!(matches!(
            parse_push_request(b"zzzz", limits),
            Err(ReceiveError::Pkt(PktError::BadLengthHex { .. }))
        ));
        let line = format!("{OLD} {NEW} refs/heads/a");
        let shallow_after = format!("shallow {OLD}");
        assert!(matches!(
            parse_push_request(
                &push_body(&[line.as_bytes(), shallow_after.as_bytes(), b""], b""),
                limits
            ),
            Err(ReceiveError::MalformedCommand { .. })
        ));
    }

    #[test]
    fn limits() {
        let line = format!("{OLD} {NEW} refs/heads/a");
        let limits = PushLimits {
            commands_max: 2,
            ..PushLimits::default()
        };
        let body = push_body(
            &[line.as_bytes(), line.as_bytes(), line.as_bytes(), b""],
            b"",
        );
        assert_eq!(
            parse_push_request(&body, limits),
            Err(ReceiveError::TooManyCommands { max: 2 })
        );
        let head = first(OLD, NEW, "refs/heads/a", "push-options");
        let limits = PushLimits {
            push_options_max: 1,
            ..PushLimits::default()
        };
        let body = push_body(&[&head, b"", b"a", b"b", b""], b"");
        assert_eq!(
            parse_push_request(&body, limits),
            Err(ReceiveError::TooManyPushOptions { max: 1 })
        );
        let limits = PushLimits {
            push_options_max_bytes: 3,
            ..PushLimits::default()
        };
        let body = push_body(&[&head, b"", b"ab", b"cd", b""], b"");
        assert_eq!(
            parse_push_request(&body, limits),
            Err(ReceiveError::PushOptionsTooLarge { bytes: 4, max: 3 })
        );
        let shallow = format!("shallow {OLD}");
        let limits = PushLimits {
            shallows_max: 1,
            ..PushLimits::default()
        };
        let body = push_body(&[shallow.as_bytes(), shallow.as_bytes(), b""], b"");
        assert_eq!(
            parse_push_request(&body, limits),
            Err(ReceiveError::TooManyShallows { max: 1 })
        );
        // Ref names: each at most the limit, all together at most theirs.
        let long = format!(
            "{OLD} {NEW} refs/heads/{}",
            "x".repeat(PUSH_REF_NAME_MAX_BYTES)
        );
        let body = push_body(&[long.as_bytes(), b""], b"");
        assert!(matches!(
            parse_push_request(&body, PushLimits::default()),
            Err(ReceiveError::RefNameTooLong {
                max: PUSH_REF_NAME_MAX_BYTES,
                ..
            })
        ));
        let limits = PushLimits {
            commands_max_bytes: 20,
            ..PushLimits::default()
        };
        let body = push_body(&[line.as_bytes(), line.as_bytes(), b""], b"");
        assert_eq!(
            parse_push_request(&body, limits),
            Err(ReceiveError::CommandsTooLarge { max: 20 })
        );
        let mut parser = PushParser::new(PushLimits::default());
        let body = push_body(&[line.as_bytes()], b"");
        assert!(matches!(
            parser.advance(&body),
            Ok(PushStep::NeedMore { .. })
        ));
        assert!(parser.retained_bytes() >= "refs/heads/a".len());
    }

    #[test]
    fn report_status_plain_and_sideband() {
        let refs = [
            RefReport {
                name: "refs/heads/main",
                result: Ok(()),
            },
            RefReport {
                name: "refs/heads/x",
                result: Err("non-fast-forward"),
            },
        ];
        let mut out = Vec::new();
        write_report_status(&mut out, ReportStatusVersion::V1, Ok(()), &refs, None);
        assert_eq!(
            out,
            b"000eunpack ok\n0017ok refs/heads/main\n0025ng refs/heads/x non-fast-forward\n0000"
        );
        out.clear();
        write_report_status(
            &mut out,
            ReportStatusVersion::V2,
            Err("index-pack\nfailed"),
            &[],
            Some(SidebandMode::SideBand64k),
        );
        assert_eq!(out, b"0026\x01001dunpack index-pack failed\n00000000");
    }
}
