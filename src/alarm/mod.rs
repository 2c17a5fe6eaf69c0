//! Alarms: a replicated state machine of the alarms raised in the cluster, etcd's NOSPACE and
//! CORRUPT, each raised by (or for) one member. While NOSPACE is raised the cluster takes only
//! reads and deletes; while CORRUPT is raised it refuses every write (`Alarms::refuses`).
//!
//! The corruption check lives here too, on by default (etcd's `CompactHashCheck` is opt-in):
//! every member computes HashKV at each compaction revision it applies and proposes it
//! (`HashReport`); when two members report different hashes for one revision, the cluster
//! raises CORRUPT for the member that disagrees with the first report, on every member at the
//! same entry, and refuses writes until an operator disarms it.
//!
//! Invariants: only NOSPACE and CORRUPT are ever raised (an ACTIVATE of NONE or of an unknown
//! type changes nothing); reports are kept for the latest `REPORTED_REVISIONS_MAX` revisions.

use std::collections::{BTreeMap, BTreeSet};

use crate::error::EtcdError;
use crate::proto::detcdpb::{AlarmTable, HashReport};
use crate::proto::etcdserverpb::{
    alarm_request::AlarmAction, AlarmMember, AlarmRequest, AlarmType,
};

/// Compaction revisions whose reported hashes are kept for comparison.
pub const REPORTED_REVISIONS_MAX: usize = 8;

/// The raised alarms, as (member, alarm type) pairs, and the hashes reported per revision.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Alarms {
    raised: BTreeSet<(u64, i32)>,
    reports: BTreeMap<i64, BTreeMap<u64, u32>>,
}

fn raisable(alarm: i32) -> bool {
    alarm == AlarmType::Nospace as i32 || alarm == AlarmType::Corrupt as i32
}

impl Alarms {
    /// Applies an Alarm request and answers it as etcd does: GET lists the alarms of the type
    /// asked (NONE: all); ACTIVATE and DEACTIVATE list the alarm they raised or cleared, or
    /// nothing when it already was (or was not) raised.
    pub fn apply(&mut self, req: &AlarmRequest) -> Vec<AlarmMember> {
        let pair = (req.member_id, req.alarm);
        let member = |(member_id, alarm): (u64, i32)| AlarmMember { member_id, alarm };
        match AlarmAction::try_from(req.action) {
            Ok(AlarmAction::Get) => self
                .list()
                .into_iter()
                .filter(|a| req.alarm == AlarmType::None as i32 || a.alarm == req.alarm)
                .collect(),
            Ok(AlarmAction::Activate) if raisable(req.alarm) && self.raised.insert(pair) => {
                vec![member(pair)]
            }
            Ok(AlarmAction::Deactivate) if self.raised.remove(&pair) => vec![member(pair)],
            _ => Vec::new(),
        }
    }

    pub fn is_raised(&self, alarm: AlarmType) -> bool {
        self.raised.iter().any(|(_, a)| *a == alarm as i32)
    }

    /// The error a write is refused with while an alarm stands: `adds_data` writes (puts,
    /// grants, txns with puts) under NOSPACE, every write under CORRUPT.
    pub fn refuses(&self, adds_data: bool) -> Option<EtcdError> {
        if self.is_raised(AlarmType::Corrupt) {
            Some(EtcdError::Corrupt)
        } else if adds_data && self.is_raised(AlarmType::Nospace) {
            Some(EtcdError::NoSpace)
        } else {
            None
        }
    }

    pub fn list(&self) -> Vec<AlarmMember> {
        self.raised
            .iter()
            .map(|&(member_id, alarm)| AlarmMember { member_id, alarm })
            .collect()
    }

    /// Records a member's hash at a compaction revision; raises CORRUPT for it when an earlier
    /// report for that revision differs. Returns whether it did.
    pub fn report_hash(&mut self, report: &HashReport) -> bool {
        let hashes = self.reports.entry(report.revision).or_default();
        let first = hashes.values().next().copied();
        hashes.insert(report.member, report.hash);
        while self.reports.len() > REPORTED_REVISIONS_MAX {
            self.reports.pop_first();
        }
        let disagrees = first.is_some_and(|h| h != report.hash);
        if disagrees {
            self.raised
                .insert((report.member, AlarmType::Corrupt as i32));
        }
        disagrees
    }

    pub fn to_snapshot(&self) -> AlarmTable {
        AlarmTable {
            alarms: self.list(),
            reports: self
                .reports
                .iter()
                .flat_map(|(&revision, hashes)| {
                    hashes.iter().map(move |(&member, &hash)| HashReport {
                        member,
                        revision,
                        hash,
                    })
                })
                .collect(),
        }
    }

    pub fn from_snapshot(table: AlarmTable) -> Result<Alarms, String> {
        let mut alarms = Alarms::default();
        for r in table.reports {
            alarms
                .reports
                .entry(r.revision)
                .or_default()
                .insert(r.member, r.hash);
        }
        if alarms.reports.len() > REPORTED_REVISIONS_MAX {
            return Err(format!("hashes of {} revisions", alarms.reports.len()));
        }
        for a in table.alarms {
            if !raisable(a.alarm) {
                return Err(format!("alarm type {} cannot be raised", a.alarm));
            }
            alarms.raised.insert((a.member_id, a.alarm));
        }
        Ok(alarms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(action: AlarmAction, member_id: u64, alarm: AlarmType) -> AlarmRequest {
        AlarmRequest {
            action: action as i32,
            member_id,
            alarm: alarm as i32,
        }
    }

    #[test]
    fn alarms_are_raised_listed_and_cleared_as_etcd_answers() {
        use AlarmAction::*;
        let mut alarms = Alarms::default();
        assert_eq!(alarms.apply(&req(Activate, 1, AlarmType::None)), vec![]);
        assert_eq!(alarms.apply(&req(Activate, 1, AlarmType::Nospace)).len(), 1);
        assert_eq!(alarms.apply(&req(Activate, 1, AlarmType::Nospace)), vec![]);
        assert_eq!(alarms.refuses(true), Some(EtcdError::NoSpace));
        assert_eq!(alarms.refuses(false), None);
        alarms.apply(&req(Activate, 2, AlarmType::Corrupt));
        assert_eq!(alarms.refuses(false), Some(EtcdError::Corrupt));
        assert_eq!(alarms.apply(&req(Get, 0, AlarmType::None)).len(), 2);
        assert_eq!(alarms.apply(&req(Get, 0, AlarmType::Corrupt)).len(), 1);
        let restored = Alarms::from_snapshot(alarms.to_snapshot()).unwrap();
        assert_eq!(restored, alarms);
        assert_eq!(
            alarms.apply(&req(Deactivate, 2, AlarmType::Corrupt)).len(),
            1
        );
        assert_eq!(
            alarms.apply(&req(Deactivate, 2, AlarmType::Corrupt)),
            vec![]
        );
        alarms.apply(&req(Deactivate, 1, AlarmType::Nospace));
        assert_eq!(alarms.refuses(true), None);
    }

    #[test]
    fn members_that_disagree_on_a_hash_raise_corrupt() {
        let report = |member, revision, hash| HashReport {
            member,
            revision,
            hash,
        };
        let mut alarms = Alarms::default();
        assert!(!alarms.report_hash(&report(1, 10, 7)));
        assert!(!alarms.report_hash(&report(2, 10, 7)));
        assert!(!alarms.report_hash(&report(1, 20, 9)));
        assert_eq!(alarms.refuses(false), None);
        assert!(alarms.report_hash(&report(3, 10, 8)));
        assert_eq!(alarms.refuses(false), Some(EtcdError::Corrupt));
        assert_eq!(alarms.list()[0].member_id, 3);
        for revision in 100..120 {
            alarms.report_hash(&report(1, revision, 1));
        }
        let restored = Alarms::from_snapshot(alarms.to_snapshot()).unwrap();
        assert_eq!(restored, alarms);
        assert_eq!(restored.reports.len(), REPORTED_REVISIONS_MAX);
    }
}
