//! Resident memory of suspended greenlets, and the memory maps and address space they take.
//!
//! Suspends N `async_def`s at once (default 100,000) on one thread, twice: once waiting a few
//! shallow frames deep, once waiting below frames that take several KiB more. Each time it
//! reads `/proc/self/status` before and after and prints, per suspended greenlet, the resident
//! memory (`VmRSS`), the page tables (`VmPTE`, not part of `VmRSS`) and the address space
//! (`VmSize`), beside how deep the function's own frames went (from its first local to a local
//! at the wait), and the memory maps of the process (lines of `/proc/self/maps`) while they
//! are all suspended. What is resident beyond the frames is the greenlet's fixed cost: its
//! record and closure at the top of the stack, the frames that enter it and switch away, and
//! the rounding up to whole pages.
//!
//! By default the stacks are made as a program that sets nothing gets them: the thread's
//! default size, each with a guard page. `noguard` makes them without guard pages (the
//! unsafe `set_guard_pages(false)`, carved with canaries).
//!
//! ```text
//! cargo run --release --example resident_memory [count] [stack KiB|default] [guard|noguard]
//! ```

use std::cell::Cell;
use std::future::Future;
use std::hint::black_box;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use awaitlet::stack::{default_stack_size, set_guard_pages, trim_pool};
use awaitlet::{AsyncDef, async_def, awaitlet};

/// Pending until its gate opens.
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

/// Recurses `levels` frames of about a KiB each, then waits; returns the address of a local of
/// the deepest frame.
#[inline(never)]
fn wait_below(gate: &Rc<Cell<bool>>, levels: usize) -> usize {
    let frame = black_box([levels as u8; 1024]);
    if levels == 0 {
        let here = black_box(&frame as *const _ as usize);
        awaitlet(Gate(gate.clone()));
        return here + frame[0] as usize;
    }
    wait_below(gate, levels - 1) + frame[levels % 1024] as usize
}

/// The bytes of `field` (`VmRSS`, `VmPTE`, `VmSize`) in `/proc/self/status`.
fn status_bytes(field: &str) -> usize {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let line = status
        .lines()
        .find(|line| {
            line.strip_prefix(field)
                .is_some_and(|rest| rest.starts_with(':'))
        })
        .unwrap_or_else(|| panic!("a {field} line"));
    let kib: usize = line
        .split_whitespace()
        .nth(1)
        .and_then(|field| field.parse().ok())
        .expect("a size in kB");
    kib * 1024
}

/// Resident memory, page tables and address space, in bytes.
fn memory() -> [usize; 3] {
    ["VmRSS", "VmPTE", "VmSize"].map(status_bytes)
}

/// The process's memory maps: the lines of `/proc/self/maps`.
fn maps() -> usize {
    std::fs::read_to_string("/proc/self/maps")
        .expect("/proc/self/maps")
        .lines()
        .count()
}

/// What suspending the greenlets cost, per greenlet: resident bytes, page-table bytes,
/// address space; the depth of the function's own frames; the maps while all were suspended.
struct Cost {
    resident: usize,
    page_tables: usize,
    address_space: usize,
    depth: usize,
    maps: usize,
}

/// Suspends `count` greenlets that wait `levels` KiB-sized frames deep, on stacks of
/// `stack_size` bytes (the thread's default when `None`).
fn measure(count: usize, stack_size: Option<usize>, levels: usize) -> Cost {
    let gate = Rc::new(Cell::new(false));
    let depth = Rc::new(Cell::new(0usize));
    let mut cx = Context::from_waker(Waker::noop());
    // Allocated and touched before the first reading, so that it does not count.
    let mut futures: Vec<Option<AsyncDef<'_, usize>>> = (0..count).map(|_| None).collect();
    let before = memory();
    for slot in &mut futures {
        let (gate, depth) = (&gate, &depth);
        let future = async_def(move || {
            let entry = black_box(0u8);
            let entry_address = &entry as *const u8 as usize;
            let deepest = wait_below(gate, levels);
            depth.set(entry_address - deepest);
            deepest
        });
        let mut future = match stack_size {
            Some(size) => future.stack_size(size),
            None => future,
        };
        assert!(Pin::new(&mut future).poll(&mut cx).is_pending());
        *slot = Some(future);
    }
    let after = memory();
    let maps = maps();
    gate.set(true);
    for future in futures.iter_mut().flatten() {
        assert!(Pin::new(future).poll(&mut cx).is_ready());
    }
    drop(futures);
    trim_pool();
    let per_greenlet = |index: usize| after[index].saturating_sub(before[index]) / count;
    Cost {
        resident: per_greenlet(0),
        page_tables: per_greenlet(1),
        address_space: per_greenlet(2),
        depth: depth.get(),
        maps,
    }
}

fn main() {
    let mut arguments = std::env::args().skip(1);
    let count: usize = arguments
        .next()
        .map_or(100_000, |n| n.parse().expect("a count"));
    let stack_size: Option<usize> = arguments.next().and_then(|kib| match kib.as_str() {
        "default" => None,
        kib => Some(kib.parse::<usize>().expect("a stack size in KiB") * 1024),
    });
    let guard_pages = arguments.next().is_none_or(|mode| mode != "noguard");
    if !guard_pages {
        // SAFETY: the functions use about 10 KiB of stack (eight frames of a KiB, then the
        // wait) on stacks of at least 64 KiB (`AsyncDef::stack_size` refuses less), and neither
        // panic nor take signals there.
        unsafe { set_guard_pages(false) };
    }
    let size = stack_size.unwrap_or_else(default_stack_size);
    println!(
        "{count} greenlets suspended at once on {} KiB stacks, {}; {} maps before",
        size / 1024,
        if guard_pages {
            "each with a guard page"
        } else {
            "without guard pages"
        },
        maps(),
    );
    for (label, levels) in [("shallow", 0), ("deep", 8)] {
        let cost = measure(count, stack_size, levels);
        println!(
            "{label:>7}: {:>6.2} KiB resident per greenlet (its own frames {:>5.2} KiB deep, \
             {:>5.2} KiB beyond them); page tables {:>5.2} KiB; address space {:>7.1} KiB; \
             {} maps while suspended",
            cost.resident as f64 / 1024.0,
            cost.depth as f64 / 1024.0,
            cost.resident.saturating_sub(cost.depth) as f64 / 1024.0,
            cost.page_tables as f64 / 1024.0,
            cost.address_space as f64 / 1024.0,
            cost.maps,
        );
    }
}
