//! Seeded random bridge programs: scopes up to [`MAX_DEPTH`] deep, each with a handful of
//! operations, weighted towards the shapes that matter: functions that stash their greenlet
//! and switch away, functions that poll or drop another `AsyncDef`, leaks, and resumptions
//! after a scope (and its datum) ended.

use super::program::{
    Action, Ending, Guard, Inner, Operation, Program, Resumption, SLOTS, Scope, Wait,
};
use super::random::SplitMix64;

/// How many scopes may nest inside the outermost one.
pub(crate) const MAX_DEPTH: usize = 2;

/// The longest function script.
const MAX_SCRIPT: usize = 6;

/// Numbers handed out to data and functions, in order.
#[derive(Default)]
struct Names {
    data: usize,
    functions: usize,
}

/// The program for `seed`.
pub(crate) fn generate(seed: u64) -> Program {
    let mut random = SplitMix64::new(seed);
    let mut names = Names::default();
    Program {
        root: scope(&mut random, &mut names, 0),
    }
}

fn scope(random: &mut SplitMix64, names: &mut Names, depth: usize) -> Scope {
    let datum = names.data;
    names.data += 1;
    let count = random.between(2, 9);
    // The slots the scope has filled so far (roughly: a function may empty one): most
    // operations pick one of them, and a new AsyncDef goes to an empty one.
    let mut filled = [false; SLOTS];
    let mut operations = Vec::with_capacity(count);
    for _ in 0..count {
        operations.push(operation(random, names, depth, &mut filled));
    }
    let endings = [(); SLOTS].map(|()| {
        if random.percent(50) {
            Ending::Forget
        } else {
            Ending::Drop
        }
    });
    Scope {
        datum,
        operations,
        endings,
    }
}

/// A slot, `filled` or not as `want_filled` asks when there is one.
fn pick(random: &mut SplitMix64, filled: &[bool; SLOTS], want_filled: bool) -> usize {
    let matching: Vec<usize> = (0..SLOTS)
        .filter(|&slot| filled[slot] == want_filled)
        .collect();
    if matching.is_empty() || random.percent(10) {
        random.below(SLOTS)
    } else {
        matching[random.below(matching.len())]
    }
}

fn operation(
    random: &mut SplitMix64,
    names: &mut Names,
    depth: usize,
    filled: &mut [bool; SLOTS],
) -> Operation {
    match random.below(100) {
        0..35 => {
            let slot = pick(random, filled, false);
            let function = names.functions;
            names.functions += 1;
            let inner = random.percent(50).then(|| {
                let mut others = *filled;
                others[slot] = false;
                let inner = if others.contains(&true) {
                    pick(random, &others, true)
                } else {
                    (slot + random.between(1, SLOTS - 1)) % SLOTS
                };
                let owned = random.percent(50);
                if owned {
                    filled[inner] = false;
                }
                Inner { slot: inner, owned }
            });
            filled[slot] = true;
            let length = random.between(1, MAX_SCRIPT);
            let mut script: Vec<Action> = (0..length)
                .map(|_| action(random, inner.is_some()))
                .collect();
            if inner.is_some() && random.percent(50) {
                script.insert(0, Action::PollInner);
            }
            if random.percent(60) {
                script.insert(0, Action::Stash);
            }
            Operation::Create {
                function,
                slot,
                borrows: if random.percent(75) {
                    0
                } else {
                    random.below(depth + 1)
                },
                inner,
                script,
            }
        }
        35..55 => Operation::Poll {
            slot: pick(random, filled, true),
        },
        55..62 => {
            let slot = pick(random, filled, true);
            filled[slot] = false;
            Operation::Drop { slot }
        }
        62..68 => {
            let slot = pick(random, filled, true);
            filled[slot] = false;
            Operation::Forget { slot }
        }
        68..84 => Operation::Resume {
            stashed: random.below(4),
            resumption: match random.below(10) {
                0..6 => Resumption::Switch,
                6..8 => Resumption::Throw,
                _ => Resumption::Kill,
            },
        },
        _ if depth < MAX_DEPTH => Operation::Scope(scope(random, names, depth + 1)),
        _ => Operation::Poll {
            slot: pick(random, filled, true),
        },
    }
}

fn wait(random: &mut SplitMix64) -> Wait {
    match random.below(3) {
        0 => Wait::Ready,
        1 => Wait::PendingOnce,
        _ => Wait::PendingForever,
    }
}

fn action(random: &mut SplitMix64, has_inner: bool) -> Action {
    let catch = random.percent(50);
    match random.below(100) {
        0..25 => Action::Await {
            wait: wait(random),
            catch,
        },
        25..35 => Action::Stash,
        35..48 => Action::SwitchToMain { catch },
        48..56 => Action::SwitchToStashed {
            stashed: random.below(4),
            catch,
        },
        56..70 if has_inner => Action::PollInner,
        70..77 if has_inner => Action::DropInner,
        77..80 if has_inner => Action::ForgetInner,
        56..80 => Action::Await {
            wait: wait(random),
            catch,
        },
        80..87 => Action::Panic { catch },
        _ => Action::Guard(match random.below(4) {
            0 => Guard::Plain,
            1 => Guard::Panics,
            2 => Guard::Awaits(wait(random)),
            _ => Guard::TriesToAwait(wait(random)),
        }),
    }
}
