//! `ordo tx receipt` (fetch a committed transaction's receipt from a validator) and
//! `ordo receipt verify` (check one offline, with the genesis alone).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, Subcommand};
use ordo_client::api::ReceiptStatus;
use ordo_ledger::{RECEIPT_BYTES_MAX, Receipt, TxId};

use crate::failure::{CmdResult, Failure};
use crate::output::{load_genesis, print_json};
use crate::remote::{NodeArgs, api_err, block_on};

#[derive(Subcommand)]
pub enum ReceiptCommand {
    /// Check a receipt offline: the transaction's signature and rules, its inclusion in the
    /// block, and the block's certificate by a majority of the genesis's validators.
    ///
    /// Needs no node and no data directory. Exit code 0 when it verifies, 1 when it does
    /// not (naming the check that failed), 2 when the files cannot be read.
    Verify(VerifyArgs),
}

#[derive(Args)]
pub struct FetchArgs {
    #[command(flatten)]
    node: NodeArgs,
    /// The transaction id (64 hex digits).
    #[arg(long, value_name = "HEX")]
    id: TxId,
    /// Write the receipt's bytes to this file (else its hex is printed).
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// While the block is not certified yet, ask again for up to this many seconds.
    #[arg(long, value_name = "SECS", default_value_t = 0)]
    wait: u64,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct VerifyArgs {
    /// The chain's genesis file.
    #[arg(long, value_name = "FILE")]
    genesis: PathBuf,
    /// The receipt: a file of its bytes, or of their hex (as `ordo tx receipt` prints).
    #[arg(value_name = "RECEIPT")]
    receipt: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

pub fn run(cmd: ReceiptCommand) -> CmdResult {
    match cmd {
        ReceiptCommand::Verify(a) => verify(a),
    }
}

/// How often a receipt not yet certified is asked for again.
const POLL: Duration = Duration::from_millis(200);

/// `ordo tx receipt`.
pub fn fetch(a: FetchArgs) -> CmdResult {
    block_on(async move {
        let client = a.node.client()?;
        let deadline = Instant::now() + Duration::from_secs(a.wait);
        let status = loop {
            let status = client.receipt(&a.id).await.map_err(api_err)?;
            match status {
                ReceiptStatus::Uncertified { .. } if Instant::now() < deadline => {
                    tokio::time::sleep(POLL).await;
                }
                other => break other,
            }
        };
        if a.json {
            print_json(&status)?;
        }
        match status {
            ReceiptStatus::Certified {
                height, receipt, ..
            } => {
                match &a.out {
                    Some(path) => std::fs::write(path, &receipt)
                        .with_context(|| format!("cannot write {}", path.display()))?,
                    None if !a.json => println!("{}", hex::encode(&receipt)),
                    None => {}
                }
                if !a.json {
                    eprintln!(
                        "receipt of {} in block {height} ({} bytes); check it with `ordo receipt verify`",
                        a.id,
                        receipt.len()
                    );
                }
                Ok(())
            }
            ReceiptStatus::Uncertified {
                height, certified, ..
            } => Err(Failure::Negative(format!(
                "{} is committed in block {height}, which no block certifies yet (certified up \
                 to {certified}); ask again after a few blocks (or use --wait)",
                a.id
            ))),
        }
    })
}

/// Reads a receipt file: raw bytes, or hex text.
fn read_receipt(path: &PathBuf) -> anyhow::Result<Vec<u8>> {
    let len = std::fs::metadata(path)
        .with_context(|| format!("cannot read {}", path.display()))?
        .len();
    if len > 2 * RECEIPT_BYTES_MAX + 2 {
        anyhow::bail!("{} is {len} bytes: larger than any receipt", path.display());
    }
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let text = std::str::from_utf8(&bytes).map(str::trim);
    Ok(match text {
        Ok(t) if !t.is_empty() && t.bytes().all(|b| b.is_ascii_hexdigit()) => {
            hex::decode(t).context("the receipt's hex does not decode")?
        }
        _ => bytes,
    })
}

fn verify(a: VerifyArgs) -> CmdResult {
    let genesis = load_genesis(&a.genesis)?;
    let bytes = read_receipt(&a.receipt)?;
    let verdict = Receipt::from_bytes(&bytes).and_then(|r| r.verify(&genesis.policy()));
    match verdict {
        Ok(v) => {
            if a.json {
                let mut j = serde_json::to_value(&v).map_err(anyhow::Error::from)?;
                j["ok"] = true.into();
                print_json(&j)?;
            } else {
                let names: Vec<String> = v
                    .signers
                    .iter()
                    .map(|k| {
                        genesis
                            .validator(k)
                            .map_or(k.to_string(), |x| x.name.clone())
                    })
                    .collect();
                println!("transaction {}", v.id);
                println!(
                    "block       {} at height {}, position {}",
                    v.block_hash, v.height, v.index
                );
                println!(
                    "certified   by {} of {} validators: {}",
                    names.len(),
                    genesis.validators.len(),
                    names.join(", ")
                );
                println!("result      OK: ordered in chain {}", genesis.chain_id);
            }
            Ok(())
        }
        Err(e) => Err(Failure::Negative(format!("receipt does NOT verify: {e}"))),
    }
}
