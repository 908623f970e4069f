//! An unchanged synchronous library serving an async TCP connection.
//!
//! `order_book` stands for a library written against `std::io`: it parses a stream of JSON
//! orders with `serde_json` and writes a CSV summary with `csv`, and knows nothing of async.
//! The server below runs it inside `async_def`, over a tokio `TcpStream`, through
//! `awaitlet::io::tokio::SyncReader` and `SyncWriter`. Whenever the socket has nothing to
//! give, the library's `read` suspends it, in the middle of an order, and the thread goes on
//! with other work: here, the client on the same thread, which sends each order in two halves
//! with a pause between them.
//!
//! ```sh
//! cargo run --example sync_library
//! ```

use std::error::Error;
use std::net::SocketAddr;
use std::time::Duration;

use awaitlet::async_def;
use awaitlet::io::tokio::{SyncReader, SyncWriter};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A synchronous library: `std::io` in, `std::io` out.
mod order_book {
    use std::collections::BTreeMap;
    use std::error::Error;
    use std::io::{Read, Write};

    /// One order, as the client sends it.
    #[derive(serde::Deserialize)]
    struct Order {
        item: String,
        quantity: u64,
        price_cents: u64,
    }

    /// Reads JSON orders from `input` until it ends, then writes to `output` one CSV row per
    /// item: the quantity ordered and what it costs. Returns the number of orders.
    pub(crate) fn summarize(input: impl Read, output: impl Write) -> Result<usize, Box<dyn Error>> {
        let mut totals: BTreeMap<String, (u64, u64)> = BTreeMap::new();
        let mut orders = 0;
        for order in serde_json::Deserializer::from_reader(input).into_iter::<Order>() {
            let order = order?;
            println!(
                "library: read an order for {} {}",
                order.quantity, order.item
            );
            let (quantity, cents) = totals.entry(order.item).or_default();
            *quantity += order.quantity;
            *cents += order.quantity * order.price_cents;
            orders += 1;
        }
        let mut csv = csv::Writer::from_writer(output);
        csv.write_record(["item", "quantity", "total_cents"])?;
        for (item, (quantity, cents)) in totals {
            csv.serialize((item, quantity, cents))?;
        }
        csv.flush()?;
        Ok(orders)
    }
}

const ORDERS: [&str; 3] = [
    r#"{"item": "apple", "quantity": 3, "price_cents": 40}"#,
    r#"{"item": "pear", "quantity": 1, "price_cents": 75}"#,
    r#"{"item": "apple", "quantity": 2, "price_cents": 40}"#,
];

/// Serves one connection: the synchronous library reads the orders straight from the socket
/// and writes its summary straight back.
async fn serve_one(listener: TcpListener) -> Result<usize, Box<dyn Error>> {
    let (stream, _) = listener.accept().await?;
    let (reading_half, writing_half) = stream.into_split();
    async_def(|| {
        let mut output = SyncWriter::new(writing_half);
        let orders = order_book::summarize(SyncReader::new(reading_half), &mut output)?;
        output.close()?; // the client sees the end of the summary
        Ok(orders)
    })
    .await
}

/// The client: sends each order in two halves, a moment apart, then reads the summary.
async fn send_orders(server: SocketAddr) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(server).await?;
    for order in ORDERS {
        let (first_half, second_half) = order.split_at(order.len() / 2);
        for half in [first_half, second_half] {
            stream.write_all(half.as_bytes()).await?;
            println!("client:  sent {half:?}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        stream.write_all(b"\n").await?;
    }
    stream.shutdown().await?; // the library sees the end of the orders
    let mut summary = String::new();
    stream.read_to_string(&mut summary).await?;
    Ok(summary)
}

fn main() -> Result<(), Box<dyn Error>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (orders, summary) = runtime.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let server = listener.local_addr()?;
        let (orders, summary) = tokio::join!(serve_one(listener), send_orders(server));
        Ok::<_, Box<dyn Error>>((orders?, summary?))
    })?;
    println!("\nthe library read {orders} orders; the client got back:\n{summary}");
    assert_eq!(
        summary,
        "item,quantity,total_cents\napple,5,200\npear,1,75\n"
    );
    Ok(())
}
