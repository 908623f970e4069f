//! The unsafe core of the greenlet layer: records, what crosses a switch, the walk to a live
//! receiver, the entry function, and kill-on-drop.
//!
//! # Ownership
//!
//! A [`Record`] is reference counted by hand ([`RecordRef`]); [`Greenlet`] handles are the
//! references. It lives near the top of the greenlet's own stack, just above the greenlet's
//! context (main's is boxed, with the thread's context just below it: [`MainBlock`]), so that a
//! switch finds a greenlet's context by an addition ([`arch::context_below`]) rather than a
//! load, which would lengthen the chain of loads each switch waits on. Besides the user's handles,
//! references are held by:
//!
//! - each child, to its parent (so a parent outlives its children, as in Python);
//! - the thread, to its main greenlet (released when the thread exits);
//! - a started, unfinished greenlet, to itself, taken by its entry function. When it finishes,
//!   its final switch hands that reference to the receiver, which drops it.
//!
//! The running greenlet is named by a raw pointer in a thread-local ([`SWITCH`]) that owns no
//! reference: the running greenlet is kept alive by its self-reference (or, for main, by the
//! thread), so a switch touches no reference count at all. The receiving side of a switch
//! updates that pointer; it learns who sent from the context the switch hands over, just below
//! the sending greenlet's record ([`arch::above_context`]).
//!
//! A started, suspended, non-main greenlet whose only reference is its self-reference has been
//! abandoned: it is killed ([`kill_abandoned`]) where that is detected: when its last handle is
//! dropped, or right after it switched away holding no handle to itself (rule 43).
//!
//! # What crosses a switch
//!
//! One machine word. Every greenlet records, as it suspends, the type its pending switch asks
//! for (for an unstarted one, its closure's argument type). A sender whose value has exactly
//! that type hands over just the value's address: the receiver moves the value out of the
//! sender's frame (suspended, so untouched) and nothing else is written or read. Every other
//! case (a throw, a value of another type, a walk to an ancestor) hands over the address of a
//! [`Message`], tagged by the word's low bit.
//!
//! What a receiver would otherwise check about its sender after every switch (is a trace hook
//! set, did the sender finish, was it abandoned) the sender checks before switching, on its
//! own record, which it has at hand: a sender for which any of it holds sends a message
//! instead, and a finishing one marks its last word ([`FINISHED_TAG`]). A receiver that finds
//! a plain word takes the value and returns, without reading the sender's record: those reads,
//! right after the switch, were the costliest part of a switch's bookkeeping (see
//! `asm-notes/measurements.md`).
//!
//! ```text
//!   sender's stack                       receiver's stack
//!   | value: T      | <---- word ------- | switch::<_, T>() resumes, reads the T
//!   | (suspended)   |                    | running: sender -> receiver
//! ```

use std::alloc::Layout;
use std::any::{Any, TypeId};
use std::borrow::Cow;
use std::cell::{Cell, RefCell};
use std::mem::{ManuallyDrop, MaybeUninit};
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::ptr::NonNull;

use super::driven::{Driven, resumable};
use super::{Greenlet, GreenletExit, SwitchError, TraceEvent, trace};
use crate::arch::{self, Context};
use crate::stack::Stack;

/// Where a greenlet is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum State {
    Unstarted,
    /// Started and not finished: running when [`SWITCH`] names it, suspended otherwise.
    Active,
    Dead,
}

/// The closure of an unstarted greenlet, which lives at the top of its stack.
pub(super) struct Start {
    pub(super) closure: *mut u8,
    pub(super) drop_closure: unsafe fn(*mut u8),
}

/// One greenlet. See the module docs for who owns it.
///
/// A greenlet's record lives near the top of its own stack (main's, on the heap), so making
/// a greenlet allocates nothing. It is reference counted by hand ([`RecordRef`]): the last
/// reference drops the record in place, then releases the stack holding it.
pub(crate) struct Record {
    references: Cell<usize>,
    pub(crate) state: Cell<State>,
    /// The type the greenlet's pending switch asks for (its closure's argument type while
    /// unstarted), as a [`type_key`]; see the module docs. Null once dead.
    pub(super) awaiting: Cell<*const TypeId>,
    /// The `Context` of the poll in progress, for a driven greenlet that may poll a future
    /// with it now (see [`super::driven`]); null otherwise, and always for other greenlets.
    pub(super) await_cx: Cell<*mut ()>,
    /// The driven greenlet this one is polling or dropping (cancelling) right now, while it is
    /// suspended doing so; null otherwise (see [`super::driven`]).
    pub(super) driving: Cell<*const Record>,
    pub(crate) parent: RefCell<Option<Greenlet>>,
    pub(super) start: Cell<Option<Start>>,
    stack: Cell<Option<Stack>>,
    pub(crate) name: Option<Cow<'static, str>>,
    pub(crate) is_main: bool,
    /// The bridge's state, for a greenlet made by `async_def` (see [`super::driven`]).
    pub(super) driven: Option<Driven>,
    /// The greenlet's stack, as announced to AddressSanitizer (main's is learned on its first
    /// switch away).
    #[cfg(awaitlet_asan)]
    stack_bounds: Cell<arch::asan::StackBounds>,
}

impl Record {
    /// Marks the greenlet dead. Its `awaiting` key becomes null, which no [`type_key`] is, so
    /// the switch's fast path tells a receiver from a dead greenlet by the key alone.
    pub(super) fn mark_dead(&self) {
        self.state.set(State::Dead);
        self.awaiting.set(std::ptr::null());
    }
}

impl Drop for Record {
    fn drop(&mut self) {
        if let Some(start) = self.start.take() {
            // SAFETY: an unstarted greenlet still owns its closure, on its stack (still ours).
            unsafe { (start.drop_closure)(start.closure) };
        }
        if self.is_main {
            // The thread's last greenlet is gone and the thread is exiting (only then is main
            // released): later calls must not find a dangling current greenlet.
            let _ = SWITCH.try_with(|switch| switch.current.set(EXITED));
        }
    }
}

#[cold]
#[inline(never)]
fn references_overflowed() -> ! {
    std::process::abort()
}

/// A counted reference to a [`Record`] (what a [`Greenlet`] handle holds).
pub(crate) struct RecordRef(NonNull<Record>);

impl RecordRef {
    /// Takes over one reference already counted in the record at `record`.
    ///
    /// # Safety
    ///
    /// `record` must be live, with a count that includes the reference taken over.
    pub(crate) unsafe fn from_raw(record: *const Record) -> RecordRef {
        // SAFETY: the caller guarantees a live, hence non-null, record.
        RecordRef(unsafe { NonNull::new_unchecked(record as *mut Record) })
    }

    /// Adds a reference to the live record at `record`.
    ///
    /// # Safety
    ///
    /// `record` must be live.
    #[inline]
    pub(crate) unsafe fn increment(record: *const Record) -> RecordRef {
        // SAFETY: the caller guarantees the record is live; the reference counted here is the
        // one returned.
        unsafe {
            let count = (*record).references.get();
            // Only reachable by leaking handles (`mem::forget`) without end; going on would
            // wrap the count and free a record still in use, so abort, as `Rc` does.
            if count == usize::MAX {
                references_overflowed();
            }
            (*record).references.set(count + 1);
            RecordRef::from_raw(record)
        }
    }

    pub(crate) fn as_ptr(this: &RecordRef) -> *const Record {
        this.0.as_ptr()
    }

    pub(crate) fn ptr_eq(this: &RecordRef, other: &RecordRef) -> bool {
        this.0 == other.0
    }

    pub(crate) fn count(this: &RecordRef) -> usize {
        this.references.get()
    }
}

impl std::ops::Deref for RecordRef {
    type Target = Record;

    fn deref(&self) -> &Record {
        // SAFETY: a counted reference keeps the record alive.
        unsafe { self.0.as_ref() }
    }
}

impl Clone for RecordRef {
    fn clone(&self) -> RecordRef {
        // SAFETY: `self` keeps the record alive.
        unsafe { RecordRef::increment(self.0.as_ptr()) }
    }
}

impl Drop for RecordRef {
    fn drop(&mut self) {
        let remaining = self.references.get() - 1;
        self.references.set(remaining);
        if remaining == 0 {
            // SAFETY: that was the last reference.
            unsafe { destroy(self.0) }
        }
    }
}

/// Drops a record nothing refers to any more, then frees what holds it.
///
/// # Safety
///
/// `record` must be live with no references left.
#[cold]
unsafe fn destroy(record: NonNull<Record>) {
    // SAFETY: no reference is left, so nothing else uses the record.
    unsafe {
        if record.as_ref().is_main {
            let block = record
                .byte_sub(std::mem::offset_of!(MainBlock, record))
                .cast::<MainBlock>();
            drop(Box::from_raw(block.as_ptr()));
            return;
        }
        // The record lives on its own stack: move the stack out, drop the record in place, and
        // only then release the stack. The parent goes last: dropping it may run code.
        let stack = record.as_ref().stack.take();
        let parent = record.as_ref().parent.take();
        std::ptr::drop_in_place(record.as_ptr());
        drop(stack);
        drop(parent);
    }
}

/// Main's record, boxed with the context of the thread's own stack (where main runs) just
/// below it, at the distance at which `arch::init` puts every other greenlet's context below
/// its record.
#[repr(C)]
struct MainBlock {
    thread_context: Context,
    _padding: [u8; arch::CONTEXT_BELOW_TOP - std::mem::size_of::<Context>()],
    record: Record,
}

const _: () = assert!(
    std::mem::offset_of!(MainBlock, record) - std::mem::offset_of!(MainBlock, thread_context)
        == arch::CONTEXT_BELOW_TOP
);

/// The running greenlet ([`SWITCH`]) before the thread has a main greenlet.
const UNINITIALISED: *const Record = std::ptr::null();
/// The running greenlet ([`SWITCH`]) once the thread's main greenlet is gone (the thread is
/// exiting).
const EXITED: *const Record = std::ptr::dangling();

/// What every switch reads of its thread: the running greenlet, and whether a trace hook is set
/// ([`super::trace`]). One thread-local for both, so a switch reaches both from one address.
struct SwitchState {
    current: Cell<*const Record>,
    tracing: Cell<bool>,
}

thread_local! {
    /// The running greenlet and the trace flag. Const-initialised, no destructor: plain
    /// thread-local loads.
    static SWITCH: SwitchState = const {
        SwitchState { current: Cell::new(UNINITIALISED), tracing: Cell::new(false) }
    };
    /// The thread's reference to its main greenlet, released when the thread exits.
    static MAIN: MainOwner = const { MainOwner(RefCell::new(None)) };
}

struct MainOwner(RefCell<Option<Greenlet>>);

impl Drop for MainOwner {
    fn drop(&mut self) {
        // Greenlets still alive keep main alive through their parent chains; main's record
        // marks the thread as exited when the last of them goes.
        drop(self.0.borrow_mut().take());
    }
}

/// The running greenlet of this thread (creating the main greenlet on first use).
#[inline(always)]
pub(crate) fn current_record() -> *const Record {
    let current = SWITCH.with(|switch| switch.current.get());
    if current.addr() <= EXITED.addr() {
        return current_record_slow(current);
    }
    current
}

/// The running greenlet, or null when this thread has no greenlet machinery: before its first
/// use, and once it is torn down at thread exit (in thread-local destructors that run after
/// it). Never creates the main greenlet, so it is safe to call from any thread-local
/// destructor.
#[inline(always)]
pub(crate) fn running_record_if_any() -> *const Record {
    let current = SWITCH.with(|switch| switch.current.get());
    if current.addr() <= EXITED.addr() {
        return std::ptr::null();
    }
    current
}

/// The running greenlet, for code holding a reference to a record of this thread (references
/// are `!Send`): it keeps the thread's main greenlet alive through its chain of parents, which
/// ends there, so [`SWITCH`] has been set and not yet marked [`EXITED`], and the check that
/// [`current_record`] makes cannot fail.
#[inline(always)]
pub(crate) fn current_record_held(_held: &RecordRef) -> *const Record {
    let current = SWITCH.with(|switch| switch.current.get());
    debug_assert!(current.addr() > EXITED.addr());
    current
}

/// True while this thread has a trace hook ([`super::trace`]).
#[inline(always)]
pub(super) fn tracing() -> bool {
    SWITCH.with(|switch| switch.tracing.get())
}

/// Records whether this thread has a trace hook.
pub(super) fn set_tracing(tracing: bool) {
    SWITCH.with(|switch| switch.tracing.set(tracing));
}

#[cold]
fn current_record_slow(current: *const Record) -> *const Record {
    assert!(
        current != EXITED,
        "awaitlet: this thread's greenlets are gone (the thread is exiting)"
    );
    let block = Box::into_raw(Box::new(MainBlock {
        thread_context: Context::for_thread_stack(),
        _padding: [0; arch::CONTEXT_BELOW_TOP - std::mem::size_of::<Context>()],
        record: Record {
            references: Cell::new(1),
            state: Cell::new(State::Active),
            awaiting: Cell::new(type_key::<()>()),
            await_cx: Cell::new(std::ptr::null_mut()),
            driving: Cell::new(std::ptr::null()),
            parent: RefCell::new(None),
            start: Cell::new(None),
            stack: Cell::new(None),
            name: Some("main".into()),
            is_main: true,
            driven: None,
            #[cfg(awaitlet_asan)]
            stack_bounds: Cell::new(arch::asan::StackBounds::default()),
        },
    }));
    // Derived from the block's pointer, so it reaches the context below the record too.
    // SAFETY: `block` was just allocated, and is freed only by `destroy`.
    let pointer = unsafe { &raw const (*block).record };
    // SAFETY: the box's one counted reference goes to the thread's owner.
    let main = unsafe { RecordRef::from_raw(pointer) };
    MAIN.with(|owner| *owner.0.borrow_mut() = Some(Greenlet { record: main }));
    SWITCH.with(|switch| switch.current.set(pointer));
    pointer
}

/// A new handle to the record at `record`.
///
/// # Safety
///
/// `record` must point to a live record (one some reference keeps alive).
#[inline]
pub(crate) unsafe fn handle_from_raw(record: *const Record) -> Greenlet {
    // SAFETY: the caller guarantees the record is alive.
    let record = unsafe { RecordRef::increment(record) };
    Greenlet { record }
}

/// Makes an unstarted greenlet running `run` on `stack`, child of `parent`.
pub(crate) fn new_record<A: 'static, B: 'static, F: FnOnce(A) -> B + 'static>(
    stack: Stack,
    run: F,
    parent: Greenlet,
    name: Option<Cow<'static, str>>,
) -> RecordRef {
    // SAFETY: `run` is `'static`, so it may run whenever; `entry` takes an `A` and runs an `F`.
    unsafe { build_record::<A, F>(stack, run, entry::<A, B, F>, parent, name, None) }
}

/// Room reserved below a greenlet's record for a value of `slot`'s layout, and the bridge
/// state to give the greenlet, for [`build_record`].
pub(super) struct Extra {
    pub(super) slot: Layout,
    pub(super) driven: Driven,
}

/// [`new_record`] for any closure and entry function, optionally with [`Extra`] room and bridge
/// state; the slot's address goes to the bridge state's `slot`.
///
/// # Safety
///
/// `entry_fn` must start a greenlet whose closure is an `F` and whose first value is an `A`.
/// Whatever `run` borrows must outlive every moment the greenlet can run: the caller makes sure
/// the greenlet is finished (or never started) before those borrows end.
#[inline]
pub(super) unsafe fn build_record<A: 'static, F>(
    stack: Stack,
    run: F,
    entry_fn: arch::EntryFn,
    parent: Greenlet,
    name: Option<Cow<'static, str>>,
    extra: Option<Extra>,
) -> RecordRef {
    // From the top of the stack down, below its cache colour: the closure, the slot, the
    // record, then the context (right below the record: see `arch::context_below`) and the
    // first frame.
    let top = stack.top() as usize - cache_colour(stack.top() as usize);
    let closure_align = std::mem::align_of::<F>().max(16);
    let closure = (top - std::mem::size_of::<F>()) & !(closure_align - 1);
    let slot_at = match &extra {
        Some(extra) => (closure - extra.slot.size()) & !(extra.slot.align().max(16) - 1),
        None => closure,
    };
    let record_align = std::mem::align_of::<Record>().max(16);
    let record_at = (slot_at - std::mem::size_of::<Record>()) & !(record_align - 1);
    assert!(
        record_at
            .checked_sub(stack.bottom() as usize)
            .is_some_and(|room| room >= stack.size() / 2),
        "awaitlet: a greenlet's closure and result take {} bytes, more than half of its {}-byte \
         stack; give it a larger stack",
        stack.top() as usize - slot_at,
        stack.size(),
    );
    #[cfg(awaitlet_asan)]
    let stack_bounds = arch::asan::StackBounds {
        bottom: stack.bottom() as usize,
        size: stack.size(),
    };
    let driven = extra.map(|extra| {
        extra.driven.slot.set(slot_at as *mut u8);
        extra.driven
    });
    stack.claim_top(record_at as *mut u8);
    // SAFETY: the top of a fresh (or pooled, unused) stack is ours, and aligned for F.
    unsafe { (closure as *mut F).write(run) };
    unsafe fn drop_closure<F>(closure: *mut u8) {
        // SAFETY: called once, on the closure `new_record` wrote, which was never moved out.
        unsafe { std::ptr::drop_in_place(closure as *mut F) }
    }
    // SAFETY: the region below the record is free stack, 16-byte aligned at `record_at`; the
    // stack lives as long as the record on it, hence as long as the context can run; `data` is
    // the record, alive (held by the greenlet that starts it) when the entry function runs.
    let context = unsafe {
        arch::init(
            record_at as *mut u8,
            stack.bottom(),
            entry_fn,
            record_at as *mut (),
        )
    };
    debug_assert_eq!(
        context.as_ptr() as usize,
        record_at - arch::CONTEXT_BELOW_TOP
    );
    // SAFETY: the top of the stack is ours and aligned for a `Record`. The stack moves into the
    // record it holds, which releases it only after dropping the record (`destroy`).
    unsafe {
        (record_at as *mut Record).write(Record {
            references: Cell::new(1),
            state: Cell::new(State::Unstarted),
            awaiting: Cell::new(type_key::<A>()),
            await_cx: Cell::new(std::ptr::null_mut()),
            driving: Cell::new(std::ptr::null()),
            parent: RefCell::new(Some(parent)),
            start: Cell::new(Some(Start {
                closure: closure as *mut u8,
                drop_closure: drop_closure::<F>,
            })),
            stack: Cell::new(Some(stack)),
            name,
            is_main: false,
            driven,
            #[cfg(awaitlet_asan)]
            stack_bounds: Cell::new(stack_bounds),
        });
        RecordRef::from_raw(record_at as *const Record)
    }
}

/// How far below its stack's top a greenlet's closure, record, context and first frames
/// start: one of 2^[`CACHE_COLOUR_BITS`] multiples of a cache line, picked by a hash of the top's
/// page number.
///
/// Stack tops are page aligned (and, pooled or carved from slabs, spaced by a fixed stride), so
/// without this every greenlet's record and saved context would fall at the same offset within
/// a page, into the same few sets of every cache, which they would then evict from each other
/// long before the cache is full: with many greenlets suspended, every resume missed the whole
/// cache hierarchy (see `asm-notes/measurements.md`, "Many tasks"). The colours stay within
/// half a page, so a shallow greenlet's live top (its record and a few frames) still fits its
/// top page.
#[inline(always)]
fn cache_colour(top: usize) -> usize {
    let page = (top >> 12) as u64;
    let colour = page.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - CACHE_COLOUR_BITS);
    colour as usize * 64
}

/// log2 of the number of cache colours: 32 lines, half a 4 KiB page.
const CACHE_COLOUR_BITS: u32 = 5;

/// A value in flight, when it travels in a [`Message`]: its bytes stay in the sender's frame
/// until the receiver moves them, and so does this description of them.
pub(crate) struct ValueRef {
    type_id: TypeId,
    pointer: *mut (),
    into_box: unsafe fn(*mut ()) -> Box<dyn Any>,
    type_name: &'static str,
}

impl ValueRef {
    /// Refers to the `T` at `pointer`.
    ///
    /// # Safety
    ///
    /// `pointer` must point to a valid `T` that its owner neither touches nor drops again, and
    /// that stays in place until the receiver has moved it out.
    #[inline(always)]
    unsafe fn new<T: 'static>(pointer: *mut T) -> ValueRef {
        unsafe fn into_box<T: 'static>(pointer: *mut ()) -> Box<dyn Any> {
            // SAFETY: `pointer` is the `T` this `ValueRef` was made from, moved out only here.
            Box::new(unsafe { std::ptr::read(pointer as *mut T) })
        }
        ValueRef {
            type_id: TypeId::of::<T>(),
            pointer: pointer as *mut (),
            into_box: into_box::<T>,
            type_name: std::any::type_name::<T>(),
        }
    }
}

/// What a switch delivers, when it is not a plain value of the awaited type.
pub(crate) enum Payload {
    /// A value owned by the sender's frame, described by a [`ValueRef`] also in that frame.
    Value(*const ValueRef),
    /// A value already boxed (a `GreenletExit` delivered as a value).
    Boxed(Box<dyn Any>),
    /// A panic to raise in the receiver (a `throw`, or a panic propagating to a parent).
    Panic(Box<dyn Any + Send>),
    /// An error for the receiver's pending switch (a start with an argument of the wrong type).
    Failed(Box<SwitchError>),
}

impl Payload {
    fn event(&self) -> TraceEvent {
        match self {
            Payload::Value(_) | Payload::Boxed(_) => TraceEvent::Switch,
            Payload::Panic(_) | Payload::Failed(_) => TraceEvent::Throw,
        }
    }

    fn is_exit(&self) -> bool {
        matches!(self, Payload::Panic(payload) if payload.is::<GreenletExit>())
    }

    /// The `TypeId` of the value this payload carries, if it carries one.
    fn value_type(&self) -> Option<TypeId> {
        match self {
            // SAFETY: a `Value` payload points at a live `ValueRef` while it is in flight.
            Payload::Value(value) => Some(unsafe { (**value).type_id }),
            Payload::Boxed(boxed) => Some((**boxed).type_id()),
            Payload::Panic(_) | Payload::Failed(_) => None,
        }
    }

    /// Moves a carried value into a box, with its type name when known.
    ///
    /// # Safety
    ///
    /// A `Value` must still be in place.
    unsafe fn into_boxed_value(self) -> Result<(Box<dyn Any>, &'static str), Payload> {
        match self {
            // SAFETY: the caller guarantees the value is in place; it is moved out once.
            Payload::Value(value) => unsafe {
                Ok((((*value).into_box)((*value).pointer), (*value).type_name))
            },
            Payload::Boxed(boxed) => Ok((boxed, "a boxed value")),
            other => Err(other),
        }
    }

    /// What a pending `switch::<_, R>` returns for this payload; a panic comes back as
    /// `Err(Ok(payload))`, for the caller to raise once its bookkeeping is done.
    ///
    /// # Safety
    ///
    /// A `Value` must still be in place.
    unsafe fn receive<R: 'static>(self) -> Received<R> {
        let (boxed, found) = match self {
            Payload::Value(value) => {
                // SAFETY: the caller guarantees the value is in place; it is moved out once.
                unsafe {
                    if (*value).type_id == TypeId::of::<R>() {
                        return Ok(std::ptr::read((*value).pointer as *mut R));
                    }
                    (((*value).into_box)((*value).pointer), (*value).type_name)
                }
            }
            Payload::Boxed(boxed) => match boxed.downcast::<R>() {
                Ok(value) => return Ok(*value),
                Err(boxed) => (boxed, "a boxed value"),
            },
            Payload::Panic(payload) => return Err(Ok(payload)),
            Payload::Failed(error) => return Err(Err(*error)),
        };
        Err(Err(match boxed.downcast::<GreenletExit>() {
            Ok(exit) => SwitchError::Exited(*exit),
            Err(value) => SwitchError::WrongType {
                expected: std::any::type_name::<R>(),
                found,
                value,
            },
        }))
    }
}

/// What a switch returns to the switching greenlet before a panic delivered to it is raised.
pub(crate) type Received<R> = Result<R, Result<Box<dyn Any + Send>, SwitchError>>;

/// A [`Payload`] on the sender's stack; a tagged word ([`MESSAGE_TAG`]) points at it.
///
/// Only machine words, each read back with one 8-byte load: the receiver runs right after the
/// sender's stores, which may still sit in the store buffer, and a wider load spanning two of
/// them cannot be forwarded from there (it waits for them to reach the cache).
#[repr(C)]
struct Message {
    kind: usize,
    value: *const ValueRef,
    boxed: *mut dyn Any,
    panic: *mut (dyn Any + Send),
    failed: *mut SwitchError,
}

const KIND_VALUE: usize = 0;
const KIND_BOXED: usize = 1;
const KIND_PANIC: usize = 2;
const KIND_FAILED: usize = 3;

/// Low bit of a switched word: set, the word is the address of a [`Message`] (see
/// [`FINISHED_TAG`] for the other case).
const MESSAGE_TAG: usize = 1;

/// Second bit of a switched word, for a word that is not a [`Message`]'s: set, the word is the
/// last switch of a greenlet that finished, and the rest of it the address of its return value;
/// clear, the word is the address of a value of exactly the type the receiver awaits (0 for a
/// zero-sized value). Either way the sender checked, before switching, that no trace hook is
/// set and (when not finished) that it is not abandoned, so a receiver that finds both bits
/// clear has nothing to check about the sender: see [`transfer_value`].
const FINISHED_TAG: usize = 2;

/// Both tag bits; a value sent by address must leave them clear ([`Crossing`]).
const TAG_BITS: usize = MESSAGE_TAG | FINISHED_TAG;

/// A value about to cross a switch by address, aligned so that its address leaves the word's
/// [`TAG_BITS`] clear whatever the value's own alignment.
#[repr(C, align(4))]
struct Crossing<T>(T);

impl Message {
    fn new(payload: Payload) -> Message {
        let mut message = Message {
            kind: KIND_VALUE,
            value: std::ptr::null(),
            boxed: std::ptr::null_mut::<()>() as *mut dyn Any,
            panic: std::ptr::null_mut::<()>() as *mut (dyn Any + Send),
            failed: std::ptr::null_mut(),
        };
        match payload {
            Payload::Value(value) => message.value = value,
            Payload::Boxed(boxed) => {
                (message.kind, message.boxed) = (KIND_BOXED, Box::into_raw(boxed))
            }
            Payload::Panic(panic) => {
                (message.kind, message.panic) = (KIND_PANIC, Box::into_raw(panic))
            }
            Payload::Failed(failed) => {
                (message.kind, message.failed) = (KIND_FAILED, Box::into_raw(failed))
            }
        }
        message
    }

    /// The tagged word for this message.
    fn word(&self) -> usize {
        self as *const Message as usize | MESSAGE_TAG
    }

    /// Takes the payload of the message a tagged `word` points at, one word per load.
    ///
    /// # Safety
    ///
    /// `word` must come from [`Message::word`] of a live message not received before.
    unsafe fn receive(word: usize) -> Payload {
        let message = (word & !MESSAGE_TAG) as *const Message;
        // SAFETY: the caller guarantees a live, unreceived message; the field for its kind is
        // read once and its ownership moves to the result.
        unsafe {
            let read_word = |field: *const usize| std::ptr::read_volatile(field);
            match read_word(&raw const (*message).kind) {
                KIND_VALUE => Payload::Value(
                    read_word(&raw const (*message).value as *const usize) as *const ValueRef,
                ),
                KIND_BOXED => Payload::Boxed(Box::from_raw(std::ptr::read_volatile(
                    &raw const (*message).boxed,
                ))),
                KIND_PANIC => Payload::Panic(Box::from_raw(std::ptr::read_volatile(
                    &raw const (*message).panic,
                ))),
                _ => Payload::Failed(Box::from_raw(read_word(
                    &raw const (*message).failed as *const usize,
                ) as *mut SwitchError)),
            }
        }
    }
}

/// A one-word key for `T`: the address of a constant holding `T`'s `TypeId`. Equal keys mean
/// equal `TypeId`s, hence the same type; a type may in principle get two keys (from separate
/// codegen units), which only sends its values down the slow path, where `TypeId`s themselves
/// are compared.
#[inline(always)]
pub(super) fn type_key<T: 'static>() -> *const TypeId {
    const { &TypeId::of::<T>() }
}

/// The address to hand over for a value sent on the fast path: 0 for a zero-sized value (it has
/// no bytes), otherwise its address, whose [`TAG_BITS`] must then be clear (as they are in a
/// [`Crossing`]).
#[inline(always)]
fn fast_word<T>(value: *mut T) -> Option<usize> {
    if std::mem::size_of::<T>() == 0 {
        Some(0)
    } else {
        Some(value as usize).filter(|address| address & TAG_BITS == 0)
    }
}

/// True when the running greenlet `me` may send a plain word, which its receiver takes without
/// looking at it: no trace hook wants to see the switch, and `me` is not abandoned (holding no
/// reference to itself but its own, which its receiver would have to act on).
#[inline(always)]
pub(super) fn sender_is_plain(me: *const Record) -> bool {
    // SAFETY: the running greenlet is alive; its count and kind are only read.
    !trace::is_set() && unsafe { (*me).references.get() != 1 || (*me).is_main }
}

/// True when `target` can receive a `T` on the fast path from `me`: it is suspended in (or, not
/// started yet, will start with) a switch that asks for exactly a `T`.
#[inline(always)]
fn accepts_fast<T: 'static>(target: &Record, me: *const Record) -> bool {
    // Unstarted or suspended, neither dead nor running: a dead greenlet awaits nothing (its
    // key is null: see `Record::mark_dead`), so the key rules it out, and the running
    // greenlet is `me`.
    //
    // A driven greenlet (`async_def`'s) may be resumed only while its drivers are live (see
    // `driven::resumable`), which only the slow path checks; its key stays on the fast path
    // only while they are: a poll that breaks clears the keys of every driven greenlet it was
    // driving, down the chain (`driven::clear_driven_keys`).
    !std::ptr::eq(target, me) && target.awaiting.get() == type_key::<T>()
}

/// Where a payload ends up.
enum Destination {
    /// The running greenlet itself: deliver without switching.
    Here,
    /// A suspended or unstarted greenlet, kept alive by the parent chain of the original target.
    There(*const Record),
    /// A greenlet running an `async_def` function whose `AsyncDef` is neither polling nor
    /// dropping it: nothing else may resume it (see [`super::driven::resumable`]).
    Refused,
}

/// Walks from `target` to the greenlet that actually receives `payload`: dead greenlets pass it
/// to their parents; unstarted ones start if it is a value of their argument type, and
/// otherwise die without running, passing the payload (or the error it became) on upward.
///
/// A greenlet that may not be resumed ([`resumable`]) refuses the payload. For a switch that
/// is the end of the walk ([`Destination::Refused`]: the switch panics). For a greenlet that
/// has finished (`finishing`), which cannot panic, it is not: the refused greenlet is passed
/// over like a dead one, and what goes on upward is a panic saying so (see
/// [`refused_result`]), since its result had nowhere to go.
fn resolve(target: &Greenlet, payload: &mut Payload, finishing: bool) -> Destination {
    let mut target = target.clone();
    let mut direct = true;
    loop {
        let record = &*target.record;
        match record.state.get() {
            State::Active if RecordRef::as_ptr(&target.record) == current_record() => {
                return Destination::Here;
            }
            _ if !resumable(record) && finishing => refused_result(&target, payload),
            _ if !resumable(record) => return Destination::Refused,
            State::Active => return Destination::There(RecordRef::as_ptr(&target.record)),
            State::Dead => {
                // Throwing GreenletExit into a dead greenlet gives it back as a value (rule 30).
                if direct && payload.is_exit() {
                    convert_exit_to_value(payload);
                }
            }
            State::Unstarted => {
                // SAFETY: keys point at constants.
                if payload.value_type() == Some(unsafe { *record.awaiting.get() }) {
                    return Destination::There(RecordRef::as_ptr(&target.record));
                }
                // It dies without running: its closure is dropped (its stack goes with its record).
                record.mark_dead();
                let start = record
                    .start
                    .take()
                    .expect("an unstarted greenlet has its closure");
                // SAFETY: the closure was never started nor moved out.
                let dropped = catch_unwind(AssertUnwindSafe(|| unsafe {
                    (start.drop_closure)(start.closure)
                }));
                if let Err(panic) = dropped {
                    // The walk may run in a finishing greenlet, where nothing can unwind, so
                    // such a panic is reported in every case, as a kill's is (rule 36).
                    discard_panic(panic);
                    eprintln!(
                        "awaitlet: dropping the closure of {target:?}, which died without \
                         running, panicked; the panic was discarded"
                    );
                }
                let taken = std::mem::replace(payload, Payload::Boxed(Box::new(())));
                // SAFETY: a value in the payload is still in place (nothing took it yet).
                *payload = match unsafe { taken.into_boxed_value() } {
                    Ok((value, found)) => Payload::Failed(Box::new(SwitchError::WrongType {
                        expected: "the argument type of the greenlet's run function",
                        found,
                        value,
                    })),
                    Err(Payload::Panic(panic)) if panic.is::<GreenletExit>() => {
                        Payload::Boxed(panic)
                    }
                    Err(other) => other,
                };
            }
        }
        direct = false;
        let parent = record.parent.borrow().clone();
        target = parent.expect("the main greenlet is never dead nor unstarted");
    }
}

/// A finished greenlet's result met `refuser`, which may not be resumed (a greenlet running an
/// `async_def` function between polls of its `AsyncDef`): the result is dropped (a panic its
/// drop raises is discarded, as a kill's is), and a panic naming the problem takes its place,
/// to go on to `refuser`'s nearest ancestor that can take it.
#[cold]
fn refused_result(refuser: &Greenlet, payload: &mut Payload) {
    let taken = std::mem::replace(
        payload,
        Payload::Panic(Box::new(format!(
            "awaitlet: a greenlet finished while its parent, {refuser:?}, was running an \
             async_def function between polls of its AsyncDef; {REFUSED}, so the result was \
             dropped and this panic went on to the parent's parent"
        ))),
    );
    let dropped = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: a value in the payload is still in place (nothing took it yet).
        let boxed = unsafe { taken.into_boxed_value() };
        match boxed {
            Ok((value, _)) => drop(value),
            Err(Payload::Panic(panic)) => discard_panic(panic),
            Err(other) => drop(other),
        }
    }));
    if let Err(panic) = dropped {
        discard_panic(panic);
        eprintln!(
            "awaitlet: dropping a greenlet's undeliverable result panicked; the panic was discarded"
        );
    }
}

fn convert_exit_to_value(payload: &mut Payload) {
    if let Payload::Panic(panic) = std::mem::replace(payload, Payload::Boxed(Box::new(()))) {
        *payload = Payload::Boxed(panic);
    }
}

/// Sends `value` to `target` and returns what is eventually sent back to the running greenlet,
/// as a `switch::<T, R>` sees it.
///
/// Inlined into the caller, like the whole path down to the `asm!` block: a function entered
/// before a stack switch and left after it would execute a `ret` whose return address the CPU's
/// return-stack buffer took from the *other* stack's calls, a mispredict on every switch. What
/// runs entirely before ([`resolve`]) or entirely after ([`settle`]) is a normal call.
#[inline(always)]
pub(crate) fn transfer_value<T: 'static, R: 'static>(
    target: &Greenlet,
    value: T,
) -> Result<R, SwitchError> {
    let mut value = ManuallyDrop::new(Crossing(value));
    let pointer = &mut value.0 as *mut T;
    let me = current_record_held(&target.record);
    let fast = |_: &usize| accepts_fast::<T>(&target.record, me) && sender_is_plain(me);
    if let Some(word) = fast_word(pointer).filter(fast) {
        // SAFETY: we run; the target is suspended or unstarted, kept alive by the caller's
        // handle, and awaits a `T`, which it moves out of `value` (never dropped here) before
        // anything else runs on our stack.
        let (word, origin) = unsafe { switch_to::<R>(me, RecordRef::as_ptr(&target.record), word) };
        // The common cases in a straight line: a plain value back, its sender's checks made
        // on its side (see `FINISHED_TAG`); or the return value of a sender that finished and
        // is still referenced elsewhere (by the caller's handle, usually), so that adopting its
        // self-reference frees nothing. Everything else is `receive`'s business.
        if word & TAG_BITS == 0 {
            // SAFETY: an untagged word is the address of an `R` (0 for a zero-sized one) in
            // the sender's suspended frame, moved out once, here.
            return Ok(unsafe { read_value::<R>(word) });
        }
        // SAFETY: the sender is alive (it just switched); reading its count is all.
        if word & TAG_BITS == FINISHED_TAG && unsafe { (*origin).references.get() } > 1 {
            // SAFETY: as above, in the finished sender's frame, which stays mapped until its
            // self-reference is dropped, after the read.
            let value = unsafe { read_value::<R>(word & !FINISHED_TAG) };
            // SAFETY: the finished sender handed its self-reference over; another remains.
            unsafe { release_finished_held(origin) };
            return Ok(value);
        }
        // SAFETY: nothing has been taken from the word yet.
        return raise(unsafe { receive_out_of_line::<R>(word, origin, me) });
    }
    // SAFETY: `value` is never touched again here; the receiver moves it out.
    let value = unsafe { ValueRef::new(pointer) };
    raise(transfer_raw::<R>(target, Payload::Value(&value)))
}

/// The error of a switch or throw made while the running greenlet unwinds (see
/// [`SwitchError::Unwinding`]): nothing is sent, and `value` comes back.
#[cold]
#[inline(never)]
pub(crate) fn refuse_while_unwinding<T: 'static>(value: T) -> SwitchError {
    SwitchError::Unwinding {
        value: Box::new(value),
    }
}

/// Moves the `R` an untagged word points at (0 for a zero-sized `R`) out of the sender's frame.
///
/// # Safety
///
/// The word must be untagged, from a sender that checked its value is an `R`, still in place.
#[inline(always)]
unsafe fn read_value<R>(word: usize) -> R {
    // SAFETY: the caller's contract; a zero-sized `R` has no bytes to read.
    unsafe {
        if std::mem::size_of::<R>() == 0 {
            std::ptr::read(NonNull::<R>::dangling().as_ptr())
        } else {
            std::ptr::read(word as *const R)
        }
    }
}

/// [`receive`], kept out of line for the fast path's uncommon cases.
///
/// # Safety
///
/// As for [`receive`].
#[inline(never)]
pub(super) unsafe fn receive_out_of_line<R: 'static>(
    word: usize,
    origin: *const Record,
    me: *const Record,
) -> Received<R> {
    // SAFETY: the caller's contract.
    unsafe { receive::<R>(word, origin, me) }
}

/// Sends `payload` to `target`, as [`transfer_value`] does a value.
#[inline(always)]
pub(crate) fn transfer<R: 'static>(target: &Greenlet, payload: Payload) -> Result<R, SwitchError> {
    raise(transfer_raw(target, payload))
}

/// Raises a received panic; returns the rest.
#[inline(always)]
fn raise<R>(received: Received<R>) -> Result<R, SwitchError> {
    match received {
        Ok(value) => Ok(value),
        Err(Ok(panic)) => raise_delivered(panic),
        Err(Err(error)) => Err(error),
    }
}

/// Raises, in the running greenlet, a panic delivered to it by a switch: thrown into it, or
/// propagated from a child. A build that aborts on panic (`panic = "abort"`) cannot unwind, and
/// `resume_unwind` would end the process without a word: this says what arrived first.
#[cold]
pub(crate) fn raise_delivered(panic: Box<dyn Any + Send>) -> ! {
    if cfg!(panic = "abort") {
        let what = if let Some(text) = panic.downcast_ref::<&str>() {
            format!("a panic ({text})")
        } else if let Some(text) = panic.downcast_ref::<String>() {
            format!("a panic ({text})")
        } else if let Some(exit) = panic.downcast_ref::<GreenletExit>() {
            format!("a {exit}")
        } else {
            "a panic".to_string()
        };
        eprintln!(
            "awaitlet: {what} was delivered to {:?} by a throw or a kill, but this build aborts \
             on panic (panic = \"abort\") and cannot unwind it: aborting",
            super::getcurrent()
        );
        std::process::abort();
    }
    resume_unwind(panic)
}

/// [`transfer`], handing a received panic back instead of raising it.
#[inline(always)]
pub(crate) fn transfer_raw<R: 'static>(target: &Greenlet, mut payload: Payload) -> Received<R> {
    let me = current_record_held(&target.record);
    match resolve(target, &mut payload, false) {
        Destination::Here => {
            let event = payload.event();
            // SAFETY: nothing has touched the payload's value.
            let received = unsafe { payload.receive::<R>() };
            settle(received, event, me, me)
        }
        Destination::There(receiver) => {
            let message = Message::new(payload);
            // SAFETY: `me` runs; `receiver` is suspended or unstarted and kept alive by the
            // target's parent chain, which the caller's handle holds; the message stays in this
            // frame until the receiver has taken it.
            unsafe { switch_and_receive::<R>(me, receiver, message.word()) }
        }
        Destination::Refused => {
            // The value goes back to being dropped here, as if never sent.
            // SAFETY: nothing has touched the payload's value.
            drop(unsafe { payload.into_boxed_value() });
            panic!("{REFUSED}")
        }
    }
}

/// Why a switch, throw or kill was refused (see [`Destination::Refused`]).
const REFUSED: &str = "awaitlet: a greenlet running an async_def function can only be resumed by \
                       its AsyncDef (polling or dropping it), and it is doing neither";

/// Switches from `me` to `receiver` with `word`, then receives what comes back.
///
/// # Safety
///
/// `me` must be the running greenlet and `receiver` a suspended or unstarted one, kept alive
/// until `me` is resumed; `word` must be valid for `receiver` (see [`MESSAGE_TAG`]).
#[inline(always)]
unsafe fn switch_and_receive<R: 'static>(
    me: *const Record,
    receiver: *const Record,
    word: usize,
) -> Received<R> {
    // SAFETY: the caller's contract.
    unsafe {
        let (word, origin) = switch_to::<R>(me, receiver, word);
        receive::<R>(word, origin, me)
    }
}

/// Switches from `me`, awaiting an `R`, to `receiver` with `word`; back in `me`, returns the
/// word received and the greenlet that sent it.
///
/// # Safety
///
/// As for [`switch_and_receive`].
#[inline(always)]
pub(super) unsafe fn switch_to<R: 'static>(
    me: *const Record,
    receiver: *const Record,
    word: usize,
) -> (usize, *const Record) {
    // SAFETY: the caller's contract.
    unsafe { switch_linked_or_not::<R, true>(me, receiver, word) }
}

/// [`switch_to`] without touching either context's link (see [`arch::switch_unlinked`]): for a
/// driven greenlet's wait, back to the poller that resumed it.
///
/// # Safety
///
/// As for [`switch_to`]; besides, `receiver` must have suspended by a [`switch_to`], which left
/// its link the terminator (see [`arch::switch_unlinked`]).
#[inline(always)]
pub(super) unsafe fn switch_to_unlinked<R: 'static>(
    me: *const Record,
    receiver: *const Record,
    word: usize,
) -> (usize, *const Record) {
    // SAFETY: the caller's contract.
    unsafe { switch_linked_or_not::<R, false>(me, receiver, word) }
}

/// The body of [`switch_to`] (`LINKED`) and [`switch_to_unlinked`].
///
/// # Safety
///
/// As for those two.
#[inline(always)]
unsafe fn switch_linked_or_not<R: 'static, const LINKED: bool>(
    me: *const Record,
    receiver: *const Record,
    word: usize,
) -> (usize, *const Record) {
    // SAFETY: the caller's contract.
    unsafe {
        // Written only when it changes: a sender about to read it must not wait on a fresh store.
        if (*me).awaiting.get() != type_key::<R>() {
            (*me).awaiting.set(type_key::<R>());
        }
        #[cfg(awaitlet_asan)]
        let departure = arch::asan::before_switch((*receiver).stack_bounds.get(), false);
        let (from, to) = (arch::context_below(me), arch::context_below(receiver));
        let (word, sender) = if LINKED {
            arch::switch(word, from, to)
        } else {
            arch::switch_unlinked(word, from, to)
        };
        let origin = arch::above_context::<Record>(sender);
        #[cfg(awaitlet_asan)]
        learn_stack_bounds(origin, arch::asan::after_switch(Some(departure)));
        SWITCH.with(|switch| switch.current.set(me));
        (word, origin)
    }
}

/// Records the bounds of the stack a switch came from, the first time they are learned (only
/// main's are not known from the start).
///
/// # Safety
///
/// `origin` must be alive.
#[cfg(awaitlet_asan)]
unsafe fn learn_stack_bounds(origin: *const Record, left: arch::asan::StackBounds) {
    // SAFETY: the caller's contract.
    let bounds = unsafe { &(*origin).stack_bounds };
    if bounds.get().size == 0 {
        bounds.set(left);
    }
}

/// Takes what a switch delivered to `me` from `origin`.
///
/// # Safety
///
/// `word` must be what `origin`'s switch handed over, still untouched, and `me` must await `R`.
#[inline(always)]
unsafe fn receive<R: 'static>(
    word: usize,
    origin: *const Record,
    me: *const Record,
) -> Received<R> {
    if word & MESSAGE_TAG == 0 {
        // SAFETY: the sender checked that its value is an `R`; it is moved out once, here.
        let value = unsafe { read_value::<R>(word & !FINISHED_TAG) };
        settle(Ok(value), TraceEvent::Switch, origin, me)
    } else {
        // SAFETY: a tagged word points at the sender's message, received once, here.
        let payload = unsafe { Message::receive(word) };
        let event = payload.event();
        // SAFETY: nothing has touched the payload's value.
        let received = unsafe { payload.receive::<R>() };
        settle(received, event, origin, me)
    }
}

/// The bookkeeping after `me` took what `origin` sent: the trace hook, and the sender's fate.
/// A trace hook's panic replaces what was received (rule 66); it is handed back, never raised
/// here: in a greenlet's entry function, unwinding would cross `extern "C"`.
#[inline(always)]
fn settle<R>(
    received: Received<R>,
    event: TraceEvent,
    origin: *const Record,
    me: *const Record,
) -> Received<R> {
    if trace::is_set() {
        return settle_traced(received, event, origin, me);
    }
    if origin != me {
        // SAFETY: the sender is alive: a finished one by the self-reference it handed over, a
        // suspended one by its own.
        unsafe {
            if (*origin).state.get() == State::Dead {
                release_finished(origin);
            } else {
                kill_if_abandoned(origin);
            }
        }
    }
    received
}

/// [`settle`] with a trace hook set. The hook may run any code, including dropping or killing
/// the sender, so the sender's state is read before it runs, and a handle keeps the sender
/// alive across it: a finished sender's self-reference, adopted, or a new handle to a suspended
/// one, whose drop after the hook kills it if it is abandoned (rule 43), as
/// [`kill_if_abandoned`] does when no hook is set.
#[cold]
#[inline(never)]
fn settle_traced<R>(
    received: Received<R>,
    event: TraceEvent,
    origin: *const Record,
    me: *const Record,
) -> Received<R> {
    // SAFETY: the sender is alive, as in `settle`; a finished one handed over its
    // self-reference, which the handle made here takes over.
    let sender = (origin != me).then(|| unsafe {
        if (*origin).state.get() == State::Dead {
            Greenlet {
                record: RecordRef::from_raw(origin),
            }
        } else {
            handle_from_raw(origin)
        }
    });
    // SAFETY: `me` is running; `origin` is `me` or kept alive by `sender` until after the call.
    let traced = unsafe { trace::call(event, origin, me) };
    drop(sender);
    match traced {
        Ok(()) => received,
        Err(panic) => {
            // In a greenlet's start, nothing may unwind: a destructor's panic is discarded.
            drop_quietly(received, "a value replaced by a trace hook's panic");
            Err(Ok(panic))
        }
    }
}

/// Drops the self-reference a finished greenlet handed over with its final switch, when another
/// reference is known to remain (so nothing is freed).
///
/// # Safety
///
/// As for [`release_finished`], and another reference to `record` must exist.
#[inline(always)]
pub(super) unsafe fn release_finished_held(record: *const Record) {
    // SAFETY: the caller's contract: the record is alive and keeps a reference after this one.
    unsafe {
        let references = &(*record).references;
        debug_assert!(references.get() > 1);
        references.set(references.get() - 1);
    }
}

/// Drops the self-reference a finished greenlet handed over with its final switch.
///
/// # Safety
///
/// `record` must have just finished and switched away for the last time.
#[cold]
unsafe fn release_finished(record: *const Record) {
    // SAFETY: the finished greenlet's entry function gave up its reference without dropping it.
    let record = unsafe { RecordRef::from_raw(record) };
    drop(Greenlet { record });
}

/// Kills a suspended greenlet whose only reference is its own (see the module docs).
///
/// # Safety
///
/// `record` must be alive.
#[inline(always)]
unsafe fn kill_if_abandoned(record: *const Record) {
    // SAFETY: the caller guarantees the record is alive; its state and count are only read.
    let only_self = unsafe {
        (*record).state.get() == State::Active
            && !(*record).is_main
            && (*record).references.get() == 1
    };
    if only_self {
        // SAFETY: as above.
        unsafe { kill_abandoned_sender(record) }
    }
}

/// Kills a sender found abandoned (rule 43): it dropped its last handle to itself, then switched.
///
/// # Safety
///
/// `record` must be alive.
#[cold]
unsafe fn kill_abandoned_sender(record: *const Record) {
    // SAFETY: the caller guarantees the record is alive. The handle made here is the last one
    // besides the greenlet's own, so dropping it kills the greenlet.
    drop(unsafe { handle_from_raw(record) });
}

/// Kill on drop: throws `GreenletExit` into `victim`, whose last handle is being dropped, with
/// the dropping greenlet as its parent for the duration (rules 32-39).
///
/// In a build that aborts on panic (`panic = "abort"`) nothing can unwind: the victim is
/// leaked instead, with one line on stderr. That is sound for the reason `mem::forget` of a
/// handle is: the victim's frames stay where they are, on a stack that is never freed.
pub(crate) fn kill_abandoned(victim: &Greenlet) {
    if cfg!(panic = "abort") {
        eprintln!(
            "awaitlet: the last handle to {victim:?} was dropped, but this build aborts on panic \
             (panic = \"abort\") and cannot unwind it: it is leaked, with its stack"
        );
        std::mem::forget(victim.clone());
        return;
    }
    let killer = super::getcurrent();
    let original_parent = victim.record.parent.replace(Some(killer));
    let exit = Payload::Panic(Box::new(GreenletExit::vanished()));
    let outcome = transfer_raw::<GreenletExit>(victim, exit);
    let dead = victim.record.state.get() == State::Dead;
    // Released outside the borrow: dropping the stand-in may run code that reads the link.
    let stand_in = victim.record.parent.replace(original_parent);
    drop(stand_in);
    match outcome {
        Err(Ok(panic)) => {
            // Rule 36: a kill that turned into another panic is reported, never raised from
            // drop. The panic hook has already printed it where it happened.
            discard_panic(panic);
            eprintln!(
                "awaitlet: {victim:?} panicked while being killed on drop; the panic was discarded"
            );
        }
        // What came back instead (a value the victim returned, or sent by a switch) is nobody's.
        other => drop_quietly(other, "a value that came back from a kill on drop"),
    }
    if !dead && RecordRef::count(&victim.record) == 2 {
        // Rule 37: it caught GreenletExit and switched away without keeping a handle to itself.
        // Its frames are live on its stack, so it can be neither resumed nor freed: leak it.
        eprintln!("awaitlet: GreenletExit did not kill {victim:?}; leaking it");
        std::mem::forget(victim.clone());
    }
}

/// Drops `value`, which nobody will receive, from code that must not panic (a `drop`, or a
/// greenlet's start or end, which cannot unwind): a panic from its destructor is discarded with
/// a line on stderr (the panic hook has reported the panic itself).
pub(crate) fn drop_quietly<T>(value: T, what: &str) {
    if let Err(panic) = catch_unwind(AssertUnwindSafe(move || drop(value))) {
        discard_panic(panic);
        eprintln!("awaitlet: dropping {what} panicked; the panic was discarded");
    }
}

/// Drops a panic payload that nobody will raise, from code that must not panic (a `drop`). A
/// payload whose own destructor panics is caught at it (the panic hook has reported that
/// panic), and the payload of that panic is dropped the same way; after a few such rounds the
/// last payload is leaked instead.
pub(crate) fn discard_panic(payload: Box<dyn Any + Send>) {
    let mut payload = payload;
    for _ in 0..4 {
        match catch_unwind(AssertUnwindSafe(move || drop(payload))) {
            Ok(()) => return,
            Err(next) => payload = next,
        }
    }
    std::mem::forget(payload);
}

/// Every greenlet stack starts here, on the first switch into it; `data` is its record.
unsafe extern "C" fn entry<A: 'static, B: 'static, F: FnOnce(A) -> B>(
    word: usize,
    data: *mut (),
    sender: *const Context,
) -> ! {
    // SAFETY: the contract of every entry function: `data` is our record, `word` and `sender`
    // what the starting switch handed over.
    let (me, start, argument) = unsafe { begin::<A>(word, data, sender) };
    let outcome = match argument {
        Ok(argument) => {
            // SAFETY: the closure was written by `build_record` and is moved out exactly once.
            let run = unsafe { std::ptr::read(start.closure as *mut F) };
            catch_unwind(AssertUnwindSafe(move || run(argument)))
        }
        // SAFETY: the closure was never moved out.
        Err(panic) => Err(unsafe { refuse_start(start, panic) }),
    };
    finish(me, outcome)
}

/// The start of a greenlet, in its entry function: takes its self-reference, makes it the
/// running greenlet, takes its closure and receives its argument. A trace hook's panic comes
/// back as `Err`.
///
/// # Safety
///
/// `data` must be the starting greenlet's record and `word`, `sender` what the switch that
/// starts it handed over, with a value of type `A`.
#[inline(always)]
pub(super) unsafe fn begin<A: 'static>(
    word: usize,
    data: *mut (),
    sender: *const Context,
) -> (Greenlet, Start, Result<A, Box<dyn Any + Send>>) {
    let me_pointer = data as *const Record;
    // Our self-reference. The greenlet that started us holds a reference until we switch back.
    // SAFETY: as above.
    let me = unsafe { handle_from_raw(me_pointer) };
    // SAFETY: the sender is a greenlet: its record lies just above the context its switch
    // handed over.
    let origin = unsafe { arch::above_context::<Record>(sender) };
    // SAFETY: as above, the sender is alive.
    #[cfg(awaitlet_asan)]
    unsafe {
        learn_stack_bounds(origin, arch::asan::after_switch(None))
    };
    SWITCH.with(|switch| switch.current.set(me_pointer));
    me.record.state.set(State::Active);
    let start = me
        .record
        .start
        .take()
        .expect("a starting greenlet has its closure");
    // SAFETY: whoever started us checked that the value is an `A` (`accepts_fast`, `resolve`).
    let argument = match unsafe { receive::<A>(word, origin, me_pointer) } {
        Ok(argument) => Ok(argument),
        // Rule 66: a trace hook that panicked on our start: we die of that panic.
        Err(Ok(panic)) => Err(panic),
        Err(Err(_)) => unreachable!("a greenlet is only started with a value of its argument type"),
    };
    (me, start, argument)
}

/// Drops the closure of a greenlet that dies of `panic` before running; returns the panic.
///
/// # Safety
///
/// The closure must never have been moved out.
#[cold]
pub(super) unsafe fn refuse_start(start: Start, panic: Box<dyn Any + Send>) -> Box<dyn Any + Send> {
    // SAFETY: the caller's contract; the closure is dropped once, here. In a greenlet's start
    // nothing may unwind, so a panic from the closure's destructor is discarded.
    let dropped = catch_unwind(AssertUnwindSafe(|| unsafe {
        (start.drop_closure)(start.closure)
    }));
    if let Err(drop_panic) = dropped {
        discard_panic(drop_panic);
        eprintln!(
            "awaitlet: dropping the closure of a greenlet that died before running panicked; the \
             panic was discarded"
        );
    }
    panic
}

/// The end of a greenlet, in its entry function: `outcome` goes to its parent with the final
/// switch away from its stack.
///
/// The greenlet is marked dead only right before that switch: finding the receiver may run
/// code (the closures of unstarted greenlets dropped on the way), which may switch away and
/// back, and until the receiver is found the greenlet is as alive as any. A dead sender has
/// handed over its self-reference (see `settle`), which is true only of this last switch.
#[inline]
pub(super) fn finish<B: 'static>(me: Greenlet, outcome: std::thread::Result<B>) -> ! {
    let me_pointer = RecordRef::as_ptr(&me.record);
    // The parent as a handle, for the walk to a receiver that may run code (closures of
    // unstarted greenlets dropped on the way); the fast path needs only its address.
    let parent = || {
        me.record
            .parent
            .borrow()
            .clone()
            .expect("a greenlet has a parent")
    };
    let mut returned = MaybeUninit::<Crossing<B>>::uninit();
    let value_ref;
    let mut message = None;
    let (word, receiver) = match outcome {
        Ok(value) => {
            let pointer = &mut returned.write(Crossing(value)).0 as *mut B;
            // Our record, alive while our self-reference is, holds the parent alive.
            let parent_record = me
                .record
                .parent
                .borrow()
                .as_ref()
                .map(|parent| RecordRef::as_ptr(&parent.record))
                .expect("a greenlet has a parent");
            // SAFETY: see above.
            let accepts = |_: &usize| unsafe { accepts_fast::<B>(&*parent_record, me_pointer) };
            match fast_word(pointer).filter(|word| accepts(word) && !trace::is_set()) {
                Some(word) => (word | FINISHED_TAG, parent_record),
                None => {
                    // SAFETY: `returned` is never dropped nor touched again by this frame; the
                    // receiver moves the value out before this stack is released.
                    value_ref = unsafe { ValueRef::new(pointer) };
                    deliver_from_finished(&parent(), Payload::Value(&value_ref), &mut message)
                }
            }
        }
        // Rule 18: an uncaught GreenletExit reaches the parent as a value.
        Err(panic) if panic.is::<GreenletExit>() => {
            deliver_from_finished(&parent(), Payload::Boxed(panic), &mut message)
        }
        Err(panic) => deliver_from_finished(&parent(), Payload::Panic(panic), &mut message),
    };
    me.record.mark_dead();
    // SAFETY: see `final_switch`; what `word` points at stays in this frame, which is never
    // unwound, until the receiver has taken it.
    unsafe { final_switch(me, word, receiver) }
}

/// The last switch away from a finished greenlet's stack, handing its self-reference to the
/// receiver, which adopts it when it sees the sender dead (see `settle`).
///
/// # Safety
///
/// `me` must be the running, finished greenlet's self-reference; `receiver` must be kept alive
/// by `me`'s parent chain and await what `word` carries.
#[inline(always)]
pub(super) unsafe fn final_switch(me: Greenlet, word: usize, receiver: *const Record) -> ! {
    let me_pointer = RecordRef::as_ptr(&me.record);
    std::mem::forget(me);
    // SAFETY: the caller's contract keeps `receiver` alive.
    #[cfg(awaitlet_asan)]
    arch::asan::before_switch(unsafe { (*receiver).stack_bounds.get() }, true);
    // SAFETY: the caller's contract; our record is kept alive by the self-reference just
    // handed over.
    unsafe {
        arch::switch_final(
            word,
            arch::context_below(me_pointer),
            arch::context_below(receiver),
        )
    }
}

/// Walks a finished greenlet's payload to its receiver; returns the word to hand over (pointing
/// at `message`, which the caller keeps in its frame) and the receiver.
fn deliver_from_finished(
    parent: &Greenlet,
    mut payload: Payload,
    message: &mut Option<Message>,
) -> (usize, *const Record) {
    let receiver = match resolve(parent, &mut payload, true) {
        Destination::There(receiver) => receiver,
        Destination::Here => unreachable!("a finished greenlet is not running"),
        Destination::Refused => unreachable!("a finished greenlet's walk passes over refusers"),
    };
    (message.insert(Message::new(payload)).word(), receiver)
}
