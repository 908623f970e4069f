//! x86_64 System V (ELF) context switch, in inline assembly with DWARF CFI.
//!
//! # What a switch saves
//!
//! A switch is a function call as far as the ABI is concerned, so only the callee-saved state
//! has to survive it: `rsp`, `rbx`, `rbp`, `r12`-`r15`, and the control bits of MXCSR and the x87
//! control word. The switch is an `#[inline(always)]` `asm!` block that declares every
//! caller-saved register (`clobber_abi("C")`) and `r12`-`r15` as clobbered: the compiler then
//! spills only those of them that actually hold live values at the call site, which is usually
//! none or few. `rbx` and `rbp` cannot be declared as clobbers (LLVM reserves them), so the block
//! pushes them itself.
//!
//! MXCSR and the x87 control word are *not* saved. They are per-thread floating-point modes
//! (rounding, denormals-are-zero, exception masks) that Rust code never changes in the normal
//! course of things; saving and restoring them costs `stmxcsr`/`ldmxcsr`/`fnstcw`/`fldcw`, about
//! half of a Boost.Context switch. A program that does change them changes them for the whole
//! thread, across every greenlet, exactly as it would across ordinary function calls.
//!
//! # Frames
//!
//! A suspended context's stack pointer points at a three-word frame:
//!
//! ```text
//!   sp + 16  | saved rbx        |
//!   sp + 8   | resume address   |  <- together with the word below: a frame-pointer
//!   sp + 0   | saved rbp        |     record, so rbp-chain profilers walk across too
//! ```
//!
//! Resuming is `mov rsp, [target.sp]` then `jmp [rsp + 8]`. No `call`/`ret` pair is involved, so
//! the return-address predictor never sees an unbalanced return; each inlined switch site owns
//! its indirect jump, which the branch target buffer predicts well in ping-pong patterns.
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
//!   top - 48 | (rbx: unused)    |
//!   top - 56 | trampoline       |
//!   top - 64 | (rbp: 0)         |  <- initial sp
//! ```
//!
//! The trampoline loads `data`, points `rbp` at the link (so the frame-pointer chain continues
//! into the resumer), pushes its own return address and jumps to the entry function, which
//! therefore starts with the ABI's alignment (`rsp % 16 == 8`). The entry function never
//! returns.
//!
//! A switch is then two loads and three stores besides the pushes and pops: load the target's
//! `sp` and resume address, save our `sp`, reset our own link (not in `switch_nested`), write
//! the target's link (neither link in `switch_unlinked`). Both links sit inside the `Context`s,
//! so no store waits on a pointer load.
//!
//! # CFI
//!
//! The trampoline's frame describes its caller as "whoever switched into this stack last":
//! `CFA = *(rsp + 48) + 24` (the link holds the resumer's saved sp; its frame is 24 bytes),
//! and `rip`, `rbp`, `rbx` are found at `CFA - 16`, `CFA - 24`, `CFA - 8`. The unwinder then
//! continues in the resumer's function at the instruction right after its switch, with `rsp`
//! equal to what that function had before its `asm!` block, which is exactly what that
//! function's own CFI expects at that address.
//!
//! The trampoline is marked as a signal frame: stacks live at arbitrary addresses, and gdb
//! rejects a caller frame at a lower address than its callee unless the callee is a signal frame.
//! As with real signal frames, the unwinder looks up the caller's CFI at the resume address
//! itself rather than one byte before it, so the resume label is never the last byte of the
//! `asm!` block.

use std::arch::{asm, global_asm};
use std::ptr::NonNull;

use super::{Context, EntryFn, TERMINATOR};

/// Name of this backend, for diagnostics and tests.
pub(crate) const BACKEND_NAME: &str = "x86_64";

global_asm!(
    ".pushsection .text.awaitlet_x86_64_trampoline,\"ax\",@progbits",
    ".balign 16",
    ".globl awaitlet_x86_64_trampoline_v0",
    ".hidden awaitlet_x86_64_trampoline_v0",
    ".type awaitlet_x86_64_trampoline_v0,@function",
    "awaitlet_x86_64_trampoline_v0:",
    ".cfi_startproc",
    ".cfi_signal_frame",
    // Nothing to unwind into until the frame below is set up.
    ".cfi_undefined rip",
    // On entry: rsp = initial sp (top - 64), rdi = the first switch's word, rsi = the sender's
    // context: entry(word, data, sender).
    "mov rdx, rsi",
    "mov rsi, [rsp + 32]",
    "lea rbp, [rsp + 48]",
    // DW_CFA_def_cfa_expression, 5 bytes: DW_OP_breg7 (rsp) + 48; DW_OP_deref;
    // DW_OP_plus_uconst 24.
    ".cfi_escape 0x0f, 5, 0x77, 48, 0x06, 0x23, 24",
    ".cfi_offset rbx, -8",
    ".cfi_offset rip, -16",
    ".cfi_offset rbp, -24",
    "lea rax, [rip + 2f]",
    "push rax",
    "jmp qword ptr [rsp + 64]",
    "2:",
    // Never reached: entry functions do not return. Also keeps the return address inside
    // this function's bounds for unwinders that look it up as is.
    "ud2",
    ".cfi_endproc",
    ".size awaitlet_x86_64_trampoline_v0, . - awaitlet_x86_64_trampoline_v0",
    ".popsection",
);

unsafe extern "C" {
    /// Has no Rust signature: it is only ever reached by the `jmp` of a switch (see above).
    fn awaitlet_x86_64_trampoline_v0();
}

/// Writes a [`Context`] and the initial frame for `entry(word, data, sender)` below `stack_top`; returns
/// the context, which lives there.
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
            .write(awaitlet_x86_64_trampoline_v0 as *const () as usize);
        initial_sp.write(0);
        NonNull::new_unchecked(context)
    }
}

/// The switch, with the instructions that write links (and their operands) spliced in after
/// `from.sp` is saved: which links a switch writes is what tells [`switch`], [`switch_nested`]
/// and [`switch_unlinked`] apart.
macro_rules! switch_asm {
    ($arg:expr, $from:expr, $to:expr, [$($links:literal),*] $(; $($operands:tt)*)?) => {{
        let (received, sender): (usize, *const Context);
        asm!(
            // Load the target's stack pointer and resume address first, so the loads overlap
            // the pushes instead of delaying everything after the stack swap.
            "mov rcx, [rdx + 8]",
            "mov r8, [rcx + 8]",
            "push rbx",
            "lea rax, [rip + 2f]",
            "push rax",
            "push rbp",
            "mov [rsi + 8], rsp",
            $($links,)*
            "mov rsp, rcx",
            "jmp r8",
            // Resumed here by another switch: rdi holds the word it passed, rsi its context.
            "2:",
            "pop rbp",
            "lea rsp, [rsp + 8]",
            "pop rbx",
            inout("rdi") $arg => received,
            // The resumed side finds the sender's context here.
            inout("rsi") $from as *const Context => sender,
            in("rdx") $to as *const Context,
            $($($operands)*,)?
            lateout("r12") _,
            lateout("r13") _,
            lateout("r14") _,
            lateout("r15") _,
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
    // SAFETY: the caller guarantees `from` is us and `to` resumable; the block saves rbx and rbp
    // itself and declares every other register clobbered, so the compiler saves what is live.
    unsafe {
        switch_asm!(
            arg,
            from,
            to,
            [
                // from.link = the terminator; to.link = our frame, for its trampoline's CFI.
                "lea rax, [rip + {terminator}]",
                "mov [rsi + 16], rax",
                "mov [rdx + 16], rsp"
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
    unsafe { switch_asm!(arg, from, to, ["mov [rdx + 16], rsp"]) }
}

/// [`switch`] that writes no link: `from`'s is not reset, and `to`'s is not pointed at us. Two
/// stores fewer, for switching back to a context that needs neither:
///
/// - `to`'s link must already be what `to` should run with: the terminator, left by the
///   [`switch`] with which `to` suspended; or anything, for a `Context` at no stack's root,
///   which no CFI reads (a fiber's record of the context that resumed it). A walk from `to`
///   then stops at its own root instead of crossing into our frames.
/// - `from`'s own link is left as it is, and may go stale once the frame it names moves on. No
///   walk reaches it: walks start on the running stack and follow links, and none points into
///   the frames left here, since this switch writes none. Having not suspended by a
///   [`switch`], `from` cannot be resumed by an unlinked switch (above); a linking one writes
///   its link afresh.
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
    // SAFETY: the caller guarantees `to` is resumable; nothing of ours survives the jump. The
    // target's link is reset rather than pointed at this stack, which is about to be released.
    // `from` is handed over (in rsi) like any switch's, only so the receiver knows the sender.
    unsafe {
        asm!(
            "lea rax, [rip + {terminator}]",
            "mov [rdx + 16], rax",
            "mov rsp, [rdx + 8]",
            "jmp qword ptr [rsp + 8]",
            in("rdi") arg,
            in("rsi") from as *const Context,
            in("rdx") to as *const Context,
            terminator = sym TERMINATOR,
            options(noreturn),
        );
    }
}
