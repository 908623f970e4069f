//! The bridge's costs, each beside the same work done natively with `async`/`.await`, and on
//! the `stackful` crate where it has a counterpart, in one run:
//!
//! - `*_ready`: one wait on a future that is ready at once, from inside a running function.
//! - `*_pending_rt`: one wait on a future that is pending once: out to the poller, which polls
//!   again at once (a no-op waker, no executor), and back in.
//! - `*_spawn_await1`: a whole function on a warm stack pool: make it, poll it (it waits on a
//!   future pending once), poll it again (it finishes), drop it.
//! - `tokio_*_yield_now`: one `tokio::task::yield_now()` on a current-thread runtime.
//!
//! Goals: `awaitlet_pending_rt` <= 6 ns; `tokio_awaitlet_yield_now` <= 1.10 x
//! `tokio_native_yield_now`; `awaitlet_spawn_await1` <= 1.3 x `native_spawn_await1`; ahead of
//! `stackful` on every row.

use std::future::{Future, ready};
use std::hint::black_box;
use std::pin::{Pin, pin};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use awaitlet::{async_def, awaitlet};
use criterion::{Criterion, criterion_group, criterion_main};

/// Pending on its first poll (waking itself), then ready.
#[derive(Default)]
struct PendingOnce(bool);

impl Future for PendingOnce {
    type Output = ();

    #[inline]
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if std::mem::replace(&mut self.0, true) {
            Poll::Ready(())
        } else {
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }
}

/// Polls `future` to completion with a no-op waker, as fast as it can.
#[inline]
fn drive<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
            return output;
        }
    }
}

fn ready_rows(c: &mut Criterion) {
    let mut group = c.benchmark_group("bridge");
    group.bench_function("awaitlet_ready", |b| {
        b.iter_custom(|iterations| {
            drive(async_def(|| {
                let start = Instant::now();
                for round in 0..iterations {
                    black_box(awaitlet(ready(black_box(round))));
                }
                start.elapsed()
            }))
        })
    });
    group.bench_function("native_ready", |b| {
        b.iter_custom(|iterations| {
            drive(async {
                let start = Instant::now();
                for round in 0..iterations {
                    black_box(ready(black_box(round)).await);
                }
                start.elapsed()
            })
        })
    });
    group.bench_function("stackful_ready", |b| {
        b.iter_custom(|iterations| {
            drive(stackful::stackful(|| {
                let start = Instant::now();
                for round in 0..iterations {
                    black_box(stackful::wait(ready(black_box(round))));
                }
                start.elapsed()
            }))
        })
    });

    group.bench_function("awaitlet_pending_rt", |b| {
        b.iter_custom(|iterations| {
            drive(async_def(|| {
                let start = Instant::now();
                for _ in 0..iterations {
                    awaitlet(PendingOnce::default());
                }
                start.elapsed()
            }))
        })
    });
    group.bench_function("native_pending_rt", |b| {
        b.iter_custom(|iterations| {
            drive(async {
                let start = Instant::now();
                for _ in 0..iterations {
                    PendingOnce::default().await;
                }
                start.elapsed()
            })
        })
    });
    group.bench_function("stackful_pending_rt", |b| {
        b.iter_custom(|iterations| {
            drive(stackful::stackful(|| {
                let start = Instant::now();
                for _ in 0..iterations {
                    stackful::wait(PendingOnce::default());
                }
                start.elapsed()
            }))
        })
    });

    drive(async_def(|| awaitlet(PendingOnce::default()))); // warm the stack pool
    group.bench_function("awaitlet_spawn_await1", |b| {
        b.iter(|| drive(async_def(|| awaitlet(PendingOnce::default()))))
    });
    group.bench_function("native_spawn_await1", |b| {
        b.iter(|| drive(async { PendingOnce::default().await }))
    });
    group.bench_function("stackful_spawn_await1", |b| {
        b.iter(|| {
            drive(stackful::stackful(
                || stackful::wait(PendingOnce::default()),
            ))
        })
    });
    group.finish();
}

fn tokio_rows(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a tokio runtime");
    let mut group = c.benchmark_group("bridge");
    group.bench_function("tokio_awaitlet_yield_now", |b| {
        b.iter_custom(|iterations| {
            runtime.block_on(async_def(|| {
                let start = Instant::now();
                for _ in 0..iterations {
                    awaitlet(tokio::task::yield_now());
                }
                start.elapsed()
            }))
        })
    });
    group.bench_function("tokio_native_yield_now", |b| {
        b.iter_custom(|iterations| {
            runtime.block_on(async {
                let start = Instant::now();
                for _ in 0..iterations {
                    tokio::task::yield_now().await;
                }
                start.elapsed()
            })
        })
    });
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
}

criterion_group! {
    name = benches;
    config = config();
    targets = ready_rows, tokio_rows
}
criterion_main!(benches);
