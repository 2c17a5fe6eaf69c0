//! The Maintenance service's duties: Status and hashes from this member's own state, alarms
//! through raft, leader transfer, and the answers for what detcd has no need of (defragment,
//! downgrade).

use super::types::RequestId;
use super::{ClientRequest, Node};
use crate::error::EtcdError;
use crate::members::MemberId;
use crate::mvcc::ColdValues;
use crate::proto::detcdpb::internal_request::Op;
use crate::proto::etcdserverpb::{
    downgrade_request::DowngradeAction, AlarmType, DefragmentResponse, DowngradeRequest,
    HashKvRequest, HashKvResponse, HashResponse, MoveLeaderResponse, StatusResponse,
};
use crate::state::Answer;

/// The etcd version detcd reports (Status, `/version`): the API it serves is etcd 3.6's.
/// Kubernetes turns on watch progress requests only for etcd 3.4.31+ and 3.5.13+.
pub const ETCD_VERSION: &str = "3.6.0";
/// The storage version etcd 3.6 reports.
pub const STORAGE_VERSION: &str = "3.6.0";

#[derive(Default)]
pub(super) struct MaintenanceDuty {
    /// MoveLeader requests waiting for their transferee to lead.
    transfers: Vec<(RequestId, MemberId)>,
}

impl Node {
    pub(super) fn handle_maintenance(
        &mut self,
        id: RequestId,
        request: ClientRequest,
    ) -> Result<(), EtcdError> {
        match request {
            ClientRequest::Status(_) => self.finish(id, Ok(self.status())),
            ClientRequest::HashKv(req) => {
                let answer = self.hash_kv(&req)?;
                self.finish(id, Ok(answer));
            }
            ClientRequest::Hash(_) => {
                let cold = ColdValues::hash_kv(self.state.kv().view(), 0);
                let response = HashResponse::default().into();
                self.finish(id, Ok(Answer { response, cold }));
            }
            ClientRequest::Alarm(req) => self.propose(id, Op::Alarm(req)),
            // No bbolt file to rewrite: superseded values leave memory as they are written,
            // and compaction releases their segments.
            ClientRequest::Defragment(_) => {
                self.finish(id, Ok(DefragmentResponse::default().into()))
            }
            ClientRequest::MoveLeader(req) => self.move_leader(id, req.target_id)?,
            ClientRequest::Downgrade(req) => return Err(downgrade_refusal(&req)),
            other => unreachable!("{} is not a Maintenance request", other.name()),
        }
        Ok(())
    }

    pub(super) fn status(&self) -> Answer {
        let errors = self
            .state
            .alarms()
            .list()
            .iter()
            .map(|a| {
                let name = AlarmType::try_from(a.alarm).map_or("NONE", |t| t.as_str_name());
                format!("memberID:{} alarm:{} ", a.member_id, name)
            })
            .collect();
        let wal_since_snapshot = self
            .disk
            .wal_end_offset
            .saturating_sub(self.disk.wal_offset_at_snapshot);
        let in_use = self.state.approximate_size_bytes();
        Answer::from(StatusResponse {
            header: None,
            version: ETCD_VERSION.to_string(),
            db_size: (self.state.snapshot_bytes_estimate() + wal_since_snapshot) as i64,
            leader: self.leader_id().unwrap_or(0),
            raft_index: self.commit_index(),
            raft_term: self.term(),
            raft_applied_index: self.applied_index,
            errors,
            db_size_in_use: in_use as i64,
            is_learner: self.is_learner(),
            storage_version: STORAGE_VERSION.to_string(),
            db_size_quota: self.cfg.quota_bytes as i64,
            downgrade_info: None,
        })
    }

    /// HashKV as of a revision, computed by the driver as it sends the answer (hashing reads
    /// superseded values).
    fn hash_kv(&self, req: &HashKvRequest) -> Result<Answer, EtcdError> {
        let kv = self.state.kv();
        if req.revision > 0 && req.revision < kv.compact_revision() {
            return Err(EtcdError::Compacted);
        }
        if req.revision > kv.current_revision() {
            return Err(EtcdError::FutureRev);
        }
        let revision = if req.revision > 0 {
            req.revision
        } else {
            kv.current_revision()
        };
        Ok(Answer {
            response: HashKvResponse {
                hash_revision: revision,
                ..HashKvResponse::default()
            }
            .into(),
            cold: ColdValues::hash_kv(kv.view(), revision),
        })
    }

    /// etcd's MoveLeader: only the leader transfers, only to a voter; answered once the
    /// transferee leads (or when the request times out).
    fn move_leader(&mut self, id: RequestId, target: MemberId) -> Result<(), EtcdError> {
        if !self.is_leader() {
            return Err(EtcdError::NotLeader);
        }
        let voter = self.raw.raft.prs().conf().voters().contains(target);
        if !voter {
            return Err(EtcdError::BadLeaderTransferee);
        }
        if target == self.cfg.id {
            self.finish(id, Ok(MoveLeaderResponse::default().into()));
            return Ok(());
        }
        self.raw.transfer_leader(target);
        self.maintenance.transfers.push((id, target));
        Ok(())
    }

    /// Answers the MoveLeader requests whose transferee now leads.
    pub(super) fn finish_leader_transfers(&mut self) {
        if self.maintenance.transfers.is_empty() {
            return;
        }
        let leader = self.leader_id();
        let (done, waiting) = std::mem::take(&mut self.maintenance.transfers)
            .into_iter()
            .filter(|(id, _)| self.pending.contains(*id))
            .partition(|(_, target)| Some(*target) == leader);
        self.maintenance.transfers = waiting;
        for (id, _) in done {
            self.finish(id, Ok(MoveLeaderResponse::default().into()));
        }
    }

    /// After a compaction applied here: the hash at its revision, for the corruption check.
    pub(super) fn hash_compaction(&mut self, revision: i64) {
        // The driver hashes through the cold segments: their writes must reach it first.
        self.emit_cold_ops();
        self.outputs.push_back(super::Output::HashAt {
            revision,
            view: self.state.kv().view(),
        });
    }

    /// Reports this member's hash at a compaction revision through raft; every member compares
    /// it with the others' when it applies the report (`alarm`).
    pub(super) fn report_hash(&mut self, revision: i64, hash: u32) {
        let report = crate::proto::detcdpb::HashReport {
            member: self.cfg.id,
            revision,
            hash,
        };
        let proposal = self.proposals.next_id();
        let data = super::clients::encode_proposal(self.cfg.id, proposal, Op::HashReport(report));
        self.propose_bytes(data);
    }

    /// Whether raft runs this member as a learner.
    pub fn is_learner(&self) -> bool {
        self.raw.raft.prs().conf().learners().contains(&self.cfg.id)
    }
}

/// detcd cannot downgrade (it has one storage format), so every downgrade is refused with the
/// error etcd gives for a target it cannot go to.
fn downgrade_refusal(req: &DowngradeRequest) -> EtcdError {
    if req.action == DowngradeAction::Cancel as i32 {
        return EtcdError::NoInflightDowngrade;
    }
    let well_formed = req
        .version
        .split_once('.')
        .is_some_and(|(major, minor)| major.parse::<u32>().is_ok() && minor.parse::<u32>().is_ok());
    match well_formed {
        true => EtcdError::InvalidDowngradeTargetVersion,
        false => EtcdError::WrongDowngradeVersionFormat,
    }
}
