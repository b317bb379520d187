//! `ordo block`: read blocks from a stored chain.

use anyhow::Context;
use clap::{Args, Subcommand};
use ordo_crypto::Hash;

use crate::failure::CmdResult;
use crate::output::{ChainArgs, format_time_ms, print_json};

#[derive(Subcommand)]
pub enum BlockCommand {
    /// Show one block (by default the tip) from a node's data directory.
    Show(ShowArgs),
    /// Get one block (by default the latest) from a running validator.
    Get(crate::remote::BlockGetArgs),
    /// Print each committed block of a running validator as it arrives.
    Follow(crate::remote::FollowArgs),
}

#[derive(Args)]
pub struct ShowArgs {
    #[command(flatten)]
    chain: ChainArgs,
    /// Block height (default: the tip).
    #[arg(long, conflicts_with = "hash")]
    height: Option<u64>,
    /// Block hash (64 hex digits).
    #[arg(long, value_name = "HEX")]
    hash: Option<Hash>,
    /// List every transaction id.
    #[arg(long)]
    txs: bool,
    /// Print the whole block as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(cmd: BlockCommand) -> CmdResult {
    let a = match cmd {
        BlockCommand::Show(a) => a,
        BlockCommand::Get(a) => return crate::remote::block_get(a),
        BlockCommand::Follow(a) => return crate::remote::follow(a),
    };
    let (genesis, store) = a.chain.open()?;
    let tip = store.tip();
    let block = match (a.height, a.hash) {
        (_, Some(hash)) => store.block_by_hash(&hash),
        (Some(h), None) => store.block(h),
        (None, None) if tip.height == 0 => {
            return Err(crate::failure::Failure::Negative(
                "the chain has no blocks yet".into(),
            ));
        }
        (None, None) => store.block(tip.height),
    }
    .context("cannot read the ledger")?;
    let Some(block) = block else {
        return Err(crate::failure::Failure::Negative(format!(
            "no such block (the tip is height {})",
            tip.height
        )));
    };
    if a.json {
        print_json(
            &serde_json::json!({ "hash": block.hash(), "encoded_bytes": block.encoded_len(), "block": block }),
        )?;
        return Ok(());
    }
    let h = &block.header;
    let proposer = genesis
        .validator(&h.proposer)
        .map_or("(not a validator)", |v| v.name.as_str());
    println!("block        {} of {}", h.height, tip.height);
    println!("hash         {}", block.hash());
    println!("prev hash    {}", h.prev_hash);
    println!("tx root      {}", h.tx_root);
    println!(
        "txs          {} ({} bytes encoded)",
        h.n_txs,
        block.encoded_len()
    );
    println!(
        "time         {} ({} ms)",
        format_time_ms(h.timestamp_ms),
        h.timestamp_ms
    );
    println!("proposer     {} {}  term {}", proposer, h.proposer, h.term);
    println!("signature    {}", block.signature);
    if a.txs {
        for (i, tx) in block.txs.iter().enumerate() {
            println!(
                "  {i:>5} {}  {}",
                tx.id(),
                crate::payload::preview(&tx.tx.payload)
            );
        }
    }
    Ok(())
}
