//! Leases: etcd's Lease API as a replicated state machine, plus the clocks that decide expiry.
//!
//! [`Leases`] is the replicated part: which leases exist, the TTL each was granted, the
//! remaining time to live its last grant or checkpoint recorded, and the keys attached to it.
//! Every member applies the same entries in the same order and so holds the same table; it is
//! part of the snapshot and of the convergence digest. It knows no time: time lives in
//! [`clock`], which is volatile per member (see there for the guarantees on expiry).
//!
//! Invariants of [`Leases`]:
//! - every lease has `1 <= ttl_secs <= MAX_TTL_SECS` and `remaining_ms >= 0`;
//! - a key is attached to at most one lease, and the keys attached to a lease are exactly the
//!   live keys of the key space that name it (kept so by applying each revision's key changes;
//!   `check_against` verifies it);
//! - lease ids are non-zero (0 means "no lease" everywhere in etcd's API);
//! - every lease has a generation below `grants`, and no two share one: the leader's expiry
//!   and checkpoint entries name the generation, so that an entry decided for one lease never
//!   touches a later lease granted under the same id.

pub mod clock;

use bytes::Bytes;
use imbl::{OrdMap, OrdSet};

use crate::error::EtcdError;
use crate::mvcc::{KeyChange, KeySpace, LeaseCheck};
use crate::proto::detcdpb::{LeaseEntry, LeaseTable};

/// A lease id as etcd's API carries it.
pub type LeaseId = i64;

/// etcd's largest TTL: 9,000,000,000 seconds; a larger one is `too large lease TTL`.
pub const MAX_TTL_SECS: i64 = 9_000_000_000;

/// What etcd's quota charges for one lease (`storage/quota.go`: leaseOverhead).
pub const LEASE_QUOTA_BYTES: u64 = 64;

/// One lease as every member holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    pub ttl_secs: i64,
    /// The remaining time to live recorded by the lease's last grant or checkpoint, counted
    /// from when a member applied that entry.
    pub remaining_ms: i64,
    /// The number of the grant that created this lease (see the module invariants).
    pub generation: u64,
    keys: OrdSet<Bytes>,
}

impl Lease {
    pub fn keys(&self) -> impl ExactSizeIterator<Item = &Bytes> {
        self.keys.iter()
    }
}

/// The replicated lease table. See the module documentation for its invariants. Persistent, so
/// that a snapshot view of it is taken in O(1), like the key space's.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Leases {
    table: OrdMap<LeaseId, Lease>,
    /// Grants applied so far: the generation of the next lease.
    grants: u64,
}

impl LeaseCheck for Leases {
    fn lease_exists(&self, lease_id: i64) -> bool {
        self.table.contains_key(&lease_id)
    }
}

impl Leases {
    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    pub fn get(&self, id: LeaseId) -> Option<&Lease> {
        self.table.get(&id)
    }

    pub fn contains(&self, id: LeaseId) -> bool {
        self.table.contains_key(&id)
    }

    /// Every lease, in id order.
    pub fn iter(&self) -> impl Iterator<Item = (LeaseId, &Lease)> {
        self.table.iter().map(|(id, lease)| (*id, lease))
    }

    /// Creates a lease (etcd's `Grant` as applied). The id and TTL were settled by the member
    /// that proposed it, so every member applies exactly the same values.
    pub fn grant(&mut self, id: LeaseId, ttl_secs: i64) -> Result<(), EtcdError> {
        if id == 0 || !(1..=MAX_TTL_SECS).contains(&ttl_secs) {
            // The proposing member checks both; an entry that breaks them was not written by
            // detcd, and refusing it keeps the invariants on every member alike.
            return Err(EtcdError::NotCapable);
        }
        if self.table.contains_key(&id) {
            return Err(EtcdError::LeaseExist);
        }
        self.table.insert(
            id,
            Lease {
                ttl_secs,
                remaining_ms: ttl_secs.saturating_mul(1000),
                generation: self.grants,
                keys: OrdSet::new(),
            },
        );
        self.grants += 1;
        Ok(())
    }

    /// The lease `id` if it is the one of `generation`.
    pub fn get_generation(&self, id: LeaseId, generation: u64) -> Option<&Lease> {
        self.table.get(&id).filter(|l| l.generation == generation)
    }

    /// Records a remaining time to live (a checkpoint) for the lease of `generation`; a lease
    /// that is gone is skipped, as a checkpoint can be ordered after its revocation.
    pub fn checkpoint(&mut self, id: LeaseId, generation: u64, remaining_ms: i64) -> bool {
        match self.table.get_mut(&id) {
            Some(lease) if lease.generation == generation => {
                lease.remaining_ms = remaining_ms.max(0);
                true
            }
            _ => false,
        }
    }

    /// Removes a lease, returning the keys attached to it (in key order) for deletion.
    pub fn remove(&mut self, id: LeaseId) -> Option<Vec<Bytes>> {
        self.table
            .remove(&id)
            .map(|lease| lease.keys.into_iter().collect())
    }

    /// Moves a changed key from the lease it left to the lease it joined.
    pub fn apply_key_change(&mut self, change: &KeyChange) {
        let (before, after) = (change.lease_before, change.lease_after());
        if before != 0 {
            if let Some(lease) = self.table.get_mut(&before) {
                lease.keys.remove(change.key());
            }
        }
        if after != 0 {
            if let Some(lease) = self.table.get_mut(&after) {
                lease.keys.insert(change.key().clone());
            }
        }
    }

    /// What the quota charges for the leases.
    pub fn quota_bytes(&self) -> u64 {
        self.table.len() as u64 * LEASE_QUOTA_BYTES
    }

    /// A digest of the whole table (ids, TTLs, recorded remaining times, attached keys), for
    /// comparing replicas. Deterministic: it walks the table in id order.
    pub fn digest(&self) -> u32 {
        let mut crc = crc32c::crc32c(b"leases");
        crc = crc32c::crc32c_append(crc, &self.grants.to_be_bytes());
        for (id, lease) in &self.table {
            crc = crc32c::crc32c_append(crc, &id.to_be_bytes());
            crc = crc32c::crc32c_append(crc, &lease.ttl_secs.to_be_bytes());
            crc = crc32c::crc32c_append(crc, &lease.remaining_ms.to_be_bytes());
            crc = crc32c::crc32c_append(crc, &lease.generation.to_be_bytes());
            for key in &lease.keys {
                crc = crc32c::crc32c_append(crc, &(key.len() as u64).to_be_bytes());
                crc = crc32c::crc32c_append(crc, key);
            }
        }
        crc
    }

    /// The snapshot section: every lease without its keys, which the key space holds.
    pub fn to_snapshot(&self) -> LeaseTable {
        LeaseTable {
            leases: self
                .table
                .iter()
                .map(|(id, lease)| LeaseEntry {
                    id: *id,
                    ttl_secs: lease.ttl_secs,
                    remaining_ms: lease.remaining_ms,
                    generation: lease.generation,
                })
                .collect(),
            grants: self.grants,
        }
    }

    /// Rebuilds the table from its snapshot section and the key space restored beside it.
    /// Refuses a section that breaks an invariant, or a key naming a lease that does not exist.
    pub fn from_snapshot(section: LeaseTable, kv: &KeySpace) -> Result<Leases, String> {
        let mut table = OrdMap::new();
        let mut generations = std::collections::BTreeSet::new();
        for entry in section.leases {
            if entry.id == 0 || !(1..=MAX_TTL_SECS).contains(&entry.ttl_secs) {
                return Err(format!("lease {:x} has an impossible id or TTL", entry.id));
            }
            if entry.generation >= section.grants || !generations.insert(entry.generation) {
                return Err(format!("lease {:x} has an impossible generation", entry.id));
            }
            if entry.remaining_ms < 0 {
                return Err(format!("lease {:x} has a negative remaining TTL", entry.id));
            }
            let lease = Lease {
                ttl_secs: entry.ttl_secs,
                remaining_ms: entry.remaining_ms,
                generation: entry.generation,
                keys: OrdSet::new(),
            };
            if table.insert(entry.id, lease).is_some() {
                return Err(format!("lease {:x} appears twice", entry.id));
            }
        }
        for (key, id) in kv.live_leases() {
            let lease = table
                .get_mut(&id)
                .ok_or_else(|| format!("key {key:?} names lease {id:x}, which does not exist"))?;
            lease.keys.insert(key.clone());
        }
        Ok(Leases {
            table,
            grants: section.grants,
        })
    }

    /// Verifies the invariants against the key space; `Err` names the first broken one. Cheap
    /// enough for the simulator's checker to run after every applied entry: one pass over the
    /// live keys, nothing allocated.
    pub fn check_against(&self, kv: &KeySpace) -> Result<(), String> {
        let mut attached = 0;
        for (key, id) in kv.live_leases() {
            let lease = self
                .table
                .get(&id)
                .ok_or_else(|| format!("key {key:?} outlived its lease {id:x}"))?;
            if !lease.keys.contains(key) {
                return Err(format!("key {key:?} is not among the keys of lease {id:x}"));
            }
            attached += 1;
        }
        let listed: usize = self.table.values().map(|l| l.keys.len()).sum();
        if listed != attached {
            return Err(format!(
                "leases list {listed} keys, but {attached} live keys name a lease"
            ));
        }
        for (id, lease) in &self.table {
            if *id == 0 || !(1..=MAX_TTL_SECS).contains(&lease.ttl_secs) || lease.remaining_ms < 0 {
                return Err(format!(
                    "lease {id:x} has an impossible id, TTL or remaining time"
                ));
            }
            if lease.generation >= self.grants {
                return Err(format!("lease {id:x} has a generation from the future"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
