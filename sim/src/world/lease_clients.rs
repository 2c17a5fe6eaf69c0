//! The lease workload: clients that grant a lease, keep it alive every third of its TTL (as
//! clientv3 does) while attaching keys to it and asking its TTL, then revoke it or abandon it
//! (a client that dies), and start over. KV clients also attach keys to leases others granted,
//! some of them revoked already.

use detcd::proto::etcdserverpb::{
    LeaseGrantRequest, LeaseKeepAliveRequest, LeaseLeasesRequest, LeaseRevokeRequest,
    LeaseTimeToLiveRequest,
};

use super::*;

/// How many of the latest grants a client asks about besides its own lease.
const RECENT_LEASES: usize = 3;

/// What a lease client holds.
#[derive(Clone, Debug, Default)]
pub(super) struct LeaseClient {
    lease: Option<HeldLease>,
    /// The last operation was a keepalive: the next one waits a third of the TTL.
    renewed: bool,
}

#[derive(Clone, Debug)]
struct HeldLease {
    id: i64,
    ttl_s: i64,
    /// Operations left before the client lets the lease go.
    steps_left: u64,
}

impl World {
    pub(super) fn is_lease_client(&self, client: u64) -> bool {
        self.lease_clients.contains_key(&client)
    }

    /// The next request of a lease client.
    pub(super) fn lease_request(&mut self, client: u64) -> ClientRequest {
        let state = self.lease_clients[&client].clone();
        let Some(lease) = state.lease else {
            return self.grant_request();
        };
        if lease.steps_left == 0 {
            return ClientRequest::LeaseRevoke(LeaseRevokeRequest { id: lease.id });
        }
        match self.rng.below(20) {
            0..=10 => ClientRequest::LeaseKeepAlive(LeaseKeepAliveRequest { id: lease.id }),
            11..=14 => ClientRequest::Put(PutRequest {
                key: self.key(),
                value: Bytes::from(format!("lease{:x}.{}", lease.id, self.issued)),
                lease: lease.id,
                ..Default::default()
            }),
            15 | 16 => ClientRequest::LeaseTimeToLive(LeaseTimeToLiveRequest {
                id: lease.id,
                keys: self.rng.chance(0.5),
            }),
            17 | 18 => ClientRequest::LeaseTimeToLive(LeaseTimeToLiveRequest {
                id: self.recent_lease(),
                keys: false,
            }),
            _ => ClientRequest::LeaseLeases(LeaseLeasesRequest {}),
        }
    }

    fn grant_request(&mut self) -> ClientRequest {
        let ttl = self.rng.between(1, self.options.lease_ttl_max_s) as i64;
        // Mostly let the server choose the id; sometimes pick one, which may collide.
        let id = if self.rng.chance(0.2) {
            1 + self.rng.below(16) as i64
        } else {
            0
        };
        ClientRequest::LeaseGrant(LeaseGrantRequest { ttl, id })
    }

    /// A lease client's op is done: learn from its answer, and pick when to go on.
    pub(super) fn lease_client_done(&mut self, op: usize) -> SimNanos {
        let client = self.ops[op].client;
        let answer = match &self.ops[op].outcome {
            Outcome::Ok { response, .. } => Some(response.clone()),
            _ => None,
        };
        let steps = self.rng.between(0, 8);
        let abandon = self.rng.chance(0.5);
        let state = self.lease_clients.get_mut(&client).expect("a lease client");
        state.renewed = false;
        match (&self.ops[op].request, answer) {
            (ClientRequest::LeaseGrant(_), Some(ClientResponse::LeaseGrant(g))) => {
                self.leases_granted.push(g.id);
                state.lease = Some(HeldLease {
                    id: g.id,
                    ttl_s: g.ttl,
                    steps_left: steps,
                });
            }
            (ClientRequest::LeaseKeepAlive(_), Some(ClientResponse::LeaseKeepAlive(k))) => {
                if k.ttl == 0 {
                    state.lease = None;
                } else {
                    state.renewed = true;
                }
            }
            (ClientRequest::LeaseRevoke(_), _) => state.lease = None,
            _ => {}
        }
        if let Some(lease) = &mut state.lease {
            lease.steps_left = lease.steps_left.saturating_sub(1);
            if lease.steps_left == 0 && abandon {
                // The client dies holding the lease: its keepalives stop, the lease must expire.
                state.lease = None;
            }
        }
        let third_ms = state
            .lease
            .as_ref()
            .map_or(0, |l| l.ttl_s as u64 * 1000 / 3);
        if state.renewed {
            third_ms * MS
        } else {
            self.rng.below(third_ms.min(200) * MS + 20 * MS)
        }
    }

    /// One of the leases granted last, perhaps revoked or expired since (there is one: the
    /// asking client's). Recent ones matter: a member that missed their grant or end may
    /// still be answering.
    fn recent_lease(&mut self) -> i64 {
        let recent = self.leases_granted.len().min(RECENT_LEASES);
        let back = 1 + self.rng.below(recent as u64) as usize;
        self.leases_granted[self.leases_granted.len() - back]
    }

    /// A lease for a KV client's put: one some lease client was granted (perhaps revoked or
    /// expired since), or none.
    pub(super) fn some_lease(&mut self) -> i64 {
        if self.leases_granted.is_empty() || self.rng.chance(0.7) {
            return 0;
        }
        let at = self.rng.below(self.leases_granted.len() as u64) as usize;
        self.leases_granted[at]
    }
}
