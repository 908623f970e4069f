//! Greenlet stacks: mmap'd, each over a guard page, lazily committed, pooled per thread; many
//! of them share a mapping where the kernel allows it.
//!
//! # Layout
//!
//! Every stack has an inaccessible guard page right below its usable part, so running off the
//! end faults instead of scribbling over a neighbour; a small header sits at the very top,
//! above the first frame:
//!
//! ```text
//!   stack end     +-------------------------+
//!                 | header (registry, size) |
//!   stack top --> +-------------------------+  16-byte aligned
//!                 | owner's data            |  a greenlet's closure and record (a fiber's
//!                 | context, first frame    |  closure and block), then the arch layer's
//!                 |                         |  context just below it and the first frame
//!                 |  usable stack           |  grows down; pages are committed by the kernel
//!                 |  (`size` bytes)         |  on first touch (MAP_NORESERVE)
//!                 |                         |
//!                 +-------------------------+
//!                 | guard page              |  a touch here is a stack overflow: see below
//!   stack start   +-------------------------+
//! ```
//!
//! Where the kernel has guard regions (`MADV_GUARD_INSTALL`, Linux 6.13+; probed once per
//! process, see `guard.rs`), stacks of one size are carved side by side from shared mappings
//! (slabs) of up to [`SLAB_STACKS`], and each one's guard page is a guard region: the page is
//! marked in the page tables and the mapping stays whole. A slab is one kernel map however many
//! stacks it holds, and neighbouring slabs even merge into one. Elsewhere each stack is a
//! mapping of its own whose lowest page is made `PROT_NONE` with `mprotect`, which splits it
//! into two maps. See `slab.rs` for the slab layout.
//!
//! # Size
//!
//! [`DEFAULT_STACK_SIZE`] is 1 MiB; [`set_default_stack_size`] changes it for one thread (a
//! runtime's worker threads can set it once). Only touched pages cost memory (the mapping is
//! `MAP_NORESERVE`, so it is not even charged against overcommit), so the default can afford to
//! be generous where it matters: synchronous code ported to greenlets is exactly the deep kind
//! (recursive-descent parsers, serde's recursive visitors, ORMs walking object graphs), and it
//! is often run unoptimised in tests, where frames are several times larger. A greenlet that
//! touches 8 KiB of its stack uses 8 KiB of memory whether its mapping is 64 KiB or 1 MiB.
//! Sizes are rounded up to whole pages; the limits are [`MIN_STACK_SIZE`] and
//! [`MAX_STACK_SIZE`].
//!
//! Why 1 MiB and not a `std` thread's 2 MiB: the virtual size is not free at scale. Measured
//! with a million `async_def`s suspended in a shallow wait (`examples/resident_memory.rs`):
//!
//! | default   | address space | page tables | resident (`VmRSS`) | kernel maps |
//! |-----------|---------------|-------------|--------------------|-------------|
//! | 1 MiB     | 1.0 TiB       | 2.0 GiB     | 4.0 GiB            | a few       |
//! | 2 MiB     | 2.0 TiB       | 4.0 GiB     | 4.0 GiB            | a few       |
//!
//! Each suspended greenlet keeps its top page resident, and a page-table page maps 2 MiB: at a
//! 1 MiB spacing two stacks share one, at 2 MiB every stack needs its own 4 KiB page table, as
//! much again as the stack itself. Both fit x86_64's 128 TiB of user address space many times
//! over, and `MAP_NORESERVE` keeps them out of overcommit accounting (in the heuristic mode 0,
//! the default; the strict mode 2 counts them, and a terabyte will not fit there).
//!
//! # Pool
//!
//! Making a stack takes a system call or two (carving: `madvise` for the guard region, plus an
//! `mmap` per slab; otherwise `mmap` and `mprotect`), and releasing one another; together
//! several microseconds, against a few nanoseconds for everything else in a greenlet's life.
//! So a dropped [`Stack`] goes to a per-thread pool of at most [`POOL_CAPACITY`] stacks, and
//! [`Stack::new`] takes one from there when it can. Reuse keeps the pages a stack has touched;
//! to bound what a pool holds after a burst of deep recursion, every [`TRIM_PERIOD`]th stack
//! returned to the pool has its pages deeper than [`POOL_WATERMARK`] released to the kernel
//! (`MADV_DONTNEED`, which leaves guard regions in place). [`trim_pool`] releases every pooled
//! stack at once. Pooled stacks are released when their thread exits. A carved stack released
//! while its slab still holds others gives its pages back to the kernel; a slab is unmapped
//! when its last stack is released.
//!
//! # Overflow
//!
//! A fault in a guard page (a guard region or an `mprotect`ed page alike) is reported by a
//! `SIGSEGV` handler running on an alternate signal stack (the overflowed stack has no room
//! left): it prints one line naming the greenlet stack's size and how to raise it, then
//! aborts. Faults anywhere else go to whatever handler was installed before, unchanged. See
//! `overflow.rs`.
//!
//! # Maps and limits
//!
//! Linux caps the kernel memory maps (VMAs) of a process at `vm.max_map_count`, 65,530 by
//! default. With guard regions, stacks take almost none of them: a million suspended greenlets
//! on default stacks ran with under 40 maps in the whole process. With `mprotect` guard pages a
//! stack takes two, its guard page and its usable part (they can never merge with a
//! neighbour's, their protections alternate), so about 32,000 stacks can be alive at once.
//!
//! Every limit a new stack can hit is a [`StackError`] that names it: the map count
//! ([`StackError::MapCountExhausted`], with the value of `vm.max_map_count` and how to raise
//! it), the address-space limit `RLIMIT_AS` ([`StackError::AddressSpaceExhausted`]), and the
//! kernel's memory otherwise ([`StackError::OutOfMemory`]). The diagnosis allocates nothing: it
//! reads `/proc` with `read(2)` into buffers on the stack, since with the maps exhausted an
//! allocation that needs a new mapping fails too. `async_def` and `Greenlet::new` panic with
//! the error's message.
//!
//! # Dense stacks
//!
//! [`set_guard_pages(false)`](set_guard_pages), an `unsafe` opt-in, makes the calling thread's
//! new stacks without guard pages: they are carved from slabs of [`SLAB_STACKS`] stacks of one
//! size with a single `PROT_NONE` page at the very bottom of the slab, and a canary instead of
//! a guard page below each stack. A slab costs two maps in all, so millions of stacks fit under
//! the default map limit on any kernel: a hundred thousand 1 MiB stacks take about 3,200 maps.
//! Carved stacks go through the same pool as guarded ones (the pool hands out only stacks of
//! the kind the thread asks for) and are registered with Valgrind the same way. Memory is
//! committed page by page as with guarded stacks.
//!
//! Where the kernel has guard regions this mode buys nothing: guarded stacks take no more maps
//! and no more memory (a guard region is one page of address space, never resident). It stays
//! for kernels before 6.13, where it is the only way past about 32,000 greenlets without
//! raising `vm.max_map_count`.
//!
//! The price is overflow detection. Only the lowest stack of a slab sits on a guard page. Every
//! carved stack has instead a canary of [`CANARY_BYTES`] at its bottom, checked when the stack
//! is released (dropped, pooled or unmapped), when its slab is unmapped, on [`trim_pool`], and
//! in a sweep over all of the thread's carved stacks each time its count of slabs reaches a new
//! power of two; a broken canary prints one line naming the stack size and the missing guard
//! page, then aborts. An overflow is thus caught late, not when it happens: by then it may have
//! overwritten the stack below (another greenlet's frames, or the bookkeeping at its top), and
//! that greenlet may misbehave before the check runs. Checking on every switch would catch it
//! sooner, but costs every switch; checking on release costs a comparison of four words per
//! stack.
//!
//! Nor is every overflow caught at all. A frame that reserves more than the canary without
//! writing all of it (a `MaybeUninit<[u8; 3000]>`, which the compiler does not probe) steps
//! over the canary, and its writes land in the stack below while the canary stays intact:
//! memory is corrupted and nothing is reported. That is why [`set_guard_pages`] is an `unsafe`
//! fn whose caller promises that no stack made while guard pages are off is ever used beyond
//! its size, why guard pages stay the default, and why no safe API gives a stack without one.

mod guard;
mod os;
mod overflow;
mod slab;
mod valgrind;

use std::cell::Cell;
use std::fmt;
use std::marker::PhantomData;
use std::ptr::NonNull;

/// The stack size used when none is given: 1 MiB (see the [module docs](self) for why).
pub const DEFAULT_STACK_SIZE: usize = 1024 * 1024;

/// The smallest stack size accepted: 64 KiB, enough for a panic to be caught and carried out.
///
/// That includes the default panic hook's backtrace when `RUST_BACKTRACE` is set: the hook
/// runs on the panicking stack, and the first backtrace of a process also loads and parses the
/// debug information there, which takes more than 20 KiB of stack (more than 24 KiB under
/// AddressSanitizer). The minimum leaves room for that at least twice over. Only touched pages
/// cost memory, so the higher floor costs a shallow greenlet no resident memory.
pub const MIN_STACK_SIZE: usize = 64 * 1024;

/// The largest stack size accepted: 1 GiB. Anything larger is almost surely a unit mistake.
pub const MAX_STACK_SIZE: usize = 1024 * 1024 * 1024;

/// How many stacks each thread's pool keeps at most; stacks dropped beyond that are unmapped.
pub const POOL_CAPACITY: usize = 64;

/// How deep into a pooled stack memory is kept when the pool releases dirty pages.
pub const POOL_WATERMARK: usize = 64 * 1024;

/// Every how many returns to the pool the returned stack's pages below the watermark are
/// released. A release is a system call of a microsecond or more, even when there is nothing
/// to release; once in 4096 returns it costs well under a nanosecond per return, while a busy
/// pool still sheds what a burst of deep recursion left resident.
pub const TRIM_PERIOD: u32 = 4096;

/// Why a stack could not be made.
///
/// Every variant names the limit that was hit, so the message alone tells what to change.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StackError {
    /// The requested size is below [`MIN_STACK_SIZE`] (zero included).
    TooSmall {
        /// The size asked for, in bytes.
        requested: usize,
        /// [`MIN_STACK_SIZE`].
        minimum: usize,
    },
    /// The requested size is above [`MAX_STACK_SIZE`].
    TooLarge {
        /// The size asked for, in bytes.
        requested: usize,
        /// [`MAX_STACK_SIZE`].
        maximum: usize,
    },
    /// The process has as many memory mappings as `vm.max_map_count` allows. Stacks share
    /// mappings where the kernel has guard regions (Linux 6.13+); elsewhere each stack takes
    /// two (its `mprotect` guard page and its usable part). See the
    /// [module docs](self#maps-and-limits).
    MapCountExhausted {
        /// The value of `vm.max_map_count`.
        limit: usize,
    },
    /// The process's address-space limit (`RLIMIT_AS`, `ulimit -v`) leaves no room for the stack.
    AddressSpaceExhausted {
        /// The limit, in bytes.
        limit: u64,
        /// The mapping that did not fit, in bytes.
        mapping: usize,
    },
    /// The kernel refused the mapping for want of memory.
    OutOfMemory {
        /// The mapping that was refused, in bytes.
        mapping: usize,
    },
    /// Any other refusal from the operating system.
    Os {
        /// The system call that failed.
        call: &'static str,
        /// Its `errno`.
        errno: i32,
    },
}

impl fmt::Display for StackError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            StackError::TooSmall { requested, minimum } => write!(
                f,
                "greenlet stack size {requested} bytes is below the minimum of {minimum} bytes"
            ),
            StackError::TooLarge { requested, maximum } => write!(
                f,
                "greenlet stack size {requested} bytes is above the maximum of {maximum} bytes"
            ),
            StackError::MapCountExhausted { limit } => write!(
                f,
                "cannot map a greenlet stack: the process has reached vm.max_map_count = \
                 {limit} memory mappings; raise it with `sysctl -w vm.max_map_count=N` or keep \
                 fewer greenlets alive. Stacks share mappings where the kernel has guard \
                 regions (Linux 6.13+); elsewhere each takes 2, its guard page and its usable \
                 part, unless made without guard pages (the unsafe \
                 awaitlet::stack::set_guard_pages(false))"
            ),
            StackError::AddressSpaceExhausted { limit, mapping } => write!(
                f,
                "cannot map a {mapping}-byte greenlet stack: the address-space limit \
                 RLIMIT_AS (ulimit -v) of {limit} bytes is reached; raise it or use smaller stacks"
            ),
            StackError::OutOfMemory { mapping } => write!(
                f,
                "cannot map a {mapping}-byte greenlet stack: the kernel is out of memory (ENOMEM)"
            ),
            StackError::Os { call, errno } => write!(
                f,
                "cannot map a greenlet stack: {call} failed: {}",
                std::io::Error::from_raw_os_error(errno)
            ),
        }
    }
}

impl std::error::Error for StackError {}

/// Bookkeeping kept in the top bytes of each mapping, so a stack needs no heap allocation.
#[repr(C, align(16))]
struct Header {
    /// This thread's list of all its mappings, walked by the overflow handler.
    registry_prev: Cell<*mut Header>,
    registry_next: Cell<*mut Header>,
    /// Next stack in this thread's pool, while pooled.
    pool_next: Cell<*mut Header>,
    /// Start of the guard page below the stack, looked up by the overflow handler (for a stack
    /// with a mapping of its own, also the start of the mapping); 0 for a carved stack without
    /// a guard page.
    mapping_start: usize,
    /// Length of the whole mapping, for a stack with a mapping of its own.
    mapping_len: usize,
    /// Usable bytes between the guard page and the mapping end.
    size: usize,
    /// What the pool matches requests against: the size class (a whole number of pages),
    /// with [`CARVED_KEY`] set for a stack carved from a slab.
    pool_key: usize,
    /// The slab a carved stack belongs to; null for a stack with a mapping of its own.
    slab: *mut slab::Slab,
    /// Valgrind's id for this stack (0 when not running under Valgrind).
    valgrind_id: usize,
}

/// The bit of [`Header::pool_key`] that marks a carved stack (size classes are whole pages, so
/// their low bits are free).
const CARVED_KEY: usize = 1;

/// One greenlet stack with a guard page below it (unless made with guard pages off), owned,
/// `!Send` (it is registered with its thread's overflow handler and pool).
///
/// Dropping a `Stack` returns it to the thread's pool (or unmaps it when the pool is full or the
/// thread is exiting).
///
/// ```
/// use awaitlet::stack::{Stack, DEFAULT_STACK_SIZE};
///
/// let stack = Stack::new(DEFAULT_STACK_SIZE)?;
/// assert_eq!(stack.size(), DEFAULT_STACK_SIZE);
/// drop(stack); // back to this thread's pool
/// let again = Stack::new(DEFAULT_STACK_SIZE)?; // the same mapping, no system call
/// # drop(again);
/// # Ok::<(), awaitlet::stack::StackError>(())
/// ```
pub struct Stack {
    header: NonNull<Header>,
    _not_send: PhantomData<*mut ()>,
}

impl Stack {
    /// A stack of at least `size` usable bytes (rounded up to whole pages), from this thread's
    /// pool when it has one of that size, freshly mapped otherwise.
    #[inline]
    pub fn new(size: usize) -> Result<Stack, StackError> {
        let size = checked_size(size)?;
        if let Some(stack) = pool::take(size) {
            // Frames of the greenlet that last ran here never returned: clear their poisoning.
            #[cfg(awaitlet_asan)]
            crate::arch::asan::unpoison(crate::arch::asan::StackBounds {
                bottom: stack.bottom() as usize,
                size: stack.size(),
            });
            return Ok(stack);
        }
        Stack::map(size)
    }

    /// A freshly mapped stack of at least `size` usable bytes, bypassing the pool.
    pub fn fresh(size: usize) -> Result<Stack, StackError> {
        Stack::map(checked_size(size)?)
    }

    fn map(size: usize) -> Result<Stack, StackError> {
        if !pool::guard_pages() || guard::regions() {
            return Ok(Stack {
                header: slab::carve(size, pool::guard_pages())?,
                _not_send: PhantomData,
            });
        }
        let page = os::page_size();
        let mapping_len = size + page;
        let mapping_start = os::map_guarded(mapping_len, page)?;
        let mapping_end = mapping_start + mapping_len;
        let header_address = mapping_end - std::mem::size_of::<Header>();
        let valgrind_id = valgrind::register_stack(mapping_start + page, mapping_end);
        let initial = Header {
            registry_prev: Cell::new(std::ptr::null_mut()),
            registry_next: Cell::new(std::ptr::null_mut()),
            pool_next: Cell::new(std::ptr::null_mut()),
            mapping_start,
            mapping_len,
            size,
            pool_key: size,
            slab: std::ptr::null_mut(),
            valgrind_id,
        };
        let header = header_address as *mut Header;
        // SAFETY: the top of the fresh mapping is writable, unused and aligned for `Header`
        // (the mapping end is page aligned and the header's size a multiple of its alignment).
        unsafe { header.write(initial) };
        // SAFETY: `header` was just written and is non-null.
        let header = unsafe { NonNull::new_unchecked(header) };
        overflow::register(header);
        Ok(Stack {
            header,
            _not_send: PhantomData,
        })
    }

    fn header(&self) -> &Header {
        // SAFETY: the header lives at the top of the mapping this `Stack` owns.
        unsafe { self.header.as_ref() }
    }

    /// Usable bytes, between the guard page and the top. A stack carved without a guard page
    /// (see [`set_guard_pages`]) has its canary's [`CANARY_BYTES`] less than it was asked for.
    pub fn size(&self) -> usize {
        self.header().size
    }

    /// The highest usable address (16-byte aligned): the first frame goes just below it.
    pub(crate) fn top(&self) -> *mut u8 {
        self.header.as_ptr().cast()
    }

    /// Announces that the bytes from `from` up to the top are about to be written by code
    /// running on another stack (a greenlet's record, closure and result slot). Memory checkers
    /// that track the stack pointer consider them dead if frames of an earlier use of this
    /// stack once reached below them; this makes them writable again. Free when not under
    /// Valgrind (a few register operations).
    pub(crate) fn claim_top(&self, from: *mut u8) {
        let from = from as usize;
        valgrind::make_undefined(from, self.top() as usize - from);
    }

    /// The lowest usable address, just above the guard page (or the canary).
    pub(crate) fn bottom(&self) -> *mut u8 {
        bottom(self.header)
    }

    /// Unmaps the stack now instead of returning it to the pool.
    pub fn unmap(self) {
        let header = self.header;
        std::mem::forget(self);
        // SAFETY: we owned the stack and nothing else refers to it.
        unsafe { unmap(header) };
    }
}

impl Drop for Stack {
    #[inline]
    fn drop(&mut self) {
        if let Err(header) = pool::give_back(self.header) {
            // SAFETY: we own the stack and the pool did not take it.
            unsafe { unmap(header) };
        }
    }
}

impl fmt::Debug for Stack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stack")
            .field("bottom", &self.bottom())
            .field("top", &self.top())
            .field("size", &self.size())
            .finish()
    }
}

/// Releases a stack's mapping.
///
/// # Safety
///
/// `header` must belong to a stack that nothing uses or refers to any more.
unsafe fn unmap(header: NonNull<Header>) {
    // SAFETY: the caller guarantees the stack is unused.
    let slab = unsafe { header.as_ref() }.slab;
    if !slab.is_null() {
        // SAFETY: as above; the stack is carved, and released only here.
        unsafe { slab::release(header) };
        return;
    }
    overflow::deregister(header);
    // SAFETY: the caller guarantees the stack is unused; copy what we need before the unmap.
    let (start, len, valgrind_id) = unsafe {
        let header = header.as_ref();
        (header.mapping_start, header.mapping_len, header.valgrind_id)
    };
    valgrind::deregister_stack(valgrind_id);
    os::unmap(start, len);
}

/// The lowest usable address of the stack whose header is `header`: the header sits at the top
/// of the stack's usable bytes.
fn bottom(header: NonNull<Header>) -> *mut u8 {
    // SAFETY: headers handed around here are valid.
    let size = unsafe { header.as_ref() }.size;
    (header.as_ptr() as usize + std::mem::size_of::<Header>() - size) as *mut u8
}

/// Validates a requested size and rounds it up to whole pages.
///
/// Inline, so that a constant size (the default's, most often) is checked at compile time.
#[inline]
fn checked_size(requested: usize) -> Result<usize, StackError> {
    if !(MIN_STACK_SIZE..=MAX_STACK_SIZE).contains(&requested) {
        return Err(size_error(requested));
    }
    // Page sizes are powers of two: round up with a mask, not a division.
    let page_mask = os::page_size() - 1;
    Ok((requested + page_mask) & !page_mask)
}

/// The error for a size [`checked_size`] refuses.
#[cold]
fn size_error(requested: usize) -> StackError {
    if requested < MIN_STACK_SIZE {
        StackError::TooSmall {
            requested,
            minimum: MIN_STACK_SIZE,
        }
    } else {
        StackError::TooLarge {
            requested,
            maximum: MAX_STACK_SIZE,
        }
    }
}

thread_local! {
    /// This thread's default stack size (see [`set_default_stack_size`]).
    static DEFAULT_SIZE: Cell<usize> = const { Cell::new(DEFAULT_STACK_SIZE) };
}

/// Sets the stack size this thread's greenlets get when none is given: by
/// [`Greenlet::new`](crate::Greenlet::new), [`Greenlet::builder`](crate::Greenlet::builder)
/// without [`stack_size`](crate::greenlet::Builder::stack_size), and
/// [`async_def`](crate::async_def) without [`AsyncDef::stack_size`](crate::AsyncDef::stack_size).
/// Returns the previous default. A runtime's worker threads can set it once when they start
/// (tokio's `on_thread_start`, for one).
///
/// The size is rounded up to whole pages, as for [`Stack::new`]; a size outside
/// [`MIN_STACK_SIZE`]..=[`MAX_STACK_SIZE`] is refused and the default stays as it was.
///
/// ```
/// use awaitlet::stack::{default_stack_size, set_default_stack_size, DEFAULT_STACK_SIZE};
///
/// assert_eq!(default_stack_size(), DEFAULT_STACK_SIZE);
/// let previous = set_default_stack_size(256 * 1024)?;
/// let size = awaitlet::Greenlet::new(|()| awaitlet::stack::default_stack_size())
///     .switch::<(), usize>(())
///     .unwrap();
/// assert_eq!(size, 256 * 1024);
/// assert!(set_default_stack_size(0).is_err());
/// set_default_stack_size(previous)?;
/// # Ok::<(), awaitlet::stack::StackError>(())
/// ```
pub fn set_default_stack_size(bytes: usize) -> Result<usize, StackError> {
    let size = checked_size(bytes)?;
    Ok(DEFAULT_SIZE.with(|default| default.replace(size)))
}

/// The stack size this thread's greenlets get when none is given: [`DEFAULT_STACK_SIZE`]
/// unless [`set_default_stack_size`] changed it.
///
/// ```
/// assert_eq!(awaitlet::stack::default_stack_size(), 1024 * 1024);
/// ```
#[inline]
pub fn default_stack_size() -> usize {
    DEFAULT_SIZE.with(Cell::get)
}

/// How many stacks this thread's pool holds now.
///
/// ```
/// use awaitlet::stack::{pool_len, trim_pool, Stack, DEFAULT_STACK_SIZE};
///
/// trim_pool();
/// drop(Stack::new(DEFAULT_STACK_SIZE)?);
/// assert_eq!(pool_len(), 1);
/// # Ok::<(), awaitlet::stack::StackError>(())
/// ```
pub fn pool_len() -> usize {
    pool::len()
}

/// Unmaps every stack in this thread's pool, returning all their memory to the kernel.
///
/// ```
/// use awaitlet::stack::{pool_len, trim_pool};
///
/// trim_pool();
/// assert_eq!(pool_len(), 0);
/// ```
pub fn trim_pool() {
    pool::trim();
    slab::check_all();
}

/// Bytes at the bottom of every stack carved without a guard page taken by its canary.
pub const CANARY_BYTES: usize = slab::CANARY_BYTES;

/// How many stacks one shared mapping (slab) holds at most; fewer for stacks above 4 MiB, so
/// that a slab spans at most 256 MiB.
pub const SLAB_STACKS: usize = slab::SLAB_STACKS;

/// Turns guard pages on or off for the stacks this thread makes from now on; returns the
/// previous setting. They are on by default.
///
/// With guard pages on, every stack has an inaccessible page below it: an overflow faults at
/// once and is reported. Where the kernel has guard regions (Linux 6.13+) that costs next to no
/// kernel memory maps, and a million stacks fit under the default `vm.max_map_count` (65,530);
/// elsewhere it costs two maps per stack, so about 32,000 stacks can be alive at once.
///
/// With guard pages off, stacks are carved from shared mappings of [`SLAB_STACKS`] stacks
/// (slabs) that cost two maps each, so millions of stacks fit under the default limit on any
/// kernel; where guard regions exist, turning guard pages off gains nothing. An
/// overflow then cannot fault (except in the lowest stack of a slab): it runs into the stack
/// below. A canary at the bottom of each stack, checked when the stack is released, reports
/// the overflows that write over it, but only after the fact, and not all of them. See the
/// [module docs](self#dense-stacks).
///
/// The setting is per thread; stacks already made keep their kind, and the pool hands out only
/// stacks of the current kind.
///
/// # Safety
///
/// Turning guard pages on (`enabled == true`) has no requirement. Turning them off
/// (`enabled == false`) is sound only if every stack this thread makes while they are off
/// never has more of it used than its [`Stack::size`], the size asked for less
/// [`CANARY_BYTES`], for as long as anything runs on it (also after guard pages are back on).
/// That covers every way of making a stack on this thread, by the caller or by any code it
/// calls: [`Stack::new`], [`Stack::fresh`], [`Greenlet::new`](crate::Greenlet::new) and
/// [`Greenlet::builder`](crate::Greenlet::builder), [`async_def`](crate::async_def) with or
/// without [`AsyncDef::stack_size`](crate::AsyncDef::stack_size). And it counts every byte
/// below the stack's top: frames that reserve stack without writing it (a large
/// `MaybeUninit` array, so no stack probe), the panic machinery and its hook (a first
/// backtrace takes more than 20 KiB), and signal handlers that run on the stack.
///
/// The caller takes that responsibility because nothing else can. A frame larger than the
/// canary can step over it and write into the stack below, another greenlet's frames or the
/// bookkeeping at its top, and nothing is reported: the canary is a diagnosis of common
/// overflows, not a protection. A safe function that allowed this would let safe code corrupt
/// memory, which is why this one is `unsafe`.
///
/// It is one function for both directions, rather than a safe one to turn guard pages on and
/// an unsafe one to turn them off, so that the usual save-and-restore stays one call each way
/// (`let previous = set_guard_pages(false); ...; set_guard_pages(previous)`): restoring can
/// mean turning them off again, which carries the same requirement.
///
/// ```
/// use awaitlet::stack::{set_guard_pages, Stack, CANARY_BYTES, DEFAULT_STACK_SIZE};
///
/// // SAFETY: the only stack made while guard pages are off is never run on.
/// let previous = unsafe { set_guard_pages(false) };
/// assert!(previous, "on by default");
/// let dense = Stack::new(DEFAULT_STACK_SIZE)?;
/// assert_eq!(dense.size(), DEFAULT_STACK_SIZE - CANARY_BYTES);
/// // SAFETY: `previous` is `true`: turning guard pages on has no requirement.
/// unsafe { set_guard_pages(previous) };
/// let guarded = Stack::new(DEFAULT_STACK_SIZE)?;
/// assert_eq!(guarded.size(), DEFAULT_STACK_SIZE);
/// # Ok::<(), awaitlet::stack::StackError>(())
/// ```
///
/// Calling it outside an `unsafe` block does not compile:
///
/// ```compile_fail,E0133
/// awaitlet::stack::set_guard_pages(false);
/// ```
pub unsafe fn set_guard_pages(enabled: bool) -> bool {
    pool::set_guard_pages(enabled)
}

/// Whether stacks made by this thread get guard pages (see [`set_guard_pages`]).
///
/// ```
/// assert!(awaitlet::stack::guard_pages());
/// ```
pub fn guard_pages() -> bool {
    pool::guard_pages()
}

mod pool {
    //! The per-thread pool: a LIFO list threaded through the stacks' own headers.
    //!
    //! Its state is a const-initialised thread-local without a destructor, so taking and
    //! returning a stack is plain loads and stores. A separate guard, registered the first time
    //! the pool keeps a stack, unmaps what the pool holds when the thread exits; after that the
    //! pool is closed and dropped stacks are unmapped directly.

    use super::{
        CARVED_KEY, Header, POOL_CAPACITY, POOL_WATERMARK, Stack, TRIM_PERIOD, os, slab, unmap,
    };
    use std::cell::Cell;
    use std::marker::PhantomData;
    use std::ptr::NonNull;

    struct Pool {
        head: Cell<*mut Header>,
        len: Cell<usize>,
        returns_until_trim: Cell<u32>,
        /// The exit guard is registered (the pool may keep stacks).
        open: Cell<bool>,
        /// The thread is exiting and the guard has run: keep nothing any more.
        closed: Cell<bool>,
        /// [`CARVED_KEY`] when new stacks are carved without guard pages, else 0.
        carving: Cell<usize>,
    }

    impl Pool {
        fn unmap_all(&self) {
            let mut next = self.head.replace(std::ptr::null_mut());
            self.len.set(0);
            while let Some(header) = NonNull::new(next) {
                // SAFETY: pooled headers are valid and owned by the pool.
                next = unsafe { header.as_ref() }.pool_next.get();
                // SAFETY: the stack was pooled, so nothing uses it.
                unsafe { unmap(header) };
            }
        }

        /// Registers the exit guard on first use; false once the thread is exiting.
        #[cold]
        fn open(&self) -> bool {
            if self.closed.get() {
                return false;
            }
            let registered = EXIT_GUARD.try_with(|_| ()).is_ok();
            self.open.set(registered);
            registered
        }
    }

    /// Empties and closes the pool when its thread exits.
    struct ExitGuard;

    impl Drop for ExitGuard {
        fn drop(&mut self) {
            POOL.with(|pool| {
                pool.closed.set(true);
                pool.open.set(false);
                pool.unmap_all();
            });
        }
    }

    thread_local! {
        static POOL: Pool = const {
            Pool {
                head: Cell::new(std::ptr::null_mut()),
                len: Cell::new(0),
                returns_until_trim: Cell::new(TRIM_PERIOD),
                open: Cell::new(false),
                closed: Cell::new(false),
                carving: Cell::new(0),
            }
        };
        static EXIT_GUARD: ExitGuard = const { ExitGuard };
    }

    /// Takes a pooled stack of exactly `size` usable bytes, if there is one.
    #[inline]
    pub(super) fn take(size: usize) -> Option<Stack> {
        POOL.with(|pool| {
            let key = size | pool.carving.get();
            let mut link = &pool.head;
            loop {
                let header = NonNull::new(link.get())?;
                // SAFETY: pooled headers are valid and owned by the pool.
                let current = unsafe { header.as_ref() };
                if current.pool_key == key {
                    link.set(current.pool_next.get());
                    pool.len.set(pool.len.get() - 1);
                    return Some(Stack {
                        header,
                        _not_send: PhantomData,
                    });
                }
                link = &current.pool_next;
            }
        })
    }

    /// Pools a stack; hands it back when the pool is full or closed (thread exit).
    #[inline]
    pub(super) fn give_back(header: NonNull<Header>) -> Result<(), NonNull<Header>> {
        // SAFETY: the stack is being dropped, so its header is valid.
        if unsafe { header.as_ref() }.pool_key & CARVED_KEY != 0 {
            slab::check_canary(header);
        }
        POOL.with(|pool| {
            if pool.len.get() >= POOL_CAPACITY || !(pool.open.get() || pool.open()) {
                return Err(header);
            }
            let countdown = pool.returns_until_trim.get() - 1;
            pool.returns_until_trim.set(countdown);
            if countdown == 0 {
                pool.returns_until_trim.set(TRIM_PERIOD);
                release_deep_pages(header);
            }
            // SAFETY: the stack is being dropped, so its header is valid and unused.
            unsafe { header.as_ref() }.pool_next.set(pool.head.get());
            pool.head.set(header.as_ptr());
            pool.len.set(pool.len.get() + 1);
            Ok(())
        })
    }

    /// Gives the pages of a returned stack below the watermark back to the kernel.
    #[cold]
    fn release_deep_pages(header: NonNull<Header>) {
        let top = header.as_ptr() as usize;
        let bottom = super::bottom(header) as usize;
        if top - bottom > POOL_WATERMARK {
            os::release_pages(bottom, top - POOL_WATERMARK);
        }
    }

    pub(super) fn set_guard_pages(enabled: bool) -> bool {
        POOL.with(|pool| {
            let carving = if enabled { 0 } else { CARVED_KEY };
            pool.carving.replace(carving) == 0
        })
    }

    pub(super) fn guard_pages() -> bool {
        POOL.with(|pool| pool.carving.get() == 0)
    }

    pub(super) fn len() -> usize {
        POOL.with(|pool| pool.len.get())
    }

    pub(super) fn trim() {
        POOL.with(Pool::unmap_all);
    }
}

#[cfg(test)]
mod tests;
