//! The NOSPACE alarm, kept in step with the quota (`--quota-backend-bytes`).
//!
//! A member that refuses a write for quota while the space in use is above
//! `CLEAR_AT_PERCENT` of the quota raises NOSPACE for itself through raft, as etcd does: `alarm
//! list`, Status and `/health` show it, and every member refuses puts and grants at apply. Unlike
//! etcd the alarm is not latched: once compaction and deletes bring the space in use to
//! `CLEAR_AT_PERCENT` or below, the leader clears it (a raise needs a refusal above that line,
//! so the two never chase each other). An operator can still raise or disarm it by hand.

use std::cell::Cell;

use super::Node;
use crate::error::EtcdError;
use crate::proto::detcdpb::internal_request::Op;
use crate::proto::etcdserverpb::{alarm_request::AlarmAction, AlarmRequest, AlarmType};
use crate::time::Instant;

/// The share of the quota at or below which NOSPACE is cleared, and above which a refusal
/// raises it.
pub const CLEAR_AT_PERCENT: u64 = 90;

#[derive(Default)]
pub(super) struct SpaceDuty {
    /// A write was refused for quota since the alarm was last considered (set where refusals
    /// are decided, which only reads the node).
    refused: Cell<bool>,
    /// When this member last proposed a change of the alarm: one at a time, an election
    /// timeout apart, until the first one applies.
    proposed_at: Option<Instant>,
}

impl Node {
    /// Refuses a write that would grow the state past its quota.
    pub(super) fn check_quota(&self, cost: u64) -> Result<(), EtcdError> {
        if cost > 0 && self.state.approximate_size_bytes() + cost > self.cfg.quota_bytes {
            self.space.refused.set(true);
            return Err(EtcdError::NoSpace);
        }
        Ok(())
    }

    /// Proposes raising NOSPACE after a refusal, or (as leader) clearing it once there is room.
    pub(super) fn keep_space_alarm(&mut self) {
        let refused = self.space.refused.get();
        let clearing = self.is_leader() && self.state.alarms().is_raised(AlarmType::Nospace);
        let waiting = self
            .space
            .proposed_at
            .is_some_and(|at| self.now < at + self.cfg.election_timeout);
        if !(refused || clearing) || waiting {
            return;
        }
        self.space.refused.set(false);
        let nospace = AlarmType::Nospace as i32;
        let raised: Vec<u64> = self
            .state
            .alarms()
            .list()
            .into_iter()
            .filter(|a| a.alarm == nospace)
            .map(|a| a.member_id)
            .collect();
        let used = self.state.approximate_size_bytes().saturating_mul(100);
        let above_line = used > self.cfg.quota_bytes.saturating_mul(CLEAR_AT_PERCENT);
        let changes: Vec<(AlarmAction, u64)> = if refused && above_line {
            match raised.contains(&self.cfg.id) {
                true => Vec::new(),
                false => vec![(AlarmAction::Activate, self.cfg.id)],
            }
        } else if !above_line && clearing && !self.cfg.bugs.space_alarm_latched {
            raised
                .into_iter()
                .map(|member| (AlarmAction::Deactivate, member))
                .collect()
        } else {
            Vec::new()
        };
        self.space.proposed_at = (!changes.is_empty()).then_some(self.now);
        for (action, member_id) in changes {
            let alarm = AlarmRequest {
                action: action as i32,
                member_id,
                alarm: nospace,
            };
            let proposal = self.proposals.next_id();
            let data = super::clients::encode_proposal(self.cfg.id, proposal, Op::Alarm(alarm));
            self.propose_bytes(data);
        }
    }
}
