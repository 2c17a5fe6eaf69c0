//! clientv3's `waitDeletes`, the waiting both recipes share: until no key under the prefix with a
//! create revision at or below a bound is left.

use bytes::Bytes;

use super::{prefix_end, RecipeError, Step};
use crate::proto::etcdserverpb::range_request::{SortOrder, SortTarget};
use crate::proto::etcdserverpb::{RangeRequest, RangeResponse, WatchCreateRequest, WatchResponse};
use crate::proto::mvccpb::event::EventType;

/// Waits one key at a time, as etcd does: it reads the youngest key older than the contender
/// and watches for its deletion, so each contender watches only its predecessor (a release wakes
/// one waiter, not all of them), then reads again, since older keys may remain. It also watches
/// the contender's own key: if that goes first (its lease expired or was revoked), the wait ends
/// at once with `session expired`, where etcd would wait for every older contender first.
pub(super) struct WaitDeletes {
    prefix: Bytes,
    max_create_revision: i64,
    own_key: Bytes,
    watched: Option<Bytes>,
    /// The injected bug `lock_skip_recheck`.
    skip_recheck: bool,
}

/// Where the wait is.
pub(super) enum Waiting {
    /// Still waiting: read again.
    Read(RangeRequest),
    /// Still waiting: watch these.
    Watch(Vec<WatchCreateRequest>),
    /// Still waiting for a watch response.
    Wait,
    /// Over: no older contender is left.
    Finished,
    Failed(RecipeError),
}

/// How a wait ended.
pub(super) enum Waited {
    Finished,
    Failed(RecipeError),
}

impl Waiting {
    /// The step to take while waiting, or how the wait ended.
    pub(super) fn step<A>(self) -> Result<Step<A>, Waited> {
        match self {
            Waiting::Read(request) => Ok(Step::Call(request.into())),
            Waiting::Watch(creates) => Ok(Step::Watch(creates)),
            Waiting::Wait => Ok(Step::Wait),
            Waiting::Finished => Err(Waited::Finished),
            Waiting::Failed(error) => Err(Waited::Failed(error)),
        }
    }
}

impl WaitDeletes {
    pub(super) fn new(
        prefix: Bytes,
        max_create_revision: i64,
        own_key: Bytes,
        skip_recheck: bool,
    ) -> WaitDeletes {
        WaitDeletes {
            prefix,
            max_create_revision,
            own_key,
            watched: None,
            skip_recheck,
        }
    }

    /// Reads the youngest older contender (clientv3's `WithLastCreate` + `WithMaxCreateRev`).
    pub(super) fn read(&mut self) -> Waiting {
        self.watched = None;
        Waiting::Read(RangeRequest {
            key: self.prefix.clone(),
            range_end: prefix_end(&self.prefix),
            limit: 1,
            sort_order: SortOrder::Descend as i32,
            sort_target: SortTarget::Create as i32,
            max_create_revision: self.max_create_revision,
            ..Default::default()
        })
    }

    pub(super) fn on_read(&mut self, response: RangeResponse) -> Waiting {
        let Some(older) = response.kvs.first() else {
            return Waiting::Finished;
        };
        let from = response.header.as_ref().map_or(0, |h| h.revision);
        self.watched = Some(older.key.clone());
        let deletion_of = |key: &Bytes| WatchCreateRequest {
            key: key.clone(),
            start_revision: from,
            ..Default::default()
        };
        Waiting::Watch(vec![deletion_of(&older.key), deletion_of(&self.own_key)])
    }

    pub(super) fn on_watch(&mut self, response: &WatchResponse) -> Waiting {
        if response.canceled {
            // Compacted past the start, or the stream ended: read afresh.
            return self.read();
        }
        for event in &response.events {
            if event.r#type != EventType::Delete as i32 {
                continue;
            }
            let Some(key) = event.kv.as_ref().map(|kv| &kv.key) else {
                continue;
            };
            if *key == self.own_key {
                return Waiting::Failed(RecipeError::SessionExpired);
            }
            if Some(key) == self.watched.as_ref() {
                if self.skip_recheck {
                    return Waiting::Finished;
                }
                return self.read();
            }
        }
        Waiting::Wait
    }
}
