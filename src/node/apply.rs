//! Applying committed entries: each goes to the replicated state in log order; its answer goes
//! to the client waiting on this member, its effects to the duties that follow the state (the
//! lease clocks).

use std::collections::VecDeque;

use prost::Message as _;
use raft::eraftpb::{Entry, EntryType};

use super::types::Output;
use super::Node;
use crate::api::ClientResponse;
use crate::auth::AuthInfo;
use crate::members::RaftChange;
use crate::proto::detcdpb::{internal_request::Op, InternalRequest};
use crate::time::Instant;

/// When entries reached this member's log, by runs of indexes. A lease record's remaining time
/// counts from when its entry reached the log rather than from when it was applied: an entry
/// proposed just before its leader failed may be committed by the next leader much later, and
/// counting from then would stretch the lease by the whole election.
#[derive(Default)]
pub(super) struct AppendTimes {
    /// `(last index, when)` per run, in index order; a run covers the indexes after the
    /// previous run's last.
    runs: VecDeque<(u64, Instant)>,
}

impl AppendTimes {
    /// Entries `first..=last` reached the log at `now`, replacing any from `first` on that raft
    /// dropped.
    pub fn appended(&mut self, first: u64, last: u64, now: Instant) {
        while let Some(&(end, at)) = self.runs.back() {
            if end < first {
                break;
            }
            self.runs.pop_back();
            let start = self.runs.back().map_or(0, |(e, _)| *e) + 1;
            if start < first {
                self.runs.push_back((first - 1, at));
                break;
            }
        }
        self.runs.push_back((last, now));
    }

    /// When the entry at `index` reached the log: `None` if this member does not know (it came
    /// from the WAL at start or with a snapshot), forgetting the runs before it.
    pub fn take(&mut self, index: u64) -> Option<Instant> {
        while self.runs.front().is_some_and(|(end, _)| *end < index) {
            self.runs.pop_front();
        }
        self.runs.front().map(|(_, at)| *at)
    }
}

impl Node {
    pub(super) fn apply_entries(&mut self, entries: Vec<Entry>) {
        let applied_before = self.applied_index;
        for entry in entries {
            if entry.index <= self.applied_index {
                continue;
            }
            assert_eq!(
                entry.index,
                self.applied_index + 1,
                "committed entries must apply in order"
            );
            self.applied_index = entry.index;
            let normal = entry.get_entry_type() == EntryType::EntryNormal;
            if self.cfg.observe {
                // A configuration change's request rides in the entry's context.
                self.outputs.push_back(Output::Applied {
                    index: entry.index,
                    term: entry.term,
                    data: if normal {
                        entry.data.clone()
                    } else {
                        entry.context.clone()
                    },
                });
            }
            if !normal {
                self.apply_conf_change(&entry);
                if self.stopped.is_some() {
                    break;
                }
                continue;
            }
            if entry.data.is_empty() {
                continue;
            }
            // Every member decodes the same bytes the same way, so skipping an undecodable
            // entry keeps the replicas equal; nobody can be waiting for it.
            if let Ok(request) = InternalRequest::decode(entry.data.as_ref()) {
                self.apply_request(request);
            }
        }
        if self.applied_index > applied_before && self.stopped.is_none() {
            self.release_memory_with_entries();
        }
        self.report_applied();
    }

    /// Applies one request; returns what raft's configuration must do after it, if anything.
    pub(super) fn apply_request(&mut self, request: InternalRequest) -> Option<RaftChange> {
        let caller = AuthInfo {
            user: request.auth_user,
            revision: request.auth_revision,
        };
        let op = request.op?;
        let compaction = matches!(op, Op::Compaction(_) | Op::AutoCompaction(_));
        let auth_change = match &op {
            Op::Auth(change) => Some(change.clone()),
            _ => None,
        };
        if self.bug(|b| b.apply_twice) && self.applied_index % 5 == 0 {
            let again = self.state.apply_as(op.clone(), &caller);
            self.lease_effects(&again.effects, self.now, None);
        }
        let mut applied = self.state.apply_as(op, &caller);
        if let (Some(change), Some(Ok(answer))) = (auth_change, &mut applied.result) {
            if let Some(token) = self.auth_applied(&change, self.applied_index) {
                if let ClientResponse::Authenticate(r) = &mut answer.response {
                    r.token = token;
                }
            }
        }
        let mine = request.origin == self.cfg.id;
        let appended_at = self.appended.take(self.applied_index).unwrap_or(self.now);
        self.lease_effects(
            &applied.effects,
            appended_at,
            mine.then_some(request.request_id),
        );
        self.watch_feed
            .revision_applied(std::mem::take(&mut applied.effects.key_changes));
        if applied.effects.members_changed {
            self.members_changed();
        }
        if compaction && matches!(applied.result, Some(Ok(_))) {
            self.hash_compaction(self.state.kv().compact_revision());
        }
        if mine {
            if let Some(result) = applied.result {
                if let Some(id) = self.pending.take_proposal(request.request_id) {
                    self.finish(id, result);
                }
            }
        }
        applied.effects.raft_change
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn append_times_follow_runs_and_replacements() {
        let t = Instant::from_nanos;
        let mut times = AppendTimes::default();
        times.appended(1, 3, t(10));
        times.appended(4, 6, t(20));
        // raft replaced entries 5 and 6 with new ones up to 8.
        times.appended(5, 8, t(30));
        assert_eq!(times.take(2), Some(t(10)));
        assert_eq!(times.take(4), Some(t(20)));
        assert_eq!(times.take(5), Some(t(30)));
        assert_eq!(times.take(8), Some(t(30)));
        assert_eq!(times.take(9), None);
    }
}
