//! Many threads at once, each with its own greenlet trees (ping-pong through nested greenlets,
//! throws, kills) and its own bridges (`async_def` on a current-thread tokio runtime or on a
//! `futures` `LocalPool`, and polled by hand from a greenlet), running a fixed number of
//! operations picked by a per-thread seed, then exiting with greenlets and `AsyncDef`s still
//! suspended in locals and in a thread-local.
//!
//! Checked: every thread's result is the one its seed predicts (a model computes it without
//! greenlets, so any cross-thread interference shows); every destructor on a suspended stack
//! runs exactly once when its thread exits, each parked greenlet seeing the "vanished"
//! `GreenletExit` and each parked function seeing `Cancelled`; and, in a child process alone,
//! that threads leaving suspended stacks behind leak no mappings.

mod common;

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::future::{Future, poll_fn};
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::task::{Context, Poll, Waker};
use std::thread;

use awaitlet::{AsyncDef, Cancelled, Greenlet, GreenletExit, async_def, awaitlet, getcurrent};
use common::{assert_memory_flat, is_child, process_memory, run_child_with_env};
use futures::task::LocalSpawnExt;

const THREADS: u64 = 8;

/// Operations per thread before it parks its suspended greenlets and futures and exits.
const OPERATIONS: u64 = 300;

const VANISHED: &str = "Killing the greenlet because all references have vanished.";

/// SplitMix64: a small seedable generator.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }
}

/// The seed of thread `id`.
fn thread_seed(id: u64) -> u64 {
    0x7415_EAD5_0000_0000 ^ id.wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// The arithmetic every operation folds its values with.
fn step(x: u64, k: u64) -> u64 {
    x.wrapping_mul(31).wrapping_add(k)
}

/// Counters shared by all the threads of one test.
#[derive(Default)]
struct Tally {
    guards_made: AtomicUsize,
    guards_dropped: AtomicUsize,
    /// Parked functions that saw `Cancelled` when their thread exited.
    cancelled_seen: AtomicUsize,
    /// Parked greenlets that saw the "vanished" `GreenletExit` when their thread exited.
    exits_seen: AtomicUsize,
}

impl Tally {
    fn load(counter: &AtomicUsize) -> usize {
        counter.load(Ordering::SeqCst)
    }
}

thread_local! {
    /// Guards alive on this thread (made minus dropped).
    static LIVE_GUARDS: Cell<i64> = const { Cell::new(0) };
    /// Greenlets, futures and channel ends left here when the thread exits.
    static PARKED: RefCell<Vec<Box<dyn Any>>> = const { RefCell::new(Vec::new()) };
}

fn live_guards() -> i64 {
    LIVE_GUARDS.with(Cell::get)
}

/// Counts its construction and its drop, globally and for its thread.
struct Guard(Arc<Tally>);

impl Guard {
    fn new(tally: &Arc<Tally>) -> Guard {
        tally.guards_made.fetch_add(1, Ordering::SeqCst);
        LIVE_GUARDS.with(|live| live.set(live.get() + 1));
        Guard(Arc::clone(tally))
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.0.guards_dropped.fetch_add(1, Ordering::SeqCst);
        // At thread exit this thread-local may be gone already; the global count still counts.
        let _ = LIVE_GUARDS.try_with(|live| live.set(live.get() - 1));
    }
}

/// A future that is pending `times` times (waking itself), then ready with `value`.
struct PendingThen {
    times: u32,
    value: u64,
}

impl Future for PendingThen {
    type Output = u64;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<u64> {
        if self.times == 0 {
            return Poll::Ready(self.value);
        }
        self.times -= 1;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

/// A boxed future of this thread.
type LocalFuture<T> = Pin<Box<dyn Future<Output = T>>>;

/// This thread's executor.
enum Executor {
    Tokio(tokio::runtime::Runtime),
    Pool(
        RefCell<futures::executor::LocalPool>,
        futures::executor::LocalSpawner,
    ),
}

impl Executor {
    fn new(tokio: bool) -> Executor {
        if tokio {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .expect("a tokio runtime");
            Executor::Tokio(runtime)
        } else {
            let pool = futures::executor::LocalPool::new();
            let spawner = pool.spawner();
            Executor::Pool(RefCell::new(pool), spawner)
        }
    }

    fn block_on<F: Future>(&self, future: F) -> F::Output {
        match self {
            Executor::Tokio(runtime) => runtime.block_on(future),
            Executor::Pool(pool, _) => pool.borrow_mut().run_until(future),
        }
    }

    /// A future that becomes ready with `value` after a trip through the executor: a yield on
    /// tokio, a channel fed by another local task on the pool.
    fn ready_later(&self, value: u64) -> LocalFuture<u64> {
        match self {
            Executor::Tokio(_) => Box::pin(async move {
                tokio::task::yield_now().await;
                value
            }),
            Executor::Pool(_, spawner) => {
                let (sender, receiver) = futures::channel::oneshot::channel();
                spawner
                    .spawn_local(async move {
                        PendingThen { times: 1, value }.await;
                        let _ = sender.send(value);
                    })
                    .expect("spawn on the local pool");
                Box::pin(async move { receiver.await.expect("the feeder sends") })
            }
        }
    }

    /// A future that is never ready while the returned keep-alive (the channel's sender) lives.
    fn never(&self) -> (Box<dyn Any>, LocalFuture<()>) {
        match self {
            Executor::Tokio(_) => {
                let (sender, receiver) = tokio::sync::oneshot::channel::<()>();
                (
                    Box::new(sender),
                    Box::pin(async move {
                        let _ = receiver.await;
                    }),
                )
            }
            Executor::Pool(..) => {
                let (sender, receiver) = futures::channel::oneshot::channel::<()>();
                (
                    Box::new(sender),
                    Box::pin(async move {
                        let _ = receiver.await;
                    }),
                )
            }
        }
    }

    /// Polls `future` once inside the executor; true if it is pending.
    fn poll_once_inside<F: Future + Unpin>(&self, future: &mut F) -> bool {
        self.block_on(poll_fn(|cx| {
            Poll::Ready(Pin::new(&mut *future).poll(cx).is_pending())
        }))
    }
}

/// One operation of a thread's program.
#[derive(Debug, Clone, Copy)]
enum Operation {
    /// Main and an echo greenlet pass a value back and forth; each round a nested greenlet
    /// steps it.
    PingPong { rounds: u64, start: u64 },
    /// A suspended greenlet catches a thrown number and returns it doubled plus the thread id.
    Throw { value: u64 },
    /// A greenlet suspended `depth` plain calls deep is killed; its guards are counted.
    Kill { depth: u64 },
    /// An `async_def` on the thread's executor steps a value through `waits` awaits.
    Bridge { waits: u64, start: u64 },
    /// An `async_def` is polled `polls` times (or timed out at once on tokio), then dropped.
    BridgeCancel { polls: u64 },
    /// A greenlet polls an `async_def` by hand, switching back to main between polls.
    BridgeInGreenlet { waits: u64, start: u64 },
}

fn pick(rng: &mut Rng) -> Operation {
    match rng.below(6) {
        0 => Operation::PingPong {
            rounds: 1 + rng.below(20),
            start: rng.next(),
        },
        1 => Operation::Throw { value: rng.next() },
        2 => Operation::Kill {
            depth: rng.below(6),
        },
        3 => Operation::Bridge {
            waits: rng.below(6),
            start: rng.next(),
        },
        4 => Operation::BridgeCancel {
            polls: 1 + rng.below(3),
        },
        _ => Operation::BridgeInGreenlet {
            waits: rng.below(6),
            start: rng.next(),
        },
    }
}

/// What `operation` gives on thread `id`, computed without greenlets.
fn model(operation: Operation, id: u64) -> u64 {
    match operation {
        Operation::PingPong { rounds, start } => {
            (0..rounds).fold(start, |x, _| step(x, id + 1).wrapping_add(1))
        }
        Operation::Throw { value } => value.wrapping_mul(2).wrapping_add(id),
        // Every level's guard, and the innermost one's.
        Operation::Kill { depth } => depth + 1,
        Operation::Bridge { waits, start } | Operation::BridgeInGreenlet { waits, start } => {
            (0..waits).fold(start, step)
        }
        // The guard's drop and the Cancelled seen, plus the number of polls.
        Operation::BridgeCancel { polls } => polls + 2,
    }
}

/// The checksum of thread `id`'s whole program, computed without greenlets.
fn expected_checksum(id: u64) -> u64 {
    let mut rng = Rng(thread_seed(id));
    (0..OPERATIONS).fold(0, |checksum, _| step(checksum, model(pick(&mut rng), id)))
}

fn catch<T>(f: impl FnOnce() -> T) -> std::thread::Result<T> {
    catch_unwind(AssertUnwindSafe(f))
}

/// Nested plain calls, `depth` deep, each holding a guard; the innermost switches to `main`
/// and waits there until killed.
fn nested_then_wait(tally: &Arc<Tally>, main: &Greenlet, depth: u64) {
    let _guard = Guard::new(tally);
    if depth > 0 {
        nested_then_wait(tally, main, depth - 1);
    } else {
        main.switch::<(), ()>(()).unwrap();
        unreachable!("the greenlet is killed, never resumed");
    }
}

/// The synchronous function of the bridge operations: steps `start` through `waits` values
/// that each arrive through `wait`; the middle one through a nested `async_def`.
fn bridged(start: u64, waits: u64, wait: &dyn Fn(u64) -> u64) -> u64 {
    (0..waits).fold(start, |acc, i| {
        let value = if i == waits / 2 {
            awaitlet(async_def(|| wait(i)))
        } else {
            wait(i)
        };
        step(acc, value)
    })
}

fn perform(operation: Operation, id: u64, executor: &Executor, tally: &Arc<Tally>) -> u64 {
    let main = getcurrent();
    match operation {
        Operation::PingPong { rounds, start } => {
            let main_inside = main.clone();
            let guard = Guard::new(tally);
            let echo = Greenlet::new(move |mut x: u64| {
                let _guard = guard;
                loop {
                    let inner = Greenlet::new(move |y: u64| step(y, id + 1));
                    x = inner.switch::<u64, u64>(x).unwrap();
                    // The finished child's parent link would keep the echo alive (it counts
                    // as a handle), and the echo's frame would keep the child: a cycle that
                    // no drop could kill. Let it go before suspending.
                    drop(inner);
                    x = main_inside.switch(x).unwrap();
                }
            });
            let mut x = start;
            for _ in 0..rounds {
                x = echo.switch::<u64, u64>(x).unwrap().wrapping_add(1);
            }
            // Killed on drop, here.
            drop(echo);
            x
        }
        Operation::Throw { value } => {
            let main_inside = main.clone();
            let g = Greenlet::new(move |()| {
                let caught = catch(|| main_inside.switch::<(), ()>(())).unwrap_err();
                let thrown = *caught.downcast::<u64>().unwrap();
                thrown.wrapping_mul(2).wrapping_add(id)
            });
            g.switch::<(), ()>(()).unwrap();
            let returned: u64 = g.throw(value).unwrap();
            assert!(g.is_dead());
            returned
        }
        Operation::Kill { depth } => {
            let live_before = live_guards();
            let tally_inside = Arc::clone(tally);
            let main_inside = main.clone();
            let g = Greenlet::new(move |()| nested_then_wait(&tally_inside, &main_inside, depth));
            g.switch::<(), ()>(()).unwrap();
            let suspended = live_guards() - live_before;
            g.kill().unwrap();
            assert!(g.is_dead());
            assert_eq!(live_guards(), live_before, "every level unwound");
            suspended as u64
        }
        Operation::Bridge { waits, start } => {
            let wait = |i: u64| awaitlet(executor.ready_later(i));
            executor.block_on(async_def(|| bridged(start, waits, &wait)))
        }
        Operation::BridgeCancel { polls } => {
            let cancelled = Rc::new(Cell::new(false));
            let cancelled_inside = Rc::clone(&cancelled);
            let guard = Guard::new(tally);
            let mut future = async_def(move || {
                let _guard = guard;
                let waited = catch(|| awaitlet(std::future::pending::<()>()));
                let panic = waited.unwrap_err();
                cancelled_inside.set(panic.is::<Cancelled>());
                resume_unwind(panic);
            });
            let live_before = live_guards();
            match executor {
                Executor::Tokio(runtime) => {
                    let timed_out = runtime.block_on(async {
                        tokio::time::timeout(std::time::Duration::ZERO, &mut future).await
                    });
                    assert!(timed_out.is_err());
                    drop(future);
                }
                Executor::Pool(..) => {
                    for _ in 0..polls {
                        assert!(executor.poll_once_inside(&mut future));
                    }
                    drop(future);
                }
            }
            let dropped = (live_before - live_guards()) as u64;
            dropped + u64::from(cancelled.get()) + polls
        }
        Operation::BridgeInGreenlet { waits, start } => {
            let main_inside = main.clone();
            let poller = Greenlet::new(move |()| {
                let wait = |i: u64| awaitlet(PendingThen { times: 1, value: i });
                let mut future = async_def(|| bridged(start, waits, &wait));
                let waker = Waker::noop();
                loop {
                    match Pin::new(&mut future).poll(&mut Context::from_waker(waker)) {
                        Poll::Ready(value) => return Some(value),
                        Poll::Pending => main_inside.switch::<Option<u64>, ()>(None).unwrap(),
                    }
                }
            });
            loop {
                if let Some(value) = poller.switch::<(), Option<u64>>(()).unwrap() {
                    assert!(poller.is_dead());
                    break value;
                }
            }
        }
    }
}

/// Runs thread `id`'s program; returns its checksum.
fn run_program(id: u64, executor: &Executor, tally: &Arc<Tally>) -> u64 {
    let main = getcurrent();
    let mut rng = Rng(thread_seed(id));
    let mut checksum = 0;
    for _ in 0..OPERATIONS {
        let operation = pick(&mut rng);
        let value = perform(operation, id, executor, tally);
        assert_eq!(value, model(operation, id), "thread {id}: {operation:?}");
        assert_eq!(getcurrent(), main, "thread {id}: back on its main greenlet");
        checksum = step(checksum, value);
    }
    assert_eq!(
        live_guards(),
        0,
        "thread {id}: no guard outlives its operation"
    );
    checksum
}

/// What a thread leaves suspended, and what its exit must show for it.
#[derive(Default, Debug, Clone, Copy, PartialEq, Eq)]
struct Expected {
    guards: usize,
    cancelled: usize,
    exits: usize,
}

impl std::ops::Add for Expected {
    type Output = Expected;

    fn add(self, other: Expected) -> Expected {
        Expected {
            guards: self.guards + other.guards,
            cancelled: self.cancelled + other.cancelled,
            exits: self.exits + other.exits,
        }
    }
}

/// Counts a "vanished" GreenletExit or a `Cancelled` passing by, then lets it go on.
fn count_and_resume(panic: Box<dyn Any + Send>, tally: &Tally) -> ! {
    if panic.is::<Cancelled>() {
        tally.cancelled_seen.fetch_add(1, Ordering::SeqCst);
    } else if panic
        .downcast_ref::<GreenletExit>()
        .is_some_and(|exit| exit.message == VANISHED)
    {
        tally.exits_seen.fetch_add(1, Ordering::SeqCst);
    }
    resume_unwind(panic)
}

/// A greenlet with a guard, child of `parent`, suspended in a switch to main.
fn suspended_greenlet(tally: &Arc<Tally>, parent: &Greenlet) -> Greenlet {
    let main = getcurrent();
    let guard = Guard::new(tally);
    let tally = Arc::clone(tally);
    let g = Greenlet::builder()
        .parent(parent)
        .build(move |()| {
            let _guard = guard;
            if let Err(panic) = catch(|| main.switch::<(), ()>(())) {
                count_and_resume(panic, &tally);
            }
        })
        .unwrap();
    g.switch::<(), ()>(()).unwrap();
    g
}

/// An `AsyncDef` whose function waits, with a guard, on a future that is never ready; polled
/// once inside the executor.
fn suspended_async_def(
    tally: &Arc<Tally>,
    executor: &Executor,
    parked: &mut Vec<Box<dyn Any>>,
) -> AsyncDef<'static, ()> {
    let (keep_alive, never) = executor.never();
    parked.push(keep_alive);
    let guard = Guard::new(tally);
    let tally = Arc::clone(tally);
    let mut future = async_def(move || {
        let _guard = guard;
        if let Err(panic) = catch(|| awaitlet(never)) {
            count_and_resume(panic, &tally);
        }
    });
    assert!(executor.poll_once_inside(&mut future));
    future
}

/// Greenlets and futures left suspended in every way the thread can: plain, parent and child,
/// a greenlet holding a suspended `AsyncDef`, an `AsyncDef` whose function holds a suspended
/// greenlet, unstarted ones, and (for locals on tokio) a function waiting on a tokio timer.
fn leave_suspended(
    tally: &Arc<Tally>,
    executor: &Executor,
    in_locals: bool,
) -> (Vec<Box<dyn Any>>, Expected) {
    let main = getcurrent();
    let mut parked: Vec<Box<dyn Any>> = Vec::new();
    let mut expected = Expected::default();

    for _ in 0..3 {
        parked.push(Box::new(suspended_greenlet(tally, &main)));
    }
    expected = expected
        + Expected {
            guards: 3,
            cancelled: 0,
            exits: 3,
        };

    let parent = suspended_greenlet(tally, &main);
    let child = suspended_greenlet(tally, &parent);
    parked.push(Box::new(parent));
    parked.push(Box::new(child));
    expected = expected
        + Expected {
            guards: 2,
            cancelled: 0,
            exits: 2,
        };

    for _ in 0..2 {
        let future = suspended_async_def(tally, executor, &mut parked);
        parked.push(Box::new(future));
    }
    expected = expected
        + Expected {
            guards: 2,
            cancelled: 2,
            exits: 0,
        };

    // A greenlet that keeps, in its frame, a suspended AsyncDef that main polled. (Had the
    // greenlet polled it, it would be the function's parent: that link counts as a handle,
    // so neither a drop nor the thread's exit could kill the greenlet; see bridge_misuse.)
    let holder = {
        let guard = Guard::new(tally);
        let held = suspended_async_def(tally, executor, &mut parked);
        let tally = Arc::clone(tally);
        let main = main.clone();
        Greenlet::new(move |()| {
            let _guard = guard;
            let _held = held;
            if let Err(panic) = catch(|| main.switch::<(), ()>(())) {
                count_and_resume(panic, &tally);
            }
        })
    };
    holder.switch::<(), ()>(()).unwrap();
    parked.push(Box::new(holder));
    expected = expected
        + Expected {
            guards: 2,
            cancelled: 1,
            exits: 1,
        };

    // An AsyncDef whose function started a greenlet that is suspended (back in the function).
    {
        let (keep_alive, never) = executor.never();
        parked.push(keep_alive);
        let guard = Guard::new(tally);
        let tally_inside = Arc::clone(tally);
        let helper_guard = Guard::new(tally);
        let mut future = async_def(move || {
            let _guard = guard;
            let tally_for_helper = Arc::clone(&tally_inside);
            let helper = Greenlet::new(move |()| {
                let _guard = helper_guard;
                let function = getcurrent().parent().unwrap();
                if let Err(panic) = catch(|| function.switch::<(), ()>(())) {
                    count_and_resume(panic, &tally_for_helper);
                }
            });
            helper.switch::<(), ()>(()).unwrap();
            if let Err(panic) = catch(|| awaitlet(never)) {
                count_and_resume(panic, &tally_inside);
            }
        });
        assert!(executor.poll_once_inside(&mut future));
        parked.push(Box::new(future));
        expected = expected
            + Expected {
                guards: 2,
                cancelled: 1,
                exits: 1,
            };
    }

    // Unstarted: their closures are dropped without running.
    {
        let guard = Guard::new(tally);
        parked.push(Box::new(Greenlet::new(move |()| {
            let _guard = guard;
            unreachable!("an unstarted greenlet ran at thread exit");
        })));
        let guard = Guard::new(tally);
        let future: AsyncDef<'static, ()> = async_def(move || {
            let _guard = guard;
            unreachable!("an unstarted async_def ran at thread exit");
        });
        parked.push(Box::new(future));
        expected = expected
            + Expected {
                guards: 2,
                cancelled: 0,
                exits: 0,
            };
    }

    // A function waiting on a tokio timer: only in locals, dropped before the runtime.
    if in_locals && let Executor::Tokio(_) = executor {
        let guard = Guard::new(tally);
        let tally = Arc::clone(tally);
        let mut future = async_def(move || {
            let _guard = guard;
            let hour = std::time::Duration::from_secs(3600);
            if let Err(panic) = catch(|| awaitlet(tokio::time::sleep(hour))) {
                count_and_resume(panic, &tally);
            }
        });
        assert!(executor.poll_once_inside(&mut future));
        parked.push(Box::new(future));
        expected = expected
            + Expected {
                guards: 1,
                cancelled: 1,
                exits: 0,
            };
    }

    (parked, expected)
}

/// The body of stress thread `id`: runs its program, then leaves greenlets and futures
/// suspended in locals and in `PARKED`. Threads with `id % 4 < 2` touch `PARKED` before any
/// greenlet exists, so it is destroyed after the thread's greenlet machinery; the others
/// touch it afterwards, so it is destroyed first.
fn stress_thread(id: u64, tally: Arc<Tally>, start: Arc<Barrier>) -> (u64, Expected) {
    if id % 4 < 2 {
        PARKED.with(|_| ());
    }
    let executor = Executor::new(id.is_multiple_of(2));
    start.wait();
    let checksum = run_program(id, &executor, &tally);
    let (in_thread_local, expected_there) = leave_suspended(&tally, &executor, false);
    PARKED.with(|parked| parked.borrow_mut().extend(in_thread_local));
    // Declared after the executor, so dropped before it.
    let (_in_locals, expected_here) = leave_suspended(&tally, &executor, true);
    let expected = expected_there + expected_here;
    assert_eq!(
        live_guards(),
        expected.guards as i64,
        "thread {id}: the guards left on suspended stacks"
    );
    (checksum, expected)
}

/// Runs `THREADS` stress threads at once; checks their results; returns what their exits
/// must show.
fn run_threads(tally: &Arc<Tally>) -> Expected {
    let start = Arc::new(Barrier::new(THREADS as usize));
    let handles: Vec<_> = (0..THREADS)
        .map(|id| {
            let tally = Arc::clone(tally);
            let start = Arc::clone(&start);
            thread::Builder::new()
                .name(format!("stress-{id}"))
                .spawn(move || stress_thread(id, tally, start))
                .expect("spawn a stress thread")
        })
        .collect();
    let mut expected = Expected::default();
    for (id, handle) in (0..THREADS).zip(handles) {
        let (checksum, left_behind) = handle.join().expect("a stress thread panicked");
        assert_eq!(checksum, expected_checksum(id), "thread {id}'s checksum");
        expected = expected + left_behind;
    }
    expected
}

fn check_exits(tally: &Tally, expected: Expected) {
    let made = Tally::load(&tally.guards_made);
    let dropped = Tally::load(&tally.guards_dropped);
    assert_eq!(made, dropped, "every guard made was dropped, once");
    assert_eq!(
        Tally::load(&tally.cancelled_seen),
        expected.cancelled,
        "every parked function saw Cancelled once"
    );
    assert_eq!(
        Tally::load(&tally.exits_seen),
        expected.exits,
        "every parked greenlet saw the vanished GreenletExit once"
    );
}

#[test]
fn threads_run_their_own_greenlets_and_bridges_and_exit_with_them_suspended() {
    let tally = Arc::new(Tally::default());
    let expected = run_threads(&tally);
    assert!(expected.guards > 0 && expected.cancelled > 0 && expected.exits > 0);
    check_exits(&tally, expected);
}

// Threads exiting with suspended greenlets and AsyncDefs leak none of their stacks: after a
// warm-up, many more rounds leave the mapping count and virtual size flat. In a child process,
// alone, with one malloc arena, so that other tests' threads and new arenas do not move the
// numbers.
#[test]
fn threads_exiting_with_suspended_stacks_leak_no_mappings() {
    if is_child("no-leak") {
        let tally = Arc::new(Tally::default());
        let mut expected = run_threads(&tally) + run_threads(&tally);
        let before = process_memory();
        for _ in 0..8 {
            expected = expected + run_threads(&tally);
        }
        let after = process_memory();
        check_exits(&tally, expected);
        // 8 rounds x 8 threads x some 30 stacks of 1 MiB: a leak would add thousands of
        // mappings and gigabytes of address space.
        assert_memory_flat(before, after);
        println!("CHILD-OK {before:?} {after:?}");
        return;
    }
    let output = run_child_with_env(
        "threads_exiting_with_suspended_stacks_leak_no_mappings",
        "no-leak",
        "MALLOC_ARENA_MAX",
        "1",
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("CHILD-OK"),
        "{output:?}"
    );
}
