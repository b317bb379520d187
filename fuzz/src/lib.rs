//! The checks behind ordo's fuzz targets: one function per decoder of bytes that reach a
//! validator, a client or an auditor from outside (`fuzz_targets/<name>.rs` calls
//! `ordo_fuzz::<name>`).
//!
//! Each decodes the input with the code ordo runs, never a copy of it, and asserts what
//! must hold of any input: no panic, and where the encoding is canonical (borsh, what is
//! hashed or signed), that what decodes encodes back to the same bytes. bincode, for
//! internal messages, is not canonical (a varint may be written longer than it needs), so
//! internal messages are only decoded. Inputs that decode go on to the next stage a node
//! would run (verification, the body a frame's kind names), so the fuzzer reaches it too.
//!
//! The `seeds` example writes each target's seed corpus from the test vectors of
//! `docs/format.md` and the encoders of the real types (it is built without the
//! instrumentation, which only links into a fuzz target).

use std::collections::HashSet;
use std::path::Path;
use std::sync::LazyLock;

use openraft::type_config::alias::{EntryOf, LogIdOf, VoteOf};
use ordo_api::stream::StreamDecoder;
use ordo_api::submit::{BinaryFrames, binary_body};
use ordo_crypto::{Hash, Keypair};
use ordo_ledger::{
    Attestation, BLOCK_BYTES_LIMIT, Block, ChainTip, Limits, Policy, Receipt, SignedTransaction,
    TX_BYTES_LIMIT, verify_attestation, verify_block, verify_transaction,
};
use ordo_wire::{
    Applied, AttestReply, BlockEntry, BlocksRequest, ClockReading, Frame, Kind, RaftRequest,
    RaftResponse, StoredSnapshot, TxBytes, TypeConfig, Verdict, decode_internal,
    decode_snapshot_data,
};

/// The chain of `docs/format.md`'s vectors: its validator (seed `02…`) may propose, its
/// client (seed `01…`) may send, so that a fuzzed block or transaction close to a vector
/// reaches signature verification.
pub fn vector_policy() -> &'static Policy {
    static POLICY: LazyLock<Policy> = LazyLock::new(|| Policy {
        chain_id: "ordo-vectors".into(),
        genesis_hash: Hash([0; 32]),
        validators: ordo_ledger::ValidatorSet::from([Keypair::from_secret(&[2; 32]).public()]),
        clients: HashSet::from([Keypair::from_secret(&[1; 32]).public()]),
        limits: Limits::default(),
        certify_lag: ordo_ledger::CERTIFY_LAG_DEFAULT,
    });
    &POLICY
}

/// A signed transaction (submissions, forwards, announcements, blocks): decoded with the
/// protocol's size limit; what decodes is canonical and is verified as at admission.
pub fn tx(data: &[u8]) {
    let Ok(tx) = SignedTransaction::from_bytes(data, TX_BYTES_LIMIT) else {
        return;
    };
    assert_eq!(
        tx.to_bytes(),
        data,
        "a decoded transaction re-encodes to its bytes"
    );
    let _ = verify_transaction(&tx, vector_policy(), 1);
}

/// A block (Raft appends, catch-up, the ledger on disk, audits): decoded with the block
/// limit; what decodes is canonical and is verified against the vectors' genesis.
pub fn block(data: &[u8]) {
    let Ok(block) = Block::from_bytes(data, BLOCK_BYTES_LIMIT) else {
        return;
    };
    assert_eq!(
        block.to_bytes(),
        data,
        "a decoded block re-encodes to its bytes"
    );
    let policy = vector_policy();
    let _ = verify_block(&policy.genesis_tip(), &block, policy);
}

/// A node-to-node frame, then its body as the kind names it, requests and answers alike.
pub fn frame(data: &[u8]) {
    let Ok(frame) = Frame::decode(data) else {
        return;
    };
    assert_eq!(
        frame.encode(),
        data,
        "a decoded frame re-encodes to its bytes"
    );
    let body = &frame.body[..];
    match frame.kind {
        Kind::Raft => {
            let _ = decode_internal::<RaftRequest>(body, "raft request");
            let _ = decode_internal::<RaftResponse>(body, "raft response");
        }
        Kind::Transactions => forward(body),
        Kind::Blocks => blocks(body),
        Kind::Announce => announced(body),
        Kind::Attest => attestations(body),
        Kind::Clock => {
            let _ = decode_internal::<ClockReading>(body, "clock reading");
        }
        Kind::Error => {
            let _ = String::from_utf8_lossy(body);
        }
    }
}

/// Attestations a validator sends, and the answer (`Kind::Attest`).
fn attestations(data: &[u8]) {
    if let Ok(batch) = decode_internal::<Vec<Attestation>>(data, "attestations") {
        for a in &batch {
            let _ = verify_attestation(a, &vector_policy().chain_id);
        }
    }
    let _ = decode_internal::<AttestReply>(data, "attestation reply");
}

/// A receipt, as `ordo receipt verify` and `ordo_client::verify_receipt` read one from
/// anyone: decoded, re-encoded to the same bytes, verified against the vectors' chain.
pub fn receipt(data: &[u8]) {
    let Ok(receipt) = Receipt::from_bytes(data) else {
        return;
    };
    assert_eq!(
        receipt.to_bytes(),
        data,
        "a decoded receipt re-encodes to its bytes"
    );
    let _ = receipt.verify(vector_policy());
}

/// A Raft RPC and its answer (`Kind::Raft`); the first byte chooses which.
pub fn raft(data: &[u8]) {
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    if which & 1 == 0 {
        if let Ok(RaftRequest::Snapshot { data, .. }) = decode_internal(body, "raft request") {
            let _ = decode_snapshot_data(&data);
        }
    } else {
        let _ = decode_internal::<RaftResponse>(body, "raft response");
    }
}

/// Forwarded transactions and the leader's verdicts (`Kind::Transactions`).
pub fn forward(data: &[u8]) {
    announced(data);
    let _ = decode_internal::<Vec<Verdict>>(data, "verdicts");
}

/// Transactions inside a forward or an announcement: a list of byte strings, each then
/// decoded as a transaction.
fn announced(data: &[u8]) {
    if let Ok(txs) = decode_internal::<Vec<TxBytes>>(data, "transactions") {
        for TxBytes(bytes) in txs {
            let _ = SignedTransaction::from_bytes(&bytes, TX_BYTES_LIMIT);
        }
    }
}

/// A block fetch and its answer (`Kind::Blocks`).
pub fn blocks(data: &[u8]) {
    let _ = decode_internal::<BlocksRequest>(data, "block request");
    let _ = decode_internal::<Vec<BlockEntry>>(data, "blocks");
}

/// The Raft state a validator reads back from its disk (`raft_log`, `raft_state`); the
/// first byte chooses the record.
pub fn raft_state(data: &[u8]) {
    let Some((&which, v)) = data.split_first() else {
        return;
    };
    match which % 4 {
        0 => {
            let _ = decode_internal::<EntryOf<TypeConfig>>(v, "raft log entry");
        }
        1 => {
            let _ = decode_internal::<VoteOf<TypeConfig>>(v, "vote");
        }
        2 => {
            let _ = decode_internal::<Option<LogIdOf<TypeConfig>>>(v, "log id");
        }
        _ => {
            let _ = decode_internal::<Applied>(v, "applied state");
        }
    }
}

/// A snapshot: its content as it travels, and as the state machine stores it; the first
/// byte chooses which.
pub fn snapshot(data: &[u8]) {
    let Some((&which, v)) = data.split_first() else {
        return;
    };
    if which & 1 == 0 {
        if let Ok(tip) = decode_snapshot_data(v) {
            assert_eq!(ordo_wire::encode_snapshot_data(&tip), v, "canonical tip");
        }
    } else {
        let _ = decode_internal::<StoredSnapshot>(v, "stored snapshot");
    }
}

/// A binary submission body (`POST /v1/transactions?encoding=binary`): split into frames,
/// each decoded as a transaction; a body that splits is rebuilt from its frames.
pub fn submission(data: &[u8]) {
    let frames: Result<Vec<&[u8]>, _> = BinaryFrames::new(data).collect();
    let Ok(frames) = frames else {
        return;
    };
    for f in &frames {
        let _ = SignedTransaction::from_bytes(f, TX_BYTES_LIMIT);
    }
    assert_eq!(
        binary_body(frames.iter().copied()),
        data,
        "frames rebuild the body"
    );
}

/// The binary block stream a client reads: fed whole, and fed in chunks of the size the
/// first byte names, the decoder finds the same frames.
pub fn block_stream(data: &[u8]) {
    let Some((&chunk, stream)) = data.split_first() else {
        return;
    };
    let mut whole = StreamDecoder::default();
    let at_once = whole.feed(stream);
    let mut pieces = StreamDecoder::default();
    let mut in_chunks = Vec::new();
    for part in stream.chunks(usize::from(chunk).max(1)) {
        match pieces.feed(part) {
            Ok(frames) => in_chunks.extend(frames),
            Err(e) => {
                assert_eq!(at_once.as_ref().err(), Some(&e), "the same fault");
                return;
            }
        }
    }
    let at_once = at_once.expect("a stream that decodes in chunks decodes whole");
    assert_eq!(
        at_once, in_chunks,
        "the same frames, however the bytes arrive"
    );
    assert_eq!(whole.buffered(), pieces.buffered());
}

/// A genesis file: parsed, then validated, hashed and turned into a policy when valid.
pub fn genesis(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(genesis) = ordo_genesis::Genesis::parse(text) else {
        return;
    };
    if genesis.validate().is_ok() {
        let _ = (genesis.hash(), genesis.policy(), genesis.to_toml());
    }
}

/// A validator's `node.toml`: parsed, checked, its paths resolved.
pub fn node_toml(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = ordo_config::NodeConfig::parse(text, Path::new("/etc/ordo/node.toml"));
    }
}

/// A key file.
pub fn key_file(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = ordo_crypto::parse_key_file(text, Path::new("validator.key"));
    }
}

/// A chain tip as the ledger keeps it (`meta/tip`), for seeds.
pub fn tip_of(block: &Block) -> ChainTip {
    ChainTip {
        height: block.header.height,
        hash: block.hash(),
        timestamp_ms: block.header.timestamp_ms,
        certified: block.header.certified,
    }
}
