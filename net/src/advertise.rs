//! Ref and capability advertisements (gitprotocol-pack "Reference
//! Discovery", gitprotocol-http "Smart Clients", gitprotocol-v2
//! "Capability Advertisement" and `ls-refs`), and the `Git-Protocol`
//! header that selects the protocol version.
//!
//! The smart HTTP answer to `GET info/refs?service=<svc>` is, for protocol
//! v0 and v1, a `# service=<svc>` pkt and a flush, then (v1 only) a
//! `version 1` pkt, then the refs with capabilities on the first line, then
//! a flush. For protocol v2 it is only the capability advertisement —
//! `git http-backend` sends no service header then, and clients expect
//! none.

use guts_io::ObjectId;

use crate::pktline::{self, PktError};
use crate::upload::LsRefsRequest;

/// The agent string this server announces by default: `guts/<version>`.
pub const DEFAULT_AGENT: &str = concat!("guts/", env!("CARGO_PKG_VERSION"));

/// The two smart HTTP services.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Service {
    /// `git-upload-pack`: clone and fetch.
    UploadPack,
    /// `git-receive-pack`: push.
    ReceivePack,
}

impl Service {
    /// The service name as it appears in URLs and headers.
    pub const fn name(self) -> &'static str {
        match self {
            Service::UploadPack => "git-upload-pack",
            Service::ReceivePack => "git-receive-pack",
        }
    }

    /// The service for a `?service=` value or URL path component.
    pub fn from_name(name: &str) -> Option<Service> {
        match name {
            "git-upload-pack" => Some(Service::UploadPack),
            "git-receive-pack" => Some(Service::ReceivePack),
            _ => None,
        }
    }

    /// Content-Type of the `info/refs` answer.
    pub const fn advertisement_content_type(self) -> &'static str {
        match self {
            Service::UploadPack => "application/x-git-upload-pack-advertisement",
            Service::ReceivePack => "application/x-git-receive-pack-advertisement",
        }
    }

    /// Content-Type a client must send on the POST.
    pub const fn request_content_type(self) -> &'static str {
        match self {
            Service::UploadPack => "application/x-git-upload-pack-request",
            Service::ReceivePack => "application/x-git-receive-pack-request",
        }
    }

    /// Content-Type of the POST answer.
    pub const fn result_content_type(self) -> &'static str {
        match self {
            Service::UploadPack => "application/x-git-upload-pack-result",
            Service::ReceivePack => "application/x-git-receive-pack-result",
        }
    }
}

/// A git wire protocol version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ProtocolVersion {
    /// The original protocol.
    V0,
    /// v0 with a `version 1` line first.
    V1,
    /// Protocol v2 (upload-pack only; receive-pack answers v2 as v0).
    V2,
}

impl ProtocolVersion {
    /// The version a `Git-Protocol` header (or `GIT_PROTOCOL` value) asks
    /// for: colon-separated keys, the highest `version=<n>` known wins, as
    /// in git's `determine_protocol_version_server`. Unknown versions and
    /// other keys are ignored; no header means v0.
    pub fn from_git_protocol_header(value: &[u8]) -> ProtocolVersion {
        value
            .split(|b| *b == b':')
            .filter_map(|key| match key.strip_prefix(b"version=")? {
                b"0" => Some(ProtocolVersion::V0),
                b"1" => Some(ProtocolVersion::V1),
                b"2" => Some(ProtocolVersion::V2),
                _ => None,
            })
            .max()
            .unwrap_or(ProtocolVersion::V0)
    }

    /// The version a service actually speaks when asked for `self`:
    /// receive-pack has no v2 and answers in v0, as git does.
    pub fn for_service(self, service: Service) -> ProtocolVersion {
        match (service, self) {
            (Service::ReceivePack, ProtocolVersion::V2) => ProtocolVersion::V0,
            (_, v) => v,
        }
    }
}

/// Longest agent value written; longer ones are cut (an agent is a short
/// `name/version`, and every capability line must fit one pkt).
pub const AGENT_MAX_BYTES: usize = 256;

/// Make an agent value safe for a space-separated capability list: every
/// byte that is not printable ASCII, and every space, becomes `.` (git's
/// `git_user_agent_sanitized`); the result is cut to [`AGENT_MAX_BYTES`].
pub fn sanitize_agent(agent: &str) -> String {
    agent
        .bytes()
        .take(AGENT_MAX_BYTES)
        .map(|b| if b.is_ascii_graphic() { b as char } else { '.' })
        .collect()
}

/// The v0/v1 upload-pack capability list. `head_symref` is HEAD's target
/// (`refs/heads/main`) when HEAD resolves; pass `None` for an unborn HEAD,
/// which git does not announce.
pub fn upload_pack_capabilities(agent: &str, head_symref: Option<&str>) -> String {
    let mut caps = String::from(
        "multi_ack thin-pack side-band side-band-64k ofs-delta shallow deepen-since \
         deepen-not deepen-relative no-progress include-tag multi_ack_detailed \
         allow-tip-sha1-in-want allow-reachable-sha1-in-want no-done",
    );
    if let Some(target) = head_symref {
        caps.push_str(" symref=HEAD:");
        caps.push_str(target);
    }
    caps.push_str(" filter object-format=sha1 agent=");
    caps.push_str(&sanitize_agent(agent));
    caps
}

/// The receive-pack capability list; `push_options` adds `push-options`.
pub fn receive_pack_capabilities(agent: &str, push_options: bool) -> String {
    let mut caps = String::from(
        "report-status report-status-v2 delete-refs side-band-64k quiet atomic ofs-delta",
    );
    if push_options {
        caps.push_str(" push-options");
    }
    caps.push_str(" object-format=sha1 agent=");
    caps.push_str(&sanitize_agent(agent));
    caps
}

/// One ref in a v0/v1 advertisement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AdvertisedRef<'a> {
    /// Full ref name (`refs/heads/main`).
    pub name: &'a str,
    /// The object the ref points at.
    pub oid: ObjectId,
    /// For an annotated tag, the object it peels to; advertised as a
    /// `<name>^{}` line right after the ref (upload-pack only; pass `None`
    /// for receive-pack, which git does not peel).
    pub peeled: Option<ObjectId>,
}

/// Append the `# service=<svc>` pkt and its flush.
pub fn write_service_header(out: &mut Vec<u8>, service: Service) {
    pktline::write_line(out, &[b"# service=", service.name().as_bytes(), b"\n"]);
    pktline::write_flush(out);
}

/// Append a v0/v1 ref advertisement (without the service header): the
/// `version 1` line if `version` is v1, HEAD first if `head` is given, the
/// refs in the caller's order (git sorts them by name), capabilities on the
/// first line, and a closing flush. With no HEAD and no refs the
/// capabilities go on a `capabilities^{}` line with the null id.
///
/// Fails if a ref name is too long for one pkt.
pub fn write_v0_refs(
    out: &mut Vec<u8>,
    version: ProtocolVersion,
    head: Option<ObjectId>,
    refs: &[AdvertisedRef<'_>],
    capabilities: &str,
) -> Result<(), PktError> {
    let mut writer = V0RefsWriter::start(out, version, capabilities);
    if let Some(head) = head {
        writer.head(out, &head)?;
    }
    for r in refs {
        writer.write_ref(out, r)?;
    }
    writer.finish(out)
}

/// A v0/v1 ref advertisement written a piece at a time, so that a caller
/// can stream a large one (HEAD, then refs, then [`V0RefsWriter::finish`])
/// instead of building it whole. The bytes are those of [`write_v0_refs`].
#[derive(Debug)]
pub struct V0RefsWriter {
    /// The capabilities, until the first line carries them.
    caps: Option<Vec<u8>>,
}

impl V0RefsWriter {
    /// Begin: the `version 1` line if `version` is v1.
    pub fn start(out: &mut Vec<u8>, version: ProtocolVersion, capabilities: &str) -> Self {
        if version == ProtocolVersion::V1 {
            pktline::write_line(out, &[b"version 1\n"]);
        }
        V0RefsWriter {
            caps: Some(capabilities.as_bytes().to_vec()),
        }
    }

    fn line(
        &mut self,
        out: &mut Vec<u8>,
        oid: &ObjectId,
        name: &[u8],
        suffix: &[u8],
    ) -> Result<(), PktError> {
        let hex = oid.hex_bytes();
        match self.caps.take() {
            Some(caps) => {
                pktline::write_data_parts(out, &[&hex, b" ", name, suffix, b"\0", &caps, b"\n"])
            }
            None => pktline::write_data_parts(out, &[&hex, b" ", name, suffix, b"\n"]),
        }
    }

    /// The `HEAD` line (call first, if at all).
    pub fn head(&mut self, out: &mut Vec<u8>, head: &ObjectId) -> Result<(), PktError> {
        self.line(out, head, b"HEAD", b"")
    }

    /// One ref, and its peeled line if it has one. Fails if the name is
    /// too long for one pkt.
    pub fn write_ref(&mut self, out: &mut Vec<u8>, r: &AdvertisedRef<'_>) -> Result<(), PktError> {
        self.line(out, &r.oid, r.name.as_bytes(), b"")?;
        if let Some(peeled) = r.peeled {
            self.line(out, &peeled, r.name.as_bytes(), b"^{}")?;
        }
        Ok(())
    }

    /// The `capabilities^{}` line if nothing carried them yet, and the flush.
    pub fn finish(mut self, out: &mut Vec<u8>) -> Result<(), PktError> {
        if self.caps.is_some() {
            self.line(out, &ObjectId::NULL_SHA1, b"capabilities^{}", b"")?;
        }
        pktline::write_flush(out);
        Ok(())
    }
}

/// The whole body of a v0/v1 `info/refs` answer: service header, then
/// [`write_v0_refs`].
pub fn v0_advertisement(
    service: Service,
    version: ProtocolVersion,
    head: Option<ObjectId>,
    refs: &[AdvertisedRef<'_>],
    capabilities: &str,
) -> Result<Vec<u8>, PktError> {
    let mut out = Vec::with_capacity(256 + refs.len() * 64);
    write_service_header(&mut out, service);
    write_v0_refs(&mut out, version, head, refs, capabilities)?;
    Ok(out)
}

/// What a protocol v2 capability advertisement announces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct V2Capabilities {
    /// Agent value (sanitized when written).
    pub agent: String,
    /// `ls-refs=unborn` rather than plain `ls-refs`.
    pub ls_refs_unborn: bool,
    /// `fetch` feature `shallow`.
    pub fetch_shallow: bool,
    /// `fetch` feature `wait-for-done`.
    pub fetch_wait_for_done: bool,
    /// `fetch` feature `filter`.
    pub fetch_filter: bool,
    /// `server-option`.
    pub server_option: bool,
    /// `object-info` (the server must then implement the command).
    pub object_info: bool,
    /// `bundle-uri`: the `bundle-uri` command is offered (the repository
    /// has a bundle to point clients at).
    pub bundle_uri: bool,
}

impl Default for V2Capabilities {
    fn default() -> Self {
        V2Capabilities {
            agent: DEFAULT_AGENT.to_owned(),
            ls_refs_unborn: true,
            fetch_shallow: true,
            fetch_wait_for_done: true,
            fetch_filter: true,
            server_option: true,
            object_info: false,
            bundle_uri: false,
        }
    }
}

/// Append a v2 capability advertisement: `version 2`, one line per
/// capability, flush. This is the whole `info/refs` body for v2.
pub fn write_v2_capabilities(out: &mut Vec<u8>, caps: &V2Capabilities) {
    pktline::write_line(out, &[b"version 2\n"]);
    let agent = sanitize_agent(&caps.agent);
    pktline::write_line(out, &[b"agent=", agent.as_bytes(), b"\n"]);
    let ls_refs: &[u8] = if caps.ls_refs_unborn {
        b"ls-refs=unborn\n"
    } else {
        b"ls-refs\n"
    };
    pktline::write_line(out, &[ls_refs]);
    let mut fetch = String::from("fetch");
    let features = [
        (caps.fetch_shallow, "shallow"),
        (caps.fetch_wait_for_done, "wait-for-done"),
        (caps.fetch_filter, "filter"),
    ];
    let mut first = true;
    for (_, name) in features.iter().filter(|(on, _)| *on) {
        fetch.push(if first { '=' } else { ' ' });
        fetch.push_str(name);
        first = false;
    }
    fetch.push('\n');
    pktline::write_line(out, &[fetch.as_bytes()]);
    if caps.server_option {
        pktline::write_line(out, &[b"server-option\n"]);
    }
    pktline::write_line(out, &[b"object-format=sha1\n"]);
    if caps.object_info {
        pktline::write_line(out, &[b"object-info\n"]);
    }
    if caps.bundle_uri {
        pktline::write_line(out, &[b"bundle-uri\n"]);
    }
    pktline::write_flush(out);
}

/// One ref for a v2 `ls-refs` answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LsRefsEntry<'a> {
    /// Full ref name, or `HEAD`.
    pub name: &'a str,
    /// The object; `None` for an unborn ref (only HEAD can be unborn).
    pub oid: Option<ObjectId>,
    /// For a symbolic ref, its target (`refs/heads/main`).
    pub symref_target: Option<&'a str>,
    /// For an annotated tag, the object it peels to.
    pub peeled: Option<ObjectId>,
}

/// Append the `ls-refs` answer: the entries whose names match the
/// request's prefixes, each `<oid> <name>[ symref-target:<t>][
/// peeled:<oid>]` as the request's `symrefs`/`peel` ask, an unborn entry as
/// `unborn <name>[ symref-target:<t>]` only if `unborn` was asked, then a
/// flush. Put HEAD first, as git does.
pub fn write_ls_refs(
    out: &mut Vec<u8>,
    request: &LsRefsRequest,
    entries: &[LsRefsEntry<'_>],
) -> Result<(), PktError> {
    let prefixes = request.prefixes();
    for entry in entries {
        if prefixes.matches(entry.name) {
            write_ls_refs_entry(out, request, entry)?;
        }
    }
    pktline::write_flush(out);
    Ok(())
}

/// Append one `ls-refs` line for `entry` as the request asks (nothing for
/// an unborn entry unless `unborn` was asked). The caller matches the
/// prefixes ([`LsRefsRequest::prefixes`]) and ends the answer with a flush;
/// this is the streaming form of [`write_ls_refs`].
pub fn write_ls_refs_entry(
    out: &mut Vec<u8>,
    request: &LsRefsRequest,
    entry: &LsRefsEntry<'_>,
) -> Result<(), PktError> {
    let hex;
    let head: &[u8] = match &entry.oid {
        Some(oid) => {
            hex = oid.hex_bytes();
            &hex
        }
        None if request.unborn => b"unborn",
        None => return Ok(()),
    };
    let (symref_key, symref): (&[u8], &[u8]) = match entry.symref_target {
        Some(target) if request.symrefs => (b" symref-target:", target.as_bytes()),
        _ => (b"", b""),
    };
    let peeled_hex;
    let (peeled_key, peeled): (&[u8], &[u8]) = match entry.peeled {
        Some(peeled) if request.peel && entry.oid.is_some() => {
            peeled_hex = peeled.hex_bytes();
            (b" peeled:", &peeled_hex)
        }
        _ => (b"", b""),
    };
    pktline::write_data_parts(
        out,
        &[
            head,
            b" ",
            entry.name.as_bytes(),
            symref_key,
            symref,
            peeled_key,
            peeled,
            b"\n",
        ],
    )
}

/// One bundle of a `bundle-uri` answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BundleListEntry<'a> {
    /// The bundle's id: the `<id>` of `bundle.<id>.uri` (letters, digits
    /// and `-`, as a config subsection git reads back).
    pub id: &'a str,
    /// Where to get it: an absolute URL, or one relative to the remote's
    /// URL (git resolves it with `relative_url` against the URL it cloned).
    pub uri: &'a str,
}

/// Why a bundle list could not be written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BundleListError {
    /// An entry too long for one pkt.
    #[error(transparent)]
    Pkt(#[from] PktError),
    /// An id or URI git would not read back as written.
    #[error("bundle id {id:?} or URI {uri:?} cannot be written in a bundle list")]
    Invalid {
        /// The id.
        id: String,
        /// The URI.
        uri: String,
    },
}

/// Append a `bundle-uri` answer (gitprotocol-v2 "bundle-uri", the bundle
/// list format of gitformat-bundle): `key=value` lines — `bundle.version=1`,
/// `bundle.mode=all`, then `bundle.<id>.uri=<uri>` per bundle — and a
/// flush. No bundles: only the flush (git then fetches as usual).
///
/// Fails if an entry is too long for one pkt, or if an id or a URI holds
/// a byte git would read differently (a line break, a space, `=` in an id).
pub fn write_bundle_list(
    out: &mut Vec<u8>,
    bundles: &[BundleListEntry<'_>],
) -> Result<(), BundleListError> {
    if !bundles.is_empty() {
        let mut body = Vec::new();
        pktline::write_data_parts(&mut body, &[b"bundle.version=1\n"])?;
        pktline::write_data_parts(&mut body, &[b"bundle.mode=all\n"])?;
        for b in bundles {
            let id_ok =
                !b.id.is_empty() && b.id.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-');
            let uri_ok = !b.uri.is_empty() && b.uri.bytes().all(|c| c.is_ascii_graphic());
            if !id_ok || !uri_ok {
                return Err(BundleListError::Invalid {
                    id: b.id.to_owned(),
                    uri: b.uri.to_owned(),
                });
            }
            pktline::write_data_parts(
                &mut body,
                &[
                    b"bundle.",
                    b.id.as_bytes(),
                    b".uri=",
                    b.uri.as_bytes(),
                    b"\n",
                ],
            )?;
        }
        out.extend_from_slice(&body);
    }
    pktline::write_flush(out);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn oid(hex: &str) -> ObjectId {
        ObjectId::from_hex(hex.as_bytes()).unwrap()
    }

    #[test]
    fn git_protocol_header() {
        use ProtocolVersion::*;
        assert_eq!(ProtocolVersion::from_git_protocol_header(b""), V0);
        assert_eq!(ProtocolVersion::from_git_protocol_header(b"version=2"), V2);
        assert_eq!(ProtocolVersion::from_git_protocol_header(b"version=1"), V1);
        assert_eq!(
            ProtocolVersion::from_git_protocol_header(b"foo=bar:version=2"),
            V2
        );
        assert_eq!(
            ProtocolVersion::from_git_protocol_header(b"version=2:version=1"),
            V2
        );
        assert_eq!(ProtocolVersion::from_git_protocol_header(b"version=3"), V0);
        assert_eq!(ProtocolVersion::from_git_protocol_header(b"version=22"), V0);
        assert_eq!(V2.for_service(Service::ReceivePack), V0);
        assert_eq!(V1.for_service(Service::ReceivePack), V1);
        assert_eq!(V2.for_service(Service::UploadPack), V2);
    }

    #[test]
    fn agent_is_sanitized() {
        assert_eq!(sanitize_agent("guts/1.0 (linux)\n"), "guts/1.0.(linux).");
        assert!(upload_pack_capabilities("a b", None).ends_with(" agent=a.b"));
    }

    #[test]
    fn service_names() {
        assert_eq!(
            Service::from_name("git-upload-pack"),
            Some(Service::UploadPack)
        );
        assert_eq!(
            Service::from_name("git-receive-pack"),
            Some(Service::ReceivePack)
        );
        assert_eq!(Service::from_name("git-upload-archive"), None);
        assert_eq!(
            Service::ReceivePack.result_content_type(),
            "application/x-git-receive-pack-result"
        );
    }

    #[test]
    fn overlong_ref_name_is_an_error() {
        let name = "r".repeat(70_000);
        let refs = [AdvertisedRef {
            name: &name,
            oid: ObjectId::NULL_SHA1,
            peeled: None,
        }];
        let mut out = Vec::new();
        assert!(matches!(
            write_v0_refs(&mut out, ProtocolVersion::V0, None, &refs, "x"),
            Err(PktError::PayloadTooLong { .. })
        ));
    }

    #[test]
    fn ls_refs_flags_and_prefixes() {
        let a = oid("eaaaea727c972a53998f902348cb6ecaf4493fc9");
        let t = oid("e4bddc7140eb6e44c2c0106fc804556417dce6fc");
        let p = oid("e87eb73bdd3334ae3375f6f2397f45da86c3620f");
        let entries = [
            LsRefsEntry {
                name: "HEAD",
                oid: Some(a),
                symref_target: Some("refs/heads/main"),
                peeled: None,
            },
            LsRefsEntry {
                name: "refs/heads/main",
                oid: Some(a),
                symref_target: None,
                peeled: None,
            },
            LsRefsEntry {
                name: "refs/tags/v1",
                oid: Some(t),
                symref_target: None,
                peeled: Some(p),
            },
        ];
        let mut out = Vec::new();
        let plain = LsRefsRequest {
            ref_prefixes: vec!["refs/tags/".into()],
            ..Default::default()
        };
        write_ls_refs(&mut out, &plain, &entries).unwrap();
        assert_eq!(
            out,
            b"003ae4bddc7140eb6e44c2c0106fc804556417dce6fc refs/tags/v1\n0000"
        );
        let unborn = [LsRefsEntry {
            name: "HEAD",
            oid: None,
            symref_target: Some("refs/heads/main"),
            peeled: None,
        }];
        out.clear();
        write_ls_refs(&mut out, &LsRefsRequest::default(), &unborn).unwrap();
        assert_eq!(out, b"0000");
        out.clear();
        let req = LsRefsRequest {
            unborn: true,
            peel: true,
            ..Default::default()
        };
        write_ls_refs(&mut out, &req, &unborn).unwrap();
        assert_eq!(out, b"0010unborn HEAD\n0000");
    }

    #[test]
    fn v2_caps_minimal() {
        let caps = V2Capabilities {
            agent: "guts/9".into(),
            ls_refs_unborn: false,
            fetch_shallow: false,
            fetch_wait_for_done: false,
            fetch_filter: false,
            server_option: false,
            object_info: true,
            bundle_uri: true,
        };
        let mut out = Vec::new();
        write_v2_capabilities(&mut out, &caps);
        assert_eq!(
            out,
            b"000eversion 2\n0011agent=guts/9\n000cls-refs\n000afetch\n0017object-format=sha1\n0010object-info\n000fbundle-uri\n0000"
        );
    }
    #[test]
    fn bundle_list() {
        let mut out = Vec::new();
        write_bundle_list(&mut out, &[]).unwrap();
        assert_eq!(out, b"0000");
        out.clear();
        let entry = BundleListEntry {
            id: "b7-abc",
            uri: "bundles/7-abc.bundle",
        };
        write_bundle_list(&mut out, &[entry]).unwrap();
        assert_eq!(
            out,
            b"0015bundle.version=1\n0014bundle.mode=all\n002bbundle.b7-abc.uri=bundles/7-abc.bundle\n0000"
        );
        for bad in [
            BundleListEntry {
                id: "a.b",
                uri: "x",
            },
            BundleListEntry {
                id: "a=b",
                uri: "x",
            },
            BundleListEntry { id: "", uri: "x" },
            BundleListEntry {
                id: "a",
                uri: "x y",
            },
            BundleListEntry {
                id: "a",
                uri: "x\ny",
            },
            BundleListEntry { id: "a", uri: "" },
        ] {
            let mut out = Vec::new();
            assert!(write_bundle_list(&mut out, &[bad]).is_err(), "{bad:?}");
            assert!(out.is_empty(), "{bad:?} wrote {out:?}");
        }
    }
}
