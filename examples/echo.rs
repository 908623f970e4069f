//! The echo client of Python awaitlet's introduction, ported: five messages sent to an echo
//! server at once, through a synchronous middle layer that never heard of async.
//!
//! The program has three layers, as in the original:
//!
//! - `send_receive_implementation` talks to the network. It is async: tokio's `TcpStream`.
//! - `send_receive_logic` is the program's own logic, here a pass-through. It is a plain
//!   synchronous function, given the implementation to call, and it is unchanged from the
//!   version that ran on threads with blocking sockets.
//! - `send_receive_api` is the front door, async again. It runs the logic with `async_def`,
//!   handing it a small synchronous adapter that waits for the async implementation with
//!   `awaitlet`.
//!
//! Only the two ends are async; the middle, however much code it grows into, stays as it is.
//!
//! ```sh
//! cargo run --release --example echo
//! ```

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use awaitlet::{async_def, awaitlet};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Barrier;

/// The low-level layer, async: connects, sends `message`, and returns the line echoed back.
async fn send_receive_implementation(host: &str, port: u16, message: &str) -> io::Result<String> {
    let stream = TcpStream::connect((host, port)).await?;
    let mut stream = BufReader::new(stream);
    stream.write_all(message.as_bytes()).await?;
    let mut reply = String::new();
    stream.read_line(&mut reply).await?;
    Ok(reply)
}

/// The logic layer, synchronous: it only knows that `implementation` sends a message and
/// returns the reply.
fn send_receive_logic(
    msg: &str,
    host: &str,
    port: u16,
    implementation: impl Fn(&str, u16, &str) -> io::Result<String>,
) -> io::Result<String> {
    implementation(host, port, &format!("message number {msg}\n"))
}

/// The API layer, async: runs the synchronous logic with `async_def`, passing it an adapter
/// that waits for the async implementation with `awaitlet`.
async fn send_receive_api(msg: &str, host: &str, port: u16) -> io::Result<String> {
    let adapt_async_implementation = |host: &str, port: u16, message: &str| {
        awaitlet(send_receive_implementation(host, port, message))
    };
    async_def(|| send_receive_logic(msg, host, port, adapt_async_implementation)).await
}

/// An echo server on 127.0.0.1, on a port the OS picks: each connection gets its first line
/// back. It holds every reply until `clients` messages have arrived, so the program finishes
/// only if the calls really run at the same time.
async fn start_echo_server(clients: usize) -> io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    let all_arrived = Arc::new(Barrier::new(clients));
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let all_arrived = Arc::clone(&all_arrived);
            tokio::spawn(async move {
                let mut stream = BufReader::new(stream);
                let mut line = String::new();
                if stream.read_line(&mut line).await.is_ok() {
                    all_arrived.wait().await;
                    let _ = stream.write_all(line.as_bytes()).await;
                }
            });
        }
    });
    Ok(address)
}

fn main() -> io::Result<()> {
    // `async_def` futures stay on the thread that polls them, so a current-thread runtime
    // drives them (on a multi-threaded one, use a `LocalSet`).
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    // The server task ends when the runtime is dropped, at the end of `main`.
    runtime.block_on(async {
        let messages = ["one", "two", "three", "four", "five"];
        let server = start_echo_server(messages.len()).await?;
        let host = server.ip().to_string();
        let replies = futures::future::join_all(
            messages
                .into_iter()
                .map(|msg| send_receive_api(msg, &host, server.port())),
        )
        .await;
        for reply in replies {
            println!("Got back echo response: {}", reply?.trim_end());
        }
        Ok(())
    })
}
