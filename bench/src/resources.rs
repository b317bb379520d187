//! What a local process used, from `/proc`, and how much a directory holds.

use std::path::Path;

use serde::Serialize;

/// One process's resource use during a run.
#[derive(Debug, Serialize)]
pub(crate) struct Usage {
    /// CPU time over the run's wall time, in cores.
    pub(crate) cpu_cores: f64,
    /// Its peak resident memory.
    pub(crate) peak_rss_bytes: u64,
}

/// CPU seconds (user + system) and peak RSS of a local process, from /proc.
pub(crate) fn proc_use(pid: u32) -> Option<(f64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let hwm_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    // Linux reports CPU time in clock ticks of 1/100 s on every common configuration.
    Some((ticks / 100.0, hwm_kb * 1024))
}

/// What a process used between a `before` reading of [`proc_use`] and now, over
/// `elapsed_s` seconds.
pub(crate) fn usage_since(pid: Option<u32>, before: Option<(f64, u64)>, elapsed_s: f64) -> Usage {
    let now = pid.and_then(proc_use);
    let cpu_cores = match (before, now) {
        (Some((b, _)), Some((e, _))) if elapsed_s > 0.0 => (e - b) / elapsed_s,
        _ => 0.0,
    };
    Usage {
        cpu_cores,
        peak_rss_bytes: now.map_or(0, |(_, rss)| rss),
    }
}

/// Bytes of the files under `path`.
pub(crate) fn dir_bytes(path: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_uses_some_memory_and_a_directory_adds_up() {
        let (cpu, rss) = proc_use(std::process::id()).expect("/proc");
        assert!(cpu >= 0.0 && rss > 0);
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("sub")).expect("sub");
        std::fs::write(dir.path().join("a"), [0; 10]).expect("a");
        std::fs::write(dir.path().join("sub/b"), [0; 5]).expect("b");
        assert_eq!(dir_bytes(dir.path()), 15);
    }
}
