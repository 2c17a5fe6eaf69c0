//! The hub on its own, fed by a real replicated state: etcd's answers to create, cancel and
//! progress requests, events with filters and previous values, fragments, catch-up of a stream
//! that does not read, compaction, and streams that need a leader.

use bytes::Bytes;

use super::StreamEnd;
use crate::mvcc::NoColdValues;
use crate::proto::detcdpb::internal_request::Op;
use crate::proto::etcdserverpb::request_op::Request as OpRequest;
use crate::proto::etcdserverpb::watch_create_request::FilterType;
use crate::proto::etcdserverpb::watch_request::RequestUnion;
use crate::proto::etcdserverpb::{
    CompactionRequest, DeleteRangeRequest, PutRequest, RequestOp, TxnRequest, WatchCancelRequest,
    WatchCreateRequest, WatchProgressRequest, WatchRequest, WatchResponse,
};
use crate::proto::mvccpb::event::EventType;
use crate::state::State;
use crate::time::Instant;
use crate::watch::{HubResponse, RevisionChanges, WatchConfig, WatchFeed, WatchHub};

/// A hub and the state it watches.
struct Fixture {
    hub: WatchHub,
    state: State,
    has_leader: bool,
}

fn put(key: &str, value: &str) -> Op {
    Op::Put(PutRequest {
        key: Bytes::copy_from_slice(key.as_bytes()),
        value: Bytes::copy_from_slice(value.as_bytes()),
        ..PutRequest::default()
    })
}

fn delete(key: &str) -> Op {
    Op::DeleteRange(DeleteRangeRequest {
        key: Bytes::copy_from_slice(key.as_bytes()),
        ..DeleteRangeRequest::default()
    })
}

fn watch(key: &str, range_end: &str, start: i64) -> WatchCreateRequest {
    WatchCreateRequest {
        key: Bytes::copy_from_slice(key.as_bytes()),
        range_end: Bytes::copy_from_slice(range_end.as_bytes()),
        start_revision: start,
        ..WatchCreateRequest::default()
    }
}

fn create(req: WatchCreateRequest) -> WatchRequest {
    WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(req)),
    }
}

impl Fixture {
    fn new(config: WatchConfig) -> Fixture {
        let mut fixture = Fixture {
            hub: WatchHub::new(config),
            state: State::new(),
            has_leader: true,
        };
        fixture.apply(Vec::new());
        fixture
    }

    fn standard() -> Fixture {
        Fixture::new(WatchConfig::new(1, 2))
    }

    /// Applies `ops`, each at its own revision, and feeds the hub.
    fn apply(&mut self, ops: Vec<Op>) {
        let mut revisions = Vec::new();
        for op in ops {
            let applied = self.state.apply(op);
            if let Some(first) = applied.effects.key_changes.first() {
                revisions.push(RevisionChanges {
                    revision: first.revision.main,
                    changes: applied.effects.key_changes.clone(),
                });
            }
        }
        let feed = WatchFeed {
            revisions,
            view: self.state.kv().view(),
            raft_term: 3,
            has_leader: self.has_leader,
            gap: false,
        };
        self.hub.feed(Instant::ZERO, feed, Box::new(NoColdValues));
    }

    /// Feeds the hub a view of the state with no changes, as the node's first feed after it
    /// fed none.
    fn apply_after_gap(&mut self) {
        let feed = WatchFeed {
            revisions: Vec::new(),
            view: self.state.kv().view(),
            raft_term: 3,
            has_leader: self.has_leader,
            gap: true,
        };
        self.hub.feed(Instant::ZERO, feed, Box::new(NoColdValues));
    }

    fn send(&mut self, stream: u64, request: WatchRequest) {
        self.hub.request(Instant::ZERO, stream, request);
    }

    fn drain(&mut self, stream: u64) -> Vec<WatchResponse> {
        std::iter::from_fn(|| self.hub.pop(stream).map(HubResponse::into_proto)).collect()
    }
}

/// (revision, key, PUT/DELETE) of every event in `responses`.
fn events(responses: &[WatchResponse]) -> Vec<(i64, String, i32)> {
    responses
        .iter()
        .flat_map(|r| &r.events)
        .map(|e| {
            let kv = e.kv.as_ref().expect("an event has its key");
            (
                kv.mod_revision,
                String::from_utf8_lossy(&kv.key).into_owned(),
                e.r#type,
            )
        })
        .collect()
}

const PUT: i32 = EventType::Put as i32;
const DEL: i32 = EventType::Delete as i32;

#[test]
fn a_watcher_gets_created_then_the_events_of_its_range_in_order() {
    let mut f = Fixture::standard();
    f.hub.open(1, false);
    f.send(1, create(watch("a", "c", 0)));
    f.apply(vec![
        put("a", "1"),
        put("z", "x"),
        put("b", "2"),
        delete("a"),
    ]);
    let responses = f.drain(1);
    assert!(responses[0].created && responses[0].watch_id == 0);
    assert_eq!(
        events(&responses[1..]),
        vec![
            (2, "a".into(), PUT),
            (4, "b".into(), PUT),
            (5, "a".into(), DEL)
        ]
    );
    let header = responses[1].header.as_ref().unwrap();
    assert_eq!(
        (
            header.cluster_id,
            header.member_id,
            header.revision,
            header.raft_term
        ),
        (1, 2, 5, 3),
        "one response for the batch, complete up to its last revision"
    );
}

#[test]
fn a_start_revision_in_the_past_replays_history_with_previous_values() {
    let mut f = Fixture::standard();
    f.apply(vec![
        put("k", "1"),
        put("k", "2"),
        delete("k"),
        put("k", "3"),
    ]);
    f.hub.open(1, false);
    f.send(
        1,
        create(WatchCreateRequest {
            prev_kv: true,
            ..watch("k", "", 3)
        }),
    );
    let responses = f.drain(1);
    assert_eq!(
        events(&responses),
        vec![
            (3, "k".into(), PUT),
            (4, "k".into(), DEL),
            (5, "k".into(), PUT)
        ]
    );
    let prev: Vec<Option<String>> = responses
        .iter()
        .flat_map(|r| &r.events)
        .map(|e| {
            e.prev_kv
                .as_ref()
                .map(|kv| String::from_utf8_lossy(&kv.value).into_owned())
        })
        .collect();
    assert_eq!(prev, vec![Some("1".into()), Some("2".into()), None]);
}

#[test]
fn with_no_stream_open_the_hub_keeps_no_view_or_feeds_and_the_next_stream_catches_up() {
    let mut f = Fixture::standard();
    f.apply(vec![put("k", "1"), put("k", "2")]);
    f.hub.open(1, false);
    f.send(1, create(watch("k", "", 2)));
    assert_eq!(
        events(&f.drain(1)),
        vec![(2, "k".into(), PUT), (3, "k".into(), PUT)]
    );
    let k = || crate::mvcc::KeyRange::new(b"k", b"");
    assert!(f.hub.recent.changes(k(), 2, 3).is_some());
    f.hub.close(1);
    assert!(
        f.hub.recent.changes(k(), 3, 3).is_none(),
        "the latest feeds are let go"
    );
    assert!(f.hub.store.is_none(), "the view is let go");
    assert!(!f.hub.needs_view(), "nobody needs one");

    // Unwatched, the node sends no feeds: the key space moves on without the hub, whose
    // next stream asks for a fresh view and catches up from it.
    f.state.apply(put("k", "3"));
    f.hub.open(2, false);
    assert!(f.hub.needs_view());
    f.send(2, create(watch("k", "", 2)));
    assert_eq!(events(&f.drain(2)), vec![], "nothing to read from yet");
    f.apply_after_gap();
    assert!(!f.hub.needs_view());
    let responses = f.drain(2);
    let expected = vec![
        (2, "k".into(), PUT),
        (3, "k".into(), PUT),
        (4, "k".into(), PUT),
    ];
    assert_eq!(events(&responses), expected);
}

#[test]
fn filters_leave_out_puts_or_deletes() {
    let mut f = Fixture::standard();
    f.hub.open(1, false);
    let mut no_put = watch("k", "", 0);
    no_put.filters = vec![FilterType::Noput as i32];
    f.send(1, create(no_put));
    f.apply(vec![put("k", "1"), delete("k")]);
    assert_eq!(events(&f.drain(1)), vec![(3, "k".into(), DEL)]);
}

#[test]
fn watchers_of_one_stream_each_get_their_own_selection_of_shared_changes() {
    let mut f = Fixture::standard();
    f.hub.open(1, false);
    let mut no_put = watch("k", "l", 0);
    no_put.filters = vec![FilterType::Noput as i32];
    let mut with_prev = watch("k", "l", 0);
    with_prev.prev_kv = true;
    // Alike and unlike neighbours, in the order the hub serves them.
    let specs = [
        watch("k", "l", 0),
        watch("k", "l", 0),
        no_put,
        watch("k1", "", 0),
    ];
    for spec in specs.iter().chain([&with_prev, &specs[0]]) {
        f.send(1, create(spec.clone()));
    }
    f.drain(1);
    f.apply(vec![put("k1", "a"), put("k2", "b"), delete("k1")]);
    let responses = f.drain(1);
    let of = |id: i64| {
        let mine: Vec<WatchResponse> = responses
            .iter()
            .filter(|r| r.watch_id == id)
            .cloned()
            .collect();
        events(&mine)
    };
    let all = vec![
        (2, "k1".into(), PUT),
        (3, "k2".into(), PUT),
        (4, "k1".into(), DEL),
    ];
    for id in [0, 1, 4, 5] {
        assert_eq!(of(id), all, "watcher {id}");
    }
    assert_eq!(of(2), vec![(4, "k1".into(), DEL)]);
    assert_eq!(of(3), vec![(2, "k1".into(), PUT), (4, "k1".into(), DEL)]);
    let prev = |id: i64| -> Vec<bool> {
        let mine = responses.iter().filter(|r| r.watch_id == id);
        mine.flat_map(|r| &r.events)
            .map(|e| e.prev_kv.is_some())
            .collect()
    };
    assert_eq!(prev(4), vec![false, false, true]);
    assert_eq!(prev(5), vec![false; 3]);
}

#[test]
fn a_queued_response_counts_the_batch_it_keeps_alive() {
    let mut f = Fixture::standard();
    f.hub.open(1, false);
    f.send(1, create(watch("k", "", 0)));
    f.drain(1);
    // One feed: the response for "k" names a batch that also holds "z"'s large value.
    let large = "v".repeat(10_000);
    f.apply(vec![put("z", &large), put("k", "1")]);
    assert!(
        f.hub.queued_bytes > 3 * large.len(),
        "{}",
        f.hub.queued_bytes
    );
    assert_eq!(events(&f.drain(1)), vec![(3, "k".into(), PUT)]);
    assert_eq!(f.hub.queued_bytes, 0);
}

#[test]
fn duplicate_ids_and_empty_ranges_are_refused_as_etcd_does() {
    let mut f = Fixture::standard();
    f.hub.open(1, false);
    let mut chosen = watch("k", "", 0);
    chosen.watch_id = 7;
    f.send(1, create(chosen.clone()));
    f.send(1, create(chosen));
    f.send(1, create(watch("b", "a", 0)));
    let responses = f.drain(1);
    assert_eq!((responses[0].watch_id, responses[0].canceled), (7, false));
    assert!(responses[1].created && responses[1].canceled);
    assert_eq!(responses[1].watch_id, -1);
    assert_eq!(
        responses[1].cancel_reason,
        "mvcc: duplicate watch ID provided on the WatchStream"
    );
    assert_eq!(responses[2].cancel_reason, "mvcc: watcher range is empty");
}

#[test]
fn a_canceled_watcher_is_answered_once_and_gets_nothing_more() {
    let mut f = Fixture::standard();
    f.hub.open(1, false);
    f.send(1, create(watch("k", "", 0)));
    let cancel = |id| WatchRequest {
        request_union: Some(RequestUnion::CancelRequest(WatchCancelRequest {
            watch_id: id,
        })),
    };
    f.send(1, cancel(0));
    f.send(1, cancel(9));
    f.apply(vec![put("k", "1")]);
    let responses = f.drain(1);
    assert_eq!(
        responses.len(),
        2,
        "created, canceled; nothing for unknown 9"
    );
    assert!(responses[1].canceled && responses[1].watch_id == 0);
}

#[test]
fn a_stream_that_does_not_read_falls_behind_and_catches_up_without_loss() {
    let mut config = WatchConfig::new(1, 2);
    config.queue_responses_max = 4;
    let mut f = Fixture::new(config);
    f.hub.open(1, false);
    f.send(1, create(watch("k", "l", 0)));
    for i in 0..50 {
        f.apply(vec![put(&format!("k{}", i % 3), "v")]);
    }
    assert!(
        f.hub.streams[&1].queue.responses.len() <= 4,
        "the queue stays bounded"
    );
    let got = events(&f.drain(1));
    let revisions: Vec<i64> = got.iter().map(|e| e.0).collect();
    assert_eq!(revisions, (2..=51).collect::<Vec<_>>());
}

#[test]
fn catching_up_from_the_latest_feeds_answers_as_reading_the_key_space_does() {
    let run = |recent_bytes_max| {
        let mut config = WatchConfig::new(1, 2);
        config.queue_responses_max = 2;
        config.recent_changes_bytes_max = recent_bytes_max;
        let mut f = Fixture::new(config);
        f.hub.open(1, false);
        let mut with_prev = watch("k", "l", 0);
        with_prev.prev_kv = true;
        f.send(1, create(with_prev));
        for i in 0..40 {
            f.apply(vec![
                put(&format!("k{}", i % 3), &i.to_string()),
                put("z", "x"),
            ]);
        }
        f.apply(vec![delete("k1")]);
        let got: Vec<_> = f.drain(1).iter().flat_map(|r| r.events.clone()).collect();
        (got, f.hub.catch_up_reads())
    };
    let (from_feeds, (recent, key_space)) = run(1 << 20);
    assert!(recent > 0 && key_space == 0, "{recent} {key_space}");
    let (from_key_space, (_, key_space)) = run(0);
    assert!(key_space > 0, "only the latest feed is kept");
    assert_eq!(from_feeds.len(), 41);
    assert_eq!(
        from_feeds, from_key_space,
        "events and previous values alike"
    );
}

#[test]
fn compaction_past_a_watcher_cancels_it_with_the_compact_revision() {
    let mut config = WatchConfig::new(1, 2);
    config.queue_responses_max = 1;
    let mut f = Fixture::new(config);
    f.hub.open(1, false);
    f.send(1, create(watch("k", "", 0)));
    f.apply(vec![put("k", "1"), put("k", "2"), put("k", "3")]);
    f.apply(vec![Op::Compaction(CompactionRequest {
        revision: 4,
        physical: false,
    })]);
    let responses = f.drain(1);
    let last = responses.last().unwrap();
    assert!(last.canceled);
    assert_eq!(last.compact_revision, 4);
    f.send(1, create(watch("k", "", 2)));
    let again = f.drain(1);
    assert_eq!(
        again.last().unwrap().compact_revision,
        4,
        "start below compaction"
    );
    f.send(1, create(watch("k", "", 4)));
    assert_eq!(
        events(&f.drain(1)),
        vec![(4, "k".into(), PUT)],
        "at it is fine"
    );
}

#[test]
fn progress_names_a_revision_every_watcher_has_received_everything_up_to() {
    let mut config = WatchConfig::new(1, 2);
    config.queue_responses_max = 2;
    // A response per revision, so that the watcher falls behind.
    config.response_bytes_target = 1;
    let mut f = Fixture::new(config);
    f.hub.open(1, false);
    f.send(1, create(watch("k", "", 0)));
    f.apply((0..5).map(|_| put("k", "v")).collect());
    let progress = WatchRequest {
        request_union: Some(RequestUnion::ProgressRequest(WatchProgressRequest {})),
    };
    f.send(1, progress.clone());
    let responses = f.drain(1);
    let at = responses.iter().position(|r| r.watch_id == -1).unwrap();
    let bookmark = responses[at].header.as_ref().unwrap().revision;
    assert!(
        bookmark < 6,
        "the watcher was behind when asked: {bookmark}"
    );
    let before: Vec<i64> = events(&responses[..at]).iter().map(|e| e.0).collect();
    assert_eq!(
        before,
        (2..=bookmark).collect::<Vec<_>>(),
        "all up to it came first"
    );
    f.send(1, progress);
    let now = f.drain(1);
    assert_eq!(now[0].header.as_ref().unwrap().revision, 6, "caught up");
}

#[test]
fn responses_carry_whole_revisions_up_to_the_size_target() {
    let mut config = WatchConfig::new(1, 2);
    config.response_bytes_target = 200;
    let mut f = Fixture::new(config);
    f.hub.open(1, false);
    f.send(1, create(watch("k", "l", 0)));
    let value = "x".repeat(100);
    f.apply((0..6).map(|i| put(&format!("k{i}"), &value)).collect());
    let responses: Vec<_> = f.drain(1).into_iter().skip(1).collect();
    assert_eq!(responses.len(), 3, "two 120-byte revisions pass 200 bytes");
    for r in &responses {
        let last = r.events.last().unwrap().kv.as_ref().unwrap().mod_revision;
        assert_eq!(r.header.as_ref().unwrap().revision, last);
        assert!(!r.fragment);
    }
    assert_eq!(events(&responses).len(), 6);
}

#[test]
fn a_large_revision_comes_in_fragments_only_for_watchers_that_ask() {
    let mut config = WatchConfig::new(1, 2);
    config.fragment_bytes = 200;
    let mut f = Fixture::new(config);
    let value = "x".repeat(100);
    let puts = (0..5).map(|i| RequestOp {
        request: Some(OpRequest::RequestPut(PutRequest {
            key: Bytes::from(format!("k{i}")),
            value: Bytes::from(value.clone()),
            ..PutRequest::default()
        })),
    });
    f.apply(vec![Op::Txn(TxnRequest {
        success: puts.collect(),
        ..TxnRequest::default()
    })]);
    f.hub.open(1, false);
    let mut fragmented = watch("k", "l", 2);
    fragmented.fragment = true;
    f.send(1, create(fragmented));
    f.send(1, create(watch("k", "l", 2)));
    let responses = f.drain(1);
    let of = |id| {
        responses
            .iter()
            .filter(move |r| r.watch_id == id && !r.created)
    };
    assert!(of(0).count() > 1);
    assert!(of(0).rev().skip(1).all(|r| r.fragment));
    assert!(!of(0).next_back().unwrap().fragment);
    assert_eq!(
        of(1).count(),
        1,
        "one response when fragments were not asked for"
    );
}

#[test]
fn a_stream_that_requires_a_leader_ends_once_the_member_had_none_for_the_grace() {
    let at = |ms: u64| Instant::from_nanos(ms * 1_000_000);
    let mut f = Fixture::standard();
    f.hub.open(1, true);
    f.hub.open(2, false);
    f.send(1, create(watch("k", "", 0)));
    f.send(2, create(watch("k", "", 0)));
    f.has_leader = false;
    f.apply(vec![put("k", "1")]);
    f.hub.open(3, true);
    assert_eq!(
        f.hub.ended(3),
        Some(&StreamEnd::NoLeader),
        "refused at once while there is no leader"
    );
    assert_eq!(f.hub.ended(1), None, "an election may be short");
    assert_eq!(f.hub.next_deadline(), Some(at(3_000)));
    f.hub.tick(at(2_999));
    assert_eq!(f.hub.ended(1), None);
    f.hub.tick(at(3_000));
    assert_eq!(f.hub.ended(1), Some(&StreamEnd::NoLeader));
    assert_eq!(f.hub.ended(2), None, "it did not ask for a leader");
    assert_eq!(f.hub.next_deadline(), None, "nothing left to end");
}

#[test]
fn a_leader_found_within_the_grace_keeps_the_stream() {
    let at = |ms: u64| Instant::from_nanos(ms * 1_000_000);
    let mut f = Fixture::standard();
    f.hub.open(1, true);
    f.send(1, create(watch("k", "", 0)));
    f.has_leader = false;
    f.apply(Vec::new());
    f.hub.tick(at(2_000));
    f.has_leader = true;
    f.apply(vec![put("k", "1")]);
    assert_eq!(f.hub.next_deadline(), None);
    f.hub.tick(at(5_000));
    assert_eq!(f.hub.ended(1), None);
    assert_eq!(f.drain(1).len(), 2, "created, then the put");
    // The grace counts from the next loss, not the first.
    f.has_leader = false;
    f.apply(Vec::new());
    assert_eq!(f.hub.next_deadline(), Some(at(8_000)));
}

#[test]
fn idle_watchers_that_asked_get_progress_notifications_each_interval() {
    let mut config = WatchConfig::new(1, 2);
    config.progress_interval = std::time::Duration::from_secs(10);
    let mut f = Fixture::new(config);
    f.hub.open(1, false);
    let mut asked = watch("k", "", 0);
    asked.progress_notify = true;
    f.send(1, create(asked));
    f.send(1, create(watch("k", "", 0)));
    f.drain(1);
    let at = |s: u64| Instant::from_nanos(s * 1_000_000_000);
    assert_eq!(f.hub.next_deadline(), Some(at(10)));
    f.hub.tick(at(9));
    assert!(f.drain(1).is_empty(), "not idle for an interval yet");
    f.apply(vec![put("k", "v")]);
    assert_eq!(f.drain(1).len(), 2, "the put's events, sent at 9 s");
    f.hub.tick(at(10));
    assert!(f.drain(1).is_empty(), "it got events 1 s ago");
    assert_eq!(f.hub.next_deadline(), Some(at(19)));
    f.hub.tick(at(19));
    let notified = f.drain(1);
    assert_eq!(
        notified.len(),
        1,
        "only the watcher that asked: {notified:?}"
    );
    assert_eq!(notified[0].watch_id, 0);
    assert!(notified[0].events.is_empty());
    assert_eq!(notified[0].header.as_ref().unwrap().revision, 2);
    assert_eq!(f.hub.next_deadline(), Some(at(29)));
}

#[test]
fn the_bytes_queued_over_all_streams_are_bounded() {
    let mut config = WatchConfig::new(1, 2);
    config.queued_bytes_total_max = 2_000;
    config.response_bytes_target = 300;
    let mut f = Fixture::new(config);
    for stream in 1..=10 {
        f.hub.open(stream, false);
        f.send(stream, create(watch("k", "", 0)));
    }
    f.apply((0..50).map(|_| put("k", &"v".repeat(50))).collect());
    f.apply((0..50).map(|_| put("k", &"v".repeat(50))).collect());
    let queued: usize = (1..=10).map(|s| f.hub.streams[&s].queue.bytes).sum();
    let queues = (1..=10).flat_map(|s| &f.hub.streams[&s].queue.responses);
    let batch_max = queues
        .filter_map(|(r, _)| r.batch())
        .map(|b| b.bytes())
        .max();
    // Each stream may pass the bound by the one response that found it under, with the batch
    // of changes it keeps alive.
    let slack = 400 + batch_max.unwrap_or(0);
    assert!(queued <= 2_000 + 10 * slack, "{queued} bytes queued");
    for stream in 1..=10 {
        let got = events(&f.drain(stream));
        let revisions: Vec<i64> = got.iter().map(|e| e.0).collect();
        assert_eq!(revisions, (2..=101).collect::<Vec<_>>(), "stream {stream}");
    }
}
