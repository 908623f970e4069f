//! More attacks on the crate's soundness from safe code only, each named after the invariant it
//! attacks. Run them under Valgrind and AddressSanitizer too: the use-after-free attacks check
//! a flag before they touch the data, and also read the data, so a sanitizer reports the access.

mod common;

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::Poll;

use awaitlet::greenlet::settrace;
use awaitlet::{AsyncDef, Cancelled, Greenlet, SwitchError, async_def, awaitlet, getcurrent};
use common::{catch, check_child_ok, is_child, pending_then, poll_once, run_child, text};

// ---------------------------------------------------------------------------------------------
// Thread exit: a greenlet suspended inside `LOCAL.with(|value| ..)` holds a reference into that
// thread-local. If the thread-local is destroyed before the handle holding the greenlet, the
// kill at thread exit runs the greenlet's destructors, which may read the destroyed value.
// ---------------------------------------------------------------------------------------------

/// Counts thread-local [`Tracked`] values dropped, and records a read after that.
static TRACKED_DROPPED: AtomicUsize = AtomicUsize::new(0);
static READ_AFTER_DROP: AtomicBool = AtomicBool::new(false);
static READ_SUM: AtomicUsize = AtomicUsize::new(0);
/// The thread-exit tests share these statics: one at a time.
static THREAD_EXIT_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A thread-local value with heap data, which records its destruction.
struct Tracked {
    dropped: Cell<bool>,
    bytes: Vec<u8>,
}

impl Tracked {
    fn new() -> Tracked {
        Tracked {
            dropped: Cell::new(false),
            bytes: vec![3; 256],
        }
    }

    /// Records whether it was already dropped, then reads its heap data (which Valgrind and
    /// AddressSanitizer report if it was freed).
    fn read(&self) {
        if self.dropped.get() {
            READ_AFTER_DROP.store(true, Ordering::SeqCst);
        }
        let sum: usize = self.bytes.iter().map(|&byte| byte as usize).sum();
        READ_SUM.fetch_add(sum, Ordering::SeqCst);
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.dropped.set(true);
        TRACKED_DROPPED.fetch_add(1, Ordering::SeqCst);
    }
}

/// Reads a thread-local value when dropped (as a guard over it would, in its cleanup).
struct ReadsOnDrop<'a>(&'a Tracked);

impl Drop for ReadsOnDrop<'_> {
    fn drop(&mut self) {
        self.0.read();
    }
}

thread_local! {
    /// Touched before the holder, so destroyed on one side of it ...
    static DATA_BEFORE: Tracked = Tracked::new();
    /// ... holds the suspended greenlet (or async_def future) ...
    static HOLDER: RefCell<Vec<Box<dyn std::any::Any>>> = const { RefCell::new(Vec::new()) };
    /// ... and touched after it, so destroyed on the other side. Whatever the order in which the
    /// platform runs thread-local destructors, one of the two goes before the holder.
    static DATA_AFTER: Tracked = Tracked::new();
}

fn reset_thread_exit_flags() {
    TRACKED_DROPPED.store(0, Ordering::SeqCst);
    READ_AFTER_DROP.store(false, Ordering::SeqCst);
}

#[test]
#[ignore = "open hazard: a greenlet suspended inside LocalKey::with can run after the thread-local is destroyed at thread exit (docs/SOUNDNESS.md, section 5)"]
fn a_greenlet_suspended_inside_a_thread_local_access_never_runs_after_that_thread_local_is_destroyed()
 {
    let _one_at_a_time = THREAD_EXIT_LOCK
        .lock()
        .unwrap_or_else(|poison| poison.into_inner());
    reset_thread_exit_flags();
    std::thread::spawn(|| {
        DATA_BEFORE.with(|_| {});
        HOLDER.with(|_| {});
        DATA_AFTER.with(|_| {});
        let main = getcurrent();
        let sleeper = Greenlet::new(move |()| {
            DATA_BEFORE.with(|before| {
                DATA_AFTER.with(|after| {
                    let _first = ReadsOnDrop(before);
                    let _second = ReadsOnDrop(after);
                    let _ = main.switch::<(), ()>(());
                })
            })
        });
        sleeper.switch::<(), ()>(()).unwrap();
        HOLDER.with(|holder| holder.borrow_mut().push(Box::new(sleeper)));
    })
    .join()
    .expect("the thread exits cleanly");
    assert_eq!(TRACKED_DROPPED.load(Ordering::SeqCst), 2);
    assert!(
        !READ_AFTER_DROP.load(Ordering::SeqCst),
        "a greenlet killed at thread exit read a thread-local destroyed before it"
    );
}

#[test]
#[ignore = "open hazard: a greenlet suspended inside LocalKey::with can run after the thread-local is destroyed at thread exit (docs/SOUNDNESS.md, section 5)"]
fn an_async_def_suspended_inside_a_thread_local_access_never_runs_after_that_thread_local_is_destroyed()
 {
    let _one_at_a_time = THREAD_EXIT_LOCK
        .lock()
        .unwrap_or_else(|poison| poison.into_inner());
    reset_thread_exit_flags();
    std::thread::spawn(|| {
        DATA_BEFORE.with(|_| {});
        HOLDER.with(|_| {});
        DATA_AFTER.with(|_| {});
        let mut task: std::pin::Pin<Box<AsyncDef<'static, ()>>> = Box::pin(async_def(|| {
            DATA_BEFORE.with(|before| {
                DATA_AFTER.with(|after| {
                    let _first = ReadsOnDrop(before);
                    let _second = ReadsOnDrop(after);
                    awaitlet(std::future::pending::<()>());
                })
            })
        }));
        assert!(poll_once(&mut task).is_pending());
        HOLDER.with(|holder| holder.borrow_mut().push(Box::new(task)));
    })
    .join()
    .expect("the thread exits cleanly");
    assert_eq!(TRACKED_DROPPED.load(Ordering::SeqCst), 2);
    assert!(
        !READ_AFTER_DROP.load(Ordering::SeqCst),
        "an async_def function cancelled at thread exit read a thread-local destroyed before it"
    );
}

// ---------------------------------------------------------------------------------------------
// Panic hooks: code in a panic hook runs with `std::thread::panicking()` true, but nothing is
// unwinding yet, and std aborts on any panic raised while the hook runs. Dropping a handle or a
// future there is ordinary code, and must not abort the process.
// ---------------------------------------------------------------------------------------------

thread_local! {
    static DROPPED_IN_HOOK: RefCell<Option<Box<dyn std::any::Any>>> = const { RefCell::new(None) };
}

/// Set when the frames of the greenlet dropped in the panic hook have unwound.
static UNWOUND_IN_HOOK: AtomicBool = AtomicBool::new(false);

/// Sets [`UNWOUND_IN_HOOK`] when dropped.
struct UnwoundInHook;

impl Drop for UnwoundInHook {
    fn drop(&mut self) {
        UNWOUND_IN_HOOK.store(true, Ordering::SeqCst);
    }
}

/// In a child process: installs a panic hook that drops what [`DROPPED_IN_HOOK`] holds, then
/// panics (caught) and says that the process survived.
fn panic_with_a_hook_that_drops_the_held_value() {
    std::panic::set_hook(Box::new(|_| {
        let held = DROPPED_IN_HOOK.with(|slot| slot.borrow_mut().take());
        drop(held);
    }));
    let caught = catch(|| panic!("the panic whose hook drops a handle"));
    assert!(caught.is_err());
    let _ = std::panic::take_hook();
    assert!(DROPPED_IN_HOOK.with(|slot| slot.borrow().is_none()));
    assert!(
        UNWOUND_IN_HOOK.load(Ordering::SeqCst),
        "the frames were unwound in the hook"
    );
    println!("CHILD-OK");
}

#[test]
fn dropping_the_last_handle_to_a_suspended_greenlet_in_a_panic_hook_does_not_abort() {
    const NAME: &str =
        "dropping_the_last_handle_to_a_suspended_greenlet_in_a_panic_hook_does_not_abort";
    if is_child("hook-kill") {
        let main = getcurrent();
        let sleeper = Greenlet::new(move |()| {
            let _unwound = UnwoundInHook;
            let _ = main.switch::<(), ()>(());
        });
        sleeper.switch::<(), ()>(()).unwrap();
        DROPPED_IN_HOOK.with(|slot| *slot.borrow_mut() = Some(Box::new(sleeper)));
        panic_with_a_hook_that_drops_the_held_value();
        return;
    }
    check_child_ok(run_child(NAME, "hook-kill"));
}

#[test]
fn dropping_a_pending_async_def_in_a_panic_hook_does_not_abort() {
    const NAME: &str = "dropping_a_pending_async_def_in_a_panic_hook_does_not_abort";
    if is_child("hook-cancel") {
        let mut task: std::pin::Pin<Box<AsyncDef<'static, ()>>> = Box::pin(async_def(|| {
            let _unwound = UnwoundInHook;
            awaitlet(std::future::pending::<()>())
        }));
        assert!(poll_once(&mut task).is_pending());
        DROPPED_IN_HOOK.with(|slot| *slot.borrow_mut() = Some(Box::new(task)));
        panic_with_a_hook_that_drops_the_held_value();
        return;
    }
    check_child_ok(run_child(NAME, "hook-cancel"));
}

#[test]
fn switching_or_awaiting_in_a_panic_hook_is_refused_without_aborting() {
    const NAME: &str = "switching_or_awaiting_in_a_panic_hook_is_refused_without_aborting";
    if is_child("hook-switch") {
        thread_local!(static TARGET: RefCell<Option<Greenlet>> = const { RefCell::new(None) });
        static REFUSED: AtomicUsize = AtomicUsize::new(0);
        let main = getcurrent();
        let sleeper = Greenlet::new(move |()| {
            let _ = main.switch::<(), ()>(());
        });
        sleeper.switch::<(), ()>(()).unwrap();
        TARGET.with(|slot| *slot.borrow_mut() = Some(sleeper.clone()));
        std::panic::set_hook(Box::new(|_| {
            TARGET.with(|slot| {
                if let Some(target) = slot.borrow().as_ref()
                    && matches!(
                        target.switch::<(), ()>(()),
                        Err(SwitchError::Unwinding { .. })
                    )
                {
                    REFUSED.fetch_add(1, Ordering::SeqCst);
                }
            });
            if awaitlet::try_awaitlet(std::future::pending::<()>()).is_err() {
                REFUSED.fetch_add(1, Ordering::SeqCst);
            }
        }));
        let caught = catch(|| panic!("the panic whose hook switches"));
        assert!(caught.is_err());
        let _ = std::panic::take_hook();
        assert_eq!(REFUSED.load(Ordering::SeqCst), 2);
        assert!(sleeper.is_active());
        sleeper.kill().unwrap();
        println!("CHILD-OK");
        return;
    }
    check_child_ok(run_child(NAME, "hook-switch"));
}

// ---------------------------------------------------------------------------------------------
// Drops that discard a result: `drop` of a handle or of an `AsyncDef` does not panic (rule 36),
// whatever the victim leaves behind. (In a thread-local destructor or during an unwind, a panic
// from `drop` is an abort.)
// ---------------------------------------------------------------------------------------------

#[test]
fn kill_on_drop_never_panics_even_when_the_discarded_result_panics_on_drop() {
    let main = getcurrent();
    let victim = Greenlet::new(move |()| {
        let caught = catch(|| main.switch::<(), ()>(()));
        assert!(caught.is_err());
        // Caught the exit and returned a value whose destructor panics: the result is
        // discarded by the drop of the last handle.
        common::PanicOnDrop("the discarded result's destructor panics")
    });
    victim.switch::<(), ()>(()).unwrap();
    let dropped = catch(move || drop(victim));
    assert!(
        dropped.is_ok(),
        "drop of the last handle panicked: {:?}",
        dropped.err().map(|payload| text(&*payload))
    );
}

#[test]
fn dropping_an_async_def_never_panics_even_when_the_discarded_result_panics_on_drop() {
    let mut task = Box::pin(async_def(|| {
        let caught = catch(|| awaitlet(std::future::pending::<()>()));
        assert!(caught.unwrap_err().is::<Cancelled>());
        common::PanicOnDrop("the cancelled function's result panics on drop")
    }));
    assert!(poll_once(&mut task).is_pending());
    let dropped = catch(move || drop(task));
    assert!(
        dropped.is_ok(),
        "drop of the AsyncDef panicked: {:?}",
        dropped.err().map(|payload| text(&*payload))
    );
}

// ---------------------------------------------------------------------------------------------
// Parent chains: kill on drop makes the dropping greenlet the victim's parent for the duration.
// An async_def function dropping the last handle to the greenlet polling it becomes the parent
// of its own poller, and stops being driven the moment the poller is resumed.
// ---------------------------------------------------------------------------------------------

#[test]
fn kill_on_drop_of_its_poller_by_a_driven_function_neither_aborts_nor_resumes_it_undriven() {
    const NAME: &str =
        "kill_on_drop_of_its_poller_by_a_driven_function_neither_aborts_nor_resumes_it_undriven";
    if is_child("poller-cycle") {
        type Task = std::pin::Pin<Box<AsyncDef<'static, ()>>>;
        let task_slot: Rc<RefCell<Option<Task>>> = Rc::default();
        let starter_slot: Rc<RefCell<Option<Greenlet>>> = Rc::default();
        let main = getcurrent();
        let (tasks, starters, main_in) = (
            Rc::clone(&task_slot),
            Rc::clone(&starter_slot),
            main.clone(),
        );
        let poller = Greenlet::new(move |()| {
            // Started by a finished child: drop that child's link, so that the only handle to
            // this greenlet is the one the function below holds.
            let starter = starters.borrow_mut().take().unwrap();
            starter.set_parent(&main_in).unwrap();
            drop(starter);
            let me = getcurrent();
            let main_f = main_in.clone();
            *tasks.borrow_mut() = Some(Box::pin(async_def(move || {
                // Give up the parent link to the poller; then the last handle to the poller:
                // dropping it kills the poller, with this function (driven by nobody once the
                // poller is resumed) as its parent for the duration.
                getcurrent().set_parent(&main_f).unwrap();
                drop(me);
                awaitlet(std::future::pending::<()>());
            })));
            let mut borrowed = tasks.borrow_mut();
            let _ = poll_once(borrowed.as_mut().unwrap());
        });
        let starter = Greenlet::builder().parent(&poller).build(|()| ()).unwrap();
        drop(poller);
        *starter_slot.borrow_mut() = Some(starter.clone());
        let outcome = catch(|| starter.switch::<(), ()>(()));
        println!("outcome: {:?}", outcome.map_err(|payload| text(&*payload)));
        drop(task_slot.borrow_mut().take());
        println!("CHILD-OK");
        return;
    }
    check_child_ok(run_child(NAME, "poller-cycle"));
}

// ---------------------------------------------------------------------------------------------
// Guards: misuse that must stay refused or work.
// ---------------------------------------------------------------------------------------------

#[test]
fn an_async_def_polled_alternately_from_two_greenlets_runs_to_completion() {
    let task: Rc<RefCell<std::pin::Pin<Box<AsyncDef<'static, u32>>>>> =
        Rc::new(RefCell::new(Box::pin(async_def(|| {
            let mut total = 0;
            for round in 0..6 {
                total += awaitlet(pending_then(1, round));
            }
            total
        }))));
    let main = getcurrent();
    let polled = Rc::clone(&task);
    let other = Greenlet::new(move |()| {
        loop {
            let poll = poll_once(&mut *polled.borrow_mut());
            if let Poll::Ready(value) = poll {
                return Some(value);
            }
            main.switch::<Option<u32>, ()>(None).unwrap();
        }
    });
    let mut result = None;
    for _ in 0..20 {
        if let Poll::Ready(value) = poll_once(&mut *task.borrow_mut()) {
            result = Some(value);
            break;
        }
        match other.switch::<(), Option<u32>>(()) {
            Ok(Some(value)) => {
                result = Some(value);
                break;
            }
            Ok(None) => {}
            Err(error) => panic!("{error}"),
        }
    }
    assert_eq!(result, Some(15));
}

#[test]
fn a_trace_hook_cannot_switch_into_a_driven_greenlet_between_polls() {
    let seen: Rc<RefCell<Option<Greenlet>>> = Rc::default();
    let seen_in = Rc::clone(&seen);
    let mut task = Box::pin(async_def(|| {
        awaitlet(pending_then(1, ()));
    }));
    let refused = Rc::new(Cell::new(0));
    let refused_in = Rc::clone(&refused);
    settrace(Some(Rc::new(move |_event, _origin, target| {
        if awaitlet::in_async_def() && seen_in.borrow().is_none() {
            *seen_in.borrow_mut() = Some(target.clone());
        }
    })));
    assert!(poll_once(&mut task).is_pending());
    settrace(None);
    let function = seen.borrow_mut().take().expect("the hook saw the function");
    settrace(Some(Rc::new(move |_event, _origin, _target| {
        if refused_in.get() == 0 {
            refused_in.set(1);
            let outcome = catch(|| function.switch::<(), ()>(()));
            if outcome.is_err() {
                refused_in.set(2);
            }
        }
    })));
    let plain = Greenlet::new(|()| ());
    plain.switch::<(), ()>(()).unwrap();
    settrace(None);
    assert_eq!(refused.get(), 2, "the switch into the function was refused");
    assert_eq!(poll_once(&mut task), Poll::Ready(()));
}

#[test]
fn a_function_that_caught_its_cancellation_can_drive_and_drop_another_async_def() {
    let log = Rc::new(RefCell::new(Vec::new()));
    let log_in = Rc::clone(&log);
    let mut task = Box::pin(async_def(move || {
        let caught = catch(|| awaitlet(std::future::pending::<()>()));
        assert!(caught.unwrap_err().is::<Cancelled>());
        let inner_log = Rc::clone(&log_in);
        let mut inner = Box::pin(async_def(move || {
            let waited = catch(|| awaitlet(std::future::pending::<()>()));
            inner_log.borrow_mut().push(match waited {
                Err(payload) if payload.is::<Cancelled>() => "inner cancelled",
                _ => "inner not cancelled",
            });
        }));
        log_in.borrow_mut().push(match poll_once(&mut inner) {
            Poll::Pending => "inner pending",
            Poll::Ready(()) => "inner ready",
        });
        drop(inner);
        log_in
            .borrow_mut()
            .push(match awaitlet::try_awaitlet(std::future::pending::<()>()) {
                Err(_) => "outer cannot wait",
                Ok(()) => "outer waited",
            });
    }));
    assert!(poll_once(&mut task).is_pending());
    drop(task);
    assert_eq!(
        *log.borrow(),
        ["inner pending", "inner cancelled", "outer cannot wait"]
    );
}

/// A stream whose `poll_read` switches to a plain greenlet and back before it answers.
struct SwitchingStream {
    helper: Greenlet,
    chunks: Vec<Vec<u8>>,
}

impl futures::io::AsyncRead for SwitchingStream {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut [u8],
    ) -> Poll<std::io::Result<usize>> {
        let count: u32 = self.helper.switch(()).unwrap();
        if count % 2 == 1 {
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        let Some(chunk) = self.chunks.pop() else {
            return Poll::Ready(Ok(0));
        };
        buf[..chunk.len()].copy_from_slice(&chunk);
        Poll::Ready(Ok(chunk.len()))
    }
}

#[test]
fn an_io_stream_switching_to_a_plain_greenlet_inside_poll_read_reads_everything() {
    use std::io::Read;
    let (text_read, pending) = common::drive(Box::pin(async_def(|| {
        let caller = getcurrent();
        let helper = Greenlet::new(move |()| {
            let mut count = 0u32;
            loop {
                count += 1;
                caller.switch::<u32, ()>(count).unwrap();
            }
        });
        let stream = SwitchingStream {
            helper: helper.clone(),
            chunks: vec![b"world".to_vec(), b"hello ".to_vec()],
        };
        let mut reader = awaitlet::io::SyncReader::new(stream);
        let mut text = String::new();
        reader.read_to_string(&mut text).unwrap();
        drop(reader);
        helper.kill().unwrap();
        text
    })));
    assert_eq!(text_read, "hello world");
    assert!(pending > 0);
}

/// The greenlets from `greenlet` up its parent chain, at most `limit` of them.
fn ancestors(greenlet: &Greenlet, limit: usize) -> Vec<Greenlet> {
    let mut chain = Vec::new();
    let mut next = Some(greenlet.clone());
    while let Some(current) = next {
        if chain.len() == limit {
            break;
        }
        next = current.parent();
        chain.push(current);
    }
    chain
}

#[test]
fn cancellation_by_a_greenlet_the_function_started_leaves_no_parent_cycle() {
    // The function starts a plain child, which (between polls) drops the function's AsyncDef:
    // the dropping greenlet becomes the function's parent while it cancels it, and it is the
    // function's own child. Every parent chain must still end at main (rules 46-47), or walks
    // up the chain (set_parent's cycle check, a poll's ancestry check) never end.
    type Task = std::pin::Pin<Box<AsyncDef<'static, ()>>>;
    let slot: Rc<RefCell<Option<Task>>> = Rc::default();
    let child_slot: Rc<RefCell<Option<Greenlet>>> = Rc::default();
    let chain_ends_at_main = Rc::new(Cell::new(None));
    let (tasks, children, seen) = (
        Rc::clone(&slot),
        Rc::clone(&child_slot),
        Rc::clone(&chain_ends_at_main),
    );
    *slot.borrow_mut() = Some(Box::pin(async_def(move || {
        let function = getcurrent();
        let tasks_in = Rc::clone(&tasks);
        let child = Greenlet::new(move |()| {
            let _ = function.switch::<(), ()>(());
            // Between polls: drop the AsyncDef of the greenlet that started this one.
            drop(tasks_in.borrow_mut().take());
        });
        child.switch::<(), ()>(()).unwrap();
        *children.borrow_mut() = Some(child);
        let caught = catch(|| awaitlet(std::future::pending::<()>()));
        assert!(caught.unwrap_err().is::<Cancelled>());
        let chain = ancestors(&getcurrent(), 64);
        seen.set(Some(chain.last().is_some_and(Greenlet::is_main)));
    })));
    assert!(poll_once(slot.borrow_mut().as_mut().unwrap()).is_pending());
    let child = child_slot.borrow_mut().take().unwrap();
    child.switch::<(), ()>(()).unwrap();
    assert!(slot.borrow().is_none());
    assert_eq!(
        chain_ends_at_main.get(),
        Some(true),
        "the cancelled function's parent chain does not end at main"
    );
}

/// Holds a suspended greenlet and, when destroyed at thread exit, switches into it.
struct ResumesOnDrop(RefCell<Option<Greenlet>>);

impl Drop for ResumesOnDrop {
    fn drop(&mut self) {
        if let Some(sleeper) = self.0.borrow_mut().take() {
            let _ = sleeper.switch::<(), ()>(());
            std::mem::forget(sleeper);
        }
    }
}

thread_local! {
    static RESUMER_BEFORE: Tracked = Tracked::new();
    static RESUMER: ResumesOnDrop = const { ResumesOnDrop(RefCell::new(None)) };
    static RESUMER_AFTER: Tracked = Tracked::new();
}

#[test]
#[ignore = "open hazard: a greenlet suspended inside LocalKey::with can run after the thread-local is destroyed at thread exit (docs/SOUNDNESS.md, section 5)"]
fn a_switch_from_a_thread_local_destructor_never_resumes_a_greenlet_inside_a_destroyed_thread_local()
 {
    let _one_at_a_time = THREAD_EXIT_LOCK
        .lock()
        .unwrap_or_else(|poison| poison.into_inner());
    reset_thread_exit_flags();
    std::thread::spawn(|| {
        RESUMER_BEFORE.with(|_| {});
        RESUMER.with(|_| {});
        RESUMER_AFTER.with(|_| {});
        let main = getcurrent();
        let sleeper = Greenlet::new(move |()| {
            RESUMER_BEFORE.with(|before| {
                RESUMER_AFTER.with(|after| {
                    let _ = main.switch::<(), ()>(());
                    // Resumed by a thread-local destructor: read both values.
                    before.read();
                    after.read();
                    let _ = main.switch::<(), ()>(());
                })
            })
        });
        sleeper.switch::<(), ()>(()).unwrap();
        RESUMER.with(|resumer| *resumer.0.borrow_mut() = Some(sleeper));
    })
    .join()
    .expect("the thread exits cleanly");
    assert_eq!(TRACKED_DROPPED.load(Ordering::SeqCst), 2);
    assert!(
        !READ_AFTER_DROP.load(Ordering::SeqCst),
        "a greenlet resumed from a thread-local destructor read a thread-local destroyed before"
    );
}

#[test]
fn a_trace_hook_may_drive_an_async_def_of_its_own() {
    type Task = std::pin::Pin<Box<AsyncDef<'static, u32>>>;
    let task: Rc<RefCell<Option<Task>>> = Rc::new(RefCell::new(Some(Box::pin(async_def(|| {
        let main_now = getcurrent().parent().unwrap();
        // A switch inside the hook's poll: refused or not, the hook must come back.
        let _ = catch(|| main_now.switch::<(), ()>(()));
        awaitlet(pending_then(2, 7u32))
    })))));
    let result = Rc::new(Cell::new(None));
    let (task_in, result_in) = (Rc::clone(&task), Rc::clone(&result));
    settrace(Some(Rc::new(move |_event, _origin, _target| {
        let Ok(mut slot) = task_in.try_borrow_mut() else {
            return;
        };
        if let Some(running) = slot.as_mut()
            && let Ok(Poll::Ready(value)) = catch(|| poll_once(running))
        {
            result_in.set(Some(value));
            *slot = None;
        }
    })));
    for _ in 0..8 {
        let plain = Greenlet::new(|()| ());
        let _ = catch(|| plain.switch::<(), ()>(()));
    }
    settrace(None);
    drop(task.borrow_mut().take());
    assert!(!std::thread::panicking());
}

#[test]
fn greenlets_leaked_by_their_own_handles_never_run_again_at_thread_exit() {
    static RAN_AGAIN: AtomicBool = AtomicBool::new(false);
    std::thread::spawn(|| {
        let main = getcurrent();
        // Forgets a handle to itself, then suspends for good.
        let forgetful = Greenlet::new({
            let main = main.clone();
            move |()| {
                std::mem::forget(getcurrent());
                let _ = main.switch::<(), ()>(());
                RAN_AGAIN.store(true, Ordering::SeqCst);
            }
        });
        forgetful.switch::<(), ()>(()).unwrap();
        // Holds its own handle in a cycle, then suspends for good.
        let cycle: Rc<RefCell<Option<Greenlet>>> = Rc::default();
        let cycle_in = Rc::clone(&cycle);
        let cyclic = Greenlet::new(move |()| {
            let _me = cycle_in;
            let _ = main.switch::<(), ()>(());
            RAN_AGAIN.store(true, Ordering::SeqCst);
        });
        *cycle.borrow_mut() = Some(cyclic.clone());
        cyclic.switch::<(), ()>(()).unwrap();
    })
    .join()
    .expect("the thread exits cleanly");
    assert!(!RAN_AGAIN.load(Ordering::SeqCst));
}

// ---------------------------------------------------------------------------------------------
// A trace hook that panics on a greenlet's start: the greenlet dies of that panic without
// running, and what it was handed (its argument, its closure) is dropped in its entry function,
// where nothing can unwind. A destructor that panics there must not abort the process.
// ---------------------------------------------------------------------------------------------

/// In a child process: sets a hook that panics on its first call, then starts `greenlet` with
/// `argument`; the hook's panic must reach main, and the process must survive.
fn start_under_a_panicking_hook<A: 'static>(greenlet: Greenlet, argument: A) {
    let calls = Rc::new(Cell::new(0));
    let counted = Rc::clone(&calls);
    settrace(Some(Rc::new(move |_event, _origin, _target| {
        counted.set(counted.get() + 1);
        if counted.get() == 1 {
            panic!("the hook fails at the start");
        }
    })));
    let outcome = catch(|| greenlet.switch::<A, ()>(argument));
    settrace(None);
    let payload = outcome.expect_err("the hook's panic reaches main");
    assert_eq!(text(&*payload), "the hook fails at the start");
    assert!(greenlet.is_dead());
    println!("CHILD-OK");
}

#[test]
fn a_trace_hook_panicking_at_a_start_does_not_abort_when_the_argument_panics_on_drop() {
    const NAME: &str =
        "a_trace_hook_panicking_at_a_start_does_not_abort_when_the_argument_panics_on_drop";
    if is_child("hook-start-argument") {
        let greenlet = Greenlet::new(|_argument: common::PanicOnDrop| ());
        start_under_a_panicking_hook(greenlet, common::PanicOnDrop("the argument's drop"));
        return;
    }
    check_child_ok(run_child(NAME, "hook-start-argument"));
}

#[test]
fn a_trace_hook_panicking_at_a_start_does_not_abort_when_the_closure_panics_on_drop() {
    const NAME: &str =
        "a_trace_hook_panicking_at_a_start_does_not_abort_when_the_closure_panics_on_drop";
    if is_child("hook-start-closure") {
        let captured = common::PanicOnDrop("the closure's drop");
        let greenlet = Greenlet::new(move |()| drop(captured));
        start_under_a_panicking_hook(greenlet, ());
        return;
    }
    check_child_ok(run_child(NAME, "hook-start-closure"));
}

#[test]
fn a_trace_hook_panicking_at_an_async_def_start_does_not_abort_when_the_function_panics_on_drop() {
    const NAME: &str = "a_trace_hook_panicking_at_an_async_def_start_does_not_abort_when_the_function_panics_on_drop";
    if is_child("hook-start-async-def") {
        let captured = common::PanicOnDrop("the function's drop");
        let mut task = Box::pin(async_def(move || drop(captured)));
        let calls = Rc::new(Cell::new(0));
        let counted = Rc::clone(&calls);
        settrace(Some(Rc::new(move |_event, _origin, _target| {
            counted.set(counted.get() + 1);
            if counted.get() == 1 {
                panic!("the hook fails at the start");
            }
        })));
        let outcome = catch(|| poll_once(&mut task));
        settrace(None);
        let payload = outcome.expect_err("the hook's panic comes out of the poll");
        assert_eq!(text(&*payload), "the hook fails at the start");
        println!("CHILD-OK");
        return;
    }
    check_child_ok(run_child(NAME, "hook-start-async-def"));
}

#[test]
fn a_greenlet_starting_while_it_kills_its_abandoned_starter_does_not_abort_on_a_discarded_result() {
    // Rule 43: a greenlet that dropped every handle to itself and switches is killed by the
    // receiver. Here the receiver is starting, in its entry function, where nothing can unwind;
    // the victim catches the exit and returns a value whose destructor panics, which the kill
    // discards.
    const NAME: &str = "a_greenlet_starting_while_it_kills_its_abandoned_starter_does_not_abort_on_a_discarded_result";
    if is_child("abandoned-starter") {
        let worker_slot: Rc<RefCell<Option<Greenlet>>> = Rc::default();
        let initiator_slot: Rc<RefCell<Option<Greenlet>>> = Rc::default();
        let (worker_self, initiator_in) = (Rc::clone(&worker_slot), Rc::clone(&initiator_slot));
        let worker = Greenlet::new(move |()| {
            let parent = getcurrent().parent().unwrap();
            parent.switch::<(), ()>(()).unwrap();
            // Drop every handle to itself (the slot's, and the initiator's parent link).
            drop(worker_self.borrow_mut().take());
            let initiator = initiator_in.borrow_mut().take().unwrap();
            initiator.set_parent(&parent).unwrap();
            drop(initiator);
            let starter = Greenlet::builder().parent(&parent).build(|()| ()).unwrap();
            let caught = catch(|| starter.switch::<(), ()>(()));
            assert!(caught.is_err(), "the switch away ends in the kill");
            common::PanicOnDrop("the killed starter's result")
        });
        worker.switch::<(), ()>(()).unwrap();
        *worker_slot.borrow_mut() = Some(worker.clone());
        let initiator = Greenlet::builder().parent(&worker).build(|()| ()).unwrap();
        drop(worker);
        *initiator_slot.borrow_mut() = Some(initiator.clone());
        let outcome = catch(|| initiator.switch::<(), ()>(()));
        println!("outcome: {:?}", outcome.map_err(|payload| text(&*payload)));
        println!("CHILD-OK");
        return;
    }
    check_child_ok(run_child(NAME, "abandoned-starter"));
}
