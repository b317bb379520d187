//! Raft RPCs over the node's network: openraft's `RaftNetworkV2` client side, and the
//! server side that checks every block in an incoming append before Raft sees it.

use std::io::Cursor;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use openraft::error::{RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory, RaftNetworkV2};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use openraft::type_config::alias::{SnapshotOf, VoteOf};
use openraft::{EntryPayload, OptionalSend};
use ordo_crypto::{Hash, PublicKey, Signature};
use ordo_ledger::{ChainTip, Policy, Store, TxId, verify_block_with};

use super::depose::{Leadership, WITHDRAWN, Withdrawals};
use super::pace::Pace;
use super::{BlockEntry, BlockStateMachine, LogStore, TypeConfig, ValidatorNode};
use crate::clock::TimeBound;
use crate::network::{Frame, InboundRequest, Kind, Network};
use crate::precheck::Prechecked;
use ordo_wire::{
    RaftRequest, RaftResponse, decode_internal, encode_internal, encode_internal_sized,
};

/// ordo's Raft instance.
pub type OrdoRaft = openraft::Raft<TypeConfig, BlockStateMachine>;

/// Creates a client per peer; peers are addressed by the key in their Raft node record.
#[derive(Clone)]
pub struct RaftNet {
    network: Network,
    pace: Arc<Pace>,
}

impl RaftNet {
    /// Raft networking over `network`, recording in `pace` how long followers take to
    /// acknowledge appends of blocks.
    pub fn new(network: Network, pace: Arc<Pace>) -> RaftNet {
        RaftNet { network, pace }
    }
}

impl RaftNetworkFactory<TypeConfig> for RaftNet {
    type Network = RaftPeer;

    async fn new_client(&mut self, target: u64, node: &ValidatorNode) -> RaftPeer {
        RaftPeer {
            network: self.network.clone(),
            to: node.public_key,
            id: target,
            pace: self.pace.clone(),
            withdrawn_logged: AtomicU64::new(0),
        }
    }
}

/// Shortest deadline for an append that carries blocks.
const APPEND_TIMEOUT_MIN: Duration = Duration::from_secs(5);

/// The client for one peer.
pub struct RaftPeer {
    network: Network,
    to: PublicKey,
    /// The peer's Raft node id.
    id: u64,
    pace: Arc<Pace>,
    /// The last term in which this peer's withdrawal from this node was logged (+ 1).
    withdrawn_logged: AtomicU64,
}

impl RaftPeer {
    async fn call(&self, req: &RaftRequest, ttl: Duration) -> Result<RaftResponse, String> {
        let blocks: u64 = match req {
            RaftRequest::Append(rpc) => rpc
                .entries
                .iter()
                .map(|e| match &e.payload {
                    EntryPayload::Normal(b) => b.block.encoded_len() + 16,
                    _ => 0,
                })
                .sum(),
            _ => 0,
        };
        let body = encode_internal_sized(req, blocks as usize + 256).map_err(|e| e.to_string())?;
        let request = self.network.request(
            &self.to,
            Frame {
                kind: Kind::Raft,
                body,
            },
        );
        let frame = tokio::time::timeout(ttl, request)
            .await
            .map_err(|_| format!("no answer within {ttl:?}"))?
            .map_err(|e| e.to_string())?;
        match decode_internal(&frame.body, "raft response").map_err(|e| e.to_string())? {
            RaftResponse::Refused(reason) => {
                if reason.starts_with(WITHDRAWN)
                    && let RaftRequest::Append(rpc) = req
                {
                    self.log_withdrawal(rpc.vote.leader_id.term, &reason);
                }
                Err(format!("peer refused: {reason}"))
            }
            other => Ok(other),
        }
    }

    /// Logs, once a term, that this peer no longer follows this node because its blocks
    /// failed the peer's check.
    fn log_withdrawal(&self, term: u64, reason: &str) {
        if self.withdrawn_logged.swap(term + 1, Ordering::Relaxed) != term + 1 {
            tracing::error!(
                peer = %self.to,
                term,
                %reason,
                "a follower withdrew from this node as leader: the blocks it proposes fail the followers' check; another validator will be elected"
            );
        }
    }
}

fn unreachable(reason: impl ToString) -> RPCError<TypeConfig> {
    RPCError::Unreachable(Unreachable::from_string(reason))
}

/// A vote or pre-vote answer; anything else counts as the peer being unreachable.
fn vote_answer(
    answer: Result<RaftResponse, String>,
) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
    match answer {
        Ok(RaftResponse::Vote(r)) => Ok(r),
        Ok(_) => Err(unreachable("unexpected response to a vote")),
        Err(e) => Err(unreachable(e)),
    }
}

impl RaftNetworkV2<TypeConfig> for RaftPeer {
    type SnapshotData = Cursor<Vec<u8>>;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        // openraft gives an append the heartbeat interval; a batch of blocks, verified by
        // the follower before it answers, can take longer, and a timeout only makes the
        // leader send the same batch again (more work for a follower already behind).
        // Empty appends (heartbeats, probes) keep openraft's deadline.
        let blocks = carries_blocks(&rpc);
        let ttl = if blocks {
            option.hard_ttl().max(APPEND_TIMEOUT_MIN)
        } else {
            option.hard_ttl()
        };
        let sent = Instant::now();
        match self.call(&RaftRequest::Append(rpc), ttl).await {
            Ok(RaftResponse::Append(r)) => {
                // The follower checked the blocks and synced them to its log: its pace.
                if blocks && r.is_success() {
                    self.pace.acknowledged(self.id, sent.elapsed());
                }
                Ok(r)
            }
            Ok(_) => Err(unreachable("unexpected response to append")),
            Err(e) => Err(unreachable(e)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        vote_answer(self.call(&RaftRequest::Vote(rpc), option.hard_ttl()).await)
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        vote_answer(
            self.call(&RaftRequest::PreVote(rpc), option.hard_ttl())
                .await,
        )
    }

    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        match self
            .call(&RaftRequest::TransferLeader(req), option.hard_ttl())
            .await
        {
            Ok(RaftResponse::TransferLeader(r)) => Ok(r),
            Ok(_) => Err(unreachable("unexpected response to a leadership transfer")),
            Err(e) => Err(unreachable(e)),
        }
    }

    async fn full_snapshot(
        &mut self,
        vote: VoteOf<TypeConfig>,
        snapshot: SnapshotOf<TypeConfig, Self::SnapshotData>,
        cancel: impl std::future::Future<Output = ReplicationClosed> + OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let req = RaftRequest::Snapshot {
            vote,
            meta: snapshot.meta,
            data: snapshot.snapshot.into_inner(),
        };
        tokio::select! {
            closed = cancel => Err(StreamingError::Closed(closed)),
            answer = self.call(&req, option.hard_ttl()) => match answer {
                Ok(RaftResponse::Snapshot(r)) => Ok(r),
                Ok(_) => Err(StreamingError::Unreachable(Unreachable::from_string("unexpected response to snapshot"))),
                Err(e) => Err(StreamingError::Unreachable(Unreachable::from_string(e))),
            }
        }
    }
}

/// Whether an append carries any block (heartbeats carry none).
fn carries_blocks(rpc: &AppendEntriesRequest<TypeConfig>) -> bool {
    rpc.entries
        .iter()
        .any(|e| matches!(e.payload, EntryPayload::Normal(_)))
}

/// Serves Raft requests from peers, verifying blocks before they reach the log, and
/// withdrawing from a leader whose blocks keep failing (`super::depose`).
#[derive(Clone)]
pub struct RaftServer {
    raft: OrdoRaft,
    check: AppendCheck,
    withdrawals: Arc<Withdrawals>,
}

impl RaftServer {
    /// A server feeding `raft`, checking blocks against `store` and `log` under `policy`
    /// and their time against `time`, leaving out the signatures this node checked ahead
    /// (`prechecked`), and withdrawing from a leader after `depose_after` failed appends
    /// in a row.
    pub fn new(
        raft: OrdoRaft,
        (log, store): (LogStore, Arc<Store>),
        policy: Arc<Policy>,
        prechecked: Arc<Prechecked>,
        time: TimeBound,
        depose_after: u32,
    ) -> RaftServer {
        RaftServer {
            raft,
            check: AppendCheck::new((log, store), policy, prechecked, time),
            withdrawals: Arc::new(Withdrawals::new(depose_after)),
        }
    }

    /// Answers one request.
    pub async fn serve(&self, req: InboundRequest) {
        let response = match decode_internal::<RaftRequest>(&req.frame.body, "raft request") {
            Ok(request) => self.handle(request).await,
            Err(e) => RaftResponse::Refused(e.to_string()),
        };
        match encode_internal(&response) {
            Ok(body) => req.respond(Frame {
                kind: Kind::Raft,
                body,
            }),
            Err(e) => tracing::error!(error = %e, "cannot encode a raft response"),
        }
    }

    async fn handle(&self, request: RaftRequest) -> RaftResponse {
        match request {
            RaftRequest::Append(rpc) => match self.append(rpc).await {
                Ok(response) => RaftResponse::Append(response),
                Err(reason) => RaftResponse::Refused(reason),
            },
            RaftRequest::Vote(rpc) => match self.refused_vote(&rpc) {
                Some(refusal) => refusal,
                None => self
                    .raft
                    .vote(rpc)
                    .await
                    .map_or_else(|e| RaftResponse::Refused(e.to_string()), RaftResponse::Vote),
            },
            RaftRequest::PreVote(rpc) => match self.refused_vote(&rpc) {
                Some(refusal) => refusal,
                None => self
                    .raft
                    .pre_vote(rpc)
                    .await
                    .map_or_else(|e| RaftResponse::Refused(e.to_string()), RaftResponse::Vote),
            },
            RaftRequest::TransferLeader(req) => {
                self.raft.handle_transfer_leader(req).await.map_or_else(
                    |e| RaftResponse::Refused(e.to_string()),
                    RaftResponse::TransferLeader,
                )
            }
            RaftRequest::Snapshot { vote, meta, data } => {
                let snapshot = openraft::storage::Snapshot {
                    meta,
                    snapshot: Cursor::new(data),
                };
                self.raft
                    .install_full_snapshot(vote, snapshot)
                    .await
                    .map_or_else(
                        |e| RaftResponse::Refused(e.to_string()),
                        RaftResponse::Snapshot,
                    )
            }
        }
    }

    /// A refusal of `rpc`'s (pre-)vote when its candidate is a leader this node withdrew
    /// from lately.
    fn refused_vote(&self, rpc: &VoteRequest<TypeConfig>) -> Option<RaftResponse> {
        let candidate = rpc.vote.leader_id.node_id;
        let left = self
            .withdrawals
            .refuses_vote_for(candidate, Instant::now())?;
        Some(RaftResponse::Refused(format!(
            "not voting for node {candidate} for {} s more: its blocks failed this node's check",
            left.as_secs()
        )))
    }

    /// Hands `rpc` to Raft once every block in it has passed the check.
    ///
    /// A refused append still carries the leader's commit index. Raft is handed the same
    /// request without its entries (what a heartbeat is: it appends and truncates
    /// nothing), so this node applies what is committed up to `prev_log_id`. A block
    /// whose parent this node's ledger has not reached yet is refused only until then,
    /// whatever the leader knows of this node's log.
    pub(crate) async fn append(
        &self,
        rpc: AppendEntriesRequest<TypeConfig>,
    ) -> Result<AppendEntriesResponse<TypeConfig>, String> {
        let leader: Leadership = (rpc.vote.leader_id.node_id, rpc.vote.leader_id.term);
        if self.withdrawals.withdrawn_from(leader) {
            // Neither appended nor counted as a heartbeat: the lease runs out.
            return Err(withdrawn(leader));
        }
        let rpc = if carries_blocks(&rpc) {
            let without_entries = AppendEntriesRequest {
                vote: rpc.vote,
                prev_log_id: rpc.prev_log_id,
                leader_commit: rpc.leader_commit,
                entries: Vec::new(),
            };
            // Signature checks take milliseconds: keep them off the async threads.
            let check = self.check.clone();
            let checked = crate::tasks::spawn_blocking(move || {
                let mut rpc = rpc;
                let started = Instant::now();
                let checked = check.verify_append(&mut rpc);
                check.log.timings().verify.observe(started.elapsed());
                checked.map(|()| rpc)
            })
            .await
            .unwrap_or_else(|e| Err(format!("block verification failed: {e}").into()));
            match checked {
                Ok(rpc) => {
                    self.withdrawals.passed(leader);
                    rpc
                }
                Err(refusal) => {
                    match &refusal {
                        // Ordinary while this node catches up: it applies, then accepts.
                        Refusal::Behind(reason) => {
                            tracing::debug!(%reason, "refused an append until the ledger catches up");
                        }
                        Refusal::Failed(reason) => {
                            tracing::warn!(%reason, "refused an append that could not be checked");
                        }
                        Refusal::Invalid(reason) => {
                            tracing::warn!(%reason, "refused an append with a block that failed its check");
                            if self.withdrawals.failed(leader, Instant::now()) {
                                tracing::error!(
                                    leader = leader.0,
                                    term = leader.1,
                                    %reason,
                                    "withdrawing from the leader: its blocks keep failing this node's check; its appends and heartbeats go unanswered so that another is elected"
                                );
                                return Err(withdrawn(leader));
                            }
                        }
                    }
                    if let Err(e) = self.raft.append_entries(without_entries).await {
                        tracing::debug!(error = %e, "the refused append's commit index was not taken");
                    }
                    return Err(refusal.to_string());
                }
            }
        } else {
            rpc
        };
        let has_entries = !rpc.entries.is_empty();
        let answer = self
            .raft
            .append_entries(rpc)
            .await
            .map_err(|e| e.to_string())?;
        if has_entries && answer.is_success() {
            self.withdrawals.followed(leader);
        }
        Ok(answer)
    }
}

/// The refusal of every append from a leadership this node withdrew from.
fn withdrawn(leader: Leadership) -> String {
    format!(
        "{WITHDRAWN} the blocks of node {} in term {} failed this node's check too many times in a row",
        leader.0, leader.1
    )
}

/// Why a follower refused an append.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// A block's parent is in the ledger, which has not applied that far yet: refused
    /// until it has (an ordinary state while this node catches up).
    Behind(String),
    /// A block failed its check: the leader proposed an invalid block.
    Invalid(String),
    /// A block could not be checked (this node could not read what it needed).
    Failed(String),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Behind(reason) | Refusal::Invalid(reason) | Refusal::Failed(reason) => {
                f.write_str(reason)
            }
        }
    }
}

impl From<String> for Refusal {
    fn from(reason: String) -> Refusal {
        Refusal::Failed(reason)
    }
}

impl From<&str> for Refusal {
    fn from(reason: &str) -> Refusal {
        Refusal::Failed(reason.to_owned())
    }
}

/// Where a block's parent is.
enum Parent {
    /// This tip.
    Tip(ChainTip),
    /// Nowhere: the block is above `reach`, the highest any chain of this log can get.
    Nowhere {
        /// That height.
        reach: u64,
    },
}

/// Checks the blocks of an incoming append against their parents, before Raft sees them.
#[derive(Clone)]
pub(crate) struct AppendCheck {
    log: LogStore,
    store: Arc<Store>,
    policy: Arc<Policy>,
    prechecked: Arc<Prechecked>,
    time: TimeBound,
}

impl AppendCheck {
    /// Checks blocks against `log` and `store` under `policy` and their time against
    /// `time`, leaving out the signatures this node checked ahead (`prechecked`).
    pub(crate) fn new(
        (log, store): (LogStore, Arc<Store>),
        policy: Arc<Policy>,
        prechecked: Arc<Prechecked>,
        time: TimeBound,
    ) -> AppendCheck {
        AppendCheck {
            log,
            store,
            policy,
            prechecked,
            time,
        }
    }

    /// Verifies every block in `rpc` against its parent, and attaches to each entry the
    /// transaction ids the check computed. When this node's log does not hold
    /// `prev_log_id`, Raft will answer with a conflict and append nothing, so there is
    /// nothing to verify yet.
    ///
    /// A block's parent is the block its header links to: one earlier in this append, the
    /// last block of the log up to `prev_log_id`, or a block of the ledger. It is not
    /// always the block just before it: a block that every node skips at apply (it did
    /// not extend the chain) is followed by one the leader built on its ledger tip.
    pub(crate) fn verify_append(
        &self,
        rpc: &mut AppendEntriesRequest<TypeConfig>,
    ) -> Result<(), Refusal> {
        if !carries_blocks(rpc) {
            return Ok(());
        }
        if !self
            .log
            .holds(rpc.prev_log_id.as_ref())
            .map_err(|e| e.to_string())?
        {
            return Ok(());
        }
        let prev_index = rpc.prev_log_id.map(|id| id.index);
        // Tips of the blocks of this append checked so far, bounded by the append's length.
        let mut checked_tips: Vec<ChainTip> = Vec::new();
        // One deadline for the whole append: waiting for announcement checks never delays
        // an append by more than this, however many blocks it carries.
        let wait_until = std::time::Instant::now() + crate::precheck::ANNOUNCE_WAIT_MAX;
        for e in &mut rpc.entries {
            if let EntryPayload::Normal(entry) = &mut e.payload {
                let block = entry.block.clone();
                let header = &block.header;
                let parent = match checked_tips.iter().rev().find(|t| {
                    t.hash == header.prev_hash && t.height.checked_add(1) == Some(header.height)
                }) {
                    Some(tip) => *tip,
                    None => match self.parent_of(header.height, &header.prev_hash, prev_index)? {
                        Parent::Tip(tip) => tip,
                        Parent::Nowhere { .. }
                            if checked_tips.iter().any(|t| t.height + 1 >= header.height) =>
                        {
                            return Err(Refusal::Behind(format!(
                                "parent of block {} is unknown",
                                header.height
                            )));
                        }
                        Parent::Nowhere { reach } => {
                            // No chain this log can build reaches its parent: every node
                            // skips it at apply (it does not extend the ledger), so it is
                            // taken unchecked, or the leader would send it for ever.
                            tracing::warn!(
                                height = header.height,
                                reach,
                                "taking an append whose block cannot extend the chain (its parent is in no log); every node skips it"
                            );
                            continue;
                        }
                    },
                };
                self.time
                    .check(&block)
                    .map_err(|e| Refusal::Invalid(format!("block {}: {e}", block.header.height)))?;
                let check = self.prechecked.block_check(wait_until);
                let checked = |id: &TxId, sig: &Signature| check.checked(id, sig);
                let ids = verify_block_with(&parent, &block, &self.policy, checked)
                    .map_err(|e| Refusal::Invalid(format!("block {}: {e}", block.header.height)))?;
                check.passed(ids.iter().zip(&block.txs).map(|(id, t)| (*id, t.signature)));
                checked_tips.push(block.tip());
                *entry = BlockEntry::with_ids(block, ids.into());
            }
        }
        Ok(())
    }

    /// The tip a block at `height` linking to `prev_hash` must extend, from outside the
    /// append: the log's last block up to `prev_index` when it is that block, else the
    /// ledger's block below `height` (whose hash the block check then compares); or
    /// [`Parent::Nowhere`] when the block is higher than any chain this log builds can
    /// reach (a leader's earlier proposals were refused while a later one built on them
    /// was taken).
    fn parent_of(
        &self,
        height: u64,
        prev_hash: &Hash,
        prev_index: Option<u64>,
    ) -> Result<Parent, Refusal> {
        let want = height
            .checked_sub(1)
            .ok_or("a block cannot have height 0")?;
        if let Some(index) = prev_index
            && let Some(block) = self
                .log
                .last_block_through(index)
                .map_err(|e| e.to_string())?
        {
            let tip = block.tip();
            if tip.height == want && tip.hash == *prev_hash {
                return Ok(Parent::Tip(tip));
            }
        }
        // Otherwise the parent is in the ledger. That includes a block proposed after log
        // blocks that every node skips at apply: the leader then builds on its ledger tip.
        // If this node has not applied that far yet, the append is refused; the refusal
        // still hands Raft the append's commit index (`RaftServer::append`), so this node
        // applies what is committed and accepts the append when Raft sends it again.
        let tip = self.store.tip();
        if want == 0 {
            return Ok(Parent::Tip(self.policy.genesis_tip()));
        }
        if want > tip.height {
            // Applying the log through `prev_index` leaves a ledger no higher than its
            // highest block: a block above that cannot extend it, here or anywhere.
            let in_log = match prev_index {
                Some(index) => self
                    .log
                    .max_height_through(index)
                    .map_err(|e| e.to_string())?,
                None => None,
            };
            let reach = in_log.unwrap_or(0).max(tip.height);
            if want > reach {
                return Ok(Parent::Nowhere { reach });
            }
            return Err(Refusal::Behind(format!(
                "parent of block {height} is unknown (ledger tip {})",
                tip.height
            )));
        }
        let parent = self
            .store
            .block(want)
            .map_err(|e| e.to_string())?
            .ok_or("parent block missing from the ledger")?;
        Ok(Parent::Tip(parent.tip()))
    }
}
