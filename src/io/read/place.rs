//! Where a file's tensors go: one buffer per dtype, allocated up front
//! and counted at once ([`prepare`]); once read, the buffers are handed to
//! candle and cut into the tensors, converted or moved to the device where
//! asked ([`finish`], [`cut`]).

use std::mem::MaybeUninit;

use candle_core::{DType, Tensor};

use super::context::{candle_dtype, internal, target_dtype, too_large, unsupported, ReadContext};
use crate::error::{Error, Result};
use crate::io::buffer::{advise_huge_pages, Buffer};
use crate::io::files::FilePlan;
use crate::io::loaded::PipelineInfo;
use crate::io::plan::Plan;
use crate::resource::Reservation;

/// A file's buffers, allocated, and where each tensor goes in them.
pub(crate) struct Prepared {
    /// Per buffer: its dtype and size in bytes.
    pub(crate) groups: Vec<(DType, u64)>,
    /// Per tensor: its buffer and byte offset in it.
    pub(crate) placement: Vec<(usize, u64)>,
    pub(crate) buffers: Vec<Buffer>,
}

/// Where each of a file's tensors goes: one buffer per dtype (its dtype and
/// size in bytes), and per tensor its buffer and byte offset in it.
pub(crate) type Layout = (Vec<(DType, u64)>, Vec<(usize, u64)>);

/// The file's tensors grouped by dtype, in file order within each group.
pub(crate) fn layout(file: &FilePlan) -> Result<Layout> {
    let entries = &file.header.tensors;
    let mut groups: Vec<(DType, u64)> = Vec::new();
    let mut placement = Vec::with_capacity(entries.len());
    for entry in entries {
        let dtype = candle_dtype(entry.dtype).ok_or_else(|| unsupported(file, entry))?;
        let group = match groups.iter().position(|(d, _)| *d == dtype) {
            Some(g) => g,
            None => {
                groups.push((dtype, 0));
                groups.len() - 1
            }
        };
        let Some((_, size)) = groups.get_mut(group) else {
            return Err(internal(file));
        };
        placement.push((group, *size));
        *size = size.saturating_add(entry.len);
    }
    Ok((groups, placement))
}

/// The bytes a buffer of `bytes` of `dtype` gets beyond its tensors so
/// that direct reads (`align`: their block size) land in it: one block,
/// where that is at most 1/256 of the buffer (a smaller buffer is read
/// through the bounce buffer) and the block holds whole elements. The one
/// rule, for the allocation and for the estimate the budget checks.
pub(crate) fn slack(dtype: DType, bytes: u64, align: Option<usize>) -> u64 {
    align
        .filter(|&a| a % dtype.size_in_bytes() == 0 && bytes >= 256 * a as u64)
        .map_or(0, |a| a as u64)
}

/// How a file's buffers are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fill {
    /// In any order, possibly not all of it (a stream): zeroed first.
    Zeroed,
    /// Every tensor's bytes, by the read engine, then [`Prepared::seal`]:
    /// the memory is not zeroed first, so a model's freed pages serve the
    /// next load as they are.
    Overwrite,
}

impl Prepared {
    /// Once the read wrote every tensor's bytes: zero the rest (the slack
    /// of direct reads) and mark the buffers filled.
    ///
    /// # Safety
    /// Every byte of every tensor of `file` (as `layout` places them) has
    /// been written into the buffers since they were prepared.
    pub(crate) unsafe fn seal(&mut self, file: &FilePlan) {
        for (group, buffer) in self.buffers.iter_mut().enumerate() {
            let mut spans: Vec<(u64, u64)> = Vec::new();
            for (&(g, at), entry) in self.placement.iter().zip(&file.header.tensors) {
                if g == group {
                    spans.push((at, entry.len));
                }
            }
            spans.sort_unstable();
            let dest = buffer.dest();
            let mut done = 0usize;
            for (at, len) in spans {
                let (at, end) = (at as usize, (at + len) as usize);
                if let Some(gap) = dest.get_mut(done..at) {
                    gap.fill(MaybeUninit::new(0));
                }
                done = done.max(end);
            }
            if let Some(gap) = dest.get_mut(done..) {
                gap.fill(MaybeUninit::new(0));
            }
            // SAFETY: every tensor's bytes were written (the caller's
            // promise) and every byte outside them was just zeroed.
            unsafe { buffer.assume_filled() };
        }
    }
}

/// One buffer per dtype for the whole file: one allocation (of fresh pages
/// from the OS, or, for `Fill::Overwrite` where the process installs
/// [`crate::alloc::Allocator`], of pages a model just freed), advised to
/// use huge pages; each tensor becomes a view into it.
///
/// With `align` (direct reads), each buffer of at least 256 blocks has
/// `align` bytes more, up to `align` of them before its first tensor, so
/// that every tensor lies at the same place within an `align`-byte block
/// as in the file, and a direct read of the file's blocks can land in the
/// buffer itself. Those bytes are counted with the buffer.
pub(crate) fn prepare(
    file: &FilePlan,
    reservation: &mut Reservation,
    align: Option<usize>,
    fill: Fill,
) -> Result<Prepared> {
    let (mut groups, mut placement) = layout(file)?;
    let mut buffers = Vec::with_capacity(groups.len());
    for (group, (dtype, bytes)) in groups.iter_mut().enumerate() {
        let size = dtype.size_in_bytes();
        let slack = usize::try_from(slack(*dtype, *bytes, align)).map_err(|_| too_large(file))?;
        let total = usize::try_from(*bytes)
            .ok()
            .and_then(|b| b.checked_add(slack))
            .ok_or_else(|| too_large(file))?;
        let buffer = match fill {
            Fill::Zeroed => Buffer::zeroed(*dtype, total),
            Fill::Overwrite => Buffer::for_overwrite(*dtype, total),
        };
        let mut buffer = buffer.ok_or(Error::InsufficientMemory {
            needed: total as u64,
            available: 0,
            pinned: 0,
        })?;
        advise_huge_pages(buffer.dest());
        reservation.grow(total as u64);
        if slack > 0 {
            // The group's first tensor in the file, and where it would have
            // to start in the buffer to line up with it.
            let first = file
                .header
                .tensors
                .iter()
                .zip(&placement)
                .find(|(_, place)| place.0 == group)
                .map(|(t, _)| t.offset);
            let start = buffer.dest().as_ptr() as u64;
            let pad = first.map_or(0, |f| f.wrapping_sub(start) % slack as u64);
            // Tensors start on a multiple of their dtype's size.
            let pad = if pad % size as u64 == 0 { pad } else { 0 };
            for (g, at) in placement.iter_mut() {
                if *g == group {
                    *at += pad;
                }
            }
        }
        *bytes = total as u64;
        buffers.push(buffer);
    }
    Ok(Prepared {
        groups,
        placement,
        buffers,
    })
}

/// Hand the read buffers to candle and cut them into the file's tensors.
pub(crate) fn finish(
    file: &FilePlan,
    prepared: Prepared,
    ctx: &ReadContext<'_>,
    reservation: &mut Reservation,
) -> Result<Vec<(String, Tensor)>> {
    let Prepared {
        groups,
        placement,
        buffers,
    } = prepared;
    let whole: Vec<Tensor> = buffers
        .into_iter()
        .map(Buffer::into_tensor)
        .collect::<candle_core::Result<_>>()?;
    cut(file, (groups, placement), whole, ctx, reservation)
}

/// Cut a file's buffers (`whole`, one 1-D tensor per group of `layout`)
/// into its tensors, converting dtypes and moving to the device where
/// asked. A tensor that is replaced (converted or moved) is counted when it
/// is made; a buffer all of whose tensors were replaced is uncounted once
/// it is freed, at the end.
pub(crate) fn cut(
    file: &FilePlan,
    (groups, placement): Layout,
    whole: Vec<Tensor>,
    ctx: &ReadContext<'_>,
    reservation: &mut Reservation,
) -> Result<Vec<(String, Tensor)>> {
    // Per buffer: whether a view of it is kept (it then stays allocated).
    let mut kept = vec![false; groups.len()];
    let entries = &file.header.tensors;
    let mut tensors = Vec::with_capacity(entries.len());
    for (entry, &(group, offset)) in entries.iter().zip(&placement) {
        let (Some(&(dtype, _)), Some(base)) = (groups.get(group), whole.get(group)) else {
            return Err(internal(file));
        };
        let size = dtype.size_in_bytes() as u64;
        let view = base
            .narrow(0, (offset / size) as usize, (entry.len / size) as usize)?
            .reshape(entry.shape.as_slice())?;
        let target = target_dtype(view.dtype(), ctx.dtype);
        let on_device = view.device().same_device(ctx.device);
        let tensor = if target == view.dtype() && on_device {
            if let Some(k) = kept.get_mut(group) {
                *k = true;
            }
            view
        } else {
            let converted = if target == view.dtype() {
                view
            } else {
                view.to_dtype(target)?
            };
            let moved = if on_device {
                converted
            } else {
                converted.to_device(ctx.device)?
            };
            reservation.grow(moved.elem_count() as u64 * target.size_in_bytes() as u64);
            moved
        };
        tensors.push((entry.name.clone(), tensor));
    }
    // Free the buffers no tensor views any more, then stop counting them.
    drop(whole);
    for (&(_, bytes), kept) in groups.iter().zip(kept) {
        if !kept {
            reservation.shrink(bytes);
        }
    }
    Ok(tensors)
}

pub(crate) fn plan_info(plan: &Plan) -> PipelineInfo {
    PipelineInfo {
        sample_size: plan.sample_size,
        config: plan.config.clone(),
        bytes: plan.bytes(),
        tensors: plan.tensor_count(),
    }
}
