//! Greenlets and threads. The requirement guarded here: greenlets still suspended when their
//! thread ends are unwound or freed without touching destroyed thread-locals, without leaking
//! their stacks, and without UB. Each thread has its own main greenlet and its own greenlets.
//!
//! Counters (`Arc<AtomicUsize>`, bumped by a destructor captured by each greenlet) prove the
//! greenlets' destructors ran exactly once; a second counter proves they were unwound by the
//! "vanished" `GreenletExit` (rule 33) rather than freed silently.

mod common;

use std::cell::RefCell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;

use awaitlet::greenlet::settrace;
use awaitlet::{Greenlet, GreenletExit, getcurrent};
use common::{assert_memory_flat, is_child, process_memory, run_child_with_env};

const VANISHED: &str = "Killing the greenlet because all references have vanished.";

/// Counts its drops.
struct Counted(Arc<AtomicUsize>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// How many destructors ran, and how many greenlets saw the "vanished" GreenletExit.
#[derive(Clone, Default)]
struct Tally {
    dropped: Arc<AtomicUsize>,
    vanished: Arc<AtomicUsize>,
}

impl Tally {
    fn dropped(&self) -> usize {
        self.dropped.load(Ordering::SeqCst)
    }

    fn vanished(&self) -> usize {
        self.vanished.load(Ordering::SeqCst)
    }

    fn guard(&self) -> Counted {
        Counted(Arc::clone(&self.dropped))
    }
}

/// A greenlet, child of `parent`, suspended in a switch to this thread's main greenlet. When
/// killed it counts the exit (if it is the "vanished" one) and its destructor.
fn suspended_child_of(parent: &Greenlet, tally: &Tally) -> Greenlet {
    let main = getcurrent();
    let guard = tally.guard();
    let vanished = Arc::clone(&tally.vanished);
    let g = Greenlet::builder()
        .parent(parent)
        .build(move |()| {
            let _guard = guard;
            let outcome = catch_unwind(AssertUnwindSafe(|| main.switch::<(), ()>(())));
            if let Err(panic) = outcome {
                if panic
                    .downcast_ref::<GreenletExit>()
                    .is_some_and(|exit| exit.message == VANISHED)
                {
                    vanished.fetch_add(1, Ordering::SeqCst);
                }
                std::panic::resume_unwind(panic);
            }
        })
        .unwrap();
    g.switch::<(), ()>(()).unwrap();
    assert!(g.is_active());
    g
}

fn suspended(tally: &Tally) -> Greenlet {
    suspended_child_of(&getcurrent(), tally)
}

/// An unstarted greenlet whose closure captures a counter and must never run.
fn unstarted(tally: &Tally) -> Greenlet {
    let guard = tally.guard();
    Greenlet::new(move |()| {
        let _guard = guard;
        panic!("an unstarted greenlet ran at thread exit");
    })
}

/// A suspended greenlet whose parent is dead: the parent made it, started it and returned.
fn suspended_with_dead_parent(tally: &Tally) -> Greenlet {
    let slot: Rc<RefCell<Option<Greenlet>>> = Rc::new(RefCell::new(None));
    let slot_in = Rc::clone(&slot);
    let tally_in = tally.clone();
    let parent = Greenlet::new(move |()| {
        let child = suspended_child_of(&getcurrent(), &tally_in);
        *slot_in.borrow_mut() = Some(child);
    });
    parent.switch::<(), ()>(()).unwrap();
    assert!(parent.is_dead());
    let child = slot.borrow_mut().take().unwrap();
    assert_eq!(child.parent(), Some(parent));
    assert!(child.is_active());
    child
}

thread_local! {
    static PARKED: RefCell<Vec<Greenlet>> = const { RefCell::new(Vec::new()) };
}

fn park(g: Greenlet) {
    PARKED.with(|parked| parked.borrow_mut().push(g));
}

// Suspended greenlets held in a thread's local variables are killed when the thread's closure
// returns: each is unwound by the vanished GreenletExit, each destructor runs once.
#[test]
fn suspended_greenlets_in_locals_are_unwound_once_when_thread_ends() {
    let tally = Tally::default();
    let inner = tally.clone();
    thread::spawn(move || {
        let held: Vec<Greenlet> = (0..8).map(|_| suspended(&inner)).collect();
        let single = suspended(&inner);
        let with_dead_parent = suspended_with_dead_parent(&inner);
        let not_started = unstarted(&inner);
        assert_eq!(inner.dropped(), 0);
        let _keep = (held, single, with_dead_parent, not_started);
    })
    .join()
    .unwrap();
    assert_eq!(tally.dropped(), 11);
    assert_eq!(tally.vanished(), 10, "the started ones were unwound");
}

// A thread that panics while holding suspended greenlets unwinds them too (kill on drop during
// the thread's own unwinding), exactly once each, and the thread's panic is the one reported.
#[test]
fn suspended_greenlets_are_unwound_when_their_thread_panics() {
    let tally = Tally::default();
    let inner = tally.clone();
    let joined = thread::spawn(move || {
        let _held: Vec<Greenlet> = (0..4).map(|_| suspended(&inner)).collect();
        let _with_dead_parent = suspended_with_dead_parent(&inner);
        panic!("thread panics with suspended greenlets");
    })
    .join();
    let panic = joined.unwrap_err();
    assert_eq!(
        *panic.downcast::<&str>().unwrap(),
        "thread panics with suspended greenlets"
    );
    assert_eq!(tally.dropped(), 5);
    assert_eq!(tally.vanished(), 5);
}

/// Fills `PARKED` with suspended, unstarted, dead and dead-parented greenlets, and a parent and
/// child pair both suspended (the parent first, so its kill waits for the child's). Returns how
/// many counters were handed out and how many of them belong to started, unfinished greenlets.
fn fill_parked(tally: &Tally) -> (usize, usize) {
    for _ in 0..4 {
        park(suspended(tally));
    }
    park(unstarted(tally));
    let finished = {
        let guard = tally.guard();
        Greenlet::new(move |()| drop(guard))
    };
    finished.switch::<(), ()>(()).unwrap();
    park(finished);
    park(suspended_with_dead_parent(tally));
    let parent = suspended(tally);
    let child = suspended_child_of(&parent, tally);
    park(parent);
    park(child);
    // 4 suspended + 1 unstarted + 1 finished + 1 dead-parented + parent + child.
    (9, 7)
}

// Suspended greenlets parked in a `thread_local!` registered *before* the thread's greenlet
// machinery (so destroyed after it, at thread exit): unwound once each, no crash.
#[test]
fn greenlets_in_thread_local_destroyed_after_greenlet_state_are_unwound() {
    let tally = Tally::default();
    let inner = tally.clone();
    let counts = thread::spawn(move || {
        PARKED.with(|_| ()); // registers PARKED's destructor first
        fill_parked(&inner)
    })
    .join()
    .unwrap();
    assert_eq!(tally.dropped(), counts.0);
    assert_eq!(tally.vanished(), counts.1);
}

// The same with the `thread_local!` registered *after* the greenlet machinery (destroyed
// before it).
#[test]
fn greenlets_in_thread_local_destroyed_before_greenlet_state_are_unwound() {
    let tally = Tally::default();
    let inner = tally.clone();
    let counts = thread::spawn(move || {
        let warm = Greenlet::new(|()| ());
        warm.switch::<(), ()>(()).unwrap(); // main, the pool, ... exist
        let counts = fill_parked(&inner);
        drop(warm);
        counts
    })
    .join()
    .unwrap();
    assert_eq!(tally.dropped(), counts.0);
    assert_eq!(tally.vanished(), counts.1);
}

// A trace hook still set when the thread exits, with greenlets parked in a thread-local, does
// not crash the teardown (whether or not the hook is still around to see the kills).
#[test]
fn thread_exit_with_trace_hook_set_and_parked_greenlets_is_clean() {
    let tally = Tally::default();
    let inner = tally.clone();
    let events = Arc::new(AtomicUsize::new(0));
    let events_in = Arc::clone(&events);
    let counts = thread::spawn(move || {
        PARKED.with(|_| ());
        let counts = fill_parked(&inner);
        settrace(Some(Rc::new(move |_, _, _| {
            events_in.fetch_add(1, Ordering::SeqCst);
        })));
        getcurrent().switch::<(), ()>(()).unwrap();
        counts
    })
    .join()
    .unwrap();
    assert!(events.load(Ordering::SeqCst) >= 1);
    assert_eq!(tally.dropped(), counts.0);
    assert_eq!(tally.vanished(), counts.1);
}

// Several threads at once, each with its own main greenlet and its own greenlets, ping-pong
// concurrently and get their own results.
#[test]
fn threads_ping_pong_concurrently_with_their_own_main_greenlets() {
    const THREADS: u64 = 8;
    const ROUNDS: u64 = 20_000;
    let barrier = Arc::new(Barrier::new(THREADS as usize));
    let handles: Vec<_> = (0..THREADS)
        .map(|id| {
            let barrier = Arc::clone(&barrier);
            thread::spawn(move || {
                let main = getcurrent();
                assert!(main.is_main() && main.parent().is_none());
                let main_in = main.clone();
                let echo = Greenlet::new(move |mut x: u64| {
                    loop {
                        // A nested greenlet per round, finishing into this one.
                        let inner = Greenlet::new(move |y: u64| y + id);
                        x = inner.switch::<u64, u64>(x).unwrap();
                        // A finished child's parent link still holds this greenlet: drop it
                        // before suspending, so that main's handle is the only other one.
                        drop(inner);
                        x = main_in.switch(x + 1).unwrap();
                    }
                });
                assert_eq!(echo.parent(), Some(main.clone()));
                barrier.wait();
                let mut value = 0u64;
                for _ in 0..ROUNDS {
                    value = echo.switch(value).unwrap();
                    assert_eq!(getcurrent(), main);
                }
                drop(echo); // killed on drop, here
                value
            })
        })
        .collect();
    for (id, handle) in handles.into_iter().enumerate() {
        assert_eq!(handle.join().unwrap(), ROUNDS * (id as u64 + 1));
    }
}

// Threads that exit holding suspended greenlets (in locals and in a thread-local) do not leak
// their stacks: after a warm-up, many more such threads leave the mapping count and virtual
// size flat. In a child process, alone, so other tests' threads do not disturb the numbers.
#[test]
fn stacks_of_greenlets_left_at_thread_exit_are_not_leaked() {
    if is_child("no-leak") {
        let tally = Tally::default();
        let round = |tally: &Tally| {
            let handles: Vec<_> = (0..8)
                .map(|_| {
                    let tally = tally.clone();
                    thread::spawn(move || {
                        let counts = fill_parked(&tally);
                        let _locals: Vec<Greenlet> = (0..4).map(|_| suspended(&tally)).collect();
                        counts.0 + 4
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap())
                .sum::<usize>()
        };
        let mut handed_out = round(&tally) + round(&tally);
        let before = process_memory();
        for _ in 0..25 {
            handed_out += round(&tally);
        }
        let after = process_memory();
        assert_eq!(tally.dropped(), handed_out, "every destructor ran once");
        // 25 rounds x 8 threads x 14 stacks of 1 MiB: a leak would add ~2800 stacks.
        assert_memory_flat(before, after);
        println!("CHILD-OK {before:?} {after:?}");
        return;
    }
    // One malloc arena, so new per-thread arenas do not grow the virtual size.
    let output = run_child_with_env(
        "stacks_of_greenlets_left_at_thread_exit_are_not_leaked",
        "no-leak",
        "MALLOC_ARENA_MAX",
        "1",
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("CHILD-OK"),
        "{output:?}"
    );
}
