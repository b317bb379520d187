//! `ordo bench`: runs the load generator, `ordo-bench`, a binary of its own (the operator's
//! binary carries what operators run). Every argument goes to it unchanged.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;

use anyhow::Context;
use clap::Args;

use crate::failure::CmdResult;

#[derive(Args)]
#[command(disable_help_flag = true)]
pub struct BenchArgs {
    /// Arguments for `ordo-bench` (`ordo bench --help` shows its help).
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "ARGS"
    )]
    args: Vec<OsString>,
}

/// Replaces this process with `ordo-bench` (found beside this binary, else on `PATH`, or
/// at `$ORDO_BENCH_BIN`), passing the arguments on. `ordo-bench` finds this `ordo` beside
/// itself to start validators.
pub fn run(a: BenchArgs) -> CmdResult {
    let bin = ordo_harness::sibling_bin("ordo-bench", "ORDO_BENCH_BIN")
        .context("`ordo bench` runs `ordo-bench`")?;
    let me = std::env::current_exe().context("cannot find the ordo executable")?;
    let err = std::process::Command::new(&bin)
        .args(&a.args)
        .env("ORDO_BIN", me)
        .exec();
    Err(anyhow::Error::new(err)
        .context(format!("cannot run {}", bin.display()))
        .into())
}
