//! The read into host memory: a file's chunks, straight into its buffers,
//! by up to `threads` threads (or one chunk at a time, yielding to the
//! host's event loop between chunks, on wasm32).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};

use super::context::{internal, read_error, too_large, ReadContext};
use super::place::Prepared;
use crate::error::{Error, Result};
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
    read_parallel(chunks, ctx.threads, &read_one)
}

/// Read `chunks` on up to `threads` threads, dealt round-robin (thread k
/// reads chunks k, k+n, ...) so the file is still read roughly in order;
/// the first error stops every thread at its next chunk.
fn read_parallel<'b>(
    chunks: Vec<Chunk<'b>>,
    threads: usize,
    read_one: &(dyn Fn(Chunk<'b>) -> Result<()> + Sync),
) -> Result<()> {
    // No threads on wasm32.
    let threads = if cfg!(target_arch = "wasm32") {
        1
    } else {
        threads.clamp(1, chunks.len().max(1))
    };
    if threads == 1 {
        return chunks.into_iter().try_for_each(read_one);
    }
    let mut groups: Vec<Vec<Chunk<'_>>> = (0..threads).map(|_| Vec::new()).collect();
    for (i, chunk) in chunks.into_iter().enumerate() {
        if let Some(group) = groups.get_mut(i % threads) {
            group.push(chunk);
        }
    }
    let failed = AtomicBool::new(false);
    let first_error: Mutex<Option<Error>> = Mutex::new(None);
    std::thread::scope(|scope| {
        for group in groups {
            let (failed, first_error) = (&failed, &first_error);
            scope.spawn(move || {
                for chunk in group {
                    if failed.load(Ordering::Acquire) {
                        return;
                    }
                    if let Err(e) = read_one(chunk) {
                        failed.store(true, Ordering::Release);
                        first_error
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .get_or_insert(e);
                        return;
                    }
                }
            });
        }
    });
    match first_error
        .into_inner()
        .unwrap_or_else(PoisonError::into_inner)
    {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
