//! `ordo node run`: run a validator until SIGINT or SIGTERM.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use ordo_config::NodeConfig;
use ordo_node::error::Fatal;
use ordo_node::validator::Validator;

use crate::failure::{CmdResult, Failure};

#[derive(Subcommand)]
pub enum NodeCommand {
    /// Run a validator until SIGINT (Ctrl-C) or SIGTERM.
    ///
    /// The configuration file is TOML. Relative paths in it are resolved against the
    /// file's directory. Fields:
    ///
    ///   genesis       path of the chain's genesis file (required)
    ///   key_file      path of this validator's key file, mode 0600; its public key must be
    ///                 a validator in the genesis (required)
    ///   data_dir      directory for the ledger and Raft state, created if missing (required)
    ///   listen        libp2p multiaddrs to listen on for validators
    ///                 (default ["/ip4/0.0.0.0/tcp/7000"])
    ///   bootstrap     extra multiaddrs to dial; the other validators' genesis addresses are
    ///                 always dialled (default [])
    ///   mdns          find validators on the local network with mDNS (default true)
    ///   api           address of the HTTP API for clients (default "127.0.0.1:8080")
    ///
    ///   [mempool]
    ///   txs_max       most pending transactions; beyond it clients get 503 busy (100000)
    ///   bytes_max     most pending transaction bytes (268435456)
    ///
    ///   [raft]
    ///   snapshot_every_blocks   snapshot after this many blocks and purge the log (128)
    ///   keep_blocks             log entries kept behind the snapshot (128)
    ///   blocks_in_flight_max    proposed blocks waiting to commit at once (4); must
    ///                           be below the genesis's consensus.certify_lag
    ///   idle_batch_wait_ms      with no block in flight, cut a block once the first
    ///                           pending transaction has waited this long (5); otherwise
    ///                           the genesis batch timeout applies
    ///   depose_after_failed_appends
    ///                           withdraw from a leader after this many appends in a row
    ///                           whose blocks fail this node's check (3)
    ///   step_aside_when_slow    leading, hand leadership to the fastest caught-up
    ///                           follower when this node's synced log writes take 3
    ///                           times as long as its acknowledgements, for a second
    ///                           (true)
    ///
    ///   [storage]
    ///   background_write_mib_per_s  most MiB/s that memtable flushes and compactions
    ///                               write, in 5 ms slices, so that the synced writes
    ///                               commits wait for do not queue behind a flush
    ///                               (128; 0 for no limit)
    ///
    ///   [verify]
    ///   threads       most threads checking one batch of signatures (an admission, the
    ///                 announcements checked ahead, a block before it is appended), each
    ///                 taking at least 128 of them (0: every core, the default)
    ///
    /// Shutdown is graceful: the API stops accepting and finishes requests in progress,
    /// then Raft, the network and the database close. Killing the process at any instant
    /// loses nothing that was acknowledged as committed.
    ///
    /// Exit codes: 0 after a clean shutdown; 1 when consensus stops on a fatal error; 2 when
    /// the node cannot start (configuration, key, genesis, data directory, an address in
    /// use).
    Run(RunArgs),
    /// Print a node configuration with default settings.
    Config(ConfigArgs),
}

#[derive(Args)]
pub struct RunArgs {
    /// The node's configuration file (TOML).
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
}

#[derive(Args)]
pub struct ConfigArgs {
    /// Genesis file path to put in the configuration.
    #[arg(long, default_value = "genesis.toml")]
    genesis: PathBuf,
    /// Key file path to put in the configuration.
    #[arg(long, default_value = "validator.key")]
    key_file: PathBuf,
    /// Data directory to put in the configuration.
    #[arg(long, default_value = "data")]
    data_dir: PathBuf,
}

pub fn run(cmd: NodeCommand) -> CmdResult {
    match cmd {
        NodeCommand::Run(a) => run_node(a),
        NodeCommand::Config(a) => {
            print!(
                "{}",
                NodeConfig::new(a.genesis, a.key_file, a.data_dir).to_toml()
            );
            Ok(())
        }
    }
}

fn run_node(a: RunArgs) -> CmdResult {
    let config = NodeConfig::load(&a.config).map_err(|e| Failure::Usage(e.into()))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let validator = Validator::start(&config)
            .await
            .map_err(|e| Failure::Usage(e.into()))?;
        eprintln!(
            "ordo: validator {} running; API on http://{}",
            validator.name(),
            validator.api_addr()
        );
        let signal = wait_for_signal()?;
        let failure = tokio::select! {
            r = signal => { r?; None }
            fatal = validator.failed() => Some(fatal),
        };
        match &failure {
            Some(Fatal::Salvage(why)) => {
                tracing::error!(damage = %why, "stopping to restart: a table file of the ledger is damaged");
            }
            Some(fatal) => tracing::error!(error = %fatal, "stopping: the node can order nothing more"),
            None => {}
        }
        validator.shutdown().await;
        match failure {
            None => Ok(()),
            Some(Fatal::Salvage(_)) => Err(restart_for_salvage()),
            Some(fatal) => Err(Failure::Negative(format!("error: {fatal}"))),
        }
    })
}

/// Set in the environment of a node that restarted itself for a salvage: the Unix time
/// it did.
const RESTARTED_FOR_SALVAGE: &str = "ORDO_RESTARTED_FOR_SALVAGE";
/// A node that needs another salvage sooner than this after the last one stops instead:
/// the damage is coming back faster than salvages clear it (a failing disk).
const SALVAGE_RESTART_MIN_S: u64 = 60;

/// Replaces this process with a fresh `ordo node run` of the same arguments, which sets
/// the damaged table files aside as it opens the ledger. A fresh process (same pid, same
/// output) rather than a fresh validator in this one: nothing of the damaged database can
/// outlive it. Returns only if it cannot.
fn restart_for_salvage() -> Failure {
    use std::os::unix::process::CommandExt;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let last: Option<u64> = std::env::var(RESTARTED_FOR_SALVAGE)
        .ok()
        .and_then(|v| v.parse().ok());
    if let Some(last) = last
        && now.saturating_sub(last) < SALVAGE_RESTART_MIN_S
    {
        return Failure::Negative(format!(
            "error: the ledger met a damaged table file again within {SALVAGE_RESTART_MIN_S} s of a salvage; check the disk (the salvage runs at the next start)"
        ));
    }
    tracing::warn!("restarting to salvage the ledger");
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => return Failure::Negative(format!("error: cannot restart for a salvage: {e}")),
    };
    let err = std::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env(RESTARTED_FOR_SALVAGE, now.to_string())
        .exec();
    Failure::Negative(format!(
        "error: cannot restart for a salvage ({err}); it runs at the next start"
    ))
}

/// Installs SIGINT and SIGTERM handlers now; the future completes at the first signal.
pub fn wait_for_signal()
-> anyhow::Result<impl std::future::Future<Output = anyhow::Result<()>> + Send + 'static> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received"),
            _ = int.recv() => tracing::info!("SIGINT received"),
        }
        Ok(())
    })
}
