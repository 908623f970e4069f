//! Stacks: sizes and their errors, the per-thread pool, and what happens on overflow.
//!
//! Tests that must exhaust a process-wide limit, or die, run in a child process (this test
//! binary started again with one test selected; see `common`).

mod common;

use awaitlet::engine::{Fiber, Resumed};
use awaitlet::stack::{
    DEFAULT_STACK_SIZE, MAX_STACK_SIZE, MIN_STACK_SIZE, POOL_CAPACITY, Stack, StackError, pool_len,
    trim_pool,
};
use common::{
    child_dies_of_overflow, child_killed_by, is_child, overflow_a_fiber_stack, recurse_forever,
    run_child,
};

#[test]
fn sizes_below_the_minimum_are_refused_with_the_minimum_named() {
    for requested in [0, 1, 4096, MIN_STACK_SIZE - 1] {
        let error = Stack::new(requested).unwrap_err();
        assert_eq!(
            error,
            StackError::TooSmall {
                requested,
                minimum: MIN_STACK_SIZE
            }
        );
        assert!(
            error.to_string().contains(&MIN_STACK_SIZE.to_string()),
            "{error}"
        );
    }
    assert!(Stack::new(MIN_STACK_SIZE).is_ok());
}

#[test]
fn sizes_above_the_maximum_are_refused_with_the_maximum_named() {
    for requested in [MAX_STACK_SIZE + 1, usize::MAX / 2, usize::MAX] {
        let error = Stack::fresh(requested).unwrap_err();
        assert_eq!(
            error,
            StackError::TooLarge {
                requested,
                maximum: MAX_STACK_SIZE
            }
        );
        assert!(
            error.to_string().contains(&MAX_STACK_SIZE.to_string()),
            "{error}"
        );
    }
    let largest = Stack::fresh(MAX_STACK_SIZE).unwrap();
    assert_eq!(largest.size(), MAX_STACK_SIZE);
    largest.unmap();
}

#[test]
fn sizes_round_up_to_whole_pages() {
    let stack = Stack::fresh(MIN_STACK_SIZE + 1).unwrap();
    assert_eq!(stack.size(), MIN_STACK_SIZE + 4096);
    stack.unmap();
}

#[test]
fn a_dropped_stack_is_reused_by_the_next_request_of_its_size() {
    std::thread::spawn(|| {
        let first = Stack::new(DEFAULT_STACK_SIZE).unwrap();
        let address = format!("{first:?}");
        drop(first);
        assert_eq!(pool_len(), 1);
        let other_size = Stack::new(DEFAULT_STACK_SIZE / 2).unwrap();
        assert_ne!(
            format!("{other_size:?}"),
            address,
            "a stack of another size was reused"
        );
        let again = Stack::new(DEFAULT_STACK_SIZE).unwrap();
        assert_eq!(format!("{again:?}"), address);
        assert_eq!(pool_len(), 0);
        drop((other_size, again));
        assert_eq!(pool_len(), 2);
        trim_pool();
        assert_eq!(pool_len(), 0);
    })
    .join()
    .unwrap();
}

#[test]
fn the_pool_keeps_at_most_its_capacity() {
    std::thread::spawn(|| {
        let stacks: Vec<_> = (0..POOL_CAPACITY + 10)
            .map(|_| Stack::new(MIN_STACK_SIZE).unwrap())
            .collect();
        drop(stacks);
        assert_eq!(pool_len(), POOL_CAPACITY);
        let fresh = Stack::fresh(MIN_STACK_SIZE).unwrap();
        drop(fresh);
        assert_eq!(pool_len(), POOL_CAPACITY, "a full pool took one more");
    })
    .join()
    .unwrap();
}

#[test]
fn pools_are_per_thread_and_freed_at_thread_exit() {
    let mappings_before = count_mappings();
    std::thread::spawn(|| {
        for _ in 0..20 {
            drop(Stack::fresh(DEFAULT_STACK_SIZE).unwrap());
        }
        assert_eq!(pool_len(), 20);
    })
    .join()
    .unwrap();
    // The other thread's 20 pooled stacks (40 mappings) are gone with it. Other tests run
    // concurrently, so allow them a little slack but not 40.
    let mappings_after = count_mappings();
    assert!(
        mappings_after < mappings_before + 20,
        "{mappings_before} -> {mappings_after}"
    );
}

fn count_mappings() -> usize {
    std::fs::read_to_string("/proc/self/maps")
        .unwrap()
        .lines()
        .count()
}

#[test]
fn exhausting_vm_max_map_count_is_an_error_naming_the_limit() {
    if is_child("map-count") {
        // Keep every stack alive until mapping fails.
        let mut stacks = Vec::new();
        let error = loop {
            match Stack::fresh(MIN_STACK_SIZE) {
                Ok(stack) => stacks.push(stack),
                Err(error) => break error,
            }
        };
        let limit: usize = std::fs::read_to_string("/proc/sys/vm/max_map_count")
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert_eq!(error, StackError::MapCountExhausted { limit });
        println!("CHILD-OK after {} stacks: {error}", stacks.len());
        return;
    }
    let output = run_child(
        "exhausting_vm_max_map_count_is_an_error_naming_the_limit",
        "map-count",
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("CHILD-OK"),
        "{output:?}"
    );
    assert!(stdout.contains("vm.max_map_count"), "{stdout}");
}

#[test]
fn an_address_space_limit_is_an_error_naming_the_limit() {
    if is_child("rlimit-as") {
        let limit: u64 = 4 << 30;
        let rlimit = libc::rlimit {
            rlim_cur: limit,
            rlim_max: libc::RLIM_INFINITY,
        };
        // SAFETY: setrlimit only reads the struct; this child process exists for this limit.
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_AS, &rlimit) }, 0);
        let mut stacks = Vec::new();
        let error = loop {
            match Stack::fresh(64 << 20) {
                Ok(stack) => stacks.push(stack),
                Err(error) => break error,
            }
        };
        let mapping = (64 << 20) + 4096;
        assert_eq!(error, StackError::AddressSpaceExhausted { limit, mapping });
        println!("CHILD-OK after {} stacks: {error}", stacks.len());
        return;
    }
    let output = run_child(
        "an_address_space_limit_is_an_error_naming_the_limit",
        "rlimit-as",
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("CHILD-OK"),
        "{output:?}"
    );
    assert!(stdout.contains("RLIMIT_AS"), "{stdout}");
}

#[test]
fn overflowing_a_greenlet_stack_prints_its_size_and_aborts() {
    if is_child("overflow") {
        overflow_a_fiber_stack(64 * 1024);
        return;
    }
    child_dies_of_overflow(
        "overflowing_a_greenlet_stack_prints_its_size_and_aborts",
        "overflow",
        64,
    );
}

#[test]
fn overflow_is_reported_on_threads_without_an_alternate_signal_stack() {
    if is_child("overflow-raw-thread") {
        // A thread that std did not start has no alternate signal stack; awaitlet adds one.
        extern "C" fn thread_main(_: *mut libc::c_void) -> *mut libc::c_void {
            let mut runaway = Fiber::new(Stack::new(64 * 1024).unwrap(), |_, depth| {
                recurse_forever(depth)
            });
            let _ = runaway.resume(0);
            std::ptr::null_mut()
        }
        // SAFETY: plain pthread creation and join with a function that takes no arguments.
        unsafe {
            let mut thread: libc::pthread_t = std::mem::zeroed();
            assert_eq!(
                libc::pthread_create(
                    &mut thread,
                    std::ptr::null(),
                    thread_main,
                    std::ptr::null_mut()
                ),
                0
            );
            libc::pthread_join(thread, std::ptr::null_mut());
        }
        println!("CHILD-SURVIVED");
        return;
    }
    child_dies_of_overflow(
        "overflow_is_reported_on_threads_without_an_alternate_signal_stack",
        "overflow-raw-thread",
        64,
    );
}

#[test]
fn faults_outside_guard_pages_reach_the_previous_handler_unchanged() {
    if is_child("foreign-fault") {
        // Make sure our handler is installed, then fault somewhere that is not a guard page.
        let mut fiber = Fiber::new(Stack::new(DEFAULT_STACK_SIZE).unwrap(), |_, value| value);
        assert!(matches!(fiber.resume(1), Resumed::Returned(1)));
        // SAFETY: deliberately not safe: this child exists to die of this write.
        unsafe { std::ptr::write_volatile(16 as *mut u64, 1) };
        println!("CHILD-SURVIVED");
        return;
    }
    let (_, stderr) = child_killed_by(
        "faults_outside_guard_pages_reach_the_previous_handler_unchanged",
        "foreign-fault",
        libc::SIGSEGV,
    );
    assert!(!stderr.contains("awaitlet"), "{stderr}");
}
