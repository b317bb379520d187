//! Submits one transaction to a validator, waits for its commit, checks its inclusion
//! proof against the block's header, and prints where it is.
//!
//! ```sh
//! cargo run --release -p ordo-client --example submit -- http://127.0.0.1:8080 alice.key [payload]
//! ```

use std::path::PathBuf;

use ordo_client::api::TxStatus;
use ordo_client::{Client, Signer, SubmitOptions};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(url), Some(key)) = (args.next(), args.next()) else {
        eprintln!("usage: submit <node URL> <client key file> [payload]");
        std::process::exit(2);
    };
    let payload = args
        .next()
        .unwrap_or_else(|| "hello from ordo-client".into());

    let client = Client::new(&url)?;
    // Reads the chain id and the expiry window from the node once.
    let signer = Signer::from_key_file(&PathBuf::from(key), &client).await?;
    let tx = signer.sign(payload.into_bytes());
    println!("submitting {}", tx.id());

    // Retries by itself while the cluster answers 503 (no leader, busy).
    let result = client.submit(&tx, &SubmitOptions::wait()).await?;
    let Some(at) = result.committed_at() else {
        println!("accepted, not committed within the wait; ask again later");
        return Ok(());
    };
    println!(
        "committed at height {} index {} in block {}",
        at.height, at.index, at.block_hash
    );

    // Checks the node's answer instead of trusting it: id, signature, Merkle proof, header.
    if let TxStatus::Committed(c) = client.tx_status_checked(&tx.id()).await? {
        println!(
            "proof of {} siblings verifies against the block's header",
            c.proof.path.len()
        );
    }
    Ok(())
}
