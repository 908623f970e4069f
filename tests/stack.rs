//! Stacks: sizes and their errors, the per-thread pool, and what happens on overflow.
//!
//! Tests that must exhaust a process-wide limit, or die, run in a child process (this test
//! binary started again with one test selected; see `common`).

mod common;

use awaitlet::engine::{Fiber, Resumed};
use awaitlet::stack::{
    DEFAULT_STACK_SIZE, MAX_STACK_SIZE, MIN_STACK_SIZE, POOL_CAPACITY, Stack, StackError,
    default_stack_size, pool_len, set_default_stack_size, trim_pool,
};
use awaitlet::{Greenlet, async_def};
use common::{
    child_dies_of_overflow, child_killed_by, guard_page_below, is_child, overflow_a_fiber_stack,
    poll_once, recurse_forever, run_child, run_child_within, skip_map_count_under_qemu,
    skip_under_qemu,
};
use std::hint::black_box;
use std::task::Poll;

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
    let (_, virtual_before) = common::process_memory();
    std::thread::spawn(|| {
        for _ in 0..20 {
            drop(Stack::fresh(DEFAULT_STACK_SIZE).unwrap());
        }
        assert_eq!(pool_len(), 20);
    })
    .join()
    .unwrap();
    // The other thread's 20 pooled stacks (20 MiB of address space, in 40 maps or in a slab)
    // are gone with it. Other tests run concurrently, so allow them a little slack but not
    // 20 MiB.
    let (_, virtual_after) = common::process_memory();
    assert!(
        virtual_after < virtual_before + 10 * 1024,
        "{virtual_before} kB -> {virtual_after} kB"
    );
}

/// The environment that makes a child's stacks use `mprotect` guard pages.
const FORCE_MPROTECT: [(&str, &str); 1] = [("AWAITLET_STACK_GUARD", "mprotect")];

/// The child side of the map-count tests: with every map taken, a new stack is refused with
/// the limit named (a few may still come from a slab mapped before).
fn exhaust_map_count_with_stacks() {
    let mut stacks = vec![Stack::new(MIN_STACK_SIZE).unwrap()];
    let filler = common::fill_map_count();
    let error = loop {
        match Stack::fresh(MIN_STACK_SIZE) {
            Ok(stack) if stacks.len() < 1000 => stacks.push(stack),
            Ok(_) => panic!("1000 stacks made with every memory map taken"),
            Err(error) => break error,
        }
    };
    let made = stacks.len();
    drop(filler);
    let limit = common::max_map_count();
    assert_eq!(error, StackError::MapCountExhausted { limit });
    println!("CHILD-OK after {made} stacks: {error}");
}

fn assert_map_count_error(output: std::process::Output) {
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("CHILD-OK"),
        "{output:?}"
    );
    assert!(stdout.contains("vm.max_map_count"), "{stdout}");
}

#[test]
fn exhausting_vm_max_map_count_is_an_error_naming_the_limit() {
    if skip_map_count_under_qemu() {
        return;
    }
    if is_child("map-count") {
        exhaust_map_count_with_stacks();
        return;
    }
    let test = "exhausting_vm_max_map_count_is_an_error_naming_the_limit";
    let limit = std::time::Duration::from_secs(60);
    assert_map_count_error(run_child_within(test, "map-count", &[], limit));
    assert_map_count_error(run_child_within(test, "map-count", &FORCE_MPROTECT, limit));
}

#[test]
fn async_def_without_a_memory_map_left_panics_naming_the_limit_and_never_hangs() {
    if skip_map_count_under_qemu() {
        return;
    }
    if is_child("async-def-map-count") {
        let keep = async_def(|| 0);
        let filler = common::fill_map_count();
        // Beyond the slab mapped above: every stack needs a new map from here on.
        let mut futures = Vec::with_capacity(1000);
        let outcome = common::catch(|| {
            for _ in 0..1000 {
                futures.push(async_def(|| 0));
            }
        });
        drop(filler);
        let message = common::text(&*outcome.expect_err("1000 async_defs without a map left"));
        println!("CHILD-OK {message}");
        drop((keep, futures));
        return;
    }
    // With a backtrace asked for: the panic hook must not hang or fail for want of maps.
    let environment = [("RUST_BACKTRACE", "1")];
    let test = "async_def_without_a_memory_map_left_panics_naming_the_limit_and_never_hangs";
    let limit = std::time::Duration::from_secs(60);
    for environment in [&environment[..], &[environment[0], FORCE_MPROTECT[0]]] {
        let output = run_child_within(test, "async-def-map-count", environment, limit);
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success() && stdout.contains("CHILD-OK"),
            "{output:?}"
        );
        assert!(stdout.contains("vm.max_map_count"), "{stdout}");
    }
}

#[test]
fn an_address_space_limit_is_an_error_naming_the_limit() {
    if skip_under_qemu("qemu-user accepts setrlimit(RLIMIT_AS) but does not enforce it") {
        return;
    }
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
        // The mapping that did not fit: the stack and its guard page, or a slab of such stacks.
        let StackError::AddressSpaceExhausted {
            limit: named,
            mapping,
        } = error
        else {
            panic!("{error:?}");
        };
        assert_eq!(named, limit);
        assert_eq!(mapping % ((64 << 20) + 4096), 0, "{error}");
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
fn overflowing_into_a_guard_region_prints_its_size_and_aborts() {
    if is_child("overflow-region") {
        // Not the lowest stack of its slab: its guard region lies inside the slab's mapping.
        let _below = Stack::new(128 * 1024).unwrap();
        overflow_a_fiber_stack(128 * 1024);
        return;
    }
    if !common::kernel_has_guard_regions() {
        println!("skipped: this kernel has no guard regions (MADV_GUARD_INSTALL, Linux 6.13+)");
        return;
    }
    child_dies_of_overflow(
        "overflowing_into_a_guard_region_prints_its_size_and_aborts",
        "overflow-region",
        128,
    );
}

#[test]
fn overflowing_into_an_mprotect_guard_page_prints_its_size_and_aborts() {
    if is_child("overflow-mprotect") {
        assert_eq!(
            std::env::var(FORCE_MPROTECT[0].0).as_deref(),
            Ok(FORCE_MPROTECT[0].1)
        );
        let _below = Stack::new(128 * 1024).unwrap();
        overflow_a_fiber_stack(128 * 1024);
        return;
    }
    let output = common::child_command(
        "overflowing_into_an_mprotect_guard_page_prints_its_size_and_aborts",
        "overflow-mprotect",
    )
    .envs(FORCE_MPROTECT)
    .output()
    .unwrap();
    assert_eq!(
        common::terminating_signal(&output),
        Some(libc::SIGABRT),
        "{output:?}"
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("awaitlet: a greenlet overflowed its 128 KiB stack; give it a larger one"),
        "{stderr}"
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

/// Runs [`guard_page_below`] on a stack got each safe way there is, on the calling thread with
/// its current setting; returns each way's name and what the check found.
///
/// Before checking, one stack of each size checked is kept alive, so that, were stacks carved
/// from slabs, none of those checked would be the lowest of its slab, the one near the slab's
/// guard page.
fn guard_below_each_safe_way() -> Vec<(&'static str, Result<(), String>)> {
    let _keep_off_the_slab_bottoms = (
        Stack::new(MIN_STACK_SIZE).unwrap(),
        Stack::new(DEFAULT_STACK_SIZE).unwrap(),
    );
    /// The check, from a local of the function running on the stack to check.
    #[inline(never)]
    fn from_here(size: usize) -> Result<(), String> {
        let here = black_box(0u8);
        guard_page_below(&here as *const u8 as usize, size)
    }
    /// A fiber on `stack` finds the address of one of its locals; the check runs while the
    /// fiber, and so its stack, is alive.
    fn on_fiber(stack: Stack, size: usize) -> Result<(), String> {
        let mut fiber = Fiber::new(stack, |_, _| {
            let here = black_box(0u8);
            &here as *const u8 as usize
        });
        match fiber.resume(0) {
            Resumed::Returned(address) => guard_page_below(address, size),
            other => Err(format!("the fiber did not return: {other:?}")),
        }
    }
    let on_greenlet = |greenlet: Greenlet| {
        greenlet
            .switch::<(), Result<(), String>>(())
            .unwrap_or_else(|error| Err(format!("{error:?}")))
    };
    let on_async_def = |future: awaitlet::AsyncDef<'_, Result<(), String>>| {
        let mut future = future;
        match poll_once(&mut future) {
            Poll::Ready(found) => found,
            Poll::Pending => Err("the async_def did not finish".to_string()),
        }
    };
    let size = MIN_STACK_SIZE;
    let default = DEFAULT_STACK_SIZE;
    vec![
        ("Stack::new", on_fiber(Stack::new(size).unwrap(), size)),
        // The stack the line above returned to the pool, handed out again.
        (
            "Stack::new from the pool",
            on_fiber(Stack::new(size).unwrap(), size),
        ),
        ("Stack::fresh", on_fiber(Stack::fresh(size).unwrap(), size)),
        (
            "Greenlet::new",
            on_greenlet(Greenlet::new(move |()| from_here(default))),
        ),
        (
            "Greenlet::builder().stack_size",
            on_greenlet(
                Greenlet::builder()
                    .stack_size(size)
                    .build(move |()| from_here(size))
                    .unwrap(),
            ),
        ),
        ("async_def", on_async_def(async_def(|| from_here(default)))),
        (
            "async_def(..).stack_size",
            on_async_def(async_def(|| from_here(size)).stack_size(size)),
        ),
    ]
}

#[test]
fn no_safe_way_to_get_a_stack_gives_one_without_a_guard_page_below_it() {
    std::thread::spawn(|| {
        for (way, found) in guard_below_each_safe_way() {
            assert_eq!(found, Ok(()), "{way}");
        }
        trim_pool();

        // The check can fail: with guard pages off, stacks are carved and it finds no guard
        // below any of them.
        // SAFETY: the functions on these stacks read /proc/self/maps, a few KiB of stack on
        // stacks of 64 KiB or more, and neither panic nor take signals there.
        let previous = unsafe { awaitlet::stack::set_guard_pages(false) };
        for (way, found) in guard_below_each_safe_way() {
            assert!(
                found.is_err(),
                "{way}: a guard page found below a carved stack"
            );
        }
        // SAFETY: `previous` is the default, guard pages on, which has no requirement.
        unsafe { awaitlet::stack::set_guard_pages(previous) };
        trim_pool();
    })
    .join()
    .unwrap();
}

/// Whether a guard page lies less than `size` bytes below a local of this function's frame.
#[inline(never)]
fn guard_within(size: usize) -> Result<(), String> {
    let here = black_box(0u8);
    guard_page_below(&here as *const u8 as usize, size)
}

#[test]
fn greenlet_new_and_async_def_use_the_threads_default_stack_size() {
    std::thread::spawn(|| {
        let size = 128 * 1024;
        let on_greenlet = || {
            Greenlet::new(move |()| guard_within(size))
                .switch::<(), Result<(), String>>(())
                .unwrap()
        };
        let on_async_def = || match poll_once(&mut async_def(|| guard_within(size))) {
            Poll::Ready(found) => found,
            Poll::Pending => Err("the async_def did not finish".to_string()),
        };
        // With the default 1 MiB, the guard page is farther than 128 KiB down: the check fails.
        assert!(on_greenlet().is_err());
        assert!(on_async_def().is_err());
        assert_eq!(set_default_stack_size(size), Ok(DEFAULT_STACK_SIZE));
        assert_eq!(default_stack_size(), size);
        assert_eq!(on_greenlet(), Ok(()), "Greenlet::new");
        assert_eq!(on_async_def(), Ok(()), "async_def");
        std::thread::spawn(|| assert_eq!(default_stack_size(), DEFAULT_STACK_SIZE))
            .join()
            .expect("the default leaked to another thread");
        assert!(matches!(
            set_default_stack_size(MIN_STACK_SIZE - 1),
            Err(StackError::TooSmall { .. })
        ));
        assert_eq!(
            default_stack_size(),
            size,
            "a refused size changed the default"
        );
        assert_eq!(set_default_stack_size(DEFAULT_STACK_SIZE), Ok(size));
    })
    .join()
    .unwrap();
}
