//! The reference model: Python greenlet's semantics (its rules 1-67, as mapped to Rust in
//! the `greenlet` module docs' rule map) as a plain state machine, with no stacks.
//!
//! Each greenlet has a state (unstarted, active, dead), a parent, a reference count and, while
//! suspended, its *continuation*: a stack of [`Frame`]s saying what it does when it gets
//! control back. The frames mirror, one for one, what the interpreter
//! ([`super::interpreter`]) and the crate do around each switch, so the model produces the same
//! [`Event`]s in the same order:
//!
//! - a step that transfers (switch, throw, kill) holds a handle to its target until the value
//!   or panic that comes back has been recorded (rules 12-31);
//! - a greenlet that gets control first settles with the greenlet that ran before it: a
//!   finished sender's own reference is released, and an active sender that holds no handle
//!   to itself any more is killed (rule 43);
//! - releasing the last handle but a greenlet's own to a suspended greenlet (not main, not
//!   running) kills it: `GreenletExit` goes in with the releasing greenlet as its parent until
//!   it dies; a panic coming back is discarded; a victim that is still alive afterwards with no
//!   handle to itself is leaked (rules 32-39);
//! - a record whose last reference goes releases its parent, which may kill that in turn (rule
//!   42).
//!
//! Replacing a parent (`set_parent`, and the end of a kill on drop putting the victim's parent
//! back) stores the new parent first and releases the old one after: code that release runs
//! (a kill) sees the new parent. The model counts the runs that read a parent in that window
//! ([`Tally::reads_while_set_parent_releases`], [`Tally::reads_while_kill_end_releases`]): the
//! crate once held the parent's `RefCell` borrowed there, and panicked or aborted.

use super::program::{
    Catch, Datum, Event, ExitReason, Kind, Life, Outcome, PanicPayload, Program, Refusal, Step,
    Value, default_result,
};

/// What one run of the model produced.
#[derive(Debug)]
pub(crate) struct Run {
    /// Everything that happened, in order.
    pub(crate) events: Vec<Event>,
    /// How often the run went through the model's less common paths.
    pub(crate) tally: Tally,
    /// Greenlets whose records outlive the run, though the program holds no handle to them any
    /// more: leaked on purpose (rule 37), or held by suspended greenlets that nothing reaches
    /// (for instance two suspended greenlets holding handles to each other). The crate keeps
    /// their stacks for good.
    pub(crate) stranded: usize,
}

/// Counts of the model's less common paths in one run (or, summed, in many).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Tally {
    /// Unstarted greenlets that died without running (rules 11, 19, 29).
    pub(crate) died_unstarted: usize,
    /// Kills on drop (rule 33).
    pub(crate) kills_on_drop: usize,
    /// Of those, kills of a sender that switched away holding no handle to itself (rule 43).
    pub(crate) abandoned_senders: usize,
    /// Of those, kills of a parent released by `set_parent` or by the end of a kill.
    pub(crate) kills_replacing_parent: usize,
    /// Reads (or replacements) of a greenlet's parent while `set_parent` releases its old
    /// parent (a kill that release caused looking at it).
    pub(crate) reads_while_set_parent_releases: usize,
    /// The same while the end of a kill on drop releases the victim's stand-in parent.
    pub(crate) reads_while_kill_end_releases: usize,
    /// Panics that came back to a kill on drop, discarded (rule 36).
    pub(crate) discarded_panics: usize,
    /// Victims leaked because the kill did not kill them (rule 37).
    pub(crate) leaked: usize,
    /// Records freed that released their parent (rule 42).
    pub(crate) parents_released: usize,
    /// Walks that passed a dead greenlet (rules 19, 21, 30).
    pub(crate) walked_past_dead: usize,
}

impl std::ops::AddAssign for Tally {
    fn add_assign(&mut self, other: Tally) {
        self.died_unstarted += other.died_unstarted;
        self.kills_on_drop += other.kills_on_drop;
        self.abandoned_senders += other.abandoned_senders;
        self.kills_replacing_parent += other.kills_replacing_parent;
        self.reads_while_set_parent_releases += other.reads_while_set_parent_releases;
        self.reads_while_kill_end_releases += other.reads_while_kill_end_releases;
        self.discarded_panics += other.discarded_panics;
        self.leaked += other.leaked;
        self.parents_released += other.parents_released;
        self.walked_past_dead += other.walked_past_dead;
    }
}

/// The most frames the model executes before deciding a program does not end (a model bug:
/// every program ends).
const TRANSITION_LIMIT: usize = 1_000_000;

/// What travels to a receiver.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Payload {
    /// A value (a `GreenletExit` delivered as a value included).
    Value(Datum),
    /// A panic to raise in the receiver.
    Panic(PanicPayload),
    /// A start refused by an unstarted greenlet: `SwitchError::WrongType` carrying the value.
    Failed(Datum),
}

/// The type a pending call asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    /// `switch::<_, u32>` and `throw::<u32>`.
    U32,
    /// `kill()` and kill on drop: a `GreenletExit`.
    Exit,
}

/// What a pending call is waiting in.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Wait {
    /// A switch, throw or kill step, holding a handle to `target`.
    Step {
        target: usize,
        catch: Catch,
        kill: bool,
    },
    /// Kill on drop of `victim`, holding its original parent.
    Kill {
        victim: usize,
        original_parent: Option<usize>,
    },
}

/// One piece of a greenlet's continuation; the top of its stack runs next.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Frame {
    /// Run the next step, or finish when there is none.
    Program,
    /// Suspended: waiting for something to arrive.
    Await(Wait),
    /// What arrived, to be handled as `wait` says.
    Deliver { payload: Payload, wait: Wait },
    /// The run begins with `argument`.
    Start { argument: Value },
    /// Settle with the greenlet that ran before this one got control.
    Settle { sender: usize },
    /// Drop one handle to `greenlet` (possibly killing it).
    Release { greenlet: usize },
    /// The count decrement that follows a kill on drop.
    ReleaseTail { greenlet: usize },
    /// After a kill on drop: leak a victim that survived without a handle to itself.
    KillEnd { victim: usize, dead: bool },
    /// The replacement of `greenlet`'s parent has released the old one.
    Replaced { greenlet: usize },
    /// A transfer step is over: go on, or leave the run with the panic it raised.
    AfterStep {
        raised: Option<PanicPayload>,
        catch: Catch,
    },
    /// Record an event.
    Record(Event),
    /// Main's steps are over: record the final states.
    Epilogue,
    /// Main drops the next handle left in the table.
    EpilogueDrop,
}

/// One greenlet's state.
#[derive(Clone, Debug)]
struct Node {
    life: Life,
    parent: Option<usize>,
    /// Handles, parent links of children, its own reference while active, and a leak's.
    references: usize,
    /// Its record is gone (no references left).
    freed: bool,
    leaked: bool,
    next_step: usize,
    frames: Vec<Frame>,
    argument: Kind,
    result: Kind,
}

/// Where a payload ends up.
enum Destination {
    /// The running greenlet.
    Here(Payload),
    /// A suspended or unstarted greenlet.
    There(usize, Payload),
}

/// What a pending call makes of a payload.
enum Got {
    Ok(Datum),
    Exited(ExitReason),
    WrongType(Datum),
    Raised(PanicPayload),
}

/// Where a parent is replaced and the old one released.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Replacement {
    /// `Greenlet::set_parent`.
    SetParent,
    /// The end of a kill on drop, putting the victim's original parent back.
    KillEnd,
}

/// Main's reference count: never reaches zero.
const MAIN_REFERENCES: usize = 1 << 20;

struct Model<'a> {
    program: &'a Program,
    nodes: Vec<Node>,
    /// Whether the program's table still holds a handle to each greenlet.
    table: Vec<bool>,
    current: usize,
    /// The greenlet whose code ran last (the `from` of the next event that has one).
    actor: usize,
    /// Greenlets whose old parent is being released after a replacement, with where.
    replacing: Vec<(usize, Replacement)>,
    events: Vec<Event>,
    tally: Tally,
}

/// Runs `program` on the model.
pub(crate) fn run(program: &Program) -> Run {
    let mut model = Model::new(program);
    let mut transitions = 0;
    while let Some(frame) = model.nodes[model.current].frames.pop() {
        transitions += 1;
        assert!(
            transitions < TRANSITION_LIMIT,
            "the model did not finish the program"
        );
        model.execute(frame);
        model.check_references();
    }
    assert_eq!(
        model.current, 0,
        "a greenlet other than main ran out of frames"
    );
    let stranded = model.stranded();
    Run {
        events: model.events,
        tally: model.tally,
        stranded,
    }
}

impl<'a> Model<'a> {
    fn new(program: &'a Program) -> Model<'a> {
        let count = program.greenlets.len();
        let mut nodes: Vec<Node> = program
            .greenlets
            .iter()
            .enumerate()
            .map(|(index, spec)| Node {
                life: if index == 0 {
                    Life::Active
                } else {
                    Life::Unstarted
                },
                parent: (index > 0).then_some(spec.parent),
                references: if index == 0 { MAIN_REFERENCES } else { 1 },
                freed: false,
                leaked: false,
                next_step: 0,
                frames: Vec::new(),
                argument: spec.argument,
                result: spec.result,
            })
            .collect();
        for index in 1..count {
            let parent = program.greenlets[index].parent;
            nodes[parent].references += 1;
        }
        nodes[0].frames.push(Frame::Program);
        Model {
            program,
            nodes,
            table: vec![true; count],
            current: 0,
            actor: 0,
            replacing: Vec::new(),
            events: Vec::new(),
            tally: Tally::default(),
        }
    }

    fn record(&mut self, event: Event) {
        self.events.push(event);
    }

    /// Pushes onto the running greenlet's continuation.
    fn then(&mut self, frame: Frame) {
        self.nodes[self.current].frames.push(frame);
    }

    /// Counts an access to `greenlet`'s parent while a replacement releases its old one.
    fn note_access_while_releasing(&mut self, greenlet: usize) {
        let replacing = self
            .replacing
            .iter()
            .find(|&&(replaced, _)| replaced == greenlet);
        match replacing {
            Some((_, Replacement::SetParent)) => self.tally.reads_while_set_parent_releases += 1,
            Some((_, Replacement::KillEnd)) => self.tally.reads_while_kill_end_releases += 1,
            None => {}
        }
    }

    /// `greenlet`'s parent, as the crate reads it.
    fn read_parent(&mut self, greenlet: usize) -> Option<usize> {
        self.note_access_while_releasing(greenlet);
        self.nodes[greenlet].parent
    }

    /// Replaces `greenlet`'s parent, as the crate does; returns the old one.
    fn write_parent(&mut self, greenlet: usize, parent: Option<usize>) -> Option<usize> {
        self.note_access_while_releasing(greenlet);
        std::mem::replace(&mut self.nodes[greenlet].parent, parent)
    }

    fn execute(&mut self, frame: Frame) {
        let me = self.current;
        match frame {
            Frame::Program => self.next_step(),
            Frame::Await(wait) => unreachable!("{me} resumed itself from {wait:?}"),
            Frame::Deliver { payload, wait } => self.deliver(payload, wait),
            Frame::Start { argument } => {
                let from = std::mem::replace(&mut self.actor, me);
                self.record(Event::Started {
                    greenlet: me,
                    from,
                    argument,
                });
            }
            Frame::Settle { sender } => self.settle(sender),
            Frame::Release { greenlet } => self.release(greenlet),
            Frame::ReleaseTail { greenlet } => self.decrement(greenlet),
            Frame::KillEnd { victim, dead } => {
                if !dead && self.nodes[victim].references == 2 {
                    // Rule 37: alive, switched away, no handle to itself: leaked on purpose.
                    self.nodes[victim].references += 1;
                    self.nodes[victim].leaked = true;
                    self.tally.leaked += 1;
                }
            }
            Frame::Replaced { greenlet } => {
                let position = self
                    .replacing
                    .iter()
                    .rposition(|&(replaced, _)| replaced == greenlet)
                    .expect("a replacement to end");
                self.replacing.remove(position);
            }
            Frame::AfterStep { raised, catch } => {
                if let Some(payload) = raised
                    && !catch.catches(&payload)
                {
                    self.unwind(payload);
                }
            }
            Frame::Record(event) => self.record(event),
            Frame::Epilogue => self.epilogue(),
            Frame::EpilogueDrop => {
                self.actor = 0;
                let next = (1..self.table.len()).find(|&index| self.table[index]);
                if let Some(target) = next {
                    self.table[target] = false;
                    self.then(Frame::EpilogueDrop);
                    self.then(Frame::Record(Event::Dropped {
                        greenlet: 0,
                        target,
                    }));
                    self.then(Frame::Release { greenlet: target });
                }
            }
        }
    }

    fn epilogue(&mut self) {
        self.record(Event::ProgramEnd);
        for target in 1..self.table.len() {
            if self.table[target] {
                let parent = self.read_parent(target);
                self.record(Event::Final {
                    target,
                    life: self.nodes[target].life,
                    parent,
                });
            }
        }
        self.then(Frame::EpilogueDrop);
    }

    /// Runs the running greenlet's next step.
    fn next_step(&mut self) {
        let me = self.current;
        let spec = &self.program.greenlets[me];
        let index = self.nodes[me].next_step;
        let Some(&step) = spec.steps.get(index) else {
            if me == 0 {
                self.then(Frame::Epilogue);
            } else {
                let value = default_result(me, self.nodes[me].result);
                self.record(Event::Returning {
                    greenlet: me,
                    value,
                });
                self.finish(Ok(Datum::Value(value)));
            }
            return;
        };
        self.nodes[me].next_step += 1;
        self.then(Frame::Program);
        self.actor = me;
        self.record(Event::Step {
            greenlet: me,
            index,
        });
        match step {
            Step::Switch { to, value, catch } => {
                self.transfer_step(to, Payload::Value(Datum::Value(value)), catch, false)
            }
            Step::Throw { to, payload, catch } => {
                self.transfer_step(to, Payload::Panic(payload.payload()), catch, false)
            }
            Step::Kill { to, catch } => self.transfer_step(
                to,
                Payload::Panic(PanicPayload::Exit(ExitReason::Kill)),
                catch,
                true,
            ),
            Step::DropHandle { to } => {
                if self.missing(to) {
                    return;
                }
                self.table[to] = false;
                self.then(Frame::Record(Event::Dropped {
                    greenlet: me,
                    target: to,
                }));
                self.then(Frame::Release { greenlet: to });
            }
            Step::SetParent { child, parent } => self.set_parent(child, parent),
            Step::KeepSelf => {
                let already = self.table[me];
                if !already {
                    self.table[me] = true;
                    self.nodes[me].references += 1;
                }
                self.record(Event::KeptSelf {
                    greenlet: me,
                    already,
                });
            }
            Step::Inspect { target } => {
                if self.missing(target) {
                    return;
                }
                let parent = self.read_parent(target);
                self.record(Event::Inspected {
                    greenlet: me,
                    target,
                    life: self.nodes[target].life,
                    parent,
                });
            }
            Step::Return { value } => {
                let value = Value::of_kind(self.nodes[me].result, value);
                self.record(Event::Returning {
                    greenlet: me,
                    value,
                });
                if me == 0 {
                    self.nodes[0].frames.clear();
                    self.then(Frame::Epilogue);
                } else {
                    self.finish(Ok(Datum::Value(value)));
                }
            }
            Step::Panic { value } => {
                self.record(Event::Panicking {
                    greenlet: me,
                    value,
                });
                self.unwind_quietly(PanicPayload::Boom(value));
            }
        }
    }

    /// Records [`Event::Missing`] and returns true when the table has no handle to `target`.
    fn missing(&mut self, target: usize) -> bool {
        if self.table[target] {
            return false;
        }
        self.record(Event::Missing {
            greenlet: self.current,
            target,
        });
        true
    }

    fn transfer_step(&mut self, to: usize, payload: Payload, catch: Catch, kill: bool) {
        if self.missing(to) {
            return;
        }
        // The step's own handle to its target, held until the outcome is recorded.
        self.nodes[to].references += 1;
        self.transfer(
            to,
            payload,
            Wait::Step {
                target: to,
                catch,
                kill,
            },
        );
    }

    fn set_parent(&mut self, child: usize, parent: usize) {
        let me = self.current;
        if self.missing(child) || self.missing(parent) {
            return;
        }
        // The step holds a handle to each while `set_parent` runs.
        self.nodes[child].references += 1;
        self.nodes[parent].references += 1;
        self.then(Frame::Release { greenlet: parent });
        self.then(Frame::Release { greenlet: child });
        let result = if child == 0 {
            Err(Refusal::Main)
        } else if self.is_ancestor_or_self(child, parent) {
            Err(Refusal::Cyclic)
        } else {
            Ok(())
        };
        self.then(Frame::Record(Event::ParentSet {
            greenlet: me,
            child,
            parent,
            result: result.clone(),
        }));
        if result.is_ok() {
            self.nodes[parent].references += 1;
            let old = self
                .write_parent(child, Some(parent))
                .expect("a greenlet other than main has a parent");
            self.replacing.push((child, Replacement::SetParent));
            self.then(Frame::Replaced { greenlet: child });
            self.then(Frame::Release { greenlet: old });
        }
    }

    /// True when `ancestor` is `start` or one of its ancestors (rule 45's walk).
    fn is_ancestor_or_self(&mut self, ancestor: usize, start: usize) -> bool {
        let mut candidate = Some(start);
        while let Some(greenlet) = candidate {
            if greenlet == ancestor {
                return true;
            }
            candidate = self.read_parent(greenlet);
        }
        false
    }

    /// Sends `payload` to `target` from the running greenlet, which waits as `wait` says.
    fn transfer(&mut self, target: usize, payload: Payload, wait: Wait) {
        match self.resolve(target, payload) {
            Destination::Here(payload) => self.then(Frame::Deliver { payload, wait }),
            Destination::There(receiver, payload) => {
                self.then(Frame::Await(wait));
                self.arrive(receiver, payload);
            }
        }
    }

    /// Walks from `target` to the greenlet that receives `payload` (rules 19, 21-23, 29, 30).
    fn resolve(&mut self, target: usize, mut payload: Payload) -> Destination {
        let mut target = target;
        let mut direct = true;
        loop {
            match self.nodes[target].life {
                Life::Active if target == self.current => return Destination::Here(payload),
                Life::Active => return Destination::There(target, payload),
                Life::Dead => {
                    self.tally.walked_past_dead += 1;
                    // Rule 30: a GreenletExit thrown into a dead greenlet is a value.
                    if direct && let Payload::Panic(PanicPayload::Exit(reason)) = payload {
                        payload = Payload::Value(Datum::Exit(reason));
                    }
                }
                Life::Unstarted => {
                    if let Payload::Value(Datum::Value(value)) = &payload
                        && value.kind() == self.nodes[target].argument
                    {
                        return Destination::There(target, payload);
                    }
                    // Rules 11 (analogue), 19 and 29: it dies without running.
                    self.nodes[target].life = Life::Dead;
                    self.tally.died_unstarted += 1;
                    payload = match payload {
                        Payload::Value(datum) => Payload::Failed(datum),
                        Payload::Panic(PanicPayload::Exit(reason)) => {
                            Payload::Value(Datum::Exit(reason))
                        }
                        other => other,
                    };
                }
            }
            direct = false;
            target = self
                .read_parent(target)
                .expect("main is never dead nor unstarted");
        }
    }

    /// `receiver` gets control with `payload` from the running greenlet.
    fn arrive(&mut self, receiver: usize, payload: Payload) {
        let sender = self.current;
        let node = &mut self.nodes[receiver];
        match node.life {
            Life::Unstarted => {
                let Payload::Value(Datum::Value(argument)) = payload else {
                    unreachable!("an unstarted greenlet starts only with its argument");
                };
                node.life = Life::Active;
                node.references += 1;
                node.frames = vec![
                    Frame::Program,
                    Frame::Start { argument },
                    Frame::Settle { sender },
                ];
            }
            Life::Active => {
                let Some(Frame::Await(wait)) = node.frames.pop() else {
                    unreachable!("a suspended greenlet waits: {:?}", node.frames);
                };
                node.frames.push(Frame::Deliver { payload, wait });
                node.frames.push(Frame::Settle { sender });
            }
            Life::Dead => unreachable!("a dead greenlet receives nothing"),
        }
        self.current = receiver;
    }

    /// The running greenlet's run ends with `outcome`; it goes to its parent (rules 16-19).
    fn finish(&mut self, outcome: Result<Datum, PanicPayload>) {
        let me = self.current;
        self.nodes[me].life = Life::Dead;
        self.nodes[me].frames.clear();
        let parent = self.read_parent(me).expect("a greenlet has a parent");
        let payload = match outcome {
            Ok(datum) => Payload::Value(datum),
            // Rule 18: an uncaught GreenletExit reaches the parent as a value.
            Err(PanicPayload::Exit(reason)) => Payload::Value(Datum::Exit(reason)),
            Err(panic) => Payload::Panic(panic),
        };
        match self.resolve(parent, payload) {
            Destination::There(receiver, payload) => self.arrive(receiver, payload),
            Destination::Here(_) => unreachable!("a finished greenlet is not running"),
        }
    }

    /// A panic leaves the running greenlet's steps: its run ends (main: its steps end).
    fn unwind(&mut self, payload: PanicPayload) {
        if self.current == 0 {
            self.record(Event::MainUnwound { payload });
            self.nodes[0].frames.clear();
            self.then(Frame::Epilogue);
        } else {
            self.record(Event::Unwinding {
                greenlet: self.current,
                payload: payload.clone(),
            });
            self.finish(Err(payload));
        }
    }

    /// A `panic` step: like [`Model::unwind`], without the `Unwinding` event for greenlets
    /// other than main (the panic is raised, not re-raised).
    fn unwind_quietly(&mut self, payload: PanicPayload) {
        if self.current == 0 {
            self.unwind(payload);
        } else {
            self.finish(Err(payload));
        }
    }

    fn deliver(&mut self, payload: Payload, wait: Wait) {
        let me = self.current;
        match wait {
            Wait::Step {
                target,
                catch,
                kill,
            } => {
                let got = receive(payload, if kill { Expect::Exit } else { Expect::U32 });
                let from = std::mem::replace(&mut self.actor, me);
                let (outcome, raised) = match got {
                    Got::Ok(Datum::Value(Value::U32(number))) => (Outcome::Value(number), None),
                    Got::Ok(Datum::Exit(_)) => (Outcome::KillDone, None),
                    Got::Ok(other) => unreachable!("{other:?} accepted"),
                    Got::Exited(_) if kill => unreachable!("a kill accepts every GreenletExit"),
                    Got::Exited(reason) => (Outcome::Exited(reason), None),
                    Got::WrongType(datum) => (Outcome::WrongType(datum), None),
                    Got::Raised(panic) => (Outcome::Panic(panic.clone()), Some(panic)),
                };
                self.record(Event::Received {
                    greenlet: me,
                    from,
                    outcome,
                });
                self.then(Frame::AfterStep { raised, catch });
                self.then(Frame::Release { greenlet: target });
            }
            Wait::Kill {
                victim,
                original_parent,
            } => {
                // Whatever came back is discarded; a panic is reported, never raised (rule 36).
                if let Payload::Panic(_) = payload {
                    self.tally.discarded_panics += 1;
                }
                let dead = self.nodes[victim].life == Life::Dead;
                let replaced = self.write_parent(victim, original_parent);
                self.replacing.push((victim, Replacement::KillEnd));
                self.then(Frame::KillEnd { victim, dead });
                self.then(Frame::Replaced { greenlet: victim });
                if let Some(replaced) = replaced {
                    self.then(Frame::Release { greenlet: replaced });
                }
            }
        }
    }

    /// The receiving side's bookkeeping for `sender`, the greenlet that ran before.
    fn settle(&mut self, sender: usize) {
        let node = &mut self.nodes[sender];
        match node.life {
            // It finished: the receiver drops the reference it handed over.
            Life::Dead => self.then(Frame::Release { greenlet: sender }),
            // Rule 43: it switched away holding no handle to itself: kill it now.
            Life::Active if sender != 0 && node.references == 1 => {
                node.references += 1;
                self.tally.abandoned_senders += 1;
                self.then(Frame::Release { greenlet: sender });
            }
            _ => {}
        }
    }

    /// Drops one handle to `greenlet` (`Greenlet`'s `Drop`).
    fn release(&mut self, greenlet: usize) {
        let node = &self.nodes[greenlet];
        if node.life == Life::Active
            && greenlet != 0
            && node.references == 2
            && greenlet != self.current
        {
            self.then(Frame::ReleaseTail { greenlet });
            self.kill_abandoned(greenlet);
        } else {
            self.decrement(greenlet);
        }
    }

    fn decrement(&mut self, greenlet: usize) {
        let node = &mut self.nodes[greenlet];
        node.references -= 1;
        if node.references == 0 {
            node.freed = true;
            // Rule 42: the record holds its parent; freeing it releases the parent.
            if let Some(parent) = self.write_parent(greenlet, None) {
                self.tally.parents_released += 1;
                self.then(Frame::Release { greenlet: parent });
            }
        }
    }

    /// Kill on drop (rules 33-34): the running greenlet throws `GreenletExit` into `victim`,
    /// standing in as its parent until it comes back.
    fn kill_abandoned(&mut self, victim: usize) {
        let killer = self.current;
        self.tally.kills_on_drop += 1;
        if !self.replacing.is_empty() {
            self.tally.kills_replacing_parent += 1;
        }
        self.nodes[killer].references += 1;
        let original_parent = self.write_parent(victim, Some(killer));
        self.transfer(
            victim,
            Payload::Panic(PanicPayload::Exit(ExitReason::Vanished)),
            Wait::Kill {
                victim,
                original_parent,
            },
        );
    }

    /// Checks every reference count against the references the state holds.
    fn check_references(&self) {
        for (index, node) in self.nodes.iter().enumerate().skip(1) {
            if node.freed {
                continue;
            }
            let mut expected = usize::from(self.table[index])
                + usize::from(node.life == Life::Active)
                + usize::from(node.leaked);
            for (other_index, other) in self.nodes.iter().enumerate() {
                if !other.freed && other_index != 0 && other.parent == Some(index) {
                    expected += 1;
                }
                expected += other
                    .frames
                    .iter()
                    .filter(|frame| self.holds(frame, index))
                    .count();
            }
            assert_eq!(
                node.references,
                expected,
                "model reference count of {} is off: {:#?}",
                super::program::name(index),
                self.nodes
            );
        }
    }

    /// True when `frame` holds a reference to `greenlet`.
    fn holds(&self, frame: &Frame, greenlet: usize) -> bool {
        match frame {
            Frame::Await(wait) | Frame::Deliver { wait, .. } => match wait {
                Wait::Step { target, .. } => *target == greenlet,
                Wait::Kill {
                    original_parent, ..
                } => *original_parent == Some(greenlet),
            },
            Frame::Release { greenlet: held } | Frame::ReleaseTail { greenlet: held } => {
                *held == greenlet
            }
            // A finished sender's own reference, handed to the receiver.
            Frame::Settle { sender } => {
                *sender == greenlet && self.nodes[greenlet].life == Life::Dead
            }
            _ => false,
        }
    }

    /// Records not freed at the end (the table is empty by then): see [`Run::stranded`].
    fn stranded(&self) -> usize {
        self.nodes.iter().skip(1).filter(|node| !node.freed).count()
    }
}

/// What a call expecting `expect` makes of `payload` (rules 13, 18 and their Rust mapping).
fn receive(payload: Payload, expect: Expect) -> Got {
    match payload {
        Payload::Value(datum) => {
            let accepted = matches!(
                (&datum, expect),
                (Datum::Value(Value::U32(_)), Expect::U32) | (Datum::Exit(_), Expect::Exit)
            );
            match datum {
                datum if accepted => Got::Ok(datum),
                Datum::Exit(reason) => Got::Exited(reason),
                datum => Got::WrongType(datum),
            }
        }
        Payload::Panic(panic) => Got::Raised(panic),
        Payload::Failed(datum) => Got::WrongType(datum),
    }
}
