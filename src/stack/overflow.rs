//! Stack-overflow reporting: a guard-page fault becomes one clear line on stderr, then an abort.
//!
//! A greenlet that recurses past its stack touches the guard page below it and the kernel sends
//! `SIGSEGV`. Without help, the process dies with a bare "Segmentation fault". So, the first time
//! a thread maps a stack:
//!
//! - the process gets our `SIGSEGV` (and `SIGBUS`, which some systems send for guard pages)
//!   handler, installed once with `SA_ONSTACK`, remembering the handler that was there before;
//! - the thread gets an alternate signal stack if it has none (threads started by `std` already
//!   have one), because the handler cannot run on the stack that just overflowed.
//!
//! The handler compares the fault address with the guard pages of the stacks made by the
//! faulting thread (a thread-local intrusive list through the stack headers; the fault is
//! synchronous, so the list is the faulting thread's own). Every stack with a guard page is
//! listed, whatever its kind: a guard region below a stack carved from a slab, an `mprotect`ed
//! page below a stack with a mapping of its own, or the `PROT_NONE` page at the bottom of a
//! slab without guard pages. A touch of a guard region faults with `SIGSEGV` like a touch of
//! a `PROT_NONE` page, with the address in `si_addr`. On a hit it writes
//!
//! ```text
//! awaitlet: a greenlet overflowed its 1024 KiB stack; give it a larger one with
//! Greenlet::builder().stack_size(bytes) or AsyncDef::stack_size(bytes)
//! ```
//!
//! with `write(2)` (everything here is async-signal-safe: no allocation, no locks) and aborts.
//! Any other fault goes to the previous handler exactly as if we were not there: a previous
//! function is called with the same arguments; a previous default disposition is restored and
//! the faulting instruction re-runs into it.

use std::cell::{Cell, UnsafeCell};
use std::mem::MaybeUninit;
use std::ptr::NonNull;
use std::sync::Once;

use super::{Header, os};

thread_local! {
    /// Head of this thread's list of mapped stacks. Const-initialised and without a destructor,
    /// so reading it from a signal handler is a plain thread-local load.
    static REGISTRY: Cell<*mut Header> = const { Cell::new(std::ptr::null_mut()) };
    /// This thread's alternate signal stack, when we had to make one.
    static ALTERNATE_STACK: AlternateStack = const { AlternateStack { mapping: Cell::new(None) } };
}

/// Adds a freshly mapped stack to its thread's registry (and sets the handler up if needed).
pub(super) fn register(header: NonNull<Header>) {
    install_handler();
    ensure_alternate_stack();
    REGISTRY.with(|head| {
        // SAFETY: `header` is a valid header owned by this thread; so is the current head.
        unsafe {
            let node = header.as_ref();
            node.registry_next.set(head.get());
            if let Some(next) = NonNull::new(head.get()) {
                next.as_ref().registry_prev.set(header.as_ptr());
            }
        }
        // The handler may read the list at any instruction: link the node before publishing it.
        std::sync::atomic::compiler_fence(std::sync::atomic::Ordering::SeqCst);
        head.set(header.as_ptr());
    });
}

/// Removes a stack from its thread's registry before it is unmapped.
pub(super) fn deregister(header: NonNull<Header>) {
    REGISTRY.with(|head| {
        // SAFETY: `header` and its neighbours are valid headers of this thread's registry.
        unsafe {
            let node = header.as_ref();
            let (prev, next) = (node.registry_prev.get(), node.registry_next.get());
            match NonNull::new(prev) {
                Some(prev) => prev.as_ref().registry_next.set(next),
                None => head.set(next),
            }
            if let Some(next) = NonNull::new(next) {
                next.as_ref().registry_prev.set(prev);
            }
        }
        std::sync::atomic::compiler_fence(std::sync::atomic::Ordering::SeqCst);
    });
}

/// The size of the stack whose guard page contains `address`, if any of this thread's does.
fn guarded_stack_size(address: usize) -> Option<usize> {
    let page = os::page_size();
    let mut next = REGISTRY.with(Cell::get);
    while let Some(header) = NonNull::new(next) {
        // SAFETY: registered headers stay valid until deregistered, which happens on this thread.
        let header = unsafe { header.as_ref() };
        if (header.mapping_start..header.mapping_start + page).contains(&address) {
            // The size class: what the stack was asked for, canary included when carved.
            return Some(header.pool_key & !super::CARVED_KEY);
        }
        next = header.registry_next.get();
    }
    None
}

/// The dispositions we replaced, for the faults that are not ours. Written once, before our
/// handler is installed, and only read afterwards.
struct Previous(UnsafeCell<MaybeUninit<[libc::sigaction; 2]>>);

// SAFETY: written once inside `Once::call_once` before any handler can read it; read-only after.
unsafe impl Sync for Previous {}

static PREVIOUS: Previous = Previous(UnsafeCell::new(MaybeUninit::uninit()));
static INSTALL: Once = Once::new();
const SIGNALS: [libc::c_int; 2] = [libc::SIGSEGV, libc::SIGBUS];

fn install_handler() {
    INSTALL.call_once(|| {
        // SAFETY: we build a valid sigaction and record the previous ones before our handler
        // can run (it reads them only after `sigaction` has installed it).
        unsafe {
            let previous = (*PREVIOUS.0.get()).as_mut_ptr().cast::<libc::sigaction>();
            for (index, &signal) in SIGNALS.iter().enumerate() {
                libc::sigaction(signal, std::ptr::null(), previous.add(index));
            }
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = handler as *const () as usize;
            action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
            libc::sigemptyset(&mut action.sa_mask);
            for &signal in &SIGNALS {
                libc::sigaction(signal, &action, std::ptr::null_mut());
            }
        }
    });
}

extern "C" fn handler(signal: libc::c_int, info: *mut libc::siginfo_t, context: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo for SA_SIGINFO handlers of fault signals.
    let address = unsafe { (*info).si_addr() } as usize;
    if let Some(size) = guarded_stack_size(address) {
        report_overflow(size);
    }
    let index = SIGNALS.iter().position(|&s| s == signal).unwrap_or(0);
    // SAFETY: `PREVIOUS` was fully written before this handler was installed.
    let previous = unsafe { &(*PREVIOUS.0.get()).assume_init_ref()[index] };
    match previous.sa_sigaction {
        libc::SIG_DFL | libc::SIG_IGN => {
            // Restore the default and return: the faulting instruction faults again, fatally.
            // SAFETY: resetting a disposition to its default is always valid.
            unsafe { libc::signal(signal, libc::SIG_DFL) };
        }
        function if previous.sa_flags & libc::SA_SIGINFO != 0 => {
            // SAFETY: the previous handler asked for exactly this signature.
            let function: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
                unsafe { std::mem::transmute(function) };
            function(signal, info, context);
        }
        function => {
            // SAFETY: the previous handler was installed with the one-argument signature.
            let function: extern "C" fn(libc::c_int) = unsafe { std::mem::transmute(function) };
            function(signal);
        }
    }
}

/// Writes the overflow line for a stack of `size` bytes and aborts. Async-signal-safe.
fn report_overflow(size: usize) -> ! {
    let mut line = [0u8; 256];
    let mut length = 0;
    let mut push = |bytes: &[u8]| {
        let end = (length + bytes.len()).min(line.len());
        line[length..end].copy_from_slice(&bytes[..end - length]);
        length = end;
    };
    push(b"awaitlet: a greenlet overflowed its ");
    push(format_decimal(size / 1024, &mut [0u8; 20]));
    push(b" KiB stack; give it a larger one with Greenlet::builder().stack_size(bytes) or AsyncDef::stack_size(bytes)\n");
    // SAFETY: write(2) and abort(3) are async-signal-safe; `line[..length]` is initialised.
    unsafe {
        libc::write(libc::STDERR_FILENO, line.as_ptr().cast(), length);
        libc::abort();
    }
}

/// Formats `value` in decimal into the end of `buffer`, without allocating.
fn format_decimal(mut value: usize, buffer: &mut [u8; 20]) -> &[u8] {
    let mut start = buffer.len();
    loop {
        start -= 1;
        buffer[start] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break &buffer[start..];
        }
    }
}

/// An alternate signal stack we installed for this thread; uninstalled and unmapped at exit.
struct AlternateStack {
    mapping: Cell<Option<(usize, usize)>>,
}

const ALTERNATE_STACK_SIZE: usize = 64 * 1024;

fn ensure_alternate_stack() {
    let _ = ALTERNATE_STACK.try_with(|alternate| {
        if alternate.mapping.get().is_some() {
            return;
        }
        // SAFETY: `stack_t` is plain data, valid when zeroed.
        let mut current: libc::stack_t = unsafe { std::mem::zeroed() };
        // SAFETY: querying the current alternate stack writes only into `current`.
        if unsafe { libc::sigaltstack(std::ptr::null(), &mut current) } != 0 {
            return;
        }
        if current.ss_flags & libc::SS_DISABLE == 0 {
            return; // the thread already has one (std gives one to the threads it starts)
        }
        let page = os::page_size();
        let Ok(start) = os::map_guarded(ALTERNATE_STACK_SIZE + page, page) else {
            return; // without it an overflow is still fatal, only less clearly reported
        };
        let stack = libc::stack_t {
            ss_sp: (start + page) as *mut libc::c_void,
            ss_flags: 0,
            ss_size: ALTERNATE_STACK_SIZE,
        };
        // SAFETY: `stack` describes memory we just mapped and keep until this thread exits.
        if unsafe { libc::sigaltstack(&stack, std::ptr::null_mut()) } == 0 {
            alternate
                .mapping
                .set(Some((start, ALTERNATE_STACK_SIZE + page)));
        } else {
            os::unmap(start, ALTERNATE_STACK_SIZE + page);
        }
    });
}

impl Drop for AlternateStack {
    fn drop(&mut self) {
        if let Some((start, len)) = self.mapping.get() {
            let disable = libc::stack_t {
                ss_sp: std::ptr::null_mut(),
                ss_flags: libc::SS_DISABLE,
                ss_size: 0,
            };
            // SAFETY: we installed this alternate stack; disable it before unmapping it.
            unsafe { libc::sigaltstack(&disable, std::ptr::null_mut()) };
            os::unmap(start, len);
        }
    }
}
