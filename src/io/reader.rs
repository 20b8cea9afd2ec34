//! The bytes of a weights file, on disk or in memory, and the positioned
//! read every reader of them uses: a leaf, so that the formats (safetensors,
//! PyTorch archives) and the read engine share it without a circle.

#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::fs::File;
use std::mem::MaybeUninit;
use std::sync::Arc;

/// The bytes of one weights file.
#[derive(Debug)]
pub(crate) enum Reader {
    File(File),
    Memory(Arc<[u8]>),
}

impl Reader {
    /// The length of what it reads, where it can be known.
    pub(crate) fn len(&self) -> Option<u64> {
        match self {
            Reader::Memory(bytes) => Some(bytes.len() as u64),
            Reader::File(file) => file.metadata().ok().map(|m| m.len()),
        }
    }
}

/// Positioned read of exactly `buf.len()` bytes.
pub(crate) fn read_exact_at(reader: &Reader, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    read_exact_at_uninit(reader, as_uninit(buf), offset)
}

/// Positioned read of exactly `buf.len()` bytes into memory that need not
/// be initialised: every byte is written, or the read fails.
pub(crate) fn read_exact_at_uninit(
    reader: &Reader,
    buf: &mut [MaybeUninit<u8>],
    offset: u64,
) -> std::io::Result<()> {
    match reader {
        Reader::Memory(bytes) => {
            let src = usize::try_from(offset)
                .ok()
                .and_then(|start| bytes.get(start..start.checked_add(buf.len())?))
                .ok_or(std::io::ErrorKind::UnexpectedEof)?;
            copy_into(buf, src)
        }
        Reader::File(file) => file_read_uninit_at(file, buf, offset),
    }
}

/// `bytes` seen as memory to write: a view that is only ever written with
/// initialised bytes (reads and copies), so `bytes` stays initialised.
pub(crate) fn as_uninit(bytes: &mut [u8]) -> &mut [MaybeUninit<u8>] {
    // SAFETY: same length and layout; the callers of this module only
    // write initialised bytes through the view (never `MaybeUninit::uninit`).
    unsafe { &mut *(std::ptr::from_mut::<[u8]>(bytes) as *mut [MaybeUninit<u8>]) }
}

/// Copy `src` into `dest`, which must be as long: every byte of `dest`
/// is written, or none is and the lengths are an error.
pub(crate) fn copy_into(dest: &mut [MaybeUninit<u8>], src: &[u8]) -> std::io::Result<()> {
    if dest.len() != src.len() {
        return Err(std::io::ErrorKind::InvalidInput.into());
    }
    // SAFETY: `src.len()` bytes of each, distinct (one is borrowed
    // mutably).
    unsafe {
        std::ptr::copy_nonoverlapping(src.as_ptr(), dest.as_mut_ptr().cast::<u8>(), src.len())
    };
    Ok(())
}

/// One positioned read into `buf`: the bytes read (0 at the file's end).
#[cfg(unix)]
pub(crate) fn read_uninit_at(
    file: &File,
    buf: &mut [MaybeUninit<u8>],
    offset: u64,
) -> std::io::Result<usize> {
    use std::os::fd::AsRawFd;
    let offset = libc::off_t::try_from(offset).map_err(|_| std::io::ErrorKind::InvalidInput)?;
    // SAFETY: `buf` is writable memory of `buf.len()` bytes, borrowed
    // mutably; pread writes at most that many, all initialised.
    let n = unsafe { libc::pread(file.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), offset) };
    usize::try_from(n).map_err(|_| std::io::Error::last_os_error())
}

/// Positioned read of exactly `buf.len()` bytes of a file, into memory
/// that need not be initialised.
pub(crate) fn file_read_uninit_at(
    file: &File,
    buf: &mut [MaybeUninit<u8>],
    offset: u64,
) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        read_fully(buf, offset, |b, at| read_uninit_at(file, b, at))
    }
    #[cfg(not(unix))]
    {
        // Zeroed first: the platform's read takes initialised bytes.
        buf.fill(MaybeUninit::new(0));
        // SAFETY: every byte was just initialised.
        let bytes = unsafe { &mut *(std::ptr::from_mut(buf) as *mut [u8]) };
        file_read_exact_at(file, bytes, offset)
    }
}

/// Fill `buf` from `offset` with positioned reads (`read` returns how many
/// bytes it read, 0 at the end): a file that ends early is
/// `UnexpectedEof`; interrupted reads are tried again.
#[cfg(any(unix, windows))]
fn read_fully<T>(
    buf: &mut [T],
    offset: u64,
    mut read: impl FnMut(&mut [T], u64) -> std::io::Result<usize>,
) -> std::io::Result<()> {
    let (mut buf, mut offset) = (buf, offset);
    while !buf.is_empty() {
        match read(buf, offset) {
            Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => {
                buf = buf.get_mut(n..).ok_or(std::io::ErrorKind::InvalidData)?;
                offset = offset
                    .checked_add(n as u64)
                    .ok_or(std::io::ErrorKind::UnexpectedEof)?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Positioned read of exactly `buf.len()` bytes of a file.
#[cfg(any(feature = "cuda", not(unix)))]
pub(crate) fn file_read_exact_at(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        file_read_uninit_at(file, as_uninit(buf), offset)
    }
    #[cfg(windows)]
    {
        read_fully(buf, offset, |b, at| {
            std::os::windows::fs::FileExt::seek_read(file, b, at)
        })
    }
    #[cfg(not(any(unix, windows)))]
    {
        let _ = (file, buf, offset);
        Err(std::io::ErrorKind::Unsupported.into())
    }
}

/// `file` opened again through `/proc/self/fd` with `flags` added to
/// read-only: the same file whatever happened to its path since (checked),
/// with a file description of its own (its own readahead; `O_DIRECT`
/// without changing `file`). `None` where that is not possible (not Linux,
/// no `/proc`, a flag the file system refuses).
pub(crate) fn reopen(file: &File, flags: i32) -> Option<File> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
        let again = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(flags | libc::O_NONBLOCK)
            .open(format!("/proc/self/fd/{}", file.as_raw_fd()))
            .ok()?;
        let (a, b) = (file.metadata().ok()?, again.metadata().ok()?);
        (b.is_file() && a.dev() == b.dev() && a.ino() == b.ino()).then_some(again)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (file, flags);
        None
    }
}
