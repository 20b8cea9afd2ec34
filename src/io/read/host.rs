//! The read into host memory: a file's chunks, straight into its buffers,
//! by up to `threads` threads (or one chunk at a time, yielding to the
//! host's event loop between chunks, on wasm32).

use std::sync::atomic::{AtomicUsize, Ordering};

use super::context::{internal, read_error, too_large, ReadContext};
use super::deal::deal;
use super::place::Prepared;
use crate::error::Result;
use crate::io::buffer::Buffer;
use crate::io::files::{read_exact_at, FilePlan};
use crate::io::Pace;

/// One chunk to read: where from, where to, and which tensor it completes.
struct Chunk<'b> {
    offset: u64,
    dest: &'b mut [u8],
    tensor: usize,
}

/// Read the file's chunks into its buffers.
pub(crate) async fn read_chunks(
    file: &FilePlan,
    ctx: &ReadContext<'_>,
    prepared: &mut Prepared,
    pace: Option<&Pace>,
) -> Result<()> {
    let entries = &file.header.tensors;
    let chunk_size = ctx.chunk_size.max(1);
    // Carve each group's buffer into its tensors' slices, in file order.
    let mut rest: Vec<&mut [u8]> = prepared.buffers.iter_mut().map(Buffer::bytes_mut).collect();
    let mut chunks = Vec::new();
    let mut remaining = Vec::with_capacity(entries.len());
    for (tensor, (entry, &(group, _))) in entries.iter().zip(&prepared.placement).enumerate() {
        let Some(slot) = rest.get_mut(group) else {
            return Err(internal(file));
        };
        let len = usize::try_from(entry.len).map_err(|_| too_large(file))?;
        if len > slot.len() {
            return Err(internal(file));
        }
        let (dest, tail) = std::mem::take(slot).split_at_mut(len);
        *slot = tail;
        let n = dest.len().div_ceil(chunk_size);
        for (i, dest) in dest.chunks_mut(chunk_size).enumerate() {
            chunks.push(Chunk {
                offset: entry.offset + (i * chunk_size) as u64,
                dest,
                tensor,
            });
        }
        if n == 0 {
            // An empty tensor is complete as soon as it exists.
            ctx.progress.tensor_done();
        }
        remaining.push(AtomicUsize::new(n));
    }
    chunks.sort_by_key(|c| c.offset);

    let read_one = |chunk: Chunk<'_>| -> Result<()> {
        let entry = entries.get(chunk.tensor);
        read_exact_at(&file.reader, chunk.dest, chunk.offset)
            .map_err(|e| read_error(file, entry, e))?;
        if remaining
            .get(chunk.tensor)
            .is_some_and(|r| r.fetch_sub(1, Ordering::AcqRel) == 1)
        {
            ctx.progress.tensor_done();
        }
        ctx.advance(chunk.dest.len() as u64)
    };

    if let Some(pace) = pace {
        // On the host's event loop: one chunk, then the host's turn.
        for chunk in chunks {
            read_one(chunk)?;
            pace().await;
            ctx.checkpoint()?;
        }
        return Ok(());
    }
    deal(chunks, ctx.threads, |share, stop| {
        for chunk in share {
            if stop.is_set() {
                return Ok(());
            }
            read_one(chunk)?;
        }
        Ok(())
    })
}
