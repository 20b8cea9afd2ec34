//! The read engine's one worker pool, shared by the host and CUDA reads:
//! the work is dealt round-robin to up to `threads` threads (thread k takes
//! items k, k+n, ...), so a file is still read roughly in order; the first
//! error stops every thread before its next item and is what the read
//! returns. No threads on wasm32: one share, on the caller's thread.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};

use crate::error::{Error, Result};

/// Set once any thread has failed: the others stop before their next item.
pub(crate) struct Stop(AtomicBool);

impl Stop {
    pub(crate) fn is_set(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// Run `work` over `items`, dealt to up to `threads` threads; each call
/// gets one thread's share, in order, and checks `Stop` between items.
pub(crate) fn deal<T: Send>(
    items: Vec<T>,
    threads: usize,
    work: impl Fn(Vec<T>, &Stop) -> Result<()> + Sync,
) -> Result<()> {
    let threads = if cfg!(target_arch = "wasm32") {
        1
    } else {
        threads.clamp(1, items.len().max(1))
    };
    let mut shares: Vec<Vec<T>> = (0..threads).map(|_| Vec::new()).collect();
    for (i, item) in items.into_iter().enumerate() {
        if let Some(share) = shares.get_mut(i % threads) {
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
        for threads in [1, 2, 3, 8, 100] {
            let seen = Mutex::new(Vec::new());
            deal((0..50).collect(), threads, |share: Vec<u32>, _| {
                assert!(share.windows(2).all(|w| w[0] < w[1]));
                seen.lock().unwrap().extend(share);
                Ok(())
            })
            .unwrap();
            let mut seen = seen.into_inner().unwrap();
            seen.sort();
            assert_eq!(seen, (0..50).collect::<Vec<_>>(), "{threads} threads");
        }
    }

    #[test]
    fn the_first_error_stops_the_others() {
        let worked = std::sync::atomic::AtomicUsize::new(0);
        let outcome = deal((0..10_000).collect(), 4, |share: Vec<u32>, stop| {
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
        });
        assert_eq!(outcome, Err(Error::Cancelled));
        assert!(worked.into_inner() < 10_000);
    }
}
