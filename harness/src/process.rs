//! One validator process.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::HarnessError;

/// The log filter a validator starts with unless `RUST_LOG` says otherwise.
pub const DEFAULT_LOG: &str = "info,libp2p=warn,openraft=error";

/// A validator: its configuration, addresses and files, and its process while it runs.
pub struct NodeProcess {
    /// Its name (`validator-<i>`).
    pub name: String,
    /// Its `node.toml`.
    pub config: PathBuf,
    /// Its API address.
    pub api: SocketAddr,
    /// Its data directory.
    pub data_dir: PathBuf,
    /// Its log file (appended to across starts).
    pub log: PathBuf,
    /// What the node is started under (for example `ip netns exec <ns>`), before the binary.
    pub launcher: Vec<std::ffi::OsString>,
    /// Extra environment for the node (for example `LD_PRELOAD` of a fault library).
    pub env: Vec<(std::ffi::OsString, std::ffi::OsString)>,
    child: Option<Child>,
}

impl NodeProcess {
    /// A validator described by its files, not running.
    pub fn new(
        name: String,
        config: PathBuf,
        api: SocketAddr,
        data_dir: PathBuf,
        log: PathBuf,
    ) -> NodeProcess {
        NodeProcess {
            name,
            config,
            api,
            data_dir,
            log,
            launcher: Vec::new(),
            env: Vec::new(),
            child: None,
        }
    }

    /// Its API's base URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.api)
    }

    /// Whether its process has been started and not seen to exit.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Its process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Starts `bin node run --config <config>` (under its [`NodeProcess::launcher`], with its
    /// [`NodeProcess::env`]), its output appended to its log, with `RUST_LOG` as set or
    /// [`DEFAULT_LOG`].
    ///
    /// # Errors
    /// When it runs already, or the log or the process cannot be opened.
    pub fn start(&mut self, bin: &Path) -> Result<(), HarnessError> {
        if self.child.is_some() {
            return Err(HarnessError::Invalid(format!("{} is running", self.name)));
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(HarnessError::io(format!(
                "cannot open {}",
                self.log.display()
            )))?;
        let log_err = log
            .try_clone()
            .map_err(HarnessError::io("cannot share the log file"))?;
        let mut command = match self.launcher.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(bin);
                c
            }
            None => Command::new(bin),
        };
        let child = command
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .args(["node", "run", "--config"])
            .arg(&self.config)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| DEFAULT_LOG.into()),
            )
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(HarnessError::io(format!(
                "cannot start {} ({})",
                self.name,
                bin.display()
            )))?;
        self.child = Some(child);
        Ok(())
    }

    /// Sends SIGTERM (a graceful stop), if it runs.
    pub fn sigterm(&self) {
        if let Some(pid) = self.pid() {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
        }
    }

    /// Freezes it (SIGSTOP): it holds its connections and answers nothing until
    /// [`NodeProcess::resume`].
    pub fn pause(&self) {
        if let Some(pid) = self.pid() {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGSTOP);
        }
    }

    /// Lets a paused process run again (SIGCONT).
    pub fn resume(&self) {
        if let Some(pid) = self.pid() {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGCONT);
        }
    }

    /// SIGKILLs it and reaps it, if it runs.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Its exit status, if it has exited since the last look (then it no longer runs).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        let status = self.child.as_mut()?.try_wait().ok()??;
        self.child = None;
        Some(status)
    }

    /// Waits up to `timeout` for it to exit; its status, or `None` if it still runs.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let every = Duration::from_millis(50);
        crate::poll(timeout, every, || std::future::ready(self.exited())).await
    }

    /// As [`NodeProcess::wait_exit`], blocking the thread.
    pub fn wait_exit_blocking(&mut self, timeout: Duration) -> Option<ExitStatus> {
        crate::poll_blocking(timeout, Duration::from_millis(50), || self.exited())
    }

    /// The last `n` lines of its log.
    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Sends SIGTERM to every running node and waits for them all, for at most `grace`;
/// kills those still running then, or at once when `interrupt` completes first (a second
/// Ctrl-C). Returns the names of the nodes it had to kill.
pub async fn stop_all(
    nodes: &mut [NodeProcess],
    grace: Duration,
    interrupt: impl std::future::Future<Output = ()>,
) -> Vec<String> {
    for n in nodes.iter() {
        n.sigterm();
    }
    let every = Duration::from_millis(50);
    let all_exited = crate::poll(grace, every, || {
        for n in nodes.iter_mut() {
            n.exited();
        }
        std::future::ready(nodes.iter().all(|n| !n.is_running()).then_some(()))
    });
    tokio::select! {
        _ = all_exited => {}
        () = interrupt => {}
    }
    let mut killed = Vec::new();
    for n in nodes.iter_mut() {
        if n.is_running() && n.exited().is_none() {
            killed.push(n.name.clone());
            n.kill();
        }
    }
    killed
}
