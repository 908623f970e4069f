//! Many greenlets at once: stacks without guard pages (the unsafe
//! `stack::set_guard_pages(false)`), carved from shared slabs, against the kernel's limit on
//! memory maps (`vm.max_map_count`). Every use of it here states why it keeps its contract, or
//! (in the death tests' child processes) breaks it on purpose.
//!
//! Tests that count the process's memory maps, exhaust them, or die run in a child process
//! (this test binary started again with one test selected; see `common`). The test with
//! 100,000 suspended greenlets is ignored by default; CI runs it with
//! `cargo test --release --test scale -- --ignored`.

mod common;

use std::cell::Cell;
use std::future::Future;
use std::hint::black_box;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use awaitlet::engine::Fiber;
use awaitlet::stack::{
    DEFAULT_STACK_SIZE, MIN_STACK_SIZE, SLAB_STACKS, Stack, guard_pages, set_guard_pages, trim_pool,
};
use awaitlet::{AsyncDef, async_def, awaitlet};
use common::{
    catch, check_child_ok, child_dies_of_overflow, child_killed_by, is_child, max_map_count,
    overflow_a_fiber_stack, run_child, run_child_with_env, skip_map_count_under_qemu, text,
};

fn count_mappings() -> usize {
    std::fs::read_to_string("/proc/self/maps")
        .unwrap()
        .lines()
        .count()
}

/// The environment variable and value that make a child's stacks use `mprotect` guard pages.
const FORCE_MPROTECT: (&str, &str) = ("AWAITLET_STACK_GUARD", "mprotect");

/// Runs the child `role` of `test` and checks it printed `CHILD-OK` and exited cleanly.
fn assert_child_ok(test: &str, role: &str) -> String {
    let output = run_child(test, role);
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success() && stdout.contains("CHILD-OK"),
        "{output:?}"
    );
    stdout
}

#[test]
fn guard_pages_are_on_by_default_and_the_setting_is_per_thread() {
    std::thread::spawn(|| {
        assert!(guard_pages());
        // SAFETY: no stack is made while guard pages are off.
        assert!(unsafe { set_guard_pages(false) });
        assert!(!guard_pages());
        std::thread::spawn(|| assert!(guard_pages(), "the setting leaked to another thread"))
            .join()
            .unwrap();
        // SAFETY: turning guard pages on has no requirement.
        assert!(!unsafe { set_guard_pages(true) });
        assert!(guard_pages());
    })
    .join()
    .unwrap();
}

#[test]
fn a_dropped_carved_stack_is_reused_by_the_next_request_of_its_size() {
    std::thread::spawn(|| {
        // SAFETY: nothing runs on the stacks made while guard pages are off.
        unsafe { set_guard_pages(false) };
        let first = Stack::new(DEFAULT_STACK_SIZE).unwrap();
        let address = format!("{first:?}");
        drop(first);
        let other_size = Stack::new(MIN_STACK_SIZE).unwrap();
        assert_ne!(format!("{other_size:?}"), address);
        let again = Stack::new(DEFAULT_STACK_SIZE).unwrap();
        assert_eq!(format!("{again:?}"), address);
    })
    .join()
    .unwrap();
}

#[test]
fn carved_stacks_take_two_maps_per_slab_and_empty_slabs_are_unmapped() {
    if is_child("slab-maps") {
        const STACKS: usize = 1000;
        let before = count_mappings();
        // SAFETY: nothing runs on the stacks made while guard pages are off.
        unsafe { set_guard_pages(false) };
        let carved: Vec<Stack> = (0..STACKS)
            .map(|_| Stack::new(MIN_STACK_SIZE).unwrap())
            .collect();
        let with_carved = count_mappings();
        let slabs = STACKS.div_ceil(SLAB_STACKS);
        assert!(
            with_carved <= before + 2 * slabs,
            "{STACKS} carved stacks: {before} -> {with_carved} maps, more than 2 per slab"
        );
        drop(carved);
        trim_pool();
        assert_eq!(count_mappings(), before, "empty slabs stayed mapped");

        // For comparison: the same stacks with guard pages take two maps each with `mprotect`
        // guard pages, and share slabs with guard regions, at most a map per slab.
        // SAFETY: turning guard pages on has no requirement.
        unsafe { set_guard_pages(true) };
        let guarded: Vec<Stack> = (0..STACKS)
            .map(|_| Stack::new(MIN_STACK_SIZE).unwrap())
            .collect();
        let with_guarded = count_mappings();
        if std::env::var_os(FORCE_MPROTECT.0).is_some() || !common::kernel_has_guard_regions() {
            assert!(
                with_guarded >= before + 2 * STACKS,
                "{STACKS} stacks with mprotect guard pages: {before} -> {with_guarded} maps"
            );
        } else {
            assert!(
                with_guarded <= before + slabs,
                "{STACKS} stacks with guard regions: {before} -> {with_guarded} maps"
            );
        }
        drop(guarded);
        trim_pool();

        // Stacks pooled by a thread when it exits release their slabs too. A first thread
        // that makes no stack leaves what any thread leaves (a cached thread stack, a malloc
        // arena); the second must leave nothing more.
        std::thread::spawn(|| drop(black_box(vec![0u8; 64])))
            .join()
            .unwrap();
        let before_thread = count_mappings();
        std::thread::spawn(|| {
            // SAFETY: nothing runs on the stacks made while guard pages are off.
            unsafe { set_guard_pages(false) };
            let stacks: Vec<Stack> = (0..100)
                .map(|_| Stack::new(MIN_STACK_SIZE).unwrap())
                .collect();
            drop(stacks);
        })
        .join()
        .unwrap();
        assert_eq!(
            count_mappings(),
            before_thread,
            "a finished thread's slabs stayed mapped"
        );
        println!("CHILD-OK {before} maps; {with_carved} with carved, {with_guarded} with guarded");
        return;
    }
    let test = "carved_stacks_take_two_maps_per_slab_and_empty_slabs_are_unmapped";
    if common::kernel_has_guard_regions() {
        println!("{}", assert_child_ok(test, "slab-maps"));
    } else {
        println!("guard regions skipped: this kernel has no MADV_GUARD_INSTALL (Linux 6.13+)");
    }
    let output = run_child_with_env(test, "slab-maps", FORCE_MPROTECT.0, FORCE_MPROTECT.1);
    check_child_ok(output);
}

#[inline(never)]
fn recurse_until_below(limit: usize, depth: usize) -> usize {
    let frame = black_box([depth as u8; 256]);
    let here = &frame as *const _ as usize;
    if here < limit {
        return depth;
    }
    recurse_until_below(limit, depth + 1) + frame[depth % 256] as usize
}

#[test]
fn overflowing_a_stack_without_guard_page_aborts_when_it_is_released() {
    const SIZE: usize = 64 * 1024;
    if is_child("canary") {
        // SAFETY: deliberately broken: this child exists to overflow a stack without a guard
        // page and die of the canary check when the stack is released. The overflow runs 512
        // bytes into `lowest`, which nothing runs on, and the process aborts before any of it
        // is read.
        unsafe { set_guard_pages(false) };
        // The first stack of a slab keeps the slab's guard page; overflow the second, which
        // has none, by a little: into the top of the first.
        let lowest = Stack::new(SIZE).unwrap();
        let mut runaway = Fiber::new(Stack::new(SIZE).unwrap(), |_, _: usize| {
            let entry = black_box(0u8);
            let entry_address = &entry as *const u8 as usize;
            recurse_until_below(entry_address - SIZE - 512, 0)
        });
        let outcome = runaway.resume(0);
        println!("CHILD-RAN {outcome:?}");
        drop(runaway); // releases the overflowed stack: its canary is checked here
        println!("CHILD-SURVIVED");
        drop(lowest);
        return;
    }
    let (stdout, stderr) = child_killed_by(
        "overflowing_a_stack_without_guard_page_aborts_when_it_is_released",
        "canary",
        libc::SIGABRT,
    );
    assert!(stdout.contains("CHILD-RAN"), "{stdout}");
    let expected = "awaitlet: a greenlet overflowed its 64 KiB stack, which had no guard page \
         (awaitlet::stack::set_guard_pages(false)), so memory below it may be corrupted; \
         give it a larger one with Greenlet::builder().stack_size(bytes) or \
         AsyncDef::stack_size(bytes), or keep guard pages on to catch overflows when they \
         happen\n";
    assert!(stderr.contains(expected), "{stderr}");
}

#[test]
fn the_lowest_stack_of_a_slab_overflows_into_its_guard_page() {
    if is_child("slab-guard") {
        // SAFETY: deliberately broken: this child exists to overflow. Its only stack is the
        // lowest of a fresh slab, so the overflow runs over its own canary into the slab's
        // guard page, and the process dies of the fault.
        unsafe { set_guard_pages(false) };
        overflow_a_fiber_stack(64 * 1024);
        return;
    }
    child_dies_of_overflow(
        "the_lowest_stack_of_a_slab_overflows_into_its_guard_page",
        "slab-guard",
        64,
    );
}

#[test]
fn with_guard_pages_the_map_limit_makes_async_def_panic_naming_it() {
    if skip_map_count_under_qemu() {
        return;
    }
    if is_child("async-def-map-count") {
        let limit = max_map_count();
        let mut suspended: Vec<AsyncDef<'static, ()>> = Vec::with_capacity(limit);
        let payload = loop {
            match catch(|| async_def(|| ()).stack_size(MIN_STACK_SIZE)) {
                Ok(future) => suspended.push(future),
                Err(payload) => break payload,
            }
        };
        let message = text(&*payload);
        assert!(message.contains("cannot get a"), "{message}");
        assert!(
            message.contains(&format!("vm.max_map_count = {limit}")),
            "{message}"
        );
        assert!(message.contains("set_guard_pages(false)"), "{message}");
        assert!(suspended.len() > limit / 3, "only {} made", suspended.len());
        println!("CHILD-OK after {} async_defs: {message}", suspended.len());
        return;
    }
    // With mprotect guard pages, each stack takes two maps of its own: the limit is reached
    // after about a third of it in stacks. (With guard regions, stacks share maps; the test
    // of that path takes the maps away first, in tests/stack.rs.)
    let output = run_child_with_env(
        "with_guard_pages_the_map_limit_makes_async_def_panic_naming_it",
        "async-def-map-count",
        FORCE_MPROTECT.0,
        FORCE_MPROTECT.1,
    );
    check_child_ok(output);
}

/// A future that stays pending until its gate opens; it registers no waker (the test polls
/// every future itself).
struct Gate(Rc<Cell<bool>>);

impl Future for Gate {
    type Output = ();
    fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
        if self.0.get() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

/// Counts the drops of the values the functions held across their wait.
struct Tracked(Rc<Cell<usize>>);

impl Drop for Tracked {
    fn drop(&mut self) {
        self.0.set(self.0.get() + 1);
    }
}

/// A function a few frames deep before it waits, as synchronous code calling a library is.
#[inline(never)]
fn wait_at_depth(gate: &Rc<Cell<bool>>, depth: usize, value: u64) -> u64 {
    if depth == 0 {
        awaitlet(Gate(gate.clone()));
        return value;
    }
    let frame = black_box([value; 8]);
    wait_at_depth(gate, depth - 1, value) + frame[depth % 8] - value
}

/// Suspends `count` async_defs at once on this thread, on stacks of `stack_size` bytes (the
/// thread's default when `None`), with guard pages off unless `guard_pages`; then completes
/// them all. Checks they were all suspended at the same time, every result, and every
/// destructor. Returns how many memory maps the process had while they were all suspended, and
/// by how many bytes its resident memory (`VmRSS`) grew per suspended greenlet.
fn suspend_then_complete(
    count: usize,
    stack_size: Option<usize>,
    guard_pages: bool,
) -> (usize, usize) {
    let previous = if guard_pages {
        awaitlet::stack::guard_pages()
    } else {
        // SAFETY: the functions run on stacks of at least 64 KiB (the callers' sizes); they go
        // five frames of about a hundred bytes deep, then wait (a few KiB with the polling and
        // the switch), and neither panic nor take signals there.
        unsafe { set_guard_pages(false) }
    };
    let gate = Rc::new(Cell::new(false));
    let started = Rc::new(Cell::new(0usize));
    let suspended_now = Rc::new(Cell::new(0usize));
    let most_suspended = Rc::new(Cell::new(0usize));
    let drops = Rc::new(Cell::new(0usize));
    let mut cx = Context::from_waker(Waker::noop());
    let mut futures: Vec<AsyncDef<'_, u64>> = Vec::with_capacity(count);
    // Touch the vector's memory first, so that it does not count as the greenlets'.
    futures
        .spare_capacity_mut()
        .fill_with(std::mem::MaybeUninit::zeroed);
    let resident_before = resident_bytes();
    for index in 0..count {
        let (gate, started, suspended_now, most_suspended, drops) =
            (&gate, &started, &suspended_now, &most_suspended, &drops);
        let future = async_def(move || {
            let held = Tracked(drops.clone());
            started.set(started.get() + 1);
            suspended_now.set(suspended_now.get() + 1);
            most_suspended.set(most_suspended.get().max(suspended_now.get()));
            let value = wait_at_depth(gate, 4, index as u64);
            suspended_now.set(suspended_now.get() - 1);
            drop(held);
            value * 3
        });
        let mut future = match stack_size {
            Some(size) => future.stack_size(size),
            None => future,
        };
        assert!(
            Pin::new(&mut future).poll(&mut cx).is_pending(),
            "future {index} did not wait"
        );
        futures.push(future);
    }
    assert_eq!(started.get(), count);
    assert_eq!(suspended_now.get(), count, "not all suspended at once");
    assert_eq!(
        drops.get(),
        0,
        "a value held across the wait was dropped early"
    );
    let maps_while_suspended = count_mappings();
    let resident_per_greenlet = resident_bytes().saturating_sub(resident_before) / count;
    gate.set(true);
    for (index, future) in futures.iter_mut().enumerate() {
        match Pin::new(future).poll(&mut cx) {
            Poll::Ready(value) => assert_eq!(value, index as u64 * 3),
            Poll::Pending => panic!("future {index} still pending after the gate opened"),
        }
    }
    assert_eq!(suspended_now.get(), 0);
    assert_eq!(most_suspended.get(), count);
    assert_eq!(drops.get(), count, "destructors did not all run");
    drop(futures);
    trim_pool();
    // SAFETY: restores the setting found on entry; the callers run this on a thread of its own,
    // where that is the default, guard pages on.
    unsafe { set_guard_pages(previous) };
    (maps_while_suspended, resident_per_greenlet)
}

/// This process's resident memory (`VmRSS`), in bytes.
fn resident_bytes() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: usize = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib * 1024
}

#[test]
fn a_thousand_async_defs_suspend_at_once_without_guard_pages() {
    let (maps, _) = std::thread::spawn(|| suspend_then_complete(1000, Some(64 * 1024), false))
        .join()
        .unwrap();
    assert!(maps < 1000, "{maps} maps for 1000 suspended greenlets");
}

/// The number of greenlets the scale tests suspend at once.
const SCALE: usize = 100_000;

/// Linux's default `vm.max_map_count`.
const DEFAULT_MAX_MAP_COUNT: usize = 65_530;

/// Runs [`suspend_then_complete`] for [`SCALE`] greenlets on a thread of its own and checks the
/// process stayed under the default map limit (whatever this machine's limit is).
fn at_scale(stack_size: usize) {
    let (maps, _) =
        std::thread::spawn(move || suspend_then_complete(SCALE, Some(stack_size), false))
            .join()
            .unwrap();
    println!("{SCALE} suspended greenlets on {stack_size}-byte stacks: {maps} memory maps");
    assert!(
        maps < DEFAULT_MAX_MAP_COUNT,
        "{maps} maps: over the default vm.max_map_count"
    );
}

#[test]
#[ignore = "100,000 greenlets: run with `cargo test --release --test scale -- --ignored`"]
fn a_hundred_thousand_async_defs_on_64_kib_stacks_suspend_at_once_under_the_default_map_limit() {
    at_scale(64 * 1024);
}

#[test]
#[ignore = "100,000 greenlets: run with `cargo test --release --test scale -- --ignored`"]
fn a_hundred_thousand_async_defs_on_default_stacks_suspend_at_once_under_the_default_map_limit() {
    at_scale(DEFAULT_STACK_SIZE);
}

/// The number of greenlets suspended at once with default settings.
const MILLION: usize = 1_000_000;

#[test]
#[ignore = "a million greenlets: run with `cargo test --release --test scale -- --ignored`"]
fn a_million_async_defs_with_default_settings_suspend_at_once_under_the_default_map_limit() {
    if is_child("million") {
        assert!(guard_pages(), "guard pages are on by default");
        let (maps, resident) = suspend_then_complete(MILLION, None, true);
        println!(
            "CHILD-OK {MILLION} suspended greenlets, default stacks with guard pages: {maps} \
             memory maps, {resident} bytes resident each"
        );
        assert!(
            maps < DEFAULT_MAX_MAP_COUNT,
            "{maps} maps: over the default vm.max_map_count"
        );
        // A shallow wait keeps one page of its stack resident; a second page would mean the
        // greenlet's own bookkeeping spilled over. (The vector of futures is not counted.)
        assert!(
            resident <= 5 * 1024,
            "{resident} bytes resident per greenlet"
        );
        return;
    }
    if !common::kernel_has_guard_regions() {
        // Stacks with mprotect guard pages take two maps each: about 32,000 fit.
        println!(
            "skipped: this kernel has no guard regions (MADV_GUARD_INSTALL, Linux 6.13+), so a \
             million guarded stacks cannot fit under vm.max_map_count"
        );
        return;
    }
    // A million default stacks take a TiB of address space (committed lazily, MAP_NORESERVE).
    let output = common::child_command(
        "a_million_async_defs_with_default_settings_suspend_at_once_under_the_default_map_limit",
        "million",
    )
    .arg("--include-ignored")
    .output()
    .expect("spawn the test binary again");
    check_child_ok(output.clone());
    print!("{}", String::from_utf8_lossy(&output.stdout));
}
