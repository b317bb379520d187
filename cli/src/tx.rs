//! `ordo tx`: sign transactions; show committed ones with their inclusion proofs.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use ordo_crypto::load_key_file;
use ordo_ledger::{TX_BYTES_LIMIT, Transaction, TxId};

use crate::failure::CmdResult;
use crate::output::{ChainArgs, load_genesis, print_json};

#[derive(Subcommand)]
pub enum TxCommand {
    /// Sign a transaction and print its canonical bytes as one line of hex.
    ///
    /// The line is what `ordo tx submit` and the HTTP API accept. The transaction id is
    /// printed on stderr.
    Sign(SignArgs),
    /// Show a committed transaction with its Merkle inclusion proof.
    Show(ShowArgs),
    /// Sign transactions and submit them to a running validator.
    ///
    /// Reads the chain id, tip and expiry window from the node, signs each transaction
    /// with a random nonce and submits them in batches. While the cluster answers 503 (no
    /// leader, mempool full) or cannot be reached, it retries for up to 30 s; resubmitting
    /// a signed transaction is safe. Exit code 1 when any transaction was refused (or, with
    /// --wait, not committed in time).
    Submit(crate::remote::SubmitArgs),
    /// Ask a running validator about a transaction: committed (with proof) or pending.
    Status(crate::remote::StatusArgs),
    /// Fetch a committed transaction's receipt from a running validator.
    ///
    /// The receipt holds the signed transaction, its Merkle proof, its block's header and
    /// that block's certificate: anyone with the genesis can check it offline (`ordo
    /// receipt verify`). A block is certified a few blocks after it commits; until then
    /// this says so (exit code 1), or waits with --wait.
    Receipt(crate::receipt::FetchArgs),
}

#[derive(Args)]
pub struct SignArgs {
    /// The client's key file.
    #[arg(long, value_name = "FILE")]
    key: PathBuf,
    /// The chain's genesis file (gives the chain id and size limit).
    #[arg(long, value_name = "FILE", required_unless_present = "chain_id")]
    genesis: Option<PathBuf>,
    /// The chain id, when no genesis file is at hand.
    #[arg(long, conflicts_with = "genesis")]
    chain_id: Option<String>,
    /// Last block height that may include the transaction; after it, the transaction can
    /// never be committed. At most the current height + the chain's tx_lifetime_blocks.
    #[arg(long, value_name = "HEIGHT")]
    expires_at: u64,
    /// Nonce that makes the id unique; random when omitted.
    #[arg(long)]
    nonce: Option<u64>,
    #[command(flatten)]
    payload: PayloadArgs,
    /// Append the hex line to this file instead of printing it.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Print a JSON object (id, hex, decoded transaction) instead.
    #[arg(long, conflicts_with = "out")]
    json: bool,
}

#[derive(Args)]
#[group(required = true, multiple = false)]
pub struct PayloadArgs {
    /// The payload, as UTF-8 text.
    #[arg(long)]
    payload: Option<String>,
    /// The payload, as hex.
    #[arg(long, value_name = "HEX")]
    payload_hex: Option<String>,
    /// Read the payload bytes from a file.
    #[arg(long, value_name = "FILE")]
    payload_file: Option<PathBuf>,
}

impl PayloadArgs {
    fn bytes(&self) -> anyhow::Result<Vec<u8>> {
        crate::payload::read_payload(
            self.payload.as_deref(),
            self.payload_hex.as_deref(),
            self.payload_file.as_deref(),
        )
    }
}

#[derive(Args)]
pub struct ShowArgs {
    #[command(flatten)]
    chain: ChainArgs,
    /// The transaction id (64 hex digits).
    #[arg(long, value_name = "HEX")]
    id: TxId,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

pub fn run(cmd: TxCommand) -> CmdResult {
    match cmd {
        TxCommand::Sign(a) => sign(a),
        TxCommand::Show(a) => show(a),
        TxCommand::Submit(a) => crate::remote::submit(a),
        TxCommand::Status(a) => crate::remote::tx_status(a),
        TxCommand::Receipt(a) => crate::receipt::fetch(a),
    }
}

fn sign(a: SignArgs) -> CmdResult {
    let key = load_key_file(&a.key).context("cannot read the key")?;
    let (chain_id, tx_bytes_max) = match (&a.genesis, &a.chain_id) {
        (Some(g), _) => {
            let g = load_genesis(g)?;
            (g.chain_id.clone(), g.consensus.tx_bytes_max)
        }
        (None, Some(c)) if ordo_ledger::is_valid_chain_id(c) => (c.clone(), TX_BYTES_LIMIT),
        (None, Some(c)) => {
            return Err(anyhow::anyhow!(
                "--chain-id '{c}' must be 1–64 characters of A-Z a-z 0-9 . _ -"
            )
            .into());
        }
        (None, None) => return Err(anyhow::anyhow!("give --genesis or --chain-id").into()),
    };
    let tx = Transaction {
        chain_id,
        sender: key.public(),
        nonce: a.nonce.unwrap_or_else(rand::random),
        expires_at: a.expires_at,
        payload: a.payload.bytes()?,
    };
    let signed = tx.sign(&key);
    if signed.encoded_len() > tx_bytes_max {
        return Err(anyhow::anyhow!(
            "the signed transaction is {} bytes; this chain accepts at most {tx_bytes_max}",
            signed.encoded_len()
        )
        .into());
    }
    let hex_line = hex::encode(signed.to_bytes());
    let id = signed.id();
    if a.json {
        print_json(&serde_json::json!({ "id": id, "hex": hex_line, "tx": signed }))?;
        return Ok(());
    }
    match &a.out {
        Some(path) => {
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("cannot open {}", path.display()))?;
            writeln!(f, "{hex_line}")
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        None => println!("{hex_line}"),
    }
    eprintln!("transaction id {id}");
    Ok(())
}

fn show(a: ShowArgs) -> CmdResult {
    let (_, store) = a.chain.open()?;
    let Some(found) = store
        .tx_with_proof(&a.id)
        .context("cannot read the ledger")?
    else {
        return Err(crate::failure::Failure::Negative(format!(
            "transaction {} is not in this chain (tip {})",
            a.id,
            store.tip().height
        )));
    };
    let proof_ok = found.proof.verify(&found.id, &found.tx_root);
    if a.json {
        print_json(&serde_json::json!({ "proof_verifies": proof_ok, "inclusion": found }))?;
    } else {
        let t = &found.tx.tx;
        println!("transaction  {}", found.id);
        println!(
            "block        height {} index {} hash {}",
            found.height, found.index, found.block_hash
        );
        println!("sender       {}", t.sender);
        println!(
            "nonce        {}   expires at height {}",
            t.nonce, t.expires_at
        );
        println!(
            "payload      {} bytes: {}",
            t.payload.len(),
            crate::payload::preview(&t.payload)
        );
        println!("signature    {}", found.tx.signature);
        println!("tx root      {}", found.tx_root);
        println!(
            "proof        leaf {} of {}, {} hashes:",
            found.proof.leaf_index,
            found.proof.tree_size,
            found.proof.path.len()
        );
        for h in &found.proof.path {
            println!("  {h}");
        }
        println!(
            "proof check  {}",
            if proof_ok {
                "verifies against tx root"
            } else {
                "DOES NOT VERIFY"
            }
        );
    }
    if proof_ok {
        Ok(())
    } else {
        Err(crate::failure::Failure::Negative(
            "inclusion proof does not verify".into(),
        ))
    }
}
