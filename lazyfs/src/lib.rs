//! `ordo-lazyfs`: a FUSE filesystem that passes everything through to a backing directory
//! and, when told the power was cut, loses every write that was not fsynced — the way
//! LazyFS does for etcd's robustness tests. The nemesis mounts one under each validator's
//! data directory, kills the validator, cuts the power, remounts and restarts it, and
//! checks that nothing acknowledged as committed was lost.
//!
//! # What is modelled
//!
//! Data only. Every write, size change (truncate) and fallocate that changes a file's
//! bytes or length goes straight to the backing file, but first records, for that file,
//! how to undo it: the bytes it overwrites inside the old length, and the old length.
//! The record follows the file (by inode, through a descriptor kept open), not its name,
//! so renames do not lose it.
//!
//! - `fsync` or `fdatasync` on any handle of a file fsyncs the backing file and then
//!   makes everything recorded for that file before the call durable (drops it).
//! - A write through a handle opened with `O_SYNC` or `O_DSYNC` is durable when it
//!   returns, and makes the whole file durable (a little more than a disk promises,
//!   never less).
//! - Directory entries (create, mkdir, symlink, link, rename, unlink, rmdir) are durable
//!   at once: ext4's journal usually makes them so, although POSIX asks for an fsync of
//!   the directory (which RocksDB does anyway). A file created and written but never
//!   fsynced therefore survives a cut, empty (or at its last fsynced length).
//! - fallocate: mode 0 and `FALLOC_FL_KEEP_SIZE`, `FALLOC_FL_PUNCH_HOLE` and
//!   `FALLOC_FL_ZERO_RANGE` are recorded like writes (a size change, zeroed bytes).
//!   Collapsing, inserting and unsharing ranges fail with EOPNOTSUPP.
//! - Power cut (SIGUSR1): the daemon stops serving (operations still arriving get EIO),
//!   waits for those under way, undoes every record of every file newest first
//!   (restoring overwritten bytes, truncating back to the old length; files deleted since
//!   are simply gone), fsyncs the restored files, prints one line
//!   `cut: <files> files, <bytes> bytes of unsynced writes discarded`, unmounts and exits.
//!   `<bytes>` counts the bytes the discarded changes wrote, zeroed, added or removed.
//!
//! # What is not modelled
//!
//! - Torn or reordered writes: an unsynced write is lost whole; none is half-applied,
//!   and the lost writes are not a random subset (a real disk may keep some of them).
//! - Metadata loss: no directory entry, permission, owner or timestamp is ever rolled
//!   back (a file's length is data here, and is).
//! - `sync(2)` and `syncfs(2)`: the kernel does not pass them to FUSE, so they make
//!   nothing durable here. `sync_file_range` does not either (nor does it on a disk).
//! - Shared writable `mmap`: pages reach the filesystem only when the kernel writes them
//!   back; they are recorded like writes then, and are lost if that is after the cut.
//! - `O_DIRECT` is accepted but served through the daemon like any other write (so it is
//!   unsynced until an fsync, as with a disk's volatile cache).
//! - Locks (`fcntl`, `flock`) are kept by the kernel for this mount only; they vanish
//!   with the mount, as on a crash.
//! - The kernel's page cache: writes go through to the daemon at once (no writeback
//!   cache), attributes and entries are never cached (TTL 0), and a fresh mount has an
//!   empty cache, so nothing the cut discarded can be read back after the remount. The
//!   discarded bytes may still be in the *old* mount's cache, which is why the daemon
//!   unmounts and the caller must start a fresh one.
//!
//! # Limits
//!
//! The undo log holds at most [`undo::Limits::max_bytes`] (512 MiB by default) of saved
//! bytes plus overhead; past that the oldest records, across all files, are made durable
//! (dropped) down to seven eighths of it, with a warning. A single change needing more
//! than the whole limit makes its file durable instead. At most
//! [`undo::Limits::max_files`] files (4096) may have records at once; past that the file
//! with the oldest record is made durable. Consecutive appends share one record, so a
//! log that is only appended to costs almost nothing until its next fsync.
//!
//! # Running it
//!
//! `ordo-lazyfs --backing DIR --mount DIR` (as root) prints `mounted` once it serves. To
//! cut the power: kill every process using the mount, send SIGUSR1, read the `cut:` line,
//! wait for the exit, then start a fresh `ordo-lazyfs` on the same directories. SIGTERM
//! or SIGINT unmounts and exits keeping everything. If the mount is still busy when it
//! should unmount, it is detached lazily and the daemon exits at the latest ten seconds
//! later (the remaining users then get ENOTCONN). A dead mount left by a daemon that was
//! killed is detached by the next one started on it.
//!
//! The backing directory must be one filesystem (entries on another one fail with
//! EXDEV) and must not contain the mount point, nor lie under it.

pub mod fs;
pub mod undo;
