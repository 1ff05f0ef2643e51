//! Who may do what: API tokens, private repositories, and the checks the
//! HTTP front end makes with them.
//!
//! Reads of public repositories need nothing. Pushes, repository creation
//! and the admin API need a token, sent as the HTTP Basic password (so
//! stock git credential helpers work): the node's admin token (user
//! `admin`, kept in `DATA/admin.token`, local to this node) or a token
//! created through the API. Tokens are random ([`TOKEN_SECRET_BYTES`]
//! bytes), stored only as SHA-256 hashes and compared in constant time.
//!
//! The [`AccessTable`] (tokens and private repositories) changes only
//! through ordered transactions ([`crate::consensus::Op`]): every
//! shard applies them to its own copy in block order, and
//! [`crate::consensus::ACCESS_SHARD`] also writes the table to
//! [`ACCESS_FILE_NAME`] before the change is acknowledged. So every node
//! that applies the same blocks enforces the same rules.

use base64::Engine as _;
use http::HeaderMap;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::consensus::{Op, Transaction};
use crate::repo::check_name;

/// The node's admin token, in the data directory (mode 0600).
pub const ADMIN_TOKEN_FILE_NAME: &str = "admin.token";
/// The HTTP Basic user name that goes with the admin token.
pub const ADMIN_USER: &str = "admin";
/// The access table (tokens, private repositories), in the data directory.
pub const ACCESS_FILE_NAME: &str = "access.json";
/// Random bytes in a token's secret (256 bits).
pub const TOKEN_SECRET_BYTES: usize = 32;
/// What every token starts with, so it is recognisable in a leak scanner.
pub const TOKEN_PREFIX: &str = "guts_";
/// Longest `Authorization` header value accepted; anything longer is refused
/// before it is decoded.
pub const AUTHORIZATION_MAX_BYTES: usize = 1024;
/// Most tokens (live and revoked) in the access table.
pub const TOKENS_MAX: usize = 100_000;
/// Most private repositories in the access table.
pub const PRIVATE_REPOS_MAX: usize = 1_000_000;
/// Failed authentication attempts from one client address within one
/// window before further attempts are refused with 429.
pub const AUTH_FAILURES_MAX: u32 = 10;
/// The window over which failed attempts are counted.
pub const AUTH_FAILURE_WINDOW_MS: u64 = 60_000;
/// Client addresses whose failures one shard remembers.
pub const AUTH_FAILURE_ADDRESSES_MAX: usize = 65_536;
/// The realm of the `WWW-Authenticate` challenge.
pub const REALM: &str = "guts";

// ------------------------------------------------------------------ secrets

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// Compare two hashes in time that does not depend on where they differ.
pub fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let mut diff = 0u8;
    for (x, y) in a.iter().zip(b.iter()) {
        diff |= x ^ y;
    }
    std::hint::black_box(diff) == 0
}

/// Fill `buf` from the kernel's random source.
pub fn random_bytes(buf: &mut [u8]) -> std::io::Result<()> {
    let mut filled = 0;
    while filled < buf.len() {
        // SAFETY: getrandom writes at most `len` bytes into the slice we own.
        let n =
            unsafe { libc::getrandom(buf[filled..].as_mut_ptr().cast(), buf.len() - filled, 0) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        filled += n as usize;
    }
    Ok(())
}

/// A new random token: [`TOKEN_PREFIX`] and [`TOKEN_SECRET_BYTES`] in hex.
pub fn new_token() -> std::io::Result<String> {
    let mut secret = [0u8; TOKEN_SECRET_BYTES];
    random_bytes(&mut secret)?;
    let mut s = String::with_capacity(TOKEN_PREFIX.len() + 2 * TOKEN_SECRET_BYTES);
    s.push_str(TOKEN_PREFIX);
    for b in secret {
        s.push_str(&format!("{b:02x}"));
    }
    Ok(s)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex32(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, chunk) in s.as_bytes().chunks(2).enumerate() {
        let pair = std::str::from_utf8(chunk).ok()?;
        out[i] = u8::from_str_radix(pair, 16).ok()?;
    }
    Some(out)
}

/// Errors with the admin token file or the access table on disk.
#[derive(Debug, thiserror::Error)]
pub enum AccessFileError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is damaged: {reason} (it holds the API tokens and private repositories: restore it from a backup rather than delete it)")]
    Corrupt { path: PathBuf, reason: String },
    #[error("{path} is empty: write a token into it or remove it to have a new one made")]
    EmptyAdminToken { path: PathBuf },
}

fn io_at(path: &Path) -> impl FnOnce(std::io::Error) -> AccessFileError + '_ {
    move |source| AccessFileError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The node's admin token: read `DATA/admin.token`, or create it (mode
/// 0600, durably) on first start. Returns the token's SHA-256 and whether
/// it was created now. The token itself never leaves this function.
pub fn load_or_create_admin_token(data_dir: &Path) -> Result<([u8; 32], bool), AccessFileError> {
    let path = data_dir.join(ADMIN_TOKEN_FILE_NAME);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let token = text.trim();
            if token.is_empty() {
                return Err(AccessFileError::EmptyAdminToken { path });
            }
            return Ok((sha256(token.as_bytes()), false));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_at(&path)(e)),
    }
    let token = new_token().map_err(io_at(&path))?;
    write_admin_token(data_dir, &token)?;
    Ok((sha256(token.as_bytes()), true))
}

/// Write `token` as the node's admin token in `data_dir` (mode 0600,
/// durably: temporary file, fsync, rename, directory fsync). `devnet init`
/// writes one token to every node so one token is valid everywhere.
pub fn write_admin_token(data_dir: &Path, token: &str) -> Result<(), AccessFileError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = data_dir.join(ADMIN_TOKEN_FILE_NAME);
    let tmp = data_dir.join(format!("{ADMIN_TOKEN_FILE_NAME}.tmp"));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io_at(&tmp))?;
    f.write_all(format!("{token}\n").as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(io_at(&tmp))?;
    drop(f);
    std::fs::rename(&tmp, &path).map_err(io_at(&path))?;
    sync_dir(data_dir)
}

fn sync_dir(dir: &Path) -> Result<(), AccessFileError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_at(dir))
}

// ------------------------------------------------------------- access table

/// One API token as the access table keeps it (never the secret).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TokenRecord {
    /// Assigned in order of creation, from 1.
    pub id: u64,
    /// The HTTP Basic user name that goes with it.
    pub user: String,
    /// `OWNER/NAME` it is limited to; `None`: every repository.
    pub repo: Option<String>,
    /// May push (and create repositories within its scope).
    pub write: bool,
    /// May do everything, the admin API included.
    pub admin: bool,
    /// SHA-256 of the token, hex.
    pub sha256: String,
    /// Seconds since the Unix epoch.
    pub created_unix_s: u64,
    /// Revoked tokens stay listed but authenticate nobody.
    pub revoked: bool,
}

/// What the table file holds.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct AccessFile {
    version: u32,
    next_token_id: u64,
    tokens: Vec<TokenRecord>,
    private_repos: Vec<String>,
}

const ACCESS_FILE_VERSION: u32 = 1;

/// Tokens and private repositories: the state ordered access changes build.
#[derive(Debug, Clone, Default)]
pub struct AccessTable {
    tokens: BTreeMap<u64, TokenRecord>,
    /// Live tokens by the first 8 bytes of their hash (the full hash is
    /// then compared in constant time).
    index: HashMap<u64, Vec<(u64, [u8; 32])>>,
    private: BTreeSet<String>,
    next_token_id: u64,
}

fn index_key(hash: &[u8; 32]) -> u64 {
    let mut k = [0u8; 8];
    k.copy_from_slice(&hash[..8]);
    u64::from_le_bytes(k)
}

/// The outcome of applying an access change: the token id a creation got.
pub type AccessOutcome = Result<Option<u64>, String>;

impl AccessTable {
    /// Load `DATA/access.json`; an absent file is an empty table.
    pub fn load(data_dir: &Path) -> Result<AccessTable, AccessFileError> {
        let path = data_dir.join(ACCESS_FILE_NAME);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(AccessTable {
                    next_token_id: 1,
                    ..AccessTable::default()
                })
            }
            Err(e) => return Err(io_at(&path)(e)),
        };
        let corrupt = |reason: String| AccessFileError::Corrupt {
            path: path.clone(),
            reason,
        };
        let file: AccessFile =
            serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
        if file.version != ACCESS_FILE_VERSION {
            return Err(corrupt(format!("unknown version {}", file.version)));
        }
        let mut table = AccessTable {
            next_token_id: file.next_token_id.max(1),
            ..AccessTable::default()
        };
        for t in file.tokens {
            let hash =
                unhex32(&t.sha256).ok_or_else(|| corrupt(format!("token {}: bad sha256", t.id)))?;
            if t.id >= table.next_token_id {
                return Err(corrupt(format!("token {} is past next_token_id", t.id)));
            }
            if !t.revoked {
                table
                    .index
                    .entry(index_key(&hash))
                    .or_default()
                    .push((t.id, hash));
            }
            table.tokens.insert(t.id, t);
        }
        table.private = file.private_repos.into_iter().collect();
        Ok(table)
    }

    /// Write the table to `DATA/access.json` durably (temporary file, fsync,
    /// rename, directory fsync).
    pub fn save(&self, data_dir: &Path) -> Result<(), AccessFileError> {
        use std::io::Write;
        let path = data_dir.join(ACCESS_FILE_NAME);
        let tmp = data_dir.join(format!("{ACCESS_FILE_NAME}.tmp"));
        let file = AccessFile {
            version: ACCESS_FILE_VERSION,
            next_token_id: self.next_token_id,
            tokens: self.tokens.values().cloned().collect(),
            private_repos: self.private.iter().cloned().collect(),
        };
        let mut text = serde_json::to_vec_pretty(&file).map_err(|e| AccessFileError::Corrupt {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        text.push(b'\n');
        let mut f = std::fs::File::create(&tmp).map_err(io_at(&tmp))?;
        f.write_all(&text)
            .and_then(|_| f.sync_all())
            .map_err(io_at(&tmp))?;
        drop(f);
        std::fs::rename(&tmp, &path).map_err(io_at(&path))?;
        sync_dir(data_dir)
    }

    /// Apply one ordered access change. Deterministic: every node applying
    /// the same changes in the same order gets the same table and outcomes.
    /// Applying a creation again (a replayed block) finds the same token.
    pub fn apply(&mut self, tx: &Transaction) -> AccessOutcome {
        match &tx.op {
            Op::Update { .. } | Op::CreateRepo => Err("not an access change".into()),
            Op::TokenCreate {
                user,
                scope: repo,
                write,
                admin,
                secret_sha256,
                created_unix_s,
            } => {
                check_user(user)?;
                if let Some(r) = repo {
                    check_repo_key(r)?;
                }
                if let Some(existing) = self.tokens.values().find(|t| {
                    unhex32(&t.sha256).is_some_and(|h| constant_time_eq(&h, secret_sha256))
                }) {
                    return Ok(Some(existing.id));
                }
                if self.tokens.len() >= TOKENS_MAX {
                    return Err(format!("the token table is full ({TOKENS_MAX} tokens)"));
                }
                let id = self.next_token_id.max(1);
                self.next_token_id = id + 1;
                self.tokens.insert(
                    id,
                    TokenRecord {
                        id,
                        user: user.clone(),
                        repo: repo.clone(),
                        write: *write,
                        admin: *admin,
                        sha256: hex(secret_sha256),
                        created_unix_s: *created_unix_s,
                        revoked: false,
                    },
                );
                self.index
                    .entry(index_key(secret_sha256))
                    .or_default()
                    .push((id, *secret_sha256));
                Ok(Some(id))
            }
            Op::TokenRevoke { token_id } => {
                let Some(t) = self.tokens.get_mut(token_id) else {
                    return Err(format!("no token {token_id}"));
                };
                t.revoked = true;
                let key = unhex32(&t.sha256).map(|h| index_key(&h));
                if let Some(list) = key.and_then(|k| self.index.get_mut(&k)) {
                    list.retain(|(id, _)| id != token_id);
                }
                Ok(None)
            }
            Op::SetVisibility { private } => {
                let repo = &tx.repo;
                check_repo_key(repo)?;
                if *private {
                    if self.private.len() >= PRIVATE_REPOS_MAX && !self.private.contains(repo) {
                        return Err(format!(
                            "too many private repositories ({PRIVATE_REPOS_MAX})"
                        ));
                    }
                    self.private.insert(repo.clone());
                } else {
                    self.private.remove(repo);
                }
                Ok(None)
            }
        }
    }

    /// The live token whose hash is `hash`, if any.
    pub fn find(&self, hash: &[u8; 32]) -> Option<&TokenRecord> {
        let candidates = self.index.get(&index_key(hash))?;
        let mut found = None;
        for (id, h) in candidates {
            if constant_time_eq(h, hash) {
                found = Some(*id);
            }
        }
        self.tokens.get(&found?)
    }

    /// Every token, live and revoked, in id order.
    pub fn tokens(&self) -> impl Iterator<Item = &TokenRecord> {
        self.tokens.values()
    }

    /// A token by id.
    pub fn token(&self, id: u64) -> Option<&TokenRecord> {
        self.tokens.get(&id)
    }

    /// Whether `OWNER/NAME` is private.
    pub fn is_private(&self, repo: &str) -> bool {
        self.private.contains(repo)
    }
}

/// A user name: the rules of an owner name, and not [`ADMIN_USER`].
pub fn check_user(user: &str) -> Result<(), String> {
    check_name("user", user).map_err(|e| e.to_string())?;
    if user.eq_ignore_ascii_case(ADMIN_USER) {
        return Err(format!(
            "the user name {ADMIN_USER} is reserved for the node's admin token"
        ));
    }
    Ok(())
}

/// `OWNER/NAME` with both parts valid names.
pub fn check_repo_key(repo: &str) -> Result<(), String> {
    let Some((owner, name)) = repo.split_once('/') else {
        return Err(format!("expected OWNER/NAME, got {repo:?}"));
    };
    check_name("owner", owner)
        .and_then(|_| check_name("repository name", name))
        .map_err(|e| e.to_string())
}

// ------------------------------------------------------------------ callers

/// What an authenticated token may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub id: u64,
    pub user: String,
    pub repo: Option<String>,
    pub write: bool,
    pub admin: bool,
}

impl Grant {
    fn covers(&self, repo: &str) -> bool {
        self.admin || self.repo.as_deref().is_none_or(|r| r == repo)
    }
}

/// Who is asking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// No credentials.
    Anonymous,
    /// The node's admin token.
    Admin,
    /// An API token.
    Token(Grant),
}

impl Caller {
    /// May read `repo` (public repositories: everyone).
    pub fn can_read(&self, repo: &str, private: bool) -> bool {
        match self {
            _ if !private => true,
            Caller::Anonymous => false,
            Caller::Admin => true,
            Caller::Token(g) => g.covers(repo),
        }
    }

    /// May push to `repo`, or create it.
    pub fn can_write(&self, repo: &str) -> bool {
        match self {
            Caller::Anonymous => false,
            Caller::Admin => true,
            Caller::Token(g) => g.admin || (g.write && g.covers(repo)),
        }
    }

    /// May use the admin API (tokens, visibility).
    pub fn is_admin(&self) -> bool {
        match self {
            Caller::Anonymous => false,
            Caller::Admin => true,
            Caller::Token(g) => g.admin,
        }
    }

    /// Who, for logs: `-`, `admin`, or `USER#ID`.
    pub fn label(&self) -> String {
        match self {
            Caller::Anonymous => "-".into(),
            Caller::Admin => ADMIN_USER.into(),
            Caller::Token(g) => format!("{}#{}", g.user, g.id),
        }
    }
}

// --------------------------------------------------------- the HTTP header

/// Credentials from an `Authorization: Basic` header.
#[derive(Clone, PartialEq, Eq)]
pub struct BasicCredentials {
    pub user: String,
    pub password: String,
}

impl std::fmt::Debug for BasicCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BasicCredentials")
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Why an `Authorization` header was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("more than one Authorization header")]
    Repeated,
    #[error("Authorization header of {len} bytes exceeds the limit of {limit}")]
    TooLong { len: usize, limit: usize },
    #[error("Authorization header is not visible ASCII")]
    NotText,
    #[error("unsupported authorization scheme {0:?}: send the API token as the password of HTTP Basic authorization")]
    UnknownScheme(String),
    #[error("Basic credentials are not valid base64")]
    BadBase64,
    #[error("Basic credentials must be USER:TOKEN")]
    NoColon,
    #[error("Basic credentials contain control characters or are not UTF-8")]
    BadCharacters,
}

impl HeaderError {
    /// Malformed headers get 400; an unknown scheme gets 401 and the
    /// challenge, so a client that can do Basic learns to.
    pub fn is_bad_request(&self) -> bool {
        !matches!(self, HeaderError::UnknownScheme(_))
    }
}

/// The credentials a request carries, if any.
pub fn parse_authorization(headers: &HeaderMap) -> Result<Option<BasicCredentials>, HeaderError> {
    let mut values = headers.get_all(http::header::AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(HeaderError::Repeated);
    }
    let raw = value.as_bytes();
    if raw.len() > AUTHORIZATION_MAX_BYTES {
        return Err(HeaderError::TooLong {
            len: raw.len(),
            limit: AUTHORIZATION_MAX_BYTES,
        });
    }
    let text = value.to_str().map_err(|_| HeaderError::NotText)?.trim();
    let (scheme, rest) = text.split_once(' ').unwrap_or((text, ""));
    if !scheme.eq_ignore_ascii_case("basic") {
        let shown: String = scheme.chars().take(32).collect();
        return Err(HeaderError::UnknownScheme(shown));
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(rest.trim())
        .map_err(|_| HeaderError::BadBase64)?;
    let decoded = String::from_utf8(decoded).map_err(|_| HeaderError::BadCharacters)?;
    if decoded.chars().any(char::is_control) {
        return Err(HeaderError::BadCharacters);
    }
    let (user, password) = decoded.split_once(':').ok_or(HeaderError::NoColon)?;
    Ok(Some(BasicCredentials {
        user: user.to_string(),
        password: password.to_string(),
    }))
}

/// Check credentials against the admin token and the access table.
pub fn verify(
    creds: &BasicCredentials,
    admin_sha256: &[u8; 32],
    table: &AccessTable,
) -> Option<Caller> {
    let hash = sha256(creds.password.as_bytes());
    if creds.user == ADMIN_USER {
        return constant_time_eq(&hash, admin_sha256).then_some(Caller::Admin);
    }
    let t = table.find(&hash)?;
    (t.user == creds.user).then(|| {
        Caller::Token(Grant {
            id: t.id,
            user: t.user.clone(),
            repo: t.repo.clone(),
            write: t.write,
            admin: t.admin,
        })
    })
}

// ------------------------------------------------------------ rate limiting

/// Failed attempts per client address, within fixed windows. One per shard
/// (connections of one client may land on several shards, so a client gets
/// at most the limit per shard).
#[derive(Debug)]
pub struct FailureLimiter {
    entries: HashMap<IpAddr, (Instant, u32)>,
    max: u32,
    window: Duration,
}

impl FailureLimiter {
    /// At most `max` failures per `window_ms` per address.
    pub fn new(max: u32, window_ms: u64) -> Self {
        FailureLimiter {
            entries: HashMap::new(),
            max,
            window: Duration::from_millis(window_ms),
        }
    }

    /// If `ip` is refused now, for how much longer.
    pub fn blocked(&mut self, ip: IpAddr, now: Instant) -> Option<Duration> {
        let (start, count) = *self.entries.get(&ip)?;
        let end = start + self.window;
        if now >= end {
            self.entries.remove(&ip);
            return None;
        }
        (count >= self.max).then(|| end - now)
    }

    /// Count a failure from `ip`.
    pub fn record_failure(&mut self, ip: IpAddr, now: Instant) {
        if !self.entries.contains_key(&ip) && self.entries.len() >= AUTH_FAILURE_ADDRESSES_MAX {
            let window = self.window;
            self.entries.retain(|_, (start, _)| now < *start + window);
            if self.entries.len() >= AUTH_FAILURE_ADDRESSES_MAX {
                // Still full: forget the oldest window.
                if let Some(oldest) = self
                    .entries
                    .iter()
                    .min_by_key(|(_, (start, _))| *start)
                    .map(|(ip, _)| *ip)
                {
                    self.entries.remove(&oldest);
                }
            }
        }
        let entry = self.entries.entry(ip).or_insert((now, 0));
        if now >= entry.0 + self.window {
            *entry = (now, 0);
        }
        entry.1 = entry.1.saturating_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(values: &[&[u8]]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(
                http::header::AUTHORIZATION,
                HeaderValue::from_bytes(v).unwrap(),
            );
        }
        h
    }

    fn basic(user_pass: &[u8]) -> Vec<u8> {
        let mut v = b"Basic ".to_vec();
        v.extend_from_slice(
            base64::engine::general_purpose::STANDARD
                .encode(user_pass)
                .as_bytes(),
        );
        v
    }

    #[test]
    fn parses_basic_and_refuses_the_rest() {
        assert_eq!(parse_authorization(&HeaderMap::new()), Ok(None));
        let ok = parse_authorization(&headers(&[&basic(b"alice:guts_x:y")])).unwrap();
        assert_eq!(
            ok,
            Some(BasicCredentials {
                user: "alice".into(),
                password: "guts_x:y".into()
            })
        );
        let err = |v: &[u8]| parse_authorization(&headers(&[v])).unwrap_err();
        assert_eq!(
            err(b"Bearer abc"),
            HeaderError::UnknownScheme("Bearer".into())
        );
        assert_eq!(err(b"Basic !!!"), HeaderError::BadBase64);
        assert_eq!(err(&basic(b"no-colon")), HeaderError::NoColon);
        assert_eq!(err(&basic(b"alice:tok\0en")), HeaderError::BadCharacters);
        assert_eq!(err(&basic(b"alice:\xff\xfe")), HeaderError::BadCharacters);
        assert_eq!(err(b"Basic \xff"), HeaderError::NotText);
        let long = vec![b'a'; AUTHORIZATION_MAX_BYTES + 1];
        assert!(matches!(err(&long), HeaderError::TooLong { .. }));
        assert_eq!(
            parse_authorization(&headers(&[b"Basic a", b"Basic b"])),
            Err(HeaderError::Repeated)
        );
        assert!(!HeaderError::UnknownScheme("x".into()).is_bad_request());
        assert!(HeaderError::BadBase64.is_bad_request());
    }

    fn access(op: Op, repo: &str) -> Transaction {
        Transaction {
            id: crate::consensus::TxId {
                origin: 0,
                nonce: 1,
            },
            shard: 0,
            repo: repo.into(),
            op,
        }
    }

    fn revoke(token_id: u64) -> Transaction {
        access(Op::TokenRevoke { token_id }, "")
    }

    fn create(user: &str, repo: Option<&str>, write: bool, secret: &str) -> Transaction {
        access(
            Op::TokenCreate {
                user: user.into(),
                scope: repo.map(str::to_string),
                write,
                admin: false,
                secret_sha256: sha256(secret.as_bytes()),
                created_unix_s: 1,
            },
            "",
        )
    }

    #[test]
    fn tokens_are_found_by_hash_and_revocation_sticks() {
        let mut t = AccessTable::load(Path::new("/nonexistent")).unwrap();
        assert_eq!(t.apply(&create("alice", None, true, "s1")), Ok(Some(1)));
        assert_eq!(
            t.apply(&create("bob", Some("a/b"), false, "s2")),
            Ok(Some(2))
        );
        // A replayed creation finds the same token.
        assert_eq!(t.apply(&create("alice", None, true, "s1")), Ok(Some(1)));
        let admin = sha256(b"admin-secret");
        let creds = |u: &str, p: &str| BasicCredentials {
            user: u.into(),
            password: p.into(),
        };
        assert_eq!(
            verify(&creds("admin", "admin-secret"), &admin, &t),
            Some(Caller::Admin)
        );
        assert_eq!(verify(&creds("admin", "s1"), &admin, &t), None);
        assert_eq!(verify(&creds("bob", "s1"), &admin, &t), None, "wrong user");
        let alice = verify(&creds("alice", "s1"), &admin, &t).unwrap();
        assert!(alice.can_write("x/y") && !alice.is_admin());
        let bob = verify(&creds("bob", "s2"), &admin, &t).unwrap();
        assert!(!bob.can_write("a/b"));
        assert!(bob.can_read("a/b", true) && !bob.can_read("a/c", true));
        assert!(Caller::Anonymous.can_read("a/c", false));
        assert!(!Caller::Anonymous.can_read("a/c", true));
        assert_eq!(t.apply(&revoke(1)), Ok(None));
        assert_eq!(verify(&creds("alice", "s1"), &admin, &t), None);
        assert!(t.apply(&revoke(7)).is_err());
        assert!(t.apply(&create("admin", None, true, "s3")).is_err());
        assert!(t.apply(&create("ok", Some("nope"), true, "s3")).is_err());
    }

    #[test]
    fn table_survives_a_save_and_load() {
        let dir = tempfile::tempdir().unwrap();
        let mut t = AccessTable::load(dir.path()).unwrap();
        t.apply(&create("alice", Some("a/b"), true, "s1")).unwrap();
        t.apply(&create("carol", None, false, "s2")).unwrap();
        t.apply(&revoke(2)).unwrap();
        t.apply(&access(Op::SetVisibility { private: true }, "a/b"))
            .unwrap();
        t.save(dir.path()).unwrap();
        let u = AccessTable::load(dir.path()).unwrap();
        assert_eq!(
            u.tokens().cloned().collect::<Vec<_>>(),
            t.tokens().cloned().collect::<Vec<_>>()
        );
        assert!(u.is_private("a/b"));
        assert!(u.find(&sha256(b"s1")).is_some());
        assert!(u.find(&sha256(b"s2")).is_none(), "revoked");
        std::fs::write(dir.path().join(ACCESS_FILE_NAME), b"{\"version\":1,").unwrap();
        assert!(matches!(
            AccessTable::load(dir.path()),
            Err(AccessFileError::Corrupt { .. })
        ));
    }

    #[test]
    fn admin_token_is_made_once_with_mode_0600() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let (h1, created) = load_or_create_admin_token(dir.path()).unwrap();
        assert!(created);
        let path = dir.path().join(ADMIN_TOKEN_FILE_NAME);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let token = std::fs::read_to_string(&path).unwrap();
        assert!(token.starts_with(TOKEN_PREFIX) && token.trim().len() == 5 + 64);
        assert_eq!(h1, sha256(token.trim().as_bytes()));
        let (h2, created) = load_or_create_admin_token(dir.path()).unwrap();
        assert!(!created);
        assert_eq!(h1, h2);
    }

    #[test]
    fn limiter_blocks_after_the_limit_until_the_window_ends() {
        let mut l = FailureLimiter::new(3, 1000);
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(l.blocked(ip, t0), None);
            l.record_failure(ip, t0);
        }
        let left = l.blocked(ip, t0 + Duration::from_millis(400)).unwrap();
        assert_eq!(left, Duration::from_millis(600));
        assert_eq!(l.blocked("10.0.0.2".parse().unwrap(), t0), None);
        assert_eq!(l.blocked(ip, t0 + Duration::from_millis(1000)), None);
    }
}
