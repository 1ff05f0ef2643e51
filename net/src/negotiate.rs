//! The server's half of want/have negotiation over a stateless transport
//! (gitprotocol-pack "Packfile Negotiation", gitprotocol-v2 `fetch`
//! output), and the shallow-update lines.
//!
//! Over smart HTTP every request carries the whole negotiation state (the
//! client resends its wants and every common have), so one round is a pure
//! function: which haves the server knows (a closure over the object store)
//! and whether it can stop (a closure over the common set: git's
//! `ok_to_give_up`, "every want has a common ancestor with the client").
//! The functions here reproduce the ACK/NAK sequence of git's
//! `upload-pack` for each mode and say whether the pack follows.

use guts_io::ObjectId;
use std::collections::HashSet;

use crate::pktline;
use crate::upload::{RequestEnd, UploadRequest};

/// How the v0/v1 client wants acknowledgements.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AckMode {
    /// No multi_ack: one `ACK <oid>` for the first common object.
    Single,
    /// `multi_ack`: `ACK <oid> continue` for each common object.
    MultiAck,
    /// `multi_ack_detailed`: `ACK <oid> common`, then `ACK <oid> ready`.
    MultiAckDetailed,
}

/// The outcome of one v0/v1 negotiation round.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct V0Negotiation {
    /// Pkt-lines to write, in order, before the pack (if any). Never framed
    /// in side-band: ACK/NAK go out as plain pkts.
    pub bytes: Vec<u8>,
    /// True if the pack follows in this response.
    pub pack_follows: bool,
    /// The haves the server knows, in request order: the client's and the
    /// server's common objects, from which the pack walk starts.
    pub common: Vec<ObjectId>,
}

/// Remembers `is_ready`'s answer while the common set does not change:
/// readiness depends only on the wants (fixed) and the common set.
struct Readiness<F> {
    is_ready: F,
    answered_for: Option<(usize, bool)>,
}

impl<F: FnMut(&[ObjectId]) -> bool> Readiness<F> {
    fn check(&mut self, common: &[ObjectId]) -> bool {
        // git's ok_to_give_up is false while nothing is common.
        if common.is_empty() {
            return false;
        }
        match self.answered_for {
            Some((len, answer)) if len == common.len() || answer => answer,
            _ => {
                let answer = (self.is_ready)(common);
                self.answered_for = Some((common.len(), answer));
                answer
            }
        }
    }
}

/// One v0/v1 negotiation round, as git's `get_common_commits` answers it
/// for a stateless client.
///
/// `haves` and `end` come from the request; `no_done` is the client's
/// `no-done` capability. `is_known` says whether the server has an object;
/// `is_ready` says, given the common objects so far, whether the server
/// can stop negotiating. For [`RequestEnd::AfterWants`] nothing is written
/// (only the caller's shallow update goes out).
pub fn negotiate_v0(
    haves: &[ObjectId],
    end: RequestEnd,
    mode: AckMode,
    no_done: bool,
    is_known: impl Fn(&ObjectId) -> bool,
    is_ready: impl FnMut(&[ObjectId]) -> bool,
) -> V0Negotiation {
    let mut out = Vec::new();
    let mut common: Vec<ObjectId> = Vec::new();
    let mut ready = Readiness {
        is_ready,
        answered_for: None,
    };
    if end == RequestEnd::AfterWants {
        return V0Negotiation {
            bytes: out,
            pack_follows: false,
            common,
        };
    }
    let mut last_common: Option<ObjectId> = None;
    let (mut got_common, mut got_other, mut sent_ready) = (false, false, false);
    // A set, not a scan of `common`: a request may carry a million haves.
    let mut seen: HashSet<ObjectId> = HashSet::new();
    for have in haves {
        if is_known(have) {
            got_common = true;
            last_common = Some(*have);
            let first = common.is_empty();
            if seen.insert(*have) {
                common.push(*have);
            }
            match mode {
                AckMode::MultiAckDetailed => ack(&mut out, have, b" common"),
                AckMode::MultiAck => ack(&mut out, have, b" continue"),
                AckMode::Single if first => ack(&mut out, have, b""),
                AckMode::Single => {}
            }
        } else {
            got_other = true;
            if mode != AckMode::Single && ready.check(&common) {
                if mode == AckMode::MultiAckDetailed {
                    sent_ready = true;
                    ack(&mut out, have, b" ready");
                } else {
                    ack(&mut out, have, b" continue");
                }
            }
        }
    }
    let pack_follows = match (end, last_common) {
        (RequestEnd::Done, Some(last)) => {
            if mode != AckMode::Single {
                ack(&mut out, &last, b"");
            }
            true
        }
        (RequestEnd::Done, None) => {
            nak(&mut out);
            true
        }
        (_, last) => {
            if let Some(last) = last {
                if mode == AckMode::MultiAckDetailed
                    && got_common
                    && !got_other
                    && ready.check(&common)
                {
                    sent_ready = true;
                    ack(&mut out, &last, b" ready");
                }
            }
            if common.is_empty() || mode != AckMode::Single {
                nak(&mut out);
            }
            match last {
                Some(last) if no_done && sent_ready => {
                    ack(&mut out, &last, b"");
                    true
                }
                _ => false,
            }
        }
    };
    V0Negotiation {
        bytes: out,
        pack_follows,
        common,
    }
}

/// [`negotiate_v0`] with the haves, end and capabilities of a request.
pub fn negotiate_v0_request(
    request: &UploadRequest,
    is_known: impl Fn(&ObjectId) -> bool,
    is_ready: impl FnMut(&[ObjectId]) -> bool,
) -> V0Negotiation {
    negotiate_v0(
        &request.haves,
        request.end,
        request.caps.ack_mode(),
        request.caps.no_done,
        is_known,
        is_ready,
    )
}

fn ack(out: &mut Vec<u8>, oid: &ObjectId, suffix: &[u8]) {
    pktline::write_line(out, &[b"ACK ", &oid.hex_bytes(), suffix, b"\n"]);
}

fn nak(out: &mut Vec<u8>) {
    pktline::write_line(out, &[b"NAK\n"]);
}

/// The outcome of a v2 `fetch` negotiation step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct V2Acknowledgments {
    /// The `acknowledgments` section and its closing delim (pack follows)
    /// or flush (round over); empty when the client sent `done`.
    pub bytes: Vec<u8>,
    /// True if the response goes on with the (optional) `shallow-info` and
    /// `wanted-refs` sections and the `packfile` section.
    pub pack_follows: bool,
    /// The haves the server knows, in request order.
    pub common: Vec<ObjectId>,
}

/// The v2 `fetch` acknowledgments, as git's `process_haves_and_send_acks`
/// writes them: with `done`, no section at all and the pack follows;
/// otherwise `acknowledgments`, then `ACK <oid>` for each known have (or
/// `NAK` if none), then `ready` and a delim if the server can stop (never
/// under `wait-for-done`), else a flush that ends the response.
pub fn acknowledge_v2(
    haves: &[ObjectId],
    done: bool,
    wait_for_done: bool,
    is_known: impl Fn(&ObjectId) -> bool,
    is_ready: impl FnOnce(&[ObjectId]) -> bool,
) -> V2Acknowledgments {
    let mut common = Vec::new();
    let mut seen: HashSet<ObjectId> = HashSet::new();
    for have in haves {
        if is_known(have) && seen.insert(*have) {
            common.push(*have);
        }
    }
    let mut out = Vec::new();
    if done {
        return V2Acknowledgments {
            bytes: out,
            pack_follows: true,
            common,
        };
    }
    pktline::write_line(&mut out, &[b"acknowledgments\n"]);
    if common.is_empty() {
        nak(&mut out);
    }
    for oid in &common {
        ack(&mut out, oid, b"");
    }
    let ready = !wait_for_done && !common.is_empty() && is_ready(&common);
    if ready {
        pktline::write_line(&mut out, &[b"ready\n"]);
        pktline::write_delim(&mut out);
    } else {
        pktline::write_flush(&mut out);
    }
    V2Acknowledgments {
        bytes: out,
        pack_follows: ready,
        common,
    }
}

/// Append the v0/v1 shallow update: `shallow <oid>` lines for the client's
/// new shallow boundary, `unshallow <oid>` lines for commits that are no
/// longer shallow, then a flush. Send it (only) when the request had
/// `deepen*` lines, before any ACK/NAK.
pub fn write_shallow_update_v0(out: &mut Vec<u8>, shallow: &[ObjectId], unshallow: &[ObjectId]) {
    write_shallow_lines(out, shallow, unshallow);
    pktline::write_flush(out);
}

/// Append the v2 `shallow-info` section and its delim (the packfile
/// section always follows it).
pub fn write_shallow_info(out: &mut Vec<u8>, shallow: &[ObjectId], unshallow: &[ObjectId]) {
    pktline::write_line(out, &[b"shallow-info\n"]);
    write_shallow_lines(out, shallow, unshallow);
    pktline::write_delim(out);
}

/// git writes these two without a trailing LF (`send_shallow`,
/// `send_unshallow`); clients accept both, we match git byte for byte.
fn write_shallow_lines(out: &mut Vec<u8>, shallow: &[ObjectId], unshallow: &[ObjectId]) {
    for oid in shallow {
        pktline::write_line(out, &[b"shallow ", &oid.hex_bytes()]);
    }
    for oid in unshallow {
        pktline::write_line(out, &[b"unshallow ", &oid.hex_bytes()]);
    }
}

/// Append the v2 `wanted-refs` section (answer to `want-ref`) and its
/// delim. Fails if a ref name is too long for one pkt.
pub fn write_wanted_refs(
    out: &mut Vec<u8>,
    refs: &[(ObjectId, &str)],
) -> Result<(), pktline::PktError> {
    pktline::write_line(out, &[b"wanted-refs\n"]);
    for (oid, name) in refs {
        pktline::write_data_parts(out, &[&oid.hex_bytes(), b" ", name.as_bytes(), b"\n"])?;
    }
    pktline::write_delim(out);
    Ok(())
}

/// Append the v2 `packfile` section header. The pack follows as band-1
/// side-band-64k frames (progress on band 2), then a flush.
pub fn write_packfile_header(out: &mut Vec<u8>) {
    pktline::write_line(out, &[b"packfile\n"]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn oid(n: u8) -> ObjectId {
        ObjectId::from_sha1([n; 20])
    }

    fn text(bytes: &[u8]) -> String {
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    fn hex(n: u8) -> String {
        oid(n).to_hex()
    }

    #[test]
    fn v0_detailed_round_without_done_not_ready() {
        let n = negotiate_v0(
            &[oid(1), oid(2), oid(3)],
            RequestEnd::Flush,
            AckMode::MultiAckDetailed,
            true,
            |o| *o == oid(2),
            |_| false,
        );
        assert_eq!(
            text(&n.bytes),
            format!("0038ACK {} common\n0008NAK\n", hex(2))
        );
        assert!(!n.pack_follows);
        assert_eq!(n.common, vec![oid(2)]);
    }

    #[test]
    fn v0_detailed_ready_on_unknown_have_with_no_done() {
        let mut calls = 0;
        let n = negotiate_v0(
            &[oid(1), oid(2), oid(3), oid(4)],
            RequestEnd::Flush,
            AckMode::MultiAckDetailed,
            true,
            |o| *o == oid(1),
            |common| {
                calls += 1;
                common == [oid(1)]
            },
        );
        assert_eq!(
            text(&n.bytes),
            format!(
                "0038ACK {} common\n0037ACK {} ready\n0037ACK {} ready\n0037ACK {} ready\n0008NAK\n0031ACK {}\n",
                hex(1),
                hex(2),
                hex(3),
                hex(4),
                hex(1)
            )
        );
        assert!(n.pack_follows);
        assert_eq!(
            calls, 1,
            "readiness is cached while the common set is unchanged"
        );
    }

    #[test]
    fn v0_detailed_ready_at_flush_without_no_done() {
        let n = negotiate_v0(
            &[oid(1)],
            RequestEnd::Flush,
            AckMode::MultiAckDetailed,
            false,
            |_| true,
            |_| true,
        );
        assert_eq!(
            text(&n.bytes),
            format!(
                "0038ACK {} common\n0037ACK {} ready\n0008NAK\n",
                hex(1),
                hex(1)
            )
        );
        assert!(
            !n.pack_follows,
            "without no-done the client must still send done"
        );
    }

    #[test]
    fn v0_done_paths() {
        let n = negotiate_v0(
            &[],
            RequestEnd::Done,
            AckMode::MultiAckDetailed,
            true,
            |_| true,
            |_| true,
        );
        assert_eq!(n.bytes, b"0008NAK\n");
        assert!(n.pack_follows);
        let n = negotiate_v0(
            &[oid(5), oid(6)],
            RequestEnd::Done,
            AckMode::MultiAck,
            false,
            |o| *o == oid(5),
            |_| false,
        );
        assert_eq!(
            text(&n.bytes),
            format!("003aACK {} continue\n0031ACK {}\n", hex(5), hex(5))
        );
        assert!(n.pack_follows);
        let n = negotiate_v0(
            &[oid(5), oid(6)],
            RequestEnd::Done,
            AckMode::Single,
            false,
            |_| true,
            |_| true,
        );
        assert_eq!(text(&n.bytes), format!("0031ACK {}\n", hex(5)));
        assert_eq!(n.common, vec![oid(5), oid(6)]);
        let n = negotiate_v0(
            &[oid(7)],
            RequestEnd::Done,
            AckMode::Single,
            false,
            |_| false,
            |_| true,
        );
        assert_eq!(n.bytes, b"0008NAK\n");
    }

    #[test]
    fn v0_single_round() {
        let n = negotiate_v0(
            &[oid(1), oid(2)],
            RequestEnd::Flush,
            AckMode::Single,
            false,
            |_| true,
            |_| true,
        );
        assert_eq!(text(&n.bytes), format!("0031ACK {}\n", hex(1)));
        let n = negotiate_v0(
            &[oid(1)],
            RequestEnd::Flush,
            AckMode::Single,
            false,
            |_| false,
            |_| true,
        );
        assert_eq!(n.bytes, b"0008NAK\n");
        assert!(!n.pack_follows);
    }

    #[test]
    fn v0_multi_ack_continue_when_ready() {
        let n = negotiate_v0(
            &[oid(1), oid(2)],
            RequestEnd::Flush,
            AckMode::MultiAck,
            true,
            |o| *o == oid(1),
            |_| true,
        );
        assert_eq!(
            text(&n.bytes),
            format!(
                "003aACK {} continue\n003aACK {} continue\n0008NAK\n",
                hex(1),
                hex(2)
            )
        );
        assert!(!n.pack_follows);
    }

    #[test]
    fn v0_after_wants_is_silent() {
        let n = negotiate_v0(
            &[],
            RequestEnd::AfterWants,
            AckMode::MultiAckDetailed,
            true,
            |_| true,
            |_| true,
        );
        assert!(n.bytes.is_empty() && !n.pack_follows);
    }

    #[test]
    fn v2_acks() {
        let a = acknowledge_v2(
            &[oid(1), oid(2)],
            false,
            false,
            |o| *o == oid(2),
            |c| c == [oid(2)],
        );
        assert_eq!(
            text(&a.bytes),
            format!("0014acknowledgments\n0031ACK {}\n000aready\n0001", hex(2))
        );
        assert!(a.pack_follows);
        let a = acknowledge_v2(&[oid(1)], false, false, |_| false, |_| true);
        assert_eq!(a.bytes, b"0014acknowledgments\n0008NAK\n0000");
        assert!(!a.pack_follows);
        let a = acknowledge_v2(&[oid(1)], false, true, |_| true, |_| true);
        assert_eq!(
            text(&a.bytes),
            format!("0014acknowledgments\n0031ACK {}\n0000", hex(1))
        );
        assert!(!a.pack_follows, "wait-for-done never sends ready");
        let a = acknowledge_v2(&[oid(1)], true, false, |_| true, |_| false);
        assert!(a.bytes.is_empty() && a.pack_follows);
        assert_eq!(a.common, vec![oid(1)]);
    }

    #[test]
    fn shallow_sections() {
        let mut out = Vec::new();
        write_shallow_update_v0(&mut out, &[oid(1)], &[oid(2)]);
        assert_eq!(
            text(&out),
            format!("0034shallow {}0036unshallow {}0000", hex(1), hex(2))
        );
        out.clear();
        write_shallow_info(&mut out, &[oid(1)], &[]);
        write_wanted_refs(&mut out, &[(oid(3), "refs/heads/main")]).unwrap();
        write_packfile_header(&mut out);
        assert_eq!(
            text(&out),
            format!(
                "0011shallow-info\n0034shallow {}00010010wanted-refs\n003d{} refs/heads/main\n0001000dpackfile\n",
                hex(1),
                hex(3)
            )
        );
    }
}
