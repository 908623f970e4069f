//! Several `async_def`s on tokio, taking turns whenever their synchronous code waits.
//!
//! An `AsyncDef` is `!Send`, so tokio runs it where a task cannot move between threads: in
//! `block_on` of a current-thread runtime, or with `spawn_local` in a `LocalSet`, which also
//! works inside a multi-threaded runtime. There, the sync code can still wait for `Send`
//! tasks that run on the runtime's worker threads.
//!
//! ```sh
//! cargo run --example tokio_local
//! ```

use std::thread;
use std::time::Duration;

use awaitlet::{async_def, awaitlet};

/// Plain synchronous code: counts to three, calling `pause` after each number.
fn count(name: &str, pause: &dyn Fn()) -> String {
    for number in 1..=3 {
        println!("  {name} says {number}");
        pause();
    }
    let thread = thread::current();
    format!(
        "{name} finished on thread {:?}",
        thread.name().unwrap_or("unnamed")
    )
}

fn main() {
    println!("Three async_defs joined on a current-thread runtime, yielding after each number:");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let yield_to_the_others = || awaitlet(tokio::task::yield_now());
    let finished = runtime.block_on(async {
        tokio::join!(
            async_def(|| count("apple", &yield_to_the_others)),
            async_def(|| count("banana", &yield_to_the_others)),
            async_def(|| count("cherry", &yield_to_the_others)),
        )
    });
    println!("{}\n{}\n{}\n", finished.0, finished.1, finished.2);

    println!("Three async_defs spawned in a LocalSet inside a multi-threaded runtime, each");
    println!("waiting after each number for a task that sleeps on a worker thread:");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("runtime-worker")
        .enable_time()
        .build()
        .unwrap();
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async {
        let tasks = ["apple", "banana", "cherry"].map(|name| {
            tokio::task::spawn_local(async_def(move || {
                count(name, &|| {
                    let on_a_worker = tokio::spawn(async {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                        thread::current().name().unwrap_or_default().to_owned()
                    });
                    let worker = awaitlet(on_a_worker).unwrap();
                    println!("    ({name} waited for a task on thread {worker:?})");
                })
            }))
        });
        for task in tasks {
            println!("{}", task.await.unwrap());
        }
    });
}
