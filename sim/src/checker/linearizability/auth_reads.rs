//! The Auth service's reads and users' permission to read, each judged by the auth stores the
//! log had within the op's real-time window: a linearizable read (every Auth read, and a KV read
//! unless serializable) sees every write acknowledged before it was invoked, and no read sees a
//! write invoked after it returned. A serializable read may come from a member however far
//! behind, so only the second bound holds for it.

use detcd::error::EtcdError;

use super::report::Violation;
use super::requests::{self, Class};
use super::Replay;
use crate::history::{Op, Outcome, SimNanos};
use crate::model::AuthModel;

/// Every auth store the cluster had, each with the log index from which it was current.
pub(super) struct AuthStores {
    /// In log order; the first is current from index 0 (before any entry).
    stores: Vec<(u64, AuthModel)>,
}

impl AuthStores {
    pub fn new(initial: AuthModel) -> AuthStores {
        AuthStores {
            stores: vec![(0, initial)],
        }
    }

    /// Notes the store as it is once the entry at `index` is applied.
    pub fn after(&mut self, index: u64, store: &AuthModel) {
        if self.stores.last().map(|(_, s)| s) != Some(store) {
            self.stores.push((index, store.clone()));
        }
    }

    /// The stores current at some log position in `low..=high`.
    fn within(&self, (low, high): (u64, u64)) -> &[(u64, AuthModel)] {
        let first = self.stores.partition_point(|(from, _)| *from <= low);
        let end = self.stores.partition_point(|(from, _)| *from <= high);
        &self.stores[first.saturating_sub(1)..end.max(first)]
    }
}

/// Where in the log each op may have been served, from the writes' positions and real time.
pub(super) struct Windows {
    /// (returned_at, highest position of a write answered by then), by time.
    answered: Vec<(SimNanos, u64)>,
    /// (invoked_at, lowest position of a write invoked from then on), by time.
    invoked: Vec<(SimNanos, u64)>,
    log_len: u64,
}

impl Windows {
    pub fn new(ops: &[Op], replay: &Replay, log_len: u64) -> Windows {
        let placed = || {
            ops.iter()
                .zip(&replay.position)
                .filter_map(|(op, position)| Some((op, (*position)?)))
        };
        let mut answered: Vec<(SimNanos, u64)> = placed()
            .filter(|(op, _)| !op.outcome.is_indeterminate())
            .filter_map(|(op, position)| Some((op.outcome.returned_at()?, position)))
            .collect();
        answered.sort_unstable();
        let mut highest = 0;
        for (_, position) in &mut answered {
            highest = highest.max(*position);
            *position = highest;
        }
        let mut invoked: Vec<(SimNanos, u64)> = placed()
            .map(|(op, position)| (op.invoked_at, position))
            .collect();
        invoked.sort_unstable();
        let mut lowest = u64::MAX;
        for (_, position) in invoked.iter_mut().rev() {
            lowest = lowest.min(*position);
            *position = lowest;
        }
        Windows {
            answered,
            invoked,
            log_len,
        }
    }

    /// The log positions (a read at position q sees entries 1..=q) `op` may have been served
    /// at. Ops that touch in time are concurrent.
    fn of(&self, op: &Op, linearizable: bool) -> (u64, u64) {
        let low = if linearizable {
            let before = self.answered.partition_point(|(t, _)| *t < op.invoked_at);
            before.checked_sub(1).map_or(0, |i| self.answered[i].1)
        } else {
            0
        };
        let high = op.outcome.returned_at().map_or(self.log_len, |returned| {
            let after = self.invoked.partition_point(|(t, _)| *t <= returned);
            self.invoked
                .get(after)
                .map_or(self.log_len, |(_, lowest)| lowest.saturating_sub(1))
        });
        (low, high)
    }
}

/// A member answers the Auth service's reads from its own applied store after a read index:
/// every answer a client got must be one an auth store of the op's window gives.
pub(super) fn check_auth_reads(
    ops: &[Op],
    replay: &Replay,
    windows: &Windows,
) -> Result<(), Violation> {
    for op in ops {
        let observed = match &op.outcome {
            outcome if outcome.is_indeterminate() => continue,
            Outcome::Ok { response, .. } => Ok(requests::normalized(response)),
            Outcome::Err { error, .. } => Err(error.clone()),
            Outcome::Unknown => continue,
        };
        let headerless = observed.map(|mut r| {
            *r.header_mut() = None;
            r
        });
        let window = windows.of(op, true);
        let stores = replay.auth_stores.within(window);
        if stores
            .first()
            .is_none_or(|(_, s)| s.read(&op.request).is_none())
        {
            continue;
        }
        // A JWT outlives its user (a simple token goes with it): the member refuses the
        // holder's reads for want of the user, as etcd's admin check does.
        let caller_gone = headerless
            .as_ref()
            .is_err_and(|e| *e == EtcdError::UserNotFound)
            && op
                .acting_as
                .as_ref()
                .is_some_and(|u| stores.iter().any(|(_, s)| !s.has_user(u)));
        let refused = caller_gone
            || headerless
                .as_ref()
                .is_err_and(|e| requests::refused_before_proposing(&op.request, e));
        let answered =
            |(_, s): &(u64, AuthModel)| s.read(&op.request).as_ref() == Some(&headerless);
        if !refused && !stores.iter().any(answered) {
            return Err(Violation::CoreDisagreesWithModel {
                index: 0,
                what: format!(
                    "op {} ({}) got {headerless:?}, which no auth store of log positions \
                     {}..={} answers",
                    op.id,
                    op.request.name(),
                    window.0,
                    window.1
                ),
            });
        }
    }
    Ok(())
}

/// A user's read is served or refused by the member's own auth store, after the read index
/// when the read is linearizable: an auth store of the op's window must let it through (or
/// refuse it) as the member did. (A txn that writes is judged where it was applied, with the
/// store of its entry.)
pub(super) fn check_read_permissions(
    ops: &[Op],
    replay: &Replay,
    windows: &Windows,
) -> Result<(), Violation> {
    for op in ops {
        let Some(user) = &op.acting_as else {
            continue;
        };
        let Class::Read { linearizable } = requests::classify(&op.request) else {
            continue;
        };
        let served = match &op.outcome {
            Outcome::Ok { .. } => true,
            Outcome::Err {
                error: EtcdError::PermissionDenied,
                ..
            } => false,
            _ => continue,
        };
        let window = windows.of(op, linearizable);
        let stores = replay.auth_stores.within(window);
        if stores
            .first()
            .is_none_or(|(_, s)| s.lets_read(user, &op.request).is_none())
        {
            continue;
        }
        let decides = |(_, s): &(u64, AuthModel)| s.lets_read(user, &op.request) == Some(served);
        if !stores.iter().any(decides) {
            return Err(Violation::CoreDisagreesWithModel {
                index: 0,
                what: format!(
                    "op {} ({} as {user}, {}) was {}, which no auth store of log positions \
                     {}..={} does",
                    op.id,
                    op.request.name(),
                    if linearizable {
                        "linearizable"
                    } else {
                        "serializable"
                    },
                    if served { "served" } else { "refused" },
                    window.0,
                    window.1
                ),
            });
        }
    }
    Ok(())
}
