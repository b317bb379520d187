//! How long each stage of the ordering pipeline takes, as Prometheus histograms.
//!
//! A block's way through a node: its oldest transaction waits in the leader's mempool
//! (`queue`), the block is proposed and committed by a quorum (`commit`, on the leader),
//! each validator checks it before appending (`verify`, on followers), writes it to its
//! Raft log with a synced write (`log_append`) and, once committed, to its ledger with a
//! synced write (`apply`). When a client sees a slow commit, these say which stage was
//! slow.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the histogram buckets, in seconds (the last bucket, `+Inf`, is implied).
const BOUNDS_S: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// A latency histogram with fixed buckets; cheap enough to observe on every block.
#[derive(Debug, Default)]
pub struct Histogram {
    /// Observations per bucket (not cumulative), the last one for anything above the bounds.
    buckets: [AtomicU64; BOUNDS_S.len() + 1],
    count: AtomicU64,
    sum_ns: AtomicU64,
}

impl Histogram {
    /// Records one duration.
    pub fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        let i = BOUNDS_S.partition_point(|&b| b < s);
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }

    #[cfg(test)]
    /// Number of observations so far.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Appends the histogram in Prometheus' text format.
    pub fn render(&self, name: &str, help: &str, out: &mut String) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0u64;
        for (i, bucket) in self.buckets.iter().enumerate() {
            cumulative += bucket.load(Ordering::Relaxed);
            match BOUNDS_S.get(i) {
                Some(le) => {
                    let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {cumulative}");
                }
                None => {
                    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
                }
            }
        }
        let sum = self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {cumulative}");
    }
}

/// The node's stage histograms.
#[derive(Debug, Default)]
pub struct Timings {
    /// Leader: how long the oldest transaction of each block waited in the mempool.
    pub queue: Histogram,
    /// Leader: from proposing a block to its being applied here (quorum append + commit).
    pub commit: Histogram,
    /// Follower: checking the blocks of one append request before they enter the log.
    pub verify: Histogram,
    /// Every node: one synced write of Raft log entries.
    pub log_append: Histogram,
    /// Every node: one committed block's synced write to the ledger.
    pub apply: Histogram,
}

impl Timings {
    /// Appends every histogram in Prometheus' text format.
    pub fn render(&self, out: &mut String) {
        let rows: [(&str, &str, &Histogram); 5] = [
            (
                "ordo_block_queue_seconds",
                "Time the oldest transaction of each proposed block waited in the mempool.",
                &self.queue,
            ),
            (
                "ordo_block_commit_seconds",
                "Time from proposing a block to applying it, on the leader.",
                &self.commit,
            ),
            (
                "ordo_block_verify_seconds",
                "Time to check the blocks of one append request, on followers.",
                &self.verify,
            ),
            (
                "ordo_raft_log_append_seconds",
                "Time of one synced write of Raft log entries.",
                &self.log_append,
            ),
            (
                "ordo_block_apply_seconds",
                "Time of one committed block's synced write to the ledger.",
                &self.apply,
            ),
        ];
        for (name, help, histogram) in rows {
            histogram.render(name, help, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_cumulative_buckets_with_sum_and_count() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(300)); // ≤ 0.0005
        h.observe(Duration::from_millis(1)); // exactly on the 0.001 bound
        h.observe(Duration::from_millis(30)); // ≤ 0.05
        h.observe(Duration::from_secs(20)); // above every bound
        let mut out = String::new();
        h.render("x_seconds", "X.", &mut out);
        assert!(out.starts_with("# HELP x_seconds X.\n# TYPE x_seconds histogram\n"));
        assert!(out.contains("x_seconds_bucket{le=\"0.0005\"} 1\n"), "{out}");
        assert!(out.contains("x_seconds_bucket{le=\"0.001\"} 2\n"), "{out}");
        assert!(out.contains("x_seconds_bucket{le=\"0.025\"} 2\n"), "{out}");
        assert!(out.contains("x_seconds_bucket{le=\"0.05\"} 3\n"), "{out}");
        assert!(out.contains("x_seconds_bucket{le=\"10\"} 3\n"), "{out}");
        assert!(out.contains("x_seconds_bucket{le=\"+Inf\"} 4\n"), "{out}");
        assert!(out.contains("x_seconds_count 4\n"), "{out}");
        let sum: f64 = out
            .lines()
            .find_map(|l| l.strip_prefix("x_seconds_sum "))
            .expect("sum line")
            .parse()
            .expect("sum is a number");
        assert!((sum - 20.0313).abs() < 1e-9, "{sum}");
        assert_eq!(h.count(), 4);
    }
}
