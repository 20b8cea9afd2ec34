//! The read engine's one loop, over a host or a device target.
//!
//! A file's tensor data is split into reads by the one planner
//! ([`jobs`](super::jobs::jobs)); [`run`] deals the reads to up to
//! `threads` threads, round-robin for a file in the page cache (thread k
//! takes reads k, k+n, ..., so it is read roughly in order) or in
//! contiguous runs for one read from disk ([`Dealing`]), or, with a pace
//! (wasm32, on the host's
//! event loop), reads them one at a time on the caller's thread and yields
//! to the host between two. After every read it publishes progress and
//! checks cancellation; the first error stops every thread before its next
//! read and is what the read returns. Where the bytes of a read go is the
//! [`Target`]'s: straight into host buffers, or through pinned staging to a
//! CUDA device.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};

use tokio_util::sync::CancellationToken;

use super::context::ReadContext;
use super::jobs::Job;
use crate::error::{Error, Result};
use crate::io::cache::Access;
use crate::io::Pace;

/// Where a file's reads go: host memory, or a device through staging.
pub(crate) trait Target: Sync {
    /// One read as the target places it: the planner's [`Job`] and what the
    /// target needs beside it (the host's destination slices).
    type Read: Send;
    /// What one reading thread holds (CUDA: its two staging buffers).
    type Worker;

    fn job(read: &Self::Read) -> &Job;
    /// Called once on each reading thread, before its first read.
    fn worker(&self) -> Result<Self::Worker>;
    /// Read `read`'s bytes from the file and put them in place.
    fn read(&self, worker: &mut Self::Worker, read: &mut Self::Read) -> Result<()>;
    /// After a thread's read failed: settle what it may have left in
    /// flight before the buffers are freed.
    fn failed(&self, _worker: &mut Self::Worker) {}
    /// How the reads are dealt to the threads.
    fn dealing(&self) -> Dealing {
        Dealing::Interleaved
    }
}

impl Dealing {
    /// Contiguous for a file read from disk (cold, or direct), where the
    /// readahead or the disk wants each thread's reads in a row;
    /// interleaved for a warm file.
    pub(crate) fn for_access(access: &Access) -> Dealing {
        match access {
            Access::Cached => Dealing::Interleaved,
            Access::Dropped | Access::Direct(_) => Dealing::Contiguous,
        }
    }
}

/// How a file's reads are shared among the reading threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dealing {
    /// Thread k takes reads k, k+n, ...: the file is read roughly in order
    /// (from memory, or to a device, where order is all that matters).
    Interleaved,
    /// Thread k takes the k-th of n runs of consecutive reads: each thread
    /// reads one part of the file front to back, as the kernel's readahead
    /// and a disk read fastest (a file read from disk).
    Contiguous,
}

/// Read every one of `reads` (planned for a file of `tensors` tensors) into
/// `target`: the one load loop, for every target (see the module docs).
pub(crate) async fn run<T: Target>(
    target: &T,
    reads: Vec<T::Read>,
    tensors: usize,
    ctx: &ReadContext<'_>,
    pace: Option<&Pace>,
) -> Result<()> {
    // Per tensor: reads left before it is complete (progress counts it then).
    let remaining: Vec<AtomicUsize> = (0..tensors).map(|_| AtomicUsize::new(0)).collect();
    for read in &reads {
        for segment in &T::job(read).segments {
            if let Some(r) = remaining.get(segment.tensor) {
                r.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    for r in &remaining {
        if r.load(Ordering::Relaxed) == 0 {
            // An empty tensor is complete as soon as it exists.
            ctx.progress.tensor_done();
        }
    }
    let one = |worker: &mut T::Worker, mut read: T::Read| -> Result<()> {
        target.read(worker, &mut read)?;
        let job = T::job(&read);
        for segment in &job.segments {
            if remaining
                .get(segment.tensor)
                .is_some_and(|r| r.fetch_sub(1, Ordering::AcqRel) == 1)
            {
                ctx.progress.tensor_done();
            }
        }
        ctx.advance(job.len as u64)
    };

    if let Some(pace) = pace {
        // On the host's event loop: one read, then the host's turn.
        let mut worker = target.worker()?;
        for read in reads {
            one(&mut worker, read)?;
            pace().await;
            ctx.checkpoint()?;
        }
        return Ok(());
    }
    deal(reads, ctx.threads, target.dealing(), |share, stop| {
        let mut worker = target.worker()?;
        for read in share {
            if stop.is_set() {
                return Ok(());
            }
            if let Err(e) = one(&mut worker, read) {
                target.failed(&mut worker);
                return Err(e);
            }
        }
        Ok(())
    })
}

/// The most a reading thread reads between two looks at the cancel flag:
/// a cancel waits for one such piece of a read, not the whole read (a 4 MiB
/// read from the page cache into fresh memory took up to 19 ms, its page
/// faults included). A multiple of any block size, so that pieces of a
/// direct read stay aligned.
pub(crate) const STEP: usize = 512 << 10;

/// Read `dest` (the file's bytes from `offset`) with `read`, in pieces
/// that end on multiples of [`STEP`] in the file, returning
/// [`Error::Cancelled`] before a piece once the load is cancelled.
pub(crate) fn read_in_steps<T>(
    cancel: &CancellationToken,
    dest: &mut [T],
    offset: u64,
    mut read: impl FnMut(&mut [T], u64) -> Result<()>,
) -> Result<()> {
    let (mut rest, mut offset) = (dest, offset);
    while !rest.is_empty() {
        if cancel.is_cancelled() {
            return Err(Error::Cancelled);
        }
        let n = (STEP - (offset % STEP as u64) as usize).min(rest.len());
        let (piece, tail) = std::mem::take(&mut rest).split_at_mut(n);
        read(piece, offset)?;
        offset += piece.len() as u64;
        rest = tail;
    }
    Ok(())
}

/// Set once any thread has failed: the others stop before their next item.
struct Stop(AtomicBool);

impl Stop {
    fn is_set(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// Run `work` over `items`, dealt to up to `threads` threads as `dealing`
/// says; each call gets one thread's share, in order, and checks `Stop`
/// between items.
fn deal<T: Send>(
    items: Vec<T>,
    threads: usize,
    dealing: Dealing,
    work: impl Fn(Vec<T>, &Stop) -> Result<()> + Sync,
) -> Result<()> {
    let threads = if cfg!(target_arch = "wasm32") {
        1
    } else {
        threads.clamp(1, items.len().max(1))
    };
    let count = items.len();
    let mut shares: Vec<Vec<T>> = (0..threads).map(|_| Vec::new()).collect();
    for (i, item) in items.into_iter().enumerate() {
        let share = match dealing {
            Dealing::Interleaved => i % threads,
            // Shares differ by at most one item.
            Dealing::Contiguous => {
                // In u128: `i * threads` cannot overflow.
                usize::try_from(i as u128 * threads as u128 / count.max(1) as u128).unwrap_or(0)
            }
        };
        if let Some(share) = shares.get_mut(share) {
            share.push(item);
        }
    }
    let stop = Stop(AtomicBool::new(false));
    let first_error: Mutex<Option<Error>> = Mutex::new(None);
    let run = |share: Vec<T>| {
        if let Err(e) = work(share, &stop) {
            stop.0.store(true, Ordering::Release);
            first_error
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get_or_insert(e);
        }
    };
    if threads == 1 {
        shares.into_iter().for_each(run);
    } else {
        let run = &run;
        std::thread::scope(|scope| {
            for share in shares {
                scope.spawn(move || run(share));
            }
        });
    }
    match first_error
        .into_inner()
        .unwrap_or_else(PoisonError::into_inner)
    {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn every_item_is_worked_once_and_in_order_within_a_share() {
        for dealing in [Dealing::Interleaved, Dealing::Contiguous] {
            for (items, threads) in [
                (50, 1),
                (50, 2),
                (50, 3),
                (50, 8),
                (50, 100),
                (7, 3),
                (0, 4),
            ] {
                let seen = Mutex::new(Vec::new());
                deal(
                    (0..items).collect(),
                    threads,
                    dealing,
                    |share: Vec<u32>, _| {
                        assert!(share.windows(2).all(|w| w[0] < w[1]));
                        if dealing == Dealing::Contiguous {
                            assert!(share.windows(2).all(|w| w[0] + 1 == w[1]), "{share:?}");
                        }
                        seen.lock().unwrap().push(share);
                        Ok(())
                    },
                )
                .unwrap();
                let shares = seen.into_inner().unwrap();
                let lens: Vec<usize> = shares.iter().map(Vec::len).collect();
                let (most, least) = (lens.iter().max(), lens.iter().min());
                assert!(
                    most.zip(least).is_none_or(|(m, l)| m - l <= 1),
                    "{dealing:?}, {items} items, {threads} threads: shares {lens:?}"
                );
                let mut seen: Vec<u32> = shares.into_iter().flatten().collect();
                seen.sort();
                assert_eq!(seen, (0..items).collect::<Vec<_>>(), "{threads} threads");
            }
        }
    }

    #[test]
    fn steps_tile_the_read_and_end_on_step_boundaries() {
        let token = CancellationToken::new();
        for (offset, len) in [
            (0u64, 0usize),
            (0, STEP),
            (1, STEP),
            (5, 3 * STEP + 7),
            (STEP as u64 - 1, 2),
        ] {
            let mut dest = vec![0u8; len];
            let mut pieces = Vec::new();
            read_in_steps(&token, &mut dest, offset, |piece, at| {
                piece.fill(1);
                pieces.push((at, piece.len()));
                Ok(())
            })
            .unwrap();
            assert!(dest.iter().all(|&b| b == 1), "every byte read once");
            let mut next = offset;
            for &(at, n) in &pieces {
                assert_eq!(at, next, "back to back");
                assert!(n > 0 && n <= STEP);
                next += n as u64;
                assert!(
                    next % STEP as u64 == 0 || next == offset + len as u64,
                    "{pieces:?}"
                );
            }
            assert_eq!(next, offset + len as u64);
        }
    }

    #[test]
    fn a_cancel_stops_a_read_before_its_next_step() {
        let token = CancellationToken::new();
        let mut dest = vec![0u8; 4 * STEP];
        let mut pieces = 0;
        let outcome = read_in_steps(&token, &mut dest, 0, |_, _| {
            pieces += 1;
            token.cancel();
            Ok(())
        });
        assert_eq!(outcome, Err(Error::Cancelled));
        assert_eq!(pieces, 1);
    }

    #[test]
    fn the_first_error_stops_the_others() {
        let worked = std::sync::atomic::AtomicUsize::new(0);
        let outcome = deal(
            (0..10_000).collect(),
            4,
            Dealing::Interleaved,
            |share: Vec<u32>, stop| {
                for item in share {
                    if stop.is_set() {
                        return Ok(());
                    }
                    if item == 7 {
                        return Err(Error::Cancelled);
                    }
                    worked.fetch_add(1, Ordering::Relaxed);
                    std::thread::yield_now();
                }
                Ok(())
            },
        );
        assert_eq!(outcome, Err(Error::Cancelled));
        assert!(worked.into_inner() < 10_000);
    }
}
