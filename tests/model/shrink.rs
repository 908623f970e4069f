//! Shrinking a failing program, and the report that shows the smallest one.

use super::program::{Catch, Event, Program, Step, Value};

/// Shrinks `program` greedily while `fails` holds: drops whole greenlets, then single steps,
/// then simplifies what remains (catches, stray values), until no single change keeps it
/// failing. `fails(program)` must hold on entry.
pub(crate) fn shrink(program: &Program, mut fails: impl FnMut(&Program) -> bool) -> Program {
    let mut smallest = program.clone();
    loop {
        let found = candidates(&smallest).find(|candidate| fails(candidate));
        match found {
            Some(smaller) => smallest = smaller,
            None => return smallest,
        }
    }
}

/// Every program one simplification away from `program`, biggest cuts first.
fn candidates(program: &Program) -> impl Iterator<Item = Program> + '_ {
    let count = program.greenlets.len();
    let without_greenlets = (1..count)
        .rev()
        .map(move |index| remove_greenlet(program, index));
    let without_steps = (0..count).flat_map(move |greenlet| {
        (0..program.greenlets[greenlet].steps.len())
            .rev()
            .map(move |position| {
                let mut smaller = program.clone();
                smaller.greenlets[greenlet].steps.remove(position);
                smaller
            })
    });
    let simpler_steps = (0..count).flat_map(move |greenlet| {
        (0..program.greenlets[greenlet].steps.len()).filter_map(move |position| {
            let simpler = simplify(program.greenlets[greenlet].steps[position])?;
            let mut smaller = program.clone();
            smaller.greenlets[greenlet].steps[position] = simpler;
            Some(smaller)
        })
    });
    without_greenlets.chain(without_steps).chain(simpler_steps)
}

/// A simpler version of `step`, if there is one.
fn simplify(step: Step) -> Option<Step> {
    match step {
        Step::Switch { to, value, catch } => match (value, catch) {
            (_, Catch::Everything) => Some(Step::Switch {
                to,
                value,
                catch: Catch::Boom,
            }),
            (_, Catch::Boom) => Some(Step::Switch {
                to,
                value,
                catch: Catch::Nothing,
            }),
            (Value::Stray(number), Catch::Nothing) => Some(Step::Switch {
                to,
                value: Value::U32(number),
                catch,
            }),
            (Value::U32(_), Catch::Nothing) => None,
        },
        Step::Throw { to, payload, catch } if catch != Catch::Nothing => Some(Step::Throw {
            to,
            payload,
            catch: Catch::Nothing,
        }),
        Step::Kill { to, catch } if catch != Catch::Nothing => Some(Step::Kill {
            to,
            catch: Catch::Nothing,
        }),
        _ => None,
    }
}

/// `program` without greenlet `removed`: steps naming it go, later indices move down by one,
/// and its children get its parent.
fn remove_greenlet(program: &Program, removed: usize) -> Program {
    let renumber = |index: usize| if index > removed { index - 1 } else { index };
    let removed_parent = program.greenlets[removed].parent;
    let greenlets = program
        .greenlets
        .iter()
        .enumerate()
        .filter(|&(index, _)| index != removed)
        .map(|(index, spec)| {
            let mut spec = spec.clone();
            if index > 0 {
                let parent = if spec.parent == removed {
                    removed_parent
                } else {
                    spec.parent
                };
                spec.parent = renumber(parent);
            }
            spec.steps = spec
                .steps
                .iter()
                .filter(|step| step.targets().all(|target| target != removed))
                .map(|&step| renumber_step(step, &renumber))
                .collect();
            spec
        })
        .collect();
    Program { greenlets }
}

fn renumber_step(step: Step, renumber: &impl Fn(usize) -> usize) -> Step {
    match step {
        Step::Switch { to, value, catch } => Step::Switch {
            to: renumber(to),
            value,
            catch,
        },
        Step::Throw { to, payload, catch } => Step::Throw {
            to: renumber(to),
            payload,
            catch,
        },
        Step::Kill { to, catch } => Step::Kill {
            to: renumber(to),
            catch,
        },
        Step::DropHandle { to } => Step::DropHandle { to: renumber(to) },
        Step::SetParent { child, parent } => Step::SetParent {
            child: renumber(child),
            parent: renumber(parent),
        },
        Step::Inspect { target } => Step::Inspect {
            target: renumber(target),
        },
        other @ (Step::KeepSelf | Step::Return { .. } | Step::Panic { .. }) => other,
    }
}

/// The index of the first event where `expected` and `actual` differ (the shorter length when
/// one is a prefix of the other), or `None` when they are equal.
pub(crate) fn first_difference(expected: &[Event], actual: &[Event]) -> Option<usize> {
    if expected == actual {
        return None;
    }
    Some(
        expected
            .iter()
            .zip(actual)
            .position(|(left, right)| left != right)
            .unwrap_or(expected.len().min(actual.len())),
    )
}

/// Both traces, side by side, the first difference marked.
pub(crate) fn describe_traces(expected: &[Event], actual: &[Event]) -> String {
    let difference = first_difference(expected, actual);
    let mut text = String::new();
    let rows = expected.len().max(actual.len());
    let show = |event: Option<&Event>| event.map_or_else(|| "-".to_string(), Event::to_string);
    for row in 0..rows {
        let left = show(expected.get(row));
        let right = show(actual.get(row));
        let marker = match difference {
            Some(first) if row == first => ">>",
            _ if left == right => "  ",
            _ => " *",
        };
        text.push_str(&format!("{marker} {row:>3}  {left:<52} | {right}\n"));
    }
    text
}
