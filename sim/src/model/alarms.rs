//! etcd's alarm table restated: which alarms stand, and which writes they refuse (CORRUPT
//! every write a client asks for; NOSPACE those that add data: puts, grants, and txns with a
//! put in either branch at any depth).

use std::collections::BTreeSet;

use detcd::error::EtcdError;
use detcd::proto::detcdpb::internal_request::Op;
use detcd::proto::etcdserverpb::{
    alarm_request::AlarmAction, request_op::Request, AlarmMember, AlarmRequest, AlarmType,
    TxnRequest,
};

/// Raised alarms as (member, alarm type).
#[derive(Clone, Debug, Default)]
pub struct AlarmsModel {
    raised: BTreeSet<(u64, i32)>,
}

impl AlarmsModel {
    /// GET lists (NONE: every type); ACTIVATE and DEACTIVATE answer the alarm they changed, or
    /// nothing. Only NOSPACE and CORRUPT can be raised.
    pub fn apply(&mut self, a: &AlarmRequest) -> Vec<AlarmMember> {
        let pair = (a.member_id, a.alarm);
        let raisable = a.alarm == AlarmType::Nospace as i32 || a.alarm == AlarmType::Corrupt as i32;
        let listed: Vec<(u64, i32)> = match AlarmAction::try_from(a.action) {
            Ok(AlarmAction::Get) => self
                .raised
                .iter()
                .filter(|(_, t)| a.alarm == AlarmType::None as i32 || *t == a.alarm)
                .copied()
                .collect(),
            Ok(AlarmAction::Activate) if raisable && self.raised.insert(pair) => vec![pair],
            Ok(AlarmAction::Deactivate) if self.raised.remove(&pair) => vec![pair],
            _ => Vec::new(),
        };
        listed
            .into_iter()
            .map(|(member_id, alarm)| AlarmMember { member_id, alarm })
            .collect()
    }

    /// The error an entry's write gets while an alarm stands.
    pub fn refuses(&self, op: &Op) -> Option<EtcdError> {
        fn puts(t: &TxnRequest) -> bool {
            t.success
                .iter()
                .chain(&t.failure)
                .any(|r| match &r.request {
                    Some(Request::RequestPut(_)) => true,
                    Some(Request::RequestTxn(inner)) => puts(inner),
                    _ => false,
                })
        }
        let (write, adds) = match op {
            Op::Put(_) | Op::LeaseGrant(_) => (true, true),
            Op::Txn(t) => (true, puts(t)),
            Op::DeleteRange(_) | Op::Compaction(_) | Op::AutoCompaction(_) | Op::LeaseRevoke(_) => {
                (true, false)
            }
            _ => (false, false),
        };
        let raised = |kind: AlarmType| self.raised.iter().any(|(_, t)| *t == kind as i32);
        if write && raised(AlarmType::Corrupt) {
            Some(EtcdError::Corrupt)
        } else if adds && raised(AlarmType::Nospace) {
            Some(EtcdError::NoSpace)
        } else {
            None
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (u64, i32)> + '_ {
        self.raised.iter().copied()
    }
}
