//! Cancellation: dropping an `AsyncDef` while its function waits unwinds the function's stack
//! from the `awaitlet` call, before `drop` returns (rules 87-91, mapped to Rust in the bridge
//! docs). By hand, and through tokio's timeout, `select!` and task abort.

mod common;

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use awaitlet::{
    Cancelled, Greenlet, NoAwaitletContext, async_def, awaitlet, getcurrent, try_awaitlet,
};
use common::catch;

type Log = Rc<RefCell<Vec<String>>>;

/// Logs its name when dropped.
struct Noisy(&'static str, Log);

impl Drop for Noisy {
    fn drop(&mut self) {
        self.1.borrow_mut().push(format!("drop {}", self.0));
    }
}

/// Never ready; logs when dropped.
struct Forever(Log);

impl Future for Forever {
    type Output = ();

    fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
        Poll::Pending
    }
}

impl Drop for Forever {
    fn drop(&mut self) {
        self.0
            .borrow_mut()
            .push("drop in-flight future".to_string());
    }
}

fn poll_once<F: Future + Unpin>(future: &mut F) -> Poll<F::Output> {
    Pin::new(future).poll(&mut Context::from_waker(Waker::noop()))
}

fn entries(log: &Log) -> Vec<String> {
    log.borrow().clone()
}

#[test]
fn dropping_a_waiting_async_def_unwinds_its_stack_before_drop_returns() {
    let log = Log::default();
    let outer_log = log.clone();
    let mut future = async_def(move || {
        let _outer = Noisy("outer", outer_log.clone());
        fn deeper(log: &Log) {
            let _inner = Noisy("inner", log.clone());
            awaitlet(Forever(log.clone()));
            log.borrow_mut()
                .push("after the wait: unreachable".to_string());
        }
        deeper(&outer_log);
    });
    assert!(poll_once(&mut future).is_pending());
    assert!(entries(&log).is_empty());
    drop(future);
    assert_eq!(
        entries(&log),
        ["drop in-flight future", "drop inner", "drop outer"]
    );
}

#[test]
fn the_cancelled_function_sees_cancelled_at_its_awaitlet_call() {
    let seen = Rc::new(Cell::new(false));
    let seen_inside = seen.clone();
    let mut future = async_def(move || {
        let outcome = catch(|| awaitlet(std::future::pending::<()>()));
        seen_inside.set(outcome.unwrap_err().is::<Cancelled>());
    });
    assert!(poll_once(&mut future).is_pending());
    drop(future);
    assert!(seen.get());
}

#[test]
fn an_async_def_dropped_before_its_first_poll_never_runs_its_function() {
    // Rule 78; the closure (and what it owns) is dropped.
    let log = Log::default();
    let owned = Noisy("captured", log.clone());
    let ran = Rc::new(Cell::new(false));
    let ran_inside = ran.clone();
    let future = async_def(move || {
        let _owned = owned;
        ran_inside.set(true);
    });
    drop(future);
    assert!(!ran.get());
    assert_eq!(entries(&log), ["drop captured"]);
}

#[test]
fn a_function_that_swallows_cancelled_and_returns_has_its_value_dropped() {
    // Rule 88's intent: the function completes; nobody is left to take the value.
    let log = Log::default();
    let inside = log.clone();
    let mut future = async_def(move || {
        let _ = catch(|| awaitlet(Forever(inside.clone())));
        Noisy("returned value", inside.clone())
    });
    assert!(poll_once(&mut future).is_pending());
    drop(future);
    assert_eq!(
        entries(&log),
        ["drop in-flight future", "drop returned value"]
    );
}

#[test]
fn after_cancellation_awaitlet_raises_cancelled_again_unless_the_future_is_ready_at_once() {
    let results = Rc::new(RefCell::new(Vec::new()));
    let inside = results.clone();
    let mut future = async_def(move || {
        let first = catch(|| awaitlet(std::future::pending::<()>()));
        inside
            .borrow_mut()
            .push(first.unwrap_err().is::<Cancelled>());
        // A second wait on a pending future is cancelled at once.
        let second = catch(|| awaitlet(std::future::pending::<()>()));
        inside
            .borrow_mut()
            .push(second.unwrap_err().is::<Cancelled>());
        // A future that is ready at once still gives its value.
        inside.borrow_mut().push(awaitlet(async { true }));
        // try_awaitlet reports the pending case instead of raising.
        inside
            .borrow_mut()
            .push(try_awaitlet(std::future::pending::<()>()) == Err(NoAwaitletContext));
    });
    assert!(poll_once(&mut future).is_pending());
    drop(future);
    assert_eq!(*results.borrow(), [true, true, true, true]);
}

#[test]
fn destructors_running_during_cancellation_can_finish_ready_cleanup() {
    // Rule 88: an awaitlet in `finally` during cancellation: here, a destructor.
    struct Connection(Log);
    impl Drop for Connection {
        fn drop(&mut self) {
            let closed = awaitlet(async { "closed" });
            let flushed = try_awaitlet(std::future::pending::<()>()).is_err();
            self.0
                .borrow_mut()
                .push(format!("{closed}, pending flush refused: {flushed}"));
        }
    }
    let log = Log::default();
    let inside = log.clone();
    let mut future = async_def(move || {
        let _connection = Connection(inside.clone());
        awaitlet(Forever(inside.clone()));
    });
    assert!(poll_once(&mut future).is_pending());
    drop(future);
    assert_eq!(
        entries(&log),
        [
            "drop in-flight future",
            "closed, pending flush refused: true"
        ]
    );
}

#[test]
fn a_function_that_switches_away_while_cancelled_is_cancelled_again_when_control_returns() {
    let cancellations = Rc::new(Cell::new(0));
    let inside = cancellations.clone();
    let dropper = getcurrent();
    let mut future = async_def(move || {
        if catch(|| awaitlet(std::future::pending::<()>())).is_err() {
            inside.set(inside.get() + 1);
        }
        // Caught: hand control to a greenlet that switches straight back to the dropper.
        let bouncer = Greenlet::new(move |()| {
            let _ = dropper.switch::<_, ()>(());
        });
        let outcome = catch(|| bouncer.switch::<_, ()>(()));
        if outcome.is_err_and(|panic| panic.is::<Cancelled>()) {
            inside.set(inside.get() + 1);
        }
    });
    assert!(poll_once(&mut future).is_pending());
    drop(future);
    assert_eq!(cancellations.get(), 2);
}

#[test]
fn nested_async_defs_are_cancelled_innermost_first() {
    let log = Log::default();
    let outer_log = log.clone();
    let mut future = async_def(move || {
        let _outer = Noisy("outer", outer_log.clone());
        let inner_log = outer_log.clone();
        awaitlet(async_def(move || {
            let _inner = Noisy("inner", inner_log.clone());
            awaitlet(Forever(inner_log.clone()));
        }));
    });
    assert!(poll_once(&mut future).is_pending());
    drop(future);
    assert_eq!(
        entries(&log),
        ["drop in-flight future", "drop inner", "drop outer"]
    );
}

#[test]
fn an_async_def_polled_in_one_greenlet_can_be_dropped_in_another() {
    let log = Log::default();
    let inside = log.clone();
    let mut future = async_def(move || {
        let _guard = Noisy("guard", inside.clone());
        awaitlet(Forever(inside.clone()));
    });
    assert!(poll_once(&mut future).is_pending());
    let dropper = Greenlet::new(move |()| drop(future));
    dropper.switch::<_, ()>(()).unwrap();
    assert!(dropper.is_dead());
    assert_eq!(entries(&log), ["drop in-flight future", "drop guard"]);
}

#[test]
fn a_cancelled_stack_goes_back_to_the_pool() {
    // Warm the pool, then check that a cancelled async_def leaves it as it found it.
    let warm = async_def(|| ());
    drop(warm);
    let before = awaitlet::stack::pool_len();
    let mut future = async_def(|| awaitlet(std::future::pending::<()>()));
    assert!(poll_once(&mut future).is_pending());
    assert_eq!(awaitlet::stack::pool_len(), before - 1);
    drop(future);
    assert_eq!(awaitlet::stack::pool_len(), before);
}

fn current_thread_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a tokio runtime")
}

#[test]
fn tokio_timeout_cancels_the_waiting_function() {
    // Rule 90: the function sees the cancellation, the caller sees the timeout.
    let log = Log::default();
    let inside = log.clone();
    let outcome = current_thread_runtime().block_on(async {
        tokio::time::timeout(
            std::time::Duration::from_millis(5),
            async_def(|| {
                let _guard = Noisy("guard", inside.clone());
                let waited =
                    catch(|| awaitlet(tokio::time::sleep(std::time::Duration::from_secs(60))));
                inside.borrow_mut().push(format!(
                    "cancelled: {}",
                    waited.is_err_and(|panic| panic.is::<Cancelled>())
                ));
                std::panic::resume_unwind(Box::new(Cancelled));
            }),
        )
        .await
    });
    assert!(outcome.is_err(), "the timeout elapsed");
    assert_eq!(entries(&log), ["cancelled: true", "drop guard"]);
}

#[test]
fn tokio_select_cancels_the_losing_async_def() {
    let log = Log::default();
    let inside = log.clone();
    let winner = current_thread_runtime().block_on(async {
        let (sender, receiver) = tokio::sync::oneshot::channel::<u32>();
        tokio::select! {
            _ = async_def(|| {
                let _guard = Noisy("loser", inside.clone());
                // Waits on a channel nobody sends to (the sender is dropped only afterwards).
                let _ = awaitlet(receiver);
            }) => unreachable!("the loser never finishes"),
            value = async {
                tokio::task::yield_now().await;
                41 + 1
            } => {
                drop(sender);
                value
            }
        }
    });
    assert_eq!(winner, 42);
    assert_eq!(entries(&log), ["drop loser"]);
}

#[test]
fn tokio_task_abort_cancels_the_waiting_function() {
    // Rule 87: cancelling the outer task cancels the function; the task ends cancelled.
    let log = Log::default();
    let inside = log.clone();
    let join_error = current_thread_runtime().block_on(async {
        let local = tokio::task::LocalSet::new();
        local
            .run_until(async move {
                let (started_sender, started) = tokio::sync::oneshot::channel::<()>();
                let task = tokio::task::spawn_local(async_def(move || {
                    let _guard = Noisy("task", inside.clone());
                    started_sender.send(()).unwrap();
                    awaitlet(std::future::pending::<()>());
                }));
                started.await.unwrap();
                task.abort();
                task.await.unwrap_err()
            })
            .await
    });
    assert!(join_error.is_cancelled());
    assert_eq!(entries(&log), ["drop task"]);
}
