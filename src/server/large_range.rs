//! A large Range answer encoded off the async workers, in parts on several threads at once,
//! into one buffer of huge pages.
//!
//! Encoding 100,000 pairs (about 27 MB) took about 90 ms on one thread: each key and value is
//! a cache miss, and each of the buffer's 6,500 fresh pages a fault of about 4 us on this
//! kind of virtual machine. One large read leaves the member's other cores idle, and two
//! megabyte pages fault 512 times less often.

use std::io;
use std::sync::Mutex;

use crate::mvcc::{ColdRead, RangeLayout, RangePart};
use crate::proto::etcdserverpb::RangeResponse;

/// Answers at least this large are encoded in parts on several threads; below it, a thread's
/// start costs more than it saves.
const PARTS_ABOVE_BYTES: usize = 1 << 20;
/// Threads one answer may use at most.
const PARTS_MAX: usize = 4;
/// The buffer of an answer at least this large asks for huge pages.
const HUGE_PAGES_ABOVE_BYTES: usize = 4 << 20;

/// Responses of at most this many pairs are not measured: they are encoded where they are
/// answered, as few pairs take little work whatever their values' size (a copy each).
const PAIRS_SMALL_MAX: usize = 256;

/// Whether `response` is worth encoding off the async workers (as reads of the past always
/// are, for their cold values).
pub fn is_large(response: &RangeResponse) -> bool {
    response.kvs.len() > PAIRS_SMALL_MAX
        && prost::Message::encoded_len(response) >= PARTS_ABOVE_BYTES
}

/// `prefix` bytes of zeros, then the encoding of `layout` with its cold values read from
/// `cold`.
pub fn encode(
    layout: &RangeLayout,
    cold: &(dyn ColdRead + Sync),
    prefix: usize,
) -> io::Result<Vec<u8>> {
    let len = layout.encoded_len();
    // Zeroed memory of this size comes fresh from the kernel: nothing is written until the
    // parts are.
    let mut out = vec![0; prefix + len];
    if len >= HUGE_PAGES_ABOVE_BYTES {
        super::memory::advise_huge_pages(&mut out);
    }
    let threads = if len >= PARTS_ABOVE_BYTES {
        std::thread::available_parallelism().map_or(1, |n| n.get().min(PARTS_MAX))
    } else {
        1
    };
    let parts = layout.parts(threads);
    let mut rest = &mut out[prefix..];
    let mut pending = Vec::with_capacity(parts.len());
    for part in &parts {
        let (slice, after) = std::mem::take(&mut rest).split_at_mut(part.len());
        pending.push(Pending(Mutex::new(Some((part, slice)))));
        rest = after;
    }
    std::thread::scope(|scope| {
        let helpers: Vec<_> = pending
            .iter()
            .skip(1)
            .filter_map(|part| {
                std::thread::Builder::new()
                    .name("detcd-encode".into())
                    .spawn_scoped(scope, || part.encode(layout, cold))
                    .ok()
            })
            .collect();
        let mut result = Ok(());
        for part in &pending {
            result = result.and(part.encode(layout, cold));
        }
        for helper in helpers {
            let joined = helper
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("a range encoder panicked")));
            result = result.and(joined);
        }
        result
    })?;
    Ok(out)
}

/// A part and the slice it goes into, until a thread takes it: its own, or the calling one,
/// which takes every part left after its first (a helper that could not start, or has not
/// yet).
struct Pending<'a>(Mutex<Option<(&'a RangePart, &'a mut [u8])>>);

impl Pending<'_> {
    fn encode(&self, layout: &RangeLayout, cold: &(dyn ColdRead + Sync)) -> io::Result<()> {
        let taken = self.0.lock().map(|mut part| part.take()).unwrap_or(None);
        taken.map_or(Ok(()), |(part, slice)| {
            layout.encode_part(part, cold, slice)
        })
    }
}
