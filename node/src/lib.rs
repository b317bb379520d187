//! The ordo validator node.
//!
//! A node will run consensus (`consensus`), talk to its peers (`network`), hold pending
//! transactions (`mempool`) and serve clients (`api`), on top of the ledger and genesis
//! crates. It is intentionally empty until those parts land: the chain formats, store and
//! audit they build on live in `ordo-ledger` and `ordo-genesis`.
