//! Wire facts of the etcd client API that every etcd client depends on. Each test pins a field
//! number (or enum value, or service name) by encoding with prost and comparing exact bytes, or by
//! decoding bytes written by hand. A renumbered field in proto/ makes one of these fail.

use bytes::Bytes;
use detcd::proto::authpb;
use detcd::proto::etcdserverpb as pb;
use detcd::proto::mvccpb;
use detcd::proto::v3electionpb;
use detcd::proto::v3lockpb;
use prost::Message;

/// Key byte of a field: (number << 3) | wire type, as a varint.
fn tag(field: u32, wire_type: u32) -> Vec<u8> {
    let mut v = (field << 3) | wire_type;
    let mut out = Vec::new();
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return out;
        }
        out.push(byte | 0x80);
    }
}

const VARINT: u32 = 0;
const LEN: u32 = 2;

fn varint_field(field: u32, value: u8) -> Vec<u8> {
    assert!(value < 0x80);
    let mut out = tag(field, VARINT);
    out.push(value);
    out
}

fn len_field(field: u32, payload: &[u8]) -> Vec<u8> {
    assert!(payload.len() < 0x80);
    let mut out = tag(field, LEN);
    out.push(payload.len() as u8);
    out.extend_from_slice(payload);
    out
}

#[test]
fn tag_helper_matches_known_encodings() {
    assert_eq!(tag(1, VARINT), [0x08]);
    assert_eq!(tag(13, VARINT), [0x68]);
    // Field 64 does not fit in one byte: 64 << 3 | 2 = 514 = 0x82 0x04.
    assert_eq!(tag(64, LEN), [0x82, 0x04]);
}

#[test]
fn range_request_revision_filters() {
    let req = pb::RangeRequest {
        max_create_revision: 5,
        ..Default::default()
    };
    assert_eq!(req.encode_to_vec(), varint_field(13, 5));
    let req = pb::RangeRequest {
        min_mod_revision: 3,
        ..Default::default()
    };
    assert_eq!(req.encode_to_vec(), varint_field(10, 3));
    let req = pb::RangeRequest {
        serializable: true,
        ..Default::default()
    };
    assert_eq!(req.encode_to_vec(), varint_field(7, 1));
}

#[test]
fn compare_range_end_is_field_64() {
    let cmp = pb::Compare {
        range_end: Bytes::from_static(b"z"),
        ..Default::default()
    };
    assert_eq!(cmp.encode_to_vec(), [0x82, 0x04, 0x01, b'z']);

    let lease = pb::Compare {
        target: pb::compare::CompareTarget::Lease as i32,
        target_union: Some(pb::compare::TargetUnion::Lease(9)),
        ..Default::default()
    };
    let mut want = varint_field(2, 4);
    want.extend(varint_field(8, 9));
    assert_eq!(lease.encode_to_vec(), want);
}

#[test]
fn txn_nests_txn_as_request_op_4() {
    let op = pb::RequestOp {
        request: Some(pb::request_op::Request::RequestTxn(
            pb::TxnRequest::default(),
        )),
    };
    assert_eq!(op.encode_to_vec(), len_field(4, &[]));
}

#[test]
fn watch_create_request_fields() {
    let req = pb::WatchCreateRequest {
        fragment: true,
        ..Default::default()
    };
    assert_eq!(req.encode_to_vec(), varint_field(8, 1));
    let req = pb::WatchCreateRequest {
        watch_id: 7,
        ..Default::default()
    };
    assert_eq!(req.encode_to_vec(), varint_field(7, 7));
    // filters is a packed repeated enum; NODELETE is 1.
    let req = pb::WatchCreateRequest {
        filters: vec![pb::watch_create_request::FilterType::Nodelete as i32],
        ..Default::default()
    };
    assert_eq!(req.encode_to_vec(), len_field(5, &[0x01]));
}

#[test]
fn watch_request_union() {
    let req = pb::WatchRequest {
        request_union: Some(pb::watch_request::RequestUnion::ProgressRequest(
            pb::WatchProgressRequest {},
        )),
    };
    assert_eq!(req.encode_to_vec(), len_field(3, &[]));
    let req = pb::WatchRequest {
        request_union: Some(pb::watch_request::RequestUnion::CancelRequest(
            pb::WatchCancelRequest { watch_id: 2 },
        )),
    };
    assert_eq!(req.encode_to_vec(), len_field(2, &varint_field(1, 2)));
}

#[test]
fn watch_response_events_are_field_11() {
    let event = mvccpb::Event {
        r#type: mvccpb::event::EventType::Delete as i32,
        ..Default::default()
    };
    let resp = pb::WatchResponse {
        events: vec![event],
        ..Default::default()
    };
    assert_eq!(resp.encode_to_vec(), len_field(11, &varint_field(1, 1)));

    let mut bytes = varint_field(4, 1);
    bytes.extend(varint_field(5, 42));
    bytes.extend(len_field(6, b"gone"));
    bytes.extend(varint_field(7, 1));
    let resp = pb::WatchResponse::decode(bytes.as_slice()).unwrap();
    assert!(resp.canceled);
    assert_eq!(resp.compact_revision, 42);
    assert_eq!(resp.cancel_reason, "gone");
    assert!(resp.fragment);
}

#[test]
fn lease_grant_uses_ttl_1_and_id_2() {
    let req = pb::LeaseGrantRequest { ttl: 5, id: 7 };
    let mut want = varint_field(1, 5);
    want.extend(varint_field(2, 7));
    assert_eq!(req.encode_to_vec(), want);

    // The response puts ID before TTL: ID 2, TTL 3.
    let mut bytes = varint_field(2, 7);
    bytes.extend(varint_field(3, 5));
    let resp = pb::LeaseGrantResponse::decode(bytes.as_slice()).unwrap();
    assert_eq!((resp.id, resp.ttl), (7, 5));
}

#[test]
fn lease_time_to_live_response() {
    let mut bytes = varint_field(4, 60);
    bytes.extend(len_field(5, b"k"));
    let resp = pb::LeaseTimeToLiveResponse::decode(bytes.as_slice()).unwrap();
    assert_eq!(resp.granted_ttl, 60);
    assert_eq!(resp.keys, vec![Bytes::from_static(b"k")]);
}

#[test]
fn member_fields() {
    let mut bytes = varint_field(1, 3);
    bytes.extend(len_field(2, b"n1"));
    bytes.extend(len_field(3, b"http://p"));
    bytes.extend(len_field(4, b"http://c"));
    bytes.extend(varint_field(5, 1));
    let m = pb::Member::decode(bytes.as_slice()).unwrap();
    assert_eq!(m.id, 3);
    assert_eq!(m.name, "n1");
    assert_eq!(m.peer_ur_ls, ["http://p"]);
    assert_eq!(m.client_ur_ls, ["http://c"]);
    assert!(m.is_learner);

    let req = pb::MemberListRequest { linearizable: true };
    assert_eq!(req.encode_to_vec(), varint_field(1, 1));
}

#[test]
fn status_response_3_6_fields() {
    let resp = pb::StatusResponse {
        db_size_quota: 5,
        ..Default::default()
    };
    assert_eq!(resp.encode_to_vec(), varint_field(12, 5));
    let resp = pb::StatusResponse {
        storage_version: "3.6.0".into(),
        ..Default::default()
    };
    assert_eq!(resp.encode_to_vec(), len_field(11, b"3.6.0"));
    let resp = pb::StatusResponse {
        downgrade_info: Some(pb::DowngradeInfo {
            enabled: true,
            target_version: String::new(),
        }),
        ..Default::default()
    };
    assert_eq!(resp.encode_to_vec(), len_field(13, &varint_field(1, 1)));
    let resp = pb::StatusResponse {
        is_learner: true,
        ..Default::default()
    };
    assert_eq!(resp.encode_to_vec(), varint_field(10, 1));
}

#[test]
fn hash_kv_and_snapshot_3_6_fields() {
    let resp = pb::HashKvResponse {
        hash_revision: 9,
        ..Default::default()
    };
    assert_eq!(resp.encode_to_vec(), varint_field(4, 9));
    let resp = pb::SnapshotResponse {
        version: "3.6.0".into(),
        ..Default::default()
    };
    assert_eq!(resp.encode_to_vec(), len_field(4, b"3.6.0"));
}

#[test]
fn alarm_enums_and_fields() {
    assert_eq!(pb::AlarmType::Nospace as i32, 1);
    assert_eq!(pb::AlarmType::Corrupt as i32, 2);
    let req = pb::AlarmRequest {
        action: pb::alarm_request::AlarmAction::Deactivate as i32,
        member_id: 0,
        alarm: pb::AlarmType::Nospace as i32,
    };
    let mut want = varint_field(1, 2);
    want.extend(varint_field(3, 1));
    assert_eq!(req.encode_to_vec(), want);
    assert_eq!(pb::downgrade_request::DowngradeAction::Cancel as i32, 2);
}

#[test]
fn auth_messages() {
    let req = pb::AuthUserAddRequest {
        options: Some(authpb::UserAddOptions { no_password: true }),
        hashed_password: "h".into(),
        ..Default::default()
    };
    let mut want = len_field(3, &varint_field(1, 1));
    want.extend(len_field(4, b"h"));
    assert_eq!(req.encode_to_vec(), want);

    let req = pb::AuthUserGrantRoleRequest {
        user: "u".into(),
        role: "r".into(),
    };
    let mut want = len_field(1, b"u");
    want.extend(len_field(2, b"r"));
    assert_eq!(req.encode_to_vec(), want);

    let perm = authpb::Permission {
        perm_type: authpb::permission::Type::Readwrite as i32,
        key: Bytes::new(),
        range_end: Bytes::from_static(b"e"),
    };
    let mut want = varint_field(1, 2);
    want.extend(len_field(3, b"e"));
    assert_eq!(perm.encode_to_vec(), want);

    let resp = pb::AuthStatusResponse {
        enabled: true,
        auth_revision: 4,
        header: None,
    };
    let mut want = varint_field(2, 1);
    want.extend(varint_field(3, 4));
    assert_eq!(resp.encode_to_vec(), want);
}

#[test]
fn lock_and_election() {
    let req = v3lockpb::LockRequest {
        name: Bytes::from_static(b"l"),
        lease: 6,
    };
    let mut want = len_field(1, b"l");
    want.extend(varint_field(2, 6));
    assert_eq!(req.encode_to_vec(), want);

    let key = v3electionpb::LeaderKey {
        rev: 3,
        lease: 4,
        ..Default::default()
    };
    let mut want = varint_field(3, 3);
    want.extend(varint_field(4, 4));
    assert_eq!(key.encode_to_vec(), want);

    let req = v3electionpb::ProclaimRequest {
        leader: None,
        value: Bytes::from_static(b"v"),
    };
    assert_eq!(req.encode_to_vec(), len_field(2, b"v"));
}

/// The gRPC service names clients dial: `/<package>.<Service>/<Method>`.
#[cfg(feature = "server")]
#[test]
fn service_names() {
    assert_eq!(pb::kv_server::SERVICE_NAME, "etcdserverpb.KV");
    assert_eq!(pb::watch_server::SERVICE_NAME, "etcdserverpb.Watch");
    assert_eq!(pb::lease_server::SERVICE_NAME, "etcdserverpb.Lease");
    assert_eq!(pb::cluster_server::SERVICE_NAME, "etcdserverpb.Cluster");
    assert_eq!(
        pb::maintenance_server::SERVICE_NAME,
        "etcdserverpb.Maintenance"
    );
    assert_eq!(pb::auth_server::SERVICE_NAME, "etcdserverpb.Auth");
    assert_eq!(v3lockpb::lock_server::SERVICE_NAME, "v3lockpb.Lock");
    assert_eq!(
        v3electionpb::election_server::SERVICE_NAME,
        "v3electionpb.Election"
    );
}
