//! The leases a leader holds, by id, by when each is next due, and as the table of those a
//! keepalive may be acknowledged for away from the node's step. The leader asks after every
//! batch when it must next look for expired leases, and a scan of every lease for that cost a
//! table of tens of thousands of leases on every batch; the keepalive table is copied after
//! every batch that changed a lease, which a persistent map makes a constant-time copy. Every
//! change to a lease goes through [`HeldLeases::update`], which keeps both true.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use imbl::OrdMap;

use super::super::LeaseId;
use super::Renewable;
use crate::time::Instant;

/// The leader's view of one lease.
#[derive(Clone, Debug)]
pub(super) struct Held {
    /// Which grant of the id this is (`Lease::generation`); the entries the leader proposes
    /// name it.
    pub generation: u64,
    pub ttl: Duration,
    /// TTL after the last acknowledged renewal (or the estimate it started from).
    pub expiry: Instant,
    /// Up to when acknowledgements are covered by this leader's committed records.
    pub floor: Option<Instant>,
    /// The latest end any record this leader proposed for the lease names.
    pub proposed_floor: Option<Instant>,
    /// When this leader last proposed a record for the lease (or became ready).
    pub recorded_at: Instant,
    /// When a revocation for expiry was proposed, if one was.
    pub revoke_proposed_at: Option<Instant>,
}

impl Held {
    /// When the leader must next look at the lease: at its expiry, or, once a revocation was
    /// proposed, when that may be proposed again.
    fn due(&self, revoke_retry: Duration) -> Instant {
        match self.revoke_proposed_at {
            Some(at) => self.expiry.max(at + revoke_retry),
            None => self.expiry,
        }
    }

    /// What a keepalive acknowledged away from the step needs, if one may be: not while a
    /// revocation is under way or before a record of this leader covers the lease.
    fn renewable(&self) -> Option<Renewable> {
        let floor = self.floor.filter(|_| self.revoke_proposed_at.is_none())?;
        Some(Renewable {
            generation: self.generation,
            ttl: self.ttl,
            floor,
        })
    }
}

pub(super) struct HeldLeases {
    by_id: BTreeMap<LeaseId, Held>,
    by_due: BTreeSet<(Instant, LeaseId)>,
    renewable: OrdMap<LeaseId, Renewable>,
    revoke_retry: Duration,
}

impl HeldLeases {
    pub fn new(revoke_retry: Duration, leases: impl IntoIterator<Item = (LeaseId, Held)>) -> Self {
        let mut held = HeldLeases {
            by_id: BTreeMap::new(),
            by_due: BTreeSet::new(),
            renewable: OrdMap::new(),
            revoke_retry,
        };
        for (id, lease) in leases {
            held.insert(id, lease);
        }
        held
    }

    pub fn get(&self, id: LeaseId) -> Option<&Held> {
        self.by_id.get(&id)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&LeaseId, &Held)> {
        self.by_id.iter()
    }

    /// Holds `id` unless it is held already.
    pub fn insert_if_absent(&mut self, id: LeaseId, make: impl FnOnce() -> Held) {
        if !self.by_id.contains_key(&id) {
            self.insert(id, make());
        }
    }

    fn insert(&mut self, id: LeaseId, lease: Held) {
        debug_assert!(!self.by_id.contains_key(&id));
        self.by_due.insert((lease.due(self.revoke_retry), id));
        if let Some(renewable) = lease.renewable() {
            self.renewable.insert(id, renewable);
        }
        self.by_id.insert(id, lease);
    }

    pub fn remove(&mut self, id: LeaseId) {
        if let Some(lease) = self.by_id.remove(&id) {
            self.by_due.remove(&(lease.due(self.revoke_retry), id));
            self.renewable.remove(&id);
        }
    }

    /// Changes the lease `id` through `change`, if it is held; `None` if not.
    pub fn update<R>(&mut self, id: LeaseId, change: impl FnOnce(&mut Held) -> R) -> Option<R> {
        let lease = self.by_id.get_mut(&id)?;
        let (due_before, renewable_before) = (lease.due(self.revoke_retry), lease.renewable());
        let result = change(lease);
        let (due_after, renewable_after) = (lease.due(self.revoke_retry), lease.renewable());
        if due_after != due_before {
            self.by_due.remove(&(due_before, id));
            self.by_due.insert((due_after, id));
        }
        if renewable_after != renewable_before {
            match renewable_after {
                Some(renewable) => self.renewable.insert(id, renewable),
                None => self.renewable.remove(&id),
            };
        }
        Some(result)
    }

    /// The leases a keepalive may be acknowledged for away from the node's step.
    pub fn renewable(&self) -> &OrdMap<LeaseId, Renewable> {
        &self.renewable
    }

    /// The earliest time any held lease is due.
    pub fn next_due(&self) -> Option<Instant> {
        self.by_due.first().map(|(due, _)| *due)
    }

    /// At most `max` of the leases due at `now`, the earliest due first.
    pub fn due_at(&self, now: Instant, max: usize) -> Vec<LeaseId> {
        self.by_due
            .iter()
            .take_while(|(due, _)| *due <= now)
            .take(max)
            .map(|(_, id)| *id)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn at(ms: u64) -> Instant {
        Instant::ZERO + Duration::from_millis(ms)
    }

    fn lease(expiry: Instant) -> Held {
        Held {
            generation: 1,
            ttl: Duration::from_secs(10),
            expiry,
            floor: None,
            proposed_floor: None,
            recorded_at: at(0),
            revoke_proposed_at: None,
        }
    }

    /// The indexes against a scan of every lease, after every kind of change.
    fn assert_indexed(held: &HeldLeases) {
        let scanned = held.iter().map(|(_, l)| l.due(held.revoke_retry)).min();
        assert_eq!(held.next_due(), scanned);
        assert_eq!(held.by_due.len(), held.by_id.len());
        let renewable: OrdMap<LeaseId, Renewable> = held
            .iter()
            .filter_map(|(id, l)| Some((*id, l.renewable()?)))
            .collect();
        assert_eq!(held.renewable(), &renewable);
    }

    #[test]
    fn the_next_due_time_follows_renewals_revocations_and_removals() {
        let retry = Duration::from_secs(2);
        let mut held = HeldLeases::new(retry, [(1, lease(at(5_000))), (2, lease(at(3_000)))]);
        assert_indexed(&held);
        assert_eq!(held.next_due(), Some(at(3_000)));
        held.update(2, |l| l.expiry = at(9_000));
        held.update(1, |l| l.floor = Some(at(15_000)));
        assert_indexed(&held);
        assert_eq!(held.renewable().len(), 1, "only a lease with a floor");
        assert_eq!(held.due_at(at(5_000), 10), vec![1]);
        held.update(1, |l| l.revoke_proposed_at = Some(at(5_000)));
        assert_indexed(&held);
        assert!(held.renewable().is_empty(), "not while being revoked");
        assert_eq!(
            held.next_due(),
            Some(at(7_000)),
            "a revocation may be retried"
        );
        held.insert_if_absent(3, || lease(at(1_000)));
        held.insert_if_absent(3, || lease(at(8_000)));
        assert_indexed(&held);
        assert_eq!(held.due_at(at(7_000), 10), vec![3, 1]);
        assert_eq!(held.due_at(at(7_000), 1), vec![3]);
        held.remove(3);
        held.remove(1);
        assert_indexed(&held);
        assert_eq!(held.next_due(), Some(at(9_000)));
        assert_eq!(held.update(1, |_| ()), None);
    }

    #[derive(Clone, Debug)]
    enum Op {
        Hold(LeaseId, u64),
        Remove(LeaseId),
        Renew(LeaseId, u64),
        Revoke(LeaseId, u64),
        Floor(LeaseId, u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        let id = 1..8i64;
        let ms = 0..10_000u64;
        prop_oneof![
            (id.clone(), ms.clone()).prop_map(|(id, ms)| Op::Hold(id, ms)),
            id.clone().prop_map(Op::Remove),
            (id.clone(), ms.clone()).prop_map(|(id, ms)| Op::Renew(id, ms)),
            (id.clone(), ms.clone()).prop_map(|(id, ms)| Op::Revoke(id, ms)),
            (id, ms).prop_map(|(id, ms)| Op::Floor(id, ms)),
        ]
    }

    proptest! {
        /// After any changes, the indexes answer as a scan of every lease does: the next due
        /// time, the leases due at any time, earliest first (ties by id), and the leases a
        /// keepalive may be acknowledged for away from the step.
        #[test]
        fn the_due_index_answers_as_a_scan(
            ops in proptest::collection::vec(op(), 0..40),
            now in 0..12_000u64,
        ) {
            let retry = Duration::from_secs(2);
            let mut held = HeldLeases::new(retry, []);
            let mut model: BTreeMap<LeaseId, Held> = BTreeMap::new();
            for op in ops {
                match op {
                    Op::Hold(id, ms) => {
                        held.insert_if_absent(id, || lease(at(ms)));
                        model.entry(id).or_insert_with(|| lease(at(ms)));
                    }
                    Op::Remove(id) => {
                        held.remove(id);
                        model.remove(&id);
                    }
                    Op::Renew(id, ms) => {
                        held.update(id, |l| l.expiry = at(ms));
                        model.entry(id).and_modify(|l| l.expiry = at(ms));
                    }
                    Op::Revoke(id, ms) => {
                        held.update(id, |l| l.revoke_proposed_at = Some(at(ms)));
                        model.entry(id).and_modify(|l| l.revoke_proposed_at = Some(at(ms)));
                    }
                    Op::Floor(id, ms) => {
                        held.update(id, |l| l.floor = Some(at(ms)));
                        model.entry(id).and_modify(|l| l.floor = Some(at(ms)));
                    }
                }
            }
            let mut due: Vec<(Instant, LeaseId)> =
                model.iter().map(|(id, l)| (l.due(retry), *id)).collect();
            due.sort();
            prop_assert_eq!(held.next_due(), due.first().map(|(at, _)| *at));
            let due_now: Vec<LeaseId> =
                due.iter().filter(|(d, _)| *d <= at(now)).map(|(_, id)| *id).take(3).collect();
            prop_assert_eq!(held.due_at(at(now), 3), due_now);
            let renewable: OrdMap<LeaseId, Renewable> =
                model.iter().filter_map(|(id, l)| Some((*id, l.renewable()?))).collect();
            prop_assert_eq!(held.renewable(), &renewable);
        }
    }
}
