//! Watch streams opening and closing on a member's hub, in the orders the server's watch task
//! may see them. A client's stream counts as gone as soon as it leaves (the server's stream
//! counter drops at once, and the driver turns the node's feeds off when none is left), but
//! the hub may learn of the close late: after a feed the node sent meanwhile, or even after
//! the next stream's open (the close waited for room in the watch task's input queue).

use super::*;

/// How often a stream's close reaches the hub late.
const LATE_CLOSE_CHANCE: f64 = 0.3;
/// How late a woken node may run its next batch, at most (ns).
const WAKE_LATENESS_MAX_NS: u64 = 50 * MS;
/// How likely late closes are to reach the hub after each of the member's batches: until they
/// do, the node may apply writes unwatched while the hub keeps its view.
const LATE_CLOSE_ARRIVAL_CHANCE: f64 = 0.5;

impl Member {
    /// Whether a client has a stream open on this member (the server's stream counter).
    pub(super) fn watched(&self) -> bool {
        self.hub.stream_count() > self.late_closes.len()
    }
}

impl World {
    /// Opens a stream on a member's hub. The first one after none first wakes the node for a
    /// fresh view, so that the hub holds one before it sees the stream (the server's watch
    /// service waits for that feed). Now and then the feed is late (the server's wait timed
    /// out): the stream opens on what the hub has, and the feed comes with the member's next
    /// batch. Closes still on their way reach the hub after the open.
    pub(super) fn open_hub_stream(&mut self, id: MemberId, stream: u64, require_leader: bool) {
        let late = self.rng.chance(0.2);
        let member = self.members.get_mut(&id).expect("member");
        let first = !member.watched();
        if first && late {
            self.counters.coverage.hit("fault.late-watch-feed");
        } else if first {
            member.stream_opening = true;
            self.input(id, Input::Tick);
            self.members.get_mut(&id).expect("member").stream_opening = false;
            self.counters.coverage.hit("recovery.watch-feed-resumed");
        }
        let member = self.members.get_mut(&id).expect("member");
        member.hub.open(stream, require_leader);
        if !member.late_closes.is_empty() {
            self.counters.coverage.hit("fault.watch-close-after-open");
        }
        self.deliver_late_closes(id);
        self.ask_for_view(id, first && late);
    }

    /// A hub with a stream and no view asks for one: the node gets an input soon (the server's
    /// driver runs a batch as soon as it is woken; later when it is busy), whose batch brings
    /// a fresh view. Without it, an idle member's node might not run a batch for seconds.
    /// The first stream after none whose feed was late asks too (`unanswered`), as the
    /// server's does whether or not the hub holds a view, which may be stale.
    fn ask_for_view(&mut self, id: MemberId, unanswered: bool) {
        let member = self.members.get_mut(&id).expect("member");
        if !member.hub.needs_view() && !unanswered {
            return;
        }
        member.wake_pending = true;
        let incarnation = member.incarnation;
        let at = self.now + self.rng.between(MS / 10, WAKE_LATENESS_MAX_NS);
        self.schedule(
            at,
            Event::WakeForView {
                member: id,
                incarnation,
            },
        );
    }

    pub(super) fn wake_for_view(&mut self, id: MemberId, incarnation: u64) {
        let member = self.members.get_mut(&id).expect("member");
        if member.incarnation != incarnation {
            return;
        }
        member.wake_pending = false;
        member.stream_opening = true;
        self.input(id, Input::Tick);
        self.members.get_mut(&id).expect("member").stream_opening = false;
    }

    /// The client of `stream` on member `id` (of `incarnation`) leaves it; the hub learns of
    /// it now or late.
    pub(super) fn close_hub_stream(&mut self, id: MemberId, incarnation: u64, stream: u64) {
        let late = self.rng.chance(LATE_CLOSE_CHANCE);
        let Some(member) = self.members.get_mut(&id) else {
            return;
        };
        if member.incarnation != incarnation {
            return;
        }
        if late {
            member.late_closes.push(stream);
        } else {
            member.hub.close(stream);
        }
    }

    /// After a batch of member `id` (and its feed), the closes on their way to its hub may
    /// arrive.
    pub(super) fn late_closes_may_arrive(&mut self, id: MemberId) {
        let Some(member) = self.members.get(&id) else {
            return;
        };
        if member.stream_opening || member.late_closes.is_empty() {
            return;
        }
        if self.rng.chance(LATE_CLOSE_ARRIVAL_CHANCE) {
            self.deliver_late_closes(id);
        }
    }

    /// The closes on their way to member `id`'s hub arrive.
    fn deliver_late_closes(&mut self, id: MemberId) {
        let Some(member) = self.members.get_mut(&id) else {
            return;
        };
        if member.late_closes.is_empty() {
            return;
        }
        for stream in std::mem::take(&mut member.late_closes) {
            member.hub.close(stream);
        }
        self.counters.coverage.hit("fault.late-watch-close");
    }
}
