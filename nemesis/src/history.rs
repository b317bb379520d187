//! What a run saw, in the order it saw it: every submission and its answer, every read,
//! every tip poll, every fault. The checker judges the run from this and the final chains.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ordo_crypto::Hash;
use ordo_ledger::TxId;
use serde::Serialize;

/// Where a transaction was said to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Place {
    /// Height of its block.
    pub height: u64,
    /// Its position in the block.
    pub index: u32,
    /// Its block's hash.
    pub block_hash: Hash,
}

/// A node's answer about one transaction.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "answer")]
pub enum Answer {
    /// Committed there.
    Committed(Place),
    /// Taken, not committed yet.
    Pending,
    /// The node does not know it.
    Unknown,
    /// Refused with an error code.
    Refused {
        /// The code.
        code: String,
    },
    /// An answer that breaks the API: a proof that does not hold, a malformed body.
    Invalid {
        /// What was wrong.
        why: String,
    },
    /// No answer (timeout, connection refused).
    Failed {
        /// Why.
        why: String,
    },
}

/// One thing that happened.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "kebab-case", tag = "event")]
pub enum Event {
    /// A submission of one transaction or a batch.
    Submit {
        /// When it was sent.
        sent: Duration,
        /// When its answer came.
        answered: Duration,
        /// Through which validator.
        node: usize,
        /// Whether it waited for commits.
        wait: bool,
        /// The transactions and their answers.
        txs: Vec<(TxId, Answer)>,
    },
    /// A read of one transaction's status.
    Read {
        /// When its answer came.
        at: Duration,
        /// From which validator.
        node: usize,
        /// Which transaction.
        id: TxId,
        /// What it said.
        answer: Answer,
    },
    /// A read of a block's hash.
    BlockRead {
        /// When its answer came.
        at: Duration,
        /// From which validator.
        node: usize,
        /// Which height.
        height: u64,
        /// Its hash there.
        hash: Hash,
    },
    /// One poll of a validator's status.
    Tip {
        /// When its answer came.
        at: Duration,
        /// Which validator.
        node: usize,
        /// Its tip height.
        height: u64,
        /// Its Raft term.
        term: u64,
        /// Whether it said it leads.
        leader: bool,
    },
    /// A fault began.
    FaultStart {
        /// When.
        at: Duration,
        /// Which kind.
        kind: &'static str,
        /// What it does, to whom (`validator-1 killed`, `{0} | {1,2}`…).
        what: String,
    },
    /// A validator's fsyncs were slowed (with its [`Event::FaultStart`]).
    DiskSlowed {
        /// When.
        at: Duration,
        /// Which validator.
        node: usize,
        /// Whether it led then, as far as the nemesis knew.
        leader: bool,
        /// By how much each fsync is delayed.
        delay_ms: u64,
    },
    /// The fault ended (restart, resume, heal).
    FaultEnd {
        /// When.
        at: Duration,
        /// Which kind.
        kind: &'static str,
    },
    /// A validator exited although nothing stopped it.
    Crashed {
        /// When it was found gone.
        at: Duration,
        /// Which validator.
        node: usize,
        /// Its exit status and last log lines.
        detail: String,
    },
    /// A validator exited while the nemesis had filled its disk.
    StoppedOnFullDisk {
        /// When it was found gone.
        at: Duration,
        /// Which validator.
        node: usize,
        /// Its exit status and last log lines.
        detail: String,
    },
    /// Whether a majority of validators was up and connected changed.
    Majority {
        /// When.
        at: Duration,
        /// Whether one is now.
        available: bool,
    },
    /// Every fault was healed.
    Healed {
        /// When.
        at: Duration,
    },
    /// After the load, the validators did not reach the same tip.
    Diverged {
        /// When it was given up on.
        at: Duration,
        /// Each validator's last tip.
        detail: String,
    },
    /// After the load, a validator whose ledger asked for a salvage (`ledger/SALVAGE`:
    /// its scrub met a damaged table file) was restarted, so that the salvage sets the
    /// file aside.
    SalvageRestart {
        /// When.
        at: Duration,
        /// Which validator.
        node: usize,
    },
    /// After the load, a validator whose ledger was damaged had not re-checked its chain,
    /// or was not healthy, or still asked for a salvage.
    Unhealed {
        /// When it was given up on.
        at: Duration,
        /// Which validator.
        node: usize,
        /// What was still wrong.
        detail: String,
    },
}

/// The shared record of a run.
#[derive(Clone)]
pub struct History {
    start: Instant,
    /// The wall clock at `start`, in milliseconds since the Unix epoch.
    start_unix_ms: u64,
    events: Arc<Mutex<Vec<Event>>>,
}

impl History {
    /// An empty history starting now.
    pub fn new() -> History {
        let start_unix_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        History {
            start: Instant::now(),
            start_unix_ms,
            events: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// Time since the start.
    pub fn now(&self) -> Duration {
        self.start.elapsed()
    }

    /// The wall clock (of this host, which no fault skews) at the start, in milliseconds
    /// since the Unix epoch.
    pub fn start_unix_ms(&self) -> u64 {
        self.start_unix_ms
    }

    /// Records `event`.
    pub fn push(&self, event: Event) {
        self.events.lock().expect("history lock").push(event);
    }

    /// Every event so far.
    pub fn events(&self) -> Vec<Event> {
        self.events.lock().expect("history lock").clone()
    }
}

/// Seconds, for reports.
pub fn secs(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}
