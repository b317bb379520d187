//! Test-only faults, compiled only with the `fault-injection` feature (the `ordo-faulty`
//! test binary; never the `ordo` binary): a validator made to misbehave on purpose, so
//! that tests and the nemesis can check what the honest ones do about it.
//!
//! - While the file named by `ORDO_FAULT_INVALID_BLOCKS` exists, this validator, when it
//!   leads, signs every block it proposes with a spoiled signature: a block that fails
//!   every follower's check (its transactions stay valid, so nothing a client sent is
//!   spoiled with it).

use ordo_ledger::Block;

/// The environment variable naming the file that turns invalid blocks on.
pub const INVALID_BLOCKS: &str = "ORDO_FAULT_INVALID_BLOCKS";

/// Spoils `block`'s proposer signature while the file of [`INVALID_BLOCKS`] exists.
pub(crate) fn spoil(block: &mut Block) {
    let on = std::env::var_os(INVALID_BLOCKS).is_some_and(|p| std::path::Path::new(&p).exists());
    if on {
        block.signature.0[0] ^= 0x01;
        tracing::warn!(
            height = block.header.height,
            "fault injection: proposing a block with a spoiled signature"
        );
    }
}
