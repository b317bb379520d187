//! `ordo genesis`: create, edit and check genesis files.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use ordo_crypto::{PublicKey, load_key_file};
use ordo_genesis::{Client, Genesis, Problem, Validator};

use crate::failure::CmdResult;
use crate::output::print_json;

#[derive(Subcommand)]
pub enum GenesisCommand {
    /// Write a new genesis file with default consensus parameters and no members.
    New {
        /// The chain id: 1–64 characters of A-Z a-z 0-9 . _ -
        #[arg(long)]
        chain_id: String,
        /// Where to write it.
        #[arg(long, value_name = "FILE", default_value = "genesis.toml")]
        out: PathBuf,
        /// Overwrite an existing file.
        #[arg(long)]
        force: bool,
    },
    /// Add a validator (a node that proposes and votes).
    AddValidator {
        #[command(flatten)]
        member: MemberArgs,
        /// A libp2p multiaddr where the validator listens (repeatable),
        /// e.g. /ip4/10.0.0.1/tcp/7000.
        #[arg(long = "address", value_name = "MULTIADDR")]
        addresses: Vec<String>,
    },
    /// Add a permitted client (a key that may sign transactions).
    AddClient {
        #[command(flatten)]
        member: MemberArgs,
    },
    /// Validate a genesis file and print its summary and hash.
    Show {
        /// The genesis file.
        #[arg(long, value_name = "FILE", default_value = "genesis.toml")]
        genesis: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args)]
pub struct MemberArgs {
    /// The genesis file to edit.
    #[arg(long, value_name = "FILE", default_value = "genesis.toml")]
    genesis: PathBuf,
    /// A unique name (A-Z a-z 0-9 . _ -).
    #[arg(long)]
    name: String,
    /// The member's public key, as 64 hex digits.
    #[arg(
        long,
        value_name = "HEX",
        required_unless_present = "key_file",
        conflicts_with = "key_file"
    )]
    public_key: Option<PublicKey>,
    /// Take the public key from this key file instead.
    #[arg(long, value_name = "FILE")]
    key_file: Option<PathBuf>,
}

impl MemberArgs {
    fn public_key(&self) -> anyhow::Result<PublicKey> {
        match (&self.public_key, &self.key_file) {
            (Some(k), _) => Ok(*k),
            (None, Some(f)) => Ok(load_key_file(f)
                .context("cannot read the key file")?
                .public()),
            (None, None) => bail!("give --public-key or --key-file"),
        }
    }
}

pub fn run(cmd: GenesisCommand) -> CmdResult {
    match cmd {
        GenesisCommand::New {
            chain_id,
            out,
            force,
        } => {
            if out.exists() && !force {
                return Err(anyhow::anyhow!(
                    "{} already exists (use --force to replace it)",
                    out.display()
                )
                .into());
            }
            let g = Genesis::new(&chain_id);
            check_editable(&g)?;
            g.save(&out)?;
            eprintln!("wrote {}; now add validators and clients", out.display());
            Ok(())
        }
        GenesisCommand::AddValidator { member, addresses } => {
            let public_key = member.public_key()?;
            edit(&member.genesis, |g| {
                g.validators.push(Validator {
                    name: member.name.clone(),
                    public_key,
                    addresses,
                });
            })
        }
        GenesisCommand::AddClient { member } => {
            let public_key = member.public_key()?;
            edit(&member.genesis, |g| {
                g.clients.push(Client {
                    name: member.name.clone(),
                    public_key,
                })
            })
        }
        GenesisCommand::Show { genesis, json } => show(&genesis, json),
    }
}

/// Accepts a genesis that is valid apart from still lacking validators.
fn check_editable(g: &Genesis) -> anyhow::Result<()> {
    let problems: Vec<_> = g
        .problems()
        .into_iter()
        .filter(|p| *p != Problem::NoValidators)
        .collect();
    if problems.is_empty() {
        return Ok(());
    }
    Err(ordo_genesis::GenesisError::Invalid(problems).into())
}

fn edit(path: &Path, change: impl FnOnce(&mut Genesis)) -> CmdResult {
    let mut g = Genesis::read(path)?;
    change(&mut g);
    check_editable(&g).context("the change was not saved")?;
    g.save(path)?;
    eprintln!(
        "updated {}: {} validators, {} clients, genesis hash {}",
        path.display(),
        g.validators.len(),
        g.clients.len(),
        g.hash()
    );
    Ok(())
}

fn show(path: &Path, json: bool) -> CmdResult {
    let g = Genesis::read(path)?;
    let problems = g.problems();
    if json {
        print_json(&serde_json::json!({
            "genesis_hash": g.hash(),
            "valid": problems.is_empty(),
            "problems": problems.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "genesis": g,
        }))?;
    } else {
        println!("chain id      {}", g.chain_id);
        println!("genesis hash  {}", g.hash());
        println!("validators    {}", g.validators.len());
        for v in &g.validators {
            println!(
                "  {:<16} {}  {}",
                v.name,
                v.public_key,
                v.addresses.join(" ")
            );
        }
        println!("clients       {}", g.clients.len());
        for c in &g.clients {
            println!("  {:<16} {}", c.name, c.public_key);
        }
        let c = &g.consensus;
        println!(
            "blocks        ≤ {} txs, ≤ {} bytes, cut after {} ms; tx ≤ {} bytes, lifetime {} blocks",
            c.block_txs_max,
            c.block_bytes_max,
            c.batch_timeout_ms,
            c.tx_bytes_max,
            c.tx_lifetime_blocks
        );
        println!(
            "raft          heartbeat {} ms, election timeout {}–{} ms",
            c.heartbeat_interval_ms, c.election_timeout_min_ms, c.election_timeout_max_ms
        );
        println!(
            "block time    the validators' median clock; at most {} ms ahead of it",
            c.block_time_ahead_max_ms
        );
        println!(
            "certificates  block h certifies every block at or below h − {}, with {} of {} validators",
            c.certify_lag,
            g.validators.len() / 2 + 1,
            g.validators.len()
        );
    }
    if problems.is_empty() {
        return Ok(());
    }
    Err(crate::failure::Failure::Negative(
        ordo_genesis::GenesisError::Invalid(problems).to_string(),
    ))
}
