//! Attacks on the crate's soundness from safe code only, one test (or a few) per invariant the
//! unsafe core relies on (see `docs/SOUNDNESS.md`). Each test is named after what it guards.
//!
//! The use-after-free attacks check a liveness flag before they touch borrowed data, so they
//! fail on their own; they also read the data itself, so that AddressSanitizer and Valgrind
//! (both run over this file in CI) report the access if the flag check were ever wrong.

mod common;

use std::cell::{Cell, RefCell};
use std::mem;
use std::rc::Rc;

use awaitlet::{AsyncDef, Cancelled, Greenlet, async_def, awaitlet, getcurrent};
use common::{catch, poll_once, text};

/// Borrowed data that knows whether it is alive: `alive` is shared and outlives it.
struct Watched {
    alive: Rc<Cell<bool>>,
    bytes: Vec<u8>,
}

impl Watched {
    fn new(alive: &Rc<Cell<bool>>) -> Watched {
        alive.set(true);
        Watched {
            alive: Rc::clone(alive),
            bytes: vec![7; 64],
        }
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        self.alive.set(false);
    }
}

/// Sets its flag when dropped.
struct DropFlag(Rc<Cell<bool>>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.set(true);
    }
}

/// What a function borrowing a [`Watched`] saw each time it ran.
#[derive(Default)]
struct Sightings {
    /// Set when the function ran while its borrowed data was dropped.
    ran_after_free: Cell<bool>,
    /// Sum of the bytes read, so that the reads are not optimised out.
    read: Cell<usize>,
}

impl Sightings {
    /// Called by the function each time it runs: records whether `alive` still holds, then
    /// reads the data (which AddressSanitizer reports if it was freed).
    fn check(&self, alive: &Cell<bool>, data: &Watched) {
        if !alive.get() {
            self.ran_after_free.set(true);
        }
        self.read
            .set(self.read.get() + data.bytes.iter().map(|&byte| byte as usize).sum::<usize>());
    }
}

type Stash = Rc<RefCell<Option<Greenlet>>>;

/// A function that borrows `data`, stashes its own greenlet, switches to main, and reads `data`
/// again whenever it is resumed.
fn stashing_function<'a>(
    data: &'a Watched,
    alive: &'a Rc<Cell<bool>>,
    stash: &'a Stash,
    sightings: &'a Rc<Sightings>,
    main: &'a Greenlet,
) -> impl FnOnce() + 'a {
    move || {
        sightings.check(alive, data);
        *stash.borrow_mut() = Some(getcurrent());
        let _ = main.switch::<(), ()>(());
        sightings.check(alive, data);
    }
}

/// Polls `inner`, whose function is made to leave a poll or drop of another `AsyncDef` frozen on
/// its stack (that function switches to main, so the poll of `inner` panics), then leaks it.
fn freeze_and_forget(mut inner: AsyncDef<'_, ()>) {
    // `inner` lives in the caller's frame, not on the heap, so forgetting it leaks only its
    // stack (Valgrind finds no lost heap block).
    let outcome = catch(|| poll_once(&mut inner));
    assert!(
        outcome.is_err(),
        "the poll of inner was resumed by a greenlet switch"
    );
    mem::forget(inner);
}

/// After the borrowed data is gone, a switch into the stashed function is refused and the
/// function does not run.
fn assert_stashed_function_stays_out(alive: &Cell<bool>, stash: &Stash, sightings: &Sightings) {
    assert!(!alive.get());
    let stashed = stash.borrow_mut().take().expect("the function ran");
    let resumed = catch(|| stashed.switch::<(), ()>(()));
    assert!(
        !sightings.ran_after_free.get(),
        "the function ran after its data was dropped"
    );
    let refusal = resumed.expect_err("the switch into the function is refused");
    assert!(
        text(&*refusal).contains("can only be resumed by its AsyncDef"),
        "{}",
        text(&*refusal)
    );
    mem::forget(stashed);
}

#[test]
fn a_frozen_poll_on_a_leaked_stack_does_not_let_a_switch_in_after_the_borrow_ends() {
    let alive = Rc::new(Cell::new(false));
    let stash: Stash = Rc::default();
    let sightings = Rc::new(Sightings::default());
    let main = getcurrent();
    {
        let data = Watched::new(&alive);
        let outer = async_def(stashing_function(&data, &alive, &stash, &sightings, &main));
        let inner = async_def(move || {
            let mut outer = Box::pin(outer);
            let _ = poll_once(&mut outer);
        });
        // The function of `outer` switches to main in the middle of `inner`'s hand poll of it:
        // `inner`'s poll panics, and `outer`'s poll stays frozen on `inner`'s stack.
        freeze_and_forget(inner);
        drop(data);
    }
    assert_stashed_function_stays_out(&alive, &stash, &sightings);
}

#[test]
fn a_frozen_cancellation_on_a_leaked_stack_does_not_let_a_switch_in_after_the_borrow_ends() {
    let alive = Rc::new(Cell::new(false));
    let stash: Stash = Rc::default();
    let sightings = Rc::new(Sightings::default());
    let main = getcurrent();
    {
        let data = Watched::new(&alive);
        let (data_ref, alive_ref, stash_ref, sightings_ref, main_ref) =
            (&data, &alive, &stash, &sightings, &main);
        let outer = async_def(move || {
            sightings_ref.check(alive_ref, data_ref);
            *stash_ref.borrow_mut() = Some(getcurrent());
            let cancelled = catch(|| awaitlet(std::future::pending::<()>()));
            assert!(cancelled.unwrap_err().is::<Cancelled>());
            // Caught the cancellation, then switched away from the dropping code.
            let _ = main_ref.switch::<(), ()>(());
            sightings_ref.check(alive_ref, data_ref);
        });
        let inner = async_def(move || {
            let mut outer: std::pin::Pin<Box<AsyncDef<'_, ()>>> = Box::pin(outer);
            assert!(poll_once(&mut outer).is_pending());
            drop(outer);
        });
        freeze_and_forget(inner);
        drop(data);
    }
    assert_stashed_function_stays_out(&alive, &stash, &sightings);
}

/// Calls `during_unwind` from a destructor while a panic unwinds through it.
struct OnUnwind<F: FnMut()>(F);

impl<F: FnMut()> Drop for OnUnwind<F> {
    fn drop(&mut self) {
        assert!(std::thread::panicking());
        (self.0)();
    }
}

#[test]
fn a_function_unwinding_cannot_wait_so_other_tasks_do_not_see_its_panic() {
    let waited = Rc::new(Cell::new(None));
    let seen = Rc::clone(&waited);
    let mut panicking_task = Box::pin(async_def(move || {
        let _flush_on_drop = OnUnwind(|| {
            // As a `BufWriter` over an io adapter does when it flushes on drop.
            let outcome = awaitlet::try_awaitlet(common::pending_then(1, 5));
            seen.set(Some(outcome));
        });
        panic!("the task fails");
    }));
    let lock = std::sync::Mutex::new(0);
    let lock = &lock;
    let mut other_task = Box::pin(async_def(move || {
        awaitlet(common::pending_then(1, ()));
        let panicking = std::thread::panicking();
        *lock.lock().unwrap() += 1;
        panicking
    }));
    assert!(poll_once(&mut other_task).is_pending());
    let failed = catch(|| poll_once(&mut panicking_task));
    assert_eq!(text(&*failed.unwrap_err()), "the task fails");
    assert_eq!(waited.get(), Some(Err(awaitlet::NoAwaitletContext)));
    assert!(!std::thread::panicking());
    let other = poll_once(&mut other_task);
    assert_eq!(
        other,
        std::task::Poll::Ready(false),
        "the other task saw a panic in flight"
    );
    assert!(!lock.is_poisoned());
}

#[test]
fn awaitlet_during_an_unwind_polls_once_and_gives_a_ready_value() {
    let got = Rc::new(Cell::new(0));
    let seen = Rc::clone(&got);
    let mut task = Box::pin(async_def(move || {
        let _guard = OnUnwind(|| seen.set(awaitlet(std::future::ready(9))));
        panic!("unwinding");
    }));
    assert!(catch(|| poll_once(&mut task)).is_err());
    assert_eq!(got.get(), 9);
}

#[test]
fn a_greenlet_unwinding_cannot_switch_away_so_its_panic_stays_its_own() {
    let main = getcurrent();
    let refused = Rc::new(Cell::new(false));
    let seen = Rc::clone(&refused);
    let worker = Greenlet::new(move |()| {
        let _guard = OnUnwind(|| {
            let outcome = main.switch::<u32, ()>(7);
            match outcome {
                Err(awaitlet::SwitchError::Unwinding { value }) => {
                    assert_eq!(value.downcast_ref::<u32>(), Some(&7));
                    seen.set(true);
                }
                other => panic!("the switch was not refused: {other:?}"),
            }
        });
        panic!("worker fails");
    });
    let outcome = catch(|| worker.switch::<(), ()>(()));
    assert_eq!(text(&*outcome.unwrap_err()), "worker fails");
    assert!(refused.get());
    assert!(worker.is_dead());
    assert!(!std::thread::panicking());
}

#[test]
fn a_greenlet_unwinding_cannot_throw_or_kill() {
    let main = getcurrent();
    let sleeper = Greenlet::new(move |()| main.switch::<(), ()>(()));
    sleeper.switch::<(), ()>(()).unwrap();
    let target = sleeper.clone();
    let outcomes = Rc::new(RefCell::new(Vec::new()));
    let seen = Rc::clone(&outcomes);
    let unwinding = catch(move || {
        let _guard = OnUnwind(|| {
            let thrown = target.throw::<()>("stop");
            let killed = target.kill();
            seen.borrow_mut().push(matches!(
                thrown,
                Err(awaitlet::SwitchError::Unwinding { .. })
            ));
            seen.borrow_mut().push(matches!(
                killed,
                Err(awaitlet::SwitchError::Unwinding { .. })
            ));
        });
        panic!("main unwinds");
    });
    assert!(unwinding.is_err());
    assert_eq!(*outcomes.borrow(), [true, true]);
    assert!(sleeper.is_active(), "nothing was thrown into it");
    sleeper.kill().unwrap();
    assert!(sleeper.is_dead());
}

#[test]
fn a_greenlet_killed_on_drop_cannot_suspend_in_its_cleanup() {
    // The victim's destructor tries to switch away during the kill's unwind: refused, so the
    // exit is never thrown into a suspended cleanup (a panic during cleanup, an abort).
    let main = getcurrent();
    let tries = Rc::new(Cell::new(0));
    let seen = Rc::clone(&tries);
    let victim = Greenlet::new(move |()| {
        let back = main.clone();
        let _guard = OnUnwind(move || {
            seen.set(seen.get() + 1);
            assert!(matches!(
                back.switch::<(), ()>(()),
                Err(awaitlet::SwitchError::Unwinding { .. })
            ));
        });
        let _ = main.switch::<(), ()>(());
    });
    victim.switch::<(), ()>(()).unwrap();
    drop(victim);
    assert_eq!(tries.get(), 1);
    assert!(!std::thread::panicking());
}

/// What the bridge's calls answered from a thread-local's destructor at thread exit.
static ANSWERS_AT_EXIT: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// A thread-local whose destructor calls what must work anywhere: `try_awaitlet`,
/// `in_async_def` and the io adapters.
struct AsksAtExit;

impl Drop for AsksAtExit {
    fn drop(&mut self) {
        use std::io::{Read, Write};
        let waited = awaitlet::try_awaitlet(std::future::ready(1));
        let inside = awaitlet::in_async_def();
        let mut reader = awaitlet::io::SyncReader::new(futures::io::Cursor::new(vec![1u8, 2]));
        let read = reader.read(&mut [0; 2]).map_err(|error| error.kind());
        let mut writer = awaitlet::io::SyncWriter::new(futures::io::Cursor::new(Vec::new()));
        let written = writer.write_all(b"x").map_err(|error| error.kind());
        ANSWERS_AT_EXIT.lock().unwrap().push(format!(
            "{waited:?} {inside} {:?} {:?}",
            read.map(|_| ()),
            written
        ));
    }
}

thread_local!(static ASKS_AT_EXIT: AsksAtExit = const { AsksAtExit });

#[test]
fn the_bridge_answers_from_thread_local_destructors_after_the_greenlets_are_gone() {
    ANSWERS_AT_EXIT.lock().unwrap().clear();
    // Touched before the first greenlet use, so its destructor runs after the thread's greenlet
    // machinery is torn down.
    std::thread::spawn(|| {
        ASKS_AT_EXIT.with(|_| {});
        let value = futures::executor::block_on(async_def(|| awaitlet(std::future::ready(3))));
        assert_eq!(value, 3);
    })
    .join()
    .expect("the thread exits cleanly");
    // A thread that never used a greenlet: the calls must not bring the machinery up.
    std::thread::spawn(|| ASKS_AT_EXIT.with(|_| {}))
        .join()
        .expect("the thread exits cleanly");
    let answers = ANSWERS_AT_EXIT.lock().unwrap().clone();
    let expected = "Err(NoAwaitletContext) false Err(Other) Err(Other)";
    assert_eq!(answers, [expected, expected]);
}

#[test]
fn a_child_of_an_async_def_function_finishing_between_polls_panics_in_the_grandparent() {
    // The function starts a plain child greenlet and waits; between polls, main switches into
    // the child, which finishes. Its parent (the function) may not be resumed, so the result
    // cannot go there: main's switch panics, saying why, and the process goes on.
    let child_slot: Stash = Rc::default();
    let slot = Rc::clone(&child_slot);
    let dropped = Rc::new(Cell::new(false));
    let dropped_inside = Rc::clone(&dropped);
    let mut task = Box::pin(async_def(move || {
        let function = getcurrent();
        let child = Greenlet::new(move |()| {
            let _ = function.switch::<(), ()>(());
            DropFlag(dropped_inside)
        });
        child.switch::<(), ()>(()).unwrap();
        *slot.borrow_mut() = Some(child);
        awaitlet(common::pending_then(1, 5))
    }));
    assert!(poll_once(&mut task).is_pending());
    let child = child_slot.borrow_mut().take().unwrap();
    let outcome = catch(|| child.switch::<(), ()>(()));
    let message = text(&*outcome.expect_err("main's switch panics"));
    assert!(
        message.contains("between polls of its AsyncDef"),
        "{message}"
    );
    assert!(dropped.get(), "the undeliverable result was dropped");
    assert!(child.is_dead());
    assert_eq!(poll_once(&mut task), std::task::Poll::Ready(5));
}

#[test]
fn a_misused_poll_names_public_concepts_only() {
    let main = getcurrent();
    let mut task = Box::pin(async_def(move || {
        let _ = main.switch::<u32, ()>(7);
    }));
    let message = text(&*catch(|| poll_once(&mut task)).unwrap_err());
    assert!(message.contains("a value of type u32"), "{message}");
    for private in ["driven", "Yielded", "Resume", "core::", "Record"] {
        assert!(!message.contains(private), "names {private}: {message}");
    }
}

/// Compiles only when `$type` is not `$trait` (two candidate impls make the call ambiguous when
/// it is).
macro_rules! assert_not_impl {
    ($type:ty: $trait:path) => {{
        trait AmbiguousIfImpl<A> {
            fn check() {}
        }
        impl<T: ?Sized> AmbiguousIfImpl<()> for T {}
        impl<T: ?Sized + $trait> AmbiguousIfImpl<u8> for T {}
        <$type as AmbiguousIfImpl<_>>::check();
    }};
}

fn is_send_and_sync<T: Send + Sync>() {}

#[test]
fn everything_holding_a_stack_or_a_greenlet_stays_on_its_thread() {
    // Each of these holds (or can hold) a stack, a greenlet record or a thread-bound hook.
    assert_not_impl!(Greenlet: Send);
    assert_not_impl!(Greenlet: Sync);
    assert_not_impl!(awaitlet::greenlet::Builder: Send);
    assert_not_impl!(awaitlet::greenlet::Builder: Sync);
    assert_not_impl!(AsyncDef<'static, u8>: Send);
    assert_not_impl!(AsyncDef<'static, u8>: Sync);
    assert_not_impl!(awaitlet::AssertAwaitOccurs<'static, u8>: Send);
    assert_not_impl!(awaitlet::AssertAwaitOccurs<'static, u8>: Sync);
    assert_not_impl!(awaitlet::stack::Stack: Send);
    assert_not_impl!(awaitlet::stack::Stack: Sync);
    assert_not_impl!(awaitlet::greenlet::TraceHook: Send);
    // A switch error carries any value, which need not be `Send`.
    assert_not_impl!(awaitlet::SwitchError: Send);
    // Plain values: errors, markers, payloads, events.
    is_send_and_sync::<Cancelled>();
    is_send_and_sync::<awaitlet::GreenletExit>();
    is_send_and_sync::<awaitlet::ParentError>();
    is_send_and_sync::<awaitlet::NoAwaitletContext>();
    is_send_and_sync::<awaitlet::NoAwaitOccurred>();
    is_send_and_sync::<awaitlet::stack::StackError>();
    is_send_and_sync::<awaitlet::greenlet::TraceEvent>();
    // The io adapters hold only the stream: they move with it, and wait on whatever thread
    // calls them from inside an async_def.
    is_send_and_sync::<awaitlet::io::SyncReader<futures::io::Cursor<Vec<u8>>>>();
    is_send_and_sync::<awaitlet::io::SyncWriter<futures::io::Cursor<Vec<u8>>>>();
    is_send_and_sync::<awaitlet::io::tokio::SyncReader<tokio::io::Empty>>();
    is_send_and_sync::<awaitlet::io::tokio::SyncWriter<tokio::io::Sink>>();
}
