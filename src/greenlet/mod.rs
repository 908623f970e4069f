//! Greenlets: stackful coroutines arranged in a tree, with Python greenlet's semantics.
//!
//! A [`Greenlet`] runs a closure on its own stack. Any greenlet of a thread can [`switch`] to
//! any other, handing it a value; the switch returns when something switches back. Each thread
//! has a *main* greenlet (the thread's own stack), created on first use; [`getcurrent`] names
//! the running one. Every greenlet but main has a parent, by default the greenlet that created
//! it. When a greenlet's closure returns, the value goes to its parent (wherever the parent is
//! suspended); when it panics, the panic continues in the parent.
//!
//! ```text
//!            main  (the thread's stack)
//!           /    \
//!      reader    writer          reader.switch(x) runs reader until it switches elsewhere;
//!        |                       when reader's closure returns, main's pending switch
//!      parser                    returns that value.
//! ```
//!
//! ```
//! use awaitlet::{Greenlet, getcurrent};
//!
//! let main = getcurrent();
//! let doubler = Greenlet::new(move |first: u32| {
//!     // Hand a value back to main; resume when main switches here again.
//!     let second: u32 = main.switch(first * 2).unwrap();
//!     second * 2 // returning ends the greenlet; main receives this
//! });
//! let a: u32 = doubler.switch(10u32).unwrap();
//! let b: u32 = doubler.switch(a + 1).unwrap();
//! assert_eq!((a, b), (20, 42));
//! assert!(doubler.is_dead());
//! ```
//!
//! # From Python's greenlet to Rust
//!
//! | Python | Rust |
//! |---|---|
//! | `greenlet(run, parent)` | [`Greenlet::new`], [`Greenlet::builder`] |
//! | `g.switch(*args, **kwargs)` | [`Greenlet::switch`]`(value)`: one value of any `'static` type (a tuple for several) |
//! | an exception | a panic; its payload crosses greenlets unchanged |
//! | `g.throw(typ, val, tb)` | [`Greenlet::throw`]`(payload)` |
//! | `GreenletExit` | [`GreenletExit`], a panic payload that a dying greenlet turns into a value |
//! | `greenlet.error` for cross-thread switches | a compile error: `Greenlet` is `!Send` and `!Sync` |
//! | `TypeError` for a wrong argument count | [`SwitchError::WrongType`], carrying the value |
//! | `g.dead`, `bool(g)` | [`Greenlet::is_dead`], [`Greenlet::is_active`] |
//! | `g.parent = p` | [`Greenlet::set_parent`] |
//! | `greenlet.settrace(cb)` | [`settrace`] |
//!
//! [`switch`]: Greenlet::switch

mod core;
mod trace;

use std::any::Any;
use std::borrow::Cow;
use std::fmt;
use std::rc::Rc;

use crate::stack::{DEFAULT_STACK_SIZE, Stack, StackError};
pub use trace::{TraceEvent, TraceHook, settrace};

use self::core::{Payload, Record, State};

/// A handle to a greenlet. Cloning makes another handle to the same greenlet; handles compare
/// and hash by identity.
///
/// `Greenlet` is neither `Send` nor `Sync`: a greenlet belongs to the thread that made it.
///
/// ```compile_fail
/// fn assert_send<T: Send>() {}
/// assert_send::<awaitlet::Greenlet>();
/// ```
///
/// ```compile_fail
/// fn assert_sync<T: Sync>() {}
/// assert_sync::<awaitlet::Greenlet>();
/// ```
pub struct Greenlet {
    record: Rc<Record>,
}

/// The running greenlet of this thread (the thread's main greenlet when no other runs).
///
/// ```
/// let here = awaitlet::getcurrent();
/// assert!(here.is_main());
/// assert_eq!(here, awaitlet::Greenlet::current());
/// ```
pub fn getcurrent() -> Greenlet {
    let current = core::current_record();
    // SAFETY: the running greenlet is alive (its self-reference, or the thread, holds it).
    unsafe { core::handle_from_raw(current) }
}

/// Builds a greenlet with a parent, a stack size or a name other than the defaults.
///
/// ```
/// use awaitlet::Greenlet;
///
/// let worker = Greenlet::builder()
///     .name("worker")
///     .stack_size(256 * 1024)
///     .build(|n: u64| n + 1)?;
/// assert_eq!(worker.switch::<u64, u64>(41)?, 42);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Default)]
#[must_use = "a builder does nothing until `build` is called"]
pub struct Builder {
    parent: Option<Greenlet>,
    stack_size: Option<usize>,
    name: Option<Cow<'static, str>>,
}

impl Builder {
    /// The greenlet's parent (by default, the greenlet running `build`).
    pub fn parent(mut self, parent: &Greenlet) -> Builder {
        self.parent = Some(parent.clone());
        self
    }

    /// The size of the greenlet's stack in bytes (by default [`DEFAULT_STACK_SIZE`]).
    pub fn stack_size(mut self, bytes: usize) -> Builder {
        self.stack_size = Some(bytes);
        self
    }

    /// A name, shown by `Debug`.
    pub fn name(mut self, name: impl Into<Cow<'static, str>>) -> Builder {
        self.name = Some(name.into());
        self
    }

    /// Makes the greenlet. It does not run until something switches to it; the first value it
    /// receives is `run`'s argument, and `run`'s result goes to its parent.
    pub fn build<A, B, F>(self, run: F) -> Result<Greenlet, StackError>
    where
        A: 'static,
        B: 'static,
        F: FnOnce(A) -> B + 'static,
    {
        let stack = Stack::new(self.stack_size.unwrap_or(DEFAULT_STACK_SIZE))?;
        let parent = self.parent.unwrap_or_else(getcurrent);
        Ok(Greenlet {
            record: core::new_record(stack, run, parent, self.name),
        })
    }
}

impl Greenlet {
    /// A greenlet that will run `run`, child of the running greenlet, on a default-size stack.
    ///
    /// # Panics
    ///
    /// If no stack can be had (see [`StackError`]); [`Greenlet::builder`] returns that error
    /// instead.
    ///
    /// ```
    /// let shout = awaitlet::Greenlet::new(|word: &'static str| word.to_uppercase());
    /// assert_eq!(shout.switch::<_, String>("hey").unwrap(), "HEY");
    /// ```
    pub fn new<A, B, F>(run: F) -> Greenlet
    where
        A: 'static,
        B: 'static,
        F: FnOnce(A) -> B + 'static,
    {
        match Greenlet::builder().build(run) {
            Ok(greenlet) => greenlet,
            Err(error) => panic!("awaitlet: cannot create a greenlet: {error}"),
        }
    }

    /// A [`Builder`] for a greenlet with another parent, stack size or a name.
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// The running greenlet; the same as [`getcurrent`].
    pub fn current() -> Greenlet {
        getcurrent()
    }

    /// Suspends the running greenlet and resumes this one, handing it `value`; returns the value
    /// handed back by whatever switches to the running greenlet next.
    ///
    /// - An unstarted greenlet starts: `value` becomes its closure's argument.
    /// - A suspended greenlet's pending `switch` returns `value`.
    /// - Switching to the running greenlet returns `value` at once.
    /// - Switching to a dead greenlet goes to its nearest live ancestor instead (an unstarted
    ///   ancestor starts with `value`).
    ///
    /// # Errors
    ///
    /// [`SwitchError::WrongType`] when the value that comes back is not an `R` (it is in the
    /// error), or when an unstarted greenlet was sent a value that is not its argument type (it
    /// dies without running, and the value comes back to its parent in the error).
    /// [`SwitchError::Exited`] when a greenlet killed by [`GreenletExit`] ends and its parent is
    /// the one waiting here.
    ///
    /// # Panics
    ///
    /// Resumes a panic that is delivered here: one thrown with [`throw`](Greenlet::throw), or
    /// one that escaped a child greenlet.
    ///
    /// ```
    /// use awaitlet::{Greenlet, SwitchError};
    ///
    /// let echo = Greenlet::new(|text: String| text);
    /// // The greenlet returns a String; asking for a number keeps the String in the error.
    /// match echo.switch::<String, u32>("seven".to_string()) {
    ///     Err(SwitchError::WrongType { value, .. }) => {
    ///         assert_eq!(value.downcast_ref::<String>().unwrap(), "seven");
    ///     }
    ///     other => panic!("{other:?}"),
    /// }
    /// ```
    #[inline(always)]
    pub fn switch<T: 'static, R: 'static>(&self, value: T) -> Result<R, SwitchError> {
        core::transfer_value(self, value)
    }

    /// Raises a panic carrying `payload` in this greenlet, where it is suspended; returns what
    /// is next switched to the running greenlet.
    ///
    /// - Not caught there, the panic kills the greenlet and continues in its parent (a
    ///   [`GreenletExit`] reaches the parent as [`SwitchError::Exited`] instead).
    /// - An unstarted greenlet dies without running: a `GreenletExit` goes to its parent as a
    ///   value, any other payload as a panic.
    /// - A dead greenlet passes it to its nearest live ancestor (a `GreenletExit` as a value).
    /// - Throwing into the running greenlet panics at once, `GreenletExit` included.
    ///
    /// ```
    /// use awaitlet::{Greenlet, SwitchError, getcurrent};
    /// use std::panic::{AssertUnwindSafe, catch_unwind};
    ///
    /// let main = getcurrent();
    /// let worker = Greenlet::new(move |()| {
    ///     let caught = catch_unwind(AssertUnwindSafe(|| main.switch::<(), ()>(())));
    ///     let message = *caught.unwrap_err().downcast::<&str>().unwrap();
    ///     format!("caught {message}")
    /// });
    /// worker.switch::<(), ()>(()).unwrap(); // runs until it switches back to main
    /// let said: String = worker.throw("stop").unwrap();
    /// assert_eq!(said, "caught stop");
    /// ```
    pub fn throw<R: 'static>(&self, payload: impl Any + Send) -> Result<R, SwitchError> {
        core::transfer(self, Payload::Panic(Box::new(payload)))
    }

    /// Throws a [`GreenletExit`] into this greenlet ([`throw`](Greenlet::throw)) and returns
    /// `Ok(())` once that exit comes back to the running greenlet (it does when the running
    /// greenlet is the parent, which is the usual case).
    ///
    /// # Errors
    ///
    /// When something else is switched back first (for instance, the greenlet caught the exit
    /// and returned a value), that value, in a [`SwitchError::WrongType`].
    ///
    /// ```
    /// use awaitlet::{Greenlet, getcurrent};
    ///
    /// let main = getcurrent();
    /// let sleeper = Greenlet::new(move |()| main.switch::<(), ()>(()));
    /// sleeper.switch::<(), ()>(()).unwrap();
    /// sleeper.kill().unwrap();
    /// assert!(sleeper.is_dead());
    /// ```
    pub fn kill(&self) -> Result<(), SwitchError> {
        match self.throw::<GreenletExit>(GreenletExit::default()) {
            Ok(_) | Err(SwitchError::Exited(_)) => Ok(()),
            Err(error) => Err(error),
        }
    }

    /// The parent: where this greenlet's result goes when it finishes. `None` for main.
    pub fn parent(&self) -> Option<Greenlet> {
        self.record.parent.borrow().clone()
    }

    /// Makes `parent` this greenlet's parent.
    ///
    /// # Errors
    ///
    /// [`ParentError::Cyclic`] when `parent` is this greenlet or one of its descendants, and
    /// [`ParentError::Main`] for a main greenlet, whose parent cannot be set. Either way nothing
    /// changes.
    ///
    /// ```
    /// use awaitlet::{Greenlet, ParentError};
    ///
    /// let a = Greenlet::new(|()| ());
    /// let b = Greenlet::builder().parent(&a).build(|()| ())?;
    /// assert_eq!(a.set_parent(&b), Err(ParentError::Cyclic));
    /// b.set_parent(&awaitlet::getcurrent())?;
    /// a.set_parent(&b)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn set_parent(&self, parent: &Greenlet) -> Result<(), ParentError> {
        if self.record.is_main {
            return Err(ParentError::Main);
        }
        let mut ancestor = Some(parent.clone());
        while let Some(candidate) = ancestor {
            if candidate == *self {
                return Err(ParentError::Cyclic);
            }
            ancestor = candidate.parent();
        }
        *self.record.parent.borrow_mut() = Some(parent.clone());
        Ok(())
    }

    /// True once the greenlet has finished (returned, panicked or been killed). Main is never
    /// dead while its thread runs.
    pub fn is_dead(&self) -> bool {
        self.state() == State::Dead
    }

    /// True while the greenlet is started and not finished: running or suspended (Python's
    /// `bool(g)`). Always true for main.
    pub fn is_active(&self) -> bool {
        self.state() == State::Active
    }

    /// True once the greenlet has been switched into (even if it has since finished).
    pub fn is_started(&self) -> bool {
        self.state() != State::Unstarted
    }

    /// True for a thread's main greenlet.
    pub fn is_main(&self) -> bool {
        self.record.is_main
    }

    /// The name given by [`Builder::name`] (`"main"` for main greenlets).
    pub fn name(&self) -> Option<&str> {
        self.record.name.as_deref()
    }

    fn state(&self) -> State {
        self.record.state.get()
    }
}

impl Clone for Greenlet {
    fn clone(&self) -> Greenlet {
        Greenlet {
            record: Rc::clone(&self.record),
        }
    }
}

impl Drop for Greenlet {
    /// Dropping the last handle to a started, suspended greenlet kills it first: see the
    /// [module docs](self#kill-on-drop).
    fn drop(&mut self) {
        // Two references: this handle and the greenlet's own (see `core`).
        if self.record.state.get() == State::Active
            && !self.record.is_main
            && Rc::strong_count(&self.record) == 2
            && Rc::as_ptr(&self.record) != core::current_record()
        {
            core::kill_abandoned(self);
        }
    }
}

impl PartialEq for Greenlet {
    fn eq(&self, other: &Greenlet) -> bool {
        Rc::ptr_eq(&self.record, &other.record)
    }
}

impl Eq for Greenlet {}

impl std::hash::Hash for Greenlet {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        Rc::as_ptr(&self.record).hash(state);
    }
}

impl fmt::Debug for Greenlet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state() {
            State::Unstarted => "unstarted",
            State::Active if Rc::as_ptr(&self.record) == core::current_record() => "running",
            State::Active => "suspended",
            State::Dead => "dead",
        };
        let mut debug = f.debug_struct("Greenlet");
        if let Some(name) = self.name() {
            debug.field("name", &name);
        }
        debug.field("state", &state).finish_non_exhaustive()
    }
}

/// The panic payload that kills a greenlet: thrown by [`Greenlet::kill`] and by dropping the
/// last handle to a suspended greenlet. Not caught, it ends the greenlet, and its parent
/// receives it as a value ([`SwitchError::Exited`]) rather than as a panic.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GreenletExit {
    /// Why the greenlet is being killed (empty for [`Greenlet::kill`]).
    pub message: Cow<'static, str>,
}

impl GreenletExit {
    /// The exit thrown when the last handle to a suspended greenlet is dropped.
    pub(crate) fn vanished() -> GreenletExit {
        GreenletExit {
            message: Cow::Borrowed("Killing the greenlet because all references have vanished."),
        }
    }
}

impl fmt::Display for GreenletExit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.message.is_empty() {
            f.write_str("GreenletExit")
        } else {
            write!(f, "GreenletExit: {}", self.message)
        }
    }
}

/// Why a [`Greenlet::switch`] returned no value of the type it asked for.
#[non_exhaustive]
pub enum SwitchError {
    /// The value that arrived is of another type; it is here, boxed.
    WrongType {
        /// The type that was asked for.
        expected: &'static str,
        /// The type that arrived (when known).
        found: &'static str,
        /// The value itself.
        value: Box<dyn Any>,
    },
    /// A greenlet ended by a [`GreenletExit`] handed it to this switch as its result.
    Exited(GreenletExit),
}

impl fmt::Debug for SwitchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SwitchError::WrongType {
                expected, found, ..
            } => f
                .debug_struct("WrongType")
                .field("expected", expected)
                .field("found", found)
                .finish_non_exhaustive(),
            SwitchError::Exited(exit) => f.debug_tuple("Exited").field(exit).finish(),
        }
    }
}

impl fmt::Display for SwitchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SwitchError::WrongType {
                expected, found, ..
            } => {
                write!(
                    f,
                    "a switch expected a value of type {expected} but received {found}"
                )
            }
            SwitchError::Exited(exit) => write!(f, "the greenlet ended by {exit}"),
        }
    }
}

impl std::error::Error for SwitchError {}

/// Why [`Greenlet::set_parent`] refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ParentError {
    /// The new parent is the greenlet itself or one of its descendants.
    Cyclic,
    /// A main greenlet has no parent and cannot be given one.
    Main,
}

impl fmt::Display for ParentError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ParentError::Cyclic => "cyclic parent chain",
            ParentError::Main => "cannot set the parent of a main greenlet",
        })
    }
}

impl std::error::Error for ParentError {}
