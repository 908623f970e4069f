//! Random bridge programs attacking soundness from safe code (`tests/bridge_model/`).
//!
//! The programs mix `async_def`s whose functions borrow data from scopes that end at random
//! points, polls by hand and from inside other functions, drops (cancellations) and
//! `mem::forget`s of `AsyncDef`s and of the functions polling or dropping them, greenlet
//! handles stashed with `getcurrent()` and switched, thrown or killed into from main and from
//! other functions, caught `Cancelled`s, panics, and destructors that panic or wait while
//! unwinding. The oracle is the bridge's first soundness rule: a function runs only while what
//! it borrows is alive. Every datum carries a liveness flag that outlives everything, and
//! function code checks it each time it runs; the first violation fails the test with the
//! seed, the shrunk program and the violation. A panic escaping the program's own code (which
//! catches every operation) fails it too, and so does an abort, by killing the test binary:
//! `AWAITLET_BRIDGE_MODEL_VERBOSE=1` prints each seed before its program runs, to find it.
//!
//! The programs never do the two things the bridge documents as aborting the process
//! (`greenlet::driven`'s "Misuse that the protocol refuses"): no function drops its own
//! `AsyncDef` (slots are locked while in use, and a function reaches only another slot), and no
//! switch happens inside a future's `poll` (the awaited futures run no program code, and nested
//! `AsyncDef`s are polled by hand, never awaited).
//!
//! - `random_bridge_programs_never_resume_a_function_after_its_data_died` runs
//!   `AWAITLET_BRIDGE_MODEL_PROGRAMS` programs (2,000 by default; `AWAITLET_BRIDGE_MODEL_SEED`
//!   changes the base seed); CI runs many more in release, and a few hundred under
//!   AddressSanitizer and Valgrind. `AWAITLET_BRIDGE_MODEL_REPLAY=<seed>` runs one program.
//!   Leaked `AsyncDef`s keep their stacks' memory mappings for good, so a run stops early once
//!   the process nears the default limit; about 7,000 programs fit in one run.
//! - Hand-written programs of two known shapes check that the generator's language reaches
//!   them and that the oracle sees them.

#[path = "bridge_model/mod.rs"]
mod checker;
mod common;

use checker::interpreter::{Outcome, run};
use checker::program::{Action, Ending, Inner, Operation, Program, Resumption, Scope, Wait};
use checker::{Plan, announced, check_many, check_seed, quietly, report};

/// The base seed of the random programs unless `AWAITLET_BRIDGE_MODEL_SEED` says otherwise.
const DEFAULT_SEED: u64 = 0x0b1d_9e5e_ed0f_a11e;

/// Environment variable: the seed of one program to run alone.
const REPLAY_VARIABLE: &str = "AWAITLET_BRIDGE_MODEL_REPLAY";

#[test]
fn random_bridge_programs_never_resume_a_function_after_its_data_died() {
    if let Ok(seed) = std::env::var(REPLAY_VARIABLE) {
        let seed = seed.trim().trim_start_matches("0x");
        let seed = u64::from_str_radix(seed, 16).expect("the replay seed is hexadecimal");
        quietly(|| check_seed(seed)).unwrap_or_else(|report| panic!("{report}"));
        return;
    }
    let plan = Plan::from_env(2000, DEFAULT_SEED);
    let started = std::time::Instant::now();
    let summary = quietly(|| check_many(plan)).unwrap_or_else(|report| panic!("{report}"));
    eprintln!(
        "{plan:?}: {} programs ran clean, leaking {} AsyncDefs on purpose, in {:?}; {} not run \
         (the leaks reached the mapping budget)",
        summary.clean,
        summary.forgotten,
        started.elapsed(),
        summary.over_budget
    );
    assert_eq!(summary.clean + summary.over_budget, plan.programs);
    assert!(
        summary.clean >= plan.programs.min(5000),
        "the leak budget cut the run short: ask for fewer programs"
    );
}

/// Runs a hand-written program; it must not fail.
fn check_program(program: Program) {
    let outcome = quietly(|| announced(&program));
    if outcome.failed() {
        panic!("{}", quietly(|| report(None, &program, &outcome)));
    }
}

/// A scope with datum `datum` whose slots all end with `ending` except `slot`, which ends with
/// `special`.
fn scope(datum: usize, operations: Vec<Operation>, slot: usize, special: Ending) -> Scope {
    let mut endings = [Ending::Drop; 3];
    endings[slot] = special;
    Scope {
        datum,
        operations,
        endings,
    }
}

/// `outer` polls `function` by hand, from inside its own function; `function` borrows the
/// inner scope's datum, stashes its greenlet, then does `script`. Main polls `outer` (which
/// may panic), the inner scope ends leaking `outer`, and main switches into the stashed
/// greenlet.
fn leaked_poller_program(script: Vec<Action>, outer: Vec<Action>) -> Program {
    let mut function = vec![Action::Stash];
    function.extend(script);
    let inner_scope = scope(
        1,
        vec![
            Operation::Create {
                function: 0,
                slot: 0,
                borrows: 0,
                inner: None,
                script: function,
            },
            Operation::Create {
                function: 1,
                slot: 1,
                borrows: 0,
                inner: Some(Inner {
                    slot: 0,
                    owned: true,
                }),
                script: outer,
            },
            Operation::Poll { slot: 1 },
        ],
        1,
        Ending::Forget,
    );
    Program {
        root: scope(
            0,
            vec![
                Operation::Scope(inner_scope),
                Operation::Resume {
                    stashed: 0,
                    resumption: Resumption::Switch,
                },
            ],
            0,
            Ending::Drop,
        ),
    }
}

// A function polled by hand from another function switches to main, whose poll of the outer
// one panics; the outer `AsyncDef` is leaked and the data freed. The function's greenlet, still
// named by the stashed handle, must not run again.
#[test]
fn a_function_polled_by_a_leaked_async_def_never_runs_after_its_data_died() {
    check_program(leaked_poller_program(
        vec![Action::SwitchToMain { catch: false }],
        vec![Action::PollInner],
    ));
}

// The same through a frozen cancellation: the outer function drops the inner `AsyncDef`, whose
// function catches `Cancelled` and switches to main.
#[test]
fn a_function_cancelled_by_a_leaked_async_def_never_runs_after_its_data_died() {
    check_program(leaked_poller_program(
        vec![
            Action::Await {
                wait: Wait::PendingForever,
                catch: true,
            },
            Action::SwitchToMain { catch: false },
        ],
        vec![Action::PollInner, Action::DropInner],
    ));
}

// The oracle itself: a program whose functions all finish before their data is dropped runs
// clean, and the runs are deterministic.
#[test]
fn a_program_that_leaks_nothing_runs_clean() {
    let program = leaked_poller_program(
        vec![Action::Await {
            wait: Wait::Ready,
            catch: false,
        }],
        vec![Action::PollInner],
    );
    let outcome = quietly(|| run(&program));
    assert!(matches!(outcome, Outcome::Clean { .. }), "{outcome:?}");
}
