//! Runs ordo validators as real `ordo node run` processes on one host: the one harness
//! behind `ordo devnet`, `ordo-bench --devnet` and the integration tests.
//!
//! * [`Net`]: a network's directory — keys, genesis and one `node.toml` per validator on
//!   free loopback ports — created from a [`Spec`] or opened again.
//! * [`NodeProcess`]: one validator process: start, SIGTERM, SIGKILL, wait for its exit,
//!   read its log. A process still running when its handle is dropped is killed.
//! * [`poll`], [`poll_blocking`]: wait on observable state with a deadline, not a sleep.
//! * [`ordo_bin`]: where the `ordo` binary is.
//!
//! ```no_run
//! use ordo_harness::{Net, Spec};
//!
//! let dir = std::path::Path::new("my-net");
//! let mut net = Net::create(dir, &Spec::new("my-chain", 3, 1)).unwrap();
//! net.start_all(&ordo_harness::ordo_bin().unwrap()).unwrap();
//! println!("validator-0 serves {}", net.nodes[0].url());
//! ```

mod net;
mod process;

pub use net::{HOST_API_PORT, HOST_P2P_PORT, Net, NodeTweak, Spec};
pub use process::{NodeProcess, stop_all};

use std::path::PathBuf;
use std::time::{Duration, Instant};

/// What went wrong setting up or running a network.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    /// A file or directory could not be read or written, or a process not started.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Why it failed.
        source: std::io::Error,
    },
    /// A key file cannot be written or read.
    #[error(transparent)]
    Key(#[from] ordo_crypto::KeyFileError),
    /// The genesis is not valid.
    #[error(transparent)]
    Genesis(#[from] ordo_genesis::GenesisError),
    /// A node configuration is not valid.
    #[error(transparent)]
    Config(#[from] ordo_config::ConfigError),
    /// The directory does not hold a network, or the request does not fit one.
    #[error("{0}")]
    Invalid(String),
}

impl HarnessError {
    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> HarnessError {
        let what = what.into();
        move |source| HarnessError::Io { what, source }
    }
}

/// Reserves `n` distinct free loopback ports (free when this returns; another process
/// could take one before it is bound again, which loopback tests accept).
///
/// # Errors
/// When the system has no free port.
pub fn free_ports(n: usize) -> Result<Vec<u16>, HarnessError> {
    let listeners: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<_, _>>()
        .map_err(HarnessError::io("cannot find free loopback ports"))?;
    listeners
        .iter()
        .map(|l| {
            l.local_addr()
                .map(|a| a.port())
                .map_err(HarnessError::io("cannot read a port"))
        })
        .collect()
}

/// The `ordo` binary: `$ORDO_BIN` if set, else the `ordo` beside the running executable
/// (or one directory up, for test executables in `target/<profile>/deps`), else the first
/// `ordo` on `PATH`.
///
/// # Errors
/// When none of them exists.
pub fn ordo_bin() -> Result<PathBuf, HarnessError> {
    sibling_bin("ordo", "ORDO_BIN")
}

/// A binary named `name` found as [`ordo_bin`] finds `ordo` (`env` overrides).
///
/// # Errors
/// When it is not found.
pub fn sibling_bin(name: &str, env: &str) -> Result<PathBuf, HarnessError> {
    if let Some(path) = std::env::var_os(env) {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe().map_err(HarnessError::io("cannot find this executable"))?;
    let beside = exe.parent().map(|d| d.join(name));
    let above = exe.parent().and_then(|d| d.parent()).map(|d| d.join(name));
    let on_path: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).map(|d| d.join(name)).collect())
        .unwrap_or_default();
    beside
        .into_iter()
        .chain(above)
        .chain(on_path)
        .find(|p| p.is_file())
        .ok_or_else(|| {
            HarnessError::Invalid(format!(
                "cannot find the `{name}` binary beside {} or on PATH (set {env}, or build it: cargo build --release)",
                exe.display()
            ))
        })
}

/// Calls `check` every `every` until it returns `Some`, for at most `timeout`.
pub async fn poll<T, F, Fut>(timeout: Duration, every: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return Some(v);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(every).await;
    }
}

/// As [`poll`], blocking the thread.
pub fn poll_blocking<T>(
    timeout: Duration,
    every: Duration,
    mut check: impl FnMut() -> Option<T>,
) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(every);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn a_net_is_written_whole_and_reads_back() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("net");
        assert!(!Net::exists(&dir));
        let mut spec = Spec::new("harness-test", 3, 2);
        spec.node = Box::new(|i, c| c.raft.blocks_in_flight_max = i + 1);
        let net = Net::create(&dir, &spec).expect("created");
        assert!(Net::exists(&dir));
        assert_eq!(net.genesis.validators.len(), 3);
        assert_eq!(net.genesis.clients.len(), 2);
        for (i, key) in spec.clients.iter().enumerate() {
            let read = ordo_crypto::load_key_file(&Net::client_key_path(&dir, i)).expect("key");
            assert_eq!(read.public(), key.public());
        }
        let again = Net::open(&dir).expect("opened");
        let apis: HashSet<_> = again.nodes.iter().map(|n| n.api).collect();
        assert_eq!(apis.len(), 3, "each validator has its own API port");
        for (i, n) in again.nodes.iter().enumerate() {
            assert_eq!(n.name, format!("validator-{i}"));
            assert!(!n.is_running());
            let c = ordo_config::NodeConfig::load(&n.config).expect("config");
            assert!(!c.mdns);
            assert_eq!(c.raft.blocks_in_flight_max, i + 1, "the tweak applies");
            assert_eq!(c.data_dir, dir.join(format!("validator-{i}/data")));
        }
        again.check_ports_free().expect("nothing runs");
    }

    #[test]
    fn what_is_not_a_net_is_refused() {
        let tmp = tempfile::tempdir().expect("tempdir");
        assert!(matches!(
            Net::open(tmp.path()),
            Err(HarnessError::Invalid(_))
        ));
        let none = Spec::new("x", 0, 1);
        assert!(matches!(
            Net::create(tmp.path(), &none),
            Err(HarnessError::Invalid(_))
        ));
    }

    #[test]
    fn ports_are_distinct_and_polls_end_by_their_deadline() {
        let ports = free_ports(8).expect("ports");
        assert_eq!(ports.iter().collect::<HashSet<_>>().len(), 8);
        let mut n = 0;
        let got = poll_blocking(Duration::from_secs(5), Duration::from_millis(1), || {
            n += 1;
            (n == 3).then_some(n)
        });
        assert_eq!(got, Some(3));
        let started = Instant::now();
        let never: Option<()> =
            poll_blocking(Duration::from_millis(50), Duration::from_millis(10), || {
                None
            });
        assert!(never.is_none());
        assert!(started.elapsed() >= Duration::from_millis(50));
    }
}
