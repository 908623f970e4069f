//! The bridge: [`async_def`] runs plain synchronous code as a future, and [`awaitlet`] lets
//! that code wait for any future, from however deep in its call stack.
//!
//! ```
//! use awaitlet::{async_def, awaitlet};
//!
//! // A synchronous library function: no async, no .await, generic over how it gets data.
//! fn total_length(fetch: &dyn Fn(&str) -> String, keys: &[&str]) -> usize {
//!     keys.iter().map(|key| fetch(key).len()).sum()
//! }
//!
//! async fn fetch_async(key: &str) -> String {
//!     std::future::ready(format!("value of {key}")).await
//! }
//!
//! let total = pollster::block_on(async_def(|| {
//!     // Inside async_def, awaitlet turns the async fetch into a plain call.
//!     total_length(&|key| awaitlet(fetch_async(key)), &["a", "bb"])
//! }));
//! assert_eq!(total, "value of a".len() + "value of bb".len());
//! ```
//!
//! # How it works
//!
//! `async_def(f)` puts `f` on a greenlet of its own (a stack from the thread's pool) and
//! returns an [`AsyncDef`], a future. Polling it switches into the greenlet with the poll's
//! `Context` in reach; `awaitlet(fut)` polls `fut` with that same `Context` right there, on
//! the greenlet's stack. A ready future returns at once, with no switch; a pending one
//! suspends the greenlet back into the `AsyncDef`'s poll, which returns `Pending` to the
//! executor. The executor's waker was handed to `fut`, so it polls the `AsyncDef` again when
//! `fut` can make progress, and the greenlet resumes inside `awaitlet`, which polls again.
//!
//! ```text
//!   executor task                     async_def greenlet
//!   -------------                     ------------------
//!   AsyncDef::poll(cx) ── switch ──>  f() -> logic() -> awaitlet(fut)
//!                                                         fut.poll(cx) == Pending
//!   return Pending     <── switch ──
//!   ... fut wakes the task ...
//!   AsyncDef::poll(cx) ── switch ──>                      fut.poll(cx) == Ready(v)
//!                                     f() goes on with v, returns r
//!   return Ready(r)    <── switch ──
//! ```
//!
//! Nothing is boxed and no waker is wrapped: an `awaitlet` allocates nothing, and neither does
//! an `async_def` once the thread's stack pool is warm (`f` and its result live on the
//! greenlet's stack). The greenlet is an ordinary [`Greenlet`](crate::Greenlet): inside `f`,
//! [`getcurrent`](crate::getcurrent) names it and its parent is the greenlet polling it. One
//! thing sets it apart: only its `AsyncDef` resumes it. Between polls, `f` may borrow what the
//! `AsyncDef`'s owner has since freed (an `AsyncDef` may be leaked with `mem::forget`), so a
//! switch, throw or kill into it from anywhere else (through a handle `getcurrent()` gave out
//! inside `f`, or a trace hook's) panics and changes nothing. A greenlet that `f` started and
//! that finishes between polls (something else switched into it) cannot hand its result to
//! `f` either: the result is dropped, and a panic saying so goes to `f`'s parent instead (the
//! greenlet that last polled the `AsyncDef`), where it is raised at that greenlet's pending
//! switch.
//!
//! # Panics
//!
//! A panic in `f` propagates out of the `AsyncDef`'s poll, hence out of `.await` on it
//! (Python's rule 84). A panic inside the awaited future surfaces in `f` at the `awaitlet`
//! call, where `f` may catch it and carry on (rule 85).
//!
//! A function that is unwinding cannot wait: std's panic count belongs to the thread, so a
//! function suspended in the middle of an unwind would leave `std::thread::panicking()` true
//! for every other task on the thread (their `MutexGuard`s would poison mutexes, their
//! transaction guards would roll back). While `std::thread::panicking()` is true, `awaitlet`
//! polls its future once: a ready one gives its value, a pending one is dropped and
//! [`try_awaitlet`] returns `Err(NoAwaitletContext)` (`awaitlet` panics, which inside a
//! destructor run by the unwind aborts the process, as any panic there does). So a
//! `BufWriter` over an io adapter that flushes on drop during an unwind writes what it can
//! without waiting, and fails the rest, as the io adapters document. The same rule holds for
//! greenlet switches: see [Panics and switches](crate::greenlet#panics-and-switches).
//!
//! # Cancellation
//!
//! Dropping an `AsyncDef` whose `f` is waiting raises [`Cancelled`] (a panic payload, raised
//! without calling the panic hook) inside `f` at the `awaitlet` call. `f`'s stack unwinds:
//! destructors run innermost first, the in-flight future is dropped, and the stack goes back
//! to the pool, all before `drop` returns. An `AsyncDef` dropped before its first poll never
//! runs `f` (rule 78).
//!
//! `f` may catch `Cancelled` (with `catch_unwind`), as Python's function may catch
//! `CancelledError` (rules 87-91). What happens then, made safe for Rust:
//!
//! - `f` returns normally: its value is dropped, nobody is waiting for it (rule 88 completes
//!   the task with it; here the future is gone).
//! - `f` calls `awaitlet` again: the future is polled once, with a waker that does nothing. If
//!   it is ready at once, `awaitlet` returns its value (cleanup that need not wait still runs,
//!   as in rule 88's `finally`); if not, `Cancelled` is raised again and the future dropped. A
//!   cancelled function cannot really wait any more: nothing polls it, and its frames borrow
//!   from the code that dropped it. [`try_awaitlet`] returns `Err(NoAwaitletContext)` there
//!   instead of raising, which is what a destructor should use: a destructor run by the
//!   `Cancelled` unwind that lets `Cancelled` escape is a panic in a destructor during
//!   cleanup, which Rust turns into an abort.
//! - `f` switches to another greenlet: when control comes back to the dropping code,
//!   `Cancelled` is thrown into `f` again, until `f` has finished. `drop` never returns while
//!   `f`'s frames exist.
//!
//! In a build that aborts on panic (`panic = "abort"`), `Cancelled` cannot unwind anything:
//! dropping a pending `AsyncDef` leaves `f` suspended for good and leaks its stack, with one
//! line on stderr; `f`'s destructors do not run. Nothing can resume it (only its `AsyncDef`
//! could), so this is as sound as `mem::forget` of the `AsyncDef`.
//!
//! # Threads and executors
//!
//! `AsyncDef` is `!Send`: a suspended stack can hold `!Send` values and thread-local
//! addresses that no type can describe (the compiler may keep a thread-local's address across
//! the call that suspends), so it must stay on the thread that created it. Asked for a `Send`
//! future, the compiler says so by naming [`StaysOnItsThread`]. It needs no particular
//! executor: any that can poll a `!Send` future works.
//!
//! From a `Send` context (a task of `tokio::spawn` on a multi-threaded runtime, an axum
//! handler), the route is tokio-util's `LocalPoolHandle::spawn_pinned`: its function runs on
//! a pool thread that stays put and creates the `AsyncDef` there, and the `JoinHandle` that
//! comes back is `Send`. The pool threads run tokio, so `f` can await tokio's timers, sockets
//! and channels:
//!
//! ```
//! use awaitlet::{async_def, awaitlet};
//! use tokio_util::task::LocalPoolHandle;
//!
//! fn slow_double(n: u32) -> u32 {
//!     awaitlet(tokio::time::sleep(std::time::Duration::from_millis(1)));
//!     n * 2
//! }
//!
//! #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
//! async fn main() {
//!     let pool = LocalPoolHandle::new(2);
//!     // A task of the multi-threaded runtime: it may move between workers, so it must be Send.
//!     let task = tokio::spawn(async move {
//!         pool.spawn_pinned(|| async_def(|| slow_double(21))).await.unwrap()
//!     });
//!     assert_eq!(task.await.unwrap(), 42);
//! }
//! ```
//!
//! Elsewhere:
//!
//! - tokio: spawn it with `tokio::task::spawn_local` inside a `LocalSet` (on a current-thread
//!   runtime, or a `LocalSet` driven from a multi-threaded one), or run it with `block_on` of
//!   a current-thread runtime on a thread of its own (`spawn_blocking` gives one);
//! - smol and async-executor: a `LocalExecutor`; from a `Send` context, a `LocalExecutor` on a
//!   thread of its own fed through a channel (the [crate docs](crate#from-send-contexts) show
//!   it); async-std: `task::spawn_local`;
//! - futures: `LocalPool` or `executor::block_on`;
//! - a local executor per worker thread, fed through a channel, for a pool of them.
//!
//! # Differences from Python's awaitlet
//!
//! - `awaitlet` accepts any [`IntoFuture`]; the type system rules out Python's
//!   "can't be used in 'await' expression" (rule 76).
//! - Outside `async_def`, `awaitlet` panics with [`NoAwaitletContext`]'s message and drops the
//!   future (Python closes a coroutine, rule 74); [`try_awaitlet`] returns the error instead.
//! - Nested `async_def` (rule 93) works to any depth, but the inner greenlet's parent is the
//!   outer function's greenlet, which polls it, not the thread's driver.
//! - Cancellation is dropping the future; see above for a function that catches it.
//! - A greenlet switch to the greenlet polling the `AsyncDef`, from `f` itself or from a
//!   greenlet it started, is not awaited as Python does (rules 82-83): it makes that poll panic
//!   (there is no value to await), or aborts the process if `f` is inside a future's poll.
//! - Between polls, only the `AsyncDef` may resume `f`'s greenlet (see above); Python lets any
//!   greenlet switch into it.
//! - `assert_await_occurs` counts only real suspensions: an `awaitlet` whose future is ready
//!   at once is no wait (Python counts every `awaitlet` call, rule 82).
//! - Python's contextvars (rule 95) have no single Rust equivalent; thread-locals, tokio's
//!   task-locals and `tracing`'s current span are all visible inside `f`, since it runs inside
//!   the poll, on the poller's thread.
//!
//! # Rule map
//!
//! Python's awaitlet (0.0.1) behaves by the numbered rules below (68-95, continuing the
//! greenlet's, which [`crate::greenlet`] maps), each observed on the real thing; every row says
//! what its rules cover, how they map to this crate, and the tests that check them (files under
//! `tests/`; a doctest is named by the item it documents). Where Rust's model forces a
//! difference, the row says so.
//!
//! | Rules | In Rust | Checked by |
//! |---|---|---|
//! | 68 (module surface, `__version__`, helper submodules) | the crate root re-exports [`async_def`], [`awaitlet`], [`NoAwaitletContext`] and [`NoAwaitOccurred`], with [`AsyncDef`], [`AssertAwaitOccurs`], [`StaysOnItsThread`], [`Cancelled`], [`try_awaitlet`] and [`in_async_def`]; the version is the crate's; the typing and testing helpers have no counterpart | — |
//! | 69-70 | [`async_def`]`(f)` takes a closure `f: FnOnce() -> R` and returns an [`AsyncDef`], a future of `R`; the keyword argument is the method [`AsyncDef::assert_await_occurs`]. [`awaitlet`]`(fut)` takes any [`IntoFuture`] and returns its output | doctests on [`async_def`], [`awaitlet`], [`AsyncDef::assert_await_occurs`] |
//! | 71 | [`NoAwaitletContext`] and [`NoAwaitOccurred`]: unit structs implementing `std::error::Error`, with Python's messages. [`awaitlet`] panics with [`NoAwaitletContext`]'s message (the payload is the message) and [`try_awaitlet`] returns the struct; [`NoAwaitOccurred`] is the `Err` of an [`AssertAwaitOccurs`] | `bridge::awaitlet_outside_async_def_panics_with_pythons_message`, `assert_await_occurs_fails_only_when_the_function_never_waited`; `io::futures_io_adapters::outside_async_def_every_call_is_an_error_wrapping_no_awaitlet_context` |
//! | 72 | not exported by Python: no counterpart. A cancellation is told by its payload type (`payload.is::<Cancelled>()`), and `f` runs on an ordinary [`Greenlet`](crate::Greenlet) (rule 79) | — |
//! | 73 | where no `async_def` function is running, [`awaitlet`] panics with [`NoAwaitletContext`]'s message, [`try_awaitlet`] returns it and [`in_async_def`] is false: on main, on a thread that never made a greenlet, in a plain greenlet started by `f`, and inside a future that `awaitlet` is polling (that code runs for the poller: `awaitlet` calls do not nest) | `bridge::awaitlet_outside_async_def_panics_with_pythons_message`, `awaitlet_in_a_plain_greenlet_started_by_the_function_has_no_context`, `awaitlet_inside_a_future_that_awaitlet_polls_has_no_context`; `bridge_misuse::awaitlet_in_a_greenlet_the_function_started_panics_there_and_the_function_goes_on`, `awaitlet_inside_a_future_that_awaitlet_polls_panics_there_and_the_function_goes_on`, `awaitlet_on_a_thread_that_never_made_a_greenlet_panics_cleanly` |
//! | 74 | the future, moved into the call, is dropped unpolled, whatever its type (Python closes a coroutine and leaves other awaitables alone; dropping is Rust's way of disposing of any future) | `bridge::awaitlet_outside_async_def_drops_the_future_unpolled`; `bridge_misuse::awaitlet_in_a_greenlet_the_function_started_panics_there_and_the_function_goes_on` |
//! | 75 | `awaitlet(fut)` is `fut.await` in the [`AsyncDef`]'s task: `fut` is polled with the executor's `Context` and its output returned as is (moved, of any type). A future ready at once returns with no switch and no `Pending`; each `Pending` of `fut` is one `Pending` of the [`AsyncDef`], where other tasks run | `bridge::a_ready_future_returns_without_suspending`, `each_pending_poll_of_the_awaited_future_is_one_pending_poll_of_the_async_def` |
//! | 76 | cannot happen: the argument must implement [`IntoFuture`] (the bound on [`awaitlet`] and [`try_awaitlet`]), so `awaitlet(5)` does not compile | doctest on [`awaitlet`] (compile_fail) |
//! | 77 | any [`IntoFuture`]: `async` blocks and `async fn` calls, hand-written futures, a spawned task's `JoinHandle`, another [`AsyncDef`] (nesting, rule 93) | `bridge::a_ready_future_returns_without_suspending`, `nested_async_defs_work_to_any_depth`; `bridge_executors::a_local_set_in_a_multi_thread_runtime_runs_async_defs_that_await_tasks_on_the_workers` |
//! | 78 | [`async_def`] only builds the [`AsyncDef`]; `f` starts at its first poll and runs synchronously up to its first pending wait. One dropped before its first poll never runs `f` (the closure and its captures are dropped) | `bridge::the_function_starts_at_the_first_poll_and_runs_up_to_its_first_wait`; `bridge_cancel::an_async_def_dropped_before_its_first_poll_never_runs_its_function` |
//! | 79 | each [`async_def`] runs `f` on a new [`Greenlet`](crate::Greenlet), which [`getcurrent`](crate::getcurrent) names inside `f`; its parent is the greenlet polling the [`AsyncDef`] (the executor's, normally main) | `bridge::the_function_runs_in_a_new_greenlet_whose_parent_is_the_poller`; `bridge_misuse::a_greenlet_keeping_a_suspended_async_def_it_polled_must_be_killed_explicitly` |
//! | 80 | no argument list and no kwargs: `f` is a closure, and its captures (moved or borrowed: `f` need not be `'static`) are its arguments | `bridge::the_function_may_borrow_mutably_from_the_caller` |
//! | 81 | the [`AsyncDef`]'s output is `f`'s value as is, even when it is a future (nothing awaits it) | `bridge::the_return_value_comes_back_verbatim_even_when_it_is_a_future` |
//! | 82 | [`AsyncDef::assert_await_occurs`] gives an [`AssertAwaitOccurs`], whose output is `Err(NoAwaitOccurred)` when `f` returned without ever suspending (its side effects done); a panic in `f` takes precedence. Only a real suspension counts: an `awaitlet` whose future is ready at once is no wait (Python counts every `awaitlet` call), and a manual switch to the poller is refused (rule 83) | `bridge::assert_await_occurs_fails_only_when_the_function_never_waited`, `assert_await_occurs_lets_a_panic_take_precedence`; doctest on [`AsyncDef::assert_await_occurs`] |
//! | 83 | only `f`'s own greenlet resumes a poll, and only the [`AsyncDef`] resumes `f`'s greenlet: between polls, a switch, throw or kill into it panics and changes nothing (`f` may borrow what the [`AsyncDef`]'s owner has since freed, after a `mem::forget`, say; a value sent is dropped). Within a poll, `f`'s greenlet is an ordinary greenlet. A greenlet switch into the poller from another greenlet (a child of `f`, say) is not awaited as in Python: that poll panics, and so do later ones while `f` is stuck outside `awaitlet`; dropping the [`AsyncDef`] still unwinds `f`. Made while `f` is inside an awaited future's poll, the switch aborts the process. Polling the [`AsyncDef`] from a greenlet that `f` started panics | `bridge_misuse::a_child_greenlet_switching_to_the_poller_makes_the_poll_panic_and_the_drop_still_unwinds`, `a_switch_to_the_poller_from_inside_an_awaited_futures_poll_aborts_the_process`, `polling_an_async_def_from_a_greenlet_its_own_function_started_panics`, `switches_throws_and_kills_into_a_function_between_polls_are_refused`, `a_value_switched_in_between_polls_is_dropped_with_the_refusal`, `a_leaked_async_def_function_never_runs_again`, `code_run_by_re_parenting_on_a_poll_cannot_resume_the_function`, `the_function_switching_to_its_poller_from_inside_an_awaited_futures_poll_aborts_the_process` |
//! | 84 | a panic in `f`, before or after a wait, comes out of the [`AsyncDef`]'s poll (so out of `.await` on it) with the same payload, of any type, [`Cancelled`] included; later polls panic ("polled after it completed") | `bridge::a_panic_in_the_function_propagates_out_of_the_async_def_unchanged`; `bridge_misuse::a_payload_panicking_on_drop_passes_out_of_async_def_and_greenlets_undropped`, `a_function_raising_cancelled_by_hand_is_an_ordinary_panic_of_the_async_def`, `polling_a_finished_async_def_panics_every_time_however_it_finished` |
//! | 85 | a panic in the awaited future's poll happens on `f`'s stack, at the `awaitlet` call: `f` may catch it (`catch_unwind`) and wait again; uncaught, it leaves the [`AsyncDef`] with the same payload. A backtrace stands for the traceback | `bridge::a_panic_in_the_awaited_future_surfaces_at_the_awaitlet_call_and_can_be_caught`, `an_uncaught_panic_from_the_awaited_future_leaves_the_async_def`; `bridge_misuse::a_payload_panicking_on_drop_passes_out_of_async_def_and_greenlets_undropped` |
//! | 86 | exception chaining: no counterpart (a panic has no cause; an error's `source()` is its own type's business) | — |
//! | 87 | cancelling is dropping the [`AsyncDef`] (a task abort, a losing `select!` branch, a plain `drop`): [`Cancelled`], which carries no message, is raised in `f` at its `awaitlet` call, and `f`'s stack unwinds (destructors innermost first, the in-flight future dropped) before `drop` returns; uncaught, the task ends cancelled | `bridge_cancel::the_cancelled_function_sees_cancelled_at_its_awaitlet_call`, `dropping_a_waiting_async_def_unwinds_its_stack_before_drop_returns`, `tokio_task_abort_cancels_the_waiting_function`, `tokio_select_cancels_the_losing_async_def`; doctest on [`Cancelled`] |
//! | 88 | `f` may catch [`Cancelled`], but the future is gone and so is the code awaiting it: a value `f` then returns is dropped (Python completes the task with it). A later `awaitlet` polls its future once with a waker that does nothing: ready, it gives the value, so cleanup in a destructor (Python's `finally`) still runs; pending, it raises [`Cancelled`] again (Python lets the new wait proceed), and [`try_awaitlet`] returns `Err(NoAwaitletContext)` instead. See [Cancellation](self#cancellation) | `bridge_cancel::a_function_that_swallows_cancelled_and_returns_has_its_value_dropped`, `after_cancellation_awaitlet_raises_cancelled_again_unless_the_future_is_ready_at_once`, `destructors_running_during_cancellation_can_finish_ready_cleanup`; `bridge_misuse::awaitlet_after_a_tokio_timeout_cancelled_the_function_refuses_to_wait_on_anything_pending`, `an_async_def_dropped_during_unwinding_can_wait_again_and_see_cancelled`; `io::futures_io_adapters::buffered_writer_dropped_by_cancellation_does_not_abort` |
//! | 89 | a future that itself panics with [`Cancelled`] is an ordinary panic (rule 85): raised at the `awaitlet` call and, uncaught, out of the [`AsyncDef`] | `bridge::a_future_panicking_with_cancelled_is_an_ordinary_panic_at_the_awaitlet_call`; `bridge_misuse::a_function_raising_cancelled_by_hand_is_an_ordinary_panic_of_the_async_def` (raised by `f` itself) |
//! | 90 | a timeout around the [`AsyncDef`] (`tokio::time::timeout`) drops it when it elapses: `f` sees [`Cancelled`], the caller gets the timeout's error. A timeout around the awaited future is that future's own output: `awaitlet` returns its `Err` (or whatever the timeout yields) to `f` | `bridge_cancel::tokio_timeout_cancels_the_waiting_function`; `bridge_misuse::awaitlet_after_a_tokio_timeout_cancelled_the_function_refuses_to_wait_on_anything_pending`; `bridge_storm::tokio_cancellation_storm_drops_every_guard_once_and_returns_every_stack`, `smol_cancellation_storm_drops_every_guard_once_and_returns_every_stack` |
//! | 91 | whatever drops a pending [`AsyncDef`] cancels it as above: Python's `close()` is `drop`, and [`AsyncDef`]s left in locals and thread-locals when their thread exits see [`Cancelled`] once. A function that catches it and waits again gets [`Cancelled`] again; one that switches elsewhere is cancelled again when control comes back; `drop` neither returns while `f`'s frames exist nor panics (a panic `f` ends with is discarded), where Python's `close()` raises `RuntimeError` | `thread_stress::threads_run_their_own_greenlets_and_bridges_and_exit_with_them_suspended`; `bridge_cancel::after_cancellation_awaitlet_raises_cancelled_again_unless_the_future_is_ready_at_once`, `a_function_that_switches_away_while_cancelled_is_cancelled_again_when_control_returns`; `bridge_misuse::a_panic_after_the_function_caught_cancelled_is_discarded_by_the_drop` |
//! | 92 | [`AsyncDef`]s joined in one task or spawned as local tasks interleave exactly as plain futures do at their real suspension points: round-robin at yields, a token passed around a ring, all suspended at once at a barrier; a wake from another thread resumes them | `bridge_executors::tokio_current_thread_yields_interleave_async_defs_round_robin`, `tokio_local_set_tasks_take_turns_at_yields`, `smol_yields_interleave_joined_async_defs_round_robin`, `async_std_yields_interleave_joined_async_defs_round_robin`, `futures_block_on_yields_interleave_joined_async_defs_round_robin`, `futures_local_pool_tasks_take_turns_at_yields`, `pollster_yields_interleave_joined_async_defs_round_robin`, `pollster_passes_a_token_around_a_ring_of_joined_async_defs`, `tokio_current_thread_async_defs_meet_at_a_barrier_then_sleep`, `futures_block_on_resumes_async_defs_woken_from_another_thread`; `bridge_storm::tokio_cancellation_storm_drops_every_guard_once_and_returns_every_stack`, `smol_cancellation_storm_drops_every_guard_once_and_returns_every_stack` |
//! | 93 | `awaitlet(async_def(inner))` nests to any depth, and dropping the outer one cancels innermost first. Unlike Python, the inner greenlet's parent is the outer `f`'s greenlet, which polls it, not the executor's; plain calls inside `f` share its greenlet | `bridge::nested_async_defs_work_to_any_depth`; `bridge_cancel::nested_async_defs_are_cancelled_innermost_first` |
//! | 94 | any thread that runs an executor; [`AsyncDef`] is `!Send` and `!Sync`, so it stays on the thread that made it, and a `Send` bound on it fails to compile naming [`StaysOnItsThread`] first: from a multi-threaded runtime, use tokio-util's `LocalPoolHandle::spawn_pinned`, a `LocalSet`, `spawn_blocking` with a current-thread runtime, or a thread of its own (see [Threads and executors](self#threads-and-executors)) | `compile_fail::spawning_an_async_def_names_stays_on_its_thread_first`; doctest in [Threads and executors](self#threads-and-executors) (`spawn_pinned`); `send_contexts::tokio_spawn_on_a_multi_thread_runtime_reaches_async_defs_through_a_pinned_pool`, `axum_handlers_call_sync_code_through_a_pinned_pool`, `smol_executor_tasks_reach_async_defs_through_a_local_executor_thread`; `bridge_executors::async_def_futures_are_not_send_while_the_values_they_carry_may_be`, `a_local_set_in_a_multi_thread_runtime_runs_async_defs_that_await_tasks_on_the_workers`, `spawn_blocking_runs_async_defs_on_its_own_current_thread_runtime_for_a_multi_thread_caller`, `a_std_thread_runs_async_defs_with_futures_block_on_for_a_multi_thread_caller`, `a_local_set_per_worker_thread_serves_requests_from_a_multi_thread_runtime`; `thread_stress::threads_run_their_own_greenlets_and_bridges_and_exit_with_them_suspended`; doctests on [`AsyncDef`], [`AssertAwaitOccurs`] and [`StaysOnItsThread`] (compile_fail) |
//! | 95 | contextvars have no single counterpart. `f` runs inside the executor's poll, on the poller's thread, so what the task set is visible in `f` across waits: thread-locals, tokio task-locals, the current `tracing` span (a span `f` enters is its child); separate tasks keep their own values, and a task-local scope awaited inside `f` shadows the outer value until it ends. A task-local is set only by a scope, so a value `f` leaves for the task goes in a thread-local or a shared cell | `bridge_executors::a_task_local_set_by_the_outer_task_is_visible_in_the_sync_code_across_waits`, `a_task_local_scope_awaited_inside_the_sync_code_shadows_the_outer_one_until_it_ends`, `the_span_entered_by_the_outer_task_is_current_in_the_sync_code_across_waits` |
//!
//! SQLAlchemy's variants (rules 96-102) need no rows of their own. `greenlet_spawn` with
//! `_require_await=True` is [`async_def`] with [`AsyncDef::assert_await_occurs`] (96), `await_only`
//! (`await_` in 2.1) is [`awaitlet`], disposing of the refused future as 2.0 does (97, 101), and
//! `in_greenlet()` is [`in_async_def`] (99). SQLAlchemy's exception classes, messages and error
//! codes are its own. `await_fallback` (98) has no counterpart: the crate knows no event loop to
//! fall back on, so outside `async_def` [`awaitlet`] panics and [`try_awaitlet`] returns the error,
//! and a caller that wants a fallback calls an executor's `block_on` itself. `AsyncAdaptedLock` and
//! the exception classifiers (100) are SQLAlchemy internals (here a cancellation is recognised by
//! its [`Cancelled`] payload); the lazy import (101) is packaging; and with a single bridge there
//! is no marker to share (102).
//!
//! Rules with no test, or with a part that no test checks:
//!
//! - 68, 72, 86: no counterpart, nothing to test.
//! - 91: no test drops an executor (a runtime or `LocalSet` at shutdown) with an [`AsyncDef`] task
//!   still pending; the cited test covers [`AsyncDef`]s held in locals and thread-locals at thread
//!   exit.
//! - 95: no test has `f` leave a value for the task to read after the [`AsyncDef`] finishes.

use std::fmt;
use std::future::{Future, IntoFuture};
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::greenlet::{DrivenGreenlet, NotAwaited, await_in_driven, in_driven};

pub use crate::greenlet::Cancelled;

/// Runs the synchronous `f` as a future, on a greenlet of its own, so that `f` (and anything
/// it calls) can wait for futures with [`awaitlet`]. `f` starts when the future is first
/// polled; the future's output is `f`'s value.
///
/// `f` may borrow from the caller: the future cannot outlive those borrows, and dropping it
/// unwinds `f` (see [Cancellation](self#cancellation)).
///
/// # Panics
///
/// If no stack can be had for the greenlet (the [`StackError`](crate::stack::StackError) says
/// which limit was hit).
///
/// ```
/// use awaitlet::{async_def, awaitlet};
///
/// let name = String::from("world");
/// let greeting = pollster::block_on(async_def(|| {
///     let punctuation = awaitlet(async { "!" });
///     format!("hello, {name}{punctuation}")
/// }));
/// assert_eq!(greeting, "hello, world!");
/// ```
#[track_caller]
pub fn async_def<'a, R, F: FnOnce() -> R + 'a>(f: F) -> AsyncDef<'a, R> {
    match DrivenGreenlet::new(f, crate::stack::default_stack_size()) {
        Ok(greenlet) => AsyncDef {
            _stays_on_its_thread: PhantomData,
            greenlet,
        },
        Err(error) => panic!("awaitlet: cannot get a stack for async_def: {error}"),
    }
}

/// Why an [`AsyncDef`] cannot be sent to another thread: the type the compiler names when a
/// `Send` future is asked for, as in `tokio::spawn(async_def(..))` on a multi-threaded runtime.
///
/// [`AsyncDef`] and [`AssertAwaitOccurs`] are `!Send` on purpose, and hold a
/// `PhantomData<*const StaysOnItsThread>` to say so. Their function runs on a stack of its own,
/// and while it waits that stack is suspended with whatever the function's frames hold:
/// `!Send` values (`Rc`, `RefCell` borrows, `MutexGuard`s) that no type can describe, and the
/// addresses of the thread's thread-locals, which the compiler may keep across the call that
/// suspends. Resumed on another thread, that code would share an `Rc` across threads and read
/// the first thread's thread-locals. No `unsafe impl Send` can make that sound, so the future
/// stays on the thread that created it. This type is never constructed: it is only a name.
///
/// From a `Send` context (a task of `tokio::spawn` on a multi-threaded runtime, an axum
/// handler), create the future on a thread that stays put and carry its output back:
///
/// - tokio: tokio-util's `LocalPoolHandle::spawn_pinned(|| async_def(..))`: the function that
///   creates the future runs on a pool thread and the future never leaves it, while the
///   `JoinHandle` that comes back is `Send`. Code that already runs inside a `LocalSet` can
///   use `tokio::task::spawn_local`;
/// - smol and async-executor: a `LocalExecutor` on a thread of its own.
///
/// [Threads and executors](self#threads-and-executors) has these routes and more, with an
/// example of `spawn_pinned`.
///
/// Asking for `Send` fails to compile:
///
/// ```compile_fail,E0277
/// fn needs_send<T: Send>(_: T) {}
/// needs_send(awaitlet::async_def(|| 1));
/// ```
///
/// while a `LocalSet` runs it:
///
/// ```
/// use awaitlet::{async_def, awaitlet};
///
/// let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
/// let local = tokio::task::LocalSet::new();
/// let answer = local.block_on(&runtime, async {
///     tokio::task::spawn_local(async_def(|| awaitlet(async { 40 }) + 2)).await.unwrap()
/// });
/// assert_eq!(answer, 42);
/// ```
pub enum StaysOnItsThread {}

/// The future made by [`async_def`]: polling it runs the function until it waits on a pending
/// future or returns. `Unpin`, `!Send` and `!Sync`: it stays on the thread that created it (see
/// [`StaysOnItsThread`] for why, and for the route from `Send` contexts).
///
/// ```compile_fail,E0277
/// fn assert_send<T: Send>(_: T) {}
/// assert_send(awaitlet::async_def(|| ()));
/// ```
#[must_use = "an AsyncDef does nothing unless polled"]
pub struct AsyncDef<'a, R> {
    /// The shallowest `!Send` part (and the first field), so that the compiler names
    /// [`StaysOnItsThread`] first when asked to send the future.
    _stays_on_its_thread: PhantomData<*const StaysOnItsThread>,
    greenlet: DrivenGreenlet<'a, R>,
}

impl<'a, R> AsyncDef<'a, R> {
    /// Runs the function on a stack of `bytes` bytes instead of the thread's
    /// [`default_stack_size`](crate::stack::default_stack_size).
    ///
    /// # Panics
    ///
    /// If the future has already been polled, or no stack of that size can be had (too small,
    /// too large, or a system limit; the message names it).
    ///
    /// ```
    /// let deep = awaitlet::async_def(|| (0..1000u64).sum::<u64>()).stack_size(8 << 20);
    /// assert_eq!(pollster::block_on(deep), 499_500);
    /// ```
    #[track_caller]
    pub fn stack_size(mut self, bytes: usize) -> AsyncDef<'a, R> {
        if let Err(error) = self.greenlet.resize(bytes) {
            panic!("awaitlet: cannot get a {bytes}-byte stack for async_def: {error}");
        }
        self
    }

    /// Makes the future fail with [`NoAwaitOccurred`] if the function returns without ever
    /// having waited for a pending future (Python's `assert_await_occurs=True`, rule 82). A
    /// panic in the function still propagates.
    ///
    /// What counts is a real suspension: a future that happens to be ready when `awaitlet`
    /// first polls it (say, one completed by another thread in the meantime) is no wait.
    ///
    /// ```
    /// use awaitlet::{NoAwaitOccurred, async_def, awaitlet};
    ///
    /// let no_wait = async_def(|| awaitlet(async { 1 })).assert_await_occurs();
    /// assert_eq!(pollster::block_on(no_wait), Err(NoAwaitOccurred));
    /// ```
    pub fn assert_await_occurs(self) -> AssertAwaitOccurs<'a, R> {
        AssertAwaitOccurs {
            _stays_on_its_thread: PhantomData,
            inner: self,
        }
    }
}

impl<R> Future for AsyncDef<'_, R> {
    type Output = R;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<R> {
        self.get_mut().greenlet.poll(cx)
    }
}

impl<R> fmt::Debug for AsyncDef<'_, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncDef").finish_non_exhaustive()
    }
}

/// An [`AsyncDef`] whose output is `Err(NoAwaitOccurred)` when the function never waited; made
/// by [`AsyncDef::assert_await_occurs`]. `Unpin`, `!Send` and `!Sync`, like the [`AsyncDef`]
/// (see [`StaysOnItsThread`]).
///
/// ```compile_fail,E0277
/// fn needs_send<T: Send>(_: T) {}
/// needs_send(awaitlet::async_def(|| 1).assert_await_occurs());
/// ```
#[must_use = "an AssertAwaitOccurs does nothing unless polled"]
pub struct AssertAwaitOccurs<'a, R> {
    /// The shallowest `!Send` part (and the first field), so that the compiler names
    /// [`StaysOnItsThread`] first when asked to send the future.
    _stays_on_its_thread: PhantomData<*const StaysOnItsThread>,
    inner: AsyncDef<'a, R>,
}

impl<R> fmt::Debug for AssertAwaitOccurs<'_, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AssertAwaitOccurs")
            .field("inner", &self.inner)
            .finish()
    }
}

impl<R> Future for AssertAwaitOccurs<'_, R> {
    type Output = Result<R, NoAwaitOccurred>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = &mut self.get_mut().inner;
        inner.greenlet.poll(cx).map(|value| {
            if inner.greenlet.awaited() {
                Ok(value)
            } else {
                Err(NoAwaitOccurred)
            }
        })
    }
}

/// Waits for `fut` from synchronous code running inside [`async_def`], and returns its output.
/// A future that is ready at once costs one poll; a pending one suspends the function until the
/// executor polls the `AsyncDef` again.
///
/// # Panics
///
/// Outside `async_def` (or inside a future that `awaitlet` itself is polling), with
/// [`NoAwaitletContext`]'s message; [`try_awaitlet`] returns that error instead. A panic in
/// `fut` continues here. When the `AsyncDef` was dropped, raises [`Cancelled`].
///
/// ```
/// use awaitlet::{async_def, awaitlet};
///
/// fn parse_number(read: impl Fn() -> String) -> u32 {
///     read().trim().parse().unwrap()
/// }
///
/// let n = pollster::block_on(async_def(|| parse_number(|| awaitlet(async { " 42\n".to_string() }))));
/// assert_eq!(n, 42);
/// ```
///
/// Only what can be awaited can be passed (Python's `awaitlet(5)` fails when it runs, rule 76):
///
/// ```compile_fail
/// let n: i32 = awaitlet::awaitlet(5);
/// ```
#[track_caller]
#[inline]
pub fn awaitlet<F: IntoFuture>(fut: F) -> F::Output {
    match await_in_driven(fut.into_future()) {
        Ok(output) => output,
        Err(not_awaited) => not_awaited_panic(not_awaited),
    }
}

#[cold]
#[track_caller]
fn not_awaited_panic(not_awaited: NotAwaited) -> ! {
    match not_awaited {
        NotAwaited::NoContext => panic!("{NoAwaitletContext}"),
        NotAwaited::Cancelled => std::panic::resume_unwind(Box::new(Cancelled)),
        NotAwaited::Unwinding => panic!(
            "awaitlet: awaitlet cannot wait while its function is unwinding from a panic (the \
             future was pending and is dropped); use try_awaitlet in code that runs during an \
             unwind, such as a destructor"
        ),
    }
}

/// [`awaitlet`], returning [`NoAwaitletContext`] instead of panicking where it cannot wait:
/// outside [`async_def`] (the future is dropped unpolled), and in a function whose `AsyncDef`
/// was dropped (see [Cancellation](self#cancellation)), where the future is polled once and
/// dropped if it is pending, instead of [`Cancelled`] being raised.
///
/// ```
/// use awaitlet::{NoAwaitletContext, try_awaitlet};
///
/// assert_eq!(try_awaitlet(async { 1 }), Err(NoAwaitletContext));
/// let inside = pollster::block_on(awaitlet::async_def(|| try_awaitlet(async { 1 })));
/// assert_eq!(inside, Ok(1));
/// ```
#[inline]
pub fn try_awaitlet<F: IntoFuture>(fut: F) -> Result<F::Output, NoAwaitletContext> {
    await_in_driven(fut.into_future()).map_err(|_| NoAwaitletContext)
}

/// True when running inside [`async_def`]'s function (or code it calls), where
/// [`awaitlet`] works (once the `AsyncDef` is dropped, only on futures ready at once: see
/// [Cancellation](self#cancellation)); false elsewhere, including inside a future that
/// `awaitlet` itself is polling (rule 73: that code runs on behalf of the poller).
///
/// ```
/// assert!(!awaitlet::in_async_def());
/// assert!(pollster::block_on(awaitlet::async_def(awaitlet::in_async_def)));
/// ```
pub fn in_async_def() -> bool {
    in_driven()
}

/// The error of [`awaitlet`] outside [`async_def`]. Its message is Python awaitlet's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NoAwaitletContext;

impl fmt::Display for NoAwaitletContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Can't call awaitlet() unless the call stack was invoked with async_def().")
    }
}

impl std::error::Error for NoAwaitletContext {}

/// The error of an [`AsyncDef::assert_await_occurs`] future whose function returned without
/// waiting. Its message is Python awaitlet's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NoAwaitOccurred;

impl fmt::Display for NoAwaitOccurred {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Function was run but no await was called.")
    }
}

impl std::error::Error for NoAwaitOccurred {}
