//! Two pieces of synchronous code passing numbers to each other through a channel, each in its
//! own `async_def`, spawned on smol's `LocalExecutor`.
//!
//! The channel holds one number, so the producer waits whenever the consumer has not taken
//! the last one yet, and the consumer waits whenever the channel is empty: the two take turns,
//! although neither function is async.
//!
//! ```sh
//! cargo run --example smol
//! ```

use awaitlet::{async_def, awaitlet};

/// Synchronous producer: hands the squares of 1 to 5 to `send`.
fn produce(send: &dyn Fn(u64)) {
    for number in 1..=5 {
        println!("producer: sending {}", number * number);
        send(number * number);
    }
    println!("producer: done");
}

/// Synchronous consumer: adds up everything `receive` gives until it gives `None`.
fn consume(receive: &dyn Fn() -> Option<u64>) -> u64 {
    let mut total = 0;
    while let Some(number) = receive() {
        println!("consumer: received {number}");
        total += number;
    }
    total
}

fn main() {
    let executor = smol::LocalExecutor::new();
    let (sender, receiver) = smol::channel::bounded::<u64>(1);

    let producer = executor.spawn(async_def(move || {
        produce(&|number| awaitlet(sender.send(number)).unwrap());
        // `sender` is dropped here, which closes the channel.
    }));
    let consumer = executor.spawn(async_def(move || {
        consume(&|| awaitlet(receiver.recv()).ok())
    }));

    let total = smol::block_on(executor.run(async {
        producer.await;
        consumer.await
    }));
    println!("total: {total}");
    assert_eq!(total, 1 + 4 + 9 + 16 + 25);
}
