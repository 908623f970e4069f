//! The trace hook: greenlet rules 64-66 (see the rule map in the `greenlet` module
//! docs). `settrace` is per thread, and
//! every test runs on its own thread, so hooks do not leak between tests.

mod common;

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use awaitlet::greenlet::{TraceEvent, settrace};
use awaitlet::{Greenlet, getcurrent};
use common::{catch, child_command, is_child, terminating_signal, text};

use TraceEvent::{Switch, Throw};

/// One call of the hook: event, origin, target, and the greenlet running the hook.
#[derive(Debug, PartialEq)]
struct Call {
    event: TraceEvent,
    origin: Greenlet,
    target: Greenlet,
    running: Greenlet,
}

type Calls = Rc<RefCell<Vec<Call>>>;

/// Installs a hook recording every call; returns the record.
fn record() -> Calls {
    let calls: Calls = Rc::new(RefCell::new(Vec::new()));
    let sink = Rc::clone(&calls);
    let previous = settrace(Some(Box::new(move |event, origin, target| {
        sink.borrow_mut().push(Call {
            event,
            origin: origin.clone(),
            target: target.clone(),
            running: getcurrent(),
        })
    })));
    assert!(previous.is_none(), "a hook was already set on this thread");
    calls
}

/// Removes the hook and returns what it recorded as (event, origin, target) triples, checking
/// that each call ran in its target.
fn stop(calls: Calls) -> Vec<(TraceEvent, Greenlet, Greenlet)> {
    assert!(settrace(None).is_some(), "the hook was removed");
    let calls = calls.borrow_mut().drain(..).collect::<Vec<_>>();
    calls
        .into_iter()
        .map(|call| {
            assert_eq!(call.running, call.target, "the hook runs in the target");
            (call.event, call.origin, call.target)
        })
        .collect()
}

// Rule 64: settrace returns the previous hook (None at first), and the hook it returns is the
// one that was installed.
#[test]
fn settrace_returns_the_previous_hook() {
    let log = Rc::new(RefCell::new(Vec::new()));
    let first_log = Rc::clone(&log);
    assert!(
        settrace(Some(Box::new(move |_, _, _| {
            first_log.borrow_mut().push("first")
        })))
        .is_none()
    );
    let second_log = Rc::clone(&log);
    let mut first = settrace(Some(Box::new(move |_, _, _| {
        second_log.borrow_mut().push("second")
    })))
    .expect("the first hook");
    let main = getcurrent();
    first(Switch, &main, &main);
    assert_eq!(*log.borrow(), ["first"]);
    getcurrent().switch::<(), ()>(()).unwrap();
    assert_eq!(*log.borrow(), ["first", "second"]);
    let mut second = settrace(None).expect("the second hook");
    second(Switch, &main, &main);
    assert_eq!(*log.borrow(), ["first", "second", "second"]);
    assert!(settrace(None).is_none());
    getcurrent().switch::<(), ()>(()).unwrap();
    assert_eq!(log.borrow().len(), 3, "no hook is called once removed");
}

// Rule 64: the hook is per thread: another thread's switches do not call it, and that thread
// starts with no hook.
#[test]
fn trace_hook_is_per_thread() {
    let calls = record();
    let other_calls = std::thread::spawn(|| {
        assert!(settrace(None).is_none(), "a new thread has no hook");
        let seen = Rc::new(Cell::new(0));
        let seen_in = Rc::clone(&seen);
        settrace(Some(Box::new(move |_, _, _| {
            seen_in.set(seen_in.get() + 1)
        })));
        Greenlet::new(|x: u8| x).switch::<u8, u8>(1).unwrap();
        settrace(None);
        seen.get()
    })
    .join()
    .unwrap();
    assert_eq!(other_calls, 2, "start and return on the other thread");
    assert!(stop(calls).is_empty(), "this thread's hook saw nothing");
}

// Rule 65: 'switch' events for the start, a switch back, a resume and the return to the
// parent, each with the right origin and target, called in the target.
#[test]
fn switch_events_for_start_switches_and_return_name_origin_and_target() {
    let main = getcurrent();
    let main_in = main.clone();
    let g = Greenlet::new(move |x: i32| {
        let y: i32 = main_in.switch(x + 1).unwrap();
        y + 1
    });
    let calls = record();
    assert_eq!(g.switch::<i32, i32>(1).unwrap(), 2);
    assert_eq!(g.switch::<i32, i32>(10).unwrap(), 11);
    assert_eq!(
        stop(calls),
        [
            (Switch, main.clone(), g.clone()),
            (Switch, g.clone(), main.clone()),
            (Switch, main.clone(), g.clone()),
            (Switch, g.clone(), main.clone()),
        ]
    );
}

// Rule 65: a return goes to the parent, whoever switched in last: the event names the parent.
#[test]
fn return_event_targets_the_parent_not_the_last_switcher() {
    let main = getcurrent();
    let parent_slot: Rc<RefCell<Option<Greenlet>>> = Rc::new(RefCell::new(None));
    let slot_in = Rc::clone(&parent_slot);
    let child = Greenlet::new(|()| "child done");
    let child_in = child.clone();
    let parent = Greenlet::new(move |()| {
        *slot_in.borrow_mut() = Some(getcurrent());
        // Suspend in main; main will start child, whose parent is reset to us.
        let got: &str = main.switch(()).unwrap();
        got
    });
    parent.switch::<(), ()>(()).unwrap();
    child_in.set_parent(&parent).unwrap();
    let calls = record();
    assert_eq!(child.switch::<(), &str>(()).unwrap(), "child done");
    let main = getcurrent();
    assert_eq!(
        stop(calls),
        [
            (Switch, main.clone(), child.clone()),
            (Switch, child.clone(), parent.clone()),
            (Switch, parent.clone(), main.clone()),
        ]
    );
}

// Rule 65: 'throw' events for a throw() and for a panic propagating from a dying greenlet to
// its parent.
#[test]
fn throw_events_for_throw_and_propagating_panic() {
    let main = getcurrent();
    let main_in = main.clone();
    let g = Greenlet::new(move |()| {
        let caught = catch(|| main_in.switch::<(), ()>(()));
        assert_eq!(text(&*caught.unwrap_err()), "first");
        main_in.switch::<(), ()>(()).unwrap();
    });
    g.switch::<(), ()>(()).unwrap();
    let calls = record();
    g.throw::<()>("first").unwrap();
    let raised = catch(|| g.throw::<()>("second")).unwrap_err();
    assert_eq!(text(&*raised), "second");
    assert_eq!(
        stop(calls),
        [
            (Throw, main.clone(), g.clone()),
            (Switch, g.clone(), main.clone()),
            (Throw, main.clone(), g.clone()),
            (Throw, g.clone(), main.clone()),
        ]
    );
}

// Rule 65 (with 18): killing a greenlet is a 'throw' into it, and the GreenletExit comes back to
// the parent as a value: a 'switch'. The same for a kill on drop.
#[test]
fn kill_is_a_throw_event_and_the_exit_returns_as_a_switch_event() {
    let main = getcurrent();
    let make = || {
        let main_in = main.clone();
        let g = Greenlet::new(move |()| {
            main_in.switch::<(), ()>(()).unwrap();
        });
        g.switch::<(), ()>(()).unwrap();
        g
    };
    let g = make();
    let calls = record();
    g.kill().unwrap();
    assert_eq!(
        stop(calls),
        [
            (Throw, main.clone(), g.clone()),
            (Switch, g.clone(), main.clone())
        ]
    );

    // Kill on drop: the hook must not keep handles to the victim, so it logs events and names.
    let g = Greenlet::builder()
        .name("victim")
        .build({
            let main_in = main.clone();
            move |()| {
                main_in.switch::<(), ()>(()).unwrap();
            }
        })
        .unwrap();
    g.switch::<(), ()>(()).unwrap();
    let log = Rc::new(RefCell::new(Vec::new()));
    let sink = Rc::clone(&log);
    settrace(Some(Box::new(move |event, origin, target| {
        sink.borrow_mut().push((
            event,
            origin.name().unwrap().to_string(),
            target.name().unwrap().to_string(),
        ))
    })));
    drop(g);
    settrace(None);
    let named = |e, o: &str, t: &str| (e, o.to_string(), t.to_string());
    assert_eq!(
        *log.borrow(),
        [
            named(Throw, "main", "victim"),
            named(Switch, "victim", "main")
        ]
    );
}

// Rule 65: switching or throwing to yourself fires an event with origin == target.
#[test]
fn self_switch_and_self_throw_fire_events_with_origin_equal_target() {
    let main = getcurrent();
    let calls = record();
    assert_eq!(main.switch::<u8, u8>(5).unwrap(), 5);
    let raised = catch(|| main.throw::<()>("self")).unwrap_err();
    assert_eq!(text(&*raised), "self");
    let g = Greenlet::new(|()| {
        let me = getcurrent();
        me.switch::<&str, &str>("inside").unwrap()
    });
    assert_eq!(g.switch::<(), &str>(()).unwrap(), "inside");
    assert_eq!(
        stop(calls),
        [
            (Switch, main.clone(), main.clone()),
            (Throw, main.clone(), main.clone()),
            (Switch, main.clone(), g.clone()),
            (Switch, g.clone(), g.clone()),
            (Switch, g.clone(), main.clone()),
        ]
    );
}

// Rule 64: a hook may replace or remove itself while it runs; that change sticks.
#[test]
fn hook_replacing_or_removing_itself_takes_effect() {
    let log = Rc::new(RefCell::new(Vec::new()));
    let first_log = Rc::clone(&log);
    settrace(Some(Box::new(move |_, _, _| {
        first_log.borrow_mut().push("first");
        let second_log = Rc::clone(&first_log);
        settrace(Some(Box::new(move |_, _, _| {
            second_log.borrow_mut().push("second");
            settrace(None);
        })));
    })));
    let main = getcurrent();
    for _ in 0..4 {
        main.switch::<(), ()>(()).unwrap();
    }
    assert_eq!(*log.borrow(), ["first", "second"]);
    assert!(settrace(None).is_none());
}

// Rule 66: a hook that panics is removed, and the panic is raised in the target as if thrown:
// here a suspended greenlet being resumed, which catches it.
#[test]
fn panicking_hook_is_removed_and_its_panic_raised_in_the_resumed_target() {
    let main = getcurrent();
    let main_in = main.clone();
    let g = Greenlet::new(move |()| {
        let caught = catch(|| main_in.switch::<(), ()>(()));
        let message = text(&*caught.unwrap_err());
        assert!(getcurrent().is_active());
        format!("g caught {message}")
    });
    g.switch::<(), ()>(()).unwrap();
    let calls = Rc::new(Cell::new(0));
    let calls_in = Rc::clone(&calls);
    settrace(Some(Box::new(move |_, _, target| {
        calls_in.set(calls_in.get() + 1);
        assert!(target.is_main(), "hook boom");
    })));
    // The hook panics in g; g catches it and returns; the return calls no hook.
    assert_eq!(g.switch::<(), String>(()).unwrap(), "g caught hook boom");
    assert_eq!(calls.get(), 1);
    assert!(settrace(None).is_none(), "the panicking hook was removed");
}

// Rule 66: a hook panicking in the receiving greenlet raises there; the value that was being
// delivered is dropped exactly once.
#[test]
fn panicking_hook_raises_in_receiver_and_drops_the_delivered_value_once() {
    #[derive(Debug)]
    struct Counted(Arc<AtomicUsize>);
    impl Drop for Counted {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    let drops = Arc::new(AtomicUsize::new(0));
    let drops_in = Arc::clone(&drops);
    let main = getcurrent();
    let main_in = main.clone();
    let g = Greenlet::new(move |()| {
        main_in
            .switch::<Counted, ()>(Counted(drops_in))
            .unwrap_or(());
        "g resumed"
    });
    settrace(Some(Box::new(|_, origin, target| {
        if target.is_main() && !origin.is_main() {
            panic!("hook boom in main");
        }
    })));
    let raised = catch(|| g.switch::<(), Counted>(())).unwrap_err();
    assert_eq!(text(&*raised), "hook boom in main");
    assert_eq!(drops.load(Ordering::SeqCst), 1);
    assert!(settrace(None).is_none());
    // g is intact: still suspended, and resumable.
    assert!(g.is_active());
    assert_eq!(g.switch::<(), &str>(()).unwrap(), "g resumed");
    assert_eq!(drops.load(Ordering::SeqCst), 1);
}

// Rule 66 on a self-switch: the hook's panic is raised at once in the caller.
#[test]
fn panicking_hook_on_self_switch_raises_in_caller() {
    settrace(Some(Box::new(|_, _, _| panic!("hook boom on self"))));
    let raised = catch(|| getcurrent().switch::<u8, u8>(1)).unwrap_err();
    assert_eq!(text(&*raised), "hook boom on self");
    assert!(settrace(None).is_none());
    assert_eq!(getcurrent().switch::<u8, u8>(2).unwrap(), 2);
}

/// The rule-66-on-start scenario: a hook panics when an unstarted greenlet is started.
fn hook_panics_on_start() -> (bool, String, bool) {
    let ran = Rc::new(Cell::new(false));
    let ran_in = Rc::clone(&ran);
    let g = Greenlet::new(move |()| ran_in.set(true));
    settrace(Some(Box::new(|event, _, target| {
        if event == Switch && !target.is_main() {
            panic!("hook boom on start");
        }
    })));
    let raised = catch(|| g.switch::<(), ()>(()));
    let removed = settrace(None).is_none();
    let message = match raised {
        Err(panic) => text(&*panic),
        Ok(outcome) => format!("no panic: {outcome:?}"),
    };
    assert!(g.is_dead(), "g died of the hook's panic");
    (ran.get(), message, removed)
}

// Rules 66 and 36: a hook panicking in the killer when the victim of a kill on drop dies: the
// hook is removed, and the drop does not panic (a drop never raises the kill's outcome).
#[test]
fn panicking_hook_during_kill_on_drop_does_not_make_the_drop_panic() {
    let main = getcurrent();
    let main_in = main.clone();
    let unwound = Rc::new(Cell::new(false));
    let unwound_in = Rc::clone(&unwound);
    let g = Greenlet::new(move |()| {
        let caught = catch(|| main_in.switch::<(), ()>(()));
        unwound_in.set(true);
        std::panic::resume_unwind(caught.unwrap_err());
    });
    g.switch::<(), ()>(()).unwrap();
    settrace(Some(Box::new(|_, _, target| {
        if target.is_main() {
            panic!("hook boom in killer");
        }
    })));
    let outcome = catch(move || drop(g));
    let removed = settrace(None).is_none();
    assert!(unwound.get(), "the victim was killed");
    assert!(removed, "the panicking hook was removed");
    if let Err(panic) = outcome {
        panic!("the drop panicked with: {}", text(&*panic));
    }
}

// Rule 66 on a start: the hook's panic is raised in the new greenlet before its closure runs,
// so it dies of it without running, and the panic reaches its parent (as if thrown into an
// unstarted greenlet, rule 29). In a child process because it may abort.
#[test]
fn panicking_hook_on_start_kills_greenlet_before_it_runs() {
    if is_child("start") {
        let (ran, message, removed) = hook_panics_on_start();
        assert!(!ran, "the closure ran");
        assert_eq!(message, "hook boom on start");
        assert!(removed);
        println!("CHILD-OK");
        return;
    }
    // In a child process: before the fix, this aborted the whole process.
    let output = child_command(
        "panicking_hook_on_start_kills_greenlet_before_it_runs",
        "start",
    )
    .output()
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("CHILD-OK"),
        "signal {:?}: {output:?}",
        terminating_signal(&output)
    );
}

// Rule 66 when the hook panics on a GreenletExit returned as a value (kill()): raised in the
// receiver, so kill() panics with the hook's panic instead of returning.
#[test]
fn panicking_hook_on_kill_return_raises_in_the_killer() {
    let main = getcurrent();
    let main_in = main.clone();
    let g = Greenlet::new(move |()| {
        main_in.switch::<(), ()>(()).unwrap();
    });
    g.switch::<(), ()>(()).unwrap();
    settrace(Some(Box::new(|event, _, target| {
        if event == Switch && target.is_main() {
            panic!("hook boom on exit");
        }
    })));
    let raised = catch(|| g.kill()).unwrap_err();
    assert_eq!(text(&*raised), "hook boom on exit");
    assert!(g.is_dead());
    assert!(settrace(None).is_none());
}

/// Counts its drops, on one thread.
struct Dropped(Rc<Cell<usize>>);

impl Drop for Dropped {
    fn drop(&mut self) {
        self.0.set(self.0.get() + 1);
    }
}

// Rule 43 with a hook set: the hook's handle to the abandoned sender is dropped before the
// receiver decides the sender's fate, so the sender is killed once, and its record and stack
// are released once (a greenlet made afterwards, which may reuse that stack, runs normally).
#[test]
fn an_abandoned_sender_is_killed_once_with_a_hook_set() {
    let events = Rc::new(Cell::new(0));
    let events_in = Rc::clone(&events);
    settrace(Some(Box::new(move |_, _, _| {
        events_in.set(events_in.get() + 1)
    })));
    let unwound = Rc::new(Cell::new(0));
    let (value, _) = common::abandoned_sender_switches(Dropped(Rc::clone(&unwound)));
    assert_eq!(value, 42);
    assert_eq!(
        unwound.get(),
        1,
        "the abandoned worker was not killed exactly once"
    );
    assert!(events.get() > 0);
    let probe = Greenlet::new(|()| 1u8);
    assert_eq!(probe.switch::<(), u8>(()).unwrap(), 1);
    assert!(probe.is_dead());
    settrace(None);
}

// A hook may run any code, including killing the greenlet whose switch it is told about: the
// receiver still gets the value, and the sender is released once.
#[test]
fn a_hook_killing_the_sender_of_a_switch_leaves_the_receiver_sound() {
    let armed = Rc::new(Cell::new(false));
    let armed_in = Rc::clone(&armed);
    settrace(Some(Box::new(move |event, origin, target| {
        if armed_in.get() && event == Switch && target.is_main() && !origin.is_main() {
            armed_in.set(false);
            origin.kill().unwrap();
        }
    })));
    let unwound = Rc::new(Cell::new(0));
    let guard = Dropped(Rc::clone(&unwound));
    let main = getcurrent();
    let g = Greenlet::new(move |()| {
        let _guard = guard;
        main.switch::<u32, ()>(1).unwrap();
    });
    armed.set(true);
    assert_eq!(g.switch::<(), u32>(()).unwrap(), 1);
    assert!(g.is_dead());
    assert_eq!(unwound.get(), 1);
    drop(g);
    let probe = Greenlet::new(|()| 2u8);
    assert_eq!(probe.switch::<(), u8>(()).unwrap(), 2);
    settrace(None);
}
