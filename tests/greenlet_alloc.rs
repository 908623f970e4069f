//! Allocation counts, which are deterministic: a counting global allocator proves that switches
//! allocate nothing, and neither does a greenlet's whole life on a warm stack pool.

use awaitlet::{Greenlet, getcurrent};

#[path = "support/counting_allocator.rs"]
mod counting_allocator;

use counting_allocator::count;

/// A greenlet that bounces every value straight back to main, forever.
fn echo<T: 'static>() -> Greenlet {
    let main = getcurrent();
    Greenlet::new(move |mut value: T| {
        loop {
            value = main.switch::<T, T>(value).unwrap();
        }
    })
}

#[test]
fn switching_unit_allocates_nothing() {
    let echo = echo::<()>();
    echo.switch::<(), ()>(()).unwrap(); // start it
    let (allocations, deallocations, ()) = count(|| {
        for _ in 0..10_000 {
            echo.switch::<(), ()>(()).unwrap();
        }
    });
    assert_eq!((allocations, deallocations), (0, 0));
}

#[test]
fn switching_values_up_to_two_words_allocates_nothing() {
    let pairs = echo::<(u64, u64)>();
    let text = echo::<&'static str>();
    pairs.switch::<_, (u64, u64)>((0u64, 0u64)).unwrap();
    text.switch::<_, &str>("start").unwrap();
    let (allocations, deallocations, sum) = count(|| {
        let mut sum = 0;
        for round in 0..10_000u64 {
            let (a, b) = pairs.switch::<_, (u64, u64)>((round, round * 2)).unwrap();
            sum += a + b + text.switch::<_, &str>("two words").unwrap().len() as u64;
        }
        sum
    });
    assert_eq!(sum, (0..10_000u64).map(|round| round * 3 + 9).sum::<u64>());
    assert_eq!((allocations, deallocations), (0, 0));
}

#[test]
fn a_greenlets_life_on_a_warm_pool_allocates_nothing() {
    // Warm up: the main greenlet, the stack pool and the overflow handler's first use.
    Greenlet::new(|n: u64| n).switch::<u64, u64>(1).unwrap();
    let (allocations, deallocations, result) = count(|| {
        let adder = Greenlet::new(|n: u64| n + 1);
        let result = adder.switch::<u64, u64>(41).unwrap();
        drop(adder);
        result
    });
    assert_eq!(result, 42);
    // The record and the closure live at the top of the greenlet's stack, which comes from
    // and returns to the pool.
    assert_eq!((allocations, deallocations), (0, 0));
}

#[test]
fn a_throw_frees_everything_it_allocates() {
    let main = getcurrent();
    let catcher = Greenlet::new(move |()| {
        loop {
            let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                main.switch::<(), ()>(())
            }));
            assert!(caught.is_err());
        }
    });
    catcher.switch::<(), ()>(()).unwrap();
    let previous_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    catcher.throw::<()>(0u8).unwrap(); // warm the unwinder's caches
    let (allocations, deallocations, ()) = count(|| catcher.throw::<()>(7u8).unwrap());
    std::panic::set_hook(previous_hook);
    // The payload's box (made by `throw`) and the unwinder's exception object: all freed.
    assert!(
        allocations >= 1 && allocations == deallocations,
        "{allocations} / {deallocations}"
    );
}
