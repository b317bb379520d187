//! Deposing a leader whose blocks fail their check.
//!
//! A follower refuses an append whose block fails verification, and appends nothing: a bad
//! block never enters its log. But Raft would still count the leader's heartbeats, so its
//! lease would renew and the cluster would stall for as long as that leader stays up.
//! After `depose_after_failed_appends` refusals in a row from one leader in one term, a
//! follower **withdraws** from it: it answers none of its appends or heartbeats for the
//! rest of that term (its election timer runs out and pre-vote elects another), and it
//! votes for that node in no election for [`VOTE_REFUSAL`] (its log, holding the refused
//! blocks, may be the longest), or until it has taken entries from a leader of a later
//! term (its own log's last term is then later than the refused blocks', so Raft's own
//! rule already refuses that node unless it has caught up). `docs/design/replication.md`
//! has the reasoning.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a follower refuses its vote to a leader it withdrew from.
pub(crate) const VOTE_REFUSAL: Duration = Duration::from_secs(30);

/// The start of a refusal's reason when a follower has withdrawn from the leader: the
/// deposed leader recognises it (and logs why it lost its followers).
pub(crate) const WITHDRAWN: &str = "withdrawn from this leader:";

/// A leader in a term: (node id, term).
pub(crate) type Leadership = (u64, u64);

/// What a follower has seen of leaders' failed blocks.
#[derive(Debug)]
pub(crate) struct Withdrawals {
    failures_max: u32,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// The leader whose appends failed last, and how many in a row.
    streak: Option<(Leadership, u32)>,
    /// The leaderships withdrawn from (at most a few: one per term that had a bad leader).
    withdrawn: Vec<Leadership>,
    /// Nodes refused votes: until when, and the term they were withdrawn from in.
    no_votes: HashMap<u64, (Instant, u64)>,
}

/// Most withdrawn leaderships remembered (older terms are over anyway).
const WITHDRAWN_MAX: usize = 16;

impl Withdrawals {
    /// Withdraws after `failures_max` failed appends in a row from one leadership.
    pub(crate) fn new(failures_max: u32) -> Withdrawals {
        Withdrawals {
            failures_max: failures_max.max(1),
            state: Mutex::default(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("withdrawals lock poisoned")
    }

    /// Whether this follower has withdrawn from `leader`.
    pub(crate) fn withdrawn_from(&self, leader: Leadership) -> bool {
        self.state().withdrawn.contains(&leader)
    }

    /// Records an append from `leader` whose block failed its check; true when this one
    /// makes the follower withdraw from it.
    pub(crate) fn failed(&self, leader: Leadership, now: Instant) -> bool {
        let mut s = self.state();
        let count = match s.streak {
            Some((l, n)) if l == leader => n + 1,
            _ => 1,
        };
        s.streak = Some((leader, count));
        if count < self.failures_max || s.withdrawn.contains(&leader) {
            return false;
        }
        s.withdrawn.push(leader);
        if s.withdrawn.len() > WITHDRAWN_MAX {
            s.withdrawn.remove(0);
        }
        s.no_votes.insert(leader.0, (now + VOTE_REFUSAL, leader.1));
        true
    }

    /// Records that Raft took entries from `leader`: refusals of votes to nodes withdrawn
    /// from in earlier terms end (this node's log now ends in a later term than theirs).
    pub(crate) fn followed(&self, leader: Leadership) {
        self.state()
            .no_votes
            .retain(|_, (_, term)| *term >= leader.1);
    }

    /// Records an append from `leader` whose blocks passed: the streak ends.
    pub(crate) fn passed(&self, leader: Leadership) {
        let mut s = self.state();
        if s.streak.is_some_and(|(l, _)| l == leader) {
            s.streak = None;
        }
    }

    /// How much longer this follower refuses its vote to `candidate`, if it does.
    pub(crate) fn refuses_vote_for(&self, candidate: u64, now: Instant) -> Option<Duration> {
        let mut s = self.state();
        s.no_votes.retain(|_, (until, _)| *until > now);
        s.no_votes.get(&candidate).map(|(until, _)| *until - now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_follower_withdraws_after_the_failures_in_a_row_and_refuses_that_node_its_vote() {
        let w = Withdrawals::new(3);
        let now = Instant::now();
        let bad = (7, 4);
        assert!(!w.failed(bad, now));
        assert!(!w.failed(bad, now));
        // A passing append ends the streak.
        w.passed(bad);
        assert!(!w.failed(bad, now));
        assert!(!w.failed(bad, now));
        assert!(!w.withdrawn_from(bad));
        assert!(w.failed(bad, now), "the third in a row");
        assert!(w.withdrawn_from(bad));
        assert!(!w.failed(bad, now), "withdrawn once");
        assert!(!w.withdrawn_from((7, 5)), "only from that term");
        assert!(!w.withdrawn_from((8, 4)));
        assert_eq!(w.refuses_vote_for(7, now), Some(VOTE_REFUSAL));
        assert_eq!(w.refuses_vote_for(8, now), None);
        assert_eq!(
            w.refuses_vote_for(7, now + VOTE_REFUSAL),
            None,
            "for a while"
        );
    }

    #[test]
    fn the_vote_refusal_ends_once_a_later_leader_is_followed() {
        let w = Withdrawals::new(1);
        let now = Instant::now();
        assert!(w.failed((7, 4), now));
        w.followed((8, 4));
        assert!(
            w.refuses_vote_for(7, now).is_some(),
            "same term: still refused"
        );
        w.followed((8, 5));
        assert_eq!(w.refuses_vote_for(7, now), None);
    }

    #[test]
    fn failures_of_other_leaders_do_not_add_up() {
        let w = Withdrawals::new(2);
        let now = Instant::now();
        assert!(!w.failed((1, 1), now));
        assert!(!w.failed((2, 2), now));
        assert!(!w.failed((1, 3), now));
        assert!(w.failed((1, 3), now));
    }
}
