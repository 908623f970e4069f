//! State: the lifecycle flags, getcurrent(), identity, Debug, and per-thread main greenlets
//! (greenlet rules 50-51 and 55-56; see the rule map in the `greenlet` module docs).

use std::any::Any;
use std::cell::RefCell;
use std::collections::HashSet;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::rc::Rc;

use awaitlet::{Greenlet, SwitchError, getcurrent};

fn catch<R>(f: impl FnOnce() -> R) -> Result<R, Box<dyn Any + Send>> {
    catch_unwind(AssertUnwindSafe(f))
}

/// (is_dead, is_active, is_started, is_main).
type Flags = (bool, bool, bool, bool);

/// What the greenlet saw: a label, some greenlet's flags and its Debug output.
type Seen = Rc<RefCell<Vec<(&'static str, Flags, String)>>>;

/// The [`Flags`] of `g`.
fn flags(g: &Greenlet) -> Flags {
    (g.is_dead(), g.is_active(), g.is_started(), g.is_main())
}

const UNSTARTED: Flags = (false, false, false, false);
const ACTIVE: Flags = (false, true, true, false);
const DEAD: Flags = (true, false, true, false);
const MAIN: Flags = (false, true, true, true);

// Rules 55, 56: unstarted -> running -> suspended -> running -> dead, observed from outside and
// from inside the greenlet.
#[test]
fn lifecycle_flags_at_every_step() {
    let main = getcurrent();
    let seen: Seen = Rc::default();
    let s = Rc::clone(&seen);
    let m = main.clone();
    let g = Greenlet::builder()
        .name("life")
        .build(move |()| {
            let me = getcurrent();
            s.borrow_mut()
                .push(("first run", flags(&me), format!("{me:?}")));
            s.borrow_mut()
                .push(("main while g runs", flags(&m), format!("{m:?}")));
            m.switch::<(), ()>(()).unwrap();
            let me = getcurrent();
            s.borrow_mut()
                .push(("resumed", flags(&me), format!("{me:?}")));
        })
        .unwrap();

    assert_eq!(flags(&g), UNSTARTED);
    assert!(format!("{g:?}").contains("unstarted"));

    g.switch::<(), ()>(()).unwrap();
    assert_eq!(flags(&g), ACTIVE);
    assert!(format!("{g:?}").contains("suspended"));
    assert_eq!(flags(&main), MAIN);
    assert!(format!("{main:?}").contains("running"));

    g.switch::<(), ()>(()).unwrap();
    assert_eq!(flags(&g), DEAD);
    assert!(format!("{g:?}").contains("dead"));

    let seen = seen.borrow();
    assert_eq!(seen.len(), 3);
    assert_eq!(seen[0].0, "first run");
    assert_eq!(seen[0].1, ACTIVE);
    assert!(seen[0].2.contains("running"), "{}", seen[0].2);
    assert!(seen[0].2.contains("life"), "{}", seen[0].2);
    assert_eq!(seen[1].1, MAIN);
    assert!(seen[1].2.contains("suspended"), "{}", seen[1].2);
    assert_eq!(seen[2].0, "resumed");
    assert_eq!(seen[2].1, ACTIVE);
    assert!(seen[2].2.contains("running"), "{}", seen[2].2);
}

// Rule 55: a panic also makes the greenlet dead.
#[test]
fn greenlet_is_dead_after_panicking() {
    let g = Greenlet::new(|()| -> () { panic!("boom") });
    assert!(catch(|| g.switch::<(), ()>(())).is_err());
    assert_eq!(flags(&g), DEAD);
}

// Rule 55: killed (GreenletExit) is dead too.
#[test]
fn greenlet_is_dead_after_being_killed() {
    let main = getcurrent();
    let g = Greenlet::new(move |()| main.switch::<(), ()>(()).unwrap());
    g.switch::<(), ()>(()).unwrap();
    assert_eq!(flags(&g), ACTIVE);
    g.kill().unwrap();
    assert_eq!(flags(&g), DEAD);
}

// Rules 55, 56 with rule 11 (analogue): a wrong-type start leaves it dead, not active.
#[test]
fn greenlet_is_dead_after_a_wrong_type_start() {
    let g = Greenlet::new(|x: u8| x);
    assert!(matches!(
        g.switch::<&str, u8>("x"),
        Err(SwitchError::WrongType { .. })
    ));
    assert!(g.is_dead());
    assert!(!g.is_active());
    assert!(format!("{g:?}").contains("dead"));
}

// Rule 55: a parent is suspended, not dead, while its child runs.
#[test]
fn parent_is_suspended_while_child_runs() {
    let outer = Greenlet::new(|()| {
        let me = getcurrent();
        let child = Greenlet::new(move |()| (flags(&me), format!("{me:?}")));
        child.switch::<(), (Flags, String)>(()).unwrap()
    });
    let (f, debug): (Flags, String) = outer.switch(()).unwrap();
    assert_eq!(f, ACTIVE);
    assert!(debug.contains("suspended"), "{debug}");
}

// Rule 50
#[test]
fn getcurrent_is_stable_and_names_the_running_greenlet() {
    let main = getcurrent();
    assert_eq!(getcurrent(), getcurrent());
    assert_eq!(main, Greenlet::current());
    let g = Greenlet::new(|()| {
        let a = getcurrent();
        let b = getcurrent();
        (a == b, a)
    });
    let (stable, seen): (bool, Greenlet) = g.switch(()).unwrap();
    assert!(stable);
    assert_eq!(seen, g);
    assert_ne!(seen, main);
    assert!(!seen.is_main());
    // Back in main, the current greenlet is main again.
    assert_eq!(getcurrent(), main);
    assert!(getcurrent().is_main());
}

// Rule 51
#[test]
fn main_greenlet_properties() {
    let main = getcurrent();
    assert_eq!(flags(&main), MAIN);
    assert_eq!(main.parent(), None);
    assert_eq!(main.name(), Some("main"));
    let debug = format!("{main:?}");
    assert!(
        debug.contains("main") && debug.contains("running"),
        "{debug}"
    );
    // Still main, alive and active after greenlets come and go.
    let g = Greenlet::new(|()| ());
    g.switch::<(), ()>(()).unwrap();
    assert_eq!(g.parent(), Some(main.clone()));
    assert_eq!(flags(&main), MAIN);
}

// Rule 51: each thread lazily gets its own main greenlet.
#[test]
fn each_thread_has_its_own_main_greenlet() {
    // Spawn the thread from inside a greenlet: this thread's current is then not main, yet the
    // new thread's current is a main greenlet.
    let g = Greenlet::new(|()| {
        let here = getcurrent();
        assert!(!here.is_main());
        std::thread::spawn(|| {
            let main = getcurrent();
            let child = Greenlet::new(|x: u32| {
                let me = getcurrent();
                (x + 1, me.is_main(), me.parent().unwrap().is_main())
            });
            let (value, child_is_main, parent_is_main): (u32, bool, bool) =
                child.switch(1u32).unwrap();
            (
                main.is_main(),
                main.name() == Some("main"),
                main.parent().is_none(),
                flags(&main),
                getcurrent() == main && child.parent() == Some(main.clone()),
                (value, child_is_main, parent_is_main),
                child.is_dead(),
            )
        })
        .join()
        .unwrap()
    });
    let seen = g
        .switch::<(), (bool, bool, bool, Flags, bool, (u32, bool, bool), bool)>(())
        .unwrap();
    assert_eq!(seen, (true, true, true, MAIN, true, (2, false, true), true));
    assert!(getcurrent().is_main());
}

// Rule 51: a greenlet made in another thread is parented to that thread's main, not ours.
#[test]
fn greenlets_in_another_thread_belong_to_its_main() {
    let result = std::thread::spawn(|| {
        let main = getcurrent();
        let g = Greenlet::new(|()| ());
        let parent_is_that_threads_main = g.parent() == Some(main);
        g.switch::<(), ()>(()).unwrap();
        (parent_is_that_threads_main, g.is_dead())
    })
    .join()
    .unwrap();
    assert_eq!(result, (true, true));
}

// Clone = same greenlet; Eq and Hash by identity.
#[test]
// Greenlet's state is interior-mutable, but Eq and Hash use only its identity.
#[allow(clippy::mutable_key_type)]
fn clone_eq_and_hash_are_by_identity() {
    let a = Greenlet::new(|()| ());
    let b = Greenlet::new(|()| ());
    let a2 = a.clone();
    assert_eq!(a, a2);
    assert_ne!(a, b);
    let mut set = HashSet::new();
    assert!(set.insert(a.clone()));
    assert!(!set.insert(a2.clone()));
    assert!(set.insert(b.clone()));
    assert!(set.insert(getcurrent()));
    assert!(!set.insert(getcurrent()));
    assert_eq!(set.len(), 3);
    // A clone sees the other handle's state changes: it is the same greenlet.
    a.switch::<(), ()>(()).unwrap();
    assert!(a2.is_dead());
    assert!(set.contains(&a2));
    // getcurrent() inside a greenlet is equal (and hashes equal) to the outside handle.
    let known: Rc<RefCell<HashSet<Greenlet>>> = Rc::default();
    let inside = Rc::clone(&known);
    let c = Greenlet::new(move |()| inside.borrow().contains(&getcurrent()));
    known.borrow_mut().insert(c.clone());
    assert!(c.switch::<(), bool>(()).unwrap());
    // ...and a greenlet not in the set is not found.
    let inside = Rc::clone(&known);
    let d = Greenlet::new(move |()| inside.borrow().contains(&getcurrent()));
    assert!(!d.switch::<(), bool>(()).unwrap());
}

// Debug shows the name and the state.
#[test]
fn debug_shows_name_and_state() {
    let named = Greenlet::builder().name("worker").build(|()| ()).unwrap();
    let debug = format!("{named:?}");
    assert!(debug.contains("worker"), "{debug}");
    assert!(debug.contains("unstarted"), "{debug}");
    assert_eq!(named.name(), Some("worker"));
    named.switch::<(), ()>(()).unwrap();
    let debug = format!("{named:?}");
    assert!(
        debug.contains("worker") && debug.contains("dead"),
        "{debug}"
    );

    let unnamed = Greenlet::new(|()| ());
    assert_eq!(unnamed.name(), None);
    let debug = format!("{unnamed:?}");
    assert!(debug.contains("unstarted"), "{debug}");
    assert!(!debug.contains("name"), "{debug}");

    let owned_name = Greenlet::builder()
        .name(String::from("dynamic-7"))
        .build(|()| ())
        .unwrap();
    assert!(format!("{owned_name:?}").contains("dynamic-7"));
}
