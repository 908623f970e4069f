//! The greenlet API's costs, beside the same loops on corosensei, in one run.
//!
//! - `switch_unit`: one round trip main -> greenlet -> main, passing `()` both ways.
//! - `switch_u64`: the same, passing a `u64`.
//! - `corosensei_resume_yield`: the same round trip on a corosensei coroutine.
//! - `create_start_finish`: a greenlet's whole life on a warm stack pool: create it, switch in
//!   (it returns at once), drop the handle.
//!
//! Goals: `switch_unit` <= 1.5 x `corosensei_resume_yield`; `create_start_finish` <= 40 ns.

use std::hint::black_box;

use awaitlet::stack::DEFAULT_STACK_SIZE;
use awaitlet::{Greenlet, getcurrent};
use corosensei::stack::DefaultStack;
use corosensei::{Coroutine, CoroutineResult};
use criterion::{Criterion, criterion_group, criterion_main};

/// A greenlet that hands every value straight back to main, forever.
fn echo<T: 'static>() -> Greenlet {
    let main = getcurrent();
    Greenlet::new(move |mut value: T| {
        loop {
            value = main.switch::<T, T>(value).unwrap();
        }
    })
}

fn greenlet(c: &mut Criterion) {
    let mut group = c.benchmark_group("greenlet");

    let unit = echo::<()>();
    unit.switch::<(), ()>(()).unwrap();
    group.bench_function("switch_unit", |b| {
        b.iter(|| unit.switch::<(), ()>(()).unwrap())
    });
    drop(unit); // killed on drop: unwound, stack back to the pool

    let number = echo::<u64>();
    number.switch::<u64, u64>(0).unwrap();
    group.bench_function("switch_u64", |b| {
        b.iter(|| number.switch::<u64, u64>(black_box(7)).unwrap())
    });
    drop(number);

    let mut coroutine: Coroutine<(), (), (), DefaultStack> = Coroutine::with_stack(
        DefaultStack::new(DEFAULT_STACK_SIZE).unwrap(),
        |yielder, ()| {
            loop {
                yielder.suspend(());
            }
        },
    );
    group.bench_function("corosensei_resume_yield", |b| {
        b.iter(|| match coroutine.resume(()) {
            CoroutineResult::Yield(()) => {}
            CoroutineResult::Return(()) => unreachable!("the coroutine never returns"),
        })
    });
    drop(coroutine);

    Greenlet::new(|n: u64| n).switch::<u64, u64>(0).unwrap(); // warm the pool
    group.bench_function("create_start_finish", |b| {
        b.iter(|| {
            let adder = Greenlet::new(|n: u64| n + 1);
            adder.switch::<u64, u64>(black_box(41)).unwrap()
        })
    });

    group.finish();
}

criterion_group!(benches, greenlet);
criterion_main!(benches);
