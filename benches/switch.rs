//! Context-switch and fiber-lifecycle benchmarks for the bare engine (`awaitlet::engine`).
//!
//! # `switch_roundtrip`
//!
//! One round trip A -> B -> A: resume a coroutine that immediately suspends back. Each
//! coroutine's body is an endless `v = suspend(v + 1)` loop over a `usize`; one iteration is one
//! resume with a `usize`. All three use a [`DEFAULT_STACK_SIZE`] (1 MiB) stack and are created
//! once per benchmark, outside the timed loop.
//!
//! - `awaitlet`: [`awaitlet::engine::Fiber`].
//! - `corosensei`: `corosensei::Coroutine` on a `DefaultStack`.
//! - `context`: the `context` crate (Boost.Context's `jump_fcontext`).
//!
//! Goals, within the same run: `awaitlet` <= 1.05 x `corosensei` and <= 0.35 x `context`.
//!
//! # `stack`
//!
//! A fiber's whole life: make it, enter it, let its closure return, free it.
//!
//! - `pooled`: the stack comes from and goes back to the thread's pool (warmed first).
//!   Target: <= 20 ns.
//! - `fresh`: the stack is mapped and unmapped every iteration, bypassing the pool; this is what
//!   the pool saves.
//! - `carving`: a slab's worth of stacks ([`SLAB_STACKS`]) made in a row bypassing the pool,
//!   then released; reported per stack. Where the kernel has guard regions the stacks are
//!   carved from one shared mapping, a guard region installed below each; elsewhere each is a
//!   mapping of its own with an `mprotect` guard page.

use std::hint::black_box;

use awaitlet::engine::{Fiber, Resumed};
use awaitlet::stack::{DEFAULT_STACK_SIZE, SLAB_STACKS, Stack};
use context::stack::ProtectedFixedSizeStack;
use context::{Context, Transfer};
use corosensei::stack::DefaultStack;
use corosensei::{Coroutine, CoroutineResult};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn switch_roundtrip(c: &mut Criterion) {
    let mut group = c.benchmark_group("switch_roundtrip");

    // Dropped at the end, while suspended: the drop unwinds the fiber's stack and pools it.
    let mut fiber = Fiber::new(Stack::new(DEFAULT_STACK_SIZE).unwrap(), |s, v| {
        let mut v = v;
        loop {
            v = s.suspend(v + 1);
        }
    });
    group.bench_function("awaitlet", |b| {
        b.iter(|| match fiber.resume(black_box(1)) {
            Resumed::Suspended(v) => v,
            other => unreachable!("the fiber never finishes: {other:?}"),
        })
    });
    drop(fiber);

    // Dropped at the end, while suspended: corosensei force-unwinds it, then unmaps the stack.
    let mut coroutine: Coroutine<usize, usize, (), DefaultStack> =
        Coroutine::with_stack(DefaultStack::new(DEFAULT_STACK_SIZE).unwrap(), |y, v| {
            let mut v = v;
            loop {
                v = y.suspend(v + 1);
            }
        });
    group.bench_function("corosensei", |b| {
        b.iter(|| match coroutine.resume(black_box(1)) {
            CoroutineResult::Yield(v) => v,
            CoroutineResult::Return(()) => unreachable!("the coroutine never finishes"),
        })
    });
    drop(coroutine);

    let stack = ProtectedFixedSizeStack::new(DEFAULT_STACK_SIZE).unwrap();
    // `Context::resume` consumes the handle and the switch back hands a new one, so it lives in
    // an `Option` the timed loop can move it out of and back into.
    // SAFETY: `stack` outlives every use of the context: it is dropped only after the last one.
    let mut context = Some(unsafe { Context::new(&stack, context_loop) });
    group.bench_function("context", |b| {
        b.iter(|| {
            let suspended = context
                .take()
                .expect("the context is put back after every resume");
            // SAFETY: `suspended` is the live handle of the coroutine on `stack` (fresh or just
            // handed back by its last switch), and its body owns nothing that could be leaked.
            let transfer = unsafe { suspended.resume(black_box(1)) };
            context = Some(transfer.context);
            transfer.data
        })
    });
    // A suspended `context` coroutine cannot be unwound, so it is abandoned inside
    // `context_loop`: `context`, its handle, is never used again, and as the frame holds only
    // plain words (no destructors to miss) unmapping the stack under it leaks nothing.
    drop(stack);

    group.finish();
}

/// The `context` coroutine's body: answers every resume with its data plus one, forever.
extern "C" fn context_loop(mut t: Transfer) -> ! {
    loop {
        // SAFETY: `t.context` is the resumer that just switched here, suspended in its `resume`.
        t = unsafe { t.context.resume(t.data + 1) };
    }
}

fn stack(c: &mut Criterion) {
    let mut group = c.benchmark_group("stack");

    // Warm the pool so `pooled` never maps: after this, one stack of the size is pooled.
    drop(Stack::new(DEFAULT_STACK_SIZE).unwrap());
    group.bench_function("pooled", |b| {
        b.iter(|| {
            let mut fiber = Fiber::new(Stack::new(DEFAULT_STACK_SIZE).unwrap(), |_, v| v + 1);
            match fiber.resume(black_box(1)) {
                Resumed::Returned(v) => v,
                other => unreachable!("the fiber returns at once: {other:?}"),
            }
            // `fiber` drops here, finished: its stack goes back to the pool.
        })
    });

    group.bench_function("fresh", |b| {
        b.iter(|| {
            let mut fiber = Fiber::new(Stack::fresh(DEFAULT_STACK_SIZE).unwrap(), |_, v| v + 1);
            let v = match fiber.resume(black_box(1)) {
                Resumed::Returned(v) => v,
                other => unreachable!("the fiber returns at once: {other:?}"),
            };
            // Bypass the pool on the way out too, so every iteration maps and unmaps.
            fiber.into_stack().unmap();
            v
        })
    });

    group.throughput(Throughput::Elements(SLAB_STACKS as u64));
    let mut stacks = Vec::with_capacity(SLAB_STACKS);
    group.bench_function("carving", |b| {
        b.iter(|| {
            stacks.extend((0..SLAB_STACKS).map(|_| Stack::fresh(DEFAULT_STACK_SIZE).unwrap()));
            stacks.drain(..).for_each(Stack::unmap);
        })
    });

    group.finish();
}

criterion_group!(benches, switch_roundtrip, stack);
criterion_main!(benches);
