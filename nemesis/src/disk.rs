//! Each validator's disk: a small ext4 filesystem in an image file, loop-mounted under the
//! validator's directory and holding its data directory, so that the nemesis can fill it
//! to the last block (and free it again) without touching the machine's own disks.
//!
//! Dropping a [`Disk`] unmounts it; the image stays in the run's directory (a kept run can
//! be inspected with `mount -o loop DIR/validator-<i>/disk.img /mnt`).

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::netns::run;

/// Size of each validator's disk: room for many minutes of the nemesis's load.
pub const DISK_BYTES: u64 = 1 << 30;

/// A mounted disk.
pub struct Disk {
    /// Where it is mounted.
    pub mountpoint: PathBuf,
    mounted: bool,
}

impl Disk {
    /// Makes an image of [`DISK_BYTES`] (sparse) at `image`, an ext4 filesystem in it
    /// with no blocks reserved for root (so full means full, even for root), and mounts
    /// it at `mountpoint`.
    ///
    /// # Errors
    /// When a tool fails (e2fsprogs, util-linux).
    pub fn create(image: &Path, mountpoint: &Path) -> anyhow::Result<Disk> {
        File::create(image)
            .and_then(|f| f.set_len(DISK_BYTES))
            .with_context(|| format!("cannot make {}", image.display()))?;
        let image_str = image.to_str().context("image path is not UTF-8")?;
        let mount_str = mountpoint.to_str().context("mount path is not UTF-8")?;
        run("mkfs.ext4", &["-q", "-F", "-m", "0", image_str])?;
        std::fs::create_dir_all(mountpoint)
            .with_context(|| format!("cannot make {}", mountpoint.display()))?;
        run("mount", &["-o", "loop", image_str, mount_str])?;
        Ok(Disk {
            mountpoint: mountpoint.to_owned(),
            mounted: true,
        })
    }

    fn ballast(&self) -> [PathBuf; 2] {
        [
            self.mountpoint.join("ballast"),
            self.mountpoint.join("ballast-tail"),
        ]
    }

    /// Fills the disk: one file allocated over all the space left, then a second written
    /// until the filesystem refuses another byte. Returns the bytes taken.
    ///
    /// # Errors
    /// When the space cannot be read or the files cannot be made.
    pub fn fill(&self) -> anyhow::Result<u64> {
        let [big, tail] = self.ballast();
        let stat = nix::sys::statvfs::statvfs(&self.mountpoint)
            .with_context(|| format!("cannot read the space of {}", self.mountpoint.display()))?;
        let free = stat.blocks_available() * stat.fragment_size();
        let file = File::create(&big).with_context(|| format!("cannot make {}", big.display()))?;
        let mut taken = 0;
        // Leave a little room for the filesystem's own bookkeeping; the tail takes it.
        if let Some(len) = free.checked_sub(1 << 20).filter(|l| *l > 0) {
            nix::fcntl::fallocate(
                &file,
                nix::fcntl::FallocateFlags::empty(),
                0,
                i64::try_from(len).context("free space out of range")?,
            )
            .with_context(|| format!("cannot allocate {len} bytes in {}", big.display()))?;
            taken += len;
        }
        drop(file);
        let mut tail_file =
            File::create(&tail).with_context(|| format!("cannot make {}", tail.display()))?;
        let block = vec![0u8; 4096];
        loop {
            match tail_file.write(&block) {
                Ok(0) => break,
                Ok(n) => taken += n as u64,
                Err(e) if e.raw_os_error() == Some(nix::libc::ENOSPC) => break,
                Err(e) => return Err(e).context("cannot fill the disk"),
            }
        }
        // Flushed to the filesystem, so the space is truly gone (ENOSPC again if not).
        let _ = tail_file.sync_all();
        Ok(taken)
    }

    /// Frees what [`Disk::fill`] took.
    ///
    /// # Errors
    /// When a ballast file cannot be removed.
    pub fn free(&self) -> anyhow::Result<()> {
        for file in self.ballast() {
            match std::fs::remove_file(&file) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(e).with_context(|| format!("cannot remove {}", file.display()));
                }
            }
        }
        Ok(())
    }
}

impl Drop for Disk {
    fn drop(&mut self) {
        if self.mounted {
            if let Some(m) = self.mountpoint.to_str()
                && let Err(e) = run("umount", &[m])
            {
                tracing::warn!("{e:#}; unmounting lazily");
                let _ = run("umount", &["-l", m]);
            }
            self.mounted = false;
        }
    }
}

/// Unmounts every filesystem mounted at or under `dir` (what a killed earlier run left),
/// deepest first.
///
/// # Errors
/// When `/proc/self/mounts` cannot be read or an unmount fails.
pub fn unmount_under(dir: &Path) -> anyhow::Result<()> {
    let Ok(dir) = dir.canonicalize() else {
        return Ok(());
    };
    let mounts = std::fs::read_to_string("/proc/self/mounts").context("cannot read the mounts")?;
    let mut under: Vec<&str> = mounts
        .lines()
        .filter_map(|l| l.split(' ').nth(1))
        .filter(|m| Path::new(m).starts_with(&dir))
        .collect();
    under.sort_by_key(|m| std::cmp::Reverse(m.len()));
    for m in under {
        if run("umount", &[m]).is_err() {
            run("umount", &["-l", m])?;
        }
    }
    Ok(())
}
