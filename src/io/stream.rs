//! The engine behind both `SyncStream`s: one read buffer and one write buffer over a single
//! two-way stream, written once for both I/O ecosystems.
//!
//! A request/response protocol over a socket writes a request, then reads the reply. Two
//! failures wait for it. Written unbuffered, each small `write` is a packet of its own, and
//! Nagle's algorithm holds back the second small packet until the first is acknowledged, which
//! the peer may delay (tens of milliseconds per round trip). Written through a
//! `std::io::BufWriter` over one half and read through a reader over the other half, a request
//! left in the writer's buffer never leaves, and the read waits forever for its reply.
//!
//! So the engine buffers writes and sends them at two moments: on `flush` (and `close`), and
//! when a read has to wait. A read first asks the stream; only if the stream has nothing yet
//! (`Pending`) are the buffered bytes written and flushed, while that same poll keeps the read's
//! waker registered. A reply that is already there is read at once, and a request that would
//! provoke a reply is never stuck behind the read that waits for it.
//!
//! The two ecosystems differ only in their poll functions, so each supplies a [`Transport`]
//! (the `futures-io` one in the parent module, tokio's in `io::tokio`) and the buffering,
//! cancellation and error behaviour here is shared.

use std::{
    future::poll_fn,
    io,
    task::{Context, Poll},
};

use super::{ReadBuffer, await_io};

/// The poll functions of one two-way stream, as the engine needs them.
pub(super) trait Transport {
    /// Reads into `target`: the count of bytes read, `0` at the end of the stream.
    fn poll_read_into(
        &mut self,
        cx: &mut Context<'_>,
        target: &mut [u8],
    ) -> Poll<io::Result<usize>>;
    /// Writes some of `bytes`: the count written.
    fn poll_write_from(&mut self, cx: &mut Context<'_>, bytes: &[u8]) -> Poll<io::Result<usize>>;
    /// Flushes what the stream itself buffers.
    fn poll_flush_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
    /// Flushes and ends the writing half (`poll_close`, tokio's `poll_shutdown`).
    fn poll_close_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
}

/// Bytes written by the caller and not yet accepted by the stream: `bytes[sent..]`.
struct WriteBuffer {
    bytes: Vec<u8>,
    sent: usize,
    capacity: usize,
    /// Bytes went to the stream since its last successful flush.
    needs_flush: bool,
}

impl WriteBuffer {
    fn unsent(&self) -> &[u8] {
        &self.bytes[self.sent..]
    }

    /// Writes the unsent bytes to the stream, then flushes it. `Pending` keeps what was sent so
    /// far accounted for, so a poll dropped half-way (cancellation) loses nothing and sends
    /// nothing twice.
    fn poll_send<T: Transport>(
        &mut self,
        transport: &mut T,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        while self.sent < self.bytes.len() {
            match transport.poll_write_from(cx, &self.bytes[self.sent..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(count)) => {
                    self.sent += count;
                    self.needs_flush = true;
                }
                Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
                Poll::Pending => return Poll::Pending,
            }
        }
        self.bytes.clear();
        self.sent = 0;
        if self.needs_flush {
            match transport.poll_flush_out(cx) {
                Poll::Ready(Ok(())) => self.needs_flush = false,
                other => return other,
            }
        }
        Poll::Ready(Ok(()))
    }
}

/// The state of a `SyncStream`: the stream, what was read ahead, what waits to be written.
pub(super) struct Duplex<T> {
    pub(super) transport: T,
    reading: ReadBuffer,
    writing: WriteBuffer,
}

/// One read from the stream into `target`, awaited; when the stream has nothing yet, the
/// buffered writes are sent (and the stream flushed) within the same poll, before it waits.
fn read_sending_first<T: Transport>(
    transport: &mut T,
    writing: &mut WriteBuffer,
    target: &mut [u8],
) -> io::Result<usize> {
    await_io(poll_fn(|cx| match transport.poll_read_into(cx, target) {
        Poll::Ready(result) => Poll::Ready(result),
        Poll::Pending if writing.unsent().is_empty() && !writing.needs_flush => Poll::Pending,
        // The read's waker stays registered; a failed send is the read's error, since the
        // reply to those bytes can never come.
        Poll::Pending => match writing.poll_send(transport, cx) {
            Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
            Poll::Ready(Ok(())) | Poll::Pending => Poll::Pending,
        },
    }))
}

impl<T: Transport> Duplex<T> {
    pub(super) fn new(transport: T, read_capacity: usize, write_capacity: usize) -> Duplex<T> {
        Duplex {
            transport,
            reading: ReadBuffer::with_capacity(read_capacity),
            writing: WriteBuffer {
                bytes: Vec::with_capacity(write_capacity),
                sent: 0,
                capacity: write_capacity,
                needs_flush: false,
            },
        }
    }

    pub(super) fn read(&mut self, target: &mut [u8]) -> io::Result<usize> {
        let Duplex {
            transport,
            reading,
            writing,
        } = self;
        reading.read(target, |destination| {
            read_sending_first(transport, writing, destination)
        })
    }

    pub(super) fn fill_buf(&mut self) -> io::Result<&[u8]> {
        let Duplex {
            transport,
            reading,
            writing,
        } = self;
        reading.fill(|destination| read_sending_first(transport, writing, destination))
    }

    pub(super) fn consume(&mut self, amount: usize) {
        self.reading.consume(amount);
    }

    /// `std::io::BufWriter`'s way: bytes that fit join the buffer; otherwise the buffer is sent
    /// first, and bytes at least as large as the buffer go straight to the stream.
    pub(super) fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        if self.writing.bytes.len() + bytes.len() > self.writing.capacity {
            self.send()?;
        }
        if bytes.len() >= self.writing.capacity {
            let Duplex {
                transport, writing, ..
            } = self;
            let count = await_io(poll_fn(|cx| transport.poll_write_from(cx, bytes)))?;
            writing.needs_flush = true;
            Ok(count)
        } else {
            self.writing.bytes.extend_from_slice(bytes);
            Ok(bytes.len())
        }
    }

    /// Sends the buffered bytes and flushes the stream.
    pub(super) fn send(&mut self) -> io::Result<()> {
        let Duplex {
            transport, writing, ..
        } = self;
        if writing.unsent().is_empty() && !writing.needs_flush {
            return Ok(());
        }
        await_io(poll_fn(|cx| writing.poll_send(transport, cx)))
    }

    pub(super) fn close(&mut self) -> io::Result<()> {
        self.send()?;
        let transport = &mut self.transport;
        await_io(poll_fn(|cx| transport.poll_close_out(cx)))
    }
}

impl<T> Duplex<T> {
    pub(super) fn read_buffered(&self) -> &[u8] {
        self.reading.unread()
    }

    pub(super) fn write_buffered(&self) -> &[u8] {
        self.writing.unsent()
    }

    pub(super) fn read_capacity(&self) -> usize {
        self.reading.capacity()
    }

    /// For `Debug`: the stream, and how full each buffer is.
    pub(super) fn describe(
        &self,
        name: &str,
        inner: &dyn std::fmt::Debug,
        formatter: &mut std::fmt::Formatter<'_>,
    ) -> std::fmt::Result {
        formatter
            .debug_struct(name)
            .field("inner", inner)
            .field(
                "read_buffer",
                &format_args!(
                    "{}/{}",
                    self.reading.unread().len(),
                    self.reading.capacity()
                ),
            )
            .field(
                "write_buffer",
                &format_args!("{}/{}", self.writing.unsent().len(), self.writing.capacity),
            )
            .finish()
    }
}

/// The `std::io` traits of a `SyncStream`, the same in both families. Each module invokes it
/// where its own `AsyncRead`, `AsyncWrite` and `SyncStream` are in scope (paths in a
/// `macro_rules!` body resolve where it is invoked).
macro_rules! std_io_for_sync_stream {
    () => {
        impl<S: AsyncRead + AsyncWrite + Unpin> Read for SyncStream<S> {
            fn read(&mut self, target: &mut [u8]) -> io::Result<usize> {
                self.engine.read(target)
            }
        }

        impl<S: AsyncRead + AsyncWrite + Unpin> BufRead for SyncStream<S> {
            fn fill_buf(&mut self) -> io::Result<&[u8]> {
                self.engine.fill_buf()
            }

            fn consume(&mut self, amount: usize) {
                self.engine.consume(amount);
            }
        }

        impl<S: AsyncRead + AsyncWrite + Unpin> Write for SyncStream<S> {
            fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
                self.engine.write(bytes)
            }

            /// Sends the buffered bytes, then flushes the stream.
            fn flush(&mut self) -> io::Result<()> {
                self.engine.send()
            }
        }

        impl<S: fmt::Debug> fmt::Debug for SyncStream<S> {
            fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.engine
                    .describe("SyncStream", &self.engine.transport.0, formatter)
            }
        }
    };
}
pub(super) use std_io_for_sync_stream;
