//! Bridge programs as data, with a text form for failure reports.
//!
//! A program is a tree of scopes. Each scope owns one borrowed *datum* (a `String` in the
//! scope's frame) and a few *slots* holding `AsyncDef`s whose functions borrow that datum or
//! one of an enclosing scope. The scope's operations create, poll, drop and forget those
//! `AsyncDef`s and resume greenlets that functions stashed; when the scope ends, every slot is
//! dropped or forgotten (its ending), then the datum is dropped, and the enclosing scope goes
//! on, with the stashed greenlet handles still in reach. That is the shape of every known way
//! to resume a function after what it borrows is gone: leak an `AsyncDef` (or whatever polls
//! or drops one), free the data, then reach the function's greenlet through a handle.
//!
//! Indices in a program are taken modulo what exists when it runs (slots, stashed handles,
//! visible data), so that shrinking can remove any part and leave a program that still runs.

use std::fmt;

/// Slots per scope.
pub(crate) const SLOTS: usize = 3;

/// A whole program: its outermost scope.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Program {
    pub(crate) root: Scope,
}

/// A scope: its datum, its operations, then what happens to each slot when it ends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Scope {
    /// The datum's number (`d0`, `d1`, ...), unique in the program.
    pub(crate) datum: usize,
    pub(crate) operations: Vec<Operation>,
    pub(crate) endings: [Ending; SLOTS],
}

/// What happens to an `AsyncDef` still in a slot when its scope ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ending {
    /// Dropped: a cancellation if its function is suspended.
    Drop,
    /// Leaked with `mem::forget`.
    Forget,
}

/// One step of the program's own (main greenlet's) code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Operation {
    /// Puts `async_def(f)` in an empty slot; `f` runs `script`, borrowing the datum `borrows`
    /// scopes out from this one.
    Create {
        /// The function's number (`f0`, `f1`, ...), unique in the program.
        function: usize,
        slot: usize,
        borrows: usize,
        /// Another slot's `AsyncDef` that the function can poll, drop or forget.
        inner: Option<Inner>,
        script: Vec<Action>,
    },
    /// Polls a slot's `AsyncDef` once by hand, with a waker that does nothing.
    Poll { slot: usize },
    /// Drops a slot's `AsyncDef`.
    Drop { slot: usize },
    /// Leaks a slot's `AsyncDef` with `mem::forget`.
    Forget { slot: usize },
    /// Switches, throws or kills into a stashed greenlet.
    Resume {
        stashed: usize,
        resumption: Resumption,
    },
    /// A nested scope.
    Scope(Scope),
}

/// The `AsyncDef` a function reaches: `owned` takes it out of its slot into the function's
/// closure; otherwise the closure shares the slot with the scope.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Inner {
    pub(crate) slot: usize,
    pub(crate) owned: bool,
}

/// How main resumes a stashed greenlet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Resumption {
    Switch,
    Throw,
    Kill,
}

/// A future to wait for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Wait {
    Ready,
    PendingOnce,
    PendingForever,
}

/// One step of a function. `catch` wraps the step in `catch_unwind` (catching `Cancelled`
/// too); otherwise a panic leaves the function.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Action {
    /// `awaitlet` on a future.
    Await { wait: Wait, catch: bool },
    /// Pushes `getcurrent()` to the program's stash.
    Stash,
    /// Switches to the thread's main greenlet.
    SwitchToMain { catch: bool },
    /// Switches to a stashed greenlet (a foreign switch, unless it is the function's own).
    SwitchToStashed { stashed: usize, catch: bool },
    /// Polls the inner `AsyncDef` once by hand (a nested poll), inside `catch_unwind`.
    PollInner,
    /// Drops the inner `AsyncDef` (a nested cancellation), inside `catch_unwind`.
    DropInner,
    /// Leaks the inner `AsyncDef`.
    ForgetInner,
    /// Panics.
    Panic { catch: bool },
    /// Keeps a value whose destructor runs when the function ends or unwinds.
    Guard(Guard),
}

/// What a kept value's destructor does, after checking the borrowed datum.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Guard {
    /// Nothing more.
    Plain,
    /// Panics, unless the function is already unwinding (that would abort, by Rust's rules).
    Panics,
    /// `awaitlet` on a future, inside `catch_unwind`.
    Awaits(Wait),
    /// `try_awaitlet` on a future, inside `catch_unwind`.
    TriesToAwait(Wait),
}

impl fmt::Display for Program {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_scope(formatter, &self.root, 0)
    }
}

fn write_scope(formatter: &mut fmt::Formatter<'_>, scope: &Scope, depth: usize) -> fmt::Result {
    writeln!(formatter, "scope with datum d{} {{", scope.datum)?;
    for operation in &scope.operations {
        write!(formatter, "{:indent$}", "", indent = 4 * (depth + 1))?;
        match operation {
            Operation::Create {
                function,
                slot,
                borrows,
                inner,
                script,
            } => {
                write!(
                    formatter,
                    "slot {slot} = async_def(f{function}, borrowing the datum {borrows} scope(s) out"
                )?;
                match inner {
                    Some(Inner { slot, owned: true }) => write!(formatter, ", owning slot {slot}")?,
                    Some(Inner { slot, owned: false }) => {
                        write!(formatter, ", sharing slot {slot}")?
                    }
                    None => {}
                }
                let steps: Vec<String> = script.iter().map(|action| action.to_string()).collect();
                writeln!(formatter, ") {{ {} }}", steps.join("; "))?;
            }
            Operation::Poll { slot } => writeln!(formatter, "poll slot {slot}")?,
            Operation::Drop { slot } => writeln!(formatter, "drop slot {slot}")?,
            Operation::Forget { slot } => writeln!(formatter, "forget slot {slot}")?,
            Operation::Resume {
                stashed,
                resumption,
            } => writeln!(formatter, "{resumption:?} into stashed greenlet {stashed}")?,
            Operation::Scope(inner) => write_scope(formatter, inner, depth + 1)?,
        }
    }
    let endings: Vec<String> = scope
        .endings
        .iter()
        .enumerate()
        .map(|(slot, ending)| format!("slot {slot}: {ending:?}"))
        .collect();
    writeln!(
        formatter,
        "{:indent$}}} ends ({}), then d{} is dropped",
        "",
        endings.join(", "),
        scope.datum,
        indent = 4 * depth
    )
}

impl fmt::Display for Action {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let caught = |catch: bool| if catch { " (caught)" } else { "" };
        match *self {
            Action::Await { wait, catch } => {
                write!(formatter, "awaitlet {wait:?}{}", caught(catch))
            }
            Action::Stash => write!(formatter, "stash getcurrent()"),
            Action::SwitchToMain { catch } => {
                write!(formatter, "switch to main{}", caught(catch))
            }
            Action::SwitchToStashed { stashed, catch } => {
                write!(formatter, "switch to stashed {stashed}{}", caught(catch))
            }
            Action::PollInner => write!(formatter, "poll inner"),
            Action::DropInner => write!(formatter, "drop inner"),
            Action::ForgetInner => write!(formatter, "forget inner"),
            Action::Panic { catch } => write!(formatter, "panic{}", caught(catch)),
            Action::Guard(guard) => write!(formatter, "keep a guard {guard:?}"),
        }
    }
}
