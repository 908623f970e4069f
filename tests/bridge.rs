//! The bridge's semantics, rule by rule (awaitlet rules 68-95, mapped in the `bridge` module
//! docs): what `async_def` runs and returns, what `awaitlet` waits for, panics both ways,
//! nesting, and the greenlet underneath. Driven by hand with a no-op waker, so every
//! suspension is visible.

mod common;

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::hint::black_box;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use awaitlet::{
    AsyncDef, Greenlet, NoAwaitOccurred, NoAwaitletContext, async_def, awaitlet, getcurrent,
    in_async_def, try_awaitlet,
};
use common::{catch, drive, frame_names, pending_then, poll_once, text};

#[test]
fn a_ready_future_returns_without_suspending() {
    let (value, pending) = drive(async_def(|| {
        awaitlet(async { 7 }) + awaitlet(std::future::ready(1))
    }));
    assert_eq!((value, pending), (8, 0));
}

#[test]
fn each_pending_poll_of_the_awaited_future_is_one_pending_poll_of_the_async_def() {
    let (value, pending) = drive(async_def(|| {
        let a = awaitlet(pending_then(3, "a"));
        let b = awaitlet(pending_then(2, "b"));
        format!("{a}{b}")
    }));
    assert_eq!(value, "ab");
    assert_eq!(pending, 5);
}

#[test]
fn the_function_starts_at_the_first_poll_and_runs_up_to_its_first_wait() {
    // Rule 78.
    let log = RefCell::new(Vec::new());
    let mut future = async_def(|| {
        log.borrow_mut().push("start");
        awaitlet(pending_then(1, ()));
        log.borrow_mut().push("resumed");
    });
    assert!(log.borrow().is_empty());
    assert!(poll_once(&mut future).is_pending());
    assert_eq!(*log.borrow(), ["start"]);
    assert!(poll_once(&mut future).is_ready());
    assert_eq!(*log.borrow(), ["start", "resumed"]);
}

#[test]
fn the_function_may_borrow_mutably_from_the_caller() {
    let mut numbers = vec![1, 2, 3];
    let (_, pending) = drive(async_def(|| {
        for number in numbers.iter_mut() {
            *number *= awaitlet(pending_then(1, 10));
        }
    }));
    assert_eq!(numbers, [10, 20, 30]);
    assert_eq!(pending, 3);
}

#[test]
fn the_return_value_comes_back_verbatim_even_when_it_is_a_future() {
    // Rule 81: no auto-await.
    let (inner, _) = drive(async_def(|| pending_then(2, 5)));
    assert_eq!(drive(inner), (5, 2));
}

#[test]
fn the_async_def_can_be_moved_between_polls() {
    let mut first = async_def(|| awaitlet(pending_then(1, 3)) * 2);
    assert!(poll_once(&mut first).is_pending());
    let mut moved = Box::new(first);
    assert_eq!(poll_once(&mut *moved), Poll::Ready(6));
}

#[test]
fn assert_await_occurs_fails_only_when_the_function_never_waited() {
    // Rule 82: side effects have happened; a real suspension counts, a ready future does not.
    let ran = Cell::new(false);
    let no_wait = async_def(|| {
        ran.set(true);
        awaitlet(async { 1 })
    })
    .assert_await_occurs();
    assert_eq!(drive(no_wait).0, Err(NoAwaitOccurred));
    assert!(ran.get());
    assert_eq!(
        NoAwaitOccurred.to_string(),
        "Function was run but no await was called."
    );
    let waited = async_def(|| awaitlet(pending_then(1, 2))).assert_await_occurs();
    assert_eq!(drive(waited).0, Ok(2));
}

#[test]
fn assert_await_occurs_lets_a_panic_take_precedence() {
    let failing = async_def(|| -> u8 { panic!("boom") }).assert_await_occurs();
    let panic = catch(|| drive(failing)).unwrap_err();
    assert_eq!(text(&*panic), "boom");
}

#[test]
fn a_panic_in_the_function_propagates_out_of_the_async_def_unchanged() {
    // Rule 84, before and after a wait; the payload is the very value raised.
    #[derive(Debug, PartialEq)]
    struct Custom(u32);
    let before = catch(|| drive(async_def(|| std::panic::panic_any(Custom(1))))).unwrap_err();
    assert_eq!(before.downcast_ref::<Custom>(), Some(&Custom(1)));
    let after = catch(|| {
        drive(async_def(|| {
            awaitlet(pending_then(2, ()));
            std::panic::panic_any(Custom(2))
        }))
    })
    .unwrap_err();
    assert_eq!(after.downcast_ref::<Custom>(), Some(&Custom(2)));
}

#[test]
fn a_panic_in_the_awaited_future_surfaces_at_the_awaitlet_call_and_can_be_caught() {
    // Rule 85: caught inside the function, which carries on waiting.
    let (outcome, pending) = drive(async_def(|| {
        let caught = catch(|| {
            awaitlet(async {
                PendingOnce::default().await;
                panic!("inside the future")
            })
        });
        let message = text(&*caught.unwrap_err());
        let later = awaitlet(pending_then(1, 40));
        (message, later + 2)
    }));
    assert_eq!(outcome, ("inside the future".to_string(), 42));
    assert_eq!(pending, 2);
}

#[test]
fn an_uncaught_panic_from_the_awaited_future_leaves_the_async_def() {
    let panic = catch(|| {
        drive(async_def(|| {
            awaitlet(async {
                PendingOnce::default().await;
                panic!("not caught")
            })
        }))
    })
    .unwrap_err();
    assert_eq!(text(&*panic), "not caught");
}

/// Pending on its first poll (waking itself), ready on the second.
#[derive(Default)]
struct PendingOnce {
    polled: bool,
}

impl Future for PendingOnce {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if std::mem::replace(&mut self.polled, true) {
            Poll::Ready(())
        } else {
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }
}

#[test]
fn awaitlet_outside_async_def_panics_with_pythons_message() {
    // Rule 73.
    let message = "Can't call awaitlet() unless the call stack was invoked with async_def().";
    assert_eq!(NoAwaitletContext.to_string(), message);
    let panic = catch(|| awaitlet(async { 1 })).unwrap_err();
    assert_eq!(text(&*panic), message);
    assert_eq!(try_awaitlet(async { 1 }), Err(NoAwaitletContext));
    assert!(!in_async_def());
}

#[test]
fn awaitlet_outside_async_def_drops_the_future_unpolled() {
    // Rule 74's intent: the future is disposed of, never run.
    let polled = Cell::new(false);
    let dropped = Rc::new(Cell::new(false));
    let guard = DropFlag(dropped.clone());
    let future = async {
        let _guard = guard;
        polled.set(true);
    };
    assert_eq!(try_awaitlet(future), Err(NoAwaitletContext));
    assert!(!polled.get());
    assert!(dropped.get());
}

struct DropFlag(Rc<Cell<bool>>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.set(true);
    }
}

#[test]
fn awaitlet_in_a_plain_greenlet_started_by_the_function_has_no_context() {
    // Rule 73: only the async_def greenlet itself can wait.
    let (inner, _) = drive(async_def(|| {
        let child = Greenlet::new(|()| (in_async_def(), try_awaitlet(async { 1 })));
        let from_child: (bool, Result<i32, NoAwaitletContext>) = child.switch(()).unwrap();
        (in_async_def(), from_child)
    }));
    assert_eq!(inner, (true, (false, Err(NoAwaitletContext))));
}

#[test]
fn awaitlet_inside_a_future_that_awaitlet_polls_has_no_context() {
    // Rule 73: "awaitlet calls cannot be nested".
    let (result, _) = drive(async_def(|| awaitlet(async { try_awaitlet(async { 1 }) })));
    assert_eq!(result, Err(NoAwaitletContext));
    let (inside, _) = drive(async_def(|| {
        let outer = in_async_def();
        (outer, awaitlet(async { in_async_def() }))
    }));
    assert_eq!(inside, (true, false));
}

#[test]
fn nested_async_defs_work_to_any_depth() {
    // Rule 93, ten levels deep, each level waiting before and after the next.
    fn level(depth: u32) -> u32 {
        awaitlet(pending_then(1, ()));
        let below = if depth == 0 {
            0
        } else {
            let outer = getcurrent();
            awaitlet(async_def(move || {
                // The inner greenlet's parent is the outer function's, which polls it.
                assert_eq!(getcurrent().parent(), Some(outer));
                level(depth - 1)
            }))
        };
        awaitlet(pending_then(1, ()));
        below + depth
    }
    let (sum, pending) = drive(async_def(|| level(10)));
    assert_eq!(sum, 55);
    assert_eq!(pending, 22);
}

#[test]
fn the_function_runs_in_a_new_greenlet_whose_parent_is_the_poller() {
    // Rule 79: each call makes a new greenlet; its parent is the driver (here main).
    let main = getcurrent();
    let mut seen = Vec::new();
    for _ in 0..2 {
        let (here, _) = drive(async_def(|| {
            let here = getcurrent();
            awaitlet(pending_then(1, ()));
            assert_eq!(getcurrent(), here);
            here
        }));
        assert!(!here.is_main());
        assert!(here.is_dead());
        assert_eq!(here.parent(), Some(main.clone()));
        seen.push(here);
    }
    assert_ne!(seen[0], seen[1]);
}

#[test]
fn a_poll_after_completion_panics() {
    let mut future = async_def(|| 1);
    assert_eq!(poll_once(&mut future), Poll::Ready(1));
    let panic = catch(|| poll_once(&mut future)).unwrap_err();
    assert!(text(&*panic).contains("polled after it completed"));
}

#[test]
fn stack_size_gives_the_function_a_stack_of_that_size() {
    let deep = async_def(|| {
        // 3 MiB of locals would overflow the default 1 MiB stack.
        let big = [7u8; 3 << 20];
        std::hint::black_box(&big)[12345]
    })
    .stack_size(8 << 20);
    assert_eq!(drive(deep).0, 7);
}

#[test]
fn stack_size_after_the_first_poll_panics() {
    let mut future = async_def(|| awaitlet(pending_then(1, ())));
    assert!(poll_once(&mut future).is_pending());
    let panic = catch(move || future.stack_size(1 << 20)).unwrap_err();
    assert!(text(&*panic).contains("before it is first polled"));
}

#[test]
fn impossible_stack_sizes_panic_naming_the_limit() {
    for bytes in [0, 1, 4096] {
        let panic = catch(|| async_def(|| ()).stack_size(bytes)).unwrap_err();
        assert!(text(&*panic).contains("cannot get a"), "{}", text(&*panic));
    }
    let panic = catch(|| async_def(|| ()).stack_size(usize::MAX)).unwrap_err();
    assert!(text(&*panic).contains("cannot get a"));
}

#[test]
fn async_def_is_unpin() {
    fn assert_unpin<T: Unpin>(_: &T) {}
    let future: AsyncDef<'_, ()> = async_def(|| ());
    assert_unpin(&future);
    assert_eq!(drive(future).1, 0);
}

#[test]
fn the_trace_hook_sees_every_switch_between_the_poller_and_the_function() {
    use awaitlet::greenlet::{TraceEvent, settrace};
    let events: Rc<RefCell<Vec<(TraceEvent, bool, bool)>>> = Rc::default();
    let sink = events.clone();
    let previous = settrace(Some(Rc::new(move |event, origin, target| {
        sink.borrow_mut()
            .push((event, origin.is_main(), target.is_main()))
    })));
    assert!(previous.is_none());
    let (value, pending) = drive(async_def(|| awaitlet(pending_then(1, 5)) + 1));
    settrace(None);
    assert_eq!((value, pending), (6, 1));
    // Start (main -> f), suspension (f -> main), resumption (main -> f), end (f -> main).
    let switch = TraceEvent::Switch;
    assert_eq!(
        *events.borrow(),
        [
            (switch, true, false),
            (switch, false, true),
            (switch, true, false),
            (switch, false, true)
        ]
    );
}

#[test]
fn a_future_panicking_with_cancelled_is_an_ordinary_panic_at_the_awaitlet_call() {
    // Rule 89: a `Cancelled` raised by the awaited future is the future's panic, not a
    // cancellation of the function: it surfaces at the `awaitlet` call, where the function may
    // catch it and wait again; uncaught, it leaves the AsyncDef.
    let (outcome, pending) = drive(async_def(|| {
        let caught = catch(|| {
            awaitlet(async {
                pending_then(1, ()).await;
                std::panic::resume_unwind(Box::new(awaitlet::Cancelled))
            })
        });
        let was_cancelled = caught.unwrap_err().is::<awaitlet::Cancelled>();
        awaitlet(pending_then(1, ()));
        was_cancelled
    }));
    assert!(outcome);
    assert_eq!(pending, 2);
    let escaped = catch(|| {
        drive(async_def(|| {
            awaitlet(async { std::panic::resume_unwind(Box::new(awaitlet::Cancelled)) })
        }))
    });
    assert!(escaped.unwrap_err().is::<awaitlet::Cancelled>());
}

/// The function's frame: captures a backtrace on its own stack, then waits once.
#[inline(never)]
fn function_waiting(inside: &RefCell<String>) {
    *inside.borrow_mut() = std::backtrace::Backtrace::force_capture().to_string();
    awaitlet(pending_then(1, ()));
    black_box(()); // no tail call: this frame stays on the stack
}

/// A greenlet's frame that polls the function until it waits, captures a backtrace, then lets
/// it finish.
#[inline(never)]
fn greenlet_polling(inside: &RefCell<String>) -> String {
    let mut future = async_def(|| function_waiting(inside));
    assert!(poll_once(&mut future).is_pending());
    let after_the_wait = black_box(std::backtrace::Backtrace::force_capture().to_string());
    assert!(poll_once(&mut future).is_ready());
    after_the_wait
}

/// The thread stack's frame that starts the polling greenlet.
#[inline(never)]
fn start_the_poller(inside: &Rc<RefCell<String>>) -> String {
    let captured = inside.clone();
    let poller = Greenlet::new(move |()| greenlet_polling(&captured));
    black_box(poller.switch::<(), String>(()).unwrap())
}

#[test]
fn a_backtrace_in_the_function_crosses_into_its_poller_and_one_in_the_poller_stops_at_its_root() {
    let inside = Rc::new(RefCell::new(String::new()));
    let after_the_wait = start_the_poller(&inside);
    let inside = inside.borrow();
    let has = |trace: &str, name: &str| {
        frame_names(trace)
            .iter()
            .any(|frame| frame.ends_with(&format!("::{name}")))
    };
    // Inside the function, its walk crosses into the stack polling it (the native backend's
    // CFI; the portable one stops at each stack's root).
    assert!(has(&inside, "function_waiting"), "{inside}");
    let crosses = awaitlet::BACKEND != "context";
    assert_eq!(has(&inside, "greenlet_polling"), crosses, "{inside}");
    // In the poller after the wait: its own frames only. The function is not its caller, and
    // its own resumer's frame is not known once it has resumed the function.
    assert!(has(&after_the_wait, "greenlet_polling"), "{after_the_wait}");
    assert!(
        !has(&after_the_wait, "function_waiting"),
        "{after_the_wait}"
    );
    assert!(
        !has(&after_the_wait, "start_the_poller"),
        "{after_the_wait}"
    );
}
