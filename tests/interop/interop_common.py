"""Shared helpers for the interop scripts: create repositories on a running
guts-node through its API, run the C git client with an isolated
configuration, and check results with it (`git fsck --strict`, refs)."""

import base64
import json
import os
import subprocess
import sys
import urllib.parse
import urllib.request

ZERO = "0" * 40


def die(msg):
    print(f"FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


def check(cond, msg):
    if not cond:
        die(msg)


def step(msg):
    print(f"--- {msg}", flush=True)


def git_env(home):
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(
        GIT_CONFIG_NOSYSTEM="1",
        GIT_CONFIG_GLOBAL="/dev/null",
        HOME=home,
        GIT_TERMINAL_PROMPT="0",
        GIT_AUTHOR_NAME="Interop Author",
        GIT_AUTHOR_EMAIL="author@example.com",
        GIT_COMMITTER_NAME="Interop Committer",
        GIT_COMMITTER_EMAIL="committer@example.com",
        GIT_AUTHOR_DATE="1700000000 +0000",
        GIT_COMMITTER_DATE="1700000000 +0000",
    )
    return env


class Git:
    """The C git client, isolated from user and system configuration."""

    def __init__(self, work):
        self.work = work
        self.env = git_env(work)

    def run(self, cwd, *args, ok=True, input=None):
        cmd = ["git", "-c", "init.defaultBranch=main", "-c", "advice.detachedHead=false", *args]
        p = subprocess.run(cmd, cwd=cwd, env=self.env, capture_output=True, input=input)
        if ok and p.returncode != 0:
            die(f"git {' '.join(args)} failed ({p.returncode}) in {cwd}:\n{p.stdout.decode(errors='replace')}\n{p.stderr.decode(errors='replace')}")
        return p.stdout.decode()

    def fsck(self, repo):
        self.run(repo, "fsck", "--strict", "--no-progress")

    def refs(self, repo, prefixes=("refs/heads", "refs/tags")):
        """{ref: oid} of a local repository."""
        out = self.run(repo, "for-each-ref", "--format=%(refname) %(objectname)", *prefixes)
        return dict(line.split(" ", 1) for line in out.splitlines() if line)

    def ls_remote(self, url, version="2"):
        """{ref: oid} the server advertises (heads, tags and HEAD, peeled `^{}` lines included)."""
        out = self.run(self.work, "-c", f"protocol.version={version}", "ls-remote", url)
        d = {}
        for line in out.splitlines():
            oid, ref = line.split("\t")
            d[ref] = oid
        return d

    def server_refs(self, url):
        """Heads and tags (no peeled lines, no HEAD) the server advertises."""
        return {r: o for r, o in self.ls_remote(url).items() if r.startswith(("refs/heads/", "refs/tags/")) and not r.endswith("^{}")}

    def check_server(self, url, want, label):
        """Server refs must equal `want`; a C git mirror clone must pass fsck --strict and match."""
        got = self.server_refs(url)
        if got != want:
            diff = sorted(set(got.items()) ^ set(want.items()))
            die(f"{label}: server refs differ from expected: {diff[:10]}")
        dst = os.path.join(self.work, f"check-{label}")
        subprocess.run(["rm", "-rf", dst])
        self.run(self.work, "clone", "--quiet", "--mirror", url, dst)
        self.fsck(dst)
        check(self.refs(dst) == want, f"{label}: C git clone refs differ")


def split_api(api):
    """`http://USER:TOKEN@HOST:PORT` -> (`http://HOST:PORT`, Authorization header value or None)."""
    u = urllib.parse.urlparse(api)
    base = f"{u.scheme}://{u.hostname}:{u.port}"
    if u.username is None:
        return base, None
    creds = f"{urllib.parse.unquote(u.username)}:{urllib.parse.unquote(u.password or '')}"
    return base, "Basic " + base64.b64encode(creds.encode()).decode()


def create_repo(api, owner, name):
    """Create OWNER/NAME through the API (with the credentials in `api`);
    returns its git URL, credentials included."""
    base, auth = split_api(api)
    headers = {"Content-Type": "application/json"}
    if auth:
        headers["Authorization"] = auth
    req = urllib.request.Request(
        f"{base}/api/repos",
        data=json.dumps({"owner": owner, "name": name}).encode(),
        headers=headers,
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        check(r.status == 201, f"create repo {owner}/{name}: {r.status}")
    return f"{api}/git/{owner}/{name}.git"


def parse_args():
    import argparse

    p = argparse.ArgumentParser()
    p.add_argument("--api", required=True, help="http://admin:TOKEN@HOST:PORT of the node's API")
    p.add_argument("--work", required=True, help="scratch directory")
    p.add_argument("--corpus", required=True, help="a git bundle with realistic history")
    p.add_argument("--owner", default="interop")
    a = p.parse_args()
    os.makedirs(a.work, exist_ok=True)
    return a


def corpus_mirror(git, bundle, name="corpus.git"):
    dst = os.path.join(git.work, name)
    if not os.path.exists(dst):
        git.run(git.work, "clone", "--quiet", "--mirror", bundle, dst)
    return dst


def worktree_commit(git, wt, path, content, msg):
    full = os.path.join(wt, path)
    os.makedirs(os.path.dirname(full), exist_ok=True)
    with open(full, "w") as f:
        f.write(content)
    git.run(wt, "add", "--", path)
    git.run(wt, "commit", "-q", "-m", msg)
    return git.run(wt, "rev-parse", "HEAD").strip()
