//! `throw`: greenlet rules 25 and 27-31 (see the rule map in the `greenlet`
//! module docs), as mapped to Rust: an exception is
//! a panic whose payload crosses greenlets unchanged, and `GreenletExit` reaches a parent as a
//! value (`SwitchError::Exited`, or `Ok` when the receiver asks for a `GreenletExit`).

mod common;

use common::{catch, text};

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;

use awaitlet::{Greenlet, GreenletExit, SwitchError, getcurrent};

fn exit(message: &'static str) -> GreenletExit {
    GreenletExit {
        message: message.into(),
    }
}

/// Pushes its label to a shared log when dropped.
struct Flag(Rc<RefCell<Vec<&'static str>>>, &'static str);

impl Drop for Flag {
    fn drop(&mut self) {
        self.0.borrow_mut().push(self.1);
    }
}

type Slot = Rc<RefCell<Option<Greenlet>>>;

fn slot() -> Slot {
    Rc::new(RefCell::new(None))
}

fn take(slot: &Slot) -> Greenlet {
    slot.borrow().clone().expect("slot filled")
}

/// A started greenlet suspended in a switch to main; once resumed it finishes with `()`.
fn suspended_in_main_switch() -> Greenlet {
    let main = getcurrent();
    let g = Greenlet::new(move |()| {
        main.switch::<(), ()>(()).unwrap();
    });
    g.switch::<(), ()>(()).unwrap();
    g
}

// Rule 25: the payload is raised at the target's suspension point, and it is the very object
// that was thrown (not a copy).
#[test]
fn throw_raises_the_same_payload_object_at_the_suspension_point() {
    let main = getcurrent();
    let seen: Rc<RefCell<Option<Arc<u32>>>> = Rc::new(RefCell::new(None));
    let seen_in = Rc::clone(&seen);
    let g = Greenlet::new(move |()| {
        let caught = catch(|| main.switch::<(), ()>(()));
        let payload = caught.unwrap_err().downcast::<Arc<u32>>().unwrap();
        *seen_in.borrow_mut() = Some(*payload);
        "caught"
    });
    g.switch::<(), ()>(()).unwrap();
    let thrown = Arc::new(7u32);
    let answer: &str = g.throw(Arc::clone(&thrown)).unwrap();
    assert_eq!(answer, "caught");
    let seen = seen.borrow_mut().take().unwrap();
    assert!(Arc::ptr_eq(&seen, &thrown));
    assert!(g.is_dead());
}

// Rule 25: throw() returns whatever is next switched to the thrower; here the target catches
// the panic and switches back with a value, staying alive.
#[test]
fn throw_returns_the_value_the_target_switches_back_after_catching() {
    let main = getcurrent();
    let g = Greenlet::new(move |()| {
        let caught = catch(|| main.switch::<(), i32>(()));
        let message = text(&*caught.unwrap_err());
        let resumed: i32 = main.switch(message.len() as i32 * 10).unwrap();
        resumed + 1
    });
    g.switch::<(), ()>(()).unwrap();
    assert_eq!(g.throw::<i32>("four").unwrap(), 40);
    assert!(
        g.is_active(),
        "the target caught the panic and is suspended"
    );
    assert_eq!(g.switch::<i32, i32>(1).unwrap(), 2);
    assert!(g.is_dead());
}

// Rule 25: the value can come from a greenlet other than the target: the target switches to a
// third greenlet, and that one's result (it returns to main, its parent) ends the throw.
#[test]
fn throw_returns_a_value_sent_by_a_third_greenlet() {
    let main = getcurrent();
    let third = Greenlet::new(|word: String| format!("third got {word}"));
    let third_in = third.clone();
    let g = Greenlet::new(move |()| {
        let caught = catch(|| main.switch::<(), ()>(()));
        let message = text(&*caught.unwrap_err());
        third_in.switch::<String, ()>(message).unwrap();
    });
    g.switch::<(), ()>(()).unwrap();
    let answer: String = g.throw("hello").unwrap();
    assert_eq!(answer, "third got hello");
    assert!(third.is_dead());
    assert!(g.is_active(), "g is still suspended in its switch to third");
}

// Rule 25 (Rust mapping): a value of another type than throw's `R` comes back in WrongType.
#[test]
fn throw_returns_a_value_of_another_type_in_wrong_type() {
    let main = getcurrent();
    let g = Greenlet::new(move |()| {
        let _ = catch(|| main.switch::<(), ()>(()));
        0.5f64
    });
    g.switch::<(), ()>(()).unwrap();
    match g.throw::<u8>("x") {
        Err(SwitchError::WrongType { value, .. }) => {
            assert_eq!(*value.downcast::<f64>().unwrap(), 0.5);
        }
        other => panic!("{other:?}"),
    }
}

// Rule 27 (with 17): an uncaught thrown panic kills the target, unwinding it, and is raised in
// the parent (here the thrower) with the same payload object.
#[test]
fn uncaught_thrown_panic_kills_target_and_is_raised_in_parent() {
    let log = Rc::new(RefCell::new(Vec::new()));
    let log_in = Rc::clone(&log);
    let main = getcurrent();
    let g = Greenlet::new(move |()| {
        let _guard = Flag(log_in, "unwound");
        main.switch::<(), ()>(()).unwrap();
        "not reached"
    });
    g.switch::<(), ()>(()).unwrap();
    let thrown = Arc::new("boom");
    let raised = catch(|| g.throw::<&str>(Arc::clone(&thrown))).unwrap_err();
    assert!(Arc::ptr_eq(
        &raised.downcast::<Arc<&str>>().unwrap(),
        &thrown
    ));
    assert!(g.is_dead());
    assert_eq!(*log.borrow(), ["unwound"]);
}

// Rules 27 and 18: an uncaught GreenletExit from throw() kills the target and is returned to
// the parent (the thrower) as a value, message intact.
#[test]
fn uncaught_thrown_greenlet_exit_is_returned_to_parent() {
    let log = Rc::new(RefCell::new(Vec::new()));
    let log_in = Rc::clone(&log);
    let main = getcurrent();
    let g = Greenlet::new(move |()| {
        let _guard = Flag(log_in, "unwound");
        main.switch::<(), ()>(()).unwrap();
    });
    g.switch::<(), ()>(()).unwrap();
    match g.throw::<()>(exit("bye")) {
        Err(SwitchError::Exited(e)) => assert_eq!(e, exit("bye")),
        other => panic!("{other:?}"),
    }
    assert!(g.is_dead());
    assert_eq!(*log.borrow(), ["unwound"]);

    // Asking for a GreenletExit gets it as Ok.
    let g = suspended_in_main_switch();
    assert_eq!(g.throw::<GreenletExit>(exit("ok")).unwrap(), exit("ok"));
    assert!(g.is_dead());
}

// Rule 18 via 27: a GreenletExit that the target catches and re-raises is still a value.
#[test]
fn greenlet_exit_reraised_by_target_is_still_returned_as_value() {
    let main = getcurrent();
    let g = Greenlet::new(move |()| {
        let caught = catch(|| main.switch::<(), ()>(())).unwrap_err();
        assert!(caught.is::<GreenletExit>());
        std::panic::resume_unwind(caught);
    });
    g.switch::<(), ()>(()).unwrap();
    assert_eq!(
        g.throw::<GreenletExit>(exit("again")).unwrap(),
        exit("again")
    );
    assert!(g.is_dead());
}

/// Main starts `parent`, which makes `child` (its child), and switches into it; `child` switches
/// to main. Returns (parent, child): parent suspended in `child.switch`, child suspended in
/// `main.switch`. When child's switch fails, parent returns a description of how.
/// How a parent's pending switch ended, as the text the parent returns to whoever resumes it.
fn describe(outcome: Result<Result<(), SwitchError>, Box<dyn std::any::Any + Send>>) -> String {
    match outcome {
        Ok(Ok(())) => "parent got ()".to_string(),
        Ok(Err(SwitchError::Exited(e))) => format!("parent got exit {}", e.message),
        Ok(Err(other)) => format!("parent got {other:?}"),
        Err(panic) => format!("parent caught {}", text(&*panic)),
    }
}

fn parent_waiting_on_child() -> (Greenlet, Greenlet) {
    let main = getcurrent();
    let child_slot = slot();
    let child_out = Rc::clone(&child_slot);
    let parent = Greenlet::new(move |()| {
        let to_main = main.clone();
        let child = Greenlet::new(move |()| {
            to_main.switch::<(), ()>(()).unwrap();
        });
        *child_out.borrow_mut() = Some(child.clone());
        describe(catch(|| child.switch::<(), ()>(())))
    });
    parent.switch::<(), ()>(()).unwrap();
    let child = take(&child_slot);
    (parent, child)
}

// Rule 28: a panic escaping the target goes to the target's parent, not to the thrower.
#[test]
fn escaping_panic_goes_to_target_parent_not_thrower() {
    let (parent, child) = parent_waiting_on_child();
    // The thrower (main) sees no panic: it receives what parent returns after catching it.
    let answer: String = child.throw("boom").unwrap();
    assert_eq!(answer, "parent caught boom");
    assert!(child.is_dead() && parent.is_dead());
}

// Rules 28 and 27: an escaping GreenletExit reaches the target's parent as a value.
#[test]
fn escaping_greenlet_exit_goes_to_target_parent_as_value() {
    let (parent, child) = parent_waiting_on_child();
    let answer: String = child.throw(exit("stop")).unwrap();
    assert_eq!(answer, "parent got exit stop");
    assert!(child.is_dead() && parent.is_dead());
}

// Rule 29: throwing GreenletExit into an unstarted greenlet: run is never called, the greenlet
// is dead, its closure (and captures) dropped, and the exit is returned to the parent.
#[test]
fn greenlet_exit_thrown_into_unstarted_is_returned_without_running() {
    let ran = Rc::new(Cell::new(false));
    let ran_in = Rc::clone(&ran);
    let log = Rc::new(RefCell::new(Vec::new()));
    let guard = Flag(Rc::clone(&log), "closure dropped");
    let g = Greenlet::new(move |()| {
        let _keep = &guard;
        ran_in.set(true);
    });
    match g.throw::<()>(exit("never")) {
        Err(SwitchError::Exited(e)) => assert_eq!(e, exit("never")),
        other => panic!("{other:?}"),
    }
    assert!(!ran.get());
    assert!(g.is_dead() && !g.is_active());
    assert_eq!(
        *log.borrow(),
        ["closure dropped"],
        "dropped while g is held"
    );
    // A second throw now goes to a dead greenlet (rule 30).
    assert_eq!(g.throw::<GreenletExit>(exit("x")).unwrap(), exit("x"));
}

// Rule 29: any other payload thrown into an unstarted greenlet is raised in the parent (the
// thrower here) and run is never called.
#[test]
fn panic_thrown_into_unstarted_is_raised_in_parent_without_running() {
    let ran = Rc::new(Cell::new(false));
    let ran_in = Rc::clone(&ran);
    let g = Greenlet::new(move |()| ran_in.set(true));
    let raised = catch(|| g.throw::<()>(42u64)).unwrap_err();
    assert_eq!(*raised.downcast::<u64>().unwrap(), 42);
    assert!(!ran.get());
    assert!(g.is_dead());
}

/// A greenlet `parent` suspended in a switch to main, and an unstarted `child` of it; parent,
/// when resumed by a panic or an exit, returns a description of it.
fn suspended_parent_with_unstarted_child(ran: Rc<Cell<bool>>) -> (Greenlet, Greenlet) {
    let main = getcurrent();
    let parent = Greenlet::new(move |()| describe(catch(|| main.switch::<(), ()>(()))));
    parent.switch::<(), ()>(()).unwrap();
    let child = Greenlet::builder()
        .parent(&parent)
        .build(move |()| ran.set(true))
        .unwrap();
    (parent, child)
}

// Rule 29: for an unstarted greenlet whose parent is not the thrower, the panic is raised in
// the parent, not in the thrower.
#[test]
fn panic_thrown_into_unstarted_goes_to_its_parent_not_thrower() {
    let ran = Rc::new(Cell::new(false));
    let (parent, child) = suspended_parent_with_unstarted_child(Rc::clone(&ran));
    let answer: String = child.throw("early").unwrap();
    assert_eq!(answer, "parent caught early");
    assert!(!ran.get());
    assert!(child.is_dead() && parent.is_dead());
}

// Rule 29: likewise a GreenletExit thrown into an unstarted greenlet reaches its parent as a
// value.
#[test]
fn greenlet_exit_thrown_into_unstarted_goes_to_its_parent_as_value() {
    let ran = Rc::new(Cell::new(false));
    let (parent, child) = suspended_parent_with_unstarted_child(Rc::clone(&ran));
    let answer: String = child.throw(exit("early")).unwrap();
    assert_eq!(answer, "parent got exit early");
    assert!(!ran.get());
    assert!(child.is_dead() && parent.is_dead());
}

// Rule 30: throwing GreenletExit into a dead greenlet returns it as a value.
#[test]
fn greenlet_exit_thrown_into_dead_is_returned_as_value() {
    let g = Greenlet::new(|()| 1u8);
    assert_eq!(g.switch::<(), u8>(()).unwrap(), 1);
    assert!(g.is_dead());
    assert_eq!(g.throw::<GreenletExit>(exit("late")).unwrap(), exit("late"));
    match g.throw::<()>(exit("later")) {
        Err(SwitchError::Exited(e)) => assert_eq!(e, exit("later")),
        other => panic!("{other:?}"),
    }
    assert!(g.is_dead());
}

// Rule 30: another payload thrown into a dead greenlet is raised in its nearest live ancestor;
// when that is the caller, the caller panics at once.
#[test]
fn panic_thrown_into_dead_is_raised_in_caller_when_caller_is_nearest_live_ancestor() {
    let g = Greenlet::new(|()| ());
    g.switch::<(), ()>(()).unwrap();
    let raised = catch(|| g.throw::<()>("into the dead")).unwrap_err();
    assert_eq!(text(&*raised), "into the dead");

    // Through a chain of two dead greenlets.
    let outer_slot = slot();
    let outer_out = Rc::clone(&outer_slot);
    let outer = Greenlet::new(move |()| {
        let inner = Greenlet::new(|()| ());
        inner.switch::<(), ()>(()).unwrap();
        *outer_out.borrow_mut() = Some(inner);
    });
    outer.switch::<(), ()>(()).unwrap();
    let inner = take(&outer_slot);
    assert!(inner.is_dead() && outer.is_dead());
    assert_eq!(inner.parent(), Some(outer.clone()));
    let raised = catch(|| inner.throw::<()>(5i16)).unwrap_err();
    assert_eq!(*raised.downcast::<i16>().unwrap(), 5);
}

// Rules 29 and 19: a panic thrown into an unstarted greenlet whose parent is unstarted too kills
// both without running either, and goes on up to main (the thrower).
#[test]
fn panic_thrown_into_unstarted_with_unstarted_parent_kills_both_without_running() {
    let ran = Rc::new(Cell::new(0));
    let (ran_p, ran_c) = (Rc::clone(&ran), Rc::clone(&ran));
    let parent = Greenlet::new(move |()| ran_p.set(ran_p.get() + 1));
    let child = Greenlet::builder()
        .parent(&parent)
        .build(move |()| ran_c.set(ran_c.get() + 1))
        .unwrap();
    let raised = catch(|| child.throw::<()>("up")).unwrap_err();
    assert_eq!(text(&*raised), "up");
    assert_eq!(ran.get(), 0);
    assert!(child.is_dead() && parent.is_dead());
}

// Rules 30 and 19: a GreenletExit thrown into a dead greenlet becomes a value; an unstarted
// ancestor taking a GreenletExit argument is started with it.
#[test]
fn greenlet_exit_thrown_into_dead_starts_unstarted_ancestor_with_it() {
    let ancestor = Greenlet::new(|exit: GreenletExit| format!("started with {}", exit.message));
    let dead = Greenlet::builder()
        .parent(&ancestor)
        .build(|()| ())
        .unwrap();
    // Finish `dead` without starting `ancestor`: a different parent for the moment.
    dead.set_parent(&getcurrent()).unwrap();
    dead.switch::<(), ()>(()).unwrap();
    dead.set_parent(&ancestor).unwrap();
    assert!(dead.is_dead() && !ancestor.is_started());
    let answer: String = dead.throw(exit("gone")).unwrap();
    assert_eq!(answer, "started with gone");
    assert!(ancestor.is_dead());
}

/// A dead greenlet whose parent is a greenlet suspended in a switch to main (see
/// `suspended_parent_with_unstarted_child`).
fn dead_child_of_suspended_parent() -> (Greenlet, Greenlet) {
    let ran = Rc::new(Cell::new(false));
    let (parent, child) = suspended_parent_with_unstarted_child(ran);
    // Kill the child without involving the parent: a different parent for the moment.
    child.set_parent(&getcurrent()).unwrap();
    child.kill().unwrap();
    child.set_parent(&parent).unwrap();
    assert!(child.is_dead() && parent.is_active());
    (parent, child)
}

// Rule 30: a panic thrown into a dead greenlet whose nearest live ancestor is suspended
// elsewhere is raised there, and the thrower gets what is next switched to it.
#[test]
fn panic_thrown_into_dead_goes_to_suspended_live_ancestor() {
    let (parent, child) = dead_child_of_suspended_parent();
    let answer: String = child.throw("via the dead").unwrap();
    assert_eq!(answer, "parent caught via the dead");
    assert!(parent.is_dead());
}

// Rule 30: a GreenletExit thrown into a dead greenlet is a value for its live ancestor.
#[test]
fn greenlet_exit_thrown_into_dead_goes_to_suspended_live_ancestor_as_value() {
    let (parent, child) = dead_child_of_suspended_parent();
    let answer: String = child.throw(exit("via the dead")).unwrap();
    assert_eq!(answer, "parent got exit via the dead");
    assert!(parent.is_dead());
}

// Rule 31: throwing into the running greenlet raises at once in the caller, GreenletExit
// included (it is not returned).
#[test]
fn throw_into_current_raises_at_once_even_greenlet_exit() {
    let main = getcurrent();
    let raised = catch(|| main.throw::<GreenletExit>(exit("self"))).unwrap_err();
    assert_eq!(*raised.downcast::<GreenletExit>().unwrap(), exit("self"));
    let raised = catch(|| getcurrent().throw::<()>("self panic")).unwrap_err();
    assert_eq!(text(&*raised), "self panic");
    // kill() is a throw of GreenletExit: on the running greenlet it raises too.
    let raised = catch(|| getcurrent().kill()).unwrap_err();
    assert!(raised.is::<GreenletExit>());
    assert!(main.is_active() && !main.is_dead());
}

// Rule 31, inside a greenlet: the greenlet catches its own GreenletExit and goes on.
#[test]
fn throw_into_current_inside_greenlet_raises_there_and_it_survives() {
    let g = Greenlet::new(|()| {
        let raised = catch(|| getcurrent().throw::<()>(exit("me"))).unwrap_err();
        let exit = raised.downcast::<GreenletExit>().unwrap();
        assert!(getcurrent().is_active());
        format!("survived {}", exit.message)
    });
    assert_eq!(g.switch::<(), String>(()).unwrap(), "survived me");
    assert!(g.is_dead());
}
