"""Protocol paths that git's documents allow and non-C-git clients take, sent
by hand over raw sockets to a running guts-node: `side-band` (1000-byte
packets), v0 fetches without multi_ack / side-band / trailing newlines,
HTTP/1.0, `Expect: 100-continue`, dumb-protocol probes, report-status
without side-band, delete-only pushes with and without an empty pack.
Results are checked with the C git client."""

import os
import socket
import subprocess
import sys
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from interop_common import ZERO, Git, check, corpus_mirror, create_repo, die, parse_args, split_api, step

# Credentials sent with every request (the node's admin, from --api).
AUTH_HEADERS = []


def pkt(data):
    if isinstance(data, str):
        data = data.encode()
    return b"%04x" % (len(data) + 4) + data


def pkts(raw):
    """Split a pkt-line stream: list of bytes (None for flush/delim)."""
    out = []
    while len(raw) >= 4:
        n = int(raw[:4], 16)
        if n < 4:
            out.append(None)
            raw = raw[4:]
            continue
        out.append(raw[4:n])
        raw = raw[n:]
    check(not raw, f"trailing garbage in pkt-line stream: {raw[:40]!r}")
    return out


def request(addr, method, path, headers=(), body=b"", version="HTTP/1.1", expect_continue=False):
    """One request on a fresh connection; returns (status, headers dict, body)."""
    s = socket.create_connection(addr, timeout=30)
    head = f"{method} {path} {version}\r\nHost: {addr[0]}:{addr[1]}\r\n"
    if version == "HTTP/1.1":
        head += "Connection: close\r\n"
    if method == "POST":
        head += f"Content-Length: {len(body)}\r\n"
    if expect_continue:
        head += "Expect: 100-continue\r\n"
    for k, v in list(headers) + AUTH_HEADERS:
        head += f"{k}: {v}\r\n"
    s.sendall((head + "\r\n").encode())
    buf = b""
    if expect_continue:
        while b"\r\n\r\n" not in buf:
            chunk = s.recv(65536)
            check(chunk, "connection closed before 100 Continue")
            buf += chunk
        line = buf.split(b"\r\n", 1)[0]
        check(b" 100 " in line + b" ", f"expected 100 Continue, got {line!r}")
        buf = buf.split(b"\r\n\r\n", 1)[1]
    s.sendall(body)
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        buf += chunk
    s.close()
    check(b"\r\n\r\n" in buf, f"no HTTP response head: {buf[:200]!r}")
    head, rest = buf.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    hdrs = {}
    for l in lines[1:]:
        k, v = l.split(":", 1)
        hdrs[k.strip().lower()] = v.strip()
    if hdrs.get("transfer-encoding", "").lower() == "chunked":
        check(version == "HTTP/1.1", "chunked response to an HTTP/1.0 request")
        out = b""
        while True:
            size_line, rest = rest.split(b"\r\n", 1)
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                break
            out += rest[:size]
            rest = rest[size + 2 :]
        rest = out
    elif "content-length" in hdrs:
        check(len(rest) == int(hdrs["content-length"]), "body length differs from Content-Length")
    return status, hdrs, rest


def index_pack(git, scratch, pack, label):
    """Index `pack` in scratch repository; returns its object count."""
    check(pack[:4] == b"PACK", f"{label}: no pack: {pack[:40]!r}")
    out = subprocess.run(["git", "index-pack", "--stdin", "--fix-thin", "--strict"], cwd=scratch, env=git.env, input=pack, capture_output=True)
    check(out.returncode == 0, f"{label}: index-pack failed: {out.stderr.decode(errors='replace')}")
    return int.from_bytes(pack[8:12], "big")


def main():
    a = parse_args()
    git = Git(a.work)
    u = urllib.parse.urlparse(a.api)
    addr = (u.hostname, u.port)
    auth = split_api(a.api)[1]
    if auth:
        AUTH_HEADERS.append(("Authorization", auth))
    corpus = corpus_mirror(git, a.corpus, "corpus-raw.git")
    corpus_refs = git.refs(corpus)
    url = create_repo(a.api, a.owner, "raw")
    base = f"/git/{a.owner}/raw.git"
    git.run(corpus, "push", "--quiet", "--mirror", url)
    git.check_server(url, corpus_refs, "raw-corpus")
    main_oid = corpus_refs["refs/heads/main"]
    scratch = os.path.join(a.work, "raw-scratch.git")
    git.run(a.work, "init", "-q", "--bare", scratch)

    step("advertisement over HTTP/1.0 and HTTP/1.1")
    for version in ("HTTP/1.0", "HTTP/1.1"):
        st, h, body = request(addr, "GET", f"{base}/info/refs?service=git-upload-pack", version=version)
        check(st == 200, f"{version} info/refs: {st} {body[:200]!r}")
        check(h.get("content-type") == "application/x-git-upload-pack-advertisement", f"{version}: content-type {h.get('content-type')}")
        p = pkts(body)
        check(p[0] == b"# service=git-upload-pack\n" and p[1] is None, f"{version}: bad service header {p[:2]}")
        check(p[2].startswith(main_oid.encode()) or b"HEAD" in p[2], f"{version}: first ref {p[2][:60]!r}")
        caps = p[2].split(b"\0")[1][:80].decode()
        print(f"    {version}: {len(p)} pkts, caps: {caps}...", flush=True)

    step("dumb-protocol probes are refused cleanly (no 5xx, no hang)")
    for path in ("info/refs", "HEAD", "objects/info/packs", "objects/info/alternates", f"objects/{main_oid[:2]}/{main_oid[2:]}"):
        st, h, body = request(addr, "GET", f"{base}/{path}")
        check(st in (403, 404), f"dumb probe {path}: {st} {body[:100]!r}")
        print(f"    GET {path}: {st}", flush=True)

    def v0_fetch(caps, wants, haves=(), newline=True, label="", **kw):
        nl = "\n" if newline else ""
        body = b""
        for i, w in enumerate(wants):
            body += pkt(f"want {w}" + (f" {caps}" if i == 0 and caps else "") + nl)
        body += b"0000"
        for h in haves:
            body += pkt(f"have {h}{nl}")
        body += pkt(f"done{nl}")
        st, h, resp = request(
            addr,
            "POST",
            f"{base}/git-upload-pack",
            [("Content-Type", "application/x-git-upload-pack-request"), ("Accept", "application/x-git-upload-pack-result")],
            body,
            **kw,
        )
        check(st == 200, f"{label}: status {st}: {resp[:300]!r}")
        check(h.get("content-type") == "application/x-git-upload-pack-result", f"{label}: content-type {h.get('content-type')}")
        return resp

    def demux(resp, label, max_pkt):
        """Parse NAK/ACK lines then the side-band stream; returns (acks, pack)."""
        acks = []
        pack = b""
        raw = resp
        while raw[:4] != b"0000" and raw:
            n = int(raw[:4], 16)
            data = raw[4:n]
            if data.startswith((b"NAK", b"ACK")) and not pack:
                acks.append(data)
            else:
                check(n <= max_pkt, f"{label}: side-band packet of {n} bytes (limit {max_pkt})")
                band = data[0]
                check(band in (1, 2, 3), f"{label}: bad band {band}")
                check(band != 3, f"{label}: error on band 3: {data[1:]!r}")
                if band == 1:
                    pack += data[1:]
            raw = raw[n:]
        check(raw == b"0000", f"{label}: stream does not end with one flush: {raw[:20]!r}")
        return acks, pack

    step("v0 fetch with side-band (1000-byte packets)")
    resp = v0_fetch("side-band ofs-delta agent=raw/1", [main_oid], label="side-band")
    acks, pack = demux(resp, "side-band", 1000)
    check(acks == [b"NAK\n"], f"side-band: acks {acks}")
    n = index_pack(git, scratch, pack, "side-band")
    print(f"    side-band: {n} objects, every packet <= 1000 bytes", flush=True)

    step("v0 fetch with side-band-64k, multi_ack_detailed and haves")
    parent = git.run(corpus, "rev-parse", "main~3").strip()
    resp = v0_fetch("multi_ack_detailed side-band-64k thin-pack ofs-delta", [main_oid], haves=[parent], label="64k")
    acks, pack = demux(resp, "64k", 65520)
    check(acks and acks[-1] in (f"ACK {parent}\n".encode(),), f"64k: acks {acks}")
    n = index_pack(git, scratch, pack, "64k thin")
    print(f"    64k incremental: acks {[a.decode().strip() for a in acks]}, {n} objects", flush=True)

    step("v0 fetch without multi_ack, side-band or trailing newlines")
    resp = v0_fetch("", [main_oid], newline=False, label="plain")
    check(resp.startswith(b"0008NAK\n"), f"plain: expected NAK first, got {resp[:40]!r}")
    pack = resp[8:]
    n = index_pack(git, scratch, pack, "plain")
    print(f"    plain: {n} objects", flush=True)
    resp = v0_fetch("", [main_oid], haves=[parent], newline=False, label="plain-have")
    check(resp.startswith(f"0031ACK {parent}\n".encode()), f"plain with have: expected one ACK, got {resp[:60]!r}")
    index_pack(git, scratch, resp[0x31:], "plain-have")

    step("v0 fetch over HTTP/1.0 and with Expect: 100-continue")
    resp = v0_fetch("side-band-64k ofs-delta", [main_oid], label="http/1.0", version="HTTP/1.0")
    index_pack(git, scratch, demux(resp, "http/1.0", 65520)[1], "http/1.0")
    resp = v0_fetch("side-band-64k ofs-delta", [main_oid], label="expect-100", expect_continue=True)
    index_pack(git, scratch, demux(resp, "expect-100", 65520)[1], "expect-100")

    step("v2 ls-refs and fetch without trailing newlines")
    body = pkt("command=ls-refs") + pkt("agent=raw/1") + b"0001" + pkt("peel") + pkt("symrefs") + pkt("ref-prefix refs/heads/main") + b"0000"
    st, h, resp = request(addr, "POST", f"{base}/git-upload-pack", [("Content-Type", "application/x-git-upload-pack-request"), ("Git-Protocol", "version=2")], body)
    check(st == 200, f"v2 ls-refs: {st} {resp[:200]!r}")
    lines = [l for l in pkts(resp) if l is not None]
    check(lines == [f"{main_oid} refs/heads/main\n".encode()], f"v2 ls-refs: {lines}")
    body = pkt("command=fetch") + b"0001" + pkt(f"want {main_oid}") + pkt("ofs-delta") + pkt("done") + b"0000"
    st, h, resp = request(addr, "POST", f"{base}/git-upload-pack", [("Content-Type", "application/x-git-upload-pack-request"), ("Git-Protocol", "version=2")], body)
    check(st == 200, f"v2 fetch: {st} {resp[:200]!r}")
    p = pkts(resp)
    check(p[0] == b"packfile\n", f"v2 fetch: first section {p[0]!r}")
    pack = b"".join(x[1:] for x in p[1:] if x and x[0] == 1)
    index_pack(git, scratch, pack, "v2 no newlines")

    step("pushes: report-status without side-band, Expect: 100-continue, HTTP/1.0, delete-only")
    wt = os.path.join(a.work, "raw-wt")
    git.run(a.work, "clone", "--quiet", url, wt)
    with open(os.path.join(wt, "raw.txt"), "w") as f:
        f.write("raw push\n")
    git.run(wt, "add", "raw.txt")
    git.run(wt, "commit", "-q", "-m", "raw push")
    new = git.run(wt, "rev-parse", "HEAD").strip()
    pack = subprocess.run(["git", "pack-objects", "--stdout", "-q", "--revs"], cwd=wt, env=git.env, input=f"{new}\n^{main_oid}\n".encode(), capture_output=True).stdout
    empty = subprocess.run(["git", "pack-objects", "--stdout", "-q"], cwd=wt, env=git.env, input=b"", capture_output=True).stdout

    def receive(commands, caps, pack_bytes, label, **kw):
        body = b""
        for i, c in enumerate(commands):
            body += pkt(c + (("\0" + caps) if i == 0 else "") + "\n")
        body += b"0000" + pack_bytes
        st, h, resp = request(addr, "POST", f"{base}/git-receive-pack", [("Content-Type", "application/x-git-receive-pack-request")], body, **kw)
        check(st == 200, f"{label}: status {st}: {resp[:300]!r}")
        check(h.get("content-type") == "application/x-git-receive-pack-result", f"{label}: content-type {h.get('content-type')}")
        if "side-band" in caps:
            _, inner = demux(resp, label, 65520 if "64k" in caps else 1000)
            resp = inner
        lines = [l.decode().rstrip("\n") for l in pkts(resp) if l is not None]
        return lines

    lines = receive([f"{main_oid} {new} refs/heads/raw-a"], "report-status", pack, "report-status plain")
    # A ref that does not exist yet must be created from ZERO; main_oid as old is a stale value.
    check(lines[0] == "unpack ok" and lines[1].startswith("ng refs/heads/raw-a"), f"stale old value: {lines}")
    lines = receive([f"{ZERO} {new} refs/heads/raw-a"], "report-status", pack, "report-status plain")
    check(lines == ["unpack ok", "ok refs/heads/raw-a"], f"report-status plain: {lines}")
    # receive-pack advertises only side-band-64k (as C git does).
    lines = receive([f"{ZERO} {new} refs/heads/raw-b"], "report-status side-band-64k", empty, "expect-100 push", expect_continue=True)
    check(lines == ["unpack ok", "ok refs/heads/raw-b"], f"side-band push: {lines}")
    # Not delete-only, so a pack is required (as with C git); an empty one will do.
    lines = receive([f"{ZERO} {main_oid} refs/heads/raw-c"], "report-status", empty, "empty pack, existing object", version="HTTP/1.0")
    check(lines == ["unpack ok", "ok refs/heads/raw-c"], f"http/1.0 push: {lines}")
    lines = receive([f"{new} {ZERO} refs/heads/raw-a"], "report-status delete-refs", b"", "delete without pack")
    check(lines == ["unpack ok", "ok refs/heads/raw-a"], f"delete without pack: {lines}")
    lines = receive([f"{new} {ZERO} refs/heads/raw-b", f"{main_oid} {ZERO} refs/heads/raw-c"], "report-status delete-refs side-band-64k", empty, "delete with empty pack")
    check(lines == ["unpack ok", "ok refs/heads/raw-b", "ok refs/heads/raw-c"], f"delete with empty pack: {lines}")
    git.check_server(url, corpus_refs, "raw-final")
    print("raw protocol interop: OK", flush=True)


if __name__ == "__main__":
    main()
