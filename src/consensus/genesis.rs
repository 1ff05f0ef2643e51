//! The genesis file: the chain id, the validator set and the consensus
//! timing, shared verbatim by every node of a network.
//!
//! ```json
//! {"chain_id": "guts-devnet",
//!  "validators": [{"name": "v0", "pubkey": "<64 hex>", "addr": "127.0.0.1:9000"}],
//!  "consensus": {"leader_timeout_ms": 1000, "notarization_timeout_ms": 2000,
//!                "nullify_retry_ms": 5000, "max_batch_updates": 4096,
//!                "max_batch_delay_ms": 0}}
//! ```
//!
//! Every field is checked at start; an error names the field that is wrong.

use std::net::SocketAddr;
use std::path::Path;

/// Most validators a genesis may name.
pub const VALIDATORS_MAX: usize = 128;
/// Longest chain id, in bytes.
pub const CHAIN_ID_MAX_BYTES: usize = 64;

/// Consensus timing and batching, from the genesis file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsensusParams {
    /// How long a view waits for the leader's proposal.
    pub leader_timeout_ms: u64,
    /// How long a view waits for a notarization before nullifying.
    pub notarization_timeout_ms: u64,
    /// How often a nullify vote is re-broadcast while a view is stuck.
    pub nullify_retry_ms: u64,
    /// Most ref updates in one block.
    pub max_batch_updates: usize,
    /// Longest a leader waits for more transactions before proposing.
    pub max_batch_delay_ms: u64,
}

impl Default for ConsensusParams {
    fn default() -> Self {
        ConsensusParams {
            leader_timeout_ms: 1000,
            notarization_timeout_ms: 2000,
            nullify_retry_ms: 5000,
            max_batch_updates: 4096,
            max_batch_delay_ms: 0,
        }
    }
}

/// One validator as the genesis file names it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValidatorEntry {
    pub name: String,
    /// ed25519 public key, 64 hex digits.
    pub pubkey: String,
    /// `HOST:P2P_PORT` where the validator accepts peers.
    pub addr: String,
    /// Voting weight; validators have equal weight, so only 1 is accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u64>,
    /// Where the validator serves git over HTTP (`http://HOST:PORT`), so a
    /// read replica can tell pushing clients where to go.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_url: Option<String>,
}

/// A full node (read replica) the validators let in: it follows the
/// finalized chain without voting.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FollowerEntry {
    pub name: String,
    pub pubkey: String,
    /// The address it connects from (only the IP is checked).
    pub addr: String,
}

/// The genesis file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenesisFile {
    pub chain_id: String,
    pub validators: Vec<ValidatorEntry>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub followers: Vec<FollowerEntry>,
    #[serde(default)]
    pub consensus: ConsensusParams,
}

/// A validator after checking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Validator {
    pub name: String,
    pub pubkey: [u8; 32],
    pub addr: SocketAddr,
    pub api_url: Option<String>,
}

/// A checked genesis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Genesis {
    pub chain_id: String,
    /// In file order; a validator's index is its position here.
    pub validators: Vec<Validator>,
    /// Full nodes allowed to follow (same shape; `api_url` unused).
    pub followers: Vec<Validator>,
    pub consensus: ConsensusParams,
}

/// What is wrong with a genesis file.
#[derive(Debug, thiserror::Error)]
pub enum GenesisError {
    #[error("reading genesis file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("genesis file {path}: {source}")]
    Parse {
        path: String,
        source: serde_json::Error,
    },
    #[error("genesis field {field}: {reason}")]
    Field { field: String, reason: String },
}

fn field(field: impl Into<String>, reason: impl Into<String>) -> GenesisError {
    GenesisError::Field {
        field: field.into(),
        reason: reason.into(),
    }
}

/// Decode 64 hex digits into 32 bytes.
/// A peer entry's public key and p2p address, or the error naming the
/// field (`at` turns a field name into its path in the file).
fn key_and_addr(
    pubkey: &str,
    addr: &str,
    at: impl Fn(&str) -> String,
) -> Result<([u8; 32], SocketAddr), GenesisError> {
    let pubkey = parse_hex32(pubkey).ok_or_else(|| {
        field(
            at("pubkey"),
            "must be an ed25519 public key as 64 hex digits",
        )
    })?;
    let addr = addr
        .parse()
        .map_err(|_| field(at("addr"), format!("{addr:?} is not HOST:PORT")))?;
    Ok((pubkey, addr))
}

pub fn parse_hex32(s: &str) -> Option<[u8; 32]> {
    let s = s.trim();
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, chunk) in s.as_bytes().chunks(2).enumerate() {
        let hi = (chunk[0] as char).to_digit(16)?;
        let lo = (chunk[1] as char).to_digit(16)?;
        out[i] = (hi * 16 + lo) as u8;
    }
    Some(out)
}

/// Lower-case hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

impl Genesis {
    /// Read and check a genesis file.
    pub fn load(path: &Path) -> Result<Genesis, GenesisError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| GenesisError::Read {
            path: shown.clone(),
            source,
        })?;
        let file: GenesisFile =
            serde_json::from_str(&text).map_err(|source| GenesisError::Parse {
                path: shown,
                source,
            })?;
        Genesis::check(file)
    }

    /// Check a parsed genesis file.
    pub fn check(file: GenesisFile) -> Result<Genesis, GenesisError> {
        if file.chain_id.is_empty() || file.chain_id.len() > CHAIN_ID_MAX_BYTES {
            return Err(field(
                "chain_id",
                format!("must be 1 to {CHAIN_ID_MAX_BYTES} bytes"),
            ));
        }
        if !file
            .chain_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            return Err(field(
                "chain_id",
                "may contain only letters, digits, '-', '_' and '.'",
            ));
        }
        if file.validators.is_empty() {
            return Err(field("validators", "must name at least one validator"));
        }
        if file.validators.len() > VALIDATORS_MAX {
            return Err(field(
                "validators",
                format!("at most {VALIDATORS_MAX} validators"),
            ));
        }
        let mut validators = Vec::with_capacity(file.validators.len());
        for (i, v) in file.validators.iter().enumerate() {
            let at = |f: &str| format!("validators[{i}].{f}");
            if v.name.is_empty() || v.name.len() > 64 {
                return Err(field(at("name"), "must be 1 to 64 bytes"));
            }
            let (pubkey, addr) = key_and_addr(&v.pubkey, &v.addr, at)?;
            if let Some(w) = v.weight {
                if w != 1 {
                    return Err(field(
                        at("weight"),
                        format!("is {w}; validators have equal weight, so it must be 1 or absent"),
                    ));
                }
            }
            if validators.iter().any(|o: &Validator| o.pubkey == pubkey) {
                return Err(field(at("pubkey"), "names a validator twice"));
            }
            if validators.iter().any(|o: &Validator| o.name == v.name) {
                return Err(field(at("name"), "is used twice"));
            }
            if validators.iter().any(|o: &Validator| o.addr == addr) {
                return Err(field(at("addr"), "is used twice"));
            }
            if let Some(url) = &v.api_url {
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    return Err(field(at("api_url"), "must start with http:// or https://"));
                }
            }
            validators.push(Validator {
                name: v.name.clone(),
                pubkey,
                addr,
                api_url: v.api_url.clone(),
            });
        }
        let mut followers: Vec<Validator> = Vec::new();
        for (i, v) in file.followers.iter().enumerate() {
            let at = |f: &str| format!("followers[{i}].{f}");
            let (pubkey, addr) = key_and_addr(&v.pubkey, &v.addr, at)?;
            if validators
                .iter()
                .chain(&followers)
                .any(|o| o.pubkey == pubkey)
            {
                return Err(field(at("pubkey"), "is listed twice"));
            }
            followers.push(Validator {
                name: v.name.clone(),
                pubkey,
                addr,
                api_url: None,
            });
        }
        let c = &file.consensus;
        if c.leader_timeout_ms == 0 || c.leader_timeout_ms > 600_000 {
            return Err(field("consensus.leader_timeout_ms", "must be 1 to 600000"));
        }
        if c.notarization_timeout_ms < c.leader_timeout_ms || c.notarization_timeout_ms > 600_000 {
            return Err(field(
                "consensus.notarization_timeout_ms",
                "must be at least leader_timeout_ms and at most 600000",
            ));
        }
        if c.nullify_retry_ms == 0 || c.nullify_retry_ms > 600_000 {
            return Err(field("consensus.nullify_retry_ms", "must be 1 to 600000"));
        }
        if c.max_batch_updates == 0 || c.max_batch_updates > crate::consensus::tx::BLOCK_UPDATES_MAX
        {
            return Err(field(
                "consensus.max_batch_updates",
                format!("must be 1 to {}", crate::consensus::tx::BLOCK_UPDATES_MAX),
            ));
        }
        if c.max_batch_delay_ms > 10_000 {
            return Err(field(
                "consensus.max_batch_delay_ms",
                "must be at most 10000",
            ));
        }
        Ok(Genesis {
            chain_id: file.chain_id,
            validators,
            followers,
            consensus: file.consensus,
        })
    }

    /// Index of the validator with this public key.
    pub fn index_of(&self, pubkey: &[u8; 32]) -> Option<usize> {
        self.validators.iter().position(|v| &v.pubkey == pubkey)
    }

    /// Validators needed for a quorum (2f+1 of n = 3f+1).
    pub fn quorum(&self) -> usize {
        let n = self.validators.len();
        let f = (n - 1) / 3;
        n - f
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid() -> GenesisFile {
        GenesisFile {
            chain_id: "test".into(),
            validators: vec![ValidatorEntry {
                name: "v0".into(),
                pubkey: "ab".repeat(32),
                addr: "127.0.0.1:9000".into(),
                weight: None,
                api_url: None,
            }],
            followers: Vec::new(),
            consensus: ConsensusParams::default(),
        }
    }

    fn err(f: GenesisFile) -> String {
        Genesis::check(f).unwrap_err().to_string()
    }

    #[test]
    fn accepts_a_valid_file() {
        let g = Genesis::check(valid()).unwrap();
        assert_eq!(g.validators.len(), 1);
        assert_eq!(g.quorum(), 1);
    }

    #[test]
    fn names_the_field_that_is_wrong() {
        let mut f = valid();
        f.validators[0].pubkey = "xyz".into();
        assert!(err(f).contains("validators[0].pubkey"));
        let mut f = valid();
        f.validators[0].addr = "nowhere".into();
        assert!(err(f).contains("validators[0].addr"));
        let mut f = valid();
        f.validators[0].weight = Some(3);
        assert!(err(f).contains("validators[0].weight"));
        let mut f = valid();
        f.chain_id = String::new();
        assert!(err(f).contains("chain_id"));
        let mut f = valid();
        f.validators.clear();
        assert!(err(f).contains("validators"));
        let mut f = valid();
        f.consensus.leader_timeout_ms = 0;
        assert!(err(f).contains("consensus.leader_timeout_ms"));
        let mut f = valid();
        let dup = f.validators[0].clone();
        f.validators.push(ValidatorEntry {
            name: "v1".into(),
            addr: "127.0.0.1:9001".into(),
            ..dup
        });
        assert!(err(f).contains("validators[1].pubkey"));
    }

    #[test]
    fn unknown_keys_are_refused() {
        let text = r#"{"chain_id":"x","validators":[],"extra":1}"#;
        assert!(serde_json::from_str::<GenesisFile>(text)
            .unwrap_err()
            .to_string()
            .contains("extra"));
    }

    #[test]
    fn quorum_is_two_thirds_plus_one() {
        let mut f = valid();
        for i in 1..4 {
            f.validators.push(ValidatorEntry {
                name: format!("v{i}"),
                pubkey: format!("{:02x}", i).repeat(32),
                addr: format!("127.0.0.1:{}", 9000 + i),
                weight: Some(1),
                api_url: None,
            });
        }
        assert_eq!(Genesis::check(f).unwrap().quorum(), 3);
    }
}
