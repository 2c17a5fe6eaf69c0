//! Building a member from what the driver recovered from its disk: the replicated state from the
//! latest snapshot, raft from the hard state and the WAL's entries, and the bookkeeping of what
//! the WAL holds. Committed entries after the snapshot are applied later, by the ready loop.

use std::collections::VecDeque;

use raft::eraftpb::ConfState;
use raft::RawNode;
use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};

use super::apply::AppendTimes;
use super::auth::AuthDuty;
use super::clients::Proposals;
use super::compaction::Compactor;
use super::disk::DiskState;
use super::leases::LeaseDuty;
use super::requests::{PendingRequests, ReadBatches};
use super::snapshots::SnapshotDuty;
use super::timers::{Timer, TimerTable};
use super::watch::FeedBuilder;
use super::{Config, Node, StartError};
use crate::members::Members;
use crate::raftlog::{election, LogStore};
use crate::state::State;
use crate::time::Instant;
use crate::wal::Recovered;

impl Node {
    /// Builds a member from its recovered disk state. `rng_seed` decides every random choice the
    /// member makes; the driver must give each incarnation of a member a different seed.
    pub fn new(
        cfg: Config,
        recovered: Recovered,
        rng_seed: u64,
        now: Instant,
    ) -> Result<Node, StartError> {
        let mut rng = ChaCha8Rng::seed_from_u64(rng_seed);
        // A member that joins has no configuration until its first snapshot (it may have
        // voted or crashed before that).
        let joining = cfg.join && recovered.snapshot.is_none();
        let (state, snapshot_index) = restore_state(&cfg, &recovered, joining)?;
        if state.members().is_removed(cfg.id) {
            return Err(StartError::Removed);
        }
        let raw = start_raft(&cfg, &recovered, snapshot_index, joining, &mut rng)?;
        let last_index = recovered.entries.last().map_or(snapshot_index, |e| e.index);
        let proposal_nonce = rng.next_u64() ^ last_index.rotate_left(32);
        let next_raft_tick = now + cfg.heartbeat_interval;
        let mut timers = TimerTable::default();
        timers.set(Timer::RaftTick, next_raft_tick);
        let compactor = cfg.auto_compaction.map(|mode| {
            let compactor = Compactor::new(mode, now, state.kv().current_revision());
            timers.set(Timer::AutoCompaction, now + compactor.interval());
            compactor
        });
        let mut node = Node {
            pending: PendingRequests::new(cfg.pending_requests_max),
            reads: ReadBatches::new(proposal_nonce),
            read_barriers_passed: 0,
            proposals: Proposals::new(proposal_nonce),
            disk: DiskState::recovered(&recovered, snapshot_index),
            appended: AppendTimes::default(),
            snapshots: SnapshotDuty::default(),
            leases: LeaseDuty::new(&cfg, proposal_nonce.rotate_left(17)),
            compactor,
            cluster: Default::default(),
            maintenance: Default::default(),
            space: Default::default(),
            auth: AuthDuty::new(cfg.auth_token_ttl),
            watch_feed: FeedBuilder::default(),
            cfg,
            raw,
            rng,
            state,
            applied_index: snapshot_index,
            snapshot_index,
            snapshots_installed: 0,
            snapshots_installed_decoded: 0,
            memory_slices_released_on_time: 0,
            now,
            next_raft_tick,
            timers,
            outputs: VecDeque::new(),
            stopped: None,
        };
        node.leases.restored(node.state.leases(), now);
        node.members_changed();
        node.record_raised_hard_state();
        Ok(node)
    }
}

/// The state of the latest snapshot, or the state a new cluster starts from (nothing at all
/// for a member joining one), with superseded values kept cold.
fn restore_state(
    cfg: &Config,
    recovered: &Recovered,
    joining: bool,
) -> Result<(State, u64), StartError> {
    let (mut state, index) = match &recovered.snapshot {
        Some(snap) => {
            let index = snap.get_metadata().index;
            let state = State::decode_snapshot(&snap.data)
                .map_err(|error| StartError::SnapshotUnreadable { index, error })?;
            (state, index)
        }
        None if joining => (State::new(), 0),
        None => {
            let members = Members::bootstrap(cfg.cluster_id, cfg.initial_members.clone());
            (State::bootstrap(members), 0)
        }
    };
    state.keep_superseded_values_cold(cfg.cold_batch_bytes);
    state.release_compactions_in_slices_of(cfg.compaction_slice_keys);
    state.inject_bugs(cfg.bugs.key_space, cfg.bugs.auth);
    Ok((state, index))
}

/// raft, positioned at the snapshot, with the WAL's entries and hard state.
fn start_raft(
    cfg: &Config,
    recovered: &Recovered,
    snapshot_index: u64,
    joining: bool,
    rng: &mut ChaCha8Rng,
) -> Result<RawNode<LogStore>, StartError> {
    let initial = ConfState {
        voters: cfg.peers.clone(),
        ..Default::default()
    };
    let conf_state = match &recovered.snapshot {
        Some(_) if cfg.bugs.stale_conf_after_restart => initial,
        Some(snap) => snap.get_metadata().get_conf_state().clone(),
        None if joining => ConfState::default(),
        None => initial,
    };
    let known = conf_state.voters.contains(&cfg.id) || conf_state.learners.contains(&cfg.id);
    if !known && !joining {
        return Err(StartError::NotAMember {
            id: cfg.id,
            voters: conf_state.voters,
        });
    }
    let store = LogStore::new(
        recovered.hard_state.clone(),
        conf_state,
        recovered.snapshot.clone(),
        recovered.entries.clone(),
    );
    let election_ticks = cfg.election_ticks();
    let raft_cfg = raft::Config {
        id: cfg.id,
        election_tick: election_ticks,
        heartbeat_tick: 1,
        applied: snapshot_index,
        max_size_per_msg: cfg.raft_message_bytes_max,
        max_inflight_msgs: cfg.raft_inflight_messages_max,
        check_quorum: true,
        pre_vote: true,
        read_only_option: raft::ReadOnlyOption::Safe,
        ..Default::default()
    };
    raft_cfg.validate()?;
    let logger = slog::Logger::root(slog::Discard, slog::o!());
    let mut raw = RawNode::new(&raft_cfg, store, &logger)?;
    // A member alone in its cluster needs no election timeout to know it wins; etcd's initial
    // tick advance gets the same effect.
    let alone = raw.raft.prs().conf().voters().ids().len() == 1;
    if cfg.initial_election_tick_advance && alone && raw.raft.promotable() {
        raw.campaign()?;
    }
    election::override_jitter(&mut raw.raft, rng, election_ticks);
    Ok(raw)
}

#[cfg(test)]
mod tests {
    use raft::eraftpb::Entry;

    use super::*;
    use crate::node::{DiskOp, Output};
    use crate::wal::{decode_wal, Record};

    /// Recovery raised the term to the entry's (a torn write lost the hard state after it): the
    /// member writes the raised hard state, synced, before it counts on it.
    #[test]
    fn a_hard_state_raised_by_recovery_is_written_at_start() {
        let entry = Entry {
            index: 1,
            term: 2,
            ..Default::default()
        };
        let mut recovered = Recovered {
            entries: vec![entry],
            ..Default::default()
        };
        recovered.hard_state.term = 2;
        let mut node =
            Node::new(Config::new(1, vec![1, 2, 3]), recovered, 7, Instant::ZERO).expect("starts");
        let appended = std::iter::from_fn(|| node.poll_output()).find_map(|o| match o {
            Output::Disk {
                op: DiskOp::AppendWal { data, sync },
                ..
            } => Some((data, sync)),
            _ => None,
        });
        let (data, sync) = appended.expect("a WAL append at start");
        assert!(sync);
        let records = decode_wal(0, &data).expect("decodes").records;
        let written: Vec<_> = records.into_iter().map(|r| r.record).collect();
        assert!(matches!(&written[..], [Record::HardState(hs)] if hs.term == 2 && hs.vote == 0));
    }
}
