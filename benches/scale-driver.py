#!/usr/bin/env python3
"""Raw smart-HTTP requests for benches/scale.sh: what the git client would
send, without a git process per request, so that thousands can run on two
cores. Every command prints one JSON object on stdout.

  scale-driver.py create --base URL --auth user:tok --owner o --prefix p --count N
      creates o/p00000 .. through the REST API on one keep-alive connection
  scale-driver.py open --base URL --auth user:tok --owner o --prefix p --count N
      one v2 capability advertisement + ls-refs per repository (opens each)
  scale-driver.py mkrefs --url REPO_URL --commits FILE --count N [--batch B]
      creates N refs (even i: refs/heads/b/NNNNNN, odd: refs/tags/t/NNNNNN) at
      the commits listed in FILE, B per receive-pack request with an empty pack
      (as git sends when the objects are there); the git client's own
      refspec matching grows with the square of the refs pushed at once
  scale-driver.py lsrefs --url REPO_URL [--prefix P ...] --runs R
      v2 ls-refs timed (median of R after one warm-up), refs counted
  scale-driver.py storm --url REPO_URL --clones N [--pids PID,...] [--tree]
      N connections each do what `git clone` does over protocol v2 (info/refs,
      ls-refs, fetch of every ref tip with `done`), all at once; each reads the
      first bytes of its pack, waits until every clone has them (so all N are in
      flight together), then reads the rest and checks the pack's checksum.
      Resident memory of the PIDs (with --tree: and all their descendants) is
      sampled from /proc before, during and after.
"""
import argparse, asyncio, base64, hashlib, http.client, json, os, socket, statistics
import sys, threading, time, urllib.parse

AGENT = b"agent=scale-driver\n"


def pkt(data: bytes) -> bytes:
    return b"%04x" % (len(data) + 4) + data


def v2_body(command: bytes, args) -> bytes:
    out = pkt(b"command=" + command + b"\n") + pkt(AGENT) + pkt(b"object-format=sha1\n") + b"0001"
    for a in args:
        out += pkt(a + b"\n")
    return out + b"0000"


def pkt_lines(body: bytes):
    i = 0
    while i + 4 <= len(body):
        n = int(body[i:i + 4], 16)
        if n < 4:
            yield n, b""
            i += 4
            continue
        yield n, body[i + 4:i + n]
        i += n


def split_url(url):
    u = urllib.parse.urlsplit(url)
    auth = None
    if u.username:
        auth = f"{urllib.parse.unquote(u.username)}:{urllib.parse.unquote(u.password or '')}"
    return u.hostname, u.port, u.path, auth


def auth_header(auth):
    return {"Authorization": "Basic " + base64.b64encode(auth.encode()).decode()} if auth else {}


class Http:
    """One keep-alive connection, reopened when the server closes it."""

    def __init__(self, host, port, auth):
        self.host, self.port, self.auth = host, port, auth
        self.conn = None

    def request(self, method, path, body=None, headers=None):
        h = dict(auth_header(self.auth))
        h.update(headers or {})
        for attempt in (0, 1):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=600)
            try:
                self.conn.request(method, path, body=body, headers=h)
                r = self.conn.getresponse()
                data = r.read()
                if r.getheader("Connection", "").lower() == "close":
                    self.conn.close()
                    self.conn = None
                return r.status, data
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self.conn.close()
                self.conn = None
                if attempt:
                    raise


V2 = {"Git-Protocol": "version=2"}
UP = {"Content-Type": "application/x-git-upload-pack-request",
      "Accept": "application/x-git-upload-pack-result", "Git-Protocol": "version=2"}


def ls_refs(c, path, prefixes=()):
    args = [b"symrefs", b"peel"] + [b"ref-prefix " + p.encode() for p in prefixes]
    st, body = c.request("POST", path + "/git-upload-pack", v2_body(b"ls-refs", args), UP)
    if st != 200:
        raise SystemExit(f"ls-refs {path}: HTTP {st}: {body[:200]!r}")
    refs = [line.split(b" ")[:2] for n, line in pkt_lines(body) if n > 4]
    return refs, len(body)


def cmd_create(a):
    host, port, _, _ = split_url(a.base)
    c = Http(host, port, a.auth)
    t0 = time.monotonic()
    refused = 0
    for i in range(a.start, a.start + a.count):
        body = json.dumps({"owner": a.owner, "name": f"{a.prefix}{i:05d}"}).encode()
        st, data = c.request("POST", "/api/repos", body, {"Content-Type": "application/json"})
        if st != 201:
            refused += 1
            if refused <= 3:
                sys.stderr.write(f"create {i}: HTTP {st} {data[:200]!r}\n")
    dt = time.monotonic() - t0
    print(json.dumps({"created": a.count - refused, "refused": refused, "seconds": round(dt, 3),
                      "per_s": round((a.count - refused) / dt, 1)}))
    return 1 if refused else 0


def cmd_open(a):
    host, port, base_path, _ = split_url(a.base)
    c = Http(host, port, a.auth)
    t0 = time.monotonic()
    lat = []
    for i in range(a.start, a.start + a.count):
        path = f"{base_path}/git/{a.owner}/{a.prefix}{i:05d}.git"
        s = time.monotonic()
        st, _ = c.request("GET", path + "/info/refs?service=git-upload-pack", None, V2)
        if st != 200:
            raise SystemExit(f"info/refs {path}: HTTP {st}")
        ls_refs(c, path)
        lat.append(time.monotonic() - s)
    dt = time.monotonic() - t0
    lat.sort()
    print(json.dumps({"opened": a.count, "seconds": round(dt, 3), "per_s": round(a.count / dt, 1),
                      "median_ms": round(statistics.median(lat) * 1000, 2),
                      "max_ms": round(lat[-1] * 1000, 2)}))


def cmd_mkrefs(a):
    host, port, path, auth = split_url(a.url)
    c = Http(host, port, auth)
    commits = open(a.commits).read().split()
    names = []
    for i in range(a.count):
        kind = "heads/b" if i % 2 == 0 else "tags/t"
        names.append((f"refs/{kind}/{i // 2:06d}", commits[i % len(commits)]))
    zero = "0" * 40
    empty = b"PACK" + (2).to_bytes(4, "big") + (0).to_bytes(4, "big")
    empty += hashlib.sha1(empty).digest()
    t0 = time.monotonic()
    ok = 0
    for start in range(0, len(names), a.batch):
        body = bytearray()
        for j, (name, oid) in enumerate(names[start:start + a.batch]):
            line = f"{zero} {oid} {name}"
            if j == 0:
                line += "\0report-status agent=scale-driver"
            body += pkt(line.encode() + b"\n")
        body += b"0000" + empty
        st, data = c.request("POST", path + "/git-receive-pack", bytes(body),
                             {"Content-Type": "application/x-git-receive-pack-request",
                              "Accept": "application/x-git-receive-pack-result"})
        if st != 200:
            raise SystemExit(f"receive-pack: HTTP {st}: {data[:200]!r}")
        for n, line in pkt_lines(data):
            if line.startswith(b"ok "):
                ok += 1
            elif line.startswith(b"ng ") or (line.startswith(b"unpack ") and line.strip() != b"unpack ok"):
                raise SystemExit(f"receive-pack: {line!r}")
    print(json.dumps({"created": ok, "seconds": round(time.monotonic() - t0, 2)}))
    return 0 if ok == a.count else 1


def cmd_lsrefs(a):
    host, port, path, auth = split_url(a.url)
    c = Http(host, port, auth)
    times = []
    refs, size = ls_refs(c, path, a.prefix)
    for _ in range(a.runs):
        t = time.monotonic()
        refs, size = ls_refs(c, path, a.prefix)
        times.append(time.monotonic() - t)
    print(json.dumps({"refs": len(refs), "bytes": size,
                      "median_ms": round(statistics.median(times) * 1000, 2),
                      "min_ms": round(min(times) * 1000, 2)}))


# --- resident memory from /proc ---------------------------------------------

def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree_pids(roots):
    children = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                s = f.read()
            ppid = int(s[s.rindex(")") + 2:].split()[1])
        except (OSError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(d))
    out, todo = [], list(roots)
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


class Sampler(threading.Thread):
    def __init__(self, pids, tree, every=0.05):
        super().__init__(daemon=True)
        self.pids, self.tree, self.every = pids, tree, every
        self.peak = 0
        self.peak_procs = 0
        self.stop = threading.Event()

    def sample(self):
        pids = tree_pids(self.pids) if self.tree else self.pids
        return sum(rss_kib(p) for p in pids), len(pids)

    def run(self):
        while not self.stop.is_set():
            kib, n = self.sample()
            if kib > self.peak:
                self.peak, self.peak_procs = kib, n
            time.sleep(self.every)


# --- the clone storm ----------------------------------------------------------

async def read_response(reader):
    """Status and headers of one HTTP/1.1 response."""
    line = await reader.readline()
    if not line:
        raise ConnectionResetError("closed before a response")
    status = int(line.split()[1])
    headers = {}
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b"\n", b""):
            break
        k, _, v = line.decode("latin-1").partition(":")
        headers[k.strip().lower()] = v.strip()
    return status, headers


async def read_body(reader, headers, on_chunk=None):
    """The whole body (chunked or with a length); on_chunk sees each piece."""
    out = bytearray()
    if headers.get("transfer-encoding", "").lower() == "chunked":
        while True:
            n = int((await reader.readline()).split(b";")[0], 16)
            if n == 0:
                await reader.readline()
                break
            piece = await reader.readexactly(n)
            out += piece
            await reader.readline()
            if on_chunk:
                await on_chunk(len(out))
    elif "content-length" in headers:
        left = int(headers["content-length"])
        while left:
            piece = await reader.read(min(left, 65536))
            if not piece:
                raise ConnectionResetError("body cut short")
            out += piece
            left -= len(piece)
            if on_chunk:
                await on_chunk(len(out))
    else:
        while True:
            piece = await reader.read(65536)
            if not piece:
                break
            out += piece
            if on_chunk:
                await on_chunk(len(out))
    return bytes(out)


def pack_of(body: bytes):
    """The pack carried on side-band channel 1 of a v2 fetch response."""
    pack = bytearray()
    in_pack = False
    for n, line in pkt_lines(body):
        if n <= 4:
            continue
        if not in_pack:
            in_pack = line == b"packfile\n"
            continue
        if line[:1] == b"\x01":
            pack += line[1:]
        elif line[:1] == b"\x03":
            raise ValueError("fatal side-band message: %r" % line[1:200])
    return bytes(pack)


async def one_clone(i, host, port, path, auth, source, wants, gate, ready, all_started, result):
    done_ready = False
    first_seen = [False]

    def mark_ready():
        nonlocal done_ready
        if not done_ready:
            done_ready = True
            ready.arrive()

    req_head = f"Host: {host}:{port}\r\n"
    if auth:
        req_head += "Authorization: Basic " + base64.b64encode(auth.encode()).decode() + "\r\n"
    try:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        if source:
            sock.bind((source, 0))
        await asyncio.get_running_loop().sock_connect(sock, (host, port))
        reader, writer = await asyncio.open_connection(sock=sock, limit=1 << 20)

        async def post(body):
            writer.write((f"POST {path}/git-upload-pack HTTP/1.1\r\n" + req_head +
                          "Content-Type: application/x-git-upload-pack-request\r\n"
                          "Accept: application/x-git-upload-pack-result\r\n"
                          f"Git-Protocol: version=2\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body)
            await writer.drain()

        writer.write((f"GET {path}/info/refs?service=git-upload-pack HTTP/1.1\r\n" + req_head +
                      "Git-Protocol: version=2\r\n\r\n").encode())
        await writer.drain()
        st, h = await read_response(reader)
        await read_body(reader, h)
        if st != 200:
            result[i] = ("refused", st)
            mark_ready()
            all_started.arrive()
            writer.close()
            return
        await post(v2_body(b"ls-refs", [b"symrefs", b"peel", b"ref-prefix HEAD",
                                        b"ref-prefix refs/heads/", b"ref-prefix refs/tags/"]))
        st, h = await read_response(reader)
        await read_body(reader, h)
        if st != 200:
            result[i] = ("refused", st)
            mark_ready()
            all_started.arrive()
            writer.close()
            return
        mark_ready()
        await gate.wait()
        await post(v2_body(b"fetch", [b"thin-pack", b"no-progress", b"ofs-delta"] +
                           [b"want " + w for w in wants] + [b"done"]))
        st, h = await read_response(reader)
        if st != 200:
            await read_body(reader, h)
            result[i] = ("refused", st)
            mark_ready()
            all_started.arrive()
            writer.close()
            return
        async def on_chunk(n):
            if not first_seen[0]:
                first_seen[0] = True
                all_started.arrive()
                try:
                    await asyncio.wait_for(all_started.wait(), 60)
                except asyncio.TimeoutError:
                    pass

        body = await read_body(reader, h, on_chunk)
        if not first_seen[0]:
            first_seen[0] = True
            all_started.arrive()
        pack = pack_of(body)
        ok = len(pack) > 32 and pack[:4] == b"PACK" and hashlib.sha1(pack[:-20]).digest() == pack[-20:]
        result[i] = ("ok", len(pack)) if ok else ("bad", len(pack))
        writer.close()
    except Exception as e:  # a reset or a refused connection is a refusal
        result[i] = ("error", repr(e)[:120])
        if not done_ready:
            mark_ready()
            all_started.arrive()
        elif not first_seen[0]:
            all_started.arrive()


class Barrier:
    def __init__(self, n):
        self.n, self.ev = n, asyncio.Event()

    def arrive(self):
        self.n -= 1
        if self.n <= 0:
            self.ev.set()

    async def wait(self):
        await self.ev.wait()


def cmd_storm(a):
    host, port, path, auth = split_url(a.url)
    c = Http(host, port, auth)
    refs, _ = ls_refs(c, path, ["refs/heads/", "refs/tags/"])
    wants = sorted({r[0] for r in refs})
    c.conn and c.conn.close()
    pids = [int(p) for p in a.pids.split(",")] if a.pids else []
    sampler = Sampler(pids, a.tree)
    time.sleep(0.5)
    before, before_procs = sampler.sample()
    sampler.start()
    # Source addresses: at most --per-source connections from each.
    sources = [None]
    if a.per_source:
        sources = [f"127.0.0.{2 + k // a.per_source}" for k in range(a.clones)]

    async def main():
        gate = asyncio.Event()
        ready = Barrier(a.clones)
        all_started = Barrier(a.clones)
        result = [None] * a.clones
        tasks = [asyncio.create_task(one_clone(
            i, host, port, path, auth, sources[i] if a.per_source else None, wants, gate,
            ready, all_started, result)) for i in range(a.clones)]
        # every clone connected and through ls-refs (or refused) before the fetches
        await ready.wait()
        t0 = time.monotonic()
        gate.set()
        try:
            await asyncio.wait_for(all_started.wait(), 60)
            together = True
        except asyncio.TimeoutError:
            together = False
        in_flight, _ = sampler.sample()
        t_first = time.monotonic() - t0
        await asyncio.gather(*tasks)
        return result, in_flight, t_first, time.monotonic() - t0, together

    result, in_flight, t_first, wall, together = asyncio.run(main())
    sampler.stop.set()
    sampler.join()
    time.sleep(a.settle)
    after, _ = sampler.sample()
    ok = sum(1 for r in result if r and r[0] == "ok")
    refused = {}
    errors = []
    for r in result:
        if r and r[0] == "refused":
            refused[r[1]] = refused.get(r[1], 0) + 1
        elif r and r[0] in ("error", "bad"):
            errors.append(r[1])
    peak = max(sampler.peak, in_flight)
    out = {"clones": a.clones, "ok": ok, "refused": refused, "errors": len(errors),
           "error_samples": errors[:3], "pack_bytes": next((r[1] for r in result if r and r[0] == "ok"), 0),
           "seconds": round(wall, 2), "all_in_flight_together": together, "first_bytes_all_s": round(t_first, 2),
           "rss_before_kib": before, "rss_in_flight_kib": in_flight, "rss_peak_kib": peak,
           "rss_after_kib": after, "procs_before": before_procs, "procs_at_peak": sampler.peak_procs,
           "per_clone_kib": round((peak - before) / max(1, a.clones), 1)}
    print(json.dumps(out))
    return 0 if ok == a.clones else 1


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("create", "open"):
        s = sub.add_parser(name)
        s.add_argument("--base", required=True)
        s.add_argument("--auth")
        s.add_argument("--owner", required=True)
        s.add_argument("--prefix", required=True)
        s.add_argument("--count", type=int, required=True)
        s.add_argument("--start", type=int, default=0)
    s = sub.add_parser("mkrefs")
    s.add_argument("--url", required=True)
    s.add_argument("--commits", required=True)
    s.add_argument("--count", type=int, required=True)
    s.add_argument("--batch", type=int, default=10000)
    s = sub.add_parser("lsrefs")
    s.add_argument("--url", required=True)
    s.add_argument("--prefix", action="append", default=[])
    s.add_argument("--runs", type=int, default=5)
    s = sub.add_parser("storm")
    s.add_argument("--url", required=True)
    s.add_argument("--clones", type=int, required=True)
    s.add_argument("--pids", default="")
    s.add_argument("--tree", action="store_true")
    s.add_argument("--per-source", type=int, default=0,
                   help="connections per loopback source address (127.0.0.2, .3, ...); 0: one address")
    s.add_argument("--settle", type=float, default=2.0)
    a = p.parse_args()
    sys.exit({"create": cmd_create, "open": cmd_open, "mkrefs": cmd_mkrefs, "lsrefs": cmd_lsrefs, "storm": cmd_storm}[a.cmd](a) or 0)


if __name__ == "__main__":
    main()
