//! Writes every fuzz target's seed corpus: `seeds <format.md> <corpus dir>` fills
//! `<corpus dir>/<target>/` with inputs built from the test vectors of `docs/format.md` (its
//! signed transactions and block) and from the encoders of the real types, so that each
//! target starts from inputs a validator actually meets.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use openraft::impls::leader_id_adv::LeaderId;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::storage::SnapshotMeta;
use openraft::type_config::alias::{EntryOf, LogIdOf, StoredMembershipOf};
use openraft::{Entry, EntryPayload, LogId, Membership, StoredMembership, Vote};
use ordo_api::stream::encode_frame;
use ordo_api::submit::binary_body;
use ordo_crypto::{Keypair, PublicKey};
use ordo_ledger::{Block, TxError};
use ordo_wire::{
    Applied, BlockEntry, BlocksRequest, Frame, Kind, RaftRequest, RaftResponse, StoredSnapshot,
    TxBytes, TypeConfig, ValidatorNode, Verdict, encode_internal, encode_snapshot_data,
};

/// The seeds of one target.
type Seeds = Vec<Vec<u8>>;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, format, out] = &args[..] else {
        eprintln!("usage: seeds <docs/format.md> <corpus dir>");
        std::process::exit(2);
    };
    let text = std::fs::read_to_string(format).unwrap_or_else(|e| fail(format, &e));
    let txs: Vec<Vec<u8>> = vector_values(&text, "signed");
    let blocks: Vec<Vec<u8>> = vector_values(&text, "block");
    if txs.is_empty() || blocks.is_empty() {
        fail(format, &"no transaction or block vectors");
    }
    let block = Block::from_bytes(&blocks[0], u64::MAX).expect("the block vector decodes");
    let mut corpus: BTreeMap<&str, Seeds> = BTreeMap::new();
    corpus.insert("tx", txs.clone());
    corpus.insert("receipt", vector_values(&text, "receipt"));
    corpus.insert("block", blocks.clone());
    corpus.insert("forward", forward_seeds(&txs));
    corpus.insert("blocks", block_seeds(&block));
    corpus.insert("raft", raft_seeds(&block));
    corpus.insert("raft_state", state_seeds(&block));
    corpus.insert("snapshot", snapshot_seeds(&block));
    corpus.insert("frame", frame_seeds(&corpus));
    corpus.insert(
        "submission",
        vec![binary_body(txs.iter().map(Vec::as_slice))],
    );
    corpus.insert("block_stream", stream_seeds(&block));
    corpus.insert("genesis", vec![genesis_seed().into_bytes()]);
    corpus.insert("node_toml", vec![node_toml_seed().into_bytes()]);
    corpus.insert("key_file", vec![key_file_seed().into_bytes()]);
    for (target, seeds) in corpus {
        let dir = Path::new(out).join(target);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| fail(&dir.display(), &e));
        for (i, seed) in seeds.iter().enumerate() {
            let path: PathBuf = dir.join(format!("seed-{i}"));
            std::fs::write(&path, seed).unwrap_or_else(|e| fail(&path.display(), &e));
        }
        println!("{target}: {} seeds", seeds.len());
    }
}

fn fail(what: &dyn std::fmt::Display, e: &dyn std::fmt::Display) -> ! {
    eprintln!("seeds: {what}: {e}");
    std::process::exit(1);
}

/// The hex values of `key = …` lines in the ```vector blocks of `text`.
fn vector_values(text: &str, key: &str) -> Vec<Vec<u8>> {
    let prefix = format!("{key} = ");
    text.lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .filter_map(|hex| hex::decode(hex.trim()).ok())
        .collect()
}

fn internal<T: serde::Serialize>(value: &T) -> Vec<u8> {
    encode_internal(value).expect("encodes")
}

fn tagged(tag: u8, bytes: Vec<u8>) -> Vec<u8> {
    [vec![tag], bytes].concat()
}

fn forward_seeds(txs: &[Vec<u8>]) -> Seeds {
    let raw: Vec<TxBytes> = txs.iter().cloned().map(TxBytes).collect();
    let verdicts = vec![
        Verdict::Accepted,
        Verdict::AlreadyPending,
        Verdict::AlreadyCommitted { height: 300 },
        Verdict::Busy,
        Verdict::Refused("no".into()),
        Verdict::NotLeader,
        Verdict::Invalid(TxError::UnknownSender(PublicKey([5; 32]))),
        Verdict::Invalid(TxError::Expired {
            expires_at: 5,
            height: 9,
        }),
    ];
    vec![internal(&raw), internal(&verdicts)]
}

fn block_seeds(block: &Block) -> Seeds {
    let answer = vec![BlockEntry::new(Arc::new(block.clone()))];
    vec![
        internal(&BlocksRequest { from: 10, max: 256 }),
        internal(&answer),
    ]
}

fn log_id(term: u64, index: u64) -> LogIdOf<TypeConfig> {
    LogId::new(LeaderId { term, node_id: 7 }, index)
}

fn membership() -> StoredMembershipOf<TypeConfig> {
    let node = ValidatorNode {
        public_key: Keypair::from_secret(&[2; 32]).public(),
    };
    let nodes: BTreeMap<u64, ValidatorNode> = [(7, node)].into_iter().collect();
    let m = Membership::new(vec![BTreeSet::from([7])], nodes).expect("a membership");
    StoredMembership::new(Some(log_id(1, 1)), m)
}

fn raft_seeds(block: &Block) -> Seeds {
    let append = RaftRequest::Append(AppendEntriesRequest {
        vote: Vote::new_committed(2, 7),
        prev_log_id: Some(log_id(2, 5)),
        entries: vec![Entry {
            log_id: log_id(2, 6),
            payload: EntryPayload::Normal(BlockEntry::new(Arc::new(block.clone()))),
        }],
        leader_commit: Some(log_id(2, 4)),
    });
    let snapshot = RaftRequest::Snapshot {
        vote: Vote::new_committed(2, 7),
        meta: SnapshotMeta {
            last_log_id: Some(log_id(2, 6)),
            last_membership: membership(),
        },
        data: encode_snapshot_data(&ordo_fuzz::tip_of(block)),
    };
    let requests = [
        append,
        RaftRequest::Vote(VoteRequest::new(Vote::new(3, 7), Some(log_id(2, 6)))),
        RaftRequest::PreVote(VoteRequest::new(Vote::new(3, 7), None)),
        snapshot,
    ];
    let responses = [
        RaftResponse::Append(AppendEntriesResponse::Success),
        RaftResponse::Append(AppendEntriesResponse::PartialSuccess(Some(log_id(2, 6)))),
        RaftResponse::Append(AppendEntriesResponse::Conflict),
        RaftResponse::Append(AppendEntriesResponse::HigherVote(Vote::new(4, 8))),
        RaftResponse::Vote(VoteResponse::new(Vote::new(3, 7), Some(log_id(2, 6)), true)),
        RaftResponse::Snapshot(SnapshotResponse::new(Vote::new_committed(2, 7))),
        RaftResponse::Refused("no".into()),
    ];
    let requests = requests.iter().map(|r| tagged(0, internal(r)));
    requests
        .chain(responses.iter().map(|r| tagged(1, internal(r))))
        .collect()
}

fn state_seeds(block: &Block) -> Seeds {
    let entries: [EntryOf<TypeConfig>; 3] = [
        Entry {
            log_id: log_id(2, 6),
            payload: EntryPayload::Blank,
        },
        Entry {
            log_id: log_id(2, 7),
            payload: EntryPayload::Normal(BlockEntry::new(Arc::new(block.clone()))),
        },
        Entry {
            log_id: log_id(2, 8),
            payload: EntryPayload::Membership(membership().membership().clone()),
        },
    ];
    let applied = Applied {
        last_applied: Some(log_id(2, 6)),
        membership: membership(),
    };
    let mut seeds: Seeds = entries.iter().map(|e| tagged(0, internal(e))).collect();
    let vote: openraft::type_config::alias::VoteOf<TypeConfig> = Vote::new_committed(2, 7);
    seeds.push(tagged(1, internal(&vote)));
    seeds.push(tagged(2, internal(&Some(log_id(2, 6)))));
    seeds.push(tagged(3, internal(&applied)));
    seeds
}

fn snapshot_seeds(block: &Block) -> Seeds {
    let tip = ordo_fuzz::tip_of(block);
    let stored = StoredSnapshot {
        meta: SnapshotMeta {
            last_log_id: Some(log_id(2, 6)),
            last_membership: membership(),
        },
        tip,
    };
    vec![
        tagged(0, encode_snapshot_data(&tip)),
        tagged(1, internal(&stored)),
    ]
}

/// Frames of every kind around the bodies the other targets start from.
fn frame_seeds(corpus: &BTreeMap<&str, Seeds>) -> Seeds {
    let untagged = |target: &str| -> Seeds {
        corpus[target]
            .iter()
            .map(|s| s.get(1..).unwrap_or_default().to_vec())
            .collect()
    };
    let bodies = [
        (Kind::Raft, untagged("raft")),
        (Kind::Transactions, corpus["forward"].clone()),
        (Kind::Blocks, corpus["blocks"].clone()),
        (Kind::Announce, corpus["forward"][..1].to_vec()),
        (Kind::Attest, attest_seeds(&text_attestations())),
        (Kind::Error, vec![b"not the leader".to_vec()]),
    ];
    bodies
        .into_iter()
        .flat_map(|(kind, bodies)| {
            bodies
                .into_iter()
                .map(move |body| Frame { kind, body }.encode())
        })
        .collect()
}

fn stream_seeds(block: &Block) -> Seeds {
    let ids = block.tx_ids();
    let hash = block.hash();
    let two = [
        encode_frame(block.header.height, &hash, &ids),
        encode_frame(block.header.height + 1, &hash, &[]),
    ]
    .concat();
    vec![tagged(7, two.clone()), tagged(1, two)]
}

fn genesis_seed() -> String {
    let mut g = ordo_genesis::Genesis::new("ordo-vectors");
    g.validators.push(ordo_genesis::Validator {
        name: "v1".into(),
        public_key: Keypair::from_secret(&[2; 32]).public(),
        addresses: vec!["/ip4/127.0.0.1/tcp/7000".into()],
    });
    g.clients.push(ordo_genesis::Client {
        name: "c1".into(),
        public_key: Keypair::from_secret(&[1; 32]).public(),
    });
    g.to_toml()
}

fn node_toml_seed() -> String {
    ordo_config::NodeConfig::new("genesis.toml".into(), "validator.key".into(), "data".into())
        .to_toml()
}

fn key_file_seed() -> String {
    let key = Keypair::from_secret(&[2; 32]);
    format!(
        "public_key = \"{}\"\nsecret_key = \"{}\"\n",
        key.public(),
        hex::encode(key.secret_bytes())
    )
}

/// An attestation like the vector's, and an answer naming a height to send again.
fn text_attestations() -> Vec<ordo_ledger::Attestation> {
    let key = ordo_crypto::Keypair::from_secret(&[3; 32]);
    vec![ordo_ledger::Attestation::sign(
        "ordo-vectors",
        2,
        ordo_crypto::Hash([2; 32]),
        &key,
    )]
}

fn attest_seeds(batch: &[ordo_ledger::Attestation]) -> Seeds {
    vec![
        internal(&batch.to_vec()),
        internal(&ordo_wire::AttestReply { later: vec![2, 3] }),
    ]
}
