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
//! An [`AsyncDef`] stays on the thread that created it: its function's suspended stack can hold
//! `!Send` values and thread-local addresses, so the future is `!Send`, and `tokio::spawn` on a
//! multi-threaded runtime refuses it, naming [`StaysOnItsThread`]. From such `Send` contexts,
//! tokio-util's `LocalPoolHandle::spawn_pinned(|| async_def(..))` runs it on a pool thread and
//! hands back a `Send` `JoinHandle`; [Threads and
//! executors](bridge#threads-and-executors) has this and the other routes.
//!
//! The crate is built in layers, each depending only on the ones below it:
//!
//! 1. `arch`: the context switch, hand-written x86_64 System V assembly with unwind info, or
//!    Boost.Context's `fcontext` (through the `context` crate) everywhere else;
//! 2. [`stack`]: mmap'd stacks with a guard page, lazily committed and pooled per thread, with a
//!    clear report on overflow;
//! 3. [`greenlet`]: the tree of greenlets, `switch`, `throw`, `kill`, kill on drop, with Python
//!    greenlet's semantics;
//! 4. [`bridge`]: [`async_def`] and [`awaitlet`], synchronous code awaiting futures on any
//!    executor;
//! 5. [`io`]: `std::io` adapters over async streams, for synchronous parsers and encoders
//!    inside `async_def`.
//!
//! Supported targets: Unix. x86_64 (but Apple's) uses the native backend; x86, arm, aarch64,
//! mips, powerpc and Apple's x86_64 use the portable one, which x86_64 builds can force with
//! `RUSTFLAGS='--cfg awaitlet_backend="context"'`. Tested: x86_64 Linux, both backends.
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

/// The context-switch backend compiled in: `"x86_64"` (native) or `"context"` (portable fallback).
///
/// ```
/// assert!(["x86_64", "context"].contains(&awaitlet::BACKEND));
/// ```
pub const BACKEND: &str = arch::BACKEND_NAME;

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
