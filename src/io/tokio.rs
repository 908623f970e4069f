//! The adapters over tokio's [`AsyncRead`] and [`AsyncWrite`] (feature `tokio`): [`SyncReader`]
//! presents a tokio stream as [`std::io::Read`] + [`std::io::BufRead`], [`SyncWriter`] a tokio
//! sink as [`std::io::Write`], and [`SyncStream`] one two-way stream as both, for code running
//! inside [`async_def`](crate::async_def).
//!
//! They behave as their `futures-io` namesakes in the [parent module](super), which explains
//! why they exist and lists the contracts they keep (end of stream, errors, `Interrupted`,
//! `WriteZero`, use outside `async_def`, cancellation). The differences are tokio's: reads go
//! through a [`ReadBuf`] over the reader's own buffer (or the caller's slice), tokio has no
//! vectored read, and [`SyncWriter::close`] and [`SyncStream::close`] are `poll_shutdown`.
//!
//! The `async_def` future is `!Send`: on tokio, drive it with `block_on` of a current-thread
//! runtime, `spawn_local` in a `LocalSet`, or, from a `Send` context, tokio-util's
//! `LocalPoolHandle::spawn_pinned` (see [Threads and
//! executors](crate::bridge#threads-and-executors)).
//!
//! # Example
//!
//! A task writes lines into one end of an in-memory pipe; sync code reads them from the other
//! end, waiting whenever the pipe is empty.
//!
//! ```
//! use std::io::BufRead;
//! use awaitlet::{async_def, io::tokio::SyncReader};
//! use tokio::io::AsyncWriteExt;
//!
//! let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
//! let (mut writing_end, reading_end) = tokio::io::duplex(16);
//! let lines = runtime.block_on(async {
//!     let producer = async move {
//!         for number in 1..=5 {
//!             writing_end.write_all(format!("line {number}\n").as_bytes()).await.unwrap();
//!             tokio::task::yield_now().await;
//!         }
//!         // `writing_end` is dropped here: the reader sees the end of the stream.
//!     };
//!     let consumer = async_def(|| {
//!         let reader = SyncReader::new(reading_end);
//!         reader.lines().collect::<std::io::Result<Vec<String>>>()
//!     });
//!     tokio::join!(producer, consumer).1
//! });
//! assert_eq!(lines.unwrap(), ["line 1", "line 2", "line 3", "line 4", "line 5"]);
//! ```

use std::{
    fmt,
    future::poll_fn,
    io::{self, BufRead, IoSlice, Read, Write},
    pin::Pin,
    task::{Context, Poll, ready},
};

use ::tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::{DEFAULT_CAPACITY, ReadBuffer, await_io, stream};

/// `std::io::Read` and `std::io::BufRead` over a tokio [`AsyncRead`] stream (`TcpStream`,
/// `UnixStream`, `File`, `DuplexStream`, `&[u8]`, ...), for code inside
/// [`async_def`](crate::async_def).
///
/// It buffers like [`std::io::BufReader`]: 8 KiB by default ([`with_capacity`](Self::with_capacity)
/// picks another size), allocated once at construction. A `read` into a slice at least as large
/// as the buffer, while the buffer is empty, goes straight to the stream.
///
/// Each read that needs the stream polls it with [`awaitlet`](crate::awaitlet): `Pending`
/// suspends the code calling `read` until the stream's waker fires. Outside `async_def` such a
/// read returns an error wrapping [`NoAwaitletContext`](crate::NoAwaitletContext) instead. The
/// [parent module](super#contracts) lists the contracts kept.
///
/// ```
/// use std::io::Read;
/// use awaitlet::{async_def, io::tokio::SyncReader};
///
/// let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
/// let text = runtime.block_on(async_def(|| {
///     let mut text = String::new();
///     SyncReader::new(&b"bytes from tokio"[..]).read_to_string(&mut text)?;
///     Ok::<_, std::io::Error>(text)
/// }));
/// assert_eq!(text.unwrap(), "bytes from tokio");
/// ```
pub struct SyncReader<R> {
    inner: R,
    buffer: ReadBuffer,
}

impl<R: AsyncRead + Unpin> SyncReader<R> {
    /// Wraps `inner` with an 8 KiB buffer.
    ///
    /// ```
    /// use awaitlet::io::tokio::SyncReader;
    ///
    /// let reader = SyncReader::new(tokio::io::empty());
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
    /// use awaitlet::{async_def, io::tokio::SyncReader};
    ///
    /// let mut reader = SyncReader::with_capacity(4, &b"abcdefgh"[..]);
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

impl<R> SyncReader<R> {
    /// The inner stream.
    ///
    /// ```
    /// use awaitlet::io::tokio::SyncReader;
    ///
    /// let reader = SyncReader::new(&b"data"[..]);
    /// assert_eq!(*reader.get_ref(), b"data");
    /// ```
    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    /// The inner stream, mutably. Reading from it directly skips whatever this reader has
    /// buffered, so the two would see the data out of order.
    ///
    /// ```
    /// use awaitlet::io::tokio::SyncReader;
    ///
    /// let mut reader = SyncReader::new(&b"data"[..]);
    /// *reader.get_mut() = &b"other data"[..];
    /// assert_eq!(*reader.get_ref(), b"other data");
    /// ```
    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }

    /// Unwraps the inner stream. Bytes still in the buffer (see [`buffer`](Self::buffer)) are
    /// lost; read them first if they matter.
    ///
    /// ```
    /// use awaitlet::io::tokio::SyncReader;
    ///
    /// let reader = SyncReader::new(&b"data"[..]);
    /// assert_eq!(reader.into_inner(), b"data");
    /// ```
    pub fn into_inner(self) -> R {
        self.inner
    }

    /// The bytes read from the stream and not yet handed out, without reading more.
    ///
    /// ```
    /// use std::io::BufRead;
    /// use awaitlet::{async_def, io::tokio::SyncReader};
    ///
    /// let mut reader = SyncReader::new(&b"hello"[..]);
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
    /// use awaitlet::io::tokio::SyncReader;
    ///
    /// assert_eq!(SyncReader::with_capacity(100, tokio::io::empty()).capacity(), 100);
    /// ```
    pub fn capacity(&self) -> usize {
        self.buffer.capacity()
    }
}

/// One `poll_read` of `inner` into `target`: the count of bytes it filled.
fn poll_read_into<R: AsyncRead + Unpin>(
    inner: &mut R,
    cx: &mut Context<'_>,
    target: &mut [u8],
) -> Poll<io::Result<usize>> {
    let mut read_buf = ReadBuf::new(target);
    ready!(Pin::new(inner).poll_read(cx, &mut read_buf))?;
    Poll::Ready(Ok(read_buf.filled().len()))
}

/// One `poll_read` of `inner` into `target`, awaited; the count of bytes it filled.
fn read_once<R: AsyncRead + Unpin>(inner: &mut R, target: &mut [u8]) -> io::Result<usize> {
    await_io(poll_fn(|cx| poll_read_into(inner, cx, target)))
}

impl<R: AsyncRead + Unpin> Read for SyncReader<R> {
    fn read(&mut self, target: &mut [u8]) -> io::Result<usize> {
        let inner = &mut self.inner;
        self.buffer
            .read(target, |destination| read_once(inner, destination))
    }
}

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

/// `std::io::Write` over a tokio [`AsyncWrite`] sink (`TcpStream`, `UnixStream`, `File`,
/// `DuplexStream`, `Vec<u8>`, ...), for code inside [`async_def`](crate::async_def).
///
/// Unbuffered: `write` is one `poll_write`, `write_vectored` one `poll_write_vectored`, `flush`
/// is `poll_flush`, each awaited with [`awaitlet`](crate::awaitlet). Wrap it in
/// [`std::io::BufWriter`] to batch small writes (and flush that before the end). Dropping it
/// neither flushes nor shuts the sink down; [`close`](Self::close) does.
///
/// Outside `async_def` every call returns an error wrapping
/// [`NoAwaitletContext`](crate::NoAwaitletContext). The [parent module](super#contracts) lists
/// the contracts kept.
///
/// ```
/// use std::io::Write;
/// use awaitlet::{async_def, io::tokio::SyncWriter};
///
/// let mut writer = SyncWriter::new(Vec::new());
/// let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
/// runtime
///     .block_on(async_def(|| {
///         writeln!(writer, "{} + {} = {}", 2, 2, 2 + 2)?;
///         writer.close()
///     }))
///     .unwrap();
/// assert_eq!(writer.into_inner(), b"2 + 2 = 4\n");
/// ```
#[derive(Debug)]
pub struct SyncWriter<W> {
    inner: W,
}

impl<W: AsyncWrite + Unpin> SyncWriter<W> {
    /// Wraps `inner`.
    ///
    /// ```
    /// use awaitlet::io::tokio::SyncWriter;
    ///
    /// let writer = SyncWriter::new(tokio::io::sink());
    /// # let _ = writer;
    /// ```
    pub fn new(inner: W) -> SyncWriter<W> {
        SyncWriter { inner }
    }

    /// Flushes and shuts the sink down (`poll_shutdown`): for a socket, the peer sees the end of
    /// the stream. Writing afterwards is up to the sink (most return an error).
    ///
    /// ```
    /// use std::io::Write;
    /// use awaitlet::{async_def, io::tokio::SyncWriter};
    /// use tokio::io::AsyncReadExt;
    ///
    /// let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    /// let (writing_end, mut reading_end) = tokio::io::duplex(64);
    /// let received = runtime.block_on(async {
    ///     let mut writer = SyncWriter::new(writing_end);
    ///     async_def(|| {
    ///         writer.write_all(b"last words")?;
    ///         writer.close()
    ///     })
    ///     .await?;
    ///     let mut received = Vec::new();
    ///     reading_end.read_to_end(&mut received).await?; // ends: the writer shut down
    ///     Ok::<_, std::io::Error>(received)
    /// });
    /// assert_eq!(received.unwrap(), b"last words");
    /// ```
    pub fn close(&mut self) -> io::Result<()> {
        let inner = &mut self.inner;
        await_io(poll_fn(|cx| Pin::new(&mut *inner).poll_shutdown(cx)))
    }
}

impl<W> SyncWriter<W> {
    /// The inner sink.
    ///
    /// ```
    /// use awaitlet::io::tokio::SyncWriter;
    ///
    /// let writer = SyncWriter::new(vec![1, 2, 3]);
    /// assert_eq!(writer.get_ref(), &[1, 2, 3]);
    /// ```
    pub fn get_ref(&self) -> &W {
        &self.inner
    }

    /// The inner sink, mutably.
    ///
    /// ```
    /// use awaitlet::io::tokio::SyncWriter;
    ///
    /// let mut writer = SyncWriter::new(vec![1, 2, 3]);
    /// writer.get_mut().clear();
    /// assert!(writer.get_ref().is_empty());
    /// ```
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }

    /// Unwraps the inner sink. Nothing is lost: the writer holds no bytes of its own.
    ///
    /// ```
    /// use awaitlet::io::tokio::SyncWriter;
    ///
    /// let writer = SyncWriter::new(vec![1, 2, 3]);
    /// assert_eq!(writer.into_inner(), [1, 2, 3]);
    /// ```
    pub fn into_inner(self) -> W {
        self.inner
    }
}

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

/// The tokio side of the engine behind [`SyncStream`].
struct TokioIo<S>(S);

impl<S: AsyncRead + AsyncWrite + Unpin> stream::Transport for TokioIo<S> {
    fn poll_read_into(
        &mut self,
        cx: &mut Context<'_>,
        target: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        poll_read_into(&mut self.0, cx, target)
    }

    fn poll_write_from(&mut self, cx: &mut Context<'_>, bytes: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, bytes)
    }

    fn poll_flush_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_close_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// `std::io::Read` + `BufRead` + `Write` over one two-way tokio stream (`TcpStream`,
/// `UnixStream`, `DuplexStream`, ...), for request/response code inside
/// [`async_def`](crate::async_def).
///
/// It behaves as the `futures-io` [`SyncStream`](super::SyncStream), whose docs say why: reads
/// are buffered like [`SyncReader`]'s; writes are buffered (8 KiB) and sent, with a flush of
/// the stream, on [`flush`](Write::flush) and [`close`](Self::close) and whenever a read finds
/// the stream empty and has to wait. Dropping it neither sends the buffered writes nor shuts the
/// stream down.
///
/// ```
/// use std::io::{BufRead, Write};
/// use awaitlet::{async_def, io::tokio::SyncStream};
/// use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
///
/// let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
/// let (client_end, server_end) = tokio::io::duplex(1024);
/// let replies = runtime.block_on(async {
///     // The server answers each line with the line in capitals.
///     let server = async move {
///         let (reading_half, mut writing_half) = tokio::io::split(server_end);
///         let mut lines = BufReader::new(reading_half).lines();
///         while let Some(line) = lines.next_line().await? {
///             writing_half.write_all(format!("{}\n", line.to_uppercase()).as_bytes()).await?;
///         }
///         Ok::<_, std::io::Error>(())
///     };
///     let client = async_def(|| {
///         let mut stream = SyncStream::new(client_end);
///         let mut replies = Vec::new();
///         for word in ["ping", "pong"] {
///             writeln!(stream, "{word}")?; // buffered
///             let mut reply = String::new();
///             stream.read_line(&mut reply)?; // sends the request, then waits for the reply
///             replies.push(reply);
///         }
///         stream.close()?; // the server sees the end of the stream and stops
///         Ok::<_, std::io::Error>(replies)
///     });
///     let (served, replies) = tokio::join!(server, client);
///     served.and(replies)
/// });
/// assert_eq!(replies.unwrap(), ["PING\n", "PONG\n"]);
/// ```
pub struct SyncStream<S> {
    engine: stream::Duplex<TokioIo<S>>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> SyncStream<S> {
    /// Wraps `inner` with an 8 KiB read buffer and an 8 KiB write buffer.
    ///
    /// ```
    /// use awaitlet::io::tokio::SyncStream;
    ///
    /// let (one_end, _other_end) = tokio::io::duplex(64);
    /// assert_eq!(SyncStream::new(one_end).capacity(), 8 * 1024);
    /// ```
    pub fn new(inner: S) -> SyncStream<S> {
        SyncStream::with_capacity(DEFAULT_CAPACITY, DEFAULT_CAPACITY, inner)
    }

    /// Wraps `inner` with buffers of the sizes given. A write buffer of zero sends every write
    /// to the stream at once (and a read still flushes the stream before it waits).
    ///
    /// ```
    /// use awaitlet::io::tokio::SyncStream;
    ///
    /// let (one_end, _other_end) = tokio::io::duplex(64);
    /// assert_eq!(SyncStream::with_capacity(512, 64, one_end).capacity(), 512);
    /// ```
    pub fn with_capacity(read_capacity: usize, write_capacity: usize, inner: S) -> SyncStream<S> {
        SyncStream {
            engine: stream::Duplex::new(TokioIo(inner), read_capacity, write_capacity),
        }
    }

    /// Sends the buffered writes, flushes the stream, then shuts its writing half down
    /// (`poll_shutdown`): for a socket, the peer sees the end of the stream, and this side can
    /// still read the rest of what the peer sends.
    ///
    /// ```
    /// use std::io::Write;
    /// use awaitlet::{async_def, io::tokio::SyncStream};
    /// use tokio::io::AsyncReadExt;
    ///
    /// let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    /// let (one_end, mut other_end) = tokio::io::duplex(64);
    /// let received = runtime.block_on(async {
    ///     let mut stream = SyncStream::new(one_end);
    ///     async_def(|| {
    ///         stream.write_all(b"last words")?; // buffered
    ///         stream.close() // sent, then shut down
    ///     })
    ///     .await?;
    ///     let mut received = Vec::new();
    ///     other_end.read_to_end(&mut received).await?; // ends: the stream shut down
    ///     Ok::<_, std::io::Error>(received)
    /// });
    /// assert_eq!(received.unwrap(), b"last words");
    /// ```
    pub fn close(&mut self) -> io::Result<()> {
        self.engine.close()
    }
}

impl<S> SyncStream<S> {
    /// The inner stream.
    ///
    /// ```
    /// use awaitlet::io::tokio::SyncStream;
    ///
    /// let (one_end, _other_end) = tokio::io::duplex(64);
    /// let stream = SyncStream::new(one_end);
    /// let _: &tokio::io::DuplexStream = stream.get_ref();
    /// ```
    pub fn get_ref(&self) -> &S {
        &self.engine.transport.0
    }

    /// The inner stream, mutably. Using it directly bypasses both buffers, so the bytes would
    /// be out of order.
    ///
    /// ```
    /// use awaitlet::io::tokio::SyncStream;
    ///
    /// let (one_end, _other_end) = tokio::io::duplex(64);
    /// let mut stream = SyncStream::new(one_end);
    /// let _: &mut tokio::io::DuplexStream = stream.get_mut();
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
    /// use awaitlet::io::tokio::SyncStream;
    ///
    /// let (one_end, _other_end) = tokio::io::duplex(64);
    /// let mut stream = SyncStream::new(one_end);
    /// stream.write_all(b"never sent").unwrap(); // fits the buffer: no stream needed
    /// let _one_end: tokio::io::DuplexStream = stream.into_inner();
    /// ```
    pub fn into_inner(self) -> S {
        self.engine.transport.0
    }

    /// The bytes read from the stream and not yet handed out, without reading more.
    ///
    /// ```
    /// use std::io::BufRead;
    /// use awaitlet::{async_def, io::tokio::SyncStream};
    /// use tokio::io::AsyncWriteExt;
    ///
    /// let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    /// let (one_end, mut other_end) = tokio::io::duplex(64);
    /// let mut stream = SyncStream::new(one_end);
    /// runtime.block_on(async {
    ///     other_end.write_all(b"hello").await.unwrap();
    ///     async_def(|| stream.fill_buf().map(|bytes| bytes.len())).await.unwrap();
    /// });
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
    /// use awaitlet::io::tokio::SyncStream;
    ///
    /// let (one_end, _other_end) = tokio::io::duplex(64);
    /// let mut stream = SyncStream::new(one_end);
    /// stream.write_all(b"request").unwrap();
    /// assert_eq!(stream.write_buffer(), b"request");
    /// ```
    pub fn write_buffer(&self) -> &[u8] {
        self.engine.write_buffered()
    }

    /// The read buffer's size in bytes.
    ///
    /// ```
    /// use awaitlet::io::tokio::SyncStream;
    ///
    /// let (one_end, _other_end) = tokio::io::duplex(64);
    /// assert_eq!(SyncStream::with_capacity(100, 10, one_end).capacity(), 100);
    /// ```
    pub fn capacity(&self) -> usize {
        self.engine.read_capacity()
    }
}

stream::std_io_for_sync_stream!();
