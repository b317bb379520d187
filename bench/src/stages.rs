//! Where the time goes: per-stage latency from the nodes' own histograms
//! (`ordo_block_*_seconds` and `ordo_raft_log_append_seconds` on `/metrics`), read before
//! and after a run and merged over every node that answered; and how many signatures the
//! followers checked ahead of their blocks (`ordo_txs_*` counters on the same page).

use std::collections::HashMap;

use ordo_client::Client;
use ordo_client::api::metrics as m;
use serde::Serialize;

/// The stages, in pipeline order: (short name, metric).
const STAGES: [(&str, &str); 5] = [
    ("queue", m::BLOCK_QUEUE_SECONDS.name),
    ("verify", m::BLOCK_VERIFY_SECONDS.name),
    ("log append", m::RAFT_LOG_APPEND_SECONDS.name),
    ("commit", m::BLOCK_COMMIT_SECONDS.name),
    ("apply", m::BLOCK_APPLY_SECONDS.name),
];

/// The precheck counters: (JSON name, metric).
const COUNTERS: [(&str, &str); 5] = [
    ("forwarded", m::TXS_FORWARDED.name),
    ("announced", m::TXS_ANNOUNCED.name),
    ("checked_ahead", m::TXS_PRECHECKED.name),
    ("left_out_of_blocks", m::BLOCK_SIGNATURES_PRECHECKED.name),
    ("announcements_dropped", m::ANNOUNCEMENTS_DROPPED.name),
];

/// One histogram as exported: cumulative counts by upper bound (seconds), and the sum.
#[derive(Clone, Debug, Default, PartialEq)]
struct Hist {
    buckets: Vec<(f64, u64)>,
    sum: f64,
}

impl Hist {
    fn count(&self) -> u64 {
        self.buckets.last().map_or(0, |b| b.1)
    }

    /// `self - before`, bucket by bucket (a restarted node's counters start again at
    /// zero: then the whole of `self` counts).
    fn since(&self, before: &Hist) -> Hist {
        if before.buckets.len() != self.buckets.len() || before.count() > self.count() {
            return self.clone();
        }
        Hist {
            buckets: self
                .buckets
                .iter()
                .zip(&before.buckets)
                .map(|((le, a), (_, b))| (*le, a.saturating_sub(*b)))
                .collect(),
            sum: self.sum - before.sum,
        }
    }

    fn add(&mut self, other: &Hist) {
        if self.buckets.is_empty() {
            *self = other.clone();
        } else if self.buckets.len() == other.buckets.len() {
            for (a, b) in self.buckets.iter_mut().zip(&other.buckets) {
                a.1 += b.1;
            }
            self.sum += other.sum;
        }
    }

    /// The upper bound (ms) of the bucket holding quantile `q`; `None` above every bound.
    fn quantile_le_ms(&self, q: f64) -> Option<f64> {
        let count = self.count();
        let want = ((count as f64) * q).ceil().max(1.0) as u64;
        self.buckets
            .iter()
            .find(|(_, c)| *c >= want)
            .and_then(|(le, _)| le.is_finite().then_some(le * 1000.0))
    }
}

/// Every stage histogram on one `/metrics` page.
#[derive(Clone, Debug, Default)]
pub(crate) struct Scrape {
    hists: HashMap<String, Hist>,
    counters: HashMap<&'static str, u64>,
}

impl Scrape {
    /// Reads the stage histograms out of Prometheus' text format; other lines are skipped.
    pub(crate) fn parse(text: &str) -> Scrape {
        let mut hists: HashMap<String, Hist> = HashMap::new();
        let mut counters = HashMap::new();
        for line in text.lines() {
            for (name, metric) in COUNTERS {
                if let Some(value) = line.strip_prefix(metric).and_then(|r| r.strip_prefix(' '))
                    && let Ok(value) = value.trim().parse::<u64>()
                {
                    counters.insert(name, value);
                }
            }
            for (_, metric) in STAGES {
                let Some(rest) = line.strip_prefix(metric) else {
                    continue;
                };
                if let Some(rest) = rest.strip_prefix("_bucket{le=\"")
                    && let Some((le, value)) = rest.split_once("\"} ")
                    && let (Ok(le), Ok(value)) = (le.parse::<f64>(), value.trim().parse::<u64>())
                {
                    hists
                        .entry(metric.to_owned())
                        .or_default()
                        .buckets
                        .push((le, value));
                } else if let Some(value) = rest.strip_prefix("_sum ")
                    && let Ok(value) = value.trim().parse::<f64>()
                {
                    hists.entry(metric.to_owned()).or_default().sum = value;
                }
            }
        }
        Scrape { hists, counters }
    }

    /// Reads every node's page; a node that does not answer gives `None`.
    pub(crate) async fn all(clients: &[Client]) -> Vec<Option<Scrape>> {
        let mut out = Vec::with_capacity(clients.len());
        for c in clients {
            out.push(c.metrics().await.ok().map(|t| Scrape::parse(&t)));
        }
        out
    }
}

/// One stage over the run, all nodes together.
#[derive(Debug, Serialize)]
pub(crate) struct Stage {
    stage: &'static str,
    /// Observations (blocks, or append requests) during the run.
    count: u64,
    mean_ms: f64,
    /// Upper bounds of the histogram buckets holding the quantile; `null` above 10 s.
    p50_le_ms: Option<f64>,
    p99_le_ms: Option<f64>,
    max_le_ms: Option<f64>,
}

/// The stages' latency between two scrapes of the same nodes.
pub(crate) fn between(before: &[Option<Scrape>], after: &[Option<Scrape>]) -> Vec<Stage> {
    STAGES
        .iter()
        .filter_map(|(stage, metric)| {
            let mut total = Hist::default();
            for (b, a) in before.iter().zip(after) {
                let (Some(b), Some(a)) = (b, a) else { continue };
                let Some(after) = a.hists.get(*metric) else {
                    continue;
                };
                total.add(&after.since(b.hists.get(*metric).unwrap_or(&Hist::default())));
            }
            let count = total.count();
            (count > 0).then(|| Stage {
                stage,
                count,
                mean_ms: total.sum / count as f64 * 1000.0,
                p50_le_ms: total.quantile_le_ms(0.5),
                p99_le_ms: total.quantile_le_ms(0.99),
                max_le_ms: total.quantile_le_ms(1.0),
            })
        })
        .collect()
}

/// What the followers checked ahead of their blocks during the run, all nodes together
/// (counters of nodes that answered both scrapes; a restarted node's count from zero).
#[derive(Debug, Default, Serialize, PartialEq)]
pub(crate) struct Prechecks {
    /// Transactions forwarded by followers to the leader.
    forwarded: u64,
    /// Transactions the leader announced (once per follower).
    announced: u64,
    /// Announced signatures the followers verified ahead of their blocks.
    checked_ahead: u64,
    /// Block signatures the followers did not verify again: they had checked them ahead.
    left_out_of_blocks: u64,
    /// Announcements dropped on either side: a leader's outbox full (counted per
    /// follower), not delivered, or on a follower a full queue, one from a node it does
    /// not know as leader, one that did not decode or did not verify.
    announcements_dropped: u64,
}

/// The precheck counters' growth between two scrapes of the same nodes.
pub(crate) fn prechecks_between(before: &[Option<Scrape>], after: &[Option<Scrape>]) -> Prechecks {
    let mut sum: HashMap<&str, u64> = HashMap::new();
    for (b, a) in before.iter().zip(after) {
        let (Some(b), Some(a)) = (b, a) else { continue };
        for (name, _) in COUNTERS {
            let now = a.counters.get(name).copied().unwrap_or(0);
            let then = b.counters.get(name).copied().unwrap_or(0);
            let grown = if then > now { now } else { now - then };
            *sum.entry(name).or_default() += grown;
        }
    }
    let get = |name: &str| sum.get(name).copied().unwrap_or(0);
    Prechecks {
        forwarded: get("forwarded"),
        announced: get("announced"),
        checked_ahead: get("checked_ahead"),
        left_out_of_blocks: get("left_out_of_blocks"),
        announcements_dropped: get("announcements_dropped"),
    }
}

/// Prints the precheck counters: `block_signatures` is how many block signatures the
/// followers had to judge (committed transactions × followers). The share is approximate:
/// blocks Raft sends again, and blocks outside the run, count too, so it can pass 100 %.
pub(crate) fn print_prechecks(p: &Prechecks, block_signatures: u64) {
    if p.announced == 0 && p.forwarded == 0 {
        return;
    }
    let share = if block_signatures == 0 {
        0.0
    } else {
        p.left_out_of_blocks as f64 * 100.0 / block_signatures as f64
    };
    println!(
        "prechecks     {} forwarded to the leader, {} announced, {} checked ahead, {} dropped announcements; \
         {} block signatures ({share:.0} % of the followers') not checked again",
        p.forwarded, p.announced, p.checked_ahead, p.announcements_dropped, p.left_out_of_blocks
    );
}

/// Prints the stages as a table.
pub(crate) fn print(stages: &[Stage]) {
    if stages.is_empty() {
        return;
    }
    let le = |v: Option<f64>| v.map_or_else(|| "> 10 s".to_owned(), |ms| format!("≤ {ms}"));
    println!(
        "stages        {:<11} {:>8} {:>9} {:>10} {:>10} {:>10}",
        "(all nodes)", "count", "mean ms", "p50 ms", "p99 ms", "max ms"
    );
    for s in stages {
        println!(
            "              {:<11} {:>8} {:>9.1} {:>10} {:>10} {:>10}",
            s.stage,
            s.count,
            s.mean_ms,
            le(s.p50_le_ms),
            le(s.p99_le_ms),
            le(s.max_le_ms)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(apply: [u64; 3], sum: f64) -> String {
        format!(
            "# HELP ordo_tip_height x\nordo_tip_height 7\n\
             # TYPE ordo_block_apply_seconds histogram\n\
             ordo_block_apply_seconds_bucket{{le=\"0.005\"}} {}\n\
             ordo_block_apply_seconds_bucket{{le=\"0.1\"}} {}\n\
             ordo_block_apply_seconds_bucket{{le=\"+Inf\"}} {}\n\
             ordo_block_apply_seconds_sum {sum}\n\
             ordo_block_apply_seconds_count {}\n",
            apply[0], apply[1], apply[2], apply[2]
        )
    }

    #[test]
    fn stages_are_the_difference_of_two_scrapes_merged_over_nodes() {
        let before = vec![
            Some(Scrape::parse(&page([10, 10, 10], 0.02))),
            None,
            Some(Scrape::parse(&page([0, 0, 0], 0.0))),
        ];
        let after = vec![
            // 99 more fast writes and one slow one.
            Some(Scrape::parse(&page([109, 110, 110], 0.42))),
            Some(Scrape::parse(&page([5, 5, 5], 0.01))),
            // 100 writes, two above 0.1 s.
            Some(Scrape::parse(&page([90, 98, 100], 1.0))),
        ];
        let stages = between(&before, &after);
        assert_eq!(stages.len(), 1, "only the stage with observations");
        let s = &stages[0];
        assert_eq!(s.stage, "apply");
        assert_eq!(s.count, 200, "the node without a first scrape is left out");
        assert!((s.mean_ms - 1.4 / 200.0 * 1000.0).abs() < 1e-9);
        assert_eq!(s.p50_le_ms, Some(5.0));
        assert_eq!(s.p99_le_ms, Some(100.0));
        assert_eq!(s.max_le_ms, None, "two writes above every bound");
    }

    #[test]
    fn prechecks_are_the_growth_of_the_counters_summed_over_nodes() {
        let counters = |announced: u64, hits: u64| {
            format!(
                "# TYPE ordo_txs_announced_total counter\n\
                 ordo_txs_announced_total {announced}\n\
                 ordo_txs_announced_totally_different 99\n\
                 ordo_block_signatures_prechecked_total {hits}\n"
            )
        };
        let before = vec![
            Some(Scrape::parse(&counters(100, 0))),
            Some(Scrape::parse(&counters(0, 40))),
            None,
        ];
        let after = vec![
            Some(Scrape::parse(&counters(400, 0))),
            // Restarted: counts from zero.
            Some(Scrape::parse(&counters(0, 25))),
            Some(Scrape::parse(&counters(1000, 1000))),
        ];
        let p = prechecks_between(&before, &after);
        assert_eq!(
            p,
            Prechecks {
                announced: 300,
                left_out_of_blocks: 25,
                ..Prechecks::default()
            }
        );
    }

    #[test]
    fn a_restarted_node_counts_from_zero() {
        let before = Scrape::parse(&page([50, 50, 50], 1.0));
        let after = Scrape::parse(&page([3, 4, 4], 0.2));
        let h = &after.hists["ordo_block_apply_seconds"];
        assert_eq!(
            h.since(&before.hists["ordo_block_apply_seconds"]).count(),
            4
        );
    }
}
