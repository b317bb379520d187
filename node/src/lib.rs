//! The ordo validator node.
//!
//! Its public face is small: [`validator::Validator`] runs one from a
//! [`ordo_config::NodeConfig`] and reports a [`error::Fatal`] when its consensus stops;
//! [`network`] is public for tests that play a peer. Everything else is the node's inside,
//! one module per flow:
//!
//! * [`validator`] wires the parts and owns the tasks; [`shared`] is the state they share.
//! * [`http`] is the client API (JSON over HTTP, `docs/api.md`), answering with `ordo_api`'s
//!   types.
//! * [`gate`] is the door a submission passes; [`admission`] its way into the mempool;
//!   [`forward`] takes it from a follower to the leader and the verdict back; [`waiters`]
//!   are the clients waiting for commits.
//! * [`proposer`] cuts and proposes blocks (a pure [`proposer::core`] driven by a task);
//!   [`applied`] follows the ledger tip; [`resend`] re-sends what a leader change stranded;
//!   [`attest`] signs attestations of applied blocks, sends them and takes them from peers;
//!   [`certify`] holds them and makes the leader's certificates.
//! * [`inbound`] dispatches requests from other validators; [`precheck`] checks
//!   signatures ahead of their blocks; [`sync`] serves and fetches committed blocks.
//! * [`consensus`] wraps openraft (log and state machine on RocksDB, RPCs over
//!   [`network`]); [`mempool`] holds pending transactions; [`wire`] encodes what
//!   validators send each other and keep on disk; [`timings`] are the stage histograms;
//!   [`tasks`] spawns work in the span of the validator (and peer) it is for; [`id_hash`]
//!   hashes transaction ids for maps.

pub(crate) mod admission;
pub(crate) mod applied;
pub(crate) mod attest;
pub(crate) mod certify;
pub(crate) mod clock;
pub(crate) mod consensus;
pub mod error;
#[cfg(feature = "fault-injection")]
pub mod faults;
pub(crate) mod forward;
pub(crate) mod gate;
pub(crate) mod heal;
pub(crate) mod http;
pub(crate) mod id_hash;
pub(crate) mod inbound;
pub(crate) mod mempool;
pub mod network;
pub(crate) mod precheck;
pub(crate) mod proposer;
pub(crate) mod resend;
pub(crate) mod shared;
pub(crate) mod sync;
pub(crate) mod tasks;
pub(crate) mod timings;
pub mod validator;
pub(crate) mod waiters;
