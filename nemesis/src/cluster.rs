//! The validators of a run, each an `ordo node run` process in its own namespace, and the
//! faults done to them: what is killed, paused and cut off now, and whether a majority is
//! still up and connected.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};

use ordo_harness::Net;

use crate::damage;
use crate::disk::Disk;
use crate::history::{Event, History};
use crate::lazy::Lazy;
use crate::netns::Topology;
use crate::schedule::{FaultKind, Rng, Step, skew_seconds};

/// The validators and what is being done to them.
pub struct Cluster {
    /// The network (its processes are killed when it is dropped, before the disks are
    /// unmounted and the namespaces removed).
    pub net: Net,
    /// Each validator's lazy filesystem, when the run cuts power (unmounted before the
    /// disks).
    lazies: Vec<Lazy>,
    /// Each validator's own disk, when the run fills disks.
    disks: Vec<Disk>,
    topology: Topology,
    bin: PathBuf,
    history: History,
    /// Killed by the nemesis, not restarted yet.
    down: Vec<bool>,
    /// Stopped by SIGSTOP.
    paused: Vec<bool>,
    /// Disk filled by the nemesis.
    full: Vec<bool>,
    /// Ledger files damaged by the nemesis (at any time in the run).
    damaged: Vec<bool>,
    /// `deaf[i]`: the validators validator `i` hears nothing from.
    deaf: Vec<BTreeSet<usize>>,
    /// Each validator's libfaketime offset file, when they run under a fake clock.
    clocks: Vec<PathBuf>,
    /// Each validator's fsync delay file, when they run with `libordo_slowdisk.so`.
    slow_files: Vec<PathBuf>,
    available: bool,
}

/// A fault in force, and how to end it.
#[derive(Debug)]
pub enum Active {
    /// Validator killed: restart it.
    Killed(usize),
    /// Validator paused: resume it.
    Paused(usize),
    /// Partition: heal it.
    Partitioned,
    /// Validator's clock set off: set it right.
    Skewed(usize),
    /// Validator's disk filled: free it (and restart the validator if it stopped).
    Filled(usize),
    /// Validators' power cut: mount their filesystems again and start them.
    PowerCut(Vec<usize>),
    /// Validator stopped and its files damaged: start it.
    Corrupted(usize),
    /// Validator signing its blocks wrongly: stop that.
    InvalidBlocks(usize),
    /// Validator's fsyncs delayed: make them prompt again.
    Slowed(usize),
}

/// Beside each validator's config: the file that, while it exists, makes `ordo-faulty`
/// sign its blocks wrongly (`ordo_node::faults`).
const INVALID_BLOCKS_FILE: &str = "fault-invalid-blocks";

/// How long a validator stopped by SIGTERM may take to exit before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(30);

/// The environment variables that run a validator under libfaketime (`library`), its wall
/// clock offset by what `file` holds (`+0`, `-42`, `+3600`: seconds), re-read every
/// second. Monotonic clocks, which Raft's timers use, stay true.
fn fake_clock_env(library: &Path, file: &Path) -> Vec<(std::ffi::OsString, std::ffi::OsString)> {
    [
        ("LD_PRELOAD", library.as_os_str()),
        ("FAKETIME_TIMESTAMP_FILE", file.as_os_str()),
        ("FAKETIME_CACHE_DURATION", "1".as_ref()),
        ("FAKETIME_DONT_FAKE_MONOTONIC", "1".as_ref()),
    ]
    .into_iter()
    .map(|(k, v)| (k.into(), v.to_owned()))
    .collect()
}

/// Sets the fsync delay in `file` (read by `libordo_slowdisk.so`) to `ms` milliseconds.
fn set_slow_disk(file: &Path, ms: u64) -> anyhow::Result<()> {
    // Written whole and renamed, so the library never reads half a number.
    let tmp = file.with_extension("tmp");
    std::fs::write(&tmp, format!("{ms}\n"))
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, file).with_context(|| format!("cannot rename to {}", file.display()))
}

/// Adds `library` to the libraries `env` preloads.
fn preload(env: &mut Vec<(std::ffi::OsString, std::ffi::OsString)>, library: &Path) {
    match env.iter_mut().find(|(k, _)| k == "LD_PRELOAD") {
        Some((_, v)) => {
            v.push(" ");
            v.push(library);
        }
        None => env.push(("LD_PRELOAD".into(), library.into())),
    }
}

/// Sets the offset in `file` to `seconds`.
fn set_clock(file: &Path, seconds: i64) -> anyhow::Result<()> {
    let text = format!("{}{seconds}\n", if seconds >= 0 { "+" } else { "" });
    // Written whole and renamed, so libfaketime never reads half a line.
    let tmp = file.with_extension("tmp");
    std::fs::write(&tmp, text).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, file).with_context(|| format!("cannot rename to {}", file.display()))
}

impl Cluster {
    /// The validators of `net`, run with `bin` inside `topology`'s namespaces (not started),
    /// under libfaketime when `fake_clock` names the library, their data on `disks` when
    /// there are any (one per validator, holding its data directory), under `lazies` when
    /// there are any (likewise), with `slow_disk` (`libordo_slowdisk.so`) preloaded when
    /// it names the library.
    ///
    /// # Errors
    /// When a clock or delay file cannot be written.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        mut net: Net,
        lazies: Vec<Lazy>,
        disks: Vec<Disk>,
        topology: Topology,
        bin: PathBuf,
        history: History,
        fake_clock: Option<&Path>,
        slow_disk: Option<&Path>,
    ) -> anyhow::Result<Cluster> {
        let n = net.nodes.len();
        let mut clocks = Vec::new();
        let mut slow_files = Vec::new();
        for (i, node) in net.nodes.iter_mut().enumerate() {
            node.launcher = topology.launcher(i);
            if let Some(library) = fake_clock {
                let file = node.config.with_file_name("clock-offset");
                set_clock(&file, 0)?;
                node.env = fake_clock_env(library, &file);
                clocks.push(file);
            }
            if let Some(library) = slow_disk {
                let file = node.config.with_file_name("fsync-delay-ms");
                set_slow_disk(&file, 0)?;
                preload(&mut node.env, library);
                node.env
                    .push(("ORDO_SLOWDISK_FILE".into(), file.clone().into()));
                slow_files.push(file);
            }
            // Read only by `ordo-faulty`; `ordo` has no such fault.
            node.env.push((
                "ORDO_FAULT_INVALID_BLOCKS".into(),
                node.config.with_file_name(INVALID_BLOCKS_FILE).into(),
            ));
        }
        Ok(Cluster {
            net,
            lazies,
            disks,
            topology,
            bin,
            history,
            down: vec![false; n],
            paused: vec![false; n],
            full: vec![false; n],
            damaged: vec![false; n],
            deaf: vec![BTreeSet::new(); n],
            clocks,
            slow_files,
            available: false,
        })
    }

    /// How many validators.
    pub fn len(&self) -> usize {
        self.net.nodes.len()
    }

    /// Starts every validator.
    ///
    /// # Errors
    /// When a process cannot be started.
    pub fn start_all(&mut self) -> anyhow::Result<()> {
        self.net.start_all(&self.bin)?;
        self.note();
        Ok(())
    }

    /// Starts the fault of `step`; `leader` is the validator that leads now, if known.
    ///
    /// # Errors
    /// When a process cannot be signalled or started, or a rule not set.
    pub fn begin(&mut self, step: &Step, leader: Option<usize>) -> anyhow::Result<Active> {
        let n = self.len();
        let mut rng = Rng::new(step.pick);
        let random = rng.below(n as u64) as usize;
        let leader_or_random = leader.unwrap_or(random);
        // The one validator a single-target fault hits.
        let target = if step.kind.targets_leader() {
            leader_or_random
        } else {
            random
        };
        let (active, what) = match step.kind {
            FaultKind::KillRandom | FaultKind::KillLeader => {
                let i = target;
                self.net.nodes[i].kill();
                self.down[i] = true;
                (Active::Killed(i), format!("validator-{i} killed"))
            }
            FaultKind::PauseRandom | FaultKind::PauseLeader => {
                let i = target;
                self.net.nodes[i].pause();
                self.paused[i] = true;
                (Active::Paused(i), format!("validator-{i} paused"))
            }
            FaultKind::PartitionLeader => {
                let l = leader_or_random;
                let rest: Vec<usize> = (0..n).filter(|&j| j != l).collect();
                self.cut(&[l], &rest)?;
                (
                    Active::Partitioned,
                    format!("{} | {}", set(&[l]), set(&rest)),
                )
            }
            FaultKind::PartitionFollowers => {
                let mut followers: Vec<usize> = (0..n).filter(|&j| j != leader_or_random).collect();
                shuffle(&mut followers, &mut rng);
                let cut_off = followers.split_off(followers.len() - (n - 1) / 2);
                let mut rest = followers;
                rest.push(leader_or_random);
                rest.sort_unstable();
                self.cut(&cut_off, &rest)?;
                (
                    Active::Partitioned,
                    format!("{} | {}", set(&cut_off), set(&rest)),
                )
            }
            FaultKind::PartitionHalves => {
                let mut all: Vec<usize> = (0..n).collect();
                shuffle(&mut all, &mut rng);
                let minority = all.split_off(n / 2 + 1);
                self.cut(&all, &minority)?;
                (
                    Active::Partitioned,
                    format!("{} | {}", set(&all), set(&minority)),
                )
            }
            FaultKind::PartitionOneWay => {
                let others: BTreeSet<usize> = (0..n).filter(|&j| j != random).collect();
                self.topology.set_deaf_to(random, &others)?;
                self.deaf[random] = others;
                (
                    Active::Partitioned,
                    format!("validator-{random} hears nothing from the others"),
                )
            }
            FaultKind::PartitionBridge => {
                let mut rest: Vec<usize> = (0..n).filter(|&j| j != random).collect();
                shuffle(&mut rest, &mut rng);
                let other = rest.split_off(rest.len() / 2);
                self.cut(&rest, &other)?;
                (
                    Active::Partitioned,
                    format!(
                        "{} | {} | {} (the middle sees both)",
                        set(&rest),
                        set(&[random]),
                        set(&other)
                    ),
                )
            }
            FaultKind::SkewRandom | FaultKind::SkewLeader => {
                let i = target;
                let seconds = skew_seconds(&mut rng);
                let file = self
                    .clocks
                    .get(i)
                    .context("the validators do not run under a fake clock")?;
                set_clock(file, seconds)?;
                (
                    Active::Skewed(i),
                    format!("validator-{i}'s clock {seconds:+} s"),
                )
            }
            FaultKind::DiskFull => {
                let disk = self
                    .disks
                    .get(random)
                    .context("the validators do not have disks of their own")?;
                let taken = disk.fill()?;
                self.full[random] = true;
                // RocksDB preallocates its write-ahead log, so a running node may not meet
                // the full disk for a minute; a restart on it must (new log, new manifest).
                self.restart(random)?;
                (
                    Active::Filled(random),
                    format!(
                        "validator-{random}'s disk full ({} MiB taken), validator-{random} restarted on it",
                        taken >> 20
                    ),
                )
            }
            FaultKind::PowerCutRandom | FaultKind::PowerCutAll => {
                let targets: Vec<usize> = if step.kind == FaultKind::PowerCutAll {
                    (0..n).collect()
                } else {
                    vec![random]
                };
                if self.lazies.is_empty() {
                    bail!("the validators' data is not under ordo-lazyfs");
                }
                let mut cuts = Vec::new();
                for &i in &targets {
                    self.net.nodes[i].kill();
                    self.down[i] = true;
                }
                for &i in &targets {
                    cuts.push(format!("validator-{i} {}", self.lazies[i].cut()?));
                }
                (
                    Active::PowerCut(targets),
                    format!("power cut: {}", cuts.join("; ")),
                )
            }
            FaultKind::InvalidBlocksLeader => {
                let i = target;
                let file = self.invalid_blocks_file(i);
                std::fs::write(&file, b"")
                    .with_context(|| format!("cannot write {}", file.display()))?;
                (
                    Active::InvalidBlocks(i),
                    format!("validator-{i} signs its blocks wrongly"),
                )
            }
            FaultKind::SlowDiskLeader | FaultKind::SlowDiskFollower => {
                let i = if step.kind == FaultKind::SlowDiskLeader {
                    target
                } else {
                    // A follower: any validator but the leader.
                    let followers: Vec<usize> = (0..n).filter(|&j| Some(j) != leader).collect();
                    followers[rng.below(followers.len() as u64) as usize]
                };
                let delays = crate::schedule::SLOW_DISK_DELAYS_MS;
                let ms = delays[rng.below(delays.len() as u64) as usize];
                let file = self
                    .slow_files
                    .get(i)
                    .context("the validators do not run with libordo_slowdisk.so")?;
                set_slow_disk(file, ms)?;
                self.history.push(Event::DiskSlowed {
                    at: self.history.now(),
                    node: i,
                    leader: leader == Some(i),
                    delay_ms: ms,
                });
                (
                    Active::Slowed(i),
                    format!(
                        "validator-{i}{}'s fsyncs take {ms} ms more",
                        if leader == Some(i) { " (leader)" } else { "" }
                    ),
                )
            }
            FaultKind::CorruptRandom => {
                let i = target;
                let graceful = rng.below(2) == 0;
                self.stop(i, graceful);
                self.down[i] = true;
                let how = if graceful { "SIGTERM" } else { "SIGKILL" };
                let files = damage::ledger_table_files_apart(&self.net.nodes[i].data_dir);
                let done = match files.and_then(|f| damage::damage_one(f, &mut rng)) {
                    Ok(Some(d)) => {
                        self.damaged[i] = true;
                        d.to_string()
                    }
                    Ok(None) => "no ledger table file to damage yet".to_owned(),
                    // What keeps the files from being listed is the node's to meet.
                    Err(e) => format!("nothing damaged: {e:#}"),
                };
                (
                    Active::Corrupted(i),
                    format!("validator-{i} stopped ({how}); {done}"),
                )
            }
        };
        self.history.push(Event::FaultStart {
            at: self.history.now(),
            kind: step.kind.name(),
            what,
        });
        self.note();
        Ok(active)
    }

    /// Ends `active`, the fault of `kind`.
    ///
    /// # Errors
    /// As [`Cluster::begin`].
    pub fn end(&mut self, kind: FaultKind, active: Active) -> anyhow::Result<()> {
        match active {
            Active::Killed(i) => self.restart(i)?,
            Active::Paused(i) => {
                self.net.nodes[i].resume();
                self.paused[i] = false;
            }
            Active::Partitioned => self.heal_network()?,
            Active::Skewed(i) => set_clock(&self.clocks[i], 0)?,
            Active::Filled(i) => self.free_disk(i)?,
            Active::PowerCut(targets) => {
                for i in targets {
                    self.lazies[i].remount()?;
                    self.restart(i)?;
                }
            }
            Active::Corrupted(i) => self.restart(i)?,
            Active::InvalidBlocks(i) => self.valid_blocks(i)?,
            Active::Slowed(i) => set_slow_disk(&self.slow_files[i], 0)?,
        }
        self.history.push(Event::FaultEnd {
            at: self.history.now(),
            kind: kind.name(),
        });
        self.note();
        Ok(())
    }

    /// Ends every fault: resumes, restarts, heals.
    ///
    /// # Errors
    /// As [`Cluster::begin`].
    pub fn heal_all(&mut self) -> anyhow::Result<()> {
        for i in 0..self.len() {
            if let Some(lazy) = self.lazies.get_mut(i) {
                lazy.remount()?;
            }
            if self.full[i] {
                self.free_disk(i)?;
            }
            if self.paused[i] {
                self.net.nodes[i].resume();
                self.paused[i] = false;
            }
            if self.down[i] {
                self.restart(i)?;
            }
        }
        self.heal_network()?;
        for file in &self.clocks {
            set_clock(file, 0)?;
        }
        for file in &self.slow_files {
            set_slow_disk(file, 0)?;
        }
        for i in 0..self.len() {
            self.valid_blocks(i)?;
        }
        self.note();
        Ok(())
    }

    fn invalid_blocks_file(&self, i: usize) -> PathBuf {
        self.net.nodes[i].config.with_file_name(INVALID_BLOCKS_FILE)
    }

    /// Ends validator `i`'s invalid blocks.
    fn valid_blocks(&self, i: usize) -> anyhow::Result<()> {
        let file = self.invalid_blocks_file(i);
        match std::fs::remove_file(&file) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).with_context(|| format!("cannot remove {}", file.display())),
        }
    }

    /// Records and restarts every validator that exited although nothing stopped it; one
    /// that exits while its disk is full is recorded apart and restarted once the space is
    /// freed.
    ///
    /// # Errors
    /// When one cannot be restarted.
    pub fn restart_crashed(&mut self) -> anyhow::Result<()> {
        for i in 0..self.len() {
            if self.down[i] {
                continue;
            }
            if let Some(status) = self.net.nodes[i].exited() {
                let detail = format!("{status}; log:\n{}", self.net.nodes[i].log_tail(15));
                if self.full[i] {
                    self.history.push(Event::StoppedOnFullDisk {
                        at: self.history.now(),
                        node: i,
                        detail,
                    });
                    self.down[i] = true;
                    self.note();
                    continue;
                }
                self.history.push(Event::Crashed {
                    at: self.history.now(),
                    node: i,
                    detail,
                });
                self.restart(i)?;
            }
        }
        Ok(())
    }

    fn restart(&mut self, i: usize) -> anyhow::Result<()> {
        self.net.nodes[i].kill();
        self.net.nodes[i].start(&self.bin)?;
        self.down[i] = false;
        self.paused[i] = false;
        Ok(())
    }

    /// Stops validator `i`: SIGTERM (killed if it has not exited within [`STOP_GRACE`])
    /// when `graceful`, else SIGKILL. Blocks the thread meanwhile.
    fn stop(&mut self, i: usize, graceful: bool) {
        let node = &mut self.net.nodes[i];
        if graceful {
            node.sigterm();
            node.wait_exit_blocking(STOP_GRACE);
        }
        node.kill();
    }

    /// Stops validator `i` with SIGTERM and starts it again (a tidy restart: the
    /// supervisor, which waits for this lock, never sees it gone).
    ///
    /// # Errors
    /// When it cannot be started.
    pub fn restart_gracefully(&mut self, i: usize) -> anyhow::Result<()> {
        self.stop(i, true);
        self.restart(i)
    }

    /// The validators whose ledger files the nemesis damaged.
    pub fn damaged(&self) -> Vec<usize> {
        (0..self.len()).filter(|&i| self.damaged[i]).collect()
    }

    /// Frees validator `i`'s disk and restarts it if it stopped meanwhile.
    fn free_disk(&mut self, i: usize) -> anyhow::Result<()> {
        self.disks[i].free()?;
        self.full[i] = false;
        if self.down[i] {
            self.restart(i)?;
        }
        Ok(())
    }

    /// Cuts `a` and `b` off from each other, both ways.
    fn cut(&mut self, a: &[usize], b: &[usize]) -> anyhow::Result<()> {
        for (side, other) in [(a, b), (b, a)] {
            for &i in side {
                self.deaf[i].extend(other.iter().copied());
                self.topology.set_deaf_to(i, &self.deaf[i])?;
            }
        }
        Ok(())
    }

    fn heal_network(&mut self) -> anyhow::Result<()> {
        for i in 0..self.len() {
            if !self.deaf[i].is_empty() {
                self.deaf[i].clear();
                self.topology.set_deaf_to(i, &self.deaf[i])?;
            }
        }
        Ok(())
    }

    /// Records a change of [`Cluster::majority_available`].
    fn note(&mut self) {
        let now = majority_available(&self.down, &self.paused, &self.deaf);
        if now != self.available {
            self.available = now;
            self.history.push(Event::Majority {
                at: self.history.now(),
                available: now,
            });
        }
    }
}

/// Whether some majority of the validators runs, unpaused, every two of them hearing each
/// other.
pub fn majority_available(down: &[bool], paused: &[bool], deaf: &[BTreeSet<usize>]) -> bool {
    let n = down.len();
    let up: Vec<usize> = (0..n).filter(|&i| !down[i] && !paused[i]).collect();
    let hear = |i: usize, j: usize| !deaf[i].contains(&j) && !deaf[j].contains(&i);
    (0u32..1 << up.len()).any(|mask| {
        let members: Vec<usize> = (0..up.len())
            .filter(|b| mask & (1 << b) != 0)
            .map(|b| up[b])
            .collect();
        members.len() > n / 2
            && members
                .iter()
                .all(|&i| members.iter().all(|&j| i == j || hear(i, j)))
    })
}

fn shuffle(v: &mut [usize], rng: &mut Rng) {
    for i in (1..v.len()).rev() {
        v.swap(i, rng.below(i as u64 + 1) as usize);
    }
}

fn set(members: &[usize]) -> String {
    let names: Vec<String> = members.iter().map(usize::to_string).collect();
    format!("{{{}}}", names.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deaf(pairs: &[(usize, usize)], n: usize) -> Vec<BTreeSet<usize>> {
        let mut d = vec![BTreeSet::new(); n];
        for &(i, j) in pairs {
            d[i].insert(j);
        }
        d
    }

    #[test]
    fn a_majority_needs_enough_live_validators_that_hear_each_other() {
        let none = [false; 3];
        assert!(majority_available(&none, &none, &deaf(&[], 3)));
        assert!(majority_available(
            &[true, false, false],
            &none,
            &deaf(&[], 3)
        ));
        assert!(!majority_available(
            &[true, false, false],
            &[false, true, false],
            &deaf(&[], 3)
        ));
        // A one-way cut between the two survivors breaks their pair.
        assert!(!majority_available(
            &[true, false, false],
            &none,
            &deaf(&[(1, 2)], 3)
        ));
        // The bridge: 1 hears 0 and 2, which do not hear each other.
        assert!(majority_available(
            &none,
            &none,
            &deaf(&[(0, 2), (2, 0)], 3)
        ));
        // Everyone cut from everyone.
        let all: Vec<(usize, usize)> = (0..3)
            .flat_map(|i| (0..3).filter(move |&j| j != i).map(move |j| (i, j)))
            .collect();
        assert!(!majority_available(&none, &none, &deaf(&all, 3)));
        // Five validators: two up are not a majority.
        let five = [true, true, true, false, false];
        assert!(!majority_available(&five, &[false; 5], &deaf(&[], 5)));
    }

    #[test]
    fn shuffles_are_permutations() {
        let mut rng = Rng::new(9);
        for _ in 0..100 {
            let mut v: Vec<usize> = (0..5).collect();
            shuffle(&mut v, &mut rng);
            let mut sorted = v.clone();
            sorted.sort_unstable();
            assert_eq!(sorted, (0..5).collect::<Vec<_>>());
        }
    }
}
