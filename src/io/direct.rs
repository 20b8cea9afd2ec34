//! Direct I/O: reads that go around the page cache (`O_DIRECT`, Linux),
//! so a cold load leaves no second copy of the model in memory and costs
//! the kernel no copy.
//!
//! A direct read must start at a file offset, end at a length and land at
//! an address that are multiples of the device's block size ([`ALIGN`],
//! 4 KiB, which covers every block size Linux allows below a page). Where
//! a destination lies at the same place within a block as its file offset
//! (the read engine lays its host buffers out so that it does), the
//! aligned middle of a read goes straight into it; the edges, and
//! destinations that do not line up, go through an aligned bounce buffer
//! and are copied.

#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::fs::File;
use std::io;
use std::mem::MaybeUninit;

#[cfg(unix)]
use super::reader::read_uninit_at;
use super::reader::{as_uninit, copy_into};

/// The alignment of a direct read's offset, length and memory.
pub(crate) const ALIGN: usize = 4096;

/// A weights file opened a second time, for direct reads.
#[derive(Debug)]
pub(crate) struct DirectFile(File);

impl DirectFile {
    /// `file` (already opened and checked) opened again with `O_DIRECT`,
    /// through `/proc/self/fd`, so it is the same file whatever happened
    /// to its path since, and one block of it read directly. `None` where
    /// direct I/O is not available: not Linux, no `/proc`, or a file system
    /// that refuses `O_DIRECT` or a 4 KiB-aligned direct read.
    pub(crate) fn open(file: &File) -> Option<DirectFile> {
        #[cfg(target_os = "linux")]
        {
            let direct = DirectFile(super::reader::reopen(file, libc::O_DIRECT)?);
            // One block read at the start, as every direct read will be
            // made: a file system that opens with O_DIRECT but wants a
            // larger alignment refuses it here (EINVAL), not mid-load.
            let mut probe = Bounce::new(ALIGN)?;
            let block = probe.as_mut_slice().get_mut(..ALIGN)?;
            direct
                .read_aligned(as_uninit(block), 0, &Steps::WHOLE)
                .ok()?;
            Some(direct)
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = file;
            None
        }
    }

    /// Read exactly `dest.len()` bytes at `offset` into `dest`: the
    /// aligned middle straight into `dest` where it lines up with the
    /// file's blocks, the rest through `bounce`. A file that ends early is
    /// an `UnexpectedEof` error, as for a buffered read.
    pub(crate) fn read_into(
        &self,
        dest: &mut [MaybeUninit<u8>],
        offset: u64,
        bounce: &mut Bounce,
    ) -> io::Result<()> {
        let align = ALIGN as u64;
        let head = usize::try_from((align - offset % align) % align).unwrap_or(0);
        let lines_up = (dest.as_ptr() as usize).wrapping_add(head) % ALIGN == 0;
        let middle = dest.len().saturating_sub(head) / ALIGN * ALIGN;
        if !lines_up || middle == 0 {
            return self.read_bounced(dest, offset, bounce);
        }
        let (first, rest) = split(dest, head)?;
        let (middle_dest, last) = split(rest, middle)?;
        self.read_bounced(first, offset, bounce)?;
        let at = offset + head as u64;
        let got = self.read_aligned(middle_dest, at, &Steps::WHOLE)?;
        if got < middle_dest.len() {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        self.read_bounced(last, at + middle as u64, bounce)
    }

    /// Read the blocks that cover `len` bytes at `offset` into the start of
    /// `staging` (aligned, and at least `len + 2 * ALIGN` long), in reads
    /// of at most `steps.bytes`, stopping with an `Interrupted` error
    /// before one once `steps.stop` says so; returns where the byte at
    /// `offset` lies in `staging`. A file that ends before `offset + len`
    /// is an `UnexpectedEof` error.
    pub(crate) fn read_covering(
        &self,
        staging: &mut [u8],
        offset: u64,
        len: usize,
        steps: &Steps<'_>,
    ) -> io::Result<usize> {
        let align = ALIGN as u64;
        let start = offset / align * align;
        let skip = usize::try_from(offset - start).map_err(|_| io::ErrorKind::InvalidInput)?;
        let span = skip
            .checked_add(len)
            .and_then(|n| n.checked_next_multiple_of(ALIGN))
            .ok_or(io::ErrorKind::InvalidInput)?;
        let window = staging.get_mut(..span).ok_or(io::ErrorKind::InvalidInput)?;
        if window.as_ptr() as usize % ALIGN != 0 {
            return Err(io::ErrorKind::InvalidInput.into());
        }
        let got = self.read_aligned(as_uninit(window), start, steps)?;
        if got < skip + len {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        Ok(skip)
    }

    /// Read `dest.len()` bytes at `offset` through `bounce`, in pieces of
    /// its size, copying out the bytes asked for.
    fn read_bounced(
        &self,
        dest: &mut [MaybeUninit<u8>],
        offset: u64,
        bounce: &mut Bounce,
    ) -> io::Result<()> {
        let (mut dest, mut offset) = (dest, offset);
        while !dest.is_empty() {
            let window = bounce.as_mut_slice();
            // What fits after the offset's place in its block.
            let room = window.len() - ALIGN;
            let n = dest.len().min(room);
            let skip = self.read_covering(window, offset, n, &Steps::WHOLE)?;
            let (now, later) = split(dest, n)?;
            copy_into(
                now,
                window
                    .get(skip..skip + n)
                    .ok_or(io::ErrorKind::InvalidInput)?,
            )?;
            dest = later;
            offset += n as u64;
        }
        Ok(())
    }

    /// Direct reads filling `dest` (aligned, a whole number of blocks) from
    /// `offset` (aligned), each of at most `steps.bytes`; returns the bytes
    /// read, fewer at the file's end.
    fn read_aligned(
        &self,
        dest: &mut [MaybeUninit<u8>],
        offset: u64,
        steps: &Steps<'_>,
    ) -> io::Result<usize> {
        // Whole blocks per read, at least one.
        let step = (steps.bytes / ALIGN).max(1) * ALIGN;
        let mut done = 0;
        while done < dest.len() {
            if (steps.stop)() {
                return Err(io::Error::new(io::ErrorKind::Interrupted, "cancelled"));
            }
            let end = dest.len().min(done.saturating_add(step));
            let rest = dest.get_mut(done..end).ok_or(io::ErrorKind::InvalidInput)?;
            match read_uninit_at(&self.0, rest, offset + done as u64) {
                Ok(0) => break,
                // A short read mid-file ends on a block; at the file's end
                // the next read returns 0.
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
            if done % ALIGN != 0 {
                // The file's end (a direct read only ends off a block there).
                break;
            }
        }
        Ok(done)
    }
}

/// How a long direct read is cut: reads of at most `bytes`, and before
/// each a look at `stop` (a load's cancel).
pub(crate) struct Steps<'a> {
    pub(crate) bytes: usize,
    pub(crate) stop: &'a dyn Fn() -> bool,
}

impl Steps<'_> {
    /// One read, never stopped: for reads the caller already cuts.
    const WHOLE: Steps<'static> = Steps {
        bytes: usize::MAX,
        stop: &|| false,
    };
}

fn split<T>(slice: &mut [T], at: usize) -> io::Result<(&mut [T], &mut [T])> {
    slice
        .split_at_mut_checked(at)
        .ok_or_else(|| io::ErrorKind::InvalidInput.into())
}

#[cfg(not(unix))]
fn read_uninit_at(_: &File, _: &mut [MaybeUninit<u8>], _: u64) -> io::Result<usize> {
    Err(io::ErrorKind::Unsupported.into())
}

/// An aligned buffer for the parts of direct reads that cannot go straight
/// to their destination: one per reading thread, allocated at its first
/// use.
pub(crate) struct Bounce {
    ptr: std::ptr::NonNull<u8>,
    layout: std::alloc::Layout,
}

// SAFETY: `Bounce` owns its allocation (a plain byte buffer) exclusively.
unsafe impl Send for Bounce {}

impl Bounce {
    /// A buffer of `bytes` rounded up to whole blocks, and one block more
    /// (at least two blocks); `None` if the allocator refuses it.
    pub(crate) fn new(bytes: usize) -> Option<Bounce> {
        let size = bytes
            .checked_next_multiple_of(ALIGN)?
            .checked_add(ALIGN)?
            .max(2 * ALIGN);
        let layout = std::alloc::Layout::from_size_align(size, ALIGN).ok()?;
        // SAFETY: `layout` has a non-zero size. Zeroed, so that it is
        // initialised bytes from the start.
        let ptr = std::ptr::NonNull::new(unsafe { std::alloc::alloc_zeroed(layout) })?;
        Some(Bounce { ptr, layout })
    }

    fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: `ptr` is a live, initialised (zeroed at allocation)
        // allocation of `layout.size()` bytes owned by `self`, borrowed
        // mutably here.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.layout.size()) }
    }
}

impl Drop for Bounce {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout, freed once.
        unsafe { std::alloc::dealloc(self.ptr.as_ptr(), self.layout) };
    }
}
