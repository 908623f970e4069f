//! Shrinking a failing bridge program: greedily removes operations, whole scopes (or keeps
//! only their operations), function steps and inner `AsyncDef`s, and turns leaks into drops,
//! while the program still fails.

use super::program::{Ending, Operation, Program, Scope};

/// The smallest program, one simplification at a time, for which `fails` still holds.
pub(crate) fn shrink(program: &Program, mut fails: impl FnMut(&Program) -> bool) -> Program {
    let mut smallest = program.clone();
    loop {
        let found = candidates(&smallest.root)
            .into_iter()
            .map(|root| Program { root })
            .find(|candidate| fails(candidate));
        match found {
            Some(smaller) => smallest = smaller,
            None => return smallest,
        }
    }
}

/// Every scope one simplification away from `scope`, biggest cuts first.
fn candidates(scope: &Scope) -> Vec<Scope> {
    let mut found = Vec::new();
    let with = |position: usize, replacement: Vec<Operation>| {
        let mut smaller = scope.clone();
        smaller.operations.splice(position..=position, replacement);
        smaller
    };
    for position in 0..scope.operations.len() {
        found.push(with(position, Vec::new()));
    }
    for (position, operation) in scope.operations.iter().enumerate() {
        match operation {
            Operation::Scope(inner) => {
                found.push(with(position, inner.operations.clone()));
                for smaller in candidates(inner) {
                    found.push(with(position, vec![Operation::Scope(smaller)]));
                }
            }
            Operation::Create { script, inner, .. } => {
                for step in 0..script.len() {
                    let mut smaller = operation.clone();
                    if let Operation::Create { script, .. } = &mut smaller {
                        script.remove(step);
                    }
                    found.push(with(position, vec![smaller]));
                }
                if inner.is_some() {
                    let mut smaller = operation.clone();
                    if let Operation::Create { inner, .. } = &mut smaller {
                        *inner = None;
                    }
                    found.push(with(position, vec![smaller]));
                }
            }
            _ => {}
        }
    }
    for slot in 0..scope.endings.len() {
        if scope.endings[slot] == Ending::Forget {
            let mut smaller = scope.clone();
            smaller.endings[slot] = Ending::Drop;
            found.push(smaller);
        }
    }
    found
}
