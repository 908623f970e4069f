//! Three `async_def`s spawned with async-std's `spawn_local`, each running synchronous code
//! that naps between its steps; the naps overlap, so the steps interleave.
//!
//! `spawn_local` keeps a task on the current thread, as an `AsyncDef` (which is `!Send`)
//! needs; `task::block_on` drives those tasks.
//!
//! ```sh
//! cargo run --example async_std
//! ```

use std::time::Duration;

use async_std::task;
use awaitlet::{async_def, awaitlet};

/// Plain synchronous code: three steps, a nap of `nap` before each.
fn stroll(name: &'static str, nap: Duration, sleep: &dyn Fn(Duration)) -> &'static str {
    for step in 1..=3 {
        sleep(nap);
        println!("  {name}: step {step} (after {nap:?})");
    }
    name
}

fn main() {
    let finished = task::block_on(async {
        let walkers = [("tortoise", 7), ("hare", 2), ("snail", 11)].map(|(name, millis)| {
            task::spawn_local(async_def(move || {
                stroll(name, Duration::from_millis(millis), &|nap| {
                    awaitlet(task::sleep(nap))
                })
            }))
        });
        let mut finished = Vec::new();
        for walker in walkers {
            finished.push(walker.await);
        }
        finished
    });
    println!("all done: {finished:?}");
}
