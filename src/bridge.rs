//! The bridge: [`async_def`] runs plain synchronous code as a future, and [`awaitlet`] lets
//! that code wait for any future, from however deep in its call stack.
//!
//! ```
//! use awaitlet::{async_def, awaitlet};
//!
//! // A synchronous library function: no async, no .await, generic over how it gets data.
//! fn total_length(fetch: &dyn Fn(&str) -> String, keys: &[&str]) -> usize {
//!     keys.iter().map(|key| fetch(key).len()).sum()
//! }
//!
//! async fn fetch_async(key: &str) -> String {
//!     std::future::ready(format!("value of {key}")).await
//! }
//!
//! let total = pollster::block_on(async_def(|| {
//!     // Inside async_def, awaitlet turns the async fetch into a plain call.
//!     total_length(&|key| awaitlet(fetch_async(key)), &["a", "bb"])
//! }));
//! assert_eq!(total, "value of a".len() + "value of bb".len());
//! ```
//!
//! # How it works
//!
//! `async_def(f)` puts `f` on a greenlet of its own (a stack from the thread's pool) and
//! returns an [`AsyncDef`], a future. Polling it switches into the greenlet with the poll's
//! `Context` in reach; `awaitlet(fut)` polls `fut` with that same `Context` right there, on
//! the greenlet's stack. A ready future returns at once, with no switch; a pending one
//! suspends the greenlet back into the `AsyncDef`'s poll, which returns `Pending` to the
//! executor. The executor's waker was handed to `fut`, so it polls the `AsyncDef` again when
//! `fut` can make progress, and the greenlet resumes inside `awaitlet`, which polls again.
//!
//! ```text
//!   executor task                     async_def greenlet
//!   -------------                     ------------------
//!   AsyncDef::poll(cx) ── switch ──>  f() -> logic() -> awaitlet(fut)
//!                                                         fut.poll(cx) == Pending
//!   return Pending     <── switch ──
//!   ... fut wakes the task ...
//!   AsyncDef::poll(cx) ── switch ──>                      fut.poll(cx) == Ready(v)
//!                                     f() goes on with v, returns r
//!   return Ready(r)    <── switch ──
//! ```
//!
//! Nothing is boxed and no waker is wrapped: an `awaitlet` allocates nothing, and neither does
//! an `async_def` once the thread's stack pool is warm (`f` and its result live on the
//! greenlet's stack). The greenlet is an ordinary [`Greenlet`](crate::Greenlet): inside `f`,
//! [`getcurrent`](crate::getcurrent) names it and its parent is the greenlet polling it.
//!
//! # Panics
//!
//! A panic in `f` propagates out of the `AsyncDef`'s poll, hence out of `.await` on it
//! (Python's rule 84). A panic inside the awaited future surfaces in `f` at the `awaitlet`
//! call, where `f` may catch it and carry on (rule 85).
//!
//! # Cancellation
//!
//! Dropping an `AsyncDef` whose `f` is waiting raises [`Cancelled`] (a panic payload, raised
//! without calling the panic hook) inside `f` at the `awaitlet` call. `f`'s stack unwinds:
//! destructors run innermost first, the in-flight future is dropped, and the stack goes back
//! to the pool, all before `drop` returns. An `AsyncDef` dropped before its first poll never
//! runs `f` (rule 78).
//!
//! `f` may catch `Cancelled` (with `catch_unwind`), as Python's function may catch
//! `CancelledError` (rules 87-91). What happens then, made safe for Rust:
//!
//! - `f` returns normally: its value is dropped, nobody is waiting for it (rule 88 completes
//!   the task with it; here the future is gone).
//! - `f` calls `awaitlet` again: the future is polled once, with a waker that does nothing. If
//!   it is ready at once, `awaitlet` returns its value (cleanup that need not wait still runs,
//!   as in rule 88's `finally`); if not, `Cancelled` is raised again and the future dropped. A
//!   cancelled function cannot really wait any more: nothing polls it, and its frames borrow
//!   from the code that dropped it. [`try_awaitlet`] returns `Err(NoAwaitletContext)` there
//!   instead of raising, which is what a destructor should use: a destructor run by the
//!   `Cancelled` unwind that lets `Cancelled` escape is a panic in a destructor during
//!   cleanup, which Rust turns into an abort.
//! - `f` switches to another greenlet: when control comes back to the dropping code,
//!   `Cancelled` is thrown into `f` again, until `f` has finished. `drop` never returns while
//!   `f`'s frames exist.
//!
//! # Threads and executors
//!
//! `AsyncDef` is `!Send`: a suspended stack can hold thread-local references and `!Send`
//! values that no type can describe, so it must stay on the thread that created it. It needs
//! no particular executor: any that can poll a `!Send` future works. On multi-threaded
//! runtimes:
//!
//! - tokio: spawn it with `tokio::task::spawn_local` inside a `LocalSet` (on a current-thread
//!   runtime, or a `LocalSet` driven from a multi-threaded one), or run it with `block_on` of
//!   a current-thread runtime on a thread of its own (`spawn_blocking` gives one);
//! - smol and async-executor: a `LocalExecutor`; async-std: `task::spawn_local`;
//! - futures: `LocalPool` or `executor::block_on`;
//! - a local executor per worker thread, fed through a channel, for a pool of them.
//!
//! # Differences from Python's awaitlet
//!
//! - `awaitlet` accepts any [`IntoFuture`]; the type system rules out Python's
//!   "can't be used in 'await' expression" (rule 76).
//! - Outside `async_def`, `awaitlet` panics with [`NoAwaitletContext`]'s message and drops the
//!   future (Python closes a coroutine, rule 74); [`try_awaitlet`] returns the error instead.
//! - Nested `async_def` (rule 93) works to any depth, but the inner greenlet's parent is the
//!   outer function's greenlet, which polls it, not the thread's driver.
//! - Cancellation is dropping the future; see above for a function that catches it.
//! - A greenlet switch from inside `f` to the greenlet polling the `AsyncDef` is not awaited
//!   as Python does (rule 83): it makes that poll panic (there is no value to await).
//! - Python's contextvars (rule 95) have no single Rust equivalent; thread-locals, tokio's
//!   task-locals and `tracing`'s current span are all visible inside `f`, since it runs inside
//!   the poll, on the poller's thread.

use std::fmt;
use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::greenlet::{DrivenGreenlet, NotAwaited, await_in_driven, in_driven};
use crate::stack::DEFAULT_STACK_SIZE;

pub use crate::greenlet::Cancelled;

/// Runs the synchronous `f` as a future, on a greenlet of its own, so that `f` (and anything
/// it calls) can wait for futures with [`awaitlet`]. `f` starts when the future is first
/// polled; the future's output is `f`'s value.
///
/// `f` may borrow from the caller: the future cannot outlive those borrows, and dropping it
/// unwinds `f` (see [Cancellation](self#cancellation)).
///
/// # Panics
///
/// If no stack can be had for the greenlet (the [`StackError`](crate::stack::StackError) says
/// which limit was hit).
///
/// ```
/// use awaitlet::{async_def, awaitlet};
///
/// let name = String::from("world");
/// let greeting = pollster::block_on(async_def(|| {
///     let punctuation = awaitlet(async { "!" });
///     format!("hello, {name}{punctuation}")
/// }));
/// assert_eq!(greeting, "hello, world!");
/// ```
#[track_caller]
pub fn async_def<'a, R, F: FnOnce() -> R + 'a>(f: F) -> AsyncDef<'a, R> {
    match DrivenGreenlet::new(f, DEFAULT_STACK_SIZE) {
        Ok(greenlet) => AsyncDef { greenlet },
        Err(error) => panic!("awaitlet: cannot get a stack for async_def: {error}"),
    }
}

/// The future made by [`async_def`]: polling it runs the function until it waits on a pending
/// future or returns. `Unpin`, `!Send` and `!Sync`.
///
/// ```compile_fail
/// fn assert_send<T: Send>(_: T) {}
/// assert_send(awaitlet::async_def(|| ()));
/// ```
#[must_use = "an AsyncDef does nothing unless polled"]
pub struct AsyncDef<'a, R> {
    greenlet: DrivenGreenlet<'a, R>,
}

impl<'a, R> AsyncDef<'a, R> {
    /// Runs the function on a stack of `bytes` bytes instead of the default
    /// [`DEFAULT_STACK_SIZE`].
    ///
    /// # Panics
    ///
    /// If the future has already been polled, or no stack of that size can be had (too small,
    /// too large, or a system limit; the message names it).
    ///
    /// ```
    /// let deep = awaitlet::async_def(|| (0..1000u64).sum::<u64>()).stack_size(8 << 20);
    /// assert_eq!(pollster::block_on(deep), 499_500);
    /// ```
    #[track_caller]
    pub fn stack_size(mut self, bytes: usize) -> AsyncDef<'a, R> {
        if let Err(error) = self.greenlet.resize(bytes) {
            panic!("awaitlet: cannot get a {bytes}-byte stack for async_def: {error}");
        }
        self
    }

    /// Makes the future fail with [`NoAwaitOccurred`] if the function returns without ever
    /// having waited for a pending future (Python's `assert_await_occurs=True`, rule 82). A
    /// panic in the function still propagates.
    ///
    /// What counts is a real suspension: a future that happens to be ready when `awaitlet`
    /// first polls it (say, one completed by another thread in the meantime) is no wait.
    ///
    /// ```
    /// use awaitlet::{NoAwaitOccurred, async_def, awaitlet};
    ///
    /// let no_wait = async_def(|| awaitlet(async { 1 })).assert_await_occurs();
    /// assert_eq!(pollster::block_on(no_wait), Err(NoAwaitOccurred));
    /// ```
    pub fn assert_await_occurs(self) -> AssertAwaitOccurs<'a, R> {
        AssertAwaitOccurs { inner: self }
    }
}

impl<R> Future for AsyncDef<'_, R> {
    type Output = R;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<R> {
        self.get_mut().greenlet.poll(cx)
    }
}

impl<R> fmt::Debug for AsyncDef<'_, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncDef").finish_non_exhaustive()
    }
}

/// An [`AsyncDef`] whose output is `Err(NoAwaitOccurred)` when the function never waited; made
/// by [`AsyncDef::assert_await_occurs`].
#[must_use = "an AssertAwaitOccurs does nothing unless polled"]
#[derive(Debug)]
pub struct AssertAwaitOccurs<'a, R> {
    inner: AsyncDef<'a, R>,
}

impl<R> Future for AssertAwaitOccurs<'_, R> {
    type Output = Result<R, NoAwaitOccurred>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = &mut self.get_mut().inner;
        inner.greenlet.poll(cx).map(|value| {
            if inner.greenlet.awaited() {
                Ok(value)
            } else {
                Err(NoAwaitOccurred)
            }
        })
    }
}

/// Waits for `fut` from synchronous code running inside [`async_def`], and returns its output.
/// A future that is ready at once costs one poll; a pending one suspends the function until the
/// executor polls the `AsyncDef` again.
///
/// # Panics
///
/// Outside `async_def` (or inside a future that `awaitlet` itself is polling), with
/// [`NoAwaitletContext`]'s message; [`try_awaitlet`] returns that error instead. A panic in
/// `fut` continues here. When the `AsyncDef` was dropped, raises [`Cancelled`].
///
/// ```
/// use awaitlet::{async_def, awaitlet};
///
/// fn parse_number(read: impl Fn() -> String) -> u32 {
///     read().trim().parse().unwrap()
/// }
///
/// let n = pollster::block_on(async_def(|| parse_number(|| awaitlet(async { " 42\n".to_string() }))));
/// assert_eq!(n, 42);
/// ```
#[track_caller]
#[inline]
pub fn awaitlet<F: IntoFuture>(fut: F) -> F::Output {
    match await_in_driven(fut.into_future()) {
        Ok(output) => output,
        Err(not_awaited) => not_awaited_panic(not_awaited),
    }
}

#[cold]
#[track_caller]
fn not_awaited_panic(not_awaited: NotAwaited) -> ! {
    match not_awaited {
        NotAwaited::NoContext => panic!("{NoAwaitletContext}"),
        NotAwaited::Cancelled => std::panic::resume_unwind(Box::new(Cancelled)),
    }
}

/// [`awaitlet`], returning [`NoAwaitletContext`] instead of panicking outside [`async_def`]
/// (the future is dropped unpolled then).
///
/// ```
/// use awaitlet::{NoAwaitletContext, try_awaitlet};
///
/// assert_eq!(try_awaitlet(async { 1 }), Err(NoAwaitletContext));
/// let inside = pollster::block_on(awaitlet::async_def(|| try_awaitlet(async { 1 })));
/// assert_eq!(inside, Ok(1));
/// ```
#[inline]
pub fn try_awaitlet<F: IntoFuture>(fut: F) -> Result<F::Output, NoAwaitletContext> {
    await_in_driven(fut.into_future()).map_err(|_| NoAwaitletContext)
}

/// True when running inside [`async_def`]'s function (or code it calls), where
/// [`awaitlet`] works; false elsewhere, including inside a future that `awaitlet` itself is
/// polling (rule 73: that code runs on behalf of the poller).
///
/// ```
/// assert!(!awaitlet::in_async_def());
/// assert!(pollster::block_on(awaitlet::async_def(awaitlet::in_async_def)));
/// ```
pub fn in_async_def() -> bool {
    in_driven()
}

/// The error of [`awaitlet`] outside [`async_def`]. Its message is Python awaitlet's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NoAwaitletContext;

impl fmt::Display for NoAwaitletContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Can't call awaitlet() unless the call stack was invoked with async_def().")
    }
}

impl std::error::Error for NoAwaitletContext {}

/// The error of an [`AsyncDef::assert_await_occurs`] future whose function returned without
/// waiting. Its message is Python awaitlet's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NoAwaitOccurred;

impl fmt::Display for NoAwaitOccurred {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Function was run but no await was called.")
    }
}

impl std::error::Error for NoAwaitOccurred {}
