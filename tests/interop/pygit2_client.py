"""pygit2 (libgit2, as used by IDEs and CI runners) against a running
guts-node: push a realistic history, clone (including an empty repository),
list remote heads, incremental fetches, and pushes of pygit2-built commits
(new branch, fast-forward, forced update, delete, lightweight and annotated
tags, a refused non-fast-forward). Every result is checked with the C git
client (`git fsck --strict`, ref comparisons)."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from interop_common import Git, check, corpus_mirror, create_repo, die, parse_args, step, worktree_commit

try:
    import pygit2
except ImportError as e:
    die(f"pygit2 is not installed ({e}); run: pip install pygit2")


class Callbacks(pygit2.RemoteCallbacks):
    def __init__(self):
        super().__init__()
        self.rejected = {}
        self.updated = []
        self.progress = []

    def push_update_reference(self, refname, message):
        if message:
            self.rejected[refname] = message
        else:
            self.updated.append(refname)

    def sideband_progress(self, string):
        self.progress.append(string)


def push(repo, specs, label, expect_rejected=False, remote="origin"):
    cb = Callbacks()
    remote = repo.remotes[remote]
    try:
        remote.push(specs, callbacks=cb)
    except pygit2.GitError as e:
        if expect_rejected:
            print(f"    {label}: refused by libgit2 ({e})", flush=True)
            return cb
        die(f"{label}: push {specs} raised {e}")
    if expect_rejected:
        check(cb.rejected, f"{label}: non-fast-forward push was accepted: {specs}")
        print(f"    {label}: refused: {cb.rejected}", flush=True)
    else:
        check(not cb.rejected, f"{label}: server rejected {cb.rejected}")
        print(f"    {label}: pushed {len(cb.updated)} refs: {cb.updated[:3]}", flush=True)
    return cb


def mirror_remote(repo, name, url):
    return repo.remotes.create(name, url, "+refs/*:refs/*")


def main():
    a = parse_args()
    git = Git(a.work)
    print(f"pygit2 {pygit2.__version__}, libgit2 {pygit2.LIBGIT2_VERSION}", flush=True)
    corpus = corpus_mirror(git, a.corpus, "corpus-pygit2.git")
    corpus_refs = git.refs(corpus)
    sig = pygit2.Signature("Pygit2 Tester", "pygit2@example.com", 1700000000, 0)

    # 1. Clone of an empty repository, then push the corpus with libgit2's pack builder.
    step("pygit2 clone of an empty repository")
    url = create_repo(a.api, a.owner, "pygit2-corpus")
    empty = pygit2.clone_repository(url, os.path.join(a.work, "pclone-empty"), bare=True)
    check(empty.is_empty, "clone of an empty repository is not empty")

    step("pygit2 push of the corpus (all heads and tags)")
    src = pygit2.Repository(corpus)
    src.remotes.create("guts", url)
    push(src, [f"+{r}:{r}" for r in sorted(corpus_refs)], "corpus push", remote="guts")
    git.check_server(url, corpus_refs, "pygit2-corpus")

    # 2. Remote heads as libgit2 sees them vs C git (protocol v0).
    step("pygit2 list_heads vs git ls-remote")
    heads = src.remotes["guts"].list_heads()
    got = {h.name: str(h.oid) for h in heads}
    want = git.ls_remote(url, "0")
    check(got == want, f"list_heads differs from git ls-remote: {sorted(set(got.items()) ^ set(want.items()))[:6]}")
    head = [h for h in heads if h.name == "HEAD"]
    check(head and head[0].symref_target == "refs/heads/main", f"HEAD symref: {[(h.name, h.symref_target) for h in head]}")

    # 3. Clones: bare with the default refspec, and mirror refspec.
    step("pygit2 clones")
    plain = os.path.join(a.work, "pclone-bare")
    r = pygit2.clone_repository(url, plain, bare=True)
    git.fsck(plain)
    branches = {f"refs/heads/{b}" for b in r.branches.local} | {f"refs/heads/{b.split('/', 1)[1]}" for b in r.branches.remote if not b.endswith("/HEAD")}
    check({k for k in corpus_refs if k.startswith("refs/heads/")} <= branches, "bare clone misses branches")
    mirror = os.path.join(a.work, "pclone-mirror")
    r = pygit2.clone_repository(url, mirror, bare=True, remote=mirror_remote)
    git.fsck(mirror)
    check(git.refs(mirror) == corpus_refs, "mirror clone refs differ")
    wtpath = os.path.join(a.work, "pclone-wt")
    w = pygit2.clone_repository(url, wtpath)
    check(not w.status(), "work tree clone is dirty after checkout")
    git.fsck(wtpath)

    # 4. Incremental fetch after C git pushes.
    step("pygit2 incremental fetch after C git pushes")
    wt = os.path.join(a.work, "cgit-wt-pygit2")
    git.run(a.work, "clone", "--quiet", url, wt)
    c1 = worktree_commit(git, wt, "interop/one.txt", "one\n" * 100, "interop one")
    c2 = worktree_commit(git, wt, "interop/two.txt", "two\n" * 100, "interop two")
    git.run(wt, "tag", "-a", "-m", "interop tag", "interop-tag")
    git.run(wt, "push", "--quiet", "origin", "main", "HEAD:refs/heads/interop-new", "interop-tag")
    want = dict(corpus_refs)
    want["refs/heads/main"] = c2
    want["refs/heads/interop-new"] = c2
    want["refs/tags/interop-tag"] = git.run(wt, "rev-parse", "interop-tag").strip()
    git.check_server(url, want, "pygit2-after-cgit-push")
    r = pygit2.Repository(mirror)
    stats = r.remotes["origin"].fetch()
    print(f"    mirror fetch: {stats.received_objects} objects, {stats.indexed_deltas} deltas", flush=True)
    check(stats.received_objects < 50, f"incremental fetch received {stats.received_objects} objects")
    git.fsck(mirror)
    check(git.refs(mirror) == want, "mirror refs after fetch differ")
    r = pygit2.Repository(wtpath)
    r.remotes["origin"].fetch()
    check(str(r.references["refs/remotes/origin/main"].target) == c2, "work tree fetch: origin/main not updated")
    check(c1 in r, "work tree fetch: commit missing")
    git.fsck(wtpath)
    stats = r.remotes["origin"].fetch()
    check(stats.received_objects == 0, "up-to-date fetch received objects")

    # 5. Pushes of pygit2-built commits.
    step("pygit2 pushes")
    url = create_repo(a.api, a.owner, "pygit2-push")
    path = os.path.join(a.work, "psrc")
    repo = pygit2.init_repository(path, bare=True)
    repo.remotes.create("origin", url)
    big = "".join(f"line {i} of a file long enough to delta against\n" for i in range(400))

    def commit(files, parents, msg):
        tb = repo.TreeBuilder()
        for name, content in sorted(files.items()):
            tb.insert(name, repo.create_blob(content.encode()), pygit2.GIT_FILEMODE_BLOB)
        return str(repo.create_commit(None, sig, sig, msg + "\n", tb.write(), parents))

    m1 = commit({"README": "hello\n", "big.txt": big}, [], "initial")
    repo.references.create("refs/heads/main", m1)
    push(repo, ["refs/heads/main:refs/heads/main"], "initial")
    git.check_server(url, {"refs/heads/main": m1}, "pygit2-initial")

    m2 = commit({"README": "hello\n", "big.txt": big + "more\n"}, [m1], "second")
    f1 = commit({"README": "feature\n", "big.txt": big.replace("line 9 ", "LINE 9 ")}, [m1], "feature")
    repo.references["refs/heads/main"].set_target(m2)
    repo.references.create("refs/heads/feature", f1)
    push(repo, ["refs/heads/main:refs/heads/main", "refs/heads/feature:refs/heads/feature"], "ff + new branch")
    expect = {"refs/heads/main": m2, "refs/heads/feature": f1}
    git.check_server(url, expect, "pygit2-ff")

    repo.references.create("refs/tags/light", m1)
    ann = str(repo.create_tag("v1.0", m2, pygit2.enums.ObjectType.COMMIT, sig, "annotated v1.0\n"))
    push(repo, ["refs/tags/light:refs/tags/light", "refs/tags/v1.0:refs/tags/v1.0"], "tags")
    expect.update({"refs/tags/light": m1, "refs/tags/v1.0": ann})
    git.check_server(url, expect, "pygit2-tags")

    f2 = commit({"README": "rewritten\n", "big.txt": big + "rewritten\n"}, [m1], "rewritten")
    repo.references["refs/heads/feature"].set_target(f2)
    push(repo, ["refs/heads/feature:refs/heads/feature"], "non-ff without force", expect_rejected=True)
    git.check_server(url, expect, "pygit2-nonff-refused")
    push(repo, ["+refs/heads/feature:refs/heads/feature"], "forced update")
    expect["refs/heads/feature"] = f2
    git.check_server(url, expect, "pygit2-forced")

    push(repo, [":refs/heads/feature", ":refs/tags/light"], "delete-only")
    del expect["refs/heads/feature"], expect["refs/tags/light"]
    git.check_server(url, expect, "pygit2-deleted")

    # Mixed: create, update and delete in one push.
    m3 = commit({"README": "third\n", "big.txt": big + "more\nthird\n"}, [m2], "third")
    repo.references["refs/heads/main"].set_target(m3)
    repo.references.create("refs/heads/other", m3)
    push(repo, ["refs/heads/main:refs/heads/main", "refs/heads/other:refs/heads/other", ":refs/tags/v1.0"], "mixed")
    expect.update({"refs/heads/main": m3, "refs/heads/other": m3})
    del expect["refs/tags/v1.0"]
    git.check_server(url, expect, "pygit2-mixed")

    print("pygit2 interop: OK", flush=True)


if __name__ == "__main__":
    main()
