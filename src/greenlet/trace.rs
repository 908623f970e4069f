//! The per-thread trace hook: told of every switch and throw, in the greenlet receiving it.
//!
//! # Installed while it runs
//!
//! The slot ([`HOOK`]) keeps the hook while it runs: each call clones the [`Rc`] out of the slot
//! (a borrow that ends before the hook is entered) and calls the clone. So a switch the hook
//! makes is traced by the same hook, a call nested in the running one (Python greenlet does
//! the same); [`settrace`] inside the hook sees the installed hook and may replace it; and a
//! hook whose greenlet switched away and never comes back is still installed (that greenlet's
//! suspended frame holds a clone, the slot holds the hook). Nested calls are sound because the hook is an
//! `Fn`: every call, nested or not, borrows it shared; nothing ever takes `&mut` to it.
//!
//! The greenlets the hook is shown are views that do not count as handles (see [`view`]): a
//! greenlet suspended inside the hook keeps no handle to itself that way, so dropping its last
//! other handle kills it as usual (the kill unwinds the hook's call, and leaves the hook set),
//! and one that switches away inside the hook holding no other handle is abandoned (rule 43).
//!
//! The `tracing` flag in the switch state (`core::SWITCH`) mirrors whether the slot holds a
//! hook: [`settrace`] and a panicking hook's removal update both, so a switch with no hook set
//! reads one flag and calls nothing.

use std::any::Any;
use std::cell::RefCell;
use std::mem::ManuallyDrop;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::rc::Rc;

use super::core::{Record, RecordRef, set_tracing, tracing};
use super::{Greenlet, GreenletExit};

/// What a trace hook is told about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TraceEvent {
    /// A value was delivered: a switch, a greenlet's start, or a finished greenlet's result.
    Switch,
    /// A panic or error was delivered: a `throw`, or a panic leaving a dying greenlet.
    Throw,
}

/// A trace hook: called with the event, the origin and the target of each switch, running in
/// the target.
///
/// Shared (`Rc`) and called through `&` (`Fn`), because it stays installed while it runs and
/// is called again, nested, for every switch it makes itself. A hook that keeps state keeps it
/// in a `Cell` or `RefCell`, and holds no `RefCell` borrow across a switch (the nested call
/// would find it borrowed).
pub type TraceHook = Rc<dyn Fn(TraceEvent, &Greenlet, &Greenlet)>;

thread_local! {
    /// This thread's hook. Read only by cloning the `Rc` out, never borrowed while a hook runs.
    static HOOK: RefCell<Option<TraceHook>> = const { RefCell::new(None) };
}

/// Sets this thread's trace hook (`None` removes it) and returns the previous one.
///
/// The hook runs in the greenlet that receives each switch, right after the switch, and stays
/// installed while it runs (Python greenlet's `settrace`, rules 64-66):
///
/// - A switch or throw the hook makes is traced too: the hook is called again, nested, in the
///   greenlet that switch reaches.
/// - `settrace` called inside the hook returns the installed hook, the one running, and the
///   hook it installs is the one called from then on, nested calls included.
/// - A hook that switches away, from a greenlet that never comes back, stays installed. If
///   that greenlet is killed while suspended inside the hook ([`Greenlet::kill`], or dropping
///   its last handle: the greenlets the hook is shown are lent, not handles it holds), the
///   hook stays installed too: the [`GreenletExit`] unwinding through it is not the hook's
///   failure. Python resets its trace function in that case, as for any exception leaving it;
///   here a kill is the ordinary end of a suspended greenlet, so it leaves the hook alone.
/// - If the hook panics, with any other payload (a panic thrown into its greenlet while it is
///   suspended inside the hook included), the hook is removed (the slot is emptied, whichever
///   hook it holds by then) and the panic continues in that greenlet, as if thrown there.
///
/// During thread exit, once the thread's hook slot is gone, switches call no hook and
/// `settrace` drops the hook it is given and returns `None`.
///
/// ```
/// use awaitlet::greenlet::{TraceEvent, settrace};
/// use awaitlet::Greenlet;
/// use std::{cell::RefCell, rc::Rc};
///
/// let events = Rc::new(RefCell::new(Vec::new()));
/// let log = Rc::clone(&events);
/// settrace(Some(Rc::new(move |event, _origin, _target| log.borrow_mut().push(event))));
/// Greenlet::new(|()| ()).switch::<(), ()>(()).unwrap();
/// settrace(None);
/// // The start, then the return to main.
/// assert_eq!(*events.borrow(), [TraceEvent::Switch, TraceEvent::Switch]);
/// ```
///
/// A switch made inside the hook is traced by the same hook:
///
/// ```
/// use awaitlet::greenlet::{TraceEvent, settrace};
/// use awaitlet::{Greenlet, getcurrent};
/// use std::{cell::Cell, rc::Rc};
///
/// let calls = Rc::new(Cell::new(0));
/// let counted = Rc::clone(&calls);
/// settrace(Some(Rc::new(move |_event, _origin, _target| {
///     counted.set(counted.get() + 1);
///     if counted.get() == 1 {
///         // Nested: this self-switch calls the hook again before this call returns.
///         getcurrent().switch::<(), ()>(()).unwrap();
///     }
/// })));
/// getcurrent().switch::<(), ()>(()).unwrap();
/// assert!(settrace(None).is_some());
/// assert_eq!(calls.get(), 2);
/// ```
pub fn settrace(hook: Option<TraceHook>) -> Option<TraceHook> {
    let set = hook.is_some();
    match HOOK.try_with(|slot| slot.replace(hook)) {
        Ok(previous) => {
            set_tracing(set);
            previous
        }
        Err(_) => {
            // The thread is exiting and its slot is gone: the given hook was dropped with the
            // closure, and no hook is called from here on.
            set_tracing(false);
            None
        }
    }
}

/// This thread's trace hook, if one is set: a clone of it, the hook staying set (Python's
/// `greenlet.gettrace()`, rule 64).
///
/// Called inside the hook, it returns the hook that is running. During thread exit, once the
/// thread's hook slot is gone, it returns `None`.
///
/// ```
/// use awaitlet::greenlet::{gettrace, settrace};
/// use std::rc::Rc;
///
/// assert!(gettrace().is_none());
/// settrace(Some(Rc::new(|_event, _origin, _target| {})));
/// let hook = gettrace().expect("a hook is set");
/// // Still set: the same hook is returned when it is removed.
/// assert!(Rc::ptr_eq(&hook, &settrace(None).unwrap()));
/// assert!(gettrace().is_none());
/// ```
pub fn gettrace() -> Option<TraceHook> {
    HOOK.try_with(|slot| slot.borrow().clone()).ok().flatten()
}

/// True while a hook is set.
#[inline(always)]
pub(super) fn is_set() -> bool {
    tracing()
}

/// Calls the hook, if any, for a switch from `origin` to `target`. A panic from the hook removes
/// it and is returned for the target to raise.
///
/// # Safety
///
/// `target` must be the running greenlet, and `origin` must stay alive until this returns
/// (the caller holds a handle to it, or it is `target`).
#[inline(always)]
pub(super) unsafe fn call(
    event: TraceEvent,
    origin: *const Record,
    target: *const Record,
) -> Result<(), Box<dyn Any + Send>> {
    if !tracing() {
        return Ok(());
    }
    // SAFETY: the caller's contract.
    unsafe { call_hook(event, origin, target) }
}

/// A handle to the greenlet at `record` that is not counted as a reference, and so must never
/// be dropped: the hook is shown such views, and clones what it keeps.
///
/// # Safety
///
/// The record must stay alive as long as the view is used.
unsafe fn view(record: *const Record) -> ManuallyDrop<Greenlet> {
    // SAFETY: the record is alive (the caller's contract). `from_raw` takes over a counted
    // reference and this view owns none: sound because it is never dropped, so it never gives
    // back a reference, and it is only lent out as `&Greenlet`, never moved out.
    let record = unsafe { RecordRef::from_raw(record) };
    ManuallyDrop::new(Greenlet { record })
}

/// [`call`] with a hook set.
///
/// # Safety
///
/// As for [`call`].
#[cold]
unsafe fn call_hook(
    event: TraceEvent,
    origin: *const Record,
    target: *const Record,
) -> Result<(), Box<dyn Any + Send>> {
    // A clone: the slot keeps the hook while it runs. The borrow ends here, before the hook
    // runs, so the hook may call `settrace`, and nested calls clone it again.
    let hook = match HOOK.try_with(|slot| slot.borrow().clone()) {
        Ok(Some(hook)) => hook,
        Ok(None) => return Ok(()),
        Err(_) => {
            // Thread exit, the slot is gone: no hook from here on.
            set_tracing(false);
            return Ok(());
        }
    };
    // SAFETY: the target is the running greenlet: its record lives as long as its frames,
    // this one included (its own reference goes only once it has finished); the origin is
    // kept alive by the caller (the contract).
    let (origin, target) = unsafe { (view(origin), view(target)) };
    // The clone is dropped inside, so a panic from the destructors of a hook that replaced
    // itself counts as the hook's.
    let outcome = catch_unwind(AssertUnwindSafe(move || hook(event, &origin, &target)));
    match outcome {
        Ok(()) => Ok(()),
        // The greenlet running the hook was killed while suspended inside it: not the hook's
        // failure. The exit goes on unwinding that greenlet; the hook stays.
        Err(panic) if panic.is::<GreenletExit>() => Err(panic),
        Err(panic) => {
            // Rule 66: removed, whichever hook the slot holds by now.
            let removed = HOOK.try_with(|slot| slot.take()).ok().flatten();
            set_tracing(false);
            // Dropped with no borrow of the slot held; a panic from its destructors is
            // discarded, as the hook's own panic is the one the target raises.
            drop(catch_unwind(AssertUnwindSafe(move || drop(removed))));
            Err(panic)
        }
    }
}
