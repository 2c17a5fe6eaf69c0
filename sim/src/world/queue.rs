//! The world's event queue: earliest first, ties in the order scheduled. The heap holds only
//! (time, sequence, slot); the events wait in a slab of reusable slots, so that sifting moves
//! 24 bytes rather than an event, and scheduling allocates nothing once the slab has grown
//! (a box per event cost the simulator an allocation and a free for each of its events).

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use crate::history::SimNanos;

pub(super) struct EventQueue<E> {
    heap: BinaryHeap<Reverse<(SimNanos, u64, u32)>>,
    slots: Vec<Option<E>>,
    free: Vec<u32>,
    seq: u64,
}

impl<E> EventQueue<E> {
    pub fn new() -> EventQueue<E> {
        EventQueue {
            heap: BinaryHeap::new(),
            slots: Vec::new(),
            free: Vec::new(),
            seq: 0,
        }
    }

    pub fn push(&mut self, at: SimNanos, event: E) {
        let slot = match self.free.pop() {
            Some(slot) => {
                self.slots[slot as usize] = Some(event);
                slot
            }
            None => {
                self.slots.push(Some(event));
                u32::try_from(self.slots.len() - 1).expect("fewer than 2^32 events pending")
            }
        };
        self.seq += 1;
        self.heap.push(Reverse((at, self.seq, slot)));
    }

    /// The earliest event and its time.
    pub fn pop(&mut self) -> Option<(SimNanos, E)> {
        let Reverse((at, _, slot)) = self.heap.pop()?;
        self.free.push(slot);
        let event = self.slots[slot as usize]
            .take()
            .expect("a queued slot holds its event");
        Some((at, event))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn earliest_first_then_in_the_order_scheduled_and_slots_are_reused() {
        let mut queue = EventQueue::new();
        queue.push(20, "b");
        queue.push(10, "a");
        queue.push(20, "c");
        assert_eq!(queue.pop(), Some((10, "a")));
        queue.push(5, "d");
        assert_eq!(queue.slots.len(), 3);
        assert_eq!(queue.pop(), Some((5, "d")));
        assert_eq!(queue.pop(), Some((20, "b")));
        assert_eq!(queue.pop(), Some((20, "c")));
        assert_eq!(queue.pop(), None);
    }
}
