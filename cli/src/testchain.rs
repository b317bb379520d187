//! `ordo testchain`: write a locally signed chain for audit drills and benchmarks. It holds
//! every validator's key, so every block is certified by all of them.

use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use ordo_crypto::{Keypair, write_key_file};
use ordo_genesis::{Client, Genesis, Validator};
use ordo_ledger::{Certificate, ChainBuilder, SignedTransaction, Store, Transaction, verify_block};

use crate::failure::CmdResult;

#[derive(Args)]
pub struct TestchainArgs {
    /// Directory to create: genesis.toml, keys/, and the ledger in data/.
    #[arg(long, value_name = "DIR")]
    dir: PathBuf,
    /// Number of blocks.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    blocks: u64,
    /// Transactions per block.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    txs_per_block: u32,
    /// Payload size of each transaction, in bytes.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(0..=1_000_000))]
    payload_bytes: u32,
    /// Number of validators, which propose blocks in turn.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=128))]
    validators: u32,
    /// Number of permitted clients, which sign transactions in turn.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=1000))]
    clients: u32,
    /// Chain id of the new chain.
    #[arg(long, default_value = "ordo-testchain")]
    chain_id: String,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Creates keys and a genesis in `dir`, returning (genesis, validator keys, client keys).
fn create_members(a: &TestchainArgs) -> anyhow::Result<(Genesis, Vec<Keypair>, Vec<Keypair>)> {
    let keys_dir = a.dir.join("keys");
    std::fs::create_dir_all(&keys_dir)
        .with_context(|| format!("cannot create {}", keys_dir.display()))?;
    let mut genesis = Genesis::new(&a.chain_id);
    let make = |role: &str, i: u32| -> anyhow::Result<Keypair> {
        let key = Keypair::generate();
        write_key_file(&keys_dir.join(format!("{role}-{i}.key")), &key, false)?;
        Ok(key)
    };
    let mut validators = Vec::new();
    for i in 0..a.validators {
        let key = make("validator", i)?;
        genesis.validators.push(Validator {
            name: format!("validator-{i}"),
            public_key: key.public(),
            addresses: vec![],
        });
        validators.push(key);
    }
    let mut clients = Vec::new();
    for i in 0..a.clients {
        let key = make("client", i)?;
        genesis.clients.push(Client {
            name: format!("client-{i}"),
            public_key: key.public(),
        });
        clients.push(key);
    }
    genesis.consensus.block_txs_max = genesis.consensus.block_txs_max.max(a.txs_per_block);
    let tx_bytes = 200 + u64::from(a.payload_bytes) + a.chain_id.len() as u64;
    genesis.consensus.tx_bytes_max = genesis
        .consensus
        .tx_bytes_max
        .max(tx_bytes.next_power_of_two());
    let certificates =
        genesis.consensus.certify_lag * Certificate::encoded_len_max(genesis.validators.len());
    let block_bytes =
        (tx_bytes * u64::from(a.txs_per_block) + 4096 + certificates).next_power_of_two();
    genesis.consensus.block_bytes_max = genesis.consensus.block_bytes_max.max(block_bytes);
    genesis.validate()?;
    genesis.save(&a.dir.join("genesis.toml"))?;
    Ok((genesis, validators, clients))
}

pub fn run(a: TestchainArgs) -> CmdResult {
    if a.dir.join("genesis.toml").exists() {
        bail_usage(&a.dir)?;
    }
    let (genesis, validators, clients) = create_members(&a)?;
    let data_dir = a.dir.join("data");
    let store = Store::open(&data_dir, &genesis.identity()).context("cannot create the ledger")?;
    let policy = genesis.policy();
    let bar = ProgressBar::new(a.blocks);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} building [{bar:40}] {pos}/{len} blocks  {per_sec}  eta {eta}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    let started = Instant::now();
    let mut nonce = 0u64;
    // Every validator attests every block; each block certifies all blocks before it.
    let mut chain = ChainBuilder::new(&policy, validators.clone());
    for _ in 0..a.blocks {
        let parent = chain.tip();
        let height = parent.height + 1;
        let txs: Vec<SignedTransaction> = (0..a.txs_per_block)
            .map(|_| {
                nonce += 1;
                let key = &clients[(nonce % clients.len() as u64) as usize];
                let mut payload = vec![0u8; a.payload_bytes as usize];
                for (i, b) in payload.iter_mut().enumerate() {
                    *b = (nonce as usize + i) as u8;
                }
                Transaction {
                    chain_id: a.chain_id.clone(),
                    sender: key.public(),
                    nonce,
                    expires_at: height + 10,
                    payload,
                }
                .sign(key)
            })
            .collect();
        let proposer = &validators[(height % validators.len() as u64) as usize];
        let block = chain.build(txs, proposer, now_ms(), 1);
        let ids =
            verify_block(&parent, &block, &policy).context("the built block does not verify")?;
        store
            .append_with_ids(&block, &ids)
            .context("cannot append")?;
        bar.inc(1);
    }
    store
        .put_attestations(&chain.tail_attestations())
        .context("cannot keep the last block's attestations")?;
    bar.finish_and_clear();
    let tip = store.tip();
    eprintln!(
        "wrote {} blocks ({} transactions) in {:.1} s to {}",
        tip.height,
        tip.height * u64::from(a.txs_per_block),
        started.elapsed().as_secs_f64(),
        data_dir.display()
    );
    println!("genesis   {}", a.dir.join("genesis.toml").display());
    println!("data dir  {}", data_dir.display());
    println!("tip       height {} hash {}", tip.height, tip.hash);
    Ok(())
}

fn bail_usage(dir: &Path) -> anyhow::Result<()> {
    bail!(
        "{} already holds a chain (genesis.toml exists); choose another --dir",
        dir.display()
    )
}
