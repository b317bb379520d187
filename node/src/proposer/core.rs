//! The proposer's decisions, as a pure function of what it is told: Raft's state, the
//! ledger and applied tips, the mempool's [`PoolView`] and the time. No clock, no lock, no
//! I/O: [`super::task`] gathers the [`Inputs`] (and the view, only when the core asks for
//! it, since reading it takes the mempool's lock) and carries out the [`Action`].

use std::time::{Duration, Instant};

use ordo_ledger::ChainTip;

use crate::mempool::PoolView;

/// Longest the proposer waits without looking at its inputs again (Raft's state changes
/// without waking it).
pub(crate) const POLL: Duration = Duration::from_millis(50);

/// What the proposer knows when it decides.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Inputs {
    /// This node leads now (Raft role leader, and the leader it knows is itself).
    pub(crate) leading: bool,
    /// The current Raft term.
    pub(crate) term: u64,
    /// The index of the last entry in this node's log.
    pub(crate) last_log_index: u64,
    /// The index of the last entry applied to the ledger.
    pub(crate) applied_index: u64,
    /// The ledger's tip.
    pub(crate) ledger_tip: ChainTip,
    /// The height up to which the applied-tip follower has cleaned the mempool.
    pub(crate) cleaned_height: u64,
    /// Now.
    pub(crate) now: Instant,
}

/// What to do next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Action {
    /// Cut a block from the mempool and propose it on `parent`, in `term`.
    Propose {
        /// The block the new one extends.
        parent: ChainTip,
        /// The term to propose in.
        term: u64,
    },
    /// Nothing until `until`, a block in flight comes back, or a wake-up.
    Wait {
        /// When to decide again at the latest.
        until: Instant,
    },
}

/// The term this node leads in, and whether it has settled in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Lead {
    term: u64,
    /// Everything up to this log index (the log's end when the term began: every entry of
    /// earlier terms) must be applied before proposing.
    settle_index: u64,
    settled: bool,
}

/// The proposer's state.
#[derive(Debug)]
pub(crate) struct Core {
    in_flight_max: usize,
    batch_timeout: Duration,
    idle_wait: Duration,
    lead: Option<Lead>,
    /// The last block handed to Raft while blocks are in flight, with its term.
    last: Option<(u64, ChainTip)>,
    in_flight: usize,
    /// A block failed: propose nothing until every block in flight has come back.
    draining: bool,
}

impl Core {
    /// A proposer with at most `in_flight_max` blocks in flight, cutting after
    /// `batch_timeout` (the genesis's), or after `idle_wait` when none is in flight.
    pub(crate) fn new(in_flight_max: usize, batch_timeout: Duration, idle_wait: Duration) -> Core {
        Core {
            in_flight_max: in_flight_max.max(1),
            batch_timeout,
            idle_wait,
            lead: None,
            last: None,
            in_flight: 0,
            draining: false,
        }
    }

    #[cfg(test)]
    /// Blocks proposed and not come back.
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// How long the oldest pending transaction may wait for others: the batch timeout
    /// while blocks are in flight (they commit meanwhile, and the next block gathers what
    /// arrives), at most the idle wait when none is, since then waiting only adds latency.
    pub(crate) fn batch_wait(&self) -> Duration {
        if self.in_flight == 0 {
            self.idle_wait.min(self.batch_timeout)
        } else {
            self.batch_timeout
        }
    }

    /// The next action, given `inputs`, and the mempool's view from `pool` if the pipeline
    /// has room for a block (else it is not asked for).
    pub(crate) fn decide(&mut self, inputs: &Inputs, pool: impl FnOnce() -> PoolView) -> Action {
        self.follow_leadership(inputs);
        if self.in_flight == 0 {
            self.draining = false;
            self.last = None;
        }
        let settled = self.lead.is_some_and(|l| l.settled);
        let poll = Action::Wait {
            until: inputs.now + POLL,
        };
        if !settled || self.draining || self.in_flight >= self.in_flight_max {
            return poll;
        }
        if self.last.is_some_and(|(term, _)| term != inputs.term) {
            self.last = None;
        }
        let pool = pool();
        let Some(oldest) = pool.oldest else {
            return poll;
        };
        let deadline = oldest + self.batch_wait();
        if pool.full || inputs.now >= deadline {
            let parent = self.last.map_or(inputs.ledger_tip, |(_, tip)| tip);
            return Action::Propose {
                parent,
                term: inputs.term,
            };
        }
        Action::Wait {
            until: deadline.min(inputs.now + POLL),
        }
    }

    /// Notes the start of a term this node leads, and when it has settled in it: every
    /// entry of earlier terms applied, and the applied-tip follower caught up with the
    /// ledger (so their transactions have left the mempool).
    fn follow_leadership(&mut self, inputs: &Inputs) {
        if !inputs.leading {
            self.lead = None;
            return;
        }
        if self.lead.is_none_or(|l| l.term != inputs.term) {
            self.lead = Some(Lead {
                term: inputs.term,
                settle_index: inputs.last_log_index,
                settled: false,
            });
            self.last = None;
            tracing::info!(term = inputs.term, "leading; proposing blocks");
        }
        if let Some(lead) = self.lead.as_mut()
            && !lead.settled
            && inputs.applied_index >= lead.settle_index
            && inputs.cleaned_height == inputs.ledger_tip.height
        {
            lead.settled = true;
        }
    }

    /// A block `tip` was handed to Raft in `term`.
    pub(crate) fn proposed(&mut self, term: u64, tip: ChainTip) {
        self.in_flight += 1;
        self.last = Some((term, tip));
    }

    /// A block in flight came back: appended, or not (then the blocks built on it will not
    /// be either, and the proposer drains them before starting again from the ledger tip).
    pub(crate) fn finished(&mut self, appended: bool) {
        self.in_flight = self.in_flight.saturating_sub(1);
        if !appended {
            self.draining = true;
        }
    }
}

#[cfg(test)]
#[path = "core_tests.rs"]
mod tests;
