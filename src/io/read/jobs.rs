//! The read engine's one chunk planner: how a file's tensor data is split
//! into reads, for every target (host memory, CUDA through staging, wasm).
//! Pure, so that it is tested here, on any machine.

/// Part of a read that belongs to one tensor: the bytes at `src` in the
/// read go to `dst` in its group's buffer (host or device).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Segment {
    pub(crate) tensor: usize,
    pub(crate) group: usize,
    pub(crate) src: usize,
    pub(crate) dst: u64,
    pub(crate) len: usize,
}

/// One read: `len` bytes of the file from `offset`, and where they go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Job {
    pub(crate) offset: u64,
    pub(crate) len: usize,
    pub(crate) segments: Vec<Segment>,
}

/// Split tensors (`spans`: file offset and length of each; `placement`: its
/// group and offset in the group's buffer) into reads of at most `chunk`
/// bytes. A read covers consecutive tensors (small tensors share one read
/// and one staging buffer; a large one spans several reads); a read never
/// spans a gap between tensors. `None` if the lists disagree or a length
/// does not fit in memory.
pub(crate) fn jobs(
    spans: &[(u64, u64)],
    placement: &[(usize, u64)],
    chunk: usize,
) -> Option<Vec<Job>> {
    if spans.len() != placement.len() {
        return None;
    }
    let chunk = chunk.max(1);
    let mut order: Vec<usize> = (0..spans.len()).collect();
    order.sort_by_key(|&i| spans.get(i).map_or(0, |s| s.0));
    let mut jobs: Vec<Job> = Vec::new();
    for i in order {
        let (&(offset, len), &(group, at)) = (spans.get(i)?, placement.get(i)?);
        let len = usize::try_from(len).ok()?;
        let mut done = 0usize;
        while done < len {
            let from = offset.saturating_add(done as u64);
            // Extend the last read if this piece starts where it ends and it
            // has room; else start a new read here.
            let room = match jobs.last() {
                Some(last)
                    if last.offset.saturating_add(last.len as u64) == from && last.len < chunk =>
                {
                    chunk - last.len
                }
                _ => {
                    jobs.push(Job {
                        offset: from,
                        len: 0,
                        segments: Vec::new(),
                    });
                    chunk
                }
            };
            let piece = room.min(len - done);
            let job = jobs.last_mut()?;
            job.segments.push(Segment {
                tensor: i,
                group,
                src: job.len,
                dst: at.saturating_add(done as u64),
                len: piece,
            });
            job.len += piece;
            done += piece;
        }
    }
    Some(jobs)
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Every byte of every tensor is read exactly once, from its place
        /// in the file to its place in its buffer; no read exceeds a chunk;
        /// a read's segments lie in it, back to back, and match the file.
        #[test]
        fn reads_tile_every_tensor(
            lens in prop::collection::vec(0u64..40, 0..12),
            gaps in prop::collection::vec(0u64..3, 12),
            groups in prop::collection::vec(0usize..3, 12),
            chunk in 1usize..50,
        ) {
            // Tensors laid out in file order with optional gaps; each group
            // packed in file order, as `layout` does.
            let (mut spans, mut placement, mut next) = (vec![], vec![], [0u64; 3]);
            let mut at = 0u64;
            for (i, &len) in lens.iter().enumerate() {
                at += gaps[i];
                spans.push((at, len));
                placement.push((groups[i], next[groups[i]]));
                next[groups[i]] += len;
                at += len;
            }
            let jobs = jobs(&spans, &placement, chunk).unwrap();
            let mut covered: Vec<Vec<bool>> = lens.iter().map(|&l| vec![false; l as usize]).collect();
            for job in &jobs {
                prop_assert!(job.len <= chunk && job.len > 0);
                let mut src = 0;
                for seg in &job.segments {
                    prop_assert_eq!(seg.src, src, "segments back to back");
                    src += seg.len;
                    let (t_off, _) = spans[seg.tensor];
                    let (group, g_off) = placement[seg.tensor];
                    prop_assert_eq!(seg.group, group);
                    let within = seg.dst - g_off;
                    // The file bytes read here are the tensor's bytes at `within`.
                    prop_assert_eq!(job.offset + seg.src as u64, t_off + within);
                    for b in within..within + seg.len as u64 {
                        prop_assert!(!covered[seg.tensor][b as usize], "read twice");
                        covered[seg.tensor][b as usize] = true;
                    }
                }
                prop_assert_eq!(src, job.len);
            }
            prop_assert!(covered.iter().all(|c| c.iter().all(|&b| b)), "every byte read");
        }
    }

    #[test]
    fn disagreeing_lists_are_refused() {
        assert_eq!(jobs(&[(0, 4)], &[], 8), None);
    }
}
