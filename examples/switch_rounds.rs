//! A fixed number of switch round trips, for counting instructions where time means nothing
//! (under an emulator such as qemu-user, or Valgrind).
//!
//! Runs N round trips (default 10,000) of each kind, in this order, and prints the backend:
//!
//! - a bare fiber round trip (`awaitlet::engine::Fiber`): resume a fiber that suspends straight
//!   back with `v + 1`, as `benches/switch.rs` times it;
//! - a greenlet round trip: the main greenlet switches to a greenlet that switches straight
//!   back, as `benches/greenlet.rs` times it.
//!
//! The count per round trip is the difference between a run with 2N and one with N, divided
//! by N: what runs once (start-up, stack creation) cancels out. `asm-notes/measurements.md`
//! has the figures and the commands.
//!
//! ```text
//! cargo run --release --example switch_rounds [fiber|greenlet] [N]
//! ```

use std::hint::black_box;

use awaitlet::Greenlet;
use awaitlet::engine::{Fiber, Resumed};
use awaitlet::stack::{DEFAULT_STACK_SIZE, Stack};

fn fiber_rounds(rounds: usize) -> usize {
    let mut fiber = Fiber::new(
        Stack::new(DEFAULT_STACK_SIZE).unwrap(),
        |suspender, value| {
            let mut value = value;
            loop {
                value = suspender.suspend(value + 1);
            }
        },
    );
    let mut total = 0;
    for _ in 0..rounds {
        match fiber.resume(black_box(1)) {
            Resumed::Suspended(value) => total += value,
            other => unreachable!("the fiber never finishes: {other:?}"),
        }
    }
    total
}

fn greenlet_rounds(rounds: usize) -> usize {
    let main = Greenlet::current();
    let partner = Greenlet::new(move |value: usize| {
        let mut value = value;
        loop {
            value = main.switch::<usize, usize>(value + 1).unwrap();
        }
    });
    let mut total = 0;
    for _ in 0..rounds {
        total += partner.switch::<usize, usize>(black_box(1)).unwrap();
    }
    total
}

fn main() {
    let mut args = std::env::args().skip(1);
    let kind = args.next().unwrap_or_else(|| "fiber".to_owned());
    let rounds: usize = args.next().map_or(10_000, |n| n.parse().expect("a count"));
    let total = match kind.as_str() {
        "fiber" => fiber_rounds(rounds),
        "greenlet" => greenlet_rounds(rounds),
        other => panic!("unknown kind {other}: fiber or greenlet"),
    };
    let backend = awaitlet::BACKEND;
    println!("{rounds} {kind} round trips on the {backend} backend: {total}");
}
