//! Each validator's data under an `ordo-lazyfs` mount (`lazyfs/`), so that the nemesis can
//! cut its power: every write the validator did not fsync is lost, as on a machine that
//! loses power with data in its disk's volatile cache.
//!
//! A cut is: kill -9 the validator, SIGUSR1 to its `ordo-lazyfs` (which rolls back every
//! unsynced write in the backing directory, says how much on one line, unmounts and
//! exits), then a fresh `ordo-lazyfs` on the same directories (a fresh mount also has an
//! empty page cache), then the validator again.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::netns::run;

/// Waits this long at most for `mounted` and for the `cut:` line.
const ANSWER_MAX: Duration = Duration::from_secs(20);

/// One validator's lazy filesystem: its directories, and its daemon when mounted.
pub struct Lazy {
    bin: PathBuf,
    backing: PathBuf,
    /// Where it is mounted.
    pub mountpoint: PathBuf,
    log: PathBuf,
    daemon: Option<(Child, mpsc::Receiver<String>)>,
}

/// Reads `stdout` line by line onto a channel, on a thread of its own (the daemon prints
/// two lines at most: `mounted`, then `cut: …`).
fn lines(stdout: ChildStdout) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

impl Lazy {
    /// Mounts `backing` at `mountpoint` with `bin` (`ordo-lazyfs`), its log appended to
    /// `log`, and waits until it serves.
    ///
    /// # Errors
    /// When the daemon cannot start or does not mount.
    pub fn mount(
        bin: &Path,
        backing: &Path,
        mountpoint: &Path,
        log: &Path,
    ) -> anyhow::Result<Lazy> {
        for d in [backing, mountpoint] {
            std::fs::create_dir_all(d).with_context(|| format!("cannot make {}", d.display()))?;
        }
        let mut lazy = Lazy {
            bin: bin.to_owned(),
            backing: backing.to_owned(),
            mountpoint: mountpoint.to_owned(),
            log: log.to_owned(),
            daemon: None,
        };
        lazy.start()?;
        Ok(lazy)
    }

    fn start(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("cannot open {}", self.log.display()))?;
        let mut child = Command::new(&self.bin)
            .arg("--backing")
            .arg(&self.backing)
            .arg("--mount")
            .arg(&self.mountpoint)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start {}", self.bin.display()))?;
        let stdout = child.stdout.take().context("no stdout")?;
        let rx = lines(stdout);
        match rx.recv_timeout(ANSWER_MAX) {
            Ok(line) if line == "mounted" => {
                self.daemon = Some((child, rx));
                Ok(())
            }
            other => {
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "ordo-lazyfs did not mount {} ({other:?}); see {}",
                    self.mountpoint.display(),
                    self.log.display()
                )
            }
        }
    }

    /// Cuts the power: every write not fsynced is lost. Every process using the mount
    /// must be dead. Returns the daemon's account (`cut: <files> files, <bytes> bytes of
    /// unsynced writes discarded`).
    ///
    /// # Errors
    /// When the daemon does not answer or does not exit cleanly.
    pub fn cut(&mut self) -> anyhow::Result<String> {
        let (mut child, rx) = self.daemon.take().context("not mounted")?;
        kill(Pid::from_raw(child.id() as i32), Signal::SIGUSR1)
            .context("cannot signal ordo-lazyfs")?;
        let line = rx.recv_timeout(ANSWER_MAX);
        let status = child.wait().context("cannot wait for ordo-lazyfs")?;
        match line {
            Ok(line) if line.starts_with("cut:") && status.success() => Ok(line),
            other => bail!(
                "ordo-lazyfs on {} did not cut cleanly ({other:?}, {status}); see {}",
                self.mountpoint.display(),
                self.log.display()
            ),
        }
    }

    /// Mounts again after a cut.
    ///
    /// # Errors
    /// As [`Lazy::mount`].
    pub fn remount(&mut self) -> anyhow::Result<()> {
        if self.daemon.is_none() {
            self.start()?;
        }
        Ok(())
    }
}

impl Drop for Lazy {
    /// Unmounts, keeping every write (SIGTERM); after 10 s, unmounts lazily.
    fn drop(&mut self) {
        if let Some((mut child, _)) = self.daemon.take() {
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
            for _ in 0..100 {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = child.kill();
            let _ = child.wait();
            if let Some(m) = self.mountpoint.to_str() {
                let _ = run("umount", &["-l", m]);
            }
        }
    }
}
