//! Greenlet programs as data, the events a run of one produces, and a text form for both.
//!
//! A program names up to [`MAX_GREENLETS`] greenlets: `main` (index 0) and `g1`..`g11`. Main
//! makes all the others before its own steps run, each with its parent, its argument type and
//! its result type; then each greenlet, once started, runs its steps in order. A greenlet whose
//! steps run out returns [`default_result`].
//!
//! The text form, one line per greenlet (it is what a failure report prints, and what
//! [`Program::parse`] reads back):
//!
//! ```text
//! main: switch g1 7; drop g2 ; set-parent g2 g1
//! g1 < main (u32 -> u32): switch main stray:5 catch-boom; throw g2 boom:3 catch-all; return 9
//! g2 < g1 (stray -> u32): kill g1; keep-self; inspect g1; panic 4
//! ```

use std::fmt;

/// The most greenlets a program has, main included.
pub(crate) const MAX_GREENLETS: usize = 12;

/// The two types of value that cross switches: `u32`, and a second type that is never what a
/// switch asks for, so that it arrives as `SwitchError::WrongType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// `u32`.
    U32,
    /// The second type (`Stray` in the interpreter).
    Stray,
}

/// A value a step sends or a greenlet returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Value {
    /// A `u32`.
    U32(u32),
    /// A `Stray` carrying the number.
    Stray(u32),
}

impl Value {
    /// A value of `kind` carrying `number`.
    pub(crate) fn of_kind(kind: Kind, number: u32) -> Value {
        match kind {
            Kind::U32 => Value::U32(number),
            Kind::Stray => Value::Stray(number),
        }
    }

    /// Its type.
    pub(crate) fn kind(self) -> Kind {
        match self {
            Value::U32(_) => Kind::U32,
            Value::Stray(_) => Kind::Stray,
        }
    }
}

/// Why a `GreenletExit` was raised, as told by its message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ExitReason {
    /// `Greenlet::kill` (an empty message).
    Kill,
    /// Kill on drop ("Killing the greenlet because all references have vanished.").
    Vanished,
    /// A `throw` step's exit, carrying the step's number.
    Thrown(u32),
}

/// A value that arrived inside a `SwitchError::WrongType`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Datum {
    /// A plain value.
    Value(Value),
    /// A `GreenletExit` delivered as a value.
    Exit(ExitReason),
    /// Anything else (never expected: the text describes it).
    Unknown(String),
}

/// A panic payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum PanicPayload {
    /// The payload of `panic` and `throw ... boom:N` steps.
    Boom(u32),
    /// A `GreenletExit`.
    Exit(ExitReason),
    /// Anything else (never expected: the text describes it).
    Other(String),
}

/// What a `throw` step raises in its target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Thrown {
    /// A `Boom` payload.
    Boom(u32),
    /// A `GreenletExit` whose reason is [`ExitReason::Thrown`].
    Exit(u32),
}

impl Thrown {
    /// The payload as it is raised.
    pub(crate) fn payload(self) -> PanicPayload {
        match self {
            Thrown::Boom(number) => PanicPayload::Boom(number),
            Thrown::Exit(number) => PanicPayload::Exit(ExitReason::Thrown(number)),
        }
    }
}

/// Which panics a step catches. A panic it does not catch leaves the greenlet's run (for main:
/// ends its steps).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Catch {
    /// None.
    Nothing,
    /// `Boom` payloads only (like Python's `except Exception`, which lets `GreenletExit` by).
    Boom,
    /// Every payload, `GreenletExit` included.
    Everything,
}

impl Catch {
    /// True when this catches `payload`.
    pub(crate) fn catches(self, payload: &PanicPayload) -> bool {
        match self {
            Catch::Nothing => false,
            Catch::Boom => matches!(payload, PanicPayload::Boom(_)),
            Catch::Everything => true,
        }
    }
}

/// One instruction of a greenlet's program. Targets are greenlet indices; a step whose target's
/// handle has been dropped records [`Event::Missing`] and does nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// `switch::<_, u32>(value)` to `to`.
    Switch {
        /// The target.
        to: usize,
        /// What is sent.
        value: Value,
        /// Which panics raised by the switch are caught.
        catch: Catch,
    },
    /// `throw::<u32>(payload)` into `to`.
    Throw {
        /// The target.
        to: usize,
        /// What is raised there.
        payload: Thrown,
        /// Which panics raised by the throw (in this greenlet) are caught.
        catch: Catch,
    },
    /// `kill()` of `to`.
    Kill {
        /// The target.
        to: usize,
        /// Which panics raised by the kill (in this greenlet) are caught.
        catch: Catch,
    },
    /// Drops the program's handle to `to` (possibly killing it).
    DropHandle {
        /// The greenlet whose handle is dropped.
        to: usize,
    },
    /// `child.set_parent(&parent)`.
    SetParent {
        /// The greenlet reparented.
        child: usize,
        /// Its new parent.
        parent: usize,
    },
    /// Puts a handle to the running greenlet (from `getcurrent`) in the program's table, if its
    /// own was dropped: a victim of kill on drop that does this survives.
    KeepSelf,
    /// Records `target`'s state and parent.
    Inspect {
        /// The greenlet looked at.
        target: usize,
    },
    /// Returns from the greenlet's run (main: ends its steps).
    Return {
        /// The number returned, as the greenlet's result type.
        value: u32,
    },
    /// Panics with `Boom(value)` (main: ends its steps, the panic caught).
    Panic {
        /// The payload's number.
        value: u32,
    },
}

/// One greenlet of a program.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct GreenletSpec {
    /// Its parent at creation (ignored for main); always a smaller index.
    pub(crate) parent: usize,
    /// Its run's argument type.
    pub(crate) argument: Kind,
    /// Its run's result type.
    pub(crate) result: Kind,
    /// What it does.
    pub(crate) steps: Vec<Step>,
}

/// A whole program: main first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Program {
    /// Main, then `g1`, `g2`, ...
    pub(crate) greenlets: Vec<GreenletSpec>,
}

/// The number a greenlet whose steps ran out returns.
pub(crate) fn default_number(greenlet: usize) -> u32 {
    1000 + greenlet as u32
}

/// The result of a greenlet whose steps ran out.
pub(crate) fn default_result(greenlet: usize, kind: Kind) -> Value {
    Value::of_kind(kind, default_number(greenlet))
}

/// A greenlet's state as `is_started`/`is_active`/`is_dead` report it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Life {
    /// Not started.
    Unstarted,
    /// Running or suspended.
    Active,
    /// Finished.
    Dead,
}

/// What a switch, throw or kill step got back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// A `u32`.
    Value(u32),
    /// `kill()` returned `Ok(())`.
    KillDone,
    /// `SwitchError::Exited`.
    Exited(ExitReason),
    /// `SwitchError::WrongType` carrying this.
    WrongType(Datum),
    /// A panic was raised in the stepping greenlet.
    Panic(PanicPayload),
    /// Anything else (never expected: the text describes it).
    Unknown(String),
}

/// Why `set_parent` refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// `ParentError::Cyclic`.
    Cyclic,
    /// `ParentError::Main`.
    Main,
    /// Anything else (never expected).
    Other(String),
}

/// One observable thing that happened while a program ran. `greenlet` is the one it happened
/// in; `from` is the greenlet that ran last before that one got control back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Event {
    /// A greenlet begins its step `index`.
    Step { greenlet: usize, index: usize },
    /// A greenlet's run began with `argument`.
    Started {
        greenlet: usize,
        from: usize,
        argument: Value,
    },
    /// A switch, throw or kill step returned or raised.
    Received {
        greenlet: usize,
        from: usize,
        outcome: Outcome,
    },
    /// A step's target (or one of `set-parent`'s) has no handle left.
    Missing { greenlet: usize, target: usize },
    /// A `drop` step's drop returned.
    Dropped { greenlet: usize, target: usize },
    /// A `set-parent` step returned.
    ParentSet {
        greenlet: usize,
        child: usize,
        parent: usize,
        result: Result<(), Refusal>,
    },
    /// A `keep-self` step ran; `already` when the table still had a handle.
    KeptSelf { greenlet: usize, already: bool },
    /// An `inspect` step saw this.
    Inspected {
        greenlet: usize,
        target: usize,
        life: Life,
        parent: Option<usize>,
    },
    /// A greenlet returns `value` from its run.
    Returning { greenlet: usize, value: Value },
    /// A greenlet's `panic` step panics.
    Panicking { greenlet: usize, value: u32 },
    /// The crate panicked inside a step that should not panic (never expected).
    Unexpected {
        greenlet: usize,
        payload: PanicPayload,
    },
    /// A panic a step did not catch leaves a greenlet's run.
    Unwinding {
        greenlet: usize,
        payload: PanicPayload,
    },
    /// A panic main's step did not catch ended main's steps.
    MainUnwound { payload: PanicPayload },
    /// Main's steps are over; the table is being emptied.
    ProgramEnd,
    /// At the program's end, a greenlet whose handle is still in the table.
    Final {
        target: usize,
        life: Life,
        parent: Option<usize>,
    },
}

/// The name of greenlet `index` in programs and reports.
pub(crate) fn name(index: usize) -> &'static str {
    const NAMES: [&str; MAX_GREENLETS] = [
        "main", "g1", "g2", "g3", "g4", "g5", "g6", "g7", "g8", "g9", "g10", "g11",
    ];
    NAMES[index]
}

/// The index of the greenlet called `text`.
pub(crate) fn index_of(text: &str) -> Option<usize> {
    (0..MAX_GREENLETS).find(|&index| name(index) == text)
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::U32(number) => write!(f, "{number}"),
            Value::Stray(number) => write!(f, "stray:{number}"),
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::U32 => "u32",
            Kind::Stray => "stray",
        })
    }
}

impl fmt::Display for ExitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitReason::Kill => f.write_str("exit(kill)"),
            ExitReason::Vanished => f.write_str("exit(vanished)"),
            ExitReason::Thrown(number) => write!(f, "exit:{number}"),
        }
    }
}

impl fmt::Display for Datum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Datum::Value(value) => write!(f, "{value}"),
            Datum::Exit(reason) => write!(f, "{reason}"),
            Datum::Unknown(text) => write!(f, "unknown({text})"),
        }
    }
}

impl fmt::Display for PanicPayload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PanicPayload::Boom(number) => write!(f, "boom:{number}"),
            PanicPayload::Exit(reason) => write!(f, "{reason}"),
            PanicPayload::Other(text) => write!(f, "other panic {text:?}"),
        }
    }
}

impl fmt::Display for Thrown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Thrown::Boom(number) => write!(f, "boom:{number}"),
            Thrown::Exit(number) => write!(f, "exit:{number}"),
        }
    }
}

impl fmt::Display for Catch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Catch::Nothing => "",
            Catch::Boom => " catch-boom",
            Catch::Everything => " catch-all",
        })
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Step::Switch { to, value, catch } => write!(f, "switch {} {value}{catch}", name(to)),
            Step::Throw { to, payload, catch } => {
                write!(f, "throw {} {payload}{catch}", name(to))
            }
            Step::Kill { to, catch } => write!(f, "kill {}{catch}", name(to)),
            Step::DropHandle { to } => write!(f, "drop {}", name(to)),
            Step::SetParent { child, parent } => {
                write!(f, "set-parent {} {}", name(child), name(parent))
            }
            Step::KeepSelf => f.write_str("keep-self"),
            Step::Inspect { target } => write!(f, "inspect {}", name(target)),
            Step::Return { value } => write!(f, "return {value}"),
            Step::Panic { value } => write!(f, "panic {value}"),
        }
    }
}

impl fmt::Display for Program {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, spec) in self.greenlets.iter().enumerate() {
            if index == 0 {
                f.write_str("main:")?;
            } else {
                write!(
                    f,
                    "{} < {} ({} -> {}):",
                    name(index),
                    name(spec.parent),
                    spec.argument,
                    spec.result
                )?;
            }
            for (position, step) in spec.steps.iter().enumerate() {
                let separator = if position == 0 { " " } else { "; " };
                write!(f, "{separator}{step}")?;
            }
            writeln!(f)?;
        }
        Ok(())
    }
}

impl fmt::Display for Life {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Life::Unstarted => "unstarted",
            Life::Active => "active",
            Life::Dead => "dead",
        })
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Value(number) => write!(f, "got {number}"),
            Outcome::KillDone => f.write_str("got Ok from kill"),
            Outcome::Exited(reason) => write!(f, "got Exited({reason})"),
            Outcome::WrongType(datum) => write!(f, "got WrongType({datum})"),
            Outcome::Panic(payload) => write!(f, "raised {payload}"),
            Outcome::Unknown(text) => write!(f, "got something unknown: {text}"),
        }
    }
}

/// `Some(index)` as a greenlet name, `None` as "none".
fn optional_name(index: Option<usize>) -> &'static str {
    index.map_or("none", name)
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::Step { greenlet, index } => write!(f, "{} step {index}", name(*greenlet)),
            Event::Started {
                greenlet,
                from,
                argument,
            } => write!(
                f,
                "{} started with {argument} (from {})",
                name(*greenlet),
                name(*from)
            ),
            Event::Received {
                greenlet,
                from,
                outcome,
            } => write!(f, "{} {outcome} (from {})", name(*greenlet), name(*from)),
            Event::Missing { greenlet, target } => {
                write!(f, "{}: no handle to {}", name(*greenlet), name(*target))
            }
            Event::Dropped { greenlet, target } => {
                write!(f, "{}: drop of {} returned", name(*greenlet), name(*target))
            }
            Event::ParentSet {
                greenlet,
                child,
                parent,
                result,
            } => write!(
                f,
                "{}: set-parent {} {} -> {result:?}",
                name(*greenlet),
                name(*child),
                name(*parent)
            ),
            Event::KeptSelf { greenlet, already } => {
                write!(
                    f,
                    "{} keeps itself (already held: {already})",
                    name(*greenlet)
                )
            }
            Event::Inspected {
                greenlet,
                target,
                life,
                parent,
            } => write!(
                f,
                "{} sees {} {life}, parent {}",
                name(*greenlet),
                name(*target),
                optional_name(*parent)
            ),
            Event::Returning { greenlet, value } => {
                write!(f, "{} returns {value}", name(*greenlet))
            }
            Event::Panicking { greenlet, value } => {
                write!(f, "{} panics boom:{value}", name(*greenlet))
            }
            Event::Unwinding { greenlet, payload } => {
                write!(f, "{} unwinds with {payload}", name(*greenlet))
            }
            Event::Unexpected { greenlet, payload } => {
                write!(f, "{}: the crate panicked: {payload}", name(*greenlet))
            }
            Event::MainUnwound { payload } => write!(f, "main's steps end by {payload}"),
            Event::ProgramEnd => f.write_str("program end"),
            Event::Final {
                target,
                life,
                parent,
            } => write!(
                f,
                "at the end {} is {life}, parent {}",
                name(*target),
                optional_name(*parent)
            ),
        }
    }
}

/// Why [`Program::parse`] refused a text.
#[derive(Debug)]
pub(crate) struct ParseError(pub(crate) String);

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn parse_error<T>(message: impl Into<String>) -> Result<T, ParseError> {
    Err(ParseError(message.into()))
}

fn parse_greenlet(word: Option<&str>) -> Result<usize, ParseError> {
    let word = word.unwrap_or("");
    index_of(word).map_or_else(|| parse_error(format!("not a greenlet: {word:?}")), Ok)
}

fn parse_number(word: &str) -> Result<u32, ParseError> {
    word.parse()
        .map_or_else(|_| parse_error(format!("not a number: {word:?}")), Ok)
}

fn parse_kind(word: &str) -> Result<Kind, ParseError> {
    match word {
        "u32" => Ok(Kind::U32),
        "stray" => Ok(Kind::Stray),
        other => parse_error(format!("not a type: {other:?}")),
    }
}

fn parse_value(word: Option<&str>) -> Result<Value, ParseError> {
    match word {
        Some(word) => match word.strip_prefix("stray:") {
            Some(number) => Ok(Value::Stray(parse_number(number)?)),
            None => Ok(Value::U32(parse_number(word)?)),
        },
        None => parse_error("a value is missing"),
    }
}

fn parse_catch(word: Option<&str>) -> Result<Catch, ParseError> {
    match word {
        None => Ok(Catch::Nothing),
        Some("catch-boom") => Ok(Catch::Boom),
        Some("catch-all") => Ok(Catch::Everything),
        Some(other) => parse_error(format!("not a catch: {other:?}")),
    }
}

fn parse_step(text: &str) -> Result<Step, ParseError> {
    let mut words = text.split_whitespace();
    let verb = words.next().unwrap_or("");
    let step = match verb {
        "switch" => Step::Switch {
            to: parse_greenlet(words.next())?,
            value: parse_value(words.next())?,
            catch: parse_catch(words.next())?,
        },
        "throw" => {
            let to = parse_greenlet(words.next())?;
            let word = words.next().unwrap_or("");
            let payload = if let Some(number) = word.strip_prefix("boom:") {
                Thrown::Boom(parse_number(number)?)
            } else if let Some(number) = word.strip_prefix("exit:") {
                Thrown::Exit(parse_number(number)?)
            } else {
                return parse_error(format!("not a thrown payload: {word:?}"));
            };
            Step::Throw {
                to,
                payload,
                catch: parse_catch(words.next())?,
            }
        }
        "kill" => Step::Kill {
            to: parse_greenlet(words.next())?,
            catch: parse_catch(words.next())?,
        },
        "drop" => Step::DropHandle {
            to: parse_greenlet(words.next())?,
        },
        "set-parent" => Step::SetParent {
            child: parse_greenlet(words.next())?,
            parent: parse_greenlet(words.next())?,
        },
        "keep-self" => Step::KeepSelf,
        "inspect" => Step::Inspect {
            target: parse_greenlet(words.next())?,
        },
        "return" => Step::Return {
            value: parse_number(words.next().unwrap_or(""))?,
        },
        "panic" => Step::Panic {
            value: parse_number(words.next().unwrap_or(""))?,
        },
        other => return parse_error(format!("not a step: {other:?}")),
    };
    match words.next() {
        Some(extra) => parse_error(format!("unexpected {extra:?} in {text:?}")),
        None => Ok(step),
    }
}

impl Program {
    /// Reads the text form (see the module docs). Lines must name main, then `g1`, `g2`, ...
    /// in order; every greenlet a step names must exist, and parents come first.
    ///
    /// # Errors
    ///
    /// A [`ParseError`] saying what is wrong.
    pub(crate) fn parse(text: &str) -> Result<Program, ParseError> {
        let mut greenlets = Vec::new();
        for line in text.lines().map(str::trim).filter(|line| !line.is_empty()) {
            let Some((head, body)) = line.split_once(':') else {
                return parse_error(format!("no ':' in {line:?}"));
            };
            let index = greenlets.len();
            let mut head_words = head.split_whitespace();
            let named = parse_greenlet(head_words.next())?;
            if named != index {
                return parse_error(format!("expected {} first in {line:?}", name(index)));
            }
            let spec_head: Vec<&str> = head_words.collect();
            let (parent, argument, result) = match spec_head.as_slice() {
                [] if index == 0 => (0, Kind::U32, Kind::U32),
                ["<", parent, argument, "->", result] => (
                    parse_greenlet(Some(parent))?,
                    parse_kind(argument.trim_start_matches('('))?,
                    parse_kind(result.trim_end_matches(')'))?,
                ),
                _ => return parse_error(format!("bad head {head:?}")),
            };
            if index > 0 && parent >= index {
                return parse_error(format!("{}'s parent comes after it", name(index)));
            }
            let steps = body
                .split(';')
                .map(str::trim)
                .filter(|step| !step.is_empty())
                .map(parse_step)
                .collect::<Result<Vec<Step>, ParseError>>()?;
            greenlets.push(GreenletSpec {
                parent,
                argument,
                result,
                steps,
            });
        }
        let program = Program { greenlets };
        program.check()?;
        Ok(program)
    }

    /// Checks that every greenlet a step names exists.
    fn check(&self) -> Result<(), ParseError> {
        let count = self.greenlets.len();
        if count == 0 || count > MAX_GREENLETS {
            return parse_error(format!("{count} greenlets"));
        }
        for spec in &self.greenlets {
            for step in &spec.steps {
                if step.targets().any(|target| target >= count) {
                    return parse_error(format!("{step} names a greenlet not in the program"));
                }
            }
        }
        Ok(())
    }
}

impl Step {
    /// The greenlets this step names.
    pub(crate) fn targets(&self) -> impl Iterator<Item = usize> {
        let (first, second) = match *self {
            Step::Switch { to, .. }
            | Step::Throw { to, .. }
            | Step::Kill { to, .. }
            | Step::DropHandle { to } => (Some(to), None),
            Step::SetParent { child, parent } => (Some(child), Some(parent)),
            Step::Inspect { target } => (Some(target), None),
            Step::KeepSelf | Step::Return { .. } | Step::Panic { .. } => (None, None),
        };
        first.into_iter().chain(second)
    }
}
