//! `v3lockpb.Lock`: clientv3's `Mutex` run by the member.

use bytes::Bytes;

use super::wait::{WaitDeletes, Waited};
use super::{
    contender_key, create_revision_is, expect, first_created, get, op, prefix_of, txn_range,
    Recipe, RecipeBugs, RecipeError, Step, SESSION_TTL_SECONDS,
};
use crate::api::{ClientRequest, ClientResponse};
use crate::error::EtcdError;
use crate::proto::etcdserverpb::{
    DeleteRangeRequest, LeaseGrantRequest, PutRequest, RangeRequest, TxnRequest, WatchResponse,
};
use crate::proto::v3lockpb::{LockRequest, LockResponse, UnlockRequest, UnlockResponse};

/// `Lock{name, lease}`: puts `<name>/<lease hex>` with the lease (or finds it there, if this
/// lease already contends), waits until every older key under `<name>/` is deleted, and answers
/// with the key once it is the oldest. Its create revision is the lock's fencing token.
pub struct Lock {
    name: Bytes,
    lease: i64,
    bugs: RecipeBugs,
    phase: LockPhase,
    key: Bytes,
    /// The create revision of the contender's key.
    revision: i64,
    wait: Option<WaitDeletes>,
}

enum LockPhase {
    /// Granting the session lease etcd grants for a request with lease 0.
    Grant,
    /// The txn that enters the contention.
    Acquire,
    Waiting,
    /// Reading the own key once the older ones are gone: it must still be there.
    Confirm,
    /// Deleting the own key after the wait failed, then failing with this.
    Release(RecipeError),
}

impl Lock {
    pub fn new(request: LockRequest, bugs: RecipeBugs) -> Lock {
        Lock {
            name: request.name,
            lease: request.lease,
            bugs,
            phase: LockPhase::Grant,
            key: Bytes::new(),
            revision: 0,
            wait: None,
        }
    }

    /// The contender's key and its create revision, once known (for the simulator's checker).
    pub fn contender(&self) -> Option<(&Bytes, i64)> {
        (self.revision > 0).then_some((&self.key, self.revision))
    }

    fn acquire(&mut self) -> Step<LockResponse> {
        let prefix = prefix_of(&self.name);
        self.key = contender_key(&prefix, self.lease);
        self.phase = LockPhase::Acquire;
        let put = PutRequest {
            key: self.key.clone(),
            lease: self.lease,
            ..Default::default()
        };
        Step::Call(
            TxnRequest {
                compare: vec![create_revision_is(&self.key, 0)],
                success: vec![op(put), op(first_created(&prefix))],
                failure: vec![op(get(&self.key)), op(first_created(&prefix))],
            }
            .into(),
        )
    }

    fn on_acquire(&mut self, reply: Result<ClientResponse, EtcdError>) -> Step<LockResponse> {
        let response = match expect::<TxnRequest>(reply) {
            Ok(response) => response,
            Err(error) => return Step::Done(Err(error)),
        };
        let header = response.header;
        self.revision = match txn_range(&response, 0).and_then(|r| r.kvs.first()) {
            Some(own) if !response.succeeded => own.create_revision,
            _ => header.as_ref().map_or(0, |h| h.revision),
        };
        let owner = txn_range(&response, 1).and_then(|r| r.kvs.first());
        if owner.is_none_or(|owner| owner.create_revision == self.revision) {
            return Step::Done(Ok(LockResponse {
                header,
                key: self.key.clone(),
            }));
        }
        self.phase = LockPhase::Waiting;
        let wait = self.wait.insert(WaitDeletes::new(
            prefix_of(&self.name),
            self.revision - 1,
            self.key.clone(),
            self.bugs.lock_skip_recheck,
        ));
        let step = wait.read().step();
        self.waiting(step)
    }

    fn waiting(&mut self, step: Result<Step<LockResponse>, Waited>) -> Step<LockResponse> {
        match step {
            Ok(step) => step,
            Err(Waited::Finished) => {
                self.phase = LockPhase::Confirm;
                Step::Call(get(&self.key).into())
            }
            Err(Waited::Failed(RecipeError::SessionExpired)) => {
                Step::Done(Err(RecipeError::SessionExpired))
            }
            Err(Waited::Failed(error)) => self.release(error),
        }
    }

    /// etcd's `Mutex.Lock` unlocks when its wait fails: the key goes at once, not with its lease.
    fn release(&mut self, error: RecipeError) -> Step<LockResponse> {
        self.phase = LockPhase::Release(error);
        Step::Call(delete(&self.key))
    }
}

fn delete(key: &Bytes) -> ClientRequest {
    DeleteRangeRequest {
        key: key.clone(),
        ..Default::default()
    }
    .into()
}

impl Recipe for Lock {
    type Answer = LockResponse;

    fn start(&mut self) -> Step<LockResponse> {
        if self.lease != 0 {
            return self.acquire();
        }
        Step::Call(
            LeaseGrantRequest {
                ttl: SESSION_TTL_SECONDS,
                id: 0,
            }
            .into(),
        )
    }

    fn on_reply(&mut self, reply: Result<ClientResponse, EtcdError>) -> Step<LockResponse> {
        match &self.phase {
            LockPhase::Grant => match expect::<LeaseGrantRequest>(reply) {
                Ok(granted) => {
                    self.lease = granted.id;
                    self.acquire()
                }
                Err(error) => Step::Done(Err(error)),
            },
            LockPhase::Acquire => self.on_acquire(reply),
            LockPhase::Waiting => match expect::<RangeRequest>(reply) {
                Ok(read) => {
                    let wait = self.wait.as_mut().expect("waiting has a wait");
                    let step = wait.on_read(read).step();
                    self.waiting(step)
                }
                Err(error) => self.release(error),
            },
            LockPhase::Confirm => match expect::<RangeRequest>(reply) {
                Ok(read) if read.kvs.is_empty() => Step::Done(Err(RecipeError::SessionExpired)),
                Ok(read) => Step::Done(Ok(LockResponse {
                    header: read.header,
                    key: self.key.clone(),
                })),
                Err(error) => self.release(error),
            },
            LockPhase::Release(error) => Step::Done(Err(error.clone())),
        }
    }

    fn on_watch(&mut self, response: &WatchResponse) -> Step<LockResponse> {
        match (&self.phase, self.wait.as_mut()) {
            (LockPhase::Waiting, Some(wait)) => {
                let step = wait.on_watch(response).step();
                self.waiting(step)
            }
            _ => Step::Wait,
        }
    }

    fn abandon(&self) -> Option<ClientRequest> {
        matches!(self.phase, LockPhase::Waiting | LockPhase::Confirm).then(|| delete(&self.key))
    }
}

/// `Unlock{key}`: deletes the key, whoever holds it (as etcd's does).
pub struct Unlock {
    key: Bytes,
}

impl Unlock {
    pub fn new(request: UnlockRequest) -> Unlock {
        Unlock { key: request.key }
    }
}

impl Recipe for Unlock {
    type Answer = UnlockResponse;

    fn start(&mut self) -> Step<UnlockResponse> {
        Step::Call(delete(&self.key))
    }

    fn on_reply(&mut self, reply: Result<ClientResponse, EtcdError>) -> Step<UnlockResponse> {
        Step::Done(
            expect::<DeleteRangeRequest>(reply).map(|deleted| UnlockResponse {
                header: deleted.header,
            }),
        )
    }

    fn on_watch(&mut self, _: &WatchResponse) -> Step<UnlockResponse> {
        Step::Wait
    }

    fn abandon(&self) -> Option<ClientRequest> {
        None
    }
}
