//! The lease API through the deterministic harness: etcd's answers and errors, keepalives
//! through followers, expiry by the leader, and the remaining TTL across a leader change and a
//! full restart (neither resets a lease nor expires it early).

use std::time::Duration;

use detcd::error::EtcdError;
use detcd::node::{ClientRequest, ClientResponse, MemberId};
use detcd::proto::etcdserverpb::{
    LeaseGrantRequest, LeaseKeepAliveRequest, LeaseLeasesRequest, LeaseRevokeRequest,
    LeaseTimeToLiveRequest, PutRequest,
};
use detcd_sim::harness::{req, Cluster};

const SECOND: Duration = Duration::from_secs(1);
const MS: Duration = Duration::from_millis(1);

type Answer = Option<Result<ClientResponse, EtcdError>>;

fn grant(
    cluster: &mut Cluster,
    member: MemberId,
    ttl: i64,
    id: i64,
) -> Result<(i64, i64), EtcdError> {
    match cluster.call(
        member,
        ClientRequest::LeaseGrant(LeaseGrantRequest { ttl, id }),
    ) {
        Some(Ok(ClientResponse::LeaseGrant(g))) => Ok((g.id, g.ttl)),
        Some(Err(e)) => Err(e),
        other => panic!("expected a grant response, got {other:?}"),
    }
}

fn keep_alive(cluster: &mut Cluster, member: MemberId, id: i64) -> i64 {
    match cluster.call(
        member,
        ClientRequest::LeaseKeepAlive(LeaseKeepAliveRequest { id }),
    ) {
        Some(Ok(ClientResponse::LeaseKeepAlive(k))) => k.ttl,
        other => panic!("expected a keepalive response, got {other:?}"),
    }
}

fn time_to_live(cluster: &mut Cluster, member: MemberId, id: i64) -> (i64, i64, usize) {
    let request = LeaseTimeToLiveRequest { id, keys: true };
    match cluster.call(member, ClientRequest::LeaseTimeToLive(request)) {
        Some(Ok(ClientResponse::LeaseTimeToLive(t))) => (t.ttl, t.granted_ttl, t.keys.len()),
        other => panic!("expected a time-to-live response, got {other:?}"),
    }
}

fn put_with_lease(cluster: &mut Cluster, member: MemberId, key: &str, lease: i64) -> Answer {
    cluster.call(
        member,
        ClientRequest::Put(PutRequest {
            key: key.to_string().into(),
            value: "v".into(),
            lease,
            ..Default::default()
        }),
    )
}

fn exists(cluster: &mut Cluster, member: MemberId, key: &str) -> bool {
    match cluster.call(member, req::get(key, false)) {
        Some(Ok(ClientResponse::Range(r))) => !r.kvs.is_empty(),
        other => panic!("expected a range response, got {other:?}"),
    }
}

fn leader(cluster: &mut Cluster) -> MemberId {
    cluster.wait_for_leader(10 * SECOND).expect("a leader")
}

fn follower(cluster: &mut Cluster) -> MemberId {
    let leader = leader(cluster);
    (1..=3).find(|m| *m != leader).expect("three members")
}

#[test]
fn grants_answer_as_etcd_does() {
    let mut cluster = Cluster::new(3, 1, |c| c);
    let member = follower(&mut cluster);
    let (id, ttl) = grant(&mut cluster, member, 1, 0).expect("granted");
    assert!(id > 0, "a server-chosen id is positive");
    assert_eq!(
        ttl, 2,
        "a TTL below the minimum (1.5 election timeouts) is raised"
    );
    assert_eq!(
        grant(&mut cluster, member, 10, id),
        Err(EtcdError::LeaseExist)
    );
    assert_eq!(
        grant(&mut cluster, member, 9_000_000_001, 0),
        Err(EtcdError::LeaseTtlTooLarge)
    );
    assert_eq!(grant(&mut cluster, member, 30, 42), Ok((42, 30)));
    let leases = match cluster.call(member, ClientRequest::LeaseLeases(LeaseLeasesRequest {})) {
        Some(Ok(ClientResponse::LeaseLeases(l))) => l.leases.len(),
        other => panic!("expected a lease list, got {other:?}"),
    };
    assert_eq!(leases, 2);
}

#[test]
fn unknown_leases_get_etcds_answers() {
    let mut cluster = Cluster::new(3, 2, |c| c);
    let member = follower(&mut cluster);
    assert_eq!(
        keep_alive(&mut cluster, member, 1234),
        0,
        "TTL 0, not an error"
    );
    assert_eq!(time_to_live(&mut cluster, member, 1234), (-1, 0, 0));
    let revoke = ClientRequest::LeaseRevoke(LeaseRevokeRequest { id: 1234 });
    assert_eq!(
        cluster.call(member, revoke),
        Some(Err(EtcdError::LeaseNotFound))
    );
    assert_eq!(
        put_with_lease(&mut cluster, member, "k", 1234),
        Some(Err(EtcdError::LeaseNotFound))
    );
}

#[test]
fn keepalives_through_a_follower_keep_a_lease_and_its_keys_alive() {
    let mut cluster = Cluster::new(3, 3, |c| c);
    let member = follower(&mut cluster);
    let (id, ttl) = grant(&mut cluster, member, 3, 0).expect("granted");
    put_with_lease(&mut cluster, member, "k", id)
        .unwrap()
        .unwrap();
    for _ in 0..10 {
        cluster.run_for(SECOND);
        assert_eq!(keep_alive(&mut cluster, member, id), ttl);
    }
    assert!(
        exists(&mut cluster, member, "k"),
        "kept alive for 10 s > TTL"
    );
    let (remaining, granted, keys) = time_to_live(&mut cluster, member, id);
    assert_eq!((granted, keys), (3, 1));
    assert!((1..=3).contains(&remaining), "remaining {remaining}");
}

#[test]
fn an_abandoned_lease_expires_with_its_keys_at_one_revision_on_every_member() {
    let mut cluster = Cluster::new(3, 4, |c| c);
    let member = follower(&mut cluster);
    let (id, _) = grant(&mut cluster, member, 2, 0).expect("granted");
    put_with_lease(&mut cluster, member, "a", id)
        .unwrap()
        .unwrap();
    put_with_lease(&mut cluster, member, "b", id)
        .unwrap()
        .unwrap();
    cluster.run_for(1_500 * MS);
    assert!(exists(&mut cluster, member, "a"), "not before its TTL");
    cluster.run_for(SECOND);
    assert!(!exists(&mut cluster, member, "a") && !exists(&mut cluster, member, "b"));
    assert_eq!(keep_alive(&mut cluster, member, id), 0);
    cluster.run_for(SECOND);
    let revisions: Vec<i64> = cluster
        .members
        .values()
        .map(|m| m.node.as_ref().unwrap().key_space().current_revision())
        .collect();
    assert_eq!(
        revisions,
        vec![4, 4, 4],
        "two puts, then one revision for both deletes"
    );
}

/// The remaining TTL survives the leader: a lease renewed before its leader dies is neither
/// revoked early by the successor nor given its full TTL again. The bound is the TTL plus the
/// prepay of the renewal record (half the TTL, at most the checkpoint interval, 5 s here).
#[test]
fn a_leader_change_neither_resets_nor_shortens_a_lease() {
    let mut cluster = Cluster::new(3, 5, |c| c);
    let old = leader(&mut cluster);
    let member = (1..=3).find(|m| *m != old).unwrap();
    let (id, _) = grant(&mut cluster, member, 10, 0).expect("granted");
    cluster.run_for(3 * SECOND);
    assert_eq!(keep_alive(&mut cluster, member, id), 10);
    let renewed = cluster.now;
    cluster.run_for(8 * SECOND);
    cluster.crash(old);
    let new = leader(&mut cluster);
    assert_ne!(new, old);
    // Alive until renewed + TTL; gone by renewed + TTL + prepay and a little. A reset would
    // keep it until the election + TTL, past renewed + 18 s.
    while cluster.now < renewed + 10 * SECOND - 100 * MS {
        assert!(time_to_live(&mut cluster, new, id).0 >= 0, "expired early");
        cluster.run_for(100 * MS);
    }
    while cluster.now < renewed + 16 * SECOND {
        cluster.run_for(100 * MS);
    }
    assert_eq!(
        time_to_live(&mut cluster, new, id).0,
        -1,
        "expired within its bound"
    );
}

#[test]
fn a_full_restart_keeps_what_a_lease_has_left() {
    let mut cluster = Cluster::new(3, 6, |c| c);
    let member = follower(&mut cluster);
    let (id, _) = grant(&mut cluster, member, 20, 0).expect("granted");
    cluster.run_for(12 * SECOND);
    for m in 1..=3 {
        cluster.crash(m);
    }
    for m in 1..=3 {
        cluster.start(m).expect("restarts");
    }
    let new = leader(&mut cluster);
    cluster.run_for(SECOND);
    let (remaining, granted, _) = time_to_live(&mut cluster, new, id);
    assert_eq!(granted, 20);
    assert!(
        (2..=14).contains(&remaining),
        "about 8 s were left at the crash, counted from the last checkpoint: {remaining}"
    );
}
