#!/usr/bin/env python3
"""Ref-update throughput without the git client's own per-ref cost.

Sends receive-pack requests straight to a node: each creates BRANCHES
branches at an existing commit (an empty pack, as git sends when the
objects are already there), CLIENTS requests at once, optionally to
several nodes. Prints the updates acknowledged and the rate, from the
first request sent to the last report read.

  push-driver.py --url http://user:tok@host:port/git/o/r.git [--url ...]
                 --commit OID --prefix p --branches 2000 --clients 4
"""
import argparse, base64, hashlib, http.client, struct, sys, threading, time, urllib.parse

def pkt(data: bytes) -> bytes:
    return b"%04x" % (len(data) + 4) + data

def request_body(commit: str, names):
    zero = "0" * 40
    out = bytearray()
    for i, name in enumerate(names):
        line = f"{zero} {commit} {name}"
        if i == 0:
            line += "\0report-status quiet agent=push-driver"
        out += pkt(line.encode() + b"\n")
    out += b"0000"
    head = b"PACK" + struct.pack(">II", 2, 0)
    out += head + hashlib.sha1(head).digest()
    return bytes(out)

def parse_report(body: bytes):
    ok = ng = 0
    i = 0
    while i + 4 <= len(body):
        n = int(body[i:i + 4], 16)
        if n == 0:
            i += 4
            continue
        line = body[i + 4:i + n]
        i += n
        if line.startswith(b"ok "):
            ok += 1
        elif line.startswith(b"ng "):
            ng += 1
            if ng <= 3:
                sys.stderr.write("ng: %s\n" % line.decode(errors="replace").strip())
        elif line.startswith(b"unpack ") and line.strip() != b"unpack ok":
            sys.stderr.write("%s\n" % line.decode(errors="replace").strip())
    return ok, ng

def push(url: str, body: bytes, result, slot):
    u = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=600)
    headers = {"Content-Type": "application/x-git-receive-pack-request",
               "Accept": "application/x-git-receive-pack-result"}
    if u.username:
        cred = f"{urllib.parse.unquote(u.username)}:{urllib.parse.unquote(u.password or '')}"
        headers["Authorization"] = "Basic " + base64.b64encode(cred.encode()).decode()
    conn.request("POST", u.path + "/git-receive-pack", body=body, headers=headers)
    resp = conn.getresponse()
    data = resp.read()
    if resp.status != 200:
        sys.stderr.write(f"HTTP {resp.status}: {data[:200]!r}\n")
        result[slot] = (0, 0)
        return
    result[slot] = parse_report(data)

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", action="append", required=True)
    ap.add_argument("--commit", required=True)
    ap.add_argument("--prefix", default="t")
    ap.add_argument("--branches", type=int, default=2000)
    ap.add_argument("--clients", type=int, default=1)
    a = ap.parse_args()
    per = a.branches // a.clients
    bodies = [request_body(a.commit, [f"refs/heads/{a.prefix}-{c}-{k}" for k in range(per)])
              for c in range(a.clients)]
    result = [None] * a.clients
    threads = [threading.Thread(target=push, args=(a.url[c % len(a.url)], bodies[c], result, c))
               for c in range(a.clients)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    dt = time.monotonic() - t0
    ok = sum(r[0] for r in result if r)
    ng = sum(r[1] for r in result if r)
    print(f"{a.clients} requests of {per} new branches through {len(a.url)} node(s): "
          f"{ok} ok, {ng} rejected in {dt * 1000:.0f} ms, {ok / dt:.0f} updates/s")
    sys.exit(0 if ng == 0 and ok == per * a.clients else 1)

main()
