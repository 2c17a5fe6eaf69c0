//! Revisions: the position of one change in the store's history.
//!
//! Every write request that changes something gets one new *main* revision; the individual
//! changes inside it (the puts and deletes of one txn) are told apart by an increasing *sub*
//! revision starting at 0. Revisions order lexicographically by (main, sub), which is the order
//! the changes happened in. Invariant: a stored revision has `main >= 1` and `sub >= 0`.

/// The (main, sub) position of one stored change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Revision {
    pub main: i64,
    pub sub: i64,
}

impl Revision {
    pub const fn new(main: i64, sub: i64) -> Revision {
        Revision { main, sub }
    }

    /// The smallest revision with this main revision: the start of a by-main range query.
    pub const fn first_of(main: i64) -> Revision {
        Revision { main, sub: 0 }
    }

    /// The largest revision with this main revision: the end of an inclusive by-main range query.
    pub const fn last_of(main: i64) -> Revision {
        Revision {
            main,
            sub: i64::MAX,
        }
    }

    /// etcd's backend key for this revision: 8 bytes main big-endian, `_`, 8 bytes sub
    /// big-endian, and a trailing `t` for a tombstone. HashKV hashes these exact bytes, so
    /// producing them lets our checksums be compared with a real etcd member's. Returns the
    /// buffer and how many of its bytes are the key (18 for a tombstone, 17 otherwise).
    pub fn etcd_bucket_key(self, tombstone: bool) -> ([u8; 18], usize) {
        let mut out = [0u8; 18];
        out[..8].copy_from_slice(&(self.main as u64).to_be_bytes());
        out[8] = b'_';
        out[9..17].copy_from_slice(&(self.sub as u64).to_be_bytes());
        if tombstone {
            out[17] = b't';
            (out, 18)
        } else {
            (out, 17)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revisions_order_by_main_then_sub() {
        assert!(Revision::new(2, 0) > Revision::new(1, 9));
        assert!(Revision::new(2, 1) > Revision::new(2, 0));
        assert_eq!(Revision::first_of(3), Revision::new(3, 0));
        assert!(Revision::last_of(3) < Revision::first_of(4));
    }

    #[test]
    fn bucket_key_matches_etcd_layout() {
        let (key, len) = Revision::new(0x0102, 3).etcd_bucket_key(true);
        assert_eq!(len, 18);
        assert_eq!(&key[..8], &[0, 0, 0, 0, 0, 0, 1, 2]);
        assert_eq!(key[8], b'_');
        assert_eq!(&key[9..17], &[0, 0, 0, 0, 0, 0, 0, 3]);
        assert_eq!(key[17], b't');
        assert_eq!(Revision::new(1, 0).etcd_bucket_key(false).1, 17);
    }
}
