//! Checks of `.gitmodules` and `.gitattributes` contents at ingest, with
//! C git as the oracle: each case is a repository built with `git
//! hash-object`/`mktree`/`commit-tree`, packed with `git pack-objects`, and
//! both `git index-pack --strict --stdin` and our ingest must agree on
//! accepting it; where both reject, git's message names the same msg-id.

use guts_io::fsck::{check_gitattributes, check_gitmodules, GITATTRIBUTES_MAX_BYTES};
use guts_io::object::ObjectKind;
use guts_io::pack::ingest::{
    CheckOptions, Ingest, IngestError, IngestLimits, NoObjects, ObjectSource,
};
use guts_io::ObjectId;
use std::path::{Path, PathBuf};

mod common;
use common::{git_bytes, git_run};

const STRICT: CheckOptions = CheckOptions {
    strict: true,
    check_links: true,
};

fn git(dir: &Path, args: &[&str], input: Option<&[u8]>) -> String {
    String::from_utf8_lossy(&git_bytes(dir, args, input))
        .trim()
        .to_string()
}

/// A scratch bare repository where test objects are made.
struct Repo {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
}

impl Repo {
    fn new() -> Repo {
        let tmp = tempfile::tempdir().unwrap();
        git(tmp.path(), &["init", "-q", "--bare", "r.git"], None);
        let dir = tmp.path().join("r.git");
        Repo { _tmp: tmp, dir }
    }

    fn blob(&self, data: &[u8]) -> String {
        git(&self.dir, &["hash-object", "-w", "--stdin"], Some(data))
    }

    /// `entries`: (mode, oid, name); the type follows from the mode.
    fn tree(&self, entries: &[(&str, &str, &[u8])]) -> String {
        let mut input = Vec::new();
        for (mode, oid, name) in entries {
            let kind = match *mode {
                "040000" => "tree",
                "160000" => "commit",
                _ => "blob",
            };
            input.extend_from_slice(format!("{mode} {kind} {oid}\t").as_bytes());
            input.extend_from_slice(name);
            input.push(b'\n');
        }
        git(&self.dir, &["mktree", "--missing"], Some(&input))
    }

    fn commit(&self, tree: &str, parents: &[&str]) -> String {
        let mut args = vec!["commit-tree", tree, "-m", "test"];
        for p in parents {
            args.extend(["-p", p]);
        }
        git(&self.dir, &args, None)
    }

    /// A pack of what `revs` (rev-list arguments, one a line) reaches.
    fn pack(&self, revs: &str) -> Vec<u8> {
        let out = git_run(
            &self.dir,
            &["pack-objects", "--revs", "--stdout", "-q"],
            Some(revs.as_bytes()),
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }
}

/// Objects of a git repository, read with `git cat-file`.
struct GitObjects(PathBuf);

impl ObjectSource for GitObjects {
    fn contains(&self, oid: &ObjectId) -> bool {
        self.object_kind(oid).is_some()
    }
    fn read_object(&self, oid: &ObjectId) -> Option<(ObjectKind, Vec<u8>)> {
        let kind = self.object_kind(oid)?;
        let out = git_run(&self.0, &["cat-file", kind.name(), &oid.to_hex()], None);
        out.status.success().then_some((kind, out.stdout))
    }
    fn object_kind(&self, oid: &ObjectId) -> Option<ObjectKind> {
        let out = git_run(&self.0, &["cat-file", "-t", &oid.to_hex()], None);
        if !out.status.success() {
            return None;
        }
        ObjectKind::from_name(String::from_utf8_lossy(&out.stdout).trim().as_bytes())
    }
}

/// git's verdict: `index-pack --strict --stdin` in a copy of `base` (or an
/// empty repository); Err(stderr) if it rejects.
fn git_verdict(pack: &[u8], base: Option<&Path>) -> Result<(), String> {
    let tmp = tempfile::tempdir().unwrap();
    match base {
        Some(b) => git(
            tmp.path(),
            &["clone", "-q", "--bare", b.to_str().unwrap(), "r.git"],
            None,
        ),
        None => git(tmp.path(), &["init", "-q", "--bare", "r.git"], None),
    };
    let out = git_run(
        &tmp.path().join("r.git"),
        &["index-pack", "--strict", "--stdin"],
        Some(pack),
    );
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// Our verdict, in a few chunkings and thread counts (all must agree).
fn our_verdict(pack: &[u8], repo: &dyn ObjectSource) -> Result<(), IngestError> {
    let mut first: Option<Result<(), String>> = None;
    let mut result = Ok(());
    for (chunk, threads) in [(pack.len().max(1), 1), (7, 2), (4096, 4)] {
        let dir = tempfile::tempdir().unwrap();
        let limits = IngestLimits {
            threads,
            ..IngestLimits::default()
        };
        let r = (|| {
            let mut ingest = Ingest::new(dir.path(), limits)?;
            for c in pack.chunks(chunk) {
                ingest.write(c)?;
            }
            ingest.finish(repo, &STRICT).map(|_| ())
        })();
        let shown = r.as_ref().map(|_| ()).map_err(ToString::to_string);
        match &first {
            None => first = Some(shown),
            Some(f) => assert_eq!(*f, shown, "verdict depends on chunking/threads"),
        }
        result = r;
    }
    result
}

/// Both verdicts agree; on rejection both name `expected`.
fn assert_agree(
    name: &str,
    pack: &[u8],
    base: Option<&Path>,
    repo: &dyn ObjectSource,
    expected: Option<&str>,
) {
    let git_says = git_verdict(pack, base);
    let ours = our_verdict(pack, repo);
    match (expected, &git_says, &ours) {
        (None, Ok(()), Ok(())) => {}
        (Some(id), Err(stderr), Err(IngestError::Fsck(e))) => {
            assert_eq!(e.problem.msg_id(), id, "{name}: our error {e}");
            assert!(
                stderr.contains(&format!("{id}:")),
                "{name}: git rejected for another reason: {stderr}"
            );
        }
        _ => panic!("{name}: expected {expected:?}; git: {git_says:?}; ours: {ours:?}"),
    }
}

/// A commit whose tree holds `name` (mode 100644 unless given) with `data`.
fn one_file_case(name: &[u8], data: &[u8]) -> (Repo, Vec<u8>) {
    let repo = Repo::new();
    let blob = repo.blob(data);
    let readme = repo.blob(b"hello\n");
    let mut entries: Vec<(&str, &str, &[u8])> =
        vec![("100644", &blob, name), ("100644", &readme, b"README")];
    entries.sort_by(|a, b| a.2.cmp(b.2));
    let tree = repo.tree(&entries);
    let commit = repo.commit(&tree, &[]);
    let pack = repo.pack(&format!("{commit}\n"));
    (repo, pack)
}

const GOOD_GITMODULES: &str =
    "[submodule \"lib\"]\n\tpath = lib\n\turl = https://example.com/lib.git\n";

#[test]
fn gitmodules_contents_agree_with_git() {
    let sub = |body: &str| format!("[submodule \"s\"]\n\tpath = s\n{body}\n");
    let cases: Vec<(&str, String, Option<&str>)> = vec![
        ("good", GOOD_GITMODULES.into(), None),
        (
            "url option",
            sub("\turl = --upload-pack=touch /tmp/pwned"),
            Some("gitmodulesUrl"),
        ),
        ("url -x", sub("\turl = -x"), Some("gitmodulesUrl")),
        (
            "quoted url option",
            sub("\turl = \"-x\""),
            Some("gitmodulesUrl"),
        ),
        (
            "continued url option",
            sub("\turl = \\\n-x"),
            Some("gitmodulesUrl"),
        ),
        (
            "url option, upper-case key",
            sub("\tURL = -x"),
            Some("gitmodulesUrl"),
        ),
        (
            "url option, same line as header",
            "[submodule \"x\"] url = -x\n".into(),
            Some("gitmodulesUrl"),
        ),
        (
            "url option, CRLF",
            "[submodule \"x\"]\r\n\turl = -x\r\n".into(),
            Some("gitmodulesUrl"),
        ),
        (
            "url comment is no option",
            sub("\turl = https://example.com/x ; -x"),
            None,
        ),
        (
            "name ../../modules/evil",
            "[submodule \"../../modules/evil\"]\n\tpath = x\n".into(),
            Some("gitmodulesName"),
        ),
        (
            "name a/../b",
            "[submodule \"a/../b\"]\n\tpath = x\n".into(),
            Some("gitmodulesName"),
        ),
        (
            "name with backslashes",
            "[submodule \"a\\\\..\\\\b\"]\n\tpath = x\n".into(),
            Some("gitmodulesName"),
        ),
        (
            "name ..",
            "[submodule \"..\"]\n\tpath = x\n".into(),
            Some("gitmodulesName"),
        ),
        (
            "name ..foo",
            "[submodule \"..foo\"]\n\tpath = x\n".into(),
            None,
        ),
        (
            "empty name",
            "[submodule \"\"]\n\tpath = x\n".into(),
            Some("gitmodulesName"),
        ),
        (
            "old-style section",
            "[submodule.Lib]\n\turl = -x\n".into(),
            Some("gitmodulesUrl"),
        ),
        (
            "upper-case section",
            "[SUBMODULE \"x\"]\n\turl = -x\n".into(),
            Some("gitmodulesUrl"),
        ),
        ("no subsection", "[submodule]\n\turl = -x\n".into(), None),
        ("other section", "[core]\n\turl = -x\n".into(), None),
        ("path -foo", sub("\tpath = -foo"), Some("gitmodulesPath")),
        ("path after NUL", sub("\tpath = a\0-b"), None),
        (
            "update !command",
            sub("\tupdate = !rm -rf /"),
            Some("gitmodulesUpdate"),
        ),
        ("update none", sub("\tupdate = none"), None),
        ("update quoted space", sub("\tupdate = \" !x\""), None),
        ("boolean url", sub("\turl"), None),
        (
            "parse error after bad entry",
            format!("{}[broken\n", sub("\turl = -x")),
            Some("gitmodulesUrl"),
        ),
        (
            "parse error before bad entry",
            format!("[broken\n{}", sub("\turl = -x")),
            None,
        ),
        (
            "bad escape before bad entry",
            format!("[a]\n\tb = \\q\n{}", sub("\turl = -x")),
            None,
        ),
        // check_submodule_url
        ("relative url", sub("\turl = ../lib.git"), None),
        (
            "relative url with encoded newline",
            sub("\turl = ./%0ahost"),
            Some("gitmodulesUrl"),
        ),
        (
            "relative url with escaped newline",
            sub("\turl = \"./a\\nb\""),
            Some("gitmodulesUrl"),
        ),
        (
            "relative url escaping to a colon",
            sub("\turl = ../../:evil.com/x"),
            Some("gitmodulesUrl"),
        ),
        (
            "relative url escaping to a slash",
            sub("\turl = ..//evil.com/x"),
            Some("gitmodulesUrl"),
        ),
        (
            "relative url, backslashes",
            sub("\turl = ..\\\\:x"),
            Some("gitmodulesUrl"),
        ),
        (
            "git:// with encoded newline",
            sub("\turl = git://host/%0a"),
            Some("gitmodulesUrl"),
        ),
        (
            "https with encoded newline",
            sub("\turl = https://example.com/%0a"),
            Some("gitmodulesUrl"),
        ),
        (
            "https with escaped newline",
            sub("\turl = \"https://example.com/\\n\""),
            Some("gitmodulesUrl"),
        ),
        (
            "https with %-sign in host",
            sub("\turl = https://ex%41mple.com/"),
            Some("gitmodulesUrl"),
        ),
        (
            "https with bad escape",
            sub("\turl = https://example.com/%zz"),
            Some("gitmodulesUrl"),
        ),
        (
            "https with bad user escape",
            sub("\turl = https://u:p%zz@example.com/"),
            Some("gitmodulesUrl"),
        ),
        (
            "https bad port",
            sub("\turl = http://example.com:99999/"),
            Some("gitmodulesUrl"),
        ),
        (
            "https zero port",
            sub("\turl = http://example.com:0/"),
            Some("gitmodulesUrl"),
        ),
        (
            "https padded port",
            sub("\turl = http://example.com:0080/x"),
            None,
        ),
        (
            "https .. above root",
            sub("\turl = https://example.com/../x"),
            Some("gitmodulesUrl"),
        ),
        (
            "https .. inside",
            sub("\turl = https://example.com/a/../b/./c"),
            None,
        ),
        ("https ipv6", sub("\turl = http://[::1]:8080/x"), None),
        (
            "https no host",
            sub("\turl = https:///x"),
            Some("gitmodulesUrl"),
        ),
        (
            "http:: without scheme",
            sub("\turl = http::example.com/x"),
            Some("gitmodulesUrl"),
        ),
        (
            "http:: file with port",
            sub("\turl = http::file://:80/x"),
            Some("gitmodulesUrl"),
        ),
        ("http:: file", sub("\turl = http::file:///x"), None),
        (
            "ftp encoded newline in query",
            sub("\turl = ftp://h/x?a=%0A"),
            Some("gitmodulesUrl"),
        ),
        ("https encoded NUL", sub("\turl = https://h/%00"), None),
        (
            "ssh lookalike",
            sub("\turl = ssh://-oProxyCommand=x/y"),
            None,
        ),
        ("scp-like", sub("\turl = git@example.com:x/y.git"), None),
    ];
    for (name, content, expected) in cases {
        let (_repo, pack) = one_file_case(b".gitmodules", content.as_bytes());
        assert_agree(name, &pack, None, &NoObjects, expected);
    }
}

#[test]
fn gitmodules_spellings_agree_with_git() {
    let bad = "[submodule \"s\"]\n\turl = --upload-pack=touch /tmp/pwned\n";
    for (name, expected) in [
        (&b".GITMODULES"[..], Some("gitmodulesUrl")),
        (b".GitModules", Some("gitmodulesUrl")),
        (b"GITMOD~1", Some("gitmodulesUrl")),
        (b"gi7eba~9", Some("gitmodulesUrl")),
        (b".gitmodules..", Some("gitmodulesUrl")),
        (b".gitmodules :x", Some("gitmodulesUrl")),
        (b".gi\xe2\x80\x8ctmodules", Some("gitmodulesUrl")),
        (b"a\\.gitmodules", Some("gitmodulesUrl")),
        (b".gitmodulesx", None),
        (b"gitmodules", None),
    ] {
        let (_repo, pack) = one_file_case(name, bad.as_bytes());
        assert_agree(
            &String::from_utf8_lossy(name),
            &pack,
            None,
            &NoObjects,
            expected,
        );
    }
}

#[test]
fn gitmodules_of_other_kinds_agree_with_git() {
    // a tree named .gitmodules
    let repo = Repo::new();
    let inner_blob = repo.blob(b"x\n");
    let inner = repo.tree(&[("100644", &inner_blob, b"x")]);
    let tree = repo.tree(&[("040000", &inner, b".gitmodules")]);
    let commit = repo.commit(&tree, &[]);
    assert_agree(
        "tree .gitmodules",
        &repo.pack(&format!("{commit}\n")),
        None,
        &NoObjects,
        Some("gitmodulesBlob"),
    );
    // the empty tree, which git always has
    let empty = repo.tree(&[]);
    let tree = repo.tree(&[("040000", &empty, b".gitmodules")]);
    let commit = repo.commit(&tree, &[]);
    let pack = repo.pack(&format!("{commit}\n^{empty}\n"));
    assert_agree(
        "empty tree .gitmodules",
        &pack,
        None,
        &NoObjects,
        Some("gitmodulesBlob"),
    );
    // a gitlink to a commit nobody has: only listed by index-pack
    let missing = "1234567890123456789012345678901234567890";
    let tree = repo.tree(&[("160000", missing, b".gitmodules")]);
    let commit = repo.commit(&tree, &[]);
    assert_agree(
        "gitlink .gitmodules",
        &repo.pack(&format!("{commit}\n")),
        None,
        &NoObjects,
        None,
    );
    // a gitlink to a commit in the pack: not a blob
    let tree = repo.tree(&[("160000", &commit, b".gitmodules")]);
    let top = repo.commit(&tree, &[&commit]);
    assert_agree(
        "gitlink .gitmodules to a present commit",
        &repo.pack(&format!("{top}\n")),
        None,
        &NoObjects,
        Some("gitmodulesBlob"),
    );
    // a symlink
    let target = repo.blob(b"elsewhere");
    let tree = repo.tree(&[("120000", &target, b".gitmodules")]);
    let commit = repo.commit(&tree, &[]);
    assert_agree(
        "symlink .gitmodules",
        &repo.pack(&format!("{commit}\n")),
        None,
        &NoObjects,
        Some("gitmodulesSymlink"),
    );
}

#[test]
fn gitattributes_agree_with_git() {
    let line = |n: usize| format!("{} text\n", "a".repeat(n - 5));
    for (name, content, expected) in [
        ("good", b"*.txt text\n*.png binary\n".to_vec(), None),
        (
            "3000-byte line",
            line(3000).into_bytes(),
            Some("gitattributesLineLength"),
        ),
        ("2047-byte line", line(2047).into_bytes(), None),
        (
            "2048-byte line",
            line(2048).into_bytes(),
            Some("gitattributesLineLength"),
        ),
        (
            "2048-byte last line without newline",
            "b".repeat(2048).into_bytes(),
            Some("gitattributesLineLength"),
        ),
        (
            "long line after a NUL",
            [b"x\0".to_vec(), line(3000).into_bytes()].concat(),
            None,
        ),
    ] {
        let (_repo, pack) = one_file_case(b".gitattributes", &content);
        assert_agree(name, &pack, None, &NoObjects, expected);
    }
    let (_repo, pack) = one_file_case(b".GITATTRIBUTES", line(3000).as_bytes());
    assert_agree(
        ".GITATTRIBUTES",
        &pack,
        None,
        &NoObjects,
        Some("gitattributesLineLength"),
    );
    let (_repo, pack) = one_file_case(b"gi7d29~1", line(3000).as_bytes());
    assert_agree(
        "gi7d29~1",
        &pack,
        None,
        &NoObjects,
        Some("gitattributesLineLength"),
    );

    let repo = Repo::new();
    // symlinked .gitattributes: an info only
    let target = repo.blob(b"elsewhere");
    let tree = repo.tree(&[("120000", &target, b".gitattributes")]);
    let commit = repo.commit(&tree, &[]);
    assert_agree(
        "symlink .gitattributes",
        &repo.pack(&format!("{commit}\n")),
        None,
        &NoObjects,
        None,
    );
    // a tree named .gitattributes
    let inner_blob = repo.blob(b"x\n");
    let inner = repo.tree(&[("100644", &inner_blob, b"x")]);
    let tree = repo.tree(&[("040000", &inner, b".gitattributes")]);
    let commit = repo.commit(&tree, &[]);
    assert_agree(
        "tree .gitattributes",
        &repo.pack(&format!("{commit}\n")),
        None,
        &NoObjects,
        Some("gitattributesBlob"),
    );
    // a gitlink to a missing commit: unlike .gitmodules, an error
    let tree = repo.tree(&[(
        "160000",
        "1234567890123456789012345678901234567890",
        b".gitattributes",
    )]);
    let commit = repo.commit(&tree, &[]);
    assert_agree(
        "gitlink .gitattributes",
        &repo.pack(&format!("{commit}\n")),
        None,
        &NoObjects,
        Some("gitattributesMissing"),
    );
}

/// The blob a new tree names `.gitmodules` may already be in the
/// repository (pushed earlier under another name): git's `fsck_finish`
/// reads it from there, and so do we.
#[test]
fn special_blobs_already_in_the_repository_are_checked() {
    let repo = Repo::new();
    let bad = repo.blob(b"[submodule \"s\"]\n\turl = -x\n");
    let good = repo.blob(GOOD_GITMODULES.as_bytes());
    let long = repo.blob(format!("{}\n", "x".repeat(3000)).as_bytes());
    let base_tree = repo.tree(&[
        ("100644", &good, b"a.txt"),
        ("100644", &bad, b"b.txt"),
        ("100644", &long, b"c.txt"),
    ]);
    let base = repo.commit(&base_tree, &[]);
    git(&repo.dir, &["update-ref", "refs/heads/main", &base], None);
    let source = GitObjects(repo.dir.clone());
    for (name, blob, file, expected) in [
        ("good .gitmodules", &good, &b".gitmodules"[..], None),
        (
            "bad .gitmodules",
            &bad,
            b".gitmodules",
            Some("gitmodulesUrl"),
        ),
        (
            "long-lined .gitattributes",
            &long,
            b".gitattributes",
            Some("gitattributesLineLength"),
        ),
    ] {
        let tree = repo.tree(&[("100644", blob, file)]);
        let commit = repo.commit(&tree, &[&base]);
        let pack = repo.pack(&format!("{commit}\n^{base}\n"));
        // the pack holds the new commit and tree only
        assert_eq!(
            u32::from_be_bytes(pack[8..12].try_into().unwrap()),
            2,
            "{name}"
        );
        assert_agree(name, &pack, Some(&repo.dir), &source, expected);
    }
}

/// `.gitmodules` blobs that are deltas in the pack are rebuilt for the check.
#[test]
fn deltified_gitmodules_are_checked() {
    let repo = Repo::new();
    let mut body = String::new();
    for i in 0..200 {
        body.push_str(&format!(
            "[submodule \"lib{i}\"]\n\tpath = lib{i}\n\turl = https://example.com/lib{i}.git\n"
        ));
    }
    let good = repo.blob(body.as_bytes());
    let c1 = repo.commit(&repo.tree(&[("100644", &good, b".gitmodules")]), &[]);
    let evil = body.replace(
        "url = https://example.com/lib150.git",
        "url = --upload-pack=touch /tmp/pwned",
    );
    let bad = repo.blob(evil.as_bytes());
    let c2 = repo.commit(&repo.tree(&[("100644", &bad, b".gitmodules")]), &[&c1]);
    let pack = repo.pack(&format!("{c2}\n"));
    let verify_tmp = tempfile::tempdir().unwrap();
    std::fs::write(verify_tmp.path().join("p.pack"), &pack).unwrap();
    git(verify_tmp.path(), &["index-pack", "p.pack"], None);
    let listing = git(verify_tmp.path(), &["verify-pack", "-v", "p.idx"], None);
    assert!(
        listing
            .lines()
            .any(|l| l.contains(" blob ") && l.split_whitespace().count() >= 7),
        "no blob delta in the pack:\n{listing}"
    );
    assert_agree(
        "deltified bad .gitmodules",
        &pack,
        None,
        &NoObjects,
        Some("gitmodulesUrl"),
    );
    let pack = repo.pack(&format!("{c1}\n"));
    assert_agree("good .gitmodules", &pack, None, &NoObjects, None);
}

/// git's fsck parses a `.gitmodules` blob with signed chars: a 0xff byte
/// ends the file for it, and a byte order mark is a syntax error, so
/// entries behind them go unchecked, though a checkout reads them. We
/// reject those; git accepts them. (A deliberate difference.)
#[test]
fn entries_hidden_from_gits_blob_parser_are_rejected() {
    for (name, content) in [
        (
            "behind 0xff",
            b"[submodule \"s\"]\n\tpath = s\xff\n\turl = --upload-pack=touch /tmp/pwned\n".to_vec(),
        ),
        (
            "behind a BOM",
            b"\xef\xbb\xbf[submodule \"s\"]\n\turl = --upload-pack=touch /tmp/pwned\n".to_vec(),
        ),
    ] {
        let (_repo, pack) = one_file_case(b".gitmodules", &content);
        assert!(
            git_verdict(&pack, None).is_ok(),
            "{name}: git now rejects it; drop the difference"
        );
        match our_verdict(&pack, &NoObjects) {
            Err(IngestError::Fsck(e)) => assert_eq!(e.problem.msg_id(), "gitmodulesUrl", "{name}"),
            r => panic!("{name}: {r:?}"),
        }
    }
    // a BOM before harmless entries is fine
    let (_repo, pack) = one_file_case(
        b".gitmodules",
        format!("\u{feff}{GOOD_GITMODULES}").as_bytes(),
    );
    assert!(git_verdict(&pack, None).is_ok());
    our_verdict(&pack, &NoObjects).unwrap();
}

#[test]
fn pure_checks_name_the_object_and_limits() {
    let oid = ObjectId::from_hex(b"1234567890123456789012345678901234567890").unwrap();
    let e = check_gitmodules(&oid, b"[submodule \"a\"]\nurl = -x\n").unwrap_err();
    assert_eq!(e.oid, oid);
    assert_eq!(e.problem.msg_id(), "gitmodulesUrl");
    assert!(
        e.to_string().contains("gitmodulesUrl") && e.to_string().contains(&oid.to_hex()),
        "{e}"
    );
    let big = vec![b'\n'; GITATTRIBUTES_MAX_BYTES as usize + 1];
    assert_eq!(
        check_gitattributes(&oid, &big)
            .unwrap_err()
            .problem
            .msg_id(),
        "gitattributesLarge"
    );
    check_gitattributes(&oid, &big[1..]).unwrap();
}

#[test]
fn too_many_special_blobs_is_a_named_limit() {
    let repo = Repo::new();
    let blobs: Vec<String> = (0..3)
        .map(|i| repo.blob(format!("*.x{i} text\n").as_bytes()))
        .collect();
    let trees: Vec<String> = blobs
        .iter()
        .map(|b| repo.tree(&[("100644", b, b".gitattributes")]))
        .collect();
    let mut parent: Option<String> = None;
    for t in &trees {
        let parents: Vec<&str> = parent.iter().map(String::as_str).collect();
        parent = Some(repo.commit(t, &parents));
    }
    let pack = repo.pack(&format!("{}\n", parent.unwrap()));
    for (max, ok) in [(3, true), (2, false)] {
        let dir = tempfile::tempdir().unwrap();
        let mut ingest = Ingest::new(
            dir.path(),
            IngestLimits {
                special_blobs_max: max,
                ..IngestLimits::default()
            },
        )
        .unwrap();
        ingest.write(&pack).unwrap();
        match ingest.finish(&NoObjects, &STRICT) {
            Ok(_) => assert!(ok),
            Err(IngestError::TooManySpecialBlobs { limit }) => {
                assert!(!ok);
                assert_eq!(limit, max);
            }
            Err(e) => panic!("{e}"),
        }
    }
}
