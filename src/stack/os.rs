//! The system calls behind stacks, and the diagnosis of their failures.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::StackError;

static PAGE_SIZE: AtomicUsize = AtomicUsize::new(0);

/// The system page size (cached after the first call).
#[inline]
pub(super) fn page_size() -> usize {
    match PAGE_SIZE.load(Ordering::Relaxed) {
        0 => learn_page_size(),
        size => size,
    }
}

/// Asks the system for [`page_size`] (once per process, in practice).
#[cold]
fn learn_page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    let size = usize::try_from(size)
        .ok()
        .filter(|size| size.is_power_of_two())
        .unwrap_or(4096);
    PAGE_SIZE.store(size, Ordering::Relaxed);
    size
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// Maps `len` bytes of lazily committed read-write memory whose first `guard` bytes are
/// inaccessible; returns the start of the mapping.
pub(super) fn map_guarded(len: usize, guard: usize) -> Result<usize, StackError> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    const FLAGS: libc::c_int =
        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE | libc::MAP_STACK;
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    const FLAGS: libc::c_int = libc::MAP_PRIVATE | libc::MAP_ANON;
    // SAFETY: an anonymous mapping at an address of the kernel's choosing touches nothing else.
    let start = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            FLAGS,
            -1,
            0,
        )
    };
    if start == libc::MAP_FAILED {
        return Err(diagnose("mmap", errno(), len));
    }
    // SAFETY: `[start, start + guard)` is the start of the mapping we just made.
    if unsafe { libc::mprotect(start, guard, libc::PROT_NONE) } != 0 {
        let error = errno();
        unmap(start as usize, len);
        return Err(diagnose("mprotect", error, len));
    }
    Ok(start as usize)
}

/// Unmaps `[start, start + len)`.
pub(super) fn unmap(start: usize, len: usize) {
    // SAFETY: callers pass a whole mapping of ours that nothing uses any more.
    let result = unsafe { libc::munmap(start as *mut libc::c_void, len) };
    debug_assert_eq!(result, 0, "munmap of a greenlet stack failed");
}

/// Gives the pages wholly inside `[start, end)` back to the kernel; they read as zero afterwards.
pub(super) fn release_pages(start: usize, end: usize) {
    let page = page_size();
    let (start, end) = (start.next_multiple_of(page), end / page * page);
    if end > start {
        // SAFETY: the range lies in a pooled stack, which nothing uses.
        unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED) };
    }
}

#[cfg(test)]
pub(super) fn diagnose_for_tests(call: &'static str, errno: i32, mapping: usize) -> StackError {
    diagnose(call, errno, mapping)
}

/// Names the limit behind a failed `call` that wanted to map `mapping` bytes.
fn diagnose(call: &'static str, errno: i32, mapping: usize) -> StackError {
    if errno != libc::ENOMEM {
        return StackError::Os { call, errno };
    }
    if let Some(limit) = map_count_limit() {
        // Our failing mapping would have taken the count to or past the limit.
        if map_count().is_some_and(|count| count + 2 >= limit) {
            return StackError::MapCountExhausted { limit };
        }
    }
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_AS, &mut limit) } == 0
        && limit.rlim_cur != libc::RLIM_INFINITY
    {
        #[allow(clippy::unnecessary_cast)] // rlim_t is u64 on Linux but i64 on FreeBSD
        let limit = limit.rlim_cur as u64;
        return StackError::AddressSpaceExhausted { limit, mapping };
    }
    StackError::OutOfMemory { mapping }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn map_count_limit() -> Option<usize> {
    std::fs::read_to_string("/proc/sys/vm/max_map_count")
        .ok()?
        .trim()
        .parse()
        .ok()
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn map_count() -> Option<usize> {
    use std::io::Read;
    let mut maps = Vec::new();
    std::fs::File::open("/proc/self/maps")
        .ok()?
        .read_to_end(&mut maps)
        .ok()?;
    Some(maps.iter().filter(|&&byte| byte == b'\n').count())
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn map_count_limit() -> Option<usize> {
    None
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn map_count() -> Option<usize> {
    None
}
