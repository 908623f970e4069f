//! # awaitlet
//!
//! Plain synchronous Rust code that waits for futures, inside any async executor, on stackful
//! coroutines ("greenlets") with Python greenlet's semantics.
//!
//! ```
//! use awaitlet::{async_def, awaitlet};
//!
//! // Synchronous code, unchanged: it calls what it is given.
//! fn greet(lookup: impl Fn(u32) -> String) -> String {
//!     format!("hello, {}", lookup(7))
//! }
//!
//! async fn lookup_async(id: u32) -> String {
//!     futures::future::ready(format!("user {id}")).await
//! }
//!
//! // async_def makes a future of the synchronous call; awaitlet waits inside it.
//! let greeting = futures::executor::block_on(async_def(|| greet(|id| awaitlet(lookup_async(id)))));
//! assert_eq!(greeting, "hello, user 7");
//! ```
//!
//! # From `Send` contexts
//!
//! An [`AsyncDef`] stays on the thread that created it: its function's suspended stack can hold
//! `!Send` values and thread-local addresses, so the future is `!Send`, and `tokio::spawn` on a
//! multi-threaded runtime refuses it, naming [`StaysOnItsThread`]. No `unsafe` opt-in exists,
//! and none is needed: from a `Send` context (a task of a multi-threaded runtime, an axum
//! handler), run the function on a thread that stays put and take a `Send` handle back. On
//! tokio, that thread is one of tokio-util's pinned pool:
//!
//! ```
//! use awaitlet::{async_def, awaitlet};
//! use tokio_util::task::LocalPoolHandle;
//!
//! fn lookup(key: &str) -> usize {
//!     awaitlet(tokio::task::yield_now()); // any tokio future: timers, sockets, channels
//!     key.len()
//! }
//!
//! #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
//! async fn main() {
//!     let pool = LocalPoolHandle::new(2); // Clone + Send: keep one in the server's state
//!     let task = tokio::spawn(async move {
//!         // The closure is Send; the AsyncDef it makes is created and polled on a pool thread.
//!         pool.spawn_pinned(|| async_def(|| lookup("answer"))).await.unwrap()
//!     });
//!     assert_eq!(task.await.unwrap(), 6);
//! }
//! ```
//!
//! With smol or async-executor, the same pattern is a `LocalExecutor` on a thread of its own,
//! fed through a channel: each job carries a `Send` closure there, the thread runs it in an
//! `async_def`, and a channel brings the result back to the `Send` caller.
//!
//! ```
//! use std::{future::Future, pin::Pin, thread};
//! use awaitlet::{async_def, awaitlet};
//!
//! type Job = Box<dyn FnOnce() -> Pin<Box<dyn Future<Output = ()>>> + Send>;
//!
//! // The pinned thread: spawns each job on its LocalExecutor until the channel closes.
//! let (jobs, incoming) = smol::channel::unbounded::<Job>();
//! let pinned = thread::spawn(move || {
//!     let executor = smol::LocalExecutor::new();
//!     smol::block_on(executor.run(async {
//!         while let Ok(job) = incoming.recv().await {
//!             executor.spawn(job()).detach();
//!         }
//!     }));
//! });
//!
//! // From a Send context: send the closure, await the answer.
//! fn run_pinned<R: Send + 'static>(
//!     jobs: &smol::channel::Sender<Job>,
//!     f: impl FnOnce() -> R + Send + 'static,
//! ) -> impl Future<Output = R> + Send + 'static {
//!     let (reply, answer) = smol::channel::bounded(1);
//!     let job: Job = Box::new(move || {
//!         Box::pin(async move {
//!             let _ = reply.send(async_def(f).await).await;
//!         })
//!     });
//!     let jobs = jobs.clone();
//!     async move {
//!         jobs.send(job).await.unwrap();
//!         answer.recv().await.unwrap()
//!     }
//! }
//!
//! let executor = smol::Executor::new(); // multi-threaded: its tasks must be Send
//! let call = run_pinned(&jobs, || {
//!     awaitlet(smol::Timer::after(std::time::Duration::from_millis(1)));
//!     21 * 2
//! });
//! assert_eq!(smol::block_on(executor.run(executor.spawn(call))), 42);
//! drop(jobs);
//! pinned.join().unwrap();
//! ```
//!
//! [Threads and executors](bridge#threads-and-executors) lists the other routes, and
//! `examples/axum.rs` serves an unchanged synchronous library from axum handlers this way.
//!
//! A `std::sync::Mutex` guard or a `RefCell` borrow held across [`awaitlet`] blocks the
//! thread's other tasks exactly as it would across `.await`: while the function waits, another
//! task on its thread that takes the same lock blocks the whole thread for good (the holder
//! cannot run to release it), and another `borrow_mut` of the cell panics. Release them before
//! waiting, or use an async lock.
//!
//! # Layers
//!
//! The crate is built in layers, each depending only on the ones below it:
//!
//! 1. `arch`: the context switch, hand-written x86_64 System V or AArch64 assembly with unwind
//!    info, or Boost.Context's `fcontext` (through the `context` crate) everywhere else;
//! 2. [`stack`]: mmap'd stacks with a guard page, lazily committed and pooled per thread, with a
//!    clear report on overflow;
//! 3. [`greenlet`]: the tree of greenlets, `switch`, `throw`, `kill`, kill on drop, with Python
//!    greenlet's semantics;
//! 4. [`bridge`]: [`async_def`] and [`awaitlet`], synchronous code awaiting futures on any
//!    executor;
//! 5. [`io`]: `std::io` adapters over async streams, for synchronous parsers and encoders
//!    inside `async_def`.
//!
//! Supported targets: Unix. x86_64 and aarch64 (but Apple's) use a native backend; x86, arm,
//! mips, powerpc and Apple's x86_64 and aarch64 use the portable one, which x86_64 and aarch64
//! builds can force with `RUSTFLAGS='--cfg awaitlet_backend="context"'`. Tested: x86_64 Linux
//! and aarch64 Linux (under qemu-user), both backends each.
#![cfg_attr(docsrs, feature(doc_cfg))]
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs, unreachable_pub)]
#![deny(clippy::undocumented_unsafe_blocks, clippy::missing_safety_doc)]

mod arch;
pub mod bridge;
#[doc(hidden)]
pub mod engine;
pub mod greenlet;
pub mod io;
pub mod stack;

pub use bridge::{
    AssertAwaitOccurs, AsyncDef, Cancelled, NoAwaitOccurred, NoAwaitletContext, StaysOnItsThread,
    async_def, awaitlet, in_async_def, try_awaitlet,
};
pub use greenlet::{Greenlet, GreenletExit, ParentError, SwitchError, getcurrent};

/// The context-switch backend compiled in: `"x86_64"` or `"aarch64"` (native, with unwind info
/// across switches) or `"context"` (portable fallback).
///
/// ```
/// assert!(["x86_64", "aarch64", "context"].contains(&awaitlet::BACKEND));
/// ```
pub const BACKEND: &str = arch::BACKEND_NAME;

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
