//! Portable backend on the `context` crate (Boost.Context's `fcontext` assembly).
//!
//! `fcontext` is asymmetric in one respect: `jump_fcontext(to, data)` hands the *target* the
//! handle of the context that just suspended, instead of letting the switcher store its own.
//! To present the same interface as the native backend (the switcher saves its own stack
//! pointer into `from.sp`), every switch passes a pointer to a small [`Packet`] on the switcher's
//! stack holding the word, the `Context` whose `sp` must receive the handle (`from`, or a
//! scratch one for a final switch) and the sender (`from`); the resumed side stores the handle
//! it received before doing anything else, and returns the word and the sender.
//!
//! What this wrapper guarantees on top of `context`:
//!
//! - no `context::Context` (which is `Send` and `Sync`) is ever handed out: we keep only its raw
//!   address, inside our [`Context`], which is `!Sync` and owned by `!Send` types (fibers,
//!   greenlet records) that never leave their thread;
//! - no panic ever reaches the assembly: the entry trampoline is `extern "C"` and `-> !`, and
//!   entry functions catch panics themselves (a panic that escaped anyway would abort);
//! - `resume_ontop` is never used.
//!
//! Links exist (so [`Context`] has one shape) but are never written after [`init`]:
//! `fcontext` has no CFI, so backtraces stop at the root of a greenlet stack.
//! See asm-notes/fallback.md.

use std::ffi::c_void;
use std::ptr::NonNull;

use super::{Context, EntryFn, TERMINATOR};

/// Name of this backend, for diagnostics and tests.
pub(crate) const BACKEND_NAME: &str = "context";

/// What a switch hands over: the word, where the resumed side must store our handle, and our
/// context (to tell the resumed side who switched).
struct Packet {
    arg: usize,
    save_to: *const Context,
    sender: *const Context,
}

/// What the priming switch in [`init`] hands the trampoline.
struct Start {
    entry: EntryFn,
    data: *mut (),
}

/// Rebuilds a `context::Context` from the raw handle we keep.
///
/// # Safety
///
/// `raw` must be a handle obtained from a `context::Context` that has not been resumed since.
unsafe fn handle(raw: usize) -> context::Context {
    let raw = NonNull::new(raw as *mut c_void).expect("resumed a context that was never suspended");
    // SAFETY: `context::Context` is a `repr(C)` wrapper around one non-null reference, which is
    // what `raw` was before we stored it; the caller guarantees it is still resumable.
    unsafe { std::mem::transmute::<NonNull<c_void>, context::Context>(raw) }
}

/// The raw handle of a `context::Context`, for storage in our [`Context`].
fn raw_handle(context: context::Context) -> usize {
    // SAFETY: the reverse of `handle`: a one-reference `repr(C)` struct to its address.
    unsafe { std::mem::transmute::<context::Context, NonNull<c_void>>(context) }.as_ptr() as usize
}

/// Stores the suspended switcher's handle where its packet says, and returns the packet's word
/// and the switcher's context.
///
/// # Safety
///
/// `transfer` must have been returned by a resume whose data is a live [`Packet`].
unsafe fn receive(transfer: context::Transfer) -> (usize, *const Context) {
    // SAFETY: every resume in this module passes a `Packet` that lives on the switcher's stack,
    // which stays untouched while the switcher is suspended.
    let packet = unsafe { &*(transfer.data as *const Packet) };
    // SAFETY: `save_to` points at the switcher's own `Context`, valid while it is suspended.
    unsafe { (*packet.save_to).sp.set(raw_handle(transfer.context)) };
    (packet.arg, packet.sender)
}

extern "C" fn trampoline(priming: context::Transfer) -> ! {
    // SAFETY: `init` resumes us exactly once with a pointer to a `Start` that lives until the
    // resume returns, which happens only after we have copied it.
    let Start { entry, data } = unsafe { std::ptr::read(priming.data as *const Start) };
    // Park until the first real switch; `init` receives our handle from this resume.
    // SAFETY: `priming.context` is `init`'s frame, suspended in its resume call.
    let first = unsafe { priming.context.resume(0) };
    // SAFETY: the first real switch passes a `Packet`, like every switch.
    let (arg, sender) = unsafe { receive(first) };
    // SAFETY: the entry function's contract is the one `init`'s caller accepted.
    unsafe { entry(arg, data, sender) }
}

/// Makes a context on `[stack_bottom, stack_top)` that calls `entry(word, data, sender)` when first
/// switched to; the [`Context`] itself lives at the top of the region.
///
/// # Safety
///
/// The region must be writable, 16-byte aligned at the top, and stay allocated and otherwise
/// unused for as long as the context may run or be switched to.
pub(crate) unsafe fn init(
    stack_top: *mut u8,
    stack_bottom: *mut u8,
    entry: EntryFn,
    data: *mut (),
) -> NonNull<Context> {
    // Our `Context` sits at `top - 32`, where the native backend puts it; the `fcontext` frame
    // goes below it.
    let context = stack_top
        .wrapping_sub(super::CONTEXT_BELOW_TOP)
        .cast::<Context>();
    let fcontext_top = context.cast::<u8>();
    // SAFETY: the region below the context is ours per the caller's contract.
    let stack = unsafe { context::stack::Stack::new(fcontext_top.cast(), stack_bottom.cast()) };
    // SAFETY: `stack` describes live memory; `trampoline` never returns nor unwinds.
    let fresh = unsafe { context::Context::new(&stack, trampoline) };
    let start = Start { entry, data };
    // SAFETY: the trampoline copies `start` and resumes us straight back (it never runs the
    // entry function before the first real switch); the handle it returns is its parked frame.
    let parked = unsafe { fresh.resume(&start as *const Start as usize) };
    // SAFETY: the top 32 bytes are ours and aligned for `Context`.
    unsafe {
        context.write(Context::with_parts(
            data as usize,
            raw_handle(parked.context),
            TERMINATOR.0.as_ptr() as usize,
        ));
        NonNull::new_unchecked(context)
    }
}

/// Suspends the running context into `from` and resumes `to` with `arg`.
///
/// # Safety
///
/// As for the native backend's `switch`: `from` is the running context, `to` a suspended one of
/// the same thread, both valid until `from` is resumed.
#[inline(always)]
pub(crate) unsafe fn switch(arg: usize, from: &Context, to: &Context) -> (usize, *const Context) {
    let packet = Packet {
        arg,
        save_to: from,
        sender: from,
    };
    // SAFETY: `to` is suspended and resumable; `packet` outlives the switch (we are suspended on
    // top of it until someone resumes us, and they read it at once).
    let transfer = unsafe { handle(to.sp.get()).resume(&packet as *const Packet as usize) };
    // SAFETY: whoever resumed us went through `switch` or `switch_final`, both passing a packet.
    unsafe { receive(transfer) }
}

/// [`switch`] for strictly nested use; links are unused here, so it is the same switch.
///
/// # Safety
///
/// As for [`switch`].
#[inline(always)]
pub(crate) unsafe fn switch_nested(
    arg: usize,
    from: &Context,
    to: &Context,
) -> (usize, *const Context) {
    // SAFETY: the caller's contract is `switch`'s.
    unsafe { switch(arg, from, to) }
}

/// [`switch`]; links are unused here.
///
/// # Safety
///
/// As for [`switch`].
#[inline(always)]
pub(crate) unsafe fn switch_unlinked(
    arg: usize,
    from: &Context,
    to: &Context,
) -> (usize, *const Context) {
    // SAFETY: the caller's contract is `switch`'s.
    unsafe { switch(arg, from, to) }
}

/// Resumes `to` with `arg` without keeping the running context.
///
/// # Safety
///
/// As for [`switch`]'s `to`; the running stack may be released only once `to` runs.
#[inline(always)]
pub(crate) unsafe fn switch_final(arg: usize, from: &Context, to: &Context) -> ! {
    // The resumed side stores our (dead) handle through `save_to`: give it a scratch context
    // on this stack, which is still mapped until `to` has run past that store.
    let scratch = Context::for_thread_stack();
    let packet = Packet {
        arg,
        save_to: &scratch,
        sender: from,
    };
    // SAFETY: `to` is resumable (the caller's contract).
    unsafe { handle(to.sp.get()).resume(&packet as *const Packet as usize) };
    unreachable!("a context finished by switch_final was resumed again")
}
