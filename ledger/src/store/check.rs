//! Checking what the store holds, and rewriting what a check found damaged.
//!
//! Every read verifies RocksDB's checksums, so bits flipped on disk come back as an error,
//! never as other bytes. These checks go further: a stored block must be the chain's —
//! valid against its parent as a follower would check it ([`verify_block`]), hashing to
//! what the block above it (or the tip record) links to, and found through its index
//! entries. What they report is a [`Damage`]; the node repairs a damaged block from its
//! peers ([`Store::repair_block`]) and rebuilds damaged indexes from the blocks
//! ([`Store::rebuild_indexes`]).

use ordo_crypto::Hash;
use rocksdb::WriteBatch;
use serde::Serialize;

use super::{
    CF_BLOCK_HASHES, CF_BLOCKS, CF_TX_INDEX, Result, Store, StoreError, height_key,
    tx_location_value,
};
use crate::policy::Policy;
use crate::types::{Block, Certificate, ChainTip, TxId};
use crate::verify::{verify_block, verify_block_with};

/// Something stored that is not what the chain holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Damage {
    /// The block at `height` cannot be read, or is not the chain's block there.
    Block {
        /// Its height.
        height: u64,
        /// What is wrong.
        what: String,
    },
    /// The index entries of the block at `height` (its hash, its transactions) are
    /// missing, unreadable or wrong.
    Index {
        /// The block's height.
        height: u64,
        /// What is wrong.
        what: String,
    },
}

impl Damage {
    /// The height of the block concerned.
    pub fn height(&self) -> u64 {
        match self {
            Damage::Block { height, .. } | Damage::Index { height, .. } => *height,
        }
    }
}

impl std::fmt::Display for Damage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Damage::Block { height, what } => write!(f, "block {height}: {what}"),
            Damage::Index { height, what } => write!(f, "index of block {height}: {what}"),
        }
    }
}

/// A block read for a check: the block, or why it could not be read (and whether a
/// checksum failed).
type Read = std::result::Result<Block, (String, bool)>;

/// Whether `e` is a failed checksum (a damaged table file).
fn table_damage(e: &StoreError) -> bool {
    matches!(e, StoreError::Db { source, .. } if source.kind() == rocksdb::ErrorKind::Corruption)
}

/// How deep a check goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckDepth {
    /// Every rule a follower checks, every signature included.
    Full,
    /// Every rule but the transactions' signatures (the proposer's is checked): what a
    /// background scrub can afford. Each transaction's bytes are still covered by its id,
    /// the ids by the header's Merkle root, the header by the hash the block above links to.
    Hashes,
}

/// What a check found.
#[derive(Debug, Default)]
pub struct Checked {
    /// What is damaged, lowest height first; empty when all is well.
    pub damage: Vec<Damage>,
    /// Whether a read failed RocksDB's checksum: a table file is damaged, which only a
    /// salvage removes ([`Store::request_salvage`]); rewriting its records repairs reads.
    pub table_damage: bool,
    /// Bytes of the blocks read.
    pub bytes: u64,
}

impl Store {
    fn read_for_check(&self, height: u64) -> Read {
        match self.block(height) {
            Ok(Some(block)) => Ok(block),
            Ok(None) => Err(("missing".into(), false)),
            Err(e) => Err((e.to_string(), table_damage(&e))),
        }
    }

    /// Checks the blocks from `from` to `to` (inclusive, within the tip): each against
    /// its parent and `policy` as deep as `depth` says, against the hash the block above it
    /// links to (the tip record for the tip), and against its index entries.
    pub fn check_range(&self, from: u64, to: u64, policy: &Policy, depth: CheckDepth) -> Checked {
        let tip = self.tip();
        let (from, to) = (from.max(1), to.min(tip.height));
        let mut checked = Checked::default();
        if from > to {
            return checked;
        }
        let damage = &mut checked.damage;
        // The parent of `from`, and the block above `to` (whose link names `to`'s hash).
        let mut parent: Option<ChainTip> = if from == 1 {
            Some(policy.genesis_tip())
        } else {
            self.read_for_check(from - 1).ok().map(|b| b.tip())
        };
        let mut next: Option<Read> = Some(self.read_for_check(from));
        for height in from..=to {
            let read = next.take().unwrap_or_else(|| self.read_for_check(height));
            let above_link = if height == tip.height {
                Some(tip.hash)
            } else {
                let above = self.read_for_check(height + 1);
                let link = above.as_ref().ok().map(|b| b.header.prev_hash);
                if height < to {
                    next = Some(above);
                }
                link
            };
            parent = match read {
                Ok(block) => {
                    checked.bytes += block.encoded_len();
                    match self.check_block(&block, parent.as_ref(), above_link, policy, depth) {
                        Ok(()) => Some(block.tip()),
                        Err((d, table)) => {
                            checked.table_damage |= table;
                            // A block that is not the chain's is no parent to check by.
                            let next = matches!(d, Damage::Index { .. }).then(|| block.tip());
                            damage.push(d);
                            next
                        }
                    }
                }
                Err((what, table)) => {
                    damage.push(Damage::Block { height, what });
                    checked.table_damage |= table;
                    None
                }
            };
        }
        checked
    }

    /// Checks the last `n` blocks, up to the tip, in full.
    pub fn check_recent(&self, n: u64, policy: &Policy) -> Checked {
        let tip = self.tip().height;
        let from = tip.saturating_sub(n.saturating_sub(1)).max(1);
        self.check_range(from, tip, policy, CheckDepth::Full)
    }

    /// Checks one decoded block: against `parent` when it is known, against the hash the
    /// block above links to when known, then its index entries.
    fn check_block(
        &self,
        block: &Block,
        parent: Option<&ChainTip>,
        above_link: Option<Hash>,
        policy: &Policy,
        depth: CheckDepth,
    ) -> std::result::Result<(), (Damage, bool)> {
        let height = block.header.height;
        let bad = |what: String| (Damage::Block { height, what }, false);
        let hash = block.hash();
        if let Some(link) = above_link
            && link != hash
        {
            return Err(bad(format!(
                "hashes to {hash}, but the chain above links to {link}"
            )));
        }
        let verified = |parent| match depth {
            CheckDepth::Full => verify_block(parent, block, policy),
            CheckDepth::Hashes => verify_block_with(parent, block, policy, |_, _| true),
        };
        let ids = match parent {
            Some(parent) => verified(parent).map_err(|e| bad(e.to_string()))?,
            // The block below is damaged itself: its repair re-checks this link.
            None => block.tx_ids(),
        };
        self.check_index(height, &hash, &ids, &block.certificates)
    }

    /// Checks the index entries of the block at `height`: its hash, its transactions'
    /// locations, and the certificates it carries.
    fn check_index(
        &self,
        height: u64,
        hash: &Hash,
        ids: &[TxId],
        certificates: &[Certificate],
    ) -> std::result::Result<(), (Damage, bool)> {
        let bad = |what: String| (Damage::Index { height, what }, false);
        match self.height_of(hash) {
            Ok(Some(h)) if h == height => {}
            Ok(Some(h)) => return Err(bad(format!("its hash indexes height {h}"))),
            Ok(None) => return Err(bad("its hash is not indexed".into())),
            Err(e) => {
                return Err((
                    Damage::Index {
                        height,
                        what: e.to_string(),
                    },
                    table_damage(&e),
                ));
            }
        }
        let cf = self.cf(CF_TX_INDEX);
        let found = self
            .db
            .multi_get_cf(ids.iter().map(|id| (cf, id.as_bytes())));
        for (i, (id, res)) in ids.iter().zip(found).enumerate() {
            let location = res
                .map_err(|e| {
                    let e = self.db_err(e);
                    (
                        Damage::Index {
                            height,
                            what: e.to_string(),
                        },
                        table_damage(&e),
                    )
                })?
                .map(|v| self.decode_location(&v))
                .transpose()
                .map_err(|e| bad(e.to_string()))?;
            if location != Some((height, i as u32)) {
                return Err(bad(format!(
                    "transaction {id} (position {i}) indexes {location:?}"
                )));
            }
        }
        for cert in certificates {
            match self.certificate(cert.height) {
                Ok(Some(stored)) if stored == *cert => {}
                Ok(stored) => {
                    return Err(bad(format!(
                        "the certificate of block {} it carries is indexed as {}",
                        cert.height,
                        stored.map_or_else(
                            || "missing".to_owned(),
                            |c| format!("one of {}", c.block_hash)
                        )
                    )));
                }
                Err(e) => {
                    let table = table_damage(&e);
                    return Err((
                        Damage::Index {
                            height,
                            what: e.to_string(),
                        },
                        table,
                    ));
                }
            }
        }
        Ok(())
    }

    /// Rewrites the block at its height with its index entries, synced: the repair of a
    /// damaged block. The caller has verified `block` as the chain's block at that height
    /// (against its parent, and against the hash the block above links to); `ids` are its
    /// transaction ids. The tip does not move.
    ///
    /// # Errors
    /// [`StoreError::NotNext`] when the height is above the tip, [`StoreError::ReadOnly`],
    /// or [`StoreError::Db`].
    pub fn repair_block(&self, block: &Block, ids: &[TxId]) -> Result<()> {
        assert_eq!(ids.len(), block.txs.len(), "one id per transaction");
        if self.read_only {
            return Err(StoreError::ReadOnly);
        }
        // Held so that no append runs meanwhile.
        let tip = self.tip.lock().expect("tip lock poisoned");
        let height = block.header.height;
        if height == 0 || height > tip.height {
            return Err(StoreError::NotNext {
                height,
                prev_hash: block.header.prev_hash,
                tip: *tip,
            });
        }
        let mut batch = WriteBatch::default();
        self.put_block(&mut batch, block, ids);
        self.write_synced(batch)
    }

    /// The records of `block`: its bytes, its hash's entry, its transactions' entries, the
    /// certificates it carries.
    pub(super) fn put_block(&self, batch: &mut WriteBatch, block: &Block, ids: &[TxId]) {
        let height = block.header.height;
        batch.put_cf(self.cf(CF_BLOCKS), height_key(height), block.to_bytes());
        batch.put_cf(
            self.cf(CF_BLOCK_HASHES),
            block.hash().as_bytes(),
            height_key(height),
        );
        let tx_cf = self.cf(CF_TX_INDEX);
        for (i, id) in ids.iter().enumerate() {
            // verify_block bounds the count far below u32::MAX.
            batch.put_cf(tx_cf, id.as_bytes(), tx_location_value(height, i as u32));
        }
        self.put_certificates(batch, block);
    }
}
