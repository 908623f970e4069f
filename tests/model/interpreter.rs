//! Runs a [`Program`] on the real crate and records the same kind of [`Event`]s as the model.
//!
//! The program's handles live in one table shared by every greenlet (main holds the first
//! one). A step that names a greenlet clones its handle out of the table for the duration of the
//! call, so no `RefCell` borrow is held while other greenlets run, and records what came back
//! before dropping that clone. Every call into the crate is wrapped in `catch_unwind`, so a
//! panic is recorded where it arrives and then either caught or raised again, as the step says.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::panic::{AssertUnwindSafe, catch_unwind, panic_any, resume_unwind};
use std::rc::Rc;

use awaitlet::{Greenlet, GreenletExit, ParentError, SwitchError, getcurrent};

use super::program::{
    Catch, Datum, Event, ExitReason, Kind, Life, Outcome, PanicPayload, Program, Refusal, Step,
    Thrown, Value, default_number, index_of, name,
};

/// The message of the `GreenletExit` thrown by kill on drop.
const VANISHED: &str = "Killing the greenlet because all references have vanished.";

/// The second value type: never what a switch asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stray(pub(crate) u32);

/// The panic payload of `panic` steps and of thrown booms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Boom(pub(crate) u32);

/// The state every greenlet of one run shares.
struct Shared {
    program: Program,
    table: RefCell<Vec<Option<Greenlet>>>,
    events: RefCell<Vec<Event>>,
    /// The greenlet whose code ran last.
    actor: Cell<usize>,
}

impl Shared {
    fn record(&self, event: Event) {
        self.events.borrow_mut().push(event);
    }

    /// A new handle to `index`, if the table still has one.
    fn handle(&self, index: usize) -> Option<Greenlet> {
        self.table.borrow()[index].clone()
    }

    /// Records the `from` of an event happening in `me`, and makes `me` the actor.
    fn take_actor(&self, me: usize) -> usize {
        self.actor.replace(me)
    }
}

/// How a step leaves its greenlet.
enum Flow {
    /// On to the next step.
    Continue,
    /// Return this value from the run.
    Return(u32),
    /// Raise this panic out of the run.
    Unwind(Box<dyn Any + Send>),
}

/// A type greenlets take as argument or return.
trait Carried: Sized + 'static {
    fn from_number(number: u32) -> Self;
    fn to_value(&self) -> Value;
}

impl Carried for u32 {
    fn from_number(number: u32) -> u32 {
        number
    }
    fn to_value(&self) -> Value {
        Value::U32(*self)
    }
}

impl Carried for Stray {
    fn from_number(number: u32) -> Stray {
        Stray(number)
    }
    fn to_value(&self) -> Value {
        Value::Stray(self.0)
    }
}

/// Runs `program` on the crate, on the calling thread (whose main greenlet is main), and returns
/// the events. Must not run inside a greenlet.
pub(crate) fn run(program: &Program) -> Vec<Event> {
    let count = program.greenlets.len();
    let shared = Rc::new(Shared {
        program: program.clone(),
        table: RefCell::new(Vec::with_capacity(count)),
        events: RefCell::new(Vec::new()),
        actor: Cell::new(0),
    });
    shared.table.borrow_mut().push(Some(getcurrent()));
    for index in 1..count {
        let greenlet = build(&shared, index);
        shared.table.borrow_mut().push(Some(greenlet));
    }
    // Main's steps catch every panic; one escaping the epilogue (which asks the crate for
    // states and drops handles) means the crate misbehaved: it goes into the trace.
    if let Err(panic) = catch_unwind(AssertUnwindSafe(|| run_main(&shared))) {
        shared.record(Event::Unexpected {
            greenlet: 0,
            payload: describe_panic(&*panic),
        });
        shared.table.borrow_mut().clear();
    }
    assert!(getcurrent().is_main(), "main runs again at the end");
    shared.events.take()
}

/// Makes greenlet `index` with the parent, types and name the program gives it.
fn build(shared: &Rc<Shared>, index: usize) -> Greenlet {
    let spec = &shared.program.greenlets[index];
    let mut builder = Greenlet::builder().name(name(index));
    if spec.parent != 0 {
        let parent = shared.handle(spec.parent).expect("parents are made first");
        builder = builder.parent(&parent);
    }
    let shared = Rc::clone(shared);
    let built = match (spec.argument, spec.result) {
        (Kind::U32, Kind::U32) => {
            builder.build(move |argument: u32| run_greenlet::<u32, u32>(shared, index, argument))
        }
        (Kind::U32, Kind::Stray) => {
            builder.build(move |argument: u32| run_greenlet::<u32, Stray>(shared, index, argument))
        }
        (Kind::Stray, Kind::U32) => builder
            .build(move |argument: Stray| run_greenlet::<Stray, u32>(shared, index, argument)),
        (Kind::Stray, Kind::Stray) => builder
            .build(move |argument: Stray| run_greenlet::<Stray, Stray>(shared, index, argument)),
    };
    built.expect("a stack for a greenlet")
}

/// A greenlet's run: its steps, then its result.
fn run_greenlet<A: Carried, B: Carried>(shared: Rc<Shared>, me: usize, argument: A) -> B {
    let from = shared.take_actor(me);
    shared.record(Event::Started {
        greenlet: me,
        from,
        argument: argument.to_value(),
    });
    let step_count = shared.program.greenlets[me].steps.len();
    for index in 0..step_count {
        match execute(&shared, me, index) {
            Flow::Continue => {}
            Flow::Return(number) => return B::from_number(number),
            Flow::Unwind(payload) => {
                shared.record(Event::Unwinding {
                    greenlet: me,
                    payload: describe_panic(&*payload),
                });
                drop(shared);
                resume_unwind(payload);
            }
        }
    }
    let result = B::from_number(default_number(me));
    shared.record(Event::Returning {
        greenlet: me,
        value: result.to_value(),
    });
    result
}

/// Main's steps, then the epilogue: record what is left, drop every handle in the table.
fn run_main(shared: &Rc<Shared>) {
    let step_count = shared.program.greenlets[0].steps.len();
    for index in 0..step_count {
        match execute(shared, 0, index) {
            Flow::Continue => {}
            Flow::Return(_) => break,
            Flow::Unwind(payload) => {
                shared.record(Event::MainUnwound {
                    payload: describe_panic(&*payload),
                });
                break;
            }
        }
    }
    shared.record(Event::ProgramEnd);
    let count = shared.program.greenlets.len();
    for target in 1..count {
        let state = shared.table.borrow()[target]
            .as_ref()
            .map(|greenlet| (life(greenlet), parent_index(greenlet)));
        if let Some((life, parent)) = state {
            shared.record(Event::Final {
                target,
                life,
                parent,
            });
        }
    }
    loop {
        shared.actor.set(0);
        let next = shared
            .table
            .borrow_mut()
            .iter_mut()
            .enumerate()
            .skip(1)
            .find_map(|(index, slot)| slot.take().map(|greenlet| (index, greenlet)));
        let Some((target, greenlet)) = next else {
            break;
        };
        drop(greenlet);
        shared.record(Event::Dropped {
            greenlet: 0,
            target,
        });
    }
    shared.table.borrow_mut().clear();
}

fn life(greenlet: &Greenlet) -> Life {
    match (
        greenlet.is_started(),
        greenlet.is_active(),
        greenlet.is_dead(),
    ) {
        (false, false, false) => Life::Unstarted,
        (true, true, false) => Life::Active,
        (true, false, true) => Life::Dead,
        flags => panic!("inconsistent flags (started, active, dead) = {flags:?}"),
    }
}

fn parent_index(greenlet: &Greenlet) -> Option<usize> {
    greenlet.parent().map(|parent| {
        let text = parent.name().expect("every greenlet of a program is named");
        index_of(text).expect("a program's greenlet")
    })
}

/// Runs step `index` of greenlet `me`.
fn execute(shared: &Rc<Shared>, me: usize, index: usize) -> Flow {
    let step = shared.program.greenlets[me].steps[index];
    shared.actor.set(me);
    shared.record(Event::Step {
        greenlet: me,
        index,
    });
    match step {
        Step::Switch { to, value, catch } => transfer_step(shared, me, to, catch, |target| {
            match value {
                Value::U32(number) => target.switch::<u32, u32>(number),
                Value::Stray(number) => target.switch::<Stray, u32>(Stray(number)),
            }
            .map(Received::Number)
        }),
        Step::Throw { to, payload, catch } => transfer_step(shared, me, to, catch, |target| {
            match payload {
                Thrown::Boom(number) => target.throw::<u32>(Boom(number)),
                Thrown::Exit(number) => target.throw::<u32>(GreenletExit {
                    message: format!("thrown {number}").into(),
                }),
            }
            .map(Received::Number)
        }),
        Step::Kill { to, catch } => transfer_step(shared, me, to, catch, |target| {
            target.kill().map(|()| Received::KillDone)
        }),
        Step::DropHandle { to } => guarded(shared, me, || {
            let taken = shared.table.borrow_mut()[to].take();
            match taken {
                None => shared.record(Event::Missing {
                    greenlet: me,
                    target: to,
                }),
                Some(greenlet) => {
                    drop(greenlet);
                    shared.record(Event::Dropped {
                        greenlet: me,
                        target: to,
                    });
                }
            }
        }),
        Step::SetParent { child, parent } => guarded(shared, me, || {
            let Some(child_handle) = present(shared, me, child) else {
                return;
            };
            let Some(parent_handle) = present(shared, me, parent) else {
                return;
            };
            let result = match child_handle.set_parent(&parent_handle) {
                Ok(()) => Ok(()),
                Err(ParentError::Cyclic) => Err(Refusal::Cyclic),
                Err(ParentError::Main) => Err(Refusal::Main),
                Err(other) => Err(Refusal::Other(format!("{other:?}"))),
            };
            shared.record(Event::ParentSet {
                greenlet: me,
                child,
                parent,
                result,
            });
            drop(child_handle);
            drop(parent_handle);
        }),
        Step::KeepSelf => guarded(shared, me, || {
            let current = getcurrent();
            let mut table = shared.table.borrow_mut();
            let already = table[me].is_some();
            if !already {
                table[me] = Some(current);
            } else {
                drop(table);
                drop(current);
            }
            shared.record(Event::KeptSelf {
                greenlet: me,
                already,
            });
        }),
        Step::Inspect { target } => guarded(shared, me, || {
            let seen = shared.table.borrow()[target]
                .as_ref()
                .map(|greenlet| (life(greenlet), parent_index(greenlet)));
            match seen {
                None => shared.record(Event::Missing {
                    greenlet: me,
                    target,
                }),
                Some((life, parent)) => shared.record(Event::Inspected {
                    greenlet: me,
                    target,
                    life,
                    parent,
                }),
            }
        }),
        Step::Return { value } => {
            let kind = if me == 0 {
                Kind::U32
            } else {
                shared.program.greenlets[me].result
            };
            shared.record(Event::Returning {
                greenlet: me,
                value: Value::of_kind(kind, value),
            });
            Flow::Return(value)
        }
        Step::Panic { value } => {
            shared.record(Event::Panicking {
                greenlet: me,
                value,
            });
            if me == 0 {
                // Main's panic ends its steps; raised and caught here, as the model says.
                let payload = catch_unwind(|| panic_any(Boom(value))).expect_err("a panic");
                Flow::Unwind(payload)
            } else {
                panic_any(Boom(value))
            }
        }
    }
}

/// Runs a step that never panics unless the crate misbehaves: such a panic is recorded as
/// [`Event::Unexpected`] and leaves the run.
fn guarded(shared: &Shared, me: usize, step: impl FnOnce()) -> Flow {
    match catch_unwind(AssertUnwindSafe(step)) {
        Ok(()) => Flow::Continue,
        Err(panic) => {
            shared.record(Event::Unexpected {
                greenlet: me,
                payload: describe_panic(&*panic),
            });
            Flow::Unwind(panic)
        }
    }
}

/// A handle to `target`, or `None` after recording [`Event::Missing`].
fn present(shared: &Shared, me: usize, target: usize) -> Option<Greenlet> {
    let handle = shared.handle(target);
    if handle.is_none() {
        shared.record(Event::Missing {
            greenlet: me,
            target,
        });
    }
    handle
}

/// What a transfer step got back when it returned.
enum Received {
    Number(u32),
    KillDone,
}

/// A switch, throw or kill of `to`: the call holds its own handle to the target, records what
/// came back, then drops that handle and goes on or unwinds.
fn transfer_step(
    shared: &Rc<Shared>,
    me: usize,
    to: usize,
    catch: Catch,
    call: impl FnOnce(&Greenlet) -> Result<Received, SwitchError>,
) -> Flow {
    let Some(target) = present(shared, me, to) else {
        return Flow::Continue;
    };
    let result = catch_unwind(AssertUnwindSafe(|| call(&target)));
    let from = shared.take_actor(me);
    let (outcome, raised) = match result {
        Ok(Ok(Received::Number(number))) => (Outcome::Value(number), None),
        Ok(Ok(Received::KillDone)) => (Outcome::KillDone, None),
        Ok(Err(SwitchError::Exited(exit))) => (Outcome::Exited(exit_reason(&exit)), None),
        Ok(Err(SwitchError::WrongType { value, found, .. })) => {
            (Outcome::WrongType(describe_value(value, found)), None)
        }
        Ok(Err(other)) => (Outcome::Unknown(format!("{other:?}")), None),
        Err(panic) => (Outcome::Panic(describe_panic(&*panic)), Some(panic)),
    };
    shared.record(Event::Received {
        greenlet: me,
        from,
        outcome,
    });
    drop(target);
    match raised {
        Some(panic) if !catch.catches(&describe_panic(&*panic)) => Flow::Unwind(panic),
        _ => Flow::Continue,
    }
}

fn exit_reason(exit: &GreenletExit) -> ExitReason {
    if exit.message.is_empty() {
        ExitReason::Kill
    } else if exit.message == VANISHED {
        ExitReason::Vanished
    } else if let Some(number) = exit
        .message
        .strip_prefix("thrown ")
        .and_then(|number| number.parse().ok())
    {
        ExitReason::Thrown(number)
    } else {
        // Not a message a program makes: shows up as a mismatch.
        ExitReason::Thrown(u32::MAX)
    }
}

/// What a `WrongType` carried (`found` names its type).
fn describe_value(value: Box<dyn Any>, found: &str) -> Datum {
    if let Some(number) = value.downcast_ref::<u32>() {
        Datum::Value(Value::U32(*number))
    } else if let Some(stray) = value.downcast_ref::<Stray>() {
        Datum::Value(Value::Stray(stray.0))
    } else if let Some(exit) = value.downcast_ref::<GreenletExit>() {
        Datum::Exit(exit_reason(exit))
    } else {
        Datum::Unknown(found.to_string())
    }
}

fn describe_panic(payload: &(dyn Any + Send)) -> PanicPayload {
    if let Some(boom) = payload.downcast_ref::<Boom>() {
        PanicPayload::Boom(boom.0)
    } else if let Some(exit) = payload.downcast_ref::<GreenletExit>() {
        PanicPayload::Exit(exit_reason(exit))
    } else if let Some(text) = payload.downcast_ref::<&str>() {
        PanicPayload::Other((*text).to_string())
    } else if let Some(text) = payload.downcast_ref::<String>() {
        PanicPayload::Other(text.clone())
    } else {
        PanicPayload::Other("a payload of an unknown type".to_string())
    }
}
