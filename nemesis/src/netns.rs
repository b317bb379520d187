//! The hosts of a run: one network namespace per validator, joined by veth pairs to a
//! bridge in a hub namespace where the nemesis itself (its clients) lives. Nothing is
//! routed out of them; everything is removed when the [`Topology`] is dropped.
//!
//! ```text
//!   hub ns: br0 10.77.0.1/24 ── v0 ═ eth0 (ns of validator-0, 10.77.0.10)
//!                            ── v1 ═ eth0 (ns of validator-1, 10.77.0.11) …
//! ```
//!
//! Partitions are `iptables` DROP rules on INPUT inside a validator's namespace: what it
//! drops is what it cannot hear.

use std::collections::BTreeSet;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr};
use std::process::{Command, Stdio};

use anyhow::{Context, bail};

/// Prefix of every namespace a run makes (then the nemesis's pid).
const PREFIX: &str = "ordo-nem-";

/// The namespaces of one run.
pub struct Topology {
    /// The hub namespace (bridge, clients).
    pub hub: String,
    /// Validator `i`'s namespace.
    pub hosts: Vec<String>,
    made: Vec<String>,
}

/// Validator `i`'s address.
pub fn host_ip(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 77, 0, 10 + i as u8))
}

/// Runs `ip` (or another tool) with `args`, failing with its stderr.
pub(crate) fn run(program: &str, args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {program} (is iproute2/iptables installed?)"))?;
    if !out.status.success() {
        bail!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

impl Topology {
    /// Makes a hub and `n` validator namespaces, each validator at [`host_ip`]. Removes
    /// what a killed earlier run left first.
    ///
    /// # Errors
    /// Without root, or when `ip` fails.
    pub fn create(n: usize) -> anyhow::Result<Topology> {
        if !nix::unistd::Uid::effective().is_root() {
            bail!("the nemesis needs root: it makes network namespaces and iptables rules");
        }
        remove_stale();
        let pid = std::process::id();
        let hub = format!("{PREFIX}{pid}-hub");
        let hosts: Vec<String> = (0..n).map(|i| format!("{PREFIX}{pid}-v{i}")).collect();
        let mut topo = Topology {
            hub: hub.clone(),
            hosts: hosts.clone(),
            made: Vec::new(),
        };
        run("ip", &["netns", "add", &hub])?;
        topo.made.push(hub.clone());
        run("ip", &["-n", &hub, "link", "set", "lo", "up"])?;
        run("ip", &["-n", &hub, "link", "add", "br0", "type", "bridge"])?;
        run(
            "ip",
            &["-n", &hub, "addr", "add", "10.77.0.1/24", "dev", "br0"],
        )?;
        run("ip", &["-n", &hub, "link", "set", "br0", "up"])?;
        for (i, ns) in hosts.iter().enumerate() {
            run("ip", &["netns", "add", ns])?;
            topo.made.push(ns.clone());
            let hub_end = format!("v{i}");
            run(
                "ip",
                &[
                    "link", "add", "eth0", "netns", ns, "type", "veth", "peer", "name", &hub_end,
                    "netns", &hub,
                ],
            )?;
            run(
                "ip",
                &["-n", &hub, "link", "set", &hub_end, "master", "br0"],
            )?;
            run("ip", &["-n", &hub, "link", "set", &hub_end, "up"])?;
            let addr = format!("{}/24", host_ip(i));
            run("ip", &["-n", ns, "addr", "add", &addr, "dev", "eth0"])?;
            run("ip", &["-n", ns, "link", "set", "eth0", "up"])?;
            run("ip", &["-n", ns, "link", "set", "lo", "up"])?;
        }
        Ok(topo)
    }

    /// Moves the calling thread into the hub namespace. Call it before any other thread
    /// starts: threads made afterwards inherit it.
    ///
    /// # Errors
    /// When the namespace cannot be entered.
    pub fn enter_hub(&self) -> anyhow::Result<()> {
        let path = format!("/run/netns/{}", self.hub);
        let file = std::fs::File::open(&path).with_context(|| format!("cannot open {path}"))?;
        nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET)
            .with_context(|| format!("cannot enter {path}"))
    }

    /// The command prefix that runs a program in validator `i`'s namespace.
    pub fn launcher(&self, i: usize) -> Vec<std::ffi::OsString> {
        ["ip", "netns", "exec", &self.hosts[i]]
            .iter()
            .map(Into::into)
            .collect()
    }

    /// Makes validator `i` drop everything from the validators in `deaf_to` (replacing its
    /// earlier rules; an empty set heals it).
    ///
    /// # Errors
    /// When `iptables-restore` fails.
    pub fn set_deaf_to(&self, i: usize, deaf_to: &BTreeSet<usize>) -> anyhow::Result<()> {
        let mut rules = String::from(
            "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n",
        );
        for j in deaf_to {
            rules.push_str(&format!("-A INPUT -s {} -j DROP\n", host_ip(*j)));
        }
        rules.push_str("COMMIT\n");
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.hosts[i], "iptables-restore"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("cannot run iptables-restore")?;
        child
            .stdin
            .take()
            .expect("piped")
            .write_all(rules.as_bytes())
            .context("cannot write the rules")?;
        let out = child.wait_with_output().context("iptables-restore")?;
        if !out.status.success() {
            bail!(
                "iptables-restore in {}: {}",
                self.hosts[i],
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        for ns in self.made.iter().rev() {
            kill_inside(ns);
            if let Err(e) = run("ip", &["netns", "del", ns]) {
                eprintln!("nemesis: cannot remove namespace {ns}: {e}");
            }
        }
    }
}

/// SIGKILLs every process left in namespace `ns` but this one (which lives in the hub).
fn kill_inside(ns: &str) {
    let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() else {
        return;
    };
    for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
        if let Ok(pid) = pid.parse::<i32>()
            && pid != std::process::id() as i32
        {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// Removes the namespaces of earlier runs whose nemesis no longer lives.
fn remove_stale() {
    let Ok(entries) = std::fs::read_dir("/run/netns") else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let owner = rest.split('-').next().unwrap_or_default();
        if std::path::Path::new(&format!("/proc/{owner}")).exists() {
            continue;
        }
        kill_inside(&name);
        let _ = run("ip", &["netns", "del", &name]);
    }
}
