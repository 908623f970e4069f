//! Bad input and misuse of the bridge and of the greenlets under it: impossible stack sizes,
//! switches and throws aimed at the wrong greenlet, `awaitlet` where it cannot wait, panics in
//! destructors during kills and cancellations, panic payloads whose own drop panics, polls
//! after completion, and greenlet switches that resume the poller behind the bridge's back.
//!
//! Each misuse either has a defined outcome (an error, a panic with a message naming the
//! problem) or, where Rust's own rules leave nothing else, aborts the process; those run in a
//! child process (this test binary again, see `common`) so that the abort can be observed.

mod common;

use std::cell::{Cell, RefCell};
use std::panic::resume_unwind;
use std::rc::Rc;
use std::task::Poll;

use awaitlet::stack::{
    MAX_STACK_SIZE, MIN_STACK_SIZE, POOL_CAPACITY, StackError, pool_len, trim_pool,
};
use awaitlet::{
    Cancelled, Greenlet, NoAwaitletContext, ParentError, SwitchError, async_def, awaitlet,
    getcurrent, in_async_def, try_awaitlet,
};
use common::{
    PanicOnDrop, catch, check_child_ok, child_aborts,
    child_aborts_on_a_destructor_panic_during_cleanup, child_command, child_ok, drive, is_child,
    library_lines, pending_then, poll_once, run_child_with_env, text,
};

const NO_CONTEXT: &str =
    "Can't call awaitlet() unless the call stack was invoked with async_def().";

/// Counts its drops.
struct Counted(Rc<Cell<usize>>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.set(self.0.get() + 1);
    }
}

fn counter() -> Rc<Cell<usize>> {
    Rc::new(Cell::new(0))
}

/// A panic payload whose own drop panics.
struct PayloadPanickingOnDrop;

impl Drop for PayloadPanickingOnDrop {
    fn drop(&mut self) {
        panic!("the payload's drop panics");
    }
}

/// Fills this thread's stack pool to capacity, so that its size is a baseline.
fn warm_pool() -> usize {
    let held: Vec<_> = (0..POOL_CAPACITY).map(|_| async_def(|| ())).collect();
    drop(held);
    pool_len()
}

/// Runs an ignored test in a child process (`run_child` would skip it there).
fn run_ignored_child(test_name: &str, role: &str) -> std::process::Output {
    child_command(test_name, role)
        .arg("--include-ignored")
        .output()
        .expect("spawn the test binary again")
}

// --- Stack sizes -------------------------------------------------------------------------------

#[test]
fn async_def_stack_sizes_out_of_range_panic_naming_the_limit_and_never_run_the_function() {
    let baseline = warm_pool();
    let cases = [
        (0, "below the minimum", MIN_STACK_SIZE),
        (4096, "below the minimum", MIN_STACK_SIZE),
        (usize::MAX, "above the maximum", MAX_STACK_SIZE),
        (1 << 40, "above the maximum", MAX_STACK_SIZE),
    ];
    for (bytes, problem, limit) in cases {
        let dropped = counter();
        let ran = Rc::new(Cell::new(false));
        let captured = Counted(dropped.clone());
        let ran_inside = ran.clone();
        let panic = catch(|| {
            async_def(move || {
                let _captured = captured;
                ran_inside.set(true);
            })
            .stack_size(bytes)
        })
        .unwrap_err();
        let message = text(&*panic);
        assert!(
            message.contains(&format!("cannot get a {bytes}-byte stack for async_def")),
            "{message}"
        );
        assert!(message.contains(problem), "{message}");
        assert!(message.contains(&format!("{limit} bytes")), "{message}");
        assert!(!ran.get(), "{bytes}: the function ran");
        assert_eq!(dropped.get(), 1, "{bytes}: the closure was dropped once");
        assert_eq!(pool_len(), baseline, "{bytes}: the default stack went back");
    }
}

#[test]
fn async_def_stack_sizes_at_the_limits_run_and_survive_a_panic() {
    // MIN_STACK_SIZE is documented as enough for a panic to be caught and carried out.
    let smallest = async_def(|| {
        let caught = catch(|| -> u32 { resume_unwind(Box::new("small")) });
        assert!(caught.is_err());
        awaitlet(pending_then(1, 5u32))
    })
    .stack_size(MIN_STACK_SIZE);
    assert_eq!(drive(smallest), (5, 1));
    let panicking =
        async_def(|| -> u32 { panic!("on the smallest stack") }).stack_size(MIN_STACK_SIZE);
    let panic = catch(|| drive(panicking)).unwrap_err();
    assert_eq!(text(&*panic), "on the smallest stack");
    // The largest is only address space (the mapping is lazily committed).
    let largest = async_def(|| awaitlet(pending_then(1, 6u32))).stack_size(MAX_STACK_SIZE);
    assert_eq!(drive(largest), (6, 1));
    // One byte beyond either limit is refused.
    for bytes in [MIN_STACK_SIZE - 1, MAX_STACK_SIZE + 1] {
        assert!(
            catch(|| async_def(|| ()).stack_size(bytes)).is_err(),
            "{bytes}"
        );
    }
}

// The first backtrace of a process costs the most stack: the default hook loads the debug
// information on the panicking stack. A child process whose first panics happen on the
// smallest stacks, with backtraces on, still catches them and carries them out.
#[test]
fn a_first_panic_with_backtraces_on_fits_the_smallest_stack() {
    if is_child("backtrace-on-small-stack") {
        let greenlet = Greenlet::builder()
            .stack_size(MIN_STACK_SIZE)
            .build(|()| -> u32 { panic!("greenlet on the smallest stack") })
            .unwrap();
        let panic = catch(|| greenlet.switch::<(), u32>(())).unwrap_err();
        assert_eq!(text(&*panic), "greenlet on the smallest stack");
        let function = async_def(|| -> u32 { panic!("async_def on the smallest stack") })
            .stack_size(MIN_STACK_SIZE);
        let panic = catch(|| drive(function)).unwrap_err();
        assert_eq!(text(&*panic), "async_def on the smallest stack");
        println!("CHILD-SURVIVED");
        return;
    }
    let output = run_child_with_env(
        "a_first_panic_with_backtraces_on_fits_the_smallest_stack",
        "backtrace-on-small-stack",
        "RUST_BACKTRACE",
        "1",
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stdout.contains("CHILD-SURVIVED"), "{stdout}");
    assert_eq!(
        stderr.matches("stack backtrace:").count(),
        2,
        "the hook printed both backtraces: {stderr}"
    );
}

#[test]
fn greenlet_builder_stack_sizes_out_of_range_return_stack_error_and_drop_the_closure() {
    let cases = [
        0,
        4096,
        MIN_STACK_SIZE - 1,
        usize::MAX,
        1 << 40,
        MAX_STACK_SIZE + 1,
    ];
    for bytes in cases {
        let dropped = counter();
        let captured = Counted(dropped.clone());
        let built = Greenlet::builder().stack_size(bytes).build(move |()| {
            let _captured = captured;
            unreachable!("a greenlet that was never built ran");
        });
        let error = built.unwrap_err();
        let expected = if bytes < MIN_STACK_SIZE {
            StackError::TooSmall {
                requested: bytes,
                minimum: MIN_STACK_SIZE,
            }
        } else {
            StackError::TooLarge {
                requested: bytes,
                maximum: MAX_STACK_SIZE,
            }
        };
        assert_eq!(error, expected);
        let message = error.to_string();
        assert!(message.contains(&format!("{bytes} bytes")), "{message}");
        assert!(
            message.contains("minimum") || message.contains("maximum"),
            "{message}"
        );
        assert_eq!(dropped.get(), 1, "{bytes}: the closure was dropped once");
    }
    let smallest = Greenlet::builder()
        .stack_size(MIN_STACK_SIZE)
        .build(|n: u32| n + 1)
        .unwrap();
    assert_eq!(smallest.switch::<u32, u32>(1).unwrap(), 2);
}

// --- Switches, parents and handles ------------------------------------------------------------

#[test]
fn switching_to_yourself_inside_async_def_returns_the_value_without_suspending() {
    let (seen, pending) = drive(async_def(|| {
        let me = getcurrent();
        let echoed: u32 = me.switch(5u32).unwrap();
        // A value of the wrong type comes straight back in the error.
        let refused = match me.switch::<&str, u32>("seven") {
            Err(SwitchError::WrongType { value, .. }) => *value.downcast::<&str>().unwrap(),
            other => panic!("{other:?}"),
        };
        // The bridge still works afterwards.
        let waited = awaitlet(pending_then(2, 10u32));
        (echoed, refused, waited, getcurrent() == me)
    }));
    assert_eq!(seen, (5, "seven", 10, true));
    assert_eq!(pending, 2, "only the awaited future suspended the function");
}

#[test]
fn set_parent_onto_a_descendant_of_a_driven_greenlet_is_cyclic_and_changes_nothing() {
    let main = getcurrent();
    let slot: Rc<RefCell<Option<Greenlet>>> = Rc::new(RefCell::new(None));
    let slot_inside = slot.clone();
    let mut future = async_def(move || {
        let me = getcurrent();
        let child = Greenlet::new(|()| ());
        let grandchild = Greenlet::builder().parent(&child).build(|()| ()).unwrap();
        let refused = (
            me.set_parent(&child),
            me.set_parent(&grandchild),
            me.set_parent(&me),
        );
        *slot_inside.borrow_mut() = Some(me.clone());
        awaitlet(pending_then(1, ()));
        (refused, me.parent())
    });
    assert!(poll_once(&mut future).is_pending());
    let driven = slot.borrow_mut().take().unwrap();
    assert_eq!(
        driven.parent(),
        Some(main.clone()),
        "the refusals kept the parent"
    );
    // A main greenlet cannot be given a parent, not even the greenlet it polls.
    assert_eq!(main.set_parent(&driven), Err(ParentError::Main));
    // Reparenting the suspended function elsewhere is allowed; the next poll takes it back
    // (the poller is the parent, rule 79), so its result still comes here.
    let elsewhere = Greenlet::new(|()| ());
    driven.set_parent(&elsewhere).unwrap();
    assert_eq!(driven.parent(), Some(elsewhere.clone()));
    let ((refused, parent_at_the_end), pending) = drive(future);
    assert_eq!(pending, 0);
    assert_eq!(
        refused,
        (
            Err(ParentError::Cyclic),
            Err(ParentError::Cyclic),
            Err(ParentError::Cyclic)
        )
    );
    assert_eq!(parent_at_the_end, Some(main));
    assert!(!elsewhere.is_started(), "the other parent never ran");
}

/// A greenlet that holds the only handle to itself besides its own, in its frame, and is
/// resumed through a child's result (no other handle is needed). It drops that handle while
/// it runs, then returns (`switch_away` false) or switches to main with its value (true).
fn greenlet_dropping_its_last_handle_while_it_runs(switch_away: bool) -> (u32, usize) {
    let dropped = counter();
    let guard = Counted(dropped.clone());
    let main = getcurrent();
    let child_slot: Rc<RefCell<Option<Greenlet>>> = Rc::new(RefCell::new(None));
    let child_slot_inside = child_slot.clone();
    let g = Greenlet::new(move |()| {
        let _guard = guard;
        let me = getcurrent();
        let child = Greenlet::new(|()| 20u32);
        *child_slot_inside.borrow_mut() = Some(child.clone());
        // Suspend; the child's result resumes us.
        let value: u32 = main.switch(()).unwrap();
        // Cut the finished child's parent link to us, so that `me` is our last handle.
        child.set_parent(&main).unwrap();
        drop(child);
        drop(me);
        assert!(getcurrent().is_active());
        if switch_away {
            main.switch::<u32, ()>(value * 2 + 2).unwrap();
            unreachable!("an abandoned greenlet that switched away is killed, not resumed");
        }
        value * 2 + 2
    });
    g.switch::<(), ()>(()).unwrap();
    let child = child_slot.borrow_mut().take().unwrap();
    drop(g);
    let result: u32 = child.switch(()).unwrap();
    (result, dropped.get())
}

#[test]
fn a_greenlet_dropping_its_last_outside_handle_while_it_runs_is_not_killed() {
    let baseline = warm_pool();
    // Returning afterwards: the result arrives, the frame's guard drops once, on return.
    assert_eq!(
        greenlet_dropping_its_last_handle_while_it_runs(false),
        (42, 1)
    );
    assert_eq!(
        pool_len(),
        baseline,
        "its stack and the child's went back to the pool"
    );
    // The same greenlet switching away afterwards is killed at that switch (rule 43), which
    // shows that the handle it dropped was indeed its last.
    assert_eq!(
        greenlet_dropping_its_last_handle_while_it_runs(true),
        (42, 1)
    );
    assert_eq!(pool_len(), baseline);

    // Inside async_def: the function drops a handle to itself and goes on waiting.
    let (value, pending) = drive(async_def(|| {
        drop(getcurrent());
        awaitlet(pending_then(1, 3u32))
    }));
    assert_eq!((value, pending), (3, 1));
}

// --- Throws ------------------------------------------------------------------------------------

#[test]
fn throws_into_unstarted_and_dead_children_inside_async_def_come_straight_back_to_the_function() {
    let (outcome, pending) = drive(async_def(|| {
        let ran = Rc::new(Cell::new(false));
        let ran_inside = ran.clone();
        // Unstarted: it dies without running; the payload goes to its parent, the thrower.
        let unstarted = Greenlet::new(move |()| ran_inside.set(true));
        let raised = catch(|| unstarted.throw::<()>("into unstarted")).unwrap_err();
        let first = *raised.downcast::<&str>().unwrap();
        assert!(unstarted.is_dead());
        // GreenletExit into an unstarted greenlet comes back as a value.
        let exiting_ran = Rc::new(Cell::new(false));
        let exiting_ran_inside = exiting_ran.clone();
        let exiting = Greenlet::new(move |()| exiting_ran_inside.set(true));
        exiting.kill().unwrap();
        assert!(exiting.is_dead() && !exiting_ran.get());
        // Dead: the nearest live ancestor is the function's greenlet, the thrower itself.
        let finished = Greenlet::new(|()| 1u8);
        assert_eq!(finished.switch::<(), u8>(()).unwrap(), 1);
        let raised = catch(|| finished.throw::<()>("into dead")).unwrap_err();
        let second = *raised.downcast::<&str>().unwrap();
        // None of this reached the poller: the function still waits normally.
        let waited = awaitlet(pending_then(1, "waited"));
        (first, second, waited, ran.get())
    }));
    assert_eq!(outcome, ("into unstarted", "into dead", "waited", false));
    assert_eq!(pending, 1);
}

#[test]
fn throws_into_a_finished_async_def_greenlet_go_to_its_parent_the_thrower() {
    let (driven, _) = drive(async_def(getcurrent));
    assert!(driven.is_dead());
    let raised = catch(|| driven.throw::<()>("into a finished async_def")).unwrap_err();
    assert_eq!(
        *raised.downcast::<&str>().unwrap(),
        "into a finished async_def"
    );
    driven.kill().unwrap();
    assert!(driven.is_dead());
}

/// One way to resume a greenlet, named.
type Resumption = (&'static str, fn(&Greenlet));

/// What only the `AsyncDef` may do to its function's greenlet, tried from elsewhere.
const RESUMPTIONS: [Resumption; 3] = [
    ("switch", |driven| drop(driven.switch::<u32, u32>(1))),
    ("throw", |driven| drop(driven.throw::<()>("thrown in"))),
    ("kill", |driven| drop(driven.kill())),
];

const REFUSED: &str = "can only be resumed by its AsyncDef";

#[test]
fn switches_throws_and_kills_into_a_function_between_polls_are_refused() {
    // Between polls, `f`'s borrows may have ended (the AsyncDef may have been leaked), so
    // nothing but the AsyncDef may resume it: each attempt panics and changes nothing.
    let slot: Rc<RefCell<Option<Greenlet>>> = Rc::new(RefCell::new(None));
    let slot_inside = slot.clone();
    let dropped = Rc::new(Cell::new(0));
    let guard = Counted(dropped.clone());
    let mut future = async_def(move || {
        let _guard = guard;
        *slot_inside.borrow_mut() = Some(getcurrent());
        awaitlet(pending_then(1, 7u8))
    });
    assert!(poll_once(&mut future).is_pending());
    let driven = slot.borrow_mut().take().unwrap();
    for (what, resume) in RESUMPTIONS {
        let refused = catch(|| resume(&driven)).expect_err(what);
        assert!(
            text(&*refused).contains(REFUSED),
            "{what}: {}",
            text(&*refused)
        );
        assert!(driven.is_active() && !driven.is_dead(), "{what}");
        assert_eq!(
            dropped.get(),
            0,
            "{what}: the function's frames were touched"
        );
    }
    assert_eq!(poll_once(&mut future), Poll::Ready(7));
    assert_eq!(dropped.get(), 1);
    assert!(driven.is_dead());
}

#[test]
fn a_value_switched_in_between_polls_is_dropped_with_the_refusal() {
    let slot: Rc<RefCell<Option<Greenlet>>> = Rc::new(RefCell::new(None));
    let slot_inside = slot.clone();
    let mut future = async_def(move || {
        *slot_inside.borrow_mut() = Some(getcurrent());
        awaitlet(pending_then(1, ()))
    });
    assert!(poll_once(&mut future).is_pending());
    let driven = slot.borrow_mut().take().unwrap();
    let dropped = Rc::new(Cell::new(0));
    let sent = Counted(dropped.clone());
    assert!(catch(|| driven.switch::<Counted, ()>(sent)).is_err());
    assert_eq!(
        dropped.get(),
        1,
        "the refused value was neither dropped once nor kept"
    );
    assert_eq!(poll_once(&mut future), Poll::Ready(()));
}

#[test]
fn code_run_by_re_parenting_on_a_poll_cannot_resume_the_function() {
    // The first poll from a new poller makes it the function's parent; dropping the old parent
    // link may kill the old parent (here its last reference), running its destructors. One of
    // them tries to switch into the function, which is refused (no poll is in progress yet;
    // and the destructor runs during the kill's unwind, when no greenlet may switch away);
    // then the poll goes on as usual.
    thread_local!(static STASH: RefCell<Option<Greenlet>> = const { RefCell::new(None) });
    thread_local!(static REFUSALS: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) });
    struct SwitchesIn;
    impl Drop for SwitchesIn {
        fn drop(&mut self) {
            if let Some(driven) = STASH.with(|stash| stash.borrow_mut().take()) {
                let refusal = match catch(|| driven.switch::<u32, ()>(1)) {
                    Ok(Err(SwitchError::Unwinding { .. })) => "unwinding".to_string(),
                    Ok(other) => format!("the switch went through: {other:?}"),
                    Err(refused) => text(&*refused),
                };
                REFUSALS.with(|refusals| refusals.borrow_mut().push(refusal));
            }
        }
    }
    type Shared = Rc<RefCell<Option<awaitlet::AsyncDef<'static, u8>>>>;
    let shared: Shared = Rc::new(RefCell::new(None));
    let shared_inside = shared.clone();
    let main = getcurrent();
    let old_parent = Greenlet::new(move |()| {
        let _switches_in = SwitchesIn;
        let mut future = async_def(|| {
            STASH.with(|stash| *stash.borrow_mut() = Some(getcurrent()));
            awaitlet(pending_then(2, 9u8))
        });
        assert!(poll_once(&mut future).is_pending());
        *shared_inside.borrow_mut() = Some(future);
        main.switch::<(), ()>(()).unwrap();
    });
    old_parent.switch::<(), ()>(()).unwrap();
    drop(old_parent);
    let mut future = shared.borrow_mut().take().unwrap();
    assert!(poll_once(&mut future).is_pending());
    let refusals = REFUSALS.with(|refusals| refusals.take());
    assert_eq!(refusals.len(), 1, "{refusals:?}");
    assert!(
        refusals[0] == "unwinding" || refusals[0].contains(REFUSED),
        "{refusals:?}"
    );
    assert_eq!(poll_once(&mut future), Poll::Ready(9));
}

#[test]
fn a_leaked_async_def_function_never_runs_again() {
    // `mem::forget` on an AsyncDef whose function waits: what the function borrowed may be
    // freed, so it must never run again, whatever holds a handle to its greenlet. Leaks the
    // greenlet's stack on purpose, hence a child process, where a leak checker is told so.
    if !is_child("leaked") {
        check_child_ok(run_child_with_env(
            "a_leaked_async_def_function_never_runs_again",
            "leaked",
            "ASAN_OPTIONS",
            "detect_leaks=0",
        ));
        return;
    }
    let slot: Rc<RefCell<Option<Greenlet>>> = Rc::new(RefCell::new(None));
    let slot_inside = slot.clone();
    let dropped = Rc::new(Cell::new(0));
    let borrowed = vec![1u8, 2, 3];
    {
        let borrowed = &borrowed;
        let guard = Counted(dropped.clone());
        let mut future = async_def(move || {
            let _guard = guard;
            *slot_inside.borrow_mut() = Some(getcurrent());
            awaitlet(std::future::pending::<()>());
            borrowed.len()
        });
        assert!(poll_once(&mut future).is_pending());
        std::mem::forget(future);
    }
    drop(borrowed);
    let driven = slot.borrow_mut().take().unwrap();
    for (what, resume) in RESUMPTIONS {
        assert!(catch(|| resume(&driven)).is_err(), "{what}");
    }
    // The leaked AsyncDef still counts as a reference, so dropping this one kills nothing.
    drop(driven);
    assert_eq!(dropped.get(), 0, "the leaked function's frames ran");
    println!("CHILD-OK");
}

// --- awaitlet where it cannot wait ---------------------------------------------------------------

#[test]
fn awaitlet_in_a_greenlet_the_function_started_panics_there_and_the_function_goes_on() {
    let polled = Rc::new(Cell::new(false));
    let dropped = counter();
    let (outcome, pending) = drive(async_def(|| {
        let (polled, dropped) = (polled.clone(), dropped.clone());
        let child = Greenlet::new(move |()| {
            let guard = Counted(dropped);
            awaitlet(async move {
                let _guard = guard;
                polled.set(true);
            });
        });
        let raised = catch(|| child.switch::<(), ()>(())).unwrap_err();
        assert!(child.is_dead());
        (text(&*raised), awaitlet(pending_then(2, 9u8)))
    }));
    assert_eq!(outcome, (NO_CONTEXT.to_string(), 9));
    assert_eq!(pending, 2);
    assert!(!polled.get(), "the refused future was never polled");
    assert_eq!(dropped.get(), 1, "the refused future was dropped");
}

#[test]
fn awaitlet_inside_a_future_that_awaitlet_polls_panics_there_and_the_function_goes_on() {
    let (outcome, pending) = drive(async_def(|| {
        let raised = catch(|| awaitlet(async { awaitlet(pending_then(1, 1u8)) })).unwrap_err();
        (text(&*raised), awaitlet(pending_then(1, 2u8)))
    }));
    assert_eq!(outcome, (NO_CONTEXT.to_string(), 2));
    assert_eq!(pending, 1);
}

#[test]
fn awaitlet_on_a_thread_that_never_made_a_greenlet_panics_cleanly() {
    let outcome = std::thread::spawn(|| {
        let in_async = in_async_def();
        let tried = try_awaitlet(async { 1 });
        let raised = catch(|| awaitlet(async { 1 })).unwrap_err();
        // The thread's greenlet machinery works afterwards.
        let (value, _) = drive(async_def(|| awaitlet(pending_then(1, 4))));
        (in_async, tried, text(&*raised), value)
    })
    .join()
    .unwrap();
    assert_eq!(
        outcome,
        (false, Err(NoAwaitletContext), NO_CONTEXT.to_string(), 4)
    );
}

#[test]
fn awaitlet_after_a_tokio_timeout_cancelled_the_function_refuses_to_wait_on_anything_pending() {
    type Log = Rc<RefCell<Vec<String>>>;
    let log = Log::default();
    let inside = log.clone();
    let inner_dropped = counter();
    let inner_dropped_inside = inner_dropped.clone();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let timed_out = runtime.block_on(async {
        tokio::time::timeout(
            std::time::Duration::from_millis(1),
            async_def(move || {
                let push = |entry: String| inside.borrow_mut().push(entry);
                let long = std::time::Duration::from_secs(60);
                let first = catch(|| awaitlet(tokio::time::sleep(long)));
                push(format!("first: {}", first.unwrap_err().is::<Cancelled>()));
                // Still inside async_def, but nothing polls the function any more.
                push(format!("in_async_def: {}", in_async_def()));
                let again = catch(|| awaitlet(tokio::time::sleep(long)));
                push(format!("again: {}", again.unwrap_err().is::<Cancelled>()));
                // A nested async_def that never waits still gives its value.
                push(format!("nested ready: {}", awaitlet(async_def(|| 3))));
                // One that waits is started, refused, and unwound with the cancellation.
                let guard = Counted(inner_dropped_inside);
                let nested = catch(|| {
                    awaitlet(async_def(move || {
                        let _guard = guard;
                        awaitlet(std::future::pending::<()>())
                    }))
                });
                push(format!(
                    "nested pending: {}",
                    nested.unwrap_err().is::<Cancelled>()
                ));
            }),
        )
        .await
        .is_err()
    });
    assert!(timed_out);
    assert_eq!(
        *log.borrow(),
        [
            "first: true",
            "in_async_def: true",
            "again: true",
            "nested ready: 3",
            "nested pending: true"
        ]
    );
    assert_eq!(inner_dropped.get(), 1);
}

/// An async_def function that waits twice, catching each wait's panic, and logs whether each
/// was `Cancelled`.
fn waits_twice(seen: Rc<RefCell<Vec<bool>>>) -> impl FnOnce() {
    move || {
        for _ in 0..2 {
            let waited = catch(|| awaitlet(std::future::pending::<()>()));
            seen.borrow_mut()
                .push(waited.unwrap_err().is::<Cancelled>());
        }
    }
}

// An AsyncDef dropped while the thread is already unwinding another panic raises Cancelled in
// its function like any other drop. A function that catches it and waits again must see
// Cancelled again (bridge docs, "Cancellation"): that second raise happens on the function's
// own stack and is caught there, not in a destructor, so it is no panic during cleanup.
// `awaitlet` decides "raising now would be a panic during unwinding" from
// `std::thread::panicking()`, which counts every stack of the thread, the unwinding holder's
// included, and aborts the process instead, blaming a destructor.
//
// Two ways to get there: a panic in the code holding the AsyncDef, and the ordinary nested
// case, an outer async_def cancelled while it waits on an inner one (the inner AsyncDef is
// dropped while Cancelled unwinds the outer function).
#[test]
fn an_async_def_dropped_during_unwinding_can_wait_again_and_see_cancelled() {
    const NAME: &str = "an_async_def_dropped_during_unwinding_can_wait_again_and_see_cancelled";
    if is_child("holder-panics") {
        let seen = Rc::new(RefCell::new(Vec::new()));
        let function = waits_twice(seen.clone());
        let outcome = catch(move || {
            let mut future = async_def(function);
            assert!(poll_once(&mut future).is_pending());
            resume_unwind(Box::new("the holder panics"));
        });
        assert_eq!(
            *outcome.unwrap_err().downcast::<&str>().unwrap(),
            "the holder panics"
        );
        assert_eq!(*seen.borrow(), [true, true]);
        println!("CHILD-OK");
        return;
    }
    if is_child("outer-cancelled") {
        let seen = Rc::new(RefCell::new(Vec::new()));
        let function = waits_twice(seen.clone());
        let outer_saw_cancelled = Rc::new(Cell::new(false));
        let outer_saw = outer_saw_cancelled.clone();
        let mut outer = async_def(move || {
            let waited = catch(move || awaitlet(async_def(function)));
            outer_saw.set(waited.unwrap_err().is::<Cancelled>());
        });
        assert!(poll_once(&mut outer).is_pending());
        drop(outer);
        assert_eq!(*seen.borrow(), [true, true]);
        assert!(outer_saw_cancelled.get());
        println!("CHILD-OK");
        return;
    }
    check_child_ok(run_ignored_child(NAME, "holder-panics"));
    check_child_ok(run_ignored_child(NAME, "outer-cancelled"));
}

// --- Destructors that panic ----------------------------------------------------------------------

// A destructor that panics while Cancelled unwinds the function is a panic during unwinding:
// Rust aborts the process, as on any stack. Documented here; the library cannot intercept it.
#[test]
fn a_destructor_panic_while_cancelled_unwinds_the_function_aborts_the_process() {
    if is_child("destructor-during-cancel") {
        let mut future = async_def(|| {
            let _bomb = PanicOnDrop("destructor panic during cancellation");
            awaitlet(std::future::pending::<()>());
        });
        assert!(poll_once(&mut future).is_pending());
        drop(future);
        println!("CHILD-SURVIVED");
        return;
    }
    child_aborts_on_a_destructor_panic_during_cleanup(
        "a_destructor_panic_while_cancelled_unwinds_the_function_aborts_the_process",
        "destructor-during-cancel",
        "destructor panic during cancellation",
    );
}

// A function that caught Cancelled and then panics (here in a destructor at a normal scope
// exit) ends with that panic, which nobody awaits: the drop discards it and does not panic;
// every other destructor on the stack runs once.
#[test]
fn a_panic_after_the_function_caught_cancelled_is_discarded_by_the_drop() {
    if is_child("panic-after-cancel") {
        trim_pool();
        let dropped = counter();
        let guard = Counted(dropped.clone());
        let mut future = async_def(move || {
            let _guard = guard;
            let bomb = PanicOnDrop("destructor panic after Cancelled was caught");
            let waited = catch(|| awaitlet(std::future::pending::<()>()));
            assert!(waited.unwrap_err().is::<Cancelled>());
            drop(bomb);
        });
        assert!(poll_once(&mut future).is_pending());
        let baseline = pool_len();
        let outcome = catch(move || drop(future));
        assert!(outcome.is_ok(), "the drop panicked");
        assert_eq!(dropped.get(), 1);
        assert_eq!(pool_len(), baseline + 1, "the function's stack went back");
        println!("CHILD-OK");
        return;
    }
    let stderr = child_ok(
        "a_panic_after_the_function_caught_cancelled_is_discarded_by_the_drop",
        "panic-after-cancel",
    );
    assert!(
        stderr.contains("destructor panic after Cancelled was caught"),
        "the panic hook reported it: {stderr}"
    );
}

// Inside async_def, a child greenlet killed on drop whose destructor panics after it caught
// the exit: the drop (in the function) does not panic, one line goes to stderr, and the
// function goes on waiting.
#[test]
fn a_greenlet_killed_on_drop_inside_async_def_whose_destructor_panics_is_reported_not_raised() {
    if is_child("kill-inside-async-def") {
        let (outcome, pending) = drive(async_def(|| {
            let me = getcurrent();
            let child = Greenlet::new(move |()| {
                let bomb = PanicOnDrop("destructor panic in a killed greenlet");
                let _ = catch(|| me.switch::<(), ()>(()));
                drop(bomb);
            });
            child.switch::<(), ()>(()).unwrap();
            let dropped = catch(move || drop(child));
            (dropped.is_ok(), awaitlet(pending_then(1, 8u8)))
        }));
        assert_eq!(outcome, (true, 8));
        assert_eq!(pending, 1);
        println!("CHILD-OK");
        return;
    }
    let stderr = child_ok(
        "a_greenlet_killed_on_drop_inside_async_def_whose_destructor_panics_is_reported_not_raised",
        "kill-inside-async-def",
    );
    let lines = library_lines(&stderr);
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(
        lines[0].contains("panicked while being killed on drop"),
        "{stderr}"
    );
    assert!(
        stderr.contains("destructor panic in a killed greenlet"),
        "{stderr}"
    );
}

// --- Panic payloads whose drop panics ---------------------------------------------------------

// Such a payload crosses the bridge and greenlet switches unchanged: the library never drops
// it on the way. Dropping it is then the catcher's business; that drop panics, as Rust's rules
// say, with the drop's own message (a new panic, not during unwinding, so no abort).
#[test]
fn a_payload_panicking_on_drop_passes_out_of_async_def_and_greenlets_undropped() {
    let mut future = async_def(|| -> u8 { resume_unwind(Box::new(PayloadPanickingOnDrop)) });
    let payload = catch(|| poll_once(&mut future)).unwrap_err();
    assert!(payload.is::<PayloadPanickingOnDrop>());
    let dropped = catch(move || drop(payload)).unwrap_err();
    assert_eq!(text(&*dropped), "the payload's drop panics");
    let again = catch(|| poll_once(&mut future)).unwrap_err();
    assert!(text(&*again).contains("polled after it completed"));
    drop(future);

    let g = Greenlet::new(|()| -> u8 { resume_unwind(Box::new(PayloadPanickingOnDrop)) });
    let payload = catch(|| g.switch::<(), u8>(())).unwrap_err();
    assert!(payload.is::<PayloadPanickingOnDrop>());
    assert!(g.is_dead());
    let dropped = catch(move || drop(payload)).unwrap_err();
    assert_eq!(text(&*dropped), "the payload's drop panics");

    // From an awaited future into the function, which can catch it and go on.
    let (outcome, _) = drive(async_def(|| {
        let payload = catch(|| {
            awaitlet(std::future::poll_fn(|_| -> Poll<()> {
                resume_unwind(Box::new(PayloadPanickingOnDrop))
            }))
        })
        .unwrap_err();
        let is_it = payload.is::<PayloadPanickingOnDrop>();
        let dropped = catch(move || drop(payload)).is_err();
        assert!(dropped, "dropping the payload panicked");
        (is_it, awaitlet(pending_then(1, 1u8)))
    }));
    assert_eq!(outcome, (true, 1));
}

// A greenlet killed on drop that catches the exit and raises a payload whose drop panics: the
// kill's documented contract (the module docs of `greenlet`, "Kill on drop") is that `drop`
// does not panic and a line goes to stderr. The library drops the payload inside `drop`, so
// the payload's panic escapes the handle's drop instead, and the line is never written.
#[test]
fn a_kill_ending_in_a_payload_panicking_on_drop_does_not_panic_the_drop() {
    if is_child("kill-bad-payload") {
        let main = getcurrent();
        let g = Greenlet::new(move |()| {
            let _ = catch(|| main.switch::<(), ()>(()));
            resume_unwind(Box::new(PayloadPanickingOnDrop));
        });
        g.switch::<(), ()>(()).unwrap();
        let outcome = catch(move || drop(g));
        assert!(outcome.is_ok(), "the drop panicked");
        println!("CHILD-OK");
        return;
    }
    let stderr = check_child_ok(run_ignored_child(
        "a_kill_ending_in_a_payload_panicking_on_drop_does_not_panic_the_drop",
        "kill-bad-payload",
    ));
    let lines = library_lines(&stderr);
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(
        lines[0].contains("panicked while being killed on drop"),
        "{stderr}"
    );
}

// The same through the bridge: a cancelled function that catches Cancelled and raises a
// payload whose drop panics. Dropping the AsyncDef discards the function's panic (as for any
// other payload, see `a_panic_after_the_function_caught_cancelled_is_discarded_by_the_drop`),
// and a drop must not panic; but the payload is dropped unguarded, so its panic escapes the
// AsyncDef's drop (and, if that drop runs during unwinding, as in a panicking task, it
// aborts the process).
#[test]
fn a_cancellation_ending_in_a_payload_panicking_on_drop_does_not_panic_the_drop() {
    let dropped = counter();
    let guard = Counted(dropped.clone());
    let mut future = async_def(move || {
        let _guard = guard;
        let _ = catch(|| awaitlet(std::future::pending::<()>()));
        resume_unwind(Box::new(PayloadPanickingOnDrop));
    });
    assert!(poll_once(&mut future).is_pending());
    let outcome = catch(move || drop(future));
    assert_eq!(dropped.get(), 1);
    assert!(
        outcome.is_ok(),
        "the drop panicked: {}",
        text(&*outcome.unwrap_err())
    );
}

// --- Polls the bridge refuses ----------------------------------------------------------------

#[test]
fn polling_a_finished_async_def_panics_every_time_however_it_finished() {
    const AFTER: &str = "polled after it completed";
    let mut returned = async_def(|| awaitlet(pending_then(1, 1u8)));
    assert_eq!(drive(&mut returned).0, 1);
    let mut panicked = async_def(|| -> u8 { resume_unwind(Box::new("first")) });
    assert_eq!(
        *catch(|| poll_once(&mut panicked))
            .unwrap_err()
            .downcast::<&str>()
            .unwrap(),
        "first"
    );
    let mut no_wait = async_def(|| 1u8).assert_await_occurs();
    assert!(matches!(poll_once(&mut no_wait), Poll::Ready(Err(_))));
    for _ in 0..3 {
        let raised = catch(|| poll_once(&mut returned)).unwrap_err();
        assert!(text(&*raised).contains(AFTER));
        let raised = catch(|| poll_once(&mut panicked)).unwrap_err();
        assert!(
            text(&*raised).contains(AFTER),
            "the panic is not raised twice"
        );
        let raised = catch(|| poll_once(&mut no_wait)).unwrap_err();
        assert!(text(&*raised).contains(AFTER));
    }
}

// A child greenlet of the function switches to the greenlet polling the AsyncDef: that
// resumption is not the function suspending, so the poll panics; further polls panic too (the
// function is stuck in a greenlet switch, not in awaitlet). Dropping the AsyncDef still unwinds
// the function (and kills the child it holds), every destructor once, the stacks back in the
// pool.
#[test]
fn a_child_greenlet_switching_to_the_poller_makes_the_poll_panic_and_the_drop_still_unwinds() {
    let baseline = warm_pool();
    let dropped = counter();
    let seen = Rc::new(RefCell::new(Vec::new()));
    let (dropped_inside, seen_inside) = (dropped.clone(), seen.clone());
    let mut future = async_def(move || {
        let _guard = Counted(dropped_inside.clone());
        let poller = getcurrent().parent().unwrap();
        let child_dropped = dropped_inside.clone();
        let child = Greenlet::new(move |()| {
            let _guard = Counted(child_dropped);
            poller.switch::<u32, ()>(17).unwrap();
        });
        let outcome = catch(|| child.switch::<(), ()>(()));
        seen_inside
            .borrow_mut()
            .push(outcome.unwrap_err().is::<Cancelled>());
    });
    let first = catch(|| poll_once(&mut future)).unwrap_err();
    assert!(
        text(&*first).contains("resumed by a greenlet switch, not by the AsyncDef's function"),
        "{}",
        text(&*first)
    );
    let second = catch(|| poll_once(&mut future)).unwrap_err();
    assert!(
        text(&*second).contains("suspended in a greenlet switch, not in awaitlet"),
        "{}",
        text(&*second)
    );
    assert_eq!(dropped.get(), 0);
    drop(future);
    assert_eq!(
        *seen.borrow(),
        [true],
        "the function saw Cancelled at its switch"
    );
    assert_eq!(dropped.get(), 2, "the function's and the child's guards");
    assert_eq!(pool_len(), baseline);
}

// The same switch made while the function is inside an awaited future's poll, holding the
// poll's context: the poll can neither return (the context would dangle) nor go on, so the
// process aborts with a message.
#[test]
fn a_switch_to_the_poller_from_inside_an_awaited_futures_poll_aborts_the_process() {
    aborts_for_a_switch_inside_a_poll(
        "a_switch_to_the_poller_from_inside_an_awaited_futures_poll_aborts_the_process",
        "switch-inside-poll",
        || {
            let poller = getcurrent().parent().unwrap();
            let child = Greenlet::new(move |()| {
                poller.switch::<(), ()>(()).unwrap();
            });
            awaitlet(std::future::poll_fn(|_| {
                child.switch::<(), ()>(()).unwrap();
                Poll::Ready(())
            }));
        },
    );
}

#[test]
fn the_function_switching_to_its_poller_from_inside_an_awaited_futures_poll_aborts_the_process() {
    // The same with `f` itself switching: the poll cannot return while `f` holds its `cx`.
    aborts_for_a_switch_inside_a_poll(
        "the_function_switching_to_its_poller_from_inside_an_awaited_futures_poll_aborts_the_process",
        "self-switch-inside-poll",
        || {
            awaitlet(std::future::poll_fn(|_| {
                let poller = getcurrent().parent().unwrap();
                let _ = poller.switch::<u32, ()>(1);
                Poll::Ready(())
            }));
        },
    );
}

/// Runs `f` under `async_def` in a child process (`role` of `test`) and checks that its first
/// poll aborts the process with the one message about a switch made inside a future's poll.
fn aborts_for_a_switch_inside_a_poll(test: &str, role: &str, f: impl FnOnce()) {
    if is_child(role) {
        let mut future = async_def(f);
        let _ = catch(|| poll_once(&mut future));
        println!("CHILD-SURVIVED");
        return;
    }
    let stderr = child_aborts(test, role);
    let lines = library_lines(&stderr);
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(lines[0].contains("inside a future's poll"), "{stderr}");
}

#[test]
fn polling_an_async_def_from_a_greenlet_its_own_function_started_panics() {
    type Shared = Rc<RefCell<Option<awaitlet::AsyncDef<'static, ()>>>>;
    let shared: Shared = Rc::new(RefCell::new(None));
    let child_slot: Rc<RefCell<Option<Greenlet>>> = Rc::new(RefCell::new(None));
    let dropped = counter();
    let (child_slot_inside, shared_for_child, dropped_inside) =
        (child_slot.clone(), shared.clone(), dropped.clone());
    *shared.borrow_mut() = Some(async_def(move || {
        let _guard = Counted(dropped_inside);
        let shared = shared_for_child;
        // A greenlet whose parent is this function's greenlet, started later by main.
        let poller = getcurrent().parent().unwrap();
        let child = Greenlet::new(move |()| {
            let refused = {
                let mut slot = shared.borrow_mut();
                let future = slot.as_mut().unwrap();
                text(&*catch(|| poll_once(future)).unwrap_err())
            };
            poller.switch::<String, ()>(refused).unwrap();
        });
        *child_slot_inside.borrow_mut() = Some(child);
        awaitlet(std::future::pending::<()>());
    }));
    let first = poll_once(shared.borrow_mut().as_mut().unwrap());
    assert!(first.is_pending());
    let child = child_slot.borrow_mut().take().unwrap();
    let message: String = child.switch(()).unwrap();
    assert!(
        message.contains("polled from a greenlet its own function started"),
        "{message}"
    );
    // Nothing changed: the child is killed on drop, the AsyncDef cancelled on drop.
    drop(child);
    assert_eq!(dropped.get(), 0);
    drop(shared.borrow_mut().take());
    assert_eq!(dropped.get(), 1);
}

// Dropping the AsyncDef from a greenlet that the function itself started: the dropper becomes
// the function's parent for the cancellation, the function unwinds, and the dropper goes on.
#[test]
fn dropping_an_async_def_from_a_greenlet_its_own_function_started_unwinds_the_function() {
    type Shared = Rc<RefCell<Option<awaitlet::AsyncDef<'static, ()>>>>;
    let shared: Shared = Rc::new(RefCell::new(None));
    let child_slot: Rc<RefCell<Option<Greenlet>>> = Rc::new(RefCell::new(None));
    let seen = Rc::new(RefCell::new(Vec::new()));
    let (child_slot_inside, shared_for_child, seen_inside) =
        (child_slot.clone(), shared.clone(), seen.clone());
    *shared.borrow_mut() = Some(async_def(move || {
        let _guard = LogOnDrop(seen_inside.clone(), "function unwound");
        let shared = shared_for_child;
        let seen_by_child = seen_inside.clone();
        let child = Greenlet::new(move |()| {
            let future = shared.borrow_mut().take();
            drop(future);
            seen_by_child
                .borrow_mut()
                .push("the drop returned in the child");
            getcurrent().parent().is_some()
        });
        *child_slot_inside.borrow_mut() = Some(child);
        let waited = catch(|| awaitlet(std::future::pending::<()>()));
        seen_inside
            .borrow_mut()
            .push(if waited.unwrap_err().is::<Cancelled>() {
                "function saw Cancelled"
            } else {
                "function saw something else"
            });
    }));
    assert!(poll_once(shared.borrow_mut().as_mut().unwrap()).is_pending());
    let child = child_slot.borrow_mut().take().unwrap();
    let outcome = catch(|| child.switch::<(), bool>(()));
    assert!(
        matches!(outcome, Ok(Ok(true))),
        "the child's result came back: {:?}",
        outcome.map_err(|panic| text(&*panic))
    );
    assert_eq!(
        *seen.borrow(),
        [
            "function saw Cancelled",
            "function unwound",
            "the drop returned in the child"
        ]
    );
    assert!(shared.borrow().is_none());
}

/// Pushes its label to a log when dropped.
struct LogOnDrop(Rc<RefCell<Vec<&'static str>>>, &'static str);

impl Drop for LogOnDrop {
    fn drop(&mut self) {
        self.0.borrow_mut().push(self.1);
    }
}

// A greenlet that polls an AsyncDef is the parent of the AsyncDef's greenlet (rule 79), and a
// child's parent link counts as a handle (kill on drop, in the `greenlet` module docs). So a
// greenlet that keeps a suspended AsyncDef it polled in its own frame is in a cycle: dropping
// its last handle does not kill it, nor does its thread's exit, and both stacks stay. An
// explicit `kill` unwinds it, and the AsyncDef it drops on the way cancels the function.
#[test]
fn a_greenlet_keeping_a_suspended_async_def_it_polled_must_be_killed_explicitly() {
    let dropped = counter();
    let cancelled = Rc::new(Cell::new(false));
    let driven_slot: Rc<RefCell<Option<Greenlet>>> = Rc::new(RefCell::new(None));
    let main = getcurrent();
    let (dropped_inside, cancelled_inside, slot_inside) =
        (dropped.clone(), cancelled.clone(), driven_slot.clone());
    let holder = Greenlet::new(move |()| {
        let _guard = Counted(dropped_inside.clone());
        let mut future = async_def(move || {
            let _guard = Counted(dropped_inside);
            *slot_inside.borrow_mut() = Some(getcurrent());
            let waited = catch(|| awaitlet(std::future::pending::<()>()));
            let panic = waited.unwrap_err();
            cancelled_inside.set(panic.is::<Cancelled>());
            resume_unwind(panic);
        });
        assert!(poll_once(&mut future).is_pending());
        main.switch::<(), ()>(()).unwrap();
        unreachable!("the holder is killed, never resumed");
    });
    holder.switch::<(), ()>(()).unwrap();
    drop(holder);
    assert_eq!(dropped.get(), 0, "the last handle's drop killed nothing");
    // The function's greenlet still names the holder as its parent: get it back that way.
    let driven = driven_slot.borrow_mut().take().unwrap();
    let holder = driven.parent().unwrap();
    drop(driven);
    assert!(holder.is_active() && !holder.is_main());
    holder.kill().unwrap();
    assert!(holder.is_dead());
    assert!(cancelled.get(), "the function saw Cancelled");
    assert_eq!(dropped.get(), 2, "the holder's and the function's guards");
}

#[test]
fn a_function_raising_cancelled_by_hand_is_an_ordinary_panic_of_the_async_def() {
    let mut future = async_def(|| -> u8 { resume_unwind(Box::new(Cancelled)) });
    let raised = catch(|| poll_once(&mut future)).unwrap_err();
    assert!(raised.is::<Cancelled>());
    let raised = catch(|| poll_once(&mut future)).unwrap_err();
    assert!(text(&*raised).contains("polled after it completed"));
    // The thread's pool is unharmed: a new async_def runs.
    trim_pool();
    assert_eq!(drive(async_def(|| awaitlet(pending_then(1, 2u8)))), (2, 1));
}
