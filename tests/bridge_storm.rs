//! Cancellation storms: thousands of `async_def` tasks on tokio (a current-thread runtime and a
//! `LocalSet`) and on smol (a `LocalExecutor`), each running a random synchronous program that
//! nests plain calls (every level holding a destructor-counting guard), waits on timers,
//! channels fed by other tasks, `yield_now` and nested `async_def`s, and is then cancelled in a
//! random way (timeout, `select!`/`or` against another branch, `JoinHandle::abort`, smol's task
//! drop and `Task::cancel`, a plain drop of the future) or left to finish.
//!
//! Counters prove that every guard made was dropped exactly once, that every function that
//! started either completed, saw [`Cancelled`] or failed with the storm's own injected panic,
//! and that the thread's stack pool and the process's guard-page mappings (one per greenlet
//! stack) come back to where they were.
//!
//! `AWAITLET_STORM_TASKS` sets the number of tasks per storm (default 2000; CI runs 20000 in
//! release); `AWAITLET_STORM_SEED` sets the seed, which a failure message always names.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, VecDeque};
use std::future::poll_fn;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use awaitlet::stack::{POOL_CAPACITY, pool_len, trim_pool};
use awaitlet::{Cancelled, async_def, awaitlet, in_async_def, try_awaitlet};
use futures::FutureExt;
use futures::future::LocalBoxFuture;

/// Tasks per storm when `AWAITLET_STORM_TASKS` is not set.
const DEFAULT_TASKS: u64 = 2000;

/// Seed when `AWAITLET_STORM_SEED` is not set.
const DEFAULT_SEED: u64 = 0x5EED_2024_0000_0001;

/// Tasks of the small storm run before the measured one.
const WARM_UP_TASKS: u64 = 50;

/// How many storm tasks run at once.
const CONCURRENCY: usize = 256;

/// The deepest chain of nested plain calls in one function.
const MAX_LEVELS: u64 = 6;

/// How deep `async_def`s nest inside one another.
const MAX_NESTING: u32 = 3;

/// The stack size some nested `async_def`s ask for, so that the pool holds two sizes.
const SMALL_STACK: usize = 128 * 1024;

/// What a fed channel message is XORed with, so a receiver can check it got its own token.
const MESSAGE_KEY: u64 = 0xA11C_E5EE_D0C0_FFEE;

/// A live guard's canary; a dropped guard's is zeroed.
const CANARY: u64 = 0x5AFE_C0DE_D00D_F00D;

/// Storms share the process's mapping count, so they run one at a time.
static ONE_STORM_AT_A_TIME: Mutex<()> = Mutex::new(());

/// SplitMix64: a small seedable generator, plenty for picking programs.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..bound`.
    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }
}

/// The panic a storm function raises on purpose now and then (without the panic hook).
#[derive(Debug)]
struct Boom;

/// How a storm task ended, seen from the task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Ending {
    /// The function returned its value.
    Finished,
    /// The function raised the storm's injected `Boom`.
    Failed,
    /// The task's cancellation won: the `AsyncDef` was dropped.
    Interrupted,
}

fn bump(counter: &Cell<u64>) {
    counter.set(counter.get() + 1);
}

/// Everything a storm counts.
#[derive(Default)]
struct Tally {
    guards_made: Cell<u64>,
    guards_dropped: Cell<u64>,
    /// Drops of a guard already dropped, or with a broken canary.
    bad_guard_drops: Cell<u64>,
    /// Per guard id: true while the guard lives.
    guard_alive: RefCell<Vec<bool>>,
    functions_started: Cell<u64>,
    functions_completed: Cell<u64>,
    functions_cancelled: Cell<u64>,
    functions_failed: Cell<u64>,
    /// Waits that caught `Cancelled`, cleaned up with `try_awaitlet` and raised it again.
    cancellations_caught: Cell<u64>,
    /// Nested `async_def`s whose timeout inside the function elapsed.
    nested_timeouts_elapsed: Cell<u64>,
    messages_received: Cell<u64>,
    messages_fed_by_workers: Cell<u64>,
    /// Anything that should not happen, described.
    unexpected: RefCell<Vec<String>>,
    /// Task endings by cancellation mode.
    endings: RefCell<BTreeMap<(&'static str, Ending), u64>>,
}

impl Tally {
    fn unexpected(&self, what: String) {
        self.unexpected.borrow_mut().push(what);
    }

    fn record(&self, mode: &'static str, ending: Ending) {
        *self.endings.borrow_mut().entry((mode, ending)).or_default() += 1;
    }

    /// The ending of a task whose `AsyncDef` ran to its end (a value, or a caught panic).
    fn ending_of(&self, outcome: Result<u64, Box<dyn Any + Send>>) -> Ending {
        match outcome {
            Ok(_) => Ending::Finished,
            Err(panic) if panic.is::<Boom>() => Ending::Failed,
            Err(panic) => {
                self.unexpected(format!("a task ended in an unexpected panic: {panic:?}"));
                Ending::Failed
            }
        }
    }

    fn endings_of(&self, ending: Ending) -> u64 {
        let endings = self.endings.borrow();
        endings
            .iter()
            .filter(|((_, e), _)| *e == ending)
            .map(|(_, count)| count)
            .sum()
    }
}

/// The half of a one-shot channel that a feeder sends on; true if the receiver was still there.
type Sender = Box<dyn FnOnce(u64) -> bool>;

/// What a storm needs from its runtime: the futures its functions wait on.
trait Kit {
    fn sleep(&self, millis: u64) -> LocalBoxFuture<'static, ()>;
    fn yield_now(&self) -> LocalBoxFuture<'static, ()>;
    fn channel(&self) -> (Sender, LocalBoxFuture<'static, Option<u64>>);
    /// `fut`'s output, or `None` when `millis` elapse first.
    fn timeout<'a>(
        &self,
        millis: u64,
        fut: LocalBoxFuture<'a, u64>,
    ) -> LocalBoxFuture<'a, Option<u64>>;
    /// Tells the feeder task that the mailbox has something.
    fn wake_feeder(&self);
}

/// A storm's shared state: its counters, its runtime kit, and the mailbox of receivers waiting
/// to be fed.
struct Storm {
    tally: Tally,
    kit: Box<dyn Kit>,
    mailbox: RefCell<VecDeque<(u64, Sender)>>,
    done: Cell<bool>,
}

impl Storm {
    fn new(kit: Box<dyn Kit>) -> Rc<Storm> {
        Rc::new(Storm {
            tally: Tally::default(),
            kit,
            mailbox: RefCell::new(VecDeque::new()),
            done: Cell::new(false),
        })
    }

    /// Registers a receiver for `token`; its message is `token ^ MESSAGE_KEY`.
    fn register(&self, token: u64) -> LocalBoxFuture<'static, Option<u64>> {
        let (sender, receiver) = self.kit.channel();
        self.mailbox.borrow_mut().push_back((token, sender));
        self.kit.wake_feeder();
        receiver
    }

    /// Feeds the newest waiting receiver, as a worker task does now and then.
    fn feed_one(&self) {
        let entry = self.mailbox.borrow_mut().pop_back();
        if let Some((token, sender)) = entry
            && sender(token ^ MESSAGE_KEY)
        {
            bump(&self.tally.messages_fed_by_workers);
        }
    }

    /// Feeds every waiting receiver, as the feeder task does.
    fn feed_all(&self) {
        loop {
            let entry = self.mailbox.borrow_mut().pop_front();
            let Some((token, sender)) = entry else { break };
            sender(token ^ MESSAGE_KEY);
        }
    }
}

/// Counts its construction and its drop; a second drop or a broken canary is counted as bad.
struct Guard {
    storm: Rc<Storm>,
    id: usize,
    canary: u64,
}

impl Guard {
    fn new(storm: &Rc<Storm>) -> Guard {
        let tally = &storm.tally;
        bump(&tally.guards_made);
        let mut alive = tally.guard_alive.borrow_mut();
        alive.push(true);
        Guard {
            storm: Rc::clone(storm),
            id: alive.len() - 1,
            canary: CANARY,
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let tally = &self.storm.tally;
        let was_alive = std::mem::replace(&mut tally.guard_alive.borrow_mut()[self.id], false);
        if !was_alive || self.canary != CANARY {
            bump(&tally.bad_guard_drops);
        }
        self.canary = 0;
        bump(&tally.guards_dropped);
    }
}

/// A storm function: runs the program picked by `seed` and counts how it ended.
fn tracked(storm: &Rc<Storm>, seed: u64, nesting: u32) -> u64 {
    let tally = &storm.tally;
    bump(&tally.functions_started);
    if !in_async_def() {
        tally.unexpected("a storm function runs outside async_def".to_string());
    }
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        let mut rng = Rng::new(seed);
        let levels = rng.below(MAX_LEVELS + 1);
        level(storm, &mut rng, levels, nesting)
    }));
    match outcome {
        Ok(value) => {
            bump(&tally.functions_completed);
            value
        }
        Err(panic) => {
            if panic.is::<Cancelled>() {
                bump(&tally.functions_cancelled);
            } else if panic.is::<Boom>() {
                bump(&tally.functions_failed);
            } else {
                tally.unexpected(format!(
                    "a function ended in an unexpected panic: {panic:?}"
                ));
            }
            resume_unwind(panic)
        }
    }
}

/// One level of nested plain calls: holds a guard, takes a few steps, calls the next level.
fn level(storm: &Rc<Storm>, rng: &mut Rng, levels_below: u64, nesting: u32) -> u64 {
    let _guard = Guard::new(storm);
    let mut total = 0u64;
    for _ in 0..rng.below(3) {
        total = total.wrapping_add(step(storm, rng, nesting));
    }
    if levels_below > 0 {
        total = total.wrapping_add(level(storm, rng, levels_below - 1, nesting));
    }
    for _ in 0..rng.below(2) {
        total = total.wrapping_add(step(storm, rng, nesting));
    }
    total
}

/// One random thing a storm function does.
fn step(storm: &Rc<Storm>, rng: &mut Rng, nesting: u32) -> u64 {
    let kit = &*storm.kit;
    let tally = &storm.tally;
    match rng.below(100) {
        0..=24 => {
            awaitlet(kit.sleep(rng.below(3)));
            1
        }
        25..=36 => {
            awaitlet(kit.yield_now());
            2
        }
        37..=51 => {
            let token = rng.next();
            match awaitlet(storm.register(token)) {
                Some(message) if message == token ^ MESSAGE_KEY => {
                    bump(&tally.messages_received);
                    3
                }
                other => {
                    tally.unexpected(format!("token {token:#x} received {other:?}"));
                    0
                }
            }
        }
        52..=59 => {
            storm.feed_one();
            4
        }
        60..=69 if nesting < MAX_NESTING => {
            let seed = rng.next();
            let inner = async_def(|| tracked(storm, seed, nesting + 1));
            if rng.below(3) == 0 {
                awaitlet(inner.stack_size(SMALL_STACK))
            } else {
                awaitlet(inner)
            }
        }
        70..=79 if nesting < MAX_NESTING => {
            let seed = rng.next();
            let millis = rng.below(3);
            let inner = async_def(|| tracked(storm, seed, nesting + 1));
            match awaitlet(kit.timeout(millis, Box::pin(inner))) {
                Some(value) => value,
                None => {
                    bump(&tally.nested_timeouts_elapsed);
                    5
                }
            }
        }
        80..=88 => wait_catching_cancelled(storm, rng.below(3)),
        89..=98 => awaitlet(async { 6 }),
        // The injected failure, in one step of 300.
        _ if rng.below(3) == 0 => resume_unwind(Box::new(Boom)),
        _ => awaitlet(async { 9 }),
    }
}

/// Sleeps; if the wait is cancelled, cleans up as a destructor would (a ready future still
/// gives its value, a pending one is refused) and raises `Cancelled` again.
fn wait_catching_cancelled(storm: &Rc<Storm>, millis: u64) -> u64 {
    let tally = &storm.tally;
    match catch_unwind(AssertUnwindSafe(|| awaitlet(storm.kit.sleep(millis)))) {
        Ok(()) => 7,
        Err(panic) => {
            if panic.is::<Cancelled>() {
                bump(&tally.cancellations_caught);
                let ready = try_awaitlet(async { 8 });
                let pending = try_awaitlet(std::future::pending::<()>());
                if ready != Ok(8) || pending.is_ok() {
                    tally.unexpected(format!(
                        "cleanup after Cancelled: ready {ready:?}, pending {pending:?}"
                    ));
                }
            } else {
                tally.unexpected(format!("a sleep raised {panic:?}"));
            }
            resume_unwind(panic)
        }
    }
}

/// A storm task's future: the top-level function for `seed`, its panics caught.
fn storm_future(
    storm: &Rc<Storm>,
    seed: u64,
) -> futures::future::CatchUnwind<AssertUnwindSafe<awaitlet::AsyncDef<'static, u64>>> {
    let storm = Rc::clone(storm);
    AssertUnwindSafe(async_def(move || tracked(&storm, seed, 0))).catch_unwind()
}

/// A random branch to race a storm task against: a timer, a yield, or a fed channel.
fn other_branch(storm: &Rc<Storm>, rng: &mut Rng) -> LocalBoxFuture<'static, ()> {
    match rng.below(3) {
        0 => storm.kit.sleep(rng.below(3)),
        1 => storm.kit.yield_now(),
        _ => {
            let receiver = storm.register(rng.next());
            Box::pin(async move {
                receiver.await;
            })
        }
    }
}

/// Waits a random little while: a timer or a few yields.
async fn pause(storm: &Rc<Storm>, rng: &mut Rng) {
    if rng.below(2) == 0 {
        storm.kit.sleep(rng.below(3)).await;
    } else {
        for _ in 0..rng.below(4) {
            storm.kit.yield_now().await;
        }
    }
}

/// Polls the task future a few times, pausing between polls, then drops it unfinished.
async fn poll_a_little_then_drop(storm: &Rc<Storm>, rng: &mut Rng, seed: u64) -> Ending {
    let mut future = storm_future(storm, seed);
    for _ in 0..rng.below(4) {
        if let Poll::Ready(outcome) = poll_fn(|cx| Poll::Ready(future.poll_unpin(cx))).await {
            return storm.tally.ending_of(outcome);
        }
        pause(storm, rng).await;
    }
    drop(future);
    Ending::Interrupted
}

/// The tokio runtime's kit.
struct TokioKit {
    wake: Rc<tokio::sync::Notify>,
}

impl Kit for TokioKit {
    fn sleep(&self, millis: u64) -> LocalBoxFuture<'static, ()> {
        Box::pin(tokio::time::sleep(Duration::from_millis(millis)))
    }

    fn yield_now(&self) -> LocalBoxFuture<'static, ()> {
        Box::pin(tokio::task::yield_now())
    }

    fn channel(&self) -> (Sender, LocalBoxFuture<'static, Option<u64>>) {
        let (sender, receiver) = tokio::sync::oneshot::channel();
        (
            Box::new(move |message| sender.send(message).is_ok()),
            Box::pin(async move { receiver.await.ok() }),
        )
    }

    fn timeout<'a>(
        &self,
        millis: u64,
        fut: LocalBoxFuture<'a, u64>,
    ) -> LocalBoxFuture<'a, Option<u64>> {
        Box::pin(async move {
            tokio::time::timeout(Duration::from_millis(millis), fut)
                .await
                .ok()
        })
    }

    fn wake_feeder(&self) {
        self.wake.notify_one();
    }
}

/// One tokio storm task: picks a cancellation mode and records how the task ended.
async fn tokio_task(storm: Rc<Storm>, seed: u64) {
    let mut rng = Rng::new(seed);
    let function_seed = rng.next();
    let tally = &storm.tally;
    match rng.below(6) {
        0 => {
            let outcome = storm_future(&storm, function_seed).await;
            tally.record("tokio complete", tally.ending_of(outcome));
        }
        1 => {
            let millis = rng.below(4);
            let raced = tokio::time::timeout(
                Duration::from_millis(millis),
                storm_future(&storm, function_seed),
            );
            let ending = match raced.await {
                Ok(outcome) => tally.ending_of(outcome),
                Err(_elapsed) => Ending::Interrupted,
            };
            tally.record("tokio timeout", ending);
        }
        2 => {
            let other = other_branch(&storm, &mut rng);
            let ending = tokio::select! {
                outcome = storm_future(&storm, function_seed) => tally.ending_of(outcome),
                () = other => Ending::Interrupted,
            };
            tally.record("tokio select", ending);
        }
        3 => {
            let handle = tokio::task::spawn_local(storm_future(&storm, function_seed));
            pause(&storm, &mut rng).await;
            handle.abort();
            let ending = match handle.await {
                Ok(outcome) => tally.ending_of(outcome),
                Err(error) if error.is_cancelled() => Ending::Interrupted,
                Err(error) => {
                    tally.unexpected(format!("an aborted task failed: {error}"));
                    Ending::Failed
                }
            };
            tally.record("tokio abort", ending);
        }
        4 => {
            let ending = poll_a_little_then_drop(&storm, &mut rng, function_seed).await;
            tally.record("tokio drop", ending);
        }
        _ => {
            let handle = tokio::task::spawn_local(storm_future(&storm, function_seed));
            let ending = match handle.await {
                Ok(outcome) => tally.ending_of(outcome),
                Err(error) => {
                    tally.unexpected(format!("a spawned task failed: {error}"));
                    Ending::Failed
                }
            };
            tally.record("tokio spawned", ending);
        }
    }
}

/// Runs `tasks` tokio storm tasks on a current-thread runtime and a `LocalSet`.
fn tokio_storm(tasks: u64, seed: u64) -> Rc<Storm> {
    let wake = Rc::new(tokio::sync::Notify::new());
    let storm = Storm::new(Box::new(TokioKit {
        wake: Rc::clone(&wake),
    }));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a tokio runtime");
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async {
        let feeder = tokio::task::spawn_local({
            let storm = Rc::clone(&storm);
            async move {
                loop {
                    wake.notified().await;
                    // Give the workers a moment to feed some receivers themselves.
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    storm.feed_all();
                    if storm.done.get() {
                        break;
                    }
                }
            }
        });
        let slots = Arc::new(tokio::sync::Semaphore::new(CONCURRENCY));
        let mut seeds = Rng::new(seed);
        for _ in 0..tasks {
            let slot = Arc::clone(&slots).acquire_owned().await.unwrap();
            let task = tokio_task(Rc::clone(&storm), seeds.next());
            tokio::task::spawn_local(async move {
                task.await;
                drop(slot);
            });
        }
        drop(slots.acquire_many(CONCURRENCY as u32).await.unwrap());
        storm.done.set(true);
        storm.kit.wake_feeder();
        feeder.await.unwrap();
    });
    storm
}

/// The smol runtime's kit.
struct SmolKit {
    wake: smol::channel::Sender<()>,
}

impl Kit for SmolKit {
    fn sleep(&self, millis: u64) -> LocalBoxFuture<'static, ()> {
        Box::pin(async move {
            smol::Timer::after(Duration::from_millis(millis)).await;
        })
    }

    fn yield_now(&self) -> LocalBoxFuture<'static, ()> {
        Box::pin(smol::future::yield_now())
    }

    fn channel(&self) -> (Sender, LocalBoxFuture<'static, Option<u64>>) {
        let (sender, receiver) = smol::channel::bounded(1);
        (
            Box::new(move |message| sender.try_send(message).is_ok()),
            Box::pin(async move { receiver.recv().await.ok() }),
        )
    }

    fn timeout<'a>(
        &self,
        millis: u64,
        fut: LocalBoxFuture<'a, u64>,
    ) -> LocalBoxFuture<'a, Option<u64>> {
        Box::pin(smol::future::or(
            async move { Some(fut.await) },
            async move {
                smol::Timer::after(Duration::from_millis(millis)).await;
                None
            },
        ))
    }

    fn wake_feeder(&self) {
        // Full means a wake-up is already pending.
        let _ = self.wake.try_send(());
    }
}

type Executor = Rc<smol::LocalExecutor<'static>>;

/// One smol storm task: picks a cancellation mode and records how the task ended.
async fn smol_task(storm: Rc<Storm>, executor: Executor, seed: u64) {
    let mut rng = Rng::new(seed);
    let function_seed = rng.next();
    let tally = &storm.tally;
    match rng.below(6) {
        0 => {
            let outcome = storm_future(&storm, function_seed).await;
            tally.record("smol complete", tally.ending_of(outcome));
        }
        1 => {
            let task = executor.spawn(storm_future(&storm, function_seed));
            pause(&storm, &mut rng).await;
            let ending = if task.is_finished() {
                tally.ending_of(task.await)
            } else {
                drop(task);
                Ending::Interrupted
            };
            tally.record("smol task drop", ending);
        }
        2 => {
            let task = executor.spawn(storm_future(&storm, function_seed));
            pause(&storm, &mut rng).await;
            let ending = match task.cancel().await {
                Some(outcome) => tally.ending_of(outcome),
                None => Ending::Interrupted,
            };
            tally.record("smol task cancel", ending);
        }
        3 => {
            let other = other_branch(&storm, &mut rng);
            let future = storm_future(&storm, function_seed);
            let raced = smol::future::or(async { Some(future.await) }, async {
                other.await;
                None
            });
            let ending = match raced.await {
                Some(outcome) => tally.ending_of(outcome),
                None => Ending::Interrupted,
            };
            tally.record("smol or", ending);
        }
        4 => {
            let ending = poll_a_little_then_drop(&storm, &mut rng, function_seed).await;
            tally.record("smol drop", ending);
        }
        _ => {
            let outcome = executor.spawn(storm_future(&storm, function_seed)).await;
            tally.record("smol spawned", tally.ending_of(outcome));
        }
    }
}

/// Runs `tasks` smol storm tasks on a `LocalExecutor`.
fn smol_storm(tasks: u64, seed: u64) -> Rc<Storm> {
    let (wake, woken) = smol::channel::bounded::<()>(1);
    let storm = Storm::new(Box::new(SmolKit { wake }));
    let executor: Executor = Rc::new(smol::LocalExecutor::new());
    let run = {
        let storm = Rc::clone(&storm);
        let executor = Rc::clone(&executor);
        async move {
            let feeder = executor.spawn({
                let storm = Rc::clone(&storm);
                async move {
                    while woken.recv().await.is_ok() {
                        // Give the workers a moment to feed some receivers themselves.
                        smol::Timer::after(Duration::from_millis(1)).await;
                        storm.feed_all();
                        if storm.done.get() {
                            break;
                        }
                    }
                }
            });
            let slots = Arc::new(smol::lock::Semaphore::new(CONCURRENCY));
            let mut seeds = Rng::new(seed);
            for _ in 0..tasks {
                let slot = slots.acquire_arc().await;
                let task = smol_task(Rc::clone(&storm), Rc::clone(&executor), seeds.next());
                executor
                    .spawn(async move {
                        task.await;
                        drop(slot);
                    })
                    .detach();
            }
            let mut all_slots = Vec::with_capacity(CONCURRENCY);
            for _ in 0..CONCURRENCY {
                all_slots.push(slots.acquire().await);
            }
            storm.done.set(true);
            storm.kit.wake_feeder();
            feeder.await;
        }
    };
    smol::block_on(executor.run(run));
    // Tasks cancelled by a drop are dropped when the executor next runs them.
    while executor.try_tick() {}
    storm
}

/// How many anonymous `PROT_NONE` mappings the process has: every greenlet stack has one (its
/// guard page). Counted rather than all mappings, which an allocator (Valgrind's, say) adds
/// as its heap grows.
fn guard_mapping_count() -> usize {
    std::fs::read_to_string("/proc/self/maps")
        .expect("read /proc/self/maps")
        .lines()
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // address, permissions, offset, device, inode: no path, so anonymous.
            fields.len() == 5 && fields[1] == "---p"
        })
        .count()
}

fn env_number(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(text) => text
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name} must be a number, not {text:?}")),
        Err(_) => default,
    }
}

/// Fills this thread's stack pool to capacity.
fn warm_pool() {
    let held: Vec<_> = (0..POOL_CAPACITY).map(|_| async_def(|| ())).collect();
    drop(held);
}

/// Runs a storm between pool and mapping measurements and checks every counter.
fn check_storm(runtime: &str, run: fn(u64, u64) -> Rc<Storm>) {
    let _alone = ONE_STORM_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let tasks = env_number("AWAITLET_STORM_TASKS", DEFAULT_TASKS);
    let seed = env_number("AWAITLET_STORM_SEED", DEFAULT_SEED);
    let context = format!("{runtime} storm, {tasks} tasks, AWAITLET_STORM_SEED={seed}");

    // A small storm first, so that whatever the runtime sets up once (smol's reactor thread,
    // say) exists before the count.
    drop(run(WARM_UP_TASKS, seed ^ 1));
    trim_pool();
    let guards_before = guard_mapping_count();
    warm_pool();
    let pool_baseline = pool_len();
    assert_eq!(pool_baseline, POOL_CAPACITY, "{context}: the warmed pool");

    let storm = run(tasks, seed);
    let tally = &storm.tally;

    assert_eq!(
        *tally.unexpected.borrow(),
        Vec::<String>::new(),
        "{context}"
    );
    // Guards: every one made was dropped, once.
    assert_eq!(
        tally.guards_made.get(),
        tally.guards_dropped.get(),
        "{context}: guards made and dropped"
    );
    assert_eq!(tally.bad_guard_drops.get(), 0, "{context}: bad guard drops");
    assert!(
        tally.guard_alive.borrow().iter().all(|alive| !alive),
        "{context}: a guard is still alive"
    );
    // Functions: every one that started completed, saw Cancelled, or raised the storm's Boom.
    let started = tally.functions_started.get();
    let (completed, cancelled, failed) = (
        tally.functions_completed.get(),
        tally.functions_cancelled.get(),
        tally.functions_failed.get(),
    );
    assert_eq!(
        started,
        completed + cancelled + failed,
        "{context}: started {started}, completed {completed}, cancelled {cancelled}, \
         failed {failed}"
    );
    // Tasks: each ended exactly one way.
    let endings: u64 = tally.endings.borrow().values().sum();
    assert_eq!(endings, tasks, "{context}: {:?}", tally.endings.borrow());
    if tasks >= 500 {
        // A storm this size has exercised every path; if not, the storm itself is broken.
        let storm_tally = &run_summary(tally);
        assert!(
            completed > 0 && cancelled > 0 && failed > 0,
            "{storm_tally}"
        );
        assert!(tally.cancellations_caught.get() > 0, "{storm_tally}");
        assert!(tally.nested_timeouts_elapsed.get() > 0, "{storm_tally}");
        assert!(tally.messages_received.get() > 0, "{storm_tally}");
        assert!(tally.messages_fed_by_workers.get() > 0, "{storm_tally}");
        assert!(
            tally.endings_of(Ending::Interrupted) > 0
                && tally.endings_of(Ending::Finished) > 0
                && tally.endings_of(Ending::Failed) > 0,
            "{storm_tally}"
        );
        let modes: std::collections::BTreeSet<_> = tally
            .endings
            .borrow()
            .keys()
            .map(|(mode, _)| *mode)
            .collect();
        assert_eq!(
            modes.len(),
            6,
            "every cancellation mode was used: {storm_tally}"
        );
    }
    println!("{context}: {}", run_summary(tally));
    // The pool is back to its baseline, and no stack (nor anything else) stayed mapped.
    assert_eq!(pool_len(), pool_baseline, "{context}: pool size");
    drop(storm);
    trim_pool();
    let guards_after = guard_mapping_count();
    assert!(
        guards_after <= guards_before + 4,
        "{context}: guard-page mappings grew from {guards_before} to {guards_after}: stacks leaked"
    );
    println!("{context}: guard-page mappings {guards_before} before, {guards_after} after");
}

fn run_summary(tally: &Tally) -> String {
    format!(
        "guards {}, functions started {} (completed {}, cancelled {}, failed {}), \
         Cancelled caught {}, nested timeouts {}, messages {} ({} fed by workers), endings {:?}",
        tally.guards_made.get(),
        tally.functions_started.get(),
        tally.functions_completed.get(),
        tally.functions_cancelled.get(),
        tally.functions_failed.get(),
        tally.cancellations_caught.get(),
        tally.nested_timeouts_elapsed.get(),
        tally.messages_received.get(),
        tally.messages_fed_by_workers.get(),
        tally.endings.borrow(),
    )
}

#[test]
fn tokio_cancellation_storm_drops_every_guard_once_and_returns_every_stack() {
    check_storm("tokio", tokio_storm);
}

#[test]
fn smol_cancellation_storm_drops_every_guard_once_and_returns_every_stack() {
    check_storm("smol", smol_storm);
}
