//! The nemesis, briefly: a few seeded runs of `ordo-nemesis` against real validators in
//! network namespaces (kill -9, SIGSTOP, partitions), every check required to hold.
//!
//! It needs root (namespaces, iptables). Without root it is skipped with a message, unless
//! `ORDO_NEMESIS_REQUIRED=1` (set by CI) makes that a failure.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One nemesis at a time: two at once would load the machine past the stall check.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Whether the nemesis can run here (root); without it, a skip, or a failure in CI.
fn can_run() -> bool {
    if !nix::unistd::Uid::effective().is_root() {
        assert!(
            std::env::var_os("ORDO_NEMESIS_REQUIRED").is_none(),
            "ORDO_NEMESIS_REQUIRED is set, but the nemesis needs root"
        );
        eprintln!("skipped: the nemesis needs root (network namespaces, iptables)");
        return false;
    }
    true
}

/// The namespaces the nemesis with process id `pid` made and left.
fn namespaces_of(pid: u32) -> Vec<String> {
    std::fs::read_dir("/run/netns")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with(&format!("ordo-nem-{pid}-")))
        .collect()
}

/// The mounts at or under `dir`.
fn mounts_under(dir: &Path) -> Vec<String> {
    let dir = dir.canonicalize().expect("dir").display().to_string();
    std::fs::read_to_string("/proc/self/mounts")
        .expect("mounts")
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .filter(|m| m.starts_with(&dir))
        .map(str::to_owned)
        .collect()
}

/// The processes whose command line names `dir` (validators, lazyfs daemons).
fn processes_naming(dir: &Path) -> Vec<String> {
    let dir = dir.display().to_string();
    std::fs::read_dir("/proc")
        .expect("proc")
        .flatten()
        .filter_map(|e| {
            let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            cmdline.contains(&dir).then_some(cmdline)
        })
        .collect()
}

#[test]
fn an_interrupted_run_cleans_up_and_keeps_its_directory() {
    if !can_run() {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().expect("tempdir");
    // Power cuts and full disks: lazyfs mounts on loop-mounted disks, the most to undo.
    let mut child = Command::new(env!("CARGO_BIN_EXE_ordo-nemesis"))
        .args(["--seed", "1", "--seconds", "60", "--faults"])
        .args(["power-cut-random,disk-full", "--dir"])
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ordo-nemesis starts");
    let pid = child.id();
    // Read on a thread of its own: a process that kept the pipe open must not hang the test.
    let (tx, lines) = std::sync::mpsc::channel::<String>();
    let stderr = BufReader::new(child.stderr.take().expect("stderr"));
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut seen = Vec::new();
    while !seen.iter().any(|l: &String| l.contains("faults begin")) {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => seen.push(line),
            Err(_) => panic!("the nemesis never began its faults:\n{}", seen.join("\n")),
        }
    }
    assert!(!namespaces_of(pid).is_empty(), "namespaces while running");
    assert!(!mounts_under(dir.path()).is_empty(), "mounts while running");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .expect("SIGINT");
    let t0 = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if t0.elapsed() > Duration::from_secs(90) {
            let _ = child.kill();
            panic!("the nemesis did not stop within 90 s of SIGINT");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    std::thread::sleep(Duration::from_millis(200));
    let rest: Vec<String> = lines.try_iter().collect();
    assert_eq!(status.code(), Some(130), "{}", rest.join("\n"));
    assert!(
        rest.iter().any(|l| l.contains("interrupted by SIGINT")),
        "{}",
        rest.join("\n")
    );
    assert_eq!(namespaces_of(pid), Vec::<String>::new(), "namespaces left");
    assert_eq!(
        mounts_under(dir.path()),
        Vec::<String>::new(),
        "mounts left"
    );
    assert_eq!(
        processes_naming(dir.path()),
        Vec::<String>::new(),
        "processes left"
    );
    assert!(
        dir.path().join("seed-1").join("genesis.toml").exists(),
        "the run's directory is kept"
    );
}

/// Runs `ordo-nemesis` with `args` (and a directory of its own) to the end, and requires
/// every run to pass; its report, and the namespaces it left.
fn passing_run(args: &[&str]) -> (String, Vec<String>) {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().expect("tempdir");
    let child = Command::new(env!("CARGO_BIN_EXE_ordo-nemesis"))
        .args(args)
        .arg("--dir")
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ordo-nemesis starts");
    let pid = child.id();
    let out = child.wait_with_output().expect("ordo-nemesis runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "the nemesis failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    (stdout, namespaces_of(pid))
}

#[test]
fn short_seeded_runs_keep_every_promise() {
    if !can_run() {
        return;
    }
    let (stdout, left) = passing_run(&["--seed", "1", "--runs", "3", "--seconds", "40"]);
    assert_eq!(stdout.matches(": PASS ·").count(), 3, "{stdout}");
    assert!(left.is_empty(), "namespaces left behind: {left:?}");
}

#[test]
fn a_slow_leader_disk_run_keeps_every_promise() {
    if !can_run() {
        return;
    }
    // Seed 952's first fault slows the leader's fsyncs by 1 s: it must hand over, and the
    // acknowledgements through the others come back. Within 5 s is the promise, measured
    // by the long series (docs/reliability.md: 3.8-4.4 s); one run on a busy machine is
    // given 8 s (it took 5.3 s once), so the suite checks the behaviour, not the figure.
    let (stdout, _) = passing_run(&[
        "--seed",
        "952",
        "--seconds",
        "30",
        "--slow-leader-max",
        "8",
        "--writers",
        "4",
        "--faults",
        "slow-disk-leader",
    ]);
    assert!(stdout.contains("(leader) fsyncs +1000 ms"), "{stdout}");
    assert!(stdout.contains("leadership moved after"), "{stdout}");
}

#[test]
fn a_skewed_clock_run_keeps_block_time_within_its_bound() {
    if !can_run() {
        return;
    }
    // Leaders' and followers' clocks skewed by up to an hour either way: every block is
    // stamped within 10 s of real time, checked in every run.
    let (stdout, _) = passing_run(&[
        "--seed",
        "2601",
        "--seconds",
        "30",
        "--faults",
        "skew-leader,skew-random",
    ]);
    assert!(stdout.contains("skew-leader"), "{stdout}");
    assert!(
        stdout.contains("ok   block time stays within the bound of real time"),
        "{stdout}"
    );
}
