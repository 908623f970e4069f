//! The io adapters: sync parsers and encoders (`serde_json`, `flate2`, `csv`) over real TCP
//! sockets on 127.0.0.1, under smol, async-std and tokio; then `std::io`'s contracts, checked
//! against a scripted stream for both the `futures-io` and the tokio adapters.

use std::{
    collections::VecDeque,
    fmt,
    future::Future,
    io::{self, BufRead, ErrorKind, IoSlice, IoSliceMut, Read, Write},
    pin::Pin,
    task::{Context, Poll, Waker, ready},
};

use awaitlet::{NoAwaitletContext, async_def, awaitlet};
use futures::{StreamExt, channel::mpsc};
use serde::{Deserialize, Serialize};

// ---------------------------------------------------------------------------------------------
// Real sockets
// ---------------------------------------------------------------------------------------------

/// A stream wrapper that counts the `Pending`s of its reads and writes and reports each one on
/// a channel, so that a test server can wait until the sync code has drained the socket and
/// suspended before it sends more.
struct ReportsPending<S> {
    inner: S,
    pendings: usize,
    report: mpsc::UnboundedSender<()>,
}

impl<S> ReportsPending<S> {
    fn new(inner: S, report: mpsc::UnboundedSender<()>) -> ReportsPending<S> {
        ReportsPending {
            inner,
            pendings: 0,
            report,
        }
    }

    fn note<T>(&mut self, poll: Poll<T>) -> Poll<T> {
        if poll.is_pending() {
            self.pendings += 1;
            // The server may be gone already (it stops waiting after the last piece).
            let _ = self.report.unbounded_send(());
        }
        poll
    }
}

impl<S: futures::io::AsyncRead + Unpin> futures::io::AsyncRead for ReportsPending<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        target: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_read(cx, target);
        this.note(poll)
    }
}

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for ReportsPending<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        target: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_read(cx, target);
        this.note(poll)
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for ReportsPending<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bytes: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_write(cx, bytes);
        this.note(poll)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_flush(cx);
        this.note(poll)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_shutdown(cx);
        this.note(poll)
    }
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Order {
    id: u64,
    customer: String,
    lines: Vec<OrderLine>,
    note: Option<String>,
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct OrderLine {
    sku: String,
    quantity: u32,
    unit_price_cents: u64,
}

fn sample_order() -> Order {
    Order {
        id: 90_210,
        customer: "Ada \"the Countess\" Lovelace".to_string(),
        lines: (1..=12)
            .map(|line| OrderLine {
                sku: format!("SKU-{line:04}-ÄÖÜ"),
                quantity: line * 3,
                unit_price_cents: u64::from(line) * 1_999,
            })
            .collect(),
        note: Some("leave at the door\nring twice".to_string()),
    }
}

/// The document in `count` pieces of nearly equal size, cut wherever they fall (inside
/// strings, numbers and multi-byte characters alike).
fn pieces(document: &[u8], count: usize) -> Vec<&[u8]> {
    document.chunks(document.len().div_ceil(count)).collect()
}

#[test]
fn serde_json_parses_a_document_from_a_smol_tcp_socket_as_it_arrives() {
    let order = sample_order();
    let document = serde_json::to_vec_pretty(&order).unwrap();
    let pieces = pieces(&document, 7);

    let (parsed, pendings) = smol::block_on(async {
        use smol::io::AsyncWriteExt;
        let listener = smol::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (report, mut reports) = mpsc::unbounded();
        let server = async {
            let (mut connection, _) = listener.accept().await.unwrap();
            for (index, piece) in pieces.iter().enumerate() {
                connection.write_all(piece).await.unwrap();
                if index + 1 < pieces.len() {
                    // The parser has read everything so far and is suspended mid-document.
                    reports.next().await.expect("the parser needs the rest");
                }
            }
            // `connection` is dropped here: the parser sees the end of the stream.
        };
        let client = async_def(|| {
            let stream = awaitlet(smol::net::TcpStream::connect(address)).unwrap();
            let mut reader = awaitlet::io::SyncReader::new(ReportsPending::new(stream, report));
            let parsed: Order = serde_json::from_reader(&mut reader).unwrap();
            (parsed, reader.get_ref().pendings)
        });
        futures::join!(server, client).1
    });

    assert_eq!(parsed, order);
    assert!(
        pendings >= pieces.len() - 1,
        "the parser suspended {pendings} times for {} pieces",
        pieces.len()
    );
}

/// A current-thread tokio runtime with its I/O driver.
fn tokio_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .unwrap()
}

#[test]
fn serde_json_parses_a_document_from_a_tokio_tcp_socket_as_it_arrives() {
    let order = sample_order();
    let document = serde_json::to_vec(&order).unwrap();
    let pieces = pieces(&document, 9);

    let (parsed, pendings) = tokio_runtime().block_on(async {
        use tokio::io::AsyncWriteExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (report, mut reports) = mpsc::unbounded();
        let server = async {
            let (mut connection, _) = listener.accept().await.unwrap();
            for (index, piece) in pieces.iter().enumerate() {
                connection.write_all(piece).await.unwrap();
                if index + 1 < pieces.len() {
                    reports.next().await.expect("the parser needs the rest");
                }
            }
        };
        let client = async_def(|| {
            let stream = awaitlet(tokio::net::TcpStream::connect(address)).unwrap();
            let mut reader =
                awaitlet::io::tokio::SyncReader::new(ReportsPending::new(stream, report));
            let parsed: Order = serde_json::from_reader(&mut reader).unwrap();
            (parsed, reader.get_ref().pendings)
        });
        tokio::join!(server, client).1
    });

    assert_eq!(parsed, order);
    assert!(
        pendings >= pieces.len() - 1,
        "the parser suspended {pendings} times for {} pieces",
        pieces.len()
    );
}

/// About 200 KB of text that compresses to roughly half: numbered lines of pseudo-random hex.
fn compressible_payload() -> Vec<u8> {
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    let mut payload = Vec::new();
    for line in 0..4_000 {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        writeln!(
            payload,
            "record {line:05}: {state:016x} {:016x}",
            state >> 7
        )
        .unwrap();
    }
    payload
}

#[test]
fn gzip_decoder_inflates_a_payload_from_an_async_std_tcp_socket() {
    let original = compressible_payload();
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(&original).unwrap();
    let compressed = encoder.finish().unwrap();
    let pieces = pieces(&compressed, 12);

    let (inflated, pendings) = async_std::task::block_on(async {
        use async_std::io::WriteExt;
        let listener = async_std::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap();
        let address = listener.local_addr().unwrap();
        let (report, mut reports) = mpsc::unbounded();
        let server = async {
            let (mut connection, _) = listener.accept().await.unwrap();
            for (index, piece) in pieces.iter().enumerate() {
                connection.write_all(piece).await.unwrap();
                if index + 1 < pieces.len() {
                    reports.next().await.expect("the decoder needs the rest");
                }
            }
        };
        let client = async_def(|| {
            let stream = awaitlet(async_std::net::TcpStream::connect(address)).unwrap();
            let reader = awaitlet::io::SyncReader::new(ReportsPending::new(stream, report));
            let mut decoder = flate2::read::GzDecoder::new(reader);
            let mut inflated = Vec::new();
            decoder.read_to_end(&mut inflated).unwrap();
            (inflated, decoder.into_inner().get_ref().pendings)
        });
        futures::join!(server, client).1
    });

    assert_eq!(inflated.len(), original.len());
    assert!(inflated == original, "the inflated bytes differ");
    assert!(
        pendings >= pieces.len() - 1,
        "the decoder suspended {pendings} times for {} pieces",
        pieces.len()
    );
}

/// Rows that need CSV's quoting: commas, quotes, line breaks.
fn city_rows() -> Vec<[String; 3]> {
    let mut rows = vec![
        [
            "Washington, D.C.".to_string(),
            "689545".to_string(),
            "capital".to_string(),
        ],
        [
            "Truth or Consequences".to_string(),
            "6052".to_string(),
            "He said \"hi\"".to_string(),
        ],
        [
            "Llanfair\u{ad}pwllgwyngyll".to_string(),
            "3107".to_string(),
            "two\nlines".to_string(),
        ],
    ];
    rows.extend((0..40).map(|number| {
        [
            format!("Town {number}"),
            (number * 1_000 + 17).to_string(),
            String::new(),
        ]
    }));
    rows
}

/// What `csv::Writer` produces for the header and `rows`, written to memory.
fn csv_bytes(rows: &[[String; 3]]) -> Vec<u8> {
    let mut writer = csv::Writer::from_writer(Vec::new());
    writer.write_record(["city", "population", "note"]).unwrap();
    for row in rows {
        writer.write_record(row).unwrap();
    }
    writer.into_inner().unwrap()
}

#[test]
fn csv_writer_writes_records_to_a_smol_tcp_socket() {
    let rows = city_rows();
    let expected = csv_bytes(&rows);

    let received = smol::block_on(async {
        use smol::io::AsyncReadExt;
        let listener = smol::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let server = async {
            let (mut connection, _) = listener.accept().await.unwrap();
            let mut received = Vec::new();
            connection.read_to_end(&mut received).await.unwrap();
            received
        };
        let client = async_def(|| {
            let stream = awaitlet(smol::net::TcpStream::connect(address)).unwrap();
            let mut writer = csv::Writer::from_writer(awaitlet::io::SyncWriter::new(stream));
            writer.write_record(["city", "population", "note"]).unwrap();
            for row in &rows {
                writer.write_record(row).unwrap();
            }
            let mut socket = writer.into_inner().unwrap(); // flushes the CSV buffer
            socket.close().unwrap(); // the server's read_to_end ends here
        });
        futures::join!(server, client).0
    });

    assert!(received.starts_with(b"city,population,note\n\"Washington, D.C.\",689545,capital\n"));
    assert!(
        received
            .windows(br#""He said ""hi""""#.len())
            .any(|window| window == br#""He said ""hi""""#)
    );
    assert_eq!(
        String::from_utf8(received).unwrap(),
        String::from_utf8(expected).unwrap()
    );
}

#[test]
fn csv_writer_suspends_on_a_full_tokio_tcp_socket_and_every_byte_arrives() {
    // Enough rows to overflow the small socket buffers below many times over.
    let rows: Vec<[String; 3]> = (0..8_000)
        .map(|number| {
            [
                format!("Town, {number}"),
                (number * 37).to_string(),
                format!("note \"{number}\""),
            ]
        })
        .collect();
    let expected = csv_bytes(&rows);

    let (received, pendings) = tokio_runtime().block_on(async {
        use tokio::io::AsyncReadExt;
        let listening_socket = tokio::net::TcpSocket::new_v4().unwrap();
        listening_socket.set_recv_buffer_size(4096).unwrap();
        listening_socket
            .bind("127.0.0.1:0".parse().unwrap())
            .unwrap();
        let listener = listening_socket.listen(1).unwrap();
        let address = listener.local_addr().unwrap();
        let (report, mut reports) = mpsc::unbounded();
        let server = async {
            let (mut connection, _) = listener.accept().await.unwrap();
            // Read nothing until the writer has filled the socket and suspended (or is done,
            // which drops the channel: then the assertion on `pendings` below fails).
            let _ = reports.next().await;
            let mut received = Vec::new();
            connection.read_to_end(&mut received).await.unwrap();
            received
        };
        let client = async_def(|| {
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket.set_send_buffer_size(4096).unwrap();
            let stream = awaitlet(socket.connect(address)).unwrap();
            let sink = awaitlet::io::tokio::SyncWriter::new(ReportsPending::new(stream, report));
            let mut writer = csv::Writer::from_writer(sink);
            writer.write_record(["city", "population", "note"]).unwrap();
            for row in &rows {
                writer.write_record(row).unwrap();
            }
            let mut sink = writer.into_inner().unwrap();
            sink.close().unwrap();
            sink.get_ref().pendings
        });
        tokio::join!(server, client)
    });

    assert!(pendings > 0, "the writer never waited for the socket");
    assert_eq!(received.len(), expected.len());
    assert!(received == expected, "the received CSV differs");
}

// ---------------------------------------------------------------------------------------------
// Contracts, against a scripted stream
// ---------------------------------------------------------------------------------------------

/// One step of a [`Scripted`] stream's script.
enum Step {
    /// A read hands out these bytes (as many as fit; the rest stays for the next read).
    Bytes(Vec<u8>),
    /// A read or write fails with this error.
    Fail(io::Error),
    /// A read or write is pending once (the stream wakes its task at once).
    Pending,
    /// A write accepts at most this many bytes.
    Accept(usize),
}

fn bytes(text: &str) -> Step {
    Step::Bytes(text.as_bytes().to_vec())
}

/// A stream for both trait families that follows a script step by step, then reads as ended
/// and accepts every write; it records what was asked of it.
#[derive(Default)]
struct Scripted {
    steps: VecDeque<Step>,
    /// `poll_read`/`poll_write` calls (vectored included).
    polls: usize,
    pendings: usize,
    /// The length of each buffer a read was offered.
    offered: Vec<usize>,
    vectored_reads: usize,
    vectored_writes: usize,
    written: Vec<u8>,
    flushes: usize,
    closes: usize,
}

impl Scripted {
    fn new(steps: impl IntoIterator<Item = Step>) -> Scripted {
        Scripted {
            steps: steps.into_iter().collect(),
            ..Scripted::default()
        }
    }

    fn untouched(&self) -> bool {
        self.polls == 0 && self.flushes == 0 && self.closes == 0
    }

    fn read_into(&mut self, cx: &mut Context<'_>, target: &mut [u8]) -> Poll<io::Result<usize>> {
        self.polls += 1;
        self.offered.push(target.len());
        match self.steps.pop_front() {
            None => Poll::Ready(Ok(0)),
            Some(Step::Bytes(mut head)) => {
                let count = head.len().min(target.len());
                let rest = head.split_off(count);
                target[..count].copy_from_slice(&head);
                if !rest.is_empty() {
                    self.steps.push_front(Step::Bytes(rest));
                }
                Poll::Ready(Ok(count))
            }
            Some(Step::Fail(error)) => Poll::Ready(Err(error)),
            Some(Step::Pending) => {
                self.pendings += 1;
                cx.waker().wake_by_ref();
                Poll::Pending
            }
            Some(Step::Accept(_)) => panic!("the script expected a write, not a read"),
        }
    }

    fn read_vectored_into(
        &mut self,
        cx: &mut Context<'_>,
        targets: &mut [IoSliceMut<'_>],
    ) -> Poll<io::Result<usize>> {
        self.vectored_reads += 1;
        let mut gathered = vec![0; targets.iter().map(|target| target.len()).sum()];
        let count = ready!(self.read_into(cx, &mut gathered))?;
        let mut source = &gathered[..count];
        for target in targets {
            let part = source.len().min(target.len());
            target[..part].copy_from_slice(&source[..part]);
            source = &source[part..];
        }
        Poll::Ready(Ok(count))
    }

    fn write_from(&mut self, cx: &mut Context<'_>, bytes: &[u8]) -> Poll<io::Result<usize>> {
        self.polls += 1;
        let accepted = match self.steps.pop_front() {
            None => bytes.len(),
            Some(Step::Accept(limit)) => limit.min(bytes.len()),
            Some(Step::Fail(error)) => return Poll::Ready(Err(error)),
            Some(Step::Pending) => {
                self.pendings += 1;
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            Some(Step::Bytes(_)) => panic!("the script expected a read, not a write"),
        };
        self.written.extend_from_slice(&bytes[..accepted]);
        Poll::Ready(Ok(accepted))
    }

    fn write_vectored_from(
        &mut self,
        cx: &mut Context<'_>,
        slices: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.vectored_writes += 1;
        let joined: Vec<u8> = slices
            .iter()
            .flat_map(|slice| slice.iter().copied())
            .collect();
        self.write_from(cx, &joined)
    }
}

impl futures::io::AsyncRead for Scripted {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        target: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().read_into(cx, target)
    }

    fn poll_read_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        targets: &mut [IoSliceMut<'_>],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().read_vectored_into(cx, targets)
    }
}

impl futures::io::AsyncWrite for Scripted {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bytes: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().write_from(cx, bytes)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        slices: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().write_vectored_from(cx, slices)
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().flushes += 1;
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().closes += 1;
        Poll::Ready(Ok(()))
    }
}

impl tokio::io::AsyncRead for Scripted {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        target: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let count = ready!(self.get_mut().read_into(cx, target.initialize_unfilled()))?;
        target.advance(count);
        Poll::Ready(Ok(()))
    }
}

impl tokio::io::AsyncWrite for Scripted {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bytes: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().write_from(cx, bytes)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        slices: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().write_vectored_from(cx, slices)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().flushes += 1;
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().closes += 1;
        Poll::Ready(Ok(()))
    }
}

/// An error of the stream's own, to recognise inside the `io::Error` that comes out.
#[derive(Debug, PartialEq)]
struct PeerVanished(u32);

impl fmt::Display for PeerVanished {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "peer {} vanished", self.0)
    }
}

impl std::error::Error for PeerVanished {}

fn peer_vanished(kind: ErrorKind, number: u32) -> Step {
    Step::Fail(io::Error::new(kind, PeerVanished(number)))
}

/// Asserts that `error` is the one [`peer_vanished`] made: same kind, same inner error.
fn assert_peer_vanished(error: io::Error, kind: ErrorKind, number: u32) {
    assert_eq!(error.kind(), kind);
    assert_eq!(error.to_string(), format!("peer {number} vanished"));
    let inner = error.into_inner().expect("the stream's inner error");
    assert_eq!(
        inner.downcast_ref::<PeerVanished>(),
        Some(&PeerVanished(number))
    );
}

/// Asserts that `result` is the adapters' error outside `async_def`.
fn assert_no_awaitlet_context<T: fmt::Debug>(result: io::Result<T>) {
    let error = result.expect_err("an error outside async_def");
    assert_eq!(error.kind(), ErrorKind::Other);
    assert_eq!(
        error
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<NoAwaitletContext>()),
        Some(&NoAwaitletContext)
    );
}

/// A future that counts how often it is polled.
struct CountPolls<F> {
    fut: F,
    polls: usize,
}

impl<F: Future + Unpin> Future for CountPolls<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        self.polls += 1;
        Pin::new(&mut self.fut).poll(cx)
    }
}

/// Runs `f` in `async_def` on `futures`' executor; returns its value and how often the
/// executor polled the `async_def` future.
fn run_counting_polls<R>(f: impl FnOnce() -> R) -> (R, usize) {
    let mut counted = CountPolls {
        fut: async_def(f),
        polls: 0,
    };
    let output = futures::executor::block_on(&mut counted);
    (output, counted.polls)
}

/// Runs `f` in `async_def` on `futures`' executor.
fn run<R>(f: impl FnOnce() -> R) -> R {
    futures::executor::block_on(async_def(f))
}

/// The contract tests, for whichever `SyncReader` and `SyncWriter` are in scope.
macro_rules! contract_tests {
    () => {
        use super::*;

        #[test]
        fn end_of_stream_reads_as_ok_zero_every_time_it_is_asked() {
            let mut reader = SyncReader::new(Scripted::new([bytes("hi")]));
            let (reads, buffered) = run(|| {
                let mut target = [0; 8];
                let first = reader.read(&mut target).unwrap();
                assert_eq!(&target[..first], b"hi");
                let later = [
                    reader.read(&mut target).unwrap(),
                    reader.read(&mut target).unwrap(),
                ];
                (later, reader.fill_buf().unwrap().len())
            });
            assert_eq!(reads, [0, 0]);
            assert_eq!(buffered, 0);
            // Each call asked the stream again: the end is not latched.
            assert_eq!(reader.get_ref().polls, 4);
        }

        #[test]
        fn read_exact_past_the_end_is_unexpected_eof() {
            let mut reader = SyncReader::new(Scripted::new([bytes("abc")]));
            let error = run(|| reader.read_exact(&mut [0; 5])).unwrap_err();
            assert_eq!(error.kind(), ErrorKind::UnexpectedEof);
        }

        #[test]
        fn read_exact_gathers_across_pieces_and_suspensions() {
            let mut reader = SyncReader::new(Scripted::new([
                bytes("ab"),
                Step::Pending,
                bytes("c"),
                Step::Pending,
                bytes("defg"),
            ]));
            let mut target = [0; 6];
            let (result, polls) = run_counting_polls(|| reader.read_exact(&mut target));
            result.unwrap();
            assert_eq!(&target, b"abcdef");
            assert_eq!(polls, 3);
            assert_eq!(reader.buffer(), b"g");
        }

        #[test]
        fn stream_read_errors_pass_through_unchanged_and_reading_goes_on() {
            let mut reader = SyncReader::new(Scripted::new([
                bytes("ab"),
                peer_vanished(ErrorKind::ConnectionReset, 7),
                bytes("cd"),
            ]));
            let (first, error, after, end) = run(|| {
                let mut first = [0; 4];
                let count = reader.read(&mut first).unwrap();
                let error = reader.read(&mut [0; 4]).unwrap_err();
                let mut after = String::new();
                let end = reader.read_to_string(&mut after).unwrap();
                (first[..count].to_vec(), error, after, end)
            });
            assert_eq!(first, b"ab");
            assert_peer_vanished(error, ErrorKind::ConnectionReset, 7);
            assert_eq!(after, "cd");
            assert_eq!(end, 2);
        }

        #[test]
        fn bytes_buffered_before_a_stream_error_are_not_lost() {
            let mut reader = SyncReader::new(Scripted::new([
                bytes("abcd"),
                peer_vanished(ErrorKind::BrokenPipe, 3),
                bytes("ef"),
            ]));
            let (front, back, error, rest) = run(|| {
                let (mut front, mut back) = ([0; 2], [0; 2]);
                reader.read_exact(&mut front).unwrap();
                reader.read_exact(&mut back).unwrap();
                let error = reader.fill_buf().unwrap_err();
                let rest = reader.fill_buf().unwrap().to_vec();
                (front, back, error, rest)
            });
            assert_eq!((&front, &back), (b"ab", b"cd"));
            assert_peer_vanished(error, ErrorKind::BrokenPipe, 3);
            assert_eq!(rest, b"ef");
            assert_eq!(reader.get_ref().polls, 3);
        }

        #[test]
        fn stream_write_errors_pass_through_unchanged_and_writing_goes_on() {
            let mut writer = SyncWriter::new(Scripted::new([
                peer_vanished(ErrorKind::ConnectionAborted, 9),
                Step::Accept(2),
            ]));
            let (error, written) = run(|| {
                let error = writer.write(b"abc").unwrap_err();
                (error, writer.write(b"abc").unwrap())
            });
            assert_peer_vanished(error, ErrorKind::ConnectionAborted, 9);
            assert_eq!(written, 2);
            assert_eq!(writer.get_ref().written, b"ab");
        }

        #[test]
        fn interrupted_passes_through_and_std_loops_retry_it() {
            let interrupted = || Step::Fail(io::Error::from(ErrorKind::Interrupted));
            let mut reader = SyncReader::new(Scripted::new([interrupted(), bytes("xy")]));
            let error = run(|| reader.read(&mut [0; 2])).unwrap_err();
            assert_eq!(error.kind(), ErrorKind::Interrupted);

            let mut reader = SyncReader::new(Scripted::new([interrupted(), bytes("xy")]));
            let mut target = [0; 2];
            run(|| reader.read_exact(&mut target)).unwrap();
            assert_eq!(&target, b"xy");

            let mut writer = SyncWriter::new(Scripted::new([interrupted()]));
            let error = run(|| writer.write(b"abc")).unwrap_err();
            assert_eq!(error.kind(), ErrorKind::Interrupted);

            let mut writer = SyncWriter::new(Scripted::new([
                interrupted(),
                Step::Accept(1),
                interrupted(),
            ]));
            run(|| writer.write_all(b"abc")).unwrap();
            assert_eq!(writer.get_ref().written, b"abc");
        }

        #[test]
        fn buf_read_fill_buf_consume_read_line_and_lines() {
            let mut reader = SyncReader::with_capacity(
                4,
                Scripted::new([
                    bytes("alpha\nbe"),
                    Step::Pending,
                    bytes("ta\n"),
                    bytes("gam"),
                    Step::Pending,
                    bytes("ma"),
                ]),
            );
            let (filled, line, lines) = run(|| {
                let filled = reader.fill_buf().unwrap().to_vec();
                reader.consume(1);
                assert_eq!(reader.buffer(), b"lph");
                // Filling again with bytes buffered reads nothing more.
                assert_eq!(reader.fill_buf().unwrap(), b"lph");
                assert_eq!(reader.get_ref().polls, 1);
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                let lines = (&mut reader)
                    .lines()
                    .collect::<io::Result<Vec<_>>>()
                    .unwrap();
                (filled, line, lines)
            });
            assert_eq!(filled, b"alph");
            assert_eq!(line, "lpha\n");
            assert_eq!(lines, ["beta", "gamma"]);
            assert_eq!(reader.get_ref().pendings, 2);
        }

        #[test]
        fn consuming_more_than_is_buffered_empties_the_buffer() {
            let mut reader = SyncReader::with_capacity(4, Scripted::new([bytes("abcdef")]));
            let (first, second) = run(|| {
                let first = reader.fill_buf().unwrap().to_vec();
                reader.consume(10);
                assert!(reader.buffer().is_empty());
                (first, reader.fill_buf().unwrap().to_vec())
            });
            assert_eq!((&first[..], &second[..]), (&b"abcd"[..], &b"ef"[..]));
        }

        #[test]
        fn a_pending_stream_suspends_the_reader_until_it_is_ready() {
            let mut reader = SyncReader::new(Scripted::new([
                Step::Pending,
                Step::Pending,
                bytes("one "),
                Step::Pending,
                Step::Pending,
                Step::Pending,
                bytes("two"),
            ]));
            let (text, polls) = run_counting_polls(|| {
                let mut text = String::new();
                reader.read_to_string(&mut text).map(|_| text)
            });
            assert_eq!(text.unwrap(), "one two");
            // Each Pending went back to the executor, which polled the async_def again.
            assert_eq!(reader.get_ref().pendings, 5);
            assert_eq!(polls, 6);
        }

        #[test]
        fn a_pending_sink_suspends_the_writer_until_it_is_ready() {
            let mut writer = SyncWriter::new(Scripted::new([
                Step::Pending,
                Step::Pending,
                Step::Accept(3),
            ]));
            let (written, polls) = run_counting_polls(|| writer.write(b"abcdef"));
            assert_eq!(written.unwrap(), 3);
            assert_eq!(polls, 3);
            assert_eq!(writer.get_ref().written, b"abc");
        }

        #[test]
        fn outside_async_def_every_call_is_an_error_wrapping_no_awaitlet_context() {
            let mut reader = SyncReader::new(Scripted::new([bytes("data")]));
            assert_no_awaitlet_context(reader.read(&mut [0; 4]));
            assert_no_awaitlet_context(reader.read(&mut [0; 64 * 1024]));
            assert_no_awaitlet_context(reader.read_exact(&mut [0; 4]));
            assert_no_awaitlet_context(reader.fill_buf().map(<[u8]>::to_vec));
            assert_no_awaitlet_context(reader.read_line(&mut String::new()));
            // A zero-length read needs no stream, so it succeeds even here.
            assert_eq!(reader.read(&mut []).unwrap(), 0);
            assert!(reader.get_ref().untouched());

            let mut writer = SyncWriter::new(Scripted::new([]));
            assert_no_awaitlet_context(writer.write(b"abc"));
            assert_no_awaitlet_context(writer.write_all(b"abc"));
            assert_no_awaitlet_context(writer.write_vectored(&[IoSlice::new(b"abc")]));
            assert_no_awaitlet_context(writer.flush());
            assert_no_awaitlet_context(writer.close());
            assert!(writer.get_ref().untouched());

            // The same reader, inside async_def, finds the data still there.
            assert_eq!(run(|| reader.fill_buf().unwrap().to_vec()), b"data");
        }

        #[test]
        fn a_zero_length_read_does_not_touch_the_stream() {
            let mut reader = SyncReader::new(Scripted::new([peer_vanished(
                ErrorKind::ConnectionReset,
                1,
            )]));
            let counts = run(|| {
                [
                    reader.read(&mut []).unwrap(),
                    reader.read_vectored(&mut []).unwrap(),
                    reader
                        .read_vectored(&mut [IoSliceMut::new(&mut []), IoSliceMut::new(&mut [])])
                        .unwrap(),
                ]
            });
            assert_eq!(counts, [0, 0, 0]);
            assert!(reader.get_ref().untouched());
            assert_eq!(reader.get_ref().steps.len(), 1);
        }

        #[test]
        fn reads_at_least_the_buffer_size_bypass_an_empty_buffer() {
            let data: Vec<u8> = (0..30).collect();
            let mut reader = SyncReader::with_capacity(8, Scripted::new([Step::Bytes(data)]));
            let pieces = run(|| {
                let mut large = [0; 16];
                let mut small = [0; 4];
                let first = reader.read(&mut large).unwrap();
                let first = large[..first].to_vec();
                let second = reader.read(&mut small).unwrap();
                let second = small[..second].to_vec();
                let buffered = reader.buffer().to_vec();
                // Bytes are buffered: this large read takes them and leaves the stream alone.
                let third = reader.read(&mut large).unwrap();
                let third = large[..third].to_vec();
                let fourth = reader.read(&mut large).unwrap();
                let fourth = large[..fourth].to_vec();
                [first, second, buffered, third, fourth]
            });
            let expected: [Vec<u8>; 5] = [
                (0..16).collect(),
                (16..20).collect(),
                (20..24).collect(),
                (20..24).collect(),
                (24..30).collect(),
            ];
            assert_eq!(pieces, expected);
            // The stream saw the caller's 16 bytes, the reader's own 8, then the caller's again.
            assert_eq!(reader.get_ref().offered, [16, 8, 16]);
        }

        #[test]
        fn a_write_of_zero_passes_through_and_write_all_fails_with_write_zero() {
            let mut writer = SyncWriter::new(Scripted::new([Step::Accept(0)]));
            assert_eq!(run(|| writer.write(b"x")).unwrap(), 0);

            let mut writer = SyncWriter::new(Scripted::new([Step::Accept(2), Step::Accept(0)]));
            let error = run(|| writer.write_all(b"abcd")).unwrap_err();
            assert_eq!(error.kind(), ErrorKind::WriteZero);
            assert_eq!(writer.get_ref().written, b"ab");
        }

        #[test]
        fn writer_forwards_vectored_writes_flush_and_close() {
            let mut writer = SyncWriter::new(Scripted::new([]));
            let written = run(|| {
                let written = writer
                    .write_vectored(&[IoSlice::new(b"ab"), IoSlice::new(b"cd")])
                    .unwrap();
                writer.flush().unwrap();
                writer.close().unwrap();
                written
            });
            assert_eq!(written, 4);
            let sink = writer.into_inner();
            assert_eq!(sink.written, b"abcd");
            assert_eq!((sink.vectored_writes, sink.flushes, sink.closes), (1, 1, 1));
        }

        #[test]
        fn buffered_writer_dropped_by_cancellation_does_not_abort() {
            // A BufWriter flushes as it is dropped, here while Cancelled unwinds the function.
            fn cancel_while_buffered(sink: &mut Scripted) {
                let mut cancelled = async_def(|| {
                    let mut buffered = io::BufWriter::new(SyncWriter::new(sink));
                    buffered.write_all(b"tail").unwrap();
                    awaitlet(std::future::pending::<()>());
                });
                let mut cx = Context::from_waker(Waker::noop());
                assert!(Pin::new(&mut cancelled).poll(&mut cx).is_pending());
                drop(cancelled);
            }

            // A sink ready at once still takes the bytes.
            let mut ready = Scripted::new([]);
            cancel_while_buffered(&mut ready);
            assert_eq!(ready.written, b"tail");

            // A pending one is asked once, then the flush gives up with an error.
            let mut pending = Scripted::new([Step::Pending]);
            cancel_while_buffered(&mut pending);
            assert_eq!((pending.polls, pending.pendings), (1, 1));
            assert!(pending.written.is_empty());
        }
    };
}

mod futures_io_adapters {
    use awaitlet::io::{SyncReader, SyncWriter};

    contract_tests!();

    #[test]
    fn vectored_reads_bypass_an_empty_buffer_or_fill_it() {
        let data: Vec<u8> = (0..20).collect();
        let mut reader = SyncReader::with_capacity(8, Scripted::new([Step::Bytes(data)]));
        let (direct, buffered) = run(|| {
            let (mut first, mut second) = ([0; 3], [0; 7]);
            let direct = reader
                .read_vectored(&mut [IoSliceMut::new(&mut first), IoSliceMut::new(&mut second)])
                .unwrap();
            let direct = [&first[..], &second[..]].concat()[..direct].to_vec();
            let (mut third, mut fourth) = ([0; 2], [0; 3]);
            let buffered = reader
                .read_vectored(&mut [IoSliceMut::new(&mut third), IoSliceMut::new(&mut fourth)])
                .unwrap();
            let buffered = [&third[..], &fourth[..]].concat()[..buffered].to_vec();
            (direct, buffered)
        });
        assert_eq!(direct, (0..10).collect::<Vec<u8>>());
        assert_eq!(buffered, (10..15).collect::<Vec<u8>>());
        assert_eq!(reader.buffer(), [15, 16, 17]);
        let stream = reader.get_ref();
        // The first read went to the stream's vectored read; the second filled the buffer.
        assert_eq!(stream.vectored_reads, 1);
        assert_eq!(stream.offered, [10, 8]);
    }
}

mod tokio_adapters {
    use awaitlet::io::tokio::{SyncReader, SyncWriter};

    contract_tests!();
}
