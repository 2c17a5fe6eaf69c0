//! What one member's answers promise together. A member answers a write once it has applied
//! it, and a read (a serializable one too) from what it has applied, so while its process
//! runs, the revisions of its KV answers never go back: an operation invoked after another
//! one of the same member returned is answered at a revision at least as high. A client that
//! writes through a member and then reads serializably through it sees its write; etcd's
//! clients rely on it, and linearizability says nothing of serializable reads.
//!
//! A restart may begin behind what the member had applied (it replays its log up to the commit
//! index it persisted), so the rule holds per run of the process.

use std::collections::BTreeMap;

use detcd::node::{ClientRequest, MemberId};

use crate::history::{Op, Outcome, SimNanos};

/// An answer that reflects what its member had applied: (returned at, revision, op id).
type Answered = (SimNanos, i64, u64);

/// Checks every member's KV answers, per run of its process.
pub fn check(ops: &[Op]) -> Result<(), String> {
    let mut runs: BTreeMap<(MemberId, u64), Vec<(SimNanos, Answered)>> = BTreeMap::new();
    for op in ops {
        let Outcome::Ok {
            response,
            returned_at,
        } = &op.outcome
        else {
            continue;
        };
        let (true, Some(revision)) = (is_kv(&op.request), response.revision()) else {
            continue;
        };
        runs.entry((op.member, op.incarnation))
            .or_default()
            .push((op.invoked_at, (*returned_at, revision, op.id)));
    }
    for ((member, incarnation), answers) in runs {
        check_run(answers).map_err(|why| {
            format!("member {member} (incarnation {incarnation}) went back in time: {why}")
        })?;
    }
    Ok(())
}

/// One run's answers, each with when it was invoked: sweeps the returns in time order and
/// keeps the highest revision answered so far.
fn check_run(mut answers: Vec<(SimNanos, Answered)>) -> Result<(), String> {
    let mut returns: Vec<Answered> = answers.iter().map(|&(_, answered)| answered).collect();
    returns.sort_unstable();
    answers.sort_unstable_by_key(|&(invoked_at, (_, _, id))| (invoked_at, id));
    let mut highest: Option<(i64, u64)> = None;
    let mut next_return = returns.iter().peekable();
    for (invoked_at, (_, revision, id)) in answers {
        while let Some(&&(returned_at, r, earlier)) = next_return.peek() {
            if returned_at >= invoked_at {
                break;
            }
            if highest.is_none_or(|(h, _)| r > h) {
                highest = Some((r, earlier));
            }
            next_return.next();
        }
        if let Some((h, earlier)) = highest.filter(|&(h, _)| revision < h) {
            return Err(format!(
                "op {id} was answered at revision {revision}, after op {earlier} had been \
                 answered at revision {h}"
            ));
        }
    }
    Ok(())
}

/// The requests a member answers from its own applied state.
fn is_kv(request: &ClientRequest) -> bool {
    matches!(
        request,
        ClientRequest::Range(_)
            | ClientRequest::Put(_)
            | ClientRequest::DeleteRange(_)
            | ClientRequest::Txn(_)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_below_one_returned_before_it_was_invoked_fails() {
        // Op 1 returned at 10 with revision 5; op 2, invoked at 11, answered at 4.
        let answers = vec![(0, (10, 5, 1)), (11, (12, 4, 2))];
        assert!(check_run(answers).unwrap_err().contains("op 2"));
    }

    #[test]
    fn overlapping_answers_may_come_in_any_order() {
        let answers = vec![(0, (10, 5, 1)), (10, (12, 4, 2)), (5, (20, 3, 3))];
        assert_eq!(check_run(answers), Ok(()));
    }
}
