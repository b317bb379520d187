//! The Rust client of an ordo validator's HTTP API (`docs/api.md`).
//!
//! * [`Client`]: every route, typed ([`ordo_api`]'s types, re-exported as [`api`]): submit
//!   one transaction or many (JSON or binary), wait for commits, read a transaction's
//!   status and check its inclusion proof, fetch its receipt, read blocks, follow the block streams (which
//!   resume by themselves after a dropped connection), read the node's status. `https://`
//!   URLs work (rustls; the system's roots, or a CA given to [`ClientBuilder`]).
//! * [`RetryPolicy`]: the one way this client retries: while the node answers 503 or
//!   cannot be reached, it waits as the node asks (`Retry-After`), else backs off with
//!   jitter, for a bounded total time. Resubmitting a signed transaction is always safe.
//! * [`verify_receipt`]: checks a receipt offline, with the chain's genesis alone.
//! * [`TxTemplate`] and [`Signer`]: build and sign transactions for the chain a node
//!   serves (chain id and expiry window read once).
//!
//! ```no_run
//! # async fn run() -> Result<(), ordo_client::ClientError> {
//! use ordo_client::{Client, Signer, SubmitOptions};
//!
//! let client = Client::new("http://127.0.0.1:8080")?;
//! let signer = Signer::from_key_file("alice.key".as_ref(), &client).await?;
//! let tx = signer.sign(b"hello".to_vec());
//! let result = client.submit(&tx, &SubmitOptions::wait()).await?;
//! println!("{:?} committed at {:?}", result.id, result.committed_at());
//! # Ok(()) }
//! ```

mod client;
mod error;
mod retry;
mod signer;
mod sse;
mod streams;

pub use ordo_api as api;

pub use client::{Client, ClientBuilder, SubmitOptions, Wire};
pub use error::{ClientError, Result};
pub use retry::RetryPolicy;
pub use signer::{Signer, TxTemplate};
pub use sse::{SseDecoder, SseEvent};

/// Checks a receipt's bytes offline against a chain's rules (from its genesis:
/// `ordo_genesis::Genesis::policy`): the transaction, its inclusion in the block, and the
/// block's certificate by a majority of the validators. No node is asked.
///
/// # Errors
/// [`ordo_ledger::ReceiptError`] naming the first check that fails.
pub fn verify_receipt(
    bytes: &[u8],
    policy: &ordo_ledger::Policy,
) -> std::result::Result<ordo_ledger::receipt::Verified, ordo_ledger::ReceiptError> {
    ordo_ledger::Receipt::from_bytes(bytes)?.verify(policy)
}
