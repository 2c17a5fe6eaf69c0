//! What auto compaction promises (`--auto-compaction-*`), judged against the applied log: a
//! compaction the leader made on its own never takes history its retention keeps, and there is
//! none unless auto compaction is configured.
//!
//! - **revision** mode: it compacts at most to the store's revision before it, minus the
//!   revisions kept;
//! - **periodic** mode: it compacts at most to the revision the cluster had one retention
//!   before the entry was first applied, the retention counted on the proposer's clock at the
//!   largest drift the run allows. The proposer noted that revision from its own applied state
//!   at least one retention of its clock before proposing, and no member applies an index
//!   before the first one did. A proposer whose clock jumped is not judged: a jump takes time
//!   away from every duty kept on that clock.

use std::time::Duration;

use detcd::node::AutoCompaction;
use detcd::proto::detcdpb::internal_request::Op;

use crate::history::{AppliedEntry, Timing};

/// Judges every auto compaction in `log`; `revisions[q]` is the store's revision after log
/// index `q` (`revisions[0]`: the empty store's). Returns how many it judged.
pub fn check(
    log: &[AppliedEntry],
    revisions: &[i64],
    timing: &Timing,
    configured: Option<AutoCompaction>,
) -> Result<u64, String> {
    let mut judged = 0;
    for entry in log {
        let Some(request) = entry.request() else {
            continue;
        };
        let Some(Op::AutoCompaction(compaction)) = &request.op else {
            continue;
        };
        let (index, to) = (entry.index, compaction.revision);
        let bound = match configured {
            None => {
                return Err(format!(
                    "index {index}: an auto compaction to {to}, unconfigured"
                ))
            }
            Some(AutoCompaction::Revision { keep, .. }) => revisions[index as usize - 1] - keep,
            Some(AutoCompaction::Periodic(retention)) => {
                if timing
                    .clock_jumps
                    .iter()
                    .any(|(_, m, _)| *m == request.origin)
                {
                    continue;
                }
                revision_one_retention_before(index, retention, revisions, timing)
            }
        };
        if to > bound {
            return Err(format!(
                "index {index}: auto compaction to {to} by member {} takes history its \
                 retention keeps (at most {bound}; {configured:?})",
                request.origin
            ));
        }
        judged += 1;
    }
    Ok(judged)
}

/// The cluster's revision one retention (at the fastest clock) before index `index` was first
/// applied: the revision after the last index first applied by then.
fn revision_one_retention_before(
    index: u64,
    retention: Duration,
    revisions: &[i64],
    timing: &Timing,
) -> i64 {
    let retention_ns = retention.as_nanos() as u64;
    let true_ns = retention_ns * 1_000_000 / (1_000_000 + timing.drift_ppm_max);
    let applied = timing.applied_at.get(&index).copied().unwrap_or(0);
    let then = applied.saturating_sub(true_ns);
    let last = timing
        .applied_at
        .range(..index)
        .rev()
        .find(|(_, at)| **at <= then)
        .map_or(0, |(i, _)| *i);
    revisions[last as usize]
}
