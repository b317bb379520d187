//! `ordo audit`: offline re-verification of a stored chain.

use std::time::Instant;

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use ordo_ledger::audit;

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
    }
    match &report.failure {
        None => {
            if !a.json {
                println!("result       OK: every block and transaction verifies");
            }
            Ok(())
        }
        Some(f) if a.json => Err(crate::failure::Failure::Negative(format!(
            "audit FAILED at {f}"
        ))),
        Some(f) => {
            println!("result       FAILED at {f}");
            Err(crate::failure::Failure::Negative(String::new()))
        }
    }
}
