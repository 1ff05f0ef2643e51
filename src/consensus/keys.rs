//! Validator keys on disk and on the command line: ed25519, 64 hex digits.
//! The key is never logged; only its public half is printed.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use super::engine::SecretKey;

/// Why a key could not be read.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("private key: expected 64 hex digits")]
    Malformed,
    #[error("private key file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "private key file {path} is readable by other users (mode {mode:o}); run chmod 600 on it"
    )]
    Permissions { path: String, mode: u32 },
}

/// A key from 64 hex digits.
pub fn from_hex(s: &str) -> Result<SecretKey, KeyError> {
    SecretKey::from_hex(s.trim()).map_err(|_| KeyError::Malformed)
}

/// Read a key file written by `keygen` (refused if others may read it).
pub fn load(path: &Path) -> Result<SecretKey, KeyError> {
    use std::os::unix::fs::PermissionsExt;
    let shown = path.display().to_string();
    let meta = std::fs::metadata(path).map_err(|source| KeyError::Read {
        path: shown.clone(),
        source,
    })?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(KeyError::Permissions { path: shown, mode });
    }
    let text = std::fs::read_to_string(path).map_err(|source| KeyError::Read {
        path: shown,
        source,
    })?;
    from_hex(&text)
}

/// Write `key` to `path` (mode 0600; an existing file is never overwritten)
/// and fsync it.
pub fn save(key: &SecretKey, path: &Path) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(format!("{}\n", key.to_hex()).as_bytes())?;
    f.sync_all()
}

/// The key at `path`, created there if absent (a full node's identity).
pub fn load_or_create(path: &Path) -> Result<SecretKey, KeyError> {
    if !path.exists() {
        let key = SecretKey::generate();
        save(&key, path).map_err(|source| KeyError::Read {
            path: path.display().to_string(),
            source,
        })?;
        return Ok(key);
    }
    load(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn round_trips_through_a_file_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        let k = SecretKey::generate();
        save(&k, &path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(load(&path).unwrap().public(), k.public());
        assert!(
            save(&k, &path).is_err(),
            "an existing key file is never overwritten"
        );
        assert!(
            !format!("{k:?}").contains(&k.to_hex()),
            "Debug shows no secret"
        );
    }

    #[test]
    fn refuses_malformed_and_exposed_keys() {
        assert!(from_hex("12").is_err());
        assert!(from_hex(&"zz".repeat(32)).is_err());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        std::fs::write(&path, "ab".repeat(32)).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(load(&path), Err(KeyError::Permissions { .. })));
    }
}
