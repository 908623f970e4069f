//! Valgrind client requests: tell Valgrind where our stacks are.
//!
//! Valgrind tracks the stack pointer to tell stack memory from heap memory; a jump of `rsp` into
//! an mmap'd region it was not told about looks like a huge stack frame and produces spurious
//! "invalid read/write" reports. Registering each stack's usable range at creation (and
//! deregistering it before the mapping goes away) keeps its view exact.
//!
//! A client request is a magic no-op instruction sequence that Valgrind's JIT recognises; run
//! natively it does nothing (four rotations of `rdi` by a total of 128 bits, then `xchg rbx, rbx`)
//! and costs a few cycles, paid once per stack mapping, not per switch. Other architectures get
//! no-ops here.

const STACK_REGISTER: usize = 0x1501;
const STACK_DEREGISTER: usize = 0x1502;
/// Memcheck's `VALGRIND_MAKE_MEM_UNDEFINED` (its tool base, `'M' << 24 | 'C' << 16`, plus 1).
const MAKE_MEM_UNDEFINED: usize = 0x4D43_0001;

#[cfg(target_arch = "x86_64")]
fn client_request(default: usize, request: [usize; 6]) -> usize {
    let result;
    // SAFETY: the sequence leaves every register but rdx (the result) unchanged: rdi is rotated
    // by 128 bits in all, and `xchg rbx, rbx` is a no-op. Under Valgrind, it reads `request`.
    unsafe {
        std::arch::asm!(
            "rol rdi, 3",
            "rol rdi, 13",
            "rol rdi, 61",
            "rol rdi, 51",
            "xchg rbx, rbx",
            inout("rdx") default => result,
            in("rax") request.as_ptr(),
            inout("rdi") 0usize => _,
            options(nostack),
        );
    }
    result
}

#[cfg(not(target_arch = "x86_64"))]
fn client_request(default: usize, _request: [usize; 6]) -> usize {
    default
}

/// Registers `[start, end)` as a stack; returns Valgrind's id for it (0 when not under Valgrind).
pub(super) fn register_stack(start: usize, end: usize) -> usize {
    client_request(0, [STACK_REGISTER, start, end, 0, 0, 0])
}

/// Marks `[start, start + len)` addressable (its contents undefined): stack memory that an
/// earlier greenlet's popped frames left "below the stack pointer", written now from another
/// stack.
pub(super) fn make_undefined(start: usize, len: usize) {
    client_request(0, [MAKE_MEM_UNDEFINED, start, len, 0, 0, 0]);
}

/// Forgets a stack registered by [`register_stack`].
pub(super) fn deregister_stack(id: usize) {
    client_request(0, [STACK_DEREGISTER, id, 0, 0, 0, 0]);
}
