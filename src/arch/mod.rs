//! The context-switch primitive: the one place where execution moves from one stack to another.
//!
//! Everything above this module (stacks excepted) is expressed in terms of four operations:
//!
//! - [`init`] writes a [`Context`] and an initial frame near the top of a fresh stack, so that
//!   the first switch into it calls an entry function `entry(word, data, sender)` there;
//! - [`switch`] suspends the running context, saving what the ABI says a callee must preserve,
//!   and resumes another one, handing it one machine word; it returns the word handed back by
//!   whichever context later resumes us, and that context (the *sender*);
//! - [`switch_nested`] is the same for strictly nested use (see its docs);
//! - [`switch_unlinked`] is the same without touching any link, for switching back to a
//!   context whose link is already right (see its docs);
//! - [`switch_final`] resumes another context without saving the running one: the last switch
//!   made by a context whose stack is about to be released.
//!
//! A [`Context`] is three words: its *owner* (opaque here: the `data` given to [`init`], which
//! the entry function receives), the saved stack pointer of a suspended context, and its *link*.
//! The layers above keep their own record of each stack just above its context
//! ([`CONTEXT_BELOW_TOP`]), so the sender a switch hands over names its record by an addition.
//! The context of a greenlet stack sits near the top of that stack, just below its owner's
//! data; each switch writes the switcher's stack pointer into the target's link, and the entry
//! trampoline's DWARF CFI reads it back, so an unwinder (a backtrace, gdb) walking up from the target's root frame steps into
//! the frames of the context that resumed it:
//!
//! ```text
//!   greenlet stack                         resumer's stack
//!   +------------------+  top              |        ...        |
//!   | entry fn         |                   | resumer's frames  |
//!   | Context: link ---+------------------>+-------------------+ <- resumer's saved sp
//!   |          sp      |                   |                   |
//!   |          owner   |                   | saved frame: rbp, |
//!   | ...              |                   | rip, rbx (x86_64) |
//!   |                  |                   | or x29, ip, x19   |
//!   | trampoline frame |
//!   | entry(...)       |
//!   | user frames      |  <- running
//! ```
//!
//! Only the link of the *running* context is kept: a switch resets the switcher's own link to a
//! terminator (a frame whose return address is zero, which ends every unwinder's walk). A
//! backtrace therefore crosses exactly one stack boundary, into the stack that resumed the
//! running one (for a greenlet driven from the thread's own stack, that is the whole thread
//! stack down to `main`). Longer chains would go stale the moment the greenlets in them switch
//! among themselves in a cycle, and an unwinder following a stale link reads whatever now lies
//! there; a one-step chain is always exact. The one exception is a context resumed by
//! [`switch_unlinked`] (a poller, when the function it polls waits again): its link is still the
//! terminator its own switch into that function left, so a walk from it stops at its root.
//!
//! Unwinding never crosses the assembly: entry functions are `extern "C"` and `-> !`, so a panic
//! that escaped one would abort; the greenlet layer catches every panic at the root of each
//! stack and carries it across a switch as a value.
//!
//! Backends, chosen at compile time:
//!
//! - `x86_64.rs`: x86_64 System V (ELF) in Rust inline assembly, with CFI. The default on
//!   x86_64 Unix targets other than Apple's (whose Mach-O assembler directives differ).
//! - `aarch64.rs`: AArch64 AAPCS64 (ELF) the same way, with CFI. The default on aarch64 Unix
//!   targets other than Apple's (Mach-O again, and a reserved `x18`).
//! - `fallback.rs`: the `context` crate (Boost.Context's `fcontext` assembly) on the other Unix
//!   targets it supports (x86, arm, mips, powerpc, and x86_64 and aarch64 on Apple), and on
//!   x86_64 and aarch64 when built with `RUSTFLAGS='--cfg awaitlet_backend="context"'`. It has
//!   no CFI, so backtraces stop at the root of each greenlet stack.
//! - anything else: a `compile_error!` naming what is supported.

use std::cell::Cell;

// The backend ladder: the first matching rung wins, and the last one refuses to build.
#[cfg(all(
    target_arch = "x86_64",
    unix,
    not(target_vendor = "apple"),
    not(awaitlet_backend = "context")
))]
#[path = "x86_64.rs"]
mod backend;

#[cfg(all(
    target_arch = "aarch64",
    unix,
    not(target_vendor = "apple"),
    not(awaitlet_backend = "context")
))]
#[path = "aarch64.rs"]
mod backend;

// The portable backend, on the architectures the `context` crate's build supports.
#[cfg(all(
    unix,
    any(
        not(any(target_arch = "x86_64", target_arch = "aarch64")),
        target_vendor = "apple",
        awaitlet_backend = "context"
    ),
    any(
        target_arch = "x86_64",
        target_arch = "x86",
        target_arch = "aarch64",
        target_arch = "arm",
        target_arch = "mips",
        target_arch = "powerpc",
        target_arch = "powerpc64"
    )
))]
#[path = "fallback.rs"]
mod backend;

#[cfg(all(
    unix,
    not(any(
        target_arch = "x86_64",
        target_arch = "x86",
        target_arch = "aarch64",
        target_arch = "arm",
        target_arch = "mips",
        target_arch = "powerpc",
        target_arch = "powerpc64"
    ))
))]
compile_error!(
    "awaitlet has no context-switch backend for this architecture: the native ones are x86_64 \
     and aarch64 only, and the portable one (Boost.Context through the `context` crate) covers x86, x86_64, \
     arm, aarch64, mips and powerpc"
);

#[cfg(not(unix))]
compile_error!(
    "awaitlet supports Unix targets only: its stacks are mmap'd with a guard page and an overflow \
     is reported from a SIGSEGV handler; no backend exists for this target yet"
);

pub(crate) use backend::{
    BACKEND_NAME, init, switch, switch_final, switch_nested, switch_unlinked,
};

/// How far below the `stack_top` given to `init` its [`Context`] lies, on every backend: a
/// caller that keeps its own data just above `stack_top` finds the context at a fixed offset
/// from that data, by an addition instead of a load.
pub(crate) const CONTEXT_BELOW_TOP: usize = 32;

/// The context [`CONTEXT_BELOW_TOP`] bytes below `above`: the one [`init`] wrote when given
/// `above` as its `stack_top`, or one placed at that distance below its owner's data the same
/// way (the main greenlet's).
///
/// # Safety
///
/// Such a context must lie there, alive for `'a`, and `above` must carry provenance over it
/// (made from the stack's or the block's address, not from a reference to the data alone).
#[inline(always)]
pub(crate) unsafe fn context_below<'a, T>(above: *const T) -> &'a Context {
    // SAFETY: the caller's contract.
    unsafe { &*above.byte_sub(CONTEXT_BELOW_TOP).cast::<Context>() }
}

/// The data just above `context` (the inverse of [`context_below`]): how a receiver learns who
/// switched to it from the sender a switch hands over.
///
/// # Safety
///
/// `context` must have been placed [`CONTEXT_BELOW_TOP`] bytes below a `T`, and carry
/// provenance over it (as the context pointers switches hand over do).
#[inline(always)]
pub(crate) unsafe fn above_context<T>(context: *const Context) -> *const T {
    // SAFETY: the caller's contract: the data lies that far above its context.
    unsafe { context.byte_add(CONTEXT_BELOW_TOP).cast::<T>() }
}

/// The signature of a function that starts a fresh stack.
///
/// It receives the word passed by the first [`switch`] into the context, the `data` pointer
/// given to [`init`], and the context that made that switch. It must never return and never unwind: it ends by a [`switch_final`] (or
/// by switching away forever).
pub(crate) type EntryFn =
    unsafe extern "C" fn(arg: usize, data: *mut (), sender: *const Context) -> !;

/// A suspended, or running, execution context: its owner, its saved stack pointer and its link.
///
/// The context of a stack made by [`init`] lives at the top of that stack (where its trampoline's
/// CFI finds the link); [`init`] hands out a pointer to it. A context for code on the thread's
/// own stack can live anywhere ([`Context::for_thread_stack`]); its link is written, never read.
/// While a context runs, `sp` is stale; it is written by the [`switch`] that suspends it.
///
/// A switch also hands the resumed side the sender's `Context`; a layer that keeps its data at
/// a fixed distance from its contexts (see [`CONTEXT_BELOW_TOP`]) learns who sent it from the
/// sender's address alone.
#[repr(C)]
pub(crate) struct Context {
    /// Whatever the context belongs to (opaque to this module).
    owner: Cell<usize>,
    /// The saved stack pointer (the `fcontext` handle on the fallback backend).
    pub(super) sp: Cell<usize>,
    /// The stack pointer of whichever context last switched to this one, or the terminator
    /// (see the module docs).
    pub(super) link: Cell<usize>,
}

/// The frame an unwinder reads when a link is reset: return address zero ends the walk, and the
/// saved registers it names read as zero. Never written.
#[repr(C, align(16))]
pub(crate) struct Terminator([usize; 4]);

/// See [`Terminator`].
pub(crate) static TERMINATOR: Terminator = Terminator([0; 4]);

impl Context {
    /// A context for code running on the thread's own stack (not on a stack made by [`init`]).
    /// Its `sp` is filled in by the first [`switch`] away from it.
    pub(crate) const fn for_thread_stack() -> Context {
        Context {
            owner: Cell::new(0),
            sp: Cell::new(0),
            link: Cell::new(0),
        }
    }

    /// What the context belongs to: the `data` of [`init`] (0 for a thread-stack context).
    #[cfg(test)]
    pub(crate) fn owner(&self) -> usize {
        self.owner.get()
    }

    /// A context with these parts (for the backends' `init`).
    fn with_parts(owner: usize, sp: usize, link: usize) -> Context {
        Context {
            owner: Cell::new(owner),
            sp: Cell::new(sp),
            link: Cell::new(link),
        }
    }
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Context {{ sp: {:#x} }}", self.sp.get())
    }
}

#[cfg(awaitlet_asan)]
pub(crate) mod asan;

#[cfg(test)]
mod tests;
