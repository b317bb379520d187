//! What every measurement reports the same way: latency percentiles, a steady-state rate,
//! per-second figures, and the JSON result file.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;

use crate::Failure;

/// Shortest span of commits from which a steady-state rate is computed, in seconds.
const STEADY_WINDOW_MIN: f64 = 1.0;

/// Latency percentiles in milliseconds.
#[derive(Debug, Default, Serialize)]
pub(crate) struct Latency {
    pub(crate) p50: f64,
    pub(crate) p95: f64,
    pub(crate) p99: f64,
    pub(crate) max: f64,
}

impl Latency {
    /// Percentiles of `sorted` (ascending milliseconds); zeros when it is empty.
    pub(crate) fn of_sorted(sorted: &[f64]) -> Latency {
        Latency {
            p50: percentile(sorted, 0.5),
            p95: percentile(sorted, 0.95),
            p99: percentile(sorted, 0.99),
            max: sorted.last().copied().unwrap_or(0.0),
        }
    }

    /// One line: `p50 … p95 … p99 … max …`.
    pub(crate) fn line(&self) -> String {
        format!(
            "p50 {:.1} ms  p95 {:.1} ms  p99 {:.1} ms  max {:.1} ms",
            self.p50, self.p95, self.p99, self.max
        )
    }
}

/// The value at quantile `p` of `sorted` (nearest rank); 0 when it is empty.
pub(crate) fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

/// Events per second in the steady state: the middle 80 % of `times` (seconds, sorted),
/// when they span at least [`STEADY_WINDOW_MIN`] (commits arrive a block at a time);
/// otherwise `overall`.
pub(crate) fn steady_rate(times: &[f64], overall: f64) -> f64 {
    match (times.len() >= 10).then(|| (percentile(times, 0.1), percentile(times, 0.9))) {
        Some((t10, t90)) if t90 - t10 >= STEADY_WINDOW_MIN => {
            0.8 * times.len() as f64 / (t90 - t10)
        }
        _ => overall,
    }
}

/// Commits and their latency in one second of the run.
#[derive(Debug, Serialize)]
pub(crate) struct Second {
    /// Seconds since the start (the commits seen in `[t, t + 1)`).
    pub(crate) t: u64,
    pub(crate) committed: usize,
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) max_ms: f64,
}

/// Groups `(commit time, latency)` pairs by second since `start`.
pub(crate) fn per_second(commits: &[(Instant, Duration)], start: Instant) -> Vec<Second> {
    let mut by: BTreeMap<u64, Vec<f64>> = BTreeMap::new();
    for (at, latency) in commits {
        by.entry(at.saturating_duration_since(start).as_secs())
            .or_default()
            .push(latency.as_secs_f64() * 1000.0);
    }
    by.into_iter()
        .map(|(t, mut lat)| {
            lat.sort_by(f64::total_cmp);
            Second {
                t,
                committed: lat.len(),
                p50_ms: percentile(&lat, 0.5),
                p99_ms: percentile(&lat, 0.99),
                max_ms: lat.last().copied().unwrap_or(0.0),
            }
        })
        .collect()
}

/// Writes a result as pretty JSON to `path` (`-` for stdout).
pub(crate) fn write_json(path: &Path, value: &impl Serialize) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(value).context("encode result")?;
    if path.as_os_str() == "-" {
        println!("{text}");
    } else {
        std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

/// Writes the result to `json` when asked, and fails the run when fewer than `expected`
/// writes were `done` (`what`: "transactions committed", "puts acknowledged").
pub(crate) fn settle(
    json: Option<&Path>,
    result: &impl Serialize,
    done: usize,
    expected: usize,
    what: &str,
) -> Result<(), Failure> {
    if let Some(path) = json {
        write_json(path, result)?;
    }
    if done < expected {
        return Err(Failure::Incomplete(format!(
            "only {done} of {expected} {what}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_and_the_steady_rate() {
        let sorted: Vec<f64> = (1..=100).map(f64::from).collect();
        let l = Latency::of_sorted(&sorted);
        assert_eq!((l.p50, l.p99, l.max), (51.0, 99.0, 100.0));
        assert_eq!(Latency::of_sorted(&[]).max, 0.0);
        // 100 events evenly over 10 s: 10 per second, whatever the overall rate says.
        let times: Vec<f64> = (0..100).map(|i| f64::from(i) / 10.0).collect();
        assert!((steady_rate(&times, 1.0) - 10.1).abs() < 0.2);
        // Too short a span: the overall rate.
        assert_eq!(steady_rate(&[0.0; 20], 7.0), 7.0);
    }
}
