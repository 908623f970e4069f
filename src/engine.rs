//! A minimal asymmetric coroutine straight on the arch and stack layers.
//!
//! Not part of the public API (hidden from the docs, exempt from semver): it exists so the
//! engine itself can be tested and benchmarked without the greenlet machinery on top, and
//! measured side by side with other crates' equally bare coroutines. Use [`crate::Greenlet`]
//! instead.
//!
//! A [`Fiber`] runs a closure on its own [`Stack`]. [`Fiber::resume`] switches in with a word;
//! inside, [`Suspender::suspend`] switches back out with a word. A panic in the closure is caught
//! at the root of the fiber's stack and handed to the resumer as a value. Dropping a suspended
//! fiber unwinds its stack (its destructors run) before the stack goes back to the pool.
//!
//! ```text
//!   resumer's stack                       fiber's stack
//!   resume(v) ------ switch(v) -------->  entry: closure(&suspender, v)
//!                                           ... suspend(w)
//!   <- Suspended(w) <---- switch(w) -----/
//!   resume(v2) -------------------------> ... suspend returns v2
//!   <- Returned(r) <--- switch_final(r) -- closure returned r
//! ```

use std::any::Any;
use std::cell::Cell;
use std::marker::PhantomData;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::ptr::{self, NonNull};

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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Unstarted (its closure still in place, see [`Shared::closure`]) or suspended.
    Live,
    Returned,
    Panicked,
}

/// The panic of [`Fiber::resume`] on a finished fiber, out of the switch's way.
#[cold]
fn resumed_finished() -> ! {
    panic!("resumed a finished fiber")
}

/// What both sides of a fiber share. It lives near the top of the fiber's own stack (below the
/// closure), so it never moves while the `Fiber` handle does, and the words themselves travel
/// in registers.
///
/// The fiber's own context lies just below this block, [`arch::CONTEXT_BELOW_TOP`] bytes down
/// (see [`arch::context_below`]): reaching it takes an addition, not a load, which keeps a load
/// off the chain each switch waits on (the next stack pointer is found through it).
struct Shared {
    caller: Context,
    state: Cell<State>,
    cancel: Cell<bool>,
    panic: Cell<Option<Box<dyn Any + Send>>>,
    /// The closure, until the fiber starts and moves it out (or is dropped unstarted, which
    /// drops it); null after.
    closure: Cell<*mut u8>,
}

/// The panic payload that unwinds a fiber being dropped while suspended.
struct Cancelled;

#[cold]
fn cancelled() -> ! {
    resume_unwind(Box::new(Cancelled))
}

/// The handle a fiber's closure uses to suspend itself.
pub struct Suspender {
    shared: NonNull<Shared>,
    _not_send: PhantomData<*mut ()>,
}

impl Suspender {
    /// Switches back to the resumer, which sees [`Resumed::Suspended`]`(value)`; returns the word
    /// of the next [`Fiber::resume`].
    #[inline]
    pub fn suspend(&self, value: usize) -> usize {
        // SAFETY: `Shared` lives near the top of our own stack, which is running.
        let shared = unsafe { self.shared.as_ref() };
        // SAFETY: we are the running fiber, whose block `self.shared` is (`Fiber::new` put our
        // context just below it); `caller` is suspended in `Fiber::resume`, at no stack's root,
        // so no CFI reads its link.
        let (received, _) = unsafe {
            arch::switch_unlinked(
                value,
                arch::context_below(self.shared.as_ptr()),
                &shared.caller,
            )
        };
        if shared.cancel.get() {
            cancelled();
        }
        received
    }
}

/// A closure running on its own stack (see the [module docs](self)).
pub struct Fiber<F> {
    shared: NonNull<Shared>,
    /// Dropped by hand: a fiber that cannot be unwound (`panic = "abort"`) leaks it.
    stack: std::mem::ManuallyDrop<Stack>,
    _closure: PhantomData<F>,
}

impl<F: FnOnce(&Suspender, usize) -> usize> Fiber<F> {
    /// A fiber that will run `closure` on `stack` at its first resume.
    ///
    /// # Panics
    ///
    /// If the closure takes more than half of the stack (it lives at the stack's top).
    pub fn new(stack: Stack, closure: F) -> Fiber<F> {
        // Layout from the top down: the closure, `Shared`, the context and the first frame.
        let align = std::mem::align_of::<F>().max(16);
        let needed = std::mem::size_of::<F>() + align + std::mem::size_of::<Shared>() + 16;
        assert!(
            needed <= stack.size() / 2,
            "awaitlet: a fiber's closure takes {} bytes, more than its {}-byte stack can hold \
             with room to run; give it a larger stack",
            std::mem::size_of::<F>(),
            stack.size()
        );
        let closure_at = align_down(stack.top() as usize - std::mem::size_of::<F>(), align);
        let shared = align_down(closure_at - std::mem::size_of::<Shared>(), 16);
        // SAFETY: the stack is ours and unused; every region lies inside it, suitably aligned.
        unsafe {
            (closure_at as *mut F).write(closure);
            let context = arch::init(
                shared as *mut u8,
                stack.bottom(),
                entry::<F>,
                shared as *mut (),
            );
            debug_assert_eq!(context.as_ptr() as usize, shared - arch::CONTEXT_BELOW_TOP);
            (shared as *mut Shared).write(Shared {
                caller: Context::for_thread_stack(),
                state: Cell::new(State::Live),
                cancel: Cell::new(false),
                panic: Cell::new(None),
                closure: Cell::new(closure_at as *mut u8),
            });
        }
        Fiber {
            // SAFETY: just written, non-null.
            shared: unsafe { NonNull::new_unchecked(shared as *mut Shared) },
            stack: std::mem::ManuallyDrop::new(stack),
            _closure: PhantomData,
        }
    }
}

fn align_down(address: usize, align: usize) -> usize {
    address & !(align - 1)
}

impl<F> Fiber<F> {
    fn shared(&self) -> &Shared {
        // SAFETY: `Shared` lives at the top of the stack this fiber owns.
        unsafe { self.shared.as_ref() }
    }

    /// True once the closure has returned or panicked.
    pub fn is_finished(&self) -> bool {
        matches!(self.shared().state.get(), State::Returned | State::Panicked)
    }

    /// Switches into the fiber with `value` and runs it until it suspends, returns or panics.
    ///
    /// # Panics
    ///
    /// If the fiber is finished.
    #[inline]
    pub fn resume(&mut self, value: usize) -> Resumed {
        let shared = self.shared();
        if shared.state.get() != State::Live {
            resumed_finished();
        }
        // The fiber is unstarted or suspended in `Suspender::suspend`.
        // SAFETY: we run on the caller's stack (`caller`); `self.shared` is the fiber's block
        // (`Fiber::new` put its context just below it); both live on its stack, which we own.
        let (received, _) = unsafe {
            arch::switch_nested(
                value,
                &shared.caller,
                arch::context_below(self.shared.as_ptr()),
            )
        };
        // A fiber returns once, so that case stays inline too: it is half of a short life.
        match shared.state.get() {
            State::Live => Resumed::Suspended(received),
            State::Returned => Resumed::Returned(received),
            State::Panicked => self.panicked(),
        }
    }

    #[cold]
    fn panicked(&self) -> Resumed {
        Resumed::Panicked(
            self.shared()
                .panic
                .take()
                .expect("a panicked fiber keeps its payload"),
        )
    }

    /// Finishes the fiber (unwinding it if suspended) and gives its stack back.
    ///
    /// # Panics
    ///
    /// Aborts the process, with a message, for a suspended fiber in a build that aborts on
    /// panic (`panic = "abort"`): its frames cannot be unwound, so its stack cannot be given.
    pub fn into_stack(mut self) -> Stack {
        if !self.finish() {
            eprintln!(
                "awaitlet: a suspended fiber's stack was asked for, but this build aborts on \
                 panic (panic = \"abort\") and cannot unwind the fiber: aborting"
            );
            std::process::abort();
        }
        let this = std::mem::ManuallyDrop::new(self);
        // SAFETY: `this` is never used nor dropped again; the stack is moved out once.
        std::mem::ManuallyDrop::into_inner(unsafe { std::ptr::read(&this.stack) })
    }

    /// Brings the fiber to a finished state: drops an unstarted closure, unwinds a suspended one.
    ///
    /// False, having done nothing, for a suspended fiber in a build that aborts on panic
    /// (`panic = "abort"`): it cannot be unwound.
    fn finish(&mut self) -> bool {
        let shared = self.shared();
        match shared.state.get() {
            State::Returned | State::Panicked => {}
            State::Live if shared.closure.get().is_null() && cfg!(panic = "abort") => {
                return false;
            }
            State::Live if !shared.closure.get().is_null() => {
                shared.state.set(State::Returned);
                // SAFETY: the closure was written by `new` and never moved out (never started).
                unsafe {
                    std::ptr::drop_in_place(shared.closure.replace(ptr::null_mut()) as *mut F)
                };
            }
            State::Live => {
                shared.cancel.set(true);
                match self.resume(0) {
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
        true
    }
}

impl<F> Drop for Fiber<F> {
    #[inline]
    fn drop(&mut self) {
        // A finished fiber, the usual case, leaves nothing to do but return its stack.
        if !self.is_finished() && !self.finish() {
            // Sound: nothing can resume the fiber once its owner is gone, as after `mem::forget`.
            eprintln!(
                "awaitlet: a suspended fiber was dropped, but this build aborts on panic \
                 (panic = \"abort\") and cannot unwind it: its stack is leaked"
            );
            return;
        }
        // SAFETY: the stack is dropped once, here, and the fiber's frames are gone.
        unsafe { std::mem::ManuallyDrop::drop(&mut self.stack) }
    }
}

unsafe extern "C" fn entry<F: FnOnce(&Suspender, usize) -> usize>(
    arg: usize,
    data: *mut (),
    _sender: *const Context,
) -> ! {
    // SAFETY: `data` is the `Shared` block `Fiber::new` wrote near the top of this stack.
    let shared_at = unsafe { NonNull::new_unchecked(data.cast::<Shared>()) };
    // SAFETY: as above; it outlives this stack's use.
    let shared = unsafe { shared_at.as_ref() };
    // SAFETY: the closure was written by `Fiber::new` and is moved out exactly once, here.
    let closure = unsafe { std::ptr::read(shared.closure.replace(ptr::null_mut()) as *mut F) };
    let suspender = Suspender {
        shared: shared_at,
        _not_send: PhantomData,
    };
    let word = match catch_unwind(AssertUnwindSafe(|| closure(&suspender, arg))) {
        Ok(result) => {
            shared.state.set(State::Returned);
            result
        }
        Err(payload) => {
            shared.panic.set(Some(payload));
            shared.state.set(State::Panicked);
            0
        }
    };
    // SAFETY: `shared_at` is this fiber's block (`Fiber::new` put its context just below it);
    // the caller is suspended in `Fiber::resume`; nothing on this stack is needed again.
    unsafe {
        arch::switch_final(
            word,
            arch::context_below(shared_at.as_ptr()),
            &shared.caller,
        )
    }
}
