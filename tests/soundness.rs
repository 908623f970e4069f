//! Attacks on the crate's soundness from safe code only, one test (or a few) per invariant the
//! unsafe core relies on (see `docs/SOUNDNESS.md`). Each test is named after what it guards.
//!
//! The use-after-free attacks check a liveness flag before they touch borrowed data, so they
//! fail on their own; they also read the data itself, so that AddressSanitizer and Valgrind
//! (both run over this file in CI) report the access if the flag check were ever wrong.

mod common;

use std::cell::{Cell, RefCell};
use std::mem;
use std::rc::Rc;

use awaitlet::{AsyncDef, Cancelled, Greenlet, async_def, awaitlet, getcurrent};
use common::{catch, poll_once, text};

/// Borrowed data that knows whether it is alive: `alive` is shared and outlives it.
struct Watched {
    alive: Rc<Cell<bool>>,
    bytes: Vec<u8>,
}

impl Watched {
    fn new(alive: &Rc<Cell<bool>>) -> Watched {
        alive.set(true);
        Watched {
            alive: Rc::clone(alive),
            bytes: vec![7; 64],
        }
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        self.alive.set(false);
    }
}

/// What a function borrowing a [`Watched`] saw each time it ran.
#[derive(Default)]
struct Sightings {
    /// Set when the function ran while its borrowed data was dropped.
    ran_after_free: Cell<bool>,
    /// Sum of the bytes read, so that the reads are not optimised out.
    read: Cell<usize>,
}

impl Sightings {
    /// Called by the function each time it runs: records whether `alive` still holds, then
    /// reads the data (which AddressSanitizer reports if it was freed).
    fn check(&self, alive: &Cell<bool>, data: &Watched) {
        if !alive.get() {
            self.ran_after_free.set(true);
        }
        self.read
            .set(self.read.get() + data.bytes.iter().map(|&byte| byte as usize).sum::<usize>());
    }
}

type Stash = Rc<RefCell<Option<Greenlet>>>;

/// A function that borrows `data`, stashes its own greenlet, switches to main, and reads `data`
/// again whenever it is resumed.
fn stashing_function<'a>(
    data: &'a Watched,
    alive: &'a Rc<Cell<bool>>,
    stash: &'a Stash,
    sightings: &'a Rc<Sightings>,
    main: &'a Greenlet,
) -> impl FnOnce() + 'a {
    move || {
        sightings.check(alive, data);
        *stash.borrow_mut() = Some(getcurrent());
        let _ = main.switch::<(), ()>(());
        sightings.check(alive, data);
    }
}

#[test]
fn a_frozen_poll_on_a_leaked_stack_does_not_let_a_switch_in_after_the_borrow_ends() {
    let alive = Rc::new(Cell::new(false));
    let stash: Stash = Rc::default();
    let sightings = Rc::new(Sightings::default());
    let main = getcurrent();
    {
        let data = Watched::new(&alive);
        let outer = async_def(stashing_function(&data, &alive, &stash, &sightings, &main));
        let mut inner = Box::pin(async_def(move || {
            let mut outer = Box::pin(outer);
            let _ = poll_once(&mut outer);
        }));
        // The function of `outer` switches to main in the middle of `inner`'s hand poll of it:
        // `inner`'s poll panics, and `outer`'s poll stays frozen on `inner`'s stack.
        let outcome = catch(|| poll_once(&mut inner));
        assert!(
            outcome.is_err(),
            "the poll of inner was resumed by a greenlet switch"
        );
        mem::forget(inner);
        drop(data);
    }
    assert!(!alive.get());
    let stashed = stash.borrow_mut().take().expect("the function ran");
    let resumed = catch(|| stashed.switch::<(), ()>(()));
    assert!(
        !sightings.ran_after_free.get(),
        "the function ran after its data was dropped"
    );
    let refusal = resumed.expect_err("the switch into the function is refused");
    assert!(
        text(&*refusal).contains("can only be resumed by its AsyncDef"),
        "{}",
        text(&*refusal)
    );
    mem::forget(stashed);
}

#[test]
fn a_frozen_cancellation_on_a_leaked_stack_does_not_let_a_switch_in_after_the_borrow_ends() {
    let alive = Rc::new(Cell::new(false));
    let stash: Stash = Rc::default();
    let sightings = Rc::new(Sightings::default());
    let main = getcurrent();
    {
        let data = Watched::new(&alive);
        let (data_ref, alive_ref, stash_ref, sightings_ref, main_ref) =
            (&data, &alive, &stash, &sightings, &main);
        let outer = async_def(move || {
            sightings_ref.check(alive_ref, data_ref);
            *stash_ref.borrow_mut() = Some(getcurrent());
            let cancelled = catch(|| awaitlet(std::future::pending::<()>()));
            assert!(cancelled.unwrap_err().is::<Cancelled>());
            // Caught the cancellation, then switched away from the dropping code.
            let _ = main_ref.switch::<(), ()>(());
            sightings_ref.check(alive_ref, data_ref);
        });
        let mut inner = Box::pin(async_def(move || {
            let mut outer: std::pin::Pin<Box<AsyncDef<'_, ()>>> = Box::pin(outer);
            assert!(poll_once(&mut outer).is_pending());
            drop(outer);
        }));
        let outcome = catch(|| poll_once(&mut inner));
        assert!(
            outcome.is_err(),
            "the poll of inner was resumed by a greenlet switch"
        );
        mem::forget(inner);
        drop(data);
    }
    assert!(!alive.get());
    let stashed = stash.borrow_mut().take().expect("the function ran");
    let resumed = catch(|| stashed.switch::<(), ()>(()));
    assert!(
        !sightings.ran_after_free.get(),
        "the function ran after its data was dropped"
    );
    let refusal = resumed.expect_err("the switch into the function is refused");
    assert!(
        text(&*refusal).contains("can only be resumed by its AsyncDef"),
        "{}",
        text(&*refusal)
    );
    mem::forget(stashed);
}
