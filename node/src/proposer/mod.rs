//! The leader's proposer: when to cut a block and on which parent ([`core`], pure), and
//! the task that cuts, builds, signs and hands blocks to Raft ([`task`]).
//!
//! The rules (ARCHITECTURE.md, invariant 16; `docs/design/proposer.md`): propose only
//! while leading and settled (everything from earlier terms applied and cleaned from the
//! mempool); build on the last block in flight, else on the ledger tip; at most
//! `blocks_in_flight_max` in flight; after a block fails, let the blocks built on it come
//! back before proposing again; cut when a block's worth is pending, or when the oldest
//! pending transaction has waited the batch timeout (only `idle_batch_wait_ms` when no
//! block is in flight).

pub(crate) mod core;
pub(crate) mod task;
