//! The genesis file: the one document every validator of a chain shares.
//!
//! It names the chain, lists the validators (who may propose and vote) and the permitted
//! clients (who may submit transactions), and fixes the consensus parameters. It is TOML,
//! meant to be written by hand or with `ordo genesis`:
//!
//! ```
//! let text = r#"
//! chain_id = "example"
//!
//! [[validators]]
//! name = "v1"
//! public_key = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
//! "#;
//! let genesis = ordo_genesis::Genesis::parse(text).unwrap();
//! genesis.validate().unwrap();
//! println!("genesis hash {}", genesis.hash());
//! ```
//!
//! The genesis hash — the parent of block 1 — covers everything that affects which blocks
//! are valid: chain id, validators and clients (sorted by key, with names) and all consensus
//! parameters. Validator network addresses are hints for finding peers and are not hashed.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use borsh::BorshSerialize;
use ordo_crypto::{Domain, Hash, PublicKey};
use ordo_ledger::{
    BLOCK_BYTES_LIMIT, BLOCK_TXS_LIMIT, CERTIFY_LAG_DEFAULT, CERTIFY_LAG_LIMIT, Certificate,
    ChainIdentity, Limits, Policy, TX_BYTES_LIMIT, TX_LIFETIME_BLOCKS_LIMIT, is_valid_chain_id,
};
use serde::{Deserialize, Serialize};

/// Most validators a chain may have (Raft clusters are small; this bounds every per-peer table).
pub const VALIDATORS_MAX: usize = 128;
/// Most permitted clients.
pub const CLIENTS_MAX: usize = 100_000;
/// Most addresses listed for one validator.
pub const ADDRESSES_MAX: usize = 16;
/// Largest genesis file read.
pub const GENESIS_FILE_BYTES_MAX: u64 = 16 << 20;
/// Smallest allowed `tx_bytes_max`: room for a minimal transaction.
pub const TX_BYTES_MIN: u64 = 256;
/// Longest name of a validator or client.
pub const NAME_BYTES_MAX: usize = 64;

/// Consensus parameters: block limits and Raft timing. All validators must agree on them,
/// so they are part of the genesis hash.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, BorshSerialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConsensusParams {
    /// Most transactions in a block; the leader cuts a block when it has this many.
    pub block_txs_max: u32,
    /// Largest encoded block in bytes; the leader cuts before exceeding it.
    pub block_bytes_max: u64,
    /// Largest encoded signed transaction in bytes.
    pub tx_bytes_max: u64,
    /// How many blocks ahead of the block that includes it a transaction's `expires_at`
    /// may be.
    pub tx_lifetime_blocks: u64,
    /// The leader cuts a block this long after its first pending transaction.
    pub batch_timeout_ms: u64,
    /// Leader heartbeat interval.
    pub heartbeat_interval_ms: u64,
    /// Lower bound of the randomized election timeout.
    pub election_timeout_min_ms: u64,
    /// Upper bound of the randomized election timeout.
    pub election_timeout_max_ms: u64,
    /// Block `h` certifies (with a majority of the validators' attestations) every block
    /// at or below `h - certify_lag` that no earlier block certified. Larger than any
    /// validator's `raft.blocks_in_flight_max`, so blocks still in flight need none.
    pub certify_lag: u64,
    /// A follower refuses, before appending it, a block stamped more than this many
    /// milliseconds ahead of the validators' time as it knows it (the median of their
    /// clocks); the audit cannot check this rule, having no clock.
    pub block_time_ahead_max_ms: u64,
}

impl Default for ConsensusParams {
    fn default() -> ConsensusParams {
        let l = Limits::default();
        ConsensusParams {
            block_txs_max: l.block_txs_max,
            block_bytes_max: l.block_bytes_max,
            tx_bytes_max: l.tx_bytes_max,
            tx_lifetime_blocks: l.tx_lifetime_blocks,
            batch_timeout_ms: 20,
            heartbeat_interval_ms: 100,
            election_timeout_min_ms: 500,
            election_timeout_max_ms: 1000,
            certify_lag: CERTIFY_LAG_DEFAULT,
            block_time_ahead_max_ms: 10_000,
        }
    }
}

/// A validator: may propose blocks and vote.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Validator {
    /// Operator-chosen name, unique in the genesis.
    pub name: String,
    /// Its ed25519 key, which is also its libp2p identity.
    pub public_key: PublicKey,
    /// libp2p multiaddrs where it may be reached (hints; not part of the hash).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<String>,
}

/// A permitted client: may sign transactions.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Client {
    /// Name, unique among clients.
    pub name: String,
    /// Its ed25519 key.
    pub public_key: PublicKey,
}

/// A parsed genesis file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Genesis {
    /// The chain id: 1–64 characters of `A-Z a-z 0-9 . _ -`.
    pub chain_id: String,
    /// Consensus parameters; omitted fields take their defaults.
    #[serde(default)]
    pub consensus: ConsensusParams,
    /// The validators.
    #[serde(default)]
    pub validators: Vec<Validator>,
    /// The permitted clients.
    #[serde(default)]
    pub clients: Vec<Client>,
}

/// Errors loading or validating a genesis.
#[derive(Debug, thiserror::Error)]
pub enum GenesisError {
    /// The file could not be read or written.
    #[error("genesis file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file is larger than [`GENESIS_FILE_BYTES_MAX`].
    #[error("genesis file {path} is {bytes} bytes; the limit is {GENESIS_FILE_BYTES_MAX}")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size.
        bytes: u64,
    },
    /// The text is not valid genesis TOML.
    #[error("genesis is not valid TOML: {0}")]
    Parse(String),
    /// The content breaks one or more rules; every problem is listed.
    #[error("genesis is invalid:\n  - {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n  - "))]
    Invalid(Vec<Problem>),
}

/// One thing wrong with a genesis.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    /// No validators yet. Acceptable while a genesis is being written, not for running.
    #[error("there are no validators (add one with `ordo genesis add-validator`)")]
    NoValidators,
    /// Anything else, described.
    #[error("{0}")]
    Rule(String),
}

fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= NAME_BYTES_MAX
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// Checks a `min..=max` range and records a problem naming the field.
fn check_range(problems: &mut Vec<Problem>, field: &str, value: u64, min: u64, max: u64) {
    if !(min..=max).contains(&value) {
        problems.push(Problem::Rule(format!(
            "consensus.{field} = {value} is out of range {min}..={max}"
        )));
    }
}

impl ConsensusParams {
    fn problems(&self, out: &mut Vec<Problem>) {
        check_range(
            out,
            "block_txs_max",
            self.block_txs_max.into(),
            1,
            BLOCK_TXS_LIMIT.into(),
        );
        check_range(
            out,
            "tx_bytes_max",
            self.tx_bytes_max,
            TX_BYTES_MIN,
            TX_BYTES_LIMIT,
        );
        check_range(
            out,
            "block_bytes_max",
            self.block_bytes_max,
            TX_BYTES_MIN,
            BLOCK_BYTES_LIMIT,
        );
        check_range(
            out,
            "tx_lifetime_blocks",
            self.tx_lifetime_blocks,
            1,
            TX_LIFETIME_BLOCKS_LIMIT,
        );
        check_range(out, "batch_timeout_ms", self.batch_timeout_ms, 1, 60_000);
        check_range(
            out,
            "heartbeat_interval_ms",
            self.heartbeat_interval_ms,
            10,
            10_000,
        );
        check_range(
            out,
            "election_timeout_min_ms",
            self.election_timeout_min_ms,
            50,
            60_000,
        );
        check_range(
            out,
            "election_timeout_max_ms",
            self.election_timeout_max_ms,
            50,
            120_000,
        );
        check_range(out, "certify_lag", self.certify_lag, 1, CERTIFY_LAG_LIMIT);
        check_range(
            out,
            "block_time_ahead_max_ms",
            self.block_time_ahead_max_ms,
            1_000,
            86_400_000,
        );
        if self.election_timeout_min_ms < 3 * self.heartbeat_interval_ms {
            out.push(Problem::Rule(format!(
                "consensus.election_timeout_min_ms ({}) must be at least 3 × heartbeat_interval_ms ({})",
                self.election_timeout_min_ms, self.heartbeat_interval_ms
            )));
        }
        if self.election_timeout_max_ms <= self.election_timeout_min_ms {
            out.push(Problem::Rule(format!(
                "consensus.election_timeout_max_ms ({}) must be greater than election_timeout_min_ms ({})",
                self.election_timeout_max_ms, self.election_timeout_min_ms
            )));
        }
    }

    /// The block limits, as the ledger's verification uses them.
    pub fn limits(&self) -> Limits {
        Limits {
            block_txs_max: self.block_txs_max,
            block_bytes_max: self.block_bytes_max,
            tx_bytes_max: self.tx_bytes_max,
            tx_lifetime_blocks: self.tx_lifetime_blocks,
        }
    }
}

/// Records duplicate names and keys, bad names and weak keys in one list of members.
fn member_problems<'a>(
    out: &mut Vec<Problem>,
    role: &str,
    members: impl Iterator<Item = (&'a str, &'a PublicKey)>,
) {
    let mut names = HashSet::new();
    let mut keys: HashMap<PublicKey, &str> = HashMap::new();
    for (name, key) in members {
        if !is_valid_name(name) {
            out.push(Problem::Rule(format!(
                "{role} name '{name}' must be 1–{NAME_BYTES_MAX} characters of A-Z a-z 0-9 . _ -"
            )));
        }
        if !names.insert(name) {
            out.push(Problem::Rule(format!(
                "{role} name '{name}' appears more than once"
            )));
        }
        if let Some(first) = keys.insert(*key, name) {
            out.push(Problem::Rule(format!(
                "{role} '{name}' has the same public key as {role} '{first}'"
            )));
        }
        if let Err(e) = key.check_strong() {
            out.push(Problem::Rule(format!("{role} '{name}': {e}")));
        }
    }
}

impl Genesis {
    /// A genesis with default parameters and no members yet.
    pub fn new(chain_id: &str) -> Genesis {
        Genesis {
            chain_id: chain_id.to_owned(),
            consensus: ConsensusParams::default(),
            validators: Vec::new(),
            clients: Vec::new(),
        }
    }

    /// Parses genesis TOML without validating it (see [`Genesis::validate`]).
    ///
    /// # Errors
    /// [`GenesisError::Parse`] with the line and column of the problem.
    pub fn parse(text: &str) -> Result<Genesis, GenesisError> {
        toml::from_str(text).map_err(|e| GenesisError::Parse(e.to_string()))
    }

    /// Reads and parses a genesis file without validating it.
    ///
    /// # Errors
    /// [`GenesisError::Io`], [`GenesisError::TooLarge`] or [`GenesisError::Parse`].
    pub fn read(path: &Path) -> Result<Genesis, GenesisError> {
        let io = |source| GenesisError::Io {
            path: path.to_owned(),
            source,
        };
        let bytes = std::fs::metadata(path).map_err(io)?.len();
        if bytes > GENESIS_FILE_BYTES_MAX {
            return Err(GenesisError::TooLarge {
                path: path.to_owned(),
                bytes,
            });
        }
        let text = std::fs::read_to_string(path).map_err(io)?;
        Genesis::parse(&text).map_err(|e| match e {
            GenesisError::Parse(m) => GenesisError::Parse(format!("{}: {m}", path.display())),
            other => other,
        })
    }

    /// Reads, parses and fully validates a genesis file: what a node or auditor uses.
    ///
    /// # Errors
    /// As [`Genesis::read`], or [`GenesisError::Invalid`].
    pub fn load(path: &Path) -> Result<Genesis, GenesisError> {
        let g = Genesis::read(path)?;
        g.validate()?;
        Ok(g)
    }

    /// Everything wrong with this genesis (empty when it is valid).
    pub fn problems(&self) -> Vec<Problem> {
        let mut out = Vec::new();
        if !is_valid_chain_id(&self.chain_id) {
            out.push(Problem::Rule(format!(
                "chain_id '{}' must be 1–64 characters of A-Z a-z 0-9 . _ -",
                self.chain_id
            )));
        }
        if self.validators.is_empty() {
            out.push(Problem::NoValidators);
        }
        if self.validators.len() > VALIDATORS_MAX {
            out.push(Problem::Rule(format!(
                "{} validators; the limit is {VALIDATORS_MAX}",
                self.validators.len()
            )));
        }
        if self.clients.len() > CLIENTS_MAX {
            out.push(Problem::Rule(format!(
                "{} clients; the limit is {CLIENTS_MAX}",
                self.clients.len()
            )));
        }
        member_problems(
            &mut out,
            "validator",
            self.validators
                .iter()
                .map(|v| (v.name.as_str(), &v.public_key)),
        );
        member_problems(
            &mut out,
            "client",
            self.clients
                .iter()
                .map(|c| (c.name.as_str(), &c.public_key)),
        );
        for v in &self.validators {
            if v.addresses.len() > ADDRESSES_MAX {
                out.push(Problem::Rule(format!(
                    "validator '{}' lists more than {ADDRESSES_MAX} addresses",
                    v.name
                )));
            }
            for a in v.addresses.iter().filter(|a| !a.starts_with('/')) {
                out.push(Problem::Rule(format!(
                    "validator '{}' address '{a}' is not a multiaddr (e.g. /ip4/10.0.0.1/tcp/7000)",
                    v.name
                )));
            }
        }
        self.consensus.problems(&mut out);
        // A block must hold one largest transaction, its header and its certificates.
        let c = &self.consensus;
        let certificates = c.certify_lag * Certificate::encoded_len_max(self.validators.len());
        if c.block_bytes_max < c.tx_bytes_max + 512 + certificates {
            out.push(Problem::Rule(format!(
                "consensus.block_bytes_max ({}) must exceed tx_bytes_max ({}) by 512 bytes for \
                 the header and {certificates} for the certificates of {} validators \
                 (certify_lag {})",
                c.block_bytes_max,
                c.tx_bytes_max,
                self.validators.len(),
                c.certify_lag
            )));
        }
        out
    }

    /// Checks every rule.
    ///
    /// # Errors
    /// [`GenesisError::Invalid`] listing every problem.
    pub fn validate(&self) -> Result<(), GenesisError> {
        let problems = self.problems();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(GenesisError::Invalid(problems))
        }
    }

    /// The genesis as TOML text, with a short header.
    pub fn to_toml(&self) -> String {
        let body = toml::to_string_pretty(self).expect("a genesis always serializes");
        format!(
            "# ordo genesis: identical on every validator. Edit with `ordo genesis`, check with\n\
             # `ordo genesis show`. Everything but validator addresses is covered by the genesis hash.\n\n{body}"
        )
    }

    /// Writes the genesis to `path`.
    ///
    /// # Errors
    /// [`GenesisError::Io`].
    pub fn save(&self, path: &Path) -> Result<(), GenesisError> {
        std::fs::write(path, self.to_toml()).map_err(|source| GenesisError::Io {
            path: path.to_owned(),
            source,
        })
    }

    /// The genesis hash: `SHA-256("ordo/genesis/v1\n" || borsh(canonical form))`.
    pub fn hash(&self) -> Hash {
        #[derive(BorshSerialize)]
        struct Canonical<'a> {
            chain_id: &'a str,
            validators: Vec<(PublicKey, &'a str)>,
            clients: Vec<(PublicKey, &'a str)>,
            consensus: &'a ConsensusParams,
        }
        let mut validators: Vec<_> = self
            .validators
            .iter()
            .map(|v| (v.public_key, v.name.as_str()))
            .collect();
        let mut clients: Vec<_> = self
            .clients
            .iter()
            .map(|c| (c.public_key, c.name.as_str()))
            .collect();
        validators.sort();
        clients.sort();
        let canonical = Canonical {
            chain_id: &self.chain_id,
            validators,
            clients,
            consensus: &self.consensus,
        };
        Hash::digest(
            Domain::Genesis,
            &borsh::to_vec(&canonical).expect("encodes"),
        )
    }

    /// The chain identity a ledger store is bound to.
    pub fn identity(&self) -> ChainIdentity {
        ChainIdentity {
            chain_id: self.chain_id.clone(),
            genesis_hash: self.hash(),
        }
    }

    /// The verification policy for the ledger.
    pub fn policy(&self) -> Policy {
        Policy {
            chain_id: self.chain_id.clone(),
            genesis_hash: self.hash(),
            validators: self.validators.iter().map(|v| v.public_key).collect(),
            clients: self.clients.iter().map(|c| c.public_key).collect(),
            limits: self.consensus.limits(),
            certify_lag: self.consensus.certify_lag,
        }
    }

    /// The validator with this key, if any.
    pub fn validator(&self, key: &PublicKey) -> Option<&Validator> {
        self.validators.iter().find(|v| v.public_key == *key)
    }
}

#[cfg(test)]
mod tests;
