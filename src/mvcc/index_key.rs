//! The key space's index keys: a key's bytes with their first eight beside them, read as one
//! big-endian number (the `head`, zero-padded).
//!
//! A walk of the index compares the key sought with a few keys of every node on its way down.
//! With the bytes alone, each comparison follows a pointer to another allocation and calls
//! `memcmp`: a quarter of a put's time in the key space at 100,000 keys. Two heads that differ
//! order their keys as the bytes do (a byte past a key's end reads as zero, and a key that ends
//! there is a prefix of the other, so the smaller), so most comparisons are one integer
//! comparison within the node; only keys that share their first eight bytes compare the rest.

use std::cmp::Ordering;
use std::ops::Bound;

use bytes::Bytes;
use equivalent::{Comparable, Equivalent};

/// Bytes of a key its head holds.
const HEAD_BYTES: usize = 8;

/// A key as the index holds it. Ordered exactly as its bytes.
#[derive(Clone, Debug)]
pub(crate) struct IndexKey {
    head: u64,
    bytes: Bytes,
}

/// A key sought in the index, borrowed: what lookups and range bounds compare with the index's
/// keys without building an [`IndexKey`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct KeyProbe<'a> {
    head: u64,
    bytes: &'a [u8],
}

fn head_of(key: &[u8]) -> u64 {
    if let Some(head) = key.first_chunk::<HEAD_BYTES>() {
        return u64::from_be_bytes(*head);
    }
    // Shorter: byte by byte (a copy of a variable length is a call to memcpy).
    let mut head = [0u8; HEAD_BYTES];
    for (to, from) in head.iter_mut().zip(key) {
        *to = *from;
    }
    u64::from_be_bytes(head)
}

/// The order of two keys' bytes, given their heads.
fn compare(a_head: u64, a: &[u8], b_head: u64, b: &[u8]) -> Ordering {
    match a_head.cmp(&b_head) {
        Ordering::Equal if a.len().min(b.len()) <= HEAD_BYTES => {
            // Equal heads and one key within them: it is a prefix of the other (whose bytes
            // past it, within the head, are zeros), so the shorter one is first.
            a.len().cmp(&b.len())
        }
        Ordering::Equal => a[HEAD_BYTES..].cmp(&b[HEAD_BYTES..]),
        unequal => unequal,
    }
}

impl IndexKey {
    pub fn new(bytes: Bytes) -> IndexKey {
        IndexKey {
            head: head_of(&bytes),
            bytes,
        }
    }

    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }
}

impl PartialEq for IndexKey {
    fn eq(&self, other: &IndexKey) -> bool {
        self.head == other.head && self.bytes == other.bytes
    }
}

impl Eq for IndexKey {}

impl PartialOrd for IndexKey {
    fn partial_cmp(&self, other: &IndexKey) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for IndexKey {
    fn cmp(&self, other: &IndexKey) -> Ordering {
        compare(self.head, &self.bytes, other.head, &other.bytes)
    }
}

impl<'a> KeyProbe<'a> {
    pub fn new(bytes: &'a [u8]) -> KeyProbe<'a> {
        KeyProbe {
            head: head_of(bytes),
            bytes,
        }
    }

    /// Byte-slice bounds as probe bounds, for ranging the index.
    pub fn bounds(
        (start, end): (Bound<&'a [u8]>, Bound<&'a [u8]>),
    ) -> (Bound<KeyProbe<'a>>, Bound<KeyProbe<'a>>) {
        (start.map(KeyProbe::new), end.map(KeyProbe::new))
    }
}

impl Equivalent<IndexKey> for KeyProbe<'_> {
    fn equivalent(&self, key: &IndexKey) -> bool {
        self.head == key.head && self.bytes == &key.bytes[..]
    }
}

impl Comparable<IndexKey> for KeyProbe<'_> {
    fn compare(&self, key: &IndexKey) -> Ordering {
        compare(self.head, self.bytes, key.head, &key.bytes)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Keys around the head's edge: empty, zero bytes, within and past eight bytes.
    fn key() -> impl Strategy<Value = Vec<u8>> {
        prop::collection::vec(prop::sample::select(vec![0u8, 1, 0x7f, 0x80, 0xff]), 0..12)
    }

    proptest! {
        #[test]
        fn index_keys_and_probes_order_as_their_bytes(a in key(), b in key()) {
            let (index_a, index_b) = (IndexKey::new(a.clone().into()), IndexKey::new(b.clone().into()));
            prop_assert_eq!(index_a.cmp(&index_b), a.cmp(&b));
            prop_assert_eq!(index_a == index_b, a == b);
            prop_assert_eq!(KeyProbe::new(&a).compare(&index_b), a.cmp(&b));
            prop_assert_eq!(KeyProbe::new(&a).equivalent(&index_b), a == b);
        }
    }

    #[test]
    fn a_key_sorts_before_its_extensions_by_zero_bytes() {
        let keys: Vec<IndexKey> = [&b"a"[..], b"a\0", b"a\0\0\0\0\0\0\0\0", b"a\0\x01", b"b"]
            .iter()
            .map(|k| IndexKey::new(Bytes::copy_from_slice(k)))
            .collect();
        assert!(keys.windows(2).all(|w| w[0] < w[1]));
    }
}
