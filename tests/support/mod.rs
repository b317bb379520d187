//! Shared helpers for the integration tests: real keys, real genesis, real RocksDB stores.

#![allow(dead_code, missing_docs)]

pub mod cluster;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ordo_crypto::{Keypair, PublicKey, Signature};
use ordo_genesis::{Client, Genesis, Validator};
use ordo_ledger::{
    Attestation, Block, Certificate, SignedTransaction, Store, Transaction, build_block,
    certificate, verify_block,
};

pub const CHAIN: &str = "ordo-test";

/// A genesis with `n_validators` validators and `n_clients` clients, keys derived from labels.
pub struct TestChain {
    pub genesis: Genesis,
    pub validators: Vec<Keypair>,
    pub clients: Vec<Keypair>,
}

impl TestChain {
    pub fn new(n_validators: usize, n_clients: usize) -> TestChain {
        let validators: Vec<_> = (0..n_validators)
            .map(|i| Keypair::from_label(&format!("validator-{i}")))
            .collect();
        let clients: Vec<_> = (0..n_clients)
            .map(|i| Keypair::from_label(&format!("client-{i}")))
            .collect();
        let mut genesis = Genesis::new(CHAIN);
        for (i, k) in validators.iter().enumerate() {
            genesis.validators.push(Validator {
                name: format!("validator-{i}"),
                public_key: k.public(),
                addresses: vec![],
            });
        }
        for (i, k) in clients.iter().enumerate() {
            genesis.clients.push(Client {
                name: format!("client-{i}"),
                public_key: k.public(),
            });
        }
        genesis.validate().expect("test genesis is valid");
        TestChain {
            genesis,
            validators,
            clients,
        }
    }

    /// `n` signed transactions for a block at `height`, with nonces from `first_nonce`.
    pub fn txs(
        &self,
        height: u64,
        first_nonce: u64,
        n: usize,
        payload_bytes: usize,
    ) -> Vec<SignedTransaction> {
        (0..n as u64)
            .map(|i| {
                let nonce = first_nonce + i;
                let key = &self.clients[(nonce % self.clients.len() as u64) as usize];
                let mut payload = nonce.to_le_bytes().to_vec();
                payload.resize(payload_bytes.max(8), 0xab);
                Transaction {
                    chain_id: CHAIN.into(),
                    sender: key.public(),
                    nonce,
                    expires_at: height + 5,
                    payload,
                }
                .sign(key)
            })
            .collect()
    }

    /// The next block on top of `store`'s tip, verified as a follower would.
    pub fn next_block(&self, store: &Store, txs_per_block: usize, payload_bytes: usize) -> Block {
        let parent = store.tip();
        let height = parent.height + 1;
        let txs = self.txs(height, height * 1_000_000, txs_per_block, payload_bytes);
        let proposer = &self.validators[(height % self.validators.len() as u64) as usize];
        let block = build_block(
            &parent,
            CHAIN,
            self.certificates(store),
            txs,
            proposer,
            1_700_000_000_000 + height * 100,
            1,
        );
        verify_block(&parent, &block, &self.genesis.policy()).expect("built block verifies");
        block
    }

    /// Certificates, signed by every validator, of every block of `store` not yet
    /// certified: what the next block carries.
    pub fn certificates(&self, store: &Store) -> Vec<Certificate> {
        let tip = store.tip();
        let policy = self.genesis.policy();
        (tip.certified + 1..=tip.height)
            .map(|h| {
                let hash = store.hash_at(h).expect("a stored block");
                let sigs: BTreeMap<PublicKey, Signature> = self
                    .validators
                    .iter()
                    .map(|k| {
                        let a = Attestation::sign(CHAIN, h, hash, k);
                        (a.signer, a.signature)
                    })
                    .collect();
                certificate(&policy.validators, h, hash, &sigs)
            })
            .collect()
    }

    /// Opens (creating) the ledger in `data_dir` and appends `n_blocks` blocks.
    pub fn write(
        &self,
        data_dir: &Path,
        n_blocks: u64,
        txs_per_block: usize,
        payload_bytes: usize,
    ) -> Store {
        let store = Store::open(data_dir, &self.genesis.identity()).expect("open store");
        for _ in 0..n_blocks {
            let block = self.next_block(&store, txs_per_block, payload_bytes);
            store.append(&block).expect("append");
        }
        store
    }
}

/// Column families of the ledger database.
pub const LEDGER_CFS: [&str; 7] = ordo_ledger::LEDGER_COLUMN_FAMILIES;

/// Opens the ledger database directly, bypassing the store, to tamper with it.
pub fn raw_db(data_dir: &Path) -> rocksdb::DB {
    let opts = rocksdb::Options::default();
    rocksdb::DB::open_cf(&opts, data_dir.join("ledger"), LEDGER_CFS).expect("open raw ledger db")
}

/// The `ordo` binary built for these tests.
pub fn ordo_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_ordo"))
}

/// The runtime the tests' async clients run on.
pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("test runtime")
    })
}

/// Runs `f` to completion on the tests' runtime.
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    runtime().block_on(f)
}

/// Runs `ordo` with `args`; returns (exit code, stdout, stderr).
pub fn ordo(args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(ordo_bin())
        .args(args)
        .output()
        .expect("run ordo");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
