//! `async_def` on the `futures` crate's executors: `block_on`, which polls one future on the
//! current thread, and `LocalPool`, which runs many `!Send` tasks on it.
//!
//! In both, synchronous code waits on channels whose other end is fed one item at a time, so
//! it suspends at each receive and the pieces take turns.
//!
//! ```sh
//! cargo run --example futures_executor
//! ```

use awaitlet::{async_def, awaitlet};
use futures::channel::mpsc;
use futures::task::LocalSpawnExt;
use futures::{SinkExt, StreamExt};

/// Plain synchronous worker: takes jobs from `next_job` until there are no more, and returns
/// how many it did.
fn work(name: &str, next_job: &mut dyn FnMut() -> Option<String>) -> usize {
    let mut done = 0;
    while let Some(job) = next_job() {
        println!("  {name} does {job}");
        done += 1;
    }
    done
}

/// Plain synchronous pipeline stage: passes each item from `receive` through `transform` to
/// `send`, until `receive` gives `None`.
fn stage(
    name: &str,
    receive: &mut dyn FnMut() -> Option<u64>,
    transform: fn(u64) -> u64,
    send: &mut dyn FnMut(u64),
) {
    while let Some(item) = receive() {
        let output = transform(item);
        println!("  {name}: {item} -> {output}");
        send(output);
    }
}

fn main() {
    println!("block_on: an async producer and two synchronous workers, one channel each:");
    let (mut to_first, mut first_jobs) = mpsc::channel::<String>(0);
    let (mut to_second, mut second_jobs) = mpsc::channel::<String>(0);
    let producer = async move {
        for number in 1..=3 {
            to_first.send(format!("job {number}a")).await.unwrap();
            to_second.send(format!("job {number}b")).await.unwrap();
        }
        // The senders are dropped here: both workers see the end of their jobs.
    };
    let first = async_def(|| work("first", &mut || awaitlet(first_jobs.next())));
    let second = async_def(|| work("second", &mut || awaitlet(second_jobs.next())));
    let ((), first_done, second_done) =
        futures::executor::block_on(futures::future::join3(producer, first, second));
    println!("first did {first_done} jobs, second did {second_done}\n");

    println!("LocalPool: a pipeline of two synchronous stages, each a task of its own:");
    let mut pool = futures::executor::LocalPool::new();
    let spawner = pool.spawner();
    let (mut numbers, mut numbers_out) = mpsc::channel::<u64>(0);
    let (mut squares, mut squares_out) = mpsc::channel::<u64>(0);
    let (mut results, mut results_out) = mpsc::channel::<u64>(0);
    spawner
        .spawn_local(async move {
            for number in 1..=4 {
                numbers.send(number).await.unwrap();
            }
        })
        .unwrap();
    spawner
        .spawn_local(async_def(move || {
            let square = |number| number * number;
            let send = &mut |square| awaitlet(squares.send(square)).unwrap();
            stage("square", &mut || awaitlet(numbers_out.next()), square, send);
        }))
        .unwrap();
    spawner
        .spawn_local(async_def(move || {
            let increment = |number| number + 1;
            let send = &mut |result| awaitlet(results.send(result)).unwrap();
            stage(
                "add one",
                &mut || awaitlet(squares_out.next()),
                increment,
                send,
            );
        }))
        .unwrap();
    let collected: Vec<u64> = pool.run_until(async {
        let mut collected = Vec::new();
        while let Some(result) = results_out.next().await {
            collected.push(result);
        }
        collected
    });
    println!("results: {collected:?}");
    assert_eq!(collected, [2, 5, 10, 17]);
}
