//! The internal wire, pinned: the bytes of every message a validator sends another or keeps
//! on disk, variant by variant. bincode writes an enum variant as its position and a
//! struct's fields in order, so reordering variants or fields changes these bytes and these
//! tests fail. A change here is a new `PROTOCOL_VERSION` (for what crosses the network) or
//! a new ledger `FORMAT_VERSION` (for what is on disk), never a silent edit.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::sync::Arc;

use openraft::impls::leader_id_adv::LeaderId;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderError,
    TransferLeaderRequest, VoteRequest, VoteResponse,
};
use openraft::storage::SnapshotMeta;
use openraft::type_config::alias::{EntryOf, LogIdOf, StoredMembershipOf};
use openraft::{Entry, EntryPayload, LogId, Membership, StoredMembership, Vote};
use ordo_crypto::{Hash, Keypair, PublicKey};
use ordo_ledger::{ChainTip, Transaction, TxError, build_block};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::*;

/// The bytes `value` encodes to, as hex.
fn bytes_of<T: Serialize>(value: &T) -> String {
    hex::encode(encode_internal(value).expect("encodes"))
}

/// Asserts that `value` encodes to `hex` and that `hex` decodes back to `value`.
fn pin<T: Serialize + DeserializeOwned + PartialEq + Debug>(value: &T, hex: &str) {
    assert_eq!(bytes_of(value), hex, "the bytes of {value:?}");
    let back: T = decode_internal(&hex::decode(hex).expect("hex"), "pinned").expect("decodes");
    assert_eq!(&back, value);
}

/// Asserts that each value of `cases` encodes to its hex, naming every one that does not.
fn pin_all<T: Serialize + Debug>(cases: &[(T, String)]) {
    let wrong: Vec<String> = cases
        .iter()
        .filter(|(v, hex)| bytes_of(v) != *hex)
        .map(|(v, hex)| format!("{v:?}\n  is   {}\n  pin  {hex}", bytes_of(v)))
        .collect();
    assert!(
        wrong.is_empty(),
        "wire bytes changed:\n{}",
        wrong.join("\n")
    );
}

fn log_id(term: u64, index: u64) -> LogIdOf<TypeConfig> {
    LogId::new(LeaderId { term, node_id: 7 }, index)
}

/// Membership of node 7 (key `[5; 32]`) from log id (1, 7, 1). A key travels as its hex
/// text: 64 ASCII digits, `3035…` for `[5; 32]`.
fn membership() -> StoredMembershipOf<TypeConfig> {
    let node = ValidatorNode {
        public_key: PublicKey([5; 32]),
    };
    let nodes: BTreeMap<u64, ValidatorNode> = [(7, node)].into_iter().collect();
    let m = Membership::new(vec![BTreeSet::from([7])], nodes).expect("a membership");
    StoredMembership::new(Some(log_id(1, 1)), m)
}

/// A small block with one transaction, the same bytes every time (keys from labels,
/// deterministic signatures).
fn block() -> ordo_ledger::Block {
    let (v, c) = (Keypair::from_label("v"), Keypair::from_label("c"));
    let tx = Transaction {
        chain_id: "w".into(),
        sender: c.public(),
        nonce: 1,
        expires_at: 2,
        payload: vec![9],
    }
    .sign(&c);
    build_block(
        &ChainTip::genesis(Hash([1; 32])),
        "w",
        vec![],
        vec![tx],
        &v,
        3,
        4,
    )
}

/// A block's bytes inside an internal message: their length (bincode's varint), then the
/// canonical bytes `docs/format.md` pins.
fn block_field(block: &ordo_ledger::Block) -> String {
    let bytes = block.to_bytes();
    let len = encode_internal(&(bytes.len() as u64)).expect("a length");
    hex::encode([len, bytes].concat())
}

#[test]
fn frame_kinds_are_their_bytes() {
    for (kind, byte) in [
        (Kind::Raft, 1),
        (Kind::Transactions, 2),
        (Kind::Blocks, 3),
        (Kind::Announce, 4),
        (Kind::Attest, 5),
        (Kind::Clock, 6),
        (Kind::Error, 255),
    ] {
        assert_eq!(kind as u8, byte);
        assert_eq!(Kind::from_byte(byte), Some(kind));
    }
    assert_eq!(Kind::from_byte(0), None);
    assert_eq!(Kind::from_byte(7), None);
}

#[test]
fn forwarded_and_announced_transactions_are_a_list_of_byte_strings() {
    // Count 2; then each: its length, its bytes.
    pin(
        &vec![TxBytes(vec![1, 2, 3]), TxBytes(Vec::new())],
        "020301020300",
    );
}

#[test]
fn every_forward_verdict_has_its_bytes() {
    let key = PublicKey([5; 32]);
    let key_hex = "3035".repeat(32);
    let cases = [
        (Verdict::Accepted, "00".to_owned()),
        (Verdict::AlreadyPending, "01".to_owned()),
        // 300 as a varint: 0xfb, then two little-endian bytes.
        (
            Verdict::AlreadyCommitted { height: 300 },
            "02fb2c01".to_owned(),
        ),
        (Verdict::Busy, "03".to_owned()),
        (Verdict::Refused("no".into()), "04026e6f".to_owned()),
        (Verdict::NotLeader, "05".to_owned()),
        (
            Verdict::Invalid(TxError::TooLarge {
                bytes: 70_000,
                max: 65_536,
            }),
            "0600fc70110100fc00000100".to_owned(),
        ),
        (
            Verdict::Invalid(TxError::WrongChain {
                expected: "a".into(),
                found: "b".into(),
            }),
            "060101610162".to_owned(),
        ),
        // A key travels as its hex text (64 characters).
        (
            Verdict::Invalid(TxError::UnknownSender(key)),
            format!("060240{key_hex}"),
        ),
        (
            Verdict::Invalid(TxError::Expired {
                expires_at: 5,
                height: 9,
            }),
            "06030509".to_owned(),
        ),
        (
            Verdict::Invalid(TxError::ExpiryTooFar {
                expires_at: 20,
                height: 1,
                lifetime: 10,
            }),
            "060414010a".to_owned(),
        ),
        (
            Verdict::Invalid(TxError::Duplicate { first: 2 }),
            "060502".to_owned(),
        ),
        (Verdict::Invalid(TxError::BadSignature), "0606".to_owned()),
    ];
    for (verdict, hex) in cases {
        pin(&verdict, &hex);
    }
}

#[test]
fn a_clock_reading_is_its_milliseconds() {
    // 2023-11-14T22:13:20Z: bincode's varint, 0xfd then eight little-endian bytes.
    pin(
        &ClockReading {
            unix_ms: 1_700_000_000_000,
        },
        "fd0068e5cf8b010000",
    );
    pin(&ClockReading { unix_ms: 250 }, "fa");
}

#[test]
fn block_fetches_have_their_bytes() {
    let request = BlocksRequest { from: 10, max: 256 };
    assert_eq!(bytes_of(&request), "0afb0001");
    let back: BlocksRequest =
        decode_internal(&hex::decode("0afb0001").expect("hex"), "blocks").expect("decodes");
    assert_eq!((back.from, back.max), (10, 256));
    // The answer: a count, then each block as its canonical bytes.
    let b = block();
    let answer = vec![BlockEntry::new(Arc::new(b.clone()))];
    assert_eq!(bytes_of(&answer), format!("01{}", block_field(&b)));
}

#[test]
fn every_raft_request_has_its_bytes() {
    let b = block();
    let append = RaftRequest::Append(AppendEntriesRequest {
        vote: Vote::new_committed(2, 7),
        prev_log_id: Some(log_id(2, 5)),
        entries: vec![Entry {
            log_id: log_id(2, 6),
            payload: EntryPayload::Normal(BlockEntry::new(Arc::new(b.clone()))),
        }],
        leader_commit: Some(log_id(2, 4)),
    });
    let cases = [
        (
            append,
            format!("00020701010207050102070601{}01020704", block_field(&b)),
        ),
        (
            RaftRequest::Vote(VoteRequest::new(Vote::new(3, 7), Some(log_id(2, 6)))),
            "010307000102070600".to_owned(),
        ),
        (
            RaftRequest::PreVote(VoteRequest::new(Vote::new(3, 7), None)),
            "020307000000".to_owned(),
        ),
        (
            RaftRequest::Snapshot {
                vote: Vote::new_committed(2, 7),
                meta: SnapshotMeta {
                    last_log_id: Some(log_id(2, 6)),
                    last_membership: membership(),
                },
                data: vec![0xaa, 0xbb],
            },
            format!(
                "030207010102070601010701010107010740{}0002aabb",
                "3035".repeat(32)
            ),
        ),
        (
            RaftRequest::TransferLeader(TransferLeaderRequest::new(
                Vote::new_committed(2, 7),
                9,
                Some(log_id(2, 6)),
            )),
            "040207010901020706".to_owned(),
        ),
    ];
    pin_all(&cases);
}

#[test]
fn every_raft_response_has_its_bytes() {
    let cases = [
        (RaftResponse::Append(AppendEntriesResponse::Success), "0000"),
        (
            RaftResponse::Append(AppendEntriesResponse::PartialSuccess(Some(log_id(2, 6)))),
            "000101020706",
        ),
        (
            RaftResponse::Append(AppendEntriesResponse::Conflict),
            "0002",
        ),
        (
            RaftResponse::Append(AppendEntriesResponse::HigherVote(Vote::new(4, 8))),
            "0003040800",
        ),
        (
            RaftResponse::Vote(VoteResponse::new(Vote::new(3, 7), Some(log_id(2, 6)), true)),
            "010307000101020706",
        ),
        (
            RaftResponse::Snapshot(SnapshotResponse::new(Vote::new_committed(2, 7))),
            "02020701",
        ),
        (RaftResponse::Refused("no".into()), "03026e6f"),
        (RaftResponse::TransferLeader(Ok(())), "0400"),
        (
            RaftResponse::TransferLeader(Err(TransferLeaderError::LogNotFlushed {
                expected: Some(log_id(2, 6)),
                actual: None,
            })),
            "0401010102070600",
        ),
    ];
    pin_all(&cases.map(|(r, hex)| (r, hex.to_owned())));
}

#[test]
fn every_kind_of_raft_log_entry_has_its_bytes_on_disk() {
    let b = block();
    let blank: EntryOf<TypeConfig> = Entry {
        log_id: log_id(2, 6),
        payload: EntryPayload::Blank,
    };
    let normal: EntryOf<TypeConfig> = Entry {
        log_id: log_id(2, 7),
        payload: EntryPayload::Normal(BlockEntry::new(Arc::new(b.clone()))),
    };
    let member: EntryOf<TypeConfig> = Entry {
        log_id: log_id(2, 8),
        payload: EntryPayload::Membership(membership().membership().clone()),
    };
    pin_all(&[
        (blank, "02070600".to_owned()),
        (normal, format!("02070701{}", block_field(&b))),
        (member, format!("02070802010107010740{}", "3035".repeat(32))),
    ]);
}

#[test]
fn the_raft_state_on_disk_has_its_bytes() {
    // `raft_state`: vote, committed, last_purged, applied, snapshot.
    let vote: openraft::type_config::alias::VoteOf<TypeConfig> = Vote::new_committed(2, 7);
    pin_all(&[(vote, "020701".to_owned())]);
    pin_all(&[(Some(log_id(2, 6)), "01020706".to_owned())]);
    pin_all(&[(log_id(1, 3), "010703".to_owned())]);
    let applied = Applied {
        last_applied: Some(log_id(2, 6)),
        membership: membership(),
    };
    pin_all(&[(
        applied,
        format!("0102070601010701010107010740{}", "3035".repeat(32)),
    )]);
    let snapshot = StoredSnapshot {
        meta: SnapshotMeta {
            last_log_id: Some(log_id(2, 6)),
            last_membership: membership(),
        },
        tip: ChainTip {
            height: 9,
            hash: Hash([3; 32]),
            timestamp_ms: 1_000,
            certified: 8,
        },
    };
    pin_all(&[(
        snapshot,
        [
            // The snapshot's metadata: last log id, membership, an empty snapshot id.
            format!("0102070601010701010107010740{}00", "3035".repeat(32)),
            // The tip: height 9, its hash as 64 hex digits, 1,000 ms (a three-byte varint),
            // certified up to 8.
            format!("0940{}fbe80308", "3033".repeat(32)),
        ]
        .concat(),
    )]);
}

#[test]
fn a_frame_is_its_kind_its_length_and_its_body() {
    let frame = Frame {
        kind: Kind::Blocks,
        body: vec![7, 8, 9],
    };
    assert_eq!(hex::encode(frame.encode()), "0303000000070809");
    assert_eq!(Frame::decode(&frame.encode()).expect("decodes"), frame);
}

#[test]
fn a_bad_frame_is_refused_with_its_fault() {
    let refused = |bytes: &[u8]| Frame::decode(bytes).expect_err("refused").to_string();
    assert!(refused(&[3, 0, 0]).contains("no head"));
    assert!(refused(&[9, 0, 0, 0, 0]).contains("unknown frame kind 9"));
    assert!(refused(&[3, 2, 0, 0, 0, 1]).contains("says 2 bytes, 1 follow"));
    assert!(refused(&[3, 0, 0, 0, 0, 1]).contains("says 0 bytes, 1 follow"));
    let over = (FRAME_BYTES_MAX as u32 + 1).to_le_bytes();
    assert!(refused(&[3, over[0], over[1], over[2], over[3]]).contains("exceeds"));
}
