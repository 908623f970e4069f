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
//! | `greenlet.settrace(cb)`, `greenlet.gettrace()` | [`settrace`], [`gettrace`] |
//!
//! # Kill on drop
//!
//! Dropping the last handle to a started, suspended greenlet (not main) kills it on the spot:
//! a [`GreenletExit`] is thrown in, with the dropping greenlet as its parent until it dies, so
//! its stack unwinds and every destructor on it runs before `drop` returns; then its original
//! parent is restored and its stack goes back to the pool. A child's parent link and a running
//! greenlet's own reference count as handles: a greenlet with children (alive or finished, as
//! long as something holds them), or the running one, is not killed. Unstarted and dead
//! greenlets are freed without running any code (an unstarted one's closure is dropped).
//!
//! Reference counting has no cycle collector: a suspended greenlet whose own frames hold a
//! handle to one of its children (or to an `AsyncDef` it polled, whose greenlet it parents) is
//! kept alive by that child's parent link, so neither dropping its last handle nor the thread's
//! exit kills it, and it leaks with its stack. Drop such handles before suspending, or
//! [`kill`](Greenlet::kill) the greenlet explicitly.
//!
//! If the victim catches the exit and returns, its result is discarded. If the kill turns into
//! another panic, `drop` does not panic: one line goes to stderr (the panic hook has already
//! reported the panic itself). If the victim catches the exit and switches away without keeping
//! a handle to itself, its frames are live but nothing can resume it: a line goes to stderr and
//! the greenlet (with its stack) is leaked on purpose, as Python's greenlet does. If it keeps a
//! handle to itself first, it simply lives on.
//!
//! In a build that aborts on panic (`panic = "abort"`), nothing can be unwound. Dropping the
//! last handle to a suspended greenlet (at thread exit too) then leaks it, with its stack, and
//! writes one line to stderr; its destructors do not run. That is sound for the reason
//! `mem::forget` is: its frames stay where they are, on memory that is never freed. An
//! explicit [`throw`](Greenlet::throw) or [`kill`](Greenlet::kill) into a suspended greenlet
//! would have to unwind it: the process aborts, after a line that names what was delivered
//! and where. The crate learns the strategy from `cfg(panic = "abort")`, which Cargo sets for
//! every crate of a build whose profile says `panic = "abort"`.
//!
//! # Panics and switches
//!
//! Python saves the exception being handled per greenlet (rule 59). Rust cannot: the count of
//! panics in flight that [`std::thread::panicking`] reads belongs to the thread, and std offers
//! no way to save or restore it. A greenlet that switched away in the middle of an unwind
//! would leave it raised for every greenlet that runs next: their `MutexGuard`s would poison
//! mutexes, their guards would take the panic path, and any later panic would read as a panic
//! during a panic. So the rule here is: **a greenlet that is unwinding cannot switch away.**
//! While `std::thread::panicking()` is true, [`switch`](Greenlet::switch) and
//! [`throw`](Greenlet::throw) (and so [`kill`](Greenlet::kill)) send nothing and return
//! [`SwitchError::Unwinding`] with what they carried, and `awaitlet` does not suspend (see
//! the [bridge](crate::bridge#panics)).
//!
//! Three transfers still happen during an unwind, because control comes back to the unwinding
//! greenlet before anything else runs, so the count stays where it belongs: killing a greenlet
//! on drop (the dropping greenlet is the victim's parent until it dies, and the victim cannot
//! switch elsewhere meanwhile: it is unwinding too), dropping an `AsyncDef` (the same, with
//! [`Cancelled`]), and polling an `AsyncDef`, whose function runs as a call
//! from the poll. Code run that way sees `std::thread::panicking()` true, as any function
//! called from a destructor during an unwind does.
//!
//! ```
//! use awaitlet::{Greenlet, SwitchError, getcurrent};
//! use std::panic::{AssertUnwindSafe, catch_unwind};
//!
//! struct SwitchOnDrop(Greenlet);
//! impl Drop for SwitchOnDrop {
//!     fn drop(&mut self) {
//!         // Runs during the unwind: the switch is refused, and the value comes back.
//!         let refused = self.0.switch::<u32, ()>(7);
//!         assert!(matches!(refused, Err(SwitchError::Unwinding { .. })));
//!     }
//! }
//!
//! let main = getcurrent();
//! let worker = Greenlet::new(move |()| {
//!     let _guard = SwitchOnDrop(main);
//!     panic!("boom");
//! });
//! let outcome = catch_unwind(AssertUnwindSafe(|| worker.switch::<(), ()>(())));
//! assert!(outcome.is_err()); // the panic reached main, its parent
//! assert!(!std::thread::panicking());
//! ```
//!
//! # Memory
//!
//! A greenlet's record (its state, parent and name) and its closure live at the top of its own
//! stack, which comes from the thread's pool ([`crate::stack`]): creating, running and dropping
//! a greenlet allocates nothing once the pool is warm. The flip side: a finished greenlet keeps
//! its stack (virtual space, plus the pages it touched) until its last handle is dropped, and
//! only then does the stack go back to the pool. Drop handles to finished greenlets you no
//! longer need.
//!
//! # Threads
//!
//! A greenlet belongs to its thread: `Greenlet` is `!Send`, so a cross-thread switch does not
//! compile. When a thread exits, greenlets still suspended in its locals or its thread-locals
//! are killed as above (their destructors run) while the thread's greenlet machinery is still
//! there; it is torn down only after the last of them.
//!
//! # Rule map
//!
//! Python's greenlet (3.5) behaves by the numbered rules below (1-67), each observed on the
//! real thing; every row says what its rules cover, how they map to this crate, and the tests
//! that check them (files under `tests/`). Where Rust's model forces a difference, the row
//! says so; the bridge's rules (68-100) are mapped in [`crate::bridge`].
//!
//! | Rules | In Rust | Checked by |
//! |---|---|---|
//! | 1-5 (module surface, `__dict__`, pickling) | Python object model: no counterpart; the surface is [`Greenlet`], [`getcurrent`], [`GreenletExit`], [`settrace`], [`gettrace`] | — |
//! | 6 | parent defaults to the running greenlet | `greenlet_switch::parent_defaults_to_the_greenlet_running_at_construction` |
//! | 7-8 | `run` runs at the first switch, with the switched value | `greenlet_switch::run_is_not_called_at_construction`, `first_switch_passes_its_value_as_runs_argument` |
//! | 9-10 | `run` is given at construction and cannot be read or replaced: no counterpart | — |
//! | 11 | a first value of another type than `run`'s argument: the greenlet dies without running, its parent receives [`SwitchError::WrongType`] carrying the value | `greenlet_switch::starting_with_wrong_type_kills_without_running_and_returns_value`, `wrong_type_start_error_goes_to_the_parent_not_the_switcher` |
//! | 12 | any greenlet of the thread can be switched to | `greenlet_switch::any_active_greenlet_can_be_switched_to_without_call_stack_discipline`, `ping_pong_between_siblings` |
//! | 13-14 | one value of any `'static` type, delivered unchanged (several values: a tuple; none: `()`); another type than asked arrives as [`SwitchError::WrongType`] | `greenlet_switch::switched_values_arrive_unchanged`, `value_of_wrong_type_arrives_as_error_carrying_the_value`, `switched_values_are_moved_exactly_once`, `runs_return_value_is_delivered_as_is` |
//! | 15 | switching to the running greenlet returns the value | `greenlet_switch::switching_to_yourself_returns_the_value_at_once` |
//! | 16 | `run`'s result goes to the parent | `greenlet_switch::result_goes_to_the_parent_not_to_the_last_switcher` |
//! | 17 | a panic leaving `run` continues in the parent, same payload | `greenlet_switch::panic_in_run_kills_and_is_raised_in_the_parent_with_the_same_payload` |
//! | 18 | an uncaught [`GreenletExit`] reaches the parent as [`SwitchError::Exited`] (or as the value, if the parent asks for a `GreenletExit`) | `greenlet_model::results_panics_and_exits_reach_the_parent` (raised by the greenlet itself), `greenlet_throw::uncaught_thrown_greenlet_exit_is_returned_to_parent` (thrown into it) |
//! | 19 | the result walks past dead parents and starts unstarted ones | `greenlet_switch::result_walks_past_dead_parents`, `unstarted_parent_is_started_with_the_result_as_its_one_argument`, `panic_delivered_to_unstarted_parent_kills_it_without_running` |
//! | 20 | failing switches to a parent on another thread: impossible (`!Send`) | — |
//! | 21-23 | switching to a dead greenlet goes to its nearest live ancestor | `greenlet_switch::switch_to_dead_greenlet_returns_at_once_when_nearest_live_ancestor_is_caller`, `switch_to_dead_greenlet_resumes_a_suspended_ancestor`, `switch_to_dead_greenlet_starts_an_unstarted_ancestor_with_the_original_value` |
//! | 24 | a dead greenlet keeps its parent, which can be changed | `greenlet_switch::dead_greenlet_keeps_its_parent_and_reparenting_redirects_dead_switches` |
//! | 25 | [`Greenlet::throw`] raises any payload; returns what is next switched back | `greenlet_throw::throw_raises_the_same_payload_object_at_the_suspension_point`, `throw_returns_a_value_sent_by_a_third_greenlet` |
//! | 26 | argument errors of Python's `throw`: ruled out by its signature | — |
//! | 27-28 | an uncaught throw kills the target and goes to its parent | `greenlet_throw::uncaught_thrown_panic_kills_target_and_is_raised_in_parent`, `escaping_panic_goes_to_target_parent_not_thrower` |
//! | 29 | throw into an unstarted greenlet: it dies without running, and the payload goes to its parent | `greenlet_throw::panic_thrown_into_unstarted_is_raised_in_parent_without_running`, `panic_thrown_into_unstarted_goes_to_its_parent_not_thrower`, `greenlet_exit_thrown_into_unstarted_is_returned_without_running` |
//! | 30 | throw into a dead greenlet | `greenlet_throw::greenlet_exit_thrown_into_dead_is_returned_as_value`, `panic_thrown_into_dead_goes_to_suspended_live_ancestor` |
//! | 31 | throw into the running greenlet panics at once | `greenlet_throw::throw_into_current_raises_at_once_even_greenlet_exit` |
//! | 32-35, 38 | kill on drop (see above) | `greenlet_kill::dropping_unstarted_greenlet_drops_closure_without_running_it`, `dropping_last_handle_throws_vanished_greenlet_exit_synchronously`, `killer_is_victims_parent_during_kill_and_drop_resumes_killer`, `victim_returning_normally_after_exit_has_its_result_discarded`, `victim_storing_a_handle_to_itself_is_resurrected_and_resumable` |
//! | 36 | a kill that becomes another panic: reported on stderr, `drop` does not panic | `greenlet_kill::kill_turned_into_another_panic_is_reported_not_raised_from_drop` |
//! | 37 | a victim that switches away: reported on stderr and leaked | `greenlet_kill::victim_switching_away_without_handle_is_reported_and_leaked` |
//! | 39 | a victim that switches elsewhere: the drop returns when something switches back | `greenlet_kill::victim_switching_to_another_greenlet_resumes_killer_only_when_switched_back` |
//! | 40-41, 54 | **deliberate difference.** Python runs no code in a greenlet whose thread has exited (it only reads as dead), and was not seen killing greenlets at interpreter shutdown. Here a drop in another thread is impossible (`!Send`), and at thread exit suspended greenlets are killed, so their destructors run (see [Threads](#threads)). At process exit a greenlet is killed only if the handle holding it is dropped, by Rust's usual rules: locals of frames that [`std::process::exit`] abandons are not, and the main thread's thread-locals are destroyed at exit only where the platform runs their destructors (glibc does) | `greenlet_threads::suspended_greenlets_in_locals_are_unwound_once_when_thread_ends`, `greenlets_in_thread_local_destroyed_before_greenlet_state_are_unwound`, `stacks_of_greenlets_left_at_thread_exit_are_not_leaked` |
//! | 42 | a child keeps its parent alive | `greenlet_parent::suspended_parent_with_no_handles_left_still_receives_its_childs_result`, `suspended_child_whose_parent_died_delivers_to_nearest_live_ancestor` |
//! | 43 | a greenlet that drops its last handle to itself and switches: killed, its value still delivered | `greenlet_kill::value_switched_by_abandoned_greenlet_is_delivered_and_it_is_killed` |
//! | 44 | a parent must be a greenlet (the type says so); any greenlet may be one, whatever its state | `greenlet_parent::any_greenlet_can_be_a_parent_whatever_its_state` |
//! | 46-47 | a parent chain without main, deleting `parent`: ruled out by types (every parent chain ends at its thread's main; `set_parent` takes a greenlet) | — |
//! | 45 | [`ParentError::Cyclic`], old parent kept | `greenlet_parent::setting_self_as_parent_is_cyclic_and_changes_nothing`, `longer_cycles_are_detected_and_leave_the_old_parent` |
//! | 48 | main has no parent; [`ParentError::Main`] | `greenlet_parent::main_has_no_parent_and_cannot_be_given_one` |
//! | 49 | a running greenlet may reparent itself | `greenlet_parent::running_greenlet_reparents_itself_and_its_result_goes_to_the_new_parent` |
//! | 50-51 | [`getcurrent`]; one main greenlet per thread, made lazily | `greenlet_state::getcurrent_is_stable_and_names_the_running_greenlet`, `each_thread_has_its_own_main_greenlet` |
//! | 52-53 | cross-thread switches: a compile error (`!Send`, compile-fail doctests on [`Greenlet`]) | doctests |
//! | 55-56 | [`Greenlet::is_dead`], [`Greenlet::is_active`] through the lifecycle | `greenlet_state::lifecycle_flags_at_every_step` |
//! | 57-59 | frames, `repr`: Python-specific; `Debug` shows name and state. **Deliberate difference** for `exc_info` (59): std's panic count is per thread and cannot be saved, so a greenlet that is unwinding cannot switch away ([`SwitchError::Unwinding`], see [Panics and switches](#panics-and-switches)), which keeps every other greenlet's `std::thread::panicking()` false | `greenlet_state::debug_shows_name_and_state`; `soundness::a_greenlet_unwinding_cannot_switch_away_so_its_panic_stays_its_own`, `soundness::a_greenlet_unwinding_cannot_throw_or_kill` |
//! | 60-63 | `contextvars`: no counterpart in Rust (thread-locals are shared by a thread's greenlets) | — |
//! | 64-66 | [`settrace`], [`gettrace`]: per thread; `settrace` returns the previous hook, `gettrace` a clone of the one set; [`TraceEvent::Switch`] / [`TraceEvent::Throw`]; the hook ([`TraceHook`], a shared `Fn`) stays installed while it runs, so switches it makes are traced by nested calls and `settrace` inside it returns it; a panicking hook is removed and its panic raised in the target, except a [`GreenletExit`] killing the greenlet suspended inside it (Python resets its trace function then too) | `greenlet_trace::settrace_returns_the_previous_hook`, `switch_events_for_start_switches_and_return_name_origin_and_target`, `panicking_hook_is_removed_and_its_panic_raised_in_the_resumed_target`, `switches_made_inside_the_hook_are_traced`, `settrace_inside_the_hook_returns_the_hook`, `hook_survives_the_greenlet_running_it_being_killed`, `gettrace_returns_the_set_hook_and_leaves_it_set`; doctest on [`gettrace`] |
//! | 67 | `greenlet.error` cases: compile errors or internal | — |
//!
//! [`switch`]: Greenlet::switch

mod core;
mod driven;
mod trace;

pub use driven::Cancelled;
pub(crate) use driven::{DrivenGreenlet, NotAwaited, await_in_driven, in_driven};

use std::any::Any;
use std::borrow::Cow;
use std::fmt;

use crate::stack::{Stack, StackError};
pub use trace::{TraceEvent, TraceHook, gettrace, settrace};

use self::core::{Payload, RecordRef, State};

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
    record: RecordRef,
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

    /// The size of the greenlet's stack in bytes (by default the thread's
    /// [`default_stack_size`](crate::stack::default_stack_size)).
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
        let stack = Stack::new(
            self.stack_size
                .unwrap_or_else(crate::stack::default_stack_size),
        )?;
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
        if std::thread::panicking() {
            return Err(core::refuse_while_unwinding(value));
        }
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
        if std::thread::panicking() {
            return Err(core::refuse_while_unwinding(payload));
        }
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
        // The old parent is released after the borrow ends: dropping it may run code (a kill
        // on drop) that reads this link.
        let old_parent = self.record.parent.replace(Some(parent.clone()));
        if let Some(driven) = &self.record.driven {
            // The next poll makes its poller the parent again (rule 79).
            driven.parented.set(std::ptr::null());
        }
        drop(old_parent);
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

    /// True once the greenlet has been switched into, or has died: one killed, or thrown into,
    /// before it started counts as started, though its closure never ran.
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
            record: self.record.clone(),
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
            && RecordRef::count(&self.record) == 2
            && RecordRef::as_ptr(&self.record) != core::current_record()
        {
            core::kill_abandoned(self);
        }
    }
}

impl PartialEq for Greenlet {
    fn eq(&self, other: &Greenlet) -> bool {
        RecordRef::ptr_eq(&self.record, &other.record)
    }
}

impl Eq for Greenlet {}

impl std::hash::Hash for Greenlet {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        RecordRef::as_ptr(&self.record).hash(state);
    }
}

impl fmt::Debug for Greenlet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state() {
            State::Unstarted => "unstarted",
            State::Active if RecordRef::as_ptr(&self.record) == core::current_record() => "running",
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
    /// The running greenlet is unwinding from a panic ([`std::thread::panicking`]), and a
    /// greenlet that is unwinding cannot switch away: the thread has one panic count, and every
    /// greenlet the switch would run next would see it (see [Panics](self#panics-and-switches)).
    /// Nothing was sent: what the switch or throw carried is here, boxed.
    Unwinding {
        /// The value (or, for [`Greenlet::throw`], the payload) that was not sent.
        value: Box<dyn Any>,
    },
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
            SwitchError::Unwinding { .. } => f.debug_struct("Unwinding").finish_non_exhaustive(),
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
            SwitchError::Unwinding { .. } => f.write_str(
                "a greenlet cannot switch away while it is unwinding from a panic; nothing was sent",
            ),
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
