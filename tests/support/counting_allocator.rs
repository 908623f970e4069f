//! A global allocator that counts this thread's allocations, for tests that assert allocation
//! counts (which are deterministic). Included with `#[path]` by the test binaries that want it:
//! a global allocator applies to its whole binary.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

/// Counts this thread's allocations (tests run on several threads at once).
struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
    static DEALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: forwards every call to the system allocator unchanged; counting touches only
// const-initialised thread-locals, which never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|count| count.set(count.get() + 1));
        // SAFETY: the caller's contract is the system allocator's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, pointer: *mut u8, layout: Layout) {
        let _ = DEALLOCATIONS.try_with(|count| count.set(count.get() + 1));
        // SAFETY: as above.
        unsafe { System.dealloc(pointer, layout) }
    }

    unsafe fn realloc(&self, pointer: *mut u8, layout: Layout, size: usize) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|count| count.set(count.get() + 1));
        // SAFETY: as above.
        unsafe { System.realloc(pointer, layout, size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// (allocations, deallocations) made on this thread while running `work`, and its result.
pub(crate) fn count<T>(work: impl FnOnce() -> T) -> (usize, usize, T) {
    let (allocations, deallocations) = (ALLOCATIONS.with(Cell::get), DEALLOCATIONS.with(Cell::get));
    let result = work();
    (
        ALLOCATIONS.with(Cell::get) - allocations,
        DEALLOCATIONS.with(Cell::get) - deallocations,
        result,
    )
}
