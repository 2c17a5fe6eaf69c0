//! Linearizable reads of one key as the server's client-port workers answer them
//! (`detcd::node::LocalReads`): each waits for a read barrier, shared with the reads that
//! arrive at the member before its node takes the barrier, then is answered from the member's
//! latest view. The barrier reaches the node a little after it was asked, as it crosses the
//! server's channel to the node's thread; reads that come meanwhile share it.

use super::*;
use detcd::node::answers_after_barrier;
use detcd::proto::detcdpb::ReadBarrierRequest;
use detcd::proto::etcdserverpb::RangeRequest;

/// How long a barrier may take to reach the node, at most (ns).
const BARRIER_HOP_MAX_NS: u64 = 50_000;

/// The reads waiting for one barrier: their request ids and requests.
pub(super) type BarrierReads = Vec<(RequestId, RangeRequest)>;

impl World {
    /// Makes `request` wait for a read barrier at `member` if it is a read the server answers
    /// so; answers whether it does.
    pub(super) fn wait_for_barrier(
        &mut self,
        member: MemberId,
        rid: RequestId,
        request: &ClientRequest,
    ) -> bool {
        let ClientRequest::Range(range) = request else {
            return false;
        };
        let Some(m) = self.members.get_mut(&member) else {
            return false;
        };
        if m.paused || !answers_after_barrier(range) {
            return false;
        }
        m.reads_wanted = true;
        if let Some(barrier) = m.rounds.join(m.batches) {
            let reads = m.barrier_reads.get_mut(&barrier).expect("an open barrier");
            reads.push((rid, range.clone()));
            self.counters.coverage.hit("range.shared-read-barrier");
            return true;
        }
        self.next_request += 1;
        let barrier = RequestId(self.next_request);
        let m = self.members.get_mut(&member).expect("member");
        m.rounds.open(m.batches, barrier);
        m.barrier_reads.insert(barrier, vec![(rid, range.clone())]);
        let incarnation = m.incarnation;
        let at = self.now + self.rng.below(BARRIER_HOP_MAX_NS);
        self.schedule(
            at,
            Event::ReadBarrier {
                member,
                incarnation,
                barrier,
            },
        );
        true
    }

    /// The barrier reaches the member's node.
    pub(super) fn ask_read_barrier(
        &mut self,
        member: MemberId,
        incarnation: u64,
        barrier: RequestId,
    ) {
        if self.members[&member].incarnation != incarnation {
            return;
        }
        let request = ClientRequest::ReadBarrier(ReadBarrierRequest {});
        self.input(
            member,
            Input::Client {
                id: barrier,
                request,
                credentials: None,
            },
        );
    }

    /// Answers the reads that waited for `barrier` if it is one: from the member's view when
    /// the barrier passed and the view is new enough, by the node otherwise (as the server
    /// does when its view was dropped meanwhile).
    pub(super) fn barrier_answered(
        &mut self,
        member: MemberId,
        barrier: RequestId,
        result: &Result<ClientResponse, EtcdError>,
    ) -> bool {
        let Some(m) = self.members.get_mut(&member) else {
            return false;
        };
        let Some(reads) = m.barrier_reads.remove(&barrier) else {
            return false;
        };
        m.rounds.close(&barrier);
        let view = m.local_reads.view();
        for (rid, range) in reads {
            let answer = match result {
                Err(e) => Some(Err(e.clone())),
                Ok(ClientResponse::ReadBarrier(passed)) => view
                    .as_ref()
                    .filter(|v| v.serves(passed))
                    .and_then(|v| v.range(&range, |_| false)),
                Ok(other) => unreachable!("a barrier answered with {}", other.name()),
            };
            match answer {
                Some(answer) => {
                    self.counters.coverage.hit("range.answered-after-barrier");
                    self.reply(member, rid, answer.map(ClientResponse::from));
                }
                None => {
                    let request = ClientRequest::Range(range);
                    self.input(
                        member,
                        Input::Client {
                            id: rid,
                            request,
                            credentials: None,
                        },
                    );
                }
            }
        }
        true
    }
}
