//! `libordo_slowdisk.so`: preloaded into a validator (`LD_PRELOAD`), it makes the disk slow
//! on purpose. Every `fsync`, `fdatasync` and `sync_file_range` first sleeps for the number
//! of milliseconds written in the file named by `ORDO_SLOWDISK_FILE` (none when the variable
//! is unset, or the file is missing, empty or not a number), then does what it was asked.
//! The file is read again at most every [`REREAD`], so a test changes the delay of a
//! running process by rewriting it.
//!
//! Test code only: the nemesis (`slow-disk-*` faults) and the slow-leader tests load it;
//! nothing ordo ships links it.

use std::ffi::{CStr, c_int, c_uint, c_void};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How often the delay file is read again.
pub const REREAD: Duration = Duration::from_millis(50);

/// The variable naming the delay file.
const FILE_VAR: &str = "ORDO_SLOWDISK_FILE";

/// The delay last read, and when.
static DELAY: Mutex<Option<(Instant, Duration)>> = Mutex::new(None);

/// The delay now: from the cache, or the file when the cache is older than [`REREAD`].
fn delay() -> Duration {
    let now = Instant::now();
    let mut cached = DELAY.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((at, d)) = *cached
        && now.duration_since(at) < REREAD
    {
        return d;
    }
    let d = std::env::var_os(FILE_VAR)
        .and_then(|path| std::fs::read_to_string(path).ok())
        .and_then(|text| text.trim().parse::<u64>().ok())
        .map_or(Duration::ZERO, Duration::from_millis);
    *cached = Some((now, d));
    d
}

fn slow_down() {
    let d = delay();
    if !d.is_zero() {
        std::thread::sleep(d);
    }
}

/// The next definition of `name` after this library's (libc's).
fn next(name: &CStr) -> *mut c_void {
    // SAFETY: `name` is NUL-terminated; RTLD_NEXT is a valid pseudo-handle.
    let f = unsafe { libc::dlsym(libc::RTLD_NEXT, name.as_ptr()) };
    if f.is_null() {
        // Without the real function there is nothing honest to do.
        std::process::abort();
    }
    f
}

macro_rules! real {
    ($name:literal, $ty:ty) => {{
        static REAL: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
        let f = *REAL.get_or_init(|| next($name) as usize);
        // SAFETY: `f` is libc's definition of the function, whose type is `$ty`.
        unsafe { std::mem::transmute::<usize, $ty>(f) }
    }};
}

/// `fsync(2)`, delayed.
///
/// # Safety
/// As `fsync(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fsync(fd: c_int) -> c_int {
    slow_down();
    let f = real!(c"fsync", unsafe extern "C" fn(c_int) -> c_int);
    // SAFETY: the caller's contract.
    unsafe { f(fd) }
}

/// `fdatasync(2)`, delayed.
///
/// # Safety
/// As `fdatasync(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fdatasync(fd: c_int) -> c_int {
    slow_down();
    let f = real!(c"fdatasync", unsafe extern "C" fn(c_int) -> c_int);
    // SAFETY: the caller's contract.
    unsafe { f(fd) }
}

/// `sync_file_range(2)`, delayed.
///
/// # Safety
/// As `sync_file_range(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sync_file_range(
    fd: c_int,
    offset: libc::off64_t,
    nbytes: libc::off64_t,
    flags: c_uint,
) -> c_int {
    slow_down();
    let f = real!(
        c"sync_file_range",
        unsafe extern "C" fn(c_int, libc::off64_t, libc::off64_t, c_uint) -> c_int
    );
    // SAFETY: the caller's contract.
    unsafe { f(fd, offset, nbytes, flags) }
}
