//! What the node tells the watch hub: after each batch, the key changes of every revision it
//! applied and a view of the key space (`Output::Watch`). The hub itself lives beside the node
//! (see `crate::watch`); the node only reports, so watchers never slow an apply.

use super::types::Output;
use super::Node;
use crate::mvcc::KeyChange;
use crate::watch::{RevisionChanges, WatchFeed};

/// What changed for watchers since the last feed.
pub(super) struct FeedBuilder {
    revisions: Vec<RevisionChanges>,
    /// The state was replaced (a snapshot from the leader), or feeds were off: watchers catch
    /// up from the view.
    gap: bool,
    /// The last feed's compact revision and leader presence, `None` before the first feed.
    reported: Option<(i64, bool)>,
    /// Whether the driver wants feeds (see [`Node::set_watched`]).
    wanted: bool,
}

impl Default for FeedBuilder {
    fn default() -> FeedBuilder {
        FeedBuilder {
            revisions: Vec::new(),
            gap: false,
            reported: None,
            wanted: true,
        }
    }
}

impl FeedBuilder {
    pub fn revision_applied(&mut self, changes: Vec<KeyChange>) {
        if !self.wanted {
            return;
        }
        if let Some(first) = changes.first() {
            let revision = first.revision.main;
            self.revisions.push(RevisionChanges { revision, changes });
        }
    }

    pub fn state_replaced(&mut self) {
        self.revisions.clear();
        self.gap = true;
    }
}

impl Node {
    /// Whether the driver has watchers to feed (on by default). Off, the node emits no feeds,
    /// and so takes no view of the key space per batch: a view shares the key index, so the
    /// next batch's writes would copy the nodes they touch; and its writes report only the key
    /// changes the lease table needs. Turned on again, the next batch emits a feed with a
    /// fresh view, marked as a gap.
    pub fn set_watched(&mut self, watched: bool) {
        // Every batch: a snapshot installed since replaced the key space, and its setting.
        self.state.report_every_key_change(watched);
        let feed = &mut self.watch_feed;
        if feed.wanted && !watched {
            feed.revisions.clear();
            feed.gap = true;
            feed.reported = None;
        }
        feed.wanted = watched;
    }

    /// Makes the next batch emit a feed with a fresh view, marked as a gap, even if nothing
    /// changed (while feeds are on): the hub let go of its view when its last stream closed,
    /// and a stream opened since needs one to catch its watchers up from.
    pub fn refresh_watch_view(&mut self) {
        if self.bug(|b| b.watch_view_not_refreshed) {
            return;
        }
        let feed = &mut self.watch_feed;
        feed.gap = true;
        feed.reported = None;
    }

    /// Emits the batch's feed, if watchers have anything to learn from it.
    pub(super) fn feed_watchers(&mut self) {
        let compact = self.state.kv().compact_revision();
        let has_leader = self.leader_id().is_some();
        let feed = &mut self.watch_feed;
        if !feed.wanted {
            return;
        }
        let unchanged = feed.reported == Some((compact, has_leader));
        if unchanged && feed.revisions.is_empty() && !feed.gap {
            return;
        }
        feed.reported = Some((compact, has_leader));
        let output = WatchFeed {
            revisions: std::mem::take(&mut feed.revisions),
            view: self.state.kv().view(),
            raft_term: self.raw.raft.term,
            has_leader,
            gap: std::mem::take(&mut feed.gap),
        };
        self.outputs.push_back(Output::Watch(output));
    }
}
