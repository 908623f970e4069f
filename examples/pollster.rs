//! `async_def` under pollster, the smallest executor there is: `block_on` polls one future and
//! parks the thread until it is woken.
//!
//! Three pieces of synchronous code each hand work to a thread of its own and wait for the
//! answer on a oneshot channel. The waits overlap: the executor's thread sleeps while all
//! three are pending, and each answer, sent from another thread, wakes it.
//!
//! ```sh
//! cargo run --example pollster
//! ```

use std::thread;
use std::time::Duration;

use awaitlet::{async_def, awaitlet};
use futures::channel::oneshot;

/// Plain synchronous code: asks `lookup` for each key and reports what it got.
fn describe(keys: &[&str], lookup: &dyn Fn(&str) -> usize) -> String {
    let lengths: Vec<String> = keys
        .iter()
        .map(|key| format!("{key}={}", lookup(key)))
        .collect();
    lengths.join(", ")
}

/// A slow service on another thread: answers with the length of `key`, a little later.
fn length_on_another_thread(key: &str) -> oneshot::Receiver<usize> {
    let (answer, answered) = oneshot::channel();
    let key = key.to_owned();
    thread::spawn(move || {
        thread::sleep(Duration::from_millis(key.len() as u64));
        let _ = answer.send(key.len());
    });
    answered
}

fn main() {
    let lookup = |key: &str| {
        println!("  asking for {key}");
        let length = awaitlet(length_on_another_thread(key)).unwrap();
        println!("  got {key}");
        length
    };
    let (fruit, trees, colours) = pollster::block_on(futures::future::join3(
        async_def(|| describe(&["apple", "fig"], &lookup)),
        async_def(|| describe(&["oak", "willow", "birch"], &lookup)),
        async_def(|| describe(&["red", "indigo"], &lookup)),
    ));
    println!("fruit: {fruit}\ntrees: {trees}\ncolours: {colours}");
}
