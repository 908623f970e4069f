//! Allocation counts for the bridge, which are deterministic: a counting global allocator
//! proves that `awaitlet` allocates nothing, ready or pending, and that a whole `async_def` on a
//! warm stack pool allocates nothing either (its closure and result live on its stack).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use awaitlet::{async_def, awaitlet};

#[path = "support/counting_allocator.rs"]
mod counting_allocator;

use counting_allocator::count;

/// Pending once (waking itself), then ready with its value.
struct PendingOnce<T>(Option<T>, bool);

impl<T: Unpin> Future for PendingOnce<T> {
    type Output = T;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        if std::mem::replace(&mut self.1, true) {
            Poll::Ready(self.0.take().expect("polled after ready"))
        } else {
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }
}

fn pending_once<T>(value: T) -> PendingOnce<T> {
    PendingOnce(Some(value), false)
}

/// Polls `future` to completion with a waker that does nothing; returns the output and the
/// number of `Pending` polls.
fn drive<F: Future + Unpin>(mut future: F) -> (F::Output, usize) {
    let mut cx = Context::from_waker(Waker::noop());
    let mut pending = 0;
    loop {
        match Pin::new(&mut future).poll(&mut cx) {
            Poll::Ready(output) => return (output, pending),
            Poll::Pending => pending += 1,
        }
    }
}

/// Warms up everything a first use sets up once per thread: the main greenlet, the stack
/// pool, the overflow handler.
fn warm_up() {
    drive(async_def(|| awaitlet(pending_once(1u64))));
}

#[test]
fn a_whole_async_def_on_a_warm_pool_allocates_nothing() {
    warm_up();
    let data = [1u64, 2, 3];
    let (allocations, deallocations, (sum, pending)) = count(|| {
        drive(async_def(|| {
            data.iter()
                .map(|&n| awaitlet(pending_once(n)) * 10)
                .sum::<u64>()
        }))
    });
    assert_eq!((sum, pending), (60, 3));
    assert_eq!((allocations, deallocations), (0, 0));
}

#[test]
fn awaitlet_allocates_nothing_ready_or_pending() {
    warm_up();
    let (outside_allocations, outside_deallocations, (total, pending)) = {
        let mut inner = (0, 0);
        let result = drive(async_def(|| {
            let (allocations, deallocations, total) = count(|| {
                let mut total = 0u64;
                for round in 0..1000u64 {
                    total += awaitlet(async { round });
                    total += awaitlet(pending_once(round));
                }
                total
            });
            inner = (allocations, deallocations);
            total
        }));
        (inner.0, inner.1, result)
    };
    assert_eq!(total, 2 * (0..1000u64).sum::<u64>());
    assert_eq!(pending, 1000);
    assert_eq!((outside_allocations, outside_deallocations), (0, 0));
}

#[test]
fn a_large_result_and_closure_live_on_the_stack_not_the_heap() {
    warm_up();
    let big = [9u8; 4096];
    let (allocations, deallocations, (result, _)) = count(|| {
        drive(async_def(move || {
            let mut copy = big;
            copy[0] = awaitlet(pending_once(1u8));
            copy
        }))
    });
    assert_eq!(result[..2], [1, 9]);
    assert_eq!((allocations, deallocations), (0, 0));
}

#[test]
fn cancelling_a_waiting_async_def_allocates_only_the_unwinders_exception() {
    warm_up();
    let (allocations, deallocations, ()) = count(|| {
        let mut future = async_def(|| awaitlet(std::future::pending::<()>()));
        let mut cx = Context::from_waker(Waker::noop());
        assert!(Pin::new(&mut future).poll(&mut cx).is_pending());
        drop(future);
    });
    // The cancellation payload is zero-sized (its box allocates nothing); unwinding needs only
    // the unwinder's exception object, freed again when the unwind is caught.
    assert_eq!((allocations, deallocations), (1, 1));
}
