//! The FUSE filesystem: a passthrough of the backing directory that records, before every
//! change to a file's bytes or length, how to undo it (see [`crate::undo`]).
//!
//! Inode numbers are the backing inode numbers (the backing root's and inode 1 swapped,
//! since FUSE's root is 1), so `stat` and `readdir` agree and a file keeps its number
//! across renames. A table maps each inode the kernel holds to its parent and name; a
//! path is built by walking up it, so renaming a directory moves everything under it.
//! Path-based calls on the backing directory run under the table's lock, so they never
//! see a half-done rename. Data calls use the descriptor opened for the handle.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs::{self, File, Metadata, OpenOptions};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    AccessFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation,
    INodeNo, IoctlFlags, LockOwner, OpenAccMode, OpenFlags, PollEvents, PollFlags, PollNotifier,
    RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry,
    ReplyIoctl, ReplyLseek, ReplyOpen, ReplyPoll, ReplyStatfs, ReplyWrite, ReplyXattr, Request,
    TimeOrNow, WriteFlags,
};
use nix::fcntl::{AT_FDCWD, FallocateFlags, OFlag};
use nix::sys::stat::{Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;
use parking_lot::{Mutex, RwLock, RwLockReadGuard};
use tracing::{debug, info};

use crate::undo::{Change, CutReport, Limits, UndoLog};

/// How long the kernel may trust an entry or attributes: not at all, so it never serves
/// a stale size or name.
const TTL: Duration = Duration::ZERO;

/// Locks that serialize the changes to one file (a file uses `inode % STRIPES`), so
/// that its undo records are taken in the order the changes are made.
const STRIPES: usize = 64;

/// Deepest directory nesting followed when building a path.
const MAX_DEPTH: usize = 4096;

/// The FUSE root inode.
const ROOT: u64 = 1;

/// A handle to the filesystem; clones share it. One clone is mounted, another cuts.
#[derive(Clone)]
pub struct LazyFs {
    inner: Arc<Inner>,
}

struct Inner {
    /// True once the power was cut: every operation after that fails with EIO. Every
    /// operation holds it for reading while it runs, so the cut waits for them.
    cut: RwLock<bool>,
    nodes: Mutex<Nodes>,
    handles: Mutex<Handles>,
    stripes: Vec<Mutex<()>>,
    undo: Mutex<UndoLog>,
    limits: Limits,
    root_dev: u64,
    root_ino: u64,
    uid: u32,
    gid: u32,
}

/// Where an inode the kernel knows lives.
struct Node {
    parent: u64,
    /// None once its name was removed (unlinked, or renamed over).
    name: Option<OsString>,
    /// How many times the kernel was given this inode; it forgets them later.
    lookups: u64,
}

struct Nodes {
    root: PathBuf,
    map: HashMap<u64, Node>,
}

impl Nodes {
    fn path(&self, ino: u64) -> Result<PathBuf, Errno> {
        let mut names = Vec::new();
        let mut cur = ino;
        while cur != ROOT {
            let node = self.map.get(&cur).ok_or(Errno::ESTALE)?;
            names.push(node.name.as_ref().ok_or(Errno::ENOENT)?);
            cur = node.parent;
            if names.len() > MAX_DEPTH {
                return Err(Errno::ELOOP);
            }
        }
        let mut path = self.root.clone();
        for name in names.iter().rev() {
            path.push(name);
        }
        Ok(path)
    }

    fn child(&self, parent: u64, name: &OsStr) -> Result<PathBuf, Errno> {
        Ok(self.path(parent)?.join(name))
    }

    /// The kernel was given `ino`, found as `name` in `parent`.
    fn remember(&mut self, ino: u64, parent: u64, name: &OsStr) {
        if ino == ROOT {
            return;
        }
        let node = self.map.entry(ino).or_insert_with(|| Node {
            parent,
            name: None,
            lookups: 0,
        });
        node.parent = parent;
        node.name = Some(name.to_owned());
        node.lookups += 1;
    }

    /// `ino`, if known, is now `name` in `parent`.
    fn moved(&mut self, ino: u64, parent: u64, name: &OsStr) {
        if let Some(node) = self.map.get_mut(&ino) {
            node.parent = parent;
            node.name = Some(name.to_owned());
        }
    }

    /// The name `name` in `parent` was removed; if it was the one `ino` is known by,
    /// `ino` has no name now (until a lookup finds another link).
    fn removed(&mut self, ino: u64, parent: u64, name: &OsStr) {
        if let Some(node) = self.map.get_mut(&ino)
            && node.parent == parent
            && node.name.as_deref() == Some(name)
        {
            node.name = None;
        }
    }
}

/// An open file.
struct OpenFile {
    file: Arc<File>,
    ino: u64,
    writable: bool,
    /// Opened with O_SYNC or O_DSYNC: every write is durable when it returns.
    sync_writes: bool,
}

enum Handle {
    File(Arc<OpenFile>),
    /// An open directory: its entries as read at opendir (inode, type, name).
    Dir(Arc<Vec<(u64, FileType, OsString)>>),
}

#[derive(Default)]
struct Handles {
    next: u64,
    map: HashMap<u64, Handle>,
}

fn errno(e: io::Error) -> Errno {
    Errno::from(e)
}

fn nix_errno(e: nix::errno::Errno) -> Errno {
    Errno::from_i32(e as i32)
}

fn system_time(secs: i64, nsecs: i64) -> SystemTime {
    let nsecs = u32::try_from(nsecs).unwrap_or(0);
    if secs >= 0 {
        UNIX_EPOCH + Duration::new(secs.unsigned_abs(), nsecs)
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs()) + Duration::new(0, nsecs)
    }
}

fn time_spec(t: Option<TimeOrNow>) -> TimeSpec {
    match t {
        None => TimeSpec::UTIME_OMIT,
        Some(TimeOrNow::Now) => TimeSpec::UTIME_NOW,
        Some(TimeOrNow::SpecificTime(t)) => match t.duration_since(UNIX_EPOCH) {
            Ok(d) => TimeSpec::from_duration(d),
            Err(e) => {
                let d = e.duration();
                let secs = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
                // Negative seconds and a positive nanosecond part, as timespec wants.
                if d.subsec_nanos() == 0 {
                    TimeSpec::new(-secs, 0)
                } else {
                    TimeSpec::new(-secs - 1, 1_000_000_000 - i64::from(d.subsec_nanos()))
                }
            }
        },
    }
}

fn file_type(mode: u32) -> FileType {
    match SFlag::from_bits_truncate(mode & SFlag::S_IFMT.bits()) {
        SFlag::S_IFDIR => FileType::Directory,
        SFlag::S_IFLNK => FileType::Symlink,
        SFlag::S_IFIFO => FileType::NamedPipe,
        SFlag::S_IFSOCK => FileType::Socket,
        SFlag::S_IFCHR => FileType::CharDevice,
        SFlag::S_IFBLK => FileType::BlockDevice,
        _ => FileType::RegularFile,
    }
}

/// Reads up to `size` bytes at `offset`, fewer only at the end of the file.
fn read_full(file: &File, offset: u64, size: usize) -> io::Result<Vec<u8>> {
    let mut buf = vec![0; size];
    let mut got = 0;
    while got < size {
        match file.read_at(&mut buf[got..], offset + got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(got);
    Ok(buf)
}

/// Writes all of `data` at `offset`; on an error after some bytes, returns how many.
fn write_full(file: &File, offset: u64, data: &[u8]) -> Result<usize, (usize, io::Error)> {
    let mut done = 0;
    while done < data.len() {
        match file.write_at(&data[done..], offset + done as u64) {
            Ok(0) => return Err((done, io::Error::from_raw_os_error(nix::libc::ENOSPC))),
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err((done, e)),
        }
    }
    Ok(done)
}

impl LazyFs {
    /// A filesystem serving `backing` (an existing directory, on one filesystem), whose
    /// undo log stays within `limits`.
    ///
    /// # Errors
    /// When `backing` cannot be read.
    pub fn new(backing: &Path, limits: Limits) -> io::Result<LazyFs> {
        let md = fs::metadata(backing)?;
        if !md.is_dir() {
            return Err(io::Error::from_raw_os_error(nix::libc::ENOTDIR));
        }
        Ok(LazyFs {
            inner: Arc::new(Inner {
                cut: RwLock::new(false),
                nodes: Mutex::new(Nodes {
                    root: backing.to_owned(),
                    map: HashMap::new(),
                }),
                handles: Mutex::new(Handles::default()),
                stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
                undo: Mutex::new(UndoLog::new(limits)),
                limits,
                root_dev: md.dev(),
                root_ino: md.ino(),
                uid: nix::unistd::geteuid().as_raw(),
                gid: nix::unistd::getegid().as_raw(),
            }),
        })
    }

    /// Cuts the power: waits for the operations under way, fails every later one with
    /// EIO, undoes every change not made durable and fsyncs the files it restored.
    /// A second cut does nothing.
    pub fn cut(&self) -> CutReport {
        let mut cut = self.inner.cut.write();
        if *cut {
            return CutReport::default();
        }
        *cut = true;
        let log = std::mem::replace(
            &mut *self.inner.undo.lock(),
            UndoLog::new(self.inner.limits),
        );
        // The descriptors of open files are not needed any more.
        self.inner.handles.lock().map.clear();
        log.apply()
    }
}

impl Inner {
    /// Admits an operation: None once the power was cut.
    fn enter(&self) -> Option<RwLockReadGuard<'_, bool>> {
        let guard = self.cut.read();
        if *guard { None } else { Some(guard) }
    }

    /// The FUSE inode number of a backing inode number.
    fn nodeid(&self, ino: u64) -> u64 {
        if ino == self.root_ino {
            ROOT
        } else if ino == ROOT {
            self.root_ino
        } else {
            ino
        }
    }

    fn attr(&self, md: &Metadata) -> Result<FileAttr, Errno> {
        if md.dev() != self.root_dev {
            // Another filesystem mounted inside the backing directory: its inode
            // numbers would clash with ours.
            return Err(Errno::EXDEV);
        }
        Ok(FileAttr {
            ino: INodeNo(self.nodeid(md.ino())),
            size: md.size(),
            blocks: md.blocks(),
            atime: system_time(md.atime(), md.atime_nsec()),
            mtime: system_time(md.mtime(), md.mtime_nsec()),
            ctime: system_time(md.ctime(), md.ctime_nsec()),
            crtime: UNIX_EPOCH,
            kind: file_type(md.mode()),
            perm: (md.mode() & 0o7777) as u16,
            nlink: u32::try_from(md.nlink()).unwrap_or(u32::MAX),
            uid: md.uid(),
            gid: md.gid(),
            rdev: u32::try_from(md.rdev()).unwrap_or(0),
            blksize: u32::try_from(md.blksize()).unwrap_or(4096),
            flags: 0,
        })
    }

    fn stripe(&self, ino: u64) -> &Mutex<()> {
        &self.stripes[(ino % STRIPES as u64) as usize]
    }

    fn open_file(&self, fh: FileHandle) -> Result<Arc<OpenFile>, Errno> {
        match self.handles.lock().map.get(&fh.0) {
            Some(Handle::File(f)) => Ok(Arc::clone(f)),
            Some(Handle::Dir(_)) => Err(Errno::EISDIR),
            None => Err(Errno::EBADF),
        }
    }

    fn add_handle(&self, handle: Handle) -> FileHandle {
        let mut handles = self.handles.lock();
        handles.next += 1;
        let fh = handles.next;
        handles.map.insert(fh, handle);
        FileHandle(fh)
    }

    /// Gives a file made for `req` its caller's owner, as the kernel would.
    fn chown_new(&self, req: &Request, path: &Path) -> io::Result<()> {
        if req.uid() != self.uid || req.gid() != self.gid {
            std::os::unix::fs::lchown(path, Some(req.uid()), Some(req.gid()))?;
        }
        Ok(())
    }

    /// Sets the length of `file` (inode `ino`, open read-write), recording the undo.
    fn truncate(&self, ino: u64, file: &Arc<File>, len: u64) -> Result<(), Errno> {
        let _stripe = self.stripe(ino).lock();
        let old = file.metadata().map_err(errno)?.len();
        if len != old {
            let change = if len < old {
                Change::capture(file, old, len, old - len, old - len).map_err(errno)?
            } else {
                Change::resize(old, len - old)
            };
            self.undo.lock().push(ino, file, change);
        }
        file.set_len(len).map_err(errno)
    }

    /// Makes the entry `name` in `parent` with `make` (given its backing path), gives it
    /// the caller's owner, and returns its attributes for the kernel.
    fn make_entry(
        &self,
        req: &Request,
        parent: u64,
        name: &OsStr,
        make: impl FnOnce(&Path) -> Result<(), Errno>,
    ) -> Result<FileAttr, Errno> {
        let mut nodes = self.nodes.lock();
        let path = nodes.child(parent, name)?;
        make(&path)?;
        self.chown_new(req, &path).map_err(errno)?;
        self.entry(parent, name, &path, &mut nodes)
    }

    /// A file's entry for the kernel, after the file was made or found at `path`.
    fn entry(
        &self,
        parent: u64,
        name: &OsStr,
        path: &Path,
        nodes: &mut Nodes,
    ) -> Result<FileAttr, Errno> {
        let md = fs::symlink_metadata(path).map_err(errno)?;
        let attr = self.attr(&md)?;
        nodes.remember(attr.ino.0, parent, name);
        Ok(attr)
    }

    #[allow(clippy::too_many_arguments)]
    fn do_setattr(
        &self,
        ino: u64,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        fh: Option<FileHandle>,
    ) -> Result<FileAttr, Errno> {
        let handle = fh.and_then(|fh| self.open_file(fh).ok());
        // A descriptor that can change the file: the handle's, or one opened now.
        let writable = handle
            .as_ref()
            .filter(|h| h.writable)
            .map(|h| Arc::clone(&h.file));
        if let Some(len) = size {
            let file = match writable {
                Some(f) => f,
                None => {
                    let nodes = self.nodes.lock();
                    let path = nodes.path(ino)?;
                    Arc::new(
                        OpenOptions::new()
                            .read(true)
                            .write(true)
                            .open(path)
                            .map_err(errno)?,
                    )
                }
            };
            self.truncate(ino, &file, len)?;
        }
        let nodes = self.nodes.lock();
        let file = handle.as_ref().map(|h| &h.file);
        if let Some(mode) = mode {
            let perm = fs::Permissions::from_mode(mode & 0o7777);
            match file {
                Some(f) => f.set_permissions(perm),
                None => fs::set_permissions(nodes.path(ino)?, perm),
            }
            .map_err(errno)?;
        }
        if uid.is_some() || gid.is_some() {
            match file {
                Some(f) => std::os::unix::fs::fchown(f.as_ref(), uid, gid),
                None => std::os::unix::fs::lchown(nodes.path(ino)?, uid, gid),
            }
            .map_err(errno)?;
        }
        if atime.is_some() || mtime.is_some() {
            let (a, m) = (time_spec(atime), time_spec(mtime));
            match file {
                Some(f) => nix::sys::stat::futimens(f.as_ref(), &a, &m),
                None => nix::sys::stat::utimensat(
                    AT_FDCWD,
                    &nodes.path(ino)?,
                    &a,
                    &m,
                    UtimensatFlags::NoFollowSymlink,
                ),
            }
            .map_err(nix_errno)?;
        }
        let md = match file {
            Some(f) => f.metadata(),
            None => fs::symlink_metadata(nodes.path(ino)?),
        }
        .map_err(errno)?;
        self.attr(&md)
    }

    fn do_open(&self, ino: u64, flags: OpenFlags) -> Result<FileHandle, Errno> {
        let writable = flags.acc_mode() != OpenAccMode::O_RDONLY;
        let oflags = OFlag::from_bits_truncate(flags.0);
        let file = {
            let nodes = self.nodes.lock();
            let path = nodes.path(ino)?;
            // Read-write whenever writable: the undo needs to read what a write replaces.
            // O_APPEND, O_DIRECT and the sync flags are handled here, not passed on (the
            // kernel gives every write its offset).
            OpenOptions::new()
                .read(true)
                .write(writable)
                .open(path)
                .map_err(errno)?
        };
        let file = Arc::new(file);
        let ino = self.nodeid(file.metadata().map_err(errno)?.ino());
        if writable && oflags.contains(OFlag::O_TRUNC) {
            self.truncate(ino, &file, 0)?;
        }
        Ok(self.add_handle(Handle::File(Arc::new(OpenFile {
            file,
            ino,
            writable,
            sync_writes: oflags.contains(OFlag::O_DSYNC),
        }))))
    }

    fn do_create(
        &self,
        req: &Request,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
    ) -> Result<(FileAttr, FileHandle), Errno> {
        let oflags = OFlag::from_bits_truncate(flags);
        let (attr, file) = {
            let mut nodes = self.nodes.lock();
            let path = nodes.child(parent, name)?;
            let existed = fs::symlink_metadata(&path).is_ok();
            let mut opts = OpenOptions::new();
            opts.read(true).write(true).mode(mode & !umask & 0o7777);
            if oflags.contains(OFlag::O_EXCL) {
                opts.create_new(true);
            } else {
                opts.create(true);
            }
            let file = opts.open(&path).map_err(errno)?;
            if !existed {
                self.chown_new(req, &path).map_err(errno)?;
            }
            let attr = self.attr(&file.metadata().map_err(errno)?)?;
            nodes.remember(attr.ino.0, parent, name);
            (attr, Arc::new(file))
        };
        let ino = attr.ino.0;
        let attr = if oflags.contains(OFlag::O_TRUNC) && attr.size > 0 {
            self.truncate(ino, &file, 0)?;
            self.attr(&file.metadata().map_err(errno)?)?
        } else {
            attr
        };
        let fh = self.add_handle(Handle::File(Arc::new(OpenFile {
            file,
            ino,
            writable: true,
            sync_writes: oflags.contains(OFlag::O_DSYNC),
        })));
        Ok((attr, fh))
    }

    fn do_write(&self, fh: FileHandle, offset: u64, data: &[u8]) -> Result<u32, Errno> {
        let h = self.open_file(fh)?;
        if !h.writable {
            return Err(Errno::EBADF);
        }
        let len = u32::try_from(data.len()).map_err(|_| Errno::EINVAL)?;
        let _stripe = self.stripe(h.ino).lock();
        if h.sync_writes {
            // O_SYNC / O_DSYNC: durable on return, and so (more than the kernel
            // promises, never less) is everything written to the file before.
            write_full(&h.file, offset, data).map_err(|(_, e)| errno(e))?;
            h.file.sync_data().map_err(errno)?;
            self.undo.lock().make_durable(h.ino);
            return Ok(len);
        }
        let old = h.file.metadata().map_err(errno)?.len();
        let change = if offset >= old {
            Change::resize(old, data.len() as u64)
        } else {
            Change::capture(&h.file, old, offset, data.len() as u64, data.len() as u64)
                .map_err(errno)?
        };
        self.undo.lock().push(h.ino, &h.file, change);
        match write_full(&h.file, offset, data) {
            Ok(_) => Ok(len),
            // Short write: report what was written; the kernel retries or fails the rest.
            Err((done, _)) if done > 0 => Ok(done as u32),
            Err((_, e)) => Err(errno(e)),
        }
    }

    fn do_fsync(&self, fh: FileHandle, datasync: bool) -> Result<(), Errno> {
        let h = self.open_file(fh)?;
        let seal = {
            let _stripe = self.stripe(h.ino).lock();
            self.undo.lock().seal(h.ino)
        };
        if datasync {
            h.file.sync_data()
        } else {
            h.file.sync_all()
        }
        .map_err(errno)?;
        if let Some(seq) = seal {
            self.undo.lock().durable_through(h.ino, seq);
        }
        Ok(())
    }

    fn do_fallocate(
        &self,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
    ) -> Result<(), Errno> {
        let h = self.open_file(fh)?;
        if !h.writable {
            return Err(Errno::EBADF);
        }
        let flags = FallocateFlags::from_bits(mode).ok_or(Errno::EOPNOTSUPP)?;
        let keep = flags.contains(FallocateFlags::FALLOC_FL_KEEP_SIZE);
        let zeroes = flags.intersects(
            FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_ZERO_RANGE,
        );
        let supported = FallocateFlags::FALLOC_FL_KEEP_SIZE
            | FallocateFlags::FALLOC_FL_PUNCH_HOLE
            | FallocateFlags::FALLOC_FL_ZERO_RANGE;
        if !supported.contains(flags) {
            // Collapsing, inserting and unsharing ranges are not modelled.
            return Err(Errno::EOPNOTSUPP);
        }
        let off = i64::try_from(offset).map_err(|_| Errno::EINVAL)?;
        let len = i64::try_from(length).map_err(|_| Errno::EINVAL)?;
        let _stripe = self.stripe(h.ino).lock();
        let old = h.file.metadata().map_err(errno)?.len();
        let end = offset.saturating_add(length);
        let new_len = if keep { old } else { old.max(end) };
        let zeroed = if zeroes {
            end.min(old).saturating_sub(offset)
        } else {
            0
        };
        if zeroed > 0 || new_len != old {
            let change = if zeroed > 0 {
                Change::capture(&h.file, old, offset, length, zeroed + (new_len - old))
                    .map_err(errno)?
            } else {
                Change::resize(old, new_len - old)
            };
            self.undo.lock().push(h.ino, &h.file, change);
        }
        nix::fcntl::fallocate(h.file.as_ref(), flags, off, len).map_err(nix_errno)
    }

    fn do_rename(
        &self,
        parent: u64,
        name: &OsStr,
        newparent: u64,
        newname: &OsStr,
        flags: RenameFlags,
    ) -> Result<(), Errno> {
        let victim = {
            let mut nodes = self.nodes.lock();
            let src = nodes.child(parent, name)?;
            let dst = nodes.child(newparent, newname)?;
            let src_md = fs::symlink_metadata(&src).map_err(errno)?;
            let dst_md = fs::symlink_metadata(&dst).ok();
            if flags.is_empty() {
                fs::rename(&src, &dst).map_err(errno)?;
            } else {
                nix::fcntl::renameat2(
                    AT_FDCWD,
                    &src,
                    AT_FDCWD,
                    &dst,
                    nix::fcntl::RenameFlags::from_bits_truncate(flags.bits()),
                )
                .map_err(nix_errno)?;
            }
            let moved = self.nodeid(src_md.ino());
            let other = dst_md.as_ref().map(|m| self.nodeid(m.ino()));
            if flags.contains(RenameFlags::RENAME_EXCHANGE) {
                nodes.moved(moved, newparent, newname);
                if let Some(other) = other {
                    nodes.moved(other, parent, name);
                }
                None
            } else {
                let victim = other.filter(|&v| v != moved);
                if let Some(v) = victim {
                    nodes.removed(v, newparent, newname);
                }
                nodes.moved(moved, newparent, newname);
                victim
            }
        };
        if let Some(v) = victim {
            self.undo.lock().drop_if_gone(v);
        }
        Ok(())
    }

    fn do_unlink(&self, parent: u64, name: &OsStr, dir: bool) -> Result<(), Errno> {
        let ino = {
            let mut nodes = self.nodes.lock();
            let path = nodes.child(parent, name)?;
            let md = fs::symlink_metadata(&path).map_err(errno)?;
            if dir {
                fs::remove_dir(&path)
            } else {
                fs::remove_file(&path)
            }
            .map_err(errno)?;
            let ino = self.nodeid(md.ino());
            nodes.removed(ino, parent, name);
            ino
        };
        if !dir {
            self.undo.lock().drop_if_gone(ino);
        }
        Ok(())
    }

    fn do_opendir(&self, ino: u64) -> Result<FileHandle, Errno> {
        let nodes = self.nodes.lock();
        let path = nodes.path(ino)?;
        let parent = nodes.map.get(&ino).map_or(ROOT, |n| n.parent);
        let mut entries = vec![
            (ino, FileType::Directory, OsString::from(".")),
            (parent, FileType::Directory, OsString::from("..")),
        ];
        for entry in fs::read_dir(&path).map_err(errno)? {
            let entry = entry.map_err(errno)?;
            let kind = entry
                .file_type()
                .ok()
                .and_then(FileType::from_std)
                .unwrap_or(FileType::RegularFile);
            let d_ino = std::os::unix::fs::DirEntryExt::ino(&entry);
            entries.push((self.nodeid(d_ino), kind, entry.file_name()));
        }
        drop(nodes);
        Ok(self.add_handle(Handle::Dir(Arc::new(entries))))
    }
}

/// Replies with the result of `$body` through `$reply.$ok(...)`, or EIO once the power
/// was cut.
macro_rules! serve {
    ($self:ident, $reply:ident, |$v:pat_param| $ok:expr, $body:expr) => {{
        let Some(_gate) = $self.inner.enter() else {
            $reply.error(Errno::EIO);
            return;
        };
        match $body {
            Ok($v) => $ok,
            Err(e) => $reply.error(e),
        }
    }};
}

impl Filesystem for LazyFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let i = &self.inner;
        serve!(
            self,
            reply,
            |attr| reply.entry(&TTL, &attr, Generation(0)),
            {
                let mut nodes = i.nodes.lock();
                nodes
                    .child(parent.0, name)
                    .and_then(|path| i.entry(parent.0, name, &path, &mut nodes))
            }
        )
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        let mut nodes = self.inner.nodes.lock();
        if let Some(node) = nodes.map.get_mut(&ino.0) {
            node.lookups = node.lookups.saturating_sub(nlookup);
            if node.lookups == 0 {
                nodes.map.remove(&ino.0);
            }
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        let i = &self.inner;
        serve!(self, reply, |attr| reply.attr(&TTL, &attr), {
            match fh.and_then(|fh| i.open_file(fh).ok()) {
                Some(h) => h.file.metadata().map_err(errno),
                None => {
                    let nodes = i.nodes.lock();
                    nodes
                        .path(ino.0)
                        .and_then(|p| fs::symlink_metadata(p).map_err(errno))
                }
            }
            .and_then(|md| i.attr(&md))
        })
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        serve!(
            self,
            reply,
            |attr| reply.attr(&TTL, &attr),
            self.inner
                .do_setattr(ino.0, mode, uid, gid, size, atime, mtime, fh)
        )
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let i = &self.inner;
        serve!(
            self,
            reply,
            |target| reply.data(target.as_os_str().as_bytes()),
            {
                let nodes = i.nodes.lock();
                nodes
                    .path(ino.0)
                    .and_then(|p| fs::read_link(p).map_err(errno))
            }
        )
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let i = &self.inner;
        serve!(
            self,
            reply,
            |attr| reply.entry(&TTL, &attr, Generation(0)),
            i.make_entry(req, parent.0, name, |path| {
                nix::sys::stat::mknod(
                    path,
                    SFlag::from_bits_truncate(mode & SFlag::S_IFMT.bits()),
                    Mode::from_bits_truncate(mode & !umask & 0o7777),
                    u64::from(rdev),
                )
                .map_err(nix_errno)
            })
        )
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let i = &self.inner;
        serve!(
            self,
            reply,
            |attr| reply.entry(&TTL, &attr, Generation(0)),
            i.make_entry(req, parent.0, name, |path| {
                fs::DirBuilder::new()
                    .mode(mode & !umask & 0o7777)
                    .create(path)
                    .map_err(errno)
            })
        )
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        serve!(
            self,
            reply,
            |()| reply.ok(),
            self.inner.do_unlink(parent.0, name, false)
        )
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        serve!(
            self,
            reply,
            |()| reply.ok(),
            self.inner.do_unlink(parent.0, name, true)
        )
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let i = &self.inner;
        serve!(
            self,
            reply,
            |attr| reply.entry(&TTL, &attr, Generation(0)),
            i.make_entry(req, parent.0, link_name, |path| {
                std::os::unix::fs::symlink(target, path).map_err(errno)
            })
        )
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        serve!(
            self,
            reply,
            |()| reply.ok(),
            self.inner
                .do_rename(parent.0, name, newparent.0, newname, flags)
        )
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let i = &self.inner;
        serve!(
            self,
            reply,
            |attr| reply.entry(&TTL, &attr, Generation(0)),
            {
                let mut nodes = i.nodes.lock();
                nodes.path(ino.0).and_then(|src| {
                    let dst = nodes.child(newparent.0, newname)?;
                    fs::hard_link(src, &dst).map_err(errno)?;
                    i.entry(newparent.0, newname, &dst, &mut nodes)
                })
            }
        )
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        serve!(
            self,
            reply,
            |fh| reply.opened(fh, FopenFlags::empty()),
            self.inner.do_open(ino.0, flags)
        )
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let i = &self.inner;
        serve!(self, reply, |data| reply.data(&data), {
            i.open_file(fh)
                .and_then(|h| read_full(&h.file, offset, size as usize).map_err(errno))
        })
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        serve!(
            self,
            reply,
            |n| reply.written(n),
            self.inner.do_write(fh, offset, data)
        )
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // close() makes nothing durable.
        serve!(self, reply, |()| reply.ok(), Ok::<(), Errno>(()))
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.inner.handles.lock().map.remove(&fh.0);
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        serve!(
            self,
            reply,
            |()| reply.ok(),
            self.inner.do_fsync(fh, datasync)
        )
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        serve!(
            self,
            reply,
            |fh| reply.opened(fh, FopenFlags::empty()),
            self.inner.do_opendir(ino.0)
        )
    }

    fn readdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let i = &self.inner;
        let entries = {
            let Some(_gate) = i.enter() else {
                reply.error(Errno::EIO);
                return;
            };
            match i.handles.lock().map.get(&fh.0) {
                Some(Handle::Dir(entries)) => Arc::clone(entries),
                Some(Handle::File(_)) => return reply.error(Errno::ENOTDIR),
                None => return reply.error(Errno::EBADF),
            }
        };
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        for (n, (ino, kind, name)) in entries.iter().enumerate().skip(start) {
            if reply.add(INodeNo(*ino), n as u64 + 1, *kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.inner.handles.lock().map.remove(&fh.0);
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        // Directory entries are durable already; this only syncs the backing directory.
        let i = &self.inner;
        serve!(self, reply, |()| reply.ok(), {
            let path = i.nodes.lock().path(ino.0);
            path.and_then(|p| File::open(p).and_then(|d| d.sync_all()).map_err(errno))
        })
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let i = &self.inner;
        serve!(
            self,
            reply,
            |s| reply.statfs(
                s.blocks(),
                s.blocks_free(),
                s.blocks_available(),
                s.files(),
                s.files_free(),
                u32::try_from(s.block_size()).unwrap_or(4096),
                u32::try_from(s.name_max()).unwrap_or(255),
                u32::try_from(s.fragment_size()).unwrap_or(4096),
            ),
            {
                let root = i.nodes.lock().root.clone();
                nix::sys::statvfs::statvfs(&root).map_err(nix_errno)
            }
        )
    }

    fn access(&self, _req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        let i = &self.inner;
        serve!(self, reply, |()| reply.ok(), {
            let nodes = i.nodes.lock();
            nodes.path(ino.0).and_then(|p| {
                nix::unistd::access(
                    &p,
                    nix::unistd::AccessFlags::from_bits_truncate(mask.bits()),
                )
                .map_err(nix_errno)
            })
        })
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        serve!(
            self,
            reply,
            |(attr, fh)| reply.created(&TTL, &attr, Generation(0), fh, FopenFlags::empty()),
            self.inner
                .do_create(req, parent.0, name, mode, umask, flags)
        )
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        serve!(
            self,
            reply,
            |()| reply.ok(),
            self.inner.do_fallocate(fh, offset, length, mode)
        )
    }

    // Not supported; answered without the library's warning so the log stays quiet.
    // The kernel stops asking after the first ENOSYS.

    fn getxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _size: u32,
        reply: ReplyXattr,
    ) {
        reply.error(Errno::ENOSYS);
    }

    fn listxattr(&self, _req: &Request, _ino: INodeNo, _size: u32, reply: ReplyXattr) {
        reply.error(Errno::ENOSYS);
    }

    fn setxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _value: &[u8],
        _flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::ENOSYS);
    }

    fn removexattr(&self, _req: &Request, _ino: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::ENOSYS);
    }

    fn lseek(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: i64,
        _whence: i32,
        reply: ReplyLseek,
    ) {
        reply.error(Errno::ENOSYS);
    }

    fn copy_file_range(
        &self,
        _req: &Request,
        _ino_in: INodeNo,
        _fh_in: FileHandle,
        _offset_in: u64,
        _ino_out: INodeNo,
        _fh_out: FileHandle,
        _offset_out: u64,
        _len: u64,
        _flags: fuser::CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        // The kernel then copies through read and write, which are recorded.
        reply.error(Errno::ENOSYS);
    }

    fn ioctl(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: IoctlFlags,
        cmd: u32,
        _in_data: &[u8],
        _out_size: u32,
        reply: ReplyIoctl,
    ) {
        debug!(cmd, "ioctl not supported");
        reply.error(Errno::ENOTTY);
    }

    fn poll(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _ph: PollNotifier,
        _events: PollEvents,
        _flags: PollFlags,
        reply: ReplyPoll,
    ) {
        reply.error(Errno::ENOSYS);
    }

    fn destroy(&mut self) {
        let undo = self.inner.undo.lock();
        if undo.files() > 0 && !*self.inner.cut.read() {
            info!(
                files = undo.files(),
                "unmounted with unsynced writes; they stay on the backing files"
            );
        }
    }
}
