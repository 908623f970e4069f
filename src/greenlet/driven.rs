//! Greenlets driven by a future: the unsafe core under `async_def` and `awaitlet`.
//!
//! A driven greenlet is an ordinary greenlet (it has a record, a parent, a place in the tree,
//! and `getcurrent()` names it while it runs) whose closure is the user's `f`, and whose
//! switches with its *poller* (the greenlet that polls its future, usually main) follow a
//! fixed protocol, cheaper than a general switch because both ends know what crosses:
//!
//! ```text
//!   poller's stack (executor)                 driven greenlet's stack
//!   | executor: poll(task)        |           | record, outcome slot     | <- top
//!   | AsyncDef::poll(cx)          |           | f()                      |
//!   |   cx, poller -> record      |           |   ... plain sync calls   |
//!   |   switch ---------------------------->  |   awaitlet(fut)          |
//!   |                             |           |     fut.poll(cx): Pending|
//!   |   <- returns Poll::Pending  <-------------- switch to the poller    |
//!   | (executor runs other tasks) |           | (suspended)              |
//!   | AsyncDef::poll(cx')         |           |                          |
//!   |   switch ---------------------------->  |     fut.poll(cx'): Ready |
//!   |                             |           |   ... f goes on, returns |
//!   |   <- outcome from the slot  <-------------- final switch           |
//! ```
//!
//! Nothing crosses a switch but a word that is 0 unless the receiver has bookkeeping to do
//! ([`SETTLE`]): the poller leaves `cx` in the greenlet's record before switching in, and it is
//! cleared before the poll returns (by `awaitlet`, which suspends with it taken out, or by the
//! poller once back), so `awaitlet` polls with the context of the poll in progress and never
//! with a stale one. `f`'s result (or panic) is written to a slot on the greenlet's own stack,
//! beside its record, where the poller reads it after the final switch.
//!
//! # Cancellation
//!
//! Dropping the future of a started, unfinished greenlet throws [`Cancelled`] into it, with the
//! dropping greenlet as its parent, and repeats that until it is dead, so `drop` returns only
//! once `f`'s stack has unwound: its frames borrow from the dropping code (`f` need not be
//! `'static`), so it must never run again. While cancelled, `awaitlet` raises `Cancelled` at
//! once instead of waiting.
//!
//! # Misuse that the protocol refuses
//!
//! Only the driven greenlet may resume a poller in the middle of a poll. A greenlet switch that
//! resumes the poller otherwise (from a child greenlet of `f`, say) makes the poll panic, and
//! later polls panic too while the driven greenlet is suspended anywhere but in `awaitlet`. If
//! the driven greenlet was inside a future's `poll` at that moment, with the poller's `cx` in
//! hand, the poll cannot return at all (the `cx` would dangle): the process aborts with a
//! message. `awaitlet` inside a future that `awaitlet` is polling is refused, as in Python
//! (rule 73), for the same reason.
//!
//! # Who may resume the function
//!
//! `f` may borrow for any `'a`, and a handle to its greenlet can outlive `'a`. Its poll and its
//! drop resume it by the protocol; anything else (a switch, a throw, a finished child's
//! result) must pass [`resumable`]: the greenlet is being polled or dropped by a driver whose
//! own frames are live, down a chain of drivers to one that cannot be frozen with dangling
//! borrows. A poll can be frozen on the stack of another `async_def` whose poll broke and
//! which was then leaked; so a broken poll also takes every greenlet it drives off the
//! switch's fast path ([`clear_driven_keys`]), which checks nothing on the receiving side.
//!
//! ```text
//!   main: poll(inner) --switch--> inner's f: poll(outer) --switch--> outer's f
//!         (broken: outer's f switched                               | stash getcurrent(),
//!          straight to main; inner's poll                            | switch to main
//!          panics)                                                   |
//!   mem::forget(inner): outer's poll stays frozen on inner's stack, "in progress" for good;
//!   outer's borrows end; a switch into outer's f through the stashed handle must fail:
//!   outer's driver (inner) is itself driven and no longer polled or dropped.
//! ```
//!
//! The whole argument, with the crate's other invariants, is in `docs/SOUNDNESS.md`.

use std::cell::Cell;
use std::future::Future;
use std::marker::PhantomData;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::pin::pin;
use std::ptr;
use std::task::{Context, Poll};

use super::core::{
    Extra, Payload, Record, RecordRef, State, begin, build_record, current_record,
    current_record_held, discard_panic, drop_quietly, final_switch, finish, handle_from_raw,
    raise_delivered, receive_out_of_line, refuse_start, release_finished_held,
    running_record_if_any, sender_is_plain, switch_to, switch_to_unlinked, transfer_raw,
};
use super::{Greenlet, getcurrent, trace};
use crate::stack::{Stack, StackError};

/// The panic payload raised inside an `async_def` closure, at its `awaitlet` call, when its
/// future is dropped before it finished. Caught by nothing, it unwinds the closure's stack so
/// that every destructor on it runs; see the [bridge docs](crate::bridge#cancellation).
///
/// ```
/// use awaitlet::{Cancelled, async_def, awaitlet};
///
/// let mut future = Box::pin(async_def(|| {
///     let outcome = std::panic::catch_unwind(|| awaitlet(std::future::pending::<()>()));
///     // The future was dropped while waiting: the wait ended in `Cancelled`.
///     assert!(outcome.unwrap_err().is::<Cancelled>());
/// }));
/// let waker = std::task::Waker::noop();
/// assert!(future.as_mut().poll(&mut std::task::Context::from_waker(waker)).is_pending());
/// drop(future); // raises Cancelled in the closure and waits for it to finish
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cancelled;

impl std::fmt::Display for Cancelled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the async_def future was dropped while its function was waiting")
    }
}

impl std::error::Error for Cancelled {}

/// What a poller hands its driven greenlet (nothing: the poll's context is in [`Driven`]).
pub(super) struct Resume;

/// What a driven greenlet hands its poller: it suspended, or (if it is now dead) it finished.
pub(super) struct Yielded;

/// The word one end of the protocol sends the other when the receiver must do a general
/// greenlet switch's bookkeeping (a trace hook is set, or the poller was abandoned: no reference
/// to it remains but its own). A poll resuming its greenlet, and a greenlet suspending in `awaitlet`, check that
/// on their own side before switching and otherwise send 0, so that the receiver of a 0 reads
/// nothing about its sender right after the switch. (A finishing greenlet sends 0 and its
/// poller checks the trace hook itself.) `Resume` and `Yielded` are zero-sized, so any word
/// without tag bits is a valid value word for them; this one fails the receiver's `word == 0`
/// test and takes it down the general receive, which settles the switch.
const SETTLE: usize = 4;

/// The word a switch of the protocol carries: 0 when it is `plain`, otherwise [`SETTLE`].
#[inline(always)]
fn protocol_word(plain: bool) -> usize {
    if plain { 0 } else { SETTLE }
}

/// What `f` came to: its value or its panic; `None` until it finishes.
type Outcome<R> = Option<std::thread::Result<R>>;

/// A driven greenlet's part of its record.
pub(crate) struct Driven {
    /// The outcome slot, on the greenlet's stack just below its record.
    pub(super) slot: Cell<*mut u8>,
    /// The greenlet polling this one's future, while a poll is in progress.
    poller: Cell<*const Record>,
    /// The poller last made this greenlet's parent; null once `set_parent` changed it.
    pub(super) parented: Cell<*const Record>,
    cancelled: Cell<bool>,
    /// The greenlet dropping this one's future, while it throws [`Cancelled`] into it.
    canceller: Cell<*const Record>,
    /// True once `awaitlet` suspended (for `assert_await_occurs`).
    awaited: Cell<bool>,
    /// True while the greenlet is unstarted or suspended in `awaitlet`: what a poll resumes.
    /// (Its record's `awaiting` type key says the same, but a type may have several keys.)
    parked: Cell<bool>,
}

impl Driven {
    fn new() -> Driven {
        Driven {
            slot: Cell::new(ptr::null_mut()),
            poller: Cell::new(ptr::null()),
            parented: Cell::new(ptr::null()),
            cancelled: Cell::new(false),
            canceller: Cell::new(ptr::null()),
            awaited: Cell::new(false),
            parked: Cell::new(true),
        }
    }
}

/// False for a driven greenlet, started or not, that its `AsyncDef` is not polling or dropping
/// *now*, from frames that will run again: a switch, throw or kill from anywhere else is
/// refused, since `f` may borrow what the `AsyncDef`'s owner has since freed (after
/// `mem::forget`, say), and a handle to the greenlet (`getcurrent()` inside `f`, a trace
/// hook's) outlives those borrows. True for every other greenlet, and for a dead driven one
/// (its frames are gone).
///
/// "Polling or dropping" is not enough on its own: the poll (or drop) may itself be frozen on
/// a stack that will never run again, because the greenlet running it is a driven greenlet
/// whose own `AsyncDef` was leaked (its poll panicked, then it was forgotten). So the walk goes
/// down the chain of drivers (the poller, or the greenlet dropping the future) until it meets a
/// greenlet whose frames cannot be frozen that way: one that is not driven (main, or a plain
/// greenlet, whose closure is `'static`), the running greenlet, or a dead one. Every driven
/// greenlet on the way must be being polled or dropped. See `docs/SOUNDNESS.md`.
pub(super) fn resumable(record: &Record) -> bool {
    let running = current_record();
    let mut record = record;
    loop {
        let Some(driven) = &record.driven else {
            return true;
        };
        if record.state.get() == State::Dead || ptr::eq(record, running) {
            return true;
        }
        let mut driver = driven.poller.get();
        if driver.is_null() {
            driver = driven.canceller.get();
        }
        if driver.is_null() {
            return false;
        }
        // SAFETY: a driver is suspended in the poll or drop of this greenlet's future (it
        // clears the field before it returns), so its self-reference keeps its record alive.
        record = unsafe { &*driver };
    }
}

/// Takes `record` (a driven greenlet whose poll just broke: its poller was resumed by something
/// else than its protocol) off the switch's fast path, and with it every driven greenlet it
/// is driving (polling or dropping), down the chain of [`Record::driving`] links: none of them
/// may be resumed any more (their drivers' frames will not run again until their own
/// `AsyncDef`s are dropped), and only the slow path checks that (see `resumable`). A greenlet
/// parked in `awaitlet` keeps its key (it awaits a private type no switch can send).
#[cold]
fn clear_driven_keys(record: &Record) {
    let mut record = record;
    loop {
        let parked = record
            .driven
            .as_ref()
            .is_some_and(|driven| driven.parked.get());
        if record.state.get() == State::Active && !parked {
            record.awaiting.set(ptr::null());
        }
        let next = record.driving.get();
        if next.is_null() {
            return;
        }
        // SAFETY: a greenlet driving another is suspended in that one's poll or drop, which
        // holds a reference to it until it clears the link.
        record = unsafe { &*next };
    }
}

/// The bridge state of a driven greenlet's record.
#[inline(always)]
fn driven_state(record: &Record) -> &Driven {
    record
        .driven
        .as_ref()
        .expect("a driven greenlet has bridge state")
}

/// [`driven_state`] without the check, for the two ends of a pending wait.
///
/// # Safety
///
/// `record` must be a driven greenlet's (made by [`build`]).
#[inline(always)]
unsafe fn driven_state_unchecked(record: &Record) -> &Driven {
    debug_assert!(record.driven.is_some());
    // SAFETY: the caller's contract: `build` always gives the record its bridge state.
    unsafe { record.driven.as_ref().unwrap_unchecked() }
}

/// Builds a driven greenlet's record anew on `stack`, moving an unstarted one's closure there.
type Rebuild = unsafe fn(&RecordRef, Stack) -> RecordRef;

/// A greenlet running `f`, and the right to poll it: the unsafe half of `AsyncDef`.
pub(crate) struct DrivenGreenlet<'a, R> {
    record: RecordRef,
    rebuild: Rebuild,
    /// `f` borrows for `'a`; `R` may too. Also makes the type `!Send` and `!Sync`.
    _borrows: PhantomData<(&'a (), *mut R)>,
}

impl<'a, R> DrivenGreenlet<'a, R> {
    /// An unstarted greenlet that will run `f` on a stack of `stack_size` bytes, child of the
    /// running greenlet until it is first polled.
    pub(crate) fn new<F: FnOnce() -> R + 'a>(
        f: F,
        stack_size: usize,
    ) -> Result<DrivenGreenlet<'a, R>, StackError> {
        let stack = Stack::new(stack_size)?;
        // SAFETY: the greenlet never runs once `'a` may have ended: `DrivenGreenlet`'s drop
        // finishes it first (see the module docs), and `'a` outlives the `DrivenGreenlet`.
        let record = unsafe { build::<R, F>(stack, f, getcurrent()) };
        Ok(DrivenGreenlet {
            record,
            rebuild: rebuild::<R, F>,
            _borrows: PhantomData,
        })
    }

    /// Moves the unstarted greenlet to a stack of `stack_size` bytes.
    ///
    /// # Panics
    ///
    /// If the greenlet has started.
    pub(crate) fn resize(&mut self, stack_size: usize) -> Result<(), StackError> {
        assert!(
            self.record.state.get() == State::Unstarted,
            "awaitlet: the stack size of an async_def can only be set before it is first polled"
        );
        let stack = Stack::new(stack_size)?;
        // SAFETY: `rebuild` was made for this greenlet's closure and outcome types, and the
        // greenlet is unstarted.
        self.record = unsafe { (self.rebuild)(&self.record, stack) };
        Ok(())
    }

    /// True once `f` suspended in `awaitlet`.
    pub(crate) fn awaited(&self) -> bool {
        driven_state(&self.record).awaited.get()
    }

    /// Runs `f` until it waits on a pending future (`Pending`) or finishes (`Ready`).
    ///
    /// # Panics
    ///
    /// Resumes `f`'s panic; panics when polled after finishing, and on the misuse described
    /// in the module docs.
    #[inline(always)]
    pub(crate) fn poll(&mut self, cx: &mut Context<'_>) -> Poll<R> {
        let me = current_record_held(&self.record);
        let target = RecordRef::as_ptr(&self.record);
        let record = &*self.record;
        // SAFETY: `build` made the record.
        let driven = unsafe { driven_state_unchecked(record) };
        let resumable = record.state.get() != State::Dead
            && driven.parked.get()
            && driven.parented.get() == me
            && driven.poller.get().is_null();
        if !resumable && let Some(finished) = self.prepare(me) {
            return finished;
        }
        record.await_cx.set(cx as *mut Context<'_> as *mut ());
        driven.poller.set(me);
        // SAFETY: the running greenlet's record is alive.
        let driving = unsafe { &(*me).driving };
        // Put back afterwards, not cleared: a poll made from code that runs while `me` drops
        // another `AsyncDef` (a trace hook's, say) must not cut that link.
        let outer_driving = driving.replace(target);
        let word = protocol_word(sender_is_plain(me));
        // SAFETY: `me` runs; the target is unstarted or suspended in `awaitlet`, awaiting a
        // `Resume` (zero-sized: any untagged word), and our record reference keeps it alive.
        let (word, origin) = unsafe { switch_to::<Yielded>(me, target, word) };
        driving.set(outer_driving);
        driven.poller.set(ptr::null());
        // A greenlet suspending in `awaitlet` checked the trace hook before sending 0 (see
        // `SETTLE`), and left the context taken out of its record; a finishing one leaves the
        // trace hook to us, off its entry function's path.
        let plain = word == 0 && origin == target;
        if plain && record.state.get() == State::Active {
            debug_assert!(record.await_cx.get().is_null());
            return Poll::Pending;
        }
        // Taken (null) while the greenlet is inside a future's poll with it.
        let cx_in_use = record.await_cx.replace(ptr::null_mut()).is_null();
        if plain {
            if trace::is_set() {
                return self.resumed(word, origin, me, cx_in_use);
            }
            // SAFETY: it finished: its final switch handed us its self-reference, and ours
            // remains.
            unsafe { release_finished_held(origin) };
            return self.take_outcome();
        }
        self.resumed(word, origin, me, cx_in_use)
    }

    /// Readies a poll that the fast path cannot start; returns the outcome if `f` is finished.
    #[cold]
    fn prepare(&self, me: *const Record) -> Option<Poll<R>> {
        let record = &*self.record;
        let driven = driven_state(record);
        // Dropping the old parent below may run code (kill it, say), which may change this
        // greenlet's state: the checks run again after it.
        loop {
            if let Some(ready) = self.prepare_once(me, record, driven) {
                return ready;
            }
        }
    }

    /// One round of [`Self::prepare`]: `Some` once the poll may go on (`Some(None)`) or is
    /// answered (`Some(Some(_))`), `None` after a re-parenting that ran code.
    fn prepare_once(
        &self,
        me: *const Record,
        record: &Record,
        driven: &Driven,
    ) -> Option<Option<Poll<R>>> {
        if record.state.get() == State::Dead {
            return Some(Some(self.take_outcome()));
        }
        assert!(
            RecordRef::as_ptr(&self.record) != me && driven.poller.get().is_null(),
            "awaitlet: an AsyncDef was polled from inside its own function"
        );
        assert!(
            driven.parked.get(),
            "awaitlet: an AsyncDef cannot be polled: its function is suspended in a greenlet \
             switch, not in awaitlet (something other than the AsyncDef resumed the greenlet \
             polling it)"
        );
        if driven.parented.get() != me {
            // SAFETY: the running greenlet is alive.
            let poller = unsafe { handle_from_raw(me) };
            let mut ancestor = Some(poller.clone());
            while let Some(candidate) = ancestor {
                assert!(
                    RecordRef::as_ptr(&candidate.record) != RecordRef::as_ptr(&self.record),
                    "awaitlet: an AsyncDef was polled from a greenlet its own function started"
                );
                ancestor = candidate.parent();
            }
            // Rule 79: the greenlet's parent is the one driving it.
            let previous = record.parent.replace(Some(poller));
            driven.parented.set(me);
            drop(previous);
            return None;
        }
        Some(None)
    }

    /// The poller is back by some other way than a plain suspension: a trace hook, `f`
    /// finishing, a panic, or misuse.
    #[inline(never)]
    fn resumed(
        &mut self,
        word: usize,
        origin: *const Record,
        me: *const Record,
        cx_in_use: bool,
    ) -> Poll<R> {
        let target = RecordRef::as_ptr(&self.record);
        let record = &*self.record;
        // `f` is suspended in a greenlet switch outside `awaitlet` (which no poll resumes, see
        // `prepare`, and nothing else may), or in the poll or drop of another `AsyncDef`, which
        // can now never go on: take its key, and those of the greenlets it drives, off the fast
        // path of any switch (the slow path refuses them, see `resumable`).
        clear_driven_keys(record);
        if cx_in_use {
            eprintln!(
                "awaitlet: a greenlet switch resumed the greenlet polling an AsyncDef while \
                 the AsyncDef's function was inside a future's poll, holding that poll's \
                 context; the poll can neither return nor go on: aborting"
            );
            std::process::abort();
        }
        // SAFETY: `word` is what `origin`'s switch handed over, untouched; we await `Yielded`.
        match unsafe { receive_out_of_line::<Yielded>(word, origin, me) } {
            Ok(Yielded) if origin == target => {}
            Ok(Yielded) => panic!(
                "awaitlet: the greenlet polling an AsyncDef was resumed by another greenlet's \
                 end, not by the AsyncDef's function"
            ),
            Err(Ok(panic)) => raise_delivered(panic),
            Err(Err(error)) => panic!(
                "awaitlet: the greenlet polling an AsyncDef was resumed by a greenlet switch, \
                 not by the AsyncDef's function ({})",
                what_arrived(&error)
            ),
        }
        if self.record.state.get() == State::Dead {
            self.take_outcome()
        } else {
            Poll::Pending
        }
    }

    /// `f`'s outcome, once: its value, or its panic resumed.
    fn take_outcome(&self) -> Poll<R> {
        // SAFETY: the slot was made for an `Outcome<R>`; the record keeps it alive.
        let outcome = unsafe { (*self.slot()).take() };
        match outcome {
            Some(Ok(value)) => Poll::Ready(value),
            Some(Err(panic)) => resume_unwind(panic),
            None => panic!("awaitlet: an AsyncDef was polled after it completed"),
        }
    }

    fn slot(&self) -> *mut Outcome<R> {
        driven_state(&self.record).slot.get() as *mut Outcome<R>
    }
}

impl<R> Drop for DrivenGreenlet<'_, R> {
    fn drop(&mut self) {
        if self.record.state.get() == State::Active {
            cancel(&self.record);
        }
        // SAFETY: the greenlet is unstarted (the slot holds `None`) or dead; nothing else reads
        // the slot.
        match unsafe { (*self.slot()).take() } {
            // A value nobody took (say, `f` swallowed `Cancelled` and returned) is dropped as
            // any value is; a panic nobody raised is discarded without panicking the drop.
            Some(Ok(value)) => drop_quietly(value, "the value of a dropped AsyncDef's function"),
            Some(Err(panic)) => discard_panic(panic),
            None => {}
        }
    }
}

/// Finishes a started driven greenlet by throwing [`Cancelled`] into it until it is dead.
#[cold]
fn cancel(record: &RecordRef) {
    if RecordRef::as_ptr(record) == current_record() {
        eprintln!(
            "awaitlet: an AsyncDef was dropped by its own function while it ran; its frames \
             borrow what the drop may free, so it can neither go on nor unwind: aborting"
        );
        std::process::abort();
    }
    if cfg!(panic = "abort") {
        // Nothing can unwind: the function stays suspended forever, and its stack with it.
        // Sound for the reason `mem::forget` of the `AsyncDef` is: nothing polls or drops it
        // any more, so nothing may resume it (see `resumable`), and its stack is never freed.
        eprintln!(
            "awaitlet: an AsyncDef was dropped while its function was waiting, but this build \
             aborts on panic (panic = \"abort\") and cannot unwind the function: it is leaked, \
             with its stack, and never runs again"
        );
        std::mem::forget(record.clone());
        return;
    }
    let driven = driven_state(record);
    driven.cancelled.set(true);
    let canceller = current_record();
    driven.canceller.set(canceller);
    // SAFETY: the running greenlet's record is alive.
    let driving = unsafe { &(*canceller).driving };
    let outer_driving = driving.replace(RecordRef::as_ptr(record));
    // SAFETY: `record` is alive (the caller's reference).
    let victim = unsafe { handle_from_raw(RecordRef::as_ptr(record)) };
    let dropper = getcurrent();
    // A dropping greenlet that `f` started (or one of its descendants) has `f` up its parent
    // chain: made `f`'s parent, it would close a cycle, and parent chains must end at main
    // (rules 46-47). For the duration, the greenlet on its chain whose parent is `f` gets
    // `f`'s own parent instead.
    let detached = child_on_chain(&dropper, record);
    let original_parent = record.parent.replace(Some(dropper));
    let reattach = detached.map(|child| {
        let previous = child.record.parent.replace(original_parent.clone());
        (child, previous)
    });
    while record.state.get() != State::Dead {
        let cancel = Payload::Panic(Box::new(Cancelled));
        match transfer_raw::<Yielded>(&victim, cancel) {
            Err(Ok(panic)) => {
                // A drop must not panic: report and go on cancelling.
                discard_panic(panic);
                eprintln!(
                    "awaitlet: a panic reached the greenlet dropping an AsyncDef; it was discarded"
                );
            }
            other => drop_quietly(
                other,
                "a value switched to the greenlet dropping an AsyncDef",
            ),
        }
    }
    driving.set(outer_driving);
    driven.canceller.set(ptr::null());
    if let Some((child, previous)) = reattach {
        // Released outside the borrow, like the stand-in below.
        let stand_in = child.record.parent.replace(previous);
        drop(stand_in);
    }
    let stand_in = record.parent.replace(original_parent);
    drop(stand_in);
    driven.parented.set(ptr::null());
    drop(victim);
}

/// The greenlet on `from`'s parent chain (`from` included) whose parent is `ancestor`, if
/// `ancestor` is on that chain.
fn child_on_chain(from: &Greenlet, ancestor: &RecordRef) -> Option<Greenlet> {
    let mut candidate = from.clone();
    loop {
        let parent = candidate.parent()?;
        if RecordRef::ptr_eq(&parent.record, ancestor) {
            return Some(candidate);
        }
        candidate = parent;
    }
}

/// Builds a driven greenlet's record for `f` on `stack`.
///
/// # Safety
///
/// As for [`build_record`]'s borrows.
unsafe fn build<R, F: FnOnce() -> R>(stack: Stack, f: F, parent: Greenlet) -> RecordRef {
    let driven = Driven::new();
    // The parent is the poller's to be: a first poll from it needs no re-parenting.
    driven.parented.set(RecordRef::as_ptr(&parent.record));
    let extra = Extra {
        slot: std::alloc::Layout::new::<Outcome<R>>(),
        driven,
    };
    // SAFETY: `driven_entry::<R, F>` starts a greenlet whose closure is an `F`, with a
    // `Resume`; the caller's contract covers the borrows.
    let record = unsafe {
        build_record::<Resume, F>(stack, f, driven_entry::<R, F>, parent, None, Some(extra))
    };
    // SAFETY: the slot is reserved for an `Outcome<R>`, uninitialised until now.
    unsafe { (driven_state(&record).slot.get() as *mut Outcome<R>).write(None) };
    record
}

/// A driven greenlet's stack starts here: runs `f`, leaves its outcome in the slot, and
/// switches to its poller (its parent) for the last time.
unsafe extern "C" fn driven_entry<R, F: FnOnce() -> R>(
    word: usize,
    data: *mut (),
    sender: *const crate::arch::Context,
) -> ! {
    // SAFETY: the contract of every entry function, and the poller sends a `Resume`.
    let (me, start, argument) = unsafe { begin::<Resume>(word, data, sender) };
    driven_state(&me.record).parked.set(false);
    let outcome = match argument {
        Ok(Resume) => {
            // SAFETY: the closure was written by `build_record` and is moved out exactly once.
            let run = unsafe { ptr::read(start.closure as *mut F) };
            catch_unwind(AssertUnwindSafe(run))
        }
        // SAFETY: the closure was never moved out.
        Err(panic) => Err(unsafe { refuse_start(start, panic) }),
    };
    let driven = driven_state(&me.record);
    // SAFETY: the slot was made for an `Outcome<R>` and holds `None`, which needs no drop.
    unsafe { (driven.slot.get() as *mut Outcome<R>).write(Some(outcome)) };
    let poller = driven.poller.get();
    if !poller.is_null() && driven.parented.get() == poller {
        me.record.mark_dead();
        // SAFETY: the poller is our parent (alive: our parent link holds it), suspended in
        // `DrivenGreenlet::poll` awaiting a `Yielded`, which is zero-sized: word 0. The poller
        // checks the trace hook itself after a final switch (see `SETTLE`).
        unsafe { final_switch(me, 0, poller) }
    }
    // Cancelled (the parent is the dropping greenlet), or re-parented by `set_parent`.
    finish(me, Ok(Yielded))
}

/// # Safety
///
/// `old` must be an unstarted driven greenlet whose closure is an `F` and outcome an `R`, with
/// no reference but the caller's.
unsafe fn rebuild<R, F: FnOnce() -> R>(old: &RecordRef, stack: Stack) -> RecordRef {
    let start = old
        .start
        .take()
        .expect("an unstarted greenlet has its closure");
    // SAFETY: the closure is an `F`, never moved out; `old` no longer owns it (its start is
    // gone), so it is moved exactly once.
    let f = unsafe { ptr::read(start.closure as *mut F) };
    let parent = old
        .parent
        .borrow()
        .clone()
        .expect("a greenlet has a parent");
    // SAFETY: the caller's contract carries over to the same closure.
    unsafe { build::<R, F>(stack, f, parent) }
}

/// True when the running greenlet is a driven one (`f` of an `async_def`, or code it calls),
/// and not inside a future that `awaitlet` is polling (where, as in Python, the code runs on
/// behalf of the poller and cannot wait).
pub(crate) fn in_driven() -> bool {
    let running = running_record_if_any();
    if running.is_null() {
        // No greenlet machinery on this thread (yet, or any more): no `async_def` runs.
        return false;
    }
    // SAFETY: the running greenlet's record is alive.
    let record = unsafe { &*running };
    record.driven.as_ref().is_some_and(|driven| {
        let polling_a_future = record.await_cx.get().is_null() && !driven.poller.get().is_null();
        !polling_a_future
    })
}

/// Why [`await_in_driven`] did not wait (the future is dropped).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NotAwaited {
    /// Not in a driven greenlet, or inside a future that `awaitlet` is polling.
    NoContext,
    /// The greenlet's future was dropped, and this future was not ready at once.
    Cancelled,
    /// The thread is unwinding from a panic, and this future was not ready at once.
    Unwinding,
}

/// Waits for `fut` inside the running driven greenlet: polls it with its poller's context and
/// suspends to the poller while it is pending.
///
/// The poll's context is taken out of the record while `fut` is polled with it, so that an
/// `awaitlet` inside `fut` finds none (rule 73), and put back when `fut` is ready or panics.
/// After a `Pending` it stays out: the poller, which would clear it once back, finds it cleared
/// (with a trace hook set it is put back, and the poller takes it out itself).
///
/// Once the greenlet is cancelled, `fut` is polled once with a waker that does nothing: a
/// future ready at once still gives its value (cleanup that need not wait still runs), a
/// pending one gives [`NotAwaited::Cancelled`].
///
/// # Panics
///
/// Resumes a panic from `fut`, or one thrown into the greenlet while it waits; panics when the
/// greenlet runs outside its future's poll (resumed by a greenlet switch).
#[inline(always)]
pub(crate) fn await_in_driven<F: Future>(fut: F) -> Result<F::Output, NotAwaited> {
    let me = running_record_if_any();
    if me.is_null() {
        // No greenlet machinery on this thread (yet, or any more, in a thread-local's
        // destructor at thread exit): not inside `async_def`.
        return Err(NotAwaited::NoContext);
    }
    // SAFETY: the running greenlet's record is alive as long as it runs.
    let record = unsafe { &*me };
    let mut cx = record.await_cx.get();
    if cx.is_null() {
        // `fut` moves: its address never leaves this function, so a future that is ready at
        // once can live in registers.
        return without_context(record, fut);
    }
    let mut fut = pin!(fut);
    loop {
        let borrowed = BorrowedContext::take(record, cx);
        // SAFETY: a non-null `await_cx` is the poll in progress's, valid until its poller is
        // back, which (see `DrivenGreenlet::resumed`) cannot happen while it is taken.
        let polled = fut.as_mut().poll(unsafe { &mut *(cx as *mut Context<'_>) });
        if let Poll::Ready(output) = polled {
            drop(borrowed);
            return Ok(output);
        }
        if std::thread::panicking() {
            // A function that is unwinding cannot suspend (see `Greenlet`'s "Panics and
            // switches"): its pending future is given up, as a cancelled wait's is.
            drop(borrowed);
            return Err(NotAwaited::Unwinding);
        }
        // Abandoned we cannot be (the `DrivenGreenlet` holds a reference): only the trace hook
        // can call for the poller's bookkeeping.
        let tracing = trace::is_set();
        if tracing {
            drop(borrowed);
        } else {
            // A plain wait leaves the context taken: the poller, which would take it out
            // next, finds it so (see `DrivenGreenlet::poll`).
            std::mem::forget(borrowed);
        }
        // SAFETY: only a driven greenlet's record holds a context to poll with.
        let driven = unsafe { driven_state_unchecked(record) };
        driven.awaited.set(true);
        let poller = driven.poller.get();
        driven.parked.set(true);
        let word = protocol_word(!tracing);
        // The poller is suspended in `DrivenGreenlet::poll`, awaiting a `Yielded` (zero-sized:
        // any untagged word), alive while it polls us. It left by the `switch_to` into us, so its
        // link is the terminator; ours, left as it is, is reached by no one: no link points into
        // our frames (see `arch::switch_unlinked`).
        // SAFETY: we run, and the poller meets `switch_to_unlinked`'s conditions (above).
        let (word, origin) = unsafe { switch_to_unlinked::<Resume>(me, poller, word) };
        driven.parked.set(false);
        // A 0 from the poller: it checked the trace hook and its own count (rule 43: one left
        // with only its own reference was abandoned, and `settle` kills it) before sending.
        let plain = word == 0 && origin == driven.poller.get();
        if !plain {
            // SAFETY: `word` is untouched; we await a `Resume`.
            resumed_otherwise(unsafe { receive_out_of_line::<Resume>(word, origin, me) });
        }
        cx = record.await_cx.get();
        if cx.is_null() {
            return Err(context_lost(record));
        }
    }
}

/// A poll's context taken out of a driven greenlet's record while a future is polled with it;
/// dropping this (also when the poll panics) puts it back, and forgetting it leaves it out.
struct BorrowedContext<'record> {
    record: &'record Record,
    cx: *mut (),
}

impl BorrowedContext<'_> {
    #[inline(always)]
    fn take(record: &Record, cx: *mut ()) -> BorrowedContext<'_> {
        record.await_cx.set(ptr::null_mut());
        BorrowedContext { record, cx }
    }
}

impl Drop for BorrowedContext<'_> {
    #[inline(always)]
    fn drop(&mut self) {
        self.record.await_cx.set(self.cx);
    }
}

/// Raises what a waiting `awaitlet` received instead of a plain resumption.
#[cold]
fn resumed_otherwise(received: super::core::Received<Resume>) {
    match received {
        Ok(Resume) => {}
        Err(Ok(panic)) => raise_delivered(panic),
        Err(Err(error)) => panic!(
            "awaitlet: a greenlet waiting in awaitlet was resumed by a greenlet switch instead \
             of its AsyncDef's poll ({})",
            what_arrived(&error)
        ),
    }
}

/// What a switch that resumed one end of the bridge's protocol delivered, in public terms (the
/// protocol's own value types are private, so the switch's error would name them).
fn what_arrived(error: &super::SwitchError) -> String {
    match error {
        super::SwitchError::WrongType { found, .. } => format!("it sent a value of type {found}"),
        super::SwitchError::Exited(exit) => format!("it delivered {exit}"),
        _ => "it delivered nothing".to_string(),
    }
}

/// `awaitlet` finds no context to poll with: once cancelled, `fut` is polled once with a waker
/// that does nothing; otherwise as [`context_lost`].
#[cold]
fn without_context<F: Future>(record: &Record, fut: F) -> Result<F::Output, NotAwaited> {
    match context_lost(record) {
        NotAwaited::Cancelled => {
            match pin!(fut).poll(&mut Context::from_waker(std::task::Waker::noop())) {
                Poll::Ready(output) => Ok(output),
                Poll::Pending => Err(NotAwaited::Cancelled),
            }
        }
        no_context => Err(no_context),
    }
}

/// Why the running greenlet has no context to poll with: not a driven greenlet, inside a future
/// that `awaitlet` polls, or cancelled. A waiting `awaitlet` resumed without a context (only
/// possible once cancelled) gives up its future, which was pending, as a cancelled wait does.
///
/// # Panics
///
/// When the greenlet runs outside its `AsyncDef`'s poll (resumed by a greenlet switch).
#[cold]
fn context_lost(record: &Record) -> NotAwaited {
    let Some(driven) = &record.driven else {
        return NotAwaited::NoContext;
    };
    if !driven.poller.get().is_null() {
        // A poll is in progress: its context is taken by a future `awaitlet` is polling.
        return NotAwaited::NoContext;
    }
    if driven.cancelled.get() {
        return NotAwaited::Cancelled;
    }
    panic!(
        "awaitlet: awaitlet was called while its AsyncDef is not being polled (the greenlet was \
         resumed by a greenlet switch)"
    )
}
