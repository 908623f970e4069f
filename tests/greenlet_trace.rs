//! The trace hook: greenlet rules 64-66 (see the rule map in the `greenlet` module
//! docs). `settrace` is per thread, and
//! every test runs on its own thread, so hooks do not leak between tests.

mod common;

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use awaitlet::greenlet::{TraceEvent, TraceHook, gettrace, settrace};
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
    let previous = settrace(Some(Rc::new(move |event, origin, target| {
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
        settrace(Some(Rc::new(move |_, _, _| {
            first_log.borrow_mut().push("first")
        })))
        .is_none()
    );
    let second_log = Rc::clone(&log);
    let first = settrace(Some(Rc::new(move |_, _, _| {
        second_log.borrow_mut().push("second")
    })))
    .expect("the first hook");
    let main = getcurrent();
    first(Switch, &main, &main);
    assert_eq!(*log.borrow(), ["first"]);
    getcurrent().switch::<(), ()>(()).unwrap();
    assert_eq!(*log.borrow(), ["first", "second"]);
    let second = settrace(None).expect("the second hook");
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
        settrace(Some(Rc::new(move |_, _, _| seen_in.set(seen_in.get() + 1))));
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
    settrace(Some(Rc::new(move |event, origin, target| {
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
    settrace(Some(Rc::new(move |_, _, _| {
        first_log.borrow_mut().push("first");
        let second_log = Rc::clone(&first_log);
        settrace(Some(Rc::new(move |_, _, _| {
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
    settrace(Some(Rc::new(move |_, _, target| {
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
    settrace(Some(Rc::new(|_, origin, target| {
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
    settrace(Some(Rc::new(|_, _, _| panic!("hook boom on self"))));
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
    settrace(Some(Rc::new(|event, _, target| {
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
    settrace(Some(Rc::new(|_, _, target| {
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
    settrace(Some(Rc::new(|event, _, target| {
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
    settrace(Some(Rc::new(move |_, _, _| {
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
    settrace(Some(Rc::new(move |event, origin, target| {
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

/// The name of a greenlet, for logs that must not keep handles ("main" for main).
fn name(greenlet: &Greenlet) -> String {
    greenlet.name().unwrap_or("unnamed").to_string()
}

/// A greenlet named `name` running `run`.
fn named<A: 'static, R: 'static>(
    name: &'static str,
    run: impl FnOnce(A) -> R + 'static,
) -> Greenlet {
    Greenlet::builder().name(name).build(run).unwrap()
}

/// The address of a hook, to compare hooks by identity.
fn address(hook: &TraceHook) -> *const () {
    Rc::as_ptr(hook) as *const ()
}

// Rule 65 with a hook that switches: the hook stays installed while its call is suspended in
// another greenlet, so every switch made meanwhile is traced, and it stays installed if that
// greenlet never comes back.
#[test]
fn hook_stays_set_while_it_runs() {
    let log = Rc::new(RefCell::new(Vec::new()));
    let sink = Rc::clone(&log);
    let main = getcurrent();
    let main_in = main.clone();
    settrace(Some(Rc::new(move |event, origin, target| {
        sink.borrow_mut().push((event, name(origin), name(target)));
        if name(target) == "g" && name(origin) == "main" {
            // Suspended inside the hook, in g, until main switches back.
            main_in.switch::<(), ()>(()).unwrap();
        }
    })));
    let g = named("g", |()| "g done");
    g.switch::<(), ()>(()).unwrap();
    // Main runs while the hook's call in g is suspended: its switches are traced.
    main.switch::<(), ()>(()).unwrap();
    let other = named("other", |()| 7u8);
    assert_eq!(other.switch::<(), u8>(()).unwrap(), 7);
    let installed = settrace(None).expect("the hook stays set while its call is suspended");
    settrace(Some(installed));
    let entry = |e, o: &str, t: &str| (e, o.to_string(), t.to_string());
    assert_eq!(
        *log.borrow(),
        [
            entry(Switch, "main", "g"),
            entry(Switch, "g", "main"),
            entry(Switch, "main", "main"),
            entry(Switch, "main", "other"),
            entry(Switch, "other", "main"),
        ]
    );
    // g never comes back here; the hook is still the one set.
    assert!(settrace(None).is_some());
    assert!(!g.is_dead());
    drop(g);
}

// Rule 65, as in greenlet's own three-greenlet test: the hook, told of g1's start, switches to
// g2 from inside itself. That switch and every one made before the hook's call returns are
// traced (nested calls), and g1 starts with its own argument once the hook returns.
#[test]
fn switches_made_inside_the_hook_are_traced() {
    let log: Rc<RefCell<Vec<String>>> = Rc::default();
    let main = getcurrent();
    let g2_slot: Rc<RefCell<Option<Greenlet>>> = Rc::default();
    let switch_to_g2 = Rc::new(Cell::new(true));
    let (sink, slot, armed) = (
        Rc::clone(&log),
        Rc::clone(&g2_slot),
        Rc::clone(&switch_to_g2),
    );
    settrace(Some(Rc::new(move |event, origin, target| {
        sink.borrow_mut().push(format!(
            "trace {event:?} {} -> {}",
            name(origin),
            name(target)
        ));
        if armed.replace(false) {
            let g2 = slot
                .borrow()
                .clone()
                .expect("g2 is made before the first switch");
            // What resumes g1 here is dropped: g1 then starts with its own argument.
            let _: &str = g2.switch("g2 from hook").unwrap();
        }
    })));
    let (log1, main1) = (Rc::clone(&log), main.clone());
    let g1 = named("g1", move |arg: &'static str| {
        log1.borrow_mut().push(format!("g1 arg {arg}"));
        let from_parent: &str = main1.switch("from g1").unwrap();
        log1.borrow_mut()
            .push(format!("g1 from parent {from_parent}"));
        "g1 done"
    });
    let (log2, main2) = (Rc::clone(&log), main.clone());
    let g2 = named("g2", move |arg: &'static str| {
        log2.borrow_mut().push(format!("g2 arg {arg}"));
        main2.switch::<&str, ()>("from g2").unwrap();
        log2.borrow_mut().push("g2 from parent".to_string());
        "g2 done"
    });
    *g2_slot.borrow_mut() = Some(g2.clone());
    let push = |line: String| log.borrow_mut().push(line);
    push(format!(
        "main g1 {}",
        g1.switch::<&str, &str>("g1 from main").unwrap()
    ));
    push(format!(
        "main g1 again {}",
        g1.switch::<&str, &str>("resumes the hook").unwrap()
    ));
    push(format!(
        "main g1.2 {}",
        g1.switch::<&str, &str>("g1 from main 2").unwrap()
    ));
    push(format!("main g2.2 {}", g2.switch::<(), &str>(()).unwrap()));
    assert!(settrace(None).is_some());
    g2_slot.borrow_mut().take();
    assert_eq!(
        *log.borrow(),
        [
            "trace Switch main -> g1",
            "trace Switch g1 -> g2",
            "g2 arg g2 from hook",
            "trace Switch g2 -> main",
            "main g1 from g2",
            "trace Switch main -> g1",
            "g1 arg g1 from main",
            "trace Switch g1 -> main",
            "main g1 again from g1",
            "trace Switch main -> g1",
            "g1 from parent g1 from main 2",
            "trace Switch g1 -> main",
            "main g1.2 g1 done",
            "trace Switch main -> g2",
            "g2 from parent",
            "trace Switch g2 -> main",
            "main g2.2 g2 done",
        ]
    );
    assert!(g1.is_dead() && g2.is_dead());
}

// Rule 64 inside the hook: `settrace` sees the hook that is running, and returns it; putting it
// back, or replacing it, works from inside.
#[test]
fn settrace_inside_the_hook_returns_the_hook() {
    let seen: Rc<Cell<Option<*const ()>>> = Rc::default();
    let replace = Rc::new(Cell::new(false));
    let replacement_calls = Rc::new(Cell::new(0));
    let (seen_in, replace_in, calls_in) = (
        Rc::clone(&seen),
        Rc::clone(&replace),
        Rc::clone(&replacement_calls),
    );
    let hook: TraceHook = Rc::new(move |_, _, _| {
        let installed = settrace(None);
        seen_in.set(installed.as_ref().map(address));
        if replace_in.get() {
            let calls = Rc::clone(&calls_in);
            settrace(Some(Rc::new(move |_, _, _| calls.set(calls.get() + 1))));
        } else {
            settrace(installed);
        }
    });
    let original = address(&hook);
    assert!(settrace(Some(hook)).is_none());
    getcurrent().switch::<(), ()>(()).unwrap();
    assert_eq!(
        seen.get(),
        Some(original),
        "settrace inside the hook returned the hook"
    );
    let still = settrace(None).expect("the hook put itself back");
    assert_eq!(address(&still), original);

    settrace(Some(still));
    replace.set(true);
    getcurrent().switch::<(), ()>(()).unwrap();
    assert_eq!(seen.get(), Some(original));
    getcurrent().switch::<(), ()>(()).unwrap();
    assert_eq!(
        replacement_calls.get(),
        1,
        "the replacement is the hook from then on"
    );
    let replacement = settrace(None).expect("the replacement is set");
    assert_ne!(address(&replacement), original);
}

// Rules 65-66 with a kill: a greenlet suspended inside the hook is killed (by `kill` or by
// dropping its last handle); the `GreenletExit` unwinding through the hook is not the hook's
// failure, so it stays set, and the kill's own switches are traced.
#[test]
fn hook_survives_the_greenlet_running_it_being_killed() {
    for by_drop in [false, true] {
        let log = Rc::new(RefCell::new(Vec::new()));
        let unwound = Rc::new(Cell::new(0));
        let (sink, unwound_in) = (Rc::clone(&log), Rc::clone(&unwound));
        let main = getcurrent();
        let main_in = main.clone();
        settrace(Some(Rc::new(move |event, origin, target| {
            sink.borrow_mut().push((event, name(origin), name(target)));
            if event == Switch && name(target) == "victim" && name(origin) == "main" {
                let _guard = Dropped(Rc::clone(&unwound_in));
                main_in.switch::<(), ()>(()).unwrap();
            }
        })));
        let victim = named("victim", |()| ());
        victim.switch::<(), ()>(()).unwrap();
        if by_drop {
            drop(victim);
        } else {
            victim.kill().unwrap();
            assert!(victim.is_dead());
        }
        assert_eq!(unwound.get(), 1, "the hook's frame in the victim unwound");
        let entry = |e, o: &str, t: &str| (e, o.to_string(), t.to_string());
        assert_eq!(
            *log.borrow(),
            [
                entry(Switch, "main", "victim"),
                entry(Switch, "victim", "main"),
                entry(Throw, "main", "victim"),
                entry(Switch, "victim", "main"),
            ],
            "killed by {}",
            if by_drop { "drop" } else { "kill" }
        );
        assert!(settrace(None).is_some(), "the hook was lost to the kill");
    }
}

// Rule 66 still holds for a greenlet suspended inside the hook: any panic other than a kill
// that unwinds out of the hook (here one thrown in) removes it, and continues in that greenlet.
#[test]
fn a_panic_thrown_through_the_hook_removes_it() {
    let main = getcurrent();
    let main_in = main.clone();
    settrace(Some(Rc::new(move |event, origin, target| {
        if event == Switch && name(target) == "g" && name(origin) == "main" {
            main_in.switch::<(), ()>(()).unwrap();
        }
    })));
    let g = named("g", |()| "g ran");
    g.switch::<(), ()>(()).unwrap();
    let raised = catch(|| g.throw::<()>("thrown through the hook")).unwrap_err();
    assert_eq!(text(&*raised), "thrown through the hook");
    assert!(g.is_dead(), "g died of the panic, without running");
    assert!(settrace(None).is_none(), "the hook was removed");
}

// Rule 66 on a nested call: the hook panicking in a call nested inside its own running call is
// removed; the outer call, still running, completes and the hook stays removed.
#[test]
fn a_nested_call_panicking_removes_the_hook_for_good() {
    let depth = Rc::new(Cell::new(0));
    let calls = Rc::new(Cell::new(0));
    let (depth_in, calls_in) = (Rc::clone(&depth), Rc::clone(&calls));
    settrace(Some(Rc::new(move |_, _, _| {
        calls_in.set(calls_in.get() + 1);
        depth_in.set(depth_in.get() + 1);
        if depth_in.get() == 2 {
            depth_in.set(depth_in.get() - 1);
            panic!("nested boom");
        }
        let raised = catch(|| getcurrent().switch::<(), ()>(()));
        assert_eq!(text(&*raised.unwrap_err()), "nested boom");
        depth_in.set(depth_in.get() - 1);
    })));
    getcurrent().switch::<(), ()>(()).unwrap();
    assert_eq!(calls.get(), 2);
    assert!(settrace(None).is_none(), "the panicking hook was removed");
    getcurrent().switch::<(), ()>(()).unwrap();
    assert_eq!(calls.get(), 2);
}

thread_local! {
    /// Where a greenlet suspended inside the hook waits for its thread to exit.
    static SUSPENDED_IN_HOOK: RefCell<Option<Greenlet>> = const { RefCell::new(None) };
}

// Thread exit with the hook set and a greenlet suspended inside it: the thread-locals holding
// both are destroyed in either order, and the thread ends without a panic or an abort.
#[test]
fn thread_exit_with_a_greenlet_suspended_inside_the_hook_is_clean() {
    let unwound = Arc::new(AtomicUsize::new(0));
    let unwound_in = Arc::clone(&unwound);
    std::thread::spawn(move || {
        SUSPENDED_IN_HOOK.with(|_| ());
        let main = getcurrent();
        settrace(Some(Rc::new(move |_, origin, target| {
            if name(target) == "g" && name(origin) == "main" {
                struct Unwound(Arc<AtomicUsize>);
                impl Drop for Unwound {
                    fn drop(&mut self) {
                        self.0.fetch_add(1, Ordering::SeqCst);
                    }
                }
                let _guard = Unwound(Arc::clone(&unwound_in));
                let _ = main.switch::<(), ()>(());
            }
        })));
        let g = named("g", |()| ());
        g.switch::<(), ()>(()).unwrap();
        SUSPENDED_IN_HOOK.with(|slot| *slot.borrow_mut() = Some(g));
    })
    .join()
    .expect("the thread exited cleanly");
    assert_eq!(
        unwound.load(Ordering::SeqCst),
        1,
        "the hook's frame was unwound"
    );
}

// Rule 64: gettrace returns the hook that is set, leaving it set, inside the hook as well
// (the running hook), and None once it is removed.
#[test]
fn gettrace_returns_the_set_hook_and_leaves_it_set() {
    assert!(gettrace().is_none(), "a new thread has no hook");
    let seen: Rc<Cell<Option<*const ()>>> = Rc::default();
    let seen_in = Rc::clone(&seen);
    let hook: TraceHook = Rc::new(move |_, _, _| seen_in.set(gettrace().as_ref().map(address)));
    let original = address(&hook);
    settrace(Some(hook));
    assert_eq!(gettrace().as_ref().map(address), Some(original));
    getcurrent().switch::<(), ()>(()).unwrap();
    assert_eq!(
        seen.get(),
        Some(original),
        "inside the hook, gettrace is the hook"
    );
    let removed = settrace(None).expect("gettrace left the hook set");
    assert_eq!(address(&removed), original);
    assert!(gettrace().is_none());
}
