//! Seeded random programs: the choices that turn a seed into a [`Program`] over a tree of up to
//! [`MAX_GREENLETS`] greenlets.

use super::program::{Catch, GreenletSpec, Kind, MAX_GREENLETS, Program, Step, Thrown, Value};
pub(crate) use super::random::{SplitMix64, program_seed};

/// The program for `seed`.
pub(crate) fn generate(seed: u64) -> Program {
    let mut random = SplitMix64::new(seed);
    // Mostly mid-sized trees; now and then the largest.
    let count = if random.percent(15) {
        MAX_GREENLETS
    } else {
        random.between(2, 9)
    };
    let parents: Vec<usize> = (0..count)
        .map(|index| match index {
            0 => 0,
            _ if random.percent(40) => 0,
            _ => random.below(index),
        })
        .collect();
    let mut greenlets = Vec::with_capacity(count);
    for index in 0..count {
        // Main's types do not matter (nothing starts it, it never returns): `u32`.
        let (argument, result) = if index == 0 {
            (Kind::U32, Kind::U32)
        } else {
            (kind(&mut random), kind(&mut random))
        };
        let step_count = if index == 0 {
            random.between(3, 14)
        } else {
            random.between(0, 6)
        };
        let mut steps: Vec<Step> = (0..step_count)
            .map(|position| step(&mut random, count, index, position))
            .collect();
        let children: Vec<usize> = (1..count)
            .filter(|&child| parents[child] == index)
            .collect();
        let idiom = idiom(&mut random, index, parents[index], &children, &parents);
        let at = random.below(steps.len() + 1);
        steps.splice(at..at, idiom);
        if index > 0 {
            // How the greenlet ends: mostly a return, sometimes a panic, sometimes by running
            // out of steps (an implicit return).
            let value = (index * 100 + 99) as u32;
            match random.below(10) {
                0..=5 => steps.push(Step::Return { value }),
                6 | 7 => steps.push(Step::Panic { value }),
                _ => {}
            }
        }
        greenlets.push(GreenletSpec {
            parent: parents[index],
            argument,
            result,
            steps,
        });
    }
    Program { greenlets }
}

/// Now and then, a few steps that make a common pattern of greenlet code, which random steps
/// seldom line up: greenlet `me` (whose parent is `parent` and children `children`) yields to
/// its parent catching everything, then looks at a child; or drops its own handle and switches
/// away (rule 43); or (main) starts a greenlet, drops its handle and reparents its child, which
/// kills it inside `set_parent` (rules 33, 42).
fn idiom(
    random: &mut SplitMix64,
    me: usize,
    parent: usize,
    children: &[usize],
    parents: &[usize],
) -> Vec<Step> {
    let number = (me * 100 + 50) as u32;
    let count = parents.len();
    if me == 0 {
        let orphans: Vec<usize> = (1..count).filter(|&index| parents[index] != 0).collect();
        if orphans.is_empty() || !random.percent(40) {
            return Vec::new();
        }
        let child = orphans[random.below(orphans.len())];
        let started = parents[child];
        return vec![
            Step::Switch {
                to: started,
                value: Value::U32(number),
                catch: catch(random),
            },
            Step::DropHandle { to: started },
            Step::SetParent {
                child,
                parent: random.below(count),
            },
        ];
    }
    match random.below(100) {
        0..=19 => {
            let watched = if children.is_empty() {
                random.below(count)
            } else {
                children[random.below(children.len())]
            };
            let look = if random.percent(50) {
                Step::Inspect { target: watched }
            } else {
                Step::Switch {
                    to: watched,
                    value: Value::U32(number + 1),
                    catch: catch(random),
                }
            };
            vec![
                Step::Switch {
                    to: parent,
                    value: Value::U32(number),
                    catch: Catch::Everything,
                },
                look,
            ]
        }
        20..=29 => vec![
            Step::DropHandle { to: me },
            Step::Switch {
                to: if random.percent(50) { parent } else { 0 },
                value: Value::U32(number),
                catch: catch(random),
            },
        ],
        _ => Vec::new(),
    }
}

/// A value type: mostly `u32`.
fn kind(random: &mut SplitMix64) -> Kind {
    if random.percent(12) {
        Kind::Stray
    } else {
        Kind::U32
    }
}

/// Which panics a transfer step catches.
fn catch(random: &mut SplitMix64) -> Catch {
    match random.below(100) {
        0..=44 => Catch::Nothing,
        45..=89 => Catch::Boom,
        _ => Catch::Everything,
    }
}

/// A step of greenlet `me` at `position`, among `count` greenlets. Numbers carried by values
/// and payloads name where they come from (`me * 100 + position`), which makes traces readable.
fn step(random: &mut SplitMix64, count: usize, me: usize, position: usize) -> Step {
    let number = (me * 100 + position) as u32;
    let any = |random: &mut SplitMix64| random.below(count);
    // Not main: dropping main's handle does nothing worth testing.
    let not_main = |random: &mut SplitMix64| {
        if count > 1 {
            random.between(1, count - 1)
        } else {
            0
        }
    };
    match random.below(100) {
        0..=33 => {
            let value = if random.percent(12) {
                Value::Stray(number)
            } else {
                Value::U32(number)
            };
            Step::Switch {
                to: any(random),
                value,
                catch: catch(random),
            }
        }
        34..=43 => {
            let payload = if random.percent(30) {
                Thrown::Exit(number)
            } else {
                Thrown::Boom(number)
            };
            Step::Throw {
                to: any(random),
                payload,
                catch: catch(random),
            }
        }
        44..=51 => Step::Kill {
            to: any(random),
            catch: catch(random),
        },
        52..=67 => Step::DropHandle {
            to: not_main(random),
        },
        68..=80 => Step::SetParent {
            child: if random.percent(5) {
                0
            } else {
                not_main(random)
            },
            parent: any(random),
        },
        81..=85 => Step::KeepSelf,
        86..=93 => Step::Inspect {
            target: any(random),
        },
        _ => Step::Switch {
            // Switching to yourself, or to a parent: common moves in greenlet code.
            to: if random.percent(50) { me } else { 0 },
            value: Value::U32(number),
            catch: catch(random),
        },
    }
}
