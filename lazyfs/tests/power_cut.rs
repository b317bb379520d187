//! Runs the real `ordo-lazyfs` on temporary directories: writes through the mount, cuts
//! the power (or stops it), and checks the backing directory directly. Needs root (to
//! mount); skipped with a message otherwise.

use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

const BIN: &str = env!("CARGO_BIN_EXE_ordo-lazyfs");
const WAIT: Duration = Duration::from_secs(30);

fn is_root() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    eprintln!("skipping: mounting FUSE needs root");
    false
}

/// A running `ordo-lazyfs`. Dropping it kills the daemon and lazily unmounts, so that a
/// failing test leaves no mount behind.
struct Daemon {
    child: Child,
    mount: PathBuf,
    lines: mpsc::Receiver<String>,
}

impl Daemon {
    fn start(backing: &Path, mount: &Path) -> Daemon {
        Self::start_with(backing, mount, &[])
    }

    fn start_with(backing: &Path, mount: &Path, extra: &[&str]) -> Daemon {
        let mut child = Command::new(BIN)
            .arg("--backing")
            .arg(backing)
            .arg("--mount")
            .arg(mount)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start ordo-lazyfs");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let daemon = Daemon {
            child,
            mount: mount.to_owned(),
            lines,
        };
        let first = daemon
            .lines
            .recv_timeout(WAIT)
            .expect("`mounted` on stdout");
        assert_eq!(first, "mounted");
        daemon
    }

    fn signal(&self, signal: Signal) {
        let pid = Pid::from_raw(i32::try_from(self.child.id()).expect("pid"));
        kill(pid, signal).expect("send signal");
    }

    fn wait(&mut self) -> ExitStatus {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "ordo-lazyfs did not exit");
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Cuts the power; returns (files, bytes) from the `cut:` line, after a clean exit.
    fn cut(mut self) -> (u64, u64) {
        self.signal(Signal::SIGUSR1);
        let line = self.lines.recv_timeout(WAIT).expect("the cut line");
        let status = self.wait();
        assert!(status.success(), "exit after cut: {status}");
        assert!(self.lines.recv().is_err(), "nothing more on stdout");
        assert!(!is_mounted(&self.mount), "still mounted after the cut");
        parse_cut(&line)
    }

    /// Stops with SIGTERM; checks that it exits cleanly, unmounted, printing nothing.
    fn stop(mut self) {
        self.signal(Signal::SIGTERM);
        let status = self.wait();
        assert!(status.success(), "exit after SIGTERM: {status}");
        assert!(self.lines.recv().is_err(), "nothing more on stdout");
        assert!(!is_mounted(&self.mount), "still mounted after SIGTERM");
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if is_mounted(&self.mount) {
            let _ = Command::new("umount").arg("-l").arg(&self.mount).status();
        }
    }
}

fn parse_cut(line: &str) -> (u64, u64) {
    let rest = line
        .strip_prefix("cut: ")
        .and_then(|r| r.strip_suffix(" bytes of unsynced writes discarded"))
        .unwrap_or_else(|| panic!("unexpected cut line {line:?}"));
    let (files, bytes) = rest
        .split_once(" files, ")
        .unwrap_or_else(|| panic!("unexpected cut line {line:?}"));
    (
        files.parse().expect("files count"),
        bytes.parse().expect("bytes count"),
    )
}

fn is_mounted(mount: &Path) -> bool {
    let want = mount.canonicalize().unwrap_or_else(|_| mount.to_owned());
    let info = fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|p| Path::new(p) == want)
}

/// Two fresh directories: (backing, mount). The TempDir must outlive the daemon.
fn dirs() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let backing = tmp.path().join("backing");
    let mount = tmp.path().join("mount");
    fs::create_dir(&backing).expect("mkdir backing");
    fs::create_dir(&mount).expect("mkdir mount");
    (tmp, backing, mount)
}

fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| seed.wrapping_mul(31).wrapping_add((i % 251) as u8))
        .collect()
}

fn create(path: &Path, data: &[u8], sync: bool) -> File {
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(path)
        .expect("create");
    f.write_all(data).expect("write");
    if sync {
        f.sync_all().expect("fsync");
    }
    f
}

#[test]
fn cut_discards_exactly_the_unsynced_writes() {
    if !is_root() {
        return;
    }
    let (_tmp, backing, mount) = dirs();
    let daemon = Daemon::start(&backing, &mount);

    // A: synced, then overwritten in part and extended, unsynced.
    let a_synced = pattern(1, 10_000);
    let a = create(&mount.join("a"), &a_synced, true);
    a.write_all_at(&pattern(2, 500), 100).expect("overwrite a");
    a.write_all_at(&pattern(3, 3_000), 10_000)
        .expect("extend a");
    let mut a_now = a_synced.clone();
    a_now[100..600].copy_from_slice(&pattern(2, 500));
    a_now.extend_from_slice(&pattern(3, 3_000));
    assert_eq!(fs::read(mount.join("a")).expect("read a"), a_now);

    // B: created and written, never synced.
    let b = create(&mount.join("b"), &pattern(4, 5_000), false);

    // C: synced, then truncated shorter through another handle, unsynced.
    let c_synced = pattern(5, 8_000);
    drop(create(&mount.join("c"), &c_synced, true));
    OpenOptions::new()
        .write(true)
        .open(mount.join("c"))
        .expect("open c")
        .set_len(1_000)
        .expect("truncate c");
    assert_eq!(fs::metadata(mount.join("c")).expect("stat c").len(), 1_000);

    // D: synced, then renamed over an existing file E: the rename is durable.
    let d_synced = pattern(6, 2_000);
    drop(create(&mount.join("d"), &d_synced, true));
    drop(create(&mount.join("e"), &pattern(7, 300), true));
    fs::rename(mount.join("d"), mount.join("e")).expect("rename d over e");

    // F in a directory that is then renamed; appended to afterwards, unsynced.
    fs::create_dir(mount.join("dir")).expect("mkdir");
    let f_synced = pattern(8, 4_096);
    let mut f = create(&mount.join("dir/f"), &f_synced, true);
    fs::rename(mount.join("dir"), mount.join("dir2")).expect("rename dir");
    f.write_all(&pattern(9, 1_234)).expect("append f");
    assert_eq!(
        fs::metadata(mount.join("dir2/f")).expect("stat f").len(),
        4_096 + 1_234
    );

    // G: written unsynced, then deleted: simply gone, not counted.
    let g = create(&mount.join("g"), &pattern(10, 777), false);
    fs::remove_file(mount.join("g")).expect("unlink g");

    drop((a, b, f, g));
    let (files, bytes) = daemon.cut();
    assert_eq!(files, 4, "a, b, c and f had unsynced writes");
    assert_eq!(bytes, (500 + 3_000) + 5_000 + 7_000 + 1_234);

    assert_eq!(fs::read(backing.join("a")).expect("a"), a_synced);
    let b_len = fs::metadata(backing.join("b"))
        .expect("b still exists")
        .len();
    assert_eq!(b_len, 0, "b's creation is durable, its data not");
    assert_eq!(fs::read(backing.join("c")).expect("c"), c_synced);
    assert!(!backing.join("d").exists(), "the rename of d is durable");
    assert_eq!(fs::read(backing.join("e")).expect("e"), d_synced);
    assert!(!backing.join("dir").exists());
    assert_eq!(fs::read(backing.join("dir2/f")).expect("f"), f_synced);
    assert!(!backing.join("g").exists());

    // A fresh mount serves the restored contents, not cached discarded ones.
    let daemon = Daemon::start(&backing, &mount);
    assert_eq!(fs::read(mount.join("a")).expect("a again"), a_synced);
    assert_eq!(fs::read(mount.join("c")).expect("c again"), c_synced);
    assert_eq!(fs::read(mount.join("dir2/f")).expect("f again"), f_synced);
    daemon.stop();
}

#[test]
fn sigterm_keeps_everything_and_unmounts() {
    if !is_root() {
        return;
    }
    let (_tmp, backing, mount) = dirs();
    let daemon = Daemon::start(&backing, &mount);
    let data = pattern(11, 50_000);
    let mut f = create(&mount.join("unsynced"), &data, false);
    f.write_all(b"tail").expect("append");
    drop(f);
    fs::create_dir(mount.join("sub")).expect("mkdir");
    fs::write(mount.join("sub/x"), b"xyz").expect("write x");
    daemon.stop();

    let mut want = data;
    want.extend_from_slice(b"tail");
    assert_eq!(fs::read(backing.join("unsynced")).expect("read"), want);
    assert_eq!(fs::read(backing.join("sub/x")).expect("read x"), b"xyz");
    assert!(
        fs::read_dir(&mount).expect("mount dir").next().is_none(),
        "the mount point is empty again"
    );
}

#[test]
fn ordinary_operations_pass_through() {
    if !is_root() {
        return;
    }
    let (_tmp, backing, mount) = dirs();
    let daemon = Daemon::start(&backing, &mount);
    fs::create_dir_all(mount.join("a/b")).expect("mkdir -p");
    fs::write(mount.join("a/b/file"), b"content").expect("write");
    std::os::unix::fs::symlink("b/file", mount.join("a/link")).expect("symlink");
    assert_eq!(
        fs::read_link(mount.join("a/link")).expect("readlink"),
        Path::new("b/file")
    );
    assert_eq!(
        fs::read(mount.join("a/link")).expect("through the link"),
        b"content"
    );
    fs::hard_link(mount.join("a/b/file"), mount.join("a/hard")).expect("link");
    let md = fs::metadata(mount.join("a/hard")).expect("stat");
    assert_eq!(std::os::unix::fs::MetadataExt::nlink(&md), 2);
    let mut names: Vec<_> = fs::read_dir(mount.join("a"))
        .expect("readdir")
        .map(|e| e.expect("entry").file_name().into_string().expect("utf-8"))
        .collect();
    names.sort();
    assert_eq!(names, ["b", "hard", "link"]);

    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(mount.join("a/hard"), fs::Permissions::from_mode(0o640)).expect("chmod");
    let mtime = std::time::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
    File::options()
        .write(true)
        .open(mount.join("a/hard"))
        .expect("open")
        .set_modified(mtime)
        .expect("utimes");
    let md = fs::metadata(backing.join("a/b/file")).expect("backing stat");
    assert_eq!(md.permissions().mode() & 0o7777, 0o640);
    assert_eq!(md.modified().expect("mtime"), mtime);

    // An open file renamed over another, then written and fsynced under its new name
    // (what RocksDB does with CURRENT and IDENTITY).
    let mut tmp = create(&mount.join("CURRENT.tmp"), b"MANIFEST-000005\n", false);
    fs::write(mount.join("CURRENT"), b"MANIFEST-000001\n").expect("old CURRENT");
    fs::rename(mount.join("CURRENT.tmp"), mount.join("CURRENT")).expect("rename");
    tmp.write_all(b"#").expect("write after rename");
    tmp.sync_all().expect("fsync after rename");
    assert_eq!(
        fs::read(mount.join("CURRENT")).expect("CURRENT"),
        b"MANIFEST-000005\n#"
    );

    // A directory renamed while a file in it is open.
    let mut inner = create(&mount.join("a/b/open"), b"x", true);
    fs::rename(mount.join("a"), mount.join("z")).expect("rename dir");
    inner.write_all(b"y").expect("write in moved dir");
    inner.sync_data().expect("fdatasync in moved dir");
    assert_eq!(fs::read(mount.join("z/b/open")).expect("moved file"), b"xy");

    let vfs = nix::sys::statvfs::statvfs(&mount).expect("statfs");
    assert!(vfs.blocks() > 0);
    fs::remove_file(mount.join("z/hard")).expect("unlink");
    fs::remove_file(mount.join("z/link")).expect("unlink link");
    fs::remove_dir_all(mount.join("z")).expect("rm -r");
    drop((tmp, inner));
    let (files, bytes) = daemon.cut();
    assert_eq!((files, bytes), (0, 0), "everything left was synced");
    assert_eq!(
        fs::read(backing.join("CURRENT")).expect("CURRENT"),
        b"MANIFEST-000005\n#"
    );
    assert!(!backing.join("z").exists());
}

#[test]
fn a_fresh_daemon_replaces_one_that_was_killed() {
    if !is_root() {
        return;
    }
    let (_tmp, backing, mount) = dirs();
    let mut daemon = Daemon::start(&backing, &mount);
    drop(create(&mount.join("kept"), b"synced", true));
    daemon.signal(Signal::SIGKILL);
    daemon.wait();
    // The dead mount is still there ("transport endpoint is not connected").
    assert!(is_mounted(&mount));
    let daemon = Daemon::start(&backing, &mount);
    assert_eq!(fs::read(mount.join("kept")).expect("read"), b"synced");
    daemon.stop();
}

/// A small xorshift generator: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Appends (and now and then overwrites or truncates) a file through the mount, with
/// an fsync or fdatasync every few operations; returns the content at the last sync.
fn workload(path: &Path, seed: u64, datasync: bool) -> Vec<u8> {
    let mut rng = Rng(seed);
    let file = create(path, b"", false);
    let mut model: Vec<u8> = Vec::new();
    let mut synced = Vec::new();
    for step in 0..400u64 {
        match rng.below(10) {
            0 if !model.is_empty() => {
                let off = rng.below(model.len() as u64) as usize;
                let len = (rng.below(3_000) as usize + 1).min(model.len() - off);
                let data = pattern(step as u8, len);
                file.write_all_at(&data, off as u64).expect("overwrite");
                model[off..off + len].copy_from_slice(&data);
            }
            1 if !model.is_empty() => {
                let len = rng.below(model.len() as u64);
                file.set_len(len).expect("truncate");
                model.truncate(len as usize);
            }
            _ => {
                let data = pattern(step as u8, rng.below(20_000) as usize + 1);
                file.write_all_at(&data, model.len() as u64)
                    .expect("append");
                model.extend_from_slice(&data);
            }
        }
        if step % 16 == 15 {
            if datasync {
                file.sync_data().expect("fdatasync");
            } else {
                file.sync_all().expect("fsync");
            }
            synced = model.clone();
        }
    }
    // Unsynced changes at the end, so that the cut has something to discard.
    file.write_all_at(b"never synced", model.len() as u64)
        .expect("last append");
    let mut check = Vec::new();
    File::open(path)
        .expect("reopen")
        .read_to_end(&mut check)
        .expect("read back");
    model.extend_from_slice(b"never synced");
    assert_eq!(check, model, "reads through the mount see every write");
    synced
}

#[test]
fn concurrent_workload_keeps_exactly_the_last_fsync() {
    if !is_root() {
        return;
    }
    let (_tmp, backing, mount) = dirs();
    let daemon = Daemon::start(&backing, &mount);
    let (m1, m2) = (mount.join("one"), mount.join("two"));
    let t1 = thread::spawn(move || workload(&m1, 0x9e37_79b9_7f4a_7c15, false));
    let t2 = thread::spawn(move || workload(&m2, 0xdead_beef_cafe_f00d, true));
    let want1 = t1.join().expect("thread one");
    let want2 = t2.join().expect("thread two");
    let (files, bytes) = daemon.cut();
    assert_eq!(files, 2);
    assert!(bytes >= 2 * 12, "the cut discarded {bytes} bytes");
    assert_eq!(fs::read(backing.join("one")).expect("one"), want1);
    assert_eq!(fs::read(backing.join("two")).expect("two"), want2);
}

#[test]
fn a_small_undo_limit_makes_the_oldest_writes_durable() {
    if !is_root() {
        return;
    }
    let (_tmp, backing, mount) = dirs();
    let daemon = Daemon::start_with(&backing, &mount, &["--max-undo-mib", "1"]);
    let old = pattern(12, 4 << 20);
    drop(create(&mount.join("big"), &old, true));
    // Overwrite all 4 MiB, unsynced: only the last part of it fits in the undo log.
    let new = pattern(13, 4 << 20);
    let f = OpenOptions::new()
        .write(true)
        .open(mount.join("big"))
        .expect("open big");
    for (i, chunk) in new.chunks(64 << 10).enumerate() {
        f.write_all_at(chunk, (i * (64 << 10)) as u64)
            .expect("overwrite");
    }
    drop(f);
    let (files, bytes) = daemon.cut();
    assert_eq!(files, 1);
    assert!(bytes > 0 && bytes < 4 << 20, "discarded {bytes} bytes");
    let got = fs::read(backing.join("big")).expect("big");
    assert_eq!(got.len(), 4 << 20);
    // A prefix of the overwrites counts as durable, the rest was undone.
    let split = (4 << 20) - bytes as usize;
    assert_eq!(&got[..split], &new[..split]);
    assert_eq!(&got[split..], &old[split..]);
}

#[test]
fn enospc_reaches_the_writer() {
    if !is_root() {
        return;
    }
    let (tmp, _backing, mount) = dirs();
    let small = tmp.path().join("small");
    fs::create_dir(&small).expect("mkdir small");
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=256k", "tmpfs"])
        .arg(&small)
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("skipping: cannot mount a tmpfs here");
        return;
    }
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
    let _small = Unmount(small.clone());
    let daemon = Daemon::start(&small, &mount);
    let mut f = create(&mount.join("fill"), b"", false);
    let chunk = vec![7u8; 64 << 10];
    let mut err = None;
    for _ in 0..16 {
        if let Err(e) = f.write_all(&chunk) {
            err = Some(e);
            break;
        }
    }
    let err = err.expect("a 256 KiB tmpfs must fill up");
    assert_eq!(err.raw_os_error(), Some(nix::libc::ENOSPC), "{err}");
    drop(f);
    daemon.stop();
}

#[test]
fn a_missing_mount_point_fails_clearly() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = Command::new(BIN)
        .arg("--backing")
        .arg(tmp.path())
        .arg("--mount")
        .arg(tmp.path().join("missing"))
        .stdin(Stdio::null())
        .output()
        .expect("run ordo-lazyfs");
    assert!(!out.status.success());
    assert!(out.stdout.is_empty(), "nothing on stdout");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("ordo-lazyfs:"), "{stderr}");
    if nix::unistd::geteuid().is_root() {
        assert!(stderr.contains("missing"), "{stderr}");
    }
}

/// Rough cost: sequential 4 KiB writes with an fsync every 64, through the mount and
/// directly on the backing directory. Run with `--ignored --nocapture`.
#[test]
#[ignore = "a measurement, not a check"]
fn measure_sequential_writes() {
    if !is_root() {
        return;
    }
    let (_tmp, backing, mount) = dirs();
    let daemon = Daemon::start(&backing, &mount);
    let run = |path: &Path| {
        let mut f = create(path, b"", false);
        let block = [0x5au8; 4096];
        let start = Instant::now();
        let n = 16_384;
        for i in 0..n {
            f.write_all(&block).expect("write");
            if i % 64 == 63 {
                f.sync_all().expect("fsync");
            }
        }
        let secs = start.elapsed().as_secs_f64();
        (n as f64 / secs, n as f64 * 4096.0 / secs / (1 << 20) as f64)
    };
    let (fuse_ops, fuse_mib) = run(&mount.join("bench"));
    let (direct_ops, direct_mib) = run(&backing.join("direct"));
    println!("through ordo-lazyfs: {fuse_ops:.0} writes/s ({fuse_mib:.1} MiB/s)");
    println!("directly:            {direct_ops:.0} writes/s ({direct_mib:.1} MiB/s)");
    daemon.stop();
}
