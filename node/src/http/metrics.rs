//! `GET /metrics`: the node's gauges, counters and stage histograms in Prometheus' text
//! format (names and help in `ordo_api::metrics`).

use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use ordo_api::metrics::{self as m, Metric};

use super::Api;
use super::status::consensus_failure;
use crate::consensus::Role;
use crate::shared::Shared;

/// Every gauge and counter with its value now.
fn rows(s: &Shared) -> Vec<(Metric, u64)> {
    let raft = s.raft_status();
    let (txs, bytes) = s.pool_size();
    let c = s.counters();
    let net = s.network().stats();
    let pre = &s.prechecked().stats;
    let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    vec![
        (
            m::CONSENSUS_RUNNING,
            u64::from(consensus_failure(&raft).is_none()),
        ),
        (m::TIP_HEIGHT, s.tip().height),
        (m::RAFT_TERM, raft.term),
        (m::IS_LEADER, u64::from(raft.role == Role::Leader)),
        (m::RAFT_LAST_LOG_INDEX, raft.last_log_index.unwrap_or(0)),
        (m::MEMPOOL_TXS, txs as u64),
        (m::MEMPOOL_BYTES, bytes),
        (
            m::PEERS_CONNECTED,
            s.network().connected().map_or(0, |p| p.len()) as u64,
        ),
        (m::WAITING_CLIENTS, s.waiters().len() as u64),
        (m::TXS_ACCEPTED, load(&c.txs_accepted)),
        (m::TXS_REFUSED, load(&c.txs_refused)),
        (m::TXS_FORWARDED, load(&c.txs_forwarded)),
        (m::BLOCKS_PROPOSED, load(&c.blocks_proposed)),
        (m::PROPOSALS_FAILED, load(&c.proposals_failed)),
        (m::TXS_ANNOUNCED, load(&pre.announced)),
        (m::TXS_PRECHECKED, load(&pre.checked)),
        (m::BLOCK_SIGNATURES_PRECHECKED, load(&pre.hits)),
        (m::ANNOUNCEMENTS_DROPPED, load(&pre.dropped)),
        (m::REFUSED_CONNECTIONS, load(&net.refused_connections)),
        (m::DROPPED_REQUESTS, load(&net.dropped_requests)),
        (m::SILENT_CONNECTIONS, load(&net.silent_connections)),
        (m::STORAGE_DAMAGED_BLOCKS, s.storage().damaged_blocks()),
        (m::STORAGE_REPAIRED_BLOCKS, s.storage().repaired_blocks()),
        (m::STORAGE_SCRUBBED_BLOCKS, s.storage().scrubbed_blocks()),
        (m::STEP_ASIDES, load(&s.pace().step_asides)),
        (
            m::HOLDING_BACK,
            u64::from(s.pace().holding_back.load(Ordering::Relaxed)),
        ),
    ]
}

/// The gauges whose values are fractions.
fn fractional_rows(s: &Shared) -> Vec<(Metric, f64)> {
    let pace = s.pace();
    vec![
        (
            m::LOG_SYNC_PACE_SECONDS,
            pace.own(std::time::Instant::now())
                .map_or(0.0, |d| d.as_secs_f64()),
        ),
        (m::LEADER_SLOWNESS, pace.score()),
        (
            m::CLOCK_OFFSET_SECONDS,
            s.clock().offset_ms().map_or(0.0, |ms| ms as f64 / 1000.0),
        ),
    ]
}

/// `GET /metrics`.
pub(super) async fn metrics(State(api): State<Api>) -> Response {
    let mut out = String::new();
    let rows = rows(&api.shared)
        .into_iter()
        .map(|(m, v)| (m, v.to_string()));
    let fractional = fractional_rows(&api.shared)
        .into_iter()
        .map(|(m, v)| (m, v.to_string()));
    for (metric, value) in rows.chain(fractional) {
        let Metric { name, kind, help } = metric;
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {}\n{name} {value}",
            kind.as_str()
        );
    }
    api.shared.timings().render(&mut out);
    ([(header::CONTENT_TYPE, m::CONTENT_TYPE)], out).into_response()
}
