//! Little-endian primitives for the WAL and snapshot formats: a bounds-checked reader over
//! untrusted bytes and the matching writers.
//!
//! Invariant: no read panics or allocates; every read past the end is an error value that says
//! how many bytes were missing. Allocation is the caller's business and is always bounded by
//! bytes actually present (see `Reader::capacity_for`).

/// Why a byte string could not be read. A plain sentence: the caller adds where it happened.
pub(crate) type Malformed = String;

/// Reads fixed-width little-endian integers and byte strings from a slice.
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { bytes, pos: 0 }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    pub(crate) fn take(&mut self, len: usize, what: &str) -> Result<&'a [u8], Malformed> {
        if len > self.remaining() {
            return Err(format!(
                "{what} needs {len} bytes but only {} remain",
                self.remaining()
            ));
        }
        let out = &self.bytes[self.pos..self.pos + len];
        self.pos += len;
        Ok(out)
    }

    pub(crate) fn u8(&mut self, what: &str) -> Result<u8, Malformed> {
        Ok(self.take(1, what)?[0])
    }

    pub(crate) fn u16(&mut self, what: &str) -> Result<u16, Malformed> {
        let b = self.take(2, what)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    pub(crate) fn u32(&mut self, what: &str) -> Result<u32, Malformed> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub(crate) fn u64(&mut self, what: &str) -> Result<u64, Malformed> {
        let b = self.take(8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    /// A length field, checked against what is left so that no caller allocates for bytes that
    /// are not there.
    pub(crate) fn len_u32(&mut self, what: &str) -> Result<usize, Malformed> {
        let len = self.u32(what)? as usize;
        if len > self.remaining() {
            return Err(format!(
                "{what} is {len} bytes but only {} remain",
                self.remaining()
            ));
        }
        Ok(len)
    }

    /// How many items of at least `item_len_min` bytes each can still follow: the most a
    /// decoder may reserve for a count read from untrusted bytes.
    pub(crate) fn capacity_for(&self, count: u64, item_len_min: usize) -> usize {
        let fit = self.remaining() / item_len_min.max(1);
        usize::try_from(count).map_or(fit, |count| count.min(fit))
    }

    pub(crate) fn expect_end(&self, what: &str) -> Result<(), Malformed> {
        match self.remaining() {
            0 => Ok(()),
            n => Err(format!("{what} has {n} unexpected trailing bytes")),
        }
    }
}

pub(crate) fn put_u16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_le_bytes());
}

pub(crate) fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

pub(crate) fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

/// Writes a u32 length prefix. Lengths here are bounded by the record or file limits long before
/// 4 GiB, so overflowing one is a programmer error.
pub(crate) fn put_len_u32(out: &mut Vec<u8>, len: usize, what: &str) {
    let len = u32::try_from(len).unwrap_or_else(|_| panic!("{what} of {len} bytes exceeds 4 GiB"));
    put_u32(out, len);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_past_the_end_are_errors_not_panics() {
        let mut r = Reader::new(&[1, 2, 3]);
        assert!(r.u32("x").is_err());
        assert_eq!(r.u16("y").unwrap(), 0x0201);
        assert!(r.u16("z").is_err());
        assert_eq!(r.u8("w").unwrap(), 3);
        assert!(r.u8("v").is_err());
        r.expect_end("all").unwrap();
    }

    #[test]
    fn length_fields_cannot_claim_more_than_is_present() {
        let mut bytes = Vec::new();
        put_u32(&mut bytes, u32::MAX);
        bytes.extend_from_slice(&[0; 8]);
        let mut r = Reader::new(&bytes);
        assert!(r.len_u32("data").is_err());
        let r = Reader::new(&bytes);
        assert_eq!(r.capacity_for(u64::MAX, 4), 3);
    }
}
