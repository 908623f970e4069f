//! Tests of the raw switch, below every safety net: symmetric switching among contexts.

use super::{Context, init, switch, switch_final};
use crate::stack::{DEFAULT_STACK_SIZE, Stack};
use std::cell::Cell;
use std::ptr::NonNull;

/// Shared by the two sides of a ping-pong: their contexts and counters.
struct PingPong {
    main: Context,
    a: NonNull<Context>,
    b: NonNull<Context>,
    rounds: usize,
    seen: Cell<usize>,
    /// Switches whose reported sender was not the context that actually switched.
    wrong_senders: Cell<usize>,
}

impl PingPong {
    fn check_sender(&self, sender: *const Context, expected: NonNull<Context>) {
        if sender != expected.as_ptr() {
            self.wrong_senders.set(self.wrong_senders.get() + 1);
        }
    }
}

unsafe extern "C" fn ping(arg: usize, data: *mut (), sender: *const Context) -> ! {
    // SAFETY: `data` is the `PingPong` owned by the test, alive until the final switch.
    let shared = unsafe { &*(data as *const PingPong) };
    if !std::ptr::eq(sender, &shared.main) {
        shared.wrong_senders.set(shared.wrong_senders.get() + 1);
    }
    let mut value = arg;
    for _ in 0..shared.rounds {
        // SAFETY: a is running, b is suspended (initial frame or in its own switch).
        let (received, sender) = unsafe { switch(value + 1, shared.a.as_ref(), shared.b.as_ref()) };
        shared.check_sender(sender, shared.b);
        value = received;
    }
    shared.seen.set(value);
    // SAFETY: main is suspended in its switch to a.
    unsafe { switch_final(value, shared.a.as_ref(), &shared.main) }
}

unsafe extern "C" fn pong(arg: usize, data: *mut (), sender: *const Context) -> ! {
    // SAFETY: as in `ping`.
    let shared = unsafe { &*(data as *const PingPong) };
    shared.check_sender(sender, shared.a);
    let mut value = arg;
    loop {
        // SAFETY: b is running, a is suspended in its switch to b.
        let (received, sender) = unsafe { switch(value + 1, shared.b.as_ref(), shared.a.as_ref()) };
        shared.check_sender(sender, shared.a);
        value = received;
    }
}

#[test]
fn a_million_symmetric_switches_pass_every_value_and_name_their_sender() {
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
        wrong_senders: Cell::new(0),
    };
    let data = &mut shared as *mut PingPong as *mut ();
    // SAFETY: the stacks outlive the contexts; `data` outlives every switch below.
    unsafe {
        shared.a = init(stack_a.top(), stack_a.bottom(), ping, data);
        shared.b = init(stack_b.top(), stack_b.bottom(), pong, data);
    }
    // A context made by `init` is owned by its `data`.
    // SAFETY: both contexts were just made and live on their stacks.
    unsafe {
        assert_eq!(shared.a.as_ref().owner(), data as usize);
        assert_eq!(shared.b.as_ref().owner(), data as usize);
    }
    // SAFETY: we are main, a is fresh.
    let (last, sender) = unsafe { switch(0, &shared.main, shared.a.as_ref()) };
    // Each of the 1,000,000 switches between a and b added one.
    assert_eq!(last, 1_000_000);
    assert_eq!(shared.seen.get(), 1_000_000);
    assert_eq!(
        sender,
        shared.a.as_ptr() as *const Context,
        "the final switch came from a"
    );
    assert_eq!(shared.wrong_senders.get(), 0);
}

/// What `check_registers` needs: where to return, and its own context.
struct Pair {
    main: Context,
    own: Cell<*const Context>,
}

/// Fills every callee-saved register that the aarch64 switch leaves to the compiler (`x20`-`x28`,
/// `d8`-`d15`; `x19` and `x29` the switch restores itself) with junk, so that a value main kept in
/// one of them across its switch, unsaved, would show.
/// Inlined always (at every optimisation level), or its own epilogue would restore them.
#[cfg(target_arch = "aarch64")]
#[inline(always)]
fn scribble_on_callee_saved_registers() {
    // SAFETY: writes only registers declared as outputs; touches no memory.
    unsafe {
        std::arch::asm!(
            "mov x20, #0x5a5a",
            "mov x21, x20", "mov x22, x20", "mov x23, x20", "mov x24, x20",
            "mov x25, x20", "mov x26, x20", "mov x27, x20", "mov x28, x20",
            "fmov d8, x20", "fmov d9, x20", "fmov d10, x20", "fmov d11, x20",
            "fmov d12, x20", "fmov d13, x20", "fmov d14, x20", "fmov d15, x20",
            out("x20") _, out("x21") _, out("x22") _, out("x23") _, out("x24") _,
            out("x25") _, out("x26") _, out("x27") _, out("x28") _,
            out("v8") _, out("v9") _, out("v10") _, out("v11") _,
            out("v12") _, out("v13") _, out("v14") _, out("v15") _,
            options(nomem, nostack),
        );
    }
}

unsafe extern "C" fn check_registers(arg: usize, data: *mut (), sender: *const Context) -> ! {
    // SAFETY: `data` is the test's `Pair`, alive while main is suspended in its switch here.
    let pair = unsafe { &*(data as *const Pair) };
    let from_main = std::ptr::eq(sender, &pair.main);
    // Nothing of this frame is needed after the switch below, which never returns, so whatever
    // these registers hold when main resumes is junk unless the switch's contract made main's
    // own code save them.
    #[cfg(target_arch = "aarch64")]
    scribble_on_callee_saved_registers();
    // SAFETY: main is suspended; `own` is this context, set before main switched here.
    unsafe {
        switch_final(
            arg.wrapping_mul(3) + usize::from(!from_main),
            &*pair.own.get(),
            &pair.main,
        )
    }
}

#[test]
fn callee_saved_state_survives_a_switch() {
    let stack = Stack::new(DEFAULT_STACK_SIZE).unwrap();
    let pair = Pair {
        main: Context::for_thread_stack(),
        own: Cell::new(std::ptr::null()),
    };
    // SAFETY: the stack outlives the context.
    let fresh = unsafe {
        init(
            stack.top(),
            stack.bottom(),
            check_registers,
            &pair as *const Pair as *mut (),
        )
    };
    pair.own.set(fresh.as_ptr());
    // Keep many values live across the switch so the compiler must hold some in callee-saved
    // registers (and floating-point ones on the stack).
    let values: Vec<u64> = (1..=24).map(|i| i * 0x0101_0101_0101).collect();
    let live: [u64; 12] = std::array::from_fn(|i| std::hint::black_box(values[i]));
    let float = std::hint::black_box(1.5f64);
    // SAFETY: main is running, `fresh` was just made.
    let (back, sender) = unsafe { switch(7, &pair.main, fresh.as_ref()) };
    assert_eq!(
        back, 21,
        "the word, tripled; plus one had the sender not been main"
    );
    assert_eq!(sender, fresh.as_ptr() as *const Context);
    assert_eq!(live.to_vec(), values[..12].to_vec());
    assert_eq!(float * 2.0, 3.0);
}
