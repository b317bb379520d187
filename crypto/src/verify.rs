//! Signature verification under ZIP-215 rules.
//!
//! ZIP-215 fixes every edge case that RFC 8032 leaves open (non-canonical point encodings,
//! small-order components, cofactored vs. cofactorless equation), and guarantees that batch
//! and single verification agree. That is what makes the verdict a consensus rule: every
//! ordo node, on any platform, accepts exactly the same set of signatures. The rules are
//! written out in `docs/format.md`.

use std::collections::HashMap;
use std::iter::once;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{OnceLock, PoisonError, RwLock};

use curve25519_dalek::constants::ED25519_BASEPOINT_POINT;
use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::{IsIdentity, VartimeMultiscalarMul};
use ed25519_zebra::VerificationKey;
use rand::Rng;
use sha2::{Digest, Sha512};

use crate::keys::{PublicKey, Signature};

/// A signature failed verification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The single signature checked is invalid.
    #[error("invalid signature")]
    Invalid,
    /// Item `index` (in queue order) of a batch is the first invalid signature.
    #[error("invalid signature at batch position {index}")]
    InvalidAt {
        /// Position in the order the items were queued.
        index: usize,
    },
}

fn zebra_signature(sig: &Signature) -> ed25519_zebra::Signature {
    ed25519_zebra::Signature::from_bytes(sig.as_bytes())
}

/// Verifies one signature under ZIP-215 rules.
///
/// # Errors
/// [`SignatureError::Invalid`] when the key bytes are not a point, `s` is not canonical, or
/// the cofactored verification equation does not hold.
pub fn verify(key: &PublicKey, msg: &[u8], sig: &Signature) -> Result<(), SignatureError> {
    let vk = VerificationKey::try_from(*key.as_bytes()).map_err(|_| SignatureError::Invalid)?;
    vk.verify(&zebra_signature(sig), msg)
        .map_err(|_| SignatureError::Invalid)
}

/// The most keys [`BatchVerifier`] keeps decoded: 32,768 keys and their points, about
/// 12 MiB at most.
pub const DECODED_KEYS_MAX: usize = 32_768;

/// Curve points of keys already decoded, so a batch decompresses only its signatures' `R`.
///
/// Decompressing a point costs about a quarter of a batch check per signature, and
/// ed25519-zebra's batch verifier decompresses every key in every batch. A node sees the
/// same client keys again and again (genesis permits a fixed set), so it decodes each once.
/// Decoding is a pure function of the bytes: this changes speed, never a verdict. Only keys
/// that decode are kept, at most `max`, and none is evicted (the senders that reach
/// verification are the genesis's permitted clients and validators, a fixed set); past
/// `max`, new keys are decoded in each batch.
struct DecodedKeys {
    points: RwLock<HashMap<[u8; 32], EdwardsPoint>>,
    max: usize,
}

impl DecodedKeys {
    fn new(max: usize) -> DecodedKeys {
        DecodedKeys {
            points: RwLock::default(),
            max,
        }
    }

    /// The one a process uses.
    fn shared() -> &'static DecodedKeys {
        static SHARED: OnceLock<DecodedKeys> = OnceLock::new();
        SHARED.get_or_init(|| DecodedKeys::new(DECODED_KEYS_MAX))
    }

    /// Each key as a point, decoding (and keeping, while there is room) those not seen
    /// before; `None` when one does not decode.
    fn points<'a>(
        &self,
        keys: impl ExactSizeIterator<Item = &'a [u8; 32]>,
    ) -> Option<Vec<EdwardsPoint>> {
        let mut points = Vec::with_capacity(keys.len());
        let mut missing = Vec::new();
        let full = {
            let known = self.points.read().unwrap_or_else(PoisonError::into_inner);
            for key in keys {
                match known.get(key) {
                    Some(point) => points.push(*point),
                    None => {
                        missing.push((points.len(), *key));
                        points.push(EdwardsPoint::default());
                    }
                }
            }
            known.len() >= self.max
        };
        if missing.is_empty() {
            return Some(points);
        }
        for (i, key) in &missing {
            points[*i] = CompressedEdwardsY(*key).decompress()?;
        }
        if full {
            return Some(points);
        }
        let mut known = self.points.write().unwrap_or_else(PoisonError::into_inner);
        for (i, key) in missing {
            if known.len() >= self.max {
                break;
            }
            known.insert(key, points[i]);
        }
        Some(points)
    }
}

/// One queued signature: key and signature bytes, where its message sits in
/// [`BatchVerifier::msgs`], and `k = H(R ‖ A ‖ M)` reduced mod ℓ.
struct Item {
    key: [u8; 32],
    sig: Signature,
    msg: std::ops::Range<usize>,
    k: Scalar,
}

/// Threads each new [`BatchVerifier`] may spread its batch equation over (see
/// [`BatchVerifier::spread`]): 1 until [`set_batch_threads`] says otherwise.
static BATCH_THREADS: AtomicUsize = AtomicUsize::new(1);

/// Lets every [`BatchVerifier`] created from now on in this process check its batch
/// equation on up to `threads` threads (at least 1). A validator sets this once at start,
/// from its configuration; other processes (audit, which already checks blocks on every
/// core, and the tools) keep one thread per batch.
pub fn set_batch_threads(threads: usize) {
    BATCH_THREADS.store(threads.max(1), Ordering::Relaxed);
}

/// The cores this process may run on (1 when the system does not say): what "every core"
/// means for `[verify] threads = 0`, and for the tools that spread work over cores.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

/// The threads each new [`BatchVerifier`] may use (see [`set_batch_threads`]).
pub fn batch_threads() -> usize {
    BATCH_THREADS.load(Ordering::Relaxed)
}

/// Collects signatures and verifies them together.
///
/// The batch equation is checked first (several times as fast per signature as one by
/// one); when it fails, each item is checked alone with [`verify`] to name the first bad
/// one. The batch equation is ZIP-215's, as ed25519-zebra checks it:
/// `[8](−(Σ zᵢsᵢ)B + Σ zᵢRᵢ + Σ (zᵢkᵢ)Aᵢ) = 0` with random 128-bit `zᵢ`, the points
/// decoded as ed25519-zebra decodes them (curve25519-dalek's decompression, which accepts
/// non-canonical encodings) and every `s` required canonical. It holds when every item
/// passes the single check, and fails otherwise but for a 2⁻¹²⁸ chance, so the verdict is
/// the same as verifying every item with [`verify`]. Keys are decoded once per process
/// ([`DECODED_KEYS_MAX`]), not once per batch.
pub struct BatchVerifier {
    items: Vec<Item>,
    /// Every queued message, end to end.
    msgs: Vec<u8>,
    /// At most how many threads check the batch equation (see [`BatchVerifier::spread`]).
    threads: usize,
}

impl Default for BatchVerifier {
    fn default() -> BatchVerifier {
        BatchVerifier::with_capacity(0)
    }
}

/// The fewest signatures [`BatchVerifier::spread`] gives one thread: below this, a part's
/// multiscalar multiplication loses more to its smaller size than the thread gains.
pub const SPREAD_PART_MIN: usize = 128;

impl BatchVerifier {
    /// An empty batch with room for `n` items.
    pub fn with_capacity(n: usize) -> BatchVerifier {
        BatchVerifier {
            items: Vec::with_capacity(n),
            msgs: Vec::with_capacity(n * 32),
            threads: batch_threads(),
        }
    }

    /// Lets the batch equation be checked in up to `threads` parts at once, each on its
    /// own thread and each at least [`SPREAD_PART_MIN`] signatures: the batch holds when
    /// every part does. Same verdict, sooner when cores are free, for a little more work
    /// in all (smaller multiscalar multiplications). With one thread the caller's thread
    /// checks the whole batch. A new batch starts with [`batch_threads`].
    #[must_use]
    pub fn spread(mut self, threads: usize) -> BatchVerifier {
        self.threads = threads.max(1);
        self
    }

    /// Adds a (key, message, signature) triple. The message is hashed now, and kept for
    /// the single check should the batch equation fail.
    pub fn queue(&mut self, key: &PublicKey, msg: &[u8], sig: &Signature) {
        let k = Sha512::new()
            .chain_update(&sig.as_bytes()[..32])
            .chain_update(key.as_bytes())
            .chain_update(msg)
            .finalize();
        let start = self.msgs.len();
        self.msgs.extend_from_slice(msg);
        self.items.push(Item {
            key: *key.as_bytes(),
            sig: *sig,
            msg: start..self.msgs.len(),
            k: Scalar::from_bytes_mod_order_wide(&k.into()),
        });
    }

    /// Number of queued items.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// True when nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Checks item `index` alone.
    fn single(&self, index: usize) -> Result<(), SignatureError> {
        let item = &self.items[index];
        verify(
            &PublicKey(item.key),
            &self.msgs[item.msg.clone()],
            &item.sig,
        )
    }

    /// Verifies every queued signature.
    ///
    /// # Errors
    /// [`SignatureError::InvalidAt`] naming the first invalid item in queue order.
    pub fn verify(self) -> Result<(), SignatureError> {
        // For one item the batch equation costs more than a single check.
        if self.items.len() > 1 && self.equation_holds() {
            return Ok(());
        }
        // ZIP-215 batch and single verification agree, so a failed batch has a bad item.
        // Should the random batch coefficients ever reject a valid batch (probability
        // ~2^-128), the per-item verdicts below still decide, and they accept.
        match (0..self.items.len()).find(|&i| self.single(i).is_err()) {
            Some(index) => Err(SignatureError::InvalidAt { index }),
            None => Ok(()),
        }
    }

    /// Whether every queued signature is valid, for a caller that keeps or drops the batch
    /// as a whole: when the batch equation fails, no item is checked alone to name the bad
    /// one (a forged batch costs one pass, not one per item). False also in the 2⁻¹²⁸
    /// chance that random coefficients fail a valid batch, so it suits only checks whose
    /// "no" is never a verdict on a transaction (a check ahead, which the block check
    /// repeats).
    pub fn holds(self) -> bool {
        match self.items.len() {
            0 => true,
            1 => self.single(0).is_ok(),
            _ => self.equation_holds(),
        }
    }

    /// Verifies every queued signature and names every invalid one, in queue order (none
    /// when all are valid). One batch check when all are valid; otherwise each is checked
    /// alone, so a batch with many forgeries costs one pass, not one pass per forgery.
    pub fn invalid(self) -> Vec<usize> {
        if self.items.len() > 1 && self.equation_holds() {
            return Vec::new();
        }
        (0..self.items.len())
            .filter(|&i| self.single(i).is_err())
            .collect()
    }

    /// In how many parts the batch equation is checked: as many as allowed, each of at
    /// least [`SPREAD_PART_MIN`] items.
    fn parts(&self) -> usize {
        self.threads.min(self.items.len() / SPREAD_PART_MIN).max(1)
    }

    /// The ZIP-215 batch equation over every queued item, in parts on several threads when
    /// [`BatchVerifier::spread`] allows; false when it fails or when a key, an `R` or an
    /// `s` does not decode.
    fn equation_holds(&self) -> bool {
        let parts = self.parts();
        if parts == 1 {
            return equation_holds(&self.items);
        }
        let part = self.items.len().div_ceil(parts);
        std::thread::scope(|scope| {
            // A part whose thread cannot be started is checked here, after the first.
            let (others, here): (Vec<_>, Vec<_>) = self.items[part..]
                .chunks(part)
                .map(|items| {
                    std::thread::Builder::new()
                        .spawn_scoped(scope, move || equation_holds(items))
                        .map_err(|_| items)
                })
                .partition(Result::is_ok);
            let holds = equation_holds(&self.items[..part])
                && here.into_iter().flat_map(Result::err).all(equation_holds);
            // A part whose thread panicked did not hold: the single checks then decide.
            others
                .into_iter()
                .flat_map(Result::ok)
                .fold(holds, |all, h| h.join().unwrap_or(false) && all)
        })
    }
}

/// The ZIP-215 batch equation over `items`; false when it fails or when a key, an `R` or
/// an `s` does not decode.
#[allow(non_snake_case)]
fn equation_holds(items: &[Item]) -> bool {
    let Some(keys) = DecodedKeys::shared().points(items.iter().map(|i| &i.key)) else {
        return false;
    };
    let mut rng = rand::rng();
    // Terms of the same key are merged, as in ed25519-zebra: one point per key.
    let mut slot: HashMap<[u8; 32], usize> = HashMap::with_capacity(keys.len());
    let mut A_coeffs: Vec<Scalar> = Vec::with_capacity(keys.len());
    let mut As: Vec<EdwardsPoint> = Vec::with_capacity(keys.len());
    let mut R_coeffs = Vec::with_capacity(items.len());
    let mut Rs = Vec::with_capacity(items.len());
    let mut B_coeff = Scalar::ZERO;
    for (item, A) in items.iter().zip(keys) {
        let sig = item.sig.as_bytes();
        let r: [u8; 32] = sig[..32].try_into().expect("32 bytes");
        let s: [u8; 32] = sig[32..].try_into().expect("32 bytes");
        let Some(R) = CompressedEdwardsY(r).decompress() else {
            return false;
        };
        let Some(s) = Option::<Scalar>::from(Scalar::from_canonical_bytes(s)) else {
            return false;
        };
        let z = Scalar::from(u128::from(rng.next_u64()) << 64 | u128::from(rng.next_u64()));
        B_coeff -= z * s;
        Rs.push(R);
        R_coeffs.push(z);
        let at = *slot.entry(item.key).or_insert_with(|| {
            As.push(A);
            A_coeffs.push(Scalar::ZERO);
            As.len() - 1
        });
        A_coeffs[at] += z * item.k;
    }
    EdwardsPoint::vartime_multiscalar_mul(
        once(&B_coeff).chain(&A_coeffs).chain(&R_coeffs),
        once(&ED25519_BASEPOINT_POINT).chain(&As).chain(&Rs),
    )
    .mul_by_cofactor()
    .is_identity()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Keypair;

    fn signed(n: usize) -> Vec<(PublicKey, Vec<u8>, Signature)> {
        (0..n)
            .map(|i| {
                let k = Keypair::from_label(&format!("k{}", i % 7));
                let msg = format!("message {i}").into_bytes();
                let sig = k.sign(&msg);
                (k.public(), msg, sig)
            })
            .collect()
    }

    fn batch_of(items: &[(PublicKey, Vec<u8>, Signature)]) -> BatchVerifier {
        let mut b = BatchVerifier::with_capacity(items.len());
        for (k, m, s) in items {
            b.queue(k, m, s);
        }
        b
    }

    #[test]
    fn valid_batch_passes() {
        let items = signed(64);
        assert_eq!(batch_of(&items).verify(), Ok(()));
        for (k, m, s) in &items {
            assert_eq!(verify(k, m, s), Ok(()));
        }
    }

    #[test]
    fn batch_names_first_bad_signature() {
        let mut items = signed(50);
        items[17].2.0[5] ^= 1;
        items[30].1.push(0);
        assert_eq!(
            batch_of(&items).verify(),
            Err(SignatureError::InvalidAt { index: 17 })
        );
    }

    #[test]
    fn invalid_names_every_bad_signature() {
        let mut items = signed(50);
        assert!(batch_of(&items).invalid().is_empty());
        items[3].2.0[1] ^= 1;
        items[17].2.0[5] ^= 1;
        items[49].1.push(0);
        assert_eq!(batch_of(&items).invalid(), vec![3, 17, 49]);
        assert_eq!(batch_of(&items[3..4]).invalid(), vec![0]);
        assert!(BatchVerifier::default().invalid().is_empty());
    }

    #[test]
    fn a_spread_batch_gives_the_same_verdicts() {
        let n = 3 * SPREAD_PART_MIN + 5;
        let mut items = signed(n);
        assert_eq!(batch_of(&items).spread(4).verify(), Ok(()));
        assert!(batch_of(&items).spread(4).invalid().is_empty());
        // A forgery in the last part, and one in the first: both named, as unspread.
        items[n - 1].2.0[7] ^= 1;
        items[2].1.push(0);
        for threads in [1, 2, 3, 8] {
            assert_eq!(batch_of(&items).spread(threads).invalid(), vec![2, n - 1]);
            assert_eq!(
                batch_of(&items).spread(threads).verify(),
                Err(SignatureError::InvalidAt { index: 2 })
            );
        }
    }

    #[test]
    fn holds_agrees_with_verify_without_naming() {
        let mut items = signed(20);
        assert!(batch_of(&items).holds());
        assert!(batch_of(&items[..1]).holds());
        assert!(BatchVerifier::default().holds());
        items[11].2.0[2] ^= 1;
        assert!(!batch_of(&items).holds());
        assert!(!batch_of(&items[11..12]).holds());
        assert!(!batch_of(&items).spread(2).holds());
    }

    #[test]
    fn parts_are_never_smaller_than_the_minimum() {
        let b = batch_of(&signed(2 * SPREAD_PART_MIN - 1)).spread(8);
        assert_eq!(b.parts(), 1);
        let b = batch_of(&signed(2 * SPREAD_PART_MIN)).spread(8);
        assert_eq!(b.parts(), 2);
        assert_eq!(BatchVerifier::default().spread(0).parts(), 1);
    }

    #[test]
    fn wrong_key_fails() {
        let items = signed(1);
        let other = Keypair::from_label("other").public();
        assert_eq!(
            verify(&other, &items[0].1, &items[0].2),
            Err(SignatureError::Invalid)
        );
    }

    #[test]
    fn batch_of_one_agrees_with_single() {
        let mut items = signed(1);
        assert_eq!(batch_of(&items).verify(), Ok(()));
        items[0].2.0[63] ^= 1;
        assert_eq!(
            batch_of(&items).verify(),
            Err(SignatureError::InvalidAt { index: 0 })
        );
        assert_eq!(
            verify(&items[0].0, &items[0].1, &items[0].2),
            Err(SignatureError::Invalid)
        );
    }

    #[test]
    fn empty_batch_is_ok() {
        assert_eq!(BatchVerifier::default().verify(), Ok(()));
    }

    #[test]
    fn a_key_that_is_not_a_point_fails_only_its_item() {
        let mut items = signed(5);
        // y = 2 is not the y coordinate of any point on the curve.
        let mut bytes = [0u8; 32];
        bytes[0] = 2;
        assert!(CompressedEdwardsY(bytes).decompress().is_none());
        items[2].0 = PublicKey(bytes);
        assert_eq!(batch_of(&items).invalid(), vec![2]);
        assert_eq!(
            batch_of(&items).verify(),
            Err(SignatureError::InvalidAt { index: 2 })
        );
    }

    #[test]
    fn decoded_keys_stay_bounded_and_decode_as_dalek_does() {
        let cache = DecodedKeys::new(2);
        let keys: Vec<[u8; 32]> = (0..4)
            .map(|i| *Keypair::from_label(&format!("d{i}")).public().as_bytes())
            .collect();
        let points = cache.points(keys.iter()).expect("all decode");
        for (key, point) in keys.iter().zip(&points) {
            assert_eq!(Some(*point), CompressedEdwardsY(*key).decompress());
        }
        assert_eq!(cache.points.read().expect("lock").len(), 2);
        // Known and unknown keys together, twice: the same points, no growth past max.
        for _ in 0..2 {
            assert_eq!(
                cache.points(keys.iter().rev()),
                Some(points.iter().rev().copied().collect())
            );
        }
        assert_eq!(cache.points.read().expect("lock").len(), 2);
        let mut bad = keys.clone();
        bad[1] = [0u8; 32];
        bad[1][0] = 2;
        assert_eq!(cache.points(bad.iter()), None);
    }

    proptest::proptest! {
        /// Whatever is corrupted, the batch names exactly the items the single check
        /// rejects.
        #[test]
        fn batch_verdicts_are_the_single_verdicts(
            n in 2usize..24,
            flips in proptest::collection::vec((0usize..24, 0usize..3, 0usize..64, 0u8..8), 0..4),
        ) {
            let mut items = signed(n);
            for (at, part, byte, bit) in flips {
                let item = &mut items[at % n];
                match part {
                    0 => item.0.0[byte % 32] ^= 1 << bit,
                    1 => item.2.0[byte] ^= 1 << bit,
                    _ => item.1.push(byte as u8),
                }
            }
            let single: Vec<usize> = items
                .iter()
                .enumerate()
                .filter(|(_, (k, m, s))| verify(k, m, s).is_err())
                .map(|(i, _)| i)
                .collect();
            proptest::prop_assert_eq!(batch_of(&items).invalid(), single.clone());
            let first = single.first().map(|&index| SignatureError::InvalidAt { index });
            proptest::prop_assert_eq!(batch_of(&items).verify().err(), first);
        }
    }
}
