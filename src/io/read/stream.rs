//! The load's side of a stream: wait for what the producer sends, allocate
//! each weights file's tensors once its header is in, cut them into
//! tensors once the file ends, and resolve the layout once every file is
//! in. Every wait ends on cancel or on the producer's end.

#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::arithmetic_side_effects
)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use candle_core::Tensor;

use super::context::{candle_dtype, target_dtype, unsupported, ReadContext};
use super::place::{finish, plan_info, prepare, Fill};
use crate::error::{Error, Result};
use crate::io::files::{open_reader, FilePlan, Reader};
use crate::io::loaded::{Component, TensorPipeline};
use crate::io::plan::{resolve_root, Plan};
use crate::io::root::Root;
use crate::io::safetensors::Header;
use crate::io::stream::{self, Body, Current, Shared, StreamSource};
use crate::resource::{Reservation, ResourceManager};

/// What the load does next.
enum Step {
    Wait,
    Allocate {
        name: String,
        declared: Option<u64>,
        bytes: Vec<u8>,
    },
    Cut(Box<Body>),
    Resolve(BTreeMap<String, Arc<[u8]>>),
    Fail(Error),
}

/// One weights file, loaded.
struct Loaded {
    header: Header,
    tensors: Vec<(String, Tensor)>,
    /// Bytes counted for it in the reservation.
    held: u64,
}

/// Marks the stream closed when the load ends, however it ends, freeing
/// what the stream still holds before the load reports its outcome.
struct Closing<'a>(&'a Shared);

impl Drop for Closing<'_> {
    fn drop(&mut self) {
        let held = {
            let mut inner = self.0.lock();
            inner.closed = true;
            inner.small.clear();
            std::mem::take(&mut inner.current)
        };
        drop(held);
        self.0.to_writer.notify_one();
    }
}

/// Load a stream: allocate each weights file's tensors once its header
/// is in, let the producer fill them, cut them into tensors when the
/// file ends; resolve the layout once every file is in.
pub(crate) async fn read_stream(
    resources: &ResourceManager,
    source: &StreamSource,
    ctx: &ReadContext<'_>,
    reservation: &mut Reservation,
) -> Result<TensorPipeline> {
    let outcome = read_stream_inner(resources, source, ctx, reservation).await;
    if let Err(error) = &outcome {
        // The producer's next call reports why the load ended.
        let mut inner = source.shared.lock();
        inner.failed.get_or_insert_with(|| error.clone());
    }
    outcome
}

async fn read_stream_inner(
    resources: &ResourceManager,
    source: &StreamSource,
    ctx: &ReadContext<'_>,
    reservation: &mut Reservation,
) -> Result<TensorPipeline> {
    let shared = &*source.shared;
    {
        let mut inner = shared.lock();
        if inner.attached {
            return Err(Error::InvalidArgument(
                "a stream can be loaded once; this one was loaded already".into(),
            ));
        }
        inner.attached = true;
    }
    let _closing = Closing(shared);
    let mut loaded: BTreeMap<String, Loaded> = BTreeMap::new();
    let (mut published, mut tensors_published) = (0u64, 0u64);
    let (mut total_bytes, mut total_tensors) = (0u64, 0u64);
    loop {
        let wait = shared.to_loader.notified();
        let (step, written, tensors_done) = {
            let mut inner = shared.lock();
            let step = if let Some(error) = &inner.failed {
                Step::Fail(error.clone())
            } else {
                match std::mem::take(&mut inner.current) {
                    // Stays `Allocating` (the producer waits) until
                    // the buffers are in place.
                    Current::Allocating {
                        name,
                        declared,
                        mut bytes,
                        ended,
                    } if !bytes.is_empty() => {
                        let header = std::mem::take(&mut bytes);
                        inner.current = Current::Allocating {
                            name: name.clone(),
                            declared,
                            bytes,
                            ended,
                        };
                        Step::Allocate {
                            name,
                            declared,
                            bytes: header,
                        }
                    }
                    Current::Done(body) => Step::Cut(body),
                    Current::None if inner.finished => {
                        Step::Resolve(std::mem::take(&mut inner.small))
                    }
                    other => {
                        inner.current = other;
                        Step::Wait
                    }
                }
            };
            (step, inner.written, inner.tensors_done)
        };
        if written > published {
            ctx.advance(written.saturating_sub(published))?;
            published = written;
        }
        while tensors_published < tensors_done {
            ctx.progress.tensor_done();
            tensors_published = tensors_published.saturating_add(1);
        }
        match step {
            Step::Fail(error) => return Err(error),
            Step::Wait => {
                tokio::select! {
                    biased;
                    _ = ctx.cancel.cancelled() => {}
                    _ = wait => {}
                }
            }
            Step::Allocate {
                name,
                declared,
                bytes,
            } => {
                let body = allocate(resources, &name, declared, bytes, ctx, reservation);
                let mut inner = shared.lock();
                let ended = match &inner.current {
                    Current::Allocating { ended, .. } => Some(*ended),
                    _ => None,
                };
                let failed = inner.failed.is_some() || ended.is_none();
                match body {
                    Ok(mut body) if !failed => {
                        total_bytes = total_bytes.saturating_add(body.file.header.data_bytes());
                        let count = body.file.header.tensors.len() as u64;
                        total_tensors = total_tensors.saturating_add(count);
                        ctx.progress.set_totals(total_bytes, total_tensors);
                        ctx.progress.set_current(name.into());
                        let done = body.advance_cursor();
                        inner.tensors_done = inner.tensors_done.saturating_add(done);
                        inner.current = Current::Body(body);
                        if ended == Some(true) {
                            // The producer ended the file while its
                            // buffers were allocated (a file whose
                            // data is empty ends with its header).
                            if let Current::Body(body) = std::mem::take(&mut inner.current) {
                                let (current, error) = stream::ended(body);
                                inner.current = current;
                                if let Some(error) = error {
                                    inner.failed.get_or_insert(error);
                                }
                            }
                        }
                        drop(inner);
                    }
                    Ok(body) => {
                        // The producer failed meanwhile: the next turn
                        // reports it.
                        drop(inner);
                        let stored = body.file.header.data_bytes();
                        drop(body);
                        reservation.shrink(stored);
                    }
                    Err(error) => {
                        let error = inner.failed.get_or_insert(error).clone();
                        drop(inner);
                        shared.to_writer.notify_one();
                        return Err(error);
                    }
                }
                shared.to_writer.notify_one();
            }
            Step::Cut(body) => {
                shared.to_writer.notify_one();
                let Body { file, prepared, .. } = *body;
                let (_, held) = counted(&file, ctx)?;
                let tensors = finish(&file, prepared, ctx, reservation)?;
                let name = file.path.display().to_string();
                loaded.insert(
                    name,
                    Loaded {
                        header: file.header,
                        tensors,
                        held,
                    },
                );
            }
            Step::Resolve(small) => {
                return assemble_stream(small, loaded, reservation);
            }
        }
        ctx.checkpoint()?;
    }
}

/// Parse a file's header, check the budget, allocate its buffers.
fn allocate(
    resources: &ResourceManager,
    name: &str,
    declared: Option<u64>,
    bytes: Vec<u8>,
    ctx: &ReadContext<'_>,
    reservation: &mut Reservation,
) -> Result<Box<Body>> {
    let header_end = bytes.len() as u64;
    // The header says how long the file is; a declared length is
    // checked against it. Parsed as an in-memory file's header is.
    let mut file = open_reader(
        PathBuf::from(name),
        Reader::Memory(bytes.into()),
        declared.unwrap_or(u64::MAX),
    )?;
    file.reader = Reader::Memory(Arc::from(Vec::new()));
    let (peak, _) = counted(&file, ctx)?;
    resources.check_budget(peak)?;
    let prepared = prepare(&file, reservation, None, Fill::Zeroed)?;
    // Tensor data starts right after the header: the header's
    // validation refuses a gap.
    let body = Box::new(Body {
        file,
        prepared,
        declared,
        pos: header_end,
        cursor: 0,
    });
    Ok(body)
}

/// A weights file's peak while it is cut (its buffers plus the tensors
/// converted from them) and what stays counted after.
fn counted(file: &FilePlan, ctx: &ReadContext<'_>) -> Result<(u64, u64)> {
    let (mut stored, mut kept, mut replaced) = (0u64, 0u64, 0u64);
    for t in &file.header.tensors {
        let dtype = candle_dtype(t.dtype).ok_or_else(|| unsupported(file, t))?;
        let target = target_dtype(dtype, ctx.dtype);
        stored = stored.saturating_add(t.len);
        if target == dtype && ctx.device.is_cpu() {
            kept = kept.saturating_add(t.len);
        } else {
            let elems = t.len.checked_div(dtype.size_in_bytes() as u64).unwrap_or(0);
            replaced = replaced.saturating_add(elems.saturating_mul(target.size_in_bytes() as u64));
        }
    }
    Ok((
        stored.saturating_add(replaced),
        kept.saturating_add(replaced),
    ))
}

/// Resolve the layout from the files that arrived, as for a folder, and
/// group the loaded tensors by component; free files the layout leaves out.
fn assemble_stream(
    small: BTreeMap<String, Arc<[u8]>>,
    mut loaded: BTreeMap<String, Loaded>,
    reservation: &mut Reservation,
) -> Result<TensorPipeline> {
    let headers = loaded
        .iter()
        .map(|(name, l)| (name.clone(), l.header.clone()))
        .collect();
    let plan: Plan = resolve_root(&Root::arrived(small, headers))?;
    let info = plan_info(&plan);
    let mut components = Vec::with_capacity(plan.components.len());
    for component in plan.components {
        let mut tensors = BTreeMap::new();
        for file in &component.files {
            let name = file.path.display().to_string();
            let Some(l) = loaded.remove(&name) else {
                return Err(Error::MissingFile {
                    path: file.path.clone(),
                });
            };
            tensors.extend(l.tensors);
        }
        components.push(Component {
            name: component.name,
            config: component.config,
            tensors,
        });
    }
    // Weights files the layout does not use.
    for (_, unused) in loaded {
        drop(unused.tensors);
        reservation.shrink(unused.held);
    }
    Ok(TensorPipeline { components, info })
}

/// Run `future` to its end on this (blocking) thread: a native load waits
/// for its producer here. The future's waits end on cancel or on the
/// producer's end, so this does too.
#[cfg(not(target_arch = "wasm32"))]
pub(crate) fn block_on<F: std::future::Future>(future: F) -> F::Output {
    use std::task::{Context, Poll, Wake, Waker};

    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
        fn wake_by_ref(self: &Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut future = std::pin::pin!(future);
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut Context::from_waker(&waker)) {
            return output;
        }
        std::thread::park();
    }
}
