//! Unit tests for what the public API cannot observe: page release and error diagnosis.

use super::{POOL_WATERMARK, Stack, TRIM_PERIOD, os, pool_len};

#[test]
fn the_pool_releases_pages_below_the_watermark_every_trim_period() {
    std::thread::spawn(|| {
        let stack = Stack::new(super::DEFAULT_STACK_SIZE).unwrap();
        let page = os::page_size();
        // One word deep in the stack (below the watermark), one shallow (above it).
        let deep = (stack.bottom() as usize + page) as *mut u64;
        let shallow = (stack.top() as usize - POOL_WATERMARK / 2) as *mut u64;
        // SAFETY: both addresses lie inside the usable part of a stack nothing runs on.
        unsafe {
            deep.write_volatile(0xdead_beef);
            shallow.write_volatile(0xfeed_f00d);
        }
        let mut stack = Some(stack);
        for _ in 0..TRIM_PERIOD - 1 {
            drop(stack.take());
            stack = Some(Stack::new(super::DEFAULT_STACK_SIZE).unwrap());
        }
        // SAFETY: as above; the pool handed back the same mapping each time.
        let before_trim = unsafe { deep.read_volatile() };
        assert_eq!(before_trim, 0xdead_beef, "released too early");
        drop(stack.take());
        assert_eq!(pool_len(), 1);
        // SAFETY: the mapping is pooled, still mapped; we only read it.
        unsafe {
            assert_eq!(
                deep.read_volatile(),
                0,
                "deep page kept after the trim period"
            );
            assert_eq!(
                shallow.read_volatile(),
                0xfeed_f00d,
                "page above the watermark released"
            );
        }
    })
    .join()
    .unwrap();
}

#[test]
fn enomem_without_a_known_limit_is_out_of_memory_and_other_errors_name_the_call() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_AS, &mut limit) }, 0);
    let expected = if limit.rlim_cur == libc::RLIM_INFINITY {
        super::StackError::OutOfMemory { mapping: 1 << 20 }
    } else {
        super::StackError::AddressSpaceExhausted {
            limit: limit.rlim_cur,
            mapping: 1 << 20,
        }
    };
    // The map count is far from its limit in this process.
    assert_eq!(
        os::diagnose_for_tests("mmap", libc::ENOMEM, 1 << 20),
        expected
    );
    let other = os::diagnose_for_tests("mprotect", libc::EACCES, 1 << 20);
    assert_eq!(
        other,
        super::StackError::Os {
            call: "mprotect",
            errno: libc::EACCES
        }
    );
    assert!(other.to_string().contains("mprotect failed"), "{other}");
}

#[test]
fn carved_stacks_are_usable_to_their_full_size_and_do_not_overlap() {
    std::thread::spawn(|| {
        // SAFETY: nothing runs on the stacks made while guard pages are off; they are only
        // written from this thread's own stack, within their size.
        assert!(unsafe { super::set_guard_pages(false) });
        let size = super::MIN_STACK_SIZE;
        // Two slabs' worth and a few, so that stacks of two slabs are compared too.
        let stacks: Vec<Stack> = (0..2 * super::SLAB_STACKS + 3)
            .map(|_| Stack::new(size).unwrap())
            .collect();
        assert_eq!(super::slab::count(), 3);
        for (index, stack) in stacks.iter().enumerate() {
            assert_eq!(stack.size(), size - super::CANARY_BYTES);
            assert_eq!(stack.bottom() as usize % os::page_size(), 0);
            let (bottom, top) = (stack.bottom() as usize, stack.top() as usize);
            assert_eq!(
                bottom + stack.size(),
                top + std::mem::size_of::<super::Header>()
            );
            // SAFETY: `[bottom, top)` is the free part of a stack nothing runs on.
            unsafe { std::ptr::write_bytes(bottom as *mut u8, index as u8, top - bottom) };
        }
        for (index, stack) in stacks.iter().enumerate() {
            let (bottom, top) = (stack.bottom() as usize, stack.top() as usize);
            // SAFETY: as above; we only read.
            let bytes = unsafe { std::slice::from_raw_parts(bottom as *const u8, top - bottom) };
            assert!(
                bytes.iter().all(|&byte| byte == index as u8),
                "stack {index} was overwritten by another"
            );
        }
        // Every canary survived the writes right above it: dropping checks them all.
        drop(stacks);
        super::trim_pool();
        assert_eq!(super::slab::count(), 0, "empty slabs stay mapped");
    })
    .join()
    .unwrap();
}

#[test]
fn the_pool_hands_out_only_stacks_of_the_current_kind() {
    std::thread::spawn(|| {
        let size = super::MIN_STACK_SIZE;
        let guarded = Stack::new(size).unwrap();
        let guarded_bottom = guarded.bottom();
        drop(guarded);
        // SAFETY: nothing runs on the stacks made while guard pages are off.
        unsafe { super::set_guard_pages(false) };
        let carved = Stack::new(size).unwrap();
        assert_ne!(
            carved.bottom(),
            guarded_bottom,
            "a guarded stack was handed out"
        );
        assert_eq!(carved.size(), size - super::CANARY_BYTES);
        let carved_bottom = carved.bottom();
        drop(carved);
        assert_eq!(pool_len(), 2);
        let again = Stack::new(size).unwrap();
        assert_eq!(
            again.bottom(),
            carved_bottom,
            "the pooled carved stack was not reused"
        );
        // SAFETY: turning guard pages on has no requirement.
        assert!(!unsafe { super::set_guard_pages(true) });
        let guarded_again = Stack::new(size).unwrap();
        assert_eq!(guarded_again.bottom(), guarded_bottom);
        assert_eq!(guarded_again.size(), size);
        drop((again, guarded_again));
        super::trim_pool();
        assert_eq!(super::slab::count(), 0);
    })
    .join()
    .unwrap();
}

/// The word at `address`, read through the kernel (`process_vm_readv`), so that a guard page
/// answers `None` instead of faulting.
fn read_word(address: usize) -> Option<u64> {
    let mut word = 0u64;
    let local = libc::iovec {
        iov_base: (&mut word as *mut u64).cast(),
        iov_len: 8,
    };
    let remote = libc::iovec {
        iov_base: address as *mut libc::c_void,
        iov_len: 8,
    };
    // SAFETY: the kernel writes at most eight bytes into `word` and reads `address` through
    // the page tables, reporting an inaccessible page as an error.
    let read = unsafe { libc::process_vm_readv(libc::getpid(), &local, 1, &remote, 1, 0) };
    (read == 8).then_some(word)
}

#[test]
fn guard_regions_survive_page_release_pooling_and_slot_release() {
    if !super::guard::regions() {
        println!("skipped: this kernel has no guard regions (MADV_GUARD_INSTALL, Linux 6.13+)");
        return;
    }
    std::thread::spawn(|| {
        let page = os::page_size();
        let size = super::MIN_STACK_SIZE;
        // Keeps the slab mapped while the stack above it is released.
        let below = Stack::new(size).unwrap();
        let stack = Stack::new(size).unwrap();
        assert_eq!(super::slab::count(), 1, "the two stacks share a slab");
        let bottom = stack.bottom() as usize;
        let guard = bottom - page;
        assert_eq!(
            read_word(guard),
            None,
            "no guard region below a carved stack"
        );
        assert_eq!(read_word(bottom), Some(0));
        assert_eq!(read_word(below.top() as usize - 8), Some(0));
        for (advice, name) in [(libc::MADV_DONTNEED, "DONTNEED"), (libc::MADV_FREE, "FREE")] {
            // SAFETY: the stack's bottom word is ours and nothing runs on the stack.
            unsafe { (bottom as *mut u64).write_volatile(0x5eed) };
            // From the guard region up to the page holding the stack's header (at its top).
            // SAFETY: the range is the guard region and the usable part of a stack nothing
            // runs on, below its header; its contents may be discarded.
            let result = unsafe { libc::madvise(guard as *mut libc::c_void, size, advice) };
            assert_eq!(result, 0, "MADV_{name}");
            assert_eq!(
                read_word(guard),
                None,
                "MADV_{name} removed the guard region"
            );
            assert!(read_word(bottom).is_some(), "MADV_{name} removed the stack");
        }
        // Pooled and handed out again: the same slot, still guarded.
        drop(stack);
        let again = Stack::new(size).unwrap();
        assert_eq!(
            again.bottom() as usize,
            bottom,
            "the pooled stack was not reused"
        );
        assert_eq!(
            read_word(guard),
            None,
            "the reused stack lost its guard region"
        );
        // Released while its slab lives on: its pages go back to the kernel, its guard stays.
        // SAFETY: as above.
        unsafe { (bottom as *mut u64).write_volatile(0x5eed) };
        again.unmap();
        assert_eq!(super::slab::count(), 1);
        assert_eq!(read_word(bottom), Some(0), "a released slot kept its pages");
        assert_eq!(
            read_word(guard),
            None,
            "a released slot lost its guard region"
        );
        // The last stack of the slab unmaps it.
        below.unmap();
        assert_eq!(super::slab::count(), 0, "an empty slab stayed mapped");
        assert_eq!(read_word(bottom), None);
    })
    .join()
    .unwrap();
}
