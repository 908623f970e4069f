//! The context-switch engine through its bare coroutine (`awaitlet::engine::Fiber`): switching,
//! deep stacks, many stacks, panics and unwinding, backtraces across stacks.
//!
//! `.ci/run` runs this file under both backends.

mod common;

use std::cell::{Cell, RefCell};
use std::hint::black_box;
use std::rc::Rc;

use awaitlet::engine::{Fiber, Resumed, Suspender};
use awaitlet::stack::{DEFAULT_STACK_SIZE, Stack};
use common::frame_names;

fn fiber<F: FnOnce(&Suspender, usize) -> usize>(closure: F) -> Fiber<F> {
    Fiber::new(Stack::new(DEFAULT_STACK_SIZE).unwrap(), closure)
}

fn suspended(resumed: Resumed) -> usize {
    match resumed {
        Resumed::Suspended(value) => value,
        other => panic!("expected a suspension, got {other:?}"),
    }
}

fn returned(resumed: Resumed) -> usize {
    match resumed {
        Resumed::Returned(value) => value,
        other => panic!("expected a return, got {other:?}"),
    }
}

#[test]
fn a_million_ping_pong_switches_carry_every_value() {
    let mut counter = fiber(|suspender, first| {
        let mut value = first;
        for _ in 0..500_000 {
            value = suspender.suspend(value + 1);
        }
        value
    });
    let mut value = 0;
    for round in 0..500_000 {
        value = suspended(counter.resume(value + 1));
        assert_eq!(value, 2 * round + 2);
    }
    // 1,000,000 switches so far; the last resume lets the closure return.
    assert_eq!(returned(counter.resume(value)), 1_000_000);
    assert!(counter.is_finished());
}

/// Recurses `depth` times with a 1 KiB frame each; returns the lowest local address reached.
#[inline(never)]
fn recurse(depth: usize) -> usize {
    let frame = black_box([depth as u8; 1024]);
    let here = frame.as_ptr() as usize;
    if depth == 0 {
        here
    } else {
        let deepest = recurse(depth - 1).min(here);
        black_box(&frame); // keeps the frame live across the call (no tail call)
        deepest
    }
}

#[test]
fn recursion_can_use_nearly_the_whole_stack() {
    let stack = Stack::new(DEFAULT_STACK_SIZE).unwrap();
    let size = stack.size();
    // Probe the frame size first on a fresh fiber, then go to ~90% of the stack.
    let mut probe = Fiber::new(Stack::new(DEFAULT_STACK_SIZE).unwrap(), |suspender, _| {
        let top = &suspender as *const _ as usize;
        top - recurse(64)
    });
    let per_frame = returned(probe.resume(0)) / 64;
    let depth = size * 9 / 10 / per_frame;
    let mut deep = Fiber::new(stack, move |suspender, _| {
        let top = &suspender as *const _ as usize;
        top - recurse(depth)
    });
    let used = returned(deep.resume(0));
    assert!(
        used >= size * 85 / 100,
        "used {used} of {size} bytes ({per_frame} per frame)"
    );
    assert!(used < size);
}

#[test]
fn ten_thousand_stacks_alive_at_once() {
    let mut fibers: Vec<_> = (0..10_000)
        .map(|index| {
            fiber(move |suspender, first| {
                let local = [index; 8];
                let second = suspender.suspend(first + index);
                black_box(local)[3] * 1000 + second
            })
        })
        .collect();
    for (index, fiber) in fibers.iter_mut().enumerate() {
        assert_eq!(suspended(fiber.resume(1)), index + 1);
    }
    for (index, fiber) in fibers.iter_mut().enumerate().rev() {
        assert_eq!(returned(fiber.resume(2)), index * 1000 + 2);
    }
}

#[test]
fn fibers_nest() {
    let mut outer = fiber(|outer_suspender, value| {
        let mut inner = fiber(|inner_suspender, value| {
            let next = inner_suspender.suspend(value * 10);
            next * 10
        });
        let a = suspended(inner.resume(value));
        let from_outside = outer_suspender.suspend(a);
        returned(inner.resume(from_outside))
    });
    assert_eq!(suspended(outer.resume(3)), 30);
    assert_eq!(returned(outer.resume(4)), 40);
}

#[test]
fn a_panic_in_the_closure_is_returned_as_its_payload() {
    let mut panicking = fiber(|suspender, _| {
        suspender.suspend(1);
        std::panic::panic_any(String::from("boom inside the fiber"));
    });
    assert_eq!(suspended(panicking.resume(0)), 1);
    match panicking.resume(0) {
        Resumed::Panicked(payload) => {
            assert_eq!(
                payload.downcast_ref::<String>().unwrap(),
                "boom inside the fiber"
            );
        }
        other => panic!("expected a panic, got {other:?}"),
    }
    assert!(panicking.is_finished());
}

/// Records its name in a shared log when dropped.
struct Recorder(&'static str, Rc<RefCell<Vec<&'static str>>>);

impl Drop for Recorder {
    fn drop(&mut self) {
        self.1.borrow_mut().push(self.0);
    }
}

#[test]
fn dropping_a_suspended_fiber_runs_its_destructors_in_order() {
    let log = Rc::new(RefCell::new(Vec::new()));
    let inner_log = Rc::clone(&log);
    let mut suspended_fiber = fiber(move |suspender, _| {
        let _outer = Recorder("outer", Rc::clone(&inner_log));
        let _inner = Recorder("inner", Rc::clone(&inner_log));
        suspender.suspend(0);
        unreachable!("a dropped fiber is never resumed normally");
    });
    assert_eq!(suspended(suspended_fiber.resume(0)), 0);
    assert!(log.borrow().is_empty());
    drop(suspended_fiber);
    assert_eq!(*log.borrow(), ["inner", "outer"]);
}

#[test]
fn an_unstarted_fiber_drops_its_closure_without_running_it() {
    let log = Rc::new(RefCell::new(Vec::new()));
    let captured = Recorder("captured", Rc::clone(&log));
    let ran = Rc::new(Cell::new(false));
    let ran_inside = Rc::clone(&ran);
    let never_started = fiber(move |_, value| {
        let _keep = &captured;
        ran_inside.set(true);
        value
    });
    drop(never_started);
    assert!(!ran.get());
    assert_eq!(*log.borrow(), ["captured"]);
}

#[test]
#[should_panic(expected = "resumed a finished fiber")]
fn resuming_a_finished_fiber_panics() {
    let mut done = fiber(|_, value| value);
    returned(done.resume(1));
    done.resume(2);
}

// Backtraces: a backtrace taken three calls deep inside a fiber continues into the stack that
// resumed it on the native backend (its trampoline carries CFI for that); on the portable
// backend it ends cleanly at the root of the fiber's stack.

#[inline(never)]
fn level_three() -> String {
    std::backtrace::Backtrace::force_capture().to_string()
}

#[inline(never)]
fn level_two() -> String {
    black_box(level_three())
}

#[inline(never)]
fn level_one() -> String {
    black_box(level_two())
}

#[inline(never)]
fn resumer_on_the_thread_stack(captured: &RefCell<String>) {
    let mut traced = fiber(|_, _| {
        *captured.borrow_mut() = level_one();
        0
    });
    returned(traced.resume(0));
}

/// The frame the walk must reach past the resumer's (a test function itself may be inlined
/// into the harness when optimised).
#[inline(never)]
fn caller_of_the_resumer(captured: &RefCell<String>) {
    resumer_on_the_thread_stack(captured);
    black_box(()); // no tail call: this frame stays on the stack
}

#[test]
fn a_backtrace_inside_a_fiber_crosses_into_the_resumers_stack() {
    let captured = RefCell::new(String::new());
    caller_of_the_resumer(&captured);
    let trace = captured.into_inner();
    let frames = frame_names(&trace);
    let position = |name: &str| frames.iter().position(|frame| frame.ends_with(name));
    let deepest = position("::level_three").expect("the capturing frame");
    assert_eq!(position("::level_two"), Some(deepest + 1), "{trace}");
    assert_eq!(position("::level_one"), Some(deepest + 2), "{trace}");
    let resumer = position("::resumer_on_the_thread_stack");
    let caller = position("::caller_of_the_resumer");
    if awaitlet::BACKEND != "context" {
        // Past the fiber's root, the walk goes on down the resumer's stack to its caller.
        let resumer = resumer.unwrap_or_else(|| panic!("stopped at the fiber's root:\n{trace}"));
        assert!(resumer > deepest + 2, "{trace}");
        assert_eq!(caller, Some(resumer + 1), "{trace}");
    } else {
        // No CFI in fcontext: the walk ends cleanly at the root of the fiber's stack.
        assert_eq!((resumer, caller), (None, None), "{trace}");
    }
}

#[test]
fn a_closure_too_large_for_its_stack_is_refused() {
    // The closure lives at the top of the fiber's stack; one larger than half the stack would
    // leave no room to run (or, beyond the whole stack, write below it).
    let stack = Stack::new(awaitlet::stack::MIN_STACK_SIZE).unwrap();
    let large = [7u8; 100 * 1024];
    let refused = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        Fiber::new(stack, move |_: &Suspender, value| {
            value + black_box(&large).len()
        })
    }))
    .err()
    .expect("a 100 KiB closure on a 64 KiB stack was accepted");
    let message = refused
        .downcast_ref::<String>()
        .expect("a formatted message");
    assert!(
        message.contains("102400 bytes") && message.contains("larger stack"),
        "{message}"
    );
}
