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

pub(super) fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// Maps `len` bytes of lazily committed read-write memory (`MAP_NORESERVE`: not charged
/// against overcommit either); returns the start of the mapping.
pub(super) fn map(len: usize) -> Result<usize, StackError> {
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
    Ok(start as usize)
}

/// Maps `len` bytes of lazily committed read-write memory whose first `guard` bytes are
/// inaccessible (`mprotect`, so they are a mapping of their own); returns the start of the
/// mapping.
pub(super) fn map_guarded(len: usize, guard: usize) -> Result<usize, StackError> {
    let start = map(len)?;
    // SAFETY: `[start, start + guard)` is the start of the mapping we just made.
    if unsafe { libc::mprotect(start as *mut libc::c_void, guard, libc::PROT_NONE) } != 0 {
        let error = errno();
        unmap(start, len);
        return Err(diagnose("mprotect", error, len));
    }
    Ok(start)
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
        // SAFETY: the range lies in a stack that nothing uses (pooled or released).
        unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED) };
    }
}

#[cfg(test)]
pub(super) fn diagnose_for_tests(call: &'static str, errno: i32, mapping: usize) -> StackError {
    diagnose(call, errno, mapping)
}

/// Names the limit behind a failed `call` that wanted to map `mapping` bytes.
///
/// It allocates nothing: when the map count is exhausted, an allocator that needs a new
/// mapping fails too, and what fails then must be the stack, with this error, not the
/// diagnosis. The `/proc` files are read with `open(2)` and `read(2)` into buffers on the
/// stack.
pub(super) fn diagnose(call: &'static str, errno: i32, mapping: usize) -> StackError {
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

/// Calls `each` with successive chunks of the file at `path` (a NUL-terminated path), read
/// into a buffer on the stack; `None` if it cannot be opened or read.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn read_chunks(path: &std::ffi::CStr, mut each: impl FnMut(&[u8])) -> Option<()> {
    // SAFETY: `path` is NUL-terminated; the flags open for reading only.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return None;
    }
    let mut buffer = [0u8; 4096];
    let result = loop {
        // SAFETY: `buffer` is ours and `read` writes at most its length into it.
        let read = unsafe { libc::read(fd, buffer.as_mut_ptr().cast(), buffer.len()) };
        match read {
            0 => break Some(()),
            read if read > 0 => each(&buffer[..read as usize]),
            _ if errno() == libc::EINTR => {}
            _ => break None,
        }
    };
    // SAFETY: `fd` is the descriptor we opened above.
    unsafe { libc::close(fd) };
    result
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn map_count_limit() -> Option<usize> {
    let mut value: Option<usize> = None;
    read_chunks(c"/proc/sys/vm/max_map_count", |bytes| {
        for &byte in bytes {
            if byte.is_ascii_digit() {
                let digit = usize::from(byte - b'0');
                value = Some(value.unwrap_or(0).saturating_mul(10).saturating_add(digit));
            }
        }
    })?;
    value
}

/// The number of memory maps of this process: the lines of `/proc/self/maps`.
#[cfg(any(target_os = "linux", target_os = "android"))]
pub(super) fn map_count() -> Option<usize> {
    let mut lines = 0;
    read_chunks(c"/proc/self/maps", |bytes| {
        lines += bytes.iter().filter(|&&byte| byte == b'\n').count();
    })?;
    Some(lines)
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn map_count_limit() -> Option<usize> {
    None
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub(super) fn map_count() -> Option<usize> {
    None
}
