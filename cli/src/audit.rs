//! `ordo audit`: offline re-verification of a stored chain.

use std::time::Instant;

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use ordo_crypto::PublicKey;
use ordo_genesis::Genesis;
use ordo_ledger::{AuditReport, TailStatus, audit};

use crate::failure::CmdResult;
use crate::output::{ChainArgs, print_json};

#[derive(Args)]
pub struct AuditArgs {
    #[command(flatten)]
    chain: ChainArgs,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    json: bool,
    /// No progress bar.
    #[arg(long, short)]
    quiet: bool,
}

pub fn run(a: AuditArgs) -> CmdResult {
    let (genesis, store) = a.chain.open()?;
    let tip = store.tip().height;
    let bar = if a.quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(tip)
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} auditing [{bar:40}] {pos}/{len} blocks  {per_sec}  eta {eta}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    let started = Instant::now();
    let report = audit(&store, &genesis.policy(), |h| {
        if h % 64 == 0 || h == tip {
            bar.set_position(h);
        }
    });
    bar.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    if a.json {
        let mut v = serde_json::to_value(&report).map_err(anyhow::Error::from)?;
        v["ok"] = report.ok().into();
        v["seconds"] = secs.into();
        print_json(&v)?;
    } else {
        println!(
            "chain        {} (genesis {})",
            report.chain_id, report.genesis_hash
        );
        println!(
            "recorded tip height {} {}",
            report.recorded_tip.height, report.recorded_tip.hash
        );
        println!(
            "verified     {} blocks, {} transactions in {secs:.2} s ({:.0} tx/s)",
            report.blocks_verified,
            report.txs_verified,
            report.txs_verified as f64 / secs.max(1e-9)
        );
        print_certification(&genesis, &report);
    }
    match &report.failure {
        None if !report.evidence.is_empty() => {
            let n = report.evidence.len();
            let what = format!(
                "{n} attestation(s) of blocks that are not this chain's: evidence against their signers"
            );
            if a.json {
                Err(crate::failure::Failure::Negative(format!(
                    "audit FAILED: {what}"
                )))
            } else {
                println!("result       FAILED: {what}");
                Err(crate::failure::Failure::Negative(String::new()))
            }
        }
        None => {
            if !a.json {
                println!(
                    "result       OK: every block and transaction verifies; a majority of the \
                     validators certified every block up to {}",
                    report.certified
                );
            }
            Ok(())
        }
        Some(f) if a.json => Err(crate::failure::Failure::Negative(format!(
            "audit FAILED at {}",
            with_names(&genesis, &f.to_string())
        ))),
        Some(f) => {
            println!(
                "result       FAILED at {}",
                with_names(&genesis, &f.to_string())
            );
            Err(crate::failure::Failure::Negative(String::new()))
        }
    }
}

/// A validator's genesis name, else its key.
fn name(genesis: &Genesis, key: &PublicKey) -> String {
    genesis
        .validator(key)
        .map_or_else(|| key.to_string(), |v| v.name.clone())
}

/// `text` with each validator key it names followed by the validator's name.
fn with_names(genesis: &Genesis, text: &str) -> String {
    genesis.validators.iter().fold(text.to_owned(), |t, v| {
        let key = v.public_key.to_string();
        t.replace(&key, &format!("{key} ({})", v.name))
    })
}

/// The certified height, the tail, each validator's record and the evidence, for people.
fn print_certification(genesis: &Genesis, report: &AuditReport) {
    if report.failure.is_some() {
        return;
    }
    println!(
        "certified    every block up to {} by a majority ({} of {} validators)",
        report.certified,
        genesis.policy().validators.quorum(),
        genesis.validators.len()
    );
    for t in &report.tail {
        let status = match t.status {
            TailStatus::Attested => "attested by a majority, not yet certified",
            TailStatus::PartlyAttested => "attested by fewer than a majority here",
            TailStatus::Unattested => "unattested here",
        };
        let by: Vec<String> = t.attested_by.iter().map(|k| name(genesis, k)).collect();
        println!(
            "tail         block {}: {status} [{}]",
            t.height,
            by.join(", ")
        );
    }
    for v in &report.validators {
        println!(
            "validator    {:<16} signed {} certificates, attested {} tail blocks{}",
            name(genesis, &v.key),
            v.certificates_signed,
            v.tail_attested,
            if v.conflicting > 0 {
                format!(", attested {} blocks not in this chain", v.conflicting)
            } else {
                String::new()
            }
        );
    }
    for e in &report.evidence {
        println!(
            "EVIDENCE     {} signed block {} at height {}, where this chain has {}{}",
            name(genesis, &e.signer),
            e.signed,
            e.height,
            e.chain,
            if e.equivocation {
                " (and signed that one too: equivocation)"
            } else {
                ""
            }
        );
    }
}
