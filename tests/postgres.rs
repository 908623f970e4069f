//! A synchronous repository layer (`examples/support/bank.rs`) run unchanged over tokio-postgres
//! through `awaitlet`, against a real PostgreSQL server: transactions, an error inside the sync
//! layer rolling back, and cancellation in the middle of a query.
//!
//! The tests need a server, so they are `#[ignore]`d: plain `cargo test` needs none. They read
//! the connection string from `AWAITLET_POSTGRES_URL`; `.ci/with-postgres` starts a throwaway
//! server and sets it:
//!
//! ```sh
//! .ci/with-postgres cargo test --test postgres -- --ignored
//! ```

#[path = "../examples/support/bank.rs"]
#[allow(dead_code)]
mod bank;

use std::{
    cell::Cell,
    time::{Duration, Instant},
};

use awaitlet::{async_def, awaitlet};
use bank::{AwaitletConnection, BankError, Connection};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A connection of its own (temporary tables are per connection, so tests do not meet), with
/// its driver task spawned on the current runtime.
async fn connect() -> tokio_postgres::Client {
    let url = std::env::var("AWAITLET_POSTGRES_URL")
        .expect("AWAITLET_POSTGRES_URL names the server (see .ci/with-postgres)");
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("cannot connect to AWAITLET_POSTGRES_URL");
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            eprintln!("connection ended: {error}");
        }
    });
    client
}

/// The schema and two accounts, through the sync layer.
fn set_up(connection: &mut dyn Connection) -> Result<(), BankError> {
    bank::create_schema(connection)?;
    bank::open_account(connection, "alice", 100)?;
    bank::open_account(connection, "bob", 50)?;
    Ok(())
}

#[test]
#[ignore = "needs a PostgreSQL server: run through .ci/with-postgres"]
fn transactions_commit_through_the_sync_layer() {
    runtime().block_on(async {
        let client = connect().await;
        let balances = async_def(|| {
            let connection = &mut AwaitletConnection(&client);
            set_up(connection)?;
            for _ in 0..10 {
                bank::transfer(connection, "alice", "bob", 7)?;
            }
            bank::transfer(connection, "bob", "alice", 3)?;
            Ok::<_, BankError>((
                bank::balance(connection, "alice")?,
                bank::balance(connection, "bob")?,
                bank::transfer_count(connection)?,
            ))
        })
        .await
        .unwrap();
        assert_eq!(balances, (100 - 70 + 3, 50 + 70 - 3, 11));
        // Committed: visible from outside the sync layer too.
        let row = client
            .query_one("SELECT sum(balance)::bigint FROM accounts", &[])
            .await
            .unwrap();
        assert_eq!(row.get::<_, i64>(0), 150);
    });
}

#[test]
#[ignore = "needs a PostgreSQL server: run through .ci/with-postgres"]
fn an_error_inside_the_sync_layer_rolls_its_transaction_back() {
    runtime().block_on(async {
        let client = connect().await;
        let outcome = async_def(|| {
            let connection = &mut AwaitletConnection(&client);
            set_up(connection)?;
            bank::transfer(connection, "alice", "bob", 30)?;
            // The debit and the log row are written, then the rule refuses the transfer.
            let refused = bank::transfer(connection, "alice", "bob", 500);
            Ok::<_, BankError>((
                refused,
                bank::balance(connection, "alice")?,
                bank::balance(connection, "bob")?,
                bank::transfer_count(connection)?,
            ))
        })
        .await
        .unwrap();
        let (refused, alice, bob, transfers) = outcome;
        assert!(
            matches!(refused, Err(BankError::InsufficientFunds { ref owner, short_by: 430 }) if owner == "alice"),
            "{refused:?}"
        );
        assert_eq!((alice, bob, transfers), (70, 80, 1));

        // A database error inside the transaction (a missing account is the sync layer's; a
        // bad statement is the server's) rolls back the same way, and the connection goes on.
        let outcome = async_def(|| {
            let connection = &mut AwaitletConnection(&client);
            let missing = bank::transfer(connection, "alice", "nobody", 10);
            let server_error = bank::in_transaction(connection, |connection| {
                bank::open_account(connection, "carol", 5)?;
                connection.execute("SELECT no_such_column FROM accounts", &[])?;
                Ok(())
            });
            Ok::<_, BankError>((
                missing,
                server_error,
                bank::balance(connection, "alice")?,
                bank::balance(connection, "carol").is_err(),
            ))
        })
        .await
        .unwrap();
        let (missing, server_error, alice, carol_missing) = outcome;
        assert!(matches!(missing, Err(BankError::NoSuchAccount(ref owner)) if owner == "nobody"));
        assert!(matches!(server_error, Err(BankError::Database(_))));
        assert_eq!(alice, 70);
        assert!(carol_missing);
    });
}

#[test]
#[ignore = "needs a PostgreSQL server: run through .ci/with-postgres"]
fn dropping_the_async_def_mid_query_unwinds_and_the_connection_recovers() {
    runtime().block_on(async {
        let client = connect().await;
        async_def(|| set_up(&mut AwaitletConnection(&client)))
            .await
            .unwrap();

        // Inside a transaction, a transfer is logged and then a long query runs; the caller
        // gives up after 300 ms, which drops the AsyncDef in the middle of `pg_sleep`.
        let unwound = Cell::new(false);
        let started = Instant::now();
        let gave_up = tokio::time::timeout(
            Duration::from_millis(300),
            async_def(|| {
                struct NotesUnwinding<'a>(&'a Cell<bool>);
                impl Drop for NotesUnwinding<'_> {
                    fn drop(&mut self) {
                        self.0.set(std::thread::panicking());
                    }
                }
                let _guard = NotesUnwinding(&unwound);
                let connection = &mut AwaitletConnection(&client);
                bank::in_transaction(connection, |connection| {
                    connection.execute(
                        "INSERT INTO transfers (source, target, amount) VALUES ('alice', 'bob', 1)",
                        &[],
                    )?;
                    connection.execute("SELECT pg_sleep(30)", &[])?;
                    Ok(())
                })
            }),
        )
        .await;
        assert!(gave_up.is_err(), "the query finished: {gave_up:?}");
        assert!(unwound.get(), "the sync code's stack was not unwound");

        // The sync layer never reached its COMMIT or ROLLBACK: the connection is inside an open
        // transaction with a query still running on the server. Reset it as a pool does when a
        // connection comes back: cancel the running query, roll back.
        client
            .cancel_token()
            .cancel_query(tokio_postgres::NoTls)
            .await
            .unwrap();
        client.batch_execute("ROLLBACK").await.unwrap();
        let recovered = started.elapsed();
        assert!(
            recovered < Duration::from_secs(20),
            "the reset waited for the 30 s query: {recovered:?}"
        );

        // Sane again: no transaction holding a transaction id (the cancelled one had one, for
        // its insert), the logged row gone, and the sync layer works.
        let fresh = client
            .query_one("SELECT txid_current_if_assigned() IS NULL", &[])
            .await
            .unwrap();
        assert!(
            fresh.get::<_, bool>(0),
            "still inside the cancelled transaction"
        );
        let after = async_def(|| {
            let connection = &mut AwaitletConnection(&client);
            let before = bank::transfer_count(connection)?;
            bank::transfer(connection, "alice", "bob", 10)?;
            Ok::<_, BankError>((
                before,
                bank::transfer_count(connection)?,
                bank::balance(connection, "alice")?,
            ))
        })
        .await
        .unwrap();
        assert_eq!(after, (0, 1, 90));
        // The awaitlet inside the test's own code path still works after the cancellation.
        let one: i32 =
            async_def(|| awaitlet(client.query_one("SELECT 1", &[])).unwrap().get(0)).await;
        assert_eq!(one, 1);
    });
}
