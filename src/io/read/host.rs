//! The host target of the read engine: each read goes straight from the
//! file into the file's buffers (one per dtype), with no copy between; a
//! direct read's edges, and its parts that do not line up with the file's
//! blocks, go through the reading thread's bounce buffer.

use std::fs::File;
use std::marker::PhantomData;
use std::mem::MaybeUninit;

use super::context::{internal, job_error, too_large, ReadContext};
use tokio_util::sync::CancellationToken;

use super::engine::{read_in_steps, run, Dealing, Target, STEP};
use super::jobs::{jobs, Job};
use super::place::Prepared;
use crate::error::{Error, Result};
use crate::io::cache::{drop_after_load, drop_read, Access};
use crate::io::direct::Bounce;
use crate::io::files::FilePlan;
use crate::io::reader::{file_read_uninit_at, read_exact_at_uninit, Reader};
use crate::io::Pace;

/// A read and where its bytes go: runs of it (its offset in the read, the
/// slice of a buffer) that are contiguous in both the file and a buffer,
/// each read with one call. Tensors of one dtype are laid out in file
/// order, so a read of several small tensors is usually one run.
pub(super) struct HostRead<'b> {
    job: Job,
    runs: Vec<(usize, &'b mut [MaybeUninit<u8>])>,
}

/// Reads into buffers borrowed for `'b`.
struct Host<'f, 'b> {
    file: &'f FilePlan,
    buffers: PhantomData<&'b mut [MaybeUninit<u8>]>,
    access: &'f Access,
    /// The bounce buffer's size (direct reads): one step's.
    chunk: usize,
    cancel: &'f CancellationToken,
}

/// What one reading thread holds.
#[derive(Default)]
struct Worker {
    /// Direct reads: the thread's bounce buffer, made at its first use.
    bounce: Option<Bounce>,
    /// A cold file read through the page cache: the file opened again for
    /// this thread, so that the kernel's readahead follows this thread's
    /// part of the file (on one shared open file, it would see the
    /// threads' reads interleaved, and read ahead less).
    own: Option<File>,
}

impl<'b> Target for Host<'_, 'b> {
    type Read = HostRead<'b>;
    type Worker = Worker;

    fn job<'r>(read: &'r HostRead<'b>) -> &'r Job {
        &read.job
    }

    fn worker(&self) -> Result<Worker> {
        Ok(Worker {
            bounce: None,
            own: self.access.thread_file(&self.file.reader),
        })
    }

    fn dealing(&self) -> Dealing {
        Dealing::for_access(self.access)
    }

    fn read(&self, worker: &mut Worker, read: &mut HostRead<'b>) -> Result<()> {
        let (file, job) = (self.file, &read.job);
        if let (Access::Direct(_), None) = (self.access, &worker.bounce) {
            worker.bounce = Some(Bounce::new(self.chunk).ok_or(Error::InsufficientMemory {
                needed: self.chunk as u64,
                available: 0,
                pinned: 0,
            })?);
        }
        for (at, dest) in &mut read.runs {
            read_in_steps(
                self.cancel,
                dest,
                job.offset + *at as u64,
                |piece, offset| {
                    match (self.access, &worker.own, &mut worker.bounce) {
                        (Access::Direct(direct), _, Some(bounce)) => {
                            direct.read_into(piece, offset, bounce)
                        }
                        (_, Some(own), _) => file_read_uninit_at(own, piece, offset),
                        _ => read_exact_at_uninit(&file.reader, piece, offset),
                    }
                    .map_err(|e| job_error(file, job, e))
                },
            )?;
        }
        if let (Access::Dropped, Reader::File(f)) = (self.access, &file.reader) {
            drop_read(f, job.offset, job.len as u64);
        }
        Ok(())
    }
}

/// Read the file's tensors into `prepared`'s buffers.
pub(crate) async fn read_file(
    file: &FilePlan,
    ctx: &ReadContext<'_>,
    prepared: &mut Prepared,
    pace: Option<&Pace>,
    access: &Access,
) -> Result<()> {
    let spans: Vec<(u64, u64)> = file
        .header
        .tensors
        .iter()
        .map(|t| (t.offset, t.len))
        .collect();
    let planned =
        jobs(&spans, &prepared.placement, ctx.chunk_size).ok_or_else(|| too_large(file))?;
    // Carve the buffers into each read's runs, in order: per buffer, the
    // reads' segments come in the order of their place in it.
    let mut rest: Vec<(u64, &mut [MaybeUninit<u8>])> =
        prepared.buffers.iter_mut().map(|b| (0, b.dest())).collect();
    let mut reads = Vec::with_capacity(planned.len());
    for job in planned {
        let mut runs = Vec::new();
        let mut segments = job.segments.iter().peekable();
        while let Some(first) = segments.next() {
            let mut len = first.len;
            while let Some(next) = segments.next_if(|s| {
                s.group == first.group
                    && s.src == first.src + len
                    && s.dst == first.dst.saturating_add(len as u64)
            }) {
                len += next.len;
            }
            let Some((at, slot)) = rest.get_mut(first.group) else {
                return Err(internal(file));
            };
            let skip = first
                .dst
                .checked_sub(*at)
                .and_then(|n| usize::try_from(n).ok())
                .ok_or_else(|| internal(file))?;
            let (_, tail) = std::mem::take(slot)
                .split_at_mut_checked(skip)
                .ok_or_else(|| internal(file))?;
            let (dest, tail) = tail
                .split_at_mut_checked(len)
                .ok_or_else(|| internal(file))?;
            *slot = tail;
            *at = first.dst.saturating_add(len as u64);
            runs.push((first.src, dest));
        }
        reads.push(HostRead { job, runs });
    }
    let host = Host {
        file,
        buffers: PhantomData,
        access,
        chunk: ctx.chunk_size.min(STEP),
        cancel: ctx.cancel,
    };
    let read = run(&host, reads, spans.len(), ctx, pace).await;
    drop_after_load(access, &file.reader);
    read
}
