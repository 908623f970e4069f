//! Guard pages: which kind this process's kernel offers, and installing them.
//!
//! A guard page is an inaccessible page right below a stack's usable part, so that running off
//! the end faults at once. There are two ways to make one:
//!
//! - a **guard region** (`madvise(MADV_GUARD_INSTALL)`, Linux 6.13+): the kernel marks the page
//!   in the page tables and leaves the mapping whole. Many stacks can then share one mapping,
//!   each with its guard page below it, and a shared mapping (a slab) costs one kernel map
//!   (VMA) however many stacks it holds:
//!
//!   ```text
//!     slab end    +---------------------------+
//!                 | stack 63 (usable part)    |
//!                 +---------------------------+
//!                 | guard region (one page)   |  faults; still the same mapping
//!                 +---------------------------+
//!                 |   ...                     |
//!                 +---------------------------+
//!                 | stack 0 (usable part)     |
//!                 +---------------------------+
//!                 | guard region (one page)   |
//!     slab start  +---------------------------+   one map in /proc/self/maps
//!   ```
//!
//!   Releasing pages (`MADV_DONTNEED`, `MADV_FREE`) keeps the guard regions in place, which the
//!   unit tests check, so a slab's stacks can have their dirty pages released and be reused.
//!
//! - a **protected page** (`mprotect(PROT_NONE)`), everywhere else: the page becomes a mapping
//!   of its own, and the stack above it another, so each stack costs two kernel maps; about
//!   32,000 stacks fit under Linux's default `vm.max_map_count` of 65,530.
//!
//! Which one the kernel offers is probed once per process, the first time a stack is made: a
//! guard region is installed in a scratch mapping; `EINVAL` (an unknown advice) means the
//! kernel has none. Setting the environment variable `AWAITLET_STACK_GUARD=mprotect` before
//! that first stack forces protected pages, so that both kinds can be exercised on one machine.

use std::sync::atomic::{AtomicU8, Ordering};

use super::{StackError, os};

/// `MADV_GUARD_INSTALL`'s advice value (Linux 6.13+; the same on every architecture).
const MADV_GUARD_INSTALL: libc::c_int = 102;

/// What the probe found: not yet probed, guard regions, or protected pages.
static KIND: AtomicU8 = AtomicU8::new(UNKNOWN);
const UNKNOWN: u8 = 0;
const REGIONS: u8 = 1;
const PROTECTED: u8 = 2;

/// The environment variable that forces protected guard pages when set to `mprotect`.
pub(super) const FORCE_VARIABLE: &str = "AWAITLET_STACK_GUARD";

/// Whether guard regions are available (probed on the first call).
#[inline]
pub(super) fn regions() -> bool {
    match KIND.load(Ordering::Relaxed) {
        UNKNOWN => probe(),
        kind => kind == REGIONS,
    }
}

/// Tries a guard region on a scratch mapping, once per process in practice.
#[cold]
fn probe() -> bool {
    let forced = std::env::var_os(FORCE_VARIABLE).is_some_and(|value| value == "mprotect");
    let found = if forced {
        PROTECTED
    } else {
        let page = os::page_size();
        let Ok(scratch) = os::map(2 * page) else {
            // No room for even a scratch mapping: answer without remembering, and probe again
            // when the next stack is made. The caller's own mapping will fail and say why.
            return false;
        };
        // SAFETY: the advice applies to the first page of the scratch mapping we just made.
        let result =
            unsafe { libc::madvise(scratch as *mut libc::c_void, page, MADV_GUARD_INSTALL) };
        // A success is not enough: `madvise` is a hint, and a layer that does not know this
        // advice may answer 0 and do nothing (qemu-user does). Only a page the kernel refuses to
        // read counts as a guard.
        let guarded = result == 0 && refuses_reads(scratch as *const u8);
        os::unmap(scratch, 2 * page);
        if guarded { REGIONS } else { PROTECTED }
    };
    KIND.store(found, Ordering::Relaxed);
    found == REGIONS
}

/// True when the kernel refuses to read the byte at `address` (it is in a guard region): a
/// `write` of it into a pipe fails with `EFAULT` instead of copying it. False when the byte is
/// readable, and when no pipe can be made (the caller then falls back to `mprotect`).
fn refuses_reads(address: *const u8) -> bool {
    let mut pipe = [0 as libc::c_int; 2];
    // SAFETY: `pipe` has room for the two descriptors.
    if unsafe { libc::pipe(pipe.as_mut_ptr()) } != 0 {
        return false;
    }
    // SAFETY: the kernel reads one byte at `address` or reports `EFAULT`; the descriptors are
    // ours and closed right after.
    let written = unsafe { libc::write(pipe[1], address as *const libc::c_void, 1) };
    let refused = written == -1 && os::errno() == libc::EFAULT;
    // SAFETY: both descriptors were opened above and are closed once.
    unsafe {
        libc::close(pipe[0]);
        libc::close(pipe[1]);
    }
    refused
}

/// Makes the page at `start` a guard region.
///
/// # Safety
///
/// `[start, start + page)` must be a page of a read-write anonymous mapping of this module's
/// caller that nothing uses: its contents are discarded.
pub(super) unsafe fn install_region(start: usize) -> Result<(), StackError> {
    let page = os::page_size();
    // SAFETY: the caller hands us an unused page of its own mapping.
    if unsafe { libc::madvise(start as *mut libc::c_void, page, MADV_GUARD_INSTALL) } != 0 {
        return Err(os::diagnose("madvise", os::errno(), page));
    }
    Ok(())
}
