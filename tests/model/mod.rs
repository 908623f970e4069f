//! A differential check of the greenlet layer against a reference model.
//!
//! - [`program`]: programs as data (what each greenlet does, step by step) and the events a run
//!   produces, with a text form for reports and regression tests;
//! - [`reference`]: the model, a plain state machine of Python greenlet's rules;
//! - [`interpreter`]: the same program run on the real crate;
//! - [`random`]: the seeded generator;
//! - [`generator`]: seeded random programs over trees of up to 12 greenlets;
//! - [`shrink`]: the smallest program that still disagrees, for the report;
//! - `regressions.txt`: programs kept as regression tests ([`regressions`]).
//!
//! [`check`] runs one program both ways and compares the traces; [`check_many`] runs many
//! random ones and, on the first disagreement, shrinks it and returns a report with the seed,
//! the program, both traces and the first event that differs.

pub(crate) mod generator;
pub(crate) mod interpreter;
pub(crate) mod program;
pub(crate) mod random;
pub(crate) mod reference;
pub(crate) mod shrink;

use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::Mutex;

use program::{Event, Program};

/// Environment variable: how many random programs [`check_many`] runs.
pub(crate) const PROGRAMS_VARIABLE: &str = "AWAITLET_MODEL_PROGRAMS";
/// Environment variable: the base seed of the random programs (decimal or `0x` hex).
pub(crate) const SEED_VARIABLE: &str = "AWAITLET_MODEL_SEED";

/// Greenlet records a run of many programs may leave behind (the crate keeps them, and their
/// stacks, for good: leaked on purpose, rule 37, or held by suspended greenlets that nothing
/// else reaches). Each stack costs a page or so of memory but two memory mappings, of which a
/// Linux process has 65,530 by default; programs that would go past this many are checked on
/// the model only. 20,000 random programs leave about 3,500.
pub(crate) const LEAK_BUDGET: usize = 15_000;

/// How one program fared.
#[derive(Debug)]
pub(crate) enum Verdict {
    /// The crate produced the model's trace.
    Agree {
        /// The trace.
        events: Vec<Event>,
        /// Greenlets the run left alive for good.
        leaked: usize,
        /// The model's less common paths the run went through.
        tally: reference::Tally,
    },
    /// Not run on the crate: it would leave more greenlets alive than the budget allows.
    OverBudget,
    /// The traces differ.
    Disagree {
        /// The model's trace.
        expected: Vec<Event>,
        /// The crate's trace.
        actual: Vec<Event>,
    },
    /// The model itself failed (a bug in the model): the text says how.
    ModelFailed(String),
}

/// What [`check`] may do with a program.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    /// How many more greenlets may be leaked.
    pub(crate) leak_allowance: usize,
}

impl Limits {
    /// The whole leak budget.
    pub(crate) fn new() -> Limits {
        Limits {
            leak_allowance: LEAK_BUDGET,
        }
    }
}

/// Runs `program` on the model, then (unless the model rules it out) on the crate, and
/// compares. Must run outside any greenlet, inside [`quietly`].
pub(crate) fn check(program: &Program, limits: Limits) -> Verdict {
    let model = match catch_unwind(AssertUnwindSafe(|| reference::run(program))) {
        Ok(model) => model,
        Err(panic) => {
            let text = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|text| text.to_string()))
                .unwrap_or_default();
            return Verdict::ModelFailed(text);
        }
    };
    let leaked = model.stranded;
    if leaked > limits.leak_allowance {
        return Verdict::OverBudget;
    }
    let actual = interpreter::run(program);
    if actual == model.events {
        Verdict::Agree {
            events: actual,
            leaked,
            tally: model.tally,
        }
    } else {
        Verdict::Disagree {
            expected: model.events,
            actual,
        }
    }
}

/// Serialises the tests that replace the panic hook.
static PANIC_HOOK: Mutex<()> = Mutex::new(());

/// Runs `f` with a panic hook that prints nothing (programs panic on purpose, often), then puts
/// the previous hook back. Callers are serialised, since the hook is global.
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

/// Counts from [`check_many`].
#[derive(Debug, Default, Clone)]
pub(crate) struct Summary {
    /// Programs the crate and the model agreed on.
    pub(crate) agreed: u64,
    /// Programs not run on the crate because of the leak budget.
    pub(crate) over_budget: u64,
    /// Greenlets left alive for good by the programs that ran.
    pub(crate) leaked: usize,
    /// Events compared, over all programs that agreed.
    pub(crate) events: usize,
    /// The model's less common paths, over all programs that agreed.
    pub(crate) tally: reference::Tally,
    /// Events of each kind, over all programs that agreed.
    pub(crate) coverage: Coverage,
}

/// How often a trace shows each kind of thing worth seeing.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Coverage {
    /// Values received.
    pub(crate) values: usize,
    /// `kill()` returning `Ok`.
    pub(crate) kills_done: usize,
    /// `SwitchError::Exited`.
    pub(crate) exited: usize,
    /// `SwitchError::WrongType` carrying a stray value.
    pub(crate) wrong_type_values: usize,
    /// `SwitchError::WrongType` carrying a `GreenletExit` (or a `u32`, for a kill).
    pub(crate) wrong_type_others: usize,
    /// Booms raised at a step.
    pub(crate) booms: usize,
    /// `GreenletExit`s raised at a step, from kill on drop.
    pub(crate) vanished: usize,
    /// Other `GreenletExit`s raised at a step.
    pub(crate) exits: usize,
    /// Panics leaving a greenlet's run after a step.
    pub(crate) unwinds: usize,
    /// Greenlets started.
    pub(crate) starts: usize,
    /// Greenlets started with a stray value.
    pub(crate) stray_starts: usize,
    /// `set_parent` succeeding.
    pub(crate) parents_set: usize,
    /// `ParentError::Cyclic`.
    pub(crate) cyclic: usize,
    /// `ParentError::Main`.
    pub(crate) main_refused: usize,
    /// `keep-self` steps that put a handle back.
    pub(crate) kept: usize,
    /// Main's steps ended by a panic.
    pub(crate) main_unwound: usize,
}

impl Coverage {
    /// Counts `events` in.
    pub(crate) fn add(&mut self, events: &[Event]) {
        use program::{Datum, ExitReason, Outcome, PanicPayload, Value};
        for event in events {
            match event {
                Event::Received { outcome, .. } => match outcome {
                    Outcome::Value(_) => self.values += 1,
                    Outcome::KillDone => self.kills_done += 1,
                    Outcome::Exited(_) => self.exited += 1,
                    Outcome::WrongType(Datum::Value(Value::Stray(_))) => {
                        self.wrong_type_values += 1
                    }
                    Outcome::WrongType(_) => self.wrong_type_others += 1,
                    Outcome::Panic(PanicPayload::Boom(_)) => self.booms += 1,
                    Outcome::Panic(PanicPayload::Exit(ExitReason::Vanished)) => self.vanished += 1,
                    Outcome::Panic(PanicPayload::Exit(_)) => self.exits += 1,
                    Outcome::Panic(PanicPayload::Other(_)) | Outcome::Unknown(_) => {}
                },
                Event::Started { argument, .. } => {
                    self.starts += 1;
                    if let Value::Stray(_) = argument {
                        self.stray_starts += 1;
                    }
                }
                Event::ParentSet { result, .. } => match result {
                    Ok(()) => self.parents_set += 1,
                    Err(program::Refusal::Cyclic) => self.cyclic += 1,
                    Err(program::Refusal::Main) => self.main_refused += 1,
                    Err(program::Refusal::Other(_)) => {}
                },
                Event::KeptSelf { already: false, .. } => self.kept += 1,
                Event::Unwinding { .. } => self.unwinds += 1,
                Event::MainUnwound { .. } => self.main_unwound += 1,
                _ => {}
            }
        }
    }
}

/// The random programs a run covers: how many, from which base seed.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Plan {
    /// How many programs.
    pub(crate) programs: u64,
    /// Their base seed (see [`generator::program_seed`]).
    pub(crate) base_seed: u64,
}

impl Plan {
    /// From [`PROGRAMS_VARIABLE`] and [`SEED_VARIABLE`], with these defaults.
    pub(crate) fn from_env(default_programs: u64, default_seed: u64) -> Plan {
        let read = |variable: &str, default: u64| match std::env::var(variable) {
            Ok(text) => {
                parse_number(&text).unwrap_or_else(|| panic!("{variable}={text:?} is not a number"))
            }
            Err(_) => default,
        };
        Plan {
            programs: read(PROGRAMS_VARIABLE, default_programs),
            base_seed: read(SEED_VARIABLE, default_seed),
        }
    }
}

fn parse_number(text: &str) -> Option<u64> {
    let text = text.trim().replace('_', "");
    match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}

/// Checks the programs of `plan`. On the first disagreement (or model failure), shrinks the
/// program and returns the report as the error.
pub(crate) fn check_many(plan: Plan) -> Result<Summary, String> {
    let mut summary = Summary::default();
    let mut limits = Limits::new();
    for index in 0..plan.programs {
        let seed = generator::program_seed(plan.base_seed, index);
        let program = generator::generate(seed);
        match check(&program, limits) {
            Verdict::Agree {
                events,
                leaked,
                tally,
            } => {
                summary.agreed += 1;
                summary.events += events.len();
                summary.coverage.add(&events);
                summary.tally += tally;
                summary.leaked += leaked;
                limits.leak_allowance -= leaked;
            }
            Verdict::OverBudget => summary.over_budget += 1,
            failed => return Err(report(Some(seed), &program, failed, limits)),
        }
    }
    Ok(summary)
}

/// The programs of `regressions.txt`: (name, program) in file order.
pub(crate) fn regressions() -> Vec<(String, Program)> {
    let text = include_str!("regressions.txt");
    let mut entries = Vec::new();
    for block in text.split("\n\n") {
        let mut name = None;
        let mut body = String::new();
        for line in block.lines() {
            match line.strip_prefix("# ") {
                Some(comment) => {
                    if name.is_none()
                        && let Some((entry_name, _)) = comment.split_once(':')
                        && !entry_name.contains(' ')
                    {
                        name = Some(entry_name.to_string());
                    }
                }
                None => {
                    body.push_str(line);
                    body.push('\n');
                }
            }
        }
        if let Some(name) = name {
            let program =
                Program::parse(&body).unwrap_or_else(|error| panic!("regression {name}: {error}"));
            entries.push((name, program));
        }
    }
    entries
}

/// The program called `name` in `regressions.txt`.
pub(crate) fn regression(name: &str) -> Program {
    regressions()
        .into_iter()
        .find(|(entry, _)| entry == name)
        .unwrap_or_else(|| panic!("no regression called {name}"))
        .1
}

/// The failure report for `program` (from `seed`, if it was generated), shrunk first.
pub(crate) fn report(
    seed: Option<u64>,
    program: &Program,
    verdict: Verdict,
    limits: Limits,
) -> String {
    let same_failure = |candidate: &Program| {
        let verdict = check(candidate, limits);
        matches!(verdict, Verdict::Disagree { .. } | Verdict::ModelFailed(_))
    };
    let smallest = shrink::shrink(program, same_failure);
    let shrunk_verdict = check(&smallest, limits);
    let verdict = match shrunk_verdict {
        Verdict::Disagree { .. } | Verdict::ModelFailed(_) => shrunk_verdict,
        _ => verdict,
    };
    let origin = match seed {
        Some(seed) => format!("seed {seed:#018x}"),
        None => "a fixed program".to_string(),
    };
    let mut text = format!(
        "{origin}: the crate and the model disagree\n\nthe program:\n{program}\n\
         smallest program that still disagrees:\n{smallest}\n"
    );
    match verdict {
        Verdict::Disagree { expected, actual } => {
            let first = shrink::first_difference(&expected, &actual).unwrap_or(0);
            let show = |events: &[Event]| {
                events
                    .get(first)
                    .map_or_else(|| "(nothing)".to_string(), Event::to_string)
            };
            text.push_str(&format!(
                "first difference at event {first}: model says `{}`, crate says `{}`\n\n\
                 model trace | crate trace:\n{}",
                show(&expected),
                show(&actual),
                shrink::describe_traces(&expected, &actual)
            ));
        }
        Verdict::ModelFailed(why) => text.push_str(&format!("the model failed: {why}\n")),
        other => text.push_str(&format!("{other:?}\n")),
    }
    text
}
