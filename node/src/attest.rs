//! Attestations: signing them, keeping them, sending them to the leader, taking them from
//! peers (`docs/design/certificates.md`).
//!
//! Every validator signs an attestation of each block it applies ([`attest`]), keeps it
//! in the ledger's `attestations` column family until a block certifies that height, and
//! sends it to the leader (`Kind::Attest`), again to each new leader until certified.
//! Every node takes the attestations it is sent ([`serve_attestations`]): each is verified
//! and, once this node has applied that height, compared with its own block there — an
//! attestation of another block is kept as evidence against its signer. What is gathered
//! lives in `crate::certify::Collected`, which the leader's proposer asks for the
//! certificates its next block must carry.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use ordo_crypto::{BatchVerifier, Keypair, PublicKey};
use ordo_ledger::Attestation;
use ordo_wire::{ATTESTATIONS_PER_FRAME_MAX, AttestReply, decode_internal, encode_internal};

use crate::certify::Added;
use crate::consensus::StatusWatch;
use crate::network::{Frame, InboundRequest, Kind};
use crate::shared::Shared;

/// How soon attestations the leader did not take are sent again.
const RESEND_AFTER: Duration = Duration::from_millis(100);
/// Longest the task sleeps without looking at the tip and the leader again.
const POLL: Duration = Duration::from_millis(500);

/// This node's attestations not yet certified, and which of them the leader has.
struct Mine {
    /// By height.
    all: BTreeMap<u64, Attestation>,
    /// Heights the current leader has not taken yet.
    unsent: BTreeMap<u64, ()>,
    /// The leader they were sent to.
    leader: Option<PublicKey>,
}

impl Mine {
    fn forget_certified(&mut self, certified: u64) {
        self.all = self.all.split_off(&(certified + 1));
        self.unsent = self.unsent.split_off(&(certified + 1));
    }
}

/// Signs an attestation of every block this node applies (those within `certify_lag` of
/// the tip: older ones are certified already), keeps it, and sends it to the leader until
/// a block certifies it; sends them all again to each new leader. Until the node stops.
pub(crate) async fn attest(shared: Arc<Shared>, key: Keypair) {
    let me = key.public();
    let mut mine = Mine {
        all: BTreeMap::new(),
        unsent: BTreeMap::new(),
        leader: None,
    };
    match shared.store().attestations() {
        Ok(kept) => {
            for a in kept.into_iter().filter(|a| a.signer == me) {
                mine.all.insert(a.height, a);
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot read the attestations kept"),
    }
    let mut attested = mine.all.keys().next_back().copied().unwrap_or(0);
    let mut tip_watch = shared.tip_watch();
    let mut status = StatusWatch::new(shared.raft());
    loop {
        let tip = shared.tip();
        let lag = shared.policy().certify_lag;
        let from = attested
            .max(tip.height.saturating_sub(lag))
            .max(tip.certified)
            + 1;
        let signed = sign_applied(&shared, &key, from, tip.height);
        attested = attested.max(signed.last().map_or(0, |a| a.height));
        if !signed.is_empty() {
            // `take` keeps them in the store with whatever else it takes.
            for a in &signed {
                mine.all.insert(a.height, *a);
                mine.unsent.insert(a.height, ());
            }
            take(&shared, signed);
        }
        settle(&shared);
        mine.forget_certified(tip.certified);
        let leader = shared.leader_key();
        if leader != mine.leader {
            mine.leader = leader;
            mine.unsent = mine.all.keys().map(|h| (*h, ())).collect();
        }
        let retry = match leader {
            Some(l) if l != me && !mine.unsent.is_empty() => !send(&shared, l, &mut mine).await,
            _ => false,
        };
        let wait = if retry || !mine.unsent.is_empty() && leader != Some(me) {
            RESEND_AFTER
        } else {
            POLL
        };
        tokio::select! {
            r = tip_watch.changed() => if r.is_err() { return },
            r = status.changed() => if !r { return },
            () = tokio::time::sleep(wait) => {}
            () = shared.stopped() => return,
        }
    }
}

/// Signs this node's attestations of the applied blocks at heights `from..=to`.
fn sign_applied(shared: &Shared, key: &Keypair, from: u64, to: u64) -> Vec<Attestation> {
    let chain_id = &shared.policy().chain_id;
    let mut out = Vec::new();
    for height in from..=to {
        match shared.applied_block(height) {
            Ok(Some(b)) => out.push(Attestation::sign(chain_id, height, b.hash, key)),
            Ok(None) => break,
            Err(e) => {
                tracing::warn!(height, error = %e, "cannot read an applied block to attest it");
                break;
            }
        }
    }
    out
}

/// Hands verified attestations to the collection; keeps what it says to keep and the
/// evidence, and wakes the proposer when a height reached a majority. Returns the heights
/// to be sent again later.
fn take(shared: &Shared, attestations: Vec<Attestation>) -> Vec<u64> {
    match shared.attestations().add(attestations) {
        Ok(added) => record(shared, added),
        Err(e) => {
            tracing::warn!(error = %e, "cannot take attestations");
            Vec::new()
        }
    }
}

/// Moves early attestations of blocks now applied.
fn settle(shared: &Shared) {
    match shared.attestations().settle() {
        Ok(added) => {
            record(shared, added);
        }
        Err(e) => tracing::warn!(error = %e, "cannot settle attestations"),
    }
}

fn record(shared: &Shared, added: Added) -> Vec<u64> {
    if !added.keep.is_empty()
        && let Err(e) = shared.store().put_attestations(&added.keep)
    {
        tracing::warn!(error = %e, "cannot keep attestations");
    }
    for a in &added.evidence {
        let name = shared
            .genesis()
            .validator(&a.signer)
            .map_or_else(|| a.signer.to_string(), |v| v.name.clone());
        tracing::error!(
            signer = %name,
            height = a.height,
            signed = %a.block_hash,
            "a validator attested a block that is not this chain's at that height; kept as evidence"
        );
        match shared.store().put_evidence(a) {
            Ok(true) => {}
            Ok(false) => tracing::warn!("the evidence store is full; this evidence is not kept"),
            Err(e) => tracing::warn!(error = %e, "cannot keep evidence"),
        }
    }
    if added.quorum {
        shared.wake_proposer();
    }
    added.later
}

/// Sends the attestations the leader lacks (as many as one frame holds). False when the
/// leader did not answer.
async fn send(shared: &Shared, leader: PublicKey, mine: &mut Mine) -> bool {
    let batch: Vec<Attestation> = mine
        .unsent
        .keys()
        .take(ATTESTATIONS_PER_FRAME_MAX)
        .filter_map(|h| mine.all.get(h).copied())
        .collect();
    let body = match encode_internal(&batch) {
        Ok(b) => b,
        Err(e) => {
            tracing::error!(error = %e, "cannot encode attestations");
            return false;
        }
    };
    let frame = Frame {
        kind: Kind::Attest,
        body,
    };
    let answer = match shared.network().request(&leader, frame).await {
        Ok(f) if f.kind == Kind::Attest => f,
        Ok(f) => {
            tracing::debug!(reason = %String::from_utf8_lossy(&f.body), "the leader refused attestations");
            return false;
        }
        Err(e) => {
            tracing::debug!(error = %e, "attestations not delivered");
            return false;
        }
    };
    let reply: AttestReply = match decode_internal(&answer.body, "attestation reply") {
        Ok(r) => r,
        Err(e) => {
            tracing::debug!(error = %e, "an attestation reply does not decode");
            return false;
        }
    };
    for a in &batch {
        mine.unsent.remove(&a.height);
    }
    for h in reply.later {
        if mine.all.contains_key(&h) {
            mine.unsent.insert(h, ());
        }
    }
    mine.unsent.is_empty()
}

/// Takes attestations a validator sent (`Kind::Attest`): each must be signed by the
/// sender and verify; answers with the heights to send again later.
pub(crate) async fn serve_attestations(shared: Arc<Shared>, req: InboundRequest) {
    let error = |message: String| Frame {
        kind: Kind::Error,
        body: message.into_bytes(),
    };
    let from = req.from;
    let batch = match decode_internal::<Vec<Attestation>>(&req.frame.body, "attestations") {
        Err(e) => return req.respond(error(e.to_string())),
        Ok(b) if b.len() > ATTESTATIONS_PER_FRAME_MAX => {
            return req.respond(error(format!(
                "more than {ATTESTATIONS_PER_FRAME_MAX} attestations"
            )));
        }
        Ok(b) => b,
    };
    if batch.iter().any(|a| a.signer != from) {
        return req.respond(error("attestations must be signed by their sender".into()));
    }
    let chain_id = shared.policy().chain_id.clone();
    let verified = crate::tasks::spawn_blocking(move || {
        let mut check = BatchVerifier::with_capacity(batch.len());
        let digests: Vec<_> = batch
            .iter()
            .map(|a| Attestation::digest(&chain_id, a.height, &a.block_hash))
            .collect();
        for (a, d) in batch.iter().zip(&digests) {
            check.queue(&a.signer, d.as_bytes(), &a.signature);
        }
        let bad = check.invalid();
        (batch, bad)
    })
    .await;
    let (batch, bad) = match verified {
        Ok(v) => v,
        Err(e) => return req.respond(error(format!("cannot check attestations: {e}"))),
    };
    if !bad.is_empty() {
        tracing::warn!(
            invalid = bad.len(),
            "a validator sent attestations whose signatures are invalid; refused"
        );
        return req.respond(error(format!(
            "{} attestations have invalid signatures",
            bad.len()
        )));
    }
    let later = take(&shared, batch);
    match encode_internal(&AttestReply { later }) {
        Ok(body) => req.respond(Frame {
            kind: Kind::Attest,
            body,
        }),
        Err(e) => req.respond(error(e.to_string())),
    }
}
