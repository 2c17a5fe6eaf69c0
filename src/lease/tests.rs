//! The lease table on its own: grants, checkpoints, removal, key attachment and its snapshot
//! section. The table against a model, together with the key space, is in `state::tests`.

use bytes::Bytes;

use super::*;
use crate::mvcc::KeyChange;
use crate::mvcc::Revision;
use crate::proto::mvccpb::KeyValue;

fn change(key: &str, before: LeaseId, after: LeaseId) -> KeyChange {
    let key = Bytes::copy_from_slice(key.as_bytes());
    let kv = |lease| KeyValue {
        key: key.clone(),
        lease,
        ..KeyValue::default()
    };
    KeyChange {
        revision: Revision::new(2, 0),
        kv: kv(after),
        deleted: after == 0,
        prev: (before != 0).then(|| kv(before)),
        lease_before: before,
    }
}

#[test]
fn a_grant_of_an_existing_id_fails_and_generations_count_every_grant() {
    let mut leases = Leases::default();
    leases.grant(7, 10).unwrap();
    assert_eq!(leases.grant(7, 10), Err(EtcdError::LeaseExist));
    leases.grant(8, 5).unwrap();
    assert_eq!(leases.get(7).unwrap().generation, 0);
    assert_eq!(leases.get(8).unwrap().generation, 1);
    assert_eq!(leases.get(7).unwrap().remaining_ms, 10_000);
    leases.remove(7);
    leases.grant(7, 3).unwrap();
    assert_eq!(leases.get(7).unwrap().generation, 2);
}

#[test]
fn a_checkpoint_touches_only_the_generation_it_names() {
    let mut leases = Leases::default();
    leases.grant(7, 10).unwrap();
    assert!(!leases.checkpoint(7, 5, 1_000));
    assert!(leases.checkpoint(7, 0, 1_000));
    assert_eq!(leases.get(7).unwrap().remaining_ms, 1_000);
    assert!(!leases.checkpoint(9, 0, 1_000), "no such lease");
}

#[test]
fn impossible_grants_are_refused_whoever_proposed_them() {
    let mut leases = Leases::default();
    assert_eq!(leases.grant(0, 10), Err(EtcdError::NotCapable));
    assert_eq!(leases.grant(1, 0), Err(EtcdError::NotCapable));
    assert_eq!(
        leases.grant(1, MAX_TTL_SECS + 1),
        Err(EtcdError::NotCapable)
    );
    assert!(leases.is_empty());
}

#[test]
fn key_changes_move_keys_between_leases_and_removal_returns_them_in_order() {
    let mut leases = Leases::default();
    leases.grant(1, 10).unwrap();
    leases.grant(2, 10).unwrap();
    leases.apply_key_change(&change("b", 0, 1));
    leases.apply_key_change(&change("a", 0, 1));
    leases.apply_key_change(&change("c", 0, 2));
    leases.apply_key_change(&change("c", 2, 1));
    leases.apply_key_change(&change("a", 1, 0));
    assert_eq!(leases.get(2).unwrap().keys().count(), 0);
    let keys = leases.remove(1).unwrap();
    assert_eq!(keys, vec![Bytes::from("b"), Bytes::from("c")]);
    assert!(leases.remove(1).is_none());
}

#[test]
fn a_snapshot_section_with_an_impossible_lease_is_refused() {
    let kv = KeySpace::new();
    let mut leases = Leases::default();
    leases.grant(1, 10).unwrap();
    let good = leases.to_snapshot();
    assert_eq!(Leases::from_snapshot(good.clone(), &kv).unwrap(), leases);

    let mut twice = good.clone();
    twice.leases.push(twice.leases[0]);
    assert!(Leases::from_snapshot(twice, &kv).is_err());

    let mut future_generation = good.clone();
    future_generation.leases[0].generation = future_generation.grants;
    assert!(Leases::from_snapshot(future_generation, &kv).is_err());

    let mut negative = good;
    negative.leases[0].remaining_ms = -1;
    assert!(Leases::from_snapshot(negative, &kv).is_err());
}

#[test]
fn the_digest_tells_tables_apart() {
    let mut a = Leases::default();
    let mut b = Leases::default();
    a.grant(1, 10).unwrap();
    b.grant(1, 10).unwrap();
    assert_eq!(a.digest(), b.digest());
    b.checkpoint(1, 0, 9_000);
    assert_ne!(a.digest(), b.digest());
    a.checkpoint(1, 0, 9_000);
    a.apply_key_change(&change("k", 0, 1));
    assert_ne!(a.digest(), b.digest());
}
