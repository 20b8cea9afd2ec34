//! An allocator that lets a load reuse the memory an evicted model just
//! freed, instead of faulting in fresh pages.
//!
//! A model's CPU tensors are large buffers; candle frees each when its last
//! tensor goes, and the system allocator hands blocks that large straight
//! back to the kernel. The next load then writes into fresh pages, which
//! the kernel must find (on a machine whose page cache fills the RAM, by
//! reclaiming it) and zero first. With [`Allocator`] installed, the blocks
//! a model frees to make room for the next one (a pool's eviction, a
//! manager's `load` of another model while one is ready) are kept for
//! that load, and its buffers take them back: pages that are already
//! touched, neither zeroed nor faulted again.
//!
//! Install it in one line, in the binary (the CLI, the C library and the
//! Python extension of model-manager install it already):
//!
//! ```
//! #[global_allocator]
//! static ALLOC: model_manager::alloc::Allocator = model_manager::alloc::Allocator::new();
//! ```
//!
//! What it keeps, and for how long:
//!
//! - Only blocks of at least 32 MiB (which glibc maps one by one and
//!   returns to the kernel on free), only on Linux, and only from the
//!   moment a pool on the CPU unloads models to make room for a load (at
//!   most that load's estimate), or a manager on the CPU asked to load
//!   another model frees its ready one once its leases are gone (at most
//!   that model's size; not for a stream or a download), until that load
//!   ends. A block freed while no
//!   load waits goes back to the kernel at once, as with the system
//!   allocator.
//! - A kept block serves the next allocation it is large enough for (best
//!   fit; the rest of it stays kept): the load's buffers, as a rule, or any
//!   other large allocation of the process meanwhile. An allocation no
//!   kept range can serve (larger than the largest, as a larger model's
//!   buffer after a smaller one's; or zeroed) first returns as much of
//!   what is kept as it takes, so the process never holds more than it did.
//! - When the last such load ends (loaded, failed or cancelled), everything
//!   still kept goes back to the kernel; [`release`] returns it at once;
//!   [`retained_bytes`] says how much is kept now, process-wide (every
//!   pool's snapshot and metrics report it too). A forked child keeps
//!   nothing.
//! - Every other allocation goes to the system allocator unchanged.
//!
//! A block taken from what is kept holds what its last owner wrote: it is
//! handed out by `alloc`, never by `alloc_zeroed` (which always gets fresh,
//! zeroed pages), as the `GlobalAlloc` contract allows.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, Ordering};

/// The allocator to install with `#[global_allocator]`: the system
/// allocator, with large blocks that a waiting load can reuse (see the
/// [module docs](self)).
#[derive(Debug, Default)]
pub struct Allocator {
    _private: (),
}

impl Allocator {
    /// The allocator, for a `static`.
    pub const fn new() -> Allocator {
        Allocator { _private: () }
    }
}

/// Set by the allocator's first use: this process allocates through it.
static INSTALLED: AtomicBool = AtomicBool::new(false);

/// Whether [`Allocator`] is this process's global allocator (it has served
/// an allocation).
pub fn installed() -> bool {
    INSTALLED.load(Ordering::Relaxed)
}

/// Bytes freed by models and kept for a waiting load, not yet reused or
/// returned to the kernel (0 where [`Allocator`] is not installed, and off
/// Linux).
pub fn retained_bytes() -> u64 {
    #[cfg(target_os = "linux")]
    {
        large::retained() as u64
    }
    #[cfg(not(target_os = "linux"))]
    0
}

/// Return every kept byte to the kernel now. Loads still waiting keep what
/// is freed from now on.
pub fn release() {
    #[cfg(target_os = "linux")]
    large::release_beyond(0);
}

/// Keeps up to `bytes` of freed large blocks while it lives: held by a load
/// that waits for memory an eviction frees, and by that load while it runs.
/// When the last one goes, what is kept returns to the kernel.
#[derive(Debug)]
pub(crate) struct Retention {
    #[cfg(target_os = "linux")]
    bytes: usize,
}

impl Retention {
    pub(crate) fn new(bytes: u64) -> Retention {
        #[cfg(target_os = "linux")]
        {
            let bytes = usize::try_from(bytes).unwrap_or(usize::MAX);
            large::want(bytes);
            Retention { bytes }
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = bytes;
            Retention {}
        }
    }
}

impl Drop for Retention {
    fn drop(&mut self) {
        #[cfg(target_os = "linux")]
        large::unwant(self.bytes);
    }
}

// SAFETY: every block is either the system allocator's (small, or aligned
// beyond a page: passed through with its layout) or a private anonymous
// mapping of the layout's size rounded up to pages (`large`), told apart by
// the same rule (`large::serves`) on allocation, reallocation and free, so
// each block is freed by the code that allocated it.
unsafe impl GlobalAlloc for Allocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        mark_installed();
        #[cfg(target_os = "linux")]
        if large::serves(layout) {
            return large::alloc(layout.size(), true);
        }
        // SAFETY: the caller's contract (a non-zero size) is passed on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        mark_installed();
        #[cfg(target_os = "linux")]
        if large::serves(layout) {
            // Fresh pages only: the kernel zeroes them as they are touched.
            return large::alloc(layout.size(), false);
        }
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        #[cfg(target_os = "linux")]
        if large::serves(layout) {
            // SAFETY: allocated by `large::alloc` for this size (same rule).
            unsafe { large::free(ptr, layout.size()) };
            return;
        }
        // SAFETY: allocated by `System` with this layout (same rule).
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        #[cfg(target_os = "linux")]
        {
            // SAFETY: the caller guarantees `new_size`, rounded up to the
            // alignment, does not overflow `isize`, as `Layout` requires.
            let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
            match (large::serves(layout), large::serves(new_layout)) {
                // SAFETY: a block of `large`, of this size.
                (true, true) => return unsafe { large::realloc(ptr, layout.size(), new_size) },
                (false, false) => {}
                _ => {
                    // Across the threshold: to the other kind of block.
                    // SAFETY: `new_layout` has a non-zero size (the
                    // caller's); both blocks are live and distinct.
                    unsafe {
                        let new = self.alloc(new_layout);
                        if !new.is_null() {
                            std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                            self.dealloc(ptr, layout);
                        }
                        return new;
                    }
                }
            }
        }
        // SAFETY: a block of `System` with `layout` (same rule).
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

fn mark_installed() {
    if !INSTALLED.load(Ordering::Relaxed) {
        INSTALLED.store(true, Ordering::Relaxed);
    }
}

/// Large blocks: private anonymous mappings, and the ones kept for a
/// waiting load.
#[cfg(target_os = "linux")]
mod large {
    use std::alloc::Layout;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    const PAGE: usize = 4096;
    const HUGE: usize = 2 << 20;
    /// Blocks from this size up are mappings of their own: the size from
    /// which glibc maps every block on its own too (its largest dynamic
    /// mmap threshold), so smaller blocks (inference's temporaries above
    /// all) keep glibc's reuse of its heap.
    const THRESHOLD: usize = 32 << 20;
    /// The most separate ranges kept (adjacent ones merge); a block freed
    /// when every slot is taken goes back to the kernel.
    const SLOTS: usize = 64;

    /// What is kept: page-aligned ranges `(start, len)`, no two adjacent.
    struct Store {
        ranges: [(usize, usize); SLOTS],
        count: usize,
        /// Their total length.
        bytes: usize,
        /// What the live `Retention`s ask to keep, in all.
        wanted: usize,
    }

    /// The store, behind [`lock`]. It never allocates (a fixed array)
    /// while locked: the lock is taken inside the allocator.
    struct Locked(std::cell::UnsafeCell<Store>);

    // SAFETY: the store is only reached through `lock`, which gives one
    // thread at a time a `Guard`.
    unsafe impl Sync for Locked {}

    static STORE: Locked = Locked(std::cell::UnsafeCell::new(Store {
        ranges: [(0, 0); SLOTS],
        count: 0,
        bytes: 0,
        wanted: 0,
    }));
    static LOCKED: AtomicBool = AtomicBool::new(false);
    /// `Store::bytes`, readable without the lock.
    static RETAINED: AtomicUsize = AtomicUsize::new(0);
    static AT_FORK: AtomicBool = AtomicBool::new(false);

    /// The store, for one thread at a time. A plain flag rather than a
    /// mutex, so that `fork` can hold it across (see [`at_fork`]); held
    /// only for bookkeeping, never across a system call.
    struct Guard;

    fn acquire() {
        while LOCKED
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            std::thread::yield_now();
        }
    }

    fn unlock() {
        LOCKED.store(false, Ordering::Release);
    }

    fn lock() -> Guard {
        at_fork();
        acquire();
        Guard
    }

    impl std::ops::Deref for Guard {
        type Target = Store;
        fn deref(&self) -> &Store {
            // SAFETY: this thread holds the lock while the guard lives.
            unsafe { &*STORE.0.get() }
        }
    }

    impl std::ops::DerefMut for Guard {
        fn deref_mut(&mut self) -> &mut Store {
            // SAFETY: as for `deref`; the guard is borrowed mutably.
            unsafe { &mut *STORE.0.get() }
        }
    }

    impl Drop for Guard {
        fn drop(&mut self) {
            unlock();
        }
    }

    /// A process that forks while another thread holds the store would
    /// leave its child's store locked for good (glibc's malloc guards its
    /// own locks the same way): the lock is taken around `fork`, and the
    /// child starts with nothing kept for loads it does not run (its kept
    /// ranges are its own copies of the parent's: unmapped as it goes).
    fn at_fork() {
        extern "C" fn prepare() {
            acquire();
        }
        extern "C" fn parent() {
            unlock();
        }
        extern "C" fn child() {
            // SAFETY: the child has one thread, and `prepare` took the lock
            // for it before the fork.
            let store = unsafe { &mut *STORE.0.get() };
            store.wanted = 0;
            WANTED.store(0, Ordering::Relaxed);
            unlock();
            release_beyond(0);
        }
        // A flag that never waits (a `Once` could be caught mid-call by a
        // fork, and its child would wait on it for good).
        if !AT_FORK.load(Ordering::Relaxed) && !AT_FORK.swap(true, Ordering::AcqRel) {
            // SAFETY: registers three `extern "C"` functions that live for
            // the whole process.
            unsafe { libc::pthread_atfork(Some(prepare), Some(parent), Some(child)) };
        }
    }

    pub(super) fn retained() -> usize {
        RETAINED.load(Ordering::Relaxed)
    }

    pub(super) fn serves(layout: Layout) -> bool {
        layout.size() >= THRESHOLD && layout.align() <= PAGE
    }

    impl Store {
        fn ranges(&self) -> &[(usize, usize)] {
            self.ranges.get(..self.count).unwrap_or(&[])
        }

        fn set_bytes(&mut self, bytes: usize) {
            self.bytes = bytes;
            RETAINED.store(bytes, Ordering::Relaxed);
        }

        fn remove(&mut self, i: usize) {
            if i < self.count {
                self.ranges.copy_within(i + 1..self.count, i);
                self.count -= 1;
            }
        }

        /// Keep `[start, start + len)`, merged with a neighbour where it
        /// touches one; false when no slot is left.
        fn insert(&mut self, start: usize, len: usize) -> bool {
            let end = start + len;
            let before = self.ranges().iter().position(|&(s, l)| s + l == start);
            let after = self.ranges().iter().position(|&(s, _)| s == end);
            match (before, after) {
                (Some(b), Some(a)) => {
                    let merged = self.ranges[b].1 + len + self.ranges[a].1;
                    self.ranges[b].1 = merged;
                    self.remove(a);
                }
                (Some(b), None) => self.ranges[b].1 += len,
                (None, Some(a)) => self.ranges[a] = (start, len + self.ranges[a].1),
                (None, None) if self.count < SLOTS => {
                    self.ranges[self.count] = (start, len);
                    self.count += 1;
                }
                (None, None) => return false,
            }
            let bytes = self.bytes + len;
            self.set_bytes(bytes);
            true
        }

        /// Take `len` bytes from the front of range `i` (at least `len`
        /// long).
        fn take_front(&mut self, i: usize, len: usize) -> usize {
            let (start, have) = self.ranges[i];
            if have == len {
                self.remove(i);
            } else {
                self.ranges[i] = (start + len, have - len);
            }
            let bytes = self.bytes - len;
            self.set_bytes(bytes);
            start
        }

        /// The smallest range of at least `len` bytes.
        fn best_fit(&self, len: usize) -> Option<usize> {
            self.ranges()
                .iter()
                .enumerate()
                .filter(|(_, &(_, l))| l >= len)
                .min_by_key(|(_, &(_, l))| l)
                .map(|(i, _)| i)
        }

        /// The largest range.
        fn largest(&self) -> Option<usize> {
            self.ranges()
                .iter()
                .enumerate()
                .max_by_key(|(_, &(_, l))| l)
                .map(|(i, _)| i)
        }
    }

    fn pages(size: usize) -> Option<usize> {
        size.checked_next_multiple_of(PAGE)
    }

    /// A block of `size` bytes: from what is kept when `reuse` allows and
    /// something is, else fresh (zeroed) pages.
    pub(super) fn alloc(size: usize, reuse: bool) -> *mut u8 {
        let Some(len) = pages(size) else {
            return std::ptr::null_mut();
        };
        if retained() > 0 {
            if reuse {
                let mut store = lock();
                if let Some(i) = store.best_fit(len) {
                    return store.take_front(i, len) as *mut u8;
                }
            }
            // No kept range serves this block (none is large enough, or it
            // must be zeroed): as much of what is kept as the block takes
            // goes back before fresh pages are mapped, so that the process
            // never holds more than it did (a load's buffer for a larger
            // model was charged as if the evicted memory were gone); the
            // rest stays for the load's next buffers.
            release_beyond(retained().saturating_sub(len));
        }
        fresh(len)
    }

    /// `len` bytes (whole pages) of fresh anonymous memory, aligned to
    /// 2 MiB when that long (so huge pages can back all of it).
    fn fresh(len: usize) -> *mut u8 {
        let extra = if len >= HUGE { HUGE } else { 0 };
        let Some(total) = len.checked_add(extra) else {
            return std::ptr::null_mut();
        };
        // SAFETY: a new private anonymous mapping; nothing else is touched.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                total,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return std::ptr::null_mut();
        }
        let start = p as usize;
        let aligned = if extra > 0 {
            start.next_multiple_of(HUGE)
        } else {
            start
        };
        let (head, tail) = (aligned - start, total - (aligned - start) - len);
        // SAFETY: the parts of the mapping just made outside the block.
        unsafe {
            if head > 0 {
                libc::munmap(start as *mut libc::c_void, head);
            }
            if tail > 0 {
                libc::munmap((aligned + len) as *mut libc::c_void, tail);
            }
        }
        aligned as *mut u8
    }

    /// Free a block of `size` bytes: kept as far as the waiting loads want
    /// it, the rest unmapped.
    ///
    /// # Safety
    /// `ptr` is a live block from [`alloc`] of this size, not used again.
    pub(super) unsafe fn free(ptr: *mut u8, size: usize) {
        let Some(len) = pages(size) else { return };
        let start = ptr as usize;
        let mut keep = 0;
        if retained() < wanted_hint() {
            let mut store = lock();
            // Whole pages, rounded up: a buffer of exactly the estimate
            // takes whole pages too.
            let room = store
                .wanted
                .saturating_sub(store.bytes)
                .saturating_add(PAGE - 1)
                / PAGE
                * PAGE;
            let n = room.min(len);
            if n > 0 && store.insert(start, n) {
                keep = n;
            }
        }
        if keep < len {
            // SAFETY: the block's pages not kept, owned by the caller.
            unsafe { libc::munmap((start + keep) as *mut libc::c_void, len - keep) };
        }
    }

    /// # Safety
    /// `ptr` is a live block from [`alloc`] of `size` bytes.
    pub(super) unsafe fn realloc(ptr: *mut u8, size: usize, new_size: usize) -> *mut u8 {
        let (Some(len), Some(new_len)) = (pages(size), pages(new_size)) else {
            return std::ptr::null_mut();
        };
        if len == new_len {
            return ptr;
        }
        // SAFETY: the block is `len` bytes of mappings owned by the
        // caller; on failure it is left as it was.
        let moved = unsafe { libc::mremap(ptr.cast(), len, new_len, libc::MREMAP_MAYMOVE) };
        if moved != libc::MAP_FAILED {
            return moved.cast();
        }
        // The kernel resizes one mapping only, and a block may span
        // several (huge-page advice on part of it splits its mapping; a
        // block taken from a kept range may cover parts of two): a new
        // block, the bytes copied, the old one freed.
        let new = alloc(new_size, true);
        if !new.is_null() {
            // SAFETY: two live, distinct blocks of at least the bytes
            // copied; the old one is freed once, here.
            unsafe {
                std::ptr::copy_nonoverlapping(ptr, new, size.min(new_size));
                free(ptr, size);
            }
        }
        new
    }

    /// `Store::wanted`, readable without the lock.
    static WANTED: AtomicUsize = AtomicUsize::new(0);

    fn wanted_hint() -> usize {
        WANTED.load(Ordering::Relaxed)
    }

    pub(super) fn want(bytes: usize) {
        let mut store = lock();
        store.wanted = store.wanted.saturating_add(bytes);
        WANTED.store(store.wanted, Ordering::Relaxed);
    }

    pub(super) fn unwant(bytes: usize) {
        let wanted = {
            let mut store = lock();
            store.wanted = store.wanted.saturating_sub(bytes);
            WANTED.store(store.wanted, Ordering::Relaxed);
            store.wanted
        };
        release_beyond(wanted);
    }

    /// Unmap kept ranges until at most `keep` bytes are kept.
    pub(super) fn release_beyond(keep: usize) {
        let mut out = [(0usize, 0usize); SLOTS];
        let mut n = 0;
        {
            let mut store = lock();
            while store.bytes > keep {
                let Some(i) = store.largest() else { break };
                let (start, len) = store.ranges[i];
                let give = len.min(store.bytes - keep).next_multiple_of(PAGE).min(len);
                // The back of the range goes; its front stays kept.
                out[n] = (start + len - give, give);
                n += 1;
                if give == len {
                    store.remove(i);
                } else {
                    store.ranges[i].1 = len - give;
                }
                let left = store.bytes - give;
                store.set_bytes(left);
            }
        }
        for &(start, len) in &out[..n] {
            // SAFETY: ranges taken out of the store, owned by no one else.
            unsafe { libc::munmap(start as *mut libc::c_void, len) };
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        /// What is kept is counted, reused from the front of a range,
        /// merged back when freed, and all of it returned at the end.
        /// (Only this test uses `large` in this binary: the library's
        /// tests do not install the allocator.)
        #[test]
        fn kept_blocks_are_counted_reused_and_returned() {
            const MIB: usize = 1 << 20;
            want(64 * MIB);
            let block = alloc(64 * MIB, true);
            assert!(!block.is_null());
            // SAFETY: the block just mapped, 64 MiB, owned here.
            unsafe { block.write_bytes(7, 64 * MIB) };
            // SAFETY: freed once, with its size.
            unsafe { free(block, 64 * MIB) };
            assert_eq!(retained(), 64 * MIB, "kept while a load wants it");
            let front = alloc(32 * MIB, true);
            assert_eq!(front, block, "the front of the kept range");
            assert_eq!(retained(), 32 * MIB);
            // SAFETY: the front just taken, 32 MiB, touched before.
            assert_eq!(unsafe { *front.add(32 * MIB - 1) }, 7, "not zeroed again");
            // SAFETY: freed once, with its size.
            unsafe { free(front, 32 * MIB) };
            assert_eq!(retained(), 64 * MIB, "merged back");
            // A larger block than any kept range: as much goes back first.
            let larger = alloc(96 * MIB, true);
            assert_eq!(retained(), 0);
            // SAFETY: freed once, with its size (nothing wants it now but
            // the 64 MiB, which it fills up to).
            unsafe { free(larger, 96 * MIB) };
            assert_eq!(retained(), 64 * MIB);
            unwant(64 * MIB);
            assert_eq!(retained(), 0, "all returned when no load wants it");
        }
    }
}
