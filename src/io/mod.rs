//! Blocking-style `std::io` adapters over async byte streams, for code running inside
//! [`async_def`](crate::async_def).
//!
//! A great deal of good Rust takes a [`std::io::Read`] or a [`std::io::Write`]:
//! `serde_json::from_reader`, `flate2`'s decoders, `csv::Writer`, image and archive codecs,
//! protocol parsers written long before `async`. Served from an async socket, such code usually
//! forces a choice: read the whole message into memory first, or move the work to a blocking
//! thread. Inside `async_def` there is a third way. `SyncReader` and `SyncWriter` present an
//! async stream as a plain `Read` + `BufRead` or `Write`; each call polls the stream with
//! [`awaitlet`](crate::awaitlet), so when the socket has nothing to give, the parser's whole call
//! stack is suspended where it stands and the executor's thread goes back to other tasks. When
//! the socket's waker fires, the executor polls the `async_def` future again and the parser
//! carries on from the same `read` call, none the wiser.
//!
//! ```text
//!  executor task                  async_def greenlet (its own stack)
//!  -------------                  ----------------------------------
//!  poll(AsyncDef) ── switch ──>   serde_json::from_reader(&mut reader)
//!                                   └─ Read::read(&mut reader, buf)
//!                                        └─ awaitlet(poll_fn(|cx| stream.poll_read(cx, buf)))
//!                                             Ready(Ok(n)): return n, parsing goes on
//!                                             Pending: the stream keeps cx's waker, and
//!  return Pending <── switch ──               the greenlet suspends here, mid-document
//!    ... other tasks run; data arrives; the waker fires ...
//!  poll(AsyncDef) ── switch ──>               poll_read again: Ready(Ok(n)), parsing goes on
//! ```
//!
//! Two families, one per async I/O ecosystem:
//!
//! - over `futures_io::AsyncRead`/`AsyncWrite` (the `futures` crate, smol, async-std,
//!   async-net): `io::SyncReader`, `io::SyncWriter` and `io::SyncStream`, with the
//!   `futures-io` feature (on by default);
//! - over tokio's `AsyncRead`/`AsyncWrite`: `io::tokio::SyncReader`, `io::tokio::SyncWriter`
//!   and `io::tokio::SyncStream`, with the `tokio` feature.
//!
//! A reader and a writer each take one direction. `SyncStream` takes both directions of one
//! stream (a socket, say) and is `Read + BufRead + Write` at once, which is what
//! request/response protocols want: it buffers writes and sends them on `flush` and before any
//! read that has to wait, so a request can neither stall on Nagle's algorithm nor sit in a
//! buffer while the read waits for its reply.
//!
//! The readers buffer like [`std::io::BufReader`] (8 KiB unless told otherwise, allocated once, at
//! construction); the writers are unbuffered, so each `write` is one `poll_write`, awaited until
//! it is ready (wrap a writer in [`std::io::BufWriter`] to batch small writes, and flush it before
//! the end). A `SyncStream` buffers both ways, 8 KiB each. The inner stream must be [`Unpin`];
//! a stream that is not can be passed as `Box::pin(stream)`.
//!
//! # Contracts
//!
//! The adapters keep `std::io`'s contracts exactly, which is what lets existing sync code rely on
//! them:
//!
//! - **End of stream** is `Ok(0)` from `read`, and an empty slice from `fill_buf`, as often as it
//!   is asked: each call asks the stream again, so a stream that ends is seen as ended every time.
//!   [`read_exact`](std::io::Read::read_exact) that meets the end first fails with
//!   [`ErrorKind::UnexpectedEof`](std::io::ErrorKind::UnexpectedEof).
//! - **A zero-length buffer** makes `read` (and `read_vectored` with zero total length) return
//!   `Ok(0)` at once, without touching the stream; that holds outside `async_def` too.
//! - **Errors from the stream pass through unchanged**: the very `std::io::Error` the stream
//!   returned, with its kind and inner error. The adapter stays usable: the next call polls the
//!   stream again, and bytes buffered before the error are not lost.
//! - **[`ErrorKind::Interrupted`](std::io::ErrorKind::Interrupted)** passes through like any other
//!   error. A bare `read` or `write` returns it; `std`'s looping helpers
//!   ([`read_exact`](std::io::Read::read_exact), [`read_to_end`](std::io::Read::read_to_end),
//!   [`read_line`](std::io::BufRead::read_line), [`write_all`](std::io::Write::write_all), ...)
//!   retry on it, as their documentation promises.
//! - **A sink that accepts nothing**: `write` returns the stream's `Ok(0)` as is, and
//!   [`write_all`](std::io::Write::write_all) turns it into
//!   [`ErrorKind::WriteZero`](std::io::ErrorKind::WriteZero).
//! - **Outside `async_def`** (or inside a future that `awaitlet` is polling) there is no task to
//!   suspend, so the adapters do not panic and do not touch the stream: every call that would
//!   poll it returns an error of kind [`ErrorKind::Other`](std::io::ErrorKind::Other) whose
//!   inner error is [`NoAwaitletContext`](crate::NoAwaitletContext) (find it with
//!   `error.get_ref()` and `downcast_ref`).
//! - **Cancellation**: dropping the `async_def` future while the code inside waits in a `read` or
//!   `write` unwinds that code from the `awaitlet` call (see [`Cancelled`](crate::Cancelled)).
//!   The adapter is left consistent (a pending poll has consumed nothing). While that unwinding
//!   runs destructors, the adapters still do what the stream can do at once and return the
//!   `NoAwaitletContext` error for the rest, without raising: a [`std::io::BufWriter`] around a
//!   writer, flushing as it is dropped, loses its unwritten bytes but does not abort the process.
//! - A panic inside the stream's `poll_*` surfaces at the `read` or `write` call, like any panic
//!   inside an awaited future.
//!
//! # Example
//!
//! A JSON document arrives in three pieces through a channel; `serde_json` parses it as it
//! arrives, suspending in the middle of the document whenever the next piece is not there yet.
//!
//! ```
//! use awaitlet::{async_def, io::SyncReader};
//! use futures::{SinkExt, TryStreamExt, channel::mpsc};
//!
//! let (mut sender, receiver) = mpsc::channel::<std::io::Result<Vec<u8>>>(0);
//! let producer = async move {
//!     for piece in [&br#"{"name": "awa"#[..], br#"itlet", "sta"#, br#"rs": 5}"#] {
//!         sender.send(Ok(piece.to_vec())).await.unwrap();
//!     }
//!     // `sender` is dropped here, which ends the stream.
//! };
//! let consumer = async_def(|| {
//!     let reader = SyncReader::new(receiver.into_async_read());
//!     serde_json::from_reader::<_, serde_json::Value>(reader)
//! });
//!
//! let ((), parsed) = futures::executor::block_on(futures::future::join(producer, consumer));
//! let document = parsed.unwrap();
//! assert_eq!(document["name"], "awaitlet");
//! assert_eq!(document["stars"], 5);
//! ```

#[cfg(any(feature = "futures-io", feature = "tokio"))]
mod stream;
#[cfg(feature = "tokio")]
#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
pub mod tokio;

#[cfg(any(feature = "futures-io", feature = "tokio"))]
use std::future::Future;
#[cfg(feature = "futures-io")]
use std::{
    fmt,
    future::poll_fn,
    io::{self, BufRead, IoSlice, IoSliceMut, Read, Write},
    pin::Pin,
};

#[cfg(feature = "futures-io")]
use futures_io::{AsyncRead, AsyncWrite};

/// The readers' buffer size unless `with_capacity` says otherwise, as for `std::io::BufReader`.
#[cfg(any(feature = "futures-io", feature = "tokio"))]
const DEFAULT_CAPACITY: usize = 8 * 1024;

/// Awaits one I/O operation from sync code: the operation's own result inside `async_def`, an
/// error wrapping [`NoAwaitletContext`](crate::NoAwaitletContext) outside it.
#[cfg(any(feature = "futures-io", feature = "tokio"))]
fn await_io<T>(operation: impl Future<Output = std::io::Result<T>>) -> std::io::Result<T> {
    match crate::try_awaitlet(operation) {
        Ok(result) => result,
        Err(outside) => Err(std::io::Error::other(outside)),
    }
}

/// The read-ahead buffer both readers share: `storage[position..filled]` holds the bytes read
/// from the stream and not yet handed out.
#[cfg(any(feature = "futures-io", feature = "tokio"))]
struct ReadBuffer {
    storage: Box<[u8]>,
    position: usize,
    filled: usize,
}

#[cfg(any(feature = "futures-io", feature = "tokio"))]
impl ReadBuffer {
    /// The only allocation a reader makes.
    fn with_capacity(capacity: usize) -> ReadBuffer {
        ReadBuffer {
            storage: vec![0; capacity].into_boxed_slice(),
            position: 0,
            filled: 0,
        }
    }

    fn capacity(&self) -> usize {
        self.storage.len()
    }

    fn unread(&self) -> &[u8] {
        &self.storage[self.position..self.filled]
    }

    fn is_drained(&self) -> bool {
        self.position >= self.filled
    }

    fn consume(&mut self, amount: usize) {
        self.position = (self.position + amount).min(self.filled);
    }

    /// `BufRead::fill_buf`: the unread bytes, after one read from the stream if there were none.
    /// An error leaves the buffer drained, so the next call asks the stream again.
    fn fill(
        &mut self,
        read_from_stream: impl FnOnce(&mut [u8]) -> std::io::Result<usize>,
    ) -> std::io::Result<&[u8]> {
        if self.is_drained() {
            self.position = 0;
            self.filled = 0;
            self.filled = read_from_stream(&mut self.storage)?;
        }
        Ok(self.unread())
    }

    /// `Read::read`, `std::io::BufReader`'s way: nothing for an empty `target`; a `target` at
    /// least as large as the buffer is read into directly when nothing is buffered; otherwise
    /// copy from the buffer, refilling it first if it is drained.
    fn read(
        &mut self,
        target: &mut [u8],
        read_from_stream: impl FnOnce(&mut [u8]) -> std::io::Result<usize>,
    ) -> std::io::Result<usize> {
        if target.is_empty() {
            return Ok(0);
        }
        if self.is_drained() && target.len() >= self.capacity() {
            return read_from_stream(target);
        }
        let unread = self.fill(read_from_stream)?;
        let count = unread.len().min(target.len());
        target[..count].copy_from_slice(&unread[..count]);
        self.consume(count);
        Ok(count)
    }
}

/// `std::io::Read` and `std::io::BufRead` over a `futures_io::AsyncRead` stream (smol's and
/// async-std's sockets and files, `futures::io` types), for code inside
/// [`async_def`](crate::async_def).
///
/// It buffers like [`std::io::BufReader`]: 8 KiB by default ([`with_capacity`](Self::with_capacity)
/// picks another size), allocated once at construction. A `read` into a slice at least as large
/// as the buffer, while the buffer is empty, goes straight to the stream.
///
/// Each read that needs the stream polls it with [`awaitlet`](crate::awaitlet): `Pending`
/// suspends the code calling `read` until the stream's waker fires. Outside `async_def` such a
/// read returns an error wrapping [`NoAwaitletContext`](crate::NoAwaitletContext) instead. The
/// [module docs](self#contracts) list the contracts kept (end of stream, errors, `Interrupted`).
///
/// ```
/// use std::io::BufRead;
/// use awaitlet::{async_def, io::SyncReader};
///
/// let lines = futures::executor::block_on(async_def(|| {
///     let reader = SyncReader::new(futures::io::Cursor::new("first\nsecond\n"));
///     reader.lines().collect::<std::io::Result<Vec<String>>>()
/// }));
/// assert_eq!(lines.unwrap(), ["first", "second"]);
/// ```
#[cfg(feature = "futures-io")]
#[cfg_attr(docsrs, doc(cfg(feature = "futures-io")))]
pub struct SyncReader<R> {
    inner: R,
    buffer: ReadBuffer,
}

#[cfg(feature = "futures-io")]
impl<R: AsyncRead + Unpin> SyncReader<R> {
    /// Wraps `inner` with an 8 KiB buffer.
    ///
    /// ```
    /// use awaitlet::io::SyncReader;
    ///
    /// let reader = SyncReader::new(futures::io::empty());
    /// assert_eq!(reader.capacity(), 8 * 1024);
    /// ```
    pub fn new(inner: R) -> SyncReader<R> {
        SyncReader::with_capacity(DEFAULT_CAPACITY, inner)
    }

    /// Wraps `inner` with a buffer of `capacity` bytes.
    ///
    /// As with [`std::io::BufReader`], a capacity of zero makes `fill_buf` always return an empty
    /// slice (which `BufRead` users take for the end of the stream); plain reads still work.
    ///
    /// ```
    /// use std::io::Read;
    /// use awaitlet::{async_def, io::SyncReader};
    ///
    /// let mut reader = SyncReader::with_capacity(4, futures::io::Cursor::new(b"abcdefgh"));
    /// let mut first = [0; 2];
    /// futures::executor::block_on(async_def(|| reader.read_exact(&mut first))).unwrap();
    /// assert_eq!(&first, b"ab");
    /// assert_eq!(reader.buffer(), b"cd"); // one 4-byte read filled the buffer
    /// ```
    pub fn with_capacity(capacity: usize, inner: R) -> SyncReader<R> {
        SyncReader {
            inner,
            buffer: ReadBuffer::with_capacity(capacity),
        }
    }
}

#[cfg(feature = "futures-io")]
impl<R> SyncReader<R> {
    /// The inner stream.
    ///
    /// ```
    /// use awaitlet::io::SyncReader;
    ///
    /// let reader = SyncReader::new(futures::io::Cursor::new(b"data"));
    /// assert_eq!(reader.get_ref().position(), 0);
    /// ```
    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    /// The inner stream, mutably. Reading from it directly skips whatever this reader has
    /// buffered, so the two would see the data out of order.
    ///
    /// ```
    /// use awaitlet::io::SyncReader;
    ///
    /// let mut reader = SyncReader::new(futures::io::Cursor::new(b"data"));
    /// reader.get_mut().set_position(2);
    /// assert_eq!(reader.get_ref().position(), 2);
    /// ```
    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }

    /// Unwraps the inner stream. Bytes still in the buffer (see [`buffer`](Self::buffer)) are
    /// lost; read them first if they matter.
    ///
    /// ```
    /// use awaitlet::io::SyncReader;
    ///
    /// let reader = SyncReader::new(futures::io::Cursor::new(b"data"));
    /// assert_eq!(reader.into_inner().into_inner(), b"data");
    /// ```
    pub fn into_inner(self) -> R {
        self.inner
    }

    /// The bytes read from the stream and not yet handed out, without reading more.
    ///
    /// ```
    /// use std::io::BufRead;
    /// use awaitlet::{async_def, io::SyncReader};
    ///
    /// let mut reader = SyncReader::new(futures::io::Cursor::new(b"hello"));
    /// assert!(reader.buffer().is_empty());
    /// futures::executor::block_on(async_def(|| reader.fill_buf().map(|bytes| bytes.len())))
    ///     .unwrap();
    /// reader.consume(1);
    /// assert_eq!(reader.buffer(), b"ello");
    /// ```
    pub fn buffer(&self) -> &[u8] {
        self.buffer.unread()
    }

    /// The buffer's size in bytes.
    ///
    /// ```
    /// use awaitlet::io::SyncReader;
    ///
    /// assert_eq!(SyncReader::with_capacity(100, futures::io::empty()).capacity(), 100);
    /// ```
    pub fn capacity(&self) -> usize {
        self.buffer.capacity()
    }
}

/// One `poll_read` of `inner` into `target`, awaited.
#[cfg(feature = "futures-io")]
fn read_once<R: AsyncRead + Unpin>(inner: &mut R, target: &mut [u8]) -> io::Result<usize> {
    await_io(poll_fn(|cx| Pin::new(&mut *inner).poll_read(cx, target)))
}

#[cfg(feature = "futures-io")]
impl<R: AsyncRead + Unpin> Read for SyncReader<R> {
    fn read(&mut self, target: &mut [u8]) -> io::Result<usize> {
        let inner = &mut self.inner;
        self.buffer
            .read(target, |destination| read_once(inner, destination))
    }

    /// Buffered like `read`; when the buffer is empty and the slices hold at least its capacity,
    /// they go straight to the stream's `poll_read_vectored`.
    fn read_vectored(&mut self, targets: &mut [IoSliceMut<'_>]) -> io::Result<usize> {
        let total: usize = targets.iter().map(|target| target.len()).sum();
        if total == 0 {
            return Ok(0);
        }
        if self.buffer.is_drained() && total >= self.buffer.capacity() {
            let inner = &mut self.inner;
            return await_io(poll_fn(|cx| {
                Pin::new(&mut *inner).poll_read_vectored(cx, targets)
            }));
        }
        let inner = &mut self.inner;
        let mut unread = self
            .buffer
            .fill(|destination| read_once(inner, destination))?;
        let count = unread.read_vectored(targets)?;
        self.buffer.consume(count);
        Ok(count)
    }
}

#[cfg(feature = "futures-io")]
impl<R: AsyncRead + Unpin> BufRead for SyncReader<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        let inner = &mut self.inner;
        self.buffer
            .fill(|destination| read_once(inner, destination))
    }

    fn consume(&mut self, amount: usize) {
        self.buffer.consume(amount);
    }
}

#[cfg(feature = "futures-io")]
impl<R: fmt::Debug> fmt::Debug for SyncReader<R> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("SyncReader")
            .field("inner", &self.inner)
            .field(
                "buffer",
                &format_args!("{}/{}", self.buffer.unread().len(), self.buffer.capacity()),
            )
            .finish()
    }
}

/// `std::io::Write` over a `futures_io::AsyncWrite` sink (smol's and async-std's sockets and
/// files, `futures::io` types), for code inside [`async_def`](crate::async_def).
///
/// Unbuffered: `write` is one `poll_write`, `write_vectored` one `poll_write_vectored`, `flush`
/// is `poll_flush`, each awaited with [`awaitlet`](crate::awaitlet). Wrap it in
/// [`std::io::BufWriter`] to batch small writes (and flush that before the end). Dropping it
/// neither flushes nor closes the sink; [`close`](Self::close) does both.
///
/// Outside `async_def` every call returns an error wrapping
/// [`NoAwaitletContext`](crate::NoAwaitletContext). The [module docs](self#contracts) list the
/// contracts kept (errors, `Ok(0)` and `WriteZero`, `Interrupted`).
///
/// ```
/// use std::io::Write;
/// use awaitlet::{async_def, io::SyncWriter};
///
/// let mut writer = SyncWriter::new(futures::io::Cursor::new(Vec::new()));
/// futures::executor::block_on(async_def(|| {
///     writeln!(writer, "{} + {} = {}", 2, 2, 2 + 2)?;
///     writer.close()
/// }))
/// .unwrap();
/// assert_eq!(writer.into_inner().into_inner(), b"2 + 2 = 4\n");
/// ```
#[cfg(feature = "futures-io")]
#[cfg_attr(docsrs, doc(cfg(feature = "futures-io")))]
#[derive(Debug)]
pub struct SyncWriter<W> {
    inner: W,
}

#[cfg(feature = "futures-io")]
impl<W: AsyncWrite + Unpin> SyncWriter<W> {
    /// Wraps `inner`.
    ///
    /// ```
    /// use awaitlet::io::SyncWriter;
    ///
    /// let writer = SyncWriter::new(futures::io::sink());
    /// # let _ = writer;
    /// ```
    pub fn new(inner: W) -> SyncWriter<W> {
        SyncWriter { inner }
    }

    /// Flushes and closes the sink (`poll_close`): for a socket, the peer sees the end of the
    /// stream. Writing afterwards is up to the sink (most return an error).
    ///
    /// ```
    /// use std::io::Write;
    /// use awaitlet::{async_def, io::SyncWriter};
    ///
    /// let mut writer = SyncWriter::new(futures::io::Cursor::new(Vec::new()));
    /// futures::executor::block_on(async_def(|| {
    ///     writer.write_all(b"last words")?;
    ///     writer.close()
    /// }))
    /// .unwrap();
    /// assert_eq!(writer.get_ref().get_ref(), b"last words");
    /// ```
    pub fn close(&mut self) -> io::Result<()> {
        let inner = &mut self.inner;
        await_io(poll_fn(|cx| Pin::new(&mut *inner).poll_close(cx)))
    }
}

#[cfg(feature = "futures-io")]
impl<W> SyncWriter<W> {
    /// The inner sink.
    ///
    /// ```
    /// use awaitlet::io::SyncWriter;
    ///
    /// let writer = SyncWriter::new(futures::io::Cursor::new(vec![1, 2, 3]));
    /// assert_eq!(writer.get_ref().get_ref(), &[1, 2, 3]);
    /// ```
    pub fn get_ref(&self) -> &W {
        &self.inner
    }

    /// The inner sink, mutably.
    ///
    /// ```
    /// use awaitlet::io::SyncWriter;
    ///
    /// let mut writer = SyncWriter::new(futures::io::Cursor::new(vec![1, 2, 3]));
    /// writer.get_mut().set_position(3);
    /// assert_eq!(writer.get_ref().position(), 3);
    /// ```
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }

    /// Unwraps the inner sink. Nothing is lost: the writer holds no bytes of its own.
    ///
    /// ```
    /// use awaitlet::io::SyncWriter;
    ///
    /// let writer = SyncWriter::new(futures::io::Cursor::new(vec![1, 2, 3]));
    /// assert_eq!(writer.into_inner().into_inner(), [1, 2, 3]);
    /// ```
    pub fn into_inner(self) -> W {
        self.inner
    }
}

#[cfg(feature = "futures-io")]
impl<W: AsyncWrite + Unpin> Write for SyncWriter<W> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let inner = &mut self.inner;
        await_io(poll_fn(|cx| Pin::new(&mut *inner).poll_write(cx, bytes)))
    }

    fn write_vectored(&mut self, slices: &[IoSlice<'_>]) -> io::Result<usize> {
        let inner = &mut self.inner;
        await_io(poll_fn(|cx| {
            Pin::new(&mut *inner).poll_write_vectored(cx, slices)
        }))
    }

    fn flush(&mut self) -> io::Result<()> {
        let inner = &mut self.inner;
        await_io(poll_fn(|cx| Pin::new(&mut *inner).poll_flush(cx)))
    }
}

/// The `futures-io` side of the engine behind [`SyncStream`].
#[cfg(feature = "futures-io")]
struct FuturesIo<S>(S);

#[cfg(feature = "futures-io")]
impl<S: AsyncRead + AsyncWrite + Unpin> stream::Transport for FuturesIo<S> {
    fn poll_read_into(
        &mut self,
        cx: &mut std::task::Context<'_>,
        target: &mut [u8],
    ) -> std::task::Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_read(cx, target)
    }

    fn poll_write_from(
        &mut self,
        cx: &mut std::task::Context<'_>,
        bytes: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, bytes)
    }

    fn poll_flush_out(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_close_out(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_close(cx)
    }
}

/// `std::io::Read` + `BufRead` + `Write` over one two-way `futures_io` stream (a smol or
/// async-std `TcpStream`, say), for request/response code inside [`async_def`](crate::async_def).
///
/// Reads are buffered like [`SyncReader`]'s. Writes are buffered too (8 KiB), and sent, with a
/// flush of the stream, at two moments: on [`flush`](Write::flush) and [`close`](Self::close),
/// and when a read finds the stream empty and has to wait. So a protocol that writes a request
/// in many small pieces sends it as one, and a read never waits for the reply to a request still
/// sitting in the buffer. A write at least as large as the buffer goes straight to the stream.
///
/// Dropping it neither sends the buffered writes nor closes the stream: call
/// [`close`](Self::close) (or `flush`) first. Outside `async_def`, writes that fit the buffer
/// succeed and every call that needs the stream returns an error wrapping
/// [`NoAwaitletContext`](crate::NoAwaitletContext). The [module docs](self#contracts) list the
/// contracts kept.
///
/// A client speaks a line protocol to a smol server on 127.0.0.1 that answers each line in
/// capitals. Each request is written in two pieces and sent as one, when `read_line` finds no
/// reply yet.
///
/// ```
/// use std::io::{BufRead, Write};
/// use awaitlet::{async_def, awaitlet, io::SyncStream};
/// use futures::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
///
/// smol::block_on(async {
///     let listener = smol::net::TcpListener::bind("127.0.0.1:0").await?;
///     let address = listener.local_addr()?;
///     let server = async move {
///         let (mut socket, _) = listener.accept().await?;
///         let mut reader = BufReader::new(socket.clone());
///         let mut line = String::new();
///         while reader.read_line(&mut line).await? > 0 {
///             socket.write_all(line.to_uppercase().as_bytes()).await?;
///             line.clear();
///         }
///         Ok::<_, std::io::Error>(())
///     };
///     let client = async_def(|| {
///         let mut stream = SyncStream::new(awaitlet(smol::net::TcpStream::connect(address))?);
///         let mut replies = Vec::new();
///         for word in ["ping", "pong"] {
///             write!(stream, "{word}")?; // buffered
///             writeln!(stream)?; // buffered
///             let mut reply = String::new();
///             stream.read_line(&mut reply)?; // sends the request, then waits for the reply
///             replies.push(reply);
///         }
///         stream.close()?; // the server sees the end of the stream and stops
///         Ok::<_, std::io::Error>(replies)
///     });
///     let (served, replies) = futures::future::join(server, client).await;
///     served?;
///     assert_eq!(replies?, ["PING\n", "PONG\n"]);
///     Ok::<_, std::io::Error>(())
/// })
/// .unwrap();
/// ```
#[cfg(feature = "futures-io")]
#[cfg_attr(docsrs, doc(cfg(feature = "futures-io")))]
pub struct SyncStream<S> {
    engine: stream::Duplex<FuturesIo<S>>,
}

#[cfg(feature = "futures-io")]
impl<S: AsyncRead + AsyncWrite + Unpin> SyncStream<S> {
    /// Wraps `inner` with an 8 KiB read buffer and an 8 KiB write buffer.
    ///
    /// ```
    /// use awaitlet::io::SyncStream;
    ///
    /// let stream = SyncStream::new(futures::io::Cursor::new(Vec::new()));
    /// assert_eq!(stream.capacity(), 8 * 1024);
    /// ```
    pub fn new(inner: S) -> SyncStream<S> {
        SyncStream::with_capacity(DEFAULT_CAPACITY, DEFAULT_CAPACITY, inner)
    }

    /// Wraps `inner` with buffers of the sizes given. A write buffer of zero sends every write
    /// to the stream at once (and a read still flushes the stream before it waits).
    ///
    /// ```
    /// use awaitlet::io::SyncStream;
    ///
    /// let stream = SyncStream::with_capacity(512, 64, futures::io::Cursor::new(Vec::new()));
    /// assert_eq!(stream.capacity(), 512);
    /// ```
    pub fn with_capacity(read_capacity: usize, write_capacity: usize, inner: S) -> SyncStream<S> {
        SyncStream {
            engine: stream::Duplex::new(FuturesIo(inner), read_capacity, write_capacity),
        }
    }

    /// Sends the buffered writes, flushes the stream, then closes it (`poll_close`): for a
    /// socket, the peer sees the end of the stream, and this side can still read the rest of
    /// what the peer sends.
    ///
    /// ```
    /// use std::io::Write;
    /// use awaitlet::{async_def, io::SyncStream};
    ///
    /// let mut stream = SyncStream::new(futures::io::Cursor::new(Vec::new()));
    /// futures::executor::block_on(async_def(|| {
    ///     stream.write_all(b"last words")?; // buffered
    ///     stream.close() // sent, then closed
    /// }))
    /// .unwrap();
    /// assert_eq!(stream.into_inner().into_inner(), b"last words");
    /// ```
    pub fn close(&mut self) -> io::Result<()> {
        self.engine.close()
    }
}

#[cfg(feature = "futures-io")]
impl<S> SyncStream<S> {
    /// The inner stream.
    ///
    /// ```
    /// use awaitlet::io::SyncStream;
    ///
    /// let stream = SyncStream::new(futures::io::Cursor::new(vec![1, 2]));
    /// assert_eq!(stream.get_ref().get_ref(), &[1, 2]);
    /// ```
    pub fn get_ref(&self) -> &S {
        &self.engine.transport.0
    }

    /// The inner stream, mutably. Using it directly bypasses both buffers, so the bytes would
    /// be out of order.
    ///
    /// ```
    /// use awaitlet::io::SyncStream;
    ///
    /// let mut stream = SyncStream::new(futures::io::Cursor::new(vec![1, 2]));
    /// stream.get_mut().set_position(1);
    /// assert_eq!(stream.get_ref().position(), 1);
    /// ```
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.engine.transport.0
    }

    /// Unwraps the inner stream. Bytes read ahead and not yet handed out
    /// ([`read_buffer`](Self::read_buffer)) and bytes written and not yet sent
    /// ([`write_buffer`](Self::write_buffer)) are dropped: `flush` first if the writes matter.
    ///
    /// ```
    /// use std::io::Write;
    /// use awaitlet::{async_def, io::SyncStream};
    ///
    /// let mut stream = SyncStream::new(futures::io::Cursor::new(Vec::new()));
    /// futures::executor::block_on(async_def(|| {
    ///     stream.write_all(b"sent")?;
    ///     stream.flush()
    /// }))
    /// .unwrap();
    /// stream.write_all(b" and not sent").unwrap(); // fits the buffer: no stream needed
    /// assert_eq!(stream.into_inner().into_inner(), b"sent");
    /// ```
    pub fn into_inner(self) -> S {
        self.engine.transport.0
    }

    /// The bytes read from the stream and not yet handed out, without reading more.
    ///
    /// ```
    /// use std::io::BufRead;
    /// use awaitlet::{async_def, io::SyncStream};
    ///
    /// let mut stream = SyncStream::new(futures::io::Cursor::new(b"hello".to_vec()));
    /// futures::executor::block_on(async_def(|| stream.fill_buf().map(|bytes| bytes.len())))
    ///     .unwrap();
    /// stream.consume(1);
    /// assert_eq!(stream.read_buffer(), b"ello");
    /// ```
    pub fn read_buffer(&self) -> &[u8] {
        self.engine.read_buffered()
    }

    /// The bytes written and not yet sent to the stream.
    ///
    /// ```
    /// use std::io::Write;
    /// use awaitlet::io::SyncStream;
    ///
    /// let mut stream = SyncStream::new(futures::io::Cursor::new(Vec::new()));
    /// stream.write_all(b"request").unwrap();
    /// assert_eq!(stream.write_buffer(), b"request");
    /// ```
    pub fn write_buffer(&self) -> &[u8] {
        self.engine.write_buffered()
    }

    /// The read buffer's size in bytes.
    ///
    /// ```
    /// use awaitlet::io::SyncStream;
    ///
    /// let stream = SyncStream::with_capacity(100, 10, futures::io::Cursor::new(Vec::new()));
    /// assert_eq!(stream.capacity(), 100);
    /// ```
    pub fn capacity(&self) -> usize {
        self.engine.read_capacity()
    }
}

#[cfg(feature = "futures-io")]
stream::std_io_for_sync_stream!();
