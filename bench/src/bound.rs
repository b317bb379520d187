//! The verification bound: how many transactions per second signature checking alone
//! allows a cluster on this machine (every validator checks every signature once).

use std::time::{Duration, Instant};

use ordo_crypto::{BatchVerifier, Keypair, PublicKey, Signature};
use serde::Serialize;

/// The bound, and how close a run came to it.
#[derive(Debug, Default, Serialize)]
pub(crate) struct Bound {
    /// Signatures per second per core, every core checking at once: the bound's rate.
    pub(crate) batch_verify_per_core: f64,
    /// Signatures per second of one core checking alone.
    pub(crate) batch_verify_one_core: f64,
    pub(crate) cores: usize,
    pub(crate) validators: usize,
    pub(crate) bound_tps: f64,
    pub(crate) fraction: f64,
}

impl Bound {
    /// The bound of `validators` validators sharing this machine, from the rates of one
    /// core `alone` and of each core with all checking (`per_core`), and the fraction of it
    /// `reached_tps` is.
    pub(crate) fn new(alone: f64, per_core: f64, validators: usize, reached_tps: f64) -> Bound {
        let cores = ordo_crypto::cores();
        let bound_tps = per_core * cores as f64 / validators.max(1) as f64;
        Bound {
            batch_verify_per_core: per_core,
            batch_verify_one_core: alone,
            cores,
            validators,
            bound_tps,
            fraction: if bound_tps > 0.0 {
                reached_tps / bound_tps
            } else {
                0.0
            },
        }
    }

    /// Measures the rates on this machine with signatures from `keys`, and makes the bound
    /// (run it with the cluster stopped: on a shared machine, that is every core).
    pub(crate) fn measure(keys: &[Keypair], validators: usize, reached_tps: f64) -> Bound {
        let (alone, per_core) = batch_verify_rates(keys);
        Bound::new(alone, per_core, validators, reached_tps)
    }
}

/// Batch-verify rates for signatures from `keys.len()` signers, in signatures per second
/// per core: one core checking alone, and each core while every core checks at once (the
/// machine's real capacity when cores share caches, memory bandwidth or a clock budget).
fn batch_verify_rates(keys: &[Keypair]) -> (f64, f64) {
    let msgs: Vec<[u8; 32]> = (0..1024u32)
        .map(|i| {
            let mut m = [0u8; 32];
            m[..4].copy_from_slice(&i.to_le_bytes());
            m
        })
        .collect();
    let sigs: Vec<_> = msgs
        .iter()
        .enumerate()
        .map(|(i, m)| (keys[i % keys.len()].public(), keys[i % keys.len()].sign(m)))
        .collect();
    let rate = || batch_verify_rate(&sigs, &msgs);
    let alone = rate();
    let cores = ordo_crypto::cores();
    let together: f64 = std::thread::scope(|s| {
        let all: Vec<_> = (0..cores).map(|_| s.spawn(rate)).collect();
        all.into_iter()
            .map(|t| t.join().expect("a verify thread"))
            .sum()
    });
    (alone, together / cores as f64)
}

/// One thread's batch-verify rate over `sigs`: the median of five half-second rounds of
/// 1,024-signature batches (one round can be disturbed by whatever else the machine is
/// doing).
fn batch_verify_rate(sigs: &[(PublicKey, Signature)], msgs: &[[u8; 32]]) -> f64 {
    let mut rounds: Vec<f64> = (0..5)
        .map(|_| {
            let start = Instant::now();
            let mut checked = 0usize;
            while start.elapsed() < Duration::from_millis(500) {
                let mut b = BatchVerifier::with_capacity(sigs.len());
                for ((pk, sig), m) in sigs.iter().zip(msgs) {
                    b.queue(pk, m, sig);
                }
                b.verify().expect("valid signatures");
                checked += sigs.len();
            }
            checked as f64 / start.elapsed().as_secs_f64()
        })
        .collect();
    rounds.sort_by(f64::total_cmp);
    rounds[rounds.len() / 2]
}
