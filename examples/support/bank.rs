//! A synchronous repository layer, as it would be written for a blocking database driver: it
//! knows SQL and a `Connection` trait, nothing of async. `examples/postgres.rs` and
//! `tests/postgres.rs` run it unchanged over tokio-postgres, with `AwaitletConnection`
//! implementing the trait through `awaitlet` (the pattern of SQLAlchemy's asyncio support).

use std::fmt;

use awaitlet::awaitlet;
use tokio_postgres::{Row, types::ToSql};

/// A parameter list, as blocking PostgreSQL drivers take it.
pub(crate) type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

/// What the repository needs from a database connection.
pub(crate) trait Connection {
    /// Runs a statement: the count of rows it touched.
    fn execute(&mut self, sql: &str, params: Params<'_>) -> Result<u64, tokio_postgres::Error>;
    /// Runs a query: its rows.
    fn query(&mut self, sql: &str, params: Params<'_>) -> Result<Vec<Row>, tokio_postgres::Error>;
}

/// The repository's errors: the database's, and its own rules'.
#[derive(Debug)]
pub(crate) enum BankError {
    Database(tokio_postgres::Error),
    NoSuchAccount(String),
    InsufficientFunds { owner: String, short_by: i64 },
}

impl fmt::Display for BankError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BankError::Database(error) => write!(formatter, "database: {error}"),
            BankError::NoSuchAccount(owner) => write!(formatter, "no account for {owner}"),
            BankError::InsufficientFunds { owner, short_by } => {
                write!(formatter, "{owner} is short by {short_by}")
            }
        }
    }
}

impl From<tokio_postgres::Error> for BankError {
    fn from(error: tokio_postgres::Error) -> BankError {
        BankError::Database(error)
    }
}

/// Runs `work` in a transaction: committed if it returns `Ok`, rolled back if it returns an
/// error. (A cancelled or panicking `work` leaves the transaction open: whoever owns the
/// connection resets it, as a connection pool does when a connection comes back.)
pub(crate) fn in_transaction<T>(
    connection: &mut dyn Connection,
    work: impl FnOnce(&mut dyn Connection) -> Result<T, BankError>,
) -> Result<T, BankError> {
    connection.execute("BEGIN", &[])?;
    match work(connection) {
        Ok(value) => {
            connection.execute("COMMIT", &[])?;
            Ok(value)
        }
        Err(error) => {
            connection.execute("ROLLBACK", &[])?;
            Err(error)
        }
    }
}

/// Creates the tables (temporary: they belong to this connection and vanish with it).
pub(crate) fn create_schema(connection: &mut dyn Connection) -> Result<(), BankError> {
    connection.execute(
        "CREATE TEMPORARY TABLE accounts (owner text PRIMARY KEY, balance bigint NOT NULL)",
        &[],
    )?;
    connection.execute(
        "CREATE TEMPORARY TABLE transfers (
             id serial PRIMARY KEY, source text NOT NULL, target text NOT NULL, amount bigint NOT NULL)",
        &[],
    )?;
    Ok(())
}

pub(crate) fn open_account(
    connection: &mut dyn Connection,
    owner: &str,
    balance: i64,
) -> Result<(), BankError> {
    connection.execute(
        "INSERT INTO accounts (owner, balance) VALUES ($1, $2)",
        &[&owner, &balance],
    )?;
    Ok(())
}

pub(crate) fn balance(connection: &mut dyn Connection, owner: &str) -> Result<i64, BankError> {
    let rows = connection.query("SELECT balance FROM accounts WHERE owner = $1", &[&owner])?;
    match rows.first() {
        Some(row) => Ok(row.get(0)),
        None => Err(BankError::NoSuchAccount(owner.to_string())),
    }
}

/// Adds `amount` to `owner`'s balance: the new balance.
fn adjust(connection: &mut dyn Connection, owner: &str, amount: i64) -> Result<i64, BankError> {
    let rows = connection.query(
        "UPDATE accounts SET balance = balance + $1 WHERE owner = $2 RETURNING balance",
        &[&amount, &owner],
    )?;
    match rows.first() {
        Some(row) => Ok(row.get(0)),
        None => Err(BankError::NoSuchAccount(owner.to_string())),
    }
}

/// Moves `amount` from `source` to `target` in one transaction, and logs it. The debit comes
/// first and the rule is checked after it, so a refused transfer has changed a row that the
/// rollback must restore.
pub(crate) fn transfer(
    connection: &mut dyn Connection,
    source: &str,
    target: &str,
    amount: i64,
) -> Result<(), BankError> {
    in_transaction(connection, |connection| {
        connection.execute(
            "INSERT INTO transfers (source, target, amount) VALUES ($1, $2, $3)",
            &[&source, &target, &amount],
        )?;
        let left = adjust(connection, source, -amount)?;
        if left < 0 {
            return Err(BankError::InsufficientFunds {
                owner: source.to_string(),
                short_by: -left,
            });
        }
        adjust(connection, target, amount)?;
        Ok(())
    })
}

pub(crate) fn transfer_count(connection: &mut dyn Connection) -> Result<i64, BankError> {
    let rows = connection.query("SELECT count(*) FROM transfers", &[])?;
    Ok(rows[0].get(0))
}

/// The `Connection` over tokio-postgres: each call waits with `awaitlet`, so it must run
/// inside `async_def`.
pub(crate) struct AwaitletConnection<'a>(pub &'a tokio_postgres::Client);

impl Connection for AwaitletConnection<'_> {
    fn execute(&mut self, sql: &str, params: Params<'_>) -> Result<u64, tokio_postgres::Error> {
        awaitlet(self.0.execute(sql, params))
    }

    fn query(&mut self, sql: &str, params: Params<'_>) -> Result<Vec<Row>, tokio_postgres::Error> {
        awaitlet(self.0.query(sql, params))
    }
}
