//! A write in progress: the changes of one Put, DeleteRange or Txn, all at one new main revision.
//!
//! Like etcd's `storeTxnWrite`, changes go straight into the index at main revision
//! `begin + 1` with sub revisions 0, 1, 2, ... so that later operations of the same txn see them;
//! the store's `current_revision` moves to `begin + 1` only on [`WriteTxn::commit`], and only if
//! something changed. Dropping a `WriteTxn` without committing removes every change it made, so
//! an error anywhere in a txn leaves the store exactly as it was.
//!
//! Revisions reported to clients follow etcd: a put answers `begin + 1`; a delete or a read
//! answers `begin + 1` once the txn has changed something and `begin` before that.

use bytes::Bytes;

use super::cold::ColdRange;
use super::header;
use super::range::KeyRange;
use super::revision::Revision;
use super::{KeyChange, KeyHistory, KeyProbe, KeySpace};
use crate::error::EtcdError;
use crate::proto::etcdserverpb::{
    DeleteRangeRequest, DeleteRangeResponse, PutRequest, PutResponse, RangeRequest, RangeResponse,
};
use crate::proto::mvccpb::KeyValue;

pub(crate) struct WriteTxn<'a> {
    store: &'a mut KeySpace,
    /// The store revision when the write began; changes are written at `begin + 1`.
    begin: i64,
    /// Keys changed so far, in order; the length is the next sub revision.
    changed: Vec<Bytes>,
    /// What each change did, for the store's effects once the write commits.
    effects: Vec<KeyChange>,
    committed: bool,
}

impl<'a> WriteTxn<'a> {
    pub fn begin(store: &'a mut KeySpace) -> WriteTxn<'a> {
        let begin = store.current_revision;
        WriteTxn {
            store,
            begin,
            changed: Vec::new(),
            effects: Vec::new(),
            committed: false,
        }
    }

    /// The revision this write's reads happen at: its own changes are visible once there are any.
    pub fn read_revision(&self) -> i64 {
        if self.changed.is_empty() {
            self.begin
        } else {
            self.begin + 1
        }
    }

    fn next_revision(&self) -> Revision {
        Revision::new(self.begin + 1, self.changed.len() as i64)
    }

    /// etcd's Put inside a write: reads the previous value if the request needs it (seeing this
    /// write's own earlier changes), then writes. `KeyNotFound` if `ignore_value`/`ignore_lease`
    /// find no key. The lease itself is checked by the caller, as etcd does.
    pub fn put_request(&mut self, p: &PutRequest) -> Result<PutResponse, EtcdError> {
        let needs_previous = p.ignore_value || p.ignore_lease || p.prev_kv;
        let previous = if needs_previous {
            self.store.live_kv(&p.key, self.read_revision())
        } else {
            None
        };
        if (p.ignore_value || p.ignore_lease) && previous.is_none() {
            return Err(EtcdError::KeyNotFound);
        }
        let value = match (&previous, p.ignore_value) {
            (Some(prev), true) => prev.value.clone(),
            // Copy so the store never pins a caller's (possibly much larger) request buffer.
            _ => Bytes::copy_from_slice(&p.value),
        };
        let lease = match (&previous, p.ignore_lease) {
            (Some(prev), true) => prev.lease,
            _ => p.lease,
        };
        self.put(&p.key, value, lease);
        Ok(PutResponse {
            header: header(self.begin + 1),
            prev_kv: if p.prev_kv { previous } else { None },
        })
    }

    /// etcd's DeleteRange inside a write.
    pub fn delete_request(&mut self, d: &DeleteRangeRequest) -> DeleteRangeResponse {
        let range = KeyRange::new(&d.key, &d.range_end);
        let prev_kvs = if d.prev_kv {
            self.store.live_kvs(range, self.read_revision())
        } else {
            Vec::new()
        };
        let deleted = self.delete_range(range);
        DeleteRangeResponse {
            header: header(self.read_revision()),
            deleted,
            prev_kvs,
        }
    }

    /// etcd's Range inside a write, at this write's read revision. Not bounded by
    /// `--max-range-bytes`: a txn's ranges are answered as etcd answers them.
    pub fn range_request(&self, r: &RangeRequest) -> Result<(RangeResponse, ColdRange), EtcdError> {
        self.store.execute_range(r, self.read_revision(), u64::MAX)
    }

    fn put(&mut self, key: &[u8], value: Bytes, lease: i64) {
        let rev = self.next_revision();
        let begin = self.begin;
        let every_change = self.store.every_change;
        let (key, change) = self.store.append_record(key, |key, h| {
            let lease_before = live_lease(h);
            let reported = every_change || lease_before != 0 || lease != 0;
            let prev = reported.then(|| previous(key, h, begin)).flatten();
            h.push_put(rev, value, lease);
            reported.then(|| {
                let kv = h.live().and_then(|r| r.key_value(key));
                KeyChange {
                    revision: rev,
                    kv: kv.expect("the put just wrote the key"),
                    deleted: false,
                    prev,
                    lease_before,
                }
            })
        });
        self.effects.extend(change);
        self.changed.push(key);
    }

    fn delete(&mut self, key: &Bytes) {
        let rev = self.next_revision();
        let begin = self.begin;
        let every_change = self.store.every_change;
        let (key, change) = self.store.append_record(key, |key, h| {
            let lease_before = live_lease(h);
            let reported = every_change || lease_before != 0;
            let prev = reported.then(|| previous(key, h, begin)).flatten();
            h.push_tombstone(rev);
            reported.then(|| KeyChange {
                revision: rev,
                kv: KeyValue {
                    key: key.clone(),
                    mod_revision: rev.main,
                    ..KeyValue::default()
                },
                deleted: true,
                prev,
                lease_before,
            })
        });
        self.effects.extend(change);
        self.changed.push(key);
    }

    /// Deletes each of `keys` that exists now, in the order given; returns how many.
    pub fn delete_keys(&mut self, keys: &[Bytes]) -> i64 {
        let at = self.read_revision();
        let mut deleted = 0;
        for key in keys {
            let exists = self
                .store
                .keys
                .get(&KeyProbe::new(key))
                .is_some_and(|h| h.live_at(at).is_some());
            if exists {
                self.delete(key);
                deleted += 1;
            }
        }
        deleted
    }

    /// Deletes every key that exists in `range`, in key order; returns how many.
    fn delete_range(&mut self, range: KeyRange<'_>) -> i64 {
        let at = self.read_revision();
        let doomed: Vec<Bytes> = self
            .store
            .keys_scouted(range)
            .filter(|(_, h)| h.live_at(at).is_some())
            .map(|(k, _)| k.clone())
            .collect();
        for key in &doomed {
            self.delete(key);
        }
        doomed.len() as i64
    }

    /// Makes the changes part of history. Returns the revision the whole write answers with:
    /// `begin + 1` if anything changed, otherwise `begin`. The values the changes superseded
    /// join the batch waiting to move to cold segments now, not as each change is made, so that
    /// an aborted write has nothing to bring back.
    pub fn commit(mut self) -> i64 {
        self.committed = true;
        if !self.changed.is_empty() {
            self.store.current_revision = self.begin + 1;
        }
        self.store.changes.append(&mut self.effects);
        if let Some(cold) = &mut self.store.cold {
            let mut superseded = 0;
            for (sub, key) in self.changed.iter().enumerate() {
                let history =
                    (self.store.keys.get(&KeyProbe::new(key))).expect("changed keys are indexed");
                let change = Revision {
                    main: self.begin + 1,
                    sub: sub as i64,
                };
                if let Some((rev, len)) = history.superseded_hot(change) {
                    cold.wait(key.clone(), rev, len);
                    superseded += 1;
                }
            }
            // Twice as many as join: a batch has moved before the next one is ready.
            self.store.move_cold(2 * superseded);
        }
        self.store.current_revision
    }
}

impl Drop for WriteTxn<'_> {
    fn drop(&mut self) {
        if self.committed {
            return;
        }
        // Undo newest first so each key's history shrinks from its end.
        while let Some(key) = self.changed.pop() {
            self.store.pop_record(&key);
        }
    }
}

/// The key as it was before the write that began at `begin` (see [`KeyChange::prev`]), read
/// before the write appends to its history.
fn previous(key: &Bytes, history: &KeyHistory, begin: i64) -> Option<KeyValue> {
    history.live_at(begin).and_then(|r| r.key_value(key))
}

/// The lease the key is attached to now (0 for none), read before the write appends to its
/// history: after any earlier change of the same write.
fn live_lease(history: &KeyHistory) -> i64 {
    history.live().map_or(0, |record| record.lease())
}
