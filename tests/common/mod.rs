//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::future::Future;
use std::pin::Pin;
use std::process::{Command, Output};
use std::task::{Context, Poll, Waker};

/// Environment variable naming the child role a re-executed test binary should play.
pub(crate) const CHILD_ROLE: &str = "AWAITLET_TEST_CHILD";

/// True when this process was started by [`run_child`] to play `role`.
pub(crate) fn is_child(role: &str) -> bool {
    std::env::var(CHILD_ROLE).is_ok_and(|value| value == role)
}

/// Environment variable that `.ci/aarch64` sets to 1 when it runs the suite under qemu-user.
pub(crate) const UNDER_QEMU: &str = "AWAITLET_UNDER_QEMU";

/// True, after printing why, when the suite runs under qemu-user (see [`UNDER_QEMU`]) and the
/// calling test checks something qemu-user does not emulate (`why`); the test then returns.
/// Under qemu-user every other test runs as it does natively.
pub(crate) fn skip_under_qemu(why: &str) -> bool {
    let under_qemu = std::env::var(UNDER_QEMU).is_ok_and(|value| value == "1");
    if under_qemu {
        println!("skipped under qemu-user: {why}");
    }
    under_qemu
}

/// [`skip_under_qemu`] for the tests that read the map count: qemu-user hides its own mappings
/// from `/proc/self/maps`.
pub(crate) fn skip_map_count_under_qemu() -> bool {
    skip_under_qemu(
        "qemu-user hides its own mappings from /proc/self/maps, so the map count that the \
         diagnosis of ENOMEM reads falls short of the kernel's",
    )
}

/// Re-runs this test binary, running only `test_name`, with [`CHILD_ROLE`] set to `role`.
pub(crate) fn child_command(test_name: &str, role: &str) -> Command {
    let mut command = Command::new(std::env::current_exe().expect("test binary path"));
    command
        .args(["--exact", test_name, "--nocapture", "--test-threads=1"])
        .env(CHILD_ROLE, role)
        .env_remove("RUST_BACKTRACE");
    command
}

/// Runs [`child_command`] to completion and returns its output.
pub(crate) fn run_child(test_name: &str, role: &str) -> Output {
    child_command(test_name, role)
        .output()
        .expect("spawn the test binary again")
}

/// Runs [`child_command`] to completion with `name` set to `value` in the child's environment.
pub(crate) fn run_child_with_env(test_name: &str, role: &str, name: &str, value: &str) -> Output {
    child_command(test_name, role)
        .env(name, value)
        .output()
        .expect("spawn the test binary again")
}

/// The signal that ended a child, if one did.
pub(crate) fn terminating_signal(output: &Output) -> Option<i32> {
    use std::os::unix::process::ExitStatusExt;
    output.status.signal()
}

/// Runs `f`, catching a panic.
pub(crate) fn catch<T>(f: impl FnOnce() -> T) -> Result<T, Box<dyn std::any::Any + Send>> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
}

/// The text of a `&str` or `String` panic payload.
pub(crate) fn text(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_string()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        panic!("payload is not text")
    }
}

/// Asserts a child run exited normally and printed `CHILD-OK`; returns its stderr.
pub(crate) fn child_ok(test_name: &str, role: &str) -> String {
    check_child_ok(run_child(test_name, role))
}

/// [`child_ok`] for an output already in hand.
pub(crate) fn check_child_ok(output: Output) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        output.status.success() && stdout.contains("CHILD-OK"),
        "child failed: {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        output.status
    );
    stderr
}

/// The lines the library writes to stderr (panic-hook lines are not counted).
pub(crate) fn library_lines(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|line| line.starts_with("awaitlet:"))
        .collect()
}

/// A future that is pending `times` times (waking itself), then ready with `value`.
pub(crate) struct PendingThen<T> {
    times: usize,
    value: Option<T>,
}

pub(crate) fn pending_then<T>(times: usize, value: T) -> PendingThen<T> {
    PendingThen {
        times,
        value: Some(value),
    }
}

impl<T: Unpin> Future for PendingThen<T> {
    type Output = T;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        if self.times == 0 {
            return Poll::Ready(self.value.take().expect("polled after ready"));
        }
        self.times -= 1;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

/// Polls `future` once with a waker that does nothing.
pub(crate) fn poll_once<F: Future + Unpin>(future: &mut F) -> Poll<F::Output> {
    Pin::new(future).poll(&mut Context::from_waker(Waker::noop()))
}

/// Polls `future` to completion; returns its output and how many polls returned `Pending`.
pub(crate) fn drive<F: Future + Unpin>(mut future: F) -> (F::Output, usize) {
    let mut pending = 0;
    loop {
        match poll_once(&mut future) {
            Poll::Ready(output) => return (output, pending),
            Poll::Pending => pending += 1,
        }
    }
}

/// Runs the child that plays `role` for `test_name`, which must die of `signal` before it
/// prints `CHILD-SURVIVED`; returns its stdout and stderr.
pub(crate) fn child_killed_by(test_name: &str, role: &str, signal: i32) -> (String, String) {
    let output = run_child(test_name, role);
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert_eq!(terminating_signal(&output), Some(signal), "{output:?}");
    assert!(!stdout.contains("CHILD-SURVIVED"), "{stdout}");
    (stdout, String::from_utf8_lossy(&output.stderr).into_owned())
}

/// [`child_killed_by`] `SIGABRT`; returns the child's stderr.
pub(crate) fn child_aborts(test_name: &str, role: &str) -> String {
    child_killed_by(test_name, role, libc::SIGABRT).1
}

/// Runs the child `role` of `test` and checks it died of an overflow of a `kib` KiB stack with
/// a guard page: the one-line report on stderr, then SIGABRT, with nothing after the overflow.
pub(crate) fn child_dies_of_overflow(test: &str, role: &str, kib: usize) {
    let stderr = child_aborts(test, role);
    let expected = format!(
        "awaitlet: a greenlet overflowed its {kib} KiB stack; give it a larger one with \
         Greenlet::builder().stack_size(bytes) or AsyncDef::stack_size(bytes)\n"
    );
    assert!(stderr.contains(&expected), "{stderr}");
}

/// Recurses with 512-byte frames until the stack overflows (for the overflow death tests).
#[inline(never)]
#[allow(unconditional_recursion)] // it ends at the guard page
pub(crate) fn recurse_forever(depth: usize) -> usize {
    let frame = std::hint::black_box([depth as u8; 512]);
    recurse_forever(depth + 1) + frame[depth % 512] as usize
}

/// The child side of an overflow death test: runs a fiber that recurses forever on a stack of
/// `bytes` (from the pool, as the thread's guard-page mode says), and reports if it survives.
pub(crate) fn overflow_a_fiber_stack(bytes: usize) {
    let stack = awaitlet::stack::Stack::new(bytes).unwrap();
    let mut runaway = awaitlet::engine::Fiber::new(stack, |_, depth| recurse_forever(depth));
    let outcome = runaway.resume(0);
    println!("CHILD-SURVIVED {outcome:?}");
}

/// [`child_aborts`], for a child killed by Rust because `message` was a panic in a destructor
/// run during unwinding.
pub(crate) fn child_aborts_on_a_destructor_panic_during_cleanup(
    test_name: &str,
    role: &str,
    message: &str,
) {
    let stderr = child_aborts(test_name, role);
    assert!(stderr.contains(message), "{stderr}");
    assert!(
        stderr.contains("panic in a destructor during cleanup"),
        "{stderr}"
    );
}

/// Panics with its message when dropped.
pub(crate) struct PanicOnDrop(pub(crate) &'static str);

impl Drop for PanicOnDrop {
    fn drop(&mut self) {
        panic!("{}", self.0);
    }
}

/// This process's (mapping count, virtual size in kB), from `/proc/self`.
pub(crate) fn process_memory() -> (usize, usize) {
    let maps = std::fs::read_to_string("/proc/self/maps")
        .unwrap()
        .lines()
        .count();
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let vm_size = status
        .lines()
        .find_map(|line| line.strip_prefix("VmSize:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    (maps, vm_size)
}

/// Asserts that the mapping count and virtual size (from [`process_memory`]) stayed flat: at
/// most 64 more mappings and 64 MiB more address space.
pub(crate) fn assert_memory_flat(before: (usize, usize), after: (usize, usize)) {
    assert!(
        after.0 <= before.0 + 64,
        "mappings grew from {} to {}",
        before.0,
        after.0
    );
    assert!(
        after.1 <= before.1 + 64 * 1024,
        "virtual size grew from {} kB to {} kB",
        before.1,
        after.1
    );
}

/// Rule 43's program (greenlet's `test_dealloc_switch_args_not_lost`): a worker holding `guard`
/// waits for a value from a child of its own (the initiator), then drops every handle to itself
/// and switches the value to its parent, abandoned, so it is killed. Returns the value the
/// running greenlet received, and the initiator.
pub(crate) fn abandoned_sender_switches<G: 'static>(guard: G) -> (i32, awaitlet::Greenlet) {
    use awaitlet::{Greenlet, getcurrent};
    use std::cell::RefCell;
    use std::rc::Rc;
    let worker_slot: Rc<RefCell<Option<Greenlet>>> = Rc::default();
    let initiator_slot: Rc<RefCell<Option<Greenlet>>> = Rc::default();
    let (worker_self, initiator_in) = (Rc::clone(&worker_slot), Rc::clone(&initiator_slot));
    let worker = Greenlet::new(move |()| {
        let _guard = guard;
        let parent = getcurrent().parent().unwrap();
        let value: i32 = parent.switch(()).unwrap();
        // Drop every handle to itself (the slot's, and the initiator's parent link).
        drop(worker_self.borrow_mut().take());
        let initiator = initiator_in.borrow_mut().take().unwrap();
        initiator.set_parent(&parent).unwrap();
        drop(initiator);
        parent.switch::<i32, ()>(value).unwrap();
        unreachable!("an abandoned greenlet is killed, never resumed");
    });
    worker.switch::<(), ()>(()).unwrap();
    *worker_slot.borrow_mut() = Some(worker.clone());
    let initiator = Greenlet::builder()
        .parent(&worker)
        .build(|()| 42i32)
        .unwrap();
    drop(worker);
    *initiator_slot.borrow_mut() = Some(initiator.clone());
    (initiator.switch::<(), i32>(()).unwrap(), initiator)
}

/// The symbol names of a captured backtrace's frames (`std::backtrace::Backtrace`'s text), in
/// order.
pub(crate) fn frame_names(trace: &str) -> Vec<&str> {
    trace
        .lines()
        .filter_map(|line| line.trim_start().split_once(": "))
        .filter(|(index, _)| index.chars().all(|c| c.is_ascii_digit()))
        .map(|(_, name)| name.trim())
        .collect()
}

/// Whether the byte at `address` can be read, asked of the kernel so that a guard page answers
/// `false` instead of faulting: with `process_vm_readv` on this process, which reads through
/// the page tables (and which Valgrind does not check against its own idea of the memory), or,
/// under qemu-user, whose guest addresses are not the host's, with a `write` of the byte into a
/// pipe, which qemu translates and fails with EFAULT.
pub(crate) fn readable(address: usize) -> bool {
    if std::env::var(UNDER_QEMU).is_ok_and(|value| value == "1") {
        let mut pipe = [0 as libc::c_int; 2];
        // SAFETY: `pipe` has room for the two descriptors.
        assert_eq!(unsafe { libc::pipe(pipe.as_mut_ptr()) }, 0, "a pipe");
        // SAFETY: the byte is copied into the pipe or EFAULT is reported, never a fault; the
        // descriptors are closed right after.
        return unsafe {
            let written = libc::write(pipe[1], address as *const libc::c_void, 1);
            libc::close(pipe[0]);
            libc::close(pipe[1]);
            written == 1
        };
    }
    let mut byte = 0u8;
    let local = libc::iovec {
        iov_base: (&mut byte as *mut u8).cast(),
        iov_len: 1,
    };
    let remote = libc::iovec {
        iov_base: address as *mut libc::c_void,
        iov_len: 1,
    };
    // SAFETY: the kernel writes one byte into `byte`; it reads `address` through the page
    // tables, so an inaccessible page is reported as an error, never touched.
    unsafe { libc::process_vm_readv(libc::getpid(), &local, 1, &remote, 1, 0) == 1 }
}

/// Checks that the stack holding `address`, of `size` usable bytes, has a guard page right below
/// its lowest usable byte: going down page by page from `address`, the first page that cannot
/// be read lies less than `size` bytes below it (so right below this stack, not below a
/// neighbour it was carved beside), and it is a guard: a mapping without any access in
/// `/proc/self/maps`, or, inside a read-write mapping, a guard region (`MADV_GUARD_INSTALL`,
/// which `/proc/self/maps` does not show). Returns what was found otherwise; never panics, so
/// it can run on a stack that must not unwind.
pub(crate) fn guard_page_below(address: usize, size: usize) -> Result<(), String> {
    let page = 4096;
    let mut below = address / page * page;
    while readable(below) {
        if address - below >= size {
            return Err(format!(
                "every page from {address:#x} down to {below:#x}, {size} bytes or more, is \
                 readable: no guard page below the stack"
            ));
        }
        below -= page;
    }
    let maps = std::fs::read_to_string("/proc/self/maps").map_err(|error| error.to_string())?;
    // Each line: `start-end perms offset device inode [path]`, addresses in hex.
    let holding = maps.lines().find_map(|line| {
        let mut fields = line.split_whitespace();
        let (start, end) = fields.next()?.split_once('-')?;
        let start = usize::from_str_radix(start, 16).ok()?;
        let end = usize::from_str_radix(end, 16).ok()?;
        (start..end)
            .contains(&below)
            .then(|| fields.next().map(str::to_string))?
    });
    match holding {
        Some(permissions) if permissions.starts_with("---") => Ok(()),
        // Readable by its permissions but not by the kernel: a guard region.
        Some(permissions) if permissions.starts_with("rw") => Ok(()),
        Some(permissions) => Err(format!(
            "the page at {below:#x} is {permissions}, not a guard"
        )),
        None => Err(format!(
            "nothing is mapped at {below:#x}, right below the stack"
        )),
    }
}

/// Memory maps held to bring this process to `vm.max_map_count` (see [`fill_map_count`]);
/// unmapped on drop.
pub(crate) struct MapFiller {
    mappings: Vec<(usize, usize)>,
}

impl Drop for MapFiller {
    fn drop(&mut self) {
        for &(start, len) in &self.mappings {
            // SAFETY: each range is a whole mapping made by `fill_map_count`, used by no one.
            unsafe { libc::munmap(start as *mut libc::c_void, len) };
        }
    }
}

/// Maps `pages` pages that no stack mapping can merge with (read-only), or `None`.
fn map_filler_pages(pages: usize, protection: libc::c_int) -> Option<usize> {
    // SAFETY: an anonymous mapping at an address of the kernel's choosing touches nothing else.
    let start = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            pages * 4096,
            protection,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    (start != libc::MAP_FAILED).then_some(start as usize)
}

/// Takes memory maps until the kernel refuses another one: a large read-only mapping split
/// into one map per page by `mprotect`ing every other page, then single pages of alternating
/// protections (so that no two merge) until `mmap` fails. Costs no memory (nothing is
/// touched); the process's next new map fails with `ENOMEM`, as it would with
/// `vm.max_map_count` reached by real use.
pub(crate) fn fill_map_count() -> MapFiller {
    let limit = max_map_count();
    let count = std::fs::read_to_string("/proc/self/maps")
        .unwrap()
        .lines()
        .count();
    let pages = (limit - count.min(limit)) + 2;
    let start = map_filler_pages(pages, libc::PROT_READ).expect("a filler mapping");
    let mut filler = MapFiller {
        mappings: vec![(start, pages * 4096)],
    };
    for page in (1..pages).step_by(2) {
        let address = (start + page * 4096) as *mut libc::c_void;
        // SAFETY: the page lies inside the filler mapping, which nothing else uses.
        if unsafe { libc::mprotect(address, 4096, libc::PROT_NONE) } != 0 {
            break;
        }
    }
    for round in 0.. {
        assert!(round < 10_000, "mmap never refused a map");
        let protection = if round % 2 == 0 {
            libc::PROT_NONE
        } else {
            libc::PROT_READ
        };
        match map_filler_pages(1, protection) {
            Some(start) => filler.mappings.push((start, 4096)),
            None => break,
        }
    }
    filler
}

/// `vm.max_map_count`, the kernel's limit on a process's memory maps.
pub(crate) fn max_map_count() -> usize {
    std::fs::read_to_string("/proc/sys/vm/max_map_count")
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// Runs [`child_command`] with `environment` added, killing it and failing if it runs longer
/// than `limit`: a child that hangs is a failure, not a stuck test run.
pub(crate) fn run_child_within(
    test_name: &str,
    role: &str,
    environment: &[(&str, &str)],
    limit: std::time::Duration,
) -> Output {
    let mut command = child_command(test_name, role);
    command.envs(environment.iter().copied());
    let mut child = command
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn the test binary again");
    let started = std::time::Instant::now();
    while child.try_wait().expect("wait for the child").is_none() {
        if started.elapsed() > limit {
            child.kill().expect("kill the child");
            let output = child
                .wait_with_output()
                .expect("collect the child's output");
            panic!("the child `{role}` ran longer than {limit:?}: {output:?}");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child
        .wait_with_output()
        .expect("collect the child's output")
}

/// Whether this kernel has guard regions (`MADV_GUARD_INSTALL`, Linux 6.13+), tried on a
/// scratch mapping the way the library probes for them.
pub(crate) fn kernel_has_guard_regions() -> bool {
    // SAFETY: a fresh anonymous mapping, advised and unmapped here; nothing else uses it.
    unsafe {
        let scratch = libc::mmap(
            std::ptr::null_mut(),
            8192,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        assert_ne!(scratch, libc::MAP_FAILED);
        let result = libc::madvise(scratch, 4096, 102);
        // A layer that ignores the advice (qemu-user) answers 0 too: the library counts a
        // guard region only once the page cannot be read, and so does this.
        let guarded = result == 0 && !readable(scratch as usize);
        libc::munmap(scratch, 8192);
        guarded
    }
}
