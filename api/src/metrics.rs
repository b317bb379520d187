//! The metrics on `GET /metrics` (Prometheus text format): names, kinds and help, declared
//! once for the node that exports them and the tools that read them.

/// The route.
pub const PATH: &str = "/metrics";

/// The Content-Type of the metrics page.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4";

/// A metric's kind, as Prometheus names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A value that goes up and down.
    Gauge,
    /// A count that only grows (from zero at each start).
    Counter,
    /// Observations in cumulative buckets, with their sum and count.
    Histogram,
}

impl Kind {
    /// The `# TYPE` word.
    pub const fn as_str(self) -> &'static str {
        match self {
            Kind::Gauge => "gauge",
            Kind::Counter => "counter",
            Kind::Histogram => "histogram",
        }
    }
}

/// One metric: its name, kind and help line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Metric {
    /// The name.
    pub name: &'static str,
    /// Its kind.
    pub kind: Kind,
    /// What it measures.
    pub help: &'static str,
}

const fn gauge(name: &'static str, help: &'static str) -> Metric {
    Metric {
        name,
        kind: Kind::Gauge,
        help,
    }
}

const fn counter(name: &'static str, help: &'static str) -> Metric {
    Metric {
        name,
        kind: Kind::Counter,
        help,
    }
}

const fn histogram(name: &'static str, help: &'static str) -> Metric {
    Metric {
        name,
        kind: Kind::Histogram,
        help,
    }
}

/// 1 while Raft runs, 0 once it has stopped.
pub const CONSENSUS_RUNNING: Metric = gauge(
    "ordo_consensus_running",
    "1 while Raft runs; 0 once it has stopped (a fatal storage error, or shutdown).",
);
/// Blocks known to be damaged in this node's ledger, waiting for their repair.
pub const STORAGE_DAMAGED_BLOCKS: Metric = gauge(
    "ordo_storage_damaged_blocks",
    "Blocks known to be damaged in this node's ledger (checksum, hash, link or index), waiting for their repair from peers.",
);
/// Damaged blocks repaired since start.
pub const STORAGE_REPAIRED_BLOCKS: Metric = counter(
    "ordo_storage_repaired_blocks_total",
    "Damaged blocks (or their index entries) repaired since start.",
);
/// Blocks the background scrub re-checked since start.
pub const STORAGE_SCRUBBED_BLOCKS: Metric = counter(
    "ordo_storage_scrubbed_blocks_total",
    "Stored blocks the background scrub re-checked since start.",
);
/// Height of the last applied block.
pub const TIP_HEIGHT: Metric = gauge("ordo_tip_height", "Height of the last applied block.");
/// Current Raft term.
pub const RAFT_TERM: Metric = gauge("ordo_raft_term", "Current Raft term.");
/// 1 when this node leads.
pub const IS_LEADER: Metric = gauge("ordo_is_leader", "1 when this node leads.");
/// Index of the last Raft log entry.
pub const RAFT_LAST_LOG_INDEX: Metric = gauge(
    "ordo_raft_last_log_index",
    "Index of the last Raft log entry.",
);
/// Pending transactions.
pub const MEMPOOL_TXS: Metric = gauge("ordo_mempool_txs", "Pending transactions.");
/// Pending transaction bytes.
pub const MEMPOOL_BYTES: Metric = gauge("ordo_mempool_bytes", "Pending transaction bytes.");
/// Validators connected.
pub const PEERS_CONNECTED: Metric = gauge("ordo_peers_connected", "Validators connected.");
/// Clients waiting for a commit.
pub const WAITING_CLIENTS: Metric = gauge("ordo_waiting_clients", "Clients waiting for a commit.");
/// Transactions accepted by this node's API.
pub const TXS_ACCEPTED: Metric = counter(
    "ordo_txs_accepted_total",
    "Transactions accepted by this node's API.",
);
/// Transactions refused by this node's API.
pub const TXS_REFUSED: Metric = counter(
    "ordo_txs_refused_total",
    "Transactions refused by this node's API.",
);
/// Transactions forwarded to the leader (re-sends included).
pub const TXS_FORWARDED: Metric = counter(
    "ordo_txs_forwarded_total",
    "Transactions forwarded to the leader.",
);
/// Blocks this node proposed that committed.
pub const BLOCKS_PROPOSED: Metric = counter(
    "ordo_blocks_proposed_total",
    "Blocks this node proposed that committed.",
);
/// Blocks this node proposed that did not commit.
pub const PROPOSALS_FAILED: Metric = counter(
    "ordo_proposals_failed_total",
    "Blocks this node proposed that did not commit.",
);
/// Transactions announced to followers (once per follower).
pub const TXS_ANNOUNCED: Metric = counter(
    "ordo_txs_announced_total",
    "Transactions announced to followers as admitted (once per follower).",
);
/// Signatures a follower verified ahead of their block.
pub const TXS_PRECHECKED: Metric = counter(
    "ordo_txs_prechecked_total",
    "Transaction signatures verified ahead of their block (as follower).",
);
/// Block signatures not verified again because they were checked ahead.
pub const BLOCK_SIGNATURES_PRECHECKED: Metric = counter(
    "ordo_block_signatures_prechecked_total",
    "Block transaction signatures not verified again because they were prechecked.",
);
/// Announcements dropped.
pub const ANNOUNCEMENTS_DROPPED: Metric = counter(
    "ordo_announcements_dropped_total",
    "Announcements dropped (a full outbox or queue, not delivered, not from the leader, undecodable or failing).",
);
/// Connections refused.
pub const REFUSED_CONNECTIONS: Metric = counter(
    "ordo_refused_connections_total",
    "Connections refused (not a validator, or over limits).",
);
/// Peer requests dropped because the node was overloaded.
pub const DROPPED_REQUESTS: Metric = counter(
    "ordo_dropped_requests_total",
    "Peer requests dropped because the node was overloaded.",
);
/// Connections to validators closed because their pings went unanswered.
pub const SILENT_CONNECTIONS: Metric = counter(
    "ordo_silent_connections_closed_total",
    "Connections to validators closed after 3 s without an answered ping (a partition, a paused or vanished peer).",
);
/// This node's pace of synced log writes (a moving average; a write under way counts once
/// it outlasts it).
pub const LOG_SYNC_PACE_SECONDS: Metric = gauge(
    "ordo_log_sync_pace_seconds",
    "This node's recent time for one synced write of Raft log entries (a moving average; a write under way counts once it is longer).",
);
/// Leader: its pace over its fastest caught-up follower's acknowledgement time.
pub const LEADER_SLOWNESS: Metric = gauge(
    "ordo_leader_slowness",
    "Leader: its synced-write pace over its fastest caught-up follower's append acknowledgement time (0 when not leading); it hands leadership over at 3 held for a second.",
);
/// This node's clock minus the validators' (the median of their clocks).
pub const CLOCK_OFFSET_SECONDS: Metric = gauge(
    "ordo_clock_offset_seconds",
    "This node's wall clock minus the validators' time (the median of the validators' clocks, from readings every second; 0 until a peer has been read). Over 1 s either way, /ready fails and the node warns.",
);
/// Times this node handed leadership over because its disk was the slowest.
pub const STEP_ASIDES: Metric = counter(
    "ordo_leader_step_asides_total",
    "Times this node handed leadership to a follower because its own synced writes were clearly the slowest.",
);
/// 1 while this node holds back from elections after stepping aside.
pub const HOLDING_BACK: Metric = gauge(
    "ordo_election_held_back",
    "1 while this node, having stepped aside for a slow disk, does not stand for election.",
);

/// Leader: how long the oldest transaction of each block waited in the mempool.
pub const BLOCK_QUEUE_SECONDS: Metric = histogram(
    "ordo_block_queue_seconds",
    "Time the oldest transaction of each proposed block waited in the mempool.",
);
/// Leader: from proposing a block to applying it.
pub const BLOCK_COMMIT_SECONDS: Metric = histogram(
    "ordo_block_commit_seconds",
    "Time from proposing a block to applying it, on the leader.",
);
/// Follower: checking the blocks of one append request.
pub const BLOCK_VERIFY_SECONDS: Metric = histogram(
    "ordo_block_verify_seconds",
    "Time to check the blocks of one append request, on followers.",
);
/// Every node: one synced write of Raft log entries.
pub const RAFT_LOG_APPEND_SECONDS: Metric = histogram(
    "ordo_raft_log_append_seconds",
    "Time of one synced write of Raft log entries.",
);
/// Every node: one committed block's write to the ledger.
pub const BLOCK_APPLY_SECONDS: Metric = histogram(
    "ordo_block_apply_seconds",
    "Time of one committed block's synced write to the ledger.",
);

/// Upper bounds of the histograms' buckets, in seconds (`+Inf` is implied).
pub const HISTOGRAM_BOUNDS_S: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// The value of an unlabelled sample `metric` on a metrics page, if it is there.
pub fn sample(page: &str, metric: &Metric) -> Option<f64> {
    page.lines()
        .find_map(|l| l.strip_prefix(metric.name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_found_by_exact_name() {
        let page = "# HELP ordo_tip_height H.\nordo_tip_height_extra 9\nordo_tip_height 42\n";
        assert_eq!(sample(page, &TIP_HEIGHT), Some(42.0));
        assert_eq!(sample(page, &RAFT_TERM), None);
    }
}
