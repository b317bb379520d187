//! The validator's configuration file (`node.toml`).
//!
//! Relative paths in the file are resolved against the directory that holds it, so a
//! node's directory can be moved as a whole. Unknown fields are refused, and every problem
//! is reported at once.
//!
//! ```toml
//! genesis = "genesis.toml"
//! key_file = "validator.key"
//! data_dir = "data"
//! listen = ["/ip4/0.0.0.0/tcp/7000"]
//! bootstrap = []
//! mdns = true
//! api = "127.0.0.1:8080"
//!
//! [mempool]
//! txs_max = 100000
//! bytes_max = 268435456
//!
//! [raft]
//! snapshot_every_blocks = 128
//! keep_blocks = 128
//! blocks_in_flight_max = 4
//! idle_batch_wait_ms = 5
//! depose_after_failed_appends = 3
//!
//! [storage]
//! background_write_mib_per_s = 128
//! scrub_kib_per_s = 4096
//! scrub_every_s = 3600
//!
//! [verify]
//! threads = 0
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Largest `node.toml` read.
pub const CONFIG_FILE_BYTES_MAX: u64 = 1 << 20;

/// Bounds on the mempool: pending transactions and their bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MempoolLimits {
    /// Most pending transactions.
    pub txs_max: usize,
    /// Most pending bytes (encoded transactions).
    pub bytes_max: u64,
}

impl Default for MempoolLimits {
    fn default() -> MempoolLimits {
        MempoolLimits {
            txs_max: 100_000,
            bytes_max: 256 << 20,
        }
    }
}

/// A validator's configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// The chain's genesis file.
    pub genesis: PathBuf,
    /// This validator's key file (mode 0600); its public key must be a genesis validator.
    pub key_file: PathBuf,
    /// Where the node keeps its ledger and Raft state (created if missing).
    pub data_dir: PathBuf,
    /// libp2p multiaddrs to listen on for validators.
    #[serde(default = "default_listen")]
    pub listen: Vec<String>,
    /// Extra multiaddrs to dial at start, in addition to the other validators' genesis
    /// addresses.
    #[serde(default)]
    pub bootstrap: Vec<String>,
    /// Find validators on the local network with mDNS.
    #[serde(default = "default_true")]
    pub mdns: bool,
    /// Address of the HTTP API for clients.
    #[serde(default = "default_api")]
    pub api: SocketAddr,
    /// Mempool bounds.
    #[serde(default)]
    pub mempool: MempoolSection,
    /// Raft log and proposal settings.
    #[serde(default)]
    pub raft: RaftSection,
    /// How the database uses the disk.
    #[serde(default)]
    pub storage: StorageSection,
    /// How signatures are checked.
    #[serde(default)]
    pub verify: VerifySection,
}

/// `[verify]`: how signatures are checked.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifySection {
    /// Most threads that check one batch of signatures together — an admission, the
    /// announcements a follower checks ahead, a block a follower checks before appending —
    /// each thread taking a part of at least [`ordo_crypto::SPREAD_PART_MIN`] signatures.
    /// 0 (the default): every core. Validators sharing a machine (a devnet) do better
    /// with their share of the cores, since they check the same transactions.
    #[serde(default)]
    pub threads: usize,
}

/// Largest `[verify] threads`.
const VERIFY_THREADS_MAX: usize = 1024;

impl VerifySection {
    /// Threads per batch: `threads`, or every core when it is 0.
    pub fn threads(&self) -> usize {
        match self.threads {
            0 => ordo_crypto::cores(),
            n => n,
        }
    }
}

/// `[storage]`: how the database uses the disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageSection {
    /// Most MiB per second that memtable flushes and compactions write, handed out in
    /// slices of 5 ms (0: no limit). Unlimited, a flush puts tens of megabytes in the
    /// disk's queue at once and every commit's synced write waits behind them; paced, it
    /// goes out between them. Raise it (or set 0) if the node flushes more than this in
    /// sustained writes, as with large payloads at high rates on a fast disk.
    #[serde(default = "default_background_write_mib_per_s")]
    pub background_write_mib_per_s: u64,
    /// Most KiB per second of stored blocks the background scrub re-checks (hashes, links,
    /// index entries; 0: no scrub). A pass reads the whole chain.
    #[serde(default = "default_scrub_kib_per_s")]
    pub scrub_kib_per_s: u64,
    /// Seconds from the start of one scrub pass to the start of the next (at least the
    /// pass's own length).
    #[serde(default = "default_scrub_every_s")]
    pub scrub_every_s: u64,
}

fn default_scrub_kib_per_s() -> u64 {
    4096
}

fn default_scrub_every_s() -> u64 {
    3600
}

fn default_background_write_mib_per_s() -> u64 {
    ordo_ledger::BACKGROUND_WRITE_BYTES_PER_S_DEFAULT >> 20
}

/// Largest `[storage] scrub_kib_per_s` (1 TiB/s).
const SCRUB_KIB_PER_S_MAX: u64 = 1 << 30;
/// Largest `[storage] scrub_every_s` (a year).
const SCRUB_EVERY_S_MAX: u64 = 366 * 24 * 3600;

/// Largest `[storage] background_write_mib_per_s` (1 TiB/s).
const BACKGROUND_WRITE_MIB_PER_S_MAX: u64 = 1 << 20;

impl Default for StorageSection {
    fn default() -> StorageSection {
        StorageSection {
            background_write_mib_per_s: default_background_write_mib_per_s(),
            scrub_kib_per_s: default_scrub_kib_per_s(),
            scrub_every_s: default_scrub_every_s(),
        }
    }
}

impl StorageSection {
    /// As the store's tuning.
    pub fn tuning(&self) -> ordo_ledger::StoreTuning {
        ordo_ledger::StoreTuning {
            background_write_bytes_per_s: self.background_write_mib_per_s.saturating_mul(1 << 20),
        }
    }
}

/// `[mempool]`: bounds on pending transactions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MempoolSection {
    /// Most pending transactions; past it, submissions get "busy, retry".
    pub txs_max: usize,
    /// Most pending bytes (encoded transactions).
    pub bytes_max: u64,
}

impl Default for MempoolSection {
    fn default() -> MempoolSection {
        let d = MempoolLimits::default();
        MempoolSection {
            txs_max: d.txs_max,
            bytes_max: d.bytes_max,
        }
    }
}

impl MempoolSection {
    /// As the mempool's limits.
    pub fn limits(&self) -> MempoolLimits {
        MempoolLimits {
            txs_max: self.txs_max,
            bytes_max: self.bytes_max,
        }
    }
}

/// `[raft]`: log compaction and pipelining.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RaftSection {
    /// Take a snapshot after this many blocks, then purge the log behind it.
    pub snapshot_every_blocks: u64,
    /// Log entries kept behind the last snapshot, for followers that are slightly behind.
    /// Followers further behind fetch the blocks from a peer instead.
    pub keep_blocks: u64,
    /// Most proposed blocks waiting to commit at once (pipelining); below the genesis's
    /// `certify_lag` (checked when the validator starts, which knows both).
    pub blocks_in_flight_max: usize,
    /// When this node leads and no block is in flight, it cuts a block once the first
    /// pending transaction has waited this long, instead of the genesis batch timeout: at
    /// light load a transaction then waits milliseconds for its block, not the whole
    /// timeout. While blocks are in flight the batch timeout applies, so blocks still fill
    /// under load. A value at or above the batch timeout turns this off.
    #[serde(default = "default_idle_batch_wait_ms")]
    pub idle_batch_wait_ms: u64,
    /// After this many appends in a row from one leader (in one term) whose blocks fail
    /// this node's check, it withdraws from that leader: it answers none of its appends or
    /// heartbeats (so another is elected) and refuses it its vote for a while.
    #[serde(default = "default_depose_after_failed_appends")]
    pub depose_after_failed_appends: u32,
    /// Leading, hand leadership to the fastest caught-up follower when this node's synced
    /// log writes have taken at least 3 times as long as that follower's acknowledgements
    /// (and at least 5 ms) for a second; then stand for election again only once this
    /// node's writes have been fast for 30 s, or nothing has committed for two election
    /// timeouts.
    #[serde(default = "default_step_aside_when_slow")]
    pub step_aside_when_slow: bool,
}

fn default_step_aside_when_slow() -> bool {
    true
}

fn default_idle_batch_wait_ms() -> u64 {
    5
}

fn default_depose_after_failed_appends() -> u32 {
    3
}

impl Default for RaftSection {
    fn default() -> RaftSection {
        RaftSection {
            snapshot_every_blocks: 128,
            keep_blocks: 128,
            blocks_in_flight_max: 4,
            idle_batch_wait_ms: default_idle_batch_wait_ms(),
            depose_after_failed_appends: default_depose_after_failed_appends(),
            step_aside_when_slow: default_step_aside_when_slow(),
        }
    }
}

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML for a node configuration.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong, with its position.
        message: String,
    },
    /// Values that cannot work, all of them.
    #[error("{path}: {}", problems.join("; "))]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Each problem, naming its field.
        problems: Vec<String>,
    },
}

fn default_listen() -> Vec<String> {
    vec!["/ip4/0.0.0.0/tcp/7000".into()]
}

fn default_true() -> bool {
    true
}

fn default_api() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}

impl NodeConfig {
    /// A configuration with default settings for the given files.
    pub fn new(genesis: PathBuf, key_file: PathBuf, data_dir: PathBuf) -> NodeConfig {
        NodeConfig {
            genesis,
            key_file,
            data_dir,
            listen: default_listen(),
            bootstrap: Vec::new(),
            mdns: true,
            api: default_api(),
            mempool: MempoolSection::default(),
            raft: RaftSection::default(),
            storage: StorageSection::default(),
            verify: VerifySection::default(),
        }
    }

    /// Reads, checks and resolves the configuration at `path`.
    ///
    /// # Errors
    /// [`ConfigError`] naming the file and every problem found.
    pub fn load(path: &Path) -> Result<NodeConfig, ConfigError> {
        let read = |source| ConfigError::Read {
            path: path.to_owned(),
            source,
        };
        let bytes = std::fs::metadata(path).map_err(read)?.len();
        if bytes > CONFIG_FILE_BYTES_MAX {
            return Err(ConfigError::Invalid {
                path: path.to_owned(),
                problems: vec![format!(
                    "the file has {bytes} bytes; a node configuration has at most {CONFIG_FILE_BYTES_MAX}"
                )],
            });
        }
        let text = std::fs::read_to_string(path).map_err(read)?;
        NodeConfig::parse(&text, path)
    }

    /// Parses and checks `text`, the content of the file at `path`, and resolves its
    /// relative paths against the directory that holds `path` (which is not read).
    ///
    /// # Errors
    /// [`ConfigError::Parse`] or [`ConfigError::Invalid`], naming `path`.
    pub fn parse(text: &str, path: &Path) -> Result<NodeConfig, ConfigError> {
        let mut config: NodeConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        let problems = config.problems();
        if !problems.is_empty() {
            return Err(ConfigError::Invalid {
                path: path.to_owned(),
                problems,
            });
        }
        let base = path.parent().unwrap_or(Path::new("."));
        for p in [
            &mut config.genesis,
            &mut config.key_file,
            &mut config.data_dir,
        ] {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        Ok(config)
    }

    /// Every problem with the values, each naming its field.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (name, p) in [
            ("genesis", &self.genesis),
            ("key_file", &self.key_file),
            ("data_dir", &self.data_dir),
        ] {
            if p.as_os_str().is_empty() {
                out.push(format!("{name} must not be empty"));
            }
        }
        if self.listen.is_empty() {
            out.push("listen needs at least one address".into());
        }
        for (field, addrs) in [("listen", &self.listen), ("bootstrap", &self.bootstrap)] {
            for a in addrs.iter() {
                if a.parse::<multiaddr::Multiaddr>().is_err() {
                    out.push(format!(
                        "{field}: '{a}' is not a multiaddr (e.g. /ip4/127.0.0.1/tcp/7000)"
                    ));
                }
            }
        }
        if self.mempool.txs_max == 0 {
            out.push("mempool.txs_max must be at least 1".into());
        }
        if self.mempool.bytes_max < 1 << 20 {
            out.push("mempool.bytes_max must be at least 1048576 (1 MiB)".into());
        }
        if self.raft.snapshot_every_blocks == 0 {
            out.push("raft.snapshot_every_blocks must be at least 1".into());
        }
        if !(1..=64).contains(&self.raft.blocks_in_flight_max) {
            out.push("raft.blocks_in_flight_max must be between 1 and 64".into());
        }
        if self.raft.idle_batch_wait_ms > 60_000 {
            out.push("raft.idle_batch_wait_ms must be at most 60000".into());
        }
        if !(1..=100).contains(&self.raft.depose_after_failed_appends) {
            out.push("raft.depose_after_failed_appends must be between 1 and 100".into());
        }
        if self.storage.background_write_mib_per_s > BACKGROUND_WRITE_MIB_PER_S_MAX {
            out.push(format!(
                "storage.background_write_mib_per_s must be at most {BACKGROUND_WRITE_MIB_PER_S_MAX}"
            ));
        }
        if self.storage.scrub_kib_per_s > SCRUB_KIB_PER_S_MAX {
            out.push(format!(
                "storage.scrub_kib_per_s must be at most {SCRUB_KIB_PER_S_MAX} (0: no scrub)"
            ));
        }
        if self.storage.scrub_every_s > SCRUB_EVERY_S_MAX {
            out.push(format!(
                "storage.scrub_every_s must be at most {SCRUB_EVERY_S_MAX} (a year)"
            ));
        }
        if self.verify.threads > VERIFY_THREADS_MAX {
            out.push(format!(
                "verify.threads must be at most {VERIFY_THREADS_MAX} (0: every core)"
            ));
        }
        out
    }

    /// The configuration as TOML.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("a node configuration always serializes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimal_file_gets_defaults_and_resolves_paths() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("node.toml");
        std::fs::write(
            &path,
            "genesis = \"g.toml\"\nkey_file = \"/keys/v.key\"\ndata_dir = \"data\"\n",
        )
        .expect("write");
        let c = NodeConfig::load(&path).expect("valid");
        assert_eq!(c.genesis, dir.path().join("g.toml"));
        assert_eq!(c.key_file, PathBuf::from("/keys/v.key"));
        assert_eq!(c.data_dir, dir.path().join("data"));
        assert_eq!(c.raft, RaftSection::default());
        assert_eq!(c.storage, StorageSection::default());
        assert_eq!(c.storage.background_write_mib_per_s, 128);
        assert_eq!(
            c.storage.tuning().background_write_bytes_per_s,
            ordo_ledger::BACKGROUND_WRITE_BYTES_PER_S_DEFAULT
        );
        assert!(c.mdns);
    }

    #[test]
    fn the_storage_section_takes_defaults_and_zero_turns_the_limit_off() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("node.toml");
        let base = "genesis = \"g\"\nkey_file = \"k\"\ndata_dir = \"d\"\n";
        std::fs::write(&path, format!("{base}[storage]\n")).expect("write");
        let c = NodeConfig::load(&path).expect("an empty section is valid");
        assert_eq!(c.storage, StorageSection::default());
        std::fs::write(
            &path,
            format!("{base}[storage]\nbackground_write_mib_per_s = 0\n"),
        )
        .expect("write");
        let c = NodeConfig::load(&path).expect("0 is valid");
        assert_eq!(c.storage.tuning().background_write_bytes_per_s, 0);
    }

    #[test]
    fn verify_threads_default_to_every_core() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("node.toml");
        let base = "genesis = \"g\"\nkey_file = \"k\"\ndata_dir = \"d\"\n";
        std::fs::write(&path, base).expect("write");
        let c = NodeConfig::load(&path).expect("valid");
        assert_eq!(c.verify.threads, 0);
        assert_eq!(c.verify.threads(), ordo_crypto::cores());
        std::fs::write(&path, format!("{base}[verify]\nthreads = 3\n")).expect("write");
        assert_eq!(NodeConfig::load(&path).expect("valid").verify.threads(), 3);
    }

    #[test]
    fn every_problem_is_reported() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("node.toml");
        std::fs::write(
            &path,
            "genesis = \"g\"\nkey_file = \"k\"\ndata_dir = \"d\"\nlisten = [\"tcp:7000\"]\n\
             [raft]\nsnapshot_every_blocks = 0\nkeep_blocks = 1\nblocks_in_flight_max = 0\n\
             [storage]\nbackground_write_mib_per_s = 2000000\n[verify]\nthreads = 5000\n",
        )
        .expect("write");
        let err = NodeConfig::load(&path).expect_err("invalid").to_string();
        for needle in [
            "'tcp:7000' is not a multiaddr",
            "snapshot_every_blocks",
            "blocks_in_flight_max",
            "storage.background_write_mib_per_s must be at most 1048576",
            "verify.threads must be at most 1024",
        ] {
            assert!(err.contains(needle), "{needle} missing from: {err}");
        }
    }

    #[test]
    fn unknown_fields_and_bad_types_name_their_place() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("node.toml");
        std::fs::write(
            &path,
            "genesis = \"g\"\nkey_file = \"k\"\ndata_dir = \"d\"\napi_addr = \"x\"\n",
        )
        .expect("write");
        let err = NodeConfig::load(&path)
            .expect_err("unknown field")
            .to_string();
        assert!(err.contains("api_addr"), "{err}");
        std::fs::write(
            &path,
            "genesis = \"g\"\nkey_file = \"k\"\ndata_dir = \"d\"\napi = \"nope\"\n",
        )
        .expect("write");
        let err = NodeConfig::load(&path)
            .expect_err("bad socket address")
            .to_string();
        assert!(err.contains("api"), "{err}");
    }

    #[test]
    fn round_trips_through_toml() {
        let c = NodeConfig::new("g".into(), "k".into(), "d".into());
        let back: NodeConfig = toml::from_str(&c.to_toml()).expect("parse");
        assert_eq!(back, c);
    }
}
