//! Transaction payloads: read from the command line, shown to people.

use std::path::Path;

use anyhow::{Context, bail};
use ordo_ledger::TX_BYTES_LIMIT;

/// A payload given as text, hex, or a file (exactly one of them).
pub fn read_payload(
    text: Option<&str>,
    hex_text: Option<&str>,
    file: Option<&Path>,
) -> anyhow::Result<Vec<u8>> {
    if let Some(p) = text {
        return Ok(p.as_bytes().to_vec());
    }
    if let Some(h) = hex_text {
        return hex::decode(h.trim()).context("--payload-hex is not valid hex");
    }
    let Some(path) = file else {
        bail!("give a payload")
    };
    let len = std::fs::metadata(path)
        .with_context(|| format!("cannot read {}", path.display()))?
        .len();
    if len > TX_BYTES_LIMIT {
        bail!(
            "{} is {len} bytes; no chain accepts a transaction over {TX_BYTES_LIMIT} bytes",
            path.display()
        );
    }
    std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
}

/// A short printable rendering of a payload.
pub fn preview(payload: &[u8]) -> String {
    const SHOWN: usize = 64;
    let head = &payload[..payload.len().min(SHOWN)];
    let more = if payload.len() > SHOWN { "…" } else { "" };
    match std::str::from_utf8(head) {
        Ok(s) if s.chars().all(|c| !c.is_control()) => format!("{s:?}{more}"),
        _ => format!("0x{}{more}", hex::encode(head)),
    }
}
