//! A synchronous repository layer, unchanged, over tokio-postgres: the pattern of SQLAlchemy's
//! asyncio support, where a blocking ORM runs on an async driver.
//!
//! `support/bank.rs` is the repository: accounts, transfers in transactions, its own rules,
//! written against a small blocking `Connection` trait. Here that trait is implemented with
//! `awaitlet` over a tokio-postgres client, and ten transfer batches run concurrently on one
//! thread, each on its own connection, each suspending its sync call stack at every query.
//!
//! It needs a PostgreSQL server named by `AWAITLET_POSTGRES_URL`; `.ci/with-postgres` starts a
//! throwaway one (installing PostgreSQL from Debian's packages if needed) and sets it:
//!
//! ```sh
//! .ci/with-postgres cargo run --release --example postgres
//! ```

#[path = "support/bank.rs"]
mod bank;

use std::time::Instant;

use awaitlet::async_def;
use bank::{AwaitletConnection, BankError};

const BATCHES: usize = 10;
const TRANSFERS_PER_BATCH: i64 = 50;

/// One batch, all synchronous: a schema, two accounts, transfers back and forth, one refused.
fn run_batch(connection: &mut dyn bank::Connection) -> Result<(i64, i64, i64), BankError> {
    bank::create_schema(connection)?;
    bank::open_account(connection, "alice", 1_000)?;
    bank::open_account(connection, "bob", 0)?;
    for round in 0..TRANSFERS_PER_BATCH {
        bank::transfer(connection, "alice", "bob", 10 + round % 3)?;
    }
    match bank::transfer(connection, "bob", "alice", 1_000_000) {
        Err(BankError::InsufficientFunds { .. }) => {} // refused and rolled back
        other => panic!("the refused transfer went through: {other:?}"),
    }
    Ok((
        bank::balance(connection, "alice")?,
        bank::balance(connection, "bob")?,
        bank::transfer_count(connection)?,
    ))
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let Ok(url) = std::env::var("AWAITLET_POSTGRES_URL") else {
        eprintln!(
            "AWAITLET_POSTGRES_URL is not set: run `.ci/with-postgres cargo run --release \
             --example postgres`, or set it to a server's connection string"
        );
        std::process::exit(2);
    };
    let mut clients = Vec::new();
    for _ in 0..BATCHES {
        let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .expect("cannot connect");
        tokio::spawn(connection);
        clients.push(client);
    }

    let started = Instant::now();
    let batches = clients
        .iter()
        .map(|client| async_def(move || run_batch(&mut AwaitletConnection(client))));
    let results = futures::future::join_all(batches).await;
    let elapsed = started.elapsed();

    let moved: i64 = (0..TRANSFERS_PER_BATCH).map(|round| 10 + round % 3).sum();
    for result in &results {
        let (alice, bob, transfers) = result.as_ref().expect("a batch failed");
        // The refused transfer's log row and debit were rolled back.
        assert_eq!(
            (*alice, *bob, *transfers),
            (1_000 - moved, moved, TRANSFERS_PER_BATCH)
        );
    }
    let queries_per_batch = 4 + TRANSFERS_PER_BATCH * 5 + 4 + 3;
    println!(
        "{BATCHES} concurrent batches on one thread, {} transfers and {} queries in all, \
         through an unchanged sync repository: {elapsed:.2?}",
        BATCHES as i64 * (TRANSFERS_PER_BATCH + 1),
        BATCHES as i64 * queries_per_batch,
    );
    println!("all balances as expected");
}
