//! AddressSanitizer's fiber hooks, compiled only with `--cfg awaitlet_asan` (add it to
//! `-Zsanitizer=address` on a nightly toolchain).
//!
//! ASan keeps, per thread, the bounds of the stack it believes is running: it uses them to
//! unpoison the frames a panic unwinds past and to place its fake frames. A stack switch it is
//! not told about makes it judge one stack by another's bounds, which shows up as false
//! "stack-use-after-scope" reports. So every switch is announced: before it,
//! [`before_switch`] names the stack about to run; right after it, on the resumed stack,
//! [`after_switch`] completes the hand-over and reports the bounds of the stack that was left
//! (how the thread's own stack, which nobody allocated, gets its bounds).
//!
//! A finished greenlet leaves its stack with its frames still poisoned (they never return);
//! [`unpoison`] clears a stack before it is reused.

use std::ffi::c_void;

unsafe extern "C" {
    fn __sanitizer_start_switch_fiber(
        fake_stack: *mut *mut c_void,
        bottom: *const c_void,
        size: usize,
    );
    fn __sanitizer_finish_switch_fiber(
        fake_stack: *mut c_void,
        old_bottom: *mut *const c_void,
        old_size: *mut usize,
    );
    fn __asan_unpoison_memory_region(address: *const c_void, size: usize);
}

/// The bounds of a stack: its lowest address and its size.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct StackBounds {
    pub(crate) bottom: usize,
    pub(crate) size: usize,
}

const RELEASE_FAKE_FRAMES: bool = false;

/// What [`before_switch`] hands to [`after_switch`]: the leaving stack's fake-frame state.
pub(crate) struct Departure(*mut c_void);

/// Announces a switch to the stack `to`; `finishing` when the running stack will never run
/// again (its fake frames are released).
pub(crate) fn before_switch(to: StackBounds, finishing: bool) -> Departure {
    let mut fake_stack = std::ptr::null_mut();
    let save = if finishing && RELEASE_FAKE_FRAMES {
        std::ptr::null_mut()
    } else {
        &raw mut fake_stack
    };
    // SAFETY: ASan only records the bounds and, unless finishing, saves its state in
    // `fake_stack`, which the matching `after_switch` on this stack reads back.
    unsafe { __sanitizer_start_switch_fiber(save, to.bottom as *const c_void, to.size) };
    Departure(fake_stack)
}

/// Completes a switch on the resumed stack; returns the bounds of the stack that was left.
/// `departure` is what this stack's own [`before_switch`] returned, or `None` on a stack's
/// first run.
pub(crate) fn after_switch(departure: Option<Departure>) -> StackBounds {
    let mut bottom = std::ptr::null();
    let mut size = 0;
    let fake_stack = departure.map_or(std::ptr::null_mut(), |departure| departure.0);
    // SAFETY: `fake_stack` is what ASan saved when this stack was left (null on a first run).
    unsafe { __sanitizer_finish_switch_fiber(fake_stack, &raw mut bottom, &raw mut size) };
    StackBounds {
        bottom: bottom as usize,
        size,
    }
}

/// Clears ASan's poisoning of a stack nothing runs on.
pub(crate) fn unpoison(bounds: StackBounds) {
    // SAFETY: only ASan's shadow memory for the range is written.
    unsafe { __asan_unpoison_memory_region(bounds.bottom as *const c_void, bounds.size) }
}
