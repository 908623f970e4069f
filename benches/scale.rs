//! What one wait costs when many tasks wait at once.
//!
//! The `bridge` benchmark times one function waiting alone, where its stack, its record and
//! the executor's task all stay in the first-level cache. A server holds thousands of
//! functions suspended at once, and each wait then resumes a stack that has not been touched
//! since every other task had its turn: what dominates is no longer the switch's instructions
//! but the cache and TLB misses of bringing that stack back. This benchmark measures that, at
//! 1 to 100,000 concurrent tasks, beside the same work done natively and on two other stackful
//! bridges, all in one run so that their ratios mean something on a shared machine.
//!
//! # The workload
//!
//! A current-thread tokio runtime and one `LocalSet`; every task is started with
//! `spawn_local`. Each task waits `total / tasks` times on `tokio::task::yield_now()`, which
//! wakes the task at once and puts it at the back of the run queue, so every wait is a full
//! trip round the queue: with N tasks, N - 1 other stacks run between a task's two turns.
//! The figure is nanoseconds per wait: the timed window divided by the number of waits in it.
//!
//! The window opens when the last task starts (every stack has been made and entered once) and
//! closes when the last task's last wait returns, so that making and freeing tasks and stacks,
//! which the `bridge` benchmark prices separately, stays out of it. The first wait of every
//! task but the last falls before the window; to keep `total` waits inside it, a task that
//! finishes before the last one waits once more before it returns (inside the window) and its
//! teardown comes after the last one's. So the window holds `total` waits and no teardown.
//!
//! Two workloads:
//!
//! - `shallow`: the task's function calls the wait directly, in its loop.
//! - `deep`: every wait is made five calls down, through five `#[inline(never)]` functions that
//!   each keep an eight-word array live across the call below them (about what a parser or a
//!   protocol layer keeps between its caller and the socket). The native counterpart is five
//!   nested `async fn`s keeping the same arrays across their `.await`s, which puts them in the
//!   task's state machine.
//!
//! # The variants
//!
//! - `native`: an `async` block awaiting `yield_now()`: no second stack, the reference.
//! - `awaitlet`: `async_def` around the loop, `awaitlet(yield_now())` for each wait.
//! - `corosensei`: the smallest bridge that can be built on `corosensei`, written below
//!   ([`CorosenseiBridge`]): one `Coroutine` per task on a 1 MiB `DefaultStack`. The future's
//!   `poll` hands the coroutine its `Context` pointer as the resume argument; the waiting
//!   function polls the awaited future with it, and on `Pending` suspends back to `poll` (which
//!   returns `Pending`), taking the next poll's `Context` pointer from the suspension. No waker
//!   wrapping, no allocation per wait: awaitlet's design without its checks, greenlet tree,
//!   cancellation or stack pool, so it shows what those cost at scale.
//! - `stackful`: `stackful::stackful` around the loop, `stackful::wait` for each wait.
//!
//! # Stack modes and the kernel's map limit
//!
//! Every stack with a guard page costs two kernel memory maps, and Linux allows a process
//! `vm.max_map_count` of them (65,530 by default), so 100,000 guarded stacks cannot exist at
//! once. awaitlet then runs in its dense mode (`awaitlet::stack::set_guard_pages(false)`:
//! stacks carved 64 to a mapping, no guard page); the table says which mode each row used.
//! `corosensei` and `stackful` have no such mode; a row where they would run out of maps prints
//! `n/a (maps)` instead of failing half way.
//!
//! # Settings
//!
//! Environment variables, so that a quick run or a run under Valgrind is possible:
//!
//! - `AWAITLET_SCALE_WAITS`: total waits per measurement (default 1,000,000);
//! - `AWAITLET_SCALE_REPEATS`: measurements per cell, the table shows their median (default 3);
//! - `AWAITLET_SCALE_TASKS`: comma-separated task counts (default `1,100,1000,10000,100000`);
//! - `AWAITLET_SCALE_VARIANTS`: comma-separated variants (default all four);
//! - `AWAITLET_SCALE_WORKLOADS`: `shallow`, `deep` or both (default both);
//! - `AWAITLET_SCALE_CSV`: where every measurement goes as CSV (default `target/scale.csv`;
//!   empty: none). `examples/scale_chart.rs` draws `docs/scale.svg` from it.
//!
//! ```sh
//! cargo bench --bench scale
//! AWAITLET_SCALE_WAITS=100000 AWAITLET_SCALE_REPEATS=1 cargo bench --bench scale
//! ```
//!
//! Run without `--bench`, as `cargo test --benches` runs it, the binary only checks that every
//! variant runs (1,000 waits at 1 and 100 tasks) and ignores the settings but the lists.

use std::cell::Cell;
use std::fmt::Write as _;
use std::future::Future;
use std::hint::black_box;
use std::pin::{Pin, pin};
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use awaitlet::{async_def, awaitlet};
use corosensei::stack::DefaultStack;
use corosensei::{Coroutine, CoroutineResult, Yielder};
use tokio::task::{LocalSet, yield_now};

/// Stack size of the `awaitlet` and `corosensei` variants; `stackful`'s is fixed (2 MiB).
const STACK_SIZE: usize = 1024 * 1024;

/// Kernel maps a stack with a guard page takes: its mapping, split in two by the guard.
const MAPS_PER_GUARDED_STACK: usize = 2;

/// Maps left free for everything else the process maps while a row runs.
const MAP_MARGIN: usize = 1024;

/// Words of the array each frame of the deep workload keeps live across its call.
const FRAME_WORDS: usize = 8;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Workload {
    Shallow,
    Deep,
}

impl Workload {
    const ALL: [Workload; 2] = [Workload::Shallow, Workload::Deep];

    fn name(self) -> &'static str {
        match self {
            Workload::Shallow => "shallow",
            Workload::Deep => "deep",
        }
    }

    fn description(self) -> &'static str {
        match self {
            Workload::Shallow => "the wait called directly from the task's loop",
            Workload::Deep => {
                "the wait made five frames down, each frame keeping an 8-word array live"
            }
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Variant {
    Native,
    Awaitlet,
    Corosensei,
    Stackful,
}

impl Variant {
    const ALL: [Variant; 4] = [
        Variant::Native,
        Variant::Awaitlet,
        Variant::Corosensei,
        Variant::Stackful,
    ];

    fn name(self) -> &'static str {
        match self {
            Variant::Native => "native",
            Variant::Awaitlet => "awaitlet",
            Variant::Corosensei => "corosensei",
            Variant::Stackful => "stackful",
        }
    }
}

/// How a variant's stacks are made for one row.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum StackMode {
    /// No second stack (native async).
    None,
    /// One mapping per stack with a guard page below it.
    Guarded,
    /// awaitlet's dense stacks: 64 to a mapping, no guard page.
    Dense,
    /// Guarded stacks would not fit under `vm.max_map_count`: the row is not run.
    OutOfMaps,
}

impl StackMode {
    fn label(self) -> &'static str {
        match self {
            StackMode::None => "none",
            StackMode::Guarded => "guarded",
            StackMode::Dense => "dense",
            StackMode::OutOfMaps => "n/a (maps)",
        }
    }
}

/// What every task of one measurement shares: when the window opens and closes.
struct Progress {
    tasks: usize,
    started: Cell<usize>,
    finished: Cell<usize>,
    start: Cell<Option<Instant>>,
    end: Cell<Option<Instant>>,
}

impl Progress {
    fn new(tasks: usize) -> Progress {
        Progress {
            tasks,
            started: Cell::new(0),
            finished: Cell::new(0),
            start: Cell::new(None),
            end: Cell::new(None),
        }
    }

    /// A task starts; the last one to start opens the window.
    fn enter(&self) {
        self.started.set(self.started.get() + 1);
        if self.started.get() == self.tasks {
            self.start.set(Some(Instant::now()));
        }
    }

    /// A task has made its last wait; the last one closes the window. Returns whether the
    /// caller must wait once more (it was not the last: see the module docs).
    fn leave(&self) -> bool {
        self.finished.set(self.finished.get() + 1);
        if self.finished.get() == self.tasks {
            self.end.set(Some(Instant::now()));
            false
        } else {
            true
        }
    }

    fn elapsed(&self) -> Option<Duration> {
        Some(self.end.get()? - self.start.get()?)
    }
}

/// One task of a stackful variant: `waits` calls of `wait`, directly or five frames down.
fn run_task<W: FnMut()>(progress: &Progress, waits: usize, workload: Workload, mut wait: W) {
    progress.enter();
    match workload {
        Workload::Shallow => {
            for _ in 0..waits {
                wait();
            }
        }
        Workload::Deep => {
            for round in 0..waits {
                black_box(frame_1(&mut wait, round as u64));
            }
        }
    }
    if progress.leave() {
        wait();
    }
}

// The deep workload's five frames. Each keeps its array live across the call below (it is
// read after the call returns), so every frame holds it in its stack frame.

#[inline(never)]
fn frame_1<W: FnMut()>(wait: &mut W, seed: u64) -> u64 {
    let locals = black_box([seed; FRAME_WORDS]);
    let below = frame_2(wait, locals[0].wrapping_add(1));
    below.wrapping_add(black_box(&locals)[FRAME_WORDS - 1])
}

#[inline(never)]
fn frame_2<W: FnMut()>(wait: &mut W, seed: u64) -> u64 {
    let locals = black_box([seed; FRAME_WORDS]);
    let below = frame_3(wait, locals[0].wrapping_add(1));
    below.wrapping_add(black_box(&locals)[FRAME_WORDS - 1])
}

#[inline(never)]
fn frame_3<W: FnMut()>(wait: &mut W, seed: u64) -> u64 {
    let locals = black_box([seed; FRAME_WORDS]);
    let below = frame_4(wait, locals[0].wrapping_add(1));
    below.wrapping_add(black_box(&locals)[FRAME_WORDS - 1])
}

#[inline(never)]
fn frame_4<W: FnMut()>(wait: &mut W, seed: u64) -> u64 {
    let locals = black_box([seed; FRAME_WORDS]);
    let below = frame_5(wait, locals[0].wrapping_add(1));
    below.wrapping_add(black_box(&locals)[FRAME_WORDS - 1])
}

#[inline(never)]
fn frame_5<W: FnMut()>(wait: &mut W, seed: u64) -> u64 {
    let locals = black_box([seed; FRAME_WORDS]);
    wait();
    black_box(&locals)[FRAME_WORDS - 1]
}

// The native counterpart of the five frames: each array lives across an `.await`, so it is
// kept in the task's state machine.

async fn native_frame_1(seed: u64) -> u64 {
    let locals = black_box([seed; FRAME_WORDS]);
    let below = native_frame_2(locals[0].wrapping_add(1)).await;
    below.wrapping_add(black_box(&locals)[FRAME_WORDS - 1])
}

async fn native_frame_2(seed: u64) -> u64 {
    let locals = black_box([seed; FRAME_WORDS]);
    let below = native_frame_3(locals[0].wrapping_add(1)).await;
    below.wrapping_add(black_box(&locals)[FRAME_WORDS - 1])
}

async fn native_frame_3(seed: u64) -> u64 {
    let locals = black_box([seed; FRAME_WORDS]);
    let below = native_frame_4(locals[0].wrapping_add(1)).await;
    below.wrapping_add(black_box(&locals)[FRAME_WORDS - 1])
}

async fn native_frame_4(seed: u64) -> u64 {
    let locals = black_box([seed; FRAME_WORDS]);
    let below = native_frame_5(locals[0].wrapping_add(1)).await;
    below.wrapping_add(black_box(&locals)[FRAME_WORDS - 1])
}

async fn native_frame_5(seed: u64) -> u64 {
    let locals = black_box([seed; FRAME_WORDS]);
    yield_now().await;
    black_box(&locals)[FRAME_WORDS - 1]
}

/// One task of the `native` variant: [`run_task`] written with `async`/`.await`.
async fn native_task(progress: Rc<Progress>, waits: usize, workload: Workload) {
    progress.enter();
    match workload {
        Workload::Shallow => {
            for _ in 0..waits {
                yield_now().await;
            }
        }
        Workload::Deep => {
            for round in 0..waits {
                black_box(native_frame_1(round as u64).await);
            }
        }
    }
    if progress.leave() {
        yield_now().await;
    }
}

/// The `Context` pointer a [`CorosenseiBridge`] passes into its coroutine on every resume.
/// `'static` only because corosensei's resume argument must be; it is valid for the one poll
/// that passed it, which lasts as long as the coroutine runs before it suspends again.
type ContextPointer = *mut Context<'static>;

/// A minimal future-from-a-function bridge on `corosensei`: see the module docs.
struct CorosenseiBridge<R> {
    coroutine: Coroutine<ContextPointer, (), R, DefaultStack>,
}

impl<R: 'static> CorosenseiBridge<R> {
    fn new<F>(stack: DefaultStack, function: F) -> CorosenseiBridge<R>
    where
        F: FnOnce(&mut CorosenseiWaiter<'_>) -> R + 'static,
    {
        CorosenseiBridge {
            coroutine: Coroutine::with_stack(stack, move |yielder, context| {
                function(&mut CorosenseiWaiter { yielder, context })
            }),
        }
    }
}

impl<R> Future for CorosenseiBridge<R> {
    type Output = R;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<R> {
        let context = cx as *mut Context<'_> as ContextPointer;
        match self.coroutine.resume(context) {
            CoroutineResult::Yield(()) => Poll::Pending,
            CoroutineResult::Return(output) => Poll::Ready(output),
        }
    }
}

/// What the function inside a [`CorosenseiBridge`] waits with.
struct CorosenseiWaiter<'a> {
    yielder: &'a Yielder<ContextPointer, ()>,
    /// The `Context` of the poll the coroutine is running in.
    context: ContextPointer,
}

impl CorosenseiWaiter<'_> {
    fn wait<F: Future>(&mut self, future: F) -> F::Output {
        let mut future = pin!(future);
        loop {
            // SAFETY: `self.context` came from the poll that resumed the coroutine, at its
            // start or out of the last `suspend`, and that poll is still running (it waits in
            // `resume` until this function suspends), so the `Context` it points to is alive
            // and nothing else uses it meanwhile.
            let cx = unsafe { &mut *self.context };
            match future.as_mut().poll(cx) {
                Poll::Ready(output) => return output,
                Poll::Pending => self.context = self.yielder.suspend(()),
            }
        }
    }
}

/// The kernel's limit on this process's maps, if it can be read.
fn max_map_count() -> Option<usize> {
    std::fs::read_to_string("/proc/sys/vm/max_map_count")
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// How many maps this process has now, if it can be read.
fn maps_in_use() -> Option<usize> {
    Some(
        std::fs::read_to_string("/proc/self/maps")
            .ok()?
            .lines()
            .count(),
    )
}

/// Whether `stacks` more guarded stacks fit under the map limit (yes when it cannot be read).
fn guarded_stacks_fit(stacks: usize) -> bool {
    match (max_map_count(), maps_in_use()) {
        (Some(limit), Some(in_use)) => {
            in_use + stacks * MAPS_PER_GUARDED_STACK + MAP_MARGIN <= limit
        }
        _ => true,
    }
}

fn stack_mode(variant: Variant, tasks: usize) -> StackMode {
    match variant {
        Variant::Native => StackMode::None,
        _ if guarded_stacks_fit(tasks) => StackMode::Guarded,
        Variant::Awaitlet => StackMode::Dense,
        Variant::Corosensei | Variant::Stackful => StackMode::OutOfMaps,
    }
}

/// Runs one measurement and returns the nanoseconds per wait.
fn measure(
    variant: Variant,
    mode: StackMode,
    workload: Workload,
    tasks: usize,
    total_waits: usize,
) -> f64 {
    let waits = (total_waits / tasks).max(1);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a tokio runtime");
    let local = LocalSet::new();
    let progress = Rc::new(Progress::new(tasks));

    let dense = mode == StackMode::Dense;
    if dense {
        // SAFETY: the only stacks this thread makes while guard pages are off are the ones the
        // `async_def`s below run on, and each runs `run_task`: a fixed, shallow call chain
        // (the loop, five small frames in the deep workload, `awaitlet` and tokio's
        // `yield_now` poll) of a few KiB, no recursion, no large locals and no panic expected,
        // far below the 1 MiB stack less `CANARY_BYTES`.
        unsafe { awaitlet::stack::set_guard_pages(false) };
    }
    for _ in 0..tasks {
        let progress = Rc::clone(&progress);
        match variant {
            Variant::Native => {
                local.spawn_local(native_task(progress, waits, workload));
            }
            Variant::Awaitlet => {
                local.spawn_local(async_def(move || {
                    run_task(&progress, waits, workload, || awaitlet(yield_now()))
                }));
            }
            Variant::Corosensei => {
                let stack = DefaultStack::new(STACK_SIZE).expect("a corosensei stack");
                local.spawn_local(CorosenseiBridge::new(stack, move |waiter| {
                    run_task(&progress, waits, workload, || waiter.wait(yield_now()))
                }));
            }
            Variant::Stackful => {
                local.spawn_local(stackful::stackful(move || {
                    run_task(&progress, waits, workload, || stackful::wait(yield_now()))
                }));
            }
        }
    }
    runtime.block_on(local);
    if dense {
        // SAFETY: turning guard pages back on has no requirement.
        unsafe { awaitlet::stack::set_guard_pages(true) };
    }

    let elapsed = progress.elapsed().unwrap_or_else(|| {
        panic!(
            "{} {} at {tasks} tasks: {} of {tasks} tasks finished (did one panic?)",
            variant.name(),
            workload.name(),
            progress.finished.get()
        )
    });
    elapsed.as_nanos() as f64 / (waits * tasks) as f64
}

/// One cell of a table: every measurement of one variant at one task count.
struct Measurements {
    variant: Variant,
    mode: StackMode,
    nanoseconds: Vec<f64>,
}

impl Measurements {
    fn median(&self) -> Option<f64> {
        let mut values = self.nanoseconds.clone();
        values.sort_by(f64::total_cmp);
        let middle = values.len() / 2;
        match values.len() {
            0 => None,
            length if length % 2 == 1 => Some(values[middle]),
            _ => Some((values[middle - 1] + values[middle]) / 2.0),
        }
    }
}

fn env_usize(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(text) => text
            .replace(['_', ','], "")
            .parse()
            .unwrap_or_else(|_| panic!("{name}={text}: not a number")),
        Err(_) => default,
    }
}

fn env_list<T: Copy>(name: &str, all: &[T], parse: impl Fn(&str) -> Option<T>) -> Vec<T> {
    match std::env::var(name) {
        Ok(text) if !text.trim().is_empty() => text
            .split(',')
            .map(|item| {
                parse(item.trim()).unwrap_or_else(|| panic!("{name}: unknown item {item:?}"))
            })
            .collect(),
        _ => all.to_vec(),
    }
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_else(|_| "unknown".to_owned())
}

fn main() {
    // `cargo bench` passes `--bench` (and perhaps a filter, which this harness ignores). Run
    // without it, as `cargo test --benches` does, the benchmark only checks that every variant
    // runs: a few waits at two task counts, nothing written.
    let smoke_test = !std::env::args().any(|argument| argument == "--bench");
    if smoke_test {
        println!("scale: not run by `cargo bench`: a smoke test of every variant");
    }
    let total_waits = if smoke_test {
        1_000
    } else {
        env_usize("AWAITLET_SCALE_WAITS", 1_000_000)
    };
    let repeats = if smoke_test {
        1
    } else {
        env_usize("AWAITLET_SCALE_REPEATS", 3).max(1)
    };
    let task_counts = env_list(
        "AWAITLET_SCALE_TASKS",
        if smoke_test {
            &[1, 100]
        } else {
            &[1, 100, 1_000, 10_000, 100_000]
        },
        |item| {
            item.replace('_', "")
                .parse()
                .ok()
                .filter(|&count| count > 0)
        },
    );
    let variants = env_list("AWAITLET_SCALE_VARIANTS", &Variant::ALL, |item| {
        Variant::ALL
            .into_iter()
            .find(|variant| variant.name() == item)
    });
    let workloads = env_list("AWAITLET_SCALE_WORKLOADS", &Workload::ALL, |item| {
        Workload::ALL
            .into_iter()
            .find(|workload| workload.name() == item)
    });
    let csv_path = match std::env::var("AWAITLET_SCALE_CSV") {
        _ if smoke_test => String::new(),
        Ok(path) => path,
        Err(_) => "target/scale.csv".to_owned(),
    };

    println!(
        "scale: ns per wait on tokio::task::yield_now(), current-thread runtime, one LocalSet, \
         {total_waits} waits per measurement, median of {repeats}"
    );
    println!(
        "backend {}, vm.max_map_count {}, load average at start {}",
        awaitlet::BACKEND,
        max_map_count().map_or("unknown".to_owned(), |limit| limit.to_string()),
        load_average()
    );

    let mut csv = String::from("workload,tasks,variant,stacks,run,ns_per_wait\n");
    for &workload in &workloads {
        let mut rows = Vec::new();
        for &tasks in &task_counts {
            let mut cells: Vec<Measurements> = variants
                .iter()
                .map(|&variant| Measurements {
                    variant,
                    mode: stack_mode(variant, tasks),
                    nanoseconds: Vec::new(),
                })
                .collect();
            // The variants take turns within each repeat, so that all see the machine alike.
            for run in 1..=repeats {
                for cell in &mut cells {
                    if cell.mode == StackMode::OutOfMaps {
                        continue;
                    }
                    let nanoseconds =
                        measure(cell.variant, cell.mode, workload, tasks, total_waits);
                    cell.nanoseconds.push(nanoseconds);
                    writeln!(
                        csv,
                        "{},{tasks},{},{},{run},{nanoseconds:.2}",
                        workload.name(),
                        cell.variant.name(),
                        cell.mode.label()
                    )
                    .unwrap();
                }
            }
            rows.push((tasks, cells));
        }
        print_table(workload, &variants, &rows);
    }
    println!();
    println!("load average at end {}", load_average());

    if !csv_path.is_empty() {
        match std::fs::write(&csv_path, csv) {
            Ok(()) => println!("every measurement: {csv_path}"),
            Err(error) => eprintln!("could not write {csv_path}: {error}"),
        }
    }
}

fn print_table(workload: Workload, variants: &[Variant], rows: &[(usize, Vec<Measurements>)]) {
    println!();
    println!(
        "{} workload ({}), ns per wait:",
        workload.name(),
        workload.description()
    );
    let others: Vec<Variant> = variants
        .iter()
        .copied()
        .filter(|&variant| variant != Variant::Native)
        .collect();
    let has_native = others.len() < variants.len();
    let mut header = String::from("| tasks |");
    let mut rule = String::from("|---:|");
    for variant in variants {
        write!(header, " {} |", variant.name()).unwrap();
        rule.push_str("---:|");
    }
    if has_native {
        for variant in &others {
            write!(header, " {} / native |", variant.name()).unwrap();
            rule.push_str("---:|");
        }
    }
    if variants.contains(&Variant::Awaitlet) {
        header.push_str(" awaitlet stacks |");
        rule.push_str("---|");
    }
    println!("{header}");
    println!("{rule}");

    for (tasks, cells) in rows {
        let mut line = format!("| {tasks} |");
        for cell in cells {
            match cell.median() {
                Some(value) => write!(line, " {value:.1} |").unwrap(),
                None => write!(line, " {} |", cell.mode.label()).unwrap(),
            }
        }
        let native = cells
            .iter()
            .find(|cell| cell.variant == Variant::Native)
            .and_then(Measurements::median);
        if has_native {
            for cell in cells.iter().filter(|cell| cell.variant != Variant::Native) {
                match (cell.median(), native) {
                    (Some(value), Some(native)) => {
                        write!(line, " {:.2} |", value / native).unwrap()
                    }
                    _ => line.push_str(" n/a |"),
                }
            }
        }
        if let Some(cell) = cells.iter().find(|cell| cell.variant == Variant::Awaitlet) {
            write!(line, " {} |", cell.mode.label()).unwrap();
        }
        println!("{line}");
    }
}
