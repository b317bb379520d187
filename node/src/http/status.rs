//! `GET /v1/status`, `GET /health` and `GET /ready`.

use axum::Json;
use axum::extract::State;
use ordo_api::{ErrorCode, Health, MempoolInfo, NodeInfo, PeerInfo, RaftInfo, Status, TipInfo};
use ordo_crypto::PublicKey;

use super::{Api, ApiError};
use crate::consensus::{RaftStatus, Role};
use crate::error::Fatal;
use crate::shared::Shared;
use ordo_wire::PROTOCOL_VERSION;

/// `GET /health`: 200 while the node serves, its consensus runs and its ledger is whole.
pub(super) async fn health(State(api): State<Api>) -> Result<Json<Health>, ApiError> {
    health_of(api.shared.is_stopping(), &api.shared.raft_status())?;
    if let Some(problem) = api.shared.storage().problem() {
        return Err(ApiError::new(ErrorCode::StorageDamaged, problem));
    }
    Ok(Json(Health::ok()))
}

/// Most committed log entries a ready node's ledger may lag behind.
const READY_LAG_MAX: u64 = 8;

/// `GET /ready`: 200 while the node is healthy, knows a leader, has applied all but
/// [`READY_LAG_MAX`] of the entries known committed, and its clock is within
/// `clock::OFFSET_MAX` of the validators' time; else `503 not_ready`, saying why.
pub(super) async fn ready(State(api): State<Api>) -> Result<Json<Health>, ApiError> {
    let s = &api.shared;
    let raft = s.raft_status();
    health_of(s.is_stopping(), &raft)?;
    if let Some(problem) = s.storage().problem() {
        return Err(ApiError::new(ErrorCode::StorageDamaged, problem));
    }
    let problems = unready(&raft, s.clock().problem());
    if problems.is_empty() {
        Ok(Json(Health::ready()))
    } else {
        Err(ApiError::new(ErrorCode::NotReady, problems.join("; ")))
    }
}

/// Why a running node is not ready for clients.
fn unready(raft: &RaftStatus, clock: Option<String>) -> Vec<String> {
    let mut out = Vec::new();
    if raft.leader.is_none() {
        out.push("no leader is known (an election is under way)".to_owned());
    }
    let lag = raft
        .committed
        .unwrap_or(0)
        .saturating_sub(raft.applied.unwrap_or(0));
    if lag > READY_LAG_MAX {
        out.push(format!(
            "this node's ledger is {lag} committed log entries behind (catching up)"
        ));
    }
    out.extend(clock);
    out
}

/// The node is healthy while it is not stopping and its Raft runs: a node whose Raft has
/// stopped (a fatal storage error, such as a full disk) still serves reads, but orders
/// nothing more.
fn health_of(stopping: bool, raft: &RaftStatus) -> Result<(), ApiError> {
    if stopping {
        return Err(ApiError::shutting_down());
    }
    match consensus_failure(raft) {
        Some(fatal) => Err(ApiError::consensus_stopped(&fatal)),
        None => Ok(()),
    }
}

/// Why Raft has stopped, if it has: on a fatal error, or shut down.
pub(super) fn consensus_failure(raft: &RaftStatus) -> Option<Fatal> {
    match (&raft.failure, raft.role) {
        (Some(fatal), _) => Some(fatal.clone()),
        (None, Role::Shutdown) => Some(Fatal::Stopped),
        (None, _) => None,
    }
}

fn role(r: Role) -> ordo_api::Role {
    match r {
        Role::Leader => ordo_api::Role::Leader,
        Role::Follower => ordo_api::Role::Follower,
        Role::Candidate => ordo_api::Role::Candidate,
        Role::Learner => ordo_api::Role::Learner,
        Role::Shutdown => ordo_api::Role::Shutdown,
    }
}

fn peer(shared: &Shared, key: &PublicKey) -> PeerInfo {
    let name = shared
        .genesis()
        .validator(key)
        .map_or_else(String::new, |v| v.name.clone());
    PeerInfo {
        name,
        public_key: *key,
    }
}

/// `GET /v1/status`.
pub(super) async fn status(State(api): State<Api>) -> Json<Status> {
    let s = &api.shared;
    let m = s.raft_status();
    let tip = s.tip();
    let leader = m
        .leader
        .and_then(|id| s.validator(id))
        .map(|(_, key)| peer(s, key));
    let peers = s
        .network()
        .connected()
        .unwrap_or_default()
        .iter()
        .map(|k| peer(s, k))
        .collect();
    let (txs, bytes) = s.pool_size();
    let me = s.me();
    Json(Status {
        chain_id: s.policy().chain_id.clone(),
        genesis_hash: s.policy().genesis_hash,
        version: env!("CARGO_PKG_VERSION").to_owned(),
        protocol_version: PROTOCOL_VERSION,
        node: NodeInfo {
            name: me.name.clone(),
            public_key: me.public_key,
            node_id: me.node_id,
        },
        role: role(m.role),
        term: m.term,
        leader,
        tip: TipInfo {
            height: tip.height,
            hash: tip.hash,
            certified: tip.certified,
        },
        raft: RaftInfo {
            last_log_index: m.last_log_index,
            committed: m.committed,
            applied: m.applied,
            snapshot: m.snapshot,
            purged: m.purged,
        },
        peers,
        mempool: MempoolInfo {
            txs: txs as u64,
            bytes,
        },
        limits: s.policy().limits,
        uptime_s: s.uptime().as_secs(),
        clock_offset_ms: s.clock().offset_ms(),
    })
}

#[cfg(test)]
mod tests {
    use ordo_api::ErrorCode;

    use super::*;

    fn running(role: Role) -> RaftStatus {
        RaftStatus {
            role,
            term: 3,
            leader: Some(1),
            last_log_index: Some(10),
            committed: Some(10),
            applied: Some(10),
            snapshot: None,
            purged: None,
            failure: None,
        }
    }

    #[test]
    fn a_node_is_ready_with_a_leader_a_ledger_caught_up_and_a_good_clock() {
        assert!(unready(&running(Role::Follower), None).is_empty());
        let electing = RaftStatus {
            leader: None,
            ..running(Role::Candidate)
        };
        assert_eq!(unready(&electing, None).len(), 1);
        let behind = RaftStatus {
            applied: Some(1),
            ..running(Role::Follower)
        };
        assert!(unready(&behind, None)[0].contains("9 committed log entries behind"));
        let close = RaftStatus {
            applied: Some(2),
            ..running(Role::Follower)
        };
        assert!(unready(&close, None).is_empty());
        let off = unready(&running(Role::Leader), Some("clock".into()));
        assert_eq!(off, ["clock"]);
    }

    #[test]
    fn health_fails_once_raft_has_stopped_or_the_node_stops() {
        for role in [Role::Leader, Role::Follower, Role::Candidate, Role::Learner] {
            assert!(health_of(false, &running(role)).is_ok(), "{role:?}");
            let e = health_of(true, &running(role)).expect_err("stopping");
            assert_eq!(e.code(), ErrorCode::ShuttingDown);
        }
        let e = health_of(false, &running(Role::Shutdown)).expect_err("shut down");
        assert_eq!(e.code(), ErrorCode::ConsensusStopped);
        let failed = RaftStatus {
            failure: Some(Fatal::Storage("No space left on device".into())),
            ..running(Role::Follower)
        };
        let e = health_of(false, &failed).expect_err("failed");
        assert_eq!(e.code(), ErrorCode::ConsensusStopped);
        assert!(
            e.0.message.contains("No space left on device"),
            "{}",
            e.0.message
        );
    }
}
