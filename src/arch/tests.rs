//! Tests of the raw switch, below every safety net: symmetric switching among contexts.

use super::{Context, init, switch, switch_final};
use crate::stack::{DEFAULT_STACK_SIZE, Stack};
use std::cell::Cell;
use std::ptr::NonNull;

/// Shared by the two sides of a ping-pong: their contexts and a counter.
struct PingPong {
    main: Context,
    a: NonNull<Context>,
    b: NonNull<Context>,
    rounds: usize,
    seen: Cell<usize>,
}

unsafe extern "C" fn ping(arg: usize, data: *mut ()) -> ! {
    // SAFETY: `data` is the `PingPong` owned by the test, alive until the final switch.
    let shared = unsafe { &*(data as *const PingPong) };
    let mut value = arg;
    for _ in 0..shared.rounds {
        // SAFETY: a is running, b is suspended (initial frame or in its own switch).
        value = unsafe { switch(value + 1, shared.a.as_ref(), shared.b.as_ref()) };
    }
    shared.seen.set(value);
    // SAFETY: main is suspended in its switch to a.
    unsafe { switch_final(value, &shared.main) }
}

unsafe extern "C" fn pong(arg: usize, data: *mut ()) -> ! {
    // SAFETY: as in `ping`.
    let shared = unsafe { &*(data as *const PingPong) };
    let mut value = arg;
    loop {
        // SAFETY: b is running, a is suspended in its switch to b.
        value = unsafe { switch(value + 1, shared.b.as_ref(), shared.a.as_ref()) };
    }
}

#[test]
fn a_million_symmetric_switches_pass_every_value() {
    let (stack_a, stack_b) = (
        Stack::new(DEFAULT_STACK_SIZE).unwrap(),
        Stack::new(DEFAULT_STACK_SIZE).unwrap(),
    );
    let mut shared = PingPong {
        main: Context::for_thread_stack(),
        a: NonNull::dangling(),
        b: NonNull::dangling(),
        rounds: 500_000,
        seen: Cell::new(0),
    };
    let data = &mut shared as *mut PingPong as *mut ();
    // SAFETY: the stacks outlive the contexts; `data` outlives every switch below.
    unsafe {
        shared.a = init(stack_a.top(), stack_a.bottom(), ping, data);
        shared.b = init(stack_b.top(), stack_b.bottom(), pong, data);
    }
    // SAFETY: we are main, a is fresh.
    let last = unsafe { switch(0, &shared.main, shared.a.as_ref()) };
    // Each of the 1,000,000 switches between a and b added one.
    assert_eq!(last, 1_000_000);
    assert_eq!(shared.seen.get(), 1_000_000);
}

unsafe extern "C" fn check_registers(arg: usize, data: *mut ()) -> ! {
    // SAFETY: `data` is the main context, suspended in its switch here.
    let main = unsafe { &*(data as *const Context) };
    // SAFETY: as above.
    unsafe { switch_final(arg.wrapping_mul(3), main) }
}

#[test]
fn callee_saved_state_survives_a_switch() {
    let stack = Stack::new(DEFAULT_STACK_SIZE).unwrap();
    let main = Context::for_thread_stack();
    // SAFETY: the stack outlives the context.
    let fresh = unsafe {
        init(
            stack.top(),
            stack.bottom(),
            check_registers,
            &main as *const Context as *mut (),
        )
    };
    // Keep many values live across the switch so the compiler must hold some in callee-saved
    // registers (and floating-point ones on the stack).
    let values: Vec<u64> = (1..=24).map(|i| i * 0x0101_0101_0101).collect();
    let live: [u64; 12] = std::array::from_fn(|i| std::hint::black_box(values[i]));
    let float = std::hint::black_box(1.5f64);
    // SAFETY: main is running, `fresh` was just made.
    let back = unsafe { switch(7, &main, fresh.as_ref()) };
    assert_eq!(back, 21);
    assert_eq!(live.to_vec(), values[..12].to_vec());
    assert_eq!(float * 2.0, 3.0);
}
