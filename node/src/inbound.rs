//! Requests from other validators, dispatched by kind: Raft RPCs to the [`RaftServer`]
//! (which checks blocks before Raft sees them), block fetches to [`serve_blocks`],
//! forwarded transactions to admission (`crate::forward`), announcements to the precheck
//! queue, attestations to `crate::attest`, clock readings to `crate::clock`.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::mpsc;

use crate::consensus::RaftServer;
use crate::network::{Frame, InboundRequest, Kind};
use crate::shared::Shared;
use crate::sync::serve_blocks;

/// Serves `inbound` until the node stops.
pub(crate) async fn serve_inbound(
    shared: Arc<Shared>,
    server: RaftServer,
    mut inbound: mpsc::Receiver<InboundRequest>,
) {
    loop {
        let req = tokio::select! {
            req = inbound.recv() => match req { Some(r) => r, None => return },
            () = shared.stopped() => return,
        };
        // Everything served for this request logs under the peer that sent it.
        let _peer = peer_span(&shared, &req.from).entered();
        match req.frame.kind {
            Kind::Raft => {
                let server = server.clone();
                crate::tasks::spawn(async move { server.serve(req).await });
            }
            Kind::Blocks => {
                let store = shared.store().clone();
                crate::tasks::spawn_blocking(move || serve_blocks(&store, req));
            }
            Kind::Transactions => {
                crate::tasks::spawn(shared.clone().serve_forwarded(req));
            }
            Kind::Announce => serve_announcement(&shared, req),
            Kind::Attest => {
                crate::tasks::spawn(crate::attest::serve_attestations(shared.clone(), req));
            }
            Kind::Clock => crate::clock::serve(req),
            Kind::Error => req.respond(Frame {
                kind: Kind::Error,
                body: b"an error frame is not a request".to_vec(),
            }),
        }
    }
}

/// The span of requests from validator `key`: `peer = <its genesis name>`.
fn peer_span(shared: &Shared, key: &ordo_crypto::PublicKey) -> tracing::Span {
    match shared.genesis().validator(key) {
        Some(v) => tracing::info_span!("peer", name = %v.name),
        None => tracing::info_span!("peer", key = %key),
    }
}

/// Takes transactions a leader announced (see `crate::precheck`): acknowledged at once,
/// since checking them is best effort, and queued for checking only when they come from
/// the leader this node follows.
fn serve_announcement(shared: &Shared, mut req: InboundRequest) {
    let body = std::mem::take(&mut req.frame.body);
    let from = req.from;
    req.respond(Frame {
        kind: Kind::Announce,
        body: Vec::new(),
    });
    let from_leader = shared.leader_key() == Some(from);
    if from_leader && !shared.is_leader() {
        shared.prechecked().offer(body);
    } else {
        shared
            .prechecked()
            .stats
            .dropped
            .fetch_add(1, Ordering::Relaxed);
    }
}
