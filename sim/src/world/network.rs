//! The simulated network and disks: delays, loss, duplication, clogging and partitions on
//! the way between members; disk operations in order, with latency, errors and crashes.

use super::*;

impl World {
    // -----------------------------------------------------------------------------------------
    // Network and disk
    // -----------------------------------------------------------------------------------------

    pub(super) fn send(&mut self, from: MemberId, to: MemberId, msg: PeerMessage) {
        self.counters.messages += 1;
        if self.faults_on && self.rng.chance(self.options.net_loss) {
            self.counters.dropped += 1;
            return;
        }
        // raft tolerates duplicated messages, except a forwarded proposal: two copies become two
        // log entries (neither raft nor etcd deduplicates proposals). The peer transport runs on
        // TCP and never resends, so it cannot duplicate one; neither does the simulator.
        let is_proposal = matches!(&msg, PeerMessage::Raft(m) if m.get_msg_type() == raft::eraftpb::MessageType::MsgPropose);
        let duplicate =
            self.faults_on && !is_proposal && self.rng.chance(self.options.net_duplicate);
        if duplicate {
            self.counters.duplicated += 1;
            self.deliver_later(from, to, msg.clone());
        }
        self.deliver_later(from, to, msg);
    }

    /// Schedules a message's arrival after the network's delay.
    fn deliver_later(&mut self, from: MemberId, to: MemberId, msg: PeerMessage) {
        let delay = self
            .rng
            .between(self.options.net_delay_min_ns, self.options.net_delay_max_ns);
        let clog = self.clogged.get(&(from, to)).copied().unwrap_or(0);
        let at = self.now + delay + clog;
        self.schedule(at, Event::Deliver { from, to, msg });
    }

    pub(super) fn disk_op(&mut self, id: MemberId, io: IoId, op: DiskOp) {
        let latency = self.rng.between(1_000, self.options.disk_latency_max_ns);
        let member = self.members.get_mut(&id).expect("member");
        let at = if in_background(&op) {
            // Written by a thread of its own, as the server does: it overtakes and is overtaken
            // by the queue, and takes longer (a whole key space).
            self.now + latency * self.rng.between(1, 10)
        } else {
            // The disk thread runs batches in order: an append's bytes reach the page cache
            // when its batch starts (now, if the disk is idle), and are durable only once the
            // batch's sync completes.
            member.disk.issue(self.now, latency, op.clone())
        };
        let incarnation = member.incarnation;
        let cold = matches!(op, DiskOp::SaveSnapshot { .. }).then(|| member.cold.clone());
        self.schedule(
            at,
            Event::DiskDone {
                member: id,
                incarnation,
                io,
                op,
                cold,
            },
        );
    }

    pub(super) fn disk_done(
        &mut self,
        id: MemberId,
        incarnation: u64,
        io: IoId,
        op: DiskOp,
        cold: Option<MemoryColdStore>,
    ) {
        let fail = self.faults_on
            && self.options.disk_error > 0.0
            && self.rng.chance(self.options.disk_error);
        let member = self.members.get_mut(&id).expect("member");
        if member.incarnation != incarnation || member.node.is_none() {
            return;
        }
        if fail {
            self.counters.disk_errors += 1;
            self.log(id, || format!("disk error on io {}", io.0));
            self.input(
                id,
                Input::DiskDone {
                    io,
                    result: Err(DiskError::described("simulated fsync failure".into())),
                },
            );
            return;
        }
        match &op {
            // The bytes were written when the op started; completion makes them durable.
            DiskOp::AppendWal { sync, .. } => {
                if *sync {
                    member.disk.synced_len = member.disk.wal.len();
                }
            }
            other => member
                .disk
                .execute(other, &cold.unwrap_or_default())
                .expect("a snapshot's cold values were pinned when it was submitted"),
        }
        if !in_background(&op) {
            member.disk.retire_front();
        }
        self.input(id, Input::DiskDone { io, result: Ok(()) });
    }
}

/// Whether the disk runs `op` beside its queue rather than in it.
pub(super) fn in_background(op: &DiskOp) -> bool {
    matches!(op, DiskOp::SaveSnapshot { file, .. } if file.may_complete_out_of_order())
}
