"""dulwich (pure-Python git) against a running guts-node: push a realistic
history, clone and fetch (protocol v0 and v2, with and without multi_ack,
side-band-64k, ofs-delta, thin-pack), ls-remote, then pushes made from a
dulwich-built repository (new branch, fast-forward, forced update, delete,
lightweight and annotated tags) with several capability sets. Every result
is checked with the C git client (`git fsck --strict`, ref comparisons)."""

import os
import sys
import urllib.parse
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from interop_common import ZERO, Git, check, corpus_mirror, create_repo, die, parse_args, step, worktree_commit

try:
    import dulwich
    from dulwich.client import HttpGitClient
    from dulwich.objects import Blob, Commit, Tag, Tree
    from dulwich.repo import Repo
except ImportError as e:
    die(f"dulwich is not installed ({e}); run: pip install dulwich")


def b(s):
    return s.encode() if isinstance(s, str) else s


def s(x):
    return x.decode() if isinstance(x, bytes) else x


def heads_and_tags(refs):
    return {s(k): s(v) for k, v in refs.items() if k.startswith((b"refs/heads/", b"refs/tags/")) and not k.endswith(b"^{}")}


def client(url, fetch_drop=(), send_drop=(), **kw):
    # Credentials in the URL (the node's admin token) go to dulwich's own
    # username/password, which it sends as HTTP Basic.
    u = urllib.parse.urlparse(url)
    if u.username is not None:
        kw.setdefault("username", urllib.parse.unquote(u.username))
        kw.setdefault("password", urllib.parse.unquote(u.password or ""))
        url = u._replace(netloc=f"{u.hostname}:{u.port}").geturl()
    c = HttpGitClient(url, **kw)
    for cap in fetch_drop:
        c._fetch_capabilities.discard(b(cap))
    for cap in send_drop:
        c._send_capabilities.discard(b(cap))
    return c


def fetch_into(url, repo, label, protocol_version=None, **kw):
    """Fetch all heads and tags of `url` into `repo` and set them there."""
    c = client(url, **kw)

    def wants(refs, depth=None):
        return [v for k, v in refs.items() if k.startswith((b"refs/heads/", b"refs/tags/")) and not k.endswith(b"^{}") and v not in repo.object_store]

    t = time.time()
    res = c.fetch("", repo, determine_wants=wants, protocol_version=protocol_version)
    refs = heads_and_tags(res.refs)
    for k, v in refs.items():
        repo.refs[b(k)] = b(v)
    print(f"    {label}: fetched {len(refs)} refs in {time.time() - t:.2f}s", flush=True)
    return refs


def pack_types(repo_path):
    """Counts of raw pack entry types (1-4 objects, 6 OFS_DELTA, 7 REF_DELTA) in a repository's packs."""
    counts = {}
    d = os.path.join(repo_path, "objects", "pack")
    for f in sorted(os.listdir(d)):
        if f.endswith(".pack"):
            with open(os.path.join(d, f), "rb") as fh:
                for t in scan_pack(fh.read()):
                    counts[t] = counts.get(t, 0) + 1
    return counts


def scan_pack(data):
    """Entry types of a version 2 pack, walking its zlib streams."""
    import struct
    import zlib

    check(data[:4] == b"PACK", "not a pack")
    (n,) = struct.unpack(">I", data[8:12])
    pos = 12
    view = memoryview(data)
    for _ in range(n):
        c = data[pos]
        pos += 1
        t = (c >> 4) & 7
        while c & 0x80:
            c = data[pos]
            pos += 1
        if t == 6:
            c = data[pos]
            pos += 1
            while c & 0x80:
                c = data[pos]
                pos += 1
        elif t == 7:
            pos += 20
        z = zlib.decompressobj()
        while not z.eof:
            chunk = view[pos : pos + 65536]
            check(len(chunk) > 0, "truncated pack")
            z.decompress(chunk)
            pos += len(chunk) - len(z.unused_data)
        yield t


def push(url, src, changes, label, **kw):
    """Push `changes` ({ref: oid or None to delete}) from dulwich repo `src`."""
    c = client(url, **kw)

    def update_refs(refs):
        new = dict(refs)
        for k, v in changes.items():
            new[b(k)] = b(v) if v else b(ZERO)
        return new

    def gen(have, want, ofs_delta=False, progress=None):
        return src.generate_pack_data(have, want, progress=progress, ofs_delta=ofs_delta)

    res = c.send_pack("", update_refs, gen)
    bad = {k: v for k, v in (res.ref_status or {}).items() if v is not None}
    check(not bad, f"{label}: server rejected refs: {bad}")
    print(f"    {label}: pushed {len(changes)} ref changes", flush=True)
    return res


def new_commit(repo, parents, files, msg, when):
    tree = Tree()
    for name, content in sorted(files.items()):
        blob = Blob.from_string(b(content))
        repo.object_store.add_object(blob)
        tree.add(b(name), 0o100644, blob.id)
    repo.object_store.add_object(tree)
    c = Commit()
    c.tree = tree.id
    c.parents = [b(p) for p in parents]
    c.author = c.committer = b"Dulwich Tester <dulwich@example.com>"
    c.author_time = c.commit_time = when
    c.author_timezone = c.commit_timezone = 0
    c.encoding = None
    c.message = b(msg + "\n")
    repo.object_store.add_object(c)
    return s(c.id)


def new_tag(repo, name, target, when):
    t = Tag()
    t.tagger = b"Dulwich Tester <dulwich@example.com>"
    t.tag_time = when
    t.tag_timezone = 0
    t.name = b(name)
    t.object = (Commit, b(target))
    t.message = b(f"annotated {name}\n")
    repo.object_store.add_object(t)
    return s(t.id)


def main():
    a = parse_args()
    git = Git(a.work)
    print(f"dulwich {'.'.join(map(str, dulwich.__version__))}", flush=True)
    corpus = corpus_mirror(git, a.corpus)
    corpus_refs = git.refs(corpus)

    # 1. Push a realistic history (all heads and tags) into an empty repository.
    step("dulwich push of the corpus into an empty repository")
    url = create_repo(a.api, a.owner, "dulwich-corpus")
    src = Repo(corpus)
    push(url, src, corpus_refs, "corpus push")
    src.close()
    git.check_server(url, corpus_refs, "dulwich-corpus")

    # The same push with REF_DELTA objects and no side-band (report-status plain).
    step("dulwich push of the corpus: REF_DELTA, no side-band, only report-status")
    url2 = create_repo(a.api, a.owner, "dulwich-corpus-refdelta")
    src = Repo(corpus)
    push(url2, src, corpus_refs, "corpus push (ref-delta)",
         send_drop=("side-band-64k", "ofs-delta", "atomic", "delete-refs", "push-options", "quiet"))
    src.close()
    git.check_server(url2, corpus_refs, "dulwich-corpus-refdelta")

    # 2. ls-remote, v0 and v2, against C git's view.
    step("dulwich ls-remote v0/v2")
    for v in (0, 2):
        res = client(url).get_refs("", protocol_version=v)
        got = {s(k): s(val) for k, val in res.refs.items()}
        want = git.ls_remote(url, str(v))
        want_cmp = {k: o for k, o in want.items()}
        got_cmp = {k: o for k, o in got.items() if k in want_cmp or not k.endswith("^{}")}
        check(heads_and_tags(res.refs) == corpus_refs, f"ls-remote v{v}: refs differ")
        check(got_cmp == want_cmp, f"ls-remote v{v}: dulwich {sorted(set(got_cmp.items()) ^ set(want_cmp.items()))[:6]} vs C git")
        if res.symrefs:
            print(f"    v{v} symrefs: {res.symrefs}")

    # 3. Clones with several capability sets.
    variants = [
        ("v2", dict(protocol_version=2)),
        ("v0", dict(protocol_version=0)),
        ("v0-no-multi-ack", dict(protocol_version=0, fetch_drop=("multi_ack", "multi_ack_detailed"))),
        ("v0-no-sideband", dict(protocol_version=0, fetch_drop=("side-band-64k",))),
        ("v0-no-ofs-delta", dict(protocol_version=0, fetch_drop=("ofs-delta",))),
        ("v0-minimal", dict(protocol_version=0, fetch_drop=("multi_ack", "multi_ack_detailed", "side-band-64k", "ofs-delta", "thin-pack"), thin_packs=False)),
        ("v2-no-thin", dict(protocol_version=2, thin_packs=False)),
    ]
    clones = {}
    step("dulwich clones (fetch into empty repositories)")
    for label, kw in variants:
        path = os.path.join(a.work, f"dclone-{label}")
        repo = Repo.init_bare(path, mkdir=True)
        refs = fetch_into(url, repo, label, **kw)
        check(refs == corpus_refs, f"clone {label}: refs differ")
        repo.close()
        types = pack_types(path)
        print(f"    {label}: pack object types {types}", flush=True)
        if "ofs-delta" in kw.get("fetch_drop", ()):
            check(6 not in types, f"clone {label}: OFS_DELTA sent to a client without ofs-delta")
        git.fsck(path)
        check(git.refs(path) == corpus_refs, f"clone {label}: C git sees different refs")
        clones[label] = path

    # 4. Incremental fetches: C git pushes new work, dulwich fetches it.
    step("dulwich incremental fetches after C git pushes")
    wt = os.path.join(a.work, "cgit-wt")
    git.run(a.work, "clone", "--quiet", url, wt)
    base = git.run(wt, "rev-parse", "HEAD").strip()
    c1 = worktree_commit(git, wt, "interop/one.txt", "one\n" * 100, "interop one")
    c2 = worktree_commit(git, wt, "interop/two.txt", "two\n" * 100, "interop two")
    git.run(wt, "tag", "-a", "-m", "interop tag", "interop-tag")
    branch = git.run(wt, "symbolic-ref", "--short", "HEAD").strip()
    git.run(wt, "push", "--quiet", "origin", branch, "HEAD:refs/heads/interop-new", "interop-tag")
    want = dict(corpus_refs)
    want[f"refs/heads/{branch}"] = c2
    want["refs/heads/interop-new"] = c2
    want["refs/tags/interop-tag"] = git.run(wt, "rev-parse", "interop-tag").strip()
    git.check_server(url, want, "after-cgit-push")
    for label, kw in variants:
        repo = Repo(clones[label])
        refs = fetch_into(url, repo, f"incremental {label}", **kw)
        check(refs == want, f"incremental {label}: refs differ")
        check(b(c1) in repo.object_store and b(c2) in repo.object_store, f"incremental {label}: new commits missing")
        repo.close()
        git.fsck(clones[label])
        check(git.refs(clones[label]) == want, f"incremental {label}: C git sees different refs")
    # A fetch with nothing new.
    repo = Repo(clones["v2"])
    fetch_into(url, repo, "up-to-date v2", protocol_version=2)
    fetch_into(url, repo, "up-to-date v0", protocol_version=0)
    repo.close()

    # 5. Pushes from a dulwich-built repository, several capability sets.
    push_variants = [
        ("default", {}),
        ("no-sideband", dict(send_drop=("side-band-64k",))),
        ("no-ofs-delta", dict(send_drop=("ofs-delta",))),
        ("report-status-only", dict(send_drop=("side-band-64k", "ofs-delta", "atomic", "delete-refs", "push-options", "quiet"))),
    ]
    for label, kw in push_variants:
        step(f"dulwich pushes ({label})")
        url = create_repo(a.api, a.owner, f"dulwich-push-{label}")
        path = os.path.join(a.work, f"dsrc-{label}")
        repo = Repo.init_bare(path, mkdir=True)
        t0 = 1700000000
        big = "".join(f"line {i} of a file long enough to delta against\n" for i in range(400))
        m1 = new_commit(repo, [], {"README": "hello\n", "big.txt": big}, "initial", t0)
        push(url, repo, {"refs/heads/main": m1}, f"{label} initial")
        git.check_server(url, {"refs/heads/main": m1}, f"{label}-initial")

        m2 = new_commit(repo, [m1], {"README": "hello\n", "big.txt": big + "one more\n"}, "second", t0 + 60)
        f1 = new_commit(repo, [m1], {"README": "feature\n", "big.txt": big.replace("line 7 ", "LINE 7 ")}, "feature", t0 + 120)
        push(url, repo, {"refs/heads/main": m2, "refs/heads/feature": f1}, f"{label} ff + new branch")
        expect = {"refs/heads/main": m2, "refs/heads/feature": f1}
        git.check_server(url, expect, f"{label}-ff")

        ann = new_tag(repo, "v1.0", m2, t0 + 180)
        push(url, repo, {"refs/tags/light": m1, "refs/tags/v1.0": ann}, f"{label} tags")
        expect.update({"refs/tags/light": m1, "refs/tags/v1.0": ann})
        git.check_server(url, expect, f"{label}-tags")
        peeled = git.ls_remote(url, "0")
        check(peeled.get("refs/tags/v1.0^{}") == m2, f"{label}: annotated tag not peeled in v0 advertisement")

        f2 = new_commit(repo, [m1], {"README": "rewritten\n", "big.txt": big + "rewritten\n"}, "rewritten feature", t0 + 240)
        push(url, repo, {"refs/heads/feature": f2}, f"{label} forced update")
        expect["refs/heads/feature"] = f2
        git.check_server(url, expect, f"{label}-forced")

        # Deletes only: no new objects.
        push(url, repo, {"refs/heads/feature": None, "refs/tags/light": None}, f"{label} delete-only")
        del expect["refs/heads/feature"], expect["refs/tags/light"]
        git.check_server(url, expect, f"{label}-deleted")

        # A stale old value must be refused (and leave the server unchanged).
        c = client(url, **kw)
        def stale(refs):
            new = dict(refs)
            new[b"refs/heads/main"] = b(f1)
            return new
        try:
            res = c.send_pack("", stale, lambda have, want, ofs_delta=False, progress=None: repo.generate_pack_data(have, want, ofs_delta=ofs_delta))
            # dulwich computes old from the advertisement, so this is a plain
            # non-fast-forward (forced) update; the server allows it. Put main back.
            check(not any(v for v in (res.ref_status or {}).values()), f"{label}: forced update refused: {res.ref_status}")
            push(url, repo, {"refs/heads/main": m2}, f"{label} restore main")
        except Exception as e:
            die(f"{label}: forced non-ff push raised {type(e).__name__}: {e}")
        git.check_server(url, expect, f"{label}-final")
        repo.close()

    print("dulwich interop: OK", flush=True)


if __name__ == "__main__":
    main()
