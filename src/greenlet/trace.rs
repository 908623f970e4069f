//! The per-thread trace hook: told of every switch and throw, in the greenlet receiving it.

use std::any::Any;
use std::cell::RefCell;
use std::panic::{AssertUnwindSafe, catch_unwind};

use super::Greenlet;
use super::core::{Record, handle_from_raw, set_tracing, tracing};

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
pub type TraceHook = Box<dyn FnMut(TraceEvent, &Greenlet, &Greenlet)>;

thread_local! {
    static HOOK: RefCell<Option<TraceHook>> = const { RefCell::new(None) };
}

/// Sets this thread's trace hook (`None` removes it) and returns the previous one.
///
/// The hook runs in the greenlet that receives each switch, right after the switch. If it
/// panics, it is removed and the panic continues in that greenlet, as if thrown there.
///
/// ```
/// use awaitlet::greenlet::{TraceEvent, settrace};
/// use awaitlet::Greenlet;
/// use std::{cell::RefCell, rc::Rc};
///
/// let events = Rc::new(RefCell::new(Vec::new()));
/// let log = Rc::clone(&events);
/// settrace(Some(Box::new(move |event, _origin, _target| log.borrow_mut().push(event))));
/// Greenlet::new(|()| ()).switch::<(), ()>(()).unwrap();
/// settrace(None);
/// // The start, then the return to main.
/// assert_eq!(*events.borrow(), [TraceEvent::Switch, TraceEvent::Switch]);
/// ```
pub fn settrace(hook: Option<TraceHook>) -> Option<TraceHook> {
    set_tracing(hook.is_some());
    HOOK.with(|slot| slot.replace(hook))
}

/// True while a hook is set.
#[inline(always)]
pub(super) fn is_set() -> bool {
    tracing()
}

/// Calls the hook, if any, for a switch from `origin` to `target`. A panic from the hook removes
/// it and is returned for the target to raise.
#[inline(always)]
pub(super) fn call(
    event: TraceEvent,
    origin: *const Record,
    target: *const Record,
) -> Result<(), Box<dyn Any + Send>> {
    if !tracing() {
        return Ok(());
    }
    call_hook(event, origin, target)
}

#[cold]
fn call_hook(
    event: TraceEvent,
    origin: *const Record,
    target: *const Record,
) -> Result<(), Box<dyn Any + Send>> {
    // Taken out while it runs, so it may call `settrace` or switch itself.
    let Some(mut hook) = HOOK
        .try_with(|slot| slot.borrow_mut().take())
        .ok()
        .flatten()
    else {
        return Ok(());
    };
    // SAFETY: both records are alive during the settling of the switch that calls this.
    let (origin, target) = unsafe { (handle_from_raw(origin), handle_from_raw(target)) };
    let outcome = catch_unwind(AssertUnwindSafe(|| hook(event, &origin, &target)));
    match outcome {
        Ok(()) => {
            // Put it back unless the hook replaced itself meanwhile.
            let _ = HOOK.try_with(|slot| {
                let mut slot = slot.borrow_mut();
                if slot.is_none() && tracing() {
                    *slot = Some(hook);
                }
            });
            Ok(())
        }
        Err(panic) => {
            set_tracing(false);
            Err(panic)
        }
    }
}
