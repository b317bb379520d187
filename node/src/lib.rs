//! The ordo validator node.
//!
//! * [`consensus`] wraps openraft: ordo's type configuration, the Raft log and vote storage
//!   on RocksDB (in the ledger's database, in column families of its own), and the state
//!   machine that applies committed blocks to the ledger.
//! * [`mempool`] admits client transactions (bounded) and cuts blocks for the leader.
//! * [`network`] connects validators, and only validators, over libp2p, carrying bounded
//!   request/response frames.
//! * [`proposer`] is the leader's step: cut, build, propose, requeue on failure.
//! * [`sync`] serves committed blocks to peers and fetches them for a node catching up.

pub mod consensus;
pub mod mempool;
pub mod network;
pub mod proposer;
pub mod sync;
