//! GreenletExit and kill on drop: greenlet rules 32-39 and 43 (see the rule map in the `greenlet`
//! module docs), `kill()`,
//! destructor order, stacks going back to the pool, and panics in destructors during a kill.
//!
//! Rust mapping: dropping the last handle to a started, suspended, non-main greenlet throws
//! `GreenletExit { message: "Killing the greenlet because all references have vanished." }`
//! into it inside the drop. Python's `sys.unraisablehook` (rule 36) and the "did not kill"
//! message (rule 37) are lines on stderr; those tests, and the one that leaks a greenlet on
//! purpose, run in a child process (this test binary again, see `common`).

mod common;

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use awaitlet::stack::{pool_len, trim_pool};
use awaitlet::{Greenlet, GreenletExit, SwitchError, getcurrent};
use common::{
    PanicOnDrop, catch, child_aborts_on_a_destructor_panic_during_cleanup, child_ok, is_child,
    library_lines,
};

const VANISHED: &str = "Killing the greenlet because all references have vanished.";

type Log = Rc<RefCell<Vec<String>>>;

fn log() -> Log {
    Rc::new(RefCell::new(Vec::new()))
}

fn push(log: &Log, entry: impl Into<String>) {
    log.borrow_mut().push(entry.into());
}

/// Pushes its label to a log when dropped.
struct Flag(Log, &'static str);

impl Drop for Flag {
    fn drop(&mut self) {
        push(&self.0, self.1);
    }
}

/// Counts its drops.
struct Counted(Arc<AtomicUsize>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

type Slot = Rc<RefCell<Option<Greenlet>>>;

fn slot() -> Slot {
    Rc::new(RefCell::new(None))
}

/// The one line the library writes when a kill on drop turned into another panic (rule 36).
fn the_kill_panic_report(stderr: &str) -> &str {
    let lines = library_lines(stderr);
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(
        lines[0].contains("panicked while being killed on drop"),
        "{stderr}"
    );
    lines[0]
}

// Rule 32: an unstarted greenlet is freed without running: its closure's captures are dropped,
// its body never runs.
#[test]
fn dropping_unstarted_greenlet_drops_closure_without_running_it() {
    let log = log();
    let guard = Flag(Rc::clone(&log), "capture dropped");
    let ran = Rc::new(Cell::new(false));
    let ran_in = Rc::clone(&ran);
    let g = Greenlet::new(move |()| {
        let _keep = &guard;
        ran_in.set(true);
    });
    let other = g.clone();
    drop(g);
    assert!(log.borrow().is_empty(), "a handle remains");
    drop(other);
    assert_eq!(*log.borrow(), ["capture dropped"]);
    assert!(!ran.get());
}

// Rule 32: dead greenlets are freed without running code; dropping handles to main or to the
// running greenlet kills nothing.
#[test]
fn dropping_dead_main_or_running_greenlet_runs_no_code() {
    let log = log();
    let log_in = Rc::clone(&log);
    let g = Greenlet::new(move |()| {
        // The running greenlet drops a handle to itself: nothing happens.
        drop(getcurrent());
        push(&log_in, "still running");
        let _guard = Flag(log_in, "body ended");
    });
    g.switch::<(), ()>(()).unwrap();
    assert_eq!(*log.borrow(), ["still running", "body ended"]);
    assert!(g.is_dead());
    drop(g);
    assert_eq!(log.borrow().len(), 2, "dropping a dead greenlet ran code");

    let main = getcurrent();
    drop(getcurrent());
    drop(main.clone());
    assert!(main.is_active() && getcurrent().is_main());
}

// Rule 33: the kill happens synchronously inside the drop, with a GreenletExit carrying the
// "vanished" message; the greenlet's handlers and destructors run.
#[test]
fn dropping_last_handle_throws_vanished_greenlet_exit_synchronously() {
    let log = log();
    let log_in = Rc::clone(&log);
    let main = getcurrent();
    let g = Greenlet::new(move |()| {
        let _guard = Flag(Rc::clone(&log_in), "destructor ran");
        let caught = catch(|| main.switch::<(), ()>(())).unwrap_err();
        let exit = caught
            .downcast_ref::<GreenletExit>()
            .expect("a GreenletExit");
        push(&log_in, format!("caught: {}", exit.message));
        std::panic::resume_unwind(caught);
    });
    g.switch::<(), ()>(()).unwrap();
    assert!(log.borrow().is_empty());
    drop(g);
    push(&log, "drop returned");
    assert_eq!(
        *log.borrow(),
        [
            format!("caught: {VANISHED}"),
            "destructor ran".to_string(),
            "drop returned".to_string()
        ]
    );
}

// Kill on drop unwinds the greenlet's frames: destructors run in reverse order of creation,
// across nested calls.
#[test]
fn killed_greenlet_runs_destructors_in_reverse_order() {
    fn nested(log: Log, main: &Greenlet) {
        let _c = Flag(Rc::clone(&log), "c");
        let _d = Flag(log, "d");
        main.switch::<(), ()>(()).unwrap();
    }
    let log = log();
    let log_in = Rc::clone(&log);
    let main = getcurrent();
    let g = Greenlet::new(move |()| {
        let _a = Flag(Rc::clone(&log_in), "a");
        let _b = Flag(Rc::clone(&log_in), "b");
        nested(log_in, &main);
    });
    g.switch::<(), ()>(()).unwrap();
    drop(g);
    assert_eq!(*log.borrow(), ["d", "c", "b", "a"]);
}

// A greenlet killed on drop gives its stack back to the thread's pool (fresh thread: the pool
// is per thread, so nothing else moves the count).
#[test]
fn killed_greenlet_stack_returns_to_pool() {
    std::thread::spawn(|| {
        trim_pool();
        assert_eq!(pool_len(), 0);
        let main = getcurrent();
        let greenlets: Vec<Greenlet> = (0..3)
            .map(|_| {
                let main = main.clone();
                let g = Greenlet::new(move |()| {
                    main.switch::<(), ()>(()).unwrap();
                });
                g.switch::<(), ()>(()).unwrap();
                g
            })
            .collect();
        assert_eq!(pool_len(), 0, "stacks in use are not pooled");
        let mut expected = 0;
        for g in greenlets {
            drop(g);
            expected += 1;
            assert_eq!(pool_len(), expected);
        }
    })
    .join()
    .unwrap();
}

// Rule 34: during the kill the victim's parent is the greenlet that dropped it, and control
// comes back to that greenlet's drop when the victim dies.
#[test]
fn killer_is_victims_parent_during_kill_and_drop_resumes_killer() {
    let log = log();
    let victim_slot = slot();
    let killer_slot = slot();
    let parent_seen = slot();
    let main = getcurrent();

    let (log_v, parent_out, main_v) = (Rc::clone(&log), Rc::clone(&parent_seen), main.clone());
    let victim = Greenlet::new(move |()| {
        let caught = catch(|| main_v.switch::<(), ()>(()));
        assert!(caught.is_err());
        *parent_out.borrow_mut() = getcurrent().parent();
        push(&log_v, "victim caught the exit");
    });
    victim.switch::<(), ()>(()).unwrap();
    *victim_slot.borrow_mut() = Some(victim);

    let (log_k, victim_in) = (Rc::clone(&log), Rc::clone(&victim_slot));
    let killer = Greenlet::new(move |()| {
        let last = victim_in.borrow_mut().take().unwrap();
        drop(last);
        push(&log_k, "killer's drop returned");
        "killer done"
    });
    *killer_slot.borrow_mut() = Some(killer.clone());
    assert_eq!(killer.switch::<(), &str>(()).unwrap(), "killer done");
    assert_eq!(
        *log.borrow(),
        ["victim caught the exit", "killer's drop returned"]
    );
    assert_eq!(*parent_seen.borrow(), Some(killer));
}

// Rule 34: the dying victim's exit goes to the killer, not to its original parent, which stays
// suspended and is not resumed.
#[test]
fn killed_victims_exit_does_not_resume_its_original_parent() {
    let main = getcurrent();
    let resumed = Rc::new(Cell::new(false));
    let resumed_in = Rc::clone(&resumed);
    let main_p = main.clone();
    let parent = Greenlet::new(move |()| {
        let got: u32 = main_p.switch(()).unwrap();
        resumed_in.set(true);
        got
    });
    parent.switch::<(), ()>(()).unwrap();

    let main_v = main.clone();
    let victim = Greenlet::builder()
        .parent(&parent)
        .build(move |()| {
            main_v.switch::<(), ()>(()).unwrap();
        })
        .unwrap();
    victim.switch::<(), ()>(()).unwrap();
    drop(victim);
    assert!(!resumed.get(), "the original parent was resumed");
    assert!(parent.is_active());
    assert_eq!(parent.switch::<u32, u32>(9).unwrap(), 9);
    assert!(resumed.get());
}

/// Rule 35's body: the victim catches the exit and returns a value, which is discarded
/// (dropped). Returns the log.
fn victim_returns_normally_after_exit() -> Vec<String> {
    let log = log();
    let log_in = Rc::clone(&log);
    let main = getcurrent();
    let g = Greenlet::new(move |()| {
        let caught = catch(|| main.switch::<(), ()>(()));
        assert!(caught.unwrap_err().is::<GreenletExit>());
        push(&log_in, "returning");
        Flag(log_in, "result discarded")
    });
    g.switch::<(), ()>(()).unwrap();
    let outcome = catch(move || drop(g));
    assert!(outcome.is_ok(), "drop panicked");
    push(&log, "after drop");
    log.borrow().clone()
}

// Rule 35: the victim catches GreenletExit and returns normally: the result is discarded (its
// destructor runs inside the drop) and the drop returns normally.
#[test]
fn victim_returning_normally_after_exit_has_its_result_discarded() {
    assert_eq!(
        victim_returns_normally_after_exit(),
        ["returning", "result discarded", "after drop"]
    );
}

/// Rule 38's body: the victim stores a handle to itself, then switches to its parent (the
/// killer). It stays alive with its parent restored, and resumes normally later.
fn victim_resurrects_itself() {
    let main = getcurrent();
    let keep = slot();
    let parent_during = slot();
    let (keep_in, parent_out) = (Rc::clone(&keep), Rc::clone(&parent_during));
    let main_v = main.clone();
    let victim = Greenlet::new(move |()| {
        let caught = catch(|| main_v.switch::<(), ()>(()));
        let exit = caught.unwrap_err().downcast::<GreenletExit>().unwrap();
        assert_eq!(exit.message, VANISHED);
        *keep_in.borrow_mut() = Some(getcurrent());
        let parent = getcurrent().parent().unwrap();
        *parent_out.borrow_mut() = Some(parent.clone());
        let resumed: &str = parent.switch("resurrected").unwrap();
        format!("finished after {resumed}")
    });
    victim.switch::<(), ()>(()).unwrap();

    let victim_in = Rc::new(RefCell::new(Some(victim)));
    let victim_k = Rc::clone(&victim_in);
    let killer = Greenlet::new(move |()| {
        drop(victim_k.borrow_mut().take());
        "killer done"
    });
    assert_eq!(killer.switch::<(), &str>(()).unwrap(), "killer done");
    assert_eq!(*parent_during.borrow(), Some(killer), "parent during kill");

    let victim = keep.borrow_mut().take().expect("victim stored itself");
    assert!(victim.is_active() && !victim.is_dead());
    assert_eq!(
        victim.parent(),
        Some(main.clone()),
        "original parent restored"
    );
    // Resumed later, it finishes and returns to its original parent, us.
    assert_eq!(
        victim.switch::<&str, String>("later").unwrap(),
        "finished after later"
    );
    assert!(victim.is_dead());
}

// Rule 38: a victim that stores a new handle to itself before switching away stays alive and
// suspended with its original parent, and can be resumed later.
#[test]
fn victim_storing_a_handle_to_itself_is_resurrected_and_resumable() {
    victim_resurrects_itself();
}

// Rules 35 and 38: neither a victim that returns normally nor one that resurrects itself makes
// the library print anything.
#[test]
fn kill_that_ends_normally_or_resurrects_prints_nothing() {
    if is_child("silent") {
        victim_returns_normally_after_exit();
        victim_resurrects_itself();
        println!("CHILD-OK");
        return;
    }
    let stderr = child_ok(
        "kill_that_ends_normally_or_resurrects_prints_nothing",
        "silent",
    );
    assert!(stderr.trim().is_empty(), "unexpected stderr: {stderr}");
}

// Rule 36: a victim that turns the kill into another panic: the drop does not panic, the
// victim is unwound and dead, and a line goes to stderr.
#[test]
fn kill_turned_into_another_panic_is_reported_not_raised_from_drop() {
    if is_child("converted") {
        let unwound = Arc::new(AtomicUsize::new(0));
        let counted = Counted(Arc::clone(&unwound));
        let main = getcurrent();
        let g = Greenlet::new(move |()| {
            let _counted = counted;
            let caught = catch(|| main.switch::<(), ()>(()));
            assert!(caught.unwrap_err().is::<GreenletExit>());
            panic!("converted kill");
        });
        g.switch::<(), ()>(()).unwrap();
        let outcome = catch(move || drop(g));
        assert!(outcome.is_ok(), "the drop panicked");
        assert_eq!(unwound.load(Ordering::SeqCst), 1);
        println!("CHILD-OK");
        return;
    }
    let stderr = child_ok(
        "kill_turned_into_another_panic_is_reported_not_raised_from_drop",
        "converted",
    );
    let line = the_kill_panic_report(&stderr);
    assert!(line.contains("Greenlet {"), "names the greenlet: {stderr}");
    assert!(
        stderr.contains("converted kill"),
        "the panic itself: {stderr}"
    );
}

// Rule 37: a victim that catches GreenletExit and switches away (to its parent, the killer)
// without keeping a handle to itself: a "did not kill" line on stderr, and the greenlet is
// leaked on purpose: never unwound, never retried. In a child process because of the leak.
#[test]
fn victim_switching_away_without_handle_is_reported_and_leaked() {
    if is_child("leak") {
        let unwound = Arc::new(AtomicUsize::new(0));
        let counted = Counted(Arc::clone(&unwound));
        let log = log();
        let log_in = Rc::clone(&log);
        let main = getcurrent();
        let g = Greenlet::new(move |()| {
            let _counted = counted;
            let caught = catch(|| main.switch::<(), ()>(()));
            assert!(caught.unwrap_err().is::<GreenletExit>());
            push(&log_in, "victim switches away");
            // No handle to itself is held across this switch.
            let parent = getcurrent().parent().unwrap();
            parent.switch::<(), ()>(()).unwrap();
            push(&log_in, "victim resumed (must not happen)");
        });
        g.switch::<(), ()>(()).unwrap();
        let outcome = catch(move || drop(g));
        assert!(outcome.is_ok(), "the drop panicked");
        push(&log, "drop returned");
        // More switching does not retry the kill.
        for i in 0..3u32 {
            let other = Greenlet::new(|n: u32| n + 1);
            assert_eq!(other.switch::<u32, u32>(i).unwrap(), i + 1);
        }
        assert_eq!(*log.borrow(), ["victim switches away", "drop returned"]);
        assert_eq!(
            unwound.load(Ordering::SeqCst),
            0,
            "the leaked greenlet unwound"
        );
        println!("CHILD-OK");
        return;
    }
    let stderr = child_ok(
        "victim_switching_away_without_handle_is_reported_and_leaked",
        "leak",
    );
    let lines = library_lines(&stderr);
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(lines[0].contains("GreenletExit did not kill"), "{stderr}");
    assert!(lines[0].contains("suspended"), "{stderr}");
}

// Rule 39: a victim that switches to some other greenlet X instead: the killer's drop resumes
// only when something switches back to the killer (here X, unstarted, finishing into its parent,
// the killer). The victim is then still suspended without a handle: rule 37 applies.
#[test]
fn victim_switching_to_another_greenlet_resumes_killer_only_when_switched_back() {
    if is_child("elsewhere") {
        let log = log();
        let main = getcurrent();
        let log_x = Rc::clone(&log);
        let x = Greenlet::new(move |word: &'static str| {
            push(&log_x, format!("x runs with {word}"));
            "x result"
        });
        let (log_v, x_in) = (Rc::clone(&log), x.clone());
        let g = Greenlet::new(move |()| {
            let caught = catch(|| main.switch::<(), ()>(()));
            assert!(caught.unwrap_err().is::<GreenletExit>());
            push(&log_v, "victim switches to x");
            x_in.switch::<&str, ()>("hi").unwrap();
            push(&log_v, "victim resumed (must not happen)");
        });
        g.switch::<(), ()>(()).unwrap();
        drop(g);
        push(&log, "drop returned");
        assert_eq!(
            *log.borrow(),
            ["victim switches to x", "x runs with hi", "drop returned"]
        );
        assert!(x.is_dead());
        println!("CHILD-OK");
        return;
    }
    let stderr = child_ok(
        "victim_switching_to_another_greenlet_resumes_killer_only_when_switched_back",
        "elsewhere",
    );
    let lines = library_lines(&stderr);
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(lines[0].contains("GreenletExit did not kill"), "{stderr}");
}

// Rule 43 (test_dealloc_switch_args_not_lost): a greenlet drops its last handle to itself, then
// switches to its parent with a value: it is killed, and the value still arrives.
#[test]
fn value_switched_by_abandoned_greenlet_is_delivered_and_it_is_killed() {
    let log = log();
    let (value, initiator) =
        common::abandoned_sender_switches(Flag(Rc::clone(&log), "worker unwound"));
    assert_eq!(value, 42);
    assert_eq!(*log.borrow(), ["worker unwound"]);
    assert!(initiator.is_dead());
}

// kill() on a suspended greenlet throws an empty GreenletExit, unwinds it and returns Ok.
#[test]
fn kill_on_suspended_greenlet_unwinds_it_and_returns_ok() {
    let log = log();
    let log_in = Rc::clone(&log);
    let main = getcurrent();
    let g = Greenlet::new(move |()| {
        let _guard = Flag(Rc::clone(&log_in), "unwound");
        let caught = catch(|| main.switch::<(), ()>(())).unwrap_err();
        let exit = caught.downcast_ref::<GreenletExit>().unwrap();
        push(&log_in, format!("exit message {:?}", exit.message));
        std::panic::resume_unwind(caught);
    });
    g.switch::<(), ()>(()).unwrap();
    g.kill().unwrap();
    assert!(g.is_dead());
    assert_eq!(*log.borrow(), ["exit message \"\"", "unwound"]);
    // Killing again (dead) and killing an unstarted greenlet are fine too.
    g.kill().unwrap();
    let ran = Rc::new(Cell::new(false));
    let ran_in = Rc::clone(&ran);
    let unstarted = Greenlet::new(move |()| ran_in.set(true));
    unstarted.kill().unwrap();
    assert!(unstarted.is_dead() && !ran.get());
}

// kill() when the greenlet catches the exit and returns a value: the value, in WrongType.
#[test]
fn kill_returns_value_of_a_greenlet_that_survives_the_exit() {
    let main = getcurrent();
    let g = Greenlet::new(move |()| {
        let _ = catch(|| main.switch::<(), ()>(()));
        "ignored the exit"
    });
    g.switch::<(), ()>(()).unwrap();
    match g.kill() {
        Err(SwitchError::WrongType { value, .. }) => {
            assert_eq!(*value.downcast::<&str>().unwrap(), "ignored the exit");
        }
        other => panic!("{other:?}"),
    }
    assert!(g.is_dead());
}

// A destructor that panics after the victim caught the exit (a normal scope exit, not during
// unwinding) turns the kill into another panic: with kill() that panic reaches the parent (the
// caller) like any other (rule 27).
#[test]
fn kill_raises_a_panic_from_a_destructor_run_after_the_exit_was_caught() {
    let main = getcurrent();
    let g = Greenlet::new(move |()| {
        let bomb = PanicOnDrop("destructor panic");
        let _ = catch(|| main.switch::<(), ()>(()));
        drop(bomb);
    });
    g.switch::<(), ()>(()).unwrap();
    let raised = catch(|| g.kill()).unwrap_err();
    assert_eq!(raised.downcast_ref::<String>().unwrap(), "destructor panic");
    assert!(g.is_dead());
}

// Rule 36 territory: the same destructor panic during a kill on drop: the drop does not panic,
// the library reports it on stderr.
#[test]
fn destructor_panic_after_caught_exit_during_drop_is_reported_not_raised() {
    if is_child("destructor-after-catch") {
        let main = getcurrent();
        let g = Greenlet::new(move |()| {
            let bomb = PanicOnDrop("destructor panic");
            let _ = catch(|| main.switch::<(), ()>(()));
            drop(bomb);
        });
        g.switch::<(), ()>(()).unwrap();
        let outcome = catch(move || drop(g));
        assert!(outcome.is_ok(), "the drop panicked");
        println!("CHILD-OK");
        return;
    }
    let stderr = child_ok(
        "destructor_panic_after_caught_exit_during_drop_is_reported_not_raised",
        "destructor-after-catch",
    );
    the_kill_panic_report(&stderr);
    assert!(stderr.contains("destructor panic"), "{stderr}");
}

// A destructor that panics *while* the GreenletExit unwinds the victim is a panic during
// unwinding: Rust aborts the process ("panic in a destructor during cleanup"), as it would on
// any stack. Documented here; the library cannot intercept it.
#[test]
fn destructor_panic_while_exit_unwinds_aborts_the_process() {
    if is_child("destructor-during-unwind") {
        let main = getcurrent();
        let g = Greenlet::new(move |()| {
            let _bomb = PanicOnDrop("destructor panic during unwind");
            main.switch::<(), ()>(()).unwrap();
        });
        g.switch::<(), ()>(()).unwrap();
        drop(g);
        println!("CHILD-SURVIVED");
        return;
    }
    child_aborts_on_a_destructor_panic_during_cleanup(
        "destructor_panic_while_exit_unwinds_aborts_the_process",
        "destructor-during-unwind",
        "destructor panic during unwind",
    );
}
