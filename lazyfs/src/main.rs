//! `ordo-lazyfs --backing DIR --mount DIR`: mounts a passthrough of `--backing` at
//! `--mount` that discards every unsynced write on SIGUSR1. See the library's
//! documentation for the exact model.

use std::io::{self, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use fuser::{Config, MountOption, Session, SessionACL, SessionUnmounter};
use nix::mount::MntFlags;
use ordo_lazyfs::fs::LazyFs;
use ordo_lazyfs::undo::Limits;
use signal_hook::consts::{SIGINT, SIGTERM, SIGUSR1};
use signal_hook::iterator::Signals;
use tracing::warn;

/// How long to wait for the session to end after unmounting before exiting anyway.
const SESSION_END_WAIT: Duration = Duration::from_secs(10);

#[derive(Parser, Debug)]
#[command(
    name = "ordo-lazyfs",
    version,
    about = "Passthrough FUSE filesystem that loses every unsynced write when the power is cut",
    long_about = "Mounts at --mount a passthrough of the directory --backing and serves it until \
unmounted or told to cut the power. Every write, truncate and fallocate goes straight to the \
backing file, but is first recorded so that it can be undone; an fsync or fdatasync of the \
file makes it durable. Directory entries are durable at once.\n\n\
Prints `mounted` on stdout once the mount is ready, and nothing else except the cut line.\n\n\
Signals:\n  \
SIGUSR1  cut the power: fail new operations with EIO, undo every unsynced change, print\n           \
`cut: <files> files, <bytes> bytes of unsynced writes discarded`, unmount, exit 0.\n           \
Kill every process using the mount first; then start a fresh ordo-lazyfs.\n  \
SIGTERM, SIGINT  unmount and exit 0, keeping everything written.\n\n\
Runs as root. Logs go to stderr (level warn; RUST_LOG overrides)."
)]
struct Args {
    /// Directory holding the real files (must exist; one filesystem).
    #[arg(long, value_name = "DIR")]
    backing: PathBuf,
    /// Existing directory to mount on (outside --backing).
    #[arg(long, value_name = "DIR")]
    mount: PathBuf,
    /// Most memory the undo log may hold, in MiB; past it the oldest unsynced writes
    /// count as durable.
    #[arg(long, value_name = "MIB", default_value_t = 512)]
    max_undo_mib: usize,
    /// Threads serving requests.
    #[arg(long, value_name = "N", default_value_t = 4)]
    threads: usize,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(io::stderr)
        .with_ansi(io::stderr().is_terminal())
        .init();
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ordo-lazyfs: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Writes one line to stdout and flushes it; a closed stdout is not an error.
fn say(line: &str) {
    let mut out = io::stdout().lock();
    let _ = writeln!(out, "{line}").and_then(|()| out.flush());
}

enum Action {
    Cut,
    Stop,
}

fn run(args: &Args) -> anyhow::Result<()> {
    // Before anything else, so that a signal sent as soon as `mounted` is read (or
    // even earlier) is handled and not fatal.
    let mut signals =
        Signals::new([SIGUSR1, SIGTERM, SIGINT]).context("cannot install signal handlers")?;

    if !nix::unistd::geteuid().is_root() {
        bail!("must run as root (it mounts with allow_other and serves every user's files)");
    }
    if !Path::new("/dev/fuse").exists() {
        bail!("/dev/fuse is missing (load the fuse module, or give the container the device)");
    }
    if args.threads == 0 {
        bail!("--threads must be at least 1");
    }
    let backing = args
        .backing
        .canonicalize()
        .with_context(|| format!("backing directory {}", args.backing.display()))?;
    if !backing.is_dir() {
        bail!("backing {} is not a directory", backing.display());
    }
    clear_stale_mount(&args.mount);
    let mount = args
        .mount
        .canonicalize()
        .with_context(|| format!("mount point {}", args.mount.display()))?;
    if !mount.is_dir() {
        bail!("mount point {} is not a directory", mount.display());
    }
    if mount.starts_with(&backing) || backing.starts_with(&mount) {
        bail!(
            "the mount point ({}) and the backing directory ({}) must not contain each other",
            mount.display(),
            backing.display()
        );
    }
    raise_open_files_limit();
    // Modes come from the caller, already masked by the kernel; ours must not mask more.
    nix::sys::stat::umask(nix::sys::stat::Mode::empty());

    let limits = Limits {
        max_bytes: args.max_undo_mib.saturating_mul(1 << 20),
        ..Limits::default()
    };
    let fs = LazyFs::new(&backing, limits)
        .with_context(|| format!("backing directory {}", backing.display()))?;
    let control = fs.clone();

    let mut config = Config::default();
    config.mount_options = vec![
        // Not the backing path: a comma in it would split the mount options.
        MountOption::FSName("ordo-lazyfs".to_owned()),
        MountOption::Subtype("ordo-lazyfs".to_owned()),
        MountOption::DefaultPermissions,
    ];
    config.acl = SessionACL::All;
    config.n_threads = Some(args.threads);
    let mut session = Session::new(fs, &mount, &config)
        .with_context(|| format!("cannot mount on {}", mount.display()))?;
    let mut unmounter = session.unmount_callable();
    say("mounted");

    let closer = signals.handle();
    let (done_tx, done_rx) = mpsc::channel();
    thread::Builder::new()
        .name("session".to_owned())
        .spawn(move || {
            let result = session.run();
            // Unmounted from outside: stop waiting for signals.
            closer.close();
            let _ = done_tx.send(result);
        })
        .context("cannot start the session thread")?;

    let mut action = None;
    for signal in signals.forever() {
        action = match signal {
            SIGUSR1 => Some(Action::Cut),
            SIGTERM | SIGINT => Some(Action::Stop),
            _ => continue,
        };
        break;
    }
    match action {
        None => {
            // The session ended by itself (someone unmounted it): nothing discarded.
            return match done_rx.recv() {
                Ok(result) => result.context("the FUSE session failed"),
                Err(_) => Ok(()),
            };
        }
        Some(Action::Cut) => {
            let report = control.cut();
            if report.errors > 0 {
                warn!(files = report.errors, "some files could not be restored");
            }
            say(&format!(
                "cut: {} files, {} bytes of unsynced writes discarded",
                report.files, report.bytes
            ));
        }
        Some(Action::Stop) => {}
    }
    unmount(&mut unmounter, &mount);
    match done_rx.recv_timeout(SESSION_END_WAIT) {
        Ok(Ok(())) | Err(mpsc::RecvTimeoutError::Disconnected) => {}
        Ok(Err(e)) => warn!(error = %e, "the FUSE session ended with an error"),
        Err(mpsc::RecvTimeoutError::Timeout) => {
            warn!("files are still open on the detached mount; exiting anyway");
        }
    }
    Ok(())
}

/// Unmounts; if the mount is busy, detaches it (it goes away when its last user does,
/// or when this process exits, whichever is first).
fn unmount(unmounter: &mut SessionUnmounter, mount: &Path) {
    if let Err(e) = unmounter.unmount() {
        warn!(error = %e, mount = %mount.display(), "cannot unmount; detaching instead");
        if let Err(e) = nix::mount::umount2(mount, MntFlags::MNT_DETACH) {
            warn!(error = %e, mount = %mount.display(), "cannot detach the mount");
        }
    }
}

/// Detaches a FUSE mount left at `mount` by a daemon that died ("transport endpoint is
/// not connected"), so that a fresh one can take its place.
fn clear_stale_mount(mount: &Path) {
    if let Err(e) = std::fs::metadata(mount)
        && e.raw_os_error() == Some(nix::libc::ENOTCONN)
    {
        warn!(mount = %mount.display(), "detaching a dead FUSE mount left there");
        if let Err(e) = nix::mount::umount2(mount, MntFlags::MNT_DETACH) {
            warn!(error = %e, "cannot detach the dead mount");
        }
    }
}

/// Each file with unsynced writes keeps a descriptor open: allow as many as we may.
fn raise_open_files_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && soft < hard
        && let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard)
    {
        warn!(error = %e, "cannot raise the open files limit");
    }
}
