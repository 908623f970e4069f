//! Resident memory of suspended greenlets, with guard pages off (the unsafe
//! `set_guard_pages(false)`).
//!
//! Suspends N `async_def`s at once (default 100,000) on one thread, twice: once waiting a few
//! shallow frames deep, once waiting below frames that take several KiB more. Each time it
//! reads `VmRSS` from `/proc/self/status` before and after and prints the resident memory per
//! suspended greenlet, beside how deep the function's own frames went (from its first local to
//! a local at the wait). What is resident beyond those frames is the greenlet's fixed cost: its
//! record and closure at the top of the stack, the frames that enter it and switch away, the
//! canary, and the rounding up to whole pages.
//!
//! ```text
//! cargo run --release --example resident_memory [count] [stack KiB]
//! ```

use std::cell::Cell;
use std::future::Future;
use std::hint::black_box;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use awaitlet::stack::{set_guard_pages, trim_pool};
use awaitlet::{AsyncDef, async_def, awaitlet};

/// Pending until its gate opens.
struct Gate(Rc<Cell<bool>>);

impl Future for Gate {
    type Output = ();
    fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
        if self.0.get() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

/// Recurses `levels` frames of about a KiB each, then waits; returns the address of a local of
/// the deepest frame.
#[inline(never)]
fn wait_below(gate: &Rc<Cell<bool>>, levels: usize) -> usize {
    let frame = black_box([levels as u8; 1024]);
    if levels == 0 {
        let here = black_box(&frame as *const _ as usize);
        awaitlet(Gate(gate.clone()));
        return here + frame[0] as usize;
    }
    wait_below(gate, levels - 1) + frame[levels % 1024] as usize
}

fn resident_bytes() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let line = status
        .lines()
        .find(|line| line.starts_with("VmRSS:"))
        .expect("a VmRSS line");
    let kib: usize = line
        .split_whitespace()
        .nth(1)
        .and_then(|field| field.parse().ok())
        .expect("VmRSS in kB");
    kib * 1024
}

/// Suspends `count` greenlets that wait `levels` KiB-sized frames deep; returns the resident
/// bytes per suspended greenlet and the depth of the function's own frames.
fn measure(count: usize, stack_size: usize, levels: usize) -> (usize, usize) {
    let gate = Rc::new(Cell::new(false));
    let depth = Rc::new(Cell::new(0usize));
    let mut cx = Context::from_waker(Waker::noop());
    // Allocated and touched before the first reading, so that it does not count.
    let mut futures: Vec<Option<AsyncDef<'_, usize>>> = (0..count).map(|_| None).collect();
    let before = resident_bytes();
    for slot in &mut futures {
        let (gate, depth) = (&gate, &depth);
        let mut future = async_def(move || {
            let entry = black_box(0u8);
            let entry_address = &entry as *const u8 as usize;
            let deepest = wait_below(gate, levels);
            depth.set(entry_address - deepest);
            deepest
        })
        .stack_size(stack_size);
        assert!(Pin::new(&mut future).poll(&mut cx).is_pending());
        *slot = Some(future);
    }
    let after = resident_bytes();
    gate.set(true);
    for future in futures.iter_mut().flatten() {
        assert!(Pin::new(future).poll(&mut cx).is_ready());
    }
    drop(futures);
    trim_pool();
    (after.saturating_sub(before) / count, depth.get())
}

fn main() {
    let mut arguments = std::env::args().skip(1);
    let count: usize = arguments
        .next()
        .map_or(100_000, |n| n.parse().expect("a count"));
    let stack_kib: usize = arguments.next().map_or(64, |n| n.parse().expect("KiB"));
    // SAFETY: the functions use about 10 KiB of stack (eight frames of a KiB, then the wait)
    // on stacks of at least 64 KiB (`AsyncDef::stack_size` refuses less), and neither panic
    // nor take signals there.
    unsafe { set_guard_pages(false) };
    println!("{count} greenlets suspended at once on {stack_kib} KiB stacks, no guard pages");
    for (label, levels) in [("shallow", 0), ("deep", 8)] {
        let (per_greenlet, depth) = measure(count, stack_kib * 1024, levels);
        println!(
            "{label:>7}: {:>6.2} KiB resident per greenlet; its own frames {:>6.2} KiB deep; \
             {:>5.2} KiB beyond them",
            per_greenlet as f64 / 1024.0,
            depth as f64 / 1024.0,
            per_greenlet.saturating_sub(depth) as f64 / 1024.0,
        );
    }
}
