//! What a load leaves in the page cache. A file read cold (its pages not
//! cached when the load starts) would otherwise stay there whole after the
//! load: a second copy of the model, which evicts other data and is what a
//! load near the RAM's size runs out of. [`PageCache::Auto`] drops the
//! pages of a cold file as soon as they are read (`posix_fadvise`
//! `DONTNEED`, at the buffered read's speed) and keeps a warm file's, which
//! were there before. [`PageCache::Bypass`] reads around the cache
//! altogether, with direct I/O ([`direct`](super::direct)).

#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::fs::File;

use super::direct::DirectFile;
use super::reader::Reader;

/// What a load does with the page cache's copy of the files it reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum PageCache {
    /// Drop the pages of a file that was cold when the load began (fewer
    /// than half of its pages cached); keep a warm file's. The default.
    #[default]
    Auto,
    /// Leave every page read in the cache (a later load of the same file
    /// reads memory, if nothing evicts it first).
    Keep,
    /// Drop every page read, warm or cold.
    Drop,
    /// Read around the page cache with direct I/O (`O_DIRECT`, Linux):
    /// the load reads the disk even where the file is cached, and adds
    /// nothing to the cache. A buffer of 1 MiB or more is allocated 4 KiB
    /// larger, so that the file's blocks land in it directly (counted in
    /// the resident bytes; each reading thread's bounce buffer for the
    /// unaligned edges, up to 516 KiB, is not). Where direct I/O is not
    /// available (another
    /// system, or a filesystem that refuses it), as [`Drop`](Self::Drop).
    /// Whether it is faster than [`Auto`](Self::Auto)'s buffered read of a
    /// cold file depends on the disk: `cargo bench --bench cold` measures
    /// both on a machine (BENCHMARKS.md has this project's figures).
    Bypass,
}

/// How a load reads one file, as its policy and the file's state decide.
#[derive(Debug)]
pub(crate) enum Access {
    /// Through the page cache, leaving what it read there.
    Cached,
    /// Through the page cache, dropping what it read.
    Dropped,
    /// Around the page cache.
    Direct(DirectFile),
}

impl Access {
    /// For a cold file read through the page cache: the file opened again
    /// for one reading thread, so that the kernel's readahead follows that
    /// thread's part of the file (on one shared open file it sees the
    /// threads' reads interleaved, and reads ahead less). `None` otherwise.
    pub(crate) fn thread_file(&self, reader: &Reader) -> Option<File> {
        match (self, reader) {
            (Access::Dropped, Reader::File(file)) => super::reader::reopen(file, 0),
            _ => None,
        }
    }
}

/// How a load with `policy` reads `file`. Only files on Linux are ever
/// dropped or read directly; elsewhere, and for bytes in memory, every
/// read goes through the cache.
pub(crate) fn access(policy: PageCache, file: &File) -> Access {
    let drop = cfg!(target_os = "linux");
    match policy {
        PageCache::Keep => Access::Cached,
        PageCache::Drop if drop => Access::Dropped,
        PageCache::Auto if cached_share(file).is_some_and(|share| share < 0.5) => Access::Dropped,
        PageCache::Bypass => match DirectFile::open(file) {
            Some(direct) => Access::Direct(direct),
            None if drop => Access::Dropped,
            None => Access::Cached,
        },
        _ => Access::Cached,
    }
}

/// The largest page-cache folio: the kernel keeps a file's pages in folios
/// of up to 2 MiB (x86-64, arm64 with 4 KiB pages), and drops a folio only
/// when the range it is asked to drop covers the whole folio.
const FOLIO: u64 = 2 << 20;

/// Drop from the page cache what a read of `len` bytes at `offset` has just
/// read, as far as whole folios go: from the folio holding `offset` (whose
/// start the same thread's previous read read, reads being dealt in
/// contiguous runs) to the start of the folio holding the read's end (which
/// the next read finishes, and drops). Dropping only the folios inside the
/// read left half of a file read in 4 MiB reads at an offset off 2 MiB
/// cached, every read's first folio straddling two reads.
pub(crate) fn drop_read(file: &File, offset: u64, len: u64) {
    let start = offset / FOLIO * FOLIO;
    let end = offset.saturating_add(len) / FOLIO * FOLIO;
    if end > start {
        drop_pages(file, start, end - start);
    }
}

/// Once a load of a file that it drops as it reads is over (`Dropped`):
/// the whole file goes. Each read dropped what it read, whole folios only,
/// and another thread's read (or readahead) may have cached a folio again
/// after that: a folio straddling two threads' parts, read last by the one
/// that did not drop it.
pub(crate) fn drop_after_load(access: &Access, reader: &Reader) {
    if let (Access::Dropped, Reader::File(f)) = (access, reader) {
        drop_pages(f, 0, 0);
    }
}

/// Ask the kernel to drop `len` bytes of `file` from `offset` from the page
/// cache (`len` 0: to the end; clean pages go at once; advice only, never
/// an error).
pub(crate) fn drop_pages(file: &File, offset: u64, len: u64) {
    #[cfg(target_os = "linux")]
    {
        let fd = std::os::fd::AsRawFd::as_raw_fd(file);
        let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
            return;
        };
        // SAFETY: a valid descriptor; advice changes no memory of ours.
        unsafe { libc::posix_fadvise(fd, offset, len, libc::POSIX_FADV_DONTNEED) };
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (file, offset, len);
}

/// How many pages [`cached_share`] looks at: enough to tell a cold file
/// from a warm one within a few percent, at a cost that does not grow with
/// the file (asking for every page of a 1 GiB file took 19 ms, an eighth
/// of the file's warm load, before a cancel could be seen).
#[cfg(target_os = "linux")]
const SAMPLES: usize = 256;

/// The share of `file`'s pages in the page cache, estimated from up to
/// [`SAMPLES`] pages spread evenly over it (`mincore` of each, through a
/// mapping made for the question and unmapped at once); `None` where it
/// cannot be known.
pub(crate) fn cached_share(file: &File) -> Option<f64> {
    #[cfg(target_os = "linux")]
    {
        let len = usize::try_from(file.metadata().ok()?.len()).ok()?;
        if len == 0 {
            return None;
        }
        let fd = std::os::fd::AsRawFd::as_raw_fd(file);
        // SAFETY: sysconf has no preconditions.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).ok()?;
        let pages = len.div_ceil(page.max(1));
        let samples = pages.min(SAMPLES);
        let mut cached = 0usize;
        // SAFETY: a read-only shared mapping of the whole file, never read
        // through (mincore only reads the page tables and the page cache)
        // and unmapped below; each mincore asks for one page inside it,
        // with one byte to answer in.
        unsafe {
            let map = libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                fd,
                0,
            );
            if map == libc::MAP_FAILED {
                return None;
            }
            let mut ok = true;
            for i in 0..samples {
                // Evenly spread, the first and the last page included.
                let at = if samples > 1 {
                    i * (pages - 1) / (samples - 1)
                } else {
                    0
                };
                let mut state = 0u8;
                if libc::mincore(map.cast::<u8>().add(at * page).cast(), 1, &mut state) != 0 {
                    ok = false;
                    break;
                }
                cached += usize::from(state & 1);
            }
            libc::munmap(map, len);
            if !ok {
                return None;
            }
        }
        Some(cached as f64 / samples as f64)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = file;
        None
    }
}
