//! The cost per request of each route from async code to an `async_def`, on tokio.
//!
//! A request is one `async_def` whose synchronous function waits once (a `yield_now`, pending
//! once) and returns. The routes:
//!
//! - `inline`: the caller awaits the `AsyncDef` itself, inside a `LocalSet` (the floor: no task);
//! - `spawn_local`: `tokio::task::spawn_local` in a `LocalSet` (a task, no thread hop; the
//!   caller must itself be on the `LocalSet`'s thread, so it is no route from a `Send` context);
//! - `spawn_pinned`: from a `tokio::spawn`ed (`Send`) task on a two-worker multi-threaded
//!   runtime, tokio-util's `LocalPoolHandle::spawn_pinned` (two hops: to the pool thread and
//!   back);
//! - `spawn_blocking`: from the same kind of task, `spawn_blocking` running
//!   `Handle::block_on(async_def(..))` on a blocking-pool thread (two hops as well).
//!
//! Requests run one after another, so each row is a round-trip latency, not a throughput.
//! Each figure is the median of five runs of `AWAITLET_ROUTES_REQUESTS` requests (5,000
//! unless told), after a warm-up. A plain program, not criterion: it prints one table.
//!
//! ```sh
//! cargo bench --bench routes
//! ```

use std::{
    future::Future,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use awaitlet::{async_def, awaitlet};
use tokio_util::task::LocalPoolHandle;

/// The synchronous function of every request: one real suspension, then a result.
fn work(number: u64) -> u64 {
    awaitlet(tokio::task::yield_now());
    std::hint::black_box(number) + 1
}

/// Set when run as a test (`cargo test --benches`): a few requests only.
static QUICK: AtomicBool = AtomicBool::new(false);

fn requests() -> u64 {
    if QUICK.load(Ordering::Relaxed) {
        return 20;
    }
    std::env::var("AWAITLET_ROUTES_REQUESTS")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(5_000)
}

/// The median of five timed runs of `run(count)`, after one warm-up run: time per request.
fn measure(mut run: impl FnMut(u64) -> Duration) -> Duration {
    let count = requests();
    run(count / 10 + 1);
    let mut runs: Vec<Duration> = (0..5).map(|_| run(count) / count as u32).collect();
    runs.sort();
    runs[2]
}

/// Times requests made one after another on a `LocalSet` of a current-thread runtime.
fn measure_on_a_local_set<F: Future<Output = u64>>(request: impl Fn(u64) -> F) -> Duration {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let local = tokio::task::LocalSet::new();
    measure(|count| {
        local.block_on(&runtime, async {
            let started = Instant::now();
            for number in 0..count {
                assert_eq!(request(number).await, number + 1);
            }
            started.elapsed()
        })
    })
}

/// Times requests made one after another from a `tokio::spawn`ed task of a two-worker
/// multi-threaded runtime.
fn measure_from_a_send_task<F>(request: impl Fn(u64) -> F + Clone + Send + 'static) -> Duration
where
    F: Future<Output = u64> + Send,
{
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    measure(|count| {
        let request = request.clone();
        runtime
            .block_on(runtime.spawn(async move {
                let started = Instant::now();
                for number in 0..count {
                    assert_eq!(request(number).await, number + 1);
                }
                started.elapsed()
            }))
            .unwrap()
    })
}

fn inline() -> Duration {
    measure_on_a_local_set(|number| async_def(move || work(number)))
}

fn spawn_local() -> Duration {
    measure_on_a_local_set(|number| async move {
        let task = tokio::task::spawn_local(async_def(move || work(number)));
        task.await.unwrap()
    })
}

fn spawn_pinned() -> Duration {
    let pool = LocalPoolHandle::new(2);
    measure_from_a_send_task(move |number| {
        let pool = pool.clone();
        async move {
            pool.spawn_pinned(move || async_def(move || work(number)))
                .await
                .unwrap()
        }
    })
}

fn spawn_blocking() -> Duration {
    measure_from_a_send_task(|number| async move {
        let handle = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || handle.block_on(async_def(move || work(number))))
            .await
            .unwrap()
    })
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs it once, quickly.
    QUICK.store(
        std::env::args().any(|argument| argument == "--test"),
        Ordering::Relaxed,
    );
    let floor = inline();
    let rows = [
        ("inline (await in a LocalSet)", "no", floor),
        ("spawn_local (LocalSet task)", "no", spawn_local()),
        ("spawn_pinned (tokio-util pool)", "yes", spawn_pinned()),
        ("spawn_blocking + Handle::block_on", "yes", spawn_blocking()),
    ];
    println!(
        "{} requests per run, median of 5 runs, one yield per request",
        requests()
    );
    println!("| route | from a `Send` task | per request | / inline |");
    println!("|---|---|---|---|");
    for (route, from_send, per_request) in rows {
        println!(
            "| {route} | {from_send} | {:.2} us | {:.1} |",
            per_request.as_secs_f64() * 1e6,
            per_request.as_secs_f64() / floor.as_secs_f64()
        );
    }
}
