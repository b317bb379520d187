//! `ordo`: the one binary for operators, application developers and auditors. This library
//! is the whole command line; `src/main.rs` (the `ordo` binary) only calls [`main`], and so
//! does `src/bin/ordo-faulty.rs`, the same command line with test-only faults compiled in.
//!
//! Exit codes: 0 success; 1 the command ran and found a problem (for example an audit that
//! fails); 2 bad usage, configuration or input.

mod audit;
mod bench;
mod block;
mod devnet;
mod failure;
mod genesis;
mod keys;
mod node;
mod output;
mod payload;
mod receipt;
mod remote;
mod testchain;
mod tx;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use failure::Failure;

/// ordo: a permissioned blockchain ordering node.
///
/// Validators listed in a genesis file order client-signed transactions into hash-chained,
/// signed blocks. This binary creates keys and genesis files, signs transactions, reads
/// blocks and transactions from a node's data directory, and audits a stored chain offline.
#[derive(Parser)]
#[command(name = "ordo", version, propagate_version = true, max_term_width = 100)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate an ed25519 key pair into a key file (mode 0600).
    Keygen(keys::KeygenArgs),
    /// Inspect key files.
    #[command(subcommand)]
    Key(keys::KeyCommand),
    /// Create, edit and check genesis files.
    #[command(subcommand)]
    Genesis(genesis::GenesisCommand),
    /// Sign transactions and look them up in a stored chain.
    #[command(subcommand)]
    Tx(tx::TxCommand),
    /// Read blocks from a stored chain or a running validator (alias: blocks).
    #[command(subcommand, alias = "blocks")]
    Block(block::BlockCommand),
    /// Re-verify a stored chain from the genesis, offline.
    ///
    /// Checks every block's height, hash link, Merkle root, proposer signature, its
    /// certificates (a majority of the validators must have signed every block below the
    /// last few), every transaction's signature and permissions, and the ledger's indexes;
    /// then reports the uncertified tail, each validator's record, and any evidence of a
    /// validator signing a block that is not this chain's. Exit code 0 only when the whole
    /// chain verifies and there is no such evidence; otherwise 1, naming the first bad
    /// height.
    Audit(audit::AuditArgs),
    /// Check transaction receipts offline.
    #[command(subcommand)]
    Receipt(receipt::ReceiptCommand),
    /// Write a locally signed chain for audit drills and benchmarks.
    ///
    /// Creates keys, a genesis and a ledger in DIR, then builds blocks with the same block
    /// builder, verification and store that validators use, with one process playing every
    /// validator in turn (no consensus, no network). Useful to try `ordo audit`,
    /// `ordo block show` and `ordo tx show` without a running cluster.
    Testchain(testchain::TestchainArgs),
    /// Run a validator.
    #[command(subcommand)]
    Node(node::NodeCommand),
    /// Run a local devnet: N validators as separate processes on free loopback ports.
    ///
    /// The first run creates keys, a genesis (with one client, keys/client.key) and a node
    /// configuration per validator in DIR; later runs on the same DIR resume the same chain.
    /// Shows each validator's role and tip until Ctrl-C, then stops them all cleanly.
    Devnet(devnet::DevnetArgs),
    /// Measure a cluster (runs the separate `ordo-bench` binary; `ordo bench --help`).
    ///
    /// Committed tx/s, submit-to-commit latency, resources, and how close the cluster comes
    /// to this machine's signature-verification bound; --devnet starts and measures a local
    /// cluster of separate validator processes; --etcd measures the etcd baseline.
    Bench(bench::BenchArgs),
    /// Show a running node's status: role, term, leader, tip, peers, mempool.
    Status(remote::NodeStatusArgs),
}

/// Runs the command line: parses the arguments, runs the command, and says how it ended.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // A validator logs what it does; other commands only warn.
    let default_filter = match cli.command {
        Command::Node(_) => "info,libp2p=warn,openraft=error",
        _ => "warn",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter)),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let result = match cli.command {
        Command::Keygen(a) => keys::keygen(a),
        Command::Key(c) => keys::run(c),
        Command::Genesis(c) => genesis::run(c),
        Command::Tx(c) => tx::run(c),
        Command::Block(c) => block::run(c),
        Command::Audit(a) => audit::run(a),
        Command::Receipt(c) => receipt::run(c),
        Command::Testchain(a) => testchain::run(a),
        Command::Node(c) => node::run(c),
        Command::Devnet(a) => devnet::run(a),
        Command::Bench(a) => bench::run(a),
        Command::Status(a) => remote::node_status(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Negative(msg)) => {
            if !msg.is_empty() {
                eprintln!("{msg}");
            }
            ExitCode::from(1)
        }
        Err(Failure::Usage(e)) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
