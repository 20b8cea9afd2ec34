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
    match reader {
        Reader::Memory(bytes) => {
            let src = usize::try_from(offset)
                .ok()
                .and_then(|start| bytes.get(start..start.checked_add(buf.len())?))
                .ok_or(std::io::ErrorKind::UnexpectedEof)?;
            buf.copy_from_slice(src);
            Ok(())
        }
        Reader::File(file) => file_read_exact_at(file, buf, offset),
    }
}

/// Positioned read of exactly `buf.len()` bytes of a file.
pub(crate) fn file_read_exact_at(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        std::os::unix::fs::FileExt::read_exact_at(file, buf, offset)
    }
    #[cfg(windows)]
    {
        let (mut buf, mut offset) = (buf, offset);
        while !buf.is_empty() {
            match std::os::windows::fs::FileExt::seek_read(file, buf, offset) {
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
