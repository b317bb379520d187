//! The nemesis, briefly: a few seeded runs of `ordo-nemesis` against real validators in
//! network namespaces (kill -9, SIGSTOP, partitions), every check required to hold.
//!
//! It needs root (namespaces, iptables). Without root it is skipped with a message, unless
//! `ORDO_NEMESIS_REQUIRED=1` (set by CI) makes that a failure.

use std::process::{Command, Stdio};

#[test]
fn short_seeded_runs_keep_every_promise() {
    if !nix::unistd::Uid::effective().is_root() {
        assert!(
            std::env::var_os("ORDO_NEMESIS_REQUIRED").is_none(),
            "ORDO_NEMESIS_REQUIRED is set, but the nemesis needs root"
        );
        eprintln!("skipped: the nemesis needs root (network namespaces, iptables)");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let child = Command::new(env!("CARGO_BIN_EXE_ordo-nemesis"))
        .args(["--seed", "1", "--runs", "3", "--seconds", "40", "--dir"])
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ordo-nemesis starts");
    let pid = child.id();
    let out = child.wait_with_output().expect("ordo-nemesis runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the nemesis failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.matches(": PASS ·").count(), 3, "{stdout}");
    let left: Vec<String> = std::fs::read_dir("/run/netns")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with(&format!("ordo-nem-{pid}-")))
        .collect();
    assert!(left.is_empty(), "namespaces left behind: {left:?}");
}
