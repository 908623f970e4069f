//! The parent attribute: ownership of parents, cycle detection, main's parent, and
//! reparenting (greenlet rules 42 and 44-49; see the rule map in the `greenlet` module docs).

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use awaitlet::{Greenlet, ParentError, getcurrent};

// ---------------------------------------------------------------------------------------------
// Rule 42: a child keeps its parent alive

// Rule 42
#[test]
fn suspended_parent_with_no_handles_left_still_receives_its_childs_result() {
    let main = getcurrent();
    let received: Rc<Cell<Option<u32>>> = Rc::default();
    let child_slot: Rc<RefCell<Option<Greenlet>>> = Rc::default();
    let (r, slot) = (Rc::clone(&received), Rc::clone(&child_slot));
    let parent = Greenlet::new(move |()| {
        let m = main.clone();
        let child = Greenlet::new(move |()| {
            let x: u32 = m.switch("child suspended").unwrap();
            x + 1
        });
        *slot.borrow_mut() = Some(child.clone());
        let from_child: u32 = child.switch(()).unwrap();
        r.set(Some(from_child));
        from_child * 10
    });
    assert_eq!(parent.switch::<(), &str>(()).unwrap(), "child suspended");
    let child = child_slot.borrow_mut().take().unwrap();
    assert_eq!(child.parent(), Some(parent.clone()));
    // Drop every handle we hold to the parent: the child's reference keeps it alive (and it is
    // not killed: its body still runs to the end below).
    drop(parent);
    let parent = child.parent().unwrap();
    assert!(parent.is_active() && !parent.is_dead());
    drop(parent);

    assert_eq!(child.switch::<u32, u32>(4).unwrap(), 50);
    assert_eq!(received.get(), Some(5));
    assert!(child.is_dead());
    assert!(child.parent().unwrap().is_dead());
}

// Rule 42: an unstarted parent whose handles are all dropped still starts with the result.
#[test]
fn unstarted_parent_with_no_handles_left_is_started_by_its_childs_result() {
    let parent = Greenlet::new(|x: u32| x * 3);
    let child = Greenlet::builder()
        .parent(&parent)
        .build(|x: u32| x + 1)
        .unwrap();
    drop(parent);
    assert!(!child.parent().unwrap().is_started());
    assert_eq!(child.switch::<u32, u32>(4).unwrap(), 15);
    assert!(child.parent().unwrap().is_dead());
}

// Rule 42
#[test]
fn suspended_child_whose_parent_died_delivers_to_nearest_live_ancestor() {
    let main = getcurrent();
    let m = main.clone();
    let parent = Greenlet::new(move |()| {
        let m2 = m.clone();
        let child = Greenlet::new(move |()| {
            let x: u32 = m2.switch(getcurrent()).unwrap();
            x + 1
        });
        // The child hands its handle to main; our pending switch then gets main's value.
        let from_main: u32 = child.switch(()).unwrap();
        from_main * 100
    });
    let child: Greenlet = parent.switch(()).unwrap();
    assert_eq!(child.parent(), Some(parent.clone()));
    // Resume the parent (its pending child.switch gets 2): it finishes and returns to main.
    assert_eq!(parent.switch::<u32, u32>(2).unwrap(), 200);
    assert!(parent.is_dead() && child.is_active());
    drop(parent);
    // The child's result skips its dead parent and comes to main.
    assert_eq!(child.switch::<u32, u32>(6).unwrap(), 7);
    assert!(child.is_dead());
    assert!(child.parent().unwrap().is_dead());
}

// Rule 42: the same, with the dead parent itself a child of a suspended greenlet.
#[test]
fn suspended_child_whose_parent_died_resumes_the_suspended_grandparent() {
    let main = getcurrent();
    let m = main.clone();
    let grandparent = Greenlet::new(move |()| {
        let m2 = m.clone();
        let parent = Greenlet::new(move |()| {
            let m3 = m2.clone();
            let child = Greenlet::new(move |()| {
                let x: u32 = m3.switch(getcurrent()).unwrap();
                x + 1
            });
            let _: u32 = child.switch(()).unwrap();
            "parent done"
        });
        let from_parent: &str = parent.switch(()).unwrap();
        assert_eq!(from_parent, "parent done");
        // Wait for main; the orphaned child's result will arrive here instead.
        let late: u32 = m.switch("grandparent waiting").unwrap();
        late * 2
    });
    let child: Greenlet = grandparent.switch(()).unwrap();
    let parent = child.parent().unwrap();
    // Kill the parent by resuming it: it returns to the grandparent, which switches to main.
    assert_eq!(
        parent.switch::<u32, &str>(0).unwrap(),
        "grandparent waiting"
    );
    assert!(parent.is_dead());
    drop(parent);
    assert_eq!(child.switch::<u32, u32>(20).unwrap(), 42);
    assert!(grandparent.is_dead());
}

// ---------------------------------------------------------------------------------------------
// A8. The parent attribute

// Rule 44 (the type system requires a greenlet): any greenlet, whatever its state, may be a
// parent: main, unstarted, suspended or dead.
#[test]
fn any_greenlet_can_be_a_parent_whatever_its_state() {
    let main = getcurrent();
    let m = main.clone();
    let g = Greenlet::new(|()| 1u8);
    let unstarted = Greenlet::new(|x: u8| x);
    let suspended = Greenlet::new(move |()| m.switch::<(), ()>(()).unwrap());
    suspended.switch::<(), ()>(()).unwrap();
    let dead = Greenlet::new(|()| ());
    dead.switch::<(), ()>(()).unwrap();
    for parent in [&main, &unstarted, &suspended, &dead] {
        g.set_parent(parent).unwrap();
        assert_eq!(g.parent().as_ref(), Some(parent));
    }
}

// Rule 45
#[test]
fn setting_self_as_parent_is_cyclic_and_changes_nothing() {
    let main = getcurrent();
    let g = Greenlet::new(|()| ());
    assert_eq!(g.set_parent(&g), Err(ParentError::Cyclic));
    assert_eq!(g.parent(), Some(main));
}

// Rule 45
#[test]
fn setting_own_child_as_parent_is_cyclic_and_keeps_old_parent() {
    let main = getcurrent();
    let a = Greenlet::new(|()| ());
    let b = Greenlet::builder().parent(&a).build(|()| ()).unwrap();
    assert_eq!(a.set_parent(&b), Err(ParentError::Cyclic));
    assert_eq!(a.parent(), Some(main.clone()));
    assert_eq!(b.parent(), Some(a.clone()));
    // The error displays as Python's message.
    assert_eq!(ParentError::Cyclic.to_string(), "cyclic parent chain");
}

// Rule 45
#[test]
fn longer_cycles_are_detected_and_leave_the_old_parent() {
    let a = Greenlet::new(|()| ());
    let b = Greenlet::builder().parent(&a).build(|()| ()).unwrap();
    let c = Greenlet::builder().parent(&b).build(|()| ()).unwrap();
    let d = Greenlet::builder().parent(&c).build(|()| ()).unwrap();
    let e = Greenlet::new(|()| ());
    a.set_parent(&e).unwrap();
    assert_eq!(a.set_parent(&d), Err(ParentError::Cyclic));
    assert_eq!(b.set_parent(&d), Err(ParentError::Cyclic));
    assert_eq!(a.parent(), Some(e.clone()));
    assert_eq!(b.parent(), Some(a.clone()));
    // e above a: making e a child of d would close e -> d -> c -> b -> a -> e.
    assert_eq!(e.set_parent(&d), Err(ParentError::Cyclic));
    assert_eq!(e.parent(), Some(getcurrent()));
    // A sibling branch is fine.
    let f = Greenlet::builder().parent(&a).build(|()| ()).unwrap();
    d.set_parent(&f).unwrap();
    assert_eq!(d.parent(), Some(f));
}

// Rule 45: cycle detection runs through dead greenlets too, and a dead greenlet can be
// reparented.
#[test]
fn cycle_detection_includes_dead_greenlets() {
    let a = Greenlet::new(|()| ());
    let b = Greenlet::builder().parent(&a).build(|()| ()).unwrap();
    b.set_parent(&getcurrent()).unwrap();
    b.switch::<(), ()>(()).unwrap();
    b.set_parent(&a).unwrap();
    assert!(b.is_dead());
    assert_eq!(a.set_parent(&b), Err(ParentError::Cyclic));
    assert_eq!(a.parent(), Some(getcurrent()));
}

// Rule 45: a running greenlet cannot take its own descendant as parent.
#[test]
fn running_greenlet_cannot_reparent_onto_its_child() {
    let g = Greenlet::new(|()| {
        let me = getcurrent();
        let child = Greenlet::new(|()| ());
        let result = me.set_parent(&child);
        (
            result,
            me.parent() == Some(child.parent().unwrap().parent().unwrap()),
        )
    });
    let (result, kept): (Result<(), ParentError>, bool) = g.switch(()).unwrap();
    assert_eq!(result, Err(ParentError::Cyclic));
    assert!(kept);
}

// Rule 48
#[test]
fn main_has_no_parent_and_cannot_be_given_one() {
    let main = getcurrent();
    assert!(main.is_main());
    assert_eq!(main.parent(), None);
    let g = Greenlet::new(|()| ());
    assert_eq!(main.set_parent(&g), Err(ParentError::Main));
    assert_eq!(main.set_parent(&main), Err(ParentError::Main));
    assert_eq!(main.parent(), None);
    assert_eq!(
        ParentError::Main.to_string(),
        "cannot set the parent of a main greenlet"
    );
    // Also when asked from inside a greenlet.
    let m = main.clone();
    let inner = Greenlet::new(move |()| (m.parent().is_none(), m.set_parent(&getcurrent())));
    let (none, result): (bool, Result<(), ParentError>) = inner.switch(()).unwrap();
    assert!(none);
    assert_eq!(result, Err(ParentError::Main));
}

// Rule 49
#[test]
fn running_greenlet_reparents_itself_and_its_result_goes_to_the_new_parent() {
    let main = getcurrent();
    let m = main.clone();
    let new_parent = Greenlet::new(move |()| {
        let from_child: u32 = m.switch("new parent waiting").unwrap();
        format!("new parent got {from_child}")
    });
    assert_eq!(
        new_parent.switch::<(), &str>(()).unwrap(),
        "new parent waiting"
    );
    let np = new_parent.clone();
    let g = Greenlet::new(move |()| {
        getcurrent().set_parent(&np).unwrap();
        assert_eq!(getcurrent().parent(), Some(np.clone()));
        7u32
    });
    assert_eq!(g.parent(), Some(main));
    // g returns 7 to new_parent (not to main, its parent at creation), and new_parent returns
    // to main.
    assert_eq!(g.switch::<(), String>(()).unwrap(), "new parent got 7");
    assert!(g.is_dead() && new_parent.is_dead());
    assert_eq!(g.parent(), Some(new_parent));
}

// Rule 49 + 19: reparenting onto an unstarted greenlet starts it with the result.
#[test]
fn running_greenlet_reparented_onto_unstarted_greenlet_starts_it() {
    let ran = Rc::new(Cell::new(false));
    let r = Rc::clone(&ran);
    let target = Greenlet::new(move |x: u32| {
        r.set(true);
        x + 1
    });
    let t = target.clone();
    let g = Greenlet::new(move |()| {
        getcurrent().set_parent(&t).unwrap();
        41u32
    });
    assert!(!target.is_started());
    assert_eq!(g.switch::<(), u32>(()).unwrap(), 42);
    assert!(ran.get());
    assert!(target.is_dead());
}

// Rule 49: a suspended greenlet reparented by someone else also reports to its new parent.
#[test]
fn suspended_greenlet_reparented_from_outside_reports_to_new_parent() {
    let main = getcurrent();
    let m = main.clone();
    let g = Greenlet::new(move |()| {
        let x: u32 = m.switch(()).unwrap();
        x * 2
    });
    g.switch::<(), ()>(()).unwrap();
    let new_parent = Greenlet::new(|x: u32| format!("adopted {x}"));
    g.set_parent(&new_parent).unwrap();
    assert_eq!(g.switch::<u32, String>(21).unwrap(), "adopted 42");
}
