//! A minimal asymmetric coroutine straight on the arch and stack layers.
//!
//! Not part of the public API (hidden from the docs, exempt from semver): it exists so the
//! engine itself can be tested and benchmarked without the greenlet machinery on top, and
//! measured side by side with other crates' equally bare coroutines. Use [`crate::Greenlet`] and
//! [`crate::async_def`] instead.
//!
//! A [`Fiber`] runs a closure on its own [`Stack`]. [`Fiber::resume`] switches in with a word;
//! inside, [`Suspender::suspend`] switches back out with a word. A panic in the closure is caught
//! at the root of the fiber's stack and handed to the resumer as a value. Dropping a suspended
//! fiber unwinds its stack (its destructors run) before the stack goes back to the pool.
//!
//! ```text
//!   resumer's stack                       fiber's stack
//!   resume(v) --- switch(&message) ---->  entry: closure(&suspender, v)
//!                                           ... suspend(w)
//!   <- Suspended(w) <--- switch(&outcome) ---/
//!   resume(v2) -------------------------> ... suspend returns v2
//!   <- Returned(r) <--- switch_final ----- closure returned r
//! ```

use std::any::Any;
use std::cell::Cell;
use std::marker::PhantomData;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};

use crate::arch::{self, Context};
use crate::stack::Stack;

/// What a [`Fiber::resume`] comes back with.
#[derive(Debug)]
pub enum Resumed {
    /// The closure called [`Suspender::suspend`] with this word.
    Suspended(usize),
    /// The closure returned this word; the fiber is finished.
    Returned(usize),
    /// The closure panicked with this payload; the fiber is finished.
    Panicked(Box<dyn Any + Send>),
}

/// What the resumer hands the fiber on each switch in.
struct Message {
    value: usize,
    cancel: bool,
    caller: *const Context,
    own: *const Context,
}

/// The first switch in: the message plus the closure, moved onto the fiber's stack.
struct Start<F> {
    message: Message,
    closure: Cell<Option<F>>,
}

/// The panic payload that unwinds a fiber being dropped while suspended.
struct Cancelled;

/// The handle a fiber's closure uses to suspend itself.
pub struct Suspender {
    caller: Cell<*const Context>,
    own: Cell<*const Context>,
    _not_send: PhantomData<*mut ()>,
}

impl Suspender {
    /// Switches back to the resumer, which sees [`Resumed::Suspended`]`(value)`; returns the word
    /// of the next [`Fiber::resume`].
    pub fn suspend(&self, value: usize) -> usize {
        let outcome = Resumed::Suspended(value);
        // SAFETY: `own` is this fiber's context and `caller` the suspended resumer, both kept
        // valid by `Fiber::resume` until the next switch back in.
        let message = unsafe {
            let received = arch::switch(
                &outcome as *const Resumed as usize,
                &*self.own.get(),
                &*self.caller.get(),
            );
            &*(received as *const Message)
        };
        self.caller.set(message.caller);
        self.own.set(message.own);
        if message.cancel {
            resume_unwind(Box::new(Cancelled));
        }
        message.value
    }
}

/// A closure running on its own stack (see the [module docs](self)).
pub struct Fiber<F> {
    context: Context,
    stack: Stack,
    closure: Option<F>,
    state: State,
    _not_send: PhantomData<*mut ()>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Unstarted,
    Suspended,
    Finished,
}

impl<F: FnOnce(&Suspender, usize) -> usize> Fiber<F> {
    /// A fiber that will run `closure` on `stack` at its first resume.
    pub fn new(stack: Stack, closure: F) -> Fiber<F> {
        // SAFETY: the stack's top region is ours, aligned, and lives as long as the fiber.
        let context = unsafe {
            arch::init(
                stack.top(),
                stack.bottom(),
                entry::<F>,
                std::ptr::null_mut(),
            )
        };
        Fiber {
            context,
            stack,
            closure: Some(closure),
            state: State::Unstarted,
            _not_send: PhantomData,
        }
    }
}

impl<F> Fiber<F> {
    /// True once the closure has returned or panicked.
    pub fn is_finished(&self) -> bool {
        self.state == State::Finished
    }

    /// Switches into the fiber with `value` and runs it until it suspends, returns or panics.
    ///
    /// # Panics
    ///
    /// If the fiber is finished.
    pub fn resume(&mut self, value: usize) -> Resumed {
        self.switch_in(value, false)
    }

    fn switch_in(&mut self, value: usize, cancel: bool) -> Resumed {
        let caller = Context::for_thread_stack();
        let message = Message {
            value,
            cancel,
            caller: &caller,
            own: &self.context,
        };
        let outcome = match self.state {
            State::Finished => panic!("resumed a finished fiber"),
            State::Unstarted => {
                let start = Start {
                    message,
                    closure: Cell::new(self.closure.take()),
                };
                // SAFETY: the fiber is unstarted and `start` outlives the switch (the entry
                // function moves the closure out before it first switches back).
                unsafe { arch::switch(&start as *const Start<F> as usize, &caller, &self.context) }
            }
            // SAFETY: the fiber is suspended in `Suspender::suspend`, which reads `message`
            // before anything else runs on our stack.
            State::Suspended => unsafe {
                arch::switch(&message as *const Message as usize, &caller, &self.context)
            },
        };
        // SAFETY: the fiber handed us a pointer to a `Resumed` on its stack, which stays intact
        // until we switch in again (or, after its final switch, until we release the stack).
        let outcome = unsafe { std::ptr::read(outcome as *const Resumed) };
        self.state = match outcome {
            Resumed::Suspended(_) => State::Suspended,
            Resumed::Returned(_) | Resumed::Panicked(_) => State::Finished,
        };
        outcome
    }

    /// Finishes the fiber (unwinding it if suspended) and gives its stack back.
    pub fn into_stack(mut self) -> Stack {
        self.cancel();
        self.state = State::Finished;
        let this = std::mem::ManuallyDrop::new(self);
        // SAFETY: `this` is never used or dropped again; we move its stack and closure out.
        unsafe {
            drop(std::ptr::read(&this.closure));
            std::ptr::read(&this.stack)
        }
    }

    fn cancel(&mut self) {
        if self.state == State::Suspended {
            match self.switch_in(0, true) {
                Resumed::Panicked(payload) if payload.is::<Cancelled>() => {}
                Resumed::Panicked(payload) => resume_unwind(payload),
                Resumed::Returned(_) => {}
                Resumed::Suspended(_) => {
                    // Its frames are live on a stack we are about to free: nothing safe remains.
                    eprintln!(
                        "awaitlet: a fiber caught its cancellation and suspended again; aborting"
                    );
                    std::process::abort();
                }
            }
        }
    }
}

impl<F> Drop for Fiber<F> {
    fn drop(&mut self) {
        self.cancel();
    }
}

unsafe extern "C" fn entry<F: FnOnce(&Suspender, usize) -> usize>(arg: usize, _data: *mut ()) -> ! {
    // SAFETY: the first switch in passes a `Start<F>` that outlives this read.
    let start = unsafe { &*(arg as *const Start<F>) };
    let closure = start.closure.take();
    let suspender = Suspender {
        caller: Cell::new(start.message.caller),
        own: Cell::new(start.message.own),
        _not_send: PhantomData,
    };
    let value = start.message.value;
    let outcome = match catch_unwind(AssertUnwindSafe(|| {
        let closure = closure.expect("fiber started without its closure");
        closure(&suspender, value)
    })) {
        Ok(result) => Resumed::Returned(result),
        Err(payload) => Resumed::Panicked(payload),
    };
    // SAFETY: `caller` is the suspended resumer; `outcome` stays on this stack, which is not
    // released before the resumer has read it.
    unsafe {
        arch::switch_final(
            &outcome as *const Resumed as usize,
            &*suspender.caller.get(),
        )
    }
}
