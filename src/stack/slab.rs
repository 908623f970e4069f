//! Slabs: many stacks carved from one shared mapping, each over a guard region, or (an unsafe
//! opt-in) with canaries instead of guard pages.
//!
//! A slab is one anonymous mapping holding up to [`SLAB_STACKS`] stacks of one size class,
//! carved bottom to top. There are two kinds.
//!
//! # Guarded slabs
//!
//! Where the kernel has guard regions (see `guard.rs`), each slot is a guard page and the
//! stack above it, and the guard page is made a guard region when the slot is carved:
//!
//! ```text
//!   slab end      +------------------------------+ <- top of slot n-1
//!                 | header of slot n-1           |
//!                 |   ...  slot n-1 ...          |
//!                 +------------------------------+
//!                 | guard region of slot n-1     |
//!                 +------------------------------+ <- top of slot n-2
//!                 |   ...                        |
//!                 +------------------------------+ <- top of slot 0
//!                 | header of slot 0             |
//!                 |   ...  slot 0 ...            |
//!                 +------------------------------+
//!                 | guard region of slot 0       |
//!   slab start    +------------------------------+
//! ```
//!
//! The whole slab stays one read-write mapping, one kernel map. Every slot's guard page is
//! registered with the overflow handler like that of a stack with a mapping of its own.
//!
//! # Canary slabs
//!
//! With guard pages off ([`set_guard_pages(false)`](super::set_guard_pages)), the slots sit
//! side by side with a canary at the bottom of each, and one `PROT_NONE` page at the slab's
//! very bottom:
//!
//! ```text
//!   slab end      +------------------------------+
//!                 | (canary-sized tail, unused)  |
//!                 +------------------------------+ <- top of slot n-1
//!                 | header of slot n-1           |
//!                 |   ...  slot n-1 ...          |
//!                 | canary of slot n-1           |
//!                 +------------------------------+ <- top of slot n-2
//!                 |   ...                        |
//!                 | header of slot 0             |
//!                 |   ...  slot 0 ...            |  bottom of slot 0: page aligned
//!                 | canary of slot 0             |  the last bytes of the first data page
//!                 | (unused rest of that page)   |
//!                 +------------------------------+
//!                 | guard page (PROT_NONE)       |  slot 0 keeps a guard page
//!   slab start    +------------------------------+
//! ```
//!
//! Every slot spans `size` bytes (its size class), and its canary takes its lowest
//! [`CANARY_BYTES`]; the stack's usable part starts just above, on a page boundary. Slots are
//! shifted so that a slot's canary shares a page with the header of the slot below it, a page
//! that is touched anyway: the canaries cost no resident memory of their own.
//!
//! The slab's data part is one read-write region, so a slab costs two kernel maps in all (the
//! guard page and the data), against two per stack with guard pages.
//!
//! # Both kinds
//!
//! Slabs belong to the thread that mapped them: a `Stack` is `!Send`, so its release runs on
//! that thread too. Each slab counts its live slots (carved and not released; pooled stacks
//! count as live) and is unmapped when the count falls to zero. Released slots are not carved
//! again: a slab's memory is reused through the thread's pool; a slot released while its slab
//! lives on gives its pages back to the kernel at once (`MADV_DONTNEED`, which keeps guard
//! regions), and its address space goes with the slab's last stack. A long-lived greenlet can
//! thus keep the address space of up to [`SLAB_STACKS`] stacks mapped, but no more memory than
//! its own.
//!
//! # Canaries (canary slabs)
//!
//! Without a guard page an overflow does not fault: it runs down into the slot below. A canary
//! of [`CANARY_BYTES`] at the bottom of every slot is checked
//!
//! - whenever a carved stack is released: dropped (to the pool or not), trimmed from the pool,
//!   or its thread exits;
//! - for every slot of a slab when the slab is unmapped (an overflow that ran through several
//!   slots breaks the canaries of released slots too);
//! - for every carved slot of the thread whenever the thread's count of slabs reaches a new
//!   power of two, and on [`trim_pool`](super::trim_pool): a sweep over all of them, at most
//!   twice the slots carved in all, amortised, and paid only while slabs are being mapped
//!   (already a couple of system calls each), never on a switch or a pool hit.
//!
//! A broken canary prints one line naming the stack size and the missing guard page, then
//! aborts. Memory below the overflowed stack (another greenlet's frames or its header) may have
//! been overwritten by then, which is why guard pages stay the default. And a frame that
//! reserves more than [`CANARY_BYTES`] without writing all of it steps over the canary, which
//! then stays intact: the canaries diagnose overflows, they do not prevent them. Hence the
//! contract of the `unsafe` [`set_guard_pages`](super::set_guard_pages), the only way to get a
//! carved stack.

use std::cell::Cell;
use std::io::Write;
use std::ptr::NonNull;

use super::{Header, StackError, guard, os, overflow, valgrind};

/// The most stacks one slab holds.
pub(super) const SLAB_STACKS: usize = 64;

/// The most bytes of stacks in one slab: large stacks get fewer per slab.
const SLAB_MAX_BYTES: usize = 256 * 1024 * 1024;

/// The canary's words; a pattern no frame is likely to leave there.
const CANARY: [u64; 4] = [
    0xA5C3_5A3C_0F1E_2D4B,
    0x5A3C_A5C3_F0E1_D2B4,
    0xC3A5_3C5A_1E0F_4B2D,
    0x3C5A_C3A5_E1F0_B4D2,
];

/// Bytes at the bottom of each carved slot taken by the canary.
pub(super) const CANARY_BYTES: usize = std::mem::size_of::<[u64; 4]>();

/// One shared mapping of stacks. Lives on the heap, owned by its thread's slab lists.
pub(super) struct Slab {
    /// Start of the mapping (its guard page).
    start: usize,
    /// Length of the whole mapping.
    len: usize,
    /// Bytes per slot, a whole number of pages: the stack size asked for.
    size_class: usize,
    /// Whether each slot has a guard region below it (otherwise a canary at its bottom).
    guarded: bool,
    /// Slots in the slab.
    capacity: usize,
    /// Slots carved so far; slot `carved` is the next one.
    carved: Cell<usize>,
    /// Carved slots not released yet.
    live: Cell<usize>,
    /// Next slab with uncarved slots, in this thread's partial list.
    next_partial: Cell<*mut Slab>,
    /// Neighbours in this thread's list of all its slabs.
    prev: Cell<*mut Slab>,
    next: Cell<*mut Slab>,
}

impl Slab {
    /// The lowest address of slot `index`: its guard region, or where its canary goes.
    fn slot_start(&self, index: usize) -> usize {
        let page = os::page_size();
        if self.guarded {
            self.start + index * (page + self.size_class)
        } else {
            self.start + 2 * page - CANARY_BYTES + index * self.size_class
        }
    }

    /// What the pool and the partial list match stacks of this slab by.
    fn key(&self) -> usize {
        self.size_class | if self.guarded { 0 } else { super::CARVED_KEY }
    }

    /// Checks the canaries of all carved slots; aborts on a broken one.
    fn check_all(&self) {
        if self.guarded {
            return;
        }
        for index in 0..self.carved.get() {
            check_canary_at(self.slot_start(index), self.size_class);
        }
    }
}

/// This thread's slabs. Const-initialised and without a destructor, so stacks released during
/// or after thread-local destruction still find it.
struct Slabs {
    /// Slabs with uncarved slots, at most one per size class.
    partial: Cell<*mut Slab>,
    /// All mapped slabs, for the sweeps.
    all: Cell<*mut Slab>,
    count: Cell<usize>,
}

thread_local! {
    static SLABS: Slabs = const {
        Slabs {
            partial: Cell::new(std::ptr::null_mut()),
            all: Cell::new(std::ptr::null_mut()),
            count: Cell::new(0),
        }
    };
}

/// Carves a stack of `size` bytes (a whole number of pages) from this thread's slab of that
/// size class and kind, mapping a new slab when there is none with room: with a guard region
/// below it when `guarded`, else with a canary at its bottom.
pub(super) fn carve(size: usize, guarded: bool) -> Result<NonNull<Header>, StackError> {
    SLABS.with(|slabs| {
        let key = size | if guarded { 0 } else { super::CARVED_KEY };
        let slab = match find_partial(slabs, key) {
            Some(slab) => slab,
            None => map_slab(slabs, size, guarded)?,
        };
        // SAFETY: slabs in the partial list are mapped and owned by this thread.
        let slab_ref = unsafe { slab.as_ref() };
        let index = slab_ref.carved.get();
        let slot_start = slab_ref.slot_start(index);
        let page = os::page_size();
        let (bottom, slot_end, guard_start) = if guarded {
            // SAFETY: the slot's first page lies in the slab and has never been handed out.
            if let Err(error) = unsafe { guard::install_region(slot_start) } {
                if slab_ref.live.get() == 0 {
                    // SAFETY: the slab has no live stacks; nothing refers to it.
                    unsafe { unmap_slab(slabs, slab) };
                }
                return Err(error);
            }
            (slot_start + page, slot_start + page + size, slot_start)
        } else {
            // SAFETY: the slot lies inside the slab's read-write part and is carved only now.
            unsafe { (slot_start as *mut [u64; 4]).write(CANARY) };
            // Only the lowest slot sits on the slab's guard page: register it for the overflow
            // handler's lookup; the others have no guard page to look up.
            let guard_start = if index == 0 { slab_ref.start } else { 0 };
            (slot_start + CANARY_BYTES, slot_start + size, guard_start)
        };
        slab_ref.carved.set(index + 1);
        slab_ref.live.set(slab_ref.live.get() + 1);
        if index + 1 == slab_ref.capacity {
            remove_partial(slabs, slab);
        }
        let header_address = slot_end - std::mem::size_of::<Header>();
        let valgrind_id = valgrind::register_stack(bottom, slot_end);
        let initial = Header {
            registry_prev: Cell::new(std::ptr::null_mut()),
            registry_next: Cell::new(std::ptr::null_mut()),
            pool_next: Cell::new(std::ptr::null_mut()),
            mapping_start: guard_start,
            mapping_len: 0,
            size: slot_end - bottom,
            pool_key: key,
            slab: slab.as_ptr(),
            valgrind_id,
        };
        let header = header_address as *mut Header;
        // SAFETY: the top of the slot is writable, unused and aligned for `Header` (the slot end
        // is 16-byte aligned and the header's size a multiple of its alignment).
        unsafe { header.write(initial) };
        // SAFETY: `header` was just written and is non-null.
        let header = unsafe { NonNull::new_unchecked(header) };
        if guard_start != 0 {
            overflow::register(header);
        }
        Ok(header)
    })
}

/// Releases a carved stack: checks its canary (if it has one), and unmaps its slab if it was
/// the last one, or else gives the slot's pages back to the kernel (the slot is not carved
/// again; the slab's memory is reused through the pool).
///
/// # Safety
///
/// `header` must belong to a carved stack of this thread that nothing uses or refers to any
/// more, released only once.
pub(super) unsafe fn release(header: NonNull<Header>) {
    // SAFETY: the caller guarantees the header is valid and unused.
    let (guard_start, valgrind_id, slab, pool_key) = unsafe {
        let header = header.as_ref();
        (
            header.mapping_start,
            header.valgrind_id,
            header.slab,
            header.pool_key,
        )
    };
    if pool_key & super::CARVED_KEY != 0 {
        check_canary(header);
    }
    if guard_start != 0 {
        overflow::deregister(header);
    }
    valgrind::deregister_stack(valgrind_id);
    // SAFETY: a carved stack's slab stays mapped while the stack is live.
    let slab_ref = unsafe { &*slab };
    let live = slab_ref.live.get() - 1;
    slab_ref.live.set(live);
    if live == 0 {
        // SAFETY: the slab's last stack is gone; nothing else refers to it.
        SLABS.with(|slabs| unsafe { unmap_slab(slabs, NonNull::new_unchecked(slab)) });
    } else {
        // The slot's whole usable part, header included (read above); a canary slot's top page
        // also holds the next slot's canary, and `release_pages` keeps partial pages.
        let end = header.as_ptr() as usize + std::mem::size_of::<Header>();
        os::release_pages(super::bottom(header) as usize, end);
    }
}

/// Checks the canary of a carved stack; aborts with a report when it is broken.
#[inline]
pub(super) fn check_canary(header: NonNull<Header>) {
    // SAFETY: the caller's header is valid; a carved stack's slot starts `pool_key & !CARVED_KEY`
    // bytes below the end of its header.
    let (slot_start, size_class) = unsafe {
        let size_class = header.as_ref().pool_key & !super::CARVED_KEY;
        let slot_end = header.as_ptr() as usize + std::mem::size_of::<Header>();
        (slot_end - size_class, size_class)
    };
    check_canary_at(slot_start, size_class);
}

#[inline]
fn check_canary_at(slot_start: usize, size_class: usize) {
    let canary = slot_start as *const u64;
    // SAFETY: a carved slot's first four words are mapped and hold its canary; volatile so that
    // the check reads memory even where the compiler saw the canary written.
    let intact =
        (0..CANARY.len()).all(|word| unsafe { canary.add(word).read_volatile() } == CANARY[word]);
    if !intact {
        report_broken_canary(size_class);
    }
}

/// Reports an overflow detected by a broken canary, then aborts.
#[cold]
#[inline(never)]
fn report_broken_canary(size_class: usize) -> ! {
    let line = format!(
        "awaitlet: a greenlet overflowed its {} KiB stack, which had no guard page \
         (awaitlet::stack::set_guard_pages(false)), so memory below it may be corrupted; \
         give it a larger one with Greenlet::builder().stack_size(bytes) or \
         AsyncDef::stack_size(bytes), or keep guard pages on to catch overflows when they \
         happen\n",
        size_class / 1024
    );
    let _ = std::io::stderr().write_all(line.as_bytes());
    std::process::abort();
}

/// Checks the canary of every carved slot of this thread.
pub(super) fn check_all() {
    SLABS.with(|slabs| {
        let mut next = slabs.all.get();
        while let Some(slab) = NonNull::new(next) {
            // SAFETY: slabs in the list are mapped and owned by this thread.
            let slab = unsafe { slab.as_ref() };
            slab.check_all();
            next = slab.next.get();
        }
    });
}

fn find_partial(slabs: &Slabs, key: usize) -> Option<NonNull<Slab>> {
    let mut next = slabs.partial.get();
    while let Some(slab) = NonNull::new(next) {
        // SAFETY: slabs in the partial list are mapped and owned by this thread.
        let slab_ref = unsafe { slab.as_ref() };
        if slab_ref.key() == key {
            return Some(slab);
        }
        next = slab_ref.next_partial.get();
    }
    None
}

fn remove_partial(slabs: &Slabs, slab: NonNull<Slab>) {
    let mut link = &slabs.partial;
    while let Some(current) = NonNull::new(link.get()) {
        // SAFETY: slabs in the partial list are mapped and owned by this thread.
        let current_ref = unsafe { current.as_ref() };
        if current == slab {
            link.set(current_ref.next_partial.get());
            return;
        }
        link = &current_ref.next_partial;
    }
}

#[cold]
fn map_slab(slabs: &Slabs, size: usize, guarded: bool) -> Result<NonNull<Slab>, StackError> {
    let page = os::page_size();
    let capacity = (SLAB_MAX_BYTES / size).clamp(1, SLAB_STACKS);
    let (start, len) = if guarded {
        // Slot after slot, each a guard region and the stack above it; the guard regions are
        // installed as the slots are carved.
        let len = capacity * (page + size);
        (os::map(len)?, len)
    } else {
        // The guard page, the page holding slot 0's canary, then the slots, shifted down by a
        // canary.
        let len = 2 * page + capacity * size;
        (os::map_guarded(len, page)?, len)
    };
    let slab = Box::new(Slab {
        start,
        len,
        size_class: size,
        guarded,
        capacity,
        carved: Cell::new(0),
        live: Cell::new(0),
        next_partial: Cell::new(slabs.partial.get()),
        prev: Cell::new(std::ptr::null_mut()),
        next: Cell::new(slabs.all.get()),
    });
    let slab = NonNull::from(Box::leak(slab));
    if let Some(next) = NonNull::new(slabs.all.get()) {
        // SAFETY: slabs in the list are mapped and owned by this thread.
        unsafe { next.as_ref() }.prev.set(slab.as_ptr());
    }
    slabs.all.set(slab.as_ptr());
    slabs.partial.set(slab.as_ptr());
    let count = slabs.count.get() + 1;
    slabs.count.set(count);
    if count.is_power_of_two() {
        check_all();
    }
    Ok(slab)
}

/// Unmaps an empty slab and frees its bookkeeping.
///
/// # Safety
///
/// `slab` must be one of this thread's slabs, with no live stacks.
unsafe fn unmap_slab(slabs: &Slabs, slab: NonNull<Slab>) {
    // SAFETY: the caller guarantees the slab is one of ours, hence mapped and in the lists.
    let slab_ref = unsafe { slab.as_ref() };
    slab_ref.check_all();
    if slab_ref.carved.get() < slab_ref.capacity {
        remove_partial(slabs, slab);
    }
    let (prev, next) = (slab_ref.prev.get(), slab_ref.next.get());
    match NonNull::new(prev) {
        // SAFETY: the neighbours are mapped slabs of this thread.
        Some(prev) => unsafe { prev.as_ref() }.next.set(next),
        None => slabs.all.set(next),
    }
    if let Some(next) = NonNull::new(next) {
        // SAFETY: as above.
        unsafe { next.as_ref() }.prev.set(prev);
    }
    slabs.count.set(slabs.count.get() - 1);
    // SAFETY: the slab was leaked from a `Box` in `map_slab` and is now in no list.
    let slab = unsafe { Box::from_raw(slab.as_ptr()) };
    os::unmap(slab.start, slab.len);
}

/// How many slabs this thread has mapped now.
#[cfg(test)]
pub(super) fn count() -> usize {
    SLABS.with(|slabs| slabs.count.get())
}
