//! `SyncStream`, both directions of one socket as `Read + BufRead + Write`: unchanged sync
//! protocol code (tungstenite, serde_json lines, tar + flate2) as client and server over real TCP
//! on 127.0.0.1, and the buffering rules that keep request/response protocols from stalling.

use std::{
    io::{self, BufRead, Read, Write},
    time::{Duration, Instant},
};

use awaitlet::{NoAwaitletContext, async_def, awaitlet};
use serde::{Deserialize, Serialize};

fn tokio_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A connected pair of tokio TCP sockets on 127.0.0.1 (an OS-chosen port).
async fn tokio_socket_pair() -> (tokio::net::TcpStream, tokio::net::TcpStream) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (client, accepted) =
        tokio::join!(tokio::net::TcpStream::connect(address), listener.accept());
    (client.unwrap(), accepted.unwrap().0)
}

// ---------------------------------------------------------------------------------------------
// tungstenite: a WebSocket client and server, both sync, over one TCP connection
// ---------------------------------------------------------------------------------------------

#[test]
fn tungstenite_client_and_server_exchange_messages_over_sync_streams() {
    use awaitlet::io::tokio::SyncStream;
    use tungstenite::Message;

    tokio_runtime().block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();

        // The server: upper-cases text, reverses binary, until the client closes.
        let server = async_def(|| {
            let (socket, _) = awaitlet(listener.accept()).unwrap();
            let mut websocket = tungstenite::accept(SyncStream::new(socket)).unwrap();
            let mut served = 0;
            loop {
                match websocket.read() {
                    Ok(Message::Text(text)) => {
                        websocket.send(Message::text(text.to_uppercase())).unwrap();
                        served += 1;
                    }
                    Ok(Message::Binary(bytes)) => {
                        let reversed: Vec<u8> = bytes.iter().rev().copied().collect();
                        websocket.send(Message::binary(reversed)).unwrap();
                        served += 1;
                    }
                    Ok(Message::Close(_)) => {}
                    Ok(_) => {}
                    Err(tungstenite::Error::ConnectionClosed) => {
                        // What tungstenite wrote last (its close frame) may still be in the
                        // stream's buffer: dropping the stream would not send it.
                        websocket.get_mut().close().unwrap();
                        return served;
                    }
                    Err(error) => panic!("server: {error}"),
                }
            }
        });

        let client = async_def(|| {
            let socket = awaitlet(tokio::net::TcpStream::connect(address)).unwrap();
            let url = format!("ws://{address}/echo");
            let (mut websocket, response) =
                tungstenite::client(url.as_str(), SyncStream::new(socket)).unwrap();
            assert_eq!(response.status(), 101);
            let mut replies = Vec::new();
            for number in 0..100 {
                websocket
                    .send(Message::text(format!("message {number}")))
                    .unwrap();
                replies.push(websocket.read().unwrap());
            }
            // Larger than both the stream's buffers: goes out in several writes.
            let large: Vec<u8> = (0..100_000u32).map(|index| index as u8).collect();
            websocket.send(Message::binary(large.clone())).unwrap();
            let echoed = websocket.read().unwrap().into_data();
            websocket.close(None).unwrap();
            // Read until the server's close frame answers ours.
            loop {
                match websocket.read() {
                    Ok(_) => {}
                    Err(tungstenite::Error::ConnectionClosed) => break,
                    Err(error) => panic!("client: {error}"),
                }
            }
            (replies, large, echoed)
        });

        let (served, (replies, large, echoed)) = tokio::join!(server, client);
        assert_eq!(served, 101);
        for (number, reply) in replies.into_iter().enumerate() {
            assert_eq!(reply, Message::text(format!("MESSAGE {number}")));
        }
        let expected: Vec<u8> = large.iter().rev().copied().collect();
        assert_eq!(echoed.as_ref(), &expected[..]);
    });
}

// ---------------------------------------------------------------------------------------------
// serde_json lines: 2,000 request/response round trips, one flush each
// ---------------------------------------------------------------------------------------------

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Request {
    id: u32,
    operation: String,
    operands: Vec<i64>,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Response {
    id: u32,
    result: i64,
}

const ROUND_TRIPS: u32 = 2_000;

/// Nagle's algorithm with delayed acknowledgements costs up to ~40 ms a round trip when a
/// request goes out in several small packets: 2,000 of them would take over a minute. Sent as
/// one packet each, they take a fraction of a second (measured and printed). This bound only
/// catches such a stall, or a hang.
const STALL_GUARD: Duration = Duration::from_secs(20);

/// The server's sync side: reads a JSON request a line, answers it, flushes once.
fn serve_json_lines(stream: &mut (impl BufRead + Write)) -> io::Result<u32> {
    let mut line = String::new();
    let mut served = 0;
    while stream.read_line(&mut line)? > 0 {
        let request: Request = serde_json::from_str(&line)?;
        let result = match request.operation.as_str() {
            "sum" => request.operands.iter().sum(),
            "product" => request.operands.iter().product(),
            other => panic!("unknown operation {other}"),
        };
        serde_json::to_writer(
            &mut *stream,
            &Response {
                id: request.id,
                result,
            },
        )?;
        stream.write_all(b"\n")?;
        stream.flush()?;
        served += 1;
        line.clear();
    }
    Ok(served)
}

/// The client's sync side: `serde_json::to_writer` makes many small writes a request; the
/// stream buffers them and `flush` sends the request as one piece.
fn call_json_lines(stream: &mut (impl BufRead + Write)) -> io::Result<Vec<Response>> {
    let mut responses = Vec::new();
    let mut line = String::new();
    for id in 0..ROUND_TRIPS {
        let request = Request {
            id,
            operation: if id % 2 == 0 { "sum" } else { "product" }.to_string(),
            operands: vec![id as i64, 2, 3],
        };
        serde_json::to_writer(&mut *stream, &request)?;
        stream.write_all(b"\n")?;
        stream.flush()?;
        line.clear();
        stream.read_line(&mut line)?;
        responses.push(serde_json::from_str(&line)?);
    }
    Ok(responses)
}

fn check_responses(responses: &[Response]) {
    assert_eq!(responses.len(), ROUND_TRIPS as usize);
    for (id, response) in (0..ROUND_TRIPS).zip(responses) {
        let expected = if id % 2 == 0 {
            id as i64 + 5
        } else {
            id as i64 * 6
        };
        assert_eq!(
            response,
            &Response {
                id,
                result: expected
            }
        );
    }
}

#[test]
fn two_thousand_json_round_trips_over_tokio_tcp_do_not_stall() {
    use awaitlet::io::tokio::SyncStream;

    tokio_runtime().block_on(async {
        let (client_socket, server_socket) = tokio_socket_pair().await;
        let server = async_def(|| {
            let mut stream = SyncStream::new(server_socket);
            let served = serve_json_lines(&mut stream);
            stream.close().unwrap();
            served
        });
        let client = async_def(|| {
            let mut stream = SyncStream::new(client_socket);
            let started = Instant::now();
            let responses = call_json_lines(&mut stream);
            let elapsed = started.elapsed();
            stream.close().unwrap();
            (responses, elapsed)
        });
        let (served, (responses, elapsed)) = tokio::join!(server, client);
        assert_eq!(served.unwrap(), ROUND_TRIPS);
        check_responses(&responses.unwrap());
        println!("tokio: {ROUND_TRIPS} JSON round trips over 127.0.0.1 in {elapsed:?}");
        assert!(
            elapsed < STALL_GUARD,
            "{ROUND_TRIPS} round trips took {elapsed:?}"
        );
    });
}

#[test]
fn two_thousand_json_round_trips_over_smol_tcp_do_not_stall() {
    use awaitlet::io::SyncStream;

    smol::block_on(async {
        let listener = smol::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let server = async_def(|| {
            let (socket, _) = awaitlet(listener.accept()).unwrap();
            let mut stream = SyncStream::new(socket);
            let served = serve_json_lines(&mut stream);
            stream.close().unwrap();
            served
        });
        let client = async_def(|| {
            let socket = awaitlet(smol::net::TcpStream::connect(address)).unwrap();
            let mut stream = SyncStream::new(socket);
            let started = Instant::now();
            let responses = call_json_lines(&mut stream);
            let elapsed = started.elapsed();
            stream.close().unwrap();
            (responses, elapsed)
        });
        let (served, (responses, elapsed)) = futures::future::join(server, client).await;
        assert_eq!(served.unwrap(), ROUND_TRIPS);
        check_responses(&responses.unwrap());
        println!("smol: {ROUND_TRIPS} JSON round trips over 127.0.0.1 in {elapsed:?}");
        assert!(
            elapsed < STALL_GUARD,
            "{ROUND_TRIPS} round trips took {elapsed:?}"
        );
    });
}

// ---------------------------------------------------------------------------------------------
// tar + flate2, streaming both ways over one connection
// ---------------------------------------------------------------------------------------------

/// Files large enough (about 1.5 MB before compression) to fill the sockets' buffers, so that
/// both sides suspend in the middle of the archive.
fn sample_files(seed: u32) -> Vec<(String, Vec<u8>)> {
    (0..3)
        .map(|index| {
            let content: Vec<u8> = (0..500_000u32)
                .map(|position| {
                    let mixed = position
                        .wrapping_mul(2_654_435_761)
                        .wrapping_add(seed + index);
                    b"abcdefgh"[(mixed >> 29) as usize]
                })
                .collect();
            (format!("dir/file-{seed}-{index}.txt"), content)
        })
        .collect()
}

/// Writes a gzip-compressed tar archive of `files` into `sink`.
fn write_archive(sink: &mut impl Write, files: &[(String, Vec<u8>)]) -> io::Result<()> {
    let encoder = flate2::write::GzEncoder::new(sink, flate2::Compression::fast());
    let mut builder = tar::Builder::new(encoder);
    for (path, content) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(content.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder.append_data(&mut header, path, &content[..])?;
    }
    builder.into_inner()?.finish()?;
    Ok(())
}

/// Reads a gzip-compressed tar archive from `source` (only its bytes: what follows stays).
fn read_archive(source: &mut impl BufRead) -> io::Result<Vec<(String, Vec<u8>)>> {
    let decoder = flate2::bufread::GzDecoder::new(source);
    let mut archive = tar::Archive::new(decoder);
    let mut files = Vec::new();
    for entry in archive.entries()? {
        let mut entry = entry?;
        let path = entry.path()?.to_string_lossy().into_owned();
        let mut content = Vec::new();
        entry.read_to_end(&mut content)?;
        files.push((path, content));
    }
    Ok(files)
}

#[test]
fn tar_gz_archives_stream_both_ways_over_one_tcp_connection() {
    use awaitlet::io::tokio::SyncStream;

    let uploaded = sample_files(1);
    let downloaded = sample_files(2);
    let (received_by_server, received_by_client) = tokio_runtime().block_on(async {
        let (client_socket, server_socket) = tokio_socket_pair().await;
        // The server reads the client's archive to the end of the stream, then answers with its
        // own archive on the same connection and shuts down.
        let server = async_def(|| {
            let mut stream = SyncStream::new(server_socket);
            let received = read_archive(&mut stream)?;
            let mut rest = Vec::new();
            stream.read_to_end(&mut rest)?; // the client closed its half
            write_archive(&mut stream, &downloaded)?;
            stream.close()?;
            Ok::<_, io::Error>((received, rest.len()))
        });
        // The client uploads, closes its writing half (the server sees the end), and reads
        // the answer from the half still open.
        let client = async_def(|| {
            let mut stream = SyncStream::new(client_socket);
            write_archive(&mut stream, &uploaded)?;
            stream.close()?;
            let received = read_archive(&mut stream)?;
            Ok::<_, io::Error>(received)
        });
        let (server, client) = tokio::join!(server, client);
        (server.unwrap(), client.unwrap())
    });
    let (received, trailing_bytes) = received_by_server;
    // tar pads the archive with zero blocks the decoder's reader need not consume.
    assert!(trailing_bytes < 64 * 1024);
    assert_eq!(received, uploaded);
    assert_eq!(received_by_client, downloaded);
}

// ---------------------------------------------------------------------------------------------
// The buffering rules
// ---------------------------------------------------------------------------------------------

#[test]
fn a_read_that_has_to_wait_sends_the_buffered_request_first() {
    use awaitlet::io::tokio::SyncStream;
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

    tokio_runtime().block_on(async {
        let (client_end, server_end) = tokio::io::duplex(1024);
        let server = async move {
            let (reading_half, mut writing_half) = tokio::io::split(server_end);
            let mut line = String::new();
            tokio::io::BufReader::new(reading_half)
                .read_line(&mut line)
                .await
                .unwrap();
            writing_half.write_all(b"reply\n").await.unwrap();
            line
        };
        let client = async_def(|| {
            let mut stream = SyncStream::new(client_end);
            stream.write_all(b"request\n").unwrap(); // no flush
            assert_eq!(stream.write_buffer(), b"request\n");
            let mut reply = String::new();
            stream.read_line(&mut reply).unwrap(); // the server cannot answer unsent bytes
            assert!(stream.write_buffer().is_empty());
            reply
        });
        let guarded = tokio::time::timeout(STALL_GUARD, async { tokio::join!(server, client) });
        let (request, reply) = guarded.await.expect("the request was never sent");
        assert_eq!(request, "request\n");
        assert_eq!(reply, "reply\n");
    });
}

#[test]
fn a_read_that_finds_data_keeps_the_writes_buffered() {
    use awaitlet::io::tokio::SyncStream;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    tokio_runtime().block_on(async {
        let (client_end, mut server_end) = tokio::io::duplex(1024);
        server_end.write_all(b"already here\n").await.unwrap();
        let mut stream = SyncStream::new(client_end);
        async_def(|| {
            stream.write_all(b"later").unwrap();
            let mut line = String::new();
            stream.read_line(&mut line).unwrap();
            assert_eq!(line, "already here\n");
        })
        .await;
        assert_eq!(stream.write_buffer(), b"later");
        async_def(|| stream.close()).await.unwrap();
        let mut received = Vec::new();
        server_end.read_to_end(&mut received).await.unwrap();
        assert_eq!(received, b"later");
    });
}

#[test]
fn writes_larger_than_the_buffer_go_to_the_stream_in_order() {
    use awaitlet::io::SyncStream;

    let mut stream = SyncStream::with_capacity(16, 16, futures::io::Cursor::new(Vec::new()));
    futures::executor::block_on(async_def(|| {
        stream.write_all(b"small ")?;
        stream.write_all(b"a write larger than sixteen bytes")?;
        stream.write_all(b" tail")?;
        stream.flush()
    }))
    .unwrap();
    assert_eq!(
        stream.into_inner().into_inner(),
        b"small a write larger than sixteen bytes tail"
    );
}

#[test]
fn outside_async_def_buffered_writes_succeed_and_the_stream_is_not_touched() {
    use awaitlet::io::SyncStream;

    let mut stream = SyncStream::new(futures::io::Cursor::new(b"unread".to_vec()));
    stream.write_all(b"kept").unwrap();
    for error in [
        stream.flush().unwrap_err(),
        stream.read(&mut [0; 4]).unwrap_err(),
        stream.close().unwrap_err(),
    ] {
        assert_eq!(error.kind(), io::ErrorKind::Other);
        assert!(
            error
                .get_ref()
                .unwrap()
                .downcast_ref::<NoAwaitletContext>()
                .is_some()
        );
    }
    assert_eq!(stream.write_buffer(), b"kept");
    assert_eq!(stream.get_ref().position(), 0);
}

#[test]
fn a_write_error_while_a_read_waits_is_the_reads_error() {
    use awaitlet::io::tokio::SyncStream;

    tokio_runtime().block_on(async {
        let (client_socket, server_socket) = tokio_socket_pair().await;
        // The peer is gone: its socket is dropped at once, unread. Writes then fail (a reset or
        // a broken pipe) or the read sees the end of the stream; it must not hang.
        drop(server_socket);
        let outcome = tokio::time::timeout(
            STALL_GUARD,
            async_def(|| {
                let mut stream = SyncStream::new(client_socket);
                for _ in 0..64 {
                    stream.write_all(&[0; 1024])?;
                }
                let mut byte = [0; 1];
                stream.read(&mut byte)
            }),
        )
        .await
        .expect("a read against a vanished peer hung");
        match outcome {
            Ok(count) => assert_eq!(count, 0),
            Err(error) => assert!(
                matches!(
                    error.kind(),
                    io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
                ),
                "{error:?}"
            ),
        }
    });
}
