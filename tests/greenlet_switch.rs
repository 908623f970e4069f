//! Switching: starting, passing values, finishing, the walk to a live receiver, and switching
//! to dead greenlets (greenlet rules 6-24; see the rule map in the `greenlet` module docs).

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::marker::PhantomData;
use std::panic::{AssertUnwindSafe, catch_unwind, panic_any};
use std::rc::Rc;
use std::sync::Arc;

use awaitlet::{Greenlet, SwitchError, getcurrent};

/// Runs `f`, returning the panic payload if it panics.
fn catch<R>(f: impl FnOnce() -> R) -> Result<R, Box<dyn Any + Send>> {
    catch_unwind(AssertUnwindSafe(f))
}

/// The `&str` message of a `panic!("literal")` payload.
fn message(payload: Box<dyn Any + Send>) -> &'static str {
    *payload
        .downcast::<&'static str>()
        .expect("a panic!(\"literal\") payload")
}

/// A shared flag a closure can set.
fn flag() -> (Rc<Cell<bool>>, Rc<Cell<bool>>) {
    let flag = Rc::new(Cell::new(false));
    (Rc::clone(&flag), flag)
}

// ---------------------------------------------------------------------------------------------
// A2. Creation and the first switch

// Rule 6
#[test]
fn parent_defaults_to_the_greenlet_running_at_construction() {
    let main = getcurrent();
    let top = Greenlet::new(|()| ());
    assert_eq!(top.parent(), Some(main.clone()));

    let outer = Greenlet::new(|()| {
        let inner = Greenlet::new(|()| ());
        inner.parent().unwrap() == getcurrent()
    });
    assert!(outer.switch::<(), bool>(()).unwrap());

    // The builder without `.parent` means the same.
    let built = Greenlet::builder().build(|()| ()).unwrap();
    assert_eq!(built.parent(), Some(main));
}

// Rule 7
#[test]
fn run_is_not_called_at_construction() {
    let (set, ran) = flag();
    let g = Greenlet::new(move |()| set.set(true));
    assert!(!ran.get());
    assert!(!g.is_started());
    g.switch::<(), ()>(()).unwrap();
    assert!(ran.get());
}

// Rule 8
#[test]
fn first_switch_passes_its_value_as_runs_argument() {
    let g = Greenlet::new(|(word, n): (String, usize)| word.repeat(n));
    let out: String = g.switch(("ab".to_string(), 3usize)).unwrap();
    assert_eq!(out, "ababab");
}

// Rules 10-11 (analogue): a start value that is not run's argument type kills the greenlet
// without running it; the value comes back to the caller (its parent) in the error.
#[test]
fn starting_with_wrong_type_kills_without_running_and_returns_value() {
    let (set, ran) = flag();
    let g = Greenlet::new(move |x: i32| {
        set.set(true);
        x
    });
    match g.switch::<&'static str, i32>("nope") {
        Err(SwitchError::WrongType { value, .. }) => {
            assert_eq!(*value.downcast::<&'static str>().unwrap(), "nope");
        }
        other => panic!("expected WrongType, got {other:?}"),
    }
    assert!(!ran.get());
    assert!(g.is_dead());
    assert!(!g.is_active());
}

// Rules 10-11 (analogue) + 16: the error goes to the greenlet's parent, not to the switcher.
#[test]
fn wrong_type_start_error_goes_to_the_parent_not_the_switcher() {
    let main = getcurrent();
    let parent = Greenlet::new(move |()| {
        // Suspend here; the next thing delivered to us is the failed start of our child.
        match main.switch::<(), String>(()) {
            Err(SwitchError::WrongType { value, .. }) => {
                format!("parent got {}", value.downcast::<u8>().unwrap())
            }
            other => format!("unexpected {other:?}"),
        }
    });
    parent.switch::<(), ()>(()).unwrap();
    let (set, ran) = flag();
    let child = Greenlet::builder()
        .parent(&parent)
        .build(move |s: String| {
            set.set(true);
            s
        })
        .unwrap();
    // Main switches to the child with a u8: the child dies unrun, its parent gets the error
    // and returns, and that return reaches main (the parent's parent).
    let out: String = child.switch(9u8).unwrap();
    assert_eq!(out, "parent got 9");
    assert!(!ran.get());
    assert!(child.is_dead());
    assert!(parent.is_dead());
}

// ---------------------------------------------------------------------------------------------
// A3. switch() and how values are passed

// Rule 12
#[test]
fn any_active_greenlet_can_be_switched_to_without_call_stack_discipline() {
    let main = getcurrent();
    let m = main.clone();
    let a = Greenlet::new(move |()| {
        let m2 = m.clone();
        let b = Greenlet::new(move |()| {
            // b is a's child but hands its value straight to main, skipping a.
            let got: u32 = m2.switch("from b").unwrap();
            got + 1
        });
        let from_b: u32 = b.switch(()).unwrap();
        from_b * 100
    });
    let first: &str = a.switch(()).unwrap();
    assert_eq!(first, "from b");
    // a is suspended at its pending b.switch, b at its pending main.switch.
    assert!(a.is_active());
    // Main resumes a directly, although a is not the greenlet that switched to main: a's
    // pending b.switch receives our value.
    let out: u32 = a.switch(4u32).unwrap();
    assert_eq!(out, 400);
    assert!(a.is_dead());
}

// Rule 12
#[test]
fn a_grandchild_can_be_resumed_directly_by_main() {
    let main = getcurrent();
    let outer = Greenlet::new(move |()| {
        let main = main.clone();
        let inner = Greenlet::new(move |()| {
            // Give main our handle and wait for it to switch here directly.
            let got: u32 = main.switch(getcurrent()).unwrap();
            got + 1
        });
        let from_inner: u32 = inner.switch(()).unwrap();
        from_inner * 10
    });
    let inner: Greenlet = outer.switch(()).unwrap();
    assert_ne!(inner, outer);
    assert_eq!(inner.parent(), Some(outer.clone()));
    // Main resumes the grandchild; its result goes to its parent (outer), whose result comes back.
    assert_eq!(inner.switch::<u32, u32>(4).unwrap(), 50);
    assert!(inner.is_dead() && outer.is_dead());
}

// Rule 13
#[test]
fn switched_values_arrive_unchanged() {
    let main = getcurrent();
    let log: Rc<RefCell<Vec<String>>> = Rc::default();
    let log2 = Rc::clone(&log);
    let g = Greenlet::new(move |first: ()| {
        log2.borrow_mut().push(format!("{first:?}"));
        let one: (i32,) = main.switch(()).unwrap();
        log2.borrow_mut().push(format!("{one:?}"));
        let none: Option<i32> = main.switch(()).unwrap();
        log2.borrow_mut().push(format!("{none:?}"));
        let pair: (i32, &str) = main.switch(()).unwrap();
        log2.borrow_mut().push(format!("{pair:?}"));
        let boxed: Box<Vec<u8>> = main.switch(()).unwrap();
        log2.borrow_mut().push(format!("{boxed:?}"));
        let unit: () = main.switch(()).unwrap();
        log2.borrow_mut().push(format!("{unit:?}"));
    });
    g.switch::<(), ()>(()).unwrap();
    g.switch::<(i32,), ()>((1,)).unwrap();
    g.switch::<Option<i32>, ()>(None).unwrap();
    g.switch::<(i32, &str), ()>((1, "b")).unwrap();
    g.switch::<Box<Vec<u8>>, ()>(Box::new(vec![1, 2])).unwrap();
    g.switch::<(), ()>(()).unwrap();
    assert!(g.is_dead());
    assert_eq!(
        *log.borrow(),
        ["()", "(1,)", "None", "(1, \"b\")", "[1, 2]", "()"]
    );
}

// Values cross a switch by address; whatever their alignment (1, 2, 4, 16 bytes) or size (odd
// ones included), they arrive intact both ways, as a start argument and as a result.
#[test]
fn values_of_every_alignment_arrive_unchanged_both_ways_and_as_results() {
    let main = getcurrent();
    let echo = Greenlet::new(move |first: u8| {
        let mut seen = vec![format!("{first}")];
        let half: u16 = main.switch::<u8, u16>(first.wrapping_add(1)).unwrap();
        seen.push(format!("{half}"));
        let odd: [u8; 3] = main.switch::<u16, [u8; 3]>(half ^ 0xffff).unwrap();
        seen.push(format!("{odd:?}"));
        let mixed: (u8, u16, bool) = main.switch::<[u8; 3], (u8, u16, bool)>(odd).unwrap();
        seen.push(format!("{mixed:?}"));
        let letter: char = main
            .switch::<(u8, u16, bool), char>((mixed.0, mixed.1, !mixed.2))
            .unwrap();
        seen.push(format!("{letter}"));
        let wide: u128 = main.switch::<char, u128>(letter).unwrap();
        seen.push(format!("{wide:#x}"));
        (seen, [wide as u8, 7, 9])
    });
    assert_eq!(echo.switch::<u8, u8>(200).unwrap(), 201);
    assert_eq!(echo.switch::<u16, u16>(0x1234).unwrap(), 0xedcb);
    assert_eq!(
        echo.switch::<[u8; 3], [u8; 3]>([1, 2, 3]).unwrap(),
        [1, 2, 3]
    );
    assert_eq!(
        echo.switch::<(u8, u16, bool), (u8, u16, bool)>((5, 0xbeef, true))
            .unwrap(),
        (5, 0xbeef, false)
    );
    assert_eq!(echo.switch::<char, char>('λ').unwrap(), 'λ');
    let (seen, last) = echo
        .switch::<u128, (Vec<String>, [u8; 3])>(u128::MAX - 0x0f)
        .unwrap();
    assert_eq!(
        seen,
        [
            "200",
            "4660",
            "[1, 2, 3]",
            "(5, 48879, true)",
            "λ",
            "0xfffffffffffffffffffffffffffffff0"
        ]
    );
    assert_eq!(last, [0xf0, 7, 9]);
    assert!(echo.is_dead());
    // A one-byte result, straight from a finishing greenlet.
    assert_eq!(
        Greenlet::new(|x: u8| x ^ 0x5a)
            .switch::<u8, u8>(0x0f)
            .unwrap(),
        0x55
    );
}

// Rule 13 (mapping: a value of the wrong type arrives as WrongType, carrying it)
#[test]
fn value_of_wrong_type_arrives_as_error_carrying_the_value() {
    let main = getcurrent();
    let g = Greenlet::new(move |()| match main.switch::<(), i32>(()) {
        Err(SwitchError::WrongType {
            expected,
            found,
            value,
        }) => (
            expected.to_string(),
            found.to_string(),
            *value.downcast::<String>().unwrap(),
        ),
        other => panic!("expected WrongType, got {other:?}"),
    });
    g.switch::<(), ()>(()).unwrap();
    let (expected, found, value): (String, String, String) = g.switch("seven".to_string()).unwrap();
    assert!(expected.contains("i32"), "{expected}");
    assert!(found.contains("String"), "{found}");
    assert_eq!(value, "seven");
    // And the other way: a result of the wrong type reaches the parent in the error.
    let h = Greenlet::new(|()| 5i64);
    match h.switch::<(), u8>(()) {
        Err(SwitchError::WrongType { value, .. }) => {
            assert_eq!(*value.downcast::<i64>().unwrap(), 5)
        }
        other => panic!("expected WrongType, got {other:?}"),
    }
    assert!(h.is_dead());
}

// Rule 14
#[test]
fn runs_return_value_is_delivered_as_is() {
    let g = Greenlet::new(|()| (1,));
    assert_eq!(g.switch::<(), (i32,)>(()).unwrap(), (1,));
    let g = Greenlet::new(|()| None::<String>);
    assert_eq!(g.switch::<(), Option<String>>(()).unwrap(), None);
    let g = Greenlet::new(|()| ());
    let () = g.switch::<(), ()>(()).unwrap();
    let g = Greenlet::new(|()| vec![(1, 2), (3, 4)]);
    assert_eq!(
        g.switch::<(), Vec<(i32, i32)>>(()).unwrap(),
        [(1, 2), (3, 4)]
    );
}

// Rule 15
#[test]
fn switching_to_yourself_returns_the_value_at_once() {
    let me = getcurrent();
    assert_eq!(me.switch::<&str, &str>("v").unwrap(), "v");
    let () = me.switch::<(), ()>(()).unwrap();
    assert_eq!(me.switch::<(i32,), (i32,)>((7,)).unwrap(), (7,));
    match me.switch::<i32, String>(5) {
        Err(SwitchError::WrongType { value, .. }) => {
            assert_eq!(*value.downcast::<i32>().unwrap(), 5)
        }
        other => panic!("expected WrongType, got {other:?}"),
    }
    // Inside a greenlet as well.
    let g = Greenlet::new(|x: u32| getcurrent().switch::<u32, u32>(x + 1).unwrap() * 2);
    assert_eq!(g.switch::<u32, u32>(1).unwrap(), 4);
}

// ---------------------------------------------------------------------------------------------
// A4. Finishing

// Rule 16
#[test]
fn result_goes_to_the_parent_not_to_the_last_switcher() {
    let main = getcurrent();
    let m = main.clone();
    let g = Greenlet::new(move |()| {
        let x: u32 = m.switch("g suspended").unwrap();
        x * 2
    });
    assert_eq!(g.switch::<(), &str>(()).unwrap(), "g suspended");
    let g2 = g.clone();
    let h = Greenlet::new(move |()| {
        // h resumes g last; g's result still goes to g's parent, main.
        let back: &str = g2.switch(7u32).unwrap();
        back.to_string()
    });
    assert_eq!(h.switch::<(), u32>(()).unwrap(), 14);
    assert!(g.is_dead());
    // h is still suspended at its g.switch, waiting for something to come back.
    assert!(h.is_active() && !h.is_dead());
    assert_eq!(h.switch::<&str, String>("resume h").unwrap(), "resume h");
    assert!(h.is_dead());
}

// Rule 16: the parent may be suspended somewhere other than a switch to the child.
#[test]
fn result_resumes_parent_at_its_own_pending_switch() {
    let main = getcurrent();
    let m = main.clone();
    let parent = Greenlet::new(move |()| {
        // Pending switch to main; the child's result will arrive here.
        let from_child: u32 = m.switch("parent waiting").unwrap();
        from_child + 1
    });
    assert_eq!(parent.switch::<(), &str>(()).unwrap(), "parent waiting");
    let child = Greenlet::builder()
        .parent(&parent)
        .build(|x: u32| x * 10)
        .unwrap();
    // child returns 50 to parent, parent returns 51 to main.
    assert_eq!(child.switch::<u32, u32>(5).unwrap(), 51);
    assert!(child.is_dead() && parent.is_dead());
}

// Rule 17
#[test]
fn panic_in_run_kills_and_is_raised_in_the_parent_with_the_same_payload() {
    struct Token(Arc<()>);
    let token = Arc::new(());
    let sent = Arc::clone(&token);
    let g = Greenlet::new(move |()| -> () { panic_any(Token(sent)) });
    let payload = catch(|| g.switch::<(), ()>(())).unwrap_err();
    let received = payload.downcast::<Token>().expect("the same payload type");
    assert!(Arc::ptr_eq(&received.0, &token));
    assert!(g.is_dead());
}

// Rule 17: the panic goes to the parent even when another greenlet switched in.
#[test]
fn panic_is_raised_in_the_parent_even_when_it_is_not_the_switcher() {
    let main = getcurrent();
    let m = main.clone();
    let parent = Greenlet::new(move |()| {
        let caught = catch(|| m.switch::<&str, ()>("parent waiting"));
        format!("parent caught {}", message(caught.unwrap_err()))
    });
    assert_eq!(parent.switch::<(), &str>(()).unwrap(), "parent waiting");
    let child = Greenlet::builder()
        .parent(&parent)
        .build(|()| -> () { panic!("child boom") })
        .unwrap();
    // Main switches to the child; the panic is raised in the parent, not in main. The parent
    // catches it and returns to main.
    let out = catch(|| child.switch::<(), String>(()));
    assert_eq!(out.unwrap().unwrap(), "parent caught child boom");
    assert!(child.is_dead() && parent.is_dead());
}

// Rule 17: a panic after the greenlet has been resumed also goes to the parent.
#[test]
fn panic_after_resume_is_raised_at_the_parents_pending_switch() {
    let main = getcurrent();
    let g = Greenlet::new(move |()| {
        let n: u32 = main.switch(()).unwrap();
        if n > 0 {
            panic!("late boom");
        }
    });
    g.switch::<(), ()>(()).unwrap();
    assert!(g.is_active());
    let err = catch(|| g.switch::<u32, ()>(1)).unwrap_err();
    assert_eq!(message(err), "late boom");
    assert!(g.is_dead());
}

// Rule 19
#[test]
fn result_walks_past_dead_parents() {
    let main = getcurrent();
    let dead_parent = Greenlet::new(|()| "dead parent done");
    let child = Greenlet::builder()
        .parent(&dead_parent)
        .build(move |()| {
            let x: u32 = main.switch("child suspended").unwrap();
            x + 1
        })
        .unwrap();
    assert_eq!(child.switch::<(), &str>(()).unwrap(), "child suspended");
    assert_eq!(
        dead_parent.switch::<(), &str>(()).unwrap(),
        "dead parent done"
    );
    assert!(dead_parent.is_dead());
    // The child's result skips its dead parent and reaches main.
    assert_eq!(child.switch::<u32, u32>(41).unwrap(), 42);
}

// Rule 19
#[test]
fn result_walks_past_several_dead_ancestors() {
    let d1 = Greenlet::new(|()| ());
    let d2 = Greenlet::builder().parent(&d1).build(|()| ()).unwrap();
    d1.switch::<(), ()>(()).unwrap();
    d2.switch::<(), ()>(()).unwrap(); // d2 returns to d1 (dead) and on to main
    assert!(d1.is_dead() && d2.is_dead());
    let child = Greenlet::builder().parent(&d2).build(|()| 99u8).unwrap();
    assert_eq!(child.switch::<(), u8>(()).unwrap(), 99);
}

// Rule 19
#[test]
fn unstarted_parent_is_started_with_the_result_as_its_one_argument() {
    let parent = Greenlet::new(|pair: (i32, i32)| pair.0 * 10 + pair.1);
    let child = Greenlet::builder()
        .parent(&parent)
        .build(|()| (3, 4))
        .unwrap();
    assert!(!parent.is_started());
    // child returns (3, 4): the tuple stays one argument; parent returns 34 to main.
    assert_eq!(child.switch::<(), i32>(()).unwrap(), 34);
    assert!(parent.is_dead());
}

// Rule 19
#[test]
fn walk_skips_dead_and_starts_unstarted_ancestor() {
    let grandparent = Greenlet::new(|s: String| format!("gp got {s}"));
    let parent = Greenlet::builder()
        .parent(&grandparent)
        .build(|()| ())
        .unwrap();
    // Kill `parent` by running it to completion; its () result would start grandparent with
    // the wrong type, so reparent it first to main.
    parent.set_parent(&getcurrent()).unwrap();
    parent.switch::<(), ()>(()).unwrap();
    parent.set_parent(&grandparent).unwrap();
    assert!(parent.is_dead() && !grandparent.is_started());
    let child = Greenlet::builder()
        .parent(&parent)
        .build(|()| "x".to_string())
        .unwrap();
    assert_eq!(child.switch::<(), String>(()).unwrap(), "gp got x");
    assert!(grandparent.is_dead());
}

// Rule 19
#[test]
fn panic_delivered_to_unstarted_parent_kills_it_without_running() {
    let (set, ran) = flag();
    let parent = Greenlet::new(move |x: u32| {
        set.set(true);
        x
    });
    let child = Greenlet::builder()
        .parent(&parent)
        .build(|()| -> u32 { panic!("child boom") })
        .unwrap();
    let err = catch(|| child.switch::<(), u32>(())).unwrap_err();
    assert_eq!(message(err), "child boom");
    assert!(!ran.get());
    assert!(parent.is_dead() && child.is_dead());
}

// Rule 19: the walk goes on past the killed parent to the next live ancestor.
#[test]
fn panic_walks_on_past_unstarted_parent_to_a_suspended_ancestor() {
    let main = getcurrent();
    let m = main.clone();
    let grandparent = Greenlet::new(move |()| {
        let caught = catch(|| m.switch::<&str, ()>("gp waiting"));
        format!("gp caught {}", message(caught.unwrap_err()))
    });
    assert_eq!(grandparent.switch::<(), &str>(()).unwrap(), "gp waiting");
    let (set, ran) = flag();
    let parent = Greenlet::builder()
        .parent(&grandparent)
        .build(move |x: u32| {
            set.set(true);
            x
        })
        .unwrap();
    let child = Greenlet::builder()
        .parent(&parent)
        .build(|()| -> u32 { panic!("child boom") })
        .unwrap();
    let out: String = child.switch(()).unwrap();
    assert_eq!(out, "gp caught child boom");
    assert!(!ran.get());
    assert!(child.is_dead() && parent.is_dead() && grandparent.is_dead());
}

// Rules 19 + 11 (analogue): a result of the wrong type for an unstarted parent kills it unrun,
// and the error walks on upward carrying the value.
#[test]
fn result_of_wrong_type_for_unstarted_parent_kills_it_and_error_walks_on() {
    let (set, ran) = flag();
    let parent = Greenlet::new(move |x: u32| {
        set.set(true);
        x
    });
    let child = Greenlet::builder()
        .parent(&parent)
        .build(|()| "not a u32")
        .unwrap();
    match child.switch::<(), u32>(()) {
        Err(SwitchError::WrongType { value, .. }) => {
            assert_eq!(*value.downcast::<&str>().unwrap(), "not a u32")
        }
        other => panic!("expected WrongType, got {other:?}"),
    }
    assert!(!ran.get());
    assert!(parent.is_dead());
}

// ---------------------------------------------------------------------------------------------
// A5. Switching to a dead greenlet

// Rule 21
#[test]
fn switch_to_dead_greenlet_returns_at_once_when_nearest_live_ancestor_is_caller() {
    let dead = Greenlet::new(|()| ());
    dead.switch::<(), ()>(()).unwrap();
    assert!(dead.is_dead());
    let () = dead.switch::<(), ()>(()).unwrap();
    assert_eq!(dead.switch::<&str, &str>("v").unwrap(), "v");
    assert_eq!(dead.switch::<(u8, u8), (u8, u8)>((1, 2)).unwrap(), (1, 2));
    assert!(dead.is_dead());
}

// Rule 21: through a chain of dead ancestors, and from inside a greenlet.
#[test]
fn switch_to_dead_greenlet_walks_dead_ancestors_to_the_caller() {
    let outer = Greenlet::new(|()| {
        let d1 = Greenlet::new(|()| ());
        d1.switch::<(), ()>(()).unwrap();
        let d2 = Greenlet::builder().parent(&d1).build(|()| ()).unwrap();
        d2.switch::<(), ()>(()).unwrap();
        assert!(d1.is_dead() && d2.is_dead());
        // d2 -> d1 (dead) -> outer, which is the caller: returns at once.
        d2.switch::<u32, u32>(17).unwrap()
    });
    assert_eq!(outer.switch::<(), u32>(()).unwrap(), 17);
}

// Rule 22
#[test]
fn switch_to_dead_greenlet_resumes_a_suspended_ancestor() {
    let main = getcurrent();
    let slot: Rc<RefCell<Option<Greenlet>>> = Rc::default();
    let slot2 = Rc::clone(&slot);
    let m = main.clone();
    let ancestor = Greenlet::new(move |()| {
        let dead = Greenlet::new(|()| ());
        dead.switch::<(), ()>(()).unwrap(); // dies, returns to us
        *slot2.borrow_mut() = Some(dead);
        let got: &str = m.switch("ancestor waiting").unwrap();
        format!("ancestor resumed with {got}")
    });
    assert_eq!(ancestor.switch::<(), &str>(()).unwrap(), "ancestor waiting");
    let dead = slot.borrow_mut().take().unwrap();
    assert!(dead.is_dead());
    assert_eq!(dead.parent(), Some(ancestor.clone()));
    // From main: dead -> ancestor (suspended) resumes with our value, and returns to main.
    assert_eq!(
        dead.switch::<&str, String>("hello").unwrap(),
        "ancestor resumed with hello"
    );
    assert!(ancestor.is_dead());
}

// Rule 22: the caller stays suspended until something switches back to it.
#[test]
fn switch_to_dead_greenlet_leaves_the_caller_suspended() {
    let main = getcurrent();
    let m = main.clone();
    let ancestor = Greenlet::new(move |()| {
        let got: u32 = m.switch("ancestor waiting").unwrap();
        // Go back to main, not to the greenlet that resumed us.
        let _: () = m.switch(got * 2).unwrap();
    });
    assert_eq!(ancestor.switch::<(), &str>(()).unwrap(), "ancestor waiting");
    let dead = Greenlet::builder()
        .parent(&ancestor)
        .build(|()| ())
        .unwrap();
    dead.set_parent(&main).unwrap();
    dead.switch::<(), ()>(()).unwrap();
    dead.set_parent(&ancestor).unwrap();
    assert!(dead.is_dead());

    let d2 = dead.clone();
    let caller = Greenlet::new(move |()| {
        let back: &str = d2.switch(21u32).unwrap();
        back.to_string()
    });
    // caller -> dead -> ancestor (resumed with 21) -> main gets 42.
    assert_eq!(caller.switch::<(), u32>(()).unwrap(), 42);
    assert!(caller.is_active() && !caller.is_dead());
    assert!(format!("{caller:?}").contains("suspended"));
    // Only an explicit switch back resumes the caller.
    assert_eq!(caller.switch::<&str, String>("back").unwrap(), "back");
    assert!(caller.is_dead());
}

// Rule 23
#[test]
fn switch_to_dead_greenlet_starts_an_unstarted_ancestor_with_the_original_value() {
    let dead = Greenlet::new(|()| ());
    dead.switch::<(), ()>(()).unwrap();
    let (set, ran) = flag();
    let ancestor = Greenlet::new(move |(a, b): (u32, &'static str)| {
        set.set(true);
        format!("{b}{a}")
    });
    dead.set_parent(&ancestor).unwrap();
    assert_eq!(dead.switch::<_, String>((5u32, "x")).unwrap(), "x5");
    assert!(ran.get());
    assert!(ancestor.is_dead());
}

// Rules 23 + 11 (analogue): an unstarted ancestor sent the wrong type dies unrun.
#[test]
fn switch_to_dead_greenlet_with_wrong_type_for_unstarted_ancestor_kills_it() {
    let dead = Greenlet::new(|()| ());
    dead.switch::<(), ()>(()).unwrap();
    let (set, ran) = flag();
    let ancestor = Greenlet::new(move |x: u32| {
        set.set(true);
        x
    });
    dead.set_parent(&ancestor).unwrap();
    match dead.switch::<i64, u32>(3) {
        Err(SwitchError::WrongType { value, .. }) => {
            assert_eq!(*value.downcast::<i64>().unwrap(), 3)
        }
        other => panic!("expected WrongType, got {other:?}"),
    }
    assert!(!ran.get());
    assert!(ancestor.is_dead());
}

// Rule 24
#[test]
fn dead_greenlet_keeps_its_parent_and_reparenting_redirects_dead_switches() {
    let main = getcurrent();
    let dead = Greenlet::new(|()| ());
    dead.switch::<(), ()>(()).unwrap();
    assert_eq!(dead.parent(), Some(main.clone()));
    // To main (the caller): at once.
    assert_eq!(dead.switch::<u32, u32>(1).unwrap(), 1);
    // Redirect to a fresh greenlet: the next dead-switch starts it.
    let first = Greenlet::new(|x: u32| x + 100);
    dead.set_parent(&first).unwrap();
    assert_eq!(dead.parent(), Some(first.clone()));
    assert_eq!(dead.switch::<u32, u32>(1).unwrap(), 101);
    // Redirect again: first is dead now, so a third greenlet is needed to see a difference.
    let second = Greenlet::new(|x: u32| x + 200);
    dead.set_parent(&second).unwrap();
    assert_eq!(dead.switch::<u32, u32>(1).unwrap(), 201);
    assert!(dead.is_dead());
}

// ---------------------------------------------------------------------------------------------
// Trees, siblings and generators

// Rules 12, 16, 19: three levels; the leaf reports to main, its parent dies while it is
// suspended, and its result then skips the dead parent.
#[test]
fn three_level_tree_with_direct_switches_and_a_dead_middle() {
    let main = getcurrent();
    let m = main.clone();
    let top = Greenlet::new(move |()| {
        let m_mid = m.clone();
        let middle = Greenlet::new(move |()| {
            let m_leaf = m_mid.clone();
            let leaf = Greenlet::new(move |()| {
                let got: u32 = m_leaf.switch(getcurrent()).unwrap();
                got + 1
            });
            let from_leaf: u32 = leaf.switch(()).unwrap();
            from_leaf * 10
        });
        let from_middle: u32 = middle.switch(()).unwrap();
        let later: u32 = m.switch(from_middle).unwrap();
        later + 1000
    });
    let leaf: Greenlet = top.switch(()).unwrap();
    let middle = leaf.parent().unwrap();
    assert_eq!(middle.parent(), Some(top.clone()));
    assert_eq!(top.parent(), Some(main.clone()));
    assert!(leaf.is_active() && middle.is_active() && top.is_active());

    // Resume the middle directly: its pending leaf.switch gets 5, it returns 50 to top, which
    // hands it to main.
    assert_eq!(middle.switch::<u32, u32>(5).unwrap(), 50);
    assert!(middle.is_dead() && leaf.is_active());

    // Now the leaf finishes: 8 skips the dead middle and resumes top, which returns 1008.
    assert_eq!(leaf.switch::<u32, u32>(7).unwrap(), 1008);
    assert!(leaf.is_dead() && top.is_dead());
}

// Rules 8, 16: three levels, each result flowing up through its parent.
#[test]
fn three_level_tree_results_flow_up() {
    let log: Rc<RefCell<Vec<&str>>> = Rc::default();
    let l1 = Rc::clone(&log);
    let top = Greenlet::new(move |n: u32| {
        let l2 = Rc::clone(&l1);
        let middle = Greenlet::new(move |n: u32| {
            let l3 = Rc::clone(&l2);
            let leaf = Greenlet::new(move |n: u32| {
                l3.borrow_mut().push("leaf");
                n + 100
            });
            let r: u32 = leaf.switch(n).unwrap();
            l2.borrow_mut().push("middle");
            r + 10
        });
        let r: u32 = middle.switch(n).unwrap();
        l1.borrow_mut().push("top");
        r + 1
    });
    assert_eq!(top.switch::<u32, u32>(0).unwrap(), 111);
    assert_eq!(*log.borrow(), ["leaf", "middle", "top"]);
}

// Rule 12: two siblings (neither is the other's parent) pass a value back and forth.
#[test]
fn ping_pong_between_siblings() {
    let ping_slot: Rc<RefCell<Option<Greenlet>>> = Rc::default();
    let pong_slot: Rc<RefCell<Option<Greenlet>>> = Rc::default();
    let trace: Rc<RefCell<Vec<String>>> = Rc::default();

    let (pong_for_ping, t1) = (Rc::clone(&pong_slot), Rc::clone(&trace));
    let ping = Greenlet::new(move |mut n: u32| {
        let pong = pong_for_ping.borrow().clone().unwrap();
        while n < 10 {
            t1.borrow_mut().push(format!("ping {n}"));
            n = pong.switch(n + 1).unwrap();
        }
        n // finishes: goes to main, ping's parent
    });
    let (ping_for_pong, t2) = (Rc::clone(&ping_slot), Rc::clone(&trace));
    let pong = Greenlet::new(move |mut n: u32| {
        let ping = ping_for_pong.borrow().clone().unwrap();
        loop {
            t2.borrow_mut().push(format!("pong {n}"));
            n = ping.switch(n + 1).unwrap();
        }
    });
    *ping_slot.borrow_mut() = Some(ping.clone());
    *pong_slot.borrow_mut() = Some(pong.clone());
    assert_eq!(ping.parent(), pong.parent());
    assert_ne!(ping.parent(), Some(pong.clone()));
    assert_ne!(pong.parent(), Some(ping.clone()));

    assert_eq!(ping.switch::<u32, u32>(0).unwrap(), 10);
    assert_eq!(
        *trace.borrow(),
        [
            "ping 0", "pong 1", "ping 2", "pong 3", "ping 4", "pong 5", "ping 6", "pong 7",
            "ping 8", "pong 9"
        ]
    );
    assert!(ping.is_dead());
    assert!(pong.is_active()); // suspended at its last ping.switch
    drop(ping_slot.borrow_mut().take());
    drop(pong_slot.borrow_mut().take());
}

/// A generator on a greenlet: the body yields to whoever called `next`.
struct Generator<T: 'static> {
    greenlet: Greenlet,
    _item: PhantomData<T>,
}

impl<T: 'static> Generator<T> {
    fn new(body: impl FnOnce(&dyn Fn(T)) + 'static) -> Generator<T> {
        let greenlet = Greenlet::new(move |()| {
            let yield_ = |item: T| {
                let consumer = getcurrent().parent().expect("a consumer");
                consumer.switch::<Option<T>, ()>(Some(item)).unwrap();
            };
            body(&yield_);
            None::<T>
        });
        Generator {
            greenlet,
            _item: PhantomData,
        }
    }
}

impl<T: 'static> Iterator for Generator<T> {
    type Item = T;

    fn next(&mut self) -> Option<T> {
        if self.greenlet.is_dead() {
            return None;
        }
        // Yield to whoever asks, like Python's greenlet generator example.
        self.greenlet.set_parent(&getcurrent()).unwrap();
        self.greenlet.switch::<(), Option<T>>(()).unwrap()
    }
}

fn countdown(from: u32) -> Generator<u32> {
    Generator::new(move |yield_| {
        for n in (1..=from).rev() {
            yield_(n);
        }
    })
}

// Rules 12, 16, 24 (generator pattern): iterate to exhaustion.
#[test]
fn generator_built_from_greenlets_runs_to_exhaustion() {
    let mut countdown5 = countdown(5);
    let items: Vec<u32> = countdown5.by_ref().collect();
    assert_eq!(items, [5, 4, 3, 2, 1]);
    assert!(countdown5.greenlet.is_dead());
    assert_eq!(countdown5.next(), None);
    assert_eq!(countdown5.next(), None);

    let empty = countdown(0);
    assert_eq!(empty.count(), 0);
}

// Rules 12, 16, 49-like reparenting: a generator consumed inside another generator's body.
#[test]
fn generators_nest_and_can_be_consumed_from_another_greenlet() {
    let squares: Generator<String> = Generator::new(|yield_| {
        for n in countdown(3) {
            yield_(format!("{}", n * n));
        }
    });
    let consumer = Greenlet::new(move |()| squares.collect::<Vec<String>>().join(","));
    assert_eq!(consumer.switch::<(), String>(()).unwrap(), "9,4,1");
    assert!(consumer.is_dead());
}

// Rules 13, 14, 11 (analogue): values crossing a switch are moved, never copied or leaked, also
// when they arrive as the wrong type or are rejected by an unstarted greenlet.
#[test]
fn switched_values_are_moved_exactly_once() {
    let token = Rc::new(());
    let main = getcurrent();
    let g = Greenlet::new(move |first: Rc<()>| {
        let second: Rc<()> = main.switch(first).unwrap();
        // Wrong type on the way in: the value is in the error and dropped with it.
        let wrong = main.switch::<Rc<()>, u8>(second);
        assert!(matches!(wrong, Err(SwitchError::WrongType { .. })));
        drop(wrong);
        // A large value, returned as run's result.
        [7u8; 64 * 1024]
    });
    let back: Rc<()> = g.switch(Rc::clone(&token)).unwrap();
    assert!(Rc::ptr_eq(&back, &token));
    assert_eq!(Rc::strong_count(&token), 2);
    let again: Rc<()> = g.switch(back).unwrap();
    assert_eq!(Rc::strong_count(&token), 2);
    let big: [u8; 64 * 1024] = g.switch(again).unwrap();
    assert!(big.iter().all(|&b| b == 7));
    assert_eq!(Rc::strong_count(&token), 1);

    // Rejected by an unstarted greenlet: comes back in the error, then dropped once.
    let h = Greenlet::new(|x: u8| x);
    match h.switch::<Rc<()>, u8>(Rc::clone(&token)) {
        Err(SwitchError::WrongType { value, .. }) => {
            let value = value.downcast::<Rc<()>>().unwrap();
            assert!(Rc::ptr_eq(&value, &token));
            assert_eq!(Rc::strong_count(&token), 2);
        }
        other => panic!("expected WrongType, got {other:?}"),
    }
    assert_eq!(Rc::strong_count(&token), 1);
    // Switching to yourself moves it too.
    let same: Rc<()> = getcurrent().switch(Rc::clone(&token)).unwrap();
    assert_eq!(Rc::strong_count(&token), 2);
    drop(same);
    assert_eq!(Rc::strong_count(&token), 1);
}

/// A greenlet that returns a `String` to its parent, an unstarted greenlet whose closure holds
/// `guard` and takes a `u64`: the parent dies without running, dropping `guard` in the
/// returning greenlet, and the `String` walks on up as a wrong-type error.
fn returns_a_string_to_an_unstarted_parent_holding<G: 'static>(guard: G) -> Greenlet {
    let parent = Greenlet::new(move |x: u64| {
        let _guard = &guard;
        x
    });
    Greenlet::builder()
        .parent(&parent)
        .build(|()| String::from("not a u64"))
        .unwrap()
}

// Rule 19's walk past an unstarted parent drops that parent's closure, which runs its
// destructors in the greenlet whose result is walking up. Until the result is delivered, that
// greenlet is as alive as any: a destructor may switch away and be switched back to, and the
// walk then goes on.
#[test]
fn a_destructor_run_by_the_walk_of_a_result_may_switch_away_and_back() {
    thread_local!(static STASH: RefCell<Option<Greenlet>> = const { RefCell::new(None) });
    struct SwitchesOnDrop(Greenlet, Rc<Cell<u32>>);
    impl Drop for SwitchesOnDrop {
        fn drop(&mut self) {
            STASH.with(|stash| *stash.borrow_mut() = Some(getcurrent()));
            let back = self.0.switch::<u64, u32>(7).unwrap();
            self.1.set(back);
        }
    }
    let resumed_with = Rc::new(Cell::new(0));
    let g = returns_a_string_to_an_unstarted_parent_holding(SwitchesOnDrop(
        getcurrent(),
        Rc::clone(&resumed_with),
    ));
    // g returns a String; its unstarted parent wants a u64 and dies without running; dropping
    // its closure runs the guard in g, which sends main a u64 where main awaits a u32.
    match g.switch::<(), u32>(()) {
        Err(SwitchError::WrongType { value, .. }) => {
            assert_eq!(*value.downcast::<u64>().unwrap(), 7)
        }
        other => panic!("expected the guard's u64, got {other:?}"),
    }
    assert!(
        g.is_active() && !g.is_dead(),
        "g has not delivered its result yet"
    );
    let stashed = STASH.with(|stash| stash.borrow_mut().take()).unwrap();
    assert_eq!(stashed, g);
    // Back into the guard; then the walk goes on to main with the String.
    match stashed.switch::<u32, u32>(2) {
        Err(SwitchError::WrongType { value, .. }) => {
            assert_eq!(*value.downcast::<String>().unwrap(), "not a u64");
        }
        other => panic!("expected g's String, got {other:?}"),
    }
    assert_eq!(resumed_with.get(), 2);
    assert!(g.is_dead());
    let probe = Greenlet::new(|()| 3u8);
    assert_eq!(probe.switch::<(), u8>(()).unwrap(), 3);
}

// A panic from such a destructor cannot unwind out of a finishing greenlet: it is reported on
// stderr and discarded, as a kill's is (rule 36), and the result goes on up.
#[test]
fn a_destructor_panic_during_the_walk_of_a_result_is_discarded() {
    struct PanicsOnDrop;
    impl Drop for PanicsOnDrop {
        fn drop(&mut self) {
            panic!("destructor panic");
        }
    }
    let g = returns_a_string_to_an_unstarted_parent_holding(PanicsOnDrop);
    match g.switch::<(), u32>(()) {
        Err(SwitchError::WrongType { value, .. }) => {
            assert_eq!(*value.downcast::<String>().unwrap(), "not a u64");
        }
        other => panic!("expected g's String, got {other:?}"),
    }
    assert!(g.is_dead());
}
