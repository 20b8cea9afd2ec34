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

fn file_read_exact_at(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
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
