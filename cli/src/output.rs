//! Shared helpers for opening chains and printing results.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use ordo_genesis::Genesis;
use ordo_ledger::Store;
use serde::Serialize;

/// Loads and validates the genesis file.
pub fn load_genesis(path: &Path) -> anyhow::Result<Genesis> {
    Genesis::load(path).with_context(|| format!("cannot use genesis {}", path.display()))
}

/// Opens a node's ledger read-only, checked against the genesis.
pub fn open_store(data_dir: &Path, genesis: &Genesis) -> anyhow::Result<Store> {
    Store::open_read_only(data_dir, &genesis.identity())
        .with_context(|| format!("cannot open the ledger in {}", data_dir.display()))
}

/// Which stored chain a read command looks at.
#[derive(Args)]
pub struct ChainArgs {
    /// The node's data directory (the ledger is in DIR/ledger).
    #[arg(long, value_name = "DIR")]
    pub data_dir: PathBuf,
    /// The chain's genesis file.
    #[arg(long, value_name = "FILE")]
    pub genesis: PathBuf,
}

impl ChainArgs {
    /// Loads the genesis and opens the ledger read-only against it.
    pub fn open(&self) -> anyhow::Result<(Genesis, Store)> {
        let genesis = load_genesis(&self.genesis)?;
        let store = open_store(&self.data_dir, &genesis)?;
        Ok((genesis, store))
    }
}

/// Prints `value` as pretty JSON on stdout.
pub fn print_json<T: Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// Milliseconds since the Unix epoch, as RFC 3339-ish UTC text for people.
pub fn format_time_ms(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        assert_eq!(format_time_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            format_time_ms(1_700_000_000_123),
            "2023-11-14T22:13:20.123Z"
        );
        assert_eq!(format_time_ms(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }
}
