//! The ordo validator node.
//!
//! [`consensus`] wraps openraft: ordo's type configuration, the Raft log and vote storage
//! on RocksDB (in the ledger's database, in column families of its own), and the state
//! machine that applies committed blocks to the ledger. Networking, the mempool and the
//! client API build on it. [`mempool`] admits client transactions and cuts blocks.

pub mod consensus;
pub mod mempool;
