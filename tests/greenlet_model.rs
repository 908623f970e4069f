//! The greenlet layer against a reference model (`tests/model/`): programs over trees of up to
//! 12 greenlets run on the model and on the crate, and their event traces must be identical.
//!
//! - `random_programs_agree_with_the_model` runs `AWAITLET_MODEL_PROGRAMS` random programs
//!   (2,000 by default; `AWAITLET_MODEL_SEED` changes the base seed). On a disagreement it
//!   prints the seed, the shrunk program, both traces and the first event that differs.
//! - Programs with hand-written traces check the model itself against the rules (greenlet rules
//!   1-67, mapped in the `greenlet` module docs), and the crate against the model.
//! - `tests/model/regressions.txt` keeps programs found by random runs, one test each; fixed
//!   seeds whose programs take the model's rarest paths have a test each too.
//! - Replacing a parent releases the old one after storing the new one: a kill that release
//!   causes may read the parent (the crate used to hold the parent's `RefCell` borrowed there,
//!   and panicked, or aborted the process); regression tests at the end check it.

mod common;
mod model;

use std::cell::RefCell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::rc::Rc;

use awaitlet::{Greenlet, getcurrent};
use common::{is_child, run_child, terminating_signal};
use model::generator::{SplitMix64, generate, program_seed};
use model::program::Program;
use model::{Limits, Plan, Verdict, check, check_many, quietly, reference, regression};

/// The base seed of the random programs unless `AWAITLET_MODEL_SEED` says otherwise.
const DEFAULT_SEED: u64 = 0x005e_ed0f_9ee7_1e75;

/// Below this many programs, a run is too small to expect every kind of event.
const PROGRAMS_FOR_COVERAGE: u64 = 1000;

#[test]
fn random_programs_agree_with_the_model() {
    let plan = Plan::from_env(2000, DEFAULT_SEED);
    let started = std::time::Instant::now();
    let summary = quietly(|| check_many(plan)).unwrap_or_else(|report| panic!("{report}"));
    eprintln!(
        "{plan:?}: {} programs agreed ({} events), {} over the leak budget, {} greenlets leaked, \
         in {:?}\n{:#?}\n{:#?}",
        summary.agreed,
        summary.events,
        summary.over_budget,
        summary.leaked,
        started.elapsed(),
        summary.tally,
        summary.coverage
    );
    assert_eq!(summary.agreed + summary.over_budget, plan.programs);
    if plan.programs < PROGRAMS_FOR_COVERAGE {
        return;
    }
    // A run this long goes through every kind of behaviour; if it does not, the generator has
    // stopped producing what it should.
    let tally = summary.tally;
    let coverage = summary.coverage;
    let seen = [
        ("values", coverage.values),
        ("kills returning Ok", coverage.kills_done),
        ("Exited", coverage.exited),
        ("WrongType carrying a value", coverage.wrong_type_values),
        ("WrongType carrying an exit", coverage.wrong_type_others),
        ("booms raised", coverage.booms),
        ("kill on drop exits raised", coverage.vanished),
        ("other exits raised", coverage.exits),
        ("runs left by a panic", coverage.unwinds),
        ("starts", coverage.starts),
        ("starts with a stray value", coverage.stray_starts),
        ("parents set", coverage.parents_set),
        ("cyclic parents refused", coverage.cyclic),
        ("main's parent refused", coverage.main_refused),
        ("handles to self kept", coverage.kept),
        ("main's steps ended by a panic", coverage.main_unwound),
        ("unstarted greenlets dying", tally.died_unstarted),
        ("kills on drop", tally.kills_on_drop),
        (
            "kills while replacing a parent",
            tally.kills_replacing_parent,
        ),
        (
            "parents read while set_parent releases the old one",
            tally.reads_while_set_parent_releases,
        ),
        ("panics discarded by a drop", tally.discarded_panics),
        ("victims leaked", tally.leaked),
        ("parents released by freed records", tally.parents_released),
        ("walks past dead greenlets", tally.walked_past_dead),
    ];
    for (what, count) in seen {
        assert!(count > 0, "no {what} in {} programs", plan.programs);
    }
}

/// Runs `program` (text form) on the model, checks its trace against `expected` (one event
/// per line), then checks that the crate agrees.
fn assert_trace(program: &str, expected: &str) {
    let program = Program::parse(program).expect("a well-formed program");
    let run = reference::run(&program);
    let trace: Vec<String> = run.events.iter().map(ToString::to_string).collect();
    let expected: Vec<&str> = expected
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect();
    assert_eq!(trace, expected, "the model's trace of\n{program}");
    assert_agrees(&program);
}

/// Checks that the crate produces the model's trace for `program`.
fn assert_agrees(program: &Program) {
    let verdict = quietly(|| check(program, Limits::new()));
    if let Verdict::Agree { .. } = verdict {
        return;
    }
    let report = quietly(|| model::report(None, program, verdict, Limits::new()));
    panic!("{report}");
}

// Rules 16, 17, 18 and 31: a result, a panic and an uncaught GreenletExit (thrown by the
// greenlet into itself, which raises at once) all reach the parent.
#[test]
fn results_panics_and_exits_reach_the_parent() {
    assert_trace(
        "main: switch g1 1; switch g2 2 catch-boom; switch g3 3
         g1 < main (u32 -> u32): return 7
         g2 < main (u32 -> u32): panic 8
         g3 < main (u32 -> u32): throw g3 exit:9",
        "main step 0
         g1 started with 1 (from main)
         g1 step 0
         g1 returns 7
         main got 7 (from g1)
         main step 1
         g2 started with 2 (from main)
         g2 step 0
         g2 panics boom:8
         main raised boom:8 (from g2)
         main step 2
         g3 started with 3 (from main)
         g3 step 0
         g3 raised exit:9 (from g3)
         g3 unwinds with exit:9
         main got Exited(exit:9) (from g3)
         program end
         at the end g1 is dead, parent main
         at the end g2 is dead, parent main
         at the end g3 is dead, parent main
         main: drop of g1 returned
         main: drop of g2 returned
         main: drop of g3 returned",
    );
}

// Rules 11 and 19: a result skips a dead parent, starts an unstarted one, and kills an
// unstarted one that takes another type (the value goes on up in WrongType).
#[test]
fn results_walk_past_dead_parents_and_start_unstarted_ones() {
    assert_trace(
        "main: switch g1 1; switch g3 3; switch g4 4; switch g6 6
         g1 < main (u32 -> u32): return 10
         g2 < main (u32 -> u32): return 20
         g3 < g1 (u32 -> u32): return 30
         g4 < g2 (u32 -> stray): return 40
         g5 < main (u32 -> u32): return 60
         g6 < g5 (u32 -> u32): return 50",
        "main step 0
         g1 started with 1 (from main)
         g1 step 0
         g1 returns 10
         main got 10 (from g1)
         main step 1
         g3 started with 3 (from main)
         g3 step 0
         g3 returns 30
         main got 30 (from g3)
         main step 2
         g4 started with 4 (from main)
         g4 step 0
         g4 returns stray:40
         main got WrongType(stray:40) (from g4)
         main step 3
         g6 started with 6 (from main)
         g6 step 0
         g6 returns 50
         g5 started with 50 (from g6)
         g5 step 0
         g5 returns 60
         main got 60 (from g5)
         program end
         at the end g1 is dead, parent main
         at the end g2 is dead, parent main
         at the end g3 is dead, parent g1
         at the end g4 is dead, parent g2
         at the end g5 is dead, parent main
         at the end g6 is dead, parent g5
         main: drop of g1 returned
         main: drop of g2 returned
         main: drop of g3 returned
         main: drop of g4 returned
         main: drop of g5 returned
         main: drop of g6 returned",
    );
}

// Rules 11, 21, 23, 24, 29 and 30: switches and throws to dead and unstarted greenlets.
#[test]
fn switches_and_throws_to_dead_and_unstarted_greenlets() {
    assert_trace(
        "main: switch g1 1; switch g1 2; throw g1 boom:3 catch-boom; throw g1 exit:4; \
               set-parent g1 g2; switch g1 5; throw g3 exit:6; throw g4 boom:7 catch-boom; \
               switch g5 stray:8
         g1 < main (u32 -> u32):
         g2 < main (u32 -> u32): return 20
         g3 < main (u32 -> u32):
         g4 < main (u32 -> u32):
         g5 < main (u32 -> u32):",
        "main step 0
         g1 started with 1 (from main)
         g1 returns 1001
         main got 1001 (from g1)
         main step 1
         main got 2 (from main)
         main step 2
         main raised boom:3 (from main)
         main step 3
         main got Exited(exit:4) (from main)
         main step 4
         main: set-parent g1 g2 -> Ok(())
         main step 5
         g2 started with 5 (from main)
         g2 step 0
         g2 returns 20
         main got 20 (from g2)
         main step 6
         main got Exited(exit:6) (from main)
         main step 7
         main raised boom:7 (from main)
         main step 8
         main got WrongType(stray:8) (from main)
         program end
         at the end g1 is dead, parent g2
         at the end g2 is dead, parent main
         at the end g3 is dead, parent main
         at the end g4 is dead, parent main
         at the end g5 is dead, parent main
         main: drop of g1 returned
         main: drop of g2 returned
         main: drop of g3 returned
         main: drop of g4 returned
         main: drop of g5 returned",
    );
}

// Rules 33, 34, 38 and 39: g2 drops the last handle to g1, which catches the exit, keeps a
// handle to itself and sees g2 as its parent; it switches to main, leaving g2's drop pending;
// its result, when main resumes it, goes to g2 and ends the drop; its parent is main again.
#[test]
fn kill_on_drop_makes_the_dropper_the_parent_until_the_victim_comes_back() {
    assert_trace(
        &regression("killer_of_a_killer_is_resumed_only_when_switched_back").to_string(),
        "main step 0
         g1 started with 1 (from main)
         g1 step 0
         main got 10 (from g1)
         main step 1
         g2 started with 2 (from main)
         g2 step 0
         g1 raised exit(vanished) (from g2)
         g1 step 1
         g1 keeps itself (already held: false)
         g1 step 2
         g1 sees g1 active, parent g2
         g1 step 3
         main got 11 (from g1)
         main step 2
         main sees g1 active, parent g2
         main step 3
         g1 got 3 (from main)
         g1 returns 1001
         g2: drop of g1 returned
         g2 step 1
         g2 sees g1 dead, parent main
         g2 step 2
         g2 returns 20
         main got 20 (from g2)
         program end
         at the end g1 is dead, parent main
         at the end g2 is dead, parent main
         main: drop of g1 returned
         main: drop of g2 returned",
    );
}

// Rule 37: a victim that catches the exit and switches away without a handle to itself is
// never resumed; the drop returns when something switches back to the dropper.
#[test]
fn victim_switching_away_is_never_resumed() {
    let program = regression("victim_switching_away_is_leaked");
    assert_trace(
        &program.to_string(),
        "main step 0
         g2 started with 0 (from main)
         g2 step 0
         g1 started with 400 (from g2)
         g1 returns 1001
         main got 1001 (from g1)
         program end
         at the end g1 is dead, parent main
         at the end g2 is active, parent g1
         main: drop of g1 returned
         g2 raised exit(vanished) (from main)
         g2 step 1
         main: drop of g2 returned",
    );
    assert_eq!(reference::run(&program).tally.leaked, 1);
}

// Rule 43: a greenlet that dropped its last handle and switches is killed by the receiver
// before the receiver's switch returns, and the value still arrives.
#[test]
fn abandoned_greenlet_is_killed_when_it_switches_and_its_value_arrives() {
    let program = regression("abandoned_sender_is_killed_and_its_value_delivered");
    assert_trace(
        &program.to_string(),
        "main step 0
         g2 started with 0 (from main)
         g2 returns stray:1002
         g1 started with stray:1002 (from g2)
         g1 step 0
         g1: set-parent g2 main -> Ok(())
         g1 step 1
         g1: drop of g1 returned
         g1 step 2
         g1 raised exit(vanished) (from g1)
         g1 unwinds with exit(vanished)
         main got 304 (from g1)
         program end
         at the end g2 is dead, parent main
         main: drop of g2 returned",
    );
    assert_eq!(reference::run(&program).tally.abandoned_senders, 1);
}

// Rules 45, 48 and 49: cycles and main's parent are refused and change nothing; a running
// greenlet reparents itself, and its result starts its new (unstarted) parent.
#[test]
fn parent_errors_and_reparenting_while_running() {
    assert_trace(
        "main: set-parent g1 g2; set-parent main g1; set-parent g1 g1; switch g1 1; inspect g1
         g1 < main (u32 -> u32): set-parent g1 g2; set-parent g1 g3; return 10
         g2 < g1 (u32 -> u32):
         g3 < main (u32 -> u32): return 30",
        "main step 0
         main: set-parent g1 g2 -> Err(Cyclic)
         main step 1
         main: set-parent main g1 -> Err(Main)
         main step 2
         main: set-parent g1 g1 -> Err(Cyclic)
         main step 3
         g1 started with 1 (from main)
         g1 step 0
         g1: set-parent g1 g2 -> Err(Cyclic)
         g1 step 1
         g1: set-parent g1 g3 -> Ok(())
         g1 step 2
         g1 returns 10
         g3 started with 10 (from g1)
         g3 step 0
         g3 returns 30
         main got 30 (from g3)
         main step 4
         main sees g1 dead, parent g3
         program end
         at the end g1 is dead, parent g3
         at the end g2 is unstarted, parent g1
         at the end g3 is dead, parent main
         main: drop of g1 returned
         main: drop of g2 returned
         main: drop of g3 returned",
    );
}

// The programs of `tests/model/regressions.txt`, one test each.
macro_rules! regression_tests {
    ($($name:ident)*) => {$(
        #[test]
        fn $name() {
            assert_agrees(&regression(stringify!($name)));
        }
    )*};
}

regression_tests! {
    abandoned_sender_is_killed_and_its_value_delivered
    victim_switching_away_is_leaked
    old_parent_killed_inside_set_parent
    killer_and_victim_strand_each_other
    victims_panic_is_discarded_by_the_drop
    killer_of_a_killer_is_resumed_only_when_switched_back
    old_parent_killed_inside_set_parent_reads_the_new_parent
    parent_released_at_the_end_of_a_kill_reads_the_restored_parent
}

// Fixed seeds whose programs (as the generator makes them now) take a rare path of the model.
// Each test first checks that its program still takes that path (a changed generator makes
// these fail: pick new seeds then), then that the crate agrees.
macro_rules! seed_tests {
    ($($name:ident: $seed:literal, $takes_path:expr;)*) => {$(
        #[test]
        fn $name() {
            let program = generate($seed);
            let takes_path: fn(&reference::Run) -> bool = $takes_path;
            assert!(takes_path(&reference::run(&program)), "{program}");
            assert_agrees(&program);
        }
    )*};
}

seed_tests! {
    seed_with_an_abandoned_sender: 0x3cbd_5287_748a_8535, |run| run.tally.abandoned_senders > 0;
    seed_with_a_leaked_victim: 0x0915_ed47_88bd_6e7f, |run| run.tally.leaked > 0;
    seed_with_a_kill_inside_set_parent: 0x0915_ed47_88bd_6e7f,
        |run| run.tally.kills_replacing_parent > 0;
    seed_with_a_parent_read_while_set_parent_releases: 0xe5fc_6743_f61a_efbc,
        |run| run.tally.reads_while_set_parent_releases > 0;
    seed_with_greenlets_holding_each_other: 0xed58_0d45_d70f_a42d,
        |run| run.stranded > 0 && run.tally.leaked == 0;
    seed_with_a_panic_discarded_by_a_drop: 0x6965_3c71_23d4_e56f,
        |run| run.tally.discarded_panics > 0;
}

#[test]
fn every_regression_program_has_a_test() {
    let names: Vec<String> = model::regressions()
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    assert_eq!(
        names,
        [
            "abandoned_sender_is_killed_and_its_value_delivered",
            "victim_switching_away_is_leaked",
            "old_parent_killed_inside_set_parent",
            "killer_and_victim_strand_each_other",
            "victims_panic_is_discarded_by_the_drop",
            "killer_of_a_killer_is_resumed_only_when_switched_back",
            "old_parent_killed_inside_set_parent_reads_the_new_parent",
            "parent_released_at_the_end_of_a_kill_reads_the_restored_parent",
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// Replacing a parent releases the old one after storing the new one

// The two regression programs read a parent while its replacement releases the old one, one at
// each place the crate replaces a parent: they test what they are meant to.
#[test]
fn parent_replacement_regressions_read_the_parent_during_the_release() {
    let tally = |name: &str| reference::run(&regression(name)).tally;
    let in_set_parent = tally("old_parent_killed_inside_set_parent_reads_the_new_parent");
    assert_eq!(in_set_parent.reads_while_set_parent_releases, 1);
    assert_eq!(in_set_parent.reads_while_kill_end_releases, 0);
    let at_kill_end = tally("parent_released_at_the_end_of_a_kill_reads_the_restored_parent");
    assert_eq!(at_kill_end.reads_while_set_parent_releases, 0);
    assert_eq!(at_kill_end.reads_while_kill_end_releases, 1);
}

/// An old parent suspended with no handle left but its child's parent link; `read_child` runs in
/// it once it has caught the GreenletExit of the kill that `set_parent` causes.
fn kill_old_parent_in_set_parent(read_child: impl FnOnce(&Greenlet) + 'static) -> Greenlet {
    let main = getcurrent();
    let child_slot: Rc<RefCell<Option<Greenlet>>> = Rc::default();
    let child_in = Rc::clone(&child_slot);
    let to_main = main.clone();
    let old_parent = Greenlet::new(move |()| {
        let caught = catch_unwind(AssertUnwindSafe(|| to_main.switch::<(), ()>(())));
        assert!(caught.is_err(), "killed");
        let child = child_in.borrow_mut().take().expect("the child");
        read_child(&child);
    });
    old_parent.switch::<(), ()>(()).unwrap();
    let child = Greenlet::builder()
        .parent(&old_parent)
        .build(|number: u32| number)
        .unwrap();
    *child_slot.borrow_mut() = Some(child.clone());
    // The child's parent link is now the old parent's only reference but its own.
    drop(old_parent);
    child.set_parent(&main).unwrap();
    child
}

// Rule 45 and Python's setter: `g.parent = p` stores p, then releases the old parent; a kill
// that release causes sees the new parent (rather than a "RefCell already mutably borrowed"
// panic, which the kill would report on stderr and swallow).
#[test]
fn old_parent_killed_by_set_parent_can_read_the_childs_new_parent() {
    let seen: Rc<RefCell<Option<Result<bool, String>>>> = Rc::default();
    let seen_in = Rc::clone(&seen);
    let child = kill_old_parent_in_set_parent(move |child| {
        let read = catch_unwind(AssertUnwindSafe(|| child.parent().map(|p| p.is_main())));
        *seen_in.borrow_mut() = Some(read.map(|is_main| is_main == Some(true)).map_err(|panic| {
            panic
                .downcast_ref::<&str>()
                .map(|text| text.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default()
        }));
    });
    assert_eq!(child.parent(), Some(getcurrent()));
    assert_eq!(*seen.borrow(), Some(Ok(true)), "what the old parent saw");
}

// The same, where a borrowed parent link would abort the process: the killed old parent starts
// the child, whose run ends (reading its parent where no panic can unwind) during the release.
// In a child process, so that an abort fails this test only.
#[test]
fn child_finishing_while_set_parent_kills_its_old_parent_does_not_abort() {
    const TEST: &str = "child_finishing_while_set_parent_kills_its_old_parent_does_not_abort";
    if is_child("finish-while-borrowed") {
        let child = kill_old_parent_in_set_parent(|child| {
            // The child starts and returns: its result goes to its new parent, main.
            let _ = catch_unwind(AssertUnwindSafe(|| child.switch::<u32, u32>(5)));
        });
        assert!(child.is_dead());
        println!("CHILD-OK");
        return;
    }
    let output = run_child(TEST, "finish-while-borrowed");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("CHILD-OK"),
        "the child process ended with {:?} (signal {:?}):\n{}",
        output.status,
        terminating_signal(&output),
        String::from_utf8_lossy(&output.stderr)
    );
}

// ---------------------------------------------------------------------------------------------
// The tools themselves

#[test]
fn program_text_round_trips() {
    for index in 0..500 {
        let program = generate(program_seed(DEFAULT_SEED, index));
        let text = program.to_string();
        let parsed = Program::parse(&text).unwrap_or_else(|error| panic!("{error}:\n{text}"));
        assert_eq!(parsed, program, "{text}");
    }
}

#[test]
fn program_text_errors_say_what_is_wrong() {
    let error = |text: &str| Program::parse(text).expect_err(text).to_string();
    assert_eq!(error("main: jump g1"), "not a step: \"jump\"");
    assert_eq!(
        error("main: switch g2 1\ng1 < main (u32 -> u32):"),
        "switch g2 1 names a greenlet not in the program"
    );
    assert_eq!(
        error("main:\ng1 < g1 (u32 -> u32):"),
        "g1's parent comes after it"
    );
    assert_eq!(
        error("main:\ng2 < main (u32 -> u32):"),
        "expected g1 first in \"g2 < main (u32 -> u32):\""
    );
    assert_eq!(error("main: switch g1 x"), "not a number: \"x\"");
    assert_eq!(
        error("main: kill main catch-some"),
        "not a catch: \"catch-some\""
    );
}

#[test]
fn generation_depends_on_the_seed_alone() {
    let seeds = [0, 1, DEFAULT_SEED, u64::MAX];
    for seed in seeds {
        assert_eq!(generate(seed), generate(seed));
        assert_eq!(
            reference::run(&generate(seed)).events,
            reference::run(&generate(seed)).events
        );
    }
    assert_ne!(generate(1), generate(2));
    let mut random = SplitMix64::new(7);
    let draws: Vec<usize> = (0..1000).map(|_| random.below(12)).collect();
    assert!((0..12).all(|value| draws.contains(&value)));
    assert!(draws.iter().all(|&value| value < 12));
}
