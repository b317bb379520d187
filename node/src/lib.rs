//! The ordo validator node.
//!
//! * [`config`] is the node's TOML configuration file.
//! * [`validator`] runs a validator: it wires the parts below together and owns their tasks.
//! * [`api`] is the client API, JSON over HTTP.
//! * [`consensus`] wraps openraft: ordo's type configuration, the Raft log and vote storage
//!   on RocksDB (in the ledger's database, in column families of its own), and the state
//!   machine that applies committed blocks to the ledger.
//! * [`mempool`] admits client transactions (bounded) and cuts blocks for the leader.
//! * [`network`] connects validators, and only validators, over libp2p, carrying bounded
//!   request/response frames.
//! * [`prechecked`] lets a follower verify transaction signatures as the leader admits
//!   them, ahead of the blocks that carry them.
//! * [`sync`] serves committed blocks to peers and fetches them for a node catching up.

pub mod api;
pub mod config;
pub mod consensus;
pub mod mempool;
pub mod network;
pub mod prechecked;
pub mod sync;
pub mod timings;
pub mod validator;
