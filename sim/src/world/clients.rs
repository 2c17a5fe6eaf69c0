//! The KV workload: clients that issue etcd's KV API against random members, one operation at
//! a time, and give up after a timeout, as real clients do.

use super::*;
use crate::checker::linearizability::RequestSummary;

impl World {
    // -----------------------------------------------------------------------------------------
    // Clients
    // -----------------------------------------------------------------------------------------

    pub(super) fn key(&mut self) -> Bytes {
        Bytes::from(format!("k{}", self.rng.below(self.options.keys)))
    }

    /// Records an operation `client` invokes now at `member` and waits for; returns its index
    /// in `ops`.
    pub(super) fn invoke(
        &mut self,
        client: u64,
        member: MemberId,
        request: &ClientRequest,
    ) -> usize {
        let op = self.record_op(client, member, request);
        self.busy_clients.insert(client, op);
        op
    }

    /// Records an operation invoked now; returns its index in `ops`.
    pub(super) fn record_op(
        &mut self,
        client: u64,
        member: MemberId,
        request: &ClientRequest,
    ) -> usize {
        let op = self.ops.len();
        let incarnation = self.members.get(&member).map_or(0, |m| m.incarnation);
        self.ops.push(Op {
            id: op as u64,
            client,
            member,
            incarnation,
            request: request.clone(),
            invoked_at: self.now,
            outcome: Outcome::Unknown,
            proposal: None,
            acting_as: None,
            signed_at: None,
        });
        op
    }

    /// A fresh request id for `op` at `member`, by which its reply finds the operation.
    pub(super) fn track(&mut self, member: MemberId, op: usize) -> RequestId {
        self.next_request += 1;
        let rid = RequestId(self.next_request);
        self.members
            .get_mut(&member)
            .expect("member")
            .requests
            .insert(rid, op);
        rid
    }

    pub(super) fn client_next(&mut self, client: u64) {
        if self.issued >= self.options.ops || self.busy_clients.contains_key(&client) {
            return;
        }
        self.issued += 1;
        let request = if self.is_lease_client(client) {
            self.lease_request(client)
        } else if self.options.auth && self.rng.chance(0.05) {
            self.user_auth_read(client)
        } else {
            self.request(client)
        };
        let member = 1 + self.rng.below(self.options.members);
        let op = self.invoke(client, member, &request);
        let give_up = self.now + self.options.client_timeout_ns;
        self.schedule(give_up, Event::ClientGiveUp { op });
        let running = self.members[&member].node.is_some();
        if !running {
            // Connection refused: the client learns at once that nothing happened.
            self.ops[op].outcome = Outcome::Err {
                error: EtcdError::Stopped,
                returned_at: self.now,
            };
            self.client_done(op);
            return;
        }
        let rid = self.track(member, op);
        self.log(member, || {
            format!("client {client} op {op}: {}", RequestSummary(&request))
        });
        self.mix(op as u64 ^ (member << 32));
        // A request with credentials goes to the node: while auth is on, the client port's own
        // answers stop (no view), and the node checks the sender.
        let credentials = self.client_credentials(client);
        self.ops[op].acting_as = credentials.as_ref().map(|_| self.client_user(client));
        if let Some(detcd::api::Credentials::Signed { revision, .. }) = &credentials {
            self.ops[op].signed_at = Some(*revision);
        }
        if credentials.is_none() {
            if let Some(answer) = self.answer_locally(member, &request) {
                return self.reply(member, rid, answer);
            }
            if self.wait_for_barrier(member, rid, &request) {
                return;
            }
        }
        self.input(
            member,
            Input::Client {
                id: rid,
                request,
                credentials,
            },
        );
    }

    /// A serializable read of one key, or a keepalive the leader's records cover, answered as
    /// the server's client-port workers answer it: from the member's latest view, without a
    /// step of its node. A paused process answers nothing, and a member without a view (none
    /// taken yet, or dropped) leaves it to the node.
    fn answer_locally(
        &mut self,
        member: MemberId,
        request: &ClientRequest,
    ) -> Option<Result<ClientResponse, EtcdError>> {
        let now = self.now;
        let m = self.members.get_mut(&member)?;
        if m.paused {
            return None;
        }
        let answer = match request {
            ClientRequest::Range(range) if answers_locally(range) => {
                m.reads_wanted = true;
                let answer = m.local_reads.view()?.range(range, |_| false)?;
                self.counters.coverage.hit("range.answered-locally");
                answer.map(ClientResponse::from)
            }
            ClientRequest::LeaseKeepAlive(keepalive) => {
                let local = m.clock.local(now);
                let answer = m.local_keepalives.keep_alive(keepalive.id, local)?;
                self.counters
                    .coverage
                    .hit("lease.keepalive-answered-locally");
                Ok(ClientResponse::from(answer))
            }
            _ => return None,
        };
        Some(answer)
    }

    pub(super) fn reply(
        &mut self,
        member: MemberId,
        rid: RequestId,
        result: Result<ClientResponse, EtcdError>,
    ) {
        if self.barrier_answered(member, rid, &result) {
            return;
        }
        let Some(op) = self
            .members
            .get_mut(&member)
            .and_then(|m| m.requests.remove(&rid))
        else {
            return;
        };
        if self.recipe_ops.contains_key(&op) {
            self.record_outcome(member, op, result.clone());
            return self.recipe_reply(op, result);
        }
        if self.busy_clients.get(&self.ops[op].client) != Some(&op) {
            return; // the client gave up already
        }
        self.record_outcome(member, op, result);
        self.client_done(op);
    }

    fn record_outcome(
        &mut self,
        member: MemberId,
        op: usize,
        result: Result<ClientResponse, EtcdError>,
    ) {
        let now = self.now;
        self.log(member, || format!("reply op {op}: {}", summarize(&result)));
        self.mix(op as u64 ^ u64::from(result.is_ok()) << 40);
        self.ops[op].outcome = match result {
            Ok(response) => {
                if let Some(rev) = response.revision() {
                    self.revision_seen = self.revision_seen.max(rev);
                }
                Outcome::Ok {
                    response,
                    returned_at: now,
                }
            }
            Err(error) => Outcome::Err {
                error,
                returned_at: now,
            },
        };
    }

    pub(super) fn client_give_up(&mut self, op: usize) {
        if self.busy_clients.get(&self.ops[op].client) == Some(&op) {
            self.log(0, || format!("client gives up op {op}"));
            self.client_done(op);
        }
    }

    pub(super) fn client_done(&mut self, op: usize) {
        match &self.ops[op].outcome {
            Outcome::Ok { .. } => self.counters.ops_ok += 1,
            Outcome::Err { .. } => self.counters.ops_failed += 1,
            Outcome::Unknown => self.counters.ops_unknown += 1,
        }
        let client = self.ops[op].client;
        if client == member_clients::OPERATOR && self.busy_clients.get(&client) == Some(&op) {
            self.busy_clients.remove(&client);
            return self.schedule_membership_turn();
        }
        if client == auth_clients::ADMIN && self.busy_clients.get(&client) == Some(&op) {
            self.busy_clients.remove(&client);
            return self.admin_done(op);
        }
        if self.options.auth {
            self.user_op_done(op);
        }
        if self.busy_clients.get(&client) == Some(&op) {
            self.busy_clients.remove(&client);
            let pause = if self.is_lease_client(client) {
                self.lease_client_done(op)
            } else {
                self.rng.below(20 * MS)
            };
            let at = self.now + pause;
            self.schedule(at, Event::ClientNext { client });
        }
    }
}

pub(super) fn summarize(result: &Result<ClientResponse, EtcdError>) -> String {
    match result {
        Ok(response) => format!("ok rev {}", response.revision().unwrap_or(0)),
        Err(e) => format!("error {e}"),
    }
}
