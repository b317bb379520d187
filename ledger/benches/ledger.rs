//! Ledger micro-benchmarks: signature verification, Merkle roots, block build/verify,
//! encoding, synced store appends and audit throughput.
//!
//! Run with `cargo bench --workspace --bench ledger` (release profile; `--workspace` keeps
//! dependency features, and so the RocksDB build, the same as the tests'). Throughputs are
//! reported per element: signatures, leaves, transactions or blocks per second.

#![allow(missing_docs)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use ordo_crypto::{BatchVerifier, Domain, Hash, Keypair, merkle};
use ordo_ledger::{
    Attestation, Block, ChainIdentity, ChainTip, Limits, Policy, SignedTransaction, Store,
    Transaction, audit, build_block, certificate, verify_block,
};

const CHAIN: &str = "bench";

struct Fixture {
    policy: Policy,
    validator: Keypair,
    clients: Vec<Keypair>,
}

fn fixture() -> Fixture {
    let validator = Keypair::from_label("bench-validator");
    let clients: Vec<_> = (0..16)
        .map(|i| Keypair::from_label(&format!("bench-client-{i}")))
        .collect();
    let policy = Policy {
        chain_id: CHAIN.into(),
        genesis_hash: Hash::digest(Domain::Genesis, CHAIN.as_bytes()),
        validators: ordo_ledger::ValidatorSet::from([validator.public()]),
        clients: clients.iter().map(Keypair::public).collect(),
        limits: Limits {
            block_txs_max: 10_000,
            block_bytes_max: 32 << 20,
            ..Limits::default()
        },
        certify_lag: ordo_ledger::CERTIFY_LAG_DEFAULT,
    };
    Fixture {
        policy,
        validator,
        clients,
    }
}

impl Fixture {
    fn txs(
        &self,
        height: u64,
        first_nonce: u64,
        n: usize,
        payload: usize,
    ) -> Vec<SignedTransaction> {
        (0..n as u64)
            .map(|i| {
                let key = &self.clients[(i % self.clients.len() as u64) as usize];
                let tx = Transaction {
                    chain_id: CHAIN.into(),
                    sender: key.public(),
                    nonce: first_nonce + i,
                    expires_at: height + 10,
                    payload: vec![(i % 251) as u8; payload],
                };
                tx.sign(key)
            })
            .collect()
    }

    fn block(&self, parent: &ChainTip, n: usize, payload: usize) -> Block {
        let txs = self.txs(parent.height + 1, parent.height * 1_000_000, n, payload);
        build_block(
            parent,
            CHAIN,
            vec![],
            txs,
            &self.validator,
            1_700_000_000_000 + parent.height,
            1,
        )
    }

    fn identity(&self) -> ChainIdentity {
        ChainIdentity {
            chain_id: CHAIN.into(),
            genesis_hash: self.policy.genesis_hash,
        }
    }
}

fn bench_signatures(c: &mut Criterion) {
    let f = fixture();
    let mut g = c.benchmark_group("signature_verify");
    for n in [1usize, 64, 256, 1024] {
        let txs = f.txs(1, 0, n, 100);
        let ids: Vec<_> = txs.iter().map(SignedTransaction::id).collect();
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function(format!("zip215_batch/{n}"), |b| {
            b.iter(|| {
                let mut batch = BatchVerifier::with_capacity(n);
                for (tx, id) in txs.iter().zip(&ids) {
                    batch.queue(&tx.tx.sender, id.as_bytes(), &tx.signature);
                }
                batch.verify().expect("valid")
            })
        });
    }
    // Signatures from 1,000 keys: nearly every signature in a batch has its own key, as
    // with many independent clients.
    let keys: Vec<Keypair> = (0..1000)
        .map(|i| Keypair::from_label(&format!("bench-many-{i}")))
        .collect();
    for n in [64usize, 256, 512, 1024] {
        let sigs: Vec<_> = (0..n)
            .map(|i| {
                let key = &keys[(i * 7919) % keys.len()];
                let msg = Hash::digest(Domain::Transaction, &i.to_le_bytes());
                (key.public(), msg, key.sign(msg.as_bytes()))
            })
            .collect();
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function(format!("zip215_batch_1000_keys/{n}"), |b| {
            b.iter(|| {
                let mut batch = BatchVerifier::with_capacity(n);
                for (key, msg, sig) in &sigs {
                    batch.queue(key, msg.as_bytes(), sig);
                }
                batch.verify().expect("valid")
            })
        });
        // The same batch spread over every core ([verify] threads = 0): how much sooner
        // one batch's verdict comes when the cores are free.
        let cores = ordo_crypto::cores();
        if cores > 1 && n >= 2 * ordo_crypto::SPREAD_PART_MIN {
            g.bench_function(format!("zip215_batch_1000_keys_spread_{cores}/{n}"), |b| {
                b.iter(|| {
                    let mut batch = BatchVerifier::with_capacity(n).spread(cores);
                    for (key, msg, sig) in &sigs {
                        batch.queue(key, msg.as_bytes(), sig);
                    }
                    batch.verify().expect("valid")
                })
            });
        }
    }
    let tx = &f.txs(1, 0, 1, 100)[0];
    let id = tx.id();
    g.throughput(Throughput::Elements(1));
    g.bench_function("zip215_single", |b| {
        b.iter(|| ordo_crypto::verify(&tx.tx.sender, id.as_bytes(), &tx.signature).expect("valid"))
    });
    g.finish();
}

fn bench_merkle(c: &mut Criterion) {
    let mut g = c.benchmark_group("merkle_root");
    for n in [100usize, 1000, 10_000] {
        let leaves: Vec<Hash> = (0..n as u64)
            .map(|i| Hash::digest(Domain::Transaction, &i.to_le_bytes()))
            .collect();
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function(format!("leaves/{n}"), |b| {
            b.iter(|| merkle::root(black_box(&leaves)))
        });
    }
    g.finish();
}

fn bench_blocks(c: &mut Criterion) {
    let f = fixture();
    let parent = f.policy.genesis_tip();
    let mut g = c.benchmark_group("block");
    for n in [100usize, 1000] {
        let txs = f.txs(1, 0, n, 100);
        let block = build_block(&parent, CHAIN, vec![], txs.clone(), &f.validator, 1, 1);
        let bytes = block.to_bytes();
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function(format!("build/{n}tx"), |b| {
            b.iter_batched(
                || txs.clone(),
                |t| build_block(&parent, CHAIN, vec![], t, &f.validator, 1, 1),
                BatchSize::LargeInput,
            )
        });
        g.bench_function(format!("verify/{n}tx"), |b| {
            b.iter(|| verify_block(&parent, &block, &f.policy).expect("valid"))
        });
        g.bench_function(format!("encode/{n}tx"), |b| b.iter(|| block.to_bytes()));
        g.bench_function(format!("decode/{n}tx"), |b| {
            b.iter(|| Block::from_bytes(&bytes, u64::MAX).expect("decodes"))
        });
    }
    g.finish();
}

/// What a certificate adds to a block: the verification of a 100-transaction block
/// carrying one certificate signed by every one of 3, 5 or 7 validators (the most a block
/// carries in steady state), against the same block with none.
fn bench_certificates(c: &mut Criterion) {
    let base = fixture();
    let mut g = c.benchmark_group("certificate");
    for n in [3usize, 5, 7] {
        let keys: Vec<Keypair> = (0..n)
            .map(|i| Keypair::from_label(&format!("bench-v{i}")))
            .collect();
        let mut policy = base.policy.clone();
        policy.validators = keys.iter().map(Keypair::public).collect();
        // Block 9 must certify block 1.
        let parent = ChainTip {
            height: 8,
            hash: Hash::digest(Domain::BlockHeader, b"parent"),
            timestamp_ms: 0,
            certified: 0,
        };
        let certified = Hash::digest(Domain::BlockHeader, b"block 1");
        let sigs = keys
            .iter()
            .map(|k| {
                let a = Attestation::sign(CHAIN, 1, certified, k);
                (a.signer, a.signature)
            })
            .collect();
        let cert = certificate(&policy.validators, 1, certified, &sigs);
        let txs = base.txs(9, 0, 100, 100);
        let with = build_block(&parent, CHAIN, vec![cert], txs.clone(), &keys[0], 1, 1);
        let mut lax = policy.clone();
        lax.certify_lag = 64;
        let without = build_block(&parent, CHAIN, vec![], txs, &keys[0], 1, 1);
        g.bench_function(format!("verify_100tx_block/{n}_validators/with"), |b| {
            b.iter(|| verify_block(&parent, &with, &policy).expect("valid"))
        });
        g.bench_function(format!("verify_100tx_block/{n}_validators/without"), |b| {
            b.iter(|| verify_block(&parent, &without, &lax).expect("valid"))
        });
    }
    g.finish();
}

fn bench_store_append(c: &mut Criterion) {
    let f = fixture();
    let mut g = c.benchmark_group("store_append_synced");
    g.sample_size(20).measurement_time(Duration::from_secs(10));
    for n in [1usize, 100, 1000] {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), &f.identity()).expect("open");
        g.throughput(Throughput::Elements(1));
        g.bench_function(format!("block_of/{n}tx"), |b| {
            b.iter_custom(|iters| {
                // Build the blocks untimed; time only the synced appends.
                let mut tip = store.tip();
                let blocks: Vec<Block> = (0..iters)
                    .map(|_| {
                        let block = f.block(&tip, n, 100);
                        tip = block.tip();
                        block
                    })
                    .collect();
                let start = Instant::now();
                for block in &blocks {
                    store.append(block).expect("append");
                }
                start.elapsed()
            })
        });
    }
    g.finish();
}

fn bench_audit(c: &mut Criterion) {
    let f = fixture();
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let store = Store::open(dir.path(), &f.identity()).expect("open");
        for _ in 0..1000 {
            let block = f.block(&store.tip(), 100, 100);
            store.append(&block).expect("append");
        }
    }
    let store = Store::open_read_only(dir.path(), &f.identity()).expect("open");
    let mut g = c.benchmark_group("audit");
    g.sample_size(10).measurement_time(Duration::from_secs(20));
    g.throughput(Throughput::Elements(100_000));
    g.bench_function("chain_1000_blocks_100k_tx", |b| {
        b.iter(|| {
            let report = audit(&store, &f.policy, |_| {});
            assert!(report.ok());
        })
    });
    g.finish();
}

criterion_group!(
    benches,
    bench_signatures,
    bench_merkle,
    bench_blocks,
    bench_certificates,
    bench_store_append,
    bench_audit
);
criterion_main!(benches);
