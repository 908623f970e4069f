//! Runs a bridge program on the crate, with the oracle watching every borrowed datum.
//!
//! Each datum has a liveness flag in a [`Registry`] leaked for the program (so it outlives
//! every greenlet, however leaked), cleared by the datum's `Drop`. Function code checks the
//! flag of the datum it borrows whenever it runs: at its start, after every step returns
//! (an `awaitlet`, a switch and a nested poll may all suspend it), and in its guards'
//! destructors. A cleared flag is a violation, recorded in the registry without touching the
//! datum; a set one reads the datum, so that a sanitizer sees the access too.
//!
//! Every operation of the program's own code runs inside `catch_unwind`: a panic from the
//! library is its refusal of a misuse, which is fine. Each program runs on a thread of its
//! own, so that its greenlets, and the stacks it leaks, go with the thread.

use std::cell::{Cell, RefCell};
use std::future::{pending, ready};
use std::io::Write;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::rc::Rc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use awaitlet::{AsyncDef, Greenlet, async_def, awaitlet, getcurrent, try_awaitlet};

use super::program::{Action, Ending, Guard, Operation, Program, Resumption, SLOTS, Scope, Wait};
use crate::common::{pending_then, poll_once};

/// Whether the first violation of a program is written to stderr at once (the first run of a
/// program, not the reruns of shrinking).
pub(crate) static ANNOUNCE: AtomicBool = AtomicBool::new(false);

/// How a program ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// No violation; `forgotten` `AsyncDef`s were leaked on purpose.
    Clean { forgotten: usize },
    /// A function ran after its borrowed datum was dropped: the first such run.
    Violation(String),
    /// A panic escaped the program's own code, which catches everything it does.
    Escaped(String),
}

impl Outcome {
    /// True for a failure (anything but `Clean`).
    pub(crate) fn failed(&self) -> bool {
        !matches!(self, Outcome::Clean { .. })
    }
}

/// The panic payload of the program's own panics.
struct ProgramPanic;

/// The liveness flags of a program's data, and the first violation. Atomics and a mutex, only
/// so that [`REGISTRIES`] can keep every one reachable (a leak checker then sees no leak).
struct Registry {
    alive: Vec<AtomicBool>,
    violation: Mutex<Option<String>>,
}

/// Every registry ever made: they are leaked, so that they outlive any leaked greenlet.
static REGISTRIES: Mutex<Vec<&'static Registry>> = Mutex::new(Vec::new());

/// The program's datum: a value on the frame of the code that runs its scope.
struct Datum {
    number: usize,
    text: String,
    registry: &'static Registry,
}

impl Drop for Datum {
    fn drop(&mut self) {
        self.registry.alive[self.number].store(false, Ordering::Relaxed);
    }
}

/// A function's borrow of a datum, with what the oracle needs to check it without reading it.
#[derive(Clone, Copy)]
struct Borrow<'d> {
    number: usize,
    datum: &'d Datum,
    registry: &'static Registry,
}

impl Borrow<'_> {
    /// Checks that the datum is alive as function `function` runs `at` a point of its code.
    fn check(&self, function: usize, at: &dyn Fn() -> String) {
        if self.registry.alive[self.number].load(Ordering::Relaxed) {
            std::hint::black_box(self.datum.text.len());
        } else {
            let mut violation = self
                .registry
                .violation
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if violation.is_none() {
                let text = format!(
                    "function f{function} resumed after its borrowed data was dropped: it ran {} \
                     after d{} was dropped",
                    at(),
                    self.number
                );
                if ANNOUNCE.load(Ordering::Relaxed) {
                    // Straight to the process's stderr, past the test harness's capture: the
                    // library may abort the process before the test can report.
                    let _ = writeln!(std::io::stderr(), "bridge model: {text}");
                }
                *violation = Some(text);
            }
        }
    }
}

/// A slot: shared with the functions that reach it.
type Place<'d> = Rc<RefCell<Option<AsyncDef<'d, ()>>>>;

/// What every function of a program shares: the thread's main greenlet and the stash.
struct Shared {
    main: Greenlet,
    stash: RefCell<Vec<Greenlet>>,
    registry: &'static Registry,
    forgotten: Cell<usize>,
}

impl Shared {
    fn stashed(&self, index: usize) -> Option<Greenlet> {
        let stash = self.stash.borrow();
        (!stash.is_empty()).then(|| stash[index % stash.len()].clone())
    }
}

/// Runs `f`, discarding any panic.
fn attempt(f: impl FnOnce()) {
    let _ = catch_unwind(AssertUnwindSafe(f));
}

/// Runs `program` on a thread of its own. The thread's panic hook should be quiet: the
/// library's refusals are panics.
pub(crate) fn run(program: &Program) -> Outcome {
    let program = program.clone();
    let joined = std::thread::Builder::new()
        .name("bridge program".into())
        .spawn(move || run_here(&program))
        .expect("spawn a program thread")
        .join();
    joined.unwrap_or_else(|panic| Outcome::Escaped(describe(&*panic)))
}

fn describe(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(text) = panic.downcast_ref::<&str>() {
        (*text).to_string()
    } else if let Some(text) = panic.downcast_ref::<String>() {
        text.clone()
    } else if panic.is::<ProgramPanic>() {
        "the program's own panic".to_string()
    } else {
        "a panic with a payload that is not text".to_string()
    }
}

fn run_here(program: &Program) -> Outcome {
    let data = data_count(&program.root);
    let registry: &'static Registry = Box::leak(Box::new(Registry {
        alive: (0..data).map(|_| AtomicBool::new(true)).collect(),
        violation: Mutex::new(None),
    }));
    REGISTRIES
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .push(registry);
    let shared = Rc::new(Shared {
        main: getcurrent(),
        stash: RefCell::new(Vec::new()),
        registry,
        forgotten: Cell::new(0),
    });
    if let Err(panic) = catch_unwind(AssertUnwindSafe(|| run_scope(&shared, &program.root, &[]))) {
        return Outcome::Escaped(describe(&*panic));
    }
    let forgotten = shared.forgotten.get();
    drop(shared);
    let violation = registry
        .violation
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .take();
    match violation {
        Some(violation) => Outcome::Violation(violation),
        None => Outcome::Clean { forgotten },
    }
}

/// One more than the largest datum number in `scope`.
fn data_count(scope: &Scope) -> usize {
    let inner = scope.operations.iter().map(|operation| match operation {
        Operation::Scope(inner) => data_count(inner),
        _ => 0,
    });
    inner.fold(scope.datum + 1, usize::max)
}

fn run_scope(shared: &Rc<Shared>, scope: &Scope, outer: &[Borrow<'_>]) {
    let datum = Datum {
        number: scope.datum,
        text: format!("datum {}", scope.datum),
        registry: shared.registry,
    };
    {
        let mut visible: Vec<Borrow<'_>> = outer.to_vec();
        visible.push(Borrow {
            number: datum.number,
            datum: &datum,
            registry: shared.registry,
        });
        let places: [Place<'_>; SLOTS] = Default::default();
        for operation in &scope.operations {
            run_operation(shared, operation, &places, &visible);
        }
        for (place, ending) in places.iter().zip(scope.endings) {
            let taken = place
                .try_borrow_mut()
                .ok()
                .and_then(|mut place| place.take());
            match ending {
                Ending::Drop => attempt(|| drop(taken)),
                Ending::Forget => forget(shared, taken),
            }
        }
        // A slot still busy (borrowed by a suspended function) is dropped with the last
        // reference to it, here or later.
        attempt(|| drop(places));
    }
    drop(datum);
}

fn forget(shared: &Shared, future: Option<AsyncDef<'_, ()>>) {
    if let Some(future) = future {
        shared.forgotten.set(shared.forgotten.get() + 1);
        std::mem::forget(future);
    }
}

fn run_operation<'d>(
    shared: &Rc<Shared>,
    operation: &Operation,
    places: &[Place<'d>; SLOTS],
    visible: &[Borrow<'d>],
) {
    match operation {
        Operation::Create {
            function,
            slot,
            borrows,
            inner,
            script,
        } => {
            let Ok(mut place) = places[slot % SLOTS].try_borrow_mut() else {
                return;
            };
            if place.is_some() {
                return;
            }
            let borrow = visible[visible.len() - 1 - borrows % visible.len()];
            let inner: Option<Place<'d>> = inner.map(|inner| {
                let source = &places[inner.slot % SLOTS];
                if inner.owned {
                    let taken = source
                        .try_borrow_mut()
                        .ok()
                        .and_then(|mut place| place.take());
                    Rc::new(RefCell::new(taken))
                } else {
                    source.clone()
                }
            });
            let (shared, function, script) = (shared.clone(), *function, script.clone());
            let created = catch_unwind(AssertUnwindSafe(|| {
                async_def(move || run_function(&shared, borrow, function, &script, inner))
            }));
            *place = created.ok();
        }
        Operation::Poll { slot } => {
            if let Ok(mut place) = places[slot % SLOTS].try_borrow_mut()
                && let Some(future) = place.as_mut()
            {
                attempt(|| {
                    let _ = poll_once(future);
                });
            }
        }
        Operation::Drop { slot } => {
            let taken = places[slot % SLOTS]
                .try_borrow_mut()
                .ok()
                .and_then(|mut place| place.take());
            attempt(|| drop(taken));
        }
        Operation::Forget { slot } => {
            let taken = places[slot % SLOTS]
                .try_borrow_mut()
                .ok()
                .and_then(|mut place| place.take());
            forget(shared, taken);
        }
        Operation::Resume {
            stashed,
            resumption,
        } => {
            if let Some(target) = shared.stashed(*stashed) {
                attempt(|| match resumption {
                    Resumption::Switch => {
                        let _ = target.switch::<(), ()>(());
                    }
                    Resumption::Throw => {
                        let _ = target.throw::<()>(ProgramPanic);
                    }
                    Resumption::Kill => {
                        let _ = target.kill();
                    }
                });
            }
        }
        Operation::Scope(scope) => run_scope(shared, scope, visible),
    }
}

/// `awaitlet` on the future `wait` names.
fn wait_for(wait: Wait) {
    match wait {
        Wait::Ready => awaitlet(ready(())),
        Wait::PendingOnce => awaitlet(pending_then(1, ())),
        Wait::PendingForever => awaitlet(pending::<()>()),
    }
}

/// `try_awaitlet` on the future `wait` names.
fn try_to_wait_for(wait: Wait) {
    let _ = match wait {
        Wait::Ready => try_awaitlet(ready(())),
        Wait::PendingOnce => try_awaitlet(pending_then(1, ())),
        Wait::PendingForever => try_awaitlet(pending::<()>()),
    };
}

/// Runs `f`, catching a panic if `catch` says so.
fn maybe_catching(catch: bool, f: impl FnOnce()) {
    if catch { attempt(f) } else { f() }
}

/// The body of every function: `script`, step by step, checking the borrowed datum each
/// time the function's code runs.
fn run_function(
    shared: &Shared,
    borrow: Borrow<'_>,
    function: usize,
    script: &[Action],
    inner: Option<Place<'_>>,
) {
    borrow.check(function, &|| "at its start".to_string());
    let mut guards: Vec<GuardValue<'_>> = Vec::new();
    for (index, action) in script.iter().enumerate() {
        match *action {
            Action::Await { wait, catch } => maybe_catching(catch, || wait_for(wait)),
            Action::Stash => shared.stash.borrow_mut().push(getcurrent()),
            Action::SwitchToMain { catch } => maybe_catching(catch, || {
                let _ = shared.main.switch::<(), ()>(());
            }),
            Action::SwitchToStashed { stashed, catch } => {
                if let Some(target) = shared.stashed(stashed) {
                    maybe_catching(catch, || {
                        let _ = target.switch::<(), ()>(());
                    });
                }
            }
            Action::PollInner => {
                if let Some(Ok(mut place)) = inner.as_ref().map(|inner| inner.try_borrow_mut())
                    && let Some(future) = place.as_mut()
                {
                    attempt(|| {
                        let _ = poll_once(future);
                    });
                }
            }
            Action::DropInner | Action::ForgetInner => {
                let taken = inner
                    .as_ref()
                    .and_then(|inner| inner.try_borrow_mut().ok())
                    .and_then(|mut place| place.take());
                if *action == Action::DropInner {
                    attempt(|| drop(taken));
                } else {
                    forget(shared, taken);
                }
            }
            Action::Panic { catch } => {
                maybe_catching(catch, || resume_unwind(Box::new(ProgramPanic)));
            }
            Action::Guard(guard) => guards.push(GuardValue {
                borrow,
                function,
                guard,
            }),
        }
        borrow.check(function, &|| format!("after its step {index} ({action})"));
    }
}

/// A value kept by a function, whose destructor is function code too.
struct GuardValue<'d> {
    borrow: Borrow<'d>,
    function: usize,
    guard: Guard,
}

impl Drop for GuardValue<'_> {
    fn drop(&mut self) {
        let (borrow, function) = (self.borrow, self.function);
        let at = |what: &'static str| move || format!("in a guard's destructor{what}");
        borrow.check(function, &at(""));
        match self.guard {
            Guard::Plain => {}
            Guard::Panics => {
                if !std::thread::panicking() {
                    resume_unwind(Box::new(ProgramPanic));
                }
            }
            Guard::Awaits(wait) => {
                attempt(|| wait_for(wait));
                borrow.check(function, &at(", after awaitlet"));
            }
            Guard::TriesToAwait(wait) => {
                attempt(|| try_to_wait_for(wait));
                borrow.check(function, &at(", after try_awaitlet"));
            }
        }
    }
}
