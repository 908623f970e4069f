//! AArch64 (AAPCS64, ELF) context switch, in inline assembly with DWARF CFI.
//!
//! # What a switch saves
//!
//! A switch is a function call as far as the ABI is concerned, so only what AAPCS64 makes
//! callee-saved has to survive it: `sp`, `x19`-`x28`, the frame pointer `x29`, the link register
//! `x30` (the caller's own return address, live in its frame), and the low 64 bits of `v8`-`v15`
//! (`d8`-`d15`). Nothing more: no flags, no `fpcr` (a thread-wide mode, as MXCSR is on x86_64).
//!
//! As on x86_64, the switch is an `#[inline(always)]` `asm!` block rather than an out-of-line
//! function. It declares every caller-saved register (`clobber_abi("C")`, which on AArch64
//! takes in `x0`-`x17`, `x18` where the platform leaves it free, `x30` and all of `v0`-`v31`)
//! and `x20`-`x28` as clobbered, so the
//! compiler spills only those of `x20`-`x28`, `x30` and `d8`-`d15` that hold a live value at the
//! call site, usually few or none. `x19` and `x29` cannot be declared clobbered (LLVM reserves
//! them, as a base pointer and as the frame pointer), so the block saves them itself, in the
//! frame below.
//!
//! # Frames
//!
//! A suspended context's stack pointer points at a 32-byte frame (`sp` must stay 16-byte
//! aligned):
//!
//! ```text
//!   sp + 32  | ...the suspended function's frame |  <- sp before its asm! block (the CFA)
//!   sp + 24  | (padding)                         |
//!   sp + 16  | saved x19                         |
//!   sp + 8   | resume address                    |  <- with the word below: an AAPCS64
//!   sp + 0   | saved x29                         |     frame record, so fp-chain walkers
//!                                                        cross too
//! ```
//!
//! Resuming loads `to.sp` and the resume address at `[to.sp + 8]`, moves `sp` and branches
//! there with `br`. No `bl`/`ret` pair is involved, so the return-address predictor never sees
//! an unbalanced return; each inlined switch site owns its indirect branch.
//!
//! A fresh stack gets its [`Context`] at the top, then a frame of the same shape whose resume
//! address is the trampoline:
//!
//! ```text
//!   top      +------------------+  (16-byte aligned)
//!   top - 8  | entry fn         |
//!   top - 16 | Context.link     |  <- the CFA expression reads this
//!   top - 24 | Context.sp       |
//!   top - 32 | Context.owner    |  (= data)
//!   top - 40 | (padding)        |
//!   top - 48 | (x19: unused)    |
//!   top - 56 | trampoline       |
//!   top - 64 | (x29: 0)         |  <- initial sp
//! ```
//!
//! The trampoline loads `data`, points `x29` at the link (so the frame-pointer chain continues
//! into the resumer), sets `x30` to its own address and branches to the entry function, which
//! starts with `sp = top - 64` and never returns.
//!
//! # CFI
//!
//! The trampoline's frame describes its caller as "whoever switched into this stack last":
//! `CFA = *(sp + 48) + 32` (the link holds the resumer's saved sp; its frame is 32 bytes), and
//! `x29`, `x30` (the return address column), `x19` are found at `CFA - 32`, `CFA - 24`,
//! `CFA - 16`. The unwinder then continues in the resumer's function at the instruction right
//! after its switch, with `sp` equal to what that function had before its `asm!` block, which is
//! what that function's own CFI expects there. The trampoline is a signal frame for the same
//! two reasons as on x86_64 (gdb's frame-order check; the caller's CFI looked up at the resume
//! address itself). See asm-notes/aarch64.md.

use std::arch::{asm, global_asm};
use std::ptr::NonNull;

use super::{Context, EntryFn, TERMINATOR};

/// Name of this backend, for diagnostics and tests.
pub(crate) const BACKEND_NAME: &str = "aarch64";

global_asm!(
    ".pushsection .text.awaitlet_aarch64_trampoline,\"ax\",%progbits",
    ".balign 16",
    ".globl awaitlet_aarch64_trampoline_v0",
    ".hidden awaitlet_aarch64_trampoline_v0",
    ".type awaitlet_aarch64_trampoline_v0,%function",
    "awaitlet_aarch64_trampoline_v0:",
    ".cfi_startproc",
    ".cfi_signal_frame",
    // The link was written by the switch that branched here, and sp stays at the initial sp
    // (top - 64) throughout, so the one rule below holds from the first instruction on.
    // DW_CFA_def_cfa_expression, 5 bytes: DW_OP_breg31 (sp) + 48; DW_OP_deref;
    // DW_OP_plus_uconst 32.
    ".cfi_escape 0x0f, 5, 0x8f, 48, 0x06, 0x23, 32",
    ".cfi_offset x19, -16",
    ".cfi_offset x30, -24",
    ".cfi_offset x29, -32",
    // On entry: x0 = the first switch's word, x1 = the sender's context: entry(word, data,
    // sender).
    "mov x2, x1",
    "ldr x1, [sp, #32]",
    "add x29, sp, #48",
    "ldr x3, [sp, #56]",
    "adr x30, 2f",
    "br x3",
    "2:",
    // Never reached: entry functions do not return. Also keeps the return address inside
    // this function's bounds for unwinders that look it up as is.
    "brk #0x1",
    ".cfi_endproc",
    ".size awaitlet_aarch64_trampoline_v0, . - awaitlet_aarch64_trampoline_v0",
    ".popsection",
);

unsafe extern "C" {
    /// Has no Rust signature: it is only ever reached by the `br` of a switch (see above).
    fn awaitlet_aarch64_trampoline_v0();
}

/// Writes a [`Context`] and the initial frame for `entry(word, data, sender)` below `stack_top`;
/// returns the context, which lives there.
///
/// # Safety
///
/// `stack_top` must be 16-byte aligned, the top of a writable region of at least 64 bytes that
/// stays allocated (and unused by anything else) for as long as the context may run or be
/// switched to.
pub(crate) unsafe fn init(
    stack_top: *mut u8,
    _stack_bottom: *mut u8,
    entry: EntryFn,
    data: *mut (),
) -> NonNull<Context> {
    debug_assert_eq!(stack_top as usize % 16, 0);
    let top = stack_top.cast::<usize>();
    // SAFETY: the caller gives us the 64 bytes below `stack_top`, aligned for words; `Context`
    // is three words, `repr(C)`, at `top - 32`: owner (the trampoline's `data`), sp, link.
    unsafe {
        let initial_sp = top.sub(8);
        top.sub(1).write(entry as *const () as usize);
        let context = top.byte_sub(super::CONTEXT_BELOW_TOP).cast::<Context>();
        context.write(Context::with_parts(
            data as usize,
            initial_sp as usize,
            TERMINATOR.0.as_ptr() as usize,
        ));
        top.sub(5).write(0);
        top.sub(6).write(0);
        top.sub(7)
            .write(awaitlet_aarch64_trampoline_v0 as *const () as usize);
        initial_sp.write(0);
        NonNull::new_unchecked(context)
    }
}

/// The switch, with the instructions that write links (and their operands) spliced in after
/// `from.sp` is saved: which links a switch writes is what tells [`switch`], [`switch_nested`]
/// and [`switch_unlinked`] apart. On entry x0 = the word, x1 = `from`, x2 = `to`; the links
/// may use x6 as scratch and find our new sp in x4.
macro_rules! switch_asm {
    ($arg:expr, $from:expr, $to:expr, [$($links:literal),*] $(; $($operands:tt)*)?) => {{
        let (received, sender): (usize, *const Context);
        asm!(
            // Load the target's stack pointer and resume address first, so the loads overlap
            // the stores instead of delaying everything after the stack swap.
            "ldr x3, [x2, #8]",
            "adr x4, 2f",
            "ldr x5, [x3, #8]",
            "stp x29, x4, [sp, #-32]!",
            "str x19, [sp, #16]",
            "mov x4, sp",
            "str x4, [x1, #8]",
            $($links,)*
            "mov sp, x3",
            "br x5",
            // Resumed here by another switch: x0 holds the word it passed, x1 its context.
            "2:",
            "ldr x19, [sp, #16]",
            "ldr x29, [sp], #32",
            inout("x0") $arg => received,
            // The resumed side finds the sender's context here.
            inout("x1") $from as *const Context => sender,
            in("x2") $to as *const Context,
            $($($operands)*,)?
            lateout("x20") _,
            lateout("x21") _,
            lateout("x22") _,
            lateout("x23") _,
            lateout("x24") _,
            lateout("x25") _,
            lateout("x26") _,
            lateout("x27") _,
            lateout("x28") _,
            clobber_abi("C"),
        );
        (received, sender)
    }};
}

/// Suspends the running context into `from` and resumes `to`, handing it `arg`. Returns the word
/// handed over by the switch that eventually resumes `from`, and the context that switch left.
///
/// # Safety
///
/// `from` must describe the running context and `to` a suspended one of the same thread (made by
/// [`init`], or suspended by an earlier switch); both must stay valid until `from` is resumed.
/// Whatever runs on `to` must not unwind into this frame: control returns here only by a switch.
#[inline(always)]
pub(crate) unsafe fn switch(arg: usize, from: &Context, to: &Context) -> (usize, *const Context) {
    // Our own link is reset: a chain through it could go stale once contexts switch in a cycle.
    // SAFETY: the caller guarantees `from` is us and `to` resumable; the block saves x19 and x29
    // itself and declares every other register clobbered, so the compiler saves what is live.
    unsafe {
        switch_asm!(
            arg,
            from,
            to,
            [
                // from.link = the terminator; to.link = our frame, for its trampoline's CFI.
                "adrp x6, {terminator}",
                "add x6, x6, :lo12:{terminator}",
                "str x6, [x1, #16]",
                "str x4, [x2, #16]"
            ];
            terminator = sym TERMINATOR
        )
    }
}

/// [`switch`] for strictly nested use: `to` switches back to `from` (directly, or after contexts
/// it resumes have switched back to it), never elsewhere. Then the chain of links is always a
/// stack of suspended resumers, valid without resetting `from`'s own link.
///
/// # Safety
///
/// As for [`switch`], plus the nesting above.
#[inline(always)]
pub(crate) unsafe fn switch_nested(
    arg: usize,
    from: &Context,
    to: &Context,
) -> (usize, *const Context) {
    // SAFETY: as for `switch`; the caller guarantees strict nesting, so no link goes stale.
    // to.link = our frame, for its trampoline's CFI.
    unsafe { switch_asm!(arg, from, to, ["str x4, [x2, #16]"]) }
}

/// [`switch`] that writes no link: `from`'s is not reset, and `to`'s is not pointed at us. Two
/// stores fewer, for switching back to a context that needs neither (the conditions are those
/// of the x86_64 backend's `switch_unlinked`, see asm-notes/x86_64.md):
///
/// - `to`'s link must already be what `to` should run with: the terminator, left by the
///   [`switch`] with which `to` suspended; or anything, for a `Context` at no stack's root.
/// - `from`'s own link is left as it is; no walk reaches it, since no link points into the
///   frames left here.
///
/// # Safety
///
/// As for [`switch`], plus the condition on `to`'s link above.
#[inline(always)]
pub(crate) unsafe fn switch_unlinked(
    arg: usize,
    from: &Context,
    to: &Context,
) -> (usize, *const Context) {
    // SAFETY: as for `switch`; the caller guarantees that `to`'s link is right for it to run
    // with, and this switch points no link into our frames.
    unsafe { switch_asm!(arg, from, to, []) }
}

/// Resumes `to` with `arg` without saving the running context, which is never resumed again.
///
/// # Safety
///
/// As for [`switch`]'s `to`. The running stack may be released only once `to` runs.
#[inline(always)]
pub(crate) unsafe fn switch_final(arg: usize, from: &Context, to: &Context) -> ! {
    // SAFETY: the caller guarantees `to` is resumable; nothing of ours survives the branch. The
    // target's link is reset rather than pointed at this stack, which is about to be released.
    // `from` is handed over (in x1) like any switch's, only so the receiver knows the sender.
    unsafe {
        asm!(
            "adrp x3, {terminator}",
            "add x3, x3, :lo12:{terminator}",
            "str x3, [x2, #16]",
            "ldr x3, [x2, #8]",
            "ldr x4, [x3, #8]",
            "mov sp, x3",
            "br x4",
            in("x0") arg,
            in("x1") from as *const Context,
            in("x2") to as *const Context,
            terminator = sym TERMINATOR,
            options(noreturn),
        );
    }
}
