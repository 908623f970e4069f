//! Random bridge programs against a liveness oracle: the attack, from safe code, on the
//! bridge's first soundness rule, that a function is resumed only while what it borrows is
//! alive, whatever is leaked on the way.
//!
//! - [`program`]: programs as data (scopes holding a borrowed datum and slots of `AsyncDef`s,
//!   functions as scripts of steps), with a text form for reports;
//! - [`generator`]: seeded random programs;
//! - [`interpreter`]: runs one on the crate, each on a thread of its own, while the oracle
//!   records the first time a function runs after its datum was dropped;
//! - [`shrink`]: the smallest program that still fails, for the report.
//!
//! The oracle needs no sanitizer: the liveness flags outlive everything, and a violation is
//! recorded instead of reading freed memory. Under AddressSanitizer or Valgrind, the same
//! runs also catch any other bad access the programs provoke.

pub(crate) mod generator;
pub(crate) mod interpreter;
pub(crate) mod program;
#[path = "../model/random.rs"]
pub(crate) mod random;
pub(crate) mod shrink;

use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::Mutex;
use std::sync::atomic::Ordering;

use interpreter::Outcome;
use program::Program;

/// Environment variable: how many random programs [`check_many`] runs.
pub(crate) const PROGRAMS_VARIABLE: &str = "AWAITLET_BRIDGE_MODEL_PROGRAMS";
/// Environment variable: the base seed of the random programs (decimal or `0x` hex).
pub(crate) const SEED_VARIABLE: &str = "AWAITLET_BRIDGE_MODEL_SEED";
/// Environment variable: when set, each program's seed is printed before it runs, so that a
/// program that aborts the process can be found.
pub(crate) const VERBOSE_VARIABLE: &str = "AWAITLET_BRIDGE_MODEL_VERBOSE";

/// Memory mappings the process may reach before [`check_many`] stops early. Every leaked
/// `AsyncDef` keeps its stack, two mappings or so, for good (the programs leak about one and a
/// half each), and a Linux process has 65,530 by default.
pub(crate) const MAPPING_BUDGET: usize = 40_000;

/// How many programs to run, from which base seed.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Plan {
    pub(crate) programs: u64,
    pub(crate) seed: u64,
}

impl Plan {
    /// The plan the environment asks for, with these defaults.
    pub(crate) fn from_env(programs: u64, seed: u64) -> Plan {
        let read = |name: &str| {
            std::env::var(name).ok().map(|text| {
                let text = text.trim().replace('_', "");
                let parsed = match text.strip_prefix("0x") {
                    Some(hex) => u64::from_str_radix(hex, 16),
                    None => text.parse(),
                };
                parsed.unwrap_or_else(|_| panic!("{name}={text} is not a number"))
            })
        };
        Plan {
            programs: read(PROGRAMS_VARIABLE).unwrap_or(programs),
            seed: read(SEED_VARIABLE).unwrap_or(seed),
        }
    }
}

/// Counts from [`check_many`].
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Summary {
    /// Programs that ran without a violation.
    pub(crate) clean: u64,
    /// `AsyncDef`s they leaked on purpose.
    pub(crate) forgotten: usize,
    /// Programs not run because the leaks reached [`MAPPING_BUDGET`].
    pub(crate) over_budget: u64,
}

/// The process's memory mappings, where Linux tells (0 elsewhere).
fn mappings() -> usize {
    std::fs::read_to_string("/proc/self/maps").map_or(0, |maps| maps.lines().count())
}

/// Serialises the tests that replace the process's panic hook.
static PANIC_HOOK: Mutex<()> = Mutex::new(());

/// Runs `f` with a panic hook that prints nothing (the library's refusals are panics, and
/// every one is caught), then restores the hook.
pub(crate) fn quietly<R>(f: impl FnOnce() -> R) -> R {
    let _guard = PANIC_HOOK
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let outcome = catch_unwind(AssertUnwindSafe(f));
    std::panic::set_hook(previous);
    outcome.unwrap_or_else(|panic| resume_unwind(panic))
}

/// The report of a failing program: what failed, the seed, the shrunk program.
pub(crate) fn report(seed: Option<u64>, program: &Program, outcome: &Outcome) -> String {
    let shrunk = shrink::shrink(program, |candidate| interpreter::run(candidate).failed());
    let failure = match interpreter::run(&shrunk) {
        Outcome::Violation(text) => format!("violation: {text}"),
        Outcome::Escaped(text) => format!("a panic escaped the program's own code: {text}"),
        Outcome::Clean { .. } => format!("(the shrunk program passes on a rerun) {outcome:?}"),
    };
    let seed = seed.map_or(String::new(), |seed| format!(" (seed {seed:#x})"));
    format!(
        "bridge program{seed} failed\n{failure}\n\nshrunk program:\n{shrunk}\n\
         first failure of the original program: {outcome:?}\n\noriginal program:\n{program}"
    )
}

/// Runs `program`, writing its first violation to stderr as it happens (in case the process
/// aborts before the report).
pub(crate) fn announced(program: &Program) -> Outcome {
    interpreter::ANNOUNCE.store(true, Ordering::Relaxed);
    let outcome = interpreter::run(program);
    interpreter::ANNOUNCE.store(false, Ordering::Relaxed);
    outcome
}

/// Runs `plan.programs` random programs; on the first failure, the report. Must run inside
/// [`quietly`].
pub(crate) fn check_many(plan: Plan) -> Result<Summary, String> {
    let verbose = std::env::var_os(VERBOSE_VARIABLE).is_some();
    let mut summary = Summary::default();
    for index in 0..plan.programs {
        if index % 100 == 0 && mappings() > MAPPING_BUDGET {
            summary.over_budget = plan.programs - index;
            break;
        }
        let seed = random::program_seed(plan.seed, index);
        if verbose {
            eprintln!("program {index}: seed {seed:#x}");
        }
        let program = generator::generate(seed);
        match announced(&program) {
            Outcome::Clean { forgotten } => {
                summary.clean += 1;
                summary.forgotten += forgotten;
            }
            failure => return Err(report(Some(seed), &program, &failure)),
        }
    }
    Ok(summary)
}

/// Runs one program by its seed (to replay a failure); the report if it fails.
pub(crate) fn check_seed(seed: u64) -> Result<(), String> {
    let program = generator::generate(seed);
    match announced(&program) {
        Outcome::Clean { .. } => Ok(()),
        failure => Err(report(Some(seed), &program, &failure)),
    }
}
