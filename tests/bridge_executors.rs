//! The bridge on real executors: tokio (a current-thread runtime, and a `LocalSet` inside a
//! multi-threaded one), smol's `LocalExecutor`, async-std, `futures::executor` and pollster.
//!
//! On each, several `async_def`s run at once and suspend at real suspension points (the
//! executor's own yields, timers, barriers and channels). Where the order of events is fixed
//! by the executor or by causality (round-robin yields inside one task, a token passed around a
//! ring), the test asserts the exact order; elsewhere it asserts that all of them were
//! suspended at the same time. Then ambient context (tokio task-locals, the current `tracing`
//! span) seen from inside the sync code, and the three ways to use the `!Send` `AsyncDef` from
//! a multi-threaded runtime.

use std::cell::RefCell;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::mpsc as std_mpsc;
use std::task::{Context, Poll};
use std::thread;
use std::time::Duration;

use awaitlet::{AssertAwaitOccurs, AsyncDef, async_def, awaitlet};
use futures::channel::{mpsc, oneshot};
use futures::future::join_all;
use futures::{StreamExt, task::LocalSpawnExt};

// ---------------------------------------------------------------------------------------------
// Sync code under test, and the scenarios built from it
// ---------------------------------------------------------------------------------------------

/// The log shared by the `async_def`s of one scenario, in the order events happened.
type Log = Rc<RefCell<Vec<String>>>;

fn new_log() -> Log {
    Rc::new(RefCell::new(Vec::new()))
}

/// Synchronous code that knows nothing of async: logs each of its steps and calls `pause`
/// between them.
fn stepper(worker: usize, steps: usize, log: &RefCell<Vec<String>>, pause: &dyn Fn()) -> usize {
    for step in 0..steps {
        log.borrow_mut()
            .push(format!("worker {worker} step {step}"));
        pause();
    }
    log.borrow_mut().push(format!("worker {worker} done"));
    worker
}

/// `workers` async_defs, each running [`stepper`] with `pause` between its steps.
fn steppers<P: Fn() + Copy + 'static>(
    workers: usize,
    steps: usize,
    log: &Log,
    pause: P,
) -> Vec<AsyncDef<'static, usize>> {
    (0..workers)
        .map(|worker| {
            let log = Rc::clone(log);
            async_def(move || stepper(worker, steps, &log, &pause))
        })
        .collect()
}

/// The log of [`steppers`] when every pause hands over to the next worker: step 0 of each in
/// turn, then step 1 of each, and so on, then each one's `done`.
fn round_robin(workers: usize, steps: usize) -> Vec<String> {
    let mut expected = Vec::new();
    for step in 0..steps {
        for worker in 0..workers {
            expected.push(format!("worker {worker} step {step}"));
        }
    }
    for worker in 0..workers {
        expected.push(format!("worker {worker} done"));
    }
    expected
}

/// Checks a [`steppers`] log for turns taken fairly, in whatever order within a turn: every
/// worker took step 0 before any took step 1, and so on, and only then did any finish.
fn assert_took_turns(log: &[String], workers: usize, steps: usize) {
    let expected = round_robin(workers, steps);
    assert_eq!(log.len(), expected.len(), "{log:?}");
    for (turn, expected_turn) in log.chunks(workers).zip(expected.chunks(workers)) {
        let mut turn = turn.to_vec();
        turn.sort();
        assert_eq!(turn, expected_turn, "{log:?}");
    }
}

/// Synchronous code that meets the other workers at `meet` (which returns only once all have
/// arrived), then naps.
fn meet_then_nap(worker: usize, log: &RefCell<Vec<String>>, meet: &dyn Fn(), nap: &dyn Fn()) {
    log.borrow_mut().push(format!("worker {worker} arrived"));
    meet();
    log.borrow_mut().push(format!("worker {worker} met"));
    nap();
    log.borrow_mut().push(format!("worker {worker} woke"));
}

/// Checks a [`meet_then_nap`] log: every worker arrived before any got past the meeting (so all
/// were suspended there at once), and each one went through its three events in order.
fn assert_all_met(log: &[String], workers: usize) {
    assert_eq!(log.len(), 3 * workers, "{log:?}");
    let position = |event: &str| {
        log.iter()
            .position(|entry| entry == event)
            .unwrap_or_else(|| panic!("no {event:?} in {log:?}"))
    };
    let last_arrival = (0..workers)
        .map(|worker| position(&format!("worker {worker} arrived")))
        .max();
    let first_meeting = (0..workers)
        .map(|worker| position(&format!("worker {worker} met")))
        .min();
    assert!(last_arrival < first_meeting, "{log:?}");
    for worker in 0..workers {
        assert!(
            position(&format!("worker {worker} met")) < position(&format!("worker {worker} woke"))
        );
    }
}

/// Synchronous relay: `rounds` times, takes a token from `receive`, logs it and gives the next
/// token to `pass_on`. Returns the tokens it saw.
fn relay(
    worker: usize,
    rounds: usize,
    log: &RefCell<Vec<String>>,
    receive: &mut dyn FnMut() -> u32,
    pass_on: &mut dyn FnMut(u32),
) -> Vec<u32> {
    let mut seen = Vec::new();
    for _ in 0..rounds {
        let token = receive();
        log.borrow_mut()
            .push(format!("worker {worker} got {token}"));
        seen.push(token);
        pass_on(token + 1);
    }
    seen
}

/// `workers` async_defs in a ring, each waiting on its own channel for a token and passing the
/// next token to its neighbour. Only the first one's token is there at the start; every other
/// receive suspends until the previous worker's send wakes it, whatever the executor.
fn relay_ring(workers: usize, rounds: usize, log: &Log) -> Vec<AsyncDef<'static, Vec<u32>>> {
    let total = u32::try_from(workers * rounds).expect("small ring");
    let (senders, receivers): (Vec<_>, Vec<_>) =
        (0..workers).map(|_| mpsc::unbounded::<u32>()).unzip();
    senders[0]
        .unbounded_send(0)
        .expect("the first receiver is alive");
    receivers
        .into_iter()
        .enumerate()
        .map(|(worker, mut receiver)| {
            let next = senders[(worker + 1) % workers].clone();
            let log = Rc::clone(log);
            async_def(move || {
                relay(
                    worker,
                    rounds,
                    &log,
                    &mut || awaitlet(receiver.next()).expect("the ring is still open"),
                    &mut |token| {
                        if token < total {
                            next.unbounded_send(token)
                                .expect("the neighbour is waiting");
                        }
                    },
                )
            })
        })
        .collect()
}

/// The log of [`relay_ring`]: tokens in order, each at the worker its turn falls to.
fn ring_order(workers: usize, rounds: usize) -> Vec<String> {
    (0..workers * rounds)
        .map(|token| format!("worker {} got {token}", token % workers))
        .collect()
}

/// The tokens worker `worker` of [`relay_ring`] sees.
fn ring_tokens(worker: usize, workers: usize, rounds: usize) -> Vec<u32> {
    (0..rounds)
        .map(|round| u32::try_from(round * workers + worker).expect("small ring"))
        .collect()
}

/// Returns `Pending` once, waking its task at once: a suspension that any executor resumes.
/// `futures` and pollster have no `yield_now` of their own.
struct YieldNow {
    yielded: bool,
}

fn yield_now() -> YieldNow {
    YieldNow { yielded: false }
}

impl Future for YieldNow {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.yielded {
            return Poll::Ready(());
        }
        self.yielded = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

const WORKERS: usize = 4;
const STEPS: usize = 3;
const NAP: Duration = Duration::from_millis(2);
/// The name of the threads of [`multi_thread_runtime`].
const RUNTIME_WORKER: &str = "runtime-worker";

fn current_thread_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime")
}

fn multi_thread_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(RUNTIME_WORKER)
        .enable_all()
        .build()
        .expect("a multi-threaded runtime")
}

// ---------------------------------------------------------------------------------------------
// tokio
// ---------------------------------------------------------------------------------------------

#[test]
fn tokio_current_thread_yields_interleave_async_defs_round_robin() {
    let log = new_log();
    let workers = steppers(WORKERS, STEPS, &log, || awaitlet(tokio::task::yield_now()));
    let results = current_thread_runtime().block_on(join_all(workers));
    assert_eq!(results, [0, 1, 2, 3]);
    assert_eq!(*log.borrow(), round_robin(WORKERS, STEPS));
}

#[test]
fn tokio_current_thread_async_defs_meet_at_a_barrier_then_sleep() {
    let log = RefCell::new(Vec::new());
    let barrier = tokio::sync::Barrier::new(WORKERS);
    let (log, barrier) = (&log, &barrier);
    let workers = (0..WORKERS).map(|worker| {
        async_def(move || {
            meet_then_nap(
                worker,
                log,
                &|| {
                    awaitlet(barrier.wait());
                },
                &|| awaitlet(tokio::time::sleep(NAP)),
            )
        })
    });
    current_thread_runtime().block_on(join_all(workers));
    assert_all_met(&log.borrow(), WORKERS);
}

#[test]
fn tokio_local_set_tasks_take_turns_at_yields() {
    let log = new_log();
    let local = tokio::task::LocalSet::new();
    let results = local.block_on(&current_thread_runtime(), async {
        let tasks: Vec<_> = steppers(WORKERS, STEPS, &log, || awaitlet(tokio::task::yield_now()))
            .into_iter()
            .map(tokio::task::spawn_local)
            .collect();
        join_all(tasks).await
    });
    let results: Vec<usize> = results.into_iter().map(Result::unwrap).collect();
    assert_eq!(results, [0, 1, 2, 3]);
    // `yield_now` promises that the other pending tasks run before the yielding one resumes,
    // not in which order.
    assert_took_turns(&log.borrow(), WORKERS, STEPS);
}

#[test]
fn tokio_local_set_in_a_multi_thread_runtime_passes_a_token_around_a_ring() {
    let log = new_log();
    let local = tokio::task::LocalSet::new();
    let results = local.block_on(&multi_thread_runtime(), async {
        let tasks: Vec<_> = relay_ring(WORKERS, STEPS, &log)
            .into_iter()
            .map(tokio::task::spawn_local)
            .collect();
        join_all(tasks).await
    });
    for (worker, seen) in results.into_iter().enumerate() {
        assert_eq!(seen.unwrap(), ring_tokens(worker, WORKERS, STEPS));
    }
    assert_eq!(*log.borrow(), ring_order(WORKERS, STEPS));
}

#[test]
fn tokio_local_set_in_a_multi_thread_runtime_async_defs_meet_then_sleep() {
    let log = new_log();
    let barrier = Rc::new(tokio::sync::Barrier::new(WORKERS));
    let local = tokio::task::LocalSet::new();
    local.block_on(&multi_thread_runtime(), async {
        let tasks: Vec<_> = (0..WORKERS)
            .map(|worker| {
                let (log, barrier) = (Rc::clone(&log), Rc::clone(&barrier));
                tokio::task::spawn_local(async_def(move || {
                    meet_then_nap(
                        worker,
                        &log,
                        &|| {
                            awaitlet(barrier.wait());
                        },
                        &|| awaitlet(tokio::time::sleep(NAP)),
                    )
                }))
            })
            .collect();
        for task in join_all(tasks).await {
            task.unwrap();
        }
    });
    assert_all_met(&log.borrow(), WORKERS);
}

// ---------------------------------------------------------------------------------------------
// smol
// ---------------------------------------------------------------------------------------------

#[test]
fn smol_yields_interleave_joined_async_defs_round_robin() {
    let log = new_log();
    let workers = steppers(WORKERS, STEPS, &log, || awaitlet(smol::future::yield_now()));
    let results = smol::block_on(join_all(workers));
    assert_eq!(results, [0, 1, 2, 3]);
    assert_eq!(*log.borrow(), round_robin(WORKERS, STEPS));
}

#[test]
fn smol_local_executor_passes_a_token_around_a_ring() {
    let log = new_log();
    let executor = smol::LocalExecutor::new();
    let tasks: Vec<_> = relay_ring(WORKERS, STEPS, &log)
        .into_iter()
        .map(|worker| executor.spawn(worker))
        .collect();
    let results = smol::block_on(executor.run(join_all(tasks)));
    for (worker, seen) in results.into_iter().enumerate() {
        assert_eq!(seen, ring_tokens(worker, WORKERS, STEPS));
    }
    assert_eq!(*log.borrow(), ring_order(WORKERS, STEPS));
}

#[test]
fn smol_local_executor_async_defs_meet_at_a_barrier_then_sleep_on_a_timer() {
    let log = new_log();
    let barrier = Rc::new(smol::lock::Barrier::new(WORKERS));
    let executor = smol::LocalExecutor::new();
    let tasks: Vec<_> = (0..WORKERS)
        .map(|worker| {
            let (log, barrier) = (Rc::clone(&log), Rc::clone(&barrier));
            executor.spawn(async_def(move || {
                meet_then_nap(
                    worker,
                    &log,
                    &|| {
                        awaitlet(barrier.wait());
                    },
                    &|| {
                        awaitlet(smol::Timer::after(NAP));
                    },
                )
            }))
        })
        .collect();
    smol::block_on(executor.run(join_all(tasks)));
    assert_all_met(&log.borrow(), WORKERS);
}

// ---------------------------------------------------------------------------------------------
// async-std
// ---------------------------------------------------------------------------------------------

#[test]
fn async_std_yields_interleave_joined_async_defs_round_robin() {
    let log = new_log();
    let workers = steppers(WORKERS, STEPS, &log, || {
        awaitlet(async_std::task::yield_now())
    });
    let results = async_std::task::block_on(join_all(workers));
    assert_eq!(results, [0, 1, 2, 3]);
    assert_eq!(*log.borrow(), round_robin(WORKERS, STEPS));
}

#[test]
fn async_std_spawn_local_passes_a_token_around_a_ring() {
    let log = new_log();
    let results = async_std::task::block_on(async {
        let tasks: Vec<_> = relay_ring(WORKERS, STEPS, &log)
            .into_iter()
            .map(async_std::task::spawn_local)
            .collect();
        join_all(tasks).await
    });
    for (worker, seen) in results.into_iter().enumerate() {
        assert_eq!(seen, ring_tokens(worker, WORKERS, STEPS));
    }
    assert_eq!(*log.borrow(), ring_order(WORKERS, STEPS));
}

#[test]
fn async_std_spawn_local_async_defs_meet_at_a_barrier_then_sleep() {
    let log = new_log();
    let barrier = Rc::new(async_std::sync::Barrier::new(WORKERS));
    async_std::task::block_on(async {
        let tasks: Vec<_> = (0..WORKERS)
            .map(|worker| {
                let (log, barrier) = (Rc::clone(&log), Rc::clone(&barrier));
                async_std::task::spawn_local(async_def(move || {
                    meet_then_nap(
                        worker,
                        &log,
                        &|| {
                            awaitlet(barrier.wait());
                        },
                        &|| awaitlet(async_std::task::sleep(NAP)),
                    )
                }))
            })
            .collect();
        join_all(tasks).await
    });
    assert_all_met(&log.borrow(), WORKERS);
}

// ---------------------------------------------------------------------------------------------
// futures::executor
// ---------------------------------------------------------------------------------------------

#[test]
fn futures_block_on_yields_interleave_joined_async_defs_round_robin() {
    let log = new_log();
    let workers = steppers(WORKERS, STEPS, &log, || awaitlet(yield_now()));
    let results = futures::executor::block_on(join_all(workers));
    assert_eq!(results, [0, 1, 2, 3]);
    assert_eq!(*log.borrow(), round_robin(WORKERS, STEPS));
}

#[test]
fn futures_local_pool_tasks_take_turns_at_yields() {
    let log = new_log();
    let mut pool = futures::executor::LocalPool::new();
    let spawner = pool.spawner();
    let handles: Vec<_> = steppers(WORKERS, STEPS, &log, || awaitlet(yield_now()))
        .into_iter()
        .map(|worker| {
            spawner
                .spawn_local_with_handle(worker)
                .expect("the pool is alive")
        })
        .collect();
    let results = pool.run_until(join_all(handles));
    assert_eq!(results, [0, 1, 2, 3]);
    assert_eq!(*log.borrow(), round_robin(WORKERS, STEPS));
}

#[test]
fn futures_local_pool_passes_a_token_around_a_ring() {
    let log = new_log();
    let mut pool = futures::executor::LocalPool::new();
    let spawner = pool.spawner();
    let handles: Vec<_> = relay_ring(WORKERS, STEPS, &log)
        .into_iter()
        .map(|worker| {
            spawner
                .spawn_local_with_handle(worker)
                .expect("the pool is alive")
        })
        .collect();
    let results = pool.run_until(join_all(handles));
    for (worker, seen) in results.into_iter().enumerate() {
        assert_eq!(seen, ring_tokens(worker, WORKERS, STEPS));
    }
    assert_eq!(*log.borrow(), ring_order(WORKERS, STEPS));
}

/// Each async_def tells a helper thread that it has arrived, then waits for the helper's reply
/// on a oneshot channel. The helper replies (last to first) only once all have arrived, so the
/// earlier ones are suspended until a wake from another thread reaches the executor.
fn wait_for_another_thread(block_on: fn(AsyncDefs) -> Vec<String>) {
    let (arrivals, arrived) = std_mpsc::channel::<(usize, oneshot::Sender<String>)>();
    let helper = thread::spawn(move || {
        let mut waiting: Vec<_> = arrived.iter().take(WORKERS).collect();
        while let Some((worker, reply)) = waiting.pop() {
            reply
                .send(format!("reply to {worker}"))
                .expect("the worker waits for its reply");
        }
    });
    let log = new_log();
    let workers = (0..WORKERS)
        .map(|worker| {
            let (arrivals, log) = (arrivals.clone(), Rc::clone(&log));
            async_def(move || {
                let text = RefCell::new(String::new());
                let meet_helper = || {
                    let (reply, replied) = oneshot::channel();
                    arrivals.send((worker, reply)).expect("the helper listens");
                    *text.borrow_mut() = awaitlet(replied).expect("the helper replies");
                };
                meet_then_nap(worker, &log, &meet_helper, &|| awaitlet(yield_now()));
                text.into_inner()
            })
        })
        .collect();
    let replies = block_on(workers);
    helper.join().expect("the helper thread finishes");
    let expected: Vec<String> = (0..WORKERS)
        .map(|worker| format!("reply to {worker}"))
        .collect();
    assert_eq!(replies, expected);
    assert_all_met(&log.borrow(), WORKERS);
}

/// The async_defs of [`wait_for_another_thread`].
type AsyncDefs = Vec<AsyncDef<'static, String>>;

#[test]
fn futures_block_on_resumes_async_defs_woken_from_another_thread() {
    wait_for_another_thread(|workers| futures::executor::block_on(join_all(workers)));
}

// ---------------------------------------------------------------------------------------------
// pollster
// ---------------------------------------------------------------------------------------------

#[test]
fn pollster_yields_interleave_joined_async_defs_round_robin() {
    let log = new_log();
    let workers = steppers(WORKERS, STEPS, &log, || awaitlet(yield_now()));
    let results = pollster::block_on(join_all(workers));
    assert_eq!(results, [0, 1, 2, 3]);
    assert_eq!(*log.borrow(), round_robin(WORKERS, STEPS));
}

#[test]
fn pollster_passes_a_token_around_a_ring_of_joined_async_defs() {
    let log = new_log();
    let results = pollster::block_on(join_all(relay_ring(WORKERS, STEPS, &log)));
    for (worker, seen) in results.into_iter().enumerate() {
        assert_eq!(seen, ring_tokens(worker, WORKERS, STEPS));
    }
    assert_eq!(*log.borrow(), ring_order(WORKERS, STEPS));
}

#[test]
fn pollster_resumes_async_defs_woken_from_another_thread() {
    wait_for_another_thread(|workers| pollster::block_on(join_all(workers)));
}

// ---------------------------------------------------------------------------------------------
// Ambient context
// ---------------------------------------------------------------------------------------------

tokio::task_local! {
    static REQUEST: &'static str;
}

/// Sync code reading the task-local `REQUEST` before and after each of its waits.
fn requests_seen(waits: usize) -> Vec<&'static str> {
    let mut seen = vec![REQUEST.get()];
    for _ in 0..waits {
        awaitlet(tokio::task::yield_now());
        seen.push(REQUEST.get());
    }
    seen
}

#[test]
fn a_task_local_set_by_the_outer_task_is_visible_in_the_sync_code_across_waits() {
    let (first, second, outside) = current_thread_runtime().block_on(async {
        tokio::join!(
            REQUEST.scope("first", async_def(|| requests_seen(3))),
            REQUEST.scope("second", async_def(|| requests_seen(3))),
            async_def(|| {
                awaitlet(tokio::task::yield_now());
                REQUEST.try_with(|request| *request).is_err()
            }),
        )
    });
    assert_eq!(first, ["first"; 4]);
    assert_eq!(second, ["second"; 4]);
    assert!(outside, "an async_def outside any scope sees no value");
}

#[test]
fn a_task_local_scope_awaited_inside_the_sync_code_shadows_the_outer_one_until_it_ends() {
    let seen = current_thread_runtime().block_on(REQUEST.scope(
        "outer",
        async_def(|| {
            let inner = awaitlet(REQUEST.scope("inner", async {
                tokio::task::yield_now().await;
                REQUEST.get()
            }));
            (inner, REQUEST.get())
        }),
    ));
    assert_eq!(seen, ("inner", "outer"));
}

/// The name of the parent of span `id` in the current `Registry`.
fn parent_name(id: &tracing::Id) -> Option<&'static str> {
    use tracing_subscriber::registry::LookupSpan;
    tracing::dispatcher::get_default(|dispatch| {
        let registry = dispatch
            .downcast_ref::<tracing_subscriber::Registry>()
            .expect("the default subscriber is a Registry");
        let span = registry.span(id).expect("the span is open");
        span.parent().map(|parent| parent.name())
    })
}

/// What sync code sees of the current span: its id and name before and after a wait, and the
/// parent of a span it opens itself.
#[derive(Debug, PartialEq)]
struct SpansSeen {
    before_wait: Option<tracing::Id>,
    after_wait: Option<tracing::Id>,
    name: Option<&'static str>,
    parent_of_own_span: Option<&'static str>,
}

fn spans_seen() -> SpansSeen {
    let before_wait = tracing::Span::current().id();
    awaitlet(tokio::task::yield_now());
    let current = tracing::Span::current();
    let own = tracing::info_span!("parse").entered();
    let parent_of_own_span = parent_name(&own.id().expect("the registry records spans"));
    SpansSeen {
        before_wait,
        after_wait: current.id(),
        name: current.metadata().map(|metadata| metadata.name()),
        parent_of_own_span,
    }
}

#[test]
fn the_span_entered_by_the_outer_task_is_current_in_the_sync_code_across_waits() {
    use tracing::Instrument;

    tracing::subscriber::with_default(tracing_subscriber::Registry::default(), || {
        let first = tracing::info_span!("first_request");
        let second = tracing::info_span!("second_request");
        let (seen_in_first, seen_in_second) = current_thread_runtime().block_on(async {
            tokio::join!(
                async_def(spans_seen).instrument(first.clone()),
                async_def(spans_seen).instrument(second.clone()),
            )
        });
        assert_eq!(
            seen_in_first,
            SpansSeen {
                before_wait: first.id(),
                after_wait: first.id(),
                name: Some("first_request"),
                parent_of_own_span: Some("first_request"),
            }
        );
        assert_eq!(
            seen_in_second,
            SpansSeen {
                before_wait: second.id(),
                after_wait: second.id(),
                name: Some("second_request"),
                parent_of_own_span: Some("second_request"),
            }
        );
        assert!(tracing::Span::current().is_none(), "no span leaks out");
    });
}

// ---------------------------------------------------------------------------------------------
// Multi-threaded runtimes
// ---------------------------------------------------------------------------------------------

/// Sync code that hands work to `compute` (which may run it anywhere) and checks that it is
/// itself still on the same thread afterwards.
fn square_elsewhere(number: u64, compute: &dyn Fn(u64) -> (u64, String)) -> (u64, String, bool) {
    let thread_before = thread::current().id();
    let (square, computed_on) = compute(number);
    (square, computed_on, thread::current().id() == thread_before)
}

#[test]
fn a_local_set_in_a_multi_thread_runtime_runs_async_defs_that_await_tasks_on_the_workers() {
    let runtime = multi_thread_runtime();
    let local = tokio::task::LocalSet::new();
    let caller = thread::current().id();
    let barrier = Rc::new(tokio::sync::Barrier::new(WORKERS));
    let results = local.block_on(&runtime, async {
        let tasks: Vec<_> = (0..WORKERS as u64)
            .map(|number| {
                let barrier = Rc::clone(&barrier);
                tokio::task::spawn_local(async_def(move || {
                    // All four wait here together, on the caller's thread.
                    awaitlet(barrier.wait());
                    let on_caller = thread::current().id() == caller;
                    let result = square_elsewhere(number, &|number| {
                        let worker_task = tokio::spawn(async move {
                            let name = thread::current().name().map(str::to_owned);
                            (number * number, name.unwrap_or_default())
                        });
                        awaitlet(worker_task).expect("the worker task finishes")
                    });
                    (on_caller, result)
                }))
            })
            .collect();
        join_all(tasks).await
    });
    for (number, result) in results.into_iter().enumerate() {
        let (on_caller, (square, computed_on, same_thread)) = result.unwrap();
        assert!(on_caller, "the sync code runs on the LocalSet's thread");
        assert!(same_thread, "and stays there across its wait");
        assert_eq!(square, (number * number) as u64);
        assert_eq!(computed_on, RUNTIME_WORKER);
    }
}

/// Sync parser: sums the numbers on the lines of `input`.
fn sum_lines(input: impl std::io::BufRead) -> std::io::Result<u64> {
    let mut sum = 0;
    for line in input.lines() {
        sum += line?.trim().parse::<u64>().map_err(std::io::Error::other)?;
    }
    Ok(sum)
}

#[test]
fn spawn_blocking_runs_async_defs_on_its_own_current_thread_runtime_for_a_multi_thread_caller() {
    use tokio::io::AsyncWriteExt;

    let runtime = multi_thread_runtime();
    let sums = runtime.block_on(async {
        let jobs = (1..=3u64).map(|job| {
            tokio::spawn(async move {
                // A tiny pipe: the sync parser drains it and suspends many times per job.
                let (mut feeding_end, parsing_end) = tokio::io::duplex(4);
                let feeder = tokio::spawn(async move {
                    for number in 1..=10 * job {
                        let line = format!("{number}\n");
                        feeding_end.write_all(line.as_bytes()).await.unwrap();
                    }
                });
                let sum = tokio::task::spawn_blocking(move || {
                    let own_runtime = current_thread_runtime();
                    own_runtime.block_on(async_def(|| {
                        sum_lines(awaitlet::io::tokio::SyncReader::with_capacity(
                            4,
                            parsing_end,
                        ))
                    }))
                })
                .await
                .expect("the blocking job finishes");
                feeder.await.expect("the feeder finishes");
                sum.expect("the numbers parse")
            })
        });
        let mut sums = Vec::new();
        for job in join_all(jobs).await {
            sums.push(job.expect("the job finishes"));
        }
        sums
    });
    let expected: Vec<u64> = (1..=3u64).map(|job| (1..=10 * job).sum()).collect();
    assert_eq!(sums, expected);
}

#[test]
fn a_std_thread_runs_async_defs_with_futures_block_on_for_a_multi_thread_caller() {
    let runtime = multi_thread_runtime();
    let words = runtime.block_on(async {
        let (reply, replied) = tokio::sync::oneshot::channel();
        let (words, mut word_stream) = mpsc::unbounded::<&'static str>();
        let counter = thread::spawn(move || {
            let log = new_log();
            let count = futures::executor::block_on(async_def(|| {
                let mut count = 0;
                while let Some(word) = awaitlet(word_stream.next()) {
                    log.borrow_mut().push(word.to_owned());
                    count += 1;
                }
                count
            }));
            reply
                .send((count, log.take()))
                .expect("the caller waits for the count");
        });
        for word in ["several", "words", "from", "the", "runtime"] {
            words.unbounded_send(word).expect("the counter listens");
            tokio::task::yield_now().await;
        }
        drop(words);
        let counted = replied.await.expect("the counter replies");
        counter.join().expect("the counter thread finishes");
        counted
    });
    assert_eq!(
        words,
        (
            5,
            vec!["several", "words", "from", "the", "runtime"]
                .into_iter()
                .map(str::to_owned)
                .collect()
        )
    );
}

/// A request to the worker pool: text to shout, and where to send the answer.
struct ShoutRequest {
    text: String,
    reply: tokio::sync::oneshot::Sender<(String, String)>,
}

/// Sync handler: upper-cases `text` word by word, waiting for the timer between words.
fn shout(text: &str, pause: &dyn Fn()) -> String {
    let mut shouted = Vec::new();
    for word in text.split(' ') {
        pause();
        shouted.push(word.to_uppercase());
    }
    shouted.join(" ")
}

#[test]
fn a_local_set_per_worker_thread_serves_requests_from_a_multi_thread_runtime() {
    const POOL_THREADS: usize = 3;
    const REQUESTS: usize = 12;

    let (requests, incoming) = smol::channel::unbounded::<ShoutRequest>();
    let pool: Vec<_> = (0..POOL_THREADS)
        .map(|index| {
            let incoming = incoming.clone();
            thread::Builder::new()
                .name(format!("local-worker-{index}"))
                .spawn(move || {
                    let local = tokio::task::LocalSet::new();
                    local.block_on(&current_thread_runtime(), async move {
                        let mut handlers = Vec::new();
                        while let Ok(request) = incoming.recv().await {
                            handlers.push(tokio::task::spawn_local(async move {
                                let shouted = async_def(|| {
                                    shout(&request.text, &|| {
                                        awaitlet(tokio::time::sleep(Duration::from_millis(1)))
                                    })
                                })
                                .await;
                                let name = thread::current().name().map(str::to_owned);
                                let answer = (shouted, name.unwrap_or_default());
                                request.reply.send(answer).expect("the caller waits");
                            }));
                        }
                        let served = handlers.len();
                        for handler in handlers {
                            handler.await.expect("the handler finishes");
                        }
                        served
                    })
                })
                .expect("a worker thread")
        })
        .collect();
    drop(incoming);

    let answers = multi_thread_runtime().block_on(async {
        let calls = (0..REQUESTS).map(|number| {
            let requests = requests.clone();
            tokio::spawn(async move {
                let (reply, replied) = tokio::sync::oneshot::channel();
                let text = format!("request number {number}");
                requests
                    .send(ShoutRequest { text, reply })
                    .await
                    .expect("the pool listens");
                replied.await.expect("the pool answers")
            })
        });
        join_all(calls).await
    });
    drop(requests);

    let served: usize = pool
        .into_iter()
        .map(|worker| worker.join().expect("the worker thread finishes"))
        .sum();
    assert_eq!(served, REQUESTS);
    for (number, answer) in answers.into_iter().enumerate() {
        let (shouted, served_by) = answer.expect("the call finishes");
        assert_eq!(shouted, format!("REQUEST NUMBER {number}"));
        assert!(served_by.starts_with("local-worker-"), "{served_by}");
    }
}

// ---------------------------------------------------------------------------------------------
// AsyncDef is !Send and !Sync
// ---------------------------------------------------------------------------------------------

/// Implemented twice for `Send` types, so naming it with an inferred marker fails to compile
/// for them ("type annotations needed"), and compiles for `!Send` ones.
trait AmbiguousIfSend<Marker> {
    fn check() {}
}
impl<T: ?Sized> AmbiguousIfSend<()> for T {}
impl<T: ?Sized + Send> AmbiguousIfSend<u8> for T {}

/// The same for `Sync`.
trait AmbiguousIfSync<Marker> {
    fn check() {}
}
impl<T: ?Sized> AmbiguousIfSync<()> for T {}
impl<T: ?Sized + Sync> AmbiguousIfSync<u8> for T {}

// A compile-time assertion: this crate stops compiling if `AsyncDef` or `AssertAwaitOccurs`
// becomes `Send` or `Sync`.
const _: fn() = || {
    <AsyncDef<'static, ()> as AmbiguousIfSend<_>>::check();
    <AsyncDef<'static, ()> as AmbiguousIfSync<_>>::check();
    <AssertAwaitOccurs<'static, ()> as AmbiguousIfSend<_>>::check();
    <AssertAwaitOccurs<'static, ()> as AmbiguousIfSync<_>>::check();
};

/// Tells at compile time whether `T` is `Send`: the inherent `is_send` exists only when it is,
/// and otherwise the trait's fallback is called.
struct SendProbe<T: ?Sized>(PhantomData<T>);

trait NotSendFallback {
    fn is_send(&self) -> bool {
        false
    }
}
impl<T: ?Sized> NotSendFallback for SendProbe<T> {}

impl<T: ?Sized + Send> SendProbe<T> {
    fn is_send(&self) -> bool {
        true
    }
}

#[test]
fn async_def_futures_are_not_send_while_the_values_they_carry_may_be() {
    assert!(
        SendProbe::<String>(PhantomData).is_send(),
        "the probe sees Send"
    );
    assert!(
        !SendProbe::<Rc<()>>(PhantomData).is_send(),
        "the probe sees !Send"
    );
    assert!(!SendProbe::<AsyncDef<'static, String>>(PhantomData).is_send());
    assert!(!SendProbe::<AssertAwaitOccurs<'static, String>>(PhantomData).is_send());
}
