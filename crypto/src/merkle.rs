//! Binary Merkle trees over transaction ids, as specified by RFC 6962 §2.1.
//!
//! * leaf hash `= SHA-256(0x00 || leaf)`, inner node `= SHA-256(0x01 || left || right)`;
//!   the distinct prefixes stop a proof from presenting an inner node as a leaf.
//! * a tree of `n > 1` leaves splits at the largest power of two below `n`; equivalently,
//!   pair nodes level by level and carry an unpaired last node up unchanged.
//! * the root of zero leaves is `SHA-256("")`.
//!
//! Proofs are RFC 6962 audit paths, verified with the algorithm of RFC 9162 §2.1.3.2.

use borsh::{BorshDeserialize, BorshSerialize};
use serde::{Deserialize, Serialize};

use crate::Hash;

const LEAF_PREFIX: u8 = 0x00;
const NODE_PREFIX: u8 = 0x01;

/// Hash of one leaf.
pub fn leaf_hash(leaf: &Hash) -> Hash {
    Hash::sha256(&[&[LEAF_PREFIX], leaf.as_bytes()])
}

fn node_hash(left: &Hash, right: &Hash) -> Hash {
    Hash::sha256(&[&[NODE_PREFIX], left.as_bytes(), right.as_bytes()])
}

/// Replaces `level` with the next level up, in place.
fn reduce_level(level: &mut Vec<Hash>) {
    let n = level.len();
    for i in 0..n / 2 {
        level[i] = node_hash(&level[2 * i], &level[2 * i + 1]);
    }
    if n % 2 == 1 {
        level[n / 2] = level[n - 1];
    }
    level.truncate(n.div_ceil(2));
}

/// The Merkle root of `leaves`.
pub fn root(leaves: &[Hash]) -> Hash {
    if leaves.is_empty() {
        return Hash::sha256(&[]);
    }
    let mut level: Vec<Hash> = leaves.iter().map(leaf_hash).collect();
    while level.len() > 1 {
        reduce_level(&mut level);
    }
    level[0]
}

/// An inclusion proof: the sibling hashes from the leaf up to the root.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, BorshSerialize, BorshDeserialize)]
pub struct Proof {
    /// Position of the leaf, from 0.
    pub leaf_index: u64,
    /// Number of leaves in the tree.
    pub tree_size: u64,
    /// Audit path, deepest sibling first.
    pub path: Vec<Hash>,
}

/// The inclusion proof for `leaves[index]`, or `None` if `index` is out of range.
pub fn prove(leaves: &[Hash], index: usize) -> Option<Proof> {
    if index >= leaves.len() {
        return None;
    }
    let mut level: Vec<Hash> = leaves.iter().map(leaf_hash).collect();
    let mut idx = index;
    let mut path = Vec::new();
    while level.len() > 1 {
        let sibling = idx ^ 1;
        if sibling < level.len() {
            path.push(level[sibling]);
        }
        idx /= 2;
        reduce_level(&mut level);
    }
    Some(Proof {
        leaf_index: index as u64,
        tree_size: leaves.len() as u64,
        path,
    })
}

impl Proof {
    /// True when this proof shows that `leaf` is in the tree with root `root`.
    pub fn verify(&self, leaf: &Hash, root: &Hash) -> bool {
        if self.leaf_index >= self.tree_size {
            return false;
        }
        let (mut fnode, mut snode) = (self.leaf_index, self.tree_size - 1);
        let mut r = leaf_hash(leaf);
        for p in &self.path {
            if snode == 0 {
                return false;
            }
            if fnode & 1 == 1 || fnode == snode {
                r = node_hash(p, &r);
                if fnode & 1 == 0 {
                    while fnode & 1 == 0 && fnode != 0 {
                        fnode >>= 1;
                        snode >>= 1;
                    }
                }
            } else {
                r = node_hash(&r, p);
            }
            fnode >>= 1;
            snode >>= 1;
        }
        snode == 0 && r == *root
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Domain;
    use proptest::prelude::*;

    fn leaves(n: usize) -> Vec<Hash> {
        (0..n)
            .map(|i| Hash::digest(Domain::Transaction, &(i as u64).to_le_bytes()))
            .collect()
    }

    /// RFC 6962's recursive definition, as a reference for the iterative one.
    fn reference_root(d: &[Hash]) -> Hash {
        match d.len() {
            0 => Hash::sha256(&[]),
            1 => leaf_hash(&d[0]),
            n => {
                // Largest power of two strictly below n.
                let k = 1usize << (usize::BITS - 1 - (n - 1).leading_zeros());
                node_hash(&reference_root(&d[..k]), &reference_root(&d[k..]))
            }
        }
    }

    #[test]
    fn iterative_root_matches_rfc_definition() {
        for n in 0..70 {
            assert_eq!(root(&leaves(n)), reference_root(&leaves(n)), "n = {n}");
        }
    }

    #[test]
    fn out_of_range_index_has_no_proof() {
        assert!(prove(&leaves(3), 3).is_none());
        assert!(prove(&[], 0).is_none());
    }

    #[test]
    fn inner_node_cannot_pose_as_leaf() {
        let l = leaves(4);
        let r = root(&l);
        // The left inner node of a 4-leaf tree, presented as a leaf of a 2-leaf tree.
        let inner = node_hash(&leaf_hash(&l[0]), &leaf_hash(&l[1]));
        let right = node_hash(&leaf_hash(&l[2]), &leaf_hash(&l[3]));
        let forged = Proof {
            leaf_index: 0,
            tree_size: 2,
            path: vec![right],
        };
        assert!(!forged.verify(&inner, &r));
    }

    proptest! {
        #[test]
        fn every_leaf_proof_verifies(n in 1usize..200, pick in any::<prop::sample::Index>()) {
            let l = leaves(n);
            let r = root(&l);
            let i = pick.index(n);
            let proof = prove(&l, i).expect("index in range");
            prop_assert!(proof.verify(&l[i], &r));
            // Proof for one leaf does not prove another.
            if n > 1 {
                prop_assert!(!proof.verify(&l[(i + 1) % n], &r));
            }
        }

        #[test]
        fn any_flipped_byte_fails(
            n in 2usize..100,
            pick in any::<prop::sample::Index>(),
            flip in any::<prop::sample::Index>(),
            bit in 0u8..8,
        ) {
            let l = leaves(n);
            let r = root(&l);
            let i = pick.index(n);
            let proof = prove(&l, i).expect("index in range");
            // Flip one bit somewhere in (leaf, root, path).
            let total = 32 + 32 + 32 * proof.path.len();
            let at = flip.index(total);
            let (mut leaf, mut root_h, mut p) = (l[i], r, proof.clone());
            match at {
                0..32 => leaf.0[at] ^= 1 << bit,
                32..64 => root_h.0[at - 32] ^= 1 << bit,
                _ => p.path[(at - 64) / 32].0[(at - 64) % 32] ^= 1 << bit,
            }
            prop_assert!(!p.verify(&leaf, &root_h));
        }

        #[test]
        fn wrong_index_fails(n in 2usize..100, pick in any::<prop::sample::Index>()) {
            let l = leaves(n);
            let r = root(&l);
            let i = pick.index(n);
            let proof = prove(&l, i).expect("index in range");
            let moved = Proof { leaf_index: (proof.leaf_index + 1) % n as u64, ..proof.clone() };
            prop_assert!(!moved.verify(&l[i], &r));
        }
    }
}
