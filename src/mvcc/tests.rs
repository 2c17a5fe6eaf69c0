//! Behaviour tests of the key space, one etcd rule per test. Expected values come from etcd 3.6's
//! source (cited in the module docs) and, where noted, from running etcd 3.4.23.

use bytes::Bytes;

use super::*;
use crate::proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use crate::proto::etcdserverpb::range_request::{SortOrder, SortTarget};
use crate::proto::etcdserverpb::request_op::Request;
use crate::proto::etcdserverpb::response_op::Response;
use crate::proto::etcdserverpb::{Compare, RequestOp, ResponseOp};
use crate::proto::mvccpb::KeyValue;

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn put_req(key: &str, value: &str) -> PutRequest {
    PutRequest {
        key: b(key),
        value: b(value),
        ..PutRequest::default()
    }
}

fn put(ks: &mut KeySpace, key: &str, value: &str) -> PutResponse {
    let resp = ks.put(&put_req(key, value)).expect("put");
    ks.check_invariants().expect("invariants after put");
    resp
}

fn del(ks: &mut KeySpace, key: &str, end: &str) -> DeleteRangeResponse {
    let resp = ks
        .delete_range(&DeleteRangeRequest {
            key: b(key),
            range_end: b(end),
            prev_kv: true,
        })
        .expect("delete");
    ks.check_invariants().expect("invariants after delete");
    resp
}

fn range_req(key: &str, end: &str) -> RangeRequest {
    RangeRequest {
        key: b(key),
        range_end: b(end),
        ..RangeRequest::default()
    }
}

fn get(ks: &KeySpace, key: &str) -> Option<KeyValue> {
    let resp = ks.range(&range_req(key, "")).expect("range");
    assert!(resp.kvs.len() <= 1);
    resp.kvs.into_iter().next()
}

fn keys(resp: &RangeResponse) -> Vec<String> {
    resp.kvs
        .iter()
        .map(|kv| String::from_utf8_lossy(&kv.key).into_owned())
        .collect()
}

fn rev(resp_header: &Option<ResponseHeader>) -> i64 {
    resp_header.expect("every response has a header").revision
}

fn op_put(key: &str, value: &str) -> RequestOp {
    RequestOp {
        request: Some(Request::RequestPut(put_req(key, value))),
    }
}

fn op_range(key: &str, end: &str) -> RequestOp {
    RequestOp {
        request: Some(Request::RequestRange(range_req(key, end))),
    }
}

fn op_del(key: &str, end: &str) -> RequestOp {
    RequestOp {
        request: Some(Request::RequestDeleteRange(DeleteRangeRequest {
            key: b(key),
            range_end: b(end),
            prev_kv: false,
        })),
    }
}

fn op_txn(t: TxnRequest) -> RequestOp {
    RequestOp {
        request: Some(Request::RequestTxn(t)),
    }
}

fn cmp(
    key: &str,
    end: &str,
    target: CompareTarget,
    result: CompareResult,
    union: TargetUnion,
) -> Compare {
    Compare {
        key: b(key),
        range_end: b(end),
        target: target as i32,
        result: result as i32,
        target_union: Some(union),
    }
}

fn txn(compare: Vec<Compare>, success: Vec<RequestOp>, failure: Vec<RequestOp>) -> TxnRequest {
    TxnRequest {
        compare,
        success,
        failure,
    }
}

fn range_resp(op: &ResponseOp) -> &RangeResponse {
    match &op.response {
        Some(Response::ResponseRange(r)) => r,
        other => panic!("expected a range response, got {other:?}"),
    }
}

/// A store with a..e written once each at revisions 2..6.
fn abcde() -> KeySpace {
    let mut ks = KeySpace::new();
    for (i, k) in ["a", "b", "c", "d", "e"].iter().enumerate() {
        put(&mut ks, k, &format!("v{i}"));
    }
    ks
}

// ---------------------------------------------------------------------------------------------
// Revisions, versions, generations

#[test]
fn a_new_store_is_empty_at_revision_one() {
    let ks = KeySpace::new();
    assert_eq!(ks.current_revision(), 1);
    assert_eq!(ks.compact_revision(), 0);
    let resp = ks.range(&range_req("\0", "\0")).unwrap();
    assert_eq!((resp.kvs.len(), resp.count, rev(&resp.header)), (0, 0, 1));
    ks.check_invariants().unwrap();
}

#[test]
fn every_put_bumps_the_revision_even_with_an_unchanged_value() {
    let mut ks = KeySpace::new();
    assert_eq!(rev(&put(&mut ks, "k", "v").header), 2);
    assert_eq!(rev(&put(&mut ks, "k", "v").header), 3);
    let kv = get(&ks, "k").unwrap();
    assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (2, 3, 2));
}

#[test]
fn a_recreated_key_starts_a_new_generation() {
    let mut ks = KeySpace::new();
    put(&mut ks, "k", "1");
    put(&mut ks, "k", "2");
    del(&mut ks, "k", "");
    assert_eq!(get(&ks, "k"), None);
    put(&mut ks, "k", "3");
    let kv = get(&ks, "k").unwrap();
    assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (5, 5, 1));
}

#[test]
fn deleting_nothing_does_not_create_a_revision() {
    let mut ks = abcde();
    let resp = del(&mut ks, "x", "");
    assert_eq!(
        (resp.deleted, rev(&resp.header), ks.current_revision()),
        (0, 6, 6)
    );
}

#[test]
fn delete_range_reports_count_and_previous_pairs_in_key_order() {
    let mut ks = abcde();
    let resp = del(&mut ks, "b", "d");
    assert_eq!(resp.deleted, 2);
    assert_eq!(
        resp.prev_kvs
            .iter()
            .map(|kv| kv.key.clone())
            .collect::<Vec<_>>(),
        vec![b("b"), b("c")]
    );
    assert_eq!(rev(&resp.header), 7);
    assert_eq!(
        keys(&ks.range(&range_req("a", "\0")).unwrap()),
        vec!["a", "d", "e"]
    );
}

#[test]
fn all_writes_of_a_txn_share_one_revision() {
    let mut ks = KeySpace::new();
    let resp = ks
        .txn(&txn(
            vec![],
            vec![op_put("a", "1"), op_put("b", "2"), op_del("c", "")],
            vec![],
        ))
        .unwrap();
    assert_eq!(rev(&resp.header), 2);
    assert_eq!(ks.current_revision(), 2);
    assert_eq!(get(&ks, "a").unwrap().mod_revision, 2);
    assert_eq!(get(&ks, "b").unwrap().mod_revision, 2);
    ks.check_invariants().unwrap();
}

#[test]
fn a_txn_without_writes_does_not_create_a_revision() {
    let mut ks = abcde();
    let resp = ks
        .txn(&txn(
            vec![],
            vec![op_range("a", ""), op_del("zz", "")],
            vec![],
        ))
        .unwrap();
    assert_eq!((rev(&resp.header), ks.current_revision()), (6, 6));
}

// ---------------------------------------------------------------------------------------------
// Range: key selection

#[test]
fn range_end_selects_single_key_from_key_all_keys_and_prefixes() {
    let mut ks = abcde();
    put(&mut ks, "ab", "x");
    assert_eq!(keys(&ks.range(&range_req("b", "")).unwrap()), vec!["b"]);
    assert_eq!(
        keys(&ks.range(&range_req("c", "\0")).unwrap()),
        vec!["c", "d", "e"]
    );
    assert_eq!(
        keys(&ks.range(&range_req("\0", "\0")).unwrap()),
        vec!["a", "ab", "b", "c", "d", "e"]
    );
    assert_eq!(
        keys(&ks.range(&range_req("a", "b")).unwrap()),
        vec!["a", "ab"]
    );
    assert_eq!(
        keys(&ks.range(&range_req("d", "b")).unwrap()),
        Vec::<String>::new()
    );
}

#[test]
fn limit_sets_more_and_count_is_the_total_in_range() {
    let ks = abcde();
    let resp = ks
        .range(&RangeRequest {
            limit: 2,
            ..range_req("a", "\0")
        })
        .unwrap();
    assert_eq!(
        (keys(&resp), resp.more, resp.count),
        (vec!["a".into(), "b".into()], true, 5)
    );
    let resp = ks
        .range(&RangeRequest {
            limit: 5,
            ..range_req("a", "\0")
        })
        .unwrap();
    assert_eq!((resp.kvs.len(), resp.more, resp.count), (5, false, 5));
    let resp = ks
        .range(&RangeRequest {
            limit: -1,
            ..range_req("a", "\0")
        })
        .unwrap();
    assert_eq!((resp.kvs.len(), resp.more), (5, false));
}

#[test]
fn count_only_counts_every_key_and_ignores_limit_and_filters() {
    let ks = abcde();
    let resp = ks
        .range(&RangeRequest {
            count_only: true,
            limit: 1,
            min_mod_revision: 5,
            ..range_req("a", "\0")
        })
        .unwrap();
    assert_eq!((resp.kvs.len(), resp.count, resp.more), (0, 5, false));
}

#[test]
fn keys_only_blanks_values_and_keeps_the_rest() {
    let mut ks = KeySpace::new();
    ks.put_with_leases(
        &PutRequest {
            lease: 9,
            ..put_req("k", "v")
        },
        &|id| id == 9,
    )
    .unwrap();
    let resp = ks
        .range(&RangeRequest {
            keys_only: true,
            ..range_req("k", "")
        })
        .unwrap();
    let kv = &resp.kvs[0];
    assert_eq!(
        (kv.value.len(), kv.version, kv.lease, kv.mod_revision),
        (0, 1, 9, 2)
    );
}

#[test]
fn revision_filters_prune_results_but_not_count() {
    let ks = abcde();
    let resp = ks
        .range(&RangeRequest {
            min_mod_revision: 3,
            max_mod_revision: 5,
            ..range_req("a", "\0")
        })
        .unwrap();
    assert_eq!(
        (keys(&resp), resp.count),
        (vec!["b".into(), "c".into(), "d".into()], 5)
    );
    let resp = ks
        .range(&RangeRequest {
            min_create_revision: 4,
            max_create_revision: 0,
            ..range_req("a", "\0")
        })
        .unwrap();
    assert_eq!(keys(&resp), vec!["c", "d", "e"]);
}

#[test]
fn with_filters_the_limit_applies_after_filtering() {
    let ks = abcde();
    let resp = ks
        .range(&RangeRequest {
            min_mod_revision: 4,
            limit: 2,
            ..range_req("a", "\0")
        })
        .unwrap();
    assert_eq!(
        (keys(&resp), resp.more, resp.count),
        (vec!["c".into(), "d".into()], true, 5)
    );
    let resp = ks
        .range(&RangeRequest {
            min_mod_revision: 5,
            limit: 2,
            ..range_req("a", "\0")
        })
        .unwrap();
    assert_eq!(
        (keys(&resp), resp.more),
        (vec!["d".into(), "e".into()], false)
    );
}

// ---------------------------------------------------------------------------------------------
// Range: sorting

/// a..e with versions e:1, d:2, c:3, b:4, a:5 (mod revisions in the same order as versions).
fn versions_descending_by_key() -> KeySpace {
    let mut ks = KeySpace::new();
    for (i, k) in ["a", "b", "c", "d", "e"].iter().enumerate() {
        for _ in 0..(5 - i) {
            put(&mut ks, k, "v");
        }
    }
    ks
}

#[test]
fn sort_order_none_with_a_non_key_target_sorts_ascending() {
    let ks = versions_descending_by_key();
    let resp = ks
        .range(&RangeRequest {
            sort_target: SortTarget::Version as i32,
            ..range_req("a", "\0")
        })
        .unwrap();
    assert_eq!(keys(&resp), vec!["e", "d", "c", "b", "a"]);
}

#[test]
fn sort_order_none_with_a_limit_sorts_only_the_first_keys_in_key_order() {
    // etcd pushes the limit into the key walk when the order is NONE, then sorts what it kept:
    // the two keys with the lowest versions overall (e, d) are not what comes back.
    let ks = versions_descending_by_key();
    let resp = ks
        .range(&RangeRequest {
            sort_target: SortTarget::Version as i32,
            limit: 2,
            ..range_req("a", "\0")
        })
        .unwrap();
    assert_eq!(
        (keys(&resp), resp.more, resp.count),
        (vec!["c".into(), "b".into()], true, 5)
    );
}

#[test]
fn explicit_ascend_sorts_everything_before_applying_the_limit() {
    let ks = versions_descending_by_key();
    let resp = ks
        .range(&RangeRequest {
            sort_target: SortTarget::Version as i32,
            sort_order: SortOrder::Ascend as i32,
            limit: 2,
            ..range_req("a", "\0")
        })
        .unwrap();
    assert_eq!(
        (keys(&resp), resp.more),
        (vec!["e".into(), "d".into()], true)
    );
}

#[test]
fn descend_by_key_and_by_value() {
    let ks = abcde();
    let by_key = RangeRequest {
        sort_order: SortOrder::Descend as i32,
        ..range_req("a", "\0")
    };
    assert_eq!(
        keys(&ks.range(&by_key).unwrap()),
        vec!["e", "d", "c", "b", "a"]
    );
    let by_value = RangeRequest {
        sort_target: SortTarget::Value as i32,
        ..by_key
    };
    assert_eq!(
        keys(&ks.range(&by_value).unwrap()),
        vec!["e", "d", "c", "b", "a"]
    );
}

#[test]
fn descending_ties_keep_key_order_for_short_results() {
    let ks = abcde(); // all version 1
    let resp = ks
        .range(&RangeRequest {
            sort_target: SortTarget::Version as i32,
            sort_order: SortOrder::Descend as i32,
            ..range_req("a", "\0")
        })
        .unwrap();
    assert_eq!(keys(&resp), vec!["a", "b", "c", "d", "e"]);
}

#[test]
fn an_unknown_sort_target_that_reaches_apply_is_an_invalid_sort_option() {
    let ks = abcde();
    let resp = ks.range(&RangeRequest {
        sort_target: 77,
        ..range_req("a", "\0")
    });
    assert_eq!(resp, Err(EtcdError::InvalidSortOption));
}

// ---------------------------------------------------------------------------------------------
// Range: revisions

#[test]
fn reading_the_past_sees_old_values_with_the_current_header_revision() {
    let mut ks = KeySpace::new();
    put(&mut ks, "k", "old");
    put(&mut ks, "k", "new");
    del(&mut ks, "k", "");
    let past = ks
        .range(&RangeRequest {
            revision: 2,
            ..range_req("k", "")
        })
        .unwrap();
    assert_eq!(
        (past.kvs[0].value.clone(), rev(&past.header)),
        (b("old"), 4)
    );
    let past = ks
        .range(&RangeRequest {
            revision: 3,
            ..range_req("k", "")
        })
        .unwrap();
    assert_eq!(past.kvs[0].value, b("new"));
    assert!(ks
        .range(&RangeRequest {
            revision: 4,
            ..range_req("k", "")
        })
        .unwrap()
        .kvs
        .is_empty());
    assert!(ks
        .range(&RangeRequest {
            revision: 1,
            ..range_req("k", "")
        })
        .unwrap()
        .kvs
        .is_empty());
}

#[test]
fn a_future_revision_fails_and_a_negative_one_reads_the_latest() {
    let ks = abcde();
    let future = ks.range(&RangeRequest {
        revision: 7,
        ..range_req("a", "")
    });
    assert_eq!(future, Err(EtcdError::FutureRev));
    let latest = ks
        .range(&RangeRequest {
            revision: -3,
            ..range_req("e", "")
        })
        .unwrap();
    assert_eq!(latest.kvs.len(), 1);
}

#[test]
fn reading_at_the_compact_revision_works_and_below_it_fails() {
    let mut ks = abcde();
    ks.compact(&CompactionRequest {
        revision: 4,
        physical: false,
    })
    .unwrap();
    let at = ks
        .range(&RangeRequest {
            revision: 4,
            ..range_req("a", "\0")
        })
        .unwrap();
    assert_eq!(keys(&at), vec!["a", "b", "c"]);
    let below = ks.range(&RangeRequest {
        revision: 3,
        ..range_req("a", "\0")
    });
    assert_eq!(below, Err(EtcdError::Compacted));
}

// ---------------------------------------------------------------------------------------------
// Put options

#[test]
fn prev_kv_is_returned_only_when_asked_and_present() {
    let mut ks = KeySpace::new();
    let first = ks
        .put(&PutRequest {
            prev_kv: true,
            ..put_req("k", "1")
        })
        .unwrap();
    assert_eq!(first.prev_kv, None);
    let second = ks
        .put(&PutRequest {
            prev_kv: true,
            ..put_req("k", "2")
        })
        .unwrap();
    assert_eq!(second.prev_kv.map(|kv| kv.value), Some(b("1")));
    assert_eq!(put(&mut ks, "k", "3").prev_kv, None);
}

#[test]
fn ignore_value_keeps_the_value_and_still_bumps_the_revision() {
    let mut ks = KeySpace::new();
    put(&mut ks, "k", "keep");
    let resp = ks
        .put(&PutRequest {
            ignore_value: true,
            ..put_req("k", "")
        })
        .unwrap();
    assert_eq!(rev(&resp.header), 3);
    let kv = get(&ks, "k").unwrap();
    assert_eq!((kv.value, kv.version, kv.mod_revision), (b("keep"), 2, 3));
}

#[test]
fn ignore_flags_on_a_missing_key_are_key_not_found_without_effect() {
    let mut ks = abcde();
    let size = ks.approximate_size_bytes();
    for req in [
        PutRequest {
            ignore_value: true,
            ..put_req("zz", "")
        },
        PutRequest {
            ignore_lease: true,
            ..put_req("zz", "v")
        },
    ] {
        assert_eq!(ks.put(&req), Err(EtcdError::KeyNotFound));
    }
    assert_eq!(
        (ks.current_revision(), ks.approximate_size_bytes()),
        (6, size)
    );
    ks.check_invariants().unwrap();
}

#[test]
fn a_lease_sticks_only_through_ignore_lease() {
    let leases = |id: i64| id == 5;
    let mut ks = KeySpace::new();
    ks.put_with_leases(
        &PutRequest {
            lease: 5,
            ..put_req("k", "1")
        },
        &leases,
    )
    .unwrap();
    ks.put_with_leases(
        &PutRequest {
            ignore_lease: true,
            ..put_req("k", "2")
        },
        &leases,
    )
    .unwrap();
    assert_eq!(get(&ks, "k").unwrap().lease, 5);
    // A plain put replaces the lease with its own (none), as etcd detaches the old one.
    put(&mut ks, "k", "3");
    assert_eq!(get(&ks, "k").unwrap().lease, 0);
}

#[test]
fn unwatched_writes_report_only_the_changes_that_move_keys_between_leases() {
    let leases = |id: i64| id == 5;
    let mut ks = KeySpace::new();
    ks.report_every_change(false);
    let leased = |key: &str, value: &str| PutRequest {
        lease: 5,
        ..put_req(key, value)
    };
    put(&mut ks, "plain", "1");
    ks.put_with_leases(&leased("k", "1"), &leases).unwrap();
    ks.put_with_leases(&leased("k", "2"), &leases).unwrap();
    put(&mut ks, "k", "3");
    put(&mut ks, "k", "4");
    ks.put_with_leases(&leased("gone", "1"), &leases).unwrap();
    del(&mut ks, "gone", "");
    del(&mut ks, "plain", "");
    let reported: Vec<(i64, String, i64, i64)> = ks
        .take_changes()
        .iter()
        .map(|c| {
            let key = String::from_utf8_lossy(c.key()).into_owned();
            (c.revision.main, key, c.lease_before, c.lease_after())
        })
        .collect();
    let expected = vec![
        (3, "k".to_string(), 0, 5),
        (4, "k".to_string(), 5, 5),
        (5, "k".to_string(), 5, 0),
        (7, "gone".to_string(), 0, 5),
        (8, "gone".to_string(), 5, 0),
    ];
    assert_eq!(reported, expected);

    ks.report_every_change(true);
    put(&mut ks, "plain", "2");
    assert_eq!(ks.take_changes().len(), 1, "every change again");
}

#[test]
fn a_put_with_an_unknown_lease_fails_before_the_key_is_looked_at() {
    let mut ks = KeySpace::new();
    let req = PutRequest {
        lease: 1,
        ignore_value: true,
        ..put_req("missing", "")
    };
    assert_eq!(ks.put(&req), Err(EtcdError::LeaseNotFound));
    assert_eq!(ks.current_revision(), 1);
}

// ---------------------------------------------------------------------------------------------
// Txn: compares

fn succeeded(ks: &mut KeySpace, compare: Compare) -> bool {
    ks.txn(&txn(vec![compare], vec![], vec![]))
        .unwrap()
        .succeeded
}

#[test]
fn a_missing_key_compares_as_an_all_zero_key_value() {
    let mut ks = KeySpace::new();
    for (target, union) in [
        (CompareTarget::Version, TargetUnion::Version(0)),
        (CompareTarget::Create, TargetUnion::CreateRevision(0)),
        (CompareTarget::Mod, TargetUnion::ModRevision(0)),
        (CompareTarget::Lease, TargetUnion::Lease(0)),
    ] {
        assert!(succeeded(
            &mut ks,
            cmp("nope", "", target, CompareResult::Equal, union)
        ));
    }
}

#[test]
fn a_value_compare_on_a_missing_key_always_fails() {
    let mut ks = KeySpace::new();
    for result in [
        CompareResult::Equal,
        CompareResult::NotEqual,
        CompareResult::Greater,
        CompareResult::Less,
    ] {
        let c = cmp(
            "nope",
            "",
            CompareTarget::Value,
            result,
            TargetUnion::Value(b("")),
        );
        assert!(!succeeded(&mut ks, c));
    }
}

#[test]
fn a_compare_over_a_range_must_hold_for_every_key() {
    let mut ks = abcde(); // mod revisions 2..6
    let all_above_1 = cmp(
        "a",
        "\0",
        CompareTarget::Mod,
        CompareResult::Greater,
        TargetUnion::ModRevision(1),
    );
    assert!(succeeded(&mut ks, all_above_1));
    let all_above_2 = cmp(
        "a",
        "\0",
        CompareTarget::Mod,
        CompareResult::Greater,
        TargetUnion::ModRevision(2),
    );
    assert!(!succeeded(&mut ks, all_above_2));
    let value_prefix = cmp(
        "a",
        "c",
        CompareTarget::Value,
        CompareResult::Less,
        TargetUnion::Value(b("v2")),
    );
    assert!(succeeded(&mut ks, value_prefix));
}

#[test]
fn a_compare_over_an_empty_range_uses_the_zero_key_value() {
    let mut ks = abcde();
    let c = cmp(
        "x",
        "z",
        CompareTarget::Create,
        CompareResult::Equal,
        TargetUnion::CreateRevision(0),
    );
    assert!(succeeded(&mut ks, c));
    let c = cmp(
        "x",
        "z",
        CompareTarget::Value,
        CompareResult::Equal,
        TargetUnion::Value(b("")),
    );
    assert!(!succeeded(&mut ks, c));
}

#[test]
fn the_failure_branch_runs_when_a_compare_fails() {
    let mut ks = abcde();
    let c = cmp(
        "a",
        "",
        CompareTarget::Value,
        CompareResult::Equal,
        TargetUnion::Value(b("nope")),
    );
    let resp = ks
        .txn(&txn(vec![c], vec![op_put("s", "")], vec![op_put("f", "")]))
        .unwrap();
    assert!(!resp.succeeded);
    assert!(get(&ks, "f").is_some() && get(&ks, "s").is_none());
}

// ---------------------------------------------------------------------------------------------
// Txn: execution

#[test]
fn reads_inside_a_txn_see_its_earlier_writes_and_report_matching_revisions() {
    let mut ks = abcde(); // revision 6
    let resp = ks
        .txn(&txn(
            vec![],
            vec![
                op_range("k", ""),
                op_put("k", "new"),
                op_range("k", ""),
                op_del("zz", ""),
            ],
            vec![],
        ))
        .unwrap();
    let before = range_resp(&resp.responses[0]);
    let after = range_resp(&resp.responses[2]);
    assert_eq!((before.kvs.len(), rev(&before.header)), (0, 6));
    assert_eq!(
        (after.kvs[0].value.clone(), rev(&after.header)),
        (b("new"), 7)
    );
    match &resp.responses[1].response {
        Some(Response::ResponsePut(p)) => assert_eq!(rev(&p.header), 7),
        other => panic!("{other:?}"),
    }
    match &resp.responses[3].response {
        // A delete of nothing after a write answers the txn's new revision.
        Some(Response::ResponseDeleteRange(d)) => assert_eq!((d.deleted, rev(&d.header)), (0, 7)),
        other => panic!("{other:?}"),
    }
    assert_eq!(rev(&resp.header), 7);
}

#[test]
fn nested_txn_compares_see_the_store_before_the_txn() {
    let mut ks = KeySpace::new();
    let inner = txn(
        vec![cmp(
            "k",
            "",
            CompareTarget::Version,
            CompareResult::Equal,
            TargetUnion::Version(0),
        )],
        vec![op_put("inner-saw-nothing", "")],
        vec![op_put("inner-saw-k", "")],
    );
    ks.txn(&txn(vec![], vec![op_put("k", "v"), op_txn(inner)], vec![]))
        .unwrap();
    assert!(get(&ks, "inner-saw-nothing").is_some());
    assert!(get(&ks, "inner-saw-k").is_none());
}

#[test]
fn nested_txn_responses_carry_an_all_zero_header() {
    let mut ks = KeySpace::new();
    let inner = txn(vec![], vec![op_put("b", "")], vec![]);
    let resp = ks
        .txn(&txn(vec![], vec![op_put("a", ""), op_txn(inner)], vec![]))
        .unwrap();
    match &resp.responses[1].response {
        Some(Response::ResponseTxn(t)) => {
            assert_eq!(t.header, Some(ResponseHeader::default()));
            assert!(t.succeeded);
            match &t.responses[0].response {
                Some(Response::ResponsePut(p)) => assert_eq!(rev(&p.header), 2),
                other => panic!("{other:?}"),
            }
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(rev(&resp.header), 2);
}

fn assert_txn_fails_without_effect(ks: &mut KeySpace, t: TxnRequest, expected: EtcdError) {
    let before = ks.clone();
    assert_eq!(ks.txn(&t), Err(expected));
    assert_eq!(*ks, before, "a failed txn must leave no trace");
}

#[test]
fn a_range_below_the_compact_revision_aborts_the_whole_txn() {
    let mut ks = abcde();
    ks.compact(&CompactionRequest {
        revision: 4,
        physical: false,
    })
    .unwrap();
    let bad_read = RequestOp {
        request: Some(Request::RequestRange(RangeRequest {
            revision: 3,
            ..range_req("a", "")
        })),
    };
    assert_txn_fails_without_effect(
        &mut ks,
        txn(vec![], vec![op_put("x", ""), bad_read], vec![]),
        EtcdError::Compacted,
    );
}

#[test]
fn a_future_range_revision_in_a_txn_fails_even_after_the_txn_wrote() {
    let mut ks = abcde();
    let next = RequestOp {
        request: Some(Request::RequestRange(RangeRequest {
            revision: 7,
            ..range_req("a", "")
        })),
    };
    assert_txn_fails_without_effect(
        &mut ks,
        txn(vec![], vec![op_put("x", ""), next], vec![]),
        EtcdError::FutureRev,
    );
}

#[test]
fn a_negative_range_revision_in_a_txn_is_compared_raw_with_the_compact_revision() {
    // etcd's txn check compares the raw revision with compactMainRev (-1 before any compaction),
    // while a plain Range treats any revision <= 0 as "latest".
    let mut ks = abcde();
    let read_at = |revision| RequestOp {
        request: Some(Request::RequestRange(RangeRequest {
            revision,
            ..range_req("a", "")
        })),
    };
    assert!(ks.txn(&txn(vec![], vec![read_at(-1)], vec![])).is_ok());
    assert_txn_fails_without_effect(
        &mut ks,
        txn(vec![], vec![read_at(-2)], vec![]),
        EtcdError::Compacted,
    );
    ks.compact(&CompactionRequest {
        revision: 2,
        physical: false,
    })
    .unwrap();
    assert_txn_fails_without_effect(
        &mut ks,
        txn(vec![], vec![read_at(-1)], vec![]),
        EtcdError::Compacted,
    );
    assert!(ks
        .range(&RangeRequest {
            revision: -1,
            ..range_req("a", "")
        })
        .is_ok());
}

#[test]
fn ignore_value_on_a_missing_key_aborts_the_txn() {
    let mut ks = abcde();
    let bad = RequestOp {
        request: Some(Request::RequestPut(PutRequest {
            ignore_value: true,
            ..put_req("zz", "")
        })),
    };
    assert_txn_fails_without_effect(
        &mut ks,
        txn(vec![], vec![op_put("x", ""), bad], vec![]),
        EtcdError::KeyNotFound,
    );
}

#[test]
fn an_unknown_lease_aborts_the_txn() {
    let mut ks = abcde();
    let bad = RequestOp {
        request: Some(Request::RequestPut(PutRequest {
            lease: 3,
            ..put_req("x", "")
        })),
    };
    assert_txn_fails_without_effect(
        &mut ks,
        txn(vec![], vec![op_put("y", ""), bad], vec![]),
        EtcdError::LeaseNotFound,
    );
}

#[test]
fn inside_a_txn_key_not_found_is_checked_before_the_lease() {
    // etcd 3.6's txn check looks at ignore_* before the lease (a plain Put does the opposite).
    let mut ks = KeySpace::new();
    let op = RequestOp {
        request: Some(Request::RequestPut(PutRequest {
            lease: 3,
            ignore_value: true,
            ..put_req("x", "")
        })),
    };
    assert_txn_fails_without_effect(
        &mut ks,
        txn(vec![], vec![op], vec![]),
        EtcdError::KeyNotFound,
    );
}

#[test]
fn errors_in_a_nested_txn_abort_the_outer_one() {
    let mut ks = abcde();
    let inner = txn(
        vec![],
        vec![
            op_put("b", ""),
            RequestOp {
                request: Some(Request::RequestPut(PutRequest {
                    ignore_lease: true,
                    ..put_req("zz", "")
                })),
            },
        ],
        vec![],
    );
    assert_txn_fails_without_effect(
        &mut ks,
        txn(vec![], vec![op_put("a", ""), op_txn(inner)], vec![]),
        EtcdError::KeyNotFound,
    );
}

#[test]
fn ignore_value_on_a_key_deleted_earlier_in_the_txn_is_key_not_found_not_a_crash() {
    // etcd's duplicate-key check ignores a "\0"-ended delete, so this txn passes it; etcd would
    // then panic while applying. We refuse it and keep the store unchanged.
    let mut ks = abcde();
    let t = txn(
        vec![],
        vec![
            op_del("c", "\0"),
            RequestOp {
                request: Some(Request::RequestPut(PutRequest {
                    ignore_value: true,
                    ..put_req("d", "")
                })),
            },
        ],
        vec![],
    );
    assert_eq!(check_txn(&t, 128), Ok(()));
    assert_txn_fails_without_effect(&mut ks, t, EtcdError::KeyNotFound);
}

#[test]
fn a_delete_then_put_of_the_same_key_in_one_txn_starts_a_new_generation() {
    let mut ks = abcde();
    ks.txn(&txn(
        vec![],
        vec![op_del("a", "\0"), op_put("b", "again")],
        vec![],
    ))
    .unwrap();
    let kv = get(&ks, "b").unwrap();
    assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (7, 7, 1));
    assert_eq!(keys(&ks.range(&range_req("a", "\0")).unwrap()), vec!["b"]);
    ks.check_invariants().unwrap();
}

// ---------------------------------------------------------------------------------------------
// Compaction

#[test]
fn compaction_rejects_old_and_future_revisions() {
    let mut ks = abcde();
    assert_eq!(
        ks.compact(&CompactionRequest {
            revision: 7,
            physical: false
        }),
        Err(EtcdError::FutureRev)
    );
    ks.compact(&CompactionRequest {
        revision: 4,
        physical: false,
    })
    .unwrap();
    for revision in [3, 4, -1] {
        assert_eq!(
            ks.compact(&CompactionRequest {
                revision,
                physical: false
            }),
            Err(EtcdError::Compacted)
        );
    }
    assert_eq!(ks.compact_revision(), 4);
}

#[test]
fn the_first_compaction_may_be_at_revision_zero_like_etcd() {
    let mut ks = KeySpace::new();
    ks.compact(&CompactionRequest {
        revision: 0,
        physical: false,
    })
    .unwrap();
    assert_eq!(ks.compact_revision(), 0);
    assert_eq!(
        ks.compact(&CompactionRequest {
            revision: 0,
            physical: false
        }),
        Err(EtcdError::Compacted)
    );
    assert_eq!(
        ks.compact(&CompactionRequest {
            revision: -1,
            physical: false
        }),
        Err(EtcdError::Compacted)
    );
}

#[test]
fn compaction_does_not_create_a_revision() {
    let mut ks = abcde();
    let resp = ks
        .compact(&CompactionRequest {
            revision: 6,
            physical: true,
        })
        .unwrap();
    assert_eq!((rev(&resp.header), ks.current_revision()), (6, 6));
    assert_eq!(put(&mut ks, "f", "").header.map(|h| h.revision), Some(7));
}

#[test]
fn compaction_keeps_current_values_and_drops_deleted_keys() {
    let mut ks = KeySpace::new();
    put(&mut ks, "k", "1");
    put(&mut ks, "k", "2");
    put(&mut ks, "gone", "x");
    del(&mut ks, "gone", "");
    put(&mut ks, "later", "y");
    ks.compact(&CompactionRequest {
        revision: 6,
        physical: false,
    })
    .unwrap();
    ks.check_invariants().unwrap();
    assert_eq!(get(&ks, "k").unwrap().value, b("2"));
    assert_eq!(get(&ks, "k").unwrap().version, 2);
    assert_eq!(
        keys(&ks.range(&range_req("\0", "\0")).unwrap()),
        vec!["k", "later"]
    );
    assert!(!ks.keys.contains_key(&KeyProbe::new(b"gone")));
}

#[test]
fn compaction_frees_memory() {
    let mut ks = KeySpace::new();
    let big = "x".repeat(10_000);
    for _ in 0..50 {
        put(&mut ks, "k", &big);
    }
    let before = ks.approximate_size_bytes();
    assert!(before > 50 * 10_000);
    ks.compact(&CompactionRequest {
        revision: ks.current_revision(),
        physical: false,
    })
    .unwrap();
    let after = ks.approximate_size_bytes();
    assert!(after < 2 * 10_000, "{after} bytes left after compaction");
    ks.check_invariants().unwrap();
    assert_eq!(get(&ks, "k").unwrap().version, 50);
}

#[test]
fn a_tombstone_at_the_compact_revision_is_kept_until_the_next_compaction() {
    let mut ks = KeySpace::new();
    put(&mut ks, "k", "1");
    del(&mut ks, "k", "");
    ks.compact(&CompactionRequest {
        revision: 3,
        physical: false,
    })
    .unwrap();
    assert_eq!(ks.keys[&KeyProbe::new(b"k")].records().len(), 1);
    put(&mut ks, "x", "");
    ks.compact(&CompactionRequest {
        revision: 4,
        physical: false,
    })
    .unwrap();
    assert!(!ks.keys.contains_key(&KeyProbe::new(b"k")));
    ks.check_invariants().unwrap();
}

// ---------------------------------------------------------------------------------------------
// HashKV

#[test]
fn an_empty_store_hashes_to_the_crc_of_the_bucket_name() {
    assert_eq!(
        KeySpace::new().hash_kv(0, &NoColdValues),
        Ok((crc32c::crc32c(b"key"), -1))
    );
}

#[test]
fn hash_of_a_past_revision_ignores_later_writes() {
    let mut ks = abcde();
    let (at_6, _) = ks.hash_kv(0, &NoColdValues).unwrap();
    put(&mut ks, "f", "");
    del(&mut ks, "a", "");
    assert_eq!(ks.hash_kv(6, &NoColdValues).unwrap().0, at_6);
    assert_ne!(ks.hash_kv(0, &NoColdValues).unwrap().0, at_6);
}

#[test]
fn hash_matches_a_hand_computed_etcd_hash() {
    let mut ks = KeySpace::new();
    put(&mut ks, "k", "v");
    del(&mut ks, "k", "");
    // bucket name, then rev 2.0 with KeyValue{key,create 2,mod 2,version 1,value}, then the
    // tombstone 3.0 't' with KeyValue{key}.
    let mut bytes = b"key".to_vec();
    bytes.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 2, b'_', 0, 0, 0, 0, 0, 0, 0, 0]);
    bytes.extend_from_slice(&[0x0a, 1, b'k', 0x10, 2, 0x18, 2, 0x20, 1, 0x2a, 1, b'v']);
    bytes.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 3, b'_', 0, 0, 0, 0, 0, 0, 0, 0, b't']);
    bytes.extend_from_slice(&[0x0a, 1, b'k']);
    assert_eq!(
        ks.hash_kv(0, &NoColdValues).unwrap().0,
        crc32c::crc32c(&bytes)
    );
}

#[test]
fn hash_errors_follow_etcd() {
    let mut ks = abcde();
    assert_eq!(ks.hash_kv(7, &NoColdValues), Err(EtcdError::FutureRev));
    ks.compact(&CompactionRequest {
        revision: 4,
        physical: false,
    })
    .unwrap();
    assert_eq!(ks.hash_kv(3, &NoColdValues), Err(EtcdError::Compacted));
    assert_eq!(ks.hash_kv(4, &NoColdValues).map(|(_, c)| c), Ok(4));
    assert_eq!(
        ks.hash_kv(-5, &NoColdValues).map(|(h, _)| h),
        Ok(crc32c::crc32c(b"key"))
    );
}

#[test]
fn the_hash_does_not_depend_on_whether_compaction_has_dropped_history_yet() {
    // etcd compacts in the background; its hash rules make a member that has recorded the
    // compact revision but not yet dropped the old records hash like one that has.
    let mut ks = KeySpace::new();
    put(&mut ks, "always", "");
    for i in 0..20 {
        put(&mut ks, ["a", "b", "c"][i % 3], &i.to_string());
        if i % 4 == 0 {
            del(&mut ks, "b", "");
        }
    }
    let current = ks.current_revision();
    let mut not_yet_dropped = ks.clone();
    not_yet_dropped.compact_main = 12;
    ks.compact(&CompactionRequest {
        revision: 12,
        physical: false,
    })
    .unwrap();
    for r in 12..=current {
        assert_eq!(
            ks.hash_kv(r, &NoColdValues),
            not_yet_dropped.hash_kv(r, &NoColdValues),
            "revision {r}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Snapshots

#[test]
fn a_snapshot_round_trips_to_an_equal_store_and_identical_bytes() {
    let mut ks = abcde();
    del(&mut ks, "c", "");
    ks.compact(&CompactionRequest {
        revision: 5,
        physical: false,
    })
    .unwrap();
    put(&mut ks, "c", "again");
    let bytes = ks.encode_snapshot();
    let decoded = KeySpace::decode_snapshot(&bytes).unwrap();
    assert_eq!(decoded, ks);
    assert_eq!(decoded.encode_snapshot(), bytes);
    decoded.check_invariants().unwrap();
}

#[test]
fn a_view_keeps_its_moment_while_the_store_moves_on() {
    let mut ks = abcde();
    let before = ks.clone();
    let view = ks.view();
    put(&mut ks, "a", "changed");
    del(&mut ks, "b", "");
    put(&mut ks, "new", "key");
    ks.compact(&CompactionRequest {
        revision: ks.current_revision(),
        physical: false,
    })
    .unwrap();
    assert_eq!(view.revision(), before.current_revision());
    let bytes = view.encode(&NoColdValues).unwrap();
    assert_eq!(bytes.len(), view.encoded_len());
    assert_eq!(bytes, before.encode_snapshot());
    assert_eq!(KeySpace::decode_snapshot(&bytes).unwrap(), before);
    // The bytes are one MvccSnapshot message, as prost encodes it whole.
    use prost::Message as _;
    let whole = crate::proto::detcdpb::MvccSnapshot::decode(&bytes[..]).unwrap();
    assert_eq!(whole.encode_to_vec(), bytes);
    assert_eq!(whole.keys.len(), 5);
}

#[test]
fn garbage_and_foreign_versions_are_refused() {
    assert!(matches!(
        KeySpace::decode_snapshot(&[0xff, 0xff, 0xff]),
        Err(SnapshotDecodeError::Malformed(_))
    ));
    assert!(matches!(
        KeySpace::decode_snapshot(&[]),
        Err(SnapshotDecodeError::UnsupportedVersion(0))
    ));
    let mut bytes = abcde().encode_snapshot();
    bytes[1] = 9; // format_version is the first field
    assert!(matches!(
        KeySpace::decode_snapshot(&bytes),
        Err(SnapshotDecodeError::UnsupportedVersion(9))
    ));
}

#[test]
fn a_snapshot_with_a_hole_in_its_history_is_refused() {
    use crate::proto::detcdpb::MvccSnapshot;
    use prost::Message;
    let mut snapshot = MvccSnapshot::decode(&abcde().encode_snapshot()[..]).unwrap();
    snapshot.keys.remove(2); // revision 4 disappears
    assert!(matches!(
        KeySpace::decode_snapshot(&snapshot.encode_to_vec()),
        Err(SnapshotDecodeError::Invalid(_))
    ));
}

#[test]
fn a_snapshot_with_unreachable_revisions_is_refused_instead_of_overflowing_later() {
    use crate::proto::detcdpb::MvccSnapshot;
    use prost::Message;
    let snapshot = MvccSnapshot {
        format_version: 1,
        current_revision: i64::MAX,
        compact_revision: i64::MAX,
        keys: vec![],
    };
    assert!(matches!(
        KeySpace::decode_snapshot(&snapshot.encode_to_vec()),
        Err(SnapshotDecodeError::Invalid(_))
    ));
}

#[test]
fn the_snapshot_size_estimate_stays_near_the_encoded_size() {
    let mut ks = KeySpace::new();
    let check = |ks: &KeySpace| {
        let encoded = ks.encode_snapshot().len() as u64;
        let estimate = ks.snapshot_bytes_estimate();
        assert!(
            estimate <= encoded + encoded / 8 && encoded <= 2 * estimate + 64,
            "estimate {estimate} for {encoded} encoded bytes"
        );
    };
    check(&ks);
    for i in 0..2_000 {
        let value = "v".repeat(i % 300);
        put(&mut ks, &format!("key-{}", i % 700), &value);
        if i % 7 == 0 {
            del(&mut ks, &format!("key-{}", (i * 3) % 700), "");
        }
        if i % 250 == 0 {
            check(&ks);
        }
    }
    check(&ks);
    ks.compact(&CompactionRequest {
        revision: ks.current_revision() - 100,
        ..Default::default()
    })
    .unwrap();
    // The estimate follows the memory, which a compaction releases a slice per entry.
    while ks.is_releasing_compaction() {
        ks.release_compacted_slice();
    }
    check(&ks);
    ks.check_invariants().unwrap();
}

/// Keys 0..n put three times each, then one deleted in three: a key space whose compaction
/// drops records of every key and whole keys.
fn rewritten_keys(n: usize) -> KeySpace {
    let mut ks = KeySpace::new();
    for round in 0..3 {
        for i in 0..n {
            put(&mut ks, &format!("key-{i:04}"), &format!("v{round}"));
        }
    }
    for i in (0..n).step_by(3) {
        del(&mut ks, &format!("key-{i:04}"), "");
    }
    ks
}

#[test]
fn a_compaction_answers_at_once_and_releases_its_records_a_slice_at_a_time() {
    let n = 1_000;
    let (mut sliced, mut whole) = (rewritten_keys(n), rewritten_keys(n));
    sliced.release_compactions_in_slices_of(100);
    whole.release_compactions_in_slices_of(usize::MAX);
    let compaction = CompactionRequest {
        revision: sliced.current_revision() - 10,
        ..Default::default()
    };
    sliced.compact(&compaction).unwrap();
    whole.compact(&compaction).unwrap();
    assert!(!whole.is_releasing_compaction());
    let mut slices = 1;
    loop {
        sliced.check_invariants().unwrap();
        let everything = RangeRequest {
            key: b("\0"),
            range_end: b("\0"),
            revision: compaction.revision,
            ..RangeRequest::default()
        };
        assert_eq!(sliced.range(&everything), whole.range(&everything));
        assert_eq!(
            sliced.hash_kv(0, &NoColdValues),
            whole.hash_kv(0, &NoColdValues)
        );
        assert_eq!(sliced.encode_snapshot(), whole.encode_snapshot());
        if !sliced.is_releasing_compaction() {
            break;
        }
        assert!(sliced.approximate_size_bytes() > whole.approximate_size_bytes());
        sliced.release_compacted_slice();
        slices += 1;
    }
    assert_eq!(slices, n / 100);
    assert_eq!(sliced, whole);
}

// ---------------------------------------------------------------------------------------------
// The bound on a range's size (--max-range-bytes)

#[test]
fn a_range_is_bounded_by_the_keys_and_values_it_answers_with() {
    // a..e: 1-byte keys, 2-byte values: 3 bytes each, 15 in all.
    let ks = abcde();
    let read = |r: &RangeRequest, max| ks.read_range(r, max).map(|(resp, _)| keys(&resp));
    let all = range_req("a", "f");
    assert_eq!(read(&all, 15).unwrap().len(), 5);
    assert_eq!(read(&all, 14), Err(EtcdError::RangeTooLarge));
    let limited = RangeRequest {
        limit: 4,
        ..all.clone()
    };
    assert_eq!(read(&limited, 12).unwrap().len(), 4);
    let keys_only = RangeRequest {
        keys_only: true,
        ..all.clone()
    };
    assert_eq!(read(&keys_only, 5).unwrap().len(), 5);
    let count_only = RangeRequest {
        count_only: true,
        ..all.clone()
    };
    assert_eq!(read(&count_only, 0).unwrap().len(), 0);
    // Sorted by value, every pair sorted counts, before the limit and keys_only.
    let by_value = RangeRequest {
        sort_target: SortTarget::Value as i32,
        sort_order: SortOrder::Descend as i32,
        limit: 1,
        keys_only: true,
        ..all.clone()
    };
    assert_eq!(read(&by_value, 15).unwrap(), vec!["e"]);
    assert_eq!(read(&by_value, 14), Err(EtcdError::RangeTooLarge));
}

#[test]
fn a_ranges_cold_values_count_against_its_bound() {
    let mut ks = KeySpace::new();
    ks.keep_superseded_values_cold(0);
    put(&mut ks, "a", "0123456789");
    put(&mut ks, "a", "x");
    // At revision 2 "a" holds a value that is now in a cold segment: 1 + 10 bytes.
    let past = RangeRequest {
        revision: 2,
        ..range_req("a", "")
    };
    let (_, cold) = ks.read_range(&past, 11).expect("within the bound");
    assert!(!cold.is_empty(), "the old value is cold");
    assert_eq!(
        ks.read_range(&past, 10).err(),
        Some(EtcdError::RangeTooLarge)
    );
    assert!(ks.read_range(&range_req("a", ""), 2).is_ok());
}

/// The bytes the segment writes in `ops` carry, in order.
fn written(ops: &[ColdOp]) -> String {
    ops.iter()
        .filter_map(|op| match op {
            ColdOp::Write { data, .. } => Some(String::from_utf8_lossy(data).into_owned()),
            ColdOp::Release { .. } => None,
        })
        .collect()
}

/// Superseded values wait in memory until a batch's worth did, then move in key order, a few
/// at each write, so that a read of the past over neighbouring keys finds their values side by
/// side; a waiting value whose record compaction dropped never moves.
#[test]
fn superseded_values_move_in_batches_in_key_order() {
    let mut ks = KeySpace::new();
    ks.keep_superseded_values_cold(50);
    for key in ["d", "b", "e", "a", "c", "f"] {
        put(&mut ks, key, &key.repeat(10));
    }
    // f's old value waits, then compaction drops its record.
    put(&mut ks, "f", "new");
    ks.compact(&CompactionRequest {
        revision: ks.current_revision(),
        physical: false,
    })
    .expect("compacts");
    for key in ["d", "b", "e"] {
        put(&mut ks, key, "new");
    }
    assert_eq!(written(&ks.take_cold_ops()), "", "40 bytes wait");
    let past = RangeRequest {
        revision: 8,
        ..range_req("a", "z")
    };
    let (_, cold) = ks.read_range(&past, u64::MAX).expect("readable");
    assert!(cold.is_empty(), "waiting values are read from memory");
    // 50 bytes wait: the batch starts moving, two values for each one a write supersedes.
    put(&mut ks, "a", "new");
    assert_eq!(written(&ks.take_cold_ops()), "aaaaaaaaaabbbbbbbbbb");
    put(&mut ks, "c", "new");
    assert_eq!(written(&ks.take_cold_ops()), "ddddddddddeeeeeeeeee");
    put(&mut ks, "c", "newer");
    assert_eq!(
        written(&ks.take_cold_ops()),
        "",
        "the compacted value of f never moves, and the next batch waits"
    );
}

/// A read of the past encoded with its cold values read into place is byte for byte the
/// response filled first and encoded after, under limits, counts and every sort but by value.
#[test]
fn cold_values_encoded_in_place_are_the_filled_response_encoded() {
    use prost::Message;
    let mut ks = KeySpace::new();
    ks.keep_superseded_values_cold(0);
    for round in 0..6usize {
        for (i, key) in ["a", "b", "c", "d", "e"].iter().enumerate() {
            let value = "v".repeat((round * 7 + i * 3) % 20);
            if (round + i) % 4 == 3 {
                del(&mut ks, key, "");
            } else {
                put(&mut ks, key, &value);
            }
        }
    }
    let mut store = MemoryColdStore::default();
    for op in ks.take_cold_ops() {
        store.apply(&op);
    }
    let shapes = [
        range_req("a", "z"),
        RangeRequest {
            limit: 2,
            ..range_req("b", "z")
        },
        RangeRequest {
            sort_target: SortTarget::Version as i32,
            sort_order: SortOrder::Descend as i32,
            ..range_req("a", "z")
        },
        RangeRequest {
            keys_only: true,
            ..range_req("a", "z")
        },
    ];
    let mut in_place = 0;
    for revision in 1..ks.current_revision() {
        for shape in &shapes {
            let past = RangeRequest {
                revision,
                ..shape.clone()
            };
            let (mut filled, cold) = ks.read_range(&past, u64::MAX).expect("readable");
            assert!(cold.encodes_in_place());
            let layout = RangeLayout::new(filled.clone(), cold.clone()).expect("lays out");
            let mut encoded = vec![9];
            layout.encode_into(&store, &mut encoded).expect("encodes");
            in_place += usize::from(!cold.is_empty());
            cold.fill_range(&mut filled, &store).expect("fills");
            let expected = filled.encode_to_vec();
            assert_eq!(encoded[1..], expected[..], "{past:?}");
            assert_eq!(layout.encoded_len(), expected.len());
            for count in 1..=4 {
                assert_eq!(
                    encode_in_parts(&layout, count, &store),
                    expected,
                    "{past:?}"
                );
            }
        }
    }
    assert!(in_place > 20, "most reads of the past need cold values");
    let by_value = RangeRequest {
        revision: 3,
        sort_target: SortTarget::Value as i32,
        ..range_req("a", "z")
    };
    let (response, cold) = ks.read_range(&by_value, u64::MAX).expect("readable");
    assert!(
        !cold.encodes_in_place(),
        "a sort by value needs the values first"
    );
    assert!(RangeLayout::new(response, cold).is_err());
}

/// The encoding of `layout` written part by part into one buffer, each part into its own
/// slice (as the server's threads write them).
fn encode_in_parts(layout: &RangeLayout, count: usize, cold: &dyn ColdRead) -> Vec<u8> {
    let parts = layout.parts(count);
    assert!(parts.len() <= count);
    let mut out = vec![0; layout.encoded_len()];
    let mut rest = &mut out[..];
    for part in &parts {
        let (slice, after) = std::mem::take(&mut rest).split_at_mut(part.len());
        layout
            .encode_part(part, cold, slice)
            .expect("encodes its part");
        rest = after;
    }
    assert!(rest.is_empty(), "the parts cover the encoding");
    out
}

/// Past the first pairs, a large answer's keys are copied into one shared buffer: every pair
/// must still carry its own key, under every shape of walk (limits, sorts, filters, the past).
#[test]
fn a_large_answers_pairs_each_carry_their_own_key() {
    let mut ks = KeySpace::new();
    // Values move in batches: some of the past is in memory, some in segments.
    ks.keep_superseded_values_cold(256);
    // Keys of many lengths, over 100 KiB in all: the copies fill more than one block.
    let name = |i: usize| format!("k{i:04}{}", "x".repeat(i * 7 % 400));
    for i in 0..700 {
        put(&mut ks, &name(i), &format!("first {i}"));
    }
    let middle = ks.current_revision();
    for i in (0..700).step_by(3) {
        put(&mut ks, &name(i), "second");
    }
    for i in (0..700).step_by(7) {
        del(&mut ks, &name(i), "");
    }
    let all = range_req("k", "l");
    let shapes = [
        all.clone(),
        RangeRequest {
            limit: 400,
            ..all.clone()
        },
        RangeRequest {
            min_mod_revision: 300,
            ..all.clone()
        },
        RangeRequest {
            keys_only: true,
            ..all.clone()
        },
        RangeRequest {
            sort_target: SortTarget::Mod as i32,
            sort_order: SortOrder::Descend as i32,
            limit: 600,
            ..all.clone()
        },
    ];
    for revision in [0, middle] {
        let at = if revision == 0 {
            ks.current_revision()
        } else {
            revision
        };
        for shape in &shapes {
            let request = RangeRequest {
                revision,
                ..shape.clone()
            };
            let (response, _) = ks.read_range(&request, u64::MAX).expect("readable");
            assert!(response.kvs.len() > 300, "{request:?}");
            for kv in &response.kvs {
                let mut own = ks.live_kv(&kv.key, at).expect("a live key");
                if kv.value.is_empty() {
                    own.value = Bytes::new();
                }
                assert_eq!(*kv, own, "{request:?}");
            }
        }
    }
}

/// A key space installed from a snapshot holds every value in memory; its superseded values
/// move to cold segments a slice of keys at a time, in key order, and every read of the past
/// answers the same before, between and after the slices.
#[test]
fn a_snapshots_superseded_values_move_cold_a_slice_at_a_time() {
    let mut leader = KeySpace::new();
    for round in 0..3 {
        for key in ["a", "b", "c", "d", "e"] {
            put(&mut leader, key, &format!("{key}{round}"));
        }
    }
    let mut member = KeySpace::new();
    member.keep_superseded_values_cold(0);
    member.release_compactions_in_slices_of(2);
    put(&mut member, "z", "old");
    member.replace_with(KeySpace::decode_snapshot(&leader.encode_snapshot()).unwrap());
    let mut store = MemoryColdStore::default();
    let read_all_past = |ks: &KeySpace, store: &MemoryColdStore| {
        (2..=ks.current_revision())
            .map(|revision| {
                let past = RangeRequest {
                    revision,
                    ..range_req("a", "z")
                };
                let (mut answer, cold) = ks.read_range(&past, u64::MAX).expect("readable");
                cold.fill_range(&mut answer, store).expect("fills");
                answer.kvs
            })
            .collect::<Vec<_>>()
    };
    let expected = read_all_past(&leader, &store);
    let mut moved = Vec::new();
    while member.is_releasing_memory() {
        assert_eq!(read_all_past(&member, &store), expected);
        member.release_memory_slice();
        member
            .check_invariants()
            .expect("invariants between slices");
        let ops = member.take_cold_ops();
        moved.push(written(&ops));
        for op in ops {
            store.apply(&op);
        }
    }
    assert_eq!(moved, ["a0a1b0b1", "c0c1d0d1", "e0e1"]);
    assert!(!member.is_cooling());
    assert_eq!(read_all_past(&member, &store), expected);
}

/// A write that changes a key twice in one revision (a txn's delete, then its nested txn's
/// put) supersedes two of its records: both values move out of memory, not only the newer.
#[test]
fn a_key_written_twice_in_one_revision_moves_both_superseded_values() {
    let mut ks = KeySpace::new();
    ks.keep_superseded_values_cold(0);
    put(&mut ks, "a", "first");
    let mut w = WriteTxn::begin(&mut ks);
    w.put_request(&put_req("a", "second")).expect("put");
    w.delete_keys(&[b("a")]);
    w.put_request(&put_req("a", "third")).expect("put");
    w.commit();
    ks.check_invariants()
        .expect("no superseded value left in memory");
    assert_eq!(written(&ks.take_cold_ops()), "firstsecond");
}
