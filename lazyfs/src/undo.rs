//! The undo log: for every file with changes not yet made durable, how to put it back
//! the way it was at its last fsync.
//!
//! Each change (a write, a size change, a zeroing fallocate) is recorded *before* it is
//! made to the backing file, as the bytes it is about to overwrite inside the file's old
//! length and that old length. Undoing a record writes those bytes back and sets the
//! length back; undoing a file's records newest first restores it exactly.
//!
//! Dropping the *oldest* records of a file (a prefix) leaves a log that restores the file
//! to the state just after them, so "make durable" is always "drop a prefix": an fsync
//! drops everything recorded so far, and the memory bound drops the globally oldest
//! records first.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{info, warn};

/// What a record costs in memory besides the bytes it keeps, roughly.
const RECORD_OVERHEAD: usize = 64;

/// Least time between two warnings that the log was full.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// How much the undo log may hold.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Most bytes (saved file contents plus a fixed overhead per record) held at once.
    /// Past it the oldest records are made durable, down to seven eighths of it.
    pub max_bytes: usize,
    /// Most files with records at once (each keeps one file descriptor open). Past it
    /// the file with the oldest record is made durable entirely.
    pub max_files: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bytes: 512 << 20,
            max_files: 4096,
        }
    }
}

/// How to undo one change, captured before the change is made.
#[derive(Debug)]
pub struct Change {
    /// Where `old_bytes` start.
    offset: u64,
    /// The bytes the change overwrites inside the old length.
    old_bytes: Vec<u8>,
    /// The file's length before the change.
    old_len: u64,
    /// How many bytes the change writes, zeroes, adds or removes (for the report).
    changed: u64,
}

impl Change {
    /// The undo of a change to the bytes `offset .. offset + len` of `file` (a write or a
    /// zeroing) that also sets the length from `old_len` to anything; reads the bytes
    /// the change will overwrite. `changed` is the size of the change, for the report.
    ///
    /// # Errors
    /// When the old bytes cannot be read.
    pub fn capture(
        file: &File,
        old_len: u64,
        offset: u64,
        len: u64,
        changed: u64,
    ) -> io::Result<Change> {
        let end = offset.saturating_add(len).min(old_len);
        let mut old_bytes = Vec::new();
        if offset < end {
            let want = usize::try_from(end - offset)
                .map_err(|_| io::Error::from_raw_os_error(nix::libc::EFBIG))?;
            old_bytes = vec![0; want];
            let mut got = 0;
            while got < want {
                match file.read_at(&mut old_bytes[got..], offset + got as u64) {
                    Ok(0) => break,
                    Ok(n) => got += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            // Shorter than its length said: nothing past `got` to save.
            old_bytes.truncate(got);
        }
        Ok(Change {
            offset,
            old_bytes,
            old_len,
            changed,
        })
    }

    /// The undo of a change that only moves the length from `old_len` (an extending
    /// truncate or fallocate; a write wholly past the end). `changed` is as above.
    pub fn resize(old_len: u64, changed: u64) -> Change {
        Change {
            offset: old_len,
            old_bytes: Vec::new(),
            old_len,
            changed,
        }
    }

    fn cost(&self) -> usize {
        self.old_bytes.len() + RECORD_OVERHEAD
    }
}

#[derive(Debug)]
struct Record {
    seq: u64,
    change: Change,
}

#[derive(Debug)]
struct FileLog {
    /// A read-write descriptor of the file, kept so that the record applies to the same
    /// file whatever it is renamed to, and so that its inode number is not reused while
    /// records name it.
    file: Arc<File>,
    records: VecDeque<Record>,
    bytes: usize,
    /// Set by [`UndoLog::seal`]: the next change gets a record of its own, not merged
    /// into the last one, which an fsync is about to make durable.
    sealed: bool,
}

/// What a power cut discarded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CutReport {
    /// Files that had unsynced changes (and still existed).
    pub files: u64,
    /// Bytes those changes wrote, zeroed, added or removed.
    pub bytes: u64,
    /// Files that could not be restored fully (logged).
    pub errors: u64,
}

/// The undo records of every file, keyed by the file's inode number.
#[derive(Debug)]
pub struct UndoLog {
    files: HashMap<u64, FileLog>,
    total: usize,
    next_seq: u64,
    limits: Limits,
    /// When the last "log full" warning was given, and bytes made durable since.
    last_warning: Option<Instant>,
    evicted_unreported: usize,
}

impl UndoLog {
    /// An empty log.
    pub fn new(limits: Limits) -> UndoLog {
        UndoLog {
            files: HashMap::new(),
            total: 0,
            next_seq: 1,
            limits,
            last_warning: None,
            evicted_unreported: 0,
        }
    }

    /// Bytes held now (saved contents plus overhead).
    pub fn bytes(&self) -> usize {
        self.total
    }

    /// Files with records now.
    pub fn files(&self) -> usize {
        self.files.len()
    }

    /// Records `change`, about to be made to the file `id` (open as `file`, read-write).
    /// A change too large for the whole log makes the file durable instead (its earlier
    /// records are dropped and this one is not kept).
    pub fn push(&mut self, id: u64, file: &Arc<File>, change: Change) {
        let cost = change.cost();
        if cost > self.limits.max_bytes {
            warn!(
                inode = id,
                bytes = change.old_bytes.len(),
                "one change needs more undo than the whole log may hold; treating the file as synced"
            );
            self.make_durable(id);
            return;
        }
        if !self.files.contains_key(&id)
            && self.files.len() >= self.limits.max_files
            && let Some((oldest, _)) = self.oldest_file()
        {
            warn!(
                files = self.files.len(),
                inode = oldest,
                "too many files with unsynced writes; treating the oldest one as synced"
            );
            self.make_durable(oldest);
        }
        let log = self.files.entry(id).or_insert_with(|| FileLog {
            file: Arc::clone(file),
            records: VecDeque::new(),
            bytes: 0,
            sealed: false,
        });
        // Two length-only records in a row: undoing the older one alone gives the same
        // result (it sets a length no greater), so keep only it.
        if !log.sealed
            && change.old_bytes.is_empty()
            && let Some(last) = log.records.back_mut()
            && last.change.old_bytes.is_empty()
            && last.change.old_len <= change.old_len
        {
            last.change.changed += change.changed;
            return;
        }
        log.records.push_back(Record {
            seq: self.next_seq,
            change,
        });
        self.next_seq += 1;
        log.bytes += cost;
        log.sealed = false;
        self.total += cost;
        if self.total > self.limits.max_bytes {
            self.evict();
        }
    }

    /// Marks the point an fsync of file `id` is about to make durable: returns the
    /// sequence number of its newest record (none if it has none) and makes the next
    /// change start a record of its own.
    pub fn seal(&mut self, id: u64) -> Option<u64> {
        let log = self.files.get_mut(&id)?;
        log.sealed = true;
        log.records.back().map(|r| r.seq)
    }

    /// Drops the records of file `id` up to and including `seq` (from [`seal`]): the
    /// backing file has been fsynced since.
    ///
    /// [`seal`]: UndoLog::seal
    pub fn durable_through(&mut self, id: u64, seq: u64) {
        let Some(log) = self.files.get_mut(&id) else {
            return;
        };
        while log.records.front().is_some_and(|r| r.seq <= seq) {
            if let Some(r) = log.records.pop_front() {
                let cost = r.change.cost();
                log.bytes -= cost;
                self.total -= cost;
            }
        }
        if log.records.is_empty() {
            self.files.remove(&id);
        }
    }

    /// Drops every record of file `id`: all its changes so far count as durable.
    pub fn make_durable(&mut self, id: u64) {
        if let Some(log) = self.files.remove(&id) {
            self.total -= log.bytes;
        }
    }

    /// Drops the records of file `id` if it has no name left (it was unlinked or
    /// renamed over): after a crash it would not exist, whatever was written to it.
    pub fn drop_if_gone(&mut self, id: u64) {
        let gone = self
            .files
            .get(&id)
            .is_some_and(|log| log.file.metadata().is_ok_and(|m| m.nlink() == 0));
        if gone {
            self.make_durable(id);
        }
    }

    /// The file whose oldest record is the oldest of all, and the sequence number of
    /// the oldest record of every other file.
    fn oldest_file(&self) -> Option<(u64, Option<u64>)> {
        let mut best: Option<(u64, u64)> = None;
        let mut runner_up = None;
        for (id, log) in &self.files {
            let Some(front) = log.records.front() else {
                continue;
            };
            match best {
                Some((seq, _)) if seq < front.seq => {
                    runner_up = Some(runner_up.map_or(front.seq, |r: u64| r.min(front.seq)));
                }
                _ => {
                    runner_up = best.map(|(seq, _)| seq);
                    best = Some((front.seq, *id));
                }
            }
        }
        best.map(|(_, id)| (id, runner_up))
    }

    /// Makes the oldest records durable, oldest first across all files, until the log
    /// holds seven eighths of its limit.
    fn evict(&mut self) {
        let target = self.limits.max_bytes / 8 * 7;
        let before = self.total;
        while self.total > target {
            let Some((id, next_oldest)) = self.oldest_file() else {
                break;
            };
            let Some(log) = self.files.get_mut(&id) else {
                break;
            };
            while self.total > target
                && log
                    .records
                    .front()
                    .is_some_and(|r| next_oldest.is_none_or(|n| r.seq < n))
            {
                if let Some(r) = log.records.pop_front() {
                    let cost = r.change.cost();
                    log.bytes -= cost;
                    self.total -= cost;
                }
            }
            if log.records.is_empty() {
                self.files.remove(&id);
            }
        }
        self.evicted_unreported += before - self.total;
        if self.last_warning.is_none_or(|t| t.elapsed() >= WARN_EVERY) {
            warn!(
                limit = self.limits.max_bytes,
                freed = self.evicted_unreported,
                "undo log full; the oldest unsynced writes now count as durable"
            );
            self.last_warning = Some(Instant::now());
            self.evicted_unreported = 0;
        }
    }

    /// Undoes every record, newest first in each file, and fsyncs the files: what a
    /// power cut would have left. Files without a name any more are skipped.
    pub fn apply(self) -> CutReport {
        let mut report = CutReport::default();
        for (id, log) in self.files {
            match log.file.metadata() {
                Ok(m) if m.nlink() == 0 => continue,
                Ok(_) => {}
                Err(e) => {
                    warn!(inode = id, error = %e, "cannot stat a file to restore it");
                    report.errors += 1;
                    continue;
                }
            }
            report.files += 1;
            let changed: u64 = log.records.iter().map(|r| r.change.changed).sum();
            report.bytes += changed;
            info!(inode = id, bytes = changed, "discarding unsynced writes");
            let mut failed = None;
            for r in log.records.iter().rev() {
                if failed.is_some() {
                    continue;
                }
                let c = &r.change;
                let res = if c.old_bytes.is_empty() {
                    Ok(())
                } else {
                    log.file.write_all_at(&c.old_bytes, c.offset)
                }
                .and_then(|()| log.file.set_len(c.old_len));
                failed = res.err();
            }
            if let Err(e) = failed.map_or_else(|| log.file.sync_all(), Err) {
                warn!(inode = id, error = %e, "cannot restore a file to its synced state");
                report.errors += 1;
            }
        }
        report
    }
}

#[cfg(test)]
mod tests {
    use std::fs::OpenOptions;

    use super::*;

    fn open(dir: &tempfile::TempDir, name: &str, content: &[u8]) -> Arc<File> {
        let path = dir.path().join(name);
        std::fs::write(&path, content).expect("write");
        Arc::new(
            OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .expect("open"),
        )
    }

    fn content(f: &File) -> Vec<u8> {
        let len = f.metadata().expect("stat").len();
        let mut buf = vec![0; usize::try_from(len).expect("len")];
        f.read_exact_at(&mut buf, 0).expect("read");
        buf
    }

    /// Writes through the log as the filesystem does: capture, record, write.
    fn write(log: &mut UndoLog, id: u64, f: &Arc<File>, off: u64, data: &[u8]) {
        let old = f.metadata().expect("stat").len();
        let change =
            Change::capture(f, old, off, data.len() as u64, data.len() as u64).expect("capture");
        log.push(id, f, change);
        f.write_all_at(data, off).expect("write");
    }

    fn truncate(log: &mut UndoLog, id: u64, f: &Arc<File>, len: u64) {
        let old = f.metadata().expect("stat").len();
        let change = if len < old {
            Change::capture(f, old, len, old - len, old - len).expect("capture")
        } else {
            Change::resize(old, len - old)
        };
        log.push(id, f, change);
        f.set_len(len).expect("truncate");
    }

    #[test]
    fn apply_restores_writes_and_truncates_in_reverse() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = open(&dir, "a", b"0123456789");
        let mut log = UndoLog::new(Limits::default());
        write(&mut log, 1, &f, 5, b"abcdefgh");
        truncate(&mut log, 1, &f, 3);
        write(&mut log, 1, &f, 20, b"zz");
        truncate(&mut log, 1, &f, 40);
        write(&mut log, 1, &f, 0, b"XY");
        let report = log.apply();
        assert_eq!(content(&f), b"0123456789");
        assert_eq!(report.files, 1);
        assert_eq!(report.bytes, 8 + 10 + 2 + 18 + 2);
    }

    #[test]
    fn durable_through_keeps_what_came_after_the_seal() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = open(&dir, "a", b"");
        let mut log = UndoLog::new(Limits::default());
        write(&mut log, 1, &f, 0, b"synced");
        let seq = log.seal(1).expect("a record");
        // An append after the seal must not merge into the record being made durable.
        write(&mut log, 1, &f, 6, b"-later");
        log.durable_through(1, seq);
        write(&mut log, 1, &f, 0, b"S");
        let report = log.apply();
        assert_eq!(content(&f), b"synced");
        assert_eq!(report.bytes, 7);
    }

    #[test]
    fn appends_merge_into_one_record() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = open(&dir, "a", b"base");
        let mut log = UndoLog::new(Limits::default());
        for _ in 0..1000 {
            write(&mut log, 1, &f, f.metadata().expect("stat").len(), b"x");
        }
        assert_eq!(log.bytes(), RECORD_OVERHEAD);
        let report = log.apply();
        assert_eq!(content(&f), b"base");
        assert_eq!(report.bytes, 1000);
    }

    #[test]
    fn the_memory_bound_makes_the_oldest_records_durable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = open(&dir, "a", &[b'a'; 1000]);
        let b = open(&dir, "b", &[b'b'; 1000]);
        let mut log = UndoLog::new(Limits {
            max_bytes: 3 * (100 + RECORD_OVERHEAD),
            max_files: 100,
        });
        // Four records where three fit: the two oldest (one of each file) become
        // durable, to get down to seven eighths of the limit.
        write(&mut log, 1, &a, 0, &[b'1'; 100]);
        write(&mut log, 2, &b, 0, &[b'2'; 100]);
        write(&mut log, 1, &a, 100, &[b'3'; 100]);
        write(&mut log, 2, &b, 100, &[b'4'; 100]);
        assert_eq!(log.bytes(), 2 * (100 + RECORD_OVERHEAD));
        log.apply();
        let mut want_a = vec![b'a'; 1000];
        want_a[..100].fill(b'1');
        let mut want_b = vec![b'b'; 1000];
        want_b[..100].fill(b'2');
        assert_eq!(content(&a), want_a);
        assert_eq!(content(&b), want_b);
    }

    #[test]
    fn the_file_bound_makes_the_oldest_file_durable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let files: Vec<_> = (0..3).map(|i| open(&dir, &i.to_string(), b"")).collect();
        let mut log = UndoLog::new(Limits {
            max_bytes: 1 << 20,
            max_files: 2,
        });
        for (i, f) in files.iter().enumerate() {
            write(&mut log, i as u64, f, 0, b"data");
        }
        assert_eq!(log.files(), 2);
        log.apply();
        assert_eq!(content(&files[0]), b"data");
        assert_eq!(content(&files[1]), b"");
        assert_eq!(content(&files[2]), b"");
    }

    #[test]
    fn a_change_larger_than_the_log_makes_the_file_durable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = open(&dir, "a", &[7; 4096]);
        let mut log = UndoLog::new(Limits {
            max_bytes: 1024,
            max_files: 10,
        });
        write(&mut log, 1, &f, 4096, b"tail");
        truncate(&mut log, 1, &f, 0);
        assert_eq!(log.files(), 0);
        assert_eq!(log.apply(), CutReport::default());
        assert_eq!(content(&f), b"");
    }

    #[test]
    fn unlinked_files_are_dropped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = open(&dir, "a", b"");
        let mut log = UndoLog::new(Limits::default());
        write(&mut log, 1, &f, 0, b"doomed");
        log.drop_if_gone(1);
        assert_eq!(log.files(), 1);
        std::fs::remove_file(dir.path().join("a")).expect("unlink");
        log.drop_if_gone(1);
        assert_eq!(log.files(), 0);
        assert_eq!(log.bytes(), 0);
    }
}
